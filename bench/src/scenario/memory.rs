//! Memory: both daemons' RSS idle (tunnel up, one connection forwarded and closed), then
//! with N concurrent idle connections forwarded; the per-connection cost is the growth
//! divided by N. Baseline: the idle RSS of the same daemon in the same run.
//!
//! With 10 000 connections one process would need 20 000 descriptors (client and server
//! ends), more than the usual limit, so the app server runs in a helper process (this
//! binary's hidden `serve` command) when one is available.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{Env, READY};
use crate::daemon::{Placement, SiteProcess, Tunnel};
use crate::error::{BenchError, IoContext};
use crate::helper::Helper;
use crate::load::{BenchServer, hold};
use crate::report::{Record, Report};

/// Connections opened at once while building up the load.
const PARALLEL: usize = 64;

/// Time for allocators and kernel buffers to settle before RSS is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
    let counts = env.pick(vec![200], vec![1000, 10_000]);
    // Either a helper process or an in-process server; both answer ECHO.
    let (app, _helper, _local) = match &env.helper {
        Some(exe) => {
            let h = Helper::start(exe, &["serve"])?;
            (h.addr(), Some(h), None)
        }
        None => {
            let s = BenchServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .ctx(|| "starting the app server".into())?;
            (s.addr(), None, Some(s))
        }
    };
    let in_process = env.helper.is_none();
    let tunnel = Tunnel::start(&env.wovenetd, app, &Placement::Loopback, None, READY).await?;
    let result = async {
        tokio::time::sleep(SETTLE).await;
        let idle = [tunnel.a.rss_kib()?, tunnel.b.rss_kib()?];
        for (site, kib) in [&tunnel.a, &tunnel.b].iter().zip(idle) {
            report.push(
                Record::new("memory", "rss_idle", kib as f64 / 1024.0, "MiB")
                    .param("site", site_role(site)),
            );
        }
        for &n in &counts {
            let n = if in_process { n.min(fd_budget()) } else { n };
            let conns = hold(tunnel.entry(), n, PARALLEL)
                .await
                .ctx(|| format!("opening {n} connections through the tunnel"))?;
            tokio::time::sleep(SETTLE).await;
            let loaded = [tunnel.a.rss_kib()?, tunnel.b.rss_kib()?];
            for ((site, base), now) in [&tunnel.a, &tunnel.b].iter().zip(idle).zip(loaded) {
                report.push(
                    Record::new("memory", "rss_loaded", now as f64 / 1024.0, "MiB")
                        .param("site", site_role(site))
                        .param("connections", n)
                        .baseline("idle", base as f64 / 1024.0),
                );
                report.push(
                    Record::new(
                        "memory",
                        "per_connection",
                        now.saturating_sub(base) as f64 / n as f64,
                        "KiB",
                    )
                    .param("site", site_role(site))
                    .param("connections", n),
                );
            }
            drop(conns);
            tokio::time::sleep(SETTLE).await;
        }
        Ok(())
    }
    .await;
    let stopped = tunnel.stop().await;
    result.and(stopped)
}

fn site_role(site: &SiteProcess) -> &'static str {
    if site.name().ends_with('a') {
        "a (client side)"
    } else {
        "b (app side)"
    }
}

/// Connections one process can hold with both ends in it.
fn fd_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    let soft = if ok { lim.rlim_cur as usize } else { 1024 };
    soft.saturating_sub(256) / 2
}
