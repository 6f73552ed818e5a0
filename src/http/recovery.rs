//! The forgotten-password flow (RC-1..6) over HTTP. Nothing here tells a real account from a
//! decoy: the same statuses, shapes and headers for both (only the start, which records the
//! same event for both, carries a log position).

use super::extract::{Body, ClientIp, Correlation};
use super::problem::Problem;
use super::{command_answer, settle};
use crate::app::AppState;
use crate::captcha::Verdict;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use custode_commands::accounts::Caller;
use custode_commands::recovery::Checked;
use custode_domain::recovery::{Offer, RecoveryMethod};
use custode_domain::{Actor, ActorKind, Secret, Violation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest user id and captcha token accepted.
const MAX_USER_ID_CHARS: usize = 254;
const MAX_CAPTCHA_CHARS: usize = 8192;
/// Longest answer read at all; RI-1's 200 characters apply once it is normalised.
const MAX_ANSWER_INPUT_CHARS: usize = 1000;

fn anonymous(correlation: Correlation) -> Caller {
    Caller {
        actor: Actor {
            kind: ActorKind::Holder,
            id: None,
        },
        correlation_id: correlation.0,
    }
}

fn invalid(rule: &'static str, field: &'static str, message: &str) -> Problem {
    Problem::new("validation-failed", "the request breaks 1 rule(s)")
        .with_errors(vec![Violation::new(rule, Some(field), message)])
}

/// A recovery id from the path: anything that is not a UUID names no recovery.
fn recovery_id(
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Uuid, Problem> {
    id.map(|Path(id)| id).map_err(|_| {
        Problem::new(
            "recovery-not-found",
            "a recovery's id is the UUID that POST /v1/recovery answered",
        )
    })
}

/// RC-1: every recovery call answers no sooner than `recovery.answer_floor_ms` after its
/// request arrived, whatever path it took, so a real account's extra work does not show
/// against a decoy's. A middleware over the recovery routes, so no handler can forget it.
pub async fn answer_floor(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string());
    let floored = path.as_deref().is_some_and(|p| {
        p == "/v1/recovery" || p.starts_with("/v1/recovery/") || p == "/recovery" || p == "/recover"
    });
    if !floored {
        return next.run(request).await;
    }
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(state.config.settings.recovery.answer_floor_ms);
    let response = next.run(request).await;
    tokio::time::sleep_until(deadline).await;
    response
}

fn per_minute(state: &AppState, what: &str, client: ClientIp, limit: u32) -> Result<(), Problem> {
    state
        .limiter
        .per_address_minute(what, client.0, limit, state.clock.now())
}

/// SEC-2: codes, answers and recovery tokens checked from one client address.
pub(super) fn checks_allowed(state: &AppState, client: ClientIp) -> Result<(), Problem> {
    per_minute(
        state,
        "code and answer checks",
        client,
        state.config.settings.limits.checks_per_address_per_minute,
    )
}

#[derive(Debug, Deserialize)]
pub struct StartRequest {
    user_id: String,
    captcha_token: Secret,
}

#[derive(Debug, Serialize)]
struct StartAnswer {
    recovery_id: Uuid,
    methods: Vec<Offer>,
    notice: &'static str,
}

const NOTICE_IT: &str = "Se entro qualche minuto non ricevi alcun messaggio, contatta l'amministratore del tuo account (l'Ordine o il gestore) per il recupero con modulo firmato.";
const NOTICE_EN: &str = "If no message arrives within a few minutes, contact your account's administrator (your Ordine or the provider) to recover it with a signed form.";

fn english(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("en"))
}

/// RC-1: `{user_id, captcha_token}` → the methods on file, masked (a decoy's for an id that
/// cannot recover).
pub async fn start(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    headers: HeaderMap,
    Body(req): Body<StartRequest>,
) -> Result<Response, Problem> {
    let limits = &state.config.settings.limits;
    per_minute(
        &state,
        "recovery starts",
        client,
        limits.recovery_starts_per_address_per_minute,
    )?;
    let user_id = req.user_id.trim();
    if user_id.is_empty() || user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(invalid(
            "RC-1.user_id",
            "user_id",
            "give the user id or the mailbox address, up to 254 characters",
        ));
    }
    let captcha = req.captcha_token.expose();
    if captcha.trim().is_empty() || captcha.len() > MAX_CAPTCHA_CHARS {
        return Err(invalid(
            "RC-1.captcha",
            "captcha_token",
            "solve the captcha and send its token",
        ));
    }
    match state.captcha.check(captcha, client.0).await {
        Verdict::Solved => {}
        Verdict::Refused => {
            return Err(Problem::new(
                "captcha-failed",
                "the captcha was not solved; solve it again",
            ))
        }
        Verdict::Unavailable => {
            return Err(Problem::new(
                "captcha-unavailable",
                "the captcha cannot be checked right now; try again shortly",
            )
            .retry_after(5))
        }
    }
    super::limits::anonymous_write(&state)?;
    let started = state
        .accounts
        .start_recovery(user_id, client.text(), &anonymous(correlation))
        .await?;
    let body = StartAnswer {
        recovery_id: started.recovery_id,
        methods: started.offers,
        notice: if english(&headers) {
            NOTICE_EN
        } else {
            NOTICE_IT
        },
    };
    // No position header: an anonymous caller must not watch the log's head move.
    settle(&state, started.position).await;
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// RC-2: mails a fresh single-use link to the recovery address.
pub async fn send_link(
    State(state): State<AppState>,
    correlation: Correlation,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Response, Problem> {
    send(state, correlation, id, RecoveryMethod::Email).await
}

/// RC-3: sends a fresh six-digit code to the recovery mobile.
pub async fn send_code(
    State(state): State<AppState>,
    correlation: Correlation,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Response, Problem> {
    send(state, correlation, id, RecoveryMethod::Sms).await
}

/// A recovery message (link or code) within the per-user-id limit, answered `202`.
async fn send(
    state: AppState,
    correlation: Correlation,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
    method: RecoveryMethod,
) -> Result<Response, Problem> {
    let id = recovery_id(id)?;
    let started = state.accounts.recovery(id).await?;
    super::limits::anonymous_write(&state)?;
    let caller = anonymous(correlation);
    let sent = match method {
        RecoveryMethod::Email => state.accounts.send_recovery_link(&started, &caller).await,
        _ => state.accounts.send_recovery_code(&started, &caller).await,
    }?;
    settle(&state, sent.position).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Debug, Deserialize)]
pub struct CodeRequest {
    code: Secret,
}

#[derive(Debug, Serialize)]
struct ResetToken {
    reset_token: String,
}

/// Settles what a check recorded, then answers.
async fn answer_check(
    state: &AppState,
    checked: Checked,
    what: &str,
    rule: &'static str,
    field: &'static str,
) -> Result<Response, Problem> {
    let (Checked::Wrong { position, .. } | Checked::Token { position, .. }) = &checked;
    settle(state, *position).await;
    checked_answer(checked, what, rule, field)
}

fn checked_answer(
    checked: Checked,
    what: &str,
    rule: &'static str,
    field: &'static str,
) -> Result<Response, Problem> {
    match checked {
        Checked::Token { token, .. } => Ok(Json(ResetToken {
            reset_token: token.expose().to_string(),
        })
        .into_response()),
        Checked::Wrong { attempts_left, .. } => {
            let (slug, detail) = if what == "code" {
                ("code-wrong", "the code is not right")
            } else {
                ("answer-wrong", "the answer is not right")
            };
            let message = if attempts_left == 0 {
                format!("the {what} is not right; no attempts are left")
            } else {
                format!("the {what} is not right; {attempts_left} attempt(s) left")
            };
            Err(Problem::new(slug, detail).with_errors(vec![Violation::new(
                rule,
                Some(field),
                message,
            )]))
        }
    }
}

/// RC-3: `{code}` → a reset token.
pub async fn verify_code(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
    Body(req): Body<CodeRequest>,
) -> Result<Response, Problem> {
    let id = recovery_id(id)?;
    checks_allowed(&state, client)?;
    super::limits::anonymous_write(&state)?;
    let checked = state
        .accounts
        .verify_recovery_code(id, req.code, client.text(), &anonymous(correlation))
        .await?;
    answer_check(&state, checked, "code", "RC-3.code", "code").await
}

#[derive(Debug, Serialize)]
struct Question {
    question: String,
}

/// RC-4: the security question.
pub async fn question(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Response, Problem> {
    let id = recovery_id(id)?;
    let question = state.accounts.security_question(id).await?;
    Ok(Json(Question { question }).into_response())
}

#[derive(Debug, Deserialize)]
pub struct AnswerRequest {
    answer: Secret,
}

/// RC-4: `{answer}` → a reset token.
pub async fn answer(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
    Body(req): Body<AnswerRequest>,
) -> Result<Response, Problem> {
    let id = recovery_id(id)?;
    checks_allowed(&state, client)?;
    super::limits::anonymous_write(&state)?;
    if req.answer.expose().chars().count() > MAX_ANSWER_INPUT_CHARS {
        return Err(invalid(
            "RC-4.answer",
            "answer",
            "the answer must have 1 to 200 characters",
        ));
    }
    let checked = state
        .accounts
        .answer_security_question(id, req.answer, client.text(), &anonymous(correlation))
        .await?;
    answer_check(&state, checked, "answer", "RC-4.answer", "answer").await
}

#[derive(Debug, Deserialize)]
pub struct CompleteRequest {
    user_id: String,
    token: Secret,
    new_password: Secret,
    new_password_repeat: Secret,
}

/// RC-5: the new password, twice, with the link's or reset token → 204.
pub async fn complete(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    Body(req): Body<CompleteRequest>,
) -> Result<Response, Problem> {
    checks_allowed(&state, client)?;
    super::limits::anonymous_write(&state)?;
    let outcome = state
        .accounts
        .complete_recovery(
            &req.user_id,
            req.token.expose(),
            req.new_password,
            req.new_password_repeat,
            &anonymous(correlation),
        )
        .await?;
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}
