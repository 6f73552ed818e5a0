//! The holder's own account: the account page (RI-3), recovery information (RI-1, RI-2) and
//! the password change (PW-4).

use super::extract::{Body, ClientIp, Correlation, HolderSession};
use super::problem::Problem;
use super::{command_answer, query, settle, wait_for_after, After};
use crate::app::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use custode_domain::account::{
    AccountCommand, AccountError, AccountEvent, Change, ChangePassword, SecurityQuestion,
    SetRecoveryInfo,
};
use custode_domain::masking::{mask_email, mask_mobile};
use custode_domain::notice::Channel;
use custode_domain::otp::OtpPurpose;
use custode_domain::{Secret, Violation};
use custode_projections::accounts::AccountRow;
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Serialize)]
struct MaskedContact {
    target: String,
    verified: bool,
}

#[derive(Debug, Serialize)]
struct Question {
    question: String,
}

#[derive(Debug, Serialize)]
struct Recovery {
    email: Option<MaskedContact>,
    mobile: Option<MaskedContact>,
    security_question: Option<Question>,
}

#[derive(Debug, Serialize)]
struct MailProtocols {
    imap: bool,
    pop: bool,
    smtp: bool,
}

#[derive(Debug, Serialize)]
struct Collaborator {
    collaborator_id: String,
    user_id: String,
    name: Option<String>,
    state: String,
    permissions: Vec<String>,
}

#[derive(Debug, Serialize)]
struct TwoFactor {
    active: bool,
    channel: Option<String>,
}

#[derive(Debug, Serialize)]
struct AppPassword {
    scope: String,
    expires_at: String,
    /// AP-4: from when it can be postponed (its last 14 days).
    postpone_available_from: String,
    expired: bool,
}

#[derive(Debug, Serialize)]
struct Page {
    account_id: String,
    user_id: String,
    kind: String,
    plan: Option<String>,
    state: String,
    language: String,
    contact_email: Option<String>,
    contact_mobile: Option<String>,
    recovery: Recovery,
    /// SC-5: the recovery contacts that changed lately, and when each can change again.
    cooldowns: Vec<Cooldown>,
    /// SC-1: an identity's personal data, read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    personal_data: Option<PersonalData>,
    /// PW-6: when the password expires (none when it does not age).
    password_expires_at: Option<String>,
    /// SC-8: when an identity left unused is revoked (a login or a reported access moves it).
    #[serde(skip_serializing_if = "Option::is_none")]
    inactivity_revokes_at: Option<String>,
    required_actions: Vec<&'static str>,
    two_factor: TwoFactor,
    mail_protocols: Option<MailProtocols>,
    app_passwords: Vec<AppPassword>,
    collaborators: Vec<Collaborator>,
    /// AP-6: the notification list, newest first.
    notifications: Vec<custode_projections::accounts::NotificationRow>,
    /// NT-3: notices that exhausted their retries (an operator can retry them).
    undelivered_notices: Vec<UndeliveredNotice>,
    /// SC-2: an identity's document on file (its number masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_document: Option<IdentityDocument>,
}

#[derive(Debug, Serialize)]
struct Cooldown {
    /// `recovery_email` or `recovery_mobile`.
    contact: &'static str,
    /// From when it can change again.
    until: String,
}

#[derive(Debug, Serialize)]
struct PersonalData {
    name: Option<String>,
    fiscal_code: Option<String>,
    spid_code: Option<String>,
    issued_on: Option<String>,
    expires_on: Option<String>,
}

#[derive(Debug, Serialize)]
struct IdentityDocument {
    kind: String,
    /// The last three characters only.
    number: String,
    expires_on: String,
}

impl IdentityDocument {
    fn masked(kind: String, number: &str, expires_on: String) -> Self {
        let shown: String = number
            .chars()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Self {
            kind,
            number: format!("*****{shown}"),
            expires_on,
        }
    }
}

#[derive(Debug, Serialize)]
struct UndeliveredNotice {
    notice_id: String,
    channel: String,
    template: String,
    /// Masked.
    recipient: String,
    failed_at: String,
}

fn recovery(row: &AccountRow) -> Recovery {
    Recovery {
        email: row.recovery_email.as_deref().map(|e| MaskedContact {
            target: mask_email(e),
            verified: row.recovery_email_verified,
        }),
        mobile: row.recovery_mobile.as_deref().map(|m| MaskedContact {
            target: mask_mobile(m),
            verified: row.recovery_mobile_verified,
        }),
        security_question: row
            .security_question
            .clone()
            .map(|question| Question { question }),
    }
}

type NoticeRow = custode_projections::notices::NoticeRow;

/// What the page shows beside the account's row.
#[derive(Clone)]
pub(crate) struct PageExtras {
    collaborators: Vec<(AccountRow, Vec<String>)>,
    undelivered: Vec<NoticeRow>,
    two_factor: Option<String>,
    app_passwords: Vec<custode_projections::accounts::AppPasswordRow>,
    notifications: Vec<custode_projections::accounts::NotificationRow>,
    /// SC-2: an identity's document (kind, number, expiry).
    document: Option<(String, String, String)>,
    care: custode_projections::accounts::SelfCareRow,
    last_access: Option<chrono::DateTime<chrono::Utc>>,
}

/// Notifications the page lists at most.
const NOTIFICATIONS_SHOWN: u32 = 50;

async fn account_row(
    state: &AppState,
    session: &HolderSession,
) -> Result<(AccountRow, PageExtras), Problem> {
    // Memory speed: the rows of a page read lately, until an event touches them.
    if let Some(kept) = state.views.page(session.account_id) {
        return Ok((kept.0.clone(), kept.1.clone()));
    }
    let epoch = state.views.pages_epoch();
    let id = session.account_id.to_string();
    // One trip to the read models (one blocking hop, one connection) for the whole page.
    let (row, extras) = query(state, move |conn| {
        use custode_projections::accounts as model;
        let Some(row) = model::by_id(conn, &id)? else {
            return Ok(None);
        };
        let document = if row.kind == "identity" {
            model::document_of(conn, &id)?
        } else {
            None
        };
        let extras = PageExtras {
            collaborators: model::collaborators_of(conn, &id)?,
            undelivered: custode_projections::notices::undelivered(conn, &id)?,
            two_factor: model::security_of(conn, &id)?.0,
            app_passwords: model::app_passwords_of(conn, &id)?,
            notifications: model::notifications_of(conn, &id, NOTIFICATIONS_SHOWN)?,
            document,
            care: model::self_care_of(conn, &id)?,
            last_access: custode_projections::access::last_access(conn, &id)?,
        };
        Ok(Some((row, extras)))
    })
    .await?
    .ok_or_else(|| {
        Problem::new(
            "account-not-found",
            "the session's account is not in the read model",
        )
    })?;
    // The page shows its owner's and its collaborators' rows too: a change to any of them
    // drops it.
    let mut accounts = vec![session.account_id];
    accounts.extend(
        row.owner_id
            .iter()
            .chain(extras.collaborators.iter().map(|(c, _)| &c.account_id))
            .filter_map(|id| uuid::Uuid::parse_str(id).ok()),
    );
    state.views.keep_page(
        epoch,
        session.account_id,
        std::sync::Arc::new((row.clone(), extras.clone())),
        accounts,
    );
    Ok((row, extras))
}

pub async fn page(
    State(state): State<AppState>,
    session: HolderSession,
    after: After,
) -> Result<Response, Problem> {
    // A command's own changes, from the core read models: the last access shown beside them
    // comes from the access history, which may trail them under load (it is not waited for:
    // a page after a command must not wait on a backlog of mail servers' checks).
    wait_for_after(&state, &after).await?;
    let (row, mut extras) = account_row(&state, &session).await?;
    let document = extras
        .document
        .take()
        .map(|(kind, number, expires_on)| IdentityDocument::masked(kind, &number, expires_on));
    let now = state.clock.now();
    let care = std::mem::take(&mut extras.care);
    let last_access = extras.last_access;
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let secs = chrono::SecondsFormat::Secs;
    let password_expires_at = parse(&care.password_expires_at);
    // PW-6: expired when recorded, or when its time has passed and the scheduler is behind.
    let password_expired = care.password_expired || password_expires_at.is_some_and(|t| t <= now);
    let cooldowns = [
        ("recovery_email", &care.email_cooldown_until),
        ("recovery_mobile", &care.mobile_cooldown_until),
    ]
    .into_iter()
    .filter_map(|(contact, until)| {
        parse(until)
            .filter(|until| *until > now)
            .map(|until| Cooldown {
                contact,
                until: until.to_rfc3339_opts(secs, true),
            })
    })
    .collect();
    let personal_data = (row.kind == "identity").then(|| PersonalData {
        name: row.name.clone(),
        fiscal_code: care.fiscal_code.clone(),
        // An identity opened before SC-1 was recorded: the code is its account id's, the
        // issue its opening's day.
        spid_code: care.spid_code.clone().or_else(|| {
            uuid::Uuid::parse_str(&row.account_id)
                .ok()
                .map(custode_domain::account::spid_code)
        }),
        issued_on: care
            .issued_on
            .clone()
            .or_else(|| row.created_at.get(..10).map(str::to_string)),
        expires_on: care.identity_expires_on.clone(),
    });
    let mut required_actions = Vec::new();
    if row.must_change_password || password_expired {
        required_actions.push("change_password");
    }
    if row.must_set_recovery_info {
        required_actions.push("set_recovery_info");
    } else if row.must_confirm_recovery_info {
        required_actions.push("confirm_recovery_info");
    }
    let page = Page {
        recovery: recovery(&row),
        mail_protocols: match (row.imap, row.pop, row.smtp) {
            (Some(imap), Some(pop), Some(smtp)) => Some(MailProtocols { imap, pop, smtp }),
            _ => None,
        },
        collaborators: extras
            .collaborators
            .into_iter()
            .map(|(c, permissions)| Collaborator {
                collaborator_id: c.account_id,
                user_id: c.user_id,
                name: c.name,
                state: c.state,
                permissions,
            })
            .collect(),
        two_factor: TwoFactor {
            active: extras.two_factor.is_some(),
            channel: extras.two_factor,
        },
        app_passwords: extras
            .app_passwords
            .into_iter()
            .filter_map(|p| {
                let expires_at = chrono::DateTime::parse_from_rfc3339(&p.expires_at)
                    .ok()?
                    .with_timezone(&chrono::Utc);
                let secs = chrono::SecondsFormat::Secs;
                Some(AppPassword {
                    scope: p.scope,
                    expires_at: expires_at.to_rfc3339_opts(secs, true),
                    postpone_available_from: custode_domain::account::postpone_available_from(
                        expires_at,
                    )
                    .to_rfc3339_opts(secs, true),
                    expired: expires_at <= now,
                })
            })
            .collect(),
        notifications: extras.notifications,
        contact_email: row.contact_email.as_deref().map(mask_email),
        contact_mobile: row.contact_mobile.as_deref().map(mask_mobile),
        account_id: row.account_id,
        user_id: row.user_id,
        kind: row.kind,
        plan: row.plan,
        state: row.state,
        language: row.language,
        cooldowns,
        personal_data,
        password_expires_at: password_expires_at.map(|t| t.to_rfc3339_opts(secs, true)),
        // SC-8: the date as last recorded, moved by any use since (the scheduler records the
        // move at its next look).
        inactivity_revokes_at: parse(&care.inactivity_revokes_at)
            .filter(|_| state.config.settings.identity.inactivity_months > 0)
            .map(|recorded| {
                let months = state.config.settings.identity.inactivity_months;
                last_access
                    .and_then(|at| at.checked_add_months(chrono::Months::new(months)))
                    .map_or(recorded, |moved| moved.max(recorded))
            })
            .map(|t| t.to_rfc3339_opts(secs, true)),
        identity_document: document,
        required_actions,
        undelivered_notices: extras
            .undelivered
            .into_iter()
            .map(|n| UndeliveredNotice {
                notice_id: n.notice_id,
                channel: n.channel,
                template: n.template,
                recipient: n.recipient,
                failed_at: super::api_time(&n.updated_at),
            })
            .collect(),
    };
    Ok(Json(page).into_response())
}

/// Absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn change<T>(field: Option<Option<T>>) -> Change<T> {
    match field {
        None => Change::Keep,
        Some(None) => Change::Clear,
        Some(Some(v)) => Change::Set(v),
    }
}

#[derive(Debug, Deserialize)]
pub struct RecoveryInfoRequest {
    #[serde(default, deserialize_with = "present")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    mobile: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    security_question: Option<Option<String>>,
    security_answer: Option<Secret>,
    security_answer_repeat: Option<Secret>,
}

pub async fn set_recovery_info(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<RecoveryInfoRequest>,
) -> Result<Response, Problem> {
    let security = match (
        req.security_question,
        req.security_answer,
        req.security_answer_repeat,
    ) {
        (None, None, None) => Change::Keep,
        (Some(None), None, None) => Change::Clear,
        (Some(None), _, _) => {
            return Err(
                Problem::new("validation-failed", "an answer needs its question").with_errors(
                    vec![Violation::new(
                        "RI-1.security_question",
                        Some("security_question"),
                        "a removed question takes no answer",
                    )],
                ),
            )
        }
        (Some(Some(question)), Some(answer), Some(answer_repeat)) => {
            Change::Set(SecurityQuestion {
                question,
                answer,
                answer_repeat,
            })
        }
        (Some(Some(_)), _, _) => {
            return Err(Problem::new(
                "validation-failed",
                "the security answer must be typed twice",
            )
            .with_errors(vec![Violation::new(
                "RI-1.security_answer",
                Some("security_answer"),
                "give the answer and its repetition",
            )]))
        }
        (None, _, _) => {
            return Err(
                Problem::new("validation-failed", "an answer needs its question").with_errors(
                    vec![Violation::new(
                        "RI-1.security_question",
                        Some("security_question"),
                        "give the question the answer is for",
                    )],
                ),
            )
        }
    };
    let cmd = AccountCommand::SetRecoveryInfo(SetRecoveryInfo {
        session_id: session.session_id,
        email: change(req.email),
        mobile: change(req.mobile),
        security,
    });
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    let position = outcome.position();
    // Answer with the masked methods as the page will show them.
    super::settle(&state, position).await;
    let id = session.account_id.to_string();
    let row = query(&state, move |conn| {
        custode_projections::accounts::by_id(conn, &id)
    })
    .await?
    .ok_or_else(|| {
        Problem::new(
            "account-not-found",
            "the session's account is not in the read model",
        )
    })?;
    Ok(super::with_position(position, Json(recovery(&row))))
}

#[derive(Debug, Deserialize)]
pub struct ChangePasswordRequest {
    current_password: Secret,
    new_password: Secret,
    new_password_repeat: Secret,
    /// PW-4: an identity's code from `POST /v1/account/otp`.
    otp: Option<Secret>,
}

pub async fn change_password(
    State(state): State<AppState>,
    session: HolderSession,
    client: ClientIp,
    correlation: Correlation,
    channel: super::extract::Channel,
    Body(req): Body<ChangePasswordRequest>,
) -> Result<Response, Problem> {
    if req.otp.as_ref().is_some_and(|otp| otp.expose().len() > 64) {
        return Err(
            Problem::new("validation-failed", "the request breaks 1 rule(s)").with_errors(vec![
                Violation::new("PW-4.otp", Some("otp"), "the code has 6 digits"),
            ]),
        );
    }
    let cmd = AccountCommand::ChangePassword(ChangePassword {
        session_id: session.session_id,
        current_password: req.current_password,
        new_password: req.new_password,
        new_password_repeat: req.new_password_repeat,
        otp: req.otp,
        client_ip: client.text(),
        channel: channel.0,
    });
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    // Refusals that count (SEC-6, SEC-2) are recorded, then answered as refusals.
    for event in &outcome.events {
        match event {
            AccountEvent::LoginFailed(_) => {
                settle(&state, outcome.position()).await;
                return Err(AccountError::CurrentPasswordWrong.into());
            }
            AccountEvent::OtpCheckFailed(failed) => {
                settle(&state, outcome.position()).await;
                return Err(wrong_code(failed.attempts_left));
            }
            _ => {}
        }
    }
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}

/// A wrong one-time code, with the attempts it leaves.
fn wrong_code(attempts_left: u32) -> Problem {
    let message = if attempts_left == 0 {
        "the code is not right; no attempts are left".to_string()
    } else {
        format!("the code is not right; {attempts_left} attempt(s) left")
    };
    Problem::new("code-wrong", "the code is not right").with_errors(vec![Violation::new(
        "PW-4.otp",
        Some("otp"),
        message,
    )])
}

#[derive(Debug, Deserialize)]
pub struct OtpRequest {
    #[serde(deserialize_with = "asked_purpose")]
    purpose: OtpPurpose,
}

/// The purposes a holder asks a code for; the others (a recovery's, a login's, those a change
/// sends by itself) are not named in the refusal.
fn asked_purpose<'de, D: Deserializer<'de>>(d: D) -> Result<OtpPurpose, D::Error> {
    const ASKED: &[&str] = &[
        "password_change",
        "suspension",
        "two_factor_off",
        "verify_recovery_email",
        "verify_recovery_mobile",
        "recovery_email_change",
        "recovery_mobile_change",
    ];
    let text = String::deserialize(d)?;
    if !ASKED.contains(&text.as_str()) {
        return Err(serde::de::Error::unknown_variant(&text, ASKED));
    }
    OtpPurpose::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&text))
}

#[derive(Debug, Serialize)]
pub(super) struct OtpSent {
    challenge_id: uuid::Uuid,
    channel: Channel,
    target: String,
    expires_at: chrono::DateTime<chrono::Utc>,
}

impl OtpSent {
    /// Where a code went (masked) and until when it works.
    pub(super) fn of(issued: &custode_domain::account::OtpChallengeIssued) -> Self {
        Self {
            challenge_id: issued.challenge_id,
            channel: issued.channel,
            target: match issued.channel {
                Channel::Email => mask_email(&issued.to),
                Channel::Sms => mask_mobile(&issued.to),
            },
            expires_at: issued.expires_at,
        }
    }
}

/// PW-4, SC: `{purpose}` → a code by SMS to the account's mobile, answered with where it went
/// (masked) and until when it works.
pub async fn request_otp(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<OtpRequest>,
) -> Result<Response, Problem> {
    let outcome = state
        .accounts
        .request_otp(
            session.account_id,
            session.session_id,
            req.purpose,
            &session.caller(correlation),
        )
        .await?;
    let Some(issued) = outcome.events.iter().find_map(|e| match e {
        AccountEvent::OtpChallengeIssued(issued) => Some(issued),
        _ => None,
    }) else {
        return Err(Problem::internal(&"a code request issued no challenge"));
    };
    let body = OtpSent::of(issued);
    Ok(command_answer(
        &state,
        outcome.position(),
        (StatusCode::ACCEPTED, Json(body)),
    )
    .await)
}

#[derive(Debug, Deserialize, Serialize)]
pub struct LanguageRequest {
    language: custode_domain::account::Language,
}

/// SC-7: the language of every later mail, SMS and page (`it` or `en`). Any kind of account.
pub async fn set_language(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<LanguageRequest>,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::SetLanguage(custode_domain::account::SetLanguage {
        session_id: session.session_id,
        language: req.language,
    });
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    Ok(command_answer(&state, outcome.position(), Json(req)).await)
}

/// Which recovery contact a code proves (SC-4).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactMethod {
    Email,
    Mobile,
}

#[derive(Debug, Deserialize)]
pub struct VerifyContactRequest {
    method: ContactMethod,
    code: Option<Secret>,
}

/// SC-4: the code sent for `verify_recovery_email` or `verify_recovery_mobile` proves the holder
/// reads that recovery contact; the page shows it Verified until it changes.
pub async fn verify_recovery_contact(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<VerifyContactRequest>,
) -> Result<Response, Problem> {
    use custode_domain::recovery::RecoveryMethod;
    let cmd =
        AccountCommand::VerifyRecoveryContact(custode_domain::account::VerifyRecoveryContact {
            session_id: session.session_id,
            method: match req.method {
                ContactMethod::Email => RecoveryMethod::Email,
                ContactMethod::Mobile => RecoveryMethod::Sms,
            },
            code: req.code,
        });
    super::delegation::code_command(state, session, correlation, cmd).await
}

#[derive(Debug, Deserialize)]
pub struct DocumentRequest {
    kind: custode_domain::account::DocumentKind,
    number: String,
    expires_on: chrono::NaiveDate,
}

/// SC-2: an identity records its new identity document (a fresh session, SEC-3); the notices
/// 30 and 7 days before it expires follow from the scheduler.
pub async fn record_document(
    State(state): State<AppState>,
    session: HolderSession,
    correlation: Correlation,
    Body(req): Body<DocumentRequest>,
) -> Result<Response, Problem> {
    let cmd = AccountCommand::RecordDocument(custode_domain::account::RecordDocument {
        session_id: session.session_id,
        kind: req.kind,
        number: req.number.clone(),
        expires_on: req.expires_on,
    });
    let outcome = state
        .accounts
        .execute(session.account_id, cmd, &session.caller(correlation))
        .await?;
    let number: String = req
        .number
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    let body = IdentityDocument::masked(
        serde_json::to_value(req.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        &number,
        req.expires_on.to_string(),
    );
    Ok(command_answer(&state, outcome.position(), Json(body)).await)
}
