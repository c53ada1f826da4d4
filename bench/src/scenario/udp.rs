//! UDP apps: 64-byte datagram round trips (one at a time) and windowed echo throughput
//! (1200-byte datagrams, at most 64 unanswered) to a UDP echo app, directly and
//! through a loopback tunnel whose channel runs over QUIC/UDP and over the TCP transport,
//! measured back to back. Loss is what never came back; on loopback the tunnel should
//! lose none (a lost datagram stalls the window for 200 ms, so loss also costs rate).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::{Env, READY};
use crate::daemon::{ChannelTransport, Placement, Tunnel, TunnelOpts};
use crate::error::{BenchError, IoContext};
use crate::load::BenchServer;
use crate::report::{Record, Report};
use crate::stats::{Summary, summarize};

/// Round-trip payload.
const SMALL: usize = 64;
/// Throughput payload: fits a QUIC DATAGRAM frame on a 1280-byte path.
const LARGE: usize = 1200;
/// Datagrams in flight at most in the throughput run.
const WINDOW: usize = 64;
/// How long the throughput run waits for an answer before counting the window lost.
const STALL: Duration = Duration::from_millis(200);

/// A UDP echo app on 127.0.0.1 (answers every datagram with itself).
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    async fn start() -> Result<Self, BenchError> {
        let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .ctx(|| "binding the UDP echo app".into())?;
        let addr = s.local_addr().ctx(|| "UDP echo address".into())?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client socket connected to `to`, answered at least once (the flow exists).
async fn client(to: SocketAddr) -> Result<UdpSocket, BenchError> {
    let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .ctx(|| "binding a UDP client".into())?;
    s.connect(to).await.ctx(|| format!("connecting to {to}"))?;
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < READY {
        let _ = s.send(b"hello").await;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf)).await
        {
            // Let late answers to earlier hellos arrive, then drop them.
            tokio::time::sleep(Duration::from_millis(250)).await;
            while s.try_recv(&mut buf).is_ok() {}
            return Ok(s);
        }
    }
    Err(BenchError::Udp(format!(
        "no UDP answer through {to} within {READY:?}"
    )))
}

/// Sequential round trips; a datagram not answered within a second is lost. `None`
/// when none was answered.
async fn round_trips(s: &UdpSocket, n: usize) -> (Option<Summary>, usize) {
    let mut samples = Vec::with_capacity(n);
    let mut lost = 0;
    let mut buf = [0u8; 2048];
    for i in 0..n {
        let mut msg = [0u8; SMALL];
        msg[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let t = Instant::now();
        if s.send(&msg).await.is_err() {
            lost += 1;
            continue;
        }
        let answered = loop {
            match tokio::time::timeout(Duration::from_secs(1), s.recv(&mut buf)).await {
                Ok(Ok(len)) if len == SMALL && buf[..8] == msg[..8] => break true,
                Ok(Ok(_)) => {} // a late answer to an earlier one
                _ => break false,
            }
        };
        if answered {
            samples.push(t.elapsed());
        } else {
            lost += 1;
        }
    }
    (summarize(&mut samples), lost)
}

/// Windowed echo for `window_time`: returns (answered datagrams, sent datagrams, seconds).
async fn windowed(s: &UdpSocket, window_time: Duration) -> (u64, u64, f64) {
    let msg = [0x5a_u8; LARGE];
    let mut buf = [0u8; 2048];
    let (mut sent, mut answered, mut in_flight) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    while start.elapsed() < window_time {
        while in_flight < WINDOW {
            if s.send(&msg).await.is_err() {
                break;
            }
            sent += 1;
            in_flight += 1;
        }
        match tokio::time::timeout(STALL, s.recv(&mut buf)).await {
            Ok(Ok(_)) => {
                answered += 1;
                in_flight -= 1;
            }
            // The window's datagrams are lost: start a new one.
            _ => in_flight = 0,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Answers still on their way count.
    let drain = Instant::now();
    while in_flight > 0 && drain.elapsed() < Duration::from_secs(1) {
        match tokio::time::timeout(STALL, s.recv(&mut buf)).await {
            Ok(Ok(_)) => {
                answered += 1;
                in_flight -= 1;
            }
            _ => break,
        }
    }
    (answered, sent, secs)
}

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
    let echo = Echo::start().await?;
    // The bench's TCP app, only for the tunnel's readiness check.
    let server = BenchServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .ctx(|| "starting the app server".into())?;
    let start = async |transport: ChannelTransport| {
        let opts = TunnelOpts {
            transport,
            udp_app: Some(echo.addr),
            ..TunnelOpts::default()
        };
        Tunnel::start_with(
            &env.wovenetd,
            server.addr(),
            &Placement::Loopback,
            &opts,
            READY,
        )
        .await
    };
    let quic = start(ChannelTransport::Quic).await?;
    let tcp = match start(ChannelTransport::Tcp).await {
        Ok(t) => t,
        Err(e) => {
            let _ = quic.stop().await;
            return Err(e);
        }
    };
    let rounds = env.pick(2_000, 20_000);
    let window_time = env.pick(Duration::from_secs(1), Duration::from_secs(5));
    let result = async {
        let mut paths = vec![("direct", None, echo.addr)];
        for (t, tunnel) in [
            (ChannelTransport::Quic, &quic),
            (ChannelTransport::Tcp, &tcp),
        ] {
            let entry = tunnel
                .udp_entry()
                .ok_or_else(|| BenchError::Udp("no UDP entry".into()))?;
            paths.push(("tunnel", Some(t), entry));
        }
        let mut base: Option<(Summary, f64)> = None;
        for (what, transport, to) in paths {
            let s = client(to).await?;
            let (rtt, lost) = round_trips(&s, rounds).await;
            let rtt = rtt.ok_or_else(|| {
                BenchError::Udp(format!("no round trip through {what} {to} was answered"))
            })?;
            let (answered, sent, secs) = windowed(&s, window_time).await;
            let rate = answered as f64 / secs;
            let mbps = rate * (LARGE * 8) as f64 / 1e6;
            let loss_pct = if sent == 0 {
                0.0
            } else {
                (sent - answered.min(sent)) as f64 * 100.0 / sent as f64
            };
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let with = |r: Record| {
                let r = r.param("path", what);
                match transport {
                    Some(t) => r.param("transport", t.as_str()),
                    None => r,
                }
            };
            let mut records = vec![
                with(Record::new("udp", "rtt_p50", us(rtt.p50), "µs"))
                    .param("size", SMALL)
                    .param("samples", rtt.count),
                with(Record::new("udp", "rtt_p99", us(rtt.p99), "µs")).param("size", SMALL),
                with(Record::new("udp", "rtt_lost", lost as f64, "count"))
                    .param("sent", rounds)
                    .note("target 0 on loopback"),
                with(Record::new("udp", "echo_throughput", mbps, "Mbit/s"))
                    .param("size", LARGE)
                    .param("window", WINDOW)
                    .note("echoed payload, one way"),
                with(Record::new("udp", "echo_loss", loss_pct, "%"))
                    .param("sent", sent)
                    .note("target 0 on loopback"),
            ];
            match &base {
                None => base = Some((rtt, mbps)),
                Some((b, bmbps)) => {
                    records[0] = records[0].clone().baseline("direct", us(b.p50));
                    records[1] = records[1].clone().baseline("direct", us(b.p99));
                    records[3] = records[3].clone().baseline("direct", *bmbps);
                    records.push(
                        with(Record::new(
                            "udp",
                            "added_p50",
                            us(rtt.p50) - us(b.p50),
                            "µs",
                        ))
                        .note("tunnel p50 minus direct p50"),
                    );
                }
            }
            for r in records {
                report.push(r);
            }
        }
        Ok(())
    }
    .await;
    let stopped = quic.stop().await;
    let stopped_tcp = tcp.stop().await;
    result.and(stopped).and(stopped_tcp)
}
