//! Loopback throughput: bulk TCP through a two-site tunnel on this machine's loopback
//! versus the same client and server connected directly, with 1, 4 and 8 parallel streams
//! (quick: 1 and 4), upload and download; the tunnel's channel over QUIC/UDP and, in its
//! own tunnel, over the TCP transport. Each tunnel figure is measured right after its
//! direct baseline; 1- and 4-stream figures also against rathole's encrypted transports
//! (when installed: `tls`, the reference, and `noise`), run between the two, so direct,
//! rathole and the tunnels are measured back to back.
//!
//! Beside throughput, each forwarder's cost over the same transfer (issue 14): both
//! processes' CPU-seconds per GB carried, and the larger of their peak RSS.

use std::time::Duration;

use super::{Env, loopback_tunnel, loopback_tunnel_over, mbps};
use crate::daemon::ChannelTransport;
use crate::error::{BenchError, IoContext};
use crate::footprint::{Usage, cpu_seconds_per_gb};
use crate::load::Target;
use crate::load::throughput::{self, Direction, Spec, quiesce};
use crate::rathole;
use crate::report::{Record, Report};

/// The target for throughput through the tunnel over rathole's (issue 14; issue 12 asks
/// the TCP transport for at least 1×).
const TARGET_VS_RATHOLE: &str = "target ≥ 1.25×";
/// Issue 14's target for CPU time per byte carried.
const TARGET_CPU_VS_RATHOLE: &str = "target ≤ 0.8×";
/// Issue 14's target for each daemon's peak memory during a full-speed transfer.
const TARGET_RSS_VS_RATHOLE: &str = "target ≤ 2×";
/// CPU-seconds (both forwarders) per decimal gigabyte carried.
const CPU_UNIT: &str = "CPU-s/GB";
/// Stream counts also measured through rathole (issue 14's targets name 1 and 4).
const RATHOLE_STREAMS: [usize; 2] = [1, 4];

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
            streams: env.pick(vec![1, 4], vec![1, 4, 8]),
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
    let compared = |d: Direction, streams: usize| {
        RATHOLE_STREAMS.contains(&streams)
            && opts.rathole.contains(&d)
            && opts.directions.contains(&d)
    };
    let any_compared = opts
        .directions
        .iter()
        .any(|&d| opts.streams.iter().any(|&n| compared(d, n)));
    let ratholes = if any_compared {
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
                let measure = async |t: &Target, pids: &[u32], what: &str| {
                    let out = throughput::run_watched(t, &sink, &spec, pids)
                        .await
                        .ctx(|| format!("{what} {streams}x{}", direction.as_str()))?;
                    quiesce(&sink, Duration::from_millis(200), Duration::from_secs(5)).await;
                    Ok::<_, BenchError>(out)
                };
                let (base, _) = measure(&direct, &[], "direct").await?;
                let mut references = Vec::new();
                if compared(direction, streams) {
                    for r in &ratholes {
                        match measure(r.entry(), &r.pids(), &r.flavor().label()).await {
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
                        measure(quic.entry(), &quic.pids(), "tunnel").await?,
                    ),
                    (
                        ChannelTransport::Tcp,
                        measure(tcp.entry(), &tcp.pids(), "tunnel over tcp").await?,
                    ),
                ];
                let record = |metric: &str, value: f64, unit: &str| {
                    Record::new("loopback", metric, value, unit)
                        .param("streams", streams)
                        .param("direction", direction.as_str())
                };
                for (transport, (tun, usage)) in &tunnels {
                    // The QUIC row keeps its name from earlier runs.
                    let metric = match transport {
                        ChannelTransport::Quic => "throughput",
                        ChannelTransport::Tcp => "tcp_throughput",
                    };
                    report.push(
                        record(metric, mbps(tun.bits_per_sec), "Mbit/s")
                            .param("transport", transport.as_str())
                            .baseline("direct", mbps(base.bits_per_sec)),
                    );
                    push_footprint(report, &record, transport.as_str(), tun, usage);
                }
                for (flavor, (rh, rh_usage)) in &references {
                    report.push(
                        record("rathole_throughput", mbps(rh.bits_per_sec), "Mbit/s")
                            .param("transport", flavor.as_str())
                            .baseline("direct", mbps(base.bits_per_sec)),
                    );
                    push_footprint(
                        report,
                        &|m, v, u| record(&format!("rathole_{m}"), v, u),
                        flavor.as_str(),
                        rh,
                        rh_usage,
                    );
                    let label = flavor.label();
                    for (transport, (tun, usage)) in &tunnels {
                        let vs = |metric: &str, value: f64, unit: &str, reference: f64, note| {
                            record(metric, value, unit)
                                .param("transport", transport.as_str())
                                .baseline(&label, reference)
                                .note(note)
                        };
                        report.push(vs(
                            "throughput_vs_rathole",
                            mbps(tun.bits_per_sec),
                            "Mbit/s",
                            mbps(rh.bits_per_sec),
                            TARGET_VS_RATHOLE,
                        ));
                        if let (Some(ours), Some(theirs)) = (
                            cpu_seconds_per_gb(usage.cpu, tun.bytes),
                            cpu_seconds_per_gb(rh_usage.cpu, rh.bytes),
                        ) {
                            report.push(vs(
                                "cpu_per_gb_vs_rathole",
                                ours,
                                CPU_UNIT,
                                theirs,
                                TARGET_CPU_VS_RATHOLE,
                            ));
                        }
                        if let (Some(ours), Some(theirs)) =
                            (usage.max_peak_mib(), rh_usage.max_peak_mib())
                        {
                            report.push(vs(
                                "peak_rss_vs_rathole",
                                ours,
                                "MiB",
                                theirs,
                                TARGET_RSS_VS_RATHOLE,
                            ));
                        }
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

/// Both forwarders' CPU time per GB carried and the larger of their peak RSS (each one's
/// in the note), as `{prefix}cpu_per_gb` and `{prefix}peak_rss` rows through `record`.
fn push_footprint(
    report: &mut Report,
    record: &dyn Fn(&str, f64, &str) -> Record,
    transport: &str,
    out: &throughput::Outcome,
    usage: &Usage,
) {
    if let Some(v) = cpu_seconds_per_gb(usage.cpu, out.bytes) {
        report.push(
            record("cpu_per_gb", v, CPU_UNIT)
                .param("transport", transport)
                .note("both forwarders, user + system"),
        );
    }
    if let Some(max) = usage.max_peak_mib() {
        let each = usage
            .peak_rss_kib
            .iter()
            .map(|k| k.map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)))
            .collect::<Vec<_>>()
            .join(" / ");
        let scope = if usage.peak_is_window {
            "this transfer"
        } else {
            "process lifetime"
        };
        report.push(
            record("peak_rss", max, "MiB")
                .param("transport", transport)
                .note(format!(
                    "larger of client side / app side: {each} MiB ({scope})"
                )),
        );
    }
}
