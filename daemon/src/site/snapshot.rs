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
use super::trust::{Refusal, Standing, Trust};
use crate::app::ThrottleKey;
use crate::config::{AppName, PublicAddress};
use crate::tunnel::stats::ChannelStats;
use crate::tunnel::{Direction, Registry};
use crate::view::{
    AppsInfo, ChannelInfo, ChannelState, ExposedAppInfo, ListenerState, PeerInfo, PeerState,
    RemoteAppInfo, SiteInfo, SocketInfo, StatsSnapshot, ThrottleStats, TrustState,
};

/// Every peer, sorted by name, with the traffic of its channels. `now` and
/// `wall` are the same moment on the monotonic and the wall clock.
pub(super) fn peer_infos(
    peers: &Peers,
    trust: &Trust,
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
            let standing = trust.standing(p.site);
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
                identity: standing.map(|s| s.0),
                trust: match standing.map(|s| s.1) {
                    Some(Standing::New) => TrustState::New,
                    Some(Standing::Unpinned) => TrustState::Unpinned,
                    Some(Standing::Pinned) | None => TrustState::Pinned,
                },
                pinned_identity: None,
                refused_messages: 0,
            }
        })
        .collect();
    // Refused identities are shown beside the peers they tried to pass for.
    v.extend(trust.refused().into_iter().map(|r| {
        let ago = now.saturating_duration_since(r.last);
        let (trust, pinned) = match r.why {
            Refusal::Conflict { pinned } => (TrustState::Conflict, Some(pinned)),
            Refusal::NotListed | Refusal::TooManyPins => (TrustState::NotAllowed, None),
        };
        PeerInfo {
            site: r.site,
            instance: r.instance,
            state: PeerState::Refused,
            apps: Vec::new(),
            last_seen: wall.checked_sub(ago).unwrap_or(wall),
            channels: 0,
            streams: 0,
            bytes_sent: 0,
            bytes_received: 0,
            conflicts: Vec::new(),
            identity: Some(r.presented),
            trust,
            pinned_identity: pinned,
            refused_messages: r.count,
        }
    }));
    // Stable: a site's refused identities follow its accepted one.
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
                state: if c.is_confirmed() {
                    ChannelState::Up
                } else {
                    // An inbound channel waiting for its instance's announcement
                    // (or about to be refused) carries nothing yet.
                    ChannelState::Connecting
                },
                path: ChannelStats::of(c),
                open_streams: c.open_streams.load(Relaxed),
                age: c.since.elapsed(),
                reconnect_attempts: c.attempts,
                last_error: dial.and_then(|d| d.last_error.clone()),
                route: c.route,
                transport: c.transport,
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
                transport: d.transport,
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
            identity: self.identity,
            trust_mode: self.trust.mode(),
        }
    }

    pub(super) fn peer_infos(&self) -> Vec<PeerInfo> {
        peer_infos(
            &self.peers,
            &self.trust,
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

    /// Every app with a `bandwidthLimit` now, then apps limited earlier.
    fn throttle_stats(&self) -> Vec<ThrottleStats> {
        let exposed = self.exposed.names().into_iter().filter_map(|n| {
            let limit = self.exposed.get(&n)?.bandwidth_limit?;
            Some((ThrottleKey::Exposed(n), limit))
        });
        let remote = self
            .remote_apps
            .iter()
            .filter_map(|r| Some((ThrottleKey::remote(r), r.bandwidth_limit?)));
        self.streams.throttles().stats(exposed.chain(remote))
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
            throttles: self.throttle_stats(),
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
                ("messages_forged", c.messages_forged.load(Relaxed)),
                ("identities_refused", c.identities_refused.load(Relaxed)),
                ("sites_not_allowed", c.sites_not_allowed.load(Relaxed)),
                ("streams_not_allowed", c.streams_not_allowed.load(Relaxed)),
                ("udp_unknown_flow", c.udp_unknown_flow.load(Relaxed)),
                ("udp_queue_overflow", c.udp_queue_overflow.load(Relaxed)),
                ("udp_send_failed", c.udp_send_failed.load(Relaxed)),
                ("udp_flows_limited", c.udp_flows_limited.load(Relaxed)),
                ("tcp_frames_dropped", c.tcp_frames_dropped.load(Relaxed)),
                ("preamble_downgrades", c.preamble_downgrades.load(Relaxed)),
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

    fn fp() -> crate::identity::Fingerprint {
        crate::identity::SiteKey::generate()
            .unwrap()
            .public()
            .fingerprint()
    }

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
        let (mut trust, _) = Trust::new(
            crate::config::TrustMode::Pinned,
            SiteName::new("a").unwrap(),
            fp(),
            &[],
            &[],
        );
        let (b_id, c_id, impostor) = (fp(), fp(), fp());
        let b = SiteName::new("b").unwrap();
        let some = InstanceId::from_bytes([0xee; 16]);
        trust.check(&b, some, b_id, t0, 0);
        trust.check(&SiteName::new("c").unwrap(), some, c_id, t0, 0);
        trust.check(&b, some, impostor, t0 + Duration::from_secs(5), 0);
        let v = peer_infos(&peers, &trust, &Registry::default(), now, wall);
        let names: Vec<&str> = v.iter().map(|p| p.site.as_str()).collect();
        assert_eq!(names, ["b", "b", "c"]);
        assert_eq!((v[0].identity, v[0].trust), (Some(b_id), TrustState::New));
        assert_eq!(v[1].state, PeerState::Refused);
        assert_eq!(v[1].trust, TrustState::Conflict);
        assert_eq!(
            (v[1].identity, v[1].pinned_identity),
            (Some(impostor), Some(b_id))
        );
        assert_eq!((v[1].instance, v[1].refused_messages), (some, 1));
        assert_eq!(v[1].last_seen, wall - Duration::from_secs(6));
        let v: Vec<PeerInfo> = v
            .into_iter()
            .filter(|p| p.state != PeerState::Refused)
            .collect();
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
        let v = peer_infos(&peers, &trust, &Registry::default(), now, wall);
        assert_eq!(
            v[0].apps,
            [AppName::new("app").unwrap(), AppName::new("db").unwrap()]
        );
        assert!(v[1].apps.is_empty(), "the refused identity of b");
        assert_eq!(v[2].apps, [AppName::new("app").unwrap()]);
        let later = t0 + Duration::from_secs(200);
        assert_eq!(
            peer_infos(&peers, &trust, &Registry::default(), later, wall)[0].state,
            PeerState::Gone
        );
    }
}
