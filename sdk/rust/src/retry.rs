//! The retry policy of unary calls (sdk/PRODUCTION.md): which failures are retried, the backoff
//! (exponential, full jitter, `RetryInfo` as a floor), the attempt budget, and the per-call deadline
//! that bounds every attempt and every wait.

use crate::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::metadata::MetadataMap;

/// How unary calls are retried. The defaults are the shared SDK semantics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (default 5); 1 disables retries.
    pub max_attempts: u32,
    /// Backoff cap of the first retry (default 100 ms); doubles per attempt.
    pub initial_backoff: Duration,
    /// Largest backoff cap (default 5 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (n ≥ 1): uniform in [0, min(max, initial × 2^(n-1))],
    /// and never shorter than the server's `RetryInfo` delay.
    pub fn backoff(&self, n: u32, retry_info: Option<Duration>) -> Duration {
        let cap = self
            .initial_backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let jittered = cap.mul_f64(rand::random::<f64>());
        retry_info.map_or(jittered, |floor| jittered.max(floor))
    }
}

/// One attempt of a call, as seen by the hook ([`crate::ClientBuilder::on_attempt`]).
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The full gRPC method, e.g. `/aiprod.v1.RenderService/CreateJob`.
    pub method: &'static str,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `Code::Ok` when the attempt succeeded.
    pub code: Code,
    /// How long the attempt took (waits between attempts excluded).
    pub duration: Duration,
}

/// The per-client hook that sees every attempt.
pub type Hook = Arc<dyn Fn(&Attempt) + Send + Sync>;

/// Runs unary calls under the policy; one per client, cheap to clone.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) policy: RetryPolicy,
    pub(crate) hook: Option<Hook>,
    pub(crate) timeout: Duration,
}

impl Caller {
    pub(crate) fn report(&self, method: &'static str, attempt: u32, code: Code, started: Instant) {
        if let Some(hook) = &self.hook {
            hook(&Attempt {
                method,
                attempt,
                code,
                duration: started.elapsed(),
            });
        }
    }

    /// Calls `send` until it succeeds, fails for good, runs out of attempts, or the deadline (the
    /// request's own `grpc-timeout`, else the client's default) would pass during the next wait.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        idempotent: bool,
        request: tonic::Request<Req>,
        send: F,
    ) -> Result<tonic::Response<Resp>, Error>
    where
        Req: Clone,
        F: Fn(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let (metadata, _, message) = request.into_parts();
        let timeout = grpc_timeout(&metadata).unwrap_or(self.timeout);
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::deadline_exceeded(timeout));
            }
            let mut request = tonic::Request::from_parts(
                metadata.clone(),
                tonic::Extensions::default(),
                message.clone(),
            );
            request.set_timeout(remaining);
            let started = Instant::now();
            // Our own timer as well as grpc-timeout: the deadline holds even if the server or the
            // connection never answers, and it is reported as DEADLINE_EXCEEDED.
            let result = match tokio::time::timeout(remaining, send(request)).await {
                Ok(result) => result.map_err(Error::from),
                Err(_) => Err(Error::deadline_exceeded(timeout)),
            };
            let error = match result {
                Ok(response) => {
                    self.report(method, attempt, Code::Ok, started);
                    return Ok(response);
                }
                Err(e) => e,
            };
            self.report(method, attempt, error.code(), started);
            let retryable = match error.code() {
                Code::Unavailable => idempotent,
                // Refused before doing anything: safe to repeat for any call.
                Code::ResourceExhausted => error.retry_after().is_some(),
                _ => false,
            };
            if !retryable || attempt >= self.policy.max_attempts {
                return Err(error);
            }
            let wait = self.policy.backoff(attempt, error.retry_after());
            if Instant::now() + wait >= deadline {
                // Waiting would outlive the caller's deadline: surface the last error now.
                return Err(error);
            }
            tracing::debug!(method, attempt, code = ?error.code(), ?wait, "retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The `grpc-timeout` a caller set with `tonic::Request::set_timeout`.
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A random idempotency key for a `CreateJob` the caller sent without one.
pub(crate) fn new_request_id() -> String {
    format!("sdk-{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_by_the_exponential_cap_and_floored_by_retry_info() {
        let p = RetryPolicy::default();
        for _ in 0..200 {
            assert!(p.backoff(1, None) <= Duration::from_millis(100));
            assert!(p.backoff(3, None) <= Duration::from_millis(400));
            assert!(p.backoff(30, None) <= Duration::from_secs(5));
            assert!(p.backoff(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        }
    }

    #[test]
    fn parses_grpc_timeout() {
        let mut request = tonic::Request::new(());
        request.set_timeout(Duration::from_millis(1500));
        assert_eq!(
            grpc_timeout(request.metadata()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }
}
