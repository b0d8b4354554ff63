//! Sandbox backends: simulate a provider with its catalog profile (quality), a configurable latency,
//! failure rate and rate of bad outputs, deterministically by seed: the same job, shot, attempt and
//! seed always give the same outcome and the same bytes. Every successful attempt is a real clip: an
//! animatic of the shot (its number and description over the brand palette, its camera move, its
//! exact duration) rendered and encoded by the media seam.

use super::{RenderBackend, RenderError, RenderOutput, RenderRequest};
use crate::config::BadOutputRates;
use crate::domain::Backend;
use crate::domain::manifest::{AspectRatio, Camera};
use crate::domain::media::frame_size;
use aiprod_media::{Animatic, CameraMove, Defect, Format, Media};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub struct SandboxBackend {
    pub backend: Backend,
    pub quality: f64,
    pub quality_jitter: f64,
    pub latency: Duration,
    pub failure_rate: f64,
    pub bad_outputs: BadOutputRates,
    pub seed: u64,
    /// Renders the animatic clips.
    pub media: Arc<dyn Media>,
    /// Shared with the pipeline: bounds CPU-heavy media work across the process.
    pub media_permits: Arc<Semaphore>,
    /// Short side of the clips in pixels, and their frame rate.
    pub short_side: u32,
    pub fps: u32,
    /// Clips already rendered, by their inputs (identical inputs give identical bytes): shared by
    /// the sandbox backends of a process, bounded.
    pub clips: Arc<ClipMemo>,
}

/// Rendered sandbox clips by the digest of everything that goes into them.
/// Rendered clips by their inputs, with each clip's content key.
pub type ClipMemo = quick_cache::sync::Cache<[u8; 32], (bytes::Bytes, super::ContentKey)>;

/// A clip memo holding up to `entries` clips.
pub fn clip_memo(entries: usize) -> Arc<ClipMemo> {
    Arc::new(ClipMemo::new(entries.max(1)))
}

impl SandboxBackend {
    /// A uniform number in [0, 1) derived from the seed and the attempt's identity.
    fn draw(&self, request: &RenderRequest, salt: &str) -> f64 {
        let mut h = Sha256::new();
        h.update(self.seed.to_le_bytes());
        for part in [
            self.backend.as_str(),
            &request.job_id,
            &request.shot_id,
            salt,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(request.attempt.to_le_bytes());
        let d = h.finalize();
        let n = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
        (n >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The bad output this attempt produces, if any (one draw over the configured rates).
    fn defect(&self, request: &RenderRequest) -> Option<Defect> {
        let r = self.draw(request, "defect");
        let b = &self.bad_outputs;
        let mut edge = 0.0;
        for (rate, defect) in [
            (b.black, Defect::Black),
            (b.frozen, Defect::Frozen),
            (b.truncated, Defect::Truncated),
            (b.undecodable, Defect::Undecodable),
        ] {
            edge += rate;
            if r < edge {
                return Some(defect);
            }
        }
        None
    }

    pub fn format(&self, aspect: AspectRatio) -> Format {
        let (width, height) = frame_size(aspect, self.short_side);
        Format {
            width,
            height,
            fps: self.fps,
        }
    }
}

pub fn camera_move(camera: Camera) -> CameraMove {
    match camera {
        Camera::Static => CameraMove::Static,
        Camera::Pan => CameraMove::Pan,
        Camera::Dolly => CameraMove::Dolly,
        Camera::Zoom => CameraMove::Zoom,
        Camera::Orbital => CameraMove::Orbital,
    }
}

#[async_trait::async_trait]
impl RenderBackend for SandboxBackend {
    async fn submit(&self, request: &RenderRequest) -> Result<String, RenderError> {
        let mut h = Sha256::new();
        for part in [self.backend.as_str(), &request.job_id, &request.shot_id] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(request.attempt.to_le_bytes());
        Ok(format!("sbx_{}", &hex::encode(h.finalize())[..24]))
    }

    async fn finish(
        &self,
        request: &RenderRequest,
        _task_id: &str,
    ) -> Result<RenderOutput, RenderError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.draw(request, "fail") < self.failure_rate {
            return Err(RenderError::Provider(format!(
                "sandbox {} simulated failure",
                self.backend.as_str()
            )));
        }
        let quality =
            (self.quality - self.quality_jitter * self.draw(request, "quality")).clamp(0.0, 1.0);
        let format = self.format(request.aspect_ratio);
        let defect = self.defect(request);
        // Everything the animatic is drawn from (the backend and attempt only decide the outcome).
        let memo_key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(self.seed.to_le_bytes());
            h.update(format!(
                "{}/{}|{}|{:?}|{:?}|{:?}|{}x{}@{}|",
                request.shot_number,
                request.shot_count,
                request.duration_s,
                request.camera,
                request.palette,
                defect,
                format.width,
                format.height,
                format.fps
            ));
            h.update(request.prompt.as_bytes());
            h.finalize().into()
        };
        // Concurrent attempts with the same inputs wait for the first one's render (single flight).
        let guard = match self.clips.get_value_or_guard_async(&memo_key).await {
            Ok((clip, key)) => {
                return Ok(RenderOutput {
                    clip,
                    clip_key: Some(key),
                    quality: (quality * 1000.0).round() / 1000.0,
                    exact_size: Some((format.width, format.height)),
                });
            }
            Err(guard) => guard,
        };
        let media = self.media.clone();
        let request = request.clone();
        let seed = self.seed;
        let _permit = self
            .media_permits
            .acquire()
            .await
            .map_err(|_| RenderError::Provider("shutting down".into()))?;
        // The clip's content key is hashed on the media thread too, off the runtime.
        let (clip, key) = crate::media_threads::run(move || {
            let clip = media.render_animatic(
                &Animatic {
                    shot_number: request.shot_number,
                    shot_count: request.shot_count,
                    description: &request.prompt,
                    duration_ms: u64::from(request.duration_s) * 1000,
                    camera: camera_move(request.camera),
                    palette: &request.palette,
                    format,
                    seed,
                },
                defect,
            )?;
            let key = super::content_key(&[&clip]);
            Ok::<_, aiprod_media::MediaError>((bytes::Bytes::from(clip), key))
        })
        .await
        .map_err(|e| RenderError::Provider(format!("sandbox render task failed: {e}")))?
        .map_err(|e| RenderError::Provider(format!("sandbox render failed: {e}")))?;
        let _ = guard.insert((clip.clone(), key));
        Ok(RenderOutput {
            clip,
            clip_key: Some(key),
            quality: (quality * 1000.0).round() / 1000.0,
            exact_size: Some((format.width, format.height)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(attempt: u32) -> RenderRequest {
        RenderRequest {
            job_id: "job".into(),
            shot_id: "shot-01".into(),
            attempt,
            prompt: "p".into(),
            duration_s: 1,
            aspect_ratio: Default::default(),
            camera: Camera::Pan,
            shot_number: 1,
            shot_count: 1,
            palette: vec![[200, 40, 40]],
        }
    }

    fn sandbox(failure_rate: f64, bad_outputs: BadOutputRates) -> SandboxBackend {
        SandboxBackend {
            backend: Backend::Runway,
            quality: 0.95,
            quality_jitter: 0.04,
            latency: Duration::ZERO,
            failure_rate,
            bad_outputs,
            seed: 7,
            media: Arc::new(aiprod_media::PureMedia::default()),
            media_permits: Arc::new(Semaphore::new(2)),
            short_side: 32,
            fps: 8,
            clips: clip_memo(16),
        }
    }

    #[tokio::test]
    async fn deterministic_and_the_failure_rate_holds() {
        let b = sandbox(0.3, BadOutputRates::default());
        let mut failures = 0;
        for attempt in 0..200 {
            let task = b.submit(&req(attempt)).await.unwrap();
            assert_eq!(task, b.submit(&req(attempt)).await.unwrap());
            let a = b.finish(&req(attempt), &task).await;
            let again = b.finish(&req(attempt), &task).await;
            assert_eq!(a.is_ok(), again.is_ok());
            match (a, again) {
                (Ok(out), Ok(again)) => {
                    assert!((0.91..=0.95).contains(&out.quality), "{}", out.quality);
                    assert_eq!(out.clip, again.clip, "same attempt, same bytes");
                    assert_eq!(&out.clip[4..8], b"ftyp");
                }
                _ => failures += 1,
            }
        }
        assert!(
            (40..=80).contains(&failures),
            "{failures} failures of 200 at 30 %"
        );
    }

    #[test]
    fn bad_outputs_follow_their_rates() {
        let b = sandbox(
            0.0,
            BadOutputRates {
                black: 0.25,
                frozen: 0.25,
                truncated: 0.25,
                undecodable: 0.0,
            },
        );
        let mut counts = std::collections::BTreeMap::new();
        for attempt in 0..2000 {
            *counts
                .entry(format!("{:?}", b.defect(&req(attempt))))
                .or_insert(0) += 1;
        }
        for (kind, n) in &counts {
            assert!((400..=600).contains(n), "{kind}: {n} of 2000 ({counts:?})");
        }
        assert_eq!(
            counts.len(),
            4,
            "black, frozen, truncated and none: {counts:?}"
        );
    }
}
