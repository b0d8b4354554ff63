//! `grpc.health.v1.Health` that tells the truth: every service (and the overall `""`) is
//! `NOT_SERVING` while the database does not answer, and again from the moment shutdown begins;
//! open `Watch` streams end once shutdown began (after delivering `NOT_SERVING`), so a watching load
//! balancer does not hold the process for the whole grace period.

use crate::app::App;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// The health service: tonic-health's, with watches that end on shutdown.
pub struct Health {
    inner: HealthService,
    stopping: CancellationToken,
}

impl Health {
    pub fn new(reporter: HealthReporter, stopping: CancellationToken) -> Self {
        Health {
            inner: HealthService::from_health_reporter(reporter),
            stopping,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let stream = self.inner.watch(request).await?.into_inner();
        let stopping = self.stopping.clone();
        let until = async move {
            stopping.cancelled().await;
            // NOT_SERVING is published before shutdown is signalled: give the stream a moment
            // to deliver it, then end.
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Ok(Response::new(Box::pin(stream.take_until(until))))
    }
}

/// Every status name this server reports: the overall `""` and each service.
pub fn status_names(services: &[&'static str]) -> Vec<&'static str> {
    std::iter::once("")
        .chain(services.iter().copied())
        .collect()
}

/// Sets every name to one status.
pub async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// Probes the database every `cluster.health_probe_interval_ms`; flips every status to
/// NOT_SERVING while it does not answer (within the interval) and back when it does. Stops at
/// shutdown (which sets NOT_SERVING itself).
pub async fn monitor_database(app: Arc<App>, reporter: HealthReporter, names: Vec<&'static str>) {
    let interval = Duration::from_millis(app.config().cluster.health_probe_interval_ms);
    let timeout = interval.max(Duration::from_millis(500));
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = app.shutdown.cancelled() => return,
        }
        let ok = matches!(
            tokio::time::timeout(timeout, app.ping_database()).await,
            Ok(Ok(()))
        );
        if ok == serving || app.shutdown.is_cancelled() {
            continue;
        }
        serving = ok;
        if ok {
            tracing::info!("database reachable again: serving");
            set_all(&reporter, &names, ServingStatus::Serving).await;
        } else {
            tracing::warn!("database unreachable: health is NOT_SERVING until it answers");
            set_all(&reporter, &names, ServingStatus::NotServing).await;
        }
        metrics::gauge!("database_up").set(if ok { 1.0 } else { 0.0 });
    }
}
