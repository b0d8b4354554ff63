//! Use cases: what the API can ask of the service. Each takes the authenticated caller and
//! domain inputs, applies the domain rules, and uses the store and the backends.

pub mod admin;
pub mod auth;
pub mod estimate;
pub mod icc;
pub mod jobs;
pub mod limits;
pub mod pipeline;
pub mod usage;

use crate::backends::circuit::Circuit;
use crate::backends::sandbox::SandboxBackend;
use crate::backends::{BackendSet, Backends};
use crate::config::Config;
use crate::domain::Backend;
use crate::store::Store;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::Caller;

/// The service's shared state.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub backends: Backends,
    /// Cancelled when the server shuts down: pipeline tasks and streams stop.
    pub shutdown: CancellationToken,
    /// Pipeline tasks (awaited on shutdown).
    pub tasks: TaskTracker,
    /// Jobs with a pipeline task right now.
    driving: Mutex<HashSet<String>>,
    workers: Arc<Semaphore>,
    pub rate_limiter: limits::RateLimiter,
    pub auth_cache: auth::AuthCache,
}

impl App {
    pub fn new(config: Config, store: Store, backends: Backends) -> Arc<App> {
        let workers = Arc::new(Semaphore::new(config.pipeline_workers));
        Arc::new(App {
            config,
            store,
            backends,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            driving: Mutex::new(HashSet::new()),
            workers,
            rate_limiter: limits::RateLimiter::default(),
            auth_cache: auth::AuthCache::default(),
        })
    }

    /// Sandbox backends from the configuration, one per catalog backend.
    pub fn sandbox_backends(config: &Config) -> BackendSet {
        let mut set = BackendSet::default();
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
                    seed: config.sandbox.seed,
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

    pub fn unavailable_backends(&self, sandbox: bool) -> Vec<Backend> {
        self.backend_set(sandbox).unavailable()
    }
}
