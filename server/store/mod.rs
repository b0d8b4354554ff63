//! The storage seam. `Store` is the one interface the application uses; two implementations hold
//! the data: [`sqlite::SqliteStore`] (embedded, one process: the default) and
//! [`postgres::PgStore`] (several replicas on one database), each with native types, its own
//! migrations and one function that maps its database errors onto the domain's. Both pass the same
//! conformance suite (`tests/store.rs`).
//!
//! A job is a document plus indexed columns; every change to a job commits the job, its new events
//! (gap-free per-job sequence) and its new ledger lines in one transaction. The pipeline drives a job
//! only under a **lease** (owner, fencing token, expiry): a replica claims a runnable job whose lease
//! is free or expired, bumping its token; every pipeline write names the token it holds and changes
//! nothing once another replica has claimed the job since (see ARCHITECTURE.md, "Leases").

pub mod postgres;
pub mod sqlite;
mod sqlite_writer;

use crate::domain::job::{Event, EventKind, Job, LedgerEntry};
use crate::domain::manifest::Markers;
use crate::domain::tenant::{ApiKey, Tenant};
use crate::domain::{JobState, Money};
use crate::error::{Error, Result};
use crate::events::EventHub;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// The right to drive one job: held by `owner` (one id per process start) until the lease expires
/// or is released. `token` grows with every claim of the job, so a write that names an older token
/// comes from a replica that lost the job and is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub token: i64,
}

/// A job this replica still holds after a renewal, with its state (a job cancelled through another
/// replica shows up here as terminal: its driver stops its in-flight work).
#[derive(Clone, Debug)]
pub struct HeldJob {
    pub job_id: String,
    pub token: i64,
    pub state: JobState,
}

/// Month-to-date usage of a tenant on one ledger (jobs by the month they were created in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonthUsage {
    pub jobs: u32,
    /// Jobs that ended (delivered, cancelled, failed): their bills are certified.
    pub certified_jobs: u32,
    /// Exactly the sum of the certified bills.
    pub billed: Money,
    /// Current bills of the jobs not yet ended.
    pub pending: Money,
    pub delivered_seconds: u64,
}

/// States the pipeline drives (the others wait for the partner or are over).
pub const RUNNABLE: [JobState; 4] = [
    JobState::Queued,
    JobState::Planning,
    JobState::Rendering,
    JobState::QualityCheck,
];

pub fn runnable(state: JobState) -> bool {
    RUNNABLE.contains(&state)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A change to a job, applied inside the store's write transaction (object-safe form; use
/// [`StoreExt::update_job`] to get a typed result back).
pub type JobChange<'a> = &'a mut (dyn FnMut(&mut Job) -> Result<()> + Send);

/// Everything the application stores. Implementations must be safe to use from many tasks and,
/// for PostgreSQL, from many processes at once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres` (logs, metrics).
    fn backend_name(&self) -> &'static str;
    /// In-process "job committed up to seq" signals; on PostgreSQL fed by other replicas too.
    fn hub(&self) -> &Arc<EventHub>;
    /// Whether another process may commit to this database (watchers then also poll, as a backstop
    /// for lost notifications).
    fn shared(&self) -> bool;
    /// A cheap round trip: is the database reachable?
    async fn ping(&self) -> Result<()>;
    /// Resolves when another replica (or this one) made a job runnable without a driver; a lost
    /// wake-up only delays the claim until the next poll.
    async fn work_available(&self);
    async fn close(&self);

    // ---- settings ----
    async fn setting(&self, name: &str) -> Result<Option<String>>;
    /// Sets a setting only if it is not set yet; true when this call set it.
    async fn claim_setting(&self, name: &str, value: &str) -> Result<bool>;

    // ---- tenants and keys ----
    async fn insert_tenant(&self, t: &Tenant) -> Result<()>;
    async fn update_tenant(&self, t: &Tenant) -> Result<()>;
    async fn tenant(&self, id: &str) -> Result<Option<Tenant>>;
    /// Tenants ordered by id (ids are time-ordered), after `after_id`.
    async fn tenants(&self, after_id: &str, limit: u32) -> Result<Vec<Tenant>>;
    async fn insert_key(&self, k: &ApiKey) -> Result<()>;
    async fn key(&self, id: &str) -> Result<Option<ApiKey>>;
    async fn keys_of(&self, tenant_id: &str) -> Result<Vec<ApiKey>>;
    /// Revokes a key (keeping the first revocation time); returns the key after.
    async fn revoke_key(&self, id: &str, now: i64) -> Result<Option<ApiKey>>;
    /// Records use of a key, at most once a minute per key to keep writes off the hot path.
    async fn touch_key(&self, id: &str, now: i64) -> Result<()>;

    // ---- jobs ----
    /// Inserts a job with its first events, or returns the tenant's job with the same request id.
    async fn create_job(&self, job: Job, limits: JobLimits) -> Result<Created>;
    /// [`Store::create_job`], also claiming a new runnable job for `owner` for `ttl` where the
    /// store can do it with the create itself (PostgreSQL: in the create's statement, which saves
    /// the claim's round trip); the lease if it did. Others create only, and the caller claims.
    async fn create_and_claim(
        &self,
        job: Job,
        limits: JobLimits,
        _owner: &str,
        _ttl: Duration,
    ) -> Result<(Created, Option<Lease>)> {
        Ok((self.create_job(job, limits).await?, None))
    }
    /// Whether a tenant already used a request id.
    async fn request_exists(&self, tenant_id: &str, request_id: &str) -> Result<bool>;
    /// A job of a tenant (`None` for a missing job and for another tenant's job alike).
    async fn job(&self, tenant_id: &str, id: &str) -> Result<Option<Job>>;
    /// A job by id alone, for the pipeline.
    /// `job`, shared: the same `Arc` for as long as the job does not change, where the store
    /// keeps its jobs (a reader may key what it derives from a job on that identity).
    async fn job_shared(&self, tenant_id: &str, id: &str) -> Result<Option<Arc<Job>>> {
        Ok(self.job(tenant_id, id).await?.map(Arc::new))
    }
    /// A tenant's job's state and last event sequence, without its document (what a watch needs
    /// to start).
    async fn job_progress(&self, tenant_id: &str, id: &str) -> Result<Option<(JobState, u64)>> {
        Ok(self
            .job_shared(tenant_id, id)
            .await?
            .map(|j| (j.state, j.last_seq)))
    }
    async fn job_by_id(&self, id: &str) -> Result<Option<Job>>;
    /// (jobs not yet terminal, jobs ever created) of a tenant.
    async fn job_counts(&self, tenant_id: &str) -> Result<(u32, u32)>;
    /// A tenant's spend since `since_ms` on one ledger (live or sandbox): (billable, metered).
    async fn spend_since(
        &self,
        tenant_id: &str,
        sandbox: bool,
        since_ms: i64,
    ) -> Result<(Money, Money)>;
    /// Usage of the jobs a tenant created in the month starting at `month_start_ms`, on one ledger
    /// (live or sandbox): maintained figures plus the current bills of its unfinished jobs.
    async fn month_usage(
        &self,
        tenant_id: &str,
        sandbox: bool,
        month_start_ms: i64,
    ) -> Result<MonthUsage>;
    /// A page of a tenant's jobs, newest first (ids are time-ordered), strictly before `before_id`.
    async fn jobs(
        &self,
        tenant_id: &str,
        filter: &JobFilter,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Job>>;
    /// Applies `change` to a job in one write transaction and commits the job with the events and
    /// ledger lines it produced. `change` may run more than once (PostgreSQL applies it again to a
    /// row that changed meanwhile); only the run that is committed counts. `tenant_id` scopes the
    /// lookup (None for the pipeline); `fence`, when given, makes the write conditional on still
    /// holding that lease (`Error::LeaseLost` if not). `NotFound` for a missing job; an error from
    /// `change` writes nothing.
    async fn update_job_dyn(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        fence: Option<&Lease>,
        change: JobChange<'_>,
    ) -> Result<Job>;
    /// Committed events of a job with `seq > after`, in order.
    async fn events_after(&self, job_id: &str, after: u64, limit: u32) -> Result<Vec<Event>>;
    /// A job's ledger, in order.
    async fn ledger(&self, job_id: &str) -> Result<Vec<LedgerEntry>>;

    // ---- leases ----
    /// Claims one runnable job whose lease is free or expired (oldest first), for `ttl`.
    async fn claim_next(&self, owner: &str, ttl: Duration) -> Result<Option<Lease>>;
    /// Claims this job if it is runnable and its lease is free or expired.
    async fn claim(&self, owner: &str, job_id: &str, ttl: Duration) -> Result<Option<Lease>>;
    /// Extends every lease `owner` still holds; returns them (a lease missing from the answer was
    /// lost: another replica claimed the job).
    async fn renew(&self, owner: &str, ttl: Duration) -> Result<Vec<HeldJob>>;
    /// Called once when this process starts serving: on SQLite (one serving process) frees every
    /// lease the previous process left; on PostgreSQL does nothing (other replicas hold leases;
    /// a dead replica's expire).
    async fn recover_leases(&self) -> Result<()>;
    /// Gives a lease back (the job waits for the partner, is over, or the replica stops): the
    /// job's state as it was given back, or None if the lease was no longer held.
    async fn release(&self, owner: &str, lease: &Lease) -> Result<Option<JobState>>;

    // ---- brand markers ----
    async fn brand_markers(
        &self,
        tenant_id: &str,
        brand_id: &str,
        now: i64,
    ) -> Result<Option<(Markers, i64)>>;
    async fn put_brand_markers(
        &self,
        tenant_id: &str,
        brand_id: &str,
        markers: &Markers,
        expires_ms: i64,
    ) -> Result<()>;
    /// Drops a brand's markers; true if live markers existed.
    async fn delete_brand_markers(&self, tenant_id: &str, brand_id: &str, now: i64)
    -> Result<bool>;
}

/// Typed helpers over the object-safe trait.
impl dyn Store {
    /// [`Store::update_job_dyn`] with a typed result: returns what `change` returned and the job.
    pub async fn update_job<T: Send>(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        change: impl FnMut(&mut Job) -> Result<T> + Send,
    ) -> Result<(T, Job)> {
        typed_update(self, tenant_id, id, None, change).await
    }

    /// The same, conditional on holding `fence`.
    pub async fn update_job_fenced<T: Send>(
        &self,
        fence: &Lease,
        change: impl FnMut(&mut Job) -> Result<T> + Send,
    ) -> Result<(T, Job)> {
        typed_update(self, None, &fence.job_id, Some(fence), change).await
    }
}

async fn typed_update<T: Send>(
    store: &dyn Store,
    tenant_id: Option<&str>,
    id: &str,
    fence: Option<&Lease>,
    mut change: impl FnMut(&mut Job) -> Result<T> + Send,
) -> Result<(T, Job)> {
    let mut out = None;
    let job = store
        .update_job_dyn(tenant_id, id, fence, &mut |job: &mut Job| {
            out = Some(change(job)?);
            Ok(())
        })
        .await?;
    let out = out.ok_or_else(|| Error::internal(anyhow::anyhow!("job change not applied")))?;
    Ok((out, job))
}

/// Opens the store a database URL names: `sqlite://path` (created if missing) or `postgres://…`.
/// Runs the migrations.
pub async fn connect(url: &str, hub: Arc<EventHub>) -> anyhow::Result<Arc<dyn Store>> {
    connect_with(url, hub, Duration::from_secs(5)).await
}

/// The same, with how long PostgreSQL lets a transaction sit idle before ending it (keep it below
/// the lease TTL, so a paused replica's row locks do not outlive its lease).
pub async fn connect_with(
    url: &str,
    hub: Arc<EventHub>,
    idle_in_transaction: Duration,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Ok(Arc::new(sqlite::SqliteStore::open(path, hub).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect(url, hub, idle_in_transaction).await?,
        ))
    } else {
        anyhow::bail!(
            "unsupported database URL {:?}: use sqlite://… or postgres://…",
            redact(url)
        )
    }
}

// ---- rules both backends share ----

/// The limit check of `create_job`, on the counts read in the create transaction.
fn check_limits(tenant_id: &str, active: i64, total: i64, limits: JobLimits) -> Result<()> {
    if active >= i64::from(limits.max_active) {
        return Err(Error::ResourceExhausted {
            subject: format!("tenants/{tenant_id}/concurrent_jobs"),
            message: format!(
                "the tier allows {} jobs in progress at once; wait for one to finish",
                limits.max_active
            ),
            retry_after: Some(Duration::from_secs(10)),
        });
    }
    if let Some(quota) = limits.job_quota.filter(|q| total >= i64::from(*q)) {
        return Err(Error::ResourceExhausted {
            subject: format!("tenants/{tenant_id}/job_quota"),
            message: format!("the job quota of {quota} jobs is used up"),
            retry_after: None,
        });
    }
    Ok(())
}

/// Numbers a change's pending events after the job's last sequence (and advances it).
fn number_events(job: &mut Job, pending: Vec<(JobState, EventKind)>, at_ms: i64) -> Vec<Event> {
    let first = job.last_seq + 1;
    job.last_seq += pending.len() as u64;
    pending
        .into_iter()
        .enumerate()
        .map(|(i, (state, kind))| Event {
            job_id: job.id.clone(),
            seq: first + i as u64,
            at_ms,
            state,
            kind,
        })
        .collect()
}

/// What one committed change of a job writes besides the job itself.
struct Commit {
    events: Vec<Event>,
    ledger: Vec<LedgerEntry>,
}

/// Runs `change` on a loaded job and takes what it produced; `None` when nothing changed (nothing
/// to write). Shared by both backends so the rules of a commit are written once.
fn apply_change(
    job: &mut Job,
    tenant_id: Option<&str>,
    change: JobChange<'_>,
) -> Result<Option<Commit>> {
    if tenant_id.is_some_and(|t| t != job.tenant_id) {
        return Err(Error::not_found("job"));
    }
    change(job)?;
    let pending = std::mem::take(&mut job.pending_events);
    let ledger = std::mem::take(&mut job.pending_ledger);
    if pending.is_empty() && ledger.is_empty() && !std::mem::take(&mut job.dirty) {
        return Ok(None);
    }
    let now = now_ms();
    job.updated_ms = now;
    let events = number_events(job, pending, now);
    Ok(Some(Commit { events, ledger }))
}

/// What a job's end adds to its month's usage: (certified bill in micros, delivered seconds);
/// `None` unless this commit ended the job.
fn month_effect(before: JobState, job: &Job) -> Option<(i64, i64)> {
    if before.is_terminal() || !job.state.is_terminal() {
        return None;
    }
    let bill = job.billed.unwrap_or_else(|| job.current_bill());
    let seconds = if job.state == JobState::Delivered {
        i64::from(job.spec.duration_s)
    } else {
        0
    };
    Some((bill.micros(), seconds))
}

/// Sums the current bills of unfinished jobs (the pending part of usage).
fn pending_of(jobs: impl Iterator<Item = Job>, sandbox: bool) -> Money {
    jobs.filter(|j| j.sandbox == sandbox && !j.state.is_terminal())
        .fold(Money::ZERO, |sum, j| sum + j.current_bill())
}

/// How a transition changes the tenant's count of jobs in progress (-1 when a job ends).
fn active_delta(before: JobState, after: JobState) -> i64 {
    i64::from(before.is_terminal()) - i64::from(after.is_terminal())
}

/// Job metrics, recorded once per committed transition (labels are bounded: states and presets only).
fn record_transition(before: JobState, job: &Job) {
    if before == job.state || !job.state.is_terminal() {
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

/// The SQL of a ListJobs page (both backends use `$N` placeholders): binds tenant, then
/// `before_id` if any, the states, the preset, each label's key and value, and the limit.
fn job_page_sql(doc: &str, filter: &JobFilter, before: bool) -> String {
    let mut sql = format!("SELECT {doc} FROM jobs j WHERE j.tenant_id = $1");
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if before {
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
    sql
}

fn lease_ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

fn bad_column(what: &str, value: &str) -> Error {
    Error::internal(anyhow::anyhow!("bad {what} {value:?} in the database"))
}

/// Hides a password in a database URL for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The last committed state of recently used rows, kept by a store that sees every write of them
/// (SQLite: every write; PostgreSQL: a lease holder's own commits, see `PgStore`). A reader that
/// loaded a row races writers: [`RowCache::fill`] keeps its copy only if no write happened since
/// [`RowCache::before_read`], and writers record their rows after committing.
pub(crate) struct RowCache<T> {
    entries: quick_cache::sync::Cache<String, Arc<T>>,
    /// Bumped by every write, under `fill`: a reader that loaded a row before a write must not
    /// put its older copy back after the writer stored the new one.
    writes: AtomicU64,
    fill: std::sync::Mutex<()>,
}

impl<T> RowCache<T> {
    pub(crate) fn new(capacity: usize) -> RowCache<T> {
        RowCache {
            entries: quick_cache::sync::Cache::new(capacity),
            writes: AtomicU64::new(0),
            fill: std::sync::Mutex::new(()),
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<T>> {
        self.entries.get(id)
    }

    /// The write counter to pass to [`RowCache::fill`] for a row about to be read.
    pub(crate) fn before_read(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Caches a row read outside the writer lock, unless a write happened since `before_read`.
    pub(crate) fn fill(&self, seen: u64, id: &str, value: impl FnOnce() -> T) {
        let _fill = self.fill.lock().unwrap_or_else(|p| p.into_inner());
        if self.writes.load(Ordering::Acquire) == seen {
            self.entries.insert(id.to_string(), Arc::new(value()));
        }
    }

    /// Forgets every row (a store that may have missed writes).
    pub(crate) fn clear(&self) {
        let _fill = self.fill.lock().unwrap_or_else(|p| p.into_inner());
        self.entries.clear();
        self.writes.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a committed write (after the commit, under the writer lock): `value` is the row
    /// now, or `None` to forget it.
    pub(crate) fn wrote(&self, id: &str, value: Option<T>) {
        let _fill = self.fill.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => self.entries.insert(id.to_string(), Arc::new(v)),
            None => {
                self.entries.remove(id);
            }
        }
        self.writes.fetch_add(1, Ordering::AcqRel);
    }
}

/// The states a job is driven in (`runnable`), as SQL.
const RUNNABLE_SQL: &str = "state IN ('QUEUED', 'PLANNING', 'RENDERING', 'QUALITY_CHECK')";

/// The states of a job not yet over, as SQL (an index seek each, unlike `NOT IN` terminal ones).
const UNFINISHED_SQL: &str = "state IN ('QUEUED', 'PLANNING', 'AWAITING_APPROVAL', 'RENDERING', 'QUALITY_CHECK', 'AWAITING_FINAL_APPROVAL')";

/// What a commit's ledger lines add to the tenant's monthly spend rows: (month start, billable,
/// metered) per month, in micros (one row in practice; two across a month's end).
fn spend_by_month(ledger: &[LedgerEntry]) -> Vec<(i64, i64, i64)> {
    let mut months: Vec<(i64, i64, i64)> = Vec::new();
    for entry in ledger {
        let month = crate::domain::calendar::month_start_ms(entry.at_ms);
        let billable = if entry.succeeded {
            entry.amount.micros()
        } else {
            0
        };
        match months.iter_mut().find(|m| m.0 == month) {
            Some(m) => {
                m.1 += billable;
                m.2 += entry.amount.micros();
            }
            None => months.push((month, billable, entry.amount.micros())),
        }
    }
    months
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_older_than_a_write_is_not_cached() {
        let cache: RowCache<u32> = RowCache::new(16);
        // A reader loads version 1; meanwhile a writer commits version 2.
        let seen = cache.before_read();
        cache.wrote("job", Some(2));
        cache.fill(seen, "job", || 1);
        assert_eq!(cache.get("job").as_deref(), Some(&2));
        // A read with no write since is kept; a forgotten row is gone.
        let seen = cache.before_read();
        cache.fill(seen, "other", || 7);
        assert_eq!(cache.get("other").as_deref(), Some(&7));
        cache.wrote("job", None);
        assert!(cache.get("job").is_none());
        let seen = cache.before_read();
        cache.clear();
        cache.fill(seen, "job", || 1);
        assert!(cache.get("job").is_none() && cache.get("other").is_none());
    }

    #[test]
    fn state_lists_in_sql_match_the_rules() {
        for state in JobState::ALL {
            let quoted = format!("'{}'", state.as_str());
            assert_eq!(
                UNFINISHED_SQL.contains(&quoted),
                !state.is_terminal(),
                "{state:?}"
            );
            assert_eq!(RUNNABLE_SQL.contains(&quoted), runnable(state), "{state:?}");
        }
    }
}
