//! Chaos runs, long form, and the scale-out benchmark rows: `cargo bench --bench chaos`.
//!
//! Every server is the real `aiprod` binary in its own process; this process is the client.
//! 1. kill/restart: 3 replicas on one throwaway PostgreSQL, `AIPROD_CHAOS_JOBS` (200) quick_social
//!    jobs with 10 % sandbox failures, a random replica SIGKILLed and restarted `AIPROD_CHAOS_KILLS`
//!    (8) times spread over the run, then the full audit (`tests/chaos/driver.rs`);
//! 2. end-to-end jobs/s on the smallest sandbox clips (28x16, latency 0, no failures,
//!    `AIPROD_CHAOS_TP_JOBS` (60) jobs, 16 at a time) on SQLite (1 replica) and on PostgreSQL with 1,
//!    2 and 3 replicas;
//! 3. the rescue time of a dead replica's jobs (lease 2 s).
//!
//! Figures only: the audit asserts correctness, nothing asserts a timing.

#[path = "../tests/chaos/driver.rs"]
mod driver;
#[path = "../tests/harness.rs"]
mod harness;
#[allow(dead_code, unused_imports)]
#[path = "../tests/postgres.rs"]
mod postgres;

use driver::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs = env_usize("AIPROD_CHAOS_JOBS", 200);
    let kills = env_usize("AIPROD_CHAOS_KILLS", 8);
    let tp_jobs = env_usize("AIPROD_CHAOS_TP_JOBS", 60);
    let mut rows: Vec<(String, String)> = Vec::new();

    let opts = Options {
        tenants: 5,
        ..Options::default()
    };
    let fleet = Fleet::start(opts).await;
    let (audit, elapsed) = kill_restart_run(&fleet, jobs, 16, kills).await;
    let line = figures("kill/restart", &audit, &fleet, elapsed);
    println!("{line}");
    rows.push(("chaos: 3 replicas, kills throughout".into(), line));
    drop(fleet);

    for (name, sqlite, replicas) in [
        ("SQLite, 1 replica", true, 1),
        ("PostgreSQL, 1 replica", false, 1),
        ("PostgreSQL, 2 replicas", false, 2),
        ("PostgreSQL, 3 replicas", false, 3),
    ] {
        let opts = Options {
            replicas,
            sqlite,
            latency_ms: 0,
            failure_rate: 0.0,
            tenants: 2,
            ..Options::default()
        };
        let (rate, audit) = throughput(opts, tp_jobs, 16).await;
        let line = format!(
            "{:.2} jobs/s ({} jobs, {} delivered)",
            rate, audit.jobs, audit.delivered
        );
        println!("end-to-end, {name}: {line}");
        rows.push((format!("end-to-end jobs/s, {name}"), line));
    }

    let opts = Options {
        latency_ms: 1_000,
        ..Options::default()
    };
    let r = dead_replica_rescue(opts, 6).await;
    let line = format!(
        "{} jobs taken over {:.2} s after SIGKILL (lease 2 s, poll 0.5 s), all delivered {:.2} s after",
        r.jobs,
        r.rescued.as_secs_f64(),
        r.finished.as_secs_f64()
    );
    println!("rescue: {line}");
    rows.push(("rescue of a dead replica's jobs".into(), line));

    println!("\n| figure | value |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
