//! Client addresses end to end over a real QUIC connection on loopback: a
//! `RemoteListener` on the near site sends each client's address in the
//! stream preamble, and the far site's `ExposedServer` writes the PROXY
//! protocol header an app with `proxyProtocol` asked for, before any data.
//! The apps here record the exact bytes they receive.
//!
//! The far side can also be an emulation of a build that predates client
//! addresses (it answers preamble version 3 the way such a build does), to
//! show a new site keeps working with an old one.

// Helpers outside `#[test]` fns are not covered by clippy's
// allow-unwrap-in-tests; in a test a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wovenet_daemon::app::preamble::{ClientAddr, Request, Response, Status};
use wovenet_daemon::app::{
    ExposedApps, ExposedServer, OpenError, RemoteListener, StreamOpener, StreamRegistry,
    TunnelStream,
};
use wovenet_daemon::config::{
    AppName, AppSocket, ExposedApp, ExposedTarget, ProxyProtocol, RemoteApp, SiteName,
};
use wovenet_daemon::counters::Counters;
use wovenet_daemon::types::ChannelId;

const WAIT: Duration = Duration::from_secs(10);

/// The 12-byte signature that opens every PROXY protocol version 2 header.
const SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

fn site(s: &str) -> SiteName {
    SiteName::new(s).unwrap()
}

fn name(s: &str) -> AppName {
    AppName::new(s).unwrap()
}

fn streams() -> Arc<StreamRegistry> {
    Arc::new(StreamRegistry::new(Arc::new(
        wovenet_daemon::view::EventBus::default(),
    )))
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::SeqCst)
}

/// Opens streams on one quinn connection to the site called `far`.
struct Opener(quinn::Connection);

impl StreamOpener for Opener {
    async fn open_stream(&self, to: &SiteName) -> Result<TunnelStream, OpenError> {
        if *to != site("far") {
            return Err(OpenError::NotConnected(to.clone()));
        }
        let (send, recv) = self
            .0
            .open_bi()
            .await
            .map_err(|e| OpenError::Connection(e.to_string()))?;
        Ok(TunnelStream {
            send,
            recv,
            guard: Box::new(()),
            channel: ChannelId(1),
            datagrams: wovenet_daemon::app::udp::Demux::new(self.0.clone(), Default::default()),
        })
    }
}

/// What serves the far end of the connection.
enum Far {
    /// This build's exposed side.
    Current(Vec<ExposedApp>),
    /// A build from before client addresses, exposing one tcp app at the
    /// address given: it refuses any version but 1 and 2 as unsupported.
    Legacy(SocketAddr),
}

/// The near site (listeners) and the far site, on one QUIC connection.
struct Sites {
    opener: Arc<Opener>,
    near_counters: Arc<Counters>,
    far_counters: Arc<Counters>,
    /// Version 3 requests the legacy far side refused.
    legacy_refusals: Arc<AtomicU64>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    conn: quinn::Connection,
    _endpoints: (quinn::Endpoint, quinn::Endpoint),
}

impl Sites {
    async fn new(far: Far) -> Self {
        let (server, client) = common::endpoint_pair(quinn::TransportConfig::default());
        let server_addr = server.local_addr().unwrap();
        let incoming = {
            let server = server.clone();
            async move { server.accept().await.unwrap().await.unwrap() }
        };
        let (conn, server_conn) = tokio::join!(
            async {
                client
                    .connect(server_addr, "far.test")
                    .unwrap()
                    .await
                    .unwrap()
            },
            incoming
        );

        let far_counters = Arc::new(Counters::default());
        let legacy_refusals = Arc::new(AtomicU64::new(0));
        let tracker = TaskTracker::new();
        let spawner = tracker.clone();
        let (counters, refusals) = (far_counters.clone(), legacy_refusals.clone());
        tracker.spawn(async move {
            let server = match &far {
                Far::Current(apps) => Some(ExposedServer::new(
                    Arc::new(ExposedApps::new(apps.clone())),
                    counters,
                    streams(),
                    CancellationToken::new(),
                )),
                Far::Legacy(_) => None,
            };
            while let Ok((send, recv)) = server_conn.accept_bi().await {
                let stream = TunnelStream {
                    send,
                    recv,
                    guard: Box::new(()),
                    channel: ChannelId(1),
                    datagrams: wovenet_daemon::app::udp::Demux::new(
                        server_conn.clone(),
                        Default::default(),
                    ),
                };
                match (&far, &server) {
                    (Far::Current(_), Some(server)) => {
                        let server = server.clone();
                        spawner.spawn(async move {
                            let origin = "127.0.0.1:9".parse().unwrap();
                            server.serve_stream(stream, &site("near"), origin).await;
                        });
                    }
                    (Far::Legacy(app), _) => {
                        spawner.spawn(legacy_serve(stream, *app, refusals.clone()));
                    }
                    (Far::Current(_), None) => unreachable!(),
                }
            }
        });
        Self {
            opener: Arc::new(Opener(conn.clone())),
            near_counters: Arc::new(Counters::default()),
            far_counters,
            legacy_refusals,
            tracker,
            cancel: CancellationToken::new(),
            conn,
            _endpoints: (server, client),
        }
    }

    /// A listener on the near site at `local` for the far site's `app`.
    fn remote(&self, app: &str, local: AppSocket) -> RemoteListener {
        RemoteListener::open(
            RemoteApp {
                site: site("far"),
                app: name(app),
                local_socket: local,
                app_socket: None,
                max_connections: None,
                udp_idle_timeout: None,
                bandwidth_limit: None,
            },
            self.opener.clone(),
            self.near_counters.clone(),
            streams(),
            self.cancel.child_token(),
            &self.tracker,
        )
        .unwrap()
    }

    /// A tcp listener on `ip`:0 for `app`, and its bound address.
    fn remote_tcp(&self, app: &str, ip: &str) -> (RemoteListener, SocketAddr) {
        let any_port = SocketAddr::new(ip.parse().unwrap(), 0);
        let l = self.remote(app, AppSocket::Tcp(any_port));
        let AppSocket::Tcp(addr) = l.local_addr().clone() else {
            panic!("not tcp");
        };
        (l, addr)
    }
}

/// What a build from before client addresses does with a stream: its
/// decoder knows versions 1 and 2 only and answers anything else with
/// `unsupported version` (then finishes the stream); a request it knows is
/// connected to `app` and piped.
async fn legacy_serve(stream: TunnelStream, app: SocketAddr, refusals: Arc<AtomicU64>) {
    let TunnelStream {
        mut send, mut recv, ..
    } = stream;
    let mut first = [0u8; 1];
    recv.read_exact(&mut first).await.unwrap();
    if first[0] != 1 && first[0] != 2 {
        refusals.fetch_add(1, Ordering::SeqCst);
        let _ = recv.stop(4u32.into());
        let reply = Response::new(
            Status::UnsupportedVersion,
            format!("unsupported preamble version {}", first[0]),
        );
        send.write_all(&reply.encode()).await.unwrap();
        let _ = send.finish();
        let _ = send.stopped().await;
        return;
    }
    // Read the rest of a version 1/2 request byte by byte.
    let mut buf = first.to_vec();
    let request = loop {
        if let Some((r, _)) = Request::decode(&buf).unwrap() {
            break r;
        }
        let mut b = [0u8; 1];
        recv.read_exact(&mut b).await.unwrap();
        buf.push(b[0]);
    };
    assert_eq!(request.client, None, "versions 1 and 2 carry no client");
    let mut tcp = TcpStream::connect(app).await.unwrap();
    send.write_all(&Response::ok().encode()).await.unwrap();
    let (mut r, mut w) = tcp.split();
    let up = async {
        tokio::io::copy(&mut recv, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let down = async {
        tokio::io::copy(&mut r, &mut send).await.unwrap();
        send.finish().unwrap();
    };
    tokio::join!(up, down);
    let _ = send.stopped().await;
}

/// An app that records every connection's bytes up to EOF, then answers
/// `done` and closes.
struct Recorder {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Recorder {
    async fn tcp() -> (Self, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(record(s, tx.clone()));
            }
        });
        (Self { rx }, addr)
    }

    fn unix(path: &Path) -> Self {
        let l = tokio::net::UnixListener::bind(path).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(record(s, tx.clone()));
            }
        });
        Self { rx }
    }

    /// The bytes of the next connection that ended.
    async fn next(&mut self) -> Vec<u8> {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("the app saw a connection in time")
            .unwrap()
    }
}

async fn record<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, tx: mpsc::UnboundedSender<Vec<u8>>) {
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let _ = tx.send(got);
    let _ = s.write_all(b"done").await;
    let _ = s.shutdown().await;
}

/// Sends `data`, half-closes and waits for the app's `done`.
async fn send_and_finish<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, data: &[u8]) {
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut back))
        .await
        .expect("the app answered in time")
        .unwrap();
    assert_eq!(back, b"done");
}

fn app(n: &str, socket: AppSocket, proxy: Option<ProxyProtocol>) -> ExposedApp {
    ExposedApp {
        name: name(n),
        target: ExposedTarget::Single(socket),
        max_connections: None,
        allowed_sites: Vec::new(),
        udp_idle_timeout: None,
        bandwidth_limit: None,
        proxy_protocol: proxy,
    }
}

/// The version 2 header of a TCP connection from `src` to `dst`.
fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = SIG.to_vec();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.extend_from_slice(&[0x21, 0x11, 0, 12]);
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.extend_from_slice(&[0x21, 0x21, 0, 36]);
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed families"),
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

#[tokio::test]
async fn the_app_receives_the_client_address_before_the_data_in_both_versions() {
    let (mut v1_app, v1_addr) = Recorder::tcp().await;
    let (mut v2_app, v2_addr) = Recorder::tcp().await;
    let sites = Sites::new(Far::Current(vec![
        app("web1", AppSocket::Tcp(v1_addr), Some(ProxyProtocol::V1)),
        app("web2", AppSocket::Tcp(v2_addr), Some(ProxyProtocol::V2)),
    ]))
    .await;

    for ip in ["127.0.0.1", "::1"] {
        let (_l1, listen1) = sites.remote_tcp("web1", ip);
        let c = TcpStream::connect(listen1).await.unwrap();
        let client = c.local_addr().unwrap();
        send_and_finish(c, b"GET / HTTP/1.0\r\n\r\n").await;
        let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
        let want = format!(
            "PROXY {family} {} {} {} {}\r\nGET / HTTP/1.0\r\n\r\n",
            client.ip(),
            listen1.ip(),
            client.port(),
            listen1.port()
        );
        assert_eq!(String::from_utf8(v1_app.next().await).unwrap(), want);

        let (_l2, listen2) = sites.remote_tcp("web2", ip);
        let c = TcpStream::connect(listen2).await.unwrap();
        let client = c.local_addr().unwrap();
        send_and_finish(c, b"payload").await;
        let mut want = v2_header(client, listen2);
        want.extend_from_slice(b"payload");
        assert_eq!(v2_app.next().await, want);
    }
    assert_eq!(get(&sites.near_counters.preamble_downgrades), 0);
    assert_eq!(get(&sites.far_counters.bad_preambles), 0);
}

#[tokio::test]
async fn a_unix_client_gets_the_unknown_source_header() {
    let dir = tempfile::tempdir().unwrap();
    let (mut v1_app, v1_addr) = Recorder::tcp().await;
    // The v2 app itself listens on a unix socket: the header goes there too.
    let v2_path = dir.path().join("app2.sock");
    let mut v2_app = Recorder::unix(&v2_path);
    let sites = Sites::new(Far::Current(vec![
        app("web1", AppSocket::Tcp(v1_addr), Some(ProxyProtocol::V1)),
        app("web2", AppSocket::Unix(v2_path), Some(ProxyProtocol::V2)),
    ]))
    .await;

    let near1 = dir.path().join("near1.sock");
    let _l1 = sites.remote("web1", AppSocket::Unix(near1.clone()));
    send_and_finish(UnixStream::connect(&near1).await.unwrap(), b"hi").await;
    assert_eq!(v1_app.next().await, b"PROXY UNKNOWN\r\nhi");

    let near2 = dir.path().join("near2.sock");
    let _l2 = sites.remote("web2", AppSocket::Unix(near2.clone()));
    send_and_finish(UnixStream::connect(&near2).await.unwrap(), b"hi").await;
    let mut want = SIG.to_vec();
    want.extend_from_slice(&[0x20, 0x00, 0, 0]);
    want.extend_from_slice(b"hi");
    assert_eq!(v2_app.next().await, want);
}

/// Nothing of one app's setting or clients reaches another: an app without
/// `proxyProtocol` next to one with it gets exactly the client's bytes, and
/// each header names its own client.
#[tokio::test]
async fn apps_without_proxy_protocol_get_only_the_data() {
    let (mut plain, plain_addr) = Recorder::tcp().await;
    let (mut proxied, proxied_addr) = Recorder::tcp().await;
    let sites = Sites::new(Far::Current(vec![
        app("plain", AppSocket::Tcp(plain_addr), None),
        app(
            "proxied",
            AppSocket::Tcp(proxied_addr),
            Some(ProxyProtocol::V1),
        ),
    ]))
    .await;
    let (_lp, plain_listen) = sites.remote_tcp("plain", "127.0.0.1");
    let (_lq, proxied_listen) = sites.remote_tcp("proxied", "127.0.0.1");

    let mut clients = Vec::new();
    for i in 0..4u8 {
        let p = TcpStream::connect(plain_listen).await.unwrap();
        let q = TcpStream::connect(proxied_listen).await.unwrap();
        let q_addr = q.local_addr().unwrap();
        clients.push(q_addr);
        let (pd, qd) = ([b'p', i], [b'q', i]);
        tokio::join!(send_and_finish(p, &pd), send_and_finish(q, &qd));
    }
    let mut plain_seen = Vec::new();
    let mut proxied_seen = Vec::new();
    for _ in 0..4 {
        plain_seen.push(plain.next().await);
        proxied_seen.push(proxied.next().await);
    }
    plain_seen.sort();
    assert_eq!(
        plain_seen,
        (0..4u8).map(|i| vec![b'p', i]).collect::<Vec<_>>()
    );
    proxied_seen.sort();
    let mut want: Vec<Vec<u8>> = clients
        .iter()
        .zip(0u8..)
        .map(|(c, i)| {
            let mut w = format!(
                "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
                c.port(),
                proxied_listen.port()
            )
            .into_bytes();
            w.extend_from_slice(&[b'q', i]);
            w
        })
        .collect();
    want.sort();
    assert_eq!(proxied_seen, want);
}

/// A new site using an app of a site that predates client addresses: the
/// first client's extended request is refused as an unsupported version, the
/// request is sent again without the address and the client is served; later
/// clients go straight to the older form for a while.
#[tokio::test]
async fn a_far_site_that_predates_client_addresses_still_serves_every_client() {
    let (mut app, app_addr) = Recorder::tcp().await;
    let sites = Sites::new(Far::Legacy(app_addr)).await;
    let (_l, listen) = sites.remote_tcp("web", "127.0.0.1");

    for i in 0..3u8 {
        send_and_finish(TcpStream::connect(listen).await.unwrap(), &[b'x', i]).await;
        assert_eq!(app.next().await, vec![b'x', i]);
    }
    // One refusal, remembered: the second and third clients cost no retry.
    assert_eq!(get(&sites.legacy_refusals), 1);
    assert_eq!(get(&sites.near_counters.preamble_downgrades), 1);
    assert_eq!(get(&sites.near_counters.bad_preambles), 0);
}

/// A well-formed request whose client address block is not: refused with
/// `bad request`, counted as a bad preamble, and the app is never connected.
#[tokio::test]
async fn a_malformed_client_address_is_refused_and_counted() {
    let (mut recorder, app_addr) = Recorder::tcp().await;
    let sites = Sites::new(Far::Current(vec![app(
        "web",
        AppSocket::Tcp(app_addr),
        Some(ProxyProtocol::V2),
    )]))
    .await;
    let good = Request {
        app: name("web"),
        target: None,
        protocol: wovenet_daemon::config::Protocol::Tcp,
        client: Some(ClientAddr::new(
            "192.0.2.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        )),
    }
    .encode();
    // Family 5, a length that overruns the block, a truncated IPv6 pair.
    let mut bad_family = good.clone();
    bad_family[10] = 5;
    let mut overrun = good.clone();
    overrun[9] = 14;
    let mut short_v6 = good[..7].to_vec();
    short_v6.extend_from_slice(&[15, 1, 13, 6]);
    short_v6.extend_from_slice(&good[11..]);
    for bad in [bad_family, overrun, short_v6] {
        let (mut send, mut recv) = sites.conn.open_bi().await.unwrap();
        send.write_all(&bad).await.unwrap();
        send.write_all(b"data").await.unwrap();
        let reply = tokio::time::timeout(WAIT, recv.read_to_end(1024))
            .await
            .unwrap()
            .unwrap();
        let (reply, _) = Response::decode(&reply).unwrap().unwrap();
        assert_eq!(reply.status, Status::BadRequest, "{bad:?}");
        assert!(reply.message.contains("client address") || reply.message.contains("overruns"));
    }
    assert_eq!(get(&sites.far_counters.bad_preambles), 3);
    assert_eq!(get(&sites.far_counters.streams_opened), 0);

    // The server is unharmed and the app saw nothing of the bad requests.
    let (_l, listen) = sites.remote_tcp("web", "127.0.0.1");
    let c = TcpStream::connect(listen).await.unwrap();
    let client = c.local_addr().unwrap();
    send_and_finish(c, b"ok").await;
    let mut want = v2_header(client, listen);
    want.extend_from_slice(b"ok");
    assert_eq!(recorder.next().await, want);
}
