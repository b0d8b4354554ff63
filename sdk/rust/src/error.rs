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

    pub(crate) fn deadline_exceeded(timeout: Duration) -> Self {
        Error {
            status: tonic::Status::deadline_exceeded(format!("deadline of {timeout:?} exceeded")),
        }
    }

    /// A transport failure (connection refused, TLS handshake, …) with its whole cause chain in
    /// the message, so "transport error" never hides why.
    pub(crate) fn connect(endpoint: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        Error::transport(format!("cannot connect to {endpoint}: {}", chain(error)))
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

    /// Whether retrying the same call later can succeed: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, and
    /// `RESOURCE_EXHAUSTED` that carries `RetryInfo` (a quota used up does not).
    pub fn is_transient(&self) -> bool {
        match self.code() {
            Code::Unavailable | Code::DeadlineExceeded => true,
            Code::ResourceExhausted => self.retry_after().is_some(),
            _ => false,
        }
    }

    /// Whether a stream (watch, download) broken by this error should be reopened where it
    /// stopped: a transient error, or the connection dropping under it.
    pub(crate) fn is_resumable(&self) -> bool {
        matches!(self.code(), Code::Unavailable)
            || (self.code() == Code::ResourceExhausted && self.retry_after().is_some())
            || is_connection_reset(&self.status)
    }
}

/// `error: cause: cause…`, each distinct message once.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

fn is_connection_reset(status: &tonic::Status) -> bool {
    // A dropped connection mid-stream surfaces as UNKNOWN/INTERNAL/CANCELLED with an h2 or
    // transport cause.
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
        // tonic reports its own client-side deadline as CANCELLED "Timeout expired".
        if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
            return Error {
                status: tonic::Status::deadline_exceeded("deadline exceeded"),
            };
        }
        // A transport failure's message is only "transport error": keep the cause visible.
        if let Some(source) = std::error::Error::source(&status) {
            let message = format!("{}: {}", status.message(), chain(source));
            return Error {
                status: tonic::Status::with_details_and_metadata(
                    status.code(),
                    message,
                    status.details().to_vec().into(),
                    status.metadata().clone(),
                ),
            };
        }
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
            Error::from(tonic::Status::unknown("h2 protocol error: stream reset")).is_resumable()
        );
        assert!(Error::from(tonic::Status::cancelled("Timeout expired")).is_transient());
        assert_eq!(
            Error::from(tonic::Status::cancelled("Timeout expired")).code(),
            Code::DeadlineExceeded
        );
        assert!(!Error::from(tonic::Status::resource_exhausted("quota used up")).is_transient());
        assert!(Error::from(tonic::Status::unavailable("shutting down")).is_transient());
        assert!(
            !Error::from(tonic::Status::internal("internal error (incident 1)")).is_transient()
        );
        assert!(!Error::from(tonic::Status::not_found("job not found")).is_transient());
    }
}
