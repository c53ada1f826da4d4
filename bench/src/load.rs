//! Load generators and the app server they talk to, in Rust on tokio so the generator is
//! never the bottleneck of what it measures. Every generator runs the same code against a
//! direct [`Target`] (the baseline) and against a tunnel's local socket.
//!
//! The app server speaks a one-byte protocol: the first byte a client sends picks the
//! mode ([`ECHO`], [`SINK`], [`SOURCE`]), so one exposed app serves every scenario.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod connrate;
pub mod latency;
pub mod probe;
pub mod relay;
pub mod server;
pub mod throughput;

pub use server::BenchServer;

/// First byte of an echo connection: everything sent, including this byte, comes back.
pub const ECHO: u8 = b'E';
/// First byte of an upload: the server reads and counts until end of stream.
pub const SINK: u8 = b'S';
/// First byte of a download: the server writes until the client goes away.
pub const SOURCE: u8 = b'G';

/// Size of the buffers bulk transfers read and write with.
pub const BULK_BUF: usize = 256 << 10;

/// Size of the request/response messages.
pub const MESSAGE: usize = 64;

/// Where a load generator connects, and how it makes its sockets.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// Namespace the client sockets are created in (`None`: this process's).
    pub netns: Option<String>,
    /// TCP congestion controller of the client sockets (`None`: the namespace default).
    pub congestion: Option<String>,
}

impl Target {
    /// Connects from this process's namespace with default settings.
    pub fn direct(addr: SocketAddr) -> Self {
        Self {
            addr,
            netns: None,
            congestion: None,
        }
    }

    /// Creates client sockets in namespace `ns`.
    pub fn in_netns(mut self, ns: impl Into<String>) -> Self {
        self.netns = Some(ns.into());
        self
    }

    /// Uses TCP congestion controller `cc` (e.g. `cubic`, `bbr`) on client sockets.
    pub fn with_congestion(mut self, cc: Option<String>) -> Self {
        self.congestion = cc;
        self
    }

    /// Opens a connection with `TCP_NODELAY` (request/response must not wait on Nagle).
    pub async fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = if self.netns.is_none() && self.congestion.is_none() {
            TcpStream::connect(self.addr).await?
        } else {
            let (addr, cc) = (self.addr, self.congestion.clone());
            let make = move || new_socket(addr, cc.as_deref());
            let sock = match &self.netns {
                None => make()?,
                Some(ns) => crate::wanem::netns::run_in(ns, make)
                    .map_err(|e| std::io::Error::other(e.to_string()))??,
            };
            let std_stream: std::net::TcpStream = sock.into();
            tokio::net::TcpSocket::from_std_stream(std_stream)
                .connect(self.addr)
                .await?
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects and does one [`MESSAGE`]-sized echo exchange, proving the whole path
    /// (through a tunnel: both daemons and the app) works.
    pub async fn echo_once(&self) -> std::io::Result<TcpStream> {
        let mut s = self.connect().await?;
        exchange(&mut s, &echo_message()).await?;
        Ok(s)
    }
}

/// A non-blocking, not yet connected TCP socket for `addr`'s family.
fn new_socket(addr: SocketAddr, cc: Option<&str>) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    if let Some(cc) = cc {
        s.set_tcp_congestion(cc.as_bytes())?;
    }
    Ok(s)
}

/// A [`MESSAGE`]-sized request that opens an echo connection.
pub fn echo_message() -> Vec<u8> {
    let mut m = vec![0x5a; MESSAGE];
    m[0] = ECHO;
    m
}

/// Sends `msg` and reads back as many bytes, checking they are the same.
pub async fn exchange(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg).await?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).await?;
    if back != msg {
        return Err(std::io::Error::other("echo came back different"));
    }
    Ok(())
}

/// Opens `n` connections, each proven with one echo exchange, at most `parallel` at a
/// time, and returns them open (idle). Fails on the first connection that fails.
pub async fn hold(target: &Target, n: usize, parallel: usize) -> std::io::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < parallel {
            let t = target.clone();
            set.spawn(async move {
                tokio::time::timeout(Duration::from_secs(20), t.echo_once())
                    .await
                    .map_err(|_| std::io::Error::other("timed out"))?
            });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => out.push(s),
            Some(Ok(Err(e))) => {
                return Err(std::io::Error::other(format!(
                    "connection {} of {n} failed: {e}",
                    out.len() + 1
                )));
            }
            Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            None => break,
        }
    }
    Ok(out)
}
