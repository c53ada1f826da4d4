//! The discovery messages sites exchange inside sealed envelopes.
//!
//! JSON with camelCase keys and a `type` tag. Forward compatible by design:
//! unknown fields are ignored and optional fields default, so a newer site can
//! add fields without breaking older ones. [`decode`] never panics. This module
//! owns only the wire shape; deciding what a message means is the site's job.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{AppName, SiteName};

/// Version of the discovery protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Random identity of one running daemon process (a site restarting gets a new
/// one). Hex in JSON and in topics.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId([u8; 16]);

impl InstanceId {
    /// A fresh random id.
    pub fn new_random() -> Self {
        Self(rand::random())
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

impl FromStr for InstanceId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| format!("'{s}' is not an instance id (32 hex characters)"))?;
        Ok(Self(out))
    }
}

impl Serialize for InstanceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A discovery message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    /// "Here I am, reach me like this."
    Announce(Announce),
    /// "I am going away" (also the MQTT last will).
    Depart(Depart),
    /// "Please re-announce to me (unicast)."
    Query(Query),
}

impl Message {
    /// The instance that sent this message.
    pub fn instance(&self) -> &InstanceId {
        match self {
            Self::Announce(a) => &a.instance,
            Self::Depart(d) => &d.instance,
            Self::Query(q) => &q.instance,
        }
    }

    /// The site that sent this message.
    pub fn site(&self) -> &SiteName {
        match self {
            Self::Announce(a) => &a.site,
            Self::Depart(d) => &d.site,
            Self::Query(q) => &q.site,
        }
    }

    /// A short name for logs (`announce`, `depart`, `query`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Announce(_) => "announce",
            Self::Depart(_) => "depart",
            Self::Query(_) => "query",
        }
    }
}

/// How to reach one instance, and what it offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Announce {
    /// The sending site.
    pub site: SiteName,
    /// The sending process.
    pub instance: InstanceId,
    /// The sender's [`PROTOCOL_VERSION`].
    #[serde(default)]
    pub protocol_version: u32,
    /// Increases per instance on every change; receivers keep the newest.
    #[serde(default)]
    pub seq: u64,
    /// Public QUIC addresses, one per reachable local socket.
    #[serde(default)]
    pub sockets: Vec<AnnouncedSocket>,
    /// Names of the apps this site exposes.
    #[serde(default)]
    pub apps: Vec<AppName>,
    /// Hex SHA-256 of the instance's QUIC certificate (DER), for pinning.
    #[serde(default)]
    pub cert_sha256: String,
    /// Receivers answer with their own `Announce`, unicast to the sender.
    #[serde(default)]
    pub reply: bool,
    /// The sender's broker-connection counter when this was published (see
    /// [`Depart::epoch`]); 0 from senders that predate it.
    #[serde(default)]
    pub epoch: u32,
}

/// One public QUIC address of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnouncedSocket {
    /// Index of the entry in the sender's `tunnel.localSockets`.
    pub id: u32,
    /// Public address other sites dial.
    pub addr: SocketAddr,
}

/// An instance leaving the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Depart {
    /// The departing site.
    pub site: SiteName,
    /// The departing process.
    pub instance: InstanceId,
    /// The broker connection this departure belongs to: the MQTT last will
    /// of connection `n` carries `n`. Receivers accept a departure only if its
    /// epoch is at least that of the instance's latest announcement, so a
    /// will replayed from an earlier connection changes nothing. 0 from
    /// senders that predate it.
    #[serde(default)]
    pub epoch: u32,
}

/// A request for a unicast re-announce, e.g. after dialling a stale dynamic address failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    /// The asking site.
    pub site: SiteName,
    /// The asking process (where the answer goes).
    pub instance: InstanceId,
}

/// Why a body is not a message we understand.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// Encodes a message as JSON.
pub fn encode(msg: &Message) -> Vec<u8> {
    // Invariant: these types contain only strings, numbers, bools and
    // sequences, which serde_json always serialises.
    serde_json::to_vec(msg).expect("invariant: message types always serialise")
}

/// Decodes JSON bytes; unknown types, missing required fields and invalid
/// names are errors. Never panics.
pub fn decode(body: &[u8]) -> Result<Message, DecodeError> {
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn site() -> SiteName {
        SiteName::new("site-a").unwrap()
    }

    fn announce() -> Message {
        Message::Announce(Announce {
            site: site(),
            instance: InstanceId::from_bytes([0xab; 16]),
            protocol_version: PROTOCOL_VERSION,
            seq: 7,
            sockets: vec![AnnouncedSocket {
                id: 0,
                addr: "203.0.113.5:29090".parse().unwrap(),
            }],
            apps: vec![AppName::new("ssh").unwrap()],
            cert_sha256: "00".repeat(32),
            reply: true,
            epoch: 3,
        })
    }

    #[test]
    fn announce_round_trips_as_camel_case_json() {
        let bytes = encode(&announce());
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""type":"announce""#), "{text}");
        assert!(text.contains(r#""protocolVersion":1"#), "{text}");
        assert!(text.contains(r#""certSha256""#), "{text}");
        assert!(text.contains(r#""epoch":3"#), "{text}");
        assert!(text.contains(&"ab".repeat(16)), "{text}");
        assert_eq!(decode(&bytes).unwrap(), announce());
    }

    #[test]
    fn depart_and_query_round_trip() {
        let i = InstanceId::new_random();
        for m in [
            Message::Depart(Depart {
                site: site(),
                instance: i,
                epoch: 2,
            }),
            Message::Query(Query {
                site: site(),
                instance: i,
            }),
        ] {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
            assert_eq!(m.instance(), &i);
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_fields_default() {
        let json = format!(
            r#"{{"type":"announce","site":"b","instance":"{}","protocolVersion":9,"future":{{"x":1}}}}"#,
            "01".repeat(16)
        );
        let Message::Announce(a) = decode(json.as_bytes()).unwrap() else {
            panic!("not an announce");
        };
        assert_eq!(a.protocol_version, 9);
        assert_eq!((a.seq, a.epoch), (0, 0));
        assert!(a.sockets.is_empty() && a.apps.is_empty() && !a.reply);
    }

    #[test]
    fn a_depart_without_an_epoch_from_an_older_sender_parses_as_epoch_0() {
        let json = format!(
            r#"{{"type":"depart","site":"b","instance":"{}"}}"#,
            "01".repeat(16)
        );
        let Message::Depart(d) = decode(json.as_bytes()).unwrap() else {
            panic!("not a depart");
        };
        assert_eq!(d.epoch, 0);
    }

    #[test]
    fn invalid_messages_are_decode_errors() {
        let id = "01".repeat(16);
        for bad in [
            "".to_string(),
            "null".to_string(),
            r#"{"type":"teleport","site":"a"}"#.to_string(),
            format!(r#"{{"type":"depart","site":"a/b","instance":"{id}"}}"#),
            r#"{"type":"depart","site":"a","instance":"xyz"}"#.to_string(),
            r#"{"type":"query","site":"a"}"#.to_string(),
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn instance_id_parses_its_display() {
        let i = InstanceId::new_random();
        assert_eq!(i.to_string().len(), 32);
        assert_eq!(i.to_string().parse::<InstanceId>().unwrap(), i);
        assert!("zz".parse::<InstanceId>().is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_jsonish_text(s in r#"\{("[a-zA-Z]{0,12}":("[a-z0-9/]{0,40}"|[0-9]{1,25}|true|null|\[\]),?){0,8}\}"#) {
            let _ = decode(s.as_bytes());
        }
    }
}
