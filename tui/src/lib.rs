//! Client side of the wovenetd control API, shared by `wovenetctl` and `wovenet-tui`:
//! finding and dialling a daemon's unix socket, typed calls, and the CLI's parsing and
//! output formatting, and the `wovenet-tui` console ([`console`]).

pub mod client;
pub mod console;
pub mod ctl;
