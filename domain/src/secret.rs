//! Types that hold secrets or their verifiers. A [`Secret`] prints `[redacted]` in `Debug` and
//! cannot be serialized, so neither `tracing` nor a snapshot nor an event can leak one.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret typed by a person or generated for one: a password, an answer, an OTP, a token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear text, for hashing and policy checks only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// An Argon2id PHC string (PW-5): `$argon2id$v=19$m=19456,t=2,p=1$salt$hash`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn new(phc: impl Into<String>) -> Self {
        Self(phc.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The PHC string is not a secret, but it is an offline-cracking target: keep it out of logs.
        f.write_str("PasswordHash([phc])")
    }
}

/// The SHA-256 of a 256-bit token (SEC-1), hex-encoded. Tokens themselves never enter events.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Debug, PartialOrd, Ord)]
#[serde(transparent)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn from_hex(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Hashing and verification of low-entropy secrets (passwords, answers). The real implementation
/// (Argon2id, in `commands`) draws its own salts and runs on a bounded blocking pool; `decide`
/// only sees this trait, so domain tests use a fast deterministic fake.
pub trait SecretHasher: Send + Sync {
    fn hash(&self, secret: &Secret) -> PasswordHash;
    fn verify(&self, secret: &Secret, hash: &PasswordHash) -> bool;
    /// Costs what [`SecretHasher::verify`] costs, against no real hash: an unknown id is
    /// answered in the time a known one is (RC-1, SEC-2).
    fn verify_dummy(&self, secret: &Secret);
    /// Whether an imported hash (ACC-3) is one this hasher can verify.
    fn accepts(&self, hash: &PasswordHash) -> bool;
}

/// A secret sealed with a delivery key (SPEC: envelope): what an event may carry of a secret a
/// worker must deliver. Only the workers, holding the key, can open it; once the key is
/// destroyed, nobody can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The delivery key's id (its day, `yyyymmdd`).
    pub key_id: String,
    /// Base64 of the 96-bit nonce.
    pub nonce: String,
    /// Base64 of the ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: String,
    /// SEC-7: base64 of the sender's ephemeral X25519 public key, when sealed to the day's
    /// public key (only a worker holding the private key opens it). Absent in seals made
    /// before (under the day's symmetric key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<String>,
}
