//! Turns the raw serde mirror into validated [`Config`] types.
//!
//! Owns every rule of the original wovenet (required fields, the
//! dedicated-address / port-forwarding defaulting, app modes) plus the rules of
//! the new keys. Every problem becomes a [`FieldError`] naming the camelCase
//! path, and all problems are collected rather than stopping at the first, so
//! one `wovenetd check` run shows everything to fix. The control API validates
//! live-added apps with [`exposed_app`] and [`remote_app`] so its messages match
//! the loader's.
//!
//! Must not do I/O, and must never put the passphrase, the MQTT password or
//! the TURN password in an error or a warning.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use zeroize::Zeroizing;

use super::raw::{self, Scalar};
use super::{
    AppName, AppSocket, BandwidthLimit, BrokerUrl, Config, CongestionControl, ControlConfig,
    CryptoConfig, CryptoKey, EmbeddedBroker, ExposedApp, ExposedTarget, FieldError, LocalSocket,
    LogFormat, LogLevel, LoggerConfig, MAX_ALLOWED_SITES, MAX_LOCAL_SOCKETS, MetricsConfig,
    MqttConfig, PortRange, PublicAddress, RemoteApp, Secret, SiteName, SocketMode, Transport,
    TrustConfig, TrustMode, TrustedSite, TunnelConfig,
};
use super::{DEFAULT_STUN_PORT, MAX_STUN_SERVERS, StunServer};
use super::{DEFAULT_TURN_PORT, RelayConfig, TurnServer};
use super::{DEFAULT_WORKER_THREADS, MAX_WORKER_THREADS};
use super::{MAX_UDP_IDLE_TIMEOUT_SECS, Protocol, ProxyProtocol};
use crate::identity::Fingerprint;
use crate::limit::{DEFAULT_STREAMS_PER_PEER, MAX_LIMIT};

/// Validates a whole config, collecting every error.
///
/// Warnings (ignored legacy sections, ignored fields) end up in
/// [`Config::warnings`]; unknown keys are reported by the loader, which sees them.
pub fn config(raw: raw::Config) -> Result<Config, Vec<FieldError>> {
    let mut r = Report::default();
    let config = whole(&raw, &mut r);
    // `whole` already moved the warnings into the config.
    r.finish(config).map(|(config, _)| config)
}

impl TryFrom<raw::Config> for Config {
    type Error = Vec<FieldError>;

    fn try_from(raw: raw::Config) -> Result<Self, Self::Error> {
        config(raw)
    }
}

/// Validates one `localExposedApps[]` entry; `path` prefixes every error
/// (e.g. `localExposedApps[2]`, or `""` for bare field names).
///
/// Uniqueness of the name is the caller's business: only it knows the other
/// apps; so is an `allowedSites` entry naming this site ([`own_site_allowed`]).
pub fn exposed_app(raw: &raw::ExposedApp, path: &str) -> Result<ExposedApp, Vec<FieldError>> {
    let mut r = Report::default();
    let app = exposed_app_into(raw, path, &mut r);
    r.finish(app).map(|(app, _)| app)
}

/// Validates one `remoteApps[]` entry; `path` prefixes every error.
///
/// Uniqueness and "not this site's own name" are the caller's business.
pub fn remote_app(raw: &raw::RemoteApp, path: &str) -> Result<RemoteApp, Vec<FieldError>> {
    let mut r = Report::default();
    let app = remote_app_into(raw, path, &mut r);
    r.finish(app).map(|(app, _)| app)
}

/// Errors and warnings gathered while validating.
#[derive(Default)]
struct Report {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

impl Report {
    fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError::new(path, reason));
    }

    fn warn(&mut self, path: &str, what: impl fmt::Display) {
        self.warnings.push(format!("{path}: {what}"));
    }

    /// The value with the warnings, or every error.
    ///
    /// Builders return `None` only after pushing an error; the fallback error
    /// keeps that a bug report rather than a panic if one forgets.
    fn finish<T>(mut self, value: Option<T>) -> Result<(T, Vec<String>), Vec<FieldError>> {
        match value {
            Some(v) if self.errors.is_empty() => Ok((v, self.warnings)),
            None if self.errors.is_empty() => {
                self.err(
                    "",
                    "invalid configuration (no detail was recorded; please report this)",
                );
                Err(self.errors)
            }
            _ => Err(self.errors),
        }
    }
}

/// `path.field`, or just `field` at the root.
fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// A set, non-empty value (the original treated `""` as unset).
fn given(s: &Option<Scalar>) -> Option<&str> {
    s.as_ref().and_then(Scalar::non_empty)
}

/// A required value, or an `is required` error.
fn required<'a>(s: &'a Option<Scalar>, path: String, r: &mut Report) -> Option<&'a str> {
    let v = given(s);
    if v.is_none() {
        r.err(path, "is required");
    }
    v
}

/// A port 1..=65535.
fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(_) => Err(format!("port '{s}' is out of range 1..=65535")),
        Err(_) => Err(format!("'{s}' is not a port number")),
    }
}

/// A concurrency limit (`maxConnections`, `tunnel.maxStreamsPerPeer`):
/// a whole number 1..=[`MAX_LIMIT`].
fn parse_limit(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=i64::from(MAX_LIMIT)).contains(&n) => Ok(n as u32),
        Ok(_) => Err(format!("'{s}' is out of range 1..={MAX_LIMIT}")),
        Err(_) => Err(format!("'{s}' is not a whole number (1..={MAX_LIMIT})")),
    }
}

/// An optional limit at `path`, or an error there.
/// `udpIdleTimeout`: whole seconds, 1..=[`MAX_UDP_IDLE_TIMEOUT_SECS`].
fn parse_idle(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    match t.parse::<u64>() {
        Ok(n) if (1..=MAX_UDP_IDLE_TIMEOUT_SECS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "'{s}' is not a number of seconds from 1 to {MAX_UDP_IDLE_TIMEOUT_SECS}"
        )),
    }
}

/// An optional `udpIdleTimeout` at `path`; when set on an app that carries
/// no UDP, a warning (it would do nothing).
fn udp_idle(
    raw: &Option<Scalar>,
    path: String,
    udp: Option<bool>,
    r: &mut Report,
) -> Option<Duration> {
    let s = given(raw)?;
    match parse_idle(s) {
        Ok(d) => {
            if udp == Some(false) {
                r.warn(&path, "ignored: the app carries no UDP");
            }
            Some(d)
        }
        Err(e) => {
            r.err(path, e);
            None
        }
    }
}

fn limit(raw: &Option<Scalar>, path: String, r: &mut Report) -> Option<u32> {
    given(raw).and_then(|s| parse_limit(s).map_err(|e| r.err(path, e)).ok())
}

/// An optional `bandwidthLimit` (grammar in [`super::bandwidth`]) at `path`.
fn bandwidth(raw: &Option<Scalar>, path: String, r: &mut Report) -> Option<BandwidthLimit> {
    given(raw).and_then(|s| s.parse().map_err(|e| r.err(path, e)).ok())
}

/// Checks a TCP target that will be dialled: port 0 cannot be dialled.
fn dialable(socket: AppSocket, raw: &str) -> Result<AppSocket, String> {
    match socket {
        AppSocket::Tcp(a) | AppSocket::Udp(a) if a.port() == 0 => {
            Err(format!("'{raw}' has port 0, which cannot be connected to"))
        }
        s => Ok(s),
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `5900` or `5901-5990` (spaces around the parts are tolerated).
    fn from_str(s: &str) -> Result<Self, String> {
        let shape = || format!("'{s}' is not a port or port range (e.g. '5900' or '5901-5990')");
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let number = |p: &str| -> Result<u16, String> {
            match p.parse::<i64>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                Ok(_) => Err(format!("port '{p}' in '{s}' is out of range 1..=65535")),
                Err(_) => Err(shape()),
            }
        };
        let (start, end) = (number(start)?, number(end)?);
        if start > end {
            return Err(format!("'{s}' starts after it ends"));
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for BrokerUrl {
    type Err = String;

    /// `scheme://host[:port][/]` with scheme `mqtt`/`tcp` (plain) or
    /// `mqtts`/`ssl`/`tls` (TLS); IPv6 hosts in brackets.
    fn from_str(s: &str) -> Result<Self, String> {
        // Credentials in the URL would be echoed back in errors; refuse them
        // without quoting the value.
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!(
                "'{s}' must start with mqtt://, tcp://, mqtts://, ssl:// or tls://"
            ));
        };
        if rest.contains('@') {
            return Err("user name and password in the URL are not supported; use \
                        messageChannel.mqtt.username and messageChannel.mqtt.password"
                .to_owned());
        }
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" | "tls" => (true, 8883),
            _ => {
                return Err(format!(
                    "'{s}' has unsupported scheme '{scheme}', expected mqtt://, tcp://, mqtts://, ssl:// or tls://"
                ));
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(format!("'{s}' must not have a path or query"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((host, after)) = bracketed.split_once(']') else {
                return Err(format!("'{s}' has an unclosed '[' around the IPv6 address"));
            };
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(format!("'{s}': '{host}' is not an IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(format!("'{s}' has text after ']' that is not ':PORT'")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!(
                        "'{s}': an IPv6 host must be written in brackets, e.g. mqtt://[2001:db8::1]:1883"
                    ));
                }
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("'{s}' has no host"));
        }
        let host_ok = host.contains(':')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !host_ok {
            return Err(format!("'{s}': '{host}' is not a valid host name"));
        }
        let port = match port {
            None => default_port,
            Some(p) => parse_port(p).map_err(|e| format!("'{s}': {e}"))?,
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

fn whole(raw: &raw::Config, r: &mut Report) -> Option<Config> {
    let site_name = required(&raw.site_name, "siteName".into(), r)
        .and_then(|s| SiteName::new(s).map_err(|e| r.err("siteName", e)).ok());
    let crypto = crypto(raw.crypto.as_ref(), r);
    let logger = logger(raw.logger.as_ref(), r);
    let message_channel = message_channel(raw.message_channel.as_ref(), r);
    if let (Some(c), Some(m)) = (&crypto, &message_channel)
        && m.topic.is_none()
        && let Some(why) = guessable_key(&c.key)
    {
        r.warn(
            "crypto.key",
            format_args!(
                "{why}, and messageChannel.mqtt.topic is empty, so the topic is derived from \
                 the key: anyone who can see the broker's topics can test guesses of the key \
                 offline; use a key of at least {STRONG_KEY_LEN} random characters (e.g. \
                 'openssl rand -base64 24'), and on a public broker set \
                 messageChannel.mqtt.topic to a random value"
            ),
        );
    }
    let tunnel = tunnel(raw.tunnel.as_ref(), r);
    if let (Some(t), Some(m)) = (&tunnel, &message_channel)
        && !m.is_host_local()
    {
        for (i, s) in t.local_sockets.iter().enumerate() {
            if let PublicAddress::Fixed(ip) = s.public_address
                && ip.to_canonical().is_loopback()
            {
                r.warn(
                    &format!("tunnel.localSockets[{i}].publicAddress"),
                    format_args!(
                        "'{ip}' is a loopback address but the broker is not on this host \
                         (messageChannel.mqtt), so other sites will not dial it"
                    ),
                );
            }
        }
    }

    let mut exposed_apps = Vec::new();
    let mut names: HashMap<AppName, usize> = HashMap::new();
    for (i, app) in raw.local_exposed_apps.iter().flatten().enumerate() {
        let path = format!("localExposedApps[{i}]");
        let Some(app) = exposed_app_into(app, &path, r) else {
            continue;
        };
        if let Some(own) = &site_name
            && let Some(e) = own_site_allowed(&app, own, &path)
        {
            r.errors.push(e);
            continue;
        }
        if let Some(first) = names.get(&app.name) {
            r.err(
                join(&path, "appName"),
                format!(
                    "duplicate app name '{}' (already used by localExposedApps[{first}])",
                    app.name
                ),
            );
            continue;
        }
        names.insert(app.name.clone(), i);
        exposed_apps.push(app);
    }

    let mut remote_apps = Vec::new();
    let mut sockets: HashMap<AppSocket, usize> = HashMap::new();
    let mut triples: HashMap<(SiteName, AppName, AppSocket), usize> = HashMap::new();
    for (i, app) in raw.remote_apps.iter().flatten().enumerate() {
        let path = format!("remoteApps[{i}]");
        let Some(app) = remote_app_into(app, &path, r) else {
            continue;
        };
        if site_name.as_ref() == Some(&app.site) {
            r.err(
                join(&path, "siteName"),
                format!(
                    "'{}' is this site's own name; a remote app must be on another site",
                    app.site
                ),
            );
            continue;
        }
        let triple = (app.site.clone(), app.app.clone(), app.local_socket.clone());
        if let Some(first) = triples.get(&triple) {
            r.err(
                path,
                format!(
                    "duplicate remote app: same siteName, appName and localSocket as remoteApps[{first}]"
                ),
            );
            continue;
        }
        // Several listeners on `tcp:IP:0` (or `udp:IP:0`) get distinct ephemeral ports.
        let ephemeral =
            matches!(app.local_socket, AppSocket::Tcp(a) | AppSocket::Udp(a) if a.port() == 0);
        if !ephemeral {
            if let Some(first) = sockets.get(&app.local_socket) {
                r.err(
                    join(&path, "localSocket"),
                    format!(
                        "'{}' is already used by remoteApps[{first}]",
                        app.local_socket
                    ),
                );
                continue;
            }
            sockets.insert(app.local_socket.clone(), i);
        }
        triples.insert(triple, i);
        remote_apps.push(app);
    }

    let control = ControlConfig {
        socket: raw
            .control
            .as_ref()
            .and_then(|c| given(&c.socket))
            .map(PathBuf::from),
    };

    let metrics = MetricsConfig {
        listen: raw
            .metrics
            .as_ref()
            .and_then(|m| given(&m.listen))
            .and_then(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| {
                        r.err(
                            "metrics.listen",
                            format!(
                                "'{s}' is not IP:PORT (e.g. 127.0.0.1:9090, IPv6 as [::1]:9090)"
                            ),
                        );
                    })
                    .ok()
            }),
    };

    let trust = trust(raw.trust.as_ref(), r);

    if raw.restful_api {
        r.warn(
            "restfulApi",
            "section ignored: this wovenet has no REST API; use the control socket \
             (control.socket) with wovenetctl or wovenet-tui instead",
        );
    }

    Some(Config {
        site_name: site_name?,
        crypto: crypto?,
        logger: logger?,
        message_channel: message_channel?,
        tunnel: tunnel?,
        exposed_apps,
        remote_apps,
        control,
        metrics,
        trust,
        warnings: std::mem::take(&mut r.warnings),
    })
}

/// Most `trust.sites` entries (a network larger than this lists its sites elsewhere).
pub const MAX_TRUSTED_SITES: usize = 4096;

fn trust(raw: Option<&raw::Trust>, r: &mut Report) -> TrustConfig {
    let mode = match raw.and_then(|t| given(&t.mode)) {
        None => TrustMode::Pinned,
        Some(s) => match s.trim().to_ascii_lowercase().as_str() {
            "pinned" => TrustMode::Pinned,
            "strict" => TrustMode::Strict,
            "open" => TrustMode::Open,
            _ => {
                r.err(
                    "trust.mode",
                    format!("'{s}' is not a trust mode (pinned, strict or open)"),
                );
                TrustMode::Pinned
            }
        },
    };
    let raw_sites = raw.and_then(|t| t.sites.as_ref());
    let mut sites: Vec<TrustedSite> = Vec::new();
    let mut seen: HashMap<SiteName, usize> = HashMap::new();
    if raw_sites.is_some_and(|s| s.len() > MAX_TRUSTED_SITES) {
        r.err(
            "trust.sites",
            format!("has more than {MAX_TRUSTED_SITES} entries"),
        );
    }
    for (i, entry) in raw_sites
        .into_iter()
        .flatten()
        .take(MAX_TRUSTED_SITES)
        .enumerate()
    {
        let path = format!("trust.sites[{i}]");
        let site = required(&entry.site_name, join(&path, "siteName"), r).and_then(|s| {
            SiteName::new(s)
                .map_err(|e| r.err(join(&path, "siteName"), e))
                .ok()
        });
        let identity = required(&entry.identity, join(&path, "identity"), r).and_then(|s| {
            s.parse::<Fingerprint>()
                .map_err(|e| r.err(join(&path, "identity"), format!("'{s}' is {e}")))
                .ok()
        });
        let (Some(site), Some(identity)) = (site, identity) else {
            continue;
        };
        if let Some(first) = seen.get(&site) {
            r.err(
                join(&path, "siteName"),
                format!("'{site}' is already listed in trust.sites[{first}]"),
            );
            continue;
        }
        seen.insert(site.clone(), i);
        sites.push(TrustedSite { site, identity });
    }
    match mode {
        TrustMode::Strict if sites.is_empty() && raw_sites.is_none_or(Vec::is_empty) => r.err(
            "trust.sites",
            "is required when trust.mode is strict: list every site allowed to join \
             (siteName and the identity `wovenetd identity` prints on that site)",
        ),
        TrustMode::Open => {
            r.warn(
                "trust.mode",
                "open: site identities are not checked, so anyone holding crypto.key can \
                 announce any siteName and receive its traffic; use pinned (the default) or strict",
            );
            if !sites.is_empty() {
                r.warn("trust.sites", "ignored: trust.mode is open");
            }
        }
        _ => {}
    }
    TrustConfig { mode, sites }
}

fn crypto(raw: Option<&raw::Crypto>, r: &mut Report) -> Option<CryptoConfig> {
    let key = raw.and_then(|c| c.key.as_ref()).filter(|k| !k.0.is_empty());
    let Some(key) = key else {
        r.err(
            "crypto.key",
            "is required: a passphrase of 8 to 32 bytes shared by every site of the network",
        );
        return None;
    };
    // CryptoKey::new's messages never contain the key.
    match CryptoKey::new(key.0.as_str()) {
        Ok(key) => Some(CryptoConfig { key }),
        Err(e) => {
            r.err("crypto.key", e);
            None
        }
    }
}

/// Keys shorter than this are worth a warning when the topic is derived
/// from them: 16 random characters from a keyboard give about 100 bits.
const STRONG_KEY_LEN: usize = 16;
/// Fewer distinct characters than this (e.g. `aaaaaaaaaaaaaaaa`) make a
/// long key as easy to guess as a short one.
const STRONG_KEY_DISTINCT: usize = 8;

/// Why `key` is easy to guess, if it is: too short, or too few distinct
/// characters. A cheap, deliberately simple test (a dictionary phrase of 16
/// characters passes it); the text never contains the key.
fn guessable_key(key: &CryptoKey) -> Option<String> {
    let bytes = key.expose();
    if bytes.len() < STRONG_KEY_LEN {
        return Some(format!("is only {} bytes long", bytes.len()));
    }
    let mut distinct = bytes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < STRONG_KEY_DISTINCT {
        return Some(format!("has only {} distinct characters", distinct.len()));
    }
    None
}

fn logger(raw: Option<&raw::Logger>, r: &mut Report) -> Option<LoggerConfig> {
    let level = match raw.and_then(|l| given(&l.level)) {
        None => Some(LogLevel::Info),
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "trace" => Some(LogLevel::Trace),
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            _ => {
                r.err(
                    "logger.level",
                    format!("'{s}' is not a log level, expected trace, debug, info, warn or error"),
                );
                None
            }
        },
    };
    let format = match raw.and_then(|l| given(&l.format)) {
        None => Some(LogFormat::Text),
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => {
                r.err(
                    "logger.format",
                    format!("'{s}' is not a log format, expected 'json' or 'text'"),
                );
                None
            }
        },
    };
    let file = raw.and_then(|l| given(&l.file)).map(PathBuf::from);
    Some(LoggerConfig {
        level: level?,
        file,
        format: format?,
    })
}

fn message_channel(raw: Option<&raw::MessageChannel>, r: &mut Report) -> Option<MqttConfig> {
    let start = r.errors.len();
    if let Some(p) = raw.and_then(|m| given(&m.protocol))
        && !p.eq_ignore_ascii_case("mqtt")
    {
        r.err(
            "messageChannel.protocol",
            format!("'{p}' is not supported, the only message protocol is 'mqtt'"),
        );
    }
    let mqtt = raw.and_then(|m| m.mqtt.as_ref());
    const P: &str = "messageChannel.mqtt";

    let embedded_broker = mqtt
        .and_then(|m| m.embedded_broker.as_ref())
        .and_then(|e| given(&e.listen))
        .and_then(|s| match s.parse::<SocketAddr>() {
            Ok(listen) if listen.port() != 0 => Some(EmbeddedBroker { listen }),
            Ok(_) => {
                r.err(
                    format!("{P}.embeddedBroker.listen"),
                    format!("'{s}' has port 0; the broker needs a fixed port other sites can dial"),
                );
                None
            }
            Err(_) => {
                r.err(
                    format!("{P}.embeddedBroker.listen"),
                    format!("'{s}' is not IP:PORT (IPv6 as [::]:1883)"),
                );
                None
            }
        });

    let broker = match mqtt.and_then(|m| given(&m.broker_server)) {
        Some(s) => BrokerUrl::from_str(s)
            .map_err(|e| r.err(format!("{P}.brokerServer"), e))
            .ok(),
        None => match embedded_broker {
            Some(EmbeddedBroker { listen }) => {
                // Dialling the unspecified address is not portable: use loopback.
                let ip = match listen.ip() {
                    IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ip => ip,
                };
                Some(BrokerUrl {
                    tls: false,
                    host: ip.to_string(),
                    port: listen.port(),
                })
            }
            None => {
                let listen_given = mqtt
                    .and_then(|m| m.embedded_broker.as_ref())
                    .and_then(|e| given(&e.listen))
                    .is_some();
                // A bad embeddedBroker.listen already has its own error.
                if !listen_given {
                    r.err(
                        format!("{P}.brokerServer"),
                        "is required (e.g. 'mqtt://broker.example.com:1883'), unless \
                         messageChannel.mqtt.embeddedBroker.listen is set",
                    );
                }
                None
            }
        },
    };

    let topic = mqtt.and_then(|m| given(&m.topic)).map(str::to_owned);
    if let Some(t) = &topic {
        if t.contains(['+', '#']) {
            r.err(
                format!("{P}.topic"),
                format!("'{t}' must not contain the MQTT wildcards '+' or '#'"),
            );
        } else if t.contains('\0') {
            r.err(format!("{P}.topic"), "must not contain a NUL character");
        } else if t.len() > 60_000 {
            r.err(
                format!("{P}.topic"),
                "is too long (MQTT topics are limited to 65535 bytes)",
            );
        }
    }

    let username = mqtt.and_then(|m| given(&m.username)).map(str::to_owned);
    let password = mqtt
        .and_then(|m| m.password.as_ref())
        .filter(|p| !p.0.is_empty())
        .map(|p| Secret(Zeroizing::new(p.0.as_str().to_owned())));
    if password.is_some() && username.is_none() {
        r.err(
            format!("{P}.password"),
            "is set but messageChannel.mqtt.username is not; MQTT needs both",
        );
    }

    let ca_file = mqtt.and_then(|m| given(&m.ca_file)).map(PathBuf::from);
    if ca_file.is_some() && !broker.as_ref().is_some_and(|b| b.tls) {
        r.err(
            format!("{P}.caFile"),
            "is only used with a TLS broker (mqtts://); brokerServer is plain mqtt",
        );
    }

    if r.errors.len() > start {
        return None;
    }
    Some(MqttConfig {
        broker: broker?,
        topic,
        username,
        password,
        embedded_broker,
        ca_file,
    })
}

fn tunnel(raw: Option<&raw::Tunnel>, r: &mut Report) -> Option<TunnelConfig> {
    let start = r.errors.len();
    let congestion_control = match raw.and_then(|t| given(&t.congestion_control)) {
        None => CongestionControl::default(),
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "cubic" => CongestionControl::Cubic,
            "bbr" => CongestionControl::Bbr,
            _ => {
                r.err(
                    "tunnel.congestionControl",
                    format!("'{s}' is not supported, expected 'cubic' or 'bbr'"),
                );
                CongestionControl::default()
            }
        },
    };
    let max_streams_per_peer = limit(
        raw.map_or(&None, |t| &t.max_streams_per_peer),
        "tunnel.maxStreamsPerPeer".into(),
        r,
    )
    .unwrap_or(DEFAULT_STREAMS_PER_PEER);
    let worker_threads = match raw.and_then(|t| given(&t.worker_threads)) {
        None => DEFAULT_WORKER_THREADS,
        Some(s) => match s.trim().parse::<u16>() {
            Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => n,
            _ => {
                r.err(
                    "tunnel.workerThreads",
                    format!("'{s}' is not a whole number from 1 to {MAX_WORKER_THREADS}"),
                );
                DEFAULT_WORKER_THREADS
            }
        },
    };
    let mut local_sockets: Vec<LocalSocket> = Vec::new();
    // Keyed by transport too: a QUIC (UDP) and a TCP socket may share a port.
    let mut listens: HashMap<(Transport, SocketAddr), usize> = HashMap::new();
    // (index, listen IP) of the hole-punching sockets, which use the relay.
    let mut hole_punchers: Vec<(usize, IpAddr)> = Vec::new();
    let raw_sockets = raw.and_then(|t| t.local_sockets.as_ref());
    if let Some(n) = raw_sockets.map(Vec::len).filter(|&n| n > MAX_LOCAL_SOCKETS) {
        r.err(
            "tunnel.localSockets",
            format!(
                "has {n} entries, at most {MAX_LOCAL_SOCKETS} are allowed \
                 (other sites dial no more sockets of one peer)"
            ),
        );
    }
    for (i, s) in raw_sockets.into_iter().flatten().enumerate() {
        let path = format!("tunnel.localSockets[{i}]");
        let Some(socket) = local_socket(s, &path, r) else {
            continue;
        };
        // Two sockets on port 0 (any free port, hole-punching) bind different ports.
        if socket.listen.port() != 0
            && let Some(first) = listens.get(&(socket.transport, socket.listen))
        {
            r.err(
                path,
                format!(
                    "listen address '{}' is already used by tunnel.localSockets[{first}]",
                    socket.listen
                ),
            );
            continue;
        }
        listens.insert((socket.transport, socket.listen), i);
        if socket.mode == SocketMode::HolePunching {
            hole_punchers.push((i, socket.listen.ip()));
        }
        local_sockets.push(socket);
    }
    let relay = relay(raw.and_then(|t| t.relay.as_ref()), r);
    if let Some(turn) = relay.as_ref().map(|relay| &relay.turn) {
        if hole_punchers.is_empty() {
            r.warn(
                "tunnel.relay",
                "ignored because no localSockets entry is in hole-punching mode",
            );
        }
        // Every hole-punching socket allocates its relayed address from this
        // very socket, so each must be able to send to the server.
        for (i, listen) in &hole_punchers {
            if let Some(ip) = turn.ip()
                && let Some(problem) = unreachable_from(*listen, ip)
            {
                r.err(
                    "tunnel.relay.turn.url",
                    format!(
                        "'{turn}' {problem} (tunnel.localSockets[{i}] is in hole-punching \
                         mode and takes its relayed address from this server)"
                    ),
                );
            }
        }
    }
    if r.errors.len() > start {
        return None;
    }
    Some(TunnelConfig {
        local_sockets,
        congestion_control,
        max_streams_per_peer,
        worker_threads,
        relay,
    })
}

/// One socket, with the original's defaulting rules (and the new
/// `hole-punching` mode and `autoStunDetect`).
fn local_socket(raw: &raw::LocalSocket, path: &str, r: &mut Report) -> Option<LocalSocket> {
    let start = r.errors.len();
    let at = |field: &str| join(path, field);

    let transport = match given(&raw.transport_protocol) {
        None => Some(Transport::Quic),
        Some(t) if t.eq_ignore_ascii_case("quic") => Some(Transport::Quic),
        Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
        Some(t) => {
            r.err(
                at("transportProtocol"),
                format!("'{t}' is not supported, expected 'quic' or 'tcp'"),
            );
            None
        }
    };
    let mode = match given(&raw.mode) {
        None => {
            r.err(
                at("mode"),
                "is required: 'dedicated-address', 'port-forwarding' or 'hole-punching'",
            );
            None
        }
        Some(m) => match m.to_ascii_lowercase().as_str() {
            "dedicated-address" => Some(SocketMode::DedicatedAddress),
            "port-forwarding" => Some(SocketMode::PortForwarding),
            "hole-punching" => Some(SocketMode::HolePunching),
            _ => {
                r.err(
                    at("mode"),
                    format!(
                        "'{m}' is not a mode, expected 'dedicated-address', 'port-forwarding' \
                         or 'hole-punching'"
                    ),
                );
                None
            }
        },
    };
    // In hole-punching mode the public address and port are learned, never
    // configured: the mode's own arm below judges those fields.
    let hole_punching = mode == Some(SocketMode::HolePunching);

    let detector_url = raw.http_detector.as_ref().and_then(|h| given(&h.url));
    let stun_listed = raw
        .stun_detector
        .as_ref()
        .and_then(|d| d.servers.as_ref())
        .is_some_and(|l| !l.is_empty());
    let public_address = given(&raw.public_address)
        .filter(|_| !hole_punching)
        .and_then(|s| {
            if s.eq_ignore_ascii_case("autoStunDetect") {
                if detector_url.is_some() {
                    r.warn(
                        &at("httpDetector"),
                        "ignored because publicAddress is 'autoStunDetect'",
                    );
                }
                Some(PublicAddress::AutoStunDetect)
            } else if s.eq_ignore_ascii_case("autoHttpDetect") {
                let Some(url) = detector_url else {
                    r.err(
                        at("httpDetector.url"),
                        "is required when publicAddress is 'autoHttpDetect'",
                    );
                    return None;
                };
                match check_http_url(url) {
                    Ok(()) => Some(PublicAddress::AutoHttpDetect {
                        url: url.to_owned(),
                    }),
                    Err(e) => {
                        r.err(at("httpDetector.url"), e);
                        None
                    }
                }
            } else {
                match s.parse::<IpAddr>() {
                    Ok(ip) if ip.is_unspecified() => {
                        r.err(
                            at("publicAddress"),
                            format!(
                                "'{s}' is the unspecified address, which other sites cannot dial"
                            ),
                        );
                        None
                    }
                    Ok(ip) => {
                        if let Some(what) = never_a_peer(ip) {
                            r.err(
                                at("publicAddress"),
                                format!("'{s}' is {what}, which other sites refuse to dial"),
                            );
                            return None;
                        }
                        if detector_url.is_some() {
                            r.warn(
                                &at("httpDetector"),
                                "ignored because publicAddress is a fixed IP",
                            );
                        }
                        Some(PublicAddress::Fixed(ip))
                    }
                    Err(_) => {
                        r.err(
                            at("publicAddress"),
                            format!(
                                "'{s}' is not an IP address, 'autoHttpDetect' or 'autoStunDetect'"
                            ),
                        );
                        None
                    }
                }
            }
        });
    let listen_address = given(&raw.listen_address).and_then(|s| match s.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            r.err(at("listenAddress"), format!("'{s}' is not an IP address"));
            None
        }
    });
    let public_port = given(&raw.public_port)
        .filter(|_| !hole_punching)
        .and_then(|s| parse_port(s).map_err(|e| r.err(at("publicPort"), e)).ok());
    // Port 0 (any free port) only makes sense where nobody dials the port
    // as configured: in hole-punching mode, where it is learned.
    let listen_port = given(&raw.listen_port).and_then(|s| {
        let parsed = match s.trim().parse::<i64>() {
            Ok(0) if hole_punching => Ok(0),
            _ => parse_port(s),
        };
        parsed.map_err(|e| r.err(at("listenPort"), e)).ok()
    });

    let has_public = given(&raw.public_address).is_some();
    let has_listen = given(&raw.listen_address).is_some();
    let has_public_port = given(&raw.public_port).is_some();
    let has_listen_port = given(&raw.listen_port).is_some();

    // Where to bind when listenAddress is not given: the unspecified address
    // of the public address's family, as the original did.
    let unspecified_for = |public: &Option<PublicAddress>| match public {
        Some(PublicAddress::Fixed(IpAddr::V6(_))) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };

    let mode = mode?;
    let (public_address, public_port, listen) = match mode {
        SocketMode::DedicatedAddress => {
            if !has_public && !has_listen {
                r.err(
                    at("publicAddress"),
                    "publicAddress or listenAddress is required in dedicated-address mode",
                );
            }
            if !has_public_port && !has_listen_port {
                r.err(
                    at("publicPort"),
                    "publicPort or listenPort is required in dedicated-address mode",
                );
            }
            if let (Some(p), Some(l)) = (public_port, listen_port)
                && p != l
            {
                r.err(
                    at("listenPort"),
                    "must equal publicPort in dedicated-address mode",
                );
            }
            let public = match (&public_address, listen_address) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(l)) if !has_public => {
                    if l.is_unspecified() {
                        r.err(
                            at("publicAddress"),
                            format!(
                                "is required when listenAddress is the unspecified address '{l}'"
                            ),
                        );
                        None
                    } else {
                        Some(PublicAddress::Fixed(l))
                    }
                }
                _ => None,
            };
            let listen_ip = listen_address.unwrap_or_else(|| unspecified_for(&public));
            (
                public,
                public_port.or(listen_port),
                listen_port
                    .or(public_port)
                    .map(|p| SocketAddr::new(listen_ip, p)),
            )
        }
        SocketMode::PortForwarding => {
            for (has, field) in [
                (has_public, "publicAddress"),
                (has_public_port, "publicPort"),
                (has_listen_port, "listenPort"),
            ] {
                if !has {
                    r.err(at(field), "is required in port-forwarding mode");
                }
            }
            let listen_ip = listen_address.unwrap_or_else(|| unspecified_for(&public_address));
            (
                public_address,
                public_port,
                listen_port.map(|p| SocketAddr::new(listen_ip, p)),
            )
        }
        SocketMode::HolePunching => {
            if let Some(s) = given(&raw.public_address)
                && !s.eq_ignore_ascii_case("autoStunDetect")
            {
                r.err(
                    at("publicAddress"),
                    format!(
                        "is learned by STUN in hole-punching mode; remove '{s}' \
                         (or write 'autoStunDetect')"
                    ),
                );
            }
            if let Some(s) = given(&raw.public_port) {
                r.err(
                    at("publicPort"),
                    format!("is learned by STUN in hole-punching mode; remove '{s}'"),
                );
            }
            if detector_url.is_some() {
                r.warn(&at("httpDetector"), "ignored in hole-punching mode");
            }
            let listen_ip = listen_address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            (
                Some(PublicAddress::AutoStunDetect),
                // Learned at run time.
                Some(0),
                Some(SocketAddr::new(listen_ip, listen_port.unwrap_or(0))),
            )
        }
    };

    let stun_servers = match &public_address {
        Some(PublicAddress::AutoStunDetect) => {
            let why = if hole_punching {
                "in hole-punching mode"
            } else {
                "when publicAddress is 'autoStunDetect'"
            };
            stun_servers(raw, path, why, listen.map(|l| l.ip()), r)
        }
        other => {
            if stun_listed {
                let why = match other {
                    Some(PublicAddress::Fixed(_)) if has_public => "publicAddress is a fixed IP",
                    Some(PublicAddress::AutoHttpDetect { .. }) => {
                        "publicAddress is 'autoHttpDetect'"
                    }
                    _ => "publicAddress is not 'autoStunDetect'",
                };
                r.warn(&at("stunDetector"), format_args!("ignored because {why}"));
            }
            Vec::new()
        }
    };

    // A TCP socket cannot be punched (no simultaneous open through NATs here)
    // nor relayed by TURN: it must be reachable as configured.
    if transport == Some(Transport::Tcp) && hole_punching {
        r.err(
            at("transportProtocol"),
            "'tcp' cannot be used in 'hole-punching' mode (only QUIC sockets are punched), \
             use 'dedicated-address' or 'port-forwarding'",
        );
    }
    if r.errors.len() > start {
        return None;
    }
    Some(LocalSocket {
        mode,
        public_address: public_address?,
        public_port: public_port?,
        listen: listen?,
        stun_servers,
        transport: transport?,
    })
}

/// The `stunDetector.servers` of a socket that uses them (`why` says when
/// they are required): each entry parsed, at most [`MAX_STUN_SERVERS`], no
/// duplicates, and, when the socket's `listen` address is known, each IP
/// literal of an address family that socket can send to.
fn stun_servers(
    raw: &raw::LocalSocket,
    path: &str,
    why: &str,
    listen: Option<IpAddr>,
    r: &mut Report,
) -> Vec<StunServer> {
    let at = join(path, "stunDetector.servers");
    let list = raw
        .stun_detector
        .as_ref()
        .and_then(|d| d.servers.as_deref())
        .unwrap_or_default();
    if list.is_empty() {
        r.err(at, format!("is required {why}"));
        return Vec::new();
    }
    if list.len() > MAX_STUN_SERVERS {
        r.err(
            &at,
            format!(
                "has {} entries, at most {MAX_STUN_SERVERS} are allowed",
                list.len()
            ),
        );
    }
    let mut out = Vec::new();
    let mut seen: HashMap<StunServer, usize> = HashMap::new();
    for (j, entry) in list.iter().enumerate() {
        let here = format!("{at}[{j}]");
        let server = match StunServer::from_str(entry.as_str()) {
            Ok(s) => s,
            Err(e) => {
                r.err(here, e);
                continue;
            }
        };
        if let Some(first) = seen.get(&server) {
            r.err(
                here,
                format!("'{server}' is already listed as {at}[{first}]"),
            );
            continue;
        }
        if let (Some(listen), Some(ip)) = (listen, server.ip())
            && let Some(problem) = unreachable_from(listen, ip)
        {
            r.err(here, format!("'{server}' {problem}"));
            continue;
        }
        seen.insert(server.clone(), j);
        out.push(server);
    }
    out
}

/// Why a UDP socket bound to `listen` cannot send to `server`, if it cannot:
/// an IPv4 socket cannot reach IPv6, and a socket bound to one IPv6 address
/// cannot reach IPv4 (the unspecified `::` is bound dual-stack, see
/// `tunnel::endpoint`).
fn unreachable_from(listen: IpAddr, server: IpAddr) -> Option<String> {
    match (listen, server.to_canonical()) {
        (IpAddr::V4(l), IpAddr::V6(_)) => Some(format!(
            "is an IPv6 address, which a socket listening on the IPv4 address '{l}' cannot \
             reach; set listenAddress to '::' or an IPv6 address of this host"
        )),
        (IpAddr::V6(l), IpAddr::V4(_)) if !l.is_unspecified() && l.to_ipv4_mapped().is_none() => {
            Some(format!(
                "is an IPv4 address, which a socket listening on the IPv6 address '{l}' cannot \
                 reach; set listenAddress to '::' or an IPv4 address of this host"
            ))
        }
        _ => None,
    }
}

impl FromStr for StunServer {
    type Err = String;

    /// `host:port` or `host` (port [`DEFAULT_STUN_PORT`]): an IPv4 address,
    /// an IPv6 address (in brackets when a port follows: `[2001:db8::1]:3478`)
    /// or a DNS name. Checks syntax only; nothing is resolved.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty: expected 'host:port' or 'host'".to_owned());
        }
        let (host, port) = server_host_port(s, s, DEFAULT_STUN_PORT, "a STUN server")?;
        Ok(Self { host, port })
    }
}

/// The `host[:port]` of a server this site sends UDP to (a STUN server, the
/// TURN server), with `default_port` when none is written: an IPv4 address,
/// an IPv6 address (in brackets when a port follows) or a DNS name; never the
/// unspecified, a multicast or the broadcast address. Returns the host in
/// canonical form (IP text without brackets, or the name in lower case) and
/// the port. Errors quote `shown` (the whole entry or URL) and say the host is
/// not `role`. Checks syntax only; nothing is resolved.
fn server_host_port(
    s: &str,
    shown: &str,
    default_port: u16,
    role: &str,
) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = s.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!(
                "'{shown}' has an unclosed '[' around the IPv6 address"
            ));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("'{shown}': '{host}' is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => {
                    return Err(format!("'{shown}' has text after ']' that is not ':PORT'"));
                }
            },
        }
    } else if s.parse::<IpAddr>().is_ok() {
        (s, None)
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "'{shown}' is not an IPv6 address; with a port, an IPv6 address is written \
                     in brackets, e.g. '[2001:db8::1]:3478'"
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => default_port,
        Some("") => return Err(format!("'{shown}' has an empty port after ':'")),
        Some(p) => parse_port(p).map_err(|e| format!("'{shown}': {e}"))?,
    };
    let host = match host.parse::<IpAddr>() {
        Ok(ip) => {
            let what = match ip.to_canonical() {
                ip if ip.is_unspecified() => Some("the unspecified address"),
                ip if ip.is_multicast() => Some("a multicast address"),
                IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
                _ => None,
            };
            if let Some(what) = what {
                return Err(format!("'{shown}': '{host}' is {what}, not {role}"));
            }
            ip.to_string()
        }
        Err(_) => {
            dns_name(host).map_err(|e| format!("'{shown}': {e}"))?;
            host.to_ascii_lowercase()
        }
    };
    Ok((host, port))
}

/// The host and port of a `tunnel.relay.turn.url`: a TURN URI of RFC 7065,
/// `turn:HOST[:PORT][?transport=udp]` (scheme and parameter in any case), the
/// host and port read like a STUN server's ([`server_host_port`], default port
/// [`DEFAULT_TURN_PORT`]). `turns:` and transports other than UDP are refused:
/// the relayed QUIC is already encrypted end to end, and QUIC runs over UDP.
/// A URL holding `@` (credentials) is refused without being quoted, since it
/// may hold the password.
fn turn_url(url: &str) -> Result<(String, u16), String> {
    const FORM: &str = "expected 'turn:HOST[:PORT]', e.g. 'turn:relay.example.com:3478'";
    if url.contains('@') {
        return Err(
            "must not hold credentials ('user@' or 'user:password@'): set \
             tunnel.relay.turn.username and tunnel.relay.turn.password instead (the URL \
             is not shown because it may hold the password)"
                .to_owned(),
        );
    }
    let rest = match url.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("turn") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("turns") => {
            return Err(format!(
                "'{url}': 'turns:' (TLS to the TURN server) is not supported: the relayed \
                 QUIC traffic is already encrypted end to end; use 'turn:'"
            ));
        }
        _ => return Err(format!("'{url}' is not a TURN URL: {FORM}")),
    };
    if rest.starts_with("//") {
        return Err(format!(
            "'{url}' has '//' after the scheme, which TURN URLs do not (RFC 7065): {FORM}"
        ));
    }
    let (host_port, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    if let Some(query) = query {
        match query.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("transport") && !value.contains('&') => {
                if !value.eq_ignore_ascii_case("udp") {
                    return Err(format!(
                        "'{url}' asks for transport '{value}': only UDP relays are supported \
                         (write '?transport=udp' or nothing)"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "'{url}' has the query '?{query}'; the only one accepted is '?transport=udp'"
                ));
            }
        }
    }
    if host_port.is_empty() {
        return Err(format!("'{url}' has no host: {FORM}"));
    }
    server_host_port(host_port, url, DEFAULT_TURN_PORT, "a TURN server")
}

/// `tunnel.relay`, when given: `None` when absent or invalid (every problem
/// is recorded in `r`). The password is never put in an error.
fn relay(raw: Option<&raw::Relay>, r: &mut Report) -> Option<RelayConfig> {
    const P: &str = "tunnel.relay.turn";
    let start = r.errors.len();
    let Some(turn) = raw?.turn.as_ref() else {
        r.err(
            P,
            "is required: a TURN server with url, username and password",
        );
        return None;
    };
    let server = required(&turn.url, format!("{P}.url"), r)
        .and_then(|url| turn_url(url).map_err(|e| r.err(format!("{P}.url"), e)).ok());
    let username = required(&turn.username, format!("{P}.username"), r).and_then(|u| {
        let problem = if u.len() > 255 {
            Some(format!("must be at most 255 bytes, got {}", u.len()))
        } else if u.chars().any(char::is_control) {
            Some("must not contain control characters".to_owned())
        } else {
            None
        };
        match problem {
            Some(p) => {
                r.err(format!("{P}.username"), p);
                None
            }
            None => Some(u.to_owned()),
        }
    });
    // The password itself must never appear in an error: only its length.
    let password = match turn.password.as_ref().filter(|p| !p.0.is_empty()) {
        None => {
            r.err(format!("{P}.password"), "is required");
            None
        }
        Some(p) if p.0.len() > 255 => {
            r.err(
                format!("{P}.password"),
                format!("must be at most 255 bytes, got {} bytes", p.0.len()),
            );
            None
        }
        Some(p) => Some(Secret(Zeroizing::new(p.0.as_str().to_owned()))),
    };
    if r.errors.len() > start {
        return None;
    }
    let (host, port) = server?;
    Some(RelayConfig {
        turn: TurnServer {
            host,
            port,
            username: username?,
            password: password?,
        },
    })
}

/// Checks the syntax of a DNS host name: dot-separated labels of 1 to 63
/// letters, digits and '-', not starting or ending with '-', 253 characters
/// at most, and a last label that is not all digits (which would be a
/// mistyped IPv4 address, and which resolvers may read as one).
fn dns_name(host: &str) -> Result<(), String> {
    if host.len() > 253 {
        return Err(format!(
            "the host name is {} characters long, at most 253 are allowed",
            host.len()
        ));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!("'{host}' has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "'{host}' has a label of {} characters, at most 63 are allowed",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "'{host}' is not an IP address or a host name: '{}' is not allowed \
                 (letters, digits, '-' and '.' only)",
                c.escape_debug()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "'{host}' has the label '{label}', which starts or ends with '-'"
            ));
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "'{host}' is neither an IP address nor a host name (its last label is all digits)"
        ));
    }
    Ok(())
}

/// What kind of address `ip` is, when other sites never dial it as a peer
/// (they drop such announced sockets, see `message::announce::peer_address`).
/// Loopback is fine here: sites sharing a host-local broker dial it.
fn never_a_peer(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        ip if ip.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("a 'this network' address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address"),
        _ => None,
    }
}

/// `http://…` or `https://…` with a host.
fn check_http_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Err(format!("'{url}' must be an http:// or https:// URL"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("'{url}' must not contain spaces"));
    }
    Ok(())
}

fn exposed_app_into(raw: &raw::ExposedApp, path: &str, r: &mut Report) -> Option<ExposedApp> {
    let start = r.errors.len();
    let at = |field: &str| join(path, field);

    let name = required(&raw.app_name, at("appName"), r)
        .and_then(|s| AppName::new(s).map_err(|e| r.err(at("appName"), e)).ok());
    let range = match given(&raw.mode) {
        None => Some(false),
        Some(m) if m.eq_ignore_ascii_case("single") => Some(false),
        Some(m) if m.eq_ignore_ascii_case("range") => Some(true),
        Some(m) => {
            r.err(
                at("mode"),
                format!("'{m}' is not a mode, expected 'single' or 'range'"),
            );
            None
        }
    };
    let has_list = |l: &Option<Vec<Scalar>>| l.as_ref().is_some_and(|l| !l.is_empty());

    let target = match range? {
        false => {
            for (field, list) in [
                ("portRange", &raw.port_range),
                ("addressRange", &raw.address_range),
            ] {
                if has_list(list) {
                    r.warn(&at(field), "ignored in single mode");
                }
            }
            let socket = given(&raw.app_socket);
            match socket {
                None => {
                    r.err(
                        at("appSocket"),
                        "is required in single mode (tcp:IP:PORT, udp:IP:PORT or unix:PATH)",
                    );
                    None
                }
                Some(s) => AppSocket::from_str(s)
                    .and_then(|a| dialable(a, s))
                    .map_err(|e| r.err(at("appSocket"), e))
                    .ok()
                    .map(ExposedTarget::Single),
            }
        }
        true => {
            if given(&raw.app_socket).is_some() {
                r.warn(&at("appSocket"), "ignored in range mode");
            }
            let protocol = match given(&raw.protocol) {
                None => Protocol::Tcp,
                Some(p) if p.eq_ignore_ascii_case("tcp") => Protocol::Tcp,
                Some(p) if p.eq_ignore_ascii_case("udp") => Protocol::Udp,
                Some(p) => {
                    r.err(
                        at("protocol"),
                        format!("'{p}' is not a protocol, expected 'tcp' or 'udp'"),
                    );
                    Protocol::Tcp
                }
            };
            let mut ports = Vec::new();
            if !has_list(&raw.port_range) {
                r.err(
                    at("portRange"),
                    "is required in range mode (e.g. ['5900', '5901-5990'])",
                );
            }
            for (j, p) in raw.port_range.iter().flatten().enumerate() {
                match PortRange::from_str(p.as_str()) {
                    Ok(range) => ports.push(range),
                    Err(e) => r.err(format!("{}[{j}]", at("portRange")), e),
                }
            }
            let mut addresses = Vec::new();
            if !has_list(&raw.address_range) {
                r.err(
                    at("addressRange"),
                    "is required in range mode (e.g. ['10.0.0.6', '10.0.2.0/24'])",
                );
            }
            for (j, a) in raw.address_range.iter().flatten().enumerate() {
                match parse_net(a.as_str()) {
                    Ok(net) => addresses.push(net),
                    Err(e) => r.err(format!("{}[{j}]", at("addressRange")), e),
                }
            }
            Some(ExposedTarget::Range {
                ports,
                addresses,
                protocol,
            })
        }
    };
    if matches!(target, Some(ExposedTarget::Single(_))) && given(&raw.protocol).is_some() {
        r.warn(
            &at("protocol"),
            "ignored in single mode (the appSocket prefix says it)",
        );
    }
    let max_connections = limit(&raw.max_connections, at("maxConnections"), r);
    let allowed_sites = allowed_sites(raw.allowed_sites.as_deref(), &at("allowedSites"), r);
    let is_udp = target.as_ref().map(|t| t.protocol() == Protocol::Udp);
    let udp_idle_timeout = udp_idle(&raw.udp_idle_timeout, at("udpIdleTimeout"), is_udp, r);
    let bandwidth_limit = bandwidth(&raw.bandwidth_limit, at("bandwidthLimit"), r);
    let proxy_protocol = proxy_protocol(&raw.proxy_protocol, at("proxyProtocol"), is_udp, r);

    if r.errors.len() > start {
        return None;
    }
    Some(ExposedApp {
        name: name?,
        target: target?,
        max_connections,
        allowed_sites,
        udp_idle_timeout,
        bandwidth_limit,
        proxy_protocol,
    })
}

/// An optional `proxyProtocol` at `path`: `v1` or `v2` (any case). A UDP
/// app cannot take one: the PROXY protocol frames a byte stream, and for
/// datagram flows no receiver agrees on where the header would go (version 1
/// has no datagram form at all), so it is refused rather than guessed.
fn proxy_protocol(
    raw: &Option<Scalar>,
    path: String,
    udp: Option<bool>,
    r: &mut Report,
) -> Option<ProxyProtocol> {
    let s = given(raw)?;
    let version = if s.eq_ignore_ascii_case("v1") {
        ProxyProtocol::V1
    } else if s.eq_ignore_ascii_case("v2") {
        ProxyProtocol::V2
    } else {
        r.err(
            path,
            format!("'{s}' is not a PROXY protocol version, expected 'v1' or 'v2'"),
        );
        return None;
    };
    if udp == Some(true) {
        r.err(
            path,
            format!(
                "'{s}' cannot be used with a udp app: the PROXY protocol header is sent on \
                 byte streams (tcp and unix app sockets) only"
            ),
        );
        return None;
    }
    Some(version)
}

/// `allowedSites`: each entry a valid site name, listed once, at most
/// [`MAX_ALLOWED_SITES`]. Absent or empty means every member.
fn allowed_sites(raw: Option<&[Scalar]>, path: &str, r: &mut Report) -> Vec<SiteName> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_ALLOWED_SITES {
        r.err(
            path,
            format!(
                "lists {} sites, at most {MAX_ALLOWED_SITES} are allowed",
                raw.len()
            ),
        );
        return Vec::new();
    }
    let mut sites: Vec<SiteName> = Vec::with_capacity(raw.len());
    for (j, s) in raw.iter().enumerate() {
        let at = format!("{path}[{j}]");
        match SiteName::new(s.as_str()) {
            Err(e) => r.err(at, e),
            Ok(site) => match sites.iter().position(|x| *x == site) {
                Some(first) => r.err(
                    at,
                    format!("duplicate site '{site}' (already listed at {path}[{first}])"),
                ),
                None => sites.push(site),
            },
        }
    }
    sites
}

/// The error for an exposed app at `path` whose `allowedSites` names `own`,
/// this site's own name: a site never opens streams to itself, so the entry
/// can only be a mistake (a copied config). The config loader, the control
/// API and the state file all refuse it with this message.
pub fn own_site_allowed(app: &ExposedApp, own: &SiteName, path: &str) -> Option<FieldError> {
    let j = app.allowed_sites.iter().position(|s| s == own)?;
    Some(FieldError::new(
        format!("{}[{j}]", join(path, "allowedSites")),
        format!("'{own}' is this site's own name; a site cannot open streams to itself"),
    ))
}

/// An IP (becomes /32 or /128) or a CIDR; host bits are cleared like Go's
/// `net.ParseCIDR` did.
fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    t.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("'{s}' is not an IP address or CIDR (e.g. '10.0.2.0/24')"))
}

fn remote_app_into(raw: &raw::RemoteApp, path: &str, r: &mut Report) -> Option<RemoteApp> {
    let start = r.errors.len();
    let at = |field: &str| join(path, field);

    let site = required(&raw.site_name, at("siteName"), r)
        .and_then(|s| SiteName::new(s).map_err(|e| r.err(at("siteName"), e)).ok());
    let app = required(&raw.app_name, at("appName"), r)
        .and_then(|s| AppName::new(s).map_err(|e| r.err(at("appName"), e)).ok());
    let local_socket = required(&raw.local_socket, at("localSocket"), r).and_then(|s| {
        AppSocket::from_str(s)
            .map_err(|e| r.err(at("localSocket"), e))
            .ok()
    });
    let local_udp = local_socket.as_ref().map(AppSocket::is_udp);
    let app_socket = given(&raw.app_socket).and_then(|s| {
        match AppSocket::from_str(s).and_then(|a| dialable(a, s)) {
            Ok(AppSocket::Tcp(addr)) if local_udp != Some(true) => Some(addr),
            Ok(AppSocket::Udp(addr)) if local_udp != Some(false) => Some(addr),
            Ok(AppSocket::Udp(_)) => {
                r.err(
                    at("appSocket"),
                    format!(
                        "'{s}' must be tcp:IP:PORT like localSocket: a udp target needs a udp localSocket"
                    ),
                );
                None
            }
            Ok(AppSocket::Tcp(_)) => {
                r.err(
                    at("appSocket"),
                    format!(
                        "'{s}' must be udp:IP:PORT like localSocket: a tcp target needs a tcp localSocket"
                    ),
                );
                None
            }
            Ok(AppSocket::Unix(_)) => {
                let reason = match local_udp {
                    Some(true) => format!(
                        "'{s}' must be udp:IP:PORT: it names a UDP target inside the remote range app"
                    ),
                    _ => format!(
                        "'{s}' must be tcp:IP:PORT: it names a TCP target inside the remote range app"
                    ),
                };
                r.err(at("appSocket"), reason);
                None
            }
            Err(e) => {
                r.err(at("appSocket"), e);
                None
            }
        }
    });
    let max_connections = limit(&raw.max_connections, at("maxConnections"), r);
    let udp_idle_timeout = udp_idle(&raw.udp_idle_timeout, at("udpIdleTimeout"), local_udp, r);
    let bandwidth_limit = bandwidth(&raw.bandwidth_limit, at("bandwidthLimit"), r);

    if r.errors.len() > start {
        return None;
    }
    Some(RemoteApp {
        site: site?,
        app: app?,
        local_socket: local_socket?,
        app_socket,
        max_connections,
        udp_idle_timeout,
        bandwidth_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, load_str};

    const KEY: &str = "unit-test-key-16";

    /// A valid site plus `extra` (top-level YAML appended).
    fn yaml(extra: &str) -> String {
        format!(
            "siteName: site01\ncrypto:\n  key: \"{KEY}\"\nmessageChannel:\n  mqtt:\n    brokerServer: mqtt://192.0.2.1:1883\n{extra}"
        )
    }

    fn ok(extra: &str) -> Config {
        load_str(&yaml(extra)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every error of a config that must fail, as `path: reason` lines.
    fn errors_of(text: &str) -> Vec<String> {
        match load_str(text) {
            Ok(_) => panic!("config loaded but should not:\n{text}"),
            Err(ConfigError::Invalid(errs)) => errs.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("not a field error: {e}"),
        }
    }

    fn errs(extra: &str) -> Vec<String> {
        errors_of(&yaml(extra))
    }

    fn one_socket(body: &str) -> String {
        format!(
            "tunnel:\n  localSockets:\n  - {}\n",
            body.replace('\n', "\n    ")
        )
    }

    fn socket(body: &str) -> LocalSocket {
        ok(&one_socket(body)).tunnel.local_sockets.remove(0)
    }

    fn socket_errs(body: &str) -> Vec<String> {
        errs(&one_socket(body))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    // --- site, crypto, logger -------------------------------------------

    #[test]
    fn site_name_is_required_and_limited_to_255_bytes() {
        let no_name = format!(
            "crypto:\n  key: \"{KEY}\"\nmessageChannel:\n  mqtt:\n    brokerServer: mqtt://h\n"
        );
        assert_eq!(errors_of(&no_name), ["siteName: is required"]);
        let long = "s".repeat(256);
        let text = yaml("").replace("siteName: site01", &format!("siteName: {long}"));
        assert_eq!(
            errors_of(&text),
            ["siteName: site name must be at most 255 bytes, got 256"]
        );
        let text = yaml("").replace("siteName: site01", &format!("siteName: {}", &long[..255]));
        assert_eq!(
            load_str(&text).map(|c| c.site_name.as_str().len()).ok(),
            Some(255)
        );
    }

    #[test]
    fn key_length_must_be_8_to_32_bytes() {
        for (key, good) in [
            ("1234567", false),
            ("12345678", true),
            (&"k".repeat(32)[..], true),
            (&"k".repeat(33)[..], false),
        ] {
            let text = yaml("").replace(KEY, key);
            assert_eq!(load_str(&text).is_ok(), good, "key of {} bytes", key.len());
        }
        assert_eq!(
            errors_of(&yaml("").replace(KEY, "abc")),
            ["crypto.key: must be 8 to 32 bytes long, got 3 bytes"]
        );
    }

    #[test]
    fn the_key_never_appears_in_errors_warnings_or_debug_output() {
        let short = "s3cr3t!";
        let long = "this-secret-is-far-too-long-to-be-a-key";
        for key in [short, long] {
            let e = load_str(&yaml("unknownThing: 1\n").replace(KEY, key)).expect_err("bad length");
            assert!(!e.to_string().contains(key), "{e}");
            assert!(!format!("{e:?}").contains(key));
        }
        // A key written where the section belongs must not be echoed either.
        let inline = "siteName: a\ncrypto: my-inline-secret\n";
        let e = load_str(inline).expect_err("wrong type");
        assert!(!e.to_string().contains("my-inline-secret"), "{e}");
        assert!(e.to_string().contains("crypto: has the wrong type"), "{e}");

        let config = load_str(&mqtt(
            "brokerServer: mqtt://h\nusername: u\npassword: pass-word-42",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(KEY) && !debug.contains("pass-word-42"),
            "{debug}"
        );
        assert!(config.warnings.iter().all(|w| !w.contains(KEY)));
        assert_eq!(config.crypto.key.expose(), KEY.as_bytes());

        let raw: raw::Config = serde_yaml::from_str(&yaml("")).expect("raw parse");
        assert!(!format!("{raw:?}").contains(KEY));
    }

    /// Regression: nothing said that a short key with an empty topic hands
    /// everyone on the broker a topic to test key guesses against.
    #[test]
    fn a_guessable_key_with_a_derived_topic_is_warned_about() {
        let with = |key: &str, topic: &str| {
            let text = yaml("").replace(KEY, key);
            let text = if topic.is_empty() {
                text
            } else {
                text.replace(
                    "brokerServer: mqtt://192.0.2.1:1883",
                    &format!("brokerServer: mqtt://192.0.2.1:1883\n    topic: {topic}"),
                )
            };
            load_str(&text).unwrap_or_else(|e| panic!("{e}")).warnings
        };
        for (key, why) in [
            ("short-key-12", "is only 12 bytes long"),
            ("your-own-key", "is only 12 bytes long"),
            ("aaaaaaaaaaaaaaaaaaaa", "has only 1 distinct characters"),
            ("abcabcabcabcabcabcab", "has only 3 distinct characters"),
        ] {
            let w = with(key, "");
            assert_eq!(w.len(), 1, "{key}: {w:?}");
            assert!(
                w[0].starts_with(&format!(
                    "crypto.key: {why}, and messageChannel.mqtt.topic is empty, so the topic is derived from the key"
                )),
                "{w:?}"
            );
            assert!(w[0].contains("set messageChannel.mqtt.topic to a random value"));
            assert!(!w[0].contains(key), "{w:?}");
            // A topic of its own: the key is still the secret, but nothing is derived from it.
            assert_eq!(
                with(key, "example.org/net-7f3a9c"),
                Vec::<String>::new(),
                "{key}"
            );
        }
        for strong in ["Xk3p9LqZ2vR8wN5t", "change-me-to-a-long-random-key"] {
            assert_eq!(with(strong, ""), Vec::<String>::new(), "{strong}");
        }
    }

    #[test]
    fn logger_defaults_to_info_text_on_stdout() {
        let c = ok("");
        assert_eq!(
            c.logger,
            LoggerConfig {
                level: LogLevel::Info,
                file: None,
                format: LogFormat::Text
            }
        );
        let c = ok("logger:\n  level: \"\"\n  file: \"\"\n  format: \"\"\n");
        assert_eq!(c.logger.level, LogLevel::Info);
        assert_eq!(c.logger.file, None);
    }

    #[test]
    fn log_level_and_format_accept_any_case() {
        for (text, level) in [
            ("TRACE", LogLevel::Trace),
            ("DEBUG", LogLevel::Debug),
            ("Info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("WARNING", LogLevel::Warn),
            ("error", LogLevel::Error),
        ] {
            let c = ok(&format!(
                "logger:\n  level: {text}\n  format: JSON\n  file: /var/log/w.log\n"
            ));
            assert_eq!(c.logger.level, level);
            assert_eq!(c.logger.format, LogFormat::Json);
            assert_eq!(c.logger.file, Some(PathBuf::from("/var/log/w.log")));
        }
        assert_eq!(
            errs("logger:\n  level: loud\n  format: yaml\n"),
            [
                "logger.level: 'loud' is not a log level, expected trace, debug, info, warn or error",
                "logger.format: 'yaml' is not a log format, expected 'json' or 'text'",
            ]
        );
    }

    // --- message channel --------------------------------------------------

    fn mqtt(body: &str) -> String {
        format!(
            "siteName: site01\ncrypto:\n  key: \"{KEY}\"\nmessageChannel:\n  mqtt:\n    {}\n",
            body.replace('\n', "\n    ")
        )
    }

    fn mqtt_ok(body: &str) -> MqttConfig {
        load_str(&mqtt(body))
            .unwrap_or_else(|e| panic!("{e}"))
            .message_channel
    }

    #[test]
    fn protocol_defaults_to_mqtt_and_rejects_others() {
        assert!(
            load_str(&yaml("").replace("messageChannel:\n", "messageChannel:\n  protocol: MQTT\n"))
                .is_ok()
        );
        let e = errors_of(
            &yaml("").replace("messageChannel:\n", "messageChannel:\n  protocol: kafka\n"),
        );
        assert_eq!(
            e,
            [
                "messageChannel.protocol: 'kafka' is not supported, the only message protocol is 'mqtt'"
            ]
        );
    }

    #[test]
    fn broker_urls_parse_with_scheme_defaults() {
        for (url, tls, host, port) in [
            (
                "mqtt://broker.example.com",
                false,
                "broker.example.com",
                1883,
            ),
            ("tcp://192.0.2.1:1884", false, "192.0.2.1", 1884),
            ("MQTT://192.0.2.1/", false, "192.0.2.1", 1883),
            (
                "mqtts://broker.example.com",
                true,
                "broker.example.com",
                8883,
            ),
            (
                "ssl://broker.example.com:9883",
                true,
                "broker.example.com",
                9883,
            ),
            ("tls://[2001:db8::1]", true, "2001:db8::1", 8883),
            ("mqtt://[2001:db8::1]:1999", false, "2001:db8::1", 1999),
        ] {
            assert_eq!(
                BrokerUrl::from_str(url),
                Ok(BrokerUrl {
                    tls,
                    host: host.into(),
                    port
                }),
                "{url}"
            );
        }
        assert_eq!(
            BrokerUrl::from_str("mqtt://[2001:db8::1]:1999").map(|u| u.to_string()),
            Ok("mqtt://[2001:db8::1]:1999".to_owned())
        );
    }

    #[test]
    fn bad_broker_urls_are_rejected_with_reasons() {
        for (url, reason) in [
            ("broker.example.com:1883", "must start with mqtt://"),
            ("ws://broker.example.com", "unsupported scheme 'ws'"),
            (
                "mqtt://broker.example.com:1883/path",
                "must not have a path",
            ),
            ("mqtt://2001:db8::1", "must be written in brackets"),
            ("mqtt://[2001:db8::1", "unclosed '['"),
            ("mqtt://:1883", "has no host"),
            ("mqtt://broker.example.com:0", "out of range 1..=65535"),
            ("mqtt://broker.example.com:99999", "out of range 1..=65535"),
            ("mqtt://broker.example.com:x", "not a port number"),
            ("mqtt://bro ker", "not a valid host name"),
        ] {
            let e = BrokerUrl::from_str(url).expect_err(url);
            assert!(e.contains(reason), "{url}: {e}");
        }
        let e = BrokerUrl::from_str("mqtt://user:hunter2@broker.example.com").expect_err("creds");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(
            errors_of(&mqtt("brokerServer: ws://b")),
            [
                "messageChannel.mqtt.brokerServer: 'ws://b' has unsupported scheme 'ws', expected mqtt://, tcp://, mqtts://, ssl:// or tls://"
            ]
        );
    }

    #[test]
    fn missing_broker_is_an_error_unless_an_embedded_broker_listens() {
        assert_eq!(
            errors_of(&mqtt("topic: t")),
            [
                "messageChannel.mqtt.brokerServer: is required (e.g. 'mqtt://broker.example.com:1883'), unless messageChannel.mqtt.embeddedBroker.listen is set"
            ]
        );
        let no_section = format!("siteName: a\ncrypto:\n  key: \"{KEY}\"\n");
        assert_eq!(errors_of(&no_section).len(), 1);
        for (listen, broker) in [
            ("0.0.0.0:1884", "mqtt://127.0.0.1:1884"),
            ("\"[::]:1883\"", "mqtt://[::1]:1883"),
            ("192.0.2.5:1883", "mqtt://192.0.2.5:1883"),
        ] {
            let m = mqtt_ok(&format!("embeddedBroker:\n  listen: {listen}"));
            assert_eq!(m.broker.to_string(), broker);
            assert!(m.embedded_broker.is_some());
        }
        let m =
            mqtt_ok("brokerServer: mqtts://b.example.com\nembeddedBroker:\n  listen: 0.0.0.0:1883");
        assert_eq!(m.broker.to_string(), "mqtts://b.example.com:8883");
        assert_eq!(
            m.embedded_broker,
            Some(EmbeddedBroker {
                listen: sa("0.0.0.0:1883")
            })
        );
    }

    #[test]
    fn bad_embedded_broker_listen_is_reported_once() {
        assert_eq!(
            errors_of(&mqtt("embeddedBroker:\n  listen: localhost:1883")),
            [
                "messageChannel.mqtt.embeddedBroker.listen: 'localhost:1883' is not IP:PORT (IPv6 as [::]:1883)"
            ]
        );
        let e = errors_of(&mqtt("embeddedBroker:\n  listen: 127.0.0.1:0"));
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("port 0"), "{e:?}");
    }

    #[test]
    fn empty_or_missing_topic_means_derived() {
        assert_eq!(mqtt_ok("brokerServer: mqtt://b").topic, None);
        assert_eq!(mqtt_ok("brokerServer: mqtt://b\ntopic: \"\"").topic, None);
        assert_eq!(
            mqtt_ok("brokerServer: mqtt://b\ntopic: example.com/net")
                .topic
                .as_deref(),
            Some("example.com/net")
        );
        for bad in ["a/#", "a/+/b", "+"] {
            let e = errors_of(&mqtt(&format!("brokerServer: mqtt://b\ntopic: \"{bad}\"")));
            assert_eq!(
                e,
                [format!(
                    "messageChannel.mqtt.topic: '{bad}' must not contain the MQTT wildcards '+' or '#'"
                )]
            );
        }
    }

    #[test]
    fn credentials_are_optional_and_password_needs_username() {
        let m = mqtt_ok("brokerServer: mqtt://b\nusername: \"\"\npassword: \"\"");
        assert_eq!((m.username, m.password), (None, None));
        let m = mqtt_ok("brokerServer: mqtt://b\nusername: site\npassword: pw-123");
        assert_eq!(m.username.as_deref(), Some("site"));
        assert_eq!(m.password.as_ref().map(|p| p.0.as_str()), Some("pw-123"));
        assert_eq!(format!("{:?}", m.password), "Some(MASKED)");
        let e = errors_of(&mqtt("brokerServer: mqtt://b\npassword: pw-123"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("messageChannel.mqtt.password:") && !e[0].contains("pw-123"));
    }

    // --- tunnel ------------------------------------------------------------

    #[test]
    fn dedicated_address_with_only_listen_address_announces_it() {
        let s = socket("mode: dedicated-address\nlistenAddress: 192.0.2.10\nlistenPort: 25890");
        assert_eq!(
            s,
            LocalSocket {
                mode: SocketMode::DedicatedAddress,
                public_address: PublicAddress::Fixed("192.0.2.10".parse().expect("ip")),
                public_port: 25890,
                listen: sa("192.0.2.10:25890"),
                stun_servers: Vec::new(),
                transport: Transport::Quic,
            }
        );
    }

    #[test]
    fn dedicated_address_with_only_public_address_binds_the_unspecified_address_of_its_family() {
        let s = socket("mode: dedicated-address\npublicAddress: 2001:db8::7\npublicPort: 25890");
        assert_eq!(s.listen, sa("[::]:25890"));
        assert_eq!(s.public_port, 25890);
        let s = socket("mode: dedicated-address\npublicAddress: 198.51.100.7\nlistenPort: 4000");
        assert_eq!(s.listen, sa("0.0.0.0:4000"));
        assert_eq!(s.public_port, 4000);
        let s = socket(
            "mode: dedicated-address\npublicAddress: autohttpdetect\npublicPort: 4000\nhttpDetector:\n  url: https://ip.example.com",
        );
        assert_eq!(s.listen, sa("0.0.0.0:4000"));
        assert_eq!(
            s.public_address,
            PublicAddress::AutoHttpDetect {
                url: "https://ip.example.com".into()
            }
        );
    }

    #[test]
    fn dedicated_address_ports_must_be_equal_when_both_are_given() {
        let s = socket(
            "mode: dedicated-address\npublicAddress: 192.0.2.1\npublicPort: 7\nlistenPort: 7",
        );
        assert_eq!((s.public_port, s.listen.port()), (7, 7));
        assert_eq!(
            errs(
                "tunnel:\n  localSockets:\n  - mode: dedicated-address\n    publicAddress: 192.0.2.1\n    publicPort: 1\n  - mode: dedicated-address\n    publicAddress: 192.0.2.2\n    publicPort: 5\n    listenPort: 6\n"
            ),
            ["tunnel.localSockets[1].listenPort: must equal publicPort in dedicated-address mode"]
        );
    }

    #[test]
    fn dedicated_address_needs_an_address_and_a_port() {
        assert_eq!(
            socket_errs("mode: dedicated-address"),
            [
                "tunnel.localSockets[0].publicAddress: publicAddress or listenAddress is required in dedicated-address mode",
                "tunnel.localSockets[0].publicPort: publicPort or listenPort is required in dedicated-address mode",
            ]
        );
        assert_eq!(
            socket_errs("mode: dedicated-address\nlistenAddress: 0.0.0.0\nlistenPort: 1"),
            [
                "tunnel.localSockets[0].publicAddress: is required when listenAddress is the unspecified address '0.0.0.0'"
            ]
        );
        assert_eq!(
            socket_errs("mode: dedicated-address\npublicAddress: \"::\"\nlistenPort: 1"),
            [
                "tunnel.localSockets[0].publicAddress: '::' is the unspecified address, which other sites cannot dial"
            ]
        );
    }

    #[test]
    fn port_forwarding_needs_public_address_public_port_and_listen_port() {
        assert_eq!(
            socket_errs("mode: port-forwarding\nlistenAddress: 192.0.2.3"),
            [
                "tunnel.localSockets[0].publicAddress: is required in port-forwarding mode",
                "tunnel.localSockets[0].publicPort: is required in port-forwarding mode",
                "tunnel.localSockets[0].listenPort: is required in port-forwarding mode",
            ]
        );
        let s = socket(
            "mode: port-forwarding\npublicAddress: 203.0.113.9\npublicPort: 36092\nlistenPort: 26098",
        );
        assert_eq!(s.mode, SocketMode::PortForwarding);
        assert_eq!((s.public_port, s.listen), (36092, sa("0.0.0.0:26098")));
        let s = socket(
            "mode: port-forwarding\npublicAddress: 2001:db8::9\npublicPort: 1\nlistenPort: 2",
        );
        assert_eq!(s.listen, sa("[::]:2"));
        let s = socket(
            "mode: PORT-FORWARDING\npublicAddress: 203.0.113.9\npublicPort: 1\nlistenPort: 2\nlistenAddress: 192.0.2.3",
        );
        assert_eq!(s.listen, sa("192.0.2.3:2"));
    }

    #[test]
    fn auto_http_detect_needs_an_http_url() {
        assert_eq!(
            socket_errs(
                "mode: port-forwarding\npublicAddress: AutoHttpDetect\npublicPort: 1\nlistenPort: 2"
            ),
            [
                "tunnel.localSockets[0].httpDetector.url: is required when publicAddress is 'autoHttpDetect'"
            ]
        );
        for bad in ["ftp://x", "https://", "ipinfo.io/ip"] {
            let e = socket_errs(&format!(
                "mode: port-forwarding\npublicAddress: autoHttpDetect\npublicPort: 1\nlistenPort: 2\nhttpDetector:\n  url: \"{bad}\""
            ));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert!(
                e[0].starts_with("tunnel.localSockets[0].httpDetector.url: '"),
                "{e:?}"
            );
        }
        let c = ok(&one_socket(
            "mode: port-forwarding\npublicAddress: 203.0.113.1\npublicPort: 1\nlistenPort: 2\nhttpDetector:\n  url: http://ip.example.com",
        ));
        assert_eq!(
            c.warnings,
            ["tunnel.localSockets[0].httpDetector: ignored because publicAddress is a fixed IP"]
        );
    }

    #[test]
    fn transport_protocol_is_quic_or_tcp_and_defaults_to_quic() {
        let base = "mode: dedicated-address\npublicAddress: 192.0.2.1\npublicPort: 1";
        assert_eq!(socket(base).transport, Transport::Quic);
        assert_eq!(
            socket(&format!("{base}\ntransportProtocol: QUIC")).transport,
            Transport::Quic
        );
        assert_eq!(
            socket(&format!("{base}\ntransportProtocol: \"\"")).transport,
            Transport::Quic
        );
        assert_eq!(
            socket(&format!("{base}\ntransportProtocol: tcp")).transport,
            Transport::Tcp
        );
        assert_eq!(
            socket(&format!("{base}\ntransportProtocol: TCP")).transport,
            Transport::Tcp
        );
        assert_eq!(
            socket_errs(&format!("{base}\ntransportProtocol: kcp")),
            [
                "tunnel.localSockets[0].transportProtocol: 'kcp' is not supported, expected 'quic' or 'tcp'"
            ]
        );
    }

    #[test]
    fn a_tcp_socket_cannot_be_hole_punched() {
        assert_eq!(
            socket_errs(&format!(
                "mode: hole-punching\ntransportProtocol: tcp\n{}",
                servers(&["192.0.2.50"])
            )),
            [
                "tunnel.localSockets[0].transportProtocol: 'tcp' cannot be used in 'hole-punching' \
                 mode (only QUIC sockets are punched), use 'dedicated-address' or 'port-forwarding'"
            ]
        );
    }

    #[test]
    fn socket_mode_is_required() {
        assert_eq!(
            socket_errs("publicAddress: 192.0.2.1\npublicPort: 1"),
            [
                "tunnel.localSockets[0].mode: is required: 'dedicated-address', 'port-forwarding' or 'hole-punching'"
            ]
        );
        assert_eq!(
            socket_errs(
                "mode: floating-ip
publicAddress: 192.0.2.1
publicPort: 1"
            ),
            [
                "tunnel.localSockets[0].mode: 'floating-ip' is not a mode, expected 'dedicated-address', 'port-forwarding' or 'hole-punching'"
            ]
        );
    }

    #[test]
    fn ports_must_be_numbers_from_1_to_65535() {
        socket("mode: dedicated-address\npublicAddress: 192.0.2.1\npublicPort: \"65535\"");
        for (port, reason) in [
            ("0", "port '0' is out of range 1..=65535"),
            ("65536", "port '65536' is out of range 1..=65535"),
            ("-1", "port '-1' is out of range 1..=65535"),
            ("http", "'http' is not a port number"),
        ] {
            assert_eq!(
                socket_errs(&format!(
                    "mode: dedicated-address\npublicAddress: 192.0.2.1\npublicPort: {port}"
                )),
                [format!("tunnel.localSockets[0].publicPort: {reason}")]
            );
        }
    }

    #[test]
    fn two_sockets_cannot_bind_the_same_address() {
        let e = errs(
            "tunnel:\n  localSockets:\n  - mode: dedicated-address\n    listenAddress: 192.0.2.1\n    listenPort: 9\n  - mode: port-forwarding\n    publicAddress: 203.0.113.1\n    publicPort: 10\n    listenAddress: 192.0.2.1\n    listenPort: 9\n",
        );
        assert_eq!(
            e,
            [
                "tunnel.localSockets[1]: listen address '192.0.2.1:9' is already used by tunnel.localSockets[0]"
            ]
        );
    }

    #[test]
    fn a_quic_and_a_tcp_socket_may_share_a_port_but_two_tcp_sockets_may_not() {
        let two = |t0: &str, t1: &str| {
            format!(
                "tunnel:\n  localSockets:\n  - mode: dedicated-address\n    listenAddress: 192.0.2.1\n    listenPort: 9\n    transportProtocol: {t0}\n  - mode: dedicated-address\n    listenAddress: 192.0.2.1\n    listenPort: 9\n    transportProtocol: {t1}\n"
            )
        };
        let c = ok(&two("quic", "tcp"));
        let t: Vec<_> = c.tunnel.local_sockets.iter().map(|s| s.transport).collect();
        assert_eq!(t, [Transport::Quic, Transport::Tcp]);
        assert_eq!(
            errs(&two("tcp", "tcp")),
            [
                "tunnel.localSockets[1]: listen address '192.0.2.1:9' is already used by tunnel.localSockets[0]"
            ]
        );
    }

    #[test]
    fn public_addresses_other_sites_refuse_are_errors() {
        for (addr, what) in [
            ("224.0.0.1", "a multicast address"),
            ("ff02::1", "a multicast address"),
            ("255.255.255.255", "the broadcast address"),
            ("0.1.2.3", "a 'this network' address"),
            ("169.254.1.1", "a link-local address"),
            ("fe80::1", "a link-local address"),
        ] {
            assert_eq!(
                socket_errs(&format!(
                    "mode: dedicated-address\npublicAddress: \"{addr}\"\npublicPort: 4000"
                )),
                [format!(
                    "tunnel.localSockets[0].publicAddress: '{addr}' is {what}, which other sites refuse to dial"
                )]
            );
        }
        // Loopback stays usable: sites sharing a host-local broker dial it.
        socket("mode: dedicated-address\npublicAddress: 127.0.0.1\npublicPort: 4000");
    }

    #[test]
    fn a_loopback_public_address_with_a_remote_broker_is_warned_about() {
        let loopback = "tunnel:\n  localSockets:\n  - mode: dedicated-address\n    publicAddress: 127.0.0.1\n    publicPort: 4000\n";
        assert_eq!(
            ok(loopback).warnings,
            [
                "tunnel.localSockets[0].publicAddress: '127.0.0.1' is a loopback address but the broker is not on this host (messageChannel.mqtt), so other sites will not dial it"
            ]
        );
        let local_broker = yaml(loopback).replace("mqtt://192.0.2.1:1883", "mqtt://127.0.0.1:1883");
        assert_eq!(
            load_str(&local_broker).unwrap().warnings,
            Vec::<String>::new()
        );
    }

    #[test]
    fn at_most_16_local_sockets() {
        let list = |n: u16| -> String {
            (0..n)
                .map(|i| format!("  - mode: dedicated-address\n    listenAddress: 192.0.2.1\n    listenPort: {}\n", 4000 + i))
                .collect()
        };
        let c = ok(&format!("tunnel:\n  localSockets:\n{}", list(16)));
        assert_eq!(c.tunnel.local_sockets.len(), 16);
        assert_eq!(
            errs(&format!("tunnel:\n  localSockets:\n{}", list(17))),
            [
                "tunnel.localSockets: has 17 entries, at most 16 are allowed (other sites dial no more sockets of one peer)"
            ]
        );
    }

    #[test]
    fn worker_threads_default_to_one_and_are_range_checked() {
        assert_eq!(ok("").tunnel.worker_threads, DEFAULT_WORKER_THREADS);
        assert_eq!(ok("tunnel:\n  workerThreads: 4\n").tunnel.worker_threads, 4);
        for bad in ["0", "257", "-1", "two", "1.5"] {
            let e = errs(&format!("tunnel:\n  workerThreads: {bad}\n"));
            assert!(
                e.len() == 1
                    && e[0].starts_with("tunnel.workerThreads: ")
                    && e[0].contains("1 to 256"),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn congestion_control_defaults_to_bbr() {
        assert_eq!(ok("").tunnel.congestion_control, CongestionControl::Bbr);
        assert_eq!(
            ok("tunnel:\n  congestionControl: BBR\n")
                .tunnel
                .congestion_control,
            CongestionControl::Bbr
        );
        assert_eq!(
            ok("tunnel:\n  congestionControl: cubic\n")
                .tunnel
                .congestion_control,
            CongestionControl::Cubic
        );
        assert_eq!(
            errs("tunnel:\n  congestionControl: vegas\n"),
            ["tunnel.congestionControl: 'vegas' is not supported, expected 'cubic' or 'bbr'"]
        );
    }

    // --- STUN detection and hole punching (issue 10) -------------------------

    fn stun(host: &str, port: u16) -> StunServer {
        StunServer {
            host: host.into(),
            port,
        }
    }

    /// `stunDetector.servers` as a YAML flow list of quoted entries.
    fn servers(list: &[&str]) -> String {
        let quoted: Vec<String> = list.iter().map(|s| format!("\"{s}\"")).collect();
        format!("stunDetector:\n  servers: [{}]", quoted.join(", "))
    }

    #[test]
    fn hole_punching_needs_only_stun_servers_and_binds_any_port_of_0_0_0_0() {
        let s = socket(&format!(
            "mode: hole-punching\n{}",
            servers(&["192.0.2.50"])
        ));
        assert_eq!(
            s,
            LocalSocket {
                mode: SocketMode::HolePunching,
                public_address: PublicAddress::AutoStunDetect,
                public_port: 0,
                listen: sa("0.0.0.0:0"),
                stun_servers: vec![stun("192.0.2.50", 3478)],
                transport: Transport::Quic,
            }
        );
        let s = socket(&format!(
            "mode: Hole-Punching\nlistenPort: 0\npublicAddress: AUTOSTUNDETECT\n{}",
            servers(&["192.0.2.50"])
        ));
        assert_eq!((s.listen, s.public_port), (sa("0.0.0.0:0"), 0));
        assert_eq!(s.public_address, PublicAddress::AutoStunDetect);
        let s = socket(&format!(
            "mode: hole-punching\nlistenAddress: 192.0.2.3\nlistenPort: 40000\n{}",
            servers(&["192.0.2.50"])
        ));
        assert_eq!((s.listen, s.public_port), (sa("192.0.2.3:40000"), 0));
        let s = socket(&format!(
            "mode: hole-punching\nlistenAddress: \"::\"\n{}",
            servers(&["192.0.2.50", "[2001:db8::50]:3479"])
        ));
        assert_eq!(s.listen, sa("[::]:0"));
        assert_eq!(
            s.stun_servers,
            [stun("192.0.2.50", 3478), stun("2001:db8::50", 3479)]
        );
    }

    #[test]
    fn hole_punching_requires_stun_servers() {
        for detector in ["", "\nstunDetector:", "\nstunDetector:\n  servers: []"] {
            assert_eq!(
                socket_errs(&format!("mode: hole-punching{detector}")),
                ["tunnel.localSockets[0].stunDetector.servers: is required in hole-punching mode"],
                "{detector:?}"
            );
        }
    }

    #[test]
    fn hole_punching_refuses_a_configured_public_address_or_port() {
        assert_eq!(
            socket_errs(&format!(
                "mode: hole-punching\npublicAddress: 203.0.113.1\npublicPort: 4000\n{}",
                servers(&["192.0.2.50"])
            )),
            [
                "tunnel.localSockets[0].publicAddress: is learned by STUN in hole-punching mode; remove '203.0.113.1' (or write 'autoStunDetect')",
                "tunnel.localSockets[0].publicPort: is learned by STUN in hole-punching mode; remove '4000'",
            ]
        );
        for other in ["autoHttpDetect", "not-an-ip"] {
            assert_eq!(
                socket_errs(&format!(
                    "mode: hole-punching\npublicAddress: {other}\n{}",
                    servers(&["192.0.2.50"])
                )),
                [format!(
                    "tunnel.localSockets[0].publicAddress: is learned by STUN in hole-punching mode; remove '{other}' (or write 'autoStunDetect')"
                )]
            );
        }
        let c = ok(&one_socket(&format!(
            "mode: hole-punching\nhttpDetector:\n  url: https://ip.example.com\n{}",
            servers(&["192.0.2.50"])
        )));
        assert_eq!(
            c.warnings,
            ["tunnel.localSockets[0].httpDetector: ignored in hole-punching mode"]
        );
    }

    #[test]
    fn listen_port_0_is_only_accepted_in_hole_punching_mode() {
        assert_eq!(
            socket_errs(
                "mode: port-forwarding\npublicAddress: 203.0.113.9\npublicPort: 1\nlistenPort: 0"
            ),
            ["tunnel.localSockets[0].listenPort: port '0' is out of range 1..=65535"]
        );
        assert_eq!(
            socket_errs(&format!(
                "mode: hole-punching\nlistenPort: 65536\n{}",
                servers(&["192.0.2.50"])
            )),
            ["tunnel.localSockets[0].listenPort: port '65536' is out of range 1..=65535"]
        );
    }

    #[test]
    fn auto_stun_detect_works_in_dedicated_address_and_port_forwarding_modes() {
        let s = socket(&format!(
            "mode: dedicated-address\npublicAddress: autoStunDetect\nlistenPort: 4000\n{}",
            servers(&["stun.example.com:3478", "192.0.2.50:19302"])
        ));
        assert_eq!(
            s,
            LocalSocket {
                mode: SocketMode::DedicatedAddress,
                public_address: PublicAddress::AutoStunDetect,
                public_port: 4000,
                listen: sa("0.0.0.0:4000"),
                stun_servers: vec![stun("stun.example.com", 3478), stun("192.0.2.50", 19302)],
                transport: Transport::Quic,
            }
        );
        let s = socket(&format!(
            "mode: port-forwarding\npublicAddress: autostundetect\npublicPort: 36092\nlistenPort: 26098\nlistenAddress: 192.0.2.3\n{}",
            servers(&["stun.example.com"])
        ));
        assert_eq!(s.mode, SocketMode::PortForwarding);
        assert_eq!(s.public_address, PublicAddress::AutoStunDetect);
        assert_eq!((s.public_port, s.listen), (36092, sa("192.0.2.3:26098")));
        assert_eq!(s.stun_servers, [stun("stun.example.com", 3478)]);
    }

    #[test]
    fn auto_stun_detect_requires_stun_servers_and_still_a_port() {
        assert_eq!(
            socket_errs(
                "mode: port-forwarding\npublicAddress: autoStunDetect\npublicPort: 1\nlistenPort: 2"
            ),
            [
                "tunnel.localSockets[0].stunDetector.servers: is required when publicAddress is 'autoStunDetect'"
            ]
        );
        assert_eq!(
            socket_errs("mode: dedicated-address\npublicAddress: autoStunDetect"),
            [
                "tunnel.localSockets[0].publicPort: publicPort or listenPort is required in dedicated-address mode",
                "tunnel.localSockets[0].stunDetector.servers: is required when publicAddress is 'autoStunDetect'",
            ]
        );
    }

    #[test]
    fn a_detector_that_does_not_apply_is_ignored_with_a_warning() {
        let c = ok(&one_socket(&format!(
            "mode: port-forwarding\npublicAddress: autoStunDetect\npublicPort: 1\nlistenPort: 2\nhttpDetector:\n  url: https://ip.example.com\n{}",
            servers(&["192.0.2.50"])
        )));
        assert_eq!(
            c.warnings,
            [
                "tunnel.localSockets[0].httpDetector: ignored because publicAddress is 'autoStunDetect'"
            ]
        );
        assert_eq!(
            c.tunnel.local_sockets[0].stun_servers,
            [stun("192.0.2.50", 3478)]
        );
        for (public, why) in [
            (
                "publicAddress: 203.0.113.1\n",
                "publicAddress is a fixed IP",
            ),
            (
                "publicAddress: autoHttpDetect\nhttpDetector:\n  url: https://ip.example.com\n",
                "publicAddress is 'autoHttpDetect'",
            ),
            (
                "listenAddress: 192.0.2.3\n",
                "publicAddress is not 'autoStunDetect'",
            ),
        ] {
            let body = format!(
                "mode: dedicated-address\n{public}publicPort: 4000\n{}",
                servers(&["192.0.2.50"])
            );
            let c = ok(&one_socket(&body));
            assert_eq!(
                c.warnings,
                [format!(
                    "tunnel.localSockets[0].stunDetector: ignored because {why}"
                )],
                "{body}"
            );
            assert_eq!(c.tunnel.local_sockets[0].stun_servers, []);
        }
    }

    #[test]
    fn an_unknown_public_address_names_every_accepted_value() {
        assert_eq!(
            socket_errs("mode: dedicated-address\npublicAddress: autoDetect\npublicPort: 1"),
            [
                "tunnel.localSockets[0].publicAddress: 'autoDetect' is not an IP address, 'autoHttpDetect' or 'autoStunDetect'"
            ]
        );
    }

    #[test]
    fn stun_servers_parse_with_the_default_port_and_display_as_host_port() {
        for (text, host, port, shown) in [
            (
                "stun.example.com",
                "stun.example.com",
                3478,
                "stun.example.com:3478",
            ),
            (
                "Stun.Example.COM:19302",
                "stun.example.com",
                19302,
                "stun.example.com:19302",
            ),
            ("localhost:1", "localhost", 1, "localhost:1"),
            ("x-1.example", "x-1.example", 3478, "x-1.example:3478"),
            ("192.0.2.1", "192.0.2.1", 3478, "192.0.2.1:3478"),
            ("127.0.0.1:65535", "127.0.0.1", 65535, "127.0.0.1:65535"),
            ("2001:db8::1", "2001:db8::1", 3478, "[2001:db8::1]:3478"),
            ("[2001:DB8:0::1]", "2001:db8::1", 3478, "[2001:db8::1]:3478"),
            ("[::1]:5349", "::1", 5349, "[::1]:5349"),
            (
                "[::ffff:192.0.2.1]:1",
                "::ffff:192.0.2.1",
                1,
                "[::ffff:192.0.2.1]:1",
            ),
        ] {
            let s = StunServer::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s, stun(host, port), "{text}");
            assert_eq!(s.to_string(), shown, "{text}");
            assert_eq!(StunServer::from_str(shown).as_ref(), Ok(&s), "{shown}");
        }
        assert_eq!(
            StunServer::from_str("[2001:db8::1]:3478").map(|s| s.ip()),
            Ok(Some("2001:db8::1".parse().expect("ip")))
        );
        assert_eq!(
            StunServer::from_str("stun.example.com").map(|s| s.ip()),
            Ok(None)
        );
        // Through the loader, a comma-separated string works like a list.
        let s = socket(
            "mode: hole-punching\nstunDetector:\n  servers: \"stun1.example.com, stun2.example.com:3479\"",
        );
        assert_eq!(
            s.stun_servers,
            [
                stun("stun1.example.com", 3478),
                stun("stun2.example.com", 3479)
            ]
        );
    }

    #[test]
    fn bad_stun_server_entries_are_refused_with_reasons() {
        let label64 = "a".repeat(64);
        let long = format!("{}.example", vec!["a".repeat(63); 4].join("."));
        for (entry, reason) in [
            ("", "must not be empty: expected 'host:port' or 'host'"),
            (
                "0.0.0.0",
                "'0.0.0.0': '0.0.0.0' is the unspecified address, not a STUN server",
            ),
            (
                "[::]:3478",
                "'[::]:3478': '::' is the unspecified address, not a STUN server",
            ),
            (
                "::",
                "'::': '::' is the unspecified address, not a STUN server",
            ),
            (
                "[::ffff:0.0.0.0]",
                "'[::ffff:0.0.0.0]': '::ffff:0.0.0.0' is the unspecified address, not a STUN server",
            ),
            (
                "224.0.0.1:3478",
                "'224.0.0.1:3478': '224.0.0.1' is a multicast address, not a STUN server",
            ),
            (
                "255.255.255.255",
                "'255.255.255.255': '255.255.255.255' is the broadcast address, not a STUN server",
            ),
            (
                "stun.example.com:0",
                "'stun.example.com:0': port '0' is out of range 1..=65535",
            ),
            (
                "stun.example.com:65536",
                "'stun.example.com:65536': port '65536' is out of range 1..=65535",
            ),
            (
                "stun.example.com:stun",
                "'stun.example.com:stun': 'stun' is not a port number",
            ),
            (
                "stun.example.com:",
                "'stun.example.com:' has an empty port after ':'",
            ),
            (
                "2001:db8::zz:3478",
                "'2001:db8::zz:3478' is not an IPv6 address; with a port, an IPv6 address is written in brackets, e.g. '[2001:db8::1]:3478'",
            ),
            (
                "[2001:db8::1",
                "'[2001:db8::1' has an unclosed '[' around the IPv6 address",
            ),
            (
                "[192.0.2.1]:3478",
                "'[192.0.2.1]:3478': '192.0.2.1' is not an IPv6 address",
            ),
            (
                "[2001:db8::1]3478",
                "'[2001:db8::1]3478' has text after ']' that is not ':PORT'",
            ),
            (
                "-stun.example.com",
                "'-stun.example.com': '-stun.example.com' has the label '-stun', which starts or ends with '-'",
            ),
            (
                "stun-.example.com",
                "'stun-.example.com': 'stun-.example.com' has the label 'stun-', which starts or ends with '-'",
            ),
            (
                "stun..example.com",
                "'stun..example.com': 'stun..example.com' has an empty label",
            ),
            (
                "stun.example.com.",
                "'stun.example.com.': 'stun.example.com.' has an empty label",
            ),
            (
                "stun_1.example.com",
                "'stun_1.example.com': 'stun_1.example.com' is not an IP address or a host name: '_' is not allowed (letters, digits, '-' and '.' only)",
            ),
            (
                "stun example",
                "'stun example': 'stun example' is not an IP address or a host name: ' ' is not allowed (letters, digits, '-' and '.' only)",
            ),
            (
                "1.2.3",
                "'1.2.3': '1.2.3' is neither an IP address nor a host name (its last label is all digits)",
            ),
            (
                "300.1.1.1:3478",
                "'300.1.1.1:3478': '300.1.1.1' is neither an IP address nor a host name (its last label is all digits)",
            ),
        ] {
            assert_eq!(
                StunServer::from_str(entry),
                Err(reason.to_owned()),
                "{entry:?}"
            );
            assert_eq!(
                socket_errs(&format!("mode: hole-punching\n{}", servers(&[entry]))),
                [format!(
                    "tunnel.localSockets[0].stunDetector.servers[0]: {reason}"
                )],
                "{entry:?}"
            );
        }
        // Label and name lengths: 63 and 253 pass, 64 and 254 do not.
        assert!(StunServer::from_str(&format!("{}.example", "a".repeat(63))).is_ok());
        assert_eq!(
            StunServer::from_str(&format!("{label64}.example")),
            Err(format!(
                "'{label64}.example': '{label64}.example' has a label of 64 characters, at most 63 are allowed"
            ))
        );
        assert_eq!(long.len(), 263);
        let fits = &long[long.len() - 253..];
        assert!(StunServer::from_str(fits.trim_start_matches('.')).is_ok());
        let too_long = format!("b{}", &long[long.len() - 253..]);
        assert_eq!(too_long.len(), 254);
        assert_eq!(
            StunServer::from_str(&too_long),
            Err(format!(
                "'{too_long}': the host name is 254 characters long, at most 253 are allowed"
            ))
        );
    }

    #[test]
    fn at_most_8_stun_servers_each_listed_once() {
        let names: Vec<String> = (1..=9).map(|i| format!("stun{i}.example.com")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let s = socket(&format!("mode: hole-punching\n{}", servers(&names[..8])));
        assert_eq!(s.stun_servers.len(), 8);
        assert_eq!(
            socket_errs(&format!("mode: hole-punching\n{}", servers(&names))),
            ["tunnel.localSockets[0].stunDetector.servers: has 9 entries, at most 8 are allowed"]
        );
        assert_eq!(
            socket_errs(&format!(
                "mode: hole-punching\nlistenAddress: \"::\"\n{}",
                servers(&[
                    "stun.example.com",
                    "192.0.2.1",
                    "STUN.example.com:3478",
                    "[2001:db8::1]:3478",
                    "2001:db8:0::1",
                    "stun.example.com:3479",
                ])
            )),
            [
                "tunnel.localSockets[0].stunDetector.servers[2]: 'stun.example.com:3478' is already listed as tunnel.localSockets[0].stunDetector.servers[0]",
                "tunnel.localSockets[0].stunDetector.servers[4]: '[2001:db8::1]:3478' is already listed as tunnel.localSockets[0].stunDetector.servers[3]",
            ]
        );
    }

    #[test]
    fn stun_server_addresses_must_be_reachable_from_the_listen_address() {
        assert_eq!(
            socket_errs(&format!(
                "mode: hole-punching\n{}",
                servers(&["[2001:db8::1]"])
            )),
            [
                "tunnel.localSockets[0].stunDetector.servers[0]: '[2001:db8::1]:3478' is an IPv6 address, which a socket listening on the IPv4 address '0.0.0.0' cannot reach; set listenAddress to '::' or an IPv6 address of this host"
            ]
        );
        assert_eq!(
            socket_errs(&format!(
                "mode: port-forwarding\npublicAddress: autoStunDetect\npublicPort: 1\nlistenPort: 2\nlistenAddress: 2001:db8::5\n{}",
                servers(&[
                    "192.0.2.1",
                    "[::ffff:192.0.2.2]",
                    "2001:db8::1",
                    "stun.example.com"
                ])
            )),
            [
                "tunnel.localSockets[0].stunDetector.servers[0]: '192.0.2.1:3478' is an IPv4 address, which a socket listening on the IPv6 address '2001:db8::5' cannot reach; set listenAddress to '::' or an IPv4 address of this host",
                "tunnel.localSockets[0].stunDetector.servers[1]: '[::ffff:192.0.2.2]:3478' is an IPv4 address, which a socket listening on the IPv6 address '2001:db8::5' cannot reach; set listenAddress to '::' or an IPv4 address of this host",
            ]
        );
        // `::` is bound dual-stack; host names are resolved by the daemon.
        let s = socket(&format!(
            "mode: hole-punching\nlistenAddress: \"::\"\n{}",
            servers(&["192.0.2.1", "2001:db8::1", "stun.example.com"])
        ));
        assert_eq!(s.stun_servers.len(), 3);
    }

    #[test]
    fn sockets_on_any_port_share_an_address_but_fixed_ports_do_not() {
        let two = |port: &str| {
            format!(
                "tunnel:\n  localSockets:\n  - mode: hole-punching\n    {port}stunDetector:\n      servers: [stun.example.com]\n  - mode: hole-punching\n    {port}stunDetector:\n      servers: [stun.example.com]\n"
            )
        };
        let c = ok(&two(""));
        assert_eq!(c.tunnel.local_sockets.len(), 2);
        assert!(
            c.tunnel
                .local_sockets
                .iter()
                .all(|s| s.listen == sa("0.0.0.0:0"))
        );
        assert_eq!(
            ok(&two("listenPort: 0\n    ")).tunnel.local_sockets.len(),
            2
        );
        assert_eq!(
            errs(&two("listenPort: 40000\n    ")),
            [
                "tunnel.localSockets[1]: listen address '0.0.0.0:40000' is already used by tunnel.localSockets[0]"
            ]
        );
    }

    #[test]
    fn socket_mode_and_public_address_show_their_config_spelling() {
        assert_eq!(
            SocketMode::DedicatedAddress.to_string(),
            "dedicated-address"
        );
        assert_eq!(SocketMode::PortForwarding.to_string(), "port-forwarding");
        assert_eq!(SocketMode::HolePunching.to_string(), "hole-punching");
        assert_eq!(
            PublicAddress::AutoStunDetect.config_value(),
            "autoStunDetect"
        );
        assert_eq!(
            PublicAddress::AutoHttpDetect {
                url: "http://x".into()
            }
            .config_value(),
            "autoHttpDetect"
        );
        assert_eq!(
            PublicAddress::Fixed("2001:db8::1".parse().expect("ip")).config_value(),
            "2001:db8::1"
        );
    }

    // --- TURN relay (issue 10) -------------------------------------------------

    /// `tunnel:` with one hole-punching socket (bound to `listen`, when given)
    /// and `relay` appended at the level of `tunnel`'s keys.
    fn relayed(listen: Option<&str>, relay: &str) -> String {
        let listen = listen.map_or(String::new(), |l| format!("    listenAddress: \"{l}\"\n"));
        format!(
            "tunnel:\n  localSockets:\n  - mode: hole-punching\n{listen}    stunDetector:\n      servers: [stun.example.com]\n  {}\n",
            relay.trim_end().replace('\n', "\n  ")
        )
    }

    fn turn_yaml(url: &str, username: &str, password: &str) -> String {
        format!(
            "relay:\n  turn:\n    url: \"{url}\"\n    username: \"{username}\"\n    password: \"{password}\""
        )
    }

    fn turn_server(host: &str, port: u16, username: &str, password: &str) -> TurnServer {
        TurnServer {
            host: host.into(),
            port,
            username: username.into(),
            password: Secret(Zeroizing::new(password.into())),
        }
    }

    fn relay_of(c: &Config) -> &TurnServer {
        &c.tunnel.relay.as_ref().expect("a relay").turn
    }

    #[test]
    fn a_turn_relay_parses_with_the_default_port_and_displays_without_credentials() {
        let c = ok(&relayed(
            None,
            &turn_yaml("turn:Relay.Example.COM", "wovenet", "pass-word-42"),
        ));
        assert_eq!(
            c.tunnel.relay,
            Some(RelayConfig {
                turn: turn_server("relay.example.com", 3478, "wovenet", "pass-word-42")
            })
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(relay_of(&c).to_string(), "turn:relay.example.com:3478");
        assert_eq!(relay_of(&c).ip(), None);

        for (url, host, port, shown) in [
            (
                "TURN:192.0.2.7:3479?transport=udp",
                "192.0.2.7",
                3479,
                "turn:192.0.2.7:3479",
            ),
            (
                "turn:[2001:DB8::7]",
                "2001:db8::7",
                3478,
                "turn:[2001:db8::7]:3478",
            ),
            (
                "Turn:[2001:db8::7]:5349?Transport=UDP",
                "2001:db8::7",
                5349,
                "turn:[2001:db8::7]:5349",
            ),
            (
                "turn:2001:db8::7",
                "2001:db8::7",
                3478,
                "turn:[2001:db8::7]:3478",
            ),
            (
                "turn:relay-1.example.com:65535",
                "relay-1.example.com",
                65535,
                "turn:relay-1.example.com:65535",
            ),
            ("turn:127.0.0.1:1", "127.0.0.1", 1, "turn:127.0.0.1:1"),
        ] {
            let c = ok(&relayed(Some("::"), &turn_yaml(url, "u", "p")));
            let turn = relay_of(&c);
            assert_eq!(*turn, turn_server(host, port, "u", "p"), "{url}");
            assert_eq!(turn.to_string(), shown, "{url}");
            assert_eq!(turn.ip(), host.parse().ok(), "{url}");
        }
        // Numbers are text like everywhere else in the config.
        let c = ok(&relayed(
            None,
            "relay:\n  turn:\n    url: turn:relay.example.com\n    username: 1234\n    password: 5678",
        ));
        assert_eq!(
            *relay_of(&c),
            turn_server("relay.example.com", 3478, "1234", "5678")
        );
    }

    #[test]
    fn a_relay_needs_a_turn_server_with_url_username_and_password() {
        for relay in ["relay: {}", "relay:\n  turn:", "relay:\n  turn: ~"] {
            assert_eq!(
                errs(&relayed(None, relay)),
                ["tunnel.relay.turn: is required: a TURN server with url, username and password"],
                "{relay:?}"
            );
        }
        let all_three = [
            "tunnel.relay.turn.url: is required",
            "tunnel.relay.turn.username: is required",
            "tunnel.relay.turn.password: is required",
        ];
        assert_eq!(errs(&relayed(None, "relay:\n  turn: {}")), all_three);
        // An empty value is no value, as everywhere in the config.
        assert_eq!(errs(&relayed(None, &turn_yaml("", "", ""))), all_three);
        assert_eq!(
            errs(&relayed(
                None,
                "relay:\n  turn:\n    url: turn:relay.example.com\n    password: p"
            )),
            ["tunnel.relay.turn.username: is required"]
        );
        // `relay:` with nothing under it is not set.
        let c = ok(&relayed(None, "relay:"));
        assert_eq!(c.tunnel.relay, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(ok("").tunnel.relay, None);
    }

    #[test]
    fn bad_turn_urls_are_refused_with_reasons() {
        let form = "expected 'turn:HOST[:PORT]', e.g. 'turn:relay.example.com:3478'";
        let turns = "'turns:' (TLS to the TURN server) is not supported: the relayed QUIC \
                     traffic is already encrypted end to end; use 'turn:'";
        let udp = "only UDP relays are supported (write '?transport=udp' or nothing)";
        for (url, reason) in [
            ("turns:relay.example.com", format!("'turns:relay.example.com': {turns}")),
            (
                "TURNS:relay.example.com:5349?transport=tcp",
                format!("'TURNS:relay.example.com:5349?transport=tcp': {turns}"),
            ),
            (
                "stun:relay.example.com",
                format!("'stun:relay.example.com' is not a TURN URL: {form}"),
            ),
            (
                "relay.example.com:3478",
                format!("'relay.example.com:3478' is not a TURN URL: {form}"),
            ),
            (
                "[2001:db8::1]:3478",
                format!("'[2001:db8::1]:3478' is not a TURN URL: {form}"),
            ),
            (
                "turn://relay.example.com:3478",
                format!(
                    "'turn://relay.example.com:3478' has '//' after the scheme, which TURN URLs do not (RFC 7065): {form}"
                ),
            ),
            (
                "turn:relay.example.com?transport=tcp",
                format!("'turn:relay.example.com?transport=tcp' asks for transport 'tcp': {udp}"),
            ),
            (
                "turn:relay.example.com?TRANSPORT=tls",
                format!("'turn:relay.example.com?TRANSPORT=tls' asks for transport 'tls': {udp}"),
            ),
            (
                "turn:relay.example.com?transport=",
                format!("'turn:relay.example.com?transport=' asks for transport '': {udp}"),
            ),
            (
                "turn:relay.example.com?transport=udp&ttl=1",
                "'turn:relay.example.com?transport=udp&ttl=1' has the query '?transport=udp&ttl=1'; the only one accepted is '?transport=udp'".to_owned(),
            ),
            (
                "turn:relay.example.com?",
                "'turn:relay.example.com?' has the query '?'; the only one accepted is '?transport=udp'".to_owned(),
            ),
            ("turn:", format!("'turn:' has no host: {form}")),
            ("turn:?transport=udp", format!("'turn:?transport=udp' has no host: {form}")),
            // The host and port follow the STUN server rules.
            (
                "turn:0.0.0.0",
                "'turn:0.0.0.0': '0.0.0.0' is the unspecified address, not a TURN server".to_owned(),
            ),
            (
                "turn:[::]:3478",
                "'turn:[::]:3478': '::' is the unspecified address, not a TURN server".to_owned(),
            ),
            (
                "turn:224.0.0.1",
                "'turn:224.0.0.1': '224.0.0.1' is a multicast address, not a TURN server".to_owned(),
            ),
            (
                "turn:255.255.255.255:3478",
                "'turn:255.255.255.255:3478': '255.255.255.255' is the broadcast address, not a TURN server".to_owned(),
            ),
            (
                "turn:relay.example.com:0",
                "'turn:relay.example.com:0': port '0' is out of range 1..=65535".to_owned(),
            ),
            (
                "turn:relay.example.com:65536",
                "'turn:relay.example.com:65536': port '65536' is out of range 1..=65535".to_owned(),
            ),
            (
                "turn:relay.example.com:",
                "'turn:relay.example.com:' has an empty port after ':'".to_owned(),
            ),
            (
                "turn:relay.example.com:udp",
                "'turn:relay.example.com:udp': 'udp' is not a port number".to_owned(),
            ),
            (
                "turn:2001:db8::zz:3478",
                "'turn:2001:db8::zz:3478' is not an IPv6 address; with a port, an IPv6 address is written in brackets, e.g. '[2001:db8::1]:3478'".to_owned(),
            ),
            (
                "turn:[2001:db8::1",
                "'turn:[2001:db8::1' has an unclosed '[' around the IPv6 address".to_owned(),
            ),
            (
                "turn:[2001:db8::1]3478",
                "'turn:[2001:db8::1]3478' has text after ']' that is not ':PORT'".to_owned(),
            ),
            (
                "turn:[relay.example.com]:3478",
                "'turn:[relay.example.com]:3478': 'relay.example.com' is not an IPv6 address".to_owned(),
            ),
            (
                "turn:relay_1.example.com",
                "'turn:relay_1.example.com': 'relay_1.example.com' is not an IP address or a host name: '_' is not allowed (letters, digits, '-' and '.' only)".to_owned(),
            ),
            (
                "turn:relay.example.com/turn",
                "'turn:relay.example.com/turn': 'relay.example.com/turn' is not an IP address or a host name: '/' is not allowed (letters, digits, '-' and '.' only)".to_owned(),
            ),
            (
                "turn:10.0.0.256",
                "'turn:10.0.0.256': '10.0.0.256' is neither an IP address nor a host name (its last label is all digits)".to_owned(),
            ),
        ] {
            assert_eq!(
                errs(&relayed(Some("::"), &turn_yaml(url, "u", "p"))),
                [format!("tunnel.relay.turn.url: {reason}")],
                "{url:?}"
            );
        }
    }

    #[test]
    fn turn_username_and_password_are_bounded() {
        let max = "a".repeat(255);
        let c = ok(&relayed(
            None,
            &turn_yaml("turn:relay.example.com", &max, &max),
        ));
        assert_eq!(relay_of(&c).username, max);
        assert_eq!(relay_of(&c).password.0.as_str(), max);

        let over = "a".repeat(256);
        assert_eq!(
            errs(&relayed(
                None,
                &turn_yaml("turn:relay.example.com", &over, &over)
            )),
            [
                "tunnel.relay.turn.username: must be at most 255 bytes, got 256",
                "tunnel.relay.turn.password: must be at most 255 bytes, got 256 bytes",
            ]
        );
        // Bytes, not characters: 128 two-byte characters are 256 bytes.
        let wide = "é".repeat(128);
        assert_eq!(
            errs(&relayed(
                None,
                &turn_yaml("turn:relay.example.com", &wide, "p")
            )),
            ["tunnel.relay.turn.username: must be at most 255 bytes, got 256"]
        );
        for name in ["wove\\tnet", "wovenet\\n", "\\x7fwovenet", "wove\\u0085net"] {
            assert_eq!(
                errs(&relayed(
                    None,
                    &turn_yaml("turn:relay.example.com", name, "p")
                )),
                ["tunnel.relay.turn.username: must not contain control characters"],
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_turn_password_never_appears_in_errors_warnings_or_debug_output() {
        const SECRET: &str = "S3cr3t-Turn";
        let mut failures: Vec<(String, ConfigError)> = Vec::new();
        let mut fail = |text: String| {
            let e = load_str(&yaml(&text)).expect_err("must fail");
            failures.push((text, e));
        };
        // Too long.
        fail(relayed(
            None,
            &turn_yaml("turn:relay.example.com", "u", &SECRET.repeat(30)),
        ));
        // Credentials written into the URL.
        for url in [
            format!("turn:wovenet:{SECRET}@relay.example.com"),
            format!("turns:wovenet:{SECRET}@relay.example.com"),
            format!("turn://{SECRET}@relay.example.com"),
        ] {
            fail(relayed(None, &turn_yaml(&url, "u", "p")));
        }
        // A URL-with-credentials string where a section belongs, a password
        // that is not a single value.
        fail(relayed(
            None,
            &format!("relay:\n  turn: turn:wovenet:{SECRET}@relay.example.com"),
        ));
        fail(relayed(
            None,
            &format!("relay: turn:wovenet:{SECRET}@relay.example.com"),
        ));
        fail(relayed(
            None,
            &format!(
                "relay:\n  turn:\n    url: turn:relay.example.com\n    username: u\n    password: [{SECRET}]"
            ),
        ));
        for (text, e) in &failures {
            assert!(!e.to_string().contains(SECRET), "{text}\n{e}");
            assert!(!format!("{e:?}").contains(SECRET), "{text}\n{e:?}");
        }
        let messages: Vec<String> = failures.iter().map(|(_, e)| e.to_string()).collect();
        let hidden = "must not hold credentials ('user@' or 'user:password@'): set \
                      tunnel.relay.turn.username and tunnel.relay.turn.password instead (the \
                      URL is not shown because it may hold the password)";
        assert_eq!(
            messages,
            [
                "tunnel.relay.turn.password: must be at most 255 bytes, got 330 bytes".to_owned(),
                format!("tunnel.relay.turn.url: {hidden}"),
                format!("tunnel.relay.turn.url: {hidden}"),
                format!("tunnel.relay.turn.url: {hidden}"),
                "tunnel.relay.turn: has the wrong type (value not shown because it may be secret)"
                    .to_owned(),
                "tunnel.relay: has the wrong type (value not shown because it may be secret)"
                    .to_owned(),
                "tunnel.relay.turn.password: has the wrong type (value not shown because it may be secret)"
                    .to_owned(),
            ]
        );

        // Loaded: not in Debug, Display or warnings, neither validated nor raw.
        for text in [
            relayed(None, &turn_yaml("turn:relay.example.com", "u", SECRET)),
            format!(
                "tunnel:\n  {}\n",
                turn_yaml("turn:relay.example.com", "u", SECRET).replace('\n', "\n  ")
            ),
        ] {
            let c = ok(&text);
            assert_eq!(relay_of(&c).password.0.as_str(), SECRET);
            assert!(!format!("{c:?}").contains(SECRET), "{c:?}");
            assert!(!relay_of(&c).to_string().contains(SECRET));
            assert!(c.warnings.iter().all(|w| !w.contains(SECRET)));
            let raw: raw::Config = serde_yaml::from_str(&yaml(&text)).expect("raw parse");
            assert!(!format!("{raw:?}").contains(SECRET));
        }
    }

    #[test]
    fn a_relay_without_a_hole_punching_socket_is_kept_with_a_warning() {
        let warning =
            "tunnel.relay: ignored because no localSockets entry is in hole-punching mode";
        let relay = turn_yaml("turn:[2001:db8::1]", "u", "p").replace('\n', "\n  ");
        // A dial-only site, and a site whose only socket has a fixed port
        // forward: neither punches, so neither relays (whatever the family).
        for text in [
            format!("tunnel:\n  {relay}\n"),
            format!(
                "tunnel:\n  localSockets:\n  - mode: port-forwarding\n    publicAddress: 192.0.2.9\n    publicPort: 1\n    listenPort: 2\n  {relay}\n"
            ),
        ] {
            let c = ok(&text);
            assert_eq!(c.warnings, [warning], "{text}");
            assert_eq!(*relay_of(&c), turn_server("2001:db8::1", 3478, "u", "p"));
        }
    }

    #[test]
    fn a_turn_server_address_must_be_reachable_from_every_hole_punching_socket() {
        let tail = "(tunnel.localSockets[0] is in hole-punching mode and takes its relayed address from this server)";
        assert_eq!(
            errs(&relayed(None, &turn_yaml("turn:[2001:db8::1]", "u", "p"))),
            [format!(
                "tunnel.relay.turn.url: 'turn:[2001:db8::1]:3478' is an IPv6 address, which a socket listening on the IPv4 address '0.0.0.0' cannot reach; set listenAddress to '::' or an IPv6 address of this host {tail}"
            )]
        );
        assert_eq!(
            errs(&relayed(
                Some("2001:db8::5"),
                &turn_yaml("turn:[::ffff:192.0.2.1]", "u", "p")
            )),
            [format!(
                "tunnel.relay.turn.url: 'turn:[::ffff:192.0.2.1]:3478' is an IPv4 address, which a socket listening on the IPv6 address '2001:db8::5' cannot reach; set listenAddress to '::' or an IPv4 address of this host {tail}"
            )]
        );
        // `::` is bound dual-stack; host names are resolved by the daemon.
        for url in [
            "turn:192.0.2.1",
            "turn:[2001:db8::1]",
            "turn:relay.example.com",
        ] {
            assert!(
                ok(&relayed(Some("::"), &turn_yaml(url, "u", "p")))
                    .tunnel
                    .relay
                    .is_some()
            );
        }
        assert!(
            ok(&relayed(
                Some("2001:db8::5"),
                &turn_yaml("turn:relay.example.com", "u", "p")
            ))
            .tunnel
            .relay
            .is_some()
        );
        // Each hole-punching socket is checked, other modes are not.
        let relay = turn_yaml("turn:[2001:db8::1]", "u", "p").replace('\n', "\n  ");
        let text = format!(
            "tunnel:\n  localSockets:\n  - mode: dedicated-address\n    listenAddress: 192.0.2.3\n    listenPort: 1\n  - mode: hole-punching\n    stunDetector:\n      servers: [stun.example.com]\n  - mode: hole-punching\n    listenAddress: \"::\"\n    stunDetector:\n      servers: [stun.example.com]\n  {relay}\n"
        );
        assert_eq!(
            errs(&text),
            [
                "tunnel.relay.turn.url: 'turn:[2001:db8::1]:3478' is an IPv6 address, which a socket listening on the IPv4 address '0.0.0.0' cannot reach; set listenAddress to '::' or an IPv6 address of this host (tunnel.localSockets[1] is in hole-punching mode and takes its relayed address from this server)"
            ]
        );
    }

    // --- exposed apps --------------------------------------------------------

    fn exposed(
        mode: Option<&str>,
        socket: Option<&str>,
        ports: &[&str],
        addrs: &[&str],
    ) -> raw::ExposedApp {
        let list =
            |l: &[&str]| (!l.is_empty()).then(|| l.iter().map(|s| Scalar::from(*s)).collect());
        raw::ExposedApp {
            mode: mode.map(Scalar::from),
            app_name: Some("app".into()),
            app_socket: socket.map(Scalar::from),
            port_range: list(ports),
            address_range: list(addrs),
            ..Default::default()
        }
    }

    fn messages(e: Vec<FieldError>) -> Vec<String> {
        e.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn single_mode_is_the_default_and_needs_an_app_socket() {
        let app =
            exposed_app(&exposed(None, Some("tcp:127.0.0.1:22"), &[], &[]), "").expect("valid");
        assert_eq!(
            app.target,
            ExposedTarget::Single(AppSocket::Tcp(sa("127.0.0.1:22")))
        );
        let app = exposed_app(
            &exposed(Some("Single"), Some("unix:/run/d.sock"), &[], &[]),
            "",
        )
        .expect("valid");
        assert_eq!(
            app.target,
            ExposedTarget::Single(AppSocket::Unix("/run/d.sock".into()))
        );
        assert_eq!(
            messages(exposed_app(&exposed(None, None, &[], &[]), "").expect_err("no socket")),
            ["appSocket: is required in single mode (tcp:IP:PORT, udp:IP:PORT or unix:PATH)"]
        );
        assert_eq!(
            messages(
                exposed_app(
                    &exposed(None, Some("tcp:127.0.0.1:0"), &[], &[]),
                    "localExposedApps[4]"
                )
                .expect_err("port 0")
            ),
            [
                "localExposedApps[4].appSocket: 'tcp:127.0.0.1:0' has port 0, which cannot be connected to"
            ]
        );
        assert_eq!(
            messages(exposed_app(&exposed(Some("many"), None, &[], &[]), "x").expect_err("mode")),
            ["x.mode: 'many' is not a mode, expected 'single' or 'range'"]
        );
    }

    /// Regression: names with bidi controls or zero-width characters were
    /// accepted, so a peer could show up as another site's name or reorder
    /// the columns of a row in the console, `wovenetctl` and logs.
    #[test]
    fn names_with_invisible_or_bidi_characters_are_refused() {
        for c in [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200E}',
            '\u{200F}',
            '\u{061C}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{2028}',
            '\u{2029}',
            '\u{E0041}',
        ] {
            let name = format!("site{c}b");
            let text = yaml("").replace("siteName: site01", &format!("siteName: \"{name}\""));
            assert_eq!(
                errors_of(&text),
                [format!(
                    "siteName: site name must not contain invisible or text-direction characters, found U+{:04X}",
                    u32::from(c)
                )],
                "{name:?}"
            );
            let mut raw = exposed(None, Some("tcp:127.0.0.1:1"), &[], &[]);
            raw.app_name = Some(name.clone().into());
            assert_eq!(
                messages(exposed_app(&raw, "localExposedApps[0]").expect_err("invisible")),
                [format!(
                    "localExposedApps[0].appName: app name must not contain invisible or text-direction characters, found U+{:04X}",
                    u32::from(c)
                )]
            );
            let raw = remote(&name, "app", "tcp:127.0.0.1:9", None);
            assert_eq!(
                messages(remote_app(&raw, "remoteApps[0]").expect_err("invisible")),
                [format!(
                    "remoteApps[0].siteName: site name must not contain invisible or text-direction characters, found U+{:04X}",
                    u32::from(c)
                )]
            );
        }
        // Visible non-ASCII stays allowed.
        for ok in ["café", "东京-1", "Ωmega", "x\",a=\"b"] {
            assert_eq!(SiteName::new(ok).map(|n| n.to_string()), Ok(ok.to_owned()));
            assert_eq!(AppName::new(ok).map(|n| n.to_string()), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn exposed_app_name_is_required_and_bounded() {
        let mut raw = exposed(None, Some("tcp:127.0.0.1:1"), &[], &[]);
        raw.app_name = None;
        assert_eq!(
            messages(exposed_app(&raw, "a").expect_err("no name")),
            ["a.appName: is required"]
        );
        raw.app_name = Some("n".repeat(256).into());
        assert_eq!(
            messages(exposed_app(&raw, "a").expect_err("long")),
            ["a.appName: app name must be at most 255 bytes, got 256"]
        );
    }

    #[test]
    fn range_mode_parses_ports_and_addresses() {
        let app = exposed_app(
            &exposed(
                Some("range"),
                None,
                &["5900", "5901-5990", " 22 - 23 "],
                &["10.0.0.6", "10.0.2.9/24", "::1", "2001:db8::/32"],
            ),
            "",
        )
        .expect("valid");
        let ExposedTarget::Range {
            ports, addresses, ..
        } = app.target
        else {
            panic!("not a range app");
        };
        assert_eq!(
            ports,
            [
                PortRange {
                    start: 5900,
                    end: 5900
                },
                PortRange {
                    start: 5901,
                    end: 5990
                },
                PortRange { start: 22, end: 23 },
            ]
        );
        let shown: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["10.0.0.6/32", "10.0.2.0/24", "::1/128", "2001:db8::/32"]
        );
    }

    #[test]
    fn range_mode_needs_both_ranges_and_reports_each_bad_entry() {
        assert_eq!(
            messages(exposed_app(&exposed(Some("range"), None, &[], &[]), "e").expect_err("empty")),
            [
                "e.portRange: is required in range mode (e.g. ['5900', '5901-5990'])",
                "e.addressRange: is required in range mode (e.g. ['10.0.0.6', '10.0.2.0/24'])",
            ]
        );
        assert_eq!(
            messages(
                exposed_app(
                    &exposed(
                        Some("range"),
                        None,
                        &["0", "10-9", "65536", "a-b", "1"],
                        &["10.0.0.300", "10.0.0.0/8"]
                    ),
                    "e"
                )
                .expect_err("bad entries")
            ),
            [
                "e.portRange[0]: port '0' in '0' is out of range 1..=65535",
                "e.portRange[1]: '10-9' starts after it ends",
                "e.portRange[2]: port '65536' in '65536' is out of range 1..=65535",
                "e.portRange[3]: 'a-b' is not a port or port range (e.g. '5900' or '5901-5990')",
                "e.addressRange[0]: '10.0.0.300' is not an IP address or CIDR (e.g. '10.0.2.0/24')",
            ]
        );
    }

    #[test]
    fn app_socket_of_a_range_app_is_ignored_with_a_warning() {
        let c = ok(
            "localExposedApps:\n- appName: r\n  mode: range\n  appSocket: tcp:127.0.0.1:1\n  portRange: [1]\n  addressRange: [127.0.0.1]\n- appName: s\n  appSocket: tcp:127.0.0.1:2\n  portRange: [1]\n",
        );
        assert_eq!(
            c.warnings,
            [
                "localExposedApps[0].appSocket: ignored in range mode",
                "localExposedApps[1].portRange: ignored in single mode",
            ]
        );
    }

    #[test]
    fn port_range_round_trips_through_text() {
        for text in ["1", "5900-5990", "65535"] {
            assert_eq!(
                PortRange::from_str(text).map(|r| r.to_string()),
                Ok(text.to_owned())
            );
        }
        assert!(PortRange::from_str("5-5").is_ok_and(|r| r.contains(5) && !r.contains(6)));
    }

    #[test]
    fn duplicate_exposed_app_names_are_errors() {
        assert_eq!(
            errs(
                "localExposedApps:\n- appName: a\n  appSocket: tcp:127.0.0.1:1\n- appName: b\n  appSocket: tcp:127.0.0.1:2\n- appName: a\n  appSocket: unix:/x\n"
            ),
            [
                "localExposedApps[2].appName: duplicate app name 'a' (already used by localExposedApps[0])"
            ]
        );
    }

    #[test]
    fn allowed_sites_default_to_every_member_and_keep_their_order() {
        let c = ok(
            "localExposedApps:\n- appName: a\n  appSocket: tcp:127.0.0.1:1\n- appName: b\n  appSocket: tcp:127.0.0.1:2\n  allowedSites: [s3, s2]\n- appName: c\n  appSocket: tcp:127.0.0.1:3\n  allowedSites: []\n- appName: d\n  appSocket: tcp:127.0.0.1:4\n  ALLOWEDSITES: s2\n",
        );
        let site = |s: &str| SiteName::new(s).unwrap();
        assert!(c.exposed_apps[0].allowed_sites.is_empty());
        assert!(c.exposed_apps[0].allows(&site("anyone")));
        assert!(!c.exposed_apps[0].is_restricted());
        assert_eq!(c.exposed_apps[1].allowed_sites, [site("s3"), site("s2")]);
        assert!(c.exposed_apps[1].allows(&site("s2")));
        assert!(!c.exposed_apps[1].allows(&site("s4")));
        assert!(c.exposed_apps[1].is_restricted());
        assert!(c.exposed_apps[2].allowed_sites.is_empty());
        // One bare name is a one-entry list, never split on commas.
        assert_eq!(c.exposed_apps[3].allowed_sites, [site("s2")]);
        let c = ok(
            "localExposedApps:\n- appName: a\n  appSocket: tcp:127.0.0.1:1\n  allowedSites: \"x,y\"\n",
        );
        assert_eq!(c.exposed_apps[0].allowed_sites, [site("x,y")]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn allowed_sites_must_be_valid_distinct_other_sites() {
        assert_eq!(
            errs(
                "localExposedApps:\n- appName: a\n  appSocket: tcp:127.0.0.1:1\n- appName: b\n  appSocket: tcp:127.0.0.1:2\n  allowedSites: [s2, \"a/b\", s2, \"\", site01]\n- appName: c\n  appSocket: tcp:127.0.0.1:3\n  allowedSites: [s2, site01]\n"
            ),
            [
                "localExposedApps[1].allowedSites[1]: site name 'a/b' must not contain '/', '+' or '#'",
                "localExposedApps[1].allowedSites[2]: duplicate site 's2' (already listed at localExposedApps[1].allowedSites[0])",
                "localExposedApps[1].allowedSites[3]: site name must not be empty",
                "localExposedApps[2].allowedSites[1]: 'site01' is this site's own name; a site cannot open streams to itself",
            ]
        );
        // The live API's validator: same rules, paths relative to the app;
        // the own name is checked by whoever knows it.
        let mut raw = exposed(None, Some("tcp:127.0.0.1:1"), &[], &[]);
        raw.allowed_sites = Some(vec!["ok".into(), "\u{200b}x".into()]);
        assert_eq!(
            messages(exposed_app(&raw, "").expect_err("invisible")),
            [
                "allowedSites[1]: site name must not contain invisible or text-direction characters, found U+200B"
            ]
        );
        raw.allowed_sites = Some(vec!["ok".into(), "me".into()]);
        let app = exposed_app(&raw, "").expect("valid without the own-name rule");
        let me = SiteName::new("me").unwrap();
        assert_eq!(
            own_site_allowed(&app, &me, "").map(|e| e.to_string()),
            Some(
                "allowedSites[1]: 'me' is this site's own name; a site cannot open streams to itself"
                    .to_owned()
            )
        );
        assert_eq!(
            own_site_allowed(&app, &SiteName::new("other").unwrap(), ""),
            None
        );
    }

    #[test]
    fn at_most_1024_allowed_sites() {
        let names = |n: usize| {
            (0..n)
                .map(|i| format!("s{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let c = ok(&format!(
            "localExposedApps:\n- appName: a\n  appSocket: tcp:127.0.0.1:1\n  allowedSites: [{}]\n",
            names(MAX_ALLOWED_SITES)
        ));
        assert_eq!(c.exposed_apps[0].allowed_sites.len(), MAX_ALLOWED_SITES);
        assert_eq!(
            errs(&format!(
                "localExposedApps:\n- appName: a\n  appSocket: tcp:127.0.0.1:1\n  allowedSites: [{}]\n",
                names(MAX_ALLOWED_SITES + 1)
            )),
            ["localExposedApps[0].allowedSites: lists 1025 sites, at most 1024 are allowed"]
        );
    }

    #[test]
    fn limits_default_when_unset_and_parse_when_set() {
        let c = ok("");
        assert_eq!(c.tunnel.max_streams_per_peer, DEFAULT_STREAMS_PER_PEER);
        let c = ok(
            "tunnel:\n  maxStreamsPerPeer: 64\nlocalExposedApps:\n- appName: a\n  appSocket: tcp:127.0.0.1:1\n  maxConnections: \"2\"\n- appName: b\n  appSocket: tcp:127.0.0.1:1\nremoteApps:\n- siteName: s2\n  appName: a\n  localSocket: tcp:127.0.0.1:2\n  MAXCONNECTIONS: 1000000\n",
        );
        assert_eq!(c.tunnel.max_streams_per_peer, 64);
        assert_eq!(c.exposed_apps[0].max_connections, Some(2));
        assert_eq!(c.exposed_apps[0].connection_limit(), 2);
        assert_eq!(c.exposed_apps[1].max_connections, None);
        assert_eq!(
            c.exposed_apps[1].connection_limit(),
            crate::limit::DEFAULT_CONNECTIONS as usize
        );
        assert_eq!(c.remote_apps[0].max_connections, Some(MAX_LIMIT));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn limits_must_be_whole_numbers_from_1_to_a_million() {
        assert_eq!(
            errs("tunnel:\n  maxStreamsPerPeer: 0\n"),
            ["tunnel.maxStreamsPerPeer: '0' is out of range 1..=1000000"]
        );
        assert_eq!(
            errs(
                "localExposedApps:\n- appName: a\n  appSocket: tcp:127.0.0.1:1\n  maxConnections: 1000001\nremoteApps:\n- siteName: s2\n  appName: a\n  localSocket: tcp:127.0.0.1:2\n  maxConnections: many\n- siteName: s2\n  appName: a\n  localSocket: tcp:127.0.0.1:3\n  maxConnections: 1.5\n"
            ),
            [
                "localExposedApps[0].maxConnections: '1000001' is out of range 1..=1000000",
                "remoteApps[0].maxConnections: 'many' is not a whole number (1..=1000000)",
                "remoteApps[1].maxConnections: '1.5' is not a whole number (1..=1000000)",
            ]
        );
        let mut raw = exposed(None, Some("tcp:127.0.0.1:1"), &[], &[]);
        raw.max_connections = Some("-3".into());
        assert_eq!(
            messages(exposed_app(&raw, "").expect_err("negative")),
            ["maxConnections: '-3' is out of range 1..=1000000"]
        );
        let mut raw = remote("s2", "web", "tcp:127.0.0.1:1", None);
        raw.max_connections = Some("".into());
        assert_eq!(
            remote_app(&raw, "")
                .expect("empty means unset")
                .max_connections,
            None
        );
    }

    #[test]
    fn bandwidth_limits_are_read_from_the_file_on_both_kinds_of_app() {
        let c = ok(concat!(
            "localExposedApps:\n",
            "- {appName: a, appSocket: tcp:127.0.0.1:1, bandwidthLimit: 10MiB/s}\n",
            "- {appName: b, appSocket: tcp:127.0.0.1:1}\n",
            "remoteApps:\n",
            "- {siteName: s2, appName: a, localSocket: tcp:127.0.0.1:2, BANDWIDTHLIMIT: 100Mbit/s}\n",
        ));
        let bytes = |l: Option<BandwidthLimit>| l.map(BandwidthLimit::bytes_per_second);
        assert_eq!(bytes(c.exposed_apps[0].bandwidth_limit), Some(10 << 20));
        assert_eq!(c.exposed_apps[1].bandwidth_limit, None);
        assert_eq!(bytes(c.remote_apps[0].bandwidth_limit), Some(12_500_000));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn bad_bandwidth_limits_are_refused_naming_the_field() {
        let e = errs(concat!(
            "localExposedApps:\n",
            "- {appName: a, appSocket: tcp:127.0.0.1:1, bandwidthLimit: 0MiB/s}\n",
            "- {appName: b, appSocket: tcp:127.0.0.1:1, bandwidthLimit: '-5MiB/s'}\n",
            "- {appName: c, appSocket: tcp:127.0.0.1:1, bandwidthLimit: 10furlongs/s}\n",
            "remoteApps:\n",
            "- {siteName: s2, appName: a, localSocket: tcp:127.0.0.1:2, bandwidthLimit: 1000GiB/s}\n",
            "- {siteName: s2, appName: a, localSocket: tcp:127.0.0.1:3, bandwidthLimit: 10}\n",
        ));
        let prefixes = [
            "localExposedApps[0].bandwidthLimit: '0MiB/s' is zero",
            "localExposedApps[1].bandwidthLimit: '-5MiB/s' is negative",
            "localExposedApps[2].bandwidthLimit: '10furlongs/s' has an unknown unit 'furlongs'",
            "remoteApps[0].bandwidthLimit: '1000GiB/s' is above the largest limit",
            "remoteApps[1].bandwidthLimit: '10' is not a rate",
        ];
        assert_eq!(e.len(), prefixes.len(), "{e:?}");
        for (e, p) in e.iter().zip(prefixes) {
            assert!(e.starts_with(p), "{e:?} should start with {p:?}");
        }
        let mut raw = remote("s2", "web", "tcp:127.0.0.1:1", None);
        raw.bandwidth_limit = Some("".into());
        assert_eq!(
            remote_app(&raw, "")
                .expect("empty means unset")
                .bandwidth_limit,
            None
        );
    }

    // --- remote apps -----------------------------------------------------------

    fn remote(site: &str, app: &str, local: &str, app_socket: Option<&str>) -> raw::RemoteApp {
        let opt = |s: &str| (!s.is_empty()).then(|| Scalar::from(s));
        raw::RemoteApp {
            site_name: opt(site),
            app_name: opt(app),
            local_socket: opt(local),
            app_socket: app_socket.map(Scalar::from),
            ..Default::default()
        }
    }

    #[test]
    fn remote_app_needs_site_app_and_local_socket() {
        assert_eq!(
            messages(remote_app(&remote("", "", "", None), "remoteApps[3]").expect_err("empty")),
            [
                "remoteApps[3].siteName: is required",
                "remoteApps[3].appName: is required",
                "remoteApps[3].localSocket: is required",
            ]
        );
        let app = remote_app(&remote("s2", "web", "unix:/run/web.sock", None), "").expect("valid");
        assert_eq!(app.local_socket, AppSocket::Unix("/run/web.sock".into()));
        assert_eq!(app.app_socket, None);
    }

    #[test]
    fn udp_sockets_parse_and_keep_their_protocol() {
        let app =
            exposed_app(&exposed(None, Some("udp:127.0.0.1:53"), &[], &[]), "").expect("valid");
        assert_eq!(
            app.target,
            ExposedTarget::Single(AppSocket::Udp(sa("127.0.0.1:53")))
        );
        assert_eq!(app.protocol(), Protocol::Udp);
        assert_eq!(app.udp_idle(), Duration::from_secs(120));
        assert_eq!(
            messages(
                exposed_app(&exposed(None, Some("udp:127.0.0.1:0"), &[], &[]), "x")
                    .expect_err("port 0")
            ),
            ["x.appSocket: 'udp:127.0.0.1:0' has port 0, which cannot be connected to"]
        );
        assert_eq!(
            messages(
                exposed_app(&exposed(None, Some("udp:nowhere"), &[], &[]), "").expect_err("bad")
            ),
            [
                "appSocket: 'udp:nowhere' is not a valid udp socket, expected udp:IP:PORT (IPv6 as udp:[::1]:PORT)"
            ]
        );
        assert_eq!(
            "udp:[::1]:53".parse::<AppSocket>().unwrap().to_string(),
            "udp:[::1]:53"
        );
        let remote = remote_app(&remote("s", "dns", "udp:127.0.0.1:0", None), "").expect("valid");
        assert_eq!(remote.local_socket, AppSocket::Udp(sa("127.0.0.1:0")));
        assert_eq!(remote.protocol(), Protocol::Udp);
    }

    #[test]
    fn udp_idle_timeout_is_whole_seconds_and_names_its_field() {
        let mut raw = exposed(None, Some("udp:127.0.0.1:53"), &[], &[]);
        raw.udp_idle_timeout = Some("5".into());
        assert_eq!(
            exposed_app(&raw, "").expect("valid").udp_idle_timeout,
            Some(Duration::from_secs(5))
        );
        for bad in ["0", "86401", "2.5", "-1", "1m"] {
            raw.udp_idle_timeout = Some(bad.into());
            assert_eq!(
                messages(exposed_app(&raw, "localExposedApps[1]").expect_err(bad)),
                [format!(
                    "localExposedApps[1].udpIdleTimeout: '{bad}' is not a number of seconds from 1 to 86400"
                )]
            );
        }
        let mut raw = remote("s", "dns", "udp:127.0.0.1:5353", None);
        raw.udp_idle_timeout = Some("0".into());
        assert_eq!(
            messages(remote_app(&raw, "remoteApps[0]").expect_err("zero")),
            ["remoteApps[0].udpIdleTimeout: '0' is not a number of seconds from 1 to 86400"]
        );
        raw.udp_idle_timeout = Some("86400".into());
        assert_eq!(
            remote_app(&raw, "").expect("valid").udp_idle(),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn proxy_protocol_takes_v1_or_v2_on_stream_apps_and_names_its_field() {
        for (text, want) in [
            ("v1", ProxyProtocol::V1),
            ("V2", ProxyProtocol::V2),
            ("v2", ProxyProtocol::V2),
        ] {
            for socket in ["tcp:127.0.0.1:80", "unix:/run/web.sock"] {
                let mut raw = exposed(None, Some(socket), &[], &[]);
                raw.proxy_protocol = Some(text.into());
                assert_eq!(
                    exposed_app(&raw, "").expect(text).proxy_protocol,
                    Some(want)
                );
            }
        }
        // A tcp range app takes one too; absent or empty means off.
        let mut raw = exposed(Some("range"), None, &["80"], &["10.0.0.1"]);
        raw.proxy_protocol = Some("v2".into());
        assert_eq!(
            exposed_app(&raw, "").expect("range").proxy_protocol,
            Some(ProxyProtocol::V2)
        );
        raw.proxy_protocol = Some("".into());
        assert_eq!(exposed_app(&raw, "").expect("empty").proxy_protocol, None);
        raw.proxy_protocol = None;
        assert_eq!(exposed_app(&raw, "").expect("absent").proxy_protocol, None);

        for bad in ["v3", "yes", "1", "true"] {
            let mut raw = exposed(None, Some("tcp:127.0.0.1:80"), &[], &[]);
            raw.proxy_protocol = Some(bad.into());
            assert_eq!(
                messages(exposed_app(&raw, "localExposedApps[2]").expect_err(bad)),
                [format!(
                    "localExposedApps[2].proxyProtocol: '{bad}' is not a PROXY protocol version, expected 'v1' or 'v2'"
                )]
            );
        }
    }

    #[test]
    fn proxy_protocol_is_refused_on_udp_apps() {
        let want = |v: &str| {
            [format!(
                "localExposedApps[0].proxyProtocol: '{v}' cannot be used with a udp app: the PROXY \
                 protocol header is sent on byte streams (tcp and unix app sockets) only"
            )]
        };
        for v in ["v1", "v2"] {
            let mut raw = exposed(None, Some("udp:127.0.0.1:53"), &[], &[]);
            raw.proxy_protocol = Some(v.into());
            assert_eq!(
                messages(exposed_app(&raw, "localExposedApps[0]").expect_err(v)),
                want(v)
            );
            let mut raw = exposed(Some("range"), None, &["53"], &["10.0.0.1"]);
            raw.protocol = Some("udp".into());
            raw.proxy_protocol = Some(v.into());
            assert_eq!(
                messages(exposed_app(&raw, "localExposedApps[0]").expect_err(v)),
                want(v)
            );
        }
    }

    #[test]
    fn proxy_protocol_is_read_from_the_file() {
        let c = ok(concat!(
            "localExposedApps:\n",
            "  - {appName: web, appSocket: 'tcp:127.0.0.1:80', proxyProtocol: v2}\n",
            "  - {appName: ssh, appSocket: 'tcp:127.0.0.1:22'}\n",
        ));
        assert_eq!(c.exposed_apps[0].proxy_protocol, Some(ProxyProtocol::V2));
        assert_eq!(c.exposed_apps[1].proxy_protocol, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn udp_keys_are_read_from_the_file() {
        let c = ok(concat!(
            "localExposedApps:\n",
            "  - {appName: lan, mode: range, protocol: udp, portRange: ['53'], addressRange: ['10.0.0.1'], udpIdleTimeout: 30}\n",
            "remoteApps:\n",
            "  - {siteName: s2, appName: dns, localSocket: 'udp:127.0.0.1:5353', udpIdleTimeout: 7}\n",
        ));
        assert_eq!(c.exposed_apps[0].protocol(), Protocol::Udp);
        assert_eq!(c.exposed_apps[0].udp_idle(), Duration::from_secs(30));
        assert_eq!(c.remote_apps[0].udp_idle(), Duration::from_secs(7));
    }

    #[test]
    fn range_apps_take_a_protocol() {
        let mut raw = exposed(Some("range"), None, &["53"], &["10.0.0.0/8"]);
        let app = exposed_app(&raw, "").expect("valid");
        assert_eq!(app.protocol(), Protocol::Tcp);
        raw.protocol = Some("UDP".into());
        assert_eq!(
            exposed_app(&raw, "").expect("valid").protocol(),
            Protocol::Udp
        );
        raw.protocol = Some("sctp".into());
        assert_eq!(
            messages(exposed_app(&raw, "a").expect_err("sctp")),
            ["a.protocol: 'sctp' is not a protocol, expected 'tcp' or 'udp'"]
        );
    }

    #[test]
    fn remote_app_target_protocol_must_match_the_local_socket() {
        let app = remote_app(
            &remote("s", "dns", "udp:127.0.0.1:5353", Some("udp:10.0.0.53:53")),
            "",
        )
        .expect("valid");
        assert_eq!(app.app_socket, Some(sa("10.0.0.53:53")));
        assert_eq!(app.app_socket_text().as_deref(), Some("udp:10.0.0.53:53"));
        assert_eq!(
            messages(
                remote_app(
                    &remote("s", "dns", "udp:127.0.0.1:5353", Some("tcp:10.0.0.53:53")),
                    ""
                )
                .expect_err("mixed")
            ),
            [
                "appSocket: 'tcp:10.0.0.53:53' must be udp:IP:PORT like localSocket: a tcp target needs a tcp localSocket"
            ]
        );
        assert_eq!(
            messages(
                remote_app(
                    &remote("s", "dns", "tcp:127.0.0.1:5353", Some("udp:10.0.0.53:53")),
                    ""
                )
                .expect_err("mixed")
            ),
            [
                "appSocket: 'udp:10.0.0.53:53' must be tcp:IP:PORT like localSocket: a udp target needs a udp localSocket"
            ]
        );
    }

    #[test]
    fn remote_app_socket_must_be_tcp() {
        let app = remote_app(
            &remote("s", "vdi", "tcp:127.0.0.1:5900", Some("tcp:10.0.2.1:5901")),
            "",
        )
        .expect("valid");
        assert_eq!(app.app_socket, Some(sa("10.0.2.1:5901")));
        assert_eq!(
            messages(
                remote_app(
                    &remote("s", "vdi", "tcp:127.0.0.1:5900", Some("unix:/x")),
                    ""
                )
                .expect_err("unix")
            ),
            [
                "appSocket: 'unix:/x' must be tcp:IP:PORT: it names a TCP target inside the remote range app"
            ]
        );
        assert_eq!(
            messages(
                remote_app(
                    &remote("s", "vdi", "tcp:localhost:1", Some("tcp:10.0.2.1:0")),
                    ""
                )
                .expect_err("bad")
            ),
            [
                "localSocket: 'tcp:localhost:1' is not a valid tcp socket, expected tcp:IP:PORT (IPv6 as tcp:[::1]:PORT)",
                "appSocket: 'tcp:10.0.2.1:0' has port 0, which cannot be connected to",
            ]
        );
    }

    #[test]
    fn remote_apps_cannot_name_this_site_or_share_a_local_socket() {
        let e = errs(
            "remoteApps:\n- siteName: site01\n  appName: a\n  localSocket: tcp:127.0.0.1:1\n- siteName: s2\n  appName: a\n  localSocket: tcp:127.0.0.1:2\n- siteName: s3\n  appName: b\n  localSocket: tcp:127.0.0.1:2\n- siteName: s2\n  appName: a\n  localSocket: tcp:127.0.0.1:2\n",
        );
        assert_eq!(
            e,
            [
                "remoteApps[0].siteName: 'site01' is this site's own name; a remote app must be on another site",
                "remoteApps[2].localSocket: 'tcp:127.0.0.1:2' is already used by remoteApps[1]",
                "remoteApps[3]: duplicate remote app: same siteName, appName and localSocket as remoteApps[1]",
            ]
        );
    }

    #[test]
    fn ephemeral_local_sockets_may_repeat() {
        let c = ok(
            "remoteApps:\n- siteName: s2\n  appName: a\n  localSocket: tcp:127.0.0.1:0\n- siteName: s2\n  appName: b\n  localSocket: tcp:127.0.0.1:0\n",
        );
        assert_eq!(c.remote_apps.len(), 2);
    }

    #[test]
    fn the_same_range_app_can_be_served_on_several_local_sockets() {
        let c = ok(
            "remoteApps:\n- siteName: s3\n  appName: vdi\n  appSocket: tcp:10.0.2.123:25900\n  localSocket: tcp:10.0.2.2:5900\n- siteName: s3\n  appName: vdi\n  appSocket: tcp:10.0.2.123:35900\n  localSocket: tcp:10.0.2.3:5900\n",
        );
        assert_eq!(c.remote_apps.len(), 2);
    }

    // --- whole config ------------------------------------------------------------

    #[test]
    fn every_error_is_collected_not_just_the_first() {
        let text = "siteName: \"a/b\"\ncrypto:\n  key: short\nlogger:\n  level: chatty\nmessageChannel:\n  protocol: amqp\ntunnel:\n  localSockets:\n  - mode: dedicated-address\n  - mode: nope\nlocalExposedApps:\n- appName: x\nremoteApps:\n- appName: y\n";
        let e = errors_of(text);
        let paths: Vec<&str> = e
            .iter()
            .map(|l| l.split(": ").next().unwrap_or_default())
            .collect();
        assert_eq!(
            paths,
            [
                "siteName",
                "crypto.key",
                "logger.level",
                "messageChannel.protocol",
                "messageChannel.mqtt.brokerServer",
                "tunnel.localSockets[0].publicAddress",
                "tunnel.localSockets[0].publicPort",
                "tunnel.localSockets[1].mode",
                "localExposedApps[0].appSocket",
                "remoteApps[0].siteName",
                "remoteApps[0].localSocket",
            ],
            "{e:#?}"
        );
    }

    #[test]
    fn control_socket_is_optional() {
        assert_eq!(ok("").control.socket, None);
        assert_eq!(ok("control:\n  socket: \"\"\n").control.socket, None);
        assert_eq!(
            ok("control:\n  socket: /run/w.sock\n").control.socket,
            Some(PathBuf::from("/run/w.sock"))
        );
    }

    #[test]
    fn metrics_listen_is_optional_and_must_be_ip_port() {
        assert_eq!(ok("").metrics.listen, None);
        assert_eq!(ok("metrics:\n  listen: \"\"\n").metrics.listen, None);
        assert_eq!(
            ok("metrics:\n  listen: 127.0.0.1:9090\n").metrics.listen,
            Some("127.0.0.1:9090".parse().expect("addr"))
        );
        assert_eq!(
            ok("METRICS:\n  Listen: \"[::1]:0\"\n").metrics.listen,
            Some("[::1]:0".parse().expect("addr"))
        );
        assert_eq!(
            errors_of(&yaml("metrics:\n  listen: localhost:9090\n")),
            [
                "metrics.listen: 'localhost:9090' is not IP:PORT (e.g. 127.0.0.1:9090, IPv6 as [::1]:9090)"
            ]
        );
    }

    #[test]
    fn try_from_raw_matches_the_config_function() {
        let raw: raw::Config = serde_yaml::from_str(&yaml("")).expect("raw");
        let config = Config::try_from(raw).expect("valid");
        assert_eq!(config.site_name.as_str(), "site01");
        assert!(Config::try_from(raw::Config::default()).is_err());
    }

    const FP_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const FP_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn trust_defaults_to_pinned_with_no_sites() {
        let c = ok("");
        assert_eq!(c.trust.mode, TrustMode::Pinned);
        assert!(c.trust.sites.is_empty());
        assert!(c.warnings.iter().all(|w| !w.starts_with("trust")));
    }

    #[test]
    fn trust_modes_and_sites_parse_in_any_case() {
        let c = ok(&format!(
            "TRUST:\n  Mode: Strict\n  sites:\n    - siteName: b\n      identity: {FP_A}\n    - SITENAME: c\n      Identity: \"{}\"\n",
            FP_B.to_uppercase()
        ));
        assert_eq!(c.trust.mode, TrustMode::Strict);
        let listed: Vec<(String, String)> = c
            .trust
            .sites
            .iter()
            .map(|s| (s.site.to_string(), s.identity.to_string()))
            .collect();
        assert_eq!(
            listed,
            [("b".into(), FP_A.into()), ("c".into(), FP_B.into())]
        );
        assert_eq!(ok("trust:\n  mode: pinned\n").trust.mode, TrustMode::Pinned);
    }

    #[test]
    fn trust_errors_name_the_field() {
        assert_eq!(
            errors_of(&yaml("trust:\n  mode: paranoid\n")),
            ["trust.mode: 'paranoid' is not a trust mode (pinned, strict or open)"]
        );
        assert_eq!(
            errors_of(&yaml("trust:\n  mode: strict\n")),
            [
                "trust.sites: is required when trust.mode is strict: list every site allowed to join (siteName and the identity `wovenetd identity` prints on that site)"
            ]
        );
        let errs = errors_of(&yaml(&format!(
            "trust:\n  sites:\n    - siteName: b\n      identity: nope\n    - identity: {FP_A}\n    - siteName: c\n      identity: {FP_A}\n    - siteName: c\n      identity: {FP_B}\n    - siteName: \"a/b\"\n      identity: {FP_B}\n"
        )));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].starts_with("trust.sites[0].identity: 'nope' is not an identity fingerprint"),
            "{errs:?}"
        );
        assert_eq!(errs[1], "trust.sites[1].siteName: is required");
        assert_eq!(
            errs[2],
            "trust.sites[3].siteName: 'c' is already listed in trust.sites[2]"
        );
        assert!(errs[3].starts_with("trust.sites[4].siteName: "), "{errs:?}");
    }

    #[test]
    fn open_trust_warns_at_start() {
        let c = ok(&format!(
            "trust:\n  mode: open\n  sites:\n    - siteName: b\n      identity: {FP_A}\n"
        ));
        assert_eq!(c.trust.mode, TrustMode::Open);
        let trust: Vec<&String> = c
            .warnings
            .iter()
            .filter(|w| w.starts_with("trust"))
            .collect();
        assert_eq!(trust.len(), 2, "{trust:?}");
        assert!(trust[0].starts_with("trust.mode: open: site identities are not checked"));
        assert_eq!(trust[1], "trust.sites: ignored: trust.mode is open");
    }
}
