//! The UDP socket under every quinn endpoint, shared with STUN and punch
//! packets: one socket, so the NAT mapping STUN learns is the one QUIC uses.
//!
//! [`Demux`] wraps the socket quinn uses ([`super::udp_socket`]). Received
//! datagrams are sorted by their first byte ([`classify`]): QUIC goes to
//! quinn, STUN (RFC 8489: top two bits clear, magic cookie) is handled here —
//! a Binding success answers a waiting probe (`stun::binding`, registered with
//! [`Aux::expect`]), a Binding indication is a peer's punch packet — and
//! anything else is dropped and counted. QUIC never sets those two bits to
//! zero as long as the fixed bit is not greased, which [`endpoint_config`]
//! turns off. This module owns no policy: when to probe
//! and whom to punch toward is decided elsewhere.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use stun_types::attribute::XorMappedAddress;
use stun_types::message::{BINDING, Message, MessageClass, TransactionId};

use super::relay::Relay;
use super::waiters::{Wait, Waiters};
use crate::counters::Counters;

/// The STUN magic cookie (RFC 8489 §5), bytes 4..8 of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// A STUN header is 20 bytes.
const STUN_HEADER: usize = 20;
/// Most STUN transactions one socket waits on at once; more are refused
/// (probes are a handful per socket and minute).
pub const MAX_PENDING: usize = 64;

/// What a received datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A QUIC packet (long header, or short header with the fixed bit).
    Quic,
    /// A STUN message.
    Stun,
    /// Neither: dropped.
    Other,
}

/// Receive slots a socket fills per call to quinn's endpoint.
///
/// quinn offers 32 slots, each as large as the biggest GRO batch it accepts
/// (64 × the largest packet: 416 KiB at
/// [`super::endpoint::UDP_MTU_CEILING`]). Every page the kernel ever writes
/// stays resident: at full speed all 32 fill with 65 KiB batches (a GSO send
/// of 10 packets), 2 MiB kept by an idle daemon after its first fast
/// transfer. Eight slots still move half a MiB per call; in the loopback rig
/// the throughput was the same and the peaks ~1–3 MiB lower.
pub const RECV_SLOTS: usize = 8;

/// Sorts one datagram by its first bytes. QUIC packets have the long-header
/// bit or the fixed bit set (quinn does not grease the fixed bit on our
/// endpoints, see [`endpoint_config`]); STUN messages have both clear, a
/// length that is a multiple of 4 and the magic cookie.
pub fn classify(d: &[u8]) -> Kind {
    match d.first() {
        None => Kind::Other,
        Some(b) if b & 0xc0 != 0 => Kind::Quic,
        Some(_)
            if d.len() >= STUN_HEADER
                && d.len().is_multiple_of(4)
                && d[4..8] == MAGIC_COOKIE
                && usize::from(u16::from_be_bytes([d[2], d[3]])) == d.len() - STUN_HEADER =>
        {
            Kind::Stun
        }
        Some(_) => Kind::Other,
    }
}

/// quinn's endpoint settings for sockets that carry STUN as well: the fixed
/// bit is never greased, so [`classify`] cannot mistake QUIC for STUN.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut c = quinn::EndpointConfig::default();
    c.grease_quic_bit(false);
    // What peers may send us: as large as our MTU discovery goes. Within
    // quinn's accepted range (1200..=65527), so this cannot fail.
    let _ = c.max_udp_payload_size(super::endpoint::UDP_MTU_CEILING);
    c
}

/// What the non-QUIC side of one socket saw, for diagnostics and counters.
#[derive(Debug, Default)]
pub struct AuxStats {
    /// Binding successes that answered a waiting probe.
    pub stun_answers: AtomicU64,
    /// STUN messages dropped: unknown transaction, wrong source, requests
    /// (this is no STUN server), malformed.
    pub stun_dropped: AtomicU64,
    /// Punch packets (Binding indications) received.
    pub punches_received: AtomicU64,
    /// Datagrams that were neither QUIC nor STUN.
    pub other_dropped: AtomicU64,
}

/// The socket's non-QUIC side: sends raw datagrams and routes STUN answers.
pub struct Aux {
    inner: Arc<dyn AsyncUdpSocket>,
    local: SocketAddr,
    /// The socket's TURN relay, once one is set up: datagrams from its
    /// server are TURN's, and QUIC to the peers it relays for goes through it.
    relay: OnceLock<Arc<Relay>>,
    /// Probes waiting for their Binding success, by transaction and the
    /// server asked (only it may answer).
    pending: Waiters<(TransactionId, SocketAddr), SocketAddr>,
    /// Counts of what was seen.
    pub stats: AuxStats,
}

impl fmt::Debug for Aux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aux").field("local", &self.local).finish()
    }
}

/// A registered STUN transaction; dropping it stops waiting. Its `answer`
/// resolves with the mapped address the server saw.
pub type Transaction<'a> = Wait<'a, (TransactionId, SocketAddr), SocketAddr>;

/// Why a raw datagram could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The socket refused it (buffer full, unreachable, …).
    #[error("cannot send to {to}")]
    Io {
        /// Destination.
        to: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// [`MAX_PENDING`] transactions are already waiting.
    #[error("too many STUN transactions waiting on this socket")]
    TooManyPending,
}

impl Aux {
    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Routes TURN traffic of this socket through `relay` from now on (once).
    pub fn set_relay(&self, relay: Arc<Relay>) {
        let _ = self.relay.set(relay);
    }

    /// The socket's relay, if any.
    pub fn relay(&self) -> Option<&Arc<Relay>> {
        self.relay.get()
    }

    /// Sends one datagram from the socket (not through quinn), waiting for
    /// the socket to be writable if its buffer is full.
    pub async fn send(&self, to: SocketAddr, contents: &[u8]) -> Result<(), SendError> {
        // A dual-stack IPv6 socket sends to IPv4 peers at their mapped address.
        let destination = match (self.local.ip(), to.ip()) {
            (IpAddr::V6(_), IpAddr::V4(v4)) => {
                SocketAddr::new(v4.to_ipv6_mapped().into(), to.port())
            }
            _ => to,
        };
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        let mut poller = None;
        loop {
            match self.inner.try_send(&transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Readiness is only known after the first poll (and is
                    // lost when the buffer fills): wait for it, then retry.
                    let p = poller.get_or_insert_with(|| self.inner.clone().create_io_poller());
                    std::future::poll_fn(|cx| p.as_mut().poll_writable(cx))
                        .await
                        .map_err(|source| SendError::Io { to, source })?;
                }
                r => return r.map_err(|source| SendError::Io { to, source }),
            }
        }
    }

    /// Registers a STUN transaction `id` sent to `server`; the answer arrives
    /// on the returned transaction's `answer` (only from `server`).
    pub fn expect(
        &self,
        id: TransactionId,
        server: SocketAddr,
    ) -> Result<Transaction<'_>, SendError> {
        self.pending
            .register((id, canonical(server)))
            .ok_or(SendError::TooManyPending)
    }

    /// Handles one STUN datagram from `from`.
    fn on_stun(&self, from: SocketAddr, d: &[u8]) {
        let from = canonical(from);
        let Ok(msg) = Message::from_bytes(d) else {
            Counters::bump(&self.stats.stun_dropped);
            return;
        };
        if msg.method() != BINDING {
            Counters::bump(&self.stats.stun_dropped);
            return;
        }
        match msg.class() {
            MessageClass::Indication => {
                Counters::bump(&self.stats.punches_received);
            }
            MessageClass::Success => {
                let id = msg.transaction_id();
                // RFC 5389 and later servers answer with XOR-MAPPED-ADDRESS.
                let mapped = msg.attribute::<XorMappedAddress>().map(|a| a.addr(id));
                match mapped {
                    Ok(mapped) if self.pending.answer(&(id, from), canonical(mapped)) => {
                        Counters::bump(&self.stats.stun_answers);
                    }
                    _ => Counters::bump(&self.stats.stun_dropped),
                }
            }
            // Requests (we serve no STUN) and error answers (a probe times
            // out and tries the next server instead).
            _ => Counters::bump(&self.stats.stun_dropped),
        }
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they map.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// quinn's socket with STUN and punch packets taken out of its receive path.
pub struct Demux {
    inner: Arc<dyn AsyncUdpSocket>,
    aux: Arc<Aux>,
}

impl fmt::Debug for Demux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demux")
            .field("local", &self.aux.local)
            .finish()
    }
}

impl Demux {
    /// Wraps `sock` for quinn; returns it and its non-QUIC side.
    pub fn new(sock: std::net::UdpSocket) -> io::Result<(Arc<Self>, Arc<Aux>)> {
        let local = sock.local_addr()?;
        let inner: Arc<dyn AsyncUdpSocket> = super::udp_socket::UdpSocket::new(sock)?;
        let aux = Arc::new(Aux {
            inner: inner.clone(),
            local,
            relay: OnceLock::new(),
            pending: Waiters::new(MAX_PENDING),
            stats: AuxStats::default(),
        });
        Ok((
            Arc::new(Self {
                inner,
                aux: aux.clone(),
            }),
            aux,
        ))
    }

    /// Takes the non-QUIC datagrams out of `buf` (one receive, `stride`-sized
    /// segments, the last possibly shorter) and returns the length of what is
    /// left for quinn, compacted to the front in the same order.
    fn filter(&self, from: SocketAddr, buf: &mut [u8], stride: usize) -> usize {
        let stride = if stride == 0 { buf.len() } else { stride };
        // Fast path: every segment is QUIC (all but never, once connected).
        if buf.chunks(stride).all(|s| classify(s) == Kind::Quic) {
            return buf.len();
        }
        let (mut read, mut write) = (0, 0);
        while read < buf.len() {
            let end = (read + stride).min(buf.len());
            match classify(&buf[read..end]) {
                Kind::Quic => {
                    buf.copy_within(read..end, write);
                    write += end - read;
                }
                Kind::Stun => self.aux.on_stun(from, &buf[read..end]),
                Kind::Other => Counters::bump(&self.aux.stats.other_dropped),
            }
            read = end;
        }
        write
    }
}

impl Demux {
    /// Sends quinn's datagrams for a relayed peer to the TURN server, one
    /// wrapped message per segment.
    fn send_relayed(&self, relay: &Relay, transmit: &Transmit<'_>) -> io::Result<()> {
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let server = match (self.aux.local.ip(), relay.server().ip()) {
            (IpAddr::V6(_), IpAddr::V4(v4)) => {
                SocketAddr::new(v4.to_ipv6_mapped().into(), relay.server().port())
            }
            _ => relay.server(),
        };
        for (i, segment) in transmit.contents.chunks(size).enumerate() {
            // No permission (yet, or any more): quinn's loss recovery copes.
            let Some(wrapped) = relay.wrap(transmit.destination, segment) else {
                continue;
            };
            let r = self.inner.try_send(&Transmit {
                destination: server,
                ecn: None,
                contents: &wrapped,
                segment_size: None,
                src_ip: transmit.src_ip,
            });
            match r {
                // Nothing went yet: quinn waits for the socket and retries.
                Err(e) if i == 0 => return Err(e),
                // Part went: the rest is lost like any dropped packet.
                Err(_) => return Ok(()),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Moves relayed datagrams waiting in the relay into `bufs`; returns how many.
    fn drain_relayed(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let Some(relay) = self.aux.relay.get() else {
            return 0;
        };
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((peer, data)) = relay.take_queued() else {
                break;
            };
            let buf = &mut bufs[n];
            if data.len() > buf.len() {
                Counters::bump(&self.aux.stats.other_dropped);
                continue;
            }
            buf[..data.len()].copy_from_slice(&data);
            meta[n] = RecvMeta {
                addr: peer,
                len: data.len(),
                stride: data.len(),
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        n
    }
}

impl AsyncUdpSocket for Demux {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match self.aux.relay.get() {
            Some(relay) if relay.relays_for(transmit.destination) => {
                self.send_relayed(relay, transmit)
            }
            _ => self.inner.try_send(transmit),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let slots = bufs.len().min(RECV_SLOTS);
        let bufs = &mut bufs[..slots];
        loop {
            let relayed = self.drain_relayed(bufs, meta);
            if relayed > 0 {
                return Poll::Ready(Ok(relayed));
            }
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let mut kept = 0;
            let relay = self.aux.relay.get();
            for i in 0..n {
                let m = meta[i];
                if let Some(relay) = relay
                    && canonical(m.addr) == relay.server()
                {
                    // TURN's: answers and relayed peers' packets (queued).
                    let stride = if m.stride == 0 { m.len } else { m.stride };
                    for segment in bufs[i][..m.len].chunks(stride) {
                        relay.recv(relay.server(), self.aux.local, segment);
                    }
                    continue;
                }
                let len = self.filter(m.addr, &mut bufs[i][..m.len], m.stride);
                if len == 0 {
                    continue;
                }
                if kept != i {
                    // Only after a STUN datagram in the same batch: move the
                    // QUIC data down so quinn sees `kept` contiguous entries.
                    let (head, tail) = bufs.split_at_mut(i);
                    head[kept][..len].copy_from_slice(&tail[0][..len]);
                }
                meta[kept] = RecvMeta { len, ..m };
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything was STUN: poll again (registers the waker if empty).
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use stun_types::message::MessageWriteVec;
    use stun_types::prelude::*;

    use super::*;

    fn binding_request() -> Vec<u8> {
        Message::builder_request(BINDING, MessageWriteVec::new()).finish()
    }

    #[test]
    fn quic_and_stun_never_overlap() {
        // Long header (Initial), short header with the fixed bit.
        assert_eq!(classify(&[0xc3, 0, 0, 0, 1]), Kind::Quic);
        assert_eq!(classify(&[0x41, 1, 2, 3]), Kind::Quic);
        // A long header whose fixed bit is clear (version negotiation) is still quinn's.
        assert_eq!(classify(&[0x80, 0, 0, 0, 0]), Kind::Quic);
        assert_eq!(classify(&binding_request()), Kind::Stun);
        let ind = Message::builder_indication(BINDING, MessageWriteVec::new()).finish();
        assert_eq!(classify(&ind), Kind::Stun);
        // Top bits clear without the cookie, a wrong length, or empty: dropped.
        let mut no_cookie = binding_request();
        no_cookie[4] = 0;
        assert_eq!(classify(&no_cookie), Kind::Other);
        let mut long = binding_request();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(classify(&long), Kind::Other);
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(&[0x00; 19]), Kind::Other);
    }

    #[tokio::test]
    async fn stun_is_taken_out_of_a_batch_and_quic_kept_in_order() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (demux, aux) = Demux::new(sock).unwrap();
        let ind = Message::builder_indication(BINDING, MessageWriteVec::new()).finish();
        let stride = ind.len();
        let from: SocketAddr = "192.0.2.1:5".parse().unwrap();
        // Three segments of one GRO batch: QUIC, a punch packet, short QUIC.
        let mut buf = vec![0x41; stride];
        buf.extend_from_slice(&ind);
        buf.extend_from_slice(&[0x42, 7, 7]);
        let left = demux.filter(from, &mut buf, stride);
        assert_eq!(left, stride + 3);
        assert!(buf[..stride].iter().all(|&b| b == 0x41));
        assert_eq!(&buf[stride..stride + 3], &[0x42, 7, 7]);
        assert_eq!(aux.stats.punches_received.load(Ordering::Relaxed), 1);
        // Garbage is counted, not handed to quinn.
        let mut junk = vec![0x00; 8];
        assert_eq!(demux.filter(from, &mut junk, 0), 0);
        assert_eq!(aux.stats.other_dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_receive_call_fills_at_most_recv_slots_and_loses_nothing() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        let (demux, _aux) = Demux::new(sock).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total = RECV_SLOTS * 3 + 1;
        for i in 0..total {
            tx.send_to(&[0x41, i as u8], to).unwrap();
        }
        // quinn offers 32 slots per call.
        let mut storage = vec![[0u8; 64]; 32];
        let mut seen = Vec::new();
        let mut calls = 0;
        while seen.len() < total {
            let mut bufs: Vec<IoSliceMut<'_>> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let mut meta = [RecvMeta::default(); 32];
            let n = std::future::poll_fn(|cx| demux.poll_recv(cx, &mut bufs, &mut meta))
                .await
                .unwrap();
            assert!((1..=RECV_SLOTS).contains(&n), "{n} slots filled");
            calls += 1;
            for (m, b) in meta.iter().zip(&bufs).take(n) {
                let stride = if m.stride == 0 { m.len } else { m.stride };
                seen.extend(b[..m.len].chunks(stride).map(|d| d[1]));
            }
        }
        assert_eq!(seen, (0..total).map(|i| i as u8).collect::<Vec<_>>());
        assert!(calls >= 4, "{calls} calls");
    }

    #[tokio::test]
    async fn an_answer_is_taken_only_from_the_server_asked() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (demux, aux) = Demux::new(sock).unwrap();
        let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let request = binding_request();
        let req = Message::from_bytes(&request).unwrap();
        let mut tx = aux.expect(req.transaction_id(), server).unwrap();
        let mapped: SocketAddr = "198.51.100.7:4242".parse().unwrap();
        let mut answer = Message::builder_success(&req, MessageWriteVec::new());
        answer
            .add_attribute(&XorMappedAddress::new(mapped, req.transaction_id()))
            .unwrap();
        let mut answer = answer.finish();
        // From elsewhere: dropped, still waiting.
        let mut copy = answer.clone();
        assert_eq!(
            demux.filter("192.0.2.9:3478".parse().unwrap(), &mut copy, 0),
            0
        );
        assert_eq!(aux.stats.stun_dropped.load(Ordering::Relaxed), 1);
        // From the server (as a dual-stack socket reports it): answered.
        let v6: SocketAddr = "[::ffff:192.0.2.1]:3478".parse().unwrap();
        assert_eq!(demux.filter(v6, &mut answer, 0), 0);
        assert_eq!((&mut tx.answer).await.unwrap(), mapped);
        assert_eq!(aux.stats.stun_answers.load(Ordering::Relaxed), 1);
        assert!(aux.pending.is_empty());
    }
}
