//! PW-1..4 and RC-7: changing the password, the checks every new password passes, and an
//! operator's reset.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use super::*;
use crate::decider::Ctx;
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
    let current_ok = state
        .current_password()
        .is_some_and(|hash| ctx.hasher.verify(&c.current_password, hash));
    if !current_ok {
        return Err(AccountError::CurrentPasswordWrong);
    }
    check_new_password(
        state,
        profile,
        &c.new_password,
        &c.new_password_repeat,
        Some(&c.current_password),
        ctx,
    )?;
    let mut events = vec![AccountEvent::PasswordChanged(PasswordChanged {
        password_hash: ctx.hasher.hash(&c.new_password),
    })];
    // PW-4: every session ends, the one that asked included; the holder logs in again.
    events.extend(end_sessions(
        state,
        SessionEndReason::PasswordChanged,
        ctx.now,
    ));
    Ok(events)
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

pub(super) fn operator_reset(
    state: &Account,
    c: &OperatorReset,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let reference = c.form_reference.trim();
    if reference.is_empty()
        || reference.chars().count() > MAX_FORM_REFERENCE_CHARS
        || reference.chars().any(char::is_control)
    {
        return Err(AccountError::Invalid(vec![Violation::new(
            "RC-7.form_reference",
            Some("form_reference"),
            "the signed form's reference has 1 to 100 characters",
        )]));
    }
    if matches!(
        state.status,
        AccountStatus::Revoked | AccountStatus::Deactivated
    ) {
        return Err(AccountError::RecoveryRefused);
    }
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
            form_reference: Some(reference.to_string()),
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
