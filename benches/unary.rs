//! Section 1, unary calls against a bare tonic server in the same run: closed-loop callers over a
//! few connections; per repetition the baseline, `EstimateCost` and `GetJob` one after the other
//! (interleaved, so a change in the machine's load hits all three); medians and ranges over the
//! repetitions, with the server's CPU per call (from /proc/<pid>/stat) and the load average.

use crate::common::*;
use aiprod_sdk::pb;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;

/// One measurement of one target.
#[derive(Clone, Debug)]
pub struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Server CPU per call, warm-up included (µs).
    pub cpu_us: f64,
    /// The load generator's own CPU over the run, in % of a core (100: it is the bottleneck).
    pub loadgen_pct: f64,
    pub load: f64,
    pub errors: u64,
}

impl Sample {
    fn json(&self) -> Value {
        json!({
            "rps": round2(self.rps), "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
            "server_cpu_us_per_call": round2(self.cpu_us),
            "loadgen_cpu_pct": round2(self.loadgen_pct), "loadavg": self.load, "errors": self.errors,
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
    pub fn loadgen(&self, t: usize) -> Spread {
        spread(
            &self.samples[t]
                .iter()
                .map(|s| s.loadgen_pct)
                .collect::<Vec<_>>(),
        )
    }
    /// Server CPU per call of the baseline over target `t`'s, repetition by repetition (1: as lean).
    pub fn cpu_ratio(&self, t: usize) -> Spread {
        let r: Vec<f64> = self.samples[t]
            .iter()
            .zip(&self.samples[0])
            .map(|(o, b)| ratio(b.cpu_us, o.cpu_us))
            .collect();
        spread(&r)
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
                "loadgen_cpu_pct": self.loadgen(t).json(false),
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
            "ratio_server_cpu": { "estimate_cost": self.cpu_ratio(1).json(true), "get_job": self.cpu_ratio(2).json(true) },
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
    let own0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
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
    let own = cpu_seconds(std::process::id()).unwrap_or(0.0) - own0;
    Sample {
        loadgen_pct: 100.0 * own / started.elapsed().as_secs_f64(),
        rps: ok as f64 / s.seconds,
        p50_ms: ms(&hist, 0.5),
        p99_ms: ms(&hist, 0.99),
        cpu_us: if all > 0 { cpu * 1e6 / all as f64 } else { 0.0 },
        load: loadavg(),
        errors,
    }
}

/// One unary method called with the SDK's credential and deadline, its answer taken as bytes
/// (checked to be a non-empty message, not decoded): the load generator then does the same small
/// work per call for every target and stays off the critical path, so the ratios are the servers'
/// (a typed client decoding `EstimateCostResponse` saturated the load generator's core first).
#[derive(Clone)]
struct RawCall<Req> {
    grpc: tonic::client::Grpc<Channel>,
    path: http::uri::PathAndQuery,
    request: Req,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl<Req: prost::Message + Clone + Send + 'static> RawCall<Req> {
    async fn call(mut self) -> bool {
        if self.grpc.ready().await.is_err() {
            return false;
        }
        let mut req = tonic::Request::new(self.request);
        req.metadata_mut()
            .insert("authorization", self.authorization);
        req.set_timeout(aiprod_sdk::DEFAULT_TIMEOUT);
        self.grpc
            .unary(req, self.path, RawCodec(std::marker::PhantomData))
            .await
            .is_ok_and(|answer| !answer.get_ref().is_empty())
    }
}

/// Encodes requests with prost; answers are their bytes.
struct RawCodec<Req>(std::marker::PhantomData<fn(Req)>);

impl<Req: prost::Message + Send + 'static> tonic::codec::Codec for RawCodec<Req> {
    type Encode = Req;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec<Req>;
    type Decoder = RawCodec<Req>;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec(std::marker::PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec(std::marker::PhantomData)
    }
}

impl<Req: prost::Message> tonic::codec::Encoder for RawCodec<Req> {
    type Item = Req;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Req,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl<Req> tonic::codec::Decoder for RawCodec<Req> {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `n` connections with the SDK's channel settings, each a raw caller of `path` with `request`.
async fn raw_calls<Req: Clone>(
    endpoint: &str,
    n: usize,
    path: &'static str,
    request: Req,
    secret: &str,
) -> anyhow::Result<Vec<RawCall<Req>>> {
    let authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {secret}").parse()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .connect()
            .await?;
        out.push(RawCall {
            grpc: tonic::client::Grpc::new(channel),
            path: http::uri::PathAndQuery::from_static(path),
            request: request.clone(),
            authorization: authorization.clone(),
        });
    }
    Ok(out)
}

pub async fn run(
    s: &Settings,
    dir: &std::path::Path,
    server: &ServerProc,
    secret: &str,
) -> anyhow::Result<Vec<Row>> {
    let bare = ServerProc::bare(s, dir).await?;
    let base_conns = raw_calls(
        &bare.endpoint,
        s.connections,
        "/grpc.health.v1.Health/Check",
        HealthCheckRequest {
            service: String::new(),
        },
        secret,
    )
    .await?;
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
    let est_conns = raw_calls(
        &server.endpoint,
        s.connections,
        "/aiprod.v1.CostEstimatorService/EstimateCost",
        pb::EstimateCostRequest {
            preset_id: "brand_campaign".into(),
            duration_s: Some(60),
            ..Default::default()
        },
        secret,
    )
    .await?;
    let get_conns = raw_calls(
        &server.endpoint,
        s.connections,
        "/aiprod.v1.RenderService/GetJob",
        pb::GetJobRequest { job_id },
        secret,
    )
    .await?;
    let health = RawCall::call;
    let estimate = RawCall::call;
    let get = RawCall::call;
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
            row.samples[1].push(drive(&est_conns, callers, s, server.pid, estimate).await);
            row.samples[2].push(drive(&get_conns, callers, s, server.pid, get).await);
        }
        out.push(row);
    }
    drop(base_conns);
    bare.stop().await?;
    Ok(out)
}
