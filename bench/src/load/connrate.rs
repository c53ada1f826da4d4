//! Connection rate: concurrent clients each looping open → one [`MESSAGE`](super::MESSAGE) exchange →
//! close, for a fixed time; counts completions and errors (an error is counted and the
//! client goes on, so one failure does not end the measurement).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Target, echo_message, exchange};

/// One connection-rate measurement.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Concurrent clients.
    pub concurrency: usize,
    /// How long they run.
    pub duration: Duration,
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Completed connections (open, exchange, close) per second.
    pub per_sec: f64,
    /// Completed connections.
    pub completed: u64,
    /// Failed attempts.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

/// Per attempt: a stuck connection counts as an error instead of stalling its client.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `spec` against `target`.
pub async fn run(target: &Target, spec: &Spec) -> Outcome {
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..spec.concurrency {
        let (t, ok, bad, first) = (
            target.clone(),
            Arc::clone(&completed),
            Arc::clone(&errors),
            Arc::clone(&first_error),
        );
        clients.spawn(async move {
            let msg = echo_message();
            while Instant::now() < deadline {
                let attempt = async {
                    let mut s = t.connect().await?;
                    exchange(&mut s, &msg).await
                };
                match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
                    Ok(Ok(())) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    failed => {
                        bad.fetch_add(1, Ordering::Relaxed);
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        if let Ok(mut f) = first.lock() {
                            f.get_or_insert(why);
                        }
                    }
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let completed = completed.load(Ordering::Relaxed);
    let first_error = first_error.lock().ok().and_then(|f| f.clone());
    Outcome {
        per_sec: completed as f64 / elapsed,
        completed,
        errors: errors.load(Ordering::Relaxed),
        first_error,
    }
}
