//! Faults and lifecycle: a wrong-key site, several dataChannels, a site killed and restarted,
//! clean SIGTERM shutdown, and `wovenetd check`. A channel losing all its packets under live
//! streams is `channel_cut.rs`.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::Duration;

use tokio::task::JoinSet;
use wovenet_e2e::*;
use wovenet_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_with_the_wrong_key_is_locked_out() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let echo = EchoServer::tcp().await;
    let bait = EchoServer::tcp().await;
    let (good_local, evil_local, bait_local) =
        (Sock::free_tcp(), Sock::free_tcp(), Sock::free_tcp());
    let b = net.site("b").expose("echo", echo.sock()).spawn().await;
    let a = net
        .site("a")
        .remote("b", "echo", &good_local)
        .remote("evil", "bait", &bait_local)
        .spawn()
        .await;
    wait_forward(&good_local, WAIT, &[&a, &b]).await;

    // Same broker and topic, different passphrase.
    let evil = net
        .site("evil")
        .key("wrong-key-999")
        .expose("bait", bait.sock())
        .remote("b", "echo", &evil_local)
        .spawn()
        .await;
    let all = || diag(&[&a, &b, &evil]);
    for good in [&a, &b] {
        // evil's announcements arrive and are thrown away: counted, never acted on.
        let api = good.api().await;
        wait_for(
            format!(
                "site {} counting evil's undecryptable messages",
                good.name()
            ),
            WAIT,
            all,
            || async { (api.counter("messages_undecryptable").await > 0).then_some(()) },
        )
        .await;
        assert!(api.peer("evil").await.is_none(), "{}", all());
    }
    stays_closed(&evil_local, Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("evil got a listener for b's app: {e}\n{}", all()));
    stays_closed(&bait_local, Duration::from_millis(500))
        .await
        .unwrap_or_else(|e| panic!("a got a listener for evil's app: {e}\n{}", all()));
    let evil_api = evil.api().await;
    assert_eq!(
        evil_api.listener_state("b", "echo").await,
        Some(v1::ListenerState::Waiting),
        "{}",
        all()
    );
    assert!(
        evil_api.peers().await.is_empty() && evil_api.channels().await.is_empty(),
        "evil knows a peer or has a channel\n{}",
        all()
    );
    assert_eq!(bait.accepted(), 0, "{}", all());
    echo_once(&good_local, b"the good pair still works", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", all()));
}

/// `b` listens on two local sockets; `a` on one. Returns sites, local socket, echo server.
async fn two_channel_pair(broker: &Broker) -> (Site, Site, Sock, EchoServer) {
    let net = Net::new(broker.url());
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let b = net
        .site("b")
        .socket(free_udp_port())
        .socket(free_udp_port())
        .expose("echo", echo.sock())
        .spawn()
        .await;
    let a = net.site("a").remote("b", "echo", &local).spawn().await;
    wait_forward(&local, WAIT, &[&a, &b]).await;
    (a, b, local, echo)
}

/// Waits until `a` reports at least two dataChannels up to `b`; returns their ids.
async fn wait_two_channels(a: &Site, b: &Site) -> Vec<u64> {
    let api = a.api().await;
    wait_for(
        "two dataChannels a<->b (b has two localSockets)",
        WAIT,
        || diag(&[a, b]),
        || async {
            let ids = api.up_channels("b").await;
            (ids.len() >= 2).then_some(ids)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_local_sockets_make_two_data_channels() {
    let broker = Broker::embedded().await;
    let (a, b, local, _echo) = two_channel_pair(&broker).await;
    wait_two_channels(&a, &b).await;
    let mut set = JoinSet::new();
    for i in 0..20u64 {
        let local = local.clone();
        set.spawn(async move { echo_once(&local, &data::bytes(i, 64 * 1024), WAIT).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", diag(&[&a, &b])));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_site_is_found_again_after_restart() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let mut b = net.site("b").expose("echo", echo.sock()).spawn().await;
    let a = net.site("a").remote("b", "echo", &local).spawn().await;
    wait_forward(&local, WAIT, &[&a, &b]).await;

    b.kill();
    b.start().await;
    wait_forward(&local, WAIT, &[&a, &b]).await;
    echo_once(&local, &data::bytes(9, 100_000), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag(&[&a, &b])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_removes_unix_sockets() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let echo = EchoServer::tcp().await;
    let dir = socket_dir();
    let local = Sock::unix(dir.path().join("a-echo.sock"));
    let mut b = net.site("b").expose("echo", echo.sock()).spawn().await;
    let mut a = net.site("a").remote("b", "echo", &local).spawn().await;
    wait_forward(&local, WAIT, &[&a, &b]).await;
    let path = local.path().unwrap().to_path_buf();
    assert!(path.exists());
    let control = a.control_socket();
    let control_existed = control.exists();

    a.stop().await; // asserts exit code 0
    assert!(
        !path.exists(),
        "a left its remote app socket {} behind\n{}",
        path.display(),
        a.diag()
    );
    if control_existed {
        assert!(
            !control.exists(),
            "a left its control socket {} behind\n{}",
            control.display(),
            a.diag()
        );
    }
    b.stop().await;
}

#[test]
fn check_accepts_a_good_config_and_names_the_field_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Site::builder("a")
        .topic(random_topic())
        .broker("mqtt://127.0.0.1:1883")
        .expose("echo", "tcp:127.0.0.1:5000")
        .remote("b", "web", "tcp:127.0.0.1:6000");
    let good = builder.write_config(dir.path());
    let out = check_config(&good);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`wovenetd check` rejected a good config ({}): {stderr}",
        out.status
    );

    type Breaker = fn(&mut serde_json::Value);
    let cases: [(&str, Breaker, &str); 3] = [
        (
            "short-key.yaml",
            |d| d["crypto"]["key"] = "short".into(),
            "crypto.key",
        ),
        (
            "bad-socket.yaml",
            |d| d["localExposedApps"][0]["appSocket"] = "bogus:1".into(),
            "localExposedApps[0].appSocket",
        ),
        (
            "bad-remote.yaml",
            |d| d["remoteApps"][0]["localSocket"] = "tcp:nowhere".into(),
            "remoteApps[0].localSocket",
        ),
    ];
    for (file, break_it, field) in cases {
        let mut doc = builder.document(dir.path());
        break_it(&mut doc);
        let path = write_yaml(&dir.path().join(file), &doc);
        let out = check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{file}: expected exit code 64, got {}; stderr: {stderr}",
            out.status
        );
        assert!(
            stderr.contains(&format!("{field}:")),
            "{file}: expected a '{field}: reason' line on stderr, got: {stderr}"
        );
    }
}
