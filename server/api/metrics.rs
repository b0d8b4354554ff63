//! gRPC request metrics as a tower layer: a count by method and status code, and the handling
//! time by method. The status is read from the trailers when the response body ends (or from the
//! headers of a trailers-only error), so streams are counted when they finish.

use futures::future::BoxFuture;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics { inner }
    }
}

#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
}

/// A bounded label: our own methods by name, anything else as "other".
fn method_label(path: &str) -> String {
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
    if known {
        path.to_string()
    } else {
        "other".to_string()
    }
}

fn code_name(code: &str) -> &'static str {
    match code.parse::<i32>().map(tonic::Code::from) {
        Ok(c) => match c {
            tonic::Code::Ok => "OK",
            tonic::Code::Cancelled => "CANCELLED",
            tonic::Code::Unknown => "UNKNOWN",
            tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
            tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            tonic::Code::NotFound => "NOT_FOUND",
            tonic::Code::AlreadyExists => "ALREADY_EXISTS",
            tonic::Code::PermissionDenied => "PERMISSION_DENIED",
            tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
            tonic::Code::Aborted => "ABORTED",
            tonic::Code::OutOfRange => "OUT_OF_RANGE",
            tonic::Code::Unimplemented => "UNIMPLEMENTED",
            tonic::Code::Internal => "INTERNAL",
            tonic::Code::Unavailable => "UNAVAILABLE",
            tonic::Code::DataLoss => "DATA_LOSS",
            tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        },
        Err(_) => "UNKNOWN",
    }
}

struct Recorder {
    method: String,
    start: Instant,
}

impl Recorder {
    fn record(self, code: &str) {
        let code = code_name(code);
        metrics::counter!("grpc_server_requests_total", "method" => self.method.clone(), "code" => code).increment(1);
        metrics::histogram!("grpc_server_handling_seconds", "method" => self.method)
            .record(self.start.elapsed().as_secs_f64());
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Metrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
    RB: Body + Send + Unpin + 'static,
{
    type Response = http::Response<MetricsBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let recorder = Recorder {
            method: method_label(req.uri().path()),
            start: Instant::now(),
        };
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            // A trailers-only response (an error before any message) carries the status in its headers.
            let early = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let recorder = match early {
                Some(code) => {
                    recorder.record(&code);
                    None
                }
                None => Some(recorder),
            };
            Ok(response.map(|inner| MetricsBody { inner, recorder }))
        })
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
