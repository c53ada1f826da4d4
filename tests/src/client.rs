//! Client-side checks through a remote app's local socket: echo round trips, long-lived echo
//! connections, "listener open?" probes and "closed without data" checks. Results are
//! `Result<_, String>` whose error says what was expected and what was seen; callers add the
//! daemon logs (see [`crate::Site::wait_forward`]).

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::data::DataGen;

use crate::sock::{Sock, Stream};

/// Connects, sends `data`, half-closes, reads to EOF and compares. Reading and writing run
/// concurrently so large payloads cannot deadlock on full buffers.
pub async fn echo_once(sock: &Sock, data: &[u8], timeout: Duration) -> Result<(), String> {
    echo_once_with_banner(sock, b"", data, timeout).await
}

/// Like [`echo_once`] against a server that first sends `banner` (see
/// [`crate::EchoServer::tcp_with_banner`]): expects `banner` followed by `data`.
pub async fn echo_once_with_banner(
    sock: &Sock,
    banner: &[u8],
    data: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let work = async {
        let stream = sock
            .connect()
            .await
            .map_err(|e| format!("connect {sock}: {e}"))?;
        let (mut r, mut w) = tokio::io::split(stream);
        let write = async {
            w.write_all(data).await?;
            w.shutdown().await
        };
        let mut got = Vec::with_capacity(data.len());
        let read = r.read_to_end(&mut got);
        let (wr, rd) = tokio::join!(write, read);
        wr.map_err(|e| format!("write to {sock}: {e}"))?;
        rd.map_err(|e| format!("read from {sock} after {} bytes: {e}", got.len()))?;
        if !got.starts_with(banner) {
            let n = got.len().min(banner.len());
            return Err(format!(
                "{sock}: expected banner {:?}, got {:?}",
                String::from_utf8_lossy(banner),
                String::from_utf8_lossy(&got[..n])
            ));
        }
        compare(sock, data, &got[banner.len()..])
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "echo of {} bytes through {sock} did not finish within {timeout:?}",
            data.len()
        )),
    }
}

fn compare(sock: &Sock, sent: &[u8], got: &[u8]) -> Result<(), String> {
    if sent == got {
        return Ok(());
    }
    let first_diff = sent.iter().zip(got).position(|(a, b)| a != b);
    Err(format!(
        "echo through {sock} differs: sent {} bytes, got {} bytes, first difference at {:?}",
        sent.len(),
        got.len(),
        first_diff
    ))
}

/// A long-lived connection that echoes on demand (no half-close between pings).
#[derive(Debug)]
pub struct EchoConn {
    sock: Sock,
    stream: Stream,
    pings: u64,
}

impl EchoConn {
    /// Connects within `timeout`.
    pub async fn connect(sock: &Sock, timeout: Duration) -> Result<Self, String> {
        match tokio::time::timeout(timeout, sock.connect()).await {
            Ok(Ok(stream)) => Ok(Self {
                sock: sock.clone(),
                stream,
                pings: 0,
            }),
            Ok(Err(e)) => Err(format!("connect {sock}: {e}")),
            Err(_) => Err(format!("connect {sock}: no answer within {timeout:?}")),
        }
    }

    /// Sends `data` and reads exactly as many bytes back, comparing them.
    pub async fn ping(&mut self, data: &[u8], timeout: Duration) -> Result<(), String> {
        self.pings += 1;
        let n = self.pings;
        let sock = self.sock.clone();
        let stream = &mut self.stream;
        let work = async {
            stream
                .write_all(data)
                .await
                .map_err(|e| format!("ping #{n} write to {sock}: {e}"))?;
            let mut got = vec![0; data.len()];
            stream
                .read_exact(&mut got)
                .await
                .map_err(|e| format!("ping #{n} read from {sock}: {e}"))?;
            compare(&sock, data, &got)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "ping #{n} ({} bytes) through {sock}: no echo within {timeout:?}",
                data.len()
            )),
        }
    }

    /// Reads exactly `banner` (what a [`crate::EchoServer::tcp_with_banner`] sends first).
    pub async fn read_banner(&mut self, banner: &[u8], timeout: Duration) -> Result<(), String> {
        let sock = self.sock.clone();
        let mut got = vec![0; banner.len()];
        match tokio::time::timeout(timeout, self.stream.read_exact(&mut got)).await {
            Ok(Ok(_)) => compare(&sock, banner, &got),
            Ok(Err(e)) => Err(format!("banner from {sock}: {e}")),
            Err(_) => Err(format!("banner from {sock}: nothing within {timeout:?}")),
        }
    }

    /// Half-closes, expects EOF with no further data.
    pub async fn finish(mut self, timeout: Duration) -> Result<(), String> {
        let sock = self.sock.clone();
        let work = async {
            self.stream
                .shutdown()
                .await
                .map_err(|e| format!("shutdown {sock}: {e}"))?;
            let mut rest = Vec::new();
            self.stream
                .read_to_end(&mut rest)
                .await
                .map_err(|e| format!("read {sock}: {e}"))?;
            if rest.is_empty() {
                Ok(())
            } else {
                Err(format!("{} unexpected bytes after half-close", rest.len()))
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no EOF from {sock} within {timeout:?} after half-close"
                ))
            })
    }
}

/// A long-lived connection kept busy: pings `conn` with a deterministic 16 KiB block every
/// 50 ms until `stop` turns true; yields the connection (to [`EchoConn::finish`] it) and the
/// pings done, or the first error and when it happened.
pub fn keep_pinging(
    mut conn: EchoConn,
    stop: watch::Receiver<bool>,
) -> JoinHandle<Result<(EchoConn, u64), String>> {
    tokio::spawn(async move {
        let mut data = DataGen::new(0x5eed);
        let mut buf = vec![0u8; 16 * 1024];
        let start = Instant::now();
        let mut pings = 0u64;
        while !*stop.borrow() {
            data.fill(&mut buf);
            conn.ping(&buf, Duration::from_secs(10))
                .await
                .map_err(|e| format!("after {:?} and {pings} pings: {e}", start.elapsed()))?;
            pings += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((conn, pings))
    })
}

/// Retries a small echo round trip through `local` until one succeeds; returns how long it
/// took, or the last error seen.
pub async fn try_wait_forward(local: &Sock, timeout: Duration) -> Result<Duration, String> {
    try_wait_forward_with_banner(local, b"", timeout).await
}

/// [`try_wait_forward`] against a banner server: each round trip must start with `banner`.
pub async fn try_wait_forward_with_banner(
    local: &Sock,
    banner: &[u8],
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut attempt = 0u64;
    crate::wait::retry(timeout, || {
        attempt += 1;
        let probe = format!("wovenet-e2e probe {attempt} to {local}\n");
        let per_try = timeout
            .saturating_sub(start.elapsed())
            .min(Duration::from_secs(3))
            .max(Duration::from_millis(100));
        async move {
            echo_once_with_banner(local, banner, probe.as_bytes(), per_try).await?;
            Ok::<_, String>(start.elapsed())
        }
    })
    .await
    .map_err(|e| {
        format!(
            "no echo round trip through {local} within {timeout:?} ({} attempts); last error: {}",
            e.attempts, e.last
        )
    })
}

/// Retries connecting until it succeeds (a remote app's listener opens only once the tunnel
/// is up), or returns the last error after `timeout`.
pub async fn connect_eventually(sock: &Sock, timeout: Duration) -> Result<Stream, String> {
    let start = Instant::now();
    crate::wait::retry(timeout, || {
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(100));
        async move {
            match tokio::time::timeout(left, sock.connect()).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connect timed out".to_owned()),
            }
        }
    })
    .await
    .map_err(|e| {
        format!(
            "could not connect to {sock} within {timeout:?}; last error: {}",
            e.last
        )
    })
}

/// Whether something accepts connections at `sock` right now.
pub async fn is_listening(sock: &Sock) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), sock.connect()).await,
        Ok(Ok(_))
    )
}

/// How a connection ended when no data was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The connection was refused outright (no listener).
    Refused,
    /// Clean EOF without any data.
    Eof,
    /// Reset or another I/O error, without any data.
    Error(io::ErrorKind),
}

/// Connects, sends a probe and expects the connection to end without a single byte coming
/// back within `timeout`. Returns how it ended, or an error if data came or it stayed open.
pub async fn expect_closed_without_data(sock: &Sock, timeout: Duration) -> Result<Closed, String> {
    let mut stream = match tokio::time::timeout(timeout, sock.connect()).await {
        Err(_) => return Err(format!("connect {sock}: no answer within {timeout:?}")),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(Closed::Refused),
        Ok(Err(e)) => return Ok(Closed::Error(e.kind())),
        Ok(Ok(s)) => s,
    };
    // The far side may already have closed; a failed write is a form of "closed".
    if let Err(e) = stream.write_all(b"wovenet-e2e: should be refused\n").await {
        return Ok(Closed::Error(e.kind()));
    }
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
        Err(_) => Err(format!(
            "{sock}: connection still open and silent after {timeout:?}, expected it to be closed"
        )),
        Ok(Ok(0)) => Ok(Closed::Eof),
        Ok(Ok(n)) => Err(format!(
            "{sock}: expected the connection to be closed without data, but got {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        )),
        Ok(Err(e)) => Ok(Closed::Error(e.kind())),
    }
}

/// Checks that `sock` refuses connections for the whole of `period` (polling). Returns the
/// first moment it was seen open.
pub async fn stays_closed(sock: &Sock, period: Duration) -> Result<(), String> {
    let start = Instant::now();
    match crate::wait::poll(period, || async {
        is_listening(sock).await.then(|| start.elapsed())
    })
    .await
    {
        Some(at) => Err(format!(
            "{sock} accepted a connection {at:?} into a period where it must stay closed"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{EchoServer, ResettingServer};

    #[tokio::test]
    async fn echo_once_and_wait_forward_succeed_against_echo_server() {
        let srv = EchoServer::tcp().await;
        echo_once(
            srv.sock(),
            &crate::data::bytes(3, 3 << 20),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        try_wait_forward(srv.sock(), Duration::from_secs(2))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn banner_must_precede_the_echo() {
        let srv = EchoServer::tcp_with_banner("site-b\n").await;
        echo_once_with_banner(srv.sock(), b"site-b\n", b"data", Duration::from_secs(2))
            .await
            .unwrap();
        let err = echo_once_with_banner(srv.sock(), b"site-c\n", b"data", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("expected banner"), "{err}");
        try_wait_forward_with_banner(srv.sock(), b"site-b\n", Duration::from_secs(2))
            .await
            .unwrap();
        connect_eventually(srv.sock(), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            connect_eventually(&Sock::free_tcp(), Duration::from_millis(200))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn wait_forward_reports_last_error_on_timeout() {
        let s = Sock::free_tcp();
        let err = try_wait_forward(&s, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            err.contains("last error") && err.contains("refused"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn echo_conn_pings_repeatedly_then_finishes() {
        let srv = EchoServer::tcp().await;
        let mut c = EchoConn::connect(srv.sock(), Duration::from_secs(2))
            .await
            .unwrap();
        for i in 0..5u8 {
            c.ping(&[i; 100], Duration::from_secs(2)).await.unwrap();
        }
        c.finish(Duration::from_secs(2)).await.unwrap();
    }

    #[tokio::test]
    async fn closed_without_data_distinguishes_refused_reset_and_open() {
        assert_eq!(
            expect_closed_without_data(&Sock::free_tcp(), Duration::from_secs(2)).await,
            Ok(Closed::Refused)
        );
        let rst = ResettingServer::tcp().await;
        assert_eq!(
            expect_closed_without_data(rst.sock(), Duration::from_secs(2)).await,
            Ok(Closed::Error(io::ErrorKind::ConnectionReset))
        );
        let echo = EchoServer::tcp().await;
        let err = expect_closed_without_data(echo.sock(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.contains("got"), "{err}");
    }

    #[tokio::test]
    async fn stays_closed_notices_a_listener() {
        stays_closed(&Sock::free_tcp(), Duration::from_millis(300))
            .await
            .unwrap();
        let echo = EchoServer::tcp().await;
        assert!(
            stays_closed(echo.sock(), Duration::from_millis(300))
                .await
                .is_err()
        );
    }
}
