//! CPU-bound media work (rendering, encoding, measuring, assembling, and storing the results in a
//! local artifact directory: `App::local_artifacts`) on threads of its own, at the lowest CPU
//! priority (Linux's `SCHED_IDLE` policy, else nice 19), below the threads that serve calls and
//! stream events.
//!
//! Why: a render or an assembly takes tens of milliseconds of CPU at a time. On tokio's blocking
//! pool it shared a busy core equally with the runtime, so an event fanned out while a clip
//! encoded reached its watchers up to twice as late (the fan-out bench's probe streams: p99
//! 56–106 ms before, 13–72 ms at nice 10, across interleaved runs). Even at nice 19 a media thread
//! that wakes gets the core for a while: in the 16 ms after a shot was rendered it took 16–29 % of
//! it, most of that zeroing fresh pages for its frame buffers. A `SCHED_IDLE` thread never preempts
//! the runtime. Probe p99 in four interleaved pairs: 13.7–22.0 ms, median 14.6 (`SCHED_IDLE`),
//! against 15.6–21.5 ms, median 21.4 (nice 19). An idle core still runs media work at full speed, and a saturated one
//! still gives it a little (the kernel's weight for `SCHED_IDLE` is 3 against 1024 at nice 0).
//!
//! A thread's priority cannot be raised again without privileges, so these threads only ever do
//! media work. They start on demand (one more whenever none is idle, up to `MAX_THREADS`; the
//! callers' media permits bound how many are needed) and then wait for work.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

/// The nice value of media threads where `SCHED_IDLE` is refused (0 is the default; 19 the
/// lowest priority).
const NICE: i32 = 19;
/// Threads at most; more work waits for one to be free.
const MAX_THREADS: usize = 64;

type Work = Box<dyn FnOnce() + Send>;

struct Pool {
    queue: mpsc::Sender<Work>,
    work: Arc<Mutex<mpsc::Receiver<Work>>>,
    threads: AtomicUsize,
    idle: Arc<AtomicUsize>,
}

/// Media work that did not finish: it panicked (a bug; the panic is logged by the hook).
#[derive(Debug, thiserror::Error)]
#[error("media work panicked")]
pub struct Panicked;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (queue, work) = mpsc::channel();
        Pool {
            queue,
            work: Arc::new(Mutex::new(work)),
            threads: AtomicUsize::new(0),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    })
}

impl Pool {
    /// Starts a thread when none is idle (at most `MAX_THREADS`).
    fn grow(&self) {
        if self.idle.load(Ordering::Acquire) > 0 {
            return;
        }
        let n = self.threads.fetch_add(1, Ordering::AcqRel);
        if n >= MAX_THREADS {
            self.threads.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let (work, idle) = (self.work.clone(), self.idle.clone());
        // Counted idle before it exists, so that a burst of work starts one thread per item.
        idle.fetch_add(1, Ordering::AcqRel);
        let started = std::thread::Builder::new()
            .name("aiprod-media".into())
            .spawn(move || {
                lower_priority();
                loop {
                    let next = work.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = next else { return };
                    idle.fetch_sub(1, Ordering::AcqRel);
                    job();
                    idle.fetch_add(1, Ordering::AcqRel);
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "could not start a media thread");
            self.idle.fetch_sub(1, Ordering::AcqRel);
            self.threads.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// This thread under `SCHED_IDLE`, or at nice `NICE` where that is refused. Linux only: there
/// both apply to the calling thread; elsewhere `setpriority(PRIO_PROCESS, 0)` would renice the
/// whole process, so nothing is done.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        if let Err(e) = idle {
            tracing::debug!(error = ?e, "media thread not under SCHED_IDLE; nice instead");
            if let Err(e) = rustix::process::setpriority_process(None, NICE) {
                tracing::debug!(error = %e, "media thread keeps its priority");
            }
        }
    }
}

/// Runs `f` on a media thread and waits for its result without blocking the runtime.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Panicked> {
    let pool = pool();
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.grow();
    let job: Work = Box::new(move || {
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    if let Err(mpsc::SendError(job)) = pool.queue.send(job) {
        // Unreachable (the pool keeps its receiver), but never lose the work: run it here.
        job();
    }
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) | Err(_) => Err(Panicked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_on_lower_priority_threads_and_reports_panics() {
        let (value, name) = run(|| (6 * 7, std::thread::current().name().map(String::from)))
            .await
            .unwrap();
        assert_eq!(value, 42);
        assert_eq!(name.as_deref(), Some("aiprod-media"));
        #[cfg(target_os = "linux")]
        {
            use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
            let policy = run(|| thread_priority::unix::thread_schedule_policy().unwrap())
                .await
                .unwrap();
            assert_eq!(
                policy,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
            );
        }
        assert!(run(|| panic!("boom")).await.is_err());
        // The pool survives a panic and runs work in parallel.
        let many: Vec<_> = (0..8_u64).map(|i| run(move || i * 2)).collect();
        let results = futures::future::join_all(many).await;
        let sum: u64 = results.into_iter().map(Result::unwrap).sum();
        assert_eq!(sum, 56);
    }
}
