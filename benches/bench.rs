//! The AIPROD performance benchmark: `cargo bench --bench bench [-- --quick] [-- --json PATH]`.
//!
//! It measures like an outside benchmarker: the server under test is the built `aiprod` binary in
//! its own process, and the baseline (a bare tonic server) too; with `taskset` present and 2+
//! CPUs the servers run on core 0 and this process (the load generator) on core 1. Figures are
//! medians over interleaved repetitions with the range (min–max) beside them, and the machine's
//! 1-minute load average beside each. Sections:
//! 1. unary (`unary.rs`): `EstimateCost` and `GetJob` against the bare server's
//!    `grpc.health.v1.Health/Check`, at 1 and 64 callers, repetition by repetition;
//! 2. `WatchJob` fan-out (`fanout.rs`): N streams on one job: server memory per idle stream, server
//!    CPU while they idle, commit-to-receive latency;
//! 3. history (`history.rs`): CreateJob rate and GetUsage latency for a tenant with 0, 10k and
//!    100k prior jobs;
//! 4. end to end (`e2e.rs`): jobs/s with a zero-latency sandbox, 32 concurrent, SQLite and
//!    PostgreSQL with 1 and 3 replicas on one database (when its binaries are found);
//! 5. media (`media.rs`, in this process, unpinned): the data plane's CPU cost.
//!
//! Prints markdown tables (also written to `target/bench-results.md`, the source of the README's
//! Benchmarks section) and one JSON document (`--json PATH`, `AIPROD_BENCH_JSON`, default
//! `target/bench-results.json`). Figures only: nothing here asserts a timing.
//!
//! Settings (environment; defaults, then `--quick` defaults): `AIPROD_BENCH_REPS` (5, 2),
//! `AIPROD_BENCH_SECONDS` (measured window, 2, 1), `AIPROD_BENCH_WARMUP_SECONDS` (0.5, 0.3),
//! `AIPROD_BENCH_CALLERS` ("1,64"), `AIPROD_BENCH_CONNECTIONS` (4), `AIPROD_BENCH_STREAMS`
//! ("10000", "1000"), `AIPROD_BENCH_STREAMS_PER_CONNECTION` (100), `AIPROD_BENCH_OPEN_BATCH`
//! (200), `AIPROD_BENCH_FANOUT_LATENCY_MS` (20), `AIPROD_BENCH_IDLE_SECONDS` (4, 2),
//! `AIPROD_BENCH_HISTORY` ("0,10000,100000", "0,10000"), `AIPROD_BENCH_JOB_CONCURRENCY` (32),
//! `AIPROD_BENCH_E2E_SECONDS` (5, 2; after 3 s of warm-up), `AIPROD_BENCH_POSTGRES` (`auto`, `0`; or `1`),
//! `AIPROD_BENCH_PG_REPLICAS` ("1,3"), `AIPROD_BENCH_PG_HOLD` (seconds to keep the cluster after each PostgreSQL
//! row, its URL printed, to inspect it with `psql`; with `AIPROD_PG_OPTS` for server options),
//! `AIPROD_BENCH_MEDIA` (1, 0), `AIPROD_BENCH_SECTIONS` (the sections to run, comma-separated
//! among `unary,fanout,history,e2e,media`; default all), `AIPROD_BENCH_PIN` (`0` disables pinning), `AIPROD_BENCH_BIN`
//! (the server binary; default the `aiprod` built with this bench), `AIPROD_PG_BIN`.

mod common;
mod e2e;
mod fanout;
mod history;
mod media;
mod unary;

use common::*;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Instant;

const SKIPPED: &str = "not in AIPROD_BENCH_SECTIONS";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var("AIPROD_BENCH_ROLE").as_deref() == Ok("bare") {
        return bare_server_main().await;
    }
    let mut s = Settings::from_args();
    let started = Instant::now();
    let machine = machine_json();
    let cpus = machine["cpus"].as_u64().unwrap_or(1) as usize;
    s.pin = Pinning::apply();
    eprintln!("aiprod bench: pinning {}", s.pin.note);
    eprintln!("aiprod bench: settings {}", s.json());
    let dir = tempfile::tempdir()?;
    let sub = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        let p = dir.path().join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    };

    // 1. Unary, then 4. end to end on SQLite, on one server (zero sandbox latency).
    let mut unary = Vec::new();
    let mut sqlite = e2e::E2e::skipped("sqlite", s.job_concurrency, SKIPPED.into());
    if s.section("unary") || s.section("e2e") {
        let server = ServerProc::aiprod(&s, &sub("unary")?, None, 0, SHORT_SIDE).await?;
        if s.section("unary") {
            let (_, secret) = tenant_key(&server.endpoint, "bench-unary").await?;
            unary = unary::run(&s, dir.path(), &server, &secret).await?;
        }
        if s.section("e2e") {
            eprintln!("aiprod bench: end-to-end jobs on SQLite ...");
            let (_, job_secret) = tenant_key(&server.endpoint, "bench-e2e-sqlite").await?;
            sqlite = e2e::e2e(&s, "sqlite", &[&server], &job_secret).await?;
        }
        server.stop().await?;
    }

    // 2. Fan-out, with a small sandbox latency so events are spread out, and the least media
    // work (28x16 clips).
    let mut fan = Vec::new();
    if s.section("fanout") {
        let fan_server =
            ServerProc::aiprod(&s, &sub("fanout")?, None, s.fanout_latency_ms, 16).await?;
        let (_, fan_secret) = tenant_key(&fan_server.endpoint, "bench-fanout").await?;
        for &n in &s.streams {
            eprintln!("aiprod bench: fan-out, {n} streams on one job ...");
            fan.push(fanout::run(&s, &fan_server, &fan_secret, n).await?);
        }
        fan_server.stop().await?;
    }

    // 3. History.
    let history = if s.section("history") {
        history::run(&s).await?
    } else {
        Vec::new()
    };

    // 4. End to end on PostgreSQL.
    let mut jobs = vec![sqlite];
    if s.section("e2e") {
        eprintln!("aiprod bench: end-to-end jobs on PostgreSQL ...");
        jobs.extend(e2e::e2e_postgres(&s).await?);
    } else {
        jobs.push(e2e::E2e::skipped(
            "postgres",
            s.job_concurrency,
            SKIPPED.into(),
        ));
    }

    // 5. Media, on every CPU.
    let media = if s.media && s.section("media") {
        s.pin.release(cpus);
        eprintln!("aiprod bench: media ...");
        media::run().await?
    } else {
        json!({"skipped": "AIPROD_BENCH_MEDIA=0 or --quick"})
    };

    let report = json!({
        "benchmark": "aiprod",
        "machine": machine,
        "settings": s.json(),
        "unary": unary.iter().map(unary::Row::json).collect::<Vec<_>>(),
        "watch_fanout": fan.iter().map(fanout::Fanout::json).collect::<Vec<_>>(),
        "history": history.iter().map(history::History::json).collect::<Vec<_>>(),
        "e2e_jobs": jobs.iter().map(e2e::E2e::json).collect::<Vec<_>>(),
        "media": media,
        "total_seconds": round2(started.elapsed().as_secs_f64()),
    });
    let markdown = markdown(&report, &s, &unary, &fan, &history, &jobs);
    println!("\n{markdown}");
    media::print(&report["media"]);
    let text = serde_json::to_string_pretty(&report)?;
    for (path, body) in [(&s.json_path, &text), (&s.markdown_path, &markdown)] {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, format!("{body}\n"))?;
    }
    eprintln!(
        "aiprod bench: done in {:.1} s; JSON written to {}, tables to {}",
        started.elapsed().as_secs_f64(),
        s.json_path.display(),
        s.markdown_path.display()
    );
    Ok(())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// The report as markdown tables: printed, and pasted into the README's Benchmarks section.
fn markdown(
    report: &Value,
    s: &Settings,
    unary: &[unary::Row],
    fan: &[fanout::Fanout],
    history: &[history::History],
    jobs: &[e2e::E2e],
) -> String {
    let m = &report["machine"];
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Commit `{}`{}, {} CPUs ({}), {} GiB; load average {} at the start; {}{}; total {} s.",
        m["commit"].as_str().unwrap_or("?"),
        if m["dirty"].as_bool() == Some(true) {
            " (with uncommitted changes)"
        } else {
            ""
        },
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["memory_gib"],
        m["loadavg_at_start"],
        if s.pin.applied {
            "servers pinned to core 0, load generator to core 1 (taskset)"
        } else {
            "pinning "
        },
        if s.pin.applied {
            String::new()
        } else {
            s.pin.note.clone()
        },
        report["total_seconds"],
    );
    let _ = writeln!(
        o,
        "\n**1. Unary**: closed-loop callers over {} connections, {} interleaved repetitions of (bare tonic `Health/Check` server, AIPROD `EstimateCost` brand_campaign 60 s, AIPROD `GetJob`), {} s each after {} s of warm-up; each server in its own process. Median (min–max).\n",
        s.connections, s.reps, s.seconds, s.warmup
    );
    o.push_str("| callers | target | calls/s | ratio to bare | p50 ms | p99 ms | server CPU µs/call | CPU ratio (bare / target) | load generator CPU % | load avg |\n");
    o.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in unary {
        for (t, name) in unary::TARGETS.iter().enumerate() {
            let (ratio, cpu_ratio) = if t == 0 {
                ("1".into(), "1".into())
            } else {
                (r.ratio(t).show(3), r.cpu_ratio(t).show(3))
            };
            let errors = r.errors(t);
            let _ = writeln!(
                o,
                "| {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.callers,
                name,
                if errors > 0 {
                    format!(" ({errors} errors)")
                } else {
                    String::new()
                },
                r.rps(t).show(0),
                ratio,
                r.p50(t).show(2),
                r.p99(t).show(2),
                r.cpu(t).show(1),
                cpu_ratio,
                r.loadgen(t).show(0),
                r.load(t).show(2),
            );
        }
    }
    let _ = writeln!(
        o,
        "\n**2. WatchJob fan-out**: N streams on one job (SQLite, sandbox {} ms per shot, a 2-shot brand_campaign job held at review, then approved), {} streams per connection. Memory and CPU are the server process's. Probe streams (of the N, opened last) are received on a thread of their own: their latency is the server's, without the load generator's own receive backlog, at their place in the fan-out (not chosen by the bench). CPU per fan-out is the server's CPU per delivered event times N: the soonest the last stream can have an event on one core.\n",
        s.fanout_latency_ms, s.streams_per_connection
    );
    o.push_str("| streams | open s | server KiB per idle stream | server CPU while idle (% of a core, load avg) | commit→receive p50 ms | p99 ms | max ms | probe streams p50 / p99 / max ms | events | drain s | server CPU µs per delivered event (drain) | server CPU ms per fan-out to N | server RSS MiB: before / open / after close | errors | load avg |\n");
    o.push_str("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|\n");
    let mib = |k: Option<u64>| opt(k.map(|k| format!("{:.1}", k as f64 / 1024.0)));
    for f in fan {
        let _ = writeln!(
            o,
            "| {} | {:.2} | {} | {} ({}) | {:.2} | {:.2} | {:.2} | {} : {:.2} / {:.2} / {:.2} | {} | {:.2} | {} | {} | {} / {} / {} | {} | {} |",
            f.streams,
            f.open_seconds,
            opt(f.kib_per_stream().map(|k| format!("{k:.1}"))),
            opt(f.idle_cpu_percent.map(|c| format!("{c:.1}"))),
            f.idle_load,
            ms(&f.hist, 0.5),
            ms(&f.hist, 0.99),
            max_ms(&f.hist),
            f.probes,
            ms(&f.probe_hist, 0.5),
            ms(&f.probe_hist, 0.99),
            max_ms(&f.probe_hist),
            f.events,
            f.drain_seconds,
            opt(f.cpu_us_per_event().map(|c| format!("{c:.2}"))),
            opt(f.cpu_ms_per_fan_out().map(|c| format!("{c:.1}"))),
            mib(f.rss_before_kib),
            mib(f.rss_open_kib),
            mib(f.rss_closed_kib),
            f.errors,
            f.load,
        );
    }
    for f in fan.iter().filter(|f| !f.probe_max_by_event.is_empty()) {
        let by_event: Vec<String> = f
            .probe_max_by_event
            .iter()
            .map(|(seq, us)| format!("{seq}: {:.1}", *us as f64 / 1000.0))
            .collect();
        let _ = writeln!(
            o,
            "\nSlowest probe delivery of each event at {} streams, ms by event sequence (the first follows the approval; the last is terminal): {}.",
            f.streams,
            by_event.join(", ")
        );
    }
    o.push_str(
        "\n**3. History**: a tenant whose prior jobs (delivered this month, with their ledger lines) were written into SQLite before the server started, with the tenant's maintained counter and monthly rows raised to match. GetUsage first (1 caller), then CreateJob: 4 closed-loop callers, brand_campaign (stops at review).\n\n",
    );
    o.push_str("| prior jobs | seeding s | CreateJob/s | CreateJob p50 / p99 ms | GetUsage/s | GetUsage p50 / p99 ms | jobs in usage | errors | load avg |\n");
    o.push_str("|---:|---:|---:|---|---:|---|---:|---:|---:|\n");
    for h in history {
        let _ = writeln!(
            o,
            "| {} | {:.2} | {:.1} | {:.2} / {:.2} | {:.1} | {:.2} / {:.2} | {} | {} | {} |",
            h.prior_jobs,
            h.seed_seconds,
            h.create_rps,
            h.create_p50_ms,
            h.create_p99_ms,
            h.usage_rps,
            h.usage_p50_ms,
            h.usage_p99_ms,
            h.usage_jobs,
            h.errors,
            h.load,
        );
    }
    let _ = writeln!(
        o,
        "\n**4. End to end**: quick_social jobs, zero-latency sandbox renders at 160x90, {} concurrent (CreateJob, then WatchJob to DELIVERED), {} s after {} s of warm-up. With pinning, the servers share core 0 and PostgreSQL runs on core 1 beside the load generator (which takes about 5 % of it); letting PostgreSQL float over both cores measured slower, its backends then queueing behind the server on core 0.\n",
        s.job_concurrency,
        s.e2e_seconds,
        s.e2e_warmup()
    );
    o.push_str("| database | jobs/s | delivered | failed | errors | p50 ms | p99 ms | events/job | server CPU ms/job | load avg |\n");
    o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for j in jobs {
        if let Some(why) = &j.skipped {
            let _ = writeln!(o, "| {} | skipped: {why} | | | | | | | | |", j.database);
            continue;
        }
        let _ = writeln!(
            o,
            "| {} | {:.1} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {} |",
            j.database,
            j.jobs_per_second(),
            j.delivered,
            j.failed,
            j.errors,
            ms(&j.hist, 0.5),
            ms(&j.hist, 0.99),
            ratio(j.events as f64, j.delivered as f64),
            opt(j
                .server_cpu_seconds
                .filter(|_| j.delivered > 0)
                .map(|c| format!("{:.1}", c * 1000.0 / j.delivered as f64))),
            j.load,
        );
    }
    let errors: Vec<String> = fan
        .iter()
        .filter_map(|f| {
            f.first_error
                .as_ref()
                .map(|e| format!("fan-out {}: {e}", f.streams))
        })
        .chain(jobs.iter().filter_map(|j| {
            j.first_error
                .as_ref()
                .map(|e| format!("jobs {}: {e}", j.database))
        }))
        .collect();
    for e in errors {
        let _ = writeln!(o, "\nFirst error: {e}");
    }
    o
}
