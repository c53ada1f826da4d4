//! When to use a peer's TCP socket, for a peer that announces both a QUIC and
//! a TCP socket: pure bookkeeping on a caller-supplied `now`, no IO.
//!
//! QUIC is preferred. The TCP socket is dialled once QUIC has failed
//! [`FAIL_THRESHOLD`] times in a row, or no QUIC channel has been up for
//! [`GRACE`] (whichever comes first): a network that drops UDP makes every
//! QUIC dial time out, so the site is on TCP within seconds instead of never.
//! QUIC keeps being dialled meanwhile (its own backoff is the probe). Once a
//! QUIC channel has stayed up for [`SETTLE`], TCP is no longer wanted: new
//! streams go to QUIC and the TCP channel drains (closes when its last stream
//! ends) — unlike cloudflared, which never moves back. The hysteresis keeps a
//! flapping UDP path from tearing the TCP channel down on every brief success.
//!
//! Invariant (property-tested): whenever no QUIC channel has been up for
//! [`GRACE`], TCP is wanted — so with both configured a site never ends up
//! without a channel while either path works.
//!
//! [`super::peers`] keeps one per peer site and feeds it the QUIC channels
//! and dial failures it sees; a peer that announces only TCP sockets (or
//! whose QUIC sockets this site does not dial) is dialled over TCP always.

use std::time::{Duration, Instant};

/// Consecutive failed QUIC dials after which TCP is dialled.
pub const FAIL_THRESHOLD: u32 = 2;
/// No QUIC channel for this long and TCP is dialled, failures or not (a dial
/// that hangs in its handshake counts only when it times out).
pub const GRACE: Duration = Duration::from_secs(8);
/// A QUIC channel must stay up this long before TCP is let go.
pub const SETTLE: Duration = Duration::from_secs(20);

/// Where QUIC stands toward one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quic {
    /// A channel is up since then.
    Up(Instant),
    /// No channel since then (start, or the last one went down).
    Down(Instant),
}

/// The fallback decision for one peer.
#[derive(Debug, Clone)]
pub struct Fallback {
    quic: Quic,
    failures: u32,
    /// TCP is wanted (sticky until QUIC settled).
    tcp: bool,
}

impl Fallback {
    /// A peer just discovered at `now`: QUIC first.
    pub fn new(now: Instant) -> Self {
        Self {
            quic: Quic::Down(now),
            failures: 0,
            tcp: false,
        }
    }

    /// A QUIC dial attempt failed.
    pub fn quic_failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.update(now);
    }

    /// A QUIC channel came up.
    pub fn quic_up(&mut self, now: Instant) {
        self.failures = 0;
        if !matches!(self.quic, Quic::Up(_)) {
            self.quic = Quic::Up(now);
        }
        self.update(now);
    }

    /// The last QUIC channel went down.
    pub fn quic_down(&mut self, now: Instant) {
        if matches!(self.quic, Quic::Up(_)) {
            self.quic = Quic::Down(now);
        }
        self.update(now);
    }

    /// Whether the TCP socket should be dialled (and its channel kept) now.
    pub fn wants_tcp(&mut self, now: Instant) -> bool {
        self.update(now);
        self.tcp
    }

    /// Whether new streams should avoid TCP channels: QUIC is up and settled.
    pub fn prefers_quic(&mut self, now: Instant) -> bool {
        !self.wants_tcp(now) && matches!(self.quic, Quic::Up(_))
    }

    /// When the decision may change with time alone (no event), if ever: the
    /// caller re-asks [`Self::wants_tcp`] then.
    pub fn next_change(&self) -> Option<Instant> {
        match (self.quic, self.tcp) {
            (Quic::Down(since), false) => Some(since + GRACE),
            (Quic::Up(since), true) => Some(since + SETTLE),
            _ => None,
        }
    }

    fn update(&mut self, now: Instant) {
        match self.quic {
            Quic::Down(since) => {
                if self.failures >= FAIL_THRESHOLD || now.saturating_duration_since(since) >= GRACE
                {
                    self.tcp = true;
                }
            }
            Quic::Up(since) => {
                if now.saturating_duration_since(since) >= SETTLE {
                    self.tcp = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn quic_that_works_never_brings_tcp_in() {
        let t0 = Instant::now();
        let mut f = Fallback::new(t0);
        f.quic_up(t0 + secs(1));
        assert!(!f.wants_tcp(t0 + secs(3600)));
        assert!(f.prefers_quic(t0 + secs(3600)));
        assert_eq!(f.next_change(), None);
    }

    #[test]
    fn failed_quic_dials_bring_tcp_in_before_the_grace_ends() {
        let t0 = Instant::now();
        let mut f = Fallback::new(t0);
        f.quic_failed(t0 + secs(1));
        assert!(!f.wants_tcp(t0 + secs(1)));
        f.quic_failed(t0 + secs(2));
        assert!(f.wants_tcp(t0 + secs(2)));
    }

    #[test]
    fn a_hanging_quic_dial_brings_tcp_in_after_the_grace() {
        let t0 = Instant::now();
        let mut f = Fallback::new(t0);
        assert_eq!(f.next_change(), Some(t0 + GRACE));
        assert!(!f.wants_tcp(t0 + GRACE - secs(1)));
        assert!(f.wants_tcp(t0 + GRACE));
    }

    #[test]
    fn quic_must_settle_before_tcp_is_let_go_and_a_flap_keeps_it() {
        let t0 = Instant::now();
        let mut f = Fallback::new(t0);
        f.quic_failed(t0);
        f.quic_failed(t0);
        assert!(f.wants_tcp(t0));
        // UDP comes back briefly: TCP stays.
        f.quic_up(t0 + secs(30));
        assert!(f.wants_tcp(t0 + secs(31)));
        assert!(!f.prefers_quic(t0 + secs(31)));
        f.quic_down(t0 + secs(35));
        assert!(f.wants_tcp(t0 + secs(60)));
        // Back for good: after SETTLE, new streams return to QUIC and TCP goes.
        f.quic_up(t0 + secs(100));
        assert_eq!(f.next_change(), Some(t0 + secs(100) + SETTLE));
        assert!(f.wants_tcp(t0 + secs(100) + SETTLE - secs(1)));
        assert!(!f.wants_tcp(t0 + secs(100) + SETTLE));
        assert!(f.prefers_quic(t0 + secs(100) + SETTLE));
        // And if QUIC is lost again, TCP returns within the grace.
        f.quic_down(t0 + secs(200));
        assert!(f.wants_tcp(t0 + secs(200) + GRACE));
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Failed,
        Up,
        Down,
        Wait(u64),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            Just(Ev::Failed),
            Just(Ev::Up),
            Just(Ev::Down),
            (0u64..40_000).prop_map(Ev::Wait),
        ]
    }

    proptest! {
        /// Whatever happens, once QUIC has been down for the grace period TCP
        /// is wanted, and TCP is never wanted after QUIC stayed up for SETTLE.
        #[test]
        fn never_without_a_path(events in prop::collection::vec(ev(), 0..60)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut f = Fallback::new(t0);
            let mut quic_since: (bool, Instant) = (false, t0);
            for e in events {
                match e {
                    Ev::Failed => f.quic_failed(now),
                    Ev::Up => {
                        if !quic_since.0 { quic_since = (true, now); }
                        f.quic_up(now);
                    }
                    Ev::Down => {
                        if quic_since.0 { quic_since = (false, now); }
                        f.quic_down(now);
                    }
                    Ev::Wait(ms) => now += Duration::from_millis(ms),
                }
                let (up, since) = quic_since;
                let wants = f.wants_tcp(now);
                if !up && now - since >= GRACE {
                    prop_assert!(wants, "QUIC down since {:?} and no TCP", now - since);
                }
                if up && now - since >= SETTLE {
                    prop_assert!(!wants, "QUIC settled but TCP kept");
                }
            }
        }
    }
}
