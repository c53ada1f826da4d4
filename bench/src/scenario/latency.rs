//! Request/response latency: 64-byte ping-pongs over one connection through the tunnel
//! (its channel over QUIC/UDP, and over the TCP transport) versus direct; median and 99th
//! percentile, and the added median. The same through rathole's encrypted transports (when
//! installed: `tls`, the reference, and `noise`), and each tunnel's added median against
//! each of rathole's. Also through a null tunnel (two plain TCP relay processes, no
//! crypto): the floor any two-process forwarder pays, so a target below it shows as such.
//! Every figure of one run is measured back to back, direct first.

use std::time::Duration;

use super::{Env, loopback_tunnel, loopback_tunnel_over};
use crate::daemon::ChannelTransport;
use crate::error::{BenchError, IoContext};
use crate::helper::{NULL_TUNNEL_NOTE, NullTunnel};
use crate::load::latency::{self, Spec};
use crate::load::{MESSAGE, Target};
use crate::rathole;
use crate::report::{Record, Report};
use crate::stats::Summary;

/// The target of issue 14: no more added latency than rathole's.
const TARGET_VS_RATHOLE: &str = "target ≤ 1×";

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
    let (server, quic) = loopback_tunnel(env).await?;
    let tcp = match loopback_tunnel_over(env, &server, ChannelTransport::Tcp).await {
        Ok(t) => t,
        Err(e) => {
            let _ = quic.stop().await;
            return Err(e);
        }
    };
    let ratholes = rathole::all_for_comparison("latency", server.addr(), report).await;
    let relays = match &env.helper {
        Some(exe) => Some(NullTunnel::start(exe, server.addr())?),
        None => None,
    };
    let spec = Spec {
        warmup: env.pick(200, 1000),
        iterations: env.pick(3000, 30_000),
        max_time: env.pick(Duration::from_secs(1), Duration::from_secs(5)),
    };
    let result = async {
        let ping = async |t: &Target, what: &str| {
            latency::run(t, &spec)
                .await
                .ctx(|| format!("{what} ping-pong"))
        };
        let base = ping(&Target::direct(server.addr()), "direct").await?;
        let mut references = Vec::new();
        for r in &ratholes {
            let label = r.flavor().label();
            match ping(r.entry(), &label).await {
                Ok(s) => references.push((r.flavor(), s)),
                Err(e) => {
                    eprintln!("bench: {e}");
                    report.push(rathole::skipped_record(
                        "latency",
                        format!("{label}: {}", rathole::skip_note(&e)),
                    ));
                }
            }
        }
        let floor = match &relays {
            Some(relays) => Some(ping(&relays.entry(), "relay").await?),
            None => None,
        };
        let tunnels = [
            (ChannelTransport::Quic, ping(quic.entry(), "tunnel").await?),
            (
                ChannelTransport::Tcp,
                ping(tcp.entry(), "tunnel over tcp").await?,
            ),
        ];
        let added = |s: &Summary| us(s.p50) - us(base.p50);
        for (transport, tun) in &tunnels {
            // The QUIC rows keep their names from earlier runs; TCP rows are prefixed.
            let name = |m: &str| match transport {
                ChannelTransport::Quic => m.to_owned(),
                ChannelTransport::Tcp => format!("tcp_{m}"),
            };
            for (metric, t, b) in [
                ("rtt_p50", tun.p50, base.p50),
                ("rtt_p99", tun.p99, base.p99),
            ] {
                report.push(
                    Record::new("latency", &name(metric), us(t), "µs")
                        .param("size", MESSAGE)
                        .param("samples", tun.count)
                        .param("transport", transport.as_str())
                        .baseline("direct", us(b)),
                );
            }
            report.push(
                Record::new("latency", &name("added_p50"), added(tun), "µs")
                    .param("size", MESSAGE)
                    .param("transport", transport.as_str())
                    .note("tunnel p50 minus direct p50"),
            );
        }
        let floor_added = floor.as_ref().map(added);
        if let Some(a) = floor_added {
            report.push(
                Record::new("latency", "relay_added_p50", a, "µs")
                    .param("size", MESSAGE)
                    .note(NULL_TUNNEL_NOTE),
            );
        }
        for (flavor, rh) in &references {
            for (metric, r, b) in [
                ("rathole_rtt_p50", rh.p50, base.p50),
                ("rathole_rtt_p99", rh.p99, base.p99),
            ] {
                report.push(
                    Record::new("latency", metric, us(r), "µs")
                        .param("size", MESSAGE)
                        .param("samples", rh.count)
                        .param("transport", flavor.as_str())
                        .baseline("direct", us(b)),
                );
            }
            let rathole_added = added(rh);
            let rathole_label = format!("{} added", flavor.label());
            report.push(
                Record::new("latency", "rathole_added_p50", rathole_added, "µs")
                    .param("size", MESSAGE)
                    .param("transport", flavor.as_str())
                    .note("rathole p50 minus direct p50"),
            );
            for (transport, tun) in &tunnels {
                report.push(
                    Record::new("latency", "added_p50_vs_rathole", added(tun), "µs")
                        .param("size", MESSAGE)
                        .param("transport", transport.as_str())
                        .baseline(&rathole_label, rathole_added)
                        .note(TARGET_VS_RATHOLE),
                );
                report.push(
                    Record::new(
                        "latency",
                        "rtt_p99_vs_rathole",
                        us(tun.p99) - us(base.p99),
                        "µs",
                    )
                    .param("size", MESSAGE)
                    .param("transport", transport.as_str())
                    .baseline(
                        &format!("{} p99 added", flavor.label()),
                        us(rh.p99) - us(base.p99),
                    )
                    .note(TARGET_VS_RATHOLE),
                );
            }
            if let Some(a) = floor_added {
                report.push(
                    Record::new("latency", "relay_added_p50_vs_rathole", a, "µs")
                        .param("size", MESSAGE)
                        .baseline(&rathole_label, rathole_added)
                        .note("no two-process forwarder adds less than this floor"),
                );
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
