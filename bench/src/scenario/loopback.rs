//! Loopback throughput: bulk TCP through a two-site tunnel on this machine's loopback
//! versus the same client and server connected directly, with 1 and 8 parallel streams,
//! upload and download. Each tunnel figure is measured right after its direct baseline;
//! single-stream figures also against rathole's noise transport (when installed), run
//! between the two, so direct, rathole and the tunnel are measured back to back.

use std::time::Duration;

use super::{Env, loopback_tunnel, mbps};
use crate::error::{BenchError, IoContext};
use crate::load::Target;
use crate::load::throughput::{self, Direction, Spec, quiesce};
use crate::rathole;
use crate::report::{Record, Report};

/// The target for single-stream throughput through the tunnel over rathole's.
const TARGET_VS_RATHOLE: &str = "target ≥ 1.5×";

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
    let (server, tunnel) = loopback_tunnel(env).await?;
    let direct = Target::direct(server.addr());
    let sink = server.received();
    let compared = |d: Direction| opts.rathole.contains(&d) && opts.directions.contains(&d);
    let rathole = if opts.streams.contains(&1) && opts.directions.iter().any(|&d| compared(d)) {
        rathole::for_comparison("loopback", server.addr(), report).await
    } else {
        None
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
                let reference = match &rathole {
                    Some(r) if streams == 1 && compared(direction) => {
                        Some(measure(r.entry(), "rathole").await)
                    }
                    _ => None,
                };
                let tun = measure(tunnel.entry(), "tunnel").await?;
                let record = |metric: &str, value: f64| {
                    Record::new("loopback", metric, mbps(value), "Mbit/s")
                        .param("streams", streams)
                        .param("direction", direction.as_str())
                };
                report.push(
                    record("throughput", tun.bits_per_sec)
                        .baseline("direct", mbps(base.bits_per_sec)),
                );
                match reference {
                    None => {}
                    Some(Ok(rh)) => {
                        let name = format!("rathole-{}", rathole::TRANSPORT);
                        report.push(
                            record("rathole_throughput", rh.bits_per_sec)
                                .param("transport", rathole::TRANSPORT)
                                .baseline("direct", mbps(base.bits_per_sec)),
                        );
                        report.push(
                            record("throughput_vs_rathole", tun.bits_per_sec)
                                .baseline(&name, mbps(rh.bits_per_sec))
                                .note(TARGET_VS_RATHOLE),
                        );
                    }
                    Some(Err(e)) => {
                        eprintln!("bench: {e}");
                        report.push(rathole::skipped_record("loopback", rathole::skip_note(&e)));
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let stopped = tunnel.stop().await;
    drop(rathole);
    result.and(stopped)
}
