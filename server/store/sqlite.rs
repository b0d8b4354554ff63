//! The embedded store: one SQLite file in WAL mode, served by one process. Writers are serialised
//! in-process (SQLite allows one writer; waiting on a mutex beats busy-retrying), documents are
//! JSON text, instants unix milliseconds, money integer micro-USD.

use super::RowCache;
use super::sqlite_writer::{Committed, Inserted, Writer};
use super::{
    Created, HeldJob, JobChange, JobFilter, JobLimits, Lease, MonthUsage, Store, bad_column,
    lease_ttl_ms, now_ms, record_transition,
};
use crate::domain::job::{Event, Job, LedgerEntry};
use crate::domain::manifest::Markers;
use crate::domain::tenant::{ApiKey, KeyMode, Tenant, Trial};
use crate::domain::{JobState, Money, Tier};
use crate::error::{Error, Result};
use crate::events::EventHub;
use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The writer lock, holding the connection of the hot writes (`sqlite_writer`); the other
    /// writes take it too and use a pool connection.
    writer: tokio::sync::Mutex<Writer>,
    hub: Arc<EventHub>,
    /// Wakes the claim loop when a job becomes runnable (one process: an in-process signal).
    work: tokio::sync::Notify,
    jobs: RowCache<CachedJob>,
    tenants: RowCache<Tenant>,
}

struct CachedJob {
    /// Shared with readers as is (`Store::job_shared`): a new commit makes a new `Arc`.
    job: Arc<Job>,
    lease_token: i64,
}

/// Jobs kept in memory (a few KiB each), and tenants.
const CACHED_JOBS: usize = 8192;
const CACHED_TENANTS: usize = 4096;

/// The one place SQLite errors become domain errors: a busy or locked database and a pool that
/// cannot hand out a connection are worth retrying; a constraint violation is the caller's conflict.
fn db_err(e: sqlx::Error) -> Error {
    let retry = |what: &str| Error::Unavailable {
        message: format!("the database is {what}; retry shortly"),
        retry_after: Duration::from_secs(1),
    };
    match &e {
        sqlx::Error::PoolTimedOut => retry("busy"),
        sqlx::Error::PoolClosed | sqlx::Error::Io(_) => retry("unavailable"),
        sqlx::Error::Database(d) => match d.code().as_deref() {
            // SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
            Some(c) if c == "5" || c == "6" || c.ends_with("05") || c.ends_with("06") => {
                retry("busy")
            }
            _ if d.is_unique_violation() => Error::Aborted("the record already exists".into()),
            _ => Error::internal(e),
        },
        _ => Error::internal(e),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(Error::internal)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(Error::internal)
}

const TENANT_COLUMNS: &str =
    "id, name, base_tier, monthly_budget, trial_tier, trial_end_ms, job_quota, created_ms";
const KEY_COLUMNS: &str = "id, tenant_id, name, mode, prefix, secret_hash, created_ms, expires_ms, revoked_ms, last_used_ms";

fn tier(s: String) -> Result<Tier> {
    Tier::parse(&s).ok_or_else(|| bad_column("tier", &s))
}

fn tenant_from(row: &SqliteRow) -> Result<Tenant> {
    let trial_tier: Option<String> = row.try_get("trial_tier").map_err(db_err)?;
    let trial_end: Option<i64> = row.try_get("trial_end_ms").map_err(db_err)?;
    let trial = match (trial_tier, trial_end) {
        (Some(t), Some(end_ms)) => Some(Trial {
            tier: tier(t)?,
            end_ms,
        }),
        _ => None,
    };
    Ok(Tenant {
        id: row.try_get("id").map_err(db_err)?,
        name: row.try_get("name").map_err(db_err)?,
        base_tier: tier(row.try_get("base_tier").map_err(db_err)?)?,
        monthly_budget: row
            .try_get::<Option<i64>, _>("monthly_budget")
            .map_err(db_err)?
            .map(Money::from_micros),
        trial,
        job_quota: row
            .try_get::<Option<i64>, _>("job_quota")
            .map_err(db_err)?
            .map(|q| q as u32),
        created_ms: row.try_get("created_ms").map_err(db_err)?,
    })
}

fn key_from(row: &SqliteRow) -> Result<ApiKey> {
    let mode: String = row.try_get("mode").map_err(db_err)?;
    Ok(ApiKey {
        id: row.try_get("id").map_err(db_err)?,
        tenant_id: row.try_get("tenant_id").map_err(db_err)?,
        name: row.try_get("name").map_err(db_err)?,
        mode: KeyMode::parse(&mode).ok_or_else(|| bad_column("key mode", &mode))?,
        prefix: row.try_get("prefix").map_err(db_err)?,
        secret_hash: row.try_get("secret_hash").map_err(db_err)?,
        created_ms: row.try_get("created_ms").map_err(db_err)?,
        expires_ms: row.try_get("expires_ms").map_err(db_err)?,
        revoked_ms: row.try_get("revoked_ms").map_err(db_err)?,
        last_used_ms: row.try_get("last_used_ms").map_err(db_err)?,
    })
}

fn held_from(row: &SqliteRow) -> Result<HeldJob> {
    let state: String = row.try_get("state").map_err(db_err)?;
    Ok(HeldJob {
        job_id: row.try_get("id").map_err(db_err)?,
        token: row.try_get("lease_token").map_err(db_err)?,
        state: JobState::parse(&state).ok_or_else(|| bad_column("job state", &state))?,
    })
}

impl SqliteStore {
    /// Opens (creating the file and its directory if needed) and migrates.
    pub async fn open(path: &str, hub: Arc<EventHub>) -> anyhow::Result<SqliteStore> {
        let file = path.split('?').next().unwrap_or(path);
        if let Some(parent) = std::path::Path::new(file)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .with_context(|| format!("bad SQLite path {path:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Pages come from a shared memory map instead of a `pread` per page per connection,
            // and each connection keeps more of them cached (32 MiB).
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A ping per acquire is a round trip to the connection's worker thread on every
            // statement outside a transaction; a broken file surfaces on the query itself.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("opening {file}"))?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .context("running migrations")?;
        let writer = Writer::open(file).with_context(|| format!("opening {file} for writing"))?;
        Ok(SqliteStore {
            pool,
            writer: tokio::sync::Mutex::new(writer),
            hub,
            work: tokio::sync::Notify::new(),
            jobs: RowCache::new(CACHED_JOBS),
            tenants: RowCache::new(CACHED_TENANTS),
        })
    }

    /// Begins a write transaction: `BEGIN IMMEDIATE` under the writer lock.
    async fn begin_write(
        &self,
    ) -> Result<(
        tokio::sync::MutexGuard<'_, Writer>,
        Transaction<'static, Sqlite>,
    )> {
        let guard = self.writer.lock().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        Ok((guard, tx))
    }

    async fn job_arc(&self, id: &str, tenant_id: Option<&str>) -> Result<Option<Arc<Job>>> {
        let cached = match self.jobs.get(id) {
            Some(c) => c,
            None => {
                let seen = self.jobs.before_read();
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT doc, lease_token FROM jobs WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                let Some((doc, lease_token)) = row else {
                    return Ok(None);
                };
                let job = Arc::new(from_json::<Job>(&doc)?);
                self.jobs.fill(seen, id, || CachedJob {
                    job: job.clone(),
                    lease_token,
                });
                return Ok(tenant_id.is_none_or(|t| t == job.tenant_id).then_some(job));
            }
        };
        Ok(tenant_id
            .is_none_or(|t| t == cached.job.tenant_id)
            .then(|| cached.job.clone()))
    }

    async fn job_doc(&self, id: &str, tenant_id: Option<&str>) -> Result<Option<Job>> {
        Ok(self.job_arc(id, tenant_id).await?.map(|j| Job::clone(&j)))
    }

    /// Takes the lease of `job_id` (or of the runnable job waiting longest).
    async fn claim_where(
        &self,
        owner: &str,
        ttl: Duration,
        job_id: Option<&str>,
    ) -> Result<Option<Lease>> {
        let mut writer = self.writer.lock().await;
        let lease = writer.claim(owner, now_ms(), ttl, job_id)?;
        if let Some(lease) = &lease {
            let job = self.jobs.get(&lease.job_id).map(|c| CachedJob {
                job: c.job.clone(),
                lease_token: lease.token,
            });
            self.jobs.wrote(&lease.job_id, job);
        }
        Ok(lease)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    fn shared(&self) -> bool {
        false
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
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
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
        let (_g, mut tx) = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, base_tier, monthly_budget, trial_tier, trial_end_ms, job_quota, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.base_tier.as_str())
        .bind(t.monthly_budget.map(Money::micros))
        .bind(t.trial.as_ref().map(|tr| tr.tier.as_str()))
        .bind(t.trial.as_ref().map(|tr| tr.end_ms))
        .bind(t.job_quota.map(i64::from))
        .bind(t.created_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        self.tenants.wrote(&t.id, Some(t.clone()));
        Ok(())
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let (_g, mut tx) = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE tenants SET name = $2, base_tier = $3, monthly_budget = $4, trial_tier = $5, trial_end_ms = $6, job_quota = $7
             WHERE id = $1",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.base_tier.as_str())
        .bind(t.monthly_budget.map(Money::micros))
        .bind(t.trial.as_ref().map(|tr| tr.tier.as_str()))
        .bind(t.trial.as_ref().map(|tr| tr.end_ms))
        .bind(t.job_quota.map(i64::from))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        if r.rows_affected() == 0 {
            return Err(Error::not_found("tenant"));
        }
        self.tenants.wrote(&t.id, Some(t.clone()));
        Ok(())
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        if let Some(t) = self.tenants.get(id) {
            return Ok(Some(Tenant::clone(&t)));
        }
        let seen = self.tenants.before_read();
        let sql = AssertSqlSafe(format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let tenant = row.as_ref().map(tenant_from).transpose()?;
        if let Some(t) = &tenant {
            self.tenants.fill(seen, id, || t.clone());
        }
        Ok(tenant)
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
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, mode, prefix, secret_hash, created_ms, expires_ms, revoked_ms, last_used_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.name)
        .bind(k.mode.as_str())
        .bind(&k.prefix)
        .bind(&k.secret_hash)
        .bind(k.created_ms)
        .bind(k.expires_ms)
        .bind(k.revoked_ms)
        .bind(k.last_used_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
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
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_ms, id"
        ));
        let rows = sqlx::query(sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(key_from).collect()
    }

    async fn revoke_key(&self, id: &str, now: i64) -> Result<Option<ApiKey>> {
        {
            let (_g, mut tx) = self.begin_write().await?;
            sqlx::query("UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
        }
        self.key(id).await
    }

    async fn touch_key(&self, id: &str, now: i64) -> Result<()> {
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query("UPDATE api_keys SET last_used_ms = $2 WHERE id = $1 AND (last_used_ms IS NULL OR last_used_ms < $3)")
            .bind(id)
            .bind(now)
            .bind(now - 60_000)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn create_job(&self, job: Job, limits: JobLimits) -> Result<Created> {
        let mut writer = self.writer.lock().await;
        let (job, events) = match writer.create_job(job, limits)? {
            Inserted::Existing(job) => return Ok(Created::Existing(job)),
            Inserted::New(job, events) => (job, events),
        };
        self.jobs.wrote(
            &job.id,
            Some(CachedJob {
                job: Arc::new(job.clone()),
                lease_token: 0,
            }),
        );
        drop(writer);
        self.hub.publish_events(&job.id, job.last_seq, events);
        if super::runnable(job.state) {
            self.work.notify_one();
        }
        Ok(Created::New(job))
    }

    async fn request_exists(&self, tenant_id: &str, request_id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND request_id = $2",
        )
        .bind(tenant_id)
        .bind(request_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(n > 0)
    }

    async fn job(&self, tenant_id: &str, id: &str) -> Result<Option<Job>> {
        self.job_doc(id, Some(tenant_id)).await
    }

    async fn job_shared(&self, tenant_id: &str, id: &str) -> Result<Option<Arc<Job>>> {
        self.job_arc(id, Some(tenant_id)).await
    }

    async fn job_by_id(&self, id: &str) -> Result<Option<Job>> {
        self.job_doc(id, None).await
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
        let sql = if crate::domain::calendar::month_start_ms(since_ms) == since_ms {
            "SELECT COALESCE(SUM(billable), 0), COALESCE(SUM(metered), 0)
             FROM tenant_month_spend WHERE tenant_id = $1 AND sandbox = $2 AND month_start_ms >= $3"
        } else {
            "SELECT COALESCE(SUM(CASE WHEN succeeded = 1 THEN amount ELSE 0 END), 0), COALESCE(SUM(amount), 0)
             FROM ledger WHERE tenant_id = $1 AND sandbox = $2 AND created_ms >= $3"
        };
        let (billable, metered): (i64, i64) = sqlx::query_as(sql)
            .bind(tenant_id)
            .bind(i64::from(sandbox))
            .bind(since_ms)
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
        let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT jobs, certified_jobs, billed, delivered_seconds FROM tenant_month_usage
             WHERE tenant_id = $1 AND sandbox = $2 AND month_start_ms = $3",
        )
        .bind(tenant_id)
        .bind(i64::from(sandbox))
        .bind(month_start_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let (jobs, certified_jobs, billed, delivered_seconds) = row.unwrap_or_default();
        // Unfinished jobs are few (bounded by the tier's concurrency): read their current bills.
        // The states are listed so the (tenant, state) index seeks them: the history (terminal
        // jobs) is never scanned.
        let docs: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT doc FROM jobs WHERE tenant_id = $1 AND {} AND created_ms >= $2",
            super::UNFINISHED_SQL
        )))
        .bind(tenant_id)
        .bind(month_start_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let unfinished = docs
            .iter()
            .map(|d| from_json::<Job>(d))
            .collect::<Result<Vec<_>>>()?;
        Ok(MonthUsage {
            jobs: jobs as u32,
            certified_jobs: certified_jobs as u32,
            billed: Money::from_micros(billed),
            pending: super::pending_of(unfinished.into_iter(), sandbox),
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
        let sql = super::job_page_sql("doc", filter, before_id.is_some());
        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(tenant_id);
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
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn update_job_dyn(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        fence: Option<&Lease>,
        change: JobChange<'_>,
    ) -> Result<Job> {
        let mut writer = self.writer.lock().await;
        // Under the writer lock the cached copy is the committed row.
        let cached = self
            .jobs
            .get(id)
            .map(|c| (Job::clone(&c.job), c.lease_token));
        let Committed {
            job,
            lease_token,
            before,
            events,
        } = writer.commit_job(tenant_id, id, fence, cached, change)?;
        let Some(events) = events else {
            return Ok(job);
        };
        self.jobs.wrote(
            id,
            Some(CachedJob {
                job: Arc::new(job.clone()),
                lease_token,
            }),
        );
        drop(writer);
        self.hub.publish_events(id, job.last_seq, events);
        if fence.is_none() && super::runnable(job.state) && !super::runnable(before) {
            self.work.notify_one();
        }
        record_transition(before, &job);
        Ok(job)
    }

    async fn events_after(&self, job_id: &str, after: u64, limit: u32) -> Result<Vec<Event>> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT doc FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn ledger(&self, job_id: &str) -> Result<Vec<LedgerEntry>> {
        let docs: Vec<String> =
            sqlx::query_scalar("SELECT doc FROM ledger WHERE job_id = $1 ORDER BY line_no")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn claim_next(&self, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.claim_where(owner, ttl, None).await
    }

    async fn claim(&self, owner: &str, job_id: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.claim_where(owner, ttl, Some(job_id)).await
    }

    async fn renew(&self, owner: &str, ttl: Duration) -> Result<Vec<HeldJob>> {
        let (_g, mut tx) = self.begin_write().await?;
        let rows = sqlx::query(
            "UPDATE jobs SET lease_expires_ms = $2 WHERE lease_owner = $1 RETURNING id, lease_token, state",
        )
        .bind(owner)
        .bind(now_ms() + lease_ttl_ms(ttl))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(held_from).collect()
    }

    async fn recover_leases(&self) -> Result<()> {
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query("UPDATE jobs SET lease_owner = NULL, lease_expires_ms = 0 WHERE lease_owner IS NOT NULL")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn release(&self, owner: &str, lease: &Lease) -> Result<Option<JobState>> {
        self.writer.lock().await.release(owner, lease)
    }

    async fn brand_markers(
        &self,
        tenant_id: &str,
        brand_id: &str,
        now: i64,
    ) -> Result<Option<(Markers, i64)>> {
        let row = sqlx::query("SELECT doc, expires_ms FROM brand_markers WHERE tenant_id = $1 AND brand_id = $2 AND expires_ms > $3")
            .bind(tenant_id)
            .bind(brand_id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(r) => Ok(Some((
                from_json(&r.try_get::<String, _>("doc").map_err(db_err)?)?,
                r.try_get("expires_ms").map_err(db_err)?,
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
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO brand_markers (tenant_id, brand_id, doc, expires_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, brand_id) DO UPDATE SET doc = excluded.doc, expires_ms = excluded.expires_ms",
        )
        .bind(tenant_id)
        .bind(brand_id)
        .bind(json(markers)?)
        .bind(expires_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn delete_brand_markers(
        &self,
        tenant_id: &str,
        brand_id: &str,
        now: i64,
    ) -> Result<bool> {
        let (_g, mut tx) = self.begin_write().await?;
        let live: Option<i64> =
            sqlx::query_scalar("SELECT expires_ms FROM brand_markers WHERE tenant_id = $1 AND brand_id = $2 AND expires_ms > $3")
                .bind(tenant_id)
                .bind(brand_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        sqlx::query("DELETE FROM brand_markers WHERE tenant_id = $1 AND brand_id = $2")
            .bind(tenant_id)
            .bind(brand_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(live.is_some())
    }
}

/// (jobs not yet terminal, jobs ever created) of one tenant, from its maintained counters.
const JOB_COUNTS: &str = "SELECT active, total FROM tenant_job_counts WHERE tenant_id = $1";
