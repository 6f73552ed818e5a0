//! The flows of collaborators (CO-1..5), two-step verification (AP-8) and app passwords
//! (AP-1..6) that need more than one command on one stream: fresh secrets drawn and sealed
//! here, the owning mailbox checked before acting on a collaborator's stream, a hardware
//! token's stream and the account's appended together.

use crate::accounts::{AccountHandler, AccountResult, Caller, Outcome};
use crate::handler::HandlerError;
use crate::log::LogError;
use crate::tokens;
use custode_domain::account::{
    self, AccountCommand, AccountError, AccountKind, BindHardwareToken, CollaboratorLink,
    CollaboratorRef, GenerateAppPassword, InitialPassword, OpenAccount, OwnerAct, OwnerRef,
    Permission, Scope, ScopeCommand, StartTwoFactor, TwoFactorChannel,
};
use custode_domain::hardware_token::{HardwareTokenCommand, HardwareTokenError};
use custode_domain::Secret;
use uuid::Uuid;

/// What starting two-step verification gives the holder: for the app, the secret to put in
/// the QR code (shown once, never stored in the clear).
pub struct TwoFactorStart {
    pub outcome: Outcome,
    pub totp_secret: Option<Vec<u8>>,
    /// The account's user id, the label an authenticator app shows.
    pub user_id: String,
}

/// A collaborator just created (CO-1).
pub struct NewCollaborator {
    pub outcome: Outcome,
    pub collaborator_id: Uuid,
    pub user_id: String,
}

/// Why binding a hardware token was refused.
#[derive(Debug)]
pub enum BindError {
    Account(HandlerError<AccountError>),
    Token(HandlerError<HardwareTokenError>),
}

impl From<HandlerError<AccountError>> for BindError {
    fn from(e: HandlerError<AccountError>) -> Self {
        BindError::Account(e)
    }
}

impl From<HandlerError<HardwareTokenError>> for BindError {
    fn from(e: HandlerError<HardwareTokenError>) -> Self {
        BindError::Token(e)
    }
}

/// How many user ids are tried for a new collaborator before giving up.
const USER_ID_ATTEMPTS: usize = 8;

/// A collaborator's user id: the name's letters and digits, a random tag, then the mailbox's
/// address (`anna-bianchi-3f2a.mario.rossi@pec.example.it`), so it is unique and says whose it is.
fn collaborator_user_id(name: &str, mailbox: &str) -> String {
    use rand::Rng;
    let mut slug = String::new();
    for c in name.trim().to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 24 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() {
        "collaborator"
    } else {
        slug
    };
    let tag: u16 = rand::rngs::OsRng.gen();
    let mut id = format!("{slug}-{tag:04x}.{mailbox}");
    if id.chars().count() > 128 {
        id = format!("{slug}-{tag:04x}");
    }
    id
}

impl AccountHandler {
    /// ACC-2, SEC-3, CO-5: the owning mailbox, acting through a fresh session (delegating
    /// access is a sensitive change), with its holder's required actions done.
    async fn ready_owner(
        &self,
        owner_id: Uuid,
        session_id: Uuid,
    ) -> AccountResult<account::Account> {
        let (owner, _) = self.load(owner_id).await?;
        let profile = owner.profile.as_ref().ok_or(AccountError::NotFound)?;
        let now = self.services().clock.now();
        let session = owner
            .live_session(session_id, now)
            .ok_or(AccountError::SessionInvalid)?;
        if session.fresh_until < now {
            return Err(HandlerError::Domain(AccountError::ReauthenticationRequired));
        }
        if profile.kind != AccountKind::Mailbox {
            return Err(HandlerError::Domain(AccountError::NotMailbox));
        }
        if !owner.required_actions().is_empty() {
            return Err(HandlerError::Domain(AccountError::ActionsRequired));
        }
        Ok(owner)
    }

    /// CO-1: the holder of `owner_id` creates a collaborator; the link to its first password
    /// goes to the reference email.
    pub async fn create_collaborator(
        &self,
        owner_id: Uuid,
        session_id: Uuid,
        name: String,
        reference_email: String,
        permissions: Vec<Permission>,
        caller: &Caller,
    ) -> AccountResult<NewCollaborator> {
        let owner = self.ready_owner(owner_id, session_id).await?;
        let Some(profile) = owner.profile.as_ref() else {
            return Err(HandlerError::Domain(AccountError::NotFound));
        };
        let mut last = HandlerError::Domain(AccountError::UserIdTaken);
        for _ in 0..USER_ID_ATTEMPTS {
            let account_id = Uuid::now_v7();
            let user_id = collaborator_user_id(&name, &profile.user_id);
            let (token, token_hash) = tokens::new_token();
            let sealed = self.seal(
                &token,
                &account::collaborator_link_context(account_id, &token_hash),
            )?;
            let cmd = OpenAccount {
                account_id,
                kind: AccountKind::Collaborator,
                user_id: user_id.clone(),
                plan: None,
                owner: Some(OwnerRef {
                    account_id: owner_id,
                    kind: Some(AccountKind::Mailbox),
                }),
                name: Some(name.clone()),
                fiscal_code: None,
                contact_email: Some(reference_email.clone()),
                contact_mobile: None,
                language: profile.language,
                password: InitialPassword::Link { token_hash, sealed },
                permissions: permissions.clone(),
                identity_expires_on: None,
            };
            match self.open(cmd, caller).await {
                Ok((outcome, _)) => {
                    // SC-6: the owner's revocation may have been committed since
                    // `ready_owner`, and then found no such collaborator to revoke with it:
                    // this one is revoked here, on the owner's reference (a mailbox is revoked
                    // only by an operator, so with one), and the holder hears that its session
                    // is gone.
                    let (owner, _) = self.load(owner_id).await?;
                    if let Some(request_reference) = owner.revoked_by {
                        self.execute(
                            account_id,
                            AccountCommand::Revoke(account::Revoke { request_reference }),
                            caller,
                        )
                        .await?;
                        return Err(HandlerError::Domain(AccountError::SessionInvalid));
                    }
                    return Ok(NewCollaborator {
                        outcome,
                        collaborator_id: account_id,
                        user_id,
                    });
                }
                Err(HandlerError::Domain(AccountError::UserIdTaken)) => {
                    last = HandlerError::Domain(AccountError::UserIdTaken);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn collaborator_link(
        &self,
        collaborator_id: Uuid,
        owner_id: Uuid,
    ) -> AccountResult<CollaboratorLink> {
        let (token, token_hash) = tokens::new_token();
        let sealed_token = self.seal(
            &token,
            &account::collaborator_link_context(collaborator_id, &token_hash),
        )?;
        Ok(CollaboratorLink {
            owner_id,
            token_hash,
            sealed_token,
        })
    }

    /// CO-2: reset (`resend: false`) or CO-3: send the link again.
    pub async fn collaborator_link_again(
        &self,
        owner_id: Uuid,
        session_id: Uuid,
        collaborator_id: Uuid,
        resend: bool,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        self.ready_owner(owner_id, session_id).await?;
        let link = self.collaborator_link(collaborator_id, owner_id)?;
        let cmd = if resend {
            AccountCommand::ResendCollaboratorLink(link)
        } else {
            AccountCommand::ResetCollaborator(link)
        };
        self.execute(collaborator_id, cmd, caller).await
    }

    /// CO-4: deactivate (final).
    pub async fn deactivate_collaborator(
        &self,
        owner_id: Uuid,
        session_id: Uuid,
        collaborator_id: Uuid,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        self.ready_owner(owner_id, session_id).await?;
        let cmd = AccountCommand::DeactivateCollaborator(OwnerAct { owner_id });
        self.execute(collaborator_id, cmd, caller).await
    }

    /// AP-8: start two-step verification over the app (a fresh secret, sealed) or SMS.
    pub async fn start_two_factor(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        channel: TwoFactorChannel,
        caller: &Caller,
    ) -> AccountResult<TwoFactorStart> {
        let (sealed_secret, totp_secret, sms) = match channel {
            TwoFactorChannel::App => {
                let secret = crate::secrets::new_totp_secret();
                let sealed = self
                    .service_key()
                    .seal_long_lived(&secret)
                    .map_err(HandlerError::Store)?;
                (Some(sealed), Some(secret), None)
            }
            TwoFactorChannel::Sms => (None, None, Some(self.draw_code(account_id)?)),
            TwoFactorChannel::HardwareToken => (None, None, None),
        };
        let cmd = AccountCommand::StartTwoFactor(StartTwoFactor {
            session_id,
            channel,
            sealed_secret,
            sms,
        });
        let outcome = self.execute(account_id, cmd, caller).await?;
        // The state the command was just decided on, from the cache (no read).
        let (state, _) = self.load(account_id).await?;
        let user_id = state.profile.map(|p| p.user_id).unwrap_or_default();
        Ok(TwoFactorStart {
            outcome,
            totp_secret,
            user_id,
        })
    }

    /// AP-8: an operator registers a hardware token by serial number and seed.
    pub async fn register_hardware_token(
        &self,
        serial: &str,
        seed: &[u8],
        caller: &Caller,
    ) -> Result<u64, HandlerError<HardwareTokenError>> {
        let sealed_seed = self
            .service_key()
            .seal_long_lived(seed)
            .map_err(HandlerError::Store)?;
        let cmd = HardwareTokenCommand::Register {
            serial: serial.to_string(),
            sealed_seed,
        };
        let key = custode_domain::hardware_token::serial_key(serial);
        Ok(self.tokens.execute(&key, cmd, caller).await?.position())
    }

    /// AP-8: the holder binds a registered token with a current code; the token's stream and
    /// the account's are appended together, so a token is never bound to two accounts.
    pub async fn bind_hardware_token(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        serial: &str,
        code: Secret,
        client_ip: Option<String>,
        caller: &Caller,
    ) -> Result<Outcome, BindError> {
        let key = custode_domain::hardware_token::serial_key(serial);
        let (token, _) = self.tokens.load(&key).await?;
        let Some(registered) = token.registered.clone() else {
            return Err(BindError::Token(HandlerError::Domain(
                HardwareTokenError::Unavailable,
            )));
        };
        let bound = self
            .tokens
            .prepare(&key, HardwareTokenCommand::Bind { account_id })
            .await?;
        let cmd = AccountCommand::BindHardwareToken(BindHardwareToken {
            session_id,
            serial: registered.serial.clone(),
            sealed_seed: registered.sealed_seed.clone(),
            code,
            client_ip,
        });
        let prepared = self.accounts.prepare(&account_id, cmd).await?;
        let enabled = prepared
            .events
            .iter()
            .any(|e| matches!(e, account::AccountEvent::TwoFactorEnabled(_)));
        let mut appends = vec![prepared.append.clone()];
        if enabled && !bound.append.events.is_empty() {
            appends.push(bound.append.clone());
        }
        if appends.iter().all(|a| a.events.is_empty()) {
            return Ok(Outcome {
                recorded: Vec::new(),
                events: prepared.events,
            });
        }
        let meta = self.services().metadata(caller, None);
        let recorded = match self.services().log.append(appends, meta).await {
            Ok(recorded) => recorded,
            Err(LogError::Conflict { .. }) => {
                return Err(BindError::Account(HandlerError::Conflict));
            }
            Err(e) => return Err(BindError::Account(e.into())),
        };
        let events = prepared.events.clone();
        let stream = prepared.append.stream.clone();
        self.accounts.committed(prepared, &recorded);
        if enabled {
            self.tokens.committed(bound, &recorded);
        }
        let recorded = recorded
            .into_iter()
            .filter(|r| r.stream == stream)
            .collect();
        Ok(Outcome { recorded, events })
    }

    /// AP-3, AP-5: a new app password for `scope` (`replace`: regenerate). Returns the clear
    /// password, to be shown once.
    pub async fn generate_app_password(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        scope: &str,
        replace: bool,
        caller: &Caller,
    ) -> AccountResult<(Outcome, Secret)> {
        let collaborator = match Scope::parse(scope) {
            Some(Scope::Collaborator(id)) => {
                let (state, _) = self.load(id).await?;
                Some(CollaboratorRef {
                    account_id: id,
                    owner_id: state.profile.as_ref().and_then(|p| p.owner_id),
                    status: state.profile.as_ref().map(|_| state.status),
                    mail_programs: state
                        .profile
                        .as_ref()
                        .is_some_and(|p| p.permissions.contains(&Permission::MailPrograms)),
                })
            }
            _ => None,
        };
        let password = tokens::app_password();
        let cmd = AccountCommand::GenerateAppPassword(GenerateAppPassword {
            session_id,
            scope: scope.to_string(),
            password_hmac: self.service_key().app_password_hmac(password.expose()),
            replace,
            collaborator,
        });
        let outcome = self.execute(account_id, cmd, caller).await?;
        Ok((outcome, password))
    }

    /// AP-4 (`postpone`) or AP-5 (deactivate) the app password of `scope`.
    pub async fn app_password_scope(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        scope: &str,
        postpone: bool,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        let c = ScopeCommand {
            session_id,
            scope: scope.to_string(),
        };
        let cmd = if postpone {
            AccountCommand::PostponeAppPassword(c)
        } else {
            AccountCommand::DeactivateAppPassword(c)
        };
        self.execute(account_id, cmd, caller).await
    }

    /// AP-6, fired by the scheduler.
    pub async fn note_app_password_expiry(
        &self,
        stream: &str,
        scope: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        days_before: u32,
    ) -> AccountResult<u64> {
        let account_id = account_of_stream(stream)?;
        // A collaborator's password dies with the collaborator (CO-4, ACC-1): no notice of its
        // expiry once the collaborator is deactivated or revoked.
        if let Some(Scope::Collaborator(id)) = Scope::parse(scope) {
            let (collaborator, _) = self.load(id).await?;
            if !matches!(
                collaborator.status,
                account::AccountStatus::Active | account::AccountStatus::Suspended
            ) {
                return Ok(0);
            }
        }
        let cmd = AccountCommand::NoteAppPasswordExpiry(account::NoteAppPasswordExpiry {
            scope: scope.to_string(),
            expires_at,
            days_before,
        });
        self.scheduled(account_id, cmd).await
    }
}

impl AccountHandler {
    /// PW-6, from the scheduler: the notice `days_before` days before the password on the
    /// account `stream` expires at `expires_at`, or (0) its expiry; nothing if it changed.
    pub async fn note_password_expiry(
        &self,
        stream: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        days_before: u32,
    ) -> AccountResult<u64> {
        let account_id = account_of_stream(stream)?;
        let cmd = AccountCommand::NotePasswordExpiry(account::NotePasswordExpiry {
            expires_at,
            days_before,
        });
        self.scheduled(account_id, cmd).await
    }

    /// SC-8, from the scheduler: a look at whether the identity on `stream` has been used,
    /// with the latest successful access the identity front end reported (read from the tail
    /// of the account's access stream).
    pub async fn review_inactivity(&self, stream: &str) -> AccountResult<u64> {
        use custode_domain::access::{stream_for, AccessEvent, Outcome};
        let account_id = account_of_stream(stream)?;
        let tail = self
            .services()
            .log
            .read_stream_tail(&stream_for(account_id), RECENT_RECORDS_READ)
            .await?;
        let mut last_reported_access = None;
        for recorded in &tail {
            let event: AccessEvent = custode_domain::envelope::decode(recorded)
                .map_err(|e| HandlerError::Store(e.to_string()))?;
            if let AccessEvent::ServiceAccessReported(report) = event {
                if report.outcome == Outcome::Success {
                    // A report cannot be later than its recording.
                    last_reported_access = Some(report.at.min(recorded.occurred_at));
                    break;
                }
            }
        }
        let cmd = AccountCommand::ReviewInactivity(account::ReviewInactivity {
            last_reported_access,
        });
        self.scheduled(account_id, cmd).await
    }

    /// SC-2, from the scheduler: the notice `days_before` days before the document on the
    /// account `stream` expires on `expires_on` (nothing if another document replaced it).
    pub async fn note_document_expiry(
        &self,
        stream: &str,
        expires_on: chrono::NaiveDate,
        days_before: u32,
    ) -> AccountResult<u64> {
        let account_id = account_of_stream(stream)?;
        let cmd = AccountCommand::NoteDocumentExpiry(account::NoteDocumentExpiry {
            expires_on,
            days_before,
        });
        self.scheduled(account_id, cmd).await
    }

    /// AH-1: an access record (a mail server's check, AP-7, or a reported access to a service
    /// provider), appended on the account's access stream at its end (no version check: a
    /// record decides nothing, so it takes no turn and meets no conflict), so the account's own
    /// stream never grows with accesses (AH-3). The log's group commit puts concurrent records
    /// in one transaction. Returns the record's position.
    pub async fn record_access(
        &self,
        account_id: Uuid,
        record: custode_domain::access::AccessEvent,
        caller: &Caller,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<u64, HandlerError<AccountError>> {
        let (append, meta) = self.record_append(account_id, record, caller, at)?;
        let recorded = self.services().log.append(vec![append], meta).await?;
        Ok(recorded.last().map_or(0, |r| r.position))
    }

    /// As [`AccountHandler::record_access`], for a record nobody waits on (AP-7's, written
    /// behind its answer): made ready for the log here, written by the `AccessRecorder` with
    /// the others it gathers (`EventLog::append_ready_soon`).
    pub fn ready_record(
        &self,
        account_id: Uuid,
        record: custode_domain::access::AccessEvent,
        caller: &Caller,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::log::ReadyAppend, HandlerError<AccountError>> {
        let (append, meta) = self.record_append(account_id, record, caller, Some(at))?;
        Ok(crate::log::EventLog::ready(append, meta))
    }

    /// An access record's append (at the stream's end, whatever its version) and metadata.
    fn record_append(
        &self,
        account_id: Uuid,
        record: custode_domain::access::AccessEvent,
        caller: &Caller,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(crate::log::StreamAppend, crate::log::Metadata), HandlerError<AccountError>> {
        let append = crate::log::StreamAppend {
            stream: custode_domain::access::stream_for(account_id),
            expected_version: crate::log::ANY_VERSION,
            events: crate::handler::to_new_events(&[record])?,
        };
        let mut meta = self.services().metadata(caller, None);
        // A record written behind its answer keeps the time of the access.
        if let Some(at) = at {
            meta.occurred_at = at;
        }
        Ok((append, meta))
    }
}

impl AccountHandler {
    /// A scheduler's command on `account_id`: the position of what it recorded (0: nothing).
    async fn scheduled(&self, account_id: Uuid, cmd: AccountCommand) -> AccountResult<u64> {
        Ok(self
            .execute(account_id, cmd, &Caller::system())
            .await?
            .position())
    }
}

/// The account whose stream is `stream` (`account-<uuid>`).
fn account_of_stream(stream: &str) -> Result<Uuid, HandlerError<AccountError>> {
    stream
        .strip_prefix("account-")
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| HandlerError::Store(format!("stream {stream} is not an account's")))
}

/// How many of an account's latest access records are read at a time: by a node learning a
/// user id's recent failed checks (SEC-2, a page), and by SC-8's look for the latest access.
const RECENT_RECORDS_READ: usize = 512;

impl AccountHandler {
    /// SEC-2: when the failed checks on the account's access stream happened since `since`,
    /// newest first, read from the log: a per-user-id limit lives in the log, so a node that
    /// has not counted this user id yet (a restart, another node) learns it here. The checks
    /// counted are those of `scope`, or, with `None`, those of every scope that had no app
    /// password (which share one count, see the check). Read page by page back to `since`,
    /// however many other records the minute holds (found from outside: a flood of records
    /// pushed the failures past a fixed-size read, and a restart forgot them).
    pub async fn recent_check_failures(
        &self,
        account_id: Uuid,
        scope: Option<&str>,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<chrono::DateTime<chrono::Utc>>, HandlerError<AccountError>> {
        use custode_domain::access::{stream_for, AccessEvent, DenyReason, Outcome};
        let stream = stream_for(account_id);
        let log = &self.services().log;
        let mut failures = Vec::new();
        let mut read = 0;
        let mut page = log.read_stream_tail(&stream, RECENT_RECORDS_READ).await?;
        loop {
            let mut past = false;
            for recorded in &page {
                // The records of one group commit are not quite in time order.
                if recorded.occurred_at <= since - RECORD_ORDER_SLACK {
                    past = true;
                    break;
                }
                if recorded.occurred_at <= since {
                    continue;
                }
                let event: AccessEvent = custode_domain::envelope::decode(recorded)
                    .map_err(|e| HandlerError::Store(e.to_string()))?;
                let AccessEvent::AppPasswordChecked(check) = event else {
                    continue;
                };
                let counted = match scope {
                    Some(scope) => check.scope == scope,
                    None => check.reason == Some(DenyReason::NoAppPassword),
                };
                // A check the limit turned away is not one more failure to count.
                if counted
                    && check.outcome == Outcome::Failure
                    && check.reason != Some(DenyReason::RateLimited)
                {
                    failures.push(recorded.occurred_at);
                }
            }
            read += page.len();
            let full = page.len() == RECENT_RECORDS_READ;
            let Some(oldest) = page.last().map(|r| r.version).filter(|_| full && !past) else {
                break;
            };
            if read >= RECENT_RECORDS_MAX {
                tracing::warn!(%account_id, read, "more access records in the last minute than are read to count failed checks");
                break;
            }
            page = log
                .read_stream_tail_before(&stream, oldest, RECENT_RECORDS_READ)
                .await?;
        }
        Ok(failures)
    }
}

/// How far before a minute's start the count of failed checks keeps reading.
const RECORD_ORDER_SLACK: chrono::Duration = chrono::Duration::seconds(5);

/// At most this many access records are read to learn a minute's failed checks.
const RECENT_RECORDS_MAX: usize = 100_000;
