//! The scale-out store: several replicas on one PostgreSQL. Documents are JSON `text` (`Doc`), instants
//! `timestamptz`, flags `boolean`, money integer micro-USD (`bigint`; sums cast back to bigint).
//! A job's commit is one statement that writes only at the row version it was computed from
//! (optimistic; the change is applied again to a row that moved on); row locks order the writers
//! of a tenant's shared rows; leases are claimed with `FOR UPDATE SKIP LOCKED` and expire on the
//! database's clock. Commits are announced to the other replicas with `NOTIFY`, sent after the
//! commit in batches (see `announce`); a listener on a dedicated connection feeds them to this
//! replica's watchers and claim loop, reconnecting after a loss, and a sweep once a second catches
//! what an announcement lost on the way would have told.

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
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgHasArrayType, PgListener, PgPoolOptions, PgRow,
    PgTypeInfo, PgValueRef,
};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row};
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
    /// Announcements of this replica's commits, sent by `announce` after they commit.
    announcements: tokio::sync::mpsc::UnboundedSender<Announcement>,
    announcer: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
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

/// How many times a commit reads the job again after finding its row changed before giving up
/// (`UNAVAILABLE`): each round means another writer committed the job in between.
const COMMIT_ATTEMPTS: usize = 8;

/// Whether a job copy is known to be the row's current version.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verified {
    Yes,
    No,
}

/// The row version of `jobs`, as a comparable number.
const ROW_VERSION: &str = "xmin::text::bigint";
const COMMIT_LOCK_STRIPES: usize = 64;
/// How long `connect` waits for the notification listener's first LISTEN.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.announcer.abort();
        self.sweeper.abort();
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

/// A document stored as JSON text in a `text` column, which PostgreSQL takes as it is. As `jsonb`,
/// parsing every document a statement wrote (and sorting its keys) took 17 % of PostgreSQL's CPU
/// in the end-to-end bench, and no query looks inside a document.
struct Doc<T>(T);

impl<T> sqlx::Type<Postgres> for Doc<T> {
    fn type_info() -> PgTypeInfo {
        <String as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<T> PgHasArrayType for Doc<T> {
    fn array_type_info() -> PgTypeInfo {
        <String as PgHasArrayType>::array_type_info()
    }
}

impl<T: serde::Serialize> sqlx::Encode<'_, Postgres> for Doc<T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        serde_json::to_writer(&mut **buf, &self.0)?;
        Ok(IsNull::No)
    }
}

impl<'r, T: serde::Deserialize<'r>> sqlx::Decode<'r, Postgres> for Doc<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Doc(serde_json::from_slice(value.as_bytes()?)?))
    }
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

/// `LeaseLost` unless the row is still under `fence`'s lease.
fn check_fence(row: &PgRow, fence: Option<&Lease>) -> Result<()> {
    match fence {
        Some(f) if get::<i64>(row, "lease_token")? != f.token => Err(Error::LeaseLost),
        _ => Ok(()),
    }
}

/// A deadlock or a serialisation failure: the transaction wrote nothing and may run again.
fn retryable_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40001" | "40P01")))
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
        // This replica's mark on its announcements: its own listener hears them too, and skips
        // them (its watchers and cache already have its commits).
        let origin: Arc<str> = uuid::Uuid::now_v7().simple().to_string().into();
        let listener = tokio::spawn(listen(
            pool.clone(),
            hub.clone(),
            work.clone(),
            jobs.clone(),
            listening,
            origin.clone(),
        ));
        // Serve once this replica hears the others' commits (what it misses before that only
        // waits for the polling backstops); a database slow to answer LISTEN does not hold it up.
        if tokio::time::timeout(LISTEN_WAIT, first_listen.wait_for(|l| *l))
            .await
            .is_err()
        {
            tracing::warn!("not yet listening for other replicas' commits; starting anyway");
        }
        let (announcements, queued) = tokio::sync::mpsc::unbounded_channel();
        let announcer = tokio::spawn(announce(pool.clone(), queued, origin));
        let sweeper = tokio::spawn(sweep(pool.clone(), hub.clone()));
        Ok(PgStore {
            pool,
            leases,
            hub,
            work,
            listener,
            announcements,
            announcer,
            sweeper,
            jobs,
            commit_locks: (0..COMMIT_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// Queues an announcement of a committed change (see `announce`).
    fn announce(&self, announcement: Announcement) {
        // Only fails once the announcer is gone, with the store.
        let _ = self.announcements.send(announcement);
    }

    async fn job_doc(&self, id: &str, tenant_id: Option<&str>) -> Result<Option<Job>> {
        let doc: Option<Doc<Job>> = match tenant_id {
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
        let doc: Option<Doc<Job>> =
            sqlx::query_scalar("SELECT doc FROM jobs WHERE tenant_id = $1 AND request_id = $2")
                .bind(tenant_id)
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(doc.map(|d| d.0))
    }

    /// Numbers a commit's ledger lines: the job's count before them (from its document, or
    /// counted for documents written before it was kept), then records the new count. The count
    /// needs no lock: the commit only takes effect on the row version it was read with.
    async fn ledger_lines(&self, job: &mut Job, ledger: &[LedgerEntry]) -> Result<i64> {
        if ledger.is_empty() {
            return Ok(0);
        }
        let lines: i64 = match job.ledger_lines {
            Some(n) => i64::from(n),
            None => sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE job_id = $1")
                .bind(&job.id)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?,
        };
        job.ledger_lines = Some((lines + ledger.len() as i64) as u32);
        Ok(lines)
    }

    /// A job's row as it is now: (version, document). `NotFound` if there is none, `LeaseLost`
    /// if `fence` no longer holds it.
    async fn versioned_job(&self, id: &str, fence: Option<&Lease>) -> Result<(i64, Job)> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT lease_token, {ROW_VERSION} AS version, doc FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found("job"))?;
        check_fence(&row, fence)?;
        Ok((get(&row, "version")?, get::<Doc<Job>>(&row, "doc")?.0))
    }

    /// The job's row if it is no longer at `version` (None if it still is). `LeaseLost` if `fence`
    /// no longer holds it. The document travels only when the versions differ.
    async fn newer_version(
        &self,
        id: &str,
        version: i64,
        fence: Option<&Lease>,
    ) -> Result<Option<(i64, Job)>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT lease_token, {ROW_VERSION} AS version,
                 CASE WHEN {ROW_VERSION} = $2 THEN NULL ELSE doc END AS doc
             FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found("job"))?;
        check_fence(&row, fence)?;
        Ok(match get::<Option<Doc<Job>>>(&row, "doc")? {
            Some(doc) => Some((get(&row, "version")?, doc.0)),
            None => None,
        })
    }

    /// Writes a commit in one statement (one transaction): the job's document, its events and
    /// ledger lines, and the tenant's counters.
    /// It takes effect only if the row is still at `version` and, with a fence, still under that
    /// lease; the new version, or None if it did not.
    #[allow(clippy::too_many_arguments)]
    async fn write_commit(
        &self,
        job: &Job,
        before: JobState,
        version: i64,
        fence: Option<&Lease>,
        events: &[Event],
        ledger: &[LedgerEntry],
        lines: i64,
    ) -> std::result::Result<Option<i64>, sqlx::Error> {
        let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| at(e.at_ms)).collect();
        let docs: Vec<Doc<&Event>> = events.iter().map(Doc).collect();
        let line_nos: Vec<i64> = (1..=ledger.len() as i64).map(|i| lines + i).collect();
        let amounts: Vec<i64> = ledger.iter().map(|e| e.amount.micros()).collect();
        let succeeded: Vec<bool> = ledger.iter().map(|e| e.succeeded).collect();
        let charged_at: Vec<DateTime<Utc>> = ledger.iter().map(|e| at(e.at_ms)).collect();
        let entries: Vec<Doc<&LedgerEntry>> = ledger.iter().map(Doc).collect();
        let spend = super::spend_by_month(ledger);
        let months: Vec<DateTime<Utc>> = spend.iter().map(|m| at(m.0)).collect();
        let billable: Vec<i64> = spend.iter().map(|m| m.1).collect();
        let metered: Vec<i64> = spend.iter().map(|m| m.2).collect();
        let ended = super::month_effect(before, job);
        let (billed, seconds) = ended.unwrap_or_default();
        let active_delta = super::active_delta(before, job.state);
        let sql = commit_sql(
            !events.is_empty(),
            !ledger.is_empty(),
            ended.is_some(),
            active_delta != 0,
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&job.id)
            .bind(job.state.as_str())
            .bind(job.last_seq as i64)
            .bind(at(job.updated_ms))
            .bind(Doc(job))
            .bind(version)
            .bind(fence.map(|f| f.token))
            .bind(&seqs)
            .bind(&times)
            .bind(&docs)
            .bind(&job.tenant_id)
            .bind(job.sandbox)
            .bind(&line_nos)
            .bind(&amounts)
            .bind(&succeeded)
            .bind(&charged_at)
            .bind(&entries)
            .bind(tenant_row_stripe(&job.id))
            .bind(&months)
            .bind(&billable)
            .bind(&metered)
            .bind(at(crate::domain::calendar::month_start_ms(job.created_ms)))
            .bind(billed)
            .bind(seconds)
            .bind(active_delta)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get::<i64, _>("version")).transpose()
    }

    /// A create (see `Store::create_job`), claimed for `driver` (owner, lease TTL) when given.
    async fn create(
        &self,
        mut job: Job,
        limits: JobLimits,
        driver: Option<(&str, Duration)>,
    ) -> Result<(Created, Option<Lease>)> {
        // One statement (`CREATE_SQL`): the job, its labels and events, then the tenant's shared
        // rows (month usage, then the counts, which take the limits with a conditional increment).
        // The tenant's rows are locked only while the statement runs, not across round trips; a
        // tenant's creates meet nowhere else. A create of the same request id in flight elsewhere
        // makes the insert wait for it and then do nothing: that job is the answer.
        let pending = std::mem::take(&mut job.pending_events);
        job.last_seq = 0;
        let created_ms = job.created_ms;
        let events = number_events(&mut job, pending, created_ms);
        let (keys, values): (Vec<&str>, Vec<&str>) = job
            .spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .unzip();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| at(e.at_ms)).collect();
        let docs: Vec<Doc<&Event>> = events.iter().map(Doc).collect();
        let created = sqlx::query(CREATE_SQL)
            .bind(&job.id)
            .bind(&job.tenant_id)
            .bind(&job.request_id)
            .bind(job.state.as_str())
            .bind(&job.spec.preset_id)
            .bind(job.last_seq as i64)
            .bind(at(job.created_ms))
            .bind(at(job.updated_ms))
            .bind(Doc(&job))
            .bind(&keys)
            .bind(&values)
            .bind(&seqs)
            .bind(&times)
            .bind(&docs)
            .bind(job.sandbox)
            .bind(at(crate::domain::calendar::month_start_ms(job.created_ms)))
            .bind(tenant_row_stripe(&job.id))
            .bind(i64::from(limits.max_active))
            .bind(limits.job_quota.map_or(i64::MAX, i64::from))
            .bind(driver.map(|(owner, _)| owner))
            .bind(driver.map_or(0.0, |(_, ttl)| lease_ttl_ms(ttl) as f64))
            .fetch_one(&self.pool)
            .await;
        let (inserted, version, token) = match created {
            Ok(row) => (
                get::<i64>(&row, "inserted")? > 0,
                get::<Option<i64>>(&row, "version")?,
                get::<Option<i64>>(&row, "token")?,
            ),
            // Past a limit: nothing was written. The counts as they are now name the limit.
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("AP001") => {
                let (active, total) = self.job_counts(&job.tenant_id).await?;
                check_limits(&job.tenant_id, active.into(), total.into(), limits)?;
                return Err(Error::Unavailable {
                    message: "the tenant's job counts changed during the create; retry".into(),
                    retry_after: Duration::from_millis(100),
                });
            }
            Err(e) => return Err(db_err(e)),
        };
        if !inserted {
            return match self.job_by_request(&job.tenant_id, &job.request_id).await? {
                Some(existing) => Ok((Created::Existing(existing), None)),
                // Gone again (never: jobs are not deleted); the caller may retry.
                None => Err(Error::Unavailable {
                    message: "a concurrent create of this request id did not settle; retry".into(),
                    retry_after: Duration::from_millis(100),
                }),
            };
        }
        // Not announced as runnable: the replica that creates a job drives it (`App::drive`), and
        // if that claim fails, the other replicas' claim loops find the job at their next poll.
        // Announcing it woke every claim loop of the cluster for a claim that almost always failed.
        // Claimed with its create: its driver starts from the row as written.
        let lease = match (driver, version, token) {
            (Some(_), Some(version), Some(token)) => {
                self.jobs.wrote(
                    &job.id,
                    Some(CachedJob {
                        version,
                        job: job.clone(),
                    }),
                );
                Some(Lease {
                    job_id: job.id.clone(),
                    token,
                })
            }
            _ => None,
        };
        self.hub.publish_events(&job.id, job.last_seq, events);
        self.announce(Announcement::Committed(job.id.clone(), job.last_seq));
        Ok((Created::New(job), lease))
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
                 ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
            ),
        };
        let sql = format!(
            "UPDATE jobs SET lease_owner = $1, lease_token = lease_token + 1,
                 lease_expires_at = now() + $2 * interval '1 millisecond'
             WHERE id = ({pick}) RETURNING id, lease_token, {ROW_VERSION} AS version, doc"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_ttl_ms(ttl) as f64)
            .bind(job_id.unwrap_or_default())
            .fetch_optional(&self.leases)
            .await
            .map_err(db_err)?;
        let lease = row.as_ref().map(lease_from).transpose()?;
        if let (Some(lease), Some(row)) = (&lease, &row) {
            // Others may have changed the job since this replica last held it: its holder starts
            // from the row as claimed (which saves the read that would follow).
            let job = get::<Doc<Job>>(row, "doc")?.0;
            let version = get::<i64>(row, "version")?;
            self.jobs
                .wrote(&lease.job_id, Some(CachedJob { version, job }));
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
    origin: Arc<str>,
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
                        // `<job>:<seq>:<origin>` (`<job>:<seq>` from a replica before the mark).
                        let mut parts = n.payload().splitn(3, ':');
                        if let (Some(job), Some(Ok(seq)), from) = (
                            parts.next(),
                            parts.next().map(str::parse::<u64>),
                            parts.next(),
                        ) && from != Some(&*origin)
                        {
                            // Another replica's commit (this one's own are cached up to `seq`).
                            if jobs.get(job).is_none_or(|j| j.job.last_seq < seq) {
                                jobs.wrote(job, None);
                            }
                            share_remote_commit(&pool, &hub, job, seq).await;
                        }
                    }
                    // `<job>:<origin>`, or `<job>` from a release: this replica's own partner
                    // actions already claimed their jobs here.
                    _ => {
                        if n.payload().rsplit_once(':').map(|(_, from)| from) != Some(&*origin) {
                            work.notify_one();
                        }
                    }
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

/// A committed change the other replicas hear of: a job committed up to a sequence (its watchers
/// elsewhere read the new events), or a job became runnable without a driver (their claim loops
/// look for work). `Flush` answers once everything queued before it is sent.
enum Announcement {
    Committed(String, u64),
    Runnable(String),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Most announcements sent in one statement.
const ANNOUNCE_BATCH: usize = 512;

/// Sends this replica's announcements as NOTIFYs, after their commits and in batches: whatever
/// queued while a batch was on its way goes in the next one, in one statement, with a job's
/// commits coalesced into its latest sequence. A NOTIFY in the committing transaction would
/// serialise every commit in the cluster on PostgreSQL's notification queue lock (the end-to-end
/// bench saw commits waiting on it more than on anything else). An announcement lost to a crash
/// or an outage is covered by the sweep (`sweep`) and the claim loops' polling.
async fn announce(
    pool: PgPool,
    mut queued: tokio::sync::mpsc::UnboundedReceiver<Announcement>,
    origin: Arc<str>,
) {
    let mut batch = Vec::with_capacity(ANNOUNCE_BATCH);
    while queued.recv_many(&mut batch, ANNOUNCE_BATCH).await > 0 {
        let mut latest: std::collections::HashMap<String, u64> = Default::default();
        let mut runnable = std::collections::BTreeSet::new();
        let mut flushed = Vec::new();
        for a in batch.drain(..) {
            match a {
                Announcement::Committed(job, seq) => {
                    let at = latest.entry(job).or_default();
                    *at = (*at).max(seq);
                }
                Announcement::Runnable(job) => {
                    runnable.insert(job);
                }
                Announcement::Flush(done) => flushed.push(done),
            }
        }
        let (channels, payloads): (Vec<&str>, Vec<String>) = latest
            .into_iter()
            .map(|(job, seq)| (EVENTS_CHANNEL, format!("{job}:{seq}:{origin}")))
            .chain(
                runnable
                    .into_iter()
                    .map(|job| (WORK_CHANNEL, format!("{job}:{origin}"))),
            )
            .unzip();
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=3 {
            if payloads.is_empty() {
                break;
            }
            match sqlx::query(
                "SELECT pg_notify(c, p) FROM UNNEST($1::text[], $2::text[]) AS n(c, p)",
            )
            .bind(&channels)
            .bind(&payloads)
            .execute(&pool)
            .await
            {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "announcing commits to the other replicas failed");
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// How often `sweep` compares the jobs watched here with the database.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The backstop of announcements: once a second, one query for every job watched in this process
/// (not one per stream); a job committed further than its watchers know (its announcement was
/// lost with a crashed replica or a dropped connection) is shared with them as an announcement
/// would have been.
async fn sweep(pool: PgPool, hub: Arc<EventHub>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let watched = hub.watched();
        for chunk in watched.chunks(1000) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            let rows: Vec<(String, i64)> =
                match sqlx::query_as("SELECT id, last_seq FROM jobs WHERE id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&pool)
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::debug!(error = %e, "sweeping watched jobs failed");
                        break;
                    }
                };
            let known: std::collections::HashMap<&str, u64> =
                chunk.iter().map(|(id, seq)| (id.as_str(), *seq)).collect();
            for (id, seq) in rows {
                let seq = seq.max(0) as u64;
                if known.get(id.as_str()).is_some_and(|k| *k < seq) {
                    share_remote_commit(&pool, &hub, &id, seq).await;
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
    let read = sqlx::query_scalar::<_, Doc<Event>>(
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
        self.sweeper.abort();
        // What this replica committed last is announced before the pool closes.
        let (flushed, done) = tokio::sync::oneshot::channel();
        self.announce(Announcement::Flush(flushed));
        let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
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

    async fn create_job(&self, job: Job, limits: JobLimits) -> Result<Created> {
        Ok(self.create(job, limits, None).await?.0)
    }

    async fn create_and_claim(
        &self,
        job: Job,
        limits: JobLimits,
        owner: &str,
        ttl: Duration,
    ) -> Result<(Created, Option<Lease>)> {
        let driver = super::runnable(job.state).then_some((owner, ttl));
        self.create(job, limits, driver).await
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

    async fn job_progress(&self, tenant_id: &str, id: &str) -> Result<Option<(JobState, u64)>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT state, last_seq FROM jobs WHERE id = $1 AND tenant_id = $2")
                .bind(id)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.map(|(state, seq)| {
            let state = JobState::parse(&state).ok_or_else(|| bad_column("job state", &state))?;
            Ok((state, seq.max(0) as u64))
        })
        .transpose()
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
        let job = get::<Doc<Job>>(&row, "doc")?.0;
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
        let docs: Vec<Doc<Job>> = sqlx::query_scalar(AssertSqlSafe(format!(
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
        let mut q = sqlx::query_scalar::<_, Doc<Job>>(AssertSqlSafe(sql)).bind(tenant_id);
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
        // One job's commits from this process queue here, so their cache updates land in commit
        // order and they rarely meet in the database.
        let _serial = self.commit_locks[stripe_of(id, self.commit_locks.len())]
            .lock()
            .await;
        // Optimistic: the change is applied to the copy this replica last wrote or read, and the
        // write is one statement that takes effect only if the row is still that version (and the
        // lease still this one). A commit is then one round trip and one short transaction; when
        // the row moved on (another replica's commit, a lease renewal), the job is read again and
        // the change applied again.
        let mut base = self
            .jobs
            .get(id)
            .map(|c| (c.version, c.job.clone(), Verified::No));
        for _ in 0..COMMIT_ATTEMPTS {
            let (version, mut job, verified) = match base.take() {
                Some(b) => b,
                None => {
                    let (version, job) = self.versioned_job(id, fence).await?;
                    (version, job, Verified::Yes)
                }
            };
            let before = job.state;
            let commit = match apply_change(&mut job, tenant_id, change) {
                Ok(Some(commit)) => commit,
                // Refused, or nothing to write: decided on a cached copy, which must be current
                // (and the lease still held) for the answer to stand.
                outcome => {
                    if verified == Verified::No
                        && let Some(newer) = self.newer_version(id, version, fence).await?
                    {
                        base = Some((newer.0, newer.1, Verified::Yes));
                        continue;
                    }
                    return outcome.map(|_| job);
                }
            };
            let Commit { events, ledger } = commit;
            let lines = self.ledger_lines(&mut job, &ledger).await?;
            match self
                .write_commit(&job, before, version, fence, &events, &ledger, lines)
                .await
            {
                Ok(Some(new_version)) => {
                    self.jobs.wrote(
                        id,
                        Some(CachedJob {
                            version: new_version,
                            job: job.clone(),
                        }),
                    );
                    // Watchers here first: this replica's own announcement, when it comes back
                    // to its listener, then finds them up to date (no read).
                    let announce = !events.is_empty();
                    self.hub.publish_events(id, job.last_seq, events);
                    if announce {
                        self.announce(Announcement::Committed(id.to_string(), job.last_seq));
                    }
                    // A partner's action made the job runnable: any replica may drive it.
                    if fence.is_none() && super::runnable(job.state) && !super::runnable(before) {
                        self.announce(Announcement::Runnable(id.to_string()));
                    }
                    record_transition(before, &job);
                    return Ok(job);
                }
                // The row moved on, the lease was lost or the job is gone: read it again.
                Ok(None) => {}
                // Met another transaction in a deadlock or a serialisation conflict: nothing was
                // written; run again.
                Err(e) if retryable_conflict(&e) => {}
                Err(e) => return Err(db_err(e)),
            }
            self.jobs.wrote(id, None);
            metrics::counter!("store_commit_conflicts_total").increment(1);
        }
        Err(Error::Unavailable {
            message: format!("job {id} kept changing during the commit; retry"),
            retry_after: Duration::from_millis(100),
        })
    }

    async fn events_after(&self, job_id: &str, after: u64, limit: u32) -> Result<Vec<Event>> {
        let docs: Vec<Doc<Event>> = sqlx::query_scalar(
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
        let docs: Vec<Doc<LedgerEntry>> =
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

    async fn release(&self, owner: &str, lease: &Lease) -> Result<Option<JobState>> {
        // Released while runnable (this replica is stopping): another replica may take it now,
        // so that announcement is sent with the release (it is rare).
        let state: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "WITH r AS (
                 UPDATE jobs SET lease_owner = NULL, lease_expires_at = '-infinity'
                 WHERE id = $1 AND lease_owner = $2 AND lease_token = $3 RETURNING state
             )
             SELECT state FROM r, LATERAL (SELECT CASE WHEN {RUNNABLE_SQL} THEN pg_notify($4, $1) END) n"
        )))
        .bind(&lease.job_id)
        .bind(owner)
        .bind(lease.token)
        .bind(WORK_CHANNEL)
        .fetch_optional(&self.leases)
        .await
        .map_err(db_err)?;
        state
            .map(|s| JobState::parse(&s).ok_or_else(|| bad_column("job state", &s)))
            .transpose()
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
                get::<Doc<Markers>>(&r, "doc")?.0,
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
        .bind(Doc(markers))
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

/// A job's create (see `PgStore::create_job`): everything joins `ins`, so a replayed request id
/// writes nothing. The select list takes the tenant's rows in the order used everywhere (month
/// usage, then counts); `$18`/`$19` are the limits (most active, most ever), and an increment that
/// would pass them leaves `counted` empty, which ends the statement (`aiprod_refuse`, migration
/// 0008) and so undoes the insert.
const CREATE_SQL: &str = "WITH ins AS (
         INSERT INTO jobs (id, tenant_id, request_id, state, preset_id, last_seq, created_at, updated_at, doc,
             lease_owner, lease_token, lease_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
             $20::text, CASE WHEN $20::text IS NULL THEN 0 ELSE 1 END,
             CASE WHEN $20::text IS NULL THEN '-infinity'::timestamptz
                 ELSE now() + $21::float8 * interval '1 millisecond' END)
         ON CONFLICT (tenant_id, request_id) DO NOTHING
         RETURNING id, xmin::text::bigint AS version, lease_token
     ), labels AS (
         INSERT INTO job_labels (job_id, label_key, label_value)
         SELECT $1, l.k, l.v FROM ins, UNNEST($10::text[], $11::text[]) AS l(k, v)
     ), ev AS (
         INSERT INTO job_events (job_id, seq, created_at, doc)
         SELECT $1, e.* FROM ins, UNNEST($12::bigint[], $13::timestamptz[], $14::text[]) AS e
     ), usage AS (
         INSERT INTO tenant_month_usage (tenant_id, sandbox, month_start, stripe, jobs, certified_jobs, billed, delivered_seconds)
         SELECT $2, $15, $16, $17, 1, 0, 0, 0 FROM ins
         ON CONFLICT (tenant_id, sandbox, month_start, stripe) DO UPDATE SET
             jobs = tenant_month_usage.jobs + excluded.jobs
         RETURNING 1
     ), counted AS (
         INSERT INTO tenant_job_counts AS t (tenant_id, active, total)
         SELECT $2, 1, 1 FROM ins
         ON CONFLICT (tenant_id) DO UPDATE SET active = t.active + 1, total = t.total + 1
             WHERE t.active < $18 AND t.total < $19
         RETURNING 1
     )
     SELECT i.n AS inserted, i.version, i.token,
         (SELECT count(*) FROM usage) AS usage_rows,
         CASE WHEN i.n > 0 AND (SELECT count(*) FROM counted) = 0
             THEN aiprod_refuse('past the job limits') ELSE 0 END AS refused
     FROM (SELECT count(*) AS n, max(version) AS version, max(lease_token) AS token FROM ins) AS i";

/// A job's commit (see `PgStore::write_commit`), with only the parts it needs (every part opens
/// its tables and indexes, whether or not it has rows to write): `j` writes the row only at the
/// expected version and lease; everything else joins `j`, so it happens only if the row was
/// written. The tenant's shared rows are taken in one order everywhere (spend, month usage,
/// counts), or two transactions could each hold one and wait for the other: the select list runs
/// them in that order (each sub-select runs its statement the first time it is read). The
/// parameters are numbered alike in every variant.
fn commit_sql(events: bool, ledger: bool, ended: bool, counts: bool) -> &'static str {
    static VARIANTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let variants = VARIANTS.get_or_init(|| {
        (0..16)
            .map(|bits| {
                build_commit_sql(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0)
            })
            .collect()
    });
    let bits = usize::from(events)
        | usize::from(ledger) << 1
        | usize::from(ended) << 2
        | usize::from(counts) << 3;
    &variants[bits]
}

fn build_commit_sql(events: bool, ledger: bool, ended: bool, counts: bool) -> String {
    let mut sql = format!(
        "WITH j AS (
             UPDATE jobs SET state = $2, last_seq = $3, updated_at = $4, doc = $5
             WHERE id = $1 AND {ROW_VERSION} = $6 AND ($7::bigint IS NULL OR lease_token = $7)
             RETURNING {ROW_VERSION} AS version
         )"
    );
    let mut select = String::from("SELECT j.version");
    if events {
        sql.push_str(
            ", ev AS (
                 INSERT INTO job_events (job_id, seq, created_at, doc)
                 SELECT $1, e.* FROM j, UNNEST($8::bigint[], $9::timestamptz[], $10::text[]) AS e
             )",
        );
    }
    if ledger {
        sql.push_str(
            ", led AS (
                 INSERT INTO ledger (job_id, line_no, tenant_id, sandbox, amount, succeeded, created_at, doc)
                 SELECT $1, l.line_no, $11, $12, l.amount, l.succeeded, l.created_at, l.doc
                 FROM j, UNNEST($13::bigint[], $14::bigint[], $15::boolean[], $16::timestamptz[], $17::text[])
                     AS l(line_no, amount, succeeded, created_at, doc)
             ), spend AS (
                 INSERT INTO tenant_month_spend (tenant_id, sandbox, month_start, stripe, billable, metered)
                 SELECT $11, $12, s.month_start, $18, s.billable, s.metered
                 FROM j, UNNEST($19::timestamptz[], $20::bigint[], $21::bigint[]) AS s(month_start, billable, metered)
                 ON CONFLICT (tenant_id, sandbox, month_start, stripe) DO UPDATE SET
                     billable = tenant_month_spend.billable + excluded.billable,
                     metered = tenant_month_spend.metered + excluded.metered
                 RETURNING 1
             )",
        );
        select.push_str(", (SELECT count(*) FROM spend) AS spend_rows");
    }
    if ended {
        sql.push_str(
            ", usage AS (
                 INSERT INTO tenant_month_usage (tenant_id, sandbox, month_start, stripe, jobs, certified_jobs, billed, delivered_seconds)
                 SELECT $11, $12, $22, $18, 0, 1, $23, $24 FROM j
                 ON CONFLICT (tenant_id, sandbox, month_start, stripe) DO UPDATE SET
                     certified_jobs = tenant_month_usage.certified_jobs + excluded.certified_jobs,
                     billed = tenant_month_usage.billed + excluded.billed,
                     delivered_seconds = tenant_month_usage.delivered_seconds + excluded.delivered_seconds
                 RETURNING 1
             )",
        );
        select.push_str(", (SELECT count(*) FROM usage) AS usage_rows");
    }
    if counts {
        sql.push_str(
            ", counts AS (
                 UPDATE tenant_job_counts SET active = active + $25
                 WHERE tenant_id = $11 AND EXISTS (SELECT 1 FROM j)
                 RETURNING 1
             )",
        );
        select.push_str(", (SELECT count(*) FROM counts) AS count_rows");
    }
    sql.push('\n');
    sql.push_str(&select);
    sql.push_str(" FROM j");
    sql
}

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
