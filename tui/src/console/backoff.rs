//! The reconnect schedule: capped exponential delays. Pure, so the cap is tested.

use std::time::Duration;

/// First retry delay.
pub const MIN: Duration = Duration::from_millis(250);
/// Longest wait between two attempts.
pub const MAX: Duration = Duration::from_secs(5);

/// Delay before attempt `attempt` (0-based): `MIN * 2^attempt`, never above [`MAX`].
pub fn delay(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    MIN.saturating_mul(factor).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stay_at_the_cap() {
        assert_eq!(delay(0), MIN);
        assert_eq!(delay(1), MIN * 2);
        for a in 0..200 {
            let d = delay(a);
            assert!(MIN <= d && d <= MAX, "attempt {a}: {d:?}");
            assert!(delay(a + 1) >= d);
        }
        assert_eq!(delay(100), MAX);
    }
}
