//! CO-1..5: what the owning mailbox's holder does to a collaborator (on the collaborator's own
//! stream), and the collaborator's password through the link.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::{spent_refusal, Account};
use super::*;
use crate::decider::Ctx;

/// CO-5, SEC-4: the collaborator, when `owner_id` owns it.
fn owned(state: &Account, owner_id: uuid::Uuid) -> Result<&AccountOpened, AccountError> {
    let profile = opened(state)?;
    if profile.kind != AccountKind::Collaborator || profile.owner_id != Some(owner_id) {
        return Err(AccountError::NotOwner);
    }
    if state.status == AccountStatus::Deactivated {
        return Err(AccountError::Deactivated);
    }
    if state.status == AccountStatus::Revoked {
        return Err(AccountError::NotActive {
            status: AccountStatus::Revoked,
            until: None,
            awaiting_password: false,
        });
    }
    Ok(profile)
}

fn link(
    profile: &AccountOpened,
    reason: LinkReason,
    token_hash: &crate::secret::TokenHash,
    sealed_token: &crate::secret::Sealed,
    ctx: &Ctx<'_>,
) -> Result<AccountEvent, AccountError> {
    let to = profile
        .contact_email
        .clone()
        .ok_or(AccountError::MethodUnavailable)?;
    Ok(AccountEvent::CollaboratorLinkIssued(
        CollaboratorLinkIssued {
            reason,
            to,
            token_hash: token_hash.clone(),
            // CO-2: 24 hours, as a recovery link (`recovery.link_hours`).
            expires_at: ctx.now + ctx.settings.recovery.link_lifetime(),
            sealed_token: sealed_token.clone(),
        },
    ))
}

/// The link a collaborator is opened with (CO-1).
pub(super) fn first_link(
    opened: &AccountOpened,
    token_hash: &crate::secret::TokenHash,
    sealed: &crate::secret::Sealed,
    ctx: &Ctx<'_>,
) -> Result<AccountEvent, AccountError> {
    link(opened, LinkReason::Created, token_hash, sealed, ctx)
}

pub(super) fn reset(
    state: &Account,
    c: &CollaboratorLink,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = owned(state, c.owner_id)?;
    // SEC-2: the reference address gets no more links an hour than a recovery sends.
    state.recovery_messages.allow(ctx.settings, ctx.now)?;
    let mut events = Vec::new();
    if state.status == AccountStatus::Active {
        events.push(AccountEvent::CollaboratorReset(CollaboratorReset {}));
        events.extend(end_sessions(
            state,
            SessionEndReason::CollaboratorReset,
            ctx.now,
        ));
    }
    events.push(link(
        profile,
        LinkReason::Reset,
        &c.token_hash,
        &c.sealed_token,
        ctx,
    )?);
    Ok(events)
}

pub(super) fn resend(
    state: &Account,
    c: &CollaboratorLink,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = owned(state, c.owner_id)?;
    if state.status != AccountStatus::Suspended {
        return Err(AccountError::NothingToResend);
    }
    state.recovery_messages.allow(ctx.settings, ctx.now)?;
    Ok(vec![link(
        profile,
        LinkReason::Resent,
        &c.token_hash,
        &c.sealed_token,
        ctx,
    )?])
}

pub(super) fn deactivate(
    state: &Account,
    c: &OwnerAct,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    owned(state, c.owner_id)?;
    let mut events = vec![AccountEvent::CollaboratorDeactivated(
        CollaboratorDeactivated {},
    )];
    events.extend(end_sessions(state, SessionEndReason::Deactivated, ctx.now));
    Ok(events)
}

pub(super) fn set_password(
    state: &Account,
    c: &SetCollaboratorPassword,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    if profile.kind != AccountKind::Collaborator
        || matches!(
            state.status,
            AccountStatus::Deactivated | AccountStatus::Revoked
        )
    {
        return Err(AccountError::TokenInvalid);
    }
    let links = &state.collaborator;
    match &links.live {
        Some((hash, expires_at))
            if crate::otp::constant_time_eq(hash.as_str(), c.token_hash.as_str()) =>
        {
            if *expires_at <= ctx.now {
                return Err(AccountError::TokenExpired);
            }
        }
        _ => return Err(spent_refusal(&links.spent, &c.token_hash)),
    }
    super::password::check_new_password(
        state,
        profile,
        &c.new_password,
        &c.new_password_repeat,
        None,
        ctx,
    )?;
    let mut events = vec![AccountEvent::CollaboratorPasswordSet(
        CollaboratorPasswordSet {
            password_hash: ctx.hasher.hash(&c.new_password),
            after_reset: links.after_reset,
        },
    )];
    events.extend(super::self_care::password_expiry(profile, ctx));
    Ok(events)
}
