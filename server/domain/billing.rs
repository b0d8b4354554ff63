//! The cost report and month-to-date usage: pure arithmetic over a job's ledger and bills.

use super::Money;
use super::job::{Job, LedgerEntry};

/// A job's cost report (GetJobCosts).
#[derive(Clone, Debug, PartialEq)]
pub struct CostReport {
    pub quote: Money,
    pub ledger: Vec<LedgerEntry>,
    /// Every billable call: the sum of the ledger.
    pub metered: Money,
    /// (metered − quote) / quote in percent, to two decimals (0 without a quote).
    pub variance_percent: f64,
    /// quote × (1 + tolerance): the most that can be billed.
    pub guaranteed_max: Money,
    /// min(billable metered, guaranteed max); final once certified.
    pub billed: Money,
    /// What the service absorbs: metered − billed (failed attempts, overruns).
    pub absorbed: Money,
    pub within_guarantee: bool,
    /// The job is terminal: the bill is final.
    pub certified: bool,
    pub tolerance_percent: u32,
}

/// The report of a job and its ledger.
pub fn cost_report(job: &Job, ledger: Vec<LedgerEntry>) -> CostReport {
    let quote = job.quote.as_ref();
    let quote_total = quote.map_or(Money::ZERO, |q| q.total);
    let guaranteed = quote.map_or(Money::ZERO, |q| q.guaranteed_max());
    let billed = job.billed.unwrap_or_else(|| job.current_bill());
    let variance_percent = if quote_total.micros() > 0 {
        ((job.metered.micros() - quote_total.micros()) as f64 * 10_000.0
            / quote_total.micros() as f64)
            .round()
            / 100.0
    } else {
        0.0
    };
    CostReport {
        quote: quote_total,
        ledger,
        metered: job.metered,
        variance_percent,
        guaranteed_max: guaranteed,
        billed,
        absorbed: (job.metered - billed).max(Money::ZERO),
        within_guarantee: quote.is_none() || billed <= guaranteed,
        certified: job.state.is_terminal(),
        tolerance_percent: job.tolerance_percent,
    }
}

/// This month's bills of a set of jobs (one mode: live or sandbox).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BillTotals {
    /// The sum of certified bills (terminal jobs): what the month has billed.
    pub billed: Money,
    /// The current bills of jobs not yet terminal: not billed yet, shown apart.
    pub pending: Money,
    pub certified_jobs: u32,
    /// Video seconds delivered.
    pub delivered_seconds: u64,
}

/// Reconciles usage with the cost reports: `billed` is exactly the sum of the certified reports'
/// `billed`, and `pending` the sum of the others'.
pub fn bill_totals(jobs: &[Job]) -> BillTotals {
    let mut t = BillTotals::default();
    for j in jobs {
        let bill = j.billed.unwrap_or_else(|| j.current_bill());
        if j.state.is_terminal() {
            t.billed += bill;
            t.certified_jobs += 1;
        } else {
            t.pending += bill;
        }
        if j.state == super::JobState::Delivered {
            t.delivered_seconds += u64::from(j.spec.duration_s);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobState;
    use crate::domain::job::{JobSpec, LedgerKind};
    use crate::domain::pricing::Quote;
    use proptest::prelude::*;

    fn job(quote: Option<i64>, tolerance: u32) -> Job {
        Job {
            id: "job_1".into(),
            tenant_id: "ten_1".into(),
            request_id: "r".into(),
            fingerprint: String::new(),
            spec: JobSpec {
                preset_id: "quick_social".into(),
                brief: "a brief long enough".into(),
                brand_id: String::new(),
                duration_s: 30,
                aspect_ratio: Default::default(),
                language: "en".into(),
                budget: None,
                auto_approve: false,
                labels: Default::default(),
            },
            sandbox: true,
            state: JobState::Rendering,
            quality_floor: 0.6,
            tolerance_percent: tolerance,
            final_review: false,
            fast_track: true,
            economy: false,
            manifest: None,
            quote: quote.map(|t| Quote {
                planner: Money::ZERO,
                shots: vec![],
                total: Money::from_micros(t),
                tolerance_percent: tolerance,
                expected_render_seconds: 0,
            }),
            brand_cache_hit: false,
            shots: vec![],
            metered: Money::ZERO,
            billable: Money::ZERO,
            failure: None,
            status_message: String::new(),
            video: None,
            sla_met: None,
            billed: None,
            last_seq: 0,
            created_ms: 0,
            updated_ms: 0,
            ledger_lines: None,
            pending_events: vec![],
            pending_ledger: vec![],
            dirty: false,
        }
    }

    fn entry(amount: i64, succeeded: bool) -> LedgerEntry {
        LedgerEntry {
            kind: LedgerKind::Render,
            shot_id: Some("shot-01".into()),
            backend: None,
            seconds: 10,
            amount: Money::from_micros(amount),
            attempt: 1,
            succeeded,
            at_ms: 0,
            measurement: None,
        }
    }

    prop_compose! {
        fn charged_job()(quote in proptest::option::of(1i64..2_000_000), tol in prop_oneof![Just(10u32), Just(20u32)],
                         lines in proptest::collection::vec((1i64..400_000, any::<bool>()), 0..12),
                         end in 0usize..4) -> (Job, Vec<LedgerEntry>) {
            let mut j = job(quote, tol);
            for (amount, ok) in lines {
                j.charge(entry(amount, ok));
            }
            let ledger = std::mem::take(&mut j.pending_ledger);
            match end {
                0 => {}
                1 => { j.state = JobState::QualityCheck; j.cancel("x").unwrap(); }
                2 => { j.fail(crate::domain::job::FailureReason::AllBackendsFailed, "x").unwrap(); }
                _ => { j.state = JobState::AwaitingFinalApproval; }
            }
            (j, ledger)
        }
    }

    proptest! {
        /// The report adds up: metered is the ledger's sum, billed = min(billable, guaranteed
        /// max), absorbed = metered − billed, and the guarantee always holds.
        #[test]
        fn the_cost_report_adds_up((j, ledger) in charged_job()) {
            let billable: Money = ledger.iter().filter(|l| l.succeeded).map(|l| l.amount).sum();
            let r = cost_report(&j, ledger.clone());
            prop_assert_eq!(r.metered, ledger.iter().map(|l| l.amount).sum::<Money>());
            let expected = match &j.quote { Some(q) => billable.min(q.guaranteed_max()), None => billable };
            prop_assert_eq!(r.billed, expected);
            prop_assert_eq!(r.absorbed, r.metered - r.billed);
            prop_assert!(r.billed <= r.metered);
            prop_assert!(r.within_guarantee);
            prop_assert_eq!(r.certified, j.state.is_terminal());
        }

        /// Usage reconciles with the reports: billed is exactly the sum of certified bills,
        /// pending the sum of the others.
        #[test]
        fn usage_reconciles_with_the_reports(jobs in proptest::collection::vec(charged_job(), 0..8)) {
            let jobs: Vec<Job> = jobs.into_iter().map(|(j, _)| j).collect();
            let t = bill_totals(&jobs);
            let reports: Vec<CostReport> = jobs.iter().map(|j| cost_report(j, vec![])).collect();
            prop_assert_eq!(t.billed, reports.iter().filter(|r| r.certified).map(|r| r.billed).sum::<Money>());
            prop_assert_eq!(t.pending, reports.iter().filter(|r| !r.certified).map(|r| r.billed).sum::<Money>());
            prop_assert_eq!(t.certified_jobs as usize, reports.iter().filter(|r| r.certified).count());
        }
    }
}
