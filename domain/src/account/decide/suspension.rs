//! SC-6: an identity's self-suspension, its end, and an operator's revocation; SC-2: its
//! identity document and the notices before the document expires.

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
    // ACC-2: no required action left; SEC-3: a fresh session.
    ready_for_change(state, c.session_id, true, ctx)?;
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
    // Final: the same signed request again (a retry) records nothing; another request finds
    // the account closed, rather than its reference silently dropped. A deactivated
    // collaborator stays what it is (ACC-4).
    match state.status {
        AccountStatus::Revoked if state.revoked_by.as_deref() == Some(reference) => {
            return Ok(Vec::new())
        }
        AccountStatus::Revoked | AccountStatus::Deactivated => {
            return Err(AccountError::Closed {
                status: state.status,
            })
        }
        AccountStatus::Active | AccountStatus::Suspended => {}
    }
    let mut events = vec![AccountEvent::AccountRevoked(AccountRevoked {
        request_reference: reference.to_string(),
    })];
    events.extend(end_sessions(state, SessionEndReason::Revoked, ctx.now));
    Ok(events)
}

/// SC-2: the days before a document's expiry when the holder is told.
pub const DOCUMENT_NOTICE_DAYS: [u32; 2] = [30, 7];

pub(super) fn record_document(
    state: &Account,
    c: &RecordDocument,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    ready_for_change(state, c.session_id, true, ctx)?;
    if profile.kind != AccountKind::Identity {
        return Err(AccountError::NotIdentity);
    }
    let number: String = c
        .number
        .chars()
        .filter(|ch| !ch.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    let mut errors = Vec::new();
    if !(5..=20).contains(&number.chars().count())
        || !number.chars().all(|ch| ch.is_ascii_alphanumeric())
    {
        errors.push(Violation::new(
            "SC-2.number",
            Some("number"),
            "the document number has 5 to 20 letters and digits",
        ));
    }
    if c.expires_on <= ctx.now.date_naive() {
        errors.push(Violation::new(
            "SC-2.expires_on",
            Some("expires_on"),
            "a document recorded now must still be valid",
        ));
    } else if chrono::Datelike::year(&c.expires_on) > 9999 {
        errors.push(Violation::new(
            "SC-2.expires_on",
            Some("expires_on"),
            "a date up to 9999-12-31",
        ));
    }
    if !errors.is_empty() {
        return Err(AccountError::Invalid(errors));
    }
    let recorded = IdentityDocumentRecorded {
        kind: c.kind,
        number,
        expires_on: c.expires_on,
    };
    if state.document.as_ref().is_some_and(|(d, _)| *d == recorded) {
        return Ok(Vec::new());
    }
    Ok(vec![AccountEvent::IdentityDocumentRecorded(recorded)])
}

/// SC-2: the scheduler's notice, given once, and only while that expiry is the one on file.
pub(super) fn note_document_expiry(
    state: &Account,
    c: &NoteDocumentExpiry,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let due = state.document.as_ref().is_some_and(|(d, noticed)| {
        d.expires_on == c.expires_on && !noticed.contains(&c.days_before)
    });
    // A document recorded close to its expiry: a closer notice is due already and says it all
    // (one mail, not the 30-day and the 7-day one together).
    let superseded = DOCUMENT_NOTICE_DAYS.iter().any(|&closer| {
        closer < c.days_before
            && ctx.now.date_naive() + chrono::Duration::days(i64::from(closer)) >= c.expires_on
    });
    if !due || superseded || state.status == AccountStatus::Revoked {
        return Ok(Vec::new());
    }
    Ok(vec![AccountEvent::DocumentExpiryNoticed(
        DocumentExpiryNoticed {
            expires_on: c.expires_on,
            days_before: c.days_before,
        },
    )])
}
