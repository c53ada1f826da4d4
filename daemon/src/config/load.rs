//! placeholder
use super::{Config, ConfigError};
/// Placeholder.
pub fn load_str(_s: &str) -> Result<Config, ConfigError> {
    Err(ConfigError::Syntax("not implemented".into()))
}
/// Placeholder.
pub fn load_file(p: &std::path::Path) -> Result<Config, ConfigError> {
    load_str(&std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
        path: p.into(),
        source: e,
    })?)
}
