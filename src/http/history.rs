//! The access history (AH-1..3): the identity front end's reports of accesses to service
//! providers (`POST /v1/admin/access-events`), and the holder's pages of it
//! (`GET /v1/account/access-history`). Logins and mail servers' checks reach the history from
//! the log on their own; see `custode_projections::access` for the storage.

use super::extract::{Body, Correlation, HolderSession, Operator};
use super::problem::Problem;
use super::{query, wait_for_after_history, with_position, After};
use crate::app::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use custode_commands::accounts::Caller;
use custode_domain::access::{
    report_violations, AccessEvent, HistoryItem, Outcome, ServiceAccessReported,
};
use custode_domain::{Actor, Violation};
use custode_projections::access::{Cursor, Filter, MAX_PAGE};
use serde::{Deserialize, Serialize};

/// A page holds this many items unless the caller asks otherwise.
const DEFAULT_PAGE: usize = 20;

#[derive(Debug, Deserialize)]
pub struct ReportRequest {
    user_id: String,
    service: String,
    outcome: Outcome,
    reason: Option<String>,
    client_ip: Option<String>,
    at: DateTime<Utc>,
}

fn invalid(errors: Vec<Violation>) -> Problem {
    Problem::new(
        "validation-failed",
        format!("the request breaks {} rule(s)", errors.len()),
    )
    .with_errors(errors)
}

/// AH-1: the identity front end reports an access to a service provider. Recorded on the
/// account's access stream, durable before the `202`; the answer carries the record's position
/// (`custode-position`) for a read that must see it.
pub async fn report_access(
    State(state): State<AppState>,
    _: Operator,
    correlation: Correlation,
    Body(req): Body<ReportRequest>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let mut errors = Vec::new();
    let client_ip = match req.client_ip.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => match text.parse::<std::net::IpAddr>() {
            Ok(ip) => Some(ip.to_string()),
            Err(_) => {
                errors.push(Violation::new(
                    "AH-1.client_ip",
                    Some("client_ip"),
                    "the client's address is an IPv4 or IPv6 address",
                ));
                None
            }
        },
    };
    if req.user_id.chars().count() > 254 {
        errors.push(Violation::new(
            "AH-1.user_id",
            Some("user_id"),
            "a user id has at most 254 characters",
        ));
    }
    let report = ServiceAccessReported {
        service: req.service.trim().to_string(),
        outcome: req.outcome,
        reason: req.reason.map(|r| r.trim().to_string()),
        client_ip,
        at: req.at,
    };
    let oldest = now - state.config.settings.history.retention();
    errors.extend(report_violations(&report, now, Some(oldest)));
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let key = custode_domain::user_registry::user_key(&req.user_id);
    let account_id = match state.user_ids.get(&key) {
        Some(id) => id,
        None => {
            let id = query(&state, move |conn| {
                custode_projections::accounts::account_id_of(conn, &req.user_id)
            })
            .await?
            .and_then(|id| id.parse::<uuid::Uuid>().ok())
            .ok_or_else(|| Problem::new("account-not-found", "no account has that user id"))?;
            state.user_ids.remember(key, id);
            id
        }
    };
    let caller = Caller {
        actor: Actor::operator(),
        correlation_id: correlation.0,
    };
    let position = state
        .accounts
        .record_access(
            account_id,
            AccessEvent::ServiceAccessReported(report),
            &caller,
            None,
        )
        .await?;
    Ok(with_position(position, StatusCode::ACCEPTED))
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
    outcome: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
struct Item {
    at: String,
    kind: &'static str,
    service: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    client_ip: Option<String>,
}

impl From<HistoryItem> for Item {
    fn from(i: HistoryItem) -> Self {
        Item {
            at: rfc3339(i.at),
            kind: i.kind.as_str(),
            service: i.service,
            outcome: i.outcome.as_str(),
            reason: i.reason,
            client_ip: i.client_ip,
        }
    }
}

#[derive(Debug, Serialize)]
struct HistoryPage {
    total: u64,
    last_access: Option<String>,
    items: Vec<Item>,
    next_cursor: Option<String>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A bound of the date range: an RFC 3339 time, or a date (`2026-03-01`, a UTC day: from its
/// first millisecond, to its last, so both ends are inclusive).
fn bound(text: &str, end_of_day: bool) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let at = if end_of_day {
        day.and_hms_milli_opt(23, 59, 59, 999)?
    } else {
        day.and_hms_opt(0, 0, 0)?
    };
    Some(at.and_utc())
}

fn filter(q: &HistoryQuery) -> Result<Filter, Problem> {
    let mut errors = Vec::new();
    let mut range = |text: &Option<String>, field: &'static str, end: bool| match text {
        None => None,
        Some(t) => {
            let parsed = bound(t.trim(), end);
            if parsed.is_none() {
                errors.push(Violation::new(
                    "AH-2.range",
                    Some(field),
                    "a date (2026-03-01) or an RFC 3339 time",
                ));
            }
            parsed
        }
    };
    let from = range(&q.from, "from", false);
    let to = range(&q.to, "to", true);
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            errors.push(Violation::new(
                "AH-2.range",
                Some("to"),
                "the range ends before it starts",
            ));
        }
    }
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(text) => {
            let parsed = Outcome::parse(text);
            if parsed.is_none() {
                errors.push(Violation::new(
                    "AH-2.outcome",
                    Some("outcome"),
                    "the outcome is `success` or `failure`",
                ));
            }
            parsed
        }
    };
    let after = match q.cursor.as_deref() {
        None => None,
        Some(text) => {
            let parsed = Cursor::decode(text);
            if parsed.is_none() {
                errors.push(Violation::new(
                    "AH-2.cursor",
                    Some("cursor"),
                    "the cursor is the next_cursor of an earlier page",
                ));
            }
            parsed
        }
    };
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                errors.push(Violation::new(
                    "AH-2.limit",
                    Some("limit"),
                    format!("the limit is a number from 1 to {MAX_PAGE}"),
                ));
                DEFAULT_PAGE
            }
        },
    };
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    Ok(Filter {
        from,
        to,
        outcome,
        after,
        limit,
    })
}

/// AH-2: the holder's access history: the total, the last access, and a page of items newest
/// first, filtered by an inclusive date range and an outcome, with an opaque cursor.
pub async fn access_history(
    State(state): State<AppState>,
    session: HolderSession,
    after: After,
    uri: axum::http::Uri,
) -> Result<Response, Problem> {
    let q = axum::extract::Query::<HistoryQuery>::try_from_uri(&uri)
        .map_err(|e| Problem::new("invalid-request", format!("the query string: {e}")))?
        .0;
    let filter = filter(&q)?;
    wait_for_after_history(&state, &after).await?;
    let account_id = session.account_id.to_string();
    let page = query(&state, move |conn| {
        custode_projections::access::page(conn, &account_id, &filter)
    })
    .await?;
    Ok(Json(HistoryPage {
        total: page.total,
        last_access: page.last_access.map(rfc3339),
        items: page.items.into_iter().map(Item::from).collect(),
        next_cursor: page.next.map(Cursor::encode),
    })
    .into_response())
}
