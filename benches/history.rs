//! Section 3, cost against history: a tenant with 0, 10k and 100k prior jobs (delivered this month,
//! each with its ledger lines) creates jobs and reads its usage. The prior jobs are copies of one
//! real delivered job, written straight into the SQLite file in one transaction while the server
//! is stopped (ids and timestamps changed; the per-tenant counter row raised to match), then the
//! server starts again on it. Job events are not copied: neither path reads them.

use crate::common::*;
use aiprod_sdk::pb;
use serde_json::{Value, json};
use sqlx::Connection;
use std::time::{Duration, Instant};

pub struct History {
    pub prior_jobs: usize,
    pub seed_seconds: f64,
    pub create_rps: f64,
    pub create_p50_ms: f64,
    pub create_p99_ms: f64,
    pub usage_rps: f64,
    pub usage_p50_ms: f64,
    pub usage_p99_ms: f64,
    pub usage_jobs: u32,
    pub load: f64,
    pub errors: u64,
}

impl History {
    pub fn json(&self) -> Value {
        json!({
            "prior_jobs": self.prior_jobs,
            "seed_seconds": round2(self.seed_seconds),
            "create_job": { "callers": CREATE_CALLERS, "rps": round2(self.create_rps), "p50_ms": self.create_p50_ms, "p99_ms": self.create_p99_ms },
            "get_usage": { "callers": 1, "rps": round2(self.usage_rps), "p50_ms": self.usage_p50_ms, "p99_ms": self.usage_p99_ms, "jobs_this_month": self.usage_jobs },
            "loadavg": self.load,
            "errors": self.errors,
        })
    }
}

const CREATE_CALLERS: usize = 4;

/// Copies the tenant's one job `template` `n` times, with its ledger lines, in one transaction.
async fn seed(
    db: &std::path::Path,
    tenant_id: &str,
    template: &str,
    n: usize,
) -> anyhow::Result<()> {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let mut tx = conn.begin().await?;
    let n = n as i64;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO jobs (id, tenant_id, request_id, state, preset_id, last_seq, created_ms,
                           updated_ms, doc, lease_owner, lease_token, lease_expires_ms)
         SELECT printf('job_seed%08d', i), tenant_id, 'seed-' || i, state, preset_id, last_seq,
                created_ms - i, updated_ms - i, replace(doc, $2, printf('job_seed%08d', i)),
                NULL, 0, 0
         FROM jobs, n WHERE jobs.id = $2",
    )
    .bind(n)
    .bind(template)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO ledger (job_id, line_no, tenant_id, sandbox, amount, succeeded, created_ms, doc)
         SELECT printf('job_seed%08d', i), line_no, tenant_id, sandbox, amount, succeeded,
                created_ms - i, replace(doc, $2, printf('job_seed%08d', i))
         FROM ledger, n WHERE ledger.job_id = $2",
    )
    .bind(n)
    .bind(template)
    .execute(&mut *tx)
    .await?;
    let updated =
        sqlx::query("UPDATE tenant_job_counts SET total = total + $1 WHERE tenant_id = $2")
            .bind(n)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    anyhow::ensure!(updated == 1, "no tenant_job_counts row for the tenant");
    // The maintained monthly rows hold the template's figures alone: scale them to every copy.
    let k = n + 1;
    let usage = sqlx::query(
        "UPDATE tenant_month_usage SET jobs = jobs * $1, certified_jobs = certified_jobs * $1,
             billed = billed * $1, delivered_seconds = delivered_seconds * $1 WHERE tenant_id = $2",
    )
    .bind(k)
    .bind(tenant_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    anyhow::ensure!(usage == 1, "no tenant_month_usage row for the tenant");
    sqlx::query(
        "UPDATE tenant_month_spend SET billable = billable * $1, metered = metered * $1
         WHERE tenant_id = $2",
    )
    .bind(k)
    .bind(tenant_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

async fn one(s: &Settings, prior: usize) -> anyhow::Result<History> {
    let dir = tempfile::tempdir()?;
    let server = ServerProc::aiprod(s, dir.path(), None, 0, SHORT_SIDE).await?;
    let (tenant_id, secret) = tenant_key(&server.endpoint, "bench-history").await?;
    let client = aiprod_sdk::Client::connect(server.endpoint.clone(), &secret).await?;
    let (template, state, _, _) = job_until(
        &client,
        "history-template".into(),
        "quick_social",
        None,
        None,
    )
    .await?;
    anyhow::ensure!(
        state == pb::JobState::Delivered as i32,
        "the template job ended in state {state}"
    );
    drop(client);
    server.stop().await?;
    let seeded = Instant::now();
    if prior > 1 {
        seed(
            &dir.path().join("aiprod.db"),
            &tenant_id,
            &template,
            prior - 1,
        )
        .await?;
    }
    let seed_seconds = seeded.elapsed().as_secs_f64();

    let server = ServerProc::aiprod(s, dir.path(), None, 0, SHORT_SIDE).await?;
    let conns = clients(&server.endpoint, &secret, CREATE_CALLERS).await?;
    // Warm the key and the usage path once.
    let usage = conns[0]
        .costs()
        .raw()
        .get_usage(pb::GetUsageRequest::default())
        .await?
        .into_inner();
    let window = Duration::from_secs_f64(s.seconds.max(1.0) * if s.quick { 1.0 } else { 1.5 });

    let mut raw = conns[0].costs().raw();
    let mut usage_hist = histogram();
    let end = Instant::now() + window;
    let (mut reads, mut errors) = (0, 0);
    while Instant::now() < end {
        let t0 = Instant::now();
        if raw.get_usage(pb::GetUsageRequest::default()).await.is_ok() {
            reads += 1;
            usage_hist.saturating_record(t0.elapsed().as_micros() as u64);
        } else {
            errors += 1;
        }
    }

    // CreateJob: brand_campaign jobs stop at manifest review, so little runs behind them.
    let end = Instant::now() + window;
    let tag = unix_micros();
    let tasks: Vec<_> = conns
        .iter()
        .enumerate()
        .map(|(w, c)| {
            let mut raw = c.render().raw();
            tokio::spawn(async move {
                let (mut hist, mut ok, mut errors, mut n) = (histogram(), 0_u64, 0_u64, 0);
                while Instant::now() < end {
                    n += 1;
                    let t0 = Instant::now();
                    let r = raw
                        .create_job(pb::CreateJobRequest {
                            request_id: format!("h-{tag}-{w}-{n}"),
                            preset_id: "brand_campaign".into(),
                            brief: BRIEF.into(),
                            brand_id: "acme-shoes".into(),
                            duration_s: Some(20),
                            ..Default::default()
                        })
                        .await;
                    if r.is_ok() {
                        ok += 1;
                        hist.saturating_record(t0.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (hist, ok, errors)
            })
        })
        .collect();
    let mut create_hist = histogram();
    let mut created = 0;
    for t in tasks {
        let (h, o, e) = t.await?;
        let _ = create_hist.add(&h);
        created += o;
        errors += e;
    }
    let create_rps = created as f64 / window.as_secs_f64();

    let out = History {
        prior_jobs: prior.max(1),
        seed_seconds,
        create_rps,
        create_p50_ms: ms(&create_hist, 0.5),
        create_p99_ms: ms(&create_hist, 0.99),
        usage_rps: reads as f64 / window.as_secs_f64(),
        usage_p50_ms: ms(&usage_hist, 0.5),
        usage_p99_ms: ms(&usage_hist, 0.99),
        usage_jobs: usage.jobs,
        load: loadavg(),
        errors,
    };
    drop(conns);
    server.stop().await?;
    Ok(out)
}

pub async fn run(s: &Settings) -> anyhow::Result<Vec<History>> {
    let mut out = Vec::new();
    for &prior in &s.history {
        eprintln!("aiprod bench: history, {prior} prior jobs ...");
        out.push(one(s, prior).await?);
    }
    Ok(out)
}
