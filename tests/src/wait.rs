//! Waiting on conditions instead of sleeping: the one wait helper of the suite. [`poll`] is the
//! loop (every [`POLL_INTERVAL`], until a deadline); [`eventually`] and [`wait_for`] are its
//! boolean and panicking forms, and the `assert_eventually!` macros its inline forms (for
//! conditions that borrow locals or contain `.await`). Every readiness wait in the suite
//! goes through here; no test file keeps a polling loop of its own.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often conditions are re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The longest single wait the suite uses for readiness (tunnel up, listener open, ...).
pub const WAIT: Duration = Duration::from_secs(20);

/// Sleeps one poll interval (used by [`crate::assert_eventually_async!`]).
pub async fn pause() {
    tokio::time::sleep(POLL_INTERVAL).await;
}

/// Why [`retry`] gave up: how many times it tried and what the last try returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed<E> {
    /// Calls made.
    pub attempts: u64,
    /// The last call's error.
    pub last: E,
}

/// Calls `f` (at least once) every [`POLL_INTERVAL`] until it returns `Ok`, or `timeout`
/// passes: then the number of attempts and the last error. The core loop of this module.
///
/// `f` is a closure returning a future (`|| async { … }`), not an async closure: futures of
/// async closures cannot be proven `Send` yet, and tests spawn these waits.
pub async fn retry<T, E, F, Fut>(timeout: Duration, mut f: F) -> Result<T, Elapsed<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() >= timeout => return Err(Elapsed { attempts, last }),
            Err(_) => pause().await,
        }
    }
}

/// Polls `f` until it returns `Some`, or `timeout` passes (`None`).
pub async fn poll<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    retry(timeout, || {
        let next = f();
        async move { next.await.ok_or(()) }
    })
    .await
    .ok()
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it became true.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(timeout, || {
        let next = check();
        async move { next.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Polls `f` until it returns `Some` and returns the value; after `timeout` panics with
/// "`what`: not seen within …" and `diag()` (typically the sites' log tails, see
/// [`crate::diag`]).
pub async fn wait_for<T, F, Fut>(
    what: impl Display,
    timeout: Duration,
    diag: impl FnOnce() -> String,
    f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll(timeout, f).await {
        Some(v) => v,
        None => panic!("{what}: not seen within {timeout:?}\n{}", diag()),
    }
}

/// Checks that `f` stays false for the whole of `period` (polling); panics with `what` and
/// `diag()` the first time it is true. The negative counterpart of [`wait_for`].
pub async fn never<F, Fut>(
    what: impl Display,
    period: Duration,
    diag: impl FnOnce() -> String,
    f: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    if eventually(period, f).await {
        panic!(
            "{what}: seen {:?} into a period where it must not happen\n{}",
            start.elapsed(),
            diag()
        );
    }
}

/// Polls a boolean expression until it is true, panicking after `timeout` with the expression
/// and the formatted message (formatted only on failure, so it may read logs).
///
/// Blocks the thread between polls; inside async tests prefer
/// [`assert_eventually_async!`](crate::assert_eventually_async), which also allows `.await`
/// in the condition.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr $(,)?) => {
        $crate::assert_eventually!($cond, $timeout, "")
    };
    ($cond:expr, $timeout:expr, $($arg:tt)+) => {{
        let timeout: ::std::time::Duration = $timeout;
        let start = ::std::time::Instant::now();
        loop {
            if $cond {
                break;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "condition `{}` was still false after {:?}: {}",
                    stringify!($cond),
                    timeout,
                    format_args!($($arg)+)
                );
            }
            ::std::thread::sleep($crate::wait::POLL_INTERVAL);
        }
    }};
}

/// Async form of [`assert_eventually!`]: the condition may contain `.await`, and the wait
/// yields to the runtime instead of blocking the thread.
#[macro_export]
macro_rules! assert_eventually_async {
    ($cond:expr, $timeout:expr $(,)?) => {
        $crate::assert_eventually_async!($cond, $timeout, "")
    };
    ($cond:expr, $timeout:expr, $($arg:tt)+) => {{
        let timeout: ::std::time::Duration = $timeout;
        let start = ::std::time::Instant::now();
        loop {
            if $cond {
                break;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "condition `{}` was still false after {:?}: {}",
                    stringify!($cond),
                    timeout,
                    format_args!($($arg)+)
                );
            }
            $crate::wait::pause().await;
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn assert_eventually_passes_once_condition_holds() {
        let n = AtomicU32::new(0);
        crate::assert_eventually!(
            n.fetch_add(1, Ordering::SeqCst) >= 3,
            Duration::from_secs(2)
        );
    }

    #[test]
    #[should_panic(expected = "was still false after")]
    fn assert_eventually_panics_with_message_on_timeout() {
        crate::assert_eventually!(
            false,
            Duration::from_millis(100),
            "waited for {}",
            "nothing"
        );
    }

    #[tokio::test]
    async fn async_variant_allows_await_in_condition() {
        let n = AtomicU32::new(0);
        crate::assert_eventually_async!(
            async { n.fetch_add(1, Ordering::SeqCst) >= 2 }.await,
            Duration::from_secs(2),
            "counter {}",
            n.load(Ordering::SeqCst)
        );
        assert!(!eventually(Duration::from_millis(100), || async { false }).await);
    }

    #[tokio::test]
    async fn retry_counts_attempts_and_keeps_the_last_error() {
        let n = AtomicU32::new(0);
        let got = retry(Duration::from_secs(2), || async {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            if i == 3 { Ok(i * 10) } else { Err(i) }
        })
        .await;
        assert_eq!(got, Ok(30));
        let n = AtomicU32::new(0);
        let gave_up = retry(Duration::ZERO, || async {
            Err::<(), _>(n.fetch_add(1, Ordering::SeqCst))
        })
        .await;
        assert_eq!(
            gave_up,
            Err(Elapsed {
                attempts: 1,
                last: 0
            })
        );
        assert_eq!(poll(Duration::ZERO, || async { None::<()> }).await, None);
    }

    #[tokio::test]
    async fn waits_can_run_in_spawned_tasks() {
        let flag = std::sync::Arc::new(AtomicU32::new(0));
        let f = flag.clone();
        let task = tokio::spawn(async move {
            wait_for("flag", Duration::from_secs(5), String::new, || async {
                (f.load(Ordering::SeqCst) == 1).then_some(7)
            })
            .await
        });
        flag.store(1, Ordering::SeqCst);
        assert_eq!(task.await.unwrap(), 7);
    }

    #[tokio::test]
    #[should_panic(expected = "the thing: not seen within 100ms\nlogs here")]
    async fn wait_for_panics_with_what_and_diag() {
        wait_for(
            "the thing",
            Duration::from_millis(100),
            || "logs here".to_owned(),
            || async { None::<()> },
        )
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "a listener: seen")]
    async fn never_panics_when_the_condition_shows_up() {
        let n = AtomicU32::new(0);
        never(
            "a listener",
            Duration::from_secs(2),
            String::new,
            || async { n.fetch_add(1, Ordering::SeqCst) > 2 },
        )
        .await;
    }
}
