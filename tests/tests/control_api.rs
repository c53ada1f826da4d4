//! The gRPC control API against real daemons: `b` runs the embedded broker and exposes apps,
//! `a` uses them; every call goes through the shared client (`wovenet_tui::client`) over each
//! site's unix control socket. Covers the list calls under real traffic, the watch feeds, live
//! app changes (and their survival across a restart), config-style validation errors, the
//! socket's file mode, a second daemon on a taken socket, a stale socket, and `/metrics`.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use wovenet_e2e::process::{Process, file_tail};
use wovenet_e2e::*;
use wovenet_proto::v1::{self, event::Kind, watch_events_response};
use wovenet_tui::client::{Client, connect};

/// A control client for `site`; panics with the site's log if it cannot connect.
async fn ctl(site: &Site) -> Client {
    site.api().await.client()
}

async fn apps(c: &Client) -> v1::ListAppsResponse {
    c.clone()
        .list_apps(v1::ListAppsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the remote app's listener is open and returns its reported address.
async fn wait_listener_open(c: &Client, site: &str, app: &str, sites: &[&Site]) -> String {
    wait_for(
        &format!("listener of {site}/{app} open"),
        WAIT,
        || diag(sites),
        || async {
            let apps = apps(c).await;
            remote_app(&apps, site, app)
                .filter(|r| r.listener_state() == v1::ListenerState::Open)
                .map(|r| r.listen_addr.clone())
        },
    )
    .await
}

async fn streams(c: &Client) -> Vec<v1::Stream> {
    c.clone()
        .list_streams(v1::ListStreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .streams
}

fn exposed_spec(name: &str, socket: impl ToString) -> v1::ExposedAppSpec {
    v1::ExposedAppSpec {
        name: name.into(),
        app_socket: socket.to_string(),
        ..Default::default()
    }
}

fn remote_spec(site: &str, app: &str, local: impl ToString) -> v1::RemoteAppSpec {
    v1::RemoteAppSpec {
        site_name: site.into(),
        app_name: app.into(),
        local_socket: local.to_string(),
        app_socket: String::new(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_calls_and_stats_reflect_a_connected_pair_and_growing_traffic() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let p = Pair::new(
        |b| b.expose("echo", echo.sock()),
        |a| a.remote("b", "echo", &local),
    )
    .await;
    let sites = [&p.a, &p.b];
    let (a, b) = (ctl(&p.a).await, ctl(&p.b).await);

    let site = wait_for(
        "site a connected to the broker",
        WAIT,
        || diag(&sites),
        || async {
            let s = a.clone().get_site(v1::GetSiteRequest {}).await.unwrap();
            let s = s.into_inner().site.unwrap();
            (s.broker_state() == v1::BrokerState::Connected).then_some(s)
        },
    )
    .await;
    assert_eq!(site.name, "a");
    assert!(
        !site.version.is_empty() && site.instance.len() == 32,
        "{site:?}"
    );
    assert!(
        site.started_at.is_some() && site.uptime.is_some(),
        "{site:?}"
    );
    assert_eq!(site.sockets.len(), 1);
    assert!(
        site.sockets[0]
            .listen
            .ends_with(&format!(":{}", p.a.socket_ports()[0])),
        "{site:?}"
    );
    assert_eq!(
        site.sockets[0].public,
        format!("127.0.0.1:{}", p.a.socket_ports()[0])
    );

    let peer = wait_for(
        "peer b connected on a",
        WAIT,
        || diag(&sites),
        || async {
            let peers = a.clone().list_peers(v1::ListPeersRequest {}).await.unwrap();
            peers
                .into_inner()
                .peers
                .into_iter()
                .find(|p| p.name == "b" && p.state() == v1::PeerState::Connected)
        },
    )
    .await;
    assert_eq!(peer.apps, ["echo"]);
    assert!(peer.channels >= 1 && peer.instance.len() == 32, "{peer:?}");

    let channel = wait_for(
        "an up channel to b with an RTT",
        WAIT,
        || diag(&sites),
        || async {
            let chans = a.clone().list_channels(v1::ListChannelsRequest {}).await;
            chans.unwrap().into_inner().channels.into_iter().find(|c| {
                let rtt = c.rtt.unwrap_or_default();
                c.peer == "b"
                    && c.state() == v1::ChannelState::Up
                    && c.id != 0
                    && (rtt.seconds > 0 || rtt.nanos > 0)
            })
        },
    )
    .await;
    assert!(
        !channel.remote_addr.is_empty() && channel.cwnd > 0,
        "{channel:?}"
    );
    assert!(
        channel.bytes_sent > 0 && channel.sent_packets > 0,
        "{channel:?}"
    );

    let listen = wait_listener_open(&a, "b", "echo", &sites).await;
    assert_eq!(listen, local.to_string(), "listener address");
    let a_apps = apps(&a).await;
    assert!(
        !remote_app(&a_apps, "b", "echo").unwrap().live,
        "from config.yaml"
    );
    let b_apps = apps(&b).await;
    let exposed = b_apps.exposed[0].clone();
    assert_eq!(
        exposed.spec.unwrap(),
        exposed_spec("echo", echo.sock()).with_mode("single")
    );
    assert!(!exposed.live);

    // One long-lived connection: it shows on both sides, and its byte counts grow.
    let mut stats = a
        .clone()
        .watch_stats(v1::WatchStatsRequest {
            interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stats.message().await.unwrap().unwrap();
    let mut conn = EchoConn::connect(&local, WAIT).await.unwrap();
    conn.ping(&data::bytes(1, 10_000), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let s1 = wait_for(
        "a's stream with 10000 bytes each way",
        WAIT,
        || diag(&sites),
        || async {
            streams(&a)
                .await
                .into_iter()
                .find(|s| s.bytes_sent >= 10_000 && s.bytes_received >= 10_000)
        },
    )
    .await;
    assert_eq!((s1.app.as_str(), s1.peer.as_str()), ("echo", "b"));
    assert_eq!(s1.direction(), v1::StreamDirection::Outbound);
    assert!(s1.client_addr.starts_with("127.0.0.1:"), "{s1:?}");
    let inbound = wait_for(
        "b's inbound stream",
        WAIT,
        || diag(&sites),
        || async {
            streams(&b)
                .await
                .into_iter()
                .find(|s| s.bytes_received >= 10_000)
        },
    )
    .await;
    assert_eq!(inbound.direction(), v1::StreamDirection::Inbound);
    assert_eq!(inbound.peer, "a");

    conn.ping(&data::bytes(2, 50_000), WAIT).await.unwrap();
    let s2 = wait_for(
        "a's stream bytes to grow",
        WAIT,
        || diag(&sites),
        || async {
            streams(&a)
                .await
                .into_iter()
                .find(|s| s.id == s1.id && s.bytes_sent >= 60_000 && s.bytes_received >= 60_000)
        },
    )
    .await;
    let age = |s: &v1::Stream| Duration::try_from(s.age.unwrap()).unwrap();
    assert!(age(&s2) >= age(&s1), "ages: {s1:?} then {s2:?}");

    // The stats stream saw the same traffic: totals grow and a rate shows up.
    let echo_sent = |m: &v1::WatchStatsResponse| {
        m.apps
            .iter()
            .find(|x| x.app == "echo" && x.peer == "b")
            .map(|x| (x.bytes_sent, x.send_rate, x.open_streams))
    };
    let before = echo_sent(&first).map_or(0, |x| x.0);
    let mut saw_rate = false;
    let deadline = Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout(WAIT, stats.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            m.at.is_some() && m.counters.contains_key("streams_opened"),
            "{m:?}"
        );
        if let Some((sent, rate, open)) = echo_sent(&m) {
            saw_rate |= rate > 0.0;
            if sent >= before + 60_000 && saw_rate {
                assert_eq!(open, 1);
                assert!(m.peers.iter().any(|x| x.peer == "b" && x.bytes_sent > 0));
                assert!(m.channels.iter().any(|x| x.peer == "b" && x.bytes_sent > 0));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "stats never showed the echo traffic: {m:?}\n{}",
            p.diag()
        );
    }
    conn.finish(WAIT).await.unwrap();
    wait_for(
        "the stream to be gone",
        WAIT,
        || diag(&sites),
        || async { streams(&a).await.is_empty().then_some(()) },
    )
    .await;
}

trait WithMode {
    fn with_mode(self, mode: &str) -> Self;
}

impl WithMode for v1::ExposedAppSpec {
    fn with_mode(mut self, mode: &str) -> Self {
        self.mode = mode.into();
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposed_app_added_live_opens_the_peers_listener_and_removing_it_closes_it() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let p = Pair::new(|b| b, |a| a.remote("b", "later", &local)).await;
    let sites = [&p.a, &p.b];
    let (a, b) = (ctl(&p.a).await, ctl(&p.b).await);
    wait_for(
        "a to see b",
        WAIT,
        || diag(&sites),
        || async {
            let peers = a.clone().list_peers(v1::ListPeersRequest {}).await.unwrap();
            peers.into_inner().peers.into_iter().find(|p| p.name == "b")
        },
    )
    .await;
    assert!(
        !is_listening(&local).await,
        "no listener before the app exists"
    );

    let added = b
        .clone()
        .add_exposed_app(v1::AddExposedAppRequest {
            app: Some(exposed_spec("later", echo.sock())),
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    assert!(added.live);
    assert_eq!(added.spec.unwrap().mode, "single");
    let listed = apps(&b).await;
    assert!(
        listed
            .exposed
            .iter()
            .any(|e| e.live && e.spec.as_ref().unwrap().name == "later")
    );

    let opened = Instant::now();
    wait_listener_open(&a, "b", "later", &sites).await;
    eprintln!(
        "listener opened {:?} after the app was added",
        opened.elapsed()
    );
    assert!(
        opened.elapsed() < Duration::from_secs(10),
        "peers learn at once"
    );
    echo_once(&local, b"added live", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));

    let removed = b
        .clone()
        .remove_exposed_app(v1::RemoveExposedAppRequest {
            name: "later".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.app.unwrap().spec.unwrap().name, "later");
    wait_for(
        "a's listener to close",
        WAIT,
        || diag(&sites),
        || async {
            let apps = apps(&a).await;
            let closed = remote_app(&apps, "b", "later")
                .is_some_and(|r| r.listener_state() == v1::ListenerState::Waiting);
            (closed && !is_listening(&local).await).then_some(())
        },
    )
    .await;
    let err = b
        .clone()
        .remove_exposed_app(v1::RemoveExposedAppRequest {
            name: "later".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "no exposed app named 'later'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_app_added_live_carries_data_survives_a_restart_and_removal_closes_it() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let mut p = Pair::new(|b| b.expose("echo", echo.sock()), |a| a).await;
    let a = ctl(&p.a).await;

    let added = a
        .clone()
        .add_remote_app(v1::AddRemoteAppRequest {
            app: Some(remote_spec("b", "echo", &local)),
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    assert!(added.live);
    assert_eq!(added.spec.unwrap(), remote_spec("b", "echo", &local));
    wait_listener_open(&a, "b", "echo", &[&p.a, &p.b]).await;
    echo_once(&local, b"remote added live", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let extra = a
        .clone()
        .add_exposed_app(v1::AddExposedAppRequest {
            app: Some(exposed_spec("extra", "unix:/tmp/nothing-here.sock")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(extra.app.unwrap().live);

    // Both live changes come back from the state file after a restart.
    p.a.restart().await;
    let a = ctl(&p.a).await;
    let listed = apps(&a).await;
    let r = remote_app(&listed, "b", "echo").unwrap_or_else(|| panic!("{listed:?}\n{}", p.diag()));
    assert!(r.live, "{r:?}");
    let e = listed
        .exposed
        .iter()
        .find(|e| e.spec.as_ref().unwrap().name == "extra")
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert!(e.live);
    assert_eq!(
        e.spec.as_ref().unwrap().app_socket,
        "unix:/tmp/nothing-here.sock"
    );
    wait_listener_open(&a, "b", "echo", &[&p.a, &p.b]).await;
    p.a.wait_forward(&local, WAIT).await;

    let removed = a
        .clone()
        .remove_remote_app(v1::RemoveRemoteAppRequest {
            site_name: "b".into(),
            app_name: "echo".into(),
            local_socket: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .removed;
    assert_eq!(removed.len(), 1);
    assert_eq!(
        removed[0].spec.as_ref().unwrap().local_socket,
        local.to_string()
    );
    wait_for(
        "the listener to close",
        WAIT,
        || diag(&[&p.a, &p.b]),
        || async { (!is_listening(&local).await).then_some(()) },
    )
    .await;
    assert!(remote_app(&apps(&a).await, "b", "echo").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_app_definitions_come_back_invalid_argument_with_the_config_message() {
    let site = lone_site("solo", |s| s.expose("taken", "tcp:127.0.0.1:9")).await;
    let c = ctl(&site).await;

    let add_exposed = |spec: v1::ExposedAppSpec| {
        let mut c = c.clone();
        async move {
            c.add_exposed_app(v1::AddExposedAppRequest { app: Some(spec) })
                .await
                .unwrap_err()
        }
    };
    let e = add_exposed(exposed_spec("web", "http://x")).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "appSocket: 'http://x' must start with 'tcp:', 'udp:' or 'unix:'"
    );

    let e = add_exposed(v1::ExposedAppSpec::default()).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("appName: is required"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains(
            "appSocket: is required in single mode (tcp:IP:PORT, udp:IP:PORT or unix:PATH)"
        ),
        "every problem is listed: {}",
        e.message()
    );

    let e = add_exposed(v1::ExposedAppSpec {
        name: "vnc".into(),
        mode: "range".into(),
        port_range: vec!["5900".into(), "70000".into()],
        address_range: vec![],
        ..Default::default()
    })
    .await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("portRange[1]: "), "{}", e.message());
    assert!(
        e.message()
            .contains("addressRange: is required in range mode"),
        "{}",
        e.message()
    );

    let e = add_exposed(exposed_spec("taken", "tcp:127.0.0.1:10")).await;
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(
        e.message().contains("'taken' is already exposed"),
        "{}",
        e.message()
    );

    let add_remote = |spec: v1::RemoteAppSpec| {
        let mut c = c.clone();
        async move {
            c.add_remote_app(v1::AddRemoteAppRequest { app: Some(spec) })
                .await
                .unwrap_err()
        }
    };
    let e = add_remote(remote_spec("b", "echo", "tcp:localhost:1")).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "localSocket: 'tcp:localhost:1' is not a valid tcp socket, expected tcp:IP:PORT (IPv6 as tcp:[::1]:PORT)"
    );
    let e = add_remote(v1::RemoteAppSpec {
        app_socket: "unix:/x".into(),
        ..remote_spec("b", "vnc", "tcp:127.0.0.1:0")
    })
    .await;
    assert_eq!(
        e.message(),
        "appSocket: 'unix:/x' must be tcp:IP:PORT: it names a TCP target inside the remote range app"
    );
    let e = add_remote(remote_spec("solo", "x", "tcp:127.0.0.1:0")).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("siteName: 'solo' is this site's own name"),
        "{e:?}"
    );

    let e = c
        .clone()
        .remove_remote_app(v1::RemoveRemoteAppRequest {
            site_name: "b".into(),
            app_name: "nope".into(),
            local_socket: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Nothing invalid was added along the way.
    let listed = apps(&c).await;
    assert_eq!(listed.exposed.len(), 1);
    assert!(listed.remote.is_empty());
}

/// The kind of an event, for order checks.
fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::PeerDiscovered(_) => "peer_discovered",
        Kind::PeerConnected(_) => "peer_connected",
        Kind::PeerDisconnected(_) => "peer_disconnected",
        Kind::ChannelUp(_) => "channel_up",
        Kind::ChannelDown(_) => "channel_down",
        Kind::ExposedAppAdded(_) => "exposed_app_added",
        Kind::ExposedAppRemoved(_) => "exposed_app_removed",
        Kind::RemoteAppAdded(_) => "remote_app_added",
        Kind::RemoteAppRemoved(_) => "remote_app_removed",
        Kind::ListenerOpened(_) => "listener_opened",
        Kind::ListenerClosed(_) => "listener_closed",
        Kind::StreamOpened(_) => "stream_opened",
        Kind::StreamClosed(_) => "stream_closed",
        Kind::ConfigReloaded(_) => "config_reloaded",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_starts_with_a_snapshot_then_delivers_events_in_order() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let mut p = Pair::new(|b| b.expose("echo", echo.sock()), |a| a).await;
    let sites = [&p.a, &p.b];
    let a = ctl(&p.a).await;
    wait_for(
        "peer b connected on a",
        WAIT,
        || diag(&sites),
        || async {
            let peers = a.clone().list_peers(v1::ListPeersRequest {}).await.unwrap();
            peers
                .into_inner()
                .peers
                .into_iter()
                .find(|p| p.name == "b" && p.state() == v1::PeerState::Connected)
        },
    )
    .await;

    let mut feed = a
        .clone()
        .watch_events(v1::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = feed.message().await.unwrap().unwrap().kind.unwrap();
    let watch_events_response::Kind::Snapshot(snapshot) = first else {
        panic!("the feed must start with a snapshot, got {first:?}");
    };
    assert_eq!(snapshot.site.unwrap().name, "a");
    assert!(
        snapshot.peers.iter().any(|p| p.name == "b"),
        "{:?}",
        snapshot.peers
    );
    assert!(snapshot.channels.iter().any(|c| c.peer == "b"));
    assert!(snapshot.remote.is_empty() && snapshot.streams.is_empty());
    assert!(snapshot.next_seq > 0);

    a.clone()
        .add_remote_app(v1::AddRemoteAppRequest {
            app: Some(remote_spec("b", "echo", &local)),
        })
        .await
        .unwrap();
    wait_listener_open(&a, "b", "echo", &sites).await;
    echo_once(&local, &data::bytes(3, 5000), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));

    let mut seen: Vec<(u64, &'static str)> = Vec::new();
    let mut closed = None;
    while closed.is_none() {
        let m = tokio::time::timeout(WAIT, feed.message())
            .await
            .unwrap_or_else(|_| panic!("events so far {seen:?}\n{}", p.diag()))
            .unwrap()
            .unwrap();
        let Some(watch_events_response::Kind::Event(e)) = m.kind else {
            panic!("only one snapshot per feed: {m:?}");
        };
        let kind = e.kind.unwrap();
        assert!(e.at.is_some());
        if let Kind::StreamClosed(s) = &kind {
            closed = Some(s.clone());
        }
        seen.push((e.seq, kind_name(&kind)));
    }
    let seqs: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert!(
        seqs[0] >= snapshot.next_seq,
        "{seen:?} vs {}",
        snapshot.next_seq
    );
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "increasing: {seen:?}");
    let kinds: Vec<&str> = seen
        .iter()
        .map(|s| s.1)
        .filter(|k| {
            [
                "remote_app_added",
                "listener_opened",
                "stream_opened",
                "stream_closed",
            ]
            .contains(k)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "remote_app_added",
            "listener_opened",
            "stream_opened",
            "stream_closed"
        ],
        "{seen:?}"
    );
    let closed = closed.unwrap();
    assert_eq!((closed.app.as_str(), closed.peer.as_str()), ("echo", "b"));
    assert_eq!((closed.bytes_sent, closed.bytes_received), (5000, 5000));

    // A daemon stopping with a watcher attached ends the feed and still exits promptly.
    let stopping = Instant::now();
    p.a.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    // Events of the shutdown itself (channels closing) may still be in flight; then it ends.
    let drained = tokio::time::timeout(WAIT, async {
        let mut last = Vec::new();
        while let Ok(Some(m)) = feed.message().await {
            last.push(m);
        }
        last
    })
    .await;
    assert!(
        drained.is_ok(),
        "the feed did not end after the daemon stopped"
    );
    assert!(!p.a.control_socket().exists(), "socket file removed");
}

/// Connects to `path` as uid/gid 65534 with no supplementary groups, in a forked child.
/// Returns 0 if the connection was accepted, else the child's `errno`.
fn connect_as_nobody(path: &Path) -> i32 {
    // Everything the child needs is prepared before fork: it may only make syscalls.
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: the child only calls async-signal-safe functions and then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: async-signal-safe syscalls on memory prepared before fork.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(100);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(101);
            }
            let r = libc::connect(fd, (&raw const addr).cast(), len);
            libc::_exit(if r == 0 {
                0
            } else {
                (*libc::__errno_location()).min(99)
            });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child did not exit: {status}");
    libc::WEXITSTATUS(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_0660_and_a_user_without_permission_is_refused() {
    let site = lone_site("perm", |s| s).await;
    let path = site.control_socket();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "mode {mode:o}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot switch to an unprivileged uid; file mode checked only");
        return;
    }
    // Let anyone traverse the (0700) tempdir, so only the socket's own mode decides.
    std::fs::set_permissions(site.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(
        connect_as_nobody(&path),
        libc::EACCES,
        "refused by the file mode"
    );
    // The same user gets in once the mode allows it: the mode is what refused it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(connect_as_nobody(&path), 0);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    // And the client library says what to do about it.
    let err = connect(&site.dir().join("nobody-here.sock"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no wovenetd is listening"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_a_taken_socket_fails_clearly_and_a_stale_one_is_replaced() {
    let mut first = lone_site("first", |s| s).await;
    let path = first.control_socket();
    ctl(&first)
        .await
        .get_site(v1::GetSiteRequest {})
        .await
        .unwrap();

    // A second daemon told (by flag, over its config's own control.socket) to use the same
    // path, on the first's broker and topic: had it started its site, the first would see it.
    let dir = tempfile::tempdir().unwrap();
    let mqtt = &first.config()["messageChannel"]["mqtt"];
    let config = Site::builder("second")
        .topic(mqtt["topic"].as_str().unwrap())
        .broker(mqtt["brokerServer"].as_str().unwrap())
        .write_config(dir.path());
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut second = Process::spawn(
        wovenetd(),
        [
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--control-socket"),
            path.as_os_str(),
        ],
        &[("WOVENET_LOG", None)],
        &out,
        &err,
    )
    .unwrap();
    let status = second
        .wait_exit(WAIT)
        .await
        .unwrap_or_else(|| panic!("the second daemon kept running\n{}", file_tail(&err, 20)));
    assert_ne!(status.code(), Some(0), "{}", file_tail(&err, 20));
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(
        stderr.contains(&format!(
            "another wovenetd is listening on {}",
            path.display()
        )),
        "{stderr}"
    );
    let api = first.api().await;
    never(
        "the second daemon announced itself before giving up",
        Duration::from_secs(2),
        || first.diag(),
        || async { api.peer("second").await.is_some() },
    )
    .await;
    let site = ctl(&first)
        .await
        .get_site(v1::GetSiteRequest {})
        .await
        .unwrap();
    assert_eq!(
        site.into_inner().site.unwrap().name,
        "first",
        "the first keeps working"
    );

    // A crash leaves the file behind; the next start replaces it.
    first.kill();
    assert!(path.exists(), "SIGKILL leaves the socket file");
    first.start().await;
    ctl(&first)
        .await
        .get_site(v1::GetSiteRequest {})
        .await
        .unwrap();
    first.stop().await;
    assert!(!path.exists(), "a clean stop removes the socket file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_prometheus_text_and_404_elsewhere() {
    let port = free_tcp_port();
    let site = lone_site("metered", |s| {
        s.expose("web", "tcp:127.0.0.1:9")
            .extra("metrics", json!({ "listen": format!("127.0.0.1:{port}") }))
    })
    .await;
    // Bound before the site starts, so connections queue until it serves.

    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let ok = get("/metrics").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}\n{}", site.diag());
    assert!(ok.contains("application/openmetrics-text"), "{ok}");
    assert!(ok.contains("\nwovenet_streams_opened_total 0\n"), "{ok}");
    assert!(
        ok.contains("\n# TYPE wovenet_auth_failures counter\n"),
        "{ok}"
    );
    assert!(ok.trim_end().ends_with("# EOF"), "{ok}");
    let missing = get("/").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
