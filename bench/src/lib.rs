//! wovenet's benchmark suite: load generators written in Rust (tokio), a userspace WAN
//! emulator joining two network namespaces, wovenetd processes driven through their YAML
//! config, the scenarios of issue 5 and their reports.
//!
//! Every figure is measured next to a baseline in the same run (direct TCP, plain TCP
//! across the same emulated path, the idle daemon, the emulator's setting) and reported
//! with the ratio, because the machines it runs on are shared and noisy.
//!
//! Map:
//! - [`wanem`]: the emulator (sans-IO link model in `wanem::link`, namespaces, TUN I/O).
//! - [`load`]: the app server and the throughput, latency, connection-rate and probe clients.
//! - [`daemon`]: finding/building `wovenetd`, site configs, processes, the two-site [`daemon::Tunnel`].
//! - [`natnet`]: two-site tunnels on the e2e crate's real-NAT rig (direct, punched, relayed);
//!   [`control`]: a site's channels and their routes, read through its control API;
//!   [`cpu`]: CPU time of the processes on a path over a measurement; [`footprint`]: their
//!   CPU time and peak memory over one transfer.
//! - [`rathole`]: the external reference the loopback and latency targets compare with.
//! - [`scenario`]: what each scenario measures; [`report`]: `results.json` and `results.md`;
//!   [`plot`]: the `wan` throughput-vs-loss SVG.
//!
//! This crate measures wovenet from the outside; it must not depend on the daemon's code
//! (the control API's client and types, and the e2e crate's NAT rig, are outside it).

pub mod control;
pub mod cpu;
pub mod daemon;
pub mod error;
pub mod footprint;
pub mod helper;
pub mod load;
pub mod natnet;
pub mod plot;
pub mod rathole;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod wanem;

pub use error::BenchError;
