//! Which dataChannel carries a new stream (sans-IO).
//!
//! Least loaded wins, not random: a channel that already carries many streams
//! (or whose path is slow) should not get more while a sibling idles. A
//! channel through a TURN relay is used only when no other is healthy: the
//! relay is a fallback with its own capacity and an extra hop. A channel over
//! TCP is used only when no UDP channel (other than a relayed one) is healthy:
//! it is the fallback for networks that drop UDP, and suffers head-of-line
//! blocking, so new streams return to QUIC over UDP as soon as one is up.

use std::time::Duration;

/// What the picker needs to know about one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Index in the caller's list, returned by [`pick`].
    pub index: usize,
    /// Streams currently open on the channel.
    pub open_streams: usize,
    /// Smoothed RTT reported by QUIC.
    pub rtt: Duration,
    /// Whether the channel is authenticated and not closing.
    pub healthy: bool,
    /// Whether it goes through a TURN relay.
    pub relayed: bool,
    /// Whether its QUIC packets travel over TCP.
    pub over_tcp: bool,
}

/// The healthy candidate with the fewest open streams, not relayed if any
/// is not, then not over TCP if any is not; ties go to the lower RTT, then to the lower index (stable, so
/// tests are deterministic).
pub fn pick(candidates: impl IntoIterator<Item = Candidate>) -> Option<usize> {
    candidates
        .into_iter()
        .filter(|c| c.healthy)
        .min_by_key(|c| (c.relayed, c.over_tcp, c.open_streams, c.rtt, c.index))
        .map(|c| c.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(index: usize, open_streams: usize, rtt_ms: u64, healthy: bool) -> Candidate {
        Candidate {
            index,
            open_streams,
            rtt: Duration::from_millis(rtt_ms),
            healthy,
            relayed: false,
            over_tcp: false,
        }
    }

    #[test]
    fn a_tcp_channel_carries_streams_only_when_no_udp_channel_is_healthy() {
        let tcp = |mut c: Candidate| {
            c.over_tcp = true;
            c
        };
        // Busier and slower, the UDP channel still wins over an idle TCP one.
        assert_eq!(pick([tcp(c(0, 0, 1, true)), c(1, 9, 80, true)]), Some(1));
        assert_eq!(pick([tcp(c(0, 0, 1, true)), c(1, 0, 1, false)]), Some(0));
        // A direct TCP channel is preferred to a relayed UDP one.
        let mut relayed = c(1, 0, 1, true);
        relayed.relayed = true;
        assert_eq!(pick([tcp(c(0, 5, 9, true)), relayed]), Some(0));
    }

    #[test]
    fn a_relayed_channel_carries_streams_only_when_nothing_else_is_healthy() {
        let relayed = |mut c: Candidate| {
            c.relayed = true;
            c
        };
        // Busier and slower, the punched channel still wins over an idle relay.
        assert_eq!(
            pick([relayed(c(0, 0, 1, true)), c(1, 9, 80, true)]),
            Some(1)
        );
        assert_eq!(
            pick([relayed(c(0, 0, 1, true)), c(1, 0, 1, false)]),
            Some(0)
        );
    }

    #[test]
    fn least_loaded_healthy_channel_wins() {
        assert_eq!(
            pick([c(0, 3, 1, true), c(1, 1, 50, true), c(2, 0, 1, false)]),
            Some(1)
        );
    }

    #[test]
    fn ties_go_to_lower_rtt() {
        assert_eq!(pick([c(0, 2, 40, true), c(1, 2, 10, true)]), Some(1));
    }

    #[test]
    fn no_healthy_channel_means_none() {
        assert_eq!(pick([c(0, 0, 1, false)]), None);
        assert_eq!(pick([]), None);
    }

    proptest! {
        #[test]
        fn picked_channel_is_healthy_and_minimal(v in proptest::collection::vec((0usize..10, 0u64..100, any::<bool>(), any::<bool>(), any::<bool>()), 0..16)) {
            let cands: Vec<_> = v
                .iter()
                .enumerate()
                .map(|(i, &(o, r, h, relayed, over_tcp))| Candidate { relayed, over_tcp, ..c(i, o, r, h) })
                .collect();
            match pick(cands.clone()) {
                None => prop_assert!(cands.iter().all(|c| !c.healthy)),
                Some(i) => {
                    let p = cands[i];
                    prop_assert!(p.healthy);
                    // Relayed only when no healthy channel is direct or punched.
                    prop_assert!(!p.relayed || cands.iter().all(|c| !c.healthy || c.relayed));
                    // Over TCP only when no healthy channel of its relay class is on UDP.
                    prop_assert!(!p.over_tcp || cands
                        .iter()
                        .all(|c| !c.healthy || c.relayed != p.relayed || c.over_tcp));
                    prop_assert!(cands
                        .iter()
                        .filter(|c| c.healthy && c.relayed == p.relayed && c.over_tcp == p.over_tcp)
                        .all(|c| c.open_streams >= p.open_streams));
                }
            }
        }
    }
}
