//! Secrets: [`Secret`] keeps a value out of logs and `Debug`; [`Sealer`]
//! seals provider credentials (every secret setting of a bot's channel) and
//! callback headers with the instance's `secrets_key` before they reach the
//! store.
//!
//! Sealing is XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`, an AEAD)
//! with a random 24-byte nonce per value, stored as
//! `enc:v1:` + base64(nonce ‖ ciphertext ‖ tag). Without a key, values are
//! stored as `plain:` + value (the 247Rep docs' "credentials are encrypted at
//! rest" then needs a key: README says so); a key configured later opens
//! both forms, and every value written from then on is sealed.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

/// A secret string: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

const SEALED: &str = "enc:v1:";
const PLAIN: &str = "plain:";

/// Seals and opens secrets with the optional instance key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key", &self.cipher.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// A sealed value that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// `secrets_key` is not base64 of 32 bytes.
    #[error("secrets_key must be base64 of 32 bytes")]
    BadKey,
    /// The value is sealed and no key is configured.
    #[error("a stored secret is encrypted and no secrets_key is configured")]
    NoKey,
    /// The value does not open with this key (wrong key or corrupt).
    #[error("a stored secret does not decrypt with the configured secrets_key")]
    Corrupt,
}

impl Sealer {
    /// A sealer with `key` (base64 of 32 bytes), or one that stores plainly.
    pub fn new(key: Option<&Secret>) -> Result<Sealer, SealError> {
        let cipher = match key {
            None => None,
            Some(k) => {
                let bytes = B64
                    .decode(k.expose().trim())
                    .map_err(|_| SealError::BadKey)?;
                if bytes.len() != 32 {
                    return Err(SealError::BadKey);
                }
                Some(XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?)
            }
        };
        Ok(Sealer { cipher })
    }

    /// Whether values are encrypted (a key is configured).
    pub fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// The stored form of `value`.
    pub fn seal(&self, value: &str) -> String {
        match &self.cipher {
            None => format!("{PLAIN}{value}"),
            Some(c) => {
                let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
                let ct = c
                    .encrypt(&nonce, value.as_bytes())
                    .expect("XChaCha20-Poly1305 encrypts any length we store");
                let mut out = nonce.to_vec();
                out.extend_from_slice(&ct);
                format!("{SEALED}{}", B64.encode(out))
            }
        }
    }

    /// The value of a stored form made by [`Sealer::seal`].
    pub fn open(&self, stored: &str) -> Result<Secret, SealError> {
        if let Some(v) = stored.strip_prefix(PLAIN) {
            return Ok(Secret::new(v));
        }
        let Some(b64) = stored.strip_prefix(SEALED) else {
            return Err(SealError::Corrupt);
        };
        let c = self.cipher.as_ref().ok_or(SealError::NoKey)?;
        let raw = B64.decode(b64).map_err(|_| SealError::Corrupt)?;
        if raw.len() < 24 {
            return Err(SealError::Corrupt);
        }
        let (nonce, ct) = raw.split_at(24);
        let pt = c
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(pt)
            .map(Secret::new)
            .map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Secret::new(B64.encode([7u8; 32]))
    }

    #[test]
    fn sealed_values_open_and_hide_the_plaintext() {
        let s = Sealer::new(Some(&key())).unwrap();
        let sealed = s.seal("EAAG-access-token");
        assert!(sealed.starts_with("enc:v1:"));
        assert!(!sealed.contains("EAAG"));
        assert_ne!(sealed, s.seal("EAAG-access-token"), "fresh nonce per value");
        assert_eq!(s.open(&sealed).unwrap().expose(), "EAAG-access-token");
    }

    #[test]
    fn wrong_key_or_no_key_is_refused_and_plain_values_still_open() {
        let sealed = Sealer::new(Some(&key())).unwrap().seal("x");
        let other = Sealer::new(Some(&Secret::new(B64.encode([8u8; 32])))).unwrap();
        assert!(matches!(other.open(&sealed), Err(SealError::Corrupt)));
        let none = Sealer::new(None).unwrap();
        assert!(matches!(none.open(&sealed), Err(SealError::NoKey)));
        let plain = none.seal("y");
        assert_eq!(other.open(&plain).unwrap().expose(), "y");
        assert!(Sealer::new(Some(&Secret::new("short"))).is_err());
    }
}
