//! Reads a config file: YAML → key-case normalisation → [`raw`] → [`validate`].
//!
//! The original loader (viper) matched keys case-insensitively, so
//! `appsocket`, `SiteName` and `LISTENPORT` all worked and published configs
//! rely on it. This module rewrites every known key to its canonical camelCase
//! spelling, warns about (and drops) unknown keys instead of rejecting them, and
//! turns serde type errors into [`FieldError`]s with the field's path. It must
//! not interpret values: that is [`validate`]'s job.

use std::collections::HashMap;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{Config, ConfigError, FieldError, raw, validate};

/// Loads and validates the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_str(&text)
}

/// Loads and validates a config from YAML text.
///
/// On success, [`Config::warnings`] lists unknown keys and ignored sections;
/// on failure every problem found is reported, not just the first.
pub fn load_str(yaml: &str) -> Result<Config, ConfigError> {
    let mut value: Value = serde_yaml::from_str(yaml).map_err(syntax)?;
    value.apply_merge().map_err(syntax)?;
    let root = match value {
        Value::Mapping(m) => m,
        Value::Null => {
            return Err(ConfigError::Syntax(
                "the config is empty: expected at least siteName, crypto.key and \
                 messageChannel.mqtt.brokerServer (see the reference config.yaml)"
                    .to_owned(),
            ));
        }
        other => {
            return Err(ConfigError::Syntax(format!(
                "the config must be a mapping of keys (siteName, crypto, ...), found {}",
                kind(&other)
            )));
        }
    };

    let mut norm = Normalised::default();
    let root = normalise_map(root, TOP, "", &mut norm);

    // Deserialize each top-level section on its own so that a type error in
    // one does not hide the errors of the others.
    let mut errors = norm.errors;
    let mut broken: Vec<String> = Vec::new();
    let mut sound = Mapping::new();
    for (key, value) in root {
        let mut single = Mapping::new();
        single.insert(key.clone(), value.clone());
        match serde_path_to_error::deserialize::<_, raw::Config>(Value::Mapping(single)) {
            Ok(_) => {
                sound.insert(key, value);
            }
            Err(e) => {
                errors.push(type_error(&e));
                broken.push(key.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    let raw: raw::Config = match serde_path_to_error::deserialize(Value::Mapping(sound)) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(type_error(&e));
            return Err(ConfigError::Invalid(errors));
        }
    };

    match validate::config(raw) {
        Ok(mut config) if errors.is_empty() => {
            let mut warnings = norm.warnings;
            warnings.append(&mut config.warnings);
            config.warnings = warnings;
            Ok(config)
        }
        Ok(_) => Err(ConfigError::Invalid(errors)),
        Err(more) => {
            // A broken section was left out, so its "is required" errors are noise.
            let under_broken = |path: &str| {
                broken.iter().any(|b| {
                    path == b
                        || path
                            .strip_prefix(b.as_str())
                            .is_some_and(|rest| rest.starts_with(['.', '[']))
                })
            };
            errors.extend(more.into_iter().filter(|e| !under_broken(&e.path)));
            Err(ConfigError::Invalid(errors))
        }
    }
}

/// A YAML syntax error as `line L, column C: problem`.
fn syntax(e: serde_yaml::Error) -> ConfigError {
    let message = e.to_string();
    match e.location() {
        Some(loc) => {
            let (line, column) = (loc.line(), loc.column());
            // serde_yaml appends the location itself; say it once, up front.
            let message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
            ConfigError::Syntax(format!("line {line}, column {column}: {message}"))
        }
        None => ConfigError::Syntax(message),
    }
}

/// A serde type error with its path.
fn type_error(e: &serde_path_to_error::Error<serde_yaml::Error>) -> FieldError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    // The value inside a wrong-typed secret section could be the secret itself.
    // So could a TURN section written as one string (`turn: turn:user:pass@host`).
    let secret = path == "crypto"
        || path.starts_with("crypto.")
        || path.ends_with("password")
        || path == "tunnel.relay"
        || path == "tunnel.relay.turn";
    let reason = if secret {
        "has the wrong type (value not shown because it may be secret)".to_owned()
    } else {
        readable(&e.inner().to_string())
    };
    FieldError::new(path, reason)
}

/// Replaces Rust type names in serde messages with YAML words.
fn readable(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some(at) = out.find("expected struct ") {
        let tail = &out[at + "expected struct ".len()..];
        let end = tail
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .unwrap_or(tail.len());
        out.replace_range(
            at..at + "expected struct ".len() + end,
            "expected a mapping of keys",
        );
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Where a known key's value may hold further known keys.
#[derive(Clone, Copy)]
enum Shape {
    /// A value whose keys (if any) are not ours to check.
    Leaf,
    /// A legacy section whose contents are ignored wholesale.
    Opaque,
    /// A mapping with these known keys.
    Map(&'static [(&'static str, Self)]),
    /// A list of items of this shape.
    List(&'static Self),
}

const LOCAL_SOCKET: &[(&str, Shape)] = &[
    ("mode", Shape::Leaf),
    ("transportProtocol", Shape::Leaf),
    ("publicAddress", Shape::Leaf),
    ("publicPort", Shape::Leaf),
    ("listenAddress", Shape::Leaf),
    ("listenPort", Shape::Leaf),
    ("httpDetector", Shape::Map(&[("url", Shape::Leaf)])),
    ("stunDetector", Shape::Map(&[("servers", Shape::Leaf)])),
];

const EXPOSED_APP: &[(&str, Shape)] = &[
    ("mode", Shape::Leaf),
    ("appName", Shape::Leaf),
    ("appSocket", Shape::Leaf),
    ("portRange", Shape::Leaf),
    ("addressRange", Shape::Leaf),
    ("maxConnections", Shape::Leaf),
    ("allowedSites", Shape::Leaf),
    ("protocol", Shape::Leaf),
    ("udpIdleTimeout", Shape::Leaf),
    ("bandwidthLimit", Shape::Leaf),
    ("proxyProtocol", Shape::Leaf),
];

const REMOTE_APP: &[(&str, Shape)] = &[
    ("siteName", Shape::Leaf),
    ("appName", Shape::Leaf),
    ("localSocket", Shape::Leaf),
    ("appSocket", Shape::Leaf),
    ("maxConnections", Shape::Leaf),
    ("udpIdleTimeout", Shape::Leaf),
    ("bandwidthLimit", Shape::Leaf),
];

const MQTT: &[(&str, Shape)] = &[
    ("brokerServer", Shape::Leaf),
    ("topic", Shape::Leaf),
    ("username", Shape::Leaf),
    ("password", Shape::Leaf),
    ("caFile", Shape::Leaf),
    ("embeddedBroker", Shape::Map(&[("listen", Shape::Leaf)])),
];

const TURN: &[(&str, Shape)] = &[
    ("url", Shape::Leaf),
    ("username", Shape::Leaf),
    ("password", Shape::Leaf),
];

/// Every key this implementation knows, in its canonical spelling.
const TOP: &[(&str, Shape)] = &[
    ("siteName", Shape::Leaf),
    ("crypto", Shape::Map(&[("key", Shape::Leaf)])),
    (
        "logger",
        Shape::Map(&[
            ("level", Shape::Leaf),
            ("file", Shape::Leaf),
            ("format", Shape::Leaf),
        ]),
    ),
    (
        "messageChannel",
        Shape::Map(&[("protocol", Shape::Leaf), ("mqtt", Shape::Map(MQTT))]),
    ),
    (
        "tunnel",
        Shape::Map(&[
            ("localSockets", Shape::List(&Shape::Map(LOCAL_SOCKET))),
            ("congestionControl", Shape::Leaf),
            ("maxStreamsPerPeer", Shape::Leaf),
            ("workerThreads", Shape::Leaf),
            ("relay", Shape::Map(&[("turn", Shape::Map(TURN))])),
        ]),
    ),
    ("localExposedApps", Shape::List(&Shape::Map(EXPOSED_APP))),
    ("remoteApps", Shape::List(&Shape::Map(REMOTE_APP))),
    ("control", Shape::Map(&[("socket", Shape::Leaf)])),
    ("metrics", Shape::Map(&[("listen", Shape::Leaf)])),
    (
        "trust",
        Shape::Map(&[
            ("mode", Shape::Leaf),
            (
                "sites",
                Shape::List(&Shape::Map(&[
                    ("siteName", Shape::Leaf),
                    ("identity", Shape::Leaf),
                ])),
            ),
        ]),
    ),
    ("restfulApi", Shape::Opaque),
];

/// What normalisation found besides the rewritten tree.
#[derive(Default)]
struct Normalised {
    warnings: Vec<String>,
    errors: Vec<FieldError>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Rewrites the keys of `map` to their canonical spelling and drops unknown ones.
fn normalise_map(
    map: Mapping,
    known: &'static [(&'static str, Shape)],
    path: &str,
    n: &mut Normalised,
) -> Mapping {
    let mut out = Mapping::new();
    let mut spelled: HashMap<&'static str, String> = HashMap::new();
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            let shown = match &key {
                Value::Number(x) => x.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "~".to_owned(),
                _ => "(complex key)".to_owned(),
            };
            n.warnings
                .push(format!("unknown key '{}' ignored", join(path, &shown)));
            continue;
        };
        let Some((canonical, shape)) = known
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
        else {
            n.warnings
                .push(format!("unknown key '{}' ignored", join(path, key)));
            continue;
        };
        let here = join(path, canonical);
        if let Some(first) = spelled.insert(canonical, key.to_owned()) {
            n.errors.push(FieldError::new(
                here,
                format!("is given twice, as '{first}' and as '{key}' (keys are case-insensitive)"),
            ));
            continue;
        }
        let value = normalise(value, *shape, &here, n);
        out.insert(Value::String((*canonical).to_owned()), value);
    }
    out
}

fn normalise(value: Value, shape: Shape, path: &str, n: &mut Normalised) -> Value {
    match (shape, value) {
        (Shape::Map(known), Value::Mapping(m)) => Value::Mapping(normalise_map(m, known, path, n)),
        (Shape::List(item), Value::Sequence(items)) => Value::Sequence(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| normalise(v, *item, &format!("{path}[{i}]"), n))
                .collect(),
        ),
        (Shape::Leaf | Shape::Opaque | Shape::Map(_) | Shape::List(_), v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppSocket, ExposedTarget, PortRange, SocketMode};

    const BASE: &str = "siteName: site01\ncrypto:\n  key: \"unit-test-key-16\"\nmessageChannel:\n  mqtt:\n    brokerServer: mqtt://192.0.2.1:1883\n";

    fn ok(text: &str) -> Config {
        load_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn invalid(text: &str) -> Vec<String> {
        match load_str(text) {
            Err(ConfigError::Invalid(e)) => e.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("not a field error: {e}"),
            Ok(_) => panic!("loaded:\n{text}"),
        }
    }

    fn syntax_error(text: &str) -> String {
        match load_str(text) {
            Err(ConfigError::Syntax(s)) => s,
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn keys_match_in_any_case_like_the_original() {
        let c = ok(
            "SITENAME: s1\nCrypto:\n  Key: \"unit-test-key-16\"\nmessagechannel:\n  MQTT:\n    brokerserver: mqtt://h\ntunnel:\n  localsockets:\n  - Mode: dedicated-address\n    PublicAddress: 192.0.2.1\n    LISTENPORT: 4000\nlocalExposedApps:\n- appname: docker\n  appsocket: unix:/var/run/docker.sock\n",
        );
        assert_eq!(c.site_name.as_str(), "s1");
        assert_eq!(c.tunnel.local_sockets[0].mode, SocketMode::DedicatedAddress);
        assert_eq!(c.tunnel.local_sockets[0].public_port, 4000);
        assert_eq!(
            c.exposed_apps[0].target,
            ExposedTarget::Single(AppSocket::Unix("/var/run/docker.sock".into()))
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn the_original_unix_to_tcp_example_with_lowercase_appsocket_loads() {
        let c = ok(include_str!(
            "../../../examples/convert-unix-to-tcp/convert-unix-to-tcp-1.yaml"
        ));
        assert_eq!(c.exposed_apps.len(), 1);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn stun_detector_keys_are_known_in_any_case() {
        let c = ok(&format!(
            "{BASE}tunnel:\n  localSockets:\n  - mode: hole-punching\n    StunDetector:\n      SERVERS: [stun.example.com]\n  - mode: port-forwarding\n    publicAddress: autoStunDetect\n    publicPort: 1\n    listenPort: 2\n    stundetector:\n      Servers: [\"192.0.2.9:3479\"]\n      extra: 1\n"
        ));
        assert_eq!(
            c.warnings,
            ["unknown key 'tunnel.localSockets[1].stunDetector.extra' ignored"]
        );
        let hosts: Vec<String> = c
            .tunnel
            .local_sockets
            .iter()
            .flat_map(|s| s.stun_servers.iter().map(ToString::to_string))
            .collect();
        assert_eq!(hosts, ["stun.example.com:3478", "192.0.2.9:3479"]);
    }

    #[test]
    fn relay_keys_are_known_in_any_case() {
        let c = ok(&format!(
            "{BASE}tunnel:\n  localSockets:\n  - mode: hole-punching\n    stunDetector:\n      servers: [stun.example.com]\n  RELAY:\n    Turn:\n      URL: turn:relay.example.com:3479\n      userName: wovenet\n      PASSWORD: pass-word-42\n      extra: 1\n    serve: true\n"
        ));
        assert_eq!(
            c.warnings,
            [
                "unknown key 'tunnel.relay.turn.extra' ignored",
                "unknown key 'tunnel.relay.serve' ignored"
            ]
        );
        let turn = &c.tunnel.relay.as_ref().expect("a relay").turn;
        assert_eq!(turn.to_string(), "turn:relay.example.com:3479");
        assert_eq!(turn.username, "wovenet");
        assert_eq!(turn.password.0.as_str(), "pass-word-42");
    }

    #[test]
    fn a_key_given_twice_in_different_case_is_an_error() {
        assert_eq!(
            invalid(&format!("{BASE}SiteName: other\n")),
            [
                "siteName: is given twice, as 'siteName' and as 'SiteName' (keys are case-insensitive)"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_ignored_with_a_warning_naming_the_full_path() {
        let c = ok(&format!(
            "{BASE}stun: [a]\ntunnel:\n  foo: 1\n  localSockets:\n  - mode: dedicated-address\n    publicAddress: 192.0.2.1\n    publicPort: 1\n    bar: {{deep: 1}}\nremoteApps:\n- siteName: s2\n  appName: a\n  localSocket: tcp:127.0.0.1:9\n  Extra: x\n7: seven\n"
        ));
        assert_eq!(
            c.warnings,
            [
                "unknown key 'stun' ignored",
                "unknown key 'tunnel.foo' ignored",
                "unknown key 'tunnel.localSockets[0].bar' ignored",
                "unknown key 'remoteApps[0].Extra' ignored",
                "unknown key '7' ignored",
            ]
        );
    }

    #[test]
    fn restful_api_is_accepted_with_a_warning_whatever_it_contains() {
        for section in [
            "restfulApi:\n",
            "restfulApi: off\n",
            "RESTFULAPI:\n  enabled: true\n  tls: [1, 2]\n  unknownInside: {a: b}\n",
            "restfulApi:\n- 1\n- {x: y}\n",
        ] {
            let c = ok(&format!("{BASE}{section}"));
            assert_eq!(c.warnings.len(), 1, "{section}: {:?}", c.warnings);
            assert!(
                c.warnings[0].starts_with("restfulApi: section ignored"),
                "{:?}",
                c.warnings
            );
        }
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        assert_eq!(
            syntax_error("siteName: a\ncrypto:\n  key: x\n   bad: 1\n"),
            "line 4, column 7: mapping values are not allowed in this context"
        );
        assert!(syntax_error("a: [1,\n").starts_with("line 2, column 1: "));
    }

    #[test]
    fn an_empty_file_is_a_clear_error() {
        for text in ["", "\n\n", "# just a comment\n", "---\n"] {
            assert!(
                syntax_error(text).starts_with("the config is empty"),
                "{text:?}"
            );
        }
        assert_eq!(
            syntax_error("- siteName: a\n"),
            "the config must be a mapping of keys (siteName, crypto, ...), found a list"
        );
    }

    #[test]
    fn type_errors_name_the_field_and_do_not_hide_other_errors() {
        let e = invalid(
            "siteName: site01\ncrypto:\n  key: \"unit-test-key-16\"\nlogger: [1]\ntunnel:\n  localSockets:\n  - mode: dedicated-address\n    httpDetector: https://ip.example.com\nremoteApps:\n- siteName: s2\n",
        );
        assert_eq!(
            e,
            [
                "logger: invalid type: sequence, expected a mapping of keys",
                "tunnel.localSockets[0].httpDetector: invalid type: string \"https://ip.example.com\", expected a mapping of keys",
                "messageChannel.mqtt.brokerServer: is required (e.g. 'mqtt://broker.example.com:1883'), unless messageChannel.mqtt.embeddedBroker.listen is set",
                "remoteApps[0].appName: is required",
                "remoteApps[0].localSocket: is required",
            ]
        );
    }

    #[test]
    fn a_wrongly_typed_secret_is_not_echoed() {
        let e = invalid(&BASE.replace(
            "crypto:\n  key: \"unit-test-key-16\"",
            "crypto: unit-test-key-16",
        ));
        assert_eq!(
            e,
            ["crypto: has the wrong type (value not shown because it may be secret)"]
        );
    }

    #[test]
    fn scalars_are_read_weakly_like_mapstructure() {
        let c = ok(
            "siteName: 42\ncrypto:\n  key: 1234567890\nmessageChannel:\n  mqtt:\n    brokerServer: mqtt://h\n    topic: 7\ntunnel:\n  localSockets:\n  - mode: dedicated-address\n    publicAddress: 192.0.2.1\n    publicPort: \"25890\"\nlocalExposedApps:\n- appName: true\n  mode: range\n  portRange: \"5900, 5901-5990\"\n  addressRange: 10.0.0.0/8\n",
        );
        assert_eq!(c.site_name.as_str(), "42");
        assert_eq!(c.crypto.key.expose(), b"1234567890");
        assert_eq!(c.message_channel.topic.as_deref(), Some("7"));
        assert_eq!(c.tunnel.local_sockets[0].public_port, 25890);
        assert_eq!(c.exposed_apps[0].name.as_str(), "true");
        let ExposedTarget::Range {
            ports, addresses, ..
        } = &c.exposed_apps[0].target
        else {
            panic!("not a range app");
        };
        assert_eq!(
            ports,
            &[
                PortRange {
                    start: 5900,
                    end: 5900
                },
                PortRange {
                    start: 5901,
                    end: 5990
                }
            ]
        );
        assert_eq!(addresses.len(), 1);
    }

    #[test]
    fn yaml_anchors_and_merge_keys_work() {
        let c = ok(&format!(
            "{BASE}remoteApps:\n- &web\n  siteName: s2\n  appName: web\n  localSocket: tcp:127.0.0.1:1\n- <<: *web\n  localSocket: tcp:127.0.0.1:2\n"
        ));
        assert_eq!(c.remote_apps.len(), 2);
        assert_eq!(c.remote_apps[1].app.as_str(), "web");
    }

    #[test]
    fn null_sections_are_the_same_as_missing_ones() {
        let c = ok(&format!(
            "{BASE}logger:\ntunnel:\nlocalExposedApps:\nremoteApps:\ncontrol:\n"
        ));
        assert!(c.tunnel.local_sockets.is_empty() && c.exposed_apps.is_empty());
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = load_file(Path::new("/nonexistent/wovenet.yaml")).expect_err("missing");
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string()
                .starts_with("cannot read config file '/nonexistent/wovenet.yaml'"),
            "{e}"
        );
    }

    #[test]
    fn load_file_reads_and_validates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, BASE).expect("write");
        assert_eq!(
            load_file(&path)
                .map(|c| c.site_name.to_string())
                .ok()
                .as_deref(),
            Some("site01")
        );
    }
}
