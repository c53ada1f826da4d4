//! The discovery messages sites exchange inside sealed envelopes.
//!
//! JSON with camelCase keys and a `type` tag. Forward compatible by design:
//! unknown fields are ignored and optional fields default, so a newer site can
//! add fields without breaking older ones. [`decode`] never panics. This module
//! owns the wire shape and which announced sockets may ever be dialled
//! ([`decode_checked`]: any key holder can announce anything, and every socket
//! kept becomes a UDP socket and a dial loop on every site); deciding what a
//! message means is the site's job.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{AppName, MAX_LOCAL_SOCKETS, MqttConfig, SiteName};
use crate::tunnel::stun::NatMapping;

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
    /// "Open your NAT toward me, I am about to dial this socket" (unicast).
    Punch(Punch),
    /// "Opened; dial me here" (unicast answer to a [`Punch`]).
    PunchAck(PunchAck),
    /// "These apps of mine, left out of my announcement, are yours to reach"
    /// (unicast to a site an app's `allowedSites` lists).
    Offer(Offer),
}

impl Message {
    /// The instance that sent this message.
    pub fn instance(&self) -> &InstanceId {
        match self {
            Self::Announce(a) => &a.instance,
            Self::Depart(d) => &d.instance,
            Self::Query(q) => &q.instance,
            Self::Punch(p) => &p.instance,
            Self::PunchAck(p) => &p.instance,
            Self::Offer(o) => &o.instance,
        }
    }

    /// The site that sent this message.
    pub fn site(&self) -> &SiteName {
        match self {
            Self::Announce(a) => &a.site,
            Self::Depart(d) => &d.site,
            Self::Query(q) => &q.site,
            Self::Punch(p) => &p.site,
            Self::PunchAck(p) => &p.site,
            Self::Offer(o) => &o.site,
        }
    }

    /// A short name for logs (`announce`, `depart`, `query`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Announce(_) => "announce",
            Self::Depart(_) => "depart",
            Self::Query(_) => "query",
            Self::Punch(_) => "punch",
            Self::PunchAck(_) => "punchAck",
            Self::Offer(_) => "offer",
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnouncedSocket {
    /// Index of the entry in the sender's `tunnel.localSockets`.
    pub id: u32,
    /// Public address other sites dial (for a punched socket: the address
    /// and port its NAT maps it to, as STUN saw them).
    pub addr: SocketAddr,
    /// Set for a `hole-punching` socket: dial it only through a rendezvous
    /// ([`Punch`]); a plain dial would be dropped by the owner's NAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub punch: Option<PunchInfo>,
    /// What the socket listens on; absent (from senders that predate it, and
    /// for QUIC) means QUIC over UDP.
    #[serde(default, skip_serializing_if = "AnnouncedTransport::is_quic")]
    pub transport: AnnouncedTransport,
}

/// The transport of an announced socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnouncedTransport {
    /// QUIC over UDP.
    #[default]
    Quic,
    /// QUIC packets framed over TCP (`tunnel::frame`).
    Tcp,
    /// A transport this version does not know (a newer sender's): not dialled.
    #[serde(other)]
    Unknown,
}

impl From<crate::config::Transport> for AnnouncedTransport {
    fn from(t: crate::config::Transport) -> Self {
        match t {
            crate::config::Transport::Quic => Self::Quic,
            crate::config::Transport::Tcp => Self::Tcp,
        }
    }
}

impl AnnouncedTransport {
    /// QUIC, the default, which is left out of the message.
    pub fn is_quic(&self) -> bool {
        *self == Self::Quic
    }
}

/// What a dialer needs to punch toward an announced socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PunchInfo {
    /// How the owner's NAT maps the socket.
    #[serde(default)]
    pub nat: NatMapping,
    /// STUN servers (`host:port`) the owner uses: a dialer with none of its
    /// own learns its mapping from these. At most [`MAX_PUNCH_STUN`] are
    /// kept, each checked like a dial address before use.
    #[serde(default)]
    pub stun: Vec<String>,
    /// The socket's relayed address on its TURN server, when it has one: a
    /// dialer that cannot punch dials this after asking for a permission
    /// ([`Punch::relay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<SocketAddr>,
}

/// Most STUN servers kept from one announced socket.
pub const MAX_PUNCH_STUN: usize = 4;

/// A dialer's request to the owner of a punched socket: send punch packets
/// from that socket to `from`, then answer with a [`PunchAck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Punch {
    /// The dialing site.
    pub site: SiteName,
    /// The dialing process.
    pub instance: InstanceId,
    /// `AnnouncedSocket::id` of the owner's socket to punch from.
    pub socket: u32,
    /// The dialer's public address and port, as STUN saw its dial socket.
    pub from: SocketAddr,
    /// Echoed in the answer, matching it to this attempt.
    pub nonce: u64,
    /// Dial through the owner's TURN relay instead: let `from`'s IP send to
    /// the relayed address (a TURN permission) rather than punch.
    #[serde(default)]
    pub relay: bool,
}

/// The owner's answer to a [`Punch`]: its socket now sends toward the
/// dialer, whose QUIC handshake can pass the owner's NAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PunchAck {
    /// The owner site.
    pub site: SiteName,
    /// The owner process.
    pub instance: InstanceId,
    /// The socket punched from.
    pub socket: u32,
    /// The socket's current public address (fresher than the announcement).
    pub at: SocketAddr,
    /// The request's nonce.
    pub nonce: u64,
}

/// The apps an instance exposes only to some sites (`allowedSites`) that the
/// receiving site may reach: sent unicast to that site's holder instance,
/// never broadcast, so other sites do not learn of them. The latest offer
/// replaces every earlier one of the same instance (an empty list withdraws
/// them all); receivers keep it only while the sender holds its site name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    /// The offering site.
    pub site: SiteName,
    /// The offering process.
    pub instance: InstanceId,
    /// The sender's announcement `seq` when this was sent: an offer with a
    /// lower `seq` than one already kept is older and ignored.
    #[serde(default)]
    pub seq: u64,
    /// Names of the apps offered.
    #[serde(default)]
    pub apps: Vec<AppName>,
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
pub enum DecodeError {
    /// Not JSON of a known message.
    #[error("malformed message")]
    Json(#[from] serde_json::Error),
    /// A punch message names an address no packet may be sent to.
    #[error("punch message names a refused address")]
    Address(#[source] SocketRefusal),
}

/// Encodes a message as JSON.
pub fn encode(msg: &Message) -> Vec<u8> {
    // Invariant: these types contain only strings, numbers, bools and
    // sequences, which serde_json always serialises.
    serde_json::to_vec(msg).expect("invariant: message types always serialise")
}

/// Decodes JSON bytes; unknown types, missing required fields and invalid
/// names are errors. Never panics.
///
/// An announcement keeps only the sockets [`check_sockets`] keeps with
/// loopback allowed; the message channel uses [`decode_checked`], which also
/// reports what was dropped and applies its [`LoopbackPeers`] rule.
pub fn decode(body: &[u8]) -> Result<Message, DecodeError> {
    decode_checked(body, LoopbackPeers::Allowed).map(|d| d.message)
}

/// Most sockets kept from one announcement: a site never has more
/// `tunnel.localSockets`, so a longer list is not from a well-behaved site.
pub const MAX_ANNOUNCED_SOCKETS: usize = MAX_LOCAL_SOCKETS;

/// Whether announced loopback addresses (127.0.0.0/8, `::1`) are dialled.
///
/// A loopback address names the host that dials it. Dialled on a peer's
/// word, it would make this site send QUIC packets to its own local UDP
/// services (DNS stubs, other daemons) that no outside host can reach. Only
/// sites that all run on one host (the demo, tests, trying wovenet out) have
/// a use for it, and those share a broker on that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopbackPeers {
    /// The message channel is host-local, so every peer runs on this host.
    Allowed,
    /// Peers may be elsewhere: a loopback address can only mean this host.
    Refused,
}

impl LoopbackPeers {
    /// [`LoopbackPeers::Allowed`] when the message channel is host-local
    /// ([`MqttConfig::is_host_local`]: the broker is dialled at a loopback
    /// address or `localhost`, and any embedded broker of this site listens on
    /// loopback only). Anything else (a LAN or public broker, an embedded
    /// broker other hosts reach) means peers may be remote, and their
    /// loopback addresses are refused.
    ///
    /// A broker on another host reached through a local port forward (e.g.
    /// `ssh -L`) looks host-local: sites set up that way accept loopback
    /// addresses from every peer of the network.
    pub fn for_channel(cfg: &MqttConfig) -> Self {
        if cfg.is_host_local() {
            Self::Allowed
        } else {
            Self::Refused
        }
    }
}

/// Why an announced socket is not dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SocketRefusal {
    /// `0.0.0.0` or `::`.
    #[error("unspecified address")]
    Unspecified,
    /// `0.0.0.0/8` ("this network"), never a destination.
    #[error("'this network' address")]
    ThisNetwork,
    /// Port 0 cannot be dialled.
    #[error("port 0")]
    PortZero,
    /// A multicast group is not a peer.
    #[error("multicast address")]
    Multicast,
    /// `255.255.255.255`.
    #[error("broadcast address")]
    Broadcast,
    /// `169.254.0.0/16` or `fe80::/10`: only valid on a link the announcer
    /// cannot know this site shares (and, for IPv6, the dialler's interface).
    #[error("link-local address")]
    LinkLocal,
    /// Loopback while peers may be remote (see [`LoopbackPeers`]).
    #[error("loopback address from a network whose peers may be remote")]
    Loopback,
    /// A socket id already listed earlier in the same announcement.
    #[error("duplicate socket id")]
    DuplicateId,
    /// An address already listed earlier in the same announcement.
    #[error("duplicate address")]
    DuplicateAddress,
    /// Beyond the first [`MAX_ANNOUNCED_SOCKETS`] usable sockets.
    #[error("more than {MAX_ANNOUNCED_SOCKETS} sockets announced")]
    TooMany,
}

/// The address to dial for an announced `addr`, or why it can never be a peer.
///
/// IPv4-mapped IPv6 addresses are judged (and dialled) as the IPv4 address
/// they map, so `::ffff:127.0.0.1` is loopback; the IPv6 scope id and flow
/// label are dropped, since a peer cannot choose this host's interface.
pub fn peer_address(
    addr: SocketAddr,
    loopback: LoopbackPeers,
) -> Result<SocketAddr, SocketRefusal> {
    let ip = addr.ip().to_canonical();
    if addr.port() == 0 {
        return Err(SocketRefusal::PortZero);
    }
    if ip.is_unspecified() {
        return Err(SocketRefusal::Unspecified);
    }
    if ip.is_multicast() {
        return Err(SocketRefusal::Multicast);
    }
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_broadcast() {
                return Err(SocketRefusal::Broadcast);
            }
            if v4.octets()[0] == 0 {
                return Err(SocketRefusal::ThisNetwork);
            }
            if v4.is_link_local() {
                return Err(SocketRefusal::LinkLocal);
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unicast_link_local() {
                return Err(SocketRefusal::LinkLocal);
            }
        }
    }
    if ip.is_loopback() && loopback == LoopbackPeers::Refused {
        return Err(SocketRefusal::Loopback);
    }
    Ok(SocketAddr::new(ip, addr.port()))
}

/// What [`check_sockets`] kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketsChecked {
    /// The sockets to dial, in announced order, at most [`MAX_ANNOUNCED_SOCKETS`].
    pub kept: Vec<AnnouncedSocket>,
    /// How many were dropped.
    pub dropped: usize,
    /// The first one dropped and why (for a log line).
    pub first_dropped: Option<(AnnouncedSocket, SocketRefusal)>,
}

/// Keeps the announced sockets that can be a peer: each one's address
/// passes [`peer_address`] (and is replaced by it), its id and address were
/// not listed before (a QUIC and a TCP socket may share an address: they are
/// different ports), and at most [`MAX_ANNOUNCED_SOCKETS`] are kept. The
/// others are dropped, not the whole announcement: the rest of it (apps,
/// certificate, other sockets) is still good.
pub fn check_sockets(sockets: Vec<AnnouncedSocket>, loopback: LoopbackPeers) -> SocketsChecked {
    let mut out = SocketsChecked::default();
    let mut ids = HashSet::new();
    let mut addrs = HashSet::new();
    for socket in sockets {
        let checked = peer_address(socket.addr, loopback).and_then(|addr| {
            if !ids.insert(socket.id) {
                Err(SocketRefusal::DuplicateId)
            } else if !addrs.insert((socket.transport, addr)) {
                Err(SocketRefusal::DuplicateAddress)
            } else if out.kept.len() >= MAX_ANNOUNCED_SOCKETS {
                Err(SocketRefusal::TooMany)
            } else {
                Ok(addr)
            }
        });
        match checked {
            Ok(addr) => out.kept.push(AnnouncedSocket {
                id: socket.id,
                addr,
                punch: socket.punch.map(|mut p| {
                    p.stun.truncate(MAX_PUNCH_STUN);
                    // Dialled like the socket itself: the same rules.
                    p.relay = p.relay.and_then(|r| peer_address(r, loopback).ok());
                    p
                }),
                transport: socket.transport,
            }),
            Err(why) => {
                out.dropped += 1;
                out.first_dropped.get_or_insert((socket, why));
            }
        }
    }
    out
}

/// A decoded message whose announced sockets passed [`check_sockets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The message, with only dialable sockets left in an `Announce`.
    pub message: Message,
    /// How many announced sockets were dropped (0 for other messages).
    pub dropped_sockets: usize,
    /// The first one dropped and why (for a log line).
    pub first_dropped: Option<(AnnouncedSocket, SocketRefusal)>,
}

/// Decodes JSON bytes like [`decode`], then runs [`check_sockets`] on an
/// announcement: what the message channel hands to the site. Never panics.
pub fn decode_checked(body: &[u8], loopback: LoopbackPeers) -> Result<Decoded, DecodeError> {
    let mut message: Message = serde_json::from_slice(body)?;
    let (mut dropped_sockets, mut first_dropped) = (0, None);
    match &mut message {
        Message::Announce(a) => {
            let checked = check_sockets(std::mem::take(&mut a.sockets), loopback);
            a.sockets = checked.kept;
            dropped_sockets = checked.dropped;
            first_dropped = checked.first_dropped;
        }
        // Both name where punch packets and QUIC go: the same rules as an
        // announced socket.
        Message::Punch(p) => {
            p.from = peer_address(p.from, loopback).map_err(DecodeError::Address)?
        }
        Message::PunchAck(p) => {
            p.at = peer_address(p.at, loopback).map_err(DecodeError::Address)?
        }
        Message::Depart(_) | Message::Query(_) | Message::Offer(_) => {}
    }
    Ok(Decoded {
        message,
        dropped_sockets,
        first_dropped,
    })
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
                punch: None,
                transport: AnnouncedTransport::Quic,
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
    fn offer_round_trips_and_defaults_its_optional_fields() {
        let o = Message::Offer(Offer {
            site: site(),
            instance: InstanceId::from_bytes([0xcd; 16]),
            seq: 9,
            apps: vec![AppName::new("db").unwrap()],
        });
        let bytes = encode(&o);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""type":"offer""#), "{text}");
        assert!(text.contains(r#""apps":["db"]"#), "{text}");
        assert_eq!(decode(&bytes).unwrap(), o);
        assert_eq!(o.kind(), "offer");
        assert_eq!(o.site(), &site());
        let bare = format!(
            r#"{{"type":"offer","site":"site-a","instance":"{}"}}"#,
            "cd".repeat(16)
        );
        let Message::Offer(o) = decode(bare.as_bytes()).unwrap() else {
            panic!("not an offer");
        };
        assert_eq!((o.seq, o.apps.len()), (0, 0));
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

    /// Regression: names from the network could hide characters that
    /// spoof rows wherever they are shown; they are refused like in config.
    #[test]
    fn names_with_invisible_characters_are_decode_errors() {
        let id = "01".repeat(16);
        for name in ["a\u{202E}b", "a\u{200B}", "\u{2066}x\u{2069}"] {
            let json = serde_json::json!({"type": "depart", "site": name, "instance": id});
            assert!(decode(json.to_string().as_bytes()).is_err(), "{name:?}");
            let json = serde_json::json!({
                "type": "announce", "site": "ok", "instance": id, "apps": ["fine", name],
            });
            assert!(decode(json.to_string().as_bytes()).is_err(), "{name:?}");
        }
    }

    #[test]
    fn instance_id_parses_its_display() {
        let i = InstanceId::new_random();
        assert_eq!(i.to_string().len(), 32);
        assert_eq!(i.to_string().parse::<InstanceId>().unwrap(), i);
        assert!("zz".parse::<InstanceId>().is_err());
    }

    /// An announcement from `site-b` listing `sockets` as `(id, "addr")`.
    fn announce_json(sockets: &[(u32, String)]) -> Vec<u8> {
        let list: Vec<String> = sockets
            .iter()
            .map(|(id, addr)| format!(r#"{{"id":{id},"addr":"{addr}"}}"#))
            .collect();
        format!(
            r#"{{"type":"announce","site":"site-b","instance":"{}","sockets":[{}]}}"#,
            "01".repeat(16),
            list.join(",")
        )
        .into_bytes()
    }

    fn sockets_of(m: &Message) -> Vec<(u32, SocketAddr)> {
        let Message::Announce(a) = m else {
            panic!("not an announce: {m:?}");
        };
        a.sockets.iter().map(|s| (s.id, s.addr)).collect()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Regression: every announced address was dialled, however many and
    /// whatever they were: one announcement could make every site open
    /// thousands of UDP sockets and dial loops, towards multicast groups,
    /// the broadcast address or port 0.
    #[test]
    fn an_announcement_keeps_at_most_16_sockets() {
        let many: Vec<(u32, String)> = (0..1000u32)
            .map(|i| (i, format!("198.51.100.{}:{}", i % 250 + 1, 1000 + i)))
            .collect();
        let body = announce_json(&many);
        let kept = sockets_of(&decode(&body).unwrap());
        assert_eq!(kept.len(), 16);
        // The first ones, in announced order.
        assert_eq!(kept[0], (0, sa("198.51.100.1:1000")));
        assert_eq!(kept[15], (15, sa("198.51.100.16:1015")));
    }

    /// Regression (same as above): unusable addresses and duplicate ids went
    /// straight to the dialler.
    #[test]
    fn decode_drops_unusable_addresses_and_duplicate_ids() {
        let body = announce_json(&[
            (0, "0.0.0.0:4000".into()),
            (1, "203.0.113.1:0".into()),
            (2, "224.0.0.251:5353".into()),
            (3, "255.255.255.255:4000".into()),
            (4, "[ff02::1]:4000".into()),
            (5, "[fe80::1]:4000".into()),
            (6, "203.0.113.1:4000".into()),
            (6, "203.0.113.2:4000".into()),
            (7, "127.0.0.1:4000".into()),
        ]);
        assert_eq!(
            sockets_of(&decode(&body).unwrap()),
            [(6, sa("203.0.113.1:4000")), (7, sa("127.0.0.1:4000"))]
        );
    }

    #[test]
    fn sockets_beyond_the_cap_are_counted_as_dropped() {
        let many: Vec<(u32, String)> = (0..1000u32)
            .map(|i| (i, format!("198.51.100.{}:{}", i % 250 + 1, 1000 + i)))
            .collect();
        assert_eq!(MAX_ANNOUNCED_SOCKETS, 16);
        let d = decode_checked(&announce_json(&many), LoopbackPeers::Refused).unwrap();
        assert_eq!(sockets_of(&d.message).len(), 16);
        assert_eq!(d.dropped_sockets, 1000 - 16);
        assert_eq!(
            d.first_dropped,
            Some((
                AnnouncedSocket {
                    id: 16,
                    addr: sa("198.51.100.17:1016"),
                    punch: None,
                    transport: AnnouncedTransport::Quic,
                },
                SocketRefusal::TooMany
            ))
        );
    }

    #[test]
    fn addresses_that_can_never_be_a_peer_are_dropped() {
        let cases = [
            ("0.0.0.0:4000", SocketRefusal::Unspecified),
            ("[::]:4000", SocketRefusal::Unspecified),
            ("203.0.113.1:0", SocketRefusal::PortZero),
            ("224.0.0.251:5353", SocketRefusal::Multicast),
            ("239.1.2.3:4000", SocketRefusal::Multicast),
            ("[ff02::1]:4000", SocketRefusal::Multicast),
            ("[::ffff:224.0.0.1]:4000", SocketRefusal::Multicast),
            ("255.255.255.255:4000", SocketRefusal::Broadcast),
            ("0.1.2.3:4000", SocketRefusal::ThisNetwork),
            ("169.254.169.254:4000", SocketRefusal::LinkLocal),
            ("[fe80::1]:4000", SocketRefusal::LinkLocal),
        ];
        for (addr, why) in cases {
            for loopback in [LoopbackPeers::Allowed, LoopbackPeers::Refused] {
                assert_eq!(peer_address(sa(addr), loopback), Err(why), "{addr}");
            }
        }
        let mut list: Vec<(u32, String)> = cases
            .iter()
            .zip(0..)
            .map(|((addr, _), id)| (id, (*addr).to_owned()))
            .collect();
        list.push((99, "203.0.113.1:4000".to_owned()));
        let d = decode_checked(&announce_json(&list), LoopbackPeers::Allowed).unwrap();
        assert_eq!(sockets_of(&d.message), [(99, sa("203.0.113.1:4000"))]);
        assert_eq!(d.dropped_sockets, cases.len());
        assert_eq!(
            d.first_dropped.map(|(s, why)| (s.id, why)),
            Some((0, SocketRefusal::Unspecified))
        );
    }

    #[test]
    fn ordinary_peer_addresses_are_kept() {
        for addr in [
            "203.0.113.1:4000",
            "10.1.2.3:4000",
            "192.168.1.10:65535",
            "100.64.0.1:4000",
            "[2001:db8::1]:4000",
            "[fd00::1]:4000",
            "[64:ff9b::cb00:7101]:4000",
        ] {
            assert_eq!(
                peer_address(sa(addr), LoopbackPeers::Refused),
                Ok(sa(addr)),
                "{addr}"
            );
        }
    }

    #[test]
    fn loopback_is_kept_only_when_peers_share_this_host() {
        for addr in [
            "127.0.0.1:4000",
            "127.1.2.3:4000",
            "[::1]:4000",
            "[::ffff:127.0.0.1]:4000",
        ] {
            assert_eq!(
                peer_address(sa(addr), LoopbackPeers::Refused),
                Err(SocketRefusal::Loopback),
                "{addr}"
            );
            let kept = peer_address(sa(addr), LoopbackPeers::Allowed).unwrap();
            assert!(kept.ip().is_loopback(), "{addr} -> {kept}");
        }
        // The mapped form is dialled as the IPv4 address it maps.
        assert_eq!(
            peer_address(sa("[::ffff:127.0.0.1]:4000"), LoopbackPeers::Allowed),
            Ok(sa("127.0.0.1:4000"))
        );
        let body = announce_json(&[(0, "127.0.0.1:4000".into()), (1, "203.0.113.1:4000".into())]);
        let d = decode_checked(&body, LoopbackPeers::Refused).unwrap();
        assert_eq!(sockets_of(&d.message), [(1, sa("203.0.113.1:4000"))]);
        assert_eq!(d.dropped_sockets, 1);
    }

    #[test]
    fn scope_ids_are_not_taken_from_peers() {
        let addr = SocketAddr::V6(std::net::SocketAddrV6::new(
            "2001:db8::1".parse().unwrap(),
            4000,
            7,
            3,
        ));
        let kept = peer_address(addr, LoopbackPeers::Refused).unwrap();
        let SocketAddr::V6(v6) = kept else {
            panic!("{kept}")
        };
        assert_eq!((v6.scope_id(), v6.flowinfo()), (0, 0));
    }

    #[test]
    fn duplicate_ids_and_addresses_are_dropped() {
        let body = announce_json(&[
            (0, "203.0.113.1:4000".into()),
            (0, "203.0.113.2:4000".into()),
            (1, "203.0.113.1:4000".into()),
            (2, "[::ffff:203.0.113.1]:4000".into()),
            (3, "203.0.113.3:4000".into()),
        ]);
        let d = decode_checked(&body, LoopbackPeers::Refused).unwrap();
        assert_eq!(
            sockets_of(&d.message),
            [(0, sa("203.0.113.1:4000")), (3, sa("203.0.113.3:4000"))]
        );
        assert_eq!(d.dropped_sockets, 3);
        assert_eq!(
            d.first_dropped.map(|(s, why)| (s.id, why)),
            Some((0, SocketRefusal::DuplicateId))
        );
    }

    #[test]
    fn a_quic_and_a_tcp_socket_may_share_an_address_and_unknown_transports_are_kept_apart() {
        let s = |id, addr: &str, transport| AnnouncedSocket {
            id,
            addr: sa(addr),
            punch: None,
            transport,
        };
        use AnnouncedTransport::{Quic, Tcp};
        let checked = check_sockets(
            vec![
                s(0, "203.0.113.1:4000", Quic),
                s(1, "203.0.113.1:4000", Tcp),
                s(2, "203.0.113.1:4000", Tcp),
            ],
            LoopbackPeers::Refused,
        );
        let kept: Vec<_> = checked.kept.iter().map(|s| (s.id, s.transport)).collect();
        assert_eq!(kept, [(0, Quic), (1, Tcp)]);
        assert_eq!(
            checked.first_dropped.map(|(s, why)| (s.id, why)),
            Some((2, SocketRefusal::DuplicateAddress))
        );
        // On the wire: QUIC is left out (older peers see what they always
        // saw), TCP is named, and a transport from a newer sender decodes as
        // unknown rather than failing the whole announcement.
        let quic = serde_json::to_value(s(0, "203.0.113.1:4000", Quic)).unwrap();
        assert!(quic.get("transport").is_none());
        let tcp = serde_json::to_value(s(1, "203.0.113.1:4000", Tcp)).unwrap();
        assert_eq!(tcp["transport"], "tcp");
        let future: AnnouncedSocket =
            serde_json::from_str(r#"{"id":3,"addr":"203.0.113.1:4000","transport":"kcp"}"#)
                .unwrap();
        assert_eq!(future.transport, AnnouncedTransport::Unknown);
    }

    #[test]
    fn other_messages_drop_nothing() {
        let m = Message::Query(Query {
            site: site(),
            instance: InstanceId::from_bytes([2; 16]),
        });
        let d = decode_checked(&encode(&m), LoopbackPeers::Refused).unwrap();
        assert_eq!(
            (d.message, d.dropped_sockets, d.first_dropped),
            (m, 0, None)
        );
    }

    fn mqtt(broker_host: &str, embedded: Option<&str>) -> MqttConfig {
        MqttConfig {
            broker: crate::config::BrokerUrl {
                tls: false,
                host: broker_host.to_owned(),
                port: 1883,
            },
            topic: None,
            username: None,
            password: None,
            embedded_broker: embedded.map(|l| crate::config::EmbeddedBroker {
                listen: l.parse().unwrap(),
            }),
            ca_file: None,
        }
    }

    #[test]
    fn loopback_peers_are_allowed_only_on_a_host_local_message_channel() {
        for (host, embedded, want) in [
            ("127.0.0.1", None, LoopbackPeers::Allowed),
            ("::1", None, LoopbackPeers::Allowed),
            ("LocalHost", None, LoopbackPeers::Allowed),
            ("127.0.0.1", Some("127.0.0.1:1883"), LoopbackPeers::Allowed),
            // Other hosts reach this embedded broker: peers may be remote.
            ("127.0.0.1", Some("0.0.0.0:1883"), LoopbackPeers::Refused),
            ("127.0.0.1", Some("192.0.2.7:1883"), LoopbackPeers::Refused),
            ("192.0.2.7", None, LoopbackPeers::Refused),
            ("broker.example.com", None, LoopbackPeers::Refused),
            ("localhost.example.com", None, LoopbackPeers::Refused),
        ] {
            assert_eq!(
                LoopbackPeers::for_channel(&mqtt(host, embedded)),
                want,
                "{host} {embedded:?}"
            );
        }
    }

    fn any_socket() -> impl Strategy<Value = AnnouncedSocket> {
        let ip = prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
            any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
            // Few distinct values, so duplicates and special addresses occur.
            prop::sample::select(vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0]),
                IpAddr::from([255, 255, 255, 255]),
                IpAddr::from([224, 0, 0, 1]),
                IpAddr::from([203, 0, 113, 1]),
                "::ffff:127.0.0.1".parse().unwrap(),
                "::1".parse().unwrap(),
            ]),
        ];
        (
            0u32..40,
            ip,
            prop_oneof![Just(0u16), Just(4000u16), any::<u16>()],
        )
            .prop_map(|(id, ip, port)| AnnouncedSocket {
                id,
                addr: SocketAddr::new(ip, port),
                punch: None,
                transport: AnnouncedTransport::Quic,
            })
    }

    proptest! {
        /// Whatever is announced, the kept sockets are at most 16, have
        /// distinct ids and addresses, each passes `peer_address`, they come
        /// in announced order, and kept + dropped accounts for every one.
        #[test]
        fn checked_sockets_are_few_distinct_and_dialable(
            sockets in proptest::collection::vec(any_socket(), 0..100),
            allow in any::<bool>(),
        ) {
            let loopback = if allow { LoopbackPeers::Allowed } else { LoopbackPeers::Refused };
            let c = check_sockets(sockets.clone(), loopback);
            prop_assert!(c.kept.len() <= MAX_ANNOUNCED_SOCKETS);
            prop_assert_eq!(c.kept.len() + c.dropped, sockets.len());
            prop_assert_eq!(c.first_dropped.is_some(), c.dropped > 0);
            let ids: HashSet<u32> = c.kept.iter().map(|s| s.id).collect();
            let addrs: HashSet<SocketAddr> = c.kept.iter().map(|s| s.addr).collect();
            prop_assert_eq!(ids.len(), c.kept.len());
            prop_assert_eq!(addrs.len(), c.kept.len());
            let mut rest = sockets.iter();
            for k in &c.kept {
                prop_assert_eq!(peer_address(k.addr, loopback), Ok(k.addr));
                prop_assert!(!k.addr.ip().is_unspecified() && !k.addr.ip().is_multicast());
                prop_assert!(k.addr.port() != 0);
                prop_assert!(allow || !k.addr.ip().is_loopback());
                // A subsequence of the input, ids unchanged.
                prop_assert!(rest.any(|s| s.id == k.id
                    && peer_address(s.addr, loopback) == Ok(k.addr)));
            }
        }

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
