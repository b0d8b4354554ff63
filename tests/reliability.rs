//! Restarts, crashes and failing backends: no job, event or money is lost.

use crate::harness::*;
use aiprod::domain::Backend;
use aiprod_sdk::{Client, pb};
use pb::JobState::*;
use std::sync::Arc;
use std::time::Duration;

fn rendered(events: &[pb::JobEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.payload, Some(pb::job_event::Payload::ShotRendered(_))))
        .count()
}

fn fallbacks(events: &[pb::JobEvent]) -> Vec<pb::BackendFallback> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::job_event::Payload::BackendFallback(f)) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn graceful_restart_mid_job_resumes_without_gaps_or_double_billing() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(test_config(&dir, 60), dir).await;
    let (_, secret, client) = server.tenant("acme", pb::Tier::Platinum).await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("restart-1", "premium_spot")
        },
    )
    .await;
    let before = watch_until(&client, &job.job_id, 0, |e| {
        matches!(e.payload, Some(pb::job_event::Payload::ShotRendered(_)))
    })
    .await;
    assert!(rendered(&before) >= 1);

    let (config, dir) = server.stop().await;
    let server = TestServer::start_with(config, dir).await;
    let client = Client::connect(server.endpoint.clone(), &secret)
        .await
        .unwrap();
    let events = watch_to_delivery(&client, &job.job_id).await;
    assert_gap_free(&events);
    assert_eq!(states(&events).last(), Some(&Delivered));
    assert_eq!(
        &events[..before.len()],
        &before[..],
        "history is unchanged by the restart"
    );
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert_no_double_billing(&report);
}

#[tokio::test]
async fn sigkill_mid_job_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aiprod.db").display());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .output()
            .expect("run aiprod");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let tenant = run(&[
        "admin",
        "--database-url",
        &db,
        "create-tenant",
        "--name",
        "acme",
        "--tier",
        "platinum",
    ]);
    let secret = run(&[
        "admin",
        "--database-url",
        &db,
        "create-key",
        "--tenant-id",
        &tenant,
        "--mode",
        "test",
    ]);
    let start = |n: u32| {
        let ready = dir.path().join(format!("ready-{n}"));
        let child = std::process::Command::new(binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &db,
                "--no-demo-tenant",
                "--sandbox-latency-ms",
                "40",
                "--sandbox-short-side",
                "90",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .env("AIPROD_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn server");
        (child, ready)
    };
    async fn endpoint(ready: &std::path::Path) -> String {
        for _ in 0..300 {
            if let Ok(addr) = std::fs::read_to_string(ready)
                && !addr.is_empty()
            {
                return format!("http://{addr}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // polling a file the child writes
        }
        panic!("server not ready")
    }
    let mut jobs = Vec::new();
    let mut last_seen = Vec::new();
    for round in 0..3u32 {
        let (mut child, ready) = start(round);
        let client = Client::connect(endpoint(&ready).await, &secret)
            .await
            .unwrap();
        if round == 0 {
            for i in 0..3 {
                jobs.push(
                    create(
                        &client,
                        pb::CreateJobRequest {
                            auto_approve: true,
                            ..create_request(&format!("crash-{i}"), "brand_campaign")
                        },
                    )
                    .await
                    .job_id,
                );
            }
        }
        // Let every job make progress, then kill -9 in the middle of rendering.
        for id in &jobs {
            let events = watch_until(&client, id, 0, |e| aiprod_sdk::is_terminal(e.state) || matches!(e.payload, Some(pb::job_event::Payload::ShotStarted(_)) if e.sequence > 8 + u64::from(round) * 4)).await;
            last_seen.push(events.len());
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }
    let (mut child, ready) = start(9);
    let client = Client::connect(endpoint(&ready).await, &secret)
        .await
        .unwrap();
    for id in &jobs {
        let events = watch_to_end(&client, id, 0).await;
        assert_gap_free(&events);
        assert_eq!(
            states(&events),
            [Queued, Planning, Rendering, QualityCheck, Delivered],
            "{id}"
        );
        assert_eq!(rendered(&events), 6, "each shot's render committed once");
        let report = costs(&client, id).await;
        assert_certified(&report);
        assert_no_double_billing(&report);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_backend_that_always_fails_falls_back_and_opens_its_circuit() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, 1);
    config
        .sandbox
        .backend_failure_rates
        .insert(Backend::Runway, 1.0);
    // One shot at a time, so the count of attempts before the circuit opens is exact (in
    // parallel, attempts already in flight when it opens fail too).
    config.render.max_parallel_shots_per_job = 1;
    let server = TestServer::start_with(config, dir).await;
    let client = server.platinum("acme").await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("fallback-1", "brand_campaign")
        },
    )
    .await;
    let events = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&events);
    assert_eq!(states(&events).last(), Some(&Delivered));
    let f = fallbacks(&events);
    assert_eq!(
        f.len(),
        3,
        "three consecutive failures open runway's circuit; later shots skip it: {f:?}"
    );
    assert!(
        f.iter()
            .all(|f| f.from_backend == pb::Backend::Runway as i32
                && f.to_backend != pb::Backend::Runway as i32)
    );
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert!(
        report
            .ledger
            .iter()
            .filter(|l| l.kind == pb::LedgerKind::Render as i32)
            .all(|l| l.backend != pb::Backend::Runway as i32)
    );
}

#[tokio::test]
async fn jobs_complete_when_every_backend_fails_thirty_percent_of_calls() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, 1);
    config.sandbox.failure_rate = 0.3;
    config.sandbox.seed = 2026;
    config.circuit.cooldown_s = 0;
    let server = TestServer::start_with(config, dir).await;
    let client = server.platinum("acme").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let preset = if i % 2 == 0 {
            "quick_social"
        } else {
            "brand_campaign"
        };
        ids.push(
            create(
                &client,
                pb::CreateJobRequest {
                    auto_approve: true,
                    ..create_request(&format!("flaky-{i}"), preset)
                },
            )
            .await
            .job_id,
        );
    }
    let mut total_fallbacks = 0;
    for id in &ids {
        let events = watch_to_end(&client, id, 0).await;
        assert_gap_free(&events);
        assert_eq!(states(&events).last(), Some(&Delivered), "{id}");
        total_fallbacks += fallbacks(&events).len();
        let report = costs(&client, id).await;
        assert_certified(&report);
        assert_no_double_billing(&report);
    }
    assert!(
        total_fallbacks > 0,
        "failures are visible as fallback events"
    );
}

#[tokio::test]
async fn graceful_shutdown_turns_health_off_and_ends_streams_unavailable() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(test_config(&dir, 100), dir).await;
    let (_, secret, client) = server.tenant("acme", pb::Tier::Platinum).await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("shutdown-1", "brand_campaign")
        },
    )
    .await;

    let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut statuses = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "aiprod.v1.RenderService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(statuses.message().await.unwrap().unwrap().status, serving);

    // A raw stream (no SDK resume) sees how the server ends it.
    let mut raw = client
        .render()
        .watch_job(pb::WatchJobRequest {
            job_id: job.job_id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = vec![raw.message().await.unwrap().unwrap().event.unwrap()];
    let stopping = tokio::spawn(server.stop());
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let next = statuses.message().await.unwrap().unwrap().status;
    assert_eq!(next, not_serving, "health turns NOT_SERVING first");
    drop(statuses);
    let status = loop {
        match raw.message().await {
            Ok(Some(m)) => seen.push(m.event.unwrap()),
            Ok(None) => {
                panic!("the stream must end with UNAVAILABLE, not cleanly, before the job is over")
            }
            Err(status) => break status,
        }
    };
    let err = aiprod_sdk::Error::from(status);
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.retry_after().is_some(),
        "RetryInfo tells when to resume"
    );
    let (config, dir) = stopping.await.unwrap();

    // After a restart the watcher resumes after the last event it saw.
    let server = TestServer::start_with(config, dir).await;
    let client = Client::connect(server.endpoint.clone(), &secret)
        .await
        .unwrap();
    let rest = watch_to_end(&client, &job.job_id, seen.last().unwrap().sequence).await;
    seen.extend(rest);
    assert_gap_free(&seen);
    assert_eq!(states(&seen).last(), Some(&Delivered));
}
