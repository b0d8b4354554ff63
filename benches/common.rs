//! What every section shares: settings, statistics, readers of `/proc`, and the servers under test,
//! each in its own process (the built `aiprod` binary; the bare tonic baseline is this benchmark
//! binary re-executed with `AIPROD_BENCH_ROLE=bare`), pinned to core 0 when `taskset` is present
//! while this process (the load generator) runs on core 1.

use aiprod::config::Config;
use aiprod_sdk::{AdminClient, Client, pb};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
pub const BRIEF: &str =
    "Launch film for our new trail running shoe: dawn in the mountains, fast feet, bold colours.";
/// Sandbox clips of the unary, history and end-to-end servers: 160x90, the smallest tests use.
pub const SHORT_SIDE: u32 = 90;

// ---------------------------------------------------------------------------------------------
// Settings

pub struct Settings {
    pub quick: bool,
    pub reps: usize,
    pub seconds: f64,
    pub warmup: f64,
    pub callers: Vec<usize>,
    pub connections: usize,
    pub streams: Vec<usize>,
    pub streams_per_connection: usize,
    pub open_batch: usize,
    pub fanout_latency_ms: u64,
    pub idle_seconds: f64,
    pub history: Vec<usize>,
    pub job_concurrency: usize,
    pub e2e_seconds: f64,
    pub postgres: String,
    /// `AIPROD_BENCH_PG_REPLICAS`: the replica counts of the PostgreSQL end-to-end rows.
    pub pg_replicas: Vec<usize>,
    pub media: bool,
    pub json_path: PathBuf,
    pub markdown_path: PathBuf,
    pub bin: PathBuf,
    pub pin: Pinning,
    /// `AIPROD_BENCH_SECTIONS`: the sections to run (`None`: all).
    pub sections: Option<Vec<String>>,
}

/// A comma-separated list of positive counts, e.g. "100,500" (0 allowed where `zero`).
fn env_counts(name: &str, default: &str, zero: bool) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| zero || *n > 0)
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
    /// Command line (`--quick`, `--json PATH`, `--markdown PATH`; cargo's `--bench` is ignored),
    /// then the `AIPROD_BENCH_*` environment.
    pub fn from_args() -> Settings {
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        let mut quick = std::env::var("AIPROD_BENCH_QUICK").is_ok_and(|v| v == "1");
        let mut json_path = std::env::var("AIPROD_BENCH_JSON").ok().map(PathBuf::from);
        let mut markdown_path = None;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => quick = true,
                "--json" => json_path = args.next().map(PathBuf::from),
                "--markdown" => markdown_path = args.next().map(PathBuf::from),
                _ => {
                    if let Some(p) = a.strip_prefix("--json=") {
                        json_path = Some(p.into());
                    } else if let Some(p) = a.strip_prefix("--markdown=") {
                        markdown_path = Some(p.into());
                    }
                }
            }
        }
        let q = |full: &'static str, short: &'static str| if quick { short } else { full };
        Settings {
            quick,
            reps: env_or("AIPROD_BENCH_REPS", if quick { 2 } else { 5 }).max(1),
            seconds: env_or("AIPROD_BENCH_SECONDS", if quick { 1.0 } else { 2.0_f64 }).max(0.2),
            warmup: env_or(
                "AIPROD_BENCH_WARMUP_SECONDS",
                if quick { 0.3 } else { 0.5_f64 },
            )
            .max(0.0),
            callers: env_counts("AIPROD_BENCH_CALLERS", "1,64", false),
            connections: env_or("AIPROD_BENCH_CONNECTIONS", 4_usize).max(1),
            streams: env_counts("AIPROD_BENCH_STREAMS", q("10000", "1000"), false),
            streams_per_connection: env_or("AIPROD_BENCH_STREAMS_PER_CONNECTION", 100_usize)
                .clamp(1, 190),
            open_batch: env_or("AIPROD_BENCH_OPEN_BATCH", 200_usize).max(1),
            fanout_latency_ms: env_or("AIPROD_BENCH_FANOUT_LATENCY_MS", 20_u64),
            idle_seconds: env_or(
                "AIPROD_BENCH_IDLE_SECONDS",
                if quick { 2.0 } else { 4.0_f64 },
            )
            .max(0.5),
            history: env_counts("AIPROD_BENCH_HISTORY", q("0,10000,100000", "0,10000"), true),
            job_concurrency: env_or("AIPROD_BENCH_JOB_CONCURRENCY", 32_usize).max(1),
            e2e_seconds: env_or(
                "AIPROD_BENCH_E2E_SECONDS",
                if quick { 2.0 } else { 5.0_f64 },
            )
            .max(0.5),
            postgres: std::env::var("AIPROD_BENCH_POSTGRES")
                .unwrap_or_else(|_| q("auto", "0").into()),
            pg_replicas: env_counts("AIPROD_BENCH_PG_REPLICAS", "1,3", false),
            media: env_or("AIPROD_BENCH_MEDIA", if quick { 0_u8 } else { 1 }) == 1,
            json_path: json_path.unwrap_or_else(|| target.join("bench-results.json")),
            markdown_path: markdown_path.unwrap_or_else(|| target.join("bench-results.md")),
            bin: std::env::var("AIPROD_BENCH_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_aiprod"))),
            pin: Pinning::default(),
            sections: std::env::var("AIPROD_BENCH_SECTIONS")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.split(',').map(|s| s.trim().to_lowercase()).collect()),
        }
    }

    /// Whether a section (`unary`, `fanout`, `history`, `e2e`, `media`) is to run.
    pub fn section(&self, name: &str) -> bool {
        self.sections
            .as_ref()
            .is_none_or(|v| v.iter().any(|s| s == name))
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    pub fn e2e_warmup(&self) -> f64 {
        self.warmup.max(3.0)
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    pub fn json(&self) -> Value {
        json!({
            "quick": self.quick,
            "repetitions": self.reps,
            "seconds": self.seconds,
            "warmup_seconds": self.warmup,
            "callers": self.callers,
            "connections": self.connections,
            "streams": self.streams,
            "streams_per_connection": self.streams_per_connection,
            "open_batch": self.open_batch,
            "fanout_sandbox_latency_ms": self.fanout_latency_ms,
            "idle_seconds": self.idle_seconds,
            "history": self.history,
            "job_concurrency": self.job_concurrency,
            "e2e_seconds": self.e2e_seconds,
            "e2e_warmup_seconds": self.e2e_warmup(),
            "postgres": self.postgres,
            "postgres_replicas": self.pg_replicas,
            "media": self.media,
            "server_binary": self.bin.display().to_string(),
            "pinning": self.pin.json(),
            "sections": self.sections,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Pinning

#[derive(Default)]
pub struct Pinning {
    pub applied: bool,
    pub note: String,
}

impl Pinning {
    /// Pins this process (every thread: the load generator) to core 1; servers go to core 0.
    pub fn apply() -> Pinning {
        let not = |note: &str| Pinning {
            applied: false,
            note: note.into(),
        };
        if std::env::var("AIPROD_BENCH_PIN").is_ok_and(|v| v == "0") {
            return not("not applied: AIPROD_BENCH_PIN=0");
        }
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return not("not applied: fewer than 2 CPUs available");
        }
        let pid = std::process::id().to_string();
        match Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => Pinning {
                applied: true,
                note: "applied (taskset): server on core 0, load generator on core 1".into(),
            },
            Ok(_) => not("not applied: taskset failed"),
            Err(_) => not("not applied: taskset not found"),
        }
    }

    /// Lets this process use every CPU again (the media section measures parallel encoding).
    pub fn release(&self, cpus: usize) {
        if self.applied {
            let all = format!("0-{}", cpus.saturating_sub(1));
            let _ = Command::new("taskset")
                .args(["-a", "-p", "-c", &all, &std::process::id().to_string()])
                .stdout(Stdio::null())
                .status();
        }
    }

    pub fn json(&self) -> Value {
        json!({ "applied": self.applied, "note": self.note })
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Latencies in microseconds, up to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        round2(h.value_at_quantile(quantile) as f64 / 1000.0)
    }
}

pub fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        round2(h.max() as f64 / 1000.0)
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { round3(a / b) } else { 0.0 }
}

pub fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "samples": h.len(),
        "p50_ms": ms(h, 0.50),
        "p90_ms": ms(h, 0.90),
        "p99_ms": ms(h, 0.99),
        "max_ms": max_ms(h),
    })
}

/// Median and range of repeated measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Spread {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Spread::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

impl Spread {
    pub fn json(&self, digits3: bool) -> Value {
        let r = if digits3 { round3 } else { round2 };
        json!({ "median": r(self.median), "min": r(self.min), "max": r(self.max) })
    }

    /// "median (min–max)".
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

fn text_of(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The machine's 1-minute load average.
pub fn loadavg() -> f64 {
    text_of("/proc/loadavg")
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    text_of(&format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds a process has used (user + system), from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = text_of(&format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ") ".
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 11 and 12 after the state.
    let user: f64 = f.get(11)?.parse().ok()?;
    let system: f64 = f.get(12)?.parse().ok()?;
    Some((user + system) / clock_ticks())
}

pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Commit-to-receive latency of an event, in microseconds (`create_time` has millisecond precision).
pub fn delivery_micros(e: &pb::JobEvent) -> u64 {
    let Some(t) = &e.create_time else { return 0 };
    let created = t.seconds * 1_000_000 + i64::from(t.nanos) / 1000;
    (unix_micros() - created).max(0) as u64
}

pub fn machine_json() -> Value {
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
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": cpu,
        "memory_gib": mem_kib.map(|k| round2(k as f64 / 1024.0 / 1024.0)),
        "os": std::env::consts::OS,
        "commit": git(&["rev-parse", "--short", "HEAD"]),
        "dirty": dirty,
        "loadavg_at_start": loadavg(),
        "unix_time": unix_micros() / 1_000_000,
    })
}

// ---------------------------------------------------------------------------------------------
// Servers, each in its own process

pub struct ServerProc {
    pub endpoint: String,
    pub pid: u32,
    child: Child,
}

/// The configuration of an AIPROD server under test.
pub fn aiprod_config(
    dir: &Path,
    database_url: Option<&str>,
    latency_ms: u64,
    short_side: u32,
) -> Config {
    let mut c = Config {
        database_url: database_url
            .map(str::to_string)
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("aiprod.db").display())),
        admin_token: Some(ADMIN_TOKEN.into()),
        demo_tenant: false,
        shutdown_grace_s: 5,
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        ready_file: Some(dir.join("ready")),
        ..Config::default()
    };
    c.sandbox.latency_ms = latency_ms;
    // A small sandbox resolution: the control plane plus little media work per job.
    c.media.sandbox_short_side = short_side;
    c.media.ffmpeg = "off".into();
    c.artifacts.dir = Some(dir.join("artifacts"));
    // Measure the service, not the per-tenant limits: lift every tier's request rate and
    // concurrent-job limits (the checks still run on every call).
    for tier in c.catalog.tiers.values_mut() {
        tier.requests_per_minute = 1_000_000_000;
        tier.concurrent_jobs = 1_000_000;
    }
    c
}

fn pinned(s: &Settings, program: &Path) -> Command {
    if s.pin.applied {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Waits for `ready` (the bound address) to be written by a starting server.
async fn wait_ready(child: &mut Child, ready: &Path, log: &Path) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(addr) = std::fs::read_to_string(ready)
            && !addr.trim().is_empty()
        {
            return Ok(format!("http://{}", addr.trim()));
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the server exited ({status}); log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server was not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl ServerProc {
    /// `aiprod serve` with the configuration above, on SQLite in `dir` unless `database_url`.
    pub async fn aiprod(
        s: &Settings,
        dir: &Path,
        database_url: Option<&str>,
        latency_ms: u64,
        short_side: u32,
    ) -> anyhow::Result<ServerProc> {
        let config = aiprod_config(dir, database_url, latency_ms, short_side);
        let file = dir.join("aiprod.toml");
        std::fs::write(&file, toml::to_string(&config)?)?;
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = dir.join("server.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = pinned(s, &s.bin)
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .env_remove("AIPROD_LISTEN")
            .env_remove("AIPROD_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", s.bin.display()))?;
        let endpoint = wait_ready(&mut child, &ready, &log).await?;
        Ok(ServerProc {
            endpoint,
            pid: child.id(),
            child,
        })
    }

    /// The baseline: a bare tonic server (this binary, `AIPROD_BENCH_ROLE=bare`).
    pub async fn bare(s: &Settings, dir: &Path) -> anyhow::Result<ServerProc> {
        let ready = dir.join("bare-ready");
        let _ = std::fs::remove_file(&ready);
        let log = dir.join("bare.log");
        let mut child = pinned(s, &std::env::current_exe()?)
            .env("AIPROD_BENCH_ROLE", "bare")
            .env("AIPROD_BENCH_READY", &ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let endpoint = wait_ready(&mut child, &ready, &log).await?;
        Ok(ServerProc {
            endpoint,
            pid: child.id(),
            child,
        })
    }

    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid)
    }

    /// SIGTERM (a graceful stop), then SIGKILL after 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child.kill()?;
        self.child.wait()?;
        anyhow::bail!("the server (pid {}) did not stop within 30 s", self.pid)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // A server left behind by an error path.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The bare tonic server's process: `grpc.health.v1.Health` only, with the transport settings of
/// `aiprod::serve` (timeout, HTTP/2 keepalive, TCP_NODELAY on accepted sockets) and none of its
/// layers. Serves until killed.
pub async fn bare_server_main() -> anyhow::Result<()> {
    use tonic::transport::server::TcpIncoming;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .serve_with_incoming(incoming);
    if let Ok(path) = std::env::var("AIPROD_BENCH_READY") {
        std::fs::write(path, addr.to_string())?;
    }
    server.await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A new Platinum tenant with a test-mode (sandbox) key, made through AdminService: (id, secret).
pub async fn tenant_key(endpoint: &str, name: &str) -> anyhow::Result<(String, String)> {
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
            tenant_id: tenant.tenant_id.clone(),
            mode: pb::ApiKeyMode::Test as i32,
            name: "bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((tenant.tenant_id, key.secret))
}

/// `n` clients, each on its own connection.
pub async fn clients(endpoint: &str, secret: &str, n: usize) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Client::connect(endpoint.to_string(), secret).await?);
    }
    Ok(out)
}

/// Creates a job of `preset` and watches it until `until` or a terminal state: (job id, state,
/// sequence of the last event seen, events seen).
pub async fn job_until(
    client: &Client,
    request_id: String,
    preset: &str,
    duration_s: Option<u32>,
    until: Option<pb::JobState>,
) -> Result<(String, i32, u64, u64), aiprod_sdk::Error> {
    use futures::StreamExt;
    let job = client
        .render()
        .create_job(pb::CreateJobRequest {
            request_id,
            preset_id: preset.into(),
            brief: BRIEF.into(),
            brand_id: "acme-shoes".into(),
            duration_s,
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    let mut stream = Box::pin(client.watch_job(job.job_id.clone(), 0));
    let (mut state, mut seq, mut events) = (0, 0, 0);
    while let Some(e) = stream.next().await {
        let e = e?;
        events += 1;
        state = e.state;
        seq = e.sequence;
        if aiprod_sdk::is_terminal(state) || until.is_some_and(|u| u as i32 == state) {
            break;
        }
    }
    Ok((job.job_id, state, seq, events))
}
