//! Sites discovering each other through a real mosquitto, and surviving its restart: tunnels
//! do not depend on the broker once up, and discovery works again after it returns.
//! Skipped when mosquitto is missing unless `WOVENET_REQUIRE_MOSQUITTO=1` (then they fail).
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::Duration;

use tokio::sync::oneshot;
use wovenet_e2e::*;
use wovenet_proto::v1;

/// The site's broker connection state, from `GetSite`.
async fn broker_state(site: &Site) -> v1::BrokerState {
    site.api().await.site().await.broker_state()
}

/// Waits until the site reports `state` for its broker connection.
async fn wait_broker_state(site: &Site, state: v1::BrokerState, diag: &str) {
    let api = site.api().await;
    wait_for(
        format!("site {}: broker {state:?}", site.name()),
        WAIT,
        || diag.to_owned(),
        || async { (api.site().await.broker_state() == state).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_find_each_other_through_mosquitto() {
    let Some(broker) = Broker::mosquitto().await else {
        return;
    };
    let net = Net::new(broker.url());
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let b = net.site("b").expose("echo", echo.sock()).spawn().await;
    let a = net.site("a").remote("b", "echo", &local).spawn().await;
    wait_forward(&local, WAIT, &[&a, &b]).await;
    assert_eq!(
        broker_state(&a).await,
        v1::BrokerState::Connected,
        "{}",
        diag(&[&a, &b])
    );
    echo_once(&local, &data::bytes(5, 256 * 1024), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", diag(&[&a, &b]), broker.diag()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_keeps_tunnels_and_discovery_resumes() {
    let Some(mut broker) = Broker::mosquitto().await else {
        return;
    };
    let net = Net::new(broker.url());
    let echo = EchoServer::tcp().await;
    let late_echo = EchoServer::tcp().await;
    let (local, late_local) = (Sock::free_tcp(), Sock::free_tcp());
    let b = net.site("b").expose("echo", echo.sock()).spawn().await;
    let a = net
        .site("a")
        .remote("b", "echo", &local)
        .remote("c", "echo", &late_local)
        .spawn()
        .await;
    wait_forward(&local, WAIT, &[&a, &b]).await;
    let all = |broker: &Broker| format!("{}\n{}", diag(&[&a, &b]), broker.diag());

    // A long-lived connection pings every 50 ms for the whole outage.
    let mut conn = EchoConn::connect(&local, WAIT).await.unwrap();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let pinger = tokio::spawn(async move {
        let mut pings = 0u64;
        loop {
            let payload = data::bytes(pings, 1024);
            if let Err(e) = conn.ping(&payload, Duration::from_secs(5)).await {
                return Err(format!(
                    "long-lived connection failed after {pings} good pings: {e}"
                ));
            }
            pings += 1;
            tokio::select! {
                _ = &mut stop_rx => return Ok((pings, conn)),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });

    broker.stop().await;
    for site in [&a, &b] {
        wait_broker_state(site, v1::BrokerState::Reconnecting, &all(&broker)).await;
    }
    echo_once(&local, b"new connection while the broker is down", WAIT)
        .await
        .unwrap_or_else(|e| panic!("tunnel should not need the broker: {e}\n{}", all(&broker)));

    broker.start().await;
    for site in [&a, &b] {
        wait_broker_state(site, v1::BrokerState::Connected, &all(&broker)).await;
    }

    let _ = stop_tx.send(());
    let (pings, conn) = pinger
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", all(&broker)));
    assert!(pings > 3, "only {pings} pings during the outage");
    conn.finish(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", all(&broker)));
    echo_once(&local, b"new connection after the restart", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", all(&broker)));

    // Discovery works again: a site that starts only now is found through the new broker.
    let c = net.site("c").expose("echo", late_echo.sock()).spawn().await;
    wait_forward(&late_local, WAIT, &[&a, &c]).await;
}
