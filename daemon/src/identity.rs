//! A site's long-term identity: an Ed25519 key pair kept in a file beside the
//! state file, its public key, and the short fingerprint operators compare
//! and paste.
//!
//! The network key (`crypto.key`) says "member of this network"; the identity
//! says "this site". It signs every discovery message the site sends (see
//! `message::envelope`), and receivers pin it per site name (see
//! `site::trust`). The only I/O here is [`SiteKey::load_or_create`]; the rest
//! is pure and must stay free of logging and of key bytes in errors.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of SHA-256 kept in a fingerprint (160 bits: far beyond any second
/// preimage search, and short enough to read aloud).
const FINGERPRINT_BYTES: usize = 20;
/// Characters of a fingerprint as shown (base32 of its 20 bytes).
pub const FINGERPRINT_CHARS: usize = 32;
/// The PEM label of the key file (PKCS#8, as `openssl genpkey -algorithm ed25519` writes).
const PEM_TAG: &str = "PRIVATE KEY";

/// The short, copyable name of an identity: the first 160 bits of SHA-256
/// over the raw public key, in lowercase base32 (32 characters, no padding,
/// no separators, so a double click selects all of it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; FINGERPRINT_BYTES]);

impl Fingerprint {
    fn of(public: &[u8; PUBLIC_KEY_LEN]) -> Self {
        let digest = Sha256::digest(public);
        let mut out = [0u8; FINGERPRINT_BYTES];
        out.copy_from_slice(&digest[..FINGERPRINT_BYTES]);
        Self(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.0)
                .to_ascii_lowercase(),
        )
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a string is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not an identity fingerprint: expected {FINGERPRINT_CHARS} characters of a-z and 2-7, as `wovenetd identity` prints"
)]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let s = s.trim();
        if s.len() != FINGERPRINT_CHARS {
            return Err(BadFingerprint);
        }
        let upper = s.to_ascii_uppercase();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(upper.as_bytes())
            .map_err(|_| BadFingerprint)?;
        let arr: [u8; FINGERPRINT_BYTES] = bytes.try_into().map_err(|_| BadFingerprint)?;
        Ok(Self(arr))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An identity's public half, as carried in signed messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Wraps raw bytes (any 32 bytes; a bad key simply never verifies).
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Its fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.0)
    }

    /// Whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// Why an identity file could not be used. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading the file failed.
    #[error("cannot read the identity file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Creating the file failed.
    #[error("cannot create the identity file {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Others than the owner may read or write it.
    #[error(
        "the identity file {} is accessible by others (mode {mode:o}); it holds this site's private key: run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It is not an Ed25519 private key in PKCS#8 PEM.
    #[error("the identity file {} is not an Ed25519 private key (PKCS#8 PEM): {reason}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The system's random source failed.
    #[error("cannot generate an identity key")]
    Generate,
}

/// This site's private identity.
pub struct SiteKey {
    pair: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteKey")
            .field("fingerprint", &self.public().fingerprint())
            .finish_non_exhaustive()
    }
}

impl Clone for SiteKey {
    fn clone(&self) -> Self {
        Self::from_pkcs8(&self.pkcs8).expect("invariant: a loaded key parses again")
    }
}

impl SiteKey {
    /// A fresh random identity (kept only in memory unless written).
    pub fn generate() -> Result<Self, IdentityError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::Generate)?;
        Self::from_pkcs8(doc.as_ref()).ok_or(IdentityError::Generate)
    }

    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        // `maybe_unchecked` also takes PKCS#8 v1 (no public key inside), which
        // is what openssl writes.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).ok()?;
        Some(Self {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// Parses the PEM text of a key file.
    pub fn from_pem(text: &str) -> Result<Self, &'static str> {
        let pem = pem::parse(text).map_err(|_| "no PEM block")?;
        if pem.tag() != PEM_TAG {
            return Err("the PEM block is not a PRIVATE KEY");
        }
        Self::from_pkcs8(pem.contents()).ok_or("not an Ed25519 key")
    }

    /// The PEM text of the key file.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem::encode(&pem::Pem::new(PEM_TAG, self.pkcs8.to_vec())))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(out)
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }

    /// Loads the key at `path`, or creates one there (owner-only, written
    /// to a temporary file and renamed, never over an existing file) if
    /// there is none. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), IdentityError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path).map(|k| (k, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                match key.write_new(path) {
                    Ok(()) => Ok((key, true)),
                    // Another process created it first: use that one.
                    Err(IdentityError::Write { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Self::load(path).map(|k| (k, false))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(source) => Err(IdentityError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Loads an existing key file, refusing one others may read.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let read = |source| IdentityError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(read)?);
        Self::from_pem(&text).map_err(|reason| IdentityError::Malformed {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn write_new(&self, path: &Path) -> Result<(), IdentityError> {
        let write = |source| IdentityError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // tempfile creates the file 0600.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(write)?;
        tmp.write_all(self.to_pem().as_bytes()).map_err(write)?;
        tmp.as_file().sync_all().map_err(write)?;
        tmp.persist_noclobber(path).map_err(|e| write(e.error))?;
        Ok(())
    }
}

/// Where the identity of a site lives, given its state file: beside it,
/// named after it (`site.state.json` → `site.identity.key`), so sites that
/// share a directory keep separate identities.
pub fn path_beside(state_file: &Path) -> PathBuf {
    let name = state_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".state.json")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name);
    let stem = if stem.is_empty() { "wovenet" } else { stem };
    state_file.with_file_name(format!("{stem}.identity.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_and_is_short() {
        let k = SiteKey::generate().unwrap();
        let fp = k.public().fingerprint();
        let s = fp.to_string();
        assert_eq!(s.len(), FINGERPRINT_CHARS);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(s.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(s.to_ascii_uppercase().parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(format!(" {s}\n").parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn bad_fingerprints_are_refused() {
        for s in ["", "abc", &"a".repeat(31), &"a".repeat(33), &"1".repeat(32)] {
            assert_eq!(s.parse::<Fingerprint>(), Err(BadFingerprint), "{s:?}");
        }
    }

    #[test]
    fn signatures_verify_only_for_the_signer_and_the_message() {
        let a = SiteKey::generate().unwrap();
        let b = SiteKey::generate().unwrap();
        let sig = a.sign(b"hello");
        assert!(a.public().verify(b"hello", &sig));
        assert!(!a.public().verify(b"hellp", &sig));
        assert!(!b.public().verify(b"hello", &sig));
        let mut bad = sig;
        bad[5] ^= 1;
        assert!(!a.public().verify(b"hello", &bad));
        // Garbage keys never verify, never panic.
        assert!(!PublicKey::from_bytes([0; 32]).verify(b"hello", &sig));
    }

    #[test]
    fn pem_round_trip_keeps_the_identity() {
        let k = SiteKey::generate().unwrap();
        let again = SiteKey::from_pem(&k.to_pem()).unwrap();
        assert_eq!(again.public(), k.public());
        assert!(SiteKey::from_pem("nonsense").is_err());
        let other = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert!(SiteKey::from_pem(&other).is_err());
    }

    #[test]
    fn openssl_style_pkcs8_v1_is_accepted() {
        // `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key).
        let text = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBg1LWEaRNu7+1ILQTlVXKSbMZIYBE+OxJ4wWdYv2Wwj\n-----END PRIVATE KEY-----\n";
        let k = SiteKey::from_pem(text).unwrap();
        let sig = k.sign(b"x");
        assert!(k.public().verify(b"x", &sig));
    }

    #[test]
    fn created_once_owner_only_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.identity.key");
        let (a, created) = SiteKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = SiteKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
    }

    #[test]
    fn a_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        SiteKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = SiteKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(e, IdentityError::TooOpen { mode: 0o644, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"));
    }

    #[test]
    fn a_malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "hello").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = SiteKey::load_or_create(&path).unwrap_err();
        assert!(matches!(e, IdentityError::Malformed { .. }), "{e}");
    }

    #[test]
    fn identity_file_sits_beside_the_state_file() {
        assert_eq!(
            path_beside(Path::new("/etc/wovenet/office.state.json")),
            Path::new("/etc/wovenet/office.identity.key")
        );
        assert_eq!(
            path_beside(Path::new("/var/lib/w/state.json")),
            Path::new("/var/lib/w/state.identity.key")
        );
        assert_eq!(
            path_beside(Path::new("mystate")),
            Path::new("mystate.identity.key")
        );
    }
}
