//! Several replicas on one PostgreSQL (in-process servers here; the chaos runs use separate
//! processes): jobs are driven once, any replica serves any job and stream, a stopping replica
//! hands its jobs over at once, and health tells the truth on shutdown.

use crate::harness::*;
use crate::postgres::PgCluster;
use aiprod_sdk::{Client, pb};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

async fn replica(pg: &PgCluster, latency_ms: u64) -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, latency_ms);
    config.database_url = pg.url.clone();
    config.cluster.lease_ttl_ms = 2_000;
    config.cluster.poll_interval_ms = 200;
    TestServer::start_with(config, dir).await
}

/// (shot, attempt) → number of ShotStarted events: 1 everywhere when no two replicas fight.
fn shot_starts(events: &[pb::JobEvent]) -> HashMap<(String, u32), u32> {
    let mut starts = HashMap::new();
    for e in events {
        if let Some(pb::job_event::Payload::ShotStarted(s)) = &e.payload {
            *starts.entry((s.shot_id.clone(), s.attempt)).or_insert(0) += 1;
        }
    }
    starts
}

#[tokio::test]
async fn two_replicas_drive_each_job_once_and_serve_any_stream() {
    let pg = PgCluster::start();
    let a = replica(&pg, 40).await;
    let b = replica(&pg, 40).await;
    let (_, secret, on_a) = a.tenant("acme", pb::Tier::Platinum).await;
    let on_b = Client::connect(b.endpoint.clone(), &secret).await.unwrap();
    let mut jobs = vec![];
    for i in 0..6 {
        // Created on one replica, watched on the other.
        let (create_on, watch_on) = if i % 2 == 0 {
            (&on_a, &on_b)
        } else {
            (&on_b, &on_a)
        };
        let job = create(
            create_on,
            pb::CreateJobRequest {
                auto_approve: true,
                ..create_request(&format!("two-{i}"), "quick_social")
            },
        )
        .await;
        jobs.push((job.job_id, watch_on.clone()));
    }
    let mut shots = 0;
    for (id, client) in &jobs {
        let events = watch_to_end(client, id, 0).await;
        assert_gap_free(&events);
        assert_eq!(states(&events).last(), Some(&pb::JobState::Delivered));
        let starts = shot_starts(&events);
        assert!(
            starts.values().all(|n| *n == 1),
            "a shot attempt started twice: {starts:?}"
        );
        shots += starts.len();
        assert_no_double_billing(&costs(client, id).await);
    }
    assert!(shots >= jobs.len());
}

#[tokio::test]
async fn a_stopping_replica_hands_its_jobs_over_at_once() {
    let pg = PgCluster::start();
    let a = replica(&pg, 400).await;
    let b = replica(&pg, 400).await;
    let (_, secret, on_a) = a.tenant("acme", pb::Tier::Platinum).await;
    let on_b = Client::connect(b.endpoint.clone(), &secret).await.unwrap();
    let mut ids = vec![];
    for i in 0..3 {
        let job = create(
            &on_a,
            pb::CreateJobRequest {
                auto_approve: true,
                ..create_request(&format!("handover-{i}"), "brand_campaign")
            },
        )
        .await;
        ids.push(job.job_id);
    }
    // Let A start rendering, then stop it: it gives its leases back and B resumes the jobs.
    wait_for_state(&on_b, &ids[0], pb::JobState::Rendering).await;
    a.stop().await;
    let started = std::time::Instant::now();
    for id in &ids {
        let events = watch_to_end(&on_b, id, 0).await;
        assert_gap_free(&events);
        assert_eq!(states(&events).last(), Some(&pb::JobState::Delivered));
        let report = costs(&on_b, id).await;
        assert_certified(&report);
        assert_no_double_billing(&report);
    }
    // Well under a lease would be the NOTIFY path; the bound only rules out "never".
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn shutdown_turns_overall_health_off_and_ends_health_watches() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(test_config(&dir, 2), dir).await;
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let overall = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status, serving);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, serving);
    let stopping = tokio::spawn(server.stop());
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        not_serving,
        "the overall status turns NOT_SERVING on shutdown"
    );
    // The watch ends (it does not hold the process for the grace period).
    let end = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the health watch ends promptly");
    assert!(!matches!(end, Ok(Some(_))), "no further status: {end:?}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops promptly")
        .unwrap();
}
