//! The client subcommands of `aiprod` (`presets`, `estimate`, `jobs …`, `manifest …`, `costs`,
//! `usage`, and the older `download`): a partner's command line built on the Rust SDK, so it
//! retries, resumes watches and downloads exactly like an application using the SDK.
//!
//! `--output json` prints one JSON document per result (protobuf's JSON mapping with the proto
//! field names; `jobs watch`: one line per event) for scripts. The exit code tells the gRPC code
//! of a failed call (see [`exit_code`]).

/// `println!` that ends the process quietly when stdout is closed (`aiprod … | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

pub mod download;
mod watch;

use aiprod_sdk::{Client, Code, Error, StreamExt, TryStreamExt, pb};
use clap::{Args, Subcommand, ValueEnum};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

/// How the server is reached and how results are printed (every client subcommand takes these).
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The server's gRPC endpoint (`https://…` uses TLS with the system roots).
    #[arg(
        long,
        env = "AIPROD_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub endpoint: String,
    /// The tenant's API key.
    #[arg(long, env = "AIPROD_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// `text` for people, `json` for scripts (one JSON document per result).
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// Deadline of each call in seconds, retries included.
    #[arg(long, default_value_t = 30, global = true)]
    pub timeout: u64,
    /// A CA certificate (PEM) to trust for `https://` endpoints, besides the system roots.
    #[arg(long, env = "AIPROD_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// The client subcommands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// List the presets (pipelines, durations, quality floors, price caps).
    Presets {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Quote a job across the render backends before creating it.
    Estimate {
        #[command(flatten)]
        client: ClientArgs,
        /// quick_social, brand_campaign or premium_spot.
        #[arg(long)]
        preset: String,
        /// Video length in seconds [default: the preset's].
        #[arg(long)]
        duration: Option<u32>,
        #[arg(long, default_value = "")]
        brief: String,
        #[arg(long, default_value = "")]
        brand: String,
    },
    /// Create, inspect, follow, cancel and download jobs.
    Jobs {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Review, edit and approve a job's production manifest.
    Manifest {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        action: ManifestAction,
    },
    /// A job's certified cost report.
    Costs {
        #[command(flatten)]
        client: ClientArgs,
        job_id: String,
    },
    /// Month-to-date usage, limits and budget.
    Usage {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsAction {
    /// Create a job (idempotent by --request-id; one is generated when omitted).
    Create {
        #[arg(long)]
        preset: String,
        #[arg(long)]
        brief: String,
        #[arg(long)]
        duration: Option<u32>,
        #[arg(long, default_value = "")]
        brand: String,
        /// Skip the manifest review.
        #[arg(long)]
        auto_approve: bool,
        #[arg(long, default_value = "")]
        request_id: String,
        /// A label `key=value` (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Print only the job id.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a job.
    Get { job_id: String },
    /// List jobs, newest first.
    List {
        /// Only jobs in this state (repeatable), e.g. DELIVERED or rendering.
        #[arg(long = "state")]
        states: Vec<String>,
        #[arg(long, default_value = "")]
        preset: String,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Cancel a job.
    Cancel {
        job_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Follow a job live: a progress bar for the job and one per shot (state, backend, cost so
    /// far); exits when the job ends (0 when DELIVERED, 3 when FAILED or CANCELLED).
    Watch {
        job_id: String,
        /// Only events after this sequence.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Download the job's video (or a shot's clip) with a progress bar; resumes an interrupted
    /// download and verifies the SHA-256.
    Download {
        job_id: String,
        /// Where to write it [default: <job_id>.mp4].
        path: Option<PathBuf>,
        /// This shot's clip instead of the video.
        #[arg(long)]
        shot: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ManifestAction {
    /// Show the manifest (shots, consistency markers, revision, etag).
    Get { job_id: String },
    /// Edit the manifest (re-quoted by the server); the etag is read first.
    Edit {
        job_id: String,
        /// New audio style.
        #[arg(long)]
        audio_style: Option<String>,
        /// `N=TEXT`: new description of shot N (1-based, repeatable).
        #[arg(long = "shot", value_parser = parse_shot_edit)]
        shots: Vec<(usize, String)>,
        /// `N=SECONDS`: new duration of shot N (1-based, repeatable).
        #[arg(long = "shot-duration", value_parser = parse_shot_duration)]
        durations: Vec<(usize, u32)>,
    },
    /// Approve the manifest; rendering starts.
    Approve { job_id: String },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn parse_shot_edit(s: &str) -> Result<(usize, String), String> {
    let (n, text) = s
        .split_once('=')
        .ok_or_else(|| format!("expected N=TEXT, got {s:?}"))?;
    Ok((
        n.parse().map_err(|_| format!("bad shot number {n:?}"))?,
        text.to_string(),
    ))
}

fn parse_shot_duration(s: &str) -> Result<(usize, u32), String> {
    let (n, secs) = s
        .split_once('=')
        .ok_or_else(|| format!("expected N=SECONDS, got {s:?}"))?;
    Ok((
        n.parse().map_err(|_| format!("bad shot number {n:?}"))?,
        secs.parse().map_err(|_| format!("bad seconds {secs:?}"))?,
    ))
}

/// A failure of a client command: a gRPC error, or a local one (file, arguments).
#[derive(Debug)]
pub enum CliError {
    Api(Error),
    Local(String),
    /// The watched job ended without being delivered.
    JobNotDelivered(String),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Api(e)
    }
}

/// Exit codes: 0 success; 1 a local error (file, bad input); 2 a usage error (clap); 3 a watched
/// job ended FAILED or CANCELLED; 10 + the gRPC code for a failed call (11 CANCELLED … 13
/// INVALID_ARGUMENT, 14 DEADLINE_EXCEEDED, 15 NOT_FOUND, 17 PERMISSION_DENIED, 18
/// RESOURCE_EXHAUSTED, 19 FAILED_PRECONDITION, 20 ABORTED, 23 INTERNAL, 24 UNAVAILABLE, 26
/// UNAUTHENTICATED).
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        other => 10 + other as u8,
    }
}

/// Runs a client subcommand; prints its result or its error and returns the exit code.
pub async fn run(command: ClientCommand) -> ExitCode {
    let output = match &command {
        ClientCommand::Presets { client }
        | ClientCommand::Estimate { client, .. }
        | ClientCommand::Jobs { client, .. }
        | ClientCommand::Manifest { client, .. }
        | ClientCommand::Costs { client, .. }
        | ClientCommand::Usage { client } => client.output,
    };
    report(output, dispatch(command).await)
}

/// Prints an error the way `output` asks and maps it to the exit code.
pub fn report(output: Output, result: Result<(), CliError>) -> ExitCode {
    let (code, message, json) = match result {
        Ok(()) => return ExitCode::SUCCESS,
        Err(CliError::Local(m)) => (1, m.clone(), serde_json::json!({"error": {"message": m}})),
        Err(CliError::JobNotDelivered(m)) => {
            (3, m.clone(), serde_json::json!({"error": {"message": m}}))
        }
        Err(CliError::Api(e)) => {
            let violations: Vec<_> = e
                .field_violations()
                .into_iter()
                .map(|v| serde_json::json!({"field": v.field, "description": v.description}))
                .collect();
            let mut text = format!("{} ({})", e.message(), code_name(e.code()));
            for v in e.field_violations() {
                text.push_str(&format!("\n  {}: {}", v.field, v.description));
            }
            if let Some(wait) = e.retry_after() {
                text.push_str(&format!("\n  retry after {:.1} s", wait.as_secs_f64()));
            }
            let json = serde_json::json!({"error": {
                "code": code_name(e.code()),
                "message": e.message(),
                "reason": e.reason(),
                "field_violations": violations,
                "retry_after_s": e.retry_after().map(|d| d.as_secs_f64()),
            }});
            (exit_code(e.code()), text, json)
        }
    };
    match output {
        Output::Json => eprintln!("{json}"),
        Output::Text => eprintln!("error: {message}"),
    }
    ExitCode::from(code)
}

/// The canonical gRPC name of a code, e.g. `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Connects with the SDK's defaults plus the command's deadline and CA.
pub async fn connect(args: &ClientArgs) -> Result<Client, CliError> {
    let key = args.api_key.clone().ok_or_else(|| {
        CliError::Local("no API key: set AIPROD_API_KEY or pass --api-key".into())
    })?;
    let mut builder =
        Client::builder(args.endpoint.clone()).timeout(Duration::from_secs(args.timeout));
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display())))?;
        builder = builder.ca_pem(pem);
    }
    Ok(builder.connect(&key).await?)
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(aiprod::pb::FILE_DESCRIPTOR_SET).expect("embedded descriptors")
    })
}

/// `message` (of the proto type `name`, e.g. `aiprod.v1.Job`) in protobuf's JSON mapping, with
/// the proto field names, every field present and 64-bit integers as numbers (for jq).
pub fn to_json(message: &impl prost::Message, name: &str) -> serde_json::Value {
    let descriptor = pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("unknown message {name}"));
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes as its own type");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serializable")
}

fn print_json(message: &impl prost::Message, name: &str) {
    out!("{}", to_json(message, name));
}

pub fn usd(micros: i64) -> String {
    format!("${:.2}", micros as f64 / 1e6)
}

pub fn state_name(state: i32) -> &'static str {
    pb::JobState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STATE_"))
        .unwrap_or("UNKNOWN")
}

pub fn backend_name(backend: i32) -> &'static str {
    pb::Backend::try_from(backend)
        .map(|b| b.as_str_name().trim_start_matches("BACKEND_"))
        .unwrap_or("UNKNOWN")
}

fn parse_state(s: &str) -> Result<i32, CliError> {
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("JOB_STATE_") {
        upper
    } else {
        format!("JOB_STATE_{upper}")
    };
    pb::JobState::from_str_name(&name)
        .map(|s| s as i32)
        .ok_or_else(|| CliError::Local(format!("unknown job state {s:?}")))
}

fn print_job(job: &pb::Job) {
    let quote = job.quote.as_ref().map_or(0, |q| q.total_micros);
    out!(
        "{}  {}  {}  {}/{} shots  quote {}{}",
        job.job_id,
        state_name(job.state),
        job.preset_id,
        job.shots_rendered,
        job.shots_total,
        usd(quote),
        job.video
            .as_ref()
            .map(|v| format!("  video {} bytes", v.size_bytes))
            .unwrap_or_default()
    );
}

async fn dispatch(command: ClientCommand) -> Result<(), CliError> {
    match command {
        ClientCommand::Presets { client: args } => {
            let client = connect(&args).await?;
            let presets = client
                .presets()
                .list_presets(pb::ListPresetsRequest {})
                .await?
                .into_inner();
            if args.output == Output::Json {
                print_json(&presets, "aiprod.v1.ListPresetsResponse");
            } else {
                for p in &presets.presets {
                    out!(
                        "{:<16} {:>4} s (max {:>3} s)  quality ≥ {:.2}  ≤ {}/min  {}",
                        p.preset_id,
                        p.default_duration_s,
                        p.max_duration_s,
                        p.quality_threshold,
                        usd(p.cost_cap_per_minute_micros),
                        p.display_name
                    );
                }
            }
        }
        ClientCommand::Estimate {
            client: args,
            preset,
            duration,
            brief,
            brand,
        } => {
            let client = connect(&args).await?;
            let estimate = client
                .costs()
                .estimate_cost(pb::EstimateCostRequest {
                    preset_id: preset,
                    duration_s: duration,
                    brief,
                    brand_id: brand,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if args.output == Output::Json {
                print_json(&estimate, "aiprod.v1.EstimateCostResponse");
            } else {
                let q = estimate.recommended.clone().unwrap_or_default();
                out!(
                    "{} {} s: quote {} (at most {}), {} shots",
                    estimate.preset_id,
                    estimate.duration_s,
                    usd(q.total_micros),
                    usd(q.guaranteed_max_micros),
                    q.shots.len()
                );
                for o in &estimate.options {
                    out!(
                        "  {:<10} {:>8}  quality {:.2}{}",
                        backend_name(o.backend),
                        usd(o.cost_micros),
                        o.quality,
                        if o.can_render { "" } else { "  (not eligible)" }
                    );
                }
            }
        }
        ClientCommand::Jobs {
            client: args,
            action,
        } => jobs(&args, action).await?,
        ClientCommand::Manifest {
            client: args,
            action,
        } => manifest(&args, action).await?,
        ClientCommand::Costs {
            client: args,
            job_id,
        } => {
            let client = connect(&args).await?;
            let response = client
                .costs()
                .get_job_costs(pb::GetJobCostsRequest { job_id })
                .await?
                .into_inner();
            if args.output == Output::Json {
                print_json(&response, "aiprod.v1.GetJobCostsResponse");
            } else {
                let r = response.report.unwrap_or_default();
                out!(
                    "{}: quote {}, metered {}, billed {} (guaranteed max {}), {}",
                    r.job_id,
                    usd(r.quote_micros),
                    usd(r.metered_micros),
                    usd(r.billed_micros),
                    usd(r.guaranteed_max_micros),
                    if r.certified {
                        "certified"
                    } else {
                        "not final yet"
                    }
                );
            }
        }
        ClientCommand::Usage { client: args } => {
            let client = connect(&args).await?;
            let usage = client
                .costs()
                .get_usage(pb::GetUsageRequest {})
                .await?
                .into_inner();
            if args.output == Output::Json {
                print_json(&usage, "aiprod.v1.GetUsageResponse");
            } else {
                out!(
                    "{} jobs this month ({} in progress, limit {}), {:.1} of {} included minutes, billed {}, {} requests/min",
                    usage.jobs,
                    usage.active_jobs,
                    usage.concurrent_job_limit,
                    usage.video_minutes,
                    usage.included_minutes,
                    usd(usage.billed_micros),
                    usage.requests_per_minute
                );
            }
        }
    }
    Ok(())
}

async fn jobs(args: &ClientArgs, action: JobsAction) -> Result<(), CliError> {
    let client = connect(args).await?;
    let json = args.output == Output::Json;
    match action {
        JobsAction::Create {
            preset,
            brief,
            duration,
            brand,
            auto_approve,
            request_id,
            labels,
            quiet,
        } => {
            let response = client
                .render()
                .create_job(pb::CreateJobRequest {
                    request_id,
                    preset_id: preset,
                    brief,
                    brand_id: brand,
                    duration_s: duration,
                    auto_approve,
                    labels: labels.into_iter().collect(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let job = response.job.clone().unwrap_or_default();
            if json {
                print_json(&response, "aiprod.v1.CreateJobResponse");
            } else if quiet {
                out!("{}", job.job_id);
            } else {
                print_job(&job);
            }
        }
        JobsAction::Get { job_id } => {
            let response = client
                .render()
                .get_job(pb::GetJobRequest { job_id })
                .await?
                .into_inner();
            if json {
                print_json(&response, "aiprod.v1.GetJobResponse");
            } else {
                print_job(&response.job.unwrap_or_default());
            }
        }
        JobsAction::List {
            states,
            preset,
            limit,
        } => {
            let states = states
                .iter()
                .map(|s| parse_state(s))
                .collect::<Result<Vec<_>, _>>()?;
            let jobs: Vec<pb::Job> = client
                .list_all_jobs(pb::ListJobsRequest {
                    page_size: limit.min(100) as u32,
                    states,
                    preset_id: preset,
                    ..Default::default()
                })
                .take(limit)
                .try_collect()
                .await?;
            if json {
                let page = pb::ListJobsResponse {
                    jobs,
                    next_page_token: String::new(),
                };
                print_json(&page, "aiprod.v1.ListJobsResponse");
            } else {
                jobs.iter().for_each(print_job);
            }
        }
        JobsAction::Cancel { job_id, reason } => {
            let response = client
                .render()
                .cancel_job(pb::CancelJobRequest { job_id, reason })
                .await?
                .into_inner();
            if json {
                print_json(&response, "aiprod.v1.CancelJobResponse");
            } else {
                print_job(&response.job.unwrap_or_default());
            }
        }
        JobsAction::Watch { job_id, after } => {
            watch::watch(&client, &job_id, after, args.output).await?;
        }
        JobsAction::Download { job_id, path, shot } => {
            let path = path.unwrap_or_else(|| download::default_path(&job_id, shot.as_deref()));
            let artifact = download::with_progress(&client, &job_id, shot.as_deref(), &path)
                .await
                .map_err(CliError::Api)?;
            if json {
                let mut value = to_json(&artifact, "aiprod.v1.VideoArtifact");
                value["path"] = serde_json::Value::String(path.display().to_string());
                out!("{value}");
            } else {
                out!("{}", download::summary(&path, &artifact));
            }
        }
    }
    Ok(())
}

async fn manifest(args: &ClientArgs, action: ManifestAction) -> Result<(), CliError> {
    let client = connect(args).await?;
    let json = args.output == Output::Json;
    let get = |job_id: String| {
        let client = client.clone();
        async move {
            Ok::<_, CliError>(
                client
                    .icc()
                    .get_manifest(pb::GetManifestRequest { job_id })
                    .await?
                    .into_inner(),
            )
        }
    };
    match action {
        ManifestAction::Get { job_id } => {
            let response = get(job_id).await?;
            if json {
                print_json(&response, "aiprod.v1.GetManifestResponse");
            } else {
                let m = response.manifest.unwrap_or_default();
                out!(
                    "{} revision {} etag {}{}  audio: {}",
                    m.job_id,
                    m.revision,
                    m.etag,
                    if m.approved { " (approved)" } else { "" },
                    m.audio_style
                );
                for (i, s) in m.shots.iter().enumerate() {
                    out!(
                        "  {:>2}. {:>3} s  {:<10} {}",
                        i + 1,
                        s.duration_s,
                        backend_name(s.backend),
                        s.description
                    );
                }
            }
        }
        ManifestAction::Edit {
            job_id,
            audio_style,
            shots,
            durations,
        } => {
            let current = get(job_id.clone()).await?.manifest.unwrap_or_default();
            let mut manifest = pb::Manifest::default();
            let mut paths = Vec::new();
            if let Some(style) = audio_style {
                manifest.audio_style = style;
                paths.push("audio_style".to_string());
            }
            if !shots.is_empty() || !durations.is_empty() {
                let mut edited = current.shots.clone();
                let count = edited.len();
                let shot = |n: usize| {
                    if n == 0 || n > count {
                        return Err(CliError::Local(format!(
                            "shot {n} does not exist (the manifest has {count})"
                        )));
                    }
                    Ok(n - 1)
                };
                for (n, text) in shots {
                    let i = shot(n)?;
                    edited[i].description = text;
                }
                for (n, secs) in durations {
                    let i = shot(n)?;
                    edited[i].duration_s = secs;
                }
                manifest.shots = edited;
                paths.push("shots".to_string());
            }
            if paths.is_empty() {
                return Err(CliError::Local(
                    "nothing to edit: pass --audio-style, --shot N=TEXT or --shot-duration N=SECONDS"
                        .into(),
                ));
            }
            let response = client
                .icc()
                .update_manifest(pb::UpdateManifestRequest {
                    job_id,
                    manifest: Some(manifest),
                    update_mask: Some(aiprod_sdk::prost_types::FieldMask { paths }),
                    etag: current.etag,
                })
                .await?
                .into_inner();
            if json {
                print_json(&response, "aiprod.v1.UpdateManifestResponse");
            } else {
                let m = response.manifest.unwrap_or_default();
                out!(
                    "{} revision {} etag {}  new quote {}",
                    m.job_id,
                    m.revision,
                    m.etag,
                    usd(response.quote.map_or(0, |q| q.total_micros))
                );
            }
        }
        ManifestAction::Approve { job_id } => {
            let current = get(job_id.clone()).await?.manifest.unwrap_or_default();
            let response = client
                .icc()
                .approve_manifest(pb::ApproveManifestRequest {
                    job_id,
                    etag: current.etag,
                })
                .await?
                .into_inner();
            if json {
                print_json(&response, "aiprod.v1.ApproveManifestResponse");
            } else {
                print_job(&response.job.unwrap_or_default());
            }
        }
    }
    Ok(())
}
