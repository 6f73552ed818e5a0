//! Long-lived secrets the service itself must read again (SEC-7): the TOTP secret of an
//! authenticator app and the seed of a hardware token (AP-8). They are kept in events only
//! sealed with ChaCha20-Poly1305 under a key derived from the service key (HMAC under a label
//! of its own), so the log never holds them in the clear; unlike delivery keys, this key is
//! never destroyed (a second factor lives as long as the account). App passwords are kept as
//! HMAC-SHA256 under the service key with a label of their own (AP-3's pepper).
//!
//! TOTP is RFC 6238 with SHA-1, 6 digits and 30-second steps, through the `totp-rs` crate.

use crate::service_key::ServiceKey;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use custode_domain::otp::TotpVerifier;
use custode_domain::Sealed;
use rand::RngCore;
use totp_rs::{Algorithm, TOTP};

/// The id written in a seal made under the service's long-lived key.
pub const LONG_LIVED_KEY_ID: &str = "service-1";
/// What every long-lived seal is bound to.
const CONTEXT: &[u8] = b"custode/second-factor-secret";
/// AP-8: 160-bit secrets, as authenticator apps expect.
pub const TOTP_SECRET_BYTES: usize = 20;
pub const TOTP_STEP_SECONDS: u64 = 30;
pub const TOTP_DIGITS: usize = 6;

impl ServiceKey {
    fn sealing_key(&self) -> [u8; 32] {
        self.mac("custode/long-lived-seal", &[])
    }

    /// `secret` sealed under the long-lived key.
    pub fn seal_long_lived(&self, secret: &[u8]) -> Result<Sealed, String> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let key = self.sealing_key();
        let ciphertext = ChaCha20Poly1305::new(Key::from_slice(&key))
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: CONTEXT,
                },
            )
            .map_err(|_| "sealing failed".to_string())?;
        Ok(Sealed {
            key_id: LONG_LIVED_KEY_ID.to_string(),
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
            ephemeral: None,
        })
    }

    /// Opens a long-lived seal; `None` when it was not made under this key or was altered.
    pub fn open_long_lived(&self, sealed: &Sealed) -> Option<Vec<u8>> {
        if sealed.key_id != LONG_LIVED_KEY_ID || sealed.ephemeral.is_some() {
            return None;
        }
        let nonce = STANDARD.decode(&sealed.nonce).ok()?;
        if nonce.len() != 12 {
            return None;
        }
        let ciphertext = STANDARD.decode(&sealed.ciphertext).ok()?;
        let key = self.sealing_key();
        ChaCha20Poly1305::new(Key::from_slice(&key))
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: CONTEXT,
                },
            )
            .ok()
    }

    /// AP-3: the keyed hash an app password is kept as: HMAC-SHA256 (hex) under the service
    /// key with a label of its own, which makes it the pepper of app passwords.
    pub fn app_password_hmac(&self, password: &str) -> String {
        crate::log::hex(&self.mac("custode/app-password", &[password.as_bytes()]))
    }
}

/// A seed written in base32 (RFC 4648, padding and case ignored), as tokens ship it.
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let clean: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    totp_rs::Secret::Encoded(clean).to_bytes().ok()
}

/// A fresh 160-bit TOTP secret.
pub fn new_totp_secret() -> Vec<u8> {
    let mut secret = vec![0u8; TOTP_SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// RFC 6238's parameters over `secret` (SHA-1, 6 digits, 30 s, one step of skew), labelled
/// for the `otpauth` URI.
pub fn totp(secret: Vec<u8>, issuer: &str, account: &str) -> Result<TOTP, String> {
    TOTP::new(
        Algorithm::SHA1,
        TOTP_DIGITS,
        1,
        TOTP_STEP_SECONDS,
        secret,
        Some(issuer.to_string()),
        account.to_string(),
    )
    .map_err(|e| e.to_string())
}

/// The latest step in `[step(now) - 1, step(now) + 1]` whose code under `secret` is `code`.
pub fn matching_step(secret: &[u8], code: &str, now: DateTime<Utc>) -> Option<u64> {
    let totp = TOTP::new_unchecked(
        Algorithm::SHA1,
        TOTP_DIGITS,
        1,
        TOTP_STEP_SECONDS,
        secret.to_vec(),
        None,
        String::new(),
    );
    let now = u64::try_from(now.timestamp()).ok()?;
    let step = now / TOTP_STEP_SECONDS;
    let mut found = None;
    for candidate in [step.saturating_sub(1), step, step + 1] {
        let expected = totp.generate(candidate * TOTP_STEP_SECONDS);
        // Every candidate is compared, whatever the first gave (constant time per code).
        if crate::tokens::constant_time_eq(expected.as_bytes(), code.as_bytes()) {
            found = Some(candidate);
        }
    }
    found
}

impl TotpVerifier for ServiceKey {
    fn matching_step(&self, sealed: &Sealed, code: &str, now: DateTime<Utc>) -> Option<u64> {
        let secret = self.open_long_lived(sealed)?;
        matching_step(&secret, code, now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 6238, appendix B: the SHA-1 test vectors (8 digits there; the last 6 here).
    #[test]
    fn rfc_6238_vectors_match_within_one_step_ap_8() {
        let secret = b"12345678901234567890".to_vec();
        for (time, code) in [
            (59i64, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
        ] {
            let now = DateTime::from_timestamp(time, 0).unwrap();
            assert_eq!(matching_step(&secret, code, now), Some(time as u64 / 30));
            let next = now + chrono::Duration::seconds(30);
            assert_eq!(matching_step(&secret, code, next), Some(time as u64 / 30));
            let far = now + chrono::Duration::seconds(90);
            assert_eq!(matching_step(&secret, code, far), None);
        }
    }

    #[test]
    fn long_lived_seals_open_only_under_the_same_key() {
        let key = ServiceKey::from_bytes([7; 32]);
        let sealed = key.seal_long_lived(b"secret seed").unwrap();
        assert_eq!(key.open_long_lived(&sealed).unwrap(), b"secret seed");
        let other = ServiceKey::from_bytes([8; 32]);
        assert_eq!(other.open_long_lived(&sealed), None);
        let mut altered = sealed.clone();
        altered.ciphertext = STANDARD.encode(b"nothing like it at all");
        assert_eq!(key.open_long_lived(&altered), None);
    }

    #[test]
    fn app_password_hmacs_are_keyed_and_stable() {
        let key = ServiceKey::from_bytes([7; 32]);
        let a = key.app_password_hmac("abcd-efgh");
        assert_eq!(a, key.app_password_hmac("abcd-efgh"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, key.app_password_hmac("abcd-efgi"));
        assert_ne!(
            a,
            ServiceKey::from_bytes([8; 32]).app_password_hmac("abcd-efgh")
        );
    }
}
