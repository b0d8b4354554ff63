//! Cost estimates: the quote for every backend option side by side, before anything is spent.

use super::{App, Caller};
use crate::domain::catalog::BackendSpec;
use crate::domain::manifest::Shot;
use crate::domain::pricing::{self, Quote, QuoteParams, split_duration};
use crate::domain::{Backend, Money, planner};
use crate::error::{Error, Result};
use crate::store::now_ms;

/// A validated EstimateCost request.
pub struct EstimateInput {
    pub preset_id: String,
    pub duration_s: u32,
    pub brief: String,
    pub brand_id: String,
    pub budget: Option<Money>,
    /// A shot list to quote instead of the planner's.
    pub shots: Option<Vec<Shot>>,
}

pub struct BackendOption {
    pub backend: Backend,
    pub cost: Money,
    pub quality: f64,
    pub expected_render_seconds: u32,
    pub meets_quality_floor: bool,
    pub within_preset_cap: bool,
    pub within_budget: bool,
    pub can_render: bool,
}

pub struct CompetitorQuote {
    pub name: String,
    pub price_per_minute: Money,
    pub cost: Money,
    pub savings: Money,
    pub savings_percent: f64,
}

pub struct Estimate {
    pub preset_id: String,
    pub duration_s: u32,
    pub recommended: Quote,
    pub options: Vec<BackendOption>,
    pub competitors: Vec<CompetitorQuote>,
    pub brand_cache_hit: bool,
}

fn shots_of(durations: Vec<u32>) -> Vec<Shot> {
    durations
        .into_iter()
        .enumerate()
        .map(|(i, d)| Shot {
            shot_id: format!("shot-{:02}", i + 1),
            description: String::new(),
            duration_s: d,
            camera: crate::domain::manifest::Camera::Static,
            backend: None,
        })
        .collect()
}

impl App {
    pub async fn estimate(&self, caller: &Caller, input: EstimateInput) -> Result<Estimate> {
        let catalog = &self.config.catalog;
        let preset = catalog
            .preset(&input.preset_id)
            .ok_or_else(|| Error::invalid("preset_id", "unknown preset"))?;
        let now = now_ms();
        // The tier was read with the key: no second tenant lookup on this hot path.
        let tolerance = catalog.tier(caller.tier).cost_tolerance_percent;
        let cache_hit = preset.brand_cache
            && !input.brand_id.is_empty()
            && self
                .store
                .brand_markers(&caller.tenant_id, &input.brand_id, now)
                .await?
                .is_some();
        let planner_cost = if cache_hit {
            Money::ZERO
        } else {
            catalog.planner_cost
        };
        let shots = match &input.shots {
            Some(s) => s.clone(),
            None => {
                let brief = planner::Brief {
                    text: &input.brief,
                    brand_id: &input.brand_id,
                    duration_s: input.duration_s,
                    max_shot_s: catalog.max_shot_s,
                    aspect_ratio: Default::default(),
                };
                planner::plan(&brief, None, now).shots
            }
        };
        let cap = preset.cost_cap(input.duration_s);
        let excluded = self.unavailable_backends(caller.sandbox);
        let params = QuoteParams {
            quality_floor: preset.quality_threshold,
            cost_cap: cap,
            budget: input.budget,
            planner: planner_cost,
            tolerance_percent: tolerance,
            excluded: &excluded,
            economy: false,
        };
        let recommended = pricing::quote(catalog, &shots, &params).map_err(|e| {
            Error::precondition(
                "BUDGET",
                "budget_micros",
                format!("no mix of backends fits: {e}"),
            )
        })?;
        let option = |spec: &BackendSpec| {
            let option_shots = match &input.shots {
                Some(s) => s.clone(),
                None => shots_of(split_duration(
                    input.duration_s,
                    spec.max_shot_s.min(catalog.max_shot_s),
                )),
            };
            let cost = planner_cost
                + option_shots
                    .iter()
                    .map(|s| spec.shot_cost(s.duration_s))
                    .sum::<Money>();
            let seconds: u32 = option_shots.iter().map(|s| s.duration_s).sum();
            BackendOption {
                backend: spec.backend,
                cost,
                quality: spec.quality,
                expected_render_seconds: seconds * spec.render_seconds_per_video_second,
                meets_quality_floor: spec.quality >= preset.quality_threshold,
                within_preset_cap: cost <= cap,
                within_budget: input.budget.is_none_or(|b| cost <= b),
                can_render: option_shots.iter().all(|s| s.duration_s <= spec.max_shot_s)
                    && !excluded.contains(&spec.backend),
            }
        };
        let options = catalog.backends.iter().map(option).collect();
        let competitors = catalog
            .competitors
            .iter()
            .map(|c| {
                let cost = c.price_per_minute.scaled(input.duration_s, 60);
                let savings = cost - recommended.total;
                let savings_percent = if cost.micros() > 0 {
                    savings.micros() as f64 * 100.0 / cost.micros() as f64
                } else {
                    0.0
                };
                CompetitorQuote {
                    name: c.name.clone(),
                    price_per_minute: c.price_per_minute,
                    cost,
                    savings,
                    savings_percent: (savings_percent * 10.0).round() / 10.0,
                }
            })
            .collect();
        Ok(Estimate {
            preset_id: preset.id.clone(),
            duration_s: input.duration_s,
            recommended,
            options,
            competitors,
            brand_cache_hit: cache_hit,
        })
    }
}
