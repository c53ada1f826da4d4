//! `wovenetctl` end to end: every command against two real sites (`b` exposing apps and
//! running the embedded broker, `a` using them), in table and JSON output, plus exit codes
//! for daemon errors and for no daemon at all.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::Duration;

use serde_json::Value;
use wovenet_e2e::*;

/// The rows of a table whose first column is `first`.
fn rows<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(first))
        .collect()
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{key} is not an array in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_site_in_both_formats() {
    let (p, _echo, _local) = Pair::echo().await;
    let table = p.ctl_a().ok(&["status"]).await;
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().eq(["site", "a"])),
        "first line should be the site name:\n{table}"
    );
    for key in ["instance", "version", "uptime", "broker state", "LISTEN"] {
        assert!(table.contains(key), "status lacks {key:?}:\n{table}");
    }
    assert!(table.contains("\ntrust mode    pinned\n"), "{table}");
    let v = p.ctl_a().json(&["status"]).await;
    let site = &v["site"];
    assert_eq!(site["name"], "a", "{v:#}");
    assert_eq!(site["trust_mode"], "pinned", "{v:#}");
    let identity = site["identity"].as_str().unwrap();
    assert!(
        identity.len() == 32
            && identity
                .bytes()
                .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)),
        "{v:#}"
    );
    assert!(
        table.contains(&format!("\nidentity      {identity}\n")),
        "{table}"
    );
    assert!(
        site["version"].as_str().is_some_and(|s| !s.is_empty()),
        "{v:#}"
    );
    assert!(site["uptime"].as_f64().is_some(), "{v:#}");
    let port = p.a.socket_ports()[0].to_string();
    assert!(
        array(site, "sockets")
            .iter()
            .any(|s| s["listen"].as_str().is_some_and(|l| l.ends_with(&port))),
        "sockets should include the configured port {port}: {v:#}"
    );
    p.json_until(&p.ctl_a(), &["status"], "the broker connected", |v| {
        v["site"]["broker_state"] == "connected"
    })
    .await;
    assert_eq!(p.ctl_b().json(&["status"]).await["site"]["name"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_show_the_other_site_connected() {
    let (p, _echo, _local) = Pair::echo().await;
    let v = p
        .json_until(&p.ctl_a(), &["peers"], "peer b connected", |v| {
            v["peers"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|x| x["name"] == "b" && x["state"] == "connected")
            })
        })
        .await;
    let b = array(&v, "peers")
        .iter()
        .find(|x| x["name"] == "b")
        .unwrap();
    assert!(b["channels"].as_u64().unwrap() >= 1, "{v:#}");
    assert!(
        b["apps"].as_array().unwrap().iter().any(|a| a == "echo"),
        "b's peer entry should list its exposed app: {v:#}"
    );
    // b's identity as b reports it, pinned on first sight during this run of a.
    let b_id = p.ctl_b().json(&["status"]).await["site"]["identity"].clone();
    assert_eq!(
        (&b["identity"], &b["trust"]),
        (&b_id, &"new".into()),
        "{v:#}"
    );
    let table = p.ctl_a().ok(&["peers"]).await;
    assert!(table.starts_with("NAME"), "{table}");
    let row = rows(&table, "b");
    assert_eq!(row.len(), 1, "{table}");
    let cells: Vec<&str> = row[0].split_whitespace().take(4).collect();
    assert_eq!(
        cells,
        ["b", "connected", "new", b_id.as_str().unwrap()],
        "{table}"
    );
    let table = p.ctl_b().ok(&["peers"]).await;
    assert!(
        rows(&table, "a").iter().any(|r| r.contains("connected")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_list_a_live_data_channel() {
    let (p, _echo, _local) = Pair::echo().await;
    let v = p
        .json_until(&p.ctl_a(), &["channels"], "an up channel to b", |v| {
            v["channels"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["peer"] == "b" && c["state"] == "up"))
        })
        .await;
    let c = array(&v, "channels")
        .iter()
        .find(|c| c["peer"] == "b" && c["state"] == "up")
        .unwrap();
    assert!(c["id"].as_u64().unwrap() > 0, "{v:#}");
    assert!(
        ["outbound", "inbound"].contains(&c["direction"].as_str().unwrap()),
        "{v:#}"
    );
    assert!(c["bytes_sent"].as_u64().unwrap() > 0, "{v:#}");
    assert!(
        c["remote_addr"].as_str().is_some_and(|a| !a.is_empty()),
        "{v:#}"
    );
    let table = p.ctl_a().ok(&["channels"]).await;
    assert!(table.starts_with("PEER"), "{table}");
    assert!(
        rows(&table, "b")
            .iter()
            .any(|r| r.split_whitespace().any(|w| w == "up")),
        "no up row for b:\n{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_show_a_connection_while_it_is_held_open() {
    let (p, _echo, local) = Pair::echo().await;
    let mut conn = EchoConn::connect(&local, WAIT).await.unwrap();
    conn.ping(&[7u8; 4096], WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));

    let v = p
        .json_until(
            &p.ctl_a(),
            &["streams"],
            "an outbound echo stream with bytes",
            |v| {
                v["streams"].as_array().is_some_and(|ss| {
                    ss.iter().any(|s| {
                        s["app"] == "echo"
                            && s["direction"] == "outbound"
                            && s["bytes_sent"].as_u64() >= Some(4096)
                    })
                })
            },
        )
        .await;
    let s = array(&v, "streams")
        .iter()
        .find(|s| s["app"] == "echo")
        .unwrap();
    assert_eq!(s["peer"], "b", "{v:#}");
    assert!(
        s["client_addr"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{v:#}"
    );
    p.json_until(&p.ctl_b(), &["streams"], "an inbound echo stream", |v| {
        v["streams"].as_array().is_some_and(|ss| {
            ss.iter()
                .any(|s| s["app"] == "echo" && s["direction"] == "inbound")
        })
    })
    .await;
    let table = p.ctl_a().ok(&["streams"]).await;
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .any(|l| l.contains("echo") && l.contains("outbound")),
        "{table}"
    );

    conn.finish(WAIT).await.unwrap();
    p.table_until(&p.ctl_a(), &["streams"], "no streams after close", |t| {
        t == "no streams\n"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_show_exposed_and_remote_apps_with_open_listener() {
    let (p, echo, local) = Pair::echo().await;
    let v = p
        .json_until(
            &p.ctl_a(),
            &["apps"],
            "the remote app's listener open",
            |v| v["remote"][0]["listener_state"] == "open",
        )
        .await;
    let r = &v["remote"][0];
    assert_eq!(r["spec"]["site_name"], "b", "{v:#}");
    assert_eq!(r["spec"]["app_name"], "echo", "{v:#}");
    assert_eq!(r["spec"]["local_socket"], local.to_string(), "{v:#}");
    assert_eq!(r["live"], false, "configured apps are not live: {v:#}");
    assert!(array(&v, "exposed").is_empty(), "{v:#}");
    let table = p.ctl_a().ok(&["apps"]).await;
    let row = rows(&table, "b");
    assert_eq!(row.len(), 1, "{table}");
    assert!(
        row[0].contains("echo") && row[0].contains("open"),
        "{table}"
    );

    let v = p.ctl_b().json(&["apps"]).await;
    let e = &v["exposed"][0];
    assert_eq!(e["spec"]["name"], "echo", "{v:#}");
    assert_eq!(e["spec"]["mode"], "single", "{v:#}");
    assert_eq!(e["spec"]["app_socket"], echo.sock().to_string(), "{v:#}");
    assert_eq!(e["live"], false, "{v:#}");
    let table = p.ctl_b().ok(&["apps"]).await;
    assert!(
        rows(&table, "echo").iter().any(|r| r.contains("single")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_add_opens_the_other_sites_listener_and_expose_rm_closes_it() {
    let echo = EchoServer::tcp().await;
    let later = EchoServer::tcp().await;
    let (local, later_local) = (Sock::free_tcp(), Sock::free_tcp());
    let p = Pair::new(
        |b| b.expose("echo", echo.sock()),
        |a| {
            a.remote("b", "echo", &local)
                .remote("b", "later", &later_local)
        },
    )
    .await;
    wait_forward(&local, WAIT, &[&p.a, &p.b]).await;
    assert!(
        !is_listening(&later_local).await,
        "b does not offer 'later' yet"
    );

    let later_sock = later.sock().to_string();
    let out = p
        .ctl_b()
        .ok(&["expose", "add", "--name", "later", "--socket", &later_sock])
        .await;
    assert_eq!(
        out,
        format!("added exposed app later (single {later_sock})\n"),
        "{}",
        p.diag()
    );
    wait_forward(&later_local, WAIT, &[&p.a, &p.b]).await;
    echo_once(&later_local, b"live-added app carries data", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    assert!(later.accepted() >= 1);
    let v = p.ctl_b().json(&["apps"]).await;
    assert!(
        array(&v, "exposed")
            .iter()
            .any(|e| e["spec"]["name"] == "later" && e["live"] == true),
        "{v:#}"
    );

    let v = p.ctl_b().json(&["expose", "rm", "later"]).await;
    assert_eq!(v["app"]["spec"]["name"], "later", "{v:#}");
    p.json_until(&p.ctl_a(), &["apps"], "the 'later' listener closed", |v| {
        v["remote"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["spec"]["app_name"] == "later" && r["listener_state"] == "waiting")
        })
    })
    .await;
    assert!(
        eventually(WAIT, || async { !is_listening(&later_local).await }).await,
        "a's listener for 'later' is still open after b removed the app\n{}",
        p.diag()
    );

    // The range form, in JSON.
    let v = p
        .ctl_b()
        .json(&[
            "expose",
            "add",
            "--name",
            "fwd",
            "--port-range",
            "5900,5901-5990",
            "--address-range",
            "127.0.0.1",
        ])
        .await;
    assert_eq!(v["app"]["spec"]["mode"], "range", "{v:#}");
    assert_eq!(
        v["app"]["spec"]["port_range"],
        serde_json::json!(["5900", "5901-5990"]),
        "{v:#}"
    );
    assert_eq!(v["app"]["live"], true, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_add_serves_an_app_and_remote_rm_stops_it() {
    let echo = EchoServer::tcp().await;
    let (local, added) = (Sock::free_tcp(), Sock::free_tcp());
    let p = Pair::new(
        |b| b.expose("echo", echo.sock()),
        |a| a.remote("b", "echo", &local),
    )
    .await;
    wait_forward(&local, WAIT, &[&p.a, &p.b]).await;

    let added_str = added.to_string();
    let out = p
        .ctl_a()
        .ok(&[
            "remote", "add", "--site", "b", "--app", "echo", "--local", &added_str,
        ])
        .await;
    assert!(
        out.starts_with(&format!("added remote app b/echo on {added_str}; listener")),
        "{out}"
    );
    wait_forward(&added, WAIT, &[&p.a, &p.b]).await;
    let v = p.ctl_a().json(&["apps"]).await;
    assert!(
        array(&v, "remote")
            .iter()
            .any(|r| r["spec"]["local_socket"] == added_str.as_str() && r["live"] == true),
        "{v:#}"
    );

    let v = p
        .ctl_a()
        .json(&[
            "remote", "rm", "--site", "b", "--app", "echo", "--local", &added_str,
        ])
        .await;
    let removed = array(&v, "removed");
    assert_eq!(removed.len(), 1, "only the one on --local: {v:#}");
    assert_eq!(
        removed[0]["spec"]["local_socket"],
        added_str.as_str(),
        "{v:#}"
    );
    assert!(
        eventually(WAIT, || async { !is_listening(&added).await }).await,
        "the removed remote app still listens on {added}\n{}",
        p.diag()
    );
    echo_once(&local, b"the configured one still works", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_app_socket_exits_1_with_the_config_message() {
    let (p, _echo, _local) = Pair::echo().await;
    for format in ["table", "json"] {
        let out = p
            .ctl_b()
            .run(&[
                "-o", format, "expose", "add", "--name", "x", "--socket", "tcp:nope",
            ])
            .await;
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
        assert!(out.stderr.starts_with("error: "), "{out}");
        assert!(
            out.stderr
                .contains("appSocket: 'tcp:nope' is not a valid tcp socket, expected tcp:IP:PORT"),
            "the config loader's message should reach the user unchanged\n{out}"
        );
    }
    let out = p
        .ctl_b()
        .run(&["expose", "add", "--name", "x", "--socket", "nope"])
        .await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("appSocket: 'nope' must start with 'tcp:', 'udp:' or 'unix:'"),
        "{out}"
    );
    let out = p.ctl_b().run(&["expose", "rm", "nothing-here"]).await;
    assert_eq!(
        out.code,
        Some(1),
        "removing what is not there is an error\n{out}"
    );
    assert!(out.stderr.starts_with("error: "), "{out}");
    assert!(out.stderr.contains("nothing-here"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_exits_2_with_a_message_naming_the_socket() {
    let dir = socket_dir();
    let missing = dir.path().join("nobody.sock");
    let out = Ctl::new(&missing).run(&["status"]).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains("no wovenetd is listening on")
            && out.stderr.contains(&missing.display().to_string()),
        "{out}"
    );

    // A site that stopped: its socket is gone or dead; either way exit 2.
    let (mut p, _echo, _local) = Pair::echo().await;
    let ctl = p.ctl_b();
    p.b.stop().await;
    let out = ctl.run(&["-o", "json", "peers"]).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains(&ctl.socket().display().to_string()),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_print_a_line_when_a_listener_opens() {
    let echo = EchoServer::tcp().await;
    let p = Pair::new(|b| b.expose("echo", echo.sock()), |a| a).await;
    let (first, second) = (Sock::free_tcp(), Sock::free_tcp());

    let mut table = p.ctl_a().spawn(&["events"]);
    table
        .wait_line("following events", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let first_str = first.to_string();
    p.ctl_a()
        .ok(&[
            "remote", "add", "--site", "b", "--app", "echo", "--local", &first_str,
        ])
        .await;
    let line = table
        .wait_line("listener opened", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    assert!(line.contains(&format!("b/echo on {first_str}")), "{line}");
    assert!(table.is_running(), "events must keep following");
    table.kill().await;

    let mut json = p.ctl_a().spawn(&["-o", "json", "events"]);
    let snap = json
        .wait_line("\"snapshot\"", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let snap: Value = serde_json::from_str(&snap).unwrap();
    assert_eq!(snap["snapshot"]["site"]["name"], "a", "{snap:#}");
    let second_str = second.to_string();
    p.ctl_a()
        .ok(&[
            "remote",
            "add",
            "--site",
            "b",
            "--app",
            "echo",
            "--local",
            &second_str,
        ])
        .await;
    let line = json
        .wait_line("\"kind\":\"listener_opened\"", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        ev["event"]["listener_opened"]["local_socket"],
        second_str.as_str(),
        "{ev:#}"
    );
    assert!(ev["event"]["seq"].as_u64().is_some(), "{ev:#}");
    json.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_print_one_sample_or_follow() {
    let (p, _echo, local) = Pair::echo().await;
    echo_once(&local, &[1u8; 8192], WAIT).await.unwrap();
    let table = p.ctl_a().ok(&["stats", "--interval", "200ms"]).await;
    assert!(table.starts_with("stats at "), "{table}");
    assert_eq!(table.matches("stats at ").count(), 1, "{table}");
    for section in ["APPS", "PEERS", "CHANNELS", "COUNTERS"] {
        assert!(table.contains(section), "{table}");
    }
    let v = p.ctl_a().json(&["stats", "--interval", "200ms"]).await;
    for key in ["at", "apps", "peers", "channels", "counters"] {
        assert!(v.get(key).is_some(), "stats JSON lacks {key}: {v:#}");
    }
    p.json_until(
        &p.ctl_a(),
        &["stats", "-i", "200ms"],
        "echo traffic counted",
        |v| {
            v["apps"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["app"] == "echo" && x["bytes_sent"].as_u64() >= Some(8192))
            })
        },
    )
    .await;

    let mut follow = p
        .ctl_a()
        .spawn(&["-o", "json", "stats", "--follow", "--interval", "200ms"]);
    for _ in 0..3 {
        follow
            .wait_line("\"counters\"", Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    }
    assert!(follow.is_running());
    follow.kill().await;
}

#[tokio::test]
async fn completions_bash_prints_a_script() {
    let out = Ctl::new("/nonexistent/wovenet.sock")
        .ok(&["completions", "bash"])
        .await;
    assert!(out.contains("_wovenetctl()"), "{out}");
    assert!(out.contains("complete -F _wovenetctl"), "{out}");
    for cmd in ["status", "expose", "remote", "events"] {
        assert!(out.contains(cmd), "completion lacks {cmd}");
    }
}
