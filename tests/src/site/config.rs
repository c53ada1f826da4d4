//! The YAML document a test site runs with: built from a [`SiteBuilder`] as a JSON value (so
//! tests can tweak it, e.g. to make it invalid) and written as YAML. Pure: no processes.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::natrig::Netns;
use crate::sock::free_udp_port;

/// The key every test site uses unless told otherwise.
pub const DEFAULT_KEY: &str = "test-key-123";

/// Names of the files a site keeps in its directory.
pub(crate) const CONFIG_FILE: &str = "site.yaml";
pub(crate) const LOG_FILE: &str = "site.log";
pub(crate) const CONTROL_SOCKET: &str = "control.sock";

/// A string unique within this machine for a while: time, pid and a counter, in hex.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}{:x}{n:x}",
        nanos & 0xffff_ffff_ffff,
        std::process::id()
    )
}

/// A topic no other test uses: `wovenet-test/<unique>`.
pub fn random_topic() -> String {
    format!("wovenet-test/{}", unique_suffix())
}

/// Describes one site; [`SiteBuilder::spawn`](crate::SiteBuilder::spawn) starts it.
#[derive(Debug, Clone)]
pub struct SiteBuilder {
    pub(crate) name: String,
    key: String,
    topic: Option<String>,
    broker: Option<String>,
    embedded_broker: Option<SocketAddr>,
    pub(crate) sockets: Vec<u16>,
    /// `httpDetector.url` of the socket on that port (else `publicAddress: 127.0.0.1`).
    detectors: Vec<(u16, String)>,
    exposed: Vec<Value>,
    remotes: Vec<Value>,
    congestion: Option<String>,
    /// Other `tunnel.*` keys (e.g. `relay`).
    tunnel_extra: Vec<(String, Value)>,
    log_level: String,
    extra: Vec<(String, Value)>,
    pub(crate) binary: Option<PathBuf>,
    pub(crate) keep_on_panic: bool,
    /// Run wovenetd inside this network namespace (NAT rig).
    pub(crate) netns: Option<Netns>,
    /// Extra environment variables for the process (e.g. a debug-build test hook).
    pub(crate) env: Vec<(String, String)>,
    /// `tunnel.localSockets` as given, instead of loopback sockets on `sockets`.
    raw_sockets: Option<Vec<Value>>,
    /// The whole config as given (see [`Self::document_as`]).
    whole: Option<Value>,
}

impl SiteBuilder {
    /// A site called `name` with the default key, no topic, broker, sockets or apps yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key: DEFAULT_KEY.to_owned(),
            topic: None,
            broker: None,
            embedded_broker: None,
            sockets: Vec::new(),
            detectors: Vec::new(),
            raw_sockets: None,
            exposed: Vec::new(),
            remotes: Vec::new(),
            congestion: None,
            tunnel_extra: Vec::new(),
            log_level: "debug".to_owned(),
            extra: Vec::new(),
            binary: None,
            keep_on_panic: true,
            netns: None,
            env: Vec::new(),
            whole: None,
        }
    }

    /// `crypto.key`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// `messageChannel.mqtt.topic` (use a random one per test, see [`random_topic`]).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// `messageChannel.mqtt.brokerServer`, e.g. `mqtt://127.0.0.1:1883`.
    pub fn broker(mut self, url: impl Display) -> Self {
        self.broker = Some(url.to_string());
        self
    }

    /// `messageChannel.mqtt.embeddedBroker.listen`: this site also runs the broker.
    pub fn embedded_broker(mut self, listen: SocketAddr) -> Self {
        self.embedded_broker = Some(listen);
        self
    }

    /// Adds a `tunnel.localSockets` entry: dedicated-address QUIC on 127.0.0.1:`port`.
    /// Without any, [`Self::document`] adds one on a free UDP port.
    pub fn socket(mut self, port: u16) -> Self {
        self.sockets.push(port);
        self
    }

    /// Adds a `tunnel.localSockets` entry on 127.0.0.1:`port` whose public address is
    /// detected over HTTP (`publicAddress: autoHttpDetect`, `httpDetector.url: url`).
    pub fn detected_socket(mut self, port: u16, url: impl Display) -> Self {
        self.sockets.push(port);
        self.detectors.push((port, url.to_string()));
        self
    }

    /// `tunnel.localSockets` exactly as given (e.g. `hole-punching` entries, or `[]` for a
    /// dial-only site), instead of the loopback sockets of [`Self::socket`].
    pub fn local_sockets(mut self, sockets: Vec<Value>) -> Self {
        self.raw_sockets = Some(sockets);
        self
    }

    /// `localExposedApps`: a single-socket app (`tcp:IP:PORT` or `unix:PATH`).
    pub fn expose(mut self, app: &str, app_socket: impl Display) -> Self {
        self.exposed
            .push(json!({ "appName": app, "appSocket": app_socket.to_string() }));
        self
    }

    /// `localExposedApps`: a range app, e.g. ports `["5900", "20000-30000"]`, addresses
    /// `["127.0.0.1", "127.0.0.0/8"]`.
    pub fn expose_range(mut self, app: &str, ports: &[&str], addresses: &[&str]) -> Self {
        self.exposed.push(json!({
            "appName": app, "mode": "range", "portRange": ports, "addressRange": addresses,
        }));
        self
    }

    /// `remoteApps`: use `site`'s `app` through `local_socket` here.
    pub fn remote(mut self, site: &str, app: &str, local_socket: impl Display) -> Self {
        self.remotes.push(json!({
            "siteName": site, "appName": app, "localSocket": local_socket.to_string(),
        }));
        self
    }

    /// `remoteApps`: use `site`'s range `app`, targeting `app_socket` (`tcp:IP:PORT` on the far
    /// side), through `local_socket` here.
    pub fn remote_range(
        mut self,
        site: &str,
        app: &str,
        app_socket: impl Display,
        local_socket: impl Display,
    ) -> Self {
        self.remotes.push(json!({
            "siteName": site, "appName": app, "appSocket": app_socket.to_string(),
            "localSocket": local_socket.to_string(),
        }));
        self
    }

    /// `tunnel.congestionControl` (`cubic` or `bbr`).
    pub fn congestion(mut self, cc: &str) -> Self {
        self.congestion = Some(cc.to_owned());
        self
    }

    /// Sets `tunnel.KEY` (e.g. `relay`) to `value`.
    pub fn tunnel_option(mut self, key: &str, value: Value) -> Self {
        self.tunnel_extra.push((key.to_owned(), value));
        self
    }

    /// `logger.level` (default `debug`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// Sets a top-level config key to `value` (added last, so it replaces what the builder
    /// wrote), e.g. `.extra("metrics", json!({ "listen": "127.0.0.1:9100" }))`.
    pub fn extra(mut self, key: &str, value: Value) -> Self {
        self.extra.push((key.to_owned(), value));
        self
    }

    /// Runs with `doc` as the whole config (e.g. an example file moved onto loopback) instead
    /// of the document this builder writes: every other setting of the builder is ignored,
    /// except that `logger.file` points into the site's directory and `logger.format` is
    /// `json` (the harness waits on that log). No tunnel socket is added.
    pub fn document_as(mut self, doc: Value) -> Self {
        self.whole = Some(doc);
        self
    }

    /// Runs this program instead of the built `wovenetd` (harness self-tests use a fake).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Runs wovenetd inside network namespace `ns` (`ip netns exec`; see [`crate::natrig`]).
    /// Everything else stays the same: files and the control socket are on the shared
    /// filesystem, so [`crate::Api`] and [`crate::Ctl`] work from the test process. TCP
    /// addresses in the config (app sockets, listeners) are the namespace's own, so prefer
    /// `unix:` app sockets, or make sockets there with [`Netns::tcp_listener`].
    pub fn netns(mut self, ns: &Netns) -> Self {
        self.netns = Some(ns.clone());
        self
    }

    /// Sets an environment variable of the wovenetd process, e.g. a debug-build test hook
    /// such as `WOVENET_TEST_SERVE_UNOFFERED`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Whether a panicking test keeps the site's tempdir for inspection (default true).
    pub fn keep_files_on_panic(mut self, keep: bool) -> Self {
        self.keep_on_panic = keep;
        self
    }

    /// Adds a local socket on a free UDP port if none was configured; returns the ports.
    pub(crate) fn ensure_socket(&mut self) -> Vec<u16> {
        if self.sockets.is_empty() && self.raw_sockets.is_none() {
            self.sockets.push(free_udp_port());
        }
        self.sockets.clone()
    }

    /// The config document for a site whose files live in `dir`. Panics if neither a broker nor
    /// an embedded broker was set, or no topic was set: both are per-test choices.
    pub fn document(&mut self, dir: &Path) -> Value {
        if let Some(whole) = &self.whole {
            let mut doc = whole.clone();
            doc["logger"]["file"] = json!(dir.join(LOG_FILE).display().to_string());
            doc["logger"]["format"] = json!("json");
            return doc;
        }
        let sockets = self.ensure_socket();
        let topic = self.topic.clone().unwrap_or_else(|| {
            panic!(
                "site {}: no topic set; use Net::site or .topic(random_topic())",
                self.name
            )
        });
        let mut mqtt = Map::new();
        match (&self.broker, &self.embedded_broker) {
            (None, None) => panic!(
                "site {}: set .broker(url) or .embedded_broker(addr)",
                self.name
            ),
            (Some(url), _) => {
                mqtt.insert("brokerServer".into(), json!(url));
            }
            (None, Some(_)) => {}
        }
        mqtt.insert("topic".into(), json!(topic));
        if let Some(addr) = self.embedded_broker {
            mqtt.insert(
                "embeddedBroker".into(),
                json!({ "listen": addr.to_string() }),
            );
        }
        let local_sockets: Vec<Value> = match &self.raw_sockets {
            Some(raw) => raw.clone(),
            None => sockets
                .iter()
                .map(|p| {
                    let mut socket = json!({
                        "mode": "dedicated-address", "transportProtocol": "quic",
                        "publicAddress": "127.0.0.1", "listenPort": p,
                    });
                    if let Some((_, url)) = self.detectors.iter().find(|(d, _)| d == p) {
                        socket["publicAddress"] = json!("autoHttpDetect");
                        socket["httpDetector"] = json!({ "url": url });
                    }
                    socket
                })
                .collect(),
        };
        let mut tunnel = Map::new();
        tunnel.insert("localSockets".into(), Value::Array(local_sockets));
        if let Some(cc) = &self.congestion {
            tunnel.insert("congestionControl".into(), json!(cc));
        }
        for (k, v) in &self.tunnel_extra {
            tunnel.insert(k.clone(), v.clone());
        }
        let mut doc = json!({
            "siteName": self.name,
            "crypto": { "key": self.key },
            "logger": {
                "level": self.log_level,
                "file": dir.join(LOG_FILE).display().to_string(),
                "format": "json",
            },
            "messageChannel": { "protocol": "mqtt", "mqtt": Value::Object(mqtt) },
            "tunnel": Value::Object(tunnel),
            "control": { "socket": dir.join(CONTROL_SOCKET).display().to_string() },
        });
        if !self.exposed.is_empty() {
            doc["localExposedApps"] = Value::Array(self.exposed.clone());
        }
        if !self.remotes.is_empty() {
            doc["remoteApps"] = Value::Array(self.remotes.clone());
        }
        for (key, value) in &self.extra {
            doc[key.as_str()] = value.clone();
        }
        doc
    }

    /// Writes [`Self::document`] for `dir` to `dir/site.yaml` and returns its path (for
    /// `wovenetd check` tests).
    pub fn write_config(&mut self, dir: &Path) -> PathBuf {
        let doc = self.document(dir);
        write_yaml(&dir.join(CONFIG_FILE), &doc)
    }
}

/// Writes `doc` as YAML to `path`; returns `path`.
pub fn write_yaml(path: &Path, doc: &Value) -> PathBuf {
    let yaml = serde_yaml::to_string(doc).unwrap_or_else(|e| panic!("cannot render YAML: {e}"));
    std::fs::write(path, yaml).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_the_wovenet_config_shape() {
        let mut b = SiteBuilder::new("a")
            .topic("wovenet-test/x")
            .broker("mqtt://127.0.0.1:1883")
            .socket(4000)
            .socket(4001)
            .expose("echo", "tcp:127.0.0.1:7000")
            .expose_range("vnc", &["5900", "20000-30000"], &["127.0.0.1"])
            .remote("b", "echo", "unix:/tmp/e.sock")
            .remote_range("b", "vnc", "tcp:127.0.0.1:25000", "tcp:127.0.0.1:7001")
            .congestion("bbr")
            .extra("metrics", json!({ "listen": "127.0.0.1:9100" }));
        let doc = b.document(Path::new("/d"));
        assert_eq!(doc["siteName"], "a");
        assert_eq!(doc["crypto"]["key"], DEFAULT_KEY);
        assert_eq!(doc["logger"]["file"], "/d/site.log");
        assert_eq!(doc["logger"]["format"], "json");
        assert_eq!(doc["messageChannel"]["protocol"], "mqtt");
        assert_eq!(
            doc["messageChannel"]["mqtt"]["brokerServer"],
            "mqtt://127.0.0.1:1883"
        );
        assert_eq!(doc["messageChannel"]["mqtt"]["topic"], "wovenet-test/x");
        assert!(
            doc["messageChannel"]["mqtt"]
                .get("embeddedBroker")
                .is_none()
        );
        let socks = doc["tunnel"]["localSockets"].as_array().unwrap();
        assert_eq!(socks.len(), 2);
        assert_eq!(socks[1]["listenPort"], 4001);
        assert_eq!(socks[0]["mode"], "dedicated-address");
        assert_eq!(socks[0]["publicAddress"], "127.0.0.1");
        assert_eq!(doc["tunnel"]["congestionControl"], "bbr");
        assert_eq!(doc["localExposedApps"][1]["mode"], "range");
        assert_eq!(doc["localExposedApps"][1]["portRange"][1], "20000-30000");
        assert_eq!(doc["remoteApps"][0]["localSocket"], "unix:/tmp/e.sock");
        assert_eq!(doc["remoteApps"][1]["appSocket"], "tcp:127.0.0.1:25000");
        assert_eq!(doc["control"]["socket"], "/d/control.sock");
        assert_eq!(doc["metrics"]["listen"], "127.0.0.1:9100");
    }

    #[test]
    fn a_detected_socket_asks_its_detector_for_the_public_address() {
        let mut d = SiteBuilder::new("d")
            .topic("t")
            .broker("mqtt://127.0.0.1:1")
            .socket(4001)
            .detected_socket(4002, "http://127.0.0.1:9/ip");
        let doc = d.document(Path::new("/d"));
        let socks = &doc["tunnel"]["localSockets"];
        assert_eq!(socks[0]["publicAddress"], "127.0.0.1");
        assert_eq!(socks[1]["publicAddress"], "autoHttpDetect");
        assert_eq!(socks[1]["httpDetector"]["url"], "http://127.0.0.1:9/ip");
        assert_eq!(socks[1]["listenPort"], 4002);
    }

    #[test]
    fn embedded_broker_alone_needs_no_broker_server_and_a_socket_is_added() {
        let mut b = SiteBuilder::new("x")
            .topic("t")
            .embedded_broker("127.0.0.1:1999".parse().unwrap());
        let doc = b.document(Path::new("/d"));
        assert_eq!(
            doc["messageChannel"]["mqtt"]["embeddedBroker"]["listen"],
            "127.0.0.1:1999"
        );
        assert!(doc["messageChannel"]["mqtt"].get("brokerServer").is_none());
        assert_eq!(doc["tunnel"]["localSockets"].as_array().unwrap().len(), 1);
        assert!(doc.get("localExposedApps").is_none());
    }

    #[test]
    #[should_panic(expected = "no topic set")]
    fn missing_topic_is_a_harness_error() {
        SiteBuilder::new("a")
            .broker("mqtt://127.0.0.1:1")
            .document(Path::new("/d"));
    }

    #[test]
    fn written_yaml_parses_back_to_the_same_document() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = SiteBuilder::new("a")
            .topic("t/1")
            .broker("mqtt://127.0.0.1:1883")
            .expose("e", "tcp:127.0.0.1:1");
        let path = b.write_config(dir.path());
        let back: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, b.document(dir.path()));
    }

    #[test]
    fn a_whole_document_is_kept_but_logs_into_the_site_dir() {
        let doc = json!({
            "siteName": "x",
            "logger": { "level": "DEBUG", "file": "", "format": "json" },
            "remoteApps": [{ "siteName": "y", "appName": "e", "localSocket": "tcp:127.0.0.1:1" }],
        });
        let mut b = SiteBuilder::new("x").document_as(doc.clone());
        let mut want = doc;
        want["logger"]["file"] = json!("/d/site.log");
        assert_eq!(b.document(Path::new("/d")), want);
        assert!(b.sockets.is_empty(), "no tunnel socket added");
    }

    #[test]
    fn topics_are_unique() {
        assert_ne!(random_topic(), random_topic());
    }
}
