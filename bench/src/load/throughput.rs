//! Bulk throughput: N parallel streams uploading to the sink or downloading from the
//! source, measured at the receiver over a window that starts after a warm-up (slow start
//! and window growth are not what this measures).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::{BULK_BUF, SINK, SOURCE, Target};
use crate::footprint::{Usage, Window};

/// Which way the bytes go, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to server.
    Upload,
    /// Server to client.
    Download,
}

impl Direction {
    /// `upload` or `download`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }
}

/// One throughput measurement.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Parallel connections.
    pub streams: usize,
    /// Which way.
    pub direction: Direction,
    /// Time before the measurement window opens.
    pub warmup: Duration,
    /// Length of the measurement window.
    pub duration: Duration,
}

/// What was measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Bits per second received over the window.
    pub bits_per_sec: f64,
    /// Bytes received over the window.
    pub bytes: u64,
}

/// Runs `spec` against `target`. `sink_received` is the app server's counter of received
/// bytes (uploads are measured there, at the receiver).
pub async fn run(
    target: &Target,
    sink_received: &Arc<AtomicU64>,
    spec: &Spec,
) -> std::io::Result<Outcome> {
    Ok(run_watched(target, sink_received, spec, &[]).await?.0)
}

/// [`run`], also measuring what processes `watch` (the forwarders on the path) cost: peak
/// memory from before the first connection, CPU time over the measurement window.
pub async fn run_watched(
    target: &Target,
    sink_received: &Arc<AtomicU64>,
    spec: &Spec,
    watch: &[u32],
) -> std::io::Result<(Outcome, Usage)> {
    let mut window = Window::open(watch);
    let downloaded = Arc::new(AtomicU64::new(0));
    let counter = match spec.direction {
        Direction::Upload => Arc::clone(sink_received),
        Direction::Download => Arc::clone(&downloaded),
    };
    let mut streams = JoinSet::new();
    for _ in 0..spec.streams {
        let mut s = target.connect().await?;
        // Aborted streams reset instead of draining their buffers into the next run.
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
        let down = Arc::clone(&downloaded);
        match spec.direction {
            Direction::Upload => streams.spawn(async move {
                s.write_all(&[SINK]).await?;
                let buf = vec![0x44; BULK_BUF];
                loop {
                    s.write_all(&buf).await?;
                }
            }),
            Direction::Download => streams.spawn(async move {
                s.write_all(&[SOURCE]).await?;
                let mut buf = vec![0; BULK_BUF];
                loop {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Err::<(), _>(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    down.fetch_add(n as u64, Ordering::Relaxed);
                }
            }),
        };
    }
    let alive = |streams: &mut JoinSet<std::io::Result<()>>| -> std::io::Result<()> {
        match streams.try_join_next() {
            None => Ok(()),
            Some(Ok(Err(e))) => Err(std::io::Error::other(format!("a stream failed: {e}"))),
            Some(_) => Err(std::io::Error::other("a stream ended early")),
        }
    };
    tokio::time::sleep(spec.warmup).await;
    alive(&mut streams)?;
    window.restart_cpu();
    let (b0, t0) = (counter.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(spec.duration).await;
    let (b1, t1) = (counter.load(Ordering::Relaxed), Instant::now());
    let usage = window.close();
    alive(&mut streams)?;
    streams.shutdown().await;
    let bytes = b1.saturating_sub(b0);
    let outcome = Outcome {
        bits_per_sec: bytes as f64 * 8.0 / (t1 - t0).as_secs_f64(),
        bytes,
    };
    Ok((outcome, usage))
}

/// Waits until `counter` has not moved for `still` (data of an earlier run still in
/// flight must not count in the next one), giving up after `max`.
pub async fn quiesce(counter: &AtomicU64, still: Duration, max: Duration) {
    let start = Instant::now();
    let mut last = counter.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while start.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= still {
            return;
        }
    }
}
