//! The selection, billing and error rules as the contract states them (issue 9): each test drives
//! the real server over a real socket and would have caught its departure.

use crate::harness::*;
use aiprod::domain::Backend;
use aiprod_sdk::{Client, pb};
use std::sync::Arc;
use tonic::Code;

fn shot(id: &str, seconds: u32) -> pb::Shot {
    pb::Shot {
        shot_id: id.into(),
        description: "A runner at dawn".into(),
        duration_s: seconds,
        camera: pb::CameraMovement::Pan as i32,
        backend: 0,
    }
}

async fn estimate(client: &Client, req: pb::EstimateCostRequest) -> pb::EstimateCostResponse {
    client
        .costs()
        .estimate_cost(req)
        .await
        .expect("estimate")
        .into_inner()
}

/// Departure 1: `auto_approve` skips the manifest review only; premium_spot's final review holds.
#[tokio::test]
async fn auto_approve_keeps_the_final_review() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            duration_s: Some(10),
            auto_approve: true,
            ..create_request("auto-1", "premium_spot")
        },
    )
    .await;
    let events = watch_until(&client, &job.job_id, 0, |e| {
        e.state == pb::JobState::AwaitingFinalApproval as i32
            || e.state == pb::JobState::Delivered as i32
    })
    .await;
    let seen = states(&events);
    assert!(
        !seen.contains(&pb::JobState::AwaitingApproval),
        "the manifest review is skipped: {seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&pb::JobState::AwaitingFinalApproval),
        "the final review still holds the cut: {seen:?}"
    );
}

/// Departure 2: a budget never buys quality below the preset's floor — EstimateCost, CreateJob and
/// UpdateManifest all name the cheapest compliant quote instead.
#[tokio::test]
async fn a_budget_never_buys_quality_below_the_floor() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    // premium_spot 20 s: Runway (0.95) costs $0.31 with the planner; only Replicate (0.75) fits $0.20.
    let e = estimate(
        &client,
        pb::EstimateCostRequest {
            preset_id: "premium_spot".into(),
            duration_s: Some(20),
            budget_micros: Some(200_000),
            ..Default::default()
        },
    )
    .await;
    let q = e.recommended.clone().unwrap();
    assert!(!e.within_budget, "{e:?}");
    assert!(q.shots.iter().all(|s| s.quality >= 0.9), "{q:?}");
    assert_eq!(q.total_micros, 310_000);
    assert!(e.reason.contains("$0.310000"), "{}", e.reason);
    let replicate = e
        .options
        .iter()
        .find(|o| o.backend == pb::Backend::Replicate as i32)
        .unwrap();
    assert!(replicate.within_budget && !replicate.meets_quality_floor);
    assert!(replicate.reason.contains("below"), "{}", replicate.reason);

    let err = expect_err(
        client
            .render()
            .create_job(pb::CreateJobRequest {
                duration_s: Some(20),
                budget_micros: Some(200_000),
                ..create_request("floor-1", "premium_spot")
            })
            .await,
    );
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("$0.310000"), "{}", err.message());
    let pf = err.details().precondition_failure().cloned().unwrap();
    assert_eq!(pf.violations[0].r#type, "BUDGET");

    // A budget that fits Runway exactly; an edit whose compliant quote exceeds it is refused
    // (before: quoted on Replicate, below the floor).
    let job = create(
        &client,
        pb::CreateJobRequest {
            duration_s: Some(20),
            budget_micros: Some(310_000),
            ..create_request("floor-2", "brand_campaign")
        },
    )
    .await;
    watch_until(&client, &job.job_id, 0, |e| {
        e.state == pb::JobState::AwaitingApproval as i32
    })
    .await;
    let manifest = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    let err = expect_err(
        client
            .icc()
            .update_manifest(pb::UpdateManifestRequest {
                job_id: job.job_id.clone(),
                manifest: Some(pb::Manifest {
                    shots: vec![shot("", 8), shot("", 8), shot("", 4)],
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["shots".into()],
                }),
                etag: manifest.etag.clone(),
            })
            .await,
    );
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("cheapest quote"),
        "{}",
        err.message()
    );
}

/// Departure 3: a larger budget keeps the quote within the preset's cap when a compliant plan
/// within it exists, and every option says why it was or was not chosen.
#[tokio::test]
async fn a_larger_budget_keeps_within_the_cap() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    for budget in [None, Some(2_000_000), Some(60_000_000)] {
        let e = estimate(
            &client,
            pb::EstimateCostRequest {
                preset_id: "quick_social".into(),
                duration_s: Some(30),
                budget_micros: budget,
                ..Default::default()
            },
        )
        .await;
        let q = e.recommended.unwrap();
        assert!(q.total_micros <= 250_000, "{budget:?}: {}", q.total_micros);
        assert!(e.within_budget);
        for o in &e.options {
            assert!(!o.reason.is_empty(), "{o:?}");
        }
        let used: u32 = e.options.iter().map(|o| o.recommended_shots).sum();
        assert_eq!(used as usize, q.shots.len());
    }
}

/// Departure 4: after a fallback to a backend that can never meet the floor, no re-render is paid
/// for on it: the shot is delivered with `sla_met = false`.
#[tokio::test]
async fn no_quality_rerender_on_a_hopeless_backend() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, 2);
    // Runway always fails and its circuit opens at once; Veo cannot render 10 s shots: the shot
    // falls back to Replicate (0.75 < 0.9), and nothing available can reach the floor.
    config.sandbox.backend_failure_rates = [(Backend::Runway, 1.0)].into_iter().collect();
    config.circuit.failure_threshold = 1;
    config.circuit.cooldown_s = 600;
    let server = TestServer::start_with(config, dir).await;
    let client = server.platinum("acme").await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            duration_s: Some(10),
            auto_approve: true,
            ..create_request("hopeless-1", "premium_spot")
        },
    )
    .await;
    watch_until(&client, &job.job_id, 0, |e| {
        e.state == pb::JobState::AwaitingFinalApproval as i32
    })
    .await;
    let job = client
        .render()
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(job.sla_met, Some(false));
    let report = costs(&client, &job.job_id).await;
    assert!(
        report
            .ledger
            .iter()
            .all(|l| l.kind != pb::LedgerKind::Rerender as i32),
        "no hopeless re-render: {:?}",
        report.ledger
    );
    assert_eq!(
        report
            .ledger
            .iter()
            .filter(|l| l.succeeded && l.kind == pb::LedgerKind::Render as i32)
            .count(),
        1
    );
}

/// Departure 5: a live key with no provider configured is refused at creation (and by
/// EstimateCost) with a reason naming the providers, not a budget.
#[tokio::test]
async fn a_live_key_without_providers_is_refused_with_its_cause() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let (tenant_id, _, _) = server.tenant("acme", pb::Tier::Platinum).await;
    let key = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id,
            mode: pb::ApiKeyMode::Live as i32,
            name: "live".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let client = Client::connect(server.endpoint.clone(), &key.secret)
        .await
        .unwrap();
    for err in [
        expect_err(
            client
                .render()
                .create_job(create_request("live-1", "quick_social"))
                .await,
        ),
        expect_err(
            client
                .costs()
                .estimate_cost(pb::EstimateCostRequest {
                    preset_id: "quick_social".into(),
                    ..Default::default()
                })
                .await,
        ),
    ] {
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let pf = err.details().precondition_failure().cloned().unwrap();
        assert_eq!(pf.violations[0].r#type, "PROVIDERS_NOT_CONFIGURED");
        assert!(
            err.message().contains("runway") && err.message().contains("replicate"),
            "{}",
            err.message()
        );
        assert!(!err.message().contains("budget"), "{}", err.message());
    }
    let jobs = client
        .render()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.is_empty(), "nothing was accepted");
}

/// Departure 7: GetUsage.billed is exactly the sum of certified bills; the rest is pending.
#[tokio::test]
async fn usage_reconciles_with_certified_bills() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    // One job delivered (certified), one waiting for its manifest review (planner charged).
    let done = create(&client, create_request("usage-1", "quick_social")).await;
    watch_to_end(&client, &done.job_id, 0).await;
    let waiting = create(
        &client,
        pb::CreateJobRequest {
            duration_s: Some(10),
            ..create_request("usage-2", "brand_campaign")
        },
    )
    .await;
    watch_until(&client, &waiting.job_id, 0, |e| {
        e.state == pb::JobState::AwaitingApproval as i32
    })
    .await;
    let done_report = costs(&client, &done.job_id).await;
    let waiting_report = costs(&client, &waiting.job_id).await;
    assert!(done_report.certified && !waiting_report.certified);
    assert!(
        waiting_report.billed_micros > 0,
        "the planner call is billable"
    );
    let usage = client
        .costs()
        .get_usage(pb::GetUsageRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.billed_micros, done_report.billed_micros);
    assert_eq!(usage.pending_micros, waiting_report.billed_micros);
    assert_eq!(usage.certified_jobs, 1);
    assert_eq!(usage.jobs, 2);
}

/// Departure 8: no error repeats a caller's value in full, and details lists are bounded.
#[tokio::test]
async fn errors_never_echo_input_in_full() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let big = "x".repeat(1 << 20);
    let size = |e: &aiprod_sdk::Error| {
        e.message().len()
            + e.field_violations()
                .iter()
                .map(|v| v.field.len() + v.description.len())
                .sum::<usize>()
    };
    let err = expect_err(
        client
            .costs()
            .estimate_cost(pb::EstimateCostRequest {
                preset_id: big.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(size(&err) < 2_000, "{} bytes", size(&err));
    assert!(
        err.message().contains("(1048576 bytes)"),
        "{}",
        err.message()
    );

    // 1,000 labels with 64 KiB keys: one bounded list.
    let labels = (0..1000)
        .map(|i| (format!("{i}{}", "K".repeat(64 << 10)), "v".into()))
        .take(40)
        .chain((0..1000).map(|i| (format!("BAD{i}"), "v".into())))
        .collect();
    let err = expect_err(
        client
            .render()
            .create_job(pb::CreateJobRequest {
                labels,
                ..create_request("echo-1", "quick_social")
            })
            .await,
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.field_violations().len() <= 21);
    assert!(size(&err) < 16_000, "{} bytes", size(&err));

    // A 1 MiB etag on a real job.
    let job = create(
        &client,
        pb::CreateJobRequest {
            duration_s: Some(10),
            ..create_request("echo-2", "brand_campaign")
        },
    )
    .await;
    watch_until(&client, &job.job_id, 0, |e| {
        e.state == pb::JobState::AwaitingApproval as i32
    })
    .await;
    let err = expect_err(
        client
            .icc()
            .approve_manifest(pb::ApproveManifestRequest {
                job_id: job.job_id.clone(),
                etag: big.clone(),
            })
            .await,
    );
    assert_eq!(err.code(), Code::Aborted);
    assert!(size(&err) < 2_000, "{} bytes", size(&err));
    let err = expect_err(
        client
            .icc()
            .update_manifest(pb::UpdateManifestRequest {
                job_id: job.job_id.clone(),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![big.clone(), "consistency_markers.mood".into()],
                }),
                etag: "e".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(size(&err) < 2_000, "{} bytes", size(&err));
}
