//! CostEstimatorService.

use super::convert::{cost_report_pb, estimate_input, estimate_pb, require_id};
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
}
