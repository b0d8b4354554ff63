//! RenderService: full flows per preset, validation, idempotency, listing, cancel and watch.

use crate::harness::*;
use aiprod_sdk::pb;
use futures::StreamExt;
use pb::JobState::*;
use tonic::Code;

#[tokio::test]
async fn quick_social_is_fast_tracked_to_delivery() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let job = create(&client, create_request("qs-1", "quick_social")).await;
    assert_eq!(job.state, Queued as i32);
    assert_eq!(job.duration_s, 30);
    let events = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&events);
    assert_eq!(
        states(&events),
        [Queued, Planning, Rendering, QualityCheck, Delivered]
    );
    let done = client
        .render()
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(done.state, Delivered as i32);
    assert_eq!((done.shots_total, done.shots_rendered), (3, 3));
    assert_eq!(done.last_sequence, events.len() as u64);
    let video = done.video.unwrap();
    assert_eq!(
        (video.duration_s, video.shot_count, video.sha256.len()),
        (30, 3, 64)
    );
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert_no_double_billing(&report);
    assert_eq!(report.quote_micros, 220_000);
    match events.last().unwrap().payload.as_ref().unwrap() {
        pb::job_event::Payload::Delivered(d) => assert_eq!(d.billed_micros, report.billed_micros),
        other => panic!("last event is not Delivered: {other:?}"),
    }
}

#[tokio::test]
async fn brand_campaign_waits_for_approval() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let job = create(&client, create_request("bc-1", "brand_campaign")).await;
    let first = wait_for_state(&client, &job.job_id, AwaitingApproval).await;
    assert_eq!(states(&first), [Queued, Planning, AwaitingApproval]);
    let manifest = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let m = manifest.manifest.unwrap();
    assert_eq!((m.shots.len(), m.revision), (6, 1));
    assert_eq!(manifest.quote.unwrap().total_micros, 910_000);
    let approved = client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id: job.job_id.clone(),
            etag: m.etag,
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(approved.state, Rendering as i32);
    let events = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&events);
    assert_eq!(
        states(&events),
        [
            Queued,
            Planning,
            AwaitingApproval,
            Rendering,
            QualityCheck,
            Delivered
        ]
    );
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert_eq!(report.quote_micros, 910_000);
    assert_eq!(report.tolerance_percent, 10);
}

#[tokio::test]
async fn premium_spot_has_final_review_and_revisions() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: false,
            ..create_request("ps-1", "premium_spot")
        },
    )
    .await;
    wait_for_state(&client, &job.job_id, AwaitingApproval).await;
    let m = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    assert_eq!(m.shots.len(), 12);
    client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id: job.job_id.clone(),
            etag: m.etag,
        })
        .await
        .unwrap();
    let events = wait_for_state(&client, &job.job_id, AwaitingFinalApproval).await;
    assert_eq!(states(&events).last(), Some(&AwaitingFinalApproval));

    // Revise two shots: only they render again, and the cut comes back for review.
    let err = expect_err(
        client
            .icc()
            .request_revision(pb::RequestRevisionRequest {
                job_id: job.job_id.clone(),
                shot_ids: vec!["shot-99".into()],
                notes: String::new(),
            })
            .await,
    );
    assert_eq!(
        (err.code(), field_names(&err)),
        (Code::InvalidArgument, vec!["shot_ids[0]".to_string()])
    );
    let revised = client
        .icc()
        .request_revision(pb::RequestRevisionRequest {
            job_id: job.job_id.clone(),
            shot_ids: vec!["shot-01".into(), "shot-05".into()],
            notes: "warmer light, slower camera".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(revised.state, Rendering as i32);
    let after = events.last().unwrap().sequence;
    let more = watch_until(&client, &job.job_id, after, |e| {
        e.state == AwaitingFinalApproval as i32
    })
    .await;
    let mut rerendered: Vec<_> = more
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::job_event::Payload::ShotRendered(s)) => Some(s.shot_id.clone()),
            _ => None,
        })
        .collect();
    rerendered.sort(); // the two shots render in parallel
    assert_eq!(rerendered, ["shot-01", "shot-05"]);

    let delivered = client
        .icc()
        .approve_delivery(pb::ApproveDeliveryRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(delivered.state, Delivered as i32);
    let all = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&all);
    assert_eq!(
        states(&all),
        [
            Queued,
            Planning,
            AwaitingApproval,
            Rendering,
            QualityCheck,
            AwaitingFinalApproval,
            Rendering,
            QualityCheck,
            AwaitingFinalApproval,
            Delivered
        ]
    );
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert_eq!(
        report
            .ledger
            .iter()
            .filter(|l| l.kind == pb::LedgerKind::Rerender as i32)
            .count(),
        2
    );
    let err = expect_err(
        client
            .icc()
            .approve_delivery(pb::ApproveDeliveryRequest {
                job_id: job.job_id.clone(),
            })
            .await,
    );
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn create_job_names_every_invalid_field() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let err = expect_err(
        client
            .render()
            // (An empty request_id would be filled by the SDK: send a malformed one.)
            .create_job(pb::CreateJobRequest {
                request_id: "not a valid id!".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(fields, ["brief", "preset_id", "request_id"]);

    let mut labels = std::collections::HashMap::new();
    labels.insert("Bad Key".to_string(), "v".to_string());
    let err = expect_err(
        client
            .render()
            .create_job(pb::CreateJobRequest {
                request_id: "has spaces".into(),
                preset_id: "quick_social".into(),
                brief: "short".into(),
                duration_s: Some(1000),
                language: "xx".into(),
                budget_micros: Some(0),
                aspect_ratio: 42,
                brand_id: "x".repeat(200),
                labels,
                ..Default::default()
            })
            .await,
    );
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "aspect_ratio",
            "brand_id",
            "brief",
            "budget_micros",
            "duration_s",
            "labels[\"Bad Key\"]",
            "language",
            "request_id"
        ]
    );
    // Oversized (but decodable) brief.
    let err = expect_err(
        client
            .render()
            .create_job(pb::CreateJobRequest {
                brief: "b".repeat(10_001),
                ..create_request("big", "quick_social")
            })
            .await,
    );
    assert_eq!(field_names(&err), ["brief"]);
    // A message over the transport limit is refused and the server stays healthy.
    let err = expect_err(
        client
            .render()
            .create_job(pb::CreateJobRequest {
                brief: "b".repeat(5 << 20),
                ..create_request("huge", "quick_social")
            })
            .await,
    );
    assert!(
        matches!(
            err.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{err}"
    );
    client
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .expect("still healthy");
    // A budget the quote cannot fit.
    let err = expect_err(
        client
            .render()
            .create_job(pb::CreateJobRequest {
                budget_micros: Some(100_000),
                ..create_request("poor", "brand_campaign")
            })
            .await,
    );
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn create_job_is_idempotent_under_concurrency() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let calls = (0..50).map(|_| {
        let client = client.clone();
        async move {
            create(&client, create_request("same-request", "brand_campaign"))
                .await
                .job_id
        }
    });
    let ids = futures::future::join_all(calls).await;
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "one job for one request_id"
    );
    let listed = client
        .render()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 1);
    // The same id with a different request is refused.
    let err = expect_err(
        client
            .render()
            .create_job(pb::CreateJobRequest {
                brief: format!("{BRIEF} Different."),
                ..create_request("same-request", "brand_campaign")
            })
            .await,
    );
    assert_eq!(
        (err.code(), field_names(&err)),
        (Code::InvalidArgument, vec!["request_id".to_string()])
    );
}

#[tokio::test]
async fn list_jobs_pages_newest_first_and_filters() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut req = create_request(
            &format!("list-{i}"),
            if i % 2 == 0 {
                "brand_campaign"
            } else {
                "quick_social"
            },
        );
        req.labels
            .insert("batch".into(), if i < 3 { "a".into() } else { "b".into() });
        ids.push(create(&client, req).await.job_id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .render()
            .list_jobs(pb::ListJobsRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.into_iter().map(|j| j.job_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "newest first, every job once");
    let all: Vec<_> = client
        .list_all_jobs(pb::ListJobsRequest {
            page_size: 2,
            ..Default::default()
        })
        .map(|j| j.unwrap().job_id)
        .collect()
        .await;
    assert_eq!(all, ids);

    let mut labels = std::collections::HashMap::new();
    labels.insert("batch".to_string(), "b".to_string());
    let b = client
        .render()
        .list_jobs(pb::ListJobsRequest {
            labels,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.jobs.len(), 2);
    let quick = client
        .render()
        .list_jobs(pb::ListJobsRequest {
            preset_id: "quick_social".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quick.jobs.len(), 2);
    // Wait until the brand_campaign jobs settle in review, then filter by state.
    for id in &ids {
        wait_for_state(&client, id, AwaitingApproval).await;
    }
    let waiting = client
        .render()
        .list_jobs(pb::ListJobsRequest {
            states: vec![AwaitingApproval as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waiting.jobs.len(), 3);

    let err = expect_err(
        client
            .render()
            .list_jobs(pb::ListJobsRequest {
                page_size: 101,
                page_token: "garbage".into(),
                states: vec![99],
                ..Default::default()
            })
            .await,
    );
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(fields, ["page_size", "page_token", "states[0]"]);
}

#[tokio::test]
async fn cancel_mid_render_bills_only_done_work() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(test_config(&dir, 40), dir).await;
    let client = server.platinum("acme").await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("cancel-1", "brand_campaign")
        },
    )
    .await;
    let before = watch_until(&client, &job.job_id, 0, |e| {
        matches!(e.payload, Some(pb::job_event::Payload::ShotRendered(_)))
    })
    .await;
    let cancelled = client
        .render()
        .cancel_job(pb::CancelJobRequest {
            job_id: job.job_id.clone(),
            reason: "campaign pulled".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(cancelled.state, Cancelled as i32);
    let events = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&events);
    assert!(events.len() >= before.len());
    let Some(pb::job_event::Payload::Cancelled(c)) = &events.last().unwrap().payload else {
        panic!("ends with Cancelled")
    };
    assert_eq!(c.reason, "campaign pulled");
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    let rendered = report
        .ledger
        .iter()
        .filter(|l| l.kind == pb::LedgerKind::Render as i32)
        .count();
    assert!(
        rendered < 6,
        "the cancelled job did not render every shot ({rendered})"
    );
    assert_eq!(c.billed_micros, report.billed_micros);
    assert!(report.billed_micros < report.quote_micros);

    // Cancelling again is a no-op; a delivered job cannot be cancelled.
    let again = client
        .render()
        .cancel_job(pb::CancelJobRequest {
            job_id: job.job_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(
        (again.state, again.last_sequence),
        (Cancelled as i32, cancelled.last_sequence)
    );
    let quick = create(&client, create_request("cancel-2", "quick_social")).await;
    watch_to_end(&client, &quick.job_id, 0).await;
    let err = expect_err(
        client
            .render()
            .cancel_job(pb::CancelJobRequest {
                job_id: quick.job_id.clone(),
                reason: String::new(),
            })
            .await,
    );
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.details().precondition_failure().is_some());
}

#[tokio::test]
async fn watchers_resume_without_loss_and_fan_out() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(test_config(&dir, 10), dir).await;
    let client = server.platinum("acme").await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("watch-1", "brand_campaign")
        },
    )
    .await;

    // Five concurrent watchers, and one that disconnects every 3 events and resumes.
    let watchers: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            let id = job.job_id.clone();
            tokio::spawn(async move { watch_to_end(&client, &id, 0).await })
        })
        .collect();
    let mut resumed = Vec::new();
    loop {
        let after = resumed.last().map_or(0, |e: &pb::JobEvent| e.sequence);
        let mut stream = Box::pin(client.watch_job(job.job_id.clone(), after));
        let mut n = 0;
        let mut ended = false;
        while let Some(e) = stream.next().await {
            let e = e.unwrap();
            ended = aiprod_sdk::is_terminal(e.state);
            resumed.push(e);
            n += 1;
            if n == 3 || ended {
                break;
            }
        }
        drop(stream); // a real disconnect: the RPC is cancelled
        if ended {
            break;
        }
    }
    let full = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&full);
    assert_eq!(
        resumed, full,
        "resuming reconstructs exactly the committed log"
    );
    for w in watchers {
        assert_eq!(w.await.unwrap(), full, "every watcher sees the same log");
    }
    // Replays after the end, and refuses a sequence beyond the log.
    let tail = watch_to_end(&client, &job.job_id, full.len() as u64 - 1).await;
    assert_eq!(tail.len(), 1);
    let err = expect_err(
        client
            .render()
            .watch_job(pb::WatchJobRequest {
                job_id: job.job_id.clone(),
                after_sequence: 10_000,
            })
            .await,
    );
    assert_eq!(
        (err.code(), field_names(&err)),
        (Code::InvalidArgument, vec!["after_sequence".to_string()])
    );
}
