//! Nothing leaks between tenants: another tenant's job is NOT_FOUND, byte-identical to a missing id.

use crate::harness::*;
use aiprod_sdk::{Client, Error, pb};
use futures::StreamExt;
use tonic::Code;

/// Calls every id-taking RPC with `job_id` and returns the errors.
async fn every_rpc(client: &Client, job_id: &str) -> Vec<(&'static str, Error)> {
    let id = || job_id.to_string();
    let mut out = Vec::new();
    out.push((
        "GetJob",
        expect_err(
            client
                .render()
                .get_job(pb::GetJobRequest { job_id: id() })
                .await,
        ),
    ));
    out.push((
        "CancelJob",
        expect_err(
            client
                .render()
                .cancel_job(pb::CancelJobRequest {
                    job_id: id(),
                    reason: String::new(),
                })
                .await,
        ),
    ));
    out.push((
        "WatchJob",
        expect_err(
            client
                .render()
                .watch_job(pb::WatchJobRequest {
                    job_id: id(),
                    after_sequence: 0,
                })
                .await,
        ),
    ));
    out.push((
        "GetJobCosts",
        expect_err(
            client
                .costs()
                .get_job_costs(pb::GetJobCostsRequest { job_id: id() })
                .await,
        ),
    ));
    out.push((
        "GetManifest",
        expect_err(
            client
                .icc()
                .get_manifest(pb::GetManifestRequest { job_id: id() })
                .await,
        ),
    ));
    out.push((
        "UpdateManifest",
        expect_err(
            client
                .icc()
                .update_manifest(pb::UpdateManifestRequest {
                    job_id: id(),
                    manifest: Some(pb::Manifest {
                        audio_style: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["audio_style".into()],
                    }),
                    etag: "r1-000000000000".into(),
                })
                .await,
        ),
    ));
    out.push((
        "ApproveManifest",
        expect_err(
            client
                .icc()
                .approve_manifest(pb::ApproveManifestRequest {
                    job_id: id(),
                    etag: "r1".into(),
                })
                .await,
        ),
    ));
    out.push((
        "ApproveDelivery",
        expect_err(
            client
                .icc()
                .approve_delivery(pb::ApproveDeliveryRequest { job_id: id() })
                .await,
        ),
    ));
    out.push((
        "RequestRevision",
        expect_err(
            client
                .icc()
                .request_revision(pb::RequestRevisionRequest {
                    job_id: id(),
                    shot_ids: vec!["shot-01".into()],
                    notes: String::new(),
                })
                .await,
        ),
    ));
    out
}

#[tokio::test]
async fn another_tenants_job_is_not_found_everywhere() {
    let server = TestServer::start().await;
    let a = server.platinum("acme").await;
    let b = server.platinum("globex").await;
    let waiting = create(&a, create_request("iso-1", "brand_campaign")).await;
    wait_for_state(&a, &waiting.job_id, pb::JobState::AwaitingApproval).await;
    let cancelled = create(&a, create_request("iso-2", "brand_campaign")).await;
    a.render()
        .cancel_job(pb::CancelJobRequest {
            job_id: cancelled.job_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();

    let missing = every_rpc(&b, "job_0000000000007000800000000000000").await;
    for foreign in [&waiting.job_id, &cancelled.job_id] {
        let got = every_rpc(&b, foreign).await;
        for ((rpc, err), (_, reference)) in got.iter().zip(&missing) {
            assert_eq!(err.code(), Code::NotFound, "{rpc} on a foreign job");
            assert_eq!(
                err.message(),
                reference.message(),
                "{rpc}: same message as a missing id"
            );
            assert_eq!(
                err.status().details(),
                reference.status().details(),
                "{rpc}: same details as a missing id"
            );
        }
    }
    // The owner still sees its job untouched, and lists never contain foreign rows.
    let job = a
        .render()
        .get_job(pb::GetJobRequest {
            job_id: waiting.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(job.state, pb::JobState::AwaitingApproval as i32);
    let listed: Vec<_> = b
        .list_all_jobs(pb::ListJobsRequest::default())
        .collect()
        .await;
    assert!(listed.is_empty(), "tenant B lists none of A's jobs");
    // The same request_id in two tenants makes two jobs.
    let own = create(&b, create_request("iso-1", "brand_campaign")).await;
    assert_ne!(own.job_id, waiting.job_id);
}
