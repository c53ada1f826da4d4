//! Flow-control windows that follow the path: a dataChannel's send window
//! (what quinn buffers unacknowledged) and connection receive window (what the
//! peer may have in flight to us) sized from the measured delivery rate times
//! the minimum RTT, instead of fixed worst-case sizes. Pure: the caller feeds
//! `now`, quinn's smoothed RTT and a byte counter, and applies what comes out.
//!
//! Why: a fixed 64 MiB send window lets a fast local app park up to 64 MiB in
//! the daemon whenever the path is slower than the app (on loopback it held
//! ~40 MiB per daemon for one stream, ~95 MiB for four), while a window that
//! is too small caps a long path (1 Gbit/s × 100 ms needs 12.5 MB in flight).
//!
//! How: every tick the rate since the last tick is measured; the window is
//! [`GAIN`] × (peak rate of the last [`PEAK_HOLD`]) × (minimum RTT of the last
//! [`MIN_RTT_HOLD`]), within [`MIN_WINDOW`]..=[`MAX_WINDOW`]. When the window
//! itself is the limit, the rate is at most window / RTT, so the next window
//! is up to `GAIN` × the current one. On a lossy path the window must hold
//! more than one product: data behind a lost packet keeps its place in the
//! receive window until the retransmission arrives, a round trip or more
//! later, so a window-limited lossy path delivers about window / (2 × RTT)
//! and still grows (`GAIN` / 2 × per tick). Once the congestion controller,
//! not the window, limits (it keeps what is in flight near the path's
//! product, so no queue grows without bound), the rate is the path's and the
//! window settles at `GAIN` products. It shrinks once the peak rate has aged
//! out (after a transfer, or when the path got slower), so an idle channel
//! goes back to the floor.

use std::time::{Duration, Instant};

/// Never below this: fills a loopback or LAN path on its own (measured: 1 and
/// 2 MiB carry 5+ Gbit/s between two daemons on loopback), and a path that
/// needs more grows from here.
pub const MIN_WINDOW: u64 = 2 << 20;
/// Never above this (the fixed size used before).
pub const MAX_WINDOW: u64 = 64 << 20;
/// Window per bandwidth-delay product: one in flight, more held behind
/// losses until their retransmission arrives, and room to grow while the
/// window is the limit. Measured on the WAN grid against the fixed windows
/// (bbr, one stream, same machine): with 2, 100 ms 1 % into a 100 Mbit/s
/// cap fell from 95 to 78 Mbit/s and 200 ms 5 % uncapped from 134 to 36;
/// with 4 every capped path held but the 200 ms uncapped ones lost 9–13 %;
/// with 8 they are within the runs' noise (197 / 131 against 209 / 134).
/// On loopback or a LAN the product is tens of KB, so the floor decides.
pub const GAIN: u64 = 8;
/// How long a peak rate is remembered.
pub const PEAK_HOLD: Duration = Duration::from_secs(2);
/// How long a minimum RTT is remembered (the path may have changed since).
pub const MIN_RTT_HOLD: Duration = Duration::from_secs(10);
/// Shortest tick: rates over shorter spans are mostly scheduling noise.
pub const MIN_TICK: Duration = Duration::from_millis(10);
/// Longest tick while bytes flow; also the idle tick.
pub const MAX_TICK: Duration = Duration::from_millis(250);

/// One window (send or receive) of one connection.
#[derive(Debug, Clone)]
pub struct WindowTuner {
    window: u64,
    last: Option<(Instant, u64)>,
    /// Bytes per second, and when it was seen.
    peak: Option<(f64, Instant)>,
    /// Bytes per second over the last tick.
    recent: f64,
    min_rtt: Option<(Duration, Instant)>,
}

impl Default for WindowTuner {
    fn default() -> Self {
        Self::new()
    }
}

impl WindowTuner {
    /// Starts at [`MIN_WINDOW`].
    pub fn new() -> Self {
        Self {
            window: MIN_WINDOW,
            last: None,
            peak: None,
            recent: 0.0,
            min_rtt: None,
        }
    }

    /// The current window.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// A tick at `now`: `rtt` is the smoothed RTT, `bytes` the running total
    /// of bytes carried the way this window governs. Returns the new window
    /// when it changed.
    pub fn on_tick(&mut self, now: Instant, rtt: Duration, bytes: u64) -> Option<u64> {
        if !rtt.is_zero()
            && self
                .min_rtt
                .is_none_or(|(m, at)| rtt <= m || now.saturating_duration_since(at) > MIN_RTT_HOLD)
        {
            self.min_rtt = Some((rtt, now));
        }
        let last = self.last.replace((now, bytes));
        if let Some((then, before)) = last {
            let dt = now.saturating_duration_since(then);
            if !dt.is_zero() {
                let rate = bytes.saturating_sub(before) as f64 / dt.as_secs_f64();
                self.recent = rate;
                if self.peak.is_none_or(|(p, at)| {
                    rate >= p || now.saturating_duration_since(at) > PEAK_HOLD
                }) {
                    self.peak = Some((rate, now));
                }
            }
        }
        let target = match (self.peak, self.min_rtt) {
            (Some((rate, _)), Some((rtt, _))) => {
                let bdp = rate * rtt.as_secs_f64();
                // Saturating float-to-int cast, then clamped.
                ((GAIN as f64 * bdp) as u64).clamp(MIN_WINDOW, MAX_WINDOW)
            }
            _ => MIN_WINDOW,
        };
        (target != self.window).then(|| {
            self.window = target;
            target
        })
    }

    /// When to tick next: about once per RTT while the last tick's rate
    /// asks for a window of at least half the floor (the rate of a
    /// window-limited path shows over one RTT), [`MAX_TICK`] otherwise.
    ///
    /// Slower flows cannot need more than the floor before the next tick
    /// sees them grow. Keep-alives (a packet every [`PEAK_HOLD`]) are such a
    /// flow: counting any byte as flowing kept every idle channel ticking
    /// every 10 ms.
    pub fn next_tick(&self, rtt: Duration) -> Duration {
        let wants = GAIN as f64 * self.recent * rtt.as_secs_f64();
        if wants >= (MIN_WINDOW / 2) as f64 {
            rtt.clamp(MIN_TICK, MAX_TICK)
        } else {
            MAX_TICK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    /// A path of `rate` bytes/s and `rtt` carrying a transfer limited by
    /// whichever is smaller, the path or window / RTT; returns the window
    /// after `ticks` ticks.
    fn drive(t: &mut WindowTuner, t0: Instant, rate: f64, rtt: Duration, ticks: u32) -> u64 {
        let mut now = t0;
        let mut bytes = 0u64;
        t.on_tick(now, rtt, bytes);
        for _ in 0..ticks {
            let dt = t.next_tick(rtt).max(rtt);
            let carried = rate.min(t.window() as f64 / rtt.as_secs_f64());
            bytes += (carried * dt.as_secs_f64()) as u64;
            now += dt;
            t.on_tick(now, rtt, bytes);
        }
        t.window()
    }

    #[test]
    fn a_fast_short_path_stays_at_the_floor() {
        // Loopback: 5 Gbit/s at 100 µs is a 62 KB product.
        let mut t = WindowTuner::new();
        let w = drive(
            &mut t,
            Instant::now(),
            625e6,
            Duration::from_micros(100),
            200,
        );
        assert_eq!(w, MIN_WINDOW);
    }

    #[test]
    fn a_long_fat_path_grows_to_its_gain_times_its_product_within_a_few_rtts() {
        // 1 Gbit/s × 100 ms = 12.5 MB.
        let mut t = WindowTuner::new();
        let t0 = Instant::now();
        let w = drive(&mut t, t0, 125e6, 100 * MS, 6);
        let bdp = 12_500_000u64;
        assert_eq!(w, (GAIN * bdp).min(MAX_WINDOW));
        // It got there by multiplying from the floor, GAIN × per tick.
        let steps: Vec<u64> = (1..=2)
            .map(|n| drive(&mut WindowTuner::new(), t0, 125e6, 100 * MS, n))
            .collect();
        assert_eq!(steps, [GAIN * MIN_WINDOW, MAX_WINDOW]);
    }

    #[test]
    fn a_window_limited_lossy_path_still_grows() {
        // Data behind each loss holds its window share for an extra round
        // trip: the path delivers window / (2 × RTT) while the window limits.
        let rtt = 100 * MS;
        let mut t = WindowTuner::new();
        let t0 = Instant::now();
        let (mut now, mut bytes) = (t0, 0u64);
        t.on_tick(now, rtt, 0);
        for _ in 0..10 {
            let carried = (12.5e6f64).min(t.window() as f64 / (2.0 * rtt.as_secs_f64()));
            now += rtt;
            bytes += (carried * rtt.as_secs_f64()) as u64;
            t.on_tick(now, rtt, bytes);
        }
        // 100 Mbit/s × 100 ms = 1.25 MB: settled at GAIN products.
        assert_eq!(t.window(), GAIN * 1_250_000);
    }

    #[test]
    fn idle_goes_back_to_the_floor_after_the_peak_aged_out() {
        let mut t = WindowTuner::new();
        let t0 = Instant::now();
        drive(&mut t, t0, 125e6, 100 * MS, 10);
        assert!(t.window() > 20 << 20);
        let (last_at, total) = t.last.unwrap();
        let mut now = last_at;
        for _ in 0..20 {
            now += MAX_TICK;
            t.on_tick(now, 100 * MS, total);
        }
        assert_eq!(t.window(), MIN_WINDOW);
        assert_eq!(t.next_tick(100 * MS), MAX_TICK);
    }

    #[test]
    fn keep_alives_alone_tick_at_the_idle_pace() {
        // A keep-alive of ~50 bytes every PEAK_HOLD on a 20 ms path.
        let rtt = 20 * MS;
        let mut t = WindowTuner::new();
        let (mut now, mut bytes) = (Instant::now(), 0u64);
        t.on_tick(now, rtt, bytes);
        let mut ticks = 0u32;
        let end = now + 10 * PEAK_HOLD;
        let mut next_keep_alive = now;
        while now < end {
            now += t.next_tick(rtt);
            ticks += 1;
            if now >= next_keep_alive {
                bytes += 50;
                next_keep_alive += PEAK_HOLD;
            }
            t.on_tick(now, rtt, bytes);
        }
        assert_eq!(t.window(), MIN_WINDOW);
        // 20 s at MAX_TICK; ticking per RTT would be 1 000.
        assert_eq!(ticks, 80);
    }

    #[test]
    fn a_flow_that_may_outgrow_the_floor_ticks_once_per_rtt() {
        let rtt = 20 * MS;
        let mut t = WindowTuner::new();
        let t0 = Instant::now();
        // GAIN × rate × 20 ms reaches half the 2 MiB floor at ~6.6 MB/s.
        t.on_tick(t0, rtt, 0);
        t.on_tick(t0 + MAX_TICK, rtt, 1_500_000);
        assert_eq!(t.next_tick(rtt), MAX_TICK);
        t.on_tick(t0 + 2 * MAX_TICK, rtt, 1_500_000 + 2_000_000);
        assert_eq!(t.next_tick(rtt), rtt);
        // And back to the idle pace once it stops.
        t.on_tick(t0 + 3 * MAX_TICK, rtt, 3_500_000);
        assert_eq!(t.next_tick(rtt), MAX_TICK);
    }

    #[test]
    fn never_leaves_its_bounds_and_reports_every_change() {
        proptest!(|(steps in proptest::collection::vec((0u64..2_000, 0u64..500_000_000, 0u64..1_000_000), 1..100))| {
            let mut t = WindowTuner::new();
            let mut now = Instant::now();
            let mut bytes = 0u64;
            for (dt_ms, add, rtt_us) in steps {
                now += Duration::from_millis(dt_ms);
                bytes = bytes.saturating_add(add);
                let before = t.window();
                let changed = t.on_tick(now, Duration::from_micros(rtt_us), bytes);
                prop_assert!((MIN_WINDOW..=MAX_WINDOW).contains(&t.window()));
                prop_assert_eq!(changed.is_some(), t.window() != before);
                let tick = t.next_tick(Duration::from_micros(rtt_us));
                prop_assert!((MIN_TICK..=MAX_TICK).contains(&tick));
            }
        });
    }
}
