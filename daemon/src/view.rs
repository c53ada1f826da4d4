//! Read-only snapshots of a running site and the event bus, as the control
//! plane shows them.
//!
//! Plain data built on request by the site actor (and, for streams, by the
//! stream registry in [`crate::app::streams`]); no handles. The gRPC layer
//! converts these to protobuf in `control::convert`, so nothing here names a
//! generated type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::config::{
    AppName, AppSocket, ExposedApp, FieldError, LogLevel, RemoteApp, SiteName, SocketMode,
    Transport, TrustMode,
};
use crate::identity::Fingerprint;
use crate::message::announce::InstanceId;
use crate::message::mqtt::BrokerState;
use crate::types::{ChannelId, ChannelRoute, ChannelStats, Direction, NatMapping};

/// The site itself.
#[derive(Debug, Clone)]
pub struct SiteInfo {
    /// `siteName`.
    pub name: SiteName,
    /// This process.
    pub instance: InstanceId,
    /// wovenetd version.
    pub version: String,
    /// When the site started.
    pub started_at: SystemTime,
    /// Broker address (`mqtt://…`).
    pub broker_url: String,
    /// Broker connection state.
    pub broker: BrokerState,
    /// Tunnel sockets, in config order.
    pub sockets: Vec<SocketInfo>,
    /// This site's identity fingerprint.
    pub identity: Fingerprint,
    /// `trust.mode`.
    pub trust_mode: TrustMode,
}

/// One `tunnel.localSockets` entry at run time.
#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// Bound address.
    pub listen: SocketAddr,
    /// Announced address (`None` while detection has not succeeded).
    pub public: Option<SocketAddr>,
    /// Whether the public address is detected at run time (`autoHttpDetect`,
    /// or by STUN: `autoStunDetect` and `hole-punching` mode).
    pub auto_detect: bool,
    /// The latest detection, if it failed (`None` once one succeeds).
    pub detect_error: Option<DetectFailure>,
    /// `tunnel.localSockets[].mode`.
    pub mode: SocketMode,
    /// How its NAT maps it, as STUN saw (`None` without STUN detection).
    pub nat: Option<NatMapping>,
}

/// A failed public address detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectFailure {
    /// Why (names the detector URL).
    pub error: String,
    /// When.
    pub at: SystemTime,
}

/// Lifecycle of a peer as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Announced, nothing dialled yet (or it has no sockets and has not dialled us).
    Discovered,
    /// Dialling, no channel up yet.
    Connecting,
    /// At least one dataChannel is up.
    Connected,
    /// Departed or silent; kept until forgotten.
    Gone,
    /// An identity refused for this name (see [`TrustState`]); nothing of
    /// it is used.
    Refused,
}

/// Where a peer's identity stands (`trust.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustState {
    /// It matches the identity pinned earlier or listed in `trust.sites`.
    Pinned,
    /// Pinned on first sight during this run.
    New,
    /// Another identity is pinned for this name: refused.
    Conflict,
    /// `trust.mode: strict` and the name is not listed: refused.
    NotAllowed,
    /// `trust.mode: open`: not checked.
    Unpinned,
}

/// A remote site.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its name.
    pub site: SiteName,
    /// The instance talked to.
    pub instance: InstanceId,
    /// State.
    pub state: PeerState,
    /// Apps it exposes (from its latest announcement).
    pub apps: Vec<AppName>,
    /// Last message or channel event from it.
    pub last_seen: SystemTime,
    /// Live dataChannels.
    pub channels: usize,
    /// Open streams over those channels.
    pub streams: usize,
    /// Sum of the channels' UDP bytes sent / received.
    pub bytes_sent: u64,
    /// See `bytes_sent`.
    pub bytes_received: u64,
    /// Other running instances that announce this site name and were
    /// refused because `instance` holds it (sorted; empty normally).
    pub conflicts: Vec<InstanceId>,
    /// The identity it presented (`None` before any accepted message).
    pub identity: Option<Fingerprint>,
    /// Where that identity stands.
    pub trust: TrustState,
    /// For a refused identity: the one the name is pinned to.
    pub pinned_identity: Option<Fingerprint>,
    /// For a refused identity: how many of its messages were refused.
    pub refused_messages: u64,
}

/// State of a dataChannel (or of the dial loop that should produce one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Authenticated and carrying streams.
    Up,
    /// Being dialled (or waiting for the next attempt).
    Connecting,
}

/// A dataChannel, or an outbound dial that has none right now.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    /// Local id (`None` for a dial without a live channel).
    pub id: Option<ChannelId>,
    /// The peer.
    pub peer: SiteName,
    /// Who dialled.
    pub direction: Direction,
    /// Local address (best effort; unspecified for dial sockets).
    pub local: Option<SocketAddr>,
    /// Remote address.
    pub remote: SocketAddr,
    /// State.
    pub state: ChannelState,
    /// Path statistics (all zero while only dialling).
    pub path: ChannelStats,
    /// Streams open on it.
    pub open_streams: usize,
    /// Time since it came up (or since the dial started).
    pub age: Duration,
    /// Consecutive failed dials (outbound only).
    pub reconnect_attempts: u32,
    /// Last dial or close error.
    pub last_error: Option<String>,
    /// Direct, or punched through NATs.
    pub route: ChannelRoute,
    /// QUIC over UDP, or framed over TCP.
    pub transport: Transport,
}

/// Which way a stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamDirection {
    /// A local client reaching a remote app.
    Outbound,
    /// A remote site reaching one of our exposed apps.
    Inbound,
}

/// One forwarded app connection.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Local id.
    pub id: u64,
    /// The app.
    pub app: AppName,
    /// The other site.
    pub peer: SiteName,
    /// Direction.
    pub direction: StreamDirection,
    /// Client address (local client for outbound, the far site's side for inbound).
    pub client: String,
    /// The dataChannel carrying it.
    pub channel: ChannelId,
    /// Bytes sent into the tunnel.
    pub bytes_sent: u64,
    /// Bytes received from the tunnel.
    pub bytes_received: u64,
    /// Time since it opened.
    pub age: Duration,
    /// A byte stream or a UDP flow.
    pub protocol: crate::config::Protocol,
    /// UDP flows: datagrams sent into the tunnel.
    pub datagrams_sent: u64,
    /// UDP flows: datagrams received from the tunnel.
    pub datagrams_received: u64,
}

/// State of a remote app's local listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerState {
    /// Open on this socket.
    Open(AppSocket),
    /// Closed: the site is not connected or does not offer the app.
    Waiting,
    /// Failed to bind; retried periodically.
    Failed(String),
}

/// A remote app and its listener.
#[derive(Debug, Clone)]
pub struct RemoteAppInfo {
    /// The definition.
    pub app: RemoteApp,
    /// Listener state.
    pub listener: ListenerState,
    /// Whether it was added at run time (persisted in the state file).
    pub live: bool,
}

/// An exposed app.
#[derive(Debug, Clone)]
pub struct ExposedAppInfo {
    /// The definition.
    pub app: ExposedApp,
    /// Whether it was added at run time (persisted in the state file).
    pub live: bool,
}

/// All apps.
#[derive(Debug, Clone, Default)]
pub struct AppsInfo {
    /// Apps this site exposes.
    pub exposed: Vec<ExposedAppInfo>,
    /// Apps of other sites served here.
    pub remote: Vec<RemoteAppInfo>,
}

/// A fact worth telling a watching operator, in the order it happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// First dataChannel to a peer came up.
    PeerConnected {
        /// The peer.
        site: SiteName,
    },
    /// A peer was discovered through the message channel.
    PeerDiscovered {
        /// The peer.
        site: SiteName,
    },
    /// Last dataChannel to a peer went down.
    PeerDisconnected {
        /// The peer.
        site: SiteName,
        /// Why the last channel closed.
        reason: String,
    },
    /// A dataChannel came up.
    ChannelUp {
        /// The peer.
        site: SiteName,
        /// The channel.
        channel: ChannelId,
    },
    /// A dataChannel went down.
    ChannelDown {
        /// The peer.
        site: SiteName,
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: String,
    },
    /// An exposed app was added at run time.
    ExposedAppAdded {
        /// The app.
        app: AppName,
    },
    /// An exposed app was removed at run time.
    ExposedAppRemoved {
        /// The app.
        app: AppName,
    },
    /// A remote app was added at run time.
    RemoteAppAdded {
        /// The app.
        app: RemoteApp,
    },
    /// A remote app was removed at run time.
    RemoteAppRemoved {
        /// The app.
        app: RemoteApp,
    },
    /// A remote app's listener opened.
    ListenerOpened {
        /// The app.
        app: RemoteApp,
    },
    /// A remote app's listener closed.
    ListenerClosed {
        /// The app.
        app: RemoteApp,
    },
    /// A forwarded connection started.
    StreamOpened {
        /// The stream.
        stream: StreamInfo,
    },
    /// A forwarded connection ended.
    StreamClosed {
        /// The stream (final byte counts).
        stream: StreamInfo,
    },
    /// The config file was reloaded (applied, partly applied, or refused).
    ConfigReloaded {
        /// What the reload did.
        report: Box<ReloadReport>,
    },
}

/// How a reload of the config file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Valid, and every difference applied (or there was none).
    Applied,
    /// Valid; the live-applicable differences applied, the restart-bound ones not.
    NeedsRestart,
    /// Invalid: nothing changed.
    Invalid,
}

/// What one reload of the config file did, for the reply, the event feed
/// and the log. Apps are as they are served (the file's apps with the live
/// changes of the state file applied).
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// The file read.
    pub config_file: PathBuf,
    /// Exposed apps added.
    pub exposed_added: Vec<ExposedApp>,
    /// Exposed apps removed.
    pub exposed_removed: Vec<ExposedApp>,
    /// Exposed apps changed, as they are now.
    pub exposed_changed: Vec<ExposedApp>,
    /// Remote apps added.
    pub remote_added: Vec<RemoteApp>,
    /// Remote apps removed.
    pub remote_removed: Vec<RemoteApp>,
    /// Remote apps changed, as they are now.
    pub remote_changed: Vec<RemoteApp>,
    /// The new `logger.level`, when it changed.
    pub log_level: Option<LogLevel>,
    /// Field paths whose change needs a restart (not applied).
    pub needs_restart: Vec<String>,
    /// Every problem of an invalid file (then nothing else is set).
    pub errors: Vec<FieldError>,
    /// Accepted but worth telling (unknown keys, skipped state entries, a level
    /// `WOVENET_LOG` overrides).
    pub warnings: Vec<String>,
}

impl ReloadReport {
    /// How it ended: invalid when there are errors, else whether anything
    /// was left for a restart.
    pub fn outcome(&self) -> ReloadOutcome {
        if !self.errors.is_empty() {
            ReloadOutcome::Invalid
        } else if !self.needs_restart.is_empty() {
            ReloadOutcome::NeedsRestart
        } else {
            ReloadOutcome::Applied
        }
    }

    /// How many live changes were applied.
    pub fn applied(&self) -> usize {
        self.exposed_added.len()
            + self.exposed_removed.len()
            + self.exposed_changed.len()
            + self.remote_added.len()
            + self.remote_removed.len()
            + self.remote_changed.len()
            + usize::from(self.log_level.is_some())
    }
}

/// An event with its sequence number (gap-free per site run).
#[derive(Debug, Clone)]
pub struct Sequenced {
    /// Increases by one per event.
    pub seq: u64,
    /// When it happened.
    pub at: SystemTime,
    /// The event.
    pub event: Event,
}

/// Most streams a stats snapshot carries; beyond that a client lists them.
pub const STATS_STREAMS_MAX: usize = 10_000;

/// Counters and byte totals for the stats stream (rates are computed by the
/// stats stream from successive snapshots).
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    /// Per app: (app, direction, open streams, total streams, bytes sent, bytes received).
    pub apps: Vec<AppStats>,
    /// Per peer byte totals.
    pub peers: Vec<PeerInfo>,
    /// Per channel.
    pub channels: Vec<ChannelInfo>,
    /// Site-wide drop/refuse counters: (name, value).
    pub counters: Vec<(&'static str, u64)>,
    /// Open streams (oldest first, capped at [`STATS_STREAMS_MAX`]).
    pub streams: Vec<StreamInfo>,
    /// Bandwidth-limited apps: their limits and the time their traffic waited.
    pub throttles: Vec<ThrottleStats>,
}

/// One app's `bandwidthLimit` and what it cost its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleStats {
    /// The app (for a remote app, its name on `peer`).
    pub app: AppName,
    /// Remote apps: the exposing site; `None` for this site's exposed apps.
    pub peer: Option<SiteName>,
    /// Inbound for an exposed app, outbound for a remote app.
    pub direction: StreamDirection,
    /// The limit now, bytes per second each way; `None` once it was
    /// removed (the waits since start still count).
    pub limit: Option<u64>,
    /// Time streams waited to send bytes into the tunnel, summed, since start.
    pub throttled_sent: Duration,
    /// Time streams waited to deliver received bytes, summed, since start.
    pub throttled_received: Duration,
}

/// Traffic of one app in one direction.
#[derive(Debug, Clone)]
pub struct AppStats {
    /// The app.
    pub app: AppName,
    /// The other site.
    pub peer: SiteName,
    /// Direction.
    pub direction: StreamDirection,
    /// Streams open now.
    pub open_streams: u64,
    /// Streams since start.
    pub total_streams: u64,
    /// Bytes sent into the tunnel, since start.
    pub bytes_sent: u64,
    /// Bytes received from the tunnel, since start.
    pub bytes_received: u64,
    /// Streams refused since start because a limit was reached (inbound: the
    /// peer's or the app's limit here; outbound: the listener's or the far
    /// site's).
    pub limited_streams: u64,
    /// Inbound streams refused since start with the `not allowed` status
    /// because the app's `allowedSites` does not list the peer (0 outbound).
    pub not_allowed_streams: u64,
    /// UDP apps: datagrams sent into the tunnel, since start.
    pub datagrams_sent: u64,
    /// UDP apps: datagrams received from the tunnel, since start.
    pub datagrams_received: u64,
}

/// Events buffered per watcher before a slow watcher starts losing them
/// (it then gets `Lagged` and the control plane drops it with a status).
const BUS_CAPACITY: usize = 4096;

/// Fan-out of [`Event`]s to watchers. Any task may emit. Numbering and
/// sending happen under one short lock, so watchers see gap-free, increasing
/// sequence numbers and a subscriber's `next` is exactly the first event it
/// receives. Emitting never waits on a watcher: with none, the event is dropped.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Sequenced>,
    next: std::sync::Mutex<u64>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BUS_CAPACITY).0,
            next: std::sync::Mutex::new(1),
        }
    }
}

impl EventBus {
    /// Publishes `event`.
    pub fn emit(&self, event: Event) {
        // A poisoned counter is still a valid counter.
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.tx.send(Sequenced {
            seq: *next,
            at: SystemTime::now(),
            event,
        });
        *next += 1;
    }

    /// A new receiver and the sequence number of the next event it will see.
    pub fn subscribe(&self) -> (u64, broadcast::Receiver<Sequenced>) {
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        (*next, self.tx.subscribe())
    }
}
