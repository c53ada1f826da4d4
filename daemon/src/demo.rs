//! `wovenetd demo`: a self-contained tour on loopback. One process runs an
//! embedded MQTT broker and two sites; `demo-server` exposes a tiny built-in
//! HTTP app, `demo-client` serves it on a local port. Uses the real engine
//! end to end (discovery, sealed messages, QUIC tunnel, key proof, streams).
//! Each site serves its control API (the same [`Control`] as `wovenetd run`)
//! on a socket in a private temporary directory, removed on exit, and the demo
//! prints the `wovenet-tui` and `wovenetctl` commands that attach to them.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::{
    AppName, AppSocket, BrokerUrl, Config, ControlConfig, CryptoConfig, CryptoKey, EmbeddedBroker,
    ExposedApp, ExposedTarget, LocalSocket, LogFormat, LogLevel, LoggerConfig, MqttConfig,
    PublicAddress, RemoteApp, SiteName, SocketMode, Transport, TunnelConfig,
};
use crate::control::{Control, ControlStartError};
use crate::signals::{Signal, Signals};
use crate::{Daemon, DaemonError, Running};

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A local port could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A site failed to start.
    #[error(transparent)]
    Site(#[from] DaemonError),
    /// A site's control socket could not be served.
    #[error(transparent)]
    Control(#[from] ControlStartError),
    /// A name in the built-in config was rejected (a bug).
    #[error("internal demo config: {0}")]
    Config(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Runs the demo until Ctrl-C / SIGTERM; `port` is where the client site serves the app.
pub async fn run(port: u16) -> Result<(), DemoError> {
    let logger = LoggerConfig {
        level: LogLevel::Info,
        file: None,
        format: LogFormat::Text,
    };
    let _ = crate::telemetry::init(&logger);
    let mut signals = Signals::install().map_err(io("cannot install signal handlers"))?;
    let local: SocketAddr = (LOOPBACK, port).into();
    // Fail early and clearly if the user's port is taken.
    drop(StdListener::bind(local).map_err(io(format!(
        "cannot use {local} for the demo (try `wovenetd demo --port N`)"
    )))?);
    let broker_port = StdListener::bind((LOOPBACK, 0))
        .and_then(|l| l.local_addr())
        .map_err(io("cannot pick a broker port"))?
        .port();
    let app = TcpListener::bind((LOOPBACK, 0))
        .await
        .map_err(io("cannot start the demo http app"))?;
    let app_addr = app.local_addr().map_err(io("demo http app address"))?;
    let cancel = CancellationToken::new();
    let app_task = tokio::spawn(serve_hello(app, cancel.clone()));

    let mut rng = rand::thread_rng();
    let key: String = (0..24)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect();
    let topic = format!("wovenet-demo/{:016x}", rng.r#gen::<u64>());
    let name = |s: &str| SiteName::new(s).map_err(DemoError::Config);
    let app_name = AppName::new("hello").map_err(DemoError::Config)?;
    let base = |site: SiteName, embedded: Option<EmbeddedBroker>| -> Result<Config, DemoError> {
        Ok(Config {
            site_name: site,
            crypto: CryptoConfig {
                key: CryptoKey::new(key.clone()).map_err(DemoError::Config)?,
            },
            logger: logger.clone(),
            message_channel: MqttConfig {
                broker: BrokerUrl {
                    tls: false,
                    host: LOOPBACK.to_string(),
                    port: broker_port,
                },
                topic: Some(topic.clone()),
                username: None,
                password: None,
                embedded_broker: embedded,
                ca_file: None,
            },
            tunnel: TunnelConfig {
                local_sockets: vec![],
                congestion_control: Default::default(),
                max_streams_per_peer: crate::limit::DEFAULT_STREAMS_PER_PEER,
                worker_threads: crate::config::DEFAULT_WORKER_THREADS,
                relay: None,
            },
            exposed_apps: vec![],
            remote_apps: vec![],
            control: ControlConfig::default(),
            metrics: Default::default(),
            trust: Default::default(),
            warnings: vec![],
        })
    };
    let mut server = base(
        name("demo-server")?,
        Some(EmbeddedBroker {
            listen: (LOOPBACK, broker_port).into(),
        }),
    )?;
    server.tunnel.local_sockets.push(LocalSocket {
        mode: SocketMode::DedicatedAddress,
        public_address: PublicAddress::Fixed(LOOPBACK.into()),
        public_port: 0,
        listen: (LOOPBACK, 0).into(),
        stun_servers: Vec::new(),
        transport: Transport::Quic,
    });
    server.exposed_apps.push(ExposedApp {
        name: app_name.clone(),
        target: ExposedTarget::Single(AppSocket::Tcp(app_addr)),
        max_connections: None,
        allowed_sites: Vec::new(),
        udp_idle_timeout: None,
        bandwidth_limit: None,
        proxy_protocol: None,
    });
    let mut client = base(name("demo-client")?, None)?;
    client.remote_apps.push(RemoteApp {
        site: name("demo-server")?,
        app: app_name,
        local_socket: AppSocket::Tcp(local),
        app_socket: None,
        max_connections: None,
        udp_idle_timeout: None,
        bandwidth_limit: None,
    });

    // Private (0700) and removed when `sockets` drops, after both sites stopped.
    let sockets = tempfile::Builder::new()
        .prefix("wovenet-demo-")
        .tempdir()
        .map_err(io("cannot create a directory for the control sockets"))?;
    let server_socket = sockets.path().join("demo-server.sock");
    let client_socket = sockets.path().join("demo-client.sock");
    let server_control = Control::bind(&server_socket, None).await?;
    let client_control = Control::bind(&client_socket, None).await?;

    let started = Instant::now();
    let server = Daemon::start(server).await?;
    serve_control(server_control, &server);
    let client = Daemon::start(client).await?;
    serve_control(client_control, &client);
    println!();
    println!(
        "wovenet demo: embedded broker on 127.0.0.1:{broker_port}, sites 'demo-server' and 'demo-client'"
    );
    println!("  demo-server exposes app 'hello' (a built-in http server on {app_addr})");
    println!("  demo-client serves it through the QUIC tunnel on http://{local}/");
    println!(
        "  control sockets in {} (removed on exit); watch and change the sites from another terminal:",
        sockets.path().display()
    );
    println!("    {}", attach_command("wovenet-tui", &client_socket, &[]));
    println!(
        "    {}",
        attach_command("wovenetctl", &server_socket, &["apps"])
    );
    match wait_ready(local, Duration::from_secs(20)).await {
        Some(body) => {
            println!(
                "tunnel up after {:.2?}; the app answered: {}",
                started.elapsed(),
                body.lines().next().unwrap_or_default()
            );
            println!("try:  curl http://{local}/      (Ctrl-C to stop)");
        }
        None => println!("the tunnel is not up after 20 s; see the log above (Ctrl-C to stop)"),
    }
    println!();
    // The demo has no config file: a reload has nothing to re-read.
    while signals.recv().await != Signal::Shutdown {}
    cancel.cancel();
    client.shutdown(Duration::from_secs(3)).await;
    server.shutdown(Duration::from_secs(3)).await;
    let _ = app_task.await;
    drop(sockets);
    Ok(())
}

/// Serves `site`'s control API on `control`, as `wovenetd run` does.
fn serve_control(control: Control, site: &Running) {
    control.spawn(
        site.handle().clone(),
        site.counters().clone(),
        site.shutdown_token(),
        site.tracker(),
    );
}

/// Where a client program was found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// `PATH` finds it (the copy beside this `wovenetd`, if there is one).
    OnPath,
    /// Beside this `wovenetd` (say `target/release/`) but not on `PATH`.
    Beside(PathBuf),
    /// Neither: this `wovenetd` was built alone (`cargo run -p wovenet-daemon`).
    Nowhere,
}

/// Looks for client `program` beside this executable and on `PATH`.
fn find(program: &str) -> Found {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(program)))
        .filter(|p| p.is_file());
    let on_path = std::env::var_os("PATH").and_then(|path| find_on_path(&path, program));
    match (beside, on_path) {
        (Some(b), Some(p)) if !same_file(&b, &p) => Found::Beside(b),
        (Some(b), None) => Found::Beside(b),
        (_, Some(_)) => Found::OnPath,
        (None, None) => Found::Nowhere,
    }
}

/// The words that start client `program`: its name, its path, or, when it was
/// never built, `cargo run` from the clone (in the profile this `wovenetd` has).
fn launcher(program: &str, found: &Found, release: bool) -> Vec<String> {
    match found {
        Found::OnPath => vec![program.to_owned()],
        Found::Beside(path) => vec![path.display().to_string()],
        Found::Nowhere => {
            let mut words = vec!["cargo", "run"];
            if release {
                words.push("--release");
            }
            words.extend(["-p", "wovenet-tui", "--bin", program, "--"]);
            words.into_iter().map(str::to_owned).collect()
        }
    }
}

/// The shell command that attaches client `program` to `socket`, then `tail`.
fn attach_command(program: &str, socket: &Path, tail: &[&str]) -> String {
    let release = !cfg!(debug_assertions);
    let mut words = launcher(program, &find(program), release);
    words.extend(["--socket".to_owned(), socket.display().to_string()]);
    words.extend(tail.iter().map(|w| (*w).to_owned()));
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

fn find_on_path(path: &OsStr, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// POSIX shell quoting, so the printed line can be pasted whatever the
/// temporary directory's name.
fn quote(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| format!("{word:?}"), |q| q.into_owned())
}

/// Polls the client site's listener until an HTTP request through the tunnel succeeds.
async fn wait_ready(addr: SocketAddr, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Ok(body)) = tokio::time::timeout(Duration::from_secs(2), http_get(addr)).await {
            return Some(body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other("no http response")),
    }
}

/// The demo's "private" app: answers every request with a greeting.
async fn serve_hello(listener: TcpListener, cancel: CancellationToken) {
    let mut served = 0u64;
    loop {
        let (mut sock, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        served += 1;
        let n = served;
        tokio::spawn(async move {
            // Read the request head (bounded) before answering.
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            while len < buf.len() {
                match sock.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => len += k,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let body = format!(
                "Hello from site 'demo-server', reached through a wovenet QUIC tunnel.\nrequest #{n}, the app saw the connection come from {peer} (the exposing site's side of the tunnel)\n"
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_started_by_name_by_path_or_through_cargo() {
        assert_eq!(launcher("wovenetctl", &Found::OnPath, true), ["wovenetctl"]);
        let beside = Found::Beside(PathBuf::from("/clone/target/release/wovenet-tui"));
        assert_eq!(
            launcher("wovenet-tui", &beside, true),
            ["/clone/target/release/wovenet-tui"]
        );
        assert_eq!(
            launcher("wovenet-tui", &Found::Nowhere, true).join(" "),
            "cargo run --release -p wovenet-tui --bin wovenet-tui --"
        );
        assert_eq!(
            launcher("wovenetctl", &Found::Nowhere, false).join(" "),
            "cargo run -p wovenet-tui --bin wovenetctl --"
        );
    }

    #[test]
    fn the_printed_command_survives_a_shell() {
        let line = attach_command("wovenetctl", Path::new("/tmp/a b/$x.sock"), &["apps"]);
        let words = shlex::split(&line).expect("shell words");
        let n = words.len();
        assert_eq!(
            words[n - 3..],
            ["--socket", "/tmp/a b/$x.sock", "apps"],
            "{line}"
        );
    }
}
