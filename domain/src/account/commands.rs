//! Commands of the account aggregate. Fresh values (ids, token hashes, the temporary password)
//! are drawn by the handler and arrive inside the command; time, settings and the hasher
//! arrive in [`Ctx`](crate::decider::Ctx).

use super::events::*;
use crate::otp::OtpPurpose;
use crate::secret::{PasswordHash, Sealed, Secret, TokenHash};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open(OpenAccount),
    Login(Login),
    Reauthenticate(Reauthenticate),
    Logout(Logout),
    ChangePassword(ChangePassword),
    SetRecoveryInfo(SetRecoveryInfo),
    SendRecoveryLink(SendRecoveryLink),
    SendRecoveryCode(SendRecoveryCode),
    VerifyRecoveryCode(VerifyRecoveryCode),
    AnswerSecurityQuestion(AnswerSecurityQuestion),
    CompleteRecovery(CompleteRecovery),
    OperatorReset(OperatorReset),
    RequestOtp(RequestOtp),
    /// SEC-6, from the scheduler: record the end of every lock whose time has passed.
    EndLocks,
    SetMailProtocols(SetMailProtocols),
    StartTwoFactor(StartTwoFactor),
    ConfirmTwoFactor(ConfirmTwoFactor),
    BindHardwareToken(BindHardwareToken),
    DisableTwoFactor(DisableTwoFactor),
    GenerateAppPassword(GenerateAppPassword),
    PostponeAppPassword(ScopeCommand),
    DeactivateAppPassword(ScopeCommand),
    /// AP-6, from the scheduler.
    NoteAppPasswordExpiry(NoteAppPasswordExpiry),
    ResetCollaborator(CollaboratorLink),
    ResendCollaboratorLink(CollaboratorLink),
    DeactivateCollaborator(OwnerAct),
    SetCollaboratorPassword(SetCollaboratorPassword),
    /// SC-6: the holder suspends its identity.
    Suspend(Suspend),
    /// SC-6: an operator revokes the account.
    Revoke(Revoke),
    /// SC-7: the holder's language.
    SetLanguage(SetLanguage),
    /// SC-4: the code sent to a recovery contact, proving it is read.
    VerifyRecoveryContact(VerifyRecoveryContact),
    /// SC-2: a new identity document.
    RecordDocument(RecordDocument),
    /// SC-2, from the scheduler.
    NoteDocumentExpiry(NoteDocumentExpiry),
    /// SC-3: a new contact email.
    ChangeContactEmail(ChangeContactEmail),
    /// SC-3: codes to the current contact mobile and to the new one.
    StartContactMobileChange(StartContactMobileChange),
    /// SC-3: both codes, and the new contact mobile is on file.
    ConfirmContactMobileChange(ConfirmContactMobileChange),
    /// SC-3 when self-service fails (the old number is lost, or none is on file): an operator
    /// records the contact mobile after a signed form, as RC-7 does for a password.
    OperatorSetContactMobile(OperatorSetContactMobile),
    /// SC-5: the authorising code, the new recovery contact, and a code sent to it.
    StartRecoveryContactChange(StartRecoveryContactChange),
    /// SC-5: the code sent to the new recovery contact, and it is on file.
    ConfirmRecoveryContactChange(ConfirmRecoveryContactChange),
    /// PW-6, from the scheduler.
    NotePasswordExpiry(NotePasswordExpiry),
    /// SC-8, from the scheduler.
    ReviewInactivity(ReviewInactivity),
}

impl AccountCommand {
    /// Whether `decide` will hash or verify a password: the handler then runs it on the
    /// bounded hashing pool instead of the async runtime (PW-5).
    pub fn needs_hashing(&self) -> bool {
        match self {
            AccountCommand::Open(_)
            | AccountCommand::Login(_)
            | AccountCommand::Reauthenticate(_)
            | AccountCommand::ChangePassword(_)
            | AccountCommand::AnswerSecurityQuestion(_)
            | AccountCommand::CompleteRecovery(_)
            | AccountCommand::OperatorReset(_) => true,
            // Only a new security answer is hashed; contacts alone decide right here.
            AccountCommand::SetRecoveryInfo(c) => matches!(c.security, Change::Set(_)),
            AccountCommand::SetCollaboratorPassword(_) => true,
            AccountCommand::SetMailProtocols(_)
            | AccountCommand::StartTwoFactor(_)
            | AccountCommand::ConfirmTwoFactor(_)
            | AccountCommand::BindHardwareToken(_)
            | AccountCommand::DisableTwoFactor(_)
            | AccountCommand::GenerateAppPassword(_)
            | AccountCommand::PostponeAppPassword(_)
            | AccountCommand::DeactivateAppPassword(_)
            | AccountCommand::NoteAppPasswordExpiry(_)
            | AccountCommand::ResetCollaborator(_)
            | AccountCommand::ResendCollaboratorLink(_)
            | AccountCommand::DeactivateCollaborator(_)
            | AccountCommand::Suspend(_)
            | AccountCommand::Revoke(_)
            | AccountCommand::SetLanguage(_)
            | AccountCommand::VerifyRecoveryContact(_)
            | AccountCommand::RecordDocument(_)
            | AccountCommand::NoteDocumentExpiry(_)
            | AccountCommand::ChangeContactEmail(_)
            | AccountCommand::StartContactMobileChange(_)
            | AccountCommand::ConfirmContactMobileChange(_)
            | AccountCommand::OperatorSetContactMobile(_)
            | AccountCommand::StartRecoveryContactChange(_)
            | AccountCommand::ConfirmRecoveryContactChange(_)
            | AccountCommand::NotePasswordExpiry(_)
            | AccountCommand::ReviewInactivity(_) => false,
            AccountCommand::Logout(_)
            | AccountCommand::SendRecoveryLink(_)
            | AccountCommand::SendRecoveryCode(_)
            | AccountCommand::VerifyRecoveryCode(_)
            | AccountCommand::RequestOtp(_)
            | AccountCommand::EndLocks => false,
        }
    }

    /// PW-6: whether the holder's command waits while the password has expired (only the
    /// change itself, its code, step-up and logout go on). Operators' and the scheduler's
    /// commands, logins and recoveries are not the holder's session at work.
    pub fn waits_for_password_change(&self) -> bool {
        match self {
            AccountCommand::RequestOtp(c) => c.purpose != OtpPurpose::PasswordChange,
            AccountCommand::SetRecoveryInfo(_)
            | AccountCommand::SetMailProtocols(_)
            | AccountCommand::StartTwoFactor(_)
            | AccountCommand::ConfirmTwoFactor(_)
            | AccountCommand::BindHardwareToken(_)
            | AccountCommand::DisableTwoFactor(_)
            | AccountCommand::GenerateAppPassword(_)
            | AccountCommand::PostponeAppPassword(_)
            | AccountCommand::DeactivateAppPassword(_)
            | AccountCommand::ResetCollaborator(_)
            | AccountCommand::ResendCollaboratorLink(_)
            | AccountCommand::DeactivateCollaborator(_)
            | AccountCommand::Suspend(_)
            | AccountCommand::SetLanguage(_)
            | AccountCommand::VerifyRecoveryContact(_)
            | AccountCommand::RecordDocument(_)
            | AccountCommand::ChangeContactEmail(_)
            | AccountCommand::StartContactMobileChange(_)
            | AccountCommand::ConfirmContactMobileChange(_)
            | AccountCommand::StartRecoveryContactChange(_)
            | AccountCommand::ConfirmRecoveryContactChange(_) => true,
            AccountCommand::Open(_)
            | AccountCommand::Login(_)
            | AccountCommand::Reauthenticate(_)
            | AccountCommand::Logout(_)
            | AccountCommand::ChangePassword(_)
            | AccountCommand::SendRecoveryLink(_)
            | AccountCommand::SendRecoveryCode(_)
            | AccountCommand::VerifyRecoveryCode(_)
            | AccountCommand::AnswerSecurityQuestion(_)
            | AccountCommand::CompleteRecovery(_)
            | AccountCommand::OperatorReset(_)
            | AccountCommand::OperatorSetContactMobile(_)
            | AccountCommand::EndLocks
            | AccountCommand::NoteAppPasswordExpiry(_)
            | AccountCommand::SetCollaboratorPassword(_)
            | AccountCommand::Revoke(_)
            | AccountCommand::NoteDocumentExpiry(_)
            | AccountCommand::NotePasswordExpiry(_)
            | AccountCommand::ReviewInactivity(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub enum InitialPassword {
    /// ACC-2: drawn by the handler, shown once to the operator and, sealed with the delivery
    /// key, mailed to the contact email.
    Temporary { password: Secret, sealed: Sealed },
    /// ACC-3: a PHC hash brought from the old system.
    Imported(PasswordHash),
    /// CO-1: none yet; a link to create it goes to the reference email.
    Link {
        token_hash: TokenHash,
        sealed: Sealed,
    },
}

/// The owning mailbox of a collaborator as the handler found it (`kind` is `None` when no
/// account has that id).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerRef {
    pub account_id: Uuid,
    pub kind: Option<AccountKind>,
}

#[derive(Debug, Clone)]
pub struct OpenAccount {
    pub account_id: Uuid,
    pub kind: AccountKind,
    pub user_id: String,
    pub plan: Option<Plan>,
    pub owner: Option<OwnerRef>,
    pub name: Option<String>,
    pub fiscal_code: Option<String>,
    pub contact_email: Option<String>,
    pub contact_mobile: Option<String>,
    pub language: Language,
    pub password: InitialPassword,
    /// CO-1: a collaborator's permissions.
    pub permissions: Vec<Permission>,
    /// SC-1: an identity's expiry, when the identity provider gives one.
    pub identity_expires_on: Option<chrono::NaiveDate>,
}

impl OpenAccount {
    /// A standard mailbox with nothing but its user id and initial password.
    pub fn mailbox(
        account_id: Uuid,
        user_id: impl Into<String>,
        password: InitialPassword,
    ) -> Self {
        Self {
            account_id,
            kind: AccountKind::Mailbox,
            user_id: user_id.into(),
            plan: None,
            owner: None,
            name: None,
            fiscal_code: None,
            contact_email: None,
            contact_mobile: None,
            language: Language::It,
            password,
            permissions: Vec::new(),
            identity_expires_on: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Login {
    pub session_id: Uuid,
    pub token_hash: TokenHash,
    pub password: Secret,
    pub client_ip: Option<String>,
    pub channel: AccessChannel,
    /// AP-8: the second factor's code, when two-step verification is on.
    pub otp: Option<Secret>,
    /// AP-8: the code to send when the second factor is SMS and none was given.
    pub sms: Option<DrawnCode>,
}

/// A one-time code drawn by the handler: its challenge id, the code, and the code sealed for
/// the SMS sender.
#[derive(Debug, Clone)]
pub struct DrawnCode {
    pub challenge_id: Uuid,
    pub code: Secret,
    pub sealed_code: Sealed,
}

#[derive(Debug, Clone)]
pub struct Reauthenticate {
    pub session_id: Uuid,
    pub password: Secret,
    pub client_ip: Option<String>,
    pub channel: AccessChannel,
    /// AP-8: the second factor's code, when two-step verification is on (SEC-3).
    pub otp: Option<Secret>,
    /// AP-8: the code to send when the second factor is SMS and none was given.
    pub sms: Option<DrawnCode>,
}

#[derive(Debug, Clone)]
pub struct Logout {
    pub session_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct ChangePassword {
    pub session_id: Uuid,
    pub current_password: Secret,
    pub new_password: Secret,
    pub new_password_repeat: Secret,
    /// PW-4: an identity's code from `POST /v1/account/otp` (purpose `password_change`).
    pub otp: Option<Secret>,
    /// For the failed attempt a wrong current password records (SEC-6).
    pub client_ip: Option<String>,
    pub channel: AccessChannel,
}

/// PW-4, SC: a one-time code for `purpose`, by SMS to the account's mobile. The handler draws
/// the code and its challenge id and seals the code for the SMS sender.
#[derive(Debug, Clone)]
pub struct RequestOtp {
    pub session_id: Uuid,
    pub purpose: OtpPurpose,
    pub code: DrawnCode,
}

/// A field of a partial update: absent leaves it, `null` removes it, a value sets it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

#[derive(Debug, Clone)]
pub struct SecurityQuestion {
    pub question: String,
    pub answer: Secret,
    pub answer_repeat: Secret,
}

#[derive(Debug, Clone)]
pub struct SetRecoveryInfo {
    pub session_id: Uuid,
    pub email: Change<String>,
    pub mobile: Change<String>,
    /// `Set` replaces question and answer; `Clear` removes them.
    pub security: Change<SecurityQuestion>,
}

/// RC-2: mail a recovery link. The handler draws the token and seals it for the mailer.
#[derive(Debug, Clone)]
pub struct SendRecoveryLink {
    pub recovery_id: Uuid,
    pub token_hash: TokenHash,
    pub sealed_token: Sealed,
}

/// RC-3: send a code by SMS. The handler draws the code, its challenge id, and seals it.
#[derive(Debug, Clone)]
pub struct SendRecoveryCode {
    pub recovery_id: Uuid,
    pub challenge_id: Uuid,
    pub code: Secret,
    pub sealed_code: Sealed,
}

/// RC-3: check a code; a right one yields the reset token drawn by the handler.
#[derive(Debug, Clone)]
pub struct VerifyRecoveryCode {
    pub recovery_id: Uuid,
    pub code: Secret,
    pub token_hash: TokenHash,
    pub client_ip: Option<String>,
}

/// RC-4: answer the security question; a right answer yields the reset token.
#[derive(Debug, Clone)]
pub struct AnswerSecurityQuestion {
    pub recovery_id: Uuid,
    pub answer: Secret,
    pub token_hash: TokenHash,
    pub client_ip: Option<String>,
}

/// RC-5: the new password, twice, with the link's or reset token (its hash).
#[derive(Debug, Clone)]
pub struct CompleteRecovery {
    pub token_hash: TokenHash,
    pub new_password: Secret,
    pub new_password_repeat: Secret,
}

/// RC-7: an operator's reset after a signed paper form.
#[derive(Debug, Clone)]
pub struct OperatorReset {
    pub form_reference: String,
    pub password: Secret,
}

/// ACC-5: the mailbox's mail protocols.
#[derive(Debug, Clone)]
pub struct SetMailProtocols {
    pub session_id: Uuid,
    pub imap: bool,
    pub pop: bool,
    pub smtp: bool,
}

/// AP-8: start two-step verification over `channel` (the app or SMS): the app's secret, drawn
/// and sealed by the handler, or the SMS code to confirm.
#[derive(Debug, Clone)]
pub struct StartTwoFactor {
    pub session_id: Uuid,
    pub channel: TwoFactorChannel,
    pub sealed_secret: Option<Sealed>,
    pub sms: Option<DrawnCode>,
}

/// AP-8: the first code, which turns two-step verification on.
#[derive(Debug, Clone)]
pub struct ConfirmTwoFactor {
    pub session_id: Uuid,
    pub code: Secret,
    pub client_ip: Option<String>,
}

/// AP-8: turn two-step verification on with a hardware token an operator registered (its
/// seed, sealed, read from the token's stream by the handler) and a current code from it.
#[derive(Debug, Clone)]
pub struct BindHardwareToken {
    pub session_id: Uuid,
    pub serial: String,
    pub sealed_seed: Sealed,
    pub code: Secret,
    pub client_ip: Option<String>,
}

/// AP-8: turn two-step verification off, with a current code.
#[derive(Debug, Clone)]
pub struct Suspend {
    pub session_id: Uuid,
    pub days: u32,
    /// The code sent for `suspension` (`POST /v1/account/otp`).
    pub otp: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct RecordDocument {
    pub session_id: Uuid,
    pub kind: DocumentKind,
    pub number: String,
    pub expires_on: chrono::NaiveDate,
}

#[derive(Debug, Clone)]
pub struct NoteDocumentExpiry {
    pub expires_on: chrono::NaiveDate,
    pub days_before: u32,
}

#[derive(Debug, Clone)]
pub struct VerifyRecoveryContact {
    pub session_id: Uuid,
    /// `Email` or `Sms` (the recovery mobile).
    pub method: crate::recovery::RecoveryMethod,
    pub code: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct SetLanguage {
    pub session_id: Uuid,
    pub language: Language,
}

#[derive(Debug, Clone)]
pub struct OperatorSetContactMobile {
    pub form_reference: String,
    pub mobile: String,
}

#[derive(Debug, Clone)]
pub struct Revoke {
    pub request_reference: String,
}

#[derive(Debug, Clone)]
pub struct DisableTwoFactor {
    pub session_id: Uuid,
    pub code: Secret,
    pub client_ip: Option<String>,
}

/// A collaborator as the handler found it, for a `collaborator:<id>` scope (AP-2).
#[derive(Debug, Clone, PartialEq)]
pub struct CollaboratorRef {
    pub account_id: Uuid,
    pub owner_id: Option<Uuid>,
    pub status: Option<AccountStatus>,
    pub mail_programs: bool,
}

/// AP-1..5: a new app password for `scope` (its HMAC; the clear one is shown once). `replace`:
/// regenerate, replacing the live one at once.
#[derive(Debug, Clone)]
pub struct GenerateAppPassword {
    pub session_id: Uuid,
    pub scope: String,
    pub password_hmac: String,
    pub replace: bool,
    pub collaborator: Option<CollaboratorRef>,
}

/// AP-4, AP-5: postpone or deactivate the app password of `scope`.
#[derive(Debug, Clone)]
pub struct ScopeCommand {
    pub session_id: Uuid,
    pub scope: String,
}

/// AP-6: the scheduler's command `days_before` days before the expiry `expires_at`.
#[derive(Debug, Clone)]
pub struct NoteAppPasswordExpiry {
    pub scope: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub days_before: u32,
}

/// CO-2..4: the owning mailbox's holder acts on a collaborator.
#[derive(Debug, Clone)]
pub struct OwnerAct {
    pub owner_id: Uuid,
}

/// CO-2, CO-3: a new link to the reference email (the handler draws the token).
#[derive(Debug, Clone)]
pub struct CollaboratorLink {
    pub owner_id: Uuid,
    pub token_hash: TokenHash,
    pub sealed_token: Sealed,
}

/// CO-1, CO-2: the collaborator's new password, through the link.
#[derive(Debug, Clone)]
pub struct SetCollaboratorPassword {
    pub token_hash: TokenHash,
    pub new_password: Secret,
    pub new_password_repeat: Secret,
}

#[derive(Debug, Clone)]
pub struct ChangeContactEmail {
    pub session_id: Uuid,
    pub email: String,
}

#[derive(Debug, Clone)]
pub struct StartContactMobileChange {
    pub session_id: Uuid,
    pub mobile: String,
    /// For the current contact mobile (unused when none is on file).
    pub current: DrawnCode,
    /// For the new one.
    pub new: DrawnCode,
}

#[derive(Debug, Clone)]
pub struct ConfirmContactMobileChange {
    pub session_id: Uuid,
    /// The code sent to the current contact mobile (none when there was none).
    pub current_code: Option<Secret>,
    /// The code sent to the new one.
    pub code: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct StartRecoveryContactChange {
    pub session_id: Uuid,
    /// `Email` or `Sms` (the recovery mobile).
    pub method: crate::recovery::RecoveryMethod,
    /// The authorising code (`recovery_email_change` or `recovery_mobile_change`).
    pub otp: Option<Secret>,
    /// The new address or number, as typed.
    pub contact: String,
    pub code: DrawnCode,
}

#[derive(Debug, Clone)]
pub struct ConfirmRecoveryContactChange {
    pub session_id: Uuid,
    pub method: crate::recovery::RecoveryMethod,
    pub code: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct NotePasswordExpiry {
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// 0: at the expiry itself.
    pub days_before: u32,
}

#[derive(Debug, Clone)]
pub struct ReviewInactivity {
    /// SC-8: the latest successful access reported by the identity front end (they live on the
    /// account's access stream; the handler reads it).
    pub last_reported_access: Option<chrono::DateTime<chrono::Utc>>,
}
