//! AH-1, AP-7: access records that are not account decisions: each check of a password for
//! mail programs by a mail server. One stream per account (`access-<account uuid>`), apart from
//! the account's own, so that however many pile up an account's commands never read them
//! (AH-3); appended at the stream's end without a version check, since a record decides
//! nothing.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn stream_for(account_id: Uuid) -> String {
    format!("access-{account_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum AccessEvent {
    AppPasswordChecked(AppPasswordChecked),
}

pub const ACCESS_EVENT_TYPES: &[&str] = &["AppPasswordChecked"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

/// Why a check was denied (AP-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    WrongPassword,
    NoAppPassword,
    Expired,
    ProtocolDisabled,
    AccountInactive,
    RateLimited,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::WrongPassword => "wrong_password",
            DenyReason::NoAppPassword => "no_app_password",
            DenyReason::Expired => "expired",
            DenyReason::ProtocolDisabled => "protocol_disabled",
            DenyReason::AccountInactive => "account_inactive",
            DenyReason::RateLimited => "rate_limited",
        }
    }
}

/// AP-7, AH-1: a mail server checked an app password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPasswordChecked {
    pub user_id: String,
    pub scope: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    pub client_ip: Option<String>,
}

/// The mail protocol a client logs in with (AP-7), when the mail server says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Imap,
    Pop,
    Smtp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop => "pop",
            Protocol::Smtp => "smtp",
        }
    }
}

/// AP-7: what a check is decided on, as the read model has it: the account the user id names
/// and the mailbox whose protocols and app passwords apply (the account itself, or a
/// collaborator's owner).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckFacts {
    pub account_id: Uuid,
    pub kind: crate::account::AccountKind,
    pub status: crate::account::AccountStatus,
    pub mailbox_status: crate::account::AccountStatus,
    pub protocols: crate::account::MailProtocolsSet,
    /// CO-1: a collaborator allowed on mail programs.
    pub mail_programs: bool,
    /// The scope's app password: its keyed hash and expiry.
    pub password: Option<(String, chrono::DateTime<chrono::Utc>)>,
}

/// AP-7: allow, or why not. `scope` is canonical (`Scope::as_string`); `presented_hmac` is the
/// keyed hash of the password the client gave, compared in constant time.
pub fn decide_check(
    facts: &CheckFacts,
    scope: crate::account::Scope,
    protocol: Option<Protocol>,
    presented_hmac: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), DenyReason> {
    use crate::account::{AccountKind, AccountStatus, Scope};
    // A collaborator's user id checks its own scope; a mailbox's any but a collaborator's.
    let own_scope = match (facts.kind, scope) {
        (AccountKind::Collaborator, Scope::Collaborator(id)) => id == facts.account_id,
        (AccountKind::Mailbox, Scope::Mailbox | Scope::Archive) => true,
        _ => false,
    };
    if !own_scope {
        return Err(DenyReason::NoAppPassword);
    }
    let collaborator = facts.kind == AccountKind::Collaborator;
    if facts.status != AccountStatus::Active
        || facts.mailbox_status != AccountStatus::Active
        || (collaborator && !facts.mail_programs)
    {
        return Err(DenyReason::AccountInactive);
    }
    let p = facts.protocols;
    let enabled = match protocol {
        Some(Protocol::Imap) => p.imap,
        Some(Protocol::Pop) => p.pop,
        Some(Protocol::Smtp) => p.smtp,
        None => p.imap || p.pop || p.smtp,
    };
    if !enabled {
        return Err(DenyReason::ProtocolDisabled);
    }
    let Some((stored, expires_at)) = &facts.password else {
        return Err(DenyReason::NoAppPassword);
    };
    if !crate::otp::constant_time_eq(stored, presented_hmac) {
        return Err(DenyReason::WrongPassword);
    }
    if *expires_at <= now {
        return Err(DenyReason::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::account::{AccountKind, AccountStatus, MailProtocolsSet, Scope};
    use chrono::{Duration, TimeZone, Utc};

    const MAILBOX: Uuid = Uuid::from_u128(1);
    const COLLABORATOR: Uuid = Uuid::from_u128(2);

    fn now() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap()
    }

    fn mailbox() -> CheckFacts {
        CheckFacts {
            account_id: MAILBOX,
            kind: AccountKind::Mailbox,
            status: AccountStatus::Active,
            mailbox_status: AccountStatus::Active,
            protocols: MailProtocolsSet {
                imap: true,
                pop: false,
                smtp: true,
            },
            mail_programs: false,
            password: Some(("aa".repeat(32), now() + Duration::days(30))),
        }
    }

    fn check(
        facts: &CheckFacts,
        scope: Scope,
        protocol: Option<Protocol>,
        hmac: &str,
    ) -> Result<(), DenyReason> {
        decide_check(facts, scope, protocol, hmac, now())
    }

    #[test]
    fn a_live_password_for_the_scope_with_a_protocol_on_is_allowed_ap_7() {
        let right = "aa".repeat(32);
        assert_eq!(check(&mailbox(), Scope::Mailbox, None, &right), Ok(()));
        assert_eq!(
            check(&mailbox(), Scope::Mailbox, Some(Protocol::Imap), &right),
            Ok(())
        );
        assert_eq!(
            check(&mailbox(), Scope::Mailbox, Some(Protocol::Pop), &right),
            Err(DenyReason::ProtocolDisabled)
        );
        assert_eq!(
            check(&mailbox(), Scope::Mailbox, None, &"ab".repeat(32)),
            Err(DenyReason::WrongPassword)
        );
    }

    #[test]
    fn expired_absent_or_inactive_is_denied_with_its_reason_ap_7() {
        let right = "aa".repeat(32);
        let mut expired = mailbox();
        expired.password = Some((right.clone(), now()));
        assert_eq!(
            check(&expired, Scope::Mailbox, None, &right),
            Err(DenyReason::Expired)
        );
        let mut none = mailbox();
        none.password = None;
        assert_eq!(
            check(&none, Scope::Archive, None, &right),
            Err(DenyReason::NoAppPassword)
        );
        let mut suspended = mailbox();
        suspended.status = AccountStatus::Suspended;
        assert_eq!(
            check(&suspended, Scope::Mailbox, None, &right),
            Err(DenyReason::AccountInactive)
        );
        let mut off = mailbox();
        off.protocols = MailProtocolsSet {
            imap: false,
            pop: false,
            smtp: false,
        };
        assert_eq!(
            check(&off, Scope::Mailbox, None, &right),
            Err(DenyReason::ProtocolDisabled)
        );
    }

    #[test]
    fn a_collaborator_checks_only_its_own_scope_and_needs_mail_programs_co_1() {
        let right = "aa".repeat(32);
        let collaborator = CheckFacts {
            account_id: COLLABORATOR,
            kind: AccountKind::Collaborator,
            mail_programs: true,
            ..mailbox()
        };
        assert_eq!(
            check(
                &collaborator,
                Scope::Collaborator(COLLABORATOR),
                None,
                &right
            ),
            Ok(())
        );
        assert_eq!(
            check(&collaborator, Scope::Mailbox, None, &right),
            Err(DenyReason::NoAppPassword)
        );
        assert_eq!(
            check(&collaborator, Scope::Collaborator(MAILBOX), None, &right),
            Err(DenyReason::NoAppPassword)
        );
        // A mailbox's user id cannot check a collaborator's scope.
        assert_eq!(
            check(&mailbox(), Scope::Collaborator(COLLABORATOR), None, &right),
            Err(DenyReason::NoAppPassword)
        );
        let without = CheckFacts {
            mail_programs: false,
            ..collaborator.clone()
        };
        assert_eq!(
            check(&without, Scope::Collaborator(COLLABORATOR), None, &right),
            Err(DenyReason::AccountInactive)
        );
        let owner_suspended = CheckFacts {
            mailbox_status: AccountStatus::Suspended,
            ..collaborator
        };
        assert_eq!(
            check(
                &owner_suspended,
                Scope::Collaborator(COLLABORATOR),
                None,
                &right
            ),
            Err(DenyReason::AccountInactive)
        );
    }
}
