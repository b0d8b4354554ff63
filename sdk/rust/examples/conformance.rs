//! The conformance scenario, identical in every SDK: estimate → create → read and edit the manifest
//! (a stale etag is refused) → approve → watch with a forced disconnect and resume → certified costs,
//! plus an INVALID_ARGUMENT with field violations and a NOT_FOUND.
//!
//! Run against a server: `AIPROD_ENDPOINT=http://127.0.0.1:50051 AIPROD_API_KEY=aiprod_test_… \
//! AIPROD_OTHER_API_KEY=aiprod_test_… cargo run -p aiprod-sdk --example conformance`
//! (or point `AIPROD_ENV_FILE` at the env file written by `scripts/test-server.sh`).

use aiprod_sdk::{Client, Code, Error, StreamExt, pb};
use std::collections::HashMap;

fn setting(name: &str, file: &HashMap<String, String>) -> String {
    std::env::var(name)
        .ok()
        .or_else(|| file.get(name).cloned())
        .unwrap_or_else(|| panic!("{name} is not set"))
}

fn env_file() -> HashMap<String, String> {
    let Ok(path) = std::env::var("AIPROD_ENV_FILE") else {
        return HashMap::new();
    };
    std::fs::read_to_string(path)
        .expect("AIPROD_ENV_FILE is readable")
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn check(ok: bool, what: &str) {
    assert!(ok, "conformance check failed: {what}");
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let file = env_file();
    let endpoint = setting("AIPROD_ENDPOINT", &file);
    let api_key = setting("AIPROD_API_KEY", &file);
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);

    // [START quickstart]
    let client = Client::connect(endpoint.clone(), &api_key).await?;

    // 1. Quote before spending anything.
    let estimate = client
        .costs()
        .estimate_cost(pb::EstimateCostRequest {
            preset_id: "brand_campaign".into(),
            duration_s: Some(60),
            ..Default::default()
        })
        .await?
        .into_inner();
    let quote = estimate.recommended.clone().unwrap_or_default();
    println!(
        "quote ${:.2} (at most ${:.2})",
        quote.total_micros as f64 / 1e6,
        quote.guaranteed_max_micros as f64 / 1e6
    );

    // 2. Create the job (idempotent by request_id).
    let request = pb::CreateJobRequest {
        request_id: format!("conformance-rust-{run_id}"),
        preset_id: "brand_campaign".into(),
        brief: "Launch film for our trail running shoe: dawn in the mountains, fast feet.".into(),
        brand_id: "acme-shoes".into(),
        duration_s: Some(60),
        labels: HashMap::from([("campaign".to_string(), "conformance".to_string())]),
        ..Default::default()
    };
    let job = client
        .render()
        .create_job(request.clone())
        .await?
        .into_inner()
        .job
        .unwrap_or_default();

    // 3. Wait for the production manifest, then approve it.
    let mut events = Vec::new();
    let mut stream = Box::pin(client.watch_job(job.job_id.clone(), 0));
    while let Some(event) = stream.next().await {
        let event = event?;
        let waiting = event.state == pb::JobState::AwaitingApproval as i32;
        events.push(event);
        if waiting {
            break;
        }
    }
    drop(stream);
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
            etag: manifest.etag.clone(),
        })
        .await?;

    // 4. Watch to delivery, then read the certified cost report.
    let last = events.last().map_or(0, |e| e.sequence);
    let mut stream = Box::pin(client.watch_job(job.job_id.clone(), last));
    while let Some(event) = stream.next().await {
        events.push(event?);
    }
    let report = client
        .costs()
        .get_job_costs(pb::GetJobCostsRequest {
            job_id: job.job_id.clone(),
        })
        .await?
        .into_inner()
        .report
        .unwrap_or_default();
    println!(
        "billed ${:.2} of a ${:.2} guarantee",
        report.billed_micros as f64 / 1e6,
        report.guaranteed_max_micros as f64 / 1e6
    );

    // 5. Download the video: resumed after a dropped connection, SHA-256 verified.
    let video = client.download_video(&job.job_id, "video.mp4").await?;
    println!(
        "video.mp4: {} bytes, {}x{}, {} frames, sha256 {}",
        video.size_bytes, video.width, video.height, video.frame_count, video.sha256
    );
    // [END quickstart]
    let bytes = std::fs::read("video.mp4").expect("the downloaded file");
    check(
        bytes.len() as u64 == video.size_bytes && &bytes[4..8] == b"ftyp",
        "the video is an MP4 of the announced size",
    );
    check(
        video.frame_count > 0 && video.mime_type == "video/mp4",
        "video metadata",
    );
    let delivered = client
        .render()
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    let first_shot = delivered.shots.first().cloned().unwrap_or_default();
    let clip = client
        .download_shot_clip(&job.job_id, &first_shot.shot_id, "shot.mp4")
        .await?;
    check(
        Some(&clip) == first_shot.clip.as_ref() && clip.frame_count > 0,
        "a shot clip downloads",
    );

    // The checks every SDK's scenario makes, on a second job that is edited before approval.
    let presets = client
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await?
        .into_inner()
        .presets;
    let ids: Vec<_> = presets.iter().map(|p| p.preset_id.as_str()).collect();
    check(
        ids == ["quick_social", "brand_campaign", "premium_spot"],
        "three presets",
    );
    check(
        quote.total_micros > 0 && quote.guaranteed_max_micros >= quote.total_micros,
        "quote and guarantee",
    );
    check(estimate.options.len() == 3, "one option per backend");
    check(
        job.state == pb::JobState::Queued as i32,
        "a new job is QUEUED",
    );
    let again = client
        .render()
        .create_job(request)
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    check(again.job_id == job.job_id, "same request_id, same job");
    check(
        !manifest.shots.is_empty() && !manifest.etag.is_empty() && manifest.revision == 1,
        "manifest revision 1",
    );

    let second = client
        .render()
        .create_job(pb::CreateJobRequest {
            request_id: format!("conformance-rust-edit-{run_id}"),
            preset_id: "brand_campaign".into(),
            brief: "Autumn range teaser: warm light, city streets, a runner at dusk.".into(),
            brand_id: "acme-shoes".into(),
            duration_s: Some(60),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    let mut seen = Vec::new();
    let mut stream = Box::pin(client.watch_job(second.job_id.clone(), 0));
    while let Some(event) = stream.next().await {
        let event = event?;
        let waiting = event.state == pb::JobState::AwaitingApproval as i32;
        seen.push(event);
        if waiting {
            break;
        }
    }
    drop(stream);
    let m1 = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: second.job_id.clone(),
        })
        .await?
        .into_inner()
        .manifest
        .unwrap_or_default();
    let mut shots = m1.shots.clone();
    shots[0].description = "Opening: the city wakes up, a runner laces up".into();
    let edit = |etag: String, shots: Vec<pb::Shot>| pb::UpdateManifestRequest {
        job_id: second.job_id.clone(),
        manifest: Some(pb::Manifest {
            audio_style: "upbeat acoustic".into(),
            shots,
            ..Default::default()
        }),
        update_mask: Some(aiprod_sdk::prost_types::FieldMask {
            paths: vec!["audio_style".into(), "shots".into()],
        }),
        etag,
    };
    let updated = client
        .icc()
        .update_manifest(edit(m1.etag.clone(), shots.clone()))
        .await?
        .into_inner();
    let m2 = updated.manifest.unwrap_or_default();
    check(
        m2.revision == 2 && m2.etag != m1.etag && updated.quote.is_some(),
        "an edit makes revision 2 with a new quote",
    );
    let stale = client
        .icc()
        .update_manifest(edit(m1.etag.clone(), shots))
        .await;
    check(
        stale.err().map(|e| e.code()) == Some(Code::Aborted),
        "a stale etag is ABORTED",
    );
    let approved = client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id: second.job_id.clone(),
            etag: m2.etag,
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    check(
        approved.state == pb::JobState::Rendering as i32,
        "approval starts rendering",
    );

    // Resume from the remembered sequence, drop the stream after two events, resume again.
    let mut stream =
        Box::pin(client.watch_job(second.job_id.clone(), seen.last().map_or(0, |e| e.sequence)));
    for _ in 0..2 {
        if let Some(event) = stream.next().await {
            seen.push(event?);
        }
    }
    drop(stream); // a real disconnect: the RPC is cancelled mid-stream
    let mut stream =
        Box::pin(client.watch_job(second.job_id.clone(), seen.last().map_or(0, |e| e.sequence)));
    while let Some(event) = stream.next().await {
        seen.push(event?);
    }
    for all in [&events, &seen] {
        check(
            all.iter()
                .enumerate()
                .all(|(i, e)| e.sequence == i as u64 + 1),
            "sequences 1..N without gaps or duplicates",
        );
        let mut states: Vec<i32> = Vec::new();
        for e in all.iter() {
            if states.last() != Some(&e.state) {
                states.push(e.state);
            }
        }
        use pb::JobState::*;
        let expected = [
            Queued,
            Planning,
            AwaitingApproval,
            Rendering,
            QualityCheck,
            Delivered,
        ]
        .map(|s| s as i32);
        check(states == expected, "states in order");
    }
    let costs = client
        .costs()
        .get_job_costs(pb::GetJobCostsRequest {
            job_id: second.job_id.clone(),
        })
        .await?
        .into_inner()
        .report
        .unwrap_or_default();
    for r in [&report, &costs] {
        check(
            r.certified
                && r.within_guarantee
                && r.billed_micros <= r.guaranteed_max_micros
                && r.metered_micros > 0,
            "certified costs within the guarantee",
        );
    }

    let invalid = client
        .render()
        .create_job(pb::CreateJobRequest {
            preset_id: "quick_social".into(),
            duration_s: Some(1000),
            ..Default::default()
        })
        .await
        .expect_err("an invalid request is refused");
    let fields: Vec<_> = invalid
        .field_violations()
        .into_iter()
        .map(|v| v.field)
        .collect();
    check(invalid.code() == Code::InvalidArgument, "INVALID_ARGUMENT");
    check(
        // No request_id here: the SDK fills one (the idempotency key of its retries).
        ["brief", "duration_s"]
            .iter()
            .all(|f| fields.iter().any(|x| x == f)),
        "field violations name brief and duration_s",
    );
    let missing = client
        .render()
        .get_job(pb::GetJobRequest {
            job_id: "job_does_not_exist".into(),
        })
        .await;
    check(
        missing.err().map(|e| e.code()) == Some(Code::NotFound),
        "a missing job is NOT_FOUND",
    );
    let other = Client::connect(endpoint, &setting("AIPROD_OTHER_API_KEY", &file)).await?;
    let foreign = other
        .render()
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await;
    check(
        foreign.err().map(|e| e.code()) == Some(Code::NotFound),
        "another tenant's job is NOT_FOUND",
    );
    let mut foreign_read = other
        .bytestream()
        .read(aiprod_sdk::bytestream::ReadRequest {
            resource_name: video.resource_name.clone(),
            ..Default::default()
        })
        .await;
    if let Ok(stream) = &mut foreign_read {
        // Errors may also arrive as the stream's first message.
        let first = stream.get_mut().next().await;
        foreign_read = match first {
            Some(Err(e)) => Err(e),
            _ => foreign_read,
        };
    }
    check(
        foreign_read.err().map(|e| e.code()) == Some(Code::NotFound),
        "another tenant's video is NOT_FOUND",
    );

    println!(
        "rust conformance: 2 jobs delivered, {} + {} events without gaps, all checks passed",
        events.len(),
        seen.len()
    );
    Ok(())
}
