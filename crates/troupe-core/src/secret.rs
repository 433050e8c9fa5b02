//! Sealing secrets at rest: a flow execution's secret inputs are stored encrypted with the
//! server's key (ChaCha20-Poly1305), so neither the database nor a backup of it holds them in
//! clear, and a changed byte is found out rather than read as something else.
//!
//! A sealed text is the base64 of a fresh random 12-byte nonce followed by the ciphertext and
//! its 16-byte tag. This module does no I/O: reading and writing the key file is the
//! caller's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::fmt;

/// The length of a key, in bytes.
pub const KEY_LEN: usize = 32;
/// The length of a nonce, in bytes.
const NONCE_LEN: usize = 12;

/// What went wrong sealing or opening a secret. None of these says anything of the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The system's random number generator failed.
    #[error("the system's random number generator failed: {0}")]
    Random(String),
    /// A key text is not the base64 of 32 bytes.
    #[error("a secret key is the base64 of {KEY_LEN} bytes: {0}")]
    BadKey(String),
    /// A sealed text is not base64, or too short to hold a nonce and a tag.
    #[error("the sealed text is malformed: {0}")]
    Malformed(String),
    /// The sealed text does not open with this key: another key sealed it, or it was changed.
    #[error(
        "the sealed text does not open with this key (another key sealed it, or it was changed)"
    )]
    WrongKeyOrTampered,
    /// The plaintext is too long to seal.
    #[error("the text is too long to seal")]
    TooLong,
}

/// A key that seals and opens secrets. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A new random key, from the system's random number generator.
    pub fn generate() -> Result<SecretKey, SealError> {
        <[u8; KEY_LEN]>::try_generate()
            .map(SecretKey)
            .map_err(|e| SealError::Random(e.to_string()))
    }

    /// A key from its base64 text (surrounding white space ignored).
    pub fn from_base64(text: &str) -> Result<SecretKey, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| SealError::BadKey(e.to_string()))?;
        <[u8; KEY_LEN]>::try_from(bytes.as_slice())
            .map(SecretKey)
            .map_err(|_| SealError::BadKey(format!("got {} bytes", bytes.len())))
    }

    /// The key as base64 text, for its file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(self.0))
    }

    /// `plain` sealed: the base64 of a random nonce and the ciphertext. Two seals of the same
    /// text differ.
    pub fn seal(&self, plain: &[u8]) -> Result<String, SealError> {
        let nonce = Nonce::try_generate().map_err(|e| SealError::Random(e.to_string()))?;
        let sealed = self
            .cipher()
            .encrypt(&nonce, plain)
            .map_err(|_| SealError::TooLong)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// The text [`SecretKey::seal`] sealed; an error when it was sealed with another key or
    /// changed since.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = STANDARD
            .decode(sealed.trim())
            .map_err(|e| SealError::Malformed(e.to_string()))?;
        // A nonce and a tag at least (the plaintext may be empty).
        if bytes.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed(format!(
                "{} bytes is too short",
                bytes.len()
            )));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce)
            .map_err(|_| SealError::Malformed("the nonce is not 12 bytes".to_owned()))?;
        self.cipher()
            .decrypt(&nonce, ciphertext)
            .map_err(|_| SealError::WrongKeyOrTampered)
    }
}

/// What seals and opens secrets, as a capability: code that stores or uses secrets depends on
/// this rather than on the key.
pub trait Sealer: Send + Sync + fmt::Debug {
    /// `plain` sealed (see [`SecretKey::seal`]).
    fn seal(&self, plain: &[u8]) -> Result<String, SealError>;
    /// The text a sealed text holds (see [`SecretKey::open`]).
    fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError>;
}

impl Sealer for SecretKey {
    fn seal(&self, plain: &[u8]) -> Result<String, SealError> {
        SecretKey::seal(self, plain)
    }

    fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        SecretKey::open(self, sealed)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(********)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().expect("a key")
    }

    #[test]
    fn a_sealed_text_opens_with_its_key() {
        let k = key();
        for plain in [&b""[..], b"hunter2", &[0u8, 255, 7][..], &[b'x'; 5000][..]] {
            let sealed = k.seal(plain).expect("sealed");
            assert_eq!(k.open(&sealed).expect("opens"), plain);
        }
        let sealed = k.seal(b"{\"password\":\"s3cr3t\"}").expect("sealed");
        assert!(!sealed.contains("s3cr3t"));
    }

    #[test]
    fn two_seals_of_the_same_text_differ() {
        let k = key();
        let a = k.seal(b"same text").expect("sealed");
        let b = k.seal(b"same text").expect("sealed");
        assert_ne!(a, b);
        assert_eq!(k.open(&a), k.open(&b));
    }

    #[test]
    fn another_key_does_not_open_it() {
        let sealed = key().seal(b"secret").expect("sealed");
        assert_eq!(key().open(&sealed), Err(SealError::WrongKeyOrTampered));
    }

    #[test]
    fn a_changed_text_does_not_open() {
        let k = key();
        let sealed = k.seal(b"secret value").expect("sealed");
        let mut bytes = STANDARD.decode(&sealed).expect("base64");
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            assert_eq!(
                k.open(&STANDARD.encode(&bytes)),
                Err(SealError::WrongKeyOrTampered),
                "byte {i} flipped"
            );
            bytes[i] ^= 1;
        }
        assert!(matches!(
            k.open("not base64!"),
            Err(SealError::Malformed(_))
        ));
        assert!(matches!(
            k.open(&STANDARD.encode([1u8; 20])),
            Err(SealError::Malformed(_))
        ));
        let truncated = &sealed[..sealed.len() - 8];
        assert!(k.open(truncated).is_err());
    }

    #[test]
    fn a_key_round_trips_through_base64_and_never_shows() {
        let k = key();
        let text = k.to_base64();
        let back = SecretKey::from_base64(&format!("{text}\n")).expect("reads");
        assert_eq!(back, k);
        let sealed = k.seal(b"x").expect("sealed");
        assert_eq!(back.open(&sealed).expect("opens"), b"x");
        assert_eq!(format!("{k:?}"), "SecretKey(********)");
        assert!(!format!("{k:?}").contains(&text));
        assert!(matches!(
            SecretKey::from_base64(&STANDARD.encode([0u8; 16])),
            Err(SealError::BadKey(_))
        ));
        assert!(matches!(
            SecretKey::from_base64("%%%"),
            Err(SealError::BadKey(_))
        ));
        assert_ne!(key(), key());
    }
}
