//! Byte rates from successive stats snapshots, for `WatchStats`.
//!
//! Sans-IO: the caller passes `now`, so the arithmetic is tested without
//! clocks. Each watcher owns its own [`StatsMeter`]; nothing here is shared.
//! Counters only grow within a daemon run, but a key can vanish and come back
//! (a channel id is never reused, an app/peer pair can reappear), so a counter
//! that went down is treated as restarted rather than as a negative rate.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::config::{AppName, SiteName};
use crate::types::ChannelId;
use crate::view::{StatsSnapshot, StreamDirection};

/// Bytes per second each way over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rate {
    /// Sent.
    pub(crate) send: f64,
    /// Received.
    pub(crate) receive: f64,
}

/// Byte totals of one thing at one moment: (sent, received).
type Totals = (u64, u64);

/// The rate between two totals `elapsed` apart; zero for a zero interval.
fn rate(prev: Totals, cur: Totals, elapsed: Duration) -> Rate {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return Rate::default();
    }
    // A smaller total means the counter restarted: everything now is new.
    let delta = |p: u64, c: u64| if c >= p { c - p } else { c };
    Rate {
        send: delta(prev.0, cur.0) as f64 / secs,
        receive: delta(prev.1, cur.1) as f64 / secs,
    }
}

/// Previous totals per key.
#[derive(Debug)]
struct Meter<K> {
    prev: HashMap<K, Totals>,
}

impl<K> Default for Meter<K> {
    fn default() -> Self {
        Self {
            prev: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Meter<K> {
    /// Rates for `totals` (in their order) since the previous call, which was
    /// `elapsed` ago (`None`: this is the first call, every rate is zero). A
    /// key first seen now counts from zero: it appeared during the interval.
    fn update(&mut self, elapsed: Option<Duration>, totals: Vec<(K, Totals)>) -> Vec<Rate> {
        let mut next = HashMap::with_capacity(totals.len());
        let rates = totals
            .into_iter()
            .map(|(key, cur)| {
                let r = match elapsed {
                    None => Rate::default(),
                    Some(e) => rate(self.prev.get(&key).copied().unwrap_or_default(), cur, e),
                };
                next.insert(key, cur);
                r
            })
            .collect();
        self.prev = next;
        rates
    }
}

/// Rates aligned with the vectors of the [`StatsSnapshot`] they were computed for.
#[derive(Debug, Default)]
pub(crate) struct StatsRates {
    /// One per `snapshot.apps` entry.
    pub(crate) apps: Vec<Rate>,
    /// One per `snapshot.peers` entry.
    pub(crate) peers: Vec<Rate>,
    /// One per `snapshot.channels` entry (zero for dials without a channel).
    pub(crate) channels: Vec<Rate>,
}

/// Turns successive snapshots into rates per app, peer and channel.
#[derive(Debug, Default)]
pub(crate) struct StatsMeter {
    last: Option<Instant>,
    apps: Meter<(AppName, SiteName, StreamDirection)>,
    peers: Meter<SiteName>,
    channels: Meter<Option<ChannelId>>,
}

impl StatsMeter {
    /// Rates of `s`, taken at `now`, against the previous snapshot.
    pub(crate) fn update(&mut self, now: Instant, s: &StatsSnapshot) -> StatsRates {
        let elapsed = self.last.map(|t| now.saturating_duration_since(t));
        self.last = Some(now);
        let apps = s
            .apps
            .iter()
            .map(|a| {
                let key = (a.app.clone(), a.peer.clone(), a.direction);
                (key, (a.bytes_sent, a.bytes_received))
            })
            .collect();
        let peers = s
            .peers
            .iter()
            .map(|p| (p.site.clone(), (p.bytes_sent, p.bytes_received)))
            .collect();
        // Dials without a channel share the `None` key and carry no bytes.
        let channels = s
            .channels
            .iter()
            .map(|c| (c.id, (c.path.bytes_sent, c.path.bytes_received)))
            .collect();
        StatsRates {
            apps: self.apps.update(elapsed, apps),
            peers: self.peers.update(elapsed, peers),
            channels: self.channels.update(elapsed, channels),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use proptest::prelude::*;

    use super::*;
    use crate::message::announce::InstanceId;
    use crate::view::{AppStats, PeerInfo, PeerState};

    fn peer(name: &str, sent: u64, received: u64) -> PeerInfo {
        PeerInfo {
            site: SiteName::new(name).expect("name"),
            instance: InstanceId::from_bytes([0; 16]),
            state: PeerState::Connected,
            apps: Vec::new(),
            last_seen: SystemTime::UNIX_EPOCH,
            channels: 1,
            streams: 0,
            bytes_sent: sent,
            bytes_received: received,
            conflicts: Vec::new(),
            identity: None,
            trust: crate::view::TrustState::Pinned,
            pinned_identity: None,
            refused_messages: 0,
        }
    }

    fn app(name: &str, sent: u64, received: u64) -> AppStats {
        AppStats {
            app: AppName::new(name).expect("name"),
            peer: SiteName::new("b").expect("name"),
            direction: StreamDirection::Outbound,
            open_streams: 1,
            total_streams: 1,
            bytes_sent: sent,
            bytes_received: received,
            limited_streams: 0,
            not_allowed_streams: 0,
            datagrams_received: 0,
            datagrams_sent: 0,
        }
    }

    #[test]
    fn first_snapshot_has_zero_rates_then_deltas_per_second() {
        let t0 = Instant::now();
        let mut m = StatsMeter::default();
        let mut s = StatsSnapshot {
            apps: vec![app("echo", 100, 50)],
            peers: vec![peer("b", 1000, 0)],
            ..StatsSnapshot::default()
        };
        let r = m.update(t0, &s);
        assert_eq!(r.apps, [Rate::default()]);
        assert_eq!(r.peers, [Rate::default()]);

        s.apps = vec![app("echo", 600, 50), app("new", 200, 0)];
        s.peers = vec![peer("b", 3000, 500)];
        let r = m.update(t0 + Duration::from_millis(500), &s);
        assert_eq!(
            r.apps,
            [
                Rate {
                    send: 1000.0,
                    receive: 0.0
                },
                Rate {
                    send: 400.0,
                    receive: 0.0
                }
            ]
        );
        assert_eq!(
            r.peers,
            [Rate {
                send: 4000.0,
                receive: 1000.0
            }]
        );
    }

    #[test]
    fn a_zero_interval_or_a_restarted_counter_never_gives_nonsense() {
        assert_eq!(rate((5, 5), (9, 9), Duration::ZERO), Rate::default());
        assert_eq!(
            rate((500, 500), (100, 0), Duration::from_secs(1)),
            Rate {
                send: 100.0,
                receive: 0.0
            }
        );
    }

    proptest! {
        #[test]
        fn rates_are_finite_and_non_negative(
            p in any::<(u64, u64)>(), c in any::<(u64, u64)>(), ms in 0u64..10_000_000
        ) {
            let r = rate(p, c, Duration::from_millis(ms));
            prop_assert!(r.send.is_finite() && r.send >= 0.0);
            prop_assert!(r.receive.is_finite() && r.receive >= 0.0);
        }
    }
}
