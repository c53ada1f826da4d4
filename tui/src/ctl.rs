//! `wovenetctl`, the scripting CLI, as a library so its parts are unit-tested: argument
//! parsing ([`args`]), the JSON shape scripts rely on ([`json`]), table output for people
//! ([`text`], [`table`], [`units`], with daemon strings made safe by [`escape`]), the
//! commands suggested to people, shell-quoted ([`shell`]), and running a command against a
//! daemon ([`exec`]).
//! The binary (`src/bin/wovenetctl.rs`) only wires these to stdout, stderr and exit codes.

pub mod args;
pub mod escape;
pub mod exec;
pub mod json;
pub mod shell;
pub mod table;
pub mod text;
pub mod units;

#[cfg(test)]
mod fixtures;

pub use args::{Cli, Command, Format};
pub use exec::{CtlError, Sinks, run};
