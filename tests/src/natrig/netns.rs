//! One network namespace of the NAT rig: its name, creating and deleting it, running tools in it
//! (`ip -n`, `ip netns exec`), making sockets inside it from the test process (a thread that
//! `setns(2)`s into it; a socket stays in the namespace it was made in), and the sweep of
//! namespaces left behind by test processes that died. Knows nothing about NATs or topology.
//!
//! Names are `wnr<creator pid, hex>-<rig id, 2 hex><role>` (at most 15 bytes, like interface
//! names), so a later process can tell whose a namespace is and whether its creator still lives.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Every rig namespace name starts with this.
pub const PREFIX: &str = "wnr";

/// Linux limit for interface names (IFNAMSIZ - 1); the rig keeps namespace names within it too.
pub const MAX_NAME: usize = 15;

/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";

/// A tool binary, looked up on `PATH` and in the sbin directories (Debian puts `ip`, `nft`
/// and `conntrack` there, outside a normal user's `PATH`).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn ip_binary() -> PathBuf {
    tool("ip").unwrap_or_else(|| panic!("the NAT rig needs `ip` (apt-get install iproute2)"))
}

/// The name of a rig namespace: `wnr<pid hex>-<rig hex 2><role>`. Panics if it would not fit
/// [`MAX_NAME`] (a harness bug: roles are at most 3 bytes).
pub fn name(pid: u32, rig: u8, role: &str) -> String {
    let n = format!("{PREFIX}{pid:x}-{rig:02x}{role}");
    assert!(
        n.len() <= MAX_NAME,
        "namespace name {n:?} is longer than {MAX_NAME} bytes"
    );
    n
}

/// The creator pid encoded in a rig namespace name, `None` for any other name.
pub fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    u32::from_str_radix(pid, 16).ok()
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only probes for existence; no signal is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Runs `cmd`, returning its output when it exits 0, else a message with its stderr.
fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)
            .map_err(|e| format!("cannot write to {shown}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot wait for {shown}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A handle on a named network namespace (cheap to clone; the [`crate::natrig::Rig`] that made
/// it deletes it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME`, loopback up, IPv6 off (the rig is IPv4 only, so nothing solicits
    /// routers or runs DAD in it).
    pub(crate) fn create(name: String) -> Self {
        let mut cmd = Command::new(ip_binary());
        cmd.args(["netns", "add", &name]);
        run(cmd, None).unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // Best effort: a kernel booted without IPv6 has no such files, and no IPv6 either.
        for key in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
            let _ = ns.run(|| std::fs::write(&path, "1"));
        }
        ns
    }

    /// Its name (what `ip netns list` shows).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `ip netns` still knows it.
    pub fn exists(&self) -> bool {
        Path::new(NETNS_DIR).join(&self.name).exists()
    }

    /// `ip -n NAME ARGS…`; panics with ip's stderr if it fails. Returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(ip_binary());
        cmd.args(["-n", &self.name]).args(args);
        let out = run(cmd, None).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n NAME -batch -` with one command per line (one process for many changes).
    pub fn ip_batch(&self, lines: &[String]) {
        let mut cmd = Command::new(ip_binary());
        cmd.args(["-n", &self.name, "-batch", "-"]);
        let script = lines.join("\n") + "\n";
        run(cmd, Some(script.as_bytes())).unwrap_or_else(|e| panic!("{e}\nbatch:\n{script}"));
    }

    /// The command line that runs `program args` inside this namespace
    /// (`ip netns exec NAME program args…`), for [`crate::process::Process::spawn`].
    pub fn wrap<S: AsRef<OsStr>>(
        &self,
        program: &Path,
        args: impl IntoIterator<Item = S>,
    ) -> (PathBuf, Vec<OsString>) {
        let mut all: Vec<OsString> = vec!["netns".into(), "exec".into(), self.name.clone().into()];
        all.push(program.as_os_str().to_owned());
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        (ip_binary(), all)
    }

    /// Runs `program args…` inside this namespace to completion; `Err` carries its stderr.
    pub fn try_exec(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output, String> {
        let (ip, all) = self.wrap(program, args);
        let mut cmd = Command::new(ip);
        cmd.args(all);
        run(cmd, stdin)
    }

    /// Like [`Self::try_exec`], panicking on failure; returns stdout.
    pub fn exec(&self, program: &Path, args: &[&str]) -> String {
        let out = self
            .try_exec(program, args, None)
            .unwrap_or_else(|e| panic!("in namespace {}: {e}", self.name));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result
    /// (re-raising its panic). Sockets made by `f` belong to this namespace for their whole
    /// life, whichever thread uses them later.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let handle = Path::new(NETNS_DIR).join(&self.name);
        std::thread::scope(|s| {
            let joined = s
                .spawn(|| {
                    let file = File::open(&handle).unwrap_or_else(|e| {
                        panic!("cannot open namespace handle {}: {e}", handle.display())
                    });
                    // SAFETY: setns on a valid descriptor affects only this thread; the thread
                    // ends right after `f`, so no other code runs in the namespace by accident.
                    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if r != 0 {
                        panic!(
                            "setns into {} failed: {} (needs root)",
                            self.name,
                            io::Error::last_os_error()
                        );
                    }
                    f()
                })
                .join();
            joined.unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Writes `value` to `/proc/sys/<key>` as seen from inside this namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = Path::new("/proc/sys").join(key);
        self.run(|| std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("{}: cannot set {}: {e}", self.name, path.display()));
    }

    /// A std UDP socket bound to `addr` inside this namespace (blocking mode).
    pub fn std_udp(&self, addr: SocketAddr) -> std::net::UdpSocket {
        self.run(|| std::net::UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("{}: cannot bind UDP {addr}: {e}", self.name))
    }

    /// A tokio UDP socket bound to `addr` inside this namespace (call from a runtime).
    pub fn udp(&self, addr: SocketAddr) -> tokio::net::UdpSocket {
        let s = self.std_udp(addr);
        s.set_nonblocking(true)
            .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
        tokio::net::UdpSocket::from_std(s).unwrap_or_else(|e| panic!("tokio UdpSocket: {e}"))
    }

    /// A tokio TCP listener on `addr` inside this namespace (call from a runtime).
    pub fn tcp_listener(&self, addr: SocketAddr) -> tokio::net::TcpListener {
        let l = self
            .run(|| std::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("{}: cannot listen on TCP {addr}: {e}", self.name));
        l.set_nonblocking(true)
            .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
        tokio::net::TcpListener::from_std(l).unwrap_or_else(|e| panic!("tokio TcpListener: {e}"))
    }

    /// Connects to `addr` over TCP from inside this namespace (the socket is made there, the
    /// connect is awaited on the runtime), giving up after `timeout`.
    pub async fn tcp_connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<tokio::net::TcpStream> {
        let domain = socket2::Domain::for_address(addr);
        let sock = self.run(|| {
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        })?;
        sock.set_nonblocking(true)?;
        let sock = tokio::net::TcpSocket::from_std_stream(sock.into());
        tokio::time::timeout(timeout, sock.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect {addr}")))?
    }

    /// Process ids running inside this namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        let mut cmd = Command::new(ip_binary());
        cmd.args(["netns", "pids", &self.name]);
        run(cmd, None)
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILLs what still runs inside (only processes the rig started can be there), then
    /// `ip netns del`. Never panics (it runs from `Drop`); says on stderr what it left.
    pub(crate) fn delete(&self) {
        for pid in self.pids() {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: plain kill(2) of a process inside a namespace this harness created.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let Some(ip) = tool("ip") else { return };
        let mut cmd = Command::new(ip);
        cmd.args(["netns", "del", &self.name]);
        if let Err(e) = run(cmd, None)
            && self.exists()
        {
            eprintln!("wovenet-e2e: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// Rig namespaces on this machine (`/run/netns/wnr*`), by name.
pub fn list() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| creator_pid(n).is_some())
        .collect();
    names.sort();
    names
}

/// Deletes rig namespaces whose creator is dead, or is this very process (`own_are_stale`:
/// true on a process's first rig, when none of its own can be live yet: the pid was reused).
/// Returns the names it deleted.
pub fn sweep(own_are_stale: bool) -> Vec<String> {
    let me = std::process::id();
    let stale: Vec<String> = list()
        .into_iter()
        .filter(|n| match creator_pid(n) {
            Some(pid) if pid == me => own_are_stale,
            Some(pid) => !alive(pid),
            None => false,
        })
        .collect();
    for n in &stale {
        Netns { name: n.clone() }.delete();
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_name_limits_and_carry_the_creator() {
        let longest = name(4_194_304, 0xff, "s0f");
        assert_eq!(longest, "wnr400000-ffs0f");
        assert!(longest.len() <= MAX_NAME);
        assert_eq!(creator_pid(&longest), Some(4_194_304));
        assert_eq!(creator_pid(&name(77, 3, "i")), Some(77));
        assert_eq!(creator_pid("docker0"), None);
        assert_eq!(creator_pid("wnrzz-01i"), None);
        assert_eq!(creator_pid("wnr12"), None);
    }

    #[test]
    #[should_panic(expected = "longer than 15 bytes")]
    fn a_name_over_the_limit_is_a_harness_bug() {
        name(4_194_304, 1, "toolong");
    }

    #[test]
    fn the_test_process_itself_is_alive_and_a_huge_pid_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn wrap_runs_the_program_through_ip_netns_exec() {
        if tool("ip").is_none() {
            return;
        }
        let ns = Netns {
            name: "wnr1-00v".into(),
        };
        let (ip, args) = ns.wrap(Path::new("/usr/bin/turnserver"), ["-n", "--no-cli"]);
        assert!(ip.ends_with("ip"));
        assert_eq!(
            args,
            [
                "netns",
                "exec",
                "wnr1-00v",
                "/usr/bin/turnserver",
                "-n",
                "--no-cli"
            ]
            .map(OsString::from)
        );
    }
}
