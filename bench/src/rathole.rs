//! rathole (<https://github.com/rapiz1/rathole>), the reference the targets compare
//! the tunnel with: finding an installed binary, writing a server and a client config
//! into a tempdir, running both on loopback in front of the app server. Both of its
//! encrypted transports ([`Flavor`]) can be used, so the traffic is encrypted like
//! wovenet's QUIC: `tls` (OpenSSL through native-tls: the fastest here, so the reference
//! the targets name) and `noise` (`Noise_NK_25519_ChaChaPoly_BLAKE2s`). For `tls` a CA and
//! a `localhost` certificate are made with rcgen and packed into PKCS#12 (what rathole's
//! server takes) with the `openssl` command; without it the `tls` comparison is skipped.
//!
//! rathole is never a dependency of the project: it is an external binary that is used
//! when installed (`cargo install rathole`) and reported as skipped otherwise. This module
//! must not panic and must not fail a scenario by itself; it returns errors.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::daemon::free_tcp_port;
use crate::error::{BenchError, IoContext};
use crate::load::Target;
use crate::report::{Record, Report};

/// Env var naming the rathole binary to use (instead of `PATH` and `~/.cargo/bin`).
pub const RATHOLE_ENV: &str = "WOVENET_RATHOLE";

/// The note reported in place of the comparison when no binary is found.
pub const NOT_INSTALLED: &str =
    "rathole not installed: cargo install rathole (or set WOVENET_RATHOLE)";

/// One of rathole's encrypted transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// TLS 1.3 over TCP (OpenSSL).
    Tls,
    /// Noise over TCP.
    Noise,
}

impl Flavor {
    /// Both, the reference first.
    pub const ALL: [Self; 2] = [Self::Tls, Self::Noise];

    /// rathole's name for it, as reported in the records' `transport` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Noise => "noise",
        }
    }

    /// `rathole-tls` / `rathole-noise`, the baseline name in records.
    pub fn label(self) -> String {
        format!("rathole-{}", self.as_str())
    }
}

/// The password of the PKCS#12 file (the file lives in a private tempdir for one run).
const PKCS12_PASSWORD: &str = "wovenet-bench";
/// The name the `tls` client checks in the server's certificate.
const TLS_HOSTNAME: &str = "localhost";

/// How long rathole may take to forward (it needs well under a second; this only bounds
/// how long a broken one delays the run).
pub const READY: Duration = Duration::from_secs(20);

/// The name of the one service rathole forwards.
const SERVICE: &str = "bench";

/// The rathole binary to use: `$WOVENET_RATHOLE` when set (and nothing else, so an
/// explicit choice never silently falls back), else `rathole` on `PATH`, else
/// `$HOME/.cargo/bin/rathole`; `None` when there is none.
pub fn find_rathole() -> Option<PathBuf> {
    pick_binary(
        std::env::var_os(RATHOLE_ENV),
        std::env::var_os("PATH"),
        std::env::var_os("HOME"),
        |p| p.is_file(),
    )
}

/// Starts rathole with `flavor` in front of `app` for a comparison in `scenario`. When it
/// is not installed or does not start, a [`skipped_record`] goes into `report` (the whole
/// error, with its logs, to stderr) and the scenario goes on without it.
pub async fn for_comparison(
    scenario: &str,
    app: SocketAddr,
    flavor: Flavor,
    report: &mut Report,
) -> Option<Rathole> {
    let started = match find_rathole() {
        None => Err(NOT_INSTALLED.to_owned()),
        Some(bin) => Rathole::start(&bin, app, flavor, READY).await.map_err(|e| {
            eprintln!("bench: {e}");
            skip_note(&e)
        }),
    };
    started
        .map_err(|note| {
            report.push(skipped_record(
                scenario,
                format!("{}: {note}", flavor.label()),
            ))
        })
        .ok()
}

/// [`for_comparison`] for every [`Flavor`] (those that start).
pub async fn all_for_comparison(
    scenario: &str,
    app: SocketAddr,
    report: &mut Report,
) -> Vec<Rathole> {
    let mut running = Vec::new();
    for flavor in Flavor::ALL {
        running.extend(for_comparison(scenario, app, flavor, report).await);
    }
    running
}

/// The one-line note for a comparison that failed with `e`.
pub fn skip_note(e: &BenchError) -> String {
    let first = e.to_string();
    format!(
        "rathole comparison skipped: {}",
        first.lines().next().unwrap_or_default()
    )
}

/// The record standing for a skipped comparison in `scenario`'s table.
pub fn skipped_record(scenario: &str, note: impl Into<String>) -> Record {
    Record::new(scenario, "rathole_skipped", 0.0, "").note(note)
}

/// [`find_rathole`]'s choice, given the environment and a test for a file's existence.
fn pick_binary(
    explicit: Option<OsString>,
    path: Option<OsString>,
    home: Option<OsString>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(bin) = explicit.filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return exists(&bin).then_some(bin);
    }
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("rathole"));
    let in_cargo = home.map(|h| PathBuf::from(h).join(".cargo/bin/rathole"));
    on_path.chain(in_cargo).find(|p| exists(p))
}

/// An X25519 keypair in base64, as `rathole --genkey` prints it. The private key stays
/// out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Keypair {
    /// The server's private key (`local_private_key`).
    pub private: String,
    /// The public key the client checks the server with (`remote_public_key`).
    pub public: String,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("private", &"<redacted>")
            .field("public", &self.public)
            .finish()
    }
}

/// Reads the keypair from the output of `rathole --genkey`:
/// `Private Key:\n<base64>\n\nPublic Key:\n<base64>\n`. `None` when either is missing or
/// is not base64 (so it cannot break out of a TOML string).
pub fn parse_genkey(output: &str) -> Option<Keypair> {
    let after = |label: &str| {
        let mut lines = output.lines().map(str::trim);
        lines.find(|l| *l == label)?;
        let key = lines.find(|l| !l.is_empty())?;
        let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
        key.chars().all(base64).then(|| key.to_owned())
    };
    Some(Keypair {
        private: after("Private Key:")?,
        public: after("Public Key:")?,
    })
}

/// The secrets of one transport.
#[derive(Debug, Clone)]
pub enum Secrets {
    /// The noise keys.
    Noise(Keypair),
    /// TLS: the server's PKCS#12 identity (with a fixed password) and the CA the client
    /// trusts, as files.
    Tls {
        /// `[server.transport.tls] pkcs12`.
        pkcs12: PathBuf,
        /// `[client.transport.tls] trusted_root`.
        root: PathBuf,
    },
}

/// Everything both configs are made of.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the server listens for its client (`[server] bind_addr`).
    pub control: SocketAddr,
    /// Where the server exposes the service to visitors (the entry the load generators use).
    pub entry: SocketAddr,
    /// The app the client forwards to.
    pub app: SocketAddr,
    /// The service's shared token.
    pub token: String,
    /// The transport and its secrets.
    pub secrets: Secrets,
}

impl Plan {
    fn flavor(&self) -> Flavor {
        match self.secrets {
            Secrets::Noise(_) => Flavor::Noise,
            Secrets::Tls { .. } => Flavor::Tls,
        }
    }
}

/// A TOML basic string holding `p` (tempdir paths: no quote or control character, but
/// escaped all the same).
fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The server's TOML. `nodelay` is spelled out (it is rathole's default) because the
/// latency comparison depends on it, as it does for the tunnel.
pub fn server_toml(plan: &Plan) -> String {
    let transport = match &plan.secrets {
        Secrets::Noise(keys) => format!(
            "[server.transport.noise]\nlocal_private_key = \"{}\"\n",
            keys.private
        ),
        Secrets::Tls { pkcs12, .. } => format!(
            "[server.transport.tls]\npkcs12 = {}\npkcs12_password = \"{PKCS12_PASSWORD}\"\n",
            toml_path(pkcs12)
        ),
    };
    format!(
        "[server]\n\
         bind_addr = \"{control}\"\n\
         \n\
         [server.transport]\n\
         type = \"{flavor}\"\n\
         \n\
         [server.transport.tcp]\n\
         nodelay = true\n\
         \n\
         {transport}\
         \n\
         [server.services.{SERVICE}]\n\
         token = \"{token}\"\n\
         bind_addr = \"{entry}\"\n",
        control = plan.control,
        flavor = plan.flavor().as_str(),
        token = plan.token,
        entry = plan.entry,
    )
}

/// The client's TOML (retries once a second, rathole's shortest interval).
pub fn client_toml(plan: &Plan) -> String {
    let transport = match &plan.secrets {
        Secrets::Noise(keys) => format!(
            "[client.transport.noise]\nremote_public_key = \"{}\"\n",
            keys.public
        ),
        Secrets::Tls { root, .. } => format!(
            "[client.transport.tls]\ntrusted_root = {}\nhostname = \"{TLS_HOSTNAME}\"\n",
            toml_path(root)
        ),
    };
    format!(
        "[client]\n\
         remote_addr = \"{control}\"\n\
         retry_interval = 1\n\
         \n\
         [client.transport]\n\
         type = \"{flavor}\"\n\
         \n\
         [client.transport.tcp]\n\
         nodelay = true\n\
         \n\
         {transport}\
         \n\
         [client.services.{SERVICE}]\n\
         token = \"{token}\"\n\
         local_addr = \"{app}\"\n",
        control = plan.control,
        flavor = plan.flavor().as_str(),
        token = plan.token,
        app = plan.app,
    )
}

/// A running rathole server and client forwarding [`Rathole::entry`] to the app. Dropping
/// it kills both.
#[derive(Debug)]
pub struct Rathole {
    server: Child,
    /// Started once the server listens.
    client: Option<Child>,
    entry: Target,
    flavor: Flavor,
    dir: TempDir,
}

impl Rathole {
    /// Starts rathole (`bin`) forwarding to the app at `app` on loopback and waits until a
    /// connection through it completes an echo exchange (the app server must answer
    /// [`crate::load::ECHO`]), up to `ready`.
    pub async fn start(
        bin: &Path,
        app: SocketAddr,
        flavor: Flavor,
        ready: Duration,
    ) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("wovenet-bench-rathole-")
            .tempdir()
            .ctx(|| "creating the rathole tempdir".into())?;
        let secrets = match flavor {
            Flavor::Noise => Secrets::Noise(genkey(bin)?),
            Flavor::Tls => tls_files(dir.path())?,
        };
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let plan = Plan {
            control: SocketAddr::new(lo, free_tcp_port()?),
            entry: SocketAddr::new(lo, free_tcp_port()?),
            app,
            token: format!("{:032x}", rand::random::<u128>()),
            secrets,
        };
        let server = spawn(bin, dir.path(), "server", &server_toml(&plan))?;
        let mut rathole = Self {
            server,
            client: None,
            entry: Target::direct(plan.entry),
            flavor,
            dir,
        };
        let start = Instant::now();
        // A client that finds no server backs off up to a second: start it once the server listens.
        rathole.wait_listening(plan.control, ready).await?;
        rathole.client = Some(spawn(
            bin,
            rathole.dir.path(),
            "client",
            &client_toml(&plan),
        )?);
        rathole
            .wait_forwarding(ready.saturating_sub(start.elapsed()))
            .await?;
        Ok(rathole)
    }

    /// Where clients connect to reach the app through rathole.
    pub fn entry(&self) -> &Target {
        &self.entry
    }

    /// The pids of the side clients connect to (rathole's server) and of the side that
    /// connects to the app (its client), in that order, like a tunnel's sites `a` and `b`.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.server.id())
            .chain(self.client.as_ref().map(Child::id))
            .collect()
    }

    /// Its transport.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    fn exited(&mut self) -> Option<String> {
        let children = [
            ("server", Some(&mut self.server)),
            ("client", self.client.as_mut()),
        ];
        for (role, child) in children {
            if let Some(Ok(Some(status))) = child.map(Child::try_wait) {
                return Some(format!("rathole {role} exited ({status})"));
            }
        }
        None
    }

    async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), BenchError> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(why) = self.exited() {
                return Err(self.failure(why));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(self.failure(format!(
            "the server did not listen on {addr} within {timeout:?}"
        )))
    }

    async fn wait_forwarding(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        let mut last = String::from("no attempt");
        while start.elapsed() < timeout {
            if let Some(why) = self.exited() {
                return Err(self.failure(why));
            }
            match tokio::time::timeout(Duration::from_secs(3), self.entry.echo_once()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "echo timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(self.failure(format!(
            "it did not forward within {timeout:?} (last: {last})"
        )))
    }

    /// An error saying `why`, with the tails of both logs.
    fn failure(&self, why: String) -> BenchError {
        let tail = |role: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{role}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        BenchError::Rathole(format!(
            "{why}\n--- rathole server log:\n{}\n--- rathole client log:\n{}",
            tail("server"),
            tail("client")
        ))
    }
}

impl Drop for Rathole {
    fn drop(&mut self) {
        for child in self.client.iter_mut().chain([&mut self.server]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh keypair from `rathole --genkey`.
fn genkey(bin: &Path) -> Result<Keypair, BenchError> {
    let out = Command::new(bin)
        .arg("--genkey")
        .stdin(Stdio::null())
        .output()
        .ctx(|| format!("running {} --genkey", bin.display()))?;
    if !out.status.success() {
        return Err(BenchError::Rathole(format!(
            "{} --genkey failed ({}) {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_genkey(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        BenchError::Rathole(format!(
            "cannot read a keypair from {} --genkey",
            bin.display()
        ))
    })
}

/// A CA and a `localhost` certificate it signed (rcgen), written into `dir` as the CA's PEM
/// and the server's PKCS#12 file (`openssl pkcs12 -export`).
fn tls_files(dir: &Path) -> Result<Secrets, BenchError> {
    let tls_err = |what: &str, e: rcgen::Error| BenchError::Rathole(format!("{what}: {e}"));
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA", e))?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wovenet-bench CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| tls_err("CA certificate", e))?;
    let params = rcgen::CertificateParams::new(vec![TLS_HOSTNAME.to_owned()])
        .map_err(|e| tls_err("server", e))?;
    let key = rcgen::KeyPair::generate().map_err(|e| tls_err("server key", e))?;
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| tls_err("server certificate", e))?;
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).ctx(|| format!("writing {}", path.display()))?;
        Ok::<_, BenchError>(path)
    };
    let root = write("ca.pem", ca.pem())?;
    let cert_pem = write("server.pem", cert.pem())?;
    let key_pem = write("server.key", key.serialize_pem())?;
    let pkcs12 = dir.join("server.p12");
    let out = Command::new("openssl")
        .args(["pkcs12", "-export", "-inkey"])
        .arg(&key_pem)
        .arg("-in")
        .arg(&cert_pem)
        .arg("-certfile")
        .arg(&root)
        .arg("-out")
        .arg(&pkcs12)
        .arg("-passout")
        .arg(format!("pass:{PKCS12_PASSWORD}"))
        .stdin(Stdio::null())
        .output()
        .ctx(|| "running openssl pkcs12 (needed for rathole's tls transport)".into())?;
    if !out.status.success() {
        return Err(BenchError::Rathole(format!(
            "openssl pkcs12 -export failed ({}) {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(Secrets::Tls { pkcs12, root })
}

/// Writes `<role>.toml` into `dir` and starts `bin --<role>` on it, logging (stdout and
/// stderr) to `<role>.log`.
fn spawn(bin: &Path, dir: &Path, role: &str, toml: &str) -> Result<Child, BenchError> {
    let config = dir.join(format!("{role}.toml"));
    std::fs::write(&config, toml).ctx(|| format!("writing {}", config.display()))?;
    let log_path = dir.join(format!("{role}.log"));
    let log = File::create(&log_path).ctx(|| format!("creating {}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .ctx(|| format!("opening {} twice", log_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--{role}"))
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    die_with_parent(&mut cmd);
    cmd.spawn()
        .ctx(|| format!("starting {} --{role}", bin.display()))
}

/// A killed runner must not leave rathole behind.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENKEY: &str = "Private Key:\ncQ/vwIqNPJZmuM/OikglzBo/+jlYGrOt9i0k5h5vn1Q=\n\n\
                          Public Key:\nGQYTKSbWLBUSZiGfdWPSgek9yoOuaiwGD/GIX8Z1kkE=\n";

    fn plan() -> Plan {
        Plan {
            control: "127.0.0.1:4000".parse().unwrap(),
            entry: "127.0.0.1:4001".parse().unwrap(),
            app: "127.0.0.1:4002".parse().unwrap(),
            token: "t0k3n".into(),
            secrets: Secrets::Noise(parse_genkey(GENKEY).unwrap()),
        }
    }

    fn tls_plan() -> Plan {
        Plan {
            secrets: Secrets::Tls {
                pkcs12: "/tmp/r/server.p12".into(),
                root: "/tmp/r/ca.pem".into(),
            },
            ..plan()
        }
    }

    #[test]
    fn over_tls_the_server_holds_the_identity_and_the_client_checks_the_ca() {
        let server = server_toml(&tls_plan());
        for line in [
            "[server.transport]\ntype = \"tls\"\n",
            "[server.transport.tls]\npkcs12 = \"/tmp/r/server.p12\"\npkcs12_password = \"wovenet-bench\"\n",
            "[server.services.bench]\ntoken = \"t0k3n\"\nbind_addr = \"127.0.0.1:4001\"\n",
        ] {
            assert!(server.contains(line), "{line:?} missing from:\n{server}");
        }
        assert!(!server.contains("noise"), "{server}");
        let client = client_toml(&tls_plan());
        for line in [
            "[client.transport]\ntype = \"tls\"\n",
            "[client.transport.tls]\ntrusted_root = \"/tmp/r/ca.pem\"\nhostname = \"localhost\"\n",
        ] {
            assert!(client.contains(line), "{line:?} missing from:\n{client}");
        }
        assert!(!client.contains("p12"), "{client}");
    }

    #[test]
    fn the_tls_files_are_a_ca_and_a_pkcs12_identity() {
        let dir = tempfile::tempdir().unwrap();
        let Secrets::Tls { pkcs12, root } = tls_files(dir.path()).unwrap() else {
            panic!("not tls");
        };
        assert!(
            std::fs::read_to_string(root)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(std::fs::metadata(pkcs12).unwrap().len() > 500);
    }

    #[test]
    fn the_keypair_is_read_from_genkey_output() {
        let keys = parse_genkey(GENKEY).unwrap();
        assert_eq!(keys.private, "cQ/vwIqNPJZmuM/OikglzBo/+jlYGrOt9i0k5h5vn1Q=");
        assert_eq!(keys.public, "GQYTKSbWLBUSZiGfdWPSgek9yoOuaiwGD/GIX8Z1kkE=");
        assert!(!format!("{keys:?}").contains(&keys.private));
    }

    #[test]
    fn genkey_output_without_both_keys_or_with_odd_characters_is_refused() {
        assert_eq!(parse_genkey(""), None);
        assert_eq!(parse_genkey("Private Key:\nabc=\n"), None);
        assert_eq!(
            parse_genkey("Private Key:\nab\"c\n\nPublic Key:\nabc=\n"),
            None
        );
    }

    #[test]
    fn the_server_holds_the_private_key_and_exposes_the_entry_over_noise() {
        let toml = server_toml(&plan());
        for line in [
            "[server]\nbind_addr = \"127.0.0.1:4000\"\n",
            "[server.transport]\ntype = \"noise\"\n",
            "[server.transport.tcp]\nnodelay = true\n",
            "local_private_key = \"cQ/vwIqNPJZmuM/OikglzBo/+jlYGrOt9i0k5h5vn1Q=\"\n",
            "[server.services.bench]\ntoken = \"t0k3n\"\nbind_addr = \"127.0.0.1:4001\"\n",
        ] {
            assert!(toml.contains(line), "{line:?} missing from:\n{toml}");
        }
        assert!(!toml.contains("[client"), "{toml}");
    }

    #[test]
    fn the_client_checks_the_server_key_and_forwards_to_the_app() {
        let toml = client_toml(&plan());
        for line in [
            "[client]\nremote_addr = \"127.0.0.1:4000\"\n",
            "[client.transport]\ntype = \"noise\"\n",
            "remote_public_key = \"GQYTKSbWLBUSZiGfdWPSgek9yoOuaiwGD/GIX8Z1kkE=\"\n",
            "[client.services.bench]\ntoken = \"t0k3n\"\nlocal_addr = \"127.0.0.1:4002\"\n",
        ] {
            assert!(toml.contains(line), "{line:?} missing from:\n{toml}");
        }
        let Secrets::Noise(keys) = plan().secrets else {
            panic!("not noise");
        };
        assert!(!toml.contains(&keys.private), "{toml}");
        assert!(!toml.contains("[server"), "{toml}");
    }

    #[test]
    fn the_binary_is_the_explicit_one_else_on_path_else_in_cargo_bin() {
        let have = |files: &'static [&'static str]| {
            move |p: &Path| files.iter().any(|f| p == Path::new(f))
        };
        let path = Some(OsString::from("/usr/bin:/opt/bin"));
        let home = Some(OsString::from("/root"));
        let all: &[&str] = &["/x/rathole", "/opt/bin/rathole", "/root/.cargo/bin/rathole"];
        assert_eq!(
            pick_binary(
                Some("/x/rathole".into()),
                path.clone(),
                home.clone(),
                have(all)
            ),
            Some(PathBuf::from("/x/rathole"))
        );
        assert_eq!(
            pick_binary(
                Some("/y/rathole".into()),
                path.clone(),
                home.clone(),
                have(all)
            ),
            None,
            "an explicit binary that is missing does not fall back"
        );
        assert_eq!(
            pick_binary(None, path.clone(), home.clone(), have(all)),
            Some(PathBuf::from("/opt/bin/rathole"))
        );
        assert_eq!(
            pick_binary(
                None,
                path.clone(),
                home.clone(),
                have(&["/root/.cargo/bin/rathole"])
            ),
            Some(PathBuf::from("/root/.cargo/bin/rathole"))
        );
        assert_eq!(pick_binary(None, path, home, have(&[])), None);
    }
}
