//! CostEstimatorService.

use super::convert::{cost_report_pb, estimate_input, estimate_pb, require_id, usage_pb};
use super::wire::{self, WireCodec};
use super::{Api, caller};
use crate::app::estimate::Priced;
use crate::pb::cost_estimator_service_server::CostEstimatorService;
use crate::pb::*;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::Arc;
use tonic::{Request, Response, Status};

impl Api {
    async fn priced(&self, req: Request<EstimateCostRequest>) -> Result<Arc<Priced>, Status> {
        let who = caller(&req)?;
        let input = estimate_input(req.into_inner(), self.app.catalog())?;
        Ok(self.app.estimate(&who, input).await?)
    }
}

const ESTIMATE_COST: &str = "/aiprod.v1.CostEstimatorService/EstimateCost";

/// EstimateCost in the fast lane (`wire::FastLane`): its answer is encoded once per cached
/// estimate (`wire::WireCodec`) rather than converted and encoded on every call.
pub const FAST_LANE: &[(&str, wire::Serve)] = &[(ESTIMATE_COST, |api, max, req| {
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(WireCodec::<EstimateCostRequest>::new(8192))
            .apply_max_message_size_config(Some(max), None);
        grpc.unary(EstimateCostWire(api), req).await
    })
})];

struct EstimateCostWire(Api);

impl tonic::server::UnaryService<EstimateCostRequest> for EstimateCostWire {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, req: Request<EstimateCostRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let priced = api.priced(req).await?;
            Ok(Response::new(
                priced.wire(|e| wire::encode(&estimate_pb(e))),
            ))
        })
    }
}

#[tonic::async_trait]
impl CostEstimatorService for Api {
    async fn estimate_cost(
        &self,
        req: Request<EstimateCostRequest>,
    ) -> Result<Response<EstimateCostResponse>, Status> {
        let priced = self.priced(req).await?;
        Ok(Response::new(estimate_pb(&priced.estimate)))
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
