//! Resource limits with real daemons: `b` runs the embedded broker and exposes apps, `a`
//! uses them. A client over a limit (an exposed app's `maxConnections`, a remote-app
//! listener's `maxConnections`, `tunnel.maxStreamsPerPeer`) is refused at once and counted in
//! the control API, and once a client leaves a new one is admitted. A daemon out of file
//! descriptors does not spin, keeps answering the control API and forwards again afterwards;
//! it raised its soft descriptor limit to the hard one at start.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wovenet_e2e::*;
use wovenet_proto::v1::{self, StreamDirection};
use wovenet_tui::client::{Control, connect};

/// How fast a client over a limit must see its connection end.
const PROMPT: Duration = Duration::from_secs(2);

/// Sites `a` (user) and `b` (exposer, hosting the embedded broker), spawned b first; `edit_*`
/// change each config document before its daemon starts.
struct Pair {
    a: Site,
    b: Site,
}

impl Pair {
    async fn new(
        b: impl FnOnce(SiteBuilder) -> SiteBuilder,
        edit_b: impl FnOnce(&mut Value),
        a: impl FnOnce(SiteBuilder) -> SiteBuilder,
        edit_a: impl FnOnce(&mut Value),
    ) -> Self {
        let broker = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        let net = Net::new(format!("mqtt://{broker}"));
        let b = spawn_edited(b(net.site("b").embedded_broker(broker)), edit_b).await;
        let a = spawn_edited(a(net.site("a")), edit_a).await;
        Self { a, b }
    }

    fn sites(&self) -> [&Site; 2] {
        [&self.a, &self.b]
    }
}

/// Starts the site after `edit` changed its config document (for keys the builder has no
/// setter for).
async fn spawn_edited(builder: SiteBuilder, edit: impl FnOnce(&mut Value)) -> Site {
    let mut site = builder.prepare();
    let mut doc = site.config().clone();
    edit(&mut doc);
    write_yaml(site.config_path(), &doc);
    site.start().await;
    site
}

async fn control(site: &Site) -> Control {
    Control::new(
        connect(&site.control_socket())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", site.diag())),
    )
}

/// One `WatchStats` sample.
async fn stats(site: &Site) -> v1::WatchStatsResponse {
    let mut feed = control(site).await.watch_stats(None).await.unwrap();
    tokio::time::timeout(WAIT, feed.message())
        .await
        .unwrap_or_else(|_| panic!("no stats sample within {WAIT:?}\n{}", site.diag()))
        .unwrap()
        .unwrap()
}

fn counter(s: &v1::WatchStatsResponse, name: &str) -> u64 {
    s.counters.get(name).copied().unwrap_or(0)
}

/// `(limited_streams, total_streams)` of `app` with `peer` in `direction`.
fn app_stats(
    s: &v1::WatchStatsResponse,
    app: &str,
    peer: &str,
    direction: StreamDirection,
) -> (u64, u64) {
    s.apps
        .iter()
        .find(|x| x.app == app && x.peer == peer && x.direction == direction as i32)
        .map_or((0, 0), |x| (x.limited_streams, x.total_streams))
}

/// Waits until neither site lists an open stream (the probes of `wait_forward` are gone).
async fn wait_no_streams(sites: &[&Site]) {
    for site in sites {
        let mut c = control(site).await;
        let start = Instant::now();
        while !c.streams().await.unwrap().is_empty() {
            assert!(
                start.elapsed() < WAIT,
                "streams still open after {WAIT:?}\n{}",
                diag(sites)
            );
            wait::pause().await;
        }
    }
}

/// A client that is being served: connected and one echo done.
async fn served(local: &Sock, sites: &[&Site]) -> EchoConn {
    let mut c = EchoConn::connect(local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag(sites)));
    c.ping(b"held open", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag(sites)));
    c
}

/// Asserts the next client through `local` is closed or reset within [`PROMPT`], without data.
async fn assert_refused_at_once(local: &Sock, sites: &[&Site]) {
    let start = Instant::now();
    let closed = expect_closed_without_data(local, WAIT).await;
    let took = start.elapsed();
    match closed {
        Ok(Closed::Error(_) | Closed::Eof) if took < PROMPT => {}
        other => panic!(
            "expected the client to be closed or reset within {PROMPT:?}, got {other:?} after \
             {took:?}\n{}",
            diag(sites)
        ),
    }
}

/// Retries until a client through `local` is served again (slots are given back just after
/// a leaving client's stream ends on both sides).
async fn admitted_again(local: &Sock, sites: &[&Site]) -> EchoConn {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = EchoConn::connect(local, WAIT).await
            && c.ping(b"admitted", Duration::from_secs(2)).await.is_ok()
        {
            return c;
        }
        assert!(
            start.elapsed() < WAIT,
            "no client admitted within {WAIT:?} after one left\n{}",
            diag(sites)
        );
        wait::pause().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposed_app_at_max_connections_refuses_the_third_client_at_once() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let p = Pair::new(
        |b| b.expose("echo", echo.sock()),
        |doc| doc["localExposedApps"][0]["maxConnections"] = json!(2),
        |a| a.remote("b", "echo", &local),
        |_| {},
    )
    .await;
    let sites = p.sites();
    wait_forward(&local, WAIT, &sites).await;
    wait_no_streams(&sites).await;

    let first = served(&local, &sites).await;
    let mut second = served(&local, &sites).await;
    assert_refused_at_once(&local, &sites).await;

    let b = stats(&p.b).await;
    assert_eq!(counter(&b, "streams_limited"), 1, "{b:?}");
    assert_eq!(
        app_stats(&b, "echo", "a", StreamDirection::Inbound).0,
        1,
        "{b:?}"
    );
    let a = stats(&p.a).await;
    assert_eq!(counter(&a, "connections_limited"), 1, "{a:?}");
    assert_eq!(
        app_stats(&a, "echo", "b", StreamDirection::Outbound).0,
        1,
        "{a:?}"
    );
    // The clients being served were not disturbed.
    second.ping(b"still served", WAIT).await.unwrap();

    drop(first);
    let mut third = admitted_again(&local, &sites).await;
    third.ping(b"and served", WAIT).await.unwrap();
    second.ping(b"still served", WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_app_listener_at_max_connections_resets_the_third_client_at_once() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let p = Pair::new(
        |b| b.expose("echo", echo.sock()),
        |_| {},
        |a| a.remote("b", "echo", &local),
        |doc| doc["remoteApps"][0]["maxConnections"] = json!(2),
    )
    .await;
    let sites = p.sites();
    wait_forward(&local, WAIT, &sites).await;
    wait_no_streams(&sites).await;

    let first = served(&local, &sites).await;
    let _second = served(&local, &sites).await;
    let before = stats(&p.b).await;
    assert_refused_at_once(&local, &sites).await;

    let a = stats(&p.a).await;
    assert_eq!(counter(&a, "connections_limited"), 1, "{a:?}");
    assert_eq!(
        app_stats(&a, "echo", "b", StreamDirection::Outbound).0,
        1,
        "{a:?}"
    );
    // The refused client never became a stream: b saw nothing of it.
    let b = stats(&p.b).await;
    assert_eq!(counter(&b, "streams_limited"), 0, "{b:?}");
    assert_eq!(
        app_stats(&b, "echo", "a", StreamDirection::Inbound).1,
        app_stats(&before, "echo", "a", StreamDirection::Inbound).1,
        "{b:?}"
    );

    drop(first);
    admitted_again(&local, &sites).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_at_max_streams_is_refused_over_all_its_channels_and_apps() {
    let echo = EchoServer::tcp().await;
    let (one, two) = (Sock::free_tcp(), Sock::free_tcp());
    let p = Pair::new(
        |b| b.expose("one", echo.sock()).expose("two", echo.sock()),
        |doc| doc["tunnel"]["maxStreamsPerPeer"] = json!(2),
        |a| a.remote("b", "one", &one).remote("b", "two", &two),
        |_| {},
    )
    .await;
    let sites = p.sites();
    wait_forward(&one, WAIT, &sites).await;
    wait_forward(&two, WAIT, &sites).await;
    // Both dataChannels (a dials b, b dials a) are up, so the two held streams take one each.
    let mut ctl_a = control(&p.a).await;
    let start = Instant::now();
    loop {
        let up = ctl_a
            .channels()
            .await
            .unwrap()
            .iter()
            .filter(|c| c.peer == "b" && c.state == v1::ChannelState::Up as i32)
            .count();
        if up >= 2 {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "a has {up} channel(s) up to b\n{}",
            diag(&sites)
        );
        wait::pause().await;
    }
    wait_no_streams(&sites).await;

    let _x = served(&one, &sites).await;
    let y = served(&two, &sites).await;
    let loaded: Vec<u32> = ctl_a
        .channels()
        .await
        .unwrap()
        .iter()
        .filter(|c| c.peer == "b" && c.open_streams > 0)
        .map(|c| c.open_streams)
        .collect();
    assert_eq!(
        loaded,
        [1, 1],
        "one stream on each channel\n{}",
        diag(&sites)
    );

    // The limit counts both channels and both apps.
    assert_refused_at_once(&one, &sites).await;
    assert_refused_at_once(&two, &sites).await;
    let b = stats(&p.b).await;
    assert_eq!(counter(&b, "streams_limited"), 2, "{b:?}");
    assert_eq!(app_stats(&b, "one", "a", StreamDirection::Inbound).0, 1);
    assert_eq!(app_stats(&b, "two", "a", StreamDirection::Inbound).0, 1);

    drop(y);
    admitted_again(&one, &sites).await;
}

/// Limits given live, through the API and `wovenetctl`, are validated with the config file's
/// messages, listed, kept across a restart (state file) and enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_added_live_are_validated_listed_persisted_and_enforced() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let mut p = Pair::new(|b| b, |_| {}, |a| a, |_| {}).await;

    let e = control(&p.b)
        .await
        .add_exposed_app(v1::ExposedAppSpec {
            name: "echo".into(),
            app_socket: echo.sock().to_string(),
            max_connections: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "maxConnections: '0' is out of range 1..=1000000"
    );
    let socket = echo.sock().to_string();
    Ctl::site(&p.b)
        .ok(&[
            "expose",
            "add",
            "--name",
            "echo",
            "--socket",
            &socket,
            "--max-connections",
            "1",
        ])
        .await;

    let local_text = local.to_string();
    let remote_add = |n: &'static str| {
        let local_text = local_text.clone();
        let ctl = Ctl::site(&p.a);
        async move {
            ctl.run(&[
                "remote",
                "add",
                "--site",
                "b",
                "--app",
                "echo",
                "--local",
                &local_text,
                "--max-connections",
                n,
            ])
            .await
        }
    };
    let refused = remote_add("1000001").await;
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(
        refused
            .stderr
            .contains("maxConnections: '1000001' is out of range 1..=1000000"),
        "{refused}"
    );
    let added = remote_add("5").await;
    assert_eq!(added.code, Some(0), "{added}");

    let listed_b = Ctl::site(&p.b).json(&["apps"]).await;
    assert_eq!(
        listed_b["exposed"][0]["spec"]["max_connections"], 1,
        "{listed_b:#}"
    );
    let listed_a = Ctl::site(&p.a).json(&["apps"]).await;
    assert_eq!(
        listed_a["remote"][0]["spec"]["max_connections"], 5,
        "{listed_a:#}"
    );

    let sites = p.sites();
    wait_forward(&local, WAIT, &sites).await;
    wait_no_streams(&sites).await;
    let held = served(&local, &sites).await;
    assert_refused_at_once(&local, &sites).await;
    assert_eq!(counter(&stats(&p.b).await, "streams_limited"), 1);
    drop(held);

    p.b.restart().await;
    let listed_b = Ctl::site(&p.b).json(&["apps"]).await;
    assert_eq!(
        listed_b["exposed"][0]["spec"]["max_connections"], 1,
        "{listed_b:#}"
    );
    assert_eq!(listed_b["exposed"][0]["live"], true, "{listed_b:#}");
}

/// Clock ticks per second for `/proc/PID/stat`.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

/// User plus system CPU time of `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) may contain spaces; count fields after its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// `(soft, hard)` "Max open files" of `pid`.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A wrapper that starts `wovenetd` with a soft descriptor limit of `soft` and a hard one of
/// `hard` (the harness runs it in place of the daemon; `exec` keeps the pid).
fn limited_wovenetd(dir: &Path, soft: u64, hard: u64) -> PathBuf {
    let path = dir.join("wovenetd-limited");
    let script = format!(
        "#!/bin/sh\nulimit -S -n {soft} && ulimit -H -n {hard} && exec '{}' \"$@\"\n",
        wovenetd().display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Out of descriptors: clients beyond the limit wait in the listen backlogs (one of them on
/// the control socket), and the accept loops must pause rather than spin (tonic's own loop
/// retries at once). Meanwhile an already open control connection still answers, and once
/// the clients leave, forwarding and new control connections work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_daemon_pauses_accepts_stays_responsive_and_recovers() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let bin_dir = tempfile::tempdir().unwrap();
    let (soft, hard) = (40, 64);
    let wrapper = limited_wovenetd(bin_dir.path(), soft, hard);
    let p = Pair::new(
        |b| b.expose("echo", echo.sock()),
        |_| {},
        |a| a.remote("b", "echo", &local).binary(&wrapper),
        |_| {},
    )
    .await;
    let sites = p.sites();
    let pid = p.a.pid().unwrap();
    // The soft limit was raised to the hard one at start.
    assert_eq!(nofile(pid), (hard, hard), "{}", p.a.diag());
    wait_forward(&local, WAIT, &sites).await;
    let mut ctl = control(&p.a).await;
    let baseline = open_fds(pid);
    assert!(
        baseline + 8 < hard as usize,
        "the daemon already uses {baseline} of {hard} descriptors"
    );

    // More clients than descriptors left; the rest wait in the backlog.
    let mut clients = Vec::new();
    for _ in 0..(hard as usize) {
        clients.push(local.connect().await.unwrap());
    }
    // A control client stuck in the control socket's backlog.
    let pending_ctl = tokio::net::UnixStream::connect(p.a.control_socket())
        .await
        .unwrap();
    let exhausted = eventually(WAIT, || async { open_fds(pid) >= hard as usize - 1 }).await;
    assert!(
        exhausted,
        "only {} descriptors open, expected about {hard}\n{}",
        open_fds(pid),
        p.a.diag()
    );

    // No spinning: the CPU time the daemon uses over a few seconds stays low.
    let window = Duration::from_secs(3);
    let cpu_before = cpu_time(pid);
    tokio::time::sleep(window).await;
    let used = cpu_time(pid).saturating_sub(cpu_before);
    eprintln!(
        "out of descriptors: {baseline} open at rest, {} now (limit {hard}); CPU {used:?} in {window:?}",
        open_fds(pid)
    );
    assert!(
        used < window / 10,
        "the daemon used {used:?} of CPU in {window:?} while out of descriptors\n{}",
        p.a.diag()
    );
    // The control connection opened before still answers.
    let site = tokio::time::timeout(PROMPT, ctl.site())
        .await
        .unwrap_or_else(|_| panic!("GetSite hung\n{}", p.a.diag()))
        .unwrap();
    assert_eq!(site.name, "a");
    let mut feed = ctl.watch_stats(None).await.unwrap();
    let sample = tokio::time::timeout(PROMPT, feed.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(counter(&sample, "accept_errors") > 0, "{sample:?}");
    drop(feed);

    drop(clients);
    drop(pending_ctl);
    wait_forward(&local, WAIT, &sites).await;
    let fresh = control(&p.a).await.site().await.unwrap();
    assert_eq!(fresh.name, "a");
}
