//! Section 2, `WatchJob` fan-out: N streams on one job, opened while the job waits for manifest
//! approval (no replay), then the job is approved and renders. Figures: the server's resident
//! memory per idle open stream (VmRSS of the server process before and after opening them), the
//! server's CPU while the idle streams stay open, commit-to-receive latency of every event on
//! every stream (the event's `create_time`, stamped in the committing transaction, against the
//! receive time), the drain time, and the server's memory once the streams have closed.
//!
//! The load generator is one core receiving every message of every stream (110k for 10k streams),
//! so the all-streams latency includes its own receive lag: it falls behind the server during a
//! burst. `PROBES` of the N streams (opened last, on two connections of their own) are received
//! on a thread of their own, with its own runtime: it has almost nothing to do, so the scheduler
//! runs it as soon as its socket is readable, and its latency is the server's commit-to-delivery
//! time rather than the load generator's backlog. It is the time at the probes' place in the
//! fan-out, which the bench does not choose (the channel's waiters and the runtime's queue order
//! the connections): the server's CPU per delivered event times N (`cpu_ms_per_fan_out`) is the
//! least time in which every stream can have an event, whatever the order.

use crate::common::*;
use aiprod_sdk::{Client, pb};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct Fanout {
    pub streams: usize,
    pub connections: usize,
    pub open_seconds: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_open_kib: Option<u64>,
    pub rss_closed_kib: Option<u64>,
    pub idle_cpu_percent: Option<f64>,
    pub idle_load: f64,
    pub events: u64,
    pub drain_seconds: f64,
    /// The server's CPU from the approval until every stream ended.
    pub drain_cpu_seconds: Option<f64>,
    pub hist: Histogram<u64>,
    /// The probe streams' latency (see the module's doc).
    pub probe_hist: Histogram<u64>,
    /// The probe streams' slowest delivery of each event (µs), by sequence: which commit the
    /// tail comes from.
    pub probe_max_by_event: BTreeMap<u64, u64>,
    pub probes: usize,
    pub load: f64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Fanout {
    pub fn kib_per_stream(&self) -> Option<f64> {
        let (before, after) = (self.rss_before_kib?, self.rss_open_kib?);
        Some(round2((after as f64 - before as f64) / self.streams as f64))
    }

    /// Server CPU per event delivered to a stream, while draining (job work included).
    pub fn cpu_us_per_event(&self) -> Option<f64> {
        let cpu = self.drain_cpu_seconds?;
        (self.events > 0).then(|| round2(cpu * 1e6 / self.events as f64))
    }

    /// Server CPU to deliver one event to all N streams (ms): the soonest the last of them can
    /// have it on one core.
    pub fn cpu_ms_per_fan_out(&self) -> Option<f64> {
        self.cpu_us_per_event()
            .map(|us| round2(us * self.streams as f64 / 1000.0))
    }

    pub fn json(&self) -> Value {
        let mut v = latency_json(&self.hist);
        v["probe_streams"] = json!(self.probes);
        v["probe_latency"] = latency_json(&self.probe_hist);
        v["probe_max_ms_by_event_sequence"] = self
            .probe_max_by_event
            .iter()
            .map(|(seq, us)| (seq.to_string(), json!(round2(*us as f64 / 1000.0))))
            .collect::<serde_json::Map<_, _>>()
            .into();
        v["streams"] = json!(self.streams);
        v["jobs"] = json!(1);
        v["connections"] = json!(self.connections);
        v["open_seconds"] = json!(round2(self.open_seconds));
        v["server_rss_before_kib"] = json!(self.rss_before_kib);
        v["server_rss_open_kib"] = json!(self.rss_open_kib);
        v["server_rss_after_close_kib"] = json!(self.rss_closed_kib);
        v["server_kib_per_idle_stream"] = json!(self.kib_per_stream());
        v["server_idle_cpu_percent_of_a_core"] = json!(self.idle_cpu_percent.map(round2));
        v["loadavg_while_idle"] = json!(self.idle_load);
        v["events_delivered"] = json!(self.events);
        v["drain_seconds"] = json!(round2(self.drain_seconds));
        v["server_cpu_seconds_while_draining"] = json!(self.drain_cpu_seconds.map(round2));
        v["server_cpu_us_per_delivered_event"] = json!(self.cpu_us_per_event());
        v["server_cpu_ms_per_fan_out"] = json!(self.cpu_ms_per_fan_out());
        v["loadavg"] = json!(self.load);
        v["errors"] = json!(self.errors);
        v["first_error"] = json!(self.first_error);
        v
    }
}

async fn approve(client: &Client, job_id: String) -> anyhow::Result<()> {
    let manifest = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job_id.clone(),
        })
        .await?
        .into_inner()
        .manifest
        .context("GetManifest returned no manifest")?;
    client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id,
            etag: manifest.etag,
        })
        .await?;
    Ok(())
}

/// One open stream, opened after `open_seq` (no replay): reports "open" once the server has
/// answered with the stream's headers, then records the delivery latency of every event until the
/// terminal one, and by event when `by_event` (the probes: the loaded streams share the load
/// generator's one core, where the extra map per stream would add to its backlog).
async fn one_stream(
    client: Client,
    job_id: String,
    open_seq: u64,
    ready: mpsc::UnboundedSender<()>,
    by_event: bool,
) -> Received {
    let mut hist = histogram();
    let mut latency_by_event = BTreeMap::new();
    let mut received = 0_u64;
    let mut request = tonic::Request::new(pb::WatchJobRequest {
        job_id,
        after_sequence: open_seq,
    });
    request.set_timeout(Duration::from_secs(600));
    let opened = client.render().raw().watch_job(request).await;
    let _ = ready.send(()); // open, or failed: never leave the opener waiting
    let error = match opened {
        Err(status) => Some(status.to_string()),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        let Some(e) = message.event else { continue };
                        let micros = delivery_micros(&e);
                        hist.saturating_record(micros);
                        if by_event {
                            latency_by_event.insert(e.sequence, micros);
                        }
                        received += 1;
                        if aiprod_sdk::is_terminal(e.state) {
                            break None;
                        }
                    }
                    Ok(None) => break Some("the stream ended before the terminal event".into()),
                    Err(status) => break Some(status.to_string()),
                }
            }
        }
    };
    Received {
        hist,
        by_event: latency_by_event,
        events: received,
        error,
    }
}

/// What one stream received: delivery latencies (all, and by event sequence), events, the error
/// that ended it early.
struct Received {
    hist: Histogram<u64>,
    by_event: BTreeMap<u64, u64>,
    events: u64,
    error: Option<String>,
}

/// What the probe thread received from all its streams.
#[derive(Default)]
struct Probed {
    hist: Option<Histogram<u64>>,
    max_by_event: BTreeMap<u64, u64>,
    events: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Streams received on a thread of their own.
fn probe_thread(
    endpoint: String,
    secret: String,
    job_id: String,
    open_seq: u64,
    probes: usize,
    ready: mpsc::UnboundedSender<()>,
) -> std::thread::JoinHandle<Probed> {
    std::thread::spawn(move || {
        let mut hist = histogram();
        let mut out = Probed::default();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                out.errors = 1;
                out.first_error = Some(format!("probe runtime: {e}"));
                return out;
            }
        };
        runtime.block_on(async {
            let conns = match clients(&endpoint, &secret, probes.div_ceil(8)).await {
                Ok(c) => c,
                Err(e) => {
                    for _ in 0..probes {
                        let _ = ready.send(());
                    }
                    out.errors += 1;
                    out.first_error = Some(format!("probe connections: {e}"));
                    return;
                }
            };
            let tasks: Vec<_> = (0..probes)
                .map(|i| {
                    tokio::spawn(one_stream(
                        conns[i % conns.len()].clone(),
                        job_id.clone(),
                        open_seq,
                        ready.clone(),
                        true,
                    ))
                })
                .collect();
            drop(ready);
            for t in tasks {
                match t.await {
                    Ok(r) => {
                        let _ = hist.add(&r.hist);
                        for (seq, micros) in r.by_event {
                            let max = out.max_by_event.entry(seq).or_default();
                            *max = (*max).max(micros);
                        }
                        out.events += r.events;
                        if let Some(e) = r.error {
                            out.errors += 1;
                            out.first_error.get_or_insert(e);
                        }
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                    }
                }
            }
        });
        out.hist = Some(hist);
        out
    })
}

/// Probe streams among the N (see the module's doc).
const PROBES: usize = 16;

pub async fn run(
    s: &Settings,
    server: &ServerProc,
    secret: &str,
    streams: usize,
) -> anyhow::Result<Fanout> {
    let probes = PROBES.min(streams / 2);
    let loaded = streams - probes;
    let connections = streams.div_ceil(s.streams_per_connection);
    let conns = clients(&server.endpoint, secret, connections).await?;
    let control = Client::connect(server.endpoint.clone(), secret).await?;
    let (job_id, state, open_seq, _) = job_until(
        &control,
        format!("fanout-{}", unix_micros()),
        "brand_campaign",
        // Two shots: the job's clips are real and render quickly.
        Some(20),
        Some(pb::JobState::AwaitingApproval),
    )
    .await?;
    anyhow::ensure!(
        state == pb::JobState::AwaitingApproval as i32,
        "the fan-out job ended before review (state {state})"
    );
    // Let the preparatory watcher end on the server before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = server.rss_kib();

    let opened = Instant::now();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut tasks: Vec<JoinHandle<_>> = Vec::with_capacity(streams);
    // In batches, so that the figure is the memory of open streams rather than the peak of a burst.
    let all_ready = tokio::time::timeout(Duration::from_secs(120), async {
        for first in (0..loaded).step_by(s.open_batch) {
            let batch = first..loaded.min(first + s.open_batch);
            for i in batch.clone() {
                tasks.push(tokio::spawn(one_stream(
                    conns[i % connections].clone(),
                    job_id.clone(),
                    open_seq,
                    ready_tx.clone(),
                    false,
                )));
            }
            for _ in batch {
                let _ = ready_rx.recv().await;
            }
        }
    })
    .await;
    let probe = probe_thread(
        server.endpoint.clone(),
        secret.to_string(),
        job_id.clone(),
        open_seq,
        probes,
        ready_tx.clone(),
    );
    drop(ready_tx);
    let probes_ready = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..probes {
            let _ = ready_rx.recv().await;
        }
    })
    .await;
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let open_seconds = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_open_kib = server.rss_kib();
    // Idle: every stream open, nothing happening on the job.
    let cpu0 = server.cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(s.idle_seconds)).await;
    let idle_cpu_percent = match (cpu0, server.cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) * 100.0 / t0.elapsed().as_secs_f64()),
        _ => None,
    };
    let idle_load = loadavg();

    let mut out = Fanout {
        streams,
        connections,
        open_seconds,
        rss_before_kib,
        rss_open_kib,
        rss_closed_kib: None,
        idle_cpu_percent,
        idle_load,
        events: 0,
        drain_seconds: 0.0,
        drain_cpu_seconds: None,
        hist: histogram(),
        probe_hist: histogram(),
        probe_max_by_event: BTreeMap::new(),
        probes,
        load: 0.0,
        errors: 0,
        first_error: None,
    };
    if all_ready.is_err() || probes_ready.is_err() {
        out.errors += 1;
        out.first_error = Some("the streams were not all open within 120 s".into());
    }

    // Trigger: approve the job; its rendering events fan out to the open streams.
    let triggered = Instant::now();
    let drain_cpu0 = server.cpu_seconds();
    if let Err(e) = approve(&control, job_id.clone()).await {
        out.errors += 1;
        out.first_error.get_or_insert(format!("approve: {e}"));
    }
    match tokio::time::timeout(Duration::from_secs(180), futures::future::join_all(tasks)).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(r) => {
                        let _ = out.hist.add(&r.hist);
                        out.events += r.events;
                        if let Some(e) = r.error {
                            out.errors += 1;
                            out.first_error.get_or_insert(e);
                        }
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                    }
                }
            }
        }
        Err(_) => {
            aborts.iter().for_each(|a| a.abort());
            out.errors += 1;
            out.first_error = Some("the streams did not all end within 180 s".into());
        }
    }
    match tokio::task::spawn_blocking(move || probe.join()).await {
        Ok(Ok(p)) => {
            if let Some(h) = &p.hist {
                let _ = out.hist.add(h);
                let _ = out.probe_hist.add(h);
            }
            out.probe_max_by_event = p.max_by_event;
            out.events += p.events;
            out.errors += p.errors;
            if let Some(e) = p.first_error {
                out.first_error.get_or_insert(e);
            }
        }
        _ => {
            out.errors += 1;
            out.first_error
                .get_or_insert("the probe thread failed".into());
        }
    }
    out.drain_seconds = triggered.elapsed().as_secs_f64();
    out.drain_cpu_seconds = match (drain_cpu0, server.cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    out.load = loadavg();
    drop(conns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.rss_closed_kib = server.rss_kib();
    Ok(out)
}
