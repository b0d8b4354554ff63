//! Render backends behind one trait: the sandbox simulation (test-mode keys, demos, tests) and the
//! providers' HTTP APIs (live keys), with a circuit breaker per backend.

pub mod circuit;
pub mod http;
pub mod sandbox;

use crate::domain::Backend;
use crate::domain::manifest::{AspectRatio, Camera};
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
    pub camera: Camera,
    /// 1-based position of the shot in the manifest, and the number of shots.
    pub shot_number: u32,
    pub shot_count: u32,
    /// The brand palette (consistency markers) as RGB.
    pub palette: Vec<[u8; 3]>,
}

/// A rendered shot: the clip's bytes, already copied out of the provider (whose links expire).
#[derive(Clone, Debug)]
pub struct RenderOutput {
    pub clip: bytes::Bytes,
    /// The clip's [`content_key`], when the backend knows it already (a memoised clip): hashing
    /// a clip costs more than the rest of a sandbox attempt.
    pub clip_key: Option<ContentKey>,
    /// The backend's nominal quality score (0..1) for this clip, if it passes the technical checks.
    pub quality: f64,
    /// The frame size the clip must have exactly (our own renders); providers' clips are
    /// normalised at assembly and only need a minimum size.
    pub exact_size: Option<(u32, u32)>,
}

/// A content address: SHA-256 over each part's length and bytes.
pub type ContentKey = [u8; 32];

/// The [`ContentKey`] of `parts` (the memos' keys; a clip's key is `content_key(&[clip])`).
pub fn content_key(parts: &[&[u8]]) -> ContentKey {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
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

/// A render backend. Rendering is two calls so that the provider's task id can be committed
/// between them: a restart then resumes waiting on the same task instead of paying for another.
#[async_trait::async_trait]
pub trait RenderBackend: Send + Sync {
    /// Starts rendering a shot; returns the provider's task id.
    async fn submit(&self, request: &RenderRequest) -> Result<String, RenderError>;
    /// Waits for a submitted task (also one submitted before a restart) and downloads its clip.
    /// Dropping the future cancels the task on the provider's side where the API allows it.
    async fn finish(
        &self,
        request: &RenderRequest,
        task_id: &str,
    ) -> Result<RenderOutput, RenderError>;
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
