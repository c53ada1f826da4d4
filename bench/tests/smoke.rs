//! The suite's smoke test (what CI runs): the quick loopback throughput scenario against
//! debug binaries produces a positive figure for each transport next to a positive baseline, and the report
//! files are written. Plus, where root is available, the emulator delays and forwards.

use std::time::Duration;

use wovenet_bench::daemon::{self, Profile};
use wovenet_bench::load::probe::{self, UdpEcho};
use wovenet_bench::load::throughput::Direction;
use wovenet_bench::report::Report;
use wovenet_bench::scenario::{Env, WanGrid, loopback};
use wovenet_bench::wanem::{ADDR_A, ADDR_B, Wanem, WanemConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_loopback_throughput_reports_a_positive_figure_next_to_its_baseline() {
    let env = Env {
        wovenetd: daemon::find_wovenetd(Profile::Debug).unwrap(),
        helper: None,
        quick: true,
        wan: WanGrid::quick(),
    };
    let opts = loopback::Opts {
        streams: vec![1],
        directions: vec![Direction::Upload],
        warmup: Duration::from_millis(300),
        duration: Duration::from_secs(1),
        rathole: vec![],
    };
    let mut report = Report::default();
    loopback::run(&env, &opts, &mut report).await.unwrap();

    // Per tunnel transport: its throughput next to the direct figure measured just
    // before, then what both daemons cost over that transfer.
    let rows: Vec<(&str, &str)> = report
        .records
        .iter()
        .map(|r| (r.scenario.as_str(), r.metric.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("loopback", "throughput"),
            ("loopback", "cpu_per_gb"),
            ("loopback", "peak_rss"),
            ("loopback", "tcp_throughput"),
            ("loopback", "cpu_per_gb"),
            ("loopback", "peak_rss"),
        ],
        "{:?}",
        report.records
    );
    for r in &report.records {
        assert!(r.value > 0.0, "{r:?}");
        match r.metric.as_str() {
            "cpu_per_gb" => assert_eq!(r.unit, "CPU-s/GB", "{r:?}"),
            // A running daemon holds more than a MiB; the peak is read, not guessed.
            "peak_rss" => assert!(r.unit == "MiB" && r.value > 1.0, "{r:?}"),
            _ => {
                let base = r.baseline.as_ref().expect("a baseline");
                assert!(
                    base.value > 0.0 && r.ratio.is_some_and(|x| x > 0.0),
                    "{r:?}"
                );
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    report.write(dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["records"][0]["unit"], "Mbit/s");
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(
        md.contains("| throughput | direction=upload, streams=1, transport=quic |"),
        "{md}"
    );
}

/// Needs root (namespaces, TUN devices); skipped with a message otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_adds_the_configured_rtt_and_cleans_up() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipping: the emulator needs root and /dev/net/tun");
        return;
    }
    let rtt = Duration::from_millis(40);
    let wan = Wanem::start(WanemConfig::new(rtt, 0.0)).unwrap();
    let (ns_a, ns_b) = (wan.ns_a().name().to_owned(), wan.ns_b().name().to_owned());
    let echo = UdpEcho::bind(Some(&ns_b), (ADDR_B, 7).into()).unwrap();
    let mut rtts = probe::rtt(
        Some(&ns_a),
        (ADDR_A, 0).into(),
        echo.addr(),
        10,
        Duration::from_millis(5),
    )
    .await
    .unwrap();
    assert_eq!(rtts.len(), 10, "every probe answered");
    rtts.sort_unstable();
    let median = rtts[5];
    assert!(
        median >= rtt && median <= rtt + rtt / 10 + Duration::from_millis(1),
        "median {median:?} for a {rtt:?} setting"
    );
    let [a2b, b2a] = wan.stats();
    assert!(a2b.link.delivered >= 10 && b2a.link.delivered >= 10);
    drop(echo);
    drop(wan);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.contains(&ns_a) && !left.contains(&ns_b),
        "namespaces left: {left}"
    );
}
