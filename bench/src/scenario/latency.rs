//! Request/response latency: 64-byte ping-pongs over one connection through the tunnel
//! versus direct; median and 99th percentile, and the added median. The same through
//! rathole's noise transport (when installed), run between the two, and the tunnel's added
//! median against rathole's. Also through a null tunnel (two plain TCP relay processes, no
//! crypto): the floor any two-process forwarder pays, so a target below it shows as such.

use std::time::Duration;

use super::{Env, loopback_tunnel};
use crate::error::{BenchError, IoContext};
use crate::helper::{NULL_TUNNEL_NOTE, NullTunnel};
use crate::load::latency::{self, Spec};
use crate::load::{MESSAGE, Target};
use crate::rathole;
use crate::report::{Record, Report};

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
    let (server, tunnel) = loopback_tunnel(env).await?;
    let rathole = rathole::for_comparison("latency", server.addr(), report).await;
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
        let base = latency::run(&Target::direct(server.addr()), &spec)
            .await
            .ctx(|| "direct ping-pong".into())?;
        let reference = match &rathole {
            Some(r) => Some(
                latency::run(r.entry(), &spec)
                    .await
                    .ctx(|| "rathole ping-pong".into()),
            ),
            None => None,
        };
        let floor = match &relays {
            Some(relays) => Some(
                latency::run(&relays.entry(), &spec)
                    .await
                    .ctx(|| "relay ping-pong".into())?,
            ),
            None => None,
        };
        let tun = latency::run(tunnel.entry(), &spec)
            .await
            .ctx(|| "tunnel ping-pong".into())?;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        for (metric, t, b) in [
            ("rtt_p50", tun.p50, base.p50),
            ("rtt_p99", tun.p99, base.p99),
        ] {
            report.push(
                Record::new("latency", metric, us(t), "µs")
                    .param("size", MESSAGE)
                    .param("samples", tun.count)
                    .baseline("direct", us(b)),
            );
        }
        let tunnel_added = us(tun.p50) - us(base.p50);
        report.push(
            Record::new("latency", "added_p50", tunnel_added, "µs")
                .param("size", MESSAGE)
                .note("tunnel p50 minus direct p50"),
        );
        let floor_added = floor.map(|f| us(f.p50) - us(base.p50));
        if let Some(added) = floor_added {
            report.push(
                Record::new("latency", "relay_added_p50", added, "µs")
                    .param("size", MESSAGE)
                    .note(NULL_TUNNEL_NOTE),
            );
        }
        match reference {
            None => {}
            Some(Ok(rh)) => {
                for (metric, r, b) in [
                    ("rathole_rtt_p50", rh.p50, base.p50),
                    ("rathole_rtt_p99", rh.p99, base.p99),
                ] {
                    report.push(
                        Record::new("latency", metric, us(r), "µs")
                            .param("size", MESSAGE)
                            .param("samples", rh.count)
                            .param("transport", rathole::TRANSPORT)
                            .baseline("direct", us(b)),
                    );
                }
                let rathole_added = us(rh.p50) - us(base.p50);
                report.push(
                    Record::new("latency", "rathole_added_p50", rathole_added, "µs")
                        .param("size", MESSAGE)
                        .param("transport", rathole::TRANSPORT)
                        .note("rathole p50 minus direct p50"),
                );
                report.push(
                    Record::new("latency", "added_p50_vs_rathole", tunnel_added, "µs")
                        .param("size", MESSAGE)
                        .baseline(
                            &format!("rathole-{} added", rathole::TRANSPORT),
                            rathole_added,
                        )
                        .note("target ≤ 0.5×"),
                );
                if let Some(added) = floor_added {
                    report.push(
                        Record::new("latency", "relay_added_p50_vs_rathole", added, "µs")
                            .param("size", MESSAGE)
                            .baseline(
                                &format!("rathole-{} added", rathole::TRANSPORT),
                                rathole_added,
                            )
                            .note("above 0.5× no two-process forwarder can meet the target"),
                    );
                }
            }
            Some(Err(e)) => {
                eprintln!("bench: {e}");
                report.push(rathole::skipped_record("latency", rathole::skip_note(&e)));
            }
        }
        Ok(())
    }
    .await;
    let stopped = tunnel.stop().await;
    drop(rathole);
    result.and(stopped)
}
