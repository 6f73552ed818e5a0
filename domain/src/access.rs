//! AH-1, AP-7: access records that are not account decisions: each check of a password for
//! mail programs by a mail server, and each access to a service provider the identity front end
//! reports. One stream per account (`access-<account uuid>`), apart from the account's own, so
//! that however many pile up an account's commands never read them (AH-3); appended at the
//! stream's end without a version check, since a record decides nothing. [`history_item`] says
//! what each record, and each login in the account's own stream, shows in the history (AH-2).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn stream_for(account_id: Uuid) -> String {
    format!("access-{account_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum AccessEvent {
    AppPasswordChecked(AppPasswordChecked),
    ServiceAccessReported(ServiceAccessReported),
}

pub const ACCESS_EVENT_TYPES: &[&str] = &["AppPasswordChecked", "ServiceAccessReported"];

/// AH-1: the identity front end reported an access to a service provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAccessReported {
    pub service: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub client_ip: Option<String>,
    /// When the access happened, as the front end says (the envelope says when it was recorded).
    pub at: chrono::DateTime<chrono::Utc>,
}

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

/// AH-2: what an item of the history is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Login,
    AppPassword,
    ServiceAccess,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Login => "login",
            ItemKind::AppPassword => "app_password",
            ItemKind::ServiceAccess => "service_access",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "login" => Some(ItemKind::Login),
            "app_password" => Some(ItemKind::AppPassword),
            "service_access" => Some(ItemKind::ServiceAccess),
            _ => None,
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

/// AH-2: one item of an account's access history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub at: chrono::DateTime<chrono::Utc>,
    pub kind: ItemKind,
    pub service: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub client_ip: Option<String>,
}

crate::event_group! {
    /// The events of an account's own stream the access history shows: its logins.
    pub enum LoginRecord {
        SessionStarted,
        LoginFailed,
    }
}
use crate::account::{LoginFailed, SessionStarted};

/// AH-1: the history item of a login in the account's own stream (recorded at `recorded_at`).
/// A failed step-up inside a session is a login attempt too: it tried the password.
pub fn login_item(event: &LoginRecord, recorded_at: chrono::DateTime<chrono::Utc>) -> HistoryItem {
    use crate::account::{AccessChannel, LoginFailure};
    let service = |channel: AccessChannel| match channel {
        AccessChannel::Web => "web",
        AccessChannel::Api => "api",
    };
    match event {
        LoginRecord::SessionStarted(e) => HistoryItem {
            at: recorded_at,
            kind: ItemKind::Login,
            service: service(e.channel).into(),
            outcome: Outcome::Success,
            reason: None,
            client_ip: e.client_ip.clone(),
        },
        LoginRecord::LoginFailed(e) => HistoryItem {
            at: recorded_at,
            kind: ItemKind::Login,
            service: service(e.channel).into(),
            outcome: Outcome::Failure,
            reason: Some(
                match e.reason {
                    LoginFailure::WrongPassword => "wrong_password",
                    LoginFailure::WrongCode => "wrong_code",
                    LoginFailure::CodeReplayed => "code_replayed",
                }
                .into(),
            ),
            client_ip: e.client_ip.clone(),
        },
    }
}

/// AH-1: the history item of an access record (recorded at `recorded_at`). A check shows the
/// scope it was for and, when the mail server said, the protocol (`mailbox/imap`).
pub fn history_item(event: AccessEvent, recorded_at: chrono::DateTime<chrono::Utc>) -> HistoryItem {
    match event {
        AccessEvent::AppPasswordChecked(e) => HistoryItem {
            at: recorded_at,
            kind: ItemKind::AppPassword,
            service: match e.protocol {
                Some(p) => format!("{}/{}", e.scope, p.as_str()),
                None => e.scope,
            },
            outcome: e.outcome,
            reason: e.reason.map(|r| r.as_str().to_string()),
            client_ip: e.client_ip,
        },
        AccessEvent::ServiceAccessReported(e) => HistoryItem {
            at: e.at,
            kind: ItemKind::ServiceAccess,
            service: e.service,
            outcome: e.outcome,
            reason: e.reason,
            client_ip: e.client_ip,
        },
    }
}

/// The longest service name or reason a report may carry.
pub const REPORT_TEXT_MAX: usize = 200;
/// How far ahead of the service's clock a reported access may be (the front end's clock skew).
pub const REPORT_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// AH-1: what is wrong with a reported access, rule by rule; empty when it can be recorded.
/// `oldest` is the retention's edge: an older access would be dropped at once, so it is refused.
pub fn report_violations(
    report: &ServiceAccessReported,
    now: chrono::DateTime<chrono::Utc>,
    oldest: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<crate::Violation> {
    use crate::Violation;
    let text_ok = |s: &str| {
        !s.trim().is_empty()
            && s.chars().count() <= REPORT_TEXT_MAX
            && !s.chars().any(crate::violation::hidden_char)
    };
    let mut errors = Vec::new();
    if !text_ok(&report.service) {
        errors.push(Violation::new(
            "AH-1.service",
            Some("service"),
            "the service must have 1 to 200 characters, none of them control or direction characters",
        ));
    }
    match &report.reason {
        Some(reason) if !text_ok(reason) => errors.push(Violation::new(
            "AH-1.reason",
            Some("reason"),
            "the reason must have 1 to 200 characters, none of them control or direction characters",
        )),
        Some(_) if report.outcome == Outcome::Success => errors.push(Violation::new(
            "AH-1.reason",
            Some("reason"),
            "a reason goes only with a failure",
        )),
        _ => {}
    }
    if report.at > now + REPORT_SKEW {
        errors.push(Violation::new(
            "AH-1.at",
            Some("at"),
            "the access is in the future",
        ));
    }
    if oldest.is_some_and(|oldest| report.at < oldest) {
        errors.push(Violation::new(
            "AH-1.at",
            Some("at"),
            "the access is older than the history keeps (history.retention_days)",
        ));
    }
    errors
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

    fn report(at: chrono::DateTime<Utc>) -> ServiceAccessReported {
        ServiceAccessReported {
            service: "Agenzia delle Entrate".into(),
            outcome: Outcome::Failure,
            reason: Some("wrong_password".into()),
            client_ip: Some("203.0.113.9".into()),
            at,
        }
    }

    #[test]
    fn every_access_record_and_login_becomes_one_history_item_ah_1() {
        let recorded = now() + Duration::seconds(3);
        let check = AccessEvent::AppPasswordChecked(AppPasswordChecked {
            user_id: "m@pec.it".into(),
            scope: "mailbox".into(),
            outcome: Outcome::Failure,
            reason: Some(DenyReason::WrongPassword),
            protocol: Some(Protocol::Imap),
            client_ip: Some("198.51.100.7".into()),
        });
        let item = history_item(check, recorded);
        assert_eq!(
            (
                item.kind,
                item.service.as_str(),
                item.outcome,
                item.reason.as_deref(),
                item.at
            ),
            (
                ItemKind::AppPassword,
                "mailbox/imap",
                Outcome::Failure,
                Some("wrong_password"),
                recorded
            )
        );
        // A reported access keeps the time it happened, not the time it was recorded.
        let reported = history_item(AccessEvent::ServiceAccessReported(report(now())), recorded);
        assert_eq!(
            (reported.kind, reported.at),
            (ItemKind::ServiceAccess, now())
        );
        let failed = LoginRecord::LoginFailed(crate::account::LoginFailed {
            reason: crate::account::LoginFailure::WrongCode,
            client_ip: None,
            channel: crate::account::AccessChannel::Web,
            session_id: None,
        });
        let login = login_item(&failed, recorded);
        assert_eq!(
            (
                login.kind,
                login.service.as_str(),
                login.outcome,
                login.reason.as_deref()
            ),
            (ItemKind::Login, "web", Outcome::Failure, Some("wrong_code"))
        );
    }

    #[test]
    fn a_report_names_each_broken_rule_ah_1() {
        assert!(report_violations(&report(now()), now(), None).is_empty());
        let rules = |r: &ServiceAccessReported, oldest| {
            report_violations(r, now(), oldest)
                .into_iter()
                .map(|v| v.rule)
                .collect::<Vec<_>>()
        };
        for hidden in [
            "\u{061C}",
            "\u{2028}",
            "\u{FEFF}",
            "\u{200B}",
            "\u{00AD}",
            "\u{E0041}",
        ] {
            let r = ServiceAccessReported {
                service: format!("IN{hidden}PS"),
                ..report(now())
            };
            assert_eq!(rules(&r, None), ["AH-1.service"], "{hidden:?}");
        }
        let mut bad = report(now() + Duration::minutes(6));
        bad.service = "INPS\u{202E}".into();
        bad.outcome = Outcome::Success;
        assert_eq!(
            rules(&bad, None),
            ["AH-1.service", "AH-1.reason", "AH-1.at"]
        );
        // Within the front end's clock skew, and at the retention's edge, it is fine.
        assert!(rules(&report(now() + Duration::minutes(4)), Some(now())).is_empty());
        assert_eq!(
            rules(&report(now() - Duration::seconds(1)), Some(now())),
            ["AH-1.at"]
        );
        let long = ServiceAccessReported {
            service: "x".repeat(REPORT_TEXT_MAX + 1),
            ..report(now())
        };
        assert_eq!(rules(&long, None), ["AH-1.service"]);
    }
}
