//! Validated configuration of one site.
//!
//! The YAML is read into the serde mirror in [`raw`], key case normalised by
//! [`load`], and turned into these types by [`validate`]. Nothing outside this
//! module sees unvalidated input: every type here upholds its invariants
//! (lengths, port rules, address families), so the engine never re-checks them.
//! This module must not touch the network or the filesystem beyond reading the
//! config file.

pub mod bandwidth;
pub mod load;
pub mod raw;
pub mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use bandwidth::BandwidthLimit;
pub use load::{load_file, load_str};

/// One configuration problem: the dotted path of the field and why it is wrong.
///
/// Displays as `tunnel.localSockets[1].listenPort: must equal publicPort in dedicated-address mode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FieldError {
    /// Dotted path with camelCase keys and `[i]` indexes, e.g. `localExposedApps[0].appSocket`.
    pub path: String,
    /// Human-readable reason; offending values are quoted with single quotes.
    pub reason: String,
}

impl FieldError {
    /// A problem with the field at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file '{path}': {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed.
    #[error("{0}")]
    Syntax(String),
    /// One or more fields are invalid; every one is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

/// Most `tunnel.localSockets` a site may have; other sites dial no more of
/// one peer's sockets than this.
pub const MAX_LOCAL_SOCKETS: usize = 16;

/// A fully validated site configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This site's unique name.
    pub site_name: SiteName,
    /// The shared secret of the network.
    pub crypto: CryptoConfig,
    /// Logging.
    pub logger: LoggerConfig,
    /// Discovery over MQTT.
    pub message_channel: MqttConfig,
    /// QUIC listeners and tunnel tuning.
    pub tunnel: TunnelConfig,
    /// Apps this site lets other sites reach.
    pub exposed_apps: Vec<ExposedApp>,
    /// Apps of other sites served on local sockets here.
    pub remote_apps: Vec<RemoteApp>,
    /// Control plane (gRPC on a unix socket).
    pub control: ControlConfig,
    /// Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// Which identities may use which site names.
    pub trust: TrustConfig,
    /// Things accepted but worth telling the user (ignored legacy sections, unknown keys).
    pub warnings: Vec<String>,
}

/// Whether `c` changes how the text around it looks without showing itself:
/// Unicode format characters (category Cf: zero-width spaces and joiners, the
/// bidi embeddings, overrides and isolates U+202A..U+202E and U+2066..U+2069,
/// the marks U+200E, U+200F and U+061C, U+FEFF, soft hyphen, tags) and the
/// line and paragraph separators U+2028 and U+2029. A name containing one
/// could pass for another name or reorder a table row, in the console, in
/// `wovenetctl` and in logs, on every site that shows it.
pub fn invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// A site name: 1..=255 bytes, no control or [`invisible`] characters, no `/`,
/// `+` or `#` (MQTT topic syntax).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteName(String);

/// An app name: 1..=255 bytes, no control or [`invisible`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

macro_rules! name_type {
    ($ty:ident, $what:literal, $extra:expr) => {
        impl $ty {
            /// Validates and wraps a name.
            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                let s: String = s.into();
                if s.is_empty() {
                    return Err(concat!($what, " must not be empty").to_string());
                }
                if s.len() > 255 {
                    return Err(format!(
                        concat!($what, " must be at most 255 bytes, got {}"),
                        s.len()
                    ));
                }
                if s.chars().any(char::is_control) {
                    return Err(concat!($what, " must not contain control characters").to_string());
                }
                if let Some(c) = s.chars().find(|&c| invisible(c)) {
                    return Err(format!(
                        concat!(
                            $what,
                            " must not contain invisible or text-direction characters, found U+{:04X}"
                        ),
                        u32::from(c)
                    ));
                }
                let extra: fn(&str) -> Result<(), String> = $extra;
                extra(&s)?;
                Ok(Self(s))
            }
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::new(s)
            }
        }
        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::new(s)
            }
        }
    };
}
name_type!(SiteName, "site name", |s| {
    if s.contains(['/', '+', '#']) {
        Err(format!("site name '{s}' must not contain '/', '+' or '#'"))
    } else {
        Ok(())
    }
});
name_type!(AppName, "app name", |_| Ok(()));

/// The shared passphrase (8..=32 bytes). Never printed: `Debug` shows `MASKED`.
#[derive(Clone)]
pub struct CryptoKey(Zeroizing<String>);

impl CryptoKey {
    /// Validates the length rule of the original (8..=32 bytes).
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s: String = s.into();
        let n = s.len();
        if !(8..=32).contains(&n) {
            // The key itself must never appear in an error.
            return Err(format!("must be 8 to 32 bytes long, got {n} bytes"));
        }
        Ok(Self(Zeroizing::new(s)))
    }
    /// The secret bytes; only the KDF should call this.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for CryptoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// A secret string (e.g. MQTT password); `Debug` shows `MASKED`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Zeroizing<String>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// `crypto` section.
#[derive(Debug, Clone)]
pub struct CryptoConfig {
    /// The shared passphrase.
    pub key: CryptoKey,
}

/// `logger` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerConfig {
    /// Minimum level.
    pub level: LogLevel,
    /// Log file; `None` logs to stdout.
    pub file: Option<PathBuf>,
    /// Output format.
    pub format: LogFormat,
}

/// Log level (the original accepted DEBUG/INFO/WARN/ERROR in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// trace
    Trace,
    /// debug
    Debug,
    /// info (default)
    Info,
    /// warn / warning
    Warn,
    /// error
    Error,
}

impl LogLevel {
    /// The config spelling (`trace`, `debug`, `info`, `warn`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text (default).
    Text,
}

/// `messageChannel` section (only MQTT exists).
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Broker to connect to. Defaults to the embedded broker when one is configured.
    pub broker: BrokerUrl,
    /// Broadcast topic; `None` means derive it from the key (see `crypto`).
    pub topic: Option<String>,
    /// MQTT username.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<Secret>,
    /// Run an MQTT broker inside this daemon.
    pub embedded_broker: Option<EmbeddedBroker>,
    /// Extra trusted CA certificates (PEM) for `mqtts` brokers, on top of the
    /// public web PKI roots (e.g. a private or self-signed broker).
    pub ca_file: Option<PathBuf>,
}

impl MqttConfig {
    /// Whether the message channel stays on this host: the broker is dialled
    /// at a loopback address (or `localhost`) and, if this site runs the
    /// embedded broker, that listens on loopback only. Then every site of the
    /// network runs on this host too (a broker reached through a local port
    /// forward such as `ssh -L` looks host-local as well).
    pub fn is_host_local(&self) -> bool {
        let host = self.broker.host.as_str();
        let broker_local = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let embedded_local = self
            .embedded_broker
            .as_ref()
            .is_none_or(|e| e.listen.ip().is_loopback());
        broker_local && embedded_local
    }
}

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedBroker {
    /// `IP:PORT`.
    pub listen: SocketAddr,
}

/// A broker address: `mqtt://host:port` (plain) or `mqtts://host:port` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Whether TLS is used (`mqtts://`, also `ssl://` and `tls://`).
    pub tls: bool,
    /// Host name or IP (brackets stripped for IPv6).
    pub host: String,
    /// Port (default 1883, or 8883 with TLS).
    pub port: u16,
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `tunnel` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// QUIC listeners other sites dial.
    pub local_sockets: Vec<LocalSocket>,
    /// Congestion controller for every dataChannel (`tunnel.congestionControl`).
    pub congestion_control: CongestionControl,
    /// Streams one peer may have open to this site at once, over all its
    /// dataChannels (`tunnel.maxStreamsPerPeer`, 1..=[`limit::MAX_LIMIT`],
    /// default [`limit::DEFAULT_STREAMS_PER_PEER`]).
    ///
    /// [`limit::MAX_LIMIT`]: crate::limit::MAX_LIMIT
    /// [`limit::DEFAULT_STREAMS_PER_PEER`]: crate::limit::DEFAULT_STREAMS_PER_PEER
    pub max_streams_per_peer: u32,
    /// Threads the daemon's async runtime runs on (`tunnel.workerThreads`,
    /// 1..=[`MAX_WORKER_THREADS`], default [`DEFAULT_WORKER_THREADS`]).
    pub worker_threads: u16,
    /// `tunnel.relay`: where this site's hole-punching sockets take a relayed
    /// address when punching cannot work. Kept (with a warning) when no
    /// socket is in `hole-punching` mode, though nothing then uses it.
    pub relay: Option<RelayConfig>,
}

/// Default of `tunnel.workerThreads`: one. Every byte of a dataChannel goes
/// through its one QUIC connection task, so extra threads mostly add
/// cross-thread wake-ups between that task, the endpoint's and the app
/// pipes'. Measured on 2 cores (loopback, one stream, iperf3 through the
/// tunnel): 3.8 Gbit/s and 3.2 CPU-seconds per GB with 2 threads, 5.2 Gbit/s
/// and 2.4 with one. More help a site that carries several busy
/// dataChannels at once on a many-core machine.
pub const DEFAULT_WORKER_THREADS: u16 = 1;
/// Most `tunnel.workerThreads`.
pub const MAX_WORKER_THREADS: u16 = 256;

/// `tunnel.relay`: a relay both sites of a channel can reach, used when the
/// NATs between them cannot be punched. It forwards the QUIC datagrams, whose
/// TLS session stays end to end between the two sites, so it can neither read
/// nor alter the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// `tunnel.relay.turn`.
    pub turn: TurnServer,
}

/// Port a TURN server listens on when `tunnel.relay.turn.url` names none
/// (RFC 7065, RFC 8656).
pub const DEFAULT_TURN_PORT: u16 = 3478;

/// `tunnel.relay.turn`: a TURN server (RFC 8656, e.g. coturn) reached over
/// UDP, with long-term credentials (RFC 8489 §9.2).
///
/// `host` follows the rules of [`StunServer::host`]: an IP literal in its
/// canonical text (no brackets; never the unspecified, a multicast or the
/// broadcast address) or a syntactically valid DNS name in lower case, never
/// resolved or contacted by config loading. `Debug` masks the password and
/// `Display` never shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// Host of `url`: IP literal (canonical, no brackets) or lower-case DNS name.
    pub host: String,
    /// Port of `url`, 1..=65535 (default [`DEFAULT_TURN_PORT`]).
    pub port: u16,
    /// `username`: 1..=255 bytes, no control characters.
    pub username: String,
    /// `password`: 1..=255 bytes; `Debug` shows `MASKED`.
    pub password: Secret,
}

impl TurnServer {
    /// The host as an IP address when it is an IP literal; `None` for a DNS
    /// name, which the daemon resolves.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for TurnServer {
    /// `turn:host:port` (`turn:[2001:db8::1]:3478` for IPv6); never the
    /// credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "turn:[{}]:{}", self.host, self.port)
        } else {
            write!(f, "turn:{}:{}", self.host, self.port)
        }
    }
}

/// QUIC congestion controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionControl {
    /// quinn's CUBIC: loss-based, collapses on lossy long paths.
    Cubic,
    /// wovenet's BBR-style model-based controller (default): random loss
    /// does not slow it; see `tunnel::congestion`.
    #[default]
    Bbr,
}

/// How a local socket is reachable from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMode {
    /// The host has the public address itself (or a floating IP bound to it).
    DedicatedAddress,
    /// A NAT gateway forwards `publicAddress:publicPort` to `listenPort` here.
    PortForwarding,
    /// Behind a NAT with no port forward (`hole-punching`): the public address
    /// and port are learned by STUN from this very socket, and other sites
    /// reach it by punching through the NAT.
    HolePunching,
}

impl SocketMode {
    /// The config spelling: `dedicated-address`, `port-forwarding` or `hole-punching`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DedicatedAddress => "dedicated-address",
            Self::PortForwarding => "port-forwarding",
            Self::HolePunching => "hole-punching",
        }
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the public address comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicAddress {
    /// A fixed address.
    Fixed(IpAddr),
    /// Fetched as text/plain from `url` at start and re-checked periodically.
    AutoHttpDetect {
        /// `httpDetector.url`.
        url: String,
    },
    /// Learned by STUN from the socket itself (`autoStunDetect`, any case),
    /// asking the servers in [`LocalSocket::stun_servers`].
    AutoStunDetect,
}

impl PublicAddress {
    /// The config spelling: the IP, `autoHttpDetect` or `autoStunDetect`.
    pub fn config_value(&self) -> String {
        match self {
            Self::Fixed(ip) => ip.to_string(),
            Self::AutoHttpDetect { .. } => "autoHttpDetect".to_owned(),
            Self::AutoStunDetect => "autoStunDetect".to_owned(),
        }
    }
}

/// Port a STUN server listens on when `stunDetector.servers[]` names none (RFC 8489).
pub const DEFAULT_STUN_PORT: u16 = 3478;

/// Most `stunDetector.servers` one socket may list.
pub const MAX_STUN_SERVERS: usize = 8;

/// One `stunDetector.servers[]` entry: `host:port` or `host` (port
/// [`DEFAULT_STUN_PORT`]).
///
/// `host` is an IP literal in its canonical text (no brackets; never the
/// unspecified, a multicast or the broadcast address) or a syntactically valid
/// DNS name in lower case. Config loading never resolves or contacts it: only
/// the daemon does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StunServer {
    /// IP literal (canonical, without brackets) or lower-case DNS name.
    pub host: String,
    /// UDP port, 1..=65535.
    pub port: u16,
}

impl StunServer {
    /// The host as an IP address when it is an IP literal; `None` for a DNS
    /// name, which the daemon resolves.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for StunServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One `tunnel.localSockets[]` entry after the original's defaulting rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSocket {
    /// Mode.
    pub mode: SocketMode,
    /// Address announced to other sites.
    pub public_address: PublicAddress,
    /// Port announced to other sites. 0 means learned at run time: in
    /// `hole-punching` mode always (the port the NAT maps, found by STUN); in
    /// a programmatic config (the demo, tests), the port actually bound.
    pub public_port: u16,
    /// Address the QUIC endpoint binds (unspecified address when not given).
    /// Port 0 (only in `hole-punching` mode, or programmatic configs) binds any
    /// free port.
    pub listen: SocketAddr,
    /// `stunDetector.servers`, in config order, without duplicates, at most
    /// [`MAX_STUN_SERVERS`]. Non-empty exactly when `public_address` is
    /// [`PublicAddress::AutoStunDetect`] (always so in `hole-punching` mode);
    /// empty otherwise (an ignored `stunDetector` is warned about).
    pub stun_servers: Vec<StunServer>,
    /// `transportProtocol`: what the socket listens on (default QUIC). A QUIC
    /// and a TCP socket may share a listen address (one UDP, one TCP port).
    pub transport: Transport,
}

/// The transport of a `tunnel.localSockets[]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// QUIC over UDP.
    #[default]
    Quic,
    /// QUIC packets framed over TCP, for networks that drop UDP.
    Tcp,
}

impl Transport {
    /// The configuration and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A local or app socket: `tcp:IP:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AppSocket {
    /// TCP.
    Tcp(SocketAddr),
    /// Unix stream socket.
    Unix(PathBuf),
    /// UDP: datagrams, carried as flows (see `app::udp`).
    Udp(SocketAddr),
}

impl AppSocket {
    /// Whether this is a UDP socket (its traffic is datagram flows).
    pub fn is_udp(&self) -> bool {
        matches!(self, Self::Udp(_))
    }
}

impl FromStr for AppSocket {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            rest.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
                format!(
                    "'{s}' is not a valid tcp socket, expected tcp:IP:PORT (IPv6 as tcp:[::1]:PORT)"
                )
            })
        } else if let Some(rest) = s.strip_prefix("udp:") {
            rest.parse::<SocketAddr>().map(Self::Udp).map_err(|_| {
                format!(
                    "'{s}' is not a valid udp socket, expected udp:IP:PORT (IPv6 as udp:[::1]:PORT)"
                )
            })
        } else if let Some(rest) = s.strip_prefix("unix:") {
            if rest.is_empty() {
                Err(format!("'{s}' has an empty unix socket path"))
            } else {
                Ok(Self::Unix(PathBuf::from(rest)))
            }
        } else {
            Err(format!("'{s}' must start with 'tcp:', 'udp:' or 'unix:'"))
        }
    }
}

impl fmt::Display for AppSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp:{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Udp(a) => write!(f, "udp:{a}"),
        }
    }
}

/// An inclusive port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive), `>= start`.
    pub end: u16,
}

impl PortRange {
    /// Whether `port` is inside.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

/// What an exposed app leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExposedTarget {
    /// `mode: single`: one socket.
    Single(AppSocket),
    /// `mode: range`: any target inside both ranges, chosen by the remote site.
    Range {
        /// `portRange`.
        ports: Vec<PortRange>,
        /// `addressRange` (single addresses become /32 or /128).
        addresses: Vec<IpNet>,
        /// `protocol`: whether targets are TCP (default) or UDP.
        protocol: Protocol,
    },
}

impl ExposedTarget {
    /// The protocol of the traffic it carries: the socket's for a single
    /// app, `protocol` for a range app.
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::Single(s) if s.is_udp() => Protocol::Udp,
            Self::Single(_) => Protocol::Tcp,
            Self::Range { protocol, .. } => *protocol,
        }
    }
}

/// The transport protocol of an app's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Byte streams (tcp and unix sockets).
    #[default]
    Tcp,
    /// Datagram flows.
    Udp,
}

impl Protocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// Default `udpIdleTimeout`: RFC 9298 says UDP proxies should not time flows
/// out sooner than two minutes.
pub const DEFAULT_UDP_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Longest `udpIdleTimeout` accepted (one day).
pub const MAX_UDP_IDLE_TIMEOUT_SECS: u64 = 86_400;

/// One `localExposedApps[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedApp {
    /// Unique within the site.
    pub name: AppName,
    /// Where connections go.
    pub target: ExposedTarget,
    /// `maxConnections`: streams open to this app at once, from all peers
    /// (1..=[`MAX_LIMIT`](crate::limit::MAX_LIMIT)); `None` when not set.
    pub max_connections: Option<u32>,
    /// `allowedSites`: the only sites that may open streams to this app, in
    /// config order, distinct, never this site's own name, at most
    /// [`MAX_ALLOWED_SITES`]. Empty means every member of the network.
    pub allowed_sites: Vec<SiteName>,
    /// `udpIdleTimeout`: a UDP flow with no datagram either way for this
    /// long ends; `None` when not set (see [`DEFAULT_UDP_IDLE_TIMEOUT`]).
    pub udp_idle_timeout: Option<std::time::Duration>,
    /// `bandwidthLimit`: bytes per second each way, shared by every stream
    /// and flow of the app, enforced here; `None`: unlimited.
    pub bandwidth_limit: Option<BandwidthLimit>,
    /// `proxyProtocol`: the PROXY protocol header sent to the app before any
    /// data of each stream; `None` (off) when not set. Never set on a UDP app.
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// `localExposedApps[].proxyProtocol`: which version of HAProxy's PROXY
/// protocol header the exposing site writes to the app before a stream's
/// data, carrying the client address the far (client) site saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// The human-readable header (`PROXY TCP4 …\r\n`).
    V1,
    /// The binary header.
    V2,
}

impl ProxyProtocol {
    /// The config spelling (`v1`, `v2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most `allowedSites` one exposed app may list.
pub const MAX_ALLOWED_SITES: usize = 1024;

impl ExposedApp {
    /// The effective `maxConnections`: as set, else the default.
    pub fn connection_limit(&self) -> usize {
        limit_or_default(self.max_connections)
    }

    /// The effective `udpIdleTimeout`: as set, else the default.
    pub fn udp_idle(&self) -> std::time::Duration {
        self.udp_idle_timeout.unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT)
    }

    /// Whether the app's traffic is UDP flows.
    pub fn protocol(&self) -> Protocol {
        self.target.protocol()
    }

    /// Whether `site` may open streams to this app: every site when
    /// `allowedSites` is empty, else only those it lists.
    pub fn allows(&self, site: &SiteName) -> bool {
        self.allowed_sites.is_empty() || self.allowed_sites.contains(site)
    }

    /// Whether the app is restricted to the sites of `allowedSites` (and so
    /// is offered to them alone rather than announced to everyone).
    pub fn is_restricted(&self) -> bool {
        !self.allowed_sites.is_empty()
    }
}

fn limit_or_default(set: Option<u32>) -> usize {
    set.unwrap_or(crate::limit::DEFAULT_CONNECTIONS) as usize
}

/// One `remoteApps[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteApp {
    /// The site exposing the app.
    pub site: SiteName,
    /// The app's name on that site.
    pub app: AppName,
    /// Where this site listens for clients.
    pub local_socket: AppSocket,
    /// For range apps: the target on the remote side (`tcp:IP:PORT`, or
    /// `udp:IP:PORT` when `local_socket` is UDP).
    pub app_socket: Option<SocketAddr>,
    /// `maxConnections`: clients the local listener serves at once
    /// (1..=[`MAX_LIMIT`](crate::limit::MAX_LIMIT)); `None` when not set.
    pub max_connections: Option<u32>,
    /// `udpIdleTimeout` (UDP local sockets): a flow with no datagram either
    /// way for this long ends; `None` when not set.
    pub udp_idle_timeout: Option<std::time::Duration>,
    /// `bandwidthLimit`: bytes per second each way, shared by every client
    /// of the local listener, enforced here; `None`: unlimited.
    pub bandwidth_limit: Option<BandwidthLimit>,
}

impl RemoteApp {
    /// The effective `maxConnections`: as set, else the default.
    pub fn connection_limit(&self) -> usize {
        limit_or_default(self.max_connections)
    }

    /// The effective `udpIdleTimeout`: as set, else the default.
    pub fn udp_idle(&self) -> std::time::Duration {
        self.udp_idle_timeout.unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT)
    }

    /// The protocol of the app's traffic: UDP when the local socket is UDP.
    pub fn protocol(&self) -> Protocol {
        if self.local_socket.is_udp() {
            Protocol::Udp
        } else {
            Protocol::Tcp
        }
    }

    /// `appSocket` as the config spells it (`tcp:` or `udp:` after the protocol).
    pub fn app_socket_text(&self) -> Option<String> {
        self.app_socket
            .map(|t| format!("{}:{t}", self.protocol().as_str()))
    }

    /// Whether `other` is the same listener of the same app (everything but
    /// the limit is equal): how live removals and the state file match entries.
    pub fn same_as(&self, other: &Self) -> bool {
        self.site == other.site
            && self.app == other.app
            && self.local_socket == other.local_socket
            && self.app_socket == other.app_socket
    }
}

/// `control` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlConfig {
    /// Control socket path; `None` uses the default under the runtime dir.
    pub socket: Option<PathBuf>,
}

/// `metrics` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (Prometheus text format); `None`: not served.
    pub listen: Option<SocketAddr>,
}

/// `trust` section: which identity may use which site name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustConfig {
    /// How identities are accepted.
    pub mode: TrustMode,
    /// Sites whose identity is fixed by the config (in `strict` mode, the
    /// only sites admitted), in config order, names unique.
    pub sites: Vec<TrustedSite>,
}

/// `trust.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrustMode {
    /// The first identity seen for a site name is remembered and required
    /// from then on (like SSH's known_hosts); `trust.sites` are pinned from the start.
    #[default]
    Pinned,
    /// Only the sites listed in `trust.sites`, each with its identity.
    Strict,
    /// Any identity may use any name (the original's behaviour).
    Open,
}

impl TrustMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Strict => "strict",
            Self::Open => "open",
        }
    }
}

/// One `trust.sites[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedSite {
    /// The site name.
    pub site: SiteName,
    /// The identity it must present.
    pub identity: crate::identity::Fingerprint,
}
