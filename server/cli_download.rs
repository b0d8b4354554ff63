//! `aiprod download`: fetches a job's video (or one shot's clip) over
//! `google.bytestream.ByteStream/Read`, resuming after a dropped connection, pinned to one version,
//! and verified (size and SHA-256) before it is renamed onto the destination.

use aiprod::bytestream::ReadRequest;
use aiprod::bytestream::byte_stream_client::ByteStreamClient;
use aiprod::pb;
use aiprod::pb::render_service_client::RenderServiceClient;
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;

/// Retries without progress before giving up.
const MAX_STALLED: u32 = 8;

pub async fn run(
    endpoint: String,
    api_key: String,
    job_id: String,
    shot_id: Option<String>,
    out: PathBuf,
) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(endpoint.clone())
        .context("invalid endpoint")?
        .connect_timeout(Duration::from_secs(10))
        .connect_lazy();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {api_key}")
        .parse()
        .context("the API key contains invalid characters")?;
    let auth = move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    };
    let mut jobs = RenderServiceClient::with_interceptor(channel.clone(), auth.clone());
    let mut bytes = ByteStreamClient::with_interceptor(channel, auth);
    let job = jobs
        .get_job(pb::GetJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetJob: {} ({:?})", s.message(), s.code()))?
        .into_inner()
        .job
        .unwrap_or_default();
    let artifact = match &shot_id {
        None => job.video.clone(),
        Some(shot) => job
            .shots
            .iter()
            .find(|s| &s.shot_id == shot)
            .and_then(|s| s.clip.clone()),
    }
    .with_context(|| {
        format!(
            "nothing to download yet: job {job_id} is {}",
            pb::JobState::try_from(job.state).map_or("UNKNOWN", |s| s.as_str_name())
        )
    })?;
    let part = out.with_extension("mp4.part");
    let mut file =
        std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut hasher = Sha256::new();
    let (mut written, mut stalled) = (0u64, 0u32);
    let name = format!("{}@{}", artifact.resource_name, artifact.sha256);
    loop {
        let before = written;
        let result: Result<(), tonic::Status> = async {
            let mut stream = bytes
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
                    .map_err(|e| tonic::Status::unknown(format!("writing: {e}")))?;
                hasher.update(&data);
                written += data.len() as u64;
                eprint!(
                    "\r{:>5.1} %  {written} / {} bytes",
                    written as f64 * 100.0 / artifact.size_bytes.max(1) as f64,
                    artifact.size_bytes
                );
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => break,
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                ) =>
            {
                stalled = if written > before { 0 } else { stalled + 1 };
                if stalled > MAX_STALLED {
                    let _ = std::fs::remove_file(&part);
                    anyhow::bail!("download failed: {}", s.message());
                }
                eprintln!(
                    "\nconnection lost ({}); resuming at byte {written}",
                    s.message()
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(stalled.max(1)))).await;
            }
            Err(s) => {
                let _ = std::fs::remove_file(&part);
                anyhow::bail!("download failed: {} ({:?})", s.message(), s.code());
            }
        }
    }
    eprintln!();
    let sha = hex::encode(hasher.finalize());
    if written != artifact.size_bytes || sha != artifact.sha256 {
        let _ = std::fs::remove_file(&part);
        anyhow::bail!(
            "verification failed: {written} bytes with SHA-256 {sha}, expected {} with {}",
            artifact.size_bytes,
            artifact.sha256
        );
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&part, &out)?;
    println!(
        "{}: {} bytes, {}x{} at {} fps, {} frames, sha256 {}",
        out.display(),
        written,
        artifact.width,
        artifact.height,
        artifact.frame_rate,
        artifact.frame_count,
        sha
    );
    Ok(())
}
