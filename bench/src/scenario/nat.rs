//! Behind NAT: the same tunnel measured over the three paths of the real-NAT rig
//! ([`crate::natnet`]) in one run: `direct` (both sites public), `punched` (each behind an
//! endpoint-independent NAT) and `relayed` (each behind a per-destination NAT, through coturn's
//! TURN relay). Per path: time to the first channel, bulk throughput of one stream each way
//! (the `loopback` generator) and 64-byte ping-pong latency p50/p99 (the `latency` one).
//!
//! The tunnels of a set are up at once (idle ones only exchange keep-alives), so every figure
//! is measured back to back: plain TCP across the rig (public hosts, no tunnel), then the
//! direct tunnel, then the punched one, then the relayed one, in rounds. Baseline of the
//! direct tunnel: plain TCP; of the punched and relayed tunnels: the direct tunnel. Each
//! tunnel's route is checked through the control API before (it is part of being ready) and
//! again after measuring.
//!
//! Two sets: on the rig as it is (`wan=none`: veths and bridges, no delay), then with the WAN
//! emulator between the dialling site's side of the internet and the rest ([`WanCell`], e.g.
//! 20 ms and 100 Mbit/s: `wan=20ms-100Mbit/s`), on fresh hosts and NATs.

use std::time::Duration;

use super::{Env, READY, mbps};
use crate::control;
use crate::cpu::CpuTally;
use crate::error::{BenchError, IoContext};
use crate::load::MESSAGE;
use crate::load::latency::{self, Spec as LatencySpec};
use crate::load::throughput::{self, Direction, Spec, quiesce};
use crate::natnet::{NatNet, NatPath, NatTunnel, Packets, settled};
use crate::report::{Record, Report, num};
use crate::stats::{Summary, quantile};
use crate::wanem::WanemConfig;

/// The scenario's name in reports.
pub const NAME: &str = "nat";

/// What to measure.
#[derive(Debug, Clone)]
pub struct Opts {
    /// The paths, in measuring order; `direct` (first) is the baseline of the others.
    pub paths: Vec<NatPath>,
    /// Throughput directions (one stream each).
    pub directions: Vec<Direction>,
    /// Warm-up before each throughput window.
    pub warmup: Duration,
    /// Each throughput window.
    pub duration: Duration,
    /// The ping-pong run per path.
    pub latency: LatencySpec,
    /// Also measure plain TCP across the rig (the direct tunnel's baseline).
    pub plain_tcp: bool,
    /// Rounds of every throughput and latency measurement, the paths interleaved in each;
    /// the median is reported.
    pub rounds: usize,
    /// Starts per path timed to the first channel (each on fresh hosts and NATs; the last
    /// one is measured); the median is reported.
    pub first_channel_runs: usize,
    /// The WAN set; `None`: none.
    pub wan: Option<WanSet>,
}

/// The paths measured across an emulated link, with throughput windows long enough for it
/// (slow start at the link's RTT).
#[derive(Debug, Clone, PartialEq)]
pub struct WanSet {
    /// The link.
    pub cell: WanCell,
    /// The paths.
    pub paths: Vec<NatPath>,
    /// Warm-up before each throughput window.
    pub warmup: Duration,
    /// Each throughput window.
    pub duration: Duration,
    /// Rounds of every throughput and latency measurement (at the link's cap they differ
    /// little, so fewer than on the rig as it is).
    pub rounds: usize,
}

/// The emulated link of the WAN set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WanCell {
    /// Round-trip time added, ms.
    pub rtt_ms: u64,
    /// Loss per direction, percent.
    pub loss_pct: f64,
    /// Rate cap per direction, Mbit/s; `None`: uncapped.
    pub cap_mbps: Option<u64>,
}

impl WanCell {
    /// The emulator settings.
    pub fn config(&self) -> WanemConfig {
        WanemConfig::new(Duration::from_millis(self.rtt_ms), self.loss_pct / 100.0)
            .with_rate(self.cap_mbps.map(|m| m * 1_000_000))
    }

    /// `20ms-100Mbit/s`, `100ms-1%-uncapped`: the `wan` parameter of its records.
    pub fn label(&self) -> String {
        let loss = if self.loss_pct > 0.0 {
            format!("-{}%", self.loss_pct)
        } else {
            String::new()
        };
        let cap = self
            .cap_mbps
            .map_or("uncapped".to_owned(), |c| format!("{c}Mbit/s"));
        format!("{}ms{loss}-{cap}", self.rtt_ms)
    }
}

/// The `wan` parameter of the set without an emulated link.
pub const NO_WAN: &str = "none";

impl Opts {
    /// Quick (~1 min): the `loopback` and `latency` scenarios' quick windows, one round, one
    /// start per path. Full (~5 min): 1 s warm-up and 3 s per throughput window, 30 000
    /// ping-pongs or 3 s, 3 rounds, 5 starts per path. Both: the WAN set at 20 ms,
    /// 100 Mbit/s, every path, with the `wan` scenario's warm-up (quick 0.5 + 1.5 s, one
    /// round; full 2 + 3 s, two rounds).
    pub fn for_env(env: &Env) -> Self {
        Self {
            paths: NatPath::ALL.to_vec(),
            directions: vec![Direction::Upload, Direction::Download],
            warmup: env.pick(Duration::from_millis(300), Duration::from_secs(1)),
            duration: env.pick(Duration::from_millis(700), Duration::from_secs(3)),
            latency: LatencySpec {
                warmup: env.pick(200, 1000),
                iterations: env.pick(3000, 30_000),
                max_time: env.pick(Duration::from_secs(1), Duration::from_secs(3)),
            },
            plain_tcp: true,
            rounds: env.pick(1, 3),
            first_channel_runs: env.pick(1, 5),
            wan: Some(WanSet {
                cell: WanCell {
                    rtt_ms: 20,
                    loss_pct: 0.0,
                    cap_mbps: Some(100),
                },
                paths: NatPath::ALL.to_vec(),
                // The `wan` scenario's warm-up (slow start at 20 ms).
                warmup: env.wan.warmup,
                duration: env.pick(env.wan.duration, Duration::from_secs(3)),
                rounds: env.pick(1, 2),
            }),
        }
    }
}

/// The time-to-first-channel record of `path` from its samples (ms): the median, the
/// spread in the note.
pub fn first_channel_record(
    path: NatPath,
    samples_ms: &[f64],
    direct: Option<f64>,
) -> Option<Record> {
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = quantile(&sorted, 0.5)?;
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let spread = if sorted.len() > 1 {
        format!(
            "median of {} starts ({}–{} ms); ",
            sorted.len(),
            num(min),
            num(max)
        )
    } else {
        String::new()
    };
    let r = Record::new(NAME, "first_channel", median, "ms")
        .param("path", path.name())
        .param("starts", sorted.len())
        .note(format!(
            "{spread}from starting both daemons to the dialling site's first channel up"
        ));
    Some(compared(r, path, None, direct))
}

/// A record of `path` compared with its baseline: plain TCP for `direct`, the direct tunnel
/// for the others (when measured).
fn compared(r: Record, path: NatPath, plain: Option<f64>, direct: Option<f64>) -> Record {
    match (path, plain, direct) {
        (NatPath::Direct, Some(p), _) => r.baseline("tcp", p),
        (NatPath::Direct, None, _) => r,
        (_, _, Some(d)) => r.baseline("direct", d),
        (_, _, None) => r,
    }
}

/// Picks one quantile of a [`Summary`].
type Quantile = fn(&Summary) -> Duration;

/// Microseconds.
fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The records of one path's ping-pongs: p50 and p99, and for `punched` and `relayed` how
/// much each adds over the direct tunnel (for `direct`: over plain TCP).
pub fn latency_records(
    path: NatPath,
    s: &Summary,
    plain: Option<&Summary>,
    direct: Option<&Summary>,
) -> Vec<Record> {
    let mut out = Vec::new();
    let pick = |f: Quantile| {
        (
            plain.map(|p| us(f(p))),
            direct.filter(|_| path != NatPath::Direct).map(|d| us(f(d))),
        )
    };
    let stats: [(&str, Quantile); 2] = [("p50", |s| s.p50), ("p99", |s| s.p99)];
    for (q, f) in stats {
        let (p, d) = pick(f);
        let r = Record::new(NAME, &format!("rtt_{q}"), us(f(s)), "µs")
            .param("path", path.name())
            .param("size", MESSAGE)
            .param("samples", s.count);
        out.push(compared(r, path, p, d));
    }
    for (q, f) in stats {
        let (p, d) = pick(f);
        let (base, what) = match path {
            NatPath::Direct => (p, "plain TCP"),
            _ => (d, "the direct tunnel"),
        };
        if let Some(b) = base {
            out.push(
                Record::new(NAME, &format!("added_{q}"), us(f(s)) - b, "µs")
                    .param("path", path.name())
                    .param("size", MESSAGE)
                    .note(format!("{} {q} minus {what}'s", path.name())),
            );
        }
    }
    out
}

/// Runs the scenario with `opts`.
pub async fn run(env: &Env, opts: &Opts, report: &mut Report) -> Result<(), BenchError> {
    let Some(net) = NatNet::start(&env.wovenetd).await? else {
        return Err(BenchError::Rig(
            "skipped: needs root, ip, nft, conntrack and coturn's turnserver (why: above)".into(),
        ));
    };
    let mut sets: Vec<Option<&WanSet>> = vec![None];
    if let Some(set) = &opts.wan {
        sets.push(Some(set));
    }
    let mut result = Ok(());
    for set in sets {
        let mut tunnels: Vec<NatTunnel> = Vec::new();
        let measured = measure(env, opts, &net, set, &mut tunnels, report).await;
        let cell = set.map(|s| s.cell);
        let mut stopped = Ok(());
        for t in tunnels {
            stopped = stopped.and(t.stop().await);
        }
        // One set failing does not cost the other; the first error is the scenario's.
        if let Err(e) = measured.and(stopped) {
            eprintln!(
                "bench: nat, wan={}: {e}",
                cell.map_or(NO_WAN.to_owned(), |c| c.label())
            );
            result = result.and(Err(e));
        }
    }
    drop(net);
    result
}

/// Measures one set: `opts.paths` on the rig as it is, or those of `wan` across its link.
async fn measure(
    env: &Env,
    opts: &Opts,
    net: &NatNet,
    wan: Option<&WanSet>,
    tunnels: &mut Vec<NatTunnel>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let label = wan.map_or(NO_WAN.to_owned(), |w| w.cell.label());
    let config = wan.map(|w| w.cell.config());
    let paths = wan.map_or(&opts.paths, |w| &w.paths);
    let (warmup, duration) = wan.map_or((opts.warmup, opts.duration), |w| (w.warmup, w.duration));
    let mut push = |r: Record| report.push(r.param("wan", label.as_str()));
    // One at a time, so each first channel is timed alone; the last start of each path
    // stays up for the measurements.
    let mut direct_first = None;
    for &path in paths {
        let mut samples = Vec::new();
        for run in 1..=opts.first_channel_runs.max(1) {
            let t = net
                .tunnel(&env.wovenetd, path, config.as_ref(), READY)
                .await?;
            samples.push(t.first_channel().as_secs_f64() * 1e3);
            if run < opts.first_channel_runs {
                t.stop().await?;
            } else {
                tunnels.push(t);
            }
        }
        if let Some(r) = first_channel_record(path, &samples, direct_first) {
            if path == NatPath::Direct {
                direct_first = Some(r.value);
            }
            push(r);
        }
    }
    // Plain TCP goes to the direct tunnel's app server (public hosts only).
    let plain = tunnels
        .iter()
        .find_map(|t| Some((t.plain_tcp()?.clone(), t.sink())))
        .filter(|_| opts.plain_tcp);
    let rounds = wan.map_or(opts.rounds, |w| w.rounds).max(1);

    for &direction in &opts.directions {
        let spec = Spec {
            streams: 1,
            direction,
            warmup,
            duration,
        };
        let what = |p: &str| format!("{p} 1x{}", direction.as_str());
        let mut plain_mbps = Vec::new();
        let mut tallies: Vec<Tally> = tunnels.iter().map(|t| Tally::new(net, t)).collect();
        // Rounds interleave the paths, so a slow spell of the machine hits all of them.
        for _ in 0..rounds {
            if let Some((target, sink)) = &plain {
                let out = throughput::run(target, sink, &spec)
                    .await
                    .ctx(|| what("plain TCP across the rig"))?;
                quiesce(sink, Duration::from_millis(200), Duration::from_secs(5)).await;
                plain_mbps.push(mbps(out.bits_per_sec));
            }
            for (t, tally) in tunnels.iter_mut().zip(&mut tallies) {
                let sink = t.sink();
                let before = t.packets().await?;
                let drops_before = tally.relay_drops.map(|_| net.relay_drops());
                let span = tally.cpu.begin();
                let out = throughput::run(t.entry(), &sink, &spec).await;
                tally.cpu.end(span);
                if let (Some(total), Some(Some(b)), Some(a)) =
                    (&mut tally.relay_drops, drops_before, net.relay_drops())
                {
                    *total += a.saturating_sub(b);
                }
                let out = match out {
                    Ok(out) => out,
                    Err(e) => {
                        let why = format!("{}: {e}\n{}", what(t.path().name()), t.post_mortem());
                        return Err(BenchError::Io {
                            context: format!("{} tunnel", t.path().name()),
                            source: std::io::Error::other(why),
                        });
                    }
                };
                let after = t.packets().await?;
                // The sending site: a on upload (client → a → b), b on download.
                let side = usize::from(direction == Direction::Download);
                tally.sender = tally.sender.plus(after[side].since(before[side]));
                tally.mbps.push(mbps(out.bits_per_sec));
                quiesce(&sink, Duration::from_millis(200), Duration::from_secs(5)).await;
            }
        }
        let plain_median = median(&plain_mbps);
        let mut direct = None;
        for (t, tally) in tunnels.iter().zip(&tallies) {
            let Some(value) = median(&tally.mbps) else {
                continue;
            };
            if t.path() == NatPath::Direct {
                direct = Some(value);
            }
            let r = Record::new(NAME, "throughput", value, "Mbit/s")
                .param("path", t.path().name())
                .param("direction", direction.as_str())
                .param("streams", 1)
                .param("rounds", tally.mbps.len())
                .note(tally.note());
            push(compared(r, t.path(), plain_median, direct));
        }
    }

    let mut plain_rtt = Vec::new();
    let mut rtts: Vec<Vec<Summary>> = vec![Vec::new(); tunnels.len()];
    for _ in 0..rounds {
        if let Some((target, _)) = &plain {
            plain_rtt.push(
                latency::run(target, &opts.latency)
                    .await
                    .ctx(|| "plain TCP ping-pong across the rig".into())?,
            );
        }
        for (t, out) in tunnels.iter_mut().zip(&mut rtts) {
            match latency::run(t.entry(), &opts.latency).await {
                Ok(s) => out.push(s),
                Err(e) => {
                    let why = format!("ping-pong: {e}\n{}", t.post_mortem());
                    return Err(BenchError::Io {
                        context: format!("{} tunnel", t.path().name()),
                        source: std::io::Error::other(why),
                    });
                }
            }
        }
    }
    let plain_rtt = merge(&plain_rtt);
    let mut direct_rtt = None;
    for (t, runs) in tunnels.iter().zip(&rtts) {
        let Some(s) = merge(runs) else { continue };
        if t.path() == NatPath::Direct {
            direct_rtt = Some(s);
        }
        for r in latency_records(t.path(), &s, plain_rtt.as_ref(), direct_rtt.as_ref()) {
            push(r);
        }
    }

    // A channel replaced under the load (e.g. a relayed one by a punched one) would make
    // the figures above a mix of two paths.
    for t in tunnels.iter() {
        let up = t.up_routes().await?;
        if !settled(&up, t.path().route()) {
            return Err(BenchError::Site {
                site: crate::natnet::SITE_A.into(),
                reason: format!(
                    "{} tunnel (wan={label}): after measuring, the channels up to {} are {} \
                     (expected exactly one {}); the figures of this path may mix routes",
                    t.path().name(),
                    crate::natnet::SITE_B,
                    control::routes_text(&up),
                    t.path().name()
                ),
            });
        }
    }
    Ok(())
}

/// What one path's throughput rounds in one direction gave: the figures, where the CPU went
/// and how lossy the sender found the path.
#[derive(Debug)]
struct Tally {
    mbps: Vec<f64>,
    cpu: CpuTally,
    sender: Packets,
    /// Relayed path only: datagrams dropped on full receive buffers in coturn's namespace.
    relay_drops: Option<u64>,
}

impl Tally {
    /// Tracks both daemons, this process (load generator and app server) and, on a relayed
    /// path, coturn's TURN relay.
    fn new(net: &NatNet, t: &NatTunnel) -> Self {
        let mut procs = vec![
            ("a", t.a.pid()),
            ("b", t.b.pid()),
            ("bench", std::process::id()),
        ];
        let relayed = t.path() == NatPath::Relayed;
        if relayed {
            procs.push(("coturn", net.turn_pid()));
        }
        Self {
            mbps: Vec::new(),
            cpu: CpuTally::new(&procs),
            sender: Packets::default(),
            relay_drops: relayed.then_some(0),
        }
    }

    fn note(&self) -> String {
        let mut rest = format!(
            "CPU (% of a core) {}; the sender lost {:.2} % of {} packets",
            self.cpu.text(),
            self.sender.loss_pct(),
            self.sender.sent
        );
        if let Some(d) = self.relay_drops {
            rest.push_str(&format!(
                "; {d} datagrams dropped on full UDP receive buffers in coturn's namespace"
            ));
        }
        spread_note(&self.mbps, "Mbit/s", &rest)
    }
}

/// The median of `v`; `None` if empty.
fn median(v: &[f64]) -> Option<f64> {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

/// `median of N rounds (min–max UNIT); REST`, or just `REST` for one round.
fn spread_note(v: &[f64], unit: &str, rest: &str) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() > 1 {
        format!(
            "median of {} rounds ({}–{} {unit}); {rest}",
            v.len(),
            num(min),
            num(max)
        )
    } else {
        rest.to_owned()
    }
}

/// Several ping-pong runs as one: the medians of their p50s, p99s and means, and all their
/// samples counted.
fn merge(runs: &[Summary]) -> Option<Summary> {
    let pick = |f: fn(&Summary) -> Duration| {
        let mut v: Vec<Duration> = runs.iter().map(f).collect();
        v.sort_unstable();
        quantile(&v, 0.5)
    };
    Some(Summary {
        p50: pick(|s| s.p50)?,
        p99: pick(|s| s.p99)?,
        mean: pick(|s| s.mean)?,
        count: runs.iter().map(|s| s.count).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50_us: u64, p99_us: u64) -> Summary {
        Summary {
            p50: Duration::from_micros(p50_us),
            p99: Duration::from_micros(p99_us),
            mean: Duration::from_micros(p50_us),
            count: 1000,
        }
    }

    #[test]
    fn the_direct_tunnel_is_compared_with_plain_tcp_and_the_others_with_it() {
        let r = |p| Record::new(NAME, "throughput", 500.0, "Mbit/s").param("path", p);
        let d = compared(r("direct"), NatPath::Direct, Some(2000.0), Some(1000.0));
        assert_eq!(d.baseline.as_ref().map(|b| b.name.as_str()), Some("tcp"));
        assert_eq!(d.ratio, Some(0.25));
        let p = compared(r("punched"), NatPath::Punched, Some(2000.0), Some(1000.0));
        assert_eq!(p.baseline.as_ref().map(|b| b.name.as_str()), Some("direct"));
        assert_eq!(p.ratio, Some(0.5));
        assert!(
            compared(r("relayed"), NatPath::Relayed, Some(1.0), None)
                .baseline
                .is_none()
        );
        assert!(
            compared(r("direct"), NatPath::Direct, None, Some(1.0))
                .baseline
                .is_none()
        );
    }

    #[test]
    fn time_to_first_channel_is_the_median_of_its_starts() {
        let r =
            first_channel_record(NatPath::Punched, &[900.0, 300.0, 500.0], Some(250.0)).unwrap();
        assert_eq!(r.value, 500.0);
        assert_eq!(r.ratio, Some(2.0));
        assert_eq!(r.params["starts"], 3);
        assert!(
            r.note
                .as_deref()
                .unwrap()
                .starts_with("median of 3 starts (300–900 ms)"),
            "{r:?}"
        );
        let one = first_channel_record(NatPath::Direct, &[420.0], None).unwrap();
        assert_eq!(one.value, 420.0);
        assert!(one.baseline.is_none());
        assert!(first_channel_record(NatPath::Direct, &[], None).is_none());
    }

    #[test]
    fn a_wan_cell_names_its_settings() {
        let cell = WanCell {
            rtt_ms: 20,
            loss_pct: 0.0,
            cap_mbps: Some(100),
        };
        assert_eq!(cell.label(), "20ms-100Mbit/s");
        assert_eq!(cell.config().rate_bps, Some(100_000_000));
        assert_eq!(cell.config().rtt, Duration::from_millis(20));
        let lossy = WanCell {
            rtt_ms: 100,
            loss_pct: 1.0,
            cap_mbps: None,
        };
        assert_eq!(lossy.label(), "100ms-1%-uncapped");
        assert_eq!(lossy.config().loss, 0.01);
    }

    #[test]
    fn rounds_report_their_median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
        assert_eq!(
            spread_note(&[300.0, 250.0, 310.0], "Mbit/s", "CPU a 50 %"),
            "median of 3 rounds (250–310 Mbit/s); CPU a 50 %"
        );
        assert_eq!(spread_note(&[300.0], "Mbit/s", "x"), "x");
        let m = merge(&[summary(100, 300), summary(140, 900), summary(120, 200)]).unwrap();
        assert_eq!(m.p50, Duration::from_micros(120));
        assert_eq!(m.p99, Duration::from_micros(300));
        assert_eq!(m.count, 3000);
        assert!(merge(&[]).is_none());
    }

    #[test]
    fn a_relayed_path_reports_what_it_adds_over_the_direct_tunnel() {
        let recs = latency_records(
            NatPath::Relayed,
            &summary(300, 900),
            Some(&summary(50, 80)),
            Some(&summary(120, 400)),
        );
        let get = |m: &str| recs.iter().find(|r| r.metric == m).unwrap();
        assert_eq!(get("rtt_p50").value, 300.0);
        assert_eq!(get("rtt_p50").baseline.as_ref().unwrap().value, 120.0);
        assert_eq!(get("rtt_p99").ratio, Some(900.0 / 400.0));
        assert_eq!(get("added_p50").value, 180.0);
        assert_eq!(get("added_p99").value, 500.0);
        assert_eq!(get("added_p50").params["path"], "relayed");
        assert_eq!(recs.len(), 4);
    }

    #[test]
    fn the_direct_path_adds_over_plain_tcp_and_has_no_added_figures_without_it() {
        let recs = latency_records(
            NatPath::Direct,
            &summary(120, 400),
            Some(&summary(50, 80)),
            Some(&summary(120, 400)),
        );
        let added = recs.iter().find(|r| r.metric == "added_p50").unwrap();
        assert_eq!(added.value, 70.0);
        assert_eq!(
            recs[0].baseline.as_ref().map(|b| b.name.as_str()),
            Some("tcp")
        );
        let alone = latency_records(NatPath::Direct, &summary(120, 400), None, None);
        assert_eq!(alone.len(), 2);
        assert!(alone.iter().all(|r| r.baseline.is_none()));
    }
}
