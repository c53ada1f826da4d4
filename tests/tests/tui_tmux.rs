//! The real console in a real terminal: two sites (b hosts the broker and wants `a/echo`),
//! `wovenet-tui` attached to a's control socket inside a private tmux server. Keys switch
//! tabs, the form adds the exposed app `echo`, the pane shows it, b's remote listener opens
//! and forwards; then `d`/`y` removes it; the Sites tab shows trust and identities, and
//! after a daemon restart `f`/`y` forgets b's persisted pin; `q` quits cleanly.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use wovenet_e2e::*;

/// A tmux server of our own (`-L`), killed on drop so a failing test leaves nothing behind.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn start(cmd: &str) -> Self {
        let socket = format!("wovenet-tui-test-{}", std::process::id());
        let t = Self { socket };
        t.run(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            "tui",
            cmd,
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", "-t", "tui", k]);
        }
    }

    fn text(&self, s: &str) {
        self.run(&["send-keys", "-t", "tui", "-l", s]);
    }

    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui"])
    }

    fn session_alive(&self) -> bool {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(["has-session", "-t", "tui"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    async fn wait_for(&self, what: &str, sites: &[&Site]) -> String {
        let mut last = String::new();
        let ok = eventually(WAIT, || {
            last = self.capture();
            let found = last.contains(what);
            async move { found }
        })
        .await;
        assert!(
            ok,
            "pane never showed {what:?}; last capture:\n{last}\n{}",
            diag(sites)
        );
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// Waits until the pane has a line containing both `key` and `needle`; returns the pane.
async fn eventually_row(tmux: &Tmux, key: &str, needle: &str, sites: &[&Site]) -> String {
    let mut last = String::new();
    let ok = eventually(WAIT, || {
        last = tmux.capture();
        let found = last.lines().any(|l| l.contains(key) && l.contains(needle));
        async move { found }
    })
    .await;
    assert!(
        ok,
        "pane never showed a row with {key:?} and {needle:?}; last capture:\n{last}\n{}",
        diag(sites)
    );
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn console_adds_an_exposed_app_that_the_other_site_then_forwards() {
    if !Tmux::available() {
        assert!(
            std::env::var_os("WOVENET_REQUIRE_TMUX").is_none(),
            "tmux is required but missing"
        );
        eprintln!("skipping: tmux is not installed");
        return;
    }
    let tui = wovenet_tui();
    let broker = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    let net = Net::new(format!("mqtt://{broker}"));
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let b = net
        .site("b")
        .embedded_broker(broker)
        .remote("a", "echo", &local)
        .spawn()
        .await;
    let mut a = net.site("a").spawn().await;

    let cmd = format!(
        "{} --socket {}",
        tui.display(),
        a.control_socket().display()
    );
    let tmux = Tmux::start(&cmd);
    let sites = [&a, &b];
    tmux.wait_for("● connected", &sites).await;
    tmux.keys(&["1"]);
    tmux.wait_for("connected  ", &sites).await;
    // Trust: a's own identity whole in the header, b's row pinned on first sight (`new`)
    // with its identity shortened at this width (120 columns). b's state may still be
    // `discovered` or `connecting`: its identity is known from its first announcement.
    let a_id = Ctl::site(&a).json(&["status"]).await["site"]["identity"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_id = Ctl::site(&b).json(&["status"]).await["site"]["identity"]
        .as_str()
        .unwrap()
        .to_owned();
    tmux.wait_for(&format!("identity {a_id}  trust pinned"), &sites)
        .await;
    let b_short = format!("{}…", &b_id[..8]);
    eventually_row(&tmux, &b_short, " new ", &sites).await;
    tmux.keys(&["2"]);
    tmux.wait_for("dataChannels", &sites).await;
    tmux.keys(&["4"]);
    tmux.wait_for(" apps ", &sites).await;

    tmux.keys(&["a"]);
    tmux.wait_for("add app", &sites).await;
    tmux.text("echo");
    tmux.keys(&["Down", "Down"]);
    let app_socket = echo.sock().to_string();
    tmux.text(&app_socket);
    tmux.keys(&["Enter"]);
    let pane = tmux.wait_for(&app_socket, &sites).await;
    assert!(!pane.contains("error:"), "{pane}");
    wait_forward(&local, WAIT, &sites).await;

    tmux.keys(&["5"]);
    tmux.wait_for("exposed app added", &sites).await;

    tmux.keys(&["4", "g", "d"]);
    tmux.wait_for("remove exposed app 'echo'?", &sites).await;
    tmux.keys(&["y"]);
    tmux.wait_for("removed exposed app echo", &sites).await;
    tmux.wait_for("(none)", &sites).await;

    // The daemon restarts under the console: it says so, reconnects by itself
    // and keeps the operator on the Apps tab.
    a.stop().await;
    tmux.wait_for("disconnected", &[&b]).await;
    a.start().await;
    let sites = [&a, &b];
    let pane = tmux.wait_for("● connected", &sites).await;
    assert!(
        pane.contains(" apps "),
        "the console left the Apps tab:\n{pane}"
    );

    // b's pin survived a's restart: `pinned` now, not `new`. `f` then `y` forgets it.
    tmux.keys(&["1", "g"]);
    let pane = eventually_row(&tmux, &b_short, " pinned ", &sites).await;
    assert!(!pane.contains("forget the identity"), "{pane}");
    tmux.keys(&["f"]);
    tmux.wait_for("forget the identity pinned for site 'b'?", &sites)
        .await;
    tmux.keys(&["y"]);
    tmux.wait_for(
        &format!("forgot b: the next identity that announces b is pinned (was {b_id})"),
        &sites,
    )
    .await;

    tmux.keys(&["q"]);
    let ok = eventually(WAIT, || {
        let alive = tmux.session_alive();
        async move { !alive }
    })
    .await;
    assert!(ok, "console did not quit:\n{}", tmux.capture());
}
