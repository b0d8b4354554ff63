//! The SDK's error: the gRPC code and message with the `google.rpc` details decoded.

use std::fmt;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

/// One invalid field of a request, from `google.rpc.BadRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path, e.g. `brief` or `manifest.shots[2].duration_s`.
    pub field: String,
    /// Why it is invalid.
    pub description: String,
}

/// An error from the AIPROD API or the transport.
#[derive(Clone, Debug)]
pub struct Error {
    status: tonic::Status,
}

impl Error {
    pub(crate) fn transport(message: impl Into<String>) -> Self {
        Error {
            status: tonic::Status::unavailable(message.into()),
        }
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.status.code()
    }

    /// The server's message.
    pub fn message(&self) -> &str {
        self.status.message()
    }

    /// Every field violation (`google.rpc.BadRequest`); empty for other errors.
    pub fn field_violations(&self) -> Vec<FieldViolation> {
        self.status
            .get_details_bad_request()
            .map(|b| {
                b.field_violations
                    .into_iter()
                    .map(|v| FieldViolation {
                        field: v.field,
                        description: v.description,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `google.rpc.ErrorInfo` reason, if any (e.g. `API_KEY_REVOKED`).
    pub fn reason(&self) -> Option<String> {
        self.status.get_details_error_info().map(|i| i.reason)
    }

    /// How long the server asks to wait before retrying (`google.rpc.RetryInfo`), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.status
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
    }

    /// Every decoded `google.rpc` detail.
    pub fn details(&self) -> tonic_types::ErrorDetails {
        self.status.get_error_details()
    }

    /// The underlying status.
    pub fn status(&self) -> &tonic::Status {
        &self.status
    }

    /// Whether retrying the same call later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted
        ) || is_connection_reset(&self.status)
    }
}

fn is_connection_reset(status: &tonic::Status) -> bool {
    // A dropped connection mid-stream surfaces as UNKNOWN/INTERNAL with an h2 or transport cause.
    matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::Cancelled
    ) && (status.message().contains("h2")
        || status.message().contains("transport")
        || status.message().contains("connection")
        || status.message().contains("stream"))
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error { status }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code(), self.message())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn decodes_field_violations_and_retry_info() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("brief", "is required");
        details.add_bad_request_violation("shots[1].duration_s", "must be 1–10 seconds");
        let e = Error::from(tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid",
            details,
        ));
        assert_eq!(e.code(), Code::InvalidArgument);
        let fields: Vec<_> = e.field_violations().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["brief", "shots[1].duration_s"]);
        assert!(!e.is_transient());

        let e = Error::from(tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        ));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.is_transient());
        assert!(e.field_violations().is_empty());
    }

    #[test]
    fn connection_resets_are_transient_but_bugs_are_not() {
        assert!(
            Error::from(tonic::Status::unknown("h2 protocol error: stream reset")).is_transient()
        );
        assert!(Error::from(tonic::Status::unavailable("shutting down")).is_transient());
        assert!(
            !Error::from(tonic::Status::internal("internal error (incident 1)")).is_transient()
        );
        assert!(!Error::from(tonic::Status::not_found("job not found")).is_transient());
    }
}
