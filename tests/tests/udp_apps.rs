//! UDP apps with real wovenetd processes and a real broker: `appSocket: udp:IP:PORT` exposed on
//! site a, `localSocket: udp:IP:PORT` on site b. Every client address is one flow: a
//! DNS-style request/response echo, a burst of 10 000 datagrams with no loss (or a counter
//! explaining every lost one), many clients at once each getting only its own replies, idle
//! flows ending on both sides after `udpIdleTimeout`, a UDP range app admitting targets inside
//! its ranges and refusing others (and a TCP range app refusing UDP flows), and datagrams too
//! large for a QUIC DATAGRAM frame carried whole on the flow's stream.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::UdpSocket;
use wovenet_e2e::*;
use wovenet_proto::v1;

/// A single UDP exposed app entry.
fn udp_app(name: &str, socket: &str, idle: Option<u64>) -> Value {
    let mut v = json!({ "appName": name, "appSocket": socket });
    if let Some(idle) = idle {
        v["udpIdleTimeout"] = json!(idle);
    }
    v
}

/// A UDP remote app entry on a fresh 127.0.0.1 port; returns it and the address.
fn udp_remote(site: &str, app: &str, idle: Option<u64>) -> (Value, SocketAddr) {
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
    let mut v = json!({ "siteName": site, "appName": app, "localSocket": format!("udp:{local}") });
    if let Some(idle) = idle {
        v["udpIdleTimeout"] = json!(idle);
    }
    (v, local)
}

/// The counters a lost datagram could hide behind, summed over `sites`.
async fn udp_drops(apis: &[&Api]) -> u64 {
    let mut total = 0;
    for api in apis {
        for name in [
            "udp_unknown_flow",
            "udp_queue_overflow",
            "udp_send_failed",
            "udp_flows_limited",
        ] {
            total += api.counter(name).await;
        }
    }
    total
}

/// Site a exposes `apps`, site b uses `remotes`.
async fn pair(apps: Value, remotes: Value) -> (Broker, Site, Site) {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let a = net.site("a").extra("localExposedApps", apps).spawn().await;
    let b = net.site("b").extra("remoteApps", remotes).spawn().await;
    (broker, a, b)
}

/// A [`UdpEcho`] exposed by site a as `app` and used by site b at `local`, with client `c`
/// of it whose first datagram was answered (the flow path works).
struct EchoPair {
    echo: UdpEcho,
    _broker: Broker,
    a: Site,
    b: Site,
    local: SocketAddr,
    c: UdpSocket,
}

impl EchoPair {
    /// `exposed_idle` / `remote_idle`: each side's `udpIdleTimeout` (none: the default).
    async fn new(app: &str, exposed_idle: Option<u64>, remote_idle: Option<u64>) -> Self {
        let echo = UdpEcho::start().await;
        let (remote, local) = udp_remote("a", app, remote_idle);
        let (broker, a, b) = pair(
            json!([udp_app(app, &echo.socket(), exposed_idle)]),
            json!([remote]),
        )
        .await;
        let c = udp_client(local).await;
        wait_udp_forward(&c, &[&a, &b]).await;
        Self {
            echo,
            _broker: broker,
            a,
            b,
            local,
            c,
        }
    }

    /// Both sites' log tails.
    fn diag(&self) -> String {
        diag(&[&self.a, &self.b])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_style_requests_are_answered_through_the_tunnel_and_listed_as_flows() {
    let p = EchoPair::new("dns", None, None).await;

    // Queries of many sizes, each answered exactly, in order.
    let mut through = Vec::new();
    for i in 0..200u32 {
        let query: Vec<u8> = (0..(i * 7 % 1000)).map(|j| (i + j) as u8).collect();
        let mut q = i.to_be_bytes().to_vec();
        q.extend_from_slice(&query);
        let start = Instant::now();
        assert!(
            ask(&p.c, &q, Duration::from_secs(5)).await.is_some(),
            "query {i} unanswered\n{}",
            p.diag()
        );
        through.push(start.elapsed());
    }
    // The same queries straight to the app, for the figure printed below.
    let direct_client = udp_client(p.echo.addr()).await;
    let mut direct = Vec::new();
    for i in 0..200u32 {
        let start = Instant::now();
        assert!(
            ask(&direct_client, &i.to_be_bytes(), Duration::from_secs(5))
                .await
                .is_some()
        );
        direct.push(start.elapsed());
    }
    through.sort();
    direct.sort();
    println!(
        "udp round trip (debug build, loopback): through the tunnel p50 {:?} p99 {:?}; direct p50 {:?} p99 {:?}",
        through[100], through[197], direct[100], direct[197]
    );

    // One flow on each side, kind udp, with datagrams and bytes both ways: every query
    // and every answer (the probes that found the tunnel up are counted too).
    let (api_a, api_b) = (p.a.api().await, p.b.api().await);
    let out = api_b.streams().await;
    assert_eq!(out.len(), 1, "{out:?}");
    let f = &out[0];
    assert_eq!((f.app.as_str(), f.kind.as_str()), ("dns", "udp"));
    assert_eq!(f.client_addr, p.c.local_addr().unwrap().to_string());
    assert!(
        f.datagrams_sent >= 200 && f.datagrams_received == f.datagrams_sent,
        "{f:?}"
    );
    assert!(
        f.bytes_sent > 0 && f.bytes_received == f.bytes_sent + 3 * f.datagrams_sent,
        "{f:?}"
    );
    let inbound = api_a.streams().await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    let g = &inbound[0];
    assert_eq!((g.app.as_str(), g.kind.as_str()), ("dns", "udp"));
    assert_eq!(
        (g.datagrams_received, g.datagrams_sent),
        (f.datagrams_sent, f.datagrams_received)
    );
    assert_eq!(
        (g.bytes_received, g.bytes_sent),
        (f.bytes_sent, f.bytes_received)
    );
    assert_eq!(udp_drops(&[&api_a, &api_b]).await, 0);

    // Per-app stats count the datagrams too, and wovenetctl shows the flow as udp.
    let stats = api_b.stats().await;
    let app = stats.apps.iter().find(|s| s.app == "dns").unwrap();
    assert_eq!(app.datagrams_sent, f.datagrams_sent);
    let listed = Ctl::site(&p.b).json(&["streams"]).await;
    assert_eq!(listed["streams"][0]["kind"], json!("udp"), "{listed}");
    assert_eq!(
        listed["streams"][0]["datagrams_sent"],
        json!(f.datagrams_sent),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_10000_datagrams_arrives_whole() {
    const N: u32 = 10_000;
    const WINDOW: u32 = 512;
    let p = EchoPair::new("echo", None, None).await;
    let before = p.echo.received();

    // At most WINDOW unanswered at once (a burst, but not more than the socket buffers hold).
    let mut seen = vec![false; N as usize];
    let (mut sent, mut got) = (0u32, 0u32);
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    let mut last_progress = Instant::now();
    while got < N && last_progress.elapsed() < Duration::from_secs(5) {
        while sent < N && sent - got < WINDOW {
            let mut d = sent.to_be_bytes().to_vec();
            d.resize(512, 0xab);
            p.c.send(&d).await.unwrap();
            sent += 1;
        }
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), p.c.recv(&mut buf)).await
            && n == REPLY.len() + 512
            && buf.starts_with(REPLY)
        {
            let i = u32::from_be_bytes(buf[3..7].try_into().unwrap());
            if i < N && !std::mem::replace(&mut seen[i as usize], true) {
                got += 1;
                last_progress = Instant::now();
            }
        }
    }
    let elapsed = start.elapsed();
    let (api_a, api_b) = (p.a.api().await, p.b.api().await);
    let drops = udp_drops(&[&api_a, &api_b]).await;
    let lost = u64::from(N - got);
    println!(
        "udp burst: {got}/{N} datagrams of 512 B answered in {elapsed:?} ({:.0} round trips/s); app saw {}; daemon drop counters {drops}",
        f64::from(got) / elapsed.as_secs_f64(),
        p.echo.received() - before,
    );
    assert!(
        lost == 0 || lost <= drops,
        "{lost} datagrams lost, counters explain {drops}\n{}",
        p.diag()
    );
    assert_eq!(lost, 0, "loopback must lose nothing\n{}", p.diag());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_each_get_only_their_own_answers() {
    const CLIENTS: usize = 64;
    const QUERIES: usize = 20;
    let p = EchoPair::new("echo", None, None).await;
    let local = p.local;

    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let c = udp_client(local).await;
            for q in 0..QUERIES {
                let payload = format!("client {k} query {q}");
                if ask(&c, payload.as_bytes(), Duration::from_secs(10))
                    .await
                    .is_none()
                {
                    return Err(format!("client {k} query {q} unanswered"));
                }
            }
            // Nothing else for this client: no answer meant for another one.
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(100), c.recv(&mut buf)).await {
                Ok(Ok(n)) => Err(format!("client {k} got a stray {:?}", &buf[..n])),
                _ => Ok(()),
            }
        }));
    }
    for t in tasks {
        t.await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    }
    // The probe's client plus one flow per client, on both sides.
    let (api_a, api_b) = (p.a.api().await, p.b.api().await);
    assert_eq!(api_b.streams().await.len(), CLIENTS + 1);
    assert_eq!(api_a.streams().await.len(), CLIENTS + 1);
    assert_eq!(udp_drops(&[&api_a, &api_b]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flows_end_on_both_sides_and_a_new_datagram_opens_a_new_one() {
    // The remote side times out after 2 s, the exposed side after 1 s: both must end.
    let p = EchoPair::new("echo", Some(1), Some(2)).await;
    let (api_a, api_b) = (p.a.api().await, p.b.api().await);
    assert_eq!(api_b.streams().await.len(), 1);
    let first = api_b.streams().await[0].id;

    let start = Instant::now();
    wait_for(
        "the idle flow ends on both sides",
        WAIT,
        || p.diag(),
        || async {
            (api_a.streams().await.is_empty() && api_b.streams().await.is_empty()).then_some(())
        },
    )
    .await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "ended after {took:?}, before the idle timeout"
    );

    // The same client is served again, by a new flow.
    assert!(
        ask(&p.c, b"again", Duration::from_secs(10)).await.is_some(),
        "{}",
        p.diag()
    );
    let now = api_b.streams().await;
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_range_app_admits_targets_inside_and_refuses_the_rest() {
    let echo = UdpEcho::start().await;
    let outside = UdpEcho::start().await;
    let port = echo.addr().port().to_string();
    let apps = json!([
        { "appName": "lan", "mode": "range", "protocol": "udp",
          "portRange": [port], "addressRange": ["127.0.0.1"] },
        { "appName": "tcplan", "mode": "range",
          "portRange": [port], "addressRange": ["127.0.0.1"] },
    ]);
    let (mut inside, local_in) = udp_remote("a", "lan", None);
    inside["appSocket"] = json!(echo.socket());
    let (mut out, local_out) = udp_remote("a", "lan", None);
    out["appSocket"] = json!(outside.socket());
    let (mut wrong, local_wrong) = udp_remote("a", "tcplan", None);
    wrong["appSocket"] = json!(echo.socket());
    let (_broker, a, b) = pair(apps, json!([inside, out, wrong])).await;

    let c = udp_client(local_in).await;
    wait_udp_forward(&c, &[&a, &b]).await;
    assert!(ask(&c, b"inside", Duration::from_secs(5)).await.is_some());

    let api_a = a.api().await;
    let refused_before = api_a.counter("streams_refused").await;
    for (what, local) in [
        ("outside the port range", local_out),
        ("to a tcp range app", local_wrong),
    ] {
        let c = udp_client(local).await;
        assert!(
            ask(&c, b"let me in", Duration::from_secs(2))
                .await
                .is_none(),
            "a flow {what} was answered\n{}",
            diag(&[&a, &b])
        );
    }
    assert_eventually_async!(
        api_a.counter("streams_refused").await >= refused_before + 2,
        WAIT,
        "both flows refused by a\n{}",
        diag(&[&a, &b])
    );
    assert_eq!(outside.received(), 0);
    // Only the admitted flow is open.
    assert_eq!(api_a.streams().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_too_large_for_a_frame_arrive_whole() {
    let p = EchoPair::new("echo", None, None).await;
    // The reply is 3 bytes longer than the request: keep it under the UDP maximum.
    for size in [1_100, 1_200, 1_400, 1_500, 4_000, 9_000, 20_000, 65_000] {
        let payload = data::bytes(u64::try_from(size).unwrap(), size);
        assert!(
            ask(&p.c, &payload, Duration::from_secs(5)).await.is_some(),
            "a {size}-byte datagram was not answered whole\n{}",
            p.diag()
        );
    }
    let (api_a, api_b) = (p.a.api().await, p.b.api().await);
    assert_eq!(udp_drops(&[&api_a, &api_b]).await, 0);
}

/// `allowedSites` holds for UDP flows exactly as for TCP streams: a flow from a site the app
/// does not list is refused before the app socket is used, and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_app_admits_only_its_allowed_sites() {
    let echo = UdpEcho::start().await;
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let mut app = udp_app("dns", &echo.socket(), None);
    app["allowedSites"] = json!(["b"]);
    let a = net
        .site("a")
        .extra("localExposedApps", json!([app]))
        .spawn()
        .await;
    let (rb, local_b) = udp_remote("a", "dns", None);
    let (rc, local_c) = udp_remote("a", "dns", None);
    let b = net.site("b").extra("remoteApps", json!([rb])).spawn().await;
    // C serves a's app although it is not offered to it (the daemon's debug-build test hook).
    let c = net
        .site("c")
        .env("WOVENET_TEST_SERVE_UNOFFERED", "1")
        .extra("remoteApps", json!([rc]))
        .spawn()
        .await;
    let sites = [&a, &b, &c];
    let cb = udp_client(local_b).await;
    wait_udp_forward(&cb, &sites).await;
    let api_c = c.api().await;
    wait_for(
        "c's hooked listener for a/dns",
        WAIT,
        || diag(&sites),
        || async {
            (api_c.listener_state("a", "dns").await == Some(v1::ListenerState::Open)).then_some(())
        },
    )
    .await;
    let received_before = echo.received();
    let cc = udp_client(local_c).await;
    assert!(
        ask(&cc, b"from c", Duration::from_secs(3)).await.is_none(),
        "a flow from c was answered\n{}",
        diag(&sites)
    );
    let api_a = a.api().await;
    wait_for(
        "a counted c's flow as not allowed",
        WAIT,
        || diag(&sites),
        || async { (api_a.counter("streams_not_allowed").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        echo.received(),
        received_before,
        "the app received a datagram of a refused flow"
    );
    // B is unaffected.
    assert!(ask(&cb, b"from b", Duration::from_secs(5)).await.is_some());
}

/// `maxConnections` on a remote UDP app caps its flows (client addresses): a client over the
/// cap gets nothing, each of its datagrams is counted (`udp_flows_limited`), and once a flow
/// ended by idling the client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_udp_flows_and_counts_the_clients_over_it() {
    let echo = UdpEcho::start().await;
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
    let (_broker, a, b) = pair(
        json!([udp_app("echo", &echo.socket(), None)]),
        json!([{
            "siteName": "a", "appName": "echo", "localSocket": format!("udp:{local}"),
            "maxConnections": 2, "udpIdleTimeout": 2,
        }]),
    )
    .await;
    let first = udp_client(local).await;
    wait_udp_forward(&first, &[&a, &b]).await;
    let second = udp_client(local).await;
    assert!(
        ask(&second, b"second", Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        diag(&[&a, &b])
    );
    let api_b = b.api().await;
    let limited_before = api_b.counter("udp_flows_limited").await;
    let third = udp_client(local).await;
    for i in 0..3 {
        let q = format!("third {i}");
        assert_eq!(
            ask(&third, q.as_bytes(), Duration::from_millis(500)).await,
            None,
            "a third client was served over maxConnections 2\n{}",
            diag(&[&a, &b])
        );
    }
    assert_eq!(
        api_b.counter("udp_flows_limited").await - limited_before,
        3,
        "{}",
        diag(&[&a, &b])
    );
    assert_eq!(api_b.streams().await.len(), 2, "{}", diag(&[&a, &b]));
    // The first two fall silent: their flows end after 2 s, and the third is served.
    wait_for(
        "a flow slot to free up",
        WAIT,
        || diag(&[&a, &b]),
        || async {
            ask(&third, b"third again", Duration::from_millis(300))
                .await
                .map(|_| ())
        },
    )
    .await;
}

/// A UDP app on `::1` used through a `udp:[::1]:PORT` local socket: IPv6 all the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_app_works_over_ipv6_loopback() {
    let echo = UdpEcho::start_on(std::net::Ipv6Addr::LOCALHOST.into()).await;
    let port = {
        let s = std::net::UdpSocket::bind("[::1]:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let local = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let (_broker, a, b) = pair(
        json!([udp_app("echo6", &echo.socket(), None)]),
        json!([{ "siteName": "a", "appName": "echo6", "localSocket": format!("udp:{local}") }]),
    )
    .await;
    let c = udp_client(local).await;
    wait_udp_forward(&c, &[&a, &b]).await;
    for i in 0..50 {
        let q = format!("v6 query {i}");
        assert!(
            ask(&c, q.as_bytes(), Duration::from_secs(5))
                .await
                .is_some(),
            "{}",
            diag(&[&a, &b])
        );
    }
    let flows = b.api().await.streams().await;
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0].kind, "udp");
    assert_eq!(
        flows[0].client_addr,
        c.local_addr().unwrap().to_string(),
        "the flow's client is the IPv6 client address"
    );
}
