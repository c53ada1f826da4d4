//! The socket under a TCP dataChannel: one TCP connection to one peer, seen by
//! quinn as a UDP socket ([`Link`] implements quinn's `AsyncUdpSocket`), so the
//! QUIC connection on it is the same as over UDP — same TLS and pinning, key
//! proof, streams, registry, pick and stats. QUIC packets travel framed
//! ([`super::frame`]).
//!
//! Each TCP connection gets its own quinn endpoint and [`Link`] (one peer per
//! socket keeps quinn's per-connection send poller exact: it waits for this
//! connection's queue, never another's). Two tasks move the bytes: the writer
//! drains the send queue into the stream in batches, the reader decodes frames
//! into a bounded queue quinn reads from. TCP's own flow control is the
//! backpressure: a full send queue makes quinn wait ([`Link::try_send`] says
//! `WouldBlock`), a full receive queue stops reading the stream. When the
//! stream fails or ends, or when the link's token is cancelled, both tasks
//! stop and the token is cancelled, which the channel's owner watches to close
//! the QUIC connection at once rather than after its idle timeout.
//!
//! Why QUIC framed over TCP rather than TLS/TCP with a multiplexer (h2,
//! yamux): measured on loopback in one run (`cargo run --release -p
//! wovenet-bench --example tcp_transport_proto`, 2 shared cores), QUIC over
//! plain TCP with 16 KiB packets ([`super::endpoint::TCP_MTU`]) moved 4.0–7.0
//! Gbit/s (1 and 8 streams, each way) against 4.6–6.3 for h2 over rustls and
//! 2.1–3.4 for QUIC over UDP; request/response p50 47 µs (h2: 37, UDP: 41),
//! a new stream per request p50 53 µs (h2: 88). With 1 200-byte packets it
//! managed only ~2 Gbit/s, and an outer TLS layer (QUIC is already TLS 1.3
//! inside) cost another 15–25 %, so neither is used. Being the same QUIC
//! connection, a TCP channel needs no second implementation of the key proof
//! (bound to QUIC's TLS exporter), pinning, streams, stats or pick logic.
//! The costs: two congestion controllers stacked, and one lost TCP segment
//! stalls every stream of the channel (head-of-line blocking) — acceptable
//! for a fallback whose alternative is no tunnel.
//!
//! This module owns no policy: who may connect, when to dial, which channel
//! carries what is decided elsewhere.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frame;
use crate::counters::Counters;

/// Bytes queued toward the stream before quinn is told to wait: enough to
/// keep the writer busy for a batch, small next to the QUIC windows.
pub const SEND_QUEUE: usize = 1 << 20;
/// Packets read from the stream that quinn has not taken yet; the reader
/// stops reading (and TCP pushes back on the peer) when it is full. With
/// packets of at most `max_packet` bytes this bounds what one connection —
/// authenticated or not — makes us hold (4 MiB at `endpoint::TCP_MTU`).
pub const RECV_QUEUE: usize = 256;
/// Bytes the reader asks the stream for at once.
const READ_BUFFER: usize = 256 << 10;

/// The send queue shared by the link (producer) and the writer task.
#[derive(Default)]
struct SendQueue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The writer, waiting for frames.
    writer: Option<Waker>,
    /// quinn's connection driver, waiting for room.
    poller: Option<Waker>,
    closed: bool,
}

/// One TCP connection as a quinn socket with a single peer.
pub struct Link {
    peer: SocketAddr,
    local: SocketAddr,
    send: Arc<Mutex<SendQueue>>,
    recv: Mutex<mpsc::Receiver<Bytes>>,
    closed: CancellationToken,
    counters: Arc<Counters>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

fn lock(q: &Mutex<SendQueue>) -> MutexGuard<'_, SendQueue> {
    // A panic while holding the lock leaves the queue consistent (every
    // update is a single push or drain), so a poisoned lock is still usable.
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Link {
    /// Starts moving QUIC packets over `stream` (connected to `peer` from
    /// `local`) on `tracker`; frames longer than `max_packet` (the most the
    /// endpoint accepts) are dropped and counted as they are read. The link
    /// stops when `closed` is cancelled, and cancels it when the stream fails
    /// or ends.
    pub fn spawn<S>(
        stream: S,
        (peer, local): (SocketAddr, SocketAddr),
        max_packet: usize,
        closed: CancellationToken,
        counters: Arc<Counters>,
        tracker: &TaskTracker,
    ) -> Arc<Self>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(RECV_QUEUE);
        let send = Arc::new(Mutex::new(SendQueue::default()));
        tracker.spawn(writer(send.clone(), w, closed.clone()));
        tracker.spawn(reader(r, tx, max_packet, closed.clone(), counters.clone()));
        Arc::new(Self {
            peer,
            local,
            send,
            recv: Mutex::new(rx),
            closed,
            counters,
        })
    }

    /// Cancelled once the stream is gone (or the link was told to stop).
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // quinn dropped its socket: nothing will use the stream again.
        self.closed.cancel();
    }
}

/// Waits for room in one link's send queue.
struct Poller(Arc<Mutex<SendQueue>>);

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Poller")
    }
}

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut q = lock(&self.0);
        if q.closed || q.bytes < SEND_QUEUE {
            // A closed link takes (and discards) packets: the connection is
            // about to be closed by its owner and must not wait for room.
            Poll::Ready(Ok(()))
        } else {
            q.poller = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl AsyncUdpSocket for Link {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller(self.send.clone()))
    }

    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        let mut q = lock(&self.send);
        if q.closed {
            return Ok(());
        }
        if q.bytes >= SEND_QUEUE {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // Only one peer: a packet for another address (quinn never makes
        // one on a connection's own socket) would be misdelivered; drop it.
        if t.destination != self.peer {
            return Ok(());
        }
        let mut buf = BytesMut::new();
        frame::encode(t.contents, t.segment_size, &mut buf);
        q.bytes += buf.len();
        q.frames.push_back(buf.freeze());
        if let Some(w) = q.writer.take() {
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
        let mut rx = self
            .recv
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut n = 0;
        // Each slot touched stays resident (`udp::RECV_SLOTS`).
        while n < bufs.len().min(meta.len()).min(super::udp::RECV_SLOTS) {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(p)) => {
                    // quinn's buffers hold the largest packet the endpoint
                    // accepts (`endpoint::TCP_MTU`); a peer sending larger
                    // ones breaks the protocol.
                    let Some(dst) = bufs[n].get_mut(..p.len()) else {
                        Counters::bump(&self.counters.tcp_frames_dropped);
                        continue;
                    };
                    dst.copy_from_slice(&p);
                    meta[n] = RecvMeta {
                        addr: self.peer,
                        len: p.len(),
                        stride: p.len(),
                        ..RecvMeta::default()
                    };
                    n += 1;
                }
                // Closed (the stream is gone): quinn hears nothing more; the
                // owner closes the connection on `closed`.
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
        // Batches of packets per transmit: fewer wake-ups of the writer.
        16
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Drains the send queue into the stream until the link closes.
async fn writer<W: AsyncWrite + Unpin>(
    send: Arc<Mutex<SendQueue>>,
    mut w: W,
    closed: CancellationToken,
) {
    // The batch being written. It trades places with the queue's deque,
    // which it leaves empty, so neither is reallocated for each batch.
    let mut frames = VecDeque::new();
    loop {
        tokio::select! {
            _ = closed.cancelled() => break,
            () = poll_fn(|cx| {
                let mut q = lock(&send);
                if q.frames.is_empty() {
                    q.writer = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                q.bytes = 0;
                if let Some(p) = q.poller.take() {
                    p.wake();
                }
                std::mem::swap(&mut q.frames, &mut frames);
                Poll::Ready(())
            }) => {}
        }
        let wrote = tokio::select! {
            _ = closed.cancelled() => break,
            r = write_frames(&mut w, &mut frames) => r,
        };
        if wrote.is_err() {
            break;
        }
    }
    {
        let mut q = lock(&send);
        q.closed = true;
        q.frames.clear();
        if let Some(p) = q.poller.take() {
            p.wake();
        }
    }
    closed.cancel();
    let _ = w.shutdown().await;
}

/// Frames handed to one vectored write.
const FRAMES_PER_WRITE: usize = 64;

/// Writes every frame of `frames` (left empty), many per call. Not copied
/// into one buffer first: such a buffer stays resident at its high-water
/// mark (the whole send queue) for the link's life, and the copy costs a
/// pass over every byte.
async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &mut VecDeque<Bytes>,
) -> io::Result<()> {
    while !frames.is_empty() {
        // On the stack: one write per batch of frames must not allocate.
        let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE];
        let mut k = 0;
        for (slot, f) in slices.iter_mut().zip(frames.iter()) {
            *slot = IoSlice::new(f);
            k += 1;
        }
        let mut n = w.write_vectored(&slices[..k]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = frames.front_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            frames.pop_front();
        }
    }
    w.flush().await
}

/// Decodes frames from the stream into the receive queue until the link
/// closes; a stream that ends, fails or breaks the framing closes it.
async fn reader<R: AsyncRead + Unpin>(
    r: R,
    tx: mpsc::Sender<Bytes>,
    max_packet: usize,
    closed: CancellationToken,
    counters: Arc<Counters>,
) {
    let mut frames = FramedRead::with_capacity(r, frame::codec(), READ_BUFFER);
    loop {
        let next = tokio::select! {
            _ = closed.cancelled() => break,
            f = frames.next() => f,
        };
        let Some(Ok(packet)) = next else { break };
        if packet.is_empty() || packet.len() > max_packet {
            Counters::bump(&counters.tcp_frames_dropped);
            continue;
        }
        let sent = tokio::select! {
            _ = closed.cancelled() => break,
            s = tx.send(packet.freeze()) => s,
        };
        if sent.is_err() {
            break;
        }
    }
    closed.cancel();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Takes at most 7 bytes per write, from the first slice only (as a
    /// writer without vectored support does).
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_are_written_whole_and_in_order_through_short_writes() {
        let frames: Vec<Bytes> = (0..150u32)
            .map(|i| Bytes::from(vec![i as u8; (i as usize * 13) % 40 + 1]))
            .collect();
        let want: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let mut queue: VecDeque<Bytes> = frames.iter().cloned().collect();
        let mut out = Trickle(Vec::new());
        write_frames(&mut out, &mut queue).await.unwrap();
        assert!(queue.is_empty());
        assert_eq!(out.0, want);
        // Vectored: more than FRAMES_PER_WRITE frames, several per call.
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let mut queue: VecDeque<Bytes> = frames.iter().cloned().collect();
        write_frames(&mut a, &mut queue).await.unwrap();
        drop(a);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got)
            .await
            .unwrap();
        assert_eq!(got, want);
    }

    /// Two links over an in-memory stream, as a pair of quinn sockets.
    fn pair(tracker: &TaskTracker) -> (Arc<Link>, Arc<Link>, CancellationToken) {
        let (a, b) = tokio::io::duplex(64 << 10);
        let a_addr: SocketAddr = "192.0.2.1:1000".parse().expect("addr");
        let b_addr: SocketAddr = "192.0.2.2:2000".parse().expect("addr");
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let la = Link::spawn(
            a,
            (b_addr, a_addr),
            2000,
            stop.child_token(),
            counters.clone(),
            tracker,
        );
        let lb = Link::spawn(
            b,
            (a_addr, b_addr),
            2000,
            stop.child_token(),
            counters,
            tracker,
        );
        (la, lb, stop)
    }

    fn transmit(to: SocketAddr, contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        }
    }

    async fn recv(link: &Link, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        while out.len() < n {
            let mut storage = vec![vec![0u8; 2000]; 4];
            let mut bufs: Vec<IoSliceMut<'_>> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let mut meta = vec![RecvMeta::default(); 4];
            let got = poll_fn(|cx| link.poll_recv(cx, &mut bufs, &mut meta))
                .await
                .expect("recv");
            for i in 0..got {
                out.push((meta[i].addr, bufs[i][..meta[i].len].to_vec()));
            }
        }
        out
    }

    #[tokio::test]
    async fn packets_cross_as_sent_and_from_the_peer() {
        let tracker = TaskTracker::new();
        let (a, b, _stop) = pair(&tracker);
        a.try_send(&transmit(b.local, b"one", None)).expect("send");
        a.try_send(&transmit(b.local, b"twothree", Some(3)))
            .expect("send");
        let got = recv(&b, 4).await;
        let want: Vec<(SocketAddr, Vec<u8>)> = [&b"one"[..], b"two", b"thr", b"ee"]
            .iter()
            .map(|p| (a.local, p.to_vec()))
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_full_queue_makes_quinn_wait_until_the_writer_drains_it() {
        // A stream nobody reads: the writer blocks, the queue fills.
        let (a, _b) = tokio::io::duplex(1024);
        let tracker = TaskTracker::new();
        let peer: SocketAddr = "192.0.2.2:2000".parse().expect("addr");
        let link = Link::spawn(
            a,
            (peer, "192.0.2.1:1".parse().expect("addr")),
            2000,
            CancellationToken::new(),
            Arc::new(Counters::default()),
            &tracker,
        );
        let packet = vec![0u8; 1200];
        let mut sent = 0;
        let blocked = loop {
            match link.try_send(&transmit(peer, &packet, None)) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            if sent > 10 * SEND_QUEUE / 1200 {
                panic!("the queue never filled");
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(blocked.kind(), io::ErrorKind::WouldBlock);
        let mut poller = link.clone().create_io_poller();
        assert!(poll_fn(|cx| Poll::Ready(poller.as_mut().poll_writable(cx).is_pending())).await);
    }

    #[tokio::test]
    async fn the_end_of_the_stream_closes_both_links() {
        let tracker = TaskTracker::new();
        let (a, b, _stop) = pair(&tracker);
        a.closed().cancel();
        tokio::time::timeout(Duration::from_secs(5), b.closed().cancelled())
            .await
            .expect("the peer's link closes when the stream ends");
        // A closed link swallows packets instead of making quinn wait.
        assert!(a.try_send(&transmit(b.local, b"late", None)).is_ok());
    }

    #[tokio::test]
    async fn a_packet_larger_than_the_endpoint_takes_is_dropped_and_counted() {
        let (mut raw, s) = tokio::io::duplex(1 << 16);
        let tracker = TaskTracker::new();
        let counters = Arc::new(Counters::default());
        let link = Link::spawn(
            s,
            (
                "192.0.2.2:2000".parse().expect("addr"),
                "192.0.2.1:1".parse().expect("addr"),
            ),
            2000,
            CancellationToken::new(),
            counters.clone(),
            &tracker,
        );
        // Over the link's 2 000-byte limit (and `recv`'s buffers).
        let mut wire = BytesMut::new();
        frame::encode(&[1u8; 3000], None, &mut wire);
        frame::encode(b"ok", None, &mut wire);
        raw.write_all(&wire).await.expect("write");
        let got = recv(&link, 1).await;
        assert_eq!(got[0].1, b"ok");
        assert_eq!(
            counters
                .tcp_frames_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[tokio::test]
    async fn empty_frames_are_dropped_and_counted() {
        let (mut raw, s) = tokio::io::duplex(1024);
        let tracker = TaskTracker::new();
        let counters = Arc::new(Counters::default());
        let link = Link::spawn(
            s,
            (
                "192.0.2.2:2000".parse().expect("addr"),
                "192.0.2.1:1".parse().expect("addr"),
            ),
            2000,
            CancellationToken::new(),
            counters.clone(),
            &tracker,
        );
        raw.write_all(&[0, 0, 0, 2, b'h', b'i'])
            .await
            .expect("write");
        let got = recv(&link, 1).await;
        assert_eq!(got[0].1, b"hi");
        assert_eq!(
            counters
                .tcp_frames_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
