//! Point-in-time statistics of a dataChannel, read from quinn.

pub use crate::types::ChannelStats;

use super::Channel;

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
