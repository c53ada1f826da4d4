//! Connection rate: 50 concurrent clients each looping open → one 64-byte exchange →
//! close, through the tunnel versus direct; connections per second and errors. Also
//! through the null tunnel (two plain TCP relay processes) and rathole when installed:
//! every forwarder accepts and connects a TCP socket per client connection, which on a
//! shared machine costs about what the client and server pair does, so these show the
//! ceiling the target's ratio runs into.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{Env, READY};
use crate::daemon::{Placement, Tunnel};
use crate::error::{BenchError, IoContext};
use crate::helper::Helper;
use crate::load::connrate::{self, Spec};
use crate::load::{BenchServer, Target};
use crate::rathole;
use crate::report::{Record, Report};

/// Concurrent clients.
pub const CONCURRENCY: usize = 50;

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
        concurrency: CONCURRENCY,
        duration: env.pick(Duration::from_secs(1), Duration::from_secs(5)),
    };
    let base = connrate::run(&Target::direct(server.addr()), &spec).await;
    // Let the direct run's sockets leave the accept queue before the tunnel's run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tun = connrate::run(tunnel.entry(), &spec).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(exe) = &env.helper {
        let last = Helper::start(exe, &["relay", "--to", &server.addr().to_string()])?;
        let first = Helper::start(exe, &["relay", "--to", &last.addr().to_string()])?;
        let relay = connrate::run(&Target::direct(first.addr()), &spec).await;
        report.push(
            Record::new("connrate", "relay_conns_per_sec", relay.per_sec, "conn/s")
                .param("concurrency", CONCURRENCY)
                .param("errors", relay.errors)
                .baseline("direct", base.per_sec)
                .note("two plain TCP relay processes, no crypto: the floor of any two-process forwarder"),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match rathole::for_comparison(server.addr()).await {
        Ok(rh) => {
            let r = connrate::run(rh.entry(), &spec).await;
            report.push(
                Record::new("connrate", "rathole_conns_per_sec", r.per_sec, "conn/s")
                    .param("concurrency", CONCURRENCY)
                    .param("errors", r.errors)
                    .param("transport", rathole::TRANSPORT)
                    .baseline("direct", base.per_sec),
            );
        }
        Err(note) => report.push(rathole::skipped_record("connrate", note)),
    }
    report.push(
        Record::new("connrate", "conns_per_sec", tun.per_sec, "conn/s")
            .param("concurrency", CONCURRENCY)
            .param("completed", tun.completed)
            .baseline("direct", base.per_sec),
    );
    let mut errors = Record::new("connrate", "errors", tun.errors as f64, "count")
        .param("concurrency", CONCURRENCY)
        .baseline("direct", base.errors as f64);
    if let Some(e) = tun.first_error.or(base.first_error) {
        errors = errors.note(format!("first error: {e}"));
    }
    report.push(errors);
    tunnel.stop().await
}
