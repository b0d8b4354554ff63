//! A circuit breaker: opens after N consecutive failures, lets one trial call through after a
//! cool-down (half-open), and closes again on a success.

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

    pub fn allows_call(&self) -> bool {
        self.state_at(Instant::now()) != CircuitState::Open
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
