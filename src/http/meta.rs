//! Health, readiness, the OpenAPI document, the strength meter (PW-3) and the suggested
//! security questions (RI-1).

use super::extract::Body;
use super::problem::Problem;
use crate::app::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use custode_domain::policy::{self, Holder};
use custode_domain::Secret;
use serde::Deserialize;

/// The OpenAPI document, checked in under `schemas/` and served as is.
pub const OPENAPI: &str = include_str!("../../schemas/openapi.json");

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready once this process's read models have applied everything in the log.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    let head = state.log.head();
    let applied = *state.applied.borrow();
    if applied >= head {
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
    Body(req): Body<StrengthRequest>,
) -> Result<Response, Problem> {
    let settings = state.config.settings.policy.clone();
    // zxcvbn costs CPU: it waits its turn on the bounded pool, like hashing (SEC-9).
    let evaluation = state
        .accounts
        .services()
        .pool
        .run(move || {
            let holder = Holder {
                user_id: req.user_id.as_deref().unwrap_or_default(),
                personal: Vec::new(),
            };
            policy::evaluate(req.password.expose(), &holder, &settings)
        })
        .await
        .map_err(|e| match e {
            custode_commands::hashing::PoolError::Busy => {
                Problem::busy("the service is busy; try again shortly")
            }
            closed => Problem::internal(&closed),
        })?;
    Ok(Json(evaluation).into_response())
}

#[derive(Debug, Deserialize)]
pub struct LanguageQuery {
    language: Option<custode_domain::account::Language>,
}

const QUESTIONS_IT: &[&str] = &[
    "Qual è il nome del tuo primo animale domestico?",
    "In quale città sono nati i tuoi nonni materni?",
    "Qual era il nome della tua scuola elementare?",
    "Qual è il secondo nome del tuo parente più anziano?",
    "In quale via abitavi da bambino?",
];
const QUESTIONS_EN: &[&str] = &[
    "What was the name of your first pet?",
    "In which city were your maternal grandparents born?",
    "What was the name of your primary school?",
    "What is the middle name of your oldest relative?",
    "On which street did you live as a child?",
];

/// RI-1: suggested questions in the holder's language (a custom one is allowed too).
pub async fn suggested_questions(
    query: Result<Query<LanguageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) =
        query.map_err(|_| Problem::new("invalid-request", "`language` is `it` or `en`"))?;
    let questions = match query.language.unwrap_or_default() {
        custode_domain::account::Language::En => QUESTIONS_EN,
        custode_domain::account::Language::It => QUESTIONS_IT,
    };
    Ok(Json(serde_json::json!({ "questions": questions, "custom_allowed": true })).into_response())
}
