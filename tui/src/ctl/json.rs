//! `-o json`: the stable, script-facing shape of every command's output. Each command prints
//! its RPC response message with the proto field names (snake_case); enums are lowercase
//! strings without their prefix (`"connected"`, `"unspecified"`, `"unknown"` for values this
//! client does not know), durations are seconds as numbers, timestamps RFC 3339 UTC strings
//! (`null` when absent), byte counts and counters plain integers, rates bytes per second.
//! Fields are only ever added, never renamed or removed. No table formatting lives here.

use std::collections::BTreeMap;

use serde::Serialize;
use wovenet_proto::v1::{self as pb, event, watch_events_response};

use super::units;

fn ts(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.map(units::timestamp)
}

/// `status`: `GetSiteResponse`.
#[derive(Debug, Serialize)]
pub struct GetSite {
    /// The site.
    pub site: Site,
}

/// `SiteInfo`.
#[derive(Debug, Serialize)]
pub struct Site {
    name: String,
    instance: String,
    version: String,
    started_at: Option<String>,
    uptime: Option<f64>,
    broker_url: String,
    broker_state: String,
    broker_reason: String,
    sockets: Vec<TunnelSocket>,
    identity: String,
    trust_mode: String,
}

impl From<&pb::SiteInfo> for Site {
    fn from(s: &pb::SiteInfo) -> Self {
        Self {
            name: s.name.clone(),
            instance: s.instance.clone(),
            version: s.version.clone(),
            started_at: ts(s.started_at.as_ref()),
            uptime: units::seconds(s.uptime.as_ref()),
            broker_url: s.broker_url.clone(),
            broker_state: units::broker_state(s.broker_state),
            broker_reason: s.broker_reason.clone(),
            sockets: s.sockets.iter().map(TunnelSocket::from).collect(),
            identity: s.identity.clone(),
            trust_mode: units::trust_mode(s.trust_mode),
        }
    }
}

/// `TunnelSocket`.
#[derive(Debug, Serialize)]
pub struct TunnelSocket {
    listen: String,
    public: String,
    auto_detect: bool,
    detect_error: String,
    detect_error_at: Option<String>,
    mode: String,
    nat_mapping: String,
}

impl From<&pb::TunnelSocket> for TunnelSocket {
    fn from(s: &pb::TunnelSocket) -> Self {
        Self {
            listen: s.listen.clone(),
            public: s.public.clone(),
            auto_detect: s.auto_detect,
            detect_error: s.detect_error.clone(),
            detect_error_at: ts(s.detect_error_at.as_ref()),
            mode: s.mode.clone(),
            nat_mapping: s.nat_mapping.clone(),
        }
    }
}

/// `peers`: `ListPeersResponse`.
#[derive(Debug, Serialize)]
pub struct ListPeers {
    /// Peers.
    pub peers: Vec<Peer>,
}

/// `Peer`.
#[derive(Debug, Serialize)]
pub struct Peer {
    name: String,
    instance: String,
    state: String,
    apps: Vec<String>,
    last_seen: Option<String>,
    channels: u32,
    streams: u32,
    bytes_sent: u64,
    bytes_received: u64,
    conflicting_instances: Vec<String>,
    identity: String,
    trust: String,
    pinned_identity: String,
    refused_messages: u64,
}

impl From<&pb::Peer> for Peer {
    fn from(p: &pb::Peer) -> Self {
        Self {
            name: p.name.clone(),
            instance: p.instance.clone(),
            state: units::peer_state(p.state),
            apps: p.apps.clone(),
            last_seen: ts(p.last_seen.as_ref()),
            channels: p.channels,
            streams: p.streams,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            conflicting_instances: p.conflicting_instances.clone(),
            identity: p.identity.clone(),
            trust: units::trust_state(p.trust),
            pinned_identity: p.pinned_identity.clone(),
            refused_messages: p.refused_messages,
        }
    }
}

/// `peers forget`: `ForgetPeerResponse`.
#[derive(Debug, Serialize)]
pub struct PeerForgotten {
    /// The identity that was pinned.
    pub identity: String,
}

/// `channels`: `ListChannelsResponse`.
#[derive(Debug, Serialize)]
pub struct ListChannels {
    /// Channels.
    pub channels: Vec<Channel>,
}

/// `Channel`.
#[derive(Debug, Serialize)]
pub struct Channel {
    id: u64,
    peer: String,
    direction: String,
    route: String,
    local_addr: String,
    remote_addr: String,
    state: String,
    rtt: Option<f64>,
    cwnd: u64,
    lost_packets: u64,
    sent_packets: u64,
    bytes_sent: u64,
    bytes_received: u64,
    open_streams: u32,
    age: Option<f64>,
    reconnect_attempts: u32,
    last_error: String,
    transport: String,
}

impl From<&pb::Channel> for Channel {
    fn from(c: &pb::Channel) -> Self {
        Self {
            id: c.id,
            peer: c.peer.clone(),
            direction: units::direction(c.direction),
            route: units::channel_route(c.route),
            transport: units::channel_transport(c.transport),
            local_addr: c.local_addr.clone(),
            remote_addr: c.remote_addr.clone(),
            state: units::channel_state(c.state),
            rtt: units::seconds(c.rtt.as_ref()),
            cwnd: c.cwnd,
            lost_packets: c.lost_packets,
            sent_packets: c.sent_packets,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            open_streams: c.open_streams,
            age: units::seconds(c.age.as_ref()),
            reconnect_attempts: c.reconnect_attempts,
            last_error: c.last_error.clone(),
        }
    }
}

/// `streams`: `ListStreamsResponse`.
#[derive(Debug, Serialize)]
pub struct ListStreams {
    /// Streams.
    pub streams: Vec<Stream>,
}

/// `Stream`.
#[derive(Debug, Serialize)]
pub struct Stream {
    id: u64,
    app: String,
    peer: String,
    direction: String,
    client_addr: String,
    bytes_sent: u64,
    bytes_received: u64,
    age: Option<f64>,
    channel_id: u64,
    kind: String,
    datagrams_sent: u64,
    datagrams_received: u64,
}

impl From<&pb::Stream> for Stream {
    fn from(s: &pb::Stream) -> Self {
        Self {
            id: s.id,
            app: s.app.clone(),
            peer: s.peer.clone(),
            direction: units::stream_direction(s.direction),
            client_addr: s.client_addr.clone(),
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            age: units::seconds(s.age.as_ref()),
            channel_id: s.channel_id,
            kind: units::stream_kind(&s.kind),
            datagrams_sent: s.datagrams_sent,
            datagrams_received: s.datagrams_received,
        }
    }
}

/// `apps`: `ListAppsResponse`.
#[derive(Debug, Serialize)]
pub struct ListApps {
    /// Exposed apps.
    pub exposed: Vec<ExposedApp>,
    /// Remote apps.
    pub remote: Vec<RemoteApp>,
}

impl From<&pb::ListAppsResponse> for ListApps {
    fn from(r: &pb::ListAppsResponse) -> Self {
        Self {
            exposed: r.exposed.iter().map(ExposedApp::from).collect(),
            remote: r.remote.iter().map(RemoteApp::from).collect(),
        }
    }
}

/// `ExposedAppSpec`; an empty `mode` is reported as `single`, its meaning.
#[derive(Debug, Serialize)]
pub struct ExposedAppSpec {
    name: String,
    mode: String,
    app_socket: String,
    port_range: Vec<String>,
    address_range: Vec<String>,
    /// `null` when not set (the daemon's default applies).
    max_connections: Option<u32>,
    /// Empty when every site may reach the app.
    allowed_sites: Vec<String>,
    /// Range apps with udp targets: `udp` (left out for tcp).
    #[serde(skip_serializing_if = "String::is_empty")]
    protocol: String,
    /// UDP apps: seconds; left out when not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    udp_idle_timeout: Option<u32>,
    /// Bytes per second each way, as the daemon normalised it
    /// (`"10MiB/s"`); `null` when unlimited.
    bandwidth_limit: Option<String>,
    /// `v1` or `v2` when the app gets a PROXY protocol header; left out when off.
    #[serde(skip_serializing_if = "String::is_empty")]
    proxy_protocol: String,
}

impl From<&pb::ExposedAppSpec> for ExposedAppSpec {
    fn from(s: &pb::ExposedAppSpec) -> Self {
        Self {
            name: s.name.clone(),
            mode: if s.mode.is_empty() {
                "single".to_owned()
            } else {
                s.mode.clone()
            },
            app_socket: s.app_socket.clone(),
            port_range: s.port_range.clone(),
            address_range: s.address_range.clone(),
            max_connections: s.max_connections,
            allowed_sites: s.allowed_sites.clone(),
            protocol: if s.protocol == "udp" {
                s.protocol.clone()
            } else {
                String::new()
            },
            udp_idle_timeout: s.udp_idle_timeout,
            bandwidth_limit: limit(&s.bandwidth_limit),
            proxy_protocol: s.proxy_protocol.clone(),
        }
    }
}

/// A `bandwidthLimit`: `None` (JSON `null`) when unlimited.
fn limit(rate: &str) -> Option<String> {
    (!rate.is_empty()).then(|| rate.to_owned())
}

/// `ExposedApp`.
#[derive(Debug, Serialize)]
pub struct ExposedApp {
    spec: ExposedAppSpec,
    live: bool,
}

impl From<&pb::ExposedApp> for ExposedApp {
    fn from(a: &pb::ExposedApp) -> Self {
        Self {
            spec: ExposedAppSpec::from(&a.spec.clone().unwrap_or_default()),
            live: a.live,
        }
    }
}

/// `RemoteAppSpec`.
#[derive(Debug, Serialize)]
pub struct RemoteAppSpec {
    site_name: String,
    app_name: String,
    local_socket: String,
    app_socket: String,
    /// `null` when not set (the daemon's default applies).
    max_connections: Option<u32>,
    /// UDP apps: seconds; left out when not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    udp_idle_timeout: Option<u32>,
    /// Bytes per second each way (`"100Mbit/s"`); `null` when unlimited.
    bandwidth_limit: Option<String>,
}

impl From<&pb::RemoteAppSpec> for RemoteAppSpec {
    fn from(s: &pb::RemoteAppSpec) -> Self {
        Self {
            site_name: s.site_name.clone(),
            app_name: s.app_name.clone(),
            local_socket: s.local_socket.clone(),
            app_socket: s.app_socket.clone(),
            max_connections: s.max_connections,
            udp_idle_timeout: s.udp_idle_timeout,
            bandwidth_limit: limit(&s.bandwidth_limit),
        }
    }
}

/// `RemoteApp`.
#[derive(Debug, Serialize)]
pub struct RemoteApp {
    spec: RemoteAppSpec,
    listener_state: String,
    listen_addr: String,
    listener_error: String,
    live: bool,
}

impl From<&pb::RemoteApp> for RemoteApp {
    fn from(a: &pb::RemoteApp) -> Self {
        Self {
            spec: RemoteAppSpec::from(&a.spec.clone().unwrap_or_default()),
            listener_state: units::listener_state(a.listener_state),
            listen_addr: a.listen_addr.clone(),
            listener_error: a.listener_error.clone(),
            live: a.live,
        }
    }
}

/// `expose add` / `expose rm`: `AddExposedAppResponse` / `RemoveExposedAppResponse`.
#[derive(Debug, Serialize)]
pub struct ExposedAppChange {
    /// The app added or removed.
    pub app: ExposedApp,
}

/// `remote add`: `AddRemoteAppResponse`.
#[derive(Debug, Serialize)]
pub struct RemoteAppAdded {
    /// The app added.
    pub app: RemoteApp,
}

/// `remote rm`: `RemoveRemoteAppResponse`.
#[derive(Debug, Serialize)]
pub struct RemoteAppsRemoved {
    /// The apps removed.
    pub removed: Vec<RemoteApp>,
}

/// `reload`: `ReloadResponse`.
#[derive(Debug, Serialize)]
pub struct Reload {
    /// What the reload did.
    pub report: ReloadReport,
}

/// `ReloadReport` (`outcome`: `applied`, `needs_restart` or `invalid`).
#[derive(Debug, Serialize)]
pub struct ReloadReport {
    outcome: String,
    config_file: String,
    exposed_added: Vec<ExposedAppSpec>,
    exposed_removed: Vec<ExposedAppSpec>,
    exposed_changed: Vec<ExposedAppSpec>,
    remote_added: Vec<RemoteAppSpec>,
    remote_removed: Vec<RemoteAppSpec>,
    remote_changed: Vec<RemoteAppSpec>,
    log_level: String,
    needs_restart: Vec<String>,
    errors: Vec<ConfigFieldError>,
    warnings: Vec<String>,
}

impl From<&pb::ReloadReport> for ReloadReport {
    fn from(r: &pb::ReloadReport) -> Self {
        let exposed = |v: &[pb::ExposedAppSpec]| v.iter().map(ExposedAppSpec::from).collect();
        let remote = |v: &[pb::RemoteAppSpec]| v.iter().map(RemoteAppSpec::from).collect();
        Self {
            outcome: units::reload_outcome(r.outcome),
            config_file: r.config_file.clone(),
            exposed_added: exposed(&r.exposed_added),
            exposed_removed: exposed(&r.exposed_removed),
            exposed_changed: exposed(&r.exposed_changed),
            remote_added: remote(&r.remote_added),
            remote_removed: remote(&r.remote_removed),
            remote_changed: remote(&r.remote_changed),
            log_level: r.log_level.clone(),
            needs_restart: r.needs_restart.clone(),
            errors: r.errors.iter().map(ConfigFieldError::from).collect(),
            warnings: r.warnings.clone(),
        }
    }
}

/// `ConfigFieldError`.
#[derive(Debug, Serialize)]
pub struct ConfigFieldError {
    path: String,
    reason: String,
}

impl From<&pb::ConfigFieldError> for ConfigFieldError {
    fn from(e: &pb::ConfigFieldError) -> Self {
        Self {
            path: e.path.clone(),
            reason: e.reason.clone(),
        }
    }
}

/// `events`, one line each: `WatchEventsResponse`, `{"snapshot": {…}}` or `{"event": {…}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEvents {
    /// The first line.
    Snapshot(Snapshot),
    /// Every following line.
    Event(Event),
    /// A message with neither (a newer daemon's kind).
    Unknown {},
}

impl From<&pb::WatchEventsResponse> for WatchEvents {
    fn from(r: &pb::WatchEventsResponse) -> Self {
        match &r.kind {
            Some(watch_events_response::Kind::Snapshot(s)) => Self::Snapshot(s.into()),
            Some(watch_events_response::Kind::Event(e)) => Self::Event(e.into()),
            None => Self::Unknown {},
        }
    }
}

/// `Snapshot`.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    site: Option<Site>,
    peers: Vec<Peer>,
    channels: Vec<Channel>,
    streams: Vec<Stream>,
    exposed: Vec<ExposedApp>,
    remote: Vec<RemoteApp>,
    next_seq: u64,
}

impl From<&pb::Snapshot> for Snapshot {
    fn from(s: &pb::Snapshot) -> Self {
        Self {
            site: s.site.as_ref().map(Site::from),
            peers: s.peers.iter().map(Peer::from).collect(),
            channels: s.channels.iter().map(Channel::from).collect(),
            streams: s.streams.iter().map(Stream::from).collect(),
            exposed: s.exposed.iter().map(ExposedApp::from).collect(),
            remote: s.remote.iter().map(RemoteApp::from).collect(),
            next_seq: s.next_seq,
        }
    }
}

/// `Event`: `seq`, `at`, `kind` (the name of the oneof field that is set, e.g.
/// `"listener_opened"`, or `"unknown"`) and that field under its own name.
#[derive(Debug, Serialize)]
pub struct Event {
    seq: u64,
    at: Option<String>,
    kind: &'static str,
    #[serde(flatten)]
    payload: Option<EventKind>,
}

/// The oneof of `Event`, serialised as `"<field name>": {…}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `peer_discovered`.
    PeerDiscovered(PeerEvent),
    /// `peer_connected`.
    PeerConnected(PeerEvent),
    /// `peer_disconnected`.
    PeerDisconnected(PeerEvent),
    /// `channel_up`.
    ChannelUp(ChannelEvent),
    /// `channel_down`.
    ChannelDown(ChannelEvent),
    /// `exposed_app_added`.
    ExposedAppAdded(ExposedAppSpec),
    /// `exposed_app_removed`.
    ExposedAppRemoved(ExposedAppSpec),
    /// `remote_app_added`.
    RemoteAppAdded(RemoteAppSpec),
    /// `remote_app_removed`.
    RemoteAppRemoved(RemoteAppSpec),
    /// `listener_opened`.
    ListenerOpened(RemoteAppSpec),
    /// `listener_closed`.
    ListenerClosed(RemoteAppSpec),
    /// `stream_opened`.
    StreamOpened(Stream),
    /// `stream_closed`.
    StreamClosed(Stream),
    /// `config_reloaded`.
    ConfigReloaded(ReloadReport),
}

impl EventKind {
    /// The oneof field name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PeerDiscovered(_) => "peer_discovered",
            Self::PeerConnected(_) => "peer_connected",
            Self::PeerDisconnected(_) => "peer_disconnected",
            Self::ChannelUp(_) => "channel_up",
            Self::ChannelDown(_) => "channel_down",
            Self::ExposedAppAdded(_) => "exposed_app_added",
            Self::ExposedAppRemoved(_) => "exposed_app_removed",
            Self::RemoteAppAdded(_) => "remote_app_added",
            Self::RemoteAppRemoved(_) => "remote_app_removed",
            Self::ListenerOpened(_) => "listener_opened",
            Self::ListenerClosed(_) => "listener_closed",
            Self::StreamOpened(_) => "stream_opened",
            Self::StreamClosed(_) => "stream_closed",
            Self::ConfigReloaded(_) => "config_reloaded",
        }
    }
}

impl From<&event::Kind> for EventKind {
    fn from(k: &event::Kind) -> Self {
        use event::Kind as K;
        match k {
            K::PeerDiscovered(e) => Self::PeerDiscovered(e.into()),
            K::PeerConnected(e) => Self::PeerConnected(e.into()),
            K::PeerDisconnected(e) => Self::PeerDisconnected(e.into()),
            K::ChannelUp(e) => Self::ChannelUp(e.into()),
            K::ChannelDown(e) => Self::ChannelDown(e.into()),
            K::ExposedAppAdded(s) => Self::ExposedAppAdded(s.into()),
            K::ExposedAppRemoved(s) => Self::ExposedAppRemoved(s.into()),
            K::RemoteAppAdded(s) => Self::RemoteAppAdded(s.into()),
            K::RemoteAppRemoved(s) => Self::RemoteAppRemoved(s.into()),
            K::ListenerOpened(s) => Self::ListenerOpened(s.into()),
            K::ListenerClosed(s) => Self::ListenerClosed(s.into()),
            K::StreamOpened(s) => Self::StreamOpened(s.into()),
            K::StreamClosed(s) => Self::StreamClosed(s.into()),
            K::ConfigReloaded(r) => Self::ConfigReloaded(r.into()),
        }
    }
}

impl From<&pb::Event> for Event {
    fn from(e: &pb::Event) -> Self {
        let payload = e.kind.as_ref().map(EventKind::from);
        Self {
            seq: e.seq,
            at: ts(e.at.as_ref()),
            kind: payload.as_ref().map_or("unknown", EventKind::name),
            payload,
        }
    }
}

/// `PeerEvent`.
#[derive(Debug, Serialize)]
pub struct PeerEvent {
    site: String,
    reason: String,
}

impl From<&pb::PeerEvent> for PeerEvent {
    fn from(e: &pb::PeerEvent) -> Self {
        Self {
            site: e.site.clone(),
            reason: e.reason.clone(),
        }
    }
}

/// `ChannelEvent`.
#[derive(Debug, Serialize)]
pub struct ChannelEvent {
    site: String,
    channel: u64,
    reason: String,
}

impl From<&pb::ChannelEvent> for ChannelEvent {
    fn from(e: &pb::ChannelEvent) -> Self {
        Self {
            site: e.site.clone(),
            channel: e.channel,
            reason: e.reason.clone(),
        }
    }
}

/// `stats`, one line per sample: `WatchStatsResponse` (counters sorted by name).
#[derive(Debug, Serialize)]
pub struct Stats {
    at: Option<String>,
    apps: Vec<AppStats>,
    peers: Vec<PeerStats>,
    channels: Vec<ChannelStats>,
    counters: BTreeMap<String, u64>,
}

impl From<&pb::WatchStatsResponse> for Stats {
    fn from(s: &pb::WatchStatsResponse) -> Self {
        Self {
            at: ts(s.at.as_ref()),
            apps: s.apps.iter().map(AppStats::from).collect(),
            peers: s.peers.iter().map(PeerStats::from).collect(),
            channels: s.channels.iter().map(ChannelStats::from).collect(),
            counters: s.counters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

/// `AppStats`.
#[derive(Debug, Serialize)]
pub struct AppStats {
    app: String,
    peer: String,
    direction: String,
    open_streams: u64,
    total_streams: u64,
    bytes_sent: u64,
    bytes_received: u64,
    send_rate: f64,
    receive_rate: f64,
    limited_streams: u64,
    not_allowed_streams: u64,
}

impl From<&pb::AppStats> for AppStats {
    fn from(a: &pb::AppStats) -> Self {
        Self {
            app: a.app.clone(),
            peer: a.peer.clone(),
            direction: units::stream_direction(a.direction),
            open_streams: a.open_streams,
            total_streams: a.total_streams,
            bytes_sent: a.bytes_sent,
            bytes_received: a.bytes_received,
            send_rate: a.send_rate,
            receive_rate: a.receive_rate,
            limited_streams: a.limited_streams,
            not_allowed_streams: a.not_allowed_streams,
        }
    }
}

/// `PeerStats`.
#[derive(Debug, Serialize)]
pub struct PeerStats {
    peer: String,
    bytes_sent: u64,
    bytes_received: u64,
    send_rate: f64,
    receive_rate: f64,
}

impl From<&pb::PeerStats> for PeerStats {
    fn from(p: &pb::PeerStats) -> Self {
        Self {
            peer: p.peer.clone(),
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            send_rate: p.send_rate,
            receive_rate: p.receive_rate,
        }
    }
}

/// `ChannelStats`.
#[derive(Debug, Serialize)]
pub struct ChannelStats {
    id: u64,
    peer: String,
    rtt: Option<f64>,
    cwnd: u64,
    lost_packets: u64,
    sent_packets: u64,
    bytes_sent: u64,
    bytes_received: u64,
    send_rate: f64,
    receive_rate: f64,
    open_streams: u32,
}

impl From<&pb::ChannelStats> for ChannelStats {
    fn from(c: &pb::ChannelStats) -> Self {
        Self {
            id: c.id,
            peer: c.peer.clone(),
            rtt: units::seconds(c.rtt.as_ref()),
            cwnd: c.cwnd,
            lost_packets: c.lost_packets,
            sent_packets: c.sent_packets,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            send_rate: c.send_rate,
            receive_rate: c.receive_rate,
            open_streams: c.open_streams,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use wovenet_proto::v1::{ChannelEvent, PeerEvent, event::Kind};

    use super::*;
    use crate::ctl::fixtures as fx;

    fn value(v: &impl Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    fn keys(v: &impl Serialize) -> Vec<String> {
        // Serialised text keeps declaration order; a Value would sort keys.
        let text = serde_json::to_string(v).unwrap();
        let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        let mut found: Vec<(usize, String)> = map
            .keys()
            .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k.clone()))
            .collect();
        found.sort();
        found.into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn status_is_the_site_with_proto_field_names_in_proto_order() {
        let mut site = fx::site();
        site.sockets[1].detect_error = "'http://ip.test/' answered HTTP 500".into();
        site.sockets[1].detect_error_at = Some(fx::at(fx::T0, 0));
        let out = GetSite {
            site: (&site).into(),
        };
        assert_eq!(
            value(&out),
            json!({"site": {
                "name": "alpha",
                "instance": "9f2c4e1a",
                "version": "0.1.0",
                "started_at": "2024-05-01T10:00:00Z",
                "uptime": 3725.0,
                "broker_url": "mqtt://127.0.0.1:1883",
                "broker_state": "reconnecting",
                "broker_reason": "connection refused",
                "sockets": [
                    {"listen": "0.0.0.0:40001", "public": "203.0.113.7:40001", "auto_detect": false,
                     "detect_error": "", "detect_error_at": null, "mode": "hole-punching",
                     "nat_mapping": "endpoint-independent"},
                    {"listen": "[::]:40002", "public": "", "auto_detect": true,
                     "detect_error": "'http://ip.test/' answered HTTP 500",
                     "detect_error_at": "2024-05-01T10:00:00Z", "mode": "port-forwarding",
                     "nat_mapping": ""}
                ],
                "identity": "a3stb5ycqzkxw2mhe7nvfgrl4pjduo6i",
                "trust_mode": "pinned"
            }})
        );
        assert_eq!(
            keys(&out.site),
            [
                "name",
                "instance",
                "version",
                "started_at",
                "uptime",
                "broker_url",
                "broker_state",
                "broker_reason",
                "sockets",
                "identity",
                "trust_mode"
            ]
        );
    }

    #[test]
    fn peers_have_lowercase_states_raw_bytes_and_null_for_absent_times() {
        let out = ListPeers {
            peers: fx::peers().iter().map(Into::into).collect(),
        };
        assert_eq!(
            value(&out),
            json!({"peers": [
                {"name": "beta", "instance": "0badc0de", "state": "connected",
                 "apps": ["echo", "vnc"], "last_seen": "2024-05-01T10:59:57Z",
                 "channels": 2, "streams": 1, "bytes_sent": 1536, "bytes_received": 5242880,
                 "conflicting_instances": [], "identity": "hfqku7jmljxqcy44vv6js2nuzo7hxo4u",
                 "trust": "pinned", "pinned_identity": "", "refused_messages": 0},
                {"name": "beta", "instance": "feedbeef", "state": "refused", "apps": [],
                 "last_seen": "2024-05-01T10:59:55Z", "channels": 0, "streams": 0,
                 "bytes_sent": 0, "bytes_received": 0, "conflicting_instances": [],
                 "identity": "x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i", "trust": "conflict",
                 "pinned_identity": "hfqku7jmljxqcy44vv6js2nuzo7hxo4u", "refused_messages": 3},
                {"name": "delta", "instance": "d317a000", "state": "refused", "apps": [],
                 "last_seen": "2024-05-01T10:59:00Z", "channels": 0, "streams": 0,
                 "bytes_sent": 0, "bytes_received": 0, "conflicting_instances": [],
                 "identity": "mz4kq7v2nx6wfb3jle5rht2ocu7ypsia", "trust": "not_allowed",
                 "pinned_identity": "", "refused_messages": 1},
                {"name": "gamma-site", "instance": "", "state": "gone", "apps": [],
                 "last_seen": null, "channels": 0, "streams": 0, "bytes_sent": 0,
                 "bytes_received": 0, "conflicting_instances": [],
                 "identity": "g5mna2qkx7wzr4tpfj6vlh3ed2cuyobs", "trust": "new",
                 "pinned_identity": "", "refused_messages": 0}
            ]})
        );
        assert_eq!(
            keys(&out.peers[1]),
            [
                "name",
                "instance",
                "state",
                "apps",
                "last_seen",
                "channels",
                "streams",
                "bytes_sent",
                "bytes_received",
                "conflicting_instances",
                "identity",
                "trust",
                "pinned_identity",
                "refused_messages"
            ]
        );
    }

    #[test]
    fn a_forgotten_peer_is_the_identity_that_was_pinned() {
        let out = PeerForgotten {
            identity: fx::BETA_ID.into(),
        };
        assert_eq!(
            value(&out),
            json!({"identity": "hfqku7jmljxqcy44vv6js2nuzo7hxo4u"})
        );
    }

    #[test]
    fn a_peer_in_a_name_conflict_lists_the_refused_instances() {
        let mut peers = fx::peers();
        peers[0].conflicting_instances = vec!["feedface".into()];
        let out = ListPeers {
            peers: peers.iter().map(Into::into).collect(),
        };
        assert_eq!(
            value(&out)["peers"][0]["conflicting_instances"],
            json!(["feedface"])
        );
    }

    #[test]
    fn channels_give_durations_in_seconds() {
        let out = ListChannels {
            channels: fx::channels().iter().map(Into::into).collect(),
        };
        assert_eq!(
            value(&out)["channels"][0],
            json!({"id": 3, "peer": "beta", "direction": "outbound", "route": "punched",
                   "local_addr": "10.0.0.1:40001", "remote_addr": "10.0.0.2:40001",
                   "state": "up", "rtt": 0.00035, "cwnd": 12000, "lost_packets": 2,
                   "sent_packets": 1200, "bytes_sent": 2048, "bytes_received": 4096,
                   "open_streams": 1, "age": 125.0, "reconnect_attempts": 0, "last_error": "",
                   "transport": "quic"})
        );
        let pending = &value(&out)["channels"][1];
        assert_eq!(pending["state"], "connecting");
        assert_eq!(pending["rtt"], Value::Null);
        assert_eq!(pending["age"], 0.35);
        assert_eq!(pending["last_error"], "timed out");
        assert_eq!(pending["route"], "direct");
        assert_eq!(pending["transport"], "tcp");
    }

    #[test]
    fn streams_carry_direction_client_and_bytes() {
        let out = ListStreams {
            streams: vec![(&fx::stream()).into()],
        };
        assert_eq!(
            value(&out),
            json!({"streams": [{"id": 17, "app": "echo", "peer": "beta", "direction": "outbound",
                "client_addr": "127.0.0.1:53124", "bytes_sent": 100, "bytes_received": 2560,
                "age": 12.9, "channel_id": 3, "kind": "tcp", "datagrams_sent": 0,
                "datagrams_received": 0}]})
        );
    }

    #[test]
    fn apps_nest_specs_and_report_listener_state_and_live() {
        let out = value(&ListApps::from(&fx::apps()));
        assert_eq!(
            out["exposed"][0],
            json!({"spec": {"name": "echo", "mode": "single", "app_socket": "tcp:127.0.0.1:7",
                "port_range": [], "address_range": [], "max_connections": null,
                "allowed_sites": [], "bandwidth_limit": null}, "live": false})
        );
        assert_eq!(out["exposed"][1]["spec"]["max_connections"], 50);
        assert_eq!(out["exposed"][1]["spec"]["bandwidth_limit"], "10MiB/s");
        assert_eq!(
            out["exposed"][1]["spec"]["allowed_sites"],
            json!(["beta", "gamma"])
        );
        assert_eq!(out["exposed"][1]["spec"]["mode"], "range");
        assert_eq!(
            out["exposed"][1]["spec"]["port_range"],
            json!(["5900", "5901-5990"])
        );
        assert_eq!(out["exposed"][1]["live"], true);
        assert_eq!(out["exposed"][1]["spec"]["proxy_protocol"], "v2");
        assert_eq!(
            out["remote"][0],
            json!({"spec": {"site_name": "beta", "app_name": "echo",
                "local_socket": "tcp:127.0.0.1:6000", "app_socket": "", "max_connections": null,
                "bandwidth_limit": null},
                "listener_state": "open", "listen_addr": "127.0.0.1:6000",
                "listener_error": "", "live": false})
        );
        assert_eq!(out["remote"][1]["spec"]["max_connections"], 4);
        assert_eq!(out["remote"][1]["spec"]["bandwidth_limit"], "100Mbit/s");
        assert_eq!(out["remote"][1]["listener_state"], "failed");
        assert_eq!(out["remote"][1]["listener_error"], "permission denied");
    }

    #[test]
    fn an_empty_mode_is_reported_as_single() {
        let mut app = fx::exposed_single();
        app.spec.as_mut().unwrap().mode.clear();
        assert_eq!(value(&ExposedApp::from(&app))["spec"]["mode"], "single");
    }

    #[test]
    fn changes_wrap_the_app_like_their_responses() {
        let added = ExposedAppChange {
            app: (&fx::exposed_single()).into(),
        };
        assert_eq!(value(&added)["app"]["spec"]["name"], "echo");
        let remote = RemoteAppAdded {
            app: (&fx::remote_open()).into(),
        };
        assert_eq!(value(&remote)["app"]["listener_state"], "open");
        let removed = RemoteAppsRemoved {
            removed: vec![(&fx::remote_open()).into()],
        };
        assert_eq!(value(&removed)["removed"][0]["spec"]["app_name"], "echo");
    }

    #[test]
    fn the_event_feed_starts_with_a_snapshot_object() {
        let out = value(&WatchEvents::from(&fx::snapshot()));
        let snap = &out["snapshot"];
        assert_eq!(snap["site"]["name"], "alpha");
        assert_eq!(snap["next_seq"], 42);
        assert_eq!(snap["peers"][0]["state"], "connected");
        assert_eq!(snap["channels"].as_array().unwrap().len(), 2);
        assert_eq!(snap["streams"][0]["id"], 17);
        assert_eq!(snap["exposed"][0]["spec"]["name"], "echo");
        assert_eq!(snap["remote"][0]["listener_state"], "open");
    }

    #[test]
    fn events_name_their_kind_and_nest_the_payload_under_it() {
        let msg = pb::WatchEventsResponse {
            kind: Some(watch_events_response::Kind::Event(fx::event(
                43,
                Kind::ListenerOpened(fx::remote_spec()),
            ))),
        };
        assert_eq!(
            value(&WatchEvents::from(&msg)),
            json!({"event": {"seq": 43, "at": "2024-05-01T10:00:00.123Z",
                "kind": "listener_opened",
                "listener_opened": {"site_name": "beta", "app_name": "echo",
                    "local_socket": "tcp:127.0.0.1:6000", "app_socket": "",
                    "max_connections": null, "bandwidth_limit": null}}})
        );
        let down = Event::from(&fx::event(
            44,
            Kind::ChannelDown(ChannelEvent {
                site: "beta".into(),
                channel: 3,
                reason: "idle timeout".into(),
            }),
        ));
        assert_eq!(
            value(&down)["channel_down"],
            json!({"site": "beta", "channel": 3, "reason": "idle timeout"})
        );
        assert_eq!(keys(&down), ["seq", "at", "kind", "channel_down"]);
        let peer = Event::from(&fx::event(
            45,
            Kind::PeerDisconnected(PeerEvent {
                site: "beta".into(),
                reason: "gone".into(),
            }),
        ));
        assert_eq!(value(&peer)["kind"], "peer_disconnected");
        let stream = Event::from(&fx::event(46, Kind::StreamClosed(fx::stream())));
        assert_eq!(value(&stream)["stream_closed"]["bytes_received"], 2560);
    }

    #[test]
    fn every_event_kind_serialises_under_its_proto_field_name() {
        let spec = fx::exposed_single().spec.unwrap();
        let peer = PeerEvent::default();
        let chan = ChannelEvent::default();
        let all = [
            Kind::PeerDiscovered(peer.clone()),
            Kind::PeerConnected(peer.clone()),
            Kind::PeerDisconnected(peer),
            Kind::ChannelUp(chan.clone()),
            Kind::ChannelDown(chan),
            Kind::ExposedAppAdded(spec.clone()),
            Kind::ExposedAppRemoved(spec),
            Kind::RemoteAppAdded(fx::remote_spec()),
            Kind::RemoteAppRemoved(fx::remote_spec()),
            Kind::ListenerOpened(fx::remote_spec()),
            Kind::ListenerClosed(fx::remote_spec()),
            Kind::StreamOpened(fx::stream()),
            Kind::StreamClosed(fx::stream()),
            Kind::ConfigReloaded(pb::ReloadReport::default()),
        ];
        for k in all {
            let v = value(&Event::from(&fx::event(1, k)));
            let kind = v["kind"].as_str().unwrap().to_owned();
            assert!(v[&kind].is_object(), "{kind} payload missing: {v}");
            assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
        }
        let empty = value(&Event::from(&pb::Event {
            seq: 1,
            at: None,
            kind: None,
        }));
        assert_eq!(empty, json!({"seq": 1, "at": null, "kind": "unknown"}));
    }

    #[test]
    fn a_reload_report_keeps_proto_names_and_a_lowercase_outcome() {
        let r = pb::ReloadReport {
            outcome: pb::ReloadOutcome::Invalid.into(),
            config_file: "/a.yaml".into(),
            errors: vec![pb::ConfigFieldError {
                path: "siteName".into(),
                reason: "is required".into(),
            }],
            ..Default::default()
        };
        let v = value(&Reload {
            report: (&r).into(),
        });
        assert_eq!(v["report"]["outcome"], "invalid");
        assert_eq!(
            v["report"]["errors"],
            json!([{"path": "siteName", "reason": "is required"}])
        );
        assert_eq!(v["report"]["exposed_added"], json!([]));
        let ev = value(&Event::from(&fx::event(9, Kind::ConfigReloaded(r))));
        assert_eq!(ev["kind"], "config_reloaded");
        assert_eq!(ev["config_reloaded"]["config_file"], "/a.yaml");
    }

    #[test]
    fn stats_sort_counters_and_keep_rates_as_numbers() {
        let out = Stats::from(&fx::stats());
        let v = value(&out);
        assert_eq!(v["at"], "2024-05-01T10:00:00Z");
        assert_eq!(
            v["apps"][0],
            json!({"app": "echo", "peer": "beta", "direction": "inbound", "open_streams": 1,
                "total_streams": 9, "bytes_sent": 2048, "bytes_received": 1024,
                "send_rate": 1536.0, "receive_rate": 0.0, "limited_streams": 3,
                "not_allowed_streams": 2})
        );
        assert_eq!(
            v["peers"][0],
            json!({"peer": "beta", "bytes_sent": 10485760, "bytes_received": 20971520,
                "send_rate": 1048576.0, "receive_rate": 512.0})
        );
        assert_eq!(v["channels"][0]["rtt"], 0.012);
        let text = serde_json::to_string(&out).unwrap();
        assert!(
            text.contains(
                r#""counters":{"auth_failures":1,"bad_preambles":3,"messages_undecryptable":0}"#
            ),
            "{text}"
        );
    }
}
