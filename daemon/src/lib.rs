//! wovenet site engine.
//!
//! A site discovers other sites over an MQTT broker ([`message`]), builds
//! authenticated QUIC tunnels to them ([`tunnel`]) and forwards app connections
//! as QUIC streams ([`app`]). [`site`] is the actor that ties these together;
//! [`config`] turns YAML into validated types. Nothing here knows about gRPC or
//! terminals.

pub mod app;
pub mod config;
pub mod counters;
pub mod crypto;
pub mod detect;
pub mod message;
pub mod tunnel;
