//! wovenetd processes for the scenarios: finding (building, via cargo, when needed) the
//! binary, writing a site's YAML into a tempdir, starting it (inside a network namespace
//! when asked), reading its RSS, stopping it; and [`Tunnel`], the two-site setup every
//! tunnel measurement uses.
//!
//! Returns errors instead of panicking (the runner reports a failed scenario and goes on).
//! It must not contain wovenet logic: sites are configured only through their YAML.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{BenchError, IoContext};
use crate::load::Target;
use crate::wanem::{ADDR_B, CONTROL_B};

/// Env var naming a directory holding a `wovenetd` to use as is (no build).
pub const BIN_DIR_ENV: &str = "WOVENET_BIN_DIR";

/// The control socket's file name in a site's tempdir.
const CONTROL_SOCKET: &str = "control.sock";

/// The passphrase every benchmark site shares.
const KEY: &str = "wovenet-bench-key";

/// Which cargo profile's binary to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `target/release` (the benchmark's numbers).
    Release,
    /// `target/debug` (the smoke test: fast to build, slow to run).
    Debug,
}

/// The workspace root (parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target dir: `CARGO_TARGET_DIR` (relative to the workspace root) or `target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(p) if !p.is_empty() => workspace_root().join(p),
        _ => workspace_root().join("target"),
    }
}

/// The `wovenetd` to benchmark: `$WOVENET_BIN_DIR/wovenetd` as is, or the workspace's
/// `target/<profile>/wovenetd` after `cargo build [--release] -p wovenet-daemon` (a no-op
/// when it is up to date, so a stale binary is never measured). When cargo is not
/// available, an existing binary is used with a warning.
pub fn find_wovenetd(profile: Profile) -> Result<PathBuf, BenchError> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let bin = PathBuf::from(dir).join("wovenetd");
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(BenchError::Binary(format!(
                "{BIN_DIR_ENV} is set but {} does not exist",
                bin.display()
            )))
        };
    }
    let (dir, flag) = match profile {
        Profile::Release => ("release", Some("--release")),
        Profile::Debug => ("debug", None),
    };
    let bin = target_dir().join(dir).join("wovenetd");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "wovenet-daemon", "--bin", "wovenetd"])
        .args(flag)
        .current_dir(workspace_root())
        .stdin(Stdio::null());
    eprintln!(
        "bench: cargo build{} -p wovenet-daemon",
        flag.map(|f| format!(" {f}")).unwrap_or_default()
    );
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) if bin.is_file() => eprintln!(
            "bench: building wovenetd failed, using the existing {}:\n{}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(out) => {
            return Err(BenchError::Binary(format!(
                "cargo build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Err(e) if bin.is_file() => eprintln!(
            "bench: cannot run {cargo:?} ({e}), using the existing {}",
            bin.display()
        ),
        Err(e) => return Err(BenchError::Binary(format!("cannot run {cargo:?}: {e}"))),
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(BenchError::Binary(format!(
            "{} does not exist after building (set {BIN_DIR_ENV})",
            bin.display()
        )))
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; fine for a benchmark on one machine).
pub fn free_tcp_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ctx(|| "finding a free tcp port".into())
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> Result<u16, BenchError> {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .ctx(|| "finding a free udp port".into())
}

/// `n` distinct free UDP ports on 127.0.0.1 (all bound at once, so none repeats).
pub fn free_udp_ports(n: usize) -> Result<Vec<u16>, BenchError> {
    let sockets = (0..n)
        .map(|_| std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .ctx(|| "finding free udp ports".into())?;
    sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .ctx(|| "finding free udp ports".into())
}

/// A minimal HTTP/1.1 `GET path` with `Connection: close`: the body of a 200 answer.
async fn http_get(target: &Target, path: &str) -> std::io::Result<String> {
    let mut s = target.connect().await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.addr
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no complete answer within 5 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("answer without a header end"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(std::io::Error::other(format!("answer: {status}")));
    }
    Ok(body.to_owned())
}

/// How a site reaches its MQTT broker.
#[derive(Debug, Clone)]
pub enum Broker {
    /// The site runs the broker itself, listening here.
    Embedded(SocketAddr),
    /// The site connects to this broker.
    At(SocketAddr),
}

/// What one site runs with; [`SiteSpec::document`] turns it into the YAML config.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// `siteName`.
    pub name: String,
    /// `messageChannel.mqtt.topic`, unique per run.
    pub topic: String,
    /// The broker.
    pub broker: Broker,
    /// Sockets others dial, one dataChannel each: (public address, listen address).
    /// Empty: dial only.
    pub sockets: Vec<(IpAddr, SocketAddr)>,
    /// The `transportProtocol` of those sockets.
    pub transport: ChannelTransport,
    /// `localExposedApps`: (name, TCP address).
    pub exposed: Vec<(String, SocketAddr)>,
    /// `remoteApps`: (site, app, local TCP address).
    pub remotes: Vec<(String, String, SocketAddr)>,
    /// UDP `localExposedApps`: (name, UDP address).
    pub udp_exposed: Vec<(String, SocketAddr)>,
    /// UDP `remoteApps`: (site, app, local UDP address).
    pub udp_remotes: Vec<(String, String, SocketAddr)>,
    /// `tunnel.congestionControl`.
    pub congestion: Option<String>,
    /// `logger.level`.
    pub log_level: String,
    /// `metrics.listen`: where `GET /metrics` is served; `None`: not served.
    pub metrics: Option<SocketAddr>,
    /// One `hole-punching` local socket (any port) learning its NAT mapping from these STUN
    /// servers, after the `sockets`; `None`: no such socket.
    pub hole_punching: Option<Vec<SocketAddr>>,
    /// `tunnel.relay.turn`: the TURN relay peers use when punching cannot work.
    pub turn: Option<TurnRelay>,
}

/// A TURN relay a site offers its peers (`tunnel.relay.turn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRelay {
    /// `turn:IP:PORT`.
    pub url: String,
    /// Long-term credential user.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl SiteSpec {
    /// A site named `name` on `topic` of `broker` with nothing else: no sockets (dial only), no
    /// apps, the default congestion control, `info` logs, no metrics, no hole punching and no
    /// TURN relay. Set the rest with struct update syntax.
    pub fn new(name: impl Into<String>, topic: impl Into<String>, broker: Broker) -> Self {
        Self {
            name: name.into(),
            topic: topic.into(),
            broker,
            sockets: vec![],
            transport: ChannelTransport::Quic,
            exposed: vec![],
            remotes: vec![],
            udp_exposed: vec![],
            udp_remotes: vec![],
            congestion: None,
            log_level: "info".into(),
            metrics: None,
            hole_punching: None,
            turn: None,
        }
    }

    /// The config document for a site whose files live in `dir`.
    pub fn document(&self, dir: &Path) -> Value {
        let mut mqtt = json!({ "topic": self.topic });
        match self.broker {
            Broker::Embedded(addr) => {
                mqtt["embeddedBroker"] = json!({ "listen": addr.to_string() });
            }
            Broker::At(addr) => mqtt["brokerServer"] = json!(format!("mqtt://{addr}")),
        }
        let mut tunnel = json!({});
        let mut sockets: Vec<Value> = self
            .sockets
            .iter()
            .map(|(public, listen)| {
                json!({
                    "mode": "dedicated-address",
                    "transportProtocol": self.transport.as_str(),
                    "publicAddress": public.to_string(),
                    "listenAddress": listen.ip().to_string(),
                    "listenPort": listen.port(),
                })
            })
            .collect();
        if let Some(stun) = &self.hole_punching {
            let servers: Vec<String> = stun.iter().map(ToString::to_string).collect();
            sockets.push(json!({
                "mode": "hole-punching",
                "transportProtocol": "quic",
                "stunDetector": { "servers": servers },
            }));
        }
        if !sockets.is_empty() {
            tunnel["localSockets"] = Value::Array(sockets);
        }
        if let Some(turn) = &self.turn {
            tunnel["relay"] = json!({
                "turn": {
                    "url": turn.url,
                    "username": turn.username,
                    "password": turn.password,
                }
            });
        }
        if let Some(cc) = &self.congestion {
            tunnel["congestionControl"] = json!(cc);
        }
        let mut doc = json!({
            "siteName": self.name,
            "crypto": { "key": KEY },
            "logger": {
                "level": self.log_level,
                "file": dir.join("site.log").display().to_string(),
                "format": "text",
            },
            "messageChannel": { "protocol": "mqtt", "mqtt": mqtt },
            "tunnel": tunnel,
            "control": { "socket": dir.join(CONTROL_SOCKET).display().to_string() },
        });
        let exposed = |proto: &str, apps: &[(String, SocketAddr)]| -> Vec<Value> {
            apps.iter()
                .map(
                    |(app, addr)| json!({ "appName": app, "appSocket": format!("{proto}:{addr}") }),
                )
                .collect()
        };
        let remotes = |proto: &str, apps: &[(String, String, SocketAddr)]| -> Vec<Value> {
            apps.iter()
                .map(|(site, app, local)| {
                    json!({ "siteName": site, "appName": app, "localSocket": format!("{proto}:{local}") })
                })
                .collect()
        };
        let mut apps = exposed("tcp", &self.exposed);
        apps.extend(exposed("udp", &self.udp_exposed));
        if !apps.is_empty() {
            doc["localExposedApps"] = Value::Array(apps);
        }
        let mut apps = remotes("tcp", &self.remotes);
        apps.extend(remotes("udp", &self.udp_remotes));
        if !apps.is_empty() {
            doc["remoteApps"] = Value::Array(apps);
        }
        if let Some(addr) = self.metrics {
            doc["metrics"] = json!({ "listen": addr.to_string() });
        }
        doc
    }
}

/// A running `wovenetd run --config` with its tempdir (config, log, stdout/stderr).
/// Dropping it kills the process.
#[derive(Debug)]
pub struct SiteProcess {
    name: String,
    child: Child,
    dir: TempDir,
}

impl SiteProcess {
    /// Writes the config and starts `bin` with it, inside namespace `netns` if given.
    pub fn spawn(bin: &Path, spec: &SiteSpec, netns: Option<&str>) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wovenet-bench-{}-", spec.name))
            .tempdir()
            .ctx(|| "creating a site tempdir".into())?;
        let config = dir.path().join("site.yaml");
        let yaml = serde_yaml::to_string(&spec.document(dir.path()))
            .map_err(|e| BenchError::Report(format!("site yaml: {e}")))?;
        std::fs::write(&config, yaml).ctx(|| format!("writing {}", config.display()))?;
        let out =
            |name: &str| File::create(dir.path().join(name)).ctx(|| format!("creating {name}"));
        let mut cmd = match netns {
            None => Command::new(bin),
            Some(ns) => {
                // `ip netns exec` execs the daemon, so the pid (and its RSS) is the daemon's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
        };
        cmd.args([
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("WOVENET_LOG")
        .stdin(Stdio::null())
        .stdout(out("stdout.txt")?)
        .stderr(out("stderr.txt")?);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                // A killed runner must not leave daemons behind.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .ctx(|| format!("starting {} for site {}", bin.display(), spec.name))?;
        Ok(Self {
            name: spec.name.clone(),
            child,
            dir,
        })
    }

    /// The site name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its control socket (a unix socket: reachable from any network namespace).
    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join(CONTROL_SOCKET)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Result<u64, BenchError> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
        parse_vm_rss(&status).ok_or_else(|| self.failure(format!("no VmRSS in {path}")))
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("site.log")).unwrap_or_default()
    }

    /// The last `n` lines of its log and stderr, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let tail = |file: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "--- {} log:\n{}\n--- {} stderr:\n{}",
            self.name,
            tail("site.log"),
            self.name,
            tail("stderr.txt")
        )
    }

    /// Keeps its files (config, log, stderr) after it is gone, for a post-mortem, and
    /// returns where they are.
    pub fn keep_files(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }

    fn failure(&self, reason: String) -> BenchError {
        BenchError::Site {
            site: self.name.clone(),
            reason,
        }
    }

    /// SIGTERM, then waits up to 10 s for a clean exit; kills it and fails otherwise.
    pub async fn stop(mut self) -> Result<(), BenchError> {
        if self.exited().is_some() {
            return Ok(());
        }
        // SAFETY: a plain syscall on our own unreaped child, so the pid cannot be reused.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.exited().is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        Err(self.failure(format!(
            "still running 10 s after SIGTERM\n{}",
            self.log_tail(20)
        )))
    }
}

impl Drop for SiteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reason of the first `channel down` line of a site's text log, if any.
pub fn first_channel_down(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains("channel down"))
        .map(|l| match l.split_once("reason=") {
            Some((_, why)) => why.trim().to_owned(),
            None => l.trim().to_owned(),
        })
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// Where the two sites of a [`Tunnel`] run.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Both on this namespace's loopback, on free ports.
    Loopback,
    /// Site `a` in namespace `a`, site `b` in namespace `b` of a [`crate::wanem::Wanem`]:
    /// QUIC crosses the emulated link, MQTT the control link, apps stay on loopback.
    Wan {
        /// Namespace of the client side.
        a: String,
        /// Namespace of the server side.
        b: String,
    },
}

/// Ports used inside the emulator's namespaces (fresh namespaces, so fixed ports are free).
pub mod wan_ports {
    /// The embedded broker on site b's control address.
    pub const BROKER: u16 = 1883;
    /// Site b's (first) QUIC socket on the emulated link; further ones follow it.
    pub const QUIC: u16 = 4433;
    /// Site a's metrics endpoint, on namespace a's loopback.
    pub const METRICS: u16 = 9100;
    /// Site a's local socket for the remote app.
    pub const ENTRY: u16 = 5000;
    /// The app server in namespace b.
    pub const APP: u16 = 5001;
}

/// Name of the app the sites forward.
pub const APP_NAME: &str = "bench";

/// How long a tunnel may take to come up (key derivation, discovery, dial).
pub const READY: Duration = Duration::from_secs(60);

/// How a [`Tunnel`] is set up; `Default` is what most scenarios use (one dataChannel,
/// the daemon's congestion controller, no metrics endpoint).
#[derive(Debug, Clone, Default)]
pub struct TunnelOpts {
    /// `tunnel.congestionControl` of both sites; `None`: the daemon's default.
    pub congestion: Option<String>,
    /// QUIC sockets site b listens on; site a dials each, so this is the number of
    /// dataChannels of the tunnel. 0 counts as 1.
    pub channels: usize,
    /// Serve site a's `GET /metrics` ([`Tunnel::metrics`]), e.g. to see how streams spread
    /// over the channels.
    pub metrics: bool,
    /// What site b's sockets carry: QUIC over UDP, or QUIC framed over TCP.
    pub transport: ChannelTransport,
    /// A UDP app (as seen from `b`) to forward too, as [`UDP_APP_NAME`] (loopback only):
    /// [`Tunnel::udp_entry`].
    pub udp_app: Option<SocketAddr>,
}

/// The name of the UDP app of [`TunnelOpts::udp_app`].
pub const UDP_APP_NAME: &str = "bench-udp";

/// A dataChannel transport (`transportProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelTransport {
    /// QUIC over UDP.
    #[default]
    Quic,
    /// QUIC packets framed over TCP (the fallback for networks that drop UDP).
    Tcp,
}

impl ChannelTransport {
    /// The config spelling, also the records' `transport` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

/// Two sites forwarding one app: `b` runs the broker, listens for QUIC and exposes the app;
/// `a` dials each of `b`'s sockets (one dataChannel each) and serves the app on a local
/// socket ([`Tunnel::entry`]).
#[derive(Debug)]
pub struct Tunnel {
    /// The client side (remote app's local socket).
    pub a: SiteProcess,
    /// The server side (broker, QUIC listener, exposed app).
    pub b: SiteProcess,
    entry: Target,
    udp_entry: Option<SocketAddr>,
    quic_ports: Vec<u16>,
    metrics: Option<Target>,
}

impl Tunnel {
    /// Starts both sites forwarding to the app at `app` (as seen from `b`) over one
    /// dataChannel and waits until a connection through the tunnel completes an echo
    /// exchange (the app server must answer [`crate::load::ECHO`]), up to `ready`.
    pub async fn start(
        bin: &Path,
        app: SocketAddr,
        placement: &Placement,
        congestion: Option<&str>,
        ready: Duration,
    ) -> Result<Self, BenchError> {
        let opts = TunnelOpts {
            congestion: congestion.map(str::to_owned),
            ..TunnelOpts::default()
        };
        Self::start_with(bin, app, placement, &opts, ready).await
    }

    /// Like [`Tunnel::start`], with `opts`. Ready means one echo went through: with
    /// several channels the others may still be coming up.
    pub async fn start_with(
        bin: &Path,
        app: SocketAddr,
        placement: &Placement,
        opts: &TunnelOpts,
        ready: Duration,
    ) -> Result<Self, BenchError> {
        let topic = format!("wovenet-bench/{:016x}", rand::random::<u64>());
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let channels = opts.channels.max(1);
        let (broker, public, quic_ports, entry, metrics, ns_a, ns_b) = match placement {
            Placement::Loopback => (
                SocketAddr::new(lo, free_tcp_port()?),
                lo,
                match opts.transport {
                    ChannelTransport::Quic => free_udp_ports(channels)?,
                    ChannelTransport::Tcp => (0..channels)
                        .map(|_| free_tcp_port())
                        .collect::<Result<_, _>>()?,
                },
                SocketAddr::new(lo, free_tcp_port()?),
                SocketAddr::new(lo, free_tcp_port()?),
                None,
                None,
            ),
            Placement::Wan { a, b } => (
                SocketAddr::new(CONTROL_B.into(), wan_ports::BROKER),
                IpAddr::V4(ADDR_B),
                (0..channels).map(|i| wan_ports::QUIC + i as u16).collect(),
                SocketAddr::new(lo, wan_ports::ENTRY),
                SocketAddr::new(lo, wan_ports::METRICS),
                Some(a.as_str()),
                Some(b.as_str()),
            ),
        };
        let spec_b = SiteSpec {
            sockets: quic_ports
                .iter()
                .map(|&port| (public, SocketAddr::new(public, port)))
                .collect(),
            transport: opts.transport,
            exposed: vec![(APP_NAME.into(), app)],
            udp_exposed: opts
                .udp_app
                .map(|u| (UDP_APP_NAME.into(), u))
                .into_iter()
                .collect(),
            congestion: opts.congestion.clone(),
            ..SiteSpec::new("bench-b", topic.clone(), Broker::Embedded(broker))
        };
        let udp_entry = match (opts.udp_app, placement) {
            (Some(_), Placement::Loopback) => Some(SocketAddr::new(lo, free_udp_port()?)),
            _ => None,
        };
        let spec_a = SiteSpec {
            remotes: vec![("bench-b".into(), APP_NAME.into(), entry)],
            udp_remotes: udp_entry
                .map(|u| ("bench-b".into(), UDP_APP_NAME.into(), u))
                .into_iter()
                .collect(),
            congestion: opts.congestion.clone(),
            metrics: opts.metrics.then_some(metrics),
            ..SiteSpec::new("bench-a", topic, Broker::At(broker))
        };
        let b = SiteProcess::spawn(bin, &spec_b, ns_b)?;
        let a = SiteProcess::spawn(bin, &spec_a, ns_a)?;
        let in_a = |t: Target| match ns_a {
            Some(ns) => t.in_netns(ns),
            None => t,
        };
        let mut tunnel = Self {
            a,
            b,
            entry: in_a(Target::direct(entry)),
            udp_entry,
            quic_ports,
            metrics: opts.metrics.then(|| in_a(Target::direct(metrics))),
        };
        tunnel.wait_ready(ready).await?;
        Ok(tunnel)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        let mut last = String::from("no attempt");
        while start.elapsed() < timeout {
            for site in [&mut self.a, &mut self.b] {
                if let Some(status) = site.exited() {
                    return Err(site.failure(format!("exited ({status})\n{}", site.log_tail(30))));
                }
            }
            match tokio::time::timeout(Duration::from_secs(3), self.entry.echo_once()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "echo timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(self.a.failure(format!(
            "the tunnel did not forward within {timeout:?} (last: {last})\n{}\n{}",
            self.a.log_tail(30),
            self.b.log_tail(30)
        )))
    }

    /// The daemons' pids, client side (`a`) first.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.a.pid(), self.b.pid()]
    }

    /// Where clients connect to reach the app through the tunnel.
    pub fn entry(&self) -> &Target {
        &self.entry
    }

    /// Where UDP clients send to reach [`TunnelOpts::udp_app`] through the tunnel.
    pub fn udp_entry(&self) -> Option<SocketAddr> {
        self.udp_entry
    }

    /// The UDP ports of site b's QUIC sockets, one per dataChannel.
    pub fn quic_ports(&self) -> &[u16] {
        &self.quic_ports
    }

    /// Site a's metrics endpoint, when started with [`TunnelOpts::metrics`].
    pub fn metrics(&self) -> Option<&Target> {
        self.metrics.as_ref()
    }

    /// Site a's `GET /metrics` body (OpenMetrics text), when it serves one.
    pub async fn scrape_metrics(&self) -> Result<String, BenchError> {
        let Some(target) = &self.metrics else {
            return Err(self.a.failure("started without a metrics endpoint".into()));
        };
        http_get(target, "/metrics")
            .await
            .ctx(|| format!("scraping site a's metrics at {}", target.addr))
    }

    /// Keeps both sites' files and describes them with their log tails: for an error
    /// message after a measurement through the tunnel failed.
    pub fn post_mortem(&mut self) -> String {
        let cause = [&self.a, &self.b]
            .iter()
            .find_map(|s| first_channel_down(&s.log()))
            .unwrap_or_else(|| "no channel went down".to_owned());
        format!(
            "first channel down: {cause}; {}",
            keep_both(&mut self.a, &mut self.b)
        )
    }

    /// Stops both sites cleanly.
    pub async fn stop(self) -> Result<(), BenchError> {
        stop_both(self.a, self.b).await
    }
}

/// Keeps the files of the two sites of a tunnel and says where, with their log tails.
pub fn keep_both(a: &mut SiteProcess, b: &mut SiteProcess) -> String {
    let (da, db) = (a.keep_files(), b.keep_files());
    format!(
        "site files kept in {} and {}\n{}\n{}",
        da.display(),
        db.display(),
        a.log_tail(15),
        b.log_tail(15)
    )
}

/// Stops the two sites of a tunnel cleanly; the first failure, if any.
pub async fn stop_both(a: SiteProcess, b: SiteProcess) -> Result<(), BenchError> {
    let ra = a.stop().await;
    let rb = b.stop().await;
    ra.and(rb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_channel_down_reason_is_found_in_a_text_log() {
        let log = "x INFO site: peer connected\n\
                   x INFO channel{channel.id=1}: wovenet_daemon::tunnel: channel down reason=too many gaps\n\
                   x INFO channel{channel.id=2}: wovenet_daemon::tunnel: channel down reason=later\n";
        assert_eq!(first_channel_down(log).as_deref(), Some("too many gaps"));
        assert_eq!(first_channel_down("nothing\n"), None);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\twovenetd\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn a_dial_only_site_has_no_sockets_and_points_at_the_broker() {
        let broker: SocketAddr = "10.78.0.2:1883".parse().unwrap();
        let spec = SiteSpec {
            remotes: vec![(
                "b".into(),
                "bench".into(),
                "127.0.0.1:5000".parse().unwrap(),
            )],
            congestion: Some("bbr".into()),
            ..SiteSpec::new("a", "t", Broker::At(broker))
        };
        let doc = spec.document(Path::new("/tmp/x"));
        assert_eq!(
            doc["messageChannel"]["mqtt"]["brokerServer"],
            "mqtt://10.78.0.2:1883"
        );
        assert!(doc["tunnel"].get("localSockets").is_none());
        assert_eq!(doc["tunnel"]["congestionControl"], "bbr");
        assert_eq!(doc["remoteApps"][0]["localSocket"], "tcp:127.0.0.1:5000");
        assert_eq!(doc["logger"]["file"], "/tmp/x/site.log");
        assert!(doc.get("metrics").is_none());
    }

    #[test]
    fn the_serving_site_runs_the_broker_and_one_quic_socket_per_channel() {
        let spec = SiteSpec {
            sockets: [4433, 4434]
                .into_iter()
                .map(|port| {
                    (
                        "10.77.0.2".parse().unwrap(),
                        SocketAddr::from(([10, 77, 0, 2], port)),
                    )
                })
                .collect(),
            exposed: vec![("bench".into(), "127.0.0.1:5001".parse().unwrap())],
            metrics: Some("127.0.0.1:9100".parse().unwrap()),
            ..SiteSpec::new(
                "b",
                "t",
                Broker::Embedded("127.0.0.1:1883".parse().unwrap()),
            )
        };
        let doc = spec.document(Path::new("/d"));
        let mqtt = &doc["messageChannel"]["mqtt"];
        assert_eq!(mqtt["embeddedBroker"]["listen"], "127.0.0.1:1883");
        assert!(mqtt.get("brokerServer").is_none());
        let socks = doc["tunnel"]["localSockets"].as_array().unwrap();
        assert_eq!(socks.len(), 2);
        assert_eq!(socks[0]["publicAddress"], "10.77.0.2");
        assert_eq!(socks[0]["mode"], "dedicated-address");
        assert_eq!(socks[0]["listenPort"], 4433);
        assert_eq!(socks[1]["listenAddress"], "10.77.0.2");
        assert_eq!(socks[1]["listenPort"], 4434);
        assert_eq!(
            doc["localExposedApps"][0]["appSocket"],
            "tcp:127.0.0.1:5001"
        );
        assert!(doc["tunnel"].get("congestionControl").is_none());
        assert_eq!(doc["metrics"]["listen"], "127.0.0.1:9100");
    }

    #[test]
    fn a_site_behind_a_nat_punches_from_one_socket_and_may_offer_a_turn_relay() {
        let spec = SiteSpec {
            hole_punching: Some(vec![
                "198.18.0.2:3478".parse().unwrap(),
                "198.18.0.3:3478".parse().unwrap(),
            ]),
            turn: Some(TurnRelay {
                url: "turn:198.18.0.4:3478".into(),
                username: "u".into(),
                password: "p".into(),
            }),
            ..SiteSpec::new("b", "t", Broker::At("198.18.0.2:1883".parse().unwrap()))
        };
        let doc = spec.document(Path::new("/d"));
        let socks = doc["tunnel"]["localSockets"].as_array().unwrap();
        assert_eq!(socks.len(), 1);
        assert_eq!(socks[0]["mode"], "hole-punching");
        assert_eq!(
            socks[0]["stunDetector"]["servers"],
            json!(["198.18.0.2:3478", "198.18.0.3:3478"])
        );
        assert!(socks[0].get("listenPort").is_none(), "any port");
        assert_eq!(
            doc["tunnel"]["relay"]["turn"],
            json!({ "url": "turn:198.18.0.4:3478", "username": "u", "password": "p" })
        );
        assert_eq!(doc["control"]["socket"], "/d/control.sock");
        let plain = SiteSpec {
            hole_punching: None,
            turn: None,
            ..spec
        };
        let doc = plain.document(Path::new("/d"));
        assert!(doc["tunnel"].get("localSockets").is_none());
        assert!(doc["tunnel"].get("relay").is_none());
    }

    #[test]
    fn free_udp_ports_are_distinct() {
        let ports = free_udp_ports(4).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 4, "{ports:?}");
    }
}
