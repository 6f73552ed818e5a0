//! One-time-code challenges, shared by every flow that confirms a person holds a contact: the
//! recovery SMS (RC-3) now, and the identity password change (PW-4), contact changes and
//! suspension later. A challenge has a purpose, a channel and a target; its code is kept only as
//! a keyed hash (the key is the service's, so a leaked log does not give the code away to a
//! brute force of a million guesses); it expires, counts attempts, is used once, and a newer
//! challenge of the same purpose replaces it, inheriting the attempts already spent (NIST
//! SP 800-63B: asking for a new code does not buy new guesses).

use crate::notice::Channel;
use crate::secret::TokenHash;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// What a code authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtpPurpose {
    Recovery,
    PasswordChange,
    Suspension,
    TwoFactorOff,
    ContactChange,
    /// AP-8: the SMS second factor, sent at login.
    Login,
    /// AP-8: confirming the SMS channel before it is turned on.
    TwoFactorOn,
    /// SC-4: proving the recovery email is read (the code goes there).
    VerifyRecoveryEmail,
    /// SC-4: proving the recovery mobile is read (the code goes there by SMS).
    VerifyRecoveryMobile,
    /// SC-5: authorising a new recovery email (the code goes to the contact mobile).
    RecoveryEmailChange,
    /// SC-5: authorising a new recovery mobile (the code goes to the current recovery mobile).
    RecoveryMobileChange,
    /// SC-5: confirming the new recovery email (the code goes there).
    NewRecoveryEmail,
    /// SC-5: confirming the new recovery mobile (the code goes there by SMS).
    NewRecoveryMobile,
    /// SC-3: confirming a new contact mobile (the code goes there; `contact_change` goes to
    /// the current one).
    NewContactMobile,
}

/// Digits in a code (RC-3).
pub const CODE_DIGITS: usize = 6;

/// The keyed hash of a code typed for a challenge. The service's key stays outside the domain:
/// the command handler implements this, domain tests use a fake.
pub trait CodeHasher: Send + Sync {
    fn hash_code(&self, challenge_id: Uuid, code: &str) -> TokenHash;
}

/// AP-8: the check of a TOTP code (RFC 6238: SHA-1, 6 digits, 30-second steps) against a
/// secret kept sealed under the service's long-lived key. The key stays outside the domain: the
/// command handler implements this, domain tests use a fake.
pub trait TotpVerifier: Send + Sync {
    /// The latest time step (unix seconds / 30) within one step of `now` whose code under the
    /// sealed secret is `code`; `None` when none is (or the seal does not open).
    fn matching_step(
        &self,
        sealed_secret: &crate::secret::Sealed,
        code: &str,
        now: DateTime<Utc>,
    ) -> Option<u64>;
}

/// Whether `code` looks like a code at all (six ASCII digits): anything else is bad input,
/// refused before it costs an attempt.
pub fn well_formed(code: &str) -> bool {
    code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub challenge_id: Uuid,
    pub purpose: OtpPurpose,
    pub channel: Channel,
    pub target: String,
    pub code_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub used: bool,
    /// The recovery it belongs to, for RC-3's per-recovery limits.
    pub recovery_id: Option<Uuid>,
}

/// The result of checking a code against the live challenge of a purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Right,
    Wrong {
        attempts_left: u32,
    },
    /// No challenge of this purpose, or it was used or replaced.
    Missing,
    Expired,
    /// Every attempt has been spent.
    Exhausted,
}

impl Challenge {
    /// Whether a right code would still be taken: not used, not exhausted, not expired.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        !self.used && self.attempts < self.max_attempts && now < self.expires_at
    }

    pub fn check(&self, candidate: &TokenHash, now: DateTime<Utc>) -> Check {
        if self.used {
            return Check::Missing;
        }
        if self.attempts >= self.max_attempts {
            return Check::Exhausted;
        }
        if now >= self.expires_at {
            return Check::Expired;
        }
        if constant_time_eq(self.code_hash.as_str(), candidate.as_str()) {
            Check::Right
        } else {
            Check::Wrong {
                attempts_left: self.max_attempts.saturating_sub(self.attempts + 1),
            }
        }
    }
}

/// The live challenge of each purpose, and for recovery of each recovery (a recovery's codes
/// are its own: one recovery's attempts are never another's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Challenges {
    by_scope: BTreeMap<(OtpPurpose, Option<Uuid>), Challenge>,
}

impl Challenges {
    /// The live challenge of `purpose` within `recovery_id` (`None`: outside any recovery).
    pub fn get(&self, purpose: OtpPurpose, recovery_id: Option<Uuid>) -> Option<&Challenge> {
        self.by_scope.get(&(purpose, recovery_id))
    }

    /// A new challenge replaces the one of the same purpose and recovery. Within a recovery it
    /// inherits the attempts spent (RC-3, NIST SP 800-63B: a new code buys no new guesses; a
    /// new recovery is needed). Outside one (PW-4, SC) it starts afresh, so typos cannot block
    /// a holder's change for a day: the codes an hour and SEC-2's lock after ten wrong codes
    /// in a row bound the guesses.
    pub fn issue(&mut self, mut challenge: Challenge) {
        // Challenges that expired a day before this one can never be checked again: forget them,
        // so the state does not grow with every recovery.
        let cutoff = challenge.expires_at - chrono::Duration::days(1);
        self.by_scope.retain(|_, c| c.expires_at >= cutoff);
        let scope = (challenge.purpose, challenge.recovery_id);
        if let Some(old) = self.by_scope.get(&scope).filter(|_| scope.1.is_some()) {
            challenge.attempts = challenge.attempts.max(old.attempts);
        }
        self.by_scope.insert(scope, challenge);
    }

    /// Drops every challenge of `purpose` (its target changed).
    pub fn cancel(&mut self, purpose: OtpPurpose) {
        self.by_scope.retain(|(p, _), _| *p != purpose);
    }

    /// Drops every challenge whose code went to the contact mobile `target` (it is no longer
    /// on file); codes to the same number as the recovery mobile stay while it still is
    /// (`still_recovery_mobile`).
    pub fn cancel_to_contact(&mut self, target: &str, still_recovery_mobile: bool) {
        use OtpPurpose::*;
        self.by_scope.retain(|(purpose, _), c| {
            c.target != target
                || (still_recovery_mobile
                    && matches!(
                        purpose,
                        Recovery | VerifyRecoveryMobile | RecoveryMobileChange | NewRecoveryMobile
                    ))
        });
    }

    /// The recovery a challenge belongs to, if it is live and belongs to one.
    pub fn recovery_of(&self, challenge_id: Uuid) -> Option<Uuid> {
        self.by_scope
            .values()
            .find(|c| c.challenge_id == challenge_id)
            .and_then(|c| c.recovery_id)
    }

    pub fn failed(&mut self, challenge_id: Uuid) {
        if let Some(c) = self.find_mut(challenge_id) {
            c.attempts = c.attempts.saturating_add(1);
        }
    }

    pub fn verified(&mut self, challenge_id: Uuid) {
        if let Some(c) = self.find_mut(challenge_id) {
            c.used = true;
        }
    }

    fn find_mut(&mut self, challenge_id: Uuid) -> Option<&mut Challenge> {
        self.by_scope
            .values_mut()
            .find(|c| c.challenge_id == challenge_id)
    }
}

/// Equality of two hex digests that takes the same time wherever they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 10, minute, 0).unwrap()
    }

    fn challenge(id: u128, code: &str, recovery: Option<u128>) -> Challenge {
        Challenge {
            challenge_id: Uuid::from_u128(id),
            purpose: OtpPurpose::Recovery,
            channel: Channel::Sms,
            target: "+393331234567".into(),
            code_hash: TokenHash::from_hex(format!("h-{code}")),
            expires_at: at(5),
            attempts: 0,
            max_attempts: 5,
            used: false,
            recovery_id: recovery.map(Uuid::from_u128),
        }
    }

    #[test]
    fn a_right_code_within_its_life_is_right_and_then_gone_once_used() {
        let mut all = Challenges::default();
        all.issue(challenge(1, "123456", Some(9)));
        let live = all
            .get(OtpPurpose::Recovery, Some(Uuid::from_u128(9)))
            .unwrap();
        assert_eq!(
            live.check(&TokenHash::from_hex("h-123456"), at(1)),
            Check::Right
        );
        all.verified(Uuid::from_u128(1));
        let used = all
            .get(OtpPurpose::Recovery, Some(Uuid::from_u128(9)))
            .unwrap();
        assert_eq!(
            used.check(&TokenHash::from_hex("h-123456"), at(1)),
            Check::Missing
        );
    }

    #[test]
    fn a_code_expires_and_attempts_run_out() {
        let mut all = Challenges::default();
        all.issue(challenge(1, "123456", None));
        let right = TokenHash::from_hex("h-123456");
        assert_eq!(
            all.get(OtpPurpose::Recovery, None)
                .unwrap()
                .check(&right, at(5)),
            Check::Expired
        );
        for left in (0..5).rev() {
            let c = all.get(OtpPurpose::Recovery, None).unwrap();
            assert_eq!(
                c.check(&TokenHash::from_hex("h-000000"), at(1)),
                Check::Wrong {
                    attempts_left: left
                }
            );
            all.failed(Uuid::from_u128(1));
        }
        assert_eq!(
            all.get(OtpPurpose::Recovery, None)
                .unwrap()
                .check(&right, at(1)),
            Check::Exhausted
        );
    }

    #[test]
    fn a_newer_challenge_replaces_the_old_and_keeps_its_spent_attempts() {
        let mut all = Challenges::default();
        all.issue(challenge(1, "111111", Some(9)));
        all.failed(Uuid::from_u128(1));
        all.failed(Uuid::from_u128(1));
        all.issue(challenge(2, "222222", Some(9)));
        let live = all
            .get(OtpPurpose::Recovery, Some(Uuid::from_u128(9)))
            .unwrap();
        assert_eq!(live.challenge_id, Uuid::from_u128(2));
        assert_eq!(live.attempts, 2);
        assert_eq!(
            live.check(&TokenHash::from_hex("h-111111"), at(1)),
            Check::Wrong { attempts_left: 2 }
        );
        // Another recovery has a code and a count of its own; the first one's is untouched.
        all.issue(challenge(3, "333333", Some(10)));
        assert_eq!(
            all.get(OtpPurpose::Recovery, Some(Uuid::from_u128(10)))
                .unwrap()
                .attempts,
            0
        );
        assert_eq!(
            all.get(OtpPurpose::Recovery, Some(Uuid::from_u128(9)))
                .unwrap()
                .attempts,
            2
        );
    }

    #[test]
    fn only_six_digits_are_a_code() {
        assert!(well_formed("012345"));
        assert!(!well_formed("12345"));
        assert!(!well_formed("12345a"));
        assert!(!well_formed("١٢٣٤٥٦"));
    }
}
