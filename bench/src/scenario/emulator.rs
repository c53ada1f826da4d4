//! Validation of the WAN emulator, so the WAN grid can be trusted: the measured RTT matches
//! the setting (within ±10 % + 1 ms), the measured one-way loss matches within statistical
//! tolerance (4 standard deviations of a binomial), a rate cap is honoured by a TCP flow,
//! and the emulator's own forwarding ceiling (no delay, no loss, no cap) is far above the
//! rates tested. Each figure's baseline is its setting (the ceiling's: the highest cap).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{Env, mbps};
use crate::error::{BenchError, IoContext};
use crate::load::probe::{self, UdpEcho};
use crate::load::throughput::{self, Direction, Spec};
use crate::load::{BenchServer, Target};
use crate::report::{Record, Report};
use crate::stats::quantile;
use crate::wanem::{ADDR_A, ADDR_B, Wanem, WanemConfig};

/// Port of the probes' echo and sink in namespace b.
const PROBE_PORT: u16 = 7;
/// Port of the TCP app server in namespace b.
const APP_PORT: u16 = 5001;

/// Whether a measured RTT is within ±10 % + 1 ms of the setting.
pub fn rtt_ok(measured: Duration, setting: Duration) -> bool {
    let diff = measured.abs_diff(setting);
    diff <= setting / 10 + Duration::from_millis(1)
}

/// Whether `lost` out of `sent` is within 4 standard deviations of loss probability `p`
/// (plus one packet, so tiny expectations are not judged on rounding).
pub fn loss_ok(lost: u32, sent: u32, p: f64) -> bool {
    let n = f64::from(sent);
    let sd = (n * p * (1.0 - p)).sqrt();
    (f64::from(lost) - n * p).abs() <= 4.0 * sd + 1.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "within tolerance"
    } else {
        "OUT OF TOLERANCE"
    }
}

/// Runs the scenario.
pub async fn run(env: &Env, report: &mut Report) -> Result<(), BenchError> {
    let mut rtts: Vec<u64> = env.wan.rtts_ms.clone();
    for extra in env.pick(vec![], vec![20, 200]) {
        if !rtts.contains(&extra) {
            rtts.push(extra);
        }
    }
    rtts.sort_unstable();
    for rtt_ms in rtts {
        let setting = Duration::from_millis(rtt_ms);
        let wan = Wanem::start(WanemConfig::new(setting, 0.0))?;
        let echo = UdpEcho::bind(Some(wan.ns_b().name()), (ADDR_B, PROBE_PORT).into())
            .ctx(|| "starting the udp echo".into())?;
        let count = env.pick(20, 100);
        let mut samples = probe::rtt(
            Some(wan.ns_a().name()),
            (ADDR_A, 0).into(),
            echo.addr(),
            count,
            Duration::from_millis(10),
        )
        .await
        .ctx(|| "probing the rtt".into())?;
        samples.sort_unstable();
        let median = quantile(&samples, 0.5).unwrap_or_default();
        let max = samples.last().copied().unwrap_or_default();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        report.push(
            Record::new("emulator", "rtt", ms(median), "ms")
                .param("probes", count)
                .param("answered", samples.len())
                .param("max_ms", (ms(max) * 100.0).round() / 100.0)
                .baseline("setting", rtt_ms as f64)
                .note(verdict(
                    rtt_ok(median, setting) && samples.len() == count as usize,
                )),
        );
    }
    let losses: Vec<f64> = env
        .wan
        .losses_pct
        .iter()
        .copied()
        .filter(|l| *l > 0.0)
        .collect();
    for loss_pct in losses {
        let p = loss_pct / 100.0;
        let wan = Wanem::start(WanemConfig::new(Duration::from_millis(10), p))?;
        let sent = env.pick(5_000, 20_000);
        let got = probe::one_way_delivery(
            (Some(wan.ns_a().name()), (ADDR_A, 0).into()),
            (Some(wan.ns_b().name()), (ADDR_B, PROBE_PORT).into()),
            sent,
            10_000,
            Duration::from_millis(500),
        )
        .await
        .ctx(|| "probing the loss".into())?;
        let lost = sent - got;
        report.push(
            Record::new(
                "emulator",
                "loss",
                f64::from(lost) * 100.0 / f64::from(sent),
                "%",
            )
            .param("datagrams", sent)
            .baseline("setting", loss_pct)
            .note(verdict(loss_ok(lost, sent, p))),
        );
    }
    let tcp = async |wan: &Wanem, streams: usize, warmup: Duration, duration: Duration| {
        let server = BenchServer::bind_in(
            wan.ns_b().name(),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, APP_PORT)),
        )
        .ctx(|| "starting the app server in namespace b".into())?;
        let target = Target::direct((ADDR_B, APP_PORT).into())
            .in_netns(wan.ns_a().name())
            .with_congestion(Some("cubic".into()));
        let spec = Spec {
            streams,
            direction: Direction::Upload,
            warmup,
            duration,
        };
        throughput::run(&target, &server.received(), &spec)
            .await
            .ctx(|| "tcp across the emulator".into())
    };
    let highest_cap = env.wan.caps_mbps.iter().flatten().max().copied();
    if let Some(cap) = highest_cap {
        let wan = Wanem::start(
            WanemConfig::new(Duration::from_millis(20), 0.0).with_rate(Some(cap * 1_000_000)),
        )?;
        let out = tcp(
            &wan,
            1,
            env.pick(Duration::from_millis(500), Duration::from_secs(2)),
            env.pick(Duration::from_secs(1), Duration::from_secs(5)),
        )
        .await?;
        let [a2b, _] = wan.stats();
        report.push(
            Record::new("emulator", "capped_tcp", mbps(out.bits_per_sec), "Mbit/s")
                .param("rtt_ms", 20)
                .param("queue_drops", a2b.link.queue_dropped)
                .baseline("setting", cap as f64)
                .note("one cubic flow; goodput, so ~95 % of the cap is expected"),
        );
    }
    for streams in [1, 4] {
        let wan = Wanem::start(WanemConfig::new(Duration::ZERO, 0.0))?;
        let out = tcp(
            &wan,
            streams,
            Duration::from_millis(500),
            env.pick(Duration::from_secs(1), Duration::from_secs(3)),
        )
        .await?;
        let [a2b, _] = wan.stats();
        let mut r = Record::new("emulator", "ceiling", mbps(out.bits_per_sec), "Mbit/s")
            .param("streams", streams)
            .param("write_errors", a2b.write_errors)
            .note("uncapped, no delay, no loss: plain TCP across the emulator");
        if let Some(cap) = highest_cap {
            r = r.baseline("highest cap tested", cap as f64);
        }
        report.push(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_tolerance_is_ten_percent_plus_a_millisecond() {
        let ms = Duration::from_millis;
        assert!(rtt_ok(ms(110), ms(100)));
        assert!(rtt_ok(ms(111), ms(100)));
        assert!(!rtt_ok(ms(112), ms(100)));
        assert!(rtt_ok(ms(89), ms(100)));
        assert!(rtt_ok(ms(1), ms(0)));
        assert!(!rtt_ok(ms(2), ms(0)));
    }

    #[test]
    fn loss_tolerance_is_four_binomial_deviations() {
        // 1 % of 20 000: 200 expected, sd 14.07.
        assert!(loss_ok(200, 20_000, 0.01));
        assert!(loss_ok(255, 20_000, 0.01));
        assert!(!loss_ok(260, 20_000, 0.01));
        assert!(loss_ok(0, 20_000, 0.0));
        assert!(!loss_ok(5, 20_000, 0.0));
    }
}
