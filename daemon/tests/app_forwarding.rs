//! App forwarding end to end over a real QUIC connection on loopback: a
//! `RemoteListener` on the client side opens streams through a test
//! `StreamOpener`, and the server side hands every accepted stream to
//! `serve_stream`. The tunnel layer (discovery, auth, channel picking) is
//! replaced by one plain quinn connection with a self-signed certificate
//! trusted by the client.

// Helpers outside `#[test]` fns are not covered by clippy's
// allow-unwrap-in-tests; in a test a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wovenet_daemon::app::preamble::{Response, Status};
use wovenet_daemon::app::{
    ExposedApps, ExposedServer, OpenError, RemoteListener, StreamOpener, TunnelStream,
};
use wovenet_daemon::config::{
    AppName, AppSocket, ExposedApp, ExposedTarget, PortRange, RemoteApp, SiteName,
};
use wovenet_daemon::counters::Counters;
use wovenet_daemon::types::ChannelId;

const WAIT: Duration = Duration::from_secs(10);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WOVENET_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

fn site(s: &str) -> SiteName {
    SiteName::new(s).unwrap()
}

fn name(s: &str) -> AppName {
    AppName::new(s).unwrap()
}

/// Opens streams on one quinn connection to the site called `far`.
struct TestOpener {
    conn: quinn::Connection,
    opened: Arc<AtomicU64>,
}

/// Counts streams the way the tunnel would: +1 on open, -1 on drop.
struct Guard(Arc<AtomicU64>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StreamOpener for TestOpener {
    async fn open_stream(&self, to: &SiteName) -> Result<TunnelStream, OpenError> {
        if *to != site("far") {
            return Err(OpenError::NotConnected(to.clone()));
        }
        let (send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| OpenError::Connection(e.to_string()))?;
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(TunnelStream {
            send,
            recv,
            guard: Box::new(Guard(self.opened.clone())),
            channel: ChannelId(1),
            datagrams: wovenet_daemon::app::udp::Demux::new(self.conn.clone(), Default::default()),
        })
    }
}

/// The "near" site (client side, listeners) and the "far" site (exposed apps).
struct Sites {
    opener: Arc<TestOpener>,
    exposed: Arc<ExposedApps>,
    far_counters: Arc<Counters>,
    near_counters: Arc<Counters>,
    /// Streams currently open through the opener (guards alive).
    open_streams: Arc<AtomicU64>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    conn: quinn::Connection,
    _server: quinn::Endpoint,
    _client: quinn::Endpoint,
}

impl Sites {
    async fn new(apps: Vec<ExposedApp>) -> Self {
        Self::with_exposed(ExposedApps::new(apps)).await
    }

    async fn with_exposed(exposed: ExposedApps) -> Self {
        init_tracing();
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(256u32.into());
        let (server, client) = common::endpoint_pair(transport);
        let server_addr = server.local_addr().unwrap();

        let exposed = Arc::new(exposed);
        let far_counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();

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
        {
            let server = ExposedServer::new(
                exposed.clone(),
                far_counters.clone(),
                streams(),
                CancellationToken::new(),
            );
            let tracker2 = tracker.clone();
            tracker.spawn(async move {
                let peer = site("near");
                while let Ok((send, recv)) = server_conn.accept_bi().await {
                    let server = server.clone();
                    let peer = peer.clone();
                    let datagrams = wovenet_daemon::app::udp::Demux::new(
                        server_conn.clone(),
                        Default::default(),
                    );
                    tracker2.spawn(async move {
                        let origin = "127.0.0.1:9".parse().unwrap();
                        let stream = TunnelStream {
                            send,
                            recv,
                            guard: Box::new(()),
                            channel: ChannelId(1),
                            datagrams,
                        };
                        server.serve_stream(stream, &peer, origin).await;
                    });
                }
            });
        }

        let open_streams = Arc::new(AtomicU64::new(0));
        Self {
            opener: Arc::new(TestOpener {
                conn: conn.clone(),
                opened: open_streams.clone(),
            }),
            exposed,
            far_counters,
            near_counters: Arc::new(Counters::default()),
            open_streams,
            cancel,
            tracker,
            conn,
            _server: server,
            _client: client,
        }
    }

    /// A listener on the near site for `app` of the far site.
    fn remote(&self, app: &str, local: AppSocket, target: Option<SocketAddr>) -> RemoteListener {
        RemoteListener::open(
            RemoteApp {
                site: site("far"),
                app: name(app),
                local_socket: local,
                app_socket: target,
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

    /// A tcp listener on 127.0.0.1:0 for `app`, and its address.
    fn remote_tcp(&self, app: &str, target: Option<SocketAddr>) -> (RemoteListener, SocketAddr) {
        let l = self.remote(app, AppSocket::Tcp("127.0.0.1:0".parse().unwrap()), target);
        let AppSocket::Tcp(addr) = l.local_addr().clone() else {
            panic!("tcp listener reported a unix address");
        };
        (l, addr)
    }
}

fn single(app: &str, socket: AppSocket) -> ExposedApp {
    ExposedApp {
        name: name(app),
        target: ExposedTarget::Single(socket),
        max_connections: None,
        allowed_sites: Vec::new(),
        udp_idle_timeout: None,
        bandwidth_limit: None,
        proxy_protocol: None,
    }
}

fn range(app: &str, net: &str, ports: (u16, u16)) -> ExposedApp {
    ExposedApp {
        name: name(app),
        target: ExposedTarget::Range {
            ports: vec![PortRange {
                start: ports.0,
                end: ports.1,
            }],
            addresses: vec![net.parse().unwrap()],
            protocol: wovenet_daemon::config::Protocol::Tcp,
        },
        max_connections: None,
        allowed_sites: Vec::new(),
        udp_idle_timeout: None,
        bandwidth_limit: None,
        proxy_protocol: None,
    }
}

/// Waits until `cond` holds, failing the test after [`WAIT`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::SeqCst)
}

/// Echoes every tcp connection: copies until EOF, then half-closes.
async fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Echoes every unix connection at `path`.
fn unix_echo(path: &Path) {
    let l = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
}

/// A port on 127.0.0.1 with nothing listening.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Sends `data` on a stream while reading everything back; returns what came back.
async fn round_trip<S>(stream: S, data: Vec<u8>) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(WAIT * 3, r.read_to_end(&mut back))
        .await
        .expect("echo finished in time")
        .unwrap();
    writer.await.unwrap();
    back
}

/// Asserts the peer closes `s` abortively within [`WAIT`]: a reset, not a clean EOF.
/// Sends `data` on an open echo connection and asserts it comes back.
async fn echo_on(c: &mut TcpStream, data: &[u8]) {
    c.write_all(data).await.unwrap();
    let mut buf = vec![0u8; data.len()];
    tokio::time::timeout(WAIT, c.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, data);
}

async fn assert_reset(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("client closed promptly");
    match r {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {n} bytes (0 = clean EOF)"),
    }
}

#[tokio::test]
async fn several_mib_each_way_arrive_byte_exact() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![single("echo", AppSocket::Tcp(echo))]).await;
    let (_l, addr) = sites.remote_tcp("echo", None);

    let data = random_bytes(8 * 1024 * 1024 + 17, 1);
    let client = TcpStream::connect(addr).await.unwrap();
    let back = round_trip(client, data.clone()).await;

    assert_eq!(back.len(), data.len());
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    assert_eq!(get(&sites.far_counters.streams_opened), 1);
    assert_eq!(get(&sites.near_counters.streams_opened), 1);
    eventually("the stream guard to drop", || get(&sites.open_streams) == 0).await;
}

#[tokio::test]
async fn fifty_parallel_clients_each_get_their_own_bytes_back() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![single("echo", AppSocket::Tcp(echo))]).await;
    let (_l, addr) = sites.remote_tcp("echo", None);

    let mut clients = Vec::new();
    for i in 0..50u64 {
        clients.push(tokio::spawn(async move {
            let data = random_bytes(100_000 + i as usize * 997, i);
            let back = round_trip(TcpStream::connect(addr).await.unwrap(), data.clone()).await;
            assert!(back == data, "client {i} got different bytes back");
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(get(&sites.far_counters.streams_opened), 50);
    eventually("every stream guard to drop", || {
        get(&sites.open_streams) == 0
    })
    .await;
}

#[tokio::test]
async fn half_closed_client_still_receives_the_reply() {
    // Replies only after reading the request to EOF, like many simple protocols.
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap();
        s.write_all(format!("got {} bytes", req.len()).as_bytes())
            .await
            .unwrap();
    });
    let sites = Sites::new(vec![single("count", AppSocket::Tcp(app))]).await;
    let (_l, addr) = sites.remote_tcp("count", None);

    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    c.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(WAIT, c.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "got 5 bytes");
}

#[tokio::test]
async fn half_closed_server_still_receives_the_client_data() {
    // Sends a banner and half-closes, then keeps reading until the client is done.
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = server.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        s.write_all(b"banner").await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        let _ = got_tx.send(rest);
    });
    let sites = Sites::new(vec![single("banner", AppSocket::Tcp(app))]).await;
    let (_l, addr) = sites.remote_tcp("banner", None);

    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut banner = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(banner, b"banner");
    c.write_all(b"after the server's FIN").await.unwrap();
    c.shutdown().await.unwrap();
    let rest = tokio::time::timeout(WAIT, got_rx).await.unwrap().unwrap();
    assert_eq!(rest, b"after the server's FIN");
}

#[tokio::test]
async fn unknown_app_closes_the_client_with_a_reset() {
    let sites = Sites::new(vec![]).await;
    let (_l, addr) = sites.remote_tcp("nope", None);

    assert_reset(TcpStream::connect(addr).await.unwrap()).await;
    assert_eq!(get(&sites.far_counters.streams_refused), 1);
    assert_eq!(get(&sites.far_counters.streams_opened), 0);
    eventually("the stream guard to drop", || get(&sites.open_streams) == 0).await;
}

#[tokio::test]
async fn unconnected_site_closes_the_client_with_a_reset() {
    let sites = Sites::new(vec![]).await;
    let l = RemoteListener::open(
        RemoteApp {
            site: site("elsewhere"),
            app: name("echo"),
            local_socket: AppSocket::Tcp("127.0.0.1:0".parse().unwrap()),
            app_socket: None,
            max_connections: None,
            udp_idle_timeout: None,
            bandwidth_limit: None,
        },
        sites.opener.clone(),
        sites.near_counters.clone(),
        streams(),
        sites.cancel.child_token(),
        &sites.tracker,
    )
    .unwrap();
    let AppSocket::Tcp(addr) = l.local_addr().clone() else {
        panic!("not tcp")
    };
    assert_reset(TcpStream::connect(addr).await.unwrap()).await;
}

#[tokio::test]
async fn range_app_forwards_to_a_target_inside_its_ranges() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![range(
        "lan",
        "127.0.0.0/8",
        (echo.port(), echo.port()),
    )])
    .await;
    let (_l, addr) = sites.remote_tcp("lan", Some(echo));

    let data = random_bytes(300_000, 7);
    let back = round_trip(TcpStream::connect(addr).await.unwrap(), data.clone()).await;
    assert!(back == data);
    assert_eq!(get(&sites.far_counters.streams_refused), 0);
}

#[tokio::test]
async fn range_app_refuses_targets_outside_its_ranges() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![range(
        "lan",
        "127.0.0.1/32",
        (echo.port(), echo.port()),
    )])
    .await;
    let other_port = SocketAddr::new(echo.ip(), echo.port().wrapping_add(1).max(1));
    let other_ip: SocketAddr = format!("127.0.0.2:{}", echo.port()).parse().unwrap();
    let (_a, port_addr) = sites.remote_tcp("lan", Some(other_port));
    let (_b, ip_addr) = sites.remote_tcp("lan", Some(other_ip));
    let (_c, no_target) = sites.remote_tcp("lan", None);

    assert_reset(TcpStream::connect(port_addr).await.unwrap()).await;
    assert_reset(TcpStream::connect(ip_addr).await.unwrap()).await;
    assert_reset(TcpStream::connect(no_target).await.unwrap()).await;
    assert_eq!(get(&sites.far_counters.streams_refused), 3);
    assert_eq!(get(&sites.far_counters.streams_opened), 0);
}

#[tokio::test]
async fn apps_with_allowed_sites_serve_only_the_sites_they_list() {
    let echo = tcp_echo().await;
    let only = |mut app: ExposedApp, sites: &[&str]| {
        app.allowed_sites = sites.iter().map(|s| site(s)).collect();
        app
    };
    let sites = Sites::new(vec![
        only(single("mine", AppSocket::Tcp(echo)), &["other", "near"]),
        only(single("theirs", AppSocket::Tcp(echo)), &["other"]),
        only(
            range("lan", "127.0.0.1/32", (echo.port(), echo.port())),
            &["other"],
        ),
    ])
    .await;
    let (_m, mine) = sites.remote_tcp("mine", None);
    let (_t, theirs) = sites.remote_tcp("theirs", None);
    let (_l, lan) = sites.remote_tcp("lan", Some(echo));

    let data = random_bytes(100_000, 3);
    let back = round_trip(TcpStream::connect(mine).await.unwrap(), data.clone()).await;
    assert!(back == data);
    // Refused before the app socket is dialled: a reset, no byte.
    assert_reset(TcpStream::connect(theirs).await.unwrap()).await;
    assert_reset(TcpStream::connect(lan).await.unwrap()).await;
    assert_eq!(get(&sites.far_counters.streams_not_allowed), 2);
    assert_eq!(get(&sites.far_counters.streams_refused), 2);
    assert_eq!(get(&sites.far_counters.streams_opened), 1);
}

#[tokio::test]
async fn unreachable_app_closes_the_client_and_is_counted() {
    let dead = closed_port().await;
    let sites = Sites::new(vec![single("dead", AppSocket::Tcp(dead))]).await;
    let (_l, addr) = sites.remote_tcp("dead", None);

    assert_reset(TcpStream::connect(addr).await.unwrap()).await;
    assert_eq!(get(&sites.far_counters.streams_refused), 1);
}

#[tokio::test]
async fn unix_app_is_reachable_through_a_tcp_listener() {
    let dir = tempfile::tempdir().unwrap();
    let app_path = dir.path().join("app.sock");
    unix_echo(&app_path);
    let sites = Sites::new(vec![single("u", AppSocket::Unix(app_path))]).await;
    let (_l, addr) = sites.remote_tcp("u", None);

    let data = random_bytes(1024 * 1024, 3);
    let back = round_trip(TcpStream::connect(addr).await.unwrap(), data.clone()).await;
    assert!(back == data);
}

#[tokio::test]
async fn tcp_app_is_reachable_through_a_unix_listener() {
    let echo = tcp_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("run/echo.sock");
    let sites = Sites::new(vec![single("echo", AppSocket::Tcp(echo))]).await;
    let l = sites.remote("echo", AppSocket::Unix(local.clone()), None);

    let data = random_bytes(1024 * 1024, 4);
    let back = round_trip(UnixStream::connect(&local).await.unwrap(), data.clone()).await;
    assert!(back == data);
    l.close();
    assert!(!local.exists(), "socket file removed on close");
}

#[tokio::test]
async fn app_server_reset_reaches_the_client_as_a_reset() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
    });
    let sites = Sites::new(vec![single("rst", AppSocket::Tcp(app))]).await;
    let (_l, addr) = sites.remote_tcp("rst", None);

    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"x").await.unwrap();
    assert_reset(c).await;
    eventually("the stream guard to drop", || get(&sites.open_streams) == 0).await;
}

#[tokio::test]
async fn client_reset_reaches_the_app_server_as_a_reset() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = server.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        let _ = seen_tx.send(s);
    });
    let sites = Sites::new(vec![single("rst", AppSocket::Tcp(app))]).await;
    let (_l, addr) = sites.remote_tcp("rst", None);

    let c = TcpStream::connect(addr).await.unwrap();
    let server_side = tokio::time::timeout(WAIT, seen_rx).await.unwrap().unwrap();
    c.set_zero_linger().unwrap();
    drop(c);
    assert_reset(server_side).await;
}

#[tokio::test]
async fn garbage_preambles_are_counted_and_answered_without_harm() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![single("echo", AppSocket::Tcp(echo))]).await;

    // A name that is not UTF-8: answered with BadRequest.
    let (mut send, mut recv) = sites.conn.open_bi().await.unwrap();
    send.write_all(&[1, 3, 0xff, 0xfe, 0xfd, 0]).await.unwrap();
    let reply = tokio::time::timeout(WAIT, recv.read_to_end(1024))
        .await
        .unwrap()
        .unwrap();
    let (reply, _) = Response::decode(&reply).unwrap().unwrap();
    assert_eq!(reply.status, Status::BadRequest);

    // A future version: answered with UnsupportedVersion.
    let (mut send, mut recv) = sites.conn.open_bi().await.unwrap();
    send.write_all(&[9, 9, 9, 9]).await.unwrap();
    let reply = tokio::time::timeout(WAIT, recv.read_to_end(1024))
        .await
        .unwrap()
        .unwrap();
    let (reply, _) = Response::decode(&reply).unwrap().unwrap();
    assert_eq!(reply.status, Status::UnsupportedVersion);

    // A preamble cut short by FIN: the stream is reset.
    let (mut send, mut recv) = sites.conn.open_bi().await.unwrap();
    send.write_all(&[1, 4, b'e', b'c']).await.unwrap();
    send.finish().unwrap();
    let r = tokio::time::timeout(WAIT, recv.read_to_end(1024))
        .await
        .unwrap();
    assert!(
        r.is_err(),
        "truncated preamble must not get a clean reply: {r:?}"
    );

    assert_eq!(get(&sites.far_counters.bad_preambles), 3);
    assert_eq!(get(&sites.far_counters.streams_opened), 0);

    // The server is unharmed.
    let (_l, addr) = sites.remote_tcp("echo", None);
    let back = round_trip(
        TcpStream::connect(addr).await.unwrap(),
        b"still fine".to_vec(),
    )
    .await;
    assert_eq!(back, b"still fine");
}

#[tokio::test]
async fn removed_exposed_app_refuses_new_streams_while_existing_ones_continue() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![single("echo", AppSocket::Tcp(echo))]).await;
    let (_l, addr) = sites.remote_tcp("echo", None);

    let mut old = TcpStream::connect(addr).await.unwrap();
    echo_on(&mut old, b"one").await;

    assert!(sites.exposed.remove(&name("echo")).is_some());
    assert_reset(TcpStream::connect(addr).await.unwrap()).await;

    echo_on(&mut old, b"two").await;
}

#[tokio::test]
async fn shutdown_resets_open_client_connections() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![single("echo", AppSocket::Tcp(echo))]).await;
    let (l, addr) = sites.remote_tcp("echo", None);

    let mut c = TcpStream::connect(addr).await.unwrap();
    echo_on(&mut c, b"ping").await;

    sites.cancel.cancel();
    assert_reset(c).await;
    drop(l);
    eventually("the stream guard to drop", || get(&sites.open_streams) == 0).await;
}

#[tokio::test]
async fn closed_listener_lets_existing_connections_finish() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![single("echo", AppSocket::Tcp(echo))]).await;
    let (l, addr) = sites.remote_tcp("echo", None);

    let c = TcpStream::connect(addr).await.unwrap();
    // Make sure the connection was accepted before closing.
    eventually("the stream to open", || {
        get(&sites.far_counters.streams_opened) == 1
    })
    .await;
    l.close();
    let back = round_trip(c, b"still piped".to_vec()).await;
    assert_eq!(back, b"still piped");
}

/// Connects a client through `addr` and proves it is being served (one echo).
async fn served_client(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    echo_on(&mut c, b"held").await;
    c
}

#[tokio::test]
async fn exposed_app_at_max_connections_refuses_the_next_client_at_once() {
    let echo = tcp_echo().await;
    let mut app = single("echo", AppSocket::Tcp(echo));
    app.max_connections = Some(2);
    let sites = Sites::new(vec![app]).await;
    let (_l, addr) = sites.remote_tcp("echo", None);

    let first = served_client(addr).await;
    let mut second = served_client(addr).await;
    assert_reset(TcpStream::connect(addr).await.unwrap()).await;
    assert_eq!(get(&sites.far_counters.streams_limited), 1);
    assert_eq!(get(&sites.far_counters.streams_refused), 1);
    assert_eq!(get(&sites.near_counters.connections_limited), 1);
    // Refusing did not disturb the clients being served.
    echo_on(&mut second, b"still served").await;

    // Once a client leaves, a new one is admitted.
    drop(first);
    eventually("the first stream to end", || {
        sites.exposed.app_streams(&name("echo")) == 1
    })
    .await;
    let mut third = served_client(addr).await;
    echo_on(&mut third, b"admitted").await;
    assert_eq!(get(&sites.far_counters.streams_limited), 1);
}

#[tokio::test]
async fn a_peer_at_its_stream_limit_is_refused_on_every_app() {
    let echo = tcp_echo().await;
    let exposed = ExposedApps::new(vec![
        single("one", AppSocket::Tcp(echo)),
        single("two", AppSocket::Tcp(echo)),
    ])
    .with_peer_limit(2);
    let sites = Sites::with_exposed(exposed).await;
    let (_l1, one) = sites.remote_tcp("one", None);
    let (_l2, two) = sites.remote_tcp("two", None);

    let _a = served_client(one).await;
    let b = served_client(two).await;
    assert_reset(TcpStream::connect(one).await.unwrap()).await;
    assert_reset(TcpStream::connect(two).await.unwrap()).await;
    assert_eq!(get(&sites.far_counters.streams_limited), 2);

    assert_eq!(sites.exposed.peer_streams(&site("near")), 2);
    drop(b);
    eventually("a stream to end", || {
        sites.exposed.peer_streams(&site("near")) == 1
    })
    .await;
    let _c = served_client(two).await;
}

#[tokio::test]
async fn listener_at_max_connections_resets_the_next_client_without_a_stream() {
    let echo = tcp_echo().await;
    let sites = Sites::new(vec![single("echo", AppSocket::Tcp(echo))]).await;
    let l = RemoteListener::open(
        RemoteApp {
            site: site("far"),
            app: name("echo"),
            local_socket: AppSocket::Tcp("127.0.0.1:0".parse().unwrap()),
            app_socket: None,
            max_connections: Some(1),
            udp_idle_timeout: None,
            bandwidth_limit: None,
        },
        sites.opener.clone(),
        sites.near_counters.clone(),
        streams(),
        sites.cancel.child_token(),
        &sites.tracker,
    )
    .unwrap();
    let AppSocket::Tcp(addr) = l.local_addr().clone() else {
        panic!("not tcp")
    };

    let first = served_client(addr).await;
    assert_reset(TcpStream::connect(addr).await.unwrap()).await;
    assert_eq!(get(&sites.near_counters.connections_limited), 1);
    // The refused client never reached the far site.
    assert_eq!(get(&sites.far_counters.streams_opened), 1);
    assert_eq!(get(&sites.far_counters.streams_limited), 0);

    drop(first);
    // The slot is given back just after the stream's guard drops: retry
    // until a client is admitted (bounded by the deadline).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"again").await.unwrap();
        let mut buf = [0u8; 5];
        if let Ok(Ok(_)) = tokio::time::timeout(WAIT, c.read_exact(&mut buf)).await {
            assert_eq!(&buf, b"again");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no client admitted again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh stream registry (these tests do not inspect it).
fn streams() -> Arc<wovenet_daemon::app::StreamRegistry> {
    Arc::new(wovenet_daemon::app::StreamRegistry::new(Arc::new(
        wovenet_daemon::view::EventBus::default(),
    )))
}
