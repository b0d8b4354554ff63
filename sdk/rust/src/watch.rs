//! `WatchJob` with transparent reconnection and resume (sdk/PRODUCTION.md, "Watch resume").

use crate::pb::render_service_client::RenderServiceClient;
use crate::pb::{JobEvent, WatchJobRequest};
use crate::retry::{Caller, RetryPolicy};
use crate::{AuthChannel, Error, is_terminal};
use futures::Stream;
use std::time::{Duration, Instant};

const METHOD: &str = "/aiprod.v1.RenderService/WatchJob";

/// Reconnection policy of a watch.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How long to keep reconnecting through continuous failure (default 120 s); the clock
    /// restarts whenever an event arrives.
    pub resume_timeout: Duration,
    /// Backoff cap of the first reconnection (default 100 ms); doubles per consecutive failure.
    pub initial_backoff: Duration,
    /// Largest backoff cap (default 5 s).
    pub max_backoff: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            resume_timeout: Duration::from_secs(120),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

struct State {
    client: RenderServiceClient<AuthChannel>,
    caller: Caller,
    job_id: String,
    last: u64,
    stream: Option<tonic::Streaming<crate::pb::WatchJobResponse>>,
    /// Consecutive failures, and when the first of them happened.
    failures: u32,
    failing_since: Option<Instant>,
    attempt: u32,
    opened: Instant,
    done: bool,
    options: WatchOptions,
}

pub(crate) fn watch(
    client: RenderServiceClient<AuthChannel>,
    caller: Caller,
    job_id: String,
    after: u64,
    options: WatchOptions,
) -> impl Stream<Item = Result<JobEvent, Error>> + Send + 'static {
    let state = State {
        client,
        caller,
        job_id,
        last: after,
        stream: None,
        failures: 0,
        failing_since: None,
        attempt: 0,
        opened: Instant::now(),
        done: false,
        options,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if s.stream.is_none() {
                let request = WatchJobRequest {
                    job_id: s.job_id.clone(),
                    after_sequence: s.last,
                };
                s.attempt += 1;
                s.opened = Instant::now();
                match s.client.watch_job(request).await {
                    Ok(resp) => s.stream = Some(resp.into_inner()),
                    Err(status) => {
                        if let Some(e) = s.retry_or_fail(Error::from(status)).await {
                            return Some((Err(e), s));
                        }
                        continue;
                    }
                }
            }
            let stream = s.stream.as_mut()?;
            match stream.message().await {
                Ok(Some(msg)) => {
                    let Some(event) = msg.event else { continue };
                    if event.sequence <= s.last {
                        continue; // never yield an event twice
                    }
                    s.failures = 0;
                    s.failing_since = None;
                    s.last = event.sequence;
                    if is_terminal(event.state) {
                        s.done = true;
                        s.caller
                            .report(METHOD, s.attempt, tonic::Code::Ok, s.opened);
                    }
                    return Some((Ok(event), s));
                }
                // The server ended the stream without a terminal event (e.g. shutting down): resume.
                Ok(None) => {
                    s.stream = None;
                    if let Some(e) = s
                        .retry_or_fail(Error::transport("stream ended before the terminal event"))
                        .await
                    {
                        return Some((Err(e), s));
                    }
                }
                Err(status) => {
                    s.stream = None;
                    if let Some(e) = s.retry_or_fail(Error::from(status)).await {
                        return Some((Err(e), s));
                    }
                }
            }
        }
    })
}

impl State {
    /// Waits before the next attempt, or returns the error to surface (and stops the watch).
    async fn retry_or_fail(&mut self, err: Error) -> Option<Error> {
        self.caller
            .report(METHOD, self.attempt, err.code(), self.opened);
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        self.failures += 1;
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: self.options.initial_backoff,
            max_backoff: self.options.max_backoff,
        };
        let delay = policy.backoff(self.failures, err.retry_after());
        if !err.is_resumable() || since.elapsed() + delay > self.options.resume_timeout {
            self.done = true;
            return Some(err);
        }
        tracing::debug!(job_id = %self.job_id, after = self.last, code = ?err.code(), ?delay, "watch reconnecting");
        tokio::time::sleep(delay).await;
        None
    }
}
