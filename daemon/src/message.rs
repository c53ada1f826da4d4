//! Discovery over MQTT: sites announce how to reach them on a shared topic.
//!
//! - [`envelope`] seals every payload with the key derived from the shared
//!   passphrase and rejects replays (pure).
//! - [`announce`] defines the versioned JSON messages inside the envelope.
//! - [`mqtt`] is the one task that drives the MQTT connection and hands
//!   accepted messages to the site.
//! - [`broker`] runs an MQTT broker inside the daemon when configured.
//!
//! The broker and anyone watching it see only the topic and opaque ciphertext.
//! Nothing here decides what a message means for peers or tunnels; that is the
//! site's job.

pub mod announce;
pub mod broker;
pub mod envelope;
pub mod mqtt;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use announce::{
    Announce, AnnouncedSocket, Depart, InstanceId, Message, PROTOCOL_VERSION, Query,
};
pub use broker::EmbeddedBroker;
pub use mqtt::{BrokerState, Inbound, MessageChannel};

/// Why the message channel or the embedded broker failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// `messageChannel.topic` cannot be published to.
    #[error("invalid MQTT topic '{0}': must be non-empty without '+' or '#'")]
    InvalidTopic(String),
    /// The extra CA file for `mqtts` could not be used.
    #[error("cannot use CA file '{path}': {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The TLS client configuration could not be built.
    #[error("cannot configure TLS for the MQTT broker: {0}")]
    Tls(String),
    /// The sealed message exceeds what brokers are expected to carry.
    #[error("message of {size} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Sealed size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Too many messages are waiting for the broker (it is probably unreachable).
    #[error("outgoing MQTT queue is full (broker unreachable?)")]
    QueueFull,
    /// The channel has stopped (shutdown or departed).
    #[error("MQTT channel is closed")]
    Closed,
    /// The embedded broker's address cannot be bound.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    BrokerBind {
        /// The configured address.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The embedded broker did not come up.
    #[error("embedded MQTT broker on {addr} failed to start: {reason}")]
    BrokerStart {
        /// The configured address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}
