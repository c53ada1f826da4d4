//! The rig's address plan: which address each role gets. Pure (no namespaces, no commands), so
//! it is unit-tested here and every rig uses the same plan — rigs cannot collide, because each
//! one's "internet" is its own set of namespaces with no link to the host or another rig.
//!
//! ```text
//! internet 198.18.0.0/15 (benchmarking range, RFC 2544)
//!   198.18.0.2, .3, .4        servers: STUN #1 + broker, STUN #2, TURN
//!   198.18.1.K                NAT K's first public (outside) address, K = 1, 2, …
//!   198.18.2.J                public site J (attached to the internet directly)
//!   198.18.3.N                fresh public addresses handed out by `change_public_addr`
//! private segment K 10.K.0.0/24
//!   10.K.0.1                  NAT K's inside address, the sites' default gateway
//!   10.K.0.2, .3, …           sites behind NAT K
//! ```

use std::net::{Ipv4Addr, SocketAddr};

/// Prefix length of the internet segment (198.18.0.0/15: everything on it is on-link).
pub const INTERNET_PREFIX: u8 = 15;

/// Prefix length of a private segment.
pub const PRIVATE_PREFIX: u8 = 24;

/// Addresses of the servers namespace: STUN #1 and the broker, STUN #2, TURN.
pub const SERVERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 0, 2),
    Ipv4Addr::new(198, 18, 0, 3),
    Ipv4Addr::new(198, 18, 0, 4),
];

/// The STUN/TURN port (the IANA default; every rig has its own servers namespace).
pub const STUN_PORT: u16 = 3478;

/// The MQTT broker port in the servers namespace.
pub const BROKER_PORT: u16 = 1883;

/// Most NATs a rig can have (10.K with K ≤ this; two hex digits in namespace names).
pub const MAX_NATS: u8 = 200;

/// Most sites (behind NATs and public, together) a rig can have.
pub const MAX_SITES: u8 = 250;

/// Most sites behind one NAT (10.K.0.2 ..= 10.K.0.254).
pub const MAX_SITES_PER_NAT: u8 = 253;

/// The two STUN servers (one per address, same port), for RFC 5780-style mapping checks.
pub fn stun_servers() -> [SocketAddr; 2] {
    [
        SocketAddr::from((SERVERS[0], STUN_PORT)),
        SocketAddr::from((SERVERS[1], STUN_PORT)),
    ]
}

/// The TURN server.
pub fn turn_server() -> SocketAddr {
    SocketAddr::from((SERVERS[2], STUN_PORT))
}

/// The broker, on the first server address.
pub fn broker() -> SocketAddr {
    SocketAddr::from((SERVERS[0], BROKER_PORT))
}

/// NAT `k`'s first public address (`k` from 1).
pub fn nat_public(k: u8) -> Ipv4Addr {
    assert!(
        (1..=MAX_NATS).contains(&k),
        "NAT index {k} out of 1..={MAX_NATS}"
    );
    Ipv4Addr::new(198, 18, 1, k)
}

/// NAT `k`'s inside address, the gateway of its segment.
pub fn nat_inside(k: u8) -> Ipv4Addr {
    assert!(
        (1..=MAX_NATS).contains(&k),
        "NAT index {k} out of 1..={MAX_NATS}"
    );
    Ipv4Addr::new(10, k, 0, 1)
}

/// The `j`-th site (from 0) behind NAT `k`.
pub fn site_private(k: u8, j: u8) -> Ipv4Addr {
    assert!(
        j < MAX_SITES_PER_NAT,
        "at most {MAX_SITES_PER_NAT} sites behind one NAT"
    );
    let gw = nat_inside(k).octets();
    Ipv4Addr::new(gw[0], gw[1], gw[2], 2 + j)
}

/// The `j`-th public site (from 0).
pub fn public_site(j: u8) -> Ipv4Addr {
    assert!(j < 254, "at most 254 public sites");
    Ipv4Addr::new(198, 18, 2, 1 + j)
}

/// The `n`-th fresh public address (from 0) for a NAT that changes its address.
pub fn renumbered(n: u32) -> Ipv4Addr {
    let n = u8::try_from(n)
        .ok()
        .filter(|n| *n < 254)
        .unwrap_or_else(|| panic!("at most 254 public address changes per rig"));
    Ipv4Addr::new(198, 18, 3, 1 + n)
}

/// Whether `ip` is on the rig's internet segment.
pub fn on_internet(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 198 && (o[1] & 0xfe) == 18
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_public_address_is_on_the_internet_segment_and_distinct() {
        let mut all: Vec<Ipv4Addr> = SERVERS.to_vec();
        all.extend((1..=MAX_NATS).map(nat_public));
        all.extend((0..254).map(public_site));
        all.extend((0..254).map(renumbered));
        assert!(all.iter().all(|ip| on_internet(*ip)), "{all:?}");
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "two roles share an address");
        assert!(!on_internet(Ipv4Addr::new(198, 20, 0, 1)));
        assert!(on_internet(Ipv4Addr::new(198, 19, 255, 254)));
    }

    #[test]
    fn private_segments_do_not_overlap_and_sites_sit_behind_their_gateway() {
        assert_eq!(nat_inside(1), Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(site_private(2, 0), Ipv4Addr::new(10, 2, 0, 2));
        assert_eq!(site_private(2, 252), Ipv4Addr::new(10, 2, 0, 254));
        assert_ne!(site_private(1, 0), site_private(2, 0));
        assert!(!on_internet(site_private(1, 0)));
    }

    #[test]
    fn two_stun_servers_on_different_addresses() {
        let [a, b] = stun_servers();
        assert_ne!(a.ip(), b.ip());
        assert_eq!(a.port(), b.port());
        assert_ne!(turn_server().ip(), a.ip());
        assert_ne!(turn_server().ip(), b.ip());
    }

    #[test]
    #[should_panic(expected = "NAT index 0")]
    fn nat_indices_start_at_one() {
        nat_public(0);
    }

    #[test]
    #[should_panic(expected = "at most 254 public address changes")]
    fn renumbering_is_bounded() {
        renumbered(254);
    }
}
