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

/// SEC-9: the payload fields that hold verification data, the PHC strings of passwords
/// (`TemporaryPasswordIssued`, `PasswordImported`, `PasswordChanged`, `PasswordRecovered`) and
/// of security answers (`RecoveryInfoSet`). They never leave the log host: a worker never needs
/// them, and outside they are an offline-cracking target. Token and code hashes are not
/// verification data in this sense (a 256-bit token's SHA-256 cannot be reversed, a code's hash
/// is keyed) and the sessions read model needs `token_hash`.
/// An app password's `password_hmac` (AP-3) is keyed like a code's hash and stays: a projector
/// run apart builds the table AP-7's check reads from it.
pub const VERIFICATION_FIELDS: [&str; 2] = ["password_hash", "security_answer_hash"];

/// SEC-9: the fields that hold a second factor's secret sealed under the service's long-lived
/// key (AP-8: a TOTP secret, a hardware token's seed). No worker needs them and a worker that
/// holds the service key could open them, so outside the log host they are `null`.
pub const SEALED_SECRET_FIELDS: [&str; 2] = ["sealed_secret", "sealed_seed"];

/// What stands in a verification field outside the log host: still a string, so every consumer
/// decodes the event as before.
pub const REMOVED: &str = "[removed]";

/// Replaces the value of each top-level [`VERIFICATION_FIELDS`] entry of `payload` that holds a
/// string with [`REMOVED`], and each [`SEALED_SECRET_FIELDS`] entry that holds a seal with
/// `null`; whether anything was replaced.
pub fn remove_verification_data(payload: &mut serde_json::Value) -> bool {
    let Some(fields) = payload.as_object_mut() else {
        return false;
    };
    let mut removed = false;
    for name in VERIFICATION_FIELDS {
        if let Some(value) = fields.get_mut(name).filter(|v| v.is_string()) {
            *value = serde_json::Value::from(REMOVED);
            removed = true;
        }
    }
    for name in SEALED_SECRET_FIELDS {
        if let Some(value) = fields.get_mut(name).filter(|v| v.is_object()) {
            *value = serde_json::Value::Null;
            removed = true;
        }
    }
    removed
}

/// Whether a stored payload may hold a field [`remove_verification_data`] replaces (a plain
/// substring test).
pub fn may_hold_verification_data(stored: &str) -> bool {
    VERIFICATION_FIELDS
        .iter()
        .chain(SEALED_SECRET_FIELDS.iter())
        .any(|field| stored.contains(field))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{
        AccountEvent, PasswordChanged, RecoveryInfoSet, SessionStarted, TemporaryPasswordIssued,
        TemporaryPasswordReason,
    };
    use crate::envelope::encode;

    /// The payload of `event` as the relay sends it, decoded again as an account event.
    fn through_the_wire(event: &AccountEvent) -> (bool, serde_json::Value, AccountEvent) {
        let (event_type, mut payload) = encode(event).unwrap();
        let removed = remove_verification_data(&mut payload);
        let decoded = serde_json::from_value(
            serde_json::json!({ "type": event_type, "payload": payload.clone() }),
        )
        .unwrap();
        (removed, payload, decoded)
    }

    #[test]
    fn password_and_answer_hashes_are_replaced_and_the_event_still_decodes_sec_9() {
        let changed = AccountEvent::PasswordChanged(PasswordChanged {
            password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$salt$hash"),
        });
        let (removed, payload, decoded) = through_the_wire(&changed);
        assert!(removed);
        assert_eq!(payload, serde_json::json!({ "password_hash": REMOVED }));
        assert_eq!(
            decoded,
            AccountEvent::PasswordChanged(PasswordChanged {
                password_hash: PasswordHash::new(REMOVED)
            })
        );

        let answer = AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
            email: Some("r@example.it".into()),
            mobile: None,
            security_question: Some("Q?".into()),
            security_answer_hash: Some(PasswordHash::new("$argon2id$answer")),
        });
        let (removed, payload, _) = through_the_wire(&answer);
        assert!(removed);
        assert_eq!(payload["security_answer_hash"], REMOVED);
        assert_eq!(payload["email"], "r@example.it", "the rest stays");

        let issued = AccountEvent::TemporaryPasswordIssued(TemporaryPasswordIssued {
            password_hash: PasswordHash::new("$argon2id$t"),
            reason: TemporaryPasswordReason::Opening,
            form_reference: None,
            sealed_password: None,
        });
        assert!(through_the_wire(&issued).0);
    }

    #[test]
    fn events_without_verification_data_are_left_alone_sec_9() {
        let no_answer = AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
            email: Some("r@example.it".into()),
            mobile: None,
            security_question: None,
            security_answer_hash: None,
        });
        let (removed, _, decoded) = through_the_wire(&no_answer);
        assert!(!removed);
        assert_eq!(decoded, no_answer);

        let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let session = AccountEvent::SessionStarted(SessionStarted {
            session_id: uuid::Uuid::nil(),
            token_hash: TokenHash::from_hex("ab12"),
            started_at: now,
            expires_at: now,
            fresh_until: now,
            client_ip: None,
            channel: crate::account::AccessChannel::Api,
            required_actions: Vec::new(),
        });
        let (removed, payload, _) = through_the_wire(&session);
        assert!(!removed);
        assert_eq!(payload["token_hash"], "ab12", "token hashes stay");
    }
}
