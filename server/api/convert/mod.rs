//! Conversions between `aiprod.v1` messages and domain types, one file per resource, and the
//! decoding of requests into validated use-case inputs (every field violation collected; the rules
//! themselves live in `domain::spec` and `domain::manifest`).

mod admin;
mod cost;
mod job;
mod manifest;
mod preset;

pub use admin::{key_pb, tenant_pb, trial_from};
pub use cost::{cost_report_pb, estimate_input, estimate_pb, quote_pb, usage_pb};
pub use job::{create_job_input, event_pb, job_pb, job_pb_with, measurement_pb};
pub use manifest::{manifest_pb, markers_from, markers_pb, shots_from};
pub use preset::preset_pb;

use crate::domain::job::FailureReason;
use crate::domain::manifest::{AspectRatio, Camera};
use crate::domain::tenant::KeyMode;
use crate::domain::validate::Violations;
use crate::domain::{Backend, JobState, Tier};
use crate::error::{Error, Result};
use crate::pb;

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

pub(super) fn camera_pb(c: Camera) -> pb::CameraMovement {
    match c {
        Camera::Static => pb::CameraMovement::Static,
        Camera::Pan => pb::CameraMovement::Pan,
        Camera::Dolly => pb::CameraMovement::Dolly,
        Camera::Zoom => pb::CameraMovement::Zoom,
        Camera::Orbital => pb::CameraMovement::Orbital,
    }
}

pub(super) fn camera_from(v: i32) -> Option<Camera> {
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

pub(super) fn failure_pb(r: FailureReason) -> pb::FailureReason {
    match r {
        FailureReason::AllBackendsFailed => pb::FailureReason::AllBackendsFailed,
        FailureReason::BudgetExhausted => pb::FailureReason::BudgetExhausted,
        FailureReason::PlanningFailed => pb::FailureReason::PlanningFailed,
        FailureReason::Internal => pb::FailureReason::Internal,
    }
}

pub(super) fn duration_pb(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Checks an id field (job, key, tenant): required and bounded. Unknown ids are NOT_FOUND later.
pub fn require_id(field: &str, value: &str) -> Result<()> {
    let mut v = Violations::new();
    v.identifier(field, value, 128, "_-", true);
    v.finish().map_err(Error::InvalidArgument)
}
