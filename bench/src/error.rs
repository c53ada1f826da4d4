//! The suite's error type: what failed, with enough context to act on it.

use crate::wanem::WanemError;

/// Why a scenario or the runner failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The WAN emulator could not be set up.
    #[error(transparent)]
    Wanem(#[from] WanemError),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The wovenetd binary is missing or could not be built.
    #[error("wovenetd binary: {0}")]
    Binary(String),
    /// A wovenetd process misbehaved (exited, never forwarded, would not stop).
    #[error("site {site}: {reason}")]
    Site {
        /// The site name.
        site: String,
        /// What happened, with the tail of its log.
        reason: String,
    },
    /// rathole (the comparison of `loopback` and `latency`) could not be run.
    #[error("rathole: {0}")]
    Rathole(String),
    /// The UDP scenario's flows did not work.
    #[error("udp: {0}")]
    Udp(String),
    /// The real-NAT rig (`wovenet_e2e::natrig`) is missing a tool or could not be set up.
    #[error("NAT rig: {0}")]
    Rig(String),
    /// Results could not be written.
    #[error("cannot write results: {0}")]
    Report(String),
}

/// Adds context to I/O results.
pub trait IoContext<T> {
    /// Wraps the error with `context` (evaluated only on error).
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, BenchError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Io {
            context: context(),
            source,
        })
    }
}
