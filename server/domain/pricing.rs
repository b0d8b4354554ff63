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
    /// What this shot must never exceed (an explicit job budget's remainder, less what the
    /// job's other shots need at least), if anything.
    pub hard_limit: Option<Money>,
    /// What this shot may cost while the job stays under the preset's cost cap.
    pub cap_remaining: Money,
    /// Backends with an open circuit, not configured, or already tried for this attempt.
    pub excluded: &'a [Backend],
    /// The shot's own backend preference, honoured when it is a candidate.
    pub preferred: Option<Backend>,
    /// Steer to the cheapest backend (the tenant has spent 90 % of its monthly budget).
    pub economy: bool,
    /// Only backends that meet the quality floor are candidates (quotes). At render time a
    /// fallback may land below the floor so that the job still renders (`sla_met = false`).
    pub require_floor: bool,
}

/// The selection policy: one pure function (domain.md, "Selection per shot").
///
/// Candidates are the backends not excluded that can render the shot, never exceed the hard
/// limit and (for quotes) meet the quality floor. A shot preference is honoured when it is a
/// candidate. Among the candidates, those meeting the floor come first (below it only when none
/// does, at render time), and of those, the ones that keep the job within the preset's cost cap
/// whenever there are any. Then: economy (monthly budget nearly spent) or a remaining budget
/// ≤ `economy_budget` → the cheapest; ≥ `premium_budget` → the best quality; otherwise the first
/// in priority order (the catalog's order).
pub fn select_backend<'c>(catalog: &'c Catalog, s: &Selection<'_>) -> Option<&'c BackendSpec> {
    let cost = |b: &BackendSpec| b.shot_cost(s.shot_seconds);
    let meets = |b: &BackendSpec| b.quality >= s.quality_floor;
    let candidates: Vec<&BackendSpec> = catalog
        .backends
        .iter()
        .filter(|b| !s.excluded.contains(&b.backend))
        .filter(|b| b.max_shot_s >= s.shot_seconds)
        .filter(|b| !s.require_floor || meets(b))
        .filter(|b| s.hard_limit.is_none_or(|limit| cost(b) <= limit))
        .collect();
    if let Some(p) = s
        .preferred
        .filter(|_| !s.economy)
        .and_then(|p| candidates.iter().find(|b| b.backend == p))
    {
        return Some(p);
    }
    // The floor comes first: below it only when no candidate meets it (render-time fallback).
    let meeting: Vec<&BackendSpec> = candidates.iter().copied().filter(|b| meets(b)).collect();
    let able = if meeting.is_empty() {
        candidates
    } else {
        meeting
    };
    // Then the preset's cap, whenever some of those can keep within it.
    let within_cap: Vec<&BackendSpec> = able
        .iter()
        .copied()
        .filter(|b| cost(b) <= s.cap_remaining)
        .collect();
    let pool = if within_cap.is_empty() {
        able
    } else {
        within_cap
    };
    let cheapest = || pool.iter().copied().min_by_key(|b| cost(b));
    if s.economy || s.remaining <= catalog.economy_budget {
        cheapest()
    } else if s.remaining >= catalog.premium_budget {
        pool.iter()
            .copied()
            .max_by(|a, b| a.quality.total_cmp(&b.quality).then(cost(b).cmp(&cost(a))))
    } else {
        // Priority order is the catalog's order.
        pool.first().copied()
    }
}

/// The name of the policy branch a job's remaining budget selects (for explanations).
pub fn policy_rule(catalog: &Catalog, remaining: Money, economy: bool) -> &'static str {
    if economy {
        "the cheapest backend meeting the floor (the monthly budget is 90 % spent)"
    } else if remaining <= catalog.economy_budget {
        "the cheapest backend meeting the floor"
    } else if remaining >= catalog.premium_budget {
        "the best quality within the budget and the cap"
    } else {
        "the first backend in priority order meeting the floor within the cap"
    }
}

/// The backend of a shot's one quality re-render, if an attempt there can help: available, able to
/// render the shot, nominally meeting the floor (so never a backend that cannot reach it — a
/// re-render there would be paid for nothing), at least as good as the one that rendered it, and
/// within what is left (`remaining`: the job's budget, or its guarantee, less what is billable).
/// The best such backend; `None` delivers the shot as it is (`sla_met = false`).
pub fn rerender_backend(
    catalog: &Catalog,
    shot_seconds: u32,
    quality_floor: f64,
    rendered_on: Backend,
    unavailable: &[Backend],
    remaining: Money,
) -> Option<Backend> {
    let current = catalog.backend(rendered_on).map_or(0.0, |b| b.quality);
    catalog
        .backends
        .iter()
        .filter(|b| !unavailable.contains(&b.backend) && b.max_shot_s >= shot_seconds)
        .filter(|b| b.quality >= quality_floor && b.quality >= current)
        .filter(|b| b.shot_cost(shot_seconds) <= remaining)
        .max_by(|a, b| {
            a.quality
                .total_cmp(&b.quality)
                .then(b.shot_cost(shot_seconds).cmp(&a.shot_cost(shot_seconds)))
        })
        .map(|b| b.backend)
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
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QuoteError {
    /// No available backend that meets the quality floor can render a shot.
    #[error(
        "no available backend meeting the quality floor {quality_floor} can render shot {shot_id} ({seconds} s){}",
        unavailable_note(.unavailable)
    )]
    NoCompliantBackend {
        shot_id: String,
        seconds: u32,
        quality_floor: f64,
        /// Backends that would qualify but are unavailable (not configured or circuit open).
        unavailable: Vec<Backend>,
    },
    /// The cheapest quote that meets the quality floor exceeds the job's budget.
    #[error(
        "the cheapest quote meeting the quality floor is {}, above the budget of {budget}",
        .cheapest.total
    )]
    OverBudget { budget: Money, cheapest: Box<Quote> },
}

fn unavailable_note(unavailable: &[Backend]) -> String {
    if unavailable.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = unavailable.iter().map(|b| b.as_str()).collect();
        format!("; unavailable: {}", names.join(", "))
    }
}

impl QuoteError {
    /// The typed reason a job fails with when its quote cannot be made.
    pub fn failure_reason(&self) -> super::job::FailureReason {
        match self {
            QuoteError::NoCompliantBackend { .. } => super::job::FailureReason::AllBackendsFailed,
            QuoteError::OverBudget { .. } => super::job::FailureReason::BudgetExhausted,
        }
    }
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

/// The cheapest backend meeting the floor that can render a shot of `seconds`.
fn cheapest_compliant<'c>(
    catalog: &'c Catalog,
    seconds: u32,
    p: &QuoteParams<'_>,
) -> Option<&'c BackendSpec> {
    catalog
        .backends
        .iter()
        .filter(|b| !p.excluded.contains(&b.backend) && b.max_shot_s >= seconds)
        .filter(|b| b.quality >= p.quality_floor)
        .min_by_key(|b| b.shot_cost(seconds))
}

fn line(shot: &Shot, b: &BackendSpec) -> ShotQuote {
    ShotQuote {
        shot_id: shot.shot_id.clone(),
        backend: b.backend,
        duration_s: shot.duration_s,
        cost: b.shot_cost(shot.duration_s),
        quality: b.quality,
    }
}

fn quote_of(lines: Vec<ShotQuote>, catalog: &Catalog, p: &QuoteParams<'_>) -> Quote {
    let render_seconds = lines
        .iter()
        .map(|l| {
            l.duration_s
                * catalog
                    .backend(l.backend)
                    .map_or(0, |b| b.render_seconds_per_video_second)
        })
        .sum();
    Quote {
        planner: p.planner,
        total: p.planner + lines.iter().map(|l| l.cost).sum::<Money>(),
        shots: lines,
        tolerance_percent: p.tolerance_percent,
        expected_render_seconds: render_seconds,
    }
}

/// The cheapest quote whose every shot meets the quality floor, ignoring budget and cap (what a
/// refusal names). Fails when some shot has no compliant backend at all.
pub fn cheapest_quote(
    catalog: &Catalog,
    shots: &[Shot],
    p: &QuoteParams<'_>,
) -> Result<Quote, QuoteError> {
    let mut lines = Vec::with_capacity(shots.len());
    for shot in shots {
        let b = cheapest_compliant(catalog, shot.duration_s, p).ok_or_else(|| {
            QuoteError::NoCompliantBackend {
                shot_id: shot.shot_id.clone(),
                seconds: shot.duration_s,
                quality_floor: p.quality_floor,
                unavailable: catalog
                    .backends
                    .iter()
                    .filter(|b| p.excluded.contains(&b.backend))
                    .filter(|b| b.max_shot_s >= shot.duration_s && b.quality >= p.quality_floor)
                    .map(|b| b.backend)
                    .collect(),
            }
        })?;
        lines.push(line(shot, b));
    }
    Ok(quote_of(lines, catalog, p))
}

/// Quotes a shot list by running the selection policy shot by shot. Every shot meets the quality
/// floor; the total never exceeds an explicit budget and stays within the preset's cap whenever a
/// compliant plan within it exists (each shot leaves the cheapest compliant cost of the shots
/// after it in reserve). When no compliant plan fits the budget, the refusal carries the cheapest
/// compliant quote.
pub fn quote(catalog: &Catalog, shots: &[Shot], p: &QuoteParams<'_>) -> Result<Quote, QuoteError> {
    let cheapest = cheapest_quote(catalog, shots, p)?;
    if let Some(budget) = p.budget
        && cheapest.total > budget
    {
        return Err(QuoteError::OverBudget {
            budget,
            cheapest: Box::new(cheapest),
        });
    }
    let limit = p.budget.unwrap_or(p.cost_cap);
    let mut spent = p.planner;
    let mut reserve: Money = cheapest.shots.iter().map(|l| l.cost).sum();
    let mut lines = Vec::with_capacity(shots.len());
    for (shot, floor_line) in shots.iter().zip(&cheapest.shots) {
        reserve -= floor_line.cost;
        let selection = Selection {
            shot_seconds: shot.duration_s,
            quality_floor: p.quality_floor,
            remaining: limit - spent,
            hard_limit: p.budget.map(|b| b - spent - reserve),
            cap_remaining: p.cost_cap - spent - reserve,
            excluded: p.excluded,
            preferred: shot.backend,
            economy: p.economy,
            require_floor: true,
        };
        // The cheapest compliant backend always fits what was reserved for it.
        let chosen = select_backend(catalog, &selection)
            .or_else(|| catalog.backend(floor_line.backend))
            .ok_or_else(|| QuoteError::NoCompliantBackend {
                shot_id: shot.shot_id.clone(),
                seconds: shot.duration_s,
                quality_floor: p.quality_floor,
                unavailable: vec![],
            })?;
        let l = line(shot, chosen);
        spent += l.cost;
        lines.push(l);
    }
    Ok(quote_of(lines, catalog, p))
}

/// One way to render the whole video: every shot on one backend, with why it was or was not
/// chosen by the selection policy.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendOption {
    pub backend: Backend,
    pub cost: Money,
    pub quality: f64,
    pub expected_render_seconds: u32,
    pub meets_quality_floor: bool,
    pub within_preset_cap: bool,
    pub within_budget: bool,
    /// Available and able to render every shot.
    pub can_render: bool,
    /// Shots of the recommended quote on this backend.
    pub recommended_shots: u32,
    pub reason: String,
}

/// What the options are compared against.
pub struct OptionContext<'a> {
    pub quality_floor: f64,
    pub cost_cap: Money,
    pub budget: Option<Money>,
    pub planner: Money,
    /// Unavailable backends with why (`"provider not configured"`, `"circuit open"`).
    pub unavailable: &'a [(Backend, &'static str)],
    pub recommended: &'a Quote,
    /// The policy rule that chose the recommended quote.
    pub rule: &'a str,
}

/// Every backend option side by side; `durations(spec)` is the shot list on that backend.
pub fn backend_options(
    catalog: &Catalog,
    durations: impl Fn(&BackendSpec) -> Vec<u32>,
    cx: &OptionContext<'_>,
) -> Vec<BackendOption> {
    let total_shots = cx.recommended.shots.len();
    catalog
        .backends
        .iter()
        .map(|spec| {
            let shots = durations(spec);
            let cost = cx.planner + shots.iter().map(|d| spec.shot_cost(*d)).sum::<Money>();
            let seconds: u32 = shots.iter().sum();
            let unavailable = cx
                .unavailable
                .iter()
                .find(|(b, _)| *b == spec.backend)
                .map(|(_, why)| *why);
            let long_enough = shots.iter().all(|d| *d <= spec.max_shot_s);
            let meets = spec.quality >= cx.quality_floor;
            let within_cap = cost <= cx.cost_cap;
            let within_budget = cx.budget.is_none_or(|b| cost <= b);
            let used = cx
                .recommended
                .shots
                .iter()
                .filter(|l| l.backend == spec.backend)
                .count();
            let reason = if used > 0 {
                format!("chosen for {used} of {total_shots} shots: {}", cx.rule)
            } else if let Some(why) = unavailable {
                format!("not available: {why}")
            } else if !long_enough {
                format!("cannot render shots longer than {} s", spec.max_shot_s)
            } else if !meets {
                format!(
                    "quality {} is below the preset's floor {}",
                    spec.quality, cx.quality_floor
                )
            } else if !within_budget {
                format!(
                    "costs {cost}, above the budget of {}",
                    cx.budget.unwrap_or_default()
                )
            } else if !within_cap {
                format!(
                    "costs {cost}, above the preset's cost cap of {}",
                    cx.cost_cap
                )
            } else {
                format!("meets the floor within the cap, not chosen: {}", cx.rule)
            };
            BackendOption {
                backend: spec.backend,
                cost,
                quality: spec.quality,
                expected_render_seconds: seconds * spec.render_seconds_per_video_second,
                meets_quality_floor: meets,
                within_preset_cap: within_cap,
                within_budget,
                can_render: long_enough && unavailable.is_none(),
                recommended_shots: used as u32,
                reason,
            }
        })
        .collect()
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
            require_floor: false,
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

    #[test]
    fn a_larger_budget_keeps_within_the_cap() {
        // quick_social 30 s with a $2 budget: the compliant plan within the $0.25 cap is kept.
        let c = Catalog::default();
        let p = c.preset("quick_social").unwrap();
        let params = QuoteParams {
            quality_floor: p.quality_threshold,
            cost_cap: p.cost_cap(30),
            budget: Some(Money::from_cents(200)),
            planner: c.planner_cost,
            tolerance_percent: 20,
            excluded: &[],
            economy: false,
        };
        let q = quote(&c, &shots(&split_duration(30, 10)), &params).unwrap();
        assert!(q.total <= p.cost_cap(30), "{}", q.total);
    }

    #[test]
    fn a_budget_never_buys_quality_below_the_floor() {
        // premium_spot (floor 0.9) with a budget only Replicate (0.75) could fit: refused, and
        // the refusal names the cheapest compliant quote.
        let c = Catalog::default();
        let p = c.preset("premium_spot").unwrap();
        let params = QuoteParams {
            quality_floor: p.quality_threshold,
            cost_cap: p.cost_cap(60),
            budget: Some(Money::from_cents(50)),
            planner: c.planner_cost,
            tolerance_percent: 10,
            excluded: &[],
            economy: false,
        };
        match quote(&c, &shots(&split_duration(60, 10)), &params) {
            Err(QuoteError::OverBudget { cheapest, .. }) => {
                assert_eq!(cheapest.total.micros(), 910_000);
                assert!(cheapest.shots.iter().all(|s| s.backend == Backend::Runway));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_hopeless_quality_rerender() {
        let c = Catalog::default();
        let all = Money::from_cents(10_000);
        // premium_spot (0.9) after a fallback to Replicate (0.75): Runway can reach the floor.
        assert_eq!(
            rerender_backend(&c, 10, 0.9, Backend::Replicate, &[], all),
            Some(Backend::Runway)
        );
        // Runway unavailable and Veo cannot render 10 s: nothing can reach 0.9, no re-render.
        assert_eq!(
            rerender_backend(&c, 10, 0.9, Backend::Replicate, &[Backend::Runway], all),
            None
        );
        // Nothing affordable: no re-render.
        assert_eq!(
            rerender_backend(&c, 10, 0.9, Backend::Replicate, &[], Money::from_cents(1)),
            None
        );
        // A dip below the floor on a backend that nominally meets it may retry there.
        assert_eq!(
            rerender_backend(&c, 10, 0.9, Backend::Runway, &[], all),
            Some(Backend::Runway)
        );
    }

    proptest! {
        #[test]
        fn split_is_exact_and_bounded(d in 1u32..=300, m in 1u32..=10) {
            let parts = split_duration(d, m);
            prop_assert_eq!(parts.iter().sum::<u32>(), d);
            prop_assert!(parts.iter().all(|&p| p >= 1 && p <= m));
            prop_assert_eq!(parts.len() as u32, d.div_ceil(m));
        }

        /// The selection policy over every preset, duration, budget, tier and set of healthy
        /// backends: a quote meets the floor on every shot, adds up, never exceeds the budget,
        /// keeps within the preset's cap whenever a compliant plan within it exists; a refusal
        /// happens only when no compliant plan fits, and names the cheapest compliant quote.
        #[test]
        fn the_selection_policy_holds(preset in 0usize..3, duration in 5u32..=180,
                                      budget in proptest::option::of(1i64..6_000_000),
                                      platinum in any::<bool>(), healthy in 0usize..8,
                                      economy in any::<bool>(), cache_hit in any::<bool>()) {
            let c = Catalog::default();
            let p = &c.presets[preset];
            let duration = duration.min(p.max_duration_s);
            let excluded: Vec<Backend> = Backend::ALL
                .iter()
                .enumerate()
                .filter(|(i, _)| healthy & (1 << i) == 0)
                .map(|(_, b)| *b)
                .collect();
            let params = QuoteParams {
                quality_floor: p.quality_threshold,
                cost_cap: p.cost_cap(duration),
                budget: budget.map(Money::from_micros),
                planner: if cache_hit { Money::ZERO } else { c.planner_cost },
                tolerance_percent: if platinum { 10 } else { 20 },
                excluded: &excluded,
                economy,
            };
            let list = shots(&split_duration(duration, c.max_shot_s));
            match quote(&c, &list, &params) {
                Ok(q) => {
                    prop_assert_eq!(q.total, q.planner + q.shots.iter().map(|s| s.cost).sum::<Money>());
                    for (line, shot) in q.shots.iter().zip(&list) {
                        let spec = c.backend(line.backend).unwrap();
                        prop_assert!(!excluded.contains(&line.backend));
                        prop_assert!(spec.max_shot_s >= shot.duration_s);
                        prop_assert!(line.quality >= p.quality_threshold, "{line:?} below the floor");
                    }
                    if let Some(b) = budget {
                        prop_assert!(q.total.micros() <= b, "{} over the budget {b}", q.total);
                    }
                    let cheapest = cheapest_quote(&c, &list, &params).unwrap();
                    if cheapest.total <= params.cost_cap {
                        prop_assert!(q.total <= params.cost_cap, "{} over the cap {}", q.total, params.cost_cap);
                    }
                    prop_assert!(q.guaranteed_max() >= q.total);
                }
                Err(QuoteError::OverBudget { budget: b, cheapest }) => {
                    prop_assert_eq!(Some(b.micros()), budget);
                    prop_assert!(cheapest.total > b);
                    // It is the cheapest compliant plan: each line is the cheapest able backend.
                    for (line, shot) in cheapest.shots.iter().zip(&list) {
                        prop_assert!(line.quality >= p.quality_threshold);
                        let min = c.backends.iter()
                            .filter(|s| !excluded.contains(&s.backend) && s.max_shot_s >= shot.duration_s && s.quality >= p.quality_threshold)
                            .map(|s| s.shot_cost(shot.duration_s))
                            .min();
                        prop_assert_eq!(Some(line.cost), min);
                    }
                }
                Err(QuoteError::NoCompliantBackend { seconds, .. }) => {
                    prop_assert!(!c.backends.iter().any(|s| !excluded.contains(&s.backend)
                        && s.max_shot_s >= seconds && s.quality >= p.quality_threshold));
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
