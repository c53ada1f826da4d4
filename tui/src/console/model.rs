//! The client-side mirror of one daemon: site, peers, channels, streams, apps, the event
//! ring and a minute of per-channel stats history. It is filled from the WatchEvents
//! snapshot, kept current by its events and the WatchStats samples, and the peer list is
//! replaced by each `ListPeers` refresh (identities, trust and refused identities have no
//! events). No I/O, no rendering.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use wovenet_proto::v1::{self as pb, event::Kind};

/// How many events the Events tab keeps.
pub const EVENT_RING: usize = 1000;
/// Stats samples kept per channel (one a second: the last minute).
pub const HISTORY: usize = 60;

/// Whether the console currently talks to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Dialling for the first time.
    Connecting,
    /// The watch streams are live.
    Connected,
    /// Lost; the next attempt is at `retry_at`.
    Disconnected {
        /// Why the last attempt or stream failed.
        reason: String,
        /// When the next attempt starts.
        retry_at: SystemTime,
    },
}

/// The last minute of one channel's rates and RTT, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Bytes per second sent.
    pub tx: VecDeque<u64>,
    /// Bytes per second received.
    pub rx: VecDeque<u64>,
    /// RTT in microseconds.
    pub rtt: VecDeque<u64>,
}

impl History {
    fn push(&mut self, tx: f64, rx: f64, rtt_us: u64) {
        for (q, v) in [
            (&mut self.tx, tx.max(0.0) as u64),
            (&mut self.rx, rx.max(0.0) as u64),
            (&mut self.rtt, rtt_us),
        ] {
            if q.len() == HISTORY {
                q.pop_front();
            }
            q.push_back(v);
        }
    }
}

/// Everything the console knows about the daemon.
#[derive(Debug, Clone)]
pub struct Model {
    /// Daemon connection state.
    pub link: Link,
    /// The site, once a snapshot arrived.
    pub site: Option<pb::SiteInfo>,
    /// Peers by name order; a site's refused identities (state `refused`) follow it.
    pub peers: Vec<pb::Peer>,
    /// Data channels, by peer then id.
    pub channels: Vec<pb::Channel>,
    /// Open streams, oldest first.
    pub streams: Vec<pb::Stream>,
    /// Exposed apps.
    pub exposed: Vec<pb::ExposedApp>,
    /// Remote apps with their listener state.
    pub remote: Vec<pb::RemoteApp>,
    /// Events, newest at the front.
    pub events: VecDeque<pb::Event>,
    /// Per-channel history for sparklines.
    pub history: HashMap<u64, History>,
    /// Latest per-app traffic sample.
    pub app_stats: Vec<pb::AppStats>,
    /// Latest per-channel rates `(send, receive)`.
    pub rates: HashMap<u64, (f64, f64)>,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            link: Link::Connecting,
            site: None,
            peers: Vec::new(),
            channels: Vec::new(),
            streams: Vec::new(),
            exposed: Vec::new(),
            remote: Vec::new(),
            events: VecDeque::new(),
            history: HashMap::new(),
            app_stats: Vec::new(),
            rates: HashMap::new(),
        }
    }
}

/// Whether `p` is an identity refused for its name rather than a peer.
pub fn refused(p: &pb::Peer) -> bool {
    p.state == pb::PeerState::Refused as i32
}

fn spec_matches(a: &pb::RemoteAppSpec, b: &pb::RemoteAppSpec) -> bool {
    a.site_name == b.site_name && a.app_name == b.app_name && a.local_socket == b.local_socket
}

impl Model {
    /// Replaces the mirror with a fresh snapshot (after every (re)connect). Events and
    /// history survive: they are the operator's record across daemon restarts.
    pub fn apply_snapshot(&mut self, s: pb::Snapshot) {
        self.site = s.site;
        self.peers = s.peers;
        self.channels = s.channels;
        self.streams = s.streams;
        self.exposed = s.exposed;
        self.remote = s.remote;
        self.link = Link::Connected;
        let live: Vec<u64> = self.channels.iter().map(|c| c.id).collect();
        self.history.retain(|id, _| live.contains(id));
    }

    /// Applies one event to the mirror and records it in the ring.
    pub fn apply_event(&mut self, e: pb::Event) {
        if let Some(k) = &e.kind {
            self.apply_kind(k);
        }
        if self.events.len() == EVENT_RING {
            self.events.pop_back();
        }
        self.events.push_front(e);
    }

    /// Replaces the peers with a fresh `ListPeers` (the daemon's order).
    pub fn apply_peers(&mut self, peers: Vec<pb::Peer>) {
        self.peers = peers;
    }

    /// The accepted peer of `name` (never one of its refused identities), added if new.
    fn peer_mut(&mut self, name: &str) -> &mut pb::Peer {
        let i = match self
            .peers
            .iter()
            .position(|p| p.name == name && !refused(p))
        {
            Some(i) => i,
            None => {
                self.peers.push(pb::Peer {
                    name: name.to_owned(),
                    ..Default::default()
                });
                // A site before its refused identities, as the daemon lists them.
                self.peers
                    .sort_by(|a, b| a.name.cmp(&b.name).then(refused(a).cmp(&refused(b))));
                self.peers
                    .iter()
                    .position(|p| p.name == name && !refused(p))
                    .unwrap_or_default()
            }
        };
        &mut self.peers[i]
    }

    fn apply_kind(&mut self, k: &Kind) {
        let now = SystemTime::now();
        match k {
            Kind::PeerDiscovered(p) => {
                let peer = self.peer_mut(&p.site);
                peer.state = pb::PeerState::Discovered as i32;
                peer.last_seen = Some(now.into());
            }
            Kind::PeerConnected(p) => {
                let peer = self.peer_mut(&p.site);
                peer.state = pb::PeerState::Connected as i32;
                peer.last_seen = Some(now.into());
            }
            Kind::PeerDisconnected(p) => {
                self.peer_mut(&p.site).state = pb::PeerState::Gone as i32;
            }
            Kind::ChannelUp(c) => {
                if !self.channels.iter().any(|x| x.id == c.channel) {
                    self.channels.push(pb::Channel {
                        id: c.channel,
                        peer: c.site.clone(),
                        state: pb::ChannelState::Up as i32,
                        ..Default::default()
                    });
                    self.channels
                        .sort_by(|a, b| a.peer.cmp(&b.peer).then(a.id.cmp(&b.id)));
                }
                let n = self.channels.iter().filter(|x| x.peer == c.site).count();
                self.peer_mut(&c.site).channels = n as u32;
            }
            Kind::ChannelDown(c) => {
                self.channels.retain(|x| x.id != c.channel);
                self.history.remove(&c.channel);
                let n = self.channels.iter().filter(|x| x.peer == c.site).count();
                self.peer_mut(&c.site).channels = n as u32;
            }
            Kind::ExposedAppAdded(s) => {
                self.exposed
                    .retain(|a| a.spec.as_ref().map(|x| &x.name) != Some(&s.name));
                self.exposed.push(pb::ExposedApp {
                    spec: Some(s.clone()),
                    live: true,
                });
            }
            Kind::ExposedAppRemoved(s) => {
                self.exposed
                    .retain(|a| a.spec.as_ref().map(|x| &x.name) != Some(&s.name));
            }
            Kind::RemoteAppAdded(s) => {
                if !self
                    .remote
                    .iter()
                    .any(|r| r.spec.as_ref().is_some_and(|x| spec_matches(x, s)))
                {
                    self.remote.push(pb::RemoteApp {
                        spec: Some(s.clone()),
                        listener_state: pb::ListenerState::Waiting as i32,
                        live: true,
                        ..Default::default()
                    });
                }
            }
            Kind::RemoteAppRemoved(s) => {
                self.remote
                    .retain(|r| !r.spec.as_ref().is_some_and(|x| spec_matches(x, s)));
            }
            Kind::ListenerOpened(s) | Kind::ListenerClosed(s) => {
                let state = if matches!(k, Kind::ListenerOpened(_)) {
                    pb::ListenerState::Open
                } else {
                    pb::ListenerState::Waiting
                };
                for r in &mut self.remote {
                    if r.spec.as_ref().is_some_and(|x| spec_matches(x, s)) {
                        r.listener_state = state as i32;
                    }
                }
            }
            Kind::StreamOpened(s) => {
                self.streams.retain(|x| x.id != s.id);
                self.streams.push(s.clone());
            }
            Kind::StreamClosed(s) => self.streams.retain(|x| x.id != s.id),
            Kind::ConfigReloaded(r) => self.apply_reload(r),
        }
    }

    /// Folds the apps a config reload changed into the mirror (an invalid file changed
    /// nothing). Apps a reload adds come from the file: not live. The listener states of
    /// new remote apps follow in their own events.
    fn apply_reload(&mut self, r: &pb::ReloadReport) {
        if !r.errors.is_empty() {
            return;
        }
        let name = |a: &pb::ExposedApp| a.spec.as_ref().map(|x| x.name.clone());
        for gone in &r.exposed_removed {
            self.exposed
                .retain(|a| name(a).as_ref() != Some(&gone.name));
        }
        for changed in &r.exposed_changed {
            for a in &mut self.exposed {
                if name(a).as_ref() == Some(&changed.name) {
                    a.spec = Some(changed.clone());
                }
            }
        }
        for added in &r.exposed_added {
            self.exposed
                .retain(|a| name(a).as_ref() != Some(&added.name));
            self.exposed.push(pb::ExposedApp {
                spec: Some(added.clone()),
                live: false,
            });
        }
        self.exposed.sort_by_key(name);
        // Remote apps are matched by their local socket, as the daemon does.
        let socket = |r: &pb::RemoteApp| r.spec.as_ref().map(|x| x.local_socket.clone());
        for gone in r.remote_removed.iter().chain(&r.remote_changed) {
            self.remote
                .retain(|x| socket(x).as_ref() != Some(&gone.local_socket));
        }
        for added in r.remote_added.iter().chain(&r.remote_changed) {
            self.remote.push(pb::RemoteApp {
                spec: Some(added.clone()),
                listener_state: pb::ListenerState::Waiting as i32,
                live: false,
                ..Default::default()
            });
        }
    }

    /// Folds one WatchStats sample into channels, peers and the sparkline history.
    pub fn apply_stats(&mut self, s: pb::WatchStatsResponse) {
        for cs in &s.channels {
            let rtt_us = cs.rtt.as_ref().map_or(0, |d| {
                (d.seconds.max(0) as u64) * 1_000_000 + (d.nanos.max(0) as u64) / 1000
            });
            self.history
                .entry(cs.id)
                .or_default()
                .push(cs.send_rate, cs.receive_rate, rtt_us);
            self.rates.insert(cs.id, (cs.send_rate, cs.receive_rate));
            if let Some(c) = self.channels.iter_mut().find(|c| c.id == cs.id) {
                c.rtt = cs.rtt;
                c.cwnd = cs.cwnd;
                c.lost_packets = cs.lost_packets;
                c.sent_packets = cs.sent_packets;
                c.bytes_sent = cs.bytes_sent;
                c.bytes_received = cs.bytes_received;
                c.open_streams = cs.open_streams;
            }
        }
        for ps in &s.peers {
            if let Some(p) = self
                .peers
                .iter_mut()
                .find(|p| p.name == ps.peer && !refused(p))
            {
                p.bytes_sent = ps.bytes_sent;
                p.bytes_received = ps.bytes_received;
                p.conflicting_instances = ps.conflicting_instances.clone();
            }
        }
        for st in s.streams {
            if let Some(x) = self.streams.iter_mut().find(|x| x.id == st.id) {
                *x = st;
            }
        }
        self.app_stats = s.apps;
    }

    /// Streams refused to peers the exposed app `app`'s `allowedSites` does not list,
    /// summed over peers.
    pub fn app_not_allowed(&self, app: &str) -> u64 {
        self.app_stats
            .iter()
            .filter(|a| a.app == app && a.direction == pb::StreamDirection::Inbound as i32)
            .map(|a| a.not_allowed_streams)
            .sum()
    }

    /// Traffic of one app name summed over peers and directions: `(open streams, sent, received)`.
    pub fn app_traffic(&self, app: &str) -> (u64, u64, u64) {
        self.app_stats
            .iter()
            .filter(|a| a.app == app)
            .fold((0, 0, 0), |(o, s, r), a| {
                (o + a.open_streams, s + a.bytes_sent, r + a.bytes_received)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_refused_beta() -> Model {
        let mut m = Model::default();
        m.apply_peers(vec![
            pb::Peer {
                name: "beta".into(),
                state: pb::PeerState::Connected as i32,
                identity: "hfqku7jmljxqcy44vv6js2nuzo7hxo4u".into(),
                trust: pb::TrustState::Pinned.into(),
                ..Default::default()
            },
            pb::Peer {
                name: "beta".into(),
                state: pb::PeerState::Refused as i32,
                identity: "x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i".into(),
                trust: pb::TrustState::Conflict.into(),
                ..Default::default()
            },
        ]);
        m
    }

    fn exposed(name: &str, socket: &str) -> pb::ExposedApp {
        pb::ExposedApp {
            spec: Some(pb::ExposedAppSpec {
                name: name.into(),
                app_socket: socket.into(),
                ..Default::default()
            }),
            live: false,
        }
    }

    fn remote(app: &str, local: &str) -> pb::RemoteAppSpec {
        pb::RemoteAppSpec {
            site_name: "beta".into(),
            app_name: app.into(),
            local_socket: local.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_reload_adds_removes_and_replaces_apps_and_an_invalid_one_changes_nothing() {
        let mut m = Model::default();
        let mut live = exposed("live", "tcp:127.0.0.1:9");
        live.live = true;
        m.exposed = vec![
            exposed("gone", "tcp:127.0.0.1:1"),
            exposed("moved", "tcp:127.0.0.1:2"),
            live.clone(),
        ];
        m.remote = vec![
            pb::RemoteApp {
                spec: Some(remote("db", "tcp:127.0.0.1:5432")),
                listener_state: pb::ListenerState::Open as i32,
                ..Default::default()
            },
            pb::RemoteApp {
                spec: Some(remote("old", "tcp:127.0.0.1:7000")),
                ..Default::default()
            },
        ];
        let before = (m.exposed.clone(), m.remote.clone());
        m.apply_event(pb::Event {
            kind: Some(Kind::ConfigReloaded(pb::ReloadReport {
                outcome: pb::ReloadOutcome::Invalid.into(),
                errors: vec![pb::ConfigFieldError::default()],
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!((m.exposed.clone(), m.remote.clone()), before);
        m.apply_event(pb::Event {
            kind: Some(Kind::ConfigReloaded(pb::ReloadReport {
                outcome: pb::ReloadOutcome::Applied.into(),
                exposed_added: vec![exposed("added", "tcp:127.0.0.1:3").spec.unwrap()],
                exposed_removed: vec![exposed("gone", "").spec.unwrap()],
                exposed_changed: vec![exposed("moved", "tcp:127.0.0.1:22").spec.unwrap()],
                remote_removed: vec![remote("old", "tcp:127.0.0.1:7000")],
                remote_added: vec![remote("new", "tcp:127.0.0.1:7001")],
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(
            m.exposed,
            [
                exposed("added", "tcp:127.0.0.1:3"),
                live,
                exposed("moved", "tcp:127.0.0.1:22")
            ]
        );
        let remote: Vec<_> = m
            .remote
            .iter()
            .map(|r| (r.spec.clone().unwrap().app_name, r.listener_state))
            .collect();
        assert_eq!(
            remote,
            [
                ("db".to_owned(), pb::ListenerState::Open as i32),
                ("new".to_owned(), pb::ListenerState::Waiting as i32)
            ],
            "an unchanged listener keeps its state"
        );
    }

    /// Regression: events and samples updated the first row of a name, which could be
    /// an identity refused for it.
    #[test]
    fn events_and_samples_never_touch_a_refused_identity() {
        let mut m = with_refused_beta();
        m.peers.swap(0, 1);
        m.apply_event(pb::Event {
            kind: Some(Kind::PeerDisconnected(pb::PeerEvent {
                site: "beta".into(),
                reason: String::new(),
            })),
            ..Default::default()
        });
        m.apply_stats(pb::WatchStatsResponse {
            peers: vec![pb::PeerStats {
                peer: "beta".into(),
                bytes_sent: 7,
                ..Default::default()
            }],
            ..Default::default()
        });
        let states: Vec<(i32, u64)> = m.peers.iter().map(|p| (p.state, p.bytes_sent)).collect();
        assert_eq!(
            states,
            [
                (pb::PeerState::Refused as i32, 0),
                (pb::PeerState::Gone as i32, 7)
            ]
        );
    }

    #[test]
    fn a_site_known_only_as_refused_gets_its_own_row_first_when_it_is_accepted() {
        let mut m = with_refused_beta();
        m.peers.remove(0);
        m.apply_event(pb::Event {
            kind: Some(Kind::PeerDiscovered(pb::PeerEvent {
                site: "beta".into(),
                reason: String::new(),
            })),
            ..Default::default()
        });
        let rows: Vec<(&str, bool)> = m
            .peers
            .iter()
            .map(|p| (p.name.as_str(), refused(p)))
            .collect();
        assert_eq!(rows, [("beta", false), ("beta", true)]);
        // The next ListPeers is the truth again.
        m.apply_peers(vec![]);
        assert!(m.peers.is_empty());
    }

    #[test]
    fn stats_samples_refresh_open_streams_bytes_without_polling() {
        let mut m = Model::default();
        m.streams.push(pb::Stream {
            id: 7,
            app: "web".into(),
            bytes_sent: 1,
            ..Default::default()
        });
        m.apply_stats(pb::WatchStatsResponse {
            streams: vec![
                pb::Stream {
                    id: 7,
                    app: "web".into(),
                    bytes_sent: 4096,
                    bytes_received: 10,
                    ..Default::default()
                },
                // Not known from the event feed yet: left to the feed.
                pb::Stream {
                    id: 8,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(m.streams.len(), 1);
        assert_eq!(
            (m.streams[0].bytes_sent, m.streams[0].bytes_received),
            (4096, 10)
        );
    }
}
