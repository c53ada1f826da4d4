//! How forwarded app connections end when the dataChannel under them fails or
//! the site shuts down, over a real QUIC connection on loopback that runs
//! through a UDP relay the test controls (it can drop either direction).
//!
//! The near site has a `RemoteListener` opening streams on that connection;
//! the far site serves them with an `ExposedServer`. Every app socket the far
//! side connects is handed to the test, so it can play the app.
//!
//! What must hold: a local peer never sees a clean close for a transfer whose
//! tail the far site did not acknowledge, and a site shutdown tears the exposed
//! side's streams down at once.

// Helpers outside `#[test]` fns are not covered by clippy's
// allow-unwrap-in-tests; in a test a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wovenet_daemon::app::{
    ExposedApps, ExposedServer, OpenError, RemoteListener, StreamOpener, StreamRegistry,
    TunnelStream, code,
};
use wovenet_daemon::config::{AppName, AppSocket, ExposedApp, ExposedTarget, RemoteApp, SiteName};
use wovenet_daemon::counters::Counters;
use wovenet_daemon::types::ChannelId;

const WAIT: Duration = Duration::from_secs(10);
/// Short, so a channel cut by the relay dies within seconds.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

fn site(s: &str) -> SiteName {
    SiteName::new(s).unwrap()
}

/// A UDP relay between the near endpoint (client) and the far one (server)
/// that drops either direction on demand.
struct Relay {
    addr: SocketAddr,
    drop_to_far: Arc<AtomicBool>,
    drop_to_near: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn new(far: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let near: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let drop_to_far = Arc::new(AtomicBool::new(false));
        let drop_to_near = Arc::new(AtomicBool::new(false));
        let to_far = {
            let (front, back, near, drop) = (
                front.clone(),
                back.clone(),
                near.clone(),
                drop_to_far.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *near.lock().unwrap() = Some(from);
                    if !drop.load(Ordering::SeqCst) {
                        let _ = back.send_to(&buf[..n], far).await;
                    }
                }
            })
        };
        let to_near = {
            let drop = drop_to_near.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, _)) = back.recv_from(&mut buf).await {
                    let near = *near.lock().unwrap();
                    if let Some(near) = near
                        && !drop.load(Ordering::SeqCst)
                    {
                        let _ = front.send_to(&buf[..n], near).await;
                    }
                }
            })
        };
        Self {
            addr,
            drop_to_far,
            drop_to_near,
            tasks: vec![to_far, to_near],
        }
    }

    fn drop_near_to_far(&self) {
        self.drop_to_far.store(true, Ordering::SeqCst);
    }

    fn drop_far_to_near(&self) {
        self.drop_to_near.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens streams on the near side of the relayed connection.
struct Opener(quinn::Connection);

impl StreamOpener for Opener {
    async fn open_stream(&self, _: &SiteName) -> Result<TunnelStream, OpenError> {
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

/// Two sites joined by one relayed QUIC connection, and an app the test plays.
struct Pair {
    relay: Relay,
    near: quinn::Connection,
    far: quinn::Connection,
    /// The far site's shutdown token (given to its `ExposedServer`).
    far_cancel: CancellationToken,
    /// Address of the near site's listener for the app.
    listener_addr: SocketAddr,
    /// App connections the far site made, in order.
    app_rx: mpsc::Receiver<TcpStream>,
    _listener: RemoteListener,
    _near_cancel: CancellationToken,
    _endpoints: (quinn::Endpoint, quinn::Endpoint),
}

impl Pair {
    async fn new() -> Self {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().unwrap()))
            .keep_alive_interval(Some(Duration::from_millis(250)));
        let (server, client) = common::endpoint_pair(transport);
        let relay = Relay::new(server.local_addr().unwrap()).await;

        let accept = async { server.accept().await.unwrap().await.unwrap() };
        let (near, far) = tokio::join!(
            async {
                client
                    .connect(relay.addr, "far.test")
                    .unwrap()
                    .await
                    .unwrap()
            },
            accept
        );

        // The app: every connection the far site makes goes to the test.
        let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = app.local_addr().unwrap();
        let (app_tx, app_rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((s, _)) = app.accept().await {
                let _ = app_tx.send(s).await;
            }
        });

        let far_cancel = CancellationToken::new();
        let server_side = ExposedServer::new(
            Arc::new(ExposedApps::new(vec![ExposedApp {
                name: AppName::new("app").unwrap(),
                target: ExposedTarget::Single(AppSocket::Tcp(app_addr)),
                max_connections: None,
                allowed_sites: Vec::new(),
                udp_idle_timeout: None,
                bandwidth_limit: None,
                proxy_protocol: None,
            }])),
            Arc::new(Counters::default()),
            Arc::new(StreamRegistry::new(Arc::default())),
            far_cancel.clone(),
        );
        {
            let far = far.clone();
            tokio::spawn(async move {
                while let Ok((send, recv)) = far.accept_bi().await {
                    let server_side = server_side.clone();
                    let datagrams =
                        wovenet_daemon::app::udp::Demux::new(far.clone(), Default::default());
                    tokio::spawn(async move {
                        let stream = TunnelStream {
                            send,
                            recv,
                            guard: Box::new(()),
                            channel: ChannelId(1),
                            datagrams,
                        };
                        let origin = "127.0.0.1:9".parse().unwrap();
                        server_side
                            .serve_stream(stream, &site("near"), origin)
                            .await;
                    });
                }
            });
        }

        let near_cancel = CancellationToken::new();
        let listener = RemoteListener::open(
            RemoteApp {
                site: site("far"),
                app: AppName::new("app").unwrap(),
                local_socket: AppSocket::Tcp("127.0.0.1:0".parse().unwrap()),
                app_socket: None,
                max_connections: None,
                udp_idle_timeout: None,
                bandwidth_limit: None,
            },
            Arc::new(Opener(near.clone())),
            Arc::new(Counters::default()),
            Arc::new(StreamRegistry::new(Arc::default())),
            near_cancel.clone(),
            &TaskTracker::new(),
        )
        .unwrap();
        let AppSocket::Tcp(listener_addr) = listener.local_addr().clone() else {
            panic!("tcp listener reported a unix address");
        };
        Self {
            relay,
            near,
            far,
            far_cancel,
            listener_addr,
            app_rx,
            _listener: listener,
            _near_cancel: near_cancel,
            _endpoints: (client, server),
        }
    }

    /// A client connection piped through to the app, proven by one byte
    /// each way: (client, app).
    async fn connected(&mut self) -> (TcpStream, TcpStream) {
        let mut client = TcpStream::connect(self.listener_addr).await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut app = tokio::time::timeout(WAIT, self.app_rx.recv())
            .await
            .expect("the far site connected the app")
            .unwrap();
        let mut b = [0u8; 1];
        tokio::time::timeout(WAIT, app.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        app.write_all(b"y").await.unwrap();
        tokio::time::timeout(WAIT, client.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        (client, app)
    }
}

/// Waits until `conn` has sent a STREAM frame more than `before`.
async fn stream_frame_sent(conn: &quinn::Connection, before: u64) {
    tokio::time::timeout(WAIT, async {
        while conn.stats().frame_tx.stream <= before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the FIN frame left");
}

/// Reads `s` to its end: the bytes, and how it ended (`Ok` for a clean EOF).
async fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the connection ended in time");
    (got, ended)
}

fn assert_reset(what: &str, ended: std::io::Result<()>) {
    match ended {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{what}: {e}"),
        Ok(()) => panic!("{what} saw a clean EOF, expected a reset"),
    }
}

/// Regression: the client-side pipe closed the client's socket cleanly once
/// it had handed the client's FIN to QUIC, before the far site acknowledged
/// it. Here the FIN never arrives (the relay drops everything towards the far
/// site) while the app's reply and FIN still come back: the client must see
/// the reply and then a reset, never a clean close.
#[tokio::test]
async fn client_sees_a_reset_when_its_fin_is_never_acknowledged() {
    let mut pair = Pair::new().await;
    let (mut client, mut app) = pair.connected().await;

    let frames = pair.near.stats().frame_tx.stream;
    pair.relay.drop_near_to_far();
    client.shutdown().await.unwrap();
    // The near pipe has read the client's EOF and sent its FIN (into the void).
    stream_frame_sent(&pair.near, frames).await;

    app.write_all(b"reply").await.unwrap();
    app.shutdown().await.unwrap();
    let (got, ended) = read_to_end(&mut client).await;
    assert_eq!(got, b"reply", "the reply still arrives");
    assert_reset("the client", ended);
}

/// The same on the exposed side: the app half-closes, its FIN never reaches
/// the near site (the relay drops everything towards it), the client's data
/// and FIN still arrive. The app must see them and then a reset.
#[tokio::test]
async fn app_sees_a_reset_when_its_fin_is_never_acknowledged() {
    let mut pair = Pair::new().await;
    let (mut client, mut app) = pair.connected().await;

    let frames = pair.far.stats().frame_tx.stream;
    pair.relay.drop_far_to_near();
    app.shutdown().await.unwrap();
    stream_frame_sent(&pair.far, frames).await;

    client.write_all(b"upload").await.unwrap();
    client.shutdown().await.unwrap();
    let (got, ended) = read_to_end(&mut app).await;
    assert_eq!(got, b"upload", "the upload still arrives");
    assert_reset("the app", ended);
}

/// When nothing is lost, both ends still see clean closes (the wait for the
/// acknowledgement must not turn a good transfer into a reset).
#[tokio::test]
async fn acknowledged_transfers_end_cleanly_on_both_sides() {
    let mut pair = Pair::new().await;
    let (mut client, mut app) = pair.connected().await;

    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let (got, ended) = read_to_end(&mut app).await;
    assert_eq!(got, b"request");
    ended.unwrap();
    app.write_all(b"response").await.unwrap();
    app.shutdown().await.unwrap();
    let (got, ended) = read_to_end(&mut client).await;
    assert_eq!(got, b"response");
    ended.unwrap();
}

/// Regression: exposed-side pipes ignored the site's shutdown (they waited on
/// a future that never completes), so an app connection stayed open until the
/// dataChannel went away. Cancelling the far site's token must reset the app
/// connection and, through the stream reset, the client at once.
#[tokio::test]
async fn exposed_streams_are_reset_when_the_site_shuts_down() {
    let mut pair = Pair::new().await;
    let (mut client, mut app) = pair.connected().await;

    pair.far_cancel.cancel();
    let (got, ended) = read_to_end(&mut app).await;
    assert!(got.is_empty(), "{got:?}");
    assert_reset("the app", ended);
    let (got, ended) = read_to_end(&mut client).await;
    assert!(got.is_empty(), "{got:?}");
    assert_reset("the client", ended);
    // The connection itself is untouched: only the streams were torn down.
    assert!(pair.near.close_reason().is_none());
}

/// A stream still waiting for its preamble is reset with the shutdown code
/// when the site shuts down, not left to the 10 s preamble timeout.
#[tokio::test]
async fn stream_waiting_for_its_preamble_is_reset_at_shutdown() {
    let pair = Pair::new().await;
    let (mut send, mut recv) = pair.near.open_bi().await.unwrap();
    // The version byte alone: an incomplete request.
    send.write_all(&[1]).await.unwrap();
    // Make sure the far site has accepted the stream before shutting down.
    tokio::time::timeout(WAIT, async {
        while pair.far.stats().frame_rx.stream == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();

    pair.far_cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(3), recv.read_to_end(1024))
        .await
        .expect("reset before the preamble timeout");
    match r {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(c))) => {
            assert_eq!(c, code::SHUTDOWN);
        }
        other => panic!("expected a reset with the shutdown code, got {other:?}"),
    }
}
