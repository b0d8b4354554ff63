//! What a job request may ask for: the rules of its fields (preset, duration, brief, language,
//! budget, labels). Each check adds every violation it finds and echoes the caller's values only
//! through `validate::echo`.

use super::Money;
use super::catalog::{Catalog, PresetSpec};
use super::validate::{Violations, echo};
use std::collections::BTreeMap;

pub const LANGUAGES: [&str; 9] = ["en", "fr", "es", "de", "it", "pt", "ja", "zh", "ko"];
pub const MIN_DURATION_S: u32 = 5;
pub const MAX_DURATION_S: u32 = 300;
pub const MIN_BRIEF_CHARS: usize = 10;
pub const MAX_BRIEF_CHARS: usize = 10_000;
/// The largest job budget accepted: 1,000,000 USD.
pub const MAX_BUDGET: Money = Money::from_micros(1_000_000_000_000);
pub const MAX_LABELS: usize = 16;
pub const MAX_LABEL_CHARS: usize = 63;

/// The preset named by `preset_id`, or a violation listing the known ones.
pub fn check_preset<'c>(
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
                "unknown preset {}; known presets: {}",
                echo(preset_id),
                catalog.preset_ids().join(", ")
            ),
        );
    }
    p
}

/// The duration asked for (the preset's default when unset), within 5–300 s and the preset's max.
pub fn check_duration(
    preset: Option<&PresetSpec>,
    duration: Option<u32>,
    v: &mut Violations,
) -> u32 {
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

/// A job budget: a positive amount of micro-USD up to `MAX_BUDGET`.
pub fn check_budget(budget: Option<i64>, v: &mut Violations) -> Option<Money> {
    let b = budget?;
    v.check(
        b > 0,
        "budget_micros",
        "must be a positive amount of micro-USD",
    );
    v.check(
        b <= MAX_BUDGET.micros(),
        "budget_micros",
        "must be at most 1,000,000 USD",
    );
    Some(Money::from_micros(b))
}

/// The language (default `en`), one of `LANGUAGES`.
pub fn check_language(language: &str, v: &mut Violations) -> String {
    let language = if language.is_empty() {
        "en".to_string()
    } else {
        language.to_ascii_lowercase()
    };
    v.check(
        LANGUAGES.contains(&language.as_str()),
        "language",
        format!("must be one of {}", LANGUAGES.join(", ")),
    );
    language
}

/// Partner labels: at most `MAX_LABELS`; keys 1–63 characters of `[a-z0-9_-]`, values up to 63.
pub fn check_labels(
    labels: impl IntoIterator<Item = (String, String)>,
    v: &mut Violations,
) -> BTreeMap<String, String> {
    let labels: BTreeMap<String, String> = labels.into_iter().collect();
    v.check(
        labels.len() <= MAX_LABELS,
        "labels",
        format!(
            "must hold at most {MAX_LABELS} labels (got {})",
            labels.len()
        ),
    );
    for (k, val) in &labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_CHARS
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        v.check(
            key_ok,
            format!("labels[{}]", echo(k)),
            "keys must be 1–63 characters of [a-z0-9_-]",
        );
        v.check(
            val.chars().count() <= MAX_LABEL_CHARS,
            format!("labels[{}]", echo(k)),
            "values must be at most 63 characters",
        );
    }
    labels
}
