//! Pricing: shot costs, the per-shot backend selection policy, and quotes.

use super::Money;
use super::catalog::{Backend, BackendSpec, Catalog};
use super::manifest::Shot;
use serde::{Deserialize, Serialize};

/// What the selection policy needs to know about one shot's situation.
#[derive(Clone, Debug)]
pub struct Selection<'a> {
    pub shot_seconds: u32,
    pub quality_floor: f64,
    /// Budget left for the rest of the job: picks the policy branch (economy / priority / premium).
    pub remaining: Money,
    /// What must never be exceeded (an explicit job budget's remainder), if anything.
    pub hard_limit: Option<Money>,
    /// What is left under the preset's cost cap (the priority branch keeps within it).
    pub cap_remaining: Money,
    /// Backends with an open circuit, or already tried for this attempt.
    pub excluded: &'a [Backend],
    /// The shot's own backend preference, honoured when it is a candidate.
    pub preferred: Option<Backend>,
    /// Steer to the cheapest backend (the tenant has spent 90 % of its monthly budget).
    pub economy: bool,
}

/// The selection policy: one pure function (domain.md, "Selection per shot").
/// Candidates are the backends not excluded that can render the shot and never exceed the hard limit.
/// With `remaining ≤ economy_budget` → the cheapest meeting the floor; with `remaining ≥ premium_budget`
/// → the best quality that fits; otherwise → the first in priority order that meets the floor and keeps
/// within the cap. When that branch finds nothing, the cheapest candidate meeting the floor, then the best
/// quality candidate, so that a job still renders (it is then delivered with `sla_met = false`).
pub fn select_backend<'c>(catalog: &'c Catalog, s: &Selection<'_>) -> Option<&'c BackendSpec> {
    let candidates: Vec<&BackendSpec> = catalog
        .backends
        .iter()
        .filter(|b| !s.excluded.contains(&b.backend))
        .filter(|b| b.max_shot_s >= s.shot_seconds)
        .filter(|b| {
            s.hard_limit
                .is_none_or(|limit| b.shot_cost(s.shot_seconds) <= limit)
        })
        .collect();
    if let Some(p) = s
        .preferred
        .filter(|_| !s.economy)
        .and_then(|p| candidates.iter().find(|b| b.backend == p))
    {
        return Some(p);
    }
    let cost = |b: &BackendSpec| b.shot_cost(s.shot_seconds);
    let meets = |b: &BackendSpec| b.quality >= s.quality_floor;
    let cheapest_meeting = || {
        candidates
            .iter()
            .copied()
            .filter(|b| meets(b))
            .min_by_key(|b| cost(b))
    };
    let best_quality = |within: Money| {
        candidates
            .iter()
            .copied()
            .filter(|b| cost(b) <= within)
            .max_by(|a, b| a.quality.total_cmp(&b.quality).then(cost(b).cmp(&cost(a))))
    };
    let branch = if s.economy {
        // Near the monthly budget: the cheapest backend, even below the quality floor.
        candidates.iter().copied().min_by_key(|b| cost(b))
    } else if s.remaining <= catalog.economy_budget {
        cheapest_meeting()
    } else if s.remaining >= catalog.premium_budget {
        best_quality(s.remaining)
    } else {
        candidates
            .iter()
            .copied()
            .find(|b| meets(b) && cost(b) <= s.cap_remaining && cost(b) <= s.remaining)
    };
    branch
        .or_else(cheapest_meeting)
        .or_else(|| best_quality(Money::from_micros(i64::MAX)))
}

/// One shot's line in a quote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShotQuote {
    pub shot_id: String,
    pub backend: Backend,
    pub duration_s: u32,
    pub cost: Money,
    pub quality: f64,
}

/// A quote: what a job is expected to cost before anything runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub planner: Money,
    pub shots: Vec<ShotQuote>,
    pub total: Money,
    pub tolerance_percent: u32,
    pub expected_render_seconds: u32,
}

impl Quote {
    /// The most a partner can be billed: quote × (1 + tolerance).
    pub fn guaranteed_max(&self) -> Money {
        self.total.plus_percent(self.tolerance_percent)
    }

    pub fn expected_quality(&self) -> f64 {
        self.shots
            .iter()
            .map(|s| s.quality)
            .fold(f64::INFINITY, f64::min)
            .min(1.0)
    }
}

/// Why a quote could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("no backend can render shot {shot_id} ({seconds} s) within the budget")]
    NoBackendFits { shot_id: String, seconds: u32 },
}

/// The inputs of a quote besides the shots.
#[derive(Clone, Debug)]
pub struct QuoteParams<'a> {
    pub quality_floor: f64,
    /// The preset's cap for the job's duration.
    pub cost_cap: Money,
    /// The job's explicit budget, if any.
    pub budget: Option<Money>,
    pub planner: Money,
    pub tolerance_percent: u32,
    pub excluded: &'a [Backend],
    /// Steer every shot to economy backends.
    pub economy: bool,
}

/// Quotes a shot list by running the selection policy shot by shot.
pub fn quote(catalog: &Catalog, shots: &[Shot], p: &QuoteParams<'_>) -> Result<Quote, QuoteError> {
    let limit = p.budget.unwrap_or(p.cost_cap);
    let mut spent = p.planner;
    let mut lines = Vec::with_capacity(shots.len());
    let mut render_seconds = 0;
    for shot in shots {
        let selection = Selection {
            shot_seconds: shot.duration_s,
            quality_floor: p.quality_floor,
            remaining: limit - spent,
            hard_limit: p.budget.map(|b| b - spent),
            cap_remaining: p.cost_cap - spent,
            excluded: p.excluded,
            preferred: shot.backend,
            economy: p.economy,
        };
        let chosen =
            select_backend(catalog, &selection).ok_or_else(|| QuoteError::NoBackendFits {
                shot_id: shot.shot_id.clone(),
                seconds: shot.duration_s,
            })?;
        let cost = chosen.shot_cost(shot.duration_s);
        spent += cost;
        render_seconds += shot.duration_s * chosen.render_seconds_per_video_second;
        lines.push(ShotQuote {
            shot_id: shot.shot_id.clone(),
            backend: chosen.backend,
            duration_s: shot.duration_s,
            cost,
            quality: chosen.quality,
        });
    }
    Ok(Quote {
        planner: p.planner,
        shots: lines,
        total: spent,
        tolerance_percent: p.tolerance_percent,
        expected_render_seconds: render_seconds,
    })
}

/// Splits a duration into the fewest shots of at most `max_shot_s`, as evenly as possible
/// (longer shots first).
pub fn split_duration(duration_s: u32, max_shot_s: u32) -> Vec<u32> {
    let max_shot_s = max_shot_s.max(1);
    let n = duration_s.div_ceil(max_shot_s).max(1);
    let (base, extra) = (duration_s / n, duration_s % n);
    (0..n).map(|i| base + u32::from(i < extra)).collect()
}

/// What the partner is billed: the billable metered amount, capped by the guarantee.
pub fn certified_bill(billable_metered: Money, quote: &Quote) -> Money {
    billable_metered
        .min(quote.guaranteed_max())
        .max(Money::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest::Camera;
    use proptest::prelude::*;

    fn shots(durs: &[u32]) -> Vec<Shot> {
        durs.iter()
            .enumerate()
            .map(|(i, d)| Shot {
                shot_id: format!("shot-{i:02}"),
                description: "x".into(),
                duration_s: *d,
                camera: Camera::Static,
                backend: None,
            })
            .collect()
    }

    fn default_quote(preset: &str, duration: u32) -> Quote {
        let c = Catalog::default();
        let p = c.preset(preset).unwrap();
        let params = QuoteParams {
            quality_floor: p.quality_threshold,
            cost_cap: p.cost_cap(duration),
            budget: None,
            planner: c.planner_cost,
            tolerance_percent: 20,
            excluded: &[],
            economy: false,
        };
        quote(&c, &shots(&split_duration(duration, c.max_shot_s)), &params).unwrap()
    }

    #[test]
    fn reference_quotes_of_domain_md() {
        let q = default_quote("quick_social", 30);
        assert_eq!(
            (q.shots.len(), q.shots[0].backend, q.total.micros()),
            (3, Backend::Replicate, 220_000)
        );
        let q = default_quote("brand_campaign", 60);
        assert_eq!(
            (q.shots.len(), q.shots[0].backend, q.total.micros()),
            (6, Backend::Runway, 910_000)
        );
        let q = default_quote("premium_spot", 120);
        assert_eq!(
            (q.shots.len(), q.shots[0].backend, q.total.micros()),
            (12, Backend::Runway, 1_810_000)
        );
    }

    #[test]
    fn open_circuits_and_budgets_steer_selection() {
        let c = Catalog::default();
        let base = Selection {
            shot_seconds: 8,
            quality_floor: 0.8,
            remaining: Money::from_cents(300),
            hard_limit: None,
            cap_remaining: Money::from_cents(300),
            excluded: &[Backend::Runway],
            preferred: None,
            economy: false,
        };
        assert_eq!(select_backend(&c, &base).unwrap().backend, Backend::Veo);
        let poor = Selection {
            hard_limit: Some(Money::from_cents(50)),
            ..base.clone()
        };
        assert_eq!(
            select_backend(&c, &poor).unwrap().backend,
            Backend::Replicate
        );
        let broke = Selection {
            hard_limit: Some(Money::from_cents(1)),
            ..base
        };
        assert!(select_backend(&c, &broke).is_none());
    }

    proptest! {
        #[test]
        fn split_is_exact_and_bounded(d in 1u32..=300, m in 1u32..=10) {
            let parts = split_duration(d, m);
            prop_assert_eq!(parts.iter().sum::<u32>(), d);
            prop_assert!(parts.iter().all(|&p| p >= 1 && p <= m));
            prop_assert_eq!(parts.len() as u32, d.div_ceil(m));
        }

        /// The quote is the planner plus the sum of its lines, never exceeds an explicit budget,
        /// and every selected backend can render its shot.
        #[test]
        fn quotes_add_up_and_respect_budgets(durs in proptest::collection::vec(1u32..=10, 1..15),
                                             budget in proptest::option::of(0i64..5_000_000),
                                             floor in 0.0f64..1.0, excl in 0usize..4) {
            let c = Catalog::default();
            let excluded: Vec<Backend> = Backend::ALL.iter().copied().take(excl).collect();
            let params = QuoteParams {
                quality_floor: floor,
                cost_cap: Money::from_cents(95),
                budget: budget.map(Money::from_micros),
                planner: c.planner_cost,
                tolerance_percent: 10,
                excluded: &excluded,
                economy: false,
            };
            match quote(&c, &shots(&durs), &params) {
                Ok(q) => {
                    prop_assert_eq!(q.total, q.planner + q.shots.iter().map(|s| s.cost).sum::<Money>());
                    if let Some(b) = budget { prop_assert!(q.total.micros() <= b.max(c.planner_cost.micros())); }
                    for (line, d) in q.shots.iter().zip(&durs) {
                        prop_assert!(!excluded.contains(&line.backend));
                        prop_assert!(c.backend(line.backend).unwrap().max_shot_s >= *d);
                    }
                    prop_assert!(q.guaranteed_max() >= q.total);
                }
                Err(QuoteError::NoBackendFits { .. }) => {
                    prop_assert!(budget.is_some() || excluded.len() == 3);
                }
            }
        }

        #[test]
        fn the_bill_never_exceeds_the_guarantee(metered in 0i64..10_000_000, total in 0i64..10_000_000, tol in 0u32..=20) {
            let q = Quote { planner: Money::ZERO, shots: vec![], total: Money::from_micros(total), tolerance_percent: tol, expected_render_seconds: 0 };
            let billed = certified_bill(Money::from_micros(metered), &q);
            prop_assert!(billed <= q.guaranteed_max());
            prop_assert!(billed.micros() <= metered);
        }
    }
}
