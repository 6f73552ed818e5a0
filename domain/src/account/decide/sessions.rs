//! SEC-3, SEC-6: logins, step-up, logout, and the login lockout.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use super::*;
use crate::decider::Ctx;
use crate::lockout::{failures_after, guard, lock_at, Lock};
use uuid::Uuid;

pub(super) fn login(
    state: &Account,
    c: &Login,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let (mut events, right) =
        check_password(state, &c.password, &c.client_ip, c.channel, None, ctx)?;
    if !right {
        return Ok(events);
    }
    // SC-6: a suspension whose period is over ends here if the scheduler has not ended it yet.
    let ended = super::suspension::suspension_over(state, ctx.now);
    // ACC-4, SEC-6: only now, with the password right, is the state told.
    if state.status != AccountStatus::Active && ended.is_none() {
        return Err(AccountError::NotActive {
            status: state.status,
            until: state.suspended_until,
            awaiting_password: state.collaborator.live.is_some(),
        });
    }
    events.extend(ended);
    let passed = super::two_factor::second_factor(
        state,
        &mut events,
        c.otp.as_ref(),
        c.sms.as_ref(),
        &c.client_ip,
        c.channel,
        None,
        CodeUse::Login,
        ctx,
    )?;
    if !passed {
        return Ok(events);
    }
    // PW-6: an expired password still logs in, to change it and nothing else; SC-8: an
    // identity from before inactivity was watched starts being watched.
    let profile = opened(state)?;
    let aged = super::self_care::password_age_at_login(state, profile, ctx);
    let mut required_actions = state.required_actions();
    if matches!(aged, Some(AccountEvent::PasswordExpired(_)))
        && !required_actions.contains(&RequiredAction::ChangePassword)
    {
        required_actions.insert(0, RequiredAction::ChangePassword);
    }
    events.extend(aged);
    events.extend(super::self_care::inactivity_start(state, profile, ctx));
    let sessions = &ctx.settings.sessions;
    events.push(AccountEvent::SessionStarted(SessionStarted {
        session_id: c.session_id,
        token_hash: c.token_hash.clone(),
        started_at: ctx.now,
        expires_at: ctx.now + sessions.lifetime(),
        fresh_until: ctx.now + sessions.step_up(),
        client_ip: c.client_ip.clone(),
        channel: c.channel,
        required_actions,
    }));
    Ok(events)
}

/// SEC-6's check of the password a login or a step-up gives: refused while a lockout lasts (an
/// ended one recorded first), a wrong password recorded, locking at the threshold. The events
/// to record, and whether the password was right.
pub(super) fn check_password(
    state: &Account,
    password: &crate::secret::Secret,
    client_ip: &Option<String>,
    channel: AccessChannel,
    session_id: Option<Uuid>,
    ctx: &Ctx<'_>,
) -> Result<(Vec<AccountEvent>, bool), AccountError> {
    let mut events = lockout_over(state, ctx)?;
    let right = state
        .current_password()
        .is_some_and(|hash| ctx.hasher.verify(password, hash));
    if !right {
        failed_login(
            state,
            &mut events,
            client_ip.clone(),
            channel,
            session_id,
            ctx,
        );
    }
    Ok((events, right))
}

/// SEC-6: refuses while a login lockout lasts; once it has ended, the `LoginUnlocked` to record
/// before anything else.
pub(super) fn lockout_over(
    state: &Account,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    guard(
        state.login_locked_until,
        ctx.now,
        |until, seconds| AccountError::LoginLocked { until, seconds },
        |until| {
            AccountEvent::LoginUnlocked(LoginUnlocked {
                locked_until: until,
            })
        },
    )
}

/// A wrong password: `LoginFailed`, and `LoginLockedOut` when it is one too many in a row.
pub(super) fn failed_login(
    state: &Account,
    events: &mut Vec<AccountEvent>,
    client_ip: Option<String>,
    channel: AccessChannel,
    session_id: Option<Uuid>,
    ctx: &Ctx<'_>,
) {
    failed_login_for(
        state,
        events,
        LoginFailure::WrongPassword,
        client_ip,
        channel,
        session_id,
        ctx,
    )
}

/// A failed login for `reason` (a wrong password, or a wrong or replayed second factor).
pub(super) fn failed_login_for(
    state: &Account,
    events: &mut Vec<AccountEvent>,
    reason: LoginFailure,
    client_ip: Option<String>,
    channel: AccessChannel,
    session_id: Option<Uuid>,
    ctx: &Ctx<'_>,
) {
    let failures = failures_after(state.login_failures, !events.is_empty());
    events.push(AccountEvent::LoginFailed(LoginFailed {
        reason,
        client_ip,
        channel,
        session_id,
    }));
    let limits = &ctx.settings.limits;
    if failures >= limits.login_failures_per_user {
        events.push(AccountEvent::LoginLockedOut(LoginLockedOut {
            until: ctx.now + chrono::Duration::minutes(limits.login_lockout_minutes),
            failures,
        }));
    }
}

pub(super) fn reauthenticate(
    state: &Account,
    c: &Reauthenticate,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let session = state
        .live_session(c.session_id, ctx.now)
        .ok_or(AccountError::SessionInvalid)?;
    let (mut events, right) = check_password(
        state,
        &c.password,
        &c.client_ip,
        c.channel,
        Some(c.session_id),
        ctx,
    )?;
    if !right {
        return Ok(events);
    }
    let passed = super::two_factor::second_factor(
        state,
        &mut events,
        c.otp.as_ref(),
        c.sms.as_ref(),
        &c.client_ip,
        c.channel,
        Some(c.session_id),
        CodeUse::Reauthentication,
        ctx,
    )?;
    if !passed {
        return Ok(events);
    }
    // Step-up never outlives the session itself.
    let fresh_until = (ctx.now + ctx.settings.sessions.step_up()).min(session.expires_at);
    events.push(AccountEvent::SessionReauthenticated(
        SessionReauthenticated {
            session_id: c.session_id,
            fresh_until,
        },
    ));
    Ok(events)
}

pub(super) fn logout(
    state: &Account,
    c: &Logout,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    state
        .live_session(c.session_id, ctx.now)
        .ok_or(AccountError::SessionInvalid)?;
    Ok(vec![AccountEvent::SessionsEnded(SessionsEnded {
        session_ids: vec![c.session_id],
        reason: SessionEndReason::Logout,
    })])
}

/// SEC-6: the scheduler's command at a lock's end. Records `LoginUnlocked` and
/// `SecurityQuestionUnlocked` for locks whose time has passed, so the log (and the holder's
/// page) shows the end when it happens, not at the next attempt. Idempotent: a lock already
/// recorded as ended, or not yet over, yields nothing, so a timer fired twice appends once.
pub(super) fn end_locks(state: &Account, ctx: &Ctx<'_>) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let mut events = Vec::new();
    if let Lock::Ended(until) = lock_at(state.login_locked_until, ctx.now) {
        events.push(AccountEvent::LoginUnlocked(LoginUnlocked {
            locked_until: until,
        }));
    }
    if let Lock::Ended(until) = lock_at(state.grants.question_locked_until, ctx.now) {
        events.push(AccountEvent::SecurityQuestionUnlocked(
            SecurityQuestionUnlocked {
                locked_until: until,
            },
        ));
    }
    if let Lock::Ended(until) = lock_at(state.checks_locked_until, ctx.now) {
        events.push(AccountEvent::ChecksUnlocked(ChecksUnlocked {
            locked_until: until,
        }));
    }
    events.extend(super::suspension::suspension_over(state, ctx.now));
    Ok(events)
}

/// SC-7: the language of every later notice and page; choosing the one in use records nothing.
pub(super) fn set_language(
    state: &Account,
    c: &SetLanguage,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    // ACC-2: not before the required actions are done (PW-6's expired password is refused
    // before this).
    ready_for_change(state, c.session_id, false, ctx)?;
    if profile.language == c.language {
        return Ok(Vec::new());
    }
    Ok(vec![AccountEvent::LanguageChanged(LanguageChanged {
        language: c.language,
    })])
}
