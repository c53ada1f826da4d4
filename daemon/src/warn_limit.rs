//! Rate limit for warnings about things a remote party can cause at will
//! (undecryptable messages, failed key proofs, refused connections): one
//! `warn!` per interval, with a count of what was held back. Pure bookkeeping
//! on a caller-supplied `now`; it does not log or read the clock itself.

use std::time::{Duration, Instant};

/// Default interval between two warnings of one kind.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Lets one warning through per interval and counts what it held back.
#[derive(Debug)]
pub struct WarnLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Default for WarnLimiter {
    fn default() -> Self {
        Self::new(WARN_INTERVAL)
    }
}

impl WarnLimiter {
    /// One warning per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last warning)` when a warning may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval_and_counts_the_rest() {
        let mut l = WarnLimiter::default();
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow(t0 + WARN_INTERVAL), Some(2));
        assert_eq!(l.allow(t0 + WARN_INTERVAL), None);
    }

    #[test]
    fn interval_is_configurable() {
        let mut l = WarnLimiter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(4)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(5)), Some(1));
    }
}
