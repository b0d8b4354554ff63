//! The catalog: presets, render backends, tiers and reference prices. These are configuration
//! (defaults below, overridable from the TOML file), never literals scattered through the code.

use super::Money;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A render backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Runway,
    Veo,
    Replicate,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Runway, Backend::Veo, Backend::Replicate];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Runway => "runway",
            Backend::Veo => "veo",
            Backend::Replicate => "replicate",
        }
    }
}

/// A tenant's tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Bronze,
    Gold,
    Platinum,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Bronze => "bronze",
            Tier::Gold => "gold",
            Tier::Platinum => "platinum",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "bronze" => Some(Tier::Bronze),
            "gold" => Some(Tier::Gold),
            "platinum" => Some(Tier::Platinum),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pipeline {
    FastTrack,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
}

/// One preset's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresetSpec {
    pub id: String,
    pub display_name: String,
    pub pipeline: Pipeline,
    pub default_duration_s: u32,
    pub max_duration_s: u32,
    pub quality_threshold: f64,
    pub cost_cap_per_minute: Money,
    pub manifest_review: bool,
    pub brand_cache: bool,
    pub final_review: bool,
    pub priority: Priority,
}

impl PresetSpec {
    /// The preset's cost cap for a video of `duration_s` seconds.
    pub fn cost_cap(&self, duration_s: u32) -> Money {
        self.cost_cap_per_minute.scaled(duration_s, 60)
    }
}

/// One render backend's price and quality profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendSpec {
    pub backend: Backend,
    pub price_per_second: Money,
    pub price_per_shot: Money,
    pub quality: f64,
    pub max_shot_s: u32,
    /// Expected render seconds per second of video (for time estimates).
    pub render_seconds_per_video_second: u32,
}

impl BackendSpec {
    pub fn shot_cost(&self, seconds: u32) -> Money {
        self.price_per_shot + self.price_per_second.times(seconds)
    }
}

/// One tier's limits and prices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TierSpec {
    pub presets: Vec<String>,
    pub concurrent_jobs: u32,
    pub requests_per_minute: u32,
    pub quality_sla: f64,
    pub cost_tolerance_percent: u32,
    pub monthly_fee: Money,
    pub included_minutes: u32,
}

/// A competitor's reference price for going direct.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Competitor {
    pub name: String,
    pub price_per_minute: Money,
}

/// Every figure of the domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Catalog {
    pub presets: Vec<PresetSpec>,
    /// In priority order (the selection policy's "first candidate").
    pub backends: Vec<BackendSpec>,
    pub tiers: BTreeMap<Tier, TierSpec>,
    pub competitors: Vec<Competitor>,
    /// Cost of one creative-direction (planner) call; waived on a brand-cache hit.
    pub planner_cost: Money,
    /// At or below this remaining budget, selection picks the cheapest backend meeting the floor.
    pub economy_budget: Money,
    /// At or above this remaining budget, selection picks the best quality that fits.
    pub premium_budget: Money,
    /// Longest shot the planner produces, in seconds.
    pub max_shot_s: u32,
    /// How long brand markers stay cached, in hours.
    pub brand_cache_ttl_hours: u32,
}

impl Default for Catalog {
    fn default() -> Self {
        let preset =
            |id: &str, name: &str, pipeline, dflt, max, q, cap_cents, review, cache, fin, prio| {
                PresetSpec {
                    id: id.into(),
                    display_name: name.into(),
                    pipeline,
                    default_duration_s: dflt,
                    max_duration_s: max,
                    quality_threshold: q,
                    cost_cap_per_minute: Money::from_cents(cap_cents),
                    manifest_review: review,
                    brand_cache: cache,
                    final_review: fin,
                    priority: prio,
                }
            };
        let backend =
            |backend, per_s_micros, per_shot_micros, quality, max_shot_s, speed| BackendSpec {
                backend,
                price_per_second: Money::from_micros(per_s_micros),
                price_per_shot: Money::from_micros(per_shot_micros),
                quality,
                max_shot_s,
                render_seconds_per_video_second: speed,
            };
        let tier = |presets: &[&str], concurrent, rpm, sla, tol, fee: i64, minutes| TierSpec {
            presets: presets.iter().map(|p| p.to_string()).collect(),
            concurrent_jobs: concurrent,
            requests_per_minute: rpm,
            quality_sla: sla,
            cost_tolerance_percent: tol,
            monthly_fee: Money::from_cents(fee * 100),
            included_minutes: minutes,
        };
        Catalog {
            presets: vec![
                preset(
                    "quick_social",
                    "Quick Social",
                    Pipeline::FastTrack,
                    30,
                    30,
                    0.6,
                    50,
                    false,
                    false,
                    false,
                    Priority::Low,
                ),
                preset(
                    "brand_campaign",
                    "Brand Campaign",
                    Pipeline::Full,
                    60,
                    120,
                    0.8,
                    95,
                    true,
                    true,
                    false,
                    Priority::Medium,
                ),
                preset(
                    "premium_spot",
                    "Premium Spot",
                    Pipeline::Full,
                    120,
                    180,
                    0.9,
                    150,
                    true,
                    true,
                    true,
                    Priority::High,
                ),
            ],
            backends: vec![
                backend(Backend::Runway, 12_500, 25_000, 0.95, 10, 6),
                backend(Backend::Veo, 400_000, 100_000, 0.92, 8, 9),
                backend(Backend::Replicate, 6_000, 10_000, 0.75, 10, 4),
            ],
            tiers: BTreeMap::from([
                (
                    Tier::Bronze,
                    tier(&["quick_social"], 2, 10, 0.6, 20, 99, 50),
                ),
                (
                    Tier::Gold,
                    tier(
                        &["quick_social", "brand_campaign"],
                        10,
                        50,
                        0.8,
                        20,
                        299,
                        200,
                    ),
                ),
                (
                    Tier::Platinum,
                    tier(
                        &["quick_social", "brand_campaign", "premium_spot"],
                        50,
                        500,
                        0.9,
                        10,
                        999,
                        1000,
                    ),
                ),
            ]),
            competitors: vec![
                Competitor {
                    name: "Runway".into(),
                    price_per_minute: Money::from_cents(250),
                },
                Competitor {
                    name: "Synthesia".into(),
                    price_per_minute: Money::from_cents(200),
                },
                Competitor {
                    name: "HeyGen".into(),
                    price_per_minute: Money::from_cents(180),
                },
                Competitor {
                    name: "Pictory".into(),
                    price_per_minute: Money::from_cents(150),
                },
            ],
            planner_cost: Money::from_cents(1),
            economy_budget: Money::from_cents(100),
            premium_budget: Money::from_cents(5000),
            max_shot_s: 10,
            brand_cache_ttl_hours: 168,
        }
    }
}

impl Catalog {
    pub fn preset(&self, id: &str) -> Option<&PresetSpec> {
        self.presets.iter().find(|p| p.id == id)
    }

    pub fn preset_ids(&self) -> Vec<&str> {
        self.presets.iter().map(|p| p.id.as_str()).collect()
    }

    pub fn backend(&self, backend: Backend) -> Option<&BackendSpec> {
        self.backends.iter().find(|b| b.backend == backend)
    }

    pub fn tier(&self, tier: Tier) -> &TierSpec {
        // Every tier has an entry: `validate` refuses a catalog without one.
        &self.tiers[&tier]
    }

    /// Checks the catalog once at start-up; returns every problem found.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.presets.is_empty() {
            problems.push("catalog has no presets".to_string());
        }
        for p in &self.presets {
            if p.default_duration_s > p.max_duration_s || p.default_duration_s == 0 {
                problems.push(format!("preset {}: default duration must be 1..=max", p.id));
            }
            if !(0.0..=1.0).contains(&p.quality_threshold) {
                problems.push(format!(
                    "preset {}: quality_threshold must be within 0..1",
                    p.id
                ));
            }
        }
        if self.backends.is_empty() {
            problems.push("catalog has no backends".to_string());
        }
        for b in &self.backends {
            if b.max_shot_s == 0 || !(0.0..=1.0).contains(&b.quality) {
                problems.push(format!(
                    "backend {}: max_shot_s must be > 0 and quality within 0..1",
                    b.backend.as_str()
                ));
            }
        }
        for t in [Tier::Bronze, Tier::Gold, Tier::Platinum] {
            if !self.tiers.contains_key(&t) {
                problems.push(format!("tier {} is missing", t.as_str()));
            }
        }
        if self.max_shot_s == 0 {
            problems.push("max_shot_s must be > 0".to_string());
        }
        problems
    }
}
