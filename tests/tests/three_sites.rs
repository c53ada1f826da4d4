//! Three sites in a full mesh behind a broker-only wovenetd: each exposes an app and uses the
//! other two's; apps answer with their site's name so misrouting shows.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::collections::HashMap;
use std::time::Duration;

use wovenet_e2e::*;

const NAMES: [&str; 3] = ["a", "b", "c"];

struct Mesh {
    _broker: Broker,
    _servers: Vec<EchoServer>,
    sites: HashMap<&'static str, Site>,
    /// `(user, owner)` → the user's local socket for the owner's app.
    locals: HashMap<(&'static str, &'static str), Sock>,
}

fn banner(site: &str) -> Vec<u8> {
    format!("app of site {site}\n").into_bytes()
}

impl Mesh {
    async fn new() -> Self {
        let broker = Broker::embedded().await;
        let net = Net::new(broker.url());
        let mut servers = Vec::new();
        let mut sites = HashMap::new();
        let mut locals = HashMap::new();
        for me in NAMES {
            let server = EchoServer::tcp_with_banner(banner(me)).await;
            let mut b = net.site(me).expose("app", server.sock());
            for other in NAMES.into_iter().filter(|o| *o != me) {
                let local = Sock::free_tcp();
                b = b.remote(other, "app", &local);
                locals.insert((me, other), local);
            }
            servers.push(server);
            sites.insert(me, b.spawn().await);
        }
        Self {
            _broker: broker,
            _servers: servers,
            sites,
            locals,
        }
    }

    fn diag(&self) -> String {
        diag(&NAMES.map(|n| &self.sites[n]))
    }

    fn local(&self, user: &str, owner: &str) -> &Sock {
        self.locals
            .iter()
            .find(|((u, o), _)| *u == user && *o == owner)
            .map(|(_, s)| s)
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_site_reaches_the_apps_of_both_others() {
    let m = Mesh::new().await;
    for user in NAMES {
        for owner in NAMES.into_iter().filter(|o| *o != user) {
            let local = m.local(user, owner);
            if let Err(e) = try_wait_forward_with_banner(local, &banner(owner), WAIT).await {
                panic!(
                    "{user} using {owner}'s app through {local}: {e}\n{}",
                    m.diag()
                );
            }
        }
    }
    for me in NAMES {
        let api = m.sites[me].api().await;
        for other in NAMES.into_iter().filter(|o| *o != me) {
            wait_for(
                format!("{me}: a channel up to {other}"),
                WAIT,
                || m.diag(),
                || async { (!api.up_channels(other).await.is_empty()).then_some(()) },
            )
            .await;
        }
    }
    // All six directions at once, with more data.
    let mut set = tokio::task::JoinSet::new();
    for user in NAMES {
        for owner in NAMES.into_iter().filter(|o| *o != user) {
            let local = m.local(user, owner).clone();
            set.spawn(async move {
                let payload = data::bytes(user.len() as u64 * 31 + owner.len() as u64, 512 * 1024);
                echo_once_with_banner(&local, &banner(owner), &payload, WAIT)
                    .await
                    .map_err(|e| format!("{user} -> {owner}: {e}"))
            });
        }
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap_or_else(|e| panic!("{e}\n{}", m.diag()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_stops_disappears_from_the_others_who_keep_working() {
    let mut m = Mesh::new().await;
    for (user, owner) in [("a", "c"), ("b", "c"), ("a", "b")] {
        try_wait_forward_with_banner(m.local(user, owner), &banner(owner), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{user} -> {owner}: {e}\n{}", m.diag()));
    }
    m.sites.get_mut("c").unwrap().stop().await;

    for user in ["a", "b"] {
        let local = m.local(user, "c").clone();
        let closed = eventually(WAIT, || async { !is_listening(&local).await }).await;
        assert!(
            closed,
            "{user}'s listener for c's app stayed open after c stopped\n{}",
            m.diag()
        );
    }
    for (user, owner) in [("a", "b"), ("b", "a")] {
        echo_once_with_banner(
            m.local(user, owner),
            &banner(owner),
            b"still here",
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("{user} -> {owner} after c left: {e}\n{}", m.diag()));
    }
}
