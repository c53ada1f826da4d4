//! The tunnel side of channel claims, over real quinn endpoints on loopback:
//! both ends learn the certificate the other presented (mutual TLS), an
//! inbound channel carries no stream in either direction until the site
//! confirms it, and a dialer whose channels are refused backs off.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns are test code too

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{SHARED_KEY, Side, echo_server};
use wovenet_daemon::app::OpenError;
use wovenet_daemon::app::StreamOpener;
use wovenet_daemon::app::preamble::{Request, Response, Status};
use wovenet_daemon::config::{AppName, AppSocket, ExposedApp, ExposedTarget, SiteName};
use wovenet_daemon::tunnel::auth::PeerId;
use wovenet_daemon::tunnel::tls::Fingerprint;
use wovenet_daemon::tunnel::{CLOSE_REFUSED, ChannelId, Direction, TunnelEvent};

fn side(name: &str, apps: Vec<ExposedApp>) -> Side {
    Side::new(name, SHARED_KEY, apps)
}

fn listen(s: &Side) -> SocketAddr {
    s.listen()
}

async fn channel_up(s: &mut Side) -> (PeerId, ChannelId, Direction, Fingerprint) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.events.recv()).await {
            Ok(Some(TunnelEvent::ChannelUp {
                peer,
                channel,
                direction,
                cert,
                ..
            })) => return (peer, channel, direction, cert),
            Ok(Some(_)) => {}
            other => panic!("expected ChannelUp, got {other:?}"),
        }
    }
}

/// Opens a stream from `from` to `to`'s app `echo` and waits up to `wait` for its verdict.
async fn request_echo(from: &Side, to: &SiteName, wait: Duration) -> Option<Status> {
    let mut s = from.tunnels.registry().open_stream(to).await.unwrap();
    let req = Request {
        app: AppName::new("echo").unwrap(),
        target: None,
        protocol: wovenet_daemon::config::Protocol::Tcp,
        client: None,
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
        allowed_sites: Vec::new(),
        udp_idle_timeout: None,
        bandwidth_limit: None,
        proxy_protocol: None,
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
