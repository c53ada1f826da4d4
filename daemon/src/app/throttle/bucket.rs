//! A byte token bucket kept as a GCRA schedule (virtual scheduling): pure,
//! with the clock passed in.
//!
//! The bucket remembers one time, `tat`: when the bytes granted so far would
//! have drained at `rate`. Reserving `n` bytes moves `tat` forward by
//! `n / rate` and grants them once `tat` is no more than `burst / rate`
//! ahead of the clock. Every reservation is granted (none is refused); the
//! caller waits until its grant time. Reservations are therefore served in
//! the order they were made, whatever their sizes, so streams sharing a
//! bucket take turns rather than race.
//!
//! Guarantee (property-tested below): over any window of length `w`, the
//! bytes granted inside it are at most `rate × w + burst`, provided each
//! reservation is at most `burst` bytes (callers split larger ones).
//!
//! Arithmetic is in whole nanoseconds since the bucket's origin, rounded
//! towards "later" (costs up, the burst allowance down), so rounding can
//! only make the bucket stricter, by at most a nanosecond per reservation.
//!
//! Must not sleep, lock or read the clock.

use std::time::{Duration, Instant};

use crate::config::BandwidthLimit;

/// The smallest burst: one full read of the pipe (64 KiB), so a read is
/// never split and a quiet app starts at full speed.
pub const MIN_BURST: u64 = 64 * 1024;

/// The burst for rates above 6.4 MB/s: this much time of the rate.
pub const BURST_TIME: Duration = Duration::from_millis(10);

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The burst allowed at `rate` bytes per second: 64 KiB or 10 ms of the
/// rate, whichever is larger.
pub fn burst_for(rate: u64) -> u64 {
    let ten_ms = u128::from(rate) * BURST_TIME.as_nanos() / NANOS_PER_SEC;
    MIN_BURST.max(u64::try_from(ten_ms).unwrap_or(u64::MAX))
}

/// One direction's bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bytes per second, > 0.
    rate: u64,
    /// Bytes that may be granted at once after a quiet period.
    burst: u64,
    /// Time zero of the nanosecond counts below.
    origin: Instant,
    /// Theoretical arrival time: when everything reserved so far has
    /// drained at `rate` (nanoseconds since `origin`).
    tat: u64,
}

/// A granted reservation: when its bytes may go, and what [`Bucket::cancel`]
/// needs to give them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// When the bytes may be sent.
    pub at: Instant,
    /// `tat` before this reservation (after catching up with the clock).
    before: u64,
    /// `tat` after it.
    after: u64,
}

impl Bucket {
    /// A full bucket of `limit`, with `now` as its origin.
    pub fn new(limit: BandwidthLimit, now: Instant) -> Self {
        let rate = limit.bytes_per_second();
        Self {
            rate,
            burst: burst_for(rate),
            origin: now,
            tat: 0,
        }
    }

    /// Changes the rate; bytes already reserved keep their grant times.
    pub fn set_limit(&mut self, limit: BandwidthLimit) {
        self.rate = limit.bytes_per_second();
        self.burst = burst_for(self.rate);
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The largest reservation that keeps the window guarantee.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time to drain `bytes` at the rate, rounded up.
    fn cost(&self, bytes: u64) -> u64 {
        let rate = u128::from(self.rate);
        let ns = (u128::from(bytes) * NANOS_PER_SEC).div_ceil(rate);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The burst as time, rounded down.
    fn tolerance(&self) -> u64 {
        let ns = u128::from(self.burst) * NANOS_PER_SEC / u128::from(self.rate);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Reserves `bytes` (at most [`burst`](Self::burst) for the window
    /// guarantee) at `now`; they may be sent from the returned time on.
    pub fn reserve(&mut self, bytes: u64, now: Instant) -> Reservation {
        let now_ns = self.nanos(now);
        // An idle bucket does not bank more than the burst.
        let before = self.tat.max(now_ns);
        let after = before.saturating_add(self.cost(bytes));
        let at_ns = after.saturating_sub(self.tolerance()).max(now_ns);
        self.tat = after;
        Reservation {
            at: self.origin + Duration::from_nanos(at_ns),
            before,
            after,
        }
    }

    /// Gives back a reservation whose bytes will not be sent, called at
    /// `now`. Only the latest reservation, not yet granted, is given back;
    /// others stay spent (at most one read's worth each), because later
    /// reservations already count on them.
    pub fn cancel(&mut self, r: &Reservation, now: Instant) {
        if self.tat == r.after && now < r.at {
            // As if a reservation of nothing had been made at its time.
            self.tat = r.before;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(bytes: u64) -> BandwidthLimit {
        BandwidthLimit::from_bytes_per_second(bytes).expect("in range")
    }

    #[test]
    fn the_burst_is_64_kib_or_10_ms_of_the_rate() {
        assert_eq!(burst_for(1_000), 64 * 1024);
        assert_eq!(burst_for(4 << 20), 64 * 1024);
        assert_eq!(burst_for(100 << 20), (100 << 20) / 100);
        assert_eq!(burst_for(100 << 30), (100 << 30) / 100);
    }

    #[test]
    fn a_quiet_bucket_grants_its_burst_at_once_then_paces_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(limit(1 << 20), t0);
        // 64 KiB of burst: granted now.
        assert_eq!(b.reserve(64 * 1024, t0).at, t0);
        // The next 64 KiB wait for 64 KiB at 1 MiB/s: 62.5 ms.
        assert_eq!(
            b.reserve(64 * 1024, t0).at,
            t0 + Duration::from_micros(62_500)
        );
        assert_eq!(b.reserve(64 * 1024, t0).at, t0 + Duration::from_millis(125));
        // After a long pause the bucket is full again, never fuller.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.reserve(64 * 1024, later).at, later);
        assert_eq!(b.reserve(1, later).at, later + Duration::from_nanos(954));
    }

    #[test]
    fn a_sustained_transfer_runs_at_the_rate() {
        let t0 = Instant::now();
        let rate = 4 << 20;
        let mut b = Bucket::new(limit(rate), t0);
        let (chunk, chunks) = (16 * 1024, 1024u64);
        let mut last = t0;
        for _ in 0..chunks {
            // Each reservation is made as soon as the previous was granted.
            last = b.reserve(chunk, last).at;
        }
        // 16 MiB at 4 MiB/s, the first 64 KiB free: 4 s less 15.6 ms.
        let want = Duration::from_secs_f64((chunk * chunks - MIN_BURST) as f64 / rate as f64);
        let got = last - t0;
        assert!(got >= want, "{got:?} < {want:?}");
        assert!(
            got - want < Duration::from_micros(10),
            "{got:?} vs {want:?}"
        );
    }

    #[test]
    fn streams_sharing_a_bucket_are_served_in_turn() {
        let t0 = Instant::now();
        let mut b = Bucket::new(limit(1_000_000), t0);
        let _burst = b.reserve(b.burst(), t0);
        let first = b.reserve(10_000, t0);
        let second = b.reserve(10_000, t0);
        assert!(first.at < second.at);
        assert_eq!(second.at - first.at, Duration::from_millis(10));
    }

    #[test]
    fn only_the_latest_ungranted_reservation_is_given_back() {
        let t0 = Instant::now();
        let mut b = Bucket::new(limit(1 << 20), t0);
        let _ = b.reserve(64 * 1024, t0);
        let a = b.reserve(64 * 1024, t0);
        let c = b.reserve(64 * 1024, t0);
        // `a` has a later reservation behind it: stays spent.
        b.cancel(&a, t0);
        assert_eq!(b.reserve(0, t0).at, c.at);
        // `c` is the latest (the zero-byte one changed nothing): given back.
        b.cancel(&c, t0);
        assert_eq!(b.reserve(64 * 1024, t0).at, c.at);
        // Once granted, a reservation is spent even if cancelled.
        let d = b.reserve(64 * 1024, t0);
        b.cancel(&d, d.at);
        assert!(b.reserve(1, d.at).at > d.at);
    }

    #[test]
    fn a_new_rate_applies_to_later_reservations_only() {
        let t0 = Instant::now();
        let mut b = Bucket::new(limit(1 << 20), t0);
        let _ = b.reserve(64 * 1024, t0);
        let queued = b.reserve(64 * 1024, t0);
        b.set_limit(limit(2 << 20));
        assert_eq!(queued.at, t0 + Duration::from_micros(62_500));
        // Later reservations are 64 KiB at 2 MiB/s apart: 31.25 ms.
        let next = b.reserve(64 * 1024, t0);
        let then = b.reserve(64 * 1024, t0);
        assert!(next.at >= queued.at);
        assert_eq!(then.at - next.at, Duration::from_micros(31_250));
    }

    /// Clock steps and sizes are in thousandths of the burst (as time at
    /// the rate, and as bytes), so the bucket is kept busy at any rate.
    #[derive(Debug, Clone)]
    enum Op {
        /// Advance the clock, then reserve.
        Reserve { after: u64, permille: u64 },
        /// Advance the clock, then cancel the pending reservation at this index.
        Cancel { after: u64, pick: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        let after = prop_oneof![3 => Just(0u64), 3 => 0u64..500, 1 => 0u64..3000];
        prop_oneof![
            3 => (after.clone(), 1u64..=1000).prop_map(|(after, permille)| Op::Reserve { after, permille }),
            1 => (after, any::<usize>()).prop_map(|(after, pick)| Op::Cancel { after, pick }),
        ]
    }

    proptest! {
        #[test]
        fn granted_bytes_never_exceed_rate_times_window_plus_burst(
            rate in 1_000u64..=(1 << 30),
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = Bucket::new(limit(rate), t0);
            let burst = b.burst();
            let tolerance = b.tolerance();
            let step = |after: u64| Duration::from_nanos(tolerance * after / 1000);
            let mut now = t0;
            // (reservation, bytes, cancelled before its grant)
            let mut made: Vec<(Reservation, u64, bool)> = Vec::new();
            for op in ops {
                match op {
                    Op::Reserve { after, permille } => {
                        now += step(after);
                        let bytes = (burst * permille / 1000).max(1);
                        made.push((b.reserve(bytes, now), bytes, false));
                    }
                    Op::Cancel { after, pick } => {
                        now += step(after);
                        let pending: Vec<usize> = (0..made.len())
                            .filter(|&i| !made[i].2 && made[i].0.at > now)
                            .collect();
                        if let Some(&i) = pending.get(pick % pending.len().max(1)) {
                            b.cancel(&made[i].0, now);
                            made[i].2 = true;
                        }
                    }
                }
            }
            let mut grants: Vec<(u64, u64)> = made
                .iter()
                .filter(|m| !m.2)
                .map(|(r, bytes, _)| {
                    let at = u64::try_from((r.at - t0).as_nanos()).unwrap();
                    (at, *bytes)
                })
                .collect();
            grants.sort_unstable();
            // Every window from one grant to another (the tightest windows).
            for i in 0..grants.len() {
                let mut sum = 0u128;
                for j in i..grants.len() {
                    sum += u128::from(grants[j].1);
                    let window = u128::from(grants[j].0 - grants[i].0);
                    let allowed = u128::from(rate) * window + u128::from(burst) * NANOS_PER_SEC;
                    prop_assert!(
                        sum * NANOS_PER_SEC <= allowed,
                        "{sum} bytes in {window} ns at {rate} B/s, burst {burst}"
                    );
                }
            }
        }

        #[test]
        fn a_bucket_kept_busy_grants_no_less_than_the_rate(
            rate in 1_000u64..=(1 << 30),
            sizes in prop::collection::vec(1u64..=1000, 1..100),
        ) {
            let t0 = Instant::now();
            let mut b = Bucket::new(limit(rate), t0);
            let burst = b.burst();
            let mut total = 0u128;
            let mut last = t0;
            for permille in sizes {
                let bytes = (burst * permille / 1000).max(1);
                total += u128::from(bytes);
                last = b.reserve(bytes, t0).at;
            }
            // All reserved at t0: the last grant is when the total less the
            // burst has drained, give or take a nanosecond per reservation.
            let elapsed = (last - t0).as_nanos();
            let drain = (total.saturating_sub(u128::from(burst)) * NANOS_PER_SEC).div_ceil(u128::from(rate));
            prop_assert!(elapsed + 1 >= drain, "{elapsed} ns < {drain} ns");
            prop_assert!(elapsed <= drain + 100 + 1, "{elapsed} ns > {drain} ns");
        }
    }
}
