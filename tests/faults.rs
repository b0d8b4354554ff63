//! Faults inside the pipeline: a step that keeps failing ends the job with a typed reason instead
//! of retrying forever.

use crate::harness::*;
use aiprod_sdk::pb;
use std::sync::Arc;

#[tokio::test]
async fn a_step_that_keeps_failing_fails_the_job_with_a_typed_reason() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, 2);
    config.pipeline_step_max_failures = 3;
    let db = config.database_url.clone();
    let server = TestServer::start_with(config, dir).await;
    let (tenant_id, _, client) = server.tenant("acme", pb::Tier::Platinum).await;
    // A corrupt cache row makes the planning step fail every time (a decode error: INTERNAL).
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO brand_markers (tenant_id, brand_id, doc, expires_ms) VALUES ($1, 'acme-shoes', 'not json', $2)",
    )
    .bind(&tenant_id)
    .bind(i64::MAX / 2)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("stuck-1", "brand_campaign")
        },
    )
    .await;
    let events = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&events);
    assert_eq!(states(&events).last(), Some(&pb::JobState::Failed));
    let failed = events
        .iter()
        .find_map(|e| match &e.payload {
            Some(pb::job_event::Payload::Failed(f)) => Some(f.clone()),
            _ => None,
        })
        .expect("a Failed event");
    assert_eq!(failed.reason, pb::FailureReason::Internal as i32);
    assert!(
        !failed.message.contains("json") && !failed.message.contains("expected"),
        "no internals reach the partner: {}",
        failed.message
    );
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
    assert_eq!(job.failure_reason, pb::FailureReason::Internal as i32);
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
}
