//! ACC-5 and AP-1..6: a mailbox's mail protocols and its passwords for mail programs.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use super::*;
use crate::decider::Ctx;
use crate::violation::Violation;
use chrono::{DateTime, Duration, Months, Utc};

/// AP-4: how long an app password lives, and by how much a postpone extends it.
pub const APP_PASSWORD_MONTHS: u32 = 3;
/// AP-4: postponing opens this many days before the expiry.
pub const POSTPONE_WINDOW_DAYS: i64 = 14;
/// AP-6: the notices before an expiry (days before; 0 is the expiry itself).
pub const EXPIRY_NOTICE_DAYS: [u32; 4] = [14, 3, 1, 0];

pub fn plus_months(at: DateTime<Utc>) -> DateTime<Utc> {
    at.checked_add_months(Months::new(APP_PASSWORD_MONTHS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// AP-4: from when the password expiring at `expires_at` can be postponed.
pub fn postpone_available_from(expires_at: DateTime<Utc>) -> DateTime<Utc> {
    expires_at - Duration::days(POSTPONE_WINDOW_DAYS)
}

/// AP-2: a scope, as the API writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Mailbox,
    Archive,
    Collaborator(uuid::Uuid),
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "mailbox" => Some(Scope::Mailbox),
            "archive" => Some(Scope::Archive),
            other => other
                .strip_prefix("collaborator:")
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
                .map(Scope::Collaborator),
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Scope::Mailbox => "mailbox".into(),
            Scope::Archive => "archive".into(),
            Scope::Collaborator(id) => format!("collaborator:{id}"),
        }
    }
}

fn scope_violation(message: impl Into<String>) -> AccountError {
    AccountError::Invalid(vec![Violation::new("AP-2.scope", Some("scope"), message)])
}

/// The scope as written in the state (`collaborator:<uuid>` in its canonical form).
fn parsed(scope: &str) -> Result<Scope, AccountError> {
    Scope::parse(scope)
        .ok_or_else(|| scope_violation("the scope is `mailbox`, `archive` or `collaborator:<id>`"))
}

fn mailbox(state: &Account) -> Result<&AccountOpened, AccountError> {
    let profile = opened(state)?;
    if profile.kind != AccountKind::Mailbox {
        return Err(AccountError::NotMailbox);
    }
    Ok(profile)
}

pub(super) fn set_mail_protocols(
    state: &Account,
    c: &SetMailProtocols,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    mailbox(state)?;
    let wanted = MailProtocolsSet {
        imap: c.imap,
        pop: c.pop,
        smtp: c.smtp,
    };
    // SEC-3: turning a protocol on opens the mailbox to mail programs: a fresh session, as
    // for app passwords; turning them off does not need one.
    let current = state.protocols.unwrap_or(wanted);
    let opens = (wanted.imap && !current.imap)
        || (wanted.pop && !current.pop)
        || (wanted.smtp && !current.smtp);
    ready_for_change(state, c.session_id, opens, ctx)?;
    if state.protocols == Some(wanted) {
        return Ok(Vec::new());
    }
    Ok(vec![AccountEvent::MailProtocolsSet(wanted)])
}

pub(super) fn generate(
    state: &Account,
    c: &GenerateAppPassword,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = mailbox(state)?;
    ready_for_change(state, c.session_id, true, ctx)?;
    let scope = parsed(&c.scope)?;
    match scope {
        Scope::Mailbox => {}
        Scope::Archive => {
            if !matches!(profile.plan, Some(Plan::Pro | Plan::Premium)) {
                return Err(scope_violation(
                    "only pro and premium mailboxes have a security archive",
                ));
            }
        }
        Scope::Collaborator(id) => {
            let ours = c.collaborator.as_ref().filter(|col| {
                col.account_id == id
                    && col.owner_id == Some(profile.account_id)
                    && matches!(
                        col.status,
                        Some(AccountStatus::Active | AccountStatus::Suspended)
                    )
            });
            let Some(collaborator) = ours else {
                return Err(scope_violation(
                    "no live collaborator of this mailbox has that id",
                ));
            };
            if !collaborator.mail_programs {
                return Err(scope_violation(
                    "the collaborator is not allowed to use mail programs (permission mail_programs)",
                ));
            }
        }
    }
    // AP-1.
    if state.two_factor.is_none() {
        return Err(AccountError::TwoFactorRequired);
    }
    if state.protocols.is_none_or(|p| !(p.imap || p.pop || p.smtp)) {
        return Err(AccountError::MailProtocolsOff);
    }
    let scope = scope.as_string();
    let live = state
        .app_passwords
        .get(&scope)
        .is_some_and(|p| p.is_live(ctx.now));
    match (live, c.replace) {
        (true, false) => return Err(AccountError::AppPasswordExists),
        (false, true) => return Err(AccountError::NoAppPassword),
        _ => {}
    }
    Ok(vec![AccountEvent::AppPasswordIssued(AppPasswordIssued {
        scope,
        password_hmac: c.password_hmac.clone(),
        expires_at: plus_months(ctx.now),
        replaced: live,
    })])
}

/// The scope's password, not deactivated.
fn existing<'a>(
    state: &'a Account,
    scope: &str,
) -> Result<(String, &'a super::super::state::AppPassword), AccountError> {
    let scope = parsed(scope)?.as_string();
    let password = state
        .app_passwords
        .get(&scope)
        .filter(|p| !p.deactivated)
        .ok_or(AccountError::NoAppPassword)?;
    Ok((scope, password))
}

pub(super) fn postpone(
    state: &Account,
    c: &ScopeCommand,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    mailbox(state)?;
    ready_for_change(state, c.session_id, true, ctx)?;
    let (scope, password) = existing(state, &c.scope)?;
    // AP-4: only before the expiry; an expired password is generated anew.
    if password.expires_at <= ctx.now {
        return Err(AccountError::AppPasswordExpired);
    }
    let from = postpone_available_from(password.expires_at);
    if ctx.now < from {
        return Err(AccountError::PostponeTooEarly { from });
    }
    Ok(vec![AccountEvent::AppPasswordPostponed(
        AppPasswordPostponed {
            scope,
            previous_expiry: password.expires_at,
            expires_at: plus_months(password.expires_at),
        },
    )])
}

pub(super) fn deactivate(
    state: &Account,
    c: &ScopeCommand,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    mailbox(state)?;
    ready_for_change(state, c.session_id, true, ctx)?;
    let (scope, _) = existing(state, &c.scope)?;
    Ok(vec![AccountEvent::AppPasswordDeactivated(
        AppPasswordDeactivated { scope },
    )])
}

/// AP-6: the scheduler's notice, given only while the password it was set for still stands
/// (not postponed, regenerated or deactivated since), and once.
pub(super) fn note_expiry(
    state: &Account,
    c: &NoteAppPasswordExpiry,
    _ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let due = state.app_passwords.get(&c.scope).is_some_and(|p| {
        !p.deactivated && p.expires_at == c.expires_at && !p.noticed.contains(&c.days_before)
    });
    if !due || state.status != AccountStatus::Active {
        return Ok(Vec::new());
    }
    Ok(vec![AccountEvent::AppPasswordExpiryNoticed(
        AppPasswordExpiryNoticed {
            scope: c.scope.clone(),
            expires_at: c.expires_at,
            days_before: c.days_before,
        },
    )])
}
