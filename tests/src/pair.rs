//! The two-site fixture most e2e tests start from: `b` runs the embedded broker (and usually
//! exposes apps), `a` uses them; plus a lone site with its own broker. Spawning order, shared
//! topic and key, diagnostics of both sites and the `wovenetctl` waits live here, so test
//! files do not each keep a copy.

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::Value;

use crate::broker::Broker;
use crate::ctl::Ctl;
use crate::server::EchoServer;
use crate::site::{Net, Site, SiteBuilder, diag, random_topic, wait_forward};
use crate::sock::{Sock, free_tcp_port};
use crate::wait::WAIT;

/// Sites `a` (user) and `b` (exposer, hosting the embedded broker), spawned b first.
pub struct Pair {
    /// The site using apps.
    pub a: Site,
    /// The site exposing apps and running the broker.
    pub b: Site,
}

impl Pair {
    /// Spawns `b` (embedded broker on a free port) then `a`, each shaped by its closure.
    pub async fn new(
        b: impl FnOnce(SiteBuilder) -> SiteBuilder,
        a: impl FnOnce(SiteBuilder) -> SiteBuilder,
    ) -> Self {
        let broker = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        let net = Net::new(format!("mqtt://{broker}"));
        let b = b(net.site("b").embedded_broker(broker)).spawn().await;
        let a = a(net.site("a")).spawn().await;
        Self { a, b }
    }

    /// An echo app on `b`, served on `a` at the returned local socket, with the tunnel up.
    pub async fn echo() -> (Self, EchoServer, Sock) {
        let echo = EchoServer::tcp().await;
        let local = Sock::free_tcp();
        let p = Self::new(
            |b| b.expose("echo", echo.sock()),
            |a| a.remote("b", "echo", &local),
        )
        .await;
        p.wait_forward(&local).await;
        (p, echo, local)
    }

    /// Both sites, for [`diag`] and waits.
    pub fn sites(&self) -> [&Site; 2] {
        [&self.a, &self.b]
    }

    /// Both sites' log tails.
    pub fn diag(&self) -> String {
        diag(&self.sites())
    }

    /// Retries echo round trips through `local` until one works; panics with both logs.
    pub async fn wait_forward(&self, local: &Sock) {
        wait_forward(local, WAIT, &self.sites()).await;
    }

    /// `wovenetctl` for `a`.
    pub fn ctl_a(&self) -> Ctl {
        Ctl::site(&self.a)
    }

    /// `wovenetctl` for `b`.
    pub fn ctl_b(&self) -> Ctl {
        Ctl::site(&self.b)
    }

    /// Polls `wovenetctl -o json args` until `check` holds; returns that document, or panics
    /// after [`WAIT`] with the last output and both logs.
    pub async fn json_until(
        &self,
        ctl: &Ctl,
        args: &[&str],
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        ctl.json_until(args, what, WAIT, || self.diag(), check)
            .await
    }

    /// Polls `wovenetctl args` (table output) until its stdout satisfies `check`.
    pub async fn table_until(
        &self,
        ctl: &Ctl,
        args: &[&str],
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        ctl.table_until(args, what, WAIT, || self.diag(), check)
            .await
    }
}

/// Sites `a` and `b` on a broker neither of them hosts (embedded in the test), so either can
/// stop, restart or be replaced by another process under its name: `b` exposes `echo`, `a`
/// serves it at `local`, with the tunnel up.
pub struct EchoOverBroker {
    /// The broker both sites use.
    pub broker: Broker,
    /// Builds more sites on the same broker, topic and key.
    pub net: Net,
    /// `b`'s app.
    pub echo: EchoServer,
    /// Where `a` serves `b/echo`.
    pub local: Sock,
    /// The site using `b/echo`.
    pub a: Site,
    /// The site exposing `echo`.
    pub b: Site,
}

impl EchoOverBroker {
    /// Spawns `b` then `a`; `a_config` shapes `a` further (e.g. its `trust` section).
    pub async fn new(a_config: impl FnOnce(SiteBuilder) -> SiteBuilder) -> Self {
        let broker = Broker::embedded().await;
        let net = Net::new(broker.url());
        let echo = EchoServer::tcp().await;
        let local = Sock::free_tcp();
        let b = net.site("b").expose("echo", echo.sock()).spawn().await;
        let a = a_config(net.site("a").remote("b", "echo", &local))
            .spawn()
            .await;
        wait_forward(&local, WAIT, &[&a, &b]).await;
        Self {
            broker,
            net,
            echo,
            local,
            a,
            b,
        }
    }
}

/// A site on its own, running its own broker on a free port, shaped by `f`.
pub async fn lone_site(name: &str, f: impl FnOnce(SiteBuilder) -> SiteBuilder) -> Site {
    let broker = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    f(Site::builder(name)
        .topic(random_topic())
        .broker(format!("mqtt://{broker}"))
        .embedded_broker(broker))
    .spawn()
    .await
}
