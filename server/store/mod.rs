//! The storage seam: one `Store` over SQLite (embedded, default) or PostgreSQL (scale-out), through
//! sqlx's `Any` driver with portable SQL (`$N` placeholders, BIGINT/TEXT columns) and per-backend
//! migrations. A job is a JSON document plus indexed columns; every change to a job commits the job,
//! its new events (gap-free per-job sequence) and its new ledger lines in one transaction.

use crate::domain::job::{Event, Job, LedgerEntry};
use crate::domain::manifest::Markers;
use crate::domain::tenant::{ApiKey, KeyMode, Tenant, Trial};
use crate::domain::{JobState, Money, Tier};
use crate::error::{Error, Result};
use crate::events::EventHub;
use anyhow::Context;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Storage handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite allows one writer: serialising writers in-process avoids busy-wait retries.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    hub: Arc<EventHub>,
}

/// What `create_job` found.
pub enum Created {
    New(Job),
    Existing(Job),
}

/// Tenant limits checked atomically with the insert of a new job.
#[derive(Clone, Copy, Debug)]
pub struct JobLimits {
    /// Jobs not yet terminal.
    pub max_active: u32,
    /// Jobs ever created.
    pub job_quota: Option<u32>,
}

/// Filters of ListJobs.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub states: Vec<JobState>,
    pub preset_id: Option<String>,
    pub labels: Vec<(String, String)>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(Error::internal)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(Error::internal)
}

impl Store {
    /// Connects (creating a SQLite file and its directory if needed) and runs the migrations.
    pub async fn connect(url: &str, hub: Arc<EventHub>) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(parent) = std::path::Path::new(file)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let url = if path.contains('?') {
                format!("sqlite://{path}")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            (Backend::Postgres, url.to_string())
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10));
        let options = if backend == Backend::Sqlite {
            options.after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA foreign_keys = ON",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options
            .connect(&url)
            .await
            .with_context(|| format!("connecting to {}", redact(&url)))?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator.run(&pool).await.context("running migrations")?;
        Ok(Store {
            pool,
            backend,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            hub,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    pub async fn close(&self) {
        if self.backend == Backend::Sqlite {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await;
        }
        self.pool.close().await;
    }

    /// Begins a write transaction: `BEGIN IMMEDIATE` under the writer lock on SQLite.
    async fn begin_write(
        &self,
    ) -> Result<(
        Option<tokio::sync::MutexGuard<'_, ()>>,
        sqlx::Transaction<'static, sqlx::Any>,
    )> {
        match self.backend {
            Backend::Sqlite => {
                let guard = self.write_lock.lock().await;
                Ok((Some(guard), self.pool.begin_with("BEGIN IMMEDIATE").await?))
            }
            Backend::Postgres => Ok((None, self.pool.begin().await?)),
        }
    }

    fn for_update(&self, sql: &'static str) -> AssertSqlSafe<String> {
        match self.backend {
            Backend::Sqlite => AssertSqlSafe(sql.to_string()),
            Backend::Postgres => AssertSqlSafe(format!("{sql} FOR UPDATE")),
        }
    }

    // ---- settings ----

    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Sets a setting only if it is not set yet; true when this call set it.
    pub async fn claim_setting(&self, name: &str, value: &str) -> Result<bool> {
        let (_g, mut tx) = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- tenants ----

    pub async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
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
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_tenant(&self, t: &Tenant) -> Result<()> {
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
        .await?;
        tx.commit().await?;
        if r.rows_affected() == 0 {
            return Err(Error::not_found("tenant"));
        }
        Ok(())
    }

    const TENANT_COLUMNS: &'static str =
        "id, name, base_tier, monthly_budget, trial_tier, trial_end_ms, job_quota, created_ms";

    fn tenant_from(row: &AnyRow) -> Result<Tenant> {
        let tier = |s: String| {
            Tier::parse(&s)
                .ok_or_else(|| Error::internal(anyhow::anyhow!("bad tier {s:?} in database")))
        };
        let trial_tier: Option<String> = row.try_get("trial_tier")?;
        let trial_end: Option<i64> = row.try_get("trial_end_ms")?;
        let trial = match (trial_tier, trial_end) {
            (Some(t), Some(end_ms)) => Some(Trial {
                tier: tier(t)?,
                end_ms,
            }),
            _ => None,
        };
        Ok(Tenant {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            base_tier: tier(row.try_get("base_tier")?)?,
            monthly_budget: row
                .try_get::<Option<i64>, _>("monthly_budget")?
                .map(Money::from_micros),
            trial,
            job_quota: row
                .try_get::<Option<i64>, _>("job_quota")?
                .map(|q| q as u32),
            created_ms: row.try_get("created_ms")?,
        })
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let sql = AssertSqlSafe(format!(
            "SELECT {} FROM tenants WHERE id = $1",
            Self::TENANT_COLUMNS
        ));
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Self::tenant_from).transpose()
    }

    /// Tenants ordered by id (ids are time-ordered), after `after_id`.
    pub async fn tenants(&self, after_id: &str, limit: u32) -> Result<Vec<Tenant>> {
        let sql = AssertSqlSafe(format!(
            "SELECT {} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2",
            Self::TENANT_COLUMNS
        ));
        let rows = sqlx::query(sql)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::tenant_from).collect()
    }

    // ---- API keys ----

    pub async fn insert_key(&self, k: &ApiKey) -> Result<()> {
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
        .await?;
        tx.commit().await?;
        Ok(())
    }

    const KEY_COLUMNS: &'static str = "id, tenant_id, name, mode, prefix, secret_hash, created_ms, expires_ms, revoked_ms, last_used_ms";

    fn key_from(row: &AnyRow) -> Result<ApiKey> {
        let mode: String = row.try_get("mode")?;
        Ok(ApiKey {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            mode: KeyMode::parse(&mode)
                .ok_or_else(|| Error::internal(anyhow::anyhow!("bad key mode {mode:?}")))?,
            prefix: row.try_get("prefix")?,
            secret_hash: row.try_get("secret_hash")?,
            created_ms: row.try_get("created_ms")?,
            expires_ms: row.try_get("expires_ms")?,
            revoked_ms: row.try_get("revoked_ms")?,
            last_used_ms: row.try_get("last_used_ms")?,
        })
    }

    pub async fn key(&self, id: &str) -> Result<Option<ApiKey>> {
        let sql = AssertSqlSafe(format!(
            "SELECT {} FROM api_keys WHERE id = $1",
            Self::KEY_COLUMNS
        ));
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Self::key_from).transpose()
    }

    pub async fn keys_of(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        let sql = AssertSqlSafe(format!(
            "SELECT {} FROM api_keys WHERE tenant_id = $1 ORDER BY created_ms, id",
            Self::KEY_COLUMNS
        ));
        let rows = sqlx::query(sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::key_from).collect()
    }

    /// Revokes a key (keeping the first revocation time); returns the key after.
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<Option<ApiKey>> {
        {
            let (_g, mut tx) = self.begin_write().await?;
            sqlx::query("UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        self.key(id).await
    }

    /// Records use of a key, at most once a minute per key to keep writes off the hot path.
    pub async fn touch_key(&self, id: &str, now: i64) -> Result<()> {
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query("UPDATE api_keys SET last_used_ms = $2 WHERE id = $1 AND (last_used_ms IS NULL OR last_used_ms < $3)")
            .bind(id)
            .bind(now)
            .bind(now - 60_000)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- jobs ----

    /// Inserts a job with its first event, or returns the tenant's job with the same request id.
    pub async fn create_job(&self, mut job: Job, limits: JobLimits) -> Result<Created> {
        let (_g, mut tx) = self.begin_write().await?;
        // Serialise creates per tenant (a no-op lock on SQLite, whose writers are serialised anyway).
        sqlx::query(self.for_update("SELECT id FROM tenants WHERE id = $1"))
            .bind(&job.tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT doc FROM jobs WHERE tenant_id = $1 AND request_id = $2")
                .bind(&job.tenant_id)
                .bind(&job.request_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(doc) = existing {
            return Ok(Created::Existing(from_json(&doc)?));
        }
        let (active, total): (i64, i64) = sqlx::query_as(JOB_COUNTS)
            .bind(&job.tenant_id)
            .fetch_one(&mut *tx)
            .await?;
        if active >= i64::from(limits.max_active) {
            return Err(Error::ResourceExhausted {
                subject: format!("tenants/{}/concurrent_jobs", job.tenant_id),
                message: format!(
                    "the tier allows {} jobs in progress at once; wait for one to finish",
                    limits.max_active
                ),
                retry_after: Some(std::time::Duration::from_secs(10)),
            });
        }
        if let Some(quota) = limits.job_quota.filter(|q| total >= i64::from(*q)) {
            return Err(Error::ResourceExhausted {
                subject: format!("tenants/{}/job_quota", job.tenant_id),
                message: format!("the job quota of {quota} jobs is used up"),
                retry_after: None,
            });
        }
        let events = std::mem::take(&mut job.pending_events);
        job.last_seq = events.len() as u64;
        // ON CONFLICT makes concurrent creates with one request id safe on PostgreSQL too.
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, tenant_id, request_id, state, preset_id, last_seq, created_ms, updated_ms, doc)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant_id, request_id) DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.tenant_id)
        .bind(&job.request_id)
        .bind(job.state.as_str())
        .bind(&job.spec.preset_id)
        .bind(job.last_seq as i64)
        .bind(job.created_ms)
        .bind(job.updated_ms)
        .bind(json(&job)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            let doc: String =
                sqlx::query_scalar("SELECT doc FROM jobs WHERE tenant_id = $1 AND request_id = $2")
                    .bind(&job.tenant_id)
                    .bind(&job.request_id)
                    .fetch_one(&self.pool)
                    .await?;
            return Ok(Created::Existing(from_json(&doc)?));
        }
        for (key, value) in &job.spec.labels {
            sqlx::query(
                "INSERT INTO job_labels (job_id, label_key, label_value) VALUES ($1, $2, $3)",
            )
            .bind(&job.id)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        for (i, (state, kind)) in events.into_iter().enumerate() {
            let event = Event {
                job_id: job.id.clone(),
                seq: i as u64 + 1,
                at_ms: job.created_ms,
                state,
                kind,
            };
            insert_event(&mut tx, &event).await?;
        }
        tx.commit().await?;
        self.hub.publish(&job.id, job.last_seq);
        Ok(Created::New(job))
    }

    /// Whether a tenant already used a request id.
    pub async fn request_exists(&self, tenant_id: &str, request_id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND request_id = $2",
        )
        .bind(tenant_id)
        .bind(request_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// A job of a tenant (`None` for a missing job and for another tenant's job alike).
    pub async fn job(&self, tenant_id: &str, id: &str) -> Result<Option<Job>> {
        let doc: Option<String> =
            sqlx::query_scalar("SELECT doc FROM jobs WHERE id = $1 AND tenant_id = $2")
                .bind(id)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
        doc.as_deref().map(from_json).transpose()
    }

    /// A job by id alone, for the pipeline.
    pub async fn job_by_id(&self, id: &str) -> Result<Option<Job>> {
        let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        doc.as_deref().map(from_json).transpose()
    }

    /// Ids of jobs the pipeline must drive (not terminal, not waiting for the partner).
    pub async fn runnable_job_ids(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM jobs WHERE state IN ('QUEUED', 'PLANNING', 'RENDERING', 'QUALITY_CHECK') ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// (jobs not yet terminal, jobs ever created) of a tenant.
    pub async fn job_counts(&self, tenant_id: &str) -> Result<(u32, u32)> {
        let (active, total): (i64, i64) = sqlx::query_as(JOB_COUNTS)
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?;
        Ok((active as u32, total as u32))
    }

    /// A tenant's spend since `since_ms` on one ledger (live or sandbox): (billable, metered).
    pub async fn spend_since(
        &self,
        tenant_id: &str,
        sandbox: bool,
        since_ms: i64,
    ) -> Result<(Money, Money)> {
        let (billable, metered): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN succeeded = 1 THEN amount ELSE 0 END), 0), COALESCE(SUM(amount), 0)
             FROM ledger WHERE tenant_id = $1 AND sandbox = $2 AND created_ms >= $3",
        )
        .bind(tenant_id)
        .bind(i64::from(sandbox))
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok((Money::from_micros(billable), Money::from_micros(metered)))
    }

    /// A tenant's jobs created since `since_ms`.
    pub async fn jobs_since(&self, tenant_id: &str, since_ms: i64) -> Result<Vec<Job>> {
        let docs: Vec<String> =
            sqlx::query_scalar("SELECT doc FROM jobs WHERE tenant_id = $1 AND created_ms >= $2")
                .bind(tenant_id)
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    /// A page of a tenant's jobs, newest first (ids are time-ordered UUIDv7), strictly before `before_id`.
    pub async fn jobs(
        &self,
        tenant_id: &str,
        filter: &JobFilter,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let mut sql = String::from("SELECT doc FROM jobs j WHERE j.tenant_id = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if before_id.is_some() {
            sql += &format!(" AND j.id < {}", next());
        }
        if !filter.states.is_empty() {
            let ps: Vec<String> = filter.states.iter().map(|_| next()).collect();
            sql += &format!(" AND j.state IN ({})", ps.join(", "));
        }
        if filter.preset_id.is_some() {
            sql += &format!(" AND j.preset_id = {}", next());
        }
        for _ in &filter.labels {
            let (k, v) = (next(), next());
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = j.id AND l.label_key = {k} AND l.label_value = {v})"
            );
        }
        sql += &format!(" ORDER BY j.id DESC LIMIT {}", next());
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
        let docs = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    /// Applies `change` to a job inside one write transaction and commits the job with the events
    /// and ledger lines it produced. `tenant_id` scopes the lookup (None for the pipeline).
    /// Returns `NotFound` for a missing job and whatever error `change` returns (nothing is written then).
    pub async fn update_job<T>(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        change: impl FnOnce(&mut Job) -> Result<T>,
    ) -> Result<(T, Job)> {
        let (_g, mut tx) = self.begin_write().await?;
        let doc: Option<String> =
            sqlx::query_scalar(self.for_update("SELECT doc FROM jobs WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let mut job: Job = match doc {
            Some(d) => from_json(&d)?,
            None => return Err(Error::not_found("job")),
        };
        if tenant_id.is_some_and(|t| t != job.tenant_id) {
            return Err(Error::not_found("job"));
        }
        let before = job.state;
        let out = change(&mut job)?;
        let events = std::mem::take(&mut job.pending_events);
        let ledger = std::mem::take(&mut job.pending_ledger);
        if events.is_empty() && ledger.is_empty() && !std::mem::take(&mut job.dirty) {
            // Nothing happened: nothing to write.
            return Ok((out, job));
        }
        let now = now_ms();
        job.updated_ms = now;
        let first_seq = job.last_seq + 1;
        job.last_seq += events.len() as u64;
        for (i, (state, kind)) in events.into_iter().enumerate() {
            let event = Event {
                job_id: job.id.clone(),
                seq: first_seq + i as u64,
                at_ms: now,
                state,
                kind,
            };
            insert_event(&mut tx, &event).await?;
        }
        if !ledger.is_empty() {
            let lines: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE job_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            for (i, entry) in ledger.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO ledger (job_id, line_no, tenant_id, sandbox, amount, succeeded, created_ms, doc)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(id)
                .bind(lines + i as i64 + 1)
                .bind(&job.tenant_id)
                .bind(i64::from(job.sandbox))
                .bind(entry.amount.micros())
                .bind(i64::from(entry.succeeded))
                .bind(entry.at_ms)
                .bind(json(entry)?)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "UPDATE jobs SET state = $2, last_seq = $3, updated_ms = $4, doc = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(job.state.as_str())
        .bind(job.last_seq as i64)
        .bind(now)
        .bind(json(&job)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.hub.publish(id, job.last_seq);
        if before != job.state {
            record_transition(&job);
        }
        Ok((out, job))
    }

    /// Committed events of a job with `seq > after`, in order.
    pub async fn events_after(&self, job_id: &str, after: u64, limit: u32) -> Result<Vec<Event>> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT doc FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    /// A job's ledger, in order.
    pub async fn ledger(&self, job_id: &str) -> Result<Vec<LedgerEntry>> {
        let docs: Vec<String> =
            sqlx::query_scalar("SELECT doc FROM ledger WHERE job_id = $1 ORDER BY line_no")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    // ---- brand markers ----

    pub async fn brand_markers(
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
            .await?;
        match row {
            Some(r) => Ok(Some((
                from_json(&r.try_get::<String, _>("doc")?)?,
                r.try_get("expires_ms")?,
            ))),
            None => Ok(None),
        }
    }

    pub async fn put_brand_markers(
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
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops a brand's markers; true if live markers existed.
    pub async fn delete_brand_markers(
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
                .await?;
        sqlx::query("DELETE FROM brand_markers WHERE tenant_id = $1 AND brand_id = $2")
            .bind(tenant_id)
            .bind(brand_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(live.is_some())
    }
}

/// (jobs not yet terminal, jobs ever created) of one tenant: the same figures for the limit check
/// at creation and for GetUsage.
const JOB_COUNTS: &str = "SELECT COALESCE(SUM(CASE WHEN state NOT IN ('DELIVERED', 'CANCELLED', 'FAILED') THEN 1 ELSE 0 END), 0), COUNT(*)
     FROM jobs WHERE tenant_id = $1";

/// Job metrics, recorded once per committed transition (labels are bounded: states and presets only).
fn record_transition(job: &Job) {
    if !job.state.is_terminal() {
        return;
    }
    metrics::counter!("jobs_total", "state" => job.state.as_str()).increment(1);
    let seconds = (job.updated_ms - job.created_ms).max(0) as f64 / 1000.0;
    metrics::histogram!("pipeline_duration_seconds", "preset" => job.spec.preset_id.clone())
        .record(seconds);
    if job.state == JobState::Delivered && job.spec.duration_s > 0 {
        let billed = job.billed.unwrap_or_default().micros() as f64 / 1e6;
        metrics::histogram!("cost_per_minute_usd", "preset" => job.spec.preset_id.clone())
            .record(billed * 60.0 / f64::from(job.spec.duration_s));
    }
}

async fn insert_event(tx: &mut sqlx::Transaction<'static, sqlx::Any>, event: &Event) -> Result<()> {
    sqlx::query("INSERT INTO job_events (job_id, seq, created_ms, doc) VALUES ($1, $2, $3, $4)")
        .bind(&event.job_id)
        .bind(event.seq as i64)
        .bind(event.at_ms)
        .bind(json(event)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Hides a password in a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
