//! The wovenetd control API, package `wovenet.v1`: the wire contract between
//! the daemon and its clients (`wovenetctl`, `wovenet-tui`). Generated from
//! `wovenet/v1/*.proto`; nothing hand-written beyond this module.

/// `wovenet.v1`: messages, the `ControlService` client and server.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)] // generated code
pub mod v1 {
    tonic::include_proto!("wovenet.v1");
}

/// Where daemons put their control sockets by default: part of the contract,
/// because `wovenetctl` and `wovenet-tui` must find what `wovenetd` created.
pub mod paths {
    use std::path::PathBuf;

    /// Environment variable naming the control socket (daemon and clients).
    pub const ENV_SOCKET: &str = "WOVENET_CONTROL_SOCKET";
    /// File name suffix of control sockets.
    pub const SOCKET_SUFFIX: &str = ".sock";
    /// Where system services keep their control sockets: root's default, and
    /// the `RuntimeDirectory=wovenet` of `examples/systemd/wovenetd@.service`.
    pub const SYSTEM_SOCKET_DIR: &str = "/run/wovenet";

    /// `$XDG_RUNTIME_DIR/wovenet` when set; otherwise `/run/wovenet` for root
    /// and `/tmp/wovenet-<uid>` for other users.
    ///
    /// The last one is predictable, so `wovenetd` trusts no directory blindly:
    /// it creates a missing one with mode 0700, and refuses to start when the
    /// socket's directory is a symbolic link, is not owned by its user or is
    /// writable by group or others, or when a directory above it is owned by
    /// another user than root or its own, or writable by others without the
    /// sticky bit.
    pub fn default_socket_dir() -> PathBuf {
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("wovenet"),
            // SAFETY: geteuid has no preconditions and cannot fail.
            _ => match unsafe { libc::geteuid() } {
                0 => PathBuf::from(SYSTEM_SOCKET_DIR),
                uid => PathBuf::from(format!("/tmp/wovenet-{uid}")),
            },
        }
    }

    /// The default control socket of site `site`: `<default dir>/<site>.sock`.
    pub fn default_socket_path(site: &str) -> PathBuf {
        default_socket_dir().join(format!("{site}{SOCKET_SUFFIX}"))
    }

    /// Where clients look for sockets, in order: [`default_socket_dir`], then
    /// [`SYSTEM_SOCKET_DIR`] (a daemon run by systemd as its own user), once.
    pub fn client_socket_dirs() -> Vec<PathBuf> {
        let mut dirs = vec![default_socket_dir()];
        let system = PathBuf::from(SYSTEM_SOCKET_DIR);
        if !dirs.contains(&system) {
            dirs.push(system);
        }
        dirs
    }
}
