//! Conversions between `aiprod.v1` messages and domain types, and request validation that collects
//! every field violation of a request.

use crate::app::artifacts::DownloadLinks;
use crate::app::estimate::{Estimate, EstimateInput};
use crate::app::jobs::NewJob;
use crate::domain::catalog::{Catalog, Pipeline, PresetSpec, Priority};
use crate::domain::job::{
    Event, EventKind, FailureReason, Job, JobSpec, LedgerEntry, LedgerKind, ShotProgress, Video,
};
use crate::domain::manifest::{
    self, AspectRatio, Camera, CharacterStyle, Lighting, Markers, Mood, Shot, Style,
};
use crate::domain::media::{Artifact, Measurement};
use crate::domain::pricing::Quote;
use crate::domain::tenant::{ApiKey, KeyMode, Tenant, Trial};
use crate::domain::validate::Violations;
use crate::domain::{Backend, JobState, Money, Tier};
use crate::error::{Error, Result};
use crate::pb;
use std::collections::BTreeMap;

pub const LANGUAGES: [&str; 9] = ["en", "fr", "es", "de", "it", "pt", "ja", "zh", "ko"];
pub const MIN_DURATION_S: u32 = 5;
pub const MAX_DURATION_S: u32 = 300;
pub const MIN_BRIEF_CHARS: usize = 10;
pub const MAX_BRIEF_CHARS: usize = 10_000;

pub fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
}

// ---- enums ----

pub fn backend_pb(b: Backend) -> pb::Backend {
    match b {
        Backend::Runway => pb::Backend::Runway,
        Backend::Veo => pb::Backend::Veo,
        Backend::Replicate => pb::Backend::Replicate,
    }
}

/// `Ok(None)` for UNSPECIFIED, `Err` for a number outside the enum.
/// An enum number outside the enum.
#[derive(Debug, Clone, Copy)]
pub struct UnknownEnumValue;

pub fn backend_from(v: i32) -> std::result::Result<Option<Backend>, UnknownEnumValue> {
    match pb::Backend::try_from(v).map_err(|_| UnknownEnumValue)? {
        pb::Backend::Unspecified => Ok(None),
        pb::Backend::Runway => Ok(Some(Backend::Runway)),
        pb::Backend::Veo => Ok(Some(Backend::Veo)),
        pb::Backend::Replicate => Ok(Some(Backend::Replicate)),
    }
}

pub fn state_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Planning => pb::JobState::Planning,
        JobState::AwaitingApproval => pb::JobState::AwaitingApproval,
        JobState::Rendering => pb::JobState::Rendering,
        JobState::QualityCheck => pb::JobState::QualityCheck,
        JobState::AwaitingFinalApproval => pb::JobState::AwaitingFinalApproval,
        JobState::Delivered => pb::JobState::Delivered,
        JobState::Cancelled => pb::JobState::Cancelled,
        JobState::Failed => pb::JobState::Failed,
    }
}

pub fn state_from(v: i32) -> Option<JobState> {
    JobState::ALL.into_iter().find(|s| state_pb(*s) as i32 == v)
}

pub fn aspect_pb(a: AspectRatio) -> pb::AspectRatio {
    match a {
        AspectRatio::Landscape16x9 => pb::AspectRatio::AspectRatio169,
        AspectRatio::Portrait9x16 => pb::AspectRatio::AspectRatio916,
        AspectRatio::Square1x1 => pb::AspectRatio::AspectRatio11,
        AspectRatio::Portrait4x5 => pb::AspectRatio::AspectRatio45,
    }
}

pub fn aspect_from(v: i32) -> std::result::Result<Option<AspectRatio>, UnknownEnumValue> {
    match pb::AspectRatio::try_from(v).map_err(|_| UnknownEnumValue)? {
        pb::AspectRatio::Unspecified => Ok(None),
        pb::AspectRatio::AspectRatio169 => Ok(Some(AspectRatio::Landscape16x9)),
        pb::AspectRatio::AspectRatio916 => Ok(Some(AspectRatio::Portrait9x16)),
        pb::AspectRatio::AspectRatio11 => Ok(Some(AspectRatio::Square1x1)),
        pb::AspectRatio::AspectRatio45 => Ok(Some(AspectRatio::Portrait4x5)),
    }
}

fn camera_pb(c: Camera) -> pb::CameraMovement {
    match c {
        Camera::Static => pb::CameraMovement::Static,
        Camera::Pan => pb::CameraMovement::Pan,
        Camera::Dolly => pb::CameraMovement::Dolly,
        Camera::Zoom => pb::CameraMovement::Zoom,
        Camera::Orbital => pb::CameraMovement::Orbital,
    }
}

fn camera_from(v: i32) -> Option<Camera> {
    Camera::ALL.into_iter().find(|c| camera_pb(*c) as i32 == v)
}

pub fn tier_pb(t: Tier) -> pb::Tier {
    match t {
        Tier::Bronze => pb::Tier::Bronze,
        Tier::Gold => pb::Tier::Gold,
        Tier::Platinum => pb::Tier::Platinum,
    }
}

pub fn tier_from(v: i32) -> Option<Tier> {
    match pb::Tier::try_from(v).ok()? {
        pb::Tier::Bronze => Some(Tier::Bronze),
        pb::Tier::Gold => Some(Tier::Gold),
        pb::Tier::Platinum => Some(Tier::Platinum),
        pb::Tier::Unspecified => None,
    }
}

pub fn key_mode_from(v: i32) -> Option<KeyMode> {
    match pb::ApiKeyMode::try_from(v).ok()? {
        pb::ApiKeyMode::Live => Some(KeyMode::Live),
        pb::ApiKeyMode::Test => Some(KeyMode::Test),
        pb::ApiKeyMode::Unspecified => None,
    }
}

fn failure_pb(r: FailureReason) -> pb::FailureReason {
    match r {
        FailureReason::AllBackendsFailed => pb::FailureReason::AllBackendsFailed,
        FailureReason::BudgetExhausted => pb::FailureReason::BudgetExhausted,
        FailureReason::PlanningFailed => pb::FailureReason::PlanningFailed,
        FailureReason::Internal => pb::FailureReason::Internal,
    }
}

// ---- resources ----

pub fn preset_pb(p: &PresetSpec) -> pb::Preset {
    pb::Preset {
        preset_id: p.id.clone(),
        display_name: p.display_name.clone(),
        pipeline: match p.pipeline {
            Pipeline::FastTrack => pb::Pipeline::FastTrack,
            Pipeline::Full => pb::Pipeline::Full,
        } as i32,
        default_duration_s: p.default_duration_s,
        max_duration_s: p.max_duration_s,
        quality_threshold: p.quality_threshold,
        cost_cap_per_minute_micros: p.cost_cap_per_minute.micros(),
        manifest_review: p.manifest_review,
        brand_cache: p.brand_cache,
        final_review: p.final_review,
        priority: match p.priority {
            Priority::Low => pb::Priority::Low,
            Priority::Medium => pb::Priority::Medium,
            Priority::High => pb::Priority::High,
        } as i32,
    }
}

pub fn quote_pb(q: &Quote) -> pb::Quote {
    pb::Quote {
        total_micros: q.total.micros(),
        planner_micros: q.planner.micros(),
        shots: q
            .shots
            .iter()
            .map(|s| pb::ShotQuote {
                shot_id: s.shot_id.clone(),
                backend: backend_pb(s.backend) as i32,
                duration_s: s.duration_s,
                cost_micros: s.cost.micros(),
                quality: s.quality,
            })
            .collect(),
        guaranteed_max_micros: q.guaranteed_max().micros(),
        tolerance_percent: q.tolerance_percent,
        expected_quality: if q.shots.is_empty() {
            0.0
        } else {
            q.expected_quality()
        },
        expected_render_seconds: q.expected_render_seconds,
    }
}

fn duration_pb(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

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

pub fn markers_pb(m: &Markers) -> pb::ConsistencyMarkers {
    pb::ConsistencyMarkers {
        style: match m.style {
            Style::Modern => pb::VisualStyle::Modern,
            Style::Classic => pb::VisualStyle::Classic,
            Style::Minimal => pb::VisualStyle::Minimal,
        } as i32,
        color_palette: m.color_palette.clone(),
        mood: match m.mood {
            Mood::Dynamic => pb::Mood::Dynamic,
            Mood::Calm => pb::Mood::Calm,
            Mood::Dramatic => pb::Mood::Dramatic,
        } as i32,
        lighting: match m.lighting {
            Lighting::Bright => pb::Lighting::Bright,
            Lighting::Dark => pb::Lighting::Dark,
            Lighting::Natural => pb::Lighting::Natural,
        } as i32,
        character_style: match m.character_style {
            CharacterStyle::Realistic => pb::CharacterStyle::Realistic,
            CharacterStyle::Cartoon => pb::CharacterStyle::Cartoon,
            CharacterStyle::Abstract => pb::CharacterStyle::Abstract,
        } as i32,
    }
}

/// Validates markers sent by a partner (every field required).
pub fn markers_from(
    m: Option<&pb::ConsistencyMarkers>,
    field: &str,
    v: &mut Violations,
) -> Option<Markers> {
    let Some(m) = m else {
        v.add(field, "is required");
        return None;
    };
    let style = match pb::VisualStyle::try_from(m.style) {
        Ok(pb::VisualStyle::Modern) => Some(Style::Modern),
        Ok(pb::VisualStyle::Classic) => Some(Style::Classic),
        Ok(pb::VisualStyle::Minimal) => Some(Style::Minimal),
        _ => None,
    };
    let mood = match pb::Mood::try_from(m.mood) {
        Ok(pb::Mood::Dynamic) => Some(Mood::Dynamic),
        Ok(pb::Mood::Calm) => Some(Mood::Calm),
        Ok(pb::Mood::Dramatic) => Some(Mood::Dramatic),
        _ => None,
    };
    let lighting = match pb::Lighting::try_from(m.lighting) {
        Ok(pb::Lighting::Bright) => Some(Lighting::Bright),
        Ok(pb::Lighting::Dark) => Some(Lighting::Dark),
        Ok(pb::Lighting::Natural) => Some(Lighting::Natural),
        _ => None,
    };
    let character_style = match pb::CharacterStyle::try_from(m.character_style) {
        Ok(pb::CharacterStyle::Realistic) => Some(CharacterStyle::Realistic),
        Ok(pb::CharacterStyle::Cartoon) => Some(CharacterStyle::Cartoon),
        Ok(pb::CharacterStyle::Abstract) => Some(CharacterStyle::Abstract),
        _ => None,
    };
    v.check(
        style.is_some(),
        format!("{field}.style"),
        "must be MODERN, CLASSIC or MINIMAL",
    );
    v.check(
        mood.is_some(),
        format!("{field}.mood"),
        "must be DYNAMIC, CALM or DRAMATIC",
    );
    v.check(
        lighting.is_some(),
        format!("{field}.lighting"),
        "must be BRIGHT, DARK or NATURAL",
    );
    v.check(
        character_style.is_some(),
        format!("{field}.character_style"),
        "must be REALISTIC, CARTOON or ABSTRACT",
    );
    manifest::validate_palette(&m.color_palette, &format!("{field}.color_palette"), v);
    Some(Markers {
        style: style?,
        color_palette: m.color_palette.iter().map(|c| c.to_uppercase()).collect(),
        mood: mood?,
        lighting: lighting?,
        character_style: character_style?,
    })
}

pub fn manifest_pb(j: &Job) -> Option<pb::Manifest> {
    let m = j.manifest.as_ref()?;
    let editable = j.state == JobState::AwaitingApproval;
    Some(pb::Manifest {
        job_id: j.id.clone(),
        shots: m
            .shots
            .iter()
            .map(|s| pb::Shot {
                shot_id: s.shot_id.clone(),
                description: s.description.clone(),
                duration_s: s.duration_s,
                camera: camera_pb(s.camera) as i32,
                backend: s.backend.map_or(pb::Backend::Unspecified, backend_pb) as i32,
            })
            .collect(),
        consistency_markers: Some(markers_pb(&m.markers)),
        aspect_ratio: aspect_pb(m.aspect_ratio) as i32,
        audio_style: m.audio_style.clone(),
        revision: m.revision,
        etag: m.etag(&j.id),
        editable_fields: if editable {
            manifest::EDITABLE_FIELDS
                .iter()
                .map(|f| f.to_string())
                .collect()
        } else {
            vec![]
        },
        history: m
            .history
            .iter()
            .map(|h| pb::ManifestEdit {
                revision: h.revision,
                actor: h.actor.clone(),
                edit_time: Some(ts(h.at_ms)),
                changed_fields: h.changed_fields.clone(),
            })
            .collect(),
        approved: m.approved,
    })
}

/// Converts partner shots, naming every problem as `{prefix}shots[i].field` (range checks that need
/// the job's duration happen in the domain).
pub fn shots_from(shots: &[pb::Shot], prefix: &str, v: &mut Violations) -> Vec<Shot> {
    shots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let camera = camera_from(s.camera);
            v.check(
                camera.is_some(),
                format!("{prefix}shots[{i}].camera"),
                "must be STATIC, PAN, DOLLY, ZOOM or ORBITAL",
            );
            let backend = backend_from(s.backend);
            v.check(
                backend.is_ok(),
                format!("{prefix}shots[{i}].backend"),
                "is not a known backend",
            );
            Shot {
                shot_id: s.shot_id.clone(),
                description: s.description.clone(),
                duration_s: s.duration_s,
                camera: camera.unwrap_or(Camera::Static),
                backend: backend.ok().flatten(),
            }
        })
        .collect()
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

pub fn cost_report_pb(j: &Job, ledger: &[LedgerEntry]) -> pb::CostReport {
    let quote = j.quote.as_ref();
    let quote_total = quote.map_or(Money::ZERO, |q| q.total);
    let guaranteed = quote.map_or(Money::ZERO, |q| q.guaranteed_max());
    let billed = j.billed.unwrap_or_else(|| j.current_bill());
    let variance = if quote_total.micros() > 0 {
        ((j.metered.micros() - quote_total.micros()) as f64 * 100.0 / quote_total.micros() as f64
            * 100.0)
            .round()
            / 100.0
    } else {
        0.0
    };
    pb::CostReport {
        job_id: j.id.clone(),
        quote_micros: quote_total.micros(),
        ledger: ledger
            .iter()
            .map(|l| pb::LedgerLine {
                kind: match l.kind {
                    LedgerKind::Planner => pb::LedgerKind::Planner,
                    LedgerKind::Render => pb::LedgerKind::Render,
                    LedgerKind::Rerender => pb::LedgerKind::Rerender,
                } as i32,
                shot_id: l.shot_id.clone().unwrap_or_default(),
                backend: l.backend.map_or(pb::Backend::Unspecified, backend_pb) as i32,
                seconds: l.seconds,
                amount_micros: l.amount.micros(),
                attempt: l.attempt,
                succeeded: l.succeeded,
                create_time: Some(ts(l.at_ms)),
                measurement: l.measurement.as_ref().map(measurement_pb),
            })
            .collect(),
        metered_micros: j.metered.micros(),
        variance_percent: variance,
        guaranteed_max_micros: guaranteed.micros(),
        billed_micros: billed.micros(),
        absorbed_micros: (j.metered - billed).max(Money::ZERO).micros(),
        within_guarantee: quote.is_none() || billed <= guaranteed,
        certified: j.state.is_terminal(),
        tolerance_percent: j.tolerance_percent,
    }
}

pub fn tenant_pb(t: &Tenant, now_ms: i64) -> pb::Tenant {
    pb::Tenant {
        tenant_id: t.id.clone(),
        name: t.name.clone(),
        tier: tier_pb(t.tier_at(now_ms)) as i32,
        monthly_budget_micros: t.monthly_budget.map(Money::micros),
        create_time: Some(ts(t.created_ms)),
        trial: t.trial.as_ref().map(|tr| pb::Trial {
            tier: tier_pb(tr.tier) as i32,
            end_time: Some(ts(tr.end_ms)),
        }),
        base_tier: tier_pb(t.base_tier) as i32,
        job_quota: t.job_quota,
    }
}

pub fn key_pb(k: &ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        key_id: k.id.clone(),
        tenant_id: k.tenant_id.clone(),
        name: k.name.clone(),
        mode: match k.mode {
            KeyMode::Live => pb::ApiKeyMode::Live,
            KeyMode::Test => pb::ApiKeyMode::Test,
        } as i32,
        prefix: k.prefix.clone(),
        create_time: Some(ts(k.created_ms)),
        expire_time: k.expires_ms.map(ts),
        revoke_time: k.revoked_ms.map(ts),
        last_used_time: k.last_used_ms.map(ts),
    }
}

pub fn trial_from(
    t: Option<&pb::Trial>,
    field: &str,
    now_ms: i64,
    v: &mut Violations,
) -> Option<Trial> {
    let t = t?;
    let tier = tier_from(t.tier);
    v.check(
        tier.is_some(),
        format!("{field}.tier"),
        "must be BRONZE, GOLD or PLATINUM",
    );
    let end = t.end_time.as_ref().map(ms);
    v.check(
        end.is_some_and(|e| e > now_ms),
        format!("{field}.end_time"),
        "must be in the future",
    );
    Some(Trial {
        tier: tier?,
        end_ms: end?,
    })
}

// ---- request validation ----

/// Checks an id field (job, key, tenant): required and bounded. Unknown ids are NOT_FOUND later.
pub fn require_id(field: &str, value: &str) -> Result<()> {
    let mut v = Violations::new();
    v.identifier(field, value, 128, "_-", true);
    v.finish().map_err(Error::InvalidArgument)
}

fn check_preset<'c>(
    catalog: &'c Catalog,
    preset_id: &str,
    v: &mut Violations,
) -> Option<&'c PresetSpec> {
    if preset_id.is_empty() {
        v.add(
            "preset_id",
            format!("is required; one of: {}", catalog.preset_ids().join(", ")),
        );
        return None;
    }
    let p = catalog.preset(preset_id);
    if p.is_none() {
        v.add(
            "preset_id",
            format!(
                "unknown preset {preset_id:?}; known presets: {}",
                catalog.preset_ids().join(", ")
            ),
        );
    }
    p
}

fn check_duration(preset: Option<&PresetSpec>, duration: Option<u32>, v: &mut Violations) -> u32 {
    let Some(d) = duration else {
        return preset.map_or(0, |p| p.default_duration_s);
    };
    if !(MIN_DURATION_S..=MAX_DURATION_S).contains(&d) {
        v.add(
            "duration_s",
            format!("must be {MIN_DURATION_S}–{MAX_DURATION_S} seconds (got {d})"),
        );
    } else if let Some(p) = preset.filter(|p| d > p.max_duration_s) {
        v.add(
            "duration_s",
            format!(
                "must be at most {} s for preset {} (got {d})",
                p.max_duration_s, p.id
            ),
        );
    }
    d
}

fn check_budget(budget: Option<i64>, v: &mut Violations) -> Option<Money> {
    let b = budget?;
    v.check(
        b > 0,
        "budget_micros",
        "must be a positive amount of micro-USD",
    );
    v.check(
        b <= 1_000_000_000_000,
        "budget_micros",
        "must be at most 1,000,000 USD",
    );
    Some(Money::from_micros(b))
}

pub fn create_job_input(r: pb::CreateJobRequest, catalog: &Catalog) -> Result<NewJob> {
    let mut v = Violations::new();
    v.identifier("request_id", &r.request_id, 128, "._:-", true);
    let preset = check_preset(catalog, &r.preset_id, &mut v);
    v.text("brief", &r.brief, MIN_BRIEF_CHARS, MAX_BRIEF_CHARS);
    v.identifier("brand_id", &r.brand_id, 128, "._-", false);
    let duration_s = check_duration(preset, r.duration_s, &mut v);
    let aspect = aspect_from(r.aspect_ratio);
    v.check(
        aspect.is_ok(),
        "aspect_ratio",
        "is not a known aspect ratio",
    );
    let language = if r.language.is_empty() {
        "en".to_string()
    } else {
        r.language.to_ascii_lowercase()
    };
    v.check(
        LANGUAGES.contains(&language.as_str()),
        "language",
        format!("must be one of {}", LANGUAGES.join(", ")),
    );
    let budget = check_budget(r.budget_micros, &mut v);
    v.check(
        r.labels.len() <= 16,
        "labels",
        "must hold at most 16 labels",
    );
    let mut labels = BTreeMap::new();
    for (k, val) in r.labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        v.check(
            key_ok,
            format!("labels[{k:?}]"),
            "keys must be 1–63 characters of [a-z0-9_-]",
        );
        v.check(
            val.chars().count() <= 63,
            format!("labels[{k:?}]"),
            "values must be at most 63 characters",
        );
        labels.insert(k, val);
    }
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

pub fn estimate_input(r: pb::EstimateCostRequest, catalog: &Catalog) -> Result<EstimateInput> {
    let mut v = Violations::new();
    let preset = check_preset(catalog, &r.preset_id, &mut v);
    v.text("brief", &r.brief, 0, MAX_BRIEF_CHARS);
    v.identifier("brand_id", &r.brand_id, 128, "._-", false);
    let budget = check_budget(r.budget_micros, &mut v);
    let shots = if r.shots.is_empty() {
        None
    } else {
        Some(shots_from(&r.shots, "", &mut v))
    };
    // With a shot list and no duration, the shot list sets the duration.
    let duration = r
        .duration_s
        .or_else(|| shots.as_ref().map(|s| s.iter().map(|s| s.duration_s).sum()));
    let duration_s = check_duration(preset, duration, &mut v);
    if let Some(s) = &shots {
        manifest::validate_shots(s, duration_s, catalog, "", &mut v);
    }
    v.finish().map_err(Error::InvalidArgument)?;
    Ok(EstimateInput {
        preset_id: r.preset_id,
        duration_s,
        brief: r.brief,
        brand_id: r.brand_id,
        budget,
        shots,
    })
}

pub fn estimate_pb(e: Estimate) -> pb::EstimateCostResponse {
    pb::EstimateCostResponse {
        preset_id: e.preset_id,
        duration_s: e.duration_s,
        recommended: Some(quote_pb(&e.recommended)),
        options: e
            .options
            .into_iter()
            .map(|o| pb::BackendOption {
                backend: backend_pb(o.backend) as i32,
                cost_micros: o.cost.micros(),
                quality: o.quality,
                expected_render_seconds: o.expected_render_seconds,
                meets_quality_floor: o.meets_quality_floor,
                within_preset_cap: o.within_preset_cap,
                within_budget: o.within_budget,
                can_render: o.can_render,
            })
            .collect(),
        competitors: e
            .competitors
            .into_iter()
            .map(|c| pb::CompetitorPrice {
                name: c.name,
                price_per_minute_micros: c.price_per_minute.micros(),
                cost_micros: c.cost.micros(),
                savings_micros: c.savings.micros(),
                savings_percent: c.savings_percent,
            })
            .collect(),
        brand_cache_hit: e.brand_cache_hit,
    }
}
