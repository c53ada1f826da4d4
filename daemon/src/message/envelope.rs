//! The sealed envelope around every MQTT payload, and the replay window.
//!
//! Wire format: `[version = 1][nonce: 24][ciphertext + tag: 16]`, sealed with
//! XChaCha20-Poly1305 under the envelope subkey. The additional data is the
//! version byte followed by the topic, so a payload cannot be moved to another
//! topic (e.g. a unicast replayed as a broadcast). The plaintext is
//! `[sent_at: u64 unix ms, big endian][message id: 16][signer: 32][signature: 64][body]`.
//!
//! The network key only says "a member sealed this". The signature, by the
//! sending site's identity (Ed25519, see [`crate::identity`]), covers the
//! topic, the time, the id and the body, so a member cannot forge another
//! site's message, nor replay one under a fresh time or id (the replay window
//! below judges exactly the signed time and id). Which identity may speak for
//! which site name is the receiver's business (`site::trust`).
//!
//! Everything here is pure: time is passed in, randomness only picks nonces and
//! ids. This module must not log, touch the network, or put key material or
//! payload bytes into errors.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::crypto::Keys;
use crate::identity::{PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, SiteKey};

/// The only envelope version this build writes and reads. Version 1 had no
/// signature; its envelopes are refused as [`EnvelopeError::UnknownVersion`].
pub const VERSION: u8 = 2;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const ID_LEN: usize = 16;
const TIME_LEN: usize = 8;
const INNER_HEADER_LEN: usize = TIME_LEN + ID_LEN + PUBLIC_KEY_LEN + SIGNATURE_LEN;
/// Domain separation of the identity signature.
const SIGN_LABEL: &[u8] = b"wovenet/v2/message-signature";
/// Bytes a sealed envelope adds to its body.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN + INNER_HEADER_LEN;

/// Why bytes could not be opened. Carries no payload or key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Fewer bytes than the smallest possible envelope.
    #[error("envelope too short")]
    TooShort,
    /// The version byte is not one this build understands.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// Authentication failed: wrong key, wrong topic, or tampered bytes.
    #[error("envelope cannot be decrypted (wrong key or topic, or tampered)")]
    Undecryptable,
    /// Sealed with the network key, but the identity signature does not
    /// verify: a member forged or altered another's message.
    #[error("envelope signature does not verify")]
    BadSignature,
}

/// An authenticated, decrypted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// When the sender sealed it, in unix milliseconds (sender's clock).
    pub sent_at_ms: u64,
    /// Random per-message id, used for replay detection.
    pub id: [u8; ID_LEN],
    /// The identity that signed it.
    pub signer: PublicKey,
    /// The sealed body.
    pub body: Vec<u8>,
}

/// Milliseconds since the unix epoch; clocks before 1970 count as 0.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn aad(topic: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + topic.len());
    aad.push(VERSION);
    aad.extend_from_slice(topic.as_bytes());
    aad
}

fn cipher(keys: &Keys) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(keys.envelope_key().into())
}

fn signed_bytes(topic: &str, sent_at_ms: u64, id: &[u8; ID_LEN], body: &[u8]) -> Vec<u8> {
    let mut v =
        Vec::with_capacity(SIGN_LABEL.len() + 2 + topic.len() + TIME_LEN + ID_LEN + body.len());
    v.extend_from_slice(SIGN_LABEL);
    // Topics are far shorter than 64 KiB (MQTT caps them there).
    v.extend_from_slice(&u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes());
    v.extend_from_slice(topic.as_bytes());
    v.extend_from_slice(&sent_at_ms.to_be_bytes());
    v.extend_from_slice(id);
    v.extend_from_slice(body);
    v
}

/// Seals `body` for `topic`, signed by `signer`, with a fresh random nonce
/// and message id.
pub fn seal(keys: &Keys, signer: &SiteKey, topic: &str, body: &[u8], now: SystemTime) -> Vec<u8> {
    seal_with(
        keys,
        signer,
        topic,
        body,
        unix_ms(now),
        rand::random(),
        rand::random(),
    )
}

fn seal_with(
    keys: &Keys,
    signer: &SiteKey,
    topic: &str,
    body: &[u8],
    sent_at_ms: u64,
    id: [u8; ID_LEN],
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let sig = signer.sign(&signed_bytes(topic, sent_at_ms, &id, body));
    let mut plain = Vec::with_capacity(INNER_HEADER_LEN + body.len());
    plain.extend_from_slice(&sent_at_ms.to_be_bytes());
    plain.extend_from_slice(&id);
    plain.extend_from_slice(signer.public().as_bytes());
    plain.extend_from_slice(&sig);
    plain.extend_from_slice(body);
    let aad = aad(topic);
    // Invariant: XChaCha20-Poly1305 only fails for plaintexts above 256 GiB,
    // far beyond anything held in memory here (MQTT caps payloads far lower).
    let sealed = cipher(keys)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .expect("invariant: plaintext far below the AEAD length limit");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens bytes received on `topic`. Never panics, whatever the input.
pub fn open(keys: &Keys, topic: &str, bytes: &[u8]) -> Result<Opened, EnvelopeError> {
    let (&version, rest) = bytes.split_first().ok_or(EnvelopeError::TooShort)?;
    if version != VERSION {
        return Err(EnvelopeError::UnknownVersion(version));
    }
    if bytes.len() < OVERHEAD {
        return Err(EnvelopeError::TooShort);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let aad = aad(topic);
    let plain = cipher(keys)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| EnvelopeError::Undecryptable)?;
    // The length check above guarantees the plaintext holds the inner header.
    let (time, rest) = plain
        .split_first_chunk::<TIME_LEN>()
        .ok_or(EnvelopeError::TooShort)?;
    let (id, rest) = rest
        .split_first_chunk::<ID_LEN>()
        .ok_or(EnvelopeError::TooShort)?;
    let (signer, rest) = rest
        .split_first_chunk::<PUBLIC_KEY_LEN>()
        .ok_or(EnvelopeError::TooShort)?;
    let (sig, body) = rest
        .split_first_chunk::<SIGNATURE_LEN>()
        .ok_or(EnvelopeError::TooShort)?;
    let sent_at_ms = u64::from_be_bytes(*time);
    let signer = PublicKey::from_bytes(*signer);
    if !signer.verify(&signed_bytes(topic, sent_at_ms, id, body), sig) {
        return Err(EnvelopeError::BadSignature);
    }
    Ok(Opened {
        sent_at_ms,
        id: *id,
        signer,
        body: body.to_vec(),
    })
}

/// Whether a message must be recent to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Reject messages older than the window's maximum age (the normal case).
    Required,
    /// Accept any age, still deduplicated by id. For MQTT last wills, which the
    /// broker publishes long after they were sealed.
    Exempt,
}

/// Why the replay window refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Older than the maximum age (or older than what the window can still vouch for).
    #[error("message too old")]
    Stale,
    /// Sent further in the future than the allowed clock skew.
    #[error("message from the future")]
    Future,
    /// This message id was already accepted.
    #[error("message replayed")]
    Replayed,
    /// Dated in the future while the window already holds as many
    /// future-dated messages as it may (a sender's clock is ahead, or a flood).
    #[error("too many future-dated messages pending")]
    FutureBacklog,
}

/// Rejects stale, future-dated and repeated messages with bounded memory.
///
/// Each accepted id is remembered until the moment it would be rejected as
/// stale anyway (`sent_at + max_age`), so memory is proportional to the recent
/// message rate.
///
/// Messages dated no later than now ("present") share one budget of `cap`
/// ids. When it is exceeded the entry expiring first is evicted and the window
/// raises a floor: any later message that would expire no later than the
/// evicted one is refused as stale, so eviction never reopens a replay hole.
///
/// Messages dated after now (at most `max_skew` ahead) have a budget of their
/// own and are never evicted: when it is full, further future-dated messages
/// are refused ([`Rejected::FutureBacklog`]). Evicting one would have to raise
/// the floor to its expiry, up to `now + max_skew + max_age`, and so refuse
/// every present message for up to `max_skew`; keeping them apart means a
/// burst of future-dated messages can never make the window refuse a present
/// one.
///
/// Age-exempt messages are remembered for `max_age` after arrival; a replay
/// after that is accepted again (acceptable for `Depart`, whose effect is only
/// to forget an instance until it announces again).
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    max_age_ms: u64,
    max_skew_ms: u64,
    cap: usize,
    future_cap: usize,
    seen: HashSet<[u8; ID_LEN]>,
    /// Present entries by expiry: the eviction order.
    present: BTreeSet<(u64, [u8; ID_LEN])>,
    /// Entries that were future-dated on arrival, by expiry; only ever expire.
    future: BTreeSet<(u64, [u8; ID_LEN])>,
    floor_ms: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new(Self::MAX_AGE, Self::MAX_SKEW, Self::DEFAULT_CAP)
            .with_future_cap(Self::DEFAULT_FUTURE_CAP)
    }
}

impl ReplayWindow {
    /// Default maximum age of an accepted message.
    pub const MAX_AGE: Duration = Duration::from_secs(120);
    /// Default tolerated clock skew into the future. Hosts kept in time by
    /// NTP differ by milliseconds; ten seconds also covers a free-running
    /// clock (about 2 s of drift a day) for days, while keeping short how long
    /// a future-dated message occupies the future budget.
    pub const MAX_SKEW: Duration = Duration::from_secs(10);
    /// Default number of remembered present ids (about 34 messages per
    /// second sustained over the default age before eviction starts).
    pub const DEFAULT_CAP: usize = 4096;
    /// Default number of remembered future-dated ids.
    pub const DEFAULT_FUTURE_CAP: usize = 1024;

    /// A window with explicit limits: `cap` present ids (at least 1) and, until
    /// [`ReplayWindow::with_future_cap`] says otherwise, a quarter as many
    /// future-dated ones (at least 1).
    pub fn new(max_age: Duration, max_skew: Duration, cap: usize) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let cap = cap.max(1);
        Self {
            max_age_ms: ms(max_age),
            max_skew_ms: ms(max_skew),
            cap,
            future_cap: (cap / 4).max(1),
            seen: HashSet::new(),
            present: BTreeSet::new(),
            future: BTreeSet::new(),
            floor_ms: 0,
        }
    }

    /// Sets how many future-dated ids are remembered (at least 1).
    #[must_use]
    pub fn with_future_cap(mut self, future_cap: usize) -> Self {
        self.future_cap = future_cap.max(1);
        self
    }

    /// Number of remembered ids; never more than `cap + future_cap`.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Accepts (and remembers) or rejects a message sealed at `sent_at_ms` with `id`.
    pub fn check(
        &mut self,
        now: SystemTime,
        sent_at_ms: u64,
        id: [u8; ID_LEN],
        freshness: Freshness,
    ) -> Result<(), Rejected> {
        let now_ms = unix_ms(now);
        self.expire(now_ms);
        if sent_at_ms > now_ms.saturating_add(self.max_skew_ms) {
            return Err(Rejected::Future);
        }
        let expiry = match freshness {
            Freshness::Required => sent_at_ms.saturating_add(self.max_age_ms),
            Freshness::Exempt => now_ms.saturating_add(self.max_age_ms),
        };
        // `expiry <= now` means age >= max_age; `<= floor` means an entry that
        // would have outlived it was already evicted.
        if expiry <= now_ms || expiry <= self.floor_ms {
            return Err(Rejected::Stale);
        }
        if self.seen.contains(&id) {
            return Err(Rejected::Replayed);
        }
        if sent_at_ms > now_ms {
            if self.future.len() >= self.future_cap {
                return Err(Rejected::FutureBacklog);
            }
            self.seen.insert(id);
            self.future.insert((expiry, id));
            return Ok(());
        }
        self.seen.insert(id);
        self.present.insert((expiry, id));
        while self.present.len() > self.cap {
            let Some((evicted_expiry, evicted_id)) = self.present.pop_first() else {
                break;
            };
            self.seen.remove(&evicted_id);
            self.floor_ms = self.floor_ms.max(evicted_expiry);
        }
        Ok(())
    }

    fn expire(&mut self, now_ms: u64) {
        for entries in [&mut self.present, &mut self.future] {
            while let Some(&(expiry, id)) = entries.first() {
                if expiry > now_ms {
                    break;
                }
                entries.pop_first();
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crypto::tests::{keys_a, keys_b};

    const TOPIC: &str = "wovenet/test";

    pub(crate) fn id_a() -> &'static SiteKey {
        static K: std::sync::OnceLock<SiteKey> = std::sync::OnceLock::new();
        K.get_or_init(|| SiteKey::generate().unwrap())
    }

    fn id_b() -> &'static SiteKey {
        static K: std::sync::OnceLock<SiteKey> = std::sync::OnceLock::new();
        K.get_or_init(|| SiteKey::generate().unwrap())
    }

    /// What a member holding the network key can build: any plaintext,
    /// any claimed signer, any signature.
    fn member_seals(
        topic: &str,
        sent_at_ms: u64,
        id: [u8; ID_LEN],
        signer: &PublicKey,
        sig: &[u8; SIGNATURE_LEN],
        body: &[u8],
    ) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&sent_at_ms.to_be_bytes());
        plain.extend_from_slice(&id);
        plain.extend_from_slice(signer.as_bytes());
        plain.extend_from_slice(sig);
        plain.extend_from_slice(body);
        let sealed = cipher(keys_a())
            .encrypt(
                XNonce::from_slice(&[3; NONCE_LEN]),
                Payload {
                    msg: &plain,
                    aad: &aad(topic),
                },
            )
            .unwrap();
        let mut out = vec![VERSION];
        out.extend_from_slice(&[3; NONCE_LEN]);
        out.extend_from_slice(&sealed);
        out
    }

    #[test]
    fn the_signer_is_reported_and_verified() {
        let sealed = seal(keys_a(), id_a(), TOPIC, b"hello", at(0));
        assert_eq!(
            open(keys_a(), TOPIC, &sealed).unwrap().signer,
            id_a().public()
        );
        let sealed = seal(keys_a(), id_b(), TOPIC, b"hello", at(0));
        assert_eq!(
            open(keys_a(), TOPIC, &sealed).unwrap().signer,
            id_b().public()
        );
    }

    #[test]
    fn a_member_cannot_speak_for_another_identity() {
        let t = unix_ms(at(0));
        let id = [5; ID_LEN];
        // B signs, but claims to be A.
        let sig = id_b().sign(&signed_bytes(TOPIC, t, &id, b"hi"));
        let forged = member_seals(TOPIC, t, id, &id_a().public(), &sig, b"hi");
        assert_eq!(
            open(keys_a(), TOPIC, &forged),
            Err(EnvelopeError::BadSignature)
        );
        // A's genuine signature, re-sealed with another time, id, topic or body.
        let sig = id_a().sign(&signed_bytes(TOPIC, t, &id, b"hi"));
        let a = id_a().public();
        assert!(
            open(
                keys_a(),
                TOPIC,
                &member_seals(TOPIC, t, id, &a, &sig, b"hi")
            )
            .is_ok()
        );
        for bad in [
            member_seals(TOPIC, t + 1, id, &a, &sig, b"hi"),
            member_seals(TOPIC, t, [6; ID_LEN], &a, &sig, b"hi"),
            member_seals(TOPIC, t, id, &a, &sig, b"ho"),
        ] {
            assert_eq!(
                open(keys_a(), TOPIC, &bad),
                Err(EnvelopeError::BadSignature)
            );
        }
        let other = "wovenet/test/i/00";
        assert_eq!(
            open(
                keys_a(),
                other,
                &member_seals(other, t, id, &a, &sig, b"hi")
            ),
            Err(EnvelopeError::BadSignature)
        );
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn sealed_body_opens_with_same_key_and_topic() {
        let sealed = seal(keys_a(), id_a(), TOPIC, b"hello", at(0));
        assert_eq!(sealed.len(), OVERHEAD + 5);
        assert_eq!(sealed[0], VERSION);
        let opened = open(keys_a(), TOPIC, &sealed).unwrap();
        assert_eq!(opened.body, b"hello");
        assert_eq!(opened.sent_at_ms, unix_ms(at(0)));
    }

    #[test]
    fn empty_body_round_trips() {
        let sealed = seal(keys_a(), id_a(), TOPIC, b"", at(0));
        assert_eq!(open(keys_a(), TOPIC, &sealed).unwrap().body, b"");
    }

    #[test]
    fn each_seal_uses_fresh_nonce_and_id() {
        let a = seal(keys_a(), id_a(), TOPIC, b"x", at(0));
        let b = seal(keys_a(), id_a(), TOPIC, b"x", at(0));
        assert_ne!(a[1..25], b[1..25]);
        let (oa, ob) = (
            open(keys_a(), TOPIC, &a).unwrap(),
            open(keys_a(), TOPIC, &b).unwrap(),
        );
        assert_ne!(oa.id, ob.id);
    }

    #[test]
    fn flipping_any_byte_makes_it_undecryptable() {
        let sealed = seal_with(keys_a(), id_a(), TOPIC, b"body bytes", 42, [7; 16], [9; 24]);
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                open(keys_a(), TOPIC, &bad),
                Err(EnvelopeError::Undecryptable),
                "byte {i}"
            );
        }
        let mut bad = sealed;
        bad[0] = 1;
        assert_eq!(
            open(keys_a(), TOPIC, &bad),
            Err(EnvelopeError::UnknownVersion(1))
        );
    }

    #[test]
    fn wrong_key_cannot_open() {
        let sealed = seal(keys_a(), id_a(), TOPIC, b"secret", at(0));
        assert_eq!(
            open(keys_b(), TOPIC, &sealed),
            Err(EnvelopeError::Undecryptable)
        );
    }

    #[test]
    fn payload_moved_to_another_topic_cannot_open() {
        let sealed = seal(keys_a(), id_a(), TOPIC, b"secret", at(0));
        assert_eq!(
            open(keys_a(), "wovenet/test/i/00", &sealed),
            Err(EnvelopeError::Undecryptable)
        );
    }

    #[test]
    fn truncated_input_is_too_short() {
        let sealed = seal(keys_a(), id_a(), TOPIC, b"", at(0));
        assert_eq!(open(keys_a(), TOPIC, &[]), Err(EnvelopeError::TooShort));
        assert_eq!(
            open(keys_a(), TOPIC, &sealed[..OVERHEAD - 1]),
            Err(EnvelopeError::TooShort)
        );
        // Truncating a non-empty body keeps the length valid but breaks the tag.
        let sealed = seal(keys_a(), id_a(), TOPIC, b"abc", at(0));
        assert_eq!(
            open(keys_a(), TOPIC, &sealed[..sealed.len() - 1]),
            Err(EnvelopeError::Undecryptable)
        );
    }

    #[test]
    fn errors_never_mention_key_or_payload() {
        for e in [
            EnvelopeError::TooShort,
            EnvelopeError::UnknownVersion(9),
            EnvelopeError::Undecryptable,
        ] {
            let text = format!("{e} {e:?}");
            assert!(!text.contains("correct"), "{text}");
        }
    }

    #[test]
    fn fresh_message_is_accepted_once_then_replay_rejected() {
        let mut w = ReplayWindow::default();
        let sent = unix_ms(at(0));
        assert_eq!(w.check(at(1), sent, [1; 16], Freshness::Required), Ok(()));
        assert_eq!(
            w.check(at(2), sent, [1; 16], Freshness::Required),
            Err(Rejected::Replayed)
        );
        assert_eq!(w.check(at(2), sent, [2; 16], Freshness::Required), Ok(()));
    }

    #[test]
    fn message_older_than_max_age_is_stale() {
        let mut w = ReplayWindow::default();
        let sent = unix_ms(at(0));
        assert_eq!(
            w.check(at(120), sent, [1; 16], Freshness::Required),
            Err(Rejected::Stale)
        );
        assert_eq!(w.check(at(119), sent, [1; 16], Freshness::Required), Ok(()));
        // Once it is old enough to be forgotten it is also old enough to be stale.
        assert_eq!(
            w.check(at(121), sent, [1; 16], Freshness::Required),
            Err(Rejected::Stale)
        );
        assert!(w.is_empty());
    }

    /// Regression: the tolerated skew into the future was the whole age
    /// window (120 s), so a message could be dated two minutes ahead.
    #[test]
    fn future_skew_is_bounded_separately_from_the_age_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(ReplayWindow::MAX_SKEW, Duration::from_secs(10));
        assert_eq!(
            w.check(at(0), unix_ms(at(11)), [1; 16], Freshness::Required),
            Err(Rejected::Future)
        );
        assert_eq!(
            w.check(at(0), unix_ms(at(60)), [1; 16], Freshness::Required),
            Err(Rejected::Future)
        );
        assert_eq!(
            w.check(at(0), unix_ms(at(10)), [1; 16], Freshness::Required),
            Ok(())
        );
        assert_eq!(
            w.check(at(0), u64::MAX, [2; 16], Freshness::Exempt),
            Err(Rejected::Future)
        );
    }

    /// Regression: future-dated ids were evicted like present ones, raising
    /// the floor up to `now + skew + max_age`; a burst of them made the
    /// window (on every site) refuse every legitimate message for as long as
    /// the skew.
    #[test]
    fn a_burst_of_future_dated_messages_does_not_block_present_ones() {
        let mut w = ReplayWindow::new(Duration::from_secs(120), Duration::from_secs(10), 8);
        let now = at(100);
        for i in 0..64u8 {
            let _ = w.check(now, unix_ms(at(109)), [i; 16], Freshness::Required);
            assert!(w.len() <= 8 + 2, "{}", w.len());
        }
        // Messages sent now and a little earlier are still accepted, at once
        // and later.
        for (i, (arrive, sent)) in [(100, 100), (100, 99), (101, 100), (105, 104), (108, 50)]
            .into_iter()
            .enumerate()
        {
            let id = [200 + u8::try_from(i).unwrap(); 16];
            assert_eq!(
                w.check(at(arrive), unix_ms(at(sent)), id, Freshness::Required),
                Ok(()),
                "sent {sent} arriving {arrive}"
            );
        }
    }

    #[test]
    fn a_full_future_budget_refuses_only_future_dated_messages() {
        let mut w = ReplayWindow::new(Duration::from_secs(120), Duration::from_secs(10), 8)
            .with_future_cap(2);
        let now = at(0);
        let ahead = unix_ms(at(5));
        assert_eq!(w.check(now, ahead, [1; 16], Freshness::Required), Ok(()));
        assert_eq!(w.check(now, ahead, [2; 16], Freshness::Required), Ok(()));
        assert_eq!(
            w.check(now, ahead, [3; 16], Freshness::Required),
            Err(Rejected::FutureBacklog)
        );
        assert_eq!(
            w.check(now, ahead, [1; 16], Freshness::Required),
            Err(Rejected::Replayed)
        );
        assert_eq!(
            w.check(now, unix_ms(now), [4; 16], Freshness::Required),
            Ok(())
        );
        // Future-dated entries are remembered until they are stale: a replay
        // once they are no longer future-dated is still refused.
        assert_eq!(
            w.check(at(60), ahead, [2; 16], Freshness::Required),
            Err(Rejected::Replayed)
        );
        // And they free their budget when they expire.
        assert_eq!(
            w.check(at(126), unix_ms(at(130)), [5; 16], Freshness::Required),
            Ok(())
        );
        assert_eq!(
            w.check(at(126), unix_ms(at(130)), [6; 16], Freshness::Required),
            Ok(())
        );
    }

    #[test]
    fn exempt_message_skips_age_check_but_not_dedup() {
        let mut w = ReplayWindow::default();
        let ancient = unix_ms(at(0));
        assert_eq!(
            w.check(at(86_400), ancient, [5; 16], Freshness::Exempt),
            Ok(())
        );
        assert_eq!(
            w.check(at(86_401), ancient, [5; 16], Freshness::Exempt),
            Err(Rejected::Replayed)
        );
    }

    #[test]
    fn memory_is_capped_and_eviction_does_not_reopen_replays() {
        let mut w = ReplayWindow::new(Duration::from_secs(120), Duration::from_secs(10), 8);
        let now = at(60);
        for i in 0..32u8 {
            // Each message is sent a little later than the previous one.
            let sent = unix_ms(at(0)) + u64::from(i) * 100;
            assert_eq!(w.check(now, sent, [i; 16], Freshness::Required), Ok(()));
            assert!(w.len() <= 8);
        }
        // The first id was evicted, yet replaying it is still refused.
        assert_eq!(
            w.check(now, unix_ms(at(0)), [0; 16], Freshness::Required),
            Err(Rejected::Stale)
        );
        // A newer message is still accepted.
        assert_eq!(
            w.check(now, unix_ms(at(10)), [99; 16], Freshness::Required),
            Ok(())
        );
    }

    #[test]
    fn expired_entries_are_forgotten() {
        let mut w = ReplayWindow::default();
        for i in 0..10u8 {
            w.check(at(0), unix_ms(at(0)), [i; 16], Freshness::Required)
                .unwrap();
        }
        assert_eq!(w.len(), 10);
        let _ = w.check(at(500), unix_ms(at(500)), [200; 16], Freshness::Required);
        assert_eq!(w.len(), 1);
    }

    proptest! {
        #[test]
        fn open_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open(keys_a(), TOPIC, &bytes);
        }

        #[test]
        fn open_never_panics_on_versioned_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(b) = bytes.first_mut() { *b = VERSION; }
            prop_assert!(open(keys_a(), TOPIC, &bytes).is_err());
        }

        /// Whatever the sequence (present and future-dated, fresh and
        /// replayed) and however small the caps, a sealed message (an id with
        /// its authenticated send time) accepted once is never accepted
        /// again, before or after eviction, and memory stays capped.
        #[test]
        fn replay_window_never_accepts_a_sealed_message_twice(
            steps in proptest::collection::vec((0u64..5_000, 0u8..12, -15_000i64..200_000), 1..200),
            cap in 1usize..16,
            future_cap in 1usize..6,
        ) {
            let max_age = 120_000u64;
            let mut w = ReplayWindow::new(Duration::from_millis(max_age), Duration::from_secs(10), cap)
                .with_future_cap(future_cap);
            let base = unix_ms(at(0));
            let mut now = base + 200_000;
            let mut accepted: Vec<(u8, u64)> = Vec::new();
            for (advance, id, back) in steps {
                now += advance;
                let sent = now.checked_add_signed(-back).unwrap();
                let t = UNIX_EPOCH + Duration::from_millis(now);
                if w.check(t, sent, [id; 16], Freshness::Required).is_ok() {
                    for &(prev_id, prev_sent) in &accepted {
                        prop_assert!(!(prev_id == id && prev_sent == sent),
                            "id {} sent at {} accepted twice", id, sent);
                    }
                    accepted.push((id, sent));
                }
                prop_assert!(w.len() <= cap + future_cap);
            }
        }

        /// An attacker holding the key floods future-dated messages (any
        /// number, any date up to and beyond the skew) between legitimate
        /// ones. Each legitimate message (dated at or before its arrival,
        /// within the age window, fresh id) gets exactly the answer it gets
        /// from a window that never saw the attacker; while the legitimate
        /// traffic alone fits the cap, that answer is "accepted".
        #[test]
        fn future_dated_bursts_never_cause_a_legitimate_message_to_be_rejected(
            steps in proptest::collection::vec(
                (0u64..3_000, 0u64..119_000, proptest::collection::vec(1u64..200_000, 0..40)),
                1..60,
            ),
            cap in 1usize..80,
        ) {
            let skew = Duration::from_secs(10);
            let mut attacked = ReplayWindow::new(ReplayWindow::MAX_AGE, skew, cap);
            let mut quiet = ReplayWindow::new(ReplayWindow::MAX_AGE, skew, cap);
            let mut now = unix_ms(at(0));
            let mut next_id = 0u64;
            let mut id = || {
                next_id += 1;
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&next_id.to_be_bytes());
                b
            };
            for (i, (advance, age, burst)) in steps.iter().enumerate() {
                now += advance;
                let t = UNIX_EPOCH + Duration::from_millis(now);
                for ahead in burst {
                    let _ = attacked.check(t, now + ahead, id(), Freshness::Required);
                }
                let (legit, sent) = (id(), now - age);
                let a = attacked.check(t, sent, legit, Freshness::Required);
                let q = quiet.check(t, sent, legit, Freshness::Required);
                prop_assert_eq!(a, q, "legitimate message {} (sent {} ms ago)", i, age);
                if i < cap {
                    prop_assert_eq!(a, Ok(()), "legitimate message {} (sent {} ms ago)", i, age);
                }
            }
        }
    }
}
