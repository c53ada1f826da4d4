//! What a reload of the config file changes: the pure diff of the running
//! site and the new effective configuration into a [`Plan`] that the site
//! actor executes (`site::reconfigure`).
//!
//! The new configuration is the file's, validated as at start, with the
//! state file's live changes applied by [`crate::store::State::apply`] (the
//! start-up merge), so apps added or removed through the API compare equal
//! and are left alone. What is compared:
//! - exposed apps by `appName`: added, removed, or changed (same name,
//!   another definition: replaced, so new streams get the new definition);
//! - remote apps by `localSocket` (the listener is what a client sees):
//!   added, removed, or changed (another app, target or limit behind the same
//!   socket: the listener is reopened); an unchanged one is not touched;
//! - `logger.level`;
//! - every other field only to report that its change needs a restart
//!   (sockets, keys, broker, identity rules, log destination), never applied.
//!
//! Nothing here does I/O or touches the actor's state.

use crate::config::{
    Config, ControlConfig, CryptoConfig, ExposedApp, LogLevel, LoggerConfig, MetricsConfig,
    MqttConfig, RemoteApp, TrustConfig, TunnelConfig,
};

/// What the site runs now.
#[derive(Debug, Clone, Copy)]
pub struct Running<'a> {
    /// The configuration it started with, with the live-applicable fields
    /// (`logger.level`) as last reloaded. Its app lists are not read: apps
    /// change live, so the running sets are passed apart.
    pub config: &'a Config,
    /// Exposed apps served now.
    pub exposed: &'a [ExposedApp],
    /// Remote apps served now, in order.
    pub remote: &'a [RemoteApp],
}

/// The differences to apply live, and those left for a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Exposed apps to add, by name.
    pub exposed_add: Vec<ExposedApp>,
    /// Exposed apps to remove (as they are now), by name.
    pub exposed_remove: Vec<ExposedApp>,
    /// Exposed apps to replace by this definition, by name.
    pub exposed_replace: Vec<ExposedApp>,
    /// Remote apps to add, in the new order.
    pub remote_add: Vec<RemoteApp>,
    /// Remote apps to remove, in the running order.
    pub remote_remove: Vec<RemoteApp>,
    /// Remote apps whose listener is reopened: (running, new), in the new order.
    pub remote_replace: Vec<(RemoteApp, RemoteApp)>,
    /// The new `logger.level`, if it changed.
    pub log_level: Option<LogLevel>,
    /// Paths of changed fields that need a restart.
    pub needs_restart: Vec<&'static str>,
}

impl Plan {
    /// Whether the set of exposed apps or any definition changes (peers must
    /// hear of it: announcement and offers).
    pub fn exposed_changes(&self) -> bool {
        !(self.exposed_add.is_empty()
            && self.exposed_remove.is_empty()
            && self.exposed_replace.is_empty())
    }

    /// Whether any remote app changes.
    pub fn remote_changes(&self) -> bool {
        !(self.remote_add.is_empty()
            && self.remote_remove.is_empty()
            && self.remote_replace.is_empty())
    }
}

/// Compares what runs with `new` (the effective configuration: file plus
/// live changes).
pub fn plan(running: Running<'_>, new: &Config) -> Plan {
    let mut plan = Plan {
        log_level: (new.logger.level != running.config.logger.level).then_some(new.logger.level),
        needs_restart: needs_restart(running.config, new),
        ..Plan::default()
    };
    for app in &new.exposed_apps {
        match running.exposed.iter().find(|a| a.name == app.name) {
            None => plan.exposed_add.push(app.clone()),
            Some(old) if old != app => plan.exposed_replace.push(app.clone()),
            Some(_) => {}
        }
    }
    plan.exposed_remove = running
        .exposed
        .iter()
        .filter(|a| !new.exposed_apps.iter().any(|n| n.name == a.name))
        .cloned()
        .collect();
    for list in [
        &mut plan.exposed_add,
        &mut plan.exposed_remove,
        &mut plan.exposed_replace,
    ] {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    for app in &new.remote_apps {
        match running
            .remote
            .iter()
            .find(|r| r.local_socket == app.local_socket)
        {
            None => plan.remote_add.push(app.clone()),
            Some(old) if old != app => plan.remote_replace.push((old.clone(), app.clone())),
            Some(_) => {}
        }
    }
    plan.remote_remove = running
        .remote
        .iter()
        .filter(|r| {
            !new.remote_apps
                .iter()
                .any(|n| n.local_socket == r.local_socket)
        })
        .cloned()
        .collect();
    plan
}

/// The fields that differ and can only change with a restart, as config
/// paths, in file order.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    // Destructured in full, so that a field added to the config does not
    // compile until it is sorted here: applied live (listed with `_`, and
    // handled by `plan`) or needing a restart (compared).
    let Config {
        site_name,
        crypto: CryptoConfig { key },
        logger: LoggerConfig {
            level: _,
            file,
            format,
        },
        message_channel:
            MqttConfig {
                broker,
                topic,
                username,
                password,
                embedded_broker,
                ca_file,
            },
        tunnel:
            TunnelConfig {
                local_sockets,
                congestion_control,
                max_streams_per_peer,
                worker_threads,
                relay,
            },
        exposed_apps: _,
        remote_apps: _,
        control: ControlConfig { socket },
        metrics: MetricsConfig { listen },
        trust: TrustConfig { mode, sites },
        warnings: _,
    } = new;
    let (mq, tu) = (&old.message_channel, &old.tunnel);
    [
        ("siteName", *site_name != old.site_name),
        ("crypto.key", key.expose() != old.crypto.key.expose()),
        ("logger.file", *file != old.logger.file),
        ("logger.format", *format != old.logger.format),
        ("messageChannel.mqtt.brokerServer", *broker != mq.broker),
        ("messageChannel.mqtt.topic", *topic != mq.topic),
        ("messageChannel.mqtt.username", *username != mq.username),
        ("messageChannel.mqtt.password", *password != mq.password),
        (
            "messageChannel.mqtt.embeddedBroker",
            *embedded_broker != mq.embedded_broker,
        ),
        ("messageChannel.mqtt.caFile", *ca_file != mq.ca_file),
        ("tunnel.localSockets", *local_sockets != tu.local_sockets),
        (
            "tunnel.congestionControl",
            *congestion_control != tu.congestion_control,
        ),
        (
            "tunnel.maxStreamsPerPeer",
            *max_streams_per_peer != tu.max_streams_per_peer,
        ),
        ("tunnel.workerThreads", *worker_threads != tu.worker_threads),
        ("tunnel.relay", *relay != tu.relay),
        ("control.socket", *socket != old.control.socket),
        ("metrics.listen", *listen != old.metrics.listen),
        ("trust.mode", *mode != old.trust.mode),
        ("trust.sites", *sites != old.trust.sites),
    ]
    .into_iter()
    .filter_map(|(path, differs)| differs.then_some(path))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppName, AppSocket, ExposedTarget, SiteName, load_str};

    const BASE: &str = r"
siteName: a
crypto:
  key: test-key-123
messageChannel:
  mqtt:
    brokerServer: mqtt://127.0.0.1:1883
tunnel:
  localSockets:
    - mode: dedicated-address
      publicAddress: 127.0.0.1
      listenPort: 40001
";

    fn config(extra: &str) -> Config {
        load_str(&format!("{BASE}{extra}")).unwrap_or_else(|e| panic!("{e}\n{extra}"))
    }

    fn exposed(name: &str, port: u16) -> ExposedApp {
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

    fn remote(app: &str, port: u16) -> RemoteApp {
        RemoteApp {
            site: SiteName::new("b").unwrap(),
            app: AppName::new(app).unwrap(),
            local_socket: AppSocket::Tcp(([127, 0, 0, 1], port).into()),
            app_socket: None,
            max_connections: None,
            udp_idle_timeout: None,
            bandwidth_limit: None,
        }
    }

    fn diff(old: &Config, new: &Config) -> Plan {
        plan(
            Running {
                config: old,
                exposed: &old.exposed_apps,
                remote: &old.remote_apps,
            },
            new,
        )
    }

    fn names(apps: &[ExposedApp]) -> Vec<&str> {
        apps.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let c = config(
            "localExposedApps:\n  - appName: web\n    appSocket: tcp:127.0.0.1:80\n\
             remoteApps:\n  - siteName: b\n    appName: db\n    localSocket: tcp:127.0.0.1:5432\n",
        );
        assert_eq!(diff(&c, &c.clone()), Plan::default());
    }

    #[test]
    fn exposed_apps_are_added_removed_and_replaced_by_name() {
        let mut old = config("");
        old.exposed_apps = vec![exposed("keep", 1), exposed("gone", 2), exposed("moved", 3)];
        let mut new = old.clone();
        new.exposed_apps = vec![exposed("moved", 33), exposed("new", 4), exposed("keep", 1)];
        let p = diff(&old, &new);
        assert_eq!(names(&p.exposed_add), ["new"]);
        assert_eq!(names(&p.exposed_remove), ["gone"]);
        assert_eq!(
            p.exposed_replace,
            [exposed("moved", 33)],
            "the new definition"
        );
        assert!(p.exposed_changes() && !p.remote_changes());
        assert!(p.needs_restart.is_empty() && p.log_level.is_none());
    }

    #[test]
    fn a_changed_limit_or_allowed_sites_is_a_replaced_app() {
        let mut old = config("");
        old.exposed_apps = vec![exposed("a", 1), exposed("b", 2), exposed("c", 3)];
        let mut new = old.clone();
        new.exposed_apps[0].max_connections = Some(5);
        new.exposed_apps[1].allowed_sites = vec![SiteName::new("z").unwrap()];
        new.exposed_apps[2].udp_idle_timeout = Some(std::time::Duration::from_secs(9));
        let p = diff(&old, &new);
        assert_eq!(names(&p.exposed_replace), ["a", "b", "c"]);
        assert!(p.exposed_add.is_empty() && p.exposed_remove.is_empty());
    }

    #[test]
    fn remote_apps_are_matched_by_local_socket_and_unchanged_ones_left_alone() {
        let mut old = config("");
        old.remote_apps = vec![remote("keep", 1), remote("gone", 2), remote("limit", 3)];
        let mut new = old.clone();
        let mut limited = remote("limit", 3);
        limited.max_connections = Some(2);
        new.remote_apps = vec![
            remote("keep", 1),
            limited.clone(),
            remote("other", 4),
            remote("moved", 5),
        ];
        let p = diff(&old, &new);
        assert_eq!(p.remote_add, [remote("other", 4), remote("moved", 5)]);
        assert_eq!(p.remote_remove, [remote("gone", 2)]);
        assert_eq!(p.remote_replace, [(remote("limit", 3), limited)]);
        // Another app behind the same socket is a change of that listener.
        let mut swapped = old.clone();
        swapped.remote_apps[0] = remote("swapped", 1);
        let p = diff(&old, &swapped);
        assert_eq!(
            p.remote_replace,
            [(remote("keep", 1), remote("swapped", 1))]
        );
        assert!(p.remote_add.is_empty() && p.remote_remove.is_empty());
    }

    #[test]
    fn the_running_apps_are_compared_not_the_old_files() {
        // An app added live is in the running set and in the new effective
        // config (the state file is applied to it): no change.
        let old = config("");
        let live = [exposed("live", 9)];
        let mut new = old.clone();
        new.exposed_apps = live.to_vec();
        let p = plan(
            Running {
                config: &old,
                exposed: &live,
                remote: &[],
            },
            &new,
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn a_level_change_is_applied_live() {
        let old = config("logger:\n  level: info\n");
        let new = config("logger:\n  level: DEBUG\n");
        let p = diff(&old, &new);
        assert_eq!(p.log_level, Some(LogLevel::Debug));
        assert!(p.needs_restart.is_empty());
    }

    #[test]
    fn every_restart_bound_field_is_reported_by_its_path_and_nothing_else() {
        let old = config("");
        let cases = [
            ("siteName: other\n", "siteName"),
            ("crypto:\n  key: another-key-99\n", "crypto.key"),
            ("logger:\n  file: /tmp/x.log\n", "logger.file"),
            ("logger:\n  format: json\n", "logger.format"),
            (
                "messageChannel:\n  mqtt:\n    brokerServer: mqtt://127.0.0.1:1884\n",
                "messageChannel.mqtt.brokerServer",
            ),
            (
                "messageChannel:\n  mqtt:\n    brokerServer: mqtt://127.0.0.1:1883\n    topic: t/x\n",
                "messageChannel.mqtt.topic",
            ),
            (
                "messageChannel:\n  mqtt:\n    brokerServer: mqtt://127.0.0.1:1883\n    username: u\n",
                "messageChannel.mqtt.username",
            ),
            (
                "messageChannel:\n  mqtt:\n    brokerServer: mqtt://127.0.0.1:1883\n    username: u\n    password: p\n",
                "messageChannel.mqtt.password",
            ),
            (
                "tunnel:\n  relay:\n    turn:\n      url: turn:127.0.0.1\n      username: u\n      password: p\n  localSockets:\n    - mode: dedicated-address\n      publicAddress: 127.0.0.1\n      listenPort: 40001\n",
                "tunnel.relay",
            ),
            (
                "trust:\n  sites:\n    - siteName: b\n      identity: hfqku7jmljxqcy44vv6js2nuzo7hxo4u\n",
                "trust.sites",
            ),
            (
                "messageChannel:\n  mqtt:\n    brokerServer: mqtt://127.0.0.1:1883\n    embeddedBroker:\n      listen: 127.0.0.1:1883\n",
                "messageChannel.mqtt.embeddedBroker",
            ),
            (
                "tunnel:\n  localSockets:\n    - mode: dedicated-address\n      publicAddress: 127.0.0.1\n      listenPort: 40002\n",
                "tunnel.localSockets",
            ),
            (
                "tunnel:\n  congestionControl: cubic\n  localSockets:\n    - mode: dedicated-address\n      publicAddress: 127.0.0.1\n      listenPort: 40001\n",
                "tunnel.congestionControl",
            ),
            (
                "tunnel:\n  maxStreamsPerPeer: 10\n  localSockets:\n    - mode: dedicated-address\n      publicAddress: 127.0.0.1\n      listenPort: 40001\n",
                "tunnel.maxStreamsPerPeer",
            ),
            ("control:\n  socket: /tmp/other.sock\n", "control.socket"),
            ("metrics:\n  listen: 127.0.0.1:9100\n", "metrics.listen"),
            ("trust:\n  mode: open\n", "trust.mode"),
        ];
        for (yaml, path) in cases {
            // The section replaces BASE's.
            let new = load_str(&merge(BASE, yaml)).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            // The password needs a username: the old file has the same one.
            let old = if path.ends_with("password") {
                let mut o = new.clone();
                o.message_channel.password = None;
                o
            } else {
                old.clone()
            };
            let p = diff(&old, &new);
            assert_eq!(p.needs_restart, [path], "{yaml}");
            assert!(
                !p.exposed_changes() && !p.remote_changes() && p.log_level.is_none(),
                "{yaml}"
            );
        }
    }

    #[test]
    fn live_changes_are_planned_beside_restart_bound_ones() {
        let old = config("");
        let mut new = config("");
        new.site_name = SiteName::new("renamed").unwrap();
        new.exposed_apps = vec![exposed("web", 80)];
        let p = diff(&old, &new);
        assert_eq!(p.needs_restart, ["siteName"]);
        assert_eq!(names(&p.exposed_add), ["web"], "still planned");
    }

    /// `base` with the top-level sections of `over` replacing its own.
    fn merge(base: &str, over: &str) -> String {
        let mut doc: serde_yaml::Mapping = serde_yaml::from_str(base).unwrap();
        let over: serde_yaml::Mapping = serde_yaml::from_str(over).unwrap();
        for (k, v) in over {
            doc.insert(k, v);
        }
        serde_yaml::to_string(&doc).unwrap()
    }
}
