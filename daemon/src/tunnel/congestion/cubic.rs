//! `congestionControl: cubic`: quinn's CUBIC behind a startup that cannot
//! overfill the bottleneck queue.
//!
//! quinn's CUBIC starts with classic slow start: the window doubles every round
//! until the first loss. On a long capped path the first loss comes only when
//! the bottleneck queue overflows, a round after the window passed the BDP, by
//! which time it is twice as large as the path holds: thousands of packets are
//! dropped, every other one, each a hole in the receiver's reassembly buffer,
//! and quinn closes the connection past 1 024 holes in one stream ("too many
//! gaps in stream buffer"; measured at 200 ms into a 100 Mbit/s cap).
//!
//! So the first phase is [`Bbr`]'s startup instead ([`Startup`]), whose window
//! never exceeds two BDPs of what the path delivers and which stops when the
//! delivery rate stops growing or a queue starts to form. Then quinn's CUBIC
//! takes over ([`Handover`]): at the measured BDP when startup found the path
//! full (as HyStart++ enters congestion avoidance without a reduction), or,
//! like slow start would, with CUBIC's reduction from the current window at
//! the first congestion event. From then on it is quinn's CUBIC unchanged.
//!
//! The decisions ([`Startup`]) are sans-IO and run in the simulator
//! (`congestion/sim.rs`); [`Cubic`] only forwards quinn's callbacks.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

use super::{Bbr, Mode};

/// quinn's CUBIC multiplicative decrease (RFC 9438 β, `BETA_CUBIC` in
/// quinn-proto): a congestion event leaves the window at this share.
const CUBIC_BETA: f64 = 0.7;

/// Builds [`Cubic`] controllers; pass to `TransportConfig::congestion_controller_factory`.
#[derive(Debug, Clone, Default)]
pub struct CubicConfig {
    _private: (),
}

impl ControllerFactory for CubicConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Cubic::new(now, current_mtu))
    }
}

/// How startup ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The path is full: CUBIC goes on from this window (the BDP estimate)
    /// in congestion avoidance.
    Full(u64),
    /// A congestion event: CUBIC reacts to it from this window, as it would
    /// have in slow start.
    Congestion(u64),
}

/// The startup phase: [`Bbr`] in [`Mode::Startup`], until it hands over.
#[derive(Debug, Clone)]
pub struct Startup {
    bbr: Bbr,
}

impl Startup {
    /// Startup of a new connection.
    pub fn new(now: Instant, mtu: u16) -> Self {
        Self {
            bbr: Bbr::new(now, mtu),
        }
    }

    /// A packet (or the rest of a batch sent at the same instant) left at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.bbr.sent(now);
    }

    /// A packet of `bytes` sent at `sent` was acked at `now`; `Some` when the
    /// path is full and CUBIC takes over.
    pub fn acked(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
    ) -> Option<Handover> {
        self.bbr.acked(now, sent, bytes, app_limited);
        (self.bbr.mode() != Mode::Startup).then(|| Handover::Full(self.bbr.bdp()))
    }

    /// After each ack frame: `in_flight` bytes still unacked.
    pub fn end_acks(&mut self, now: Instant, in_flight: u64) {
        self.bbr.end_acks(now, in_flight);
    }

    /// A congestion event ends startup.
    pub fn congestion(&self) -> Handover {
        Handover::Congestion(self.window())
    }

    /// The window in bytes.
    pub fn window(&self) -> u64 {
        self.bbr.window_bytes()
    }
}

enum Phase {
    // Boxed: the startup is large and lives only for the first seconds.
    Startup(Box<Startup>),
    Cubic(Box<dyn Controller>),
}

impl std::fmt::Debug for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Startup(s) => f.debug_tuple("Startup").field(s).finish(),
            // quinn's controllers are not `Debug`; the window says enough.
            Self::Cubic(c) => f
                .debug_struct("Cubic")
                .field("window", &c.window())
                .finish(),
        }
    }
}

/// The controller. See the module docs.
#[derive(Debug)]
pub struct Cubic {
    mtu: u16,
    initial_window: u64,
    phase: Phase,
}

impl Cubic {
    /// A controller for a new connection.
    pub fn new(now: Instant, mtu: u16) -> Self {
        let startup = Startup::new(now, mtu);
        Self {
            mtu,
            initial_window: startup.window(),
            phase: Phase::Startup(Box::new(startup)),
        }
    }

    /// Whether quinn's CUBIC has taken over.
    pub fn started(&self) -> bool {
        matches!(self.phase, Phase::Cubic(_))
    }

    /// Replaces the startup with quinn's CUBIC, in the state `handover` asks for.
    fn hand_over(&mut self, now: Instant, handover: Handover) {
        let (window, full) = match handover {
            // quinn's CUBIC leaves slow start only through a congestion
            // event, which cuts the window to β: start it at window / β so
            // it continues at the BDP, with CUBIC's W_max just above.
            Handover::Full(bdp) => ((bdp as f64 / CUBIC_BETA) as u64, true),
            Handover::Congestion(window) => (window, false),
        };
        let mut config = quinn::congestion::CubicConfig::default();
        config.initial_window(window);
        let mut cubic = Arc::new(config).build(now, self.mtu);
        if full {
            cubic.on_congestion_event(now, now, false, 0);
        }
        self.phase = Phase::Cubic(cubic);
    }
}

impl Controller for Cubic {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        match &mut self.phase {
            Phase::Startup(s) => s.sent(now),
            Phase::Cubic(c) => c.on_sent(now, bytes, last_packet_number),
        }
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        match &mut self.phase {
            Phase::Startup(s) => {
                if let Some(handover) = s.acked(now, sent, bytes, app_limited) {
                    self.hand_over(now, handover);
                }
            }
            Phase::Cubic(c) => c.on_ack(now, sent, bytes, app_limited, rtt),
        }
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        match &mut self.phase {
            Phase::Startup(s) => s.end_acks(now, in_flight),
            Phase::Cubic(c) => c.on_end_acks(now, in_flight, app_limited, largest_packet_num_acked),
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if let Phase::Startup(s) = &self.phase {
            let handover = s.congestion();
            self.hand_over(now, handover);
        }
        if let Phase::Cubic(c) = &mut self.phase {
            c.on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = new_mtu;
        match &mut self.phase {
            Phase::Startup(s) => s.bbr.on_mtu_update(new_mtu),
            Phase::Cubic(c) => c.on_mtu_update(new_mtu),
        }
    }

    fn window(&self) -> u64 {
        match &self.phase {
            Phase::Startup(s) => s.window(),
            Phase::Cubic(c) => c.window(),
        }
    }

    fn metrics(&self) -> ControllerMetrics {
        match &self.phase {
            Phase::Startup(s) => s.bbr.metrics(),
            Phase::Cubic(c) => c.metrics(),
        }
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        let phase = match &self.phase {
            Phase::Startup(s) => Phase::Startup(s.clone()),
            Phase::Cubic(c) => Phase::Cubic(c.clone_box()),
        };
        Box::new(Self {
            mtu: self.mtu,
            initial_window: self.initial_window,
            phase,
        })
    }

    fn initial_window(&self) -> u64 {
        self.initial_window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_path_hands_over_at_the_bdp_without_a_reduction() {
        let now = Instant::now();
        let mut c = Cubic::new(now, 1200);
        c.hand_over(now, Handover::Full(2_500_000));
        assert!(c.started());
        let w = c.window();
        // Within rounding of the BDP: the β constant matches quinn's CUBIC.
        assert!((2_499_000..=2_500_000).contains(&w), "window {w}");
    }

    #[test]
    fn a_congestion_event_in_startup_reduces_like_slow_start_would() {
        let now = Instant::now();
        let mut c = Cubic::new(now, 1200);
        let before = c.window();
        c.on_congestion_event(now, now, false, 1200);
        assert!(c.started());
        assert_eq!(c.window(), (before as f64 * CUBIC_BETA) as u64);
        // Further events in the same recovery period change nothing.
        c.on_congestion_event(now + Duration::from_millis(1), now, false, 1200);
        assert_eq!(c.window(), (before as f64 * CUBIC_BETA) as u64);
    }

    #[test]
    fn startup_hands_over_once_bbr_leaves_startup() {
        let base = Instant::now();
        let mut s = Startup::new(base, 1200);
        let rtt = Duration::from_millis(100);
        // A path that delivers the same 12 KB every round: the bandwidth
        // stops growing and startup ends within a few rounds.
        let mut handover = None;
        for round in 0..20u32 {
            let sent = base + rtt * round;
            for i in 0..10u32 {
                s.sent(sent + Duration::from_micros(u64::from(i)));
            }
            for i in 0..10u32 {
                let at = sent + rtt + Duration::from_millis(u64::from(i));
                let pkt = sent + Duration::from_micros(u64::from(i));
                if let Some(h) = s.acked(at, pkt, 1200, false) {
                    handover = Some((round, h));
                    break;
                }
            }
            if handover.is_some() {
                break;
            }
            s.end_acks(sent + rtt + Duration::from_millis(10), 0);
        }
        let (round, h) = handover.expect("startup ended");
        assert!(round <= 6, "ended in round {round}");
        match h {
            Handover::Full(bdp) => assert!(bdp >= 4 * 1200, "{bdp}"),
            other => panic!("{other:?}"),
        }
    }
}
