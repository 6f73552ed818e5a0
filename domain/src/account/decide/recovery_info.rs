//! RI-1..3, RC-6: saving, changing and confirming the recovery information.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use super::*;
use crate::decider::Ctx;
use crate::masking::{checked_answer, normalize_answer, normalize_email, normalize_mobile};
use crate::secret::Secret;
use crate::violation::Violation;

const MAX_QUESTION_CHARS: usize = 200;

pub(super) fn set_recovery_info(
    state: &Account,
    c: &SetRecoveryInfo,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    // Setting it for the first time is a required action; changing contacts later is a
    // sensitive change and needs a fresh session (SEC-3).
    // First saving it is a required action and needs no step-up; so does confirming it
    // unchanged after a recovery (checked below, once we know it is unchanged).
    require_session(state, c.session_id, false, ctx.now)?;
    let mut errors = Vec::new();
    let current = &state.recovery;
    let email = match &c.email {
        Change::Keep => current.email.clone(),
        Change::Clear => None,
        Change::Set(raw) => {
            let normalized = normalize_email(raw);
            if normalized.is_none() {
                errors.push(Violation::new(
                    "RI-1.email",
                    Some("email"),
                    "not a valid e-mail address",
                ));
            }
            normalized
        }
    };
    let mobile = match &c.mobile {
        Change::Keep => current.mobile.clone(),
        Change::Clear => None,
        Change::Set(raw) => {
            let normalized = normalize_mobile(raw);
            if normalized.is_none() {
                errors.push(Violation::new(
                    "RI-1.mobile",
                    Some("mobile"),
                    "not a valid mobile number (E.164, or an Italian number)",
                ));
            }
            normalized
        }
    };
    let mut new_answer = None;
    let (question, answer_hash) = match &c.security {
        Change::Keep => (
            current.security_question.clone(),
            current.security_answer_hash.clone(),
        ),
        Change::Clear => (None, None),
        Change::Set(q) => {
            let question = q.question.trim().to_string();
            if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
                errors.push(Violation::new(
                    "RI-1.security_question",
                    Some("security_question"),
                    "the question must have 1 to 200 characters",
                ));
            }
            let answer = checked_answer(q.answer.expose()).unwrap_or_default();
            if answer.is_empty() {
                errors.push(Violation::new(
                    "RI-1.security_answer",
                    Some("security_answer"),
                    "the answer must have 1 to 200 characters",
                ));
            } else if answer != normalize_answer(q.answer_repeat.expose()) {
                errors.push(Violation::new(
                    "RI-1.security_answer_repeat",
                    Some("security_answer_repeat"),
                    "the answer and its repetition differ",
                ));
            }
            new_answer = Some(Secret::new(answer));
            (Some(question), None)
        }
    };
    if email.is_none() && mobile.is_none() && errors.is_empty() {
        errors.push(Violation::new(
            "RI-2",
            None,
            "give at least a recovery e-mail or a mobile number",
        ));
    }
    if !errors.is_empty() {
        return Err(AccountError::Invalid(errors));
    }
    let sets_question = matches!(c.security, Change::Set(_));
    super::self_care::contact_change_through_flow(state, profile, &email, &mobile, sets_question)?;
    let unchanged = new_answer.is_none()
        && email == current.email
        && mobile == current.mobile
        && question == current.security_question
        && answer_hash == current.security_answer_hash;
    let confirming = unchanged && state.must_confirm_recovery_info;
    if !state.must_set_recovery_info && !confirming {
        require_session(state, c.session_id, true, ctx.now)?;
    }
    if unchanged && !state.must_set_recovery_info {
        // RC-6: saving it unchanged after a recovery confirms it; otherwise it records nothing.
        return Ok(if state.must_confirm_recovery_info {
            vec![AccountEvent::RecoveryInfoConfirmed(
                RecoveryInfoConfirmed {},
            )]
        } else {
            Vec::new()
        });
    }
    let answer_hash = match new_answer {
        Some(answer) => Some(ctx.hasher.hash(&answer)),
        None => answer_hash,
    };
    Ok(vec![AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
        email,
        mobile,
        security_question: question,
        security_answer_hash: answer_hash,
    })])
}

/// SC-4: the code sent to a recovery contact proves the holder reads it; the page shows the
/// contact Verified until it changes. A wrong code is recorded (and counts towards SEC-2's lock).
pub(super) fn verify_contact(
    state: &Account,
    c: &VerifyRecoveryContact,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    use crate::otp::OtpPurpose;
    use crate::recovery::RecoveryMethod;
    opened(state)?;
    require_session(state, c.session_id, false, ctx.now)?;
    let (purpose, contact) = match c.method {
        RecoveryMethod::Email => (OtpPurpose::VerifyRecoveryEmail, &state.recovery.email),
        RecoveryMethod::Sms => (OtpPurpose::VerifyRecoveryMobile, &state.recovery.mobile),
        RecoveryMethod::Question => {
            return Err(AccountError::Invalid(vec![
                crate::violation::Violation::new(
                    "SC-4.method",
                    Some("method"),
                    "the recovery email or mobile is verified, not the question",
                ),
            ]))
        }
    };
    let contact = contact.as_ref().ok_or(AccountError::MethodUnavailable)?;
    let mut events = super::password::confirm_otp(state, purpose, c.code.as_ref(), ctx)?;
    if events
        .iter()
        .any(|e| matches!(e, AccountEvent::OtpCheckFailed(_)))
    {
        return Ok(events);
    }
    events.push(AccountEvent::RecoveryContactVerified(
        RecoveryContactVerified {
            method: c.method,
            contact: contact.clone(),
        },
    ));
    Ok(events)
}
