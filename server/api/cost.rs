//! CostEstimatorService.

use super::convert::{cost_report_pb, estimate_input, estimate_pb, require_id, tier_pb, ts};
use super::{Api, caller};
use crate::pb::cost_estimator_service_server::CostEstimatorService;
use crate::pb::*;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl CostEstimatorService for Api {
    async fn estimate_cost(
        &self,
        req: Request<EstimateCostRequest>,
    ) -> Result<Response<EstimateCostResponse>, Status> {
        let who = caller(&req)?;
        let input = estimate_input(req.into_inner(), &self.app.config.catalog)?;
        let estimate = self.app.estimate(&who, input).await?;
        Ok(Response::new(estimate_pb(estimate)))
    }

    async fn get_job_costs(
        &self,
        req: Request<GetJobCostsRequest>,
    ) -> Result<Response<GetJobCostsResponse>, Status> {
        let who = caller(&req)?;
        require_id("job_id", &req.get_ref().job_id)?;
        let job = self.app.job(&who, &req.get_ref().job_id).await?;
        let ledger = self.app.store.ledger(&job.id).await.map_err(Status::from)?;
        Ok(Response::new(GetJobCostsResponse {
            report: Some(cost_report_pb(&job, &ledger)),
        }))
    }

    async fn get_usage(
        &self,
        req: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let who = caller(&req)?;
        let u = self.app.usage(&who).await?;
        Ok(Response::new(GetUsageResponse {
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
        }))
    }
}
