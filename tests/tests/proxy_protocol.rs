//! Client addresses for exposed apps (`proxyProtocol: v1|v2`), checked against a real consumer
//! of the PROXY protocol header: HAProxy (Debian's package) with `accept-proxy` on its bind,
//! answering every HTTP request with the addresses it took from the header
//! (`http-request return … %[src] %[src_port] %[dst] %[dst_port] %[fc_rcvd_proxy]`). The test
//! asserts that body byte for byte: the client address and the listener address as site `a`
//! (the using site) saw them, for IPv4 and IPv6 (`::1` listener) clients, in both versions, and
//! the "unknown source" form for unix clients (HAProxy then reports its real peer, the
//! exposing site's loopback connection). HAProxy refuses a connection on an `accept-proxy`
//! bind that does not start with a header, so every answer also proves one was sent.
//!
//! Needs `haproxy` (on `PATH` or in `/usr/sbin`); without it the tests skip, unless
//! `WOVENET_REQUIRE_HAPROXY=1`, which makes a missing haproxy a failure (CI sets it).
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use wovenet_e2e::process::Process;
use wovenet_e2e::wait::retry;
use wovenet_e2e::*;

/// Env var: when `1`, a missing haproxy fails these tests instead of skipping them.
const REQUIRE_HAPROXY_ENV: &str = "WOVENET_REQUIRE_HAPROXY";

/// The haproxy binary, looked up on `PATH` and in `/usr/sbin` (where Debian installs it).
fn haproxy_available() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

/// `Some(path)` to go on; `None` to skip (after a message); panics when required.
fn require_haproxy() -> Option<PathBuf> {
    let required = std::env::var(REQUIRE_HAPROXY_ENV).is_ok_and(|v| v == "1");
    decide(haproxy_available(), required)
}

fn decide(found: Option<PathBuf>, required: bool) -> Option<PathBuf> {
    match (found, required) {
        (Some(p), _) => Some(p),
        (None, true) => panic!(
            "haproxy is not installed (looked on PATH and in /usr/sbin) but \
             {REQUIRE_HAPROXY_ENV}=1; install it (apt-get install haproxy)"
        ),
        (None, false) => {
            eprintln!(
                "skipping: haproxy not installed (set {REQUIRE_HAPROXY_ENV}=1 to make this an error)"
            );
            None
        }
    }
}

#[test]
fn a_missing_haproxy_skips_unless_required() {
    assert_eq!(decide(None, false), None);
    let p = PathBuf::from("/usr/sbin/haproxy");
    assert_eq!(decide(Some(p.clone()), true), Some(p));
}

#[test]
#[should_panic(expected = "WOVENET_REQUIRE_HAPROXY=1")]
fn a_missing_haproxy_fails_when_required() {
    decide(None, true);
}

/// A running haproxy: one `accept-proxy` HTTP frontend on 127.0.0.1 that answers every request
/// with the source and destination it read from the PROXY header.
struct Haproxy {
    port: u16,
    dir: tempfile::TempDir,
    _process: Process,
}

impl Haproxy {
    async fn start(bin: &std::path::Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wovenet-haproxy-")
            .tempdir()
            .unwrap();
        let port = free_tcp_port();
        let config = format!(
            "global\n\
             \x20   log stderr format raw local0 info\n\
             defaults\n\
             \x20   mode http\n\
             \x20   log global\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 10s\n\
             \x20   timeout server 10s\n\
             frontend seen\n\
             \x20   bind 127.0.0.1:{port} accept-proxy\n\
             \x20   http-request return status 200 content-type text/plain lf-string \
             \"src=%[src] src_port=%[src_port] dst=%[dst] dst_port=%[dst_port] proxied=%[fc_rcvd_proxy]\\n\"\n"
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let process = Process::spawn(
            bin,
            ["-db", "-f", cfg.to_str().unwrap()],
            &[],
            &dir.path().join("stdout"),
            &dir.path().join("stderr"),
        )
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut this = Self {
            port,
            dir,
            _process: process,
        };
        let addr = this.addr();
        let up = retry(WAIT, || async move { TcpStream::connect(addr).await }).await;
        if up.is_err() {
            panic!("haproxy did not listen on {addr}\n{}", this.diag());
        }
        assert!(
            this._process.is_running(),
            "haproxy exited\n{}",
            this.diag()
        );
        this
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn sock(&self) -> String {
        format!("tcp:{}", self.addr())
    }

    fn diag(&self) -> String {
        format!(
            "haproxy stderr:\n{}",
            std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
        )
    }

    /// The body haproxy answers for a connection whose header says `src` → `dst`.
    fn body(src: SocketAddr, dst: SocketAddr) -> String {
        format!(
            "src={} src_port={} dst={} dst_port={} proxied=1\n",
            src.ip(),
            src.port(),
            dst.ip(),
            dst.port()
        )
    }
}

/// One HTTP/1.0 request on `s`; the response body, or why there is none.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<String, String> {
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8(out).map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200: {head:?}"));
    }
    Ok(body.to_owned())
}

/// Retries a request through `local` until the tunnel serves it: the client's own address and
/// the body haproxy answered.
async fn ask_tcp(local: SocketAddr, sites: &[&Site]) -> (SocketAddr, String) {
    let r = retry(WAIT, || async move {
        let s = TcpStream::connect(local).await.map_err(|e| e.to_string())?;
        let me = s.local_addr().map_err(|e| e.to_string())?;
        Ok::<_, String>((me, get(s).await?))
    })
    .await;
    r.unwrap_or_else(|e| panic!("no answer through {local}: {}\n{}", e.last, diag(sites)))
}

/// Retries a request through the unix socket `path`; the body haproxy answered.
async fn ask_unix(path: &std::path::Path, sites: &[&Site]) -> String {
    let r = retry(WAIT, || async move {
        let s = UnixStream::connect(path).await.map_err(|e| e.to_string())?;
        get(s).await
    })
    .await;
    r.unwrap_or_else(|e| {
        panic!(
            "no answer through {}: {}\n{}",
            path.display(),
            e.last,
            diag(sites)
        )
    })
}

/// A TCP listener address on `ip` with a port that was free a moment ago.
fn free_on(ip: std::net::IpAddr) -> SocketAddr {
    SocketAddr::new(ip, free_tcp_port())
}

fn remote(app: &str, local: impl std::fmt::Display) -> Value {
    json!({ "siteName": "b", "appName": app, "localSocket": local.to_string() })
}

/// What haproxy reports for a unix client: its real peer (the exposing site's own loopback
/// connection, port unknown to the test) and its own bind, with a header received.
fn assert_unknown_source(body: &str, haproxy: &Haproxy) {
    let rest = body
        .strip_prefix("src=127.0.0.1 src_port=")
        .unwrap_or_else(|| panic!("{body:?}"));
    let (port, rest) = rest.split_once(' ').unwrap_or_else(|| panic!("{body:?}"));
    assert!(port.parse::<u16>().is_ok(), "{body:?}");
    assert_eq!(
        rest,
        format!("dst=127.0.0.1 dst_port={} proxied=1\n", haproxy.port),
        "{body:?}"
    );
}

#[tokio::test]
async fn haproxy_sees_each_client_address_in_both_versions() {
    let Some(bin) = require_haproxy() else { return };
    let haproxy = Haproxy::start(&bin).await;
    let dir = socket_dir();
    let v4 = [
        free_on(Ipv4Addr::LOCALHOST.into()),
        free_on(Ipv4Addr::LOCALHOST.into()),
    ];
    let v6 = [
        free_on(Ipv6Addr::LOCALHOST.into()),
        free_on(Ipv6Addr::LOCALHOST.into()),
    ];
    let unix = [dir.path().join("v1.sock"), dir.path().join("v2.sock")];
    let apps = ["web-v1", "web-v2"];
    let mut remotes = Vec::new();
    for i in 0..2 {
        remotes.push(remote(apps[i], format!("tcp:{}", v4[i])));
        remotes.push(remote(apps[i], format!("tcp:{}", v6[i])));
        remotes.push(remote(apps[i], format!("unix:{}", unix[i].display())));
    }
    let p = Pair::new(
        |b| {
            b.extra(
                "localExposedApps",
                json!([
                    { "appName": "web-v1", "appSocket": haproxy.sock(), "proxyProtocol": "v1" },
                    { "appName": "web-v2", "appSocket": haproxy.sock(), "proxyProtocol": "v2" },
                ]),
            )
        },
        |a| a.extra("remoteApps", Value::Array(remotes)),
    )
    .await;
    let sites = p.sites();

    for i in 0..2 {
        for listen in [v4[i], v6[i]] {
            let (me, body) = ask_tcp(listen, &sites).await;
            assert_eq!(
                body,
                Haproxy::body(me, listen),
                "{} via {listen}\n{}",
                apps[i],
                haproxy.diag()
            );
        }
        let body = ask_unix(&unix[i], &sites).await;
        assert_unknown_source(&body, &haproxy);
    }
    // Every stream was a clean one: nothing refused or malformed on either side.
    for site in sites {
        let api = site.api().await;
        assert_eq!(api.counter("bad_preambles").await, 0, "{}", site.name());
        assert_eq!(
            api.counter("preamble_downgrades").await,
            0,
            "{}",
            site.name()
        );
    }
}

#[tokio::test]
async fn an_app_added_live_with_the_flag_sends_the_header_and_shows_it() {
    let Some(bin) = require_haproxy() else { return };
    let haproxy = Haproxy::start(&bin).await;
    let listen = free_on(Ipv6Addr::LOCALHOST.into());
    let p = Pair::new(|b| b, |a| a.remote("b", "web", format!("tcp:{listen}"))).await;
    let ctl = p.ctl_b();

    // A udp app cannot take the header: refused with the config file's message.
    let out = ctl
        .run(&[
            "expose",
            "add",
            "--name",
            "dns",
            "--socket",
            "udp:127.0.0.1:53",
            "--proxy-protocol",
            "v2",
        ])
        .await;
    assert_ne!(out.code, Some(0), "{out}");
    assert!(
        out.stderr
            .contains("proxyProtocol: 'v2' cannot be used with a udp app"),
        "{out}"
    );
    let out = ctl
        .run(&[
            "expose",
            "add",
            "--name",
            "web",
            "--socket",
            &haproxy.sock(),
            "--proxy-protocol",
            "v3",
        ])
        .await;
    assert_ne!(out.code, Some(0), "{out}");
    assert!(
        out.stderr
            .contains("proxyProtocol: 'v3' is not a PROXY protocol version"),
        "{out}"
    );

    let added = ctl
        .json(&[
            "expose",
            "add",
            "--name",
            "web",
            "--socket",
            &haproxy.sock(),
            "--proxy-protocol",
            "v1",
        ])
        .await;
    assert_eq!(added["app"]["spec"]["proxy_protocol"], "v1", "{added:#}");
    let apps = ctl.json(&["apps"]).await;
    assert_eq!(apps["exposed"][0]["spec"]["name"], "web", "{apps:#}");
    assert_eq!(
        apps["exposed"][0]["spec"]["proxy_protocol"], "v1",
        "{apps:#}"
    );
    let table = ctl.ok(&["apps"]).await;
    let header = table.lines().nth(1).unwrap_or_default();
    let row = table.lines().nth(2).unwrap_or_default();
    let col = header
        .find("PROXY-PROTO")
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.get(col..col + 2), Some("v1"), "{table}");

    let (me, body) = ask_tcp(listen, &p.sites()).await;
    assert!(me.is_ipv6(), "{me}");
    assert_eq!(body, Haproxy::body(me, listen), "{}", haproxy.diag());
}
