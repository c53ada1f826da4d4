//! Request/response latency: 64-byte ping-pongs over one connection through the tunnel
//! versus direct; median and 99th percentile, and the added median.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{Env, READY};
use crate::daemon::{Placement, Tunnel};
use crate::error::{BenchError, IoContext};
use crate::load::latency::{self, Spec};
use crate::load::{BenchServer, MESSAGE, Target};
use crate::report::{Record, Report};

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
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
    let spec = Spec {
        warmup: env.pick(200, 1000),
        iterations: env.pick(3000, 30_000),
        max_time: env.pick(Duration::from_secs(1), Duration::from_secs(5)),
    };
    let result = async {
        let base = latency::run(&Target::direct(server.addr()), &spec)
            .await
            .ctx(|| "direct ping-pong".into())?;
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
        report.push(
            Record::new("latency", "added_p50", us(tun.p50) - us(base.p50), "µs")
                .param("size", MESSAGE)
                .note("tunnel p50 minus direct p50"),
        );
        Ok(())
    }
    .await;
    let stopped = tunnel.stop().await;
    result.and(stopped)
}
