//! The WAN grid: for every path (RTT × loss × rate cap) the emulator joins two namespaces;
//! plain TCP (cubic, and bbr when the kernel has it) crosses the emulated link directly,
//! then the tunnel (once per `tunnel.congestionControl`) carries the same upload: the
//! daemons run inside the namespaces, only QUIC crosses the emulated link (MQTT takes the
//! control link), and the apps talk TCP on each side's loopback.
//!
//! Baseline of every figure: plain TCP with cubic on the same path in the same run.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::{Env, READY, kernel_has_cc, mbps};
use crate::daemon::{Placement, Tunnel, wan_ports};
use crate::error::{BenchError, IoContext};
use crate::load::probe::{self, UdpEcho};
use crate::load::throughput::{self, Direction, Spec, quiesce};
use crate::load::{BenchServer, Target};
use crate::report::{Failure, Record, Report};
use crate::stats::quantile;
use crate::wanem::{ADDR_A, ADDR_B, LinkStats, Wanem, WanemConfig};

/// Port of the RTT probe's echo in namespace b.
const PROBE_PORT: u16 = 7;

/// One path of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Path {
    /// Round-trip time in ms.
    pub rtt_ms: u64,
    /// Loss in percent per direction.
    pub loss_pct: f64,
    /// Rate cap in Mbit/s.
    pub cap_mbps: Option<u64>,
}

impl Path {
    /// The emulator settings for this path.
    pub fn config(&self) -> WanemConfig {
        WanemConfig::new(Duration::from_millis(self.rtt_ms), self.loss_pct / 100.0)
            .with_rate(self.cap_mbps.map(|m| m * 1_000_000))
    }

    fn record(&self, transport: &str, value: f64) -> Record {
        Record::new("wan", "throughput", value, "Mbit/s")
            .param("rtt_ms", self.rtt_ms)
            .param("loss_pct", self.loss_pct)
            .param(
                "cap_mbps",
                self.cap_mbps.map_or("none".to_owned(), |c| c.to_string()),
            )
            .param("transport", transport)
    }
}

/// Every path of the grid, loss varying fastest.
pub fn paths(grid: &super::WanGrid) -> Vec<Path> {
    let mut out = Vec::new();
    for &rtt_ms in &grid.rtts_ms {
        for &cap_mbps in &grid.caps_mbps {
            for &loss_pct in &grid.losses_pct {
                out.push(Path {
                    rtt_ms,
                    loss_pct,
                    cap_mbps,
                });
            }
        }
    }
    out
}

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
    let tcp_ccs: Vec<&str> = ["cubic", "bbr"]
        .into_iter()
        .filter(|cc| *cc == "cubic" || kernel_has_cc(cc))
        .collect();
    for path in paths(&env.wan) {
        eprintln!(
            "bench: wan path rtt={}ms loss={}% cap={}",
            path.rtt_ms,
            path.loss_pct,
            path.cap_mbps
                .map_or("none".into(), |c| format!("{c}Mbit/s"))
        );
        match run_path(env, &path, &tcp_ccs, report).await {
            Ok(()) => {}
            // The emulator not starting is the environment, not this path: every other
            // path would fail the same way.
            Err(e @ BenchError::Wanem(_)) => return Err(e),
            // One broken path must not cost the rest of a long grid.
            Err(e) => {
                eprintln!("bench: wan path {path:?} failed: {e}");
                report.failures.push(Failure::new(
                    "wan",
                    format!(
                        "path rtt {} ms, loss {} %, cap {:?} Mbit/s: {e}",
                        path.rtt_ms, path.loss_pct, path.cap_mbps
                    ),
                ));
            }
        }
    }
    Ok(())
}

async fn run_path(
    env: &Env,
    path: &Path,
    tcp_ccs: &[&str],
    report: &mut Report,
) -> Result<(), BenchError> {
    let wan = Wanem::start(path.config())?;
    let (ns_a, ns_b) = (wan.ns_a().name().to_owned(), wan.ns_b().name().to_owned());
    // Listens on every address of namespace b: 10.77.0.2 for plain TCP across the link,
    // 127.0.0.1 for site b's exposed app.
    let server = BenchServer::bind_in(
        &ns_b,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, wan_ports::APP)),
    )
    .ctx(|| "starting the app server in namespace b".into())?;
    let sink = server.received();
    let measured_rtt = {
        let echo = UdpEcho::bind(Some(&ns_b), (ADDR_B, PROBE_PORT).into())
            .ctx(|| "starting the udp echo".into())?;
        let mut s = probe::rtt(
            Some(&ns_a),
            (ADDR_A, 0).into(),
            echo.addr(),
            10,
            Duration::from_millis(10),
        )
        .await
        .ctx(|| "probing the rtt".into())?;
        s.sort_unstable();
        quantile(&s, 0.5).map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
    };
    let spec = Spec {
        streams: 1,
        direction: Direction::Upload,
        warmup: env.wan.warmup,
        duration: env.wan.duration,
    };
    let settle = async || {
        quiesce(&sink, Duration::from_millis(300), Duration::from_secs(10)).await;
    };
    let mut tcp_cubic = None;
    for cc in tcp_ccs {
        let target = Target::direct((ADDR_B, wan_ports::APP).into())
            .in_netns(&ns_a)
            .with_congestion(Some((*cc).to_owned()));
        let before = wan.stats()[0].link;
        let out = throughput::run(&target, &sink, &spec).await;
        let after = wan.stats()[0].link;
        settle().await;
        // Like a tunnel's, one failing transport is reported and the path goes on.
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                eprintln!("bench: tcp-{cc} failed on {path:?}: {e}");
                report.failures.push(
                    Failure::new(
                        "wan",
                        format!(
                            "tcp-{cc} at rtt {} ms, loss {} %, cap {:?} Mbit/s: {e}",
                            path.rtt_ms, path.loss_pct, path.cap_mbps
                        ),
                    )
                    .with_params(path.record(&format!("tcp-{cc}"), 0.0).params),
                );
                continue;
            }
        };
        let v = mbps(out.bits_per_sec);
        // tcp-cubic is the baseline itself, and comes first.
        report.push(with_base(
            link_counts(path.record(&format!("tcp-{cc}"), v), before, after)
                .param("measured_rtt_ms", measured_rtt),
            tcp_cubic,
        ));
        if *cc == "cubic" {
            tcp_cubic = Some(v);
        }
    }
    for cc in &env.wan.tunnel_cc {
        // One failing transport is reported and the grid goes on.
        match measure_tunnel(env, cc, (&ns_a, &ns_b), &wan, (&sink, &spec)).await {
            Ok((out, before, after)) => {
                report.push(with_base(
                    link_counts(
                        path.record(&format!("tunnel-{cc}"), mbps(out.bits_per_sec)),
                        before,
                        after,
                    )
                    .param("measured_rtt_ms", measured_rtt),
                    tcp_cubic,
                ));
            }
            Err(e) => {
                eprintln!("bench: tunnel-{cc} failed on {path:?}: {e}");
                report.failures.push(
                    Failure::new(
                        "wan",
                        format!(
                            "tunnel-{cc} at rtt {} ms, loss {} %, cap {:?} Mbit/s: {e}",
                            path.rtt_ms, path.loss_pct, path.cap_mbps
                        ),
                    )
                    .with_params(path.record(&format!("tunnel-{cc}"), 0.0).params),
                );
            }
        }
        settle().await;
    }
    Ok(())
}

/// What the a→b direction of the link did during one measurement (warm-up included): the
/// packets offered, those the random loss took and those the full bottleneck queue
/// dropped. A sender that overshoots the cap shows as many queue drops.
fn link_counts(r: Record, before: LinkStats, after: LinkStats) -> Record {
    let offered = after.received - before.received;
    let lost = after.lost - before.lost;
    let queue_drops = after.queue_dropped - before.queue_dropped;
    let dropped_pct = if offered > 0 {
        ((lost + queue_drops) as f64 * 1000.0 / offered as f64).round() / 10.0
    } else {
        0.0
    };
    r.param("link_pkts", offered)
        .param("queue_drops", queue_drops)
        .param("dropped_pct", dropped_pct)
}

/// Starts the tunnel with congestion controller `cc` in the namespaces, measures one
/// upload through it, stops it. On failure the sites' files are kept and named.
async fn measure_tunnel(
    env: &Env,
    cc: &str,
    (ns_a, ns_b): (&str, &str),
    wan: &Wanem,
    (sink, spec): (&Arc<AtomicU64>, &Spec),
) -> Result<(throughput::Outcome, LinkStats, LinkStats), BenchError> {
    let mut tunnel = Tunnel::start(
        &env.wovenetd,
        SocketAddr::from((Ipv4Addr::LOCALHOST, wan_ports::APP)),
        &Placement::Wan {
            a: ns_a.to_owned(),
            b: ns_b.to_owned(),
        },
        Some(cc),
        READY,
    )
    .await?;
    let before = wan.stats()[0].link;
    let out = throughput::run(tunnel.entry(), sink, spec).await;
    let after = wan.stats()[0].link;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let (offered, qd) = (
                after.received - before.received,
                after.queue_dropped - before.queue_dropped,
            );
            let why = format!(
                "{e}; a→b link meanwhile: {offered} packets offered, {} lost at random, \
                 {qd} dropped by the full queue; {}",
                after.lost - before.lost,
                tunnel.post_mortem()
            );
            let _ = tunnel.stop().await;
            return Err(BenchError::Io {
                context: format!("tunnel-{cc} across the emulated link"),
                source: std::io::Error::other(why),
            });
        }
    };
    tunnel.stop().await?;
    Ok((out, before, after))
}

fn with_base(r: Record, tcp_cubic: Option<f64>) -> Record {
    match tcp_cubic {
        Some(b) => r.baseline("tcp-cubic", b),
        None => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_expands_to_every_combination() {
        let grid = super::super::WanGrid::full();
        let p = paths(&grid);
        assert_eq!(p.len(), 3 * 5 * 2);
        assert_eq!(
            p[0],
            Path {
                rtt_ms: 20,
                loss_pct: 0.0,
                cap_mbps: None
            }
        );
        // Loss varies fastest, then the cap, then the RTT.
        assert_eq!(p[1].loss_pct, 0.5);
        assert_eq!(p[5].cap_mbps, Some(100));
        assert_eq!(p[10].rtt_ms, 100);
        let last = p[29];
        assert_eq!(
            (last.rtt_ms, last.loss_pct, last.cap_mbps),
            (200, 5.0, Some(100))
        );
        let c = p[17].config();
        assert_eq!((p[17].rtt_ms, p[17].loss_pct), (100, 1.0));
        assert_eq!(c.rate_bps, Some(100_000_000));
        assert!((c.loss - 0.01).abs() < 1e-12);
    }

    #[test]
    fn the_full_grid_fits_the_time_budget() {
        let grid = super::super::WanGrid::full();
        let measurements = paths(&grid).len() * (2 + grid.tunnel_cc.len());
        assert_eq!(measurements, 120);
        // Generous overheads (see WanGrid::full): 1 s per measurement, 3 s more per
        // tunnel, 1.5 s per path.
        let tunnels = paths(&grid).len() * grid.tunnel_cc.len();
        let secs = measurements as f64 * ((grid.warmup + grid.duration).as_secs_f64() + 1.0)
            + tunnels as f64 * 3.0
            + paths(&grid).len() as f64 * 1.5;
        assert!(secs <= 21.0 * 60.0, "{secs} s");
    }
}
