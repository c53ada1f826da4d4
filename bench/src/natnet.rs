//! Two-site tunnels on the e2e crate's real-NAT rig (`wovenet_e2e::natrig`): one rig per run
//! with coturn STUN and TURN and a broker-only wovenetd in its servers namespace, and per
//! [`NatPath`] two sites in namespaces of their own: public on the rig's internet segment
//! (`direct`), each behind an endpoint-independent NAT (`punched`), or each behind a
//! per-destination NAT with the dialled site offering the rig's TURN relay (`relayed`). A
//! tunnel is ready once the dialling site's control API lists exactly one channel up to the
//! other, by the path's route, and an echo went through it; how long the first channel took
//! is measured on the way.
//!
//! The rig is test support and panics when a set-up step fails: every call into it goes
//! through [`guard`] or [`guard_task`], so a panic becomes this scenario's error (the runner
//! goes on), and its `Drop` removes the namespaces and what runs in them either way.
//! No wovenet logic: sites are configured through their YAML only.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wovenet_e2e::natrig::{
    BRIDGE, Host, NatKind, Rig, StunServer, TurnCredentials, TurnServer, plan,
};
use wovenet_proto::v1::ChannelRoute;

use crate::control::{self, Channels};
use crate::daemon::{self, APP_NAME, Broker, READY, SiteProcess, SiteSpec, TurnRelay};
use crate::error::{BenchError, IoContext};
use crate::load::{BenchServer, Target};
use crate::wanem::{ADDR_A, ADDR_B, Wanem, WanemConfig};

/// Site `b`'s QUIC port on a public host (dedicated-address socket).
const QUIC_PORT: u16 = 4433;
/// The app server in site `b`'s namespace (all addresses: loopback for the site, the
/// public address for plain TCP across the rig).
const APP_PORT: u16 = 5001;
/// Site `a`'s local socket for the remote app, on its namespace's loopback.
const ENTRY_PORT: u16 = 5000;
/// The dialling site (its name sorts first, so it is the one that dials a punched socket).
pub const SITE_A: &str = "bench-a";
/// The dialled site: listens (or punches) and exposes the app.
pub const SITE_B: &str = "bench-b";
/// How often the control API is asked while a tunnel comes up.
const POLL: Duration = Duration::from_millis(10);

/// How the two sites of a tunnel reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatPath {
    /// Both public on the rig's internet segment; `b` has a dedicated-address socket, `a`
    /// dials it. No NAT.
    Direct,
    /// Each behind its own endpoint-independent NAT (nftables `masquerade`), both with a
    /// hole-punching socket: the channel is punched.
    Punched,
    /// Each behind its own per-destination NAT (`masquerade random,fully-random`), both with
    /// a hole-punching socket, `b` offering the rig's TURN relay: the channel is relayed.
    Relayed,
}

impl NatPath {
    /// Every path, direct first (the baseline of the others).
    pub const ALL: [Self; 3] = [Self::Direct, Self::Punched, Self::Relayed];

    /// `direct`, `punched` or `relayed`: also the route the channel must have.
    pub fn name(self) -> &'static str {
        control::route_name(self.route())
    }

    /// The route the control API must show for the tunnel's channel.
    pub fn route(self) -> ChannelRoute {
        match self {
            Self::Direct => ChannelRoute::Direct,
            Self::Punched => ChannelRoute::Punched,
            Self::Relayed => ChannelRoute::Relayed,
        }
    }

    /// The kind of NAT in front of each site; `None`: public.
    pub fn nat(self) -> Option<NatKind> {
        match self {
            Self::Direct => None,
            Self::Punched => Some(NatKind::EndpointIndependent),
            Self::Relayed => Some(NatKind::PerDestination),
        }
    }
}

/// Packet counters of a site's channels toward its peer (the control API's `sent_packets`
/// and `lost_packets`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packets {
    /// Packets sent.
    pub sent: u64,
    /// Of those, declared lost.
    pub lost: u64,
}

impl Packets {
    /// The sums over the channels up toward `peer`.
    pub fn of(channels: &[wovenet_proto::v1::Channel], peer: &str) -> Self {
        channels
            .iter()
            .filter(|c| c.peer == peer && c.state() == wovenet_proto::v1::ChannelState::Up)
            .fold(Self::default(), |acc, c| Self {
                sent: acc.sent + c.sent_packets,
                lost: acc.lost + c.lost_packets,
            })
    }

    /// What was counted between `earlier` and `self` (a replaced channel restarts its
    /// counters: never negative).
    pub fn since(self, earlier: Self) -> Self {
        Self {
            sent: self.sent.saturating_sub(earlier.sent),
            lost: self.lost.saturating_sub(earlier.lost),
        }
    }

    /// Adds `other`.
    pub fn plus(self, other: Self) -> Self {
        Self {
            sent: self.sent + other.sent,
            lost: self.lost + other.lost,
        }
    }

    /// Lost packets in percent of those sent (0 when none were sent).
    pub fn loss_pct(self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 / self.sent as f64 * 100.0
        }
    }
}

/// `RcvbufErrors` of the `Udp:` lines of `/proc/net/snmp` (a header line naming the
/// fields, then one with the values).
pub fn udp_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Whether the channels up toward the peer are exactly one, by `route`.
pub fn settled(up: &[ChannelRoute], route: ChannelRoute) -> bool {
    up == [route]
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

/// Runs a set-up step of the rig, turning its panic into an error.
pub fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, BenchError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| BenchError::Rig(format!("{what}: {}", panic_text(&*p))))
}

/// Runs an async set-up step of the rig on its own task, turning its panic into an error.
pub async fn guard_task<T: Send + 'static>(
    what: &str,
    step: impl Future<Output = T> + Send + 'static,
) -> Result<T, BenchError> {
    tokio::spawn(step).await.map_err(|e| {
        let why = if e.is_panic() {
            panic_text(&*e.into_panic())
        } else {
            e.to_string()
        };
        BenchError::Rig(format!("{what}: {why}"))
    })
}

/// The rig with its servers: STUN on 198.18.0.2 and .3, TURN on .4, the broker on
/// 198.18.0.2:1883. Dropping it stops them and deletes every namespace of the rig.
pub struct NatNet {
    topic_tag: u64,
    /// WAN links inserted so far (numbers their addresses and devices).
    wans: AtomicU8,
    stun: StunServer,
    turn: TurnServer,
    broker: SiteProcess,
    // Last: its Drop kills whatever still runs in its namespaces, then deletes them.
    rig: Arc<Rig>,
}

impl std::fmt::Debug for NatNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatNet")
            .field("namespaces", &self.rig.names())
            .finish_non_exhaustive()
    }
}

impl NatNet {
    /// Builds the rig and starts its servers (`bin` is the broker). `Ok(None)`: the machine
    /// lacks root, `ip`, `nft`, `conntrack` or coturn and no env var demands them (the rig
    /// printed which); with `WOVENET_REQUIRE_ROOT=1` / `WOVENET_REQUIRE_COTURN=1` set, a
    /// missing one is an error.
    pub async fn start(bin: &Path) -> Result<Option<Self>, BenchError> {
        let Some(rig) = guard("creating the rig", Rig::new)? else {
            return Ok(None);
        };
        let rig = Arc::new(rig);
        let r = Arc::clone(&rig);
        let stun = guard_task("starting coturn (STUN)", async move { r.stun().await }).await?;
        let r = Arc::clone(&rig);
        let turn = guard_task("starting coturn (TURN)", async move { r.turn().await }).await?;
        let broker_spec = SiteSpec::new(
            "bench-broker",
            "wovenet-bench/broker-only",
            Broker::Embedded(plan::broker()),
        );
        let mut broker = SiteProcess::spawn(bin, &broker_spec, Some(rig.servers().name()))?;
        let probe = Target::direct(plan::broker()).in_netns(rig.servers().name());
        let start = Instant::now();
        loop {
            if let Some(status) = broker.exited() {
                return Err(BenchError::Site {
                    site: broker.name().to_owned(),
                    reason: format!("exited ({status})\n{}", broker.log_tail(30)),
                });
            }
            if probe.connect().await.is_ok() {
                break;
            }
            if start.elapsed() > READY {
                return Err(BenchError::Site {
                    site: broker.name().to_owned(),
                    reason: format!(
                        "the broker does not accept on {} after {:?}\n{}",
                        plan::broker(),
                        READY,
                        broker.log_tail(30)
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(Some(Self {
            topic_tag: rand::random(),
            wans: AtomicU8::new(0),
            stun,
            turn,
            broker,
            rig,
        }))
    }

    /// The TURN relay's process id.
    pub fn turn_pid(&self) -> u32 {
        self.turn.pid()
    }

    /// UDP datagrams the kernel dropped so far in the servers namespace because a socket's
    /// receive buffer was full (`Udp: RcvbufErrors`): on a relayed path, what coturn could
    /// not read in time. `None` if unreadable.
    pub fn relay_drops(&self) -> Option<u64> {
        // /proc/net follows the process's namespace; /proc/thread-self/net this thread's.
        let snmp = crate::wanem::netns::run_in(self.rig.servers().name(), || {
            std::fs::read_to_string("/proc/thread-self/net/snmp")
        })
        .ok()?
        .ok()?;
        udp_rcvbuf_errors(&snmp)
    }

    /// The rig's namespaces and NAT state, with the coturn logs: for error messages.
    pub fn diag(&self) -> String {
        format!(
            "{}{}\n{}\n{}",
            self.rig.diag(),
            self.stun.diag(),
            self.turn.diag(),
            self.broker.log_tail(10)
        )
    }

    /// Two hosts placed for `path`: public, or each behind a new NAT of the path's kind.
    fn hosts(&self, path: NatPath) -> Result<[Host; 2], BenchError> {
        let rig = &self.rig;
        guard(
            &format!("placing the {} sites", path.name()),
            || match path.nat() {
                None => [rig.public_site(), rig.public_site()],
                Some(kind) => {
                    let (na, nb) = (rig.nat(kind), rig.nat(kind));
                    [rig.site_behind(&na), rig.site_behind(&nb)]
                }
            },
        )
    }

    /// Puts an emulated WAN link ([`Wanem`] with `config`) between `host`'s side of the
    /// internet (the host itself when public, else its NAT) and the rest of the rig:
    ///
    /// ```text
    /// side ── uplink ── [emulator ns A] ═ emulated link ═ [ns B] ── wanN ── internet bridge
    /// ```
    ///
    /// The side keeps its address and its on-link /15: ns A answers its ARP for the rest of
    /// the internet (proxy ARP) and routes it over the link; ns B does the same for the
    /// side's address on the bridge. Everything the side exchanges (QUIC, MQTT, STUN, TURN)
    /// crosses the link. Dropping the returned emulator removes the link (and the side's
    /// uplink with it).
    fn insert_wan(&self, host: &Host, config: &WanemConfig) -> Result<Wanem, BenchError> {
        let (side, side_addr) = match host.nat() {
            Some(nat) => (nat.netns().clone(), nat.public_addr()),
            None => (host.netns().clone(), host.addr()),
        };
        let port = guard("finding the uplink", || self.rig.uplink(&side))?.ok_or_else(|| {
            BenchError::Rig(format!(
                "{} has no link to the internet bridge",
                side.name()
            ))
        })?;
        let n = self.wans.fetch_add(1, Ordering::Relaxed);
        // 198.18.4.0/24 is not in the rig's plan: addresses of the emulator's two ends.
        let (addr_a, addr_b) = (
            Ipv4Addr::new(198, 18, 4, n.wrapping_mul(2).wrapping_add(1)),
            Ipv4Addr::new(198, 18, 4, n.wrapping_mul(2).wrapping_add(2)),
        );
        let wan = Wanem::start(config.clone())?;
        let (ns_a, ns_b) = (wan.ns_a(), wan.ns_b());
        let (to_b, from_b) = (format!("to-w{n:02x}"), format!("wan{n:02x}"));
        let internet = self.rig.internet().clone();
        guard("moving the uplink into the emulator", || {
            internet.ip_batch(&[
                format!("link set {port} netns {}", ns_a.name()),
                format!(
                    "link add {to_b} type veth peer name {from_b} netns {}",
                    ns_b.name()
                ),
                format!("link set {to_b} master {BRIDGE} up"),
            ]);
        })?;
        ns_a.ip(&["addr", "add", &format!("{addr_a}/32"), "dev", &port])?;
        ns_a.ip(&["link", "set", &port, "up"])?;
        ns_a.ip(&["route", "add", &format!("{side_addr}/32"), "dev", &port])?;
        ns_a.ip(&["route", "add", "198.18.0.0/15", "via", &ADDR_B.to_string()])?;
        ns_b.ip(&[
            "addr",
            "add",
            &format!("{addr_b}/{}", plan::INTERNET_PREFIX),
            "dev",
            &from_b,
        ])?;
        ns_b.ip(&["link", "set", &from_b, "up"])?;
        ns_b.ip(&[
            "route",
            "add",
            &format!("{side_addr}/32"),
            "via",
            &ADDR_A.to_string(),
        ])?;
        for (ns, dev) in [(ns_a, &port), (ns_b, &from_b)] {
            let keys = [
                ("net/ipv4/ip_forward".to_owned(), "1"),
                (format!("net/ipv4/conf/{dev}/proxy_arp"), "1"),
                ("net/ipv4/conf/all/rp_filter".to_owned(), "0"),
                (format!("net/ipv4/conf/{dev}/rp_filter"), "0"),
                // Proxy ARP answers after a random delay of up to 0.8 s by default: that
                // would be counted in the time to the first channel.
                (format!("net/ipv4/neigh/{dev}/proxy_delay"), "0"),
            ];
            ns.run(|| {
                keys.iter().try_for_each(|(k, v)| {
                    std::fs::write(Path::new("/proc/sys").join(k), v)
                        .map_err(|e| format!("{k}: {e}"))
                })
            })?
            .map_err(|why| BenchError::Rig(format!("{}: {why}", ns.name())))?;
        }
        Ok(wan)
    }

    /// Starts the two sites of `path` (`bin` for both) and the app server, and waits until
    /// the tunnel is ready (see the module doc), up to `ready`. With `wan`, the dialling
    /// site's side of the internet (the site when public, else its NAT) reaches the rest
    /// through an emulated link first: its uplink moves into the emulator's namespace A,
    /// namespace B joins the internet bridge, and both answer ARP for the other side.
    pub async fn tunnel(
        &self,
        bin: &Path,
        path: NatPath,
        wan: Option<&WanemConfig>,
        ready: Duration,
    ) -> Result<NatTunnel, BenchError> {
        let [host_a, host_b] = self.hosts(path)?;
        let wan = match wan {
            Some(config) => Some(self.insert_wan(&host_a, config)?),
            None => None,
        };
        let (ns_a, ns_b) = (host_a.name().to_owned(), host_b.name().to_owned());
        let server =
            BenchServer::bind_in(&ns_b, SocketAddr::from((Ipv4Addr::UNSPECIFIED, APP_PORT)))
                .ctx(|| format!("starting the app server in {ns_b}"))?;
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let entry = SocketAddr::new(lo, ENTRY_PORT);
        let public_b = IpAddr::V4(host_b.addr());
        let punch = (path != NatPath::Direct).then(|| self.stun.addrs().to_vec());
        let creds: &TurnCredentials = self.turn.credentials();
        // A topic per start: a stopped pair's retained announcements must not reach the next.
        let topic = format!(
            "wovenet-bench/nat-{:016x}-{}-{:08x}",
            self.topic_tag,
            path.name(),
            rand::random::<u32>()
        );
        let spec = |name: &str| SiteSpec {
            hole_punching: punch.clone(),
            ..SiteSpec::new(name, topic.clone(), Broker::At(plan::broker()))
        };
        let spec_b = SiteSpec {
            sockets: if path == NatPath::Direct {
                vec![(public_b, SocketAddr::new(public_b, QUIC_PORT))]
            } else {
                vec![]
            },
            exposed: vec![(APP_NAME.into(), SocketAddr::new(lo, APP_PORT))],
            turn: (path == NatPath::Relayed).then(|| TurnRelay {
                url: self.turn.url(),
                username: creds.username.clone(),
                password: creds.password.clone(),
            }),
            ..spec(SITE_B)
        };
        let spec_a = SiteSpec {
            remotes: vec![(SITE_B.into(), APP_NAME.into(), entry)],
            ..spec(SITE_A)
        };
        let start = Instant::now();
        let b = SiteProcess::spawn(bin, &spec_b, Some(&ns_b))?;
        let a = SiteProcess::spawn(bin, &spec_a, Some(&ns_a))?;
        let mut tunnel = NatTunnel {
            path,
            entry: Target::direct(entry).in_netns(&ns_a),
            plain: (path == NatPath::Direct)
                .then(|| Target::direct(SocketAddr::new(public_b, APP_PORT)).in_netns(&ns_a)),
            server,
            first_channel: Duration::ZERO,
            a,
            b,
            _wan: wan,
        };
        match tunnel.wait_ready(start, ready).await {
            Ok(first) => {
                tunnel.first_channel = first;
                Ok(tunnel)
            }
            Err(why) => Err(BenchError::Site {
                site: SITE_A.into(),
                reason: format!(
                    "{} tunnel: {why}\n{}\n{}\n{}",
                    path.name(),
                    tunnel.a.log_tail(30),
                    tunnel.b.log_tail(30),
                    self.diag()
                ),
            }),
        }
    }
}

/// Two sites forwarding the app over one channel of a [`NatPath`]; dropping it kills them.
#[derive(Debug)]
pub struct NatTunnel {
    path: NatPath,
    /// The dialling site (runs the app's local socket).
    pub a: SiteProcess,
    /// The dialled site (exposes the app).
    pub b: SiteProcess,
    entry: Target,
    plain: Option<Target>,
    server: BenchServer,
    first_channel: Duration,
    // After the sites (fields drop in order): the link goes once they are stopped.
    _wan: Option<Wanem>,
}

impl NatTunnel {
    /// Polls `a`'s control API from `start` (when the sites were spawned) until its first
    /// channel to `b` is up (that time is returned), the channels up are exactly one by the
    /// path's route, and an echo goes through; `Err` says what was last seen.
    async fn wait_ready(&mut self, start: Instant, timeout: Duration) -> Result<Duration, String> {
        let socket = self.a.control_socket();
        let mut api = Channels::default();
        let mut first = None;
        let mut last = String::from("no answer from the control API yet");
        let route = self.path.route();
        let mut up_as_expected = false;
        while !up_as_expected && start.elapsed() < timeout {
            for site in [&mut self.a, &mut self.b] {
                if let Some(status) = site.exited() {
                    return Err(format!("site {} exited ({status})", site.name()));
                }
            }
            match api.list(&socket).await {
                Ok(channels) => {
                    let up = control::up_routes(&channels, SITE_B);
                    if !up.is_empty() && first.is_none() {
                        first = Some(start.elapsed());
                    }
                    up_as_expected = settled(&up, route);
                    last = format!(
                        "channels up to {SITE_B}: {} (waiting for exactly one {})",
                        control::routes_text(&up),
                        self.path.name()
                    );
                }
                Err(e) => last = e,
            }
            if !up_as_expected {
                tokio::time::sleep(POLL).await;
            }
        }
        let Some(first) = first.filter(|_| up_as_expected) else {
            return Err(format!("not ready within {timeout:?}; last: {last}"));
        };
        while start.elapsed() < timeout {
            match tokio::time::timeout(Duration::from_secs(3), self.entry.echo_once()).await {
                Ok(Ok(_)) => return Ok(first),
                Ok(Err(e)) => last = format!("echo through the tunnel: {e}"),
                Err(_) => last = "echo through the tunnel timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "channel up but no echo within {timeout:?}; last: {last}"
        ))
    }

    /// The path.
    pub fn path(&self) -> NatPath {
        self.path
    }

    /// From spawning both sites to the dialling site's first channel up.
    pub fn first_channel(&self) -> Duration {
        self.first_channel
    }

    /// Where clients connect (in `a`'s namespace) to reach the app through the tunnel.
    pub fn entry(&self) -> &Target {
        &self.entry
    }

    /// Plain TCP from `a`'s namespace to the app across the rig, no tunnel (public hosts
    /// only: `None` behind NATs, which drop what the internet opens).
    pub fn plain_tcp(&self) -> Option<&Target> {
        self.plain.as_ref()
    }

    /// The app server's counter of bytes received by sink connections.
    pub fn sink(&self) -> Arc<AtomicU64> {
        self.server.received()
    }

    /// `a`'s channels up to `b` now, as routes.
    pub async fn up_routes(&self) -> Result<Vec<ChannelRoute>, BenchError> {
        let channels = Channels::default()
            .list(&self.a.control_socket())
            .await
            .map_err(|reason| BenchError::Site {
                site: SITE_A.into(),
                reason,
            })?;
        Ok(control::up_routes(&channels, SITE_B))
    }

    /// Packets sent and lost so far on the channels up between the sites, as `a` and `b`
    /// count them (the sender's count says how lossy the path was).
    pub async fn packets(&self) -> Result<[Packets; 2], BenchError> {
        let mut out = [Packets::default(); 2];
        for (slot, (site, peer)) in out.iter_mut().zip([(&self.a, SITE_B), (&self.b, SITE_A)]) {
            let channels = Channels::default()
                .list(&site.control_socket())
                .await
                .map_err(|reason| BenchError::Site {
                    site: site.name().to_owned(),
                    reason,
                })?;
            *slot = Packets::of(&channels, peer);
        }
        Ok(out)
    }

    /// Keeps both sites' files and describes them with their log tails.
    pub fn post_mortem(&mut self) -> String {
        daemon::keep_both(&mut self.a, &mut self.b)
    }

    /// Stops both sites cleanly.
    pub async fn stop(self) -> Result<(), BenchError> {
        daemon::stop_both(self.a, self.b).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_is_settled_on_exactly_one_channel_of_its_route() {
        let (d, p, r) = (
            ChannelRoute::Direct,
            ChannelRoute::Punched,
            ChannelRoute::Relayed,
        );
        assert!(settled(&[p], p));
        assert!(!settled(&[], p));
        assert!(!settled(&[r], p), "a relayed channel is not a punched one");
        assert!(!settled(&[p, p], p), "two channels: not the one measured");
        assert!(!settled(&[r, p], r));
        assert!(settled(&[d], NatPath::Direct.route()));
    }

    #[test]
    fn packet_counts_sum_the_channels_up_toward_the_peer() {
        use wovenet_proto::v1::{Channel, ChannelState};
        let ch = |peer: &str, state, sent, lost| {
            let mut c = Channel {
                peer: peer.into(),
                sent_packets: sent,
                lost_packets: lost,
                ..Channel::default()
            };
            c.set_state(state);
            c
        };
        let list = [
            ch("b", ChannelState::Up, 1000, 10),
            ch("b", ChannelState::Connecting, 50, 50),
            ch("c", ChannelState::Up, 7, 7),
            ch("b", ChannelState::Up, 1000, 0),
        ];
        let now = Packets::of(&list, "b");
        assert_eq!(
            now,
            Packets {
                sent: 2000,
                lost: 10
            }
        );
        let delta = now.since(Packets {
            sent: 1000,
            lost: 2,
        });
        assert_eq!(
            delta,
            Packets {
                sent: 1000,
                lost: 8
            }
        );
        assert_eq!(delta.loss_pct(), 0.8);
        assert_eq!(Packets::default().loss_pct(), 0.0);
        assert_eq!(
            Packets { sent: 5, lost: 0 }.since(now),
            Packets::default(),
            "a replaced channel's counters restart"
        );
        assert_eq!(
            delta.plus(delta),
            Packets {
                sent: 2000,
                lost: 16
            }
        );
    }

    #[test]
    fn receive_buffer_drops_are_read_from_the_udp_lines() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 49089 2 45629 49091 45629 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 7 0\n";
        assert_eq!(udp_rcvbuf_errors(snmp), Some(45629));
        assert_eq!(udp_rcvbuf_errors("Udp: InDatagrams\nUdp: 1\n"), None);
        assert_eq!(udp_rcvbuf_errors(""), None);
    }

    #[test]
    fn paths_name_their_route_and_their_nats() {
        let names: Vec<&str> = NatPath::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["direct", "punched", "relayed"]);
        assert_eq!(NatPath::Direct.nat(), None);
        assert_eq!(NatPath::Punched.nat(), Some(NatKind::EndpointIndependent));
        assert_eq!(NatPath::Relayed.nat(), Some(NatKind::PerDestination));
    }

    #[test]
    fn a_panicking_step_becomes_an_error_naming_it() {
        let r = guard("placing", || -> u8 { panic!("nft failed: {}", 7) });
        let Err(BenchError::Rig(why)) = r else {
            panic!("expected a rig error, got {r:?}")
        };
        assert_eq!(why, "placing: nft failed: 7");
        assert_eq!(guard("ok", || 3).ok(), Some(3));
    }
}
