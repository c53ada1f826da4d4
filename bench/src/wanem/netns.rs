//! Network namespaces owned by this process: created with `ip netns add`, deleted on drop
//! (which also destroys the devices inside), named after the owning pid so a later run can
//! sweep the leftovers of a run that was killed. Also runs code or commands inside one.
//!
//! Knows nothing about the emulator or wovenet; never touches namespaces it did not name.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::WanemError;

/// Prefix of every namespace (and device) this suite creates.
pub const PREFIX: &str = "wnb";

/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";

/// A short name unique on this machine while this process lives: prefix, pid, counter.
pub fn unique_tag() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{:x}x{n:x}", std::process::id())
}

/// Runs `ip ARGS`, turning a failure into an error carrying its stderr.
pub fn ip(args: &[&str]) -> Result<(), WanemError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| WanemError::Command {
            command: format!("ip {}", args.join(" ")),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(WanemError::Command {
            command: format!("ip {}", args.join(" ")),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A network namespace that exists while this value lives.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (which must start with [`PREFIX`] and the tag from
    /// [`unique_tag`]) and brings its loopback up.
    pub fn create(name: &str) -> Result<Self, WanemError> {
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), WanemError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`);
    /// `ip` execs the program, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a fresh thread inside this namespace; see [`run_in`].
    pub fn run<T, F>(&self, f: F) -> Result<T, WanemError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        run_in(&self.name, f)
    }
}

/// Runs `f` on a fresh thread that has entered namespace `name`, and returns its result.
///
/// A socket belongs to the namespace it was created in for its whole life, so `f`
/// typically creates sockets that the caller then uses from any thread. The thread is
/// thrown away afterwards, so no other code ever runs in the wrong namespace.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T, WanemError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let path = PathBuf::from(NETNS_DIR).join(name);
    let handle = File::open(&path).map_err(|e| WanemError::Command {
        command: format!("open {}", path.display()),
        reason: e.to_string(),
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd only changes this thread's network
            // namespace; the thread ends when `f` returns.
            let r = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            if r != 0 {
                return Err(WanemError::Command {
                    command: format!("setns {name}"),
                    reason: std::io::Error::last_os_error().to_string(),
                });
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("wanem: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// The pid encoded in one of our namespace names (`wnb<pid hex>x<n>…`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    u32::from_str_radix(pid, 16).ok()
}

/// Deletes namespaces left by runs of this suite whose process no longer exists (a run
/// killed with SIGKILL cannot clean up after itself). Returns the names deleted.
pub fn sweep_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut deleted = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if !alive(pid) && ip(&["netns", "del", &name]).is_ok() {
            deleted.push(name);
        }
    }
    deleted
}

/// Whether process `pid` exists and is not a zombie (a killed run stays a zombie until
/// its parent reaps it, but can no longer clean up).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    proc_state(&stat).is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

/// The state letter of a `/proc/PID/stat` line (the first field after the command name,
/// which is in parentheses and may itself contain spaces or parentheses).
fn proc_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unique_short_and_name_their_owner() {
        let a = unique_tag();
        let b = unique_tag();
        assert_ne!(a, b);
        // Device names are the tag plus one letter and must fit IFNAMSIZ-1 = 15 bytes.
        assert!(a.len() < 15, "{a}");
        assert_eq!(owner_pid(&format!("{a}-a")), Some(std::process::id()));
    }

    #[test]
    fn zombies_count_as_gone() {
        assert_eq!(proc_state("123 (a b) c) Z 1 2"), Some('Z'));
        assert_eq!(proc_state("123 (wovenet-bench) S 1 2"), Some('S'));
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn foreign_names_have_no_owner() {
        assert_eq!(owner_pid("blue"), None);
        assert_eq!(owner_pid("wnbzzx1"), None);
        assert_eq!(owner_pid("wnb1f"), None);
    }
}
