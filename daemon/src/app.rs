//! App forwarding: each app connection is one QUIC bidirectional stream.
//!
//! The client side ([`remote`]) accepts a local tcp/unix connection, opens a
//! stream through a [`StreamOpener`], writes a [`preamble::Request`] naming the
//! app and waits for the [`preamble::Response`]. The exposed side
//! ([`ExposedServer::serve_stream`]) reads the request, admits it against its
//! [`exposed::ExposedApps`], connects the app socket and replies. After that
//! both sides run [`pipe::pipe`], which copies raw bytes and maps TCP
//! half-close and reset onto QUIC stream finish and reset. UDP apps open one
//! such stream per client address and then carry datagrams ([`udp`]).
//!
//! A TCP client's address travels in the request (see [`preamble`] for the
//! versioning that keeps older sites working, and [`dialect`] for what the
//! client side remembers of them); an exposed app with `proxyProtocol` gets
//! it as a PROXY protocol header ([`proxy_header`]) before any data.
//!
//! This module must not know about MQTT, discovery, authentication or how a
//! dataChannel is picked: the tunnel layer hands it streams through
//! [`StreamOpener`] (client side) and gives every stream a peer opened to a
//! [`StreamServer`] (exposed side, implemented by [`ExposedServer`]).

pub mod dialect;
pub mod exposed;
pub mod pipe;
pub mod preamble;
pub mod proxy_header;
pub mod remote;
pub mod streams;
pub mod throttle;
pub mod udp;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{AppName, AppSocket, SiteName};
use crate::types::ChannelId;
use preamble::Decode;

pub use exposed::{ExposedApps, ExposedServer, Refusal, admit};
pub use pipe::{LocalStream, PipeOutcome, PipeStats, pipe};
pub use remote::RemoteListener;
pub use streams::{StreamRegistry, StreamTicket};
pub use throttle::{AppThrottle, ThrottleKey, Throttles};

/// How long either side waits for the other's preamble before giving up.
pub const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the exposed side waits for a TCP connect to the app socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// QUIC application error codes used to reset or stop app streams.
///
/// They are wire values: once shipped they never change meaning.
pub mod code {
    use quinn::VarInt;

    /// The local socket on the resetting side failed (read/write error, TCP reset).
    pub const LOCAL_FAILED: VarInt = VarInt::from_u32(1);
    /// The resetting side's peer failed (its stream was reset or its connection
    /// lost), so it tore down the local socket and this stream too.
    pub const PEER_FAILED: VarInt = VarInt::from_u32(2);
    /// The stream was refused; the status reply says why.
    pub const REFUSED: VarInt = VarInt::from_u32(3);
    /// The preamble was malformed, incomplete or too slow.
    pub const BAD_PREAMBLE: VarInt = VarInt::from_u32(4);
    /// The side is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(5);
}

/// Opens streams to other sites; implemented by the tunnel registry.
pub trait StreamOpener: Send + Sync + 'static {
    /// A new bidirectional stream to `site` on its least-loaded healthy dataChannel.
    fn open_stream(
        &self,
        site: &SiteName,
    ) -> impl Future<Output = Result<TunnelStream, OpenError>> + Send;
}

/// Serves the streams peers open on their dataChannels; implemented by the
/// exposed side ([`ExposedServer`]) and handed to the tunnel layer, which
/// therefore needs to know nothing of apps.
pub trait StreamServer: Send + Sync + 'static {
    /// Serves one stream `peer` opened; `origin` is the dataChannel's remote
    /// address. The future owns everything it needs and runs until the stream
    /// ends; the stream's guard is dropped with it.
    fn serve(
        &self,
        stream: TunnelStream,
        peer: SiteName,
        origin: std::net::SocketAddr,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// One app stream: handed out by a [`StreamOpener`] or to a [`StreamServer`].
pub struct TunnelStream {
    /// Bytes towards the far site.
    pub send: quinn::SendStream,
    /// Bytes from the far site.
    pub recv: quinn::RecvStream,
    /// Dropped when the stream ends; the tunnel uses it to count open streams per channel.
    pub guard: Box<dyn std::any::Any + Send>,
    /// The dataChannel carrying it, for the stream views.
    pub channel: ChannelId,
    /// The dataChannel's datagrams, for UDP flows.
    pub datagrams: std::sync::Arc<udp::Demux>,
}

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStream")
            .field("send", &self.send.id())
            .field("recv", &self.recv.id())
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Why a [`StreamOpener`] could not open a stream.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No healthy dataChannel to that site.
    #[error("site '{0}' is not connected")]
    NotConnected(SiteName),
    /// A dataChannel existed but opening the stream on it failed.
    #[error("cannot open a stream: {0}")]
    Connection(String),
}

/// Errors of app registries and listeners.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// An exposed app with this name is already registered.
    #[error("exposed app '{0}' already exists")]
    Exists(AppName),
    /// The local socket of a remote app could not be bound.
    #[error("cannot listen on '{socket}': {source}")]
    Bind {
        /// The socket that failed.
        socket: AppSocket,
        /// The OS error.
        source: std::io::Error,
    },
    /// A unix socket path is in use by a live listener.
    #[error("cannot listen on 'unix:{}': another process is listening on it", .path.display())]
    InUse {
        /// The path that answered a connect.
        path: PathBuf,
    },
    /// A unix socket path exists and is not a socket, so it is not ours to remove.
    #[error("cannot listen on 'unix:{}': the path exists and is not a socket", .path.display())]
    NotASocket {
        /// The offending path.
        path: PathBuf,
    },
}

/// Reads one preamble from `recv` without consuming any byte after it.
///
/// Reads are sized by [`Decode::missing`] so app data that follows the
/// preamble stays in the stream for the pipe.
async fn read_preamble<T: Decode>(recv: &mut quinn::RecvStream) -> Result<T, ReadPreambleError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        if let Some((value, _)) = T::decode(&buf)? {
            return Ok(value);
        }
        let start = buf.len();
        // `missing` is >= 1 whenever `decode` returned `Ok(None)`.
        buf.resize(start + T::missing(&buf).max(1), 0);
        match recv.read(&mut buf[start..]).await {
            Ok(Some(n)) => buf.truncate(start + n),
            Ok(None) => return Err(ReadPreambleError::Truncated(start)),
            Err(e) => return Err(ReadPreambleError::Read(e)),
        }
    }
}

/// Why a preamble could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadPreambleError {
    #[error("{0}")]
    Malformed(#[from] preamble::PreambleError),
    #[error("stream finished after {0} bytes of preamble")]
    Truncated(usize),
    #[error("{0}")]
    Read(quinn::ReadError),
}
