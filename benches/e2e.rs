//! Section 4, end to end: `quick_social` jobs per second with zero sandbox latency, created
//! concurrently and watched to DELIVERED, on SQLite and on a throwaway PostgreSQL cluster
//! (`initdb` + `pg_ctl`) with 1 and 3 replicas; every job renders, measures and assembles real
//! video at 160x90. Each server runs in its own process; their CPU over the run is reported
//! beside the rate.

use crate::common::*;
use aiprod_sdk::pb;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// 3. End-to-end jobs per second

pub struct E2e {
    /// `sqlite`, or `postgres ×N` (N replicas on one database).
    pub database: String,
    pub concurrency: usize,
    pub seconds: f64,
    pub delivered: u64,
    pub failed: u64,
    pub errors: u64,
    pub events: u64,
    pub hist: Histogram<u64>,
    pub first_error: Option<String>,
    pub skipped: Option<String>,
    pub server_cpu_seconds: Option<f64>,
    pub load: f64,
}

impl E2e {
    pub fn new(database: &str, concurrency: usize, seconds: f64) -> E2e {
        E2e {
            database: database.to_string(),
            concurrency,
            seconds,
            delivered: 0,
            failed: 0,
            errors: 0,
            events: 0,
            hist: histogram(),
            first_error: None,
            skipped: None,
            server_cpu_seconds: None,
            load: 0.0,
        }
    }

    pub fn skipped(database: &str, concurrency: usize, why: String) -> E2e {
        E2e {
            skipped: Some(why),
            ..E2e::new(database, concurrency, 0.0)
        }
    }

    pub fn jobs_per_second(&self) -> f64 {
        ratio(self.delivered as f64, self.seconds)
    }

    pub fn json(&self) -> Value {
        let mut v = latency_json(&self.hist);
        v["database"] = json!(self.database);
        v["concurrency"] = json!(self.concurrency);
        v["seconds"] = json!(self.seconds);
        v["delivered"] = json!(self.delivered);
        v["failed"] = json!(self.failed);
        v["errors"] = json!(self.errors);
        v["jobs_per_second"] = json!(self.jobs_per_second());
        v["events_per_job"] = json!(ratio(self.events as f64, self.delivered as f64));
        v["first_error"] = json!(self.first_error);
        v["skipped"] = json!(self.skipped);
        v["server_cpu_seconds"] = json!(self.server_cpu_seconds.map(round2));
        v["loadavg"] = json!(self.load);
        v
    }
}

/// `job_concurrency` workers, each creating a job, watching it to DELIVERED, and starting the next.
/// Jobs delivered within the measured window count; latency is CreateJob sent → DELIVERED received.
pub async fn e2e(
    s: &Settings,
    database: &str,
    servers: &[&ServerProc],
    secret: &str,
) -> anyhow::Result<E2e> {
    // The load is spread over every replica (workers round-robin over the connections).
    let mut conns = Vec::new();
    for server in servers {
        conns.extend(clients(&server.endpoint, secret, s.connections).await?);
    }
    // Jobs started together finish together: warm up until the first wave has gone through.
    let measure_from = Instant::now() + Duration::from_secs_f64(s.e2e_warmup());
    let end = measure_from + Duration::from_secs_f64(s.e2e_seconds);
    // The servers' CPU over the measured window only.
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let cpu_window = tokio::spawn(async move {
        let total = |pids: &[u32]| -> Option<f64> { pids.iter().map(|p| cpu_seconds(*p)).sum() };
        tokio::time::sleep_until(measure_from.into()).await;
        let c0 = total(&pids);
        tokio::time::sleep_until(end.into()).await;
        Some(total(&pids)? - c0?)
    });
    let tag = unix_micros();
    let tasks: Vec<_> = (0..s.job_concurrency)
        .map(|w| {
            let client = conns[w % conns.len()].clone();
            let database = database.to_string();
            tokio::spawn(async move {
                let mut out = E2e::new(&database, 1, 0.0);
                let mut n = 0_u64;
                while Instant::now() < end {
                    n += 1;
                    let t0 = Instant::now();
                    let outcome = tokio::time::timeout(
                        Duration::from_secs(60),
                        job_until(
                            &client,
                            format!("e2e-{tag}-{w}-{n}"),
                            "quick_social",
                            None,
                            None,
                        ),
                    )
                    .await;
                    let t1 = Instant::now();
                    let counted = t1 >= measure_from && t1 <= end;
                    match outcome {
                        Ok(Ok((_, state, _, events))) if counted => {
                            if state == pb::JobState::Delivered as i32 {
                                out.delivered += 1;
                                out.events += events;
                                out.hist.saturating_record((t1 - t0).as_micros() as u64);
                            } else {
                                out.failed += 1;
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(e.to_string());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(_) => {
                            out.errors += 1;
                            out.first_error
                                .get_or_insert("a job took longer than 60 s".into());
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut total = E2e::new(database, s.job_concurrency, s.e2e_seconds);
    for t in tasks {
        let w = t.await?;
        let _ = total.hist.add(&w.hist);
        total.delivered += w.delivered;
        total.failed += w.failed;
        total.errors += w.errors;
        total.events += w.events;
        if total.first_error.is_none() {
            total.first_error = w.first_error;
        }
    }
    total.server_cpu_seconds = cpu_window.await?;
    total.load = loadavg();
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// A throwaway PostgreSQL cluster: the integration tests' own.

#[allow(dead_code)] // the tests' outage helpers (stop, restart) are not used here
#[path = "../tests/support/pg_cluster.rs"]
mod pg_cluster;
use pg_cluster::PgCluster;

/// End to end on PostgreSQL with 1, then 3 replicas sharing one database (the load spread over
/// them); on a 2-core machine every replica shares the servers' core, so this shows the cost of
/// coordination more than scale.
pub async fn e2e_postgres(s: &Settings) -> anyhow::Result<Vec<E2e>> {
    let skip = |why: String| Ok(vec![E2e::skipped("postgres", s.job_concurrency, why)]);
    if s.postgres == "0" {
        return skip("AIPROD_BENCH_POSTGRES=0".into());
    }
    let required = s.postgres == "1";
    let Some(bin) = pg_cluster::find_bin() else {
        anyhow::ensure!(!required, "PostgreSQL binaries (initdb, pg_ctl) not found");
        return skip("PostgreSQL binaries (initdb, pg_ctl) not found; set AIPROD_PG_BIN".into());
    };
    let cluster = match tokio::task::spawn_blocking(move || PgCluster::try_start(bin)).await? {
        Ok(c) => c,
        Err(e) if !required => return skip(format!("could not start PostgreSQL: {e}")),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for &replicas in &s.pg_replicas {
        let dir = tempfile::tempdir()?;
        let mut servers = Vec::new();
        for r in 0..replicas {
            let sub = dir.path().join(format!("replica-{r}"));
            std::fs::create_dir_all(&sub)?;
            servers.push(ServerProc::aiprod(s, &sub, Some(&cluster.url), 0, SHORT_SIDE).await?);
        }
        let (_, secret) = tenant_key(
            &servers[0].endpoint,
            &format!("bench-e2e-postgres-{replicas}"),
        )
        .await?;
        let refs: Vec<&ServerProc> = servers.iter().collect();
        let label = format!("postgres ×{replicas}");
        let result = e2e(s, &label, &refs, &secret).await;
        for server in servers {
            server.stop().await?;
        }
        out.push(result?);
        if let Ok(hold) = std::env::var("AIPROD_BENCH_PG_HOLD") {
            eprintln!("HOLD {}", cluster.url);
            tokio::time::sleep(Duration::from_secs(hold.parse().unwrap_or(300))).await;
        }
    }
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    Ok(out)
}
