//! The stream preamble: the header a client side writes first on a new app
//! stream ([`Request`]) and the exposed side's status reply ([`Response`]).
//! After both, the stream carries raw app bytes with no framing.
//!
//! Wire format (all integers big-endian):
//!
//! ```text
//! Request  = version:u8 (=1) | name_len:u8 (1..=255) | name:UTF-8 | target   (TCP)
//!          | version:u8 (=2) | protocol:u8 | name_len:u8 | name:UTF-8 | target
//! protocol = 0 (tcp) | 1 (udp: a datagram flow, see `app::udp`)
//! target   = 0                              (none)
//!          | 4 | ipv4:[u8; 4]  | port:u16
//!          | 6 | ipv6:[u8; 16] | port:u16
//! Response = version:u8 (=1) | status:u8 | msg_len:u8 | msg:UTF-8
//! ```
//!
//! TCP requests are always written as version 1, so peers that predate UDP
//! flows keep understanding them; a UDP request is version 2, which such a
//! peer answers with [`Status::UnsupportedVersion`] (a prompt, clear refusal).
//! Responses are version 1 whatever the request.
//!
//! Status codes are listed in [`Status`]. A code this build does not know is a
//! decode error ([`PreambleError::UnknownStatus`]); the client side treats it
//! like any bad reply: it resets the stream and its local client at once, so
//! a newer peer's new refusal code still reaches an older client as a prompt
//! refusal (counted there as a bad preamble, not as a limit).
//!
//! This module is a pure codec: it never touches a socket, so it can be fuzzed
//! and property-tested. Decoders are incremental: `Ok(None)` means "need more
//! bytes", and [`Request::missing`]/[`Response::missing`] say how many bytes can
//! be read next without reading past the preamble into app data.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{AppName, Protocol};

/// The version of responses and of TCP requests.
pub const VERSION: u8 = 1;

/// The request version that carries a protocol byte (UDP flows).
pub const VERSION_PROTOCOL: u8 = 2;

/// Longest possible encoded [`Request`] (version, protocol, length, 255-byte
/// name, IPv6 target).
pub const MAX_REQUEST_LEN: usize = 1 + 1 + 1 + 255 + 1 + 16 + 2;

const PROTOCOL_TCP: u8 = 0;
const PROTOCOL_UDP: u8 = 1;

/// Longest possible encoded [`Response`] (version, status, length, 255-byte message).
pub const MAX_RESPONSE_LEN: usize = 1 + 1 + 1 + 255;

const TARGET_NONE: u8 = 0;
const TARGET_V4: u8 = 4;
const TARGET_V6: u8 = 6;

/// Why bytes are not a valid preamble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreambleError {
    /// The first byte names a version this build does not speak.
    #[error("unsupported preamble version {0}")]
    UnsupportedVersion(u8),
    /// The app name is empty, not UTF-8 or breaks the app name rules.
    #[error("invalid app name: {0}")]
    InvalidAppName(String),
    /// The target tag is neither 0, 4 nor 6.
    #[error("unknown target tag {0}")]
    UnknownTargetTag(u8),
    /// The protocol byte is neither 0 (tcp) nor 1 (udp).
    #[error("unknown protocol {0}")]
    UnknownProtocol(u8),
    /// The status byte is not a known [`Status`].
    #[error("unknown status code {0}")]
    UnknownStatus(u8),
    /// The status message is not UTF-8.
    #[error("status message is not valid UTF-8")]
    InvalidMessage,
}

/// What a client side asks for on a new stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The exposed app on the far site.
    pub app: AppName,
    /// For range apps: the address to connect to on the far side.
    pub target: Option<SocketAddr>,
    /// A byte stream (TCP) or a datagram flow (UDP).
    pub protocol: Protocol,
}

/// The exposed side's verdict on a [`Request`].
///
/// Codes are wire values and never change once shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Admitted and connected; raw bytes follow.
    Ok = 0,
    /// The far site exposes no app by that name.
    NoSuchApp = 1,
    /// The app exists but the request is outside what it allows (e.g. a range target).
    NotAllowed = 2,
    /// The app's socket could not be connected.
    AppUnreachable = 3,
    /// The request preamble was malformed.
    BadRequest = 4,
    /// The request preamble version is not spoken by the far side.
    UnsupportedVersion = 5,
    /// The far side already carries as many streams as it allows (from this
    /// peer, or to this app); try again later. Sent by builds with limits;
    /// older builds decode it as an unknown code and refuse all the same.
    LimitReached = 6,
}

impl Status {
    /// The wire value.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status for a wire value, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Ok,
            1 => Self::NoSuchApp,
            2 => Self::NotAllowed,
            3 => Self::AppUnreachable,
            4 => Self::BadRequest,
            5 => Self::UnsupportedVersion,
            6 => Self::LimitReached,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::NoSuchApp => "no such app",
            Self::NotAllowed => "not allowed",
            Self::AppUnreachable => "app unreachable",
            Self::BadRequest => "bad request",
            Self::UnsupportedVersion => "unsupported version",
            Self::LimitReached => "limit reached",
        })
    }
}

/// The exposed side's reply: a status and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The verdict.
    pub status: Status,
    /// Why (empty for [`Status::Ok`]); at most 255 bytes.
    pub message: String,
}

/// An incrementally decodable preamble ([`Request`] or [`Response`]), so one
/// reader can serve both.
pub trait Decode: Sized {
    /// See [`Request::decode`].
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, PreambleError>;
    /// See [`Request::missing`].
    fn missing(buf: &[u8]) -> usize;
}

impl Decode for Request {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, PreambleError> {
        Self::decode(buf)
    }
    fn missing(buf: &[u8]) -> usize {
        Self::missing(buf)
    }
}

impl Decode for Response {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, PreambleError> {
        Self::decode(buf)
    }
    fn missing(buf: &[u8]) -> usize {
        Self::missing(buf)
    }
}

/// `decode`'s view of a parse: complete value or "need more".
fn decoded<T>(p: Result<Parsed<T>, PreambleError>) -> Result<Option<(T, usize)>, PreambleError> {
    Ok(match p? {
        Parsed::Done(v, n) => Some((v, n)),
        Parsed::Need(_) => None,
    })
}

/// `missing`'s view of a parse: bytes still needed, 0 if complete or invalid.
fn still_missing<T>(p: &Result<Parsed<T>, PreambleError>) -> usize {
    match p {
        Ok(Parsed::Need(n)) => *n,
        _ => 0,
    }
}

/// Result of parsing a possibly incomplete buffer.
enum Parsed<T> {
    /// A complete value and how many bytes it used.
    Done(T, usize),
    /// At least this many more bytes are needed (always >= 1).
    Need(usize),
}

impl Request {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let name = self.app.as_str().as_bytes();
        let mut out = Vec::with_capacity(MAX_REQUEST_LEN);
        match self.protocol {
            Protocol::Tcp => out.push(VERSION),
            Protocol::Udp => {
                out.push(VERSION_PROTOCOL);
                out.push(PROTOCOL_UDP);
            }
        }
        // AppName guarantees 1..=255 bytes, so the length always fits.
        out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&name[..name.len().min(255)]);
        match self.target {
            None => out.push(TARGET_NONE),
            Some(SocketAddr::V4(a)) => {
                out.push(TARGET_V4);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Some(SocketAddr::V6(a)) => {
                out.push(TARGET_V6);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
        }
        out
    }

    /// Decodes a request from the start of `buf`.
    ///
    /// `Ok(None)` means `buf` is a valid prefix and more bytes are needed; on
    /// success the second value is how many bytes of `buf` the request used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, PreambleError> {
        decoded(Self::parse(buf))
    }

    /// How many more bytes can be read without reading past the end of the
    /// request: 0 when `buf` already holds a complete (or invalid) request.
    pub fn missing(buf: &[u8]) -> usize {
        still_missing(&Self::parse(buf))
    }

    fn parse(buf: &[u8]) -> Result<Parsed<Self>, PreambleError> {
        let mut r = Reader::new(buf);
        let Some(version) = r.byte() else {
            return Ok(Parsed::Need(2));
        };
        let protocol = match version {
            VERSION => Protocol::Tcp,
            VERSION_PROTOCOL => {
                let Some(p) = r.byte() else {
                    return Ok(Parsed::Need(2));
                };
                match p {
                    PROTOCOL_TCP => Protocol::Tcp,
                    PROTOCOL_UDP => Protocol::Udp,
                    other => return Err(PreambleError::UnknownProtocol(other)),
                }
            }
            other => return Err(PreambleError::UnsupportedVersion(other)),
        };
        let Some(len) = r.byte() else {
            return Ok(Parsed::Need(1));
        };
        if len == 0 {
            return Err(PreambleError::InvalidAppName(
                "app name must not be empty".into(),
            ));
        }
        // Name plus at least the target tag.
        let Some(name) = r.take(usize::from(len)) else {
            return Ok(Parsed::Need(usize::from(len) + 1 - r.remaining()));
        };
        let name = std::str::from_utf8(name)
            .map_err(|_| PreambleError::InvalidAppName("app name is not valid UTF-8".into()))?;
        let app = AppName::new(name).map_err(PreambleError::InvalidAppName)?;
        let Some(tag) = r.byte() else {
            return Ok(Parsed::Need(1));
        };
        let addr_len = match tag {
            TARGET_NONE => 0,
            TARGET_V4 => 4,
            TARGET_V6 => 16,
            other => return Err(PreambleError::UnknownTargetTag(other)),
        };
        let target = if addr_len == 0 {
            None
        } else {
            let Some(raw) = r.take(addr_len + 2) else {
                return Ok(Parsed::Need(addr_len + 2 - r.remaining()));
            };
            let (ip, port) = raw.split_at(addr_len);
            let ip = match <[u8; 4]>::try_from(ip) {
                Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
                Err(_) => {
                    let mut v6 = [0u8; 16];
                    v6.copy_from_slice(ip);
                    IpAddr::V6(Ipv6Addr::from(v6))
                }
            };
            let port = u16::from_be_bytes([port[0], port[1]]);
            Some(SocketAddr::new(ip, port))
        };
        Ok(Parsed::Done(
            Self {
                app,
                target,
                protocol,
            },
            r.pos,
        ))
    }
}

impl Response {
    /// A response; `message` is truncated to 255 bytes on a char boundary.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > 255 {
            let mut end = 255;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { status, message }
    }

    /// An `Ok` response with no message.
    pub fn ok() -> Self {
        Self::new(Status::Ok, "")
    }

    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        // `new` truncates, but the field is public: truncate again defensively.
        let msg = Self::new(self.status, self.message.as_str()).message;
        let mut out = Vec::with_capacity(3 + msg.len());
        out.push(VERSION);
        out.push(self.status.code());
        out.push(u8::try_from(msg.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(msg.as_bytes());
        out
    }

    /// Decodes a response from the start of `buf`; see [`Request::decode`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, PreambleError> {
        decoded(Self::parse(buf))
    }

    /// How many more bytes can be read without reading past the end of the
    /// response: 0 when `buf` already holds a complete (or invalid) response.
    pub fn missing(buf: &[u8]) -> usize {
        still_missing(&Self::parse(buf))
    }

    fn parse(buf: &[u8]) -> Result<Parsed<Self>, PreambleError> {
        let mut r = Reader::new(buf);
        let Some(version) = r.byte() else {
            return Ok(Parsed::Need(3));
        };
        if version != VERSION {
            return Err(PreambleError::UnsupportedVersion(version));
        }
        let Some(code) = r.byte() else {
            return Ok(Parsed::Need(2));
        };
        let status = Status::from_code(code).ok_or(PreambleError::UnknownStatus(code))?;
        let Some(len) = r.byte() else {
            return Ok(Parsed::Need(1));
        };
        let len = usize::from(len);
        let Some(msg) = r.take(len) else {
            return Ok(Parsed::Need(len - r.remaining()));
        };
        let message = std::str::from_utf8(msg)
            .map_err(|_| PreambleError::InvalidMessage)?
            .to_owned();
        Ok(Parsed::Done(Self { status, message }, r.pos))
    }
}

/// A cursor over a byte slice that never panics.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn app(name: &str) -> AppName {
        AppName::new(name).unwrap()
    }

    fn arb_app_name() -> impl Strategy<Value = AppName> {
        "[^\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]{1,80}"
            .prop_filter("at most 255 bytes", |s| s.len() <= 255)
            // Unicode tables of the regex and of the name check may differ by a version.
            .prop_filter_map("a valid app name", |s| AppName::new(s).ok())
    }

    fn arb_target() -> impl Strategy<Value = Option<SocketAddr>> {
        prop_oneof![
            Just(None),
            any::<SocketAddr>().prop_map(|a| Some(SocketAddr::new(a.ip(), a.port()))),
        ]
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        (arb_app_name(), arb_target(), any::<bool>()).prop_map(|(app, target, udp)| Request {
            app,
            target,
            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
        })
    }

    fn arb_status() -> impl Strategy<Value = Status> {
        (0u8..=6).prop_map(|c| Status::from_code(c).unwrap())
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        (arb_status(), ".{0,300}").prop_map(|(s, m)| Response::new(s, m))
    }

    #[test]
    fn request_without_target_has_the_documented_layout() {
        let r = Request {
            app: app("ssh"),
            target: None,
            protocol: Protocol::Tcp,
        };
        assert_eq!(r.encode(), vec![1, 3, b's', b's', b'h', 0]);
    }

    #[test]
    fn udp_request_is_version_2_with_a_protocol_byte() {
        let r = Request {
            app: app("dns"),
            target: Some("10.0.0.53:53".parse().unwrap()),
            protocol: Protocol::Udp,
        };
        let enc = r.encode();
        assert_eq!(enc, vec![2, 1, 3, b'd', b'n', b's', 4, 10, 0, 0, 53, 0, 53]);
        assert_eq!(Request::decode(&enc).unwrap(), Some((r, enc.len())));
        // Every prefix asks for more, never past the end.
        for n in 0..enc.len() {
            assert_eq!(Request::decode(&enc[..n]).unwrap(), None);
            let missing = Request::missing(&enc[..n]);
            assert!(missing >= 1 && n + missing <= enc.len(), "{n} {missing}");
        }
    }

    #[test]
    fn version_2_names_tcp_too_and_rejects_unknown_protocols() {
        let tcp = [2, 0, 1, b'x', 0];
        let (r, n) = Request::decode(&tcp).unwrap().unwrap();
        assert_eq!((r.protocol, n), (Protocol::Tcp, 5));
        assert_eq!(
            Request::decode(&[2, 7, 1, b'x', 0]).unwrap_err(),
            PreambleError::UnknownProtocol(7)
        );
        assert_eq!(
            Request::decode(&[3, 0]).unwrap_err(),
            PreambleError::UnsupportedVersion(3)
        );
    }

    #[test]
    fn request_with_ipv4_target_has_a_big_endian_port() {
        let r = Request {
            app: app("x"),
            target: Some("10.1.2.3:8080".parse().unwrap()),
            protocol: Protocol::Tcp,
        };
        assert_eq!(r.encode(), vec![1, 1, b'x', 4, 10, 1, 2, 3, 0x1f, 0x90]);
    }

    #[test]
    fn request_with_ipv6_target_round_trips() {
        let r = Request {
            app: app("x"),
            target: Some("[2001:db8::1]:22".parse().unwrap()),
            protocol: Protocol::Tcp,
        };
        let enc = r.encode();
        assert_eq!(enc.len(), 1 + 1 + 1 + 1 + 16 + 2);
        assert_eq!(Request::decode(&enc).unwrap(), Some((r, enc.len())));
    }

    #[test]
    fn decode_reports_only_the_bytes_of_the_preamble_as_consumed() {
        let r = Request {
            app: app("web"),
            target: None,
            protocol: Protocol::Tcp,
        };
        let mut enc = r.encode();
        let n = enc.len();
        enc.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(Request::decode(&enc).unwrap(), Some((r, n)));
        assert_eq!(Request::missing(&enc), 0);
    }

    #[test]
    fn wrong_version_is_rejected_from_the_first_byte() {
        assert_eq!(
            Request::decode(&[3]),
            Err(PreambleError::UnsupportedVersion(3))
        );
        assert_eq!(
            Response::decode(&[0]),
            Err(PreambleError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn empty_app_name_is_rejected() {
        assert!(matches!(
            Request::decode(&[1, 0, 0]),
            Err(PreambleError::InvalidAppName(_))
        ));
    }

    #[test]
    fn app_name_with_control_characters_is_rejected() {
        assert!(matches!(
            Request::decode(&[1, 2, b'a', b'\n', 0]),
            Err(PreambleError::InvalidAppName(_))
        ));
    }

    #[test]
    fn app_name_that_is_not_utf8_is_rejected() {
        assert!(matches!(
            Request::decode(&[1, 2, 0xff, 0xfe, 0]),
            Err(PreambleError::InvalidAppName(_))
        ));
    }

    #[test]
    fn unknown_target_tag_is_rejected() {
        assert_eq!(
            Request::decode(&[1, 1, b'a', 5]),
            Err(PreambleError::UnknownTargetTag(5))
        );
    }

    #[test]
    fn limit_reached_has_wire_code_6() {
        let r = Response::new(Status::LimitReached, "busy");
        assert_eq!(r.encode(), vec![1, 6, 4, b'b', b'u', b's', b'y']);
        assert_eq!(Status::from_code(6), Some(Status::LimitReached));
        assert_eq!(Status::LimitReached.to_string(), "limit reached");
    }

    #[test]
    fn unknown_status_code_is_an_error() {
        assert_eq!(
            Response::decode(&[1, 7, 0]),
            Err(PreambleError::UnknownStatus(7))
        );
        assert_eq!(
            Response::decode(&[1, 255]),
            Err(PreambleError::UnknownStatus(255))
        );
    }

    #[test]
    fn status_message_that_is_not_utf8_is_an_error() {
        assert_eq!(
            Response::decode(&[1, 2, 1, 0xff]),
            Err(PreambleError::InvalidMessage)
        );
    }

    #[test]
    fn long_message_is_truncated_on_a_char_boundary() {
        // 'é' is two bytes; 200 of them is 400 bytes, so the cut falls at 254.
        let r = Response::new(Status::NotAllowed, "é".repeat(200));
        assert_eq!(r.message.len(), 254);
        let enc = r.encode();
        assert_eq!(Response::decode(&enc).unwrap(), Some((r, enc.len())));
    }

    #[test]
    fn missing_never_reads_past_the_request() {
        let r = Request {
            app: app("database"),
            target: Some("[::1]:5432".parse().unwrap()),
            protocol: Protocol::Tcp,
        };
        let enc = r.encode();
        let mut buf = Vec::new();
        while Request::decode(&buf).unwrap().is_none() {
            let want = Request::missing(&buf);
            assert!(want >= 1);
            assert!(buf.len() + want <= enc.len());
            buf.extend_from_slice(&enc[buf.len()..buf.len() + want]);
        }
        assert_eq!(buf, enc);
    }

    #[test]
    fn missing_never_reads_past_the_response() {
        let r = Response::new(Status::AppUnreachable, "connection refused");
        let enc = r.encode();
        let mut buf = Vec::new();
        while Response::decode(&buf).unwrap().is_none() {
            let want = Response::missing(&buf);
            assert!(want >= 1);
            assert!(buf.len() + want <= enc.len());
            buf.extend_from_slice(&enc[buf.len()..buf.len() + want]);
        }
        assert_eq!(buf, enc);
    }

    proptest! {
        #[test]
        fn any_request_round_trips(r in arb_request(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let enc = r.encode();
            prop_assert!(enc.len() <= MAX_REQUEST_LEN);
            let mut buf = enc.clone();
            buf.extend_from_slice(&tail);
            prop_assert_eq!(Request::decode(&buf).unwrap(), Some((r, enc.len())));
        }

        #[test]
        fn any_response_round_trips(r in arb_response()) {
            let enc = r.encode();
            prop_assert!(enc.len() <= MAX_RESPONSE_LEN);
            prop_assert_eq!(Response::decode(&enc).unwrap(), Some((r, enc.len())));
        }

        #[test]
        fn every_prefix_of_a_request_needs_more(r in arb_request()) {
            let enc = r.encode();
            for i in 0..enc.len() {
                prop_assert_eq!(Request::decode(&enc[..i]), Ok(None));
                let want = Request::missing(&enc[..i]);
                prop_assert!(want >= 1 && i + want <= enc.len());
            }
        }

        #[test]
        fn every_prefix_of_a_response_needs_more(r in arb_response()) {
            let enc = r.encode();
            for i in 0..enc.len() {
                prop_assert_eq!(Response::decode(&enc[..i]), Ok(None));
                let want = Response::missing(&enc[..i]);
                prop_assert!(want >= 1 && i + want <= enc.len());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(Some((_, n))) = Request::decode(&buf) {
                prop_assert!(n <= buf.len());
            }
            if let Ok(Some((_, n))) = Response::decode(&buf) {
                prop_assert!(n <= buf.len());
            }
            let _ = Request::missing(&buf);
            let _ = Response::missing(&buf);
        }

        #[test]
        fn arbitrary_bytes_after_a_version_byte_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = vec![VERSION];
            b.extend_from_slice(&buf);
            let _ = Request::decode(&b);
            let _ = Response::decode(&b);
        }
    }
}
