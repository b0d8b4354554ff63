//! `aiprod download`: fetches a job's video (or one shot's clip) as a partner would, through the
//! Rust SDK's download (ByteStream `Read`, resumed after a dropped connection, pinned to one version,
//! size and SHA-256 verified before the file is renamed onto the destination).

use aiprod_sdk::Client;
use anyhow::Context;
use std::path::PathBuf;

pub async fn run(
    endpoint: String,
    api_key: String,
    job_id: String,
    shot_id: Option<String>,
    out: PathBuf,
) -> anyhow::Result<()> {
    let client = Client::connect(endpoint.clone(), &api_key)
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let artifact = match &shot_id {
        None => client.download_video(&job_id, &out).await,
        Some(shot) => client.download_shot_clip(&job_id, shot, &out).await,
    }
    .map_err(|e| anyhow::anyhow!("download failed: {} ({:?})", e.message(), e.code()))?;
    println!(
        "{}: {} bytes, {}x{} at {} fps, {} frames, sha256 {}",
        out.display(),
        artifact.size_bytes,
        artifact.width,
        artifact.height,
        artifact.frame_rate,
        artifact.frame_count,
        artifact.sha256
    );
    Ok(())
}
