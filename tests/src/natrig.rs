//! A real-NAT test rig: network namespaces wired into a small internet with NATs (Linux
//! nftables masquerade and conntrack), a servers namespace (MQTT broker, coturn STUN and TURN)
//! and site namespaces where wovenetd runs (`SiteBuilder::netns`). It builds and tears down
//! topology and runs the operations a NAT test needs; it holds no wovenet logic.
//!
//! ```text
//!                      rig "internet": namespace `…i`, bridge br0, 198.18.0.0/15 on-link
//!   ┌──────────────────────────┬───────────────────────┬──────────────────┬──────────────┐
//!   │ wan0                     │ wan0                  │ wan0             │ eth0         │
//! servers `…v`              NAT 1 `…n01`            NAT 2 `…n02`       public site  `…sNN`
//!  198.18.0.2  STUN #1,      198.18.1.1              198.18.1.2         198.18.2.J
//!              broker :1883  (nft masquerade,        (kind chosen per
//!  198.18.0.3  STUN #2        conntrack)              NAT)
//!  198.18.0.4  TURN            │ lan0 (bridge)          │ lan0
//!                             10.1.0.1/24             10.2.0.1/24
//!                            ┌─┴──────────┐           ┌─┴──────────┐
//!                           site `…s00`  site …      site `…s01`   …   (sites: `…sNN`,
//!                           10.1.0.2     10.1.0.3    10.2.0.2
//!                           default via 10.1.0.1     default via 10.2.0.1   in creation order)
//! ```
//!
//! - Every namespace is `wnr<pid hex>-<rig hex><role>` (≤ 15 bytes; see [`netns`]); the
//!   address plan is in [`plan`]. Each rig is a world of its own (no link to the host or to
//!   another rig), so rigs use the same addresses and run in parallel without a lock; only
//!   their names differ (creator pid + a per-process rig counter).
//! - A site behind a NAT reaches other private segments only through the NATs: its NAT has no
//!   route to another 10.x, and NATs drop what the internet opens towards them.
//! - Nothing leaves the rig: no namespace has a route out of 198.18.0.0/15 and its own 10.K.
//!
//! NAT kinds ([`NatKind`], per NAT):
//! - `EndpointIndependent` (`masquerade`): one public port per local socket for every
//!   destination, the local port itself when free; replies admitted only from where a packet
//!   went (port-restricted cone). Two of these punch.
//! - `PerDestination` (`masquerade random,fully-random`): a new random public port per
//!   destination ("symmetric"); two of these cannot be punched (relay instead).
//! - Both drop connections opened from the internet, like a home router's firewall; see
//!   [`nat::ruleset`] for why that also keeps punching independent of who sends first.
//!
//! Operations on a live NAT ([`Nat`]): `flush_conntrack` (mappings forgotten), `public_addr`,
//! `set_public_addr`/`change_public_addr` (new outside address + flush), `cut_udp`/`restore_udp`
//! (all UDP through it dropped), `set_udp_timeouts`, `mappings`/`diag`.
//!
//! Requirements: root, `ip`, `nft`, `conntrack` (skip without them, fail when
//! `WOVENET_REQUIRE_ROOT=1`) and coturn's `turnserver` (skip, fail when
//! `WOVENET_REQUIRE_COTURN=1`). [`Rig::new`] returns `None` when the test should skip.
//!
//! Cleanup: dropping the [`Rig`] (also while a test panics) kills what runs in its namespaces
//! and deletes them; each new rig first deletes namespaces whose creating process is dead
//! (a test binary killed outright leaves them behind). Processes started in a namespace also
//! die with the test process (`PR_SET_PDEATHSIG`).
//!
//! Adding a case (a test file under `tests/tests/`):
//! ```no_run
//! # async fn t() {
//! use wovenet_e2e::natrig::{NatKind, Rig};
//! use wovenet_e2e::*;
//! let Some(rig) = Rig::new() else { return }; // skipped (message printed)
//! let stun = rig.stun().await;                 // 198.18.0.2:3478 and 198.18.0.3:3478
//! let broker = rig.embedded_broker().await;    // mqtt://198.18.0.2:1883
//! let nat_a = rig.nat(NatKind::EndpointIndependent);
//! let nat_b = rig.nat(NatKind::PerDestination);
//! let (host_a, host_b) = (rig.site_behind(&nat_a), rig.site_behind(&nat_b));
//! let net = Net::new(broker.url());
//! let dir = socket_dir(); // app sockets: unix paths work across namespaces
//! let echo = EchoServer::unix(dir.path().join("echo.sock")).await;
//! let b = net.site("b").netns(&host_b).expose("echo", echo.sock()).spawn().await;
//! // … configure hole punching with stun.servers(), then act on the NATs while it runs:
//! nat_b.flush_conntrack();
//! nat_a.change_public_addr();
//! nat_a.cut_udp();
//! nat_a.restore_udp();
//! # drop((b, host_a, stun)); }
//! ```
//! Sockets for a test's own probes are made inside a namespace with [`Netns::udp`],
//! [`Netns::tcp_listener`] and [`Netns::tcp_connect`]; tools run there with [`Netns::exec`].

use std::net::Ipv4Addr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

pub mod coturn;
pub mod nat;
pub mod netns;
pub mod plan;
pub mod stun;

pub use coturn::{StunServer, TurnCredentials, TurnServer};
pub use nat::{Nat, NatKind};
pub use netns::Netns;

use crate::broker::Broker;

/// Env var: when `1`, missing root, `ip`, `nft` or `conntrack` fail the rig's tests.
pub const REQUIRE_ROOT_ENV: &str = "WOVENET_REQUIRE_ROOT";
/// Env var: when `1`, a missing coturn (`turnserver`) fails the rig's tests.
pub const REQUIRE_COTURN_ENV: &str = "WOVENET_REQUIRE_COTURN";

/// What to do about missing requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Everything is there.
    Run,
    /// Skip the test, saying why.
    Skip(String),
    /// Fail the test, saying why.
    Fail(String),
}

/// Decides from what is missing on each side and which env vars demand it.
pub fn decide(
    missing_root: &[&str],
    missing_coturn: &[&str],
    require_root: bool,
    require_coturn: bool,
) -> Decision {
    let root = (!missing_root.is_empty()).then(|| {
        format!(
            "the NAT rig needs root, ip, nft and conntrack (apt-get install iproute2 nftables \
             conntrack); missing: {}",
            missing_root.join(", ")
        )
    });
    let coturn = (!missing_coturn.is_empty()).then(|| {
        format!(
            "the NAT rig needs coturn (apt-get install coturn); missing: {}",
            missing_coturn.join(", ")
        )
    });
    match (root, coturn) {
        (Some(why), _) if require_root => Decision::Fail(format!(
            "{why} ({REQUIRE_ROOT_ENV}=1 is set: failing instead of skipping)"
        )),
        (_, Some(why)) if require_coturn => Decision::Fail(format!(
            "{why} ({REQUIRE_COTURN_ENV}=1 is set: failing instead of skipping)"
        )),
        (Some(why), _) => Decision::Skip(format!(
            "{why} (set {REQUIRE_ROOT_ENV}=1 to make this an error)"
        )),
        (None, Some(why)) => Decision::Skip(format!(
            "{why} (set {REQUIRE_COTURN_ENV}=1 to make this an error)"
        )),
        (None, None) => Decision::Run,
    }
}

/// Checks this machine: `true` to go on, `false` to skip (after an eprintln); panics when an
/// env var demands what is missing.
pub fn require() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut missing_root: Vec<&str> = Vec::new();
    if !root {
        missing_root.push("root");
    }
    missing_root.extend(
        ["ip", "nft", "conntrack"]
            .into_iter()
            .filter(|t| netns::tool(t).is_none()),
    );
    let missing_coturn: Vec<&str> = ["turnserver"]
        .into_iter()
        .filter(|t| netns::tool(t).is_none())
        .collect();
    let env = |k: &str| std::env::var(k).is_ok_and(|v| v == "1");
    match decide(
        &missing_root,
        &missing_coturn,
        env(REQUIRE_ROOT_ENV),
        env(REQUIRE_COTURN_ENV),
    ) {
        Decision::Run => true,
        Decision::Skip(why) => {
            eprintln!("skipping: {why}");
            false
        }
        Decision::Fail(why) => panic!("{why}"),
    }
}

/// A namespace where a site runs: behind a NAT, or public on the internet segment. Derefs to
/// its [`Netns`] (so `SiteBuilder::netns(&host)` and `host.udp(..)` work).
#[derive(Debug, Clone)]
pub struct Host {
    ns: Netns,
    addr: Ipv4Addr,
    nat: Option<Nat>,
}

impl Host {
    /// Its namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Its address (10.K.0.x behind NAT K, 198.18.2.x when public).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The NAT in front of it (`None` for a public site).
    pub fn nat(&self) -> Option<&Nat> {
        self.nat.as_ref()
    }
}

impl Deref for Host {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

/// What a rig has made so far (for naming, numbering and deletion).
#[derive(Debug, Default)]
struct Made {
    /// Every namespace, in creation order.
    namespaces: Vec<Netns>,
    nats: u8,
    sites: u8,
    /// Sites behind each NAT (index K-1).
    behind: Vec<u8>,
    public: u8,
    /// The NATs, for `diag`.
    nats_made: Vec<Nat>,
}

/// The rig: an internet segment and a servers namespace from the start; NATs, sites and servers
/// added by the test. Dropping it removes everything it made.
#[derive(Debug)]
pub struct Rig {
    id: u8,
    internet: Netns,
    servers: Netns,
    made: Mutex<Made>,
    renumbered: Arc<AtomicU32>,
}

/// The bridge of the internet namespace.
pub const BRIDGE: &str = "br0";

/// If br_netfilter is loaded on the host, bridged frames would also pass the netfilter hooks of
/// the namespace holding the bridge; a switch must stay a plain switch. Best effort: without
/// br_netfilter the file does not exist and there is nothing to turn off.
fn plain_bridges(ns: &Netns) {
    let _ = ns.run(|| std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "0"));
}

/// A new namespace for `role`, recorded in `made`.
fn create(made: &mut Made, id: u8, role: &str) -> Netns {
    let ns = Netns::create(netns::name(std::process::id(), id, role));
    made.namespaces.push(ns.clone());
    ns
}

/// A new namespace for `role`, linked to the `internet` bridge through its interface `iface`
/// holding `addrs` (/15 each).
fn attach(
    internet: &Netns,
    made: &mut Made,
    id: u8,
    role: &str,
    iface: &str,
    addrs: &[Ipv4Addr],
) -> Netns {
    let ns = create(made, id, role);
    let port = format!("to-{role}");
    internet.ip_batch(&[
        format!(
            "link add {port} type veth peer name {iface} netns {}",
            ns.name()
        ),
        format!("link set {port} master {BRIDGE} up"),
    ]);
    let mut lines: Vec<String> = addrs
        .iter()
        .map(|a| format!("addr add {a}/{} dev {iface}", plan::INTERNET_PREFIX))
        .collect();
    lines.push(format!("link set {iface} up"));
    ns.ip_batch(&lines);
    ns
}

impl Rig {
    /// Checks [`require`]ments (`None`: skip), removes namespaces left by dead test processes,
    /// then makes the internet segment and the servers namespace (with all server addresses).
    pub fn new() -> Option<Self> {
        if !require() {
            return None;
        }
        // The first sweep of a process also removes namespaces carrying its own pid (left by a
        // dead process that had the same pid); every other thread waits for it to finish, so
        // it can never remove a rig this process is building.
        static FIRST_SWEEP: Once = Once::new();
        static NEXT_ID: AtomicU8 = AtomicU8::new(0);
        let mut first = false;
        FIRST_SWEEP.call_once(|| {
            netns::sweep(true);
            first = true;
        });
        if !first {
            netns::sweep(false);
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut made = Made::default();
        let internet = create(&mut made, id, "i");
        // From here on the rig owns what exists, so a failing step still cleans up.
        let mut rig = Self {
            id,
            servers: internet.clone(),
            internet,
            made: Mutex::new(made),
            renumbered: Arc::new(AtomicU32::new(0)),
        };
        rig.internet.ip_batch(&[
            format!("link add {BRIDGE} type bridge"),
            format!("link set {BRIDGE} up"),
        ]);
        plain_bridges(&rig.internet);
        let servers = attach(
            &rig.internet,
            &mut rig.made(),
            id,
            "v",
            "wan0",
            &plan::SERVERS,
        );
        rig.servers = servers;
        Some(rig)
    }

    fn made(&self) -> MutexGuard<'_, Made> {
        self.made.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The internet segment's namespace (the bridge; nothing runs there).
    pub fn internet(&self) -> &Netns {
        &self.internet
    }

    /// The servers namespace (198.18.0.2, .3 and .4).
    pub fn servers(&self) -> &Netns {
        &self.servers
    }

    /// A new NAT of `kind` with an empty private segment 10.K.0.0/24 behind it.
    pub fn nat(&self, kind: NatKind) -> Nat {
        let k = {
            let mut made = self.made();
            assert!(
                made.nats < plan::MAX_NATS,
                "at most {} NATs per rig",
                plan::MAX_NATS
            );
            made.nats += 1;
            made.behind.push(0);
            made.nats
        };
        let ns = attach(
            &self.internet,
            &mut self.made(),
            self.id,
            &format!("n{k:02x}"),
            nat::WAN,
            &[plan::nat_public(k)],
        );
        ns.ip_batch(&[
            format!("link add {} type bridge", nat::LAN),
            format!(
                "addr add {}/{} dev {}",
                plan::nat_inside(k),
                plan::PRIVATE_PREFIX,
                nat::LAN
            ),
            format!("link set {} up", nat::LAN),
        ]);
        ns.sysctl("net/ipv4/ip_forward", "1");
        plain_bridges(&ns);
        let nat = Nat::new(ns, k, kind, self.renumbered.clone());
        nat.load_rules();
        self.made().nats_made.push(nat.clone());
        nat
    }

    fn next_site(&self) -> u8 {
        let mut made = self.made();
        assert!(
            made.sites < plan::MAX_SITES,
            "at most {} sites per rig",
            plan::MAX_SITES
        );
        made.sites += 1;
        made.sites - 1
    }

    /// A new site namespace on `nat`'s private segment (10.K.0.2, .3, …), default route via the
    /// NAT.
    pub fn site_behind(&self, nat: &Nat) -> Host {
        let k = nat.index();
        let j = {
            let mut made = self.made();
            assert!(
                made.namespaces.contains(nat.netns()),
                "NAT {} is not part of this rig",
                nat.netns().name()
            );
            let j = made.behind[usize::from(k) - 1];
            made.behind[usize::from(k) - 1] += 1;
            j
        };
        let addr = plan::site_private(k, j);
        let role = format!("s{:02x}", self.next_site());
        let ns = create(&mut self.made(), self.id, &role);
        let port = format!("to-{role}");
        nat.netns().ip_batch(&[
            format!(
                "link add {port} type veth peer name eth0 netns {}",
                ns.name()
            ),
            format!("link set {port} master {} up", nat::LAN),
        ]);
        ns.ip_batch(&[
            format!("addr add {addr}/{} dev eth0", plan::PRIVATE_PREFIX),
            "link set eth0 up".to_owned(),
            format!("route add default via {}", nat.inside_addr()),
        ]);
        Host {
            ns,
            addr,
            nat: Some(nat.clone()),
        }
    }

    /// A new site namespace attached to the internet directly (198.18.2.J, no NAT).
    pub fn public_site(&self) -> Host {
        let j = {
            let mut made = self.made();
            made.public += 1;
            made.public - 1
        };
        let addr = plan::public_site(j);
        let role = format!("s{:02x}", self.next_site());
        let ns = attach(
            &self.internet,
            &mut self.made(),
            self.id,
            &role,
            "eth0",
            &[addr],
        );
        Host {
            ns,
            addr,
            nat: None,
        }
    }

    /// The internet namespace's end of the veth that links `ns` (a NAT, a public site or the
    /// servers namespace of this rig) to the internet bridge, e.g. to move it elsewhere and put
    /// something (a WAN emulator) into that link. `None` for a namespace of another rig or
    /// one that is not on the internet segment (a site behind a NAT).
    pub fn uplink(&self, ns: &Netns) -> Option<String> {
        if !self.made().namespaces.contains(ns) {
            return None;
        }
        let role = ns
            .name()
            .strip_prefix(&netns::name(std::process::id(), self.id, ""))?;
        let port = format!("to-{role}");
        // `ip -o link show` lines: `7: to-s00@if2: <BROADCAST,…> …`.
        let links = self.internet.ip(&["-o", "link", "show"]);
        links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .any(|name| name.trim().split('@').next() == Some(port.as_str()))
            .then_some(port)
    }

    /// A STUN-only coturn on 198.18.0.2:3478 and 198.18.0.3:3478 (one process, both
    /// addresses), ready when it returns.
    pub async fn stun(&self) -> StunServer {
        StunServer::start(&self.servers, &plan::SERVERS[..2]).await
    }

    /// A TURN relay on 198.18.0.4:3478 with [`TurnCredentials::default`], ready when it returns.
    pub async fn turn(&self) -> TurnServer {
        self.turn_with(TurnCredentials::default()).await
    }

    /// A TURN relay on 198.18.0.4:3478 with `creds`.
    pub async fn turn_with(&self, creds: TurnCredentials) -> TurnServer {
        TurnServer::start(&self.servers, plan::SERVERS[2], creds).await
    }

    /// mosquitto on 198.18.0.2:1883 in the servers namespace (`None`: not installed, skip).
    pub async fn mosquitto(&self) -> Option<Broker> {
        Broker::mosquitto_in(&self.servers, plan::broker()).await
    }

    /// A broker-only wovenetd on 198.18.0.2:1883 in the servers namespace.
    pub async fn embedded_broker(&self) -> Broker {
        Broker::embedded_in(&self.servers, plan::broker()).await
    }

    /// Names of every namespace this rig made, in creation order.
    pub fn names(&self) -> Vec<String> {
        self.made()
            .namespaces
            .iter()
            .map(|n| n.name().to_owned())
            .collect()
    }

    /// The rig's namespaces and each NAT's state, for panic messages.
    pub fn diag(&self) -> String {
        let made = self.made();
        let mut out = format!(
            "--- NAT rig {:02x}: namespaces {:?}\n",
            self.id,
            made.namespaces.iter().map(Netns::name).collect::<Vec<_>>()
        );
        for nat in &made.nats_made {
            out.push_str(&nat.diag());
        }
        out
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let made = std::mem::take(&mut *self.made());
        for ns in made.namespaces.iter().rev() {
            ns.delete();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_present_runs() {
        assert_eq!(decide(&[], &[], true, true), Decision::Run);
        assert_eq!(decide(&[], &[], false, false), Decision::Run);
    }

    #[test]
    fn missing_tools_skip_unless_their_env_var_demands_them() {
        let Decision::Skip(why) = decide(&["root", "nft"], &[], false, true) else {
            panic!("expected a skip")
        };
        assert!(why.contains("missing: root, nft"), "{why}");
        assert!(why.contains("WOVENET_REQUIRE_ROOT=1"), "{why}");
        let Decision::Skip(why) = decide(&[], &["turnserver"], true, false) else {
            panic!("expected a skip")
        };
        assert!(why.contains("missing: turnserver"), "{why}");
        assert!(why.contains("WOVENET_REQUIRE_COTURN=1"), "{why}");
    }

    #[test]
    fn missing_tools_fail_when_required() {
        let Decision::Fail(why) = decide(&["conntrack"], &[], true, false) else {
            panic!("expected a failure")
        };
        assert!(why.contains("conntrack"), "{why}");
        assert!(why.contains("WOVENET_REQUIRE_ROOT=1"), "{why}");
        let Decision::Fail(why) = decide(&[], &["turnserver"], false, true) else {
            panic!("expected a failure")
        };
        assert!(why.contains("WOVENET_REQUIRE_COTURN=1"), "{why}");
        // Root missing but only coturn demanded: the coturn demand does not cover root.
        assert!(matches!(
            decide(&["root"], &[], false, true),
            Decision::Skip(_)
        ));
    }
}
