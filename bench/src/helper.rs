//! Helper processes: this binary started again as an app server (`serve`) or a plain
//! TCP relay (`relay`), for scenarios that need more descriptors than one process has or a
//! separate process on purpose. Owns only starting, addressing and killing them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::error::{BenchError, IoContext};
use crate::load::Target;

/// A child process of this binary (`<exe> serve`, `<exe> relay …`) that prints
/// `listening ADDR` first; killed on drop (and with its parent: PDEATHSIG).
#[derive(Debug)]
pub struct Helper {
    child: Child,
    addr: SocketAddr,
}

impl Helper {
    /// Starts `exe args…` and reads the address it listens on.
    pub fn start(exe: &Path, args: &[&str]) -> Result<Self, BenchError> {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .ctx(|| format!("starting {} {}", exe.display(), args.join(" ")))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .ctx(|| "reading the helper's address".into())?;
        }
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Self { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(BenchError::Io {
                    context: format!("starting helper {}", args.join(" ")),
                    source: std::io::Error::other(format!("unexpected first line {line:?}")),
                })
            }
        }
    }
}

impl Helper {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the null tunnel's records say it is.
pub const NULL_TUNNEL_NOTE: &str =
    "two plain TCP relay processes, no crypto: the floor of any two-process forwarder";

/// client → relay → relay → app: two `relay` helpers in a row, the same socket hops as a
/// two-site tunnel with nothing else. Both are killed on drop.
#[derive(Debug)]
pub struct NullTunnel {
    first: Helper,
    _last: Helper,
}

impl NullTunnel {
    /// Starts both relays (this binary is `exe`) in front of `app`.
    pub fn start(exe: &Path, app: SocketAddr) -> Result<Self, BenchError> {
        let last = Helper::start(exe, &["relay", "--to", &app.to_string()])?;
        let first = Helper::start(exe, &["relay", "--to", &last.addr().to_string()])?;
        Ok(Self { first, _last: last })
    }

    /// Where clients connect.
    pub fn entry(&self) -> Target {
        Target::direct(self.first.addr())
    }
}
