//! The app server behind every scenario: echo, sink (counting what it receives) or source
//! (writing as fast as it can), picked by the client's first byte. One accept task owns
//! the connection tasks; dropping the server aborts them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{BULK_BUF, ECHO, SINK, SOURCE};

/// A running app server.
#[derive(Debug)]
pub struct BenchServer {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl BenchServer {
    /// Listens on `addr` (port 0 for any) in this process's namespace.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Self::from_listener(TcpListener::bind(addr).await?)
    }

    /// Listens on `addr` inside namespace `ns`.
    pub fn bind_in(ns: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let std_listener = crate::wanem::netns::run_in(ns, move || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(l)
        })
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Self::from_listener(TcpListener::from_std(std_listener)?)
    }

    fn from_listener(listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&received)));
        Ok(Self {
            addr,
            received,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counter of bytes received by sink connections (all of them, ever).
    pub fn received(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.received)
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, received: Arc<AtomicU64>) {
    // Owned here so that aborting this task drops, and so aborts, every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => {
                    conns.spawn(serve(s, Arc::clone(&received)));
                }
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(mut s: TcpStream, received: Arc<AtomicU64>) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await?;
    match first[0] {
        ECHO => echo(s, first[0]).await,
        SINK => {
            let mut buf = vec![0; BULK_BUF];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        SOURCE => {
            let buf = vec![0x33; BULK_BUF];
            loop {
                s.write_all(&buf).await?;
            }
        }
        _ => Ok(()),
    }
}

/// Echoes everything, starting with the mode byte, writing each read back in one write so
/// a request comes back as one segment.
async fn echo(mut s: TcpStream, first: u8) -> std::io::Result<()> {
    let mut buf = vec![0; 4096];
    buf[0] = first;
    let mut start = 1;
    loop {
        let n = s.read(&mut buf[start..]).await?;
        if n == 0 {
            if start > 0 {
                s.write_all(&buf[..start]).await?;
            }
            return Ok(());
        }
        s.write_all(&buf[..start + n]).await?;
        start = 0;
    }
}
