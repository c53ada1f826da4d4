//! Log throttling for events a peer or a local client can repeat at will
//! (refusals over a limit): one line per interval, with the number of events
//! held back since the last one.
//!
//! Pure: the caller passes `now` and does the logging; nothing here logs,
//! sleeps or reads a clock.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The interval of [`Throttle::default`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Lets one event through per interval and counts the others.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(DEFAULT_INTERVAL)
    }
}

impl Throttle {
    /// A throttle letting one event through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(events held back since the last one let through)` if the event
    /// at `now` may be logged, else `None` (and it is counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// A [`Throttle`] shared by tasks.
#[derive(Debug, Default)]
pub struct SharedThrottle(Mutex<Throttle>);

impl SharedThrottle {
    /// See [`Throttle::allow`].
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
    fn one_event_per_interval_passes_with_the_count_held_back() {
        let t0 = Instant::now();
        let s = |n| Duration::from_secs(n);
        let mut t = Throttle::new(s(5));
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + s(1)), None);
        assert_eq!(t.allow(t0 + s(4)), None);
        assert_eq!(t.allow(t0 + s(5)), Some(2));
        assert_eq!(t.allow(t0 + s(6)), None);
        assert_eq!(t.allow(t0 + s(60)), Some(1));
        // A clock going backwards holds events back rather than panicking.
        assert_eq!(t.allow(t0), None);
    }

    #[test]
    fn the_shared_form_behaves_the_same() {
        let t0 = Instant::now();
        let t = SharedThrottle::default();
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0), None);
        assert_eq!(t.allow(t0 + DEFAULT_INTERVAL), Some(1));
    }
}
