//! The tunnel side of channel claims, over real quinn endpoints on loopback:
//! both ends learn the certificate the other presented (mutual TLS), an
//! inbound channel carries no stream in either direction until the site
//! confirms it, and a dialer whose channels are refused backs off.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns are test code too

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wovenet_daemon::app::preamble::{Request, Response, Status};
use wovenet_daemon::app::{ExposedApps, ExposedServer, OpenError, StreamOpener};
use wovenet_daemon::config::{
    AppName, AppSocket, CongestionControl, CryptoKey, ExposedApp, ExposedTarget, LocalSocket,
    PublicAddress, SiteName, SocketMode,
};
use wovenet_daemon::counters::Counters;
use wovenet_daemon::crypto::Keys;
use wovenet_daemon::message::announce::InstanceId;
use wovenet_daemon::tunnel::auth::PeerId;
use wovenet_daemon::tunnel::tls::Fingerprint;
use wovenet_daemon::tunnel::{CLOSE_REFUSED, ChannelId, Direction, Setup, TunnelEvent, Tunnels};

fn keys() -> Arc<Keys> {
    static K: OnceLock<Arc<Keys>> = OnceLock::new();
    K.get_or_init(|| Arc::new(Keys::derive(&CryptoKey::new("the-shared-key").unwrap())))
        .clone()
}

struct Side {
    tunnels: Tunnels,
    id: PeerId,
    events: mpsc::Receiver<TunnelEvent>,
    cancel: CancellationToken,
}

fn side(name: &str, apps: Vec<ExposedApp>) -> Side {
    let (tx, events) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let id = PeerId {
        site: SiteName::new(name).unwrap(),
        instance: InstanceId::new_random(),
    };
    let counters = Arc::new(Counters::default());
    let server = ExposedServer::new(
        Arc::new(ExposedApps::new(apps)),
        counters.clone(),
        Arc::new(wovenet_daemon::app::StreamRegistry::new(Arc::default())),
        cancel.clone(),
    );
    let tunnels = Tunnels::new(
        Setup {
            me: id.clone(),
            keys: keys(),
            congestion: CongestionControl::Cubic,
            server: Arc::new(server),
            counters,
            events_tx: tx,
        },
        cancel.clone(),
        TaskTracker::new(),
    )
    .unwrap();
    Side {
        tunnels,
        id,
        events,
        cancel,
    }
}

fn listen(s: &Side) -> SocketAddr {
    s.tunnels
        .listen(&LocalSocket {
            mode: SocketMode::DedicatedAddress,
            public_address: PublicAddress::Fixed("127.0.0.1".parse().unwrap()),
            public_port: 0,
            listen: "127.0.0.1:0".parse().unwrap(),
        })
        .unwrap()
}

async fn channel_up(s: &mut Side) -> (PeerId, ChannelId, Direction, Fingerprint) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.events.recv()).await {
            Ok(Some(TunnelEvent::ChannelUp {
                peer,
                channel,
                direction,
                cert,
            })) => return (peer, channel, direction, cert),
            Ok(Some(_)) => {}
            other => panic!("expected ChannelUp, got {other:?}"),
        }
    }
}

/// A TCP echo server; returns its address.
async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Opens a stream from `from` to `to`'s app `echo` and waits up to `wait` for its verdict.
async fn request_echo(from: &Side, to: &SiteName, wait: Duration) -> Option<Status> {
    let mut s = from.tunnels.registry().open_stream(to).await.unwrap();
    let req = Request {
        app: AppName::new("echo").unwrap(),
        target: None,
    };
    s.send.write_all(&req.encode()).await.unwrap();
    let read = async {
        let mut buf = Vec::new();
        loop {
            if let Some((resp, _)) = Response::decode(&buf).unwrap() {
                return resp.status;
            }
            let mut chunk = [0u8; 64];
            let n = s.recv.read(&mut chunk).await.unwrap().unwrap_or(0);
            assert!(n > 0, "stream ended before a response");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(wait, read).await.ok()
}

#[tokio::test]
async fn an_inbound_channel_carries_no_stream_until_the_site_confirms_it() {
    let echo = echo_server().await;
    let app = ExposedApp {
        name: AppName::new("echo").unwrap(),
        target: ExposedTarget::Single(AppSocket::Tcp(echo)),
        max_connections: None,
    };
    let mut a = side("a", vec![app.clone()]);
    let mut b = side("b", vec![app]);
    let addr = listen(&a);
    b.tunnels.dial(
        a.id.clone(),
        0,
        addr,
        a.tunnels.fingerprint(),
        b.cancel.child_token(),
    );
    // Each end learns the certificate the other one proved it holds.
    let (peer, ch, dir, cert) = channel_up(&mut a).await;
    assert_eq!(
        (peer, dir, cert),
        (b.id.clone(), Direction::Inbound, b.tunnels.fingerprint())
    );
    let (peer, _, dir, cert) = channel_up(&mut b).await;
    assert_eq!(
        (peer, dir, cert),
        (a.id.clone(), Direction::Outbound, a.tunnels.fingerprint())
    );
    let on_a = &a.tunnels.registry().channels(&b.id.site)[0];
    assert_eq!(on_a.cert, b.tunnels.fingerprint());
    assert!(!on_a.is_confirmed());
    assert!(b.tunnels.registry().channels(&a.id.site)[0].is_confirmed());

    // Unconfirmed: A picks no channel to B, and B's request is not served.
    assert!(matches!(
        a.tunnels.registry().open_stream(&b.id.site).await,
        Err(OpenError::NotConnected(_))
    ));
    let b_site = b.id.site.clone();
    let pending = tokio::spawn({
        let site = a.id.site.clone();
        async move {
            let status = request_echo(&b, &site, Duration::from_secs(10)).await;
            (b, status)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished(), "served before confirmation");

    assert!(a.tunnels.registry().confirm(&b_site, ch));
    let (b, status) = pending.await.unwrap();
    assert_eq!(status, Some(Status::Ok), "served once confirmed");
    assert_eq!(
        request_echo(&a, &b.id.site, Duration::from_secs(5)).await,
        Some(Status::Ok),
        "picked once confirmed"
    );
    a.cancel.cancel();
    b.cancel.cancel();
}

#[tokio::test]
async fn a_dialer_whose_channels_are_refused_backs_off() {
    let mut a = side("a", vec![]);
    let mut b = side("b", vec![]);
    let addr = listen(&a);
    b.tunnels.dial(
        a.id.clone(),
        0,
        addr,
        a.tunnels.fingerprint(),
        b.cancel.child_token(),
    );
    // A refuses every channel B makes, as a site refuses a duplicate's.
    let start = Instant::now();
    let mut attempts = 0;
    let mut reasons = Vec::new();
    while start.elapsed() < Duration::from_secs(4) {
        let left = Duration::from_secs(4).saturating_sub(start.elapsed());
        match tokio::time::timeout(left, a.events.recv()).await {
            Ok(Some(TunnelEvent::ChannelUp { peer, channel, .. })) => {
                attempts += 1;
                a.tunnels.registry().close(
                    &peer.site,
                    channel,
                    CLOSE_REFUSED,
                    "refused: another live instance holds this site name",
                );
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    while let Ok(ev) = b.events.try_recv() {
        if let TunnelEvent::ChannelDown { reason, .. } = ev {
            reasons.push(reason);
        }
    }
    // Resetting the backoff after each (refused) connection would redial
    // every 125-250 ms: ~20 attempts in 4 s. Growing delays allow ~5.
    assert!(
        (2..=7).contains(&attempts),
        "{attempts} attempts in 4 s; reasons seen by the dialer: {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("another live instance holds this site name")),
        "{reasons:?}"
    );
    a.cancel.cancel();
    b.cancel.cancel();
}
