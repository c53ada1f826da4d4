//! The PROXY protocol header (HAProxy's "PROXY protocol" spec, versions 1
//! and 2) that an exposed app with `proxyProtocol` receives before a
//! stream's data: the client's address as the using site saw it, and the
//! local listener address it connected to there.
//!
//! The bytes come from the `ppp` crate's encoders. When the client address
//! is unknown (a unix client, or a request from a site that predates client
//! addresses) the spec's "unknown source" forms are used, both of which tell
//! the receiver to accept the connection and use its real endpoints:
//! version 1 sends `PROXY UNKNOWN\r\n`; version 2 sends the `LOCAL` command
//! with the `UNSPEC` family and no address block (what HAProxy itself sends
//! for a source it cannot express; `PROXY` with `UNSPEC` may be rejected by
//! a receiver, `LOCAL` must be accepted). Headers are for byte streams only
//! (`STREAM` in version 2): UDP apps cannot take `proxyProtocol` (see the
//! config validation).
//!
//! Pure: builds bytes, never touches a socket.

use ppp::{v1, v2};

use super::preamble::ClientAddr;
use crate::config::ProxyProtocol;

/// The header to write to the app before any data of a stream from `client`.
pub fn encode(version: ProxyProtocol, client: Option<&ClientAddr>) -> Vec<u8> {
    let pair = client.map(|c| (c.source(), c.destination()));
    match version {
        ProxyProtocol::V1 => {
            // `ClientAddr` keeps both addresses of one family, so the pair
            // always maps to TCP4 or TCP6 (a mixed pair would be UNKNOWN).
            let addresses = pair.map_or(v1::Addresses::Unknown, v1::Addresses::from);
            addresses.to_string().into_bytes()
        }
        ProxyProtocol::V2 => {
            let builder = match pair {
                Some(pair) => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Proxy,
                    v2::Protocol::Stream,
                    pair,
                ),
                None => v2::Builder::new(
                    v2::Version::Two | v2::Command::Local,
                    v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
                ),
            };
            builder
                .build()
                .expect("invariant: at most 36 address bytes, far below the u16 length")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;

    /// The 12-byte signature that opens every version 2 header.
    const SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

    fn client(src: &str, dst: &str) -> ClientAddr {
        ClientAddr::new(src.parse().unwrap(), dst.parse().unwrap())
    }

    #[test]
    fn v1_ipv4_client_is_a_tcp4_line() {
        let c = client("192.0.2.7:51234", "127.0.0.1:8080");
        assert_eq!(
            encode(ProxyProtocol::V1, Some(&c)),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 8080\r\n"
        );
    }

    #[test]
    fn v1_ipv6_client_is_a_tcp6_line() {
        let c = client("[2001:db8::7]:51234", "[::1]:8080");
        assert_eq!(
            encode(ProxyProtocol::V1, Some(&c)),
            b"PROXY TCP6 2001:db8::7 ::1 51234 8080\r\n"
        );
    }

    #[test]
    fn v1_dual_stack_ipv4_client_is_written_as_ipv4() {
        let c = client("[::ffff:192.0.2.7]:1", "[::ffff:127.0.0.1]:2");
        assert_eq!(
            encode(ProxyProtocol::V1, Some(&c)),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\n"
        );
    }

    #[test]
    fn v1_unknown_client_is_proxy_unknown() {
        assert_eq!(encode(ProxyProtocol::V1, None), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_ipv4_client_has_the_spec_layout() {
        let c = client("192.0.2.7:51234", "127.0.0.1:8080");
        let mut want = SIG.to_vec();
        // version 2 | PROXY, AF_INET | STREAM, 12 address bytes.
        want.extend_from_slice(&[0x21, 0x11, 0, 12]);
        want.extend_from_slice(&[192, 0, 2, 7, 127, 0, 0, 1]);
        want.extend_from_slice(&51234u16.to_be_bytes());
        want.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(encode(ProxyProtocol::V2, Some(&c)), want);
    }

    #[test]
    fn v2_ipv6_client_has_the_spec_layout() {
        let c = client("[2001:db8::7]:51234", "[::1]:8080");
        let mut want = SIG.to_vec();
        // version 2 | PROXY, AF_INET6 | STREAM, 36 address bytes.
        want.extend_from_slice(&[0x21, 0x21, 0, 36]);
        want.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        want.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        want.extend_from_slice(&51234u16.to_be_bytes());
        want.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(encode(ProxyProtocol::V2, Some(&c)), want);
    }

    #[test]
    fn v2_unknown_client_is_local_unspec_with_no_addresses() {
        let mut want = SIG.to_vec();
        // version 2 | LOCAL, AF_UNSPEC | UNSPEC, no address bytes.
        want.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(encode(ProxyProtocol::V2, None), want);
    }

    fn any_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        prop_oneof![
            (
                any::<std::net::SocketAddrV4>(),
                any::<std::net::SocketAddrV4>()
            )
                .prop_map(|(s, d)| (s.into(), d.into())),
            (
                any::<[u8; 16]>(),
                any::<u16>(),
                any::<[u8; 16]>(),
                any::<u16>()
            )
                .prop_map(|(s, sp, d, dp)| (
                    SocketAddr::from((std::net::Ipv6Addr::from(s), sp)),
                    SocketAddr::from((std::net::Ipv6Addr::from(d), dp))
                )),
        ]
    }

    proptest! {
        /// Whatever the addresses, `ppp`'s own parsers read back exactly
        /// the normalised pair, in both versions.
        #[test]
        fn headers_parse_back_to_the_client_address((src, dst) in any_pair()) {
            let c = ClientAddr::new(src, dst);
            let want = (c.source(), c.destination());

            let text = encode(ProxyProtocol::V1, Some(&c));
            let text = std::str::from_utf8(&text).unwrap();
            let parsed = v1::Header::try_from(text).unwrap();
            let got = match parsed.addresses {
                v1::Addresses::Tcp4(a) => (
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                ),
                v1::Addresses::Tcp6(a) => (
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                ),
                v1::Addresses::Unknown => panic!("unknown for {c:?}"),
            };
            prop_assert_eq!(got, want);

            let bin = encode(ProxyProtocol::V2, Some(&c));
            let parsed = v2::Header::try_from(&bin[..]).unwrap();
            prop_assert_eq!(parsed.len(), bin.len());
            let got = match parsed.addresses {
                v2::Addresses::IPv4(a) => (
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                ),
                v2::Addresses::IPv6(a) => (
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                ),
                other => panic!("{other:?} for {c:?}"),
            };
            prop_assert_eq!(got, want);
        }
    }
}
