//! The AIPROD performance benchmark: `cargo bench --bench bench`.
//!
//! One run, in this process, on loopback only, with bounded durations:
//! 1. unary `CostEstimatorService.EstimateCost`: throughput and latency of 1 and of N concurrent
//!    callers over a few connections, against a baseline measured the same way in the same run: a
//!    bare tonic server that only serves `grpc.health.v1.Health/Check` (same transport settings,
//!    no AIPROD layers). The ratios are the figures;
//! 2. `WatchJob` fan-out: N streams on one job and on N jobs (one stream each), opened while the
//!    jobs wait for manifest approval, then the jobs are approved and render; commit-to-receive
//!    delivery latency (the event's `create_time`, stamped in the committing transaction, against
//!    the receive time) and the resident memory an idle open stream costs (VmRSS delta of this
//!    process, client and server side together, over the opening of the N streams);
//! 3. end-to-end `quick_social` jobs per second with zero sandbox latency, created concurrently and
//!    watched to DELIVERED, on SQLite and on a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`);
//!    every job renders, measures and assembles real video at the smallest sandbox resolution
//!    (160x90);
//! 4. media (`benches/media.rs`): encode speed, assembly, premium_spot delivery in parallel vs one
//!    shot at a time, download throughput, CPU-seconds per delivered video-minute.
//!
//! Prints a table and one JSON document, also written to `target/bench-results.json`. Figures
//! only: nothing here asserts a timing. Settings (environment; defaults in parentheses):
//! `AIPROD_BENCH_SECONDS` (measured window of each throughput phase, 5),
//! `AIPROD_BENCH_WARMUP_SECONDS` (1), `AIPROD_BENCH_CALLERS` ("1,64"),
//! `AIPROD_BENCH_CONNECTIONS` (4), `AIPROD_BENCH_STREAMS` ("100,500"),
//! `AIPROD_BENCH_STREAMS_PER_CONNECTION` (100), `AIPROD_BENCH_OPEN_BATCH` (streams opened at
//! once, 50), `AIPROD_BENCH_FANOUT_LATENCY_MS` (sandbox latency of the fan-out server, 20),
//! `AIPROD_BENCH_JOB_CONCURRENCY` (32), `AIPROD_BENCH_POSTGRES` (`auto`, `0` or `1`),
//! `AIPROD_BENCH_JSON` (output path), `AIPROD_PG_BIN` (PostgreSQL binaries).

mod media;

use aiprod::config::Config;
use aiprod_sdk::pb::cost_estimator_service_client::CostEstimatorServiceClient;
use aiprod_sdk::{AdminClient, AuthChannel, Client, pb};
use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// Sandbox clips of the end-to-end section: 160x90, the smallest resolution tests use.
const E2E_SHORT_SIDE: u32 = 90;
const BRIEF: &str =
    "Launch film for our new trail running shoe: dawn in the mountains, fast feet, bold colours.";

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    seconds: f64,
    warmup: f64,
    callers: Vec<usize>,
    connections: usize,
    streams: Vec<usize>,
    streams_per_connection: usize,
    open_batch: usize,
    fanout_latency_ms: u64,
    job_concurrency: usize,
    postgres: String,
    json_path: PathBuf,
}

/// A comma-separated list of positive counts, e.g. "100,500".
fn env_counts(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("ignoring {name}={v:?} (not a valid value)");
            default
        }),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        Settings {
            seconds: env_or("AIPROD_BENCH_SECONDS", 5.0_f64).max(0.5),
            warmup: env_or("AIPROD_BENCH_WARMUP_SECONDS", 1.0_f64).max(0.0),
            callers: env_counts("AIPROD_BENCH_CALLERS", "1,64"),
            connections: env_or("AIPROD_BENCH_CONNECTIONS", 4_usize).max(1),
            streams: env_counts("AIPROD_BENCH_STREAMS", "100,500"),
            streams_per_connection: env_or("AIPROD_BENCH_STREAMS_PER_CONNECTION", 100_usize)
                .clamp(1, 190),
            open_batch: env_or("AIPROD_BENCH_OPEN_BATCH", 50_usize).max(1),
            fanout_latency_ms: env_or("AIPROD_BENCH_FANOUT_LATENCY_MS", 20_u64),
            job_concurrency: env_or("AIPROD_BENCH_JOB_CONCURRENCY", 32_usize).max(1),
            postgres: std::env::var("AIPROD_BENCH_POSTGRES").unwrap_or_else(|_| "auto".into()),
            json_path: std::env::var("AIPROD_BENCH_JSON")
                .map(PathBuf::from)
                .unwrap_or_else(|_| target.join("bench-results.json")),
        }
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    fn window(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    fn json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "warmup_seconds": self.warmup,
            "callers": self.callers,
            "connections": self.connections,
            "streams": self.streams,
            "streams_per_connection": self.streams_per_connection,
            "open_batch": self.open_batch,
            "fanout_sandbox_latency_ms": self.fanout_latency_ms,
            "job_concurrency": self.job_concurrency,
            "postgres": self.postgres,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Latencies in microseconds, up to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        round2(h.value_at_quantile(quantile) as f64 / 1000.0)
    }
}

fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        round2(h.max() as f64 / 1000.0)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "samples": h.len(),
        "p50_ms": ms(h, 0.50),
        "p90_ms": ms(h, 0.90),
        "p99_ms": ms(h, 0.99),
        "max_ms": max_ms(h),
    })
}

/// This process's resident memory, in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Commit-to-receive latency of an event, in microseconds (`create_time` has millisecond precision).
fn delivery_micros(e: &pb::JobEvent) -> u64 {
    let Some(t) = &e.create_time else { return 0 };
    let created = t.seconds * 1_000_000 + i64::from(t.nanos) / 1000;
    (unix_micros() - created).max(0) as u64
}

fn text_of(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn machine_json() -> Value {
    let cpu = text_of("/proc/cpuinfo").and_then(|c| {
        c.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
    });
    let mem_kib = text_of("/proc/meminfo").and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    });
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": cpu,
        "memory_gib": mem_kib.map(|k| round2(k as f64 / 1024.0 / 1024.0)),
        "os": std::env::consts::OS,
        "commit": commit,
        "unix_time": unix_micros() / 1_000_000,
    })
}

// ---------------------------------------------------------------------------------------------
// Servers

/// A server running in this process on an ephemeral loopback port.
struct Running {
    endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

fn aiprod_config(
    dir: &tempfile::TempDir,
    database_url: Option<&str>,
    latency_ms: u64,
    short_side: u32,
) -> Config {
    let mut c = Config {
        database_url: database_url
            .map(str::to_string)
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("aiprod.db").display())),
        admin_token: Some(ADMIN_TOKEN.into()),
        demo_tenant: false,
        shutdown_grace_s: 5,
        ..Config::default()
    };
    c.sandbox.latency_ms = latency_ms;
    // A small sandbox resolution: the control plane plus little media work per job.
    c.media.sandbox_short_side = short_side;
    c.media.ffmpeg = "off".into();
    c.artifacts.dir = Some(dir.path().join("artifacts"));
    // Measure the service, not the per-tenant limits: lift every tier's request rate and
    // concurrent-job limits (the checks still run on every call).
    for tier in c.catalog.tiers.values_mut() {
        tier.requests_per_minute = 1_000_000_000;
        tier.concurrent_jobs = 1_000_000;
    }
    c
}

async fn loopback() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    Ok((listener, endpoint))
}

impl Running {
    /// The real server (`aiprod::serve`), on SQLite in a temporary directory unless `database_url`.
    async fn aiprod(
        database_url: Option<&str>,
        latency_ms: u64,
        short_side: u32,
    ) -> anyhow::Result<Running> {
        let dir = tempfile::tempdir()?;
        let config = aiprod_config(&dir, database_url, latency_ms, short_side);
        let (listener, endpoint) = loopback().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(aiprod::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        Ok(Running {
            endpoint,
            stop: Some(stop),
            handle,
            _dir: Some(dir),
        })
    }

    /// The baseline: a bare tonic server with only `grpc.health.v1.Health`, the transport settings
    /// of `aiprod::serve` (timeout, HTTP/2 keepalive) and TCP_NODELAY on accepted sockets, without
    /// AIPROD's layers. (`Server::tcp_nodelay` does not apply to an incoming stream: it is set on
    /// the `TcpIncoming` here.)
    async fn baseline() -> anyhow::Result<Running> {
        let (listener, endpoint) = loopback().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder()
            .timeout(Duration::from_secs(30))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            });
        let handle = tokio::spawn(async move { server.await.map_err(anyhow::Error::from) });
        Ok(Running {
            endpoint,
            stop: Some(stop),
            handle,
            _dir: None,
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.handle)
            .await
            .context("the server did not stop within 30 s")??
    }
}

/// A new Platinum tenant with a test-mode (sandbox) key, made through AdminService.
async fn tenant_key(endpoint: &str, name: &str) -> anyhow::Result<String> {
    let admin = AdminClient::connect(endpoint.to_string(), ADMIN_TOKEN).await?;
    let tenant = admin
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            name: name.into(),
            tier: pb::Tier::Platinum as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tenant
        .context("CreateTenant returned no tenant")?;
    let key = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.tenant_id,
            mode: pb::ApiKeyMode::Test as i32,
            name: "bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(key.secret)
}

/// `n` clients, each on its own connection.
async fn clients(endpoint: &str, secret: &str, n: usize) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Client::connect(endpoint.to_string(), secret).await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 1. Unary throughput and latency

struct Unary {
    callers: usize,
    connections: usize,
    seconds: f64,
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
}

impl Unary {
    fn rps(&self) -> f64 {
        round2(self.ok as f64 / self.seconds)
    }

    fn json(&self, target: &str) -> Value {
        let mut v = latency_json(&self.hist);
        v["target"] = json!(target);
        v["callers"] = json!(self.callers);
        v["connections"] = json!(self.connections);
        v["seconds"] = json!(self.seconds);
        v["requests"] = json!(self.ok);
        v["errors"] = json!(self.errors);
        v["rps"] = json!(self.rps());
        v
    }
}

/// `callers` closed-loop callers spread over `clients` (one connection each): each calls, waits for
/// the answer, and calls again. Calls completing in the measured window (after the warm-up) count.
async fn drive<C, F, Fut>(clients: &[C], callers: usize, s: &Settings, call: F) -> Unary
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let measure_from = Instant::now() + s.warmup();
    let end = measure_from + s.window();
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let call = call.clone();
            tokio::spawn(async move {
                let mut hist = histogram();
                let (mut ok, mut errors) = (0_u64, 0_u64);
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let good = call(client.clone()).await;
                    let t1 = Instant::now();
                    if t1 >= measure_from && t1 <= end {
                        if good {
                            ok += 1;
                            hist.saturating_record((t1 - t0).as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (hist, ok, errors)
            })
        })
        .collect();
    let mut out = Unary {
        callers,
        connections: clients.len(),
        seconds: s.seconds,
        ok: 0,
        errors: 0,
        hist: histogram(),
    };
    for t in tasks {
        if let Ok((h, ok, errors)) = t.await {
            let _ = out.hist.add(&h);
            out.ok += ok;
            out.errors += errors;
        }
    }
    out
}

/// Adds the same credential and deadline as the SDK does, so both targets do the same client work.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        req.set_timeout(aiprod_sdk::DEFAULT_TIMEOUT);
        Ok(req)
    }
}

type HealthChannel = HealthClient<InterceptedService<Channel, Bearer>>;

/// One caller count: the baseline and AIPROD, measured the same way one after the other.
struct UnaryPair {
    callers: usize,
    base: Unary,
    ours: Unary,
}

impl UnaryPair {
    fn ratios(&self) -> [f64; 4] {
        let (o, b) = (&self.ours.hist, &self.base.hist);
        [
            ratio(self.ours.rps(), self.base.rps()),
            ratio(ms(o, 0.5), ms(b, 0.5)),
            ratio(ms(o, 0.9), ms(b, 0.9)),
            ratio(ms(o, 0.99), ms(b, 0.99)),
        ]
    }

    fn json(&self) -> Value {
        let [rps, p50, p90, p99] = self.ratios();
        json!({
            "callers": self.callers,
            "baseline": self.base.json("tonic grpc.health.v1.Health/Check"),
            "aiprod": self.ours.json("aiprod.v1.CostEstimatorService/EstimateCost"),
            "ratio": { "rps": rps, "p50": p50, "p90": p90, "p99": p99 },
        })
    }
}

/// For each caller count: the baseline (its own server), then EstimateCost on `endpoint`. Both
/// use `s.connections` connections with the SDK's channel settings and the same per-call
/// interceptor work (bearer credential + deadline).
async fn unary(s: &Settings, endpoint: &str, secret: &str) -> anyhow::Result<Vec<UnaryPair>> {
    let server = Running::baseline().await?;
    let bearer = Bearer(format!("Bearer {secret}").parse()?);
    let mut base_conns: Vec<HealthChannel> = Vec::new();
    for _ in 0..s.connections {
        // The SDK's channel settings.
        let channel = Endpoint::from_shared(server.endpoint.clone())?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .connect()
            .await?;
        base_conns.push(HealthClient::new(InterceptedService::new(
            channel,
            bearer.clone(),
        )));
    }
    let health = |mut c: HealthChannel| async move {
        c.check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
    };
    let our_conns: Vec<CostEstimatorServiceClient<AuthChannel>> =
        clients(endpoint, secret, s.connections)
            .await?
            .iter()
            .map(|c| c.costs().raw())
            .collect();
    let request = pb::EstimateCostRequest {
        preset_id: "brand_campaign".into(),
        duration_s: Some(60),
        ..Default::default()
    };
    let estimate = move |mut c: CostEstimatorServiceClient<AuthChannel>| {
        let request = request.clone();
        async move { c.estimate_cost(request).await.is_ok() }
    };
    let mut out = Vec::new();
    for &callers in &s.callers {
        eprintln!("aiprod bench: unary, {callers} callers: baseline ...");
        let base = drive(&base_conns, callers, s, health).await;
        eprintln!("aiprod bench: unary, {callers} callers: EstimateCost ...");
        let ours = drive(&our_conns, callers, s, estimate.clone()).await;
        out.push(UnaryPair {
            callers,
            base,
            ours,
        });
    }
    drop(base_conns);
    server.stop().await?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 2. WatchJob fan-out

struct Fanout {
    mode: &'static str,
    streams: usize,
    connections: usize,
    jobs: usize,
    open_seconds: f64,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    events: u64,
    drain_seconds: f64,
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Fanout {
    fn kib_per_stream(&self) -> Option<f64> {
        let (before, after) = (self.rss_before_kib?, self.rss_after_kib?);
        Some(round2((after as f64 - before as f64) / self.streams as f64))
    }

    fn json(&self) -> Value {
        let mut v = latency_json(&self.hist);
        v["mode"] = json!(self.mode);
        v["streams"] = json!(self.streams);
        v["connections"] = json!(self.connections);
        v["jobs"] = json!(self.jobs);
        v["open_seconds"] = json!(round2(self.open_seconds));
        v["rss_before_kib"] = json!(self.rss_before_kib);
        v["rss_after_kib"] = json!(self.rss_after_kib);
        v["kib_per_stream"] = json!(self.kib_per_stream());
        v["events_delivered"] = json!(self.events);
        v["drain_seconds"] = json!(round2(self.drain_seconds));
        v["events_per_second"] = json!(ratio(self.events as f64, self.drain_seconds));
        v["errors"] = json!(self.errors);
        v["first_error"] = json!(self.first_error);
        v
    }
}

/// Creates a brand_campaign job (which stops for manifest review) and waits until it awaits
/// approval; returns its id and the sequence of its latest event.
async fn job_awaiting_approval(
    client: &Client,
    request_id: String,
) -> anyhow::Result<(String, u64)> {
    let job = client
        .render()
        .create_job(pb::CreateJobRequest {
            request_id,
            preset_id: "brand_campaign".into(),
            brief: BRIEF.into(),
            brand_id: "acme-shoes".into(),
            // Two shots: every job's clips are real, and 500 jobs must render within the drain.
            duration_s: Some(20),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .context("CreateJob returned no job")?;
    let mut stream = Box::pin(client.watch_job(job.job_id.clone(), 0));
    while let Some(e) = stream.next().await {
        let e = e?;
        if e.state == pb::JobState::AwaitingApproval as i32 {
            return Ok((job.job_id, e.sequence));
        }
        anyhow::ensure!(
            !aiprod_sdk::is_terminal(e.state),
            "job {} ended before review",
            job.job_id
        );
    }
    anyhow::bail!("the stream of job {} ended before review", job.job_id)
}

async fn approve(client: &Client, job_id: String) -> anyhow::Result<()> {
    let manifest = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job_id.clone(),
        })
        .await?
        .into_inner()
        .manifest
        .context("GetManifest returned no manifest")?;
    client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id,
            etag: manifest.etag,
        })
        .await?;
    Ok(())
}

/// One open stream, opened after `open_seq` (no replay, so the memory measured is that of an idle
/// open stream): reports "open" once the server has answered with the stream's headers, then
/// records the delivery latency of every event until the terminal one.
async fn one_stream(
    client: Client,
    job_id: String,
    open_seq: u64,
    ready: mpsc::UnboundedSender<()>,
) -> (Histogram<u64>, u64, Option<String>) {
    let mut hist = histogram();
    let mut received = 0_u64;
    let mut request = tonic::Request::new(pb::WatchJobRequest {
        job_id,
        after_sequence: open_seq,
    });
    request.set_timeout(Duration::from_secs(600));
    let opened = client.render().watch_job(request).await;
    let _ = ready.send(()); // open, or failed: never leave the opener waiting
    let error = match opened {
        Err(status) => Some(status.to_string()),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        let Some(e) = message.event else { continue };
                        hist.saturating_record(delivery_micros(&e));
                        received += 1;
                        if aiprod_sdk::is_terminal(e.state) {
                            break None;
                        }
                    }
                    Ok(None) => break Some("the stream ended before the terminal event".into()),
                    Err(status) => break Some(status.to_string()),
                }
            }
        }
    };
    (hist, received, error)
}

async fn fanout(
    s: &Settings,
    endpoint: &str,
    secret: &str,
    streams: usize,
    one_job: bool,
) -> anyhow::Result<Fanout> {
    let mode = if one_job { "one_job" } else { "many_jobs" };
    let connections = streams.div_ceil(s.streams_per_connection);
    let conns = clients(endpoint, secret, connections).await?;
    let control = Client::connect(endpoint.to_string(), secret).await?;
    let jobs_n = if one_job { 1 } else { streams };
    let tag = unix_micros();
    let jobs: Vec<(String, u64)> = futures::stream::iter(0..jobs_n)
        .map(|i| job_awaiting_approval(&control, format!("fanout-{tag}-{i}")))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    // Let the preparatory watchers end on the server before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before_kib = rss_kib();

    let opened = Instant::now();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut tasks: Vec<JoinHandle<_>> = Vec::with_capacity(streams);
    // In batches, so that the figure is the memory of open streams rather than the peak of a burst.
    let all_ready = tokio::time::timeout(Duration::from_secs(60), async {
        for first in (0..streams).step_by(s.open_batch) {
            let batch = first..streams.min(first + s.open_batch);
            for i in batch.clone() {
                let (job_id, open_seq) = jobs[i % jobs.len()].clone();
                tasks.push(tokio::spawn(one_stream(
                    conns[i % connections].clone(),
                    job_id,
                    open_seq,
                    ready_tx.clone(),
                )));
            }
            for _ in batch {
                let _ = ready_rx.recv().await;
            }
        }
    })
    .await;
    drop(ready_tx);
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let open_seconds = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after_kib = rss_kib();

    let mut out = Fanout {
        mode,
        streams,
        connections,
        jobs: jobs_n,
        open_seconds,
        rss_before_kib,
        rss_after_kib,
        events: 0,
        drain_seconds: 0.0,
        hist: histogram(),
        errors: 0,
        first_error: None,
    };
    if all_ready.is_err() {
        out.errors += 1;
        out.first_error = Some("the streams were not all open within 60 s".into());
    }

    // Trigger: approve every job; their rendering events fan out to the open streams.
    let triggered = Instant::now();
    let approvals: Vec<anyhow::Result<()>> = futures::stream::iter(jobs.iter())
        .map(|(job_id, _)| approve(&control, job_id.clone()))
        .buffer_unordered(32)
        .collect()
        .await;
    for a in approvals {
        if let Err(e) = a {
            out.errors += 1;
            out.first_error.get_or_insert(format!("approve: {e}"));
        }
    }
    match tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks)).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok((h, received, error)) => {
                        let _ = out.hist.add(&h);
                        out.events += received;
                        if let Some(e) = error {
                            out.errors += 1;
                            out.first_error.get_or_insert(e);
                        }
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                    }
                }
            }
        }
        Err(_) => {
            aborts.iter().for_each(|a| a.abort());
            out.errors += 1;
            out.first_error = Some("the streams did not all end within 120 s".into());
        }
    }
    out.drain_seconds = triggered.elapsed().as_secs_f64();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 3. End-to-end jobs per second

struct E2e {
    database: &'static str,
    concurrency: usize,
    seconds: f64,
    delivered: u64,
    failed: u64,
    errors: u64,
    events: u64,
    hist: Histogram<u64>,
    first_error: Option<String>,
    skipped: Option<String>,
}

impl E2e {
    fn new(database: &'static str, concurrency: usize, seconds: f64) -> E2e {
        E2e {
            database,
            concurrency,
            seconds,
            delivered: 0,
            failed: 0,
            errors: 0,
            events: 0,
            hist: histogram(),
            first_error: None,
            skipped: None,
        }
    }

    fn skipped(database: &'static str, concurrency: usize, why: String) -> E2e {
        E2e {
            skipped: Some(why),
            ..E2e::new(database, concurrency, 0.0)
        }
    }

    fn jobs_per_second(&self) -> f64 {
        ratio(self.delivered as f64, self.seconds)
    }

    fn json(&self) -> Value {
        let mut v = latency_json(&self.hist);
        v["database"] = json!(self.database);
        v["concurrency"] = json!(self.concurrency);
        v["seconds"] = json!(self.seconds);
        v["delivered"] = json!(self.delivered);
        v["failed"] = json!(self.failed);
        v["errors"] = json!(self.errors);
        v["jobs_per_second"] = json!(self.jobs_per_second());
        v["events_per_job"] = json!(ratio(self.events as f64, self.delivered as f64));
        v["first_error"] = json!(self.first_error);
        v["skipped"] = json!(self.skipped);
        v
    }
}

/// Creates a quick_social job and watches it to its terminal event: (final state, events seen).
async fn one_job(client: &Client, request_id: String) -> Result<(i32, u64), aiprod_sdk::Error> {
    let job = client
        .render()
        .create_job(pb::CreateJobRequest {
            request_id,
            preset_id: "quick_social".into(),
            brief: BRIEF.into(),
            brand_id: "acme-shoes".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    let mut stream = Box::pin(client.watch_job(job.job_id, 0));
    let (mut state, mut events) = (0, 0);
    while let Some(e) = stream.next().await {
        let e = e?;
        events += 1;
        state = e.state;
        if aiprod_sdk::is_terminal(state) {
            break;
        }
    }
    Ok((state, events))
}

/// `job_concurrency` workers, each creating a job, watching it to DELIVERED, and starting the next.
/// Jobs delivered within the measured window count; latency is CreateJob sent → DELIVERED received.
async fn e2e(
    s: &Settings,
    database: &'static str,
    endpoint: &str,
    secret: &str,
) -> anyhow::Result<E2e> {
    let conns = clients(endpoint, secret, s.connections).await?;
    let measure_from = Instant::now() + s.warmup();
    let end = measure_from + s.window();
    let tag = unix_micros();
    let tasks: Vec<_> = (0..s.job_concurrency)
        .map(|w| {
            let client = conns[w % conns.len()].clone();
            tokio::spawn(async move {
                let mut out = E2e::new(database, 1, 0.0);
                let mut n = 0_u64;
                while Instant::now() < end {
                    n += 1;
                    let t0 = Instant::now();
                    let outcome = tokio::time::timeout(
                        Duration::from_secs(60),
                        one_job(&client, format!("e2e-{tag}-{w}-{n}")),
                    )
                    .await;
                    let t1 = Instant::now();
                    let counted = t1 >= measure_from && t1 <= end;
                    match outcome {
                        Ok(Ok((state, events))) if counted => {
                            if state == pb::JobState::Delivered as i32 {
                                out.delivered += 1;
                                out.events += events;
                                out.hist.saturating_record((t1 - t0).as_micros() as u64);
                            } else {
                                out.failed += 1;
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(e.to_string());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(_) => {
                            out.errors += 1;
                            out.first_error
                                .get_or_insert("a job took longer than 60 s".into());
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut total = E2e::new(database, s.job_concurrency, s.seconds);
    for t in tasks {
        let w = t.await?;
        let _ = total.hist.add(&w.hist);
        total.delivered += w.delivered;
        total.failed += w.failed;
        total.errors += w.errors;
        total.events += w.events;
        if total.first_error.is_none() {
            total.first_error = w.first_error;
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// A throwaway PostgreSQL cluster (the minimal part of tests/postgres.rs)

struct PgCluster {
    url: String,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    as_postgres: bool,
}

fn pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("AIPROD_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            // initdb refuses to run as root: run the cluster as the `postgres` user.
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start(bin: PathBuf) -> anyhow::Result<PgCluster> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()?;
            anyhow::ensure!(status.success(), "chown of the cluster directory failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cluster = PgCluster {
            url: format!("postgres://aiprod@127.0.0.1:{port}/postgres"),
            bin,
            data: data.clone(),
            _dir: dir,
            as_postgres,
        };
        let out = cluster
            .command("initdb")
            .args(["-A", "trust", "-U", "aiprod", "--no-sync", "-D"])
            .arg(&data)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        );
        let log = data.join("server.log");
        let out = cluster
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "start"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Ok(cluster)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

async fn e2e_postgres(s: &Settings) -> anyhow::Result<E2e> {
    let skip = |why: String| Ok(E2e::skipped("postgres", s.job_concurrency, why));
    if s.postgres == "0" {
        return skip("AIPROD_BENCH_POSTGRES=0".into());
    }
    let required = s.postgres == "1";
    let Some(bin) = pg_bin() else {
        anyhow::ensure!(!required, "PostgreSQL binaries (initdb, pg_ctl) not found");
        return skip("PostgreSQL binaries (initdb, pg_ctl) not found; set AIPROD_PG_BIN".into());
    };
    let cluster = match tokio::task::spawn_blocking(move || PgCluster::start(bin)).await? {
        Ok(c) => c,
        Err(e) if !required => return skip(format!("could not start PostgreSQL: {e}")),
        Err(e) => return Err(e),
    };
    let server = Running::aiprod(Some(&cluster.url), 0, E2E_SHORT_SIDE).await?;
    let secret = tenant_key(&server.endpoint, "bench-e2e-postgres").await?;
    let result = e2e(s, "postgres", &server.endpoint, &secret).await;
    server.stop().await?;
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    result
}

// ---------------------------------------------------------------------------------------------
// Report

fn print_table(machine: &Value, s: &Settings, unary: &[UnaryPair], fan: &[Fanout], jobs: &[E2e]) {
    println!();
    println!(
        "AIPROD benchmark: {} CPUs ({}), commit {}; {} s windows after {} s warm-up; client and server in one process",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["commit"].as_str().unwrap_or("?"),
        s.seconds,
        s.warmup,
    );
    println!();
    println!(
        "1. Unary, closed-loop callers over {} connections (AIPROD: SQLite, EstimateCost brand_campaign 60 s)",
        s.connections
    );
    println!(
        "   {:>7}  {:<30} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "callers", "target", "rps", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
    );
    for pair in unary {
        for (name, u) in [
            ("baseline: tonic Health/Check", &pair.base),
            ("aiprod: EstimateCost", &pair.ours),
        ] {
            println!(
                "   {:>7}  {:<30} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}",
                pair.callers,
                name,
                u.rps(),
                ms(&u.hist, 0.5),
                ms(&u.hist, 0.9),
                ms(&u.hist, 0.99),
                max_ms(&u.hist),
                u.errors
            );
        }
        let [rps, p50, p90, p99] = pair.ratios();
        println!(
            "   {:>7}  {:<30} {:>9.3}x {:>7.2}x {:>7.2}x {:>7.2}x",
            pair.callers, "ratio aiprod / baseline", rps, p50, p90, p99,
        );
    }
    println!();
    println!(
        "2. WatchJob fan-out (SQLite; 20 s brand_campaign jobs (2 shots, 28x16 clips) held at review, then approved; sandbox {} ms/shot)",
        s.fanout_latency_ms
    );
    println!(
        "   {:<10} {:>7} {:>5} {:>5} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "mode",
        "streams",
        "conns",
        "jobs",
        "open s",
        "KiB/stream",
        "events",
        "drain s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors"
    );
    for f in fan {
        println!(
            "   {:<10} {:>7} {:>5} {:>5} {:>7.2} {:>10} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6}",
            f.mode,
            f.streams,
            f.connections,
            f.jobs,
            f.open_seconds,
            f.kib_per_stream()
                .map_or("?".to_string(), |k| format!("{k:.1}")),
            f.events,
            f.drain_seconds,
            ms(&f.hist, 0.5),
            ms(&f.hist, 0.99),
            max_ms(&f.hist),
            f.errors
        );
    }
    println!();
    println!(
        "3. End-to-end quick_social jobs (sandbox latency 0; {} concurrent, each CreateJob then WatchJob to DELIVERED)",
        s.job_concurrency
    );
    println!(
        "   {:<10} {:>8} {:>9} {:>6} {:>6} {:>8} {:>8} {:>8} {:>10}",
        "database",
        "jobs/s",
        "delivered",
        "failed",
        "errors",
        "p50 ms",
        "p99 ms",
        "max ms",
        "events/job"
    );
    for j in jobs {
        if let Some(why) = &j.skipped {
            println!("   {:<10} skipped: {why}", j.database);
            continue;
        }
        println!(
            "   {:<10} {:>8.1} {:>9} {:>6} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>10.1}",
            j.database,
            j.jobs_per_second(),
            j.delivered,
            j.failed,
            j.errors,
            ms(&j.hist, 0.5),
            ms(&j.hist, 0.99),
            max_ms(&j.hist),
            ratio(j.events as f64, j.delivered as f64)
        );
    }
    for msg in fan
        .iter()
        .filter_map(|f| {
            f.first_error
                .as_ref()
                .map(|e| format!("fan-out {} {}: {e}", f.mode, f.streams))
        })
        .chain(jobs.iter().filter_map(|j| {
            j.first_error
                .as_ref()
                .map(|e| format!("jobs {}: {e}", j.database))
        }))
    {
        println!("   first error: {msg}");
    }
    println!();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s = Settings::from_env();
    let started = Instant::now();
    let machine = machine_json();
    eprintln!("aiprod bench: settings {}", s.json());

    // 1. Unary: the baseline, then AIPROD on SQLite with zero sandbox latency, per caller count.
    let server = Running::aiprod(None, 0, E2E_SHORT_SIDE).await?;
    let secret = tenant_key(&server.endpoint, "bench-unary").await?;
    let unary = unary(&s, &server.endpoint, &secret).await?;

    // 2. Fan-out, on its own SQLite server with a small sandbox latency so events are spread out.
    // The fan-out section measures event delivery: the least media work (28x16 clips).
    let fan_server = Running::aiprod(None, s.fanout_latency_ms, 16).await?;
    let fan_secret = tenant_key(&fan_server.endpoint, "bench-fanout").await?;
    let mut fan = Vec::new();
    for &n in &s.streams {
        for one in [true, false] {
            eprintln!(
                "aiprod bench: fan-out {} streams on {} ...",
                n,
                if one { "one job" } else { "as many jobs" }
            );
            fan.push(fanout(&s, &fan_server.endpoint, &fan_secret, n, one).await?);
        }
    }
    fan_server.stop().await?;

    // 3. End-to-end jobs: SQLite (the unary server), then PostgreSQL.
    eprintln!("aiprod bench: end-to-end jobs on SQLite ...");
    let job_secret = tenant_key(&server.endpoint, "bench-e2e-sqlite").await?;
    let sqlite = e2e(&s, "sqlite", &server.endpoint, &job_secret).await?;
    server.stop().await?;
    eprintln!("aiprod bench: end-to-end jobs on PostgreSQL ...");
    let postgres = e2e_postgres(&s).await?;
    let jobs = [sqlite, postgres];
    eprintln!("aiprod bench: media ...");
    let media = media::run().await?;

    let report = json!({
        "benchmark": "aiprod",
        "machine": machine,
        "settings": s.json(),
        "unary": unary.iter().map(UnaryPair::json).collect::<Vec<_>>(),
        "watch_fanout": fan.iter().map(Fanout::json).collect::<Vec<_>>(),
        "e2e_jobs": jobs.iter().map(E2e::json).collect::<Vec<_>>(),
        "media": media,
        "total_seconds": round2(started.elapsed().as_secs_f64()),
    });
    print_table(&machine, &s, &unary, &fan, &jobs);
    media::print(&report["media"]);
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(parent) = s.json_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&s.json_path, format!("{text}\n"))?;
    eprintln!(
        "aiprod bench: done in {:.1} s; JSON written to {}",
        started.elapsed().as_secs_f64(),
        s.json_path.display()
    );
    Ok(())
}
