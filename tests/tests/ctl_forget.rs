//! `wovenetctl peers forget` against real daemons: forgetting a pinned site prints the
//! identity that was pinned, closes its dataChannels, and the site is learnt (and pinned)
//! again from its next announcement, so forwarding resumes; the daemon's refusals (its own
//! name, a name nothing is pinned for) exit 1 with its message and print nothing on stdout.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use wovenet_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_drops_the_pin_and_the_next_announcement_pins_the_site_again() {
    let (p, _echo, local) = Pair::echo().await;
    let b_id = p.ctl_b().json(&["status"]).await["site"]["identity"]
        .as_str()
        .unwrap()
        .to_owned();
    p.json_until(&p.ctl_a(), &["peers"], "b connected and pinned", |v| {
        v["peers"].as_array().is_some_and(|ps| {
            ps.iter().any(|x| {
                x["name"] == "b" && x["state"] == "connected" && x["identity"] == b_id.as_str()
            })
        })
    })
    .await;

    let v = p.ctl_a().json(&["peers", "forget", "b"]).await;
    assert_eq!(v, serde_json::json!({"identity": b_id}), "{}", p.diag());

    // b answers the fresh announcement: pinned again (same identity, `new` in this run),
    // and its app is reachable again.
    p.json_until(&p.ctl_a(), &["peers"], "b pinned again", |v| {
        v["peers"].as_array().is_some_and(|ps| {
            ps.iter().any(|x| {
                x["name"] == "b"
                    && x["state"] == "connected"
                    && x["identity"] == b_id.as_str()
                    && x["trust"] == "new"
            })
        })
    })
    .await;
    p.wait_forward(&local).await;
    let out = p.ctl_a().ok(&["peers", "forget", "b"]).await;
    assert!(
        out.starts_with(&format!(
            "forgot site b: identity {b_id} is no longer pinned"
        )),
        "{out}"
    );

    for (args, message) in [
        (
            &["peers", "forget", "a"][..],
            "error: siteName: 'a' is this site's own name\n",
        ),
        (
            &["-o", "json", "peers", "forget", "nobody"][..],
            "error: no identity is pinned for site 'nobody'\n",
        ),
    ] {
        let out = p.ctl_a().run(args).await;
        assert_eq!(out.code, Some(1), "{out}");
        assert_eq!(out.stderr, message, "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
}
