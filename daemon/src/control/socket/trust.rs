//! Whether a directory may hold the control socket: the rule is that no user
//! but the daemon's own (and root) can have created it, or can rename or
//! replace it or anything in it.
//!
//! - The socket's own directory must be a real directory (not a symbolic
//!   link), owned by the daemon's user and writable by nobody else.
//! - Every directory above it, before and after resolving symbolic links,
//!   must be owned by root or the daemon's user, and be writable by group or
//!   others only with the sticky bit (as `/tmp` is), where nobody can rename
//!   what another user created. A symbolic link on the way must be owned by
//!   root or the daemon's user.
//!
//! The rules are pure functions of what `lstat` reports ([`Entry`]), tested
//! without a filesystem; [`verify`] only reads metadata. This module must not
//! create, change or remove anything.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Group- or other-writable bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit: in such a directory only an entry's owner may rename or remove it.
const STICKY: u32 = 0o1000;

/// What `lstat` reports about one path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// File type.
    pub kind: Kind,
    /// Owner.
    pub uid: u32,
    /// Permission bits, including set-id and sticky bits.
    pub mode: u32,
}

/// File type of an [`Entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else.
    Other,
}

impl Entry {
    fn of(meta: &fs::Metadata) -> Self {
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Dir
        } else {
            // Files, sockets, fifos, devices: none can hold a socket.
            Kind::Other
        };
        Self {
            kind,
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        }
    }
}

/// Why a component cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The socket's directory is a symbolic link, which could be re-pointed.
    #[error("is a symbolic link")]
    Symlink,
    /// It exists and is not a directory.
    #[error("is not a directory")]
    NotADirectory,
    /// The socket's directory belongs to another user.
    #[error(
        "is owned by uid {found} (mode {mode:04o}), not by uid {expected}, the user wovenetd runs as"
    )]
    NotOwned {
        /// Its owner.
        found: u32,
        /// The daemon's effective uid.
        expected: u32,
        /// Its mode.
        mode: u32,
    },
    /// A directory or link above belongs to a user other than root and the daemon's.
    #[error(
        "is owned by uid {found} (mode {mode:04o}), neither root nor uid {expected}, the user wovenetd runs as"
    )]
    ForeignOwner {
        /// Its owner.
        found: u32,
        /// The daemon's effective uid.
        expected: u32,
        /// Its mode.
        mode: u32,
    },
    /// The socket's directory is writable by group or others.
    #[error("is writable by group or others (mode {mode:04o})")]
    Writable {
        /// Its mode.
        mode: u32,
    },
    /// A directory above is writable by group or others and not sticky.
    #[error("is writable by group or others without the sticky bit (mode {mode:04o})")]
    WritableNotSticky {
        /// Its mode.
        mode: u32,
    },
}

/// The rule for the directory the socket is created in.
pub fn judge_own(e: Entry, euid: u32) -> Result<(), Problem> {
    match e.kind {
        Kind::Symlink => Err(Problem::Symlink),
        Kind::Other => Err(Problem::NotADirectory),
        Kind::Dir if e.uid != euid => Err(Problem::NotOwned {
            found: e.uid,
            expected: euid,
            mode: e.mode,
        }),
        Kind::Dir if e.mode & WRITABLE_BY_OTHERS != 0 => Err(Problem::Writable { mode: e.mode }),
        Kind::Dir => Ok(()),
    }
}

/// The rule for a directory or link above the socket's directory.
pub fn judge_ancestor(e: Entry, euid: u32) -> Result<(), Problem> {
    if e.kind == Kind::Other {
        return Err(Problem::NotADirectory);
    }
    if e.uid != 0 && e.uid != euid {
        return Err(Problem::ForeignOwner {
            found: e.uid,
            expected: euid,
            mode: e.mode,
        });
    }
    // A link's own mode means nothing; its target is checked on its own.
    if e.kind == Kind::Dir && e.mode & WRITABLE_BY_OTHERS != 0 && e.mode & STICKY == 0 {
        return Err(Problem::WritableNotSticky { mode: e.mode });
    }
    Ok(())
}

/// A component that failed its rule.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `path` breaks the rule; `own` says whether it is the socket's own directory.
    #[error("'{}' {problem}", path.display())]
    Untrusted {
        /// The offending component.
        path: PathBuf,
        /// Why.
        problem: Problem,
        /// Whether it is the socket's own directory (else one above it).
        own: bool,
    },
    /// Its metadata could not be read.
    #[error("cannot inspect '{}': {source}", path.display())]
    Io {
        /// The component.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn lstat(path: &Path) -> Result<Entry, VerifyError> {
    fs::symlink_metadata(path)
        .map(|m| Entry::of(&m))
        .map_err(|source| VerifyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn check_ancestors(path: &Path, euid: u32) -> Result<(), VerifyError> {
    for up in path
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
    {
        judge_ancestor(lstat(up)?, euid).map_err(|problem| VerifyError::Untrusted {
            path: up.to_path_buf(),
            problem,
            own: false,
        })?;
    }
    Ok(())
}

/// Checks the existing directory `dir` (the socket's) and everything above it
/// for a daemon running as `euid`.
pub fn verify(dir: &Path, euid: u32) -> Result<(), VerifyError> {
    let io = |source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let dir = std::path::absolute(dir).map_err(io)?;
    judge_own(lstat(&dir)?, euid).map_err(|problem| VerifyError::Untrusted {
        path: dir.clone(),
        problem,
        own: true,
    })?;
    // The path as written (its links must be ours or root's) and as resolved
    // (the directories really traversed).
    check_ancestors(&dir, euid)?;
    let real = fs::canonicalize(&dir).map_err(io)?;
    check_ancestors(&real, euid)
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    const ME: u32 = 1000;

    fn dir(uid: u32, mode: u32) -> Entry {
        Entry {
            kind: Kind::Dir,
            uid,
            mode,
        }
    }

    #[test]
    fn own_directory_must_be_mine_and_closed_to_others() {
        assert_eq!(judge_own(dir(ME, 0o700), ME), Ok(()));
        assert_eq!(judge_own(dir(ME, 0o750), ME), Ok(()));
        assert_eq!(judge_own(dir(ME, 0o755), ME), Ok(()));
        assert_eq!(
            judge_own(dir(1001, 0o700), ME),
            Err(Problem::NotOwned {
                found: 1001,
                expected: ME,
                mode: 0o700
            })
        );
        // Not even root's: a daemon that cannot write there has no business there.
        assert!(judge_own(dir(0, 0o755), ME).is_err());
        for mode in [0o770, 0o720, 0o702, 0o777, 0o1777] {
            assert_eq!(
                judge_own(dir(ME, mode), ME),
                Err(Problem::Writable { mode }),
                "{mode:o}"
            );
        }
        let link = Entry {
            kind: Kind::Symlink,
            uid: ME,
            mode: 0o777,
        };
        assert_eq!(judge_own(link, ME), Err(Problem::Symlink));
        let file = Entry {
            kind: Kind::Other,
            uid: ME,
            mode: 0o600,
        };
        assert_eq!(judge_own(file, ME), Err(Problem::NotADirectory));
    }

    #[test]
    fn ancestors_may_be_roots_or_mine_and_shared_only_when_sticky() {
        assert_eq!(judge_ancestor(dir(0, 0o755), ME), Ok(()));
        assert_eq!(judge_ancestor(dir(ME, 0o700), ME), Ok(()));
        assert_eq!(judge_ancestor(dir(0, 0o1777), ME), Ok(()), "like /tmp");
        assert_eq!(
            judge_ancestor(dir(0, 0o777), ME),
            Err(Problem::WritableNotSticky { mode: 0o777 })
        );
        assert_eq!(
            judge_ancestor(dir(0, 0o775), ME),
            Err(Problem::WritableNotSticky { mode: 0o775 })
        );
        assert_eq!(
            judge_ancestor(dir(1001, 0o755), ME),
            Err(Problem::ForeignOwner {
                found: 1001,
                expected: ME,
                mode: 0o755
            })
        );
        let link = |uid| Entry {
            kind: Kind::Symlink,
            uid,
            mode: 0o777,
        };
        assert_eq!(judge_ancestor(link(0), ME), Ok(()));
        assert_eq!(judge_ancestor(link(ME), ME), Ok(()));
        assert!(judge_ancestor(link(1001), ME).is_err());
    }

    #[test]
    fn root_daemon_accepts_root_owned_directories() {
        assert_eq!(judge_own(dir(0, 0o700), 0), Ok(()));
        assert_eq!(judge_ancestor(dir(0, 0o755), 0), Ok(()));
        assert!(judge_ancestor(dir(1000, 0o755), 0).is_err());
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn real_directories_are_judged_through_lstat() {
        let t = tempfile::tempdir().expect("tempdir");
        let own = t.path().join("own");
        fs::create_dir(&own).expect("mkdir");
        chmod(&own, 0o700);
        verify(&own, euid()).expect("a private directory of mine is fine");

        chmod(&own, 0o777);
        let err = verify(&own, euid()).expect_err("world-writable");
        assert!(
            matches!(&err, VerifyError::Untrusted { path, problem: Problem::Writable { mode: 0o777 }, own: true } if *path == own),
            "{err:?}"
        );

        let link = t.path().join("link");
        chmod(&own, 0o700);
        symlink(&own, &link).expect("symlink");
        let err = verify(&link, euid()).expect_err("symlink");
        assert!(
            matches!(
                &err,
                VerifyError::Untrusted {
                    problem: Problem::Symlink,
                    own: true,
                    ..
                }
            ),
            "{err:?}"
        );
        // Through a link of mine to a good directory is fine.
        let sub = own.join("sub");
        fs::create_dir(&sub).expect("mkdir");
        chmod(&sub, 0o700);
        verify(&link.join("sub"), euid()).expect("link above owned by me");

        // A shared directory above, without the sticky bit, is not.
        chmod(t.path(), 0o777);
        let err = verify(&sub, euid()).expect_err("shared ancestor");
        assert!(
            matches!(&err, VerifyError::Untrusted { path, problem: Problem::WritableNotSticky { .. }, own: false } if path == t.path()),
            "{err:?}"
        );
        chmod(t.path(), 0o1777);
        verify(&sub, euid()).expect("sticky ancestor, like /tmp");
        chmod(t.path(), 0o700);
    }
}
