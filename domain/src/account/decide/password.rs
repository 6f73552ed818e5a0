//! PW-1..4 and RC-7: changing the password, the checks every new password passes, and an
//! operator's reset.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use super::*;
use crate::decider::Ctx;
use crate::otp::OtpPurpose;
use crate::policy::{self, Holder};
use crate::secret::Secret;
use crate::violation::Violation;

pub(super) fn change_password(
    state: &Account,
    c: &ChangePassword,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    require_session(state, c.session_id, true, ctx.now)?;
    // SEC-6: a wrong current password counts as a failed login (a stolen session gets no
    // free guesses); the handler's caller answers `current-password-wrong` when it is recorded.
    let (mut events, right) = super::sessions::check_password(
        state,
        &c.current_password,
        &c.client_ip,
        c.channel,
        Some(c.session_id),
        ctx,
    )?;
    if !right {
        return Ok(events);
    }
    // PW-4: an identity confirms with a code sent to its mobile, except the first change
    // (opening, an operator's reset), when no mobile may be on file yet.
    if profile.kind == AccountKind::Identity && !state.must_change_password {
        let confirmed = confirm_otp(state, OtpPurpose::PasswordChange, c.otp.as_ref(), ctx)?;
        let wrong = confirmed
            .iter()
            .any(|e| matches!(e, AccountEvent::OtpCheckFailed(_)));
        events.extend(confirmed);
        if wrong {
            return Ok(events);
        }
    }
    check_new_password(
        state,
        profile,
        &c.new_password,
        &c.new_password_repeat,
        Some(&c.current_password),
        ctx,
    )?;
    events.push(AccountEvent::PasswordChanged(PasswordChanged {
        password_hash: ctx.hasher.hash(&c.new_password),
    }));
    events.extend(super::self_care::password_expiry(profile, ctx));
    // PW-4: every session ends, the one that asked included; the holder logs in again.
    events.extend(end_sessions(
        state,
        SessionEndReason::PasswordChanged,
        ctx.now,
    ));
    Ok(events)
}

/// Checks `code` against the live challenge of `purpose` (as [`super::self_care::confirm_codes`]
/// does for one): `OtpVerified` when right; when wrong, `OtpCheckFailed` (and SEC-2's lock at
/// the threshold), which the caller records and answers as a wrong code.
pub(super) fn confirm_otp(
    state: &Account,
    purpose: OtpPurpose,
    code: Option<&Secret>,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    super::self_care::confirm_codes(state, &[(purpose, code, "otp", "PW-4.otp")], ctx)
        .map(|(events, _)| events)
}

/// PW-4, SC: a code by SMS to the account's contact mobile, replacing any earlier code of the
/// purpose. Never the recovery mobile: a session could set that one itself, and the code is
/// there to prove the holder has the mobile on file. At most
/// `limits.recovery_messages_per_user_per_hour` codes an hour, counted in the state.
pub(super) fn request_otp(
    state: &Account,
    c: &RequestOtp,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    // No code for a change that could not go on: what the change itself will ask of the
    // session (ACC-2, SEC-3) is asked of its code.
    match c.purpose {
        OtpPurpose::Suspension => {
            ready_for_change(state, c.session_id, true, ctx)?;
            // SC-6: only identities suspend themselves.
            if profile.kind != crate::account::AccountKind::Identity {
                return Err(AccountError::NotIdentity);
            }
        }
        OtpPurpose::TwoFactorOff => {
            ready_for_change(state, c.session_id, true, ctx)?;
            // AP-8: the SMS channel's code; an authenticator's is read from the app.
            match &state.two_factor {
                None => return Err(AccountError::TwoFactorNotOn),
                Some(on) if on.sealed_secret.is_some() => {
                    return Err(AccountError::Invalid(vec![Violation::new(
                        "AP-8.purpose",
                        Some("purpose"),
                        "two-step verification is on an authenticator app or a token: turning it off takes a code from there",
                    )]))
                }
                Some(_) => {}
            }
        }
        OtpPurpose::RecoveryEmailChange | OtpPurpose::RecoveryMobileChange => {
            require_session(state, c.session_id, true, ctx.now)?;
        }
        _ => require_session(state, c.session_id, false, ctx.now)?,
    }
    if c.purpose == OtpPurpose::Recovery {
        return Err(AccountError::Invalid(vec![Violation::new(
            "PW-4.purpose",
            Some("purpose"),
            "recovery codes are asked for with POST /v1/recovery/{recovery_id}/sms",
        )]));
    }
    if matches!(
        c.purpose,
        OtpPurpose::ContactChange
            | OtpPurpose::NewContactMobile
            | OtpPurpose::NewRecoveryEmail
            | OtpPurpose::NewRecoveryMobile
    ) {
        return Err(AccountError::Invalid(vec![Violation::new(
            "SC-3.purpose",
            Some("purpose"),
            "codes to a new contact are sent by the change itself (POST /v1/account/contact-mobile, POST /v1/account/recovery-info/email or /mobile)",
        )]));
    }
    // SC-5: no code for a change that could not go on.
    if let Some(method) = match c.purpose {
        OtpPurpose::RecoveryEmailChange => Some(crate::recovery::RecoveryMethod::Email),
        OtpPurpose::RecoveryMobileChange => Some(crate::recovery::RecoveryMethod::Sms),
        _ => None,
    } {
        super::self_care::change_possible(state, method, ctx)?;
    }
    // SC-4: a code proving a recovery contact goes to that contact; SC-5: the one authorising
    // a new recovery mobile goes to the current one (to the contact mobile, as for the email,
    // when one is added).
    let (channel, contact) = match c.purpose {
        OtpPurpose::VerifyRecoveryEmail => (crate::notice::Channel::Email, &state.recovery.email),
        OtpPurpose::VerifyRecoveryMobile => (crate::notice::Channel::Sms, &state.recovery.mobile),
        OtpPurpose::RecoveryMobileChange if state.recovery.mobile.is_some() => {
            (crate::notice::Channel::Sms, &state.recovery.mobile)
        }
        _ => return Ok(vec![super::sms_challenge(state, c.purpose, &c.code, ctx)?]),
    };
    let to = contact.as_ref().ok_or(AccountError::MethodUnavailable)?;
    Ok(vec![super::challenge(
        state, c.purpose, channel, to, &c.code, ctx,
    )?])
}

/// PW-1, PW-2 and the repetition, for a new password. `current` is the password just verified
/// in the clear (it compares without another Argon2 run), when there is one.
pub(super) fn check_new_password(
    state: &Account,
    profile: &AccountOpened,
    new_password: &Secret,
    new_password_repeat: &Secret,
    current: Option<&Secret>,
    ctx: &Ctx<'_>,
) -> Result<(), AccountError> {
    let policy = &ctx.settings.policy;
    let mut personal = Vec::new();
    if profile.kind == AccountKind::Identity {
        personal.extend(profile.name.as_deref());
        personal.extend(profile.fiscal_code.as_deref());
    }
    let holder = Holder {
        user_id: &profile.user_id,
        personal,
    };
    let mut violations = Vec::new();
    if new_password != new_password_repeat {
        violations.push(Violation::new(
            "PW-4.repeat",
            Some("new_password_repeat"),
            "the new password and its repetition differ",
        ));
    }
    violations.extend(policy::evaluate(new_password.expose(), &holder, policy).violations(policy));
    if !violations.is_empty() {
        return Err(AccountError::PasswordPolicy(violations));
    }
    // The expensive check last: one Argon2 verification per remembered password, except the
    // current one when it was just verified in the clear.
    let skip = usize::from(current.is_some());
    let reused = policy.history > 0
        && (current == Some(new_password)
            || state
                .passwords
                .iter()
                .take(policy.history)
                .skip(skip)
                .any(|old| ctx.hasher.verify(new_password, old)));
    if reused {
        return Err(AccountError::PasswordPolicy(vec![Violation::new(
            "PW-2.history",
            Some("new_password"),
            format!(
                "the new password must differ from your last {} passwords",
                policy.history
            ),
        )]));
    }
    Ok(())
}

/// Longest form reference accepted (RC-7).
const MAX_FORM_REFERENCE_CHARS: usize = 100;

/// A signed paper form's reference (RC-7), trimmed: 1 to 100 characters, none of them control
/// or direction characters (which would make the audit trail show another reference).
pub(super) fn form_reference(raw: &str, rule: &'static str) -> Result<String, Violation> {
    let reference = raw.trim();
    if reference.is_empty()
        || reference.chars().count() > MAX_FORM_REFERENCE_CHARS
        || reference.chars().any(crate::violation::hidden_char)
    {
        return Err(Violation::new(
            rule,
            Some("form_reference"),
            "the signed form's reference: 1 to 100 characters, none of them control or direction characters",
        ));
    }
    Ok(reference.to_string())
}

pub(super) fn operator_reset(
    state: &Account,
    c: &OperatorReset,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let reference = form_reference(&c.form_reference, "RC-7.form_reference")
        .map_err(|v| AccountError::Invalid(vec![v]))?;
    not_closed(state)?;
    let mut events = Vec::new();
    // The holder proved who they are on paper: a login lockout ends with the reset.
    if let Some(until) = state.login_locked_until {
        events.push(AccountEvent::LoginUnlocked(LoginUnlocked {
            locked_until: until,
        }));
    }
    // The operator hands the password over (RC-7): no worker delivers it, so nothing is sealed.
    events.push(AccountEvent::TemporaryPasswordIssued(
        TemporaryPasswordIssued {
            password_hash: ctx.hasher.hash(&c.password),
            reason: TemporaryPasswordReason::OperatorReset,
            form_reference: Some(reference),
            sealed_password: None,
        },
    ));
    events.extend(end_sessions(
        state,
        SessionEndReason::OperatorReset,
        ctx.now,
    ));
    Ok(events)
}
