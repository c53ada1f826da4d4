//! Every conversion between the engine's types ([`crate::view`], [`crate::config`])
//! and the generated protobuf types of `wovenet.v1`.
//!
//! Outbound (engine → proto) conversions are `From` impls, or functions when
//! they need the current time; inbound ones turn request specs into the
//! config file's raw form so the config validator judges them. No I/O and no
//! decisions beyond field mapping live here; nothing else in the daemon builds
//! a generated message from engine data.

use std::time::{Duration, SystemTime};

use wovenet_proto::v1;

use crate::config::raw::{self, Scalar};
use crate::config::{
    BandwidthLimit, ExposedApp, ExposedTarget, ProxyProtocol, RemoteApp, Transport, TrustMode,
};
use crate::message::mqtt::BrokerState;
use crate::types::{ChannelRoute, Direction};
use crate::view::{
    AppsInfo, ChannelInfo, ChannelState, Event, ExposedAppInfo, ListenerState, PeerInfo, PeerState,
    ReloadOutcome, ReloadReport, RemoteAppInfo, Sequenced, SiteInfo, SocketInfo, StatsSnapshot,
    StreamDirection, StreamInfo, TrustState,
};

use super::rates::StatsRates;

/// `WatchStats` interval when the request gives none.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest `WatchStats` interval; shorter requests are raised to it.
pub const MIN_STATS_INTERVAL: Duration = Duration::from_millis(100);

/// A protobuf duration (saturating at `i64::MAX` seconds).
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Always < 1e9, so it fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// The push interval a `WatchStats` request asks for: unset, zero or
/// negative means the default; anything under the minimum is raised to it.
pub fn stats_interval(requested: Option<prost_types::Duration>) -> Duration {
    match requested.and_then(|d| Duration::try_from(d).ok()) {
        Some(d) if !d.is_zero() => d.max(MIN_STATS_INTERVAL),
        _ => DEFAULT_STATS_INTERVAL,
    }
}

/// `s` if given, else empty.
fn opt_text(s: Option<impl ToString>) -> String {
    s.map(|s| s.to_string()).unwrap_or_default()
}

/// The site, with its uptime as of `now`.
pub fn site(s: &SiteInfo, now: SystemTime) -> v1::SiteInfo {
    let (state, reason) = match &s.broker {
        BrokerState::Connecting => (v1::BrokerState::Connecting, String::new()),
        BrokerState::Connected => (v1::BrokerState::Connected, String::new()),
        BrokerState::Reconnecting { reason } => (v1::BrokerState::Reconnecting, reason.clone()),
    };
    v1::SiteInfo {
        name: s.name.to_string(),
        instance: s.instance.to_string(),
        version: s.version.clone(),
        started_at: Some(timestamp(s.started_at)),
        uptime: Some(duration(
            now.duration_since(s.started_at).unwrap_or(Duration::ZERO),
        )),
        broker_url: s.broker_url.clone(),
        broker_state: state.into(),
        broker_reason: reason,
        sockets: s.sockets.iter().map(Into::into).collect(),
        identity: s.identity.to_string(),
        trust_mode: match s.trust_mode {
            TrustMode::Pinned => v1::TrustMode::Pinned,
            TrustMode::Strict => v1::TrustMode::Strict,
            TrustMode::Open => v1::TrustMode::Open,
        }
        .into(),
    }
}

impl From<TrustState> for v1::TrustState {
    fn from(s: TrustState) -> Self {
        match s {
            TrustState::Pinned => Self::Pinned,
            TrustState::New => Self::New,
            TrustState::Conflict => Self::Conflict,
            TrustState::NotAllowed => Self::NotAllowed,
            TrustState::Unpinned => Self::Unpinned,
        }
    }
}

impl From<&SocketInfo> for v1::TunnelSocket {
    fn from(s: &SocketInfo) -> Self {
        Self {
            listen: s.listen.to_string(),
            public: opt_text(s.public),
            auto_detect: s.auto_detect,
            detect_error: s
                .detect_error
                .as_ref()
                .map(|f| f.error.clone())
                .unwrap_or_default(),
            detect_error_at: s.detect_error.as_ref().map(|f| timestamp(f.at)),
            mode: s.mode.as_str().to_owned(),
            nat_mapping: s.nat.map(|n| n.text().to_owned()).unwrap_or_default(),
        }
    }
}

impl From<PeerState> for v1::PeerState {
    fn from(s: PeerState) -> Self {
        match s {
            PeerState::Discovered => Self::Discovered,
            PeerState::Connecting => Self::Connecting,
            PeerState::Connected => Self::Connected,
            PeerState::Gone => Self::Gone,
            PeerState::Refused => Self::Refused,
        }
    }
}

/// Counts shown in `uint32` fields; absurd values saturate.
fn count32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<&PeerInfo> for v1::Peer {
    fn from(p: &PeerInfo) -> Self {
        Self {
            name: p.site.to_string(),
            instance: p.instance.to_string(),
            state: v1::PeerState::from(p.state).into(),
            apps: p.apps.iter().map(ToString::to_string).collect(),
            last_seen: Some(timestamp(p.last_seen)),
            channels: count32(p.channels),
            streams: count32(p.streams),
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            conflicting_instances: p.conflicts.iter().map(ToString::to_string).collect(),
            identity: opt_text(p.identity),
            trust: v1::TrustState::from(p.trust).into(),
            pinned_identity: opt_text(p.pinned_identity),
            refused_messages: p.refused_messages,
        }
    }
}

impl From<Direction> for v1::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Outbound => Self::Outbound,
            Direction::Inbound => Self::Inbound,
        }
    }
}

impl From<Transport> for v1::ChannelTransport {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Quic => Self::Quic,
            Transport::Tcp => Self::Tcp,
        }
    }
}

impl From<ChannelRoute> for v1::ChannelRoute {
    fn from(r: ChannelRoute) -> Self {
        match r {
            ChannelRoute::Direct => Self::Direct,
            ChannelRoute::Punched => Self::Punched,
            ChannelRoute::Relayed => Self::Relayed,
        }
    }
}

impl From<ChannelState> for v1::ChannelState {
    fn from(s: ChannelState) -> Self {
        match s {
            ChannelState::Up => Self::Up,
            ChannelState::Connecting => Self::Connecting,
        }
    }
}

impl From<&ChannelInfo> for v1::Channel {
    fn from(c: &ChannelInfo) -> Self {
        Self {
            id: c.id.map_or(0, |id| id.0),
            peer: c.peer.to_string(),
            direction: v1::Direction::from(c.direction).into(),
            local_addr: opt_text(c.local),
            remote_addr: c.remote.to_string(),
            state: v1::ChannelState::from(c.state).into(),
            rtt: Some(duration(c.path.rtt)),
            cwnd: c.path.cwnd,
            lost_packets: c.path.lost_packets,
            sent_packets: c.path.sent_packets,
            bytes_sent: c.path.bytes_sent,
            bytes_received: c.path.bytes_received,
            open_streams: count32(c.open_streams),
            age: Some(duration(c.age)),
            reconnect_attempts: c.reconnect_attempts,
            last_error: c.last_error.clone().unwrap_or_default(),
            route: v1::ChannelRoute::from(c.route).into(),
            transport: v1::ChannelTransport::from(c.transport).into(),
        }
    }
}

impl From<StreamDirection> for v1::StreamDirection {
    fn from(d: StreamDirection) -> Self {
        match d {
            StreamDirection::Outbound => Self::Outbound,
            StreamDirection::Inbound => Self::Inbound,
        }
    }
}

impl From<&StreamInfo> for v1::Stream {
    fn from(s: &StreamInfo) -> Self {
        Self {
            id: s.id,
            app: s.app.to_string(),
            peer: s.peer.to_string(),
            direction: v1::StreamDirection::from(s.direction).into(),
            client_addr: s.client.clone(),
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            age: Some(duration(s.age)),
            channel_id: s.channel.0,
            kind: s.protocol.as_str().to_owned(),
            datagrams_sent: s.datagrams_sent,
            datagrams_received: s.datagrams_received,
        }
    }
}

impl From<&ExposedApp> for v1::ExposedAppSpec {
    fn from(a: &ExposedApp) -> Self {
        match &a.target {
            ExposedTarget::Single(socket) => Self {
                name: a.name.to_string(),
                mode: "single".to_owned(),
                app_socket: socket.to_string(),
                max_connections: a.max_connections,
                allowed_sites: a.allowed_sites.iter().map(ToString::to_string).collect(),
                udp_idle_timeout: idle_secs(a.udp_idle_timeout),
                bandwidth_limit: limit_text(a.bandwidth_limit),
                proxy_protocol: proxy_text(a.proxy_protocol),
                ..Self::default()
            },
            ExposedTarget::Range {
                ports,
                addresses,
                protocol,
            } => Self {
                name: a.name.to_string(),
                mode: "range".to_owned(),
                app_socket: String::new(),
                port_range: ports.iter().map(ToString::to_string).collect(),
                address_range: addresses.iter().map(ToString::to_string).collect(),
                max_connections: a.max_connections,
                allowed_sites: a.allowed_sites.iter().map(ToString::to_string).collect(),
                protocol: protocol.as_str().to_owned(),
                udp_idle_timeout: idle_secs(a.udp_idle_timeout),
                bandwidth_limit: limit_text(a.bandwidth_limit),
                proxy_protocol: proxy_text(a.proxy_protocol),
            },
        }
    }
}

impl From<&ExposedAppInfo> for v1::ExposedApp {
    fn from(a: &ExposedAppInfo) -> Self {
        Self {
            spec: Some((&a.app).into()),
            live: a.live,
        }
    }
}

impl From<&RemoteApp> for v1::RemoteAppSpec {
    fn from(a: &RemoteApp) -> Self {
        Self {
            site_name: a.site.to_string(),
            app_name: a.app.to_string(),
            local_socket: a.local_socket.to_string(),
            app_socket: opt_text(a.app_socket_text()),
            max_connections: a.max_connections,
            udp_idle_timeout: idle_secs(a.udp_idle_timeout),
            bandwidth_limit: limit_text(a.bandwidth_limit),
        }
    }
}

impl From<&RemoteAppInfo> for v1::RemoteApp {
    fn from(a: &RemoteAppInfo) -> Self {
        let (state, listen_addr, listener_error) = match &a.listener {
            ListenerState::Open(socket) => {
                (v1::ListenerState::Open, socket.to_string(), String::new())
            }
            ListenerState::Waiting => (v1::ListenerState::Waiting, String::new(), String::new()),
            ListenerState::Failed(e) => (v1::ListenerState::Failed, String::new(), e.clone()),
        };
        Self {
            spec: Some((&a.app).into()),
            listener_state: state.into(),
            listen_addr,
            listener_error,
            live: a.live,
        }
    }
}

impl From<ReloadOutcome> for v1::ReloadOutcome {
    fn from(o: ReloadOutcome) -> Self {
        match o {
            ReloadOutcome::Applied => Self::Applied,
            ReloadOutcome::NeedsRestart => Self::NeedsRestart,
            ReloadOutcome::Invalid => Self::Invalid,
        }
    }
}

impl From<&ReloadReport> for v1::ReloadReport {
    fn from(r: &ReloadReport) -> Self {
        let exposed = |apps: &[ExposedApp]| apps.iter().map(Into::into).collect();
        let remote = |apps: &[RemoteApp]| apps.iter().map(Into::into).collect();
        Self {
            outcome: v1::ReloadOutcome::from(r.outcome()).into(),
            config_file: r.config_file.display().to_string(),
            exposed_added: exposed(&r.exposed_added),
            exposed_removed: exposed(&r.exposed_removed),
            exposed_changed: exposed(&r.exposed_changed),
            remote_added: remote(&r.remote_added),
            remote_removed: remote(&r.remote_removed),
            remote_changed: remote(&r.remote_changed),
            log_level: r
                .log_level
                .map(|l| l.as_str().to_owned())
                .unwrap_or_default(),
            needs_restart: r.needs_restart.clone(),
            errors: r
                .errors
                .iter()
                .map(|e| v1::ConfigFieldError {
                    path: e.path.clone(),
                    reason: e.reason.clone(),
                })
                .collect(),
            warnings: r.warnings.clone(),
        }
    }
}

/// `ListApps` output.
pub fn apps(a: &AppsInfo) -> v1::ListAppsResponse {
    v1::ListAppsResponse {
        exposed: a.exposed.iter().map(Into::into).collect(),
        remote: a.remote.iter().map(Into::into).collect(),
    }
}

impl From<&Sequenced> for v1::Event {
    fn from(s: &Sequenced) -> Self {
        use v1::event::Kind;
        let peer = |site: &dyn ToString, reason: &str| v1::PeerEvent {
            site: site.to_string(),
            reason: reason.to_owned(),
        };
        let kind = match &s.event {
            Event::PeerDiscovered { site } => Kind::PeerDiscovered(peer(site, "")),
            Event::PeerConnected { site } => Kind::PeerConnected(peer(site, "")),
            Event::PeerDisconnected { site, reason } => Kind::PeerDisconnected(peer(site, reason)),
            Event::ChannelUp { site, channel } => Kind::ChannelUp(v1::ChannelEvent {
                site: site.to_string(),
                channel: channel.0,
                reason: String::new(),
            }),
            Event::ChannelDown {
                site,
                channel,
                reason,
            } => Kind::ChannelDown(v1::ChannelEvent {
                site: site.to_string(),
                channel: channel.0,
                reason: reason.clone(),
            }),
            // The engine only says which app; the full definition is in ListApps.
            Event::ExposedAppAdded { app } => Kind::ExposedAppAdded(v1::ExposedAppSpec {
                name: app.to_string(),
                ..Default::default()
            }),
            Event::ExposedAppRemoved { app } => Kind::ExposedAppRemoved(v1::ExposedAppSpec {
                name: app.to_string(),
                ..Default::default()
            }),
            Event::RemoteAppAdded { app } => Kind::RemoteAppAdded(app.into()),
            Event::RemoteAppRemoved { app } => Kind::RemoteAppRemoved(app.into()),
            Event::ListenerOpened { app } => Kind::ListenerOpened(app.into()),
            Event::ListenerClosed { app } => Kind::ListenerClosed(app.into()),
            Event::StreamOpened { stream } => Kind::StreamOpened(stream.into()),
            Event::StreamClosed { stream } => Kind::StreamClosed(stream.into()),
            Event::ConfigReloaded { report } => Kind::ConfigReloaded(report.as_ref().into()),
        };
        Self {
            seq: s.seq,
            at: Some(timestamp(s.at)),
            kind: Some(kind),
        }
    }
}

/// One event of the feed.
pub fn event_message(s: &Sequenced) -> v1::WatchEventsResponse {
    v1::WatchEventsResponse {
        kind: Some(v1::watch_events_response::Kind::Event(s.into())),
    }
}

/// The state a watch starts from; `next_seq` is the first event that follows.
pub struct SnapshotParts {
    /// The site.
    pub site: SiteInfo,
    /// Peers.
    pub peers: Vec<PeerInfo>,
    /// Channels and dials.
    pub channels: Vec<ChannelInfo>,
    /// Open streams.
    pub streams: Vec<StreamInfo>,
    /// Apps.
    pub apps: AppsInfo,
    /// Sequence number of the next event.
    pub next_seq: u64,
}

/// The first message of the feed.
pub fn snapshot_message(s: &SnapshotParts, now: SystemTime) -> v1::WatchEventsResponse {
    v1::WatchEventsResponse {
        kind: Some(v1::watch_events_response::Kind::Snapshot(v1::Snapshot {
            site: Some(site(&s.site, now)),
            peers: s.peers.iter().map(Into::into).collect(),
            channels: s.channels.iter().map(Into::into).collect(),
            streams: s.streams.iter().map(Into::into).collect(),
            exposed: s.apps.exposed.iter().map(Into::into).collect(),
            remote: s.apps.remote.iter().map(Into::into).collect(),
            next_seq: s.next_seq,
        })),
    }
}

/// One stats update: totals from `s`, rates from `r` (aligned with `s`).
/// Channels without an id (dials not connected) are left out.
pub(crate) fn stats_message(
    s: &StatsSnapshot,
    r: &StatsRates,
    at: SystemTime,
) -> v1::WatchStatsResponse {
    let rate = |rates: &[super::rates::Rate], i: usize| rates.get(i).copied().unwrap_or_default();
    v1::WatchStatsResponse {
        at: Some(timestamp(at)),
        apps: s
            .apps
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let r = rate(&r.apps, i);
                v1::AppStats {
                    app: a.app.to_string(),
                    peer: a.peer.to_string(),
                    direction: v1::StreamDirection::from(a.direction).into(),
                    open_streams: a.open_streams,
                    total_streams: a.total_streams,
                    bytes_sent: a.bytes_sent,
                    bytes_received: a.bytes_received,
                    send_rate: r.send,
                    receive_rate: r.receive,
                    limited_streams: a.limited_streams,
                    not_allowed_streams: a.not_allowed_streams,
                    datagrams_sent: a.datagrams_sent,
                    datagrams_received: a.datagrams_received,
                }
            })
            .collect(),
        peers: s
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let r = rate(&r.peers, i);
                v1::PeerStats {
                    peer: p.site.to_string(),
                    bytes_sent: p.bytes_sent,
                    bytes_received: p.bytes_received,
                    send_rate: r.send,
                    receive_rate: r.receive,
                    conflicting_instances: p.conflicts.iter().map(ToString::to_string).collect(),
                }
            })
            .collect(),
        channels: s
            .channels
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let id = c.id?;
                let r = rate(&r.channels, i);
                Some(v1::ChannelStats {
                    id: id.0,
                    peer: c.peer.to_string(),
                    rtt: Some(duration(c.path.rtt)),
                    cwnd: c.path.cwnd,
                    lost_packets: c.path.lost_packets,
                    sent_packets: c.path.sent_packets,
                    bytes_sent: c.path.bytes_sent,
                    bytes_received: c.path.bytes_received,
                    send_rate: r.send,
                    receive_rate: r.receive,
                    open_streams: count32(c.open_streams),
                })
            })
            .collect(),
        counters: s
            .counters
            .iter()
            .map(|(name, value)| ((*name).to_owned(), *value))
            .collect(),
        streams: s.streams.iter().map(v1::Stream::from).collect(),
    }
}

/// Text as a config scalar; empty means "not set", as in the config file.
fn scalar(s: String) -> Option<Scalar> {
    (!s.is_empty()).then(|| Scalar::from(s))
}

/// A list as config scalars; an empty list means "not set".
fn scalars(v: Vec<String>) -> Option<Vec<Scalar>> {
    (!v.is_empty()).then(|| v.into_iter().map(Scalar::from).collect())
}

impl From<v1::ExposedAppSpec> for raw::ExposedApp {
    /// The spec in config-file terms, for the config validator.
    fn from(s: v1::ExposedAppSpec) -> Self {
        Self {
            mode: scalar(s.mode),
            app_name: scalar(s.name),
            app_socket: scalar(s.app_socket),
            port_range: scalars(s.port_range),
            address_range: scalars(s.address_range),
            max_connections: s.max_connections.map(|n| Scalar::from(n.to_string())),
            // Entries are kept as sent, empty ones too, so the validator
            // names them rather than this dropping them.
            allowed_sites: (!s.allowed_sites.is_empty())
                .then(|| s.allowed_sites.into_iter().map(Scalar::from).collect()),
            protocol: scalar(s.protocol),
            udp_idle_timeout: s.udp_idle_timeout.map(|n| Scalar::from(n.to_string())),
            bandwidth_limit: scalar(s.bandwidth_limit),
            proxy_protocol: scalar(s.proxy_protocol),
        }
    }
}

impl From<v1::RemoteAppSpec> for raw::RemoteApp {
    /// The spec in config-file terms, for the config validator.
    fn from(s: v1::RemoteAppSpec) -> Self {
        Self {
            site_name: scalar(s.site_name),
            app_name: scalar(s.app_name),
            local_socket: scalar(s.local_socket),
            app_socket: scalar(s.app_socket),
            max_connections: s.max_connections.map(|n| Scalar::from(n.to_string())),
            udp_idle_timeout: s.udp_idle_timeout.map(|n| Scalar::from(n.to_string())),
            bandwidth_limit: scalar(s.bandwidth_limit),
        }
    }
}

/// `bandwidthLimit` as the API carries it: its normalised text, empty when unlimited.
fn limit_text(l: Option<BandwidthLimit>) -> String {
    l.map(|l| l.to_string()).unwrap_or_default()
}

/// `proxyProtocol` as the API carries it: `v1`, `v2`, or empty when off.
fn proxy_text(p: Option<ProxyProtocol>) -> String {
    p.map(|p| p.as_str().to_owned()).unwrap_or_default()
}

/// `udpIdleTimeout` as the API carries it (whole seconds, the config's unit).
fn idle_secs(d: Option<Duration>) -> Option<u32> {
    d.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// `RemoveRemoteApp`'s local socket filter: empty means "every match".
pub fn local_filter(local_socket: &str) -> Option<&str> {
    (!local_socket.is_empty()).then_some(local_socket)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use super::*;
    use crate::config::{AppName, AppSocket, SiteName, validate};
    use crate::message::announce::InstanceId;
    use crate::types::{ChannelId, ChannelStats};
    use crate::view::DetectFailure;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn durations_and_intervals() {
        let d = duration(Duration::from_millis(1500));
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
        assert_eq!(stats_interval(None), DEFAULT_STATS_INTERVAL);
        let ms = |n: i32| {
            Some(prost_types::Duration {
                seconds: 0,
                nanos: n * 1_000_000,
            })
        };
        assert_eq!(stats_interval(ms(0)), DEFAULT_STATS_INTERVAL);
        assert_eq!(stats_interval(ms(-5)), DEFAULT_STATS_INTERVAL);
        assert_eq!(stats_interval(ms(10)), MIN_STATS_INTERVAL);
        assert_eq!(stats_interval(ms(250)), Duration::from_millis(250));
    }

    #[test]
    fn site_reports_uptime_broker_reason_and_sockets() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let s = SiteInfo {
            name: SiteName::new("a").expect("name"),
            instance: InstanceId::from_bytes([0xab; 16]),
            version: "1.2.3".into(),
            started_at: start,
            broker_url: "mqtt://127.0.0.1:1883".into(),
            broker: BrokerState::Reconnecting {
                reason: "refused".into(),
            },
            sockets: vec![SocketInfo {
                listen: addr("0.0.0.0:4000"),
                public: None,
                auto_detect: true,
                detect_error: Some(DetectFailure {
                    error: "'http://d.test/' answered HTTP 500".into(),
                    at: start + Duration::from_secs(30),
                }),
                mode: crate::config::SocketMode::DedicatedAddress,
                nat: None,
            }],
            identity: "hfqku7jmljxqcy44vv6js2nuzo7hxo4u".parse().expect("fp"),
            trust_mode: TrustMode::Strict,
        };
        let p = site(&s, start + Duration::from_secs(61));
        assert_eq!(p.identity, "hfqku7jmljxqcy44vv6js2nuzo7hxo4u");
        assert_eq!(p.trust_mode(), v1::TrustMode::Strict);
        assert_eq!(p.name, "a");
        assert_eq!(p.instance, "ab".repeat(16));
        assert_eq!(p.uptime.expect("uptime").seconds, 61);
        assert_eq!(p.broker_state(), v1::BrokerState::Reconnecting);
        assert_eq!(p.broker_reason, "refused");
        assert_eq!(p.sockets[0].listen, "0.0.0.0:4000");
        assert_eq!(p.sockets[0].public, "");
        assert!(p.sockets[0].auto_detect);
        assert_eq!(
            p.sockets[0].detect_error,
            "'http://d.test/' answered HTTP 500"
        );
        assert_eq!(p.sockets[0].detect_error_at.expect("at").seconds, 1030);
    }

    #[test]
    fn apps_keep_their_config_form_and_listener_state() {
        let range = validate::exposed_app(
            &raw::ExposedApp {
                app_name: Some("vnc".into()),
                mode: Some("range".into()),
                port_range: Some(vec!["5900".into(), "6000-6010".into()]),
                address_range: Some(vec!["10.0.0.0/24".into()]),
                max_connections: Some("5".into()),
                allowed_sites: Some(vec!["c".into(), "b".into()]),
                ..Default::default()
            },
            "",
        )
        .expect("valid");
        let spec = v1::ExposedAppSpec::from(&range);
        assert_eq!(spec.mode, "range");
        assert_eq!(spec.port_range, ["5900", "6000-6010"]);
        assert_eq!(spec.address_range, ["10.0.0.0/24"]);
        assert_eq!(spec.max_connections, Some(5));
        assert_eq!(spec.allowed_sites, ["c", "b"]);
        // Round trip through the validator gives the same app.
        let back = validate::exposed_app(&raw::ExposedApp::from(spec), "").expect("valid");
        assert_eq!(back, range);

        let remote = RemoteApp {
            site: SiteName::new("b").expect("name"),
            app: AppName::new("vnc").expect("name"),
            local_socket: AppSocket::Unix(PathBuf::from("/tmp/v.sock")),
            app_socket: Some(addr("10.0.0.5:5900")),
            max_connections: Some(9),
            udp_idle_timeout: None,
            bandwidth_limit: None,
        };
        let info = RemoteAppInfo {
            app: remote.clone(),
            listener: ListenerState::Failed("in use".into()),
            live: true,
        };
        let p = v1::RemoteApp::from(&info);
        let spec = p.spec.clone().expect("spec");
        assert_eq!(spec.local_socket, "unix:/tmp/v.sock");
        assert_eq!(spec.app_socket, "tcp:10.0.0.5:5900");
        assert_eq!(spec.max_connections, Some(9));
        assert_eq!(p.listener_state(), v1::ListenerState::Failed);
        assert_eq!(p.listener_error, "in use");
        assert!(p.live);
        let back = validate::remote_app(&raw::RemoteApp::from(spec), "").expect("valid");
        assert_eq!(back, remote);
    }

    #[test]
    fn proxy_protocol_crosses_the_api_in_config_terms() {
        let raw = raw::ExposedApp::from(v1::ExposedAppSpec {
            name: "web".into(),
            app_socket: "tcp:127.0.0.1:80".into(),
            proxy_protocol: "v2".into(),
            ..Default::default()
        });
        let app = validate::exposed_app(&raw, "").expect("valid");
        assert_eq!(app.proxy_protocol, Some(ProxyProtocol::V2));
        let spec = v1::ExposedAppSpec::from(&app);
        assert_eq!(spec.proxy_protocol, "v2");
        assert_eq!(
            validate::exposed_app(&raw::ExposedApp::from(spec), "").expect("again"),
            app
        );
        // Empty means off, both ways.
        let off = raw::ExposedApp::from(v1::ExposedAppSpec {
            name: "web".into(),
            app_socket: "tcp:127.0.0.1:80".into(),
            ..Default::default()
        });
        assert_eq!(off.proxy_protocol, None);
        let app = validate::exposed_app(&off, "").expect("valid");
        assert_eq!(v1::ExposedAppSpec::from(&app).proxy_protocol, "");
        // The API reports the config's message for a bad value.
        let bad = raw::ExposedApp::from(v1::ExposedAppSpec {
            name: "dns".into(),
            app_socket: "udp:127.0.0.1:53".into(),
            proxy_protocol: "v1".into(),
            ..Default::default()
        });
        let errs = validate::exposed_app(&bad, "").expect_err("udp");
        assert!(
            errs[0]
                .to_string()
                .starts_with("proxyProtocol: 'v1' cannot be used with a udp app"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn empty_spec_fields_mean_not_set() {
        let raw = raw::ExposedApp::from(v1::ExposedAppSpec {
            name: "x".into(),
            ..Default::default()
        });
        assert_eq!(raw.mode, None);
        assert_eq!(raw.app_socket, None);
        assert_eq!(raw.port_range, None);
        assert_eq!(raw.max_connections, None);
        assert_eq!(raw.allowed_sites, None);
        let errs = validate::exposed_app(&raw, "").expect_err("no socket");
        assert_eq!(
            errs[0].to_string(),
            "appSocket: is required in single mode (tcp:IP:PORT, udp:IP:PORT or unix:PATH)"
        );
        assert_eq!(local_filter(""), None);
        assert_eq!(local_filter("tcp:1.2.3.4:5"), Some("tcp:1.2.3.4:5"));
    }

    #[test]
    fn allowed_sites_from_the_api_are_judged_by_the_config_rules() {
        let raw = raw::ExposedApp::from(v1::ExposedAppSpec {
            name: "x".into(),
            app_socket: "tcp:127.0.0.1:1".into(),
            allowed_sites: vec!["b".into(), String::new(), "b".into()],
            ..Default::default()
        });
        let errs: Vec<String> = validate::exposed_app(&raw, "")
            .expect_err("bad entries")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "allowedSites[1]: site name must not be empty",
                "allowedSites[2]: duplicate site 'b' (already listed at allowedSites[0])",
            ]
        );
    }

    #[test]
    fn events_keep_seq_time_and_kind() {
        let ev = Sequenced {
            seq: 42,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(7),
            event: Event::ChannelDown {
                site: SiteName::new("b").expect("name"),
                channel: ChannelId(3),
                reason: "timed out".into(),
            },
        };
        let p = v1::Event::from(&ev);
        assert_eq!(p.seq, 42);
        assert_eq!(p.at.expect("at").seconds, 7);
        assert_eq!(
            p.kind,
            Some(v1::event::Kind::ChannelDown(v1::ChannelEvent {
                site: "b".into(),
                channel: 3,
                reason: "timed out".into()
            }))
        );
    }

    #[test]
    fn stats_leave_out_dials_without_a_channel() {
        let chan = |id: Option<u64>| ChannelInfo {
            id: id.map(ChannelId),
            peer: SiteName::new("b").expect("name"),
            direction: Direction::Outbound,
            local: None,
            remote: addr("127.0.0.1:1"),
            state: ChannelState::Up,
            path: ChannelStats {
                rtt: Duration::from_millis(2),
                cwnd: 1,
                sent_packets: 1,
                bytes_sent: 10,
                bytes_received: 20,
                ..ChannelStats::default()
            },
            open_streams: 0,
            age: Duration::ZERO,
            reconnect_attempts: 0,
            last_error: None,
            route: ChannelRoute::Direct,
            transport: Transport::Tcp,
        };
        let s = StatsSnapshot {
            channels: vec![chan(None), chan(Some(7))],
            counters: vec![("auth_failures", 2)],
            ..StatsSnapshot::default()
        };
        let m = stats_message(&s, &StatsRates::default(), SystemTime::UNIX_EPOCH);
        assert_eq!(m.channels.len(), 1);
        assert_eq!(m.channels[0].id, 7);
        assert_eq!(
            v1::Channel::from(&chan(Some(7))).transport(),
            v1::ChannelTransport::Tcp
        );
        assert_eq!(m.counters.get("auth_failures"), Some(&2));
    }

    #[test]
    fn a_name_conflict_lists_the_refused_instances_in_hex_in_peers_and_stats() {
        let p = PeerInfo {
            site: SiteName::new("b").expect("name"),
            instance: InstanceId::from_bytes([0xb1; 16]),
            state: PeerState::Connected,
            apps: Vec::new(),
            last_seen: SystemTime::UNIX_EPOCH,
            channels: 1,
            streams: 0,
            bytes_sent: 0,
            bytes_received: 0,
            conflicts: vec![InstanceId::from_bytes([0xb2; 16])],
            identity: None,
            trust: TrustState::Pinned,
            pinned_identity: None,
            refused_messages: 0,
        };
        let hex = vec!["b2".repeat(16)];
        assert_eq!(v1::Peer::from(&p).conflicting_instances, hex);
        assert_eq!(v1::Peer::from(&p).identity, "");
        let refused = PeerInfo {
            state: PeerState::Refused,
            identity: Some("hfqku7jmljxqcy44vv6js2nuzo7hxo4u".parse().expect("fp")),
            trust: TrustState::Conflict,
            pinned_identity: Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".parse().expect("fp")),
            refused_messages: 3,
            ..p.clone()
        };
        let r = v1::Peer::from(&refused);
        assert_eq!(r.state(), v1::PeerState::Refused);
        assert_eq!(r.trust(), v1::TrustState::Conflict);
        assert_eq!(r.identity, "hfqku7jmljxqcy44vv6js2nuzo7hxo4u");
        assert_eq!(r.pinned_identity, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(r.refused_messages, 3);
        let s = StatsSnapshot {
            peers: vec![p],
            ..StatsSnapshot::default()
        };
        let m = stats_message(&s, &StatsRates::default(), SystemTime::UNIX_EPOCH);
        assert_eq!(m.peers[0].conflicting_instances, hex);
    }
}
