//! wovenet's congestion controller for dataChannels (`congestionControl: bbr`):
//! a BBR-style model of the path — bottleneck delivery rate × minimum RTT —
//! fitted to quinn's window-driven pacer. Sans-IO: time is always an argument.
//!
//! Why not quinn's own controllers:
//! - Loss-based ones (cubic, new reno) read every random loss as congestion;
//!   at 100 ms and 1 % loss they carry ~1.5 Mbit/s, which is the reason a
//!   tunnel over a lossy long path exists at all.
//! - quinn 0.11's experimental BBR takes bandwidth samples from the gap
//!   between two consecutive acks, which overestimates a rate-limited path
//!   about 2×; it overfills the bottleneck queue so hard that the receiver's
//!   reassembly buffer passes quinn's 1 024-gap limit and the connection is
//!   closed ("too many gaps in stream buffer").
//!
//! quinn paces at 1.25 × window / smoothed RTT and has no separate pacing
//! rate, so the window is the only lever. It is kept at gain × bandwidth ×
//! (min RTT + [`HOST_SLACK`]): the standing queue this can build is bounded by
//! (gain − 1) × BDP, well inside a one-BDP bottleneck buffer, and random loss
//! does not move it because the bandwidth comes from what was delivered, not
//! from what was lost. Startup grows like slow start but never past
//! [`STARTUP_CWND_GAIN`] × the measured delivery rate × min RTT, and stops when
//! the delivery rate stops growing, when the round's *minimum* RTT rises (the
//! queue started to fill; the HyStart test), or when a round loses a large
//! share of its packets — so it never overflows a one-BDP buffer.
//!
//! Why the cap: slow start doubles the window every round, and the delay test
//! only sees a queue one round after it formed, so on a long capped path
//! startup used to reach 4× the BDP: thousands of packets dropped in a burst,
//! every other one, each a hole in the receiver's reassembly buffer, and quinn
//! closes a connection whose stream holds more than 1 024 of them ("too many
//! gaps in stream buffer"; measured at 200 ms, 5 % loss, 100 Mbit/s). With the
//! cap the window stops near 2 × BDP (one BDP in the pipe, at most one in the
//! queue) however late the delay test fires. [`cubic`] puts the same startup
//! in front of quinn's CUBIC (`congestionControl: cubic`).

pub mod cubic;

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// Added to the min RTT when sizing the window: covers host scheduling and
/// ack aggregation, which on a sub-millisecond path dwarf the RTT itself (a
/// CPU-bound loopback tunnel must never be window-limited).
pub const HOST_SLACK: Duration = Duration::from_millis(2);
/// Startup's window never exceeds this × bandwidth × (min RTT + slack): the
/// bandwidth still doubles every round while the pipe is not full, so it does
/// not slow the growth; once the bottleneck is reached it holds the window at
/// two BDPs (BBR's startup cwnd gain).
pub const STARTUP_CWND_GAIN: f64 = 2.0;
/// Window gains of one probe cycle, one round each: probe for more bandwidth,
/// drain what that queued, then cruise with a little headroom.
const PROBE_GAINS: [f64; 8] = [1.5, 1.0, 1.25, 1.25, 1.25, 1.25, 1.25, 1.25];
/// The bandwidth estimate is the best delivery rate of this many rounds.
const BW_WINDOW_ROUNDS: u64 = 10;
/// A min-RTT sample older than this is replaced by the next sample.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Startup ends when the estimate grew less than this in [`FULL_BW_ROUNDS`].
const FULL_BW_GROWTH: f64 = 1.25;
/// See [`FULL_BW_GROWTH`].
const FULL_BW_ROUNDS: u32 = 3;
/// A round losing more than this share of its bytes ends startup (random
/// loss on bad links stays far below; a queue overflowing by 2× is above).
const HEAVY_LOSS: f64 = 0.2;
/// HyStart's delay threshold: min RTT / 8, clamped to these bounds.
const DELAY_THRESHOLD_MIN: Duration = Duration::from_millis(4);
/// See [`DELAY_THRESHOLD_MIN`].
const DELAY_THRESHOLD_MAX: Duration = Duration::from_millis(16);
/// RTT samples a round needs before its minimum is trusted for HyStart.
const DELAY_MIN_SAMPLES: u32 = 8;
/// The window never falls below this many packets.
const MIN_WINDOW_PACKETS: u64 = 4;
/// Send records kept for delivery-rate samples; beyond this the oldest are
/// dropped (those packets just yield no sample). Bounds memory per channel.
const MAX_SEND_RECORDS: usize = 16_384;

/// Builds [`Bbr`] controllers; pass to `TransportConfig::congestion_controller_factory`.
#[derive(Debug, Clone, Default)]
pub struct BbrConfig {
    _private: (),
}

impl ControllerFactory for BbrConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Bbr::new(now, current_mtu))
    }
}

/// Phase of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exponential growth until the pipe is full.
    Startup,
    /// Window at one BDP until what startup queued has drained.
    Drain,
    /// Cycling through the probe gains (probe, drain, cruise).
    ProbeBw,
}

/// State the connection had when a packet (or a batch sent at the same
/// instant) left, for the delivery-rate sample its ack yields.
#[derive(Debug, Clone, Copy)]
struct SendRecord {
    sent: Instant,
    /// Bytes delivered (acked) when it was sent.
    delivered: u64,
    /// When `delivered` last grew, as of sending.
    delivered_at: Instant,
    /// Send time of the latest packet acked, as of sending.
    first_sent: Instant,
}

/// Sliding-window maximum over rounds (monotonic deque).
#[derive(Debug, Default, Clone)]
struct MaxFilter {
    samples: VecDeque<(u64, f64)>,
}

impl MaxFilter {
    fn update(&mut self, round: u64, value: f64) {
        while self.samples.back().is_some_and(|&(_, v)| v <= value) {
            self.samples.pop_back();
        }
        self.samples.push_back((round, value));
        self.expire(round);
    }

    fn expire(&mut self, round: u64) {
        while self
            .samples
            .front()
            .is_some_and(|&(r, _)| r + BW_WINDOW_ROUNDS <= round)
        {
            self.samples.pop_front();
        }
    }

    fn get(&self) -> f64 {
        self.samples.front().map_or(0.0, |&(_, v)| v)
    }

    fn reset(&mut self) {
        self.samples.clear();
    }
}

/// The controller. See the module docs.
#[derive(Debug, Clone)]
pub struct Bbr {
    mtu: u64,
    initial_window: u64,
    window: u64,
    mode: Mode,
    /// Bytes per second.
    max_bw: MaxFilter,
    min_rtt: Option<(Duration, Instant)>,
    // Delivery accounting.
    delivered: u64,
    delivered_at: Instant,
    first_sent: Instant,
    records: VecDeque<SendRecord>,
    // Rounds: a round ends when a packet sent after the previous round ended
    // is acked.
    next_round_delivered: u64,
    round_min_rtt: Option<Duration>,
    round_rtt_samples: u32,
    round_acked: u64,
    round_lost: u64,
    /// Some ack of this round came while quinn had nothing to send.
    round_app_limited: bool,
    /// Rounds that were not app-limited: the bandwidth filter ages in these,
    /// so an idle spell does not erase what the path was measured to carry.
    busy_rounds: u64,
    // Startup exit.
    full_bw: f64,
    full_bw_rounds: u32,
    // ProbeBw.
    cycle_index: usize,
    cycle_start: Instant,
}

impl Bbr {
    /// A controller for a new connection.
    pub fn new(now: Instant, mtu: u16) -> Self {
        let mtu = u64::from(mtu);
        let initial_window = (10 * mtu).max(14_720);
        Self {
            mtu,
            initial_window,
            window: initial_window,
            mode: Mode::Startup,
            max_bw: MaxFilter::default(),
            min_rtt: None,
            delivered: 0,
            delivered_at: now,
            first_sent: now,
            records: VecDeque::new(),
            next_round_delivered: 0,
            round_min_rtt: None,
            round_rtt_samples: 0,
            round_acked: 0,
            round_lost: 0,
            round_app_limited: false,
            busy_rounds: 0,
            full_bw: 0.0,
            full_bw_rounds: 0,
            cycle_index: 0,
            cycle_start: now,
        }
    }

    /// Current phase.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Bandwidth estimate in bytes per second (0 before the first sample).
    pub fn bandwidth(&self) -> f64 {
        self.max_bw.get()
    }

    /// The minimum RTT seen in the current window, if any.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(rtt, _)| rtt)
    }

    /// A packet (or the rest of a batch sent at the same instant) left at `now`.
    pub fn sent(&mut self, now: Instant) {
        if self.records.back().is_some_and(|r| r.sent == now) {
            // Same batch: the state at its first packet holds for all of it.
            return;
        }
        if self.records.len() == MAX_SEND_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(SendRecord {
            sent: now,
            delivered: self.delivered,
            delivered_at: self.delivered_at,
            first_sent: self.first_sent,
        });
    }

    /// A packet of `bytes` sent at `sent` was acked at `now`.
    pub fn acked(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        self.delivered += bytes;
        self.delivered_at = now;
        self.round_acked += bytes;
        self.round_app_limited |= app_limited;
        let rtt = now.saturating_duration_since(sent);
        self.update_min_rtt(now, rtt);
        self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |m| m.min(rtt)));
        self.round_rtt_samples += 1;

        // Older records belong to packets acked or lost already (or acked out
        // of order later, which then yields no sample).
        while self.records.front().is_some_and(|r| r.sent < sent) {
            self.records.pop_front();
        }
        let record = self.records.front().filter(|r| r.sent == sent).copied();
        self.first_sent = sent;
        if self.mode == Mode::Startup {
            // Slow start, held at two BDPs of what the path delivers.
            self.window = (self.window + bytes).min(self.startup_cap());
            if self.queue_building() {
                // Checked on every ack, not at the round's end: by then slow
                // start would have doubled into a full queue.
                self.enter_drain();
            }
        }
        let Some(record) = record else {
            return;
        };
        if record.delivered >= self.next_round_delivered {
            self.next_round_delivered = self.delivered;
            self.end_round();
        }
        self.sample_bandwidth(now, record, app_limited);
    }

    /// The delivery-rate sample of the packet sent with `record`.
    fn sample_bandwidth(&mut self, now: Instant, record: SendRecord, app_limited: bool) {
        // The slower of the send and ack rates over the packet's flight: a
        // burst of acks (aggregation) cannot fake a high rate.
        let send_elapsed = record.sent.saturating_duration_since(record.first_sent);
        let ack_elapsed = now.saturating_duration_since(record.delivered_at);
        let interval = send_elapsed.max(ack_elapsed);
        if interval.is_zero() || self.min_rtt().is_some_and(|m| interval < m) {
            return;
        }
        let rate = (self.delivered - record.delivered) as f64 / interval.as_secs_f64();
        if !app_limited || rate > self.max_bw.get() {
            self.max_bw.update(self.busy_rounds, rate);
        }
    }

    /// The most startup's window may grow to: [`STARTUP_CWND_GAIN`] BDPs of
    /// the bandwidth measured so far (no cap before the first sample).
    fn startup_cap(&self) -> u64 {
        if self.max_bw.get() > 0.0 {
            self.target(STARTUP_CWND_GAIN).max(self.initial_window)
        } else {
            u64::MAX
        }
    }

    /// The estimated bandwidth-delay product (bandwidth × (min RTT + slack)),
    /// at least the minimum window.
    pub fn bdp(&self) -> u64 {
        self.target(1.0)
    }

    /// `lost` bytes were declared lost; `persistent` after persistent congestion.
    pub fn lost(&mut self, lost: u64, persistent: bool) {
        self.round_lost += lost;
        if persistent {
            // The path may have changed under us: learn it again.
            self.mode = Mode::Startup;
            self.max_bw.reset();
            self.full_bw = 0.0;
            self.full_bw_rounds = 0;
            self.window = self.min_window();
        }
    }

    /// After each ack frame: `in_flight` bytes still unacked.
    pub fn end_acks(&mut self, now: Instant, in_flight: u64) {
        match self.mode {
            Mode::Startup => {}
            Mode::Drain => {
                self.window = self.target(1.0);
                if in_flight <= self.window {
                    self.mode = Mode::ProbeBw;
                    // Start cruising: probing right after draining would
                    // refill the queue at once.
                    self.cycle_index = 2;
                    self.cycle_start = now;
                }
            }
            Mode::ProbeBw => {
                let phase = self.min_rtt().unwrap_or(Duration::from_millis(1));
                if now.saturating_duration_since(self.cycle_start) >= phase {
                    self.cycle_index = (self.cycle_index + 1) % PROBE_GAINS.len();
                    self.cycle_start = now;
                }
                self.window = self.target(PROBE_GAINS[self.cycle_index]);
            }
        }
    }

    /// The congestion window in bytes.
    pub fn window_bytes(&self) -> u64 {
        self.window.max(self.min_window())
    }

    fn min_window(&self) -> u64 {
        MIN_WINDOW_PACKETS * self.mtu
    }

    fn target(&self, gain: f64) -> u64 {
        let rtt = self.min_rtt().unwrap_or_default() + HOST_SLACK;
        let bdp = gain * self.max_bw.get() * rtt.as_secs_f64();
        (bdp as u64).max(self.min_window())
    }

    fn update_min_rtt(&mut self, now: Instant, rtt: Duration) {
        let replace = match self.min_rtt {
            None => true,
            Some((min, at)) => rtt <= min || now.saturating_duration_since(at) > MIN_RTT_WINDOW,
        };
        if replace {
            self.min_rtt = Some((rtt, now));
        }
    }

    fn end_round(&mut self) {
        // An app-limited round says nothing about the path: it neither ages
        // the bandwidth estimate nor counts towards "startup stopped growing"
        // (else a tunnel idle before its first transfer leaves startup at a
        // few KiB and then crawls up at ×1.25 per round).
        if !self.round_app_limited {
            self.busy_rounds += 1;
            self.max_bw.expire(self.busy_rounds);
            if self.mode == Mode::Startup && self.pipe_full() {
                self.enter_drain();
            }
        }
        self.round_min_rtt = None;
        self.round_rtt_samples = 0;
        self.round_acked = 0;
        self.round_lost = 0;
        self.round_app_limited = false;
    }

    /// Whether the round just ended shows startup has filled the pipe.
    fn pipe_full(&mut self) -> bool {
        let bw = self.max_bw.get();
        if bw >= self.full_bw * FULL_BW_GROWTH {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
        } else {
            self.full_bw_rounds += 1;
            if self.full_bw_rounds >= FULL_BW_ROUNDS {
                return true;
            }
        }
        let total = self.round_acked + self.round_lost;
        total > 0 && self.round_lost as f64 > HEAVY_LOSS * total as f64
    }

    /// HyStart's test: every RTT sample of this round so far (enough of
    /// them) is well above the path's minimum, so a queue is forming.
    fn queue_building(&self) -> bool {
        match (self.min_rtt(), self.round_min_rtt) {
            (Some(base), Some(round)) if self.round_rtt_samples >= DELAY_MIN_SAMPLES => {
                let threshold = (base / 8).clamp(DELAY_THRESHOLD_MIN, DELAY_THRESHOLD_MAX);
                round >= base + threshold
            }
            _ => false,
        }
    }

    fn enter_drain(&mut self) {
        self.mode = Mode::Drain;
        self.window = self.target(1.0);
    }
}

impl Controller for Bbr {
    fn on_sent(&mut self, now: Instant, _bytes: u64, _last_packet_number: u64) {
        self.sent(now);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &RttEstimator,
    ) {
        self.acked(now, sent, bytes, app_limited);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        _app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        self.end_acks(now, in_flight);
    }

    fn on_congestion_event(
        &mut self,
        _now: Instant,
        _sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.lost(lost_bytes, is_persistent_congestion);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
    }

    fn window(&self) -> u64 {
        self.window_bytes()
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = ControllerMetrics::default();
        m.congestion_window = self.window_bytes();
        m.pacing_rate = Some(self.bandwidth() as u64 * 8);
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.initial_window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
#[path = "congestion/sim.rs"]
mod sim;
