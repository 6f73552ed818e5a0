//! RFC 9457 problem documents (SEC-5). Every error leaves the API as one of these, with a
//! stable `type` (`/problems/<slug>`) that the OpenAPI document lists. Problems never carry a
//! secret: details are written here, not copied from input.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use custode_commands::handler::HandlerError;
use custode_domain::account::AccountError;
use custode_domain::notice::NoticeError;
use custode_domain::Violation;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Violation>,
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

/// Every problem slug the API can answer with, its status and title. The OpenAPI document
/// lists the same set (a test compares them).
pub const PROBLEMS: &[(&str, u16, &str)] = &[
    ("malformed-json", 400, "The body is not a JSON object"),
    ("unauthenticated", 401, "Authentication is needed"),
    (
        "invalid-credentials",
        401,
        "The user id or password is not right",
    ),
    ("code-wrong", 401, "The code is not right"),
    ("answer-wrong", 401, "The answer is not right"),
    ("token-invalid", 401, "The token is not valid"),
    (
        "second-factor-required",
        401,
        "The code of the second factor is needed",
    ),
    ("code-replayed", 401, "The code was already used"),
    (
        "app-password-denied",
        401,
        "The password for mail programs is refused",
    ),
    ("account-suspended", 403, "The account is suspended"),
    ("account-revoked", 403, "The account is revoked"),
    ("account-deactivated", 403, "The account is deactivated"),
    (
        "required-actions-pending",
        403,
        "Complete the required actions first",
    ),
    ("forbidden", 403, "Not allowed"),
    ("not-a-mailbox", 403, "Only a mailbox's holder can do this"),
    (
        "not-an-identity",
        403,
        "Only an identity's holder can do this",
    ),
    (
        "reauthentication-required",
        403,
        "Confirm your password first",
    ),
    ("not-found", 404, "Not found"),
    ("account-not-found", 404, "No such account"),
    ("dead-letter-not-found", 404, "No such dead letter"),
    ("recovery-not-found", 404, "No such recovery"),
    (
        "app-password-not-found",
        404,
        "No password for mail programs has this scope",
    ),
    ("method-not-allowed", 405, "Method not allowed"),
    ("user-id-taken", 409, "The user id is already in use"),
    ("account-exists", 409, "The account already exists"),
    ("conflict", 409, "The account changed meanwhile"),
    (
        "dead-letter-not-dead",
        409,
        "The notice is not a dead letter any more",
    ),
    (
        "recovery-method-unavailable",
        409,
        "This recovery does not offer that method",
    ),
    (
        "code-limit-reached",
        409,
        "This recovery has sent all its codes",
    ),
    ("no-code", 409, "No code is waiting to be checked"),
    ("account-closed", 409, "The account is closed for good"),
    (
        "contact-change-cooldown",
        409,
        "This contact changed lately and cannot change again yet",
    ),
    (
        "password-expired",
        403,
        "The password has expired: change it first",
    ),
    (
        "two-factor-already-on",
        409,
        "Two-step verification is already on",
    ),
    ("two-factor-not-on", 409, "Two-step verification is not on"),
    (
        "no-two-factor-enrollment",
        409,
        "No two-step activation is waiting for a code",
    ),
    (
        "two-factor-required",
        409,
        "Turn on two-step verification first",
    ),
    (
        "mail-protocols-disabled",
        409,
        "Enable IMAP, POP or SMTP first",
    ),
    (
        "app-password-exists",
        409,
        "This scope already has a live password",
    ),
    (
        "postpone-too-early",
        409,
        "The password cannot be postponed yet",
    ),
    ("app-password-expired", 409, "The password has expired"),
    (
        "nothing-to-resend",
        409,
        "The collaborator is not waiting for a password",
    ),
    (
        "hardware-token-exists",
        409,
        "This token is already registered",
    ),
    (
        "hardware-token-unavailable",
        409,
        "This token cannot be bound to this account",
    ),
    (
        "code-attempts-exhausted",
        409,
        "Every attempt at the code has been spent",
    ),
    ("code-expired", 410, "The code has expired"),
    ("token-used", 410, "The token has already been used"),
    ("token-expired", 410, "The token has expired"),
    (
        "token-superseded",
        410,
        "A newer request replaced the token",
    ),
    ("body-too-large", 413, "The body is too large"),
    (
        "invalid-request",
        422,
        "The request does not have the expected shape",
    ),
    ("validation-failed", 422, "The request breaks some rules"),
    (
        "password-policy",
        422,
        "The new password does not meet the password policy",
    ),
    (
        "current-password-wrong",
        422,
        "The current password is not right",
    ),
    ("captcha-failed", 422, "The captcha was not solved"),
    ("rate-limited", 429, "Too many requests"),
    ("question-locked", 429, "The security question is locked"),
    ("internal", 500, "Something failed on our side"),
    ("operator-key-unset", 503, "Operator endpoints are disabled"),
    ("not-ready", 503, "The read model has not caught up yet"),
    ("busy", 503, "The service is busy"),
    (
        "captcha-unavailable",
        503,
        "The captcha could not be checked",
    ),
];

impl Problem {
    /// A problem of a listed slug. An unlisted slug is a programming error; it becomes a 500
    /// so the mistake shows instead of passing silently.
    pub fn new(slug: &str, detail: impl Into<String>) -> Self {
        let (slug, status, title) = PROBLEMS
            .iter()
            .find(|(s, _, _)| *s == slug)
            .copied()
            .unwrap_or(("internal", 500, "Something failed on our side"));
        Self {
            problem_type: format!("/problems/{slug}"),
            title,
            status,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<Violation>) -> Self {
        self.errors = errors;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        // The cause goes to the log (it is ours, never the client's input), not to the client.
        tracing::error!(%error, "request failed");
        Self::new(
            "internal",
            "the request could not be completed; it is safe to retry",
        )
    }

    /// The log's disk is full or failing: the service's trouble, and nothing was written.
    /// `503` with `Retry-After`, so that clients back off and retry once space comes back.
    pub fn disk_unavailable(message: &str) -> Self {
        tracing::error!(error = %message, "the storage cannot be written");
        Self::new(
            "busy",
            "the service cannot write to its storage at the moment; try again later",
        )
        .retry_after(5)
    }

    /// SEC-9: a bounded queue or the request limit turned the request away; try again soon.
    pub fn busy(detail: &str) -> Self {
        Self::new("busy", detail).retry_after(1)
    }

    /// A body past the 64 KiB limit (`413`).
    pub fn body_too_large() -> Self {
        Self::new("body-too-large", "request bodies are limited to 64 KiB")
    }

    /// A body that could not be read to its end (cut short, or framed wrongly).
    pub fn body_unreadable() -> Self {
        Self::new("malformed-json", "the request body could not be read")
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            "unauthenticated",
            "send a live session token as `Authorization: Bearer <token>`",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<AccountError> for Problem {
    fn from(e: AccountError) -> Self {
        let detail = e.to_string();
        match e {
            AccountError::Invalid(errors) => Problem::new("validation-failed", detail).with_errors(errors),
            AccountError::PasswordPolicy(errors) => Problem::new("password-policy", detail).with_errors(errors),
            AccountError::CurrentPasswordWrong => Problem::new("current-password-wrong", detail).with_errors(vec![
                Violation::new("PW-4.current", Some("current_password"), "the current password is not right"),
            ]),
            AccountError::NotFound => Problem::new("account-not-found", detail),
            AccountError::UserIdTaken => Problem::new(e.code(), detail),
            AccountError::RecoveryNotFound => Problem::new(
                "recovery-not-found",
                "no recovery has this id; start one with POST /v1/recovery",
            ),
            AccountError::AlreadyOpen => Problem::new("account-exists", detail),
            AccountError::SessionInvalid => Problem::new("unauthenticated", detail),
            AccountError::ReauthenticationRequired => Problem::new(
                "reauthentication-required",
                "this change needs a login in the last minutes: confirm your password with POST /v1/sessions/current/reauth",
            ),
            AccountError::LoginLocked { seconds, .. } => Problem::new(
                "rate-limited",
                format!("too many failed logins for this user id; try again in {seconds} seconds"),
            )
            .retry_after(u64::try_from(seconds).unwrap_or(1)),
            AccountError::MessageLimit { seconds, .. } => Problem::new(
                "rate-limited",
                format!("too many messages (links or codes) for this user id; try again in {seconds} seconds"),
            )
            .retry_after(u64::try_from(seconds).unwrap_or(1)),
            AccountError::ContactEmailChanges { seconds, .. } => Problem::new(
                "rate-limited",
                format!("the contact email changed 3 times in the last day (SC-3: each change mails two addresses); the next change is possible in {seconds} seconds"),
            )
            .retry_after(u64::try_from(seconds).unwrap_or(1)),
            AccountError::ChecksLocked { seconds, .. } => Problem::new(
                "rate-limited",
                format!("too many wrong codes or answers for this user id; try again in {seconds} seconds"),
            )
            .retry_after(u64::try_from(seconds).unwrap_or(1)),
            AccountError::QuestionLocked { until, seconds } => {
                Problem::new(
                    "question-locked",
                    format!("too many wrong answers: the security question is locked until {}; the other methods still work", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                )
                .retry_after(u64::try_from(seconds).unwrap_or(1))
            }
            AccountError::MethodUnavailable
            | AccountError::CodeLimit
            | AccountError::NoCode
            | AccountError::CodeExpired
            | AccountError::CodeExhausted
            | AccountError::TokenInvalid
            | AccountError::TokenUsed
            | AccountError::TokenExpired
            | AccountError::TokenSuperseded => Problem::new(e.code(), detail),
            // SEC-6: an account that cannot recover answers as a token nobody issued.
            AccountError::RecoveryRefused => {
                Problem::new(e.code(), AccountError::TokenInvalid.to_string())
            }
            AccountError::NotActive { status, until, awaiting_password } => {
                let detail = match (status, awaiting_password) {
                    (custode_domain::account::AccountStatus::Suspended, true) => "the account is suspended until a new password is created with the link mailed to the reference email".to_string(),
                    (custode_domain::account::AccountStatus::Suspended, false) if until.is_some() => format!(
                        "the account is suspended until {} (SC-6: it is active again then)",
                        until.map(|u| u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
                    ),
                    (custode_domain::account::AccountStatus::Deactivated, _) => "the collaborator was deactivated by the mailbox holder; this is final".to_string(),
                    (custode_domain::account::AccountStatus::Revoked, _) => "the account is revoked; this is final".to_string(),
                    _ => "the account is suspended".to_string(),
                };
                Problem::new(e.code(), detail)
            }
            AccountError::SecondFactorRequired { channel } => Problem::new(
                e.code(),
                format!("two-step verification is on: send the {} code as `otp`", match channel {
                    custode_domain::account::TwoFactorChannel::App => "authenticator app's",
                    custode_domain::account::TwoFactorChannel::Sms => "SMS",
                    custode_domain::account::TwoFactorChannel::HardwareToken => "hardware token's",
                }),
            ),
            AccountError::PostponeTooEarly { from } => Problem::new(
                e.code(),
                format!(
                    "the password can be postponed from {} (its last 14 days)",
                    from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            )
            .with_errors(vec![Violation::new(
                "AP-4",
                None,
                format!("postpone_available_from {}", from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            )]),
            AccountError::ContactCooldown { until } => Problem::new(
                e.code(),
                format!(
                    "this recovery contact changed lately: it can change again from {} (SC-5)",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            )
            .with_errors(vec![Violation::new(
                "SC-5.cooldown",
                None,
                format!(
                    "possible_from {}",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            )]),
            AccountError::PasswordExpired
            | AccountError::ActionsRequired
            | AccountError::TwoFactorAlreadyOn
            | AccountError::TwoFactorNotOn
            | AccountError::NoTwoFactorEnrollment
            | AccountError::TwoFactorRequired
            | AccountError::MailProtocolsOff
            | AccountError::NotMailbox
            | AccountError::NotIdentity
            | AccountError::AppPasswordExists
            | AccountError::AppPasswordExpired
            | AccountError::NoAppPassword
            | AccountError::NotOwner
            | AccountError::NothingToResend
            | AccountError::Deactivated
            | AccountError::Closed { .. } => Problem::new(e.code(), detail),
        }
    }
}

impl From<NoticeError> for Problem {
    fn from(e: NoticeError) -> Self {
        match e {
            NoticeError::NotFound => Problem::new(e.code(), "no dead letter has this id"),
            NoticeError::NotDead => Problem::new(
                e.code(),
                "this notice was delivered, or a retry of it is already under way",
            ),
        }
    }
}

impl<E: Into<Problem>> From<HandlerError<E>> for Problem {
    fn from(e: HandlerError<E>) -> Self {
        match e {
            HandlerError::Domain(e) => e.into(),
            HandlerError::Conflict => Problem::new(
                "conflict",
                "the account changed while this request was decided; send it again",
            ),
            HandlerError::Busy => Problem::busy("the service is busy; try again shortly"),
            HandlerError::Store(message) => Problem::internal(&message),
            HandlerError::DiskUnavailable(message) => Problem::disk_unavailable(&message),
            HandlerError::Unavailable(message) => {
                tracing::error!(error = %message, "a command's dependency is unavailable");
                Problem::new(
                    "busy",
                    "the service cannot send this message at the moment; try again later",
                )
                .retry_after(5)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every domain refusal maps to a listed problem type with the status SPEC gives it.
    #[test]
    fn every_refusal_has_its_problem_and_status() {
        let cases: Vec<(Problem, &str, u16)> = vec![
            (
                AccountError::Invalid(vec![]).into(),
                "/problems/validation-failed",
                422,
            ),
            (
                AccountError::PasswordPolicy(vec![]).into(),
                "/problems/password-policy",
                422,
            ),
            (
                AccountError::CurrentPasswordWrong.into(),
                "/problems/current-password-wrong",
                422,
            ),
            (
                AccountError::NotFound.into(),
                "/problems/account-not-found",
                404,
            ),
            (
                AccountError::AlreadyOpen.into(),
                "/problems/account-exists",
                409,
            ),
            (
                AccountError::SessionInvalid.into(),
                "/problems/unauthenticated",
                401,
            ),
            (
                AccountError::ReauthenticationRequired.into(),
                "/problems/reauthentication-required",
                403,
            ),
            (
                AccountError::UserIdTaken.into(),
                "/problems/user-id-taken",
                409,
            ),
            (
                HandlerError::<AccountError>::Conflict.into(),
                "/problems/conflict",
                409,
            ),
            (
                NoticeError::NotFound.into(),
                "/problems/dead-letter-not-found",
                404,
            ),
            (
                NoticeError::NotDead.into(),
                "/problems/dead-letter-not-dead",
                409,
            ),
            (
                HandlerError::<AccountError>::DiskUnavailable("disk I/O error".into()).into(),
                "/problems/busy",
                503,
            ),
            (
                HandlerError::<AccountError>::Store("no such table: x".into()).into(),
                "/problems/internal",
                500,
            ),
        ];
        for (error, problem_type, status) in cases {
            let problem = error;
            assert_eq!(
                (problem.problem_type.as_str(), problem.status),
                (problem_type, status)
            );
            assert!(
                !problem.detail.contains("disk full"),
                "internal causes stay in the log"
            );
        }
    }

    #[test]
    fn an_unlisted_slug_is_a_500_not_a_silent_success() {
        let problem = Problem::new("no-such-slug", "x");
        assert_eq!(
            (problem.problem_type.as_str(), problem.status),
            ("/problems/internal", 500)
        );
    }
}
