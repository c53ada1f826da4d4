//! Pacing of accept loops when `accept` fails, typically because the process
//! is out of file descriptors (`EMFILE`/`ENFILE`).
//!
//! A listening socket with a connection waiting in its backlog stays readable,
//! so a loop that retries `accept` at once spins a core for as long as the
//! descriptors are gone (tonic's server does exactly that with its incoming
//! stream). Here every failure pauses the loop: 100 ms, doubling up to 1 s,
//! back to 100 ms after the next success ([`AcceptBackoff`], pure). The remote
//! app listeners (TCP, and UDP for receive errors) use the schedule in their own loop; the control socket's
//! server gets it through the [`Paced`] stream adaptor. Every failure is
//! counted in [`Counters::accept_errors`]; the first of a streak is logged as
//! a warning, the rest at debug level, and the recovery once.
//!
//! This module knows nothing of apps, tunnels or gRPC.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;
use tokio_stream::Stream;
use tracing::{debug, info, warn};

use crate::counters::Counters;

/// Pause after the first failed accept of a streak.
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between two accept attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The pause schedule of one accept loop.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    /// A schedule with no failure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a failed accept; returns how long to wait before the next one:
    /// [`FIRST_PAUSE`] doubled per consecutive failure, at most [`MAX_PAUSE`].
    pub fn failed(&mut self) -> Duration {
        let doublings = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        FIRST_PAUSE.saturating_mul(1u32 << doublings).min(MAX_PAUSE)
    }

    /// Records a successful accept; returns the failures of the streak it ends
    /// (0 if there was none).
    pub fn succeeded(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Whether `e` means the process or the system ran out of descriptors or
/// socket memory (as opposed to a failure of one connection).
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Counts and logs one failed accept of the loop called `what`, updates
/// `backoff` and returns the pause to take.
pub fn on_error(
    backoff: &mut AcceptBackoff,
    counters: &Counters,
    what: &str,
    e: &io::Error,
) -> Duration {
    Counters::bump(&counters.accept_errors);
    let first = backoff.failures() == 0;
    let pause = backoff.failed();
    if first {
        warn!(
            listener = what,
            error = %e,
            out_of_descriptors = is_exhaustion(e),
            pause = ?pause,
            "cannot accept a connection; pausing accepts"
        );
    } else {
        debug!(listener = what, error = %e, pause = ?pause, "accept failed again");
    }
    pause
}

/// Records a successful accept of the loop called `what`, logging the end of
/// a failure streak.
pub fn on_success(backoff: &mut AcceptBackoff, what: &str) {
    let failures = backoff.succeeded();
    if failures > 0 {
        info!(listener = what, failures, "accepting connections again");
    }
}

/// An incoming-connection stream that pauses after each failed accept instead
/// of handing the error on; the stream it wraps is polled again only after
/// the pause.
pub struct Paced<S> {
    inner: S,
    what: &'static str,
    backoff: AcceptBackoff,
    pause: Option<Pin<Box<Sleep>>>,
    counters: Arc<Counters>,
}

impl<S> Paced<S> {
    /// Paces `inner`, the accept stream of the listener called `what`,
    /// counting failures in `counters`.
    pub fn new(inner: S, what: &'static str, counters: Arc<Counters>) -> Self {
        Self {
            inner,
            what,
            backoff: AcceptBackoff::new(),
            pause: None,
            counters,
        }
    }
}

impl<S, T> Stream for Paced<S>
where
    S: Stream<Item = io::Result<T>> + Unpin,
{
    type Item = io::Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = this.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(conn)) => {
                    on_success(&mut this.backoff, this.what);
                    return Poll::Ready(Some(Ok(conn)));
                }
                Some(Err(e)) => {
                    let pause = on_error(&mut this.backoff, &this.counters, this.what, &e);
                    this.pause = Some(Box::pin(tokio::time::sleep(pause)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pauses_double_from_100ms_to_1s_and_reset_after_a_success() {
        let mut b = AcceptBackoff::new();
        let pauses: Vec<_> = (0..6).map(|_| b.failed()).collect();
        assert_eq!(
            pauses,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(b.succeeded(), 6);
        assert_eq!(b.succeeded(), 0);
        assert_eq!(b.failed(), ms(100));
    }

    #[test]
    fn descriptor_exhaustion_is_recognised() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(!is_exhaustion(&io::Error::other("x")));
    }

    proptest! {
        #[test]
        fn every_pause_is_between_100ms_and_1s_and_never_shrinks_in_a_streak(n in 1usize..200) {
            let mut b = AcceptBackoff::new();
            let mut last = Duration::ZERO;
            for _ in 0..n {
                let p = b.failed();
                prop_assert!((FIRST_PAUSE..=MAX_PAUSE).contains(&p));
                prop_assert!(p >= last);
                last = p;
            }
        }
    }

    /// A stream of accept results handed out one per poll.
    struct Script(std::collections::VecDeque<io::Result<u32>>);

    impl Stream for Script {
        type Item = io::Result<u32>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    #[tokio::test]
    async fn paced_stream_waits_after_each_error_and_counts_it() {
        use tokio_stream::StreamExt;
        let emfile = || Err(io::Error::from_raw_os_error(libc::EMFILE));
        let script = Script([emfile(), emfile(), emfile(), Ok(7), Ok(8)].into());
        let counters = Arc::new(Counters::default());
        let mut paced = Paced::new(script, "test", counters.clone());
        let start = std::time::Instant::now();
        assert_eq!(paced.next().await.map(Result::ok), Some(Some(7)));
        // 100 + 200 + 400 ms of pauses (real time: tokio's test clock is not enabled here).
        let waited = start.elapsed();
        assert!(waited >= ms(700) && waited < ms(3000), "{waited:?}");
        assert_eq!(counters.accept_errors.load(Ordering::Relaxed), 3);
        let start = std::time::Instant::now();
        assert_eq!(paced.next().await.map(Result::ok), Some(Some(8)));
        assert!(start.elapsed() < ms(100), "no pause after a success");
        assert!(paced.next().await.is_none());
    }
}
