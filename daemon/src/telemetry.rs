//! Logging setup from `logger.{level,file,format}`; `WOVENET_LOG` (an
//! `EnvFilter` directive) overrides the level. Must be called once per
//! process, before the site starts. The level can be changed afterwards
//! through the [`LevelControl`] it returns (a config reload); the file and
//! format cannot. The JSON line format is [`json`]'s.
//! Text goes without colours unless stdout is a terminal and `NO_COLOR` is
//! unset, so journald and files get plain lines.

pub mod json;

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogFormat, LogLevel, LoggerConfig};

/// Environment variable that overrides `logger.level` (e.g. `wovenet_daemon=trace,quinn=debug`).
pub const ENV_FILTER: &str = "WOVENET_LOG";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log file could not be opened.
    #[error("logger.file: cannot open '{path}': {source}")]
    File {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `WOVENET_LOG` is not a valid filter.
    #[error("{ENV_FILTER}: {0}")]
    Filter(String),
    /// `logger.level` cannot change: `WOVENET_LOG` decides the level.
    #[error("logger.level: not applied, {ENV_FILTER} is set and overrides it")]
    Overridden,
    /// The installed filter could not be replaced.
    #[error("logger.level: cannot change the level")]
    Reload(#[source] reload::Error),
}

/// The registry under its level filter: what the output layer sits on.
type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// Changes the level of the subscriber [`init`] installed.
#[derive(Debug, Clone)]
pub struct LevelControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `WOVENET_LOG` was set at start: the config's level is ignored.
    overridden: bool,
}

impl LevelControl {
    /// Sets `logger.level` for every line logged from now on.
    pub fn set(&self, level: LogLevel) -> Result<(), TelemetryError> {
        if self.overridden {
            return Err(TelemetryError::Overridden);
        }
        self.handle
            .reload(config_filter(level))
            .map_err(TelemetryError::Reload)
    }
}

/// The filter for `logger.level`: dependencies log at `warn`, their debug
/// output would drown ours.
fn config_filter(level: LogLevel) -> EnvFilter {
    let l = level.as_str();
    // rumqttd logs ordinary client disconnects at error level.
    EnvFilter::new(format!("warn,rumqttd=off,wovenet_daemon={l},wovenetd={l}"))
}

/// Installs the global subscriber and returns what changes its level.
/// Dependencies log at `warn` unless `WOVENET_LOG` says otherwise.
pub fn init(cfg: &LoggerConfig) -> Result<LevelControl, TelemetryError> {
    let (filter, overridden) = match std::env::var(ENV_FILTER) {
        Ok(s) if !s.is_empty() => (
            EnvFilter::try_new(&s).map_err(|e| TelemetryError::Filter(e.to_string()))?,
            true,
        ),
        _ => (config_filter(cfg.level), false),
    };
    // The filter sits in a reload layer, the formatter on top of it: the
    // formatter's type varies with the format and writer, the handle's does not.
    let (filter, handle) = reload::Layer::new(filter);
    let output: Box<dyn Layer<Filtered> + Send + Sync> = match (&cfg.file, cfg.format) {
        (Some(path), format) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| TelemetryError::File {
                    path: path.display().to_string(),
                    source,
                })?;
            let writer = Mutex::new(file);
            match format {
                LogFormat::Json => json_layer().with_writer(writer).boxed(),
                LogFormat::Text => tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer)
                    .boxed(),
            }
        }
        (None, LogFormat::Json) => json_layer().boxed(),
        (None, LogFormat::Text) => tracing_subscriber::fmt::layer()
            .with_ansi(colours())
            .boxed(),
    };
    // A second init (tests, demo) keeps the first subscriber; that is fine
    // (the returned control then changes nothing).
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    Ok(LevelControl { handle, overridden })
}

/// The [`json`] line format as a layer.
fn json_layer<S>() -> tracing_subscriber::fmt::Layer<S, JsonFields, json::JsonLines>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(json::JsonLines)
}

/// Colours only for a person at a terminal who has not asked for none (no-color.org).
fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::Level;
    use tracing_subscriber::layer::Context;

    use super::*;

    /// Records the level and message of every event that gets through.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Level>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(*event.metadata().level());
        }
    }

    #[test]
    fn a_new_level_applies_to_lines_logged_after_it() {
        let (filter, handle) = reload::Layer::new(config_filter(LogLevel::Info));
        let control = LevelControl {
            handle,
            overridden: false,
        };
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "wovenet_daemon::site", "not yet");
            tracing::info!(target: "wovenet_daemon::site", "shown");
            control.set(LogLevel::Debug).expect("reload");
            tracing::debug!(target: "wovenet_daemon::site", "now shown");
            tracing::debug!(target: "quinn", "dependencies stay at warn");
            control.set(LogLevel::Error).expect("reload");
            tracing::warn!(target: "wovenet_daemon::site", "hidden again");
        });
        assert_eq!(*seen.0.lock().expect("lock"), [Level::INFO, Level::DEBUG]);
    }

    #[test]
    fn with_wovenet_log_set_the_config_level_is_not_applied() {
        let (_filter, handle) = reload::Layer::<_, Registry>::new(config_filter(LogLevel::Info));
        let control = LevelControl {
            handle,
            overridden: true,
        };
        let e = control.set(LogLevel::Debug).expect_err("overridden");
        assert!(matches!(e, TelemetryError::Overridden), "{e:?}");
        assert!(e.to_string().starts_with("logger.level: "), "{e}");
    }
}
