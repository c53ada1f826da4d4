//! Waiting on conditions instead of sleeping: the `assert_eventually!` macros and an async
//! `eventually` helper. Every readiness wait in the suite goes through here.

use std::time::{Duration, Instant};

/// How often conditions are re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The longest single wait the suite uses for readiness (tunnel up, listener open, ...).
pub const WAIT: Duration = Duration::from_secs(20);

/// Sleeps one poll interval (used by [`crate::assert_eventually_async!`]).
pub async fn pause() {
    tokio::time::sleep(POLL_INTERVAL).await;
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it became true.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        pause().await;
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
}
