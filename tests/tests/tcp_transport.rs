//! TCP dataChannels (`transportProtocol: tcp`) between two real sites: `b` listens on TCP
//! only (no UDP socket at all) and `a` has no socket of its own, so every channel between
//! them is a QUIC connection framed over TCP. Forwarding must be as exact as over UDP:
//! 64 MiB byte-exact each way, half-close and an app's reset carried.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wovenet_e2e::*;
use wovenet_proto::v1;

/// `b`'s only tunnel socket: TCP on a free loopback port.
fn tcp_socket() -> serde_json::Value {
    json!({
        "mode": "dedicated-address", "transportProtocol": "tcp",
        "publicAddress": "127.0.0.1", "listenAddress": "127.0.0.1",
        "listenPort": free_tcp_port(),
    })
}

/// `b` exposes `app` at `target` over a TCP-only socket; `a` dials it and serves it at the
/// returned local socket.
async fn tcp_pair(app: &str, target: String) -> (Pair, Sock) {
    let local = Sock::free_tcp();
    let p = Pair::new(
        |b| b.local_sockets(vec![tcp_socket()]).expose(app, target),
        |a| a.local_sockets(vec![]).remote("b", app, &local),
    )
    .await;
    (p, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_arrive_byte_exact_over_tcp_only() {
    const LEN: u64 = 64 << 20;
    let (up_seed, down_seed) = (0x7c90_0001, 0x7c90_0002);
    let sink = SinkServer::tcp(LEN, down_seed).await;
    let (p, local) = tcp_pair("sink", sink.sock().to_string()).await;

    let expected = tokio::task::spawn_blocking(move || {
        (
            data::sha256_of(up_seed, LEN),
            data::sha256_of(down_seed, LEN),
        )
    });
    let stream = connect_eventually(&local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let start = Instant::now();
    let (mut r, mut w) = tokio::io::split(stream);
    // The client half-closes once its 64 MiB are out and keeps reading: the app must see
    // the end of its input (it reports the hash only then) and still send all of its own.
    let send = async {
        data::write_stream(&mut w, up_seed, LEN).await?;
        w.shutdown().await
    };
    let transfer = async { tokio::join!(send, data::hash_to_end(&mut r)) };
    let limit = Duration::from_secs(120);
    let (sent, received) = tokio::time::timeout(limit, transfer)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "64 MiB each way over TCP did not finish within {limit:?}\n{}",
                p.diag()
            )
        });
    let (up_hash, down_hash) = expected.await.unwrap();
    sent.unwrap_or_else(|e| panic!("sending 64 MiB failed: {e}\n{}", p.diag()));
    let (n, got) = received
        .unwrap_or_else(|(n, e)| panic!("receiving failed after {n} bytes: {e}\n{}", p.diag()));
    eprintln!(
        "64 MiB each way over a TCP dataChannel in {:?}",
        start.elapsed()
    );
    assert_eq!(
        (n, got),
        (LEN, down_hash),
        "downstream (b's app to a's client) differs\n{}",
        p.diag()
    );
    // Both ends show the channel, and it is a TCP one.
    for (site, peer) in [(&p.a, "b"), (&p.b, "a")] {
        let channels = site.api().await.channels().await;
        let to_peer: Vec<_> = channels.iter().filter(|c| c.peer == peer).collect();
        assert!(
            !to_peer.is_empty()
                && to_peer
                    .iter()
                    .all(|c| c.transport() == v1::ChannelTransport::Tcp),
            "channels to {peer}: {to_peer:?}\n{}",
            p.diag()
        );
    }
    let report = sink.next_report(WAIT).await;
    assert_eq!(
        report,
        SinkReport {
            received: LEN,
            sha256: Some(up_hash),
            sent: LEN,
            error: None
        },
        "upstream (a's client to b's app) differs\n{}",
        p.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_reset_reaches_the_client_over_tcp() {
    let rst = ResettingServer::tcp().await;
    let (p, local) = tcp_pair("rst", rst.sock().to_string()).await;
    let stream = connect_eventually(&local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    drop(stream);
    // The first connections may be refused while the channel comes up; wait for b to
    // have reached the app once, then check what the client sees.
    let closed = expect_closed_without_data(&local, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    assert!(
        matches!(closed, Closed::Error(_)),
        "expected the app's reset to reach the client as a reset/error, saw {closed:?}\n{}",
        p.diag()
    );
    assert!(
        rst.accepted() >= 1,
        "b never connected to the app over the TCP channel\n{}",
        p.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_and_a_tcp_socket_share_one_port_and_both_carry_channels() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    // One port number for both: free for TCP and for UDP.
    let port = loop {
        let port = free_tcp_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let socket = |transport: &str| {
        json!({
            "mode": "dedicated-address", "transportProtocol": transport,
            "publicAddress": "127.0.0.1", "listenAddress": "127.0.0.1", "listenPort": port,
        })
    };
    let p = Pair::new(
        |b| {
            b.local_sockets(vec![socket("quic"), socket("tcp")])
                .expose("echo", echo.sock())
        },
        |a| a.local_sockets(vec![]).remote("b", "echo", &local),
    )
    .await;
    p.wait_forward(&local).await;
    let api = p.a.api().await;
    wait_for(
        "a QUIC and a TCP channel from a to b",
        WAIT,
        || p.diag(),
        || async {
            let mut t: Vec<_> = api
                .channels()
                .await
                .iter()
                .filter(|c| c.peer == "b" && c.state() == v1::ChannelState::Up)
                .map(|c| (c.transport(), c.remote_addr.clone()))
                .collect();
            t.sort();
            let want = vec![
                (v1::ChannelTransport::Quic, format!("127.0.0.1:{port}")),
                (v1::ChannelTransport::Tcp, format!("127.0.0.1:{port}")),
            ];
            (t == want).then_some(())
        },
    )
    .await;
    // With both up, new streams take the QUIC one (TCP is the fallback).
    let quic_id = api
        .channels()
        .await
        .iter()
        .find(|c| c.peer == "b" && c.transport() == v1::ChannelTransport::Quic)
        .map(|c| c.id)
        .unwrap();
    for _ in 0..4 {
        let mut conn = connect_eventually(&local, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
        conn.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        conn.read_exact(&mut back).await.unwrap();
        let streams = api.streams().await;
        assert!(
            !streams.is_empty() && streams.iter().all(|s| s.channel_id == quic_id),
            "streams {streams:?} should all be on QUIC channel {quic_id}\n{}",
            p.diag()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_tcp_connections_are_capped_per_source_and_closed_at_the_deadline() {
    let socket = tcp_socket();
    let port = socket["listenPort"].as_u64().unwrap() as u16;
    let p = Pair::new(
        |b| b.local_sockets(vec![socket]),
        |a| a.local_sockets(vec![]),
    )
    .await;
    let b = p.b.api().await;
    // a dials b from the same address: let its channel come up first, so that only our
    // silent connections hold places under the caps.
    let a = p.a.api().await;
    wait_for(
        "a's channel to b",
        WAIT,
        || p.diag(),
        || async { (!a.up_channels("b").await.is_empty()).then_some(()) },
    )
    .await;
    let (refused0, failed0) = (
        b.counter("preauth_refused").await,
        b.counter("auth_failures").await,
    );
    // 16 silent connections from one source are held (the per-source cap); the 17th
    // is closed at once and counted.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("the connection over the cap stayed open\n{}", p.diag()));
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "over the cap: read {n:?}\n{}",
        p.diag()
    );
    assert_eq!(
        b.counter("preauth_refused").await,
        refused0 + 1,
        "{}",
        p.diag()
    );
    // The held ones never prove anything: closed by the proof deadline (5 s), counted.
    let start = Instant::now();
    for mut c in held {
        let n = tokio::time::timeout(Duration::from_secs(15), c.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("a silent connection outlived the deadline\n{}", p.diag()));
        assert!(matches!(n, Ok(0) | Err(_)), "read {n:?}\n{}", p.diag());
    }
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(
        b.counter("auth_failures").await,
        failed0 + 16,
        "{}",
        p.diag()
    );
}
