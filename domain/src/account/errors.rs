//! Refusals of the account aggregate, each with its stable code (the HTTP layer maps every
//! code to one problem type and status, exhaustively).

use crate::violation::Violation;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("the request breaks {} rule(s)", .0.len())]
    Invalid(Vec<Violation>),
    #[error("the new password does not meet the password policy")]
    PasswordPolicy(Vec<Violation>),
    #[error("the current password is not right")]
    CurrentPasswordWrong,
    #[error("no account has that id")]
    NotFound,
    #[error("another account already has this user id")]
    UserIdTaken,
    #[error("no recovery has that id")]
    RecoveryNotFound,
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the session has ended or expired")]
    SessionInvalid,
    #[error("this change needs a recent login: confirm your password first")]
    ReauthenticationRequired,
    #[error("this recovery does not offer that method")]
    MethodUnavailable,
    #[error("this recovery has sent as many codes as it may; start a new recovery")]
    CodeLimit,
    #[error("no code is waiting to be checked; ask for one")]
    NoCode,
    #[error("the code has expired; ask for a new one")]
    CodeExpired,
    #[error("too many wrong codes for this code: ask for a new one (in a recovery, start a new recovery)")]
    CodeExhausted,
    #[error("too many wrong answers: the security question is locked")]
    QuestionLocked {
        until: DateTime<Utc>,
        /// Seconds from the refusal to `until` (for `Retry-After`).
        seconds: i64,
    },
    #[error("the token is not valid")]
    TokenInvalid,
    #[error("the token has already been used")]
    TokenUsed,
    #[error("the token has expired")]
    TokenExpired,
    #[error("a newer request replaced this token")]
    TokenSuperseded,
    #[error("the account cannot recover its password")]
    RecoveryRefused,
    #[error("too many recovery messages for this user id: no more for a while")]
    MessageLimit {
        until: DateTime<Utc>,
        /// Seconds from the refusal to `until` (for `Retry-After`).
        seconds: i64,
    },
    #[error("too many wrong codes or answers in a row: checks are refused for a while")]
    ChecksLocked {
        until: DateTime<Utc>,
        /// Seconds from the refusal to `until` (for `Retry-After`).
        seconds: i64,
    },
    #[error("too many wrong passwords in a row: logins are refused for a while")]
    LoginLocked {
        until: DateTime<Utc>,
        /// Seconds from the refusal to `until` (for `Retry-After`).
        seconds: i64,
    },
    /// ACC-4, SEC-6: the password was right, but the account may not log in.
    #[error("the account is {}", .status.as_str())]
    NotActive {
        status: super::events::AccountStatus,
        /// SC-6: until when a self-suspension lasts.
        until: Option<DateTime<Utc>>,
        /// CO-2: a collaborator suspended until it sets a new password through the link.
        awaiting_password: bool,
    },
    /// ACC-2: the required actions come first.
    #[error("the required actions come first: `required_actions` on `GET /v1/account` lists them (a new password, the recovery information, its confirmation)")]
    ActionsRequired,
    /// AP-8: the password was right; the second factor's code is needed too.
    #[error("two-step verification is on: send the code as `otp`")]
    SecondFactorRequired {
        channel: super::events::TwoFactorChannel,
    },
    #[error("two-step verification is already on")]
    TwoFactorAlreadyOn,
    #[error("two-step verification is not on")]
    TwoFactorNotOn,
    #[error("no two-step activation is waiting for its first code: start one first")]
    NoTwoFactorEnrollment,
    /// AP-1.
    #[error("passwords for mail programs need two-step verification: turn it on first")]
    TwoFactorRequired,
    /// AP-1.
    #[error("no mail protocol is enabled: enable IMAP, POP or SMTP first")]
    MailProtocolsOff,
    #[error("only a mailbox's holder can do this: collaborators and identities have no mail protocols, passwords for mail programs or collaborators")]
    NotMailbox,
    /// SC-1..8: identities' self-care.
    #[error("only an identity's holder can do this")]
    NotIdentity,
    /// AP-2.
    #[error("this scope already has a live password: regenerate or deactivate it")]
    AppPasswordExists,
    #[error("this scope has no app password")]
    NoAppPassword,
    /// AP-4.
    #[error("the password has expired: generate a new one")]
    AppPasswordExpired,
    /// AP-4.
    #[error("the password can be postponed only in its last 14 days")]
    PostponeTooEarly { from: DateTime<Utc> },
    /// CO-5, SEC-4.
    #[error("only the owning mailbox's holder can act on this collaborator")]
    NotOwner,
    /// CO-3.
    #[error("the collaborator is not waiting for a password: nothing to send again")]
    NothingToResend,
    #[error("the collaborator is deactivated")]
    Deactivated,
    /// SC-5: a recovery contact changed lately.
    #[error("this recovery contact changed lately and cannot change again yet")]
    ContactCooldown { until: DateTime<Utc> },
    /// SC-3: the contact email changed as often as a day allows.
    #[error("the contact email changed 3 times in the last day: the next change waits")]
    ContactEmailChanges {
        until: DateTime<Utc>,
        /// Seconds from the refusal to `until` (for `Retry-After`).
        seconds: i64,
    },
    /// PW-6: only the password change goes on.
    #[error("the password has expired: change it first")]
    PasswordExpired,
    /// ACC-4: revoked and deactivated are final; an operator's reset or revocation changes
    /// nothing there.
    #[error("the account is {}, for good: nothing changes it", .status.as_str())]
    Closed {
        status: super::events::AccountStatus,
    },
}

impl AccountError {
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::Invalid(_) => "validation-failed",
            AccountError::PasswordPolicy(_) => "password-policy",
            AccountError::CurrentPasswordWrong => "current-password-wrong",
            AccountError::NotFound => "account-not-found",
            AccountError::UserIdTaken => "user-id-taken",
            AccountError::RecoveryNotFound => "recovery-not-found",
            AccountError::AlreadyOpen => "account-exists",
            AccountError::SessionInvalid => "unauthenticated",
            AccountError::ReauthenticationRequired => "reauthentication-required",
            AccountError::MethodUnavailable => "recovery-method-unavailable",
            AccountError::CodeLimit => "code-limit-reached",
            AccountError::NoCode => "no-code",
            AccountError::CodeExpired => "code-expired",
            AccountError::CodeExhausted => "code-attempts-exhausted",
            AccountError::QuestionLocked { .. } => "question-locked",
            AccountError::TokenInvalid | AccountError::RecoveryRefused => "token-invalid",
            AccountError::TokenUsed => "token-used",
            AccountError::TokenExpired => "token-expired",
            AccountError::TokenSuperseded => "token-superseded",
            AccountError::LoginLocked { .. }
            | AccountError::ChecksLocked { .. }
            | AccountError::MessageLimit { .. }
            | AccountError::ContactEmailChanges { .. } => "rate-limited",
            AccountError::NotActive { status, .. } => match status {
                super::events::AccountStatus::Suspended => "account-suspended",
                super::events::AccountStatus::Revoked => "account-revoked",
                super::events::AccountStatus::Deactivated => "account-deactivated",
                super::events::AccountStatus::Active => "account-suspended",
            },
            AccountError::ActionsRequired => "required-actions-pending",
            AccountError::SecondFactorRequired { .. } => "second-factor-required",
            AccountError::TwoFactorAlreadyOn => "two-factor-already-on",
            AccountError::TwoFactorNotOn => "two-factor-not-on",
            AccountError::NoTwoFactorEnrollment => "no-two-factor-enrollment",
            AccountError::TwoFactorRequired => "two-factor-required",
            AccountError::MailProtocolsOff => "mail-protocols-disabled",
            AccountError::NotMailbox => "not-a-mailbox",
            AccountError::NotIdentity => "not-an-identity",
            AccountError::AppPasswordExists => "app-password-exists",
            AccountError::NoAppPassword => "app-password-not-found",
            AccountError::PostponeTooEarly { .. } => "postpone-too-early",
            AccountError::AppPasswordExpired => "app-password-expired",
            AccountError::NotOwner => "forbidden",
            AccountError::NothingToResend => "nothing-to-resend",
            AccountError::Deactivated => "account-deactivated",
            AccountError::ContactCooldown { .. } => "contact-change-cooldown",
            AccountError::PasswordExpired => "password-expired",
            AccountError::Closed { .. } => "account-closed",
        }
    }
}

impl crate::decider::Refusal for AccountError {
    fn code(&self) -> &'static str {
        AccountError::code(self)
    }
}

impl From<crate::user_registry::UserIdError> for AccountError {
    fn from(e: crate::user_registry::UserIdError) -> Self {
        match e {
            crate::user_registry::UserIdError::Taken => AccountError::UserIdTaken,
        }
    }
}
