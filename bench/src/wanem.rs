//! A userspace WAN emulator (the kernel here has no netem): two network namespaces, each
//! with a TUN device, joined only through this process, which applies one-way delay,
//! random loss and an optional rate cap to every packet, TCP and UDP alike, plus extra
//! loss for chosen UDP ports (one flow on a worse path).
//!
//! ```text
//!   ns A: 10.77.0.1/30 ─ tun ─┐                        ┌─ tun ─ 10.77.0.2/30 :ns B
//!                             └─▶ Link a→b (thread) ──▶─┘
//!                             ┌─◀ Link b→a (thread) ◀──┐
//!   ns A: 10.78.0.1/30 ─────────── veth (no emulation) ─────────── 10.78.0.2/30 :ns B
//! ```
//!
//! The emulated pair carries the traffic under test; the veth pair carries control traffic
//! (the MQTT discovery) so that only the measured protocol crosses the emulated path.
//! Everything is torn down when the [`Wanem`] is dropped (also on Ctrl-C, since the runner
//! drops it then); names are unique per run and carry the pid so [`netns::sweep_stale`]
//! can remove what a killed run left.
//!
//! The packet rules live in [`link`] (sans-IO); [`forward`] owns the device I/O.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod forward;
pub mod link;
pub mod netns;

pub use forward::DirectionStats;
pub use link::{Link, LinkParams, LinkStats, PortLoss, PortStats};
pub use netns::Netns;

/// Side A's address on the emulated link.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Side B's address on the emulated link.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// Side A's address on the unemulated control link.
pub const CONTROL_A: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// Side B's address on the unemulated control link.
pub const CONTROL_B: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

/// The MTU of the emulated link: an ordinary Internet path, so TCP segments and QUIC
/// datagrams have their usual sizes.
pub const DEFAULT_MTU: u16 = 1500;

/// Why the emulator could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WanemError {
    /// An `ip` command or namespace operation failed.
    #[error("{command}: {reason}")]
    Command {
        /// What was run.
        command: String,
        /// Its error output.
        reason: String,
    },
    /// The TUN device could not be created.
    #[error("cannot create tun device {name}: {reason}")]
    Tun {
        /// The device name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A forwarding thread could not be started.
    #[error("cannot start forwarding thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What the emulated path does; the same in both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct WanemConfig {
    /// Round-trip time added by the path (half of it each way).
    pub rtt: Duration,
    /// Probability of losing a packet, per direction, in `0.0..=1.0`.
    pub loss: f64,
    /// Rate cap per direction in bits per second; `None` for none.
    pub rate_bps: Option<u64>,
    /// Bottleneck queue in bytes; `None` sizes it to one bandwidth-delay product.
    pub queue_bytes: Option<usize>,
    /// Seed of the loss decisions.
    pub seed: u64,
    /// MTU of the TUN devices.
    pub mtu: u16,
    /// Extra loss for UDP packets of given ports (source or destination, both directions).
    pub port_loss: Vec<PortLoss>,
}

impl WanemConfig {
    /// A path with `rtt` and `loss`, no rate cap.
    pub fn new(rtt: Duration, loss: f64) -> Self {
        Self {
            rtt,
            loss,
            rate_bps: None,
            queue_bytes: None,
            seed: 0x5eed,
            mtu: DEFAULT_MTU,
            port_loss: Vec::new(),
        }
    }

    /// Caps the rate at `rate_bps` in each direction.
    pub fn with_rate(mut self, rate_bps: Option<u64>) -> Self {
        self.rate_bps = rate_bps;
        self
    }

    /// Loses UDP packets from or to `port` with probability `loss`, on top of the link's
    /// loss, in both directions: that flow takes a worse path than the rest. With `loss`
    /// 0 the port's packets are only counted ([`Wanem::port_stats`]).
    pub fn with_port_loss(mut self, port: u16, loss: f64) -> Self {
        self.port_loss.push(PortLoss { port, loss });
        self
    }

    /// The bottleneck queue in bytes: the configured one, or one bandwidth-delay product
    /// (never less than 64 full packets, so short paths still absorb a burst).
    pub fn queue_bytes(&self) -> usize {
        self.queue_bytes.unwrap_or_else(|| {
            let bdp = self.rate_bps.unwrap_or(0) as f64 / 8.0 * self.rtt.as_secs_f64();
            (bdp as usize).max(64 * usize::from(self.mtu))
        })
    }

    /// The rules for one direction.
    pub fn link_params(&self) -> LinkParams {
        let mut p = LinkParams::new(self.rtt / 2, self.loss);
        p.port_loss.clone_from(&self.port_loss);
        match self.rate_bps {
            Some(r) => p.with_rate(r, self.queue_bytes()),
            None => p,
        }
    }
}

/// A running emulator: two namespaces, their devices and the two forwarding threads.
pub struct Wanem {
    config: WanemConfig,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: [Arc<forward::Counters>; 2],
    // Declared before the namespaces: fields drop in order, so the devices close (and
    // vanish) before their namespaces are deleted.
    _devices: [Arc<tun::Device>; 2],
    ns_a: Netns,
    ns_b: Netns,
}

impl std::fmt::Debug for Wanem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wanem")
            .field("config", &self.config)
            .field("ns_a", &self.ns_a.name())
            .field("ns_b", &self.ns_b.name())
            .finish()
    }
}

impl Wanem {
    /// Creates the namespaces and devices and starts forwarding. Needs root.
    pub fn start(config: WanemConfig) -> Result<Self, WanemError> {
        let tag = netns::unique_tag();
        // Each guard deletes what it made if a later step fails.
        let ns_a = Netns::create(&format!("{tag}-a"))?;
        let ns_b = Netns::create(&format!("{tag}-b"))?;
        let dev_a = tun_into(&ns_a, &format!("{tag}a"), ADDR_A, config.mtu)?;
        let dev_b = tun_into(&ns_b, &format!("{tag}b"), ADDR_B, config.mtu)?;
        control_link(&ns_a, &ns_b, &tag)?;

        let stop = Arc::new(AtomicBool::new(false));
        let rules = config.port_loss.len();
        let counters = [
            Arc::new(forward::Counters::with_ports(rules)),
            Arc::new(forward::Counters::with_ports(rules)),
        ];
        let params = config.link_params();
        let now = Instant::now();
        let mut threads = Vec::new();
        let directions = [
            ("wanem-a2b", &dev_a, &dev_b, config.seed),
            (
                "wanem-b2a",
                &dev_b,
                &dev_a,
                config.seed ^ 0x9e37_79b9_7f4a_7c15,
            ),
        ];
        for (i, (name, input, output, seed)) in directions.into_iter().enumerate() {
            let ends = forward::Ends {
                input: Arc::clone(input),
                output: Arc::clone(output),
                mtu: usize::from(config.mtu),
            };
            let link = Link::new(&params, seed, now);
            let (c, s) = (Arc::clone(&counters[i]), Arc::clone(&stop));
            let spawned = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || forward::run(ends, link, c, s));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    threads.into_iter().for_each(|t: JoinHandle<()>| {
                        let _ = t.join();
                    });
                    return Err(WanemError::Thread(e));
                }
            }
        }
        Ok(Self {
            config,
            stop,
            threads,
            counters,
            _devices: [dev_a, dev_b],
            ns_a,
            ns_b,
        })
    }

    /// Namespace of side A (10.77.0.1).
    pub fn ns_a(&self) -> &Netns {
        &self.ns_a
    }

    /// Namespace of side B (10.77.0.2).
    pub fn ns_b(&self) -> &Netns {
        &self.ns_b
    }

    /// The settings it runs with.
    pub fn config(&self) -> &WanemConfig {
        &self.config
    }

    /// Counters of the a→b and b→a directions.
    pub fn stats(&self) -> [DirectionStats; 2] {
        [self.counters[0].snapshot(), self.counters[1].snapshot()]
    }

    /// What each per-port rule ([`WanemConfig::port_loss`], same order) saw on the a→b
    /// and b→a directions.
    pub fn port_stats(&self) -> [Vec<PortStats>; 2] {
        [
            self.counters[0].port_snapshot(),
            self.counters[1].port_snapshot(),
        ]
    }
}

impl Drop for Wanem {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Creates TUN device `name`, moves it into `ns` and gives it `addr/30`.
fn tun_into(
    ns: &Netns,
    name: &str,
    addr: Ipv4Addr,
    mtu: u16,
) -> Result<Arc<tun::Device>, WanemError> {
    let tun_err = |reason: String| WanemError::Tun {
        name: name.to_owned(),
        reason,
    };
    let mut cfg = tun::Configuration::default();
    cfg.tun_name(name).mtu(mtu).layer(tun::Layer::L3);
    let dev = tun::create(&cfg).map_err(|e| tun_err(e.to_string()))?;
    dev.set_nonblock().map_err(|e| tun_err(e.to_string()))?;
    // The open fd keeps the device attached to us wherever it lives; closing it (when
    // the Wanem drops) deletes the device.
    netns::ip(&["link", "set", "dev", name, "netns", ns.name()])?;
    ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", name])?;
    ns.ip(&["link", "set", "dev", name, "up"])?;
    Ok(Arc::new(dev))
}

/// The unemulated veth pair between the namespaces, for control traffic.
fn control_link(a: &Netns, b: &Netns, tag: &str) -> Result<(), WanemError> {
    let (va, vb) = (format!("{tag}va"), format!("{tag}vb"));
    netns::ip(&[
        "link",
        "add",
        &va,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "netns",
        b.name(),
    ])?;
    a.ip(&["addr", "add", &format!("{CONTROL_A}/30"), "dev", &va])?;
    b.ip(&["addr", "add", &format!("{CONTROL_B}/30"), "dev", &vb])?;
    a.ip(&["link", "set", "dev", &va, "up"])?;
    b.ip(&["link", "set", "dev", &vb, "up"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_defaults_to_one_bandwidth_delay_product() {
        let c = WanemConfig::new(Duration::from_millis(100), 0.01).with_rate(Some(100_000_000));
        assert_eq!(c.queue_bytes(), 1_250_000);
        let p = c.link_params();
        assert_eq!(p.delay, Duration::from_millis(50));
        assert_eq!(p.rate_bps, Some(100_000_000));
        assert_eq!(p.queue_bytes, 1_250_000);
    }

    #[test]
    fn port_loss_reaches_the_link_rules_of_both_directions() {
        let c = WanemConfig::new(Duration::from_millis(50), 0.005).with_port_loss(4436, 0.05);
        assert_eq!(
            c.link_params().port_loss,
            [PortLoss {
                port: 4436,
                loss: 0.05
            }]
        );
    }

    #[test]
    fn a_short_or_uncapped_path_still_queues_a_burst() {
        let c = WanemConfig::new(Duration::from_millis(1), 0.0).with_rate(Some(1_000_000));
        assert_eq!(c.queue_bytes(), 64 * 1500);
        let open = WanemConfig::new(Duration::from_millis(100), 0.0);
        assert_eq!(open.link_params().rate_bps, None);
    }
}
