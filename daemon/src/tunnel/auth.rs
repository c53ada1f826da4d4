//! The key proof on every dataChannel, bound to its TLS session.
//!
//! Right after the QUIC handshake the dialer opens the first bidirectional
//! stream and sends a hello carrying an HMAC (under the tunnel key derived
//! from `crypto.key`) over a TLS exporter value of *this* connection; the
//! listener checks it and answers with its own HMAC under a different label.
//! Each side serves no app stream before the other's proof checked out. The
//! exporter differs on every TLS session, so a relay that splices two sessions
//! (a man in the middle) cannot reuse a proof, and a peer without the key
//! cannot make one. The codec is pure; the two async fns only move bytes.

use std::time::Duration;

use crate::config::SiteName;
use crate::crypto::Keys;
use crate::message::announce::InstanceId;

/// QUIC application close code for a failed key proof.
pub const AUTH_FAILED: u32 = 0x5741;
/// One deadline for the QUIC handshake plus both proofs, on either side; the
/// callers enforce it around [`client`] and [`server`] (which do not time out
/// on their own). A few round trips on any real path, and the longest a keyless
/// peer can hold a connection open.
pub const DEADLINE: Duration = Duration::from_secs(5);

const VERSION: u8 = 1;
const EXPORTER_LABEL: &[u8] = b"EXPORTER-wovenet-channel-auth-v1";
const CLIENT_LABEL: &[u8] = b"wovenet/v1/auth/client";
const SERVER_LABEL: &[u8] = b"wovenet/v1/auth/server";
const FIXED_LEN: usize = 1 + 32 + 16 + 1;

/// Who is at the other end of an authenticated channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerId {
    /// The peer's site name.
    pub site: SiteName,
    /// The peer's process instance.
    pub instance: InstanceId,
}

/// Why a key proof failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The peer's MAC did not verify: it does not know the key, or the session was spliced.
    #[error("peer failed the key proof")]
    BadProof,
    /// The hello was not well formed.
    #[error("malformed hello: {0}")]
    Malformed(&'static str),
    /// The handshake and both proofs were not done by the deadline.
    #[error("no key proof within {0:?} of the first packet")]
    Timeout(Duration),
    /// The TLS session offers no exporter (cannot happen with TLS 1.3).
    #[error("TLS exporter unavailable")]
    NoExporter,
    /// The connection failed before the hello stream existed.
    #[error("connection failed during the key proof")]
    Connection(#[source] quinn::ConnectionError),
    /// Reading the peer's hello failed.
    #[error("reading the hello failed")]
    Read(#[source] quinn::ReadExactError),
    /// Sending our hello failed.
    #[error("sending the hello failed")]
    Write(#[source] quinn::WriteError),
}

/// Which end of the handshake we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Client => CLIENT_LABEL,
            Self::Server => SERVER_LABEL,
        }
    }
}

fn mac_input(exporter: &[u8; 32], who: &PeerId) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + 16 + who.site.as_str().len());
    v.extend_from_slice(exporter);
    v.extend_from_slice(who.instance.as_bytes());
    v.extend_from_slice(who.site.as_str().as_bytes());
    v
}

fn encode_hello(keys: &Keys, role: Role, exporter: &[u8; 32], me: &PeerId) -> Vec<u8> {
    let mac = keys.auth_mac(role.label(), &mac_input(exporter, me));
    let site = me.site.as_str().as_bytes();
    let mut out = Vec::with_capacity(FIXED_LEN + site.len());
    out.push(VERSION);
    out.extend_from_slice(&mac);
    out.extend_from_slice(me.instance.as_bytes());
    // SiteName is at most 255 bytes by construction.
    out.push(site.len() as u8);
    out.extend_from_slice(site);
    out
}

/// Checks a hello sent by `role` and returns who sent it.
fn decode_hello(
    keys: &Keys,
    role: Role,
    exporter: &[u8; 32],
    fixed: &[u8; FIXED_LEN],
    site: &[u8],
) -> Result<PeerId, AuthError> {
    if fixed[0] != VERSION {
        return Err(AuthError::Malformed("unsupported version"));
    }
    let mac = &fixed[1..33];
    let mut inst = [0u8; 16];
    inst.copy_from_slice(&fixed[33..49]);
    let site =
        std::str::from_utf8(site).map_err(|_| AuthError::Malformed("site name is not UTF-8"))?;
    let site = SiteName::new(site).map_err(|_| AuthError::Malformed("invalid site name"))?;
    let who = PeerId {
        site,
        instance: InstanceId::from_bytes(inst),
    };
    if keys.verify_auth_mac(role.label(), &mac_input(exporter, &who), mac) {
        Ok(who)
    } else {
        Err(AuthError::BadProof)
    }
}

fn exporter(conn: &quinn::Connection) -> Result<[u8; 32], AuthError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| AuthError::NoExporter)?;
    Ok(out)
}

async fn read_hello(
    recv: &mut quinn::RecvStream,
    keys: &Keys,
    role: Role,
    exporter: &[u8; 32],
) -> Result<PeerId, AuthError> {
    let mut fixed = [0u8; FIXED_LEN];
    recv.read_exact(&mut fixed).await.map_err(AuthError::Read)?;
    let mut site = vec![0u8; usize::from(fixed[FIXED_LEN - 1])];
    recv.read_exact(&mut site).await.map_err(AuthError::Read)?;
    decode_hello(keys, role, exporter, &fixed, &site)
}

/// Dialer side: prove ourselves, then check the listener's proof.
pub async fn client(
    conn: &quinn::Connection,
    keys: &Keys,
    me: &PeerId,
) -> Result<PeerId, AuthError> {
    let exp = exporter(conn)?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(AuthError::Connection)?;
    send.write_all(&encode_hello(keys, Role::Client, &exp, me))
        .await
        .map_err(AuthError::Write)?;
    let peer = read_hello(&mut recv, keys, Role::Server, &exp).await?;
    let _ = send.finish();
    Ok(peer)
}

/// Listener side: check the dialer's proof first, and only then prove ourselves
/// (a keyless dialer learns nothing, not even our site name).
pub async fn server(
    conn: &quinn::Connection,
    keys: &Keys,
    me: &PeerId,
) -> Result<PeerId, AuthError> {
    let exp = exporter(conn)?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(AuthError::Connection)?;
    let peer = read_hello(&mut recv, keys, Role::Client, &exp).await?;
    send.write_all(&encode_hello(keys, Role::Server, &exp, me))
        .await
        .map_err(AuthError::Write)?;
    let _ = send.finish();
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CryptoKey;
    use std::sync::OnceLock;

    fn keys(which: u8) -> &'static Keys {
        static A: OnceLock<Keys> = OnceLock::new();
        static B: OnceLock<Keys> = OnceLock::new();
        let (cell, k) = if which == 0 {
            (&A, "right-key-123")
        } else {
            (&B, "wrong-key-456")
        };
        cell.get_or_init(|| Keys::derive(&CryptoKey::new(k).unwrap()))
    }

    fn me() -> PeerId {
        PeerId {
            site: SiteName::new("site-a").unwrap(),
            instance: InstanceId::from_bytes([7; 16]),
        }
    }

    fn split(b: &[u8]) -> ([u8; FIXED_LEN], Vec<u8>) {
        let mut f = [0u8; FIXED_LEN];
        f.copy_from_slice(&b[..FIXED_LEN]);
        (f, b[FIXED_LEN..].to_vec())
    }

    #[test]
    fn hello_round_trips_under_the_same_key_and_session() {
        let exp = [3u8; 32];
        let (f, s) = split(&encode_hello(keys(0), Role::Client, &exp, &me()));
        assert_eq!(
            decode_hello(keys(0), Role::Client, &exp, &f, &s).unwrap(),
            me()
        );
    }

    #[test]
    fn hello_fails_under_another_key_session_or_role() {
        let exp = [3u8; 32];
        let (f, s) = split(&encode_hello(keys(0), Role::Client, &exp, &me()));
        assert!(matches!(
            decode_hello(keys(1), Role::Client, &exp, &f, &s),
            Err(AuthError::BadProof)
        ));
        assert!(matches!(
            decode_hello(keys(0), Role::Client, &[4u8; 32], &f, &s),
            Err(AuthError::BadProof)
        ));
        // A client proof reflected back as a server proof must not verify.
        assert!(matches!(
            decode_hello(keys(0), Role::Server, &exp, &f, &s),
            Err(AuthError::BadProof)
        ));
    }

    #[test]
    fn claimed_identity_is_covered_by_the_mac() {
        let exp = [3u8; 32];
        let (mut f, s) = split(&encode_hello(keys(0), Role::Client, &exp, &me()));
        f[40] ^= 1; // instance byte
        assert!(matches!(
            decode_hello(keys(0), Role::Client, &exp, &f, &s),
            Err(AuthError::BadProof)
        ));
        let (f, _) = split(&encode_hello(keys(0), Role::Client, &exp, &me()));
        assert!(matches!(
            decode_hello(keys(0), Role::Client, &exp, &f, b"site-b"),
            Err(AuthError::BadProof)
        ));
    }
}
