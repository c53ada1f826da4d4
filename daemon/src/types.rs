//! Plain identifiers and statistics shared by the tunnel, the app layer, the
//! views and the control plane.
//!
//! A leaf: it depends on nothing else in the crate, so the layers that
//! produce these values (the tunnel) and those that show them ([`crate::view`],
//! [`crate::control`]) can share them without depending on each other.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Locally unique id of a dataChannel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u64);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who dialled a dataChannel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We dialled the peer's socket.
    Outbound,
    /// The peer dialled one of our sockets.
    Inbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        })
    }
}

/// How a NAT maps one local socket toward different destinations (RFC 4787).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NatMapping {
    /// The same public address and port toward every destination (or no NAT
    /// at all): a peer can be told where to send.
    EndpointIndependent,
    /// A new public port per destination ("symmetric"): what STUN saw is not
    /// what a peer will see; punching toward it cannot work.
    PerDestination,
    /// Fewer than two servers answered: not known.
    #[default]
    #[serde(other)]
    Unknown,
}

impl NatMapping {
    /// Lower-case words for status and logs.
    pub fn text(self) -> &'static str {
        match self {
            Self::EndpointIndependent => "endpoint-independent",
            Self::PerDestination => "per-destination",
            Self::Unknown => "unknown",
        }
    }
}

/// How a dataChannel's packets travel between the two sites (its route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelRoute {
    /// Dialled at an address the listener announced as reachable.
    #[default]
    Direct,
    /// Through NATs opened by a rendezvous (`hole-punching` sockets).
    Punched,
    /// Through the listener's TURN relay (punching cannot work).
    Relayed,
}

impl ChannelRoute {
    /// Lower-case word for tables and logs.
    pub fn text(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Punched => "punched",
            Self::Relayed => "relayed",
        }
    }
}

impl fmt::Display for ChannelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// A snapshot of one dataChannel's path and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// Current path MTU.
    pub mtu: u16,
}
