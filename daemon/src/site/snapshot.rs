//! Read-only snapshots of the site for the control plane: site summary,
//! peers, channels, apps and stats, as [`crate::view`] types.
//!
//! Built on request inside the actor from its state, the peer state machine
//! and the tunnel registry; changes nothing. [`peer_infos`] is a plain
//! function of its inputs so it is tested without a running site.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use super::Site;
use super::peers::Peers;
use crate::config::{AppName, PublicAddress};
use crate::tunnel::stats::ChannelStats;
use crate::tunnel::{Direction, Registry};
use crate::view::{
    AppsInfo, ChannelInfo, ChannelState, ExposedAppInfo, ListenerState, PeerInfo, RemoteAppInfo,
    SiteInfo, SocketInfo, StatsSnapshot,
};

/// Every peer, sorted by name, with the traffic of its channels. `now` and
/// `wall` are the same moment on the monotonic and the wall clock.
pub(super) fn peer_infos(
    peers: &Peers,
    registry: &Registry,
    now: Instant,
    wall: SystemTime,
) -> Vec<PeerInfo> {
    let mut v: Vec<PeerInfo> = peers
        .views()
        .map(|p| {
            let (mut sent, mut received, mut streams) = (0, 0, 0);
            for c in registry.channels(p.site) {
                let st = ChannelStats::of(&c);
                sent += st.bytes_sent;
                received += st.bytes_received;
                streams += c.open_streams.load(Relaxed);
            }
            let ago = now.saturating_duration_since(p.last_heard);
            // What it announced to everyone and offered this site alone.
            let mut apps: Vec<AppName> = p.announce.apps.iter().chain(p.offered).cloned().collect();
            apps.sort();
            apps.dedup();
            PeerInfo {
                site: p.site.clone(),
                instance: p.instance,
                state: p.state(now),
                apps,
                last_seen: wall.checked_sub(ago).unwrap_or(wall),
                channels: p.channels,
                streams,
                bytes_sent: sent,
                bytes_received: received,
                conflicts: p.conflicts,
            }
        })
        .collect();
    v.sort_by(|a, b| a.site.cmp(&b.site));
    v
}

/// Every channel (with whether the site confirmed it) and every dial
/// without a live channel, sorted by peer and id.
pub(super) fn channel_infos(registry: &Registry) -> Vec<ChannelInfo> {
    let dials = registry.dials();
    let mut v: Vec<ChannelInfo> = registry
        .all()
        .iter()
        .map(|c| {
            let dial = dials.iter().find(|d| d.channel == Some(c.id));
            ChannelInfo {
                id: Some(c.id),
                peer: c.peer.site.clone(),
                direction: c.direction,
                local: c.local,
                remote: c.conn.remote_address(),
                state: ChannelState::Up,
                path: ChannelStats::of(c),
                open_streams: c.open_streams.load(Relaxed),
                age: c.since.elapsed(),
                reconnect_attempts: c.attempts,
                last_error: dial.and_then(|d| d.last_error.clone()),
                route: c.route,
            }
        })
        .collect();
    v.extend(
        dials
            .iter()
            .filter(|d| d.channel.is_none())
            .map(|d| ChannelInfo {
                id: None,
                peer: d.peer.clone(),
                direction: Direction::Outbound,
                local: None,
                remote: d.remote,
                state: ChannelState::Connecting,
                path: ChannelStats::default(),
                open_streams: 0,
                age: d.since.elapsed(),
                reconnect_attempts: d.attempts,
                last_error: d.last_error.clone(),
                route: d.route,
            }),
    );
    v.sort_by(|a, b| (&a.peer, a.id).cmp(&(&b.peer, b.id)));
    v
}

impl Site {
    pub(super) fn site_info(&self) -> SiteInfo {
        SiteInfo {
            name: self.name.clone(),
            instance: self.instance,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at,
            broker_url: self.broker_url.clone(),
            broker: self.messages.state().borrow().clone(),
            sockets: self
                .sockets
                .iter()
                .map(|s| SocketInfo {
                    listen: s.bound,
                    public: s.public_addr(),
                    // issue 10: STUN detection is the lead's (engine); an
                    // autoStunDetect socket shows as detecting until then.
                    auto_detect: matches!(
                        s.config.public_address,
                        PublicAddress::AutoHttpDetect { .. } | PublicAddress::AutoStunDetect
                    ),
                    detect_error: s.detect_error.clone(),
                    mode: s.config.mode,
                    nat: s.mapping.map(|m| m.nat),
                })
                .collect(),
        }
    }

    pub(super) fn peer_infos(&self) -> Vec<PeerInfo> {
        peer_infos(
            &self.peers,
            &self.tunnels.registry(),
            Instant::now(),
            SystemTime::now(),
        )
    }

    pub(super) fn channel_infos(&self) -> Vec<ChannelInfo> {
        channel_infos(&self.tunnels.registry())
    }

    pub(super) fn apps_info(&self) -> AppsInfo {
        let mut exposed: Vec<ExposedAppInfo> = self
            .exposed
            .names()
            .into_iter()
            .filter_map(|n| self.exposed.get(&n))
            .map(|app| ExposedAppInfo {
                live: !self.config_exposed.contains(&app.name),
                app,
            })
            .collect();
        exposed.sort_by(|a, b| a.app.name.cmp(&b.app.name));
        let remote = self
            .remote_apps
            .iter()
            .map(|r| RemoteAppInfo {
                listener: if let Some(l) = self.listeners.get(r) {
                    ListenerState::Open(l.local_addr().clone())
                } else if let Some(e) = self.listener_errors.get(r) {
                    ListenerState::Failed(e.clone())
                } else {
                    ListenerState::Waiting
                },
                live: !self.config_remote.contains(r),
                app: r.clone(),
            })
            .collect();
        AppsInfo { exposed, remote }
    }

    pub(super) fn stats(&self) -> StatsSnapshot {
        let c = &self.counters;
        StatsSnapshot {
            streams: {
                let mut v = self.streams.snapshot();
                v.truncate(crate::view::STATS_STREAMS_MAX);
                v
            },
            apps: self.streams.app_stats(),
            peers: self.peer_infos(),
            channels: self.channel_infos(),
            counters: vec![
                ("messages_received", c.messages_received.load(Relaxed)),
                (
                    "messages_undecryptable",
                    c.messages_undecryptable.load(Relaxed),
                ),
                ("messages_stale", c.messages_stale.load(Relaxed)),
                ("messages_malformed", c.messages_malformed.load(Relaxed)),
                ("auth_failures", c.auth_failures.load(Relaxed)),
                ("bad_preambles", c.bad_preambles.load(Relaxed)),
                ("streams_refused", c.streams_refused.load(Relaxed)),
                ("streams_opened", c.streams_opened.load(Relaxed)),
                ("claims_refused", c.claims_refused.load(Relaxed)),
                ("peers_over_cap", c.peers_over_cap.load(Relaxed)),
                ("streams_limited", c.streams_limited.load(Relaxed)),
                ("connections_limited", c.connections_limited.load(Relaxed)),
                ("accept_errors", c.accept_errors.load(Relaxed)),
                (
                    "announced_sockets_dropped",
                    c.announced_sockets_dropped.load(Relaxed),
                ),
                ("preauth_refused", c.preauth_refused.load(Relaxed)),
                ("preauth_retried", c.preauth_retried.load(Relaxed)),
                ("punch_refused", c.punch_refused.load(Relaxed)),
                ("streams_not_allowed", c.streams_not_allowed.load(Relaxed)),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::SiteName;
    use crate::message::announce::{Announce, InstanceId, PROTOCOL_VERSION};
    use crate::view::PeerState;

    fn announce(site: &str, tag: u8) -> Announce {
        Announce {
            site: SiteName::new(site).unwrap(),
            instance: InstanceId::from_bytes([tag; 16]),
            protocol_version: PROTOCOL_VERSION,
            seq: 1,
            sockets: vec![],
            apps: vec![AppName::new("app").unwrap()],
            cert_sha256: hex::encode([tag; 32]),
            reply: false,
            epoch: 1,
        }
    }

    #[test]
    fn peer_infos_show_the_holder_its_conflicts_and_when_it_was_heard() {
        let mut peers = Peers::new(
            SiteName::new("a").unwrap(),
            InstanceId::from_bytes([0xa1; 16]),
        );
        let t0 = Instant::now();
        peers.on_announce(announce("b", 0xb1), t0);
        peers.on_announce(announce("b", 0xb2), t0);
        // The holder answers the probe.
        peers.on_announce(announce("b", 0xb1), t0 + Duration::from_secs(1));
        peers.on_announce(announce("c", 0xc1), t0 + Duration::from_secs(1));
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = t0 + Duration::from_secs(11);
        let v = peer_infos(&peers, &Registry::default(), now, wall);
        let names: Vec<&str> = v.iter().map(|p| p.site.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(v[0].instance, InstanceId::from_bytes([0xb1; 16]));
        assert_eq!(v[0].conflicts, vec![InstanceId::from_bytes([0xb2; 16])]);
        assert!(v[1].conflicts.is_empty());
        assert_eq!(v[0].last_seen, wall - Duration::from_secs(10));
        assert_eq!(v[0].state, PeerState::Discovered);
        assert_eq!(v[0].apps, [AppName::new("app").unwrap()]);
        // An offer from the holder adds its apps, sorted, once each.
        peers.on_offer(crate::message::announce::Offer {
            site: SiteName::new("b").unwrap(),
            instance: InstanceId::from_bytes([0xb1; 16]),
            seq: 1,
            apps: vec![AppName::new("db").unwrap(), AppName::new("app").unwrap()],
        });
        let v = peer_infos(&peers, &Registry::default(), now, wall);
        assert_eq!(
            v[0].apps,
            [AppName::new("app").unwrap(), AppName::new("db").unwrap()]
        );
        assert_eq!(v[1].apps, [AppName::new("app").unwrap()]);
        let later = t0 + Duration::from_secs(200);
        assert_eq!(
            peer_infos(&peers, &Registry::default(), later, wall)[0].state,
            PeerState::Gone
        );
    }
}
