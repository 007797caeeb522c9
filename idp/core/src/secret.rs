//! Secrets in memory: a string whose `Debug`/`Display` never show it, and the
//! key-encryption key that protects secrets at rest (signing keys, later TOTP
//! seeds) as compact JWE (`dir` + `A256GCM`).

use crate::error::CoreError;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::fmt;

/// A secret string (password, client secret, code). Redacted in logs.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The only way to read it: name the intent at the call site.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// 256-bit key that encrypts secrets stored in the database.
#[derive(Clone)]
pub struct KeyEncryptionKey([u8; 32]);

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the key-encryption key must be 32 bytes, base64 or base64url encoded")]
pub struct InvalidKeyEncryptionKey;

impl KeyEncryptionKey {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        k.copy_from_slice(&crate::random::bytes(32));
        Self(k)
    }

    pub fn parse(encoded: &str) -> Result<Self, InvalidKeyEncryptionKey> {
        let s = encoded.trim();
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(s))
            .map_err(|_| InvalidKeyEncryptionKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| InvalidKeyEncryptionKey)?;
        Ok(Self(arr))
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// HMAC-SHA256 of `data` under a key derived from this one, hex-encoded:
    /// how low-entropy one-time values (recovery codes) are stored, so that
    /// a copy of the database alone cannot be searched for them.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> String {
        use hmac::{KeyInit, Mac};
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        m.update(purpose.as_bytes());
        m.update(&[0]);
        m.update(data);
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Encrypts `plaintext` into a compact JWE.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, CoreError> {
        let mut header = josekit::jwe::JweHeader::new();
        header.set_content_encryption("A256GCM");
        let encrypter = josekit::jwe::Dir.encrypter_from_bytes(self.0)?;
        Ok(josekit::jwe::serialize_compact(
            plaintext, &header, &encrypter,
        )?)
    }

    /// Decrypts a compact JWE made by [`seal`](Self::seal).
    pub fn open(&self, jwe: &str) -> Result<Vec<u8>, CoreError> {
        let decrypter = josekit::jwe::Dir.decrypter_from_bytes(self.0)?;
        let (plain, _) = josekit::jwe::deserialize_compact(jwe, &decrypter)?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert!(!format!("{:?}", KeyEncryptionKey::generate()).contains('='));
    }

    #[test]
    fn seal_and_open_roundtrip_and_tamper_fails() {
        let k = KeyEncryptionKey::generate();
        let jwe = k.seal(b"private jwk").unwrap();
        assert_eq!(k.open(&jwe).unwrap(), b"private jwk");
        let other = KeyEncryptionKey::generate();
        assert!(other.open(&jwe).is_err());
        assert_eq!(KeyEncryptionKey::parse(&k.encode()).unwrap().0, k.0);
        assert!(KeyEncryptionKey::parse("too-short").is_err());
    }
}
