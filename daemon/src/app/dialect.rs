//! Which request form a far site understands, as far as one client side
//! knows: whether the next stream request may be the extended one (preamble
//! version 3, carrying the client address) or must be the older form.
//!
//! Learned from the far site's answers (see the compatibility notes in
//! [`super::preamble`]): an `unsupported version` reply to an extended
//! request marks the site as older for [`RECHECK_AFTER`]; after that, the
//! next request tries the extended form again, so an upgraded site starts
//! receiving client addresses without a restart here. Any other reply to an
//! extended request proves the site understands it.
//!
//! Pure bookkeeping: takes `now`, never touches a socket, never logs.

use std::time::{Duration, Instant};

/// How long a far site that refused the extended request is asked in the
/// older form before it is tried again (one extra round trip per period).
pub const RECHECK_AFTER: Duration = Duration::from_secs(600);

/// One far site's (or one remote app's) request form.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// When an extended request was last refused as an unsupported version.
    older_since: Option<Instant>,
}

impl Dialect {
    /// Whether a request sent at `now` may carry extensions.
    pub fn extended(&self, now: Instant) -> bool {
        self.older_since
            .is_none_or(|t| now.saturating_duration_since(t) >= RECHECK_AFTER)
    }

    /// The far site answered an extended request with `unsupported version`.
    pub fn refused(&mut self, now: Instant) {
        self.older_since = Some(now);
    }

    /// The far site answered an extended request with anything else.
    pub fn understood(&mut self) {
        self.older_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_new_site_is_asked_in_the_extended_form() {
        assert!(Dialect::default().extended(Instant::now()));
    }

    #[test]
    fn a_refusing_site_is_asked_in_the_older_form_until_the_recheck() {
        let t0 = Instant::now();
        let mut d = Dialect::default();
        d.refused(t0);
        assert!(!d.extended(t0));
        assert!(!d.extended(t0 + RECHECK_AFTER - Duration::from_millis(1)));
        assert!(d.extended(t0 + RECHECK_AFTER));
        // Refused again at the recheck: another full period.
        d.refused(t0 + RECHECK_AFTER);
        assert!(!d.extended(t0 + RECHECK_AFTER + Duration::from_secs(1)));
        // An upgraded site answers: extended from then on.
        d.understood();
        assert!(d.extended(t0 + RECHECK_AFTER + Duration::from_secs(1)));
    }

    #[test]
    fn a_clock_that_seems_to_go_back_keeps_the_older_form() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut d = Dialect::default();
        d.refused(t0);
        assert!(!d.extended(t0 - Duration::from_secs(5)));
    }

    proptest! {
        /// After a refusal at `t`, the extended form comes back exactly at
        /// `t + RECHECK_AFTER`, never sooner.
        #[test]
        fn the_older_form_lasts_exactly_the_recheck_period(offset_ms in 0u64..2_000_000) {
            let t0 = Instant::now();
            let mut d = Dialect::default();
            d.refused(t0);
            let now = t0 + Duration::from_millis(offset_ms);
            prop_assert_eq!(d.extended(now), Duration::from_millis(offset_ms) >= RECHECK_AFTER);
        }
    }
}
