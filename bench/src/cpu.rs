//! CPU time of processes (user + system, from `/proc/PID/stat`) and of the whole machine
//! (`/proc/stat`) over a measurement, as a share of one core: which of the processes on a path
//! ran out of CPU, and whether the machine did. The parsing and the arithmetic are pure; only
//! [`cpu_time`] and the span ends read `/proc`.

use std::time::{Duration, Instant};

/// User + system time in clock ticks from the text of `/proc/PID/stat` (fields 14 and 15,
/// counted after the command name, which is in parentheses and may hold spaces).
pub fn parse_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Busy and softirq ticks of the whole machine from the text of `/proc/stat` (its first,
/// `cpu` line: user nice system idle iowait irq softirq steal …; busy is all but idle and
/// iowait).
pub fn parse_machine(stat: &str) -> Option<Machine> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = v.as_slice().try_into().ok()?;
    Some(Machine {
        busy: user + nice + system + irq + softirq + steal,
        softirq,
    })
}

/// Ticks the whole machine spent busy, and of those in softirq (packet forwarding through
/// the namespaces, veth and bridges, is mostly that).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Machine {
    /// All but idle and iowait.
    pub busy: u64,
    /// Softirq.
    pub softirq: u64,
}

/// Clock ticks as time.
fn ticks(n: u64) -> Option<Duration> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(Duration::from_nanos(n.saturating_mul(1_000_000_000 / hz)))
}

/// CPU time used so far by process `pid`; `None` when it is gone or unreadable.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ticks(parse_ticks(&stat)?)
}

/// The whole machine's busy and softirq time so far.
fn machine_time() -> (Option<Duration>, Option<Duration>) {
    let m = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_machine(&s));
    (
        m.and_then(|m| ticks(m.busy)),
        m.and_then(|m| ticks(m.softirq)),
    )
}

/// What a span reads at each end: each process, then the machine's busy and softirq time.
fn snapshot(procs: &[(String, u32, Duration)]) -> Vec<Option<Duration>> {
    let (busy, softirq) = machine_time();
    procs
        .iter()
        .map(|(_, p, _)| cpu_time(*p))
        .chain([busy, softirq])
        .collect()
}

/// CPU use of named processes and of the whole machine, accumulated over one or more spans
/// of wall time.
#[derive(Debug, Clone, Default)]
pub struct CpuTally {
    /// (name, pid, CPU time counted).
    procs: Vec<(String, u32, Duration)>,
    /// The machine's busy and softirq time counted.
    machine: [Duration; 2],
    wall: Duration,
}

/// One span being measured: the CPU times at its start.
#[derive(Debug)]
pub struct Span {
    start: Instant,
    at_start: Vec<Option<Duration>>,
}

impl CpuTally {
    /// Tracks `procs` (name, pid).
    pub fn new(procs: &[(&str, u32)]) -> Self {
        Self {
            procs: procs
                .iter()
                .map(|&(n, p)| (n.to_owned(), p, Duration::ZERO))
                .collect(),
            machine: [Duration::ZERO; 2],
            wall: Duration::ZERO,
        }
    }

    /// Starts a span.
    pub fn begin(&self) -> Span {
        Span {
            start: Instant::now(),
            at_start: snapshot(&self.procs),
        }
    }

    /// Ends `span`, adding its wall time and each process's CPU time in it.
    pub fn end(&mut self, span: Span) {
        let now = snapshot(&self.procs);
        self.add(span.start.elapsed(), &span.at_start, &now);
    }

    /// Adds a span of `wall` time given the CPU times at its start and end: each process's,
    /// then the machine's busy and softirq time (what is unreadable at either end adds
    /// nothing).
    pub fn add(&mut self, wall: Duration, start: &[Option<Duration>], end: &[Option<Duration>]) {
        self.wall += wall;
        let slots = self
            .procs
            .iter_mut()
            .map(|(_, _, used)| used)
            .chain(self.machine.iter_mut());
        for (used, (s, e)) in slots.zip(start.iter().zip(end)) {
            if let (Some(s), Some(e)) = (s, e) {
                *used += e.saturating_sub(*s);
            }
        }
    }

    fn pct(&self, used: Duration) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall > 0.0 {
            used.as_secs_f64() / wall * 100.0
        } else {
            0.0
        }
    }

    /// Each process's CPU time over the wall time counted, in percent of one core.
    pub fn percent(&self) -> Vec<(String, f64)> {
        self.procs
            .iter()
            .map(|(n, _, used)| (n.clone(), self.pct(*used)))
            .collect()
    }

    /// The whole machine's busy and softirq time, in percent of one core.
    pub fn machine_percent(&self) -> (f64, f64) {
        (self.pct(self.machine[0]), self.pct(self.machine[1]))
    }

    /// `a 95 %, b 57 %, coturn 50 %, machine 190 % (softirq 30 %)`.
    pub fn text(&self) -> String {
        let (busy, softirq) = self.machine_percent();
        self.percent()
            .iter()
            .map(|(n, p)| format!("{n} {p:.0} %"))
            .chain([format!("machine {busy:.0} % (softirq {softirq:.0} %)")])
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_user_plus_system_even_with_spaces_in_the_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let stat = "42 (wove (net) d) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_ticks(stat), Some(325));
        assert_eq!(parse_ticks("42 (x) S 1"), None);
        assert_eq!(parse_ticks("garbage"), None);
    }

    #[test]
    fn the_machine_line_gives_busy_and_softirq_ticks() {
        let stat = "cpu  100 5 50 1000 20 3 40 2 0 0\ncpu0 50 2 25 500 10 1 20 1 0 0\nintr 1\n";
        assert_eq!(
            parse_machine(stat),
            Some(Machine {
                busy: 100 + 5 + 50 + 3 + 40 + 2,
                softirq: 40
            })
        );
        assert_eq!(parse_machine("cpu  1 2 3\n"), None);
        assert_eq!(parse_machine("intr 1\n"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_huge_pid_has_none() {
        assert!(cpu_time(std::process::id()).is_some());
        assert!(cpu_time(u32::MAX).is_none());
    }

    #[test]
    fn percent_is_cpu_over_wall_summed_over_spans() {
        let ms = Duration::from_millis;
        let mut t = CpuTally::new(&[("a", 1), ("coturn", 2)]);
        let (z, none) = (Some(ms(0)), None);
        t.add(
            ms(1000),
            &[Some(ms(100)), z, z, z],
            &[Some(ms(600)), Some(ms(250)), Some(ms(1500)), Some(ms(200))],
        );
        t.add(
            ms(1000),
            &[Some(ms(600)), none, z, none],
            &[Some(ms(1100)), Some(ms(900)), Some(ms(2000)), Some(ms(300))],
        );
        let p = t.percent();
        assert_eq!(p[0], ("a".to_owned(), 50.0));
        assert_eq!(
            p[1],
            ("coturn".to_owned(), 12.5),
            "an unreadable end adds nothing"
        );
        assert_eq!(t.machine_percent(), (175.0, 10.0));
        t.add(ms(500), &[z, z, z, z], &[z, Some(ms(250)), z, z]);
        assert_eq!(t.text(), "a 40 %, coturn 20 %, machine 140 % (softirq 8 %)");
        assert!(CpuTally::new(&[("x", 1)]).percent()[0].1 == 0.0);
    }
}
