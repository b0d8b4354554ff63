//! The one error type of the service and its one mapping to `tonic::Status` with `google.rpc` details.

use crate::domain::validate::{FieldViolation, truncate};
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "aiprod.dev";

/// The longest status message sent; every value a message echoes is already bounded
/// (`validate::echo`), this bounds their sum so an error always fits standard clients' limits.
const MAX_MESSAGE_CHARS: usize = 2048;
/// The longest text of one detail field (a violation's field path or description).
const MAX_DETAIL_CHARS: usize = 512;

fn detail(text: impl AsRef<str>) -> String {
    truncate(text.as_ref(), MAX_DETAIL_CHARS)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or out-of-range fields: every violation is listed.
    #[error("invalid request: {}", summarize(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No key, a malformed key, or a revoked or expired key.
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    /// A resource that does not exist or belongs to another tenant: the same answer either way.
    /// `hint` never depends on the tenant (e.g. the catalog's preset ids).
    #[error("{kind} not found{hint}")]
    NotFound { kind: &'static str, hint: String },
    /// A preset or feature outside the tenant's tier.
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
    },
    /// The operation is not allowed in the resource's current state.
    #[error("{message}")]
    FailedPrecondition {
        kind: &'static str,
        subject: String,
        message: String,
    },
    /// An offset outside a resource (ByteStream reads), with the field that holds it.
    #[error("{field} {message}")]
    OutOfRange {
        field: &'static str,
        message: String,
    },
    /// A stale etag or a lost optimistic-concurrency race.
    #[error("{0}")]
    Aborted(String),
    /// A limit or quota was hit.
    #[error("{message}")]
    ResourceExhausted {
        subject: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Shutting down or a dependency is unavailable.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// This replica no longer holds the job's lease (another replica claimed it since): the write
    /// was refused and the driver stops. Never reaches a client on its own.
    #[error("the job is driven by another replica")]
    LeaseLost,
    /// A bug or an unexpected failure: logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn summarize(v: &[FieldViolation]) -> String {
    v.iter()
        .map(|f| format!("{}: {}", f.field, f.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    pub fn not_found(kind: &'static str) -> Self {
        Error::NotFound {
            kind,
            hint: String::new(),
        }
    }

    pub fn precondition(
        kind: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::FailedPrecondition {
            kind,
            subject: subject.into(),
            message: message.into(),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Error::Internal(e.into())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let message = truncate(&e.to_string(), MAX_MESSAGE_CHARS);
        match e {
            Error::InvalidArgument(violations) => {
                let mut d = ErrorDetails::new();
                for v in violations {
                    d.add_bad_request_violation(detail(v.field), detail(v.description));
                }
                Status::with_error_details(Code::InvalidArgument, message, d)
            }
            Error::Unauthenticated { reason, .. } => Status::with_error_details(
                Code::Unauthenticated,
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, []),
            ),
            // Deliberately identical for "missing" and "another tenant's": nothing but the kind.
            Error::NotFound { .. } => Status::new(Code::NotFound, message),
            Error::PermissionDenied { reason, .. } => Status::with_error_details(
                Code::PermissionDenied,
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, []),
            ),
            Error::FailedPrecondition {
                kind,
                subject,
                message: description,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure_violation(
                    kind,
                    detail(subject),
                    detail(description),
                ),
            ),
            Error::OutOfRange {
                field,
                message: description,
            } => {
                let mut d = ErrorDetails::new();
                d.add_bad_request_violation(field, detail(description));
                Status::with_error_details(Code::OutOfRange, message, d)
            }
            Error::Aborted(_) | Error::LeaseLost => Status::new(Code::Aborted, message),
            Error::ResourceExhausted {
                subject,
                message: description,
                retry_after,
            } => {
                let mut d = ErrorDetails::with_quota_failure_violation(
                    detail(subject),
                    detail(description),
                );
                if let Some(delay) = retry_after {
                    d.set_retry_info(Some(delay));
                }
                Status::with_error_details(Code::ResourceExhausted, message, d)
            }
            Error::Unavailable { retry_after, .. } => Status::with_error_details(
                Code::Unavailable,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Internal(cause) => {
                let incident = uuid::Uuid::new_v4().simple().to_string();
                tracing::error!(incident = %incident, error = ?cause, "internal error");
                Status::new(
                    Code::Internal,
                    format!("internal error (incident {incident})"),
                )
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
