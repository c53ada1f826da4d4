//! The site's command interface: what the control plane may ask and change.
//!
//! A [`SiteHandle`] sends a [`Command`] carrying a oneshot reply to the site
//! actor and awaits it; it holds no state. Validation of new apps uses the
//! config loader's functions so messages match the config file's, and a
//! reload reads the config file with the loader itself, off the actor.

use std::path::PathBuf;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{self, Config, ConfigError, ExposedApp, FieldError, RemoteApp, raw, validate};
use crate::identity::Fingerprint;
use crate::view::{
    AppsInfo, ChannelInfo, PeerInfo, ReloadReport, Sequenced, SiteInfo, StatsSnapshot, StreamInfo,
};

/// Why a control request failed. Mapped to gRPC codes in `control::status`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// The request is invalid; every problem is listed, config-style.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The thing to change does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to add already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The change was applied but could not be persisted.
    #[error("{0}")]
    Persist(String),
    /// The site is shutting down.
    #[error("the site is shutting down")]
    Unavailable,
    /// A reload was asked of a site started without a config file.
    #[error("no config file to reload: this site was started without one")]
    NoConfigFile,
}

/// A config file as read for a reload: validated, or every problem in it.
#[derive(Debug)]
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// The configuration it holds, or why it is invalid (a problem with the
    /// file as a whole, unreadable or not YAML, has an empty path).
    pub config: Result<Config, Vec<FieldError>>,
}

impl Loaded {
    /// Reads and validates `path` exactly as `wovenetd` does at start.
    pub fn read(path: PathBuf) -> Self {
        let config = config::load_file(&path).map_err(|e| match e {
            ConfigError::Invalid(errors) => errors,
            other @ (ConfigError::Read { .. } | ConfigError::Syntax(_)) => {
                vec![FieldError::new("", other.to_string())]
            }
        });
        Self { path, config }
    }
}

/// A request to the site actor.
#[derive(Debug)]
pub enum Command {
    /// Add an exposed app (already validated).
    AddExposedApp(ExposedApp, oneshot::Sender<Result<(), ControlError>>),
    /// Add a remote app (already validated).
    AddRemoteApp(RemoteApp, oneshot::Sender<Result<(), ControlError>>),
    /// Snapshot of all apps.
    Apps(oneshot::Sender<AppsInfo>),
    /// Snapshot of channels and dials.
    Channels(oneshot::Sender<Vec<ChannelInfo>>),
    /// Snapshot of peers.
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    /// Remove an exposed app by name.
    RemoveExposedApp(String, oneshot::Sender<Result<ExposedApp, ControlError>>),
    /// Remove remote apps matching site, app and optionally the local socket.
    RemoveRemoteApp {
        /// Site name.
        site: String,
        /// App name.
        app: String,
        /// Local socket (`tcp:…`/`unix:…`); all matching when `None`.
        local: Option<String>,
        /// Reply: the removed entries.
        reply: oneshot::Sender<Result<Vec<RemoteApp>, ControlError>>,
    },
    /// Forget the identity pinned for a site name, and the site.
    ForgetPeer(String, oneshot::Sender<Result<Fingerprint, ControlError>>),
    /// Apply a config file read for a reload (or report why it is invalid).
    Reload(Box<Loaded>, oneshot::Sender<ReloadReport>),
    /// Site summary.
    Site(oneshot::Sender<SiteInfo>),
    /// Counters and totals.
    Stats(oneshot::Sender<StatsSnapshot>),
    /// Snapshot of streams.
    Streams(oneshot::Sender<Vec<StreamInfo>>),
    /// Subscribe to events; the reply carries the next sequence number so a
    /// watcher can send a snapshot first and then deltas without a gap.
    Subscribe(oneshot::Sender<(u64, broadcast::Receiver<Sequenced>)>),
}

/// Cheap, cloneable handle to a running site.
#[derive(Debug, Clone)]
pub struct SiteHandle {
    tx: mpsc::Sender<Command>,
    /// The config file the site was started from (`None`: built in memory).
    config_file: Option<PathBuf>,
}

impl SiteHandle {
    pub(crate) fn new(tx: mpsc::Sender<Command>, config_file: Option<PathBuf>) -> Self {
        Self { tx, config_file }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ControlError::Unavailable)?;
        rx.await.map_err(|_| ControlError::Unavailable)
    }

    /// Forgets the identity pinned for `site` (and the site: its channels
    /// close); returns that identity.
    pub async fn forget_peer(&self, site: &str) -> Result<Fingerprint, ControlError> {
        let site = site.to_owned();
        self.ask(|r| Command::ForgetPeer(site, r)).await?
    }

    /// Re-reads the config file the site was started from, validates it as
    /// at start and applies the differences live (see `site::reload`); an
    /// invalid file changes nothing. Either way the report is also logged
    /// and published as an event.
    pub async fn reload(&self) -> Result<ReloadReport, ControlError> {
        let path = self.config_file.clone().ok_or(ControlError::NoConfigFile)?;
        // Reading and validating is blocking work: keep it off the actor and
        // off the async workers.
        let loaded = tokio::task::spawn_blocking(move || Loaded::read(path))
            .await
            .map_err(|_| ControlError::Unavailable)?;
        self.ask(|r| Command::Reload(Box::new(loaded), r)).await
    }

    /// Site summary.
    pub async fn site(&self) -> Result<SiteInfo, ControlError> {
        self.ask(Command::Site).await
    }

    /// Every peer seen.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, ControlError> {
        self.ask(Command::Peers).await
    }

    /// Every dataChannel and dial.
    pub async fn channels(&self) -> Result<Vec<ChannelInfo>, ControlError> {
        self.ask(Command::Channels).await
    }

    /// Every open stream.
    pub async fn streams(&self) -> Result<Vec<StreamInfo>, ControlError> {
        self.ask(Command::Streams).await
    }

    /// Exposed and remote apps.
    pub async fn apps(&self) -> Result<AppsInfo, ControlError> {
        self.ask(Command::Apps).await
    }

    /// Counters and totals.
    pub async fn stats(&self) -> Result<StatsSnapshot, ControlError> {
        self.ask(Command::Stats).await
    }

    /// Subscribes to events; returns the sequence number of the next event.
    pub async fn subscribe(&self) -> Result<(u64, broadcast::Receiver<Sequenced>), ControlError> {
        self.ask(Command::Subscribe).await
    }

    /// Validates (same rules and messages as `localExposedApps[]` in the
    /// config file, with paths relative to the app) and adds an exposed app;
    /// peers learn of it at once. Persisted.
    pub async fn add_exposed_app(&self, app: &raw::ExposedApp) -> Result<ExposedApp, ControlError> {
        let app = validate::exposed_app(app, "").map_err(ControlError::Invalid)?;
        self.ask(|r| Command::AddExposedApp(app.clone(), r))
            .await??;
        Ok(app)
    }

    /// Removes an exposed app: no new streams; open ones finish. Persisted.
    pub async fn remove_exposed_app(&self, name: &str) -> Result<ExposedApp, ControlError> {
        self.ask(|r| Command::RemoveExposedApp(name.to_string(), r))
            .await?
    }

    /// Validates (same rules as `remoteApps[]`) and adds a remote app. Persisted.
    pub async fn add_remote_app(&self, app: &raw::RemoteApp) -> Result<RemoteApp, ControlError> {
        let app = validate::remote_app(app, "").map_err(ControlError::Invalid)?;
        self.ask(|r| Command::AddRemoteApp(app.clone(), r))
            .await??;
        Ok(app)
    }

    /// Removes remote apps of `site`/`app` (only the one on `local` if given). Persisted.
    pub async fn remove_remote_app(
        &self,
        site: &str,
        app: &str,
        local: Option<&str>,
    ) -> Result<Vec<RemoteApp>, ControlError> {
        self.ask(|reply| Command::RemoveRemoteApp {
            site: site.to_string(),
            app: app.to_string(),
            local: local.map(str::to_string),
            reply,
        })
        .await?
    }
}
