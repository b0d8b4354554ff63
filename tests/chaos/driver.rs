//! The chaos driver, shared by `tests/chaos.rs` (short runs) and `benches/chaos.rs` (long runs):
//! N replicas of the real `aiprod` binary (separate processes) on one throwaway PostgreSQL with a
//! shared artifacts directory, a load of jobs created through random replicas, faults (SIGKILL and
//! restart, SIGSTOP/SIGCONT, the database stopped), and an audit of every job, event log and
//! ledger at the end.

#![allow(dead_code)]

use crate::harness::{
    ADMIN_TOKEN, BRIEF, assert_certified, assert_gap_free, assert_no_double_billing,
};
use crate::postgres::PgCluster;
use aiprod_sdk::{Client, is_terminal, pb};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;

/// How the fleet runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub replicas: usize,
    /// `cluster.lease_ttl_ms` of every replica.
    pub lease_ttl_ms: u64,
    /// `cluster.poll_interval_ms`: the claim loop's backstop, so rescue takes at most TTL + this.
    pub poll_interval_ms: u64,
    pub failure_rate: f64,
    pub latency_ms: u64,
    /// Short side of sandbox clips (16 is the smallest the server accepts).
    pub short_side: u32,
    /// Platinum tenants the load is spread over (each has its own rate limit and job cap).
    pub tenants: usize,
    /// One SQLite file instead of PostgreSQL (then run one replica).
    pub sqlite: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replicas: 3,
            lease_ttl_ms: 2_000,
            poll_interval_ms: 500,
            failure_rate: 0.1,
            latency_ms: 100,
            short_side: 16,
            tenants: 2,
            sqlite: false,
        }
    }
}

struct Replica {
    child: Option<Child>,
    endpoint: Option<String>,
    log: PathBuf,
}

/// Replicas of the real binary on one database; every child is SIGKILLed on drop.
pub struct Fleet {
    /// None on SQLite.
    pub pg: Option<PgCluster>,
    pub url: String,
    pub opts: Options,
    dir: tempfile::TempDir,
    config: PathBuf,
    artifacts: PathBuf,
    /// One API key per tenant.
    pub secrets: Vec<String>,
    replicas: Mutex<Vec<Replica>>,
    starts: AtomicU32,
    pub kills: AtomicU32,
    /// Error codes the load saw, by name (INTERNAL is never retried: it fails the run at once).
    pub errors: Mutex<BTreeMap<String, u32>>,
}

fn admin(db: &str, args: &[&str]) -> String {
    let out = Command::new(crate::harness::binary())
        .args(["admin", "--database-url", db])
        .args(args)
        .env("AIPROD_LOG", "warn")
        .output()
        .expect("run aiprod admin");
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Codes a client retries: the replica died or is stopping, the database is down, or a limit.
pub fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
    )
}

impl Fleet {
    /// A throwaway PostgreSQL, tenants and keys, and `opts.replicas` running replicas.
    pub async fn start(opts: Options) -> Arc<Fleet> {
        Self::start_some(opts.clone(), opts.replicas).await
    }

    /// Like `start`, but only the first `running` replicas are started (the rest with `spawn`).
    pub async fn start_some(opts: Options, running: usize) -> Arc<Fleet> {
        let dir = tempfile::tempdir().unwrap();
        let (pg, url) = if opts.sqlite {
            (
                None,
                format!("sqlite://{}", dir.path().join("aiprod.db").display()),
            )
        } else {
            let pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
            let url = pg.url.clone();
            (Some(pg), url)
        };
        let artifacts = dir.path().join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let config = dir.path().join("aiprod.toml");
        std::fs::write(
            &config,
            format!(
                "admin_token = \"{ADMIN_TOKEN}\"\ndemo_tenant = false\nshutdown_grace_s = 2\n\
                 [cluster]\nlease_ttl_ms = {}\npoll_interval_ms = {}\nhealth_probe_interval_ms = 250\n\
                 [media]\nffmpeg = \"off\"\n[circuit]\ncooldown_s = 1\n",
                opts.lease_ttl_ms, opts.poll_interval_ms
            ),
        )
        .unwrap();
        let db = url.clone();
        let tenants = opts.tenants;
        let secrets = tokio::task::spawn_blocking(move || {
            (0..tenants)
                .map(|t| {
                    let id = admin(
                        &db,
                        &[
                            "create-tenant",
                            "--name",
                            &format!("chaos-{t}"),
                            "--tier",
                            "platinum",
                        ],
                    );
                    admin(&db, &["create-key", "--tenant-id", &id, "--mode", "test"])
                })
                .collect()
        })
        .await
        .unwrap();
        let replicas = (0..opts.replicas)
            .map(|i| Replica {
                child: None,
                endpoint: None,
                log: dir.path().join(format!("replica-{i}.log")),
            })
            .collect();
        let fleet = Arc::new(Fleet {
            pg,
            url,
            opts,
            dir,
            config,
            artifacts,
            secrets,
            replicas: Mutex::new(replicas),
            starts: AtomicU32::new(0),
            kills: AtomicU32::new(0),
            errors: Mutex::new(BTreeMap::new()),
        });
        let starting = (0..running).map(|i| fleet.spawn(i));
        futures::future::join_all(starting).await;
        fleet
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Replica>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts replica `i` (again) and waits until it accepts calls.
    pub async fn spawn(&self, i: usize) {
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        let ready = self.dir.path().join(format!("ready-{n}"));
        let log_path = self.lock()[i].log.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(crate::harness::binary())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", "127.0.0.1:0", "--database-url", &self.url])
            .arg("--ready-file")
            .arg(&ready)
            .arg("--artifacts-dir")
            .arg(&self.artifacts)
            .args([
                "--sandbox-latency-ms",
                &self.opts.latency_ms.to_string(),
                "--sandbox-failure-rate",
                &self.opts.failure_rate.to_string(),
                // Each process its own seed: replicas do not fail the same attempts in lockstep.
                "--sandbox-seed",
                &(1000 + u64::from(n)).to_string(),
                "--sandbox-short-side",
                &self.opts.short_side.to_string(),
            ])
            .env("AIPROD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn aiprod serve");
        self.lock()[i].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Ok(addr) = std::fs::read_to_string(&ready)
                && !addr.trim().is_empty()
            {
                break addr.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} not ready: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            // Polling the file the child writes once it listens.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.lock()[i].endpoint = Some(format!("http://{addr}"));
    }

    /// SIGKILL: no shutdown, no lease given back.
    pub fn kill(&self, i: usize) {
        let child = {
            let mut replicas = self.lock();
            replicas[i].endpoint = None;
            replicas[i].child.take()
        };
        if let Some(mut child) = child {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            self.kills.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pid(&self, i: usize) -> u32 {
        self.lock()[i].child.as_ref().expect("running").id()
    }

    /// SIGSTOP: the process keeps its sockets and leases but does nothing.
    pub fn pause(&self, i: usize) {
        signal(self.pid(i), "-STOP");
    }

    pub fn resume(&self, i: usize) {
        signal(self.pid(i), "-CONT");
    }

    /// The endpoint of replica `i`, if it runs.
    pub fn endpoint(&self, i: usize) -> Option<String> {
        self.lock()[i].endpoint.clone()
    }

    /// Indexes of the running replicas.
    pub fn live(&self) -> Vec<usize> {
        let replicas = self.lock();
        (0..replicas.len())
            .filter(|i| replicas[*i].endpoint.is_some())
            .collect()
    }

    /// The log of replica `i` (every start appended).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.lock()[i].log).unwrap_or_default()
    }

    /// A random running replica's endpoint, other than `avoid` when another runs; waits while none runs.
    pub async fn random_endpoint(&self, avoid: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all: Vec<String> = self
                .lock()
                .iter()
                .filter_map(|r| r.endpoint.clone())
                .collect();
            let others: Vec<&String> = all.iter().filter(|e| Some(e.as_str()) != avoid).collect();
            let pick = if others.is_empty() {
                all.first()
            } else {
                Some(others[rand::random_range(0..others.len())])
            };
            if let Some(e) = pick {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "no replica runs");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client_at(
        &self,
        endpoint: &str,
        tenant: usize,
    ) -> Result<Client, aiprod_sdk::Error> {
        Client::builder(endpoint.to_string())
            // The driver retries itself (and counts what it retried).
            .max_attempts(1)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .connect(&self.secrets[tenant])
            .await
    }

    pub fn record(&self, code: Code) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{code:?}"))
            .or_default() += 1;
    }

    /// Runs a unary call on random replicas until it succeeds; transient codes are retried (after
    /// RetryInfo when given), anything else fails the run.
    pub async fn call<T, F, Fut>(&self, tenant: usize, what: &str, mut f: F) -> T
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, aiprod_sdk::Error>>,
    {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last: Option<String> = None;
        loop {
            assert!(Instant::now() < deadline, "{what}: no success within 120 s");
            let endpoint = self.random_endpoint(last.as_deref()).await;
            let client = match self.client_at(&endpoint, tenant).await {
                Ok(c) => c,
                Err(_) => {
                    // The replica died between the pick and the connect.
                    last = Some(endpoint);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match f(client).await {
                Ok(r) => return r.into_inner(),
                Err(err) => {
                    self.record(err.code());
                    assert!(transient(err.code()), "{what}: {err:?}");
                    let wait = err
                        .retry_after()
                        .unwrap_or(Duration::from_millis(100))
                        .min(Duration::from_secs(2));
                    last = Some(endpoint);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Creates a job through random replicas, retrying with the same request id (idempotent).
    pub async fn create_job(
        &self,
        tenant: usize,
        request_id: &str,
        preset: &str,
        auto: bool,
    ) -> String {
        let req = pb::CreateJobRequest {
            request_id: request_id.into(),
            preset_id: preset.into(),
            brief: BRIEF.into(),
            brand_id: "acme-shoes".into(),
            auto_approve: auto,
            ..Default::default()
        };
        self.create_job_with(tenant, req).await
    }

    pub async fn create_job_with(&self, tenant: usize, req: pb::CreateJobRequest) -> String {
        let what = format!("create {}", req.request_id);
        self.call(tenant, &what, |c| {
            let req = req.clone();
            async move { c.render().create_job(req).await }
        })
        .await
        .job
        .expect("job")
        .job_id
    }

    /// Approves a job's manifest once it awaits approval.
    pub async fn approve(&self, tenant: usize, job_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.get_job(tenant, job_id).await;
            if job.state == pb::JobState::AwaitingApproval as i32 {
                let m = self
                    .call(tenant, "get manifest", |c| {
                        let job_id = job_id.to_string();
                        async move {
                            c.icc()
                                .get_manifest(pb::GetManifestRequest { job_id })
                                .await
                        }
                    })
                    .await
                    .manifest
                    .expect("manifest");
                self.call(tenant, "approve", |c| {
                    let req = pb::ApproveManifestRequest {
                        job_id: job_id.to_string(),
                        etag: m.etag.clone(),
                    };
                    async move { c.icc().approve_manifest(req).await }
                })
                .await;
                return;
            }
            assert!(
                !is_terminal(job.state) && Instant::now() < deadline,
                "job {job_id} never awaited approval: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get_job(&self, tenant: usize, job_id: &str) -> pb::Job {
        self.call(tenant, "get job", |c| {
            let job_id = job_id.to_string();
            async move { c.render().get_job(pb::GetJobRequest { job_id }).await }
        })
        .await
        .job
        .expect("job")
    }

    /// Watches a job from sequence 0 to its terminal event, moving to another replica whenever the
    /// stream breaks and resuming after the last event seen. `first`: the replica to start on;
    /// `connected` is told once the first event arrived.
    pub async fn watch(
        &self,
        tenant: usize,
        job_id: &str,
        first: Option<usize>,
        mut connected: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Watched {
        let mut w = Watched::default();
        let mut first = first.and_then(|i| self.endpoint(i));
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut last: Option<String> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "job {job_id} not terminal within 180 s: {} events",
                w.events.len()
            );
            let endpoint = match first.take() {
                Some(e) => e,
                None => self.random_endpoint(last.as_deref()).await,
            };
            last = Some(endpoint.clone());
            let Ok(client) = self.client_at(&endpoint, tenant).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            w.endpoints.insert(endpoint.clone());
            let after = w.events.last().map_or(0, |e| e.sequence);
            let opened = client
                .render()
                .watch_job(pb::WatchJobRequest {
                    job_id: job_id.to_string(),
                    after_sequence: after,
                })
                .await;
            let mut stream = match opened {
                Ok(s) => s.into_inner(),
                Err(status) => {
                    self.record(status.code());
                    assert!(transient(status.code()), "watch {job_id}: {status:?}");
                    w.breaks += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::time::timeout(Duration::from_secs(20), stream.message()).await;
                let Ok(next) = next else {
                    // Quiet for 20 s: fine if the job is quiet too, a lost wake-up if it moved on.
                    let job = self.get_job(tenant, job_id).await;
                    let seen = w.events.last().map_or(0, |e| e.sequence);
                    assert!(
                        job.last_sequence <= seen,
                        "the WatchJob stream of {job_id} on {endpoint} stalled: delivered up to \
                         sequence {seen}, the job is at {} ({:?})",
                        job.last_sequence,
                        pb::JobState::try_from(job.state)
                    );
                    // Quiet while it should run: with sandbox latencies of a second or two, a
                    // job without an event for 20 s has no driver.
                    let waiting = [
                        pb::JobState::AwaitingApproval as i32,
                        pb::JobState::AwaitingFinalApproval as i32,
                    ];
                    assert!(
                        waiting.contains(&job.state) && Instant::now() < deadline,
                        "job {job_id} stuck: no event for 20 s; lease {}; {job:?}",
                        self.lease_row(job_id).await
                    );
                    continue;
                };
                match next {
                    Ok(Some(m)) => {
                        let e = m.event.expect("event");
                        let terminal = is_terminal(e.state);
                        w.events.push(e);
                        if let Some(tx) = connected.take() {
                            let _ = tx.send(());
                        }
                        if terminal {
                            return w;
                        }
                    }
                    Ok(None) => {
                        w.breaks += 1;
                        break;
                    }
                    Err(status) => {
                        self.record(status.code());
                        assert!(transient(status.code()), "watch {job_id}: {status:?}");
                        w.breaks += 1;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The job's lease as the database has it (for diagnostics).
    pub async fn lease_row(&self, job_id: &str) -> String {
        if self.pg.is_none() {
            return "n/a (SQLite)".into();
        }
        let db = self.db().await;
        let row: Result<(Option<String>, i64, bool, String), _> = sqlx::query_as(
            "SELECT lease_owner, lease_token, lease_expires_at > now(), state FROM jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_one(&db)
        .await;
        format!("(owner, token, unexpired, state) = {row:?}")
    }

    /// PostgreSQL pool for observing leases from outside (read-only queries).
    pub async fn db(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("connect to postgres")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in self.lock().iter_mut() {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// What a failover watcher saw.
#[derive(Default, Debug)]
pub struct Watched {
    pub events: Vec<pb::JobEvent>,
    /// Streams that broke before the terminal event (each resumed elsewhere).
    pub breaks: u32,
    pub endpoints: HashSet<String>,
}

/// A job whose CreateJob returned OK.
#[derive(Clone, Debug)]
pub struct Created {
    pub tenant: usize,
    pub job_id: String,
}

/// Runs `jobs` quick_social jobs (auto-approved), `workers` at a time: each worker creates one
/// through a random replica and watches it to its end (failing over), then takes the next.
/// `done` counts finished jobs (for a fault schedule).
pub async fn run_load(
    fleet: Arc<Fleet>,
    prefix: &str,
    jobs: usize,
    workers: usize,
    done: Arc<AtomicUsize>,
) -> Vec<Created> {
    let next = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(Mutex::new(Vec::new()));
    let tasks = (0..workers).map(|_| {
        let (fleet, next, created, done) =
            (fleet.clone(), next.clone(), created.clone(), done.clone());
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= jobs {
                    return;
                }
                let tenant = i % fleet.secrets.len();
                let job_id = fleet
                    .create_job(tenant, &format!("{prefix}-{i}"), "quick_social", true)
                    .await;
                created.lock().unwrap().push(Created {
                    tenant,
                    job_id: job_id.clone(),
                });
                let w = fleet.watch(tenant, &job_id, None, None).await;
                assert_gap_free(&w.events);
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.expect("load worker");
    }
    Arc::try_unwrap(created).unwrap().into_inner().unwrap()
}

/// Figures of an audit.
#[derive(Debug, Default)]
pub struct Audit {
    pub jobs: usize,
    pub delivered: usize,
    pub failed: usize,
    pub shots: usize,
    pub shot_starts: usize,
    pub max_starts_per_shot: usize,
    pub max_attempt: u32,
}

impl Audit {
    pub fn starts_per_shot(&self) -> f64 {
        self.shot_starts as f64 / self.shots.max(1) as f64
    }
}

/// Every accepted job is in the database and terminal (FAILED with a reason), its whole log is
/// gap-free from sequence 0 on a replica, no (shot, attempt) started or rendered twice, every
/// ledger certified (delivered jobs) without double billing, and each tenant lists exactly the
/// jobs it created (no duplicate from a retried CreateJob).
pub async fn audit(fleet: &Arc<Fleet>, created: &[Created]) -> Audit {
    let ids: HashSet<&str> = created.iter().map(|c| c.job_id.as_str()).collect();
    assert_eq!(ids.len(), created.len(), "one job per accepted request");
    let one = |c: Created| {
        let fleet = fleet.clone();
        async move {
            // Watched to its end first: the job may still be running when the audit begins.
            let w = fleet.watch(c.tenant, &c.job_id, None, None).await;
            let job = fleet.get_job(c.tenant, &c.job_id).await;
            assert!(
                is_terminal(job.state),
                "job {} not terminal: {job:?}",
                c.job_id
            );
            if job.state == pb::JobState::Failed as i32 {
                assert_ne!(
                    job.failure_reason,
                    pb::FailureReason::Unspecified as i32,
                    "a failed job says why: {job:?}"
                );
            }
            assert_gap_free(&w.events);
            assert_eq!(w.events.last().unwrap().state, job.state, "{}", c.job_id);
            assert_eq!(w.events.last().unwrap().sequence, job.last_sequence);
            let mut starts: HashMap<(String, u32), u32> = HashMap::new();
            let mut renders: HashSet<(String, u32)> = HashSet::new();
            for e in &w.events {
                match &e.payload {
                    Some(pb::job_event::Payload::ShotStarted(s)) => {
                        let n = starts.entry((s.shot_id.clone(), s.attempt)).or_default();
                        *n += 1;
                        assert_eq!(
                            *n, 1,
                            "shot {} attempt {} started twice in {}",
                            s.shot_id, s.attempt, c.job_id
                        );
                    }
                    Some(pb::job_event::Payload::ShotRendered(r)) => assert!(
                        renders.insert((r.shot_id.clone(), r.attempt)),
                        "shot {} attempt {} rendered twice in {}",
                        r.shot_id,
                        r.attempt,
                        c.job_id
                    ),
                    _ => {}
                }
            }
            let report = fleet
                .call(c.tenant, "costs", |cl| {
                    let job_id = c.job_id.clone();
                    async move {
                        cl.costs()
                            .get_job_costs(pb::GetJobCostsRequest { job_id })
                            .await
                    }
                })
                .await
                .report
                .expect("report");
            assert_no_double_billing(&report);
            if job.state == pb::JobState::Delivered as i32 {
                assert_certified(&report);
            }
            (job.state, starts)
        }
    };
    let results: Vec<_> = futures::stream::iter(created.iter().cloned().map(one))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut a = Audit {
        jobs: created.len(),
        ..Default::default()
    };
    for (state, starts) in results {
        if state == pb::JobState::Delivered as i32 {
            a.delivered += 1;
        } else if state == pb::JobState::Failed as i32 {
            a.failed += 1;
        }
        let mut per_shot: HashMap<String, usize> = HashMap::new();
        for (shot, attempt) in starts.keys() {
            *per_shot.entry(shot.clone()).or_default() += 1;
            a.max_attempt = a.max_attempt.max(*attempt);
        }
        a.shots += per_shot.len();
        a.shot_starts += starts.len();
        a.max_starts_per_shot = a
            .max_starts_per_shot
            .max(per_shot.values().copied().max().unwrap_or(0));
    }
    assert_eq!(
        a.delivered + a.failed,
        a.jobs,
        "every job DELIVERED or FAILED (none cancelled)"
    );
    // Nothing extra: each tenant lists exactly the jobs whose CreateJob returned OK.
    for t in 0..fleet.secrets.len() {
        let mine: HashSet<String> = created
            .iter()
            .filter(|c| c.tenant == t)
            .map(|c| c.job_id.clone())
            .collect();
        let listed: Vec<String> = loop {
            let endpoint = fleet.random_endpoint(None).await;
            let Ok(client) = fleet.client_at(&endpoint, t).await else {
                continue;
            };
            let all: Result<Vec<pb::Job>, _> = client
                .list_all_jobs(pb::ListJobsRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect();
            match all {
                Ok(jobs) => break jobs.into_iter().map(|j| j.job_id).collect(),
                Err(e) => assert!(transient(e.code()), "list jobs: {e:?}"),
            }
        };
        let listed_set: HashSet<String> = listed.iter().cloned().collect();
        assert_eq!(listed.len(), listed_set.len(), "a job listed twice");
        assert!(
            mine.is_subset(&listed_set),
            "lost jobs: {:?}",
            mine.difference(&listed_set).collect::<Vec<_>>()
        );
    }
    a
}

/// The figures line of a run.
pub fn figures(name: &str, a: &Audit, fleet: &Fleet, elapsed: Duration) -> String {
    let errors = fleet.errors.lock().unwrap().clone();
    format!(
        "{name}: {} jobs ({} delivered, {} failed), {} shots, shot starts per shot mean {:.2} max {} \
         (highest attempt {}), {} kills, {:.1} s, {:.2} jobs/s; retried errors {errors:?}",
        a.jobs,
        a.delivered,
        a.failed,
        a.shots,
        a.starts_per_shot(),
        a.max_starts_per_shot,
        a.max_attempt,
        fleet.kills.load(Ordering::SeqCst),
        elapsed.as_secs_f64(),
        a.jobs as f64 / elapsed.as_secs_f64(),
    )
}

/// The lease token of each job (for detecting a rescue from outside).
pub async fn lease_tokens(db: &sqlx::PgPool, ids: &[String]) -> HashMap<String, (i64, String)> {
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT id, lease_token, state FROM jobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(db)
            .await
            .expect("lease tokens");
    rows.into_iter().map(|(id, t, s)| (id, (t, s))).collect()
}

/// Waits until every job in `before` (token, state) has a newer lease token or is over; returns
/// how long that took since `since`.
pub async fn wait_rescued(
    db: &sqlx::PgPool,
    before: &HashMap<String, (i64, String)>,
    since: Instant,
    limit: Duration,
) -> Duration {
    let ids: Vec<String> = before.keys().cloned().collect();
    loop {
        let now = lease_tokens(db, &ids).await;
        let pending = before
            .iter()
            .filter(|(id, (token, _))| {
                let (t, s) = &now[*id];
                t == token && !matches!(s.as_str(), "DELIVERED" | "FAILED" | "CANCELLED")
            })
            .count();
        if pending == 0 {
            return since.elapsed();
        }
        if since.elapsed() >= limit {
            // Who blocks the rescue: sessions inside a transaction (a paused process keeps its
            // row locks; SKIP LOCKED then skips the job).
            let sessions: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT state, left(query, 120) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(db)
            .await
            .unwrap_or_default();
            panic!(
                "{pending} jobs not rescued within {limit:?} (an `idle in transaction` session of \
                 the stalled holder keeps the job's row locked; FOR UPDATE SKIP LOCKED skips it); \
                 sessions: {sessions:?}"
            );
        }
        // Observing the database from outside: a short poll is the only way.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a job has a ShotStarted event (its render is in flight), watching through replica `i`.
pub async fn wait_shot_started(fleet: &Fleet, tenant: usize, job_id: &str, i: usize) {
    let endpoint = fleet.endpoint(i).expect("replica runs");
    let client = fleet.client_at(&endpoint, tenant).await.unwrap();
    let mut stream = Box::pin(client.watch_job(job_id.to_string(), 0));
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = stream.next().await {
            let e = e.expect("event");
            if matches!(e.payload, Some(pb::job_event::Payload::ShotStarted(_))) {
                return true;
            }
            if is_terminal(e.state) {
                return false;
            }
        }
        false
    })
    .await
    .expect("a shot starts within 60 s");
    assert!(found, "job {job_id} ended before a shot started");
}

/// Waits until `done` reaches `target`, failing if the load ended first.
async fn wait_done(
    done: &AtomicUsize,
    target: usize,
    load: &tokio::task::JoinHandle<Vec<Created>>,
) {
    while done.load(Ordering::SeqCst) < target {
        assert!(!load.is_finished(), "the load ended early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scenario (a): `jobs` quick_social jobs, `workers` at a time, while `kills` times a random
/// replica is SIGKILLed and restarted (spread over the run). Before each kill a watcher connects to
/// the victim on a job awaiting approval; after the kill it must resume on another replica with no
/// gap. Returns the audit of every job and the load's duration.
pub async fn kill_restart_run(
    fleet: &Arc<Fleet>,
    jobs: usize,
    workers: usize,
    kills: usize,
) -> (Audit, Duration) {
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let load = tokio::spawn(run_load(
        fleet.clone(),
        "chaos",
        jobs,
        workers,
        done.clone(),
    ));
    let mut watchers = Vec::new();
    let mut watched = Vec::new();
    for k in 0..kills {
        wait_done(&done, (k + 1) * jobs / (kills + 1), &load).await;
        let live = fleet.live();
        let victim = live[rand::random_range(0..live.len())];
        // A job that surely is not over when the victim dies: it waits for its approval.
        let job_id = fleet
            .create_job(0, &format!("watched-{k}"), "brand_campaign", false)
            .await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (f, id) = (fleet.clone(), job_id.clone());
        watchers.push(tokio::spawn(async move {
            f.watch(0, &id, Some(victim), Some(tx)).await
        }));
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("the watcher connects")
            .expect("watcher alive");
        fleet.kill(victim);
        fleet.spawn(victim).await;
        fleet.approve(0, &job_id).await;
        watched.push(Created { tenant: 0, job_id });
    }
    let mut created = load.await.expect("load");
    let elapsed = t0.elapsed();
    for w in watchers {
        let w = w.await.expect("watcher");
        assert_gap_free(&w.events);
        assert!(
            w.breaks >= 1 && w.endpoints.len() >= 2,
            "the watcher of a killed replica resumed elsewhere: {} breaks, {:?}",
            w.breaks,
            w.endpoints
        );
        assert!(is_terminal(w.events.last().unwrap().state));
    }
    created.extend(watched);
    (audit(fleet, &created).await, elapsed)
}

/// Figures of a dead replica's rescue.
#[derive(Debug)]
pub struct Rescue {
    pub jobs: usize,
    /// From the SIGKILL until every job of the dead replica has a new lease (or is over).
    pub rescued: Duration,
    /// From the SIGKILL until every job is terminal.
    pub finished: Duration,
    pub audit: Audit,
}

/// Starts only replica 0, creates `jobs` jobs through it (it drives them: nobody else runs), waits
/// until each has a shot in flight, starts the others, then `fault` (kill or pause) replica 0.
/// Returns the fleet, the jobs and each job's (lease token, state) just before the fault.
pub async fn jobs_held_by_replica_0(
    opts: Options,
    jobs: usize,
) -> (Arc<Fleet>, Vec<Created>, HashMap<String, (i64, String)>) {
    let fleet = Fleet::start_some(opts, 1).await;
    let mut created = Vec::new();
    for i in 0..jobs {
        let tenant = i % fleet.secrets.len();
        let job_id = fleet
            .create_job(tenant, &format!("held-{i}"), "quick_social", true)
            .await;
        created.push(Created { tenant, job_id });
    }
    for c in &created {
        wait_shot_started(&fleet, c.tenant, &c.job_id, 0).await;
    }
    let others = (1..fleet.opts.replicas).map(|i| fleet.spawn(i));
    futures::future::join_all(others).await;
    let db = fleet.db().await;
    let ids: Vec<String> = created.iter().map(|c| c.job_id.clone()).collect();
    let before = lease_tokens(&db, &ids).await;
    db.close().await;
    (fleet, created, before)
}

/// Scenario (c): replica 0 holds `jobs` jobs and is killed and left down; its jobs must move to
/// the others within about one lease and finish there.
pub async fn dead_replica_rescue(opts: Options, jobs: usize) -> Rescue {
    let limit = Duration::from_millis(opts.lease_ttl_ms + opts.poll_interval_ms + 3_000);
    let (fleet, created, before) = jobs_held_by_replica_0(opts, jobs).await;
    let db = fleet.db().await;
    let t0 = Instant::now();
    fleet.kill(0);
    let rescued = wait_rescued(&db, &before, t0, limit).await;
    for c in &created {
        fleet.watch(c.tenant, &c.job_id, None, None).await;
    }
    let finished = t0.elapsed();
    let audit = audit(&fleet, &created).await;
    Rescue {
        jobs,
        rescued,
        finished,
        audit,
    }
}

/// End-to-end throughput: `jobs` quick_social jobs, `workers` at a time, on a fresh fleet without
/// faults; jobs per second from the first CreateJob to the last DELIVERED.
pub async fn throughput(opts: Options, jobs: usize, workers: usize) -> (f64, Audit) {
    let fleet = Fleet::start(opts).await;
    let t0 = Instant::now();
    let created = run_load(
        fleet.clone(),
        "tp",
        jobs,
        workers,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let rate = jobs as f64 / t0.elapsed().as_secs_f64();
    (rate, audit(&fleet, &created).await)
}
