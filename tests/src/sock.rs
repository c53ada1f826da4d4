//! Socket addresses as wovenetd spells them (`tcp:IP:PORT`, `unix:PATH`), free-port picking, and
//! a client stream that is either TCP or unix. Owns nothing that talks to a daemon.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A `tcp:IP:PORT` or `unix:PATH` socket, displayed exactly as wovenetd's config expects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sock {
    /// TCP.
    Tcp(SocketAddr),
    /// Unix stream socket.
    Unix(PathBuf),
}

impl Sock {
    /// `tcp:127.0.0.1:PORT` with a port that was free a moment ago (see [`free_tcp_port`]).
    pub fn free_tcp() -> Self {
        Self::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port())))
    }

    /// `unix:PATH`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::Unix(path.into())
    }

    /// The TCP address, if this is a TCP socket.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(a) => Some(*a),
            Self::Unix(_) => None,
        }
    }

    /// The path, if this is a unix socket.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Tcp(_) => None,
            Self::Unix(p) => Some(p),
        }
    }

    /// Connects once. A TCP connection that the kernel "self-connected" (source port equal to
    /// the destination port, which Linux allows on loopback when nothing listens) is reported
    /// as refused, because nothing is really listening there.
    pub async fn connect(&self) -> io::Result<Stream> {
        match self {
            Self::Tcp(addr) => {
                let s = TcpStream::connect(addr).await?;
                if s.local_addr()? == s.peer_addr()? {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "self-connect on loopback (nothing listening)",
                    ));
                }
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Self::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }
}

impl fmt::Display for Sock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp:{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Ports this process already handed out; never handed out twice, so two tests running in
/// parallel cannot be given the same "free" port between picking it and the daemon binding it.
fn handed_out() -> &'static Mutex<HashSet<(bool, u16)>> {
    static PORTS: OnceLock<Mutex<HashSet<(bool, u16)>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

fn pick(udp: bool) -> u16 {
    for _ in 0..1000 {
        let port = if udp {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
        } else {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
        }
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to pick a free port: {e}"));
        let mut seen = handed_out().lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert((udp, port)) {
            return port;
        }
    }
    panic!("could not find a free port not already handed out in 1000 tries")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind `:0`, read, drop).
pub fn free_tcp_port() -> u16 {
    pick(false)
}

/// A UDP port on 127.0.0.1 that was free a moment ago (for QUIC `localSockets`).
pub fn free_udp_port() -> u16 {
    pick(true)
}

/// A connected client stream over TCP or a unix socket.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix.
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// Half-close: shuts down the write direction only.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sock_displays_in_wovenet_config_syntax() {
        let t = Sock::Tcp("127.0.0.1:5000".parse().unwrap());
        assert_eq!(t.to_string(), "tcp:127.0.0.1:5000");
        assert_eq!(Sock::unix("/tmp/x.sock").to_string(), "unix:/tmp/x.sock");
    }

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_tcp_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(ports.len(), unique.len(), "duplicates in {ports:?}");
        let p = free_udp_port();
        UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).expect("picked UDP port is bindable");
    }

    #[tokio::test]
    async fn connecting_to_a_free_port_is_refused() {
        let s = Sock::free_tcp();
        let err = s.connect().await.expect_err("nothing listens there");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
