//! Month-to-date usage of a tenant.

use super::{App, Caller, limits};
use crate::domain::billing::{self, CostReport};
use crate::domain::{Money, Tier};
use crate::error::{Error, Result};
use crate::store::now_ms;

pub struct Usage {
    pub period_start_ms: i64,
    pub tier: Tier,
    pub jobs: u32,
    pub active_jobs: u32,
    pub concurrent_job_limit: u32,
    pub video_seconds: u64,
    pub included_minutes: u32,
    pub monthly_fee: Money,
    pub metered: Money,
    /// Exactly the sum of this month's certified bills.
    pub billed: Money,
    /// Current bills of this month's jobs not yet terminal.
    pub pending: Money,
    pub certified_jobs: u32,
    pub monthly_budget: Option<Money>,
    pub budget_used_percent: f64,
    pub job_quota: Option<u32>,
    pub jobs_total: u32,
    pub requests_per_minute: u32,
}

impl App {
    pub async fn usage(&self, caller: &Caller) -> Result<Usage> {
        let now = now_ms();
        let start = limits::month_start_ms(now);
        let tenant = self
            .store
            .tenant(&caller.tenant_id)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("caller's tenant is missing")))?;
        let tier = tenant.tier_at(now);
        let spec = self.config.catalog.tier(tier);
        let (active_jobs, jobs_total) = self.store.job_counts(&caller.tenant_id).await?;
        let (spent, metered) = self
            .store
            .spend_since(&caller.tenant_id, caller.sandbox, start)
            .await?;
        let month = self
            .store
            .month_usage(&caller.tenant_id, caller.sandbox, start)
            .await?;
        let budget_used_percent = match tenant.monthly_budget {
            Some(b) if b.micros() > 0 => {
                (spent.micros() as f64 * 10_000.0 / b.micros() as f64).round() / 100.0
            }
            _ => 0.0,
        };
        Ok(Usage {
            period_start_ms: start,
            tier,
            jobs: month.jobs,
            active_jobs,
            concurrent_job_limit: spec.concurrent_jobs,
            video_seconds: month.delivered_seconds,
            included_minutes: spec.included_minutes,
            monthly_fee: spec.monthly_fee,
            metered,
            billed: month.billed,
            pending: month.pending,
            certified_jobs: month.certified_jobs,
            monthly_budget: tenant.monthly_budget,
            budget_used_percent,
            job_quota: tenant.job_quota,
            jobs_total,
            requests_per_minute: spec.requests_per_minute,
        })
    }
}

impl App {
    /// A job's cost report (certified once the job is terminal).
    pub async fn job_costs(&self, caller: &Caller, job_id: &str) -> Result<CostReport> {
        let job = self.job(caller, job_id).await?;
        let ledger = self.store.ledger(&job.id).await?;
        Ok(billing::cost_report(&job, ledger))
    }
}
