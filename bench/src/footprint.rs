//! What the processes on a path cost over one measurement window: the CPU time they used
//! (for CPU-seconds per GB carried) and each one's peak resident memory. The peak is read
//! from `VmHWM` after resetting it (`/proc/PID/clear_refs`, which needs the process's
//! owner or root) when the window opens, so it is this window's peak, not the process's
//! lifetime's; when the reset is refused the lifetime peak is reported and marked so.

use std::time::Duration;

use crate::cpu::cpu_time;

/// `VmHWM` (peak resident set) in KiB from the text of `/proc/PID/status`.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU-seconds per (decimal) gigabyte: `cpu` spent carrying `bytes`; `None` for no bytes.
pub fn cpu_seconds_per_gb(cpu: Duration, bytes: u64) -> Option<f64> {
    (bytes > 0).then(|| cpu.as_secs_f64() / (bytes as f64 / 1e9))
}

fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// Resets the peak resident set of `pid` to its current one; false when refused.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// A window being measured over a set of processes.
#[derive(Debug)]
pub struct Window {
    pids: Vec<u32>,
    cpu_at_start: Vec<Option<Duration>>,
    peak_reset: bool,
}

/// What the processes used over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// CPU time (user + system) of all the processes together; a process unreadable at
    /// either end adds nothing.
    pub cpu: Duration,
    /// Each process's peak resident set in KiB, in the order given (`None`: unreadable).
    pub peak_rss_kib: Vec<Option<u64>>,
    /// Whether the peaks are this window's (the reset was allowed for every process) rather
    /// than each process's lifetime peak.
    pub peak_is_window: bool,
}

impl Usage {
    /// The largest of the peaks, in MiB.
    pub fn max_peak_mib(&self) -> Option<f64> {
        self.peak_rss_kib
            .iter()
            .flatten()
            .max()
            .map(|&k| k as f64 / 1024.0)
    }
}

impl Window {
    /// Opens a window over `pids`: resets their peaks and reads their CPU time.
    pub fn open(pids: &[u32]) -> Self {
        // Every process is reset, even after one refused.
        let refused = pids.iter().filter(|&&p| !reset_peak(p)).count();
        Self {
            pids: pids.to_vec(),
            cpu_at_start: pids.iter().map(|&p| cpu_time(p)).collect(),
            peak_reset: refused == 0,
        }
    }

    /// Counts CPU time from now on (peaks still count from [`Window::open`]): a transfer's
    /// warm-up can then be in the peak but not in the CPU time, which is set against the
    /// bytes of the measurement proper.
    pub fn restart_cpu(&mut self) {
        self.cpu_at_start = self.pids.iter().map(|&p| cpu_time(p)).collect();
    }

    /// Closes the window.
    pub fn close(self) -> Usage {
        let cpu = self
            .pids
            .iter()
            .zip(&self.cpu_at_start)
            .filter_map(|(&p, start)| Some(cpu_time(p)?.saturating_sub((*start)?)))
            .sum();
        Usage {
            cpu,
            peak_rss_kib: self.pids.iter().map(|&p| peak_kib(p)).collect(),
            peak_is_window: self.peak_reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peak_from_proc_status() {
        let status =
            "Name:\twovenetd\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51_234));
        assert_eq!(parse_vm_hwm("VmRSS:\t1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\tlots kB\n"), None);
    }

    #[test]
    fn cpu_per_gigabyte() {
        let v = cpu_seconds_per_gb(Duration::from_millis(1500), 500_000_000).unwrap();
        assert!((v - 3.0).abs() < 1e-9, "{v}");
        assert_eq!(cpu_seconds_per_gb(Duration::from_secs(1), 0), None);
    }

    #[test]
    fn a_window_over_this_process_sees_its_own_cpu_and_peak() {
        let me = std::process::id();
        let w = Window::open(&[me]);
        // Burn some CPU and touch 32 MiB so both figures move.
        let mut v = vec![0u8; 32 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = i as u8;
        }
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
        }
        std::hint::black_box((x, &v));
        let u = w.close();
        assert_eq!(u.peak_rss_kib.len(), 1);
        assert!(u.peak_rss_kib[0].unwrap() >= 32 << 10, "{u:?}");
        assert!(u.cpu > Duration::ZERO, "{u:?}");
    }
}
