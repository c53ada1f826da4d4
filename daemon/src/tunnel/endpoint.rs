//! quinn endpoints: UDP sockets sized for throughput and the transport
//! parameters every dataChannel uses, small until the key proof passed
//! ([`grant_after_auth`] opens them up). Knows nothing of sites or apps.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use super::TunnelError;
use super::congestion::BbrConfig;
use super::udp::{self, Aux, Demux};
use super::window::MIN_WINDOW;
use crate::config::CongestionControl;

/// A keep-alive every this often keeps NAT bindings open and lets a dead path
/// be noticed by the idle timeout below.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// No packet from the peer for this long and the dataChannel is declared dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(8);

/// How much of one stream the receiver buffers ahead of what its app read.
///
/// Big enough for one stream to fill a long fat path (1 Gbit/s × 100 ms is
/// 12 MiB), small enough that random loss cannot fill quinn's reassembly
/// buffer with more than its limit of 1 024 disjoint chunks (past which it
/// closes the whole dataChannel): every hole is one lost packet, so at loss
/// rate `p` a full window of `W / 1 200` minimum-size packets holds about
/// `p × W / 1 200` holes, ~700 at 5 % (the worst loss the WAN grid runs), and
/// a lost retransmission keeps a hole only `p` as often. Bursts of drops from
/// an overfilled queue are the congestion controller's to prevent (see
/// `congestion`). Checked by `stream_window_keeps_random_loss_under_the_gap_limit`
/// here and by the simulator (`congestion/sim.rs`).
pub const STREAM_RECEIVE_WINDOW: VarInt = VarInt::from_u32(16 << 20);

/// The largest UDP payload MTU discovery probes for (quinn's default stops at
/// 1 452). Paths that carry more (loopback, jumbo-frame LANs) then need fewer
/// packets per byte, and per-packet work (framing, crypto set-up, acks, the
/// kernel's per-datagram path) is most of a dataChannel's CPU: on loopback,
/// one stream through two daemons, 5.1–5.5 Gbit/s at 2.3–2.5 CPU-s/GB with
/// 1 452 and 8.6–9.5 Gbit/s at 1.2–1.3 with this ceiling (iperf3, same run).
///
/// Why not higher: quinn hands the kernel up to 10 packets per GSO send
/// (its `MAX_TRANSMIT_SEGMENTS`), and Linux refuses a GSO send of more than
/// 64 KiB with EINVAL, after which quinn-udp turns GSO off for good. So
/// 10 × the packet size must stay under 65 507 bytes (IPv4's ceiling); at
/// 8 192, 16 384 or 65 000 the sends failed and throughput fell below the
/// 1 452 figure, which is why earlier trials of a larger MTU saw no gain.
/// On a 1 500-byte path the probes above it fail (locally with EMSGSIZE,
/// which quinn-udp treats as a lost probe) and the search settles at 1 452.
pub const UDP_MTU_CEILING: u16 = 6_500;
// A GSO send of quinn's 10 largest packets fits IPv4's 65 535-byte datagram
// less its IP and UDP headers, and the ceiling is above quinn's default.
const _: () = assert!(UDP_MTU_CEILING as usize * 10 <= 65_535 - 20 - 8 && UDP_MTU_CEILING > 1_452);

/// Kernel socket buffer we ask for; a high-bandwidth path drops packets in the
/// kernel long before QUIC's windows fill with the 200 KiB default.
const UDP_BUFFER: usize = 8 << 20;

/// Streams the peer may open on a new dataChannel before we grant more.
///
/// quinn keeps a map entry per stream the peer may open, allocated up front:
/// a 100 000 grant costs ~5 MiB and ~200 000 hash inserts per connection,
/// which is most of an idle daemon's memory. So the grant starts small and
/// grows with use ([`next_stream_credit`]).
pub const INITIAL_STREAM_CREDIT: u32 = 1024;
/// The most streams the peer may have open on one dataChannel (each app
/// connection is a stream; a busy site forwards thousands at once).
pub const MAX_STREAM_CREDIT: u32 = 100_000;

/// The stream grant after the peer opened a stream while `open` streams are
/// open on the channel: ×4 once three quarters of `current` are in use, so the
/// new grant (one round trip away) arrives before the peer runs out.
pub fn next_stream_credit(current: u32, open: usize) -> u32 {
    if open.saturating_mul(4) >= (current as usize).saturating_mul(3) {
        current.saturating_mul(4).min(MAX_STREAM_CREDIT)
    } else {
        current
    }
}

/// Connection-level receive window until the key proof passed: all the peer
/// may have in flight to us, over every stream, before it proved the key. A
/// hello is under 300 bytes; this bounds what a keyless peer makes us buffer.
///
/// The per-stream window cannot serve as that bound: quinn sends it in the
/// handshake and has no way to raise it on a live connection, so it stays
/// sized for throughput and this connection-level window (which quinn can
/// raise: `Connection::set_receive_window`) is the one that is small.
pub const PREAUTH_RECEIVE_WINDOW: u32 = 64 << 10;

/// Which end of dataChannels a transport config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Accepts channels: the dialer opens the hello stream.
    Listener,
    /// Dials channels: the listener needs no stream of its own to answer.
    Dialer,
}

/// Transport parameters for every dataChannel on `side`.
///
/// The per-stream receive window is sized for high bandwidth-delay paths
/// (e.g. 1 Gbit/s at 100 ms needs ~12 MiB in flight); it is a limit, not an
/// allocation. The connection's send and receive windows, which bound what a
/// daemon buffers, start at [`MIN_WINDOW`] and follow the path
/// ([`super::window`]). Until [`grant_after_auth`], the peer gets only what the key
/// proof needs (`preauth_limits`).
pub fn transport_config(cc: CongestionControl, side: Side) -> Arc<TransportConfig> {
    Arc::new(build_transport_config(cc, side))
}

fn build_transport_config(cc: CongestionControl, side: Side) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(INITIAL_STREAM_CREDIT))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(STREAM_RECEIVE_WINDOW)
        // Both start at the floor and follow the path from there
        // (`window`, driven by the channel's task).
        .receive_window(VarInt::from_u32(MIN_WINDOW as u32))
        .send_window(MIN_WINDOW)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .enable_segmentation_offload(true);
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.upper_bound(UDP_MTU_CEILING);
    t.mtu_discovery_config(Some(mtud));
    // IDLE_TIMEOUT is far below IdleTimeout's 2^62 ms ceiling.
    t.max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    match cc {
        // quinn's CUBIC behind a startup that cannot overfill the queue.
        CongestionControl::Cubic => t.congestion_controller_factory(Arc::new(
            super::congestion::cubic::CubicConfig::default(),
        )),
        // Ours, not quinn's experimental BBR: see the congestion module.
        CongestionControl::Bbr => t.congestion_controller_factory(Arc::new(BbrConfig::default())),
    };
    preauth_limits(&mut t, side);
    t
}

/// QUIC packet size on TCP dataChannels. TCP has no path MTU to respect, so
/// packets are larger than over UDP: fewer packets, acks and per-packet
/// crypto calls per byte: measured ~2× the throughput of 1 200-byte packets
/// (see the design note in `tunnel::tcp`).
pub const TCP_MTU: u16 = 16_384;

/// [`transport_config`] for channels over TCP: [`TCP_MTU`]-sized packets from
/// the start, no MTU discovery (the path never drops a large packet).
pub fn tcp_transport_config(cc: CongestionControl, side: Side) -> Arc<TransportConfig> {
    let mut t = build_transport_config(cc, side);
    t.initial_mtu(TCP_MTU)
        .min_mtu(TCP_MTU)
        .mtu_discovery_config(None);
    Arc::new(t)
}

/// quinn's endpoint settings for a TCP dataChannel: QUIC packets up to the
/// largest a frame carries.
pub fn tcp_endpoint_config() -> quinn::EndpointConfig {
    let mut c = udp::endpoint_config();
    // Within quinn's accepted range (1200..=65527), so this cannot fail; if it
    // did, the default (1472) would hold and TCP_MTU packets would be dropped
    // (and counted) by the receiving link.
    let _ = c.max_udp_payload_size(TCP_MTU);
    c
}

/// Runs `f`, which spawns one of quinn's drivers, with no current span.
///
/// quinn instruments its endpoint and connection drivers with the caller's
/// span, and a driver is polled for every packet: entering and leaving a span
/// of ours through the subscriber's layers on each poll cost ~2 µs of CPU per
/// round trip through two sites. The drivers log only at debug and trace
/// (which our filter drops), apart from a send error that ends a connection.
pub fn spanless<T>(f: impl FnOnce() -> T) -> T {
    tracing::dispatcher::with_default(&tracing::Dispatch::none(), f)
}

/// An endpoint whose only socket is one TCP connection ([`super::tcp::Link`]);
/// `server` for the accepting side.
pub fn over_tcp(
    link: Arc<super::tcp::Link>,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for quinn"))?;
    spanless(|| {
        quinn::Endpoint::new_with_abstract_socket(tcp_endpoint_config(), server, link, runtime)
    })
}

/// Limits a new connection starts with, before the peer proved the key: the
/// hello stream the dialer opens (none for a listener to open toward a
/// dialer) and [`PREAUTH_RECEIVE_WINDOW`] in all.
fn preauth_limits(t: &mut TransportConfig, side: Side) {
    let streams = match side {
        Side::Listener => 1u32,
        Side::Dialer => 0,
    };
    t.max_concurrent_bidi_streams(VarInt::from_u32(streams))
        .receive_window(VarInt::from_u32(PREAUTH_RECEIVE_WINDOW));
}

/// Opens a connection up once the peer passed the key proof: the
/// authenticated connection window (from which [`super::window`] takes over) and the first stream credit (grown later with
/// [`next_stream_credit`]). quinn sends the new limits at once.
pub fn grant_after_auth(conn: &quinn::Connection) {
    conn.set_receive_window(VarInt::from_u32(MIN_WINDOW as u32));
    conn.set_max_concurrent_bi_streams(VarInt::from_u32(INITIAL_STREAM_CREDIT));
}

/// Connection attempts quinn queues for the accept loop before it decided on
/// them (each holds its first datagrams). The loop decides without waiting, so
/// the queue is short unless the daemon is starved; this bounds it then.
const MAX_INCOMING: usize = 4096;

/// Bounds what a listener buffers for connection attempts not yet decided on
/// (quinn's defaults allow 65 536 of them and 100 MiB).
pub fn limit_incoming(server: &mut quinn::ServerConfig) {
    server
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(64 << 10)
        .incoming_buffer_size_total(8 << 20);
}

/// Binds a UDP socket with large buffers and wraps it in a quinn endpoint
/// whose socket also carries STUN and punch packets (its [`Aux`] side).
/// `server` is `Some` for listening sockets.
pub fn bind(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<(quinn::Endpoint, Arc<Aux>), TunnelError> {
    let bind_err = |e: std::io::Error| TunnelError::Bind { addr, source: e };
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(bind_err)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Dual-stack: one `[::]` socket serves IPv4 peers too.
        let _ = sock.set_only_v6(false);
    }
    // Best effort: the kernel clamps to net.core.{r,w}mem_max; as root the
    // FORCE variants lift the clamp.
    if !force_buffer(&sock, libc::SO_RCVBUFFORCE) {
        let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    }
    if !force_buffer(&sock, libc::SO_SNDBUFFORCE) {
        let _ = sock.set_send_buffer_size(UDP_BUFFER);
    }
    sock.bind(&addr.into()).map_err(bind_err)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| TunnelError::Tls("no async runtime for quinn".into()))?;
    let (demux, aux) = Demux::new(sock.into()).map_err(bind_err)?;
    let ep = spanless(|| {
        quinn::Endpoint::new_with_abstract_socket(udp::endpoint_config(), server, demux, runtime)
    })
    .map_err(bind_err)?;
    Ok((ep, aux))
}

/// An unbound local address of the same family as `peer`, for dialing.
pub fn dial_address(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Sets a socket buffer past `net.core.*mem_max` (needs CAP_NET_ADMIN; the
/// caller falls back to the clamped setter otherwise). socket2 has no safe
/// wrapper for the FORCE options.
fn force_buffer(sock: &socket2::Socket, opt: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    let size = UDP_BUFFER as libc::c_int;
    // SAFETY: the fd is a live socket owned by `sock`; the option value is a
    // c_int on the stack whose size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::tls::{self, Identity};

    /// A listener and a dialer on loopback with the real configs of `listener`
    /// and `dialer`, and an established connection between them.
    async fn pair(
        listener: Side,
        dialer: Side,
    ) -> (quinn::Endpoint, quinn::Connection, quinn::Connection) {
        let id = Identity::generate().unwrap();
        let server = id
            .server_config(transport_config(CongestionControl::Cubic, listener))
            .unwrap();
        let (ep, _) = bind((Ipv4Addr::LOCALHOST, 0).into(), Some(server)).unwrap();
        let client = tls::client_config(
            &Identity::generate().unwrap(),
            id.fingerprint(),
            transport_config(CongestionControl::Cubic, dialer),
        )
        .unwrap();
        let (dialer_ep, _) = bind((Ipv4Addr::LOCALHOST, 0).into(), None).unwrap();
        let addr = ep.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(
            async {
                dialer_ep
                    .connect_with(client, addr, tls::SERVER_NAME)
                    .unwrap()
                    .await
                    .unwrap()
            },
            async { ep.accept().await.unwrap().await.unwrap() }
        );
        (ep, dialed, accepted)
    }

    /// Writes to `send` until flow control blocks it (nothing accepted for
    /// 300 ms) or `limit` bytes went; returns how many were accepted.
    async fn push(send: &mut quinn::SendStream, limit: u64) -> u64 {
        let chunk = [0x5a; 4096];
        let mut written = 0;
        while written < limit {
            match tokio::time::timeout(Duration::from_millis(300), send.write(&chunk)).await {
                Ok(Ok(n)) => written += n as u64,
                Ok(Err(e)) => panic!("write failed: {e}"),
                Err(_) => break,
            }
        }
        written
    }

    async fn blocked<T>(f: impl Future<Output = T>) -> bool {
        tokio::time::timeout(Duration::from_millis(300), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn before_the_proof_a_dialer_gets_one_stream_and_the_small_window() {
        let (_ep, dialer, listener) = pair(Side::Listener, Side::Dialer).await;
        let (mut hello, _r) = dialer.open_bi().await.unwrap();
        assert!(
            blocked(dialer.open_bi()).await,
            "a second stream before the proof"
        );
        let early = push(&mut hello, 1 << 20).await;
        assert!(
            early <= u64::from(PREAUTH_RECEIVE_WINDOW),
            "the listener took {early} bytes before the proof"
        );
        grant_after_auth(&listener);
        let (mut more, _r2) = tokio::time::timeout(Duration::from_secs(5), dialer.open_bi())
            .await
            .expect("streams after the grant")
            .unwrap();
        let later = push(&mut more, 1 << 20).await;
        assert_eq!(later, 1 << 20, "full windows after the grant");
    }

    #[tokio::test]
    async fn before_the_proof_a_listener_gets_no_stream_and_the_small_window() {
        let (_ep, dialer, listener) = pair(Side::Listener, Side::Dialer).await;
        // The hello stream the dialer opens is the listener's only way to send.
        let (mut d_send, _d_recv) = dialer.open_bi().await.unwrap();
        d_send.write_all(&[1]).await.unwrap();
        let (mut l_send, _l_recv) = listener.accept_bi().await.unwrap();
        assert!(
            blocked(listener.open_bi()).await,
            "a listener stream before the proof"
        );
        let early = push(&mut l_send, 1 << 20).await;
        assert!(
            early <= u64::from(PREAUTH_RECEIVE_WINDOW),
            "the dialer took {early} bytes before the proof"
        );
        grant_after_auth(&dialer);
        let (mut more, _r) = tokio::time::timeout(Duration::from_secs(5), listener.open_bi())
            .await
            .expect("streams after the grant")
            .unwrap();
        assert_eq!(push(&mut more, 1 << 20).await, 1 << 20);
    }

    /// quinn's limit on the disjoint chunks one stream's receive buffer may
    /// hold (`MAX_CHUNKS` in quinn-proto's assembler, not configurable).
    const QUINN_MAX_CHUNKS: f64 = 1024.0;
    /// The worst random loss the WAN grid runs.
    const DESIGN_LOSS: f64 = 0.05;

    #[test]
    fn stream_window_keeps_random_loss_under_the_gap_limit() {
        // QUIC's smallest packets (1 200-byte datagrams) carry ~1 100 bytes
        // of stream data after headers; every one lost leaves one hole.
        let packets = STREAM_RECEIVE_WINDOW.into_inner() as f64 / 1100.0;
        // Holes whose retransmission is lost too, and so on: 1 / (1 - p).
        let holes = packets * DESIGN_LOSS / (1.0 - DESIGN_LOSS);
        assert!(holes < QUINN_MAX_CHUNKS, "{holes:.0} expected holes");
        // And a stream can still fill 1 Gbit/s at 100 ms.
        assert!(STREAM_RECEIVE_WINDOW.into_inner() >= 1_000_000_000 / 8 / 10);
    }

    #[test]
    fn stream_credit_grows_fourfold_at_three_quarters_use_up_to_the_cap() {
        assert_eq!(next_stream_credit(1024, 0), 1024);
        assert_eq!(next_stream_credit(1024, 767), 1024);
        assert_eq!(next_stream_credit(1024, 768), 4096);
        assert_eq!(next_stream_credit(4096, 3072), 16_384);
        assert_eq!(next_stream_credit(65_536, 60_000), MAX_STREAM_CREDIT);
        assert_eq!(
            next_stream_credit(MAX_STREAM_CREDIT, 99_999),
            MAX_STREAM_CREDIT
        );
    }
}
