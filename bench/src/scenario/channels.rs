//! Many dataChannels: the same upload (8 parallel streams for a fixed time) through a
//! tunnel of 1, 2 and 4 dataChannels across the emulated WAN link, and through 4 channels
//! of which one takes a worse path (extra loss on its UDP port, both directions), to show
//! that spreading streams over channels helps rather than hurts.
//!
//! Site b announces one QUIC socket per channel (ports `wan_ports::QUIC + i`), site a
//! dials each, and every new app connection goes to the channel with the fewest open
//! streams. Each case runs on a fresh emulator, app server and pair of daemons. Over the
//! measurement window the emulator counts bytes per channel port (so the bad channel is
//! known), and near its end site a's metrics give the open streams per channel, so each
//! record also says how the load spread.
//!
//! Baseline of every figure: the 1-channel case with the same congestion controller in
//! the same run. Only the scenario's wiring and the metrics text parsing live here.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Env, READY, mbps};
use crate::daemon::{Placement, Tunnel, TunnelOpts, wan_ports};
use crate::error::{BenchError, IoContext};
use crate::load::BenchServer;
use crate::load::throughput::{self, Direction, Spec};
use crate::report::{Failure, Record, Report};
use crate::wanem::{LinkStats, PortStats, Wanem, WanemConfig};

/// Parallel upload streams of every case.
const STREAMS: usize = 8;

/// How long the extra channels may take to come up once the first one forwards.
const CHANNELS_UP: Duration = Duration::from_secs(20);

/// One transfer: how many dataChannels, and the extra loss of the last one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    /// dataChannels of the tunnel.
    pub channels: usize,
    /// Extra loss in percent on the last channel's path (0: all paths alike).
    pub bad_extra_loss_pct: f64,
}

/// The path, the controllers and the cases of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    /// Round-trip time of the emulated link in ms.
    pub rtt_ms: u64,
    /// Loss of the link in percent per direction (every channel).
    pub loss_pct: f64,
    /// Rate cap of the link in Mbit/s, shared by all channels.
    pub cap_mbps: u64,
    /// The tunnel's congestion controllers; every case runs with each.
    pub tunnel_cc: Vec<String>,
    /// The cases; the first is the baseline and must have one channel.
    pub cases: Vec<Case>,
    /// Warm-up before the measurement window.
    pub warmup: Duration,
    /// Length of the measurement window.
    pub duration: Duration,
}

impl Setup {
    /// 50 ms, 0.5 % loss, 100 Mbit/s; 1, 2, 4 channels and 4 with one at +5 % loss; cubic
    /// (loss-bound, so more channels help) and bbr (rate-bound, so they must not hurt).
    pub fn full() -> Self {
        let good = |channels| Case {
            channels,
            bad_extra_loss_pct: 0.0,
        };
        Self {
            rtt_ms: 50,
            loss_pct: 0.5,
            cap_mbps: 100,
            tunnel_cc: vec!["cubic".into(), "bbr".into()],
            cases: vec![
                good(1),
                good(2),
                good(4),
                Case {
                    channels: 4,
                    bad_extra_loss_pct: 5.0,
                },
            ],
            warmup: Duration::from_secs(3),
            duration: Duration::from_secs(8),
        }
    }

    /// The baseline and the 4-channel case with a bad channel, bbr only, short windows.
    pub fn quick() -> Self {
        let full = Self::full();
        Self {
            tunnel_cc: vec!["bbr".into()],
            cases: vec![full.cases[0], full.cases[3]],
            warmup: Duration::from_millis(500),
            duration: Duration::from_millis(1500),
            ..full
        }
    }

    /// The path, with a per-port rule for every channel in port order: the extra loss on
    /// the bad one, none (counting only) on the others.
    fn config(&self, case: &Case) -> WanemConfig {
        let mut c = WanemConfig::new(Duration::from_millis(self.rtt_ms), self.loss_pct / 100.0)
            .with_rate(Some(self.cap_mbps * 1_000_000));
        for i in 0..case.channels.max(1) {
            let port = wan_ports::QUIC + i as u16;
            let extra = if port == bad_port(case) {
                case.bad_extra_loss_pct / 100.0
            } else {
                0.0
            };
            c = c.with_port_loss(port, extra);
        }
        c
    }

    fn record(&self, cc: &str, case: &Case, value: f64) -> Record {
        Record::new("channels", "throughput", value, "Mbit/s")
            .param("tunnel_cc", cc)
            .param("channels", case.channels)
            .param("bad_extra_loss_pct", case.bad_extra_loss_pct)
            .param("rtt_ms", self.rtt_ms)
            .param("loss_pct", self.loss_pct)
            .param("cap_mbps", self.cap_mbps)
            .param("streams", STREAMS)
    }
}

/// The UDP port of the channel on the worse path: site b's last socket.
fn bad_port(case: &Case) -> u16 {
    wan_ports::QUIC + case.channels.saturating_sub(1) as u16
}

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
    let setup = env.pick(Setup::quick(), Setup::full());
    for cc in &setup.tunnel_cc {
        let mut one = None;
        let mut four_good = None;
        for case in &setup.cases {
            eprintln!(
                "bench: channels cc={cc} channels={} bad_extra_loss={}%",
                case.channels, case.bad_extra_loss_pct
            );
            let measured = match measure(env, &setup, cc, case).await {
                Ok(m) => m,
                Err(e) => {
                    // One failing case is reported and the others go on.
                    eprintln!("bench: channels case {case:?} with {cc} failed: {e}");
                    report.failures.push(
                        Failure::new(
                            "channels",
                            format!(
                                "{} channels (+{} % on one) with {cc}: {e}",
                                case.channels, case.bad_extra_loss_pct
                            ),
                        )
                        .with_params(setup.record(cc, case, 0.0).params),
                    );
                    continue;
                }
            };
            let v = mbps(measured.bits_per_sec);
            let mut r = measured.annotate(setup.record(cc, case, v), case);
            if case.channels == 4 && case.bad_extra_loss_pct == 0.0 {
                four_good = Some(v);
            }
            if case.bad_extra_loss_pct > 0.0
                && let Some(g) = four_good.filter(|g| *g > 0.0)
            {
                r = r.note(format!(
                    "{:.2}× the {}-channel case with all paths alike",
                    v / g,
                    case.channels
                ));
            }
            // The 1-channel case is the baseline itself, and comes first.
            if let Some(b) = one {
                r = r.baseline("1 channel", b);
            } else if case.channels == 1 {
                one = Some(v);
            }
            report.push(r);
        }
    }
    Ok(())
}

/// What one case measured.
#[derive(Debug)]
struct Measured {
    bits_per_sec: f64,
    /// Open streams per channel near the end of the window, most first; empty when site
    /// a's metrics could not be read.
    streams: Vec<u64>,
    /// a→b per channel port over the window, in port order (the bad channel last).
    ports: Vec<PortStats>,
    /// The a→b direction of the link over the window.
    link: LinkStats,
}

impl Measured {
    fn annotate(&self, mut r: Record, case: &Case) -> Record {
        if !self.streams.is_empty() {
            let s: Vec<String> = self.streams.iter().map(u64::to_string).collect();
            r = r.param("streams_per_channel", s.join("/"));
        }
        let total: u64 = self.ports.iter().map(|p| p.kept_bytes).sum();
        let shares: Vec<f64> = self
            .ports
            .iter()
            .map(|p| pct(p.kept_bytes, total))
            .collect();
        if self.ports.len() > 1 {
            let s: Vec<String> = shares.iter().map(|x| format!("{x:.0}")).collect();
            r = r.param("port_share_pct", s.join("/"));
        }
        if let Some(bad) = self.ports.last().filter(|_| case.bad_extra_loss_pct > 0.0) {
            r = r.param(
                "bad_port_extra_loss_pct",
                (pct(bad.lost, bad.matched) * 10.0).round() / 10.0,
            );
        }
        let starved: Vec<String> = shares
            .iter()
            .enumerate()
            .filter(|(_, x)| **x < 1.0)
            .map(|(i, _)| (wan_ports::QUIC + i as u16).to_string())
            .collect();
        if self.ports.len() > 1 && !starved.is_empty() {
            r = r.note(format!(
                "channel on port {} carried < 1 % of the bytes",
                starved.join(", ")
            ));
        }
        // A sender overshooting the cap shows as a high share of queue drops.
        r.param("link_pkts", self.link.received).param(
            "queue_drop_pct",
            (pct(self.link.queue_dropped, self.link.received) * 10.0).round() / 10.0,
        )
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Runs one case on a fresh emulator with fresh daemons.
async fn measure(env: &Env, setup: &Setup, cc: &str, case: &Case) -> Result<Measured, BenchError> {
    let wan = Wanem::start(setup.config(case))?;
    let (ns_a, ns_b) = (wan.ns_a().name().to_owned(), wan.ns_b().name().to_owned());
    let server = BenchServer::bind_in(
        &ns_b,
        SocketAddr::from((Ipv4Addr::LOCALHOST, wan_ports::APP)),
    )
    .ctx(|| "starting the app server in namespace b".into())?;
    let opts = TunnelOpts {
        congestion: Some(cc.to_owned()),
        channels: case.channels,
        metrics: true,
        ..TunnelOpts::default()
    };
    let mut tunnel = Tunnel::start_with(
        &env.wovenetd,
        SocketAddr::from((Ipv4Addr::LOCALHOST, wan_ports::APP)),
        &Placement::Wan { a: ns_a, b: ns_b },
        &opts,
        READY,
    )
    .await?;
    if let Err(e) = wait_channels(&tunnel, case.channels, CHANNELS_UP).await {
        let why = format!("{e}; {}", tunnel.post_mortem());
        let _ = tunnel.stop().await;
        return Err(BenchError::Io {
            context: format!("bringing up {} dataChannels", case.channels),
            source: std::io::Error::other(why),
        });
    }
    let spec = Spec {
        streams: STREAMS,
        direction: Direction::Upload,
        warmup: setup.warmup,
        duration: setup.duration,
    };
    let snapshot = || (wan.stats()[0].link, wan.port_stats()[0].clone());
    let probes = async {
        tokio::time::sleep(setup.warmup).await;
        let first = snapshot();
        // Shortly before the window closes, while every stream is still open.
        tokio::time::sleep(setup.duration.mul_f64(0.9)).await;
        (first, snapshot(), tunnel.scrape_metrics().await)
    };
    let sink = server.received();
    let (out, ((link0, ports0), (link1, ports1), metrics)) =
        tokio::join!(throughput::run(tunnel.entry(), &sink, &spec), probes);
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let why = format!("{e}; {}", tunnel.post_mortem());
            let _ = tunnel.stop().await;
            return Err(BenchError::Io {
                context: format!("{STREAMS} streams through {} dataChannels", case.channels),
                source: std::io::Error::other(why),
            });
        }
    };
    let streams = match metrics {
        Ok(text) => open_streams(&text),
        Err(e) => {
            eprintln!("bench: no streams per channel: {e}");
            Vec::new()
        }
    };
    tunnel.stop().await?;
    Ok(Measured {
        bits_per_sec: out.bits_per_sec,
        streams,
        ports: ports1
            .iter()
            .zip(&ports0)
            .map(|(b, a)| PortStats {
                matched: b.matched - a.matched,
                lost: b.lost - a.lost,
                kept_bytes: b.kept_bytes - a.kept_bytes,
            })
            .collect(),
        link: diff(link0, link1),
    })
}

fn diff(before: LinkStats, after: LinkStats) -> LinkStats {
    LinkStats {
        received: after.received - before.received,
        lost: after.lost - before.lost,
        queue_dropped: after.queue_dropped - before.queue_dropped,
        port_matched: after.port_matched - before.port_matched,
        port_lost: after.port_lost - before.port_lost,
        malformed: after.malformed - before.malformed,
        delivered: after.delivered - before.delivered,
        delivered_bytes: after.delivered_bytes - before.delivered_bytes,
    }
}

/// Waits until site a counts `n` live dataChannels to site b (the first forwards already,
/// the others may still be dialling), up to `timeout`.
async fn wait_channels(tunnel: &Tunnel, n: usize, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut last = String::from("no scrape");
    while start.elapsed() < timeout {
        match tunnel.scrape_metrics().await {
            Ok(text) => match peer_channels(&text, "bench-b") {
                Some(k) if k >= n as u64 => return Ok(()),
                Some(k) => last = format!("{k} of {n} dataChannels up"),
                None => last = "no wovenet_peer_channels for bench-b".into(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "not all dataChannels came up within {timeout:?}: {last}"
    ))
}

/// Sample lines of OpenMetrics text: name, label text (between the braces), value.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            match series.split_once('{') {
                Some((name, labels)) => Some((name, labels.strip_suffix('}')?, value)),
                None => Some((series, "", value)),
            }
        })
}

/// The value of label `key` in a label text like `peer="b",channel="3"`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// `wovenet_peer_channels` of `peer`.
fn peer_channels(text: &str, peer: &str) -> Option<u64> {
    samples(text)
        .find(|(name, labels, _)| {
            *name == "wovenet_peer_channels" && label(labels, "peer") == Some(peer)
        })
        .map(|(_, _, v)| v as u64)
}

/// `wovenet_channel_open_streams` of every channel, most first.
fn open_streams(text: &str) -> Vec<u64> {
    let mut v: Vec<u64> = samples(text)
        .filter(|(name, labels, _)| {
            *name == "wovenet_channel_open_streams" && label(labels, "channel").is_some()
        })
        .map(|(_, _, v)| v as u64)
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP wovenet_peer_channels Live dataChannels per peer.\n\
        # TYPE wovenet_peer_channels gauge\n\
        wovenet_peer_channels{peer=\"bench-b\"} 2\n\
        # TYPE wovenet_channel_sent_bytes counter\n\
        wovenet_channel_sent_bytes_total{peer=\"bench-b\",channel=\"3\"} 1000\n\
        wovenet_channel_rtt_seconds{peer=\"bench-b\",channel=\"4\"} 0.05\n\
        wovenet_channel_open_streams{peer=\"bench-b\",channel=\"3\"} 3\n\
        wovenet_channel_open_streams{peer=\"bench-b\",channel=\"4\"} 5\n\
        wovenet_conn_refused_total 0\n\
        # EOF\n";

    #[test]
    fn the_live_channel_count_is_read_per_peer() {
        assert_eq!(peer_channels(TEXT, "bench-b"), Some(2));
        assert_eq!(peer_channels(TEXT, "other"), None);
        assert_eq!(peer_channels("garbage {\nx y\n", "bench-b"), None);
    }

    #[test]
    fn open_streams_are_listed_per_channel_most_first() {
        assert_eq!(open_streams(TEXT), [5, 3]);
        assert!(open_streams("").is_empty());
    }

    #[test]
    fn a_record_shows_the_spread_by_port_and_names_a_starved_channel() {
        let case = Case {
            channels: 3,
            bad_extra_loss_pct: 5.0,
        };
        let port = |kept_bytes, matched, lost| PortStats {
            matched,
            lost,
            kept_bytes,
        };
        let m = Measured {
            bits_per_sec: 1e6,
            streams: vec![3, 3, 2],
            ports: vec![port(600, 10, 0), port(400, 10, 0), port(0, 20, 1)],
            link: LinkStats {
                received: 1000,
                queue_dropped: 125,
                ..LinkStats::default()
            },
        };
        let r = m.annotate(Setup::full().record("bbr", &case, 1.0), &case);
        assert_eq!(r.params["streams_per_channel"], "3/3/2");
        assert_eq!(r.params["port_share_pct"], "60/40/0");
        assert_eq!(r.params["bad_port_extra_loss_pct"], 5.0);
        assert_eq!(r.params["queue_drop_pct"], 12.5);
        assert_eq!(
            r.note.as_deref(),
            Some("channel on port 4435 carried < 1 % of the bytes")
        );
    }

    #[test]
    fn the_bad_channel_is_the_last_socket_and_only_it_gets_extra_loss() {
        let setup = Setup::full();
        let bad = setup.cases[3];
        assert_eq!(bad_port(&bad), wan_ports::QUIC + 3);
        let rules: Vec<(u16, f64)> = setup
            .config(&bad)
            .port_loss
            .iter()
            .map(|r| (r.port, r.loss))
            .collect();
        let q = wan_ports::QUIC;
        assert_eq!(rules, [(q, 0.0), (q + 1, 0.0), (q + 2, 0.0), (q + 3, 0.05)]);
        let good = setup.config(&setup.cases[2]);
        assert_eq!(good.port_loss.len(), 4, "every channel is counted");
        assert!(good.port_loss.iter().all(|r| r.loss == 0.0));
        assert_eq!(setup.cases[0].channels, 1, "the baseline comes first");
        assert_eq!(Setup::quick().cases[0].channels, 1);
    }
}
