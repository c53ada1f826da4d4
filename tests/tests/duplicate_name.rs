//! Two running sites with the same siteName and the same identity (a copied config
//! directory): the first keeps its name, its channels and its streams; the second is refused
//! by the others and shown as a conflict in their `peers`; a genuine restart (clean or after a
//! crash) is still taken over within seconds. (Another identity claiming the name is refused
//! earlier, by its identity: see `identity.rs`.)
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use wovenet_e2e::*;

/// `siteName` of the site that gets a duplicate.
const B: &str = "b";

/// This site's instance id (hex), from `wovenetctl status`.
async fn instance(site: &Site) -> String {
    let v = Ctl::site(site).json(&["status"]).await;
    v["site"]["instance"].as_str().unwrap().to_owned()
}

/// Peer `name` in `wovenetctl peers -o json` of `ctl`'s site, if listed.
async fn peer(ctl: &Ctl, name: &str) -> Option<Value> {
    let v = ctl.json(&["peers"]).await;
    v["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// `(holder instance, conflicting instances)` of peer `name`, `None` if not listed.
async fn holder(ctl: &Ctl, name: &str) -> Option<(String, Vec<String>)> {
    let p = peer(ctl, name).await?;
    let conflicts = p["conflicting_instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no conflicting_instances in {p}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    Some((p["instance"].as_str()?.to_owned(), conflicts))
}

/// One site counter from `wovenetctl stats -o json`.
async fn counter(ctl: &Ctl, name: &str) -> u64 {
    let v = ctl.json(&["stats", "--interval", "200ms"]).await;
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {v}"))
}

/// A uses B's `echo` through `local`; both connected.
async fn setup() -> EchoOverBroker {
    EchoOverBroker::new(|a| a).await
}

/// Regression for issue 9: a second process started with a copy of B's config (same
/// siteName) made every other site treat it as B restarted; the two then superseded each
/// other at every announcement and every connection through B was reset within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_site_with_the_same_name_is_refused_and_the_first_keeps_its_streams() {
    let s = setup().await;
    let (a, b) = (&s.a, &s.b);
    let ctl_a = Ctl::site(a);
    let b_id = instance(b).await;
    assert_eventually_async!(
        holder(&ctl_a, B).await == Some((b_id.clone(), vec![])),
        WAIT,
        "A lists B ({b_id}) without conflict: {:?}\n{}",
        peer(&ctl_a, B).await,
        diag(&[a, b])
    );
    let refused_before = counter(&ctl_a, "claims_refused").await;
    let conn = EchoConn::connect(&s.local, WAIT).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let pinger = keep_pinging(conn, stop_rx);

    // B2: B's config and identity (same siteName and app), another app server and its own
    // UDP port.
    let echo2 = EchoServer::tcp().await;
    let mut b2 = s.net.site(B).expose("echo", echo2.sock()).prepare();
    b2.copy_identity_from(b);
    b2.start().await;
    let b2_id = instance(&b2).await;
    assert_ne!(b_id, b2_id);
    assert_eventually_async!(
        holder(&ctl_a, B).await == Some((b_id.clone(), vec![b2_id.clone()])),
        WAIT,
        "A keeps B ({b_id}) and lists B2 ({b2_id}) as a conflict: {:?}\n{}",
        peer(&ctl_a, B).await,
        diag(&[a, b, &b2])
    );
    assert_eventually_async!(
        counter(&ctl_a, "claims_refused").await > refused_before,
        WAIT,
        "A counts the refused claim\n{}",
        diag(&[a, &b2])
    );
    // Both keep running for a while (each (re)dials and announces): nothing changes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!pinger.is_finished(), "{:?}", pinger.await);
    assert_eq!(
        holder(&ctl_a, B).await,
        Some((b_id.clone(), vec![b2_id.clone()]))
    );
    // New connections go to B, never to B2.
    echo_once(&s.local, b"new connection while B2 runs", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag(&[a, b, &b2])));

    b2.stop().await;
    assert_eventually_async!(
        holder(&ctl_a, B).await == Some((b_id.clone(), vec![])),
        WAIT,
        "the conflict clears once B2 is gone: {:?}\n{}",
        peer(&ctl_a, B).await,
        diag(&[a, b])
    );
    stop_tx.send_replace(true);
    let (conn, pings) = pinger
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the stream through B broke: {e}\n{}", diag(&[a, b])));
    assert!(pings >= 20, "{pings} pings");
    conn.finish(WAIT)
        .await
        .unwrap_or_else(|e| panic!("the stream through B did not end cleanly: {e}"));
    echo_once(&s.local, b"after B2 left", WAIT).await.unwrap();
    assert_eq!(echo2.accepted(), 0, "no connection ever reached B2's app");
    assert!(s.echo.accepted() >= 3);
}

/// A clean restart of B (new instance, same config) is taken over as soon as it announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_site_is_taken_over_within_seconds() {
    let mut s = setup().await;
    let ctl_a = Ctl::site(&s.a);
    let old = instance(&s.b).await;
    s.b.stop().await;
    let t = Instant::now();
    s.b.start().await;
    let new = instance(&s.b).await;
    assert_ne!(old, new);
    assert_eventually_async!(
        holder(&ctl_a, B).await == Some((new.clone(), vec![])),
        Duration::from_secs(5),
        "A takes over B's new instance {new}: {:?}\n{}",
        peer(&ctl_a, B).await,
        diag(&[&s.a, &s.b])
    );
    eprintln!(
        "clean restart: new instance listed by A {:?} after the start",
        t.elapsed()
    );
    wait_forward(&s.local, Duration::from_secs(5), &[&s.a, &s.b]).await;
    assert_eq!(counter(&ctl_a, "claims_refused").await, 0);
}

/// A crashed B restarted at once is taken over as soon as its old channels time out
/// (keep-alive 2 s, idle timeout 8 s), not after the 100 s peer expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_and_restarted_site_is_taken_over_once_its_old_channels_time_out() {
    let mut s = setup().await;
    let ctl_a = Ctl::site(&s.a);
    let old = instance(&s.b).await;
    s.b.kill();
    let t = Instant::now();
    s.b.start().await;
    let new = instance(&s.b).await;
    assert_ne!(old, new);
    assert_eventually_async!(
        holder(&ctl_a, B).await.is_some_and(|(i, _)| i == new),
        Duration::from_secs(20),
        "A takes over B's new instance {new}: {:?}\n{}",
        peer(&ctl_a, B).await,
        diag(&[&s.a, &s.b])
    );
    eprintln!(
        "crash restart: new instance listed by A {:?} after the start",
        t.elapsed()
    );
    wait_forward(&s.local, Duration::from_secs(5), &[&s.a, &s.b]).await;
    assert_eq!(
        holder(&ctl_a, B).await,
        Some((new, vec![])),
        "not a conflict"
    );
}
