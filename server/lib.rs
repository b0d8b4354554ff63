//! AIPROD: a gRPC service that turns a brief into a short brand video across render backends,
//! with quotes before, human approval in between, live progress, and a certified cost after.
//!
//! `serve` is the whole server; `main.rs` and the integration tests both call it.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod backends;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod health;
pub mod media_threads;
pub mod store;

/// Generated protobuf and gRPC code of `aiprod.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("aiprod.v1");
    /// Encoded descriptor set of every `aiprod.v1` file, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("aiprod_descriptor");
}

/// Generated code of `google.bytestream` (artifact downloads).
pub mod bytestream {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("google.bytestream");
}

use api::Api;
use app::App;
use backends::Backends;
use bytestream::byte_stream_server::ByteStreamServer;
use config::Config;
use events::EventHub;
use pb::admin_service_server::AdminServiceServer;
use pb::cost_estimator_service_server::CostEstimatorServiceServer;
use pb::icc_service_server::IccServiceServer;
use pb::preset_service_server::PresetServiceServer;
use pb::render_service_server::RenderServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

/// Opens the store and builds the application (no network): for the server and the admin CLI.
pub async fn open_app(config: Config) -> anyhow::Result<Arc<App>> {
    // Half a lease: a paused replica's open transaction ends well before its lease would.
    let idle = Duration::from_millis((config.cluster.lease_ttl_ms / 2).max(500));
    let store =
        store::connect_with(&config.database_url, Arc::new(EventHub::default()), idle).await?;
    let media = media_from_config(&config)?;
    let media_permits = App::media_permits(&config);
    let artifacts = match &config.artifacts.url {
        Some(url) => {
            let options: Vec<(String, String)> = config
                .artifacts
                .options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            aiprod_artifacts::ArtifactStore::from_url(url, &options)
        }
        None => aiprod_artifacts::ArtifactStore::local(&config.artifacts_dir()),
    }
    .map_err(|e| anyhow::anyhow!("artifact store: {e}"))?;
    tracing::info!(artifacts = %artifacts.describe(), media = media.name(), "media and artifacts");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let backends = Backends {
        sandbox: App::sandbox_backends(&config, &media, &media_permits),
        // One adapter per provider with an API key (`[providers.*]`); none without keys.
        live: backends::http::live_backends(&config, || App::circuit(&config), &shutdown)?,
    };
    Ok(App::new(
        config,
        app::Parts {
            store,
            backends,
            media,
            artifacts,
            media_permits,
            shutdown,
        },
    ))
}

/// The media seam: pure Rust, or ffmpeg's command line for assembling when `media.ffmpeg` allows
/// it (`auto`: when `ffmpeg` is on PATH).
fn media_from_config(config: &Config) -> anyhow::Result<Arc<dyn aiprod_media::Media>> {
    use aiprod_media::{FfmpegMedia, PureMedia};
    let ffmpeg = match config.media.ffmpeg.as_str() {
        "off" => None,
        "auto" => FfmpegMedia::find(None),
        path => Some(
            FfmpegMedia::find(Some(std::path::PathBuf::from(path)))
                .ok_or_else(|| anyhow::anyhow!("media.ffmpeg: no working ffmpeg at {path}"))?,
        ),
    };
    Ok(match ffmpeg {
        Some(f) => Arc::new(f),
        None => Arc::new(PureMedia::default()),
    })
}

/// Serves the API on `listener` until `shutdown` resolves, then shuts down gracefully: health turns
/// NOT_SERVING, streams end with UNAVAILABLE (clients resume with `after_sequence`), in-flight unary
/// calls finish, pipeline tasks stop at a step boundary (each resumes on the next start).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = open_app(config).await?;
    if app.config().demo_tenant
        && let Some((tenant, secret)) = app.ensure_demo_tenant().await?
    {
        // Printed once, on the first start with an empty database; only its hash is stored.
        println!(
            "Created tenant `demo` ({}) with a test-mode API key (shown only once):\n  {secret}",
            tenant.id
        );
    }
    app.start_pipeline().await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = app.database_name(), "aiprod serving");

    let health = tonic_health::server::HealthReporter::new();
    let health_names = health::status_names(&[
        <PresetServiceServer<Api> as NamedService>::NAME,
        <CostEstimatorServiceServer<Api> as NamedService>::NAME,
        <RenderServiceServer<Api> as NamedService>::NAME,
        <IccServiceServer<Api> as NamedService>::NAME,
        <AdminServiceServer<Api> as NamedService>::NAME,
        <ByteStreamServer<Api> as NamedService>::NAME,
    ]);
    health::set_all(&health, &health_names, ServingStatus::Serving).await;
    let health_service = tonic_health::pb::health_server::HealthServer::new(health::Health::new(
        health.clone(),
        app.shutdown.clone(),
    ));
    tokio::spawn(health::monitor_database(
        app.clone(),
        health.clone(),
        health_names.clone(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details (BadRequest, RetryInfo, …): lets grpcurl decode a status's details.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details (BadRequest, RetryInfo, …): lets grpcurl decode a status's details.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let api = Api::new(app.clone());
    let max = app.config().max_message_bytes;
    // Metrics, transport checks, load shedding and authentication: one layer (`api::gate`).
    let fast_lane = [api::cost::FAST_LANE, api::render::FAST_LANE].concat();
    let gate = api::gate::GateLayer::new(
        app.clone(),
        api::wire::FastLane::new(api.clone(), max, fast_lane),
    );

    let stopping = app.clone();
    let health_on_stop = health.clone();
    let grace = Duration::from_secs(app.config().shutdown_grace_s);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down");
        health::set_all(&health_on_stop, &health_names, ServingStatus::NotServing).await;
        stopping.shut_down();
    };

    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(PresetServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(CostEstimatorServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(RenderServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(IccServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(AdminServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(ByteStreamServer::new(api).max_decoding_message_size(max))
        .prepare();
    let service = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<_>| r.map(tonic::body::Body::new))
        .layer(gate)
        .service(routes);
    let server = api::serve::serve(
        listener,
        service,
        api::serve::Settings {
            request_timeout: Duration::from_secs(app.config().request_timeout_s),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        },
        signal,
    );

    if let Some(path) = &app.config().ready_file {
        std::fs::write(path, addr.to_string())?;
    }
    // A bounded grace period: long-lived streams (e.g. a health watch) must not hold shutdown forever.
    let grace_over = {
        let stopping = app.shutdown.clone();
        async move {
            stopping.cancelled().await;
            tokio::time::sleep(grace).await;
        }
    };
    tokio::select! {
        () = server => {}
        () = grace_over => {
            tracing::warn!("grace period over; closing the remaining connections");
        }
    }
    app.shut_down();
    app.tasks.close();
    if tokio::time::timeout(grace, app.tasks.wait()).await.is_err() {
        tracing::warn!("pipeline tasks did not stop within the grace period");
    }
    app.close_store().await;
    tracing::info!("stopped");
    Ok(())
}
