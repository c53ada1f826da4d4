//! A child process started by the harness: stdout/stderr to files, signals by pid, waiting for
//! exit with a deadline, SIGKILL on drop. Knows nothing about wovenet configs or logs.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running (or exited, not yet dropped) child process.
#[derive(Debug)]
pub struct Process {
    child: Child,
    exited: Option<ExitStatus>,
    program: String,
    /// Where stdout goes.
    pub stdout: PathBuf,
    /// Where stderr goes.
    pub stderr: PathBuf,
}

impl Process {
    /// Starts `program args` with stdout/stderr appended to the given files; each `env` entry
    /// sets (`Some`) or removes (`None`) a variable.
    ///
    /// The child gets `PR_SET_PDEATHSIG = SIGKILL`, so daemons do not outlive a test process
    /// that is killed. The signal fires when the spawning *thread* exits, so spawn from the
    /// test's own thread (or a runtime worker), not from a short-lived helper thread.
    pub fn spawn<I, S>(
        program: &Path,
        args: I,
        env: &[(&str, Option<&OsStr>)],
        stdout: &Path,
        stderr: &Path,
    ) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let open = |p: &Path| File::options().create(true).append(true).open(p);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(open(stdout)?)
            .stderr(open(stderr)?)
            .env("RUST_BACKTRACE", "1");
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Self {
            child,
            exited: None,
            program: program.display().to_string(),
            stdout: stdout.to_path_buf(),
            stderr: stderr.to_path_buf(),
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The exit status if it has exited, without reaping it (so `&self` suffices).
    pub fn peek_status(&self) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        // SAFETY: an all-zero siginfo_t is a valid value; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: WNOWAIT leaves the child waitable, so try_status/kill still reap it later.
        let r = unsafe { libc::waitid(libc::P_PID, self.child.id(), &mut info, flags) };
        // SAFETY: si_pid/si_status are valid to read for a SIGCHLD-style siginfo from waitid.
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if r != 0 || pid == 0 {
            return None;
        }
        // Rebuild a wait(2) status word: exit code in bits 8..16, or the signal in bits 0..7.
        let raw = if code == libc::CLD_EXITED {
            (status & 0xff) << 8
        } else {
            status & 0x7f
        };
        Some(ExitStatus::from_raw(raw))
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) unless it already exited.
    pub fn signal(&mut self, signal: i32) {
        if self.is_running() {
            // SAFETY: plain syscall on a pid we own and have not reaped yet (try_status above
            // would have reaped it), so the pid cannot have been reused.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Waits up to `timeout` for exit, polling without blocking the runtime.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::wait::poll(timeout, || {
            let status = self.try_status();
            async move { status }
        })
        .await
    }

    /// SIGKILL and reap (blocking; a killed process is reaped at once).
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        self.exited = Some(status);
        status
    }

    /// The program path, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Describes an exit status for messages: `exit code 3` or `killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{status}"),
    }
}

/// The last `n` lines of a text file ("" if it does not exist).
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &Path) -> Process {
        Process::spawn(
            Path::new("/bin/sh"),
            ["-c", script],
            &[("E2E_VAR", Some(OsStr::new("hello")))],
            &dir.join("out"),
            &dir.join("err"),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn output_goes_to_files_and_exit_status_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("echo $E2E_VAR; echo oops >&2; exit 3", dir.path());
        let status = p.wait_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(describe(status), "exit code 3");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "hello\n"
        );
        assert_eq!(file_tail(&dir.path().join("err"), 5), "  oops\n");
    }

    #[tokio::test]
    async fn peek_status_sees_exit_without_reaping() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("exit 7", dir.path());
        let seen = crate::wait::poll(Duration::from_secs(5), || {
            let s = p.peek_status();
            async move { s }
        })
        .await;
        assert_eq!(seen.unwrap().code(), Some(7));
        assert_eq!(p.peek_status().unwrap().code(), Some(7));
        assert_eq!(
            p.try_status().unwrap().code(),
            Some(7),
            "still reapable after peeking"
        );
        let mut q = sh("sleep 30", dir.path());
        assert!(q.peek_status().is_none());
        q.kill();
        assert_eq!(describe(q.peek_status().unwrap()), "killed by signal 9");
    }

    #[tokio::test]
    async fn sigterm_reaches_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh(
            "trap 'exit 0' TERM; while true; do sleep 0.05; done",
            dir.path(),
        );
        assert!(p.wait_exit(Duration::from_millis(200)).await.is_none());
        p.signal(libc::SIGTERM);
        let status = p
            .wait_exit(Duration::from_secs(5))
            .await
            .expect("exits on SIGTERM");
        assert_eq!(status.code(), Some(0));
    }

    #[test]
    fn kill_and_drop_stop_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("sleep 30", dir.path());
        assert!(p.is_running());
        assert_eq!(describe(p.kill()), "killed by signal 9");
        let p2 = sh("sleep 30", dir.path());
        let pid = p2.pid() as libc::pid_t;
        drop(p2);
        // SAFETY: signal 0 only probes for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "child {pid} survived drop");
    }
}
