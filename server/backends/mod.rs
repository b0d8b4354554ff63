//! Render backends behind one trait: the sandbox simulation (test-mode keys, demos, tests) and the
//! providers' HTTP APIs (live keys), with a circuit breaker per backend.

pub mod circuit;
pub mod http;
pub mod sandbox;

use crate::domain::Backend;
use crate::domain::manifest::AspectRatio;
use circuit::Circuit;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One shot to render.
#[derive(Clone, Debug)]
pub struct RenderRequest {
    pub job_id: String,
    pub shot_id: String,
    pub attempt: u32,
    pub prompt: String,
    pub duration_s: u32,
    pub aspect_ratio: AspectRatio,
}

/// A rendered shot.
#[derive(Clone, Debug)]
pub struct RenderOutput {
    /// Where the rendered clip is.
    pub uri: String,
    /// Quality score (0..1).
    pub quality: f64,
}

/// Why an attempt failed; every variant moves the shot to the next candidate backend.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RenderError {
    #[error("provider error: {0}")]
    Provider(String),
    #[error("timed out after {0} s")]
    Timeout(u64),
    #[error("rate limited by the provider")]
    RateLimited,
    #[error("output rejected: {0}")]
    Rejected(String),
}

impl RenderError {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RenderError::Provider(_) => "provider_error",
            RenderError::Timeout(_) => "timeout",
            RenderError::RateLimited => "rate_limited",
            RenderError::Rejected(_) => "rejected",
        }
    }
}

#[async_trait::async_trait]
pub trait RenderBackend: Send + Sync {
    async fn render(&self, request: &RenderRequest) -> Result<RenderOutput, RenderError>;
}

/// The backends of one mode (sandbox or live), each with its circuit.
#[derive(Clone, Default)]
pub struct BackendSet {
    backends: BTreeMap<Backend, (Arc<dyn RenderBackend>, Arc<Circuit>)>,
}

impl BackendSet {
    pub fn insert(&mut self, backend: Backend, imp: Arc<dyn RenderBackend>, circuit: Circuit) {
        self.backends.insert(backend, (imp, Arc::new(circuit)));
    }

    pub fn get(&self, backend: Backend) -> Option<(&Arc<dyn RenderBackend>, &Arc<Circuit>)> {
        self.backends.get(&backend).map(|(b, c)| (b, c))
    }

    /// Backends that cannot take a call now: not configured, or circuit open.
    pub fn unavailable(&self) -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|b| {
                self.backends
                    .get(b)
                    .is_none_or(|(_, circuit)| !circuit.allows_call())
            })
            .collect()
    }
}

/// Sandbox backends for test keys, live backends for live keys.
#[derive(Clone, Default)]
pub struct Backends {
    pub sandbox: BackendSet,
    pub live: BackendSet,
}

impl Backends {
    pub fn for_job(&self, sandbox: bool) -> &BackendSet {
        if sandbox { &self.sandbox } else { &self.live }
    }
}
