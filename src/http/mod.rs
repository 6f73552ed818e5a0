//! The HTTP API under `/v1`: thin adapters from JSON to commands and read models. Handlers
//! parse, call the handler or query, wait for this process's read models to apply what they
//! wrote (read-your-writes) and shape the answer.

mod account;
mod admin;
mod delegation;
pub mod extract;
mod history;
pub mod limits;
mod meta;
pub mod metrics;
mod pages;
pub mod problem;
mod recovery;
mod self_care;
pub mod serve;
mod sessions;

use crate::app::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use custode_projections::accounts::AccountRow;
use custode_projections::cache::{ByAccount, Forget};
use metrics::TurnedAway;
use problem::Problem;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Request bodies above this are refused with `413` (SPEC: 64 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;
/// The header every command's answer carries: the log position of its last event.
pub const POSITION_HEADER: &str = "custode-position";

/// The application, with every route, the body limit and our problem fallbacks.
pub fn app(state: AppState) -> Router {
    let (router, _) = routes();
    let api = pages::Api(router.clone().with_state(state.clone()));
    let router = if state.config.web.enabled {
        router.merge(pages::router().layer(axum::Extension(api)))
    } else {
        router
    };
    router
        .fallback(|| async { Problem::new("not-found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                "method-not-allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            recovery::answer_floor,
        ))
        .layer(middleware::from_fn(whole_body))
        .layer(middleware::from_fn_with_state(state.clone(), bounded))
        .layer(panics_answered())
        .layer(middleware::from_fn_with_state(state.clone(), access_log))
        .layer(middleware::map_response(no_store))
        .with_state(state)
}

/// SEC-8: the operator listener's application: `/metrics` and nothing else. It shows the log's
/// head and the workers' counters, which move with every message sent, so it is never served
/// on the public listener.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { Problem::new("not-found", "no such endpoint") })
        .layer(middleware::map_response(no_store))
        .with_state(state)
}

/// A handler that panics answers a `500` problem (logged and counted like any answer) instead of
/// dropping the connection, which a client sees as a reset with no answer at all.
pub fn panics_answered(
) -> tower_http::catch_panic::CatchPanicLayer<fn(Box<dyn std::any::Any + Send>) -> Response> {
    fn answer(_: Box<dyn std::any::Any + Send>) -> Response {
        // Rust's default panic hook has printed the panic's message on stderr; none of it goes
        // to the client.
        Problem::internal(&"a handler panicked").into_response()
    }
    tower_http::catch_panic::CatchPanicLayer::custom(answer as fn(_) -> _)
}

/// SEC-8: answers that carry a secret (temporary passwords, session and reset tokens) must
/// never be cached, and nothing the API answers is meant to be, so every answer, problems
/// included, says `no-store` unless its handler set a `Cache-Control` of its own.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Every (method, path) the API serves; the OpenAPI document must list exactly these.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes().1
}

fn routes() -> (Router<AppState>, Vec<(Method, &'static str)>) {
    let table: Vec<(Method, &'static str, MethodRouter<AppState>)> = vec![
        (Method::GET, "/healthz", get(meta::healthz)),
        (Method::GET, "/readyz", get(meta::readyz)),
        (Method::GET, "/v1/openapi.json", get(meta::openapi)),
        (
            Method::POST,
            "/v1/admin/accounts",
            post(admin::open_account),
        ),
        (
            Method::GET,
            "/v1/admin/accounts/{user_id}",
            get(admin::get_account),
        ),
        (
            Method::GET,
            "/v1/admin/dead-letters",
            get(admin::dead_letters),
        ),
        (
            Method::POST,
            "/v1/admin/dead-letters/{notice_id}/retry",
            post(admin::retry_dead_letter),
        ),
        (
            Method::POST,
            "/v1/admin/accounts/{user_id}/password-reset",
            post(admin::password_reset),
        ),
        (
            Method::GET,
            "/v1/admin/accounts/{user_id}/audit",
            get(admin::audit_export),
        ),
        (Method::POST, "/v1/sessions", post(sessions::login)),
        (
            Method::DELETE,
            "/v1/sessions/current",
            delete(sessions::logout),
        ),
        (
            Method::POST,
            "/v1/sessions/current/reauth",
            post(sessions::reauth),
        ),
        (Method::GET, "/v1/account", get(account::page)),
        (
            Method::PUT,
            "/v1/account/recovery-info",
            put(account::set_recovery_info),
        ),
        (
            Method::POST,
            "/v1/account/password",
            post(account::change_password),
        ),
        (Method::POST, "/v1/account/otp", post(account::request_otp)),
        (
            Method::PUT,
            "/v1/account/mail-protocols",
            put(delegation::set_mail_protocols),
        ),
        (
            Method::POST,
            "/v1/account/two-factor",
            post(delegation::start_two_factor),
        ),
        (
            Method::POST,
            "/v1/account/two-factor/confirm",
            post(delegation::confirm_two_factor),
        ),
        (
            Method::POST,
            "/v1/account/two-factor/disable",
            post(delegation::disable_two_factor),
        ),
        (
            Method::POST,
            "/v1/account/app-passwords",
            post(delegation::create_app_password),
        ),
        (
            Method::POST,
            "/v1/account/app-passwords/{scope}/postpone",
            post(delegation::postpone_app_password),
        ),
        (
            Method::POST,
            "/v1/account/app-passwords/{scope}/regenerate",
            post(delegation::regenerate_app_password),
        ),
        (
            Method::DELETE,
            "/v1/account/app-passwords/{scope}",
            delete(delegation::deactivate_app_password),
        ),
        (
            Method::POST,
            "/v1/account/collaborators",
            post(delegation::create_collaborator),
        ),
        (
            Method::POST,
            "/v1/account/collaborators/{collaborator_id}/password-reset",
            post(delegation::reset_collaborator),
        ),
        (
            Method::POST,
            "/v1/account/collaborators/{collaborator_id}/password-reset/resend",
            post(delegation::resend_collaborator_link),
        ),
        (
            Method::POST,
            "/v1/account/collaborators/{collaborator_id}/deactivate",
            post(delegation::deactivate_collaborator),
        ),
        (
            Method::POST,
            "/v1/collaborator-password",
            post(delegation::set_collaborator_password),
        ),
        (
            Method::POST,
            "/v1/auth/app-password",
            post(delegation::check_app_password),
        ),
        (
            Method::POST,
            "/v1/admin/hardware-tokens",
            post(delegation::register_hardware_token),
        ),
        (
            Method::POST,
            "/v1/admin/access-events",
            post(history::report_access),
        ),
        (
            Method::POST,
            "/v1/admin/accounts/{user_id}/revoke",
            post(admin::revoke),
        ),
        (
            Method::PUT,
            "/v1/admin/accounts/{user_id}/contact-mobile",
            put(admin::set_contact_mobile),
        ),
        (
            Method::POST,
            "/v1/account/suspension",
            post(delegation::suspend),
        ),
        (
            Method::PUT,
            "/v1/account/language",
            put(account::set_language),
        ),
        (
            Method::POST,
            "/v1/account/recovery-info/verify",
            post(account::verify_recovery_contact),
        ),
        (
            Method::PUT,
            "/v1/account/identity-document",
            put(account::record_document),
        ),
        (
            Method::PUT,
            "/v1/account/contact-email",
            put(self_care::change_contact_email),
        ),
        (
            Method::POST,
            "/v1/account/contact-mobile",
            post(self_care::start_contact_mobile_change),
        ),
        (
            Method::POST,
            "/v1/account/contact-mobile/confirm",
            post(self_care::confirm_contact_mobile_change),
        ),
        (
            Method::POST,
            "/v1/account/recovery-info/email",
            post(self_care::start_recovery_email_change),
        ),
        (
            Method::POST,
            "/v1/account/recovery-info/email/confirm",
            post(self_care::confirm_recovery_email_change),
        ),
        (
            Method::POST,
            "/v1/account/recovery-info/mobile",
            post(self_care::start_recovery_mobile_change),
        ),
        (
            Method::POST,
            "/v1/account/recovery-info/mobile/confirm",
            post(self_care::confirm_recovery_mobile_change),
        ),
        (
            Method::GET,
            "/v1/account/access-history",
            get(history::access_history),
        ),
        (
            Method::GET,
            "/v1/recovery-info/questions",
            get(meta::suggested_questions),
        ),
        (Method::POST, "/v1/password/strength", post(meta::strength)),
        (Method::POST, "/v1/recovery", post(recovery::start)),
        (
            Method::POST,
            "/v1/recovery/complete",
            post(recovery::complete),
        ),
        (
            Method::POST,
            "/v1/recovery/{recovery_id}/email",
            post(recovery::send_link),
        ),
        (
            Method::POST,
            "/v1/recovery/{recovery_id}/sms",
            post(recovery::send_code),
        ),
        (
            Method::POST,
            "/v1/recovery/{recovery_id}/sms/verify",
            post(recovery::verify_code),
        ),
        (
            Method::GET,
            "/v1/recovery/{recovery_id}/question",
            get(recovery::question),
        ),
        (
            Method::POST,
            "/v1/recovery/{recovery_id}/question",
            post(recovery::answer),
        ),
    ];
    let mut router = Router::new();
    let mut listed = Vec::with_capacity(table.len());
    for (method, path, handler) in table {
        router = router.route(path, handler);
        listed.push((method, path));
    }
    (router, listed)
}

/// One line per request (method, route, status, time; never bodies, headers or query strings)
/// and the request counters of `/metrics`.
async fn access_log(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    tracing::info!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    state
        .metrics
        .observe(&route, method.as_str(), status, elapsed);
    response
}

/// SEC-9: at most `http.max_concurrent_requests` requests at once and each within
/// `http.request_timeout_ms`; past either, `503` with `Retry-After` at once. Health and
/// readiness probes are never turned away.
async fn bounded(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if is_probe(&request) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let client =
        <extract::ClientIp as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &state,
        )
        .await
        .ok()
        .and_then(|c| c.0);
    // SEC-2: operator calls (mail servers' checks among them, AP-7) are not limited by address.
    let operator = extract::is_operator(&parts, &state);
    parts.extensions.insert(extract::OperatorKeyGiven(operator));
    let request = Request::from_parts(parts, body);
    let client = if operator { None } else { client };
    let Some(_mine) = AddressPlace::take(&state, client) else {
        state.metrics.turned_away(TurnedAway::Address);
        return Problem::busy("too many requests at once from this address; try again shortly")
            .into_response();
    };
    let Ok(_place) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.turned_away(TurnedAway::Capacity);
        return Problem::busy("too many requests at once; try again shortly").into_response();
    };
    let limit = Duration::from_millis(state.config.http.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.turned_away(TurnedAway::Timeout);
            Problem::busy("the request took too long; try again shortly").into_response()
        }
    }
}

/// A body is read whole (up to the limit) before the request is routed, so that an answer
/// given before its handler reads the body (a refused credential, say) still leaves the
/// connection reusable. hyper reuses a keep-alive connection only when the body was read to
/// its end; otherwise it closes it right after the answer, and a client that has already sent
/// its next request on it meets a connection closed without an answer. A body that declares
/// more than the limit gets its `413` at once, and one chunked past the limit as soon as it
/// passes it, both saying `Connection: close` (the rest of the body is never read).
///
/// Health probes are left alone: `bounded` does not time them, so waiting here for a body that
/// never comes would hold them for good. So is a request that asks `Expect: 100-continue`:
/// reading its body would invite every caller, refused or not, to upload it.
async fn whole_body(request: Request, next: Next) -> Response {
    if is_probe(&request) || request.headers().contains_key(header::EXPECT) {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    let limit = match declared {
        Some(length) if (1..=BODY_LIMIT).contains(&length) => length,
        None if chunked => BODY_LIMIT,
        // Refused on its declared length at once, unread: the connection closes after the
        // answer, and the answer says so, for a client's pool to know.
        Some(length) if length > BODY_LIMIT => return too_large(),
        _ => return next.run(request).await,
    };
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(error) => {
            let inner = error.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                Problem::body_unreadable().into_response()
            }
        }
    }
}

/// `413` for a body past [`BODY_LIMIT`], left unread: the connection closes after it.
fn too_large() -> Response {
    let mut response = Problem::body_too_large().into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Health and readiness probes: never turned away, never timed, their bodies never read.
fn is_probe(request: &Request) -> bool {
    matches!(request.uri().path(), "/healthz" | "/readyz")
}

/// How many times `http.max_concurrent_per_address` one IPv6 /48 may hold (a customer with
/// many /64s must not take the whole pool).
const SITE_SHARE: usize = 4;

/// A request's places among its client address's (and its IPv6 /48's) requests in flight;
/// given back on drop.
struct AddressPlace {
    places: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    groups: Vec<String>,
}

impl AddressPlace {
    /// Places for a request from `client`, or `None` when its address (or its /48) holds all of
    /// its own.
    fn take(state: &AppState, client: Option<std::net::IpAddr>) -> Option<Self> {
        let places = state.in_flight_by_address.clone();
        let Some(ip) = client else {
            return Some(Self {
                places,
                groups: Vec::new(),
            });
        };
        let per_address = state.config.http.max_concurrent_per_address;
        let mut limits = vec![(limits::address_group(ip), per_address)];
        if let Some(site) = limits::address_site(ip) {
            limits.push((site, per_address.saturating_mul(SITE_SHARE)));
        }
        {
            let mut map = places.lock().ok()?;
            if limits
                .iter()
                .any(|(group, limit)| map.get(group).copied().unwrap_or(0) >= *limit)
            {
                return None;
            }
            for (group, _) in &limits {
                *map.entry(group.clone()).or_default() += 1;
            }
        }
        Some(Self {
            places,
            groups: limits.into_iter().map(|(group, _)| group).collect(),
        })
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        if let Ok(mut map) = self.places.lock() {
            for group in &self.groups {
                if let Some(taken) = map.get_mut(group) {
                    *taken = taken.saturating_sub(1);
                    if *taken == 0 {
                        map.remove(group);
                    }
                }
            }
        }
    }
}

/// Waits until this process's read models have applied `position`, for at most the configured
/// wait. Commands use it before answering; reads with `?after=` before querying.
pub async fn applied(state: &AppState, position: u64) -> bool {
    applied_on(state, state.applied.clone(), position).await
}

/// Waits as [`applied`] does on `applied`, one of the projector's positions.
async fn applied_on(state: &AppState, mut applied: watch::Receiver<u64>, position: u64) -> bool {
    let wait = Duration::from_millis(state.config.http.read_wait_ms);
    let reached = tokio::time::timeout(wait, applied.wait_for(|p| *p >= position)).await;
    matches!(reached, Ok(Ok(_)))
}

/// Waits until the read models of this process have a command's events, so the next read
/// sees them. The command is committed either way: answering an error would invite a
/// duplicate retry, so a read model that stays behind is only logged.
pub async fn settle(state: &AppState, position: u64) {
    if !applied(state, position).await {
        tracing::warn!(position, "read models are behind the log; answering anyway");
    }
}

/// `response` with the position header of the command that produced it.
/// A time as a read model stores it (`+00:00`) as the API writes times: UTC with `Z`, its
/// precision kept (found from outside: `created_at` was the one answer with `+00:00`).
pub fn api_time(stored: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(stored)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        })
        .unwrap_or_else(|_| stored.to_string())
}

pub fn with_position(position: u64, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(POSITION_HEADER, HeaderValue::from(position));
    response
}

/// The answer of a command: `response` plus the position header, once settled.
pub async fn command_answer(
    state: &AppState,
    position: u64,
    response: impl IntoResponse,
) -> Response {
    settle(state, position).await;
    with_position(position, response)
}

/// `?after=<position>` on reads: wait for the read model, or `503` with `Retry-After`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct After {
    pub after: Option<u64>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for After {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Query::<After>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .map_err(|_| {
                Problem::new(
                    "invalid-request",
                    "`after` must be a log position (a whole number)",
                )
            })
    }
}

pub async fn wait_for_after(state: &AppState, after: &After) -> Result<(), Problem> {
    wait_for_after_on(state, after, state.applied.clone()).await
}

/// [`wait_for_after`] for a read of the access history (AH-2's page), which may trail the
/// other read models.
pub async fn wait_for_after_history(state: &AppState, after: &After) -> Result<(), Problem> {
    wait_for_after_on(state, after, state.history_applied.clone()).await
}

async fn wait_for_after_on(
    state: &AppState,
    after: &After,
    applied: watch::Receiver<u64>,
) -> Result<(), Problem> {
    match after.after {
        // No command answered with a position the log has not reached: waiting would not help.
        Some(position) if position > state.log.head() => Err(Problem::new(
            "invalid-request",
            format!("the log has no position {position} yet"),
        )),
        Some(position) if !applied_on(state, applied, position).await => Err(Problem::new(
            "not-ready",
            format!("the read model has not reached position {position} yet"),
        )
        .retry_after(1)),
        _ => Ok(()),
    }
}

/// Read-model queries running at once: more would only contend for the same cores (and each
/// needs a thread and a connection of its own).
static READ_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// The rows of account pages and of sessions read lately, kept true by the projector (each
/// batch it applies drops what it touched before its position is published, so a read after a
/// command's answer sees the command).
pub struct Views {
    /// Dropped by events of the account, its owner or its collaborators, of its access
    /// history and of its notices.
    pages: ByAccount<Uuid, Arc<(AccountRow, account::PageExtras)>>,
    /// Dropped only by events of the session's account (sessions are folded from those
    /// alone), not by its access records.
    sessions: ByAccount<String, custode_projections::sessions::SessionRow>,
}

/// Account pages kept at most (then they start afresh).
const PAGES_KEPT: usize = 50_000;
/// Sessions kept at most.
const SESSIONS_KEPT: usize = 100_000;

impl Default for Views {
    fn default() -> Self {
        Self {
            pages: ByAccount::new(PAGES_KEPT),
            sessions: ByAccount::new(SESSIONS_KEPT),
        }
    }
}

impl Views {
    fn page(&self, account_id: Uuid) -> Option<Arc<(AccountRow, account::PageExtras)>> {
        self.pages.get(&account_id)
    }

    fn pages_epoch(&self) -> u64 {
        self.pages.epoch()
    }

    fn keep_page(
        &self,
        epoch: u64,
        account_id: Uuid,
        page: Arc<(AccountRow, account::PageExtras)>,
        accounts: Vec<Uuid>,
    ) {
        self.pages.keep(epoch, account_id, page, accounts);
    }

    /// The session whose token has `token_hash`, when kept.
    pub fn session(&self, token_hash: &str) -> Option<custode_projections::sessions::SessionRow> {
        self.sessions.get(token_hash)
    }

    pub fn sessions_epoch(&self) -> u64 {
        self.sessions.epoch()
    }

    /// Keeps a session's row, read after `epoch` was taken.
    pub fn keep_session(
        &self,
        epoch: u64,
        token_hash: String,
        row: custode_projections::sessions::SessionRow,
    ) {
        if let Ok(account_id) = Uuid::parse_str(&row.account_id) {
            self.sessions.keep(epoch, token_hash, row, vec![account_id]);
        }
    }
}

impl Forget for Views {
    fn forget(&self, events: &[custode_domain::RecordedEvent]) {
        use custode_projections::cache::{accounts_of, page_accounts_of};
        self.pages.forget_touched(page_accounts_of(events));
        self.sessions.forget_accounts(&accounts_of(events));
    }

    /// The core lane changes pages and sessions; the access history, pages alone (their last
    /// access).
    fn forget_lane(
        &self,
        events: &[custode_domain::RecordedEvent],
        lane: custode_projections::Lane,
    ) {
        use custode_projections::cache::{accounts_of, page_accounts_in};
        self.pages
            .forget_touched(page_accounts_in(events, Some(lane)));
        if lane == custode_projections::Lane::Core {
            self.sessions.forget_accounts(&accounts_of(events));
        }
    }
}

/// Runs a read-model query on a blocking thread, at most [`READ_SLOTS`] at once.
pub async fn query<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Problem> {
    query_pool(state.read_models.clone(), f)
        .await
        .map_err(|e| Problem::internal(&e))?
        .map_err(|e| Problem::internal(&e))
}

/// As [`query`], on `pool`, with the query's own error.
pub async fn query_pool<T: Send + 'static>(
    pool: std::sync::Arc<custode_commands::sqlite::ReadPool>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<rusqlite::Result<T>, tokio::task::JoinError> {
    let _slot = READ_SLOTS.acquire().await;
    tokio::task::spawn_blocking(move || pool.with(f)).await
}
