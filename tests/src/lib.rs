//! End-to-end harness for wovenet: runs real `wovenetd` processes (built once per test
//! process, or taken from `WOVENET_BIN_DIR`) with configs written into tempdirs, brokers
//! (a broker-only wovenetd or mosquitto), tiny app servers, client checks, log waits and an
//! iptables packet-drop guard. It never sleeps for readiness: waits poll a condition with a
//! deadline and panic with what was expected, what was seen and the tails of the daemon logs.
//!
//! Typical test:
//! ```no_run
//! # async fn t() {
//! use wovenet_e2e::*;
//! let broker = Broker::embedded().await;
//! let net = Net::new(broker.url());
//! let echo = EchoServer::tcp().await;
//! let local = Sock::free_tcp();
//! let b = net.site("b").expose("echo", echo.sock()).spawn().await;
//! let a = net.site("a").remote("b", "echo", &local).spawn().await;
//! wait_forward(&local, WAIT, &[&a, &b]).await;
//! // Assert on API state, never on log text:
//! let api = a.api().await;
//! wait_for("a channel up to b", WAIT, || diag(&[&a, &b]), async || {
//!     (!api.up_channels("b").await.is_empty()).then_some(())
//! })
//! .await;
//! # }
//! ```
//!
//! Most tests start from [`Pair`] (`b` runs the broker and exposes, `a` uses) or
//! [`lone_site`]; [`wait`] is the one wait helper (`poll`, `eventually`, `wait_for`, `never`,
//! `assert_eventually!`); [`api::Api`] reads peers, channels, apps, streams and counters.
//!
//! Environment:
//! - `WOVENET_BIN_DIR=DIR` uses `DIR/wovenetd` and `DIR/wovenetctl` instead of running
//!   `cargo build -p wovenet-daemon -p wovenet-tui --bins`.
//! - `WOVENET_REQUIRE_MOSQUITTO=1` makes the mosquitto tests fail, not skip, without mosquitto.
//! - The iptables tests (`faults.rs`, `iptables.rs`) need root and iptables, and fail without.
//! - The NAT rig ([`natrig`]: namespaces, nftables NATs, coturn STUN/TURN, brokers and sites
//!   inside namespaces; self-test `nat_rig.rs`) needs root, `ip`, `nft`, `conntrack` and
//!   coturn. Without them its tests skip, unless `WOVENET_REQUIRE_ROOT=1` (root and the
//!   networking tools) or `WOVENET_REQUIRE_COTURN=1` (coturn) makes that a failure.
//! - A failing test keeps its sites' tempdirs (config, JSON log, stderr) and prints their paths.
//!
//! This crate is test support: its failure mode is a panic with a good message, so it panics
//! freely (never `unwrap()`), and it must not contain wovenet logic of its own.

pub mod api;
pub mod binary;
pub mod broker;
pub mod client;
pub mod ctl;
pub mod data;
pub mod detector;
pub mod iptables;
pub mod log;
pub mod natrig;
pub mod pair;
pub mod process;
pub mod server;
pub mod site;
pub mod sock;
pub mod udp;
pub mod wait;

pub use api::{Api, remote_app};
pub use binary::{check_config, identity_command, wovenet_tui, wovenetctl, wovenetd};
pub use broker::{Broker, mosquitto_available, require_mosquitto};
pub use client::{
    Closed, EchoConn, connect_eventually, echo_once, echo_once_with_banner,
    expect_closed_without_data, is_listening, keep_pinging, stays_closed, try_wait_forward,
    try_wait_forward_with_banner,
};
pub use ctl::{Ctl, CtlChild, CtlOutput};
pub use data::{DataGen, Digest};
pub use detector::{Answer, Detector};
pub use iptables::IptablesDrop;
pub use log::LogLine;
pub use pair::{EchoOverBroker, Pair, lone_site};
pub use server::{EchoServer, ResettingServer, SinkReport, SinkServer, socket_dir};
pub use site::{Net, Site, SiteBuilder, diag, random_topic, wait_forward, write_yaml};
pub use sock::{Sock, Stream, free_tcp_port, free_udp_port};
pub use udp::{REPLY, UdpEcho, ask, big_socket, big_socket_on, udp_client, wait_udp_forward};
pub use wait::{Elapsed, WAIT, eventually, never, poll, retry, wait_for};
