//! Operator endpoints (SEC-4): opening accounts (ACC-1..4) and looking one up.

use super::extract::{Body, Correlation, Operator};
use super::problem::Problem;
use super::{command_answer, query, wait_for_after, After};
use crate::app::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use custode_domain::account::{
    AccountCommand, AccountError, AccountKind, InitialPassword, Language, OpenAccount, OwnerRef,
    Plan, Revoke,
};
use custode_domain::notice::NoticeCommand;
use custode_domain::PasswordHash;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Deserialize)]
pub struct OpenAccountRequest {
    kind: AccountKind,
    user_id: String,
    plan: Option<Plan>,
    owner_id: Option<Uuid>,
    name: Option<String>,
    fiscal_code: Option<String>,
    contact_email: Option<String>,
    contact_mobile: Option<String>,
    language: Option<Language>,
    /// ACC-3: a migrated mailbox's password as an Argon2 PHC string; no temporary password then.
    password_phc: Option<String>,
    /// CO-1: a collaborator's permissions.
    #[serde(default)]
    permissions: Vec<custode_domain::account::Permission>,
    /// SC-1: an identity's expiry, when the identity provider gives one.
    identity_expires_on: Option<chrono::NaiveDate>,
}

#[derive(Debug, Serialize)]
struct Opened {
    account_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    temporary_password: Option<String>,
}

pub async fn open_account(
    State(state): State<AppState>,
    _: Operator,
    correlation: Correlation,
    Body(req): Body<OpenAccountRequest>,
) -> Result<Response, Problem> {
    let account_id = Uuid::now_v7();
    let password = match req.password_phc {
        Some(phc) => InitialPassword::Imported(PasswordHash::new(phc)),
        None => state.accounts.temporary_password(account_id)?,
    };
    let cmd = OpenAccount {
        account_id,
        kind: req.kind,
        user_id: req.user_id,
        plan: req.plan,
        owner: req.owner_id.map(|account_id| OwnerRef {
            account_id,
            kind: None,
        }),
        name: req.name,
        fiscal_code: req.fiscal_code,
        contact_email: req.contact_email,
        contact_mobile: req.contact_mobile,
        language: req.language.unwrap_or_default(),
        password,
        permissions: req.permissions,
        identity_expires_on: req.identity_expires_on,
    };
    let caller = correlation.operator();
    let (outcome, temporary) = state.accounts.open(cmd, &caller).await?;
    let body = Opened {
        account_id,
        temporary_password: temporary.map(|t| t.expose().to_string()),
    };
    Ok(command_answer(
        &state,
        outcome.position(),
        (StatusCode::CREATED, Json(body)),
    )
    .await)
}

/// The user id of an operator path.
fn user_id_in_path(
    user_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, Problem> {
    user_id.map(|Path(id)| id).map_err(|_| {
        Problem::new(
            "invalid-request",
            "the user id in the path is not valid UTF-8",
        )
    })
}

#[derive(Debug, Serialize)]
struct AdminAccount {
    account_id: String,
    user_id: String,
    kind: String,
    plan: Option<String>,
    state: String,
    created_at: String,
}

pub async fn get_account(
    State(state): State<AppState>,
    _: Operator,
    user_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    after: After,
) -> Result<Response, Problem> {
    let user_id = user_id_in_path(user_id)?;
    wait_for_after(&state, &after).await?;
    let row = query(&state, move |conn| {
        custode_projections::accounts::by_user_id(conn, &user_id)
    })
    .await?
    .ok_or_else(|| Problem::new("account-not-found", "no account has that user id"))?;
    Ok(Json(AdminAccount {
        account_id: row.account_id,
        user_id: row.user_id,
        kind: row.kind,
        plan: row.plan,
        state: row.state,
        created_at: super::api_time(&row.created_at),
    })
    .into_response())
}

#[derive(Debug, Serialize)]
struct DeadLetters {
    items: Vec<custode_projections::notices::NoticeRow>,
}

/// NT-3: the notices that exhausted their retries.
pub async fn dead_letters(
    State(state): State<AppState>,
    _: Operator,
    after: After,
) -> Result<Response, Problem> {
    wait_for_after(&state, &after).await?;
    let mut items = query(&state, custode_projections::notices::dead_letters).await?;
    for item in &mut items {
        item.updated_at = super::api_time(&item.updated_at);
    }
    Ok(Json(DeadLetters { items }).into_response())
}

/// NT-3: try a dead letter again. The worker that owns it sends it anew, with fresh retries.
pub async fn retry_dead_letter(
    State(state): State<AppState>,
    _: Operator,
    correlation: Correlation,
    notice_id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Response, Problem> {
    let Path(notice_id) = notice_id
        .map_err(|_| Problem::new("dead-letter-not-found", "a dead letter's id is a UUID"))?;
    let caller = correlation.operator();
    let outcome = state
        .notices
        .execute(&notice_id, NoticeCommand::Retry { notice_id }, &caller)
        .await?;
    let position = outcome
        .recorded
        .last()
        .map_or(state.log.head(), |e| e.position);
    Ok(command_answer(&state, position, StatusCode::ACCEPTED).await)
}

#[derive(Debug, Deserialize)]
pub struct PasswordResetRequest {
    form_reference: String,
}

#[derive(Debug, Serialize)]
struct PasswordReset {
    temporary_password: String,
}

/// RC-7: after a signed paper form and an identity document, fresh temporary credentials
/// (shown once); the form's reference is recorded.
pub async fn password_reset(
    State(state): State<AppState>,
    _: Operator,
    correlation: Correlation,
    user_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Body(req): Body<PasswordResetRequest>,
) -> Result<Response, Problem> {
    let user_id = user_id_in_path(user_id)?;
    let caller = correlation.operator();
    let (outcome, password) = state
        .accounts
        .operator_reset(&user_id, req.form_reference, &caller)
        .await?;
    let body = PasswordReset {
        temporary_password: password.expose().to_string(),
    };
    Ok(command_answer(
        &state,
        outcome.position(),
        (StatusCode::CREATED, Json(body)),
    )
    .await)
}

#[derive(Debug, Deserialize)]
pub struct ContactMobileRequest {
    contact_mobile: String,
    form_reference: String,
}

/// SC-3 when self-service fails (the number on file is lost, or an identity has none): after a
/// signed form and an identity document, the operator records the contact mobile and the form's
/// reference. The contact email is told; codes sent to the old number stop working. Sending the
/// number already on file again records nothing.
pub async fn set_contact_mobile(
    State(state): State<AppState>,
    _: Operator,
    correlation: Correlation,
    user_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Body(req): Body<ContactMobileRequest>,
) -> Result<Response, Problem> {
    let user_id = user_id_in_path(user_id)?;
    let caller = correlation.operator();
    let outcome = state
        .accounts
        .operator_set_contact_mobile(&user_id, req.form_reference, req.contact_mobile, &caller)
        .await?;
    Ok(command_answer(&state, outcome.position(), StatusCode::NO_CONTENT).await)
}

#[derive(Debug, Deserialize)]
pub struct RevokeRequest {
    request_reference: String,
}

/// SC-6: an operator revokes an account on a signed request: every session ends, logins and
/// recoveries are refused from then on, and the holder is told. Final; a second revocation
/// records nothing. A mailbox's collaborators are revoked with it, on the same reference (ACC-1:
/// they belong to it; the mail servers' check already refused them): a revocation sent again
/// completes one a failure cut short.
pub async fn revoke(
    State(state): State<AppState>,
    _: Operator,
    correlation: Correlation,
    user_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Body(req): Body<RevokeRequest>,
) -> Result<Response, Problem> {
    let user_id = user_id_in_path(user_id)?;
    let caller = correlation.operator();
    let outcome = state
        .accounts
        .revoke(&user_id, req.request_reference.clone(), &caller)
        .await?;
    let mut position = outcome.position();
    // Every collaborator opened before the revocation is in the read model once it has
    // applied the revocation (one opened after it is revoked by its own creation, which finds
    // the owner revoked); a read model that stays behind is answered 503, and the request
    // sent again completes the revocation.
    if !crate::http::applied(&state, position).await {
        return Err(Problem::new(
            "not-ready",
            format!("the account is revoked, but its collaborators are not yet: send the request again (the read model has not reached position {position})"),
        )
        .retry_after(1));
    }
    if let Some(owner) = state.accounts.account_id_of(user_id.trim()).await? {
        let owner = owner.to_string();
        let collaborators = query(&state, move |conn| {
            custode_projections::accounts::collaborators_of(conn, &owner)
        })
        .await?;
        for (collaborator, _) in collaborators {
            let Ok(id) = Uuid::parse_str(&collaborator.account_id) else {
                continue;
            };
            let cmd = AccountCommand::Revoke(Revoke {
                request_reference: req.request_reference.clone(),
            });
            match state.accounts.execute(id, cmd, &caller).await {
                Ok(revoked) => position = position.max(revoked.position()),
                // Deactivated or revoked already: final as it is.
                Err(custode_commands::handler::HandlerError::Domain(AccountError::Closed {
                    ..
                })) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(command_answer(&state, position, StatusCode::NO_CONTENT).await)
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    from: Option<String>,
    to: Option<String>,
}

/// AU-2: exports at once; more are answered 503 (each holds a reading connection and a core).
static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Writes a blocking export into a channel, 64 KiB at a time; fails once the client is gone,
/// which stops the export, and once the client has taken no chunk for `stall` (it stopped
/// reading): the export then stops too, and gives back its place among the exports at once
/// (SEC-9's request timeout, which ends at the answer's head, cannot reach a streamed body).
struct ChunkWriter {
    chunks: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buffer: Vec<u8>,
    runtime: tokio::runtime::Handle,
    stall: std::time::Duration,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buffer));
        let sent = self.runtime.block_on(tokio::time::timeout(
            self.stall,
            self.chunks.send(Ok(chunk)),
        ));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading the export",
            )),
        }
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= 64 * 1024 {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A response body fed by a channel. It ends cleanly only when `complete` says the export
/// wrote its last line; a channel closed before that (an export stopped, whatever the reason)
/// ends it with an error, so that the client never takes a cut export for a whole one (hyper
/// then closes the connection without the chunked body's last chunk).
struct ChannelBody {
    chunks: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    complete: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        match self.chunks.poll_recv(cx) {
            std::task::Poll::Ready(None)
                if !self.complete.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                std::task::Poll::Ready(Some(Err(std::io::Error::other("the export stopped"))))
            }
            polled => polled.map(|chunk| chunk.map(|r| r.map(http_body::Frame::data))),
        }
    }
}

/// AU-2: every event that concerns the account, as JSON lines (`application/x-ndjson`),
/// secrets redacted and contacts masked; `from`/`to` (RFC 3339 times or days) bound it.
pub async fn audit_export(
    State(state): State<AppState>,
    _: Operator,
    user_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    uri: axum::http::Uri,
) -> Result<Response, Problem> {
    let user_id = user_id_in_path(user_id)?;
    let q = axum::extract::Query::<AuditQuery>::try_from_uri(&uri)
        .map_err(|e| Problem::new("invalid-request", format!("the query string: {e}")))?
        .0;
    let time = |text: Option<String>, end: bool, name: &str| {
        text.map(|t| {
            crate::audit::parse_time(&t, end).ok_or_else(|| {
                Problem::new(
                    "invalid-request",
                    format!("`{name}` is neither an RFC 3339 time nor a day (YYYY-MM-DD)"),
                )
            })
        })
        .transpose()
    };
    let window = crate::audit::Window {
        from: time(q.from, false, "from")?,
        to: time(q.to, true, "to")?,
    };
    if window.reversed() {
        return Err(Problem::new("invalid-request", "`from` is after `to`"));
    }
    let permit = EXPORTS
        .try_acquire()
        .map_err(|_| Problem::busy("as many exports as the service runs at once are under way"))?;
    let reader = state.log.reader();
    let account = {
        let reader = reader.clone();
        tokio::task::spawn_blocking(move || crate::audit::resolve_user_id(&reader, &user_id))
            .await
            .map_err(|e| Problem::internal(&e))?
            .map_err(|e| Problem::internal(&e))?
            .ok_or_else(|| Problem::new("account-not-found", "no account has that user id"))?
    };
    let models = state.read_models.clone();
    let key = state.accounts.service_key().clone();
    let (chunks, body) = tokio::sync::mpsc::channel(4);
    let complete = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = complete.clone();
    let stall = std::time::Duration::from_millis(state.config.http.request_timeout_ms);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChunkWriter {
            chunks: chunks.clone(),
            buffer: Vec::new(),
            runtime,
            stall,
        };
        let mut result = Ok(0);
        let pooled = models.with(|conn| {
            result =
                crate::audit::export(&reader, Some(conn), account, Some(&key), window, &mut out);
            Ok(())
        });
        if pooled.is_err() {
            result = crate::audit::export(&reader, None, account, Some(&key), window, &mut out);
        }
        match result {
            Ok(_) => done.store(true, std::sync::atomic::Ordering::SeqCst),
            Err(error) => {
                tracing::error!(%error, "an audit export stopped");
                // Never waits: a client that stopped reading has a full channel (the body
                // ends with an error all the same once the channel closes).
                let _ = chunks.try_send(Err(std::io::Error::other("the export stopped")));
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::new(ChannelBody {
            chunks: body,
            complete,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Reads `body` to its end: the bytes, and whether it ended with an error.
    async fn drain(mut body: ChannelBody) -> (usize, bool) {
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => bytes += frame.into_data().map(|d| d.len()).unwrap_or(0),
                Err(_) => return (bytes, true),
            }
        }
        (bytes, false)
    }

    /// An export whose client stops reading stops once no chunk has been taken for the stall
    /// time (so its place among the exports is given back), and its body then ends with an
    /// error rather than passing for a whole export; a finished export's body ends cleanly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_nobody_reads_stops_and_never_passes_for_a_whole_one() {
        let (chunks, receiver) = tokio::sync::mpsc::channel(4);
        let runtime = tokio::runtime::Handle::current();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                chunks,
                buffer: Vec::new(),
                runtime,
                stall: std::time::Duration::from_millis(200),
            };
            let line = [b'x'; 1024];
            (0..10_000).find_map(|_| out.write_all(&line).err())
        });
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), writer)
            .await
            .expect("the export stopped")
            .unwrap();
        assert_eq!(
            stopped.map(|e| e.kind()),
            Some(std::io::ErrorKind::TimedOut)
        );
        let body = ChannelBody {
            chunks: receiver,
            complete: Arc::new(AtomicBool::new(false)),
        };
        // The four chunks the channel held, then an error.
        assert_eq!(drain(body).await, (4 * 64 * 1024, true));

        let (chunks, receiver) = tokio::sync::mpsc::channel(4);
        let complete = Arc::new(AtomicBool::new(false));
        chunks
            .send(Ok(bytes::Bytes::from_static(b"{}\n")))
            .await
            .unwrap();
        complete.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(chunks);
        let body = ChannelBody {
            chunks: receiver,
            complete,
        };
        assert_eq!(drain(body).await, (3, false));
    }
}
