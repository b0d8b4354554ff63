//! Chaos runs, short form: replicas of the real binary on one throwaway PostgreSQL, killed,
//! paused and cut off from their database under load, then every job, event log and ledger is
//! audited (`chaos/driver.rs`). The long form is `cargo bench --bench chaos`.

mod driver;

use aiprod_sdk::pb;
use driver::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// One scenario at a time: each runs several server processes and a PostgreSQL on a small machine,
/// and the rescue bound must not measure CPU starvation by the other scenarios.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_and_restarted_lose_nothing() {
    let _one = SERIAL.lock().await;
    let fleet = Fleet::start(Options::default()).await;
    let (audit, elapsed) = kill_restart_run(&fleet, 30, 8, 2).await;
    println!("{}", figures("kill/restart", &audit, &fleet, elapsed));
    assert_eq!(fleet.kills.load(Ordering::SeqCst), 2);
    assert_eq!(audit.jobs, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lease_holder_changes_nothing_when_it_wakes() {
    let _one = SERIAL.lock().await;
    // Slow renders: the paused replica has attempts in flight that finish after it wakes.
    let opts = Options {
        latency_ms: 1_500,
        ..Options::default()
    };
    let ttl = opts.lease_ttl_ms;
    let (fleet, created, before) = jobs_held_by_replica_0(opts, 4).await;
    let db = fleet.db().await;
    let t0 = Instant::now();
    fleet.pause(0);
    let rescued = wait_rescued(&db, &before, t0, Duration::from_secs(20)).await;
    // The lease was renewed at most one heartbeat (TTL / 3) before the pause.
    assert!(
        rescued >= Duration::from_millis(ttl * 2 / 3),
        "a lease is not taken before it expires ({rescued:?})"
    );
    // The other replicas have started their own attempts; now the old holder wakes up with its
    // stale attempts and tries to write their results.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.resume(0);
    for c in &created {
        fleet.watch(c.tenant, &c.job_id, None, None).await;
    }
    let audit = audit(&fleet, &created).await;
    println!(
        "{}; rescued {:.2} s after SIGSTOP",
        figures("paused holder", &audit, &fleet, t0.elapsed()),
        rescued.as_secs_f64()
    );
    assert!(
        fleet.log(0).contains("lease lost"),
        "the woken replica noticed it lost its leases:\n{}",
        fleet.log(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_jobs_finish_on_the_others_within_about_one_lease() {
    let _one = SERIAL.lock().await;
    let opts = Options {
        latency_ms: 1_000,
        ..Options::default()
    };
    let r = dead_replica_rescue(opts, 4).await;
    println!(
        "dead replica: {} jobs rescued {:.2} s after SIGKILL (lease 2 s), all terminal after {:.2} s; \
         shot starts per shot {:.2}",
        r.jobs,
        r.rescued.as_secs_f64(),
        r.finished.as_secs_f64(),
        r.audit.starts_per_shot()
    );
}

async fn health(endpoint: &str) -> Vec<i32> {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
    else {
        return vec![];
    };
    let mut h = HealthClient::new(channel);
    let mut out = Vec::new();
    for service in ["", "aiprod.v1.RenderService"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers");
        out.push(r.into_inner().status);
    }
    out
}

async fn wait_health(endpoint: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(endpoint).await != vec![want as i32; 2] {
        assert!(Instant::now() < deadline, "{endpoint} never {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_under_load_answers_unavailable_then_recovers() {
    let _one = SERIAL.lock().await;
    let opts = Options {
        latency_ms: 300,
        ..Options::default()
    };
    let fleet = Fleet::start(opts).await;
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let load = tokio::spawn(run_load(fleet.clone(), "outage", 16, 6, done.clone()));
    while done.load(Ordering::SeqCst) < 3 {
        assert!(!load.is_finished());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let known = fleet
        .create_job(0, "before-outage", "quick_social", true)
        .await;

    eprintln!("outage: stopping the database at {:?}", t0.elapsed());
    let f = fleet.clone();
    tokio::task::spawn_blocking(move || f.pg.as_ref().unwrap().stop())
        .await
        .unwrap();
    let stopped = Instant::now();
    // Every replica at once: a call waits up to the pool's acquire timeout before it answers.
    let checks = fleet.live().into_iter().map(|i| {
        let (fleet, known) = (fleet.clone(), known.clone());
        async move {
            let endpoint = fleet.endpoint(i).unwrap();
            wait_health(&endpoint, ServingStatus::NotServing).await;
            let client = fleet.client_at(&endpoint, 0).await.unwrap();
            let asked = Instant::now();
            let err = client
                .render()
                .get_job(pb::GetJobRequest { job_id: known })
                .await
                .expect_err("the database is down");
            assert_eq!(
                err.code(),
                Code::Unavailable,
                "GetJob on replica {i}: {err:?}"
            );
            let err = client
                .render()
                .create_job(outage_request(i))
                .await
                .expect_err("the database is down");
            assert_eq!(
                err.code(),
                Code::Unavailable,
                "CreateJob on replica {i}: {err:?}"
            );
            assert!(err.retry_after().is_some(), "UNAVAILABLE carries RetryInfo");
            eprintln!(
                "outage: replica {i} NOT_SERVING, GetJob and CreateJob UNAVAILABLE in {:?}",
                asked.elapsed()
            );
        }
    });
    futures::future::join_all(checks).await;

    // Down for longer than a lease: every lease expires while nobody can renew it.
    let down = Duration::from_millis(fleet.opts.lease_ttl_ms + 1_000);
    tokio::time::sleep(down.saturating_sub(stopped.elapsed())).await;
    eprintln!("outage: restarting the database at {:?}", t0.elapsed());
    let f = fleet.clone();
    tokio::task::spawn_blocking(move || f.pg.as_ref().unwrap().restart())
        .await
        .unwrap();
    for i in fleet.live() {
        wait_health(&fleet.endpoint(i).unwrap(), ServingStatus::Serving).await;
    }
    eprintln!("outage: healthy again at {:?}", t0.elapsed());
    // The calls refused during the outage succeed once retried (same request ids).
    let mut created = load.await.unwrap();
    for i in fleet.live() {
        let job_id = fleet.create_job_with(0, outage_request(i)).await;
        created.push(driver::Created { tenant: 0, job_id });
    }
    created.push(driver::Created {
        tenant: 0,
        job_id: known,
    });
    let audit = audit(&fleet, &created).await;
    println!(
        "{}",
        figures("database outage", &audit, &fleet, t0.elapsed())
    );
}

fn outage_request(i: usize) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        auto_approve: true,
        ..crate::harness::create_request(&format!("during-outage-{i}"), "quick_social")
    }
}
