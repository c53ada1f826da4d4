//! The wovenetd control API, package `wovenet.v1`: the wire contract between
//! the daemon and its clients (`wovenetctl`, `wovenet-tui`). Generated from
//! `wovenet/v1/*.proto`; nothing hand-written beyond this module.

/// `wovenet.v1`: messages, the `ControlService` client and server.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)] // generated code
pub mod v1 {
    tonic::include_proto!("wovenet.v1");
}
