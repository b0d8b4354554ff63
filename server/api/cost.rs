//! CostEstimatorService.

use super::convert::{cost_report_pb, estimate_input, estimate_pb, require_id, usage_pb};
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
        let input = estimate_input(req.into_inner(), self.app.catalog())?;
        let estimate = self.app.estimate(&who, input).await?;
        Ok(Response::new(estimate_pb(estimate)))
    }

    async fn get_job_costs(
        &self,
        req: Request<GetJobCostsRequest>,
    ) -> Result<Response<GetJobCostsResponse>, Status> {
        let who = caller(&req)?;
        let job_id = &req.get_ref().job_id;
        require_id("job_id", job_id)?;
        let report = self.app.job_costs(&who, job_id).await?;
        Ok(Response::new(GetJobCostsResponse {
            report: Some(cost_report_pb(job_id, &report)),
        }))
    }

    async fn get_usage(
        &self,
        req: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let who = caller(&req)?;
        let usage = self.app.usage(&who).await?;
        Ok(Response::new(usage_pb(&usage)))
    }
}
