//! Rust SDK for AIPROD, the API that produces short brand videos (`aiprod.v1`).
//!
//! ```no_run
//! # async fn run() -> Result<(), aiprod_sdk::Error> {
//! use aiprod_sdk::{pb, Client};
//! let client = Client::connect("http://127.0.0.1:50051", "aiprod_test_…").await?;
//! let estimate = client.costs().estimate_cost(pb::EstimateCostRequest {
//!     preset_id: "quick_social".into(),
//!     ..Default::default()
//! }).await?.into_inner();
//! println!("quote: {} micro-USD", estimate.recommended.unwrap().total_micros);
//! # Ok(()) }
//! ```
//!
//! Every unary call carries a default deadline (30 s, see [`ClientBuilder::timeout`]); set
//! `request.set_timeout(..)` on a `tonic::Request` to override it per call. [`Client::watch_job`]
//! streams a job's events and transparently reconnects, resuming after the last sequence it saw.
#![forbid(unsafe_code)]

/// Generated messages and clients of `aiprod.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("aiprod.v1");
}

/// Generated messages and client of `google.bytestream` (artifact downloads).
pub mod bytestream {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("google.bytestream");
}

mod download;
mod error;
mod watch;

pub use error::{Error, FieldViolation};
pub use watch::WatchOptions;

use bytestream::byte_stream_client::ByteStreamClient;
use futures::Stream;
use pb::admin_service_client::AdminServiceClient;
use pb::cost_estimator_service_client::CostEstimatorServiceClient;
use pb::icc_service_client::IccServiceClient;
use pb::preset_service_client::PresetServiceClient;
use pb::render_service_client::RenderServiceClient;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The default deadline of unary calls.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Adds the bearer credential and, unless the call set its own, a deadline.
#[derive(Clone)]
pub struct Auth {
    bearer: MetadataValue<tonic::metadata::Ascii>,
    timeout: Option<Duration>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", self.bearer.clone());
        if let Some(t) = self.timeout
            && req.metadata().get("grpc-timeout").is_none()
        {
            req.set_timeout(t);
        }
        Ok(req)
    }
}

/// A channel with authentication and deadlines.
pub type AuthChannel = InterceptedService<Channel, Auth>;

/// Builds a [`Client`] or an [`AdminClient`].
pub struct ClientBuilder {
    endpoint: String,
    timeout: Duration,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// The default deadline of unary calls (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long to wait for the connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    async fn channel(&self) -> Result<Channel, Error> {
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| Error::transport(format!("invalid endpoint {:?}: {e}", self.endpoint)))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        endpoint
            .connect()
            .await
            .map_err(|e| Error::transport(format!("cannot connect to {}: {e}", self.endpoint)))
    }

    fn auth(secret: &str, timeout: Option<Duration>) -> Result<Auth, Error> {
        let bearer = format!("Bearer {secret}")
            .parse()
            .map_err(|_| Error::transport("the credential contains invalid characters"))?;
        Ok(Auth { bearer, timeout })
    }

    /// Connects with a tenant API key (`aiprod_live_…` or `aiprod_test_…`).
    pub async fn connect(self, api_key: &str) -> Result<Client, Error> {
        let channel = self.channel().await?;
        Ok(Client {
            unary: InterceptedService::new(
                channel.clone(),
                Self::auth(api_key, Some(self.timeout))?,
            ),
            streaming: InterceptedService::new(channel, Self::auth(api_key, None)?),
        })
    }

    /// Connects with the operator credential.
    pub async fn connect_admin(self, admin_token: &str) -> Result<AdminClient, Error> {
        let channel = self.channel().await?;
        Ok(AdminClient {
            inner: InterceptedService::new(channel, Self::auth(admin_token, Some(self.timeout))?),
        })
    }
}

/// A tenant's client for every `aiprod.v1` service. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Client {
    unary: AuthChannel,
    streaming: AuthChannel,
}

impl Client {
    /// Starts building a client for `endpoint` (e.g. `http://127.0.0.1:50051`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Connects with the defaults.
    pub async fn connect(endpoint: impl Into<String>, api_key: &str) -> Result<Client, Error> {
        Self::builder(endpoint).connect(api_key).await
    }

    /// Presets: `ListPresets`, `GetPreset`.
    pub fn presets(&self) -> PresetServiceClient<AuthChannel> {
        PresetServiceClient::new(self.unary.clone())
    }

    /// Quotes and certified costs: `EstimateCost`, `GetJobCosts`.
    pub fn costs(&self) -> CostEstimatorServiceClient<AuthChannel> {
        CostEstimatorServiceClient::new(self.unary.clone())
    }

    /// Jobs: `CreateJob`, `GetJob`, `ListJobs`, `CancelJob`. For `WatchJob` prefer
    /// [`Client::watch_job`], which resumes after a disconnect and has no deadline.
    pub fn render(&self) -> RenderServiceClient<AuthChannel> {
        RenderServiceClient::new(self.unary.clone())
    }

    /// Downloads the job's video (the final cut) to `path` and returns its metadata. The bytes are
    /// streamed to `path` + `.part` over `google.bytestream.ByteStream/Read`, resumed from the
    /// bytes already written after a dropped connection, checked against the size and SHA-256
    /// the service recorded, and only then renamed onto `path`. Fails with `FAILED_PRECONDITION`
    /// while the job has no cut yet.
    pub async fn download_video(
        &self,
        job_id: &str,
        path: impl AsRef<std::path::Path>,
    ) -> Result<pb::VideoArtifact, Error> {
        download::download(self, job_id, download::Which::Video, path.as_ref()).await
    }

    /// Downloads one shot's clip (readable as soon as the shot renders), like
    /// [`Client::download_video`].
    pub async fn download_shot_clip(
        &self,
        job_id: &str,
        shot_id: &str,
        path: impl AsRef<std::path::Path>,
    ) -> Result<pb::VideoArtifact, Error> {
        download::download(
            self,
            job_id,
            download::Which::ShotClip(shot_id.to_string()),
            path.as_ref(),
        )
        .await
    }

    /// `google.bytestream.ByteStream` (no default deadline: reads are streams).
    pub fn bytestream(&self) -> ByteStreamClient<AuthChannel> {
        ByteStreamClient::new(self.streaming.clone())
    }

    pub(crate) fn streaming_channel(&self) -> AuthChannel {
        self.streaming.clone()
    }

    /// Interactive Creative Control: manifests, final review, brand markers.
    pub fn icc(&self) -> IccServiceClient<AuthChannel> {
        IccServiceClient::new(self.unary.clone())
    }

    /// Streams a job's events after `after_sequence` (0 = from the start) until its terminal event,
    /// reconnecting on transient failures and resuming after the last event it yielded: no event is
    /// skipped or repeated.
    pub fn watch_job(
        &self,
        job_id: impl Into<String>,
        after_sequence: u64,
    ) -> impl Stream<Item = Result<pb::JobEvent, Error>> + Send + 'static {
        self.watch_job_with(job_id, after_sequence, WatchOptions::default())
    }

    /// [`Client::watch_job`] with explicit retry options.
    pub fn watch_job_with(
        &self,
        job_id: impl Into<String>,
        after_sequence: u64,
        options: WatchOptions,
    ) -> impl Stream<Item = Result<pb::JobEvent, Error>> + Send + 'static {
        watch::watch(
            RenderServiceClient::new(self.streaming.clone()),
            job_id.into(),
            after_sequence,
            options,
        )
    }

    /// Every job matching `request`'s filters, newest first, fetching pages as needed.
    pub fn list_all_jobs(
        &self,
        request: pb::ListJobsRequest,
    ) -> impl Stream<Item = Result<pb::Job, Error>> + Send + 'static {
        let client = self.render();
        futures::stream::try_unfold((client, Some(request)), |(mut client, next)| async move {
            let Some(request) = next else {
                return Ok::<_, Error>(None);
            };
            let page = client.list_jobs(request.clone()).await?.into_inner();
            let next = (!page.next_page_token.is_empty()).then(|| pb::ListJobsRequest {
                page_token: page.next_page_token.clone(),
                ..request
            });
            Ok(Some((
                futures::stream::iter(page.jobs.into_iter().map(Ok::<_, Error>)),
                (client, next),
            )))
        })
        .try_flatten()
    }
}

use futures::TryStreamExt;

/// The operator's client for `AdminService`.
#[derive(Clone)]
pub struct AdminClient {
    inner: AuthChannel,
}

impl AdminClient {
    /// Connects with the operator credential and the defaults.
    pub async fn connect(
        endpoint: impl Into<String>,
        admin_token: &str,
    ) -> Result<AdminClient, Error> {
        Client::builder(endpoint).connect_admin(admin_token).await
    }

    /// Tenants and API keys.
    pub fn admin(&self) -> AdminServiceClient<AuthChannel> {
        AdminServiceClient::new(self.inner.clone())
    }
}

/// Whether a job state is terminal (DELIVERED, CANCELLED, FAILED).
pub fn is_terminal(state: i32) -> bool {
    matches!(
        pb::JobState::try_from(state),
        Ok(pb::JobState::Delivered | pb::JobState::Cancelled | pb::JobState::Failed)
    )
}
