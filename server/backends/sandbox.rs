//! Sandbox backends: simulate a provider with its catalog profile (quality), a configurable latency
//! and failure rate, deterministically by seed: the same job, shot, attempt and seed always give the
//! same outcome.

use super::{RenderBackend, RenderError, RenderOutput, RenderRequest};
use crate::domain::Backend;
use sha2::{Digest, Sha256};
use std::time::Duration;

pub struct SandboxBackend {
    pub backend: Backend,
    pub quality: f64,
    pub quality_jitter: f64,
    pub latency: Duration,
    pub failure_rate: f64,
    pub seed: u64,
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
}

#[async_trait::async_trait]
impl RenderBackend for SandboxBackend {
    async fn render(&self, request: &RenderRequest) -> Result<RenderOutput, RenderError> {
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
        Ok(RenderOutput {
            uri: format!(
                "sandbox://{}/{}/{}/{}.mp4",
                self.backend.as_str(),
                request.job_id,
                request.shot_id,
                request.attempt
            ),
            quality: (quality * 1000.0).round() / 1000.0,
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
            duration_s: 5,
            aspect_ratio: Default::default(),
        }
    }

    #[tokio::test]
    async fn deterministic_and_the_failure_rate_holds() {
        let b = SandboxBackend {
            backend: Backend::Runway,
            quality: 0.95,
            quality_jitter: 0.04,
            latency: Duration::ZERO,
            failure_rate: 0.3,
            seed: 7,
        };
        let mut failures = 0;
        for attempt in 0..1000 {
            let a = b.render(&req(attempt)).await;
            let again = b.render(&req(attempt)).await;
            assert_eq!(a.is_ok(), again.is_ok());
            match a {
                Ok(out) => assert!((0.91..=0.95).contains(&out.quality), "{}", out.quality),
                Err(_) => failures += 1,
            }
        }
        assert!(
            (240..=360).contains(&failures),
            "{failures} failures of 1000 at 30 %"
        );
    }
}
