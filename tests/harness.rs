//! The test harness: start a real server (in-process or as the real binary), make tenants and
//! keys through AdminService, and helpers that wait on events (never on sleeps).

#![allow(dead_code)]

use aiprod::config::Config;
use aiprod_sdk::{AdminClient, Client, Error, pb};
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const BRIEF: &str =
    "Launch film for our new trail running shoe: dawn in the mountains, fast feet, bold colours.";

/// A server running in this process on an ephemeral loopback port; stops when dropped.
pub struct TestServer {
    pub endpoint: String,
    pub config: Config,
    pub dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A config for tests: SQLite in `dir`, sandbox latency `latency_ms`, an admin token.
pub fn test_config(dir: &tempfile::TempDir, latency_ms: u64) -> Config {
    let mut c = Config {
        database_url: format!("sqlite://{}", dir.path().join("aiprod.db").display()),
        admin_token: Some(ADMIN_TOKEN.into()),
        demo_tenant: false,
        shutdown_grace_s: 5,
        ..Config::default()
    };
    c.sandbox.latency_ms = latency_ms;
    // Tiny real clips: every test job renders, measures and assembles real video.
    c.media.sandbox_short_side = TEST_SHORT_SIDE;
    c.media.ffmpeg = "off".into();
    c
}

/// Short side of sandbox clips in tests (160x90 for 16:9).
pub const TEST_SHORT_SIDE: u32 = 90;

impl TestServer {
    /// A server with the default test config.
    pub async fn start() -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let config = test_config(&dir, 2);
        Self::start_with(config, dir).await
    }

    pub async fn start_with(config: Config, dir: Arc<tempfile::TempDir>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(aiprod::serve(config.clone(), listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            endpoint: format!("http://{addr}"),
            config,
            dir,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Graceful shutdown; returns the config and directory to restart on the same database.
    pub async fn stop(mut self) -> (Config, Arc<tempfile::TempDir>) {
        self.stop.take().map(|s| s.send(()));
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("server stops in time")
                .expect("join")
                .expect("serve ok");
        }
        (self.config.clone(), self.dir.clone())
    }

    pub async fn admin(&self) -> AdminClient {
        AdminClient::connect(self.endpoint.clone(), ADMIN_TOKEN)
            .await
            .expect("admin client")
    }

    /// A new tenant of `tier` with a test-mode key, and a client using that key.
    pub async fn tenant(&self, name: &str, tier: pb::Tier) -> (String, String, Client) {
        let admin = self.admin().await;
        let tenant = admin
            .admin()
            .create_tenant(pb::CreateTenantRequest {
                name: name.into(),
                tier: tier as i32,
                ..Default::default()
            })
            .await
            .expect("create tenant")
            .into_inner()
            .tenant
            .expect("tenant");
        let key = admin
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant_id: tenant.tenant_id.clone(),
                mode: pb::ApiKeyMode::Test as i32,
                name: "tests".into(),
                ..Default::default()
            })
            .await
            .expect("create key")
            .into_inner();
        // No SDK retries: these tests assert the server's own answers (RESOURCE_EXHAUSTED,
        // UNAVAILABLE while stopping); the retry policy is tested in sdk/rust/examples/faults.rs.
        let client = Client::builder(self.endpoint.clone())
            .max_attempts(1)
            .connect(&key.secret)
            .await
            .expect("client");
        (tenant.tenant_id, key.secret, client)
    }

    pub async fn platinum(&self, name: &str) -> Client {
        self.tenant(name, pb::Tier::Platinum).await.2
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn create_request(request_id: &str, preset: &str) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        request_id: request_id.into(),
        preset_id: preset.into(),
        brief: BRIEF.into(),
        brand_id: "acme-shoes".into(),
        ..Default::default()
    }
}

pub async fn create(client: &Client, req: pb::CreateJobRequest) -> pb::Job {
    client
        .render()
        .create_job(req)
        .await
        .expect("create job")
        .into_inner()
        .job
        .expect("job")
}

/// Reads events until one satisfies `until` (inclusive) or the stream ends; panics after 60 s.
pub async fn watch_until(
    client: &Client,
    job_id: &str,
    after: u64,
    until: impl Fn(&pb::JobEvent) -> bool,
) -> Vec<pb::JobEvent> {
    let mut out = Vec::new();
    let mut stream = Box::pin(client.watch_job(job_id.to_string(), after));
    let run = async {
        while let Some(e) = stream.next().await {
            let e = e.expect("watch event");
            let stop = until(&e);
            out.push(e);
            if stop {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("events arrive within 60 s");
    out
}

/// Every event of a job until its terminal event.
pub async fn watch_to_end(client: &Client, job_id: &str, after: u64) -> Vec<pb::JobEvent> {
    watch_until(client, job_id, after, |e| aiprod_sdk::is_terminal(e.state)).await
}

/// Every event to the end, approving the final review when the job stops for it (`auto_approve`
/// skips only the manifest review).
pub async fn watch_to_delivery(client: &Client, job_id: &str) -> Vec<pb::JobEvent> {
    let mut events = watch_until(client, job_id, 0, |e| {
        e.state == pb::JobState::AwaitingFinalApproval as i32
    })
    .await;
    if events
        .last()
        .is_some_and(|e| e.state == pb::JobState::AwaitingFinalApproval as i32)
    {
        client
            .icc()
            .approve_delivery(pb::ApproveDeliveryRequest {
                job_id: job_id.into(),
            })
            .await
            .expect("approve delivery");
        let last = events.last().map_or(0, |e| e.sequence);
        events.extend(watch_to_end(client, job_id, last).await);
    }
    events
}

pub async fn wait_for_state(
    client: &Client,
    job_id: &str,
    state: pb::JobState,
) -> Vec<pb::JobEvent> {
    watch_until(client, job_id, 0, |e| {
        e.state == state as i32 || aiprod_sdk::is_terminal(e.state)
    })
    .await
}

/// Sequences 1..=n without gaps or duplicates.
pub fn assert_gap_free(events: &[pb::JobEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.sequence,
            i as u64 + 1,
            "sequence gap or duplicate at index {i}: {:?}",
            events.iter().map(|e| e.sequence).collect::<Vec<_>>()
        );
    }
}

/// The distinct states in order of first appearance.
pub fn states(events: &[pb::JobEvent]) -> Vec<pb::JobState> {
    let mut out: Vec<pb::JobState> = Vec::new();
    for e in events {
        let s = pb::JobState::try_from(e.state).expect("known state");
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

pub fn field_names(err: &Error) -> Vec<String> {
    err.field_violations()
        .into_iter()
        .map(|v| v.field)
        .collect()
}

pub fn expect_err<T: std::fmt::Debug, E: Into<Error> + std::fmt::Debug>(
    r: Result<tonic::Response<T>, E>,
) -> Error {
    r.expect_err("the call must fail").into()
}

pub async fn costs(client: &Client, job_id: &str) -> pb::CostReport {
    client
        .costs()
        .get_job_costs(pb::GetJobCostsRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("costs")
        .into_inner()
        .report
        .expect("report")
}

/// The certified cost report must hold the guarantee and add up.
pub fn assert_certified(report: &pb::CostReport) {
    assert!(report.certified, "report is certified");
    assert!(report.within_guarantee);
    assert!(
        report.billed_micros <= report.guaranteed_max_micros,
        "{report:?}"
    );
    let sum: i64 = report.ledger.iter().map(|l| l.amount_micros).sum();
    assert_eq!(sum, report.metered_micros, "ledger adds up to metered");
    let billable: i64 = report
        .ledger
        .iter()
        .filter(|l| l.succeeded)
        .map(|l| l.amount_micros)
        .sum();
    assert_eq!(
        report.billed_micros,
        billable.min(report.guaranteed_max_micros)
    );
    assert_eq!(
        report.absorbed_micros,
        report.metered_micros - report.billed_micros
    );
}

/// No shot is billed twice for one attempt, and each shot has exactly one successful first render.
pub fn assert_no_double_billing(report: &pb::CostReport) {
    let mut seen = std::collections::HashSet::new();
    for l in &report.ledger {
        assert!(
            seen.insert((l.kind, l.shot_id.clone(), l.attempt)),
            "ledger line billed twice: {l:?}"
        );
    }
    let mut renders = std::collections::HashMap::<String, u32>::new();
    for l in report
        .ledger
        .iter()
        .filter(|l| l.kind == pb::LedgerKind::Render as i32 && l.succeeded)
    {
        *renders.entry(l.shot_id.clone()).or_default() += 1;
    }
    assert!(
        renders.values().all(|n| *n == 1),
        "one successful render per shot: {renders:?}"
    );
}

/// The `aiprod` binary built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_aiprod"))
}
