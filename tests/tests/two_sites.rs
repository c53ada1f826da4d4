//! Two sites, `b` exposing apps and also running the embedded broker, `a` using them:
//! forwarding correctness (byte-exact, half-close, parallelism), unix/tcp conversion, range
//! apps and refusals.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::task::JoinSet;
use wovenet_e2e::*;
use wovenet_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_comes_up_and_echo_works() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let p = Pair::new(
        |b| b.expose("echo", echo.sock()),
        |a| a.remote("b", "echo", &local),
    )
    .await;
    p.wait_forward(&local).await;

    echo_once(&local, b"hello through the tunnel", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    // Who saw whom, over which channel, and the listener: as the control API reports them.
    let (a, b) = (p.a.api().await, p.b.api().await);
    for (api, peer) in [(&a, "b"), (&b, "a")] {
        wait_for(
            format!("peer {peer} connected"),
            WAIT,
            || p.diag(),
            || async {
                api.peer(peer)
                    .await
                    .filter(|x| x.state() == v1::PeerState::Connected && x.channels >= 1)
            },
        )
        .await;
    }
    let up = a.up_channels("b").await;
    assert!(
        !up.is_empty() && up.iter().all(|id| *id != 0),
        "channel ids {up:?}\n{}",
        p.diag()
    );
    let apps = a.apps().await;
    let echo_app = remote_app(&apps, "b", "echo").unwrap();
    assert_eq!(
        (echo_app.listener_state(), echo_app.listen_addr.as_str()),
        (v1::ListenerState::Open, local.to_string().as_str()),
        "{apps:?}"
    );
    assert!(
        echo.accepted() >= 2,
        "the echo server should have seen our connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_arrive_byte_exact() {
    const LEN: u64 = 64 << 20;
    let (up_seed, down_seed) = (0x5eed_0001, 0x5eed_0002);
    let sink = SinkServer::tcp(LEN, down_seed).await;
    let local = Sock::free_tcp();
    let p = Pair::new(
        |b| b.expose("sink", sink.sock()),
        |a| a.remote("b", "sink", &local),
    )
    .await;

    let stream = connect_eventually(&local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let t = data::both_ways(stream, (up_seed, down_seed), LEN, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    eprintln!("64 MiB each way in {:?}", t.took);
    let (up_hash, down_hash) = (t.up, t.down);
    assert_eq!(
        t.received,
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
async fn hundred_parallel_connections_each_echo_their_own_data() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let p = Pair::new(
        |b| b.congestion("bbr").expose("echo", echo.sock()),
        |a| a.congestion("bbr").remote("b", "echo", &local),
    )
    .await;
    p.wait_forward(&local).await;

    let mut set = JoinSet::new();
    for i in 0..100u64 {
        let local = local.clone();
        set.spawn(async move {
            let payload = data::bytes(1000 + i, 16 * 1024 + i as usize * 97);
            echo_once(&local, &payload, WAIT)
                .await
                .map_err(|e| format!("connection {i}: {e}"))
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.unwrap() {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 100 parallel connections failed, first ones:\n  {}\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        p.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_and_tcp_sockets_convert_both_ways() {
    let dir = socket_dir();
    let unix_app = EchoServer::unix(dir.path().join("app.sock")).await;
    let tcp_app = EchoServer::tcp().await;
    let tcp_local = Sock::free_tcp();
    let unix_local = Sock::unix(dir.path().join("local.sock"));
    let p = Pair::new(
        |b| {
            b.expose("unix-app", unix_app.sock())
                .expose("tcp-app", tcp_app.sock())
        },
        |a| {
            a.remote("b", "unix-app", &tcp_local)
                .remote("b", "tcp-app", &unix_local)
        },
    )
    .await;
    p.wait_forward(&tcp_local).await;
    p.wait_forward(&unix_local).await;

    let payload = data::bytes(77, 1 << 20);
    echo_once(&tcp_local, &payload, WAIT)
        .await
        .unwrap_or_else(|e| panic!("exposed unix app served as local tcp: {e}\n{}", p.diag()));
    echo_once(&unix_local, &payload, WAIT)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "exposed tcp app served on a local unix socket: {e}\n{}",
                p.diag()
            )
        });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_app_forwards_allowed_targets_and_refuses_others() {
    let allowed = EchoServer::tcp().await;
    let wrong_port = EchoServer::tcp().await;
    let wrong_addr = EchoServer::tcp_on(Ipv4Addr::new(127, 0, 0, 2).into()).await;
    let (p_ok, p_bad, p_addr) = (allowed.port(), wrong_port.port(), wrong_addr.port());
    assert!(
        p_bad != p_ok && p_bad != p_addr,
        "port collision in test setup: {p_ok} {p_bad} {p_addr}"
    );
    // Ports allow the first and third server; addresses only 127.0.0.1. So the second is refused
    // for its port and the third for its address alone.
    let ports = [p_ok.to_string(), p_addr.to_string()];
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    let (ok_local, bad_port_local, bad_addr_local) =
        (Sock::free_tcp(), Sock::free_tcp(), Sock::free_tcp());
    let p = Pair::new(
        |b| b.expose_range("fwd", &ports, &["127.0.0.1"]),
        |a| {
            a.remote_range("b", "fwd", allowed.sock(), &ok_local)
                .remote_range("b", "fwd", wrong_port.sock(), &bad_port_local)
                .remote_range("b", "fwd", wrong_addr.sock(), &bad_addr_local)
        },
    )
    .await;
    p.wait_forward(&ok_local).await;

    for (what, local) in [
        ("port outside portRange", &bad_port_local),
        ("address outside addressRange", &bad_addr_local),
    ] {
        let stream = connect_eventually(local, WAIT).await.unwrap_or_else(|e| {
            panic!("the range app is offered, so the listener for a {what} target should open: {e}\n{}", p.diag())
        });
        drop(stream);
        match expect_closed_without_data(local, Duration::from_secs(10)).await {
            Ok(Closed::Eof | Closed::Error(_)) => {}
            Ok(Closed::Refused) => panic!(
                "listener for a {what} target closed instead of refusing the stream\n{}",
                p.diag()
            ),
            Err(e) => panic!("target with a {what}: {e}\n{}", p.diag()),
        }
    }
    assert_eq!(
        wrong_port.accepted(),
        0,
        "b connected to a target outside portRange\n{}",
        p.diag()
    );
    assert_eq!(
        wrong_addr.accepted(),
        0,
        "b connected to a target outside addressRange\n{}",
        p.diag()
    );
    echo_once(&ok_local, b"still fine", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_server_reset_reaches_the_client_as_an_error() {
    let rst = ResettingServer::tcp().await;
    let local = Sock::free_tcp();
    let p = Pair::new(
        |b| b.expose("rst", rst.sock()),
        |a| a.remote("b", "rst", &local),
    )
    .await;
    let stream = connect_eventually(&local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    drop(stream);

    let closed = expect_closed_without_data(&local, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    assert!(
        matches!(closed, Closed::Error(_)),
        "expected the app's reset to reach the client as a reset/error, saw {closed:?}\n{}",
        p.diag()
    );
    assert!(
        rst.accepted() >= 1,
        "b never connected to the app\n{}",
        p.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_app_missing_on_the_far_site_never_gets_a_listener() {
    let echo = EchoServer::tcp().await;
    let (local, missing) = (Sock::free_tcp(), Sock::free_tcp());
    let p = Pair::new(
        |b| b.expose("echo", echo.sock()),
        |a| a.remote("b", "echo", &local).remote("b", "nope", &missing),
    )
    .await;
    p.wait_forward(&local).await;

    stays_closed(&missing, Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("b does not offer 'nope': {e}\n{}", p.diag()));
    let a = p.a.api().await;
    assert_eq!(
        a.listener_state("b", "nope").await,
        Some(v1::ListenerState::Waiting),
        "a opened a listener for an app b does not offer\n{}",
        p.diag()
    );
    assert_eq!(
        a.listener_state("b", "echo").await,
        Some(v1::ListenerState::Open)
    );
}
