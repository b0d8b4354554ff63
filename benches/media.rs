//! Section 4 of the benchmark, media: what producing real video costs. Animatic render + encode
//! speed per resolution, the assembly of a 12-shot cut (sample copy, and re-encoding provider-like clips), `premium_spot`
//! time to delivery with 2 s of provider latency per shot (in parallel vs one shot at a time),
//! ByteStream download throughput against a plain loopback copy of the same bytes, and CPU-seconds
//! per delivered video-minute. Settings: `AIPROD_BENCH_MEDIA` (`1`, or `0` to skip),
//! `AIPROD_BENCH_MEDIA_LATENCY_MS` (provider latency per shot, 2000).

use aiprod::config::Config;
use aiprod_media::{Animatic, CameraMove, Format, Media, PureMedia};
use aiprod_sdk::{AdminClient, Client, pb};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// CPU seconds this process has used (user + system), from /proc/self/stat (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at ") ".
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

fn clip(format: Format, seconds: u64, n: u32, media: &PureMedia) -> Vec<u8> {
    media
        .render_animatic(
            &Animatic {
                shot_number: n,
                shot_count: 12,
                description: "Dawn over the ridge, a runner's shoes hit the trail in slow motion.",
                duration_ms: seconds * 1000,
                camera: [CameraMove::Pan, CameraMove::Dolly, CameraMove::Zoom][n as usize % 3],
                palette: &[[20, 60, 120], [240, 180, 40], [250, 250, 250]],
                format,
                seed: u64::from(n),
            },
            None,
        )
        .expect("render")
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A server in this process with a tenant; the config is the bench's own.
struct Server {
    endpoint: String,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(tune: impl FnOnce(&mut Config)) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            database_url: format!("sqlite://{}", dir.path().join("aiprod.db").display()),
            admin_token: Some(ADMIN_TOKEN.into()),
            demo_tenant: false,
            ..Config::default()
        };
        config.media.ffmpeg = "off".into();
        for tier in config.catalog.tiers.values_mut() {
            tier.requests_per_minute = 1_000_000_000;
            tier.concurrent_jobs = 1_000_000;
        }
        tune(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(aiprod::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        let admin = loop {
            match AdminClient::connect(endpoint.clone(), ADMIN_TOKEN).await {
                Ok(a) => break a,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let tenant = admin
            .admin()
            .create_tenant(pb::CreateTenantRequest {
                name: "bench-media".into(),
                tier: pb::Tier::Platinum as i32,
                ..Default::default()
            })
            .await?
            .into_inner()
            .tenant
            .unwrap_or_default();
        let key = admin
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant_id: tenant.tenant_id,
                mode: pb::ApiKeyMode::Test as i32,
                name: "bench".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let client = Client::connect(endpoint.clone(), &key.secret).await?;
        Ok(Server {
            endpoint,
            client,
            stop: Some(stop),
            handle,
            _dir: dir,
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.handle).await???;
        Ok(())
    }

    /// Creates an auto-approved job (approving a final review) and waits for DELIVERED; returns the job and the seconds taken.
    async fn deliver(&self, preset: &str, request_id: &str) -> anyhow::Result<(pb::Job, f64)> {
        let t0 = Instant::now();
        let job = self
            .client
            .render()
            .create_job(pb::CreateJobRequest {
                request_id: request_id.into(),
                preset_id: preset.into(),
                brief: "Launch film for our new trail running shoe.".into(),
                brand_id: "acme".into(),
                auto_approve: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .job
            .unwrap_or_default();
        let mut stream = Box::pin(self.client.watch_job(job.job_id.clone(), 0));
        while let Some(e) = stream.next().await {
            let state = e?.state;
            // auto_approve skips only the manifest review: approve the cut of a final review.
            if state == pb::JobState::AwaitingFinalApproval as i32 {
                self.client
                    .icc()
                    .approve_delivery(pb::ApproveDeliveryRequest {
                        job_id: job.job_id.clone(),
                    })
                    .await?;
            }
            if aiprod_sdk::is_terminal(state) {
                break;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let job = self
            .client
            .render()
            .get_job(pb::GetJobRequest { job_id: job.job_id })
            .await?
            .into_inner()
            .job
            .unwrap_or_default();
        anyhow::ensure!(
            job.state == pb::JobState::Delivered as i32,
            "job ended {}: {}",
            job.state,
            job.status_message
        );
        Ok((job, secs))
    }
}

/// Reads a resource over ByteStream; returns bytes and seconds.
async fn bytestream_read(client: &Client, name: &str) -> anyhow::Result<(usize, f64)> {
    let t0 = Instant::now();
    let mut stream = client
        .bytestream()
        .read(aiprod_sdk::bytestream::ReadRequest {
            resource_name: name.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        n += chunk?.data.len();
    }
    Ok((n, t0.elapsed().as_secs_f64()))
}

/// The baseline: the same bytes over a plain loopback TCP connection.
async fn tcp_copy(bytes: Vec<u8>) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let len = bytes.len();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.write_all(&bytes).await?;
        s.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let t0 = Instant::now();
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    loop {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    server.await??;
    anyhow::ensure!(got == len, "short copy");
    Ok(secs)
}

pub async fn run() -> anyhow::Result<Value> {
    if std::env::var("AIPROD_BENCH_MEDIA").as_deref() == Ok("0") {
        return Ok(json!({"skipped": "AIPROD_BENCH_MEDIA=0"}));
    }
    let latency_ms: u64 = std::env::var("AIPROD_BENCH_MEDIA_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let media = PureMedia::default();
    let mut out = serde_json::Map::new();

    // a. Animatic render + encode, 5 s clips.
    eprintln!("aiprod bench: media encode speed ...");
    let mut encode = Vec::new();
    for (label, w, h) in [
        ("144p", 256, 144),
        ("360p", 640, 360),
        ("480p", 854, 480),
        ("720p", 1280, 720),
    ] {
        let format = Format {
            width: w,
            height: h,
            fps: 24,
        };
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let bytes = tokio::task::block_in_place(|| clip(format, 5, 1, &media));
        let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        encode.push(json!({"resolution": label, "frames_per_second": round2(120.0 / secs), "cpu_seconds": round2(cpu), "bytes": bytes.len()}));
    }
    out.insert("animatic_encode".into(), json!(encode));

    // b. Assembly of 12 × 10 s clips: our own (copy) and provider-like (re-encode).
    eprintln!("aiprod bench: media assembly ...");
    let target = Format {
        width: 256,
        height: 144,
        fps: 24,
    };
    let provider = Format {
        width: 320,
        height: 180,
        fps: 16,
    };
    let mut assembly = Vec::new();
    for (label, format) in [
        ("copy (our clips)", target),
        ("re-encode (provider-like 320x180@16)", provider),
    ] {
        let clips: Vec<Vec<u8>> =
            tokio::task::block_in_place(|| (1..=12).map(|n| clip(format, 10, n, &media)).collect());
        let refs: Vec<&[u8]> = clips.iter().map(|c| c.as_slice()).collect();
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let cut = tokio::task::block_in_place(|| media.assemble(&refs, target))?;
        let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        assembly.push(json!({"path": label, "seconds": round2(secs), "cpu_seconds": round2(cpu), "cpu_seconds_per_video_minute": round2(cpu / 2.0), "cut_bytes": cut.len()}));
    }
    out.insert("assembly_120s_cut_144p".into(), json!(assembly));

    // c. premium_spot (12 shots) with provider latency per shot: parallel vs one at a time.
    eprintln!("aiprod bench: premium_spot delivery, {latency_ms} ms per shot ...");
    let mut delivery = Vec::new();
    for (label, per_job, per_backend) in [("parallel", 12, 12), ("one shot at a time", 1, 1)] {
        let server = Server::start(|c| {
            c.sandbox.latency_ms = latency_ms;
            c.media.sandbox_short_side = 144;
            c.render.max_parallel_shots_per_job = per_job;
            for n in c.render.backend_concurrency.values_mut() {
                *n = per_backend;
            }
        })
        .await?;
        let (_, secs) = server
            .deliver("premium_spot", &format!("bench-premium-{per_job}"))
            .await?;
        server.stop().await?;
        delivery.push(json!({"mode": label, "seconds": round2(secs), "shots": 12, "latency_ms_per_shot": latency_ms}));
    }
    out.insert("premium_spot_delivery".into(), json!(delivery));

    // d + e. A premium_spot at the demo resolution (480p), no latency: CPU per video-minute, and
    // the download of its cut against a plain TCP copy.
    eprintln!("aiprod bench: premium_spot at 480p (CPU per video-minute, download) ...");
    let server = Server::start(|c| {
        c.sandbox.latency_ms = 0;
        c.media.sandbox_short_side = 480;
    })
    .await?;
    let c0 = cpu_seconds();
    let (job, secs) = server.deliver("premium_spot", "bench-premium-480p").await?;
    let cpu = cpu_seconds() - c0;
    let video = job.video.clone().unwrap_or_default();
    let minutes = video.frame_count as f64 / 24.0 / 60.0;
    out.insert(
        "premium_spot_480p".into(),
        json!({"seconds": round2(secs), "cpu_seconds": round2(cpu), "video_minutes": round2(minutes), "cpu_seconds_per_video_minute": round2(cpu / minutes.max(0.01)), "cut_bytes": video.size_bytes}),
    );
    let mut reads = Vec::new();
    for _ in 0..3 {
        reads.push(bytestream_read(&server.client, &video.resource_name).await?);
    }
    let (bytes, best) = reads
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 1.0));
    let payload = vec![7u8; bytes];
    let mut copies = Vec::new();
    for _ in 0..3 {
        copies.push(tcp_copy(payload.clone()).await?);
    }
    let copy = copies.iter().copied().fold(f64::MAX, f64::min);
    let mbps = |secs: f64| round2(bytes as f64 / secs / 1e6);
    out.insert(
        "download".into(),
        json!({"bytes": bytes, "bytestream_mb_per_s": mbps(best), "tcp_copy_mb_per_s": mbps(copy), "ratio": round2(copy / best)}),
    );
    let _ = &server.endpoint;
    server.stop().await?;
    Ok(Value::Object(out))
}

pub fn print(media: &Value) {
    println!("5. Media (real video work; in the benchmark process, unpinned)");
    if let Some(why) = media.get("skipped") {
        println!("   skipped: {why}");
        return;
    }
    for e in media["animatic_encode"].as_array().into_iter().flatten() {
        println!(
            "   animatic render+encode {:>5}: {:>7} frames/s ({} CPU-s for 120 frames)",
            e["resolution"].as_str().unwrap_or("?"),
            e["frames_per_second"],
            e["cpu_seconds"]
        );
    }
    for a in media["assembly_120s_cut_144p"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "   assembly of 12 x 10 s, {}: {} s, {} CPU-s per video-minute",
            a["path"].as_str().unwrap_or("?"),
            a["seconds"],
            a["cpu_seconds_per_video_minute"]
        );
    }
    for d in media["premium_spot_delivery"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "   premium_spot (12 shots, {} ms each) {}: {} s to DELIVERED",
            d["latency_ms_per_shot"],
            d["mode"].as_str().unwrap_or("?"),
            d["seconds"]
        );
    }
    let p = &media["premium_spot_480p"];
    println!(
        "   premium_spot at 480p, no latency: {} s, {} CPU-s per delivered video-minute (render + measure + encode + assemble)",
        p["seconds"], p["cpu_seconds_per_video_minute"]
    );
    let d = &media["download"];
    println!(
        "   download {} bytes: ByteStream {} MB/s vs plain loopback TCP {} MB/s ({}x)",
        d["bytes"], d["bytestream_mb_per_s"], d["tcp_copy_mb_per_s"], d["ratio"]
    );
    println!();
}
