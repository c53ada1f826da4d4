//! Config reloads inside the site actor: the file as the handle read it,
//! merged with the state file's live changes exactly as at start
//! ([`State::apply`](crate::store::State::apply)), compared by
//! [`reload::plan`], and the plan executed: exposed apps swapped in
//! [`ExposedApps`](crate::app::ExposedApps) (peers told at once through the
//! announcement and its offers), remote-app listeners closed and reopened,
//! the log level set. The outcome is logged and published as an event.
//!
//! It decides nothing (what changes is [`reload`]'s) and never touches a
//! stream: open streams of a removed or changed app run to their end.

use std::path::PathBuf;
use std::time::Duration;

use tracing::{error, info, warn};

use super::handle::Loaded;
use super::{Site, from_file, reload};
use crate::config::{Config, ExposedApp};
use crate::view::{Event, ReloadOutcome, ReloadReport};

/// How long a closed listener may take to release its socket before the
/// new one tries to bind it (a failed bind is retried by housekeeping).
const SHUT_TIMEOUT: Duration = Duration::from_secs(2);

impl Site {
    /// Applies `loaded` (or reports why it cannot be), logs the outcome and
    /// publishes it on the event bus.
    pub(super) async fn reload(&mut self, loaded: Loaded) -> ReloadReport {
        let Loaded { path, config } = loaded;
        let report = match config {
            Ok(config) => self.apply_config(path, config).await,
            Err(errors) => ReloadReport {
                config_file: path,
                errors,
                ..ReloadReport::default()
            },
        };
        log_report(&report);
        self.bus.emit(Event::ConfigReloaded {
            report: Box::new(report.clone()),
        });
        // After the event, so a watcher knows the new remote apps by the
        // time their listeners open.
        self.reconcile_listeners();
        report
    }

    async fn apply_config(&mut self, path: PathBuf, mut config: Config) -> ReloadReport {
        let mut warnings = std::mem::take(&mut config.warnings);
        // The start-up merge: the file's apps with the live changes applied.
        warnings.extend(self.state.apply(&mut config));
        let exposed_now: Vec<ExposedApp> = self
            .exposed
            .names()
            .iter()
            .filter_map(|n| self.exposed.get(n))
            .collect();
        let plan = reload::plan(
            reload::Running {
                config: &self.config,
                exposed: &exposed_now,
                remote: &self.remote_apps,
            },
            &config,
        );

        for app in &plan.exposed_remove {
            self.exposed.remove(&app.name);
            info!(app.name = %app.name, "exposed app removed by reload");
        }
        for app in plan.exposed_add.iter().chain(&plan.exposed_replace) {
            // A replaced app keeps its open streams (and their slots).
            let replaced = self.exposed.replace(app.clone()).is_some();
            // Its bandwidthLimit binds the open streams too, from now on.
            self.streams.throttles().apply_exposed(app);
            let what = if replaced { "changed" } else { "added" };
            info!(app.name = %app.name, "exposed app {what} by reload");
        }

        // Listeners going away are closed first, and their sockets awaited,
        // so a changed app's new listener can bind the same address at once.
        let closing = plan
            .remote_remove
            .iter()
            .chain(plan.remote_replace.iter().map(|(old, _)| old));
        for old in closing {
            self.listener_errors.remove(old);
            if let Some(l) = self.listeners.remove(old) {
                if tokio::time::timeout(SHUT_TIMEOUT, l.shut()).await.is_err() {
                    warn!(peer.site = %old.site, app.name = %old.app, local = %old.local_socket, "listener socket not released in time");
                }
                info!(peer.site = %old.site, app.name = %old.app, local = %old.local_socket, "remote app listener closed");
                self.bus.emit(Event::ListenerClosed { app: old.clone() });
            }
        }
        for r in &plan.remote_remove {
            info!(peer.site = %r.site, app.name = %r.app, local = %r.local_socket, "remote app removed by reload");
        }
        for r in plan
            .remote_add
            .iter()
            .chain(plan.remote_replace.iter().map(|(_, new)| new))
        {
            info!(peer.site = %r.site, app.name = %r.app, local = %r.local_socket, "remote app added or changed by reload");
        }
        // The effective list, in its order: file apps, then live-added ones.
        self.remote_apps = std::mem::take(&mut config.remote_apps);
        let names = config.exposed_apps.iter().map(|a| a.name.clone());
        (self.config_exposed, self.config_remote) =
            from_file(names, &self.remote_apps, &self.state);

        let mut log_level = None;
        if let Some(level) = plan.log_level {
            match self.log_level.as_ref().map(|c| c.set(level)) {
                Some(Ok(())) => {
                    info!(level = level.as_str(), "log level changed by reload");
                    self.config.logger.level = level;
                    log_level = Some(level);
                }
                Some(Err(e)) => warnings.push(e.to_string()),
                None => warnings.push(
                    "logger.level: not applied, this site does not own its logging".to_owned(),
                ),
            }
        }

        if plan.exposed_changes() {
            // Peers learn at once (offers of restricted apps go with it).
            self.seq += 1;
            self.announce(false).await;
        }

        ReloadReport {
            config_file: path,
            exposed_added: plan.exposed_add,
            exposed_removed: plan.exposed_remove,
            exposed_changed: plan.exposed_replace,
            remote_added: plan.remote_add,
            remote_removed: plan.remote_remove,
            remote_changed: plan
                .remote_replace
                .into_iter()
                .map(|(_, new)| new)
                .collect(),
            log_level,
            needs_restart: plan.needs_restart.iter().map(|p| (*p).to_owned()).collect(),
            errors: Vec::new(),
            warnings,
        }
    }
}

/// One line for the outcome, one per error or warning.
fn log_report(r: &ReloadReport) {
    let file = r.config_file.display();
    for w in &r.warnings {
        warn!(config.file = %file, "{w}");
    }
    match r.outcome() {
        ReloadOutcome::Applied => {
            info!(config.file = %file, changes = r.applied(), "configuration reloaded");
        }
        ReloadOutcome::NeedsRestart => warn!(
            config.file = %file,
            changes = r.applied(),
            needs_restart = ?r.needs_restart,
            "configuration reloaded, but some changes need a restart of wovenetd and were not applied"
        ),
        ReloadOutcome::Invalid => {
            for e in &r.errors {
                error!(config.file = %file, field = %e.path, reason = %e.reason, "invalid configuration");
            }
            error!(
                config.file = %file,
                errors = r.errors.len(),
                "configuration not reloaded: the file is invalid; still running on the previous one"
            );
        }
    }
}
