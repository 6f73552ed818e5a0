//! The pure `decide` of the account aggregate: one command → events or a typed refusal. One
//! file per capability; the helpers they share live here.

mod app_passwords;
mod collaborators;
mod opening;
mod password;
mod recovery;
mod recovery_info;
mod self_care;
mod sessions;
mod suspension;
mod two_factor;

pub use app_passwords::{
    plus_months, postpone_available_from, Scope, APP_PASSWORD_MONTHS, EXPIRY_NOTICE_DAYS,
    POSTPONE_WINDOW_DAYS,
};

pub use recovery::answer_malformed;
pub use self_care::{
    next_inactivity_check, spid_code, CONTACT_COOLDOWN_DAYS, INACTIVITY_WARNING_DAYS,
    PASSWORD_NOTICE_DAYS,
};
pub use suspension::{DOCUMENT_NOTICE_DAYS, MAX_SUSPENSION_DAYS};

use super::commands::*;
use super::errors::AccountError;
use super::events::*;
use super::state::Account;
use crate::decider::Ctx;
use crate::lockout::{failures_after, guard};
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub fn decide(
    state: &Account,
    cmd: &AccountCommand,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    // PW-6: once the password has expired, the holder's session does nothing but change it.
    if cmd.waits_for_password_change() && self_care::password_has_expired(state, ctx.now) {
        return Err(AccountError::PasswordExpired);
    }
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
        AccountCommand::RequestOtp(c) => password::request_otp(state, c, ctx),
        AccountCommand::SetMailProtocols(c) => app_passwords::set_mail_protocols(state, c, ctx),
        AccountCommand::StartTwoFactor(c) => two_factor::start(state, c, ctx),
        AccountCommand::ConfirmTwoFactor(c) => two_factor::confirm(state, c, ctx),
        AccountCommand::BindHardwareToken(c) => two_factor::bind_hardware_token(state, c, ctx),
        AccountCommand::DisableTwoFactor(c) => two_factor::disable(state, c, ctx),
        AccountCommand::GenerateAppPassword(c) => app_passwords::generate(state, c, ctx),
        AccountCommand::PostponeAppPassword(c) => app_passwords::postpone(state, c, ctx),
        AccountCommand::DeactivateAppPassword(c) => app_passwords::deactivate(state, c, ctx),
        AccountCommand::NoteAppPasswordExpiry(c) => app_passwords::note_expiry(state, c, ctx),
        AccountCommand::ResetCollaborator(c) => collaborators::reset(state, c, ctx),
        AccountCommand::ResendCollaboratorLink(c) => collaborators::resend(state, c, ctx),
        AccountCommand::DeactivateCollaborator(c) => collaborators::deactivate(state, c, ctx),
        AccountCommand::SetCollaboratorPassword(c) => collaborators::set_password(state, c, ctx),
        AccountCommand::Suspend(c) => suspension::suspend(state, c, ctx),
        AccountCommand::Revoke(c) => suspension::revoke(state, c, ctx),
        AccountCommand::SetLanguage(c) => sessions::set_language(state, c, ctx),
        AccountCommand::VerifyRecoveryContact(c) => recovery_info::verify_contact(state, c, ctx),
        AccountCommand::RecordDocument(c) => suspension::record_document(state, c, ctx),
        AccountCommand::NoteDocumentExpiry(c) => suspension::note_document_expiry(state, c, ctx),
        AccountCommand::ChangeContactEmail(c) => self_care::change_contact_email(state, c, ctx),
        AccountCommand::StartContactMobileChange(c) => {
            self_care::start_contact_mobile_change(state, c, ctx)
        }
        AccountCommand::ConfirmContactMobileChange(c) => {
            self_care::confirm_contact_mobile_change(state, c, ctx)
        }
        AccountCommand::OperatorSetContactMobile(c) => {
            self_care::operator_set_contact_mobile(state, c, ctx)
        }
        AccountCommand::StartRecoveryContactChange(c) => {
            self_care::start_recovery_contact_change(state, c, ctx)
        }
        AccountCommand::ConfirmRecoveryContactChange(c) => {
            self_care::confirm_recovery_contact_change(state, c, ctx)
        }
        AccountCommand::NotePasswordExpiry(c) => self_care::note_password_expiry(state, c, ctx),
        AccountCommand::ReviewInactivity(c) => self_care::review_inactivity(state, c, ctx),
    }
}

pub(super) fn opened(state: &Account) -> Result<&AccountOpened, AccountError> {
    state.profile.as_ref().ok_or(AccountError::NotFound)
}

/// A revoked account or a deactivated collaborator is final (ACC-4): an operator's command on
/// it is refused.
pub(super) fn not_closed(state: &Account) -> Result<(), AccountError> {
    match state.status {
        AccountStatus::Revoked | AccountStatus::Deactivated => Err(AccountError::Closed {
            status: state.status,
        }),
        AccountStatus::Active | AccountStatus::Suspended => Ok(()),
    }
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

/// ACC-2, SEC-3: a sensitive change needs a fresh session and no required action left.
pub(super) fn ready_for_change(
    state: &Account,
    session_id: Uuid,
    fresh: bool,
    ctx: &Ctx<'_>,
) -> Result<(), AccountError> {
    require_session(state, session_id, fresh, ctx.now)?;
    if !state.required_actions().is_empty() {
        return Err(AccountError::ActionsRequired);
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

/// SEC-2: code and answer checks are refused while the account's checks are locked; an ended
/// lock is recorded first.
pub(super) fn checks_open(
    state: &Account,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    guard(
        state.checks_locked_until,
        ctx.now,
        |until, seconds| AccountError::ChecksLocked { until, seconds },
        |until| {
            AccountEvent::ChecksUnlocked(ChecksUnlocked {
                locked_until: until,
            })
        },
    )
}

/// SEC-2: one more wrong code or answer in a row, across recoveries; at the threshold the
/// account's checks lock (and the holder is mailed).
pub(super) fn check_failed(
    state: &Account,
    events: &mut Vec<AccountEvent>,
    lock_ended: bool,
    ctx: &Ctx<'_>,
) {
    let failures = failures_after(state.check_failures, lock_ended);
    let limits = &ctx.settings.limits;
    if failures >= limits.check_failures_per_user {
        events.push(AccountEvent::ChecksLockedOut(ChecksLockedOut {
            until: ctx.now + chrono::Duration::minutes(limits.check_lockout_minutes),
            failures,
        }));
    }
}

/// PW-4, SC, AP-8: a code by SMS for `purpose` to the account's contact mobile (never the
/// recovery mobile: a session could set that one itself), replacing any earlier code of the
/// purpose, within `limits.recovery_messages_per_user_per_hour` such codes an hour (SEC-2,
/// counted apart from recovery's).
pub(super) fn sms_challenge(
    state: &Account,
    purpose: crate::otp::OtpPurpose,
    drawn: &DrawnCode,
    ctx: &Ctx<'_>,
) -> Result<AccountEvent, AccountError> {
    let profile = opened(state)?;
    let to = profile
        .contact_mobile
        .as_ref()
        .ok_or(AccountError::MethodUnavailable)?;
    challenge(state, purpose, crate::notice::Channel::Sms, to, drawn, ctx)
}

/// A code for `purpose` to `to` by `channel`, replacing any earlier code of the purpose, within
/// the hourly limit of such codes (login codes counted apart).
pub(super) fn challenge(
    state: &Account,
    purpose: crate::otp::OtpPurpose,
    channel: crate::notice::Channel,
    to: &str,
    drawn: &DrawnCode,
    ctx: &Ctx<'_>,
) -> Result<AccountEvent, AccountError> {
    // SEC-2: refused with when the next is possible (`429` with `Retry-After`).
    let sent = match purpose {
        crate::otp::OtpPurpose::Login => &state.login_codes,
        _ => &state.otp_messages,
    };
    sent.allow(ctx.settings, ctx.now)?;
    let settings = &ctx.settings.recovery;
    Ok(AccountEvent::OtpChallengeIssued(OtpChallengeIssued {
        challenge_id: drawn.challenge_id,
        purpose,
        channel,
        to: to.to_string(),
        code_hash: ctx.codes.hash_code(drawn.challenge_id, drawn.code.expose()),
        expires_at: ctx.now + settings.code_lifetime(),
        max_attempts: settings.code_attempts,
        recovery_id: None,
        sealed_code: drawn.sealed_code.clone(),
    }))
}
