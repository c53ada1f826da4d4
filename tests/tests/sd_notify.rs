//! `wovenetd` under a service manager (systemd `Type=notify`, `ExecReload=kill -HUP`):
//! `READY=1` reaches `NOTIFY_SOCKET` only once the control socket accepts connections,
//! `STOPPING=1` when SIGTERM starts the shutdown, SIGHUP does not kill it, and a notify socket
//! that is missing changes nothing. The service manager is played by a unix datagram socket
//! the test binds, as systemd does.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixDatagram;
use wovenet_e2e::*;

/// A site on its own broker with `NOTIFY_SOCKET` set to `notify`, not started.
fn site_notifying(name: &str, notify: &Path) -> Site {
    let broker = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    Site::builder(name)
        .topic(random_topic())
        .broker(format!("mqtt://{broker}"))
        .embedded_broker(broker)
        .env("NOTIFY_SOCKET", notify.to_str().unwrap())
        .prepare()
}

/// The next datagram as text (panics after `WAIT`).
async fn next_message(sock: &UnixDatagram, site: &Site) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no notification within {WAIT:?}\n{}", diag(&[site])))
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn assignments(msg: &str) -> Vec<&str> {
    msg.lines().collect()
}

/// Whether `pid` (our unreaped child) has exited: gone or a zombie.
fn exited(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn notify_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("wovenet-e2e-notify-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("notify.sock");
    (dir, path)
}

/// Before, wovenetd sent nothing, so `systemctl start` of a `Type=notify` unit would hang
/// until its timeout; and SIGHUP (what `systemctl reload` sends) killed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_control_socket_stopping_follows_sigterm_and_sighup_is_survived() {
    let (_dir, path) = notify_dir();
    let manager = UnixDatagram::bind(&path).unwrap();
    let mut site = site_notifying("notified", &path);
    let control = site.control_socket();
    // Reads READY=1 while the site starts and dials the control socket the moment it
    // arrives: a READY sent before the socket accepts fails the dial.
    let watcher = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, manager.recv(&mut buf))
            .await
            .expect("READY=1 within the wait")
            .unwrap();
        let dialled = std::os::unix::net::UnixStream::connect(&control).map(drop);
        (
            manager,
            String::from_utf8(buf[..n].to_vec()).unwrap(),
            dialled,
        )
    });
    site.start().await;
    let (manager, ready, dialled) = watcher.await.unwrap();
    let lines = assignments(&ready);
    assert_eq!(lines.first(), Some(&"READY=1"), "{ready:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("'notified'")),
        "{ready:?}"
    );
    assert!(
        dialled.is_ok(),
        "READY=1 arrived before the control socket accepted: {dialled:?}"
    );
    let ctl = Ctl::site(&site);
    assert_eq!(ctl.json(&["status"]).await["site"]["name"], "notified");

    // What `systemctl reload` does until reload exists: the daemon must stay up.
    let pid = site.pid().unwrap() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child, which is running (checked above through the API).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    never(
        "the daemon exiting after SIGHUP",
        Duration::from_secs(1),
        || site.diag(),
        || {
            let gone = exited(pid);
            async move { gone }
        },
    )
    .await;
    assert_eq!(ctl.json(&["status"]).await["site"]["name"], "notified");

    site.stop().await;
    let stopping = next_message(&manager, &site).await;
    assert_eq!(
        assignments(&stopping).first(),
        Some(&"STOPPING=1"),
        "{stopping:?}"
    );
}

/// A `NOTIFY_SOCKET` nobody listens on is logged, never fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_notify_socket_does_not_stop_the_daemon() {
    let (_dir, path) = notify_dir();
    let mut site = site_notifying("unnotified", &path);
    site.start().await;
    assert_eq!(
        Ctl::site(&site).json(&["status"]).await["site"]["name"],
        "unnotified"
    );
    site.stop().await;
}

/// `[Service]` settings of the example unit, each key with every value it is given.
fn unit_settings() -> Vec<(String, String)> {
    let path = binary::workspace_root().join("examples/systemd/wovenetd@.service");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if section == "[Service]"
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    assert!(
        !out.is_empty(),
        "no [Service] settings in {}",
        path.display()
    );
    out
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The unit and the daemon must agree on where things are: `wovenetctl --site NAME` finds
/// `/run/wovenet/NAME.sock` only if the unit's runtime directory is the clients' system
/// directory, and the state file must sit in the unit's writable state directory.
#[test]
fn the_systemd_unit_agrees_with_the_daemon_and_its_clients() {
    use wovenet_proto::paths;
    let s = unit_settings();
    assert_eq!(setting(&s, "Type"), ["notify"]);
    assert_eq!(
        setting(&s, "ExecStart"),
        ["/usr/local/bin/wovenetd run --config /etc/wovenet/%i.yaml"]
    );
    assert_eq!(setting(&s, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    let runtime = setting(&s, "RuntimeDirectory");
    assert_eq!(runtime, ["wovenet"]);
    assert_eq!(format!("/run/{}", runtime[0]), paths::SYSTEM_SOCKET_DIR);
    let state = setting(&s, "StateDirectory");
    assert_eq!(state, ["wovenet"]);
    let env = setting(&s, "Environment");
    assert!(
        env.contains(
            &format!(
                "{}={}/%i{}",
                paths::ENV_SOCKET,
                paths::SYSTEM_SOCKET_DIR,
                paths::SOCKET_SUFFIX
            )
            .as_str()
        ),
        "{env:?}"
    );
    assert!(
        env.contains(&format!("WOVENET_STATE=/var/lib/{}/%i.state.json", state[0]).as_str()),
        "{env:?}"
    );
    // 64 is wovenetd's exit code for a bad configuration.
    assert_eq!(setting(&s, "RestartPreventExitStatus"), ["64"]);
    assert_eq!(
        setting(&s, "RestrictAddressFamilies"),
        ["AF_UNIX AF_INET AF_INET6"]
    );
    assert_eq!(setting(&s, "CapabilityBoundingSet"), [""]);
    let user = setting(&s, "User");
    assert_eq!(user, ["wovenet"]);
    let sysusers =
        std::fs::read_to_string(binary::workspace_root().join("examples/systemd/wovenet.conf"))
            .unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", user[0]])),
        "{sysusers}"
    );
}
