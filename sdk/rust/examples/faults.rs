//! Fault scenarios of the shared SDK semantics (sdk/PRODUCTION.md), against a real server started by
//! `scripts/test-server.sh`, which this program restarts:
//! 1. a restart (1.5 s down) while a loop of reads and CreateJob runs: zero failures, retries > 0;
//! 2. a restart mid-watch: the watch resumes, gap-free, to DELIVERED;
//! 3. the Bronze tenant (10 requests/min): a burst of 15 calls with a 20 s deadline each all
//!    succeed, the RESOURCE_EXHAUSTED retries counted by the hook; with max_attempts = 1 the next
//!    call fails with RESOURCE_EXHAUSTED carrying RetryInfo;
//! 4. a deadline shorter than the RetryInfo wait surfaces the last error at once; an expired
//!    deadline is DEADLINE_EXCEEDED.
//!
//! Run by sdk/rust/test.sh: `AIPROD_ENV_FILE=DIR/env AIPROD_TEST_SERVER=scripts/test-server.sh`.

use aiprod_sdk::{Attempt, Client, Code, Error, StreamExt, pb};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_file(path: &str) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .expect("AIPROD_ENV_FILE is readable")
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Counts attempts by outcome code, as a logging hook would see them.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, u32, Code)>>>);

impl Seen {
    fn hook(&self) -> impl Fn(&Attempt) + Send + Sync + 'static {
        let seen = self.0.clone();
        move |a: &Attempt| {
            seen.lock()
                .unwrap()
                .push((a.method.to_string(), a.attempt, a.code))
        }
    }
    fn failed(&self, code: Code) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, c)| *c == code)
            .count()
    }
    fn retries(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n, _)| *n > 1)
            .count()
    }
}

/// Restarts the server in the background, down for `down_ms`.
fn restart(script: &str, dir: &str, down_ms: u64) -> tokio::process::Child {
    tokio::process::Command::new(script)
        .args(["restart", dir])
        .env("AIPROD_RESTART_DOWN_MS", down_ms.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("test-server.sh restart")
}

fn check(ok: bool, what: &str) {
    assert!(ok, "fault check failed: {what}");
    println!("ok: {what}");
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env_path = std::env::var("AIPROD_ENV_FILE").expect("AIPROD_ENV_FILE");
    let script = std::env::var("AIPROD_TEST_SERVER").expect("AIPROD_TEST_SERVER");
    let dir = std::path::Path::new(&env_path)
        .parent()
        .expect("env file's directory")
        .display()
        .to_string();
    let env = env_file(&env_path);
    let endpoint = env["AIPROD_ENDPOINT"].clone();

    // 1. Restart mid-call. A longer attempt budget than the default: 1.5 s down plus the
    //    stop and start of the server outlast five jittered attempts.
    let seen = Seen::default();
    let client = Client::builder(endpoint.clone())
        .timeout(Duration::from_secs(30))
        .max_attempts(12)
        .on_attempt(seen.hook())
        .connect(&env["AIPROD_API_KEY"])
        .await?;
    let mut restarting = restart(&script, &dir, 1500);
    let mut calls = 0u32;
    let mut failures = Vec::new();
    let mut restarted_at = None;
    loop {
        let result = match calls % 3 {
            0 => client
                .presets()
                .list_presets(pb::ListPresetsRequest {})
                .await
                .map(|_| ()),
            1 => client
                .costs()
                .estimate_cost(pb::EstimateCostRequest {
                    preset_id: "quick_social".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            _ => client
                .render()
                .create_job(pb::CreateJobRequest {
                    preset_id: "quick_social".into(),
                    brief: "Restart drill: a sneaker spins on a pedestal, bold colours.".into(),
                    auto_approve: true,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        };
        calls += 1;
        if let Err(e) = result {
            failures.push(e);
        }
        if restarted_at.is_none() && restarting.try_wait().expect("restart status").is_some() {
            restarted_at = Some(Instant::now());
        }
        // Keep calling for a moment after the server is back.
        if restarted_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "restart mid-call: {calls} calls, {} failures, {} retries, {} UNAVAILABLE attempts",
        failures.len(),
        seen.retries(),
        seen.failed(Code::Unavailable)
    );
    check(failures.is_empty(), "no call failed across a restart");
    check(seen.retries() > 0, "the hook counted retries");

    // 2. Restart mid-watch: the watch resumes without a gap and reaches DELIVERED.
    let job = client
        .render()
        .create_job(pb::CreateJobRequest {
            preset_id: "brand_campaign".into(),
            brief: "Restart drill: a runner at dawn, mountains, fast feet.".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel();
    let watcher = {
        let client = client.clone();
        let job_id = job.job_id.clone();
        tokio::spawn(async move {
            let mut waiting_tx = Some(waiting_tx);
            let mut events = Vec::new();
            let mut stream = Box::pin(client.watch_job(job_id, 0));
            while let Some(event) = stream.next().await {
                let event = event?;
                if event.state == pb::JobState::AwaitingApproval as i32
                    && let Some(tx) = waiting_tx.take()
                {
                    let _ = tx.send(());
                }
                events.push(event);
            }
            Ok::<_, Error>(events)
        })
    };
    waiting_rx.await.expect("the job awaits approval");
    let watch_attempts_before = seen.failed(Code::Unavailable);
    restart(&script, &dir, 1500)
        .wait()
        .await
        .expect("restart mid-watch");
    let manifest = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job.job_id.clone(),
        })
        .await?
        .into_inner()
        .manifest
        .unwrap_or_default();
    client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id: job.job_id.clone(),
            etag: manifest.etag,
        })
        .await?;
    let events = tokio::time::timeout(Duration::from_secs(90), watcher)
        .await
        .expect("the watch ends within 90 s")
        .expect("watch task")?;
    check(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.sequence == i as u64 + 1),
        "the resumed watch is gap-free",
    );
    check(
        events.last().map(|e| e.state) == Some(pb::JobState::Delivered as i32),
        "the resumed watch reaches DELIVERED",
    );
    check(
        seen.failed(Code::Unavailable) > watch_attempts_before,
        "the hook saw the watch's failed attempts",
    );

    // 3. Bronze burst: 10 requests a minute; calls 11–15 wait for RetryInfo and succeed.
    let bronze_seen = Seen::default();
    let bronze = Client::builder(endpoint.clone())
        .on_attempt(bronze_seen.hook())
        .connect(&env["AIPROD_BRONZE_API_KEY"])
        .await?;
    let started = Instant::now();
    for i in 0..15 {
        let mut request = aiprod_sdk::Request::new(pb::ListPresetsRequest {});
        request.set_timeout(Duration::from_secs(20));
        if let Err(e) = bronze.presets().list_presets(request).await {
            panic!("burst call {i} failed: {e}");
        }
    }
    let exhausted = bronze_seen.failed(Code::ResourceExhausted);
    println!(
        "bronze burst: 15 calls in {:.1} s, {exhausted} RESOURCE_EXHAUSTED attempts retried",
        started.elapsed().as_secs_f64()
    );
    check(
        exhausted >= 5,
        "the burst's RESOURCE_EXHAUSTED answers were retried",
    );

    let no_retry = Client::builder(endpoint.clone())
        .max_attempts(1)
        .connect(&env["AIPROD_BRONZE_API_KEY"])
        .await?;
    let err = no_retry
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .expect_err("an empty bucket refuses");
    check(
        err.code() == Code::ResourceExhausted && err.retry_after().is_some() && err.is_transient(),
        "max_attempts = 1: RESOURCE_EXHAUSTED with RetryInfo",
    );

    // 4. A deadline shorter than the RetryInfo wait: the last error at once, no sleeping past it.
    let started = Instant::now();
    let mut request = aiprod_sdk::Request::new(pb::ListPresetsRequest {});
    request.set_timeout(Duration::from_secs(1));
    let err = bronze
        .presets()
        .list_presets(request)
        .await
        .expect_err("no token within 1 s");
    check(
        err.code() == Code::ResourceExhausted && started.elapsed() < Duration::from_secs(1),
        "a retry wait past the deadline surfaces the last error before the deadline",
    );
    let mut request = aiprod_sdk::Request::new(pb::GetJobRequest {
        job_id: job.job_id.clone(),
    });
    request.set_timeout(Duration::from_nanos(1));
    let err = client
        .render()
        .get_job(request)
        .await
        .expect_err("1 ns is too short");
    check(
        err.code() == Code::DeadlineExceeded && err.is_transient(),
        "an expired deadline is DEADLINE_EXCEEDED (transient)",
    );
    println!("rust faults: all checks passed");
    Ok(())
}
