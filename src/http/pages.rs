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
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The pages' routes (not part of the API document).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/assets/custode.css", get(stylesheet))
        .route("/recovery", get(recovery_page).post(recovery_submit))
        .route(
            "/collaborator-password",
            get(collaborator_page).post(collaborator_submit),
        )
        .route("/password-saved", get(password_saved))
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
        ] {
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(%error, name, "a page template does not compile");
            }
        }
        env
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
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

/// Every text the pages show, in `lang`.
fn texts(lang: Lang) -> Value {
    match lang {
        Lang::It => json!({
            "language": "Lingua",
            "other_language": "English",
            "user_id": "Nome utente",
            "new_password": "Nuova password",
            "new_password_repeat": "Ripeti la nuova password",
            "save": "Salva la password",
            "recovery_title": "Scegli una nuova password",
            "recovery_intro": "Inserisci il tuo nome utente e la nuova password. Il link vale una sola volta.",
            "collaborator_title": "Crea la tua password",
            "collaborator_intro": "Scegli la password del tuo accesso da collaboratore. Il link vale una sola volta.",
            "saved_title": "Password salvata",
            "saved": "La nuova password è attiva: accedi con quella.",
            "no_token_title": "Link incompleto",
            "no_token": "Il link non contiene il codice: aprilo di nuovo dal messaggio ricevuto, per intero.",
            "refused_title": "Richiesta rifiutata",
            "refused": "Il modulo è scaduto o non viene da questa pagina. Apri di nuovo il link e riprova.",
        }),
        Lang::En => json!({
            "language": "Language",
            "other_language": "Italiano",
            "user_id": "User id",
            "new_password": "New password",
            "new_password_repeat": "Repeat the new password",
            "save": "Save the password",
            "recovery_title": "Choose a new password",
            "recovery_intro": "Enter your user id and the new password. The link works once.",
            "collaborator_title": "Create your password",
            "collaborator_intro": "Choose the password of your collaborator access. The link works once.",
            "saved_title": "Password saved",
            "saved": "The new password is active: log in with it.",
            "no_token_title": "Incomplete link",
            "no_token": "The link has no code in it: open it again from the message you received, whole.",
            "refused_title": "Request refused",
            "refused": "The form has expired or does not come from this page. Open the link again and retry.",
        }),
    }
}

/// What a refused request says, by problem type, in Italian (English uses the API's words).
fn problem_text(slug: &str, lang: Lang, problem: &Problem) -> String {
    if lang == Lang::En {
        return format!("{}: {}", problem.title, problem.detail);
    }
    match slug {
        "token-used" => "Questo link è già stato usato: chiedine uno nuovo.".into(),
        "token-expired" => "Questo link è scaduto: chiedine uno nuovo.".into(),
        "token-superseded" => {
            "Un link più recente ha sostituito questo: usa l'ultimo ricevuto.".into()
        }
        "token-invalid" | "invalid-token" => {
            "Il link non è valido: aprilo di nuovo dal messaggio, per intero.".into()
        }
        "password-policy" | "validation-failed" => {
            "La password non rispetta le regole indicate.".into()
        }
        "rate-limited" | "too-many-requests" => {
            "Troppi tentativi: riprova fra qualche minuto.".into()
        }
        "busy" => "Il servizio è molto occupato: riprova fra poco.".into(),
        _ => "La richiesta non è andata a buon fine: riprova.".into(),
    }
}

/// A failed rule next to its field, in Italian (English uses the API's sentence).
fn rule_text(rule: &str, lang: Lang, english: &str) -> String {
    if lang == Lang::En {
        return english.to_string();
    }
    match rule {
        "PW-1.user_id" => "La password non deve contenere il nome utente.".into(),
        "PW-1.min_length" => {
            let digits: String = english.chars().filter(char::is_ascii_digit).collect();
            format!("La password deve avere almeno {digits} caratteri.")
        }
        "PW-1.max_length" => "La password è troppo lunga.".into(),
        "PW-1.case" => "Servono una lettera maiuscola e una minuscola.".into(),
        "PW-1.digit" => "Serve almeno una cifra.".into(),
        "PW-1.special" => "Serve un carattere speciale (né lettera né cifra).".into(),
        "PW-1.repeat" => "Non ripetere lo stesso carattere tante volte di fila.".into(),
        "PW-1.personal_data" => {
            "La password non deve contenere nome, cognome o codice fiscale.".into()
        }
        "PW-2.score" => "La password è troppo facile da indovinare.".into(),
        "PW-2.history" => "La password è uguale a una delle ultime usate.".into(),
        "PW-4.repeat" => "Le due password non coincidono.".into(),
        "SEC-1.token" => "Il link non è valido: aprilo di nuovo dal messaggio, per intero.".into(),
        _ => "Questo campo non va bene.".into(),
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
enum Flow {
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
fn secured(mut response: Response) -> Response {
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

fn render(status: StatusCode, template: &str, context: Value) -> Response {
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

fn text(lang: Lang, key: &str) -> Value {
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

/// The CSRF cookie's value when the request carries a well-formed one.
fn csrf_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == CSRF_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn set_csrf_cookie(response: &mut Response, value: &str, secure: bool) {
    let cookie = format!(
        "{CSRF_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// WEB-2: the form's token equals the cookie's, and the request does not come from another
/// site (browsers send `Origin` and `Sec-Fetch-Site` with every form post).
fn same_origin_form(state: &AppState, headers: &HeaderMap, csrf: &str) -> bool {
    let Some(cookie) = csrf_cookie(headers) else {
        return false;
    };
    if !custode_commands::tokens::constant_time_eq(cookie.as_bytes(), csrf.as_bytes()) {
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
struct FormView<'a> {
    flow: Flow,
    lang: Lang,
    token: &'a str,
    csrf: &'a str,
    user_id: &'a str,
    error: Option<String>,
    field_errors: BTreeMap<&'static str, Vec<String>>,
    status: StatusCode,
}

fn link_form(state: &AppState, view: FormView<'_>) -> Response {
    let (title_key, intro_key) = match view.flow {
        Flow::Recovery => ("recovery_title", "recovery_intro"),
        Flow::Collaborator => ("collaborator_title", "collaborator_intro"),
    };
    let switch = format!(
        "token={}&lang={}",
        urlencoding_component(view.token),
        view.lang.other().code()
    );
    let mut context = page_context(view.lang, title_key, switch);
    context.insert("intro".into(), text(view.lang, intro_key));
    context.insert("action".into(), json!(view.flow.path()));
    context.insert("csrf".into(), json!(view.csrf));
    context.insert("token".into(), json!(view.token));
    context.insert("ask_user_id".into(), json!(view.flow == Flow::Recovery));
    context.insert("user_id".into(), json!(view.user_id));
    context.insert("error".into(), json!(view.error));
    context.insert("field_errors".into(), json!(view.field_errors));
    let mut response = render(view.status, "password_link.html", Value::Object(context));
    set_csrf_cookie(
        &mut response,
        view.csrf,
        state.config.public_url.starts_with("https://"),
    );
    response
}

/// A token is URL-safe base64 already; anything else is percent-encoded byte by byte.
fn urlencoding_component(text: &str) -> String {
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
fn fresh_csrf() -> String {
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
    let csrf = csrf_cookie(&headers).unwrap_or_else(fresh_csrf);
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
                    error: Some(problem_text(&slug, lang, &problem)),
                    field_errors,
                    status,
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
    Form(form): Form<PasswordForm>,
) -> Response {
    submit(state, Flow::Recovery, client, correlation, headers, form).await
}

async fn collaborator_submit(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
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

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("pages/custode.css"),
    )
        .into_response()
}
