//! A circuit breaker: opens after N consecutive failures, lets one trial call through after a
//! cool-down (half-open), and closes again on a success. While the trial is out, other callers are
//! refused as if open; a trial that never reports back frees the slot after another cool-down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Circuit {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    /// When the half-open trial call was let through (one at a time).
    trial_started: Option<Instant>,
}

impl Circuit {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Circuit {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state_at(&self, now: Instant) -> CircuitState {
        match self.lock().opened_at {
            None => CircuitState::Closed,
            Some(t) if now.duration_since(t) >= self.cooldown => CircuitState::HalfOpen,
            Some(_) => CircuitState::Open,
        }
    }

    /// Whether a call would be let through now (for choosing a backend; takes nothing).
    pub fn allows_call(&self) -> bool {
        self.allows_call_at(Instant::now())
    }

    pub fn allows_call_at(&self, now: Instant) -> bool {
        let inner = self.lock();
        self.lets_through(&inner, now)
    }

    fn lets_through(&self, inner: &Inner, now: Instant) -> bool {
        match inner.opened_at {
            None => true,
            Some(t) if now.duration_since(t) < self.cooldown => false,
            // Half-open: only if no trial is out (or the last one was abandoned a cool-down ago).
            Some(_) => inner
                .trial_started
                .is_none_or(|t| now.duration_since(t) >= self.cooldown),
        }
    }

    /// Takes the right to make a call now: always when closed, never when open, and for exactly
    /// one caller when half-open (the trial, until it reports success or failure).
    pub fn begin_call(&self) -> bool {
        self.begin_call_at(Instant::now())
    }

    pub fn begin_call_at(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        if !self.lets_through(&inner, now) {
            return false;
        }
        if inner.opened_at.is_some() {
            inner.trial_started = Some(now);
        }
        true
    }

    pub fn record_success(&self) {
        *self.lock() = Inner::default();
    }

    /// Records a failure; true when this failure opened (or re-opened) the circuit.
    pub fn record_failure_at(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        inner.consecutive_failures += 1;
        let half_open = inner
            .opened_at
            .is_some_and(|t| now.duration_since(t) >= self.cooldown);
        if half_open || inner.consecutive_failures >= self.threshold {
            inner.opened_at = Some(now);
            inner.trial_started = None;
            return true;
        }
        false
    }

    pub fn record_failure(&self) -> bool {
        self.record_failure_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_half_opens_and_closes() {
        let c = Circuit::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(!c.record_failure_at(t0));
        assert!(!c.record_failure_at(t0));
        assert_eq!(c.state_at(t0), CircuitState::Closed);
        assert!(c.record_failure_at(t0));
        assert_eq!(c.state_at(t0 + Duration::from_secs(29)), CircuitState::Open);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(c.state_at(later), CircuitState::HalfOpen);
        // A failed trial call re-opens at once.
        assert!(c.record_failure_at(later));
        assert_eq!(
            c.state_at(later + Duration::from_secs(1)),
            CircuitState::Open
        );
        c.record_success();
        assert_eq!(c.state_at(later), CircuitState::Closed);
    }

    #[test]
    fn half_open_lets_exactly_one_trial_through() {
        let c = std::sync::Arc::new(Circuit::new(1, Duration::from_secs(30)));
        let t0 = Instant::now();
        assert!(c.begin_call_at(t0), "closed: everyone");
        assert!(c.begin_call_at(t0));
        assert!(c.record_failure_at(t0));
        assert!(!c.begin_call_at(t0), "open: nobody");
        let half = t0 + Duration::from_secs(30);
        // Many callers at once: one trial.
        let granted = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let c = c.clone();
                    s.spawn(move || c.begin_call_at(half))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|g| *g)
                .count()
        });
        assert_eq!(granted, 1, "half-open lets one trial call through");
        assert!(!c.allows_call_at(half + Duration::from_secs(1)));
        // A trial that never reports back frees the slot after a cool-down.
        assert!(c.begin_call_at(half + Duration::from_secs(30)));
        // A successful trial closes the circuit for everyone.
        c.record_success();
        assert!(c.begin_call_at(half) && c.begin_call_at(half));
    }

    #[test]
    fn a_success_resets_the_count() {
        let c = Circuit::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        c.record_failure_at(t0);
        c.record_failure_at(t0);
        c.record_success();
        assert!(!c.record_failure_at(t0));
        assert_eq!(c.state_at(t0), CircuitState::Closed);
    }
}
