//! The sans-IO model of one direction of the emulated link: random loss, extra loss for
//! chosen UDP ports (one flow on a worse path), an optional token-bucket rate cap with a
//! bounded drop-tail queue, and a one-way delay line.
//!
//! Every method takes `now`; nothing here reads a clock, sleeps or touches a device, so
//! the forwarding loop (`wanem/forward.rs`) owns all I/O and these rules are unit tested
//! deterministically.
//!
//! Order of the stages, like a real path: a packet is first lost or kept (loss on the
//! wire, independent of load; then the per-port extra loss), then waits behind the bottleneck's token bucket (the queue
//! is where congestion shows up: it grows, then drops the tail), then travels for the
//! one-way delay. Departure times are computed in virtual time when a packet arrives, so a
//! late wake-up of the forwarder delays delivery a little but never slows the link down.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What one direction of the link does to packets.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay added to every packet.
    pub delay: Duration,
    /// Probability in `0.0..=1.0` that a packet is lost (independently of the others).
    pub loss: f64,
    /// Rate cap in bits per second; `None` forwards as fast as packets come.
    pub rate_bps: Option<u64>,
    /// Bytes the bottleneck queue holds before it drops the tail (only with a rate cap).
    pub queue_bytes: usize,
    /// Bytes the token bucket may send back to back after an idle period.
    pub burst_bytes: usize,
    /// Extra loss for UDP packets of given ports, on top of `loss`.
    pub port_loss: Vec<PortLoss>,
}

impl LinkParams {
    /// A link with `delay` and `loss` and no rate cap.
    pub fn new(delay: Duration, loss: f64) -> Self {
        Self {
            delay,
            loss,
            rate_bps: None,
            queue_bytes: 0,
            burst_bytes: 0,
            port_loss: Vec::new(),
        }
    }

    /// Caps the rate at `rate_bps` with a queue of `queue_bytes` and a burst of 1 ms of
    /// traffic (at least two full-size packets, so the bucket never starves a packet).
    pub fn with_rate(mut self, rate_bps: u64, queue_bytes: usize) -> Self {
        self.rate_bps = Some(rate_bps);
        self.queue_bytes = queue_bytes;
        self.burst_bytes = ((rate_bps / 8 / 1000) as usize).max(2 * 1514);
        self
    }
}

/// Extra random loss for the UDP packets whose source or destination port is `port`: one
/// flow (e.g. one QUIC connection) on a worse path than the others sharing the link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PortLoss {
    /// The UDP port matched as source or destination, so both directions of a flow match.
    pub port: u16,
    /// Probability in `0.0..=1.0` that a matching packet is lost (after the link's loss).
    pub loss: f64,
}

/// What a packet is, as far as the per-port rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// An IPv4 UDP packet (or the first fragment of one) with these ports.
    Udp {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// Anything else that parses: another protocol, IPv6, a later fragment.
    Other,
    /// Claims to be IPv4 but its headers are short or inconsistent.
    Malformed,
}

/// Reads the UDP ports of a raw IPv4 packet as a TUN device hands it over (no link
/// header). Never panics: every length is checked before it is used.
pub fn classify(packet: &[u8]) -> Classified {
    let Some(&first) = packet.first() else {
        return Classified::Malformed;
    };
    if first >> 4 != 4 {
        return Classified::Other;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let be16 = |at: usize| {
        packet
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let Some(total_len) = be16(2).map(usize::from) else {
        return Classified::Malformed;
    };
    // Trailing bytes beyond total_len (padding) are tolerated, a truncated packet is not.
    if header_len < 20 || total_len < header_len || total_len > packet.len() {
        return Classified::Malformed;
    }
    // 17 is UDP; only the first fragment (offset 0) carries the UDP header.
    let fragment_offset = be16(6).map_or(0, |f| f & 0x1fff);
    if packet[9] != 17 || fragment_offset != 0 {
        return Classified::Other;
    }
    if total_len - header_len < 8 {
        return Classified::Malformed;
    }
    match (be16(header_len), be16(header_len + 2)) {
        (Some(src), Some(dst)) => Classified::Udp { src, dst },
        _ => Classified::Malformed,
    }
}

/// What the per-port rules did with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortVerdict {
    /// No rule matches it (or there are no rules): forwarded.
    Unmatched,
    /// Its IPv4 headers do not parse: forwarded and counted.
    Malformed,
    /// Rule number `.0` matches and kept it.
    Kept(usize),
    /// Rule number `.0` matches and the path lost it.
    Lost(usize),
}

/// Applies the first rule matching `packet`'s UDP source or destination port: a pure
/// function of the bytes, the rules and `rng`, which is drawn from only for a matching
/// packet (so other traffic does not shift a flow's loss pattern).
pub fn port_verdict(packet: &[u8], rules: &[PortLoss], rng: &mut impl Rng) -> PortVerdict {
    if rules.is_empty() {
        return PortVerdict::Unmatched;
    }
    let (src, dst) = match classify(packet) {
        Classified::Udp { src, dst } => (src, dst),
        Classified::Other => return PortVerdict::Unmatched,
        Classified::Malformed => return PortVerdict::Malformed,
    };
    match rules.iter().position(|r| r.port == src || r.port == dst) {
        None => PortVerdict::Unmatched,
        Some(i) if rules[i].loss > 0.0 && rng.r#gen::<f64>() < rules[i].loss.min(1.0) => {
            PortVerdict::Lost(i)
        }
        Some(i) => PortVerdict::Kept(i),
    }
}

/// Decides, packet by packet, whether the wire loses it. Seeded, so a run is repeatable.
#[derive(Debug)]
pub struct LossGate {
    p: f64,
    rng: StdRng,
}

impl LossGate {
    /// Loses each packet with probability `p` (clamped to `0.0..=1.0`).
    pub fn new(p: f64, seed: u64) -> Self {
        Self {
            p: p.clamp(0.0, 1.0),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Whether the next packet is lost.
    pub fn lose(&mut self) -> bool {
        // Draw only when loss is configured, so a lossless link costs no RNG work.
        self.p > 0.0 && self.rng.r#gen::<f64>() < self.p
    }
}

/// A token bucket whose queue is virtual: each packet's departure time is computed when it
/// arrives, from the tokens it will find once the packets ahead of it have left.
#[derive(Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: f64,
    burst: f64,
    /// Tokens at `at`, the departure time of the last packet scheduled.
    tokens: f64,
    at: Instant,
    queue_limit: f64,
}

impl TokenBucket {
    /// A full bucket at `now`: `rate_bps` bits per second, `burst_bytes` deep, holding at
    /// most `queue_bytes` of waiting packets.
    pub fn new(rate_bps: u64, burst_bytes: usize, queue_bytes: usize, now: Instant) -> Self {
        Self {
            rate: (rate_bps as f64 / 8.0).max(1.0),
            burst: burst_bytes as f64,
            tokens: burst_bytes as f64,
            at: now,
            queue_limit: queue_bytes as f64,
        }
    }

    /// Bytes waiting for tokens at `now`.
    pub fn backlog_bytes(&self, now: Instant) -> usize {
        if self.at > now {
            ((self.at - now).as_secs_f64() * self.rate) as usize
        } else {
            0
        }
    }

    /// Schedules a packet of `len` bytes arriving at `now`: its departure time, or `None`
    /// when the queue is full (drop-tail). An empty queue always takes a packet, so a
    /// queue smaller than one packet slows the link instead of cutting it.
    pub fn schedule(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let backlog = self.backlog_bytes(now);
        if backlog > 0 && (backlog + len) as f64 > self.queue_limit {
            return None;
        }
        let start = self.at.max(now);
        let refill = start.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        let tokens = (self.tokens + refill).min(self.burst);
        let len = len as f64;
        let depart = if tokens >= len {
            self.tokens = tokens - len;
            start
        } else {
            self.tokens = 0.0;
            start + Duration::from_secs_f64((len - tokens) / self.rate)
        };
        self.at = depart;
        Some(depart)
    }
}

/// A packet travelling the delay line; ordered by arrival time, then by sequence so equal
/// times keep their order.
#[derive(Debug)]
struct InFlight {
    due: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    /// Reversed, so the max-heap `BinaryHeap` pops the earliest packet first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Packets in flight, each released at its own due time (a priority queue, so per-packet
/// delays may differ; with a constant delay it degenerates to a FIFO).
#[derive(Debug, Default)]
pub struct DelayLine {
    heap: BinaryHeap<InFlight>,
    seq: u64,
}

impl DelayLine {
    /// Adds `packet`, to be released at `due`.
    pub fn push(&mut self, due: Instant, packet: Vec<u8>) {
        self.seq += 1;
        self.heap.push(InFlight {
            due,
            seq: self.seq,
            packet,
        });
    }

    /// The earliest packet whose due time is not after `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.heap.peek()?.due <= now {
            self.heap.pop().map(|f| f.packet)
        } else {
            None
        }
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|f| f.due)
    }

    /// Packets in flight.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Counts of what happened to packets on one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered to the link.
    pub received: u64,
    /// Packets the random loss took.
    pub lost: u64,
    /// Packets dropped because the bottleneck queue was full.
    pub queue_dropped: u64,
    /// Packets a per-port rule matched (after the link's own loss).
    pub port_matched: u64,
    /// Matched packets the per-port extra loss took.
    pub port_lost: u64,
    /// Packets whose IPv4 headers did not parse while per-port rules were set (forwarded).
    pub malformed: u64,
    /// Packets handed out of the far end.
    pub delivered: u64,
    /// Bytes handed out of the far end.
    pub delivered_bytes: u64,
}

/// What one per-port rule saw on one direction (a rule with no extra loss just counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets of the port that reached the rule (the link's own loss comes first).
    pub matched: u64,
    /// Of those, packets the rule's extra loss took.
    pub lost: u64,
    /// Bytes of the packets the rule kept (before the rate cap's queue).
    pub kept_bytes: u64,
}

/// Why the link refused a packet; the buffer comes back for reuse.
#[derive(Debug)]
pub struct Dropped {
    /// What took it.
    pub reason: DropReason,
    /// The packet's buffer.
    pub packet: Vec<u8>,
}

/// What took a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Random loss.
    Lost,
    /// The bottleneck queue was full.
    QueueFull,
    /// The per-port extra loss.
    PortLost,
}

/// One direction of the emulated link.
#[derive(Debug)]
pub struct Link {
    loss: LossGate,
    port_loss: Vec<PortLoss>,
    /// Separate from the link's loss generator, so adding a rule leaves the link's own
    /// loss pattern unchanged.
    port_rng: StdRng,
    /// One per rule, in the rules' order.
    port_stats: Vec<PortStats>,
    bucket: Option<TokenBucket>,
    delay: Duration,
    line: DelayLine,
    stats: LinkStats,
}

impl Link {
    /// A link applying `params`, with its loss decisions seeded by `seed`, starting at `now`.
    pub fn new(params: &LinkParams, seed: u64, now: Instant) -> Self {
        Self {
            loss: LossGate::new(params.loss, seed),
            port_loss: params.port_loss.clone(),
            port_rng: StdRng::seed_from_u64(seed ^ 0x0f10_7105_5a11_d00d),
            port_stats: vec![PortStats::default(); params.port_loss.len()],
            bucket: params
                .rate_bps
                .map(|r| TokenBucket::new(r, params.burst_bytes, params.queue_bytes, now)),
            delay: params.delay,
            line: DelayLine::default(),
            stats: LinkStats::default(),
        }
    }

    /// Offers a packet that arrived at `now`.
    pub fn ingress(&mut self, now: Instant, packet: Vec<u8>) -> Result<(), Dropped> {
        self.stats.received += 1;
        if self.loss.lose() {
            self.stats.lost += 1;
            return Err(Dropped {
                reason: DropReason::Lost,
                packet,
            });
        }
        match port_verdict(&packet, &self.port_loss, &mut self.port_rng) {
            PortVerdict::Unmatched => {}
            PortVerdict::Malformed => self.stats.malformed += 1,
            PortVerdict::Kept(i) => {
                self.stats.port_matched += 1;
                if let Some(p) = self.port_stats.get_mut(i) {
                    p.matched += 1;
                    p.kept_bytes += packet.len() as u64;
                }
            }
            PortVerdict::Lost(i) => {
                self.stats.port_matched += 1;
                self.stats.port_lost += 1;
                if let Some(p) = self.port_stats.get_mut(i) {
                    p.matched += 1;
                    p.lost += 1;
                }
                return Err(Dropped {
                    reason: DropReason::PortLost,
                    packet,
                });
            }
        }
        let depart = match self.bucket.as_mut() {
            None => now,
            Some(b) => match b.schedule(now, packet.len()) {
                Some(t) => t,
                None => {
                    self.stats.queue_dropped += 1;
                    return Err(Dropped {
                        reason: DropReason::QueueFull,
                        packet,
                    });
                }
            },
        };
        self.line.push(depart + self.delay, packet);
        Ok(())
    }

    /// The next packet that has reached the far end by `now`.
    pub fn poll_egress(&mut self, now: Instant) -> Option<Vec<u8>> {
        let p = self.line.pop_due(now)?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += p.len() as u64;
        Some(p)
    }

    /// When the next packet reaches the far end (the forwarder sleeps until then).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.line.next_due()
    }

    /// Packets currently queued or in flight.
    pub fn in_flight(&self) -> usize {
        self.line.len()
    }

    /// What happened so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// What each per-port rule saw so far, in the rules' order.
    pub fn port_stats(&self) -> &[PortStats] {
        &self.port_stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Equal up to float rounding of the virtual clock.
    fn close(a: Instant, b: Instant) -> bool {
        a.saturating_duration_since(b) + b.saturating_duration_since(a) < Duration::from_micros(1)
    }

    fn pkt(len: usize) -> Vec<u8> {
        vec![0; len]
    }

    #[test]
    fn a_packet_is_held_for_exactly_the_one_way_delay() {
        let t0 = Instant::now();
        let mut link = Link::new(&LinkParams::new(50 * MS, 0.0), 1, t0);
        link.ingress(t0, pkt(100)).unwrap();
        assert_eq!(link.next_deadline(), Some(t0 + 50 * MS));
        assert!(link.poll_egress(t0 + 49 * MS).is_none());
        assert_eq!(link.poll_egress(t0 + 50 * MS).map(|p| p.len()), Some(100));
        assert!(link.poll_egress(t0 + 60 * MS).is_none());
        assert_eq!(link.next_deadline(), None);
    }

    #[test]
    fn packets_leave_in_arrival_order_even_at_equal_times() {
        let t0 = Instant::now();
        let mut link = Link::new(&LinkParams::new(10 * MS, 0.0), 1, t0);
        for len in 1..=50 {
            link.ingress(t0, pkt(len)).unwrap();
        }
        let out: Vec<usize> = std::iter::from_fn(|| link.poll_egress(t0 + 10 * MS))
            .map(|p| p.len())
            .collect();
        assert_eq!(out, (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn the_delay_line_releases_by_due_time_not_insertion_order() {
        let t0 = Instant::now();
        let mut line = DelayLine::default();
        line.push(t0 + 30 * MS, pkt(3));
        line.push(t0 + 10 * MS, pkt(1));
        line.push(t0 + 20 * MS, pkt(2));
        assert_eq!(line.next_due(), Some(t0 + 10 * MS));
        let out: Vec<usize> = std::iter::from_fn(|| line.pop_due(t0 + 30 * MS))
            .map(|p| p.len())
            .collect();
        assert_eq!(out, [1, 2, 3]);
        assert!(line.is_empty());
    }

    #[test]
    fn loss_rate_matches_the_setting_within_statistical_tolerance() {
        for p in [0.005, 0.01, 0.05, 0.2] {
            let mut gate = LossGate::new(p, 42);
            let n = 200_000;
            let lost = (0..n).filter(|_| gate.lose()).count() as f64;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (lost - n as f64 * p).abs() < 4.0 * sd,
                "p={p}: lost {lost} of {n}"
            );
        }
    }

    #[test]
    fn loss_is_repeatable_per_seed_and_absent_or_total_at_the_bounds() {
        let draw = |seed| {
            let mut g = LossGate::new(0.3, seed);
            (0..1000).map(|_| g.lose()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut none = LossGate::new(0.0, 1);
        assert!((0..10_000).all(|_| !none.lose()));
        let mut all = LossGate::new(1.0, 1);
        assert!((0..10_000).all(|_| all.lose()));
    }

    #[test]
    fn a_lost_packet_is_counted_and_its_buffer_returned() {
        let t0 = Instant::now();
        let mut link = Link::new(&LinkParams::new(MS, 1.0), 1, t0);
        let d = link.ingress(t0, pkt(77)).unwrap_err();
        assert_eq!(d.reason, DropReason::Lost);
        assert_eq!(d.packet.len(), 77);
        assert_eq!(link.stats().lost, 1);
        assert_eq!(link.in_flight(), 0);
    }

    #[test]
    fn the_bucket_sends_its_burst_at_once_then_paces_at_the_rate() {
        let t0 = Instant::now();
        // 8 Mbit/s = 1 MB/s: a 1000-byte packet every millisecond once the burst is spent.
        let mut b = TokenBucket::new(8_000_000, 3000, 1_000_000, t0);
        let departs: Vec<Instant> = (0..6).map(|_| b.schedule(t0, 1000).unwrap()).collect();
        assert_eq!(&departs[..3], &[t0, t0, t0]);
        for (i, d) in departs[3..].iter().enumerate() {
            let want = t0 + (i as u32 + 1) * MS;
            assert!(close(*d, want), "packet {}: {d:?}", i + 3);
        }
    }

    #[test]
    fn a_long_run_through_the_bucket_averages_the_configured_rate() {
        let t0 = Instant::now();
        let rate = 100_000_000; // 100 Mbit/s
        let mut b = TokenBucket::new(rate, 12_500, usize::MAX, t0);
        // Offer far more than the rate: 10 000 packets of 1500 bytes at once.
        let last = (0..10_000).map(|_| b.schedule(t0, 1500).unwrap()).last();
        let secs = (last.unwrap() - t0).as_secs_f64();
        let achieved = (10_000.0 * 1500.0 * 8.0 - 12_500.0 * 8.0) / secs;
        assert!(
            (achieved / rate as f64 - 1.0).abs() < 0.001,
            "achieved {achieved}"
        );
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(8_000_000, 2000, 1_000_000, t0);
        b.schedule(t0, 2000).unwrap();
        // A whole second idle would be 1 MB of tokens; only 2000 bytes are kept.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.schedule(t1, 1000), Some(t1));
        assert_eq!(b.schedule(t1, 1000), Some(t1));
        assert_eq!(b.schedule(t1, 1000), Some(t1 + MS));
    }

    #[test]
    fn a_full_queue_drops_the_tail_and_drains_at_the_rate() {
        let t0 = Instant::now();
        // 1 MB/s, no burst to speak of, a queue of 10 kB.
        let mut link = Link::new(
            &LinkParams {
                delay: Duration::ZERO,
                loss: 0.0,
                rate_bps: Some(8_000_000),
                queue_bytes: 10_000,
                burst_bytes: 1000,
                port_loss: vec![],
            },
            1,
            t0,
        );
        let results: Vec<bool> = (0..20)
            .map(|_| link.ingress(t0, pkt(1000)).is_ok())
            .collect();
        let accepted = results.iter().filter(|ok| **ok).count();
        assert!(
            (10..=12).contains(&accepted),
            "accepted {accepted}: {results:?}"
        );
        assert!(results[..accepted].iter().all(|ok| *ok), "tail dropped");
        assert_eq!(link.stats().queue_dropped, 20 - accepted as u64);
        // After 5 ms, 5 packets have drained, so 5 more fit.
        let t5 = t0 + 5 * MS;
        while link.poll_egress(t5).is_some() {}
        let more = (0..10)
            .filter(|_| link.ingress(t5, pkt(1000)).is_ok())
            .count();
        assert!((4..=6).contains(&more), "{more}");
    }

    #[test]
    fn an_empty_queue_takes_a_packet_larger_than_its_limit() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(8_000_000, 100, 100, t0);
        assert!(b.schedule(t0, 1500).is_some());
        assert!(b.schedule(t0, 1500).is_none(), "but only while empty");
    }

    #[test]
    fn a_capped_packet_arrives_after_its_queueing_plus_the_delay() {
        let t0 = Instant::now();
        let params = LinkParams::new(20 * MS, 0.0).with_rate(8_000_000, 1_000_000);
        assert_eq!(params.burst_bytes, 3028, "at least two full packets");
        let mut link = Link::new(&params, 1, t0);
        for _ in 0..4 {
            link.ingress(t0, pkt(1514)).unwrap();
        }
        // Two leave at once, the third waits for 1514-(3028-2*1514)=1514 bytes of tokens.
        assert_eq!(link.next_deadline(), Some(t0 + 20 * MS));
        let at = t0 + 20 * MS;
        assert!(link.poll_egress(at).is_some() && link.poll_egress(at).is_some());
        assert!(link.poll_egress(at).is_none());
        let third = link.next_deadline().unwrap();
        let want = at + Duration::from_secs_f64(1514.0 / 1_000_000.0);
        assert!(close(third, want), "{third:?} vs {want:?}");
        assert_eq!(link.stats().delivered, 2);
        assert_eq!(link.stats().delivered_bytes, 2 * 1514);
    }

    /// An IPv4 packet of protocol `proto` with a UDP-style header carrying `src`/`dst`
    /// and `payload` bytes after it.
    fn ipv4(proto: u8, src: u16, dst: u16, payload: usize) -> Vec<u8> {
        let total = 20 + 8 + payload;
        let mut p = vec![0; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // don't fragment
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 77, 0, 1]);
        p[16..20].copy_from_slice(&[10, 77, 0, 2]);
        p[20..22].copy_from_slice(&src.to_be_bytes());
        p[22..24].copy_from_slice(&dst.to_be_bytes());
        p
    }

    fn udp(src: u16, dst: u16) -> Vec<u8> {
        ipv4(17, src, dst, 100)
    }

    #[test]
    fn udp_ports_are_read_from_an_ipv4_packet_with_or_without_options() {
        assert_eq!(
            classify(&udp(40000, 4433)),
            Classified::Udp {
                src: 40000,
                dst: 4433
            }
        );
        // IHL 6: four bytes of options before the UDP header.
        let mut p = udp(0, 0);
        p.splice(20..20, [1, 1, 1, 0]);
        p[0] = 0x46;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[24..26].copy_from_slice(&5353u16.to_be_bytes());
        p[26..28].copy_from_slice(&4434u16.to_be_bytes());
        assert_eq!(
            classify(&p),
            Classified::Udp {
                src: 5353,
                dst: 4434
            }
        );
        // Trailing padding beyond the total length is fine.
        let mut padded = udp(1, 2);
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(classify(&padded), Classified::Udp { src: 1, dst: 2 });
    }

    #[test]
    fn other_protocols_ipv6_and_later_fragments_are_not_udp_flows() {
        assert_eq!(classify(&ipv4(6, 4433, 4433, 100)), Classified::Other);
        let mut v6 = vec![0; 60];
        v6[0] = 0x60;
        assert_eq!(classify(&v6), Classified::Other);
        let mut frag = udp(4433, 4433);
        frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        assert_eq!(classify(&frag), Classified::Other);
    }

    #[test]
    fn short_or_inconsistent_headers_are_malformed_never_a_panic() {
        let good = udp(4433, 4433);
        for len in 0..28 {
            assert_eq!(classify(&good[..len]), Classified::Malformed, "len {len}");
        }
        let mut ihl_small = good.clone();
        ihl_small[0] = 0x44;
        assert_eq!(classify(&ihl_small), Classified::Malformed);
        let mut ihl_big = good.clone();
        ihl_big[0] = 0x4f;
        ihl_big.truncate(40);
        ihl_big[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(classify(&ihl_big), Classified::Malformed, "no room for udp");
        let mut total_long = good.clone();
        total_long[2..4].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(classify(&total_long), Classified::Malformed);
        let mut total_short = good;
        total_short[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(classify(&total_short), Classified::Malformed);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_classify_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let mut rng = StdRng::seed_from_u64(1);
            let rules = [PortLoss { port: 4433, loss: 0.5 }];
            let _ = classify(&bytes);
            let _ = port_verdict(&bytes, &rules, &mut rng);
        }
    }

    #[test]
    fn a_rule_matches_its_port_as_source_or_destination_only() {
        let rules = [PortLoss {
            port: 4436,
            loss: 1.0,
        }];
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            port_verdict(&udp(50000, 4436), &rules, &mut rng),
            PortVerdict::Lost(0)
        );
        assert_eq!(
            port_verdict(&udp(4436, 50000), &rules, &mut rng),
            PortVerdict::Lost(0)
        );
        assert_eq!(
            port_verdict(&udp(50000, 4435), &rules, &mut rng),
            PortVerdict::Unmatched
        );
        assert_eq!(
            port_verdict(&ipv4(6, 4436, 4436, 10), &rules, &mut rng),
            PortVerdict::Unmatched,
            "tcp on that port is another flow"
        );
        assert_eq!(
            port_verdict(&[0x45, 0], &rules, &mut rng),
            PortVerdict::Malformed
        );
        assert_eq!(
            port_verdict(&[0x45, 0], &[], &mut rng),
            PortVerdict::Unmatched,
            "without rules nothing is parsed"
        );
        let keep = [
            PortLoss {
                port: 4435,
                loss: 0.0,
            },
            PortLoss {
                port: 4436,
                loss: 0.0,
            },
        ];
        assert_eq!(
            port_verdict(&udp(1, 4436), &keep, &mut rng),
            PortVerdict::Kept(1)
        );
    }

    #[test]
    fn the_port_loss_rate_matches_its_setting_and_is_repeatable_per_seed() {
        let rules = [PortLoss {
            port: 4436,
            loss: 0.05,
        }];
        let p = udp(4436, 40000);
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..100_000)
                .map(|_| port_verdict(&p, &rules, &mut rng) == PortVerdict::Lost(0))
                .collect::<Vec<_>>()
        };
        let lost = draw(9).iter().filter(|l| **l).count() as f64;
        let sd = (100_000.0f64 * 0.05 * 0.95).sqrt();
        assert!((lost - 5000.0).abs() < 4.0 * sd, "lost {lost}");
        assert_eq!(draw(9), draw(9));
    }

    #[test]
    fn the_link_adds_port_loss_to_one_flow_and_leaves_the_others_alone() {
        let t0 = Instant::now();
        let mut params = LinkParams::new(MS, 0.0);
        params.port_loss = vec![
            PortLoss {
                port: 4435,
                loss: 0.0,
            },
            PortLoss {
                port: 4436,
                loss: 1.0,
            },
        ];
        let mut link = Link::new(&params, 1, t0);
        let d = link.ingress(t0, udp(4436, 40000)).unwrap_err();
        assert_eq!(d.reason, DropReason::PortLost);
        link.ingress(t0, udp(4435, 40000)).unwrap();
        link.ingress(t0, udp(4433, 40000)).unwrap();
        link.ingress(t0, vec![0x45]).unwrap();
        let s = link.stats();
        assert_eq!((s.port_matched, s.port_lost, s.malformed), (2, 1, 1));
        assert_eq!(s.lost, 0, "the link's own loss is counted apart");
        assert_eq!(link.in_flight(), 3);
        assert_eq!(
            link.port_stats(),
            [
                PortStats {
                    matched: 1,
                    lost: 0,
                    kept_bytes: 128
                },
                PortStats {
                    matched: 1,
                    lost: 1,
                    kept_bytes: 0
                }
            ]
        );
    }

    #[test]
    fn a_port_rule_does_not_change_the_links_own_loss_pattern() {
        let t0 = Instant::now();
        let pattern = |rules: Vec<PortLoss>| {
            let mut params = LinkParams::new(MS, 0.3);
            params.port_loss = rules;
            let mut link = Link::new(&params, 5, t0);
            (0..500)
                .map(|i| {
                    let port = if i % 2 == 0 { 4436 } else { 4433 };
                    match link.ingress(t0, udp(port, 40000)) {
                        Err(d) => d.reason == DropReason::Lost,
                        Ok(()) => false,
                    }
                })
                .collect::<Vec<_>>()
        };
        let with = pattern(vec![PortLoss {
            port: 4436,
            loss: 0.5,
        }]);
        assert_eq!(pattern(vec![]), with);
    }
}
