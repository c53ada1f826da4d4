//! Logging setup from `logger.{level,file,format}`; `WOVENET_LOG` (an
//! `EnvFilter` directive) overrides the level. Must be called once per
//! process, before the site starts. The JSON line format is [`json`]'s.
//! Text goes without colours unless stdout is a terminal and `NO_COLOR` is
//! unset, so journald and files get plain lines.

pub mod json;

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::JsonFields;

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
}

fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// Installs the global subscriber. Dependencies log at `warn` unless
/// `WOVENET_LOG` says otherwise: their debug output would drown ours.
pub fn init(cfg: &LoggerConfig) -> Result<(), TelemetryError> {
    let filter = match std::env::var(ENV_FILTER) {
        Ok(s) if !s.is_empty() => {
            EnvFilter::try_new(&s).map_err(|e| TelemetryError::Filter(e.to_string()))?
        }
        _ => {
            let l = level_name(cfg.level);
            // rumqttd logs ordinary client disconnects at error level.
            EnvFilter::new(format!("warn,rumqttd=off,wovenet_daemon={l},wovenetd={l}"))
        }
    };
    let text = tracing_subscriber::fmt();
    let json = tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(json::JsonLines);
    let result = match (&cfg.file, cfg.format) {
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
                LogFormat::Json => json.with_env_filter(filter).with_writer(writer).try_init(),
                LogFormat::Text => text
                    .with_env_filter(filter)
                    .with_ansi(false)
                    .with_writer(writer)
                    .try_init(),
            }
        }
        (None, LogFormat::Json) => json.with_env_filter(filter).try_init(),
        (None, LogFormat::Text) => text.with_env_filter(filter).with_ansi(colours()).try_init(),
    };
    // A second init (tests, demo) keeps the first subscriber; that is fine.
    let _ = result;
    Ok(())
}

/// Colours only for a person at a terminal who has not asked for none (no-color.org).
fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
