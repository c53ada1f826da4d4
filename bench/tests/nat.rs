//! The `nat` scenario in a tiny mode against debug binaries: on the real-NAT rig, the direct,
//! punched and relayed tunnels each come up with their route (checked through the control
//! API) and carry a positive figure next to the right baseline; across the emulated WAN link
//! the direct and punched ones take its delay and its cap. Needs root, ip, nft,
//! conntrack and coturn: skipped without them, failing instead when `WOVENET_REQUIRE_ROOT=1`
//! or `WOVENET_REQUIRE_COTURN=1` is set (as in CI).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wovenet_bench::daemon::{self, Profile};
use wovenet_bench::load::latency::Spec as LatencySpec;
use wovenet_bench::load::throughput::Direction;
use wovenet_bench::natnet::NatPath;
use wovenet_bench::report::{Record, Report};
use wovenet_bench::scenario::{Env, WanGrid, nat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_punched_and_relayed_tunnels_are_measured_side_by_side() {
    if !wovenet_e2e::natrig::require() {
        return;
    }
    let env = Env {
        wovenetd: daemon::find_wovenetd(Profile::Debug).unwrap(),
        helper: None,
        quick: true,
        wan: WanGrid::quick(),
    };
    let opts = nat::Opts {
        paths: NatPath::ALL.to_vec(),
        directions: vec![Direction::Upload, Direction::Download],
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(200),
        latency: LatencySpec {
            warmup: 20,
            iterations: 100,
            max_time: Duration::from_millis(300),
        },
        plain_tcp: true,
        rounds: 1,
        first_channel_runs: 1,
        wan: Some(nat::WanSet {
            cell: nat::WanCell {
                rtt_ms: 20,
                loss_pct: 0.0,
                cap_mbps: Some(100),
            },
            paths: vec![NatPath::Direct, NatPath::Punched],
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(200),
            rounds: 1,
        }),
    };
    let start = Instant::now();
    let mut report = Report::default();
    nat::run(&env, &opts, &mut report).await.unwrap();
    eprintln!("nat scenario (tiny) took {:?}", start.elapsed());

    let find_in = |wan: &str, metric: &str, path: &str, direction: Option<&str>| -> &Record {
        report
            .records
            .iter()
            .find(|r| {
                r.metric == metric
                    && r.params["wan"] == wan
                    && r.params["path"] == path
                    && direction.is_none_or(|d| r.params["direction"] == d)
            })
            .unwrap_or_else(|| panic!("no {metric} for {path}, wan={wan}: {:?}", report.records))
    };
    let find = |metric: &str, path: &str, direction: Option<&str>| {
        find_in("none", metric, path, direction)
    };
    let baseline = |r: &Record| r.baseline.as_ref().map(|b| b.name.clone());
    for path in ["direct", "punched", "relayed"] {
        let first = find("first_channel", path, None);
        assert!(first.value > 0.0 && first.unit == "ms", "{first:?}");
        for d in ["upload", "download"] {
            let r = find("throughput", path, Some(d));
            assert!(r.value > 0.0 && r.ratio.is_some_and(|x| x > 0.0), "{r:?}");
            let expected = if path == "direct" { "tcp" } else { "direct" };
            assert_eq!(baseline(r).as_deref(), Some(expected), "{r:?}");
        }
        let p50 = find("rtt_p50", path, None);
        assert!(p50.value > 0.0, "{p50:?}");
    }
    let added = find("added_p50", "relayed", None);
    assert_eq!(added.unit, "µs", "{added:?}");
    // Across the emulated link (20 ms between the dialling side and the internet), the
    // ping-pong takes at least that long, and the punched tunnel is still punched.
    let wan = "20ms-100Mbit/s";
    for path in ["direct", "punched"] {
        let p50 = find_in(wan, "rtt_p50", path, None);
        assert!(p50.value >= 20_000.0, "{p50:?}");
        let r = find_in(wan, "throughput", path, Some("upload"));
        assert!(
            r.value > 0.0 && r.value < 150.0,
            "capped at 100 Mbit/s: {r:?}"
        );
    }
    let md = report.markdown();
    assert!(md.contains("| throughput, upload | Mbit/s |"), "{md}");
    assert!(
        md.contains("across the emulated link `20ms-100Mbit/s`"),
        "{md}"
    );
}
