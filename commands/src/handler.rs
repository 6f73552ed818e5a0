//! The one write path: load → decide → append, for every aggregate ([`Decider`]).
//!
//! ```text
//!  execute(id, cmd) ─► take the stream's turn (commands on one stream queue in this process)
//!     loop: load ─► the cached state at version v + the stream's events after v (an indexed read)
//!           decide ─► on the hashing pool when the command hashes (PW-5), else right here
//!           append at version v ─► ok: fold the new events into the cache, answer
//!                                 └► conflict (another writer): drop the cache entry, again
//! ```
//! Hash results are remembered across attempts ([`MemoHasher`]), so a retry costs a read and a
//! `decide`, not another Argon2 run. The cache of folded states keeps a command's cost flat as
//! its stream grows (see ARCHITECTURE.md, "Bounded loads"); it is only an optimisation: a load
//! reads what the log has past the cached version (skipped when the log's writer says it
//! committed nothing to the stream since), so a stale or evicted entry costs a longer read,
//! and an append at a stale version is refused by the log's version check and decided again
//! from a fresh read. Replay and audit never use it.

use crate::clock::Clock;
use crate::hashing::{Argon2Hasher, HashPool, MemoHasher};
use crate::log::{EventLog, LogError, Metadata, NewEvent, StreamAppend};
use crate::service_key::ServiceKey;
use custode_domain::envelope::{decode, encode_versioned};
use custode_domain::{Actor, Ctx, Decider, RecordedEvent, Settings};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use uuid::Uuid;

/// How many times a command is decided before a run of version conflicts is reported: logins
/// to one busy account (a mail client and a browser at once) must not fail on a race.
const ATTEMPTS: u32 = 4;

/// Folded states kept per aggregate; past this the least recently used eighth is dropped.
const CACHED_STATES: usize = 4096;

/// Why a command was not carried out: the aggregate refused it, other writers kept changing
/// the stream, or storage failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError<E> {
    #[error(transparent)]
    Domain(E),
    /// Other commands changed the stream every time this one decided.
    #[error("the stream changed concurrently; try again")]
    Conflict,
    /// SEC-9: the hashing pool's queue is full; nothing was decided.
    #[error("the service is busy; try again shortly")]
    Busy,
    #[error("storage failed: {0}")]
    Store(String),
    /// The log's disk is full or failing; nothing was written.
    #[error("storage cannot be written: {0}")]
    DiskUnavailable(String),
    /// Something the command needs besides the log is not there yet (no delivering process has
    /// published a delivery key to seal a message's secret with); nothing was written.
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
}

impl<E> HandlerError<E> {
    /// The same cause with the refusal turned into another aggregate's.
    pub fn map_domain<F>(self, f: impl FnOnce(E) -> F) -> HandlerError<F> {
        match self {
            HandlerError::Domain(e) => HandlerError::Domain(f(e)),
            HandlerError::Conflict => HandlerError::Conflict,
            HandlerError::Busy => HandlerError::Busy,
            HandlerError::Store(s) => HandlerError::Store(s),
            HandlerError::DiskUnavailable(s) => HandlerError::DiskUnavailable(s),
            HandlerError::Unavailable(s) => HandlerError::Unavailable(s),
        }
    }
}

impl<E: custode_domain::Refusal> From<E> for HandlerError<E> {
    fn from(e: E) -> Self {
        HandlerError::Domain(e)
    }
}

impl<E> From<crate::hashing::PoolError> for HandlerError<E> {
    fn from(e: crate::hashing::PoolError) -> Self {
        match e {
            crate::hashing::PoolError::Busy => HandlerError::Busy,
            crate::hashing::PoolError::Closed => HandlerError::Store(e.to_string()),
        }
    }
}

impl<E> From<LogError> for HandlerError<E> {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Conflict { .. } => HandlerError::Conflict,
            LogError::DiskUnavailable(message) => HandlerError::DiskUnavailable(message),
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

impl Caller {
    /// The service itself (a timer's command), in a correlation of its own.
    pub fn system() -> Self {
        Self {
            actor: Actor::system(),
            correlation_id: Uuid::now_v7(),
        }
    }
}

/// What a command produced: the committed events (the last one's position is what read
/// endpoints wait for) and their typed form.
#[derive(Debug, Clone)]
pub struct Outcome<E> {
    pub recorded: Vec<RecordedEvent>,
    pub events: Vec<E>,
}

impl<E> Outcome<E> {
    pub fn position(&self) -> u64 {
        self.recorded.last().map_or(0, |e| e.position)
    }
}

/// What every handler shares: the log, the hashing pool, the clock, the settings and keys.
#[derive(Clone)]
pub struct Services {
    pub log: EventLog,
    pub pool: HashPool,
    pub hasher: Arc<Argon2Hasher>,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    /// The keyed hash of one-time codes (and of unknown ids).
    pub service_key: ServiceKey,
}

impl Services {
    /// The envelope fields of a command's events.
    pub fn metadata(&self, caller: &Caller, causation_id: Option<Uuid>) -> Metadata {
        Metadata {
            actor: caller.actor.clone(),
            correlation_id: caller.correlation_id,
            causation_id: causation_id.unwrap_or_else(Uuid::now_v7),
            occurred_at: self.clock.now(),
        }
    }
}

/// A decided command not yet appended: for a command that must commit atomically with
/// another aggregate's (opening an account claims its user id in the same transaction).
pub struct Prepared<D: Decider> {
    pub append: StreamAppend,
    pub events: Vec<D::Event>,
    state: D::State,
}

/// The generic handler of aggregate `D`. Cheap to clone; clones share turns and cache.
pub struct Handler<D: Decider> {
    /// Shared: a request clones handlers (and the state holding them) several times.
    services: Arc<Services>,
    turns: Arc<StreamTurns>,
    cache: Arc<StateCache<D::State>>,
}

impl<D: Decider> Clone for Handler<D> {
    fn clone(&self) -> Self {
        Self {
            services: self.services.clone(),
            turns: self.turns.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<D: Decider> Handler<D> {
    pub fn new(services: Services) -> Self {
        Self {
            services: Arc::new(services),
            turns: Arc::new(StreamTurns::default()),
            cache: Arc::new(StateCache::new(CACHED_STATES)),
        }
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The state of stream `id` as of now, and its version.
    pub async fn load(&self, id: &D::Id) -> Result<(D::State, u64), HandlerError<D::Error>> {
        self.load_stream(&D::stream_for(id)).await
    }

    async fn load_stream(&self, stream: &str) -> Result<(D::State, u64), HandlerError<D::Error>> {
        let (mut state, mut version) = self.cache.get(stream).unwrap_or_default();
        if version > 0 && self.services.log.known_version(stream) == Some(version) {
            // The writer committed nothing to the stream since: no read at all.
            return Ok((state, version));
        }
        let newer = self.services.log.read_stream_after(stream, version).await?;
        if newer.is_empty() {
            return Ok((state, version));
        }
        for recorded in &newer {
            let event: D::Event = decode(recorded).map_err(|err| {
                HandlerError::Store(format!("undecodable event {}: {err}", recorded.event_id))
            })?;
            state = D::evolve(state, &event);
            version = recorded.version;
        }
        self.cache.put(stream, version, &state);
        Ok((state, version))
    }

    /// Load, decide, append; again on a version conflict.
    pub async fn execute(
        &self,
        id: &D::Id,
        command: D::Command,
        caller: &Caller,
    ) -> Result<Outcome<D::Event>, HandlerError<D::Error>> {
        self.execute_caused(id, command, caller, None).await
    }

    /// As [`Handler::execute`], with the event that caused the command (a worker's report on
    /// the notice it made for that event) as the envelope's `causation_id`.
    pub async fn execute_caused(
        &self,
        id: &D::Id,
        command: D::Command,
        caller: &Caller,
        causation_id: Option<Uuid>,
    ) -> Result<Outcome<D::Event>, HandlerError<D::Error>> {
        let stream = D::stream_for(id);
        // Commands on one stream take turns in this process; optimistic concurrency still
        // guards against any other writer.
        let turn = self.turns.get(&stream);
        let _turn = turn.lock().await;
        let hasher = Arc::new(MemoHasher::new(self.services.hasher.clone()));
        let mut attempts_left = ATTEMPTS;
        loop {
            attempts_left -= 1;
            let (state, version) = self.load_stream(&stream).await?;
            let (state, decided) = self.decide(state, command.clone(), hasher.clone()).await?;
            let events = decided.map_err(HandlerError::Domain)?;
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
            let meta = self.services.metadata(caller, causation_id);
            match self.services.log.append(vec![append], meta).await {
                Ok(recorded) => {
                    self.remember(&stream, state, &events, &recorded);
                    return Ok(Outcome { recorded, events });
                }
                Err(LogError::Conflict { .. }) if attempts_left > 0 => {
                    self.cache.forget(&stream);
                    continue;
                }
                Err(e) => {
                    self.cache.forget(&stream);
                    return Err(e.into());
                }
            }
        }
    }

    /// Decides `command` without appending: the caller commits [`Prepared::append`] together
    /// with other streams' and then calls [`Handler::committed`]. Nothing retries a conflict
    /// here: an atomic append of several streams has one answer to it (the id is taken).
    pub async fn prepare(
        &self,
        id: &D::Id,
        command: D::Command,
    ) -> Result<Prepared<D>, HandlerError<D::Error>> {
        let stream = D::stream_for(id);
        let (state, version) = self.load_stream(&stream).await?;
        let hasher = Arc::new(MemoHasher::new(self.services.hasher.clone()));
        let (state, decided) = self.decide(state, command, hasher).await?;
        let events = decided.map_err(HandlerError::Domain)?;
        Ok(Prepared {
            append: StreamAppend {
                stream,
                expected_version: version,
                events: to_new_events(&events)?,
            },
            events,
            state,
        })
    }

    /// Records in the cache what a [`Prepared`] command committed as `recorded`.
    pub fn committed(&self, prepared: Prepared<D>, recorded: &[RecordedEvent]) {
        let mine: Vec<RecordedEvent> = recorded
            .iter()
            .filter(|r| r.stream == prepared.append.stream)
            .cloned()
            .collect();
        self.remember(
            &prepared.append.stream,
            prepared.state,
            &prepared.events,
            &mine,
        );
    }

    fn remember(
        &self,
        stream: &str,
        state: D::State,
        events: &[D::Event],
        recorded: &[RecordedEvent],
    ) {
        let Some(version) = recorded.last().map(|r| r.version) else {
            return;
        };
        let state = events.iter().fold(state, D::evolve);
        self.cache.put(stream, version, &state);
    }

    /// Runs `decide` (on the hashing pool when the command hashes) and hands the state back.
    async fn decide(
        &self,
        state: D::State,
        command: D::Command,
        hasher: Arc<MemoHasher>,
    ) -> Result<(D::State, Result<Vec<D::Event>, D::Error>), HandlerError<D::Error>> {
        let now = self.services.clock.now();
        let settings = self.services.settings.clone();
        let codes = self.services.service_key.clone();
        let needs_hashing = D::needs_hashing(&command);
        let run = move || {
            let ctx = Ctx {
                now,
                settings: &settings,
                hasher: hasher.as_ref(),
                codes: &codes,
                totp: &codes,
            };
            let decided = D::decide(&state, &command, &ctx);
            (state, decided)
        };
        if needs_hashing {
            self.services
                .pool
                .run(run)
                .await
                .map_err(HandlerError::from)
        } else {
            Ok(run())
        }
    }
}

/// Typed events as the log stores them, each with its type's current schema version.
pub fn to_new_events<E: serde::Serialize, F>(
    events: &[E],
) -> Result<Vec<NewEvent>, HandlerError<F>> {
    events
        .iter()
        .map(|e| {
            let (event_type, schema_version, payload) =
                encode_versioned(e).map_err(|err| HandlerError::Store(err.to_string()))?;
            Ok(NewEvent {
                event_id: Uuid::now_v7(),
                event_type,
                schema_version,
                payload,
            })
        })
        .collect()
}

/// One async mutex per stream with commands in flight; entries die with their last user.
#[derive(Default)]
struct StreamTurns {
    turns: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl StreamTurns {
    fn get(&self, stream: &str) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut turns) = self.turns.lock() else {
            // A poisoned map only loses the in-process ordering; the log's version check remains.
            return Arc::new(tokio::sync::Mutex::new(()));
        };
        if let Some(turn) = turns.get(stream).and_then(Weak::upgrade) {
            return turn;
        }
        if turns.len() >= 1024 {
            turns.retain(|_, turn| turn.strong_count() > 0);
        }
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        turns.insert(stream.to_string(), Arc::downgrade(&turn));
        turn
    }
}

/// Folded states by stream, with the version they were folded to; least recently used first
/// out. A bounded map, not a source of truth.
struct StateCache<S> {
    capacity: usize,
    entries: Mutex<(u64, HashMap<String, CacheEntry<S>>)>,
}

struct CacheEntry<S> {
    version: u64,
    state: S,
    used: u64,
}

impl<S: Clone> StateCache<S> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new((0, HashMap::new())),
        }
    }

    fn get(&self, stream: &str) -> Option<(S, u64)> {
        let mut guard = self.entries.lock().ok()?;
        let (clock, entries) = &mut *guard;
        *clock += 1;
        let entry = entries.get_mut(stream)?;
        entry.used = *clock;
        Some((entry.state.clone(), entry.version))
    }

    fn put(&self, stream: &str, version: u64, state: &S) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        let (clock, entries) = &mut *guard;
        *clock += 1;
        if entries.len() >= self.capacity && !entries.contains_key(stream) {
            let mut ages: Vec<u64> = entries.values().map(|e| e.used).collect();
            ages.sort_unstable();
            let cutoff = ages.get(self.capacity / 8).copied().unwrap_or(u64::MAX);
            entries.retain(|_, e| e.used > cutoff);
        }
        entries.insert(
            stream.to_string(),
            CacheEntry {
                version,
                state: state.clone(),
                used: *clock,
            },
        );
    }

    fn forget(&self, stream: &str) {
        if let Ok(mut guard) = self.entries.lock() {
            guard.1.remove(stream);
        }
    }
}
