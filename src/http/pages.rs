//! WEB-1/WEB-2: the pages behind the links custode mails, so that every link it sends leads
//! somewhere: `/recovery?token=` (RC-5's link: the user id and a new password) and
//! `/collaborator-password?token=` (CO-1/CO-2: a collaborator's password). Server-rendered
//! (minijinja templates under `http/pages/`), in Italian or English (`?lang=`, else
//! `Accept-Language`), no script: the form posts, then redirects. Each POST goes through the
//! API's own handler, so the same rules, limits and timing floors hold; refusals are named
//! next to their field in the page's language.
//!
//! WEB-2's protections: a CSRF token in every form, checked against a `SameSite=Strict`,
//! `HttpOnly` cookie (double submit) and refused from another origin; a strict
//! Content-Security-Policy with no script at all; `X-Frame-Options: DENY`; no referrer to another
//! origin (the token is in the address); `no-store` as every answer.

mod api;
mod web;

pub use api::Api;

use super::extract::{Body, ClientIp, Correlation};
use super::problem::Problem;
use crate::app::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

const CSRF_COOKIE: &str = "custode_csrf";

/// A cookie's name: under https, with the `__Host-` prefix. A browser keeps such a cookie only
/// when this host set it `Secure`, on `Path=/` and without `Domain`, so a sibling subdomain
/// (or a plain-http page of this one) can neither plant nor shadow the session and CSRF
/// cookies; over http (a developer's machine) browsers refuse the prefix, so the name is bare.
pub(super) fn cookie_name(name: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

/// Whether the pages are served over https (`public_url`): the cookies are then `Secure` and
/// carry the `__Host-` prefix.
pub(super) fn secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}
/// No inline script, no other origin: the meter's script and its strength checks are served
/// from here.
pub(super) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The pages' routes (not part of the API document).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/assets/custode.css", get(stylesheet))
        .route("/assets/meter.js", get(meter_script))
        .route("/recovery", get(recovery_page).post(recovery_submit))
        .route(
            "/collaborator-password",
            get(collaborator_page).post(collaborator_submit),
        )
        .route("/password-saved", get(password_saved))
        .merge(web::routes())
}

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, source) in [
            ("base.html", include_str!("pages/base.html")),
            (
                "password_link.html",
                include_str!("pages/password_link.html"),
            ),
            ("message.html", include_str!("pages/message.html")),
            ("forms.html", include_str!("pages/forms.html")),
            ("login.html", include_str!("pages/login.html")),
            ("logout.html", include_str!("pages/logout.html")),
            ("account.html", include_str!("pages/account.html")),
            ("password.html", include_str!("pages/password.html")),
            (
                "recovery_info.html",
                include_str!("pages/recovery_info.html"),
            ),
            ("two_factor.html", include_str!("pages/two_factor.html")),
            (
                "app_passwords.html",
                include_str!("pages/app_passwords.html"),
            ),
            (
                "collaborators.html",
                include_str!("pages/collaborators.html"),
            ),
            ("contacts.html", include_str!("pages/contacts.html")),
            ("suspension.html", include_str!("pages/suspension.html")),
            ("history.html", include_str!("pages/history.html")),
            ("recover.html", include_str!("pages/recover.html")),
            (
                "recover_methods.html",
                include_str!("pages/recover_methods.html"),
            ),
            ("recover_code.html", include_str!("pages/recover_code.html")),
            (
                "recover_question.html",
                include_str!("pages/recover_question.html"),
            ),
        ] {
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(%error, name, "a page template does not compile");
            }
        }
        env
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lang {
    It,
    En,
}

impl Lang {
    fn code(self) -> &'static str {
        match self {
            Lang::It => "it",
            Lang::En => "en",
        }
    }

    fn other(self) -> Self {
        match self {
            Lang::It => Lang::En,
            Lang::En => Lang::It,
        }
    }

    /// `?lang=` when it names one of ours, else the first of ours in `Accept-Language`, else
    /// Italian.
    fn choose(asked: Option<&str>, headers: &HeaderMap) -> Self {
        match asked {
            Some("en") => return Lang::En,
            Some("it") => return Lang::It,
            _ => {}
        }
        let accept = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let first = accept
            .split(',')
            .map(|tag| tag.trim().split(';').next().unwrap_or_default().trim())
            .find(|tag| tag.starts_with("it") || tag.starts_with("en"));
        match first {
            Some(tag) if tag.starts_with("en") => Lang::En,
            _ => Lang::It,
        }
    }
}

/// Every text the pages show (`pages/texts.json`: `it`, `en`, and the Italian sentences of
/// problems and rules; English uses the API's own words), parsed once.
pub(super) fn catalogue() -> &'static Value {
    static TEXTS: OnceLock<Value> = OnceLock::new();
    TEXTS.get_or_init(|| {
        serde_json::from_str(include_str!("pages/texts.json")).unwrap_or_else(|error| {
            tracing::error!(%error, "the pages' texts do not parse");
            Value::Null
        })
    })
}

/// Every text the pages show, in `lang`.
pub(super) fn texts(lang: Lang) -> Value {
    catalogue().get(lang.code()).cloned().unwrap_or(Value::Null)
}

/// What a refused request says, by problem type: in Italian from the catalogue, in English the
/// API's own sentence.
pub(super) fn problem_text(slug: &str, lang: Lang, title: &str, detail: &str) -> String {
    if lang == Lang::En {
        // The API's detail speaks to an integrator; a few are said for the holder instead.
        if let Some(text) = catalogue()
            .get("problems_en")
            .and_then(|p| p.get(slug))
            .and_then(Value::as_str)
        {
            return text.to_string();
        }
        return sentence(detail).unwrap_or_else(|| title.to_string());
    }
    catalogue()
        .get("problems_it")
        .and_then(|p| p.get(slug))
        .and_then(Value::as_str)
        .map_or_else(
            || "La richiesta non è andata a buon fine: riprova.".to_string(),
            str::to_string,
        )
}

/// `detail` as a sentence: capitalised, with a full stop.
fn sentence(detail: &str) -> Option<String> {
    let mut chars = detail.trim().chars();
    let first = chars.next()?;
    let mut out: String = first.to_uppercase().chain(chars).collect();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    Some(out)
}

/// A failed rule next to its field, in Italian (English uses the API's sentence).
pub(super) fn rule_text(rule: &str, lang: Lang, english: &str) -> String {
    if lang == Lang::En {
        return sentence(english).unwrap_or_default();
    }
    let known = catalogue()
        .get("rules_it")
        .and_then(|r| r.get(rule))
        .and_then(Value::as_str);
    match known {
        Some(text) if text.contains("{n}") => {
            let digits: String = english.chars().filter(char::is_ascii_digit).collect();
            text.replace("{n}", &digits)
        }
        Some(text) => text.to_string(),
        None => "Questo campo non va bene.".into(),
    }
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    token: Option<String>,
    lang: Option<String>,
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    token: String,
    lang: Option<String>,
    user_id: Option<String>,
    new_password: String,
    new_password_repeat: String,
}

/// Which of the two link pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Recovery,
    Collaborator,
}

impl Flow {
    fn path(self) -> &'static str {
        match self {
            Flow::Recovery => "/recovery",
            Flow::Collaborator => "/collaborator-password",
        }
    }
}

/// The page's security headers (WEB-2).
pub(super) fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The token is in the address: it never leaves for another origin.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub(super) fn render(status: StatusCode, template: &str, context: Value) -> Response {
    let html = templates()
        .get_template(template)
        .and_then(|t| t.render(minijinja::Value::from_serialize(&context)));
    match html {
        Ok(html) => secured(
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
        ),
        Err(error) => {
            tracing::error!(%error, template, "a page cannot be rendered");
            secured(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "custode could not show this page",
                )
                    .into_response(),
            )
        }
    }
}

type Context = serde_json::Map<String, Value>;

pub(super) fn text(lang: Lang, key: &str) -> Value {
    texts(lang).get(key).cloned().unwrap_or(Value::Null)
}

fn page_context(lang: Lang, title_key: &str, switch_query: String) -> Context {
    let mut context = Context::new();
    context.insert("lang".into(), json!(lang.code()));
    context.insert("other_lang".into(), json!(lang.other().code()));
    context.insert("title".into(), text(lang, title_key));
    context.insert("switch_query".into(), json!(switch_query));
    context.insert("t".into(), texts(lang));
    context
}

fn message(
    status: StatusCode,
    lang: Lang,
    title_key: &str,
    text_key: &str,
    alert: bool,
) -> Response {
    let mut context = page_context(lang, title_key, format!("lang={}", lang.other().code()));
    context.insert("message".into(), text(lang, text_key));
    context.insert("alert".into(), json!(alert));
    render(status, "message.html", Value::Object(context))
}

/// The value of the cookie `name`, the first the request carries.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}

/// Whether `value` has a token's shape (43 URL-safe base64 characters).
pub(super) fn token_shaped(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The CSRF cookie's value when the request carries a well-formed one.
pub(super) fn csrf_cookie(headers: &HeaderMap, secure: bool) -> Option<String> {
    cookie(headers, &cookie_name(CSRF_COOKIE, secure)).filter(|v| token_shaped(v))
}

pub(super) fn set_csrf_cookie(response: &mut Response, value: &str, secure: bool) {
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict{}",
        cookie_name(CSRF_COOKIE, secure),
        if secure { "; Secure" } else { "" }
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// WEB-2: the token a form must carry. With a session cookie, it is bound to the session (a
/// keyed hash of its token, which nobody without the service key can make, so a form token
/// and cookie planted together do not pass); without one, the double-submit cookie's.
pub(super) fn expected_csrf(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let secure = secure(state);
    match cookie(headers, &cookie_name(web::SESSION_COOKIE, secure)).filter(|t| token_shaped(t)) {
        Some(session) => Some(
            state
                .accounts
                .service_key()
                .mac_token("page-csrf", &[session.as_bytes()]),
        ),
        None => csrf_cookie(headers, secure),
    }
}

/// The token a page's forms carry: [`expected_csrf`], or a fresh one for a first visit.
pub(super) fn page_csrf(state: &AppState, headers: &HeaderMap) -> String {
    expected_csrf(state, headers).unwrap_or_else(fresh_csrf)
}

/// WEB-2: the form's token is the one [`expected_csrf`] names, and the request does not come
/// from another site (browsers send `Origin` and `Sec-Fetch-Site` with every form post).
pub(super) fn same_origin_form(state: &AppState, headers: &HeaderMap, csrf: &str) -> bool {
    let Some(expected) = expected_csrf(state, headers) else {
        return false;
    };
    if !custode_commands::tokens::constant_time_eq(expected.as_bytes(), csrf.as_bytes()) {
        return false;
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
    {
        return false;
    }
    let same_origin_fetch = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "same-origin");
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        // A browser says `null` where it hides the origin; only its own word that the post
        // came from this origin then lets the form through.
        Some("null") => same_origin_fetch,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let public = state.config.public_url.trim_end_matches('/');
            origin == public
                || origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        }
    }
}

/// What a link page's form shows.
pub(super) struct FormView<'a> {
    pub(super) flow: Flow,
    pub(super) lang: Lang,
    pub(super) token: &'a str,
    pub(super) csrf: &'a str,
    pub(super) user_id: &'a str,
    pub(super) error: Option<String>,
    pub(super) field_errors: BTreeMap<&'static str, Vec<String>>,
    pub(super) status: StatusCode,
    /// Whether the token is in the page's address already (a mailed link); when it came from
    /// `/recover`'s answer, the language switch must not put it there.
    pub(super) token_in_address: bool,
}

pub(super) fn link_form(state: &AppState, view: FormView<'_>) -> Response {
    let (title_key, intro_key) = match view.flow {
        Flow::Recovery => ("recovery_title", "recovery_intro"),
        Flow::Collaborator => ("collaborator_title", "collaborator_intro"),
    };
    let switch = if view.token_in_address {
        format!(
            "token={}&lang={}",
            urlencoding_component(view.token),
            view.lang.other().code()
        )
    } else {
        format!("lang={}", view.lang.other().code())
    };
    let mut context = page_context(view.lang, title_key, switch);
    context.insert("intro".into(), text(view.lang, intro_key));
    context.insert("action".into(), json!(view.flow.path()));
    context.insert("csrf".into(), json!(view.csrf));
    context.insert("token".into(), json!(view.token));
    context.insert("ask_user_id".into(), json!(view.flow == Flow::Recovery));
    context.insert("user_id".into(), json!(view.user_id));
    context.insert("error".into(), json!(view.error));
    context.insert("field_errors".into(), json!(view.field_errors));
    context.insert("meter".into(), json!(true));
    context.insert("rules".into(), meter_rules(state, view.lang));
    let mut response = render(view.status, "password_link.html", Value::Object(context));
    set_csrf_cookie(&mut response, view.csrf, secure(state));
    response
}

/// A token is URL-safe base64 already; anything else is percent-encoded byte by byte.
pub(super) fn urlencoding_component(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A new CSRF token: 256 random bits, URL-safe base64 (SEC-1's tokens).
pub(super) fn fresh_csrf() -> String {
    custode_commands::tokens::new_token().0.expose().to_string()
}

async fn show(state: AppState, flow: Flow, query: PageQuery, headers: HeaderMap) -> Response {
    let lang = Lang::choose(query.lang.as_deref(), &headers);
    let Some(token) = query.token.filter(|t| !t.trim().is_empty()) else {
        return message(
            StatusCode::BAD_REQUEST,
            lang,
            "no_token_title",
            "no_token",
            true,
        );
    };
    let csrf = page_csrf(&state, &headers);
    link_form(
        &state,
        FormView {
            flow,
            lang,
            token: &token,
            csrf: &csrf,
            user_id: "",
            error: None,
            field_errors: BTreeMap::new(),
            status: StatusCode::OK,
            token_in_address: true,
        },
    )
}

async fn submit(
    state: AppState,
    flow: Flow,
    client: ClientIp,
    correlation: Correlation,
    headers: HeaderMap,
    form: PasswordForm,
) -> Response {
    let lang = Lang::choose(form.lang.as_deref(), &headers);
    if !same_origin_form(&state, &headers, &form.csrf) {
        return message(
            StatusCode::FORBIDDEN,
            lang,
            "refused_title",
            "refused",
            true,
        );
    }
    let user_id = form.user_id.clone().unwrap_or_default();
    let mut body = json!({
        "token": form.token,
        "new_password": form.new_password,
        "new_password_repeat": form.new_password_repeat,
    });
    if flow == Flow::Recovery {
        if let Some(fields) = body.as_object_mut() {
            fields.insert("user_id".into(), json!(user_id));
        }
    }
    let outcome = async {
        match flow {
            Flow::Recovery => {
                let request = form_request(body)?;
                super::recovery::complete(State(state.clone()), client, correlation, Body(request))
                    .await
            }
            Flow::Collaborator => {
                let request = form_request(body)?;
                super::delegation::set_collaborator_password(
                    State(state.clone()),
                    client,
                    correlation,
                    Body(request),
                )
                .await
            }
        }
    }
    .await;
    match outcome {
        Ok(_) => secured(
            (
                StatusCode::SEE_OTHER,
                [(
                    header::LOCATION,
                    format!("/password-saved?lang={}", lang.code()),
                )],
            )
                .into_response(),
        ),
        Err(problem) => {
            let slug = problem
                .problem_type
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut field_errors: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
            for violation in &problem.errors {
                let field = match violation.field {
                    Some("user_id") => "user_id",
                    Some("new_password_repeat") => "new_password_repeat",
                    _ => "new_password",
                };
                field_errors.entry(field).or_default().push(rule_text(
                    violation.rule,
                    lang,
                    &violation.message,
                ));
            }
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = link_form(
                &state,
                FormView {
                    flow,
                    lang,
                    token: &form.token,
                    csrf: &form.csrf,
                    user_id: &user_id,
                    error: Some(problem_text(&slug, lang, problem.title, &problem.detail)),
                    field_errors,
                    status,
                    token_in_address: true,
                },
            );
            if let Some(seconds) = problem.retry_after {
                if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            response
        }
    }
}

/// A post whose body is not the page's form (a field missing or twice, another content type):
/// the refusal page, with the pages' headers.
pub(super) fn unreadable_form(headers: &HeaderMap) -> Response {
    let lang = Lang::choose(None, headers);
    message(
        StatusCode::BAD_REQUEST,
        lang,
        "refused_title",
        "refused",
        true,
    )
}

/// The API's request from a page's form fields.
fn form_request<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, Problem> {
    serde_json::from_value(body)
        .map_err(|_| Problem::new("invalid-request", "the form is incomplete"))
}

async fn recovery_page(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    show(state, Flow::Recovery, query, headers).await
}

async fn collaborator_page(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    show(state, Flow::Collaborator, query, headers).await
}

async fn recovery_submit(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    headers: HeaderMap,
    form: Result<Form<PasswordForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return unreadable_form(&headers);
    };
    submit(state, Flow::Recovery, client, correlation, headers, form).await
}

async fn collaborator_submit(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    headers: HeaderMap,
    form: Result<Form<PasswordForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return unreadable_form(&headers);
    };
    submit(
        state,
        Flow::Collaborator,
        client,
        correlation,
        headers,
        form,
    )
    .await
}

async fn password_saved(Query(query): Query<PageQuery>, headers: HeaderMap) -> Response {
    let lang = Lang::choose(query.lang.as_deref(), &headers);
    message(StatusCode::OK, lang, "saved_title", "saved", false)
}

/// PW-1's rules the meter lists (those the settings enable), in `lang`; PW-3's script ticks
/// them off as the holder types.
pub(super) fn meter_rules(state: &AppState, lang: Lang) -> Value {
    let policy = &state.config.settings.policy;
    let holder = custode_domain::policy::Holder {
        user_id: "",
        personal: Vec::new(),
    };
    let evaluation = custode_domain::policy::evaluate("", &holder, policy);
    let key = match lang {
        Lang::It => "rules_meter_it",
        Lang::En => "rules_en",
    };
    Value::Array(
        evaluation
            .rules
            .iter()
            .map(|rule| {
                let text = catalogue()
                    .get(key)
                    .and_then(|r| r.get(rule.id))
                    .and_then(Value::as_str)
                    .unwrap_or(rule.id)
                    .replace("{n}", &policy.min_length.to_string())
                    .replace("{m}", &policy.max_length.to_string());
                json!({ "id": rule.id, "text": text })
            })
            .collect(),
    )
}

async fn meter_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("pages/meter.js"),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("pages/custode.css"),
    )
        .into_response()
}
