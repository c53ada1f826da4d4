//! The process signals `wovenetd` acts on, as values: SIGINT and SIGTERM ask it
//! to stop, SIGHUP asks it to reload its configuration (what systemd's
//! `ExecReload=/bin/kill -HUP $MAINPID` sends). Installing the handlers also
//! replaces SIGHUP's default action, which would terminate the process.
//!
//! Only turns signals into [`Signal`]s; what a reload does is the caller's
//! business (this module knows nothing of configs or sites).

use std::io;

use tokio::signal::unix::{SignalKind, signal};

/// What a received signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: re-read the configuration.
    Reload,
    /// SIGINT or SIGTERM: shut down gracefully.
    Shutdown,
}

/// Installed handlers for SIGHUP, SIGINT and SIGTERM.
#[derive(Debug)]
pub struct Signals {
    hangup: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime). From here on these
    /// signals are queued for [`recv`](Self::recv) instead of killing the
    /// process, so install them before anything slow happens at start.
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal received.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Shutdown,
            _ = self.interrupt.recv() => Signal::Shutdown,
            _ = self.hangup.recv() => Signal::Reload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raise(sig: libc::c_int) {
        // SAFETY: raise(3) has no memory-safety preconditions; the handler is installed.
        assert_eq!(unsafe { libc::raise(sig) }, 0);
    }

    #[tokio::test]
    async fn hangup_is_a_reload_and_term_a_shutdown() {
        let mut signals = Signals::install().expect("install");
        raise(libc::SIGHUP);
        assert_eq!(signals.recv().await, Signal::Reload);
        raise(libc::SIGTERM);
        assert_eq!(signals.recv().await, Signal::Shutdown);
    }
}
