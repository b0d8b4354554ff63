//! The production manifest: the shot list, brand consistency markers, and the edit history.

use super::catalog::{Backend, Catalog};
use super::validate::Violations;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Camera {
    Static,
    Pan,
    Dolly,
    Zoom,
    Orbital,
}

impl Camera {
    pub const ALL: [Camera; 5] = [
        Camera::Static,
        Camera::Pan,
        Camera::Dolly,
        Camera::Zoom,
        Camera::Orbital,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AspectRatio {
    #[default]
    Landscape16x9,
    Portrait9x16,
    Square1x1,
    Portrait4x5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    Modern,
    Classic,
    Minimal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mood {
    Dynamic,
    Calm,
    Dramatic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lighting {
    Bright,
    Dark,
    Natural,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CharacterStyle {
    Realistic,
    Cartoon,
    Abstract,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shot {
    pub shot_id: String,
    pub description: String,
    pub duration_s: u32,
    pub camera: Camera,
    pub backend: Option<Backend>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Markers {
    pub style: Style,
    pub color_palette: Vec<String>,
    pub mood: Mood,
    pub lighting: Lighting,
    pub character_style: CharacterStyle,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEdit {
    pub revision: u32,
    pub actor: String,
    pub at_ms: i64,
    pub changed_fields: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub shots: Vec<Shot>,
    pub markers: Markers,
    pub aspect_ratio: AspectRatio,
    pub audio_style: String,
    pub revision: u32,
    pub history: Vec<ManifestEdit>,
    pub approved: bool,
}

/// The manifest fields a partner may edit.
pub const EDITABLE_FIELDS: [&str; 3] = ["shots", "aspect_ratio", "audio_style"];
/// Manifest fields that exist but are read-only for partners.
pub const READ_ONLY_FIELDS: [&str; 6] = [
    "consistency_markers",
    "job_id",
    "revision",
    "etag",
    "editable_fields",
    "history",
];

impl Manifest {
    /// An opaque tag naming this revision of this job's manifest.
    pub fn etag(&self, job_id: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{job_id}:{}", self.revision));
        format!("r{}-{}", self.revision, hex::encode(&digest[..6]))
    }

    pub fn total_duration(&self) -> u32 {
        self.shots.iter().map(|s| s.duration_s).sum()
    }
}

/// Longest shot description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// Most shots in one manifest.
pub const MAX_SHOTS: usize = 60;

/// Validates a shot list against the job's duration; violations are named `{prefix}shots[i].field`.
pub fn validate_shots(
    shots: &[Shot],
    job_duration_s: u32,
    catalog: &Catalog,
    prefix: &str,
    v: &mut Violations,
) {
    if shots.is_empty() {
        v.add(format!("{prefix}shots"), "must contain at least one shot");
        return;
    }
    if shots.len() > MAX_SHOTS {
        v.add(
            format!("{prefix}shots"),
            format!("must contain at most {MAX_SHOTS} shots"),
        );
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, shot) in shots.iter().enumerate() {
        let f = |name: &str| format!("{prefix}shots[{i}].{name}");
        v.identifier(&f("shot_id"), &shot.shot_id, 64, "-_.", false);
        if !shot.shot_id.is_empty() && !seen.insert(shot.shot_id.as_str()) {
            v.add(f("shot_id"), "duplicates another shot's id");
        }
        v.text(
            &f("description"),
            &shot.description,
            1,
            MAX_DESCRIPTION_CHARS,
        );
        if shot.duration_s == 0 || shot.duration_s > catalog.max_shot_s {
            v.add(
                f("duration_s"),
                format!(
                    "must be 1–{} seconds (got {})",
                    catalog.max_shot_s, shot.duration_s
                ),
            );
        } else if let Some(b) = shot.backend.and_then(|b| catalog.backend(b))
            && shot.duration_s > b.max_shot_s
        {
            v.add(
                f("backend"),
                format!(
                    "{} renders shots of at most {} s; this shot is {} s",
                    b.backend.as_str(),
                    b.max_shot_s,
                    shot.duration_s
                ),
            );
        }
    }
    let total: u32 = shots.iter().map(|s| s.duration_s).sum();
    if total.abs_diff(job_duration_s) > 1 {
        v.add(
            format!("{prefix}shots"),
            format!("shot durations add up to {total} s; they must add up to the job's {job_duration_s} s (± 1 s)"),
        );
    }
}

/// Validates brand markers (for UpdateBrandMarkers).
pub fn validate_palette(palette: &[String], field: &str, v: &mut Violations) {
    if palette.is_empty() || palette.len() > 8 {
        v.add(field, "must hold 1–8 colours");
    }
    for (i, c) in palette.iter().enumerate() {
        let ok =
            c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|ch| ch.is_ascii_hexdigit());
        v.check(
            ok,
            format!("{field}[{i}]"),
            "must be a hex colour like #1A2B3C",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shot(id: &str, d: u32) -> Shot {
        Shot {
            shot_id: id.into(),
            description: "a shot".into(),
            duration_s: d,
            camera: Camera::Pan,
            backend: None,
        }
    }

    #[test]
    fn every_violation_is_named() {
        let catalog = Catalog::default();
        let shots = vec![
            shot("a", 0),
            Shot {
                description: String::new(),
                ..shot("a", 10)
            },
            Shot {
                backend: Some(Backend::Veo),
                ..shot("c", 10)
            },
        ];
        let mut v = Violations::new();
        validate_shots(&shots, 60, &catalog, "manifest.", &mut v);
        let fields: Vec<_> = v.into_vec().into_iter().map(|f| f.field).collect();
        assert!(
            fields.contains(&"manifest.shots[0].duration_s".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"manifest.shots[1].shot_id".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"manifest.shots[1].description".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"manifest.shots[2].backend".to_string()),
            "{fields:?}"
        );
        assert!(fields.contains(&"manifest.shots".to_string()), "{fields:?}");
    }

    proptest! {
        #[test]
        fn durations_must_add_up_within_one_second(durs in proptest::collection::vec(1u32..=10, 1..20), target in 5u32..=200) {
            let catalog = Catalog::default();
            let shots: Vec<_> = durs.iter().enumerate().map(|(i, d)| shot(&format!("s{i}"), *d)).collect();
            let mut v = Violations::new();
            validate_shots(&shots, target, &catalog, "", &mut v);
            let total: u32 = durs.iter().sum();
            prop_assert_eq!(v.is_empty(), total.abs_diff(target) <= 1);
        }
    }
}
