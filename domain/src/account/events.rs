//! Events of the account stream. Each is a fact an auditor can read; none holds a secret in the
//! clear (hashes only). Every type has a JSON Schema in `schemas/events/<Type>.v1.json`.

use crate::secret::{PasswordHash, Sealed, TokenHash};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Mailbox,
    Identity,
    Collaborator,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Mailbox => "mailbox",
            AccountKind::Identity => "identity",
            AccountKind::Collaborator => "collaborator",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Standard,
    Pro,
    Premium,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    #[default]
    It,
    En,
}

/// ACC-4's states. Only `active` is reachable so far; the others arrive with suspension (SC-6),
/// revocation and collaborator deactivation (CO-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    #[default]
    Active,
    Suspended,
    Revoked,
    Deactivated,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Revoked => "revoked",
            AccountStatus::Deactivated => "deactivated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequiredAction {
    ChangePassword,
    SetRecoveryInfo,
    ConfirmRecoveryInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemporaryPasswordReason {
    Opening,
    OperatorReset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginFailure {
    WrongPassword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    Logout,
    PasswordChanged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum AccountEvent {
    AccountOpened(AccountOpened),
    TemporaryPasswordIssued(TemporaryPasswordIssued),
    PasswordImported(PasswordImported),
    PasswordChanged(PasswordChanged),
    RecoveryInfoSet(RecoveryInfoSet),
    SessionStarted(SessionStarted),
    LoginFailed(LoginFailed),
    SessionReauthenticated(SessionReauthenticated),
    SessionsEnded(SessionsEnded),
}

/// Every account event type, for the schema coverage test and the projections' filters.
pub const ACCOUNT_EVENT_TYPES: &[&str] = &[
    "AccountOpened",
    "TemporaryPasswordIssued",
    "PasswordImported",
    "PasswordChanged",
    "RecoveryInfoSet",
    "SessionStarted",
    "LoginFailed",
    "SessionReauthenticated",
    "SessionsEnded",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountOpened {
    pub account_id: Uuid,
    pub kind: AccountKind,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fiscal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_mobile: Option<String>,
    pub language: Language,
    /// ACC-3: arrived from another system with its own password.
    pub migrated: bool,
}

/// ACC-2: temporary credentials; the clear password is shown once in the answer and travels
/// to the holder only sealed with the delivery key (SPEC: envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemporaryPasswordIssued {
    pub password_hash: PasswordHash,
    pub reason: TemporaryPasswordReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_reference: Option<String>,
    /// For the mailer: the password sealed under the context [`temporary_password_context`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_password: Option<Sealed>,
}

/// The context a temporary password of `account_id` is sealed under.
pub fn temporary_password_context(account_id: Uuid) -> String {
    format!("custode/temporary-password/{account_id}")
}

/// ACC-3: the password chosen at migration, imported as a PHC hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordImported {
    pub password_hash: PasswordHash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordChanged {
    pub password_hash: PasswordHash,
}

/// The recovery information as it stands after the change (RI-1..3). Contacts are kept in the
/// clear (they are not secrets; exports mask them); the answer only as a hash of its normalised
/// form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryInfoSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_answer_hash: Option<PasswordHash>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStarted {
    pub session_id: Uuid,
    pub token_hash: TokenHash,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Until when the session counts as fresh for sensitive changes (SEC-3 step-up).
    pub fresh_until: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    pub required_actions: Vec<RequiredAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginFailed {
    pub reason: LoginFailure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// Set when the failure was a step-up (re-authentication) inside a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionReauthenticated {
    pub session_id: Uuid,
    pub fresh_until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionsEnded {
    pub session_ids: Vec<Uuid>,
    pub reason: SessionEndReason,
}
