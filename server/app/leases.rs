//! Leased execution: which replica drives which job.
//!
//! A replica drives a job only while it holds the job's lease (see `store::Lease`). It gets leases
//! two ways: the claim loop takes runnable jobs whose lease is free or expired (woken by the store's
//! `work_available` — NOTIFY on PostgreSQL — and by a poll as the backstop), and a partner action on
//! this replica (create, approve, revise) claims that job at once. A heartbeat renews every lease
//! this replica holds; a lease missing from the renewal was taken by another replica (this one was
//! paused or cut off past the TTL): its driver stops, its in-flight attempts are cancelled, and its
//! late writes are refused by the fencing token anyway. A driver that finds its job waiting for the
//! partner or over gives the lease back; on shutdown every lease is given back so another replica
//! (or the next start) resumes the jobs at once.

use super::App;
use super::pipeline::Step;
use crate::domain::job::FailureReason;
use crate::error::{Error, Result};
use crate::store::Lease;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// A job this process drives.
pub(super) struct Driven {
    pub lease: Lease,
    /// When this process got the lease (a renewal that started before cannot have seen it).
    pub since: Instant,
}

/// How a driver's run of steps ended.
enum Ended {
    /// The job waits for the partner or is over.
    Idle,
    /// Another replica holds the job now.
    LeaseLost,
    /// This process is stopping.
    Shutdown,
}

impl App {
    pub(super) fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.config.cluster.lease_ttl_ms)
    }

    fn heartbeat_period(&self) -> Duration {
        self.lease_ttl() / self.config.cluster.heartbeats_per_lease.max(2)
    }

    /// Starts driving jobs: frees what a previous process left (SQLite), then runs the claim loop
    /// and the heartbeat until shutdown.
    pub async fn start_pipeline(self: &Arc<Self>) -> Result<()> {
        self.store.recover_leases().await?;
        *self.lock_fresh() = Instant::now() + self.lease_ttl() - self.heartbeat_period();
        let app = self.clone();
        self.tasks.spawn(
            async move { app.claim_loop().await }.instrument(tracing::info_span!("claim_loop")),
        );
        let app = self.clone();
        self.tasks.spawn(
            async move { app.heartbeat().await }.instrument(tracing::info_span!("heartbeat")),
        );
        Ok(())
    }

    /// Drives this job now if no replica does (after a partner action made it runnable here).
    pub fn drive(self: &Arc<Self>, job_id: String) {
        if self.shutdown.is_cancelled() || self.lock_driving().contains_key(&job_id) {
            return;
        }
        let app = self.clone();
        tokio::spawn(async move {
            match app.store.claim(&app.owner, &job_id, app.lease_ttl()).await {
                Ok(Some(lease)) => app.start_driver(lease),
                Ok(None) => {} // another replica drives it, or it is not runnable
                // The claim loop takes it up when the database answers again.
                Err(e) => tracing::warn!(job_id, error = %e, "could not claim a job"),
            }
        });
    }

    /// The lease this process holds on a job, for a fenced write; `LeaseLost` if none.
    pub(super) fn fence(&self, job_id: &str) -> Result<Lease> {
        self.lock_driving()
            .get(job_id)
            .map(|d| d.lease.clone())
            .ok_or(Error::LeaseLost)
    }

    /// Whether outside work that costs money (a provider submit) may start for this job: the lease
    /// is held and surely not expired (renewed within TTL minus one heartbeat period).
    pub(super) fn lease_is_fresh(&self, job_id: &str) -> bool {
        // One process on SQLite: no other replica can take the job; a slow renewal (the writer
        // queue under load) must not stall rendering.
        self.lock_driving().contains_key(job_id)
            && (!self.store.shared() || Instant::now() < *self.lock_fresh())
    }

    /// Number of jobs this process drives (metrics, tests).
    pub fn driven_jobs(&self) -> usize {
        self.lock_driving().len()
    }

    fn lock_driving(&self) -> std::sync::MutexGuard<'_, HashMap<String, Driven>> {
        self.driving.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_fresh(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.leases_fresh_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn holds(&self, lease: &Lease) -> bool {
        self.lock_driving()
            .get(&lease.job_id)
            .is_some_and(|d| d.lease.token == lease.token)
    }

    /// Forgets a lease, unless a newer claim of the same job replaced it.
    fn undrive(&self, lease: &Lease) {
        let mut driving = self.lock_driving();
        if driving
            .get(&lease.job_id)
            .is_some_and(|d| d.lease.token == lease.token)
        {
            driving.remove(&lease.job_id);
        }
    }

    pub(super) fn start_driver(self: &Arc<Self>, lease: Lease) {
        if self.shutdown.is_cancelled() {
            return;
        }
        self.lock_driving().insert(
            lease.job_id.clone(),
            Driven {
                lease: lease.clone(),
                since: Instant::now(),
            },
        );
        let app = self.clone();
        self.tasks.spawn(async move { app.run_driver(lease).await });
    }

    async fn run_driver(self: Arc<Self>, mut lease: Lease) {
        loop {
            let ended = self.run_steps(&lease).await;
            match ended {
                Ended::LeaseLost => {
                    tracing::warn!(job_id = %lease.job_id, "lease lost: another replica drives the job now");
                    self.undrive(&lease);
                    // The database may still name this replica (the loss was seen here first, e.g.
                    // by a heartbeat that failed): give it back — a no-op if another replica took
                    // it — or the next heartbeats would renew a lease no driver uses.
                    if let Err(e) = self.store.release(&self.owner, &lease).await {
                        tracing::warn!(job_id = %lease.job_id, error = %e, "could not give a lease back; it expires");
                    }
                    return;
                }
                Ended::Shutdown => {
                    // Given back so another replica (or the next start) resumes it at once.
                    let release = self.store.release(&self.owner, &lease);
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), release).await
                    {
                        tracing::warn!(job_id = %lease.job_id, error = %e, "could not give a lease back; it expires");
                    }
                    self.undrive(&lease);
                    return;
                }
                Ended::Idle => {
                    let released = self.store.release(&self.owner, &lease).await;
                    if let Err(e) = &released {
                        tracing::warn!(job_id = %lease.job_id, error = %e, "could not give a lease back; it expires");
                    }
                    self.undrive(&lease);
                    // An ended job never runs again: nothing to take back.
                    if matches!(released, Ok(Some(state)) if state.is_terminal()) {
                        return;
                    }
                    // A partner action may have made the job runnable while this driver finished
                    // (its own claim failed while this lease was held): take it again.
                    match self
                        .store
                        .claim(&self.owner, &lease.job_id, self.lease_ttl())
                        .await
                    {
                        Ok(Some(again)) if !self.shutdown.is_cancelled() => {
                            self.lock_driving().insert(
                                again.job_id.clone(),
                                Driven {
                                    lease: again.clone(),
                                    since: Instant::now(),
                                },
                            );
                            lease = again;
                        }
                        Ok(Some(again)) => {
                            let _ = self.store.release(&self.owner, &again).await;
                            return;
                        }
                        _ => return,
                    }
                }
            }
        }
    }

    /// Runs the job's steps while the lease is held.
    async fn run_steps(self: &Arc<Self>, lease: &Lease) -> Ended {
        let job_id = lease.job_id.as_str();
        let mut errors = 0u32;
        while !self.shutdown.is_cancelled() {
            if !self.holds(lease) {
                return Ended::LeaseLost;
            }
            // A panic in a step must not leave the job without a driver: treat it like an error.
            let step = std::panic::AssertUnwindSafe(self.step(job_id))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned());
                    Err(Error::internal(anyhow::anyhow!(
                        "pipeline step panicked: {}",
                        what.unwrap_or_default()
                    )))
                });
            match step {
                Ok(Step::Continue) => errors = 0,
                Ok(Step::Idle) => return Ended::Idle,
                Err(Error::LeaseLost) => return Ended::LeaseLost,
                // The database is away: wait for it (the job is not at fault).
                Err(e @ Error::Unavailable { .. }) => {
                    tracing::warn!(job_id, error = %e, "pipeline step waits for the database");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    errors += 1;
                    if errors >= self.config.pipeline_step_max_failures {
                        return self.give_up(lease, errors, &e).await;
                    }
                    tracing::warn!(job_id, error = %e, attempt = errors, "pipeline step failed; retrying");
                    let backoff = Duration::from_millis(100 * u64::from(errors.min(50)));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
        Ended::Shutdown
    }

    /// A step failed `errors` times in a row: fail the job with a typed reason and an event
    /// instead of retrying forever (the cause is logged; the partner sees no internals).
    async fn give_up(&self, lease: &Lease, errors: u32, last: &Error) -> Ended {
        tracing::error!(job_id = %lease.job_id, errors, error = ?last, "pipeline step keeps failing; failing the job");
        let message = match last {
            Error::Internal(_) => format!(
                "the job stopped after {errors} failed attempts at one step because of an internal error; it was not billed beyond what was delivered"
            ),
            other => format!("the job stopped after {errors} failed attempts at one step: {other}"),
        };
        let failed = self
            .store
            .update_job_fenced(lease, |job| {
                if job.state.is_terminal() {
                    return Ok(());
                }
                job.fail(FailureReason::Internal, message.clone())
                    .map_err(Error::internal)
            })
            .await;
        match failed {
            Err(Error::LeaseLost) => Ended::LeaseLost,
            Err(e) => {
                tracing::error!(job_id = %lease.job_id, error = %e, "could not fail the job");
                Ended::Idle
            }
            Ok(_) => Ended::Idle,
        }
    }

    /// Takes runnable jobs without a driver, up to `cluster.max_jobs_per_replica`.
    async fn claim_loop(self: Arc<Self>) {
        let poll = Duration::from_millis(self.config.cluster.poll_interval_ms);
        let max = self.config.cluster.max_jobs_per_replica;
        loop {
            while self.driven_jobs() < max && !self.shutdown.is_cancelled() {
                match self.store.claim_next(&self.owner, self.lease_ttl()).await {
                    Ok(Some(lease)) => {
                        tracing::info!(job_id = %lease.job_id, token = lease.token, "claimed a job");
                        self.start_driver(lease);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not look for jobs to drive");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.store.work_available() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Renews this replica's leases; stops the drivers of the ones it lost.
    async fn heartbeat(self: Arc<Self>) {
        let period = self.heartbeat_period();
        // Leases the database gives this replica that no driver here uses, as of the last renewal.
        let mut unused: HashMap<String, i64> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let started = Instant::now();
            let held = match self.store.renew(&self.owner, self.lease_ttl()).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew leases");
                    continue;
                }
            };
            *self.lock_fresh() = started + self.lease_ttl() - period;
            let held: HashMap<String, i64> =
                held.into_iter().map(|h| (h.job_id, h.token)).collect();
            let lost: Vec<Lease> = self
                .lock_driving()
                .values()
                .filter(|d| d.since < started && held.get(&d.lease.job_id) != Some(&d.lease.token))
                .map(|d| d.lease.clone())
                .collect();
            for lease in lost {
                tracing::warn!(job_id = %lease.job_id, "lease lost; stopping the job's driver here");
                self.undrive(&lease);
                self.stop_job(&lease.job_id);
            }
            // A lease held in the database with no driver here (a release that failed during an
            // outage): give it back, so the job is not renewed forever without progress. Only when
            // seen twice, so a claim whose driver is just starting is not mistaken for one.
            let orphans: HashMap<String, i64> = {
                let driving = self.lock_driving();
                held.into_iter()
                    .filter(|(id, _)| !driving.contains_key(id))
                    .collect()
            };
            for (job_id, token) in &orphans {
                if unused.get(job_id) == Some(token) {
                    tracing::warn!(job_id, "giving back a lease no driver uses");
                    let lease = Lease {
                        job_id: job_id.clone(),
                        token: *token,
                    };
                    if let Err(e) = self.store.release(&self.owner, &lease).await {
                        tracing::warn!(job_id, error = %e, "could not give a lease back; it expires");
                    }
                }
            }
            unused = orphans;
        }
    }
}
