//! RenderService.

use super::convert::{create_job_input, event_pb, job_pb, job_pb_with, require_id, state_from};
use super::wire::{self, WireCodec};
use super::{Api, caller};
use crate::app::Caller;
use crate::app::jobs::JobFilter;
use crate::app::jobs::Watched;
use crate::app::jobs::parse_page_token;
use crate::domain::job::{Event, Job};
use crate::domain::spec;
use crate::domain::validate::Violations;
use crate::error::Error;
use crate::pb::render_service_server::RenderService;
use crate::pb::*;
use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

#[tonic::async_trait]
impl RenderService for Api {
    async fn create_job(
        &self,
        req: Request<CreateJobRequest>,
    ) -> Result<Response<CreateJobResponse>, Status> {
        let who = caller(&req)?;
        let input = create_job_input(req.into_inner(), self.app.catalog())?;
        let job = self.app.create_job(&who, input).await?;
        Ok(Response::new(CreateJobResponse {
            job: Some(job_pb(&job)),
        }))
    }

    // Served in the fast lane (`FAST_LANE`) from `JobWire` (`get_job_wire`); the generated route's answer is
    // the same message, built on every call.
    async fn get_job(
        &self,
        req: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        let who = caller(&req)?;
        require_id("job_id", &req.get_ref().job_id)?;
        let job = self.app.job(&who, &req.get_ref().job_id).await?;
        let links = self.app.download_links(&job).await;
        Ok(Response::new(GetJobResponse {
            job: Some(job_pb_with(&job, &links)),
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check(
            r.page_size <= MAX_PAGE_SIZE,
            "page_size",
            format!("must be at most {MAX_PAGE_SIZE}"),
        );
        let token = if r.page_token.is_empty() {
            None
        } else {
            parse_page_token(&r.page_token)
        };
        v.check(
            r.page_token.is_empty() || token.is_some(),
            "page_token",
            "is not a token returned by ListJobs",
        );
        let mut states = Vec::new();
        for (i, s) in r.states.iter().enumerate() {
            match state_from(*s) {
                Some(st) => states.push(st),
                None => v.add(format!("states[{i}]"), "is not a job state"),
            }
        }
        if !r.preset_id.is_empty() {
            spec::check_preset(self.app.catalog(), &r.preset_id, &mut v);
        }
        v.check(r.labels.len() <= 16, "labels", "at most 16 label filters");
        v.finish().map_err(Error::InvalidArgument)?;
        let filter = JobFilter {
            states,
            preset_id: (!r.preset_id.is_empty()).then_some(r.preset_id),
            labels: r.labels.into_iter().collect(),
        };
        let size = if r.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            r.page_size
        };
        let page = self.app.list_jobs(&who, &filter, size, token).await?;
        Ok(Response::new(ListJobsResponse {
            jobs: page.jobs.iter().map(job_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.identifier("job_id", &r.job_id, 128, "_-", true);
        v.text("reason", &r.reason, 0, 500);
        v.finish().map_err(Error::InvalidArgument)?;
        let job = self.app.cancel_job(&who, &r.job_id, &r.reason).await?;
        Ok(Response::new(CancelJobResponse {
            job: Some(job_pb(&job)),
        }))
    }

    type WatchJobStream = BoxStream<'static, Result<WatchJobResponse, Status>>;

    /// Served in the fast lane (`FAST_LANE`, framed once per commit); this route is not reached.
    async fn watch_job(
        &self,
        req: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let who = caller(&req)?;
        let events = self.watch_events(&who, req.get_ref()).await?;
        let stream = events.map(|w| w.map(|w| watch_response(w.event())).map_err(Status::from));
        Ok(Response::new(stream.boxed()))
    }
}

fn watch_response(e: &Event) -> WatchJobResponse {
    WatchJobResponse {
        event: Some(event_pb(e)),
    }
}

fn watch_wire(e: &Event) -> Bytes {
    wire::encode(&watch_response(e))
}

impl Api {
    async fn watch_events(
        &self,
        who: &Caller,
        r: &WatchJobRequest,
    ) -> Result<impl Stream<Item = crate::error::Result<Watched>> + Send + 'static + use<>, Status>
    {
        require_id("job_id", &r.job_id)?;
        Ok(self.app.watch_job(who, &r.job_id, r.after_sequence).await?)
    }

    /// WatchJob with each event framed once (`wire::grpc_frame`) and shared by every stream
    /// that sends it (an event from the hub's batch), or framed for this stream (an event read
    /// from the database); each stream sends the frames as they are (`wire::FramedBody`).
    async fn watch_job_framed(
        &self,
        req: http::Request<tonic::body::Body>,
        max: usize,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let (who, request) = wire::unary_request::<WatchJobRequest>(req, max).await?;
        let events = self.watch_events(&who, &request).await?;
        let frames = events.map(|w| match w {
            Ok(Watched::Read(e)) => Ok(wire::grpc_frame(&watch_wire(&e))),
            Ok(Watched::Shared(e)) => Ok(e.wire(|e| wire::grpc_frame(&watch_wire(e)))),
            Err(e) => Err(Status::from(e)),
        });
        Ok(wire::FramedBody::response(frames.boxed()))
    }
}

const WATCH_JOB: &str = "/aiprod.v1.RenderService/WatchJob";
const GET_JOB: &str = "/aiprod.v1.RenderService/GetJob";

/// GetJob's answer for a job as the store shares it, reused while the store shares the same job
/// (`Arc` identity: a commit makes a new one) for up to `JOB_WIRE_TTL` (download links are
/// presigned for minutes; a reused answer is at most this much older).
pub struct JobWire {
    job: Arc<Job>,
    made: Instant,
    bytes: Bytes,
}

pub type JobWireCache = quick_cache::sync::Cache<String, Arc<JobWire>>;

const JOB_WIRE_TTL: Duration = Duration::from_secs(1);

impl Api {
    async fn get_job_wire(&self, req: Request<GetJobRequest>) -> Result<Response<Bytes>, Status> {
        let who = caller(&req)?;
        require_id("job_id", &req.get_ref().job_id)?;
        // The tenant's own job or NOT_FOUND, before any answer is looked up.
        let job = self.app.job_shared(&who, &req.get_ref().job_id).await?;
        if let Some(w) = self.job_wire.get(job.id.as_str())
            && Arc::ptr_eq(&w.job, &job)
            && w.made.elapsed() < JOB_WIRE_TTL
        {
            return Ok(Response::new(w.bytes.clone()));
        }
        let links = self.app.download_links(&job).await;
        let bytes = wire::encode(&GetJobResponse {
            job: Some(job_pb_with(&job, &links)),
        });
        self.job_wire.insert(
            job.id.clone(),
            Arc::new(JobWire {
                job,
                made: Instant::now(),
                bytes: bytes.clone(),
            }),
        );
        Ok(Response::new(bytes))
    }
}

struct GetJobWire(Api);

impl tonic::server::UnaryService<GetJobRequest> for GetJobWire {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, req: Request<GetJobRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.get_job_wire(req).await })
    }
}

/// RenderService methods in the fast lane (`wire::FastLane`): WatchJob, whose messages are
/// framed once per commit (`wire::FramedBody`) rather than encoded once per stream, and GetJob,
/// answered from `JobWire`.
pub const FAST_LANE: &[(&str, wire::Serve)] = &[
    (GET_JOB, |api, max, req| {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(WireCodec::<GetJobRequest>::new(8192))
                .apply_max_message_size_config(Some(max), None);
            grpc.unary(GetJobWire(api), req).await
        })
    }),
    (WATCH_JOB, |api, max, req| {
        Box::pin(async move {
            match api.watch_job_framed(req, max).await {
                Ok(response) => response,
                Err(status) => status.into_http(),
            }
        })
    }),
];
