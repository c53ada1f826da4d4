//! Hole punching: the dialer's side of a rendezvous, the owner's punch
//! packets, and the STUN refresh of a socket's public mapping.
//!
//! A `hole-punching` socket sits behind a NAT that drops packets from
//! addresses the socket never sent to. To dial it, a site learns its own
//! public mapping (its own punched socket's, kept fresh by [`refresh`], or a
//! STUN probe from its dial socket), asks the owner over the message channel
//! to send punch packets toward that address ([`TunnelEvent::PunchRequest`]),
//! and once the owner answered (a nonce in [`Waiters`]) sends its QUIC handshake to the
//! address the owner gave. The owner's punch packets opened its NAT for
//! exactly that source, and the handshake opens the dialer's. What follows
//! is an ordinary dataChannel: same key proof, same admission.
//!
//! [`cannot_punch`] is the pure rule for when not to try. This module does
//! not send messages (the site does) and keeps no per-peer state.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::stun::{self, Mapping, NatMapping};
use super::udp::Aux;
#[cfg(doc)]
use super::waiters::Waiters;
use super::{TunnelEvent, lock};
use crate::config::StunServer;
use crate::error::Chain;
use crate::message::announce::{LoopbackPeers, peer_address};

/// How often a socket's public mapping is re-learned. Well inside the 30 s
/// after which many NATs forget an idle UDP mapping, so the STUN exchange
/// itself keeps the mapping a peer is told about alive.
pub const REFRESH: Duration = Duration::from_secs(20);
/// How long a dialer waits for the owner's [`PunchAck`] after asking.
///
/// [`PunchAck`]: crate::message::announce::PunchAck
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Punch packets the owner sends per request, [`SPRAY_EVERY`] apart: the
/// dialer's handshake (sent on the answer) lands inside this window.
pub const SPRAY_PACKETS: u32 = 20;
/// Spacing of punch packets.
pub const SPRAY_EVERY: Duration = Duration::from_millis(100);
/// Punch sprays one site runs at once, over all peers: each request from a
/// member costs [`SPRAY_PACKETS`] small datagrams, so a member cannot turn
/// the site into a packet cannon.
pub const MAX_SPRAYS: usize = 32;
/// Rendezvous waiting for an answer at once (dial loops of punched sockets).
pub const MAX_WAITERS: usize = 256;

/// Why a rendezvous will not be tried toward a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CannotPunch {
    /// The owner's NAT gives every destination a new port: the address it
    /// announced is not where a dialer's packets would arrive.
    #[error("cannot punch: the peer's NAT maps per destination")]
    PeerMapsPerDestination,
    /// Our NAT does: the address we would tell the owner is wrong.
    #[error("cannot punch: this site's NAT maps per destination")]
    OwnMapsPerDestination,
}

/// Whether punching between a socket mapped `mine` and one mapped `theirs`
/// cannot work. With port-restricted filtering (what most NATs, and Linux
/// masquerade, do) a per-destination mapping on either side means the
/// address exchanged is not the one packets come from; an unknown mapping is
/// tried.
pub fn cannot_punch(mine: NatMapping, theirs: NatMapping) -> Option<CannotPunch> {
    match (mine, theirs) {
        (_, NatMapping::PerDestination) => Some(CannotPunch::PeerMapsPerDestination),
        (NatMapping::PerDestination, _) => Some(CannotPunch::OwnMapsPerDestination),
        _ => None,
    }
}

/// The punch sprays running, bounded by [`MAX_SPRAYS`], one per target.
#[derive(Debug, Default)]
pub struct Sprays {
    active: AtomicUsize,
    targets: Mutex<HashSet<(SocketAddr, SocketAddr)>>,
}

impl Sprays {
    /// Sends punch packets from `aux` to `to`: true if they go (a new spray,
    /// or the same one running already), false when [`MAX_SPRAYS`] run.
    pub fn start(
        self: &Arc<Self>,
        aux: Arc<Aux>,
        to: SocketAddr,
        tracker: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> bool {
        let key = (aux.local_addr(), to);
        {
            let mut targets = lock(&self.targets);
            if targets.contains(&key) {
                return true;
            }
            if self.active.load(Ordering::Relaxed) >= MAX_SPRAYS {
                return false;
            }
            targets.insert(key);
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        let sprays = self.clone();
        tracker.spawn(async move {
            let packet = stun::punch_packet();
            let mut tick = tokio::time::interval(SPRAY_EVERY);
            for _ in 0..SPRAY_PACKETS {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = aux.send(to, &packet).await {
                    debug!(error = %Chain(&e), %to, "punch packet not sent");
                }
            }
            lock(&sprays.targets).remove(&key);
            sprays.active.fetch_sub(1, Ordering::Relaxed);
        });
        true
    }
}

/// The STUN servers of `host:port` strings a peer announced, resolved,
/// of `family`'s address family (`None`: any), each passing the same checks
/// as an announced dial address. Unresolvable or refused entries are skipped.
pub async fn resolve_announced(
    servers: &[String],
    loopback: LoopbackPeers,
    family: Option<IpAddr>,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in servers {
        let Ok(addrs) = tokio::net::lookup_host(s.as_str()).await else {
            debug!(server = %s.escape_debug(), "announced STUN server does not resolve");
            continue;
        };
        out.extend(
            addrs
                .filter(|a| same_family(family, a.ip()))
                .filter_map(|a| peer_address(a, loopback).ok())
                .take(1),
        );
    }
    out
}

/// Resolves configured STUN servers (names through the system resolver).
pub async fn resolve_configured(servers: &[StunServer], family: Option<IpAddr>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in servers {
        out.extend(resolve_host(&s.host, s.port, family).await);
    }
    out
}

/// A configured server's address of `family` (`host` an IP literal or a
/// name for the system resolver); `None` when it has none.
pub async fn resolve_host(host: &str, port: u16, family: Option<IpAddr>) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return same_family(family, ip).then_some(SocketAddr::new(ip, port));
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addrs) => addrs.find(|a| same_family(family, a.ip())),
        Err(e) => {
            debug!(%host, error = %e, "server does not resolve");
            None
        }
    }
}

/// Whether a socket bound to `local` (`None`: any) can send to `ip`: a
/// dual-stack `[::]` socket reaches both families.
fn same_family(local: Option<IpAddr>, ip: IpAddr) -> bool {
    match local {
        None => true,
        Some(IpAddr::V6(v6)) if v6.is_unspecified() => true,
        Some(l) => l.is_ipv4() == ip.to_canonical().is_ipv4(),
    }
}

/// A socket's public mapping as last learned, shared with its dial loops.
#[derive(Debug, Default)]
pub struct MappingSlot {
    current: Mutex<Option<Mapping>>,
    /// Wakes the refresh loop early (a channel died: the NAT may have changed).
    pub poke: Notify,
}

impl MappingSlot {
    /// The latest mapping with a public address, if any.
    pub fn get(&self) -> Option<Mapping> {
        *lock(&self.current)
    }
}

/// Re-learns the public mapping of socket `index` every [`REFRESH`] (and
/// when poked) until `cancel`, reporting each result to the site.
pub async fn refresh(
    aux: Arc<Aux>,
    servers: Vec<StunServer>,
    index: u32,
    slot: Arc<MappingSlot>,
    events: mpsc::Sender<TunnelEvent>,
    cancel: CancellationToken,
) {
    let family = Some(aux.local_addr().ip());
    loop {
        let resolved = resolve_configured(&servers, family).await;
        let result = if resolved.is_empty() {
            Err("no STUN server of the socket's address family resolves".to_owned())
        } else {
            let probes = stun::probe_all(&aux, &resolved).await;
            let mapping = Mapping::of_probes(&probes);
            match mapping.public {
                Some(_) => Ok(mapping),
                None => Err(probes
                    .iter()
                    .filter_map(|p| {
                        p.result
                            .as_ref()
                            .err()
                            .map(|e| format!("{}: {}", p.server, Chain(e)))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")),
            }
        };
        match &result {
            Ok(m) => {
                let old = lock(&slot.current).replace(*m);
                if old != Some(*m) {
                    info!(socket = index, public = ?m.public, nat = m.nat.text(), answered = m.answered, "public mapping learned by STUN");
                }
            }
            Err(e) => warn!(socket = index, error = %e, "STUN detection failed"),
        }
        if events
            .send(TunnelEvent::Mapped {
                socket: index,
                result,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
            _ = slot.poke.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_destination_mapping_on_either_side_is_not_punched() {
        use NatMapping::*;
        assert_eq!(cannot_punch(EndpointIndependent, EndpointIndependent), None);
        assert_eq!(cannot_punch(Unknown, EndpointIndependent), None);
        assert_eq!(cannot_punch(EndpointIndependent, Unknown), None);
        assert_eq!(cannot_punch(Unknown, Unknown), None);
        assert_eq!(
            cannot_punch(EndpointIndependent, PerDestination),
            Some(CannotPunch::PeerMapsPerDestination)
        );
        assert_eq!(
            cannot_punch(PerDestination, Unknown),
            Some(CannotPunch::OwnMapsPerDestination)
        );
        assert_eq!(
            cannot_punch(PerDestination, PerDestination),
            Some(CannotPunch::PeerMapsPerDestination)
        );
    }

    #[tokio::test]
    async fn sprays_are_bounded_and_one_per_target() {
        let target = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = target.local_addr().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (_demux, aux) = crate::tunnel::udp::Demux::new(sock).unwrap();
        let sprays = Arc::new(Sprays::default());
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        assert!(sprays.start(aux.clone(), to, &tracker, cancel.clone()));
        // The same target again joins the running spray (no second one).
        assert!(sprays.start(aux.clone(), to, &tracker, cancel.clone()));
        assert_eq!(sprays.active.load(Ordering::Relaxed), 1);
        tracker.close();
        tracker.wait().await;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while let Ok(n) = target.try_recv(&mut buf) {
            assert_eq!(
                crate::tunnel::udp::classify(&buf[..n]),
                crate::tunnel::udp::Kind::Stun
            );
            got += 1;
        }
        assert_eq!(got, SPRAY_PACKETS);
        assert_eq!(sprays.active.load(Ordering::Relaxed), 0);
        assert!(lock(&sprays.targets).is_empty());
    }
}
