//! Reloading the config file of a running `wovenetd` (SIGHUP, `wovenetctl reload`): apps
//! added and removed live while a stream on another app keeps flowing byte-exact on the same
//! dataChannel, an invalid file changing nothing, a log level change taking effect, a
//! restart-bound change reported and not applied, and apps added through the API surviving
//! a file that does not list them.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use serde_json::{Value, json};
use tokio::sync::watch;
use wovenet_e2e::data::bytes;
use wovenet_e2e::*;
use wovenet_proto::v1;

/// `localExposedApps` of single-socket apps.
fn exposed(apps: &[(&str, &Sock)]) -> Value {
    apps.iter()
        .map(|(name, sock)| json!({ "appName": name, "appSocket": sock.to_string() }))
        .collect()
}

/// `remoteApps` of `b`'s apps.
fn remote(apps: &[(&str, &Sock)]) -> Value {
    apps.iter()
        .map(|(app, local)| {
            json!({ "siteName": "b", "appName": app, "localSocket": local.to_string() })
        })
        .collect()
}

/// `wovenetctl -o json reload`, expecting exit `code`; the report.
async fn reload(ctl: &Ctl, code: i32) -> Value {
    let out = ctl.run(&["-o", "json", "reload"]).await;
    assert_eq!(out.code, Some(code), "{out}");
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{out}"));
    doc["report"].clone()
}

/// The `name`s (or `app_name`s) of a list of specs in a report.
fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| {
            s.get("name")
                .or_else(|| s.get("app_name"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no name in {s}"))
                .to_owned()
        })
        .collect()
}

/// Exposed app names of a site, sorted, with whether each was added live.
async fn exposed_apps(site: &Site) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = site
        .api()
        .await
        .apps()
        .await
        .exposed
        .iter()
        .map(|a| (a.spec.clone().unwrap_or_default().name, a.live))
        .collect();
    v.sort();
    v
}

/// Remote app names of a site (config order), with whether each was added live.
async fn remote_apps(site: &Site) -> Vec<(String, bool)> {
    site.api()
        .await
        .apps()
        .await
        .remote
        .iter()
        .map(|a| (a.spec.clone().unwrap_or_default().app_name, a.live))
        .collect()
}

fn owned(v: &[(&str, bool)]) -> Vec<(String, bool)> {
    v.iter().map(|(n, l)| ((*n).to_owned(), *l)).collect()
}

/// Waits for the next `config_reloaded` event on a `-o json events` feed; its report.
async fn next_reload_event(events: &mut CtlChild) -> Value {
    let line = events
        .wait_line("\"config_reloaded\"", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    v["event"]["config_reloaded"].clone()
}

/// Waits until `local` accepts no connection (its listener closed).
async fn wait_closed(local: &Sock, p: &Pair) {
    wait_for(
        &format!("{local} closed"),
        WAIT,
        || p.diag(),
        async || (!is_listening(local).await).then_some(()),
    )
    .await;
}

/// Apps added in and removed from both sites' files, once reloaded by `wovenetctl reload`
/// (b) and SIGHUP (a), once the other way round: the new app forwards, the removed one's
/// listener closes, and a connection on a third app pings byte-exact throughout on the
/// dataChannel it started on. Fails on the old code: SIGHUP was only logged and
/// `wovenetctl reload` did not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_added_and_removed_by_reload_leave_a_stream_on_another_app_flowing() {
    let keep = EchoServer::tcp().await;
    let gone = EchoServer::tcp().await;
    let new = EchoServer::tcp().await;
    let (keep_local, gone_local, new_local) =
        (Sock::free_tcp(), Sock::free_tcp(), Sock::free_tcp());
    let mut p = Pair::new(
        |b| b.expose("keep", keep.sock()).expose("gone", gone.sock()),
        |a| {
            a.remote("b", "keep", &keep_local)
                .remote("b", "gone", &gone_local)
        },
    )
    .await;
    p.wait_forward(&keep_local).await;
    p.wait_forward(&gone_local).await;
    let channels = p.a.api().await.up_channels("b").await;
    assert!(!channels.is_empty(), "{}", p.diag());
    let conn = EchoConn::connect(&keep_local, WAIT).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let pinger = keep_pinging(conn, stop_rx);
    let mut a_events = p.ctl_a().spawn(&["-o", "json", "events"]);
    a_events.wait_line("\"snapshot\"", WAIT).await.unwrap();

    // Round 1: `new` replaces `gone`; b through wovenetctl, a through SIGHUP.
    p.b.edit_config(|c| {
        c["localExposedApps"] = exposed(&[("keep", keep.sock()), ("new", new.sock())]);
    });
    let report = reload(&p.ctl_b(), 0).await;
    assert_eq!(report["outcome"], "applied", "{report:#}");
    assert_eq!(names(&report["exposed_added"]), ["new"], "{report:#}");
    assert_eq!(names(&report["exposed_removed"]), ["gone"], "{report:#}");
    assert!(names(&report["exposed_changed"]).is_empty(), "{report:#}");
    assert_eq!(
        exposed_apps(&p.b).await,
        owned(&[("keep", false), ("new", false)])
    );
    p.a.edit_config(|c| {
        c["remoteApps"] = remote(&[("keep", &keep_local), ("new", &new_local)]);
    });
    p.a.hangup();
    let event = next_reload_event(&mut a_events).await;
    assert_eq!(event["outcome"], "applied", "{event:#}");
    assert_eq!(names(&event["remote_added"]), ["new"], "{event:#}");
    assert_eq!(names(&event["remote_removed"]), ["gone"], "{event:#}");
    assert_eq!(
        remote_apps(&p.a).await,
        owned(&[("keep", false), ("new", false)])
    );
    p.wait_forward(&new_local).await;
    wait_closed(&gone_local, &p).await;

    // Round 2: back to `gone`; b through SIGHUP, a through wovenetctl.
    p.b.edit_config(|c| {
        c["localExposedApps"] = exposed(&[("keep", keep.sock()), ("gone", gone.sock())]);
    });
    p.b.hangup();
    let want = owned(&[("gone", false), ("keep", false)]);
    wait_for(
        "b serving keep and gone",
        WAIT,
        || p.diag(),
        async || (exposed_apps(&p.b).await == want).then_some(()),
    )
    .await;
    p.a.edit_config(|c| {
        c["remoteApps"] = remote(&[("keep", &keep_local), ("gone", &gone_local)]);
    });
    let report = reload(&p.ctl_a(), 0).await;
    assert_eq!(names(&report["remote_added"]), ["gone"], "{report:#}");
    assert_eq!(names(&report["remote_removed"]), ["new"], "{report:#}");
    let event = next_reload_event(&mut a_events).await;
    assert_eq!(
        names(&event["remote_added"]),
        ["gone"],
        "the RPC's event too: {event:#}"
    );
    p.wait_forward(&gone_local).await;
    wait_closed(&new_local, &p).await;

    stop_tx.send(true).unwrap();
    let (mut conn, pings) = pinger
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the stream on keep broke: {e}\n{}", p.diag()));
    assert!(pings >= 1, "no ping during the reloads\n{}", p.diag());
    // Reloads take milliseconds: the same connection, after all of them.
    for seed in 1..=3 {
        let block = bytes(seed, 64 * 1024);
        conn.ping(&block, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    }
    conn.finish(WAIT).await.unwrap();
    assert_eq!(
        p.a.api().await.up_channels("b").await,
        channels,
        "the dataChannel was kept\n{}",
        p.diag()
    );
    a_events.kill().await;
}

/// A file with errors (two, in different sections) beside valid changes: `wovenetctl reload`
/// exits 4 naming both fields, SIGHUP publishes the refusal, the apps stay as they were and
/// traffic flows; the fixed file then reloads. Fails on the old code (no reload at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_old_config_and_names_every_bad_field() {
    let (mut p, echo, local) = Pair::echo().await;
    let extra = EchoServer::tcp().await;
    let before = exposed_apps(&p.b).await;
    let mut b_events = p.ctl_b().spawn(&["-o", "json", "events"]);
    b_events.wait_line("\"snapshot\"", WAIT).await.unwrap();
    p.b.edit_config(|c| {
        c["localExposedApps"] = json!([
            { "appName": "echo", "appSocket": echo.sock().to_string() },
            { "appName": "extra", "appSocket": extra.sock().to_string() },
            { "appName": "bad", "appSocket": "tcp:nope" },
        ]);
        c["tunnel"]["maxStreamsPerPeer"] = json!(0);
    });

    let out = p.ctl_b().run(&["reload"]).await;
    assert_eq!(out.code, Some(4), "{out}");
    for field in [
        "localExposedApps[2].appSocket: ",
        "tunnel.maxStreamsPerPeer: ",
    ] {
        assert!(out.stderr.contains(field), "stderr lacks {field:?}\n{out}");
    }
    let report = reload(&p.ctl_b(), 4).await;
    assert_eq!(report["outcome"], "invalid", "{report:#}");
    let paths: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"localExposedApps[2].appSocket")
            && paths.contains(&"tunnel.maxStreamsPerPeer"),
        "{report:#}"
    );
    assert!(
        names(&report["exposed_added"]).is_empty(),
        "nothing applied"
    );
    // Two refusals from wovenetctl, one from SIGHUP: each is an event.
    for _ in 0..2 {
        assert_eq!(next_reload_event(&mut b_events).await["outcome"], "invalid");
    }
    p.b.hangup();
    let event = next_reload_event(&mut b_events).await;
    assert_eq!(event["outcome"], "invalid", "{event:#}");
    assert!(
        event["errors"][0]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{event:#}"
    );
    assert!(
        p.b.is_running(),
        "SIGHUP with a bad file killed it\n{}",
        p.diag()
    );
    assert_eq!(exposed_apps(&p.b).await, before, "apps unchanged");
    echo_once(&local, b"still flowing", WAIT).await.unwrap();

    p.b.edit_config(|c| {
        c["localExposedApps"].as_array_mut().unwrap().pop();
        c["tunnel"]
            .as_object_mut()
            .unwrap()
            .remove("maxStreamsPerPeer");
    });
    let report = reload(&p.ctl_b(), 0).await;
    assert_eq!(names(&report["exposed_added"]), ["extra"], "{report:#}");
    b_events.kill().await;
}

/// A few round trips through `local`, then until `b` has closed their streams.
async fn traffic(local: &Sock, b: &Api, p: &Pair) {
    for i in 0..3 {
        echo_once(local, format!("ping {i}").as_bytes(), WAIT)
            .await
            .unwrap();
    }
    wait_for(
        "b's streams closed",
        WAIT,
        || p.diag(),
        async || b.streams().await.is_empty().then_some(()),
    )
    .await;
}

/// `logger.level` from info to debug by `wovenetctl reload`, then back by SIGHUP: the JSON
/// log gains DEBUG lines for traffic only while the level is debug. Fails on the old code
/// (the level was fixed at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_level_change_applies_to_new_log_lines() {
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let mut p = Pair::new(
        |b| b.expose("echo", echo.sock()).log_level("info"),
        |a| a.remote("b", "echo", &local),
    )
    .await;
    p.wait_forward(&local).await;
    let debug = |s: &Site| s.log_lines().iter().filter(|l| l.level == "DEBUG").count();
    let api = p.b.api().await;
    // Streams end on both sites with a debug line; at info, b writes none.
    traffic(&local, &api, &p).await;
    assert_eq!(debug(&p.b), 0, "{}", p.diag());
    assert!(p.b.log_lines().iter().any(|l| l.level == "INFO"));

    p.b.edit_config(|c| c["logger"]["level"] = json!("debug"));
    let report = reload(&p.ctl_b(), 0).await;
    assert_eq!(report["log_level"], "debug", "{report:#}");
    traffic(&local, &api, &p).await;
    assert!(
        debug(&p.b) > 0,
        "no DEBUG line after the switch\n{}",
        p.diag()
    );

    let mut events = p.ctl_b().spawn(&["-o", "json", "events"]);
    events.wait_line("\"snapshot\"", WAIT).await.unwrap();
    p.b.edit_config(|c| c["logger"]["level"] = json!("info"));
    p.b.hangup();
    let event = next_reload_event(&mut events).await;
    assert_eq!(event["log_level"], "info", "{event:#}");
    let at_switch = debug(&p.b);
    traffic(&local, &api, &p).await;
    assert_eq!(
        debug(&p.b),
        at_switch,
        "DEBUG lines after going back to info\n{}",
        p.diag()
    );
    events.kill().await;
}

/// A new siteName beside a new app: the app is applied, the name is reported as needing a
/// restart (exit 3) and the site keeps its name, its peer and its traffic; reloading again
/// reports it again, since it is still not applied. Fails on the old code (no reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_name_change_needs_a_restart_and_is_not_applied() {
    let (mut p, _echo, local) = Pair::echo().await;
    let extra = EchoServer::tcp().await;
    p.b.edit_config(|c| {
        c["siteName"] = json!("b2");
        c["localExposedApps"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "appName": "extra", "appSocket": extra.sock().to_string() }));
    });
    let report = reload(&p.ctl_b(), 3).await;
    assert_eq!(report["outcome"], "needs_restart", "{report:#}");
    assert_eq!(report["needs_restart"], json!(["siteName"]), "{report:#}");
    assert_eq!(names(&report["exposed_added"]), ["extra"], "{report:#}");

    let out = p.ctl_b().run(&["reload"]).await;
    assert_eq!(out.code, Some(3), "{out}");
    assert!(
        out.stdout.contains("needs a restart of wovenetd: siteName"),
        "{out}"
    );
    assert_eq!(p.b.api().await.site().await.name, "b");
    let want = owned(&[("echo", false), ("extra", false)]);
    assert_eq!(exposed_apps(&p.b).await, want);
    // a still knows b by its old name, now with the new app.
    wait_for(
        "a sees b offering extra",
        WAIT,
        || p.diag(),
        async || {
            let peer = p.a.api().await.peer("b").await?;
            peer.apps.iter().any(|x| x == "extra").then_some(())
        },
    )
    .await;
    echo_once(&local, b"same name", WAIT).await.unwrap();
}

/// Apps added and removed through the API (`expose add`, `expose rm`, `remote add`) stay
/// as they are when files that do not list them are reloaded, and a connection on a
/// live-added app keeps flowing. Fails on the old code (no reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_changed_through_the_api_survive_a_reload() {
    let echo = EchoServer::tcp().await;
    let spare = EchoServer::tcp().await;
    let live = EchoServer::tcp().await;
    let extra = EchoServer::tcp().await;
    let (local, live_local) = (Sock::free_tcp(), Sock::free_tcp());
    let mut p = Pair::new(
        |b| b.expose("echo", echo.sock()).expose("spare", spare.sock()),
        |a| a.remote("b", "echo", &local),
    )
    .await;
    p.wait_forward(&local).await;
    let live_sock = live.sock().to_string();
    let live_local_text = live_local.to_string();
    p.ctl_b()
        .ok(&["expose", "add", "--name", "live", "--socket", &live_sock])
        .await;
    p.ctl_b().ok(&["expose", "rm", "spare"]).await;
    p.ctl_a()
        .ok(&[
            "remote",
            "add",
            "--site",
            "b",
            "--app",
            "live",
            "--local",
            &live_local_text,
        ])
        .await;
    p.wait_forward(&live_local).await;
    let conn = EchoConn::connect(&live_local, WAIT).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let pinger = keep_pinging(conn, stop_rx);

    // b's file gains `extra` and still lists `spare`, never `live`.
    p.b.edit_config(|c| {
        c["localExposedApps"] = exposed(&[
            ("echo", echo.sock()),
            ("spare", spare.sock()),
            ("extra", extra.sock()),
        ]);
    });
    let report = reload(&p.ctl_b(), 0).await;
    assert_eq!(names(&report["exposed_added"]), ["extra"], "{report:#}");
    assert!(names(&report["exposed_removed"]).is_empty(), "{report:#}");
    assert_eq!(
        exposed_apps(&p.b).await,
        owned(&[("echo", false), ("extra", false), ("live", true)]),
        "live stays, spare stays removed"
    );
    // a's file is unchanged: nothing to do, the live remote app stays.
    let report = reload(&p.ctl_a(), 0).await;
    assert!(names(&report["remote_removed"]).is_empty(), "{report:#}");
    assert!(names(&report["remote_added"]).is_empty(), "{report:#}");
    assert_eq!(
        remote_apps(&p.a).await,
        owned(&[("echo", false), ("live", true)])
    );
    // The same by SIGHUP: nothing changes.
    for site in [&mut p.b, &mut p.a] {
        let mut events = Ctl::site(site).spawn(&["-o", "json", "events"]);
        events.wait_line("\"snapshot\"", WAIT).await.unwrap();
        site.hangup();
        let event = next_reload_event(&mut events).await;
        assert_eq!(event["outcome"], "applied", "{event:#}");
        assert!(
            [
                "exposed_added",
                "exposed_removed",
                "remote_added",
                "remote_removed"
            ]
            .iter()
            .all(|k| names(&event[*k]).is_empty()),
            "{event:#}"
        );
        events.kill().await;
    }
    echo_once(&live_local, b"after the reloads", WAIT)
        .await
        .unwrap();
    assert_eq!(
        exposed_apps(&p.b).await,
        owned(&[("echo", false), ("extra", false), ("live", true)])
    );

    stop_tx.send(true).unwrap();
    let (conn, _) = pinger
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the stream on live broke: {e}\n{}", p.diag()));
    conn.finish(WAIT).await.unwrap();
}

/// A changed exposed app (same name, another socket) serves new connections from the new
/// definition while a connection opened before keeps its old target; a changed remote app
/// (same local socket, a limit added) gets its listener reopened at once on the same
/// address, and the connection accepted before keeps flowing. Fails on the old code (no
/// reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_apps_serve_new_connections_while_open_ones_finish() {
    let old = EchoServer::tcp_with_banner(*b"old:").await;
    let new = EchoServer::tcp_with_banner(*b"new:").await;
    let local = Sock::free_tcp();
    let mut p = Pair::new(
        |b| b.expose("echo", old.sock()),
        |a| a.remote("b", "echo", &local),
    )
    .await;
    try_wait_forward_with_banner(&local, b"old:", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let mut before = EchoConn::connect(&local, WAIT).await.unwrap();
    before.read_banner(b"old:", WAIT).await.unwrap();
    before.ping(b"first", WAIT).await.unwrap();

    p.b.edit_config(|c| c["localExposedApps"] = exposed(&[("echo", new.sock())]));
    let report = reload(&p.ctl_b(), 0).await;
    assert_eq!(names(&report["exposed_changed"]), ["echo"], "{report:#}");
    assert_eq!(
        report["exposed_changed"][0]["app_socket"],
        new.sock().to_string()
    );
    echo_once_with_banner(&local, b"new:", b"to the new target", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    before.ping(b"still the old target", WAIT).await.unwrap();

    p.a.edit_config(|c| c["remoteApps"][0]["maxConnections"] = json!(5));
    let report = reload(&p.ctl_a(), 0).await;
    assert_eq!(names(&report["remote_changed"]), ["echo"], "{report:#}");
    assert_eq!(report["remote_changed"][0]["max_connections"], 5);
    // Reopened on the same address before the reply, not by a later retry.
    let state = p.a.api().await.listener_state("b", "echo").await;
    assert_eq!(state, Some(v1::ListenerState::Open), "{}", p.diag());
    echo_once_with_banner(&local, b"new:", b"through the reopened listener", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.diag()));
    let listener = remote_app(&p.a.api().await.apps().await, "b", "echo")
        .cloned()
        .unwrap();
    assert_eq!(listener.spec.unwrap().max_connections, Some(5));
    before.ping(b"and still flowing", WAIT).await.unwrap();
    before.finish(WAIT).await.unwrap();
}

/// `allowedSites` changed by a reload is offered at once: restricting the app to another
/// site closes a's listener, allowing a again opens it. Fails on the old code (no reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_sites_change_is_offered_at_once() {
    let (mut p, echo, local) = Pair::echo().await;
    let restrict = |c: &mut Value, site: &str| {
        c["localExposedApps"] = json!([{
            "appName": "echo", "appSocket": echo.sock().to_string(), "allowedSites": [site],
        }]);
    };
    p.b.edit_config(|c| restrict(c, "c"));
    let report = reload(&p.ctl_b(), 0).await;
    assert_eq!(
        report["exposed_changed"][0]["allowed_sites"],
        json!(["c"]),
        "{report:#}"
    );
    wait_closed(&local, &p).await;
    p.b.edit_config(|c| restrict(c, "a"));
    p.b.hangup();
    p.wait_forward(&local).await;
}
