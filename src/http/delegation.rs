//! Collaborators (CO-1..5), mail protocols (ACC-5), two-step verification (AP-8), passwords
//! for mail programs (AP-1..6) and the mail servers' check of them (AP-7).

use super::extract::{Body, ClientIp, Correlation, HolderSession, Operator, OptionalBody};
use super::problem::Problem;
use super::{command_answer, query, settle};
use crate::app::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use custode_commands::accounts::Caller;
use custode_commands::delegation::BindError;
use custode_commands::handler::HandlerError;
use custode_domain::access::{
    decide_check, AppPasswordChecked, DenyReason, Outcome as AccessOutcome, Protocol,
};
use custode_domain::account::{
    AccountCommand, AccountError, AccountEvent, ConfirmTwoFactor, DisableTwoFactor, LoginFailure,
    Permission, Scope, SetCollaboratorPassword, SetMailProtocols, TwoFactorChannel,
};
use custode_domain::hardware_token::HardwareTokenError;
use custode_domain::masking::mask_mobile;
use custode_domain::{Actor, Secret, Violation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The issuer an authenticator app shows beside the account.
const TOTP_ISSUER: &str = "custode";

// ---------------------------------------------------------------- ACC-5

#[derive(Debug, Deserialize, Serialize)]
pub struct MailProtocols {
    imap: bool,
    pop: bool,
    smtp: bool,
}

pub async fn set_mail_protocols(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<MailProtocols>,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::SetMailProtocols(SetMailProtocols {
        session_id: session.session_id,
        imap: req.imap,
        pop: req.pop,
        smtp: req.smtp,
    });
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    Ok(command_answer(&state, outcome.position(), Json(req)).await)
}

// ---------------------------------------------------------------- AP-8

#[derive(Debug, Default, Deserialize)]
pub struct TwoFactorRequest {
    channel: Option<TwoFactorChannel>,
    /// A hardware token's serial number and a current code from it.
    serial: Option<String>,
    code: Option<Secret>,
}

/// Shown once; no `Debug`, so it never reaches a log line.
#[derive(Serialize)]
struct AppEnrollment {
    channel: TwoFactorChannel,
    otpauth_uri: String,
    /// The secret in base32, for typing it in instead of scanning the QR code.
    secret: String,
    /// The QR code of `otpauth_uri`, as an SVG document.
    qr_svg: String,
}

#[derive(Debug, Serialize)]
pub(super) struct CodeSent {
    pub(super) channel: TwoFactorChannel,
    pub(super) challenge_id: Uuid,
    pub(super) target: String,
    pub(super) expires_at: DateTime<Utc>,
}

/// A wrong or replayed code, as the events recorded say.
pub(super) fn second_factor_refusal(events: &[AccountEvent]) -> Option<Problem> {
    events.iter().find_map(|e| match e {
        AccountEvent::TotpRejected(r) => Some(match r.reason {
            custode_domain::account::CodeRejection::Wrong => {
                Problem::new("code-wrong", "the code is not right")
            }
            custode_domain::account::CodeRejection::Replayed => Problem::new(
                "code-replayed",
                "this code was already used; wait for the next one",
            ),
        }),
        AccountEvent::OtpCheckFailed(f) => Some(Problem::new(
            "code-wrong",
            format!("the code is not right; {} attempt(s) left", f.attempts_left),
        )),
        AccountEvent::LoginFailed(f) => match f.reason {
            LoginFailure::WrongCode => Some(Problem::new("code-wrong", "the code is not right")),
            LoginFailure::CodeReplayed => Some(Problem::new(
                "code-replayed",
                "this code was already used; wait for the next one",
            )),
            LoginFailure::WrongPassword => None,
        },
        _ => None,
    })
}

pub(super) fn second_factor_sent(
    events: &[AccountEvent],
    channel: TwoFactorChannel,
) -> Option<CodeSent> {
    events.iter().find_map(|e| match e {
        AccountEvent::OtpChallengeIssued(issued) => Some(CodeSent {
            channel,
            challenge_id: issued.challenge_id,
            target: mask_mobile(&issued.to),
            expires_at: issued.expires_at,
        }),
        _ => None,
    })
}

/// `POST /v1/account/two-factor`: the app (default: the otpauth URI, its QR code and the typed
/// key), SMS (a code to confirm), or a hardware token (serial and a current code: on at once).
pub async fn start_two_factor(
    State(state): State<AppState>,
    session: HolderSession,
    client: ClientIp,
    correlation: Correlation,
    OptionalBody(req): OptionalBody<TwoFactorRequest>,
) -> Result<Response, Problem> {
    let channel = req.channel.unwrap_or(TwoFactorChannel::App);
    let caller = session.caller(correlation);
    match channel {
        TwoFactorChannel::HardwareToken => {
            let (Some(serial), Some(code)) = (req.serial, req.code) else {
                return Err(Problem::new(
                    "validation-failed",
                    "a hardware token is bound with its serial number and a current code",
                )
                .with_errors(vec![Violation::new(
                    "AP-8.serial",
                    Some("serial"),
                    "give `serial` and `code`",
                )]));
            };
            let outcome = state
                .accounts
                .bind_hardware_token(
                    session.account_id,
                    session.session_id,
                    &serial,
                    code,
                    client.text(),
                    &caller,
                )
                .await
                .map_err(|e| match e {
                    BindError::Account(e) => Problem::from(e),
                    BindError::Token(e) => token_problem(e),
                })?;
            if let Some(problem) = second_factor_refusal(&outcome.events) {
                settle(&state, outcome.position()).await;
                return Err(problem);
            }
            Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
        }
        TwoFactorChannel::Sms => {
            let started = state
                .accounts
                .start_two_factor(session.account_id, session.session_id, channel, &caller)
                .await?;
            let Some(sent) = second_factor_sent(&started.outcome.events, channel) else {
                return Err(Problem::internal(&"an SMS activation sent no code"));
            };
            Ok(command_answer(
                &state,
                started.outcome.position(),
                (StatusCode::ACCEPTED, Json(sent)),
            )
            .await)
        }
        TwoFactorChannel::App => {
            let started = state
                .accounts
                .start_two_factor(session.account_id, session.session_id, channel, &caller)
                .await?;
            let Some(secret) = started.totp_secret else {
                return Err(Problem::internal(&"an app activation drew no secret"));
            };
            let totp = custode_commands::secrets::totp(secret, TOTP_ISSUER, &started.user_id)
                .map_err(|e| Problem::internal(&e))?;
            let otpauth_uri = totp.get_url();
            let qr_svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
                .map_err(|e| Problem::internal(&e))?
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .build();
            let body = AppEnrollment {
                channel,
                secret: totp.get_secret_base32(),
                otpauth_uri,
                qr_svg,
            };
            Ok(command_answer(&state, started.outcome.position(), Json(body)).await)
        }
    }
}

fn token_problem(e: HandlerError<HardwareTokenError>) -> Problem {
    match e {
        HandlerError::Domain(HardwareTokenError::BadSerial) => Problem::new(
            "validation-failed",
            "the serial number has 4 to 32 letters, digits or '-'",
        )
        .with_errors(vec![Violation::new(
            "AP-8.serial",
            Some("serial"),
            "4 to 32 letters, digits or '-'",
        )]),
        HandlerError::Domain(d) => {
            let detail = d.to_string();
            Problem::new(custode_domain::Refusal::code(&d), detail)
        }
        other => Problem::from(other.map_domain(|_| AccountError::NotFound)),
    }
}

#[derive(Debug, Deserialize)]
pub struct CodeRequest {
    code: Secret,
}

/// Runs a command that checks a code, answering a wrong or replayed one as such (recorded).
pub(super) async fn code_command(
    state: AppState,
    session: HolderSession,
    correlation: Correlation,
    cmd: AccountCommand,
) -> Result<Response, Problem> {
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    if let Some(problem) = second_factor_refusal(&outcome.events) {
        settle(&state, outcome.position()).await;
        return Err(problem);
    }
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}

pub async fn confirm_two_factor(
    State(state): State<AppState>,
    session: HolderSession,
    client: ClientIp,
    correlation: Correlation,
    Body(req): Body<CodeRequest>,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::ConfirmTwoFactor(ConfirmTwoFactor {
        session_id: session.session_id,
        code: req.code,
        client_ip: client.text(),
    });
    code_command(state, session, correlation, cmd).await
}

pub async fn disable_two_factor(
    State(state): State<AppState>,
    session: HolderSession,
    client: ClientIp,
    correlation: Correlation,
    Body(req): Body<CodeRequest>,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::DisableTwoFactor(DisableTwoFactor {
        session_id: session.session_id,
        code: req.code,
        client_ip: client.text(),
    });
    code_command(state, session, correlation, cmd).await
}

#[derive(Debug, Deserialize)]
pub struct HardwareTokenRequest {
    serial: String,
    /// The seed as shipped: base32 (`seed_base32`) or hex (`seed_hex`).
    seed_base32: Option<Secret>,
    seed_hex: Option<Secret>,
}

#[derive(Debug, Serialize)]
struct TokenRegistered {
    serial: String,
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

/// `POST /v1/admin/hardware-tokens` (operator): registers an OATH-TOTP token by serial and seed.
pub async fn register_hardware_token(
    State(state): State<AppState>,
    _: Operator,
    correlation: Correlation,
    Body(req): Body<HardwareTokenRequest>,
) -> Result<Response, Problem> {
    let seed = match (&req.seed_base32, &req.seed_hex) {
        (Some(b32), None) => custode_commands::secrets::decode_base32(b32.expose()),
        (None, Some(hex)) => hex_bytes(hex.expose()),
        _ => None,
    };
    // A seed of one repeated byte is no secret (a vendor's placeholder, or a typing error).
    let usable =
        |s: &Vec<u8>| (16..=64).contains(&s.len()) && s.iter().any(|b| Some(b) != s.first());
    let Some(seed) = seed.filter(usable) else {
        return Err(Problem::new(
            "validation-failed",
            "give the token's seed once, as `seed_base32` or `seed_hex`, 128 to 512 bits",
        )
        .with_errors(vec![Violation::new(
            "AP-8.seed",
            Some("seed_base32"),
            "a seed of 16 to 64 bytes, in base32 or hex",
        )]));
    };
    let caller = Caller {
        actor: Actor::operator(),
        correlation_id: correlation.0,
    };
    let position = state
        .accounts
        .register_hardware_token(&req.serial, &seed, &caller)
        .await
        .map_err(token_problem)?;
    let body = TokenRegistered {
        serial: custode_domain::hardware_token::serial_key(&req.serial),
    };
    Ok(command_answer(&state, position, (StatusCode::CREATED, Json(body))).await)
}

// ---------------------------------------------------------------- AP-1..6

#[derive(Debug, Deserialize)]
pub struct AppPasswordRequest {
    scope: String,
}

/// Shown once; no `Debug`, so it never reaches a log line.
#[derive(Serialize)]
struct AppPasswordShown {
    scope: String,
    /// Shown once, never again.
    password: String,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct Expiry {
    scope: String,
    expires_at: DateTime<Utc>,
}

async fn generate(
    state: AppState,
    session: HolderSession,
    correlation: Correlation,
    scope: String,
    replace: bool,
) -> Result<Response, Problem> {
    let (outcome, password) = state
        .accounts
        .generate_app_password(
            session.account_id,
            session.session_id,
            &scope,
            replace,
            &session.caller(correlation),
        )
        .await?;
    let Some(issued) = outcome.events.iter().find_map(|e| match e {
        AccountEvent::AppPasswordIssued(i) => Some(i),
        _ => None,
    }) else {
        return Err(Problem::internal(&"no app password was issued"));
    };
    let body = AppPasswordShown {
        scope: issued.scope.clone(),
        password: password.expose().to_string(),
        expires_at: issued.expires_at,
    };
    Ok(command_answer(
        &state,
        outcome.position(),
        (StatusCode::CREATED, Json(body)),
    )
    .await)
}

pub async fn create_app_password(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<AppPasswordRequest>,
) -> Result<Response, Problem> {
    generate(state, session, correlation, req.scope, false).await
}

pub async fn regenerate_app_password(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Path(scope): Path<String>,
) -> Result<Response, Problem> {
    generate(state, session, correlation, scope, true).await
}

pub async fn postpone_app_password(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Path(scope): Path<String>,
) -> Result<Response, Problem> {
    let outcome = state
        .accounts
        .app_password_scope(
            session.account_id,
            session.session_id,
            &scope,
            true,
            &session.caller(correlation),
        )
        .await?;
    let Some(postponed) = outcome.events.iter().find_map(|e| match e {
        AccountEvent::AppPasswordPostponed(p) => Some(p),
        _ => None,
    }) else {
        return Err(Problem::internal(&"nothing was postponed"));
    };
    let body = Expiry {
        scope: postponed.scope.clone(),
        expires_at: postponed.expires_at,
    };
    Ok(command_answer(&state, outcome.position(), Json(body)).await)
}

pub async fn deactivate_app_password(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Path(scope): Path<String>,
) -> Result<Response, Problem> {
    let outcome = state
        .accounts
        .app_password_scope(
            session.account_id,
            session.session_id,
            &scope,
            false,
            &session.caller(correlation),
        )
        .await?;
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}

// ---------------------------------------------------------------- AP-7

#[derive(Debug, Deserialize)]
pub struct CheckRequest {
    user_id: String,
    scope: String,
    password: Secret,
    /// The mail client's address, as the mail server saw it.
    client_ip: Option<String>,
    /// The protocol the client logs in with, when the server says.
    protocol: Option<Protocol>,
}

#[derive(Debug, Serialize)]
struct Allowed {
    result: &'static str,
    account_id: Uuid,
}

/// AP-7: a mail server's check of an app password, allow (200) or deny (401), decided by
/// `custode_domain::access::decide_check` on the read model's facts. Every attempt on a known
/// account is recorded (AH-1) before the answer.
pub async fn check_app_password(
    State(state): State<AppState>,
    _: Operator,
    correlation: Correlation,
    Body(req): Body<CheckRequest>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let limits = &state.config.settings.limits;
    let invalid = |rule: &'static str, field: &'static str, message: &'static str| {
        Problem::new("validation-failed", "the request breaks 1 rule(s)")
            .with_errors(vec![Violation::new(rule, Some(field), message)])
    };
    if req.user_id.chars().count() > 254 {
        return Err(invalid(
            "AP-7",
            "user_id",
            "a user id has at most 254 characters",
        ));
    }
    if req.password.expose().len() > 128 {
        return Err(invalid(
            "AP-7",
            "password",
            "a password has at most 128 bytes",
        ));
    }
    let scope = Scope::parse(&req.scope).ok_or_else(|| {
        invalid(
            "AP-7.scope",
            "scope",
            "a scope is `mailbox`, `archive` or `collaborator:<id>`",
        )
    })?;
    let scope_text = scope.as_string();
    // SEC-2: the reported client address is an address (a port after it is dropped), so its
    // failures are counted under one key whatever its spelling.
    let reported: Option<std::net::IpAddr> = match req.client_ip.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<std::net::IpAddr>()
                .or_else(|_| text.parse::<std::net::SocketAddr>().map(|a| a.ip()))
                .map_err(|_| {
                    invalid(
                        "AP-7.client_ip",
                        "client_ip",
                        "the client's address is an IPv4 or IPv6 address",
                    )
                })?,
        ),
    };
    // SEC-2: failures per reported client address, and per user id and scope.
    let address_key =
        reported.map(|ip| format!("ap7-address:{}", super::limits::address_group(ip)));
    if let Some(key) = &address_key {
        state.limiter.check(
            key,
            limits.app_password_failures_per_address_per_minute,
            now,
            "failed checks from this client address",
        )?;
    }
    // Memory speed (AP-7): the facts of a recent check of this user id and scope, else one
    // read of the read models, kept for the next check.
    let facts = match state.check_facts.get(&req.user_id, &scope_text) {
        Some(facts) => Some(facts),
        None => {
            let epoch = state.check_facts.epoch();
            let read = query(&state, {
                let user_id = req.user_id.clone();
                let scope = scope_text.clone();
                move |conn| custode_projections::accounts::check_facts(conn, &user_id, &scope)
            })
            .await?;
            read.map(|(facts, mailbox_id)| {
                state
                    .check_facts
                    .keep(epoch, &req.user_id, &scope_text, &facts, mailbox_id);
                facts
            })
        }
    };
    // SEC-2: failures are counted per user id and scope; the scopes with no app password
    // (`collaborator:<any uuid>` among them) share one count, so that made-up scopes cannot
    // each bring a fresh budget and fill the holder's history (found from outside).
    let passwordless = facts.as_ref().is_some_and(|f| f.password.is_none());
    let user_key = format!(
        "ap7-user:{}/{}",
        custode_domain::user_registry::user_key(&req.user_id),
        if passwordless {
            "(no app password)"
        } else {
            scope_text.as_str()
        }
    );
    // The count lives in the log (each failed check is recorded); a node that has not counted
    // this user id and scope yet reads its recent failures once.
    if let Some(f) = facts.as_ref().filter(|_| !state.limiter.knows(&user_key)) {
        let since = now - chrono::Duration::minutes(1);
        let failures = state
            .accounts
            .recent_check_failures(
                f.account_id,
                (!passwordless).then_some(scope_text.as_str()),
                since,
            )
            .await?;
        state.limiter.learn(&user_key, failures, now);
    }
    // AH-1: the record of this check, for the account's access stream.
    let caller = Caller {
        actor: Actor::operator(),
        correlation_id: correlation.0,
    };
    let checked = |scope: String, verdict: Result<(), DenyReason>| {
        custode_domain::access::AccessEvent::AppPasswordChecked(AppPasswordChecked {
            user_id: req.user_id.trim().to_string(),
            scope,
            outcome: match verdict {
                Ok(()) => AccessOutcome::Success,
                Err(_) => AccessOutcome::Failure,
            },
            reason: verdict.err(),
            protocol: req.protocol,
            client_ip: reported.map(|ip| ip.to_string()),
        })
    };
    if let Err(refused) = state.limiter.check(
        &user_key,
        limits.app_password_failures_per_user_per_minute,
        now,
        "failed checks for this user id and scope",
    ) {
        // AP-7, AH-1: the holder and the auditor see that checks were turned away, once a
        // minute per user id and scope (with the first such attempt's address): a record per
        // attempt would let a guessing run write to the log as fast as it guesses.
        if let Some(f) = facts.as_ref().filter(|_| {
            state
                .limiter
                .first_in_minute(&format!("ap7-turned-away:{user_key}"), now)
        }) {
            // Best effort: a full queue turns the check away all the same.
            let record = checked(scope_text, Err(DenyReason::RateLimited));
            let _ = state
                .access_recorder
                .record(f.account_id, record, &caller, now)
                .await;
        }
        return Err(refused);
    }
    let presented = state
        .accounts
        .services()
        .service_key
        .app_password_hmac(req.password.expose());
    let verdict = match &facts {
        None => Err(DenyReason::NoAppPassword),
        Some(f) => decide_check(f, scope, req.protocol, &presented, now),
    };
    if let Some(f) = &facts {
        // Recorded behind the answer (AH-3: memory-speed checks; the record reaches the log
        // with the next group commit). A check that cannot be recorded is not answered.
        state
            .access_recorder
            .record(f.account_id, checked(scope_text, verdict), &caller, now)
            .await
            .map_err(|_| {
            Problem::busy(
                "the access history cannot take this check's record at the moment; try again shortly",
            )
        })?;
    }
    let response = match (verdict, &facts) {
        (Ok(()), Some(f)) => Json(Allowed {
            result: "allow",
            account_id: f.account_id,
        })
        .into_response(),
        (verdict, _) => {
            let reason = verdict.err().unwrap_or(DenyReason::NoAppPassword);
            if let Some(key) = &address_key {
                state.limiter.record(key, now);
            }
            state.limiter.record(&user_key, now);
            Problem::new(
                "app-password-denied",
                format!("denied: {}", reason.as_str()),
            )
            .into_response()
        }
    };
    Ok(response)
}

// ---------------------------------------------------------------- CO-1..5

#[derive(Debug, Deserialize)]
pub struct CollaboratorRequest {
    name: String,
    reference_email: String,
    #[serde(default)]
    permissions: Vec<Permission>,
}

#[derive(Debug, Serialize)]
struct CollaboratorCreated {
    collaborator_id: Uuid,
    user_id: String,
}

pub async fn create_collaborator(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<CollaboratorRequest>,
) -> Result<Response, Problem> {
    let created = state
        .accounts
        .create_collaborator(
            session.account_id,
            session.session_id,
            req.name,
            req.reference_email,
            req.permissions,
            &session.caller(correlation),
        )
        .await?;
    let body = CollaboratorCreated {
        collaborator_id: created.collaborator_id,
        user_id: created.user_id,
    };
    Ok(command_answer(
        &state,
        created.outcome.position(),
        (StatusCode::CREATED, Json(body)),
    )
    .await)
}

fn collaborator_id(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text)
        .map_err(|_| Problem::new("account-not-found", "no collaborator has this id"))
}

/// CO-2 (`resend: false`) and CO-3: a new link to the collaborator's reference email.
async fn link_again(
    state: AppState,
    session: HolderSession,
    correlation: Correlation,
    id: String,
    resend: bool,
) -> Result<Response, Problem> {
    let id = collaborator_id(&id)?;
    let outcome = state
        .accounts
        .collaborator_link_again(
            session.account_id,
            session.session_id,
            id,
            resend,
            &session.caller(correlation),
        )
        .await
        .map_err(not_owner_unless_found)?;
    Ok(command_answer(&state, outcome.position(), StatusCode::ACCEPTED).await)
}

pub async fn reset_collaborator(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    link_again(state, session, correlation, id, false).await
}

pub async fn resend_collaborator_link(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    link_again(state, session, correlation, id, true).await
}

pub async fn deactivate_collaborator(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = collaborator_id(&id)?;
    let outcome = state
        .accounts
        .deactivate_collaborator(
            session.account_id,
            session.session_id,
            id,
            &session.caller(correlation),
        )
        .await
        .map_err(not_owner_unless_found)?;
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}

/// SEC-4: another holder's collaborator and an id that names no account answer alike.
fn not_owner_unless_found(e: HandlerError<AccountError>) -> Problem {
    match e {
        HandlerError::Domain(AccountError::NotFound) => Problem::from(AccountError::NotOwner),
        other => Problem::from(other),
    }
}

#[derive(Debug, Deserialize)]
pub struct CollaboratorPasswordRequest {
    token: Secret,
    new_password: Secret,
    new_password_repeat: Secret,
}

/// CO-1, CO-2: the collaborator's password through the mailed link.
pub async fn set_collaborator_password(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    Body(req): Body<CollaboratorPasswordRequest>,
) -> Result<Response, Problem> {
    // SEC-2: as every code, answer and token check from one address.
    super::recovery::checks_allowed(&state, client)?;
    let invalid = || Problem::from(AccountError::TokenInvalid);
    let token_hash =
        custode_commands::tokens::parse_token(req.token.expose()).ok_or_else(invalid)?;
    super::limits::anonymous_write(&state)?;
    let account = query(&state, {
        let hash = token_hash.as_str().to_string();
        move |conn| custode_projections::accounts::collaborator_of_link(conn, &hash)
    })
    .await?
    .and_then(|id| Uuid::parse_str(&id).ok())
    .ok_or_else(invalid)?;
    let cmd = AccountCommand::SetCollaboratorPassword(SetCollaboratorPassword {
        token_hash,
        new_password: req.new_password,
        new_password_repeat: req.new_password_repeat,
    });
    let caller = Caller {
        actor: Actor::holder(account),
        correlation_id: correlation.0,
    };
    let outcome = state.accounts.execute(account, cmd, &caller).await?;
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}

#[derive(Debug, Deserialize)]
pub struct SuspendRequest {
    days: u32,
    otp: Option<Secret>,
}

/// SC-6: the holder of an identity suspends it for 1 to 30 days, confirmed by the code sent for
/// `suspension` (`POST /v1/account/otp`). Every session ends at once, this one included; the
/// scheduler ends the suspension when its period is over.
pub async fn suspend(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<SuspendRequest>,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::Suspend(custode_domain::account::Suspend {
        session_id: session.session_id,
        days: req.days,
        otp: req.otp,
    });
    code_command(state, session, correlation, cmd).await
}
