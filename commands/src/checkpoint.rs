//! AU-5: signed checkpoints. A hash chain alone cannot show a cut tail or a log rewritten whole
//! (chain recomputed); a checkpoint can: the head's position and hash, signed with the
//! service's Ed25519 key (`<data-dir>/keys/audit-signing.key`, SEC-7), kept by an auditor
//! elsewhere. `audit verify --checkpoint` then fails unless the log still holds that event.

use crate::log::LogReader;
use crate::service_key::open_key_file;
use crate::LogError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SIGNING_KEY_FILE: &str = "audit-signing.key";

/// The service's checkpoint signer.
pub struct CheckpointSigner {
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointSigner({})", self.public_key())
    }
}

/// One checkpoint, as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The position of the head when signed (0: an empty log).
    pub position: u64,
    /// The hash of the event at `position`.
    pub hash: String,
    pub signed_at: String,
    /// The signer's Ed25519 public key, base64.
    pub public_key: String,
    /// Ed25519 over [`Checkpoint::message`], base64.
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: a label, the position, the hash and the time, one per line.
    pub fn message(position: u64, hash: &str, signed_at: &str) -> Vec<u8> {
        format!("custode-checkpoint-v1\n{position}\n{hash}\n{signed_at}").into_bytes()
    }

    /// Whether the signature holds under the public key the line names.
    pub fn signature_holds(&self) -> bool {
        let Some(key) = verifying_key(&self.public_key) else {
            return false;
        };
        let Some(signature) = STANDARD
            .decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
        else {
            return false;
        };
        key.verify(
            &Self::message(self.position, &self.hash, &self.signed_at),
            &signature,
        )
        .is_ok()
    }
}

impl CheckpointSigner {
    /// Reads the signing key from `keys_dir`, creating it on first use.
    pub fn open(keys_dir: &Path) -> Result<Self, String> {
        let (seed, _) = open_key_file(keys_dir, SIGNING_KEY_FILE)?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The signing key in `keys_dir` when there is one (`audit verify` never creates it).
    pub fn existing(keys_dir: &Path) -> Option<Self> {
        keys_dir
            .join(SIGNING_KEY_FILE)
            .exists()
            .then(|| Self::open(keys_dir).ok())
            .flatten()
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public_key(&self) -> String {
        STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    /// Signs `position` and `hash` at `now`.
    pub fn sign(&self, position: u64, hash: &str, now: DateTime<Utc>) -> Checkpoint {
        let signed_at = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        let signature = self
            .key
            .sign(&Checkpoint::message(position, hash, &signed_at));
        Checkpoint {
            position,
            hash: hash.to_string(),
            signed_at,
            public_key: self.public_key(),
            signature: STANDARD.encode(signature.to_bytes()),
        }
    }

    /// A checkpoint of `log`'s head as it stands, on disk: the file may hold a commit whose sync
    /// its writer has not yet made, which a power cut could take back and a later event take
    /// the place of (a false alarm for `audit verify`), so the log is synced after the head is
    /// read and before it is signed.
    pub fn checkpoint(&self, log: &LogReader, now: DateTime<Utc>) -> Result<Checkpoint, LogError> {
        let position = log.head()?;
        let hash = match log.hash_at(position)? {
            Some((hash, _)) => hash,
            None => crate::log::GENESIS_HASH.to_string(),
        };
        log.sync()?;
        Ok(self.sign(position, &hash, now))
    }
}

/// What a checkpoint says of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointFinding {
    /// The log holds the event the checkpoint names, with its hash.
    Holds,
    /// The signature does not hold: the line was not written by the key it names.
    BadSignature,
    /// The line was signed by another key than the service's.
    OtherKey,
    /// The log ends before the checkpoint's position: its tail was cut.
    Cut { head: u64 },
    /// The log holds another event at that position: rewritten.
    Rewritten { event_id: String, hash: String },
}

/// The Ed25519 public key `text` (base64, as checkpoint lines carry it) names, if it is one.
pub fn verifying_key(text: &str) -> Option<VerifyingKey> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
}

/// Checks `checkpoint` against `log`; `service_key` is the service's public key when known.
pub fn check(
    checkpoint: &Checkpoint,
    log: &LogReader,
    service_key: Option<&str>,
) -> Result<CheckpointFinding, LogError> {
    if !checkpoint.signature_holds() {
        return Ok(CheckpointFinding::BadSignature);
    }
    if service_key.is_some_and(|k| k != checkpoint.public_key) {
        return Ok(CheckpointFinding::OtherKey);
    }
    if checkpoint.position == 0 {
        return Ok(CheckpointFinding::Holds);
    }
    match log.hash_at(checkpoint.position)? {
        None => Ok(CheckpointFinding::Cut { head: log.head()? }),
        Some((hash, _)) if hash == checkpoint.hash => Ok(CheckpointFinding::Holds),
        Some((hash, event_id)) => Ok(CheckpointFinding::Rewritten { event_id, hash }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_and_any_change_breaks_its_signature() {
        let signer = CheckpointSigner::from_seed([7; 32]);
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cp = signer.sign(42, "ab".repeat(32).as_str(), now);
        assert!(cp.signature_holds());
        let line = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&line).unwrap();
        assert!(back.signature_holds());
        for tampered in [
            Checkpoint {
                position: 43,
                ..cp.clone()
            },
            Checkpoint {
                hash: "cd".repeat(32),
                ..cp.clone()
            },
            Checkpoint {
                signed_at: "2026-12-03T10:00:01Z".into(),
                ..cp.clone()
            },
            Checkpoint {
                public_key: CheckpointSigner::from_seed([8; 32]).public_key(),
                ..cp.clone()
            },
        ] {
            assert!(!tampered.signature_holds(), "{tampered:?}");
        }
    }
}
