//! Money as integer micro-USD: never a float in arithmetic, storage or the API.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// An amount of micro-USD (1 USD = 1_000_000). Signed so that variances and savings can be negative.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_micros(micros: i64) -> Self {
        Money(micros)
    }

    /// Whole cents, for readable configuration defaults.
    pub const fn from_cents(cents: i64) -> Self {
        Money(cents * 10_000)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    /// `self × (100 + percent) / 100`, rounded down: the guaranteed maximum for a tolerance.
    pub fn plus_percent(self, percent: u32) -> Money {
        Money((i128::from(self.0) * (100 + i128::from(percent)) / 100) as i64)
    }

    /// `self × seconds`, for per-second prices.
    pub fn times(self, n: u32) -> Money {
        Money(self.0.saturating_mul(i64::from(n)))
    }

    /// `self × numerator / denominator` rounded down (e.g. per-minute prices for a duration in seconds).
    pub fn scaled(self, numerator: u32, denominator: u32) -> Money {
        if denominator == 0 {
            return Money::ZERO;
        }
        Money((i128::from(self.0) * i128::from(numerator) / i128::from(denominator)) as i64)
    }

    pub fn min(self, other: Money) -> Money {
        Money(self.0.min(other.0))
    }

    pub fn max(self, other: Money) -> Money {
        Money(self.0.max(other.0))
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = *self + rhs;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0.saturating_sub(rhs.0))
    }
}

impl SubAssign for Money {
    fn sub_assign(&mut self, rhs: Money) {
        *self = *self - rhs;
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn displays_as_dollars() {
        assert_eq!(Money::from_micros(910_000).to_string(), "$0.910000");
        assert_eq!(Money::from_micros(-1_500_000).to_string(), "-$1.500000");
    }

    #[test]
    fn tolerance_rounds_down() {
        assert_eq!(
            Money::from_micros(910_000).plus_percent(20),
            Money::from_micros(1_092_000)
        );
        assert_eq!(
            Money::from_micros(7).plus_percent(10),
            Money::from_micros(7)
        );
    }

    proptest! {
        #[test]
        fn guaranteed_max_is_never_below_the_quote(q in 0i64..1_000_000_000_000, t in 0u32..=100) {
            let quote = Money::from_micros(q);
            let max = quote.plus_percent(t);
            prop_assert!(max >= quote);
            prop_assert!(max.micros() - quote.micros() <= q * i64::from(t) / 100);
        }
    }
}
