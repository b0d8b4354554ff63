//! Adapters for the render providers' HTTP APIs (live keys): create a task (its id is committed by
//! the pipeline before any wait), poll it every `poll_interval` until it finishes, and download the
//! output at once (provider links expire; they never reach partners). A task still unfinished after
//! `task_timeout` is cancelled where the API allows it and the attempt fails with
//! `RenderError::Timeout`; HTTP 429 is retried after `Retry-After`, a bounded number of times.
//! Providers return no quality score, so a rendered shot scores its backend's catalog quality.
//!
//! Each provider is a `TaskApi` (how to build its requests and read its answers); `HttpBackend`
//! runs the one create → poll → result loop for all of them.
//!
//! API keys live in `HeaderValue`s marked sensitive and are never logged.

pub mod replicate;
pub mod runway;
pub mod veo;

#[cfg(test)]
mod fake;

use super::circuit::Circuit;
use super::{BackendSet, RenderBackend, RenderError, RenderOutput, RenderRequest};
use crate::config::Config;
use crate::domain::Backend;
use crate::domain::manifest::AspectRatio;
use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Consecutive failed status checks (network error or HTTP 5xx) tolerated before an attempt fails.
const MAX_TRANSIENT_POLL_ERRORS: u32 = 3;
/// Longest wait for a best-effort cancel after a timeout.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// Longest back-off after a 429 without `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How a provider task is driven.
#[derive(Clone, Debug)]
pub struct PollSettings {
    pub poll_interval: Duration,
    pub task_timeout: Duration,
    /// Retries of a call answered with 429 before the attempt fails as `RateLimited`.
    pub rate_limit_retries: u32,
}

impl PollSettings {
    pub fn from_config(config: &Config) -> PollSettings {
        let p = &config.providers;
        PollSettings {
            poll_interval: Duration::from_millis(p.poll_interval_ms),
            task_timeout: Duration::from_secs(p.task_timeout_s),
            rate_limit_retries: p.rate_limit_retries,
        }
    }
}

/// What one status check of a task says.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskStatus {
    /// Queued, throttled or running.
    Running,
    /// Finished with an output at this URI.
    Succeeded(String),
    /// Finished, but without a usable output (e.g. filtered by the provider's safety system).
    Rejected(String),
    /// Failed or cancelled on the provider's side.
    Failed(String),
}

/// One provider's API: how to start, check and cancel a render task.
pub trait TaskApi: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// The request that creates the task for a shot.
    fn create(&self, http: &reqwest::Client, request: &RenderRequest) -> RequestBuilder;
    /// The task's id in the create response.
    fn task_id(&self, created: &Value) -> Option<String>;
    /// The request that reads the task's status.
    fn status(&self, http: &reqwest::Client, task: &str) -> RequestBuilder;
    /// Reads a status response; `Err` when it does not follow the documented shape.
    fn parse_status(&self, body: &Value) -> Result<TaskStatus, String>;
    /// The request that cancels the task, when the API has one.
    fn cancel(&self, http: &reqwest::Client, task: &str) -> Option<RequestBuilder>;
    /// The request that downloads a finished task's output (some APIs want the key on it too).
    fn download(&self, http: &reqwest::Client, uri: &str) -> RequestBuilder {
        http.get(uri)
    }
}

/// A finished task: its output's URI and the score a passing clip gets.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOutput {
    pub uri: String,
    pub quality: f64,
}

/// A render backend speaking a provider's HTTP API.
pub struct HttpBackend<A> {
    api: A,
    http: reqwest::Client,
    settings: PollSettings,
    quality: f64,
    max_download_bytes: u64,
    /// Set when the server shuts down: an abandoned wait then leaves the task running, because the
    /// next start resumes it by its committed id.
    stopping: tokio_util::sync::CancellationToken,
}

impl<A: TaskApi> HttpBackend<A> {
    pub fn new(
        api: A,
        settings: PollSettings,
        request_timeout: Duration,
        quality: f64,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .user_agent(concat!("aiprod/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpBackend {
            api,
            http,
            settings,
            quality,
            max_download_bytes: 512 * 1024 * 1024,
            stopping: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// The server's shutdown token (see `stopping`).
    pub fn with_shutdown(mut self, stopping: tokio_util::sync::CancellationToken) -> Self {
        self.stopping = stopping;
        self
    }

    /// Refuses provider outputs larger than this.
    pub fn with_max_download_bytes(mut self, max: u64) -> Self {
        self.max_download_bytes = max;
        self
    }

    fn name(&self) -> &'static str {
        self.api.backend().as_str()
    }

    /// Sends one call, retrying after 429 (honouring `Retry-After`) up to the configured bound and
    /// never past `deadline`.
    async fn call(
        &self,
        what: &'static str,
        build: impl Fn() -> RequestBuilder,
        deadline: Instant,
    ) -> Result<Value, CallError> {
        let mut retries = 0;
        loop {
            let response = match build().send().await {
                Ok(r) => r,
                Err(e) => {
                    return Err(CallError::Transient(format!(
                        "{} {what} request failed: {}",
                        self.name(),
                        e.without_url()
                    )));
                }
            };
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(response.headers())
                    .unwrap_or_else(|| backoff(self.settings.poll_interval, retries));
                if retries >= self.settings.rate_limit_retries || Instant::now() + wait > deadline {
                    tracing::warn!(
                        backend = self.name(),
                        what,
                        retries,
                        "provider rate limit: giving up"
                    );
                    return Err(CallError::RateLimited);
                }
                retries += 1;
                tracing::info!(
                    backend = self.name(),
                    what,
                    wait_ms = wait.as_millis() as u64,
                    retries,
                    "provider rate limit: retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let text = response.text().await.map_err(|e| {
                CallError::Transient(format!(
                    "{} {what} response unreadable: {}",
                    self.name(),
                    e.without_url()
                ))
            })?;
            if !status.is_success() {
                let message = format!(
                    "{} {what} answered HTTP {}: {}",
                    self.name(),
                    status.as_u16(),
                    excerpt(&text)
                );
                return Err(if status.is_server_error() {
                    CallError::Transient(message)
                } else {
                    CallError::Fatal(message)
                });
            }
            return serde_json::from_str(&text).map_err(|_| {
                CallError::Fatal(format!(
                    "{} {what}: malformed response: {}",
                    self.name(),
                    excerpt(&text)
                ))
            });
        }
    }

    /// The attempt ran out of time: cancel the task (bounded wait) and fail with `Timeout`.
    async fn time_out(&self, cancel: CancelOnDrop, task: Option<&str>) -> RenderError {
        if let Some(request) = cancel.take() {
            match tokio::time::timeout(CANCEL_WAIT, request.send()).await {
                Ok(Ok(r)) => {
                    tracing::info!(
                        backend = self.name(),
                        task,
                        status = r.status().as_u16(),
                        "provider task cancelled after timeout"
                    )
                }
                Ok(Err(e)) => {
                    tracing::warn!(backend = self.name(), task, error = %e.without_url(), "cancelling the provider task failed")
                }
                Err(_) => {
                    tracing::warn!(
                        backend = self.name(),
                        task,
                        "cancelling the provider task timed out"
                    )
                }
            }
        }
        RenderError::Timeout(self.settings.task_timeout.as_secs())
    }

    /// Creates the task; returns its id.
    async fn create_task(&self, request: &RenderRequest) -> Result<String, RenderError> {
        let deadline = Instant::now() + self.settings.task_timeout;
        let created = match tokio::time::timeout_at(
            deadline,
            self.call("create", || self.api.create(&self.http, request), deadline),
        )
        .await
        {
            Ok(r) => r.map_err(CallError::into_render)?,
            Err(_) => return Err(self.time_out(CancelOnDrop(None, None), None).await),
        };
        let task = self.api.task_id(&created).ok_or_else(|| {
            RenderError::Provider(format!(
                "{}: malformed create response (no task id): {}",
                self.name(),
                excerpt(&created.to_string())
            ))
        })?;
        tracing::info!(
            backend = self.name(),
            job_id = %request.job_id,
            shot = %request.shot_id,
            attempt = request.attempt,
            task = %task,
            "provider task created"
        );
        Ok(task)
    }

    /// Polls a task until it finishes; returns its output's URI.
    async fn wait(&self, task: &str, deadline: Instant) -> Result<String, RenderError> {
        let task = task.to_string();
        // Whatever ends this attempt before the task finishes (an error, the pipeline's own
        // timeout, shutdown) cancels the task on the provider's side.
        let cancel = CancelOnDrop(
            self.api.cancel(&self.http, &task),
            Some(self.stopping.clone()),
        );
        let mut transient_errors = 0;
        loop {
            let next = Instant::now() + self.settings.poll_interval;
            tokio::time::sleep_until(next.min(deadline)).await;
            if Instant::now() >= deadline {
                return Err(self.time_out(cancel, Some(&task)).await);
            }
            let body = match tokio::time::timeout_at(
                deadline,
                self.call("status", || self.api.status(&self.http, &task), deadline),
            )
            .await
            {
                Err(_) => return Err(self.time_out(cancel, Some(&task)).await),
                Ok(Ok(body)) => body,
                Ok(Err(CallError::Transient(message)))
                    if transient_errors < MAX_TRANSIENT_POLL_ERRORS =>
                {
                    transient_errors += 1;
                    tracing::warn!(backend = self.name(), task = %task, error = %message, "status check failed; trying again");
                    continue;
                }
                Ok(Err(e)) => return Err(e.into_render()),
            };
            transient_errors = 0;
            let status = self.api.parse_status(&body).map_err(|why| {
                RenderError::Provider(format!(
                    "{}: malformed status response ({why}): {}",
                    self.name(),
                    excerpt(&body.to_string())
                ))
            })?;
            tracing::debug!(backend = self.name(), task = %task, ?status, "provider task status");
            match status {
                TaskStatus::Running => continue,
                TaskStatus::Succeeded(uri) => {
                    cancel.disarm();
                    return Ok(uri);
                }
                TaskStatus::Rejected(why) => {
                    cancel.disarm();
                    return Err(RenderError::Rejected(format!("{}: {why}", self.name())));
                }
                TaskStatus::Failed(why) => {
                    cancel.disarm();
                    return Err(RenderError::Provider(format!("{}: {why}", self.name())));
                }
            }
        }
    }

    /// Downloads a finished task's output, bounded in size; the URI is never logged (it may
    /// carry a signature).
    async fn download(&self, uri: &str) -> Result<Vec<u8>, RenderError> {
        let failed =
            |what: String| RenderError::Provider(format!("{} output download {what}", self.name()));
        let mut response = self
            .api
            .download(&self.http, uri)
            .send()
            .await
            .map_err(|e| failed(format!("failed: {}", e.without_url())))?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let mut clip = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(format!("broke off: {}", e.without_url())))?
        {
            if (clip.len() + chunk.len()) as u64 > self.max_download_bytes {
                return Err(failed(format!(
                    "is larger than {} bytes",
                    self.max_download_bytes
                )));
            }
            clip.extend_from_slice(&chunk);
        }
        Ok(clip)
    }

    /// Create, wait and return the output's URI (without downloading it): the adapters' tests.
    pub async fn render_uri(&self, request: &RenderRequest) -> Result<TaskOutput, RenderError> {
        let task = self.create_task(request).await?;
        let uri = self
            .wait(&task, Instant::now() + self.settings.task_timeout)
            .await?;
        Ok(TaskOutput {
            uri,
            quality: self.quality,
        })
    }
}

#[async_trait::async_trait]
impl<A: TaskApi> RenderBackend for HttpBackend<A> {
    async fn submit(&self, request: &RenderRequest) -> Result<String, RenderError> {
        self.create_task(request).await
    }

    async fn finish(
        &self,
        _request: &RenderRequest,
        task_id: &str,
    ) -> Result<RenderOutput, RenderError> {
        // After a restart the task may have run for a while already: it gets a full timeout again.
        let uri = self
            .wait(task_id, Instant::now() + self.settings.task_timeout)
            .await?;
        let clip = self.download(&uri).await?;
        Ok(RenderOutput {
            clip: clip.into(),
            clip_key: None,
            quality: self.quality,
            exact_size: None,
        })
    }
}

/// Why one HTTP call failed.
#[derive(Debug)]
enum CallError {
    /// 429 beyond the retry bound (or beyond the deadline).
    RateLimited,
    /// A network error or HTTP 5xx: worth another status check.
    Transient(String),
    /// Any other refusal, or a body that is not JSON.
    Fatal(String),
}

impl CallError {
    fn into_render(self) -> RenderError {
        match self {
            CallError::RateLimited => RenderError::RateLimited,
            CallError::Transient(m) | CallError::Fatal(m) => RenderError::Provider(m),
        }
    }
}

/// A cancel request sent (in the background) if dropped armed, unless the server is stopping.
struct CancelOnDrop(
    Option<RequestBuilder>,
    Option<tokio_util::sync::CancellationToken>,
);

impl CancelOnDrop {
    fn take(mut self) -> Option<RequestBuilder> {
        self.0.take()
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.1.as_ref().is_some_and(|s| s.is_cancelled()) {
            return;
        }
        if let (Some(request), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                if let Err(e) = request.send().await {
                    tracing::warn!(error = %e.without_url(), "cancelling an abandoned provider task failed");
                }
            });
        }
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Exponential back-off from the poll interval when the provider gives no `Retry-After`.
fn backoff(base: Duration, retries: u32) -> Duration {
    base.saturating_mul(1 << retries.min(16)).min(MAX_BACKOFF)
}

/// The start of a provider's answer, on one line, for error messages.
fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    one_line.trim().to_string()
}

/// A header value holding a credential: marked sensitive so no layer prints it.
fn secret_header(value: String) -> anyhow::Result<HeaderValue> {
    let mut header = HeaderValue::try_from(value)
        .map_err(|_| anyhow::anyhow!("the API key contains characters not allowed in a header"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// Providers render landscape (16:9) or portrait (9:16): square and 4:5 shots render in the
/// nearest orientation.
fn landscape(aspect: AspectRatio) -> bool {
    match aspect {
        AspectRatio::Landscape16x9 | AspectRatio::Square1x1 => true,
        AspectRatio::Portrait9x16 | AspectRatio::Portrait4x5 => false,
    }
}

/// `base` without a trailing slash, followed by `path`.
fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// The live backends: one per provider that has an API key, each with its own circuit.
pub fn live_backends(
    config: &Config,
    circuit: impl Fn() -> Circuit,
    stopping: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<BackendSet> {
    let settings = PollSettings::from_config(config);
    let request_timeout = Duration::from_secs(config.providers.request_timeout_s);
    let max_download = config.render.max_download_bytes;
    let quality = |backend: Backend| {
        config
            .catalog
            .backend(backend)
            .map(|b| b.quality)
            .ok_or_else(|| anyhow::anyhow!("the catalog has no `{}` backend", backend.as_str()))
    };
    let p = &config.providers;
    let mut set = BackendSet::default();
    let mut enabled = Vec::new();
    if let Some(key) = &p.runway.api_key {
        let api = runway::Runway::new(&p.runway, key)?;
        let imp = HttpBackend::new(
            api,
            settings.clone(),
            request_timeout,
            quality(Backend::Runway)?,
        )?
        .with_max_download_bytes(max_download)
        .with_shutdown(stopping.clone());
        set.insert(Backend::Runway, Arc::new(imp), circuit());
        enabled.push("runway");
    }
    if let Some(key) = &p.veo.api_key {
        let api = veo::Veo::new(&p.veo, key)?;
        let imp = HttpBackend::new(
            api,
            settings.clone(),
            request_timeout,
            quality(Backend::Veo)?,
        )?
        .with_max_download_bytes(max_download)
        .with_shutdown(stopping.clone());
        set.insert(Backend::Veo, Arc::new(imp), circuit());
        enabled.push("veo");
    }
    if let Some(key) = &p.replicate.api_key {
        let api = replicate::Replicate::new(&p.replicate, key)?;
        let imp = HttpBackend::new(api, settings, request_timeout, quality(Backend::Replicate)?)?
            .with_max_download_bytes(max_download)
            .with_shutdown(stopping.clone());
        set.insert(Backend::Replicate, Arc::new(imp), circuit());
        enabled.push("replicate");
    }
    tracing::info!(providers = ?enabled, "live render providers");
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let soon = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(soon)).unwrap(),
        );
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 0), base);
        assert_eq!(backoff(base, 2), Duration::from_secs(2));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }

    #[test]
    fn keys_are_sensitive_headers() {
        let h = secret_header("Bearer abc".into()).unwrap();
        assert!(h.is_sensitive());
        assert!(secret_header("line\nbreak".into()).is_err());
    }

    #[test]
    fn only_providers_with_a_key_are_live() {
        let mut config = Config::default();
        assert!(
            live_backends(
                &config,
                || Circuit::new(3, Duration::from_secs(30)),
                &Default::default()
            )
            .unwrap()
            .unavailable()
            .len()
                == 3
        );
        config.providers.replicate.api_key = Some(crate::config::Secret::new("r8_x"));
        let set = live_backends(
            &config,
            || Circuit::new(3, Duration::from_secs(30)),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(set.unavailable(), vec![Backend::Runway, Backend::Veo]);
        assert!(set.get(Backend::Replicate).is_some());
    }
}
