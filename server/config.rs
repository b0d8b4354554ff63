//! Typed configuration, layered once at start-up: defaults → optional TOML file → `AIPROD_*`
//! environment → command-line flags, then validated. Tests build a `Config` directly.

use crate::domain::{Backend, Catalog};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// `sqlite://path` (created if missing) or `postgres://…`.
    pub database_url: String,
    /// Operator credential for AdminService; the admin API is closed without one.
    pub admin_token: Option<String>,
    /// Create a `demo` tenant and print a test key on the first start with an empty database.
    pub demo_tenant: bool,
    /// Written with the bound address once the server accepts calls (for scripts and tests).
    pub ready_file: Option<PathBuf>,
    /// Prometheus metrics HTTP address (`GET /metrics`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Grace period for in-flight calls on shutdown, in seconds.
    pub shutdown_grace_s: u64,
    /// Server-side limit for unary calls, in seconds (a client's shorter grpc-timeout wins).
    pub request_timeout_s: u64,
    /// Largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Requests served at once across all connections; beyond it calls are shed (RESOURCE_EXHAUSTED).
    pub concurrency_limit: usize,
    /// Jobs the pipeline drives at once.
    pub pipeline_workers: usize,
    /// Consecutive failures of one pipeline step (other than the database being unreachable)
    /// after which the job fails with reason INTERNAL instead of retrying forever.
    pub pipeline_step_max_failures: u32,
    /// A render attempt that takes longer fails (and falls back), in seconds.
    pub render_timeout_s: u64,
    pub sandbox: SandboxConfig,
    pub circuit: CircuitConfig,
    pub catalog: Catalog,
    /// The render providers behind live (`aiprod_live_…`) keys; a provider without an API key is off.
    pub providers: ProvidersConfig,
    /// How shots render in parallel.
    pub render: RenderConfig,
    /// Video formats and the media tools.
    pub media: MediaConfig,
    /// Where clips, cuts and posters are kept.
    pub artifacts: ArtifactsConfig,
    /// Limits of the technical checks every clip must pass.
    pub quality: crate::domain::media::QualityLimits,
    /// Several replicas on one database: leases and wake-ups.
    pub cluster: ClusterConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderConfig {
    /// Shots of one job rendering at once.
    pub max_parallel_shots_per_job: usize,
    /// Render tasks running at once on each backend, across all jobs (match your provider plan's
    /// concurrency limit); a backend missing here allows 4.
    pub backend_concurrency: BTreeMap<Backend, usize>,
    /// Media work (encoding, measuring, assembling) running at once; 0 = the number of CPUs.
    pub media_workers: usize,
    /// Largest provider output downloaded, in bytes.
    pub max_download_bytes: u64,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            max_parallel_shots_per_job: 4,
            backend_concurrency: BTreeMap::from([
                (Backend::Runway, 4),
                (Backend::Veo, 4),
                (Backend::Replicate, 8),
            ]),
            media_workers: 0,
            max_download_bytes: 512 * 1024 * 1024,
        }
    }
}

impl Config {
    /// The local artifact directory: configured, or beside the SQLite database file.
    pub fn artifacts_dir(&self) -> PathBuf {
        if let Some(dir) = &self.artifacts.dir {
            return dir.clone();
        }
        let sqlite = self
            .database_url
            .strip_prefix("sqlite://")
            .or_else(|| self.database_url.strip_prefix("sqlite:"));
        match sqlite.map(|p| p.split('?').next().unwrap_or(p)) {
            Some(file) => Path::new(file)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("artifacts"),
            None => PathBuf::from("data/artifacts"),
        }
    }
}

impl RenderConfig {
    pub fn backend_limit(&self, backend: Backend) -> usize {
        self.backend_concurrency.get(&backend).copied().unwrap_or(4)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Short side in pixels of sandbox clips and sandbox cuts (the long side follows the aspect
    /// ratio): 480 suits demos; tests and benchmarks use 144.
    pub sandbox_short_side: u32,
    /// Short side of the final cut of live jobs (720 → 1280x720 for 16:9).
    pub live_short_side: u32,
    /// Frames per second of every cut and sandbox clip.
    pub fps: u32,
    /// The ffmpeg assembler for provider clips the pure path cannot decode: `auto` (use `ffmpeg`
    /// from PATH when present), `off`, or a path to the ffmpeg binary.
    pub ffmpeg: String,
    /// Largest poster width in pixels.
    pub poster_width: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            sandbox_short_side: 480,
            live_short_side: 720,
            fps: 24,
            ffmpeg: "auto".into(),
            poster_width: 320,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// Local directory of the artifacts when `url` is unset; default: `artifacts/` beside the SQLite
    /// database file (`data/artifacts` with PostgreSQL).
    pub dir: Option<PathBuf>,
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` (or `file:///path`) for
    /// a shared store across replicas; credentials from `options` or the provider's usual
    /// environment variables (e.g. `AWS_ACCESS_KEY_ID`).
    pub url: Option<String>,
    /// object_store options, e.g. `aws_endpoint`, `aws_region`, `aws_allow_http`.
    pub options: BTreeMap<String, String>,
    /// Lifetime of presigned download URLs (remote stores), in seconds.
    pub presign_expiry_s: u64,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            dir: None,
            url: None,
            options: BTreeMap::new(),
            presign_expiry_s: 3600,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Simulated render latency per shot, in milliseconds.
    pub latency_ms: u64,
    /// Probability (0..1) that a render attempt fails, for every backend.
    pub failure_rate: f64,
    /// Per-backend failure probability, overriding `failure_rate`.
    pub backend_failure_rates: BTreeMap<Backend, f64>,
    /// Seed of the deterministic simulation.
    pub seed: u64,
    /// A rendered shot scores its backend's quality minus up to this much.
    pub quality_jitter: f64,
    /// Probability (0..1) of each kind of bad output (a clip that renders but fails the
    /// technical checks), for exercising the quality path.
    pub bad_outputs: BadOutputRates,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BadOutputRates {
    /// Every frame black.
    pub black: f64,
    /// Every frame the same.
    pub frozen: f64,
    /// Only the first part of the clip.
    pub truncated: f64,
    /// Bytes that do not decode.
    pub undecodable: f64,
}

/// How replicas share the jobs of one database (ARCHITECTURE.md, "Leases").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How long a claimed job stays with its replica without a heartbeat, in milliseconds: a dead
    /// replica's jobs move to the others after about this long.
    pub lease_ttl_ms: u64,
    /// Heartbeats per lease period (the lease is renewed every `lease_ttl_ms / heartbeats_per_lease`).
    pub heartbeats_per_lease: u32,
    /// How often a replica looks for runnable jobs without a driver when no wake-up arrived, in ms.
    pub poll_interval_ms: u64,
    /// Jobs one replica drives at once (the rest wait for a free slot here or on another replica).
    pub max_jobs_per_replica: usize,
    /// How often the database is probed for health, in milliseconds.
    pub health_probe_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            lease_ttl_ms: 15_000,
            heartbeats_per_lease: 3,
            poll_interval_ms: 1_000,
            max_jobs_per_replica: 512,
            health_probe_interval_ms: 1_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive failures that open a backend's circuit.
    pub failure_threshold: u32,
    /// Seconds an open circuit waits before letting one trial call through (half-open).
    pub cooldown_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: "sqlite://data/aiprod.db".into(),
            admin_token: None,
            demo_tenant: true,
            ready_file: None,
            metrics_listen: None,
            log_format: "text".into(),
            shutdown_grace_s: 10,
            request_timeout_s: 30,
            max_message_bytes: 4 * 1024 * 1024,
            concurrency_limit: 1024,
            pipeline_workers: 64,
            pipeline_step_max_failures: 20,
            render_timeout_s: 900,
            sandbox: SandboxConfig::default(),
            circuit: CircuitConfig::default(),
            catalog: Catalog::default(),
            providers: ProvidersConfig::default(),
            render: RenderConfig::default(),
            media: MediaConfig::default(),
            artifacts: ArtifactsConfig::default(),
            quality: Default::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            latency_ms: 200,
            failure_rate: 0.0,
            backend_failure_rates: BTreeMap::new(),
            seed: 42,
            quality_jitter: 0.04,
            bad_outputs: BadOutputRates::default(),
        }
    }
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failure_threshold: 3,
            cooldown_s: 30,
        }
    }
}

/// A credential from configuration: `Debug` prints `***` and it is never serialized, so it cannot
/// reach a log line or a dumped configuration.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The render providers of live keys (domain.md, "Render backends"). A provider runs only with an
/// API key, which comes from the file or, better, from its environment variable.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Time between two status checks of a provider task, in milliseconds.
    pub poll_interval_ms: u64,
    /// A provider task still unfinished after this long is cancelled (where the API allows it) and
    /// the attempt fails over, in seconds. Keep it below `render_timeout_s`.
    pub task_timeout_s: u64,
    /// Retries of one provider call answered with HTTP 429 (each after `Retry-After`) before the
    /// attempt fails as rate limited.
    pub rate_limit_retries: u32,
    /// Limit of one HTTP request to a provider, in seconds.
    pub request_timeout_s: u64,
    pub runway: RunwayConfig,
    pub veo: VeoConfig,
    pub replicate: ReplicateConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunwayConfig {
    pub base_url: String,
    /// Environment: `AIPROD_RUNWAY_API_KEY`.
    #[serde(skip_serializing)]
    pub api_key: Option<Secret>,
    /// Text-to-video model, e.g. `gen4.5`.
    pub model: String,
    /// Sent as `X-Runway-Version`.
    pub api_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VeoConfig {
    /// The Gemini API.
    pub base_url: String,
    /// Gemini API key; environment: `AIPROD_VEO_API_KEY`.
    #[serde(skip_serializing)]
    pub api_key: Option<Secret>,
    /// Veo model, e.g. `veo-3.1-generate-preview`.
    pub model: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicateConfig {
    pub base_url: String,
    /// API token; environment: `AIPROD_REPLICATE_API_TOKEN`.
    #[serde(skip_serializing)]
    pub api_key: Option<Secret>,
    /// `owner/name` of an official model (run by name), or of the model `version` belongs to.
    pub model: String,
    /// A version id: the prediction is created with it (`POST /v1/predictions`) instead of by name.
    pub version: Option<String>,
    /// Model input that receives the aspect ratio (`16:9` or `9:16`); none when unset.
    pub aspect_ratio_input: Option<String>,
    /// Model input that receives the shot's duration in seconds; none when unset.
    pub duration_input: Option<String>,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        ProvidersConfig {
            // Runway: "should not expect updates more frequent than once every five seconds".
            poll_interval_ms: 5_000,
            task_timeout_s: 600,
            rate_limit_retries: 3,
            request_timeout_s: 30,
            runway: RunwayConfig::default(),
            veo: VeoConfig::default(),
            replicate: ReplicateConfig::default(),
        }
    }
}

impl Default for RunwayConfig {
    fn default() -> Self {
        RunwayConfig {
            base_url: "https://api.dev.runwayml.com".into(),
            api_key: None,
            model: "gen4.5".into(),
            api_version: "2024-11-06".into(),
        }
    }
}

impl Default for VeoConfig {
    fn default() -> Self {
        VeoConfig {
            base_url: "https://generativelanguage.googleapis.com".into(),
            api_key: None,
            model: "veo-3.1-generate-preview".into(),
        }
    }
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        ReplicateConfig {
            base_url: "https://api.replicate.com".into(),
            api_key: None,
            model: "wan-video/wan-2.2-t2v-fast".into(),
            version: None,
            aspect_ratio_input: Some("aspect_ratio".into()),
            duration_input: None,
        }
    }
}

impl ProvidersConfig {
    /// The environment layer: each provider key from its variable (an empty value is ignored).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        let key = |name: &str| var(name).filter(|v| !v.trim().is_empty()).map(Secret);
        if let Some(k) = key("AIPROD_RUNWAY_API_KEY") {
            self.runway.api_key = Some(k);
        }
        if let Some(k) = key("AIPROD_VEO_API_KEY") {
            self.veo.api_key = Some(k);
        }
        if let Some(k) = key("AIPROD_REPLICATE_API_TOKEN") {
            self.replicate.api_key = Some(k);
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.poll_interval_ms == 0 || self.task_timeout_s == 0 || self.request_timeout_s == 0 {
            problems.push(
                "providers.poll_interval_ms, task_timeout_s and request_timeout_s must be > 0"
                    .into(),
            );
        }
        let providers = [
            (
                "runway",
                &self.runway.base_url,
                &self.runway.api_key,
                &self.runway.model,
            ),
            (
                "veo",
                &self.veo.base_url,
                &self.veo.api_key,
                &self.veo.model,
            ),
            (
                "replicate",
                &self.replicate.base_url,
                &self.replicate.api_key,
                &self.replicate.model,
            ),
        ];
        for (name, base_url, key, model) in providers {
            if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
                problems.push(format!("providers.{name}.base_url must be an http(s) URL"));
            }
            if key.as_ref().is_some_and(|k| k.0.trim().is_empty()) {
                problems.push(format!("providers.{name}.api_key must not be empty"));
            }
            if model.trim().is_empty() {
                problems.push(format!("providers.{name}.model must not be empty"));
            }
        }
        let r = &self.replicate;
        if r.version.is_none() && r.model.split('/').filter(|p| !p.is_empty()).count() != 2 {
            problems.push("providers.replicate.model must be owner/name".into());
        }
        problems
    }
}

/// Flags of `aiprod serve`; each also reads its `AIPROD_*` environment variable.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (any field of the configuration table).
    #[arg(long, env = "AIPROD_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "AIPROD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Database URL [default: sqlite://data/aiprod.db].
    #[arg(long, env = "AIPROD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Operator credential for AdminService.
    #[arg(long, env = "AIPROD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Do not create the demo tenant on an empty database.
    #[arg(long, env = "AIPROD_NO_DEMO_TENANT")]
    pub no_demo_tenant: bool,
    /// Write the bound address to this file once serving.
    #[arg(long, env = "AIPROD_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Prometheus metrics address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "AIPROD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, env = "AIPROD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Sandbox render latency per shot in milliseconds.
    #[arg(long, env = "AIPROD_SANDBOX_LATENCY_MS")]
    pub sandbox_latency_ms: Option<u64>,
    /// Sandbox failure probability of every render attempt (0..1).
    #[arg(long, env = "AIPROD_SANDBOX_FAILURE_RATE")]
    pub sandbox_failure_rate: Option<f64>,
    /// Seed of the sandbox simulation.
    #[arg(long, env = "AIPROD_SANDBOX_SEED")]
    pub sandbox_seed: Option<u64>,
    /// Short side in pixels of sandbox clips and cuts [default: 480].
    #[arg(long, env = "AIPROD_SANDBOX_SHORT_SIDE")]
    pub sandbox_short_side: Option<u32>,
    /// Local directory of clips, cuts and posters [default: `artifacts/` beside the SQLite file].
    #[arg(long, env = "AIPROD_ARTIFACTS_DIR")]
    pub artifacts_dir: Option<PathBuf>,
    /// Shared artifact store: s3://bucket/prefix, gs://…, az://… (credentials from the environment).
    #[arg(long, env = "AIPROD_ARTIFACTS_URL")]
    pub artifacts_url: Option<String>,
}

impl Config {
    /// Builds the configuration from its layers and validates it.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
        let mut config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        // Provider keys come from the environment only (never from flags, which `ps` shows).
        config.providers.apply_env(|name| std::env::var(name).ok());
        if let Some(v) = args.listen {
            config.listen = v;
        }
        if let Some(v) = &args.database_url {
            config.database_url = v.clone();
        }
        if let Some(v) = &args.admin_token {
            config.admin_token = Some(v.clone());
        }
        if args.no_demo_tenant {
            config.demo_tenant = false;
        }
        if let Some(v) = &args.ready_file {
            config.ready_file = Some(v.clone());
        }
        if let Some(v) = args.metrics_listen {
            config.metrics_listen = Some(v);
        }
        if let Some(v) = &args.log_format {
            config.log_format = v.clone();
        }
        if let Some(v) = args.sandbox_latency_ms {
            config.sandbox.latency_ms = v;
        }
        if let Some(v) = args.sandbox_failure_rate {
            config.sandbox.failure_rate = v;
        }
        if let Some(v) = args.sandbox_seed {
            config.sandbox.seed = v;
        }
        if let Some(v) = args.sandbox_short_side {
            config.media.sandbox_short_side = v;
        }
        if let Some(v) = &args.artifacts_dir {
            config.artifacts.dir = Some(v.clone());
        }
        if let Some(v) = &args.artifacts_url {
            config.artifacts.url = Some(v.clone());
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Checks every field once; the error lists every problem.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = self.catalog.validate();
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !rate_ok(self.sandbox.failure_rate)
            || !self
                .sandbox
                .backend_failure_rates
                .values()
                .all(|r| rate_ok(*r))
        {
            problems.push("sandbox failure rates must be within 0..1".into());
        }
        if !(0.0..=1.0).contains(&self.sandbox.quality_jitter) {
            problems.push("sandbox.quality_jitter must be within 0..1".into());
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            problems.push(format!(
                "database_url must start with sqlite: or postgres: (got {:?})",
                self.database_url
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            problems.push("log_format must be text or json".into());
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            problems.push("admin_token must be at least 16 characters".into());
        }
        let c = &self.cluster;
        if c.lease_ttl_ms < 100
            || c.heartbeats_per_lease < 2
            || c.poll_interval_ms == 0
            || c.max_jobs_per_replica == 0
            || c.health_probe_interval_ms == 0
        {
            problems.push(
                "cluster: lease_ttl_ms ≥ 100, heartbeats_per_lease ≥ 2, the other figures > 0"
                    .into(),
            );
        }
        if self.pipeline_step_max_failures == 0 {
            problems.push("pipeline_step_max_failures must be > 0".into());
        }
        if self.pipeline_workers == 0
            || self.concurrency_limit == 0
            || self.max_message_bytes < 1024
        {
            problems.push(
                "pipeline_workers and concurrency_limit must be > 0, max_message_bytes ≥ 1024"
                    .into(),
            );
        }
        if self.circuit.failure_threshold == 0 {
            problems.push("circuit.failure_threshold must be > 0".into());
        }
        problems.extend(self.providers.problems());
        let b = &self.sandbox.bad_outputs;
        if ![b.black, b.frozen, b.truncated, b.undecodable]
            .into_iter()
            .all(rate_ok)
            || b.black + b.frozen + b.truncated + b.undecodable > 1.0
        {
            problems.push("sandbox.bad_outputs rates must be within 0..1 and add up to ≤ 1".into());
        }
        if self.render.max_parallel_shots_per_job == 0
            || self.render.backend_concurrency.values().any(|n| *n == 0)
        {
            problems.push(
                "render.max_parallel_shots_per_job and render.backend_concurrency must be > 0"
                    .into(),
            );
        }
        let m = &self.media;
        if !(16..=2160).contains(&m.sandbox_short_side) || !(16..=2160).contains(&m.live_short_side)
        {
            problems.push(
                "media.sandbox_short_side and live_short_side must be within 16..2160".into(),
            );
        }
        if !(1..=60).contains(&m.fps) {
            problems.push("media.fps must be within 1..60".into());
        }
        if !(16..=1920).contains(&m.poster_width) {
            problems.push("media.poster_width must be within 16..1920".into());
        }
        if m.ffmpeg.trim().is_empty() {
            problems.push("media.ffmpeg must be auto, off or a path".into());
        }
        if self.artifacts.presign_expiry_s == 0 || self.artifacts.presign_expiry_s > 7 * 24 * 3600 {
            problems.push("artifacts.presign_expiry_s must be within 1..604800 (7 days)".into());
        }
        if let Some(url) = &self.artifacts.url
            && !["s3://", "gs://", "az://", "azure://", "abfs://", "file://"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            problems.push("artifacts.url must start with s3://, gs://, az:// or file://".into());
        }
        anyhow::ensure!(
            problems.is_empty(),
            "invalid configuration:\n  - {}",
            problems.join("\n  - ")
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aiprod.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:6000\"\n[sandbox]\nlatency_ms = 5\nseed = 9\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            sandbox_seed: Some(11),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.sandbox.latency_ms, 5);
        assert_eq!(
            c.sandbox.seed, 11,
            "flags and environment win over the file"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let c = Config {
            log_format: "xml".into(),
            sandbox: SandboxConfig {
                failure_rate: 2.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("log_format") && err.contains("failure rates"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }

    #[test]
    fn provider_keys_layer_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aiprod.toml");
        std::fs::write(
            &file,
            "[providers]\npoll_interval_ms = 250\n[providers.runway]\napi_key = \"rw-from-file\"\n\
             [providers.replicate]\napi_key = \"r8-from-file\"\nmodel = \"acme/video\"\n",
        )
        .unwrap();
        let mut c = Config::from_file(&file).unwrap();
        let env = std::collections::HashMap::from([
            ("AIPROD_RUNWAY_API_KEY", "rw-from-env"),
            ("AIPROD_VEO_API_KEY", "veo-from-env"),
            ("AIPROD_REPLICATE_API_TOKEN", " "),
        ]);
        c.providers
            .apply_env(|name| env.get(name).map(|v| v.to_string()));
        let p = &c.providers;
        assert_eq!(p.poll_interval_ms, 250);
        assert_eq!(
            p.runway.api_key,
            Some(Secret::new("rw-from-env")),
            "the environment wins"
        );
        assert_eq!(p.veo.api_key, Some(Secret::new("veo-from-env")));
        assert_eq!(
            p.replicate.api_key,
            Some(Secret::new("r8-from-file")),
            "an empty variable is ignored"
        );
        assert_eq!(p.replicate.model, "acme/video");
        assert_eq!(
            p.runway.base_url, "https://api.dev.runwayml.com",
            "real hosts by default"
        );
        assert_eq!(p.veo.base_url, "https://generativelanguage.googleapis.com");
        assert_eq!(p.replicate.base_url, "https://api.replicate.com");
        c.validate().unwrap();
    }

    #[test]
    fn provider_keys_are_never_printed() {
        let mut c = Config::default();
        c.providers.runway.api_key = Some(Secret::new("rw-secret-1"));
        c.providers.veo.api_key = Some(Secret::new("veo-secret-2"));
        c.providers.replicate.api_key = Some(Secret::new("r8-secret-3"));
        let debug = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for key in ["rw-secret-1", "veo-secret-2", "r8-secret-3"] {
            assert!(!debug.contains(key) && !json.contains(key), "{key} leaked");
        }
        assert!(debug.contains("Secret(***)"));
    }

    #[test]
    fn provider_settings_are_checked() {
        assert!(toml::from_str::<Config>("[providers.runway]\napikey = \"x\"").is_err());
        let mut c = Config::default();
        c.providers.poll_interval_ms = 0;
        c.providers.veo.base_url = "generativelanguage.googleapis.com".into();
        c.providers.replicate.model = "no-owner".into();
        c.providers.runway.api_key = Some(Secret::new(""));
        let err = c.validate().unwrap_err().to_string();
        for expected in [
            "poll_interval_ms",
            "providers.veo.base_url",
            "providers.replicate.model",
            "providers.runway.api_key",
        ] {
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
