//! Serde mirror of the YAML config, before any validation.
//!
//! Every field is optional and every leaf is a lenient [`Scalar`], because the
//! original loader (viper + mapstructure, weakly typed) accepted `listenPort:
//! "5900"`, `siteName: 01` and `portRange: 5900-5990` alike; rejecting those here
//! would break working configs. All judgement (required fields, ranges,
//! defaults) belongs to [`super::validate`]; this module must not reject
//! anything a user could reasonably have meant, and must never print secrets.
//!
//! Keys are expected in their canonical camelCase spelling: [`super::load`]
//! rewrites any-case keys before these types see them.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use zeroize::Zeroizing;

/// A YAML scalar (string, number or boolean) kept as the text the user meant.
///
/// Numbers become their decimal text, so `publicPort: 25890` and
/// `publicPort: "25890"` are the same value, as they were for the original.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scalar(pub String);

impl Scalar {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, or `None` when it is empty: the original could not tell
    /// `key: ""` from a missing key, so both mean "not set".
    pub fn non_empty(&self) -> Option<&str> {
        if self.0.is_empty() {
            None
        } else {
            Some(&self.0)
        }
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Scalar {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<u16> for Scalar {
    fn from(n: u16) -> Self {
        Self(n.to_string())
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a single value (text or number)")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor).map(Self)
    }
}

/// A secret scalar (the passphrase, the MQTT password): zeroed on drop and
/// shown as `MASKED` by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretScalar(pub Zeroizing<String>);

impl fmt::Debug for SecretScalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl From<&str> for SecretScalar {
    fn from(s: &str) -> Self {
        Self(Zeroizing::new(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for SecretScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
            .map(|s| Self(Zeroizing::new(s)))
    }
}

/// A list of scalars that also accepts one bare scalar, split on commas, as
/// mapstructure's weak decoding did (`portRange: "5900,5901-5990"`).
fn scalar_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Scalar>>, D::Error> {
    d.deserialize_option(ListVisitor {
        split: true,
        expecting: "a list of values",
    })
}

/// A list of scalars that also accepts one bare scalar as a one-entry list,
/// never split: unlike ports, a site name may contain a comma.
fn name_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Scalar>>, D::Error> {
    d.deserialize_option(ListVisitor {
        split: false,
        expecting: "a list of names",
    })
}

/// The visitor of [`scalar_list`] and [`name_list`]: they differ only in
/// whether a bare string is split on commas.
struct ListVisitor {
    split: bool,
    expecting: &'static str,
}

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Option<Vec<Scalar>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Scalar>()? {
            out.push(item);
        }
        Ok(Some(out))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if !self.split {
            return Ok(Some(vec![Scalar(v.to_owned())]));
        }
        Ok(Some(
            v.split(',')
                .map(|part| Scalar(part.trim().to_owned()))
                .filter(|s| !s.0.is_empty())
                .collect(),
        ))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(vec![Scalar(v.to_string())]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(vec![Scalar(v.to_string())]))
    }
}

/// Whether a key was present at all, whatever its value (even null).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d)?;
    Ok(true)
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Config {
    /// `siteName`.
    pub site_name: Option<Scalar>,
    /// `crypto`.
    pub crypto: Option<Crypto>,
    /// `logger`.
    pub logger: Option<Logger>,
    /// `messageChannel`.
    pub message_channel: Option<MessageChannel>,
    /// `tunnel`.
    pub tunnel: Option<Tunnel>,
    /// `localExposedApps`.
    pub local_exposed_apps: Option<Vec<ExposedApp>>,
    /// `remoteApps`.
    pub remote_apps: Option<Vec<RemoteApp>>,
    /// `control` (new in this implementation).
    pub control: Option<Control>,
    /// `metrics` (new in this implementation).
    pub metrics: Option<Metrics>,
    /// `trust` (new in this implementation).
    pub trust: Option<Trust>,
    /// Whether the original's `restfulApi` section is present; its contents
    /// are never looked at, so nothing inside can make loading fail.
    #[serde(deserialize_with = "present")]
    pub restful_api: bool,
}

/// `crypto`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Crypto {
    /// `crypto.key`, the shared passphrase.
    pub key: Option<SecretScalar>,
}

/// `logger`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Logger {
    /// `trace|debug|info|warn|warning|error`, any case.
    pub level: Option<Scalar>,
    /// Log file; empty means stdout.
    pub file: Option<Scalar>,
    /// `json|text`.
    pub format: Option<Scalar>,
}

/// `messageChannel`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MessageChannel {
    /// Only `mqtt`.
    pub protocol: Option<Scalar>,
    /// `messageChannel.mqtt`.
    pub mqtt: Option<Mqtt>,
}

/// `messageChannel.mqtt`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Mqtt {
    /// `mqtt://`, `tcp://`, `mqtts://`, `ssl://` or `tls://` URL.
    pub broker_server: Option<Scalar>,
    /// Broadcast topic; empty means derived.
    pub topic: Option<Scalar>,
    /// Broker username.
    pub username: Option<Scalar>,
    /// Broker password.
    pub password: Option<SecretScalar>,
    /// Extra trusted CA (PEM) for an `mqtts://` broker.
    pub ca_file: Option<Scalar>,
    /// Run a broker inside the daemon.
    pub embedded_broker: Option<EmbeddedBroker>,
}

/// `messageChannel.mqtt.embeddedBroker`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EmbeddedBroker {
    /// `IP:PORT`.
    pub listen: Option<Scalar>,
}

/// `tunnel`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Tunnel {
    /// `tunnel.localSockets`.
    pub local_sockets: Option<Vec<LocalSocket>>,
    /// `cubic|bbr`.
    pub congestion_control: Option<Scalar>,
    /// Streams one peer may have open at once (new in this implementation).
    pub max_streams_per_peer: Option<Scalar>,
    /// Threads of the async runtime (new in this implementation).
    pub worker_threads: Option<Scalar>,
    /// Where hole-punching sockets relay when punching fails (new in this
    /// implementation).
    pub relay: Option<Relay>,
}

/// `tunnel.relay`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Relay {
    /// The TURN server.
    pub turn: Option<Turn>,
}

/// `tunnel.relay.turn`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Turn {
    /// `turn:HOST[:PORT][?transport=udp]` (RFC 7065).
    pub url: Option<Scalar>,
    /// Long-term credential username.
    pub username: Option<Scalar>,
    /// Long-term credential password.
    pub password: Option<SecretScalar>,
}

/// One `tunnel.localSockets[]` entry.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LocalSocket {
    /// `dedicated-address|port-forwarding|hole-punching`.
    pub mode: Option<Scalar>,
    /// Only `quic`.
    pub transport_protocol: Option<Scalar>,
    /// An IP, `autoHttpDetect` or `autoStunDetect`.
    pub public_address: Option<Scalar>,
    /// Port announced to other sites.
    pub public_port: Option<Scalar>,
    /// Address to bind.
    pub listen_address: Option<Scalar>,
    /// Port to bind.
    pub listen_port: Option<Scalar>,
    /// Used with `publicAddress: autoHttpDetect`.
    pub http_detector: Option<HttpDetector>,
    /// Used with `publicAddress: autoStunDetect` and in `hole-punching` mode
    /// (new in this implementation).
    pub stun_detector: Option<StunDetector>,
}

/// `tunnel.localSockets[].stunDetector`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StunDetector {
    /// `host:port` or `host` entries; a single comma-separated string works too.
    #[serde(deserialize_with = "scalar_list")]
    pub servers: Option<Vec<Scalar>>,
}

/// `tunnel.localSockets[].httpDetector`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpDetector {
    /// URL answering the public IP as text/plain.
    pub url: Option<Scalar>,
}

/// One `localExposedApps[]` entry; also what the control API builds from a
/// live "add exposed app" request.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExposedApp {
    /// `single` (default) or `range`.
    pub mode: Option<Scalar>,
    /// Unique name within the site.
    pub app_name: Option<Scalar>,
    /// `tcp:IP:PORT` or `unix:PATH` (single mode).
    pub app_socket: Option<Scalar>,
    /// Ports or `a-b` ranges (range mode).
    #[serde(deserialize_with = "scalar_list")]
    pub port_range: Option<Vec<Scalar>>,
    /// IPs or CIDRs (range mode).
    #[serde(deserialize_with = "scalar_list")]
    pub address_range: Option<Vec<Scalar>>,
    /// Streams open to the app at once (new in this implementation).
    pub max_connections: Option<Scalar>,
    /// Site names that may open streams to the app; absent or empty means
    /// every member (new in this implementation). One bare name works too.
    #[serde(deserialize_with = "name_list")]
    pub allowed_sites: Option<Vec<Scalar>>,
    /// Range mode: `tcp` (default) or `udp` targets (new in this implementation).
    pub protocol: Option<Scalar>,
    /// Seconds without a datagram after which a UDP flow ends (new in this implementation).
    pub udp_idle_timeout: Option<Scalar>,
    /// Bytes per second each way, e.g. `10MiB/s` (new in this implementation).
    pub bandwidth_limit: Option<Scalar>,
    /// `v1` or `v2`: send a PROXY protocol header to the app (new in this implementation).
    pub proxy_protocol: Option<Scalar>,
}

/// One `remoteApps[]` entry; also what the control API builds from a live
/// "add remote app" request.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RemoteApp {
    /// The site exposing the app.
    pub site_name: Option<Scalar>,
    /// The app's name there.
    pub app_name: Option<Scalar>,
    /// Where this site listens: `tcp:IP:PORT` or `unix:PATH`.
    pub local_socket: Option<Scalar>,
    /// For range apps, the target on the remote side: `tcp:IP:PORT`.
    pub app_socket: Option<Scalar>,
    /// Clients the local listener serves at once (new in this implementation).
    pub max_connections: Option<Scalar>,
    /// Seconds without a datagram after which a UDP flow ends (new in this implementation).
    pub udp_idle_timeout: Option<Scalar>,
    /// Bytes per second each way, e.g. `10MiB/s` (new in this implementation).
    pub bandwidth_limit: Option<Scalar>,
}

/// `control`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Control {
    /// Path of the control unix socket.
    pub socket: Option<Scalar>,
}

/// `metrics`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Metrics {
    /// `IP:PORT` serving `GET /metrics`; empty means off.
    pub listen: Option<Scalar>,
}

/// `trust`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Trust {
    /// `pinned` (default), `strict` or `open`.
    pub mode: Option<Scalar>,
    /// Sites and the identities they must present.
    pub sites: Option<Vec<TrustedSite>>,
}

/// `trust.sites[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TrustedSite {
    /// The site's name.
    pub site_name: Option<Scalar>,
    /// Its identity fingerprint, as `wovenetd identity` prints it.
    pub identity: Option<Scalar>,
}
