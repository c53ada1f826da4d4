//! Running the real `wovenetctl` against a site's control socket: one-shot runs with their
//! exit code and output, JSON parsing, and long-running commands (`events`, `stats --follow`)
//! read line by line. Every failure panics with the command, its output and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::site::Site;

/// Longest a one-shot `wovenetctl` run may take.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// `wovenetctl --socket PATH …`.
#[derive(Debug, Clone)]
pub struct Ctl {
    socket: PathBuf,
    binary: PathBuf,
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    /// The arguments after `--socket PATH`.
    pub args: Vec<String>,
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl fmt::Display for CtlOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wovenetctl {} exited with {:?}\n--- stdout\n{}--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Ctl {
    /// Talks to the daemon on `socket` (need not exist: tests of "no daemon").
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            binary: crate::binary::wovenetctl().to_path_buf(),
        }
    }

    /// Talks to `site` through the control socket in its config.
    pub fn site(site: &Site) -> Self {
        Self::new(site.control_socket())
    }

    /// The socket it passes as `--socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("WOVENET_CONTROL_SOCKET")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs `wovenetctl --socket PATH args…` to completion (panics after [`CTL_TIMEOUT`]).
    pub async fn run(&self, args: &[&str]) -> CtlOutput {
        let out = tokio::time::timeout(CTL_TIMEOUT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("wovenetctl {args:?} did not finish within {CTL_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("cannot run wovenetctl {args:?}: {e}"));
        CtlOutput {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and asserts exit code 0 and an empty stderr; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.code == Some(0) && out.stderr.is_empty(),
            "expected success and no stderr\n{out}"
        );
        out.stdout
    }

    /// Runs with `-o json`, asserts success and parses stdout as one JSON document.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.run(&full).await;
        assert!(out.code == Some(0), "expected success\n{out}");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{out}"))
    }

    /// Polls `wovenetctl -o json args` until `check` holds and returns that document; after
    /// `timeout` panics with `what`, the last output and `diag()`.
    pub async fn json_until(
        &self,
        args: &[&str],
        what: &str,
        timeout: Duration,
        diag: impl FnOnce() -> String,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let check = &check;
        crate::wait::retry(timeout, || async move {
            let v = self.json(args).await;
            if check(&v) { Ok(v) } else { Err(v) }
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "wovenetctl -o json {}: expected {what} within {timeout:?}, last output:\n{:#}\n{}",
                args.join(" "),
                e.last,
                diag()
            )
        })
    }

    /// Polls `wovenetctl args` (table output) until its stdout satisfies `check`; after
    /// `timeout` panics with `what`, the last output and `diag()`.
    pub async fn table_until(
        &self,
        args: &[&str],
        what: &str,
        timeout: Duration,
        diag: impl FnOnce() -> String,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let check = &check;
        crate::wait::retry(timeout, || async move {
            let out = self.ok(args).await;
            if check(&out) { Ok(out) } else { Err(out) }
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "wovenetctl {}: expected {what} within {timeout:?}, last output:\n{}\n{}",
                args.join(" "),
                e.last,
                diag()
            )
        })
    }

    /// Starts a long-running command with stdout piped (killed when dropped).
    pub fn spawn(&self, args: &[&str]) -> CtlChild {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run wovenetctl {args:?}: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("wovenetctl {args:?}: stdout was not piped"));
        CtlChild {
            args: args.join(" "),
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }
}

/// A running `wovenetctl` whose stdout is read line by line.
pub struct CtlChild {
    args: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl CtlChild {
    /// Reads lines until one contains `needle`; returns it, or an error listing the lines
    /// seen when `timeout` passes or the process closes its stdout first.
    pub async fn wait_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Ok(Ok(None)) => return Err(self.failure(needle, "stdout closed")),
                Ok(Err(e)) => return Err(self.failure(needle, &format!("read error: {e}"))),
                Err(_) => return Err(self.failure(needle, &format!("{timeout:?} passed"))),
            }
        }
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    fn failure(&mut self, needle: &str, why: &str) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited with {s}"),
            Ok(None) => "still running".to_owned(),
            Err(e) => format!("state unknown: {e}"),
        };
        format!(
            "wovenetctl {}: no line containing {needle:?} before {why} ({status}); lines seen:\n{}",
            self.args,
            self.seen.join("\n")
        )
    }
}
