//! A TURN relay (RFC 8656) for one `hole-punching` socket: the fallback when
//! punching cannot work (a NAT that maps per destination).
//!
//! The socket allocates a relayed address on the configured TURN server
//! (coturn, or any RFC 8656 server) from the same UDP socket that carries its
//! QUIC, and announces it. A dialer whose punch cannot work dials that
//! address like any other; the owner first installs a permission for the
//! dialer's IP (TURN permissions ignore the port, which is what a
//! per-destination NAT changes). The server then forwards the dialer's QUIC
//! packets to the owner inside Data indications, and [`Demux`] hands them to
//! quinn as if they came from the dialer; quinn's answers to such a peer are
//! wrapped into Send indications ([`Relay::wrap`]). The QUIC session, its TLS
//! and the key proof stay end to end: the server sees only ciphertext, and a
//! packet it altered fails QUIC's authentication.
//!
//! The TURN protocol itself (allocation, long-term credentials, nonces,
//! refreshes of the allocation and permissions) is `turn-client-proto`'s,
//! driven by [`run`]. This module decides nothing about when a relay is
//! used.
//!
//! [`Demux`]: super::udp::Demux

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use turn_client_proto::api::{TurnClientApi, TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::types::{Instant as TurnInstant, TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

use super::lock;
use super::udp::Aux;

/// Relayed datagrams waiting for quinn's next receive (one receive can
/// carry several, coalesced by the kernel); more are dropped and counted.
pub const MAX_QUEUED: usize = 1024;
/// Most peers one socket relays for at once (permissions held).
pub const MAX_PEERS: usize = 256;
/// How long the owner waits for the server to install a permission.
pub const PERMISSION_TIMEOUT: Duration = Duration::from_secs(3);

/// State of the allocation, for status and the announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayState {
    /// Asking the server.
    Allocating,
    /// The relayed address peers dial.
    Allocated(SocketAddr),
    /// The server refused or did not answer (retried later).
    Failed(String),
}

/// One socket's TURN client and the peers it relays for.
pub struct Relay {
    server: SocketAddr,
    local: SocketAddr,
    credentials: TurnCredentials,
    client: Mutex<TurnClientUdp>,
    /// The clock `client` runs on: its instants are offsets from this.
    base: Instant,
    /// QUIC peers whose packets came (and go) through the relay.
    peers: Mutex<HashSet<SocketAddr>>,
    /// Relayed datagrams for quinn's next receive.
    queue: Mutex<VecDeque<(SocketAddr, Vec<u8>)>>,
    /// Permission requests waiting for the server.
    waiting: Mutex<HashMap<IpAddr, Vec<oneshot::Sender<bool>>>>,
    state: watch::Sender<RelayState>,
    /// Wakes the driver: new requests to send, or a new deadline.
    wake: Notify,
    /// Datagrams dropped because the queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("server", &self.server)
            .finish()
    }
}

impl Relay {
    /// A client that will allocate on `server` from the socket at `local`.
    pub fn new(local: SocketAddr, server: SocketAddr, username: &str, password: &str) -> Self {
        let credentials = TurnCredentials::new(username, password);
        let config = TurnConfig::new(credentials.clone());
        Self {
            server,
            local,
            credentials,
            client: Mutex::new(TurnClientUdp::allocate(local, server, config)),
            base: Instant::now(),
            peers: Mutex::default(),
            queue: Mutex::default(),
            waiting: Mutex::default(),
            state: watch::channel(RelayState::Allocating).0,
            wake: Notify::new(),
            dropped: Default::default(),
        }
    }

    /// The TURN server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The allocation's state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<RelayState> {
        self.state.subscribe()
    }

    fn now(&self) -> TurnInstant {
        let nanos = self.base.elapsed().as_nanos();
        TurnInstant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// Handles one datagram from the server: a relayed peer's packet is
    /// queued for quinn (see [`Relay::take_queued`]); TURN answers advance the
    /// client.
    pub fn recv(&self, from: SocketAddr, local: SocketAddr, data: &[u8]) {
        let now = self.now();
        let transmit = Transmit::new(data, TransportType::Udp, from, local);
        let ret = lock(&self.client).recv(transmit, now);
        match ret {
            TurnRecvRet::PeerData(p) => {
                let peer = SocketAddr::new(p.peer.ip().to_canonical(), p.peer.port());
                let known = {
                    let mut peers = lock(&self.peers);
                    peers.contains(&peer) || (peers.len() < MAX_PEERS && peers.insert(peer))
                };
                let mut queue = lock(&self.queue);
                if known && queue.len() < MAX_QUEUED {
                    queue.push_back((peer, p.data().to_vec()));
                } else {
                    self.dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            TurnRecvRet::Handled => {}
            TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => {}
        }
        // Answers may have produced events or new deadlines.
        self.wake.notify_one();
    }

    /// The next relayed datagram for quinn, if any.
    pub fn take_queued(&self) -> Option<(SocketAddr, Vec<u8>)> {
        lock(&self.queue).pop_front()
    }

    /// Whether quinn's packets to `to` go through the relay.
    pub fn relays_for(&self, to: SocketAddr) -> bool {
        let to = SocketAddr::new(to.ip().to_canonical(), to.port());
        lock(&self.peers).contains(&to)
    }

    /// `data` for `to` wrapped for the server (a Send indication, or a
    /// ChannelData message once a channel is bound); `None` without a
    /// permission for `to`.
    pub fn wrap(&self, to: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        let to = SocketAddr::new(to.ip().to_canonical(), to.port());
        let now = self.now();
        match lock(&self.client).send_to(TransportType::Udp, to, data, now) {
            Ok(Some(t)) => Some(t.build().data),
            Ok(None) | Err(_) => None,
        }
    }

    /// Lets `ip` send through the relay (a TURN permission); true once the
    /// server installed it.
    pub async fn permit(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let (tx, rx) = oneshot::channel();
        {
            let mut client = lock(&self.client);
            if client.have_permission(TransportType::Udp, ip) {
                return true;
            }
            let now = self.now();
            if let Err(e) = client.create_permission(TransportType::Udp, ip, now) {
                debug!(%ip, error = %e, "cannot ask for a TURN permission");
                return false;
            }
            lock(&self.waiting).entry(ip).or_default().push(tx);
        }
        self.wake.notify_one();
        matches!(
            tokio::time::timeout(PERMISSION_TIMEOUT, rx).await,
            Ok(Ok(true))
        )
    }

    /// Sends what the client has queued; returns when to poll next.
    async fn drive(&self, aux: &Aux) -> Option<Instant> {
        let (transmits, events, next) = {
            let mut client = lock(&self.client);
            let now = self.now();
            let next = match client.poll(now) {
                TurnPollRet::WaitUntil(t) => Some(t.to_std(self.base)),
                TurnPollRet::Closed => None,
                // TCP allocations are never asked for.
                TurnPollRet::AllocateTcpSocket { .. } | TurnPollRet::TcpClose { .. } => {
                    Some(Instant::now())
                }
            };
            let mut transmits = Vec::new();
            while let Some(t) = client.poll_transmit(now) {
                transmits.push((t.to, t.data.to_vec()));
            }
            let mut events = Vec::new();
            while let Some(e) = client.poll_event() {
                events.push(e);
            }
            (transmits, events, next)
        };
        for (to, data) in transmits {
            if let Err(e) = aux.send(to, &data).await {
                debug!(error = %e, "TURN message not sent");
            }
        }
        for e in events {
            self.on_event(e);
        }
        next
    }

    fn on_event(&self, e: TurnEvent) {
        match e {
            TurnEvent::AllocationCreated(_, relayed) => {
                info!(server = %self.server, %relayed, "TURN relay allocated");
                self.state.send_replace(RelayState::Allocated(relayed));
            }
            TurnEvent::AllocationCreateFailed(family) => {
                warn!(server = %self.server, ?family, "TURN allocation failed");
                self.state.send_replace(RelayState::Failed(format!(
                    "the TURN server {} refused or did not answer the allocation",
                    self.server
                )));
            }
            TurnEvent::PermissionCreated(_, ip) => self.answer(ip, true),
            TurnEvent::PermissionCreateFailed(_, ip) => self.answer(ip, false),
            _ => {}
        }
    }

    fn answer(&self, ip: IpAddr, ok: bool) {
        for tx in lock(&self.waiting)
            .remove(&ip.to_canonical())
            .unwrap_or_default()
        {
            let _ = tx.send(ok);
        }
    }
}

/// How long after a failed allocation a new client is tried.
pub const RETRY: Duration = Duration::from_secs(30);

/// Drives `relay` (sends, timers, events) until `cancel`; a client whose
/// allocation failed or was closed is replaced after [`RETRY`].
pub async fn run(relay: Arc<Relay>, aux: Arc<Aux>, cancel: CancellationToken) {
    loop {
        let next = relay.drive(&aux).await;
        let failed = matches!(*relay.state.borrow(), RelayState::Failed(_));
        let Some(next) = next.filter(|_| !failed) else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
            let config = TurnConfig::new(relay.credentials.clone());
            *lock(&relay.client) = TurnClientUdp::allocate(relay.local, relay.server, config);
            lock(&relay.peers).clear();
            relay.state.send_replace(RelayState::Allocating);
            continue;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next.into()) => {}
            () = relay.wake.notified() => {}
        }
    }
}
