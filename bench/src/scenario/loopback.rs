//! Loopback throughput: bulk TCP through a two-site tunnel on this machine's loopback
//! versus the same client and server connected directly, with 1 and 8 parallel streams,
//! upload and download; the tunnel's channel over QUIC/UDP and, in its own tunnel, over the
//! TCP transport. Each tunnel figure is measured right after its direct baseline;
//! single-stream figures also against rathole's encrypted transports (when installed:
//! `tls`, the reference, and `noise`), run between the two, so direct, rathole and the
//! tunnels are measured back to back.

use std::time::Duration;

use super::{Env, loopback_tunnel, loopback_tunnel_over, mbps};
use crate::daemon::ChannelTransport;
use crate::error::{BenchError, IoContext};
use crate::load::Target;
use crate::load::throughput::{self, Direction, Spec, quiesce};
use crate::rathole;
use crate::report::{Record, Report};

/// The target for throughput through the tunnel over rathole's (issue 14; issue 12 asks
/// the TCP transport for at least 1×).
const TARGET_VS_RATHOLE: &str = "target ≥ 1.25×";

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
    /// Directions whose single-stream figure is also measured through rathole (skipped
    /// with a note when it is not installed); empty for none.
    pub rathole: Vec<Direction>,
}

impl Opts {
    /// Quick: short windows, rathole on upload only (it must add under 3 s); full: 1 s
    /// warm-up, 5 s windows, rathole both ways.
    pub fn for_env(env: &Env) -> Self {
        Self {
            streams: vec![1, 8],
            directions: vec![Direction::Upload, Direction::Download],
            warmup: env.pick(Duration::from_millis(300), Duration::from_secs(1)),
            duration: env.pick(Duration::from_millis(700), Duration::from_secs(5)),
            rathole: env.pick(
                vec![Direction::Upload],
                vec![Direction::Upload, Direction::Download],
            ),
        }
    }
}

/// Runs the scenario with `opts`.
pub async fn run(env: &Env, opts: &Opts, report: &mut Report) -> Result<(), BenchError> {
    let (server, quic) = loopback_tunnel(env).await?;
    let tcp = match loopback_tunnel_over(env, &server, ChannelTransport::Tcp).await {
        Ok(t) => t,
        Err(e) => {
            let _ = quic.stop().await;
            return Err(e);
        }
    };
    let direct = Target::direct(server.addr());
    let sink = server.received();
    let compared = |d: Direction| opts.rathole.contains(&d) && opts.directions.contains(&d);
    let ratholes = if opts.streams.contains(&1) && opts.directions.iter().any(|&d| compared(d)) {
        rathole::all_for_comparison("loopback", server.addr(), report).await
    } else {
        Vec::new()
    };
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
                let mut references = Vec::new();
                if streams == 1 && compared(direction) {
                    for r in &ratholes {
                        match measure(r.entry(), &r.flavor().label()).await {
                            Ok(out) => references.push((r.flavor(), out)),
                            Err(e) => {
                                eprintln!("bench: {e}");
                                report.push(rathole::skipped_record(
                                    "loopback",
                                    format!("{}: {}", r.flavor().label(), rathole::skip_note(&e)),
                                ));
                            }
                        }
                    }
                }
                let tunnels = [
                    (
                        ChannelTransport::Quic,
                        measure(quic.entry(), "tunnel").await?,
                    ),
                    (
                        ChannelTransport::Tcp,
                        measure(tcp.entry(), "tunnel over tcp").await?,
                    ),
                ];
                let record = |metric: &str, value: f64| {
                    Record::new("loopback", metric, mbps(value), "Mbit/s")
                        .param("streams", streams)
                        .param("direction", direction.as_str())
                };
                for (transport, tun) in &tunnels {
                    // The QUIC row keeps its name from earlier runs.
                    let metric = match transport {
                        ChannelTransport::Quic => "throughput",
                        ChannelTransport::Tcp => "tcp_throughput",
                    };
                    report.push(
                        record(metric, tun.bits_per_sec)
                            .param("transport", transport.as_str())
                            .baseline("direct", mbps(base.bits_per_sec)),
                    );
                }
                for (flavor, rh) in &references {
                    report.push(
                        record("rathole_throughput", rh.bits_per_sec)
                            .param("transport", flavor.as_str())
                            .baseline("direct", mbps(base.bits_per_sec)),
                    );
                    for (transport, tun) in &tunnels {
                        report.push(
                            record("throughput_vs_rathole", tun.bits_per_sec)
                                .param("transport", transport.as_str())
                                .baseline(&flavor.label(), mbps(rh.bits_per_sec))
                                .note(TARGET_VS_RATHOLE),
                        );
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let stopped = quic.stop().await;
    let stopped_tcp = tcp.stop().await;
    drop(ratholes);
    result.and(stopped).and(stopped_tcp)
}
