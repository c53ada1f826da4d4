//! Loopback throughput: bulk TCP through a two-site tunnel on this machine's loopback
//! versus the same client and server connected directly, with 1 and 8 parallel streams,
//! upload and download. Each tunnel figure is measured right after its direct baseline.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{Env, READY, mbps};
use crate::daemon::{Placement, Tunnel};
use crate::error::{BenchError, IoContext};
use crate::load::throughput::{self, Direction, Spec, quiesce};
use crate::load::{BenchServer, Target};
use crate::report::{Record, Report};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Parallel stream counts.
    pub streams: Vec<usize>,
    /// Directions.
    pub directions: Vec<Direction>,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Each measurement window.
    pub duration: Duration,
}

impl Opts {
    /// Quick: short windows; full: 1 s warm-up, 5 s windows.
    pub fn for_env(env: &Env) -> Self {
        Self {
            streams: vec![1, 8],
            directions: vec![Direction::Upload, Direction::Download],
            warmup: env.pick(Duration::from_millis(300), Duration::from_secs(1)),
            duration: env.pick(Duration::from_millis(700), Duration::from_secs(5)),
        }
    }
}

/// Runs the scenario with `opts`.
pub async fn run(env: &Env, opts: &Opts, report: &mut Report) -> Result<(), BenchError> {
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
    let direct = Target::direct(server.addr());
    let sink = server.received();
    let result = async {
        for &direction in &opts.directions {
            for &streams in &opts.streams {
                let spec = Spec {
                    streams,
                    direction,
                    warmup: opts.warmup,
                    duration: opts.duration,
                };
                let measure = async |t: &Target, what: &str| {
                    let out = throughput::run(t, &sink, &spec)
                        .await
                        .ctx(|| format!("{what} {streams}x{}", direction.as_str()))?;
                    quiesce(&sink, Duration::from_millis(200), Duration::from_secs(5)).await;
                    Ok::<_, BenchError>(out)
                };
                let base = measure(&direct, "direct").await?;
                let tun = measure(tunnel.entry(), "tunnel").await?;
                report.push(
                    Record::new("loopback", "throughput", mbps(tun.bits_per_sec), "Mbit/s")
                        .param("streams", streams)
                        .param("direction", direction.as_str())
                        .baseline("direct", mbps(base.bits_per_sec)),
                );
            }
        }
        Ok(())
    }
    .await;
    let stopped = tunnel.stop().await;
    result.and(stopped)
}
