//! The HTTP/2 server: hyper's, with the streams of a connection polled by the connection's own
//! task instead of one tokio task each.
//!
//! Why: an event watched by 10,000 streams woke 10,000 tasks; each ran alone, handed one frame to
//! h2 and woke the connection's task, which the scheduler then ran next (its LIFO slot) to write
//! that single frame. So one event cost a task switch and a `send` per stream. Here a stream is a
//! future in the connection's `FuturesUnordered`: a wake-up marks it ready in that set and wakes
//! the connection's task once; that task polls the ready streams, then lets h2 write their frames
//! (`socket::BatchedSocket` sends a flush in one system call). A pass of `FuturesUnordered` ends
//! after two streams that wake themselves, which every stream that sends does, so the task runs
//! more than one pass before the connection writes (`PassWaker`, `PASSES_PER_ROUND`).
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

/// Passes over the ready streams at most, in a round, before the connection writes their frames
/// and the task lets other connections go (a pass sends about two streams' frames, see
/// `PassWaker`). Measured at 10,000 streams on 100 connections (issue 11), interleaved runs:
/// - 1 pass (before): server CPU per delivered event 2.82 µs (median of 20), probe p99 median
///   14.3 ms, 2 runs over 20;
/// - 2 passes: 2.45 µs (median of 7), probe p99 median 13.3 ms, at most 16.9;
/// - 8 passes: 2.27 µs (median of 18), but the probe p99 was over 20 ms in 6 of 18 runs, mostly
///   on the first event after the approval: longer turns per connection make the connections
///   served last wait longer (and with 16 passes, h2's per-connection frame buffers grew into
///   fresh memory there: page faults were 11 % of the drain's runtime samples).
const PASSES_PER_ROUND: usize = 2;

/// The waker the connection's streams are polled with: it wakes the connection's task, and it
/// tells the loop that a stream became ready again during a pass.
///
/// Why: `FuturesUnordered` ends a pass once two of its futures woke themselves while polled, and
/// a stream that sends wakes itself (hyper reserves send capacity after h2 has its waker, and h2
/// wakes the stream when it assigns that capacity). A pass therefore sent about two frames, and
/// the connection then wrote them: one `send` per 5.5 deliveries (20,200 while 11 events reached
/// 10,000 streams). Here the loop runs another pass while streams became ready, up to
/// `PASSES_PER_ROUND`, then the connection writes once (10,200 `send`s with two passes).
#[derive(Default)]
struct PassWaker {
    woken: std::sync::atomic::AtomicBool,
    task: futures::task::AtomicWaker,
}

impl futures::task::ArcWake for PassWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        this.woken.store(true, std::sync::atomic::Ordering::Release);
        this.task.wake();
    }
}

impl PassWaker {
    /// Whether a stream became ready since the last call.
    fn take_woken(&self) -> bool {
        self.woken.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

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
    let pass = Arc::new(PassWaker::default());
    let pass_waker = futures::task::waker(pass.clone());
    let mut stopping = pin!(stop.cancelled());
    let mut asked_to_stop = false;
    let served = poll_fn(|cx| {
        if !asked_to_stop && stopping.as_mut().poll(cx).is_ready() {
            asked_to_stop = true;
            conn.as_mut().graceful_shutdown();
        }
        pass.task.register(cx.waker());
        let mut streams_cx = std::task::Context::from_waker(&pass_waker);
        for _ in 0..ROUNDS_PER_POLL {
            // Streams first, until none is ready (or the share of one poll is used), so that the
            // connection then writes all their frames at once.
            let mut ready_left = false;
            for _ in 0..PASSES_PER_ROUND {
                pass.take_woken();
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(&mut streams_cx) {}
                ready_left = pass.take_woken();
                if !ready_left {
                    break;
                }
            }
            let done = conn.as_mut().poll(cx);
            let new = spawned.take();
            if let Poll::Ready(result) = done {
                streams.extend(new);
                return Poll::Ready(result);
            }
            // Other connections' streams go next (a connection with thousands of ready streams
            // does not hold back one with a few), and the runtime's cooperative budget, which the
            // streams' channels spend, is respected.
            if ready_left || !tokio::task::coop::has_budget_remaining() {
                streams.extend(new);
                break;
            }
            if new.is_empty() && !pass.take_woken() {
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

    /// A call that panics has its stream reset; the other calls of its connection, before and
    /// after, are answered (the streams share the connection's task).
    #[tokio::test]
    async fn a_panicking_call_resets_its_stream_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = tower::service_fn(|req: http::Request<Body>| async move {
            assert_ne!(req.uri().path(), "/panic", "a handler bug");
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let settings = Settings {
            request_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, service, settings, async move {
            let _ = stopped.await;
        }));

        let socket = tokio::net::TcpStream::connect(address).await.unwrap();
        let (client, connection) = h2::client::handshake(socket).await.unwrap();
        let connection = tokio::spawn(connection);
        let call = |path: &'static str| {
            let client = client.clone();
            async move {
                let mut client = client.ready().await?;
                let request = http::Request::post(format!("http://localhost{path}"))
                    .body(())
                    .unwrap();
                let (response, _) = client.send_request(request, true)?;
                response.await.map(|r| r.status())
            }
        };
        // One call held open across the panic (its response comes after).
        let slow = tokio::spawn(call("/slow"));
        assert_eq!(call("/ok").await.unwrap(), http::StatusCode::OK);
        let reset = call("/panic").await.unwrap_err();
        assert!(reset.is_reset(), "{reset:?}");
        assert_eq!(call("/ok").await.unwrap(), http::StatusCode::OK);
        assert_eq!(slow.await.unwrap().unwrap(), http::StatusCode::OK);
        assert!(!connection.is_finished(), "the connection survives");

        stop.send(()).unwrap();
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .unwrap();
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
