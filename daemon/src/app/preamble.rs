//! The stream preamble: the header a client side writes first on a new app
//! stream ([`Request`]) and the exposed side's status reply ([`Response`]).
//! After both, the stream carries raw app bytes with no framing.
//!
//! Wire format (all integers big-endian):
//!
//! ```text
//! Request  = version:u8 (=1) | name_len:u8 (1..=255) | name:UTF-8 | target   (TCP)
//!          | version:u8 (=2) | protocol:u8 | name_len:u8 | name:UTF-8 | target
//!          | version:u8 (=3) | protocol:u8 | name_len:u8 | name:UTF-8 | target
//!            | ext_len:u8 | extension*                    (exactly ext_len bytes)
//! protocol = 0 (tcp) | 1 (udp: a datagram flow, see `app::udp`)
//! target   = 0                              (none)
//!          | 4 | ipv4:[u8; 4]  | port:u16
//!          | 6 | ipv6:[u8; 16] | port:u16
//! extension = kind:u8 | len:u8 | value:[u8; len]
//!   kind 1 (client, at most once) = the client's address on the using site and
//!   the local listener address it connected to, one family for both:
//!            4 | src:[u8; 4]  | src_port:u16 | dst:[u8; 4]  | dst_port:u16   (len 13)
//!          | 6 | src:[u8; 16] | src_port:u16 | dst:[u8; 16] | dst_port:u16   (len 37)
//!   other kinds: skipped, so later builds can add extensions without a new version
//! Response = version:u8 (=1) | status:u8 | msg_len:u8 | msg:UTF-8
//! ```
//!
//! The encoder writes the oldest version that can carry a request: version 1
//! for TCP without a client address, version 2 for a UDP flow, version 3 only
//! when there is an extension to carry (a TCP client's address, for exposed
//! apps that send a PROXY protocol header). So peers that predate UDP flows
//! keep understanding plain TCP requests, and peers that predate extensions
//! keep understanding everything but version 3. Such a peer answers a
//! version it does not speak with [`Status::UnsupportedVersion`] (a prompt,
//! clear refusal); the client side then asks again on a new stream without
//! the extension and remembers, for a while, that the far site is older
//! (`app::dialect`), so a new site talking to an old one keeps working and
//! the old site simply never learns client addresses. An exposed side that
//! receives a request without a client address (an old client site, or a
//! unix client) writes the PROXY header's "unknown source" form.
//! Responses are version 1 whatever the request.
//!
//! The exposed side trusts nothing beyond this format: an extension that
//! overruns its block, a malformed client address or a repeated one is a
//! decode error, answered [`Status::BadRequest`] and counted like any bad
//! preamble. The addresses themselves are only ever passed on to the app in
//! the PROXY header (never dialled or used for admission).
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

/// The request version that carries extensions (the client address).
pub const VERSION_EXTENSIONS: u8 = 3;

/// Longest possible encoded [`Request`] (version, protocol, length, 255-byte
/// name, IPv6 target, extension length and a full extension block).
pub const MAX_REQUEST_LEN: usize = 1 + 1 + 1 + 255 + 1 + 16 + 2 + 1 + 255;

/// Extension kind: the client address ([`ClientAddr`]).
const EXT_CLIENT: u8 = 1;

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
    /// An extension's length runs past the end of the extension block.
    #[error("extension {0} overruns the extension block")]
    ExtensionOverrun(u8),
    /// An extension that may appear once appears again.
    #[error("extension {0} appears twice")]
    DuplicateExtension(u8),
    /// The client address extension is malformed.
    #[error("bad client address: {0}")]
    BadClientAddress(&'static str),
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
    /// Where the client connected on the using site, when it has an address
    /// (TCP clients); `None` from older sites, unix clients and UDP flows.
    pub client: Option<ClientAddr>,
}

/// A client's connection as the using site saw it: the client's address
/// (`source`) and the local listener address it connected to
/// (`destination`). Both are of one address family, as a PROXY protocol
/// header needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    source: SocketAddr,
    destination: SocketAddr,
}

impl ClientAddr {
    /// The pair, normalised: IPv4-mapped IPv6 addresses (a dual-stack
    /// listener's IPv4 clients) become IPv4; if the families still differ,
    /// the IPv4 one is written IPv4-mapped so both are IPv6.
    pub fn new(source: SocketAddr, destination: SocketAddr) -> Self {
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let (source, destination) = (canonical(source), canonical(destination));
        let mapped = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        };
        if source.is_ipv4() == destination.is_ipv4() {
            Self {
                source,
                destination,
            }
        } else {
            Self {
                source: mapped(source),
                destination: mapped(destination),
            }
        }
    }

    /// The client's address.
    pub fn source(&self) -> SocketAddr {
        self.source
    }

    /// The listener address the client connected to.
    pub fn destination(&self) -> SocketAddr {
        self.destination
    }

    /// The extension value: family tag, source, source port, destination,
    /// destination port.
    fn encode(&self, out: &mut Vec<u8>) {
        match (self.source, self.destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                out.push(TARGET_V4);
                out.extend_from_slice(&s.ip().octets());
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.ip().octets());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
            (s, d) => {
                // `new` guarantees one family; a V4 here is mapped defensively.
                let v6 = |a: SocketAddr| match a.ip() {
                    IpAddr::V6(ip) => ip.octets(),
                    IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                };
                out.push(TARGET_V6);
                out.extend_from_slice(&v6(s));
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&v6(d));
                out.extend_from_slice(&d.port().to_be_bytes());
            }
        }
    }

    /// Parses an extension value; anything but the two exact layouts is refused.
    fn decode(value: &[u8]) -> Result<Self, PreambleError> {
        let (&tag, rest) = value
            .split_first()
            .ok_or(PreambleError::BadClientAddress("empty"))?;
        let len = match tag {
            TARGET_V4 => 4,
            TARGET_V6 => 16,
            _ => return Err(PreambleError::BadClientAddress("unknown address family")),
        };
        if rest.len() != 2 * (len + 2) {
            return Err(PreambleError::BadClientAddress(
                "wrong length for its address family",
            ));
        }
        let (src, dst) = rest.split_at(len + 2);
        let addr = |b: &[u8]| {
            let (ip, port) = b.split_at(len);
            let ip = match <[u8; 4]>::try_from(ip) {
                Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
                Err(_) => {
                    let mut v6 = [0u8; 16];
                    v6.copy_from_slice(ip);
                    IpAddr::V6(Ipv6Addr::from(v6))
                }
            };
            SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]]))
        };
        Ok(Self {
            source: addr(src),
            destination: addr(dst),
        })
    }
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
        let protocol = match self.protocol {
            Protocol::Tcp => PROTOCOL_TCP,
            Protocol::Udp => PROTOCOL_UDP,
        };
        // The oldest version that carries everything (see the module doc).
        match (self.client.is_some(), self.protocol) {
            (true, _) => out.extend_from_slice(&[VERSION_EXTENSIONS, protocol]),
            (false, Protocol::Tcp) => out.push(VERSION),
            (false, Protocol::Udp) => out.extend_from_slice(&[VERSION_PROTOCOL, protocol]),
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
        if let Some(client) = &self.client {
            let mut value = Vec::with_capacity(37);
            client.encode(&mut value);
            // kind, length, value: at most 2 + 37 bytes, well under 255.
            let ext_len = 2 + value.len();
            out.push(u8::try_from(ext_len).unwrap_or(u8::MAX));
            out.push(EXT_CLIENT);
            out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(&value);
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
            VERSION_PROTOCOL | VERSION_EXTENSIONS => {
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
        let client = if version == VERSION_EXTENSIONS {
            let Some(ext_len) = r.byte() else {
                return Ok(Parsed::Need(1));
            };
            let ext_len = usize::from(ext_len);
            let Some(block) = r.take(ext_len) else {
                return Ok(Parsed::Need(ext_len - r.remaining()));
            };
            parse_extensions(block)?
        } else {
            None
        };
        Ok(Parsed::Done(
            Self {
                app,
                target,
                protocol,
                client,
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

/// Walks a complete extension block: returns the client address if present;
/// skips kinds this build does not know.
fn parse_extensions(block: &[u8]) -> Result<Option<ClientAddr>, PreambleError> {
    let mut r = Reader::new(block);
    let mut client = None;
    while let Some(kind) = r.byte() {
        let value = r
            .byte()
            .and_then(|len| r.take(usize::from(len)))
            .ok_or(PreambleError::ExtensionOverrun(kind))?;
        if kind == EXT_CLIENT {
            if client.is_some() {
                return Err(PreambleError::DuplicateExtension(kind));
            }
            client = Some(ClientAddr::decode(value)?);
        }
    }
    Ok(client)
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

    fn arb_client() -> impl Strategy<Value = Option<ClientAddr>> {
        prop_oneof![
            Just(None),
            (any::<SocketAddr>(), any::<SocketAddr>())
                .prop_map(|(s, d)| Some(ClientAddr::new(s, d))),
        ]
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        (arb_app_name(), arb_target(), any::<bool>(), arb_client()).prop_map(
            |(app, target, udp, client)| Request {
                app,
                target,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                client,
            },
        )
    }

    fn with_client(src: &str, dst: &str) -> Request {
        Request {
            app: app("web"),
            target: None,
            protocol: Protocol::Tcp,
            client: Some(ClientAddr::new(src.parse().unwrap(), dst.parse().unwrap())),
        }
    }

    /// `web`, no target, then an extension block of `exts`.
    fn v3_with_extensions(exts: &[u8]) -> Vec<u8> {
        let mut b = vec![
            3,
            0,
            3,
            b'w',
            b'e',
            b'b',
            0,
            u8::try_from(exts.len()).unwrap(),
        ];
        b.extend_from_slice(exts);
        b
    }

    #[test]
    fn tcp_request_with_an_ipv4_client_is_version_3_with_the_documented_layout() {
        let r = with_client("192.0.2.7:51234", "127.0.0.1:8080");
        let enc = r.encode();
        #[rustfmt::skip]
        let want = vec![
            3, 0, 3, b'w', b'e', b'b', 0,
            15, // extension block: kind, length, 13-byte value
            1, 13, 4, 192, 0, 2, 7, 0xc8, 0x22, 127, 0, 0, 1, 0x1f, 0x90,
        ];
        assert_eq!(enc, want);
        assert_eq!(Request::decode(&enc).unwrap(), Some((r, enc.len())));
    }

    #[test]
    fn tcp_request_with_an_ipv6_client_round_trips() {
        let r = with_client("[2001:db8::7]:51234", "[::1]:8080");
        let enc = r.encode();
        // version, protocol, name, target tag, ext_len, kind, len, 37-byte value.
        assert_eq!(enc.len(), 2 + 1 + 3 + 1 + 1 + 2 + 37);
        assert_eq!(&enc[7..11], &[39, 1, 37, 6]);
        assert_eq!(Request::decode(&enc).unwrap(), Some((r, enc.len())));
    }

    #[test]
    fn requests_without_a_client_keep_the_older_versions() {
        let mut r = with_client("192.0.2.7:1", "127.0.0.1:2");
        r.client = None;
        assert_eq!(r.encode(), vec![1, 3, b'w', b'e', b'b', 0]);
        r.protocol = Protocol::Udp;
        assert_eq!(r.encode(), vec![2, 1, 3, b'w', b'e', b'b', 0]);
    }

    #[test]
    fn client_addresses_are_normalised_to_one_family() {
        // A dual-stack listener's IPv4 client: both sides mapped.
        let c = ClientAddr::new(
            "[::ffff:192.0.2.7]:1".parse().unwrap(),
            "[::ffff:127.0.0.1]:2".parse().unwrap(),
        );
        assert_eq!(c.source(), "192.0.2.7:1".parse().unwrap());
        assert_eq!(c.destination(), "127.0.0.1:2".parse().unwrap());
        // Mixed families: the IPv4 one is written mapped.
        let c = ClientAddr::new(
            "192.0.2.7:1".parse().unwrap(),
            "[2001:db8::1]:2".parse().unwrap(),
        );
        assert_eq!(c.source(), "[::ffff:192.0.2.7]:1".parse().unwrap());
        assert_eq!(c.destination(), "[2001:db8::1]:2".parse().unwrap());
    }

    #[test]
    fn unknown_extensions_are_skipped_and_an_empty_block_is_fine() {
        let (r, n) = Request::decode(&v3_with_extensions(&[])).unwrap().unwrap();
        assert_eq!((r.client, n), (None, 8));
        // Kind 9 (unknown, 2 bytes), then the client, then kind 200 (empty).
        let mut exts = vec![
            9, 2, 0xaa, 0xbb, 1, 13, 4, 10, 0, 0, 1, 0, 1, 10, 0, 0, 2, 0, 2,
        ];
        exts.extend_from_slice(&[200, 0]);
        let buf = v3_with_extensions(&exts);
        let (r, n) = Request::decode(&buf).unwrap().unwrap();
        assert_eq!(n, buf.len());
        let c = r.client.unwrap();
        assert_eq!(c.source(), "10.0.0.1:1".parse().unwrap());
        assert_eq!(c.destination(), "10.0.0.2:2".parse().unwrap());
    }

    #[test]
    fn malformed_extensions_are_refused() {
        let v4 = [1u8, 13, 4, 10, 0, 0, 1, 0, 1, 10, 0, 0, 2, 0, 2];
        let cases: Vec<(Vec<u8>, PreambleError)> = vec![
            // A kind byte with no length.
            (vec![7], PreambleError::ExtensionOverrun(7)),
            // A length past the block.
            (vec![7, 5, 0, 0], PreambleError::ExtensionOverrun(7)),
            (vec![1, 40, 6], PreambleError::ExtensionOverrun(1)),
            // The client twice.
            ([v4, v4].concat(), PreambleError::DuplicateExtension(1)),
            // Empty value, unknown family, wrong lengths for the family.
            (vec![1, 0], PreambleError::BadClientAddress("empty")),
            (
                vec![1, 13, 5, 10, 0, 0, 1, 0, 1, 10, 0, 0, 2, 0, 2],
                PreambleError::BadClientAddress("unknown address family"),
            ),
            (
                vec![1, 12, 4, 10, 0, 0, 1, 0, 1, 10, 0, 0, 2, 0],
                PreambleError::BadClientAddress("wrong length for its address family"),
            ),
            (
                [&[1u8, 14][..], &v4[2..], &[0]].concat(),
                PreambleError::BadClientAddress("wrong length for its address family"),
            ),
            (
                [&[1u8, 13, 6][..], &v4[3..]].concat(),
                PreambleError::BadClientAddress("wrong length for its address family"),
            ),
        ];
        for (exts, want) in cases {
            assert_eq!(
                Request::decode(&v3_with_extensions(&exts)),
                Err(want.clone()),
                "{exts:?}"
            );
            assert_eq!(Request::missing(&v3_with_extensions(&exts)), 0);
        }
    }

    #[test]
    fn a_truncated_extension_block_asks_for_exactly_the_rest() {
        let enc = with_client("[2001:db8::7]:51234", "[::1]:8080").encode();
        for n in 0..enc.len() {
            assert_eq!(Request::decode(&enc[..n]), Ok(None), "{n}");
            let missing = Request::missing(&enc[..n]);
            assert!(missing >= 1 && n + missing <= enc.len(), "{n} {missing}");
        }
        // Once the length is in, the whole block is asked for at once.
        assert_eq!(Request::missing(&enc[..8]), enc.len() - 8);
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
            client: None,
        };
        assert_eq!(r.encode(), vec![1, 3, b's', b's', b'h', 0]);
    }

    #[test]
    fn udp_request_is_version_2_with_a_protocol_byte() {
        let r = Request {
            app: app("dns"),
            target: Some("10.0.0.53:53".parse().unwrap()),
            protocol: Protocol::Udp,
            client: None,
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
            Request::decode(&[4, 0]).unwrap_err(),
            PreambleError::UnsupportedVersion(4)
        );
    }

    #[test]
    fn request_with_ipv4_target_has_a_big_endian_port() {
        let r = Request {
            app: app("x"),
            target: Some("10.1.2.3:8080".parse().unwrap()),
            protocol: Protocol::Tcp,
            client: None,
        };
        assert_eq!(r.encode(), vec![1, 1, b'x', 4, 10, 1, 2, 3, 0x1f, 0x90]);
    }

    #[test]
    fn request_with_ipv6_target_round_trips() {
        let r = Request {
            app: app("x"),
            target: Some("[2001:db8::1]:22".parse().unwrap()),
            protocol: Protocol::Tcp,
            client: None,
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
            client: None,
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
            Request::decode(&[4]),
            Err(PreambleError::UnsupportedVersion(4))
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
            client: None,
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

        /// Any extension block (garbage included) decodes to a request or
        /// an error, never a panic, and never claims bytes past the block.
        #[test]
        fn arbitrary_extension_blocks_never_panic(exts in proptest::collection::vec(any::<u8>(), 0..=255)) {
            let buf = v3_with_extensions(&exts);
            match Request::decode(&buf) {
                Ok(Some((_, n))) => prop_assert_eq!(n, buf.len()),
                Ok(None) => prop_assert!(false, "a complete block asked for more"),
                Err(_) => prop_assert_eq!(Request::missing(&buf), 0),
            }
        }

        /// Mangling one byte of an extended request never panics and never
        /// decodes to a client address outside the block's own bytes.
        #[test]
        fn a_flipped_byte_in_an_extended_request_is_harmless(
            (src, dst) in (any::<SocketAddr>(), any::<SocketAddr>()),
            at in 0usize..48,
            byte in any::<u8>(),
        ) {
            let mut enc = Request {
                app: app("web"),
                target: None,
                protocol: Protocol::Tcp,
                client: Some(ClientAddr::new(src, dst)),
            }
            .encode();
            let at = at % enc.len();
            enc[at] = byte;
            if let Ok(Some((_, n))) = Request::decode(&enc) {
                prop_assert!(n <= enc.len());
            }
        }
    }
}
