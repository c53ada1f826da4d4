//! Throwaway design prototype for issue 12's TCP transport, not part of any
//! binary: measures on loopback, in one process and one run, bulk throughput
//! (1 and 8 streams, each way) and request/response latency over
//!
//! - `quic`: the daemon's current path (its endpoint, TLS and transport config);
//! - `quic/tcp`, `quic/tls`: the same quinn connection whose packets are
//!   length-framed (u16 big-endian) over one TCP, or TLS-over-TCP, connection
//!   through quinn's `AsyncUdpSocket` (`quic/tcp+mtu`: with 16 KiB QUIC packets,
//!   possible because TCP has no path MTU);
//! - `h2/tls`: rustls over TCP with the `h2` multiplexer, one HTTP/2 stream per
//!   app stream, windows sized like the daemon's QUIC ones.
//!
//! Run: `cargo run --release -p wovenet-bench --example tcp_transport_proto [secs]`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default,
    unreachable_pub
)]

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use wovenet_daemon::config::CongestionControl;
use wovenet_daemon::tunnel::endpoint::{self, Side};
use wovenet_daemon::tunnel::tls::{self, Identity};
use wovenet_daemon::tunnel::udp;

// ---------------------------------------------------------------- framing

/// Bytes queued toward the TCP writer before quinn is told "would block".
const OUT_CAP: usize = 1 << 20;
/// QUIC packet size for the `+mtu` variant.
const BIG_MTU: u16 = 16_384;

struct Out {
    q: VecDeque<Bytes>,
    bytes: usize,
    writer: Option<Waker>,
    pollers: Vec<Waker>,
}

/// A quinn socket whose one peer is at the other end of a byte stream.
struct Framed {
    peer: SocketAddr,
    local: SocketAddr,
    out: Mutex<Out>,
    rx: Mutex<mpsc::Receiver<Bytes>>,
}

impl fmt::Debug for Framed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framed").field("peer", &self.peer).finish()
    }
}

#[derive(Debug)]
struct Poller(Arc<Framed>);

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut o = self.0.out.lock().unwrap();
        if o.bytes < OUT_CAP {
            Poll::Ready(Ok(()))
        } else {
            o.pollers.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl AsyncUdpSocket for Framed {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller(self))
    }

    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        let mut o = self.out.lock().unwrap();
        if o.bytes >= OUT_CAP {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        let mut frame = BytesMut::with_capacity(t.contents.len() + 2 * t.contents.len() / seg + 2);
        for c in t.contents.chunks(seg) {
            frame.put_u16(c.len() as u16);
            frame.put_slice(c);
        }
        o.bytes += frame.len();
        o.q.push_back(frame.freeze());
        if let Some(w) = o.writer.take() {
            w.wake();
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.lock().unwrap();
        let mut n = 0;
        while n < bufs.len() {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(p)) if p.len() <= bufs[n].len() => {
                    bufs[n][..p.len()].copy_from_slice(&p);
                    let mut m = RecvMeta::default();
                    m.addr = self.peer;
                    m.len = p.len();
                    m.stride = p.len();
                    meta[n] = m;
                    n += 1;
                }
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if n == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(n))
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn max_transmit_segments(&self) -> usize {
        16
    }
}

async fn writer<W: AsyncWrite + Unpin>(f: Arc<Framed>, mut w: W) {
    let mut buf = Vec::with_capacity(OUT_CAP + 65_536);
    loop {
        let batch: Vec<Bytes> = poll_fn(|cx| {
            let mut o = f.out.lock().unwrap();
            if o.q.is_empty() {
                o.writer = Some(cx.waker().clone());
                Poll::Pending
            } else {
                let v: Vec<Bytes> = o.q.drain(..).collect();
                o.bytes = 0;
                for w in o.pollers.drain(..) {
                    w.wake();
                }
                Poll::Ready(v)
            }
        })
        .await;
        buf.clear();
        for b in batch {
            buf.extend_from_slice(&b);
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
}

async fn reader<R: AsyncRead + Unpin>(tx: mpsc::Sender<Bytes>, r: R) {
    let mut r = BufReader::with_capacity(256 << 10, r);
    loop {
        let Ok(len) = r.read_u16().await else { return };
        let mut b = BytesMut::zeroed(usize::from(len));
        if r.read_exact(&mut b).await.is_err() || tx.send(b.freeze()).await.is_err() {
            return;
        }
    }
}

fn framed_endpoint<S>(
    io: S,
    local: SocketAddr,
    peer: SocketAddr,
    server: Option<quinn::ServerConfig>,
    big: bool,
) -> quinn::Endpoint
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(4096);
    let f = Arc::new(Framed {
        peer,
        local,
        out: Mutex::new(Out {
            q: VecDeque::new(),
            bytes: 0,
            writer: None,
            pollers: Vec::new(),
        }),
        rx: Mutex::new(rx),
    });
    tokio::spawn(writer(f.clone(), w));
    tokio::spawn(reader(tx, r));
    let mut ec = udp::endpoint_config();
    if big {
        ec.max_udp_payload_size(u16::MAX - 8).unwrap();
    }
    quinn::Endpoint::new_with_abstract_socket(ec, server, f, Arc::new(quinn::TokioRuntime)).unwrap()
}

fn transport(side: Side, big: bool) -> Arc<quinn::TransportConfig> {
    let t = endpoint::transport_config(CongestionControl::Bbr, side);
    if !big {
        return t;
    }
    let mut t = Arc::try_unwrap(t).ok().unwrap();
    t.initial_mtu(BIG_MTU)
        .min_mtu(BIG_MTU)
        .mtu_discovery_config(None);
    Arc::new(t)
}

// ---------------------------------------------------------------- h2 duplex

enum RecvState {
    Waiting(h2::client::ResponseFuture),
    Body(h2::RecvStream),
}

struct H2Duplex {
    send: h2::SendStream<Bytes>,
    recv: RecvState,
    buf: Bytes,
    shut: bool,
}

fn io_err(e: h2::Error) -> io::Error {
    io::Error::other(e)
}

impl AsyncRead for H2Duplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(out.remaining());
                out.put_slice(&self.buf.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let body = match &mut self.recv {
                RecvState::Waiting(f) => {
                    let resp = ready!(Pin::new(f).poll(cx)).map_err(io_err)?;
                    self.recv = RecvState::Body(resp.into_body());
                    continue;
                }
                RecvState::Body(b) => b,
            };
            match ready!(body.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
                Some(Ok(d)) => {
                    let _ = body.flow_control().release_capacity(d.len());
                    self.buf = d;
                }
            }
        }
    }
}

impl AsyncWrite for H2Duplex {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        let n = match ready!(self.send.poll_capacity(cx)) {
            None => return Poll::Ready(Ok(0)),
            Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
            Some(Ok(n)) => n,
        };
        self.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_err)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            self.shut = true;
            self.send.send_data(Bytes::new(), true).map_err(io_err)?;
        }
        Poll::Ready(Ok(()))
    }
}

const H2_STREAM_WINDOW: u32 = 16 << 20;
const H2_CONN_WINDOW: u32 = 64 << 20;

// ---------------------------------------------------------------- TLS over TCP

fn tls_configs() -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

fn server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("localhost").unwrap()
}

// ---------------------------------------------------------------- load

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

enum Client {
    Quic(quinn::Connection),
    H2(h2::client::SendRequest<Bytes>),
}

impl Client {
    async fn open(&self) -> Box<dyn Duplex> {
        match self {
            Self::Quic(c) => {
                let (s, r) = c.open_bi().await.unwrap();
                Box::new(tokio::io::join(r, s))
            }
            Self::H2(sr) => {
                let mut sr = sr.clone().ready().await.unwrap();
                let req = http::Request::builder()
                    .method("POST")
                    .uri("https://localhost/")
                    .body(())
                    .unwrap();
                let (resp, send) = sr.send_request(req, false).unwrap();
                Box::new(H2Duplex {
                    send,
                    recv: RecvState::Waiting(resp),
                    buf: Bytes::new(),
                    shut: false,
                })
            }
        }
    }
}

const CHUNK: usize = 64 << 10;
const MSG: usize = 64;

/// The server side of one stream: `U` sink (answers the byte count), `D`
/// source for the given milliseconds, `P` echo until EOF.
async fn serve(mut s: Box<dyn Duplex>) {
    let mut cmd = [0u8; 1];
    if s.read_exact(&mut cmd).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    match cmd[0] {
        b'U' => {
            let mut n = 0u64;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k as u64,
                }
            }
            let _ = s.write_u64(n).await;
            let _ = s.shutdown().await;
        }
        b'D' => {
            let Ok(ms) = s.read_u64().await else { return };
            let end = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < end {
                if s.write_all(&buf).await.is_err() {
                    return;
                }
            }
            let _ = s.shutdown().await;
        }
        b'P' => {
            let mut m = [0u8; MSG];
            while s.read_exact(&mut m).await.is_ok() {
                if s.write_all(&m).await.is_err() {
                    return;
                }
            }
        }
        _ => {}
    }
}

async fn upload(c: &Client, d: Duration) -> (u64, Duration) {
    let mut s = c.open().await;
    let t0 = Instant::now();
    s.write_all(b"U").await.unwrap();
    let buf = vec![7u8; CHUNK];
    while t0.elapsed() < d {
        s.write_all(&buf).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let n = s.read_u64().await.unwrap();
    (n, t0.elapsed())
}

async fn download(c: &Client, d: Duration) -> (u64, Duration) {
    let mut s = c.open().await;
    let t0 = Instant::now();
    s.write_all(b"D").await.unwrap();
    s.write_u64(d.as_millis() as u64).await.unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf).await.unwrap() {
            0 => break,
            k => n += k as u64,
        }
    }
    (n, t0.elapsed())
}

async fn bulk(c: &Arc<Client>, streams: usize, up: bool, d: Duration) -> f64 {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            if up {
                upload(&c, d).await
            } else {
                download(&c, d).await
            }
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.unwrap().0;
    }
    bytes as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e6
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

/// Round trips of 64 bytes on one stream: (p50, p99) in µs.
async fn ping(c: &Client, rounds: usize) -> (f64, f64) {
    let mut s = c.open().await;
    s.write_all(b"P").await.unwrap();
    let mut m = [1u8; MSG];
    let mut v = Vec::with_capacity(rounds);
    for i in 0..rounds + 100 {
        let t = Instant::now();
        s.write_all(&m).await.unwrap();
        s.read_exact(&mut m).await.unwrap();
        if i >= 100 {
            v.push(t.elapsed());
        }
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

/// A new stream per 64-byte request and its answer: (p50, p99) in µs.
async fn ping_new_stream(c: &Client, rounds: usize) -> (f64, f64) {
    let mut v = Vec::with_capacity(rounds);
    let mut m = [1u8; MSG];
    for i in 0..rounds + 50 {
        let t = Instant::now();
        let mut s = c.open().await;
        let mut req = vec![b'P'];
        req.extend_from_slice(&m);
        s.write_all(&req).await.unwrap();
        s.read_exact(&mut m).await.unwrap();
        s.shutdown().await.unwrap();
        if i >= 50 {
            v.push(t.elapsed());
        }
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

// ---------------------------------------------------------------- setups

async fn serve_quic(ep: quinn::Endpoint) {
    while let Some(inc) = ep.accept().await {
        let Ok(conn) = inc.await else { continue };
        endpoint::grant_after_auth(&conn);
        tokio::spawn(async move {
            while let Ok((s, r)) = conn.accept_bi().await {
                tokio::spawn(serve(Box::new(tokio::io::join(r, s))));
            }
        });
    }
}

async fn quic_client(ep: &quinn::Endpoint, server: &Identity, to: SocketAddr) -> Client {
    let me = Identity::generate().unwrap();
    let cfg =
        tls::client_config(&me, server.fingerprint(), transport(Side::Dialer, false)).unwrap();
    let conn = ep
        .connect_with(cfg, to, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    endpoint::grant_after_auth(&conn);
    std::mem::forget(me);
    Client::Quic(conn)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Quic,
    QuicTcp,
    QuicTls,
    QuicTcpMtu,
    H2Tls,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::QuicTcp => "quic/tcp",
            Self::QuicTls => "quic/tls",
            Self::QuicTcpMtu => "quic/tcp+mtu",
            Self::H2Tls => "h2/tls",
        }
    }
}

async fn setup(kind: Kind) -> Client {
    let server = Identity::generate().unwrap();
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    match kind {
        Kind::Quic => {
            let cfg = server
                .server_config(transport(Side::Listener, false))
                .unwrap();
            let (sep, _) = endpoint::bind(lo, Some(cfg)).unwrap();
            let to = sep.local_addr().unwrap();
            tokio::spawn(serve_quic(sep));
            let (cep, _) = endpoint::bind(lo, None).unwrap();
            let c = quic_client(&cep, &server, to).await;
            std::mem::forget(cep);
            c
        }
        Kind::QuicTcp | Kind::QuicTls | Kind::QuicTcpMtu => {
            let big = matches!(kind, Kind::QuicTcpMtu);
            let tls = matches!(kind, Kind::QuicTls);
            let (acc, con) = tls_configs();
            let l = TcpListener::bind(lo).await.unwrap();
            let to = l.local_addr().unwrap();
            let cfg = server
                .server_config(transport(Side::Listener, big))
                .unwrap();
            tokio::spawn(async move {
                let (s, peer) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                let local = s.local_addr().unwrap();
                let ep = if tls {
                    framed_endpoint(acc.accept(s).await.unwrap(), local, peer, Some(cfg), big)
                } else {
                    framed_endpoint(s, local, peer, Some(cfg), big)
                };
                serve_quic(ep).await;
            });
            let s = TcpStream::connect(to).await.unwrap();
            s.set_nodelay(true).unwrap();
            let local = s.local_addr().unwrap();
            let ep = if tls {
                framed_endpoint(
                    con.connect(server_name(), s).await.unwrap(),
                    local,
                    to,
                    None,
                    big,
                )
            } else {
                framed_endpoint(s, local, to, None, big)
            };
            let me = Identity::generate().unwrap();
            let cfg = tls::client_config(&me, server.fingerprint(), transport(Side::Dialer, big))
                .unwrap();
            let conn = ep
                .connect_with(cfg, to, tls::SERVER_NAME)
                .unwrap()
                .await
                .unwrap();
            endpoint::grant_after_auth(&conn);
            std::mem::forget(ep);
            Client::Quic(conn)
        }
        Kind::H2Tls => {
            let (acc, con) = tls_configs();
            let l = TcpListener::bind(lo).await.unwrap();
            let to = l.local_addr().unwrap();
            tokio::spawn(async move {
                let (s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                let s = acc.accept(s).await.unwrap();
                let mut conn = h2::server::Builder::new()
                    .initial_window_size(H2_STREAM_WINDOW)
                    .initial_connection_window_size(H2_CONN_WINDOW)
                    .max_frame_size(1 << 20)
                    .max_concurrent_streams(100_000)
                    .handshake::<_, Bytes>(s)
                    .await
                    .unwrap();
                while let Some(r) = conn.accept().await {
                    let (req, mut respond) = r.unwrap();
                    let send = respond
                        .send_response(http::Response::new(()), false)
                        .unwrap();
                    tokio::spawn(serve(Box::new(H2Duplex {
                        send,
                        recv: RecvState::Body(req.into_body()),
                        buf: Bytes::new(),
                        shut: false,
                    })));
                }
            });
            let s = TcpStream::connect(to).await.unwrap();
            s.set_nodelay(true).unwrap();
            let s = con.connect(server_name(), s).await.unwrap();
            let (sr, conn) = h2::client::Builder::new()
                .initial_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONN_WINDOW)
                .max_frame_size(1 << 20)
                .handshake::<_, Bytes>(s)
                .await
                .unwrap();
            tokio::spawn(conn);
            Client::H2(sr)
        }
    }
}

#[tokio::main]
async fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(3.0);
    let d = Duration::from_secs_f64(secs);
    let kinds = [
        Kind::Quic,
        Kind::QuicTcp,
        Kind::QuicTls,
        Kind::QuicTcpMtu,
        Kind::H2Tls,
    ];
    println!(
        "| transport | up 1 | up 8 | down 1 | down 8 | rr p50/p99 µs | new-stream rr p50/p99 µs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for kind in kinds {
        let c = Arc::new(setup(kind).await);
        // Warm-up: let windows and the congestion controller open.
        bulk(&c, 1, true, Duration::from_millis(300)).await;
        let u1 = bulk(&c, 1, true, d).await;
        let u8 = bulk(&c, 8, true, d).await;
        let d1 = bulk(&c, 1, false, d).await;
        let d8 = bulk(&c, 8, false, d).await;
        let (p50, p99) = ping(&c, 3000).await;
        let (n50, n99) = ping_new_stream(&c, 1000).await;
        println!(
            "| {} | {u1:.0} | {u8:.0} | {d1:.0} | {d8:.0} | {p50:.0}/{p99:.0} | {n50:.0}/{n99:.0} |",
            kind.name()
        );
    }
}
