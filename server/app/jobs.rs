//! Jobs: create (idempotent), read, list, cancel and watch.

use super::estimate::quote_refusal;
use super::{App, Caller, limits};
use crate::domain::job::{Event, EventKind, Job, JobSpec};
use crate::domain::pricing::{self, QuoteParams};
use crate::domain::{JobState, planner};
use crate::error::{Error, Result};
use crate::events::{Committed, SharedEvent};
/// How ListJobs filters (re-exported so the transport needs nothing from the store).
pub use crate::store::JobFilter;
use crate::store::{Created, JobLimits, now_ms};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A validated CreateJob.
pub struct NewJob {
    pub request_id: String,
    pub spec: JobSpec,
}

/// A page of jobs.
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_page_token: String,
}

fn page_token(last_id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{last_id}"))
}

/// Decodes a page token; `None` when it is not one of ours.
pub fn parse_page_token(token: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let id = s.strip_prefix("v1:")?;
    (!id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| id.to_string())
}

impl App {
    pub async fn create_job(self: &Arc<Self>, caller: &Caller, new: NewJob) -> Result<Job> {
        let now = now_ms();
        // As authenticated (within the key cache's second; changes made here apply at once).
        let tenant = &caller.tenant;
        let tier = tenant.tier_at(now);
        let tier_spec = self.config.catalog.tier(tier);
        let catalog = &self.config.catalog;
        let preset = catalog
            .preset(&new.spec.preset_id)
            .ok_or_else(|| Error::invalid("preset_id", "unknown preset"))?;
        if !tier_spec.presets.iter().any(|p| p == &preset.id) {
            return Err(Error::PermissionDenied {
                reason: "PRESET_NOT_IN_TIER",
                message: format!(
                    "preset {} is not included in the {} tier (allowed: {})",
                    preset.id,
                    tier.as_str(),
                    tier_spec.presets.join(", ")
                ),
            });
        }
        let fingerprint = hex::encode(Sha256::digest(
            serde_json::to_vec(&new.spec).map_err(Error::internal)?,
        ));

        // Refuse before spending anything when no plan meeting the preset's floor can be quoted:
        // providers not configured for this mode, or a budget below the cheapest such plan.
        // (Open circuits are transient: the job waits for them at render time.)
        let manifest = planner::plan(
            &planner::Brief {
                text: &new.spec.brief,
                brand_id: &new.spec.brand_id,
                duration_s: new.spec.duration_s,
                max_shot_s: catalog.max_shot_s,
                aspect_ratio: new.spec.aspect_ratio,
            },
            None,
            now,
        );
        let not_configured = self.not_configured(caller.sandbox);
        let params = QuoteParams {
            quality_floor: preset.quality_threshold,
            cost_cap: preset.cost_cap(new.spec.duration_s),
            budget: new.spec.budget,
            planner: catalog.planner_cost,
            tolerance_percent: tier_spec.cost_tolerance_percent,
            excluded: &not_configured,
            economy: false,
        };
        if let Err(e) = pricing::quote(catalog, &manifest.shots, &params) {
            return Err(quote_refusal(e, &not_configured, self.circuit_cooldown()));
        }

        // The monthly budget: refuse at 100 %, steer to economy backends from 90 %. A replayed
        // request_id still returns its job.
        let mut economy = false;
        if let Some(budget) = tenant.monthly_budget
            && !self
                .store
                .request_exists(&caller.tenant_id, &new.request_id)
                .await?
        {
            let (spent, _) = self
                .store
                .spend_since(
                    &caller.tenant_id,
                    caller.sandbox,
                    limits::month_start_ms(now),
                )
                .await?;
            if spent >= budget {
                return Err(Error::ResourceExhausted {
                    subject: format!("tenants/{}/monthly_budget", caller.tenant_id),
                    message: format!(
                        "the monthly budget of {budget} is spent ({spent} this month); new jobs resume next month or with a larger budget"
                    ),
                    retry_after: None,
                });
            }
            economy = i128::from(spent.micros()) * 100
                >= i128::from(budget.micros()) * i128::from(limits::ECONOMY_AT_PERCENT);
        }

        let mut job = Job {
            id: format!("job_{}", uuid::Uuid::now_v7().simple()),
            tenant_id: caller.tenant_id.clone(),
            request_id: new.request_id,
            fingerprint: fingerprint.clone(),
            sandbox: caller.sandbox,
            state: JobState::Queued,
            quality_floor: preset.quality_threshold,
            tolerance_percent: tier_spec.cost_tolerance_percent,
            final_review: preset.final_review,
            fast_track: !preset.manifest_review,
            economy,
            spec: new.spec,
            manifest: None,
            quote: None,
            brand_cache_hit: false,
            shots: vec![],
            metered: Default::default(),
            billable: Default::default(),
            failure: None,
            status_message: String::new(),
            video: None,
            sla_met: None,
            billed: None,
            last_seq: 0,
            created_ms: now,
            updated_ms: now,
            ledger_lines: Some(0),
            pending_events: vec![],
            pending_ledger: vec![],
            dirty: false,
        };
        job.emit(EventKind::StateChanged {
            from: None,
            to: JobState::Queued,
        });
        let limits = JobLimits {
            max_active: tier_spec.concurrent_jobs,
            job_quota: tenant.job_quota,
        };
        // The replica that creates a job drives it: claimed with the create where the store can.
        let created = if self.shutdown.is_cancelled() {
            (self.store.create_job(job, limits).await?, None)
        } else {
            self.store
                .create_and_claim(job, limits, &self.owner, self.lease_ttl())
                .await?
        };
        match created {
            (Created::New(job), lease) => {
                metrics::counter!("jobs_created_total", "preset" => job.spec.preset_id.clone())
                    .increment(1);
                tracing::info!(job_id = %job.id, preset = %job.spec.preset_id, "job created");
                match lease {
                    Some(lease) => self.start_driver(lease),
                    None => self.drive(job.id.clone()),
                }
                Ok(job)
            }
            (Created::Existing(existing), _) if existing.fingerprint == fingerprint => Ok(existing),
            (Created::Existing(_), _) => Err(Error::invalid(
                "request_id",
                "was already used for a different request; use a new request_id for a new job",
            )),
        }
    }

    /// The caller's job as the store shares it (the same `Arc` while it does not change, where
    /// the store keeps its jobs: see `Store::job_shared`).
    pub async fn job_shared(&self, caller: &Caller, job_id: &str) -> Result<Arc<Job>> {
        self.store
            .job_shared(&caller.tenant_id, job_id)
            .await?
            .ok_or_else(|| Error::not_found("job"))
    }

    pub async fn job(&self, caller: &Caller, job_id: &str) -> Result<Job> {
        self.store
            .job(&caller.tenant_id, job_id)
            .await?
            .ok_or_else(|| Error::not_found("job"))
    }

    pub async fn list_jobs(
        &self,
        caller: &Caller,
        filter: &JobFilter,
        page_size: u32,
        token: Option<String>,
    ) -> Result<JobPage> {
        let mut jobs = self
            .store
            .jobs(&caller.tenant_id, filter, token.as_deref(), page_size + 1)
            .await?;
        let next_page_token = if jobs.len() > page_size as usize {
            jobs.truncate(page_size as usize);
            jobs.last().map(|j| page_token(&j.id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(JobPage {
            jobs,
            next_page_token,
        })
    }

    pub async fn cancel_job(&self, caller: &Caller, job_id: &str, reason: &str) -> Result<Job> {
        let reason = if reason.is_empty() {
            "cancelled by the partner"
        } else {
            reason
        };
        let ((), job) = self
            .store
            .update_job(Some(&caller.tenant_id), job_id, |job| match job.state {
                JobState::Cancelled => Ok(()),
                JobState::Delivered | JobState::Failed => Err(Error::precondition(
                    "STATE",
                    format!("jobs/{}", job.id),
                    format!("a {} job cannot be cancelled", job.state.as_str()),
                )),
                _ => job.cancel(reason).map_err(Error::internal),
            })
            .await?;
        // Every shot in flight stops now (their provider tasks are cancelled).
        self.stop_job(&job.id);
        tracing::info!(job_id = %job.id, "job cancelled");
        Ok(job)
    }

    /// Every committed event after `after`, then live events, ending after the terminal event.
    ///
    /// The stream is polled by the transport directly (no task and no channel per stream): an
    /// idle stream is a few hundred bytes waiting on the job's commit channel, and a live event
    /// handed by the hub stays in the batch that every watcher of the job shares.
    pub async fn watch_job(
        &self,
        caller: &Caller,
        job_id: &str,
        after: u64,
    ) -> Result<impl futures::Stream<Item = Result<Watched>> + Send + 'static + use<>> {
        let (state, last_seq) = self
            .store
            .job_progress(&caller.tenant_id, job_id)
            .await?
            .ok_or_else(|| Error::not_found("job"))?;
        if after > last_seq {
            return Err(Error::invalid(
                "after_sequence",
                format!("is beyond the job's last sequence {last_seq}"),
            ));
        }
        // Subscribe before the replay, so nothing committed meanwhile is missed.
        let commits = self.store.hub().subscribe(job_id);
        let resync_seen = commits.borrow().resync;
        let watcher = Watcher {
            resync_seen,
            commits,
            store: self.store.clone(),
            // A finished job's stream ends once the replay is done.
            finished_at: state.is_terminal().then_some(last_seq),
            job_id: job_id.to_string(),
            last: after,
            pending: VecDeque::new(),
            live: None,
            sent: after,
            reading: true,
            done: false,
        };
        Ok(futures::stream::unfold(watcher, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        }))
    }
}

/// One event of a WatchJob stream: read from the database (the replay, a gap), or handed by the
/// hub in the batch shared by every watcher of the job in this process.
pub enum Watched {
    Read(Box<Event>),
    Shared(Arc<SharedEvent>),
}

impl Watched {
    pub fn event(&self) -> &Event {
        match self {
            Watched::Read(e) => e,
            Watched::Shared(e) => e,
        }
    }
}

/// Events read from the database at a time.
const PAGE: u32 = 256;

/// One WatchJob stream: replays from the database, then follows the hub's batches (shared by every
/// watcher of the job in this process), reading the database only to fill a gap.
struct Watcher {
    store: Arc<dyn crate::store::Store>,
    /// The job's commits, and the hub's resyncs and shutdown (one channel: one waiter).
    commits: watch::Receiver<Committed>,
    /// The resync count last seen on `commits`.
    resync_seen: u64,
    job_id: String,
    /// The sequence of the last event queued (every queued event is sent before anything else).
    last: u64,
    /// Events read from the database, to send in order.
    pending: VecDeque<Event>,
    /// The hub's batch being sent: its events after `sent` go out next, straight from the batch
    /// every watcher of the job shares (no per-stream queue: a commit fanned out to thousands of
    /// streams allocates nothing per stream).
    live: Option<Committed>,
    /// The sequence of the last event sent from `live`.
    sent: u64,
    /// The database has more events after `last` to read (the replay, a gap, a resync).
    reading: bool,
    /// The job's last sequence when it was already finished at the start.
    finished_at: Option<u64>,
    /// The terminal event (or an error) was sent.
    done: bool,
}

impl Watcher {
    /// The next item of the stream; `None` ends it.
    async fn next(&mut self) -> Option<Result<Watched>> {
        loop {
            let next = match self.pending.pop_front() {
                Some(e) => Some(Watched::Read(Box::new(e))),
                None => self.next_live().map(Watched::Shared),
            };
            if let Some(w) = next {
                if w.event().state.is_terminal() {
                    self.done = true;
                    self.pending.clear();
                    self.live = None;
                }
                return Some(Ok(w));
            }
            if self.done {
                return None;
            }
            if self.reading {
                match self.store.events_after(&self.job_id, self.last, PAGE).await {
                    Ok(events) => {
                        self.reading = events.len() >= PAGE as usize;
                        for e in events {
                            if e.seq > self.last {
                                self.last = e.seq;
                                self.pending.push_back(e);
                            }
                        }
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            }
            // Once the first replay is done: a job already finished ends here.
            if self.finished_at.take().is_some_and(|end| self.last >= end) {
                self.done = true;
                continue;
            }
            if self.commits.changed().await.is_err() {
                self.done = true;
                continue;
            }
            let commit = self.commits.borrow_and_update();
            if commit.closing {
                drop(commit);
                self.done = true;
                return Some(Err(Error::Unavailable {
                    message: format!(
                        "the server is shutting down; resume with after_sequence={}",
                        self.last
                    ),
                    retry_after: Duration::from_secs(1),
                }));
            }
            if commit.resync != self.resync_seen {
                self.resync_seen = commit.resync;
                self.reading = true;
                continue;
            }
            match commit.after(self.last).and_then(|events| events.last()) {
                Some(newest) => {
                    self.sent = self.last;
                    self.last = newest.seq;
                    self.live = Some(commit.clone());
                }
                None if commit.up_to > self.last => self.reading = true,
                None => {}
            }
        }
    }

    /// The next event of the hub's batch being sent, if any is left.
    fn next_live(&mut self) -> Option<Arc<SharedEvent>> {
        let live = self.live.as_ref()?;
        let sent = self.sent;
        let next = live
            .earlier
            .iter()
            .chain(live.events.iter())
            .find(|e| e.seq > sent)
            .cloned();
        match &next {
            Some(e) => self.sent = e.seq,
            None => self.live = None,
        }
        next
    }
}
