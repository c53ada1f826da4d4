//! UDP apps: datagram flows through a dataChannel.
//!
//! A flow is one client address of a remote app's UDP listener
//! ([`listener`]). It is opened like a TCP app stream — a bidirectional QUIC
//! stream with the same preamble (protocol `udp`) and status reply — so
//! refusals, limits and `allowedSites` are the exposed side's usual ones.
//! After an `ok` status its datagrams travel as QUIC DATAGRAM frames tagged
//! with the flow's stream id ([`codec`]); one [`Demux`] per dataChannel hands
//! received frames to their flows through bounded queues. A datagram too
//! large for a DATAGRAM frame goes on the flow's stream, length-prefixed. A
//! flow ends when it has been idle for its `udpIdleTimeout` (either side
//! decides, [`flows::Idle`]), or when its stream ends or is reset.
//!
//! Every datagram that is not delivered is counted ([`Counters`]): nothing
//! disappears silently inside the daemon. An app's `bandwidthLimit` delays
//! datagrams (each waits for its turn, [`AppThrottle`]) rather than dropping
//! them; while a flow waits, its queue fills and, full, overflows, counted.
//!
//! This module must not know how dataChannels are picked or authenticated,
//! nor decide admission (the exposed side's `admit` does).

pub mod codec;
pub mod flows;
pub mod listener;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendDatagramError, SendStream};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

use super::throttle::{AppThrottle, Way};
use super::{PipeStats, code};
use crate::counters::Counters;
use codec::{StreamFrames, decode_datagram, encode_datagram, encode_stream_frame, payload_room};
use flows::Idle;

/// Datagrams queued per flow between the demultiplexer (or listener) and
/// the flow's task; more are dropped and counted ([`Counters::udp_queue_overflow`]).
pub const FLOW_QUEUE: usize = 1024;

/// Socket buffer asked for on UDP sockets carrying flows, so a burst on
/// loopback is not dropped by the kernel before the daemon reads it.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// The id of a flow: its stream's QUIC stream id.
pub fn flow_id(send: &SendStream) -> u64 {
    quinn::VarInt::from(send.id()).into_inner()
}

/// Sends received DATAGRAM frames of one dataChannel to their flows.
///
/// The tunnel layer makes one per dataChannel and runs [`Demux::run`] for
/// as long as the channel lives; flows [`register`](Demux::register) on it.
#[derive(Debug)]
pub struct Demux {
    conn: quinn::Connection,
    flows: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    counters: Arc<Counters>,
}

impl Demux {
    /// A demultiplexer for `conn`, counting drops in `counters`.
    pub fn new(conn: quinn::Connection, counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(Self {
            conn,
            flows: Mutex::default(),
            counters,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Bytes>>> {
        // Single map operations: a poisoned lock still holds consistent data.
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection it reads.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Receives the datagrams of `flow` until the returned queue drops;
    /// `None` if the flow is registered already.
    pub fn register(self: &Arc<Self>, flow: u64) -> Option<FlowRx> {
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        match self.lock().entry(flow) {
            Entry::Occupied(_) => return None,
            Entry::Vacant(e) => {
                e.insert(tx);
            }
        }
        Some(FlowRx {
            rx,
            flow,
            demux: self.clone(),
        })
    }

    /// Hands one received frame to its flow, or counts why it cannot.
    pub fn dispatch(&self, frame: Bytes) {
        let Ok((flow, payload)) = decode_datagram(frame) else {
            Counters::bump(&self.counters.udp_unknown_flow);
            return;
        };
        // `try_send` never waits, so it runs under the lock rather than
        // cloning (and dropping) the flow's sender for every datagram.
        let sent = self.lock().get(&flow).map(|tx| tx.try_send(payload));
        match sent {
            Some(Ok(())) => {}
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                Counters::bump(&self.counters.udp_queue_overflow);
            }
            Some(Err(mpsc::error::TrySendError::Closed(_))) | None => {
                Counters::bump(&self.counters.udp_unknown_flow);
            }
        }
    }

    /// Reads the channel's datagrams until it closes, then waits forever
    /// (the channel task ends on the connection's own error).
    pub async fn run(&self) -> std::convert::Infallible {
        while let Ok(frame) = self.conn.read_datagram().await {
            self.dispatch(frame);
        }
        std::future::pending().await
    }
}

/// The datagrams of one registered flow; unregisters on drop.
#[derive(Debug)]
pub struct FlowRx {
    rx: mpsc::Receiver<Bytes>,
    flow: u64,
    demux: Arc<Demux>,
}

impl Drop for FlowRx {
    fn drop(&mut self) {
        self.demux.lock().remove(&self.flow);
        // Datagrams still queued were accepted but never delivered.
        let lost = self.rx.len() as u64;
        Counters::add(&self.demux.counters.udp_send_failed, lost);
    }
}

/// The local end of a flow: the app's socket (exposed side) or one client
/// of the remote app's listener.
pub trait LocalEnd: Send {
    /// The next datagram from the local side; `None` when it is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
    /// Sends one datagram to the local side.
    fn send(&self, datagram: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

/// The exposed side's end: one connected UDP socket toward the app.
#[derive(Debug)]
pub struct AppEnd {
    socket: UdpSocket,
    buf: Vec<u8>,
}

impl AppEnd {
    /// A socket bound to an ephemeral port and connected to `app`.
    pub async fn connect(app: SocketAddr) -> io::Result<Self> {
        let bind: SocketAddr = match app {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = bind_udp(bind)?;
        socket.connect(app).await?;
        Ok(Self {
            socket,
            buf: vec![0; 65_536],
        })
    }
}

impl LocalEnd for AppEnd {
    async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.socket.recv(&mut self.buf).await {
                Ok(n) => return Some(Bytes::copy_from_slice(&self.buf[..n])),
                // An ICMP port unreachable from an earlier send: the app is
                // not (yet) listening. Keep the flow; the idle timer ends it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(_) => return None,
            }
        }
    }

    async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        self.socket.send(datagram).await.map(|_| ())
    }
}

/// Binds a UDP socket with [`SOCKET_BUFFER`]-sized buffers (best effort).
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        // Like std: an IPv6 wildcard serves IPv4 too where the OS allows.
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// How a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    /// No datagram either way for the idle timeout.
    Idle,
    /// The far side finished the flow's stream.
    PeerFinished,
    /// The far side reset the stream or the dataChannel was lost.
    PeerFailed,
    /// The local side went away (its socket failed or the listener closed).
    LocalGone,
    /// The site is shutting down.
    Shutdown,
}

impl std::fmt::Display for FlowEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle timeout",
            Self::PeerFinished => "ended by the far side",
            Self::PeerFailed => "far side failed",
            Self::LocalGone => "local side gone",
            Self::Shutdown => "shutdown",
        })
    }
}

/// What a flow's task works with once admitted.
pub struct Flow {
    /// The flow's stream (after the preamble).
    pub send: SendStream,
    /// The flow's stream (after the preamble).
    pub recv: RecvStream,
    /// Its registration on the channel's demultiplexer.
    pub rx: FlowRx,
    /// `udpIdleTimeout`.
    pub idle: Duration,
}

impl Flow {
    /// Registers the flow of `send`/`recv` on `demux`; `None` if the id is
    /// taken (cannot happen for a fresh stream).
    pub fn new(
        send: SendStream,
        recv: RecvStream,
        demux: &Arc<Demux>,
        idle: Duration,
    ) -> Option<Self> {
        let rx = demux.register(flow_id(&send))?;
        Some(Self {
            send,
            recv,
            rx,
            idle,
        })
    }
}

/// Carries datagrams between `local` and the far site until the flow ends;
/// `throttle` paces both ways (the app's `bandwidthLimit`).
pub async fn run_flow<L: LocalEnd>(
    mut local: L,
    flow: Flow,
    stats: &PipeStats,
    throttle: Option<&AppThrottle>,
    cancel: impl Future<Output = ()>,
) -> FlowEnd {
    let Flow {
        mut send,
        mut recv,
        mut rx,
        idle,
    } = flow;
    let id = rx.flow;
    let demux = rx.demux.clone();
    let conn = demux.conn.clone();
    let counters = demux.counters.clone();
    let mut idle = Idle::new(idle, tokio::time::Instant::now().into_std());
    let mut frames = StreamFrames::default();
    let mut buf = vec![0u8; 64 * 1024];
    // One timer for the flow's life, moved only when it fires early: a
    // datagram just touches `idle` instead of re-arming a timer.
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(idle.deadline()));
    tokio::pin!(cancel, timer);
    let end = loop {
        tokio::select! {
            () = &mut cancel => break FlowEnd::Shutdown,
            () = &mut timer => {
                if idle.expired(std::time::Instant::now()) {
                    break FlowEnd::Idle;
                }
                timer.as_mut().reset(tokio::time::Instant::from_std(idle.deadline()));
            }
            d = local.recv() => {
                let Some(d) = d else { break FlowEnd::LocalGone };
                idle.touch(std::time::Instant::now());
                if !paced(throttle, Way::Sent, d.len(), &mut cancel, &counters).await {
                    break FlowEnd::Shutdown;
                }
                match to_tunnel(&conn, &mut send, id, d).await {
                    Ok(Some(n)) => {
                        stats.datagrams_to_remote.fetch_add(1, Relaxed);
                        stats.bytes_to_remote.fetch_add(n as u64, Relaxed);
                    }
                    Ok(None) => Counters::bump(&counters.udp_send_failed),
                    Err(Lost) => {
                        Counters::bump(&counters.udp_send_failed);
                        break FlowEnd::PeerFailed;
                    }
                }
            }
            Some(d) = rx.rx.recv() => {
                idle.touch(std::time::Instant::now());
                if !paced(throttle, Way::Received, d.len(), &mut cancel, &counters).await {
                    break FlowEnd::Shutdown;
                }
                deliver(&local, &d, stats, &counters).await;
            }
            r = recv.read(&mut buf) => match r {
                Ok(Some(n)) => {
                    frames.push(&buf[..n]);
                    let mut shut = false;
                    while let Some(d) = frames.next_frame() {
                        idle.touch(std::time::Instant::now());
                        if !paced(throttle, Way::Received, d.len(), &mut cancel, &counters).await {
                            shut = true;
                            break;
                        }
                        deliver(&local, &d, stats, &counters).await;
                    }
                    if shut {
                        break FlowEnd::Shutdown;
                    }
                }
                Ok(None) => break FlowEnd::PeerFinished,
                Err(_) => break FlowEnd::PeerFailed,
            },
        }
    };
    match end {
        FlowEnd::Idle | FlowEnd::PeerFinished | FlowEnd::LocalGone => {
            let _ = send.finish();
        }
        FlowEnd::PeerFailed => {
            let _ = send.reset(code::PEER_FAILED);
        }
        FlowEnd::Shutdown => {
            let _ = send.reset(code::SHUTDOWN);
        }
    }
    let _ = recv.stop(code::PEER_FAILED);
    drop(local);
    end
}

/// Waits for a datagram's turn under `throttle`; `false` if `cancel` fired
/// first: the datagram is then not delivered, and counted so.
async fn paced(
    throttle: Option<&AppThrottle>,
    way: Way,
    bytes: usize,
    cancel: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    counters: &Counters,
) -> bool {
    let Some(t) = throttle else { return true };
    tokio::select! {
        () = t.wait(way, bytes) => true,
        () = cancel.as_mut() => {
            Counters::bump(&counters.udp_send_failed);
            false
        }
    }
}

/// The dataChannel is gone: the datagram cannot be sent.
struct Lost;

/// Sends one local datagram to the far site: as a DATAGRAM frame when it
/// fits, else on the flow's stream. Waits for room rather than dropping.
/// `None`: longer than any UDP datagram, so not sent (the caller counts it).
async fn to_tunnel(
    conn: &quinn::Connection,
    send: &mut SendStream,
    id: u64,
    d: Bytes,
) -> Result<Option<usize>, Lost> {
    let n = d.len();
    let fits = conn
        .max_datagram_size()
        .is_some_and(|max| n <= payload_room(max, id));
    if fits {
        match conn.send_datagram_wait(encode_datagram(id, &d)).await {
            Ok(()) => return Ok(Some(n)),
            Err(SendDatagramError::ConnectionLost(_)) => return Err(Lost),
            // The path shrank, or datagrams are off: the stream carries it.
            Err(e) => debug!(error = %e, "datagram goes on the flow's stream"),
        }
    }
    let Some(frame) = encode_stream_frame(&d) else {
        return Ok(None);
    };
    send.write_all(&frame).await.map_err(|_| Lost)?;
    Ok(Some(n))
}

/// Writes one datagram from the far site to the local side, counting it.
async fn deliver<L: LocalEnd>(local: &L, d: &[u8], stats: &PipeStats, counters: &Counters) {
    match local.send(d).await {
        Ok(()) => {
            stats.datagrams_from_remote.fetch_add(1, Relaxed);
            stats.bytes_from_remote.fetch_add(d.len() as u64, Relaxed);
        }
        Err(e) => {
            Counters::bump(&counters.udp_send_failed);
            debug!(error = %e, "cannot deliver a datagram to the local side");
        }
    }
}
