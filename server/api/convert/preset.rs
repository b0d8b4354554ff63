//! Presets.

use crate::domain::catalog::{Pipeline, PresetSpec, Priority};
use crate::pb;

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
