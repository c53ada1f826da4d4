//! The control socket file: where it lives, whether its directory can be
//! trusted, whether another daemon owns it, binding it with mode 0660 so that
//! it is never reachable with a wider mode, and removing it when the daemon
//! stops.
//!
//! Careful the way tailscale's `safesocket` is: the directory must be one no
//! other user can have created or can swap ([`trust`]); before binding, the
//! path is dialled, and a daemon that answers is never displaced, while a file
//! nobody answers on (left by a crash) is replaced. The socket is bound inside
//! a fresh private (0700) directory, given its final mode, and only then
//! hard-linked to its path, so no one can connect to it while it has the
//! umask's mode. Only a socket file is ever removed, and on exit only the one
//! this process created. Every error names the path. This module knows
//! nothing of gRPC.

pub mod trust;

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{debug, info, warn};
use wovenet_proto::paths;

pub use trust::{Problem as DirProblem, VerifyError};

/// Mode of the socket file: owner and group may connect, nobody else.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of directories created for the socket. To let a group use the
/// socket, create its directory beforehand with that group and mode 0750.
pub const DIR_MODE: u32 = 0o700;

/// Why the control socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A daemon already answers on the path.
    #[error("another wovenetd is listening on {0}")]
    InUse(PathBuf),
    /// The path exists and is not a socket: refusing to delete it.
    #[error("{0} exists and is not a socket; remove it or choose another control.socket")]
    NotASocket(PathBuf),
    /// The socket's directory, or one above it, is not safe from other users.
    #[error("control socket {}: directory {reason}; {}", socket.display(), advice(reason, *euid))]
    UntrustedDir {
        /// The socket path.
        socket: PathBuf,
        /// Which directory and what is wrong with it.
        reason: VerifyError,
        /// The user the daemon runs as.
        euid: u32,
    },
    /// A filesystem or socket operation failed.
    #[error("control socket {path}: cannot {action}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done (`bind`, `create the directory`, …).
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// What to do about an untrusted directory.
fn advice(reason: &VerifyError, euid: u32) -> String {
    const ELSEWHERE: &str = "choose another socket path (control.socket, --control-socket or \
                             WOVENET_CONTROL_SOCKET)";
    match reason {
        VerifyError::Untrusted {
            path, own: true, ..
        } => {
            let p = path.display();
            format!(
                "another user could have created it or could replace the socket. Make it yours \
                 and private (chown {euid} '{p}' && chmod 0700 '{p}'), remove it so wovenetd \
                 creates it, or {ELSEWHERE}"
            )
        }
        VerifyError::Untrusted { own: false, .. } => format!(
            "another user could replace the directories below it and the socket. Fix it, or \
             {ELSEWHERE} whose every directory is owned by root or uid {euid} and not writable \
             by others"
        ),
        VerifyError::Io { .. } => ELSEWHERE.to_owned(),
    }
}

/// Picks the control socket path: `--control-socket` (`flag`), else
/// `control.socket` from the config, else `$WOVENET_CONTROL_SOCKET` (`env`),
/// else `<default dir>/<site>.sock`. Empty values count as unset.
pub fn resolve(
    flag: Option<&Path>,
    config: Option<&Path>,
    env: Option<&Path>,
    site: &str,
) -> PathBuf {
    [flag, config, env]
        .into_iter()
        .flatten()
        .find(|p| !p.as_os_str().is_empty())
        .map_or_else(|| paths::default_socket_path(site), Path::to_path_buf)
}

/// A bound control socket. The file is removed when this (or the stream made
/// by [`Self::into_incoming`]) is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    guard: Guard,
}

impl ControlSocket {
    /// Binds `path`: creates missing parent directories (mode 0700), refuses
    /// a directory another user could have created or could swap, refuses if
    /// a daemon answers there, replaces a stale socket file, and binds with
    /// mode 0660 (see the module docs). Needs a tokio runtime.
    pub async fn bind(path: &Path) -> Result<Self, SocketError> {
        let io = |action| {
            let path = path.to_path_buf();
            move |source| SocketError::Io {
                path,
                action,
                source,
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io("create the directory"))?;
        // Checked after creating, so a directory someone else slipped in
        // first is caught too.
        let euid = trust::euid();
        trust::verify(dir, euid).map_err(|reason| SocketError::UntrustedDir {
            socket: path.to_path_buf(),
            reason,
            euid,
        })?;
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketError::NotASocket(path.to_path_buf()));
            }
            Ok(_) => match UnixStream::connect(path).await {
                Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
                // Nobody listens: a crashed daemon's leftover, which would
                // make the final link fail.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    info!(path = %path.display(), "removing stale control socket");
                    fs::remove_file(path).map_err(io("remove the stale socket"))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // E.g. permission denied: someone else's socket, maybe live.
                Err(e) => return Err(io("probe the existing socket")(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspect the path")(e)),
        }
        let listener = Hidden::bind(dir)
            .and_then(|h| h.publish(path))
            .map_err(|(action, e)| match e.kind() {
                // Another daemon linked its socket between our probe and now.
                io::ErrorKind::AlreadyExists => SocketError::InUse(path.to_path_buf()),
                _ => io(action)(e),
            })?;
        let guard = Guard::new(path);
        listener
            .set_nonblocking(true)
            .map_err(io("configure the listener"))?;
        let listener = UnixListener::from_std(listener).map_err(io("register the listener"))?;
        Ok(Self { listener, guard })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.guard.path
    }

    /// The accepted connections, as a stream for tonic; owns the file, so it
    /// is removed as soon as the server stops accepting.
    pub fn into_incoming(self) -> Incoming {
        Incoming {
            inner: UnixListenerStream::new(self.listener),
            _guard: self.guard,
        }
    }
}

/// A socket bound inside a private directory, not yet reachable at its path.
struct Hidden {
    /// Mode 0700, so whatever the socket file's mode, only we can reach it.
    private: tempfile::TempDir,
    file: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

type Step = (&'static str, io::Error);

impl Hidden {
    /// Binds a socket in a new private directory inside `dir` (short names:
    /// a unix socket path is limited to 107 bytes) and sets its final mode.
    fn bind(dir: &Path) -> Result<Self, Step> {
        let private = tempfile::Builder::new()
            .prefix(".wn")
            .rand_bytes(6)
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(dir)
            .map_err(|e| ("create a private directory for", e))?;
        let file = private.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&file).map_err(|e| ("bind", e))?;
        fs::set_permissions(&file, Permissions::from_mode(SOCKET_MODE))
            .map_err(|e| ("set mode 0660 on", e))?;
        Ok(Self {
            private,
            file,
            listener,
        })
    }

    /// Makes the socket reachable at `path`, already with its final mode:
    /// a hard link, which never replaces an existing file. The private
    /// directory is removed.
    fn publish(self, path: &Path) -> Result<std::os::unix::net::UnixListener, Step> {
        fs::hard_link(&self.file, path).map_err(|e| ("link the socket to", e))?;
        if let Err(e) = self.private.close() {
            warn!(path = %path.display(), error = %e, "cannot remove the private bind directory");
        }
        Ok(self.listener)
    }
}

/// Accepted control connections; dropping it closes the listener and
/// removes the socket file.
#[derive(Debug)]
pub struct Incoming {
    inner: UnixListenerStream,
    _guard: Guard,
}

impl Stream for Incoming {
    type Item = io::Result<UnixStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Removes the socket file on drop, unless it is no longer the one we bound
/// (a later daemon may have replaced it after we stopped answering).
#[derive(Debug)]
struct Guard {
    path: PathBuf,
    /// (device, inode) of the file we created, if it could be read.
    id: Option<(u64, u64)>,
}

impl Guard {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            id: fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino())),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let current = fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_none() || current != self.id {
            debug!(path = %self.path.display(), "control socket already gone or replaced; left alone");
            return;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => debug!(path = %self.path.display(), "control socket removed"),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot remove control socket");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_config_beats_env_beats_default() {
        let (f, c, e) = (Path::new("/f"), Path::new("/c"), Path::new("/e"));
        assert_eq!(resolve(Some(f), Some(c), Some(e), "s"), f);
        assert_eq!(resolve(None, Some(c), Some(e), "s"), c);
        assert_eq!(resolve(Some(Path::new("")), Some(c), Some(e), "s"), c);
        assert_eq!(resolve(None, None, Some(e), "s"), e);
        assert_eq!(
            resolve(None, None, Some(Path::new("")), "site9"),
            paths::default_socket_path("site9")
        );
    }

    /// Whether a test needing root can run; fails instead of skipping when
    /// `WOVENET_REQUIRE_ROOT` is set (CI).
    fn root_or_skip() -> bool {
        if trust::euid() == 0 {
            return true;
        }
        assert!(
            std::env::var_os("WOVENET_REQUIRE_ROOT").is_none(),
            "this test needs root (WOVENET_REQUIRE_ROOT is set)"
        );
        eprintln!("skipping: needs root");
        false
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("lstat").mode() & 0o7777
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, Permissions::from_mode(mode)).expect("chmod");
    }

    /// Entries of `dir` other than `keep`.
    fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
        fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn bind_sets_mode_0660_creates_dirs_and_removes_the_file_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/ctl.sock");
        let sock = ControlSocket::bind(&path).await.expect("bind");
        let meta = fs::metadata(&path).expect("socket file");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
        assert_eq!(mode(&dir.path().join("a")), DIR_MODE, "created private");
        assert_eq!(mode(&dir.path().join("a/b")), DIR_MODE);
        assert_eq!(
            leftovers(&dir.path().join("a/b"), &["ctl.sock"]),
            Vec::<String>::new(),
            "the private bind directory is gone"
        );
        assert_eq!(sock.path(), path);
        UnixStream::connect(&path).await.expect("connect");
        drop(sock.into_incoming());
        assert!(!path.exists(), "file removed when the listener goes");
    }

    #[tokio::test]
    async fn a_live_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let _first = ControlSocket::bind(&path).await.expect("bind");
        let err = ControlSocket::bind(&path).await.expect_err("second bind");
        assert!(matches!(err, SocketError::InUse(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!("another wovenetd is listening on {}", path.display())
        );
        UnixStream::connect(&path)
            .await
            .expect("first still answers");
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        // A bound-then-dropped std listener leaves its file behind, like a crash.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("std bind"));
        assert!(path.exists());
        let sock = ControlSocket::bind(&path).await.expect("rebind");
        UnixStream::connect(sock.path()).await.expect("connect");
    }

    #[tokio::test]
    async fn a_regular_file_is_never_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        fs::write(&path, "precious").expect("write");
        let err = ControlSocket::bind(&path).await.expect_err("not a socket");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(fs::read_to_string(&path).expect("kept"), "precious");
    }

    #[tokio::test]
    async fn a_replaced_file_is_not_removed_by_the_old_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let old = ControlSocket::bind(&path).await.expect("bind");
        fs::remove_file(&path).expect("rm");
        let new = ControlSocket::bind(&path).await.expect("bind again");
        drop(old);
        assert!(path.exists(), "the newer daemon's socket survives");
        drop(new);
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_socket_file_never_has_a_wider_mode_than_0660() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let stop = Arc::new(AtomicBool::new(false));
        // Stats the path as fast as it can while sockets come and go.
        let watcher = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut modes, mut seen) = (std::collections::BTreeSet::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(m) = fs::symlink_metadata(&path) {
                        modes.insert(m.mode() & 0o7777);
                        seen += 1;
                    }
                }
                (modes, seen)
            })
        };
        for _ in 0..500 {
            drop(ControlSocket::bind(&path).await.expect("bind"));
        }
        stop.store(true, Ordering::Relaxed);
        let (modes, seen) = watcher.join().expect("watcher");
        assert!(seen > 0, "the watcher never saw the socket");
        assert_eq!(
            modes
                .into_iter()
                .map(|m| format!("{m:o}"))
                .collect::<Vec<_>>(),
            ["660"],
            "modes seen at {}",
            path.display()
        );
        assert_eq!(leftovers(dir.path(), &[]), Vec::<String>::new());
    }

    #[test]
    fn before_it_is_published_the_socket_sits_in_a_private_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        chmod(dir.path(), 0o755);
        let path = dir.path().join("ctl.sock");
        let hidden = Hidden::bind(dir.path()).expect("bind hidden");
        // Only the owner can search a 0700 directory, so nobody else can
        // reach the socket inside whatever its own mode.
        let private = hidden.file.parent().expect("parent");
        assert_eq!(mode(private), 0o700);
        assert_eq!(
            fs::symlink_metadata(private).expect("lstat").uid(),
            trust::euid()
        );
        assert_eq!(
            mode(&hidden.file),
            SOCKET_MODE,
            "final mode set before publishing"
        );
        assert!(!path.exists(), "not reachable at its path yet");
        let private = private.to_path_buf();
        let listener = hidden.publish(&path).expect("publish");
        assert_eq!(mode(&path), SOCKET_MODE);
        assert!(!private.exists(), "private directory removed");
        std::os::unix::net::UnixStream::connect(&path).expect("reachable through the link");
        drop(listener);

        // Publishing never replaces a file that appeared meanwhile.
        let other = Hidden::bind(dir.path()).expect("bind hidden");
        let err = other.publish(&path).map(drop).expect_err("taken");
        assert_eq!(err.1.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(leftovers(dir.path(), &["ctl.sock"]), Vec::<String>::new());
    }

    fn untrusted(err: &SocketError) -> (&Path, &DirProblem, bool) {
        match err {
            SocketError::UntrustedDir {
                reason: VerifyError::Untrusted { path, problem, own },
                ..
            } => (path, problem, *own),
            other => panic!("expected an untrusted directory, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_world_writable_directory_is_refused_naming_path_mode_and_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sockdir = dir.path().join("run");
        fs::create_dir(&sockdir).expect("mkdir");
        chmod(&sockdir, 0o777);
        let path = sockdir.join("ctl.sock");
        let err = ControlSocket::bind(&path).await.expect_err("refused");
        let (bad, problem, own) = untrusted(&err);
        assert_eq!((bad, own), (sockdir.as_path(), true));
        assert_eq!(*problem, DirProblem::Writable { mode: 0o777 });
        let msg = err.to_string();
        let expected = format!(
            "control socket {}: directory '{}' is writable by group or others (mode 0777); another user could have created it or could replace the socket. Make it yours and private (chown {} '{}' && chmod 0700 '{}')",
            path.display(),
            sockdir.display(),
            trust::euid(),
            sockdir.display(),
            sockdir.display()
        );
        assert!(msg.starts_with(&expected), "{msg}");
        assert!(
            msg.ends_with("(control.socket, --control-socket or WOVENET_CONTROL_SOCKET)"),
            "{msg}"
        );
        assert!(!path.exists(), "nothing bound");
    }

    #[tokio::test]
    async fn a_symlinked_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        chmod(&real, 0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let err = ControlSocket::bind(&link.join("ctl.sock"))
            .await
            .expect_err("refused");
        let (bad, problem, own) = untrusted(&err);
        assert_eq!(
            (bad, problem, own),
            (link.as_path(), &DirProblem::Symlink, true)
        );
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(!real.join("ctl.sock").exists());
    }

    #[tokio::test]
    async fn a_shared_directory_above_is_refused_unless_sticky() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mine/ctl.sock");
        chmod(dir.path(), 0o777);
        let err = ControlSocket::bind(&path).await.expect_err("refused");
        let (bad, problem, own) = untrusted(&err);
        assert_eq!((bad, own), (dir.path(), false));
        assert_eq!(*problem, DirProblem::WritableNotSticky { mode: 0o777 });
        assert!(err.to_string().contains("not writable by others"), "{err}");
        // Like /tmp: others can add entries but not rename ours.
        chmod(dir.path(), 0o1777);
        let sock = ControlSocket::bind(&path).await.expect("sticky is fine");
        drop(sock);
        chmod(dir.path(), 0o700);
    }

    #[tokio::test]
    async fn a_directory_owned_by_another_user_is_refused() {
        if !root_or_skip() {
            return;
        }
        // Like /tmp/wovenet-<uid> created in advance by someone else.
        let dir = tempfile::tempdir().expect("tempdir");
        let planted = dir.path().join("wovenet-0");
        fs::create_dir(&planted).expect("mkdir");
        chmod(&planted, 0o700);
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).expect("chown");
        let path = planted.join("site.sock");
        let err = ControlSocket::bind(&path).await.expect_err("refused");
        let (bad, problem, own) = untrusted(&err);
        assert_eq!((bad, own), (planted.as_path(), true));
        assert_eq!(
            *problem,
            DirProblem::NotOwned {
                found: 65534,
                expected: 0,
                mode: 0o700
            }
        );
        assert!(
            err.to_string().contains(&format!(
                "directory '{}' is owned by uid 65534 (mode 0700), not by uid 0, the user wovenetd runs as",
                planted.display()
            )),
            "{err}"
        );
        assert!(!path.exists(), "nothing bound in it");

        // Once it is ours and private, the same path works.
        std::os::unix::fs::chown(&planted, Some(0), Some(0)).expect("chown back");
        drop(ControlSocket::bind(&path).await.expect("bind"));
    }

    #[tokio::test]
    async fn the_default_per_user_directory_is_created_private() {
        // The shape of the /tmp/wovenet-<uid> fallback, in a sticky shared dir.
        let tmp = tempfile::tempdir().expect("tempdir");
        chmod(tmp.path(), 0o1777);
        let fallback = tmp.path().join(format!("wovenet-{}", trust::euid()));
        let path = fallback.join("site.sock");
        drop(ControlSocket::bind(&path).await.expect("bind"));
        assert_eq!(mode(&fallback), 0o700);
        // Reused when it is still private and ours...
        drop(ControlSocket::bind(&path).await.expect("bind again"));
        // ...refused when someone loosened it.
        chmod(&fallback, 0o755 | 0o002);
        assert!(ControlSocket::bind(&path).await.is_err());
        chmod(tmp.path(), 0o700);
    }
}
