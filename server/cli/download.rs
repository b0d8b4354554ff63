//! `aiprod jobs download` (and the older `aiprod download`): fetches a job's video (or one shot's
//! clip) as a partner would, through the Rust SDK's download (ByteStream `Read`, resumed after a
//! dropped connection or an interrupted run, pinned to one version, size and SHA-256 verified
//! before the file is renamed onto the destination), with a progress bar on a terminal.

use aiprod_sdk::{Client, Error, pb};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

pub fn default_path(job_id: &str, shot: Option<&str>) -> PathBuf {
    PathBuf::from(match shot {
        Some(s) => format!("{job_id}-{s}.mp4"),
        None => format!("{job_id}.mp4"),
    })
}

/// Downloads with a byte progress bar on stderr (hidden when stderr is not a terminal).
pub async fn with_progress(
    client: &Client,
    job_id: &str,
    shot: Option<&str>,
    path: &Path,
) -> Result<pb::VideoArtifact, Error> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("downloading {}", path.display()));
    let progress = {
        let bar = bar.clone();
        move |written: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(written);
        }
    };
    let result = match shot {
        None => {
            client
                .download_video_with_progress(job_id, path, progress)
                .await
        }
        Some(shot) => {
            client
                .download_shot_clip_with_progress(job_id, shot, path, progress)
                .await
        }
    };
    match &result {
        Ok(_) => bar.finish_with_message(format!("downloaded {}", path.display())),
        Err(_) => bar.abandon(),
    }
    result
}

pub fn summary(path: &Path, artifact: &pb::VideoArtifact) -> String {
    format!(
        "{}: {} bytes, {}x{} at {} fps, {} frames, sha256 {}",
        path.display(),
        artifact.size_bytes,
        artifact.width,
        artifact.height,
        artifact.frame_rate,
        artifact.frame_count,
        artifact.sha256
    )
}
