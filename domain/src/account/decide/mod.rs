//! The pure `decide` of the account aggregate: one command → events or a typed refusal. One
//! file per capability; the helpers they share live here.

mod opening;
mod password;
mod recovery;
mod recovery_info;
mod sessions;

pub use recovery::answer_malformed;

use super::commands::*;
use super::errors::AccountError;
use super::events::*;
use super::state::Account;
use crate::decider::Ctx;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub fn decide(
    state: &Account,
    cmd: &AccountCommand,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    match cmd {
        AccountCommand::Open(c) => opening::open(state, c, ctx),
        AccountCommand::Login(c) => sessions::login(state, c, ctx),
        AccountCommand::Reauthenticate(c) => sessions::reauthenticate(state, c, ctx),
        AccountCommand::Logout(c) => sessions::logout(state, c, ctx),
        AccountCommand::ChangePassword(c) => password::change_password(state, c, ctx),
        AccountCommand::SetRecoveryInfo(c) => recovery_info::set_recovery_info(state, c, ctx),
        AccountCommand::SendRecoveryLink(c) => recovery::send_recovery_link(state, c, ctx),
        AccountCommand::SendRecoveryCode(c) => recovery::send_recovery_code(state, c, ctx),
        AccountCommand::VerifyRecoveryCode(c) => recovery::verify_recovery_code(state, c, ctx),
        AccountCommand::AnswerSecurityQuestion(c) => recovery::answer_question(state, c, ctx),
        AccountCommand::CompleteRecovery(c) => recovery::complete_recovery(state, c, ctx),
        AccountCommand::OperatorReset(c) => password::operator_reset(state, c, ctx),
        AccountCommand::EndLocks => sessions::end_locks(state, ctx),
    }
}

pub(super) fn opened(state: &Account) -> Result<&AccountOpened, AccountError> {
    state.profile.as_ref().ok_or(AccountError::NotFound)
}

/// The session must be live, and fresh (SEC-3) when `fresh` is asked for.
pub(super) fn require_session(
    state: &Account,
    session_id: Uuid,
    fresh: bool,
    now: DateTime<Utc>,
) -> Result<(), AccountError> {
    let session = state
        .live_session(session_id, now)
        .ok_or(AccountError::SessionInvalid)?;
    if fresh && session.fresh_until < now {
        return Err(AccountError::ReauthenticationRequired);
    }
    Ok(())
}

/// `SessionsEnded` for every live session, if there is one.
pub(super) fn end_sessions(
    state: &Account,
    reason: SessionEndReason,
    now: DateTime<Utc>,
) -> Option<AccountEvent> {
    let live: Vec<Uuid> = state
        .sessions
        .iter()
        .filter(|(_, s)| s.expires_at > now)
        .map(|(id, _)| *id)
        .collect();
    (!live.is_empty()).then_some(AccountEvent::SessionsEnded(SessionsEnded {
        session_ids: live,
        reason,
    }))
}
