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
    #[error("too many wrong codes; start a new recovery")]
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
            | AccountError::MessageLimit { .. } => "rate-limited",
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
