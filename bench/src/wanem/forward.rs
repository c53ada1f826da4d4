//! The forwarding loop of one direction: reads packets from one TUN device, runs them
//! through a [`Link`], writes them to the other device when they are due. One OS thread
//! per direction, sleeping in `ppoll` until a packet arrives or the next one is due (no
//! sleep per packet), and stopping within `MAX_WAIT` (20 ms) of the stop flag being raised.
//!
//! Owns the I/O only; every decision about a packet is the link's.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::link::{Link, LinkStats, PortStats};

/// The longest the loop sleeps without looking at the stop flag.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// Packets read in one go before due packets are written, so a flood on the input cannot
/// hold back delivery.
const READ_BATCH: usize = 64;

/// Buffers kept for reuse; enough for a full bottleneck queue at common settings without
/// allocating per packet.
const POOL_MAX: usize = 16_384;

/// Counters of one direction, shared with whoever watches the emulator.
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    lost: AtomicU64,
    queue_dropped: AtomicU64,
    port_matched: AtomicU64,
    port_lost: AtomicU64,
    malformed: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    write_errors: AtomicU64,
    /// Per port rule: matched, lost, kept bytes.
    ports: Vec<[AtomicU64; 3]>,
}

/// A snapshot of one direction's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// What the link did with the packets.
    pub link: LinkStats,
    /// Packets the output device refused.
    pub write_errors: u64,
}

impl Counters {
    /// Counters for a link with `rules` per-port rules.
    pub fn with_ports(rules: usize) -> Self {
        Self {
            ports: (0..rules).map(|_| Default::default()).collect(),
            ..Self::default()
        }
    }

    fn publish_ports(&self, ports: &[PortStats]) {
        for (c, p) in self.ports.iter().zip(ports) {
            c[0].store(p.matched, Ordering::Relaxed);
            c[1].store(p.lost, Ordering::Relaxed);
            c[2].store(p.kept_bytes, Ordering::Relaxed);
        }
    }

    /// The current values of the per-port rules, in the rules' order.
    pub fn port_snapshot(&self) -> Vec<PortStats> {
        self.ports
            .iter()
            .map(|c| PortStats {
                matched: c[0].load(Ordering::Relaxed),
                lost: c[1].load(Ordering::Relaxed),
                kept_bytes: c[2].load(Ordering::Relaxed),
            })
            .collect()
    }

    fn publish(&self, s: LinkStats) {
        self.received.store(s.received, Ordering::Relaxed);
        self.lost.store(s.lost, Ordering::Relaxed);
        self.queue_dropped.store(s.queue_dropped, Ordering::Relaxed);
        self.port_matched.store(s.port_matched, Ordering::Relaxed);
        self.port_lost.store(s.port_lost, Ordering::Relaxed);
        self.malformed.store(s.malformed, Ordering::Relaxed);
        self.delivered.store(s.delivered, Ordering::Relaxed);
        self.delivered_bytes
            .store(s.delivered_bytes, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            link: LinkStats {
                received: self.received.load(Ordering::Relaxed),
                lost: self.lost.load(Ordering::Relaxed),
                queue_dropped: self.queue_dropped.load(Ordering::Relaxed),
                port_matched: self.port_matched.load(Ordering::Relaxed),
                port_lost: self.port_lost.load(Ordering::Relaxed),
                malformed: self.malformed.load(Ordering::Relaxed),
                delivered: self.delivered.load(Ordering::Relaxed),
                delivered_bytes: self.delivered_bytes.load(Ordering::Relaxed),
            },
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }
}

/// The two ends of one direction.
pub(super) struct Ends {
    pub(super) input: Arc<tun::Device>,
    pub(super) output: Arc<tun::Device>,
    /// Largest packet the devices carry.
    pub(super) mtu: usize,
}

/// Runs until `stop` is raised. Errors reading the input end the loop (the device is gone).
pub(super) fn run(ends: Ends, mut link: Link, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let in_fd = ends.input.as_raw_fd();
    // Room for any packet the device may hand us; larger ones would be truncated.
    let buf_len = ends.mtu + 64;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = link
            .next_deadline()
            .map_or(MAX_WAIT, |d| d.saturating_duration_since(now).min(MAX_WAIT));
        // With a packet already due, only peek at the input (a read that finds nothing
        // costs one syscall) and go on to deliver.
        let readable = wait.is_zero() || wait_readable(in_fd, wait);
        if readable {
            let now = Instant::now();
            for _ in 0..READ_BATCH {
                let mut buf = pool.pop().unwrap_or_else(|| vec![0; buf_len]);
                match ends.input.recv(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        if let Err(d) = link.ingress(now, buf) {
                            recycle(&mut pool, d.packet, buf_len);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        recycle(&mut pool, buf, buf_len);
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        recycle(&mut pool, buf, buf_len);
                    }
                    Err(e) => {
                        eprintln!("wanem: reading the tun device failed, forwarding stops: {e}");
                        return;
                    }
                }
            }
        }
        let now = Instant::now();
        while let Some(p) = link.poll_egress(now) {
            if ends.output.send(&p).is_err() {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
            }
            recycle(&mut pool, p, buf_len);
        }
        counters.publish(link.stats());
        counters.publish_ports(link.port_stats());
    }
}

fn recycle(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>, len: usize) {
    if pool.len() < POOL_MAX {
        buf.resize(len, 0);
        pool.push(buf);
    }
}

/// Waits up to `timeout` (nanosecond precision, unlike `poll`'s milliseconds) for `fd` to
/// become readable.
fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
    let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    r > 0
}
