//! WEB-2: "the same rules, limits and timing floors as the API, through the same handlers".
//! A page does what it does by calling the API's own router in process: the request the
//! handler sees is the one an integrator would send (the session as a bearer token, the body as
//! JSON), with the page's client address, so the extractors, per-address limits, refusals and
//! read-your-writes waits are the API's, unchanged.

use crate::http::extract::FromPage;
use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::Router;
use serde_json::Value;
use std::net::SocketAddr;

/// The largest answer a page reads back from the API (an access-history page, an export is
/// never asked for).
const ANSWER_LIMIT: usize = 1 << 20;

/// The API's routes with their state, for the pages to call.
#[derive(Clone)]
pub struct Api(pub Router);

/// Who the page's request came from, carried into the API call.
#[derive(Clone, Default)]
pub struct Origin {
    pub peer: Option<ConnectInfo<SocketAddr>>,
    pub forwarded: Vec<HeaderValue>,
    pub correlation: Option<HeaderValue>,
    pub session: Option<String>,
    /// The page's language, as `Accept-Language` for what the API words itself (RC-7's notice).
    pub language: Option<&'static str>,
}

impl Origin {
    pub fn from_request(headers: &HeaderMap, peer: Option<ConnectInfo<SocketAddr>>) -> Self {
        Self {
            peer,
            forwarded: headers.get_all("x-forwarded-for").iter().cloned().collect(),
            correlation: headers.get("x-correlation-id").cloned(),
            session: None,
            language: None,
        }
    }
}

/// One failed rule of a refusal.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: Option<String>,
    pub rule: String,
    pub message: String,
}

/// The API's refusal (its problem JSON), as a page shows it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub slug: String,
    pub title: String,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<HeaderValue>,
}

impl Refusal {
    pub fn internal() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            slug: "internal".into(),
            title: "Something failed on our side".into(),
            detail: "the page could not be served".into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    fn from_answer(status: StatusCode, body: &[u8], retry_after: Option<HeaderValue>) -> Self {
        let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |key: &str| {
            problem
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let errors = problem
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| FieldError {
                        field: e.get("field").and_then(Value::as_str).map(str::to_string),
                        rule: e
                            .get("rule")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        message: e
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            status,
            slug: text("type")
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            title: text("title"),
            detail: text("detail"),
            errors,
            retry_after,
        }
    }
}

impl Api {
    /// `method path` with `body` as JSON, as `origin`; the answer's JSON (`null` when empty), or
    /// the refusal.
    pub async fn call(
        &self,
        origin: &Origin,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Refusal> {
        let bytes = match &body {
            Some(body) => serde_json::to_vec(body).map_err(|_| Refusal::internal())?,
            None => Vec::new(),
        };
        let mut builder = Request::builder().method(method).uri(path);
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &origin.session {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for hop in &origin.forwarded {
            builder = builder.header("x-forwarded-for", hop.clone());
        }
        if let Some(language) = origin.language {
            builder = builder.header(header::ACCEPT_LANGUAGE, language);
        }
        if let Some(correlation) = &origin.correlation {
            builder = builder.header("x-correlation-id", correlation.clone());
        }
        let mut request = builder
            .body(AxumBody::from(bytes))
            .map_err(|_| Refusal::internal())?;
        if let Some(peer) = origin.peer {
            request.extensions_mut().insert(peer);
        }
        request.extensions_mut().insert(FromPage);
        let mut router = self.0.clone();
        let response = match tower_service::Service::<Request>::call(&mut router, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let body = axum::body::to_bytes(response.into_body(), ANSWER_LIMIT)
            .await
            .map_err(|_| Refusal::internal())?;
        if status.is_success() {
            if body.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&body).map_err(|_| Refusal::internal());
        }
        Err(Refusal::from_answer(status, &body, retry_after))
    }
}
