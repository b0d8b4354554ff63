//! The embedded store's hot writes, on one rusqlite connection run inline by the task holding the
//! writer lock. Through sqlx every statement, `BEGIN` and `COMMIT` is a round trip to the
//! connection's worker thread (two context switches each, the largest cost of a job on one core);
//! here a whole commit is a few microseconds of SQLite on the caller's thread, with prepared
//! statements cached. In WAL mode with `synchronous = NORMAL` a commit does not wait on the disk,
//! so running it inline does not stall the runtime (a checkpoint now and then syncs once).
//!
//! The rules of a commit are the store's (`super::apply_change`, `number_events`,
//! `check_limits`, `month_effect`, `active_delta`, `spend_by_month`); this file only speaks SQL.

use super::{
    Commit, JobChange, JobLimits, Lease, RUNNABLE_SQL, apply_change, check_limits, lease_ttl_ms,
    number_events,
};
use crate::domain::JobState;
use crate::domain::job::{Event, Job, LedgerEntry};
use crate::error::{Error, Result};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use std::time::Duration;

/// The one place rusqlite errors become domain errors (as `sqlite::db_err` does for sqlx).
fn write_err(e: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                return Error::Unavailable {
                    message: "the database is busy; retry shortly".into(),
                    retry_after: Duration::from_secs(1),
                };
            }
            rusqlite::ErrorCode::ConstraintViolation
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                return Error::Aborted("the record already exists".into());
            }
            _ => {}
        }
    }
    Error::internal(e)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(Error::internal)
}

/// What a commit of a job change did.
pub(super) struct Committed {
    pub job: Job,
    pub lease_token: i64,
    pub before: JobState,
    /// `None`: the change was a no-op and nothing was written.
    pub events: Option<Vec<Event>>,
}

/// What creating a job did.
pub(super) enum Inserted {
    New(Job, Vec<Event>),
    Existing(Job),
}

pub(super) struct Writer {
    conn: Connection,
}

impl Writer {
    /// Opens the writer connection on a database sqlx has created and migrated.
    pub fn open(file: &str) -> anyhow::Result<Writer> {
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA mmap_size = 268435456;
             PRAGMA cache_size = -32768;
             PRAGMA temp_store = MEMORY;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Writer { conn })
    }

    fn begin(&mut self) -> Result<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_err)
    }

    /// Inserts a new job with its first events, counted against the tenant's limits, unless the
    /// tenant already has a job with its request id.
    pub fn create_job(&mut self, mut job: Job, limits: JobLimits) -> Result<Inserted> {
        let tx = self.begin()?;
        let existing: Option<String> = tx
            .prepare_cached("SELECT doc FROM jobs WHERE tenant_id = ?1 AND request_id = ?2")
            .and_then(|mut s| {
                s.query_row(params![job.tenant_id, job.request_id], |r| r.get(0))
                    .optional()
            })
            .map_err(write_err)?;
        if let Some(doc) = existing {
            return Ok(Inserted::Existing(
                serde_json::from_str(&doc).map_err(Error::internal)?,
            ));
        }
        let (active, total): (i64, i64) = tx
            .prepare_cached("SELECT active, total FROM tenant_job_counts WHERE tenant_id = ?1")
            .and_then(|mut s| {
                s.query_row(params![job.tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(write_err)?
            .unwrap_or_default();
        check_limits(&job.tenant_id, active, total, limits)?;
        let pending = std::mem::take(&mut job.pending_events);
        job.last_seq = 0;
        let created_ms = job.created_ms;
        let events = number_events(&mut job, pending, created_ms);
        let doc = json(&job)?;
        tx.prepare_cached(
            "INSERT INTO jobs (id, tenant_id, request_id, state, preset_id, last_seq, created_ms, updated_ms, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut s| {
            s.execute(params![
                job.id,
                job.tenant_id,
                job.request_id,
                job.state.as_str(),
                job.spec.preset_id,
                job.last_seq as i64,
                job.created_ms,
                job.updated_ms,
                doc,
            ])
        })
        .map_err(write_err)?;
        for (key, value) in &job.spec.labels {
            tx.prepare_cached(
                "INSERT INTO job_labels (job_id, label_key, label_value) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![job.id, key, value]))
            .map_err(write_err)?;
        }
        insert_events(&tx, &events)?;
        add_month_usage(&tx, &job, 1, None)?;
        tx.prepare_cached(
            "INSERT INTO tenant_job_counts (tenant_id, active, total) VALUES (?1, 1, 1)
             ON CONFLICT (tenant_id) DO UPDATE SET active = tenant_job_counts.active + 1, total = tenant_job_counts.total + 1",
        )
        .and_then(|mut s| s.execute(params![job.tenant_id]))
        .map_err(write_err)?;
        tx.commit().map_err(write_err)?;
        Ok(Inserted::New(job, events))
    }

    /// Applies `change` to the job (`cached`: its committed row, when the caller has it) and
    /// commits the new document with its events, ledger lines and the tenant's counters.
    pub fn commit_job(
        &mut self,
        tenant_id: Option<&str>,
        id: &str,
        fence: Option<&Lease>,
        cached: Option<(Job, i64)>,
        change: JobChange<'_>,
    ) -> Result<Committed> {
        let tx = self.begin()?;
        let (mut job, lease_token) = match cached {
            Some(c) => c,
            None => {
                let row: Option<(String, i64)> = tx
                    .prepare_cached("SELECT doc, lease_token FROM jobs WHERE id = ?1")
                    .and_then(|mut s| {
                        s.query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(write_err)?;
                let Some((doc, token)) = row else {
                    return Err(Error::not_found("job"));
                };
                (serde_json::from_str(&doc).map_err(Error::internal)?, token)
            }
        };
        if fence.is_some_and(|f| f.token != lease_token) {
            return Err(Error::LeaseLost);
        }
        let before = job.state;
        let Some(Commit { events, ledger }) = apply_change(&mut job, tenant_id, change)? else {
            return Ok(Committed {
                job,
                lease_token,
                before,
                events: None,
            });
        };
        insert_events(&tx, &events)?;
        insert_ledger(&tx, &mut job, &ledger)?;
        if let Some(ended) = super::month_effect(before, &job) {
            add_month_usage(&tx, &job, 0, Some(ended))?;
        }
        let delta = super::active_delta(before, job.state);
        if delta != 0 {
            tx.prepare_cached(
                "UPDATE tenant_job_counts SET active = active + ?2 WHERE tenant_id = ?1",
            )
            .and_then(|mut s| s.execute(params![job.tenant_id, delta]))
            .map_err(write_err)?;
        }
        let doc = json(&job)?;
        tx.prepare_cached(
            "UPDATE jobs SET state = ?2, last_seq = ?3, updated_ms = ?4, doc = ?5 WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                job.state.as_str(),
                job.last_seq as i64,
                job.updated_ms,
                doc
            ])
        })
        .map_err(write_err)?;
        tx.commit().map_err(write_err)?;
        Ok(Committed {
            job,
            lease_token,
            before,
            events: Some(events),
        })
    }

    /// Takes the lease of `job_id`, or of the runnable job waiting longest, if free or expired.
    pub fn claim(
        &mut self,
        owner: &str,
        now: i64,
        ttl: Duration,
        job_id: Option<&str>,
    ) -> Result<Option<Lease>> {
        if job_id.is_none() {
            // Most looks find nothing: find that out without a write transaction.
            let found: Option<i64> = self
                .conn
                .prepare_cached(&format!(
                    "SELECT 1 FROM jobs WHERE {RUNNABLE_SQL} AND lease_expires_ms < ?1 LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![now], |r| r.get(0)).optional())
                .map_err(write_err)?;
            if found.is_none() {
                return Ok(None);
            }
        }
        let pick = match job_id {
            Some(_) => format!(
                "SELECT id FROM jobs WHERE id = ?3 AND {RUNNABLE_SQL} AND lease_expires_ms < ?2"
            ),
            None => format!(
                "SELECT id FROM jobs WHERE {RUNNABLE_SQL} AND lease_expires_ms < ?2 ORDER BY updated_ms LIMIT 1"
            ),
        };
        let sql = format!(
            "UPDATE jobs SET lease_owner = ?1, lease_token = lease_token + 1, lease_expires_ms = ?2 + ?4
             WHERE id = ({pick}) RETURNING id, lease_token"
        );
        let tx = self.begin()?;
        let lease = tx
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_row(
                    params![owner, now, job_id.unwrap_or_default(), lease_ttl_ms(ttl)],
                    |r| {
                        Ok(Lease {
                            job_id: r.get(0)?,
                            token: r.get(1)?,
                        })
                    },
                )
                .optional()
            })
            .map_err(write_err)?;
        tx.commit().map_err(write_err)?;
        Ok(lease)
    }

    /// Gives a lease back (a no-op when it is no longer this owner's).
    pub fn release(&mut self, owner: &str, lease: &Lease) -> Result<Option<JobState>> {
        let state: Option<String> = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_ms = 0
                 WHERE id = ?1 AND lease_owner = ?2 AND lease_token = ?3 RETURNING state",
            )
            .and_then(|mut s| {
                s.query_row(params![lease.job_id, owner, lease.token], |r| r.get(0))
                    .optional()
            })
            .map_err(write_err)?;
        state
            .map(|s| JobState::parse(&s).ok_or_else(|| super::bad_column("job state", &s)))
            .transpose()
    }
}

/// Appends events in one statement per batch size (the statement is cached per size).
fn insert_events(tx: &Transaction<'_>, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..events.len())
        .map(|i| {
            let n = 4 * i;
            format!("(?{}, ?{}, ?{}, ?{})", n + 1, n + 2, n + 3, n + 4)
        })
        .collect();
    let sql = format!(
        "INSERT INTO job_events (job_id, seq, created_ms, doc) VALUES {}",
        rows.join(", ")
    );
    let docs = events.iter().map(json).collect::<Result<Vec<_>>>()?;
    let mut stmt = tx.prepare_cached(&sql).map_err(write_err)?;
    for (i, (event, doc)) in events.iter().zip(&docs).enumerate() {
        let n = 4 * i;
        stmt.raw_bind_parameter(n + 1, &event.job_id)
            .and_then(|_| stmt.raw_bind_parameter(n + 2, event.seq as i64))
            .and_then(|_| stmt.raw_bind_parameter(n + 3, event.at_ms))
            .and_then(|_| stmt.raw_bind_parameter(n + 4, doc))
            .map_err(write_err)?;
    }
    stmt.raw_execute().map_err(write_err)?;
    Ok(())
}

/// Appends ledger lines (numbered after the job's last) and adds them to the monthly spend rows.
fn insert_ledger(tx: &Transaction<'_>, job: &mut Job, ledger: &[LedgerEntry]) -> Result<()> {
    if ledger.is_empty() {
        return Ok(());
    }
    let lines: i64 = match job.ledger_lines {
        Some(n) => i64::from(n),
        None => tx
            .prepare_cached("SELECT COUNT(*) FROM ledger WHERE job_id = ?1")
            .and_then(|mut s| s.query_row(params![job.id], |r| r.get(0)))
            .map_err(write_err)?,
    };
    for (i, entry) in ledger.iter().enumerate() {
        let doc = json(entry)?;
        tx.prepare_cached(
            "INSERT INTO ledger (job_id, line_no, tenant_id, sandbox, amount, succeeded, created_ms, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                job.id,
                lines + i as i64 + 1,
                job.tenant_id,
                i64::from(job.sandbox),
                entry.amount.micros(),
                i64::from(entry.succeeded),
                entry.at_ms,
                doc
            ])
        })
        .map_err(write_err)?;
    }
    for (month, billable, metered) in super::spend_by_month(ledger) {
        tx.prepare_cached(
            "INSERT INTO tenant_month_spend (tenant_id, sandbox, month_start_ms, billable, metered)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant_id, sandbox, month_start_ms) DO UPDATE SET
                 billable = tenant_month_spend.billable + excluded.billable,
                 metered = tenant_month_spend.metered + excluded.metered",
        )
        .and_then(|mut s| {
            s.execute(params![
                job.tenant_id,
                i64::from(job.sandbox),
                month,
                billable,
                metered
            ])
        })
        .map_err(write_err)?;
    }
    job.ledger_lines = Some((lines + ledger.len() as i64) as u32);
    Ok(())
}

/// Adds to the usage row of the job's creation month: `jobs` new jobs, and an ended job's (bill,
/// delivered seconds).
fn add_month_usage(
    tx: &Transaction<'_>,
    job: &Job,
    jobs: i64,
    ended: Option<(i64, i64)>,
) -> Result<()> {
    let (billed, seconds) = ended.unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO tenant_month_usage (tenant_id, sandbox, month_start_ms, jobs, certified_jobs, billed, delivered_seconds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (tenant_id, sandbox, month_start_ms) DO UPDATE SET
             jobs = tenant_month_usage.jobs + excluded.jobs,
             certified_jobs = tenant_month_usage.certified_jobs + excluded.certified_jobs,
             billed = tenant_month_usage.billed + excluded.billed,
             delivered_seconds = tenant_month_usage.delivered_seconds + excluded.delivered_seconds",
    )
    .and_then(|mut s| {
        s.execute(params![
            job.tenant_id,
            i64::from(job.sandbox),
            crate::domain::calendar::month_start_ms(job.created_ms),
            jobs,
            i64::from(ended.is_some()),
            billed,
            seconds
        ])
    })
    .map_err(write_err)?;
    Ok(())
}
