//! The `aiprod` command: `serve` (the default), `migrate`, `admin` (tenants and keys, offline), and
//! the client subcommands a partner uses against a running server (`presets`, `estimate`,
//! `jobs …`, `manifest …`, `costs`, `usage`, `download`; see `cli/`).

mod cli;

/// See Cargo.toml: faster on the request path than the system allocator, and it returns freed
/// memory to the system.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use aiprod::config::{Config, ServeArgs};
use aiprod::domain::tenant::KeyMode;
use aiprod::domain::{Money, Tier};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "aiprod",
    version,
    about = "AIPROD: short AI brand videos over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (the default command).
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate {
        #[arg(
            long,
            env = "AIPROD_DATABASE_URL",
            default_value = "sqlite://data/aiprod.db"
        )]
        database_url: String,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Download a job's video (or one shot's clip) from a running server, resuming after dropped
    /// connections and verifying its SHA-256 (the same as `jobs download`).
    Download {
        /// The server's gRPC endpoint.
        #[arg(
            long,
            env = "AIPROD_ENDPOINT",
            default_value = "http://127.0.0.1:50051"
        )]
        endpoint: String,
        /// The tenant's API key.
        #[arg(long, env = "AIPROD_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The job.
        job_id: String,
        /// Where to write the file [default: <job_id>.mp4].
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        /// Download this shot's clip instead of the video.
        #[arg(long)]
        shot: Option<String>,
    },
    /// Manage tenants and API keys directly in the database.
    Admin {
        #[arg(
            long,
            env = "AIPROD_DATABASE_URL",
            default_value = "sqlite://data/aiprod.db"
        )]
        database_url: String,
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Create a tenant; prints its id.
    CreateTenant {
        #[arg(long)]
        name: String,
        /// bronze, gold or platinum.
        #[arg(long, default_value = "gold")]
        tier: String,
        /// Monthly budget in USD.
        #[arg(long)]
        monthly_budget_usd: Option<u64>,
    },
    /// Create an API key; prints the secret (shown only once).
    CreateKey {
        #[arg(long)]
        tenant_id: String,
        /// live or test.
        #[arg(long, default_value = "test")]
        mode: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Expire the key after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Revoke an API key, effective immediately.
    RevokeKey {
        #[arg(long)]
        key_id: String,
    },
    /// Onboard a beta partner: Platinum free for 90 days, a 500-job quota, a $3,000 monthly budget;
    /// prints its live key once.
    OnboardBeta {
        #[arg(long)]
        name: String,
    },
    /// Replace a key with a new one (same tenant, mode and name) and revoke the old one; prints the new key once.
    RotateKey {
        #[arg(long)]
        key_id: String,
    },
    /// List a tenant's keys (prefixes and metadata only).
    ListKeys {
        #[arg(long)]
        tenant_id: String,
    },
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AIPROD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn run_server(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    init_tracing(config.log_format == "json");
    if let Some(addr) = config.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()?;
        tracing::info!(%addr, "metrics on /metrics");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    aiprod::serve(config, listener, shutdown_signal()).await
}

async fn admin(database_url: String, action: AdminAction) -> anyhow::Result<()> {
    let config = Config {
        database_url,
        demo_tenant: false,
        ..Config::default()
    };
    let app = aiprod::open_app(config).await?;
    match action {
        AdminAction::CreateTenant {
            name,
            tier,
            monthly_budget_usd,
        } => {
            let tier = Tier::parse(&tier)
                .ok_or_else(|| anyhow::anyhow!("--tier must be bronze, gold or platinum"))?;
            let tenant = app
                .create_tenant(aiprod::app::admin::NewTenant {
                    name,
                    tier,
                    monthly_budget: monthly_budget_usd
                        .map(|usd| Money::from_micros(usd as i64 * 1_000_000)),
                    trial: None,
                    job_quota: None,
                })
                .await?;
            println!("{}", tenant.id);
        }
        AdminAction::CreateKey {
            tenant_id,
            mode,
            name,
            expires_in_days,
        } => {
            let mode = KeyMode::parse(&mode)
                .ok_or_else(|| anyhow::anyhow!("--mode must be live or test"))?;
            let expires =
                expires_in_days.map(|d| aiprod::store::now_ms() + i64::from(d) * 86_400_000);
            let (key, secret) = app.create_key(&tenant_id, mode, &name, expires).await?;
            eprintln!(
                "created {} ({}); the secret below is shown only once",
                key.id, key.prefix
            );
            println!("{secret}");
        }
        AdminAction::RevokeKey { key_id } => {
            let key = app.revoke_key(&key_id).await?;
            println!("revoked {} ({})", key.id, key.prefix);
        }
        AdminAction::OnboardBeta { name } => {
            let (tenant, key, secret) = app.onboard_beta(&name).await?;
            eprintln!(
                "onboarded {} ({}): Platinum trial for 90 days, 500-job quota, $3,000 monthly budget; key {} shown only once",
                tenant.name, tenant.id, key.prefix
            );
            println!("{secret}");
        }
        AdminAction::RotateKey { key_id } => {
            let (key, secret, old) = app.rotate_key(&key_id, None).await?;
            eprintln!(
                "revoked {}; new key {} ({}) shown only once",
                old.id, key.id, key.prefix
            );
            println!("{secret}");
        }
        AdminAction::ListKeys { tenant_id } => {
            for k in app.keys(&tenant_id).await? {
                let status = if k.revoked_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.prefix,
                    k.mode.as_str(),
                    status,
                    k.name
                );
            }
        }
    }
    app.close_store().await;
    Ok(())
}

/// The allocator keeps transparent huge pages and returns memory to the system only in whole
/// 2 MiB pages (mimalloc's `allow_thp = 2`; by default it purges 64 KiB at a time).
///
/// Why, measured with the fan-out bench (10,000 streams, server on one core):
/// - With huge pages, the first event after the streams sat idle for a few seconds reaches the last
///   of them in 10–19 ms; without them (4 KiB pages, a cold TLB) in 25–47 ms.
/// - The price: server CPU per delivered event 2.9–3.6 µs instead of 1.9–2.4 µs, mostly the kernel
///   zeroing a whole 2 MiB page when memory is first touched (media threads' frame buffers, new
///   threads' heaps).
/// - With 64 KiB purges (huge pages split, then faulted in again), 3 of 8 runs delivered some
///   event 27–65 ms late; with whole-page purges, 5 of about 45 runs over 26 ms (at most 42).
///
/// The one `unsafe` of the workspace (the `aiprod` library forbids it): mimalloc's crate has no safe
/// way to set an option, and the environment (`MIMALLOC_ALLOW_THP`) is read before `main`.
#[allow(unsafe_code)]
fn huge_pages_purged_whole() {
    // `mi_option_allow_thp` in mimalloc 3 (libmimalloc-sys names no constant for it). Set only
    // under mimalloc 3 and when the option reads as its default (1): another major version may
    // number its options differently, and a `MIMALLOC_ALLOW_THP` of 0 in the environment wins.
    const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
    // SAFETY: reading the version, and reading and setting an option, are plain calls on
    // mimalloc's globals.
    let version = unsafe { libmimalloc_sys::mi_version() };
    if !(30000..40000).contains(&version) {
        // Said once at startup, so an upgrade that drops the setting is seen, not measured later.
        eprintln!(
            "warning: mimalloc {version} is not 3.x: huge pages are purged in mimalloc's default \
             64 KiB steps (see huge_pages_purged_whole)"
        );
        return;
    }
    // SAFETY: as above.
    unsafe {
        if libmimalloc_sys::mi_option_get(ALLOW_THP) == 1 {
            libmimalloc_sys::mi_option_set(ALLOW_THP, 2);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    huge_pages_purged_whole();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run_server(cli.serve).await,
        Some(Command::Serve(args)) => run_server(args).await,
        Some(Command::Client(command)) => return cli::run(command).await,
        Some(Command::Download {
            endpoint,
            api_key,
            job_id,
            output,
            shot,
        }) => {
            let path =
                output.unwrap_or_else(|| cli::download::default_path(&job_id, shot.as_deref()));
            let args = cli::ClientArgs {
                endpoint,
                api_key: Some(api_key),
                output: cli::Output::Text,
                timeout: 30,
                ca_file: None,
            };
            let result = async {
                let client = cli::connect(&args).await?;
                let artifact =
                    cli::download::with_progress(&client, &job_id, shot.as_deref(), &path).await?;
                println!("{}", cli::download::summary(&path, &artifact));
                Ok(())
            }
            .await;
            return cli::report(cli::Output::Text, result);
        }
        Some(Command::Migrate { database_url }) => {
            async {
                let app = aiprod::open_app(Config {
                    database_url,
                    ..Config::default()
                })
                .await?;
                app.close_store().await;
                println!("database is up to date");
                Ok(())
            }
            .await
        }
        Some(Command::Admin {
            database_url,
            action,
        }) => admin(database_url, action).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
