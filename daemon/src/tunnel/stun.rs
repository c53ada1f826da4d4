//! STUN (RFC 8489) from a tunnel socket: the public address and port a NAT
//! maps the socket to, and whether that mapping is the same toward every
//! destination (the one property hole punching needs).
//!
//! The messages are `stun-types`'; answers come back through the socket's
//! [`Aux`] (quinn owns the receive path). Only Binding requests are sent, to
//! the servers the operator configured (or a peer announced, checked like
//! any announced address); nothing here is a STUN server. The decision of
//! what a set of answers means ([`Mapping::of`]) is a pure function.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stun_types::message::{BINDING, Message, MessageWriteVec};
use stun_types::prelude::*;

use super::udp::{Aux, SendError};

/// When a Binding request is (re)sent, from the first send: RFC 8489's
/// doubling from 500 ms, cut short — a server that answers none of four
/// requests in 5.5 s is not worth waiting on, the next check retries.
pub const RETRANSMITS: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_millis(1_500),
    Duration::from_millis(3_500),
];
/// How long after the first send a probe gives up.
pub const GIVE_UP: Duration = Duration::from_millis(5_500);

pub use crate::types::NatMapping;

/// Why one server gave no mapping.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The request could not be sent or registered.
    #[error("cannot send the binding request")]
    Send(#[source] SendError),
    /// No answer after every retransmission.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One server's answer.
#[derive(Debug)]
pub struct Probe {
    /// The server asked.
    pub server: SocketAddr,
    /// The address it saw the request come from, or why there is none.
    pub result: Result<SocketAddr, ProbeError>,
}

/// Asks `server` which address it sees this socket at.
pub async fn binding(aux: &Aux, server: SocketAddr) -> Result<SocketAddr, ProbeError> {
    let request = Message::builder_request(BINDING, MessageWriteVec::new());
    let id = request.transaction_id();
    let request = request.finish();
    let mut tx = aux.expect(id, server).map_err(ProbeError::Send)?;
    let start = tokio::time::Instant::now();
    for at in RETRANSMITS {
        tokio::select! {
            answer = &mut tx.answer => {
                return answer.map_err(|_| ProbeError::Timeout(GIVE_UP));
            }
            () = tokio::time::sleep_until(start + at) => {}
        }
        // A send lost to a full buffer is what the next retransmission is for.
        let _ = aux.send(server, &request).await;
    }
    match tokio::time::timeout_at(start + GIVE_UP, &mut tx.answer).await {
        Ok(Ok(mapped)) => Ok(mapped),
        _ => Err(ProbeError::Timeout(GIVE_UP)),
    }
}

/// Asks every server at once; answers in the order of `servers`.
pub async fn probe_all(aux: &Arc<Aux>, servers: &[SocketAddr]) -> Vec<Probe> {
    let mut set = tokio::task::JoinSet::new();
    for (i, &server) in servers.iter().enumerate() {
        let aux = aux.clone();
        set.spawn(async move { (i, binding(&aux, server).await) });
    }
    let mut results: Vec<Option<Result<SocketAddr, ProbeError>>> =
        servers.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = Some(r);
        }
    }
    servers
        .iter()
        .zip(results)
        .map(|(&server, r)| Probe {
            server,
            result: r.unwrap_or(Err(ProbeError::Timeout(GIVE_UP))),
        })
        .collect()
}

/// What a round of probes says about the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The public address and port (the first server's answer, in
    /// configured order), if any server answered.
    pub public: Option<SocketAddr>,
    /// How the NAT maps the socket.
    pub nat: NatMapping,
    /// How many servers answered.
    pub answered: usize,
}

impl Mapping {
    /// Reads `(server, answer)` pairs: two answers from servers at different
    /// IP addresses decide the mapping (the same address and port from both:
    /// endpoint-independent; different: per destination). Servers sharing
    /// an IP cannot tell an address-dependent mapping apart, so they count
    /// as one.
    pub fn of(answers: &[(SocketAddr, Option<SocketAddr>)]) -> Self {
        let ok: Vec<(SocketAddr, SocketAddr)> =
            answers.iter().filter_map(|&(s, m)| Some((s, m?))).collect();
        let public = ok.first().map(|&(_, m)| m);
        let mut nat = NatMapping::Unknown;
        for (i, &(s1, m1)) in ok.iter().enumerate() {
            for &(s2, m2) in &ok[i + 1..] {
                if s1.ip() == s2.ip() {
                    continue;
                }
                if m1 != m2 {
                    // One disagreement settles it.
                    return Self {
                        public,
                        nat: NatMapping::PerDestination,
                        answered: ok.len(),
                    };
                }
                nat = NatMapping::EndpointIndependent;
            }
        }
        Self {
            public,
            nat,
            answered: ok.len(),
        }
    }

    /// [`Mapping::of`] a round of [`probe_all`].
    pub fn of_probes(probes: &[Probe]) -> Self {
        let answers: Vec<_> = probes
            .iter()
            .map(|p| (p.server, p.result.as_ref().ok().copied()))
            .collect();
        Self::of(&answers)
    }
}

/// A punch packet: a STUN Binding indication, which needs no answer and
/// which the receiving [`Aux`] recognises and drops. Sent from the tunnel
/// socket toward a peer's candidates, it opens this side's NAT (and
/// firewall) for the peer's packets.
pub fn punch_packet() -> Vec<u8> {
    Message::builder_indication(BINDING, MessageWriteVec::new()).finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::udp::Demux;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_needs_two_server_addresses_to_decide() {
        let m1 = a("198.18.0.11:40000");
        let m2 = a("198.18.0.11:40001");
        let (s1, s2, s1b) = (
            a("198.18.0.2:3478"),
            a("198.18.0.3:3478"),
            a("198.18.0.2:3479"),
        );
        assert_eq!(
            Mapping::of(&[(s1, Some(m1)), (s2, Some(m1))]),
            Mapping {
                public: Some(m1),
                nat: NatMapping::EndpointIndependent,
                answered: 2
            }
        );
        assert_eq!(
            Mapping::of(&[(s1, Some(m1)), (s2, Some(m2))]).nat,
            NatMapping::PerDestination
        );
        // Same server IP: cannot tell.
        assert_eq!(
            Mapping::of(&[(s1, Some(m1)), (s1b, Some(m1))]).nat,
            NatMapping::Unknown
        );
        // One answer: the address, not the kind.
        let one = Mapping::of(&[(s1, None), (s2, Some(m2))]);
        assert_eq!(
            (one.public, one.nat, one.answered),
            (Some(m2), NatMapping::Unknown, 1)
        );
        let none = Mapping::of(&[(s1, None)]);
        assert_eq!((none.public, none.answered), (None, 0));
        // Any disagreement among several wins over agreement.
        let three = Mapping::of(&[
            (s1, Some(m1)),
            (s2, Some(m1)),
            (a("198.18.0.4:3478"), Some(m2)),
        ]);
        assert_eq!(three.nat, NatMapping::PerDestination);
    }

    #[test]
    fn an_unknown_mapping_kind_from_a_newer_peer_reads_as_unknown() {
        let m: NatMapping = serde_json::from_str("\"endpointIndependent\"").unwrap();
        assert_eq!(m, NatMapping::EndpointIndependent);
        let m: NatMapping = serde_json::from_str("\"addressDependent\"").unwrap();
        assert_eq!(m, NatMapping::Unknown);
    }

    /// A minimal STUN server on loopback answering from `sock` with the
    /// source address it saw (what coturn does), `drop_first` requests ignored.
    async fn server(drop_first: usize) -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut seen = 0;
            loop {
                let (n, from) = sock.recv_from(&mut buf).await.unwrap();
                seen += 1;
                if seen <= drop_first {
                    continue;
                }
                let req = Message::from_bytes(&buf[..n]).unwrap();
                let mut resp = Message::builder_success(&req, MessageWriteVec::new());
                resp.add_attribute(&stun_types::attribute::XorMappedAddress::new(
                    from,
                    req.transaction_id(),
                ))
                .unwrap();
                sock.send_to(&resp.finish(), from).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn binding_learns_the_address_the_server_saw_through_retransmissions() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = sock.local_addr().unwrap();
        let (demux, aux) = Demux::new(sock).unwrap();
        // The socket's receive path is quinn's: drive it as an endpoint does.
        let ep = quinn::Endpoint::new_with_abstract_socket(
            crate::tunnel::udp::endpoint_config(),
            None,
            demux,
            quinn::default_runtime().unwrap(),
        )
        .unwrap();
        let lossy = server(2).await;
        let fine = server(0).await;
        let probes = probe_all(&aux, &[lossy, fine]).await;
        assert_eq!(probes[0].result.as_ref().unwrap(), &local);
        assert_eq!(probes[1].result.as_ref().unwrap(), &local);
        let m = Mapping::of_probes(&probes);
        // Both servers are on 127.0.0.1: the kind stays unknown.
        assert_eq!(
            (m.public, m.nat, m.answered),
            (Some(local), NatMapping::Unknown, 2)
        );
        drop(ep);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out_after_every_retransmission() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (_demux, aux) = Demux::new(sock).unwrap();
        let r = binding(&aux, silent.local_addr().unwrap()).await;
        assert!(matches!(r, Err(ProbeError::Timeout(_))), "{r:?}");
        let mut buf = [0u8; 100];
        let mut got = 0;
        while silent.try_recv(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(got, RETRANSMITS.len());
    }
}
