//! Use cases: what the API can ask of the service. Each takes the authenticated caller and
//! domain inputs, applies the domain rules, and uses the store and the backends.

pub mod admin;
pub mod artifacts;
pub mod auth;
pub mod estimate;
pub mod icc;
pub mod jobs;
pub mod leases;
pub mod limits;
pub mod memo;
pub mod pipeline;
pub mod usage;

use crate::backends::circuit::Circuit;
use crate::backends::sandbox::SandboxBackend;
use crate::backends::{BackendSet, Backends};
use crate::config::Config;
use crate::domain::Backend;
use crate::store::Store;
use aiprod_artifacts::ArtifactStore;
use aiprod_media::Media;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::Caller;

/// The service's shared state. The store, the configuration and the backends are private: the
/// transport (`api/`) reaches them only through use-case methods.
pub struct App {
    config: Config,
    store: Arc<dyn Store>,
    backends: Backends,
    /// Cancelled when the server shuts down: pipeline tasks and streams stop.
    pub shutdown: CancellationToken,
    /// Pipeline tasks (awaited on shutdown).
    pub tasks: TaskTracker,
    /// This process's lease owner id (new at every start).
    owner: String,
    /// Jobs this process drives right now, with the lease it holds on each.
    driving: Mutex<HashMap<String, leases::Driven>>,
    /// Until when the leases are surely still ours (last renewal + TTL − margin, on this clock):
    /// nothing is submitted to a provider after it.
    leases_fresh_until: Mutex<std::time::Instant>,
    workers: Arc<Semaphore>,
    pub rate_limiter: limits::RateLimiter,
    pub auth_cache: auth::AuthCache,
    /// Estimates already computed (pricing is pure given its inputs).
    pub estimates: estimate::EstimateCache,
    /// Tenants' monthly budgets as read within the last second, for the pipeline's budget alerts
    /// (read at every charge; cleared by tenant updates in this process, like the key cache).
    budgets: quick_cache::sync::Cache<String, (std::time::Instant, Option<crate::domain::Money>)>,
    /// Encodes, measures and assembles video (CPU-bound: run on `media_threads`).
    pub media: Arc<dyn Media>,
    /// Clips, cuts and posters.
    pub artifacts: ArtifactStore,
    /// Bounds CPU-heavy media work across the process.
    pub media_permits: Arc<Semaphore>,
    /// Results of media work keyed by content (measure, store, assemble once per input).
    memo: memo::Memo,
    /// Render tasks running at once per (sandbox?, backend), across jobs.
    backend_permits: BTreeMap<(bool, Backend), Arc<Semaphore>>,
    /// Cancelled when a job ends while shots are in flight: they stop at once.
    job_tokens: Mutex<HashMap<String, CancellationToken>>,
    /// Serialises the charges of one job's parallel shots, so each budget alert reads the spend
    /// that the job's previous charge committed.
    charge_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the application is built from besides its configuration.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub backends: Backends,
    pub media: Arc<dyn Media>,
    pub artifacts: ArtifactStore,
    pub media_permits: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

impl App {
    pub fn new(config: Config, parts: Parts) -> Arc<App> {
        let workers = Arc::new(Semaphore::new(config.pipeline_workers));
        let backend_permits = [true, false]
            .into_iter()
            .flat_map(|sandbox| Backend::ALL.into_iter().map(move |b| (sandbox, b)))
            .map(|(sandbox, b)| {
                let n = config.render.backend_limit(b);
                ((sandbox, b), Arc::new(Semaphore::new(n)))
            })
            .collect();
        Arc::new(App {
            config,
            store: parts.store,
            backends: parts.backends,
            shutdown: parts.shutdown,
            tasks: TaskTracker::new(),
            owner: format!("replica-{}", uuid::Uuid::new_v4().simple()),
            driving: Mutex::new(HashMap::new()),
            leases_fresh_until: Mutex::new(std::time::Instant::now()),
            workers,
            rate_limiter: limits::RateLimiter::default(),
            auth_cache: auth::AuthCache::default(),
            estimates: estimate::EstimateCache::default(),
            budgets: quick_cache::sync::Cache::new(4096),
            media: parts.media,
            artifacts: parts.artifacts,
            media_permits: parts.media_permits,
            memo: memo::Memo::default(),
            backend_permits,
            job_tokens: Mutex::new(HashMap::new()),
            charge_locks: Mutex::new(HashMap::new()),
        })
    }

    /// Media work slots: `render.media_workers`, or one per CPU.
    pub fn media_permits(config: &Config) -> Arc<Semaphore> {
        let n = match config.render.media_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Arc::new(Semaphore::new(n))
    }

    /// A slot for CPU-heavy media work.
    pub async fn media_permit(&self) -> crate::error::Result<tokio::sync::SemaphorePermit<'_>> {
        self.media_permits
            .acquire()
            .await
            .map_err(|_| crate::error::Error::Unavailable {
                message: "shutting down".into(),
                retry_after: Duration::from_secs(1),
            })
    }

    /// The render slots of a backend.
    pub fn backend_permits(&self, sandbox: bool, backend: Backend) -> Arc<Semaphore> {
        self.backend_permits
            .get(&(sandbox, backend))
            .cloned()
            .unwrap_or_else(|| Arc::new(Semaphore::new(1)))
    }

    /// The token that stops a job's in-flight shots.
    pub fn job_token(&self, job_id: &str) -> CancellationToken {
        self.job_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job_id.to_string())
            .or_insert_with(|| self.shutdown.child_token())
            .clone()
    }

    /// The lock that orders the charges of one job.
    pub fn charge_lock(&self, job_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.charge_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job_id.to_string())
            .or_default()
            .clone()
    }

    /// Forgets a job's per-job state once its render phase is over.
    pub fn forget_job(&self, job_id: &str) {
        self.job_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job_id);
        self.charge_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job_id);
    }

    /// Stops a job's in-flight shots (cancel, failure).
    pub fn stop_job(&self, job_id: &str) {
        if let Some(t) = self
            .job_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job_id)
        {
            t.cancel();
        }
    }

    /// Sandbox backends from the configuration, one per catalog backend.
    pub fn sandbox_backends(
        config: &Config,
        media: &Arc<dyn Media>,
        media_permits: &Arc<Semaphore>,
    ) -> BackendSet {
        let mut set = BackendSet::default();
        // One memo for every sandbox backend: the clip does not depend on which one renders it.
        let clips = crate::backends::sandbox::clip_memo(256);
        for spec in &config.catalog.backends {
            let failure_rate = config
                .sandbox
                .backend_failure_rates
                .get(&spec.backend)
                .copied()
                .unwrap_or(config.sandbox.failure_rate);
            set.insert(
                spec.backend,
                Arc::new(SandboxBackend {
                    backend: spec.backend,
                    quality: spec.quality,
                    quality_jitter: config.sandbox.quality_jitter,
                    latency: Duration::from_millis(config.sandbox.latency_ms),
                    failure_rate,
                    bad_outputs: config.sandbox.bad_outputs.clone(),
                    seed: config.sandbox.seed,
                    media: media.clone(),
                    media_permits: media_permits.clone(),
                    short_side: config.media.sandbox_short_side,
                    fps: config.media.fps,
                    clips: clips.clone(),
                }),
                App::circuit(config),
            );
        }
        set
    }

    pub fn circuit(config: &Config) -> Circuit {
        Circuit::new(
            config.circuit.failure_threshold,
            Duration::from_secs(config.circuit.cooldown_s),
        )
    }

    /// The backends every job of a mode may use (for quotes before a job exists).
    pub fn backend_set(&self, sandbox: bool) -> &BackendSet {
        self.backends.for_job(sandbox)
    }

    /// The configuration the server was started with (read-only).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database backend's name, for logs.
    pub fn database_name(&self) -> &'static str {
        self.store.backend_name()
    }

    /// One round trip to the database (health).
    pub async fn ping_database(&self) -> crate::error::Result<()> {
        self.store.ping().await
    }

    /// Starts the shutdown: pipeline tasks stop, and every WatchJob stream ends with UNAVAILABLE
    /// and the sequence to resume after.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
        self.store.hub().close_all();
    }

    /// Closes the database pool (after the server and the pipeline stopped).
    pub async fn close_store(&self) {
        self.store.close().await;
    }

    /// The catalog of presets, backends and tiers (read-only; the transport validates with it).
    pub fn catalog(&self) -> &crate::domain::Catalog {
        &self.config.catalog
    }

    pub fn unavailable_backends(&self, sandbox: bool) -> Vec<Backend> {
        self.backend_set(sandbox).unavailable()
    }
}
