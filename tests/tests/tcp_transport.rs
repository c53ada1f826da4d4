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

    let stream = connect_eventually(&local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    // The client half-closes once its 64 MiB are out and keeps reading: the app must see
    // the end of its input (it reports the hash only then) and still send all of its own.
    let t = data::both_ways(stream, (up_seed, down_seed), LEN, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    eprintln!("64 MiB each way over a TCP dataChannel in {:?}", t.took);
    let (up_hash, down_hash) = (t.up, t.down);
    assert_eq!(
        t.received,
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

/// With UDP working, a peer's TCP socket is the fallback only: `a` carries its streams on
/// QUIC and never dials TCP, even after the fallback's grace period. (The fallback itself,
/// under a firewall that drops UDP, is `tcp_fallback.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_and_a_tcp_socket_share_one_port_and_tcp_stays_unused_while_quic_works() {
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
    // Past the fallback's grace period (8 s), with a margin.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let to_b: Vec<_> = api
        .channels()
        .await
        .into_iter()
        .filter(|c| c.peer == "b")
        .map(|c| (c.transport(), c.state(), c.remote_addr.clone()))
        .collect();
    assert_eq!(
        to_b,
        vec![(
            v1::ChannelTransport::Quic,
            v1::ChannelState::Up,
            format!("127.0.0.1:{port}")
        )],
        "one QUIC channel and no TCP dial\n{}",
        p.diag()
    );
    let quic_id = api.up_channels("b").await;
    for _ in 0..4 {
        let mut conn = connect_eventually(&local, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
        conn.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        conn.read_exact(&mut back).await.unwrap();
        let on: Vec<u64> = api.streams().await.iter().map(|s| s.channel_id).collect();
        assert_eq!(on, quic_id, "{}", p.diag());
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

/// A UDP app through a TCP dataChannel: the flow's datagrams ride QUIC DATAGRAM frames inside
/// the framed QUIC connection, answered one by one with nothing lost on loopback, and the
/// flow is listed as a `udp` stream on the TCP channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_travel_over_a_tcp_channel() {
    let echo = UdpEcho::start().await;
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let p = Pair::new(
        |b| {
            b.local_sockets(vec![tcp_socket()]).extra(
                "localExposedApps",
                json!([{ "appName": "dns", "appSocket": echo.socket() }]),
            )
        },
        |a| {
            a.local_sockets(vec![]).extra(
                "remoteApps",
                json!([{ "siteName": "b", "appName": "dns", "localSocket": format!("udp:{local}") }]),
            )
        },
    )
    .await;
    let c = udp_client(local).await;
    wait_udp_forward(&c, &p.sites()).await;
    let before = echo.received();
    for i in 0..500u32 {
        let q = format!("query {i}");
        assert!(
            ask(&c, q.as_bytes(), Duration::from_secs(5))
                .await
                .is_some(),
            "query {i} unanswered\n{}",
            p.diag()
        );
    }
    assert_eq!(echo.received() - before, 500, "{}", p.diag());
    let api = p.a.api().await;
    let tcp: Vec<u64> = api
        .channels()
        .await
        .iter()
        .filter(|c| c.peer == "b" && c.transport() == v1::ChannelTransport::Tcp)
        .map(|c| c.id)
        .collect();
    let flows: Vec<(String, u64, u64, u64)> = api
        .streams()
        .await
        .into_iter()
        .map(|s| {
            (
                s.kind.clone(),
                s.channel_id,
                s.datagrams_sent,
                s.datagrams_received,
            )
        })
        .collect();
    assert!(
        flows.len() == 1 && flows[0].0 == "udp" && tcp.contains(&flows[0].1),
        "flows {flows:?}, tcp channels {tcp:?}\n{}",
        p.diag()
    );
    assert!(flows[0].2 >= 500 && flows[0].3 >= 500, "{flows:?}");
}
