//! Cost estimates: the quote for every backend option side by side, before anything is spent.

use super::{App, Caller};
use crate::domain::manifest::Shot;
use crate::domain::pricing::{self, OptionContext, Quote, QuoteError, QuoteParams, split_duration};
use crate::domain::{Backend, Money, planner};
use crate::error::{Error, Result};
use crate::store::now_ms;
use bytes::Bytes;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

pub use crate::domain::pricing::BackendOption;

#[derive(Clone)]
pub struct CompetitorQuote {
    pub name: String,
    pub price_per_minute: Money,
    pub cost: Money,
    pub savings: Money,
    pub savings_percent: f64,
}

#[derive(Clone)]
pub struct Estimate {
    pub preset_id: String,
    pub duration_s: u32,
    pub recommended: Quote,
    pub options: Vec<BackendOption>,
    pub competitors: Vec<CompetitorQuote>,
    pub brand_cache_hit: bool,
    /// Whether `recommended` fits the budget; when not, it is the cheapest plan meeting the floor.
    pub within_budget: bool,
    /// Why the recommended quote is what it is, or why nothing fits the budget.
    pub reason: String,
}

/// What a refused quote answers: providers that are not configured, open circuits (retry), or a
/// budget below the cheapest quote meeting the floor (which the message names).
pub fn quote_refusal(e: QuoteError, not_configured: &[Backend], retry_after: Duration) -> Error {
    match &e {
        QuoteError::NoCompliantBackend { unavailable, .. }
            if unavailable.iter().any(|b| not_configured.contains(b)) =>
        {
            let names: Vec<&str> = not_configured.iter().map(|b| b.as_str()).collect();
            Error::precondition(
                "PROVIDERS_NOT_CONFIGURED",
                "providers",
                format!(
                    "{e}: the render providers {} are not configured on this server for live keys (test keys render on the sandbox)",
                    names.join(", ")
                ),
            )
        }
        QuoteError::NoCompliantBackend { unavailable, .. } if !unavailable.is_empty() => {
            Error::Unavailable {
                message: format!("{e} (circuit open after failures); retry shortly"),
                retry_after,
            }
        }
        QuoteError::NoCompliantBackend { .. } => {
            Error::precondition("QUALITY_FLOOR", "preset_id", e.to_string())
        }
        QuoteError::OverBudget { .. } => {
            Error::precondition("BUDGET", "budget_micros", e.to_string())
        }
    }
}

impl App {
    /// Backends a job of this mode cannot use now, with why.
    pub fn unavailable_with_reasons(&self, sandbox: bool) -> Vec<(Backend, &'static str)> {
        let not_configured = self.not_configured(sandbox);
        self.unavailable_backends(sandbox)
            .into_iter()
            .map(|b| {
                let why = if not_configured.contains(&b) {
                    "provider not configured"
                } else {
                    "circuit open after failures"
                };
                (b, why)
            })
            .collect()
    }

    /// Backends with no adapter for this mode (live providers without a key).
    pub fn not_configured(&self, sandbox: bool) -> Vec<Backend> {
        let set = self.backend_set(sandbox);
        Backend::ALL
            .into_iter()
            .filter(|b| set.get(*b).is_none())
            .collect()
    }

    /// How long a retry should wait for an open circuit's half-open trial.
    pub fn circuit_cooldown(&self) -> Duration {
        Duration::from_secs(self.config.circuit.cooldown_s.max(1))
    }

    /// The estimate, shared with every call of the same inputs while it is cached.
    pub async fn estimate(&self, caller: &Caller, input: EstimateInput) -> Result<Arc<Priced>> {
        let (key, estimate) = self.estimate_cached(caller, input).await?;
        if let Some(key) = key {
            self.estimates.put(key, &estimate);
        }
        Ok(estimate)
    }

    /// The estimate, from the cache when its inputs were priced before; with the key to cache it
    /// under when it was computed here.
    async fn estimate_cached(
        &self,
        caller: &Caller,
        input: EstimateInput,
    ) -> Result<(Option<EstimateKey>, Arc<Priced>)> {
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
        let unavailable = self.unavailable_with_reasons(caller.sandbox);
        // Pricing reads nothing of the planner's shot list but the shot ids and durations, which
        // depend on the duration alone (not on the brief): without an explicit shot list, the
        // estimate is a function of this key.
        let key = input.shots.is_none().then(|| EstimateKey {
            tier: caller.tier,
            preset_id: preset.id.clone(),
            duration_s: input.duration_s,
            budget: input.budget,
            brand_cache_hit: cache_hit,
            unavailable: unavailable.clone(),
        });
        if let Some(hit) = key.as_ref().and_then(|k| self.estimates.get(k)) {
            return Ok((None, hit));
        }
        let shots = match input.shots.as_ref() {
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
        let excluded: Vec<Backend> = unavailable.iter().map(|(b, _)| *b).collect();
        let params = QuoteParams {
            quality_floor: preset.quality_threshold,
            cost_cap: cap,
            budget: input.budget,
            planner: planner_cost,
            tolerance_percent: tolerance,
            excluded: &excluded,
            economy: false,
        };
        let limit = input.budget.unwrap_or(cap);
        let rule = pricing::policy_rule(catalog, limit - planner_cost, false);
        // A budget nothing fits is an answer, not an error: every option with why, and the
        // cheapest quote meeting the floor as the recommendation.
        let (recommended, within_budget, reason) = match pricing::quote(catalog, &shots, &params) {
            Ok(q) => (q, true, format!("the selection policy picks {rule}")),
            Err(QuoteError::OverBudget { budget, cheapest }) => {
                let reason = QuoteError::OverBudget {
                    budget,
                    cheapest: cheapest.clone(),
                }
                .to_string();
                (
                    *cheapest,
                    false,
                    format!("{reason}; CreateJob with this budget is refused"),
                )
            }
            Err(e) => {
                return Err(quote_refusal(
                    e,
                    &self.not_configured(caller.sandbox),
                    self.circuit_cooldown(),
                ));
            }
        };
        let options = pricing::backend_options(
            catalog,
            |spec| match &input.shots {
                Some(s) => s.iter().map(|s| s.duration_s).collect(),
                None => split_duration(input.duration_s, spec.max_shot_s.min(catalog.max_shot_s)),
            },
            &OptionContext {
                quality_floor: preset.quality_threshold,
                cost_cap: cap,
                budget: input.budget,
                planner: planner_cost,
                unavailable: &unavailable,
                recommended: &recommended,
                rule: if within_budget {
                    rule
                } else {
                    "the cheapest plan meeting the floor (over the budget)"
                },
            },
        );
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
        let estimate = Estimate {
            preset_id: preset.id.clone(),
            duration_s: input.duration_s,
            recommended,
            options,
            competitors,
            brand_cache_hit: cache_hit,
            within_budget,
            reason,
        };
        Ok((key, Arc::new(Priced::new(estimate))))
    }
}

/// An estimate shared by the calls with the same inputs while it is cached, with its wire form:
/// made once, by the first call that sends it (pricing and the answer's encoding are pure given
/// the inputs).
pub struct Priced {
    pub estimate: Estimate,
    wire: OnceLock<Bytes>,
}

impl Priced {
    pub fn new(estimate: Estimate) -> Priced {
        Priced {
            estimate,
            wire: OnceLock::new(),
        }
    }

    /// The estimate's wire form, made by `encode` on first use.
    pub fn wire(&self, encode: impl FnOnce(&Estimate) -> Bytes) -> Bytes {
        self.wire.get_or_init(|| encode(&self.estimate)).clone()
    }
}

/// What a computed estimate depends on besides the (fixed) catalog: the tier (its cost tolerance),
/// the preset, duration and budget, whether the brand's plan is cached (no planner cost), and the
/// backends unavailable for the key's mode (not configured, open circuits) with why.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EstimateKey {
    tier: crate::domain::Tier,
    preset_id: String,
    duration_s: u32,
    budget: Option<Money>,
    brand_cache_hit: bool,
    unavailable: Vec<(Backend, &'static str)>,
}

/// A small bounded cache of estimates: a handful of presets, durations and budgets cover most
/// calls; when full it starts again (no eviction bookkeeping on the hot path).
#[derive(Default)]
pub struct EstimateCache {
    entries: std::sync::Mutex<std::collections::HashMap<EstimateKey, Arc<Priced>>>,
}

const ESTIMATE_CACHE_MAX: usize = 512;

impl EstimateCache {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<EstimateKey, Arc<Priced>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &EstimateKey) -> Option<Arc<Priced>> {
        self.lock().get(key).cloned()
    }

    fn put(&self, key: EstimateKey, estimate: &Arc<Priced>) {
        let mut entries = self.lock();
        if entries.len() >= ESTIMATE_CACHE_MAX {
            entries.clear();
        }
        entries.insert(key, estimate.clone());
    }
}
