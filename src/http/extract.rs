//! Request extractors: the JSON body (our problems instead of axum's plain-text rejections),
//! the holder's session, the operator's key, the client address and the correlation id.

use super::problem::Problem;
use crate::app::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use chrono::{DateTime, Utc};
use custode_commands::accounts::Caller;
use custode_commands::tokens::{constant_time_eq, parse_token};
use custode_domain::Actor;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use uuid::Uuid;

/// A JSON object body deserialized into `T`. Not JSON or not an object: `400`; over 64 KiB:
/// `413`; the wrong shape (a missing field, a wrong type): `422` naming the field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        parse_object(&body_bytes(req, state).await?).map(Body)
    }
}

/// As [`Body`], except that an empty body stands for `T::default()` (a call whose fields are
/// all optional, such as `POST /v1/account/two-factor`).
pub struct OptionalBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        parse_object(&bytes).map(OptionalBody)
    }
}

/// The body's bytes, within the 64 KiB limit.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::body_too_large()
        } else {
            Problem::body_unreadable()
        }
    })
}

/// A JSON object deserialized into `T`: not JSON or not an object is `400`, the wrong shape
/// `422` naming the field.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|_| Problem::new("malformed-json", "the body is not valid JSON"))?;
    if !value.is_object() {
        return Err(Problem::new(
            "malformed-json",
            "the body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| Problem::new("invalid-request", describe(&e)))
}

/// Says which field is wrong and what was expected, without echoing the value (it may be a
/// password sent with the wrong type).
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let message = e.inner().to_string();
    let message = message.split(" at line ").next().unwrap_or_default();
    let safe = if message.starts_with("missing field") {
        message.to_string()
    } else if let Some(at) = message.find("expected") {
        message.get(at..).unwrap_or_default().to_string()
    } else {
        "the value is not allowed here".to_string()
    };
    if path == "." || message.starts_with("missing field") {
        safe
    } else {
        format!("`{path}`: {safe}")
    }
}

/// The credentials of `Authorization: Bearer <token>`; the scheme's name is case-insensitive
/// (RFC 9110 §11.1), so `bearer` and `BEARER` are the same scheme. A request with two
/// `Authorization` headers has none: a proxy in front that reads the other one would disagree
/// about who is asking.
fn bearer(parts: &Parts) -> Option<&str> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod bearer_tests {
    use super::bearer;

    fn parts(value: &str) -> axum::http::request::Parts {
        let (parts, ()) = axum::http::Request::builder()
            .header("authorization", value)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_nothing_else_is_a_bearer() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc "] {
            assert_eq!(bearer(&parts(value)), Some("abc"), "{value}");
        }
        for value in [
            "Basic abc",
            "Bearerabc",
            "Bearer",
            "Token abc",
            "xBearer abc",
        ] {
            assert_eq!(bearer(&parts(value)), None, "{value}");
        }
        let (two, ()) = axum::http::Request::builder()
            .header("authorization", "Bearer abc")
            .header("authorization", "Bearer abc")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(bearer(&two), None, "two Authorization headers");
    }
}

/// Past this many tracked sessions, idle ones are dropped from the activity map.
const ACTIVITY_PRUNE_AT: usize = 10_000;

/// The holder's live session (SEC-3): not ended, not past 24 hours, not idle for an hour.
#[derive(Debug, Clone, Copy)]
pub struct HolderSession {
    pub session_id: Uuid,
    pub account_id: Uuid,
}

impl HolderSession {
    pub fn caller(&self, parts_correlation: Correlation) -> Caller {
        Caller {
            actor: Actor::holder(self.account_id),
            correlation_id: parts_correlation.0,
        }
    }
}

impl FromRequestParts<AppState> for HolderSession {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let hash = bearer(parts)
            .and_then(parse_token)
            .ok_or_else(Problem::unauthenticated)?;
        let row = match state.views.session(hash.as_str()) {
            Some(row) => row,
            None => {
                let epoch = state.views.sessions_epoch();
                let read = hash.clone();
                let row = super::query_pool(state.read_models.clone(), move |conn| {
                    custode_projections::sessions::by_token_hash(conn, read.as_str())
                })
                .await
                .map_err(|e| Problem::internal(&e))?
                .map_err(|e| Problem::internal(&e))?
                .ok_or_else(Problem::unauthenticated)?;
                state
                    .views
                    .keep_session(epoch, hash.as_str().to_string(), row.clone());
                row
            }
        };
        let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
        let (Ok(expires_at), Ok(started_at), Ok(fresh_until), Ok(session_id), Ok(account_id)) = (
            parse(&row.expires_at),
            parse(&row.started_at),
            parse(&row.fresh_until),
            Uuid::parse_str(&row.session_id),
            Uuid::parse_str(&row.account_id),
        ) else {
            return Err(Problem::internal(&"a session row cannot be read"));
        };
        let now = state.clock.now();
        if row.ended_at.is_some() || expires_at <= now {
            return Err(Problem::new(
                "unauthenticated",
                "the session has ended; log in again",
            ));
        }
        let sessions = &state.config.settings.sessions;
        let mut activity = state
            .activity
            .lock()
            .map_err(|_| Problem::internal(&"activity lock poisoned"))?;
        let last_auth = started_at.max(fresh_until - sessions.step_up());
        let last_seen = activity
            .get(&session_id)
            .copied()
            .unwrap_or(last_auth)
            .max(last_auth);
        if now - last_seen > sessions.idle() {
            activity.remove(&session_id);
            return Err(Problem::new(
                "unauthenticated",
                "the session was idle too long; log in again",
            ));
        }
        if activity.len() >= ACTIVITY_PRUNE_AT {
            // Sessions idle past the limit can never be used again: forget them.
            activity.retain(|_, seen| now - *seen <= sessions.idle());
        }
        activity.insert(session_id, now);
        Ok(Self {
            session_id,
            account_id,
        })
    }
}

/// Whether the request carried the operator key, as `bounded` found it (compared once).
#[derive(Debug, Clone, Copy)]
pub struct OperatorKeyGiven(pub bool);

/// Whether the request carries the operator key (SEC-2: operator calls are not limited by
/// address).
pub fn is_operator(parts: &Parts, state: &AppState) -> bool {
    match (state.config.operator_key.as_ref(), bearer(parts)) {
        (Some(key), Some(given)) => constant_time_eq(given.as_bytes(), key.expose().as_bytes()),
        _ => false,
    }
}

/// An operator (SEC-4), authenticated by `CUSTODE_OPERATOR_KEY`.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        if state.config.operator_key.is_none() {
            return Err(Problem::new(
                "operator-key-unset",
                "operator endpoints are disabled: set CUSTODE_OPERATOR_KEY and restart",
            ));
        }
        // `bounded` compared the key already; a request that did not pass it is compared here.
        let operator = match parts.extensions.get::<OperatorKeyGiven>() {
            Some(given) => given.0,
            None => is_operator(parts, state),
        };
        if operator {
            return Ok(Operator);
        }
        // A credential that is not the key (never logged itself): counted, and said with the
        // client's address at most once a second, for an operator to see someone guessing it.
        // No credential at all is a plain 401.
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let (refused, first_this_second) = state.metrics.operator_key_refused();
            if first_this_second {
                let client = ClientIp::from_request_parts(parts, state)
                    .await
                    .ok()
                    .and_then(|c| c.0);
                tracing::warn!(
                    client = %client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
                    refused,
                    "an operator route refused a credential that is not the operator key (at most one such line a second; `refused` counts them all)"
                );
            }
        }
        Err(Problem::new(
            "unauthenticated",
            "send the operator key as `Authorization: Bearer <key>`",
        ))
    }
}

/// The client's address (SEC-2): the socket's peer, unless that peer is a trusted proxy, then
/// the last untrusted `X-Forwarded-For` hop.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let trusted = &state.config.trusted_proxies;
        let Some(peer) = peer else {
            return Ok(Self(None));
        };
        if !trusted.contains(&peer) {
            return Ok(Self(Some(peer)));
        }
        let forwarded: Vec<IpAddr> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        let client = forwarded
            .into_iter()
            .rev()
            .find(|hop| !trusted.contains(hop));
        Ok(Self(Some(client.unwrap_or(peer))))
    }
}

impl ClientIp {
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

/// `X-Correlation-Id` when the caller sends a UUID, else a fresh one.
#[derive(Debug, Clone, Copy)]
pub struct Correlation(pub Uuid);

impl Correlation {
    /// An operator's request (SEC-4), as the handlers record it.
    pub fn operator(&self) -> custode_commands::accounts::Caller {
        custode_commands::accounts::Caller {
            actor: custode_domain::Actor::operator(),
            correlation_id: self.0,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Correlation {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let given = parts
            .headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::parse_str(v).ok());
        Ok(Self(given.unwrap_or_else(Uuid::now_v7)))
    }
}

/// Marks a request a page makes through the API's router (`pages::api`): a login or
/// re-authentication through it is on the web channel (AH-1 shows `web`). Only the server sets
/// an extension; no client can.
#[derive(Debug, Clone, Copy)]
pub struct FromPage;

/// The channel a login or re-authentication came through: the pages, or the API.
#[derive(Debug, Clone, Copy)]
pub struct Channel(pub custode_domain::account::AccessChannel);

impl<S: Send + Sync> FromRequestParts<S> for Channel {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        use custode_domain::account::AccessChannel;
        Ok(Self(if parts.extensions.get::<FromPage>().is_some() {
            AccessChannel::Web
        } else {
            AccessChannel::Api
        }))
    }
}
