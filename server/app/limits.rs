//! Per-tenant limits: a token bucket per tenant sized by its tier, and the calendar arithmetic of
//! monthly budgets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Budget shares (percent) at which a tenant is alerted; at 90 % new jobs go economy, at 100 % they are refused.
pub const BUDGET_ALERTS: [u32; 3] = [70, 90, 100];
pub const ECONOMY_AT_PERCENT: u32 = 90;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by tenant: capacity = the tier's requests per minute, refilled continuously.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one token; `Err(wait)` says how long until the next token.
    pub fn check_at(&self, tenant_id: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Bound memory: drop buckets that are full again (idle tenants).
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < capacity
            });
        }
        // No allocation on the hot path: the tenant's key is copied only for its first bucket.
        if !buckets.contains_key(tenant_id) {
            buckets.insert(
                tenant_id.to_string(),
                Bucket {
                    tokens: capacity,
                    updated: now,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(tenant_id) else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        // A tier change takes effect at once: the capacity is re-read on every call.
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    pub fn check(&self, tenant_id: &str, per_minute: u32) -> Result<(), Duration> {
        self.check_at(tenant_id, per_minute, Instant::now())
    }
}

pub use crate::domain::calendar::month_start_ms;

/// Thresholds crossed when spend moves from `before` to `after` against `budget`.
pub fn crossed(before: i64, after: i64, budget: i64) -> Vec<u32> {
    if budget <= 0 {
        return vec![];
    }
    BUDGET_ALERTS
        .into_iter()
        .filter(|t| {
            let line = i128::from(budget) * i128::from(*t);
            i128::from(before) * 100 < line && i128::from(after) * 100 >= line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_starts() {
        // 2026-11-25T11:00:00Z → 2026-11-01T00:00:00Z
        assert_eq!(month_start_ms(1_795_604_400_000), 1_793_491_200_000);
        assert_eq!(month_start_ms(0), 0);
        // 2024-03-01 (after a leap February) starts its own month.
        assert_eq!(month_start_ms(1_709_251_200_000), 1_709_251_200_000);
        assert_eq!(month_start_ms(1_709_251_199_999), 1_706_745_600_000);
    }

    #[test]
    fn buckets_refill_and_say_how_long_to_wait() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check_at("a", 10, t0).is_ok());
        }
        let wait = limiter.check_at("a", 10, t0).unwrap_err();
        assert!((5.9..=6.1).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(
            limiter.check_at("b", 10, t0).is_ok(),
            "tenants do not share a bucket"
        );
        assert!(
            limiter
                .check_at("a", 10, t0 + Duration::from_secs(6))
                .is_ok()
        );
    }

    #[test]
    fn thresholds_fire_once_when_crossed() {
        assert_eq!(crossed(0, 700, 1000), vec![70]);
        assert_eq!(crossed(700, 950, 1000), vec![90]);
        assert_eq!(crossed(650, 1200, 1000), vec![70, 90, 100]);
        assert!(crossed(950, 960, 1000).is_empty());
        assert!(crossed(0, 10, 0).is_empty());
    }
}
