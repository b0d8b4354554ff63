//! The HTTP/2 server: hyper's, with the streams of a connection polled by the connection's own
//! task instead of one tokio task each.
//!
//! Why: an event watched by 10,000 streams woke 10,000 tasks; each ran alone, handed one frame to
//! h2 and woke the connection's task, which the scheduler then ran next (its LIFO slot) to write
//! that single frame. So one event cost a task switch and a `send` per stream. Here a stream is a
//! future in the connection's `FuturesUnordered`: a wake-up marks it ready in that set and wakes
//! the connection's task once; that task polls the ready streams, then lets h2 write their frames
//! (`socket::BatchedSocket` sends a flush in one system call). A pass of `FuturesUnordered` ends
//! early after two streams that wake themselves, which h2 makes a stream do when it sends, so the
//! frames of a pass are few; polling more streams per write measured no faster (see issue 11).
//!
//! The trade-off: the streams of one connection share one task, so one connection's calls use one
//! core at a time (as with HTTP/1). Handlers await the database and media work runs on
//! `media_threads`, so little CPU runs in a connection's task; clients that need more open more
//! connections.
//!
//! What `tonic::transport::Server` did around the routes is kept: HTTP/2 keep-alive pings, the
//! server's request timeout (also bounded by `grpc-timeout`; CANCELLED "Timeout expired" when it
//! expires, as tonic answers), a debug span per call, no limit on concurrent streams per
//! connection, and a graceful shutdown (GOAWAY, then in-flight calls finish).

use super::socket::BatchedSocket;
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tonic::body::Body;
use tower::ServiceExt;
use tracing::Instrument;

/// How connections are served.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The longest a call may take to answer (its response headers); a shorter `grpc-timeout`
    /// wins.
    pub request_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

/// Serves `service` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// connection to finish (GOAWAY) and returns once they have all closed.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                // Small responses must not wait out delayed ACKs (~40 ms per unary call).
                if let Err(e) = socket.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                connections.spawn(connection(
                    BatchedSocket::new(socket),
                    Handler {
                        service: service.clone(),
                        timeout: settings.request_timeout,
                    },
                    settings.clone(),
                    stop.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors or a connection reset before it was accepted: go on,
                // without spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // New clients are refused from here (the listening socket closes).
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// A stream of a connection: hyper's future that calls the service and sends the response.
type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Stream futures that hyper hands over (`hyper::rt::Executor`), for the connection's task.
#[derive(Clone, Default)]
struct Spawned(Arc<Mutex<Vec<StreamFuture>>>);

impl Spawned {
    fn take(&self) -> Vec<StreamFuture> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for Spawned {
    fn execute(&self, stream: F) {
        // A panic in a call ends that call's stream only (as it did on a task of its own), not
        // the connection's task and every other call on it.
        let contained = std::panic::AssertUnwindSafe(stream)
            .catch_unwind()
            .map(|ended| {
                if ended.is_err() {
                    tracing::error!("a call panicked; its stream was reset");
                }
            });
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::pin(contained));
    }
}

/// Polls at most this many rounds of (streams, connection) before letting other tasks run.
const ROUNDS_PER_POLL: usize = 8;

/// One connection: hyper's HTTP/2 connection and its streams, polled together.
async fn connection<S>(
    socket: BatchedSocket,
    handler: Handler<S>,
    settings: Settings,
    stop: CancellationToken,
) where
    Handler<S>: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        >,
{
    let spawned = Spawned::default();
    let mut builder = hyper::server::conn::http2::Builder::new(spawned.clone());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout)
        .max_concurrent_streams(None);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(socket), handler));
    let mut streams = FuturesUnordered::new();
    let mut stopping = pin!(stop.cancelled());
    let mut asked_to_stop = false;
    let served = poll_fn(|cx| {
        if !asked_to_stop && stopping.as_mut().poll(cx).is_ready() {
            asked_to_stop = true;
            conn.as_mut().graceful_shutdown();
        }
        for _ in 0..ROUNDS_PER_POLL {
            // Streams first, so that the connection then writes all their frames at once.
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            let done = conn.as_mut().poll(cx);
            let new = spawned.take();
            if let Poll::Ready(result) = done {
                streams.extend(new);
                return Poll::Ready(result);
            }
            if new.is_empty() {
                return Poll::Pending;
            }
            streams.extend(new);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended");
    }
    // Calls still running when the connection ended (their client is gone) finish as they would
    // have on tasks of their own.
    while streams.next().await.is_some() {}
}

/// A call: the service, under the request timeout and a debug span.
#[derive(Clone)]
struct Handler<S> {
    service: S,
    timeout: Duration,
}

impl<S> hyper::service::Service<http::Request<Incoming>> for Handler<S>
where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let timeout = grpc_timeout(req.headers()).map_or(self.timeout, |t| t.min(self.timeout));
        let span = tracing::debug_span!("rpc", method = %req.uri().path());
        let call = self.service.clone().oneshot(req.map(Body::new));
        let answer = async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(answered) => answered,
                Err(_) => Ok(Status::cancelled("Timeout expired").into_http()),
            }
        };
        if span.is_disabled() {
            Box::pin(answer)
        } else {
            Box::pin(answer.instrument(span))
        }
    }
}

/// The `grpc-timeout` header (checked by `transport::check_headers`; here `None` when absent or
/// malformed).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(v: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", http::HeaderValue::from_str(v).unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "10x", "1.5S", "-1S"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
