//! Real videos: every job ends in a playable MP4 that the partner downloads over
//! `google.bytestream.ByteStream/Read`. The bytes are proven real here without ffmpeg (decoded with
//! the media seam: frames counted, keyframes at shot starts, frames that change, hashes that match),
//! and with `ffprobe` as a second opinion when it is on PATH.

use crate::harness::*;
use aiprod_media::{Media, PureMedia};
use aiprod_sdk::bytestream::{ReadRequest, WriteRequest};
use aiprod_sdk::{Client, pb};
use futures::StreamExt;
use pb::JobState::*;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const FPS: u32 = 24;

pub async fn get_job(client: &Client, job_id: &str) -> pb::Job {
    client
        .render()
        .get_job(pb::GetJobRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("get job")
        .into_inner()
        .job
        .expect("job")
}

/// Reads a whole resource over ByteStream.
pub async fn read_all(client: &Client, name: &str) -> Result<Vec<u8>, tonic::Status> {
    read_range(client, name, 0, 0).await
}

async fn read_range(
    client: &Client,
    name: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = client
        .bytestream()
        .read(ReadRequest {
            resource_name: name.into(),
            read_offset: offset,
            read_limit: limit,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let data = chunk?.data;
        assert!(data.len() <= 256 * 1024, "chunks of at most 256 KiB");
        out.extend_from_slice(&data);
    }
    Ok(out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The file is the artifact the job describes, decodes completely, lasts the shots' durations,
/// has a keyframe at each shot start and frames that change.
pub fn assert_playable(bytes: &[u8], artifact: &pb::VideoArtifact, shot_seconds: &[u32]) {
    assert_eq!(bytes.len() as u64, artifact.size_bytes, "size");
    assert_eq!(sha256_hex(bytes), artifact.sha256, "SHA-256 of the bytes");
    assert_eq!(&bytes[4..8], b"ftyp", "an MP4 file");
    assert_eq!(artifact.mime_type, "video/mp4");
    assert!(artifact.codec.starts_with("avc1."), "{}", artifact.codec);
    let media = PureMedia::default();
    let m = media.measure(bytes).expect("the video decodes");
    let total: u32 = shot_seconds.iter().sum();
    let expected_frames = total * FPS;
    assert_eq!(m.decode_errors, 0, "no decode errors");
    assert_eq!(m.decoded_frames, m.info.frame_count, "every frame decodes");
    assert!(
        m.info.frame_count.abs_diff(expected_frames) <= shot_seconds.len() as u32,
        "{} frames for {total} s at {FPS} fps",
        m.info.frame_count
    );
    assert_eq!(artifact.frame_count, m.info.frame_count);
    assert_eq!(
        (artifact.width, artifact.height),
        (m.info.width, m.info.height)
    );
    assert!(
        (artifact.frame_rate - f64::from(FPS)).abs() < 0.01,
        "{}",
        artifact.frame_rate
    );
    let duration = artifact.duration.expect("duration");
    let duration_ms = duration.seconds as u64 * 1000 + duration.nanos as u64 / 1_000_000;
    assert!(
        duration_ms.abs_diff(u64::from(total) * 1000)
            <= 1000 / u64::from(FPS) * shot_seconds.len() as u64,
        "{duration_ms} ms for {total} s"
    );
    assert!(m.info.faststart, "index at the front");
    let mut start = 0u32;
    for s in shot_seconds {
        assert!(
            m.info.keyframes.contains(&start),
            "a keyframe at the shot start {start}: {:?}",
            m.info.keyframes
        );
        start += s * FPS;
    }
    assert!(
        m.frozen_frame_ratio < 0.5,
        "frames change: frozen {}",
        m.frozen_frame_ratio
    );
    assert!(m.black_frame_ratio < 0.01, "black {}", m.black_frame_ratio);
    ffprobe_agrees(bytes, m.info.frame_count, m.info.width, m.info.height);
}

/// A second opinion from ffprobe when it is installed (CI installs Debian's ffmpeg for it).
fn ffprobe_agrees(bytes: &[u8], frames: u32, width: u32, height: u32) {
    let Ok(out) = std::process::Command::new("ffprobe")
        .arg("-version")
        .output()
    else {
        eprintln!("ffprobe not on PATH: second opinion skipped");
        return;
    };
    if !out.status.success() {
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,width,height,codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(file.path())
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        line,
        format!("h264,{width},{height},{frames}"),
        "ffprobe's reading"
    );
}

async fn approve_manifest(client: &Client, job_id: &str) {
    let manifest = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("get manifest")
        .into_inner()
        .manifest
        .expect("manifest");
    client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id: job_id.into(),
            etag: manifest.etag,
        })
        .await
        .expect("approve manifest");
}

fn shot_seconds(job: &pb::Job) -> Vec<u32> {
    job.shots.iter().map(|s| s.duration_s).collect()
}

async fn download(client: &Client, job_id: &str) -> (pb::VideoArtifact, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("video.mp4");
    let artifact = client
        .download_video(job_id, &path)
        .await
        .expect("download the video");
    (artifact, std::fs::read(&path).unwrap())
}

async fn run(client: &Client, req: pb::CreateJobRequest) -> pb::Job {
    let job = create(client, req).await;
    let events = watch_to_end(client, &job.job_id, 0).await;
    assert_gap_free(&events);
    get_job(client, &job.job_id).await
}

#[tokio::test]
async fn every_preset_delivers_a_playable_video() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;

    for (preset, auto) in [("quick_social", false), ("brand_campaign", true)] {
        let job = run(
            &client,
            pb::CreateJobRequest {
                auto_approve: auto,
                ..create_request(&format!("play-{preset}"), preset)
            },
        )
        .await;
        assert_eq!(
            job.state, Delivered as i32,
            "{preset}: {}",
            job.status_message
        );
        let (artifact, bytes) = download(&client, &job.job_id).await;
        assert_eq!(Some(&artifact), job.video.as_ref());
        assert_eq!(artifact.resource_name, format!("jobs/{}/video", job.job_id));
        assert_eq!((artifact.width, artifact.height), (160, 90));
        assert_eq!(artifact.shot_count, job.shots_total);
        assert_playable(&bytes, &artifact, &shot_seconds(&job));
        // The poster is a PNG.
        let poster = read_all(&client, &artifact.poster_resource_name)
            .await
            .unwrap();
        assert_eq!(&poster[..8], b"\x89PNG\r\n\x1a\n");
        // Every shot has its own clip, measured and stored.
        for shot in &job.shots {
            let clip = shot.clip.as_ref().expect("a clip per shot");
            let m = shot.measurement.as_ref().expect("measured");
            assert!(m.passed && m.decodable, "{m:?}");
            assert_eq!(m.decoded_frames, shot.duration_s * FPS);
            let bytes = read_all(&client, &clip.resource_name).await.unwrap();
            assert_playable(&bytes, clip, &[shot.duration_s]);
        }
    }

    // premium_spot: the partner reviews the cut and the clips before approving delivery.
    let job = create(&client, create_request("play-premium", "premium_spot")).await;
    wait_for_state(&client, &job.job_id, AwaitingApproval).await;
    approve_manifest(&client, &job.job_id).await;
    wait_for_state(&client, &job.job_id, AwaitingFinalApproval).await;
    let held = get_job(&client, &job.job_id).await;
    assert_eq!(held.state, AwaitingFinalApproval as i32);
    let cut = held
        .video
        .clone()
        .expect("the cut exists before final approval");
    let dir = tempfile::tempdir().unwrap();
    let clip = client
        .download_shot_clip(
            &job.job_id,
            &held.shots[0].shot_id,
            dir.path().join("clip.mp4"),
        )
        .await
        .expect("a shot clip downloads during final review");
    assert_eq!(Some(&clip), held.shots[0].clip.as_ref());
    client
        .icc()
        .approve_delivery(pb::ApproveDeliveryRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .expect("approve delivery");
    let delivered = get_job(&client, &job.job_id).await;
    assert_eq!(delivered.state, Delivered as i32);
    assert_eq!(
        delivered.video.as_ref(),
        Some(&cut),
        "the reviewed cut is delivered"
    );
    let (artifact, bytes) = download(&client, &job.job_id).await;
    assert_eq!(artifact.shot_count, 12);
    assert_playable(&bytes, &artifact, &shot_seconds(&delivered));
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert!(
        report
            .ledger
            .iter()
            .filter(|l| l.kind != pb::LedgerKind::Planner as i32)
            .all(|l| l.measurement.as_ref().is_some_and(|m| m.passed)),
        "each render line shows what was measured"
    );
}

#[tokio::test]
async fn a_revision_re_renders_the_named_shots_and_re_assembles() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let job = create(
        &client,
        pb::CreateJobRequest {
            duration_s: Some(30),
            ..create_request("revise-2", "premium_spot")
        },
    )
    .await;
    wait_for_state(&client, &job.job_id, AwaitingApproval).await;
    approve_manifest(&client, &job.job_id).await;
    wait_for_state(&client, &job.job_id, AwaitingFinalApproval).await;
    let before = get_job(&client, &job.job_id).await;
    let old_cut = before.video.clone().unwrap();
    let revised = before.shots[1].shot_id.clone();
    let last = before.last_sequence;
    client
        .icc()
        .request_revision(pb::RequestRevisionRequest {
            job_id: job.job_id.clone(),
            shot_ids: vec![revised.clone()],
            notes: "warmer light, slower move".into(),
        })
        .await
        .expect("request a revision");
    let events = watch_until(&client, &job.job_id, last, |e| {
        e.state == AwaitingFinalApproval as i32
            && matches!(e.payload, Some(pb::job_event::Payload::StateChanged(_)))
    })
    .await;
    let rerendered: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::job_event::Payload::ShotRendered(r)) => Some(r.shot_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        rerendered,
        vec![revised.clone()],
        "only the named shot renders again"
    );
    let after = get_job(&client, &job.job_id).await;
    let new_cut = after.video.clone().unwrap();
    assert_ne!(new_cut.sha256, old_cut.sha256, "the cut is assembled again");
    for (b, a) in before.shots.iter().zip(&after.shots) {
        let (b, a) = (b.clip.as_ref().unwrap(), a.clip.as_ref().unwrap());
        assert_eq!(
            b.sha256 == a.sha256,
            b.resource_name != format!("jobs/{}/shots/{revised}/clip", job.job_id)
        );
    }
    // A read pinned to the replaced version refuses to mix versions.
    let stale = read_all(
        &client,
        &format!("{}@{}", old_cut.resource_name, old_cut.sha256),
    )
    .await
    .expect_err("the old version is gone");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let bytes = read_all(
        &client,
        &format!("{}@{}", new_cut.resource_name, new_cut.sha256),
    )
    .await
    .unwrap();
    assert_playable(&bytes, &new_cut, &shot_seconds(&after));
}

#[tokio::test]
async fn bad_sandbox_outputs_are_measured_and_rendered_again() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, 2);
    // Rates low enough that nine bad clips in a row for one shot (which fails the job) stay
    // improbable (0.28^9 ≈ 1e-5 per shot), with jobs run until every kind was caught.
    config.sandbox.bad_outputs.black = 0.08;
    config.sandbox.bad_outputs.frozen = 0.08;
    config.sandbox.bad_outputs.truncated = 0.04;
    config.sandbox.bad_outputs.undecodable = 0.08;
    let server = TestServer::start_with(config, dir).await;
    let client = server.platinum("acme").await;
    let mut failures_seen = std::collections::BTreeSet::new();
    let kinds = ["black_frames", "frozen_frames", "undecodable"];
    for i in 0..12 {
        if i >= 2 && kinds.iter().all(|k| failures_seen.contains(*k)) {
            break;
        }
        let job = run(
            &client,
            pb::CreateJobRequest {
                auto_approve: true,
                ..create_request(&format!("bad-{i}"), "brand_campaign")
            },
        )
        .await;
        assert_eq!(job.state, Delivered as i32, "{}", job.status_message);
        let events = watch_to_end(&client, &job.job_id, 0).await;
        let rejected: Vec<&pb::QualityChecked> = events
            .iter()
            .filter_map(|e| match &e.payload {
                // Technical failures (a re-render below the quality floor has a passing measurement).
                Some(pb::job_event::Payload::QualityChecked(q))
                    if q.measurement.as_ref().is_some_and(|m| !m.passed) =>
                {
                    Some(q)
                }
                _ => None,
            })
            .collect();
        for q in &rejected {
            let m = q.measurement.as_ref().expect("the measured figures");
            assert!(!m.passed && !m.failures.is_empty(), "{m:?}");
            assert_eq!(
                q.quality, 0.0,
                "a clip that fails a technical check scores 0"
            );
            failures_seen.extend(m.failures.iter().cloned());
        }
        let report = costs(&client, &job.job_id).await;
        assert_certified(&report);
        let unusable = report
            .ledger
            .iter()
            .filter(|l| !l.succeeded && l.measurement.as_ref().is_some_and(|m| !m.passed))
            .count();
        assert_eq!(
            unusable,
            rejected.len(),
            "each bad output is metered, not billed"
        );
        let (artifact, bytes) = download(&client, &job.job_id).await;
        assert_playable(&bytes, &artifact, &shot_seconds(&job));
    }
    for kind in kinds {
        assert!(
            failures_seen.contains(kind),
            "{kind} caught: {failures_seen:?}"
        );
    }
}

#[tokio::test]
async fn bytestream_reads_are_bounded_resumable_and_isolated() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let other = server.platinum("globex").await;
    let job = run(&client, create_request("bs-1", "quick_social")).await;
    let video = job.video.clone().unwrap();
    let whole = read_all(&client, &video.resource_name).await.unwrap();
    assert_eq!(sha256_hex(&whole), video.sha256);

    // Pieces by offset and limit add up to the whole.
    let size = video.size_bytes as i64;
    let mut pieces = Vec::new();
    let step = size / 3 + 1;
    for offset in (0..size).step_by(step as usize) {
        pieces.extend(
            read_range(&client, &video.resource_name, offset, step)
                .await
                .unwrap(),
        );
    }
    assert_eq!(pieces, whole);
    assert!(
        read_range(&client, &video.resource_name, size, 0)
            .await
            .unwrap()
            .is_empty()
    );
    for bad in [-1, size + 1] {
        let e = read_range(&client, &video.resource_name, bad, 0)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "offset {bad}");
    }
    let e = read_range(&client, &video.resource_name, 0, -5)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Malformed names: a bounded error that does not echo the input.
    let huge = format!("jobs/{}/video/{}", job.job_id, "x".repeat(1 << 20));
    for name in ["", "videos/1", "jobs/../etc/passwd", huge.as_str()] {
        let e = read_all(&client, name).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{:.40}", name);
        assert!(e.message().len() < 512, "bounded message");
        let err = aiprod_sdk::Error::from(e);
        assert_eq!(field_names(&err), vec!["resource_name".to_string()]);
    }

    // Another tenant's artifacts are NOT_FOUND, exactly like a job that does not exist.
    let missing = read_all(&other, "jobs/job_doesnotexist/video")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let names = std::iter::once(video.resource_name.clone())
        .chain(std::iter::once(video.poster_resource_name.clone()))
        .chain(
            job.shots
                .iter()
                .map(|s| s.clip.as_ref().unwrap().resource_name.clone()),
        )
        .chain(std::iter::once(format!(
            "{}@{}",
            video.resource_name, video.sha256
        )));
    for name in names {
        let e = read_all(&other, &name).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{name}");
        assert_eq!(e.message(), missing.message(), "identical to a missing job");
        assert!(
            other
                .download_video(&job.job_id, "/nonexistent/x")
                .await
                .is_err()
        );
    }
    // A job without a cut yet: NOT_FOUND for the file, a clear error from the SDK.
    let pending = create(
        &client,
        pb::CreateJobRequest {
            ..create_request("bs-pending", "brand_campaign")
        },
    )
    .await;
    wait_for_state(&client, &pending.job_id, AwaitingApproval).await;
    let e = read_all(&client, &format!("jobs/{}/video", pending.job_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = client
        .download_video(&pending.job_id, std::env::temp_dir().join("never.mp4"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not available yet"), "{}", e.message());

    // Without a key: UNAUTHENTICATED; uploads: UNIMPLEMENTED.
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = aiprod_sdk::bytestream::byte_stream_client::ByteStreamClient::new(channel);
    let e = anonymous
        .read(ReadRequest {
            resource_name: video.resource_name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = client
        .bytestream()
        .write(futures::stream::iter(vec![WriteRequest {
            resource_name: video.resource_name.clone(),
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

/// A TCP proxy that cuts the first connection after `cut_after` bytes from the server.
async fn cutting_proxy(target: String, cut_after: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            let limit = if std::mem::take(&mut first) {
                Some(cut_after)
            } else {
                None
            };
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let up = tokio::io::copy(&mut ri, &mut wo);
                let down = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = ro.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        if limit.is_some_and(|l| sent + n > l) {
                            return Ok(()); // cut: both halves close
                        }
                        wi.write_all(&buf[..n]).await?;
                        sent += n;
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_download_dropped_mid_way_resumes_to_the_same_hash() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, 2);
    // A larger cut so the drop lands in the middle of the file.
    config.media.sandbox_short_side = 144;
    let server = TestServer::start_with(config, dir).await;
    let (_, key, client) = server.tenant("acme", pb::Tier::Platinum).await;
    let job = run(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("drop-1", "brand_campaign")
        },
    )
    .await;
    let video = job.video.clone().unwrap();
    assert!(video.size_bytes > 100_000, "{} bytes", video.size_bytes);
    // The first connection dies after about half of the file has been sent.
    let proxy = cutting_proxy(server.endpoint.clone(), video.size_bytes as usize / 2).await;
    let via_proxy = Client::connect(proxy, &key).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("video.mp4");
    let artifact = tokio::time::timeout(
        Duration::from_secs(60),
        via_proxy.download_video(&job.job_id, &path),
    )
    .await
    .expect("download in time")
    .expect("download resumes after the drop");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(sha256_hex(&bytes), artifact.sha256);
    assert_eq!(artifact.sha256, video.sha256);
    assert!(!out.path().join("video.mp4.part").exists());
    assert_playable(&bytes, &artifact, &shot_seconds(&job));
}

#[tokio::test]
async fn artifacts_live_in_s3_with_presigned_urls() {
    let s3 = aiprod_artifacts::testing::S3TestServer::start()
        .await
        .expect("S3 server on loopback");
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, 2);
    config.artifacts.url = Some(s3.url());
    config.artifacts.options = s3.options().into_iter().collect();
    let server = TestServer::start_with(config, dir.clone()).await;
    let client = server.platinum("acme").await;
    let job = run(&client, create_request("s3-1", "quick_social")).await;
    assert_eq!(job.state, Delivered as i32, "{}", job.status_message);
    let video = job.video.clone().unwrap();
    let (artifact, bytes) = download(&client, &job.job_id).await;
    assert_eq!(artifact.sha256, video.sha256);
    assert_playable(&bytes, &artifact, &shot_seconds(&job));
    // Nothing was written locally: the bytes are in the bucket.
    assert!(!dir.path().join("artifacts").exists());
    // GetJob signs a URL that serves the same bytes; a tampered one is refused.
    assert!(
        video.download_url.starts_with("http://127.0.0.1"),
        "{}",
        video.download_url
    );
    assert!(video.download_url_expire_time.is_some());
    let http = reqwest::Client::new();
    let got = http.get(&video.download_url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
    // Change one hex digit of the signature.
    let at = video.download_url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = video.download_url.clone().into_bytes();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);
    for shot in &job.shots {
        assert!(!shot.clip.as_ref().unwrap().download_url.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_downloads_a_video_and_a_shot_clip() {
    let server = TestServer::start().await;
    let (_, key, client) = server.tenant("acme", pb::Tier::Platinum).await;
    let job = run(&client, create_request("cli-1", "quick_social")).await;
    let out = tempfile::tempdir().unwrap();
    let download = |extra: &[&str], file: &str| {
        let output = std::process::Command::new(binary())
            .args([
                "download",
                "--endpoint",
                &server.endpoint,
                &job.job_id,
                "-o",
            ])
            .arg(out.path().join(file))
            .args(extra)
            .env("AIPROD_API_KEY", &key)
            .output()
            .expect("run aiprod download");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let printed = tokio::task::block_in_place(|| download(&[], "video.mp4"));
    let video = job.video.clone().unwrap();
    assert!(printed.contains(&video.sha256), "{printed}");
    let bytes = std::fs::read(out.path().join("video.mp4")).unwrap();
    assert_playable(&bytes, &video, &shot_seconds(&job));
    let shot = &job.shots[2];
    tokio::task::block_in_place(|| download(&["--shot", &shot.shot_id], "clip.mp4"));
    let clip = std::fs::read(out.path().join("clip.mp4")).unwrap();
    assert_playable(&clip, shot.clip.as_ref().unwrap(), &[shot.duration_s]);
}
