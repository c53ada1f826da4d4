//! Control requests the site actor answers: snapshots (built in
//! `snapshot`) and live app changes (add/remove exposed and remote apps,
//! persisted through [`crate::store`]).
//!
//! Runs inside the actor, so it changes site state without locks; it must
//! not decide anything about peers or channels.

use tracing::{info, warn};

use super::Site;
use super::handle::{Command, ControlError};
use super::trust::ForgetError;
use crate::config::{AppName, ExposedApp, RemoteApp, SiteName};
use crate::identity::Fingerprint;
use crate::view::Event;

impl Site {
    pub(super) async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Site(r) => {
                let _ = r.send(self.site_info());
            }
            Command::Peers(r) => {
                let _ = r.send(self.peer_infos());
            }
            Command::Channels(r) => {
                let _ = r.send(self.channel_infos());
            }
            Command::Streams(r) => {
                let _ = r.send(self.streams.snapshot());
            }
            Command::Apps(r) => {
                let _ = r.send(self.apps_info());
            }
            Command::Stats(r) => {
                let _ = r.send(self.stats());
            }
            Command::Subscribe(r) => {
                let _ = r.send(self.bus.subscribe());
            }
            Command::AddExposedApp(app, r) => {
                let result = self.add_exposed(app).await;
                let _ = r.send(result);
            }
            Command::RemoveExposedApp(name, r) => {
                let result = self.remove_exposed(&name).await;
                let _ = r.send(result);
            }
            Command::AddRemoteApp(app, r) => {
                let _ = r.send(self.add_remote(app));
            }
            Command::ForgetPeer(site, r) => {
                let _ = r.send(self.forget_peer(&site).await);
            }
            Command::Reload(loaded, r) => {
                let _ = r.send(self.reload(*loaded).await);
            }
            Command::RemoveRemoteApp {
                site,
                app,
                local,
                reply,
            } => {
                let _ = reply.send(self.remove_remote(&site, &app, local.as_deref()));
            }
        }
    }

    /// Writes the live change to the state file, with any pins learnt since
    /// the last write.
    fn persist(&mut self) -> Result<(), ControlError> {
        let pins = self.take_pins();
        let Some(store) = &self.store else {
            return Ok(());
        };
        store.save(&self.state).map_err(|e| {
            warn!(error = %e, "live change not persisted");
            if pins {
                self.trust.unsaved();
            }
            ControlError::Persist(format!("applied, but not persisted: {e}"))
        })
    }

    async fn add_exposed(&mut self, app: ExposedApp) -> Result<(), ControlError> {
        if let Some(e) = crate::config::validate::own_site_allowed(&app, &self.name, "") {
            return Err(ControlError::Invalid(vec![e]));
        }
        let name = app.name.clone();
        self.exposed.insert(app.clone()).map_err(|_| {
            ControlError::AlreadyExists(format!(
                "localExposedApps: an app named '{name}' is already exposed"
            ))
        })?;
        info!(app.name = %name, "exposed app added");
        // Streams of an earlier app of that name still open follow its limit.
        self.streams.throttles().apply_exposed(&app);
        self.state.add_exposed(&app);
        self.bus.emit(Event::ExposedAppAdded { app: name });
        // Peers learn at once, not at the next periodic announcement.
        self.seq += 1;
        self.announce(false).await;
        self.persist()
    }

    async fn remove_exposed(&mut self, name: &str) -> Result<ExposedApp, ControlError> {
        let not_found = || ControlError::NotFound(format!("no exposed app named '{name}'"));
        let key = AppName::new(name).map_err(|_| not_found())?;
        let app = self.exposed.remove(&key).ok_or_else(not_found)?;
        info!(app.name = %key, "exposed app removed");
        self.state
            .remove_exposed(&app, self.config_exposed.contains(&key));
        self.bus.emit(Event::ExposedAppRemoved { app: key });
        self.seq += 1;
        self.announce(false).await;
        self.persist()?;
        Ok(app)
    }

    async fn forget_peer(&mut self, site: &str) -> Result<Fingerprint, ControlError> {
        let name = SiteName::new(site).map_err(|e| {
            ControlError::Invalid(vec![crate::config::FieldError::new("siteName", e)])
        })?;
        let identity = self.trust.forget(&name).map_err(|e| match e {
            ForgetError::NotPinned(_) => ControlError::NotFound(e.to_string()),
            ForgetError::Listed(_) | ForgetError::OwnName(_) | ForgetError::Open => {
                ControlError::Invalid(vec![crate::config::FieldError::new(
                    "siteName",
                    e.to_string(),
                )])
            }
        })?;
        warn!(peer.site = %name, identity = %identity, "site identity forgotten by the operator; the next identity announcing this name is pinned");
        self.peers.forget(&name);
        self.apply().await;
        let persisted = self.persist();
        // Everyone answers with a fresh announcement: the site is learnt
        // again (and its identity pinned) within a round trip.
        self.announce(true).await;
        persisted?;
        Ok(identity)
    }

    fn add_remote(&mut self, app: RemoteApp) -> Result<(), ControlError> {
        if app.site == self.name {
            return Err(ControlError::Invalid(vec![crate::config::FieldError::new(
                "siteName",
                format!("'{}' is this site's own name", app.site),
            )]));
        }
        if let Some(other) = self
            .remote_apps
            .iter()
            .find(|r| r.local_socket == app.local_socket)
        {
            return Err(ControlError::AlreadyExists(format!(
                "remoteApps: localSocket '{}' is already used by app '{}' of site '{}'",
                app.local_socket, other.app, other.site
            )));
        }
        info!(peer.site = %app.site, app.name = %app.app, local = %app.local_socket, "remote app added");
        self.state.add_remote(&app);
        self.remote_apps.push(app.clone());
        self.bus.emit(Event::RemoteAppAdded { app });
        self.reconcile_listeners();
        self.persist()
    }

    fn remove_remote(
        &mut self,
        site: &str,
        app: &str,
        local: Option<&str>,
    ) -> Result<Vec<RemoteApp>, ControlError> {
        let matches = |r: &RemoteApp| {
            r.site.as_str() == site
                && r.app.as_str() == app
                && local.is_none_or(|l| r.local_socket.to_string() == l)
        };
        let (gone, keep): (Vec<_>, Vec<_>) = self.remote_apps.drain(..).partition(|r| matches(r));
        self.remote_apps = keep;
        if gone.is_empty() {
            let on = local.map(|l| format!(" on '{l}'")).unwrap_or_default();
            return Err(ControlError::NotFound(format!(
                "no remote app '{app}' of site '{site}'{on}"
            )));
        }
        for r in &gone {
            info!(peer.site = %r.site, app.name = %r.app, local = %r.local_socket, "remote app removed");
            self.state.remove_remote(r, self.config_remote.contains(r));
            self.listener_errors.remove(r);
            self.bus.emit(Event::RemoteAppRemoved { app: r.clone() });
        }
        self.reconcile_listeners();
        self.persist()?;
        Ok(gone)
    }
}
