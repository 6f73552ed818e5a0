//! Health, readiness, the OpenAPI document, the strength meter (PW-3) and the suggested
//! security questions (RI-1).

use super::extract::{Body, ClientIp};
use super::problem::Problem;
use crate::app::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use custode_domain::policy::{self, Holder};
use custode_domain::recovery::{SUGGESTED_QUESTIONS_EN, SUGGESTED_QUESTIONS_IT};
use custode_domain::Secret;
use serde::Deserialize;

/// The OpenAPI document, checked in under `schemas/` and served as is.
pub const OPENAPI: &str = include_str!("../../schemas/openapi.json");

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the read models to reach the head it saw.
const READY_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Ready once this process's read models have applied everything in the log.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    // Under load the read models trail the log by a batch (a worker's outcome appended a
    // moment ago): that is not unreadiness, and a balancer must not see the node flap. Ready
    // when they reach the head this request saw within a short wait; still catching up
    // (at startup, after a rebuild) answers 503 at once after it.
    let head = state.log.head();
    let mut applied = state.applied.clone();
    let reached = tokio::time::timeout(READY_WAIT, applied.wait_for(|p| *p >= head)).await;
    if matches!(reached, Ok(Ok(_))) {
        // The log's position stays out of anonymous answers: watching it move would tell
        // what others' requests wrote (a real recovery's messages against a decoy's none).
        Ok(Json(serde_json::json!({ "status": "ready" })))
    } else {
        Err(Problem::new(
            "not-ready",
            "the read models have not caught up with the log yet",
        )
        .retry_after(1))
    }
}

pub async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct StrengthRequest {
    password: Secret,
    user_id: Option<String>,
}

/// PW-3: the zxcvbn score and each PW-1 rule, met or not. Stores and logs nothing.
pub async fn strength(
    State(state): State<AppState>,
    client: ClientIp,
    Body(req): Body<StrengthRequest>,
) -> Result<Response, Problem> {
    // zxcvbn costs CPU (SEC-9): limited per address, and at most two at once, apart from the
    // hashing pool so that the meter never holds up a login.
    state.limiter.per_address_minute(
        "strength checks from this address",
        client.0,
        state.config.settings.limits.strength_per_address_per_minute,
        state.clock.now(),
    )?;
    let Ok(_slot) = state.strength_slots.clone().try_acquire_owned() else {
        return Err(Problem::busy("the service is busy; try again shortly"));
    };
    let settings = state.config.settings.policy.clone();
    let evaluation = tokio::task::spawn_blocking(move || {
        let holder = Holder {
            user_id: req.user_id.as_deref().unwrap_or_default(),
            personal: Vec::new(),
        };
        policy::evaluate(req.password.expose(), &holder, &settings)
    })
    .await
    .map_err(|e| Problem::internal(&e))?;
    Ok(Json(evaluation).into_response())
}

#[derive(Debug, Deserialize)]
pub struct LanguageQuery {
    language: Option<custode_domain::account::Language>,
}

/// RI-1: suggested questions in the holder's language (a custom one is allowed too).
pub async fn suggested_questions(
    query: Result<Query<LanguageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) =
        query.map_err(|_| Problem::new("invalid-request", "`language` is `it` or `en`"))?;
    let questions = match query.language.unwrap_or_default() {
        custode_domain::account::Language::En => SUGGESTED_QUESTIONS_EN,
        custode_domain::account::Language::It => SUGGESTED_QUESTIONS_IT,
    };
    Ok(Json(serde_json::json!({ "questions": questions, "custom_allowed": true })).into_response())
}
