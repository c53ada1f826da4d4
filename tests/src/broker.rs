//! MQTT brokers for tests: a broker-only wovenetd (its `embeddedBroker`) or a real mosquitto
//! on a free 127.0.0.1 port, or on a given address inside a network namespace (the NAT rig's
//! servers namespace, see [`crate::natrig`]); all can be stopped and started again on the
//! same port.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::natrig::Netns;
use crate::process::{self, Process, file_tail};
use crate::site::{Site, random_topic, unique_suffix};
use crate::sock::{Sock, free_tcp_port};
use crate::wait::{WAIT, eventually};

/// Env var: when `1`, a missing mosquitto fails the tests instead of skipping them.
pub const REQUIRE_MOSQUITTO_ENV: &str = "WOVENET_REQUIRE_MOSQUITTO";

/// The mosquitto binary, looked up on `PATH` and in `/usr/sbin` (Debian installs it there,
/// outside a normal user's `PATH`).
pub fn mosquitto_available() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Decides skip vs fail when mosquitto is missing: `Some(path)` to go on; `None` to skip (after
/// an eprintln); panics when [`REQUIRE_MOSQUITTO_ENV`] is `1`.
pub fn require_mosquitto() -> Option<PathBuf> {
    let required = std::env::var(REQUIRE_MOSQUITTO_ENV).is_ok_and(|v| v == "1");
    decide(mosquitto_available(), required)
}

fn decide(found: Option<PathBuf>, required: bool) -> Option<PathBuf> {
    match (found, required) {
        (Some(p), _) => Some(p),
        (None, true) => panic!(
            "mosquitto is not installed (looked on PATH and in /usr/sbin) but {REQUIRE_MOSQUITTO_ENV}=1; \
             install it (apt-get install mosquitto)"
        ),
        (None, false) => {
            eprintln!(
                "skipping: mosquitto not installed (set {REQUIRE_MOSQUITTO_ENV}=1 to make this an error)"
            );
            None
        }
    }
}

enum Kind {
    /// A broker-only wovenetd site (own key and topic, so no test site ever pairs with it).
    Embedded(Box<Site>),
    /// mosquitto with its config and output in `dir`.
    Mosquitto {
        bin: PathBuf,
        dir: TempDir,
        process: Option<Process>,
    },
}

/// A running (or stopped) MQTT broker on 127.0.0.1 (or in a namespace).
pub struct Broker {
    addr: SocketAddr,
    kind: Kind,
    /// The namespace it runs in (`None`: the test's own).
    netns: Option<Netns>,
}

impl Broker {
    /// A broker-only wovenetd: `embeddedBroker` on a free port, no apps, its own site name,
    /// key and topic. Waits until the port accepts connections.
    pub async fn embedded() -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        Self::embedded_at(None, addr).await
    }

    /// A broker-only wovenetd listening on `addr` inside `ns` (e.g. the NAT rig's servers
    /// namespace). Waits until it accepts connections there.
    pub async fn embedded_in(ns: &Netns, addr: SocketAddr) -> Self {
        Self::embedded_at(Some(ns.clone()), addr).await
    }

    async fn embedded_at(netns: Option<Netns>, addr: SocketAddr) -> Self {
        let mut builder = Site::builder(&format!("broker-{}", unique_suffix()))
            .key("broker-only-key-0")
            .topic(format!("wovenet-e2e-broker-only/{}", random_topic()))
            .embedded_broker(addr);
        if let Some(ns) = &netns {
            builder = builder.netns(ns);
        }
        let site = builder.spawn().await;
        let broker = Self {
            addr,
            kind: Kind::Embedded(Box::new(site)),
            netns,
        };
        broker.wait_accepting().await;
        broker
    }

    /// A real mosquitto on a free port, or `None` when it is not installed and not required
    /// (see [`require_mosquitto`]). Waits until the port accepts connections.
    pub async fn mosquitto() -> Option<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        Self::mosquitto_at(None, addr).await
    }

    /// A real mosquitto listening on `addr` inside `ns`, or `None` as for [`Self::mosquitto`].
    pub async fn mosquitto_in(ns: &Netns, addr: SocketAddr) -> Option<Self> {
        Self::mosquitto_at(Some(ns.clone()), addr).await
    }

    async fn mosquitto_at(netns: Option<Netns>, addr: SocketAddr) -> Option<Self> {
        let bin = require_mosquitto()?;
        let dir = tempfile::Builder::new()
            .prefix("wovenet-e2e-mosquitto-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create tempdir: {e}"));
        std::fs::write(dir.path().join("mosquitto.conf"), mosquitto_conf(addr))
            .unwrap_or_else(|e| panic!("cannot write mosquitto.conf: {e}"));
        let mut broker = Self {
            addr,
            kind: Kind::Mosquitto {
                bin,
                dir,
                process: None,
            },
            netns,
        };
        broker.start().await;
        Some(broker)
    }

    /// `mqtt://IP:PORT` (127.0.0.1 unless it runs in a namespace).
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the broker (SIGTERM; SIGKILL if it lingers) and waits until the port refuses.
    pub async fn stop(&mut self) {
        match &mut self.kind {
            Kind::Embedded(site) => site.stop().await,
            Kind::Mosquitto {
                process: Some(p), ..
            } => {
                p.signal(libc::SIGTERM);
                if p.wait_exit(Duration::from_secs(5)).await.is_none() {
                    p.kill();
                }
            }
            Kind::Mosquitto { process: None, .. } => {}
        }
        if !eventually(WAIT, || async { !self.accepts().await }).await {
            panic!(
                "broker at {} still accepts connections after stop\n{}",
                self.addr,
                self.diag()
            );
        }
    }

    /// Starts it again on the same port and waits until it accepts connections.
    pub async fn start(&mut self) {
        match &mut self.kind {
            Kind::Embedded(site) => site.start().await,
            Kind::Mosquitto { bin, dir, process } => {
                if process.as_mut().is_some_and(Process::is_running) {
                    panic!("mosquitto start() while running");
                }
                let conf = dir.path().join("mosquitto.conf");
                let args = [OsStr::new("-c"), conf.as_os_str()];
                let out = dir.path().join("mosquitto.out");
                let p = match &self.netns {
                    None => Process::spawn(bin, args, &[], &out, &out),
                    Some(ns) => {
                        let (ip, all) = ns.wrap(bin, args);
                        Process::spawn(&ip, all, &[], &out, &out)
                    }
                }
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
                *process = Some(p);
            }
        }
        self.wait_accepting().await;
    }

    /// Stop, then start on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// Whether a TCP connection to it succeeds now (made inside its namespace, if any).
    pub async fn accepts(&self) -> bool {
        match &self.netns {
            None => crate::client::is_listening(&Sock::Tcp(self.addr)).await,
            Some(ns) => ns
                .tcp_connect(self.addr, Duration::from_secs(1))
                .await
                .is_ok(),
        }
    }

    /// The namespace it runs in (`None`: the test's own).
    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_ref()
    }

    async fn wait_accepting(&self) {
        if !eventually(WAIT, || async { self.accepts().await }).await {
            panic!(
                "broker at {} does not accept connections after {WAIT:?}\n{}",
                self.addr,
                self.diag()
            );
        }
    }

    /// State and output of the broker, for panic messages.
    pub fn diag(&self) -> String {
        match &self.kind {
            Kind::Embedded(site) => site.diag(),
            Kind::Mosquitto { dir, process, .. } => {
                let state = match process.as_ref().map(|p| (p.pid(), p.peek_status())) {
                    None => "never started".to_owned(),
                    Some((pid, None)) => format!("pid {pid} running"),
                    Some((pid, Some(s))) => format!("pid {pid} exited ({})", process::describe(s)),
                };
                format!(
                    "--- mosquitto on {} ({state}) output tail:\n{}",
                    self.addr,
                    file_tail(&dir.path().join("mosquitto.out"), 30)
                )
            }
        }
    }

    /// The broker-only site, for an embedded broker.
    pub fn site(&self) -> Option<&Site> {
        match &self.kind {
            Kind::Embedded(s) => Some(s),
            Kind::Mosquitto { .. } => None,
        }
    }

    /// Where the broker keeps its files.
    pub fn dir(&self) -> &Path {
        match &self.kind {
            Kind::Embedded(s) => s.dir(),
            Kind::Mosquitto { dir, .. } => dir.path(),
        }
    }
}

/// mosquitto 2.x config: one plain listener on `addr`, anonymous clients, no persistence,
/// logging to stderr (captured by the harness).
fn mosquitto_conf(addr: SocketAddr) -> String {
    let (port, ip) = (addr.port(), addr.ip());
    format!(
        "listener {port} {ip}\nallow_anonymous true\npersistence false\n\
         log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
         connection_messages true\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_mosquitto_skips_unless_required() {
        assert_eq!(
            decide(Some("/usr/sbin/mosquitto".into()), true),
            Some("/usr/sbin/mosquitto".into())
        );
        assert_eq!(decide(None, false), None);
    }

    #[test]
    #[should_panic(expected = "WOVENET_REQUIRE_MOSQUITTO=1")]
    fn missing_mosquitto_fails_when_required() {
        decide(None, true);
    }

    #[test]
    fn mosquitto_conf_listens_on_loopback_anonymously() {
        let c = mosquitto_conf(SocketAddr::from((Ipv4Addr::LOCALHOST, 18883)));
        assert!(c.contains("listener 18883 127.0.0.1\n"));
        assert!(c.contains("allow_anonymous true\n"));
    }

    /// Needs mosquitto installed; skipped (with a message) otherwise, like the e2e tests.
    #[tokio::test]
    async fn mosquitto_starts_stops_and_restarts_on_the_same_port() {
        let Some(mut b) = Broker::mosquitto().await else {
            return;
        };
        let sock = Sock::Tcp(b.addr());
        assert!(crate::client::is_listening(&sock).await, "{}", b.diag());
        assert!(b.url().starts_with("mqtt://127.0.0.1:"));
        b.stop().await;
        assert!(!crate::client::is_listening(&sock).await);
        b.start().await;
        assert!(crate::client::is_listening(&sock).await, "{}", b.diag());
        b.restart().await;
        assert!(crate::client::is_listening(&sock).await, "{}", b.diag());
    }
}
