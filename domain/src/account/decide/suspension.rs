//! SC-6: an identity's self-suspension, its end, and an operator's revocation.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use super::*;
use crate::decider::Ctx;
use crate::otp::OtpPurpose;
use crate::violation::{hidden_char, Violation};

/// The longest self-suspension (SC-6).
pub const MAX_SUSPENSION_DAYS: u32 = 30;
/// The longest request reference an operator records with a revocation.
pub const MAX_REFERENCE_CHARS: usize = 200;

pub(super) fn suspend(
    state: &Account,
    c: &Suspend,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    require_session(state, c.session_id, false, ctx.now)?;
    if profile.kind != AccountKind::Identity {
        return Err(AccountError::NotIdentity);
    }
    if !(1..=MAX_SUSPENSION_DAYS).contains(&c.days) {
        return Err(AccountError::Invalid(vec![Violation::new(
            "SC-6.days",
            Some("days"),
            "a suspension lasts 1 to 30 days",
        )]));
    }
    // Confirmed by the code sent to the contact mobile for `suspension`.
    let mut events =
        super::password::confirm_otp(state, OtpPurpose::Suspension, c.otp.as_ref(), ctx)?;
    if events
        .iter()
        .any(|e| matches!(e, AccountEvent::OtpCheckFailed(_)))
    {
        return Ok(events);
    }
    events.push(AccountEvent::AccountSuspended(AccountSuspended {
        days: c.days,
        until: ctx.now + chrono::Duration::days(i64::from(c.days)),
    }));
    // Every session ends at once, the one that asked included.
    events.extend(end_sessions(state, SessionEndReason::Suspended, ctx.now));
    Ok(events)
}

/// SC-6: a suspension whose period is over, to record before anything that depends on it.
pub(super) fn suspension_over(state: &Account, now: DateTime<Utc>) -> Option<AccountEvent> {
    match (state.status, state.suspended_until) {
        (AccountStatus::Suspended, Some(until)) if until <= now => {
            Some(AccountEvent::SuspensionEnded(SuspensionEnded {
                suspended_until: until,
            }))
        }
        _ => None,
    }
}

pub(super) fn revoke(
    state: &Account,
    c: &Revoke,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let reference = c.request_reference.trim();
    if reference.is_empty()
        || reference.chars().count() > MAX_REFERENCE_CHARS
        || reference.chars().any(hidden_char)
    {
        return Err(AccountError::Invalid(vec![Violation::new(
            "SC-6.request_reference",
            Some("request_reference"),
            "the signed request's reference: 1 to 200 characters, none of them control or direction characters",
        )]));
    }
    // Final: revoking a revoked account again records nothing.
    if state.status == AccountStatus::Revoked {
        return Ok(Vec::new());
    }
    let mut events = vec![AccountEvent::AccountRevoked(AccountRevoked {
        request_reference: reference.to_string(),
    })];
    events.extend(end_sessions(state, SessionEndReason::Revoked, ctx.now));
    Ok(events)
}
