//! Identities' self-care: contact changes (SC-3) and recovery contact changes with their
//! cooldown (SC-5). Each code check answers as every other: a wrong code is `401 code-wrong`
//! and is recorded.

use super::account::OtpSent;
use super::delegation::{code_command, second_factor_refusal};
use super::extract::{Body, Correlation, HolderSession};
use super::problem::Problem;
use super::{command_answer, settle};
use crate::app::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use custode_commands::accounts::Outcome;
use custode_domain::account::{
    AccountCommand, AccountEvent, ChangeContactEmail, ConfirmContactMobileChange,
    ConfirmRecoveryContactChange,
};
use custode_domain::recovery::RecoveryMethod;
use custode_domain::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct ContactEmailRequest {
    email: String,
}

/// SC-3: a new contact email (a fresh session, SEC-3); the old and the new address are told.
pub async fn change_contact_email(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<ContactEmailRequest>,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::ChangeContactEmail(ChangeContactEmail {
        session_id: session.session_id,
        email: req.email,
    });
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}

#[derive(Debug, Serialize)]
struct CodesSent {
    /// One per code sent: to the current contact and to the new one.
    challenges: Vec<OtpSent>,
}

/// The codes a command sent, answered `202`; or its wrong code, answered as one.
async fn codes_sent(state: &AppState, outcome: Outcome) -> Result<Response, Problem> {
    if let Some(problem) = second_factor_refusal(&outcome.events) {
        settle(state, outcome.position()).await;
        return Err(problem);
    }
    let challenges: Vec<OtpSent> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            AccountEvent::OtpChallengeIssued(issued) => Some(OtpSent::of(issued)),
            _ => None,
        })
        .collect();
    if challenges.is_empty() {
        return Err(Problem::internal(&"a change sent no code"));
    }
    Ok(command_answer(
        state,
        outcome.position(),
        (StatusCode::ACCEPTED, Json(CodesSent { challenges })).into_response(),
    )
    .await)
}

#[derive(Debug, Deserialize)]
pub struct ContactMobileRequest {
    mobile: String,
}

/// SC-3: a new contact mobile: a code to the number on file and one to the new number.
pub async fn start_contact_mobile_change(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<ContactMobileRequest>,
) -> Result<Response, Problem> {
    let outcome = state
        .accounts
        .start_contact_mobile_change(
            session.account_id,
            session.session_id,
            req.mobile,
            &session.caller(correlation),
        )
        .await?;
    codes_sent(&state, outcome).await
}

#[derive(Debug, Deserialize)]
pub struct ContactMobileConfirmRequest {
    current_code: Option<Secret>,
    code: Option<Secret>,
}

/// SC-3: both codes, and the new contact mobile is on file.
pub async fn confirm_contact_mobile_change(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<ContactMobileConfirmRequest>,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::ConfirmContactMobileChange(ConfirmContactMobileChange {
        session_id: session.session_id,
        current_code: req.current_code,
        code: req.code,
    });
    code_command(state, session, correlation, cmd).await
}

#[derive(Debug, Deserialize)]
pub struct RecoveryEmailRequest {
    otp: Option<Secret>,
    email: String,
}

#[derive(Debug, Deserialize)]
pub struct RecoveryMobileRequest {
    otp: Option<Secret>,
    mobile: String,
}

async fn start_recovery_change(
    state: AppState,
    session: HolderSession,
    correlation: Correlation,
    method: RecoveryMethod,
    otp: Option<Secret>,
    contact: String,
) -> Result<Response, Problem> {
    let outcome = state
        .accounts
        .start_recovery_contact_change(
            session.account_id,
            session.session_id,
            method,
            otp,
            contact,
            &session.caller(correlation),
        )
        .await?;
    codes_sent(&state, outcome).await
}

/// SC-5: the code sent to the contact mobile for `recovery_email_change` authorises a new
/// recovery email; a code goes to it.
pub async fn start_recovery_email_change(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<RecoveryEmailRequest>,
) -> Result<Response, Problem> {
    start_recovery_change(
        state,
        session,
        correlation,
        RecoveryMethod::Email,
        req.otp,
        req.email,
    )
    .await
}

/// SC-5: the code sent to the current recovery mobile for `recovery_mobile_change` authorises
/// a new one; a code goes to it.
pub async fn start_recovery_mobile_change(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<RecoveryMobileRequest>,
) -> Result<Response, Problem> {
    start_recovery_change(
        state,
        session,
        correlation,
        RecoveryMethod::Sms,
        req.otp,
        req.mobile,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct CodeRequest {
    code: Option<Secret>,
}

fn confirm_recovery(
    session: &HolderSession,
    method: RecoveryMethod,
    code: Option<Secret>,
) -> AccountCommand {
    AccountCommand::ConfirmRecoveryContactChange(ConfirmRecoveryContactChange {
        session_id: session.session_id,
        method,
        code,
    })
}

/// SC-5: the code sent to the new recovery email: it is on file, Verified, and cannot change
/// again for 6 days.
pub async fn confirm_recovery_email_change(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<CodeRequest>,
) -> Result<Response, Problem> {
    let cmd = confirm_recovery(&session, RecoveryMethod::Email, req.code);
    code_command(state, session, correlation, cmd).await
}

/// SC-5: as for the email, for the recovery mobile.
pub async fn confirm_recovery_mobile_change(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<CodeRequest>,
) -> Result<Response, Problem> {
    let cmd = confirm_recovery(&session, RecoveryMethod::Sms, req.code);
    code_command(state, session, correlation, cmd).await
}
