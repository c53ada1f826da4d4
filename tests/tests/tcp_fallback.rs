//! A site behind a network that drops UDP (the `natrig` rig: its NAT drops every UDP packet
//! with nftables) joins a public site that announces a QUIC and a TCP socket on one port:
//! its QUIC dials fail, it falls back to the TCP socket within seconds, and carries 64 MiB
//! each way byte-exact, half-close and an app's reset over it. Once UDP passes again, QUIC
//! comes back, new streams take it, and the TCP channel drains: a stream it carries goes on
//! until its client ends it, then the TCP channel closes.
//! Needs root and nft (fails instead of skipping in CI).
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wovenet_e2e::natrig::{NatKind, Rig};
use wovenet_e2e::*;
use wovenet_proto::v1;

const LEN: u64 = 64 << 20;
const UP_SEED: u64 = 0x7cf0_0001;
const DOWN_SEED: u64 = 0x7cf0_0002;
/// `b`'s tunnel port, for QUIC (UDP) and TCP alike: one port forward serves both.
const PORT: u16 = 4433;

/// `a`'s channels to `b` that are up, as (id, transport).
async fn up_channels(api: &Api) -> Vec<(u64, v1::ChannelTransport)> {
    api.channels()
        .await
        .into_iter()
        .filter(|c| c.peer == "b" && c.state() == v1::ChannelState::Up)
        .map(|c| (c.id, c.transport()))
        .collect()
}

/// Waits until `a` has an up channel to `b` over `transport`; returns its id.
async fn channel_over(
    api: &Api,
    transport: v1::ChannelTransport,
    timeout: Duration,
    diag: impl FnOnce() -> String,
) -> u64 {
    wait_for(
        format!("a channel from a to b over {transport:?}"),
        timeout,
        diag,
        || async {
            up_channels(api)
                .await
                .into_iter()
                .find(|(_, t)| *t == transport)
                .map(|(id, _)| id)
        },
    )
    .await
}

/// The channel `a` carries the stream of its client at `local` on: the only stream of the
/// app `app` that is open at `a`.
async fn channel_of(api: &Api, app: &str) -> Vec<u64> {
    api.streams()
        .await
        .into_iter()
        .filter(|s| s.app == app)
        .map(|s| s.channel_id)
        .collect()
}

async fn ping(conn: &mut Stream, msg: &[u8]) -> Result<(), String> {
    conn.write_all(msg).await.map_err(|e| e.to_string())?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut back))
        .await
        .map_err(|_| "no echo within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    if back == msg {
        Ok(())
    } else {
        Err(format!("echoed {back:?} for {msg:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_network_drops_udp_joins_over_tcp_and_returns_to_quic() {
    let Some(rig) = Rig::new() else { return };
    let broker = rig.embedded_broker().await;
    let nat = rig.nat(NatKind::EndpointIndependent);
    let (host_a, host_b) = (rig.site_behind(&nat), rig.public_site());
    // From the start, nothing UDP leaves or reaches a's network.
    nat.cut_udp();

    let dir = socket_dir();
    let sink = SinkServer::unix(dir.path().join("sink.sock"), LEN, DOWN_SEED).await;
    let echo = EchoServer::unix(dir.path().join("echo.sock")).await;
    let rst = ResettingServer::on(
        host_b
            .netns()
            .tcp_listener(SocketAddr::from(([127, 0, 0, 1], 0))),
    );
    let (l_sink, l_echo, l_rst) = (
        Sock::unix(dir.path().join("a-sink.sock")),
        Sock::unix(dir.path().join("a-echo.sock")),
        // TCP inside a's namespace: a unix client cannot see a reset.
        SocketAddr::from(([127, 0, 0, 1], 4000)),
    );
    let socket = |transport: &str| {
        json!({
            "mode": "dedicated-address", "transportProtocol": transport,
            "publicAddress": host_b.addr().to_string(), "listenAddress": "0.0.0.0",
            "listenPort": PORT,
        })
    };
    let net = Net::new(broker.url());
    let b = net
        .site("b")
        .netns(host_b.netns())
        .local_sockets(vec![socket("quic"), socket("tcp")])
        .expose("sink", sink.sock())
        .expose("echo", echo.sock())
        .expose("rst", rst.sock())
        .spawn()
        .await;
    let start = Instant::now();
    let a = net
        .site("a")
        .netns(host_a.netns())
        .local_sockets(vec![])
        .remote("b", "sink", &l_sink)
        .remote("b", "echo", &l_echo)
        .remote("b", "rst", Sock::Tcp(l_rst))
        .spawn()
        .await;
    let diag = || format!("{}\n{}", diag(&[&a, &b]), rig.diag());
    let api = a.api().await;

    // QUIC cannot get through: the TCP socket carries the tunnel within seconds.
    let tcp = channel_over(
        &api,
        v1::ChannelTransport::Tcp,
        Duration::from_secs(30),
        diag,
    )
    .await;
    eprintln!("over TCP {:?} after a started", start.elapsed());
    assert_eq!(
        up_channels(&api).await,
        vec![(tcp, v1::ChannelTransport::Tcp)],
        "{}",
        diag()
    );

    // 64 MiB each way, byte-exact; the client half-closes and still reads everything.
    let stream = connect_eventually(&l_sink, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    let t = data::both_ways(stream, (UP_SEED, DOWN_SEED), LEN, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    eprintln!("64 MiB each way over the TCP fallback in {:?}", t.took);
    let up_hash = t.up;
    assert_eq!(t.received, (LEN, t.down), "downstream differs\n{}", diag());
    let report = sink.next_report(WAIT).await;
    assert_eq!(
        (report.received, report.sha256, report.error.clone()),
        (LEN, Some(up_hash), None),
        "upstream differs: {report:?}\n{}",
        diag()
    );

    // The app's reset reaches the client as a reset, not as a clean end.
    let mut client = host_a
        .netns()
        .tcp_connect(l_rst, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    client.write_all(b"reset me").await.unwrap();
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(WAIT, client.read(&mut buf)).await;
    assert!(
        matches!(&end, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the app's reset arrived as {end:?}\n{}",
        diag()
    );
    assert!(rst.accepted() >= 1, "{}", diag());

    // A long-lived stream on the TCP channel, kept open through the switch back.
    let mut old = connect_eventually(&l_echo, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    ping(&mut old, b"before")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    assert_eq!(channel_of(&api, "echo").await, vec![tcp], "{}", diag());

    // UDP passes again: QUIC comes back (its dials kept probing), new streams take it.
    nat.restore_udp();
    let restored = Instant::now();
    let quic = channel_over(
        &api,
        v1::ChannelTransport::Quic,
        Duration::from_secs(90),
        diag,
    )
    .await;
    eprintln!(
        "back on QUIC {:?} after UDP was let through",
        restored.elapsed()
    );
    let mut new = connect_eventually(&l_echo, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    ping(&mut new, b"new")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    let mut on = channel_of(&api, "echo").await;
    on.sort_unstable();
    let mut want = vec![tcp, quic];
    want.sort_unstable();
    assert_eq!(on, want, "old stream on TCP, new one on QUIC\n{}", diag());
    drop(new);

    // Once QUIC has settled the TCP channel drains: no new stream, but the old one lives on.
    let settled = Instant::now() + Duration::from_secs(25);
    let mut round = 0u32;
    while Instant::now() < settled {
        round += 1;
        ping(&mut old, format!("ping {round}").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("old stream broke during the drain: {e}\n{}", diag()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut c = connect_eventually(&l_echo, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    ping(&mut c, b"after")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    let mut on = channel_of(&api, "echo").await;
    on.sort_unstable();
    assert_eq!(on, want, "{}", diag());
    drop(c);
    assert!(
        up_channels(&api)
            .await
            .contains(&(tcp, v1::ChannelTransport::Tcp)),
        "the TCP channel closed under a stream\n{}",
        diag()
    );

    // The old stream ends: the drained TCP channel closes, QUIC alone remains, and it is
    // not redialled.
    ping(&mut old, b"last")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    drop(old);
    wait_for("the drained TCP channel to close", WAIT, diag, || async {
        (up_channels(&api).await == vec![(quic, v1::ChannelTransport::Quic)]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        up_channels(&api).await,
        vec![(quic, v1::ChannelTransport::Quic)],
        "{}",
        diag()
    );
    let dials_over_tcp = api
        .channels()
        .await
        .into_iter()
        .filter(|c| c.peer == "b" && c.transport() == v1::ChannelTransport::Tcp)
        .count();
    assert_eq!(dials_over_tcp, 0, "{}", diag());
}
