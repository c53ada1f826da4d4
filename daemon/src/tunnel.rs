//! Tunnels: authenticated QUIC dataChannels between this site and its peers.
//!
//! Every QUIC connection between two sites is a dataChannel; all of them
//! between one pair, dialled by either side, form that pair's tunnel and any
//! of them carries streams in both directions. This module owns the quinn
//! endpoints, the dial loops (with backoff), the key proof, the registry of
//! live channels and the choice of channel for each new stream. Until both
//! key proofs passed, a connection gets one deadline, tiny windows and (on a
//! listener) a place under the [`admission`] caps. It reports
//! channel changes to the site actor as [`TunnelEvent`]s and decides nothing
//! about discovery or apps.

pub mod admission;
pub mod auth;
pub mod backoff;
pub mod congestion;
mod dial_book;
pub mod endpoint;
pub mod frame;
mod over_tcp;
pub mod pick;
pub mod punch;
pub mod relay;
pub mod stats;
pub mod stun;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod udp_socket;
pub mod waiters;
pub mod window;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, trace, warn};

use crate::app::{OpenError, StreamOpener, StreamServer, TunnelStream};
use crate::config::{
    CongestionControl, LocalSocket, PublicAddress, RelayConfig, SiteName, SocketMode, Transport,
};
use crate::counters::Counters;
use crate::crypto::Keys;
use crate::error::Chain;
use crate::message::announce::{LoopbackPeers, PunchInfo};
use crate::warn_limit::{SharedWarnLimiter, WarnLimiter};
use admission::Verdict;
use auth::{AuthError, PeerId};
use dial_book::DialBook;
use punch::{CannotPunch, MappingSlot, Sprays};
use relay::{Relay, RelayState};
use stun::Mapping;
use tls::{Fingerprint, Identity};
use udp::Aux;
use waiters::Waiters;

/// QUIC application close code for an orderly close (shutdown, peer replaced).
pub const CLOSE_NORMAL: u32 = 0;
/// QUIC application close code for a channel the site refused (its claimed
/// site and instance did not match a live announcement); the dialer backs off.
pub const CLOSE_REFUSED: u32 = 0x5752;

/// Why the tunnel layer failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// A UDP socket could not be bound.
    #[error("cannot bind UDP socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS configuration failed (should not happen with generated identities).
    #[error("tls: {0}")]
    Tls(String),
    /// A TCP socket (`transportProtocol: tcp`) could not be bound.
    #[error("cannot bind TCP socket {addr}: {source}")]
    BindTcp {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

pub use crate::types::{ChannelId, ChannelRoute, Direction};

/// Why one dial attempt produced no authenticated channel.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// quinn refused to start the connection (bad address, endpoint closed).
    #[error("cannot start the connection")]
    Start(#[source] quinn::ConnectError),
    /// No QUIC handshake completed by the deadline (handshake plus proof).
    #[error("no quic handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The QUIC handshake failed.
    #[error("quic handshake failed")]
    Handshake(#[source] quinn::ConnectionError),
    /// The key proof failed.
    #[error("key proof failed")]
    Auth(#[source] AuthError),
    /// This site's own public mapping is not known (STUN got no answer).
    #[error("own public mapping unknown: {0}")]
    NoMapping(String),
    /// Punching toward this socket cannot work (see [`punch::cannot_punch`]).
    #[error(transparent)]
    CannotPunch(CannotPunch),
    /// The socket's owner did not answer the rendezvous in time.
    #[error("no punch answer from the peer within {0:?}")]
    NoPunchAnswer(Duration),
    /// The TCP connection to a `tcp` socket failed.
    #[error("tcp connection failed")]
    Tcp(#[source] std::io::Error),
    /// The TCP connection to a `tcp` socket was not up in time.
    #[error("no tcp connection within {0:?}")]
    TcpTimeout(Duration),
    /// The listener proved a different site or instance than announced.
    #[error(
        "expected site '{}' instance {}, found site '{}' instance {}",
        expected.site, expected.instance, found.site, found.instance
    )]
    UnexpectedPeer {
        /// Who we meant to dial.
        expected: PeerId,
        /// Who answered.
        found: PeerId,
    },
}

/// A change the site actor must know about.
#[derive(Debug, Clone)]
pub enum TunnelEvent {
    /// A dataChannel passed the key proof. Outbound channels carry streams
    /// now; inbound ones wait for [`Registry::confirm`].
    ChannelUp {
        /// The peer.
        peer: PeerId,
        /// The channel.
        channel: ChannelId,
        /// Who dialled.
        direction: Direction,
        /// The certificate the peer presented (outbound: the pinned one).
        cert: Fingerprint,
        /// QUIC over UDP or over TCP.
        transport: Transport,
    },
    /// A dataChannel is gone.
    ChannelDown {
        /// The peer.
        peer: PeerId,
        /// The channel.
        channel: ChannelId,
        /// Why, for logs and the event feed.
        reason: String,
    },
    /// A socket's public mapping was learned (or re-learned) by STUN, or
    /// learning it failed.
    Mapped {
        /// Index of the socket in `tunnel.localSockets`.
        socket: u32,
        /// The mapping, or why there is none.
        result: Result<Mapping, String>,
    },
    /// A dial loop asks the owner of a punched socket to open its NAT:
    /// the site sends the [`Punch`](crate::message::announce::Punch) message.
    PunchRequest {
        /// The owner.
        peer: PeerId,
        /// Its `AnnouncedSocket::id`.
        socket: u32,
        /// Our public address for that dial.
        from: SocketAddr,
        /// Matches the answer ([`Tunnels::punch_answered`]).
        nonce: u64,
        /// Ask for the owner's TURN relay instead of punch packets.
        relay: bool,
    },
    /// The TURN relay of a `hole-punching` socket changed state.
    Relayed {
        /// Index of the socket in `tunnel.localSockets`.
        socket: u32,
        /// Allocated (with the relayed address), allocating, or failed.
        state: RelayState,
    },
    /// Dialling one of a peer's sockets failed again.
    DialFailed {
        /// The peer.
        peer: PeerId,
        /// `AnnouncedSocket::id` of the target.
        socket: u32,
        /// Consecutive failures so far.
        attempts: u32,
    },
}

/// One live, authenticated dataChannel.
#[derive(Debug)]
pub struct Channel {
    /// Local id.
    pub id: ChannelId,
    /// The authenticated peer.
    pub peer: PeerId,
    /// Who dialled.
    pub direction: Direction,
    /// Local address of the endpoint carrying it.
    pub local: Option<SocketAddr>,
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// When it came up.
    pub since: Instant,
    /// Streams open on it right now (both directions).
    pub open_streams: AtomicUsize,
    /// Redials it took to come up (outbound only).
    pub attempts: u32,
    /// False while nothing has arrived from the peer for longer than
    /// [`SILENCE_LIMIT`]: new streams then go elsewhere, long before the idle
    /// timeout declares the channel dead.
    pub responsive: AtomicBool,
    /// SHA-256 of the peer's TLS certificate (outbound: the pinned one;
    /// inbound: the client certificate it proved it holds the key of).
    pub cert: Fingerprint,
    /// How its packets travel.
    pub route: ChannelRoute,
    /// QUIC over UDP, or framed over TCP.
    pub transport: Transport,
    /// Replaced by a better channel: takes no new streams and closes once
    /// the ones it carries have finished.
    pub draining: AtomicBool,
    /// Whether the site let it carry streams (see [`Registry::confirm`]).
    confirmed: watch::Sender<bool>,
    /// Hands its DATAGRAM frames to UDP flows.
    pub datagrams: Arc<crate::app::udp::Demux>,
}

impl Channel {
    /// Whether it may carry streams: outbound channels from the start,
    /// inbound ones once the site matched their claim to an announcement.
    pub fn is_confirmed(&self) -> bool {
        *self.confirmed.borrow()
    }

    /// Resolves once the channel is confirmed.
    async fn confirmed(&self) {
        let mut rx = self.confirmed.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// The peer sends a keep-alive every [`endpoint::KEEP_ALIVE`]; this much
/// silence means the path is probably broken.
pub const SILENCE_LIMIT: Duration = Duration::from_millis(3_500);

/// Live channels by peer site; the one structure the data path reads.
///
/// A plain mutex, not the site actor: picking a channel happens for every new
/// app connection and must not wait behind discovery work. The lock is held
/// only to copy a few `Arc`s, never across an await.
#[derive(Debug, Default)]
pub struct Registry {
    peers: Mutex<HashMap<SiteName, Vec<Arc<Channel>>>>,
    dials: Mutex<HashMap<u64, DialStatus>>,
    next_dial: AtomicU64,
}

/// What an outbound dial loop is doing, for the control plane.
#[derive(Debug, Clone)]
pub struct DialStatus {
    /// The peer dialled.
    pub peer: SiteName,
    /// The address dialled.
    pub remote: SocketAddr,
    /// The live channel it produced, if any.
    pub channel: Option<ChannelId>,
    /// Consecutive failures.
    pub attempts: u32,
    /// The last failure or close reason.
    pub last_error: Option<String>,
    /// When the loop started.
    pub since: Instant,
    /// Punched through a rendezvous, or dialled directly.
    pub route: ChannelRoute,
    /// QUIC over UDP, or framed over TCP.
    pub transport: Transport,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SiteName, Vec<Arc<Channel>>>> {
        lock(&self.peers)
    }

    fn insert(&self, ch: Arc<Channel>) {
        self.lock()
            .entry(ch.peer.site.clone())
            .or_default()
            .push(ch);
    }

    fn remove(&self, site: &SiteName, id: ChannelId) {
        let mut peers = self.lock();
        if let Some(v) = peers.get_mut(site) {
            v.retain(|c| c.id != id);
            if v.is_empty() {
                peers.remove(site);
            }
        }
    }

    /// Live channels to `site`.
    pub fn channels(&self, site: &SiteName) -> Vec<Arc<Channel>> {
        self.lock().get(site).cloned().unwrap_or_default()
    }

    /// Every running dial loop.
    pub fn dials(&self) -> Vec<DialStatus> {
        lock(&self.dials).values().cloned().collect()
    }

    fn dial_update(&self, id: u64, f: impl FnOnce(&mut DialStatus)) {
        if let Some(d) = lock(&self.dials).get_mut(&id) {
            f(d);
        }
    }

    /// Every live channel.
    pub fn all(&self) -> Vec<Arc<Channel>> {
        self.lock().values().flatten().cloned().collect()
    }

    /// Lets the inbound channel `id` to `site` carry streams: picked for new
    /// streams, and the peer's streams served. Returns whether it exists.
    pub fn confirm(&self, site: &SiteName, id: ChannelId) -> bool {
        match self.channels(site).into_iter().find(|c| c.id == id) {
            Some(ch) => {
                ch.confirmed.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Closes channel `id` to `site` with `code` and `reason` (which the peer
    /// sees). Returns whether it exists.
    pub fn close(&self, site: &SiteName, id: ChannelId, code: u32, reason: &str) -> bool {
        match self.channels(site).into_iter().find(|c| c.id == id) {
            Some(ch) => {
                ch.conn.close(code.into(), reason.as_bytes());
                true
            }
            None => false,
        }
    }

    fn pick(&self, site: &SiteName, skip: &[ChannelId]) -> Option<Arc<Channel>> {
        let chans = self.channels(site);
        let idx = pick::pick(chans.iter().enumerate().map(|(index, c)| pick::Candidate {
            index,
            open_streams: c.open_streams.load(Ordering::Relaxed),
            rtt: c.conn.rtt(),
            healthy: c.conn.close_reason().is_none()
                && c.is_confirmed()
                && c.responsive.load(Ordering::Relaxed)
                && !c.draining.load(Ordering::Relaxed)
                && !skip.contains(&c.id),
            relayed: c.route == ChannelRoute::Relayed,
            over_tcp: c.transport == Transport::Tcp,
        }))?;
        chans.into_iter().nth(idx)
    }
}

/// Locks a tunnel-layer mutex. Every critical section here is a single
/// insert, retain or copy, so a panic while holding one cannot leave the data
/// inconsistent: poisoning is ignored rather than propagated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps a channel's open-stream count right for as long as a stream lives.
#[derive(Debug)]
struct StreamGuard(Arc<Channel>);

impl StreamGuard {
    fn new(ch: Arc<Channel>) -> Self {
        ch.open_streams.fetch_add(1, Ordering::Relaxed);
        Self(ch)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamOpener for Registry {
    async fn open_stream(&self, site: &SiteName) -> Result<TunnelStream, OpenError> {
        let mut tried = Vec::new();
        loop {
            let Some(ch) = self.pick(site, &tried) else {
                return Err(if tried.is_empty() {
                    OpenError::NotConnected(site.clone())
                } else {
                    OpenError::Connection(format!(
                        "every dataChannel to site '{site}' failed to open a stream"
                    ))
                });
            };
            // Count the stream before opening so concurrent picks see the load.
            let guard = StreamGuard::new(ch.clone());
            match ch.conn.open_bi().await {
                Ok((send, recv)) => {
                    return Ok(TunnelStream {
                        send,
                        recv,
                        guard: Box::new(guard),
                        channel: ch.id,
                        datagrams: ch.datagrams.clone(),
                    });
                }
                Err(e) => {
                    debug!(peer.site = %site, channel.id = %ch.id, error = %e, "open stream failed, trying another channel");
                    tried.push(ch.id);
                }
            }
        }
    }
}

/// Everything a channel task needs; cheap to clone into tasks.
#[derive(Clone)]
struct Ctx {
    registry: Arc<Registry>,
    keys: Arc<Keys>,
    /// Presented as the client certificate when dialling.
    identity: Arc<Identity>,
    me: PeerId,
    server: Arc<dyn StreamServer>,
    counters: Arc<Counters>,
    events_tx: mpsc::Sender<TunnelEvent>,
    next_id: Arc<AtomicU64>,
    tracker: TaskTracker,
    /// Failed key proofs are logged at most once a minute (a flood would
    /// otherwise write a line per connection).
    auth_warn: Arc<SharedWarnLimiter>,
    /// Dial loops waiting for a punch answer.
    waiters: Arc<Waiters<u64, SocketAddr>>,
    /// Punch packets being sent for peers' rendezvous.
    sprays: Arc<Sprays>,
    /// Whether loopback STUN servers announced by peers may be used.
    loopback: LoopbackPeers,
    /// Our first `hole-punching` socket: punched dials leave from it, so
    /// its learned mapping is the one the owner punches toward.
    punch_socket: Arc<Mutex<Option<PunchSocket>>>,
}

/// A `hole-punching` socket's endpoint, shared with dial loops.
#[derive(Clone)]
struct PunchSocket {
    ep: quinn::Endpoint,
    aux: Arc<Aux>,
    mapping: Arc<MappingSlot>,
}

/// One of our sockets, for punch sprays and early STUN refreshes.
struct OwnSocket {
    aux: Arc<Aux>,
    mapping: Arc<MappingSlot>,
}

/// The tunnel manager of one site: listeners, dial loops and the registry.
pub struct Tunnels {
    ctx: Ctx,
    identity: Arc<Identity>,
    listen_transport: Arc<quinn::TransportConfig>,
    dial_transport: Arc<quinn::TransportConfig>,
    /// The same for channels over TCP (larger packets: TCP has no path MTU).
    tcp_listen_transport: Arc<quinn::TransportConfig>,
    tcp_dial_transport: Arc<quinn::TransportConfig>,
    endpoints: Mutex<Vec<quinn::Endpoint>>,
    own: Mutex<HashMap<u32, OwnSocket>>,
    relay: Option<RelayConfig>,
    cancel: CancellationToken,
}

/// What a [`Tunnels`] manager is built from.
pub struct Setup {
    /// This site and process, as proven to peers.
    pub me: PeerId,
    /// Keys derived from `crypto.key` (the tunnel key proof).
    pub keys: Arc<Keys>,
    /// `tunnel.congestionControl`.
    pub congestion: CongestionControl,
    /// Serves the streams peers open (the exposed side).
    pub server: Arc<dyn StreamServer>,
    /// Drop/refuse counters.
    pub counters: Arc<Counters>,
    /// Where channel changes are reported.
    pub events_tx: mpsc::Sender<TunnelEvent>,
    /// Whether STUN servers at loopback addresses that peers announce may be
    /// asked (see [`LoopbackPeers`]).
    pub loopback: LoopbackPeers,
    /// `tunnel.relay`: the TURN server `hole-punching` sockets allocate on.
    pub relay: Option<RelayConfig>,
}

impl Tunnels {
    /// A manager for this site; its tasks stop when `cancel` fires and are
    /// spawned on `tracker`.
    pub fn new(
        setup: Setup,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Self, TunnelError> {
        let Setup {
            me,
            keys,
            congestion: cc,
            server,
            counters,
            events_tx,
            loopback,
            relay,
        } = setup;
        let identity = Arc::new(Identity::generate()?);
        Ok(Self {
            ctx: Ctx {
                registry: Arc::default(),
                keys,
                identity: identity.clone(),
                me,
                server,
                counters,
                events_tx,
                next_id: Arc::new(AtomicU64::new(1)),
                tracker,
                auth_warn: Arc::default(),
                waiters: Arc::new(Waiters::new(punch::MAX_WAITERS)),
                sprays: Arc::default(),
                loopback,
                punch_socket: Arc::default(),
            },
            identity,
            listen_transport: endpoint::transport_config(cc, endpoint::Side::Listener),
            dial_transport: endpoint::transport_config(cc, endpoint::Side::Dialer),
            tcp_listen_transport: endpoint::tcp_transport_config(cc, endpoint::Side::Listener),
            tcp_dial_transport: endpoint::tcp_transport_config(cc, endpoint::Side::Dialer),
            endpoints: Mutex::default(),
            own: Mutex::default(),
            relay,
            cancel,
        })
    }

    /// The registry (stream opener for remote apps).
    pub fn registry(&self) -> Arc<Registry> {
        self.ctx.registry.clone()
    }

    /// Fingerprint peers pin when dialling us.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// Binds a listening endpoint for `tunnel.localSockets[index]` and
    /// accepts dataChannels on it until shutdown; learns its public mapping
    /// by STUN when the socket asks for it ([`TunnelEvent::Mapped`]).
    /// Returns the bound address.
    pub fn listen(&self, index: u32, socket: &LocalSocket) -> Result<SocketAddr, TunnelError> {
        if socket.transport == Transport::Tcp {
            return self.listen_tcp(index, socket);
        }
        let mut server = self.identity.server_config(self.listen_transport.clone())?;
        endpoint::limit_incoming(&mut server);
        let (ep, aux) = endpoint::bind(socket.listen, Some(server))?;
        let local = ep.local_addr().map_err(|e| TunnelError::Bind {
            addr: socket.listen,
            source: e,
        })?;
        lock(&self.endpoints).push(ep.clone());
        let mapping = Arc::new(MappingSlot::default());
        let span = info_span!("listener", socket = index, local = %local);
        if socket.public_address == PublicAddress::AutoStunDetect {
            self.ctx.tracker.spawn(
                punch::refresh(
                    aux.clone(),
                    socket.stun_servers.clone(),
                    index,
                    mapping.clone(),
                    self.ctx.events_tx.clone(),
                    self.cancel.child_token(),
                )
                .instrument(span.clone()),
            );
        }
        let path = if socket.mode == SocketMode::HolePunching {
            if let Some(cfg) = &self.relay {
                self.ctx.tracker.spawn(
                    relay_setup(
                        aux.clone(),
                        cfg.clone(),
                        index,
                        self.ctx.events_tx.clone(),
                        self.cancel.child_token(),
                        self.ctx.tracker.clone(),
                    )
                    .instrument(span.clone()),
                );
            }
            lock(&self.ctx.punch_socket).get_or_insert_with(|| PunchSocket {
                ep: ep.clone(),
                aux: aux.clone(),
                mapping: mapping.clone(),
            });
            ChannelRoute::Punched
        } else {
            ChannelRoute::Direct
        };
        lock(&self.own).insert(
            index,
            OwnSocket {
                aux: aux.clone(),
                mapping,
            },
        );
        let ctx = self.ctx.clone();
        let cancel = self.cancel.child_token();
        self.ctx
            .tracker
            .spawn(accept_loop(ep, aux, ctx, path, cancel).instrument(span));
        Ok(local)
    }

    /// Binds `tunnel.localSockets[index]` on TCP and accepts dataChannels
    /// on it until shutdown (see [`over_tcp`]). Returns the bound address.
    fn listen_tcp(&self, index: u32, socket: &LocalSocket) -> Result<SocketAddr, TunnelError> {
        let server = self
            .identity
            .server_config(self.tcp_listen_transport.clone())?;
        let listener = over_tcp::bind(socket.listen)?;
        let local = listener.local_addr().map_err(|e| TunnelError::BindTcp {
            addr: socket.listen,
            source: e,
        })?;
        let span = info_span!("listener", socket = index, local = %local, transport = "tcp");
        self.ctx.tracker.spawn(
            over_tcp::accept_loop(
                listener,
                server,
                self.ctx.clone(),
                self.cancel.child_token(),
            )
            .instrument(span),
        );
        Ok(local)
    }

    /// Sends punch packets from socket `index` toward `to` (a peer asked,
    /// about to dial it from there). False when the socket is unknown or
    /// too many sprays run.
    pub fn spray(&self, index: u32, to: SocketAddr) -> bool {
        let Some(aux) = lock(&self.own).get(&index).map(|o| o.aux.clone()) else {
            return false;
        };
        self.ctx
            .sprays
            .start(aux, to, &self.ctx.tracker, self.cancel.child_token())
    }

    /// Lets `peer`'s IP send through socket `index`'s TURN relay; the relayed
    /// address to dial once the server installed the permission, `None` when
    /// the socket has no allocation or the server refused.
    pub fn permit_relay(
        &self,
        index: u32,
        peer: std::net::IpAddr,
    ) -> impl Future<Output = Option<SocketAddr>> + Send + 'static {
        let relay = lock(&self.own)
            .get(&index)
            .and_then(|o| o.aux.relay().cloned());
        async move {
            let relay = relay?;
            let RelayState::Allocated(at) = relay.state().borrow().clone() else {
                return None;
            };
            relay.permit(peer).await.then_some(at)
        }
    }

    /// Socket `index`'s public mapping as last learned by STUN.
    pub fn mapping(&self, index: u32) -> Option<Mapping> {
        lock(&self.own).get(&index).and_then(|o| o.mapping.get())
    }

    /// Re-learns every STUN socket's mapping now (a NAT may have changed).
    pub fn refresh_mappings(&self) {
        for o in lock(&self.own).values() {
            o.mapping.poke.notify_one();
        }
    }

    /// Hands a punch answer to the dial loop waiting on `nonce`.
    pub fn punch_answered(&self, nonce: u64, at: SocketAddr) -> bool {
        self.ctx.waiters.answer(&nonce, at)
    }

    /// Starts a dial loop to one socket of a peer: dial, prove, carry streams
    /// until the channel dies, back off, redial — until `cancel` fires.
    pub fn dial(
        &self,
        peer: PeerId,
        socket: u32,
        addr: SocketAddr,
        pinned: Fingerprint,
        cancel: CancellationToken,
    ) {
        self.dial_target(peer, socket, addr, None, pinned, cancel);
    }

    /// Starts a dial loop to a peer's TCP socket (`transportProtocol: tcp`):
    /// the same loop over a TCP connection per attempt (`over_tcp`).
    /// `drain` ends it gently: no redial, and its channel closes once its
    /// streams have ended.
    pub fn dial_tcp(
        &self,
        peer: PeerId,
        socket: u32,
        addr: SocketAddr,
        pinned: Fingerprint,
        cancel: CancellationToken,
        drain: CancellationToken,
    ) {
        let span = info_span!("dial", peer.site = %peer.site, remote = %addr, transport = "tcp");
        self.ctx.tracker.spawn(
            over_tcp::dial_loop(
                self.ctx.clone(),
                self.tcp_dial_transport.clone(),
                peer,
                socket,
                addr,
                pinned,
                (cancel, drain),
            )
            .instrument(span),
        );
    }

    /// Starts a dial loop to a `hole-punching` socket of a peer: each
    /// attempt is a rendezvous ([`punch`]) followed by the dial.
    pub fn dial_punched(
        &self,
        peer: PeerId,
        socket: u32,
        addr: SocketAddr,
        info: PunchInfo,
        pinned: Fingerprint,
        cancel: CancellationToken,
    ) {
        self.dial_target(peer, socket, addr, Some(info), pinned, cancel);
    }

    fn dial_target(
        &self,
        peer: PeerId,
        socket: u32,
        addr: SocketAddr,
        punch: Option<PunchInfo>,
        pinned: Fingerprint,
        cancel: CancellationToken,
    ) {
        let ctx = self.ctx.clone();
        let transport = self.dial_transport.clone();
        let span =
            info_span!("dial", peer.site = %peer.site, remote = %addr, punched = punch.is_some());
        let target = Target {
            socket,
            addr,
            punch,
        };
        self.ctx
            .tracker
            .spawn(dial_loop(ctx, transport, peer, target, pinned, cancel).instrument(span));
    }

    /// Closes every channel and waits (bounded) for the close to reach peers,
    /// so they drop their tunnels at once instead of after an idle timeout.
    pub async fn close_all(&self, grace: Duration) {
        for ch in self.ctx.registry.all() {
            ch.conn.close(CLOSE_NORMAL.into(), b"site shutting down");
        }
        let eps: Vec<_> = lock(&self.endpoints).drain(..).collect();
        for ep in &eps {
            ep.close(CLOSE_NORMAL.into(), b"site shutting down");
        }
        let _ = tokio::time::timeout(grace, async {
            for ep in eps {
                ep.wait_idle().await;
            }
        })
        .await;
    }
}

/// Accepts a listener's connections, executing the [`admission`] decision for
/// each before any state is kept for it.
async fn accept_loop(
    ep: quinn::Endpoint,
    aux: Arc<Aux>,
    ctx: Ctx,
    path: ChannelRoute,
    cancel: CancellationToken,
) {
    let local = ep.local_addr().ok();
    let gate = admission::Gate::new(admission::Limits::default());
    let mut crowded_warn = WarnLimiter::default();
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => break,
            i = ep.accept() => match i { Some(i) => i, None => break },
        };
        let remote = incoming.remote_address();
        let now = Instant::now();
        match gate.decide(remote.ip(), incoming.remote_address_validated(), now) {
            Verdict::Admit(slot) => {
                let ctx2 = ctx.clone();
                let cancel = cancel.child_token();
                ctx.tracker.spawn(
                    inbound(
                        ctx2,
                        incoming,
                        slot,
                        cancel,
                        Via {
                            local,
                            path,
                            aux: Some(aux.clone()),
                            transport: Transport::Quic,
                        },
                    )
                    .instrument(info_span!("inbound", remote = %remote)),
                );
            }
            Verdict::Retry => {
                Counters::bump(&ctx.counters.preauth_retried);
                // Only unproven addresses are asked to retry, so this cannot
                // fail; if it did, answering nothing is the safe fallback.
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
            }
            Verdict::Refuse(why) => {
                turned_away(&ctx, &gate, &mut crowded_warn, remote, why, now);
                incoming.refuse();
            }
            Verdict::Ignore(why) => {
                turned_away(&ctx, &gate, &mut crowded_warn, remote, why, now);
                incoming.ignore();
            }
        }
    }
    ep.close(CLOSE_NORMAL.into(), b"site shutting down");
}

/// Allocates a relayed address for a `hole-punching` socket on the TURN
/// server and reports the allocation's state to the site until `cancel`.
async fn relay_setup(
    aux: Arc<Aux>,
    cfg: RelayConfig,
    index: u32,
    events: mpsc::Sender<TunnelEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let turn = &cfg.turn;
    let family = Some(aux.local_addr().ip());
    let server = loop {
        if let Some(s) = punch::resolve_host(&turn.host, turn.port, family).await {
            break s;
        }
        let state = RelayState::Failed(format!(
            "the TURN server {turn} has no address this socket can reach"
        ));
        if events
            .send(TunnelEvent::Relayed {
                socket: index,
                state,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            () = tokio::time::sleep(relay::RETRY) => {}
        }
    };
    let relay = Arc::new(Relay::new(
        aux.local_addr(),
        server,
        &turn.username,
        turn.password.0.as_str(),
    ));
    aux.set_relay(relay.clone());
    let mut state = relay.state();
    tracker.spawn(relay::run(relay, aux, cancel.clone()).in_current_span());
    loop {
        let s = state.borrow_and_update().clone();
        if events
            .send(TunnelEvent::Relayed {
                socket: index,
                state: s,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = state.changed() => if r.is_err() { return },
        }
    }
}

/// Counts and logs (rate-limited) a connection refused or ignored before its proof.
fn turned_away(
    ctx: &Ctx,
    gate: &admission::Gate,
    limiter: &mut WarnLimiter,
    remote: SocketAddr,
    why: admission::Crowded,
    now: Instant,
) {
    Counters::bump(&ctx.counters.preauth_refused);
    let pending = gate.pending();
    match limiter.allow(now) {
        Some(suppressed) => {
            warn!(%remote, crowded = ?why, pending, suppressed, "turning away unauthenticated connections")
        }
        None => {
            debug!(%remote, crowded = ?why, pending, "turned away an unauthenticated connection")
        }
    }
}

/// Which listener an incoming connection arrived on.
struct Via {
    /// The listener's local address.
    local: Option<SocketAddr>,
    /// How the listener's channels travel (a punched socket's relayed ones
    /// are told apart by `aux`).
    path: ChannelRoute,
    /// The UDP socket's STUN/TURN side; none for TCP.
    aux: Option<Arc<Aux>>,
    /// UDP or TCP.
    transport: Transport,
}

/// One admitted incoming connection: QUIC handshake and the dialer's proof by
/// the slot's deadline, then the full windows and the channel. The slot (the
/// connection's place under the admission caps) is given back as soon as the
/// proof passed or failed.
async fn inbound(
    ctx: Ctx,
    incoming: quinn::Incoming,
    slot: admission::Slot,
    cancel: CancellationToken,
    via: Via,
) {
    let Via {
        local,
        path,
        aux,
        transport,
    } = via;
    let deadline = tokio::time::Instant::from_std(slot.deadline());
    let connecting = match endpoint::spanless(|| incoming.accept()) {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %Chain(&e), "cannot accept connection");
            return;
        }
    };
    // Dropping an unfinished handshake closes the connection.
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(error = %Chain(&e), "quic handshake failed");
            return;
        }
        Err(_) => {
            auth_failed(&ctx, &AuthError::Timeout(auth::DEADLINE));
            return;
        }
    };
    // The client-cert verifier demands one, so this always exists.
    let Some(cert) = tls::peer_fingerprint(&conn) else {
        conn.close(auth::AUTH_FAILED.into(), b"no client certificate");
        return;
    };
    let proof = tokio::time::timeout_at(deadline, auth::server(&conn, &ctx.keys, &ctx.me))
        .await
        .unwrap_or(Err(AuthError::Timeout(auth::DEADLINE)));
    drop(slot);
    // A punched socket also takes channels its TURN relay forwards.
    let relayed = aux
        .and_then(|a| a.relay().cloned())
        .is_some_and(|r| r.relays_for(conn.remote_address()));
    let path = if relayed { ChannelRoute::Relayed } else { path };
    match proof {
        Ok(peer) => {
            endpoint::grant_after_auth(&conn);
            let origin = Origin {
                direction: Direction::Inbound,
                attempts: 0,
                dial_id: None,
                local,
                cert,
                path,
                transport,
            };
            let reason = run_channel(&ctx, conn, peer, origin, &cancel).await;
            debug!(%reason, "inbound channel ended");
        }
        Err(e) => {
            auth_failed(&ctx, &e);
            conn.close(auth::AUTH_FAILED.into(), b"authentication failed");
        }
    }
}

/// Counts a failed key proof (either direction) and logs it, rate-limited.
fn auth_failed(ctx: &Ctx, e: &AuthError) {
    Counters::bump(&ctx.counters.auth_failures);
    let allowed = ctx.auth_warn.allow(Instant::now());
    match allowed {
        Some(suppressed) => {
            warn!(error = %Chain(e), suppressed, "channel authentication failed")
        }
        None => debug!(error = %Chain(e), "channel authentication failed"),
    }
}

/// One announced socket of a peer, as a dial loop targets it.
struct Target {
    /// `AnnouncedSocket::id`.
    socket: u32,
    /// The announced address.
    addr: SocketAddr,
    /// Set for a `hole-punching` socket: dial through a rendezvous.
    punch: Option<PunchInfo>,
}

/// Where a dial loop sends from.
struct DialSocket {
    ep: quinn::Endpoint,
    aux: Arc<Aux>,
    /// Our punched socket's mapping when dialling from it; `None` for a
    /// socket of the loop's own (which learns its mapping per attempt).
    shared: Option<Arc<MappingSlot>>,
}

async fn dial_loop(
    ctx: Ctx,
    transport: Arc<quinn::TransportConfig>,
    peer: PeerId,
    target: Target,
    pinned: Fingerprint,
    cancel: CancellationToken,
) {
    let route = if target.punch.is_some() {
        ChannelRoute::Punched
    } else {
        ChannelRoute::Direct
    };
    let book = DialBook::open(
        &ctx,
        &peer,
        (target.socket, target.addr),
        route,
        Transport::Quic,
    );
    dial_attempts(&ctx, book, transport, &peer, &target, pinned, cancel).await;
}

/// The socket a dial loop sends from: for a punched target, our own
/// `hole-punching` socket if we have one (its mapping is known and kept
/// fresh); otherwise one socket of the loop's own, so each dataChannel has
/// its own socket and its own driver (channels do not share a receive path).
fn dial_socket(ctx: &Ctx, target: &Target) -> Result<DialSocket, TunnelError> {
    if target.punch.is_some()
        && let Some(p) = lock(&ctx.punch_socket).clone()
    {
        return Ok(DialSocket {
            ep: p.ep,
            aux: p.aux,
            shared: Some(p.mapping),
        });
    }
    let (ep, aux) = endpoint::bind(endpoint::dial_address(target.addr), None)?;
    Ok(DialSocket {
        ep,
        aux,
        shared: None,
    })
}

async fn dial_attempts(
    ctx: &Ctx,
    mut book: DialBook<'_>,
    transport: Arc<quinn::TransportConfig>,
    peer: &PeerId,
    target: &Target,
    pinned: Fingerprint,
    cancel: CancellationToken,
) {
    let client = match tls::client_config(&ctx.identity, pinned, transport) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build client config");
            return;
        }
    };
    let sock = match dial_socket(ctx, target) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot bind dial socket");
            return;
        }
    };
    loop {
        // Punching that keeps failing for reasons STUN could not foresee
        // (filtering, a NAT that changed) falls back to the owner's relay.
        let prefer_relay = book.attempts() >= RELAY_AFTER_FAILURES;
        let attempt = async {
            match &target.punch {
                None => connect(&sock.ep, &client, target.addr, ctx, peer)
                    .await
                    .map(|c| (c, ChannelRoute::Direct)),
                Some(info) => {
                    let how = Punch::Either { prefer_relay };
                    punched(ctx, &sock, &client, peer, target.socket, info, how).await
                }
            }
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = attempt => r,
        };
        match result {
            Ok((conn, path)) => {
                book.update(|d| d.route = path);
                let origin = Origin {
                    direction: Direction::Outbound,
                    attempts: book.attempts(),
                    dial_id: Some(book.id()),
                    local: sock.ep.local_addr().ok(),
                    cert: pinned,
                    path,
                    transport: Transport::Quic,
                };
                let reason = match &target.punch {
                    Some(info) if path == ChannelRoute::Relayed => {
                        let dial = DialCtx {
                            ctx,
                            dial_id: book.id(),
                            client: &client,
                            peer,
                            socket: target.socket,
                            info,
                            cancel: &cancel,
                        };
                        run_relayed(&dial, conn.clone(), origin).await
                    }
                    _ => run_channel(ctx, conn.clone(), peer.clone(), origin, &cancel).await,
                };
                book.channel_ended(&conn, &reason);
                if let Some(m) = &sock.shared {
                    // The NAT may have dropped or moved the mapping.
                    m.poke.notify_one();
                }
                if cancel.is_cancelled() {
                    break;
                }
                debug!(%reason, "outbound channel ended, redialling");
            }
            Err(e) => {
                let e = Chain(&e).to_string();
                book.failed(e).await;
            }
        }
        if !book.pause(cancel.cancelled()).await {
            break;
        }
    }
    if sock.shared.is_none() {
        sock.ep.close(CLOSE_NORMAL.into(), b"dial stopped");
    }
}

/// Failed punched dials after which the owner's relay is tried instead.
const RELAY_AFTER_FAILURES: u32 = 3;
/// How often a dial loop on a relayed channel tries to punch a direct one.
const UPGRADE_EVERY: Duration = Duration::from_secs(30);

/// How a punched dial may reach the owner.
#[derive(Debug, Clone, Copy)]
enum Punch {
    /// Punch, or the owner's relay when punching cannot work (or
    /// `prefer_relay`, after repeated failures).
    Either { prefer_relay: bool },
    /// Only a punched channel (replacing a relayed one).
    Only,
}

/// A punched dial loop's fixed state, for [`run_relayed`].
struct DialCtx<'a> {
    ctx: &'a Ctx,
    dial_id: u64,
    client: &'a quinn::ClientConfig,
    peer: &'a PeerId,
    socket: u32,
    info: &'a PunchInfo,
    cancel: &'a CancellationToken,
}

/// Carries a relayed channel while trying, every [`UPGRADE_EVERY`], to punch
/// a direct one (a NAT that failed to punch may since have changed, or the
/// failures were passing). Once one is punched it takes every new stream,
/// and the relayed channel drains: it closes when its last stream ends.
/// Returns why the channel the loop ends with went down.
async fn run_relayed(d: &DialCtx<'_>, conn: quinn::Connection, origin: Origin) -> String {
    let cert = origin.cert;
    let relayed = run_channel(d.ctx, conn.clone(), d.peer.clone(), origin, d.cancel);
    tokio::pin!(relayed);
    // Punched from a socket of its own: the owner's socket tells relayed
    // peers from direct ones by address, and the relayed channel keeps ours.
    let fresh = match endpoint::bind(endpoint::dial_address(conn.remote_address()), None) {
        Ok((ep, aux)) => DialSocket {
            ep,
            aux,
            shared: None,
        },
        Err(e) => {
            warn!(error = %e, "cannot bind a socket to punch from; staying on the relay");
            return relayed.await;
        }
    };
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + UPGRADE_EVERY, UPGRADE_EVERY);
    let direct = loop {
        let upgrade = async {
            tick.tick().await;
            punched(
                d.ctx,
                &fresh,
                d.client,
                d.peer,
                d.socket,
                d.info,
                Punch::Only,
            )
            .await
        };
        tokio::select! {
            reason = &mut relayed => return reason,
            r = upgrade => match r {
                Ok((c, _)) => break c,
                Err(e) => debug!(error = %Chain(&e), "no punched channel yet, staying on the relay"),
            },
        }
    };
    info!("punched a direct channel; the relayed one drains");
    d.ctx
        .registry
        .dial_update(d.dial_id, |s| s.route = ChannelRoute::Punched);
    drain(d.ctx, &d.peer.site, &conn, "replaced by a punched channel");
    let origin = Origin {
        direction: Direction::Outbound,
        attempts: 0,
        dial_id: Some(d.dial_id),
        local: fresh.ep.local_addr().ok(),
        cert,
        path: ChannelRoute::Punched,
        transport: Transport::Quic,
    };
    let direct = run_channel(d.ctx, direct, d.peer.clone(), origin, d.cancel);
    tokio::pin!(direct);
    let mut relayed_done = false;
    loop {
        tokio::select! {
            reason = &mut direct => {
                if !relayed_done {
                    // The relayed channel is not the loop's any more: close it
                    // and let its task unregister it before redialling.
                    conn.close(CLOSE_NORMAL.into(), b"punched channel lost");
                    relayed.await;
                }
                fresh.ep.close(CLOSE_NORMAL.into(), b"dial stopped");
                return reason;
            }
            _ = &mut relayed, if !relayed_done => relayed_done = true,
        }
    }
}

/// Stops giving `conn`'s channel new streams and closes it once the ones it
/// carries have ended, with `reason` as the close reason.
fn drain(ctx: &Ctx, site: &SiteName, conn: &quinn::Connection, reason: &'static str) {
    let Some(ch) = ctx
        .registry
        .channels(site)
        .into_iter()
        .find(|c| c.conn.stable_id() == conn.stable_id())
    else {
        return;
    };
    ch.draining.store(true, Ordering::Relaxed);
    ctx.tracker.spawn(async move {
        while ch.open_streams.load(Ordering::Relaxed) > 0 && ch.conn.close_reason().is_none() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ch.conn.close(CLOSE_NORMAL.into(), reason.as_bytes());
    });
}

/// One punched dial: learn our public address, ask the owner to punch
/// toward it (or, when punching cannot work or kept failing and the owner
/// has a TURN relay, to let us through the relay), then dial where the
/// owner says.
async fn punched(
    ctx: &Ctx,
    sock: &DialSocket,
    client: &quinn::ClientConfig,
    peer: &PeerId,
    socket: u32,
    info: &PunchInfo,
    how: Punch,
) -> Result<(quinn::Connection, ChannelRoute), DialError> {
    let mine = match &sock.shared {
        Some(slot) => slot.get().ok_or_else(|| {
            DialError::NoMapping("no STUN answer for the hole-punching socket yet".into())
        })?,
        None => {
            let family = Some(sock.aux.local_addr().ip());
            let servers = punch::resolve_announced(&info.stun, ctx.loopback, family).await;
            if servers.is_empty() {
                return Err(DialError::NoMapping(
                    "the peer announced no usable STUN server and this site has no hole-punching socket".into(),
                ));
            }
            let m = Mapping::of(
                &stun::probe_all(&sock.aux, &servers)
                    .await
                    .into_iter()
                    .map(|p| (p.server, p.result.ok()))
                    .collect::<Vec<_>>(),
            );
            if m.public.is_none() {
                return Err(DialError::NoMapping("no STUN server answered".into()));
            }
            m
        }
    };
    let Some(from) = mine.public else {
        return Err(DialError::NoMapping("no STUN server answered".into()));
    };
    let relay = match (punch::cannot_punch(mine.nat, info.nat), info.relay, how) {
        (Some(why), None, _) | (Some(why), _, Punch::Only) => {
            return Err(DialError::CannotPunch(why));
        }
        (Some(_), Some(_), Punch::Either { .. }) => true,
        (None, relay, Punch::Either { prefer_relay }) => prefer_relay && relay.is_some(),
        (None, _, Punch::Only) => false,
    };
    let nonce: u64 = rand::random();
    let Some(mut wait) = ctx.waiters.register(nonce) else {
        return Err(DialError::NoPunchAnswer(Duration::ZERO));
    };
    let _ = ctx
        .events_tx
        .send(TunnelEvent::PunchRequest {
            peer: peer.clone(),
            socket,
            from,
            nonce,
            relay,
        })
        .await;
    let Ok(Ok(at)) = tokio::time::timeout(punch::ACK_TIMEOUT, &mut wait.answer).await else {
        return Err(DialError::NoPunchAnswer(punch::ACK_TIMEOUT));
    };
    let route = if relay {
        ChannelRoute::Relayed
    } else {
        ChannelRoute::Punched
    };
    debug!(%from, %at, nat = mine.nat.text(), %route, "owner answered, dialling");
    connect(&sock.ep, client, at, ctx, peer)
        .await
        .map(|c| (c, route))
}

/// Dials `addr` and runs the key proof, both by one deadline; opens the
/// connection's windows only once the listener proved itself.
async fn connect(
    ep: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    addr: SocketAddr,
    ctx: &Ctx,
    expected: &PeerId,
) -> Result<quinn::Connection, DialError> {
    let deadline = tokio::time::Instant::now() + auth::DEADLINE;
    let connecting = endpoint::spanless(|| ep.connect_with(client.clone(), addr, tls::SERVER_NAME))
        .map_err(DialError::Start)?;
    let conn = tokio::time::timeout_at(deadline, connecting)
        .await
        .map_err(|_| DialError::HandshakeTimeout(auth::DEADLINE))?
        .map_err(DialError::Handshake)?;
    let proof = tokio::time::timeout_at(deadline, auth::client(&conn, &ctx.keys, &ctx.me))
        .await
        .unwrap_or(Err(AuthError::Timeout(auth::DEADLINE)));
    match proof {
        Ok(peer) if peer == *expected => {
            endpoint::grant_after_auth(&conn);
            Ok(conn)
        }
        Ok(found) => {
            conn.close(CLOSE_NORMAL.into(), b"unexpected peer");
            Err(DialError::UnexpectedPeer {
                expected: expected.clone(),
                found,
            })
        }
        Err(e) => {
            auth_failed(ctx, &e);
            conn.close(auth::AUTH_FAILED.into(), b"authentication failed");
            Err(DialError::Auth(e))
        }
    }
}

/// How an authenticated channel came to be.
struct Origin {
    direction: Direction,
    /// Redials it took (outbound).
    attempts: u32,
    /// The dial loop that made it (outbound).
    dial_id: Option<u64>,
    /// Local address of its endpoint.
    local: Option<SocketAddr>,
    /// The certificate the peer presented.
    cert: Fingerprint,
    path: ChannelRoute,
    transport: Transport,
}

/// Registers an authenticated channel, serves the peer's streams on it and
/// returns why it ended.
async fn run_channel(
    ctx: &Ctx,
    conn: quinn::Connection,
    peer: PeerId,
    origin: Origin,
    cancel: &CancellationToken,
) -> String {
    let Origin {
        direction,
        attempts,
        dial_id,
        local,
        cert,
        path,
        transport,
    } = origin;
    let id = ChannelId(ctx.next_id.fetch_add(1, Ordering::Relaxed));
    let ch = Arc::new(Channel {
        id,
        peer: peer.clone(),
        direction,
        local,
        conn: conn.clone(),
        since: Instant::now(),
        open_streams: AtomicUsize::new(0),
        responsive: AtomicBool::new(true),
        attempts,
        cert,
        route: path,
        transport,
        draining: AtomicBool::new(false),
        confirmed: watch::channel(direction == Direction::Outbound).0,
        datagrams: crate::app::udp::Demux::new(conn.clone(), ctx.counters.clone()),
    });
    let span = info_span!("channel", channel.id = %id, peer.site = %peer.site, %direction, %path, %transport, remote = %conn.remote_address());
    async {
        ctx.registry.insert(ch.clone());
        if let Some(d) = dial_id {
            ctx.registry.dial_update(d, |d| d.channel = Some(id));
        }
        info!("channel up");
        let _ = ctx
            .events_tx
            .send(TunnelEvent::ChannelUp {
                peer: peer.clone(),
                channel: id,
                direction,
                cert,
                transport,
            })
            .await;
        let reason = tokio::select! {
            _ = cancel.cancelled() => {
                conn.close(CLOSE_NORMAL.into(), b"channel no longer wanted");
                "closed locally".to_string()
            }
            e = serve_streams(ctx, &ch) => close_reason(&e),
            never = watch_silence(&ch) => match never {},
            never = tune_windows(&ch.conn) => match never {},
            never = ch.datagrams.run() => match never {},
        };
        ctx.registry.remove(&peer.site, id);
        info!(%reason, "channel down");
        let _ = ctx
            .events_tx
            .send(TunnelEvent::ChannelDown {
                peer,
                channel: id,
                reason: reason.clone(),
            })
            .await;
        reason
    }
    .instrument(span)
    .await
}

/// Accepts the peer's streams (requests for our exposed apps) until the
/// connection dies; none before the channel is confirmed.
async fn serve_streams(ctx: &Ctx, ch: &Arc<Channel>) -> quinn::ConnectionError {
    tokio::select! {
        () = ch.confirmed() => {}
        e = ch.conn.closed() => return e,
    }
    let mut credit = endpoint::INITIAL_STREAM_CREDIT;
    loop {
        match ch.conn.accept_bi().await {
            Ok((send, recv)) => {
                let stream = TunnelStream {
                    send,
                    recv,
                    guard: Box::new(StreamGuard::new(ch.clone())),
                    channel: ch.id,
                    datagrams: ch.datagrams.clone(),
                };
                let next =
                    endpoint::next_stream_credit(credit, ch.open_streams.load(Ordering::Relaxed));
                if next != credit {
                    credit = next;
                    debug!(credit, "peer may open more streams");
                    ch.conn
                        .set_max_concurrent_bi_streams(quinn::VarInt::from_u32(credit));
                }
                // Called in the channel's span, so the stream's log lines
                // carry the site, peer and channel like the client side's
                // do; the future is not instrumented, since it is polled for
                // every chunk its pipe carries and logs in its own span.
                ctx.tracker.spawn(ctx.server.serve(
                    stream,
                    ch.peer.site.clone(),
                    ch.conn.remote_address(),
                ));
            }
            Err(e) => return e,
        }
    }
}

/// Flags the channel unresponsive while no datagram arrives from the peer for
/// [`SILENCE_LIMIT`], and responsive again when traffic resumes. Never returns.
async fn watch_silence(ch: &Channel) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_rx = ch.conn.stats().udp_rx.datagrams;
    let mut last_change = Instant::now();
    loop {
        tick.tick().await;
        let rx = ch.conn.stats().udp_rx.datagrams;
        if rx != last_rx {
            last_rx = rx;
            last_change = Instant::now();
        }
        let responsive = last_change.elapsed() < SILENCE_LIMIT;
        if ch.responsive.swap(responsive, Ordering::Relaxed) != responsive {
            if responsive {
                info!("channel responsive again");
            } else {
                warn!(silence = ?last_change.elapsed(), "channel silent; new streams avoid it");
            }
        }
    }
}

/// Keeps the channel's send and receive windows at what its path needs
/// ([`window`]): what the daemon buffers follows the path's bandwidth-delay
/// product instead of a fixed worst case. Never returns.
async fn tune_windows(conn: &quinn::Connection) -> std::convert::Infallible {
    let mut send = window::WindowTuner::new();
    let mut recv = window::WindowTuner::new();
    loop {
        // One lock of the connection: the stats carry the smoothed RTT too.
        let stats = conn.stats();
        let rtt = stats.path.rtt;
        let now = Instant::now();
        if let Some(w) = send.on_tick(now, rtt, stats.udp_tx.bytes) {
            trace!(window = w, "send window");
            conn.set_send_window(w);
        }
        if let Some(w) = recv.on_tick(now, rtt, stats.udp_rx.bytes) {
            trace!(window = w, "receive window");
            // MAX_WINDOW is far below VarInt's 2^62 ceiling.
            conn.set_receive_window(quinn::VarInt::from_u64(w).unwrap_or(quinn::VarInt::MAX));
        }
        tokio::time::sleep(send.next_tick(rtt).min(recv.next_tick(rtt))).await;
    }
}

/// Whether the peer closed `conn` because it refused the channel.
fn refused(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == CLOSE_REFUSED.into()
    )
}

fn close_reason(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::TimedOut => "idle timeout: no packets from the peer".into(),
        quinn::ConnectionError::ApplicationClosed(c) => {
            let why = String::from_utf8_lossy(&c.reason);
            if why.is_empty() {
                format!("closed by peer (code {})", c.error_code)
            } else {
                // Peer-controlled text: escaped so it cannot forge log lines.
                format!("closed by peer: {}", why.escape_debug())
            }
        }
        quinn::ConnectionError::LocallyClosed => "closed locally".into(),
        // May carry a transport close reason the peer chose.
        other => crate::error::Escaped(&other.to_string()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_a_peer_chose_cannot_forge_log_lines() {
        let transport = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::PROTOCOL_VIOLATION,
            frame_type: None,
            reason: bytes::Bytes::from_static(b"x\n2099 WARN forged\x1b[0m"),
        });
        let app = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(9),
            reason: bytes::Bytes::from_static(b"y\r\nINFO forged"),
        });
        for e in [transport, app] {
            let shown = close_reason(&e);
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
            assert!(shown.contains("forged"), "{shown:?}");
        }
    }
}
