//! Local trust with real daemons: `wovenetd` refuses to start when its control socket's
//! directory could have been created or swapped by another user (world-writable, or owned by
//! someone else: the predictable `/tmp/wovenet-<uid>` case), with an error naming the path,
//! what was found and what to do; and it writes its state file owner-only, through a unique
//! temporary name that it does not leave behind.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::ExitStatus;

use wovenet_e2e::process::{Process, file_tail};
use wovenet_e2e::*;
use wovenet_proto::v1;

/// Runs `wovenetd run` for a fresh site with `--control-socket socket` until it exits;
/// returns its status and stderr. Panics if it keeps running.
async fn run_until_exit(dir: &Path, socket: &Path) -> (ExitStatus, String) {
    let config = Site::builder("trusting")
        .topic(random_topic())
        .broker("mqtt://127.0.0.1:1")
        .write_config(dir);
    let (out, err) = (dir.join("out"), dir.join("err"));
    let mut p = Process::spawn(
        wovenetd(),
        [
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--control-socket"),
            socket.as_os_str(),
        ],
        &[("WOVENET_LOG", None)],
        &out,
        &err,
    )
    .unwrap();
    let status = p.wait_exit(WAIT).await.unwrap_or_else(|| {
        panic!(
            "wovenetd kept running with control socket {}\n{}",
            socket.display(),
            file_tail(&err, 20)
        )
    });
    (status, std::fs::read_to_string(&err).unwrap_or_default())
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_writable_socket_directory_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("run");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let socket = shared.join("ctl.sock");
    let (status, stderr) = run_until_exit(dir.path(), &socket).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "control socket {}: directory '{}' is writable by group or others (mode 0777)",
            socket.display(),
            shared.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 0700"), "says what to do: {stderr}");
    assert!(!socket.exists(), "nothing bound in it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_user_directory_planted_by_another_user_is_refused_at_start() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("WOVENET_REQUIRE_ROOT").is_none(),
            "needs root to give a directory to another user"
        );
        eprintln!("skipping: needs root");
        return;
    }
    // The shape of /tmp/wovenet-<uid>: a sticky shared parent, and the directory made in
    // advance by uid 65534 for us.
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o1777);
    let planted = dir.path().join("wovenet-0");
    std::fs::create_dir(&planted).unwrap();
    chmod(&planted, 0o700);
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let socket = planted.join("trusting.sock");
    let conf = tempfile::tempdir().unwrap();
    let (status, stderr) = run_until_exit(conf.path(), &socket).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "directory '{}' is owned by uid 65534 (mode 0700), not by uid 0, the user wovenetd runs as",
            planted.display()
        )),
        "{stderr}"
    );
    assert!(!socket.exists(), "nothing bound in it");
    chmod(dir.path(), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_is_owner_only_and_no_temporary_file_remains() {
    let site = lone_site("keeper", |s| s).await;
    let api = site.api().await;
    for name in ["one", "two", "three"] {
        api.client()
            .add_exposed_app(v1::AddExposedAppRequest {
                app: Some(v1::ExposedAppSpec {
                    name: name.into(),
                    app_socket: "tcp:127.0.0.1:9".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", site.diag()));
    }
    let state = site.dir().join("site.state.json");
    let meta = std::fs::symlink_metadata(&state)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", state.display(), site.diag()));
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600, "{}", state.display());
    let leftovers: Vec<String> = std::fs::read_dir(site.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp") || n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"three\""), "{text}");
}
