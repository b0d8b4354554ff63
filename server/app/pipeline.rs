//! The durable job runner. Each step reads the job from the store, does at most one piece of
//! outside work (plan, or one render attempt), and commits the result with its events and ledger
//! lines in one transaction. A crash or restart loses at most the step in flight, which is redone:
//! nothing is billed twice because a render is billed in the same commit that records it.

use super::{App, limits};
use crate::backends::{RenderError, RenderRequest};
use crate::domain::job::{
    EventKind, FailureReason, Job, LedgerEntry, LedgerKind, RenderResult, Video,
};
use crate::domain::pricing::{self, QuoteParams, Selection};
use crate::domain::{Backend, JobState, Money, planner};
use crate::error::{Error, Result};
use crate::store::now_ms;
use futures::FutureExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// What the runner does after a step.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// More to do now.
    Continue,
    /// Nothing to do until the partner acts, or the job is over.
    Idle,
}

/// Render attempts of one shot before the job fails (fallbacks and retry rounds included).
const MAX_ATTEMPTS_PER_SHOT: u32 = 9;

fn runnable(state: JobState) -> bool {
    matches!(
        state,
        JobState::Queued | JobState::Planning | JobState::Rendering | JobState::QualityCheck
    )
}

impl App {
    /// Resumes every job that was in flight (after a restart).
    pub async fn resume_jobs(self: &Arc<Self>) -> Result<usize> {
        let ids = self.store.runnable_job_ids().await?;
        let n = ids.len();
        for id in ids {
            self.drive(id);
        }
        Ok(n)
    }

    /// Makes sure a task drives this job (at most one per job in this process).
    pub fn drive(self: &Arc<Self>, job_id: String) {
        if self.shutdown.is_cancelled() {
            return;
        }
        {
            let mut driving = self.driving.lock().unwrap_or_else(|e| e.into_inner());
            if !driving.insert(job_id.clone()) {
                return;
            }
        }
        let app = self.clone();
        self.tasks.spawn(async move {
            let permit = tokio::select! {
                p = app.workers.clone().acquire_owned() => p,
                _ = app.shutdown.cancelled() => { app.undrive(&job_id); return; }
            };
            let mut errors = 0u32;
            while !app.shutdown.is_cancelled() {
                // A panic in a step must not leave the job without a driver: treat it like an error.
                let step = std::panic::AssertUnwindSafe(app.step(&job_id)).catch_unwind().await.unwrap_or_else(|panic| {
                    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                    Err(Error::internal(anyhow::anyhow!("pipeline step panicked: {}", what.unwrap_or_default())))
                });
                match step {
                    Ok(Step::Continue) => errors = 0,
                    Ok(Step::Idle) => break,
                    Err(e) => {
                        errors += 1;
                        tracing::warn!(job_id = %job_id, error = %e, attempt = errors, "pipeline step failed; retrying");
                        let backoff = Duration::from_millis(100 * u64::from(errors.min(50)));
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = app.shutdown.cancelled() => break,
                        }
                    }
                }
            }
            drop(permit);
            app.undrive(&job_id);
            // A partner action may have made the job runnable while this task was finishing.
            if !app.shutdown.is_cancelled()
                && let Ok(Some(job)) = app.store.job_by_id(&job_id).await
                && runnable(job.state)
            {
                app.drive(job_id);
            }
        });
    }

    fn undrive(&self, job_id: &str) {
        self.driving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job_id);
    }

    async fn step(self: &Arc<Self>, job_id: &str) -> Result<Step> {
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
        match job.state {
            JobState::Queued => {
                self.commit_if(job_id, JobState::Queued, |j| {
                    j.move_to(JobState::Planning).map_err(Error::internal)
                })
                .await?;
                Ok(Step::Continue)
            }
            JobState::Planning => self.plan(job).await,
            JobState::Rendering => match job.shots.iter().position(|s| s.needs_render) {
                Some(i) => self.render_shot(&job, i).await,
                None => {
                    self.commit_if(job_id, JobState::Rendering, |j| {
                        j.move_to(JobState::QualityCheck).map_err(Error::internal)
                    })
                    .await?;
                    Ok(Step::Continue)
                }
            },
            JobState::QualityCheck => self.quality_check(job).await,
            JobState::AwaitingApproval | JobState::AwaitingFinalApproval => Ok(Step::Idle),
            JobState::Delivered | JobState::Cancelled | JobState::Failed => Ok(Step::Idle),
        }
    }

    /// Commits `change` only if the job is still in `expected` (a cancel may have won the race).
    async fn commit_if(
        &self,
        job_id: &str,
        expected: JobState,
        change: impl FnOnce(&mut Job) -> Result<()>,
    ) -> Result<bool> {
        let (applied, _) = self
            .store
            .update_job(None, job_id, |j| {
                if j.state != expected {
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
        self.commit_if(&job.id, JobState::Planning, move |j| {
            let quote = match quote {
                Ok(q) => q,
                Err(e) => {
                    let reason = if j.spec.budget.is_some() {
                        FailureReason::BudgetExhausted
                    } else {
                        FailureReason::AllBackendsFailed
                    };
                    return j.fail(reason, e.to_string()).map_err(Error::internal);
                }
            };
            let total = quote.total;
            j.quote = Some(quote);
            j.brand_cache_hit = cache_hit;
            let shot_count = manifest.shots.len() as u32;
            j.manifest = Some(manifest);
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
        let hard_limit = job.spec.budget.map(|b| b - job.metered);
        self.config.catalog.backends.iter().any(|b| {
            set.get(b.backend)
                .is_some_and(|(_, circuit)| !circuit.allows_call())
                && b.max_shot_s >= shot.duration_s
                && hard_limit.is_none_or(|l| b.shot_cost(shot.duration_s) <= l)
        })
    }

    /// The tenant's month-to-date spend and monthly budget, if it has one (for budget alerts).
    async fn monthly_budget_position(&self, job: &Job) -> Result<Option<(Money, Money)>> {
        let Some(budget) = self
            .store
            .tenant(&job.tenant_id)
            .await?
            .and_then(|t| t.monthly_budget)
        else {
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
        let limit = job.spec.budget.unwrap_or(guaranteed);
        (
            limit - job.metered,
            job.spec.budget.map(|b| b - job.metered),
            cap - job.metered,
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
        };
        pricing::select_backend(catalog, &selection).map(|b| b.backend)
    }

    async fn render_shot(self: &Arc<Self>, job: &Job, index: usize) -> Result<Step> {
        let state = job.state;
        let shot = job.shots[index].clone();
        let Some(backend) = self.choose_backend(job, index) else {
            if self.waiting_for_circuits(job, index) {
                // Every able backend is cooling down after failures: wait for a half-open trial
                // instead of failing the job on a transient outage.
                let wait = Duration::from_secs(self.config.circuit.cooldown_s)
                    .clamp(Duration::from_millis(50), Duration::from_secs(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shutdown.cancelled() => return Ok(Step::Idle),
                }
                return Ok(Step::Continue);
            }
            let reason = if job.spec.budget.is_some() {
                FailureReason::BudgetExhausted
            } else {
                FailureReason::AllBackendsFailed
            };
            let message = format!(
                "no backend can render shot {} any more (tried: {:?})",
                shot.shot_id, shot.failed
            );
            self.commit_if(&job.id, state, |j| {
                j.fail(reason, message).map_err(Error::internal)
            })
            .await?;
            return Ok(Step::Idle);
        };
        let attempt = shot.attempts + 1;
        let started = self
            .commit_if(&job.id, state, |j| {
                j.shots[index].attempts = attempt;
                j.emit(EventKind::ShotStarted {
                    shot_id: shot.shot_id.clone(),
                    backend,
                    attempt,
                });
                Ok(())
            })
            .await?;
        if !started {
            return Ok(Step::Continue);
        }
        metrics::counter!("backend_selection_total", "backend" => backend.as_str()).increment(1);
        let set = self.backend_set(job.sandbox);
        let (imp, circuit) = set.get(backend).ok_or_else(|| {
            Error::internal(anyhow::anyhow!("backend {backend:?} not configured"))
        })?;
        let request = RenderRequest {
            job_id: job.id.clone(),
            shot_id: shot.shot_id.clone(),
            attempt,
            prompt: shot.description.clone(),
            duration_s: shot.duration_s,
            aspect_ratio: job.spec.aspect_ratio,
        };
        let timeout = Duration::from_secs(self.config.render_timeout_s);
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, imp.render(&request)) => r.unwrap_or(Err(RenderError::Timeout(timeout.as_secs()))),
            // Shutting down: the attempt is redone after the restart.
            _ = self.shutdown.cancelled() => return Ok(Step::Idle),
        };
        let spec = self
            .config
            .catalog
            .backend(backend)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("no spec for {backend:?}")))?
            .clone();
        let cost = spec.shot_cost(shot.duration_s);
        let now = now_ms();
        let budget = self.monthly_budget_position(job).await?;
        match outcome {
            Ok(output) => {
                circuit.record_success();
                metrics::histogram!("quality_score").record(output.quality);
                self.commit_if(&job.id, state, |j| {
                    let s = &mut j.shots[index];
                    if !s.needs_render || s.attempts != attempt {
                        return Ok(()); // superseded
                    }
                    let kind = if s.rerender {
                        LedgerKind::Rerender
                    } else {
                        LedgerKind::Render
                    };
                    s.result = Some(RenderResult {
                        backend,
                        quality: output.quality,
                        cost,
                        uri: output.uri,
                        attempt,
                    });
                    s.needs_render = false;
                    s.rerender = false;
                    s.rerender_on = None;
                    s.failed.clear();
                    let shot_id = s.shot_id.clone();
                    j.emit(EventKind::ShotRendered {
                        shot_id: shot_id.clone(),
                        backend,
                        duration_s: shot.duration_s,
                        cost,
                        quality: output.quality,
                        attempt,
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
                    });
                    alert_budget(j, budget, cost);
                    Ok(())
                })
                .await?;
            }
            Err(error) => {
                if circuit.record_failure() {
                    tracing::warn!(backend = backend.as_str(), "circuit opened");
                }
                tracing::info!(job_id = %job.id, shot = %shot.shot_id, backend = backend.as_str(), error = %error, "render attempt failed");
                self.commit_if(&job.id, state, |j| {
                    let s = &mut j.shots[index];
                    if s.attempts != attempt {
                        return Ok(());
                    }
                    s.failed.push(backend);
                    let mut next = self.choose_backend(j, index);
                    if next.is_none() && j.shots[index].attempts < MAX_ATTEMPTS_PER_SHOT {
                        // Every candidate failed once: start another round rather than give up.
                        j.shots[index].failed.clear();
                        next = self.choose_backend(j, index);
                    }
                    metrics::counter!("backend_fallback_total", "from" => backend.as_str(), "to" => next.map_or("none", Backend::as_str), "reason" => error.label())
                        .increment(1);
                    j.emit(EventKind::BackendFallback { shot_id: shot.shot_id.clone(), from: backend, to: next, reason: error.to_string() });
                    if next.is_none() && !self.waiting_for_circuits(j, index) {
                        let reason = if j.spec.budget.is_some() { FailureReason::BudgetExhausted } else { FailureReason::AllBackendsFailed };
                        j.fail(reason, format!("every backend able to render shot {} failed", shot.shot_id)).map_err(Error::internal)?;
                    }
                    Ok(())
                })
                .await?;
            }
        }
        Ok(Step::Continue)
    }

    async fn quality_check(self: &Arc<Self>, job: Job) -> Result<Step> {
        if let Some(i) = job.shots.iter().position(|s| s.needs_render) {
            return self.render_shot(&job, i).await;
        }
        let Some(index) = job.shots.iter().position(|s| !s.quality_checked) else {
            return self.finish(job).await;
        };
        let shot = &job.shots[index];
        let Some(result) = shot.result.clone() else {
            return Err(Error::internal(anyhow::anyhow!(
                "shot {} reached quality check unrendered",
                shot.shot_id
            )));
        };
        let threshold = job.quality_floor;
        let passed = result.quality >= threshold;
        // One re-render on a better (or equally good) backend when the budget allows.
        let better = if passed || shot.quality_rerendered {
            None
        } else {
            let catalog = &self.config.catalog;
            let unavailable = self.unavailable_backends(job.sandbox);
            let current_quality = catalog.backend(result.backend).map_or(0.0, |b| b.quality);
            let guaranteed = job
                .quote
                .as_ref()
                .map(|q| q.guaranteed_max())
                .unwrap_or_default();
            let remaining = job.spec.budget.unwrap_or(guaranteed) - job.metered;
            catalog
                .backends
                .iter()
                .filter(|b| !unavailable.contains(&b.backend) && b.max_shot_s >= shot.duration_s)
                .filter(|b| {
                    b.quality >= current_quality && b.shot_cost(shot.duration_s) <= remaining
                })
                .max_by(|a, b| a.quality.total_cmp(&b.quality))
                .map(|b| b.backend)
        };
        self.commit_if(&job.id, JobState::QualityCheck, |j| {
            let s = &mut j.shots[index];
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
            });
            Ok(())
        })
        .await?;
        Ok(Step::Continue)
    }

    async fn finish(self: &Arc<Self>, job: Job) -> Result<Step> {
        let sla_met = job.shots.iter().all(|s| s.passed == Some(true));
        let hold_for_review = job.final_review && !job.spec.auto_approve;
        let video = assemble_video(&job);
        self.commit_if(&job.id, JobState::QualityCheck, |j| {
            j.sla_met = Some(sla_met);
            if hold_for_review {
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

/// The delivered video: the cut of every shot's final render, identified by a content hash.
pub fn assemble_video(job: &Job) -> Video {
    let mut h = Sha256::new();
    for s in &job.shots {
        if let Some(r) = &s.result {
            h.update(r.uri.as_bytes());
            h.update([0]);
        }
    }
    let scheme = if job.sandbox { "sandbox" } else { "https" };
    let host = if job.sandbox {
        "videos"
    } else {
        "videos.aiprod.dev"
    };
    Video {
        uri: format!("{scheme}://{host}/{}.mp4", job.id),
        duration_s: job.shots.iter().map(|s| s.duration_s).sum(),
        sha256: hex::encode(h.finalize()),
        shot_count: job.shots.len() as u32,
    }
}
