//! `logger.format: json` as journald or Loki read it: every line a real daemon writes (to its
//! log file, and to stdout when no file is set) is exactly one JSON object with `timestamp`,
//! `level`, `target` and `message`, and the fields of the spans it happened in (`site.name`,
//! `peer.site`, `channel.id`, `app.name`, ...) at its top level, each key once.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};
use wovenet_e2e::process::{Process, file_tail};
use wovenet_e2e::*;

/// Every line of `text` parsed, asserting one object per line, the fixed keys present and
/// no key written twice.
fn objects(text: &str, origin: &str) -> Vec<Map<String, Value>> {
    assert!(!text.is_empty(), "{origin}: no log at all");
    assert!(text.ends_with('\n'), "{origin}: last line unfinished");
    text.lines()
        .map(|line| {
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
                panic!("{origin}: not one JSON object: {line:?}");
            };
            for key in ["timestamp", "level", "target", "message"] {
                assert!(
                    map.get(key).is_some_and(Value::is_string),
                    "{origin}: no string {key:?} in {line}"
                );
            }
            for key in map.keys() {
                let quoted = serde_json::to_string(key).unwrap() + ":";
                assert_eq!(line.matches(&quoted).count(), 1, "{key} twice in {line}");
            }
            map
        })
        .collect()
}

/// The first object whose message is `message`.
fn find<'a>(lines: &'a [Map<String, Value>], message: &str) -> &'a Map<String, Value> {
    lines
        .iter()
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} line among {} lines", lines.len()))
}

/// Before, span fields were nested under `span`/`spans`, and the start-up lines logged with
/// an explicit parent span had an empty `spans`, so a query on `site.name` missed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_lines_are_flat_objects_carrying_their_span_fields() {
    let (p, _echo, local) = Pair::echo().await;
    echo_once(&local, b"json lines", WAIT).await.unwrap();
    p.a.wait_log("stream opened", WAIT).await;
    let a = objects(&fs::read_to_string(p.a.log_path()).unwrap(), "a's log");
    let b = objects(&fs::read_to_string(p.b.log_path()).unwrap(), "b's log");

    let started = find(&a, "site started");
    assert_eq!(started["site.name"], "a", "{started:?}");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["spans"], "site");
    assert_eq!(started["target"], "wovenet_daemon");

    let up = find(&a, "channel up");
    assert_eq!(
        (&up["site.name"], &up["peer.site"]),
        (&json!("a"), &json!("b")),
        "{up:?}"
    );
    assert!(up.contains_key("channel.id"), "{up:?}");
    let spans = up["spans"].as_str().unwrap();
    assert!(
        spans.starts_with("site:") && spans.ends_with(":channel"),
        "{up:?}"
    );

    let opened = find(&a, "stream opened");
    assert_eq!(opened["app.name"], "echo", "{opened:?}");
    assert_eq!(opened["peer.site"], "b", "{opened:?}");
    assert_eq!(opened["site.name"], "a", "{opened:?}");
    assert!(opened.contains_key("client.addr"), "{opened:?}");

    // (No `site.name` here yet: the tunnel spawns inbound streams outside the site span.)
    let admitted = find(&b, "stream admitted");
    assert_eq!(admitted["app.name"], "echo", "{admitted:?}");
    assert_eq!(admitted["peer.site"], "a", "{admitted:?}");
}

/// With no `logger.file` the lines go to stdout, which is what journald stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_carries_only_json_lines_when_no_file_is_set() {
    let dir = tempfile::Builder::new()
        .prefix("wovenet-e2e-jsonout-")
        .tempdir()
        .unwrap();
    let broker = std::net::SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let control = dir.path().join("journal.sock");
    let config = Site::builder("journal")
        .topic(random_topic())
        .broker(format!("mqtt://{broker}"))
        .embedded_broker(broker)
        .extra("logger", json!({ "level": "debug", "format": "json" }))
        .extra(
            "control",
            json!({ "socket": control.display().to_string() }),
        )
        .write_config(dir.path());
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut site = Process::spawn(
        wovenetd(),
        [Path::new("run"), Path::new("--config"), &config],
        &[
            ("WOVENET_LOG", None),
            ("WOVENET_CONTROL_SOCKET", None),
            ("XDG_RUNTIME_DIR", Some(dir.path().as_os_str())),
        ],
        &stdout,
        &stderr,
    )
    .unwrap();
    let diag = || {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            file_tail(&stdout, 40),
            file_tail(&stderr, 20)
        )
    };
    wait_for("the site started on stdout", WAIT, diag, || {
        let text = fs::read_to_string(&stdout).unwrap_or_default();
        async move { text.contains("\"site started\"").then_some(()) }
    })
    .await;
    Ctl::new(&control).ok(&["status"]).await;
    site.signal(libc::SIGTERM);
    let status = site.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", diag());

    let lines = objects(&fs::read_to_string(&stdout).unwrap(), "stdout");
    assert_eq!(find(&lines, "site started")["site.name"], "journal");
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "logger.level debug is honoured"
    );
    find(&lines, "control socket listening");
    assert_eq!(
        fs::read_to_string(&stderr).unwrap(),
        "",
        "nothing on stderr"
    );
}
