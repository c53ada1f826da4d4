//! UDP probes that check the emulated path itself: round-trip time through a UDP echo,
//! and one-way loss by counting numbered datagrams. UDP, so no retransmission or
//! congestion control hides what the path does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Size of a probe datagram.
const PROBE: usize = 64;

/// A UDP socket bound to `addr` in namespace `ns` (this process's when `None`).
pub fn udp_socket(ns: Option<&str>, addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind = move || {
        let s = std::net::UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(s)
    };
    let s = match ns {
        None => bind()?,
        Some(ns) => crate::wanem::netns::run_in(ns, bind)
            .map_err(|e| std::io::Error::other(e.to_string()))??,
    };
    UdpSocket::from_std(s)
}

/// A UDP echo server; stops when dropped.
#[derive(Debug)]
pub struct UdpEcho {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpEcho {
    /// Echoes datagrams sent to `addr` in namespace `ns`.
    pub fn bind(ns: Option<&str>, addr: SocketAddr) -> std::io::Result<Self> {
        let sock = udp_socket(ns, addr)?;
        let addr = sock.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&buf[..n], from).await;
            }
        });
        Ok(Self { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `count` probes to the echo at `echo`, one every `interval`, from a socket bound
/// to `from` in namespace `ns`; returns the round-trip times of those that came back.
pub async fn rtt(
    ns: Option<&str>,
    from: SocketAddr,
    echo: SocketAddr,
    count: u32,
    interval: Duration,
) -> std::io::Result<Vec<Duration>> {
    let sock = Arc::new(udp_socket(ns, from)?);
    let start = Instant::now();
    let sender = {
        let sock = Arc::clone(&sock);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            for seq in 0..count {
                tick.tick().await;
                let mut p = [0u8; PROBE];
                let sent = start.elapsed().as_nanos() as u64;
                p[..8].copy_from_slice(&sent.to_be_bytes());
                p[8..12].copy_from_slice(&seq.to_be_bytes());
                sock.send_to(&p, echo).await?;
            }
            Ok::<_, std::io::Error>(())
        })
    };
    let mut rtts = Vec::with_capacity(count as usize);
    // Every probe is sent by then, and one more second lets the slowest come back.
    let give_up = start + interval * count + Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    while rtts.len() < count as usize {
        let left = give_up.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if n >= 12 => {
                let mut sent = [0u8; 8];
                sent.copy_from_slice(&buf[..8]);
                let sent = Duration::from_nanos(u64::from_be_bytes(sent));
                rtts.push(start.elapsed().saturating_sub(sent));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    sender.abort();
    Ok(rtts)
}

/// Sends `count` numbered datagrams from `from` (in `ns_tx`) to `to` (bound in `ns_rx`),
/// `pps` per second, and returns how many distinct ones arrived.
pub async fn one_way_delivery(
    (ns_tx, from): (Option<&str>, SocketAddr),
    (ns_rx, to): (Option<&str>, SocketAddr),
    count: u32,
    pps: u32,
    settle: Duration,
) -> std::io::Result<u32> {
    let rx = udp_socket(ns_rx, to)?;
    let tx = udp_socket(ns_tx, from)?;
    let got = Arc::new(AtomicU32::new(0));
    let receiver = {
        let got = Arc::clone(&got);
        tokio::spawn(async move {
            let mut seen = vec![false; count as usize];
            let mut buf = [0u8; 2048];
            while let Ok((n, _)) = rx.recv_from(&mut buf).await {
                if n < 4 {
                    continue;
                }
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if let Some(s) = seen.get_mut(seq).filter(|s| !**s) {
                    *s = true;
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // Bursts every millisecond, so the pace holds without a timer per datagram.
    let per_ms = pps.div_ceil(1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut seq = 0u32;
    while seq < count {
        tick.tick().await;
        for _ in 0..per_ms.min(count - seq) {
            let mut p = [0u8; PROBE];
            p[..4].copy_from_slice(&seq.to_be_bytes());
            tx.send_to(&p, to).await?;
            seq += 1;
        }
    }
    // Lost datagrams never come, so wait a fixed time for the stragglers.
    let deadline = Instant::now() + settle;
    while got.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.abort();
    Ok(got.load(Ordering::Relaxed))
}
