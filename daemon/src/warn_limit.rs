//! Rate limit for warnings about things a remote party can cause at will
//! (undecryptable messages, failed key proofs, refused connections): one
//! `warn!` per interval, with a count of what was held back. Pure bookkeeping
//! on a caller-supplied `now`; it does not log or read the clock itself.
//! [`SharedWarnLimiter`] is the same for tasks that share one.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Default interval between two warnings of one kind.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Interval for refusals over a limit: an operator tuning a limit wants to
/// see them sooner than once a minute.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

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

/// A [`WarnLimiter`] shared by tasks.
#[derive(Debug, Default)]
pub struct SharedWarnLimiter(Mutex<WarnLimiter>);

impl SharedWarnLimiter {
    /// One warning per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self(Mutex::new(WarnLimiter::new(interval)))
    }

    /// See [`WarnLimiter::allow`].
    pub fn allow(&self, now: Instant) -> Option<u64> {
        // One field update that cannot panic halfway: poisoning is harmless.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(now)
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
    fn a_clock_going_backwards_holds_warnings_back() {
        let mut l = WarnLimiter::default();
        let t0 = Instant::now() + WARN_INTERVAL;
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 - Duration::from_secs(1)), None);
    }

    #[test]
    fn the_shared_form_behaves_the_same() {
        let t0 = Instant::now();
        let l = SharedWarnLimiter::new(Duration::from_secs(5));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(5)), Some(1));
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
