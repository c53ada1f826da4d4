//! Site identities end to end, with real `wovenetd` processes and a real broker: a process
//! holding the network key but a fresh identity that claims a known site's name is refused
//! (while that site runs, and after it stopped) and breaks no stream; `wovenetctl peers forget`
//! accepts a reinstalled site; identity files and pins survive restarts; `trust.mode: strict`
//! admits only the listed sites; `trust.mode: open` leaves claims to the duplicate-name rules;
//! and every config of the original project still loads, runs, and pins only its peers.
//!
//! Peer and counter state is read through the control API ([`Api`]), never from log text.
//! (The same identity started twice is a duplicate name, not an impostor: see
//! `duplicate_name.rs`.)
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use wovenet_e2e::*;
use wovenet_proto::v1;

/// `siteName` of the site whose name an impostor claims.
const B: &str = "b";

/// How long a test watches for something that must not happen once the impostor is active.
const QUIET: Duration = Duration::from_secs(2);

/// The rows of one site name in a `ListPeers` answer: the accepted one (if any) and the
/// identities refused for that name.
#[derive(Debug, Default)]
struct Rows {
    accepted: Option<v1::Peer>,
    refused: Vec<v1::Peer>,
}

impl Rows {
    /// The refused row of `identity`.
    fn refused_as(&self, identity: &str) -> Option<&v1::Peer> {
        self.refused.iter().find(|p| p.identity == identity)
    }

    /// Whether the accepted row is a connected peer with `identity` standing as `trust`.
    fn accepted_as(&self, identity: &str, trust: v1::TrustState) -> bool {
        self.accepted.as_ref().is_some_and(|p| {
            p.state() == v1::PeerState::Connected && p.identity == identity && p.trust() == trust
        })
    }
}

/// `name`'s rows in `api`'s peers.
async fn rows(api: &Api, name: &str) -> Rows {
    let mut rows = Rows::default();
    for p in api.peers().await.into_iter().filter(|p| p.name == name) {
        if p.state() == v1::PeerState::Refused {
            rows.refused.push(p);
        } else {
            assert!(rows.accepted.is_none(), "two accepted rows for {name}");
            rows.accepted = Some(p);
        }
    }
    rows
}

/// Waits until `api`'s rows for `name` satisfy `check`; panics with them and `diag()`.
async fn wait_rows(
    api: &Api,
    name: &str,
    what: &str,
    diag: impl FnOnce() -> String,
    check: impl Fn(&Rows) -> bool,
) -> Rows {
    let last = std::sync::Mutex::new(Rows::default());
    let found = poll(WAIT, || async {
        let r = rows(api, name).await;
        if check(&r) {
            Some(r)
        } else {
            *last.lock().unwrap() = r;
            None
        }
    })
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "{what}: not seen within {WAIT:?}; last rows for {name}: {:#?}\n{}",
            last.lock().unwrap(),
            diag()
        )
    })
}

/// Waits until `who`'s claim to `name` shows in `api`'s peers as refused with `trust` (and,
/// for a conflict, the identity the name is pinned to).
async fn wait_refused(
    api: &Api,
    name: &str,
    who: &str,
    trust: v1::TrustState,
    pinned: &str,
    diag: impl FnOnce() -> String,
) -> v1::Peer {
    let what = format!("{name} claimed by {who} refused as {trust:?} (pinned {pinned:?})");
    let rows = wait_rows(api, name, &what, diag, |r| {
        r.refused_as(who)
            .is_some_and(|p| p.trust() == trust && p.pinned_identity == pinned)
    })
    .await;
    rows.refused_as(who).cloned().unwrap()
}

/// The site's identity fingerprint (`GetSite.identity`).
async fn identity(site: &Site) -> String {
    site.api().await.site().await.identity
}

/// Waits until counter `name` of `api`'s site reaches `at_least`.
async fn wait_counter(api: &Api, name: &str, at_least: u64, diag: impl FnOnce() -> String) {
    wait_for(
        format!("counter {name} >= {at_least}"),
        WAIT,
        diag,
        || async { (api.counter(name).await >= at_least).then_some(()) },
    )
    .await;
}

/// Makes `site` announce now (a live app change is announced at once), so that a site it
/// refuses learns its address now, not at the periodic announcement up to 30 s later, and
/// dials it. The app is never used.
async fn announce_now(site: &Site) {
    let nudge = site.unix_sock("nudge.sock").to_string();
    Ctl::site(site)
        .ok(&["expose", "add", "--name", "nudge", "--socket", &nudge])
        .await;
}

/// Waits until `site` has dialled `peer` (a channel, up or failed) — for a refused site, the
/// moment it tries to use the site that refuses it.
async fn wait_dialled(site: &Site, peer: &str) {
    let api = site.api().await;
    wait_for(
        format!("site {} dials {peer}", site.name()),
        WAIT,
        || site.diag(),
        || async {
            api.channels()
                .await
                .iter()
                .any(|c| {
                    c.peer == peer
                        && (c.state() == v1::ChannelState::Up
                            || c.reconnect_attempts > 0
                            || !c.last_error.is_empty())
                })
                .then_some(())
        },
    )
    .await;
}

/// Mode bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A uses B's `echo` through `local`; both connected and A shows B's identity pinned.
struct Setup {
    _broker: Broker,
    net: Net,
    echo: EchoServer,
    local: Sock,
    a: Site,
    b: Site,
    api_a: Api,
    /// B's identity fingerprint.
    b_id: String,
}

impl Setup {
    /// A with `trust` as its `trust` section (none: the default, pinned).
    async fn new(trust: Option<Value>) -> Self {
        let EchoOverBroker {
            broker,
            net,
            echo,
            local,
            a,
            b,
        } = EchoOverBroker::new(|a| match trust {
            Some(trust) => a.extra("trust", trust),
            None => a,
        })
        .await;
        let api_a = a.api().await;
        let b_id = identity(&b).await;
        Self {
            _broker: broker,
            net,
            echo,
            local,
            a,
            b,
            api_a,
            b_id,
        }
    }

    /// Waits until A shows B connected with its identity, standing as `trust`.
    async fn wait_b_accepted(&self, trust: v1::TrustState) -> Rows {
        let what = format!("A lists B connected, identity {}, {trust:?}", self.b_id);
        wait_rows(
            &self.api_a,
            B,
            &what,
            || self.diag(&[]),
            |r| r.accepted_as(&self.b_id, trust),
        )
        .await
    }

    /// Waits until A's state file holds exactly one pin: B's name to `identity` (pins are
    /// written at A's next housekeeping tick, every 5 s).
    async fn wait_pin_persisted(&self, identity: &str, diag: impl FnOnce() -> String) {
        let want = [(B.to_owned(), identity.to_owned())];
        wait_for(
            format!("A's state file pins {B} to {identity}"),
            WAIT,
            || format!("knownSites now: {:?}\n{}", self.a.known_sites(), diag()),
            || async { (self.a.known_sites() == want).then_some(()) },
        )
        .await;
    }

    /// B's config (same siteName, key and app) in a fresh directory, so a fresh identity,
    /// serving the app from `echo`.
    fn impostor(&self, echo: &EchoServer) -> SiteBuilder {
        self.net.site(B).expose("echo", echo.sock())
    }

    fn diag(&self, more: &[&Site]) -> String {
        let mut all = vec![&self.a, &self.b];
        all.extend_from_slice(more);
        diag(&all)
    }
}

/// Issue 11: a member holding the network key but another identity starts with B's config
/// while B runs. A refuses it by identity; B keeps its row, its channels and its stream, and
/// the impostor's dataChannel to A is never used and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_of_a_running_site_is_refused_and_breaks_no_stream() {
    let s = Setup::new(None).await;
    let api_a = &s.api_a;
    let b_row = s
        .wait_b_accepted(v1::TrustState::New)
        .await
        .accepted
        .unwrap();
    assert_eq!(api_a.counter("identities_refused").await, 0);
    let conn = EchoConn::connect(&s.local, WAIT).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let pinger = keep_pinging(conn, stop_rx);

    let echo2 = EchoServer::tcp().await;
    let imp = s.impostor(&echo2).spawn().await;
    let imp_id = identity(&imp).await;
    assert_ne!(imp_id, s.b_id, "a fresh directory has a fresh identity");
    let diag = || s.diag(&[&imp]);
    wait_refused(api_a, B, &imp_id, v1::TrustState::Conflict, &s.b_id, diag).await;
    wait_counter(api_a, "identities_refused", 1, diag).await;

    // The impostor learns A's address and dials it: A refuses that channel at once (its
    // instance's messages were refused by identity), so new connections still all go to B.
    announce_now(&s.a).await;
    wait_dialled(&imp, "a").await;
    for i in 0..3 {
        let data = format!("connection {i} while the impostor dials A");
        echo_once(&s.local, data.as_bytes(), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    }
    wait_counter(api_a, "claims_refused", 1, diag).await;
    let seen = rows(api_a, B).await;
    let now = seen.accepted.as_ref().unwrap();
    assert_eq!(
        (now.instance.as_str(), now.identity.as_str(), now.trust()),
        (
            b_row.instance.as_str(),
            s.b_id.as_str(),
            v1::TrustState::New
        ),
        "B keeps its row: {seen:#?}"
    );
    let refused = seen.refused_as(&imp_id).unwrap();
    assert!(refused.refused_messages >= 1, "{seen:#?}");
    assert_eq!(seen.refused.len(), 1, "{seen:#?}");
    // The impostor keeps redialling (and being refused) while B's row stays as it is.
    never(
        "B's row changes while the impostor runs",
        QUIET,
        diag,
        || async {
            rows(api_a, B).await.accepted.is_none_or(|r| {
                r.instance != b_row.instance || r.state() != v1::PeerState::Connected
            })
        },
    )
    .await;

    assert!(!pinger.is_finished(), "{:?}", pinger.await);
    stop_tx.send_replace(true);
    let (conn, pings) = pinger
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the stream through B broke: {e}\n{}", diag()));
    assert!(pings >= 20, "{pings} pings");
    conn.finish(WAIT)
        .await
        .unwrap_or_else(|e| panic!("the stream through B did not end cleanly: {e}"));
    assert_eq!(
        echo2.accepted(),
        0,
        "no connection ever reached the impostor"
    );
    assert!(s.echo.accepted() >= 5, "{}", s.echo.accepted());
}

/// B stops cleanly; an impostor then claims its name. A's pin outlives B's absence: the
/// impostor is refused and A opens no listener leading to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_after_the_site_stopped_is_refused_and_gets_no_listener() {
    let mut s = Setup::new(None).await;
    s.wait_b_accepted(v1::TrustState::New).await;
    s.b.stop().await;
    let api_a = &s.api_a;
    wait_for(
        "A closes B's app listener once B departed",
        WAIT,
        || s.diag(&[]),
        || async {
            (api_a.listener_state(B, "echo").await != Some(v1::ListenerState::Open)).then_some(())
        },
    )
    .await;

    let echo2 = EchoServer::tcp().await;
    let imp = s.impostor(&echo2).spawn().await;
    let imp_id = identity(&imp).await;
    let diag = || s.diag(&[&imp]);
    wait_refused(api_a, B, &imp_id, v1::TrustState::Conflict, &s.b_id, diag).await;
    // The impostor learns A's address and dials it: its channel is refused at once.
    announce_now(&s.a).await;
    wait_dialled(&imp, "a").await;
    wait_counter(api_a, "claims_refused", 1, diag).await;
    never(
        "A opens b/echo's listener for the impostor",
        QUIET,
        diag,
        || async { api_a.listener_state(B, "echo").await == Some(v1::ListenerState::Open) },
    )
    .await;
    let closed = expect_closed_without_data(&s.local, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    assert_eq!(closed, Closed::Refused, "A's local socket is not listening");
    assert_eq!(echo2.accepted(), 0, "no connection reached the impostor");
    s.wait_pin_persisted(&s.b_id, diag).await;
}

/// B is reinstalled (its config in a fresh directory: a fresh identity). A refuses it until
/// the operator runs `wovenetctl peers forget b`; then the new identity is pinned, persisted,
/// and forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_accepts_a_reinstalled_site() {
    let mut s = Setup::new(None).await;
    s.wait_b_accepted(v1::TrustState::New).await;
    s.wait_pin_persisted(&s.b_id, || s.diag(&[])).await;
    s.b.stop().await;
    let b2 = s.net.site(B).expose("echo", s.echo.sock()).spawn().await;
    let b2_id = identity(&b2).await;
    assert_ne!(b2_id, s.b_id);
    let api_a = &s.api_a;
    let diag = || s.diag(&[&b2]);
    wait_refused(api_a, B, &b2_id, v1::TrustState::Conflict, &s.b_id, diag).await;
    assert!(!is_listening(&s.local).await, "no listener while refused");

    let ctl = Ctl::site(&s.a);
    let out = ctl.run(&["peers", "forget", "nosuch"]).await;
    assert!(
        out.code.is_some_and(|c| c != 0)
            && out
                .stderr
                .contains("no identity is pinned for site 'nosuch'"),
        "expected a failure with the daemon's message\n{out}"
    );
    let forgotten = ctl.json(&["peers", "forget", B]).await;
    assert_eq!(forgotten["identity"], s.b_id.as_str(), "{forgotten}");

    let what = format!("A pins B's new identity {b2_id}");
    wait_rows(api_a, B, &what, diag, |r| {
        r.accepted_as(&b2_id, v1::TrustState::New) && r.refused.is_empty()
    })
    .await;
    wait_forward(&s.local, WAIT, &[&s.a, &b2]).await;
    let data = data::bytes(11, 1 << 20);
    echo_once(&s.local, &data, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    s.wait_pin_persisted(&b2_id, diag).await;
}

/// Both sites restart from their directories: B keeps its identity (and its owner-only key
/// file), A keeps its pin (B shows as pinned, no longer new), and an impostor is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_and_pins_survive_restarts() {
    let mut s = Setup::new(None).await;
    s.wait_b_accepted(v1::TrustState::New).await;
    s.wait_pin_persisted(&s.b_id, || s.diag(&[])).await;
    let a_id = identity(&s.a).await;
    tokio::join!(s.a.stop(), s.b.stop());
    for site in [&s.a, &s.b] {
        assert_eq!(mode(&site.identity_file()), 0o600, "{}", site.name());
    }
    assert_eq!(
        s.b.printed_identity(),
        s.b_id,
        "wovenetd identity loads B's key"
    );
    tokio::join!(s.a.start(), s.b.start());
    assert_eq!(identity(&s.b).await, s.b_id);
    assert_eq!(identity(&s.a).await, a_id);
    s.api_a = s.a.api().await;
    s.wait_b_accepted(v1::TrustState::Pinned).await;
    wait_forward(&s.local, WAIT, &[&s.a, &s.b]).await;

    let echo2 = EchoServer::tcp().await;
    let imp = s.impostor(&echo2).spawn().await;
    let imp_id = identity(&imp).await;
    let diag = || s.diag(&[&imp]);
    let api_a = &s.api_a;
    wait_refused(api_a, B, &imp_id, v1::TrustState::Conflict, &s.b_id, diag).await;
    wait_counter(api_a, "identities_refused", 1, diag).await;
    echo_once(&s.local, b"still B", WAIT).await.unwrap();
    assert_eq!(echo2.accepted(), 0);
    assert_eq!(mode(&s.b.identity_file()), 0o600);
}

/// `trust.mode: strict` on A lists B's identity, printed by `wovenetd identity` before B
/// ever ran. B joins and forwards; C (holding the key, not listed) is refused and cannot
/// reach A's app; an impostor of B is refused as a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_admits_only_the_listed_sites() {
    let broker = Broker::embedded().await;
    let net = Net::new(broker.url());
    let (echo, echo_a, echo2) = (
        EchoServer::tcp().await,
        EchoServer::tcp().await,
        EchoServer::tcp().await,
    );
    let (local, local_c) = (Sock::free_tcp(), Sock::free_tcp());
    let mut b = net.site(B).expose("echo", echo.sock()).prepare();
    assert!(!b.identity_file().exists());
    let b_id = b.printed_identity();
    assert_eq!(mode(&b.identity_file()), 0o600, "created owner-only");
    let mut imp = net.site(B).expose("echo", echo2.sock()).prepare();
    // C runs first, so it hears A's announcement when A starts, and dials it.
    let c = net.site("c").remote("a", "echo-a", &local_c).spawn().await;
    let trust = json!({ "mode": "strict", "sites": [{ "siteName": B, "identity": b_id }] });
    let a = net
        .site("a")
        .remote(B, "echo", &local)
        .expose("echo-a", echo_a.sock())
        .extra("trust", trust)
        .spawn()
        .await;
    tokio::join!(b.start(), imp.start());
    let logs = || diag(&[&a, &b, &c, &imp]);
    assert_eq!(
        identity(&b).await,
        b_id,
        "B runs with the key printed before"
    );
    wait_forward(&local, WAIT, &[&a, &b]).await;

    let api_a = a.api().await;
    assert_eq!(api_a.site().await.trust_mode(), v1::TrustMode::Strict);
    let what = format!("A lists B connected, identity {b_id}, pinned by trust.sites");
    wait_rows(&api_a, B, &what, logs, |r| {
        r.accepted_as(&b_id, v1::TrustState::Pinned)
    })
    .await;
    let c_id = identity(&c).await;
    let c_rows = wait_rows(&api_a, "c", "C refused as not allowed", logs, |r| {
        r.refused_as(&c_id)
            .is_some_and(|p| p.trust() == v1::TrustState::NotAllowed)
    })
    .await;
    assert!(c_rows.accepted.is_none(), "{c_rows:#?}");
    wait_counter(&api_a, "sites_not_allowed", 1, logs).await;
    let imp_id = identity(&imp).await;
    wait_refused(&api_a, B, &imp_id, v1::TrustState::Conflict, &b_id, logs).await;
    wait_counter(&api_a, "identities_refused", 1, logs).await;

    // C has A's address and dials it, but its channel is never confirmed: a connection to
    // A's app through C ends without reaching it.
    wait_dialled(&c, "a").await;
    expect_closed_without_data(&local_c, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(echo_a.accepted(), 0, "C never reached A's app");
    assert_eq!(echo2.accepted(), 0, "nothing reached the impostor");
    assert!(a.known_sites().is_empty(), "strict learns no pins");
}

/// `trust.mode: open` (the original's model): an impostor with a fresh identity is not
/// refused by identity; the peer state machine treats it as a second instance of B (a
/// duplicate name) and B keeps the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_leaves_an_impostor_to_the_duplicate_name_rules() {
    let s = Setup::new(Some(json!({ "mode": "open" }))).await;
    let api_a = &s.api_a;
    assert_eq!(api_a.site().await.trust_mode(), v1::TrustMode::Open);
    let b_row = s
        .wait_b_accepted(v1::TrustState::Unpinned)
        .await
        .accepted
        .unwrap();

    let echo2 = EchoServer::tcp().await;
    let imp = s.impostor(&echo2).spawn().await;
    let imp_instance = imp.api().await.site().await.instance;
    let diag = || s.diag(&[&imp]);
    let rows = wait_rows(
        api_a,
        B,
        "the impostor listed as a conflicting instance",
        diag,
        |r| {
            r.accepted.as_ref().is_some_and(|p| {
                p.instance == b_row.instance && p.conflicting_instances.contains(&imp_instance)
            })
        },
    )
    .await;
    assert!(rows.refused.is_empty(), "no identity refusal: {rows:#?}");
    wait_counter(api_a, "claims_refused", 1, diag).await;
    assert_eq!(api_a.counter("identities_refused").await, 0);
    assert_eq!(api_a.counter("sites_not_allowed").await, 0);
    echo_once(&s.local, b"still B", WAIT).await.unwrap();
    assert_eq!(echo2.accepted(), 0);
    assert!(s.a.known_sites().is_empty(), "open pins nothing");
}

/// The original project's five example use cases (their site configs are kept unchanged in
/// `examples/`) and its reference config (unchanged, a daemon test fixture), with the SHA-256
/// of each file as published there.
const ORIGINALS: [(&str, &[(&str, &str)]); 6] = [
    (
        "examples/convert-unix-to-tcp",
        &[
            (
                "convert-unix-to-tcp-1.yaml",
                "8164f84b409416edb42429cb71d24f346c93b4d031e5af7fb6863c80ba6ae754",
            ),
            (
                "convert-unix-to-tcp-2.yaml",
                "ea016862be377effcb5284d7c566439efdf7b71b5caff2048dbae5df5901e5e7",
            ),
        ],
    ),
    (
        "examples/multiple-port",
        &[
            (
                "multiple-port-1.yaml",
                "baacc66beb1b517e02eb3a557657798f13f05e3ca7b605462a7c6068ed406216",
            ),
            (
                "multiple-port-2.yaml",
                "0991335f87e93de1351b27f491d3171b9073f520f3d722c30d0fc765a8e378f3",
            ),
        ],
    ),
    (
        "examples/network-performance",
        &[
            (
                "network-preformance-1.yaml",
                "2cd69a1a2cc81e1f72ad5d38f2c71831da43cf72f4af75199f29ca92bb2b8c12",
            ),
            (
                "network-preformance-2.yaml",
                "e2c73472302ed1c273942e31530fa34d5de0743fe961390b18545668a86f097a",
            ),
        ],
    ),
    (
        "examples/release-public-ip",
        &[
            (
                "release-public-ip-1.yaml",
                "fb0c53b5bb6e29016d2f77f429919283667fc8a4eeb47cbd3d92413fef7e24d4",
            ),
            (
                "release-public-ip-2.yaml",
                "d7f356aa07372c15f77300731a5458cf8b4dea76c94fdebc4c7fa1807c228e37",
            ),
        ],
    ),
    (
        "examples/reverse-proxy",
        &[
            (
                "reverse-proxy-1.yaml",
                "b1c3ac8355d7caa12f9c9d81d4d5b28ff063f8eda636b1235668e021fc47aca9",
            ),
            (
                "reverse-proxy-2.yaml",
                "ebdcf4cd0c22636bb882c5ce0a88a1d46c42d70611de5fcc8b135cb058693dac",
            ),
            (
                "reverse-proxy-3.yaml",
                "65e5f4df3dbf7aa011533df3be8f0f78305af89dcea8114c25a07837acf62850",
            ),
        ],
    ),
    (
        "daemon/tests/fixtures/config/valid",
        &[(
            "original-config.yaml",
            "22e4c583f70357b548cb61c7e2622ebc2c73c73f0fb25d2a81993c7975255cb9",
        )],
    ),
];

/// The value of `key` in object `v`, matched in any case (the original's loader did, and one
/// example writes `appsocket`).
fn field<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    v.as_object_mut()?
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// The string at `key`, any case.
fn text(v: &mut Value, key: &str) -> String {
    field(v, key)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// An original site config and what it becomes on loopback.
struct Original {
    use_case: &'static str,
    file: PathBuf,
    name: String,
    doc: Value,
    /// `(remote site, app, local socket)` of each remote app.
    remotes: Vec<(String, String, Sock)>,
}

/// Moves the network-facing values of an original config onto loopback; nothing else
/// changes: the broker becomes `broker`; tunnel sockets bind and are announced on 127.0.0.1
/// with a free port (a detected public address asks `detector`); exposed apps are served by
/// `servers` (range apps by their one port); remote apps listen on a free loopback port (a
/// range target becomes its server).
fn to_loopback(
    o: &mut Original,
    broker: &str,
    detector: &str,
    servers: &HashMap<(String, String), EchoServer>,
) {
    let doc = &mut o.doc;
    let mqtt = field(doc, "messageChannel")
        .and_then(|m| field(m, "mqtt"))
        .unwrap();
    *field(mqtt, "brokerServer").unwrap() = json!(broker);
    let sockets = field(doc, "tunnel")
        .and_then(|t| field(t, "localSockets"))
        .and_then(Value::as_array_mut);
    for socket in sockets.into_iter().flatten() {
        let port = free_udp_port();
        if text(socket, "publicAddress") == "autoHttpDetect" {
            *field(socket, "httpDetector")
                .and_then(|d| field(d, "url"))
                .unwrap() = json!(detector);
        } else {
            *field(socket, "publicAddress").unwrap() = json!("127.0.0.1");
        }
        let s = socket.as_object_mut().unwrap();
        s.retain(|k, _| !k.eq_ignore_ascii_case("listenAddress"));
        s.insert("listenAddress".into(), json!("127.0.0.1"));
        for key in ["publicPort", "listenPort"] {
            if let Some(p) = field(socket, key) {
                *p = json!(port);
            }
        }
    }
    let site = o.name.clone();
    let exposed = field(doc, "localExposedApps").and_then(Value::as_array_mut);
    for app in exposed.into_iter().flatten() {
        let server = &servers[&(site.clone(), text(app, "appName"))];
        if text(app, "mode") == "range" {
            *field(app, "portRange").unwrap() = json!([server.port().to_string()]);
            *field(app, "addressRange").unwrap() = json!(["127.0.0.1"]);
        } else {
            *field(app, "appSocket").unwrap() = json!(server.sock().to_string());
        }
    }
    let remotes = field(doc, "remoteApps").and_then(Value::as_array_mut);
    for app in remotes.into_iter().flatten() {
        let (target, name) = (text(app, "siteName"), text(app, "appName"));
        let local = Sock::free_tcp();
        *field(app, "localSocket").unwrap() = json!(local.to_string());
        if let Some(socket) = field(app, "appSocket") {
            *socket = match servers.get(&(target.clone(), name.clone())) {
                Some(server) => json!(server.sock().to_string()),
                None => json!(Sock::free_tcp().to_string()),
            };
        }
        o.remotes.push((target, name, local));
    }
}

/// Issue 11: a network whose config sets none of the new keys works as before. Every config
/// of the original project passes `wovenetd check` unchanged; moved onto loopback (one local
/// broker, their own topics), all run at once: each creates its owner-only identity file,
/// forwards byte-exact through every remote app whose site exists, and pins exactly the other
/// sites of its use case, with the identities they report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_original_config_still_loads_runs_and_pins_only_its_peers() {
    let root = binary::workspace_root();
    let copies = tempfile::tempdir().unwrap();
    let mut originals = Vec::new();
    for (use_case, files) in ORIGINALS {
        for (file, sha256) in files {
            let path = root.join(use_case).join(file);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                data::sha256(&bytes).to_string(),
                *sha256,
                "{} is no longer the original project's file; this test runs the originals",
                path.display()
            );
            let copy = copies.path().join(file);
            std::fs::write(&copy, &bytes).unwrap();
            let out = check_config(&copy);
            assert!(
                out.status.success(),
                "wovenetd check {file} (unchanged) failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let mut doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&copy).unwrap())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let name = text(&mut doc, "siteName");
            originals.push(Original {
                use_case,
                file: copy,
                name,
                doc,
                remotes: Vec::new(),
            });
        }
    }
    assert_eq!(originals.len(), 12);

    let broker = Broker::embedded().await;
    let detector = Detector::start(Answer::ok(Some("text/plain"), "127.0.0.1\n")).await;
    let socket_dir = socket_dir();
    let mut servers = HashMap::new();
    for o in &mut originals {
        let exposed = field(&mut o.doc, "localExposedApps").and_then(Value::as_array_mut);
        for app in exposed.into_iter().flatten() {
            let name = text(app, "appName");
            let server = if text(app, "appSocket").starts_with("unix:") {
                EchoServer::unix(socket_dir.path().join(format!("{}-{name}", o.name))).await
            } else {
                EchoServer::tcp().await
            };
            servers.insert((o.name.clone(), name), server);
        }
    }
    for o in &mut originals {
        to_loopback(o, &broker.url(), detector.url(), &servers);
    }

    let t = Instant::now();
    let mut starting = JoinSet::new();
    for (i, o) in originals.iter().enumerate() {
        let builder = Site::builder(&o.name).document_as(o.doc.clone());
        starting.spawn(async move { (i, builder.spawn().await) });
    }
    let mut sites: BTreeMap<usize, Site> = BTreeMap::new();
    while let Some(r) = starting.join_next().await {
        let (i, site) = r.unwrap();
        sites.insert(i, site);
    }
    eprintln!(
        "{} original sites started in {:?}",
        sites.len(),
        t.elapsed()
    );
    let all: Vec<&Site> = sites.values().collect();
    let by_name: HashMap<&str, usize> = originals
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name.as_str(), i))
        .collect();

    let mut ids = HashMap::new();
    for (i, site) in &sites {
        let out = check_config(site.config_path());
        assert!(
            out.status.success(),
            "wovenetd check of {} on loopback failed: {}",
            originals[*i].file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let api = site.api().await;
        let info = api.site().await;
        assert_eq!(info.trust_mode(), v1::TrustMode::Pinned, "the default");
        assert_eq!(mode(&site.identity_file()), 0o600, "{}", site.name());
        assert_eq!(site.printed_identity(), info.identity, "{}", site.name());
        ids.insert(site.name().to_owned(), info.identity);
    }

    let mut forwarded = 0;
    for o in &originals {
        for (target, app, local) in &o.remotes {
            let Some(j) = by_name.get(target.as_str()) else {
                continue; // the reference config's peers are not part of it
            };
            assert_eq!(originals[*j].use_case, o.use_case);
            wait_forward(local, WAIT, &all).await;
            let data = data::bytes(forwarded, 256 << 10);
            echo_once(local, &data, WAIT)
                .await
                .unwrap_or_else(|e| panic!("{} using {target}/{app}: {e}", o.name));
            assert!(servers[&(target.clone(), app.clone())].accepted() >= 2);
            forwarded += 1;
        }
    }
    assert_eq!(forwarded, 6, "every example's remote apps were used");

    for (i, site) in &sites {
        let o = &originals[*i];
        let mut expected: Vec<(String, String)> = originals
            .iter()
            .filter(|p| p.use_case == o.use_case && p.name != o.name)
            .map(|p| (p.name.clone(), ids[&p.name].clone()))
            .collect();
        expected.sort();
        let sorted = || {
            let mut k = site.known_sites();
            k.sort();
            k
        };
        assert!(
            eventually(WAIT, || async { sorted() == expected }).await,
            "{} pins exactly the other sites of {}: {:?}, expected {expected:?}",
            o.name,
            o.use_case,
            sorted()
        );
        let api = site.api().await;
        for p in api.peers().await {
            assert!(
                p.trust() == v1::TrustState::New && p.identity == ids[&p.name],
                "{}: {p:#?}",
                o.name
            );
        }
        let counters = api.counters().await;
        for c in ["identities_refused", "sites_not_allowed", "messages_forged"] {
            assert_eq!(counters.get(c), Some(&0), "{}: {c}", o.name);
        }
    }
}
