//! Telling a service manager how the daemon is doing, with systemd's notify
//! protocol (`Type=notify` units): `READY=1` once the site runs and its
//! control socket accepts connections, `STOPPING=1` when shutdown begins, and
//! free-form `STATUS=` lines for `systemctl status`.
//!
//! Without `NOTIFY_SOCKET` in the environment (not started by systemd) every
//! call does nothing. Failing to notify is logged and never fatal. Decides
//! nothing: the caller says when it is ready.

use sd_notify::NotifyState;
use tracing::warn;

/// Environment variable through which systemd passes its notification socket.
pub const ENV_SOCKET: &str = "NOTIFY_SOCKET";

/// `READY=1` with a status line: startup is over.
pub fn ready(status: &str) {
    let status = one_line(status);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1` with a status line: shutdown has begun.
pub fn stopping(status: &str) {
    let status = one_line(status);
    send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
}

/// A `STATUS=` line alone.
pub fn status(status: &str) {
    let status = one_line(status);
    send(&[NotifyState::Status(&status)]);
}

/// The protocol is one `KEY=VALUE` per line: a newline in a value (a path
/// from the config, say) would start a forged assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        let socket = std::env::var_os(ENV_SOCKET).unwrap_or_default();
        warn!(socket = ?socket, error = %e, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_cannot_carry_a_second_assignment() {
        assert_eq!(one_line("a\nREADY=1\r"), "a READY=1 ");
    }
}
