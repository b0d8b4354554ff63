//! A job as the pipeline sees it: its request, its state, manifest, quote and render progress,
//! and the events and ledger lines each change produces. Every mutation here is pure: the store
//! persists the job, its new events and its new ledger lines in one transaction.

use super::Money;
use super::catalog::{Backend, Catalog};
use super::manifest::{AspectRatio, Manifest};
use super::media::{Artifact, Measurement};
use super::pricing::{Quote, certified_bill};
use super::state::{IllegalTransition, JobState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the partner asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub preset_id: String,
    pub brief: String,
    pub brand_id: String,
    pub duration_s: u32,
    pub aspect_ratio: AspectRatio,
    pub language: String,
    pub budget: Option<Money>,
    pub auto_approve: bool,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    AllBackendsFailed,
    BudgetExhausted,
    PlanningFailed,
    Internal,
}

/// The final cut of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Video {
    /// ByteStream resource name (`jobs/{job_id}/video`).
    pub uri: String,
    pub duration_s: u32,
    pub sha256: String,
    pub shot_count: u32,
    /// The stored file (absent only in jobs delivered before artifacts existed).
    #[serde(default)]
    pub artifact: Option<Artifact>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderResult {
    pub backend: Backend,
    pub quality: f64,
    pub cost: Money,
    /// ByteStream resource name of the clip (`jobs/{job_id}/shots/{shot_id}/clip`).
    pub uri: String,
    pub attempt: u32,
    /// The stored clip.
    #[serde(default)]
    pub artifact: Option<Artifact>,
    #[serde(default)]
    pub measurement: Option<Measurement>,
}

/// A render task a backend accepted, committed before waiting on it so that a restart resumes
/// polling the same task instead of paying for a second one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingTask {
    pub backend: Backend,
    pub attempt: u32,
    /// The provider's task id.
    pub task_id: String,
    pub submitted_ms: i64,
}

/// One shot's progress through rendering and quality checking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShotProgress {
    pub shot_id: String,
    pub description: String,
    pub duration_s: u32,
    pub preferred: Option<Backend>,
    /// Attempts started so far, over the shot's life (fallbacks, re-renders, revisions).
    pub attempts: u32,
    /// Backends that failed in the current round (cleared when the shot renders).
    pub failed: Vec<Backend>,
    pub result: Option<RenderResult>,
    /// Set when the shot must be rendered (again): initial render, quality re-render or revision.
    pub needs_render: bool,
    /// Whether this round's render is a re-render (ledger kind).
    pub rerender: bool,
    /// Backend chosen for a quality re-render.
    pub rerender_on: Option<Backend>,
    pub quality_checked: bool,
    pub quality_rerendered: bool,
    pub passed: Option<bool>,
    /// The attempt in flight, once its backend accepted it.
    #[serde(default)]
    pub task: Option<PendingTask>,
    /// The shot's camera move (from the manifest).
    #[serde(default)]
    pub camera: Option<super::manifest::Camera>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    StateChanged {
        from: Option<JobState>,
        to: JobState,
    },
    ManifestReady {
        revision: u32,
        shot_count: u32,
        quote: Money,
        brand_cache_hit: bool,
    },
    ManifestUpdated {
        revision: u32,
        quote: Money,
        changed_fields: Vec<String>,
    },
    ShotStarted {
        shot_id: String,
        backend: Backend,
        attempt: u32,
    },
    ShotRendered {
        shot_id: String,
        backend: Backend,
        duration_s: u32,
        cost: Money,
        quality: f64,
        attempt: u32,
        #[serde(default)]
        clip: Option<Artifact>,
        #[serde(default)]
        measurement: Option<Measurement>,
    },
    BackendFallback {
        shot_id: String,
        from: Backend,
        to: Option<Backend>,
        reason: String,
    },
    CostUpdated {
        metered: Money,
        quote: Money,
    },
    QualityChecked {
        shot_id: String,
        quality: f64,
        threshold: f64,
        passed: bool,
        rerender: bool,
        #[serde(default)]
        measurement: Option<Measurement>,
        #[serde(default)]
        backend: Option<Backend>,
        #[serde(default)]
        attempt: u32,
    },
    BudgetAlert {
        threshold_percent: u32,
        spent: Money,
        budget: Money,
    },
    Delivered {
        video: Video,
        billed: Money,
        sla_met: bool,
    },
    Failed {
        reason: FailureReason,
        message: String,
    },
    Cancelled {
        reason: String,
        billed: Money,
    },
}

/// A committed event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub job_id: String,
    pub seq: u64,
    pub at_ms: i64,
    pub state: JobState,
    pub kind: EventKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    Planner,
    Render,
    Rerender,
}

/// One billable call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub kind: LedgerKind,
    pub shot_id: Option<String>,
    pub backend: Option<Backend>,
    pub seconds: u32,
    pub amount: Money,
    pub attempt: u32,
    pub succeeded: bool,
    pub at_ms: i64,
    /// For renders: what was measured on the clip.
    #[serde(default)]
    pub measurement: Option<Measurement>,
}

/// The job document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub tenant_id: String,
    pub request_id: String,
    pub fingerprint: String,
    pub spec: JobSpec,
    pub sandbox: bool,
    pub state: JobState,
    pub quality_floor: f64,
    pub tolerance_percent: u32,
    pub final_review: bool,
    pub fast_track: bool,
    /// Steered to economy backends: the tenant had spent 90 % of its monthly budget at creation.
    #[serde(default)]
    pub economy: bool,
    pub manifest: Option<Manifest>,
    pub quote: Option<Quote>,
    pub brand_cache_hit: bool,
    pub shots: Vec<ShotProgress>,
    pub metered: Money,
    /// Metered amount of successful calls: what can be billed (failed attempts are ours).
    pub billable: Money,
    pub failure: Option<FailureReason>,
    pub status_message: String,
    pub video: Option<Video>,
    pub sla_met: Option<bool>,
    pub billed: Option<Money>,
    pub last_seq: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Lines this job has in the ledger (numbers the next ones without counting them); `None` in
    /// documents written before it was kept.
    #[serde(default)]
    pub ledger_lines: Option<u32>,
    /// Events and ledger lines produced by the current mutation, not yet committed.
    #[serde(skip)]
    pub pending_events: Vec<(JobState, EventKind)>,
    #[serde(skip)]
    pub pending_ledger: Vec<LedgerEntry>,
    /// Set by a mutation that changes the document without an event (e.g. recording a provider
    /// task id): the store writes it anyway.
    #[serde(skip)]
    pub dirty: bool,
}

impl Job {
    pub fn emit(&mut self, kind: EventKind) {
        self.pending_events.push((self.state, kind));
    }

    /// A non-terminal transition, announced by a StateChanged event.
    pub fn move_to(&mut self, to: JobState) -> Result<(), IllegalTransition> {
        let from = self.state;
        self.state = from.move_to(to)?;
        if !to.is_terminal() {
            self.emit(EventKind::StateChanged {
                from: Some(from),
                to,
            });
        }
        Ok(())
    }

    /// Records a billable call and announces the new metered total.
    pub fn charge(&mut self, entry: LedgerEntry) {
        self.metered += entry.amount;
        if entry.succeeded {
            self.billable += entry.amount;
        }
        self.pending_ledger.push(entry);
        let quote = self.quote.as_ref().map(|q| q.total).unwrap_or_default();
        self.emit(EventKind::CostUpdated {
            metered: self.metered,
            quote,
        });
    }

    /// What the partner is billed now: the billable metered amount capped by the guarantee.
    pub fn current_bill(&self) -> Money {
        match &self.quote {
            Some(q) => certified_bill(self.billable, q),
            None => self.billable,
        }
    }

    pub fn fail(
        &mut self,
        reason: FailureReason,
        message: impl Into<String>,
    ) -> Result<(), IllegalTransition> {
        self.state = self.state.move_to(JobState::Failed)?;
        let message = message.into();
        self.failure = Some(reason);
        self.status_message = message.clone();
        self.billed = Some(self.current_bill());
        self.emit(EventKind::Failed { reason, message });
        Ok(())
    }

    pub fn cancel(&mut self, reason: impl Into<String>) -> Result<(), IllegalTransition> {
        self.state = self.state.move_to(JobState::Cancelled)?;
        let reason = reason.into();
        let billed = self.current_bill();
        self.billed = Some(billed);
        self.status_message = reason.clone();
        self.emit(EventKind::Cancelled { reason, billed });
        Ok(())
    }

    pub fn deliver(&mut self, video: Video) -> Result<(), IllegalTransition> {
        self.state = self.state.move_to(JobState::Delivered)?;
        let billed = self.current_bill();
        let sla_met = self.sla_met.unwrap_or(true);
        self.billed = Some(billed);
        self.video = Some(video.clone());
        self.emit(EventKind::Delivered {
            video,
            billed,
            sla_met,
        });
        Ok(())
    }

    /// Whether the assembled cut waits for the partner's final review. `auto_approve` skips only
    /// the manifest review: a preset with a final review always holds its cut for it.
    pub fn holds_for_final_review(&self) -> bool {
        self.final_review
    }

    /// Why shot `index` has no backend left, with a message naming the real cause: the job's
    /// budget when what is left of it cannot pay the cheapest backend able to render the shot,
    /// otherwise the failures of every able backend.
    pub fn no_backend_failure(&self, catalog: &Catalog, index: usize) -> (FailureReason, String) {
        let shot = &self.shots[index];
        let cheapest = catalog
            .backends
            .iter()
            .filter(|b| b.max_shot_s >= shot.duration_s)
            .map(|b| b.shot_cost(shot.duration_s))
            .min();
        if let (Some(budget), Some(cheapest)) = (self.spec.budget, cheapest) {
            let left = budget - self.billable;
            if cheapest > left {
                return (
                    FailureReason::BudgetExhausted,
                    format!(
                        "shot {} needs at least {cheapest} and {left} of the job's budget of {budget} is left",
                        shot.shot_id
                    ),
                );
            }
        }
        let tried: Vec<&str> = shot.failed.iter().map(|b| b.as_str()).collect();
        (
            FailureReason::AllBackendsFailed,
            if tried.is_empty() {
                format!("no backend is available to render shot {}", shot.shot_id)
            } else {
                format!(
                    "every backend able to render shot {} failed (tried: {})",
                    shot.shot_id,
                    tried.join(", ")
                )
            },
        )
    }

    pub fn shots_rendered(&self) -> u32 {
        self.shots
            .iter()
            .filter(|s| s.result.is_some() && !s.needs_render)
            .count() as u32
    }

    /// Freezes the approved manifest into the render plan.
    pub fn start_render_plan(&mut self) {
        if let Some(m) = &mut self.manifest {
            m.approved = true;
            self.shots = m
                .shots
                .iter()
                .map(|s| ShotProgress {
                    camera: Some(s.camera),
                    task: None,
                    shot_id: s.shot_id.clone(),
                    description: s.description.clone(),
                    duration_s: s.duration_s,
                    preferred: s.backend,
                    attempts: 0,
                    failed: vec![],
                    result: None,
                    needs_render: true,
                    rerender: false,
                    rerender_on: None,
                    quality_checked: false,
                    quality_rerendered: false,
                    passed: None,
                })
                .collect();
        }
    }
}
