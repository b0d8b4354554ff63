//! Live fan-out of job events. The database is the source of truth: a watcher reads committed
//! events from the store and only waits here for "something new was committed". A watcher therefore
//! never misses an event, and a slow watcher only delays itself.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// Per-job "latest committed sequence" signals.
#[derive(Default)]
pub struct EventHub {
    jobs: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl EventHub {
    /// Subscribes to a job's commits. Subscribe before reading the store so no commit is missed.
    pub fn subscribe(&self, job_id: &str) -> watch::Receiver<u64> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.entry(job_id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Announces that a job committed events up to `seq`.
    pub fn publish(&self, job_id: &str, seq: u64) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = jobs.get(job_id) {
            if tx.receiver_count() == 0 {
                jobs.remove(job_id);
            } else {
                tx.send_replace(seq);
            }
        }
    }

    /// Number of jobs with live subscribers (for tests and metrics).
    pub fn watched_jobs(&self) -> usize {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|tx| tx.receiver_count() > 0)
            .count()
    }
}
