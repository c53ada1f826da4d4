//! TCP dataChannels (`transportProtocol: tcp`) between two real sites: `b` listens on TCP
//! only (no UDP socket at all) and `a` has no socket of its own, so every channel between
//! them is a QUIC connection framed over TCP. Forwarding must be as exact as over UDP:
//! 64 MiB byte-exact each way, half-close and an app's reset carried.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use wovenet_e2e::*;

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
