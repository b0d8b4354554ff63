//! Quotes, estimates, cost reports and usage.

use super::{backend_pb, measurement_pb, shots_from, tier_pb, ts};
use crate::app::estimate::{Estimate, EstimateInput};
use crate::app::usage::Usage;
use crate::domain::billing::CostReport;
use crate::domain::catalog::Catalog;
use crate::domain::job::LedgerKind;
use crate::domain::manifest;
use crate::domain::pricing::Quote;
use crate::domain::spec;
use crate::domain::validate::Violations;
use crate::error::{Error, Result};
use crate::pb;

pub fn quote_pb(q: &Quote) -> pb::Quote {
    pb::Quote {
        total_micros: q.total.micros(),
        planner_micros: q.planner.micros(),
        shots: q
            .shots
            .iter()
            .map(|s| pb::ShotQuote {
                shot_id: s.shot_id.clone(),
                backend: backend_pb(s.backend) as i32,
                duration_s: s.duration_s,
                cost_micros: s.cost.micros(),
                quality: s.quality,
            })
            .collect(),
        guaranteed_max_micros: q.guaranteed_max().micros(),
        tolerance_percent: q.tolerance_percent,
        expected_quality: if q.shots.is_empty() {
            0.0
        } else {
            q.expected_quality()
        },
        expected_render_seconds: q.expected_render_seconds,
    }
}

/// A job's cost report as the API shows it.
pub fn cost_report_pb(job_id: &str, r: &CostReport) -> pb::CostReport {
    pb::CostReport {
        job_id: job_id.to_string(),
        quote_micros: r.quote.micros(),
        ledger: r
            .ledger
            .iter()
            .map(|l| pb::LedgerLine {
                kind: match l.kind {
                    LedgerKind::Planner => pb::LedgerKind::Planner,
                    LedgerKind::Render => pb::LedgerKind::Render,
                    LedgerKind::Rerender => pb::LedgerKind::Rerender,
                } as i32,
                shot_id: l.shot_id.clone().unwrap_or_default(),
                backend: l.backend.map_or(pb::Backend::Unspecified, backend_pb) as i32,
                seconds: l.seconds,
                amount_micros: l.amount.micros(),
                attempt: l.attempt,
                succeeded: l.succeeded,
                create_time: Some(ts(l.at_ms)),
                measurement: l.measurement.as_ref().map(measurement_pb),
            })
            .collect(),
        metered_micros: r.metered.micros(),
        variance_percent: r.variance_percent,
        guaranteed_max_micros: r.guaranteed_max.micros(),
        billed_micros: r.billed.micros(),
        absorbed_micros: r.absorbed.micros(),
        within_guarantee: r.within_guarantee,
        certified: r.certified,
        tolerance_percent: r.tolerance_percent,
    }
}

/// Month-to-date usage as the API shows it.
pub fn usage_pb(u: &Usage) -> pb::GetUsageResponse {
    pb::GetUsageResponse {
        period_start_time: Some(ts(u.period_start_ms)),
        tier: tier_pb(u.tier) as i32,
        jobs: u.jobs,
        active_jobs: u.active_jobs,
        concurrent_job_limit: u.concurrent_job_limit,
        video_minutes: u.video_seconds as f64 / 60.0,
        included_minutes: u.included_minutes,
        monthly_fee_micros: u.monthly_fee.micros(),
        metered_micros: u.metered.micros(),
        billed_micros: u.billed.micros(),
        monthly_budget_micros: u.monthly_budget.map(|b| b.micros()),
        budget_used_percent: u.budget_used_percent,
        job_quota: u.job_quota,
        jobs_total: u.jobs_total,
        requests_per_minute: u.requests_per_minute,
        pending_micros: u.pending.micros(),
        certified_jobs: u.certified_jobs,
    }
}

pub fn estimate_input(r: pb::EstimateCostRequest, catalog: &Catalog) -> Result<EstimateInput> {
    let mut v = Violations::new();
    let preset = spec::check_preset(catalog, &r.preset_id, &mut v);
    v.text("brief", &r.brief, 0, spec::MAX_BRIEF_CHARS);
    v.identifier("brand_id", &r.brand_id, 128, "._-", false);
    let budget = spec::check_budget(r.budget_micros, &mut v);
    let shots = if r.shots.is_empty() {
        None
    } else {
        Some(shots_from(&r.shots, "", &mut v))
    };
    // With a shot list and no duration, the shot list sets the duration.
    let duration = r
        .duration_s
        .or_else(|| shots.as_ref().map(|s| s.iter().map(|s| s.duration_s).sum()));
    let duration_s = spec::check_duration(preset, duration, &mut v);
    if let Some(s) = &shots {
        manifest::validate_shots(s, duration_s, catalog, "", &mut v);
    }
    v.finish().map_err(Error::InvalidArgument)?;
    Ok(EstimateInput {
        preset_id: r.preset_id,
        duration_s,
        brief: r.brief,
        brand_id: r.brand_id,
        budget,
        shots,
    })
}
pub fn estimate_pb(e: &Estimate) -> pb::EstimateCostResponse {
    pb::EstimateCostResponse {
        preset_id: e.preset_id.clone(),
        duration_s: e.duration_s,
        recommended: Some(quote_pb(&e.recommended)),
        options: e
            .options
            .iter()
            .map(|o| pb::BackendOption {
                backend: backend_pb(o.backend) as i32,
                cost_micros: o.cost.micros(),
                quality: o.quality,
                expected_render_seconds: o.expected_render_seconds,
                meets_quality_floor: o.meets_quality_floor,
                within_preset_cap: o.within_preset_cap,
                within_budget: o.within_budget,
                can_render: o.can_render,
                reason: o.reason.clone(),
                recommended_shots: o.recommended_shots,
            })
            .collect(),
        competitors: e
            .competitors
            .iter()
            .map(|c| pb::CompetitorPrice {
                name: c.name.clone(),
                price_per_minute_micros: c.price_per_minute.micros(),
                cost_micros: c.cost.micros(),
                savings_micros: c.savings.micros(),
                savings_percent: c.savings_percent,
            })
            .collect(),
        brand_cache_hit: e.brand_cache_hit,
        within_budget: e.within_budget,
        reason: e.reason.clone(),
    }
}
