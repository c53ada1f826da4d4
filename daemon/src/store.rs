//! Persisted live changes: apps added or removed through the control plane.
//!
//! Kept in a small versioned JSON file beside the config (never in it: the
//! user's config.yaml is not rewritten). Apps are stored in the config file's
//! own schema (`appName`, `appSocket`, …) and re-validated with the config
//! rules when loaded, so a state file can be read and fixed by hand. Writes
//! go to a new temporary file with a unique name and owner-only mode (0600) in
//! the same directory, are fsynced, then renamed over the old file, so a crash
//! leaves either the old or the new state, and no other user can read it,
//! pre-create the temporary name or race the rename.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{
    Config, ExposedApp, ExposedTarget, FieldError, RemoteApp, SiteName, raw, validate,
};

/// Current state file format.
pub const VERSION: u32 = 1;
/// Mode of the state file: owner only.
pub const STATE_MODE: u32 = 0o600;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("state file '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("state file '{path}': {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The persisted changes, applied over the config at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Exposed apps added at run time (config schema).
    #[serde(default)]
    pub exposed_added: Vec<Value>,
    /// Names of config-file exposed apps removed at run time.
    #[serde(default)]
    pub exposed_removed: Vec<String>,
    /// Remote apps added at run time (config schema).
    #[serde(default)]
    pub remote_added: Vec<Value>,
    /// Config-file remote apps removed at run time (config schema).
    #[serde(default)]
    pub remote_removed: Vec<Value>,
    /// The identity pinned per site name (`trust.mode: pinned`), like SSH's
    /// known_hosts; `wovenetctl peers forget NAME` removes one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_sites: Vec<KnownSite>,
}

/// One pinned site identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownSite {
    /// The site name.
    pub site_name: String,
    /// Its identity fingerprint.
    pub identity: String,
    /// When it was first seen (unix milliseconds).
    #[serde(default)]
    pub first_seen: u64,
}

/// The config-file form of an exposed app.
pub fn exposed_json(app: &ExposedApp) -> Value {
    let mut v = match &app.target {
        ExposedTarget::Single(socket) => json!({
            "appName": app.name.as_str(),
            "mode": "single",
            "appSocket": socket.to_string(),
        }),
        ExposedTarget::Range {
            ports,
            addresses,
            protocol,
        } => json!({
            "appName": app.name.as_str(),
            "mode": "range",
            "portRange": ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "addressRange": addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "protocol": protocol.as_str(),
        }),
    };
    if let Some(d) = app.udp_idle_timeout {
        v["udpIdleTimeout"] = json!(d.as_secs());
    }
    if let Some(n) = app.max_connections {
        v["maxConnections"] = json!(n);
    }
    if let Some(l) = app.bandwidth_limit {
        v["bandwidthLimit"] = json!(l.to_string());
    }
    if !app.allowed_sites.is_empty() {
        v["allowedSites"] = json!(
            app.allowed_sites
                .iter()
                .map(SiteName::as_str)
                .collect::<Vec<_>>()
        );
    }
    if let Some(p) = app.proxy_protocol {
        v["proxyProtocol"] = json!(p.as_str());
    }
    v
}

/// The config-file form of a remote app.
pub fn remote_json(app: &RemoteApp) -> Value {
    let mut v = json!({
        "siteName": app.site.as_str(),
        "appName": app.app.as_str(),
        "localSocket": app.local_socket.to_string(),
    });
    if let Some(t) = app.app_socket_text() {
        v["appSocket"] = Value::String(t);
    }
    if let Some(d) = app.udp_idle_timeout {
        v["udpIdleTimeout"] = json!(d.as_secs());
    }
    if let Some(n) = app.max_connections {
        v["maxConnections"] = json!(n);
    }
    if let Some(l) = app.bandwidth_limit {
        v["bandwidthLimit"] = json!(l.to_string());
    }
    v
}

fn parse_exposed(v: &Value, path: &str) -> Result<ExposedApp, Vec<FieldError>> {
    let raw: raw::ExposedApp = serde_json::from_value(v.clone())
        .map_err(|e| vec![FieldError::new(path, e.to_string())])?;
    validate::exposed_app(&raw, path)
}

fn parse_remote(v: &Value, path: &str) -> Result<RemoteApp, Vec<FieldError>> {
    let raw: raw::RemoteApp = serde_json::from_value(v.clone())
        .map_err(|e| vec![FieldError::new(path, e.to_string())])?;
    validate::remote_app(&raw, path)
}

/// A state file on disk.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The state file of the config at `config_path`: `<dir>/<stem>.state.json`.
    pub fn beside(config_path: &Path) -> Self {
        let stem = config_path
            .file_stem()
            .map_or_else(|| "wovenet".into(), |s| s.to_string_lossy().into_owned());
        let dir = config_path.parent().unwrap_or(Path::new("."));
        Self {
            path: dir.join(format!("{stem}.state.json")),
        }
    }

    /// A store at an explicit path.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<State, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let state: State = serde_json::from_str(&text).map_err(|e| StoreError::Format {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if state.version > VERSION {
            return Err(StoreError::Format {
                path: self.path.clone(),
                reason: format!(
                    "version {} is newer than this wovenetd understands ({VERSION})",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Writes the state atomically: a unique 0600 temporary file (never a
    /// fixed name another user could have planted), fsync, rename, fsync of
    /// the directory. On failure the temporary file is removed.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut state = state.clone();
        state.version = VERSION;
        let body = serde_json::to_vec_pretty(&state).map_err(|e| StoreError::Format {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let name = self
            .path
            .file_name()
            .map_or_else(|| "state".into(), |n| n.to_string_lossy());
        // Created with O_EXCL and mode 0600 under a random name; removed on drop.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(STATE_MODE))
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(&body).map_err(io)?;
        tmp.write_all(b"\n").map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl State {
    /// Applies the changes to `config`; entries that no longer validate are
    /// skipped and returned as warnings (the daemon still starts).
    pub fn apply(&self, config: &mut Config) -> Vec<String> {
        let mut warnings = Vec::new();
        config
            .exposed_apps
            .retain(|a| !self.exposed_removed.iter().any(|n| n == a.name.as_str()));
        for (i, v) in self.exposed_added.iter().enumerate() {
            let path = format!("exposedAdded[{i}]");
            let parsed = parse_exposed(v, &path).and_then(|app| {
                match validate::own_site_allowed(&app, &config.site_name, &path) {
                    Some(e) => Err(vec![e]),
                    None => Ok(app),
                }
            });
            match parsed {
                Ok(app) if config.exposed_apps.iter().any(|a| a.name == app.name) => {
                    warnings.push(format!(
                        "state file: exposed app '{}' is also in the config; the config's wins",
                        app.name
                    ))
                }
                Ok(app) => config.exposed_apps.push(app),
                Err(errs) => warnings.extend(errs.iter().map(|e| format!("state file: {e}"))),
            }
        }
        for (i, v) in self.remote_removed.iter().enumerate() {
            if let Ok(gone) = parse_remote(v, &format!("remoteRemoved[{i}]")) {
                // The listener is gone even if the config changed its limit since.
                config.remote_apps.retain(|a| !a.same_as(&gone));
            }
        }
        for (i, v) in self.remote_added.iter().enumerate() {
            match parse_remote(v, &format!("remoteAdded[{i}]")) {
                Ok(app)
                    if config
                        .remote_apps
                        .iter()
                        .any(|a| a.local_socket == app.local_socket) =>
                {
                    warnings.push(format!(
                        "state file: remote app on '{}' is also in the config; the config's wins",
                        app.local_socket
                    ))
                }
                Ok(app) => config.remote_apps.push(app),
                Err(errs) => warnings.extend(errs.iter().map(|e| format!("state file: {e}"))),
            }
        }
        warnings
    }

    /// Records a live-added exposed app.
    pub fn add_exposed(&mut self, app: &ExposedApp) {
        self.exposed_removed.retain(|n| n != app.name.as_str());
        self.exposed_added
            .retain(|v| v["appName"].as_str() != Some(app.name.as_str()));
        self.exposed_added.push(exposed_json(app));
    }

    /// Records the removal of an exposed app (live-added or from the config).
    pub fn remove_exposed(&mut self, app: &ExposedApp, from_config: bool) {
        self.exposed_added
            .retain(|v| v["appName"].as_str() != Some(app.name.as_str()));
        if from_config && !self.exposed_removed.iter().any(|n| n == app.name.as_str()) {
            self.exposed_removed.push(app.name.to_string());
        }
    }

    /// Records a live-added remote app.
    pub fn add_remote(&mut self, app: &RemoteApp) {
        let v = remote_json(app);
        self.remote_removed.retain(|x| *x != v);
        self.remote_added.retain(|x| *x != v);
        self.remote_added.push(v);
    }

    /// Records the removal of a remote app.
    pub fn remove_remote(&mut self, app: &RemoteApp, from_config: bool) {
        let v = remote_json(app);
        self.remote_added.retain(|x| *x != v);
        if from_config && !self.remote_removed.contains(&v) {
            self.remote_removed.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppName, AppSocket};

    /// A valid config with no apps, to apply saved state to.
    fn minimal_config() -> Config {
        crate::config::load_str(
            "siteName: a\ncrypto: {key: \"12345678\"}\nmessageChannel: {mqtt: {brokerServer: \"mqtt://127.0.0.1:1\"}}\n",
        )
        .unwrap()
    }

    fn app(name: &str, port: u16) -> ExposedApp {
        ExposedApp {
            name: AppName::new(name).unwrap(),
            target: ExposedTarget::Single(AppSocket::Tcp(([127, 0, 0, 1], port).into())),
            max_connections: None,
            allowed_sites: Vec::new(),
            udp_idle_timeout: None,
            bandwidth_limit: None,
            proxy_protocol: None,
        }
    }

    #[test]
    fn udp_apps_round_trip_through_their_json_form() {
        let exposed = [
            ExposedApp {
                name: AppName::new("dns").unwrap(),
                target: ExposedTarget::Single(AppSocket::Udp(([127, 0, 0, 1], 53).into())),
                max_connections: None,
                allowed_sites: Vec::new(),
                udp_idle_timeout: Some(std::time::Duration::from_secs(7)),
                bandwidth_limit: None,
                proxy_protocol: None,
            },
            ExposedApp {
                name: AppName::new("lan").unwrap(),
                target: ExposedTarget::Range {
                    ports: vec![crate::config::PortRange { start: 5, end: 9 }],
                    addresses: vec!["10.0.0.0/8".parse().unwrap()],
                    protocol: crate::config::Protocol::Udp,
                },
                max_connections: Some(3),
                allowed_sites: Vec::new(),
                udp_idle_timeout: None,
                bandwidth_limit: None,
                proxy_protocol: None,
            },
        ];
        for app in exposed {
            assert_eq!(parse_exposed(&exposed_json(&app), "x").unwrap(), app);
        }
        let remote = RemoteApp {
            site: SiteName::new("far").unwrap(),
            app: AppName::new("lan").unwrap(),
            local_socket: AppSocket::Udp(([127, 0, 0, 1], 5353).into()),
            app_socket: Some(([10, 0, 0, 5], 7).into()),
            max_connections: None,
            udp_idle_timeout: Some(std::time::Duration::from_secs(60)),
            bandwidth_limit: None,
        };
        assert_eq!(remote_json(&remote)["appSocket"], "udp:10.0.0.5:7");
        assert_eq!(parse_remote(&remote_json(&remote), "x").unwrap(), remote);
    }

    #[test]
    fn proxy_protocol_round_trips_through_the_json_form() {
        for (version, text) in [
            (crate::config::ProxyProtocol::V1, "v1"),
            (crate::config::ProxyProtocol::V2, "v2"),
        ] {
            let mut web = app("web", 8080);
            web.proxy_protocol = Some(version);
            let json = exposed_json(&web);
            assert_eq!(json["proxyProtocol"], text);
            assert_eq!(parse_exposed(&json, "x").unwrap(), web);
        }
        // Off: the key is left out, as in a config file that never set it.
        assert!(
            exposed_json(&app("web", 8080))
                .get("proxyProtocol")
                .is_none()
        );
    }

    #[test]
    fn saved_state_round_trips_and_reapplies_over_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::beside(&dir.path().join("config.yaml"));
        assert_eq!(store.path(), dir.path().join("config.state.json"));
        assert_eq!(store.load().unwrap(), State::default());
        let mut st = State::default();
        st.add_exposed(&app("web", 80));
        let remote = RemoteApp {
            site: SiteName::new("b").unwrap(),
            app: AppName::new("ssh").unwrap(),
            local_socket: AppSocket::Unix("/tmp/x.sock".into()),
            app_socket: Some("10.0.0.1:22".parse().unwrap()),
            max_connections: None,
            udp_idle_timeout: None,
            bandwidth_limit: None,
        };
        st.add_remote(&remote);
        store.save(&st).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.exposed_added.len(), 1);
        let mut cfg = crate::config::load_str(
            "siteName: a\ncrypto: {key: \"12345678\"}\nmessageChannel: {mqtt: {brokerServer: \"mqtt://127.0.0.1:1\"}}\nlocalExposedApps: [{appName: old, appSocket: \"tcp:127.0.0.1:1\"}]\n",
        )
        .unwrap();
        let mut st = back;
        st.remove_exposed(&cfg.exposed_apps[0].clone(), true);
        assert!(st.apply(&mut cfg).is_empty());
        assert_eq!(cfg.exposed_apps, vec![app("web", 80)]);
        assert_eq!(cfg.remote_apps, vec![remote]);
    }

    #[test]
    fn limits_are_persisted_and_validated_like_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("s.json"));
        let mut limited = app("web", 80);
        limited.max_connections = Some(7);
        let remote = RemoteApp {
            site: SiteName::new("b").unwrap(),
            app: AppName::new("ssh").unwrap(),
            local_socket: AppSocket::Tcp(([127, 0, 0, 1], 2222).into()),
            app_socket: None,
            max_connections: Some(3),
            udp_idle_timeout: None,
            bandwidth_limit: None,
        };
        let mut st = State::default();
        st.add_exposed(&limited);
        st.add_remote(&remote);
        assert_eq!(st.exposed_added[0]["maxConnections"], 7);
        assert_eq!(st.remote_added[0]["maxConnections"], 3);
        store.save(&st).unwrap();
        let mut cfg = minimal_config();
        assert!(store.load().unwrap().apply(&mut cfg).is_empty());
        assert_eq!(cfg.exposed_apps, vec![limited]);
        assert_eq!(cfg.remote_apps, vec![remote]);

        // A hand-edited bad limit is reported with its path, like a config error.
        let bad = State {
            version: 1,
            exposed_added: vec![
                json!({"appName": "x", "appSocket": "tcp:127.0.0.1:1", "maxConnections": 0}),
            ],
            ..State::default()
        };
        let w = bad.apply(&mut cfg);
        assert_eq!(
            w,
            ["state file: exposedAdded[0].maxConnections: '0' is out of range 1..=1000000"]
        );
    }

    #[test]
    fn bandwidth_limits_are_persisted_and_validated_like_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("s.json"));
        let mut limited = app("web", 80);
        limited.bandwidth_limit = Some("10MiB/s".parse().unwrap());
        let remote = RemoteApp {
            site: SiteName::new("b").unwrap(),
            app: AppName::new("ssh").unwrap(),
            local_socket: AppSocket::Tcp(([127, 0, 0, 1], 2222).into()),
            app_socket: None,
            max_connections: None,
            udp_idle_timeout: None,
            bandwidth_limit: Some("100Mbit/s".parse().unwrap()),
        };
        let mut st = State::default();
        st.add_exposed(&limited);
        st.add_remote(&remote);
        assert_eq!(st.exposed_added[0]["bandwidthLimit"], "10MiB/s");
        assert_eq!(st.remote_added[0]["bandwidthLimit"], "100Mbit/s");
        store.save(&st).unwrap();
        let mut cfg = minimal_config();
        assert!(store.load().unwrap().apply(&mut cfg).is_empty());
        assert_eq!(cfg.exposed_apps, vec![limited]);
        assert_eq!(cfg.remote_apps, vec![remote]);

        let bad = State {
            version: 1,
            remote_added: vec![json!({"siteName": "b", "appName": "x",
                "localSocket": "tcp:127.0.0.1:1", "bandwidthLimit": "0MiB/s"})],
            ..State::default()
        };
        let w = bad.apply(&mut cfg);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("state file: remoteAdded[0].bandwidthLimit: '0MiB/s' is zero"),
            "{w:?}"
        );
    }

    #[test]
    fn allowed_sites_are_persisted_and_validated_like_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("s.json"));
        let mut restricted = app("web", 80);
        restricted.allowed_sites = vec![SiteName::new("c").unwrap(), SiteName::new("b").unwrap()];
        let mut st = State::default();
        st.add_exposed(&restricted);
        st.add_exposed(&app("open", 81));
        assert_eq!(st.exposed_added[0]["allowedSites"], json!(["c", "b"]));
        assert!(st.exposed_added[1].get("allowedSites").is_none());
        store.save(&st).unwrap();
        let mut cfg = minimal_config();
        assert!(store.load().unwrap().apply(&mut cfg).is_empty());
        assert_eq!(cfg.exposed_apps, vec![restricted, app("open", 81)]);

        // A hand-edited entry naming this site, or twice the same site, is
        // skipped with the config's message.
        let bad = State {
            version: 1,
            exposed_added: vec![
                json!({"appName": "x", "appSocket": "tcp:127.0.0.1:1", "allowedSites": ["b", "a"]}),
                json!({"appName": "y", "appSocket": "tcp:127.0.0.1:1", "allowedSites": ["b", "b"]}),
            ],
            ..State::default()
        };
        let mut cfg = minimal_config();
        assert_eq!(
            bad.apply(&mut cfg),
            [
                "state file: exposedAdded[0].allowedSites[1]: 'a' is this site's own name; a site cannot open streams to itself",
                "state file: exposedAdded[1].allowedSites[1]: duplicate site 'b' (already listed at exposedAdded[1].allowedSites[0])",
            ]
        );
        assert!(cfg.exposed_apps.is_empty());
    }

    #[test]
    fn a_removed_config_remote_app_stays_removed_when_its_limit_changes() {
        let yaml = |limit: u32| {
            format!(
                "siteName: a\ncrypto: {{key: \"12345678\"}}\nmessageChannel: {{mqtt: {{brokerServer: \"mqtt://127.0.0.1:1\"}}}}\nremoteApps: [{{siteName: b, appName: web, localSocket: \"tcp:127.0.0.1:8080\", maxConnections: {limit}}}]\n"
            )
        };
        let cfg = crate::config::load_str(&yaml(5)).unwrap();
        let mut st = State::default();
        st.remove_remote(&cfg.remote_apps[0], true);
        let mut edited = crate::config::load_str(&yaml(9)).unwrap();
        assert!(st.apply(&mut edited).is_empty());
        assert!(edited.remote_apps.is_empty());
    }

    #[test]
    fn invalid_entries_become_warnings_not_failures() {
        let st = State {
            version: 1,
            exposed_added: vec![json!({"appName": "x", "appSocket": "bogus"})],
            ..State::default()
        };
        let mut cfg = minimal_config();
        let w = st.apply(&mut cfg);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("exposedAdded[0].appSocket"), "{w:?}");
    }

    #[test]
    fn the_state_file_is_owner_only_and_no_temporary_file_is_left() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::beside(&dir.path().join("config.yaml"));
        // A state file loosened by hand, and a fixed-name temporary planted
        // beside it (as another user could in a shared directory).
        fs::write(store.path(), "{\"version\":1}").unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o666)).unwrap();
        let planted = dir.path().join(".config.state.json.tmp");
        std::os::unix::fs::symlink(dir.path().join("victim"), &planted).unwrap();
        let mut st = State::default();
        st.add_exposed(&app("web", 80));
        for _ in 0..3 {
            store.save(&st).unwrap();
        }
        let meta = fs::symlink_metadata(store.path()).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o7777, STATE_MODE);
        assert_eq!(store.load().unwrap().exposed_added.len(), 1);
        assert!(
            !dir.path().join("victim").exists(),
            "the planted link was not followed"
        );
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".config.state.json.tmp", "config.state.json"]);
    }

    #[test]
    fn a_failed_save_leaves_the_old_state_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::beside(&dir.path().join("config.yaml"));
        let mut st = State::default();
        st.add_exposed(&app("web", 80));
        store.save(&st).unwrap();
        // The target is now a directory: the rename must fail.
        let blocked = Store::at(dir.path().join("sub"));
        fs::create_dir(blocked.path()).unwrap();
        fs::write(blocked.path().join("x"), "").unwrap();
        assert!(blocked.save(&st).is_err());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        assert_eq!(store.load().unwrap().exposed_added, st.exposed_added);
    }
}
