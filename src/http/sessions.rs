//! Sessions (SEC-3): login, logout and step-up re-authentication.

use super::command_answer;
use super::extract::{Body, ClientIp, Correlation, HolderSession};
use super::problem::Problem;
use crate::app::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use custode_commands::accounts::{Caller, LoginOutcome};
use custode_domain::account::{
    AccountCommand, AccountEvent, Logout, Reauthenticate, RequiredAction,
};
use custode_domain::{Actor, ActorKind, Secret};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    user_id: String,
    password: Secret,
    /// AP-8: the second factor's code, when two-step verification is on.
    otp: Option<Secret>,
}

#[derive(Debug, Serialize)]
struct SessionCreated {
    session_token: String,
    expires_at: DateTime<Utc>,
    required_actions: Vec<RequiredAction>,
}

fn invalid_credentials() -> Problem {
    Problem::new(
        "invalid-credentials",
        "the user id or the password is not right",
    )
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientIp,
    correlation: Correlation,
    channel: super::extract::Channel,
    Body(req): Body<LoginRequest>,
) -> Result<Response, Problem> {
    let caller = Caller {
        actor: Actor {
            kind: ActorKind::Holder,
            id: None,
        },
        correlation_id: correlation.0,
    };
    // SEC-2: per client address, and SEC-6: a user id (known or not) after failures in a row.
    let limits = &state.config.settings.limits;
    let now = state.clock.now();
    state.limiter.per_address_minute(
        "logins from this address",
        client.0,
        limits.login_per_address_per_minute,
        now,
    )?;
    // No user id is longer (RC-1's limit); a longer one is refused before it is counted.
    if req.user_id.chars().count() > 254 {
        return Err(invalid_credentials());
    }
    super::limits::anonymous_write(&state)?;
    // SEC-6: a user id (known or not) locked out after failures in a row is refused by its
    // aggregate, counted in the log; parallel guesses take turns on its stream.
    let outcome = state
        .accounts
        .login(
            &req.user_id,
            req.password,
            req.otp,
            client.text(),
            channel.0,
            &caller,
        )
        .await?;
    match outcome {
        LoginOutcome::Refused { outcome } => {
            // AP-8: with the password right, the second factor's answer (a code sent by SMS,
            // or a wrong or replayed code, recorded); anything else is wrong credentials.
            if let Some(problem) = code_sent(&state, &outcome).await {
                return Err(problem);
            }
            if let Some(problem) = super::delegation::second_factor_refusal(&outcome.events) {
                super::settle(&state, outcome.position()).await;
                return Err(problem);
            }
            Err(invalid_credentials())
        }
        LoginOutcome::Started { token, outcome } => {
            let Some(started) = outcome.events.iter().find_map(|e| match e {
                AccountEvent::SessionStarted(started) => Some(started),
                _ => None,
            }) else {
                return Err(Problem::internal(&"a login produced no session"));
            };
            let body = SessionCreated {
                session_token: token.expose().to_string(),
                expires_at: started.expires_at,
                required_actions: started.required_actions.clone(),
            };
            Ok(command_answer(
                &state,
                outcome.position(),
                (StatusCode::CREATED, Json(body)),
            )
            .await)
        }
    }
}

/// AP-8: with the password right and SMS the second factor, the code just sent: the problem
/// that asks for it.
async fn code_sent(
    state: &AppState,
    outcome: &custode_commands::accounts::Outcome,
) -> Option<Problem> {
    let sent = super::delegation::second_factor_sent(
        &outcome.events,
        custode_domain::account::TwoFactorChannel::Sms,
    )?;
    super::settle(state, outcome.position()).await;
    Some(Problem::new(
        "second-factor-required",
        format!(
            "two-step verification is on: a code was sent by SMS to {} (challenge {}); send it as `otp`",
            sent.target, sent.challenge_id
        ),
    ))
}

pub async fn logout(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::Logout(Logout {
        session_id: session.session_id,
    });
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}

#[derive(Debug, Deserialize)]
pub struct ReauthRequest {
    password: Secret,
    /// AP-8: the second factor's code, when two-step verification is on (SEC-3).
    otp: Option<Secret>,
}

pub async fn reauth(
    State(state): State<AppState>,
    session: HolderSession,
    client: ClientIp,
    correlation: Correlation,
    channel: super::extract::Channel,
    Body(req): Body<ReauthRequest>,
) -> Result<Response, Problem> {
    let sms = state
        .accounts
        .sms_code_unless(session.account_id, &req.otp)
        .await?;
    let cmd = AccountCommand::Reauthenticate(Reauthenticate {
        session_id: session.session_id,
        password: req.password,
        client_ip: client.text(),
        channel: channel.0,
        otp: req.otp,
        sms,
    });
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    if let Some(problem) = code_sent(&state, &outcome).await {
        return Err(problem);
    }
    if let Some(problem) = super::delegation::second_factor_refusal(&outcome.events) {
        super::settle(&state, outcome.position()).await;
        return Err(problem);
    }
    if outcome
        .events
        .iter()
        .any(|e| matches!(e, AccountEvent::LoginFailed(_)))
    {
        return Err(invalid_credentials());
    }
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}
