//! The control socket file: where it lives, whether another daemon owns it,
//! binding it with mode 0660, and removing it when the daemon stops.
//!
//! Careful the way tailscale's `safesocket` is: before binding, the path is
//! dialled; a daemon that answers is never displaced, while a file nobody
//! answers on (left by a crash) is replaced. Only a socket file is ever
//! removed, and on exit only the one this process created. Every error names
//! the path. This module knows nothing of gRPC.

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

/// Mode of the socket file: owner and group may connect, nobody else.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of directories created for the socket (group may reach the socket).
const DIR_MODE: u32 = 0o750;

/// Why the control socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A daemon already answers on the path.
    #[error("another wovenetd is listening on {0}")]
    InUse(PathBuf),
    /// The path exists and is not a socket: refusing to delete it.
    #[error("{0} exists and is not a socket; remove it or choose another control.socket")]
    NotASocket(PathBuf),
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
    /// Binds `path`: refuses if a daemon answers there, replaces a stale
    /// socket file, creates missing parent directories (mode 0750), binds and
    /// sets the file's mode to 0660. Needs a tokio runtime.
    pub async fn bind(path: &Path) -> Result<Self, SocketError> {
        let io = |action| {
            let path = path.to_path_buf();
            move |source| SocketError::Io {
                path,
                action,
                source,
            }
        };
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketError::NotASocket(path.to_path_buf()));
            }
            Ok(_) => match UnixStream::connect(path).await {
                Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
                // Nobody listens: a crashed daemon's leftover, which would
                // make bind fail with EADDRINUSE.
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(io("create the directory"))?;
        }
        // There is a moment between bind and chmod where the file has the
        // umask's mode; changing the process-wide umask instead would race
        // with other threads creating files. The parent directory's own
        // permissions are what keep strangers out during that moment.
        let listener = UnixListener::bind(path).map_err(io("bind"))?;
        let guard = Guard::new(path);
        fs::set_permissions(path, Permissions::from_mode(SOCKET_MODE))
            .map_err(io("set mode 0660 on"))?;
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

    #[tokio::test]
    async fn bind_sets_mode_0660_creates_dirs_and_removes_the_file_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/ctl.sock");
        let sock = ControlSocket::bind(&path).await.expect("bind");
        let meta = fs::metadata(&path).expect("socket file");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
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
}
