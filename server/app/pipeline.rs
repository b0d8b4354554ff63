//! The durable job runner. Each step reads the job from the store, does at most one piece of
//! outside work (plan, one render attempt, the assembly), and commits the result with its events and
//! ledger lines in one transaction. A crash or restart loses at most the work in flight, which is
//! redone: nothing is billed twice because a render is billed in the same commit that records it.
//!
//! Shots render in parallel: the render phase keeps up to `render.max_parallel_shots_per_job`
//! attempts of a job in flight, each also holding a slot of its backend
//! (`render.backend_concurrency`) while it waits and a media slot while it encodes or measures; the
//! job itself holds no worker slot while it waits on providers. Each attempt commits the provider's
//! task id before waiting on it (a restart resumes that task, never submits a second one), copies the
//! clip into the artifact store, and measures its frames: a clip that fails a technical check scores
//! 0 and is rendered again on the next candidate backend. Once every shot has a clip, the cut is
//! assembled and stored before DELIVERED (or AWAITING_FINAL_APPROVAL) is committed.

use super::artifacts::{artifact_error, media_error, shot_clip_name, video_name};
use super::{App, limits};
use crate::backends::{RenderError, RenderOutput, RenderRequest};
use crate::domain::job::{
    EventKind, FailureReason, Job, LedgerEntry, LedgerKind, PendingTask, RenderResult, Video,
};
use crate::domain::manifest::Camera;
use crate::domain::media::{self as media_rules, Expected, Figures, Measurement};
use crate::domain::pricing::{self, QuoteParams, Selection};
use crate::domain::{Backend, JobState, Money, planner};
use crate::error::{Error, Result};
use crate::store::now_ms;
use futures::FutureExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::Instrument;

/// What the runner does after a step.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// More to do now.
    Continue,
    /// Nothing to do until the partner acts, or the job is over.
    Idle,
}

/// Render attempts of one shot before the job fails (fallbacks and retry rounds included).
const MAX_ATTEMPTS_PER_SHOT: u32 = 9;

/// How long a tenant's monthly budget read for the budget alerts is used (as the key cache).
const BUDGET_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl App {
    pub(super) async fn step(self: &Arc<Self>, job_id: &str) -> Result<Step> {
        let Some(job) = self.store.job_by_id(job_id).await? else {
            return Ok(Step::Idle);
        };
        // `instrument`, not `span.enter()`: a guard held across an await corrupts span bookkeeping.
        let span = tracing::info_span!("job_step", job_id = %job.id, state = job.state.as_str());
        self.run_step(job).instrument(span).await
    }

    async fn run_step(self: &Arc<Self>, job: Job) -> Result<Step> {
        let job_id = job.id.clone();
        let job_id = job_id.as_str();
        // Rendering waits on providers without a worker slot; every other step takes one.
        let rendering = job.shots.iter().any(|s| s.needs_render)
            && matches!(job.state, JobState::Rendering | JobState::QualityCheck);
        if rendering {
            return self.render_phase(job_id).await;
        }
        let _permit = tokio::select! {
            p = self.workers.acquire() => p.map_err(Error::internal)?,
            _ = self.shutdown.cancelled() => return Ok(Step::Idle),
        };
        match job.state {
            // A queued job is planned in the same commit that moves it to PLANNING.
            JobState::Queued | JobState::Planning => self.plan(job).await,
            // Every shot has a clip: the move to QUALITY_CHECK commits with the checks.
            JobState::Rendering | JobState::QualityCheck => self.quality_check(job).await,
            JobState::AwaitingApproval | JobState::AwaitingFinalApproval => Ok(Step::Idle),
            JobState::Delivered | JobState::Cancelled | JobState::Failed => Ok(Step::Idle),
        }
    }

    /// Commits `change` only if the job is still in `expected` (a cancel may have won the race).
    async fn commit_if(
        &self,
        job_id: &str,
        expected: JobState,
        change: impl FnMut(&mut Job) -> Result<()> + Send,
    ) -> Result<bool> {
        self.commit_in(job_id, &[expected], change).await
    }

    /// Commits `change` only if the job is still in one of `expected`.
    async fn commit_in(
        &self,
        job_id: &str,
        expected: &[JobState],
        mut change: impl FnMut(&mut Job) -> Result<()> + Send,
    ) -> Result<bool> {
        let fence = self.fence(job_id)?;
        let (applied, _) = self
            .store
            .update_job_fenced(&fence, |j| {
                if !expected.contains(&j.state) {
                    return Ok(false);
                }
                change(j)?;
                Ok(true)
            })
            .await?;
        Ok(applied)
    }

    async fn plan(self: &Arc<Self>, job: Job) -> Result<Step> {
        let catalog = &self.config.catalog;
        let preset = catalog.preset(&job.spec.preset_id).ok_or_else(|| {
            Error::internal(anyhow::anyhow!("preset {} vanished", job.spec.preset_id))
        })?;
        let now = now_ms();
        let use_cache = preset.brand_cache && !job.spec.brand_id.is_empty();
        let cached = if use_cache {
            self.store
                .brand_markers(&job.tenant_id, &job.spec.brand_id, now)
                .await?
                .map(|(m, _)| m)
        } else {
            None
        };
        let cache_hit = cached.is_some();
        if use_cache {
            if cache_hit {
                metrics::counter!("cache_hits_total").increment(1);
            } else {
                metrics::counter!("cache_misses_total").increment(1);
            }
        }
        let manifest = planner::plan(
            &planner::Brief {
                text: &job.spec.brief,
                brand_id: &job.spec.brand_id,
                duration_s: job.spec.duration_s,
                max_shot_s: catalog.max_shot_s,
                aspect_ratio: job.spec.aspect_ratio,
            },
            cached,
            now,
        );
        if use_cache && !cache_hit {
            let ttl = i64::from(catalog.brand_cache_ttl_hours) * 3_600_000;
            self.store
                .put_brand_markers(
                    &job.tenant_id,
                    &job.spec.brand_id,
                    &manifest.markers,
                    now + ttl,
                )
                .await?;
        }
        let planner_cost = if cache_hit {
            Money::ZERO
        } else {
            catalog.planner_cost
        };
        let excluded = self.unavailable_backends(job.sandbox);
        let quote = pricing::quote(
            catalog,
            &manifest.shots,
            &QuoteParams {
                quality_floor: job.quality_floor,
                cost_cap: preset.cost_cap(job.spec.duration_s),
                budget: job.spec.budget,
                planner: planner_cost,
                tolerance_percent: job.tolerance_percent,
                excluded: &excluded,
                economy: job.economy,
            },
        );
        let budget = self.monthly_budget_position(&job).await?;
        let expected = [JobState::Queued, JobState::Planning];
        self.commit_in(&job.id, &expected, move |j| {
            if j.state == JobState::Queued {
                j.move_to(JobState::Planning).map_err(Error::internal)?;
            }
            let quote = match quote.clone() {
                Ok(q) => q,
                Err(e) => {
                    return j
                        .fail(e.failure_reason(), e.to_string())
                        .map_err(Error::internal);
                }
            };
            let total = quote.total;
            j.quote = Some(quote);
            j.brand_cache_hit = cache_hit;
            let shot_count = manifest.shots.len() as u32;
            j.manifest = Some(manifest.clone());
            if planner_cost > Money::ZERO {
                j.charge(LedgerEntry {
                    kind: LedgerKind::Planner,
                    shot_id: None,
                    backend: None,
                    seconds: 0,
                    amount: planner_cost,
                    attempt: 1,
                    succeeded: true,
                    at_ms: now,
                    measurement: None,
                });
                alert_budget(j, budget, planner_cost);
            }
            j.emit(EventKind::ManifestReady {
                revision: 1,
                shot_count,
                quote: total,
                brand_cache_hit: cache_hit,
            });
            if j.fast_track || j.spec.auto_approve {
                j.start_render_plan();
                j.move_to(JobState::Rendering).map_err(Error::internal)
            } else {
                j.move_to(JobState::AwaitingApproval)
                    .map_err(Error::internal)
            }
        })
        .await?;
        tracing::info!(job_id = %job.id, cache_hit, "manifest planned");
        Ok(Step::Continue)
    }

    /// Whether a shot has candidates that are only held back by open circuits.
    fn waiting_for_circuits(&self, job: &Job, index: usize) -> bool {
        let shot = &job.shots[index];
        if shot.attempts >= MAX_ATTEMPTS_PER_SHOT {
            return false;
        }
        let set = self.backend_set(job.sandbox);
        let hard_limit = job.spec.budget.map(|b| b - job.billable);
        self.config.catalog.backends.iter().any(|b| {
            set.get(b.backend)
                .is_some_and(|(_, circuit)| !circuit.allows_call())
                && b.max_shot_s >= shot.duration_s
                && hard_limit.is_none_or(|l| b.shot_cost(shot.duration_s) <= l)
        })
    }

    /// A tenant's monthly budget, as read within the last second (see `App::budgets`).
    async fn monthly_budget(&self, tenant_id: &str) -> Result<Option<Money>> {
        if let Some((read, budget)) = self.budgets.get(tenant_id)
            && read.elapsed() < BUDGET_FRESH
        {
            return Ok(budget);
        }
        let read = std::time::Instant::now();
        let budget = self
            .store
            .tenant(tenant_id)
            .await?
            .and_then(|t| t.monthly_budget);
        self.budgets.insert(tenant_id.to_string(), (read, budget));
        Ok(budget)
    }

    pub(super) fn forget_budget(&self, tenant_id: &str) {
        self.budgets.remove(tenant_id);
    }

    /// The tenant's month-to-date spend and monthly budget, if it has one (for budget alerts).
    async fn monthly_budget_position(&self, job: &Job) -> Result<Option<(Money, Money)>> {
        let Some(budget) = self.monthly_budget(&job.tenant_id).await? else {
            return Ok(None);
        };
        let (spent, _) = self
            .store
            .spend_since(
                &job.tenant_id,
                job.sandbox,
                limits::month_start_ms(now_ms()),
            )
            .await?;
        Ok(Some((spent, budget)))
    }

    /// Budget figures for a selection at render time.
    fn selection_budget(job: &Job, cap: Money) -> (Money, Option<Money>, Money) {
        let guaranteed = job
            .quote
            .as_ref()
            .map(|q| q.guaranteed_max())
            .unwrap_or(cap);
        // What the partner pays counts against its limits; failed attempts and bad outputs
        // (metered, not billable) are the service's cost.
        let limit = job.spec.budget.unwrap_or(guaranteed);
        (
            limit - job.billable,
            job.spec.budget.map(|b| b - job.billable),
            cap - job.billable,
        )
    }

    /// Picks the backend for a shot's next attempt: the quoted one first, then the policy.
    fn choose_backend(&self, job: &Job, shot_index: usize) -> Option<Backend> {
        let shot = &job.shots[shot_index];
        let catalog = &self.config.catalog;
        let cap = catalog
            .preset(&job.spec.preset_id)
            .map(|p| p.cost_cap(job.spec.duration_s))
            .unwrap_or(Money::ZERO);
        let mut excluded = self.unavailable_backends(job.sandbox);
        excluded.extend(shot.failed.iter().copied());
        let (remaining, hard_limit, cap_remaining) = Self::selection_budget(job, cap);
        let quoted = job
            .quote
            .as_ref()
            .and_then(|q| q.shots.iter().find(|l| l.shot_id == shot.shot_id))
            .map(|l| l.backend);
        let preferred = shot.rerender_on.or(shot.preferred).or(quoted);
        let selection = Selection {
            shot_seconds: shot.duration_s,
            quality_floor: job.quality_floor,
            remaining,
            hard_limit,
            cap_remaining,
            excluded: &excluded,
            economy: job.economy,
            preferred,
            // A fallback may land below the floor so the job still renders (sla_met = false).
            require_floor: false,
        };
        pricing::select_backend(catalog, &selection).map(|b| b.backend)
    }

    /// Renders every shot that needs it, up to `max_parallel_shots_per_job` at once, until none
    /// needs rendering, the job leaves its render state, or the server stops.
    async fn render_phase(self: &Arc<Self>, job_id: &str) -> Result<Step> {
        let token = self.job_token(job_id);
        let limit = self.config.render.max_parallel_shots_per_job;
        let mut inflight: JoinSet<(String, Result<()>)> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        // Another replica may cancel the job: look at it now and then while shots are in flight.
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let Some(job) = self.store.job_by_id(job_id).await? else {
                break Ok(Step::Idle);
            };
            if !matches!(job.state, JobState::Rendering | JobState::QualityCheck) {
                break Ok(Step::Continue);
            }
            for s in job.shots.iter().filter(|s| s.needs_render) {
                if running.len() >= limit {
                    break;
                }
                if running.insert(s.shot_id.clone()) {
                    let app = self.clone();
                    let (job_id, shot_id, token) =
                        (job_id.to_string(), s.shot_id.clone(), token.clone());
                    let span = tracing::info_span!("shot", job_id = %job_id, shot = %shot_id);
                    inflight.spawn(
                        async move {
                            // A panic in an attempt must not take the job down: it is an error.
                            let r = std::panic::AssertUnwindSafe(
                                app.shot_attempt(&job_id, &shot_id, &token),
                            )
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                Err(Error::internal(anyhow::anyhow!("shot attempt panicked")))
                            });
                            (shot_id, r)
                        }
                        .instrument(span),
                    );
                }
            }
            if inflight.is_empty() {
                break Ok(Step::Continue);
            }
            tokio::select! {
                done = inflight.join_next() => {
                    if let Some(done) = done {
                        let (shot_id, r) = done.map_err(Error::internal)?;
                        running.remove(&shot_id);
                        if matches!(r, Err(Error::LeaseLost)) {
                            break Err(Error::LeaseLost);
                        }
                        if let Err(e) = r {
                            tracing::warn!(job_id, shot = %shot_id, error = %e, "shot attempt failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                                _ = self.shutdown.cancelled() => {}
                            }
                        }
                    }
                }
                _ = recheck.tick() => {}
                _ = token.cancelled() => break Ok(Step::Continue),
                _ = self.shutdown.cancelled() => break Ok(Step::Idle),
            }
        };
        // Whatever ended the phase, no attempt outlives it (a cancelled job stops every shot).
        inflight.shutdown().await;
        self.forget_job(job_id);
        result
    }

    /// One render attempt of a shot: choose a backend, submit and commit the task id (or resume a
    /// committed task), wait for the clip, store and measure it, and commit the outcome.
    async fn shot_attempt(
        self: &Arc<Self>,
        job_id: &str,
        shot_id: &str,
        token: &tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        let Some(job) = self.store.job_by_id(job_id).await? else {
            return Ok(());
        };
        let state = job.state;
        let Some(index) = job
            .shots
            .iter()
            .position(|s| s.shot_id == shot_id && s.needs_render)
        else {
            return Ok(());
        };
        let shot = job.shots[index].clone();
        let request = self.render_request(&job, index, shot.attempts + 1);
        let (backend, attempt, task_id, permit) = match &shot.task {
            // Resumed after a restart: wait on the task that was already paid for.
            Some(task) => {
                let permits = self.backend_permits(job.sandbox, task.backend);
                let permit = tokio::select! {
                    p = permits.acquire_owned() => p.map_err(Error::internal)?,
                    _ = token.cancelled() => return Ok(()),
                };
                tracing::info!(backend = task.backend.as_str(), task = %task.task_id, attempt = task.attempt, "resuming a provider task");
                (task.backend, task.attempt, task.task_id.clone(), permit)
            }
            None => {
                let Some(backend) = self.choose_backend(&job, index) else {
                    return self.no_backend(&job, index).await;
                };
                let permits = self.backend_permits(job.sandbox, backend);
                let permit = tokio::select! {
                    p = permits.acquire_owned() => p.map_err(Error::internal)?,
                    _ = token.cancelled() => return Ok(()),
                };
                let set = self.backend_set(job.sandbox);
                let (imp, circuit) = set.get(backend).ok_or_else(|| {
                    Error::internal(anyhow::anyhow!("backend {backend:?} not configured"))
                })?;
                let attempt = shot.attempts + 1;
                let request = RenderRequest {
                    attempt,
                    ..request.clone()
                };
                // Paying a provider needs a lease that is surely ours: a replica that was paused
                // past its lease must not submit work the new holder will submit again.
                if !self.lease_is_fresh(job_id) {
                    // Not surely ours until the next renewal: wait for it (the step is retried).
                    return Err(Error::Unavailable {
                        message: "waiting for the job's lease to be renewed".into(),
                        retry_after: Duration::from_secs(1),
                    });
                }
                // A half-open circuit lets one trial call through; the others choose again.
                if !circuit.begin_call() {
                    return Ok(());
                }
                let submitted = tokio::select! {
                    r = imp.submit(&request) => r,
                    _ = token.cancelled() => return Ok(()),
                };
                let task_id = match submitted {
                    Ok(t) => t,
                    Err(error) => {
                        if circuit.record_failure() {
                            tracing::warn!(backend = backend.as_str(), "circuit opened");
                        }
                        self.record_failure(job_id, state, index, backend, attempt, &error, true)
                            .await?;
                        return Ok(());
                    }
                };
                metrics::counter!("backend_selection_total", "backend" => backend.as_str())
                    .increment(1);
                let now = now_ms();
                let mut recorded = false;
                self.commit_if(job_id, state, |j| {
                    let s = &mut j.shots[index];
                    if !s.needs_render || s.attempts != shot.attempts || s.task.is_some() {
                        return Ok(()); // another attempt got there first
                    }
                    s.attempts = attempt;
                    s.task = Some(PendingTask {
                        backend,
                        attempt,
                        task_id: task_id.clone(),
                        submitted_ms: now,
                    });
                    j.emit(EventKind::ShotStarted {
                        shot_id: shot.shot_id.clone(),
                        backend,
                        attempt,
                    });
                    recorded = true;
                    Ok(())
                })
                .await?;
                if !recorded {
                    return Ok(());
                }
                (backend, attempt, task_id, permit)
            }
        };
        let request = RenderRequest { attempt, ..request };
        let set = self.backend_set(job.sandbox);
        let (imp, circuit) = set.get(backend).ok_or_else(|| {
            Error::internal(anyhow::anyhow!("backend {backend:?} not configured"))
        })?;
        let timeout = Duration::from_secs(self.config.render_timeout_s);
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, imp.finish(&request, &task_id)) => r.unwrap_or(Err(RenderError::Timeout(timeout.as_secs()))),
            // Cancelled job: dropping the wait cancels the provider task. Shutdown: the task keeps
            // running and the next start resumes it.
            _ = token.cancelled() => return Ok(()),
        };
        drop(permit);
        let output = match outcome {
            Ok(output) => output,
            Err(error) => {
                if circuit.record_failure() {
                    tracing::warn!(backend = backend.as_str(), "circuit opened");
                }
                tracing::info!(backend = backend.as_str(), error = %error, "render attempt failed");
                return self
                    .record_failure(job_id, state, index, backend, attempt, &error, false)
                    .await;
            }
        };
        circuit.record_success();
        let spec = self
            .config
            .catalog
            .backend(backend)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("no spec for {backend:?}")))?
            .clone();
        let cost = spec.shot_cost(shot.duration_s);
        let duration_ms = u64::from(shot.duration_s) * 1000;
        let nominal = output.quality;
        let (measurement, clip) = self.measure_clip(output, duration_ms).await?;
        let artifact = match clip {
            Some((bytes, key)) => Some(self.store_video(bytes, Some(key)).await?),
            None => None,
        };
        let charging = self.charge_lock(job_id);
        let _charging = charging.lock().await;
        let now = now_ms();
        let budget = self.monthly_budget_position(&job).await?;
        let passed = measurement.passed();
        if passed {
            metrics::histogram!("quality_score").record(nominal);
        }
        self.commit_if(job_id, state, |j| {
            let s = &mut j.shots[index];
            if !s.needs_render || s.attempts != attempt {
                return Ok(()); // superseded
            }
            s.task = None;
            let shot_id = s.shot_id.clone();
            if !passed {
                // The provider delivered, so the attempt is metered; the clip is unusable, so it is
                // the service's cost, not the partner's.
                s.failed.push(backend);
                j.emit(EventKind::QualityChecked {
                    shot_id: shot_id.clone(),
                    quality: 0.0,
                    threshold: j.quality_floor,
                    passed: false,
                    rerender: true,
                    measurement: Some(measurement.clone()),
                    backend: Some(backend),
                    attempt,
                });
                j.charge(LedgerEntry {
                    kind: LedgerKind::Render,
                    shot_id: Some(shot_id.clone()),
                    backend: Some(backend),
                    seconds: shot.duration_s,
                    amount: cost,
                    attempt,
                    succeeded: false,
                    at_ms: now,
                    measurement: Some(measurement.clone()),
                });
                let reason = format!(
                    "output failed the technical checks: {}",
                    measurement.failures.join(", ")
                );
                self.fall_back(j, index, backend, "bad_output", reason)?;
                return Ok(());
            }
            let kind = if s.rerender {
                LedgerKind::Rerender
            } else {
                LedgerKind::Render
            };
            s.result = Some(RenderResult {
                backend,
                // A clip that passes the technical checks scores its backend's nominal quality.
                quality: nominal,
                cost,
                uri: shot_clip_name(&j.id, &shot_id),
                attempt,
                artifact: artifact.clone(),
                measurement: Some(measurement.clone()),
            });
            s.needs_render = false;
            s.rerender = false;
            s.rerender_on = None;
            s.failed.clear();
            let quality = nominal;
            j.emit(EventKind::ShotRendered {
                shot_id: shot_id.clone(),
                backend,
                duration_s: shot.duration_s,
                cost,
                quality,
                attempt,
                clip: artifact.clone(),
                measurement: Some(measurement.clone()),
            });
            j.charge(LedgerEntry {
                kind,
                shot_id: Some(shot_id),
                backend: Some(backend),
                seconds: shot.duration_s,
                amount: cost,
                attempt,
                succeeded: true,
                at_ms: now,
                measurement: Some(measurement.clone()),
            });
            alert_budget(j, budget, cost);
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Probes and measures a clip on the media slots; returns the verdict and, when the clip
    /// passed, its bytes to store.
    async fn measure_clip(
        &self,
        output: RenderOutput,
        duration_ms: u64,
    ) -> Result<(Measurement, Option<(bytes::Bytes, super::memo::Key)>)> {
        let media = self.media.clone();
        let limits = self.config.quality.clone();
        let fps = f64::from(self.config.media.fps);
        let expected = Expected {
            duration_ms,
            size: output.exact_size,
        };
        let clip_key = output
            .clip_key
            .unwrap_or_else(|| super::memo::key(&[&output.clip]));
        // Identical bytes were measured before: the figures are the same (the verdict is not
        // memoised: it depends on the shot's expectations).
        // Single flight: concurrent measurements of the same bytes wait for the first.
        let figures = match self.memo.figures.get_value_or_guard_async(&clip_key).await {
            Ok(figures) => figures,
            Err(guard) => {
                let _permit = self.media_permit().await?;
                let bytes = output.clip.clone();
                let measured = crate::media_threads::run(move || match media.measure(&bytes) {
                    Ok(m) => Some(Figures {
                        frame_count: m.info.frame_count,
                        decoded_frames: m.decoded_frames,
                        decode_errors: m.decode_errors,
                        fps: m.info.fps,
                        duration_ms: m.info.duration_ms,
                        width: m.info.width,
                        height: m.info.height,
                        black_frame_ratio: m.black_frame_ratio,
                        frozen_frame_ratio: m.frozen_frame_ratio,
                        sharpness: m.sharpness,
                        contrast: m.contrast,
                    }),
                    Err(e) => {
                        tracing::info!(error = %e, "clip does not decode");
                        None
                    }
                })
                .await
                .map_err(Error::internal)?;
                let _ = guard.insert(measured);
                measured
            }
        };
        let (measurement, clip) = match figures {
            Some(figures) => {
                let verdict = media_rules::check(&figures, &expected, &limits);
                let keep = verdict.passed().then_some((output.clip, clip_key));
                (verdict, keep)
            }
            None => {
                let frames = (duration_ms as f64 * fps / 1000.0).round() as u32;
                (Measurement::undecodable(frames), None)
            }
        };
        Ok((measurement, clip))
    }

    /// What a backend needs to render shot `index`.
    fn render_request(&self, job: &Job, index: usize, attempt: u32) -> RenderRequest {
        let shot = &job.shots[index];
        let manifest_shot = job
            .manifest
            .as_ref()
            .and_then(|m| m.shots.iter().find(|s| s.shot_id == shot.shot_id));
        let palette = job
            .manifest
            .as_ref()
            .map(|m| {
                m.markers
                    .color_palette
                    .iter()
                    .filter_map(|c| parse_hex_colour(c))
                    .collect()
            })
            .unwrap_or_default();
        RenderRequest {
            job_id: job.id.clone(),
            shot_id: shot.shot_id.clone(),
            attempt,
            prompt: shot.description.clone(),
            duration_s: shot.duration_s,
            aspect_ratio: job.spec.aspect_ratio,
            camera: shot
                .camera
                .or(manifest_shot.map(|s| s.camera))
                .unwrap_or(Camera::Static),
            shot_number: index as u32 + 1,
            shot_count: job.shots.len() as u32,
            palette,
        }
    }

    /// No backend can take the shot now: wait out open circuits, or fail the job.
    async fn no_backend(self: &Arc<Self>, job: &Job, index: usize) -> Result<()> {
        if self.waiting_for_circuits(job, index) {
            // Every able backend is cooling down after failures: wait for a half-open trial
            // instead of failing the job on a transient outage.
            let wait = Duration::from_secs(self.config.circuit.cooldown_s)
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => {}
            }
            return Ok(());
        }
        let (reason, message) = job.no_backend_failure(&self.config.catalog, index);
        self.commit_if(&job.id, job.state, |j| {
            j.fail(reason, message.clone()).map_err(Error::internal)
        })
        .await?;
        Ok(())
    }

    /// Records a failed attempt (`before_start`: the backend refused the submission) and moves the
    /// shot to the next candidate.
    #[allow(clippy::too_many_arguments)]
    async fn record_failure(
        &self,
        job_id: &str,
        state: JobState,
        index: usize,
        backend: Backend,
        attempt: u32,
        error: &RenderError,
        before_start: bool,
    ) -> Result<()> {
        self.commit_if(job_id, state, |j| {
            let s = &mut j.shots[index];
            if before_start {
                if s.attempts + 1 != attempt || s.task.is_some() || !s.needs_render {
                    return Ok(());
                }
                s.attempts = attempt;
            } else if s.attempts != attempt {
                return Ok(());
            }
            s.task = None;
            self.fall_back(j, index, backend, error.label(), error.to_string())
        })
        .await?;
        Ok(())
    }

    /// After a failed attempt on `backend`: pick the next candidate (starting another round when
    /// every candidate failed once), announce it, or fail the job when none is left.
    fn fall_back(
        &self,
        j: &mut Job,
        index: usize,
        backend: Backend,
        label: &'static str,
        reason: String,
    ) -> Result<()> {
        j.shots[index].failed.push(backend);
        let shot_id = j.shots[index].shot_id.clone();
        let mut next = self.choose_backend(j, index);
        if next.is_none() && j.shots[index].attempts < MAX_ATTEMPTS_PER_SHOT {
            // Every candidate failed once: start another round rather than give up.
            j.shots[index].failed.clear();
            next = self.choose_backend(j, index);
        }
        metrics::counter!("backend_fallback_total", "from" => backend.as_str(), "to" => next.map_or("none", Backend::as_str), "reason" => label)
            .increment(1);
        j.emit(EventKind::BackendFallback {
            shot_id: shot_id.clone(),
            from: backend,
            to: next,
            reason,
        });
        if next.is_none() && !self.waiting_for_circuits(j, index) {
            let (reason, message) = j.no_backend_failure(&self.config.catalog, index);
            j.fail(reason, message.clone()).map_err(Error::internal)?;
        }
        Ok(())
    }

    /// The cut: every shot's clip in manifest order, normalised to the job's format, stored.
    async fn assemble(&self, job: &Job) -> Result<std::result::Result<Video, String>> {
        let stored = job
            .shots
            .iter()
            .map(|s| {
                s.result
                    .as_ref()
                    .and_then(|r| r.artifact.as_ref())
                    .ok_or_else(|| {
                        Error::internal(anyhow::anyhow!("shot {} has no stored clip", s.shot_id))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let short_side = if job.sandbox {
            self.config.media.sandbox_short_side
        } else {
            self.config.media.live_short_side
        };
        let (width, height) = media_rules::frame_size(job.spec.aspect_ratio, short_side);
        // The same clips (by content), cut to the same lengths in the same format, always make the
        // same cut: assemble it once.
        let cut_key = {
            let format = format!("{width}x{height}@{}", self.config.media.fps);
            let mut parts: Vec<&[u8]> = vec![format.as_bytes()];
            let lengths: Vec<[u8; 4]> = job
                .shots
                .iter()
                .map(|s| s.duration_s.to_le_bytes())
                .collect();
            for (a, len) in stored.iter().zip(&lengths) {
                parts.push(a.sha256.as_bytes());
                parts.push(len);
            }
            super::memo::key(&parts)
        };
        let guard = match self.memo.cuts.get_value_or_guard_async(&cut_key).await {
            Ok(artifact) => {
                return Ok(Ok(Video {
                    uri: video_name(&job.id),
                    duration_s: ((artifact.duration_ms + 500) / 1000) as u32,
                    sha256: artifact.sha256.clone(),
                    shot_count: job.shots.len() as u32,
                    artifact: Some(artifact),
                }));
            }
            Err(guard) => guard,
        };
        // A local directory is read on the media thread (`App::local_artifacts`).
        let local = self.local_artifacts();
        let keys: Vec<String> = stored.iter().map(|a| a.key.clone()).collect();
        let mut remote_clips = Vec::new();
        if local.is_none() {
            for key in &keys {
                remote_clips.push(self.artifacts.read(key).await.map_err(artifact_error)?);
            }
        }
        let format = aiprod_media::Format {
            width,
            height,
            fps: self.config.media.fps,
        };
        let media = self.media.clone();
        let started = std::time::Instant::now();
        let permit = self.media_permit().await?;
        // Provider clips can be longer than their shot (fixed render lengths): cut each to its shot.
        let max_ms: Vec<Option<u64>> = job
            .shots
            .iter()
            .map(|s| Some(u64::from(s.duration_s) * 1000))
            .collect();
        // The cut's content key is hashed on the media thread too, off the runtime.
        let cut = crate::media_threads::run(move || {
            let clips = match local {
                Some(store) => keys
                    .iter()
                    .map(|key| futures::executor::block_on(store.read(key)))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
                None => remote_clips,
            };
            let refs: Vec<&[u8]> = clips.iter().map(|c| c.as_ref()).collect();
            let assembled = media.assemble_trimmed(&refs, &max_ms, format).map(|cut| {
                let key = super::memo::key(&[&cut]);
                (cut, key)
            });
            Ok::<_, aiprod_artifacts::ArtifactError>(assembled)
        })
        .await
        .map_err(Error::internal)?
        .map_err(artifact_error)?;
        drop(permit);
        let (cut, key) = match cut {
            Ok(cut) => cut,
            // An input this media seam cannot read will not become readable by retrying.
            Err(e @ aiprod_media::MediaError::Unsupported(_)) => return Ok(Err(e.to_string())),
            Err(e) => return Err(media_error(e)),
        };
        metrics::histogram!("assembly_seconds").record(started.elapsed().as_secs_f64());
        let artifact = self.store_video(cut.into(), Some(key)).await?;
        let _ = guard.insert(artifact.clone());
        Ok(Ok(Video {
            uri: video_name(&job.id),
            duration_s: ((artifact.duration_ms + 500) / 1000) as u32,
            sha256: artifact.sha256.clone(),
            shot_count: job.shots.len() as u32,
            artifact: Some(artifact),
        }))
    }

    /// Checks every shot not yet checked in one commit (moving a job that just finished rendering
    /// to QUALITY_CHECK in it): a shot below the floor is rendered once more where a backend can
    /// reach the floor within the budget (domain rule). With every shot checked, the cut is made.
    async fn quality_check(self: &Arc<Self>, job: Job) -> Result<Step> {
        if job.state == JobState::QualityCheck && job.shots.iter().all(|s| s.quality_checked) {
            return self.finish(job).await;
        }
        let threshold = job.quality_floor;
        let guaranteed = job
            .quote
            .as_ref()
            .map(|q| q.guaranteed_max())
            .unwrap_or_default();
        // Re-renders decided together share what is left of the budget.
        let mut left = job.spec.budget.unwrap_or(guaranteed) - job.billable;
        let excluded = self.unavailable_backends(job.sandbox);
        let mut checks = Vec::new();
        for (index, shot) in job.shots.iter().enumerate() {
            if shot.quality_checked {
                continue;
            }
            let Some(result) = shot.result.clone() else {
                return Err(Error::internal(anyhow::anyhow!(
                    "shot {} reached quality check unrendered",
                    shot.shot_id
                )));
            };
            let passed = result.quality >= threshold;
            let better = if passed || shot.quality_rerendered {
                None
            } else {
                pricing::rerender_backend(
                    &self.config.catalog,
                    shot.duration_s,
                    threshold,
                    result.backend,
                    &excluded,
                    left,
                )
            };
            if let Some(spec) = better.and_then(|b| self.config.catalog.backend(b)) {
                left -= spec.shot_cost(shot.duration_s);
            }
            checks.push((index, result, passed, better));
        }
        let expected = [JobState::Rendering, JobState::QualityCheck];
        self.commit_in(&job.id, &expected, |j| {
            if j.state == JobState::Rendering {
                j.move_to(JobState::QualityCheck).map_err(Error::internal)?;
            }
            for (index, result, passed, better) in checks.iter().cloned() {
                let s = &mut j.shots[index];
                if s.quality_checked || s.needs_render {
                    continue;
                }
                let shot_id = s.shot_id.clone();
                match better {
                    Some(b) => {
                        s.needs_render = true;
                        s.rerender = true;
                        s.rerender_on = Some(b);
                        s.quality_rerendered = true;
                    }
                    None => {
                        s.quality_checked = true;
                        s.passed = Some(passed);
                    }
                }
                j.emit(EventKind::QualityChecked {
                    shot_id,
                    quality: result.quality,
                    threshold,
                    passed,
                    rerender: better.is_some(),
                    measurement: result.measurement.clone(),
                    backend: Some(result.backend),
                    attempt: result.attempt,
                });
            }
            Ok(())
        })
        .await?;
        Ok(Step::Continue)
    }

    async fn finish(self: &Arc<Self>, job: Job) -> Result<Step> {
        let sla_met = job.shots.iter().all(|s| s.passed == Some(true));
        let hold_for_review = job.holds_for_final_review();
        let video = self.assemble(&job).await?;
        self.commit_if(&job.id, JobState::QualityCheck, |j| {
            let video = match &video {
                Ok(v) => v.clone(),
                Err(why) => {
                    return j
                        .fail(
                            FailureReason::Internal,
                            format!("the cut could not be assembled: {why}"),
                        )
                        .map_err(Error::internal);
                }
            };
            j.sla_met = Some(sla_met);
            if hold_for_review {
                // The partner reviews this cut; RequestRevision replaces it.
                j.video = Some(video);
                j.move_to(JobState::AwaitingFinalApproval)
                    .map_err(Error::internal)
            } else {
                j.deliver(video).map_err(Error::internal)
            }
        })
        .await?;
        if !hold_for_review {
            tracing::info!(job_id = %job.id, sla_met, "job delivered");
        }
        Ok(Step::Idle)
    }
}

/// Emits a BudgetAlert for each monthly-budget threshold that a charge of `amount` crosses.
fn alert_budget(job: &mut Job, position: Option<(Money, Money)>, amount: Money) {
    let Some((spent, budget)) = position else {
        return;
    };
    for threshold_percent in
        limits::crossed(spent.micros(), (spent + amount).micros(), budget.micros())
    {
        job.emit(EventKind::BudgetAlert {
            threshold_percent,
            spent: spent + amount,
            budget,
        });
    }
}

/// `#RRGGBB` as RGB.
fn parse_hex_colour(c: &str) -> Option<[u8; 3]> {
    let hex = c.strip_prefix('#')?;
    if hex.len() != 6 {
        return None;
    }
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}
