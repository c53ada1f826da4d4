//! Bidirectional copy between a local socket and a QUIC stream, after the
//! preamble exchange.
//!
//! Close and failure are mapped one to one so neither end mistakes a broken
//! connection for a clean one:
//!
//! | event                                   | action                                   |
//! |-----------------------------------------|------------------------------------------|
//! | local EOF (FIN)                         | `send.finish()`, then wait until the peer acknowledged every byte and the FIN |
//! | QUIC stream finished, local still sending | local `shutdown(Write)` (half-close) at once |
//! | QUIC stream finished after local EOF    | local `shutdown(Write)` once our send side is acknowledged |
//! | both directions done and acknowledged   | close local cleanly ([`PipeOutcome::Finished`]) |
//! | local read/write error (e.g. RST)       | `send.reset` + `recv.stop` ([`code::LOCAL_FAILED`]) and abort local |
//! | QUIC reset/stop or connection lost (also while waiting for the acknowledgement) | abort local (TCP RST) + reset/stop the stream ([`code::PEER_FAILED`]) |
//! | shutdown                                | abort local + reset/stop ([`code::SHUTDOWN`]) |
//!
//! A local peer must never mistake a truncated transfer for a complete one.
//! Handing the FIN to QUIC proves nothing: if the dataChannel dies before the
//! far site acknowledged the tail, the tail is lost. So the pipe completes
//! the local close handshake (our FIN after theirs) only once quinn reports
//! the send side fully acknowledged ([`SendStream::stopped`] yields
//! `Ok(None)`); until then a lost channel still turns into a TCP reset. An
//! acknowledged byte is in the far site's receive buffer, which its pipe can
//! still drain to its app after the connection is gone. When the peer's FIN
//! comes first (the far app half-closed while ours still sends), it is passed
//! on at once: the local peer may need it to finish sending.
//!
//! An app with a `bandwidthLimit` passes its [`AppThrottle`]: data moves in
//! pieces of at most one turn ([`AppThrottle::piece`]: 20 ms of the rate,
//! within 256 B and the burst), each waiting for its turn before it is
//! written on, in either direction. The bytes held stay bounded (one read
//! per direction), and the far end or the local peer is slowed by the usual
//! flow control, never by a drop. Shutdown or a failure of the other
//! direction ends a wait at once (the future is dropped and its turn given
//! back). Like a write blocked on flow control, a wait does not watch the
//! stream or the local socket, so a reset from either is seen after the
//! current piece's turn: keeping pieces short keeps that prompt. (Racing the
//! wait with quinn's `received_reset`/`stopped` was tried: both leave
//! per-stream state in the connection when the stream ends another way.)
//!
//! Both directions run in the caller's task (no task hop per chunk). This
//! module must not decide admission or log: it reports a [`PipeOutcome`].

use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quinn::{ReadError, RecvStream, SendStream, StoppedError, VarInt, WriteError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::code;
use super::throttle::{AppThrottle, Way};

/// Read buffer size towards the far site; large enough that the QUIC send
/// path sees few, big chunks.
const BUF_SIZE: usize = 64 * 1024;

/// Received chunks handed to one vectored write towards the local socket
/// (Linux takes up to 1 024 slices per call).
const CHUNKS_PER_WRITE: usize = 64;

/// A local connection that can be piped: split into borrowed halves, and
/// aborted so the local peer sees a failure rather than a clean close.
pub trait LocalStream: Send + 'static {
    /// Reading half borrowed from the stream.
    type Read<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    /// Writing half borrowed from the stream; `shutdown` half-closes.
    type Write<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;

    /// Borrows both halves for concurrent use.
    fn split(&mut self) -> (Self::Read<'_>, Self::Write<'_>);

    /// Closes the connection abortively: TCP sends RST (SO_LINGER 0); a unix
    /// socket has no reset, so it is simply closed.
    fn abort(self);
}

impl LocalStream for TcpStream {
    type Read<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Write<'a> = tokio::net::tcp::WriteHalf<'a>;

    fn split(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        Self::split(self)
    }

    fn abort(self) {
        // Zero linger never blocks on close; failing to set it only costs the
        // RST (the close still happens), so the error is ignored.
        let _ = self.set_zero_linger();
        drop(self);
    }
}

impl LocalStream for UnixStream {
    type Read<'a> = tokio::net::unix::ReadHalf<'a>;
    type Write<'a> = tokio::net::unix::WriteHalf<'a>;

    fn split(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        Self::split(self)
    }

    fn abort(self) {
        drop(self);
    }
}

/// Either kind of local connection, for code that handles both.
pub(super) enum AnyLocal {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AnyLocal {
    /// Writes `bytes` before any piped data (the PROXY protocol header).
    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(bytes).await,
            Self::Unix(s) => s.write_all(bytes).await,
        }
    }

    /// See [`LocalStream::abort`].
    pub(super) fn abort(self) {
        match self {
            Self::Tcp(s) => s.abort(),
            Self::Unix(s) => s.abort(),
        }
    }

    /// [`pipe`] for whichever kind this is.
    pub(super) async fn pipe(
        self,
        send: SendStream,
        recv: RecvStream,
        stats: &PipeStats,
        throttle: Option<&AppThrottle>,
        shutdown: impl Future<Output = ()>,
    ) -> PipeOutcome {
        match self {
            Self::Tcp(s) => pipe(s, send, recv, stats, throttle, shutdown).await,
            Self::Unix(s) => pipe(s, send, recv, stats, throttle, shutdown).await,
        }
    }
}

/// Live byte counts of one piped stream; readable while the pipe runs.
#[derive(Debug, Default)]
pub struct PipeStats {
    /// Bytes read from the local socket and handed to QUIC.
    pub bytes_to_remote: AtomicU64,
    /// Bytes received from QUIC and written to the local socket.
    pub bytes_from_remote: AtomicU64,
    /// UDP flows: datagrams read from the local socket and sent to the far site.
    pub datagrams_to_remote: AtomicU64,
    /// UDP flows: datagrams from the far site written to the local socket.
    pub datagrams_from_remote: AtomicU64,
}

/// How a pipe ended.
#[derive(Debug)]
pub enum PipeOutcome {
    /// Both directions were closed cleanly (FIN and stream finish).
    Finished,
    /// The local socket failed; the stream was reset.
    LocalFailed(io::Error),
    /// The far side reset our receive stream or stopped our send stream with
    /// this code; the local socket was aborted.
    PeerReset(VarInt),
    /// The QUIC connection was lost; the local socket was aborted.
    ConnectionLost(quinn::ConnectionError),
    /// The stream was unusable for another reason (should not happen); the
    /// local socket was aborted.
    StreamFailed(String),
    /// The shutdown future completed first; both ends were torn down.
    Shutdown,
}

impl PipeOutcome {
    /// Whether the stream ended without any failure.
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Finished)
    }
}

impl fmt::Display for PipeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Finished => f.write_str("finished"),
            Self::LocalFailed(e) => write!(f, "local socket failed: {e}"),
            Self::PeerReset(c) => write!(f, "reset by peer with code {c}"),
            Self::ConnectionLost(e) => write!(f, "connection lost: {e}"),
            Self::StreamFailed(e) => write!(f, "stream failed: {e}"),
            Self::Shutdown => f.write_str("shut down"),
        }
    }
}

/// Copies bytes both ways between `local` and the stream until both
/// directions are closed or one side fails; see the module docs for the
/// close/failure mapping. `throttle` paces both directions (the app's
/// `bandwidthLimit`, `None`: unlimited). `shutdown` ends the pipe abortively
/// when it completes (pass `std::future::pending()` for none).
pub async fn pipe<L: LocalStream>(
    mut local: L,
    mut send: SendStream,
    mut recv: RecvStream,
    stats: &PipeStats,
    throttle: Option<&AppThrottle>,
    shutdown: impl Future<Output = ()>,
) -> PipeOutcome {
    let outcome = {
        let (mut local_r, mut local_w) = local.split();
        // Set once the local side sent its FIN: from then on the peer's FIN
        // is passed on only after our send side is acknowledged. Both
        // directions run in this task, so ordering is all the flag needs.
        let local_eof = AtomicBool::new(false);
        let both = async {
            let ((), forwarded) = tokio::try_join!(
                copy_to_remote(&mut local_r, &mut send, stats, &local_eof, throttle),
                copy_from_remote(&mut recv, &mut local_w, stats, &local_eof, throttle),
            )?;
            if !forwarded {
                // Everything we sent is acknowledged: complete the close.
                local_w.shutdown().await.map_err(PipeOutcome::LocalFailed)?;
            }
            Ok(())
        };
        tokio::select! {
            r = both => match r {
                Ok(()) => return PipeOutcome::Finished,
                Err(outcome) => outcome,
            },
            () = shutdown => PipeOutcome::Shutdown,
        }
    };
    let code = match outcome {
        PipeOutcome::LocalFailed(_) => code::LOCAL_FAILED,
        PipeOutcome::Shutdown => code::SHUTDOWN,
        _ => code::PEER_FAILED,
    };
    // Either may already be closed (finished, reset by the peer); that is fine.
    let _ = send.reset(code);
    let _ = recv.stop(code);
    local.abort();
    outcome
}

/// Copies local bytes into the stream; at local EOF finishes the stream and
/// returns once the peer acknowledged all of it.
async fn copy_to_remote<R: AsyncRead + Unpin>(
    local: &mut R,
    send: &mut SendStream,
    stats: &PipeStats,
    local_eof: &AtomicBool,
    throttle: Option<&AppThrottle>,
) -> Result<(), PipeOutcome> {
    let mut buf = BytesMut::with_capacity(BUF_SIZE);
    loop {
        if buf.capacity() < BUF_SIZE / 4 {
            // Reclaims the old allocation once quinn has released every chunk
            // cut from it, otherwise allocates a fresh one.
            buf.reserve(BUF_SIZE);
        }
        let n = match throttle {
            None => local.read_buf(&mut buf).await,
            // One turn's worth at most (see the module docs).
            Some(t) => {
                let mut room = (&mut buf).limit(t.piece(Way::Sent));
                local.read_buf(&mut room).await
            }
        }
        .map_err(PipeOutcome::LocalFailed)?;
        if n == 0 {
            local_eof.store(true, Ordering::Relaxed);
            // Only fails if already finished or reset, neither of which this
            // loop does before returning.
            let _ = send.finish();
            return acknowledged(send).await;
        }
        if let Some(t) = throttle {
            t.wait(Way::Sent, n).await;
        }
        let chunk = buf.split().freeze();
        send.write_chunk(chunk).await.map_err(|e| match e {
            WriteError::Stopped(c) => PipeOutcome::PeerReset(c),
            WriteError::ConnectionLost(e) => PipeOutcome::ConnectionLost(e),
            other => PipeOutcome::StreamFailed(other.to_string()),
        })?;
        stats.bytes_to_remote.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Waits until the peer acknowledged every byte of the finished `send` and
/// its FIN. quinn forgets a send stream once all of it is acknowledged, and
/// `stopped` then yields `Ok(None)`; a stop from the peer or a lost
/// connection is an error.
async fn acknowledged(send: &SendStream) -> Result<(), PipeOutcome> {
    match send.stopped().await {
        Ok(None) => Ok(()),
        Ok(Some(code)) => Err(PipeOutcome::PeerReset(code)),
        Err(StoppedError::ConnectionLost(e)) => Err(PipeOutcome::ConnectionLost(e)),
        Err(other) => Err(PipeOutcome::StreamFailed(other.to_string())),
    }
}

/// Copies the stream's bytes to the local socket. At the stream's FIN it
/// half-closes the local socket and returns `true`, unless the local side
/// already sent its FIN: then it returns `false` and the caller half-closes
/// once our send side is acknowledged.
async fn copy_from_remote<W: AsyncWrite + Unpin>(
    recv: &mut RecvStream,
    local: &mut W,
    stats: &PipeStats,
    local_eof: &AtomicBool,
    throttle: Option<&AppThrottle>,
) -> Result<bool, PipeOutcome> {
    // Each received QUIC packet is its own chunk (~1.4 KB): taking many at
    // once and writing them with one vectored write saves a syscall per packet.
    let mut chunks: [Bytes; CHUNKS_PER_WRITE] = std::array::from_fn(|_| Bytes::new());
    loop {
        let read = match throttle {
            None => recv
                .read_chunks(&mut chunks)
                .await
                .map(|r| r.map(|n| (n, false))),
            Some(t) => read_turn(recv, &mut chunks, t.piece(Way::Received)).await,
        };
        let finished = match read {
            Ok(Some((n, finished))) => {
                if let Some(t) = throttle {
                    let bytes = chunks[..n].iter().map(Bytes::len).sum();
                    t.wait(Way::Received, bytes).await;
                }
                let written = write_all_chunks(local, &mut chunks[..n])
                    .await
                    .map_err(PipeOutcome::LocalFailed)?;
                stats
                    .bytes_from_remote
                    .fetch_add(written, Ordering::Relaxed);
                finished
            }
            Ok(None) => true,
            Err(ReadError::Reset(c)) => return Err(PipeOutcome::PeerReset(c)),
            Err(ReadError::ConnectionLost(e)) => return Err(PipeOutcome::ConnectionLost(e)),
            Err(other) => return Err(PipeOutcome::StreamFailed(other.to_string())),
        };
        if finished {
            if local_eof.load(Ordering::Relaxed) {
                return Ok(false);
            }
            local.shutdown().await.map_err(PipeOutcome::LocalFailed)?;
            return Ok(true);
        }
    }
}

/// Reads at most `budget` bytes (one turn of a throttled stream) into
/// `chunks`: waits for the first chunk, then takes what is already there.
/// `None` at the stream's end; otherwise the number of chunks and whether
/// the end came right after them.
///
/// Bounded reads matter: quinn merges data that waited in its buffer into
/// chunks of megabytes, which would otherwise be held (and sent on) whole,
/// and a stream reset by the peer is only seen by the next read.
async fn read_turn(
    recv: &mut RecvStream,
    chunks: &mut [Bytes],
    budget: usize,
) -> Result<Option<(usize, bool)>, ReadError> {
    let Some(first) = recv.read_chunk(budget, true).await? else {
        return Ok(None);
    };
    let mut bytes = first.bytes.len();
    chunks[0] = first.bytes;
    let mut n = 1;
    while n < chunks.len() && bytes < budget {
        // Only what is there already: a pending read is dropped (quinn's
        // reads are cancel-safe) rather than waited for.
        let next = tokio::select! {
            biased;
            r = recv.read_chunk(budget - bytes, true) => r?,
            () = std::future::ready(()) => break,
        };
        let Some(chunk) = next else {
            return Ok(Some((n, true)));
        };
        bytes += chunk.bytes.len();
        chunks[n] = chunk.bytes;
        n += 1;
    }
    Ok(Some((n, false)))
}

/// Writes every byte of `chunks` in order with vectored writes; returns the
/// byte count. Consumed chunks are left empty.
async fn write_all_chunks<W: AsyncWrite + Unpin>(
    local: &mut W,
    chunks: &mut [Bytes],
) -> io::Result<u64> {
    let mut total = 0u64;
    let mut first = 0;
    while first < chunks.len() {
        // On the stack: this runs once per batch of received packets.
        let pending = &chunks[first..];
        let slices: [IoSlice<'_>; CHUNKS_PER_WRITE] =
            std::array::from_fn(|i| IoSlice::new(pending.get(i).map_or(&[], |c| c)));
        let mut n = local
            .write_vectored(&slices[..pending.len().min(CHUNKS_PER_WRITE)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        total += n as u64;
        while n > 0 {
            let c = &mut chunks[first];
            let step = n.min(c.len());
            c.advance(step);
            n -= step;
            if c.is_empty() {
                first += 1;
            }
        }
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
    }
    Ok(total)
}
