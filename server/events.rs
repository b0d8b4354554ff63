//! Live fan-out of job events from memory. The committing writer hands its events to the hub
//! (`publish_events`); every watcher of the job in this process receives the same batch (one
//! `Arc`, no database read). A batch is only the latest news: a watcher that fell behind (it missed
//! a batch, or a batch came from another replica without its events) sees a gap and reads the
//! missing events from the database, which stays the source of truth. So a watcher never misses an
//! event, a slow watcher only delays itself, and idle watchers cost nothing (no polling).

use crate::domain::job::Event;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::watch;

/// What was last committed for a job: the sequence it reached, and the events of that commit when
/// the committing process knows them (empty when only the sequence is known, e.g. a notification
/// from another replica), and up to `RECENT` events of the commits just before it, so that a
/// watcher a few commits behind (many streams on one core) catches up from memory, not from the
/// database.
#[derive(Clone, Debug, Default)]
pub struct Committed {
    pub up_to: u64,
    /// This commit's events, in sequence order.
    pub events: Arc<[Arc<SharedEvent>]>,
    /// Events of the commits before, in sequence order, ending just before `events`.
    pub earlier: Arc<[Arc<SharedEvent>]>,
    /// Bumped by `EventHub::resync_all`: a watcher that sees it change re-reads the database.
    pub resync: u64,
    /// Set by `EventHub::close_all`: the server is shutting down, watchers end.
    pub closing: bool,
}

/// Events of earlier commits kept in a job's latest batch.
pub const RECENT: usize = 64;

/// A committed event shared by every watcher of the job in this process, with its wire form: made
/// once, by the first stream that sends it, and shared by all the others (so an event is converted
/// and encoded once, not once per stream).
#[derive(Debug)]
pub struct SharedEvent {
    event: Event,
    wire: OnceLock<Bytes>,
}

impl SharedEvent {
    pub fn new(event: Event) -> SharedEvent {
        SharedEvent {
            event,
            wire: OnceLock::new(),
        }
    }

    /// The event's wire form, made by `encode` on first use.
    pub fn wire(&self, encode: impl FnOnce(&Event) -> Bytes) -> Bytes {
        self.wire.get_or_init(|| encode(&self.event)).clone()
    }
}

impl std::ops::Deref for SharedEvent {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

impl Committed {
    /// The events after `last` in this batch, if the batch covers everything after `last`
    /// (`None`: there is a gap, read the database).
    pub fn after(&self, last: u64) -> Option<impl Iterator<Item = &Arc<SharedEvent>>> {
        let known = || self.earlier.iter().chain(self.events.iter());
        if self.up_to > last && known().next()?.seq > last + 1 {
            return None;
        }
        Some(known().filter(move |e| e.seq > last))
    }

    /// This commit with the recent events of `previous` (at most `RECENT`) as `earlier`, when its
    /// events follow them without a gap.
    fn following(mut self, previous: &Committed) -> Committed {
        self.resync = previous.resync;
        self.closing = previous.closing;
        let (Some(first), Some(prev_last)) = (self.events.first(), previous.events.last()) else {
            return self;
        };
        if prev_last.seq + 1 != first.seq {
            return self;
        }
        let before = previous.earlier.len() + previous.events.len();
        self.earlier = previous
            .earlier
            .iter()
            .chain(previous.events.iter())
            .skip(before.saturating_sub(RECENT))
            .cloned()
            .collect();
        self
    }
}

/// Per-job "latest commit" channels. A resync or the shutdown is announced on every job's
/// channel too, so that a watcher waits on one channel only: a commit watched by 10,000 streams
/// wakes 10,000 waiters, not three times as many registrations to make and drop again.
#[derive(Default)]
pub struct EventHub {
    jobs: Mutex<HashMap<String, watch::Sender<Committed>>>,
    /// Size after the last pruning: prune again when the map has doubled (amortised O(1)).
    pruned_at: AtomicUsize,
    /// Bumped when notifications may have been lost (the cross-replica listener reconnected):
    /// every watcher then re-reads the database once.
    resyncs: AtomicU64,
    /// The server is shutting down (`close_all`).
    closing: AtomicBool,
}

impl EventHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Committed>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to a job's commits. Subscribe before reading the store so no commit is missed.
    pub fn subscribe(&self, job_id: &str) -> watch::Receiver<Committed> {
        let mut jobs = self.lock();
        // Jobs whose watchers all left (finished jobs are never published again) are dropped here.
        let pruned_at = self.pruned_at.load(Ordering::Relaxed);
        if jobs.len() > (2 * pruned_at).max(1024) {
            jobs.retain(|_, tx| tx.receiver_count() > 0);
            self.pruned_at.store(jobs.len(), Ordering::Relaxed);
        }
        // Read under the lock: `close_all` sets the flag before it takes the lock, so a
        // subscriber either sees the flag here or is in the map when `close_all` walks it.
        let closing = self.closing.load(Ordering::Acquire);
        let mut rx = jobs
            .entry(job_id.to_string())
            .or_insert_with(|| {
                watch::channel(Committed {
                    resync: self.resyncs.load(Ordering::Acquire),
                    closing,
                    ..Committed::default()
                })
                .0
            })
            .subscribe();
        if closing {
            rx.mark_changed();
        }
        rx
    }

    /// Announces a commit of `events` (in sequence order) that took the job to `up_to`.
    pub fn publish_events(&self, job_id: &str, up_to: u64, events: Vec<Event>) {
        self.send(
            job_id,
            Committed {
                up_to,
                events: events
                    .into_iter()
                    .map(|e| Arc::new(SharedEvent::new(e)))
                    .collect(),
                ..Committed::default()
            },
        );
    }

    /// Announces that a job committed events up to `seq` (events unknown here).
    pub fn publish(&self, job_id: &str, seq: u64) {
        self.send(
            job_id,
            Committed {
                up_to: seq,
                ..Committed::default()
            },
        );
    }

    fn send(&self, job_id: &str, committed: Committed) {
        let mut jobs = self.lock();
        if let Some(tx) = jobs.get(job_id) {
            if tx.receiver_count() == 0 {
                jobs.remove(job_id);
            } else {
                // Never move backwards (notifications may arrive after the local publish).
                tx.send_if_modified(|current| {
                    if committed.up_to > current.up_to {
                        *current = committed.following(current);
                        true
                    } else {
                        false
                    }
                });
            }
        }
    }

    /// The sequence last announced for a job with watchers here (`None`: nobody watches it).
    pub fn watched_up_to(&self, job_id: &str) -> Option<u64> {
        self.lock()
            .get(job_id)
            .filter(|tx| tx.receiver_count() > 0)
            .map(|tx| tx.borrow().up_to)
    }

    /// Every job with watchers here, with the sequence they know of.
    pub fn watched(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(id, tx)| (id.clone(), tx.borrow().up_to))
            .collect()
    }

    /// Tells every watcher to re-read the database once (notifications may have been lost).
    pub fn resync_all(&self) {
        let resync = self.resyncs.fetch_add(1, Ordering::AcqRel) + 1;
        for tx in self.lock().values() {
            tx.send_modify(|c| c.resync = resync);
        }
    }

    /// Ends every watcher, now and from now on (the server is shutting down).
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        for tx in self.lock().values() {
            tx.send_modify(|c| c.closing = true);
        }
    }

    /// Number of jobs with live subscribers (for tests and metrics).
    pub fn watched_jobs(&self) -> usize {
        self.lock()
            .values()
            .filter(|tx| tx.receiver_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobState;
    use crate::domain::job::EventKind;

    fn event(seq: u64) -> Event {
        Event {
            job_id: "job-a".into(),
            seq,
            at_ms: 0,
            state: JobState::Queued,
            kind: EventKind::StateChanged {
                from: None,
                to: JobState::Queued,
            },
        }
    }

    #[tokio::test]
    async fn hands_committed_events_to_every_subscriber_and_forgets_finished_jobs() {
        let hub = EventHub::default();
        let mut a = hub.subscribe("job-a");
        let mut b = hub.subscribe("job-a");
        hub.publish_events("job-a", 3, vec![event(2), event(3)]);
        a.changed().await.unwrap();
        b.changed().await.unwrap();
        let batch = a.borrow_and_update().clone();
        assert_eq!(batch.up_to, 3);
        assert_eq!(batch.after(1).unwrap().count(), 2);
        assert_eq!(batch.after(2).unwrap().count(), 1);
        assert!(batch.after(0).is_none(), "a gap: read the database");
        assert_eq!(batch.after(3).unwrap().count(), 0);
        // An older notification never replaces a newer batch.
        hub.publish("job-a", 2);
        assert!(!a.has_changed().unwrap());
        assert_eq!(hub.watched_up_to("job-a"), Some(3));
        // The next commit's batch keeps the recent events: a watcher one commit behind catches
        // up from memory, and shares the events' wire form.
        let first = batch.events[0].clone();
        assert_eq!(
            first.wire(|e| Bytes::from(vec![e.seq as u8])),
            Bytes::from(vec![2])
        );
        hub.publish_events("job-a", 4, vec![event(4)]);
        let batch = a.borrow_and_update().clone();
        let seqs: Vec<u64> = batch.after(1).unwrap().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(batch.events.len(), 1, "the commit's own events");
        assert!(Arc::ptr_eq(&batch.earlier[0], &first));
        assert_eq!(
            batch.earlier[0].wire(|_| unreachable!()),
            Bytes::from(vec![2])
        );
        // A sequence-only notification (another replica) breaks the chain: a gap.
        hub.publish("job-a", 6);
        hub.publish_events("job-a", 7, vec![event(7)]);
        assert!(a.borrow_and_update().after(5).is_none());
        for seq in 8..200 {
            hub.publish_events("job-a", seq, vec![event(seq)]);
        }
        assert_eq!(a.borrow().earlier.len(), RECENT, "bounded");
        drop((a, b));
        for i in 0..3000 {
            drop(hub.subscribe(&format!("job-{i}")));
        }
        let kept = hub.jobs.lock().unwrap().len();
        assert!(kept <= 2048, "abandoned entries are pruned ({kept})");
        assert_eq!(hub.watched_jobs(), 0);
    }

    #[tokio::test]
    async fn resyncs_and_the_shutdown_reach_watchers_on_their_job_channel() {
        let hub = EventHub::default();
        let mut a = hub.subscribe("job-a");
        assert_eq!(a.borrow().resync, 0);
        hub.resync_all();
        a.changed().await.unwrap();
        assert_eq!(a.borrow_and_update().resync, 1);
        // A commit keeps the resync count (a watcher compares it with the one it last saw).
        hub.publish_events("job-a", 2, vec![event(2)]);
        a.changed().await.unwrap();
        assert_eq!(a.borrow_and_update().resync, 1);
        // A job first watched after a resync starts at the current count (nothing to re-read).
        let b = hub.subscribe("job-b");
        assert_eq!(b.borrow().resync, 1);
        assert!(!b.has_changed().unwrap());

        hub.close_all();
        a.changed().await.unwrap();
        assert!(a.borrow_and_update().closing);
        // Whoever subscribes after the shutdown sees it at once.
        let mut late = hub.subscribe("job-c");
        late.changed().await.unwrap();
        assert!(late.borrow_and_update().closing);
        // A commit after the shutdown does not clear it.
        hub.publish_events("job-a", 3, vec![event(3)]);
        assert!(a.borrow().closing);
    }

    #[test]
    fn a_sequence_only_batch_is_a_gap() {
        let c = Committed {
            up_to: 5,
            ..Default::default()
        };
        assert!(c.after(4).is_none());
        assert_eq!(c.after(5).unwrap().count(), 0);
    }
}
