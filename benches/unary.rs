//! Section 1, unary calls against a bare tonic server in the same run: closed-loop callers over a
//! few connections; per repetition the baseline, `EstimateCost` and `GetJob` one after the other
//! (interleaved, so a change in the machine's load hits all three); medians and ranges over the
//! repetitions, with the server's CPU per call (from /proc/<pid>/stat) and the load average.

use crate::common::*;
use aiprod_sdk::pb::cost_estimator_service_client::CostEstimatorServiceClient;
use aiprod_sdk::pb::render_service_client::RenderServiceClient;
use aiprod_sdk::{AuthChannel, pb};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// One measurement of one target.
#[derive(Clone, Debug)]
pub struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Server CPU per call, warm-up included (µs).
    pub cpu_us: f64,
    pub load: f64,
    pub errors: u64,
}

impl Sample {
    fn json(&self) -> Value {
        json!({
            "rps": round2(self.rps), "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
            "server_cpu_us_per_call": round2(self.cpu_us), "loadavg": self.load, "errors": self.errors,
        })
    }
}

pub const TARGETS: [&str; 3] = [
    "bare tonic Health/Check",
    "aiprod EstimateCost",
    "aiprod GetJob",
];

/// Every repetition of the three targets at one caller count.
pub struct Row {
    pub callers: usize,
    /// Indexed like `TARGETS`, one sample per repetition.
    pub samples: [Vec<Sample>; 3],
}

impl Row {
    pub fn rps(&self, t: usize) -> Spread {
        spread(&self.samples[t].iter().map(|s| s.rps).collect::<Vec<_>>())
    }
    pub fn p50(&self, t: usize) -> Spread {
        spread(&self.samples[t].iter().map(|s| s.p50_ms).collect::<Vec<_>>())
    }
    pub fn p99(&self, t: usize) -> Spread {
        spread(&self.samples[t].iter().map(|s| s.p99_ms).collect::<Vec<_>>())
    }
    pub fn cpu(&self, t: usize) -> Spread {
        spread(&self.samples[t].iter().map(|s| s.cpu_us).collect::<Vec<_>>())
    }
    pub fn load(&self, t: usize) -> Spread {
        spread(&self.samples[t].iter().map(|s| s.load).collect::<Vec<_>>())
    }
    /// Throughput of target `t` over the baseline's, repetition by repetition.
    pub fn ratio(&self, t: usize) -> Spread {
        let r: Vec<f64> = self.samples[t]
            .iter()
            .zip(&self.samples[0])
            .map(|(o, b)| ratio(o.rps, b.rps))
            .collect();
        spread(&r)
    }
    pub fn errors(&self, t: usize) -> u64 {
        self.samples[t].iter().map(|s| s.errors).sum()
    }

    pub fn json(&self) -> Value {
        let target = |t: usize| {
            json!({
                "target": TARGETS[t],
                "rps": self.rps(t).json(false),
                "p50_ms": self.p50(t).json(false),
                "p99_ms": self.p99(t).json(false),
                "server_cpu_us_per_call": self.cpu(t).json(false),
                "loadavg": self.load(t).json(false),
                "errors": self.errors(t),
                "runs": self.samples[t].iter().map(Sample::json).collect::<Vec<_>>(),
            })
        };
        json!({
            "callers": self.callers,
            "baseline": target(0),
            "estimate_cost": target(1),
            "get_job": target(2),
            "ratio_rps": { "estimate_cost": self.ratio(1).json(true), "get_job": self.ratio(2).json(true) },
        })
    }
}

/// `callers` closed-loop callers spread over `clients` (one connection each): each calls, waits for
/// the answer, and calls again. Calls completing in the measured window (after the warm-up) count;
/// the server's CPU is divided by every call it answered, warm-up included.
async fn drive<C, F, Fut>(clients: &[C], callers: usize, s: &Settings, pid: u32, call: F) -> Sample
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let measure_from = Instant::now() + s.warmup();
    let end = measure_from + s.window();
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let call = call.clone();
            tokio::spawn(async move {
                let mut hist = histogram();
                let (mut ok, mut errors, mut all) = (0_u64, 0_u64, 0_u64);
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let good = call(client.clone()).await;
                    let t1 = Instant::now();
                    all += 1;
                    if t1 >= measure_from && t1 <= end {
                        if good {
                            ok += 1;
                            hist.saturating_record((t1 - t0).as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (hist, ok, errors, all)
            })
        })
        .collect();
    let mut hist: Histogram<u64> = histogram();
    let (mut ok, mut errors, mut all) = (0, 0, 0);
    for t in tasks {
        if let Ok((h, o, e, a)) = t.await {
            let _ = hist.add(&h);
            ok += o;
            errors += e;
            all += a;
        }
    }
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    Sample {
        rps: ok as f64 / s.seconds,
        p50_ms: ms(&hist, 0.5),
        p99_ms: ms(&hist, 0.99),
        cpu_us: if all > 0 { cpu * 1e6 / all as f64 } else { 0.0 },
        load: loadavg(),
        errors,
    }
}

/// Adds the same credential and deadline as the SDK does, so every target does the same client work.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        req.set_timeout(aiprod_sdk::DEFAULT_TIMEOUT);
        Ok(req)
    }
}

type HealthChannel = HealthClient<InterceptedService<Channel, Bearer>>;

pub async fn run(
    s: &Settings,
    dir: &std::path::Path,
    server: &ServerProc,
    secret: &str,
) -> anyhow::Result<Vec<Row>> {
    let bare = ServerProc::bare(s, dir).await?;
    let bearer = Bearer(format!("Bearer {secret}").parse()?);
    let mut base_conns: Vec<HealthChannel> = Vec::new();
    for _ in 0..s.connections {
        // The SDK's channel settings.
        let channel = Endpoint::from_shared(bare.endpoint.clone())?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .connect()
            .await?;
        base_conns.push(HealthClient::new(InterceptedService::new(
            channel,
            bearer.clone(),
        )));
    }
    let health = |mut c: HealthChannel| async move {
        c.check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
    };
    let conns = clients(&server.endpoint, secret, s.connections).await?;
    // A delivered job to read (nothing runs behind the measurement).
    let (job_id, state, _, _) = job_until(
        &conns[0],
        format!("unary-{}", unix_micros()),
        "quick_social",
        None,
        None,
    )
    .await?;
    anyhow::ensure!(
        state == pb::JobState::Delivered as i32,
        "the GetJob target job ended in state {state}"
    );
    let est_conns: Vec<CostEstimatorServiceClient<AuthChannel>> =
        conns.iter().map(|c| c.costs().raw()).collect();
    let get_conns: Vec<RenderServiceClient<AuthChannel>> =
        conns.iter().map(|c| c.render().raw()).collect();
    let request = pb::EstimateCostRequest {
        preset_id: "brand_campaign".into(),
        duration_s: Some(60),
        ..Default::default()
    };
    let estimate = move |mut c: CostEstimatorServiceClient<AuthChannel>| {
        let request = request.clone();
        async move { c.estimate_cost(request).await.is_ok() }
    };
    let get = move |mut c: RenderServiceClient<AuthChannel>| {
        let job_id = job_id.clone();
        async move { c.get_job(pb::GetJobRequest { job_id }).await.is_ok() }
    };
    let mut out = Vec::new();
    for &callers in &s.callers {
        let mut row = Row {
            callers,
            samples: Default::default(),
        };
        for rep in 1..=s.reps {
            eprintln!(
                "aiprod bench: unary, {callers} callers, repetition {rep}/{}",
                s.reps
            );
            row.samples[0].push(drive(&base_conns, callers, s, bare.pid, health).await);
            row.samples[1].push(drive(&est_conns, callers, s, server.pid, estimate.clone()).await);
            row.samples[2].push(drive(&get_conns, callers, s, server.pid, get.clone()).await);
        }
        out.push(row);
    }
    drop(base_conns);
    bare.stop().await?;
    Ok(out)
}
