//! dataChannels over real quinn endpoints on loopback: only a peer that knows
//! `crypto.key` (and presents the announced certificate) gets a channel.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns are test code too

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{SHARED_KEY, Side};
use wovenet_daemon::message::announce::InstanceId;
use wovenet_daemon::tunnel::TunnelEvent;
use wovenet_daemon::tunnel::auth::PeerId;
use wovenet_daemon::tunnel::tls::Fingerprint;

fn side(name: &str, good_key: bool) -> Side {
    let passphrase = if good_key {
        SHARED_KEY
    } else {
        "a-guessed-key"
    };
    Side::new(name, passphrase, vec![])
}

fn listen(s: &Side) -> SocketAddr {
    s.listen()
}

async fn next_event(s: &mut Side, within: Duration) -> Option<TunnelEvent> {
    tokio::time::timeout(within, s.events.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn peers_with_the_key_get_a_channel_on_both_sides() {
    let mut a = side("a", true);
    let mut b = side("b", true);
    let addr = listen(&a);
    b.tunnels.dial(
        a.id.clone(),
        0,
        addr,
        a.tunnels.fingerprint(),
        b.cancel.child_token(),
    );
    for s in [&mut a, &mut b] {
        match next_event(s, Duration::from_secs(5)).await {
            Some(TunnelEvent::ChannelUp { .. }) => {}
            other => panic!("expected ChannelUp, got {other:?}"),
        }
    }
    assert_eq!(a.tunnels.registry().channels(&b.id.site).len(), 1);
    assert_eq!(b.tunnels.registry().channels(&a.id.site)[0].peer, a.id);
    assert_eq!(a.counters.auth_failures.load(Ordering::Relaxed), 0);
    a.cancel.cancel();
    b.cancel.cancel();
}

#[tokio::test]
async fn peer_without_the_key_gets_no_channel_and_is_counted() {
    let mut a = side("a", true);
    let mut evil = side("evil", false);
    let addr = listen(&a);
    // Even knowing the address and the certificate, the key proof fails.
    evil.tunnels.dial(
        a.id.clone(),
        0,
        addr,
        a.tunnels.fingerprint(),
        evil.cancel.child_token(),
    );
    match next_event(&mut evil, Duration::from_secs(5)).await {
        Some(TunnelEvent::DialFailed { attempts: 1, .. }) => {}
        other => panic!("expected the first dial to fail, got {other:?}"),
    }
    assert!(
        next_event(&mut a, Duration::from_millis(500))
            .await
            .is_none(),
        "the listener must not report a channel"
    );
    assert!(a.tunnels.registry().all().is_empty());
    assert!(evil.tunnels.registry().all().is_empty());
    assert!(a.counters.auth_failures.load(Ordering::Relaxed) >= 1);
    a.cancel.cancel();
    evil.cancel.cancel();
}

#[tokio::test]
async fn server_with_another_certificate_is_refused_by_the_dialer() {
    let mut a = side("a", true);
    let mut b = side("b", true);
    let addr = listen(&a);
    let wrong_pin = Fingerprint([0x42; 32]);
    b.tunnels
        .dial(a.id.clone(), 0, addr, wrong_pin, b.cancel.child_token());
    match next_event(&mut b, Duration::from_secs(5)).await {
        Some(TunnelEvent::DialFailed { .. }) => {}
        other => panic!("expected DialFailed, got {other:?}"),
    }
    assert!(
        next_event(&mut a, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(a.tunnels.registry().all().is_empty());
    a.cancel.cancel();
    b.cancel.cancel();
}

#[tokio::test]
async fn dialer_refuses_a_channel_to_an_unexpected_instance() {
    let a = side("a", true);
    let mut b = side("b", true);
    let addr = listen(&a);
    let stale = PeerId {
        site: a.id.site.clone(),
        instance: InstanceId::new_random(),
    };
    b.tunnels.dial(
        stale,
        0,
        addr,
        a.tunnels.fingerprint(),
        b.cancel.child_token(),
    );
    match next_event(&mut b, Duration::from_secs(5)).await {
        Some(TunnelEvent::DialFailed { .. }) => {}
        other => panic!("expected DialFailed, got {other:?}"),
    }
    assert!(b.tunnels.registry().all().is_empty());
    a.cancel.cancel();
    b.cancel.cancel();
}
