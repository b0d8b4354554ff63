//! The scale-out store: several replicas on one PostgreSQL. Documents are `jsonb`, instants
//! `timestamptz`, flags `boolean`, money integer micro-USD (`bigint`; sums cast back to bigint).
//! Row locks (`FOR UPDATE`) order the writers of one job or tenant; leases are claimed with
//! `FOR UPDATE SKIP LOCKED` and expire on the database's clock. Commits announce themselves with
//! `NOTIFY` (sent by PostgreSQL only when the transaction commits); a listener on a dedicated
//! connection feeds them to this replica's watchers and claim loop, reconnecting after a loss.

use super::{
    Commit, Created, HeldJob, JobChange, JobFilter, JobLimits, Lease, MonthUsage, RUNNABLE_SQL,
    RowCache, Store, apply_change, bad_column, check_limits, job_page_sql, lease_ttl_ms,
    number_events, record_transition,
};
use crate::domain::job::{Event, Job, LedgerEntry};
use crate::domain::manifest::Markers;
use crate::domain::tenant::{ApiKey, KeyMode, Tenant, Trial};
use crate::domain::{JobState, Money, Tier};
use crate::error::{Error, Result};
use crate::events::EventHub;
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Channel of "job committed up to seq" (`<job id>:<seq>`).
const EVENTS_CHANNEL: &str = "aiprod_events";
/// Channel of "a job became runnable without a driver" (`<job id>`).
const WORK_CHANNEL: &str = "aiprod_work";

pub struct PgStore {
    pool: PgPool,
    /// Lease claims, renewals and releases: a small pool of their own, so a busy job pool never
    /// starves the heartbeat (a lease that cannot be renewed stops the replica's work).
    leases: PgPool,
    hub: Arc<EventHub>,
    work: Arc<tokio::sync::Notify>,
    listener: tokio::task::JoinHandle<()>,
    /// The lease holder's reads of its jobs (`job_by_id`): this replica's own commits as it made
    /// them. An entry is dropped when this replica claims the job (another may have changed it
    /// meanwhile) and when another replica's commit of it is announced; partner reads (`job`)
    /// always read the database. A commit reuses an entry only if the row version matches.
    jobs: Arc<RowCache<CachedJob>>,
    /// Commits of one job from this process are serialised (they are by the row lock anyway), so
    /// their cache updates land in commit order.
    commit_locks: Box<[tokio::sync::Mutex<()>]>,
}

/// Jobs kept for their lease holders.
const CACHED_JOBS: usize = 8192;

/// A job's document as of one version of its row: `xmin`, the id of the transaction that wrote
/// that version (every UPDATE of the row makes a new one, lease claims and renewals included).
/// Checked under the row lock, an equal version means the document is the one cached, so a commit
/// skips fetching and parsing it (about 6.7 KB of JSON, TOASTed, per commit).
struct CachedJob {
    version: i64,
    job: Job,
}

/// The row version of `jobs`, as a comparable number.
const ROW_VERSION: &str = "xmin::text::bigint";
const COMMIT_LOCK_STRIPES: usize = 64;
/// How long `connect` waits for the notification listener's first LISTEN.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The one place PostgreSQL errors become domain errors. Lost or refused connections, a pool that
/// cannot hand one out, a server shutting down and serialisation conflicts are worth retrying
/// (`UNAVAILABLE` + RetryInfo); a unique violation is the caller's conflict; the rest is ours.
fn db_err(e: sqlx::Error) -> Error {
    let retry = |what: &str| Error::Unavailable {
        message: format!("the database is {what}; retry shortly"),
        retry_after: Duration::from_secs(1),
    };
    match &e {
        sqlx::Error::PoolTimedOut => retry("busy"),
        sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => retry("unreachable"),
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            match code.as_ref() {
                // Connection exceptions; admin/crash shutdown, cannot connect now; too many connections.
                c if c.starts_with("08") => retry("unreachable"),
                // 25P03: the session was ended for idling in a transaction (a paused process).
                "57P01" | "57P02" | "57P03" | "53300" | "25P03" => retry("unavailable"),
                // Serialisation failure, deadlock: the transaction may simply run again.
                "40001" | "40P01" => retry("busy"),
                _ if d.is_unique_violation() => Error::Aborted("the record already exists".into()),
                _ => Error::internal(e),
            }
        }
        _ => Error::internal(e),
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T> {
    row.try_get(column).map_err(db_err)
}

const TENANT_COLUMNS: &str =
    "id, name, base_tier, monthly_budget, trial_tier, trial_end_at, job_quota, created_at";
const KEY_COLUMNS: &str = "id, tenant_id, name, mode, prefix, secret_hash, created_at, expires_at, revoked_at, last_used_at";

fn tier(s: String) -> Result<Tier> {
    Tier::parse(&s).ok_or_else(|| bad_column("tier", &s))
}

fn tenant_from(row: &PgRow) -> Result<Tenant> {
    let trial_tier: Option<String> = get(row, "trial_tier")?;
    let trial_end: Option<DateTime<Utc>> = get(row, "trial_end_at")?;
    let trial = match (trial_tier, trial_end) {
        (Some(t), Some(end)) => Some(Trial {
            tier: tier(t)?,
            end_ms: ms(end),
        }),
        _ => None,
    };
    Ok(Tenant {
        id: get(row, "id")?,
        name: get(row, "name")?,
        base_tier: tier(get(row, "base_tier")?)?,
        monthly_budget: get::<Option<i64>>(row, "monthly_budget")?.map(Money::from_micros),
        trial,
        job_quota: get::<Option<i64>>(row, "job_quota")?.map(|q| q as u32),
        created_ms: ms(get(row, "created_at")?),
    })
}

fn key_from(row: &PgRow) -> Result<ApiKey> {
    let mode: String = get(row, "mode")?;
    let opt_ms = |column: &str| -> Result<Option<i64>> {
        Ok(get::<Option<DateTime<Utc>>>(row, column)?.map(ms))
    };
    Ok(ApiKey {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        name: get(row, "name")?,
        mode: KeyMode::parse(&mode).ok_or_else(|| bad_column("key mode", &mode))?,
        prefix: get(row, "prefix")?,
        secret_hash: get(row, "secret_hash")?,
        created_ms: ms(get(row, "created_at")?),
        expires_ms: opt_ms("expires_at")?,
        revoked_ms: opt_ms("revoked_at")?,
        last_used_ms: opt_ms("last_used_at")?,
    })
}

fn held_from(row: &PgRow) -> Result<HeldJob> {
    let state: String = get(row, "state")?;
    Ok(HeldJob {
        job_id: get(row, "id")?,
        token: get(row, "lease_token")?,
        state: JobState::parse(&state).ok_or_else(|| bad_column("job state", &state))?,
    })
}

fn lease_from(row: &PgRow) -> Result<Lease> {
    Ok(Lease {
        job_id: get(row, "id")?,
        token: get(row, "lease_token")?,
    })
}

async fn notify(
    tx: &mut Transaction<'static, Postgres>,
    channel: &str,
    payload: &str,
) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

impl PgStore {
    /// Connects and migrates, then starts the notification listener.
    pub async fn connect(
        url: &str,
        hub: Arc<EventHub>,
        idle_in_transaction: Duration,
    ) -> anyhow::Result<PgStore> {
        // A replica paused (or cut off) in the middle of a transaction must not keep its row locks:
        // other replicas skip locked rows when they rescue jobs. PostgreSQL ends such a transaction
        // after this long (its late write is refused anyway by the fencing token).
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("bad database URL {}", super::redact(url)))?
            .options([(
                "idle_in_transaction_session_timeout",
                idle_in_transaction.as_millis().to_string(),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Short: while the database is away, calls answer UNAVAILABLE quickly.
            .acquire_timeout(Duration::from_secs(2))
            // A connection that died with the database is found on first use and replaced; pinging
            // on every acquire would cost a round trip per query.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("connecting to {}", super::redact(url)))?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .context("running migrations")?;
        let leases = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(2))
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        let work = Arc::new(tokio::sync::Notify::new());
        let jobs = Arc::new(RowCache::new(CACHED_JOBS));
        let (listening, mut first_listen) = tokio::sync::watch::channel(false);
        let listener = tokio::spawn(listen(
            pool.clone(),
            hub.clone(),
            work.clone(),
            jobs.clone(),
            listening,
        ));
        // Serve once this replica hears the others' commits (what it misses before that only
        // waits for the polling backstops); a database slow to answer LISTEN does not hold it up.
        if tokio::time::timeout(LISTEN_WAIT, first_listen.wait_for(|l| *l))
            .await
            .is_err()
        {
            tracing::warn!("not yet listening for other replicas' commits; starting anyway");
        }
        Ok(PgStore {
            pool,
            leases,
            hub,
            work,
            listener,
            jobs,
            commit_locks: (0..COMMIT_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_err)
    }

    async fn job_doc(&self, id: &str, tenant_id: Option<&str>) -> Result<Option<Job>> {
        let doc: Option<Json<Job>> = match tenant_id {
            Some(t) => {
                sqlx::query_scalar("SELECT doc FROM jobs WHERE id = $1 AND tenant_id = $2")
                    .bind(id)
                    .bind(t)
                    .fetch_optional(&self.pool)
                    .await
            }
            None => {
                sqlx::query_scalar("SELECT doc FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
            }
        }
        .map_err(db_err)?;
        Ok(doc.map(|d| d.0))
    }

    /// A tenant's job by the request id that created it.
    async fn job_by_request(&self, tenant_id: &str, request_id: &str) -> Result<Option<Job>> {
        let doc: Option<Json<Job>> =
            sqlx::query_scalar("SELECT doc FROM jobs WHERE tenant_id = $1 AND request_id = $2")
                .bind(tenant_id)
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(doc.map(|d| d.0))
    }

    async fn insert_events(
        tx: &mut Transaction<'static, Postgres>,
        events: &[Event],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // One statement for all of a commit's events.
        let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| at(e.at_ms)).collect();
        let docs: Vec<Json<&Event>> = events.iter().map(Json).collect();
        sqlx::query(
            "INSERT INTO job_events (job_id, seq, created_at, doc)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::timestamptz[], $4::jsonb[])",
        )
        .bind(&events[0].job_id)
        .bind(&seqs)
        .bind(&times)
        .bind(&docs)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Numbers a commit's ledger lines: the job's count before them (from its document, or
    /// counted for documents written before it was kept), then records the new count.
    async fn ledger_lines(
        tx: &mut Transaction<'static, Postgres>,
        job: &mut Job,
        ledger: &[LedgerEntry],
    ) -> Result<i64> {
        if ledger.is_empty() {
            return Ok(0);
        }
        let lines: i64 = match job.ledger_lines {
            Some(n) => i64::from(n),
            None => sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE job_id = $1")
                .bind(&job.id)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_err)?,
        };
        job.ledger_lines = Some((lines + ledger.len() as i64) as u32);
        Ok(lines)
    }

    async fn insert_ledger(
        tx: &mut Transaction<'static, Postgres>,
        job: &Job,
        lines: i64,
        ledger: &[LedgerEntry],
    ) -> Result<()> {
        if ledger.is_empty() {
            return Ok(());
        }
        for (i, entry) in ledger.iter().enumerate() {
            sqlx::query(
                "INSERT INTO ledger (job_id, line_no, tenant_id, sandbox, amount, succeeded, created_at, doc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&job.id)
            .bind(lines + i as i64 + 1)
            .bind(&job.tenant_id)
            .bind(job.sandbox)
            .bind(entry.amount.micros())
            .bind(entry.succeeded)
            .bind(at(entry.at_ms))
            .bind(Json(entry))
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        }
        for (month, billable, metered) in super::spend_by_month(ledger) {
            sqlx::query(
                "INSERT INTO tenant_month_spend (tenant_id, sandbox, month_start, stripe, billable, metered)
                 VALUES ($1, $2, $3, $6, $4, $5)
                 ON CONFLICT (tenant_id, sandbox, month_start, stripe) DO UPDATE SET
                     billable = tenant_month_spend.billable + excluded.billable,
                     metered = tenant_month_spend.metered + excluded.metered",
            )
            .bind(&job.tenant_id)
            .bind(job.sandbox)
            .bind(at(month))
            .bind(billable)
            .bind(metered)
            .bind(tenant_row_stripe(&job.id))
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        }
        Ok(())
    }

    /// Adds to the usage row of the job's creation month: `jobs` new jobs, and an ended job's
    /// (bill, delivered seconds).
    async fn add_month_usage(
        tx: &mut Transaction<'static, Postgres>,
        job: &Job,
        jobs: i64,
        ended: Option<(i64, i64)>,
    ) -> Result<()> {
        let (billed, seconds) = ended.unwrap_or_default();
        sqlx::query(
            "INSERT INTO tenant_month_usage (tenant_id, sandbox, month_start, stripe, jobs, certified_jobs, billed, delivered_seconds)
             VALUES ($1, $2, $3, $8, $4, $5, $6, $7)
             ON CONFLICT (tenant_id, sandbox, month_start, stripe) DO UPDATE SET
                 jobs = tenant_month_usage.jobs + excluded.jobs,
                 certified_jobs = tenant_month_usage.certified_jobs + excluded.certified_jobs,
                 billed = tenant_month_usage.billed + excluded.billed,
                 delivered_seconds = tenant_month_usage.delivered_seconds + excluded.delivered_seconds",
        )
        .bind(&job.tenant_id)
        .bind(job.sandbox)
        .bind(at(crate::domain::calendar::month_start_ms(job.created_ms)))
        .bind(jobs)
        .bind(i64::from(ended.is_some()))
        .bind(billed)
        .bind(seconds)
        .bind(tenant_row_stripe(&job.id))
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn claim_where(
        &self,
        owner: &str,
        ttl: Duration,
        job_id: Option<&str>,
    ) -> Result<Option<Lease>> {
        let pick = match job_id {
            Some(_) => format!(
                "SELECT id FROM jobs WHERE id = $3 AND {RUNNABLE_SQL} AND lease_expires_at < now() FOR UPDATE SKIP LOCKED"
            ),
            None => format!(
                "SELECT id FROM jobs WHERE {RUNNABLE_SQL} AND lease_expires_at < now()
                 ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED"
            ),
        };
        let sql = format!(
            "UPDATE jobs SET lease_owner = $1, lease_token = lease_token + 1,
                 lease_expires_at = now() + $2 * interval '1 millisecond'
             WHERE id = ({pick}) RETURNING id, lease_token"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_ttl_ms(ttl) as f64)
            .bind(job_id.unwrap_or_default())
            .fetch_optional(&self.leases)
            .await
            .map_err(db_err)?;
        let lease = row.as_ref().map(lease_from).transpose()?;
        if let Some(lease) = &lease {
            // Others may have changed the job since this replica last held it.
            self.jobs.wrote(&lease.job_id, None);
        }
        Ok(lease)
    }
}

/// Feeds NOTIFY messages to the hub and the claim loop. `PgListener` reconnects by itself; what was
/// sent while it was away is lost, so after a reconnect it wakes the claim loop (which then scans)
/// and watchers keep their polling backstop.
async fn listen(
    pool: PgPool,
    hub: Arc<EventHub>,
    work: Arc<tokio::sync::Notify>,
    jobs: Arc<RowCache<CachedJob>>,
    listening: tokio::sync::watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "notification listener cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen_all([EVENTS_CHANNEL, WORK_CHANNEL]).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(200);
        listening.send_replace(true);
        // Whatever was announced while the listener was away: claim loops scan, watchers re-read.
        work.notify_one();
        hub.resync_all();
        // Commits announced while away are unknown: no cached job can be trusted.
        jobs.clear();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match n.channel() {
                    EVENTS_CHANNEL => {
                        if let Some((job, seq)) = n.payload().rsplit_once(':')
                            && let Ok(seq) = seq.parse::<u64>()
                        {
                            // Another replica's commit (this one's own are cached up to `seq`).
                            if jobs.get(job).is_none_or(|j| j.job.last_seq < seq) {
                                jobs.wrote(job, None);
                            }
                            share_remote_commit(&pool, &hub, job, seq).await;
                        }
                    }
                    _ => work.notify_one(),
                },
                // The connection was lost: a fresh LISTEN on a new connection, then scan.
                Ok(None) => {
                    tracing::info!("notification listener reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

/// Another replica committed a job up to `seq`: if watchers here are behind, read the new events
/// once and hand them to all of them (instead of one read per watcher).
async fn share_remote_commit(pool: &PgPool, hub: &EventHub, job_id: &str, seq: u64) {
    let Some(known) = hub.watched_up_to(job_id) else {
        return; // nobody watches it here
    };
    if known >= seq {
        return; // committed here (or already shared)
    }
    let read = sqlx::query_scalar::<_, Json<Event>>(
        "SELECT doc FROM job_events WHERE job_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
    )
    .bind(job_id)
    .bind(known as i64)
    .bind(seq as i64)
    .fetch_all(pool)
    .await;
    match read {
        Ok(docs) if docs.len() as u64 == seq - known => {
            hub.publish_events(job_id, seq, docs.into_iter().map(|d| d.0).collect());
        }
        // Partial or failed: the watchers read what they miss themselves.
        _ => hub.publish(job_id, seq),
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    fn shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn work_available(&self) {
        self.work.notified().await;
    }

    async fn close(&self) {
        self.listener.abort();
        self.leases.close().await;
        self.pool.close().await;
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn claim_setting(&self, name: &str, value: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenants (id, name, base_tier, monthly_budget, trial_tier, trial_end_at, job_quota, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.base_tier.as_str())
        .bind(t.monthly_budget.map(Money::micros))
        .bind(t.trial.as_ref().map(|tr| tr.tier.as_str()))
        .bind(t.trial.as_ref().map(|tr| at(tr.end_ms)))
        .bind(t.job_quota.map(i64::from))
        .bind(at(t.created_ms))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let r = sqlx::query(
            "UPDATE tenants SET name = $2, base_tier = $3, monthly_budget = $4, trial_tier = $5, trial_end_at = $6, job_quota = $7
             WHERE id = $1",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.base_tier.as_str())
        .bind(t.monthly_budget.map(Money::micros))
        .bind(t.trial.as_ref().map(|tr| tr.tier.as_str()))
        .bind(t.trial.as_ref().map(|tr| at(tr.end_ms)))
        .bind(t.job_quota.map(i64::from))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if r.rows_affected() == 0 {
            return Err(Error::not_found("tenant"));
        }
        Ok(())
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let sql = AssertSqlSafe(format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(tenant_from).transpose()
    }

    async fn tenants(&self, after_id: &str, limit: u32) -> Result<Vec<Tenant>> {
        let sql = AssertSqlSafe(format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
        ));
        let rows = sqlx::query(sql)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(tenant_from).collect()
    }

    async fn insert_key(&self, k: &ApiKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, mode, prefix, secret_hash, created_at, expires_at, revoked_at, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.name)
        .bind(k.mode.as_str())
        .bind(&k.prefix)
        .bind(&k.secret_hash)
        .bind(at(k.created_ms))
        .bind(k.expires_ms.map(at))
        .bind(k.revoked_ms.map(at))
        .bind(k.last_used_ms.map(at))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn key(&self, id: &str) -> Result<Option<ApiKey>> {
        let sql = AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(key_from).transpose()
    }

    async fn keys_of(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        let sql = AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
        ));
        let rows = sqlx::query(sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(key_from).collect()
    }

    async fn revoke_key(&self, id: &str, now: i64) -> Result<Option<ApiKey>> {
        sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(at(now))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        self.key(id).await
    }

    async fn touch_key(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)")
            .bind(id)
            .bind(at(now))
            .bind(at(now - 60_000))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn create_job(&self, mut job: Job, limits: JobLimits) -> Result<Created> {
        // The creates of one tenant meet only at its shared rows (month usage, then job counts),
        // updated last: the counts row takes the limits atomically (a conditional increment), so
        // its row lock is held for the end of the transaction, not for all of it. Holding the
        // tenant's row for the whole create made every create of a tenant wait in one queue (the
        // end-to-end bench saw a dozen creates waiting on it at any moment).
        // Nothing is locked, so the replay and the early refusal need no transaction: a replay
        // is answered, and a tenant at a limit refused, without writing (the increment below
        // decides for creates that race).
        if let Some(existing) = self.job_by_request(&job.tenant_id, &job.request_id).await? {
            return Ok(Created::Existing(existing));
        }
        let (active, total) = self.job_counts(&job.tenant_id).await?;
        check_limits(&job.tenant_id, active.into(), total.into(), limits)?;
        let mut tx = self.begin().await?;
        let pending = std::mem::take(&mut job.pending_events);
        job.last_seq = 0;
        let created_ms = job.created_ms;
        let events = number_events(&mut job, pending, created_ms);
        // A create of the same request id in flight elsewhere: this insert waits for it, then
        // does nothing if it committed, and the job it made is the answer.
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, tenant_id, request_id, state, preset_id, last_seq, created_at, updated_at, doc)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, request_id) DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.tenant_id)
        .bind(&job.request_id)
        .bind(job.state.as_str())
        .bind(&job.spec.preset_id)
        .bind(job.last_seq as i64)
        .bind(at(job.created_ms))
        .bind(at(job.updated_ms))
        .bind(Json(&job))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await.map_err(db_err)?;
            return match self.job_by_request(&job.tenant_id, &job.request_id).await? {
                Some(existing) => Ok(Created::Existing(existing)),
                // Gone again (never: jobs are not deleted); the caller may retry.
                None => Err(Error::Unavailable {
                    message: "a concurrent create of this request id did not settle; retry".into(),
                    retry_after: Duration::from_millis(100),
                }),
            };
        }
        if !job.spec.labels.is_empty() {
            let (keys, values): (Vec<&str>, Vec<&str>) = job
                .spec
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .unzip();
            sqlx::query(
                "INSERT INTO job_labels (job_id, label_key, label_value)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[])",
            )
            .bind(&job.id)
            .bind(&keys)
            .bind(&values)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        Self::insert_events(&mut tx, &events).await?;
        // The tenant's shared rows in one order everywhere (spend, month usage, counts), or two
        // transactions could each hold one and wait for the other.
        Self::add_month_usage(&mut tx, &job, 1, None).await?;
        // The limits, atomically: the increment happens only below them (the row is locked and
        // re-checked against the latest committed counts). Its notifications in the same statement.
        let counted = sqlx::query(COUNT_CREATED)
            .bind(&job.tenant_id)
            .bind(i64::from(limits.max_active))
            .bind(limits.job_quota.map_or(i64::MAX, i64::from))
            .bind(EVENTS_CHANNEL)
            .bind(format!("{}:{}", job.id, job.last_seq))
            .bind(WORK_CHANNEL)
            .bind(if super::runnable(job.state) {
                job.id.as_str()
            } else {
                ""
            })
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if counted.is_none() {
            // A concurrent create took the last place: the counts as they are now (locked).
            let (active, total): (i64, i64) = sqlx::query_as(JOB_COUNTS)
                .bind(&job.tenant_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .unwrap_or_default();
            tx.rollback().await.map_err(db_err)?;
            check_limits(&job.tenant_id, active, total, limits)?;
            return Err(Error::Unavailable {
                message: "the tenant's job counts changed during the create; retry".into(),
                retry_after: Duration::from_millis(100),
            });
        }
        tx.commit().await.map_err(db_err)?;
        self.hub.publish_events(&job.id, job.last_seq, events);
        Ok(Created::New(job))
    }

    async fn request_exists(&self, tenant_id: &str, request_id: &str) -> Result<bool> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM jobs WHERE tenant_id = $1 AND request_id = $2")
                .bind(tenant_id)
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(found.is_some())
    }

    async fn job(&self, tenant_id: &str, id: &str) -> Result<Option<Job>> {
        self.job_doc(id, Some(tenant_id)).await
    }

    async fn job_by_id(&self, id: &str) -> Result<Option<Job>> {
        if let Some(cached) = self.jobs.get(id) {
            return Ok(Some(cached.job.clone()));
        }
        let seen = self.jobs.before_read();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT doc, {ROW_VERSION} AS version FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let job = get::<Json<Job>>(&row, "doc")?.0;
        let version = get::<i64>(&row, "version")?;
        self.jobs.fill(seen, id, || CachedJob {
            version,
            job: job.clone(),
        });
        Ok(Some(job))
    }

    async fn job_counts(&self, tenant_id: &str) -> Result<(u32, u32)> {
        let (active, total): (i64, i64) = sqlx::query_as(JOB_COUNTS)
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .unwrap_or_default();
        Ok((active as u32, total as u32))
    }

    async fn spend_since(
        &self,
        tenant_id: &str,
        sandbox: bool,
        since_ms: i64,
    ) -> Result<(Money, Money)> {
        // Budgets and usage ask from a month's start: the maintained monthly rows answer.
        // (SUM(bigint) is numeric in PostgreSQL: cast back; micro-USD sums fit a bigint.)
        let sql = if crate::domain::calendar::month_start_ms(since_ms) == since_ms {
            "SELECT COALESCE(SUM(billable), 0)::bigint, COALESCE(SUM(metered), 0)::bigint
             FROM tenant_month_spend WHERE tenant_id = $1 AND sandbox = $2 AND month_start >= $3"
        } else {
            "SELECT COALESCE(SUM(amount) FILTER (WHERE succeeded), 0)::bigint, COALESCE(SUM(amount), 0)::bigint
             FROM ledger WHERE tenant_id = $1 AND sandbox = $2 AND created_at >= $3"
        };
        let (billable, metered): (i64, i64) = sqlx::query_as(sql)
            .bind(tenant_id)
            .bind(sandbox)
            .bind(at(since_ms))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok((Money::from_micros(billable), Money::from_micros(metered)))
    }

    async fn month_usage(
        &self,
        tenant_id: &str,
        sandbox: bool,
        month_start_ms: i64,
    ) -> Result<MonthUsage> {
        // The month's stripes added up (SUM(bigint) is numeric: cast back).
        let (jobs, certified_jobs, billed, delivered_seconds): (i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT COALESCE(SUM(jobs), 0)::bigint, COALESCE(SUM(certified_jobs), 0)::bigint,
                     COALESCE(SUM(billed), 0)::bigint, COALESCE(SUM(delivered_seconds), 0)::bigint
                 FROM tenant_month_usage WHERE tenant_id = $1 AND sandbox = $2 AND month_start = $3",
            )
            .bind(tenant_id)
            .bind(sandbox)
            .bind(at(month_start_ms))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        // Unfinished jobs are few (bounded by the tier's concurrency): read their current bills.
        // The states are listed so the (tenant, state) index seeks them: the history (terminal
        // jobs) is never scanned.
        let docs: Vec<Json<Job>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT doc FROM jobs WHERE tenant_id = $1 AND {} AND created_at >= $2",
            super::UNFINISHED_SQL
        )))
        .bind(tenant_id)
        .bind(at(month_start_ms))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(MonthUsage {
            jobs: jobs as u32,
            certified_jobs: certified_jobs as u32,
            billed: Money::from_micros(billed),
            pending: super::pending_of(docs.into_iter().map(|d| d.0), sandbox),
            delivered_seconds: delivered_seconds.max(0) as u64,
        })
    }

    async fn jobs(
        &self,
        tenant_id: &str,
        filter: &JobFilter,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let sql = job_page_sql("doc", filter, before_id.is_some());
        let mut q = sqlx::query_scalar::<_, Json<Job>>(AssertSqlSafe(sql)).bind(tenant_id);
        if let Some(b) = before_id {
            q = q.bind(b);
        }
        for s in &filter.states {
            q = q.bind(s.as_str());
        }
        if let Some(p) = &filter.preset_id {
            q = q.bind(p);
        }
        for (k, v) in &filter.labels {
            q = q.bind(k).bind(v);
        }
        let docs = q
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(docs.into_iter().map(|d| d.0).collect())
    }

    async fn update_job_dyn(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        fence: Option<&Lease>,
        change: JobChange<'_>,
    ) -> Result<Job> {
        let _serial = self.commit_locks[stripe_of(id, self.commit_locks.len())]
            .lock()
            .await;
        let cached = self.jobs.get(id);
        let mut tx = self.begin().await?;
        // The document only if the row changed since this replica cached it.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT lease_token, {ROW_VERSION} AS version,
                 CASE WHEN {ROW_VERSION} = $2 THEN NULL ELSE doc END AS doc
             FROM jobs WHERE id = $1 FOR UPDATE"
        )))
        .bind(id)
        .bind(cached.as_ref().map_or(-1, |c| c.version))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        // Nothing to write: end the transaction now. A dropped one is rolled back only when its
        // connection is next used, and until then it idles in a transaction (and is ended by
        // `idle_in_transaction_session_timeout` if that takes a while).
        let Some(row) = row else {
            tx.rollback().await.map_err(db_err)?;
            return Err(Error::not_found("job"));
        };
        if let Some(fence) = fence
            && get::<i64>(&row, "lease_token")? != fence.token
        {
            tx.rollback().await.map_err(db_err)?;
            return Err(Error::LeaseLost);
        }
        let mut job = match (get::<Option<Json<Job>>>(&row, "doc")?, cached) {
            (Some(doc), _) => doc.0,
            (None, Some(cached)) => cached.job.clone(),
            (None, None) => {
                tx.rollback().await.map_err(db_err)?;
                return Err(Error::Internal(anyhow::anyhow!(
                    "job {id}: a row without its document"
                )));
            }
        };
        let before = job.state;
        let commit = match apply_change(&mut job, tenant_id, change) {
            Ok(commit) => commit,
            Err(e) => {
                tx.rollback().await.map_err(db_err)?;
                return Err(e);
            }
        };
        let Some(Commit { events, ledger }) = commit else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(job);
        };
        // The ledger's line count is in the document: number the lines before writing it.
        let lines = Self::ledger_lines(&mut tx, &mut job, &ledger).await?;
        // The job's own rows in one statement: its events, its document and the announcement
        // (NOTIFY is delivered at commit).
        let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| at(e.at_ms)).collect();
        let docs: Vec<Json<&Event>> = events.iter().map(Json).collect();
        let announce = if events.is_empty() {
            String::new()
        } else {
            format!("{id}:{}", job.last_seq)
        };
        let written = sqlx::query(AssertSqlSafe(format!(
            "WITH ev AS (
                 INSERT INTO job_events (job_id, seq, created_at, doc)
                 SELECT $1, * FROM UNNEST($6::bigint[], $7::timestamptz[], $8::jsonb[])
             ), j AS (
                 UPDATE jobs SET state = $2, last_seq = $3, updated_at = $4, doc = $5 WHERE id = $1
                 RETURNING {ROW_VERSION} AS version
             )
             SELECT version, CASE WHEN $10 <> '' THEN pg_notify($9, $10) END FROM j"
        )))
        .bind(id)
        .bind(job.state.as_str())
        .bind(job.last_seq as i64)
        .bind(at(job.updated_ms))
        .bind(Json(&job))
        .bind(&seqs)
        .bind(&times)
        .bind(&docs)
        .bind(EVENTS_CHANNEL)
        .bind(&announce)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let version = get::<i64>(&written, "version")?;
        Self::insert_ledger(&mut tx, &job, lines, &ledger).await?;
        // The tenant's counter rows are shared by all its jobs: touch them last, so their row
        // locks are held for the shortest time.
        if let Some(ended) = super::month_effect(before, &job) {
            Self::add_month_usage(&mut tx, &job, 0, Some(ended)).await?;
        }
        let delta = super::active_delta(before, job.state);
        if delta != 0 {
            sqlx::query(COUNT_ACTIVE)
                .bind(&job.tenant_id)
                .bind(delta)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        if fence.is_none() && super::runnable(job.state) && !super::runnable(before) {
            notify(&mut tx, WORK_CHANNEL, id).await?;
        }
        tx.commit().await.map_err(db_err)?;
        self.jobs.wrote(
            id,
            Some(CachedJob {
                version,
                job: job.clone(),
            }),
        );
        self.hub.publish_events(id, job.last_seq, events);
        record_transition(before, &job);
        Ok(job)
    }

    async fn events_after(&self, job_id: &str, after: u64, limit: u32) -> Result<Vec<Event>> {
        let docs: Vec<Json<Event>> = sqlx::query_scalar(
            "SELECT doc FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(docs.into_iter().map(|d| d.0).collect())
    }

    async fn ledger(&self, job_id: &str) -> Result<Vec<LedgerEntry>> {
        let docs: Vec<Json<LedgerEntry>> =
            sqlx::query_scalar("SELECT doc FROM ledger WHERE job_id = $1 ORDER BY line_no")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(docs.into_iter().map(|d| d.0).collect())
    }

    async fn claim_next(&self, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.claim_where(owner, ttl, None).await
    }

    async fn claim(&self, owner: &str, job_id: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.claim_where(owner, ttl, Some(job_id)).await
    }

    async fn renew(&self, owner: &str, ttl: Duration) -> Result<Vec<HeldJob>> {
        let rows = sqlx::query(
            "UPDATE jobs SET lease_expires_at = now() + $2 * interval '1 millisecond'
             WHERE lease_owner = $1 RETURNING id, lease_token, state",
        )
        .bind(owner)
        .bind(lease_ttl_ms(ttl) as f64)
        .fetch_all(&self.leases)
        .await
        .map_err(db_err)?;
        rows.iter().map(held_from).collect()
    }

    async fn recover_leases(&self) -> Result<()> {
        Ok(())
    }

    async fn release(&self, owner: &str, lease: &Lease) -> Result<()> {
        let mut tx = self.leases.begin().await.map_err(db_err)?;
        let released: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = '-infinity'
             WHERE id = $1 AND lease_owner = $2 AND lease_token = $3 RETURNING state",
        )
        .bind(&lease.job_id)
        .bind(owner)
        .bind(lease.token)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        // Released while runnable (this replica is stopping): another replica may take it now.
        if released
            .as_deref()
            .and_then(JobState::parse)
            .is_some_and(super::runnable)
        {
            notify(&mut tx, WORK_CHANNEL, &lease.job_id).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn brand_markers(
        &self,
        tenant_id: &str,
        brand_id: &str,
        now: i64,
    ) -> Result<Option<(Markers, i64)>> {
        let row = sqlx::query("SELECT doc, expires_at FROM brand_markers WHERE tenant_id = $1 AND brand_id = $2 AND expires_at > $3")
            .bind(tenant_id)
            .bind(brand_id)
            .bind(at(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(r) => Ok(Some((
                get::<Json<Markers>>(&r, "doc")?.0,
                ms(get(&r, "expires_at")?),
            ))),
            None => Ok(None),
        }
    }

    async fn put_brand_markers(
        &self,
        tenant_id: &str,
        brand_id: &str,
        markers: &Markers,
        expires_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO brand_markers (tenant_id, brand_id, doc, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, brand_id) DO UPDATE SET doc = excluded.doc, expires_at = excluded.expires_at",
        )
        .bind(tenant_id)
        .bind(brand_id)
        .bind(Json(markers))
        .bind(at(expires_ms))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn delete_brand_markers(
        &self,
        tenant_id: &str,
        brand_id: &str,
        now: i64,
    ) -> Result<bool> {
        let live: Option<bool> = sqlx::query_scalar(
            "DELETE FROM brand_markers WHERE tenant_id = $1 AND brand_id = $2 RETURNING expires_at > $3",
        )
        .bind(tenant_id)
        .bind(brand_id)
        .bind(at(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(live == Some(true))
    }
}

/// (jobs not yet terminal, jobs ever created) of one tenant, from its maintained counters.
const JOB_COUNTS: &str = "SELECT active, total FROM tenant_job_counts WHERE tenant_id = $1";

/// Counts a new job (in the create transaction).
/// `$2`/`$3` are the limits (most active, most ever; a first job is within any limit of at least
/// one, checked before); no row comes back when the increment would pass them. `$4`..`$7`: the
/// commit's notifications (the second only when `$7` is not empty).
const COUNT_CREATED: &str = "WITH c AS (
         INSERT INTO tenant_job_counts AS t (tenant_id, active, total) VALUES ($1, 1, 1)
         ON CONFLICT (tenant_id) DO UPDATE SET active = t.active + 1, total = t.total + 1
             WHERE t.active < $2 AND t.total < $3
         RETURNING t.active
     )
     SELECT active, pg_notify($4, $5), CASE WHEN $7 <> '' THEN pg_notify($6, $7) END FROM c";

/// Moves a job in or out of the active count (in the transaction of its transition).
const COUNT_ACTIVE: &str = "UPDATE tenant_job_counts SET active = active + $2 WHERE tenant_id = $1";

/// Stripes of a tenant's monthly spend and usage rows (migration 0007).
const TENANT_ROW_STRIPES: usize = 8;

/// The stripe of the tenant's monthly rows a job adds to: always the same for a job, so one
/// transaction locks one row per table, in the fixed order (spend, usage, counts).
fn tenant_row_stripe(job_id: &str) -> i16 {
    stripe_of(job_id, TENANT_ROW_STRIPES) as i16
}

/// The stripe of `commit_locks` a job's commits take (a stable hash of its id).
fn stripe_of(id: &str, stripes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    (h.finish() % stripes as u64) as usize
}
