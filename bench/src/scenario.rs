//! The scenarios: what each measures, against which baseline, with which settings in quick
//! and full mode. Each pushes its records as it measures them, so a failure half way keeps
//! what was measured before it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::daemon::{ChannelTransport, Placement, Tunnel, TunnelOpts};
use crate::error::{BenchError, IoContext};
use crate::load::BenchServer;
use crate::report::Report;

pub mod channels;
pub mod connrate;
pub mod emulator;
pub mod latency;
pub mod loopback;
pub mod memory;
pub mod nat;
pub mod udp;
pub mod wan;

/// A scenario the runner can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Bulk TCP throughput through a loopback tunnel vs direct and rathole, 1, 4 and 8 streams,
    /// both ways, with CPU-seconds per GB and peak RSS of the forwarders.
    Loopback,
    /// 64-byte request/response latency through the tunnel vs direct (p50, p99).
    Latency,
    /// Connections per second (open, one exchange, close; 50 clients) through the tunnel vs direct.
    Connrate,
    /// Daemon RSS idle and with many idle forwarded connections.
    Memory,
    /// Validation of the WAN emulator: RTT, loss, rate cap and its own forwarding ceiling.
    Emulator,
    /// The WAN grid: tunnel (per congestion controller) vs plain TCP across the emulated link.
    Wan,
    /// The same upload through 1, 2 and 4 dataChannels, and 4 with one on a worse path.
    Channels,
    /// Behind NAT: direct vs punched vs relayed tunnels on the real-NAT rig (throughput,
    /// latency, time to first channel).
    Nat,
    /// UDP apps: datagram round trips and windowed echo throughput through the tunnel
    /// (over QUIC and over the TCP transport) vs direct, with loss.
    Udp,
}

impl Scenario {
    /// Every scenario, in the order a full run does them.
    pub const ALL: [Self; 9] = [
        Self::Loopback,
        Self::Latency,
        Self::Udp,
        Self::Connrate,
        Self::Memory,
        Self::Emulator,
        Self::Wan,
        Self::Channels,
        Self::Nat,
    ];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Latency => "latency",
            Self::Connrate => "connrate",
            Self::Memory => "memory",
            Self::Emulator => "emulator",
            Self::Wan => "wan",
            Self::Channels => "channels",
            Self::Nat => nat::NAME,
            Self::Udp => "udp",
        }
    }

    /// Whether it needs root (network namespaces, TUN devices, nftables).
    pub fn needs_root(self) -> bool {
        matches!(
            self,
            Self::Emulator | Self::Wan | Self::Channels | Self::Nat
        )
    }
}

/// The WAN grid: every combination of these is one path.
#[derive(Debug, Clone, PartialEq)]
pub struct WanGrid {
    /// Round-trip times in milliseconds.
    pub rtts_ms: Vec<u64>,
    /// Loss rates in percent (per direction).
    pub losses_pct: Vec<f64>,
    /// Rate caps in Mbit/s; `None` for uncapped.
    pub caps_mbps: Vec<Option<u64>>,
    /// Congestion controllers of the tunnel (`tunnel.congestionControl`).
    pub tunnel_cc: Vec<String>,
    /// Warm-up before each measurement window.
    pub warmup: Duration,
    /// Length of each measurement window.
    pub duration: Duration,
}

impl WanGrid {
    /// The grid of issue 5: RTT {20, 100, 200} ms × loss {0, 0.5, 1, 2, 5} % × {uncapped,
    /// 100 Mbit/s}, the tunnel with cubic and with bbr, plus plain TCP cubic and bbr: 30
    /// paths × 4 transports = 120 measurements of 2 s warm-up + 5 s window.
    ///
    /// Budget ≤ ~20 min: 120 × 7 s = 14 min measuring, plus per measurement ~0.5 s of
    /// settling (in-flight bytes drain) and per tunnel ~1.5–2.5 s to start and stop two
    /// daemons (key derivation, discovery, dial across the emulated path), plus per path
    /// ~1 s for the emulator and the RTT probe: about 17–19 min in all. 2 s of warm-up
    /// covers slow start (or bbr's startup) to ~300 Mbit/s even at 200 ms (about 9 round
    /// trips of doubling); 5 s windows keep the run inside the budget.
    pub fn full() -> Self {
        Self {
            rtts_ms: vec![20, 100, 200],
            losses_pct: vec![0.0, 0.5, 1.0, 2.0, 5.0],
            caps_mbps: vec![None, Some(100)],
            tunnel_cc: vec!["cubic".into(), "bbr".into()],
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(5),
        }
    }

    /// One short path, for the smoke run.
    pub fn quick() -> Self {
        Self {
            rtts_ms: vec![20],
            losses_pct: vec![1.0],
            caps_mbps: vec![Some(100)],
            tunnel_cc: vec!["cubic".into(), "bbr".into()],
            warmup: Duration::from_millis(500),
            duration: Duration::from_millis(1500),
        }
    }
}

/// What every scenario needs.
#[derive(Debug, Clone)]
pub struct Env {
    /// The wovenetd binary.
    pub wovenetd: PathBuf,
    /// This suite's own binary, started as a helper process (`serve`) where one process
    /// would run out of file descriptors; `None` keeps everything in-process.
    pub helper: Option<PathBuf>,
    /// Short runs, few settings.
    pub quick: bool,
    /// The WAN grid.
    pub wan: WanGrid,
}

impl Env {
    /// `quick` if quick mode, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// Runs `scenario`, adding its records to `report`.
pub async fn run(scenario: Scenario, env: &Env, report: &mut Report) -> Result<(), BenchError> {
    match scenario {
        Scenario::Loopback => loopback::run(env, &loopback::Opts::for_env(env), report).await,
        Scenario::Latency => latency::run(env, report).await,
        Scenario::Connrate => connrate::run(env, report).await,
        Scenario::Memory => memory::run(env, report).await,
        Scenario::Emulator => emulator::run(env, report).await,
        Scenario::Wan => wan::run(env, report).await,
        Scenario::Channels => channels::run(env, report).await,
        Scenario::Nat => nat::run(env, &nat::Opts::for_env(env), report).await,
        Scenario::Udp => udp::run(env, report).await,
    }
}

pub use crate::daemon::READY;

/// The app server on 127.0.0.1 and a two-site tunnel on loopback forwarding to it: the
/// setup of every loopback scenario.
pub async fn loopback_tunnel(env: &Env) -> Result<(BenchServer, Tunnel), BenchError> {
    let server = BenchServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .ctx(|| "starting the app server".into())?;
    let tunnel = Tunnel::start(
        &env.wovenetd,
        server.addr(),
        &Placement::Loopback,
        None,
        READY,
    )
    .await?;
    Ok((server, tunnel))
}

/// A second tunnel to `server`, its channel over `transport` (for the transport rows).
pub async fn loopback_tunnel_over(
    env: &Env,
    server: &BenchServer,
    transport: ChannelTransport,
) -> Result<Tunnel, BenchError> {
    let opts = TunnelOpts {
        transport,
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
}

/// Bits per second as Mbit/s.
pub fn mbps(bits_per_sec: f64) -> f64 {
    bits_per_sec / 1e6
}

/// Whether the kernel offers TCP congestion controller `cc` (e.g. `bbr`).
pub fn kernel_has_cc(cc: &str) -> bool {
    let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .is_ok_and(|s| s.split_whitespace().any(|c| c == cc));
    // A controller built as a module is listed only once loaded, and asking for it on a
    // socket loads it (as root): without this, tcp-bbr would be skipped on a fresh boot.
    listed
        || socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .and_then(|s| s.set_tcp_congestion(cc.as_bytes()))
            .is_ok()
}
