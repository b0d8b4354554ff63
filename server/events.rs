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
    /// Size after the last pruning: prune again when the map has doubled (amortised O(1)).
    pruned_at: std::sync::atomic::AtomicUsize,
}

impl EventHub {
    /// Subscribes to a job's commits. Subscribe before reading the store so no commit is missed.
    pub fn subscribe(&self, job_id: &str) -> watch::Receiver<u64> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // Jobs whose watchers all left (finished jobs are never published again) are dropped here.
        let pruned_at = self.pruned_at.load(std::sync::atomic::Ordering::Relaxed);
        if jobs.len() > (2 * pruned_at).max(1024) {
            jobs.retain(|_, tx| tx.receiver_count() > 0);
            self.pruned_at
                .store(jobs.len(), std::sync::atomic::Ordering::Relaxed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_subscribers_and_forgets_finished_jobs() {
        let hub = EventHub::default();
        let mut rx = hub.subscribe("job-a");
        hub.publish("job-a", 3);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 3);
        drop(rx);
        for i in 0..3000 {
            drop(hub.subscribe(&format!("job-{i}")));
        }
        let kept = hub.jobs.lock().unwrap().len();
        assert!(kept <= 2048, "abandoned entries are pruned ({kept})");
        assert_eq!(hub.watched_jobs(), 0);
    }
}
