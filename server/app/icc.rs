//! Interactive Creative Control: manifest review, edits and approval; final review; brand markers.

use super::estimate::quote_refusal;
use super::{App, Caller};
use crate::domain::JobState;
use crate::domain::job::{EventKind, Job};
use crate::domain::manifest::{AspectRatio, ManifestEdit, Markers, Shot, validate_shots};
use crate::domain::pricing::{self, QuoteParams};
use crate::domain::validate::{Violations, echo};
use crate::error::{Error, Result};
use crate::store::now_ms;
use std::sync::Arc;

/// The fields an UpdateManifest changes (those named in its mask).
#[derive(Default)]
pub struct ManifestPatch {
    pub shots: Option<Vec<Shot>>,
    pub aspect_ratio: Option<AspectRatio>,
    pub audio_style: Option<String>,
    pub changed_fields: Vec<String>,
    /// Problems the transport already found; reported together with the domain's.
    pub violations: Violations,
}

fn wrong_state(job: &Job, needed: JobState) -> Error {
    Error::precondition(
        "STATE",
        format!("jobs/{}", job.id),
        format!(
            "the job is {}; this needs {}",
            job.state.as_str(),
            needed.as_str()
        ),
    )
}

fn check_etag(job: &Job, etag: &str) -> Result<()> {
    let current = job
        .manifest
        .as_ref()
        .map(|m| m.etag(&job.id))
        .unwrap_or_default();
    if current != etag {
        return Err(Error::Aborted(format!(
            "the manifest changed (etag {} is stale; current is {current}): read it again",
            echo(etag)
        )));
    }
    Ok(())
}

impl App {
    /// The job, once it has a manifest.
    pub async fn manifest(&self, caller: &Caller, job_id: &str) -> Result<Job> {
        let job = self.job(caller, job_id).await?;
        if job.manifest.is_none() {
            return Err(Error::not_found("manifest"));
        }
        Ok(job)
    }

    pub async fn update_manifest(
        &self,
        caller: &Caller,
        job_id: &str,
        etag: &str,
        patch: ManifestPatch,
    ) -> Result<Job> {
        let catalog = &self.config.catalog;
        let excluded = self.unavailable_backends(caller.sandbox);
        let not_configured = self.not_configured(caller.sandbox);
        let cooldown = self.circuit_cooldown();
        // Validate everything first (the duration never changes, so no transaction is needed).
        let duration_s = self.job(caller, job_id).await?.spec.duration_s;
        let mut v = patch.violations;
        if let Some(shots) = &patch.shots {
            validate_shots(shots, duration_s, catalog, "manifest.", &mut v);
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let ((), job) = self
            .store
            .update_job(Some(&caller.tenant_id), job_id, |job| {
                if job.state != JobState::AwaitingApproval {
                    return Err(wrong_state(job, JobState::AwaitingApproval));
                }
                check_etag(job, etag)?;
                let (Some(manifest), Some(old_quote)) = (job.manifest.clone(), job.quote.clone())
                else {
                    return Err(Error::internal(anyhow::anyhow!(
                        "AWAITING_APPROVAL job without manifest"
                    )));
                };
                let mut manifest = manifest;
                if let Some(mut shots) = patch.shots.clone() {
                    // New shots get fresh ids, above every id the manifest has used.
                    let number = |id: &str| {
                        id.strip_prefix("shot-")
                            .and_then(|n| n.parse::<usize>().ok())
                    };
                    let first = manifest
                        .shots
                        .iter()
                        .chain(shots.iter())
                        .filter_map(|s| number(&s.shot_id))
                        .max()
                        .unwrap_or(0)
                        + 1;
                    for (n, shot) in
                        (first..).zip(shots.iter_mut().filter(|s| s.shot_id.is_empty()))
                    {
                        shot.shot_id = format!("shot-{n:02}");
                    }
                    manifest.shots = shots;
                }
                if let Some(a) = patch.aspect_ratio {
                    manifest.aspect_ratio = a;
                }
                if let Some(a) = patch.audio_style.clone() {
                    manifest.audio_style = a;
                }
                let preset = catalog
                    .preset(&job.spec.preset_id)
                    .ok_or_else(|| Error::internal(anyhow::anyhow!("preset vanished")))?;
                let quote = pricing::quote(
                    catalog,
                    &manifest.shots,
                    &QuoteParams {
                        quality_floor: job.quality_floor,
                        cost_cap: preset.cost_cap(job.spec.duration_s),
                        budget: job.spec.budget,
                        planner: old_quote.planner,
                        tolerance_percent: job.tolerance_percent,
                        excluded: &excluded,
                        economy: job.economy,
                    },
                )
                .map_err(|e| quote_refusal(e, &not_configured, cooldown))?;
                manifest.revision += 1;
                manifest.history.push(ManifestEdit {
                    revision: manifest.revision,
                    actor: caller.key_id.clone(),
                    at_ms: now_ms(),
                    changed_fields: patch.changed_fields.clone(),
                });
                job.emit(EventKind::ManifestUpdated {
                    revision: manifest.revision,
                    quote: quote.total,
                    changed_fields: patch.changed_fields.clone(),
                });
                job.manifest = Some(manifest);
                job.quote = Some(quote);
                Ok(())
            })
            .await?;
        Ok(job)
    }

    pub async fn approve_manifest(
        self: &Arc<Self>,
        caller: &Caller,
        job_id: &str,
        etag: &str,
    ) -> Result<Job> {
        let ((), job) = self
            .store
            .update_job(Some(&caller.tenant_id), job_id, |job| {
                if job.state != JobState::AwaitingApproval {
                    return Err(wrong_state(job, JobState::AwaitingApproval));
                }
                check_etag(job, etag)?;
                job.start_render_plan();
                job.move_to(JobState::Rendering).map_err(Error::internal)
            })
            .await?;
        tracing::info!(job_id = %job.id, "manifest approved");
        self.drive(job.id.clone());
        Ok(job)
    }

    pub async fn approve_delivery(&self, caller: &Caller, job_id: &str) -> Result<Job> {
        let ((), job) = self
            .store
            .update_job(Some(&caller.tenant_id), job_id, |job| {
                if job.state != JobState::AwaitingFinalApproval {
                    return Err(wrong_state(job, JobState::AwaitingFinalApproval));
                }
                // The cut the partner reviewed is the one delivered.
                let video = job.video.clone().ok_or_else(|| {
                    Error::internal(anyhow::anyhow!(
                        "job {} awaits final approval without a cut",
                        job.id
                    ))
                })?;
                job.deliver(video).map_err(Error::internal)
            })
            .await?;
        Ok(job)
    }

    pub async fn request_revision(
        self: &Arc<Self>,
        caller: &Caller,
        job_id: &str,
        shot_ids: &[String],
        notes: &str,
    ) -> Result<Job> {
        let ((), job) = self
            .store
            .update_job(Some(&caller.tenant_id), job_id, |job| {
                if job.state != JobState::AwaitingFinalApproval {
                    return Err(wrong_state(job, JobState::AwaitingFinalApproval));
                }
                let mut v = Violations::new();
                for (i, id) in shot_ids.iter().enumerate() {
                    v.check(
                        job.shots.iter().any(|s| &s.shot_id == id),
                        format!("shot_ids[{i}]"),
                        "is not a shot of this job",
                    );
                }
                v.finish().map_err(Error::InvalidArgument)?;
                for shot in job
                    .shots
                    .iter_mut()
                    .filter(|s| shot_ids.contains(&s.shot_id))
                {
                    shot.needs_render = true;
                    shot.rerender = true;
                    shot.rerender_on = None;
                    shot.failed.clear();
                    shot.quality_checked = false;
                    shot.quality_rerendered = false;
                    shot.passed = None;
                    if !notes.is_empty() {
                        shot.description = format!("{} Revision notes: {notes}", shot.description);
                    }
                }
                job.move_to(JobState::Rendering).map_err(Error::internal)
            })
            .await?;
        self.drive(job.id.clone());
        Ok(job)
    }

    pub async fn brand_markers(&self, caller: &Caller, brand_id: &str) -> Result<(Markers, i64)> {
        self.store
            .brand_markers(&caller.tenant_id, brand_id, now_ms())
            .await?
            .ok_or_else(|| Error::not_found("brand markers"))
    }

    pub async fn put_brand_markers(
        &self,
        caller: &Caller,
        brand_id: &str,
        markers: Markers,
    ) -> Result<(Markers, i64)> {
        let expires = now_ms() + i64::from(self.config.catalog.brand_cache_ttl_hours) * 3_600_000;
        self.store
            .put_brand_markers(&caller.tenant_id, brand_id, &markers, expires)
            .await?;
        Ok((markers, expires))
    }

    pub async fn invalidate_brand_markers(&self, caller: &Caller, brand_id: &str) -> Result<bool> {
        self.store
            .delete_brand_markers(&caller.tenant_id, brand_id, now_ms())
            .await
    }
}
