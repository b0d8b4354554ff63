//! A real S3-compatible server for tests (feature `test-server`): [s3s-fs] served with hyper on a
//! loopback socket, in a dedicated thread with its own tokio runtime, storing objects in a
//! temporary directory. It checks SigV4 signatures (headers and presigned URLs), so a wrong
//! secret or a tampered presigned URL is refused with 403.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use aiprod_artifacts::{ArtifactStore, testing::S3TestServer};
//! let server = S3TestServer::start().await?;
//! let store = ArtifactStore::from_url(&server.url(), &server.options())?;
//! // … or hand `server.env()` to a child process (object_store reads `AWS_*`).
//! # Ok(()) }
//! ```
//!
//! The server stops (and its directory is removed) when the [`S3TestServer`] is dropped.
//!
//! [s3s-fs]: https://crates.io/crates/s3s-fs

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Bucket created by [`S3TestServer::start`].
pub const TEST_BUCKET: &str = "aiprod-test";
/// Region the test clients sign for (the server accepts any).
pub const TEST_REGION: &str = "us-east-1";
/// Prefix inside the bucket used by [`S3TestServer::url`].
pub const TEST_PREFIX: &str = "artifacts";

/// A running S3-compatible server on `127.0.0.1`; stops when dropped.
pub struct S3TestServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// The server's data directory; the bucket is the directory `root/<bucket>`.
    pub root: PathBuf,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for S3TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TestServer")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl S3TestServer {
    /// Binds `127.0.0.1:0`, creates a temporary directory with the bucket [`TEST_BUCKET`] and
    /// serves S3 on it from a dedicated thread (its own multi-threaded tokio runtime, so the
    /// server outlives the caller's runtime and serves callers from any runtime).
    /// Credentials are random per server.
    pub async fn start() -> anyhow::Result<S3TestServer> {
        let (pending, ready) = Self::spawn()?;
        let addr = ready
            .await
            .context("the S3 test server thread ended early")?;
        pending.ready(addr)
    }

    /// [`Self::start`] for synchronous code (outside any tokio runtime: it blocks until the
    /// server listens).
    pub fn start_blocking() -> anyhow::Result<S3TestServer> {
        let (pending, ready) = Self::spawn()?;
        let addr = ready
            .blocking_recv()
            .context("the S3 test server thread ended early")?;
        pending.ready(addr)
    }

    fn spawn() -> anyhow::Result<(Pending, oneshot::Receiver<std::io::Result<SocketAddr>>)> {
        let dir = tempfile::Builder::new()
            .prefix("aiprod-s3-test-")
            .tempdir()
            .context("creating the S3 test server's directory")?;
        let root = dir.path().to_path_buf();
        std::fs::create_dir(root.join(TEST_BUCKET)).context("creating the test bucket")?;
        let access_key = format!("AIPRODTEST{}", random_hex(5).to_ascii_uppercase());
        let secret_key = random_hex(20);

        let fs = s3s_fs::FileSystem::new(&root)
            .map_err(|e| anyhow::anyhow!("s3s-fs on {}: {e:?}", root.display()))?;
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(
                access_key.clone(),
                secret_key.clone(),
            ));
            b.build()
        };

        let (ready_tx, ready_rx) = oneshot::channel::<std::io::Result<SocketAddr>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("s3-test-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("s3-test-server")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(listener.local_addr());
                    let http = ConnBuilder::new(TokioExecutor::new());
                    let mut stop_rx = stop_rx;
                    loop {
                        let socket = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(e) => {
                                    tracing::warn!(error = %e, "S3 test server: accept failed");
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            },
                            _ = &mut stop_rx => break,
                        };
                        let _ = socket.set_nodelay(true);
                        let conn = http
                            .serve_connection(TokioIo::new(socket), service.clone())
                            .into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                });
                // Drops open connections; waits a little for s3s-fs's blocking file I/O.
                runtime.shutdown_timeout(Duration::from_secs(5));
                drop(dir);
            })
            .context("spawning the S3 test server thread")?;

        let pending = Pending {
            access_key,
            secret_key,
            root,
            stop: stop_tx,
            thread,
        };
        Ok((pending, ready_rx))
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `s3://<bucket>/artifacts`.
    pub fn url(&self) -> String {
        self.url_with_prefix(TEST_PREFIX)
    }

    /// `s3://<bucket>/<prefix>` (`s3://<bucket>` for an empty prefix).
    pub fn url_with_prefix(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        }
    }

    /// Options for [`crate::ArtifactStore::from_url`]: endpoint, plain HTTP, credentials, region.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", self.access_key.as_str()),
            ("aws_secret_access_key", self.secret_key.as_str()),
            ("aws_region", TEST_REGION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The same settings as environment variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), for a child process whose
    /// store is built from its environment.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect()
    }

    /// Path of an object's file in the server's directory (for tests that corrupt or inspect
    /// stored bytes). `key` is relative to the bucket, e.g. `artifacts/blobs/sha256/….mp4`.
    pub fn object_file(&self, key: &str) -> PathBuf {
        Path::new(&self.root).join(&self.bucket).join(key)
    }

    /// Stops the server and waits for its thread (also done on drop).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server thread that has not reported its address yet.
struct Pending {
    access_key: String,
    secret_key: String,
    root: PathBuf,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Pending {
    fn ready(self, addr: std::io::Result<SocketAddr>) -> anyhow::Result<S3TestServer> {
        // Built first, so a failed bind still stops and joins the thread on drop.
        let mut server = S3TestServer {
            endpoint: String::new(),
            bucket: TEST_BUCKET.to_owned(),
            access_key: self.access_key,
            secret_key: self.secret_key,
            root: self.root,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stop: Some(self.stop),
            thread: Some(self.thread),
        };
        let addr = addr.context("binding the S3 test server")?;
        server.addr = addr;
        server.endpoint = format!("http://{addr}");
        Ok(server)
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Hex of `n` bytes from the OS's randomness (through std's hasher keys; good enough for test
/// credentials, which only need to differ between servers).
fn random_hex(n: usize) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(n * 2);
    while out.len() < n * 2 {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n * 2);
    out
}
