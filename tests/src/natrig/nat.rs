//! One NAT of the rig: the nftables ruleset of each [`NatKind`] (pure text, unit-tested) and
//! the operations a test runs on a live NAT namespace (flush its mappings, change its public
//! address, cut and restore UDP through it, read its public address). It does not build
//! topology; [`crate::natrig::Rig`] wires the namespace before handing out a [`Nat`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::netns::{Netns, tool};
use super::plan;

/// The NAT's interface on the internet segment.
pub const WAN: &str = "wan0";
/// The NAT's interface (a bridge) on its private segment.
pub const LAN: &str = "lan0";
/// The nftables table the rig owns in a NAT namespace.
pub const TABLE: &str = "wovenet_nat";

/// How a NAT maps and filters UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// `masquerade`: one public port per local socket whatever the destination (the local port
    /// itself when free), and conntrack admits replies only from the address and port a packet
    /// went to (RFC 4787 endpoint-independent mapping, address-and-port-dependent filtering: a
    /// "port-restricted cone"). Two of these can be hole-punched.
    EndpointIndependent,
    /// `masquerade random,fully-random`: a new random public port for every new destination
    /// (RFC 4787 address-and-port-dependent mapping: "symmetric"). The port seen by a STUN server
    /// says nothing about the port a peer will see, so two of these cannot be punched.
    PerDestination,
}

impl NatKind {
    /// The masquerade statement of this kind.
    fn masquerade(self) -> &'static str {
        match self {
            Self::EndpointIndependent => "masquerade",
            Self::PerDestination => "masquerade random,fully-random",
        }
    }
}

/// The nftables ruleset of a NAT of `kind` (loaded with `nft -f -` in the NAT namespace).
///
/// Besides the masquerade, like any home router it drops connections *opened* from the internet
/// (`ct state new`) on input and forward. On input this matters for punching: without it, a
/// peer's first punch packet, arriving before the local site has sent its own, would be
/// delivered locally to the NAT, and the conntrack entry it leaves behind would make the NAT
/// pick another public port for the site's outgoing packets to that peer (a tuple clash), so
/// punching would depend on who sends first. Dropped packets leave no confirmed entry.
///
/// The `cut` chain (prerouting, before conntrack) is empty; [`Nat::cut_udp`] fills it.
pub fn ruleset(kind: NatKind) -> String {
    format!(
        "table ip {TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"{WAN}\" {masq}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{WAN}\" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{WAN}\" ct state new drop
  }}
  chain cut {{
    type filter hook prerouting priority raw; policy accept;
  }}
}}
",
        masq = kind.masquerade()
    )
}

/// The public IPv4 address in `ip -j -4 addr show dev wan0` output, if any.
fn parse_addr(json: &str) -> Option<Ipv4Addr> {
    let v: Value = serde_json::from_str(json).ok()?;
    v.as_array()?
        .iter()
        .flat_map(|link| link["addr_info"].as_array().into_iter().flatten())
        .find_map(|a| a["local"].as_str()?.parse().ok())
}

fn need(name: &str) -> PathBuf {
    tool(name).unwrap_or_else(|| panic!("the NAT rig needs `{name}` (see natrig::require)"))
}

/// A NAT namespace: outside interface [`WAN`] on the internet segment, inside bridge [`LAN`]
/// at 10.K.0.1/24, forwarding on, the [`ruleset`] of its kind. Cheap to clone; the rig deletes
/// the namespace.
#[derive(Debug, Clone)]
pub struct Nat {
    ns: Netns,
    index: u8,
    kind: NatKind,
    /// The rig's counter of fresh public addresses (shared by its NATs).
    renumbered: Arc<AtomicU32>,
}

impl Nat {
    pub(crate) fn new(ns: Netns, index: u8, kind: NatKind, renumbered: Arc<AtomicU32>) -> Self {
        Self {
            ns,
            index,
            kind,
            renumbered,
        }
    }

    /// Loads the ruleset (the namespace's interfaces must exist).
    pub(crate) fn load_rules(&self) {
        let nft = need("nft");
        self.ns
            .try_exec(&nft, &["-f", "-"], Some(ruleset(self.kind).as_bytes()))
            .unwrap_or_else(|e| panic!("NAT {}: cannot load nftables rules: {e}", self.ns.name()));
    }

    /// Its namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Its index K (its segment is 10.K.0.0/24).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Its kind.
    pub fn kind(&self) -> NatKind {
        self.kind
    }

    /// Its inside address (the gateway of its sites).
    pub fn inside_addr(&self) -> Ipv4Addr {
        plan::nat_inside(self.index)
    }

    /// Its current public address, as the kernel has it on [`WAN`].
    pub fn public_addr(&self) -> Ipv4Addr {
        let json = self.ns.ip(&["-j", "-4", "addr", "show", "dev", WAN]);
        parse_addr(&json)
            .unwrap_or_else(|| panic!("NAT {}: no IPv4 address on {WAN}: {json}", self.ns.name()))
    }

    /// Forgets every mapping (`conntrack -F`), like a NAT reboot or all mappings expiring.
    pub fn flush_conntrack(&self) {
        self.ns.exec(&need("conntrack"), &["-F"]);
    }

    /// Moves its outside interface to `ip` (on the internet segment) and flushes its mappings,
    /// like an ISP handing the router a new address.
    pub fn set_public_addr(&self, ip: Ipv4Addr) {
        assert!(
            plan::on_internet(ip),
            "{ip} is not on the rig's internet segment"
        );
        self.ns.ip_batch(&[
            format!("addr flush dev {WAN}"),
            format!("addr add {ip}/{} dev {WAN}", plan::INTERNET_PREFIX),
        ]);
        self.flush_conntrack();
    }

    /// Moves it to a public address no NAT of this rig has used yet; returns that address.
    pub fn change_public_addr(&self) -> Ipv4Addr {
        let ip = plan::renumbered(self.renumbered.fetch_add(1, Ordering::Relaxed));
        self.set_public_addr(ip);
        ip
    }

    /// Drops every UDP packet arriving at the NAT, from either side, before conntrack sees it
    /// (the path through this NAT is cut; its mappings age as if idle). Idempotent.
    pub fn cut_udp(&self) {
        let nft = need("nft");
        self.ns.exec(&nft, &["flush", "chain", "ip", TABLE, "cut"]);
        self.ns.exec(
            &nft,
            &[
                "add", "rule", "ip", TABLE, "cut", "meta", "l4proto", "udp", "drop",
            ],
        );
    }

    /// Lets UDP through again after [`Self::cut_udp`]. Idempotent.
    pub fn restore_udp(&self) {
        self.ns
            .exec(&need("nft"), &["flush", "chain", "ip", TABLE, "cut"]);
    }

    /// Sets conntrack's UDP timeouts in this NAT: `unreplied` for a mapping that only saw
    /// packets one way, `assured` once both ways (Linux defaults: 30 s and 120 s). Real NATs
    /// commonly forget idle UDP mappings after 30 s or less.
    pub fn set_udp_timeouts(&self, unreplied: Duration, assured: Duration) {
        self.ns.sysctl(
            "net/netfilter/nf_conntrack_udp_timeout",
            &unreplied.as_secs().to_string(),
        );
        self.ns.sysctl(
            "net/netfilter/nf_conntrack_udp_timeout_stream",
            &assured.as_secs().to_string(),
        );
    }

    /// Its current UDP mappings (`conntrack -L -p udp`), for messages.
    pub fn mappings(&self) -> String {
        match self
            .ns
            .try_exec(&need("conntrack"), &["-L", "-p", "udp"], None)
        {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => e,
        }
    }

    /// Kind, addresses, ruleset and mappings, for panic messages.
    pub fn diag(&self) -> String {
        let rules = self
            .ns
            .try_exec(&need("nft"), &["list", "table", "ip", TABLE], None)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e);
        let addrs = self.ns.ip(&["-br", "-4", "addr"]);
        format!(
            "--- NAT {} ({:?}) addresses:\n{addrs}--- rules:\n{rules}--- UDP mappings:\n{}",
            self.ns.name(),
            self.kind,
            self.mappings()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_independent_keeps_ports_and_per_destination_randomises_them() {
        let ei = ruleset(NatKind::EndpointIndependent);
        assert!(ei.contains("oifname \"wan0\" masquerade\n"), "{ei}");
        assert!(!ei.contains("random"), "{ei}");
        let pd = ruleset(NatKind::PerDestination);
        assert!(
            pd.contains("oifname \"wan0\" masquerade random,fully-random\n"),
            "{pd}"
        );
    }

    #[test]
    fn both_kinds_drop_unsolicited_inbound_and_have_an_empty_cut_chain() {
        for kind in [NatKind::EndpointIndependent, NatKind::PerDestination] {
            let r = ruleset(kind);
            assert_eq!(
                r.matches("iifname \"wan0\" ct state new drop").count(),
                2,
                "{r}"
            );
            assert!(r.contains("hook input"), "{r}");
            assert!(r.contains("hook forward"), "{r}");
            assert!(
                r.contains(
                    "chain cut {\n    type filter hook prerouting priority raw; policy accept;\n  }"
                ),
                "{r}"
            );
        }
    }

    #[test]
    fn public_address_is_read_from_ip_json() {
        let json = r#"[{"ifindex":2,"ifname":"wan0","addr_info":[{"family":"inet","local":"198.18.3.1","prefixlen":15}]}]"#;
        assert_eq!(parse_addr(json), Some(Ipv4Addr::new(198, 18, 3, 1)));
        assert_eq!(parse_addr(r#"[{"ifname":"wan0","addr_info":[]}]"#), None);
        assert_eq!(parse_addr("not json"), None);
    }
}
