//! RC-2..5: recovery links, codes, the security question and the new password.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use super::password::check_new_password;
use super::*;
use crate::decider::Ctx;
use crate::lockout::{failures_after, guard};
use crate::masking::answer_forms;
use crate::notice::Channel;
use crate::otp::{self, OtpPurpose};
use crate::recovery::{self, RecoveryMethod};
use crate::secret::Secret;
use crate::violation::Violation;

/// Recovery commands act on active accounts only (SEC-6); the handler gives others a decoy's
/// answers before it gets here, so this is the guard against a race with a suspension.
pub(super) fn recoverable(state: &Account) -> Result<&AccountOpened, AccountError> {
    let profile = opened(state)?;
    if state.status != AccountStatus::Active {
        return Err(AccountError::RecoveryRefused);
    }
    Ok(profile)
}

pub(super) fn send_recovery_link(
    state: &Account,
    c: &SendRecoveryLink,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    recoverable(state)?;
    let to = recovery::link_address(state).ok_or(AccountError::MethodUnavailable)?;
    state.recovery_messages.allow(ctx.settings, ctx.now)?;
    Ok(vec![AccountEvent::RecoveryLinkIssued(RecoveryLinkIssued {
        recovery_id: c.recovery_id,
        to: to.to_string(),
        token_hash: c.token_hash.clone(),
        expires_at: ctx.now + ctx.settings.recovery.link_lifetime(),
        sealed_token: c.sealed_token.clone(),
    })])
}

pub(super) fn send_recovery_code(
    state: &Account,
    c: &SendRecoveryCode,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    recoverable(state)?;
    let to = state
        .recovery
        .mobile
        .as_ref()
        .ok_or(AccountError::MethodUnavailable)?;
    state.recovery_messages.allow(ctx.settings, ctx.now)?;
    let settings = &ctx.settings.recovery;
    let sent = state
        .grants
        .codes_sent
        .get(&c.recovery_id)
        .copied()
        .unwrap_or(0);
    if sent >= settings.codes_per_recovery {
        return Err(AccountError::CodeLimit);
    }
    // Asking again does not buy guesses: a recovery whose attempts are spent sends no more.
    let spent = state
        .grants
        .code_attempts
        .get(&c.recovery_id)
        .copied()
        .unwrap_or(0);
    if spent >= settings.code_attempts {
        return Err(AccountError::CodeExhausted);
    }
    Ok(vec![AccountEvent::OtpChallengeIssued(OtpChallengeIssued {
        challenge_id: c.challenge_id,
        purpose: OtpPurpose::Recovery,
        channel: Channel::Sms,
        to: to.clone(),
        code_hash: ctx.codes.hash_code(c.challenge_id, c.code.expose()),
        expires_at: ctx.now + settings.code_lifetime(),
        max_attempts: settings.code_attempts,
        recovery_id: Some(c.recovery_id),
        sealed_code: c.sealed_code.clone(),
    })])
}

pub(super) fn verify_recovery_code(
    state: &Account,
    c: &VerifyRecoveryCode,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    recoverable(state)?;
    let challenge = state
        .challenges
        .get(OtpPurpose::Recovery, Some(c.recovery_id))
        .ok_or(AccountError::NoCode)?;
    if !otp::well_formed(c.code.expose()) {
        return Err(AccountError::Invalid(vec![Violation::new(
            "RC-3.code",
            Some("code"),
            "the code has 6 digits",
        )]));
    }
    let mut events = checks_open(state, ctx)?;
    let checks_lock_ended = !events.is_empty();
    let candidate = ctx.codes.hash_code(challenge.challenge_id, c.code.expose());
    match challenge.check(&candidate, ctx.now) {
        otp::Check::Right => {
            events.push(AccountEvent::OtpVerified(OtpVerified {
                challenge_id: challenge.challenge_id,
            }));
            events.push(AccountEvent::ResetTokenIssued(ResetTokenIssued {
                recovery_id: c.recovery_id,
                method: RecoveryMethod::Sms,
                token_hash: c.token_hash.clone(),
                expires_at: ctx.now + ctx.settings.recovery.reset_token_lifetime(),
            }));
            Ok(events)
        }
        otp::Check::Wrong { attempts_left } => {
            events.push(AccountEvent::OtpCheckFailed(OtpCheckFailed {
                challenge_id: challenge.challenge_id,
                attempts_left,
                client_ip: c.client_ip.clone(),
            }));
            check_failed(state, &mut events, checks_lock_ended, ctx);
            Ok(events)
        }
        otp::Check::Missing => Err(AccountError::NoCode),
        otp::Check::Expired => Err(AccountError::CodeExpired),
        otp::Check::Exhausted => Err(AccountError::CodeExhausted),
    }
}

pub(super) fn answer_question(
    state: &Account,
    c: &AnswerSecurityQuestion,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    recoverable(state)?;
    let settings = &ctx.settings.recovery;
    let hash = state
        .recovery
        .security_answer_hash
        .as_ref()
        .filter(|_| settings.security_question)
        .ok_or(AccountError::MethodUnavailable)?;
    let forms = answer_forms(c.answer.expose()).ok_or_else(answer_malformed)?;
    let mut events = guard(
        state.grants.question_locked_until,
        ctx.now,
        |until, seconds| AccountError::QuestionLocked { until, seconds },
        |until| {
            AccountEvent::SecurityQuestionUnlocked(SecurityQuestionUnlocked {
                locked_until: until,
            })
        },
    )?;
    let question_lock_ended = !events.is_empty();
    let checks = checks_open(state, ctx)?;
    let checks_lock_ended = !checks.is_empty();
    events.extend(checks);
    // RI-1: the composed form first; an answer saved before NFC also in the form it was saved.
    let right = forms
        .into_iter()
        .any(|form| ctx.hasher.verify(&Secret::new(form), hash));
    if right {
        events.push(AccountEvent::ResetTokenIssued(ResetTokenIssued {
            recovery_id: c.recovery_id,
            method: RecoveryMethod::Question,
            token_hash: c.token_hash.clone(),
            expires_at: ctx.now + settings.reset_token_lifetime(),
        }));
        return Ok(events);
    }
    let failures = failures_after(state.grants.question_failures, question_lock_ended);
    events.push(AccountEvent::SecurityAnswerFailed(SecurityAnswerFailed {
        recovery_id: c.recovery_id,
        attempts_left: settings.question_attempts.saturating_sub(failures),
        client_ip: c.client_ip.clone(),
    }));
    if failures >= settings.question_attempts {
        events.push(AccountEvent::SecurityQuestionLocked(
            SecurityQuestionLocked {
                until: ctx.now + settings.question_lock(),
            },
        ));
    }
    check_failed(state, &mut events, checks_lock_ended, ctx);
    Ok(events)
}

/// RC-4: an answer of a shape no holder could have saved (a decoy refuses it alike).
pub fn answer_malformed() -> AccountError {
    AccountError::Invalid(vec![Violation::new(
        "RC-4.answer",
        Some("answer"),
        "the answer must have 1 to 200 characters",
    )])
}

pub(super) fn complete_recovery(
    state: &Account,
    c: &CompleteRecovery,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = recoverable(state)?;
    let grants = &state.grants;
    let live = [&grants.link, &grants.reset]
        .into_iter()
        .flatten()
        .find(|g| otp::constant_time_eq(g.token_hash.as_str(), c.token_hash.as_str()));
    let Some(grant) = live else {
        return Err(super::super::state::spent_refusal(
            &grants.spent,
            &c.token_hash,
        ));
    };
    if ctx.now >= grant.expires_at {
        return Err(AccountError::TokenExpired);
    }
    check_new_password(
        state,
        profile,
        &c.new_password,
        &c.new_password_repeat,
        None,
        ctx,
    )?;
    let mut events = Vec::new();
    // Proving the holder ends a login lockout (an attacker's guesses caused it).
    if let Some(until) = state.login_locked_until {
        events.push(AccountEvent::LoginUnlocked(LoginUnlocked {
            locked_until: until,
        }));
    }
    events.push(AccountEvent::PasswordRecovered(PasswordRecovered {
        recovery_id: grant.recovery_id,
        method: grant.method,
        password_hash: ctx.hasher.hash(&c.new_password),
    }));
    events.extend(super::self_care::password_expiry(profile, ctx));
    // RC-6: every session ends; the next login confirms the recovery information.
    events.extend(end_sessions(
        state,
        SessionEndReason::PasswordRecovered,
        ctx.now,
    ));
    Ok(events)
}
