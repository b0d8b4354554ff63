//! Everything a call passes before routing, as one tower layer: metrics, transport-level checks,
//! load shedding and authentication.
//!
//! One layer, not four: each layer of its own cost a boxed future, a clone of the service below it
//! and a poll of its own per call — together about as much server CPU as a cached `EstimateCost`
//! itself (measured in the unary bench). The steps, in order:
//! 1. start the call's metrics (`metrics`): counted by method and final status, shed calls included;
//! 2. transport checks (`transport`): content-type, `grpc-timeout`, request framing as it streams;
//! 3. shed load: past `concurrency_limit` calls in flight, RESOURCE_EXHAUSTED at once (with
//!    RetryInfo) instead of a queue;
//! 4. authenticate (`auth`) and rate-limit tenant calls, so no aiprod.v1 RPC is reached without a
//!    credential; health and reflection pass through;
//! 5. the fast lane's methods (`wire::FastLane`: EstimateCost, GetJob, WatchJob) are answered
//!    here; every other call goes on to the router.

use super::auth;
use super::metrics::{MetricsBody, Recorder};
use super::transport::{self, CheckedBody};
use super::wire::{FastLane, Serve};
use crate::app::App;
use crate::error::Error;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;

/// The layer; `max_message_bytes` is the largest request message accepted, `concurrency_limit`
/// the most calls handled at once.
#[derive(Clone)]
pub struct GateLayer(Arc<Shared>);

/// What every call's gate shares (one reference count per clone of the service).
struct Shared {
    app: Arc<App>,
    fast: FastLane,
    max_message_bytes: usize,
    in_flight: Arc<Semaphore>,
    concurrency_limit: usize,
}

impl GateLayer {
    /// `fast`: the methods answered without routing.
    pub fn new(app: Arc<App>, fast: FastLane) -> GateLayer {
        let config = app.config();
        GateLayer(Arc::new(Shared {
            fast,
            max_message_bytes: config.max_message_bytes,
            concurrency_limit: config.concurrency_limit,
            in_flight: Arc::new(Semaphore::new(config.concurrency_limit)),
            app,
        }))
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            shared: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Where a call goes after the gate.
enum Route<S> {
    Fast(Serve),
    Routed(S),
}

/// How long a shed caller is told to wait before retrying.
const SHED_RETRY_AFTER: Duration = Duration::from_millis(100);

impl<S> tower::Service<http::Request<Body>> for Gate<S>
where
    S: tower::Service<http::Request<CheckedBody<Body>>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<MetricsBody<Body>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let recorder = Recorder::start(req.uri().path());
        // Checks that need no await answer here, before the call's future exists.
        if let Err(response) = transport::check_headers(req.headers()) {
            return Box::pin(std::future::ready(Ok(recorder.finish(response))));
        }
        let Ok(permit) = self.shared.in_flight.clone().try_acquire_owned() else {
            let status = Status::from(Error::ResourceExhausted {
                subject: "server/concurrency_limit".into(),
                message: format!(
                    "the server is handling its limit of {} calls; retry shortly",
                    self.shared.concurrency_limit
                ),
                retry_after: Some(SHED_RETRY_AFTER),
            });
            return Box::pin(std::future::ready(Ok(recorder.finish(status.into_http()))));
        };
        let shared = self.shared.clone();
        // The fast lane needs no routing; anything else goes to the service we were polled for
        // (a fresh clone is left in its place).
        let route = match shared.fast.route(req.uri().path()) {
            Some(serve) => Route::Fast(serve),
            None => {
                let clone = self.inner.clone();
                Route::Routed(std::mem::replace(&mut self.inner, clone))
            }
        };
        Box::pin(async move {
            if let Err(status) = auth::authorize(&shared.app, &mut req).await {
                drop(permit);
                return Ok(recorder.finish(status.into_http()));
            }
            let req = transport::checked(req, shared.max_message_bytes);
            let response = match route {
                Route::Fast(serve) => shared.fast.serve(serve, req.map(Body::new)).await,
                Route::Routed(mut inner) => inner.call(req).await?,
            };
            drop(permit);
            Ok(recorder.finish(transport::rewrite_decoder_errors(response)))
        })
    }
}
