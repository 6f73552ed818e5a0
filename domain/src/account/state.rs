//! The account's state, folded from its events by [`evolve`]. It holds only what `decide` needs.

use super::events::*;
use crate::otp::{Challenge, Challenges, OtpPurpose};
use crate::recovery::RecoveryMethod;
use crate::secret::{PasswordHash, Sealed, TokenHash};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, VecDeque};
use uuid::Uuid;

/// How many past password hashes the state keeps: enough for any sane `policy.history`.
const HISTORY_KEPT: usize = 24;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    /// `None` until `AccountOpened`.
    pub profile: Option<AccountOpened>,
    pub status: AccountStatus,
    /// The current password first, then earlier ones (PW-2 history).
    pub passwords: VecDeque<PasswordHash>,
    pub must_change_password: bool,
    pub must_set_recovery_info: bool,
    pub recovery: RecoveryInfo,
    pub sessions: BTreeMap<Uuid, Session>,
    /// RC-6: set by a recovery or an operator reset, cleared by saving or confirming RI.
    pub must_confirm_recovery_info: bool,
    /// Live one-time-code challenges, one per purpose.
    pub challenges: Challenges,
    /// RC-2..5: the recovery grants and counters.
    pub grants: Grants,
    /// SEC-6: wrong passwords in a row, and the lockout they caused.
    pub login_failures: u32,
    pub login_locked_until: Option<DateTime<Utc>>,
    /// The codes sent lately outside a recovery (PW-4, SC), for their hourly limit.
    pub otp_messages: crate::recovery::RecentMessages,
    /// AP-8: the codes sent at logins and step-ups, counted apart so that logins cannot use up
    /// the codes that turn two-step verification off or change the password.
    pub login_codes: crate::recovery::RecentMessages,
    /// SEC-2: the recovery messages sent lately (the hourly limit per user id).
    pub recovery_messages: crate::recovery::RecentMessages,
    /// SEC-2: wrong codes and answers in a row, across recoveries, and the lock they caused.
    pub check_failures: u32,
    pub checks_locked_until: Option<DateTime<Utc>>,
    /// ACC-5: a mailbox's mail protocols (`None` for other kinds).
    pub protocols: Option<MailProtocolsSet>,
    /// AP-8: two-step verification, when on.
    pub two_factor: Option<TwoFactor>,
    /// AP-8: two-step verification started and waiting for its first code.
    pub pending_two_factor: Option<TwoFactor>,
    /// AP-8: the latest TOTP step accepted: it and every step before it are spent.
    pub last_totp_step: Option<u64>,
    /// AP-2: the app passwords by scope (live, expired or deactivated).
    pub app_passwords: BTreeMap<String, AppPassword>,
    /// CO-1..4: a collaborator's link to its password.
    pub collaborator: CollaboratorLinks,
    /// SC-6: until when a self-suspension lasts.
    pub suspended_until: Option<DateTime<Utc>>,
    /// SC-6: the signed request's reference an operator's revocation recorded (`None` before
    /// one, and for SC-8's revocation of an unused identity).
    pub revoked_by: Option<String>,
    /// SC-2: the identity document on file, and the notices given for its expiry.
    pub document: Option<(IdentityDocumentRecorded, Vec<u32>)>,
    /// SC-1: an identity's SPID code and dates.
    pub identity: Option<IdentityIssued>,
    /// PW-6: when the current password expires, the notices given, and whether it has.
    pub password_expiry: Option<PasswordExpiry>,
    /// SC-8: the latest login.
    pub last_login: Option<DateTime<Utc>>,
    /// SC-8: when an unused identity is revoked, and the warnings given for that date.
    pub inactivity: Option<Inactivity>,
    /// SC-5: until when each recovery contact cannot change again.
    pub recovery_cooldowns: RecoveryCooldowns,
    /// SC-3: when the contact email last changed (the latest few).
    pub contact_email_changes: VecDeque<DateTime<Utc>>,
    /// RC-7: an operator reset the password and the recovery information is not saved since.
    pub reset_by_operator: bool,
}

/// PW-6: the current password's expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswordExpiry {
    pub expires_at: DateTime<Utc>,
    pub noticed: Vec<u32>,
    pub expired: bool,
}

/// SC-8: the revocation date of an unused identity, as last recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Inactivity {
    pub revokes_at: DateTime<Utc>,
    /// The most urgent warning given for that date (days before it), if any.
    pub warned: Option<u32>,
}

/// SC-5: the end of each recovery contact's cooldown after a change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryCooldowns {
    pub email: Option<DateTime<Utc>>,
    pub mobile: Option<DateTime<Utc>>,
}

impl RecoveryCooldowns {
    pub fn of(&self, method: RecoveryMethod) -> Option<DateTime<Utc>> {
        match method {
            RecoveryMethod::Email => self.email,
            RecoveryMethod::Sms => self.mobile,
            RecoveryMethod::Question => None,
        }
    }
}

/// AP-8: the active second factor.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoFactor {
    pub channel: TwoFactorChannel,
    pub sealed_secret: Option<Sealed>,
    pub serial: Option<String>,
}

/// AP-3..6: one scope's app password.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPassword {
    pub password_hmac: String,
    pub expires_at: DateTime<Utc>,
    pub deactivated: bool,
    /// AP-6: the notices already given for this expiry (days before it).
    pub noticed: Vec<u32>,
}

impl AppPassword {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        !self.deactivated && self.expires_at > now
    }
}

/// CO-1..3: the live link to a collaborator's password, and links that no longer work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollaboratorLinks {
    pub live: Option<(TokenHash, DateTime<Utc>)>,
    pub spent: VecDeque<(TokenHash, Spent)>,
    /// CO-5: the pending password follows a reset (not the first password).
    pub after_reset: bool,
}

impl CollaboratorLinks {
    fn spend(&mut self, how: Spent) {
        if let Some((hash, _)) = self.live.take() {
            remember_spent(&mut self.spent, hash, how);
        }
    }
}

/// A token that lets the holder choose a new password (RC-5): the emailed link, or the reset
/// token a right code or answer yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub recovery_id: Uuid,
    pub method: RecoveryMethod,
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
}

/// What became of a token that no longer works, so its bearer gets a clear answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    Used,
    Superseded,
}

/// How many spent tokens the state remembers (for a clear `410` instead of "unknown").
const SPENT_KEPT: usize = 32;

fn remember_spent(spent: &mut VecDeque<(TokenHash, Spent)>, hash: TokenHash, how: Spent) {
    spent.push_front((hash, how));
    spent.truncate(SPENT_KEPT);
}

/// SEC-1: the refusal for a token that matches no live one: used, superseded, or never issued
/// (compared in constant time).
pub fn spent_refusal(
    spent: &VecDeque<(TokenHash, Spent)>,
    token_hash: &TokenHash,
) -> super::errors::AccountError {
    use super::errors::AccountError;
    let found = spent
        .iter()
        .find(|(hash, _)| crate::otp::constant_time_eq(hash.as_str(), token_hash.as_str()));
    match found {
        Some((_, Spent::Used)) => AccountError::TokenUsed,
        Some((_, Spent::Superseded)) => AccountError::TokenSuperseded,
        None => AccountError::TokenInvalid,
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// The live recovery link (RC-2); a newer one supersedes it.
    pub link: Option<Grant>,
    /// The live reset token (RC-3, RC-4); a newer one supersedes it.
    pub reset: Option<Grant>,
    pub spent: VecDeque<(TokenHash, Spent)>,
    /// Codes sent per recovery (RC-3: at most three).
    pub codes_sent: BTreeMap<Uuid, u32>,
    /// Wrong codes per recovery (RC-3: five in all, whatever becomes of its codes).
    pub code_attempts: BTreeMap<Uuid, u32>,
    /// When each recovery's latest code expires: a recovery whose codes all expired a day
    /// before another recovery's newest is forgotten, so the state does not grow for ever
    /// (SEC-2's count across recoveries still holds its guesses).
    pub code_expiries: BTreeMap<Uuid, DateTime<Utc>>,
    /// Wrong answers since the last right one or the last lock (RC-4).
    pub question_failures: u32,
    pub question_locked_until: Option<DateTime<Utc>>,
}

/// How long after its last code expired a recovery's counts are kept.
pub const RECOVERY_STATE_KEPT: chrono::Duration = chrono::Duration::days(1);

impl Grants {
    /// Drops the counts of recoveries whose latest code expired before `cutoff`.
    fn forget_recoveries_before(&mut self, cutoff: DateTime<Utc>) {
        let old: Vec<Uuid> = self
            .code_expiries
            .iter()
            .filter(|(_, expires)| **expires < cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.code_expiries.remove(&id);
            self.codes_sent.remove(&id);
            self.code_attempts.remove(&id);
        }
    }

    fn spend(&mut self, grant: Option<Grant>, how: Spent) {
        if let Some(g) = grant {
            remember_spent(&mut self.spent, g.token_hash, how);
        }
    }

    /// Every live token ends: the one used as `Used`, the others as `Superseded`.
    fn spend_all(&mut self, used: Option<&TokenHash>) {
        for grant in [self.link.take(), self.reset.take()].into_iter().flatten() {
            let how = if Some(&grant.token_hash) == used {
                Spent::Used
            } else {
                Spent::Superseded
            };
            self.spend(Some(grant), how);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryInfo {
    pub email: Option<String>,
    pub mobile: Option<String>,
    pub security_question: Option<String>,
    pub security_answer_hash: Option<PasswordHash>,
}

impl RecoveryInfo {
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.mobile.is_none() && self.security_question.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub expires_at: DateTime<Utc>,
    pub fresh_until: DateTime<Utc>,
}

impl Account {
    pub fn is_open(&self) -> bool {
        self.profile.is_some()
    }

    pub fn current_password(&self) -> Option<&PasswordHash> {
        self.passwords.front()
    }

    pub fn required_actions(&self) -> Vec<RequiredAction> {
        let mut actions = Vec::new();
        if self.must_change_password || self.password_expired() {
            actions.push(RequiredAction::ChangePassword);
        }
        if self.must_set_recovery_info {
            actions.push(RequiredAction::SetRecoveryInfo);
        } else if self.must_confirm_recovery_info {
            actions.push(RequiredAction::ConfirmRecoveryInfo);
        }
        actions
    }

    /// PW-6: the current password has expired (recorded: the scheduler's or a login's).
    pub fn password_expired(&self) -> bool {
        self.password_expiry.as_ref().is_some_and(|p| p.expired)
    }

    /// A session that has not ended and has not passed its absolute expiry.
    pub fn live_session(&self, session_id: Uuid, now: DateTime<Utc>) -> Option<&Session> {
        self.sessions
            .get(&session_id)
            .filter(|s| s.expires_at > now)
    }

    fn push_password(&mut self, hash: &PasswordHash) {
        self.passwords.push_front(hash.clone());
        self.passwords.truncate(HISTORY_KEPT);
    }
}

pub fn evolve(mut state: Account, event: &AccountEvent) -> Account {
    match event {
        AccountEvent::AccountOpened(e) => {
            state.profile = Some(e.clone());
            state.status = AccountStatus::Active;
            state.must_set_recovery_info = true;
            if e.kind == AccountKind::Mailbox {
                // ACC-5: every protocol is on when a mailbox opens.
                state.protocols = Some(MailProtocolsSet {
                    imap: true,
                    pop: true,
                    smtp: true,
                });
            }
        }
        AccountEvent::TemporaryPasswordIssued(e) => {
            state.push_password(&e.password_hash);
            state.password_expiry = None;
            state.must_change_password = true;
            if e.reason == TemporaryPasswordReason::OperatorReset {
                state.must_confirm_recovery_info = true;
                state.reset_by_operator = true;
                // Contact changes under way end with the reset: they start again, if at all.
                for purpose in [
                    OtpPurpose::ContactChange,
                    OtpPurpose::NewContactMobile,
                    OtpPurpose::RecoveryEmailChange,
                    OtpPurpose::RecoveryMobileChange,
                    OtpPurpose::NewRecoveryEmail,
                    OtpPurpose::NewRecoveryMobile,
                ] {
                    state.challenges.cancel(purpose);
                }
                state.login_failures = 0;
                state.grants.spend_all(None);
                state.challenges.cancel(OtpPurpose::Recovery);
            }
        }
        AccountEvent::PasswordImported(e) => {
            state.push_password(&e.password_hash);
            state.password_expiry = None;
            state.must_change_password = false;
        }
        AccountEvent::PasswordChanged(e) => {
            state.push_password(&e.password_hash);
            state.password_expiry = None;
            state.must_change_password = false;
            // A recovery under way for a password the holder just changed is moot.
            state.grants.spend_all(None);
        }
        AccountEvent::RecoveryInfoSet(e) => {
            // A link or a code on its way to an address that is no longer on file dies.
            if e.email != state.recovery.email {
                let link = state.grants.link.take();
                state.grants.spend(link, Spent::Superseded);
            }
            // SC-4: a code proving a contact that is no longer on file proves nothing.
            if e.email != state.recovery.email {
                state.challenges.cancel(OtpPurpose::VerifyRecoveryEmail);
            }
            if e.mobile != state.recovery.mobile {
                recovery_mobile_replaced(&mut state);
            }
            state.recovery = RecoveryInfo {
                email: e.email.clone(),
                mobile: e.mobile.clone(),
                security_question: e.security_question.clone(),
                security_answer_hash: e.security_answer_hash.clone(),
            };
            state.must_set_recovery_info = false;
            state.must_confirm_recovery_info = false;
            state.reset_by_operator = false;
        }
        AccountEvent::SessionStarted(e) => {
            // Sessions past their expiry can never be used again: forget them as time moves on.
            state.sessions.retain(|_, s| s.expires_at > e.started_at);
            state.login_failures = 0;
            state.last_login = state.last_login.max(Some(e.started_at));
            state.sessions.insert(
                e.session_id,
                Session {
                    expires_at: e.expires_at,
                    fresh_until: e.fresh_until,
                },
            );
        }
        AccountEvent::LoginFailed(_) => state.login_failures += 1,
        AccountEvent::LoginLockedOut(e) => {
            state.login_locked_until = Some(e.until);
            state.login_failures = 0;
        }
        AccountEvent::LoginUnlocked(_) => {
            state.login_locked_until = None;
            state.login_failures = 0;
        }
        AccountEvent::SessionReauthenticated(e) => {
            state.login_failures = 0;
            if let Some(s) = state.sessions.get_mut(&e.session_id) {
                s.fresh_until = e.fresh_until;
            }
        }
        AccountEvent::SessionsEnded(e) => {
            for id in &e.session_ids {
                state.sessions.remove(id);
            }
        }
        AccountEvent::RecoveryLinkIssued(e) => {
            state
                .recovery_messages
                .record(e.expires_at, RecoveryMethod::Email);
            let old = state.grants.link.replace(Grant {
                recovery_id: e.recovery_id,
                method: RecoveryMethod::Email,
                token_hash: e.token_hash.clone(),
                expires_at: e.expires_at,
            });
            state.grants.spend(old, Spent::Superseded);
        }
        AccountEvent::OtpChallengeIssued(e) => {
            if e.recovery_id.is_none() {
                let sent = match e.purpose {
                    OtpPurpose::Login => &mut state.login_codes,
                    _ => &mut state.otp_messages,
                };
                // A code's lifetime, whatever its channel: the hourly count reads when each
                // was sent from its expiry (SC-4's codes by mail count like those by SMS).
                sent.record(e.expires_at, RecoveryMethod::Sms);
            }
            // A recovery's count of wrong codes outlives its codes (cancelled by a mobile
            // change or an operator's reset, replaced by a newer one).
            let mut attempts = 0;
            if let Some(recovery_id) = e.recovery_id {
                state
                    .recovery_messages
                    .record(e.expires_at, RecoveryMethod::Sms);
                state
                    .grants
                    .forget_recoveries_before(e.expires_at - RECOVERY_STATE_KEPT);
                state.grants.code_expiries.insert(recovery_id, e.expires_at);
                *state.grants.codes_sent.entry(recovery_id).or_default() += 1;
                attempts = state
                    .grants
                    .code_attempts
                    .get(&recovery_id)
                    .copied()
                    .unwrap_or(0);
            }
            state.challenges.issue(Challenge {
                challenge_id: e.challenge_id,
                purpose: e.purpose,
                channel: e.channel,
                target: e.to.clone(),
                code_hash: e.code_hash.clone(),
                expires_at: e.expires_at,
                attempts,
                max_attempts: e.max_attempts,
                used: false,
                recovery_id: e.recovery_id,
            });
        }
        AccountEvent::OtpCheckFailed(e) => {
            state.check_failures += 1;
            if let Some(recovery_id) = state.challenges.recovery_of(e.challenge_id) {
                *state.grants.code_attempts.entry(recovery_id).or_default() += 1;
            }
            state.challenges.failed(e.challenge_id);
        }
        AccountEvent::OtpVerified(e) => {
            state.check_failures = 0;
            state.challenges.verified(e.challenge_id);
        }
        AccountEvent::ResetTokenIssued(e) => {
            let old = state.grants.reset.replace(Grant {
                recovery_id: e.recovery_id,
                method: e.method,
                token_hash: e.token_hash.clone(),
                expires_at: e.expires_at,
            });
            state.grants.spend(old, Spent::Superseded);
            if e.method == RecoveryMethod::Question {
                state.grants.question_failures = 0;
                state.check_failures = 0;
            }
        }
        AccountEvent::SecurityAnswerFailed(_) => {
            state.grants.question_failures += 1;
            state.check_failures += 1;
        }
        AccountEvent::ChecksLockedOut(e) => {
            state.checks_locked_until = Some(e.until);
            state.check_failures = 0;
        }
        AccountEvent::ChecksUnlocked(_) => {
            state.checks_locked_until = None;
            state.check_failures = 0;
        }
        AccountEvent::SecurityQuestionLocked(e) => {
            state.grants.question_locked_until = Some(e.until);
            state.grants.question_failures = 0;
        }
        AccountEvent::SecurityQuestionUnlocked(_) => state.grants.question_locked_until = None,
        AccountEvent::PasswordRecovered(e) => {
            state.push_password(&e.password_hash);
            state.password_expiry = None;
            state.must_change_password = false;
            state.must_confirm_recovery_info = true;
            let used = [&state.grants.link, &state.grants.reset]
                .into_iter()
                .flatten()
                .find(|g| g.recovery_id == e.recovery_id && g.method == e.method)
                .map(|g| g.token_hash.clone());
            state.grants.spend_all(used.as_ref());
            // Proving the holder ends a run of wrong passwords (an attacker's, or forgotten ones).
            state.login_failures = 0;
        }
        AccountEvent::RecoveryInfoConfirmed(_) => {
            state.must_confirm_recovery_info = false;
            state.reset_by_operator = false;
        }
        AccountEvent::MailProtocolsSet(e) => state.protocols = Some(*e),
        AccountEvent::TwoFactorEnrollmentStarted(e) => {
            state.pending_two_factor = Some(TwoFactor {
                channel: e.channel,
                sealed_secret: e.sealed_secret.clone(),
                serial: None,
            })
        }
        AccountEvent::TwoFactorEnabled(e) => {
            state.pending_two_factor = None;
            state.two_factor = Some(TwoFactor {
                channel: e.channel,
                sealed_secret: e.sealed_secret.clone(),
                serial: e.serial.clone(),
            });
        }
        AccountEvent::TwoFactorDisabled(_) => {
            state.two_factor = None;
            state.pending_two_factor = None;
        }
        AccountEvent::TotpAccepted(e) => {
            state.last_totp_step = state.last_totp_step.max(Some(e.step));
            if matches!(e.used_for, CodeUse::TwoFactorOn | CodeUse::TwoFactorOff) {
                state.check_failures = 0;
            }
        }
        AccountEvent::TotpRejected(_) => state.check_failures += 1,
        AccountEvent::AppPasswordIssued(e) => {
            state.app_passwords.insert(
                e.scope.clone(),
                AppPassword {
                    password_hmac: e.password_hmac.clone(),
                    expires_at: e.expires_at,
                    deactivated: false,
                    noticed: Vec::new(),
                },
            );
        }
        AccountEvent::AppPasswordPostponed(e) => {
            if let Some(p) = state.app_passwords.get_mut(&e.scope) {
                p.expires_at = e.expires_at;
                p.noticed.clear();
            }
        }
        AccountEvent::AppPasswordDeactivated(e) => {
            if let Some(p) = state.app_passwords.get_mut(&e.scope) {
                p.deactivated = true;
            }
        }
        AccountEvent::AppPasswordExpiryNoticed(e) => {
            if let Some(p) = state.app_passwords.get_mut(&e.scope) {
                p.noticed.push(e.days_before);
            }
        }
        AccountEvent::CollaboratorLinkIssued(e) => {
            state
                .recovery_messages
                .record(e.expires_at, RecoveryMethod::Email);
            state.collaborator.spend(Spent::Superseded);
            state.collaborator.live = Some((e.token_hash.clone(), e.expires_at));
            if e.reason == LinkReason::Created {
                // CO-1: no password yet; the holder's link is how one is made (and how it is
                // recovered, CO-2), so no recovery information is asked for.
                state.status = AccountStatus::Suspended;
                state.must_set_recovery_info = false;
            }
        }
        AccountEvent::CollaboratorPasswordSet(e) => {
            state.collaborator.spend(Spent::Used);
            state.collaborator.after_reset = false;
            state.push_password(&e.password_hash);
            state.password_expiry = None;
            state.must_change_password = false;
            state.login_failures = 0;
            state.status = AccountStatus::Active;
        }
        AccountEvent::CollaboratorReset(_) => {
            // CO-2: the old password stops at once: a suspended account does not log in.
            state.status = AccountStatus::Suspended;
            state.collaborator.after_reset = true;
        }
        AccountEvent::CollaboratorDeactivated(_) => {
            state.collaborator.spend(Spent::Superseded);
            state.status = AccountStatus::Deactivated;
        }
        AccountEvent::AccountSuspended(e) => {
            state.status = AccountStatus::Suspended;
            state.suspended_until = Some(e.until);
        }
        AccountEvent::SuspensionEnded(_) => {
            if state.status == AccountStatus::Suspended {
                state.status = AccountStatus::Active;
            }
            state.suspended_until = None;
        }
        AccountEvent::RecoveryContactVerified(_) => {}
        AccountEvent::IdentityDocumentRecorded(e) => {
            state.document = Some((e.clone(), Vec::new()));
        }
        AccountEvent::DocumentExpiryNoticed(e) => {
            if let Some((document, noticed)) = state.document.as_mut() {
                if document.expires_on == e.expires_on {
                    noticed.push(e.days_before);
                }
            }
        }
        AccountEvent::LanguageChanged(e) => {
            if let Some(profile) = state.profile.as_mut() {
                profile.language = e.language;
            }
        }
        AccountEvent::AccountRevoked(e) => {
            state.status = AccountStatus::Revoked;
            state.suspended_until = None;
            state.revoked_by = Some(e.request_reference.clone());
        }
        AccountEvent::RevokedForInactivity(_) => {
            state.status = AccountStatus::Revoked;
            state.suspended_until = None;
        }
        AccountEvent::IdentityIssued(e) => state.identity = Some(e.clone()),
        AccountEvent::ContactEmailChanged(e) => {
            if let Some(profile) = state.profile.as_mut() {
                profile.contact_email = Some(e.email.clone());
            }
            state.contact_email_changes.push_front(e.at);
            state.contact_email_changes.truncate(8);
        }
        AccountEvent::ContactMobileChanged(e) => {
            let old = state
                .profile
                .as_mut()
                .and_then(|profile| profile.contact_mobile.replace(e.mobile.clone()));
            if e.form_reference.is_some() {
                // An operator's change: the old phone is lost, so no SC-5 change it authorised
                // goes on.
                for purpose in [
                    OtpPurpose::RecoveryEmailChange,
                    OtpPurpose::NewRecoveryEmail,
                    OtpPurpose::RecoveryMobileChange,
                    OtpPurpose::NewRecoveryMobile,
                ] {
                    state.challenges.cancel(purpose);
                }
            }
            if let Some(mobile) = &e.recovery_mobile {
                recovery_mobile_replaced(&mut state);
                state.recovery.mobile = Some(mobile.clone());
            }
            // A code on its way to the old number proves nothing now.
            if let Some(old) = old {
                let still = state.recovery.mobile.as_deref() == Some(old.as_str());
                state.challenges.cancel_to_contact(&old, still);
            }
        }
        AccountEvent::RecoveryContactChanged(e) => match e.method {
            RecoveryMethod::Email => state.recovery_cooldowns.email = Some(e.cooldown_until),
            RecoveryMethod::Sms => state.recovery_cooldowns.mobile = Some(e.cooldown_until),
            RecoveryMethod::Question => {}
        },
        AccountEvent::PasswordExpirySet(e) => {
            state.password_expiry = Some(PasswordExpiry {
                expires_at: e.expires_at,
                noticed: Vec::new(),
                expired: false,
            })
        }
        AccountEvent::PasswordExpiryNoticed(e) => {
            if let Some(p) = state.password_expiry.as_mut() {
                if p.expires_at == e.expires_at {
                    p.noticed.push(e.days_before);
                }
            }
        }
        AccountEvent::PasswordExpired(e) => {
            if let Some(p) = state.password_expiry.as_mut() {
                if p.expires_at == e.expires_at {
                    p.expired = true;
                }
            }
        }
        AccountEvent::InactivityDeadlineSet(e) => {
            state.inactivity = Some(Inactivity {
                revokes_at: e.revokes_at,
                warned: None,
            })
        }
        AccountEvent::InactivityWarned(e) => {
            let earlier = state
                .inactivity
                .as_ref()
                .filter(|i| i.revokes_at == e.revokes_at)
                .and_then(|i| i.warned);
            state.inactivity = Some(Inactivity {
                revokes_at: e.revokes_at,
                warned: Some(earlier.map_or(e.days_before, |w| w.min(e.days_before))),
            });
        }
    }
    state
}

/// The recovery mobile is about to change: a recovery code sent to the old one, its Verified
/// badge's code, and a reset token an SMS code earned die with it.
fn recovery_mobile_replaced(state: &mut Account) {
    state.challenges.cancel(OtpPurpose::VerifyRecoveryMobile);
    state.challenges.cancel(OtpPurpose::Recovery);
    if state
        .grants
        .reset
        .as_ref()
        .is_some_and(|g| g.method == RecoveryMethod::Sms)
    {
        let reset = state.grants.reset.take();
        state.grants.spend(reset, Spent::Superseded);
    }
}
