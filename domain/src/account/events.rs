//! Events of the account stream. Each is a fact an auditor can read; none holds a secret in the
//! clear (hashes only). Every type has a JSON Schema per version in `schemas/events/<Type>.v<N>.json`; older
//! versions are lifted on read by the upcasters in [`super::upcast`].

use crate::notice::Channel;
use crate::otp::OtpPurpose;
use crate::recovery::RecoveryMethod;
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
    /// AP-8: the password was right, the second factor's code was not.
    WrongCode,
    /// AP-8: a code already used (each code works once per account).
    CodeReplayed,
}

/// Where a login came from (AH-1): the holder's pages or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessChannel {
    Web,
    Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    Logout,
    PasswordChanged,
    /// RC-6: a recovery ends every session.
    PasswordRecovered,
    /// RC-7: an operator reset the password.
    OperatorReset,
    /// CO-2: the owning holder reset a collaborator's password.
    CollaboratorReset,
    /// CO-4: the collaborator was deactivated.
    Deactivated,
    /// SC-6: the holder suspended the identity.
    Suspended,
    /// SC-6: an operator revoked the account.
    Revoked,
    /// SC-3: an operator recorded a new contact mobile (the old phone is lost, and a session
    /// on it must not go on).
    ContactMobileReplaced,
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
    RecoveryLinkIssued(RecoveryLinkIssued),
    OtpChallengeIssued(OtpChallengeIssued),
    OtpCheckFailed(OtpCheckFailed),
    OtpVerified(OtpVerified),
    ResetTokenIssued(ResetTokenIssued),
    SecurityAnswerFailed(SecurityAnswerFailed),
    SecurityQuestionLocked(SecurityQuestionLocked),
    SecurityQuestionUnlocked(SecurityQuestionUnlocked),
    PasswordRecovered(PasswordRecovered),
    RecoveryInfoConfirmed(RecoveryInfoConfirmed),
    LoginLockedOut(LoginLockedOut),
    LoginUnlocked(LoginUnlocked),
    ChecksLockedOut(ChecksLockedOut),
    ChecksUnlocked(ChecksUnlocked),
    MailProtocolsSet(MailProtocolsSet),
    TwoFactorEnrollmentStarted(TwoFactorEnrollmentStarted),
    TwoFactorEnabled(TwoFactorEnabled),
    TwoFactorDisabled(TwoFactorDisabled),
    TotpAccepted(TotpAccepted),
    TotpRejected(TotpRejected),
    AppPasswordIssued(AppPasswordIssued),
    AppPasswordPostponed(AppPasswordPostponed),
    AppPasswordDeactivated(AppPasswordDeactivated),
    AppPasswordExpiryNoticed(AppPasswordExpiryNoticed),
    CollaboratorLinkIssued(CollaboratorLinkIssued),
    CollaboratorPasswordSet(CollaboratorPasswordSet),
    CollaboratorReset(CollaboratorReset),
    CollaboratorDeactivated(CollaboratorDeactivated),
    AccountSuspended(AccountSuspended),
    SuspensionEnded(SuspensionEnded),
    AccountRevoked(AccountRevoked),
    LanguageChanged(LanguageChanged),
    RecoveryContactVerified(RecoveryContactVerified),
    IdentityDocumentRecorded(IdentityDocumentRecorded),
    DocumentExpiryNoticed(DocumentExpiryNoticed),
    IdentityIssued(IdentityIssued),
    ContactEmailChanged(ContactEmailChanged),
    ContactMobileChanged(ContactMobileChanged),
    RecoveryContactChanged(RecoveryContactChanged),
    PasswordExpirySet(PasswordExpirySet),
    PasswordExpiryNoticed(PasswordExpiryNoticed),
    PasswordExpired(PasswordExpired),
    InactivityDeadlineSet(InactivityDeadlineSet),
    InactivityWarned(InactivityWarned),
    RevokedForInactivity(RevokedForInactivity),
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
    "RecoveryLinkIssued",
    "OtpChallengeIssued",
    "OtpCheckFailed",
    "OtpVerified",
    "ResetTokenIssued",
    "SecurityAnswerFailed",
    "SecurityQuestionLocked",
    "SecurityQuestionUnlocked",
    "PasswordRecovered",
    "RecoveryInfoConfirmed",
    "LoginLockedOut",
    "LoginUnlocked",
    "ChecksLockedOut",
    "ChecksUnlocked",
    "MailProtocolsSet",
    "TwoFactorEnrollmentStarted",
    "TwoFactorEnabled",
    "TwoFactorDisabled",
    "TotpAccepted",
    "TotpRejected",
    "AppPasswordIssued",
    "AppPasswordPostponed",
    "AppPasswordDeactivated",
    "AppPasswordExpiryNoticed",
    "CollaboratorLinkIssued",
    "CollaboratorPasswordSet",
    "CollaboratorReset",
    "CollaboratorDeactivated",
    "AccountSuspended",
    "SuspensionEnded",
    "AccountRevoked",
    "LanguageChanged",
    "RecoveryContactVerified",
    "IdentityDocumentRecorded",
    "DocumentExpiryNoticed",
    "IdentityIssued",
    "ContactEmailChanged",
    "ContactMobileChanged",
    "RecoveryContactChanged",
    "PasswordExpirySet",
    "PasswordExpiryNoticed",
    "PasswordExpired",
    "InactivityDeadlineSet",
    "InactivityWarned",
    "RevokedForInactivity",
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
    /// CO-1: what a collaborator may do (empty for other kinds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
}

/// CO-1: what the holder lets a collaborator do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read the mailbox's messages.
    ReadMail,
    /// Send from the mailbox.
    SendMail,
    /// Use the mailbox from mail programs (IMAP, POP, SMTP).
    MailPrograms,
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
    /// v2: always present, `null` when the address is not known (v1 left it out).
    pub client_ip: Option<String>,
    /// v2: the pages or the API (every v1 login came through the API).
    pub channel: AccessChannel,
    pub required_actions: Vec<RequiredAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginFailed {
    pub reason: LoginFailure,
    /// v2: always present, `null` when the address is not known (v1 left it out).
    pub client_ip: Option<String>,
    /// v2: the pages or the API (every v1 failure came through the API).
    pub channel: AccessChannel,
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

/// RC-2: a recovery link mailed to `to`; the token itself travels only sealed, under
/// [`recovery_link_context`]. A newer link supersedes this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryLinkIssued {
    pub recovery_id: Uuid,
    pub to: String,
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub sealed_token: Sealed,
}

pub fn recovery_link_context(account_id: Uuid, recovery_id: Uuid) -> String {
    format!("custode/recovery-link/{account_id}/{recovery_id}")
}

/// A one-time code sent to `to` over `channel` (RC-3, PW-4, SC). The code is kept as a keyed
/// hash; it travels only sealed, under [`otp_context`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtpChallengeIssued {
    pub challenge_id: Uuid,
    pub purpose: OtpPurpose,
    pub channel: Channel,
    pub to: String,
    pub code_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<Uuid>,
    pub sealed_code: Sealed,
}

pub fn otp_context(account_id: Uuid, challenge_id: Uuid) -> String {
    format!("custode/otp/{account_id}/{challenge_id}")
}

/// A wrong code: one attempt spent (SEC-6: counted in the aggregate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtpCheckFailed {
    pub challenge_id: Uuid,
    pub attempts_left: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

/// A right code: the challenge is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtpVerified {
    pub challenge_id: Uuid,
}

/// A reset token, yielded by a right SMS code or answer (RC-3, RC-4); consumed by RC-5. A newer
/// one supersedes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetTokenIssued {
    pub recovery_id: Uuid,
    pub method: RecoveryMethod,
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
}

/// RC-4: a wrong answer to the security question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityAnswerFailed {
    pub recovery_id: Uuid,
    /// Wrong answers left before the lock (0: this one locked it).
    pub attempts_left: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

/// RC-4, SEC-6: too many wrong answers; the question (never the account) is locked until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityQuestionLocked {
    pub until: DateTime<Utc>,
}

/// SEC-6: the lock has ended (recorded when the question is next used after `until`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityQuestionUnlocked {
    pub locked_until: DateTime<Utc>,
}

/// RC-5, RC-6: the password was chosen anew through a recovery; the token is consumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordRecovered {
    pub recovery_id: Uuid,
    pub method: RecoveryMethod,
    pub password_hash: PasswordHash,
}

/// RC-6: the holder confirmed the recovery information after a recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryInfoConfirmed {}

/// SEC-2, SEC-6: too many wrong passwords in a row; logins are refused until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginLockedOut {
    pub until: DateTime<Utc>,
    pub failures: u32,
}

/// SEC-6: the login lockout has ended (recorded at the next login after `locked_until`, or
/// when a recovery proves the holder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginUnlocked {
    pub locked_until: DateTime<Utc>,
}

/// SEC-2, SEC-6: too many wrong codes or answers in a row, whatever the recovery or the
/// challenge; code and answer checks of the account are refused until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecksLockedOut {
    pub until: DateTime<Utc>,
    pub failures: u32,
}

/// SEC-6: the lock of code and answer checks has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecksUnlocked {
    pub locked_until: DateTime<Utc>,
}

/// ACC-5: the mail protocols as they stand after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailProtocolsSet {
    pub imap: bool,
    pub pop: bool,
    pub smtp: bool,
}

/// AP-8: where the second factor's codes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwoFactorChannel {
    /// An authenticator app holding the TOTP secret of the QR code.
    App,
    /// A code by SMS to the contact mobile at each login.
    Sms,
    /// An OATH-TOTP hardware token registered by an operator.
    HardwareToken,
}

impl TwoFactorChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            TwoFactorChannel::App => "app",
            TwoFactorChannel::Sms => "sms",
            TwoFactorChannel::HardwareToken => "hardware_token",
        }
    }
}

/// AP-8: a TOTP secret was drawn for the authenticator app; two-step verification is active
/// only once a code from it is confirmed. The secret is kept only sealed under the service's
/// long-lived key (SEC-7), never in the clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoFactorEnrollmentStarted {
    pub channel: TwoFactorChannel,
    /// The app's TOTP secret (none for SMS, whose first code is an `OtpChallengeIssued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<Sealed>,
}

/// AP-8: two-step verification is on. For the app and a hardware token, the sealed TOTP
/// secret (or token seed) the codes are checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoFactorEnabled {
    pub channel: TwoFactorChannel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<Sealed>,
    /// The hardware token's serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// AP-8: two-step verification is off (confirmed with a current code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoFactorDisabled {
    pub channel: TwoFactorChannel,
}

/// What a second-factor code was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeUse {
    Login,
    Reauthentication,
    TwoFactorOn,
    TwoFactorOff,
}

/// AP-8: a TOTP code was accepted; `step` (unix time / 30) can never be accepted again, nor
/// any step before it (each code once per account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotpAccepted {
    pub step: u64,
    #[serde(rename = "use")]
    pub used_for: CodeUse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeRejection {
    Wrong,
    Replayed,
}

/// AP-8, SEC-2: a wrong or replayed code outside a login (confirming or turning off two-step
/// verification); counted with wrong codes and answers in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotpRejected {
    pub reason: CodeRejection,
    #[serde(rename = "use")]
    pub used_for: CodeUse,
    pub client_ip: Option<String>,
}

/// AP-3: a password for mail programs, generated by the service (≥ 80 bits), shown once. Kept
/// only as HMAC-SHA256 under the service's pepper (hex). `replaced`: it replaced a live one
/// (AP-5, regenerate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPasswordIssued {
    pub scope: String,
    pub password_hmac: String,
    pub expires_at: DateTime<Utc>,
    pub replaced: bool,
}

/// AP-4: the same password, valid 3 more months from its previous expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPasswordPostponed {
    pub scope: String,
    pub previous_expiry: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// AP-5: mail programs lose access with this scope's password; web login goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPasswordDeactivated {
    pub scope: String,
}

/// AP-6: the holder was told that the scope's password expires in `days_before` days (0: it
/// has expired), by mail and in the page's notification list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPasswordExpiryNoticed {
    pub scope: String,
    pub expires_at: DateTime<Utc>,
    pub days_before: u32,
}

/// Why a collaborator's link was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkReason {
    /// CO-1: the first password.
    Created,
    /// CO-2: after the holder's reset.
    Reset,
    /// CO-3: sent again; the earlier link no longer works.
    Resent,
}

/// CO-1..3: a single-use link to create the collaborator's password, mailed to the reference
/// email; the token travels only sealed, under [`collaborator_link_context`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollaboratorLinkIssued {
    pub reason: LinkReason,
    pub to: String,
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub sealed_token: Sealed,
}

pub fn collaborator_link_context(account_id: Uuid, token_hash: &TokenHash) -> String {
    format!(
        "custode/collaborator-link/{account_id}/{}",
        token_hash.as_str()
    )
}

/// CO-1, CO-2: the collaborator chose its password through the link; the account is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollaboratorPasswordSet {
    pub password_hash: PasswordHash,
    /// CO-5: after a reset, a collaborator using mail programs is told to update them.
    pub after_reset: bool,
}

/// CO-2: the holder reset the password: the old one stops at once and the collaborator is
/// suspended until it sets a new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollaboratorReset {}

/// CO-4: deactivated by the holder; final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollaboratorDeactivated {}

/// SC-6: the holder suspended its identity for `days` days, confirmed by an SMS code; logins
/// are refused until `until`, when the scheduler (or the first login after it) ends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSuspended {
    pub days: u32,
    pub until: DateTime<Utc>,
}

/// SC-6: a suspension's period is over; the account is active again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuspensionEnded {
    pub suspended_until: DateTime<Utc>,
}

/// SC-2: the kind of an identity document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    IdentityCard,
    Passport,
    DrivingLicence,
}

/// SC-2: the holder recorded the identity document on file (a new one replaces the old).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityDocumentRecorded {
    pub kind: DocumentKind,
    pub number: String,
    pub expires_on: chrono::NaiveDate,
}

/// SC-2: the holder was told, `days_before` days ahead, that the document expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentExpiryNoticed {
    pub expires_on: chrono::NaiveDate,
    pub days_before: u32,
}

/// SC-4: the holder proved it reads a recovery contact with the code sent there: the page
/// shows it Verified until the contact changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryContactVerified {
    pub method: crate::recovery::RecoveryMethod,
    pub contact: String,
}

/// SC-7: the holder chose the language of every later notice and page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageChanged {
    pub language: Language,
}

/// SC-6: an operator revoked the account, on the signed request `request_reference`; final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRevoked {
    pub request_reference: String,
}

/// SC-1: an identity's SPID code and the dates of its issue and (when the identity provider
/// gave one) its expiry, read-only for the holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityIssued {
    pub spid_code: String,
    pub issued_on: chrono::NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<chrono::NaiveDate>,
}

/// SC-3: the contact email changed (a fresh session); the old address is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactEmailChanged {
    pub email: String,
    /// When it changed (SC-3 limits changes a day).
    pub at: DateTime<Utc>,
}

/// SC-3: the contact mobile changed, confirmed by a code sent to the old number and one sent
/// to the new; or (v2) recorded by an operator after the signed form `form_reference`, when the
/// old number is lost. Then the recovery mobile, when it was that number, becomes
/// `recovery_mobile` (the new one, not yet verified).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactMobileChanged {
    pub mobile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_mobile: Option<String>,
}

/// SC-5: a recovery contact changed through its flow; it cannot change again before
/// `cooldown_until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryContactChanged {
    pub method: crate::recovery::RecoveryMethod,
    pub cooldown_until: DateTime<Utc>,
}

/// PW-6: the password just set expires at `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordExpirySet {
    pub expires_at: DateTime<Utc>,
}

/// PW-6: the holder was told, `days_before` days ahead, that the password expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordExpiryNoticed {
    pub expires_at: DateTime<Utc>,
    pub days_before: u32,
}

/// PW-6: the password expired: it still logs in, with `change_password` the only thing allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordExpired {
    pub expires_at: DateTime<Utc>,
}

/// SC-8: unused until `revokes_at`, the identity is revoked then; the scheduler looks again at
/// `next_check_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InactivityDeadlineSet {
    pub revokes_at: DateTime<Utc>,
    pub next_check_at: DateTime<Utc>,
}

/// SC-8: the holder was warned, `days_before` days ahead, that the unused identity is revoked
/// at `revokes_at` unless used; the scheduler looks again at `next_check_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InactivityWarned {
    pub revokes_at: DateTime<Utc>,
    pub days_before: u32,
    pub next_check_at: DateTime<Utc>,
}

/// SC-8: revoked by the scheduler, unused until the deadline `revokes_at` passed; final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokedForInactivity {
    pub revokes_at: DateTime<Utc>,
}
