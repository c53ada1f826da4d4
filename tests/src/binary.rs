//! Finding the `wovenetd`, `wovenetctl` and `wovenet-tui` binaries: built once per test process with cargo
//! (tests in `tests/` are their own crate and cannot use `CARGO_BIN_EXE_*`), or taken from
//! `WOVENET_BIN_DIR`. Fails loudly, with cargo's output, when they cannot be had.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Env var naming a directory that already holds `wovenetd` and `wovenetctl`; skips the build.
pub const BIN_DIR_ENV: &str = "WOVENET_BIN_DIR";

/// The workspace root (the parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative paths are taken from the workspace
/// root, as cargo does when run there) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    resolve_target_dir(
        &workspace_root(),
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
    )
}

fn resolve_target_dir(root: &Path, env: Option<PathBuf>) -> PathBuf {
    match env {
        Some(p) if p.as_os_str().is_empty() => root.join("target"),
        Some(p) if p.is_absolute() => p,
        Some(p) => root.join(p),
        None => root.join("target"),
    }
}

/// Path of `wovenetd`, building the binaries the first time this is called in the process.
pub fn wovenetd() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| find("wovenetd"))
}

/// Path of `wovenetctl`, building the binaries the first time this is called in the process.
pub fn wovenetctl() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| find("wovenetctl"))
}

/// Path of `wovenet-tui`, building the binaries the first time this is called in the process.
pub fn wovenet_tui() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| find("wovenet-tui"))
}

fn find(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let bin = PathBuf::from(dir).join(name);
        assert!(
            bin.is_file(),
            "{BIN_DIR_ENV} is set but {} does not exist; unset it to let the tests build {name}",
            bin.display()
        );
        return bin;
    }
    build_binaries();
    let bin = target_dir().join("debug").join(name);
    assert!(
        bin.is_file(),
        "cargo build succeeded but {} does not exist (is the target dir configured elsewhere? set {BIN_DIR_ENV})",
        bin.display()
    );
    bin
}

/// Builds `wovenetd` and `wovenetctl` in one cargo run, once per process.
fn build_binaries() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(&cargo)
            .args([
                "build",
                "-p",
                "wovenet-daemon",
                "-p",
                "wovenet-tui",
                "--bins",
            ])
            .current_dir(workspace_root())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {cargo:?} to build wovenetd and wovenetctl: {e}")
            });
        if !out.status.success() {
            panic!(
                "building wovenetd and wovenetctl failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

/// Runs `wovenetd check --config FILE` and returns its output.
pub fn check_config(config: &Path) -> Output {
    wovenetd_with_config("check", config)
}

/// Runs `wovenetd identity --config FILE` (prints `siteName: NAME` and `identity: FINGERPRINT`,
/// creating the identity key beside the state file if there is none) and returns its output.
pub fn identity_command(config: &Path) -> Output {
    wovenetd_with_config("identity", config)
}

/// Runs `wovenetd SUBCOMMAND --config FILE` to its end and returns its output.
fn wovenetd_with_config(subcommand: &str, config: &Path) -> Output {
    Command::new(wovenetd())
        .args([subcommand, "--config"])
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("cannot run wovenetd {subcommand}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dir_honours_absolute_and_relative_overrides() {
        let root = Path::new("/ws");
        assert_eq!(resolve_target_dir(root, None), Path::new("/ws/target"));
        assert_eq!(
            resolve_target_dir(root, Some("/tmp/t".into())),
            Path::new("/tmp/t")
        );
        assert_eq!(
            resolve_target_dir(root, Some("out".into())),
            Path::new("/ws/out")
        );
        assert_eq!(
            resolve_target_dir(root, Some("".into())),
            Path::new("/ws/target")
        );
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    /// Runs a nested cargo build; slow the first time, a no-op afterwards.
    #[test]
    fn wovenetd_is_built_and_found() {
        let bin = wovenetd();
        assert!(bin.is_file(), "{}", bin.display());
        assert!(bin.ends_with("wovenetd"));
    }

    /// Runs a nested cargo build; slow the first time, a no-op afterwards.
    #[test]
    fn wovenet_tui_is_built_and_found() {
        let bin = wovenet_tui();
        assert!(bin.is_file(), "{}", bin.display());
        assert!(bin.ends_with("wovenet-tui"));
    }

    /// Runs a nested cargo build; slow the first time, a no-op afterwards.
    #[test]
    fn wovenetctl_is_built_and_found() {
        let bin = wovenetctl();
        assert!(bin.is_file(), "{}", bin.display());
        assert!(bin.ends_with("wovenetctl"));
    }
}
