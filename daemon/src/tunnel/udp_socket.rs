//! quinn's UDP socket, registered with the runtime for reading only.
//!
//! Linux marks a UDP socket writable again each time it frees one of the
//! socket's sent datagrams (`sock_wfree` → `sk_write_space`, unlike TCP,
//! which does so only after a send found its buffer full): on loopback as the
//! datagram is handed over, on a NIC once it has left. quinn's own tokio
//! socket is registered edge-triggered for both directions, so every datagram
//! sent is reported back to the runtime as writability nobody waits for. In
//! the loopback rig's 64-byte ping-pong that was one `epoll_wait` and driver
//! turn more per packet (6 per round trip against rathole's 4); where the NIC
//! frees the datagram later, it wakes a daemon asleep until the answer.
//!
//! A UDP send blocks only when the socket's send buffer is full, which with
//! the buffers [`super::endpoint::bind`] asks for is rare (never, over tens of
//! GB through the rig). So writability is asked of the kernel only then: a
//! send that would block marks the socket blocked, and a sender waiting for
//! room registers a second descriptor of the same socket for writing,
//! dropped again as soon as it reports room.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A UDP socket for quinn that the runtime watches for reading only.
#[derive(Debug)]
pub struct UdpSocket {
    io: AsyncFd<std::net::UdpSocket>,
    state: UdpSocketState,
    /// A send found the buffer full, and no waiting sender has seen room
    /// since.
    blocked: AtomicBool,
}

impl UdpSocket {
    /// Wraps `sock` (made non-blocking here); must run inside the runtime.
    pub fn new(sock: std::net::UdpSocket) -> io::Result<Arc<Self>> {
        let state = UdpSocketState::new((&sock).into())?;
        // SAFETY: the socket owns its descriptor, which stays open and the
        // same until the `AsyncFd` (its only owner) drops it.
        let io = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE)? };
        Ok(Arc::new(Self {
            io,
            state,
            blocked: AtomicBool::new(false),
        }))
    }
}

impl AsyncUdpSocket for UdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritePoller {
            socket: self,
            waiting: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        // quinn-udp returns only `WouldBlock`; it counts and logs the rest
        // itself, and quinn's loss recovery resends what they cost.
        let r = self.state.send(self.io.get_ref().into(), transmit);
        if r.is_err() {
            self.blocked.store(true, Ordering::Release);
        }
        r
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // What one read can return: quinn-udp reads at most BATCH_SIZE.
        let slots = bufs.len().min(meta.len()).min(quinn::udp::BATCH_SIZE);
        loop {
            let mut ready = ready!(self.io.poll_read_ready(cx))?;
            // `WouldBlock` clears the readiness and polls again.
            match ready.try_io(|io| self.state.recv(io.get_ref().into(), bufs, meta)) {
                Ok(Ok(n)) => {
                    // Fewer datagrams than slots (Linux reads with recvmmsg):
                    // the queue is empty, so the next read would only find
                    // `WouldBlock`, one more syscall per packet when they
                    // come one at a time. A datagram arriving meanwhile
                    // raises a new edge, which tokio sees as newer than this
                    // readiness.
                    if cfg!(target_os = "linux") && n < slots {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// One sender's wait for room in the socket's send buffer. quinn asks it
/// before every send, so it answers at once unless a send found the buffer
/// full.
#[derive(Debug)]
struct WritePoller {
    socket: Arc<UdpSocket>,
    /// The socket's second descriptor, registered for writing while this
    /// sender waits for room.
    waiting: Option<AsyncFd<OwnedFd>>,
}

impl UdpPoller for WritePoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.socket.blocked.load(Ordering::Acquire) {
            this.waiting = None;
            return Poll::Ready(Ok(()));
        }
        let waiting = match &mut this.waiting {
            Some(w) => w,
            None => {
                let fd = this.socket.io.get_ref().as_fd().try_clone_to_owned()?;
                // epoll reports the state at registration, so room made
                // since the failed send is not missed.
                // SAFETY: as in `UdpSocket::new`, for the duplicate.
                this.waiting
                    .insert(unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE)? })
            }
        };
        // The registration goes with its readiness: no need to clear it.
        drop(ready!(waiting.poll_write_ready(cx))?);
        this.waiting = None;
        this.socket.blocked.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::os::fd::AsRawFd;

    fn pair() -> (Arc<UdpSocket>, std::net::UdpSocket) {
        let peer = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let sock = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        (UdpSocket::new(sock).unwrap(), peer)
    }

    fn transmit(to: SocketAddr, contents: &[u8]) -> Transmit<'_> {
        Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        }
    }

    /// The event masks every epoll instance of this process holds for the
    /// socket behind `fd` (matched by inode: fd numbers are reused).
    fn epoll_masks(fd: &impl AsRawFd) -> Vec<u32> {
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let mut masks = Vec::new();
        // mio holds two descriptors of its epoll instance, which show the
        // same lines: each registration's line (with its token) counts once.
        let mut seen = std::collections::HashSet::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let is_epoll = std::fs::read_link(entry.path())
                .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventpoll]");
            if !is_epoll {
                continue;
            }
            let info = format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy());
            let Ok(info) = std::fs::read_to_string(info) else {
                continue;
            };
            // "tfd:       13 events:       19 data: ... ino:1f2c sdev:8"
            for line in info.lines().filter(|l| l.starts_with("tfd:")) {
                let field = |name: &str| {
                    let rest = &line[line.find(name)? + name.len()..];
                    rest.split_whitespace().next()
                };
                let this_ino = field("ino:").and_then(|v| u64::from_str_radix(v, 16).ok());
                if this_ino == Some(ino)
                    && seen.insert(line.to_owned())
                    && let Some(events) = field("events:")
                {
                    masks.push(u32::from_str_radix(events, 16).unwrap());
                }
            }
        }
        masks
    }

    const EPOLLIN: u32 = libc::EPOLLIN as u32;
    const EPOLLOUT: u32 = libc::EPOLLOUT as u32;

    #[tokio::test]
    async fn sends_and_receives_datagrams_both_ways() {
        let (sock, peer) = pair();
        let local = sock.local_addr().unwrap();
        let to = peer.local_addr().unwrap();
        sock.try_send(&transmit(to, b"out")).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"out"[..], local));

        peer.send_to(b"in", local).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut meta = [RecvMeta::default()];
        let n = std::future::poll_fn(|cx| {
            sock.poll_recv(cx, &mut [IoSliceMut::new(&mut buf)], &mut meta)
        })
        .await
        .unwrap();
        assert_eq!((n, &buf[..meta[0].len]), (1, &b"in"[..]));
        assert!(!sock.blocked.load(Ordering::SeqCst));
    }

    /// A short read ends the readiness without a `WouldBlock` read; the
    /// next datagram must still wake the receiver, however it arrives.
    #[tokio::test]
    async fn after_a_short_read_the_next_datagram_still_wakes_the_receiver() {
        let (sock, peer) = pair();
        let local = sock.local_addr().unwrap();
        let wakes = Arc::new(WakeCount::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut storage = [[0u8; 64]; 8];
        let mut meta = [RecvMeta::default(); 8];
        for round in 0..50u8 {
            peer.send_to(&[round], local).unwrap();
            if round % 2 == 1 {
                // Also a second one, so some reads take two.
                peer.send_to(&[round], local).unwrap();
            }
            let mut got = 0;
            let want = if round % 2 == 1 { 2 } else { 1 };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while got < want {
                let mut bufs: Vec<IoSliceMut<'_>> =
                    storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                match sock.poll_recv(&mut cx, &mut bufs, &mut meta) {
                    Poll::Ready(r) => {
                        let n = r.unwrap();
                        assert!(meta[..n].iter().all(|m| m.len == 1));
                        got += n;
                    }
                    Poll::Pending => {
                        // Only a wake-up may bring the next poll.
                        let before = wakes.0.load(Ordering::SeqCst);
                        while wakes.0.load(Ordering::SeqCst) == before {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "round {round}: no wake-up"
                            );
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
            assert_eq!(got, want, "round {round}");
        }
    }

    #[derive(Default)]
    struct WakeCount(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The point of the module: the kernel reports writability to the
    /// runtime only while a sender waits for it. quinn's socket (a tokio
    /// `UdpSocket`) is watched for both, which the same check sees.
    #[tokio::test]
    async fn the_runtime_watches_the_socket_for_reading_only() {
        let (sock, _peer) = pair();
        assert_eq!(epoll_masks(sock.io.get_ref()).len(), 1);
        for mask in epoll_masks(sock.io.get_ref()) {
            assert_eq!(mask & (EPOLLIN | EPOLLOUT), EPOLLIN, "mask {mask:#x}");
        }

        let quinns = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let masks = epoll_masks(&quinns);
        assert_eq!(masks.len(), 1);
        assert_eq!(masks[0] & (EPOLLIN | EPOLLOUT), EPOLLIN | EPOLLOUT);
    }

    /// A sender that found the buffer full waits on a registration for
    /// writing, which goes away once the kernel reported room.
    #[tokio::test]
    async fn a_blocked_sender_waits_for_room_then_stops_watching_for_it() {
        let (sock, peer) = pair();
        let mut poller = sock.clone().create_io_poller();
        let mut polls = 0;
        std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
            .await
            .unwrap();
        assert!(
            epoll_masks(sock.io.get_ref())
                .iter()
                .all(|m| m & EPOLLOUT == 0)
        );

        // What a send into a full buffer leaves behind (a loopback send never
        // blocks: the kernel frees the datagram as it hands it over).
        sock.blocked.store(true, Ordering::SeqCst);
        let watched = std::future::poll_fn(|cx| {
            polls += 1;
            let r = poller.as_mut().poll_writable(cx);
            if r.is_pending() {
                let masks = epoll_masks(sock.io.get_ref());
                assert_eq!(masks.len(), 2, "{masks:x?}");
                assert_eq!(masks.iter().filter(|&&m| m & EPOLLOUT != 0).count(), 1);
            }
            r
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), watched)
            .await
            .expect("room was never reported")
            .unwrap();
        assert_eq!(
            polls, 2,
            "the first poll registers, the kernel's report ends it"
        );
        assert!(!sock.blocked.load(Ordering::SeqCst));
        let masks = epoll_masks(sock.io.get_ref());
        assert_eq!(masks.len(), 1);
        assert_eq!(masks[0] & EPOLLOUT, 0);

        // And sends go on.
        sock.try_send(&transmit(peer.local_addr().unwrap(), b"x"))
            .unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(peer.recv(&mut buf).unwrap(), 1);
    }
}
