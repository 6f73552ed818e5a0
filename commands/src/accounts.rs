//! The account command handler: load the stream, fold it with `evolve`, `decide` (on the
//! hashing pool when the command hashes or verifies a password), append with the expected
//! version, and retry once if another command got there first.

use crate::clock::Clock;
use crate::delivery::DeliveryKeys;
use crate::hashing::{Argon2Hasher, HashPool, MemoHasher};
use crate::log::{EventLog, LogError, Metadata, NewEvent, StreamAppend};
use crate::service_key::ServiceKey;
use crate::tokens;
use custode_domain::account::{
    self, Account, AccountCommand, AccountError, AccountEvent, Ctx, InitialPassword, Login,
    OpenAccount, OwnerRef,
};
use custode_domain::envelope::{decode, encode, CURRENT_SCHEMA_VERSION};
use custode_domain::user_registry::{self, UserId, UserIdError};
use custode_domain::{Actor, RecordedEvent, Sealed, Secret, Settings};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use uuid::Uuid;

/// How many times a command is decided before a run of version conflicts is reported: logins
/// to one busy account (a mail client and a browser at once) must not fail on a race.
const ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Domain(#[from] AccountError),
    #[error(transparent)]
    UserId(#[from] UserIdError),
    #[error(transparent)]
    Notice(#[from] custode_domain::notice::NoticeError),
    /// Other commands changed the stream every time this one decided.
    #[error("the account changed concurrently; try again")]
    Conflict,
    #[error("no recovery has that id")]
    RecoveryNotFound,
    #[error("storage failed: {0}")]
    Store(String),
}

impl From<LogError> for HandlerError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Conflict { .. } => HandlerError::Conflict,
            other => HandlerError::Store(other.to_string()),
        }
    }
}

/// Who asked, for the envelope.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub correlation_id: Uuid,
}

/// What a command produced: the committed events (the last one's position is what read
/// endpoints wait for) and their typed form.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub recorded: Vec<RecordedEvent>,
    pub events: Vec<AccountEvent>,
}

impl Outcome {
    pub fn position(&self) -> u64 {
        self.recorded.last().map_or(0, |e| e.position)
    }
}

/// A successful login: the clear token goes to the client once.
#[derive(Debug)]
pub enum LoginOutcome {
    Started { token: Secret, outcome: Outcome },
    Refused,
}

#[derive(Clone)]
pub struct AccountHandler {
    pub(crate) locks: Arc<StreamLocks>,
    pub(crate) service_key: ServiceKey,
    pub(crate) log: EventLog,
    pub(crate) pool: HashPool,
    pub(crate) hasher: Arc<Argon2Hasher>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) clock: Arc<dyn Clock>,
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
        Self {
            keys,
            service_key,
            locks: Arc::new(StreamLocks::default()),
            log,
            pool,
            hasher,
            settings,
            clock,
        }
    }

    /// Reads `stream` and folds it with `evolve`: the state as of now and the stream's version.
    pub(crate) async fn fold<E: serde::de::DeserializeOwned, S: Default>(
        &self,
        stream: &str,
        evolve: impl Fn(S, &E) -> S,
    ) -> Result<(S, u64), HandlerError> {
        let recorded = self.log.read_stream(stream).await?;
        let version = recorded.last().map_or(0, |e| e.version);
        let mut state = S::default();
        for e in &recorded {
            let event: E = decode(e).map_err(|err| {
                HandlerError::Store(format!("undecodable event {}: {err}", e.event_id))
            })?;
            state = evolve(state, &event);
        }
        Ok((state, version))
    }

    /// The account's state as of now, and its stream version.
    pub async fn load(&self, account_id: Uuid) -> Result<(Account, u64), HandlerError> {
        self.fold(&account::stream_for(account_id), account::evolve)
            .await
    }

    /// The account that holds `user_id`, read from the registry stream (the log, not a read
    /// model, so it is never behind).
    pub async fn account_id_of(&self, user_id: &str) -> Result<Option<Uuid>, HandlerError> {
        let (registry, _) = self.registry(user_id).await?;
        Ok(registry.account_id)
    }

    async fn registry(&self, user_id: &str) -> Result<(UserId, u64), HandlerError> {
        self.fold(&user_registry::stream_for(user_id), user_registry::evolve)
            .await
    }

    /// ACC-2: fresh temporary credentials for `account_id`, sealed for the mailer.
    pub fn temporary_password(&self, account_id: Uuid) -> Result<InitialPassword, HandlerError> {
        let password = tokens::temporary_password();
        let sealed = self.seal(&password, &account::temporary_password_context(account_id))?;
        Ok(InitialPassword::Temporary { password, sealed })
    }

    /// `secret` sealed for the workers under today's delivery key, bound to `context`.
    pub(crate) fn seal(&self, secret: &Secret, context: &str) -> Result<Sealed, HandlerError> {
        self.keys
            .seal(secret, context, self.clock.now())
            .map_err(|e| HandlerError::Store(e.to_string()))
    }

    /// ACC-1..4: claims the user id and opens the account in one atomic append. Returns the
    /// outcome and, for temporary credentials, the clear password to show once.
    pub async fn open(
        &self,
        mut cmd: OpenAccount,
        caller: &Caller,
    ) -> Result<(Outcome, Option<Secret>), HandlerError> {
        if let Some(owner) = &mut cmd.owner {
            let (owner_state, _) = self.load(owner.account_id).await?;
            *owner = OwnerRef {
                account_id: owner.account_id,
                kind: owner_state.profile.as_ref().map(|p| p.kind),
            };
        }
        let temporary = match &cmd.password {
            InitialPassword::Temporary { password, .. } => Some(password.clone()),
            InitialPassword::Imported(_) => None,
        };
        let (registry, registry_version) = self.registry(&cmd.user_id).await?;
        let claimed = user_registry::decide(&registry, &cmd.user_id, cmd.account_id)?;
        let account_id = cmd.account_id;
        let cmd_user_id = cmd.user_id.clone();
        let hasher = Arc::new(MemoHasher::new(self.hasher.clone()));
        let events = self
            .decide(Account::default(), AccountCommand::Open(cmd), hasher)
            .await?;
        let appends = vec![
            StreamAppend {
                stream: user_registry::stream_for(&cmd_user_id),
                expected_version: registry_version,
                events: to_new_events(&claimed)?,
            },
            StreamAppend {
                stream: account::stream_for(account_id),
                expected_version: 0,
                events: to_new_events(&events)?,
            },
        ];
        let recorded = match self.log.append(appends, self.metadata(caller)).await {
            Ok(recorded) => recorded,
            // Someone claimed the id between our read and our append.
            Err(LogError::Conflict { .. }) => return Err(UserIdError::Taken.into()),
            Err(e) => return Err(e.into()),
        };
        Ok((Outcome { recorded, events }, temporary))
    }

    /// Login by user id and password. An unknown user id costs the same Argon2 verification as
    /// a known one and gets the same refusal.
    pub async fn login(
        &self,
        user_id: &str,
        password: Secret,
        client_ip: Option<String>,
        caller: &Caller,
    ) -> Result<LoginOutcome, HandlerError> {
        let Some(account_id) = self.account_id_of(user_id).await? else {
            // An unknown id, as an account would be: in turn, refused on the hashing pool
            // while locked out, else the same Argon2 verification and a recorded failure
            // (SEC-2: throttled alike).
            let subject_hex = crate::log::hex(&self.service_key.subject(user_id));
            let turn = self.subject_turn(&subject_hex);
            let _turn = turn.lock().await;
            let now = self.clock.now();
            let (state, _) = self
                .fold(
                    &custode_domain::subject::stream_for(&subject_hex),
                    custode_domain::subject::evolve,
                )
                .await?;
            let hasher = self.hasher.clone();
            self.pool
                .run(move || {
                    custode_domain::subject::login_lock(&state, now)?;
                    hasher.verify_dummy(&password);
                    Ok::<_, AccountError>(())
                })
                .await
                .map_err(|e| HandlerError::Store(e.to_string()))??;
            self.on_subject(&subject_hex, caller, |s| {
                custode_domain::subject::login_failed(s, client_ip.clone(), &self.settings, now)
            })
            .await?;
            return Ok(LoginOutcome::Refused);
        };
        let (token, token_hash) = tokens::new_token();
        let cmd = AccountCommand::Login(Login {
            session_id: Uuid::now_v7(),
            token_hash,
            password,
            client_ip,
        });
        let outcome = self.execute(account_id, cmd, caller).await?;
        let refused = outcome
            .events
            .iter()
            .any(|e| matches!(e, AccountEvent::LoginFailed(_)));
        Ok(if refused {
            LoginOutcome::Refused
        } else {
            LoginOutcome::Started { token, outcome }
        })
    }

    /// Load, decide, append; again on a version conflict. Hash results are remembered across
    /// attempts, so a retry costs a stream read and a `decide`, not another Argon2 run.
    pub async fn execute(
        &self,
        account_id: Uuid,
        cmd: AccountCommand,
        caller: &Caller,
    ) -> Result<Outcome, HandlerError> {
        let stream = account::stream_for(account_id);
        // Commands on one account take turns in this process; optimistic concurrency still
        // guards against other processes appending to the same stream.
        let turn = self.locks.get(account_id);
        let _turn = turn.lock().await;
        let hasher = Arc::new(MemoHasher::new(self.hasher.clone()));
        let mut attempts_left = ATTEMPTS;
        loop {
            attempts_left -= 1;
            let (state, version) = self.load(account_id).await?;
            if !state.is_open() {
                return Err(AccountError::NotFound.into());
            }
            let events = self.decide(state, cmd.clone(), hasher.clone()).await?;
            if events.is_empty() {
                return Ok(Outcome {
                    recorded: Vec::new(),
                    events,
                });
            }
            let append = StreamAppend {
                stream: stream.clone(),
                expected_version: version,
                events: to_new_events(&events)?,
            };
            match self.log.append(vec![append], self.metadata(caller)).await {
                Ok(recorded) => return Ok(Outcome { recorded, events }),
                Err(LogError::Conflict { .. }) if attempts_left > 0 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn decide(
        &self,
        state: Account,
        cmd: AccountCommand,
        hasher: Arc<MemoHasher>,
    ) -> Result<Vec<AccountEvent>, HandlerError> {
        let now = self.clock.now();
        let settings = self.settings.clone();
        let needs_hashing = cmd.needs_hashing();
        let service_key = self.service_key.clone();
        let run = move || {
            let ctx = Ctx {
                now,
                settings: &settings,
                hasher: hasher.as_ref(),
                codes: &service_key,
            };
            account::decide(&state, &cmd, &ctx)
        };
        // Commands that hash or verify go to the bounded pool (PW-5); the others decide here.
        let decided = if needs_hashing {
            self.pool
                .run(run)
                .await
                .map_err(|e| HandlerError::Store(e.to_string()))?
        } else {
            run()
        };
        Ok(decided?)
    }

    pub(crate) fn metadata(&self, caller: &Caller) -> Metadata {
        let causation_id = Uuid::now_v7();
        Metadata {
            actor: caller.actor.clone(),
            correlation_id: caller.correlation_id,
            causation_id,
            occurred_at: self.clock.now(),
        }
    }
}

/// One async mutex per account with commands in flight; entries die with their last user.
#[derive(Default)]
pub(crate) struct StreamLocks {
    locks: std::sync::Mutex<HashMap<Uuid, Weak<tokio::sync::Mutex<()>>>>,
}

impl StreamLocks {
    pub(crate) fn get(&self, account_id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut locks) = self.locks.lock() else {
            // A poisoned map only loses the in-process ordering; the log's version check remains.
            return Arc::new(tokio::sync::Mutex::new(()));
        };
        if let Some(lock) = locks.get(&account_id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= 1024 {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(account_id, Arc::downgrade(&lock));
        lock
    }
}

pub(crate) fn to_new_events<E: serde::Serialize>(
    events: &[E],
) -> Result<Vec<NewEvent>, HandlerError> {
    events
        .iter()
        .map(|e| {
            let (event_type, payload) =
                encode(e).map_err(|err| HandlerError::Store(err.to_string()))?;
            Ok(NewEvent {
                event_id: Uuid::now_v7(),
                event_type,
                schema_version: CURRENT_SCHEMA_VERSION,
                payload,
            })
        })
        .collect()
}
