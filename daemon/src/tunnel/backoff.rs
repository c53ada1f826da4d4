//! Redial schedule: capped exponential backoff with jitter (sans-IO).
//!
//! The caller owns the clock and the randomness source; this type only does
//! arithmetic, so the bounds are property-tested without sleeping.

use std::time::Duration;

/// Capped exponential backoff with "equal jitter": attempt `n` waits a random
/// time in `[d/2, d]` where `d = min(max, base * 2^n)`. Half the delay is kept
/// fixed so a flapping path is not hammered; the random half spreads redials of
/// many sites that lost their paths at the same moment.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A schedule starting at `base` and never exceeding `max` (`base <= max`).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base: base.min(max),
            max,
            attempt: 0,
        }
    }

    /// Failed attempts since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first step (call after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay. `unit` is a uniform random number in `[0, 1]` supplied
    /// by the caller.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(unit)
    }

    /// The upper bound of the current step, before jitter.
    fn ceiling(&self) -> Duration {
        // 2^20 * base already exceeds any sane cap; clamping the shift keeps
        // the multiplication from overflowing.
        let factor = 1u32 << self.attempt.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_grow_then_stay_at_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<_> = (0..8).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(d[0], Duration::from_millis(100));
        assert_eq!(d[1], Duration::from_millis(200));
        assert_eq!(d[3], Duration::from_millis(800));
        assert_eq!(d[4], Duration::from_secs(1));
        assert_eq!(d[7], Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }

    proptest! {
        #[test]
        fn delay_is_within_half_cap_and_cap(base_ms in 1u64..5_000, max_ms in 1u64..120_000,
                                             steps in 0usize..200, unit in proptest::num::f64::ANY) {
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_millis(max_ms);
            let mut b = Backoff::new(base, max);
            for _ in 0..steps { b.next_delay(0.5); }
            let d = b.next_delay(unit);
            prop_assert!(d <= max, "{d:?} > cap {max:?}");
            prop_assert!(d >= base.min(max) / 2, "{d:?} below half of the first step");
        }
    }
}
