//! Per-app access (`localExposedApps[].allowedSites`) with real wovenetd processes and a real
//! broker: an app listed for some sites is offered to those sites alone (others never open a
//! listener for it, nor see it in the peer's app list), follows live changes made with
//! `wovenetctl`, and every stream from a site it does not list is refused with `not allowed`
//! (the client is closed without a byte) and counted per app and peer in the API and in
//! `/metrics`. Single and range apps alike.
//!
//! A well-behaved site never opens a stream to an app it was not offered, so the refusal
//! tests run that site with the daemon's debug-build test hook `WOVENET_TEST_SERVE_UNOFFERED`
//! (its listeners open for every app of a connected peer, offered or not): the exposing site
//! under test is an unmodified daemon.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wovenet_e2e::*;
use wovenet_proto::v1;

/// The debug-build hook of `wovenetd` (see `wovenet_daemon::site::SERVE_UNOFFERED_ENV`).
const SERVE_UNOFFERED: &str = "WOVENET_TEST_SERVE_UNOFFERED";

/// How long a listener that must not open is watched.
const STAYS_SHUT: Duration = Duration::from_secs(3);

fn banner(app: &str) -> Vec<u8> {
    format!("app {app} of site a\n").into_bytes()
}

/// A `localExposedApps[]` entry with one socket, restricted to `allowed` (none: everyone).
fn single(app: &str, socket: &Sock, allowed: &[&str]) -> Value {
    let mut v = json!({ "appName": app, "appSocket": socket.to_string() });
    if !allowed.is_empty() {
        v["allowedSites"] = json!(allowed);
    }
    v
}

/// A range `localExposedApps[]` entry admitting `127.0.0.1:port`, restricted to `allowed`.
fn range(app: &str, port: u16, allowed: &[&str]) -> Value {
    json!({
        "appName": app, "mode": "range", "portRange": [port.to_string()],
        "addressRange": ["127.0.0.1"], "allowedSites": allowed,
    })
}

/// `wovenetctl expose add` arguments for app `name` on `socket`, restricted to `allowed`
/// (comma-separated site names).
fn expose_add<'a>(name: &'a str, socket: &'a str, allowed: &'a str) -> [&'a str; 8] {
    [
        "expose",
        "add",
        "--name",
        name,
        "--socket",
        socket,
        "--allowed-sites",
        allowed,
    ]
}

/// Sites b (using a/x) and c (using a/x and a/pub), and their local sockets for
/// (b: a/x, c: a/x, c: a/pub).
async fn spawn_b_and_c(net: &Net) -> (Site, Site, (Sock, Sock, Sock)) {
    let (bx, cx, cpub) = (Sock::free_tcp(), Sock::free_tcp(), Sock::free_tcp());
    let b = net.site("b").remote("a", "x", &bx).spawn().await;
    let c = net
        .site("c")
        .remote("a", "x", &cx)
        .remote("a", "pub", &cpub)
        .spawn()
        .await;
    (b, c, (bx, cx, cpub))
}

/// The apps `api`'s site lists for peer `peer` (announced and offered).
async fn apps_of(api: &Api, peer: &str) -> Option<Vec<String>> {
    api.peer(peer).await.map(|p| p.apps)
}

/// A site's per-app stats row for (`app`, `peer`, inbound).
fn inbound<'a>(
    stats: &'a v1::WatchStatsResponse,
    app: &str,
    peer: &str,
) -> Option<&'a v1::AppStats> {
    stats.apps.iter().find(|a| {
        a.app == app && a.peer == peer && a.direction == v1::StreamDirection::Inbound as i32
    })
}

/// `GET /metrics` on `port`, the body.
async fn metrics(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the metrics sample written exactly as `series` (`name{labels}`), if any.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts that `sock` is not listening now and stays so for [`STAYS_SHUT`], and that the
/// API reports its listener as waiting.
async fn stays_waiting(api: &Api, sock: &Sock, app: &str, diag: impl Fn() -> String) {
    assert_eq!(
        api.listener_state("a", app).await,
        Some(v1::ListenerState::Waiting),
        "the listener for a/{app} must wait\n{}",
        diag()
    );
    never(
        format!("a listener for a/{app} on {sock} opened"),
        STAYS_SHUT,
        &diag,
        || async { is_listening(sock).await },
    )
    .await;
    assert_eq!(
        api.listener_state("a", app).await,
        Some(v1::ListenerState::Waiting)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_offered_only_to_its_allowed_sites_and_follows_live_changes() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let x = EchoServer::tcp_with_banner(banner("x")).await;
    let public = EchoServer::tcp_with_banner(banner("pub")).await;
    let a = net
        .site("a")
        .extra(
            "localExposedApps",
            json!([
                single("x", x.sock(), &["b"]),
                single("pub", public.sock(), &[])
            ]),
        )
        .spawn()
        .await;
    let (b, c, (bx, cx, cpub)) = spawn_b_and_c(&net).await;
    let diag = || diag(&[&a, &b, &c]);
    let (api_b, api_c) = (b.api().await, c.api().await);

    // B reaches x, byte-exact both ways.
    try_wait_forward_with_banner(&bx, &banner("x"), WAIT)
        .await
        .unwrap_or_else(|e| panic!("b -> a/x: {e}\n{}", diag()));
    let payload = data::bytes(11, 2 * 1024 * 1024);
    echo_once_with_banner(&bx, &banner("x"), &payload, WAIT)
        .await
        .unwrap_or_else(|e| panic!("b -> a/x, 2 MiB: {e}\n{}", diag()));
    // C is connected to A and uses its public app...
    try_wait_forward_with_banner(&cpub, &banner("pub"), WAIT)
        .await
        .unwrap_or_else(|e| panic!("c -> a/pub: {e}\n{}", diag()));
    // ...but x was never offered to it: no listener, and not in A's app list as C sees it.
    stays_waiting(&api_c, &cx, "x", diag).await;
    assert_eq!(apps_of(&api_c, "a").await, Some(vec!["pub".to_owned()]));
    assert_eq!(
        apps_of(&api_b, "a").await,
        Some(vec!["pub".to_owned(), "x".to_owned()]),
        "b sees the announced app and the one offered to it"
    );

    // Live change on A: x for B and C.
    let ctl = Ctl::site(&a);
    ctl.ok(&["expose", "rm", "x"]).await;
    wait_for(
        "b's listener for a/x closes once x is gone",
        WAIT,
        diag,
        || async { (!is_listening(&bx).await).then_some(()) },
    )
    .await;
    let socket = x.sock().to_string();
    let added = ctl.json(&expose_add("x", &socket, "b,c")).await;
    assert_eq!(added["app"]["spec"]["allowed_sites"], json!(["b", "c"]));
    for (who, sock) in [("c", &cx), ("b", &bx)] {
        try_wait_forward_with_banner(sock, &banner("x"), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{who} -> a/x after allowing b,c: {e}\n{}", diag()));
    }
    echo_once_with_banner(&cx, &banner("x"), &payload, WAIT)
        .await
        .unwrap_or_else(|e| panic!("c -> a/x, 2 MiB: {e}\n{}", diag()));
    assert_eq!(
        apps_of(&api_c, "a").await,
        Some(vec!["pub".to_owned(), "x".to_owned()])
    );

    // And back to B only: C's listener closes, B's keeps working.
    ctl.ok(&["expose", "rm", "x"]).await;
    ctl.ok(&expose_add("x", &socket, "b")).await;
    // Waited for through the API: a probe connection while the listener is still open
    // would be a stream A refuses (counted below).
    wait_for(
        "c's listener for a/x closes once c lost access",
        WAIT,
        diag,
        || async {
            (api_c.listener_state("a", "x").await == Some(v1::ListenerState::Waiting)).then_some(())
        },
    )
    .await;
    assert!(!is_listening(&cx).await, "c's listener is closed");
    try_wait_forward_with_banner(&bx, &banner("x"), WAIT)
        .await
        .unwrap_or_else(|e| panic!("b -> a/x after the change back: {e}\n{}", diag()));
    stays_waiting(&api_c, &cx, "x", diag).await;
    assert_eq!(apps_of(&api_c, "a").await, Some(vec!["pub".to_owned()]));
    // No stream was ever refused: the listeners followed the offers.
    assert_eq!(a.api().await.counter("streams_not_allowed").await, 0);

    // The live API judges allowedSites like the config file.
    for (sites, reason) in [
        ("b,a", "allowedSites[1]: 'a' is this site's own name"),
        ("b,c,b", "allowedSites[2]: duplicate site 'b'"),
    ] {
        let refused = ctl.run(&expose_add("y", &socket, sites)).await;
        assert_eq!(refused.code, Some(1), "{refused}");
        assert!(refused.stderr.contains(reason), "{refused}");
    }
    assert!(
        !a.api()
            .await
            .apps()
            .await
            .exposed
            .iter()
            .any(|e| e.spec.as_ref().is_some_and(|s| s.name == "y")),
        "a refused app is not added"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_added_restricted_app_survives_a_restart_and_is_offered_to_the_new_instance() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let x = EchoServer::tcp_with_banner(banner("x")).await;
    let public = EchoServer::tcp_with_banner(banner("pub")).await;
    let mut a = net
        .site("a")
        .extra(
            "localExposedApps",
            json!([single("pub", public.sock(), &[])]),
        )
        .spawn()
        .await;
    let (b, c, (bx, cx, cpub)) = spawn_b_and_c(&net).await;
    let socket = x.sock().to_string();
    Ctl::site(&a).ok(&expose_add("x", &socket, "b")).await;
    try_wait_forward_with_banner(&bx, &banner("x"), WAIT)
        .await
        .unwrap_or_else(|e| panic!("b -> a/x: {e}\n{}", diag(&[&a, &b, &c])));

    // A restarts: a new instance, which B learns and is offered x by again.
    a.restart().await;
    let diag = || diag(&[&a, &b, &c]);
    let apps = a.api().await.apps().await;
    let spec = apps
        .exposed
        .iter()
        .find_map(|e| {
            e.spec
                .as_ref()
                .filter(|s| s.name == "x")
                .map(|s| (s, e.live))
        })
        .unwrap_or_else(|| panic!("x not kept over the restart: {apps:#?}"));
    assert_eq!(
        (spec.0.allowed_sites.clone(), spec.1),
        (vec!["b".to_owned()], true)
    );
    let api_b = b.api().await;
    let new = a.api().await.site().await.instance;
    wait_for("b knows a's new instance", WAIT, diag, || async {
        (api_b.peer("a").await.map(|p| p.instance) == Some(new.clone())).then_some(())
    })
    .await;
    try_wait_forward_with_banner(&bx, &banner("x"), WAIT)
        .await
        .unwrap_or_else(|e| panic!("b -> a/x after a restarted: {e}\n{}", diag()));
    try_wait_forward_with_banner(&cpub, &banner("pub"), WAIT)
        .await
        .unwrap_or_else(|e| panic!("c -> a/pub after a restarted: {e}\n{}", diag()));
    stays_waiting(&c.api().await, &cx, "x", diag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_app_is_offered_only_to_its_allowed_sites() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let target = EchoServer::tcp_with_banner(banner("lan")).await;
    let port = target.port();
    let a = net
        .site("a")
        .extra("localExposedApps", json!([range("lan", port, &["b"])]))
        .spawn()
        .await;
    let app_socket = format!("tcp:127.0.0.1:{port}");
    let (bl, cl) = (Sock::free_tcp(), Sock::free_tcp());
    let b = net
        .site("b")
        .remote_range("a", "lan", &app_socket, &bl)
        .spawn()
        .await;
    let c = net
        .site("c")
        .remote_range("a", "lan", &app_socket, &cl)
        .spawn()
        .await;
    let diag = || diag(&[&a, &b, &c]);
    try_wait_forward_with_banner(&bl, &banner("lan"), WAIT)
        .await
        .unwrap_or_else(|e| panic!("b -> a/lan: {e}\n{}", diag()));
    let api_c = c.api().await;
    wait_for("c connected to a", WAIT, diag, || async {
        (!api_c.up_channels("a").await.is_empty()).then_some(())
    })
    .await;
    stays_waiting(&api_c, &cl, "lan", diag).await;
    assert_eq!(apps_of(&api_c, "a").await, Some(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_from_a_site_not_allowed_are_refused_closed_without_data_and_counted() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let x = EchoServer::tcp_with_banner(banner("x")).await;
    let lan = EchoServer::tcp_with_banner(banner("lan")).await;
    let metrics_port = free_tcp_port();
    let a = net
        .site("a")
        .extra(
            "localExposedApps",
            json!([
                single("x", x.sock(), &["b"]),
                range("lan", lan.port(), &["b"])
            ]),
        )
        .extra(
            "metrics",
            json!({ "listen": format!("127.0.0.1:{metrics_port}") }),
        )
        .spawn()
        .await;
    let lan_socket = format!("tcp:127.0.0.1:{}", lan.port());
    let (bx, blan, cx, clan) = (
        Sock::free_tcp(),
        Sock::free_tcp(),
        Sock::free_tcp(),
        Sock::free_tcp(),
    );
    let b = net
        .site("b")
        .remote("a", "x", &bx)
        .remote_range("a", "lan", &lan_socket, &blan)
        .spawn()
        .await;
    // C serves a's apps although they are not offered to it (test hook).
    let c = net
        .site("c")
        .env(SERVE_UNOFFERED, "1")
        .remote("a", "x", &cx)
        .remote_range("a", "lan", &lan_socket, &clan)
        .spawn()
        .await;
    let diag = || diag(&[&a, &b, &c]);
    for (what, sock, banner) in [("x", &bx, banner("x")), ("lan", &blan, banner("lan"))] {
        try_wait_forward_with_banner(sock, &banner, WAIT)
            .await
            .unwrap_or_else(|e| panic!("b -> a/{what}: {e}\n{}", diag()));
    }
    let (x_before, lan_before) = (x.accepted(), lan.accepted());
    // Waited for through the API: a probe connection would itself be a refused stream.
    let api_c = c.api().await;
    for app in ["x", "lan"] {
        wait_for(
            format!("c's hooked listener for a/{app}"),
            WAIT,
            diag,
            || async {
                (api_c.listener_state("a", app).await == Some(v1::ListenerState::Open))
                    .then_some(())
            },
        )
        .await;
    }

    // Every connection from C is closed at once without a byte, the app never dialled.
    let tries = [(&cx, 3u64), (&clan, 2u64)];
    for (sock, n) in tries {
        for _ in 0..n {
            match expect_closed_without_data(sock, Duration::from_secs(5)).await {
                Ok(Closed::Refused) => panic!("{sock}: no listener\n{}", diag()),
                Ok(_) => {}
                Err(e) => panic!("{e}\n{}", diag()),
            }
        }
    }
    assert_eq!(x.accepted(), x_before, "x was dialled for a refused stream");
    assert_eq!(
        lan.accepted(),
        lan_before,
        "lan was dialled for a refused stream"
    );

    // Counted exactly once per refused connection: site-wide and per app and peer...
    let api_a = a.api().await;
    wait_for("a counted 5 streams not allowed", WAIT, diag, || async {
        (api_a.counter("streams_not_allowed").await == 5).then_some(())
    })
    .await;
    let stats = api_a.stats().await;
    let not_allowed =
        |app: &str, peer: &str| inbound(&stats, app, peer).map(|s| s.not_allowed_streams);
    assert_eq!(not_allowed("x", "c"), Some(3), "{:#?}", stats.apps);
    assert_eq!(not_allowed("lan", "c"), Some(2), "{:#?}", stats.apps);
    assert_eq!(not_allowed("x", "b"), Some(0), "{:#?}", stats.apps);
    assert_eq!(
        inbound(&stats, "x", "c").map(|s| s.total_streams),
        Some(0),
        "refused streams are not carried"
    );
    // ...and in /metrics.
    let text = metrics(metrics_port).await;
    for (series, want) in [
        (
            r#"wovenet_app_not_allowed_streams_total{app="x",peer="c",direction="inbound"}"#,
            3,
        ),
        (
            r#"wovenet_app_not_allowed_streams_total{app="lan",peer="c",direction="inbound"}"#,
            2,
        ),
        (
            r#"wovenet_app_not_allowed_streams_total{app="x",peer="b",direction="inbound"}"#,
            0,
        ),
        ("wovenet_streams_not_allowed_total", 5),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }

    // B, which is allowed, still works, and nothing more was refused.
    echo_once_with_banner(&bx, &banner("x"), b"still allowed", WAIT)
        .await
        .unwrap_or_else(|e| panic!("b -> a/x: {e}\n{}", diag()));
    assert_eq!(api_a.counter("streams_not_allowed").await, 5);
    // `wovenetctl stats` shows the count per app.
    let v = Ctl::site(&a).json(&["stats"]).await;
    let rows = v["apps"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["app"] == "x" && r["peer"] == "c")
        .unwrap_or_else(|| panic!("no x/c row in {v:#}"));
    assert_eq!(row["not_allowed_streams"], 3, "{v:#}");
}
