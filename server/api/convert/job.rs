//! Jobs, their files and their events; CreateJob's request.

use super::{aspect_from, aspect_pb, backend_pb, duration_pb, failure_pb, quote_pb, state_pb, ts};
use crate::app::artifacts::DownloadLinks;
use crate::app::jobs::NewJob;
use crate::domain::Money;
use crate::domain::catalog::Catalog;
use crate::domain::job::{Event, EventKind, Job, JobSpec, ShotProgress, Video};
use crate::domain::media::{Artifact, Measurement};
use crate::domain::spec;
use crate::domain::validate::Violations;
use crate::error::{Error, Result};
use crate::pb;

/// A stored file as the API shows it; `resource_name` is its ByteStream name.
fn artifact_pb(
    resource_name: &str,
    shot_count: u32,
    a: &Artifact,
    links: &DownloadLinks,
) -> pb::VideoArtifact {
    let (download_url, expire) = match links.get(&a.key) {
        Some((url, expire_ms)) => (url.clone(), Some(ts(*expire_ms))),
        None => (String::new(), None),
    };
    #[allow(deprecated)] // `uri` is still filled for clients that read it.
    pb::VideoArtifact {
        uri: resource_name.to_string(),
        duration_s: ((a.duration_ms + 500) / 1000) as u32,
        sha256: a.sha256.clone(),
        shot_count,
        resource_name: resource_name.to_string(),
        size_bytes: a.size,
        width: a.width,
        height: a.height,
        frame_rate: a.fps,
        frame_count: a.frame_count,
        duration: Some(duration_pb(a.duration_ms)),
        codec: a.codec.clone(),
        mime_type: a.mime_type.clone(),
        poster_resource_name: if a.poster.is_some() {
            crate::app::artifacts::poster_name(resource_name)
        } else {
            String::new()
        },
        download_url,
        download_url_expire_time: expire,
    }
}

fn video_pb(v: &Video, links: &DownloadLinks) -> pb::VideoArtifact {
    match &v.artifact {
        Some(a) => artifact_pb(&v.uri, v.shot_count, a, links),
        #[allow(deprecated)]
        None => pb::VideoArtifact {
            uri: v.uri.clone(),
            duration_s: v.duration_s,
            sha256: v.sha256.clone(),
            shot_count: v.shot_count,
            ..Default::default()
        },
    }
}

pub fn measurement_pb(m: &Measurement) -> pb::QualityMeasurement {
    pb::QualityMeasurement {
        decodable: m.decodable,
        decoded_frames: m.decoded_frames,
        expected_frames: m.expected_frames,
        duration: Some(duration_pb(m.duration_ms)),
        width: m.width,
        height: m.height,
        black_frame_ratio: m.black_frame_ratio,
        frozen_frame_ratio: m.frozen_frame_ratio,
        sharpness: m.sharpness,
        contrast: m.contrast,
        passed: m.passed(),
        failures: m.failures.clone(),
    }
}

fn shot_status_pb(s: &ShotProgress, links: &DownloadLinks) -> pb::ShotStatus {
    let result = s.result.as_ref();
    let backend = s
        .task
        .as_ref()
        .map(|t| t.backend)
        .or(result.map(|r| r.backend));
    pb::ShotStatus {
        shot_id: s.shot_id.clone(),
        duration_s: s.duration_s,
        rendered: result.is_some() && !s.needs_render,
        backend: backend.map_or(pb::Backend::Unspecified, backend_pb) as i32,
        attempts: s.attempts,
        quality: result.map_or(0.0, |r| r.quality),
        passed: s.passed,
        measurement: result
            .and_then(|r| r.measurement.as_ref())
            .map(measurement_pb),
        clip: result.and_then(|r| {
            r.artifact
                .as_ref()
                .map(|a| artifact_pb(&r.uri, 1, a, links))
        }),
    }
}

pub fn job_pb(j: &Job) -> pb::Job {
    job_pb_with(j, &DownloadLinks::default())
}

/// A job with presigned download URLs for its files (GetJob, when the store is remote).
pub fn job_pb_with(j: &Job, links: &DownloadLinks) -> pb::Job {
    pb::Job {
        job_id: j.id.clone(),
        request_id: j.request_id.clone(),
        preset_id: j.spec.preset_id.clone(),
        state: state_pb(j.state) as i32,
        brief: j.spec.brief.clone(),
        brand_id: j.spec.brand_id.clone(),
        duration_s: j.spec.duration_s,
        aspect_ratio: aspect_pb(j.spec.aspect_ratio) as i32,
        language: j.spec.language.clone(),
        budget_micros: j.spec.budget.map(Money::micros),
        auto_approve: j.spec.auto_approve,
        labels: j.spec.labels.clone().into_iter().collect(),
        quote: j.quote.as_ref().map(quote_pb),
        shots_total: j.manifest.as_ref().map_or(0, |m| m.shots.len() as u32),
        shots_rendered: j.shots_rendered(),
        failure_reason: j.failure.map_or(pb::FailureReason::Unspecified, failure_pb) as i32,
        status_message: j.status_message.clone(),
        video: j.video.as_ref().map(|v| video_pb(v, links)),
        sla_met: j.sla_met,
        last_sequence: j.last_seq,
        create_time: Some(ts(j.created_ms)),
        update_time: Some(ts(j.updated_ms)),
        sandbox: j.sandbox,
        shots: j.shots.iter().map(|s| shot_status_pb(s, links)).collect(),
    }
}

pub fn event_pb(e: &Event) -> pb::JobEvent {
    use pb::job_event::Payload;
    let payload = match &e.kind {
        EventKind::StateChanged { from, to } => Payload::StateChanged(pb::StateChanged {
            from_state: from.map_or(pb::JobState::Unspecified, state_pb) as i32,
            to_state: state_pb(*to) as i32,
        }),
        EventKind::ManifestReady {
            revision,
            shot_count,
            quote,
            brand_cache_hit,
        } => Payload::ManifestReady(pb::ManifestReady {
            revision: *revision,
            shot_count: *shot_count,
            quote_micros: quote.micros(),
            brand_cache_hit: *brand_cache_hit,
        }),
        EventKind::ManifestUpdated {
            revision,
            quote,
            changed_fields,
        } => Payload::ManifestUpdated(pb::ManifestUpdated {
            revision: *revision,
            quote_micros: quote.micros(),
            changed_fields: changed_fields.clone(),
        }),
        EventKind::ShotStarted {
            shot_id,
            backend,
            attempt,
        } => Payload::ShotStarted(pb::ShotStarted {
            shot_id: shot_id.clone(),
            backend: backend_pb(*backend) as i32,
            attempt: *attempt,
        }),
        EventKind::ShotRendered {
            shot_id,
            backend,
            duration_s,
            cost,
            quality,
            attempt,
            clip,
            measurement,
        } => Payload::ShotRendered(pb::ShotRendered {
            shot_id: shot_id.clone(),
            backend: backend_pb(*backend) as i32,
            duration_s: *duration_s,
            cost_micros: cost.micros(),
            quality: *quality,
            attempt: *attempt,
            clip: clip.as_ref().map(|a| {
                artifact_pb(
                    &crate::app::artifacts::shot_clip_name(&e.job_id, shot_id),
                    1,
                    a,
                    &DownloadLinks::default(),
                )
            }),
            measurement: measurement.as_ref().map(measurement_pb),
        }),
        EventKind::BackendFallback {
            shot_id,
            from,
            to,
            reason,
        } => Payload::BackendFallback(pb::BackendFallback {
            shot_id: shot_id.clone(),
            from_backend: backend_pb(*from) as i32,
            to_backend: to.map_or(pb::Backend::Unspecified, backend_pb) as i32,
            reason: reason.clone(),
        }),
        EventKind::CostUpdated { metered, quote } => Payload::CostUpdated(pb::CostUpdated {
            metered_micros: metered.micros(),
            quote_micros: quote.micros(),
        }),
        EventKind::QualityChecked {
            shot_id,
            quality,
            threshold,
            passed,
            rerender,
            measurement,
            backend,
            attempt,
        } => Payload::QualityChecked(pb::QualityChecked {
            shot_id: shot_id.clone(),
            quality: *quality,
            threshold: *threshold,
            passed: *passed,
            rerender: *rerender,
            measurement: measurement.as_ref().map(measurement_pb),
            backend: backend.map_or(pb::Backend::Unspecified, backend_pb) as i32,
            attempt: *attempt,
        }),
        EventKind::BudgetAlert {
            threshold_percent,
            spent,
            budget,
        } => Payload::BudgetAlert(pb::BudgetAlert {
            threshold_percent: *threshold_percent,
            spent_micros: spent.micros(),
            budget_micros: budget.micros(),
        }),
        EventKind::Delivered {
            video,
            billed,
            sla_met,
        } => Payload::Delivered(pb::Delivered {
            video: Some(video_pb(video, &DownloadLinks::default())),
            billed_micros: billed.micros(),
            sla_met: *sla_met,
        }),
        EventKind::Failed { reason, message } => Payload::Failed(pb::Failed {
            reason: failure_pb(*reason) as i32,
            message: message.clone(),
        }),
        EventKind::Cancelled { reason, billed } => Payload::Cancelled(pb::Cancelled {
            reason: reason.clone(),
            billed_micros: billed.micros(),
        }),
    };
    pb::JobEvent {
        job_id: e.job_id.clone(),
        sequence: e.seq,
        create_time: Some(ts(e.at_ms)),
        state: state_pb(e.state) as i32,
        payload: Some(payload),
    }
}

pub fn create_job_input(r: pb::CreateJobRequest, catalog: &Catalog) -> Result<NewJob> {
    let mut v = Violations::new();
    v.identifier("request_id", &r.request_id, 128, "._:-", true);
    let preset = spec::check_preset(catalog, &r.preset_id, &mut v);
    v.text(
        "brief",
        &r.brief,
        spec::MIN_BRIEF_CHARS,
        spec::MAX_BRIEF_CHARS,
    );
    v.identifier("brand_id", &r.brand_id, 128, "._-", false);
    let duration_s = spec::check_duration(preset, r.duration_s, &mut v);
    let aspect = aspect_from(r.aspect_ratio);
    v.check(
        aspect.is_ok(),
        "aspect_ratio",
        "is not a known aspect ratio",
    );
    let language = spec::check_language(&r.language, &mut v);
    let budget = spec::check_budget(r.budget_micros, &mut v);
    let labels = spec::check_labels(r.labels, &mut v);
    v.finish().map_err(Error::InvalidArgument)?;
    Ok(NewJob {
        request_id: r.request_id,
        spec: JobSpec {
            preset_id: r.preset_id,
            brief: r.brief,
            brand_id: r.brand_id,
            duration_s,
            aspect_ratio: aspect.ok().flatten().unwrap_or_default(),
            language,
            budget,
            auto_approve: r.auto_approve,
            labels,
        },
    })
}
