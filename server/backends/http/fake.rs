//! A scriptable HTTP server on 127.0.0.1:0 for the adapters' tests: each provider's test module
//! answers like the provider's documented API, and every request is recorded for assertions.

use super::PollSettings;
use crate::backends::RenderRequest;
use crate::domain::manifest::AspectRatio;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub const PROMPT: &str = "Dawn over the ridge, a runner's shoes hit the trail in slow motion.";

/// Settings for tests: polls every 2 ms, a generous timeout.
pub fn settings() -> PollSettings {
    PollSettings {
        poll_interval: Duration::from_millis(2),
        task_timeout: Duration::from_secs(10),
        rate_limit_retries: 3,
    }
}

/// Settings whose task timeout is short, for tasks that never finish.
pub fn short_timeout() -> PollSettings {
    PollSettings {
        task_timeout: Duration::from_millis(150),
        ..settings()
    }
}

pub fn request(aspect_ratio: AspectRatio, duration_s: u32) -> RenderRequest {
    RenderRequest {
        job_id: "job_1".into(),
        shot_id: "shot-01".into(),
        attempt: 1,
        prompt: PROMPT.into(),
        duration_s,
        aspect_ratio,
        camera: crate::domain::manifest::Camera::Pan,
        shot_number: 1,
        shot_count: 1,
        palette: vec![],
    }
}

/// How a scripted task ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeed,
    SucceedWithoutOutput,
    Fail,
    /// Runs forever.
    Never,
    /// The create call answers something that is not the documented JSON.
    MalformedCreate,
    /// Status checks answer JSON without the documented fields.
    MalformedStatus,
}

/// A task's scripted life.
#[derive(Clone, Copy, Debug)]
pub struct Script {
    /// The first N create calls are answered with 429 and `Retry-After: 0`.
    pub create_rate_limited: usize,
    /// Status checks answered "running" before the outcome.
    pub running_polls: usize,
    pub outcome: Outcome,
}

impl Script {
    pub fn new(outcome: Outcome) -> Script {
        Script {
            create_rate_limited: 0,
            running_polls: 0,
            outcome,
        }
    }

    pub fn running(self, polls: usize) -> Script {
        Script {
            running_polls: polls,
            ..self
        }
    }

    pub fn rate_limited(self, creates: usize) -> Script {
        Script {
            create_rate_limited: creates,
            ..self
        }
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Counters a handler may use to script a task's life.
#[derive(Default)]
pub struct Counters {
    creates: AtomicUsize,
    polls: AtomicUsize,
}

impl Counters {
    /// Counts a create call; 1 for the first.
    pub fn next_create(&self) -> usize {
        self.creates.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Counts a status check; 1 for the first.
    pub fn next_poll(&self) -> usize {
        self.polls.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// An answer.
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "text/html".into())],
            body: body.into(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

type Handler = dyn Fn(&Recorded, &Counters) -> Reply + Send + Sync;

struct Inner {
    handler: Box<Handler>,
    counters: Counters,
    log: Mutex<Vec<Recorded>>,
    /// Woken at every request.
    arrived: Notify,
}

pub struct Fake {
    pub base_url: String,
    inner: Arc<Inner>,
}

impl Fake {
    pub async fn start(
        handler: impl Fn(&Recorded, &Counters) -> Reply + Send + Sync + 'static,
    ) -> Fake {
        let inner = Arc::new(Inner {
            handler: Box::new(handler),
            counters: Counters::default(),
            log: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake {
            base_url: format!("http://{addr}"),
            inner,
        }
    }

    /// Requests with this method whose path starts with `path`, in arrival order.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.inner
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path))
            .cloned()
            .collect()
    }

    /// The first request with this method whose path starts with `path`, once it has arrived.
    pub async fn wait_for(&self, method: &str, path: &str) -> Recorded {
        loop {
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(r) = self.requests_to(method, path).into_iter().next() {
                return r;
            }
            arrived.await;
        }
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    inner.log.lock().unwrap().push(recorded.clone());
    inner.arrived.notify_waiters();
    let reply = (inner.handler)(&recorded, &inner.counters);
    let mut headers = HeaderMap::new();
    for (name, value) in reply.headers {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    (
        StatusCode::from_u16(reply.status).expect("status"),
        headers,
        reply.body,
    )
        .into_response()
}
