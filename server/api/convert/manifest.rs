//! Manifests, shots and consistency markers.

use super::{aspect_pb, backend_from, backend_pb, camera_from, camera_pb, ts};
use crate::domain::JobState;
use crate::domain::job::Job;
use crate::domain::manifest::{self, Camera, CharacterStyle, Lighting, Markers, Mood, Shot, Style};
use crate::domain::validate::Violations;
use crate::pb;

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
