//! wovenet site engine.
//!
//! A site discovers other sites over an MQTT broker ([`message`]), builds
//! authenticated QUIC tunnels to them ([`tunnel`]) and forwards app
//! connections as QUIC streams ([`app`]). [`site`] is the actor that ties these
//! together; [`config`] turns YAML into validated types. The engine knows
//! nothing about gRPC or terminals: only [`control`] speaks protobuf.
//!
//! Lifecycle (used by `wovenetd`, `wovenetd demo` and tests alike): load a
//! [`config::Config`], [`Daemon::start`] it (binds everything, so errors
//! surface before it returns), then [`Running::shutdown`] with a grace period.
//! `wovenetd` also serves the [`control`] plane (gRPC on a unix socket) for
//! the running site; it talks to the site only through its [`site::handle`].

pub mod accept;
pub mod app;
pub mod config;
pub mod control;
pub mod counters;
pub mod crypto;
pub mod demo;
pub mod detect;
pub mod error;
pub mod identity;
pub mod limit;
pub mod memory;
pub mod message;
pub mod notify;
pub mod signals;
pub mod site;
pub mod store;
pub mod telemetry;
pub mod tunnel;
pub mod types;
pub mod view;
pub mod warn_limit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::app::ExposedApps;
use crate::config::Config;
use crate::counters::Counters;
use crate::crypto::Keys;
use crate::message::announce::{InstanceId, LoopbackPeers};
use crate::message::mqtt::MessageChannel;
use crate::tunnel::Tunnels;
use crate::tunnel::auth::PeerId;

/// Why a site could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The embedded broker could not start.
    #[error("embedded broker: {0}")]
    Broker(message::MessageError),
    /// The message channel could not start.
    #[error("message channel: {0}")]
    Message(message::MessageError),
    /// A tunnel socket could not be bound.
    #[error("tunnel.localSockets[{index}]: {source}")]
    Tunnel {
        /// Index in `tunnel.localSockets`.
        index: usize,
        /// The error.
        source: tunnel::TunnelError,
    },
    /// Tunnel setup failed.
    #[error("tunnel: {0}")]
    TunnelSetup(tunnel::TunnelError),
    /// The key derivation task panicked or was cancelled.
    #[error("crypto.key: key derivation failed: {0}")]
    KeyDerivation(tokio::task::JoinError),
    /// The state file of live changes could not be read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The site's identity key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
}

/// How a site is started beyond its config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where live app changes are persisted and re-applied from (`None`: not persisted).
    pub store: Option<store::Store>,
    /// The config file the site was loaded from, re-read by a reload
    /// (`None`: reloads are refused).
    pub config_file: Option<std::path::PathBuf>,
    /// Changes the log level on reload (`None`: a level change is reported
    /// as not applied).
    pub log_level: Option<telemetry::LevelControl>,
}

/// Entry point of the engine.
pub struct Daemon;

impl Daemon {
    /// Starts a site: embedded broker (if configured), key derivation, tunnel
    /// listeners, message channel and the site actor. Returns once everything
    /// is bound; discovery and tunnels then proceed in the background.
    pub async fn start(config: Config) -> Result<Running, DaemonError> {
        Self::start_with(config, Options::default()).await
    }

    /// [`start`](Self::start) with options: live changes from `options.store`
    /// are applied over the config first.
    pub async fn start_with(mut config: Config, options: Options) -> Result<Running, DaemonError> {
        let state = match &options.store {
            Some(store) => store.load()?,
            None => store::State::default(),
        };
        let state_warnings = state.apply(&mut config);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let span = info_span!("site", site.name = %config.site_name);
        for w in &state_warnings {
            warn!(parent: &span, "{w}");
        }
        if let Some(store) = &options.store {
            info!(parent: &span, path = %store.path().display(), "live changes persisted in state file");
        }
        let broker = match config.message_channel.embedded_broker {
            Some(b) => {
                let broker = message::broker::start(b.listen).map_err(DaemonError::Broker)?;
                info!(parent: &span, listen = %b.listen, "embedded broker listening");
                Some(broker)
            }
            None => None,
        };
        // Memory-hard on purpose (hundreds of ms): keep it off the async workers.
        let key = config.crypto.key.clone();
        let keys = Arc::new(
            tokio::task::spawn_blocking(move || Keys::derive(&key))
                .await
                .map_err(DaemonError::KeyDerivation)?,
        );
        let site_key = Arc::new(load_identity(options.store.as_ref(), &span)?);
        let identity = site_key.public().fingerprint();
        let instance = InstanceId::new_random();
        let counters = Arc::new(Counters::default());
        let exposed = Arc::new(
            ExposedApps::new(config.exposed_apps.clone())
                .with_peer_limit(config.tunnel.max_streams_per_peer),
        );
        let bus = Arc::new(view::EventBus::default());
        let streams = Arc::new(app::StreamRegistry::new(bus.clone()));
        let (tunnel_tx, tunnel_rx) = mpsc::channel(256);
        let me = PeerId {
            site: config.site_name.clone(),
            instance,
        };
        let server = app::ExposedServer::new(
            exposed.clone(),
            counters.clone(),
            streams.clone(),
            shutdown.child_token(),
        );
        let tunnels = Tunnels::new(
            tunnel::Setup {
                me,
                keys: keys.clone(),
                congestion: config.tunnel.congestion_control,
                server: Arc::new(server),
                counters: counters.clone(),
                events_tx: tunnel_tx,
                loopback: LoopbackPeers::for_channel(&config.message_channel),
                relay: config.tunnel.relay.clone(),
            },
            shutdown.child_token(),
            tracker.clone(),
        )
        .map_err(DaemonError::TunnelSetup)?;
        let mut sockets = Vec::new();
        for (index, s) in config.tunnel.local_sockets.iter().enumerate() {
            let bound = {
                let _g = span.enter();
                tunnels
                    .listen(index as u32, s)
                    .map_err(|source| DaemonError::Tunnel { index, source })?
            };
            info!(parent: &span, local = %bound, "tunnel socket listening");
            sockets.push((s.clone(), bound));
        }
        // Not a child of `shutdown`: the site must still publish its
        // departure after shutdown begins, then stops the channel itself.
        let messages_stop = CancellationToken::new();
        let (messages, inbound_rx) = {
            let _g = span.enter();
            MessageChannel::spawn(
                &config.message_channel,
                config.site_name.clone(),
                instance,
                message::mqtt::Credentials {
                    keys,
                    identity: site_key,
                },
                counters.clone(),
                messages_stop.clone(),
                &tracker,
            )
            .map_err(DaemonError::Message)?
        };
        let tunnel_addrs = sockets.iter().map(|s| s.1).collect();
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let parts = site::Parts {
            name: config.site_name.clone(),
            instance,
            tunnels,
            sockets,
            messages,
            messages_stop: messages_stop.clone(),
            inbound_rx,
            tunnel_rx,
            exposed,
            remote_apps: config.remote_apps.clone(),
            counters: counters.clone(),
            streams,
            bus,
            cmd_rx,
            store: options.store,
            state,
            broker_url: config.message_channel.broker.to_string(),
            identity,
            trust: config.trust.clone(),
            log_level: options.log_level,
            config,
        };
        let site_task = tokio::spawn(
            site::Site::run(parts, shutdown.child_token(), tracker.clone())
                .instrument(span.clone()),
        );
        info!(parent: &span, instance = %instance, "site started");
        Ok(Running {
            shutdown,
            tracker,
            site_task,
            tunnel_addrs,
            counters,
            messages_stop,
            handle: site::handle::SiteHandle::new(cmd_tx, options.config_file),
            _broker: broker,
        })
    }
}

/// The site's identity: the key file beside the state file (created on
/// first start), or a fresh key kept in memory when nothing is persisted.
fn load_identity(
    store: Option<&store::Store>,
    span: &tracing::Span,
) -> Result<identity::SiteKey, DaemonError> {
    let Some(store) = store else {
        let key = identity::SiteKey::generate()?;
        info!(parent: span, identity = %key.public().fingerprint(), "site identity (in memory only: no state file)");
        return Ok(key);
    };
    let path = identity::path_beside(store.path());
    let (key, created) = identity::SiteKey::load_or_create(&path)?;
    let fp = key.public().fingerprint();
    if created {
        info!(parent: span, identity = %fp, path = %path.display(), "site identity created");
    } else {
        info!(parent: span, identity = %fp, path = %path.display(), "site identity loaded");
    }
    Ok(key)
}

/// A started site.
#[must_use = "dropping a Running site leaves its tasks running until the runtime stops"]
pub struct Running {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    site_task: tokio::task::JoinHandle<()>,
    tunnel_addrs: Vec<SocketAddr>,
    counters: Arc<Counters>,
    messages_stop: CancellationToken,
    handle: site::handle::SiteHandle,
    _broker: Option<message::broker::EmbeddedBroker>,
}

impl Running {
    /// Bound addresses of the tunnel sockets, in config order.
    pub fn tunnel_addrs(&self) -> &[SocketAddr] {
        &self.tunnel_addrs
    }

    /// Handle for control requests.
    pub fn handle(&self) -> &site::handle::SiteHandle {
        &self.handle
    }

    /// The site's drop/refuse counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// A token cancelled when [`shutdown`](Self::shutdown) begins, for tasks
    /// run beside the site (the control plane).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// The tracker [`shutdown`](Self::shutdown) waits on; tasks run beside
    /// the site are spawned on it so they get the same grace period.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Departs, closes listeners and channels, and waits up to `grace` for
    /// every task to finish.
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown.cancel();
        // The site task departs and closes tunnels first; the rest follow.
        if tokio::time::timeout(grace, self.site_task).await.is_err() {
            warn!("site did not stop within the grace period");
        }
        self.messages_stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                tasks = self.tracker.len(),
                "tasks still running after the grace period"
            );
        }
    }
}
