//! `wovenetd demo` as a newcomer meets it: the real binary, its printed `wovenet-tui` and
//! `wovenetctl` commands taken literally, the API answers behind them, the demo app fetched
//! through the client site, and nothing left behind after SIGTERM.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon output

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wovenet_e2e::process::{Process, describe, file_tail};
use wovenet_e2e::*;

/// A printed command attaching `program` to a control socket.
#[derive(Debug)]
struct Attach {
    line: String,
    words: Vec<String>,
    socket: PathBuf,
}

/// The first stdout line whose first word names `program` and that passes `--socket PATH`.
fn attach_line(stdout: &str, program: &str) -> Option<Attach> {
    stdout.lines().find_map(|line| {
        let words = shlex::split(line.trim())?;
        let named = Path::new(words.first()?).file_name()? == program;
        let at = words.iter().position(|w| w == "--socket")?;
        let socket = PathBuf::from(words.get(at + 1)?);
        named.then(|| Attach {
            line: line.trim().to_owned(),
            words,
            socket,
        })
    })
}

/// Runs `line` through `sh -c`, exactly as pasted into a shell.
async fn shell(line: &str) -> Output {
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(line)
            .env_remove("WOVENET_CONTROL_SOCKET")
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("`{line}` did not finish within 30 s"))
    .unwrap_or_else(|e| panic!("cannot run sh -c `{line}`: {e}"))
}

async fn http_get(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Before, the demo opened no control socket, so neither client could attach to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_commands_that_attach_to_both_sites_and_removes_their_sockets_on_exit() {
    let files = tempfile::Builder::new()
        .prefix("wovenet-e2e-demo-")
        .tempdir()
        .unwrap();
    // The demo's temporary directory goes here, so the test sees everything it leaves.
    let tmp = files.path().join("tmp");
    DirBuilder::new().mode(0o700).create(&tmp).unwrap();
    let (stdout, stderr) = (files.path().join("stdout"), files.path().join("stderr"));
    let port = free_tcp_port();
    let mut demo = Process::spawn(
        wovenetd(),
        ["demo", "--port", &port.to_string()],
        &[
            ("TMPDIR", Some(tmp.as_os_str())),
            ("WOVENET_LOG", None),
            ("WOVENET_CONTROL_SOCKET", None),
        ],
        &stdout,
        &stderr,
    )
    .unwrap();
    let diag = || {
        format!(
            "--- demo stdout\n{}\n--- demo stderr\n{}",
            file_tail(&stdout, 60),
            file_tail(&stderr, 20)
        )
    };

    let (tui, ctl) = wait_for("the wovenet-tui and wovenetctl lines", WAIT, diag, || {
        let out = fs::read_to_string(&stdout).unwrap_or_default();
        async move {
            Some((
                attach_line(&out, "wovenet-tui")?,
                attach_line(&out, "wovenetctl")?,
            ))
        }
    })
    .await;
    let dir = ctl.socket.parent().unwrap().to_path_buf();
    assert_eq!(dir.parent(), Some(tmp.as_path()), "{ctl:?}\n{}", diag());
    assert_eq!(tui.socket.parent(), Some(dir.as_path()), "{tui:?}");
    assert_ne!(tui.socket, ctl.socket, "one socket per site");
    let sockets = [tui.socket.clone(), ctl.socket.clone()];

    // Which site is behind each socket, from the API itself.
    let mut by_name = std::collections::BTreeMap::new();
    for s in &sockets {
        let v = Ctl::new(s).json(&["status"]).await;
        by_name.insert(v["site"]["name"].as_str().unwrap().to_owned(), s.clone());
    }
    assert_eq!(
        by_name.keys().collect::<Vec<_>>(),
        ["demo-client", "demo-server"],
        "{}",
        diag()
    );
    let (client, server) = (
        Ctl::new(&by_name["demo-client"]),
        Ctl::new(&by_name["demo-server"]),
    );
    let v = server.json(&["apps"]).await;
    assert_eq!(v["exposed"][0]["spec"]["name"], "hello", "{v:#}");
    client
        .json_until(
            &["channels"],
            "an up channel to demo-server",
            WAIT,
            diag,
            |v: &Value| {
                v["channels"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["peer"] == "demo-server" && c["state"] == "up")
                })
            },
        )
        .await;
    let v = client
        .json_until(
            &["apps"],
            "the remote app's listener open",
            WAIT,
            diag,
            |v: &Value| v["remote"][0]["listener_state"] == "open",
        )
        .await;
    assert_eq!(v["remote"][0]["spec"]["site_name"], "demo-server", "{v:#}");
    assert_eq!(v["remote"][0]["spec"]["app_name"], "hello", "{v:#}");
    assert_eq!(
        v["remote"][0]["spec"]["local_socket"],
        format!("tcp:127.0.0.1:{port}"),
        "{v:#}"
    );

    // The demo app, through the client site and the tunnel.
    let page = retry(WAIT, || http_get(port)).await.unwrap_or_else(|e| {
        panic!(
            "GET http://127.0.0.1:{port}/ failed: {:?}\n{}",
            e.last,
            diag()
        )
    });
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("Hello from site 'demo-server'"),
        "{page}\n{}",
        diag()
    );

    // The printed lines, pasted into a shell as they are.
    let out = shell(&format!("{} -o json", ctl.line)).await;
    assert!(out.status.success(), "`{}` failed: {out:?}", ctl.line);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exposed"][0]["spec"]["name"], "hello", "{v:#}");
    let program = shlex::try_quote(&tui.words[0]).unwrap();
    let out = shell(&format!("{program} --version")).await;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("wovenet-tui "),
        "the printed console command `{}` does not run wovenet-tui: {out:?}",
        tui.line
    );

    demo.signal(libc::SIGTERM);
    let status = demo
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("demo still running 15 s after SIGTERM\n{}", diag()));
    assert_eq!(status.code(), Some(0), "{}\n{}", describe(status), diag());
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_eq!(entries(&tmp), Vec::<String>::new(), "left in TMPDIR");
    for s in &sockets {
        let out = Ctl::new(s).run(&["status"]).await;
        assert_eq!(out.code, Some(2), "no daemon after exit: {out}");
    }
}
