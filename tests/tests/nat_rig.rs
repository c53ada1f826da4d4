//! Self-test of the real-NAT rig (`wovenet_e2e::natrig`): its NATs behave as the theory of
//! RFC 4787 says (mapping, filtering, punching), its operations change what a STUN server sees,
//! private segments stay apart, it cleans up on every exit path, its TURN relay relays, and
//! wovenetd runs in it. The STUN client is `natrig::stun` (the `stun-types` codec); the TURN
//! client and peer are coturn's own `turnutils_uclient` and `turnutils_peer`: none of it is
//! wovenet code. Each test makes its own rig (rigs run in parallel) and skips without root,
//! nftables, conntrack or coturn unless CI demands them.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::UdpSocket;
use wovenet_e2e::natrig::{self, Host, NatKind, Rig, netns, plan, stun};
use wovenet_e2e::process::Process;
use wovenet_e2e::*;

/// How long a path that must stay closed is watched.
const CLOSED_FOR: Duration = Duration::from_secs(3);

/// STUN answer deadline inside the rig (everything is a veth hop away).
const STUN_WAIT: Duration = Duration::from_secs(5);

/// A UDP socket on any port inside `host`.
fn socket(host: &Host) -> UdpSocket {
    host.udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

/// Two site namespaces behind two NATs of one kind, each with a UDP socket whose mapping
/// (towards the first STUN server) is known. Only the mappings are kept: the STUN server
/// stops once they are learnt (punching needs nothing more of it), and the namespaces live
/// as long as the rig.
struct MappedPair {
    rig: Rig,
    sa: UdpSocket,
    sb: UdpSocket,
    ma: SocketAddr,
    mb: SocketAddr,
}

impl MappedPair {
    async fn new(kind: NatKind) -> Option<Self> {
        let rig = Rig::new()?;
        let (nat_a, nat_b) = (rig.nat(kind), rig.nat(kind));
        let (a, b) = (rig.site_behind(&nat_a), rig.site_behind(&nat_b));
        let _stun = rig.stun().await;
        let [s1, _] = plan::stun_servers();
        let (sa, sb) = (socket(&a), socket(&b));
        let (ma, mb) = (
            mapped(&sa, s1, || rig.diag()).await,
            mapped(&sb, s1, || rig.diag()).await,
        );
        Some(Self {
            rig,
            sa,
            sb,
            ma,
            mb,
        })
    }
}

async fn mapped(sock: &UdpSocket, server: SocketAddr, diag: impl FnOnce() -> String) -> SocketAddr {
    stun::binding(sock, server, STUN_WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()))
}

fn local_port(sock: &UdpSocket) -> u16 {
    sock.local_addr().unwrap().port()
}

/// What each side received while `a` sent to `a_to` and `b` to `b_to` (`None`: that side stays
/// silent) every 100 ms, until both received something or `within` passed.
async fn punch(
    a: &UdpSocket,
    a_to: Option<SocketAddr>,
    b: &UdpSocket,
    b_to: Option<SocketAddr>,
    within: Duration,
) -> (Option<(Vec<u8>, SocketAddr)>, Option<(Vec<u8>, SocketAddr)>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut got_a, mut got_b) = (None, None);
    let (mut buf_a, mut buf_b) = ([0u8; 64], [0u8; 64]);
    while got_a.is_none() || got_b.is_none() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {
                if let Some(to) = a_to {
                    let _ = a.send_to(b"punch from a", to).await;
                }
                if let Some(to) = b_to {
                    let _ = b.send_to(b"punch from b", to).await;
                }
            }
            r = a.recv_from(&mut buf_a), if got_a.is_none() => {
                if let Ok((n, from)) = r {
                    got_a = Some((buf_a[..n].to_vec(), from));
                }
            }
            r = b.recv_from(&mut buf_b), if got_b.is_none() => {
                if let Ok((n, from)) = r {
                    got_b = Some((buf_b[..n].to_vec(), from));
                }
            }
        }
    }
    (got_a, got_b)
}

/// Whether `rx` receives the probes `tx` sends to `to` every 100 ms, within `within`.
async fn hears(rx: &UdpSocket, tx: &UdpSocket, to: SocketAddr, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            _ = tick.tick() => {
                let _ = tx.send_to(b"probe", to).await;
            }
            r = rx.recv_from(&mut buf) => {
                if matches!(r, Ok((n, _)) if &buf[..n] == b"probe") {
                    return true;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_sees_one_mapping_per_socket_or_one_per_destination() {
    let start = Instant::now();
    let Some(rig) = Rig::new() else { return };
    let ei = rig.nat(NatKind::EndpointIndependent);
    let pd = rig.nat(NatKind::PerDestination);
    let (host_ei, host_pd) = (rig.site_behind(&ei), rig.site_behind(&pd));
    let stun = rig.stun().await;
    let setup = start.elapsed();
    eprintln!("rig set-up (2 NATs, 2 sites, STUN ready): {setup:?}");
    let [s1, s2] = plan::stun_servers();
    let diag = || format!("{}\n{}", rig.diag(), stun.diag());

    let sock = socket(&host_ei);
    let (m1, m2) = (mapped(&sock, s1, diag).await, mapped(&sock, s2, diag).await);
    assert_eq!(m1, m2, "one mapping for both destinations\n{}", diag());
    assert_eq!(
        m1.ip(),
        ei.public_addr(),
        "mapped to the NAT's address\n{}",
        diag()
    );
    assert_eq!(
        m1.port(),
        local_port(&sock),
        "the free local port is kept\n{}",
        diag()
    );

    let sock = socket(&host_pd);
    let (m1, m2) = (mapped(&sock, s1, diag).await, mapped(&sock, s2, diag).await);
    assert_eq!(m1.ip(), pd.public_addr(), "{}", diag());
    assert_eq!(m2.ip(), pd.public_addr(), "{}", diag());
    assert_ne!(
        m1.port(),
        m2.port(),
        "a new port per destination\n{}",
        diag()
    );
    // The mapping towards one destination is stable while it lives.
    assert_eq!(mapped(&sock, s1, diag).await, m1, "{}", diag());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoint_independent_nats_punch_when_both_sides_send() {
    let Some(MappedPair {
        rig,
        sa,
        sb,
        ma,
        mb,
        ..
    }) = MappedPair::new(NatKind::EndpointIndependent).await
    else {
        return;
    };
    let (got_a, got_b) = punch(&sa, Some(mb), &sb, Some(ma), Duration::from_secs(5)).await;
    assert_eq!(
        got_a,
        Some((b"punch from b".to_vec(), mb)),
        "a hears b from b's STUN-mapped address\n{}",
        rig.diag()
    );
    assert_eq!(
        got_b,
        Some((b"punch from a".to_vec(), ma)),
        "b hears a from a's STUN-mapped address\n{}",
        rig.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_per_destination_nats_cannot_be_punched() {
    let Some(MappedPair {
        rig,
        sa,
        sb,
        ma,
        mb,
        ..
    }) = MappedPair::new(NatKind::PerDestination).await
    else {
        return;
    };
    let (got_a, got_b) = punch(&sa, Some(mb), &sb, Some(ma), CLOSED_FOR).await;
    assert_eq!(
        (got_a, got_b),
        (None, None),
        "nothing crosses two per-destination NATs\n{}",
        rig.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_independent_nat_filters_until_its_side_sends_too() {
    let Some(MappedPair {
        rig,
        sa,
        sb,
        ma,
        mb,
        ..
    }) = MappedPair::new(NatKind::EndpointIndependent).await
    else {
        return;
    };
    // Only a sends: b's NAT has a mapping (towards the STUN server) but admits nothing else.
    let (_, got_b) = punch(&sa, Some(mb), &sb, None, CLOSED_FOR).await;
    assert_eq!(
        got_b,
        None,
        "b's NAT let unsolicited packets in\n{}",
        rig.diag()
    );
    // The path itself works: once b sends too, both hear each other (and a's earlier
    // unsolicited packets left nothing behind in b's NAT that would change b's port).
    let (got_a, got_b) = punch(&sa, Some(mb), &sb, Some(ma), Duration::from_secs(5)).await;
    assert_eq!(
        got_a,
        Some((b"punch from b".to_vec(), mb)),
        "{}",
        rig.diag()
    );
    assert_eq!(
        got_b,
        Some((b"punch from a".to_vec(), ma)),
        "{}",
        rig.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_and_readdressing_a_nat_change_what_stun_sees() {
    let Some(rig) = Rig::new() else { return };
    let pd = rig.nat(NatKind::PerDestination);
    let ei = rig.nat(NatKind::EndpointIndependent);
    let (host_pd, host_ei) = (rig.site_behind(&pd), rig.site_behind(&ei));
    let stun = rig.stun().await;
    let [s1, _] = plan::stun_servers();
    let diag = || format!("{}\n{}", rig.diag(), stun.diag());

    let sock = socket(&host_pd);
    let before = mapped(&sock, s1, diag).await;
    assert_eq!(
        mapped(&sock, s1, diag).await,
        before,
        "stable until flushed\n{}",
        diag()
    );
    pd.flush_conntrack();
    let after = mapped(&sock, s1, diag).await;
    assert_eq!(after.ip(), before.ip(), "{}", diag());
    assert_ne!(
        after.port(),
        before.port(),
        "a flushed mapping is made anew\n{}",
        diag()
    );

    for (nat, host) in [(&pd, &host_pd), (&ei, &host_ei)] {
        let sock = socket(host);
        let old_ip = nat.public_addr();
        assert_eq!(mapped(&sock, s1, diag).await.ip(), old_ip, "{}", diag());
        let new_ip = nat.change_public_addr();
        assert_ne!(new_ip, old_ip);
        assert_eq!(nat.public_addr(), new_ip, "{}", diag());
        assert_eq!(
            mapped(&sock, s1, diag).await.ip(),
            new_ip,
            "the new public address is what STUN sees\n{}",
            diag()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_udp_through_a_nat_stops_stun_until_restored() {
    let Some(rig) = Rig::new() else { return };
    let nat = rig.nat(NatKind::EndpointIndependent);
    let host = rig.site_behind(&nat);
    let _stun = rig.stun().await;
    let [s1, _] = plan::stun_servers();
    let sock = socket(&host);
    let before = mapped(&sock, s1, || rig.diag()).await;
    nat.cut_udp();
    nat.cut_udp(); // idempotent
    let cut = stun::binding(&sock, s1, Duration::from_secs(1)).await;
    assert!(
        cut.is_err(),
        "STUN answered through a cut NAT: {cut:?}\n{}",
        rig.diag()
    );
    nat.restore_udp();
    assert_eq!(
        mapped(&sock, s1, || rig.diag()).await,
        before,
        "{}",
        rig.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_cannot_reach_another_private_segment_directly() {
    let Some(rig) = Rig::new() else { return };
    let (nat1, nat2) = (
        rig.nat(NatKind::EndpointIndependent),
        rig.nat(NatKind::EndpointIndependent),
    );
    let a = rig.site_behind(&nat1);
    let (b, c) = (rig.site_behind(&nat2), rig.site_behind(&nat2));
    let target = SocketAddr::from((b.addr(), 5000));
    let sb = b.udp(target);
    // Control: a neighbour on b's own segment reaches it.
    assert!(
        hears(&sb, &socket(&c), target, Duration::from_secs(5)).await,
        "control: c does not reach b\n{}",
        rig.diag()
    );
    // a, on another segment, does not: neither by UDP ...
    assert!(
        !hears(&sb, &socket(&a), target, Duration::from_secs(1)).await,
        "b heard a directly\n{}",
        rig.diag()
    );
    // ... nor by TCP, to b or to its NAT's inside address.
    let listener = b.tcp_listener(SocketAddr::from((b.addr(), 5001)));
    for to in [
        SocketAddr::from((b.addr(), 5001)),
        SocketAddr::from((nat2.inside_addr(), 22)),
    ] {
        let r = a.tcp_connect(to, Duration::from_secs(1)).await;
        assert!(r.is_err(), "a connected to {to}\n{}", rig.diag());
    }
    assert!(
        c.tcp_connect(SocketAddr::from((b.addr(), 5001)), Duration::from_secs(5))
            .await
            .is_ok(),
        "control: c reaches b's listener\n{}",
        rig.diag()
    );
    drop(listener);
}

/// Names `ip netns list` shows.
fn ip_netns_list() -> Vec<String> {
    let out = Command::new(netns::tool("ip").unwrap())
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn none_left(names: &[String]) -> Vec<String> {
    let listed = ip_netns_list();
    names
        .iter()
        .filter(|n| listed.contains(n))
        .cloned()
        .collect()
}

/// Starts `sleep 60` inside `ns` outside any harness guard: only the rig can stop it.
fn stray_sleeper(ns: &netns::Netns) -> std::process::Child {
    let (ip, args) = ns.wrap(Path::new("/bin/sleep"), ["60"]);
    Command::new(ip)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

async fn killed_within(child: &mut std::process::Child, timeout: Duration) -> bool {
    eventually(timeout, || {
        let done = child.try_wait().unwrap().is_some();
        async move { done }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_rig_removes_its_namespaces_and_processes() {
    let Some(rig) = Rig::new() else { return };
    let nat = rig.nat(NatKind::PerDestination);
    let host = rig.site_behind(&nat);
    let public = rig.public_site();
    let names = rig.names();
    assert_eq!(
        names.len(),
        5,
        "internet, servers, NAT, two sites: {names:?}"
    );
    assert!(names.iter().all(|n| n.len() <= 15), "{names:?}");
    assert_eq!(none_left(&names), names, "all listed while the rig lives");
    let mut sleeper = stray_sleeper(&host);
    drop((nat, host, public));
    drop(rig);
    assert_eq!(none_left(&names), Vec::<String>::new(), "left after drop");
    assert!(
        killed_within(&mut sleeper, WAIT).await,
        "a process inside a rig namespace outlived the rig"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_still_removes_its_rig() {
    if !natrig::require() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let rig = Rig::new().unwrap();
        let nat = rig.nat(NatKind::EndpointIndependent);
        let host = rig.site_behind(&nat);
        let stun = rig.stun().await;
        tx.send((rig.names(), stray_sleeper(&host), stun.diag()))
            .unwrap();
        panic!("a test failing with a rig up");
    });
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    let (names, mut sleeper, stun_diag) = rx.recv().unwrap();
    assert!(stun_diag.contains("running"), "{stun_diag}");
    assert_eq!(
        none_left(&names),
        Vec::<String>::new(),
        "left after a panic"
    );
    assert!(killed_within(&mut sleeper, WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rig_removes_namespaces_of_dead_test_processes_only() {
    if !natrig::require() {
        return;
    }
    let ip = netns::tool("ip").unwrap();
    let mut gone = Command::new("/bin/true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let mut alive = Command::new("/bin/sleep").arg("60").spawn().unwrap();
    let stale = netns::name(dead_pid, 0xee, "i");
    let live = netns::name(alive.id(), 0xee, "i");
    for n in [&stale, &live] {
        let st = Command::new(&ip)
            .args(["netns", "add", n])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {n}");
    }
    let rig = Rig::new().unwrap();
    let listed = ip_netns_list();
    let (stale_left, live_left) = (listed.contains(&stale), listed.contains(&live));
    for n in [&live, &stale] {
        let _ = Command::new(&ip)
            .args(["netns", "del", n])
            .stderr(Stdio::null())
            .status();
    }
    alive.kill().unwrap();
    alive.wait().unwrap();
    drop(rig);
    assert!(
        !stale_left,
        "{stale} (pid {dead_pid} is dead) was not swept"
    );
    assert!(live_left, "{live} (its creator lives) was swept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_relays_for_a_site_behind_a_per_destination_nat() {
    let Some(rig) = Rig::new() else { return };
    let nat = rig.nat(NatKind::PerDestination);
    let host = rig.site_behind(&nat);
    let peer_host = rig.public_site();
    let turn = rig.turn().await;
    let (uclient, peer_bin) = (
        netns::tool("turnutils_uclient").expect("coturn ships turnutils_uclient"),
        netns::tool("turnutils_peer").expect("coturn ships turnutils_peer"),
    );
    // coturn's UDP echo peer on the public site.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("peer.out");
    let peer_addr = SocketAddr::from((peer_host.addr(), 3480));
    let (ip, args) = peer_host.wrap(
        &peer_bin,
        [
            "-L".to_owned(),
            peer_addr.ip().to_string(),
            "-p".into(),
            "3480".into(),
        ],
    );
    let _peer = Process::spawn(&ip, args, &[], &out, &out).unwrap();
    let probe = rig
        .servers()
        .udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    assert!(
        eventually(WAIT, || async {
            let mut buf = [0u8; 16];
            let _ = probe.send_to(b"ping", peer_addr).await;
            tokio::time::timeout(Duration::from_millis(100), probe.recv_from(&mut buf))
                .await
                .is_ok()
        })
        .await,
        "turnutils_peer does not echo on {peer_addr}"
    );

    let creds = turn.credentials().clone();
    let run = |password: String| {
        let host = host.clone();
        let uclient = uclient.clone();
        let (user, server, peer_ip) = (
            creds.username.clone(),
            turn.ip().to_string(),
            peer_addr.ip().to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let args = [
                "-c", "-u", &user, "-w", &password, "-n", "3", "-m", "1", "-e", &peer_ip, "-r",
                "3480", &server,
            ];
            host.try_exec(&uclient, &args, None)
        })
    };
    let refused = run("wrong-password".into()).await.unwrap();
    assert!(
        refused.is_err(),
        "an allocation with a wrong password succeeded: {refused:?}"
    );

    let output = run(creds.password.clone())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", turn.diag()));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    // Its summary line: "start_mclient: tot_send_msgs=3, tot_recv_msgs=3".
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))
        .unwrap_or_else(|| {
            panic!(
                "no summary from turnutils_uclient:\n{text}\n{}",
                turn.diag()
            )
        });
    assert!(
        summary.ends_with("tot_send_msgs=3, tot_recv_msgs=3"),
        "every message went to the peer through the relay and came back: {summary}\n{text}\n{}",
        turn.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wovenetd_runs_behind_a_nat_with_the_broker_in_the_servers_namespace() {
    let Some(rig) = Rig::new() else { return };
    let nat = rig.nat(NatKind::EndpointIndependent);
    let host_a = rig.site_behind(&nat);
    let host_b = rig.public_site();
    let broker = rig.embedded_broker().await;
    assert_eq!(broker.url(), "mqtt://198.18.0.2:1883");
    let net = Net::new(broker.url());
    let dir = socket_dir();
    let echo = EchoServer::unix(dir.path().join("echo.sock")).await;
    let local = Sock::unix(dir.path().join("local.sock"));
    // b is public: it listens on its internet address. a is behind the NAT and dials only.
    let b = net
        .site("b")
        .netns(&host_b)
        .expose("echo", echo.sock())
        .extra(
            "tunnel",
            json!({ "localSockets": [{
                "mode": "dedicated-address", "transportProtocol": "quic",
                "publicAddress": host_b.addr().to_string(), "listenPort": 4433,
            }]}),
        )
        .spawn()
        .await;
    let a = net
        .site("a")
        .netns(&host_a)
        .remote("b", "echo", &local)
        .extra("tunnel", json!({ "localSockets": [] }))
        .spawn()
        .await;
    assert_eq!(a.netns(), Some(host_a.netns()));
    wait_forward(&local, WAIT, &[&a, &b]).await;
    // The control API answers from the test process (unix socket on the shared filesystem).
    let api = a.api().await;
    assert!(
        !api.up_channels("b").await.is_empty(),
        "{}",
        diag(&[&a, &b])
    );
    // b saw a coming from the NAT's public address: the tunnel crossed the NAT.
    let mappings = nat.mappings();
    assert!(
        mappings.contains(&format!("dst={}", host_b.addr())) && mappings.contains("dport=4433"),
        "no NAT mapping towards b's QUIC socket:\n{mappings}\n{}",
        rig.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_udp_timeouts_make_an_idle_mapping_expire() {
    let Some(rig) = Rig::new() else { return };
    let nat = rig.nat(NatKind::PerDestination);
    let host = rig.site_behind(&nat);
    let _stun = rig.stun().await;
    nat.set_udp_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    let [s1, _] = plan::stun_servers();
    let sock = socket(&host);
    let before = mapped(&sock, s1, || rig.diag()).await;
    assert_eq!(
        mapped(&sock, s1, || rig.diag()).await,
        before,
        "{}",
        rig.diag()
    );
    // Idle past the timeout: nothing to poll for, the point is that nothing is sent.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = mapped(&sock, s1, || rig.diag()).await;
    assert_ne!(
        after.port(),
        before.port(),
        "the idle mapping expired\n{}",
        rig.diag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_in_the_servers_namespace_is_reachable_from_behind_a_nat() {
    let Some(rig) = Rig::new() else { return };
    let Some(mut broker) = rig.mosquitto().await else {
        return;
    };
    let nat = rig.nat(NatKind::PerDestination);
    let host = rig.site_behind(&nat);
    assert_eq!(broker.url(), "mqtt://198.18.0.2:1883");
    assert!(broker.accepts().await, "{}", broker.diag());
    let addr = broker.addr();
    let reach = || host.tcp_connect(addr, Duration::from_secs(5));
    assert!(reach().await.is_ok(), "{}\n{}", broker.diag(), rig.diag());
    broker.stop().await;
    assert!(reach().await.is_err(), "still reachable after stop");
    broker.start().await;
    assert!(reach().await.is_ok(), "{}", broker.diag());
}
