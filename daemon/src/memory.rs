//! Gives the heap memory freed after a burst of traffic back to the kernel.
//!
//! glibc's malloc keeps freed memory inside its arenas and returns only what
//! lies at the top of each (`M_TRIM_THRESHOLD`): the packet and stream
//! buffers of a full-speed transfer are freed in whatever order quinn
//! releases them, so most of the pages a burst touched stay resident for
//! good. Measured in the loopback rig: 23.6 / 19.7 MiB resident after
//! three transfers, 15.2 / 16.0 MiB after one `malloc_trim(0)`; glibc's
//! tunables (fixed thresholds, one arena) changed nothing.
//!
//! Trimming walks every free chunk, so it is done once per burst, after the
//! process has gone quiet ([`IdleTrim`], which watches the process's CPU
//! time: a busy daemon is one moving bytes), never while bytes flow. The
//! process-wide task runs once per process, not per site (`wovenetd demo`
//! runs two sites in one process).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How often the process's CPU time is read.
pub const TICK: Duration = Duration::from_millis(500);
/// Quiet time after a burst before the heap is trimmed.
pub const QUIET: Duration = Duration::from_secs(1);
/// CPU use (share of one core over a tick) from which the process counts as
/// busy: an idle daemon (keep-alives, MQTT pings) stays far below it.
pub const BUSY_SHARE: f64 = 0.05;

/// Decides when to trim: once after each busy period, when the process has
/// been quiet for [`QUIET`]. Pure: fed the time and the CPU time used so far.
#[derive(Debug, Default)]
pub struct IdleTrim {
    last: Option<(Instant, Duration)>,
    /// End of the last busy tick, while no trim has followed it.
    busy_until: Option<Instant>,
}

impl IdleTrim {
    /// A tick at `now` with `cpu` the process's CPU time so far; true when the
    /// heap should be trimmed now.
    pub fn on_tick(&mut self, now: Instant, cpu: Duration) -> bool {
        let Some((then, cpu_then)) = self.last.replace((now, cpu)) else {
            return false;
        };
        let wall = now.saturating_duration_since(then);
        if wall.is_zero() {
            return false;
        }
        let share = cpu.saturating_sub(cpu_then).as_secs_f64() / wall.as_secs_f64();
        if share >= BUSY_SHARE {
            self.busy_until = Some(now);
            return false;
        }
        match self.busy_until {
            Some(busy) if now.saturating_duration_since(busy) >= QUIET => {
                self.busy_until = None;
                true
            }
            _ => false,
        }
    }
}

/// CPU time used by this process so far (all threads).
fn process_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

/// Returns the free pages of every malloc arena to the kernel; true if any
/// memory was returned. Does nothing where the allocator has no such call.
pub fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks malloc's own free lists under its
        // locks; it has no preconditions.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims the heap after each burst of traffic until `stop` is cancelled.
pub async fn release_after_bursts(stop: CancellationToken) {
    let mut trim = IdleTrim::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(cpu) = process_cpu() else {
            // No process clock on this system: nothing to decide with.
            return;
        };
        if trim.on_tick(Instant::now(), cpu) {
            let started = Instant::now();
            let returned = release_free_heap();
            debug!(returned, took = ?started.elapsed(), "heap trimmed after a burst");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `ticks` ticks of [`TICK`] using `busy` of each in CPU; returns
    /// the indexes of the ticks that trimmed.
    fn drive(t: &mut IdleTrim, now: &mut Instant, cpu: &mut Duration, busy: &[f64]) -> Vec<usize> {
        let mut trims = Vec::new();
        for (i, share) in busy.iter().enumerate() {
            *now += TICK;
            *cpu += TICK.mul_f64(*share);
            if t.on_tick(*now, *cpu) {
                trims.push(i);
            }
        }
        trims
    }

    #[test]
    fn trims_once_after_a_burst_once_quiet_for_long_enough() {
        let mut t = IdleTrim::default();
        let (mut now, mut cpu) = (Instant::now(), Duration::ZERO);
        assert!(!t.on_tick(now, cpu));
        // Busy for 2 s, then quiet: trims when QUIET has passed, once.
        let shares = [0.9, 0.8, 1.0, 0.7, 0.0, 0.01, 0.0, 0.0, 0.0, 0.0];
        let trims = drive(&mut t, &mut now, &mut cpu, &shares);
        // Quiet from the end of tick 3; tick 5 ends QUIET (1 s) later.
        assert_eq!(trims, vec![5]);
    }

    #[test]
    fn an_idle_daemon_never_trims() {
        let mut t = IdleTrim::default();
        let (mut now, mut cpu) = (Instant::now(), Duration::ZERO);
        t.on_tick(now, cpu);
        let shares = [0.01; 40];
        assert!(drive(&mut t, &mut now, &mut cpu, &shares).is_empty());
    }

    #[test]
    fn never_trims_while_busy_and_a_pause_shorter_than_quiet_does_not_count() {
        let mut t = IdleTrim::default();
        let (mut now, mut cpu) = (Instant::now(), Duration::ZERO);
        t.on_tick(now, cpu);
        // A half-second pause in the middle of a transfer: no trim.
        let shares = [0.9, 0.9, 0.0, 0.9, 0.9, 0.9, 0.9];
        assert!(drive(&mut t, &mut now, &mut cpu, &shares).is_empty());
        // Two bursts: one trim after each.
        let shares = [0.0, 0.0, 0.0, 0.6, 0.0, 0.0, 0.0];
        assert_eq!(drive(&mut t, &mut now, &mut cpu, &shares), vec![1, 5]);
    }

    #[test]
    fn a_clock_that_does_not_advance_decides_nothing() {
        let mut t = IdleTrim::default();
        let now = Instant::now();
        t.on_tick(now, Duration::ZERO);
        assert!(!t.on_tick(now, 100 * MS));
        assert!(!t.on_tick(now - MS, 200 * MS));
    }
}
