//! A real `wovenetd run --config` process per test site: its tempdir (config, JSON log,
//! stdout/stderr, unix sockets), start/stop/kill/restart, log waits, and diagnostics (log
//! tails) for panic messages. Every panic here says what was expected and shows the log.

use std::ffi::OsStr;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::client;
use crate::log::{self, LogLine};
use crate::natrig::Netns;
use crate::process::{self, Process, file_tail};
use crate::sock::Sock;
use crate::wait::WAIT;

pub mod config;

use config::{CONFIG_FILE, CONTROL_SOCKET, LOG_FILE};
pub use config::{DEFAULT_KEY, SiteBuilder, random_topic, unique_suffix, write_yaml};

/// How long a site may take between SIGTERM and a clean exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Log lines shown in panic messages.
const TAIL_LINES: usize = 60;

/// Sites sharing a broker, topic and key: the usual way to build the sites of one test.
#[derive(Debug, Clone)]
pub struct Net {
    broker: String,
    topic: String,
    key: String,
}

impl Net {
    /// Sites using `broker_url` and a topic no other test uses.
    pub fn new(broker_url: impl Display) -> Self {
        Self {
            broker: broker_url.to_string(),
            topic: random_topic(),
            key: DEFAULT_KEY.to_owned(),
        }
    }

    /// A builder for a site on this net.
    pub fn site(&self, name: &str) -> SiteBuilder {
        Site::builder(name)
            .broker(&self.broker)
            .topic(&self.topic)
            .key(&self.key)
    }

    /// The shared topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The broker URL.
    pub fn broker(&self) -> &str {
        &self.broker
    }
}

/// A wovenetd site process and its files. Dropping it SIGKILLs the process; if the test is
/// panicking, the tempdir is kept and its path printed.
pub struct Site {
    name: String,
    dir: TempDir,
    config_path: PathBuf,
    config: Value,
    binary: PathBuf,
    sockets: Vec<u16>,
    process: Option<Process>,
    runs: u32,
    keep_on_panic: bool,
    netns: Option<Netns>,
    env: Vec<(String, String)>,
}

impl SiteBuilder {
    /// Writes the config into a fresh tempdir, starts `wovenetd run --config` and waits (up to
    /// 20 s) for its `site started` log line. Panics with the logs if it exits or times out.
    pub async fn spawn(self) -> Site {
        let mut site = self.prepare();
        site.start().await;
        site
    }

    /// Like [`Self::spawn`] but does not start the process (use [`Site::start`]).
    pub fn prepare(mut self) -> Site {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wovenet-e2e-{}-", self.name))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create tempdir: {e}"));
        let config = self.document(dir.path());
        let config_path = write_yaml(&dir.path().join(CONFIG_FILE), &config);
        let binary = self
            .binary
            .clone()
            .unwrap_or_else(|| crate::binary::wovenetd().to_path_buf());
        Site {
            name: self.name.clone(),
            config_path,
            config,
            binary,
            sockets: self.sockets.clone(),
            dir,
            process: None,
            runs: 0,
            keep_on_panic: self.keep_on_panic,
            netns: self.netns.clone(),
            env: self.env.clone(),
        }
    }
}

impl Site {
    /// Starts describing a site called `name`.
    pub fn builder(name: &str) -> SiteBuilder {
        SiteBuilder::new(name)
    }

    /// The site name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The site's tempdir (config, logs; a good place for unix sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The site's identity key file (created by the daemon on first start,
    /// beside the state file: `site.identity.key`).
    pub fn identity_file(&self) -> PathBuf {
        self.dir().join("site.identity.key")
    }

    /// Gives this site (not running) the identity of `other`: a copy of its
    /// key file, as when a site's config directory is copied whole.
    pub fn copy_identity_from(&self, other: &Self) {
        assert!(
            self.process.is_none(),
            "site {}: copy_identity_from() while running",
            self.name
        );
        std::fs::copy(other.identity_file(), self.identity_file()).unwrap_or_else(|e| {
            panic!(
                "cannot copy {} to {}: {e}",
                other.identity_file().display(),
                self.identity_file().display()
            )
        });
    }

    /// The state file the daemon keeps beside its config (`site.state.json`: live app
    /// changes and `knownSites`, the pinned identities of other sites).
    pub fn state_file(&self) -> PathBuf {
        self.dir().join("site.state.json")
    }

    /// `knownSites` of the state file as `(siteName, identity)`, in file order; empty when
    /// there is no state file yet. Panics if the file is not JSON.
    pub fn known_sites(&self) -> Vec<(String, String)> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()));
        doc["knownSites"]
            .as_array()
            .map(|known| {
                known
                    .iter()
                    .map(|k| {
                        let field = |name: &str| {
                            k[name].as_str().map(str::to_owned).unwrap_or_else(|| {
                                panic!("{}: knownSites entry without {name}: {k}", path.display())
                            })
                        };
                        (field("siteName"), field("identity"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The identity fingerprint `wovenetd identity --config` prints for this site (it creates
    /// the key if the site never ran). Panics with the output if the command fails or names
    /// another site.
    pub fn printed_identity(&self) -> String {
        let out = crate::binary::identity_command(&self.config_path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        match (out.status.success(), line("siteName:"), line("identity:")) {
            (true, Some(name), Some(identity)) if name == self.name => identity,
            _ => panic!(
                "site {}: wovenetd identity --config {} ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
                self.name,
                self.config_path.display(),
                process::describe(out.status)
            ),
        }
    }

    /// `unix:<dir>/<file>`, a unix socket path inside the site's tempdir.
    pub fn unix_sock(&self, file: &str) -> Sock {
        Sock::unix(self.dir().join(file))
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config document it runs with (as last written).
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// Edits the config document and writes it over the config file (a running daemon
    /// reads it on its next reload or start).
    pub fn edit_config(&mut self, edit: impl FnOnce(&mut Value)) {
        edit(&mut self.config);
        write_yaml(&self.config_path, &self.config);
    }

    /// Sends SIGHUP (what `systemctl reload` sends): the daemon reloads its config file.
    pub fn hangup(&mut self) {
        assert!(
            self.is_running(),
            "site {}: hangup() but it is not running\n{}",
            self.name,
            self.diag()
        );
        if let Some(p) = self.process.as_mut() {
            p.signal(libc::SIGHUP);
        }
    }

    /// The network namespace it runs in (`None`: the test's own).
    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_ref()
    }

    /// UDP ports of its `localSockets`.
    pub fn socket_ports(&self) -> &[u16] {
        &self.sockets
    }

    /// The control socket path written in its config.
    pub fn control_socket(&self) -> PathBuf {
        self.dir().join(CONTROL_SOCKET)
    }

    /// The current run's JSON log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join(LOG_FILE)
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir().join("stdout.txt")
    }

    pub(crate) fn stderr_path(&self) -> PathBuf {
        self.dir().join("stderr.txt")
    }

    /// Process id of the current run.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
    }

    /// Moves the previous run's log/stdout/stderr aside (`*.N`) so waits only see this run.
    fn rotate(&self) {
        for p in [self.log_path(), self.stdout_path(), self.stderr_path()] {
            if p.exists() {
                let mut old = p.clone().into_os_string();
                old.push(format!(".{}", self.runs));
                let _ = std::fs::rename(&p, old);
            }
        }
    }

    /// Starts the process (it must not be running) and waits for `site started`.
    pub async fn start(&mut self) {
        assert!(
            !self.is_running(),
            "site {}: start() while already running",
            self.name
        );
        self.rotate();
        self.runs += 1;
        let runtime_dir = self.dir().as_os_str().to_owned();
        let control = self.control_socket().into_os_string();
        let mut env: Vec<(&str, Option<&OsStr>)> = vec![
            // Per-site defaults for anything the daemon puts under the runtime dir.
            ("XDG_RUNTIME_DIR", Some(&runtime_dir)),
            ("WOVENET_CONTROL_SOCKET", Some(&control)),
            // A developer's WOVENET_LOG would override the config's level and format.
            ("WOVENET_LOG", None),
            // Test detectors listen on loopback: no proxy may stand in between.
            ("HTTP_PROXY", None),
            ("http_proxy", None),
            ("HTTPS_PROXY", None),
            ("https_proxy", None),
            ("ALL_PROXY", None),
            ("all_proxy", None),
        ];
        env.extend(
            self.env
                .iter()
                .map(|(k, v)| (k.as_str(), Some(OsStr::new(v.as_str())))),
        );
        let args = [
            OsStr::new("run"),
            OsStr::new("--config"),
            self.config_path.as_os_str(),
        ];
        let (stdout, stderr) = (self.stdout_path(), self.stderr_path());
        let p = match &self.netns {
            None => Process::spawn(&self.binary, args, &env, &stdout, &stderr),
            Some(ns) => {
                let (ip, all) = ns.wrap(&self.binary, args);
                Process::spawn(&ip, all, &env, &stdout, &stderr)
            }
        }
        .unwrap_or_else(|e| {
            panic!(
                "site {}: cannot start {}: {e}",
                self.name,
                self.binary.display()
            )
        });
        self.process = Some(p);
        self.wait_log("site started", WAIT).await;
    }

    /// SIGKILL (no clean shutdown) and reap.
    pub fn kill(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.kill();
        }
    }

    /// SIGTERM and wait up to `timeout` for exit; `None` if it did not exit (still running).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let p = self.process.as_mut()?;
        p.signal(libc::SIGTERM);
        p.wait_exit(timeout).await
    }

    /// SIGTERM and assert a clean exit (code 0) within [`STOP_TIMEOUT`].
    pub async fn stop(&mut self) {
        self.stop_within(STOP_TIMEOUT).await;
    }

    /// SIGTERM and assert a clean exit (code 0) within `timeout`; kills it if it lingers.
    pub async fn stop_within(&mut self, timeout: Duration) {
        assert!(
            self.process.is_some(),
            "site {}: stop() but it was never started",
            self.name
        );
        match self.terminate(timeout).await {
            Some(s) if s.code() == Some(0) => {}
            Some(s) => panic!(
                "site {}: expected exit code 0 after SIGTERM, got {}\n{}",
                self.name,
                process::describe(s),
                self.diag()
            ),
            None => {
                let d = self.diag();
                self.kill();
                panic!(
                    "site {}: still running {timeout:?} after SIGTERM (killed it now)\n{d}",
                    self.name
                )
            }
        }
    }

    /// Clean stop, then start again with the same config and ports.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// The current run's raw log text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The current run's parsed log lines.
    pub fn log_lines(&self) -> Vec<LogLine> {
        log::parse(&self.log())
    }

    /// Lines of the current run whose message contains `message` and whose fields match.
    pub fn find_log(&self, message: &str, fields: &[(&str, &str)]) -> Vec<LogLine> {
        self.log_lines()
            .into_iter()
            .filter(|l| l.matches(message, fields))
            .collect()
    }

    /// How many lines of the current run match (see [`Self::find_log`]).
    pub fn count_log(&self, message: &str, fields: &[(&str, &str)]) -> usize {
        self.find_log(message, fields).len()
    }

    /// Waits for a line whose message contains `message`; panics with the log on timeout or if
    /// the process exits first.
    pub async fn wait_log(&self, message: &str, timeout: Duration) -> LogLine {
        self.wait_log_with(message, &[], timeout).await
    }

    /// Waits for a line whose message contains `message` and whose fields equal `fields`.
    pub async fn wait_log_with(
        &self,
        message: &str,
        fields: &[(&str, &str)],
        timeout: Duration,
    ) -> LogLine {
        self.wait_log_count(message, fields, 1, timeout)
            .await
            .pop()
            .expect("count >= 1")
    }

    /// Waits until at least `count` matching lines exist; returns them all.
    pub async fn wait_log_count(
        &self,
        message: &str,
        fields: &[(&str, &str)],
        count: usize,
        timeout: Duration,
    ) -> Vec<LogLine> {
        // Stops early, with the status, when the process exits first.
        let outcome = crate::wait::poll(timeout, || {
            let found = self.find_log(message, fields);
            let done = if found.len() >= count {
                Some(Ok(found))
            } else {
                self.exit_status().map(Err)
            };
            async move { done }
        })
        .await;
        match outcome {
            Some(Ok(found)) => found,
            other => {
                let why = match other {
                    Some(Err(s)) => format!("the process exited ({})", process::describe(s)),
                    _ => format!("{timeout:?} passed"),
                };
                panic!(
                    "site {}: expected {count} log line(s) with message containing {message:?} and fields \
                     {fields:?}, found {} before {why}\n{}",
                    self.name,
                    self.find_log(message, fields).len(),
                    self.diag()
                );
            }
        }
    }

    /// The exit status if the current run has exited (probed without reaping).
    fn exit_status(&self) -> Option<ExitStatus> {
        self.process.as_ref()?.peek_status()
    }

    /// Log tail, stderr (and stdout, if any) tail and process state, for panic messages.
    pub fn diag(&self) -> String {
        let mut state = match (self.pid(), self.exit_status()) {
            (None, _) => "never started".to_owned(),
            (Some(pid), None) => format!("pid {pid} running"),
            (Some(pid), Some(s)) => format!("pid {pid} exited ({})", process::describe(s)),
        };
        if let Some(ns) = &self.netns {
            state.push_str(&format!(" in netns {}", ns.name()));
        }
        let mut out = format!(
            "--- site {} ({state}, run {}, config {}) log tail:\n{}--- site {} stderr tail:\n{}",
            self.name,
            self.runs,
            self.config_path.display(),
            log::tail(&self.log(), TAIL_LINES),
            self.name,
            file_tail(&self.stderr_path(), 20),
        );
        let stdout = file_tail(&self.stdout_path(), 20);
        if !stdout.is_empty() {
            out.push_str(&format!("--- site {} stdout tail:\n{stdout}", self.name));
        }
        out
    }

    /// Retries echo round trips through `local` (a remote app's local socket on this site)
    /// until one works; panics with this site's log after `timeout`.
    pub async fn wait_forward(&self, local: &Sock, timeout: Duration) -> Duration {
        wait_forward(local, timeout, &[self]).await
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && self.keep_on_panic {
            self.dir.disable_cleanup(true);
            eprintln!(
                "wovenet-e2e: kept files of site {} in {}",
                self.name,
                self.dir().display()
            );
        }
    }
}

/// The diagnostics of several sites, one after another.
pub fn diag(sites: &[&Site]) -> String {
    sites
        .iter()
        .map(|s| s.diag())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Retries echo round trips through `local` until one succeeds; panics after `timeout` with
/// the last error and the logs of `sites`. Returns how long it took.
pub async fn wait_forward(local: &Sock, timeout: Duration, sites: &[&Site]) -> Duration {
    match client::try_wait_forward(local, timeout).await {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{}", diag(sites)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for wovenetd that speaks just enough of the contract (`run --config FILE`,
    /// JSON log to `logger.file`, clean exit on SIGTERM) to exercise the harness. Site names
    /// pick misbehaviours: `crash` exits at once, `stubborn` ignores SIGTERM.
    const FAKE: &str = r#"#!/bin/bash
cfg="$3"
name=$(sed -n 's/^siteName: *//p' "$cfg" | tr -d "'\"")
log=$(sed -n 's/^ *file: *//p' "$cfg" | tr -d "'\"")
if [ "$name" = crash ]; then echo "fake: bad things" >&2; exit 3; fi
if [ "$name" = stubborn ]; then trap '' TERM; else trap 'echo "{\"fields\":{\"message\":\"site stopping\"}}" >> "$log"; exit 0' TERM; fi
echo "{\"level\":\"INFO\",\"fields\":{\"message\":\"site started\"},\"span\":{\"site.name\":\"$name\"}}" >> "$log"
echo "{\"level\":\"DEBUG\",\"message\":\"channel up\",\"peer.site\":\"b\",\"channel.id\":1}" >> "$log"
while true; do sleep 0.05 & wait $!; done
"#;

    fn fake(dir: &Path) -> PathBuf {
        let p = dir.join("fake-wovenetd");
        std::fs::write(&p, FAKE).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn builder(name: &str, bin: &Path) -> SiteBuilder {
        Site::builder(name)
            .topic(random_topic())
            .broker("mqtt://127.0.0.1:1")
            .binary(bin)
            .keep_files_on_panic(false)
    }

    #[tokio::test]
    async fn site_starts_logs_stops_restarts_and_is_killed() {
        let bins = tempfile::tempdir().unwrap();
        let mut a = builder("a", &fake(bins.path())).spawn().await;
        assert!(a.is_running());
        assert_eq!(a.count_log("site started", &[("site.name", "a")]), 1);
        let up = a
            .wait_log_with("channel up", &[("peer.site", "b")], WAIT)
            .await;
        assert_eq!(up.field("channel.id"), Some("1"));
        assert!(a.config_path().is_file());
        assert_eq!(a.config()["siteName"], "a");
        assert_eq!(a.socket_ports().len(), 1);

        a.restart().await;
        assert_eq!(
            a.count_log("site started", &[]),
            1,
            "the new run's log starts fresh"
        );
        let old = std::fs::read_to_string(a.dir().join("site.log.1")).unwrap();
        assert!(
            old.contains("site stopping"),
            "previous run kept aside: {old}"
        );

        a.kill();
        assert!(!a.is_running());
        a.start().await;
        assert!(a.is_running());
        a.stop().await;
        assert!(a.diag().contains("exited (exit code 0)"), "{}", a.diag());
    }

    #[tokio::test]
    #[should_panic(expected = "the process exited (exit code 3)")]
    async fn a_site_that_exits_at_start_fails_with_its_stderr() {
        let bins = tempfile::tempdir().unwrap();
        let _ = builder("crash", &fake(bins.path())).spawn().await;
    }

    #[tokio::test]
    async fn diag_shows_log_tail_and_stderr() {
        let bins = tempfile::tempdir().unwrap();
        let mut site = builder("crash", &fake(bins.path())).prepare();
        let err = tokio::spawn(async move { site.start().await })
            .await
            .unwrap_err();
        let msg = err.into_panic().downcast::<String>().unwrap();
        assert!(msg.contains("stderr tail:\n  fake: bad things"), "{msg}");
        assert!(
            msg.contains("\"site started\""),
            "says what it waited for: {msg}"
        );
    }

    #[tokio::test]
    #[should_panic(expected = "still running 500ms after SIGTERM")]
    async fn a_site_ignoring_sigterm_fails_stop() {
        let bins = tempfile::tempdir().unwrap();
        let mut s = builder("stubborn", &fake(bins.path())).spawn().await;
        s.stop_within(Duration::from_millis(500)).await;
    }
}
