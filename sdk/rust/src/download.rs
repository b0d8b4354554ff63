//! Downloads of a job's files over `google.bytestream.ByteStream/Read`: streamed to a `.part` file
//! next to the destination, resumed from the bytes already written after a dropped connection,
//! pinned to one version (`@sha256`) so a resumed read never mixes two files, verified (size and
//! SHA-256) and only then renamed onto the destination. A `.part` left by an interrupted run is
//! resumed too: its bytes are hashed and the read continues after them (the version pin makes
//! sure they belong to the same file; a mismatch fails verification and the part is deleted).

use crate::bytestream::ReadRequest;
use crate::bytestream::byte_stream_client::ByteStreamClient;
use crate::{AuthChannel, Error, pb};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tonic::Code;

/// Retries without progress before a download gives up.
const MAX_STALLED_RETRIES: u32 = 8;

/// Which file of a job.
#[derive(Clone, Debug)]
pub(crate) enum Which {
    Video,
    ShotClip(String),
}

fn artifact_of(job: &pb::Job, which: &Which) -> Option<pb::VideoArtifact> {
    match which {
        Which::Video => job.video.clone(),
        Which::ShotClip(shot) => job
            .shots
            .iter()
            .find(|s| &s.shot_id == shot)
            .and_then(|s| s.clip.clone()),
    }
}

fn not_ready(job: &pb::Job, which: &Which) -> Error {
    let state = pb::JobState::try_from(job.state)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN");
    let what = match which {
        Which::Video => "the video".to_string(),
        Which::ShotClip(s) => format!("the clip of shot {s}"),
    };
    Error::from(tonic::Status::failed_precondition(format!(
        "{what} of job {} is not available yet (job state {state})",
        job.job_id
    )))
}

pub(crate) async fn download(
    client: &crate::Client,
    job_id: &str,
    which: Which,
    path: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<pb::VideoArtifact, Error> {
    let mut restarted = false;
    loop {
        let job = client
            .render()
            .get_job(pb::GetJobRequest {
                job_id: job_id.to_string(),
            })
            .await?
            .into_inner()
            .job
            .unwrap_or_default();
        let artifact = artifact_of(&job, &which).ok_or_else(|| not_ready(&job, &which))?;
        match fetch(client.streaming_channel(), &artifact, path, progress).await {
            // The file was replaced by a revision while we read it: start over once.
            Err(e) if e.code() == Code::FailedPrecondition && !restarted => {
                restarted = true;
                continue;
            }
            other => return other.map(|()| artifact),
        }
    }
}

fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

async fn fetch(
    channel: AuthChannel,
    artifact: &pb::VideoArtifact,
    path: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| {
        Error::from(tonic::Status::unknown(format!(
            "{what} {}: {e}",
            path.display()
        )))
    };
    let part = part_path(path);
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    // Resume a previous run's part file when it is not longer than the file.
    let previous = tokio::fs::read(&part).await.unwrap_or_default();
    let mut file = if !previous.is_empty() && previous.len() as u64 <= artifact.size_bytes {
        hasher.update(&previous);
        written = previous.len() as u64;
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .await
            .map_err(|e| io("cannot open", e))?
    } else {
        tokio::fs::File::create(&part)
            .await
            .map_err(|e| io("cannot create", e))?
    };
    drop(previous);
    progress(written, artifact.size_bytes);
    let mut stalled = 0u32;
    let name = format!("{}@{}", artifact.resource_name, artifact.sha256);
    let mut bytestream = ByteStreamClient::new(channel);
    let outcome: Result<(), Error> = loop {
        let before = written;
        let read = async {
            let mut stream = bytestream
                .read(ReadRequest {
                    resource_name: name.clone(),
                    read_offset: written as i64,
                    read_limit: 0,
                })
                .await?
                .into_inner();
            while let Some(chunk) = stream.next().await {
                let data = chunk?.data;
                file.write_all(&data)
                    .await
                    .map_err(|e| io("cannot write", e))?;
                hasher.update(&data);
                written += data.len() as u64;
                progress(written, artifact.size_bytes);
            }
            Ok::<(), Error>(())
        }
        .await;
        match read {
            Ok(()) => break Ok(()),
            Err(e) if e.is_resumable() => {
                stalled = if written > before { 0 } else { stalled + 1 };
                if stalled > MAX_STALLED_RETRIES {
                    break Err(e);
                }
                let backoff = e.retry_after().unwrap_or_else(|| {
                    Duration::from_millis(100 * (1 << stalled.min(6))).min(Duration::from_secs(5))
                });
                tokio::time::sleep(backoff).await;
            }
            Err(e) => break Err(e),
        }
    };
    let verified = outcome.and_then(|()| {
        let sha = hex(&hasher.finalize());
        if written != artifact.size_bytes || sha != artifact.sha256 {
            return Err(Error::from(tonic::Status::data_loss(format!(
                "downloaded {written} bytes with SHA-256 {sha}, expected {} bytes with {}",
                artifact.size_bytes, artifact.sha256
            ))));
        }
        Ok(())
    });
    if let Err(e) = verified {
        drop(file);
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    file.sync_all().await.map_err(|e| io("cannot sync", e))?;
    drop(file);
    tokio::fs::rename(&part, path)
        .await
        .map_err(|e| io("cannot rename onto", e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
