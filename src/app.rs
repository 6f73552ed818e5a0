//! Wiring: opens the data directory (holding its lock), the log, the read models and the
//! projector, and assembles the state the HTTP handlers share.

use crate::config::Config;
use chrono::{DateTime, Utc};
use custode_commands::accounts::AccountHandler;
use custode_commands::clock::Clock;
use custode_commands::delivery::DeliveryKeys;
use custode_commands::hashing::{Argon2Hasher, HashPool};
use custode_commands::notices::NoticeHandler;
use custode_commands::service_key::ServiceKey;
use custode_commands::sqlite::ReadPool;
use custode_commands::{EventLog, LogOptions};
use custode_projections::ReadModels;
use custode_workers::consumer::{ConsumerHandle, Feed};
use custode_workers::notifier::{Recorder, Reporter};
use custode_workers::runtime::WorkerName;
use custode_workers::runtime::{self, WorkerContext};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uuid::Uuid;

pub const LOG_FILE: &str = "events.db";
pub const READ_MODELS_FILE: &str = "read.db";
pub const LOCK_FILE: &str = "custode.lock";
/// Delivery keys and, later, the other keys of SEC-7 (mode 0700 directory, 0600 files).
pub const KEYS_DIR: &str = "keys";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the data directory {0} is in use by another custode process (serve or replay); stop it first")]
    Locked(PathBuf),
    #[error("{0}")]
    Component(String),
}

/// The exclusive lock on a data directory, held for the life of the process.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<Self, StartError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        // The log holds password hashes and contacts: only the service's user may read it.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| StartError::DataDir {
                    path: data_dir.to_path_buf(),
                    source,
                },
            )?;
        }
        let path = data_dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StartError::DataDir {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(StartError::Locked(data_dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(source)) => Err(StartError::DataDir { path, source }),
        }
    }
}

/// What every request handler can reach: cheap to clone (axum clones it for each extractor).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl From<AppStateInner> for AppState {
    fn from(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

#[derive(Clone)]
pub struct AppStateInner {
    pub config: Arc<Config>,
    pub accounts: AccountHandler,
    /// NT-3: workers' reports and operators' retries of dead letters.
    pub notices: NoticeHandler,
    pub log: EventLog,
    pub read_models: Arc<ReadPool>,
    /// The position the read models of this process have applied, all but the access history
    /// (which trails them under load: see `custode_projections::Lane`).
    pub applied: watch::Receiver<u64>,
    /// The position every read model of this process, the access history included, has applied.
    pub history_applied: watch::Receiver<u64>,
    pub clock: Arc<dyn Clock>,
    /// Last request time per session, for SEC-3's idle limit. Kept in memory: after a restart
    /// a session counts as idle since its last login or step-up, which only errs on the safe side.
    pub activity: Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>>,
    pub metrics: Arc<crate::http::metrics::HttpMetrics>,
    /// The workers running in this process, with how far each has handled the log.
    pub workers: Vec<ConsumerHandle>,
    /// With `--nats`: how far the relay has published.
    pub relayed: Option<watch::Receiver<u64>>,
    /// RC-1's captcha check.
    pub captcha: crate::captcha::Captcha,
    /// SEC-2's rate limits.
    pub limiter: Arc<crate::http::limits::Limiter>,
    /// SEC-9: the requests served at once.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// SEC-9: the requests in flight per client address group.
    pub in_flight_by_address: Arc<Mutex<HashMap<String, usize>>>,
    /// SEC-9: zxcvbn evaluations at once (PW-3), apart from the hashing pool so the meter
    /// cannot starve logins.
    pub strength_slots: Arc<tokio::sync::Semaphore>,
    /// AP-7: the mail servers' checks, recorded behind their answers.
    pub access_recorder: custode_commands::access_recorder::AccessRecorder,
    /// AP-7: the facts of recent checks, kept true by the projector.
    pub check_facts: Arc<custode_projections::accounts::FactsCache>,
    /// The account pages' and sessions' rows, kept true by the projector.
    pub views: Arc<crate::http::Views>,
    /// AH-1: user ids already resolved to their accounts, for reported accesses.
    pub user_ids: Arc<UserIds>,
}

/// User ids resolved to their account ids. A user id, once claimed, belongs to its account for
/// good (revoked and deactivated accounts keep theirs), so an answer never goes stale; the map
/// is bounded by being forgotten wholesale when full.
#[derive(Default)]
pub struct UserIds(Mutex<HashMap<String, Uuid>>);

impl UserIds {
    const KEPT: usize = 100_000;

    pub fn get(&self, user_key: &str) -> Option<Uuid> {
        self.0.lock().ok()?.get(user_key).copied()
    }

    pub fn remember(&self, user_key: String, account_id: Uuid) {
        if let Ok(mut known) = self.0.lock() {
            if known.len() >= Self::KEPT {
                known.clear();
            }
            known.insert(user_key, account_id);
        }
    }
}

pub struct App {
    pub state: AppState,
    /// The relay's and the workers' tasks: they stop with the application.
    _tasks: runtime::Tasks,
    _lock: DataDirLock,
    /// Whether the service key was generated by this start (SEC-7: said once at startup).
    service_key_generated: bool,
}

impl App {
    /// Opens everything under `config.data_dir` and starts the projector and the workers: fed
    /// from the log itself (the embedded default) or, with `config.nats`, through JetStream
    /// with the relay publishing the log there.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let component = |e: &dyn std::fmt::Display| StartError::Component(e.to_string());
        let log = EventLog::open(
            &config.data_dir.join(LOG_FILE),
            &LogOptions {
                synchronous: config.log.synchronous,
            },
        )
        .map_err(|e| component(&e))?;
        let read_models = config.data_dir.join(READ_MODELS_FILE);
        private_read_models(&read_models)?;
        mend_past_the_head(&config.data_dir, log.head())?;
        let models = ReadModels::open(&read_models).map_err(|e| component(&e))?;
        let check_facts = Arc::new(custode_projections::accounts::FactsCache::default());
        let views = Arc::new(crate::http::Views::default());
        let projector = custode_workers::projector::spawn(
            log.clone(),
            models,
            tokio::runtime::Handle::current(),
            Some(custode_workers::projector::HistoryExpiry {
                clock: clock.clone(),
                retention: config.settings.history.retention(),
            }),
            vec![check_facts.clone(), views.clone()],
        )
        .map_err(|e| component(&e))?;
        let hasher = Arc::new(Argon2Hasher::new(config.argon2).map_err(|e| component(&e))?);
        let settings = Arc::new(config.settings.clone());
        // SEC-7: only a process that delivers holds private delivery keys; a pure API node seals
        // with the public halves the delivering processes publish in the keys directory.
        let delivers = config.run_workers.iter().any(|w| w.delivers());
        let keys_dir = config.data_dir.join(KEYS_DIR);
        let keys = if delivers {
            let keys = DeliveryKeys::open(&keys_dir).map_err(|e| component(&e))?;
            keys.publish(clock.now()).map_err(|e| component(&e))?;
            keys
        } else {
            DeliveryKeys::sealing_only(&keys_dir).map_err(|e| component(&e))?
        };
        let (service_key, service_key_generated) =
            ServiceKey::open(&config.data_dir.join(KEYS_DIR)).map_err(StartError::Component)?;
        let captcha =
            crate::captcha::Captcha::from_config(&config.captcha).map_err(StartError::Component)?;
        let accounts = AccountHandler::new(
            log.clone(),
            HashPool::per_core(config.http.hashing_queue),
            hasher,
            settings,
            clock.clone(),
            keys.clone(),
            service_key,
        );
        let recorder = Recorder::new(accounts.clone());
        let notices = recorder.notices.clone();
        let ctx = WorkerContext {
            data_dir: config.data_dir.clone(),
            keys,
            settings: config.workers.clone(),
            clock: clock.clone(),
            reporter: Reporter::Log(Box::new(recorder.clone())),
        };
        let mut tasks = runtime::Tasks::default();
        let (feed, relayed) = match &config.nats.url {
            None => (Feed::Log(log.clone()), None),
            Some(url) => {
                let js = custode_workers::nats::connect(url)
                    .await
                    .map_err(StartError::Component)?;
                let retention = config.nats.retention();
                let (relayed, relay) = custode_workers::relay::spawn(
                    js.clone(),
                    log.clone(),
                    &config.data_dir,
                    retention,
                )
                .map_err(|e| component(&e))?;
                tasks.push(relay);
                tasks.push(runtime::spawn_outcome_recorder(
                    js.clone(),
                    recorder.clone(),
                    retention,
                ));
                (Feed::JetStream(Box::new(js)), Some(relayed))
            }
        };
        let mut workers = Vec::new();
        for name in &config.run_workers {
            let worker = runtime::spawn_worker(*name, feed.clone(), &ctx, &mut tasks);
            workers.push(worker.map_err(|e| component(&e))?);
        }
        // AU-5: a signed checkpoint of the head every `audit.checkpoint_minutes`.
        let signer = custode_commands::checkpoint::CheckpointSigner::open(&keys_dir)
            .map_err(StartError::Component)?;
        if config.audit.checkpoint_minutes > 0 {
            tasks.push(spawn_checkpoints(
                config.data_dir.clone(),
                signer,
                log.clone(),
                clock.clone(),
                std::time::Duration::from_secs(config.audit.checkpoint_minutes * 60),
            ));
        }
        let max_concurrent_requests = config.http.max_concurrent_requests;
        let state = AppState(Arc::new(AppStateInner {
            read_models: Arc::new(ReadPool::new(config.data_dir.join(READ_MODELS_FILE))),
            config: Arc::new(config),
            access_recorder: custode_commands::access_recorder::AccessRecorder::new(
                accounts.clone(),
            ),
            accounts,
            notices,
            log,
            check_facts,
            views,
            applied: projector.applied(),
            history_applied: projector.history_applied(),
            clock,
            activity: Arc::new(Mutex::new(HashMap::new())),
            user_ids: Arc::default(),
            metrics: Arc::default(),
            workers,
            relayed,
            captcha,
            limiter: Arc::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests)),
            in_flight_by_address: Arc::default(),
            strength_slots: Arc::new(tokio::sync::Semaphore::new(2)),
        }));
        Ok(Self {
            state,
            _tasks: tasks,
            _lock: lock,
            service_key_generated,
        })
    }

    /// Waits until every access record queued behind an answer is in the log: before the
    /// service stops. A disk that cannot take them is waited for [`FLUSH_LIMIT`] at most, so
    /// that a stop is never stuck behind it (the records still held are then lost, loudly).
    pub async fn flush(&self) {
        let flushed = tokio::time::timeout(FLUSH_LIMIT, self.state.access_recorder.flush()).await;
        if flushed.is_err() {
            tracing::error!(
                "access records could not reach the log before the service stopped (its disk takes no writes): those still held are lost"
            );
        }
    }

    /// Logs, once, every default that weakens security or that an operator should know of.
    pub fn log_security_defaults(&self) {
        let config = &self.state.config;
        if config.operator_key.is_none() {
            tracing::warn!("CUSTODE_OPERATOR_KEY is not set: operator endpoints answer 503");
        }
        if config.captcha.verify_url.is_none() {
            tracing::warn!("no captcha verifier configured ([captcha] verify_url and secret): any non-empty captcha token passes at recovery start");
        }
        if self.service_key_generated {
            tracing::warn!(file = %config.data_dir.join(KEYS_DIR).join(custode_commands::service_key::SERVICE_KEY_FILE).display(), "generated a new service key (SEC-7): keep it with the data directory's backups");
        }
        if !config.settings.recovery.security_question {
            tracing::info!(
                "recovery by security question is off (recovery.security_question = false)"
            );
        }
        if config.nats.url.is_none() {
            tracing::info!(
                "no NATS configured: workers run in-process from the log (embedded mode)"
            );
        }
        // Only where this process delivers: a pure API node sends nothing anywhere.
        if config.workers.mail.smtp_url.is_none()
            && config.run_workers.contains(&WorkerName::Mailer)
        {
            tracing::warn!(maildir = %config.data_dir.join("mail/new").display(), "no SMTP relay configured ([mail] smtp_url): mail lands in the local Maildir");
        }
        if config.workers.sms.gateway_url.is_none() && config.run_workers.contains(&WorkerName::Sms)
        {
            tracing::warn!(file = %config.data_dir.join("sms.jsonl").display(), "no SMS gateway configured ([sms] gateway_url): SMS land in the local JSON-lines file");
        }
        let names: Vec<&str> = config.run_workers.iter().map(|w| w.as_str()).collect();
        tracing::info!(workers = ?names, "workers in this process");
        if !config.listen.ip().is_loopback() && config.public_url.starts_with("http://") {
            tracing::warn!(public_url = %config.public_url, "links sent to people use plain http");
        }
    }
}

/// AU-5: appends a signed checkpoint of the log's head to `<data-dir>/checkpoints.jsonl` at
/// every `period` in which the head moved (and once at start, unless the log is empty).
fn spawn_checkpoints(
    data_dir: PathBuf,
    signer: custode_commands::checkpoint::CheckpointSigner,
    log: EventLog,
    clock: Arc<dyn Clock>,
    period: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let signer = Arc::new(signer);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut signed = None;
        loop {
            ticks.tick().await;
            let head = log.head();
            if head == 0 || signed == Some(head) {
                continue;
            }
            let (dir, signer, reader, now) =
                (data_dir.clone(), signer.clone(), log.reader(), clock.now());
            let written = tokio::task::spawn_blocking(move || {
                crate::audit::append_checkpoint(&dir, &signer, &reader, now)
            })
            .await;
            match written {
                Ok(Ok(checkpoint)) => signed = Some(checkpoint.position),
                Ok(Err(error)) => tracing::error!(%error, "cannot write a signed checkpoint"),
                Err(error) => tracing::error!(%error, "the checkpoint task failed"),
            }
        }
    })
}

/// How long a stopping service waits for its access records to reach the log.
pub const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a replay stops (AU-3's point in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Up to and including the event at this position.
    Position(u64),
    /// Up to the last event before the first one that occurred after this time: the log as it
    /// stood then.
    Time(DateTime<Utc>),
}

impl Until {
    /// A position (digits) or an RFC 3339 time.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(position) = text.parse::<u64>() {
            return Some(Until::Position(position));
        }
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Until::Time(t.with_timezone(&Utc)))
    }

    fn admits(&self, event: &custode_domain::RecordedEvent) -> bool {
        match self {
            Until::Position(p) => event.position <= *p,
            Until::Time(t) => event.occurred_at <= *t,
        }
    }
}

/// Read models and workers' checkpoints that stand past the log's head, `head`: they applied
/// events the log no longer holds, because it lost its end (a power cut with `log.synchronous =
/// normal`: the log's last commits were never synced while the read models, written after
/// them, were) or an older copy of it was put back beside newer derived state. New events
/// take those positions again, and would be passed over as applied: missing from the pages,
/// their notices never sent. The read models past the head are folded again from the log
/// (the projector starts them from nothing), the workers' checkpoints go back to the head.
fn mend_past_the_head(data_dir: &Path, head: u64) -> Result<(), StartError> {
    let component = |e: &dyn std::fmt::Display| StartError::Component(e.to_string());
    let models = ReadModels::reset_past(&data_dir.join(READ_MODELS_FILE), head)
        .map_err(|e| component(&e))?;
    for (name, position) in &models {
        tracing::warn!(
            read_model = %name,
            position,
            head,
            "a read model stands past the end of the event log, which lost its last events (a power cut with log.synchronous = normal, or an older copy of the log put back): it is rebuilt from the log"
        );
    }
    let consumers =
        custode_workers::store::rewind_past(data_dir, head).map_err(|e| component(&e))?;
    for (consumer, position) in &consumers {
        tracing::warn!(
            consumer = %consumer,
            position,
            head,
            "a worker's checkpoint stands past the end of the event log, which lost its last events: it goes back to the log's end, so that no new event is passed over"
        );
        if consumer == custode_workers::relay::CONSUMER {
            // JetStream already holds the lost events, and workers run apart have acted on
            // them: they would pass over the new events that take the same positions.
            tracing::error!(
                position,
                head,
                "the relay had published events past the log's end to JetStream: workers run apart (custode worker --nats) stand past it too and would pass over the new events at positions up to that one; stop them, purge the CUSTODE_EVENTS stream of its messages past the log's end and give them new stores"
            );
        }
    }
    Ok(())
}

/// What `custode replay` rebuilds, from what, and where.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only this read model (by its projection's name); every one when `None`.
    pub projection: Option<String>,
    pub until: Option<Until>,
    /// Build into `<into>/read.db` and leave the data dir's read models alone. Reads the log
    /// read-only and takes no lock, so it works beside a running service.
    pub into: Option<PathBuf>,
}

/// The names `--projection` accepts.
pub fn projection_names() -> Vec<&'static str> {
    custode_projections::all()
        .iter()
        .map(|p| p.name())
        .collect()
}

/// AU-3: rebuilds the read models from the log. Without `into` it takes the data dir's lock
/// (refusing one a running service holds) and swaps a fresh file in, or with `projection`
/// rebuilds that read model in place. Returns the last position applied.
pub fn replay(
    data_dir: &Path,
    options: &ReplayOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, StartError> {
    let component = |e: &dyn std::fmt::Display| StartError::Component(e.to_string());
    let projections = match &options.projection {
        None => custode_projections::all(),
        Some(name) => vec![custode_projections::named(name).ok_or_else(|| {
            StartError::Component(format!(
                "no read model is called {name:?}; there are: {}",
                projection_names().join(", ")
            ))
        })?],
    };
    let log_path = data_dir.join(LOG_FILE);
    let log = custode_commands::LogReader::open(&log_path).map_err(|e| component(&e))?;
    let _lock = match &options.into {
        Some(into) => {
            // Read models hold contacts in clear: never inside the data dir (its `keys/`, its
            // mail), whose files are the service's own, nor in another data dir. Checked on
            // the path as it will resolve, before anything is created.
            if let (Some(into), Ok(data_dir)) = (resolved(into), std::fs::canonicalize(data_dir)) {
                if into.starts_with(&data_dir) {
                    return Err(StartError::Component(
                        "--into is inside the data directory: give an empty or a scratch directory elsewhere".into(),
                    ));
                }
            }
            std::fs::create_dir_all(into).map_err(|source| StartError::DataDir {
                path: into.clone(),
                source,
            })?;
            // Again as created, should the folders have changed meanwhile.
            let inside = match (std::fs::canonicalize(into), std::fs::canonicalize(data_dir)) {
                (Ok(into), Ok(data_dir)) => into.starts_with(data_dir),
                _ => false,
            };
            if inside || into.join(LOG_FILE).exists() {
                return Err(StartError::Component(
                    "--into names a data directory (it holds an event log): give an empty or a scratch directory, or leave --into out to rebuild this one's read models".into(),
                ));
            }
            // No service may be using it while its read models are replaced.
            Some(DataDirLock::acquire(into)?)
        }
        None => Some(DataDirLock::acquire(data_dir)?),
    };
    let target = options
        .into
        .as_deref()
        .unwrap_or(data_dir)
        .join(READ_MODELS_FILE);
    let in_place = options.into.is_none() && options.projection.is_some() && target.exists();
    let file = if in_place {
        for projection in &projections {
            ReadModels::reset(&target, projection.name()).map_err(|e| component(&e))?;
        }
        target.clone()
    } else {
        let fresh = target.with_extension("db.rebuild");
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", fresh.display()));
        }
        fresh
    };
    let durability = if in_place {
        custode_projections::Durability::Normal
    } else {
        custode_projections::Durability::Rebuild
    };
    private_read_models(&file)?;
    let mut models =
        ReadModels::open_with(&file, projections, durability).map_err(|e| component(&e))?;
    let head = match options.until {
        Some(Until::Position(p)) => p.min(log.head().map_err(|e| component(&e))?),
        _ => log.head().map_err(|e| component(&e))?,
    };
    let built = fold(&log, &mut models, options.until, head, progress).and_then(|position| {
        models
            .finish()
            .map(|()| position)
            .map_err(|e| component(&e))
    });
    let position = match built {
        Ok(position) => position,
        Err(e) => {
            // A rebuild that failed leaves nothing behind: its file was never put in place.
            if !in_place {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                }
            }
            return Err(e);
        }
    };
    if !in_place {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", target.display()));
        }
        std::fs::rename(&file, &target).map_err(|source| StartError::DataDir {
            path: target,
            source,
        })?;
    }
    Ok(position)
}

/// `path` as it will resolve once created: each part that exists with its links followed, the
/// rest (which holds no link, not existing yet) as written, `..` included; `None` without a
/// working directory to resolve a relative path against.
fn resolved(path: &Path) -> Option<std::path::PathBuf> {
    let mut at = std::path::PathBuf::from("/");
    for part in std::path::absolute(path).ok()?.components() {
        match part {
            std::path::Component::ParentDir => {
                at.pop();
            }
            std::path::Component::Normal(name) => {
                at.push(name);
                if let Ok(real) = std::fs::canonicalize(&at) {
                    at = real;
                }
            }
            _ => {}
        }
    }
    Some(at)
}

/// Makes the read-model file at `path` its owner's alone (see
/// [`custode_commands::sqlite::private_database`]) before it is opened.
fn private_read_models(path: &Path) -> Result<(), StartError> {
    custode_commands::sqlite::private_database(path).map_err(|source| StartError::DataDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Events per read and per read-model transaction in a replay.
const REPLAY_BATCH: usize = 8192;

/// Folds the log into `models` up to `until`: one thread reads and decodes the next batch
/// while this one applies the current.
fn fold(
    log: &custode_commands::LogReader,
    models: &mut ReadModels,
    until: Option<Until>,
    head: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, StartError> {
    let component = |e: &dyn std::fmt::Display| StartError::Component(e.to_string());
    let (batches, received) = std::sync::mpsc::sync_channel(2);
    // Applied batches go back to the reader to be freed: freeing a batch's many small
    // allocations is work the applier need not do.
    let (spent, to_free) = std::sync::mpsc::channel::<Vec<custode_domain::RecordedEvent>>();
    let reader = log.clone();
    // The reader thread also decodes what the read models can decode ahead (see
    // `custode_projections::Prepared`), when the applier has work queued; when the applier is
    // waiting for it, the reader hands the batch over at once and the applier decodes it. The
    // two threads balance their work so, whichever the log's mix makes the busier.
    let preparer = models.preparer();
    let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let taken = queued.clone();
    let read = std::thread::spawn(move || {
        let mut position = 0;
        loop {
            while let Ok(batch) = to_free.try_recv() {
                drop(batch);
            }
            let batch = match reader.read_from(position, REPLAY_BATCH) {
                Ok(batch) => batch,
                Err(e) => {
                    let _ = batches.send(Err(e.to_string()));
                    return;
                }
            };
            let Some(last) = batch.last() else { return };
            position = last.position;
            let full = batch.len() == REPLAY_BATCH;
            let (kept, done) = match until {
                Some(until) => {
                    let kept: Vec<_> = batch.into_iter().take_while(|e| until.admits(e)).collect();
                    let done = kept.len() < REPLAY_BATCH;
                    (kept, done)
                }
                None => (batch, !full),
            };
            if !kept.is_empty() {
                let prepared = if queued.load(std::sync::atomic::Ordering::Acquire) > 0 {
                    preparer.prepare(&kept)
                } else {
                    preparer.nothing(&kept)
                };
                queued.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if batches.send(Ok((kept, prepared))).is_err() {
                    return;
                }
            }
            if done {
                return;
            }
        }
    });
    let mut position = models.checkpoint();
    for batch in received {
        let (batch, prepared) = batch.map_err(StartError::Component)?;
        taken.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        position = models
            .apply_prepared(&batch, prepared)
            .map_err(|e| component(&e))?;
        progress(position, head.max(position));
        let _ = spent.send(batch);
    }
    let _ = read.join();
    Ok(position)
}
