//! Sites behind real NATs (the `natrig` rig: namespaces, nftables masquerade, coturn STUN)
//! connect by hole punching: `hole-punching` sockets learn their mapping by STUN from the
//! QUIC socket itself, announce it, and meet through a rendezvous on the message channel.
//! Needs root, nft, conntrack and coturn (fails instead of skipping in CI).
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use wovenet_e2e::natrig::{self, Host, Nat, NatKind, Rig, StunServer, TurnServer};
use wovenet_e2e::*;
use wovenet_proto::v1;

/// A `hole-punching` local socket asking the rig's STUN servers.
fn punch_socket(stun: &StunServer) -> Value {
    json!({ "mode": "hole-punching", "stunDetector": { "servers": stun.servers() } })
}

/// The routes of the channels of `api` that are up toward `peer`.
async fn up_routes(api: &Api, peer: &str) -> Vec<v1::ChannelRoute> {
    api.channels()
        .await
        .into_iter()
        .filter(|c| c.peer == peer && c.state() == v1::ChannelState::Up)
        .map(|c| c.route())
        .collect()
}

/// Two sites behind NATs of `kinds`, both with a hole-punching socket; `b` exposes a sink
/// (64 MiB down) and `a` uses it on a unix socket.
struct Behind {
    rig: Rig,
    stun: StunServer,
    hosts: [Host; 2],
    a: Site,
    b: Site,
    local: Sock,
    sink: SinkServer,
    _dir: tempfile::TempDir,
    _broker: Broker,
    _turn: Option<TurnServer>,
}

const LEN: u64 = 64 << 20;
const DOWN_SEED: u64 = 0x5eed_0102;
const UP_SEED: u64 = 0x5eed_0101;

impl Behind {
    async fn new(kinds: [NatKind; 2]) -> Option<Self> {
        Self::with(kinds, true, false).await
    }

    /// `a_punchable`: whether `a` has a hole-punching socket too (else it only dials);
    /// `relay`: whether `b` (whose punched socket `a` dials) has a TURN relay.
    async fn with(kinds: [NatKind; 2], a_punchable: bool, relay: bool) -> Option<Self> {
        let rig = Rig::new()?;
        let turn = if relay { Some(rig.turn().await) } else { None };
        let stun = rig.stun().await;
        let broker = rig.embedded_broker().await;
        let nats = [rig.nat(kinds[0]), rig.nat(kinds[1])];
        let hosts = [rig.site_behind(&nats[0]), rig.site_behind(&nats[1])];
        let dir = socket_dir();
        let sink = SinkServer::unix(dir.path().join("sink.sock"), LEN, DOWN_SEED).await;
        let local = Sock::unix(dir.path().join("a-sink.sock"));
        let net = Net::new(broker.url());
        let mut b = net.site("b");
        if let Some(turn) = &turn {
            let c = turn.credentials();
            b = b.tunnel_option(
                "relay",
                json!({ "turn": { "url": turn.url(), "username": c.username, "password": c.password } }),
            );
        }
        let b = b
            .netns(hosts[1].netns())
            .local_sockets(vec![punch_socket(&stun)])
            .expose("sink", sink.sock())
            .spawn()
            .await;
        let a_sockets = if a_punchable {
            vec![punch_socket(&stun)]
        } else {
            vec![]
        };
        let a = net
            .site("a")
            .netns(hosts[0].netns())
            .local_sockets(a_sockets)
            .remote("b", "sink", &local)
            .spawn()
            .await;
        Some(Self {
            rig,
            stun,
            hosts,
            a,
            b,
            local,
            sink,
            _dir: dir,
            _broker: broker,
            _turn: turn,
        })
    }

    fn diag(&self) -> String {
        format!(
            "{}\n{}\n{}",
            diag(&[&self.a, &self.b]),
            self.rig.diag(),
            self.stun.diag()
        )
    }
}

/// One short connection through `local`: `msg` up, the sink's 64 MiB down; asserts
/// both arrived whole.
async fn exchange(t: &Behind, msg: &[u8]) {
    let mut s = connect_eventually(&t.local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.diag()));
    s.write_all(msg).await.unwrap();
    s.shutdown().await.unwrap();
    let (n, _) = data::hash_to_end(&mut s)
        .await
        .unwrap_or_else(|(n, e)| panic!("{n}: {e}\n{}", t.diag()));
    assert_eq!(n, LEN, "{}", t.diag());
    let report = t.sink.next_report(WAIT).await;
    assert_eq!(
        report.received,
        msg.len() as u64,
        "{report:?}\n{}",
        t.diag()
    );
}

/// Sends 64 MiB up through `local` while the sink sends 64 MiB down; asserts both byte-exact.
async fn transfer_64_mib(t: &Behind) -> Duration {
    let stream = connect_eventually(&t.local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.diag()));
    let x = data::both_ways(stream, (UP_SEED, DOWN_SEED), LEN, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.diag()));
    let (took, up_hash) = (x.took, x.up);
    assert_eq!(
        x.received,
        (LEN, x.down),
        "downstream differs\n{}",
        t.diag()
    );
    let report = t.sink.next_report(WAIT).await;
    assert_eq!(
        (report.received, report.sha256),
        (LEN, Some(up_hash)),
        "upstream differs: {report:?}\n{}",
        t.diag()
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_independent_nats_punch_a_direct_channel_and_carry_64_mib_each_way() {
    let rig_start = Instant::now();
    let Some(t) = Behind::new([NatKind::EndpointIndependent, NatKind::EndpointIndependent]).await
    else {
        return;
    };
    let start = Instant::now();
    eprintln!(
        "nat_punch: rig and both sites up in {:?}",
        start - rig_start
    );
    let (api_a, api_b) = (t.a.api().await, t.b.api().await);
    // Each learned its NAT's public address (not its private one) and the kind of mapping.
    for (api, host) in [(&api_a, &t.hosts[0]), (&api_b, &t.hosts[1])] {
        let public = host.nat().expect("behind a NAT").public_addr();
        wait_for(
            "the public address learned by STUN",
            WAIT,
            || t.diag(),
            async || {
                let site = api.site().await;
                let s = site.sockets.first()?;
                (s.public.starts_with(&format!("{public}:"))
                    && s.mode == "hole-punching"
                    && s.nat_mapping == "endpoint-independent")
                    .then_some(())
            },
        )
        .await;
    }
    // Exactly one punched channel: "a" sorts first, so only it dials b's punched socket.
    let first = wait_for(
        "a punched channel a -> b",
        WAIT,
        || t.diag(),
        async || {
            let routes = up_routes(&api_a, "b").await;
            (!routes.is_empty()).then_some(routes)
        },
    )
    .await;
    let to_first_channel = start.elapsed();
    assert_eq!(first, [v1::ChannelRoute::Punched], "{}", t.diag());
    assert_eq!(
        up_routes(&api_b, "a").await,
        [v1::ChannelRoute::Punched],
        "{}",
        t.diag()
    );
    let took = transfer_64_mib(&t).await;
    eprintln!(
        "nat_punch: first punched channel {to_first_channel:?} after both sites started; 64 MiB each way in {took:?}"
    );
    // Still one channel each way, and the owner refused no rendezvous.
    assert_eq!(up_routes(&api_a, "b").await.len(), 1, "{}", t.diag());
    assert_eq!(api_b.counter("punch_refused").await, 0, "{}", t.diag());
    // A punched path survives its NAT forgetting the mapping (conntrack flushed): the
    // keep-alives re-create it, or the channel is re-punched; new connections succeed.
    t.hosts[1].nat().expect("NAT").flush_conntrack();
    t.hosts[0].nat().expect("NAT").flush_conntrack();
    let mut s = connect_eventually(&t.local, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("no connection after the conntrack flush: {e}\n{}", t.diag()));
    s.write_all(b"x").await.unwrap();
    drop(s);
    wait_for(
        "a channel up again after the flush",
        Duration::from_secs(30),
        || t.diag(),
        async || (!up_routes(&api_a, "b").await.is_empty()).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_nats_are_reported_as_unpunchable_without_spinning() {
    let Some(t) = Behind::new([NatKind::PerDestination, NatKind::PerDestination]).await else {
        return;
    };
    let api_a = t.a.api().await;
    // a dials b's punched socket and says why it cannot.
    let dial = wait_for(
        "a dial to b that reports it cannot punch",
        WAIT,
        || t.diag(),
        async || {
            api_a
                .channels()
                .await
                .into_iter()
                .find(|c| c.peer == "b" && c.last_error.contains("cannot punch"))
        },
    )
    .await;
    assert_eq!(dial.route(), v1::ChannelRoute::Punched, "{}", t.diag());
    assert_eq!(dial.state(), v1::ChannelState::Connecting, "{}", t.diag());
    // Backing off, not spinning: over 10 s the attempts grow slowly.
    let attempts = |c: &[v1::Channel]| {
        c.iter()
            .find(|c| c.peer == "b")
            .map_or(0, |c| c.reconnect_attempts)
    };
    let before = attempts(&api_a.channels().await);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = attempts(&api_a.channels().await);
    assert!(
        after > before && after - before <= 6,
        "attempts went from {before} to {after} in 10 s\n{}",
        t.diag()
    );
    assert!(up_routes(&api_a, "b").await.is_empty(), "{}", t.diag());
}

/// Waits until `a` has a punched channel up to `b`; returns how long it took.
async fn punched_channel(t: &Behind, api_a: &Api, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_for(
        "a punched channel a -> b",
        timeout,
        || t.diag(),
        async || {
            up_routes(api_a, "b")
                .await
                .contains(&v1::ChannelRoute::Punched)
                .then_some(())
        },
    )
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_only_site_behind_a_nat_reaches_a_punched_site() {
    let Some(t) = Behind::with(
        [NatKind::EndpointIndependent, NatKind::EndpointIndependent],
        false,
        false,
    )
    .await
    else {
        return;
    };
    let api_a = t.a.api().await;
    // No socket of its own: its dial socket learns its mapping from b's announced STUN servers.
    assert!(api_a.site().await.sockets.is_empty(), "{}", t.diag());
    let took = punched_channel(&t, &api_a, WAIT).await;
    eprintln!("nat_punch: dial-only site punched in {took:?}");
    exchange(&t, b"ping").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nat_that_changes_its_public_address_is_followed() {
    let Some(t) = Behind::new([NatKind::EndpointIndependent, NatKind::EndpointIndependent]).await
    else {
        return;
    };
    let (api_a, api_b) = (t.a.api().await, t.b.api().await);
    punched_channel(&t, &api_a, WAIT).await;
    let nat_b = t.hosts[1].nat().expect("NAT");
    let new_ip = nat_b.change_public_addr();
    let changed = Instant::now();
    // b learns its new address by STUN and announces it; a punches toward it.
    wait_for(
        "b's new public address",
        Duration::from_secs(60),
        || t.diag(),
        async || {
            let site = api_b.site().await;
            site.sockets
                .first()
                .is_some_and(|s| s.public.starts_with(&format!("{new_ip}:")))
                .then_some(())
        },
    )
    .await;
    wait_for(
        "a channel to b through b's new address",
        Duration::from_secs(60),
        || t.diag(),
        async || {
            api_a
                .channels()
                .await
                .into_iter()
                .find(|c| {
                    c.peer == "b"
                        && c.state() == v1::ChannelState::Up
                        && c.remote_addr.starts_with(&format!("{new_ip}:"))
                })
                .map(|_| ())
        },
    )
    .await;
    eprintln!(
        "nat_punch: re-punched through a new public address in {:?}",
        changed.elapsed()
    );
    exchange(&t, b"pong").await;
}

/// A relayed channel comes up where punching cannot work, carries 64 MiB each way
/// byte-exact, and is shown as relayed on both sides.
async fn relays_when_punching_cannot_work(kinds: [NatKind; 2]) {
    let Some(t) = Behind::with(kinds, true, true).await else {
        return;
    };
    let (api_a, api_b) = (t.a.api().await, t.b.api().await);
    let start = Instant::now();
    wait_for(
        "a relayed channel a -> b",
        WAIT,
        || t.diag(),
        async || {
            up_routes(&api_a, "b")
                .await
                .contains(&v1::ChannelRoute::Relayed)
                .then_some(())
        },
    )
    .await;
    let first = start.elapsed();
    assert_eq!(
        up_routes(&api_b, "a").await,
        [v1::ChannelRoute::Relayed],
        "{}",
        t.diag()
    );
    let took = transfer_64_mib(&t).await;
    eprintln!("nat_relay {kinds:?}: first relayed channel {first:?}; 64 MiB each way in {took:?}");
    assert_eq!(api_b.counter("punch_refused").await, 0, "{}", t.diag());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_nats_on_both_sides_relay_through_turn() {
    relays_when_punching_cannot_work([NatKind::PerDestination, NatKind::PerDestination]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_per_destination_nat_relays_through_turn() {
    relays_when_punching_cannot_work([NatKind::EndpointIndependent, NatKind::PerDestination]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_stun_detect_finds_a_public_sites_own_address() {
    let Some(rig) = Rig::new() else {
        return;
    };
    let stun = rig.stun().await;
    let broker = rig.embedded_broker().await;
    let host = rig.public_site();
    let port = free_udp_port();
    let net = Net::new(broker.url());
    let site = net
        .site("p")
        .netns(host.netns())
        .local_sockets(vec![json!({
            "mode": "dedicated-address", "publicAddress": "autoStunDetect",
            "listenPort": port, "stunDetector": { "servers": stun.servers() }
        })])
        .spawn()
        .await;
    let api = site.api().await;
    let expected = format!("{}:{port}", host.addr());
    wait_for(
        "the address STUN saw",
        WAIT,
        || diag(&[&site]),
        async || {
            let s = api.site().await.sockets.into_iter().next()?;
            // No NAT: the mapping is the socket itself, the same toward both servers.
            (s.public == expected && s.nat_mapping == "endpoint-independent" && s.auto_detect)
                .then_some(())
        },
    )
    .await;
}

/// Drops UDP from `from` arriving at `nat` (before conntrack sees it), or lifts that.
fn block_udp_from(nat: &Nat, from: std::net::Ipv4Addr, block: bool) {
    let nft = natrig::netns::tool("nft").expect("nft");
    let script = if block {
        format!(
            "add table ip cut\nadd chain ip cut pre {{ type filter hook prerouting priority -300; }}\n\
             add rule ip cut pre ip saddr {from} meta l4proto udp drop\n"
        )
    } else {
        "delete table ip cut\n".to_owned()
    };
    let ns = nat.netns();
    ns.try_exec(&nft, &["-f", "-"], Some(script.as_bytes()))
        .unwrap_or_else(|e| panic!("nft in {}: {e}", ns.name()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_channel_gives_way_to_a_punched_one_once_punching_works() {
    let Some(t) = Behind::with(
        [NatKind::EndpointIndependent, NatKind::EndpointIndependent],
        true,
        true,
    )
    .await
    else {
        return;
    };
    let (nat_a, nat_b) = (
        t.hosts[0].nat().expect("NAT"),
        t.hosts[1].nat().expect("NAT"),
    );
    // The direct path between the two NATs is cut; the relay still reaches both.
    block_udp_from(nat_b, nat_a.public_addr(), true);
    let api_a = t.a.api().await;
    // Punching fails (handshake timeouts) three times, then the relay carries the channel.
    let start = Instant::now();
    wait_for(
        "a relayed channel after failed punches",
        Duration::from_secs(60),
        || t.diag(),
        async || (up_routes(&api_a, "b").await == [v1::ChannelRoute::Relayed]).then_some(()),
    )
    .await;
    let relayed_after = start.elapsed();
    // The path heals: within one upgrade period a punched channel takes over and the
    // idle relayed one closes.
    block_udp_from(nat_b, nat_a.public_addr(), false);
    let healed = Instant::now();
    wait_for(
        "the punched channel replacing the relayed one",
        Duration::from_secs(60),
        || t.diag(),
        async || (up_routes(&api_a, "b").await == [v1::ChannelRoute::Punched]).then_some(()),
    )
    .await;
    eprintln!(
        "nat_relay: relayed after {relayed_after:?} of failed punching; punched again {:?} after the path healed",
        healed.elapsed()
    );
    exchange(&t, b"up").await;
}
