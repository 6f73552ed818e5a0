//! WEB-1: the holder's pages behind a login: `/login`, `/logout`, `/account` and its sections
//! (password, recovery information, two-step verification, passwords for mail programs,
//! collaborators, contacts, suspension, access history), and the forgotten-password journey
//! `/recover`. Every action goes through the API's own router (`api::Api`), with the web
//! session (a cookie) as its bearer token, then redirects (post, redirect, get); a refusal is
//! shown on the same page, each failed rule next to its field.
//!
//! What must be shown once (an app password, a TOTP secret and its QR code, a collaborator's
//! user id) or a notice after a redirect travels in a flash: an entry in this process's memory,
//! named by a random id in the address, bound to the session that made it, gone once read
//! (the TOTP enrolment stays until it is confirmed, so that a mistyped code can be retried).

use super::api::{Api, Origin, Refusal};
use super::{
    cookie, fresh_csrf, meter_rules, page_csrf, problem_text, render, rule_text, same_origin_form,
    secured, set_csrf_cookie, text, texts, token_shaped, urlencoding_component, Lang,
};
use crate::app::AppState;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SESSION_COOKIE: &str = "custode_session";

/// How long a flash waits to be read.
const FLASH_TTL: Duration = Duration::from_secs(600);
/// At most this many flashes wait at once; past it, the oldest go.
const FLASH_CAP: usize = 20_000;
/// At most this many wait for one session: a holder who posts again and again replaces its own
/// flashes, never anyone else's.
const FLASH_PER_OWNER: usize = 4;

/// A page request: who sent it, in which language it asked, its session and CSRF cookies.
pub struct Visit {
    api: Api,
    origin: Origin,
    headers: HeaderMap,
    asked_lang: Option<String>,
    secure: bool,
    /// The token this visit's forms carry (WEB-2, [`page_csrf`]).
    csrf: String,
}

impl FromRequestParts<AppState> for Visit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(api) = parts.extensions.get::<Api>().cloned() else {
            tracing::error!("the pages have no API to call");
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied();
        let mut origin = Origin::from_request(&parts.headers, peer);
        let secure = super::secure(state);
        origin.session = cookie(&parts.headers, &super::cookie_name(SESSION_COOKIE, secure))
            .filter(|t| token_shaped(t));
        let asked_lang = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == "lang")
                .map(|(_, v)| v.to_string())
        });
        Ok(Self {
            api,
            origin,
            headers: parts.headers.clone(),
            asked_lang,
            secure,
            csrf: page_csrf(state, &parts.headers),
        })
    }
}

impl Visit {
    fn lang(&self, form_lang: Option<&str>, account_lang: Option<&str>) -> Lang {
        let asked = form_lang.or(self.asked_lang.as_deref()).or(account_lang);
        Lang::choose(asked, &self.headers)
    }

    fn csrf(&self) -> String {
        self.csrf.clone()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Refusal> {
        self.api.call(&self.origin, method, path, body).await
    }

    /// This visit without its session, asking in `lang` (a login, a recovery).
    fn anonymous(&self, lang: Lang) -> Self {
        Self {
            api: self.api.clone(),
            origin: Origin {
                session: None,
                language: Some(lang.code()),
                ..self.origin.clone()
            },
            headers: self.headers.clone(),
            asked_lang: self.asked_lang.clone(),
            secure: self.secure,
            csrf: self.csrf.clone(),
        }
    }

    /// A key binding a flash to this visit's session (its token's SHA-256), or `""`.
    fn owner(&self) -> String {
        self.origin
            .session
            .as_deref()
            .and_then(custode_commands::tokens::parse_token)
            .map(|hash| hash.as_str().to_string())
            .unwrap_or_default()
    }
}

fn session_cookie(value: &str, secure: bool, clear: bool) -> Option<HeaderValue> {
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict{}{}",
        super::cookie_name(SESSION_COOKIE, secure),
        if secure { "; Secure" } else { "" },
        if clear { "; Max-Age=0" } else { "" }
    );
    HeaderValue::from_str(&cookie).ok()
}

fn see_other(location: &str) -> Response {
    secured(
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, location.to_string())],
        )
            .into_response(),
    )
}

// ---------------------------------------------------------------------------------------------
// Flashes

struct Flash {
    owner: String,
    notice: Option<String>,
    data: Value,
    sticky: bool,
    made: Instant,
}

fn flashes() -> &'static Mutex<HashMap<String, Flash>> {
    static FLASHES: OnceLock<Mutex<HashMap<String, Flash>>> = OnceLock::new();
    FLASHES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn put_flash(owner: String, notice: Option<String>, data: Value, sticky: bool) -> String {
    let id = fresh_csrf();
    if let Ok(mut map) = flashes().lock() {
        // A new enrolment replaces the session's earlier one; past its share, the session's
        // oldest flash goes.
        if sticky {
            map.retain(|_, f| !(f.sticky && f.owner == owner));
        }
        let mut own: Vec<(Instant, String)> = map
            .iter()
            .filter(|(_, f)| f.owner == owner)
            .map(|(k, f)| (f.made, k.clone()))
            .collect();
        if own.len() >= FLASH_PER_OWNER {
            own.sort();
            for (_, key) in own.iter().take(own.len() + 1 - FLASH_PER_OWNER) {
                map.remove(key);
            }
        }
        if map.len() >= FLASH_CAP {
            map.retain(|_, f| f.made.elapsed() < FLASH_TTL);
            if map.len() >= FLASH_CAP {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, f)| f.made)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(
            id.clone(),
            Flash {
                owner,
                notice,
                data,
                sticky,
                made: Instant::now(),
            },
        );
    }
    id
}

/// The flash `id` when `owner` made it: read once (or kept, when sticky).
fn take_flash(id: &str, owner: &str) -> Option<(Option<String>, Value)> {
    let mut map = flashes().lock().ok()?;
    let flash = map.get(id)?;
    if !custode_commands::tokens::constant_time_eq(flash.owner.as_bytes(), owner.as_bytes())
        || flash.made.elapsed() >= FLASH_TTL
    {
        return None;
    }
    let shown = (flash.notice.clone(), flash.data.clone());
    if !flash.sticky {
        map.remove(id);
    }
    Some(shown)
}

fn drop_flash(id: &str, owner: &str) {
    if let Ok(mut map) = flashes().lock() {
        if map.get(id).is_some_and(|f| f.owner == owner) {
            map.remove(id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forms

/// A posted form: every value of every field, in order.
struct Fields(HashMap<String, Vec<String>>);

impl Fields {
    fn new(pairs: Vec<(String, String)>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_default().push(v);
        }
        Self(map)
    }

    /// The field's first value, trimmed; `None` when absent or blank.
    fn text(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .and_then(|v| v.first())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A secret as typed (never trimmed), `""` when absent.
    fn secret(&self, name: &str) -> String {
        self.0
            .get(name)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.get(name).cloned().unwrap_or_default()
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// The API call an action makes, and what follows its success.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    then: Then,
}

enum Then {
    /// Back to the section with "done".
    Done,
    /// Back with "a code was sent to …" (the answer's masked target).
    CodeSent,
    /// Back with what the answer holds, shown once.
    ShowOnce,
    /// The TOTP enrolment: shown until confirmed.
    Enrolment,
    /// The enrolment is confirmed: its flash goes.
    Enrolled,
    /// The session ended (a password change, a suspension): to the login page, saying why.
    LoggedOut(&'static str),
}

fn bad_form(detail: &str) -> Refusal {
    Refusal {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        slug: "invalid-request".into(),
        title: "The request is not valid".into(),
        detail: detail.into(),
        errors: Vec::new(),
        retry_after: None,
    }
}

fn uuid_field(fields: &Fields, name: &str) -> Result<String, Box<Refusal>> {
    fields
        .text(name)
        .and_then(|v| uuid::Uuid::parse_str(&v).ok())
        .map(|v| v.to_string())
        .ok_or_else(|| Box::new(bad_form("the form names no such item")))
}

fn call(method: Method, path: impl Into<String>, body: Option<Value>, then: Then) -> Call {
    Call {
        method,
        path: path.into(),
        body,
        then,
    }
}

/// `{name: <the field, trimmed>}`.
fn field(f: &Fields, name: &str) -> Option<Value> {
    Some(json!({ name: f.text(name).unwrap_or_default() }))
}

fn otp_call(purpose: &str) -> Call {
    Call {
        method: Method::POST,
        path: "/v1/account/otp".into(),
        body: Some(json!({ "purpose": purpose })),
        then: Then::CodeSent,
    }
}

/// `body` with the form's `otp` when it has one.
fn with_otp(mut body: Value, f: &Fields) -> Value {
    if let (Some(otp), Some(map)) = (f.text("otp"), body.as_object_mut()) {
        map.insert("otp".into(), json!(otp));
    }
    body
}

fn put_field(body: &mut Map<String, Value>, name: &str, value: Option<String>) {
    if let Some(value) = value {
        body.insert(name.into(), json!(value));
    }
}

/// What `action` of `section` asks of the API.
fn action_call(section: Section, action: &str, f: &Fields) -> Result<Call, Box<Refusal>> {
    let done =
        |method: Method, path: &str, body: Option<Value>| call(method, path, body, Then::Done);
    Ok(match (section, action) {
        // SEC-3's step-up, from any section: the password (and the code) again.
        (_, "reauth") => {
            let body = with_otp(json!({ "password": f.secret("password") }), f);
            done(Method::POST, "/v1/sessions/current/reauth", Some(body))
        }
        (Section::Account, "language") => {
            done(Method::PUT, "/v1/account/language", field(f, "language"))
        }
        (Section::Password, "change") => {
            let body = with_otp(
                json!({
                    "current_password": f.secret("current_password"),
                    "new_password": f.secret("new_password"),
                    "new_password_repeat": f.secret("new_password_repeat"),
                }),
                f,
            );
            // PW-4: a change ends every session, this one included.
            call(
                Method::POST,
                "/v1/account/password",
                Some(body),
                Then::LoggedOut("password_changed"),
            )
        }
        (Section::Password, "send_code") => otp_call("password_change"),
        (Section::RecoveryInfo, "save") => {
            let mut body = Map::new();
            put_field(&mut body, "email", f.text("email"));
            put_field(&mut body, "mobile", f.text("mobile"));
            let question = f
                .text("security_question")
                .or_else(|| f.text("suggested_question"));
            if question.is_some() {
                put_field(&mut body, "security_question", question);
                body.insert("security_answer".into(), json!(f.secret("security_answer")));
                body.insert(
                    "security_answer_repeat".into(),
                    json!(f.secret("security_answer_repeat")),
                );
            }
            done(
                Method::PUT,
                "/v1/account/recovery-info",
                Some(Value::Object(body)),
            )
        }
        (Section::RecoveryInfo, "confirm") => {
            done(Method::PUT, "/v1/account/recovery-info", Some(json!({})))
        }
        (Section::RecoveryInfo, "verify_send_email") => otp_call("verify_recovery_email"),
        (Section::RecoveryInfo, "verify_send_mobile") => otp_call("verify_recovery_mobile"),
        (Section::RecoveryInfo, "verify_email" | "verify_mobile") => done(
            Method::POST,
            "/v1/account/recovery-info/verify",
            Some(json!({
                "method": if action == "verify_email" { "email" } else { "mobile" },
                "code": f.text("code").unwrap_or_default(),
            })),
        ),
        (Section::RecoveryInfo, "email_change_send") => otp_call("recovery_email_change"),
        (Section::RecoveryInfo, "mobile_change_send") => otp_call("recovery_mobile_change"),
        (Section::RecoveryInfo, "email_change" | "mobile_change") => {
            let (path, field) = if action == "email_change" {
                ("/v1/account/recovery-info/email", "email")
            } else {
                ("/v1/account/recovery-info/mobile", "mobile")
            };
            Call {
                method: Method::POST,
                path: path.into(),
                body: Some(json!({
                    "otp": f.text("otp").unwrap_or_default(),
                    field: f.text(field).unwrap_or_default(),
                })),
                then: Then::CodeSent,
            }
        }
        (Section::RecoveryInfo, "email_change_confirm" | "mobile_change_confirm") => done(
            Method::POST,
            if action == "email_change_confirm" {
                "/v1/account/recovery-info/email/confirm"
            } else {
                "/v1/account/recovery-info/mobile/confirm"
            },
            field(f, "code"),
        ),
        (Section::TwoFactor, "start") => {
            let channel = f.text("channel").unwrap_or_else(|| "app".into());
            let mut body = Map::new();
            body.insert("channel".into(), json!(channel));
            if channel == "hardware_token" {
                put_field(&mut body, "serial", f.text("serial"));
                put_field(&mut body, "code", f.text("code"));
            }
            Call {
                method: Method::POST,
                path: "/v1/account/two-factor".into(),
                body: Some(Value::Object(body)),
                then: if channel == "app" {
                    Then::Enrolment
                } else if channel == "sms" {
                    Then::CodeSent
                } else {
                    Then::Done
                },
            }
        }
        (Section::TwoFactor, "confirm") => call(
            Method::POST,
            "/v1/account/two-factor/confirm",
            field(f, "code"),
            Then::Enrolled,
        ),
        (Section::TwoFactor, "disable_send") => otp_call("two_factor_off"),
        (Section::TwoFactor, "disable") => done(
            Method::POST,
            "/v1/account/two-factor/disable",
            field(f, "code"),
        ),
        (Section::AppPasswords, "create") => call(
            Method::POST,
            "/v1/account/app-passwords",
            field(f, "scope"),
            Then::ShowOnce,
        ),
        (Section::AppPasswords, "postpone" | "regenerate" | "deactivate") => {
            let scope = f.text("scope").unwrap_or_default();
            let valid = scope == "mailbox"
                || scope == "archive"
                || scope
                    .strip_prefix("collaborator:")
                    .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok());
            if !valid {
                return Err(Box::new(bad_form("the form names no such password")));
            }
            let base = format!(
                "/v1/account/app-passwords/{}",
                urlencoding_component(&scope)
            );
            match action {
                "postpone" => done(Method::POST, &format!("{base}/postpone"), None),
                "regenerate" => Call {
                    method: Method::POST,
                    path: format!("{base}/regenerate"),
                    body: None,
                    then: Then::ShowOnce,
                },
                _ => done(Method::DELETE, &base, None),
            }
        }
        (Section::AppPasswords, "mail_protocols") => done(
            Method::PUT,
            "/v1/account/mail-protocols",
            Some(json!({
                "imap": f.has("imap"),
                "pop": f.has("pop"),
                "smtp": f.has("smtp"),
            })),
        ),
        (Section::Collaborators, "create") => Call {
            method: Method::POST,
            path: "/v1/account/collaborators".into(),
            body: Some(json!({
                "name": f.text("name").unwrap_or_default(),
                "reference_email": f.text("reference_email").unwrap_or_default(),
                "permissions": f.all("permissions"),
            })),
            then: Then::ShowOnce,
        },
        (Section::Collaborators, "reset" | "resend" | "deactivate") => {
            let id = uuid_field(f, "collaborator_id")?;
            let path = match action {
                "reset" => format!("/v1/account/collaborators/{id}/password-reset"),
                "resend" => format!("/v1/account/collaborators/{id}/password-reset/resend"),
                _ => format!("/v1/account/collaborators/{id}/deactivate"),
            };
            done(Method::POST, &path, None)
        }
        (Section::Contacts, "email") => {
            done(Method::PUT, "/v1/account/contact-email", field(f, "email"))
        }
        (Section::Contacts, "mobile") => call(
            Method::POST,
            "/v1/account/contact-mobile",
            field(f, "mobile"),
            Then::CodeSent,
        ),
        (Section::Contacts, "mobile_confirm") => {
            let mut body = Map::new();
            body.insert("code".into(), json!(f.text("code").unwrap_or_default()));
            put_field(&mut body, "current_code", f.text("current_code"));
            done(
                Method::POST,
                "/v1/account/contact-mobile/confirm",
                Some(Value::Object(body)),
            )
        }
        (Section::Contacts, "document") => done(
            Method::PUT,
            "/v1/account/identity-document",
            Some(json!({
                "kind": f.text("kind").unwrap_or_default(),
                "number": f.text("number").unwrap_or_default(),
                "expires_on": f.text("expires_on").unwrap_or_default(),
            })),
        ),
        (Section::Suspension, "send_code") => otp_call("suspension"),
        (Section::Suspension, "suspend") => {
            let days: i64 = f.text("days").and_then(|d| d.parse().ok()).ok_or_else(|| {
                let mut refusal = bad_form("the days are a whole number from 1 to 30");
                refusal.status = StatusCode::UNPROCESSABLE_ENTITY;
                refusal.errors.push(super::api::FieldError {
                    field: Some("days".into()),
                    rule: "SC-6.days".into(),
                    message: "the days are a whole number from 1 to 30".into(),
                });
                refusal
            })?;
            call(
                Method::POST,
                "/v1/account/suspension",
                Some(json!({ "days": days, "otp": f.text("otp").unwrap_or_default() })),
                Then::LoggedOut("suspended"),
            )
        }
        _ => {
            return Err(Box::new(bad_form(
                "the form asks for an action this page does not have",
            )))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Sections

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Account,
    Password,
    RecoveryInfo,
    TwoFactor,
    AppPasswords,
    Collaborators,
    Contacts,
    Suspension,
    History,
}

impl Section {
    const ALL: [Section; 9] = [
        Section::Account,
        Section::Password,
        Section::RecoveryInfo,
        Section::TwoFactor,
        Section::AppPasswords,
        Section::Collaborators,
        Section::Contacts,
        Section::Suspension,
        Section::History,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Section::Account => "/account",
            Section::Password => "/account/password",
            Section::RecoveryInfo => "/account/recovery-info",
            Section::TwoFactor => "/account/two-factor",
            Section::AppPasswords => "/account/app-passwords",
            Section::Collaborators => "/account/collaborators",
            Section::Contacts => "/account/contacts",
            Section::Suspension => "/account/suspension",
            Section::History => "/account/access-history",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Section::Account => "account.html",
            Section::Password => "password.html",
            Section::RecoveryInfo => "recovery_info.html",
            Section::TwoFactor => "two_factor.html",
            Section::AppPasswords => "app_passwords.html",
            Section::Collaborators => "collaborators.html",
            Section::Contacts => "contacts.html",
            Section::Suspension => "suspension.html",
            Section::History => "history.html",
        }
    }

    fn title_key(self) -> &'static str {
        match self {
            Section::Account => "account_title",
            Section::Password => "password_title",
            Section::RecoveryInfo => "recovery_info_title",
            Section::TwoFactor => "two_factor_title",
            Section::AppPasswords => "app_passwords_title",
            Section::Collaborators => "collaborators_title",
            Section::Contacts => "contacts_title",
            Section::Suspension => "suspension_title",
            Section::History => "history_title",
        }
    }

    fn nav_key(self) -> &'static str {
        match self {
            Section::Account => "nav_account",
            Section::Password => "nav_password",
            Section::RecoveryInfo => "nav_recovery",
            Section::TwoFactor => "nav_two_factor",
            Section::AppPasswords => "nav_app_passwords",
            Section::Collaborators => "nav_collaborators",
            Section::Contacts => "nav_contacts",
            Section::Suspension => "nav_suspension",
            Section::History => "nav_history",
        }
    }

    /// Whether an account of `kind` has this section.
    fn offered(self, kind: &str) -> bool {
        match self {
            Section::AppPasswords | Section::Collaborators => kind == "mailbox",
            Section::Contacts | Section::Suspension => kind == "identity",
            _ => true,
        }
    }
}

fn menu(lang: Lang, kind: &str, current: Section) -> Value {
    Value::Array(
        Section::ALL
            .iter()
            .filter(|s| s.offered(kind))
            .map(|s| {
                json!({
                    "href": s.path(),
                    "label": text(lang, s.nav_key()),
                    "current": *s == current,
                })
            })
            .collect(),
    )
}

/// What went wrong with the last post, for the page to show.
#[derive(Default)]
struct Failure {
    action: String,
    message: Option<String>,
    field_errors: BTreeMap<String, Vec<String>>,
    values: BTreeMap<String, String>,
    status: Option<StatusCode>,
    retry_after: Option<HeaderValue>,
    /// SEC-3: the action needs a fresh password first; the page offers the form.
    reauth: bool,
}

fn failure(lang: Lang, action: &str, refusal: &Refusal, fields: Option<&Fields>) -> Failure {
    let mut field_errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut general = Vec::new();
    for e in &refusal.errors {
        let message = rule_text(&e.rule, lang, &e.message);
        match &e.field {
            Some(field) => field_errors
                .entry(format!("{action}.{field}"))
                .or_default()
                .push(message),
            None => general.push(message),
        }
    }
    let mut message = problem_text(&refusal.slug, lang, &refusal.title, &refusal.detail);
    for extra in general {
        message.push(' ');
        message.push_str(&extra);
    }
    let mut values = BTreeMap::new();
    if let Some(fields) = fields {
        // Kept for the holder to correct: never a password, answer or code.
        for name in [
            "user_id",
            "email",
            "mobile",
            "security_question",
            "name",
            "reference_email",
            "serial",
            "number",
            "expires_on",
            "days",
            "scope",
        ] {
            if let Some(v) = fields.text(name) {
                values.insert(format!("{action}.{name}"), v);
            }
        }
    }
    Failure {
        reauth: refusal.slug == "reauthentication-required" || action == "reauth",
        action: action.to_string(),
        message: Some(message),
        field_errors,
        values,
        status: Some(refusal.status),
        retry_after: refusal.retry_after.clone(),
    }
}

fn base_context(lang: Lang, title_key: &str, csrf: &str) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("lang".into(), json!(lang.code()));
    context.insert("other_lang".into(), json!(lang.other().code()));
    context.insert("title".into(), text(lang, title_key));
    context.insert(
        "switch_query".into(),
        json!(format!("lang={}", lang.other().code())),
    );
    context.insert("t".into(), texts(lang));
    context.insert("csrf".into(), json!(csrf));
    context.insert("fe".into(), json!({}));
    context.insert("v".into(), json!({}));
    context
}

fn with_csrf(mut response: Response, csrf: &str, secure: bool) -> Response {
    set_csrf_cookie(&mut response, csrf, secure);
    response
}

fn to_login(lang: Lang, message: &str, secure: bool) -> Response {
    let mut response = see_other(&format!("/login?lang={}&m={message}", lang.code()));
    if let Some(clear) = session_cookie("", secure, true) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// A section page: the account page's JSON, what the section adds, the last post's failure.
async fn section_view(
    state: &AppState,
    visit: &Visit,
    section: Section,
    query: &HashMap<String, String>,
    form_lang: Option<&str>,
    failed: Failure,
) -> Response {
    if visit.origin.session.is_none() {
        let lang = visit.lang(form_lang, None);
        return see_other(&format!("/login?lang={}", lang.code()));
    }
    let account = match visit.call(Method::GET, "/v1/account", None).await {
        Ok(account) => account,
        Err(refusal) if refusal.status == StatusCode::UNAUTHORIZED => {
            let lang = visit.lang(form_lang, None);
            return to_login(lang, "session_over", visit.secure);
        }
        Err(refusal) => return error_page(visit, form_lang, &refusal),
    };
    let lang = visit.lang(form_lang, account.get("language").and_then(Value::as_str));
    let kind = account
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let csrf = visit.csrf();
    let mut context = base_context(lang, section.title_key(), &csrf);
    context.insert("menu".into(), menu(lang, &kind, section));
    context.insert("section".into(), json!(section.path()));
    let mut notice = None;
    if let Some(id) = query.get("f") {
        if let Some((shown_notice, mut data)) = take_flash(id, &visit.owner()) {
            notice = shown_notice;
            if let Some(enrolment) = data.get_mut("enrolment").and_then(Value::as_object_mut) {
                let uri = enrolment
                    .get("otpauth_uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                enrolment.insert("qr_svg".into(), json!(qr_svg(&uri)));
            }
            context.insert("shown".into(), data);
            context.insert("flash".into(), json!(id));
        }
    }
    if let Some(message) = query.get("m").map(String::as_str) {
        if message == "done" || message == "reauthed" {
            notice = Some(text(lang, message).as_str().unwrap_or_default().to_string());
        }
    }
    context.insert("notice".into(), json!(notice));
    context.insert("error".into(), json!(failed.message));
    context.insert("reauth".into(), json!(failed.reauth));
    context.insert("failed".into(), json!(failed.action));
    context.insert("fe".into(), json!(failed.field_errors));
    context.insert("v".into(), json!(failed.values));
    let mut status = failed.status.unwrap_or(StatusCode::OK);
    match section {
        Section::Password => {
            context.insert("meter".into(), json!(true));
            context.insert("rules".into(), meter_rules(state, lang));
        }
        Section::RecoveryInfo => {
            let questions = visit
                .call(
                    Method::GET,
                    &format!("/v1/recovery-info/questions?language={}", lang.code()),
                    None,
                )
                .await
                .ok()
                .and_then(|q| q.get("questions").cloned())
                .unwrap_or(Value::Array(Vec::new()));
            context.insert("questions".into(), questions);
        }
        Section::History => {
            let mut params = Vec::new();
            for key in ["from", "to", "outcome", "cursor"] {
                if let Some(value) = query.get(key).filter(|v| !v.trim().is_empty()) {
                    params.push(format!("{key}={}", urlencoding_component(value.trim())));
                }
            }
            params.push("limit=20".into());
            let path = format!("/v1/account/access-history?{}", params.join("&"));
            match visit.call(Method::GET, &path, None).await {
                Ok(history) => {
                    if let Some(cursor) = history.get("next_cursor").and_then(Value::as_str) {
                        let mut next = format!("/account/access-history?lang={}", lang.code());
                        for key in ["from", "to", "outcome"] {
                            if let Some(value) = query.get(key).filter(|v| !v.trim().is_empty()) {
                                next.push_str(&format!(
                                    "&{key}={}",
                                    urlencoding_component(value.trim())
                                ));
                            }
                        }
                        next.push_str(&format!("&cursor={}", urlencoding_component(cursor)));
                        context.insert("next_href".into(), json!(next));
                    }
                    context.insert("history".into(), history);
                }
                Err(refusal) => {
                    let failed = failure(lang, "filter", &refusal, None);
                    let mut message = failed.message.unwrap_or_default();
                    for errors in failed.field_errors.values() {
                        for e in errors {
                            message.push(' ');
                            message.push_str(e);
                        }
                    }
                    context.insert("error".into(), json!(message));
                    status = refusal.status;
                }
            }
            let filters: BTreeMap<&str, String> = ["from", "to", "outcome"]
                .iter()
                .filter_map(|k| query.get(*k).map(|v| (*k, v.trim().to_string())))
                .collect();
            context.insert("filters".into(), json!(filters));
        }
        _ => {}
    }
    context.insert("account".into(), account);
    let mut response = with_csrf(
        render(status, section.template(), Value::Object(context)),
        &csrf,
        visit.secure,
    );
    if let Some(retry) = failed.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, retry);
    }
    response
}

/// The QR code of an otpauth URI, as an inline SVG element (no XML declaration).
fn qr_svg(uri: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) else {
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    match svg.find("<svg") {
        Some(at) => svg.get(at..).unwrap_or_default().to_string(),
        None => svg,
    }
}

fn error_page(visit: &Visit, form_lang: Option<&str>, refusal: &Refusal) -> Response {
    let lang = visit.lang(form_lang, None);
    let mut context = base_context(lang, "refused_title", &visit.csrf());
    context.insert(
        "message".into(),
        json!(problem_text(
            &refusal.slug,
            lang,
            &refusal.title,
            &refusal.detail
        )),
    );
    context.insert("alert".into(), json!(true));
    render(refusal.status, "message.html", Value::Object(context))
}

fn refused(visit: &Visit, lang_field: Option<&str>) -> Response {
    let lang = visit.lang(lang_field, None);
    let mut context = base_context(lang, "refused_title", &visit.csrf());
    context.insert("message".into(), text(lang, "refused"));
    context.insert("alert".into(), json!(true));
    render(
        StatusCode::FORBIDDEN,
        "message.html",
        Value::Object(context),
    )
}

pub async fn section_get(
    state: AppState,
    section: Section,
    visit: Visit,
    query: HashMap<String, String>,
) -> Response {
    section_view(&state, &visit, section, &query, None, Failure::default()).await
}

pub async fn section_post(
    state: AppState,
    section: Section,
    visit: Visit,
    pairs: Vec<(String, String)>,
) -> Response {
    let fields = Fields::new(pairs);
    let lang_field = fields.text("lang");
    let lang = visit.lang(lang_field.as_deref(), None);
    if !same_origin_form(&state, &visit.headers, &fields.secret("csrf")) {
        return refused(&visit, lang_field.as_deref());
    }
    if visit.origin.session.is_none() {
        return to_login(lang, "session_over", visit.secure);
    }
    let action = fields.text("action").unwrap_or_default();
    let call = match action_call(section, &action, &fields) {
        Ok(call) => call,
        Err(refusal) => {
            let failed = failure(lang, &action, &refusal, Some(&fields));
            return section_view(
                &state,
                &visit,
                section,
                &HashMap::new(),
                lang_field.as_deref(),
                failed,
            )
            .await;
        }
    };
    let flash_id = fields.text("flash");
    match visit.call(call.method, &call.path, call.body).await {
        Ok(answer) => {
            let owner = visit.owner();
            let back = |flash: Option<String>| {
                let mut location = format!("{}?lang={}", section.path(), lang.code());
                match flash {
                    Some(id) => {
                        location.push_str("&f=");
                        location.push_str(&id);
                    }
                    None if action == "reauth" => location.push_str("&m=reauthed"),
                    None => location.push_str("&m=done"),
                }
                see_other(&location)
            };
            match call.then {
                Then::Done => back(None),
                Then::CodeSent => {
                    let target = answer
                        .get("target")
                        .or_else(|| answer.pointer("/challenges/0/target"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let sent = format!(
                        "{} {target}",
                        text(lang, "code_sent").as_str().unwrap_or_default()
                    );
                    let data = json!({ "code_sent": action });
                    back(Some(put_flash(
                        owner,
                        Some(sent.trim().to_string()),
                        data,
                        false,
                    )))
                }
                Then::ShowOnce => {
                    let notice = match section {
                        Section::Collaborators => text(lang, "collaborator_created"),
                        _ => text(lang, "shown_once"),
                    };
                    let notice = notice.as_str().map(str::to_string);
                    back(Some(put_flash(owner, notice, answer, false)))
                }
                Then::Enrolment => {
                    // Only what the page needs; the QR code is drawn when the page is shown.
                    let data = json!({ "enrolment": {
                        "otpauth_uri": answer.get("otpauth_uri"),
                        "secret": answer.get("secret"),
                    } });
                    back(Some(put_flash(owner, None, data, true)))
                }
                Then::Enrolled => {
                    if let Some(id) = flash_id {
                        drop_flash(&id, &owner);
                    }
                    back(None)
                }
                Then::LoggedOut(why) => to_login(lang, why, visit.secure),
            }
        }
        Err(refusal)
            if refusal.status == StatusCode::UNAUTHORIZED && refusal.slug == "unauthenticated" =>
        {
            to_login(lang, "session_over", visit.secure)
        }
        Err(refusal) => {
            let failed = failure(lang, &action, &refusal, Some(&fields));
            let mut query = HashMap::new();
            if let Some(id) = flash_id {
                query.insert("f".to_string(), id);
            }
            section_view(
                &state,
                &visit,
                section,
                &query,
                lang_field.as_deref(),
                failed,
            )
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Login and logout

fn login_form(
    visit: &Visit,
    lang: Lang,
    status: StatusCode,
    notice: Option<Value>,
    failed: Failure,
    ask_otp: bool,
) -> Response {
    let csrf = visit.csrf();
    let mut context = base_context(lang, "login_title", &csrf);
    context.insert("notice".into(), notice.unwrap_or(Value::Null));
    context.insert("error".into(), json!(failed.message));
    context.insert("fe".into(), json!(failed.field_errors));
    context.insert("v".into(), json!(failed.values));
    context.insert("ask_otp".into(), json!(ask_otp));
    let mut response = with_csrf(
        render(status, "login.html", Value::Object(context)),
        &csrf,
        visit.secure,
    );
    if let Some(retry) = failed.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, retry);
    }
    response
}

pub async fn login_get(visit: Visit, query: HashMap<String, String>) -> Response {
    let lang = visit.lang(None, None);
    let notice = query
        .get("m")
        .filter(|m| {
            [
                "logged_out",
                "session_over",
                "suspended",
                "password_changed",
            ]
            .contains(&m.as_str())
        })
        .map(|m| text(lang, m));
    login_form(
        &visit,
        lang,
        StatusCode::OK,
        notice,
        Failure::default(),
        false,
    )
}

pub async fn login_post(state: AppState, visit: Visit, pairs: Vec<(String, String)>) -> Response {
    let fields = Fields::new(pairs);
    let lang_field = fields.text("lang");
    let lang = visit.lang(lang_field.as_deref(), None);
    if !same_origin_form(&state, &visit.headers, &fields.secret("csrf")) {
        return refused(&visit, lang_field.as_deref());
    }
    let body = with_otp(
        json!({
            "user_id": fields.text("user_id").unwrap_or_default(),
            "password": fields.secret("password"),
        }),
        &fields,
    );
    let anonymous = visit.anonymous(lang);
    match anonymous
        .call(Method::POST, "/v1/sessions", Some(body))
        .await
    {
        Ok(session) => {
            if visit.origin.session.is_some() {
                // The session this browser held before ends: one browser, one session.
                let _ = visit
                    .call(Method::DELETE, "/v1/sessions/current", None)
                    .await;
            }
            let token = session
                .get("session_token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let actions: Vec<&str> = session
                .get("required_actions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let next = if actions.contains(&"change_password") {
                Section::Password
            } else if actions.iter().any(|a| a.ends_with("recovery_info")) {
                Section::RecoveryInfo
            } else {
                Section::Account
            };
            let mut response = see_other(&format!("{}?lang={}", next.path(), lang.code()));
            if let Some(cookie) = session_cookie(token, visit.secure, false) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            // A new form token with the new session: one planted or seen before the login
            // (on a shared machine, through another page) posts nothing in this session.
            set_csrf_cookie(&mut response, &fresh_csrf(), visit.secure);
            response
        }
        Err(refusal) => {
            let ask_otp = matches!(
                refusal.slug.as_str(),
                "second-factor-required" | "code-wrong" | "code-replayed"
            ) || fields.text("otp").is_some();
            let mut failed = failure(lang, "login", &refusal, Some(&fields));
            if refusal.slug == "second-factor-required" {
                let hint = text(lang, "otp_hint");
                failed.message = hint.as_str().map(str::to_string);
            }
            login_form(&visit, lang, refusal.status, None, failed, ask_otp)
        }
    }
}

/// `/logout` itself changes nothing (a link or a prefetch must not end a session): it offers
/// the button that posts.
pub async fn logout_get(visit: Visit) -> Response {
    let lang = visit.lang(None, None);
    if visit.origin.session.is_none() {
        return see_other(&format!("/login?lang={}", lang.code()));
    }
    let csrf = visit.csrf();
    let context = base_context(lang, "logout", &csrf);
    with_csrf(
        render(StatusCode::OK, "logout.html", Value::Object(context)),
        &csrf,
        visit.secure,
    )
}

pub async fn logout_post(state: AppState, visit: Visit, pairs: Vec<(String, String)>) -> Response {
    let fields = Fields::new(pairs);
    let lang_field = fields.text("lang");
    let lang = visit.lang(lang_field.as_deref(), None);
    if !same_origin_form(&state, &visit.headers, &fields.secret("csrf")) {
        return refused(&visit, lang_field.as_deref());
    }
    if visit.origin.session.is_some() {
        // Already ended or unknown: the cookie goes all the same.
        let _ = visit
            .call(Method::DELETE, "/v1/sessions/current", None)
            .await;
    }
    let mut response = to_login(lang, "logged_out", visit.secure);
    set_csrf_cookie(&mut response, &fresh_csrf(), visit.secure);
    response
}

// ---------------------------------------------------------------------------------------------
// The forgotten-password journey (RC-1..5): user id and captcha, the masked methods, a mailed
// link, or a code or the question, then the new password. The recovery's id travels in the
// forms; every step is the API's, under its answer floor.

fn recover_page(
    state: &AppState,
    visit: &Visit,
    lang: Lang,
    template: &str,
    title_key: &str,
    status: StatusCode,
    extra: Map<String, Value>,
) -> Response {
    let csrf = visit.csrf();
    let mut context = base_context(lang, title_key, &csrf);
    if template == "recover.html" {
        if let (Some(site_key), Some(widget)) = (
            state.config.captcha.site_key.as_ref(),
            state.config.captcha.widget_url.as_ref(),
        ) {
            context.insert("captcha_widget".into(), json!(widget));
            context.insert("captcha_site_key".into(), json!(site_key));
        }
    }
    context.extend(extra);
    let mut response = with_csrf(
        render(status, template, Value::Object(context)),
        &csrf,
        visit.secure,
    );
    if template == "recover.html" {
        if let Some(widget) = state.config.captcha.widget_url.as_deref() {
            widen_csp(&mut response, widget);
        }
    }
    response
}

/// The captcha widget's origin joins the policy's script, frame and connect sources.
fn widen_csp(response: &mut Response, widget: &str) {
    let origin: String = widget.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    let policy = format!(
        "{}; script-src 'self' {origin}; frame-src {origin}; connect-src 'self' {origin}",
        super::CSP
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
}

pub async fn recover_get(state: AppState, visit: Visit) -> Response {
    let lang = visit.lang(None, None);
    recover_page(
        &state,
        &visit,
        lang,
        "recover.html",
        "recover_title",
        StatusCode::OK,
        Map::new(),
    )
}

/// The captcha's token from whichever widget answered, or the tick of the page's own box.
fn captcha_token(fields: &Fields) -> Option<String> {
    [
        "h-captcha-response",
        "g-recaptcha-response",
        "frc-captcha-solution",
        "cf-turnstile-response",
        "captcha_token",
    ]
    .iter()
    .find_map(|name| fields.text(name))
}

pub async fn recover_post(state: AppState, visit: Visit, pairs: Vec<(String, String)>) -> Response {
    let retry_after = std::sync::Mutex::new(None);
    let mut response = recover_steps(state, visit, pairs, &retry_after).await;
    if let Some(value) = retry_after.into_inner().ok().flatten() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn recover_steps(
    state: AppState,
    visit: Visit,
    pairs: Vec<(String, String)>,
    retry_after: &std::sync::Mutex<Option<HeaderValue>>,
) -> Response {
    let fields = Fields::new(pairs);
    let lang_field = fields.text("lang");
    let lang = visit.lang(lang_field.as_deref(), None);
    if !same_origin_form(&state, &visit.headers, &fields.secret("csrf")) {
        return refused(&visit, lang_field.as_deref());
    }
    let show = |template: &str, title: &str, status: StatusCode, extra: Map<String, Value>| {
        recover_page(&state, &visit, lang, template, title, status, extra)
    };
    let step = fields.text("step").unwrap_or_default();
    let user_id = fields.text("user_id").unwrap_or_default();
    let anonymous = visit.anonymous(lang);
    let recovery_id = fields
        .text("recovery_id")
        .and_then(|id| uuid::Uuid::parse_str(&id).ok());
    let mut extra = Map::new();
    extra.insert("user_id".into(), json!(user_id));
    if let Some(id) = recovery_id {
        extra.insert("recovery_id".into(), json!(id.to_string()));
    }
    let fail = |extra: &mut Map<String, Value>, action: &str, refusal: &Refusal| {
        if let Ok(mut slot) = retry_after.lock() {
            *slot = refusal.retry_after.clone();
        }
        let failed = failure(lang, action, refusal, Some(&fields));
        extra.insert("error".into(), json!(failed.message));
        extra.insert("fe".into(), json!(failed.field_errors));
        extra.insert("v".into(), json!(failed.values));
        refusal.status
    };
    if step == "start" {
        let body = json!({
            "user_id": user_id,
            "captcha_token": captcha_token(&fields).unwrap_or_default(),
        });
        return match anonymous
            .call(Method::POST, "/v1/recovery", Some(body))
            .await
        {
            Ok(started) => {
                extra.insert("started".into(), started.clone());
                if let Some(id) = started.get("recovery_id") {
                    extra.insert("recovery_id".into(), id.clone());
                }
                show(
                    "recover_methods.html",
                    "methods_title",
                    StatusCode::OK,
                    extra,
                )
            }
            Err(refusal) => {
                let status = fail(&mut extra, "start", &refusal);
                show("recover.html", "recover_title", status, extra)
            }
        };
    }
    let Some(id) = recovery_id else {
        let refusal = bad_form("the recovery is not named: start again");
        let status = fail(&mut extra, "start", &refusal);
        return show("recover.html", "recover_title", status, extra);
    };
    let base = format!("/v1/recovery/{id}");
    match step.as_str() {
        "email" => match anonymous
            .call(Method::POST, &format!("{base}/email"), None)
            .await
        {
            Ok(_) => {
                extra.insert("message".into(), text(lang, "link_sent"));
                show("message.html", "link_sent_title", StatusCode::OK, extra)
            }
            Err(refusal) => {
                let status = fail(&mut extra, "email", &refusal);
                show("recover.html", "recover_title", status, extra)
            }
        },
        "sms" => match anonymous
            .call(Method::POST, &format!("{base}/sms"), None)
            .await
        {
            Ok(_) => show("recover_code.html", "code_title", StatusCode::OK, extra),
            Err(refusal) => {
                let status = fail(&mut extra, "sms", &refusal);
                show("recover.html", "recover_title", status, extra)
            }
        },
        "verify" => {
            let body = json!({ "code": fields.text("code").unwrap_or_default() });
            match anonymous
                .call(Method::POST, &format!("{base}/sms/verify"), Some(body))
                .await
            {
                Ok(answer) => new_password(&state, &visit, lang, &answer, &user_id),
                Err(refusal) => {
                    let status = fail(&mut extra, "verify", &refusal);
                    show("recover_code.html", "code_title", status, extra)
                }
            }
        }
        "question" | "answer" => {
            let question = anonymous
                .call(Method::GET, &format!("{base}/question"), None)
                .await;
            let question = match question {
                Ok(q) => q.get("question").cloned().unwrap_or(Value::Null),
                Err(refusal) => {
                    let status = fail(&mut extra, "question", &refusal);
                    return show("recover.html", "recover_title", status, extra);
                }
            };
            extra.insert("question".into(), question);
            if step == "question" {
                return show(
                    "recover_question.html",
                    "question_title",
                    StatusCode::OK,
                    extra,
                );
            }
            let body = json!({ "answer": fields.secret("answer") });
            match anonymous
                .call(Method::POST, &format!("{base}/question"), Some(body))
                .await
            {
                Ok(answer) => new_password(&state, &visit, lang, &answer, &user_id),
                Err(refusal) => {
                    let status = fail(&mut extra, "answer", &refusal);
                    show("recover_question.html", "question_title", status, extra)
                }
            }
        }
        _ => {
            let refusal = bad_form("the form asks for a step this page does not have");
            let status = fail(&mut extra, "start", &refusal);
            show("recover.html", "recover_title", status, extra)
        }
    }
}

/// The reset token a code or an answer earned: the new password's form, in this answer (never
/// in an address).
fn new_password(
    state: &AppState,
    visit: &Visit,
    lang: Lang,
    answer: &Value,
    user_id: &str,
) -> Response {
    let token = answer
        .get("reset_token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let csrf = visit.csrf();
    super::link_form(
        state,
        super::FormView {
            flow: super::Flow::Recovery,
            lang,
            token,
            csrf: &csrf,
            user_id,
            error: None,
            field_errors: BTreeMap::new(),
            status: StatusCode::OK,
            token_in_address: false,
        },
    )
}

// Axum adapters --------------------------------------------------------------------------------

/// A posted form's fields; a body that is not a form gets the page's refusal (in the browser's
/// language, with the pages' headers), never the framework's plain text.
pub struct Posted(pub Vec<(String, String)>);

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Response> {
        let headers = request.headers().clone();
        match Form::<Vec<(String, String)>>::from_request(request, state).await {
            Ok(Form(pairs)) => Ok(Self(pairs)),
            Err(_) => Err(super::unreadable_form(&headers)),
        }
    }
}

pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    let mut router = axum::Router::new()
        .route(
            "/login",
            get(|v: Visit, Query(q): Query<HashMap<String, String>>| login_get(v, q))
                .post(|State(s): State<AppState>, v: Visit, Posted(p): Posted| login_post(s, v, p)),
        )
        .route(
            "/logout",
            get(logout_get).post(|State(s): State<AppState>, v: Visit, Posted(p): Posted| {
                logout_post(s, v, p)
            }),
        )
        .route(
            "/recover",
            get(|State(s): State<AppState>, v: Visit| recover_get(s, v)).post(
                |State(s): State<AppState>, v: Visit, Posted(p): Posted| recover_post(s, v, p),
            ),
        );
    for section in Section::ALL {
        router = router.route(
            section.path(),
            get(
                move |State(s): State<AppState>,
                      v: Visit,
                      Query(q): Query<HashMap<String, String>>| {
                    section_get(s, section, v, q)
                },
            )
            .post(
                move |State(s): State<AppState>, v: Visit, Posted(p): Posted| {
                    section_post(s, section, v, p)
                },
            ),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::super::catalogue;
    use super::*;

    #[test]
    fn both_languages_have_every_text() {
        let it = catalogue().get("it").and_then(Value::as_object).unwrap();
        let en = catalogue().get("en").and_then(Value::as_object).unwrap();
        let missing: Vec<_> = it.keys().filter(|k| !en.contains_key(*k)).collect();
        assert!(missing.is_empty(), "English lacks {missing:?}");
        let missing: Vec<_> = en.keys().filter(|k| !it.contains_key(*k)).collect();
        assert!(missing.is_empty(), "Italian lacks {missing:?}");
    }

    #[test]
    fn a_flash_is_read_once_and_only_by_its_session() {
        let id = put_flash("owner-a".into(), None, json!({"password": "x"}), false);
        assert!(take_flash(&id, "owner-b").is_none());
        assert!(take_flash(&id, "owner-a").is_some());
        assert!(take_flash(&id, "owner-a").is_none());
        let sticky = put_flash("owner-a".into(), None, json!({}), true);
        assert!(take_flash(&sticky, "owner-a").is_some());
        assert!(take_flash(&sticky, "owner-a").is_some());
        drop_flash(&sticky, "owner-a");
        assert!(take_flash(&sticky, "owner-a").is_none());
    }

    #[test]
    fn one_session_cannot_fill_the_flashes() {
        let owner = "owner-flood";
        let enrolments: Vec<String> = (0..50)
            .map(|_| put_flash(owner.into(), None, json!({}), true))
            .collect();
        // Each enrolment replaced the one before.
        assert!(enrolments[..49]
            .iter()
            .all(|id| take_flash(id, owner).is_none()));
        assert!(take_flash(&enrolments[49], owner).is_some());
        let others = put_flash("owner-other".into(), None, json!({}), false);
        for _ in 0..50 {
            put_flash(owner.into(), None, json!({}), false);
        }
        let held = flashes()
            .lock()
            .unwrap()
            .values()
            .filter(|f| f.owner == owner)
            .count();
        assert!(held <= FLASH_PER_OWNER, "{held}");
        assert!(
            take_flash(&others, "owner-other").is_some(),
            "another session's flash stays"
        );
    }

    #[test]
    fn every_action_of_every_form_is_known() {
        let f = Fields::new(vec![
            ("scope".into(), "mailbox".into()),
            ("collaborator_id".into(), uuid::Uuid::nil().to_string()),
            ("days".into(), "3".into()),
        ]);
        for (section, action) in [
            (Section::Account, "language"),
            (Section::Password, "change"),
            (Section::Password, "send_code"),
            (Section::RecoveryInfo, "save"),
            (Section::RecoveryInfo, "confirm"),
            (Section::RecoveryInfo, "verify_email"),
            (Section::RecoveryInfo, "email_change_confirm"),
            (Section::TwoFactor, "start"),
            (Section::TwoFactor, "confirm"),
            (Section::TwoFactor, "disable"),
            (Section::AppPasswords, "create"),
            (Section::AppPasswords, "postpone"),
            (Section::AppPasswords, "regenerate"),
            (Section::AppPasswords, "deactivate"),
            (Section::AppPasswords, "mail_protocols"),
            (Section::Collaborators, "create"),
            (Section::Collaborators, "reset"),
            (Section::Contacts, "document"),
            (Section::Suspension, "suspend"),
        ] {
            assert!(
                action_call(section, action, &f).is_ok(),
                "{section:?} {action}"
            );
        }
        assert!(action_call(Section::History, "anything", &f).is_err());
        let evil = Fields::new(vec![("scope".into(), "../../admin".into())]);
        assert!(action_call(Section::AppPasswords, "deactivate", &evil).is_err());
    }
}
