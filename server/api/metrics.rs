//! gRPC request metrics (recorded by the `gate` layer): a count by method and status code, and
//! the handling time by method. The status is read from the trailers when the response body ends (or from the
//! headers of a trailers-only error), so streams are counted when they finish.

use http_body::{Body, Frame};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

/// A bounded label: our own methods by name, anything else as "other".
fn method_label(path: &str) -> &str {
    const SERVICES: [&str; 7] = [
        "/aiprod.v1.PresetService/",
        "/aiprod.v1.CostEstimatorService/",
        "/aiprod.v1.RenderService/",
        "/aiprod.v1.IccService/",
        "/aiprod.v1.AdminService/",
        "/grpc.health.v1.Health/",
        "/grpc.reflection.",
    ];
    let known = SERVICES.iter().any(|s| path.starts_with(s))
        && path.len() <= 80
        && path.bytes().all(|b| b.is_ascii_graphic());
    if known { path } else { "other" }
}

/// gRPC status codes 0..=16 by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The index in `CODES` of a `grpc-status` value (UNKNOWN for anything else).
fn code_index(code: &str) -> usize {
    code.parse::<usize>()
        .ok()
        .filter(|c| *c < CODES.len())
        .unwrap_or(2)
}

/// One method's label and metric handles, made once: a call neither allocates its labels nor
/// looks the series up in the registry.
struct MethodMetrics {
    handling: metrics::Histogram,
    label: &'static str,
    by_code: [OnceLock<metrics::Counter>; 17],
}

/// Distinct method labels kept (their handles live for the process); beyond, "other".
const MAX_METHODS: usize = 256;

type MethodTable = RwLock<HashMap<&'static str, &'static MethodMetrics>>;

fn method_metrics(path: &str) -> &'static MethodMetrics {
    static TABLE: OnceLock<MethodTable> = OnceLock::new();
    let table = TABLE.get_or_init(Default::default);
    let label = method_label(path);
    if let Some(m) = table.read().unwrap_or_else(|e| e.into_inner()).get(label) {
        return m;
    }
    let mut t = table.write().unwrap_or_else(|e| e.into_inner());
    let label = if t.len() >= MAX_METHODS {
        "other"
    } else {
        label
    };
    if let Some(m) = t.get(label) {
        return m;
    }
    // Bounded by MAX_METHODS: leaked once, like the registry's own series.
    let label: &'static str = Box::leak(label.to_owned().into_boxed_str());
    let m: &'static MethodMetrics = Box::leak(Box::new(MethodMetrics {
        handling: metrics::histogram!("grpc_server_handling_seconds", "method" => label),
        label,
        by_code: Default::default(),
    }));
    t.insert(label, m);
    m
}

/// One call's metrics, from its start to its final status.
pub struct Recorder {
    method: &'static MethodMetrics,
    start: Instant,
}

impl Recorder {
    pub fn start(path: &str) -> Recorder {
        Recorder {
            method: method_metrics(path),
            start: Instant::now(),
        }
    }

    /// The response, whose body records the call when it ends; a trailers-only response (an
    /// error before any message) carries its status in the headers and is recorded now.
    pub fn finish<RB>(self, response: http::Response<RB>) -> http::Response<MetricsBody<RB>> {
        let recorder = match response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
        {
            Some(code) => {
                self.record(code);
                None
            }
            None => Some(self),
        };
        response.map(|inner| MetricsBody { inner, recorder })
    }

    fn record(self, code: &str) {
        let m = self.method;
        let i = code_index(code);
        m.by_code[i]
            .get_or_init(|| {
                metrics::counter!("grpc_server_requests_total", "method" => m.label, "code" => CODES[i])
            })
            .increment(1);
        m.handling.record(self.start.elapsed().as_secs_f64());
    }
}

/// A response body that records the call when its trailers (or its end) arrive.
pub struct MetricsBody<B> {
    inner: B,
    recorder: Option<Recorder>,
}

impl<B> Drop for MetricsBody<B> {
    fn drop(&mut self) {
        // The client went away before the end of the stream.
        if let Some(r) = self.recorder.take() {
            r.record("1");
        }
    }
}

impl<B: Body + Unpin> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                    && let Some(r) = self.recorder.take()
                {
                    r.record(code);
                }
            }
            Poll::Ready(None) => {
                if let Some(r) = self.recorder.take() {
                    r.record("0");
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
