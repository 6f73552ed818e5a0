//! The account side of the write path: the generic [`Handler`] of each aggregate a holder's
//! command touches (the account, the user-id registry, an unknown id's subject stream, a
//! recovery's start), and the few flows that span two of them: opening an account (the user id
//! is claimed in the same transaction) and logging in (an unknown id is answered by its subject
//! stream, at the same cost).

use crate::clock::Clock;
use crate::delivery::{DeliveryKeyError, DeliveryKeys};
use crate::handler::{Handler, HandlerError, Services};
use crate::hashing::{Argon2Hasher, HashPool};
use crate::log::{EventLog, LogError};
use crate::service_key::ServiceKey;
use crate::tokens;
use custode_domain::account::{
    self, AccessChannel, Account, AccountCommand, AccountError, AccountEvent, Accounts,
    InitialPassword, Login, OpenAccount, OwnerRef, RequestOtp,
};
use custode_domain::otp::OtpPurpose;
use custode_domain::recovery::Recoveries;
use custode_domain::subject::{SubjectCommand, Subjects};
use custode_domain::user_registry::{ClaimUserId, Registry, UserIdError};
use custode_domain::{Sealed, Secret, Settings};
use std::sync::Arc;
use uuid::Uuid;

pub use crate::handler::{Caller, Outcome as HandlerOutcome};

/// What an account command yields, refused or failed as an account refuses.
pub type AccountResult<T> = Result<T, HandlerError<AccountError>>;

/// What an account command produced.
pub type Outcome = HandlerOutcome<AccountEvent>;

/// A successful login: the clear token goes to the client once.
#[derive(Debug)]
pub enum LoginOutcome {
    Started {
        token: Secret,
        outcome: Outcome,
    },
    /// Refused; what was recorded (nothing for an unknown id): a failed login, or, with the
    /// password right, the second factor's code sent or refused (AP-8).
    Refused {
        outcome: Outcome,
    },
}

#[derive(Clone)]
pub struct AccountHandler {
    pub(crate) accounts: Handler<Accounts>,
    pub(crate) registry: Handler<Registry>,
    pub(crate) subjects: Handler<Subjects>,
    pub(crate) recoveries: Handler<Recoveries>,
    pub(crate) tokens: Handler<custode_domain::hardware_token::HardwareTokens>,
    pub(crate) keys: DeliveryKeys,
}

impl AccountHandler {
    pub fn new(
        log: EventLog,
        pool: HashPool,
        hasher: Arc<Argon2Hasher>,
        settings: Arc<Settings>,
        clock: Arc<dyn Clock>,
        keys: DeliveryKeys,
        service_key: ServiceKey,
    ) -> Self {
        let services = Services {
            log,
            pool,
            hasher,
            settings,
            clock,
            service_key,
        };
        Self {
            accounts: Handler::new(services.clone()),
            registry: Handler::new(services.clone()),
            subjects: Handler::new(services.clone()),
            recoveries: Handler::new(services.clone()),
            tokens: Handler::new(services),
            keys,
        }
    }

    pub fn services(&self) -> &Services {
        self.accounts.services()
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.services().settings
    }

    pub fn service_key(&self) -> &ServiceKey {
        &self.services().service_key
    }

    /// The account's state as of now, and its stream version.
    pub async fn load(&self, account_id: Uuid) -> AccountResult<(Account, u64)> {
        self.accounts.load(&account_id).await
    }

    /// The account that holds `user_id`, read from the registry stream (the log, not a read
    /// model, so it is never behind).
    pub async fn account_id_of(&self, user_id: &str) -> AccountResult<Option<Uuid>> {
        let (registry, _) = self
            .registry
            .load(&user_id.to_string())
            .await
            .map_err(|e| e.map_domain(AccountError::from))?;
        Ok(registry.account_id)
    }

    /// ACC-2: fresh temporary credentials for `account_id`, sealed for the mailer.
    pub fn temporary_password(&self, account_id: Uuid) -> AccountResult<InitialPassword> {
        let password = tokens::temporary_password();
        let sealed = self.seal(&password, &account::temporary_password_context(account_id))?;
        Ok(InitialPassword::Temporary { password, sealed })
    }

    /// `secret` sealed for the workers under today's delivery key, bound to `context`.
    pub(crate) fn seal(&self, secret: &Secret, context: &str) -> AccountResult<Sealed> {
        self.keys
            .seal(secret, context, self.services().clock.now())
            .map_err(|e| match e {
                // An API node started before any mailer or SMS sender: a passing state.
                DeliveryKeyError::NoPublicKey(_) | DeliveryKeyError::BadPublicKey(_) => {
                    HandlerError::Unavailable(e.to_string())
                }
                e => HandlerError::Store(e.to_string()),
            })
    }

    /// ACC-1..4: claims the user id and opens the account in one atomic append. Returns the
    /// outcome and, for temporary credentials, the clear password to show once.
    pub async fn open(
        &self,
        mut cmd: OpenAccount,
        caller: &Caller,
    ) -> AccountResult<(Outcome, Option<Secret>)> {
        if let Some(owner) = &mut cmd.owner {
            let (owner_state, _) = self.load(owner.account_id).await?;
            *owner = OwnerRef {
                account_id: owner.account_id,
                kind: owner_state.profile.as_ref().map(|p| p.kind),
            };
        }
        let temporary = match &cmd.password {
            InitialPassword::Temporary { password, .. } => Some(password.clone()),
            InitialPassword::Imported(_) | InitialPassword::Link { .. } => None,
        };
        let claim = ClaimUserId {
            user_id: cmd.user_id.clone(),
            account_id: cmd.account_id,
        };
        let claimed = self
            .registry
            .prepare(&claim.user_id, claim.clone())
            .await
            .map_err(|e| e.map_domain(AccountError::from))?;
        let account_id = cmd.account_id;
        let opened = self
            .accounts
            .prepare(&account_id, AccountCommand::Open(cmd))
            .await?;
        let appends = vec![claimed.append.clone(), opened.append.clone()];
        let meta = self.services().metadata(caller, None);
        let recorded = match self.services().log.append(appends, meta).await {
            Ok(recorded) => recorded,
            // Someone claimed the id between our read and our append.
            Err(LogError::Conflict { .. }) => {
                return Err(HandlerError::Domain(UserIdError::Taken.into()))
            }
            Err(e) => return Err(e.into()),
        };
        let events = opened.events.clone();
        let account_stream = opened.append.stream.clone();
        self.registry.committed(claimed, &recorded);
        self.accounts.committed(opened, &recorded);
        let recorded = recorded
            .into_iter()
            .filter(|r| r.stream == account_stream)
            .collect();
        Ok((Outcome { recorded, events }, temporary))
    }

    /// Login by user id and password. An unknown user id costs the same Argon2 verification as
    /// a known one, in its subject stream's turn, and gets the same refusal (SEC-2: throttled
    /// alike, its failures counted in the log).
    pub async fn login(
        &self,
        user_id: &str,
        password: Secret,
        otp: Option<Secret>,
        client_ip: Option<String>,
        channel: AccessChannel,
        caller: &Caller,
    ) -> AccountResult<LoginOutcome> {
        let Some(account_id) = self.account_id_of(user_id).await? else {
            let subject = crate::log::hex(&self.service_key().subject(user_id));
            let cmd = SubjectCommand::FailLogin {
                password,
                client_ip,
            };
            self.subjects.execute(&subject, cmd, caller).await?;
            return Ok(LoginOutcome::Refused {
                outcome: Outcome {
                    recorded: Vec::new(),
                    events: Vec::new(),
                },
            });
        };
        let (token, token_hash) = tokens::new_token();
        let sms = self.sms_code_unless(account_id, &otp).await?;
        let cmd = AccountCommand::Login(Login {
            session_id: Uuid::now_v7(),
            token_hash,
            password,
            client_ip,
            channel,
            otp,
            sms,
        });
        let outcome = self.execute(account_id, cmd, caller).await?;
        let refused = !outcome
            .events
            .iter()
            .any(|e| matches!(e, AccountEvent::SessionStarted(_)));
        Ok(if refused {
            LoginOutcome::Refused { outcome }
        } else {
            LoginOutcome::Started { token, outcome }
        })
    }

    /// SEC-6, fired by the scheduler at a lock's end: `EndLocks` on `stream`, an account's or
    /// an unknown id's. Returns the position of what it recorded (0 when the locks had already
    /// ended: the command is idempotent, so a timer fired twice appends once).
    pub async fn end_locks(&self, stream: &str) -> AccountResult<u64> {
        let caller = Caller::system();
        let position = if let Some(account) = stream.strip_prefix("account-") {
            let account_id = Uuid::parse_str(account)
                .map_err(|e| HandlerError::Store(format!("stream {stream}: {e}")))?;
            self.execute(account_id, AccountCommand::EndLocks, &caller)
                .await?
                .position()
        } else if let Some(subject) = stream.strip_prefix("subject-") {
            self.subjects
                .execute(&subject.to_string(), SubjectCommand::EndLocks, &caller)
                .await?
                .position()
        } else {
            return Err(HandlerError::Store(format!(
                "stream {stream} has no locks to end"
            )));
        };
        Ok(position)
    }

    /// SEC-8, fired by the scheduler: the mirror of a notice on the unknown id's subject
    /// stream `stream` (idempotent: at most one per notice a real account would have had).
    pub async fn mirror_notice(&self, stream: &str, template: &str) -> AccountResult<u64> {
        let Some(subject) = stream.strip_prefix("subject-") else {
            return Err(HandlerError::Store(format!(
                "stream {stream} mirrors no notices"
            )));
        };
        let caller = Caller::system();
        let command = SubjectCommand::MirrorNotice {
            template: template.to_string(),
        };
        Ok(self
            .subjects
            .execute(&subject.to_string(), command, &caller)
            .await?
            .position())
    }

    /// AP-8: the code to send should the account's second factor be SMS and no code came with
    /// a login or a step-up. Drawn (and sealed) only for such an account, so nothing else
    /// depends on a delivery key (the state is the handler's cached one).
    pub async fn sms_code_unless(
        &self,
        account_id: Uuid,
        otp: &Option<Secret>,
    ) -> AccountResult<Option<account::DrawnCode>> {
        if otp.is_some() {
            return Ok(None);
        }
        let (state, _) = self.load(account_id).await?;
        let sms = state
            .two_factor
            .is_some_and(|t| t.channel == custode_domain::account::TwoFactorChannel::Sms);
        Ok(if sms {
            Some(self.draw_code(account_id)?)
        } else {
            None
        })
    }

    /// A fresh one-time code for `account_id`, sealed for the SMS sender.
    pub(crate) fn draw_code(&self, account_id: Uuid) -> AccountResult<account::DrawnCode> {
        let challenge_id = Uuid::now_v7();
        let code = tokens::otp_code();
        let sealed_code = self.seal(&code, &account::otp_context(account_id, challenge_id))?;
        Ok(account::DrawnCode {
            challenge_id,
            code,
            sealed_code,
        })
    }

    /// PW-4, SC: a one-time code for `purpose`, by SMS to the account's mobile; the code is
    /// drawn here and leaves only sealed for the SMS sender.
    pub async fn request_otp(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        purpose: OtpPurpose,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        let cmd = AccountCommand::RequestOtp(RequestOtp {
            session_id,
            purpose,
            code: self.draw_code(account_id)?,
        });
        self.execute(account_id, cmd, caller).await
    }

    /// SC-3: codes to the current contact mobile and to `mobile`, drawn here.
    pub async fn start_contact_mobile_change(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        mobile: String,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        let cmd = AccountCommand::StartContactMobileChange(account::StartContactMobileChange {
            session_id,
            mobile,
            current: self.draw_code(account_id)?,
            new: self.draw_code(account_id)?,
        });
        self.execute(account_id, cmd, caller).await
    }

    /// SC-5: the authorising code checked, and a code (drawn here) to the new recovery contact.
    pub async fn start_recovery_contact_change(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        method: custode_domain::recovery::RecoveryMethod,
        otp: Option<custode_domain::Secret>,
        contact: String,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        let cmd = AccountCommand::StartRecoveryContactChange(account::StartRecoveryContactChange {
            session_id,
            method,
            otp,
            contact,
            code: self.draw_code(account_id)?,
        });
        self.execute(account_id, cmd, caller).await
    }

    /// Load, decide, append on the account's stream (see [`Handler::execute`]).
    pub async fn execute(
        &self,
        account_id: Uuid,
        cmd: AccountCommand,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        self.accounts.execute(&account_id, cmd, caller).await
    }
}
