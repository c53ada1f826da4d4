//! Key derivation and MAC primitives shared by discovery and tunnel auth.
//!
//! Every site derives the same [`Keys`] from the shared passphrase: Argon2id
//! (memory-hard, because sealed payloads cross public brokers and invite
//! offline guessing) into a 32-byte master secret, then HKDF-SHA256 into
//! independent subkeys, one per purpose, so no key is ever used in two
//! constructions. This module owns no I/O, no logging and no randomness; it
//! must never expose key material through `Debug`, `Display` or errors.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::config::CryptoKey;

/// Argon2id memory cost in KiB (64 MiB).
const KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes.
const KDF_PASSES: u32 = 3;
/// Argon2id lanes.
const KDF_LANES: u32 = 1;
/// Fixed salt: every site must derive identical keys from the same
/// passphrase, so the salt only separates wovenet from other Argon2 users.
///
/// It cannot be network-specific: before two sites have exchanged anything,
/// the passphrase is all they share (a derived topic is computed from it), so
/// a per-network salt would be one more value to configure on every site,
/// which is what `messageChannel.topic` already is. The price: one Argon2id
/// evaluation per guessed passphrase serves against every wovenet network at
/// once, so the cost per guess (64 MiB, 3 passes) and a long random key are
/// what protect a network whose messages someone has collected.
const KDF_SALT: &[u8] = b"wovenet/v1/kdf/salt";
/// HKDF extract salt (domain separation of the expand stage).
const HKDF_SALT: &[u8] = b"wovenet/v1/hkdf";
const INFO_ENVELOPE: &[u8] = b"wovenet/v1/envelope-aead";
const INFO_AUTH: &[u8] = b"wovenet/v1/tunnel-auth-hmac";
const INFO_TOPIC: &[u8] = b"wovenet/v1/topic-tag";

/// Prefix of the derived broadcast topic.
pub const DERIVED_TOPIC_PREFIX: &str = "wovenet/";

type HmacSha256 = Hmac<Sha256>;

/// Subkeys derived from the shared passphrase, once per process.
///
/// Derivation is deliberately slow (tens to hundreds of milliseconds and
/// 64 MiB of memory); async callers should run [`Keys::derive`] on a blocking
/// thread and share the result behind an `Arc`.
pub struct Keys {
    envelope: Zeroizing<[u8; 32]>,
    auth: Zeroizing<[u8; 32]>,
    topic: String,
}

impl Keys {
    /// Derives all subkeys from the passphrase (Argon2id m=64 MiB, t=3, p=1,
    /// then HKDF-SHA256).
    pub fn derive(key: &CryptoKey) -> Self {
        let mut master = Zeroizing::new([0u8; 32]);
        // Invariant: the parameters are compile-time constants inside Argon2's
        // accepted ranges, the salt is longer than 8 bytes, the output is 32
        // bytes, and `CryptoKey` guarantees an 8..=32 byte password, so neither
        // call can fail.
        let params = Params::new(KDF_MEMORY_KIB, KDF_PASSES, KDF_LANES, Some(32))
            .expect("invariant: constant Argon2 parameters are valid");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(key.expose(), KDF_SALT, master.as_mut_slice())
            .expect("invariant: valid password, salt and output lengths");
        Self::from_master(&master)
    }

    /// Expands the Argon2 output into the purpose-bound subkeys.
    fn from_master(master: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), master);
        let mut envelope = Zeroizing::new([0u8; 32]);
        let mut auth = Zeroizing::new([0u8; 32]);
        let mut tag = [0u8; 16];
        // Invariant: HKDF-SHA256 can expand up to 255 * 32 bytes; we ask for
        // at most 32 per call.
        hk.expand(INFO_ENVELOPE, envelope.as_mut_slice())
            .expect("invariant: 32 bytes is a valid HKDF-SHA256 length");
        hk.expand(INFO_AUTH, auth.as_mut_slice())
            .expect("invariant: 32 bytes is a valid HKDF-SHA256 length");
        hk.expand(INFO_TOPIC, &mut tag)
            .expect("invariant: 16 bytes is a valid HKDF-SHA256 length");
        Self {
            envelope,
            auth,
            topic: format!("{DERIVED_TOPIC_PREFIX}{}", hex::encode(tag)),
        }
    }

    /// The XChaCha20-Poly1305 key sealing MQTT payloads (see `message::envelope`).
    pub(crate) fn envelope_key(&self) -> &[u8; 32] {
        &self.envelope
    }

    /// The HMAC-SHA256 key proving knowledge of the passphrase on tunnels.
    pub fn auth_key(&self) -> &[u8; 32] {
        &self.auth
    }

    /// The broadcast topic used when `messageChannel.topic` is not set:
    /// `wovenet/` followed by 32 hex characters. It is an independent HKDF
    /// output, so it identifies the network without revealing anything about
    /// the key.
    pub fn derived_topic(&self) -> String {
        self.topic.clone()
    }

    /// HMAC-SHA256 with the auth key over `label` and `data`.
    ///
    /// The label is length-prefixed so that `(label, data)` pairs cannot be
    /// shifted into one another (`("ab", "c")` differs from `("a", "bc")`).
    pub fn auth_mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        self.mac(label, data).finalize().into_bytes().into()
    }

    /// Checks `mac` against [`Keys::auth_mac`] in constant time; any length
    /// other than 32 bytes is rejected.
    pub fn verify_auth_mac(&self, label: &[u8], data: &[u8], mac: &[u8]) -> bool {
        self.mac(label, data).verify_slice(mac).is_ok()
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> HmacSha256 {
        // Invariant: HMAC accepts keys of any length.
        let mut m = <HmacSha256 as Mac>::new_from_slice(self.auth.as_slice())
            .expect("invariant: HMAC takes keys of any length");
        // usize -> u64 is lossless on every platform Rust supports.
        m.update(&(label.len() as u64).to_be_bytes());
        m.update(label);
        m.update(data);
        m
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;
    use std::time::Instant;

    use super::*;

    /// Keys for the passphrase `correct horse battery`, derived once per test binary.
    pub(crate) fn keys_a() -> &'static Keys {
        static K: OnceLock<Keys> = OnceLock::new();
        K.get_or_init(|| Keys::derive(&CryptoKey::new("correct horse battery").unwrap()))
    }

    /// Keys for a different passphrase, derived once per test binary.
    pub(crate) fn keys_b() -> &'static Keys {
        static K: OnceLock<Keys> = OnceLock::new();
        K.get_or_init(|| Keys::derive(&CryptoKey::new("another passphrase").unwrap()))
    }

    #[test]
    fn derivation_is_deterministic_and_reports_its_cost() {
        let start = Instant::now();
        let again = Keys::derive(&CryptoKey::new("correct horse battery").unwrap());
        // Visible with `--nocapture`: the cost every daemon start pays once.
        println!("Keys::derive took {:?}", start.elapsed());
        let a = keys_a();
        assert_eq!(a.envelope_key(), again.envelope_key());
        assert_eq!(a.auth_key(), again.auth_key());
        assert_eq!(a.derived_topic(), again.derived_topic());
    }

    #[test]
    fn subkeys_are_independent_and_differ_between_passphrases() {
        let (a, b) = (keys_a(), keys_b());
        assert_ne!(a.envelope_key(), a.auth_key());
        assert_ne!(a.envelope_key(), b.envelope_key());
        assert_ne!(a.auth_key(), b.auth_key());
        assert_ne!(a.derived_topic(), b.derived_topic());
    }

    #[test]
    fn derived_topic_is_prefix_and_32_hex_chars() {
        let t = keys_a().derived_topic();
        let tag = t.strip_prefix(DERIVED_TOPIC_PREFIX).unwrap();
        assert_eq!(tag.len(), 32);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!t.contains("correct"));
    }

    /// Known answer: sites of different versions sharing a key must meet on
    /// the same derived topic, so the KDF (Argon2id m=64 MiB, t=3, p=1, the
    /// fixed salt) and the topic expansion may never change silently.
    #[test]
    fn derived_topic_is_a_known_answer() {
        assert_eq!(
            keys_a().derived_topic(),
            "wovenet/43658d883cf885055afd031621a5e39e"
        );
    }

    #[test]
    fn debug_output_is_masked() {
        assert_eq!(format!("{:?}", keys_a()), "MASKED");
    }

    #[test]
    fn auth_mac_verifies_only_with_same_key_label_and_data() {
        let (a, b) = (keys_a(), keys_b());
        let mac = a.auth_mac(b"label", b"data");
        assert!(a.verify_auth_mac(b"label", b"data", &mac));
        assert!(!b.verify_auth_mac(b"label", b"data", &mac));
        assert!(!a.verify_auth_mac(b"label", b"datA", &mac));
        assert!(!a.verify_auth_mac(b"other", b"data", &mac));
        assert!(!a.verify_auth_mac(b"label", b"data", &mac[..31]));
        assert!(!a.verify_auth_mac(b"label", b"data", &[]));
    }

    #[test]
    fn auth_mac_label_boundary_is_unambiguous() {
        let a = keys_a();
        assert_ne!(a.auth_mac(b"ab", b"c"), a.auth_mac(b"a", b"bc"));
    }
}
