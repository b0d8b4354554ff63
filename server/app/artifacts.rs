//! Artifacts: storing clips, cuts and posters (content-addressed, metadata read from the bytes),
//! naming them as ByteStream resources, and reading them back for a tenant.
//!
//! Resource names (aiprod/v1/job.proto, `VideoArtifact`):
//! `jobs/{job_id}/video`, `jobs/{job_id}/video/poster`, `jobs/{job_id}/shots/{shot_id}/clip`,
//! `jobs/{job_id}/shots/{shot_id}/poster`, each optionally pinned with `@{sha256}`.

use super::{App, Caller};
use crate::domain::job::Job;
use crate::domain::media::{Artifact, Poster};
use crate::error::{Error, Result};
use aiprod_artifacts::{ArtifactError, ArtifactStore, StoredObject};
use aiprod_media::MediaError;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

/// Bytes per ByteStream `ReadResponse` (fastest on loopback, well under the message limit).
pub const READ_CHUNK: u64 = 256 * 1024;

/// Longest resource name accepted (job and shot ids are short).
const MAX_NAME_LEN: usize = 300;

pub fn video_name(job_id: &str) -> String {
    format!("jobs/{job_id}/video")
}

pub fn shot_clip_name(job_id: &str, shot_id: &str) -> String {
    format!("jobs/{job_id}/shots/{shot_id}/clip")
}

/// The poster of a video or clip resource: `jobs/{job}/video/poster`, `jobs/{job}/shots/{shot}/poster`.
pub fn poster_name(resource_name: &str) -> String {
    match resource_name.strip_suffix("/clip") {
        Some(shot) => format!("{shot}/poster"),
        None => format!("{resource_name}/poster"),
    }
}

/// Presigned download URLs by artifact key: (url, expiry in unix ms).
pub type DownloadLinks = HashMap<String, (String, i64)>;

/// What a resource name points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceName {
    pub job_id: String,
    pub target: Target,
    /// `@{sha256}`: the version the caller expects.
    pub pinned: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Video,
    VideoPoster,
    ShotClip(String),
    ShotPoster(String),
}

/// Parses a ByteStream resource name; the error names the field without echoing the input.
pub fn parse_resource_name(name: &str) -> Result<ResourceName> {
    let bad = || {
        Error::invalid(
            "resource_name",
            "must be jobs/{job_id}/video, jobs/{job_id}/video/poster, jobs/{job_id}/shots/{shot_id}/clip or jobs/{job_id}/shots/{shot_id}/poster, optionally followed by @{sha256}",
        )
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(bad());
    }
    let (path, pinned) = match name.split_once('@') {
        Some((path, sha)) => {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            (path, Some(sha.to_ascii_lowercase()))
        }
        None => (name, None),
    };
    let id_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let parts: Vec<&str> = path.split('/').collect();
    let target = match parts.as_slice() {
        ["jobs", job, "video"] if id_ok(job) => Target::Video,
        ["jobs", job, "video", "poster"] if id_ok(job) => Target::VideoPoster,
        ["jobs", job, "shots", shot, "clip"] if id_ok(job) && id_ok(shot) => {
            Target::ShotClip(shot.to_string())
        }
        ["jobs", job, "shots", shot, "poster"] if id_ok(job) && id_ok(shot) => {
            Target::ShotPoster(shot.to_string())
        }
        _ => return Err(bad()),
    };
    Ok(ResourceName {
        job_id: parts[1].to_string(),
        target,
        pinned,
    })
}

/// An object to stream: its key and the byte range asked for.
#[derive(Clone, Debug)]
pub struct ReadPlan {
    pub key: String,
    pub start: u64,
    pub end: u64,
}

/// The stored object behind a resource of a job, if it exists yet.
fn locate(job: &Job, target: &Target) -> Option<(String, String, u64)> {
    let artifact = |a: &Artifact| (a.key.clone(), a.sha256.clone(), a.size);
    let poster = |p: &Poster| (p.key.clone(), p.sha256.clone(), p.size);
    match target {
        Target::Video => job.video.as_ref()?.artifact.as_ref().map(artifact),
        Target::VideoPoster => job
            .video
            .as_ref()?
            .artifact
            .as_ref()?
            .poster
            .as_ref()
            .map(poster),
        Target::ShotClip(shot) | Target::ShotPoster(shot) => {
            let s = job.shots.iter().find(|s| &s.shot_id == shot)?;
            let a = s.result.as_ref()?.artifact.as_ref()?;
            match target {
                Target::ShotClip(_) => Some(artifact(a)),
                _ => a.poster.as_ref().map(poster),
            }
        }
    }
}

pub fn artifact_error(e: ArtifactError) -> Error {
    match e {
        ArtifactError::Unavailable(message) => Error::Unavailable {
            message: format!("artifact store unavailable: {message}"),
            retry_after: Duration::from_secs(1),
        },
        other => Error::internal(anyhow::anyhow!("artifact store: {other}")),
    }
}

pub fn media_error(e: MediaError) -> Error {
    Error::internal(anyhow::anyhow!("media: {e}"))
}

impl App {
    /// Resolves a ByteStream read for the caller: another tenant's job, an unknown job and a file
    /// that does not exist (yet) are all NOT_FOUND.
    pub async fn open_read(
        &self,
        caller: &Caller,
        resource_name: &str,
        read_offset: i64,
        read_limit: i64,
    ) -> Result<ReadPlan> {
        let name = parse_resource_name(resource_name)?;
        if read_limit < 0 {
            return Err(Error::invalid("read_limit", "must not be negative"));
        }
        let job = self.job(caller, &name.job_id).await?;
        let (key, sha256, size) =
            locate(&job, &name.target).ok_or_else(|| Error::not_found("artifact"))?;
        if let Some(pinned) = &name.pinned
            && pinned != &sha256
        {
            return Err(Error::precondition(
                "VERSION",
                "resource_name",
                "the file was replaced by a newer version (a revision); read it again without the pinned version",
            ));
        }
        if read_offset < 0 || read_offset as u64 > size {
            return Err(Error::OutOfRange {
                field: "read_offset",
                message: format!("must be within 0..={size}"),
            });
        }
        let start = read_offset as u64;
        let end = if read_limit == 0 {
            size
        } else {
            start.saturating_add(read_limit as u64).min(size)
        };
        Ok(ReadPlan { key, start, end })
    }

    /// Reads one chunk of a planned read.
    pub async fn read_chunk(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        self.artifacts
            .read_range(key, range)
            .await
            .map_err(artifact_error)
    }

    /// Stores a clip or cut and its poster; metadata comes from probing the bytes.
    /// Stores a video (`key`: its content key, when known).
    pub async fn store_video(
        &self,
        bytes: bytes::Bytes,
        key: Option<super::memo::Key>,
    ) -> Result<Artifact> {
        // These exact bytes are stored already (content-addressed, never deleted): same artifact.
        let key = key.unwrap_or_else(|| super::memo::key(&[&bytes]));
        let guard = match self.memo.stored.get_value_or_guard_async(&key).await {
            Ok(artifact) => return Ok(artifact),
            Err(guard) => guard,
        };
        let artifact = self.probe_and_store(bytes).await?;
        let _ = guard.insert(artifact.clone());
        Ok(artifact)
    }

    /// The artifact store when it is a local directory, for media threads to read and write
    /// themselves (with `futures::executor::block_on`: without a runtime on the thread,
    /// object_store's local store does its I/O inline). Storing a video hashes it twice (its key,
    /// then the read-back check), a few milliseconds of CPU that on the runtime, or on tokio's
    /// blocking threads at the runtime's priority, would delay the events streamed meanwhile.
    /// `None` for a remote store, which needs the runtime's HTTP client.
    pub(super) fn local_artifacts(&self) -> Option<ArtifactStore> {
        (!self.artifacts.is_remote()).then(|| self.artifacts.clone())
    }

    async fn probe_and_store(&self, bytes: bytes::Bytes) -> Result<Artifact> {
        let media = self.media.clone();
        let poster_width = self.config.media.poster_width;
        let _permit = self.media_permit().await?;
        // A local directory is written on the media thread (`local_artifacts`); a remote store
        // below, from the runtime.
        let local = self.local_artifacts();
        let (bytes, info, poster, stored) = crate::media_threads::run(move || {
            let info = media.probe(&bytes)?;
            let poster = media.poster(&bytes, poster_width)?;
            let Some(store) = local else {
                return Ok((bytes, info, poster, None));
            };
            let stored = futures::executor::block_on(put_poster_and_video(
                &store,
                poster,
                bytes.clone(),
                &info.mime_type,
            ));
            Ok::<_, MediaError>((bytes, info, Vec::new(), Some(stored)))
        })
        .await
        .map_err(Error::internal)?
        .map_err(media_error)?;
        let stored = match stored {
            Some(stored) => stored,
            None => put_poster_and_video(&self.artifacts, poster, bytes, &info.mime_type).await,
        };
        let (poster, stored) = stored.map_err(artifact_error)?;
        Ok(Artifact {
            key: stored.key,
            sha256: stored.sha256,
            size: stored.size,
            width: info.width,
            height: info.height,
            fps: info.fps,
            frame_count: info.frame_count,
            duration_ms: info.duration_ms,
            codec: info.codec,
            mime_type: info.mime_type,
            poster: Some(Poster {
                key: poster.key,
                sha256: poster.sha256,
                size: poster.size,
                mime_type: "image/png".into(),
            }),
        })
    }

    /// Presigned URLs of a job's files when the store is remote (S3/GCS/Azure); none locally.
    pub async fn download_links(&self, job: &Job) -> DownloadLinks {
        let mut links = DownloadLinks::new();
        if !self.artifacts.is_remote() {
            return links;
        }
        let expiry = Duration::from_secs(self.config.artifacts.presign_expiry_s);
        let keys = job
            .video
            .iter()
            .filter_map(|v| v.artifact.as_ref())
            .chain(
                job.shots
                    .iter()
                    .filter_map(|s| s.result.as_ref()?.artifact.as_ref()),
            )
            .map(|a| a.key.clone());
        for key in keys {
            match self.artifacts.presigned_get(&key, expiry).await {
                Ok(Some((url, expires))) => {
                    let ms = expires
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    links.insert(key, (url.to_string(), ms));
                }
                Ok(None) => {}
                // A missing link is not worth failing GetJob: ByteStream still serves the file.
                Err(e) => tracing::warn!(error = %e, "presigning a download URL failed"),
            }
        }
        links
    }
}

/// Stores a video's poster, then the video (their keys are their content's hashes).
async fn put_poster_and_video(
    store: &ArtifactStore,
    poster: Vec<u8>,
    video: bytes::Bytes,
    mime_type: &str,
) -> std::result::Result<(StoredObject, StoredObject), ArtifactError> {
    let poster = store
        .put(bytes::Bytes::from(poster), "image/png", "png")
        .await?;
    let video = store.put(video, mime_type, "mp4").await?;
    Ok((poster, video))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn poster_names_parse_back_to_posters() {
        let clip = poster_name(&shot_clip_name("j", "shot-01"));
        assert_eq!(clip, "jobs/j/shots/shot-01/poster");
        assert_eq!(
            parse_resource_name(&clip).unwrap().target,
            Target::ShotPoster("shot-01".into())
        );
        let video = poster_name(&video_name("j"));
        assert_eq!(
            parse_resource_name(&video).unwrap().target,
            Target::VideoPoster
        );
    }

    #[test]
    fn resource_names_parse() {
        let n = parse_resource_name("jobs/job_1/video").unwrap();
        assert_eq!((n.job_id.as_str(), &n.target), ("job_1", &Target::Video));
        assert_eq!(
            parse_resource_name("jobs/j/shots/shot-01/clip")
                .unwrap()
                .target,
            Target::ShotClip("shot-01".into())
        );
        assert_eq!(
            parse_resource_name("jobs/j/shots/shot-01/poster")
                .unwrap()
                .target,
            Target::ShotPoster("shot-01".into())
        );
        assert_eq!(
            parse_resource_name("jobs/j/video/poster").unwrap().target,
            Target::VideoPoster
        );
        let sha = "A".repeat(64);
        assert_eq!(
            parse_resource_name(&format!("jobs/j/video@{sha}"))
                .unwrap()
                .pinned,
            Some("a".repeat(64))
        );
        for bad in [
            "",
            "jobs//video",
            "jobs/j/video/",
            "jobs/j/../video",
            "jobs/j/shots/s/clip/x",
            "jobs/j/video@123",
            "tenants/t/jobs/j/video",
            "jobs/j k/video",
        ] {
            assert!(parse_resource_name(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Any string gives a bounded answer, and the error never echoes the input.
        #[test]
        fn any_name_is_parsed_or_refused_without_echo(name in ".{0,400}") {
            if let Err(e) = parse_resource_name(&name) {
                let message = e.to_string();
                prop_assert!(message.len() < 400);
                if name.len() > 8 {
                    prop_assert!(!message.contains(&name));
                }
            }
        }
    }
}
