//! Request/response latency: [`MESSAGE`]-byte ping-pongs over one connection, one at a
//! time, each timed from the write to the last byte of the answer.

use std::time::{Duration, Instant};

use super::{MESSAGE, Target, exchange};
use crate::stats::{Summary, summarize};

/// One latency measurement.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Round trips done first and not recorded.
    pub warmup: usize,
    /// Round trips recorded, at most.
    pub iterations: usize,
    /// Stop recording after this long even if fewer round trips were done.
    pub max_time: Duration,
}

/// Runs `spec` against `target`.
pub async fn run(target: &Target, spec: &Spec) -> std::io::Result<Summary> {
    // The first message opens echo mode; later ones are ordinary payload.
    let mut s = target.echo_once().await?;
    let msg = vec![0x42; MESSAGE];
    for _ in 0..spec.warmup {
        exchange(&mut s, &msg).await?;
    }
    let mut samples = Vec::with_capacity(spec.iterations);
    let start = Instant::now();
    while samples.len() < spec.iterations && start.elapsed() < spec.max_time {
        let t = Instant::now();
        exchange(&mut s, &msg).await?;
        samples.push(t.elapsed());
    }
    summarize(&mut samples).ok_or_else(|| std::io::Error::other("no round trip completed"))
}
