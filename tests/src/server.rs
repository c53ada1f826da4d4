//! Tiny app servers that wovenet sites expose in tests: echo (optionally with a banner), sink
//! (hashes what it receives while sending seeded data back) and resetting (aborts connections).
//! Each runs on the current tokio runtime and stops when dropped. They know nothing of wovenet.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Mutex, mpsc};
use tokio::task::{AbortHandle, JoinSet};

use crate::data::{self, Digest};
use crate::sock::{Sock, Stream};

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    async fn bind_tcp(ip: IpAddr) -> Self {
        let l = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .unwrap_or_else(|e| panic!("test server cannot bind {ip}:0: {e}"));
        Self::Tcp(l)
    }

    fn bind_unix(path: &Path) -> Self {
        let l = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("test server cannot bind unix {}: {e}", path.display()));
        Self::Unix(l)
    }

    fn sock(&self) -> Sock {
        match self {
            Self::Tcp(l) => Sock::Tcp(l.local_addr().expect("bound listener has an address")),
            Self::Unix(l) => {
                let addr = l.local_addr().expect("bound listener has an address");
                Sock::Unix(addr.as_pathname().expect("bound to a path").to_path_buf())
            }
        }
    }

    async fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Self::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}

/// The accept loop of one server; aborting it drops its `JoinSet`, which aborts every
/// connection task, so dropping a server really stops it.
struct Running {
    sock: Sock,
    accepted: Arc<AtomicUsize>,
    accept_task: AbortHandle,
}

impl Running {
    fn spawn<F, Fut>(listener: Listener, handler: F) -> Self
    where
        F: Fn(Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sock = listener.sock();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let accept_task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => match r {
                        Ok(stream) => {
                            counter.fetch_add(1, Ordering::SeqCst);
                            conns.spawn(handler(stream));
                        }
                        // EMFILE and friends: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        })
        .abort_handle();
        Self {
            sock,
            accepted,
            accept_task,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.accept_task.abort();
        if let Sock::Unix(p) = &self.sock {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Echoes every byte back. Half-close aware: after the client's EOF it finishes writing what
/// it read and then shuts its write side down, so the client sees EOF only after all data.
pub struct EchoServer {
    running: Running,
}

impl EchoServer {
    /// On 127.0.0.1, a free port.
    pub async fn tcp() -> Self {
        Self::tcp_on(Ipv4Addr::LOCALHOST.into()).await
    }

    /// On `ip` (e.g. 127.0.0.2, which Linux serves on loopback), a free port.
    pub async fn tcp_on(ip: IpAddr) -> Self {
        Self::start(Listener::bind_tcp(ip).await, None)
    }

    /// On 127.0.0.1; every connection first receives `banner`, then the echo begins. Used to
    /// tell which site's server answered.
    pub async fn tcp_with_banner(banner: impl Into<Vec<u8>>) -> Self {
        let l = Listener::bind_tcp(Ipv4Addr::LOCALHOST.into()).await;
        Self::start(l, Some(banner.into()))
    }

    /// On a unix socket at `path` (created; removed on drop).
    pub async fn unix(path: impl AsRef<Path>) -> Self {
        Self::start(Listener::bind_unix(path.as_ref()), None)
    }

    fn start(listener: Listener, banner: Option<Vec<u8>>) -> Self {
        let banner: Arc<[u8]> = banner.unwrap_or_default().into();
        let running = Running::spawn(listener, move |stream| echo(stream, banner.clone()));
        Self { running }
    }

    /// Where it listens, as `tcp:..`/`unix:..`.
    pub fn sock(&self) -> &Sock {
        &self.running.sock
    }

    /// TCP port (panics for a unix server).
    pub fn port(&self) -> u16 {
        self.running
            .sock
            .tcp_addr()
            .expect("tcp echo server")
            .port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.running.accepted.load(Ordering::SeqCst)
    }
}

async fn echo(stream: Stream, banner: Arc<[u8]>) {
    let (mut r, mut w) = tokio::io::split(stream);
    if !banner.is_empty() && w.write_all(&banner).await.is_err() {
        return;
    }
    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
        let _ = w.shutdown().await;
    }
}

/// What a [`SinkServer`] saw on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// Bytes received before EOF (or before the error).
    pub received: u64,
    /// SHA-256 of the bytes received (`None` if reading failed).
    pub sha256: Option<Digest>,
    /// Bytes written back (all of `send_len` unless writing failed).
    pub sent: u64,
    /// The first I/O error, if any.
    pub error: Option<String>,
}

/// On each connection, concurrently reads to EOF hashing everything and writes `send_len`
/// bytes of the [`crate::data`] stream for `send_seed`, then shuts its write side down and
/// reports a [`SinkReport`].
pub struct SinkServer {
    running: Running,
    reports: Mutex<mpsc::UnboundedReceiver<SinkReport>>,
}

impl SinkServer {
    /// On 127.0.0.1, a free port.
    pub async fn tcp(send_len: u64, send_seed: u64) -> Self {
        let listener = Listener::bind_tcp(Ipv4Addr::LOCALHOST.into()).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let running = Running::spawn(listener, move |stream| {
            sink(stream, send_len, send_seed, tx.clone())
        });
        Self {
            running,
            reports: Mutex::new(rx),
        }
    }

    /// On a unix socket at `path` (reachable from every network namespace).
    pub async fn unix(path: impl AsRef<Path>, send_len: u64, send_seed: u64) -> Self {
        let listener = Listener::bind_unix(path.as_ref());
        let (tx, rx) = mpsc::unbounded_channel();
        let running = Running::spawn(listener, move |stream| {
            sink(stream, send_len, send_seed, tx.clone())
        });
        Self {
            running,
            reports: Mutex::new(rx),
        }
    }

    /// Where it listens.
    pub fn sock(&self) -> &Sock {
        &self.running.sock
    }

    /// The report of the next connection to finish; panics after `timeout`.
    pub async fn next_report(&self, timeout: Duration) -> SinkReport {
        let mut rx = self.reports.lock().await;
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("sink server stopped"),
            Err(_) => panic!(
                "sink server: no connection finished within {timeout:?} ({} accepted)",
                self.running.accepted.load(Ordering::SeqCst)
            ),
        }
    }
}

async fn sink(stream: Stream, send_len: u64, seed: u64, tx: mpsc::UnboundedSender<SinkReport>) {
    let (mut r, mut w) = tokio::io::split(stream);
    let reading = data::hash_to_end(&mut r);
    let writing = async {
        data::write_stream(&mut w, seed, send_len).await?;
        w.shutdown().await
    };
    let (read, write) = tokio::join!(reading, writing);
    let mut error = None;
    let (received, sha256) = match read {
        Ok((n, d)) => (n, Some(d)),
        Err((n, e)) => {
            error = Some(format!("read: {e}"));
            (n, None)
        }
    };
    let sent = match write {
        Ok(()) => send_len,
        Err(e) => {
            error.get_or_insert(format!("write: {e}"));
            0
        }
    };
    let _ = tx.send(SinkReport {
        received,
        sha256,
        sent,
        error,
    });
}

/// Accepts TCP connections, waits for the first bytes (up to 5 s, so the stream through the
/// tunnel is surely established), then resets the connection (SO_LINGER 0 and close).
pub struct ResettingServer {
    running: Running,
}

impl ResettingServer {
    /// On 127.0.0.1, a free port.
    pub async fn tcp() -> Self {
        let listener = Listener::bind_tcp(Ipv4Addr::LOCALHOST.into()).await;
        Self {
            running: Running::spawn(listener, reset),
        }
    }

    /// On a listener made elsewhere (e.g. inside a network namespace with
    /// `Netns::tcp_listener`).
    pub fn on(listener: TcpListener) -> Self {
        Self {
            running: Running::spawn(Listener::Tcp(listener), reset),
        }
    }

    /// Where it listens.
    pub fn sock(&self) -> &Sock {
        &self.running.sock
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.running.accepted.load(Ordering::SeqCst)
    }
}

async fn reset(stream: Stream) {
    let Stream::Tcp(mut s) = stream else { return };
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    // SO_LINGER 0 makes close() send RST instead of FIN.
    let _ = s.set_zero_linger();
    drop(s);
}

/// A fresh tempdir for unix sockets of servers (short path, well under the 108-byte limit).
pub fn socket_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wovenet-e2e-sock-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create tempdir: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(s: &Sock, data: &[u8]) -> Vec<u8> {
        let mut c = s.connect().await.unwrap();
        c.write_all(data).await.unwrap();
        c.shutdown().await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn tcp_echo_returns_everything_then_eof_after_half_close() {
        let srv = EchoServer::tcp().await;
        let data = data::bytes(1, 1 << 20);
        assert_eq!(roundtrip(srv.sock(), &data).await, data);
        assert_eq!(srv.accepted(), 1);
    }

    #[tokio::test]
    async fn unix_echo_works_and_removes_its_socket_on_drop() {
        let dir = socket_dir();
        let path = dir.path().join("e.sock");
        let srv = EchoServer::unix(&path).await;
        assert_eq!(roundtrip(srv.sock(), b"hello unix").await, b"hello unix");
        drop(srv);
        assert!(!path.exists());
    }

    /// The range-app tests rely on a second loopback address to test `addressRange`.
    #[tokio::test]
    async fn echo_server_can_listen_on_another_loopback_address() {
        let srv = EchoServer::tcp_on(Ipv4Addr::new(127, 0, 0, 2).into()).await;
        assert_eq!(
            srv.sock().tcp_addr().unwrap().ip(),
            Ipv4Addr::new(127, 0, 0, 2)
        );
        assert_eq!(roundtrip(srv.sock(), b"x").await, b"x");
    }

    #[tokio::test]
    async fn banner_comes_before_the_echo() {
        let srv = EchoServer::tcp_with_banner("site-b\n").await;
        assert_eq!(roundtrip(srv.sock(), b"x").await, b"site-b\nx");
    }

    #[tokio::test]
    async fn dropped_server_stops_accepting() {
        let srv = EchoServer::tcp().await;
        let s = srv.sock().clone();
        drop(srv);
        tokio::task::yield_now().await;
        crate::assert_eventually_async!(
            s.connect().await.is_err(),
            Duration::from_secs(5),
            "still accepting"
        );
    }

    #[tokio::test]
    async fn sink_hashes_what_it_gets_and_sends_seeded_data() {
        let srv = SinkServer::tcp(500_000, 42).await;
        let mut c = srv.sock().connect().await.unwrap();
        let (mut r, mut w) = tokio::io::split(&mut c);
        let send = async {
            data::write_stream(&mut w, 3, 700_000).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let ((), got) = tokio::join!(send, data::hash_to_end(&mut r));
        assert_eq!(got.unwrap(), (500_000, data::sha256_of(42, 500_000)));
        let report = srv.next_report(Duration::from_secs(5)).await;
        assert_eq!(
            report,
            SinkReport {
                received: 700_000,
                sha256: Some(data::sha256_of(3, 700_000)),
                sent: 500_000,
                error: None
            }
        );
    }

    #[tokio::test]
    async fn resetting_server_resets_after_first_bytes() {
        let srv = ResettingServer::tcp().await;
        let mut c = srv.sock().connect().await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap();
        let e = r.expect_err("expected a reset");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }
}
