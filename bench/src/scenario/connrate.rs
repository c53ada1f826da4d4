//! Connection rate: 50 concurrent clients each looping open → one 64-byte exchange →
//! close, through the tunnel versus direct; connections per second and errors. Also
//! through the null tunnel (two plain TCP relay processes) and rathole when installed:
//! every forwarder accepts and connects a TCP socket per client connection, which on a
//! shared machine costs about what the client and server pair does, so these show the
//! ceiling the target's ratio runs into.

use std::time::Duration;

use super::{Env, loopback_tunnel};
use crate::error::BenchError;
use crate::helper::{NULL_TUNNEL_NOTE, NullTunnel};
use crate::load::Target;
use crate::load::connrate::{self, Spec};
use crate::rathole;
use crate::report::{Record, Report};

/// Concurrent clients.
pub const CONCURRENCY: usize = 50;

/// Pause between two runs: the previous run's closed sockets leave the accept queues and
/// TIME_WAIT churn settles (there is no event to wait for; the kernel drains them).
const BETWEEN_RUNS: Duration = Duration::from_millis(500);

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
    let (server, tunnel) = loopback_tunnel(env).await?;
    let spec = Spec {
        concurrency: CONCURRENCY,
        duration: env.pick(Duration::from_secs(1), Duration::from_secs(5)),
    };
    let base = connrate::run(&Target::direct(server.addr()), &spec).await;
    tokio::time::sleep(BETWEEN_RUNS).await;
    let tun = connrate::run(tunnel.entry(), &spec).await;
    tokio::time::sleep(BETWEEN_RUNS).await;
    if let Some(exe) = &env.helper {
        let relays = NullTunnel::start(exe, server.addr())?;
        let relay = connrate::run(&relays.entry(), &spec).await;
        report.push(
            Record::new("connrate", "relay_conns_per_sec", relay.per_sec, "conn/s")
                .param("concurrency", CONCURRENCY)
                .param("errors", relay.errors)
                .baseline("direct", base.per_sec)
                .note(NULL_TUNNEL_NOTE),
        );
        tokio::time::sleep(BETWEEN_RUNS).await;
    }
    if let Some(rh) =
        rathole::for_comparison("connrate", server.addr(), rathole::Flavor::Tls, report).await
    {
        let r = connrate::run(rh.entry(), &spec).await;
        report.push(
            Record::new("connrate", "rathole_conns_per_sec", r.per_sec, "conn/s")
                .param("concurrency", CONCURRENCY)
                .param("errors", r.errors)
                .param("transport", rh.flavor().as_str())
                .baseline("direct", base.per_sec),
        );
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
