//! The same service on a real PostgreSQL: a throwaway cluster (`initdb` + `pg_ctl` in a temporary
//! directory on a free loopback port), started by the test itself.

use crate::harness::*;
use aiprod_sdk::{Client, pb};
use pb::JobState::*;
use std::sync::Arc;

#[path = "support/pg_cluster.rs"]
mod pg_cluster;
pub use pg_cluster::PgCluster;

fn config_for(url: &str, dir: &tempfile::TempDir, latency_ms: u64) -> aiprod::config::Config {
    let mut c = test_config(dir, latency_ms);
    c.database_url = url.to_string();
    c
}

#[tokio::test]
async fn the_whole_service_runs_on_postgres() {
    let pg = PgCluster::start();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(config_for(&pg.url, &dir, 30), dir).await;
    let (_, secret, client) = server.tenant("acme", pb::Tier::Platinum).await;

    // Idempotency under concurrency.
    let calls = (0..20).map(|_| {
        let client = client.clone();
        async move {
            create(&client, create_request("pg-same", "brand_campaign"))
                .await
                .job_id
        }
    });
    let ids = futures::future::join_all(calls).await;
    assert!(ids.iter().all(|id| id == &ids[0]));

    // Review, edit, approve.
    wait_for_state(&client, &ids[0], AwaitingApproval).await;
    let m = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: ids[0].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    let m2 = client
        .icc()
        .update_manifest(pb::UpdateManifestRequest {
            job_id: ids[0].clone(),
            manifest: Some(pb::Manifest {
                audio_style: "piano".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["audio_style".into()],
            }),
            etag: m.etag,
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id: ids[0].clone(),
            etag: m2.etag,
        })
        .await
        .unwrap();

    // A second job, then a restart mid-render on the same database.
    let second = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("pg-2", "premium_spot")
        },
    )
    .await;
    watch_until(&client, &second.job_id, 0, |e| {
        matches!(e.payload, Some(pb::job_event::Payload::ShotRendered(_)))
    })
    .await;
    let (config, dir) = server.stop().await;
    let server = TestServer::start_with(config, dir).await;
    let client = Client::connect(server.endpoint.clone(), &secret)
        .await
        .unwrap();
    for id in [&ids[0], &second.job_id] {
        let events = watch_to_delivery(&client, id).await;
        assert_gap_free(&events);
        assert_eq!(states(&events).last(), Some(&Delivered));
        let report = costs(&client, id).await;
        assert_certified(&report);
        assert_no_double_billing(&report);
    }
    let listed = client
        .render()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        listed.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>(),
        [second.job_id.clone(), ids[0].clone()]
    );
    let other = server.platinum("globex").await;
    let err = expect_err(
        other
            .render()
            .get_job(pb::GetJobRequest {
                job_id: ids[0].clone(),
            })
            .await,
    );
    assert_eq!(err.code(), tonic::Code::NotFound);
}
