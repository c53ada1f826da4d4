//! coturn (`turnserver`, Debian package `coturn`) inside the rig's servers namespace: a
//! STUN-only server on several addresses, and a TURN relay with long-term credentials. Each is
//! ready when it answers a STUN Binding request (polled, never slept for), keeps its log in a
//! tempdir, and is killed on drop. Owns no topology.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::netns::{Netns, tool};
use super::{plan, stun};
use crate::process::{self, Process, file_tail};
use crate::wait::{WAIT, poll};

/// Log lines shown by `diag()`.
const TAIL_LINES: usize = 40;

/// Long-term credentials of the TURN relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Realm.
    pub realm: String,
}

impl Default for TurnCredentials {
    fn default() -> Self {
        Self {
            username: "wovenet".into(),
            password: "relay-secret-0".into(),
            realm: "wovenet.test".into(),
        }
    }
}

/// Arguments every coturn of the rig gets: no config file (`-n`), no CLI, no TLS/DTLS, logs to
/// stdout (captured into `dir`), pid file and user database in `dir` (never the system's).
fn common_args(dir: &Path) -> Vec<String> {
    vec![
        "-n".into(),
        "--no-cli".into(),
        "--no-tls".into(),
        "--no-dtls".into(),
        "--log-file".into(),
        "stdout".into(),
        "--simple-log".into(),
        "--pidfile".into(),
        dir.join("turnserver.pid").display().to_string(),
        "--userdb".into(),
        dir.join("turndb").display().to_string(),
        "--listening-port".into(),
        plan::STUN_PORT.to_string(),
    ]
}

/// `turnserver` arguments for a STUN-only server listening on each of `ips`. With two or more
/// addresses coturn also answers RFC 5780 CHANGE-REQUESTs (alternate port: 3479).
pub fn stun_args(ips: &[Ipv4Addr], dir: &Path) -> Vec<String> {
    let mut args = common_args(dir);
    args.push("--stun-only".into());
    for ip in ips {
        args.extend(["--listening-ip".into(), ip.to_string()]);
    }
    args
}

/// `turnserver` arguments for a TURN relay on `ip` (listening and relaying from it) with one
/// long-term user. Peers anywhere on the rig's internet segment are allowed explicitly
/// (`--allowed-peer-ip`), so a stricter future default cannot silently break relaying.
pub fn turn_args(ip: Ipv4Addr, creds: &TurnCredentials, dir: &Path) -> Vec<String> {
    let mut args = common_args(dir);
    args.extend([
        "--listening-ip".into(),
        ip.to_string(),
        "--relay-ip".into(),
        ip.to_string(),
        "--lt-cred-mech".into(),
        "--user".into(),
        format!("{}:{}", creds.username, creds.password),
        "--realm".into(),
        creds.realm.clone(),
        "--allowed-peer-ip=198.18.0.0-198.19.255.255".into(),
        "--no-multicast-peers".into(),
    ]);
    args
}

/// A running `turnserver` in a namespace.
struct Coturn {
    what: &'static str,
    ns: Netns,
    addrs: Vec<SocketAddr>,
    dir: TempDir,
    process: Process,
}

impl Coturn {
    /// Starts `turnserver args` in `ns` (its output into `dir`) and waits until every address
    /// in `addrs` answers a STUN Binding request from inside `ns`; panics with the log if it
    /// exits or times out.
    async fn start_in(
        what: &'static str,
        ns: &Netns,
        addrs: Vec<SocketAddr>,
        dir: TempDir,
        args: Vec<String>,
    ) -> Self {
        let bin = turnserver();
        let out = dir.path().join("turnserver.out");
        let (ip, all) = ns.wrap(&bin, &args);
        let process = Process::spawn(&ip, all, &[], &out, &out)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let coturn = Self {
            what,
            ns: ns.clone(),
            addrs,
            dir,
            process,
        };
        coturn.wait_ready().await;
        coturn
    }

    async fn wait_ready(&self) {
        let probe = self.ns.udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        for &addr in &self.addrs {
            let answered = poll(WAIT, || {
                let probe = &probe;
                async move {
                    if self.process.peek_status().is_some() {
                        return Some(Err("exited".to_owned()));
                    }
                    stun::binding(probe, addr, Duration::from_millis(200))
                        .await
                        .ok()
                        .map(Ok)
                }
            })
            .await;
            match answered {
                Some(Ok(_)) => {}
                Some(Err(why)) => panic!(
                    "{} server {why} before answering on {addr}\n{}",
                    self.what,
                    self.diag()
                ),
                None => panic!(
                    "{} server does not answer STUN on {addr} after {WAIT:?}\n{}",
                    self.what,
                    self.diag()
                ),
            }
        }
    }

    fn diag(&self) -> String {
        let state = match self.process.peek_status() {
            None => format!("pid {} running", self.process.pid()),
            Some(s) => format!(
                "pid {} exited ({})",
                self.process.pid(),
                process::describe(s)
            ),
        };
        format!(
            "--- {} server (coturn) on {:?} in {} ({state}) log tail:\n{}",
            self.what,
            self.addrs,
            self.ns.name(),
            file_tail(&self.dir.path().join("turnserver.out"), TAIL_LINES)
        )
    }
}

/// The coturn binary, or a panic saying how to install it (callers checked
/// [`crate::natrig::require`] first).
pub fn turnserver() -> PathBuf {
    tool("turnserver").unwrap_or_else(|| {
        panic!("the NAT rig needs coturn's `turnserver` (apt-get install coturn)")
    })
}

/// A STUN-only coturn on two or more addresses of the servers namespace.
pub struct StunServer {
    coturn: Coturn,
}

impl StunServer {
    /// Starts one coturn listening on `ips` (port [`plan::STUN_PORT`]) in `ns`.
    pub async fn start(ns: &Netns, ips: &[Ipv4Addr]) -> Self {
        let addrs = ips
            .iter()
            .map(|ip| SocketAddr::from((*ip, plan::STUN_PORT)))
            .collect();
        let coturn = start_with(ns, "STUN", addrs, |dir| stun_args(ips, dir)).await;
        Self { coturn }
    }

    /// Its addresses (`IP:3478` each), for `stunDetector.servers`.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.coturn.addrs
    }

    /// `["198.18.0.2:3478", …]` as config strings.
    pub fn servers(&self) -> Vec<String> {
        self.addrs().iter().map(ToString::to_string).collect()
    }

    /// Process state and log tail, for panic messages.
    pub fn diag(&self) -> String {
        self.coturn.diag()
    }
}

/// A coturn TURN relay (long-term credentials) on one address of the servers namespace.
pub struct TurnServer {
    coturn: Coturn,
    creds: TurnCredentials,
}

impl TurnServer {
    /// Starts one coturn relay on `ip` in `ns` with `creds`.
    pub async fn start(ns: &Netns, ip: Ipv4Addr, creds: TurnCredentials) -> Self {
        let addrs = vec![SocketAddr::from((ip, plan::STUN_PORT))];
        let c = creds.clone();
        let coturn = start_with(ns, "TURN", addrs, move |dir| turn_args(ip, &c, dir)).await;
        Self { coturn, creds }
    }

    /// Its address (`IP:3478`).
    pub fn addr(&self) -> SocketAddr {
        self.coturn.addrs[0]
    }

    /// The relay's process id (`ip netns exec` execs it), e.g. to read its CPU time.
    pub fn pid(&self) -> u32 {
        self.coturn.process.pid()
    }

    /// Its IP (also the relay address peers see).
    pub fn ip(&self) -> IpAddr {
        self.addr().ip()
    }

    /// `turn:IP:3478` (RFC 7065 URI, UDP).
    pub fn url(&self) -> String {
        format!("turn:{}", self.addr())
    }

    /// The credentials it accepts.
    pub fn credentials(&self) -> &TurnCredentials {
        &self.creds
    }

    /// Process state and log tail, for panic messages.
    pub fn diag(&self) -> String {
        self.coturn.diag()
    }
}

/// Makes the tempdir first so the arguments can name files inside it, then starts.
async fn start_with(
    ns: &Netns,
    what: &'static str,
    addrs: Vec<SocketAddr>,
    args: impl FnOnce(&Path) -> Vec<String>,
) -> Coturn {
    let dir = tempfile::Builder::new()
        .prefix("wovenet-e2e-coturn-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create tempdir: {e}"));
    let args = args(dir.path());
    Coturn::start_in(what, ns, addrs, dir, args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(args: &[String]) -> Vec<(String, String)> {
        args.windows(2)
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect()
    }

    #[test]
    fn stun_server_listens_on_every_address_without_tls_cli_or_system_files() {
        let args = stun_args(
            &[Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)],
            Path::new("/t"),
        );
        for flag in ["-n", "--no-cli", "--no-tls", "--no-dtls", "--stun-only"] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
        }
        let p = pairs(&args);
        assert!(p.contains(&("--listening-ip".into(), "198.18.0.2".into())));
        assert!(p.contains(&("--listening-ip".into(), "198.18.0.3".into())));
        assert!(p.contains(&("--userdb".into(), "/t/turndb".into())));
        assert!(p.contains(&("--pidfile".into(), "/t/turnserver.pid".into())));
        assert!(p.contains(&("--log-file".into(), "stdout".into())));
        assert!(p.contains(&("--listening-port".into(), "3478".into())));
    }

    #[test]
    fn turn_relay_uses_long_term_credentials_and_relays_to_the_rig_internet() {
        let creds = TurnCredentials::default();
        let args = turn_args(Ipv4Addr::new(198, 18, 0, 4), &creds, Path::new("/t"));
        assert!(!args.iter().any(|a| a == "--stun-only"), "{args:?}");
        assert!(args.iter().any(|a| a == "--lt-cred-mech"), "{args:?}");
        let p = pairs(&args);
        assert!(p.contains(&("--relay-ip".into(), "198.18.0.4".into())));
        assert!(p.contains(&("--listening-ip".into(), "198.18.0.4".into())));
        assert!(p.contains(&("--user".into(), "wovenet:relay-secret-0".into())));
        assert!(p.contains(&("--realm".into(), "wovenet.test".into())));
        assert!(
            args.iter()
                .any(|a| a == "--allowed-peer-ip=198.18.0.0-198.19.255.255"),
            "{args:?}"
        );
    }
}
