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
        .unwrap_or_else(|_| {
            panic!(
                "no notification within {WAIT:?}\n{}",
                diag(&[site])
            )
        })
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
        (manager, String::from_utf8(buf[..n].to_vec()).unwrap(), dialled)
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
