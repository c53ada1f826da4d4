//! A UDP echo app and its clients, for UDP apps (`appSocket: udp:…`) through the tunnel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::site::{Site, diag};
use crate::wait::WAIT;

/// What the echo app puts before every payload it returns, so a reply is known to come from
/// the app and not from a loop in the tunnel.
pub const REPLY: &[u8] = b"re:";

/// A UDP app on 127.0.0.1 answering every datagram with [`REPLY`] + the datagram; counts
/// what it received.
pub struct UdpEcho {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpEcho {
    /// On 127.0.0.1, a free port.
    pub async fn start() -> Self {
        Self::start_on(Ipv4Addr::LOCALHOST.into()).await
    }

    /// On `ip` (e.g. `::1`), a free port.
    pub async fn start_on(ip: IpAddr) -> Self {
        let socket = big_socket_on(ip);
        let addr = socket
            .local_addr()
            .unwrap_or_else(|e| panic!("udp echo has no address: {e}"));
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let mut out = REPLY.to_vec();
                out.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&out, from).await;
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its `appSocket` spelling: `udp:IP:PORT`.
    pub fn socket(&self) -> String {
        format!("udp:{}", self.addr)
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP socket on 127.0.0.1:0 with 4 MiB buffers, so a burst on loopback is not dropped by
/// the test's own sockets.
pub fn big_socket() -> UdpSocket {
    big_socket_on(Ipv4Addr::LOCALHOST.into())
}

/// [`big_socket`] on `ip`, a free port.
pub fn big_socket_on(ip: IpAddr) -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let at = SocketAddr::new(ip, 0);
    let s = Socket::new(Domain::for_address(at), Type::DGRAM, None)
        .unwrap_or_else(|e| panic!("udp socket: {e}"));
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)
        .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
    s.bind(&at.into())
        .unwrap_or_else(|e| panic!("bind {at}: {e}"));
    UdpSocket::from_std(s.into()).unwrap_or_else(|e| panic!("tokio UdpSocket: {e}"))
}

/// A client of the remote app listening on `local`: a [`big_socket`] on the loopback address
/// of `local`'s family, connected to it.
pub async fn udp_client(local: SocketAddr) -> UdpSocket {
    let ip: IpAddr = if local.is_ipv6() {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let s = big_socket_on(ip);
    s.connect(local)
        .await
        .unwrap_or_else(|e| panic!("connect udp {local}: {e}"));
    s
}

/// Sends `payload` and waits up to `wait` for the echo app's answer to it.
pub async fn ask(s: &UdpSocket, payload: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.send(payload).await.ok()?;
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let n = tokio::time::timeout(left, s.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let mut want = REPLY.to_vec();
        want.extend_from_slice(payload);
        if buf[..n] == want[..] {
            return Some(buf[..n].to_vec());
        }
        // An answer to an earlier probe: keep waiting for this one.
    }
}

/// Waits until a datagram sent to `local` is answered by the app (the listener is up and the
/// tunnel carries flows).
pub async fn wait_udp_forward(s: &UdpSocket, sites: &[&Site]) {
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < WAIT {
        i += 1;
        let probe = format!("probe {i}");
        if ask(s, probe.as_bytes(), Duration::from_millis(300))
            .await
            .is_some()
        {
            return;
        }
    }
    panic!(
        "no udp answer through the tunnel within {WAIT:?}\n{}",
        diag(sites)
    );
}
