//! `WatchJob` with transparent reconnection and resume.

use crate::pb::render_service_client::RenderServiceClient;
use crate::pb::{JobEvent, WatchJobRequest};
use crate::{AuthChannel, Error, is_terminal};
use futures::Stream;
use std::time::Duration;

/// Reconnection policy of a watch.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Consecutive failed reconnections before giving up.
    pub max_retries: u32,
    /// First backoff delay; doubles on each consecutive failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            max_retries: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

struct State {
    client: RenderServiceClient<AuthChannel>,
    job_id: String,
    last: u64,
    stream: Option<tonic::Streaming<crate::pb::WatchJobResponse>>,
    failures: u32,
    done: bool,
    options: WatchOptions,
}

pub(crate) fn watch(
    client: RenderServiceClient<AuthChannel>,
    job_id: String,
    after: u64,
    options: WatchOptions,
) -> impl Stream<Item = Result<JobEvent, Error>> + Send + 'static {
    let state = State {
        client,
        job_id,
        last: after,
        stream: None,
        failures: 0,
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
                match s.client.watch_job(request).await {
                    Ok(resp) => s.stream = Some(resp.into_inner()),
                    Err(status) => {
                        let err = Error::from(status);
                        if let Some(e) = s.retry_or_fail(err).await {
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
                    s.last = event.sequence;
                    if is_terminal(event.state) {
                        s.done = true;
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
        if !err.is_transient() || self.failures >= self.options.max_retries {
            self.done = true;
            return Some(err);
        }
        let delay = self
            .options
            .initial_backoff
            .saturating_mul(1 << self.failures.min(16))
            .min(self.options.max_backoff);
        let delay = err
            .retry_after()
            .map_or(delay, |d| d.max(delay).min(self.options.max_backoff));
        self.failures += 1;
        tokio::time::sleep(delay).await;
        None
    }
}
