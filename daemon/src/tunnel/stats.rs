//! Point-in-time statistics of a dataChannel, read from quinn.

use std::time::Duration;

use super::Channel;

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

impl ChannelStats {
    /// Reads the current statistics of `ch`.
    pub fn of(ch: &Channel) -> Self {
        let s = ch.conn.stats();
        Self {
            rtt: s.path.rtt,
            cwnd: s.path.cwnd,
            lost_packets: s.path.lost_packets,
            sent_packets: s.path.sent_packets,
            bytes_sent: s.udp_tx.bytes,
            bytes_received: s.udp_rx.bytes,
            mtu: s.path.current_mtu,
        }
    }
}
