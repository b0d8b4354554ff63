//! The built-in creative director: a deterministic planner that needs no network.
//! The same brief, duration and markers always give the same manifest.

use super::manifest::{
    AspectRatio, Camera, CharacterStyle, Lighting, Manifest, ManifestEdit, Markers, Mood, Shot,
    Style,
};
use super::pricing::split_duration;
use sha2::{Digest, Sha256};

/// What the planner works from.
pub struct Brief<'a> {
    pub text: &'a str,
    pub brand_id: &'a str,
    pub duration_s: u32,
    pub max_shot_s: u32,
    pub aspect_ratio: AspectRatio,
}

const BEATS: [&str; 6] = [
    "Opening: establish the setting and the brand's world",
    "Introduce the product in use",
    "Close-up on the detail that sets it apart",
    "People enjoying the result",
    "The brand's promise, shown not told",
    "Closing: logo and call to action",
];

const PALETTES: [[&str; 3]; 6] = [
    ["#1A1A2E", "#E94560", "#F5F5F5"],
    ["#0F4C75", "#3282B8", "#BBE1FA"],
    ["#2D4739", "#A3B18A", "#F2E8CF"],
    ["#222222", "#FFB400", "#FFFFFF"],
    ["#5F0F40", "#FB8B24", "#E36414"],
    ["#03045E", "#00B4D8", "#CAF0F8"],
];

fn seed(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// Markers derived from the brand (or, without one, the brief), so a brand keeps its look.
pub fn plan_markers(brand_id: &str, brief: &str) -> Markers {
    let s = seed(&[
        "markers",
        if brand_id.is_empty() { brief } else { brand_id },
    ]);
    let pick = |i: usize, n: usize| usize::from(s[i]) % n;
    Markers {
        style: [Style::Modern, Style::Classic, Style::Minimal][pick(0, 3)],
        color_palette: PALETTES[pick(1, PALETTES.len())]
            .iter()
            .map(|c| c.to_string())
            .collect(),
        mood: [Mood::Dynamic, Mood::Calm, Mood::Dramatic][pick(2, 3)],
        lighting: [Lighting::Bright, Lighting::Dark, Lighting::Natural][pick(3, 3)],
        character_style: [
            CharacterStyle::Realistic,
            CharacterStyle::Cartoon,
            CharacterStyle::Abstract,
        ][pick(4, 3)],
    }
}

/// Plans the manifest (revision 1). `cached` markers, when present, are used as they are.
pub fn plan(brief: &Brief<'_>, cached: Option<Markers>, now_ms: i64) -> Manifest {
    let markers = cached.unwrap_or_else(|| plan_markers(brief.brand_id, brief.text));
    let s = seed(&["shots", brief.text, &brief.duration_s.to_string()]);
    let summary: String = brief
        .text
        .split_whitespace()
        .take(24)
        .collect::<Vec<_>>()
        .join(" ");
    let durations = split_duration(brief.duration_s, brief.max_shot_s);
    let n = durations.len();
    let shots = durations
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let beat = if i == 0 {
                BEATS[0]
            } else if i + 1 == n {
                BEATS[BEATS.len() - 1]
            } else {
                BEATS[1 + (i - 1 + usize::from(s[0])) % (BEATS.len() - 2)]
            };
            Shot {
                shot_id: format!("shot-{:02}", i + 1),
                description: format!("{beat}. {summary}"),
                duration_s: d,
                camera: Camera::ALL[(usize::from(s[1 + i % 31]) + i) % Camera::ALL.len()],
                backend: None,
            }
        })
        .collect();
    Manifest {
        shots,
        markers,
        aspect_ratio: brief.aspect_ratio,
        audio_style: String::new(),
        revision: 1,
        history: vec![ManifestEdit {
            revision: 1,
            actor: "planner".into(),
            at_ms: now_ms,
            changed_fields: vec![],
        }],
        approved: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(text: &str, d: u32) -> Brief<'_> {
        Brief {
            text,
            brand_id: "acme",
            duration_s: d,
            max_shot_s: 10,
            aspect_ratio: AspectRatio::Landscape16x9,
        }
    }

    #[test]
    fn deterministic_and_adds_up() {
        let a = plan(&brief("Summer launch of our running shoes", 60), None, 0);
        let b = plan(&brief("Summer launch of our running shoes", 60), None, 0);
        assert_eq!(a, b);
        assert_eq!(a.shots.len(), 6);
        assert_eq!(a.total_duration(), 60);
        assert_ne!(a, plan(&brief("A calm winter spot for tea", 60), None, 0));
    }

    #[test]
    fn cached_markers_are_kept() {
        let cached = plan_markers("other-brand", "");
        let m = plan(
            &brief("Summer launch of our running shoes", 30),
            Some(cached.clone()),
            0,
        );
        assert_eq!(m.markers, cached);
    }
}
