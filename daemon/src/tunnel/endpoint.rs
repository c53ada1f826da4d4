//! quinn endpoints: UDP sockets sized for throughput and the transport
//! parameters every dataChannel uses. Knows nothing of sites or apps.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use super::TunnelError;
use super::congestion::BbrConfig;
use crate::config::CongestionControl;

/// A keep-alive every this often keeps NAT bindings open and lets a dead path
/// be noticed by the idle timeout below.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// No packet from the peer for this long and the dataChannel is declared dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(8);

/// Kernel socket buffer we ask for; a high-bandwidth path drops packets in the
/// kernel long before QUIC's windows fill with the 200 KiB default.
const UDP_BUFFER: usize = 8 << 20;

/// Transport parameters for every dataChannel.
///
/// Windows are sized for high bandwidth-delay paths (e.g. 1 Gbit/s at 100 ms
/// needs ~12 MiB in flight); they are limits, not allocations, so idle streams
/// cost nothing. The stream limit is high because each app connection is a
/// stream and a busy site forwards thousands at once.
pub fn transport_config(cc: CongestionControl) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(100_000))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(16 << 20))
        .receive_window(VarInt::from_u32(64 << 20))
        .send_window(64 << 20)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .enable_segmentation_offload(true);
    // IDLE_TIMEOUT is far below IdleTimeout's 2^62 ms ceiling.
    t.max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    match cc {
        CongestionControl::Cubic => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
        // Ours, not quinn's experimental BBR: see the congestion module.
        CongestionControl::Bbr => t.congestion_controller_factory(Arc::new(BbrConfig::default())),
    };
    Arc::new(t)
}

/// Binds a UDP socket with large buffers and wraps it in a quinn endpoint.
/// `server` is `Some` for listening sockets.
pub fn bind(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, TunnelError> {
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
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        sock.into(),
        runtime,
    )
    .map_err(bind_err)
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
