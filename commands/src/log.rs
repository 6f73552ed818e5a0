//! The event log: one SQLite file, append-only, the only source of truth.
//!
//! One writer thread owns the connection that appends. Commands reach it over a channel; the
//! writer opens a transaction, takes every request waiting (checking each one's expected
//! versions before it writes, so a conflict spoils no neighbour), and commits them together
//! (group commit) without waiting for the disk; a syncer thread then syncs the write-ahead file
//! once for every group committed since its last sync, and only then answers their callers and
//! moves the head, while the writer already writes the next groups. When nothing waits behind a
//! group and the syncer is idle, the writer syncs and answers it itself: there is no next group
//! to write meanwhile, and the hand-off would cost a thread's wake-up. A group waits a moment
//! (`RETURN_WAIT`) for the callers the last sync answered, so a closed loop of callers keeps to
//! one sync a round. Positions are assigned by
//! the writer, so they are gap-free; every event's `hash` chains to the previous one (SHA-256
//! over the previous hash and the event's canonical bytes, which the caller prepares but for
//! the position and version). Readers use a pool of read-only connections, and tailers wait on
//! a `watch` of the durable head instead of polling, and never read past it.

use crate::canonical::to_canonical_string;
use crate::sqlite::{open_writer, ReadPool};
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use custode_domain::secret::{may_hold_verification_data, remove_verification_data};
use custode_domain::{Actor, ActorKind, RecordedEvent};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

/// The hash the first event chains to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Most requests one transaction takes before it commits.
const MAX_GROUP: usize = 1024;
const QUEUE_DEPTH: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync on every commit: a committed command survives a power cut.
    #[default]
    Full,
    /// fsync at checkpoints only: faster, may lose the last commits on power loss.
    Normal,
}

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub synchronous: Synchronous,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogError {
    #[error("stream {stream} is at version {actual}, not the expected {expected}")]
    Conflict {
        stream: String,
        expected: u64,
        actual: u64,
    },
    #[error("the event log failed: {0}")]
    Store(String),
    /// The disk is full or failing: nothing was written, and a retry may succeed once it is
    /// mended (SQLite's `SQLITE_FULL`, `SQLITE_IOERR`).
    #[error("the event log cannot write to its disk: {0}")]
    DiskUnavailable(String),
    #[error("the event log is closed")]
    Closed,
}

impl From<rusqlite::Error> for LogError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DiskFull, SystemIoFailure};
        match e.sqlite_error_code() {
            Some(DiskFull | SystemIoFailure) => LogError::DiskUnavailable(e.to_string()),
            _ => LogError::Store(e.to_string()),
        }
    }
}

/// An event about to be appended: everything but what the log assigns.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: serde_json::Value,
}

/// The `expected_version` of an append that goes at the stream's end whatever its version: for
/// facts that decide nothing (AH-3's access records), which no other writer can invalidate.
pub const ANY_VERSION: u64 = u64::MAX;

/// Events for one stream, to be appended only if the stream is at `expected_version`
/// ([`ANY_VERSION`]: at its end).
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream: String,
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
}

/// The envelope fields shared by every event of one command.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub occurred_at: DateTime<Utc>,
}

/// The commit of a job queued by [`EventLog::enqueue_ready_soon`].
pub struct Committed(Option<oneshot::Receiver<Result<Vec<RecordedEvent>, LogError>>>);

impl Committed {
    /// Waits until the job is committed and on disk (or has failed).
    pub async fn wait(self) -> Result<(), LogError> {
        match self.0 {
            None => Ok(()),
            Some(answer) => answer.await.map_err(|_| LogError::Closed)?.map(drop),
        }
    }
}

/// See [`EventLog::ready`].
pub struct ReadyAppend {
    append: StreamAppend,
    meta: Metadata,
    described: Described,
    prepared: Vec<Prepared>,
}

struct Job {
    appends: Vec<StreamAppend>,
    /// Each event's canonical envelope but for its position and version, in order across
    /// `appends`: made by the caller, so the writer (which serialises every commit) spends
    /// none of its time on it.
    prepared: Vec<Prepared>,
    /// One for every append, or one that every append shares.
    metas: Vec<Metadata>,
    /// `metas` as stored, made by the caller.
    described: Vec<Described>,
    reply: oneshot::Sender<Result<Vec<RecordedEvent>, LogError>>,
    /// A batch of ready appends nobody waits on ([`EventLog::enqueue_ready_soon`]): it may wait
    /// up to [`SOON_LINGER`] for company before its commit, and its events move into [`Recent`]
    /// uncopied rather than going back to its caller.
    batch: bool,
}

impl Job {
    fn events(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }

    /// Puts back what [`write_events`] moved out of this job's events into `recorded` (its
    /// first events, in order), so that the job can be written again.
    fn restore(&mut self, recorded: Vec<RecordedEvent>) {
        let mut back = recorded.into_iter();
        for event in self.appends.iter_mut().flat_map(|a| a.events.iter_mut()) {
            let Some(r) = back.next() else { return };
            event.event_type = r.event_type;
            event.payload = r.payload;
        }
    }
}

/// How long a group made only of batches of ready appends waits for more jobs before it
/// commits: many such appends then share one fsync, the costliest part of a commit.
pub const SOON_LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// How often a lingering writer looks for more jobs: the most a plain append arriving
/// meanwhile waits.
const LINGER_SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// A handle on the log; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    versions: Arc<StreamVersions>,
    recent: Arc<Recent>,
    head: watch::Receiver<u64>,
    reader: LogReader,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    stream         TEXT NOT NULL,
    version        INTEGER NOT NULL,
    type           TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at    TEXT NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT,
    correlation_id TEXT NOT NULL,
    causation_id   TEXT NOT NULL,
    payload        TEXT NOT NULL,
    hash           TEXT NOT NULL,
    UNIQUE (stream, version)
);
CREATE TRIGGER IF NOT EXISTS events_are_immutable BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_are_never_deleted BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
";

/// WAL frames (pages) after which a commit checkpoints the WAL into the database file; SQLite's
/// default is 1,000. Every commit rewrites the same hot pages (the table's last leaf, the
/// indexes' leaves), and a checkpoint copies each page once however often the WAL holds it: four
/// times fewer checkpoints on the writer's path copy far fewer pages in all. Measured with
/// `cargo bench --bench log_append`: 0.72× bare rusqlite at 8 writers and 0.76× at 64 (medians
/// of five runs), against 0.67× and 0.67× at 1,000; 250 was worse, and none at all (the WAL
/// growing for ever) far worse. Under 4,096, so the WAL's index keeps one hash table and a
/// reader's page lookup stays one probe. The WAL file grows to about 16 MiB and is reused.
const WAL_AUTOCHECKPOINT: i64 = 4_000;

/// The most events a read sizes its vector for at once.
const READ_CAPACITY: usize = 16_384;

impl EventLog {
    /// Opens (creating if needed) the log at `path` and starts its writer thread.
    pub fn open(path: &Path, options: &LogOptions) -> Result<Self, LogError> {
        // SQLite never waits on the disk at a commit: with `Synchronous::Full` the syncer
        // thread makes each commit durable before its callers hear of it (see `Syncer`).
        let conn = open_writer(path, "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
        let tip = Tip::load(&conn)?;
        let wal = match options.synchronous {
            Synchronous::Full => {
                let wal = open_wal(&conn)?;
                // What an earlier process committed and never synced (it was killed between
                // its commit and its sync) is still in the page cache: made durable before any
                // reader or caller of this one can see it.
                wal.sync_data().map_err(|e| {
                    LogError::Store(format!("cannot sync the log's write-ahead file: {e}"))
                })?;
                Some(wal)
            }
            Synchronous::Normal => None,
        };
        let (head_tx, head_rx) = watch::channel(tip.position);
        let (jobs_tx, jobs_rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let versions = Arc::new(StreamVersions::default());
        let recent = Arc::new(Recent::default());
        let (durable_tx, durable_rx) = std::sync::mpsc::channel();
        let syncer = Arc::new(Syncer {
            wal,
            stats: stats.clone(),
            head: head_tx,
            recent: recent.clone(),
            unsynced: std::sync::atomic::AtomicUsize::new(0),
            returning: std::sync::atomic::AtomicUsize::new(0),
        });
        let writer = Writer {
            conn,
            tip,
            durable: durable_tx,
            syncer: syncer.clone(),
            cut_groups: options.synchronous == Synchronous::Full,
            stats: stats.clone(),
            versions: versions.clone(),
            retry: std::collections::VecDeque::new(),
        };
        std::thread::Builder::new()
            .name("custode-log-syncer".into())
            .spawn(move || syncer.run(&durable_rx))
            .map_err(|e| LogError::Store(format!("cannot start the log syncer: {e}")))?;
        std::thread::Builder::new()
            .name("custode-log-writer".into())
            .spawn(move || writer.run(jobs_rx))
            .map_err(|e| LogError::Store(format!("cannot start the log writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: jobs_tx,
                stats,
                versions,
                recent,
                head: head_rx,
                reader: LogReader {
                    readers: Arc::new(ReadPool::new(path)),
                },
                path: path.to_path_buf(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends all `appends` atomically, each stream only at its expected version.
    pub async fn append(
        &self,
        appends: Vec<StreamAppend>,
        meta: Metadata,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let described = Described::of(&meta);
        let prepared = appends
            .iter()
            .flat_map(|a| {
                a.events
                    .iter()
                    .map(|e| Prepared::of(&a.stream, e, &meta, &described))
            })
            .collect();
        let answer = self
            .enqueue(appends, prepared, vec![meta], vec![described], false)
            .await?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// An append made ready for [`EventLog::append_ready_soon`]: its payloads put in canonical
    /// text now, by its caller, rather than when the batch it joins is sent. Its stream must be
    /// appended at its end (`ANY_VERSION`): a batch is written whole or not at all.
    pub fn ready(append: StreamAppend, meta: Metadata) -> ReadyAppend {
        let described = Described::of(&meta);
        let prepared = append
            .events
            .iter()
            .map(|e| Prepared::of(&append.stream, e, &meta, &described))
            .collect();
        ReadyAppend {
            append,
            meta,
            described,
            prepared,
        }
    }

    /// As [`EventLog::append`], for what nobody is waiting on (AP-7's access records, written
    /// behind their answers, gathered by the recorder from many checks), each append with its
    /// own metadata: one job for all of them, so the writer answers once rather than once a
    /// record. The group it starts may wait up to [`SOON_LINGER`] for more before it commits,
    /// so that a stream of them costs one fsync per linger (a plain append that arrives
    /// meanwhile ends the wait at once). Returns once they are committed, without the recorded
    /// events (which the writer hands to the log's tailing readers without copying them).
    pub async fn append_ready_soon(&self, ready: Vec<ReadyAppend>) -> Result<(), LogError> {
        self.enqueue_ready_soon(ready).await?.wait().await
    }

    /// As [`EventLog::append_ready_soon`], returning once the job is in the writer's queue
    /// (so jobs queued one after another are written in that order) with what tells when it
    /// is committed: a caller may queue the next batch before this one's fsync.
    pub async fn enqueue_ready_soon(&self, ready: Vec<ReadyAppend>) -> Result<Committed, LogError> {
        if ready.is_empty() {
            return Ok(Committed(None));
        }
        // One job is appended whole or not at all: an append that could meet a version
        // conflict would take the others down with it.
        if ready
            .iter()
            .any(|r| r.append.expected_version != ANY_VERSION)
        {
            return Err(LogError::Store(
                "ready appends go at their streams' ends (ANY_VERSION)".into(),
            ));
        }
        let mut appends = Vec::with_capacity(ready.len());
        let mut metas = Vec::with_capacity(ready.len());
        let mut described = Vec::with_capacity(ready.len());
        let mut prepared = Vec::with_capacity(ready.len());
        for one in ready {
            appends.push(one.append);
            metas.push(one.meta);
            described.push(one.described);
            prepared.extend(one.prepared);
        }
        let answer = self
            .enqueue(appends, prepared, metas, described, true)
            .await?;
        Ok(Committed(Some(answer)))
    }

    /// Puts a job in the writer's queue; its answer comes on the receiver.
    async fn enqueue(
        &self,
        appends: Vec<StreamAppend>,
        prepared: Vec<Prepared>,
        metas: Vec<Metadata>,
        described: Vec<Described>,
        batch: bool,
    ) -> Result<oneshot::Receiver<Result<Vec<RecordedEvent>, LogError>>, LogError> {
        if metas.is_empty() || (metas.len() != 1 && metas.len() != appends.len()) {
            return Err(LogError::Store(
                "an append needs its metadata: one for all, or one each".into(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .send(Job {
                appends,
                prepared,
                metas,
                described,
                reply,
                batch,
            })
            .await
            .map_err(|_| LogError::Closed)?;
        Ok(answer)
    }

    /// Where the writer's time went: its commits, the syncs of the write-ahead file.
    pub fn times(&self) -> LogTimes {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.inner.stats;
        LogTimes {
            commits: stats.commits.load(Relaxed),
            commands: stats.jobs.load(Relaxed),
            syncs: stats.syncs.load(Relaxed),
            sync: std::time::Duration::from_nanos(stats.sync_nanos.load(Relaxed)),
            commit: std::time::Duration::from_nanos(stats.commit_nanos.load(Relaxed)),
        }
    }

    /// Commits and commands so far: commands per commit is how well group commit works.
    pub fn stats(&self) -> (u64, u64) {
        let times = self.times();
        (times.commits, times.commands)
    }

    /// The version of `stream` as this process last committed it, when it remembers: a
    /// handler whose cached state stands at that version need not read the stream at all.
    /// The writer, the log's only one, checks appends against the same memory (or the file,
    /// for a stream it has not written since it opened or last forgot).
    pub fn known_version(&self, stream: &str) -> Option<u64> {
        self.inner.versions.get(stream)
    }

    /// The position of the last event on disk (0 for an empty log): committed and synced
    /// (see `Syncer`). The file may already hold a few more, whose sync is under way.
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// A receiver of [`EventLog::head`], which changes whenever new events are on disk.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    /// Every event of `stream`, in version order.
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<RecordedEvent>, LogError> {
        self.read_stream_after(stream, 0).await
    }

    /// The events of `stream` past `version`, in version order: what a handler whose cached
    /// state stands at `version` folds. An indexed read (the `(stream, version)` key), so its
    /// cost does not grow with the stream's length.
    pub async fn read_stream_after(
        &self,
        stream: &str,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let this = self.clone();
        let stream = stream.to_string();
        let events = tokio::task::spawn_blocking(move || {
            this.inner.reader.read_stream_after(&stream, version)
        })
        .await
        .map_err(|e| LogError::Store(e.to_string()))??;
        self.once_durable(events).await
    }

    /// `events`, once the last of them is on disk: a read of the file may meet a commit whose
    /// sync is still under way (a fraction of a millisecond), and nothing is decided or
    /// answered on an event a power cut could still take back.
    async fn once_durable(
        &self,
        events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let Some(last) = events.iter().map(|e| e.position).max() else {
            return Ok(events);
        };
        if last > self.head() {
            self.subscribe()
                .wait_for(|head| *head >= last)
                .await
                .map_err(|_| LogError::Closed)?;
        }
        Ok(events)
    }

    /// The last `limit` events of `stream`, newest first (an indexed read on `(stream,
    /// version)`, whatever the stream's length).
    pub async fn read_stream_tail(
        &self,
        stream: &str,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.read_stream_tail_before(stream, i64::MAX.unsigned_abs(), limit)
            .await
    }

    /// As [`EventLog::read_stream_tail`], from before `version` on: the next page back.
    pub async fn read_stream_tail_before(
        &self,
        stream: &str,
        version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let this = self.clone();
        let stream = stream.to_string();
        let limit = i64::try_from(limit).map_err(|e| LogError::Store(e.to_string()))?;
        let version = i64::try_from(version).map_err(|e| LogError::Store(e.to_string()))?;
        let events = tokio::task::spawn_blocking(move || {
            this.inner.reader.with(|conn| {
                query_events(
                    conn,
                    &format!(
                        "{SELECT} WHERE stream = ?1 AND version < ?2 ORDER BY version DESC LIMIT ?3"
                    ),
                    params![stream, version, limit],
                )
            })
        })
        .await
        .map_err(|e| LogError::Store(e.to_string()))??;
        self.once_durable(events).await
    }

    fn stored_from(&self, position: u64, limit: usize) -> Result<Vec<Stored>, LogError> {
        self.inner.reader.stored_from(position, limit)
    }

    /// A read-only view of this log (what `audit` reads through).
    pub fn reader(&self) -> LogReader {
        self.inner.reader.clone()
    }

    /// Up to `limit` events after `position`, in order. A reader that keeps up with the log
    /// (the projector, the workers beside it) gets them from the writer's memory of its latest
    /// commits, the same events it would read back; one that is behind reads the file.
    pub fn read_from_blocking(
        &self,
        position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        if let Some(events) = self.inner.recent.after(position, limit) {
            return Ok(events);
        }
        match self.durable_limit(position, limit) {
            0 => Ok(Vec::new()),
            limit => self.inner.reader.read_from(position, limit),
        }
    }

    /// `limit`, cut so that a read after `position` stops at the head: the log's tail is read
    /// only as far as its disk has confirmed (see `Syncer`), so no read model, relay or worker
    /// acts on an event a power cut could still take back.
    fn durable_limit(&self, position: u64, limit: usize) -> usize {
        usize::try_from(self.head().saturating_sub(position))
            .unwrap_or(usize::MAX)
            .min(limit)
    }

    /// Up to `limit` events after `position` as the relay sends them: each one's canonical
    /// envelope (the bytes its hash covers) with the hash added, straight from the stored text.
    /// A reader parses it as a [`RecordedEvent`]. Only an event whose payload holds
    /// verification data is parsed and re-encoded, with that data removed (SEC-9, see
    /// `wire_payload`); its `hash` is still the chain hash of the event as stored.
    pub fn read_wire_from_blocking(
        &self,
        position: u64,
        limit: usize,
    ) -> Result<Vec<WireEvent>, LogError> {
        let limit = self.durable_limit(position, limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.stored_from(position, limit)?
            .into_iter()
            .map(Stored::into_wire)
            .collect()
    }

    pub async fn read_wire_from(
        &self,
        position: u64,
        limit: usize,
    ) -> Result<Vec<WireEvent>, LogError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_wire_from_blocking(position, limit))
            .await
            .map_err(|e| LogError::Store(e.to_string()))?
    }

    pub async fn read_from(
        &self,
        position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        // Kept in memory: no blocking thread needed.
        if let Some(events) = self.inner.recent.after(position, limit) {
            return Ok(events);
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_from_blocking(position, limit))
            .await
            .map_err(|e| LogError::Store(e.to_string()))?
    }

    /// For a consumer that does something with only some events (a notifier with none of the
    /// access records, say), when the events after `position` are still in memory: of up to
    /// `limit` of them, the ones `wanted` picks (the others are not even copied), with the
    /// position of the last one looked at, the consumer's next checkpoint. `None`: read them
    /// with [`EventLog::read_from`].
    pub fn recent_wanted(
        &self,
        position: u64,
        limit: usize,
        wanted: &dyn Fn(&RecordedEvent) -> bool,
    ) -> Option<(Vec<RecordedEvent>, u64)> {
        self.inner.recent.after_wanted(position, limit, wanted)
    }

    /// AU-1: see [`LogReader::verify_chain`].
    pub fn verify_chain_blocking(&self) -> Result<ChainReport, LogError> {
        self.inner.reader.verify_chain()
    }
}

/// Read-only access to a log file, through read-only connections: what `custode audit` uses,
/// beside a running service and without its data-dir lock (AU-5). Cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    readers: Arc<ReadPool>,
}

impl LogReader {
    /// Makes every transaction committed in the log so far durable, whichever process
    /// committed it (see [`crate::sqlite::sync_wal`]): for what reads the log beside its writer
    /// and hands on what it read as final (a signed checkpoint), so that it never names an
    /// event whose sync the writer has not yet made.
    pub fn sync(&self) -> Result<(), LogError> {
        self.with(|conn| {
            crate::sqlite::sync_wal(conn).map_err(|e| {
                LogError::Store(format!("cannot sync the log's write-ahead file: {e}"))
            })
        })
    }

    /// Opens the log at `path` for reading only; it must exist and hold the events table.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        if !path.exists() {
            return Err(LogError::Store(format!(
                "no event log at {}",
                path.display()
            )));
        }
        let reader = Self {
            readers: Arc::new(ReadPool::new(path)),
        };
        reader
            .readers
            .with(|conn| {
                conn.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'events'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map_err(LogError::from)
            .and_then(|n| {
                if n == 1 {
                    Ok(())
                } else {
                    Err(LogError::Store(format!(
                        "{} is not a custode event log",
                        path.display()
                    )))
                }
            })?;
        Ok(reader)
    }

    /// The position of the last event in the file (0 for an empty log).
    pub fn head(&self) -> Result<u64, LogError> {
        Ok(self.readers.with(|conn| {
            conn.query_row("SELECT coalesce(max(position), 0) FROM events", [], |r| {
                r.get(0)
            })
        })?)
    }

    /// The stored hash of the event at `position`, with its id, if the log holds one.
    pub fn hash_at(&self, position: u64) -> Result<Option<(String, String)>, LogError> {
        let position = i64::try_from(position).map_err(|e| LogError::Store(e.to_string()))?;
        Ok(self.readers.with(|conn| {
            conn.query_row(
                "SELECT hash, event_id FROM events WHERE position = ?1",
                params![position],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?)
    }

    /// The events of `stream` past `version`, in version order (an indexed read).
    pub fn read_stream_after(
        &self,
        stream: &str,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let version = i64::try_from(version).map_err(|e| LogError::Store(e.to_string()))?;
        self.with(|conn| {
            query_events(
                conn,
                &format!("{SELECT} WHERE stream = ?1 AND version > ?2 ORDER BY version"),
                params![stream, version],
            )
        })
    }

    /// Runs `f` on a pooled read-only connection.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, LogError>) -> Result<T, LogError> {
        let mut result = None;
        self.readers.with(|conn| {
            result = Some(f(conn));
            Ok(())
        })?;
        result.unwrap_or_else(|| Err(LogError::Store("no connection".into())))
    }

    /// The positions of `stream`'s events at or after `from` (an indexed read).
    pub fn positions_of(&self, stream: &str, from: u64) -> Result<Vec<u64>, LogError> {
        let from = i64::try_from(from).map_err(|e| LogError::Store(e.to_string()))?;
        Ok(self.readers.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT position FROM events WHERE stream = ?1 AND position >= ?2 ORDER BY version",
            )?;
            let rows = stmt.query_map(params![stream, from], |r| r.get::<_, u64>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?)
    }

    /// The events at `positions` (sorted), in order.
    pub fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>, LogError> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let list = positions
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.with(|conn| {
            query_events(
                conn,
                &format!("{SELECT} WHERE position IN ({list}) ORDER BY position"),
                [],
            )
        })
    }

    /// Hands every event after `position` to `each`, in order, a batch at a time.
    pub fn scan_from<E: From<LogError>>(
        &self,
        position: u64,
        mut each: impl FnMut(&[RecordedEvent]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut position = position;
        loop {
            let batch = self.read_from(position, 4096)?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            position = last.position;
            each(&batch)?;
        }
    }

    /// Up to `limit` events after `position`, in order.
    pub fn read_from(&self, position: u64, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let position = i64::try_from(position).map_err(|e| LogError::Store(e.to_string()))?;
        let limit = i64::try_from(limit).map_err(|e| LogError::Store(e.to_string()))?;
        // Sized for the batch at once: a replay reads thousands of events a batch, and a
        // vector grown step by step copies them again at each step.
        let capacity = usize::try_from(limit).unwrap_or(0).min(READ_CAPACITY);
        self.with(|conn| {
            query_events_sized(
                conn,
                &format!("{SELECT} WHERE position > ?1 ORDER BY position LIMIT ?2"),
                params![position, limit],
                capacity,
            )
        })
    }

    /// Up to `limit` rows after `position`, in order, as stored.
    fn stored_from(&self, position: u64, limit: usize) -> Result<Vec<Stored>, LogError> {
        let position = i64::try_from(position).map_err(|e| LogError::Store(e.to_string()))?;
        let limit = i64::try_from(limit).map_err(|e| LogError::Store(e.to_string()))?;
        Ok(self.readers.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{SELECT} WHERE position > ?1 ORDER BY position LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![position, limit], row_to_stored)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?)
    }

    /// Writes every event as stored, one JSON line each (its canonical envelope with its hash):
    /// a log fixture that [`load`] turns back into the same log. Returns how many.
    pub fn dump(&self, out: &mut dyn std::io::Write) -> Result<u64, LogError> {
        let mut position = 0;
        let mut written = 0;
        loop {
            let batch = self.stored_from(position, 4096)?;
            let Some(last) = batch.last() else { break };
            position = last.position;
            for stored in batch {
                let mut line = stored.canonical();
                line.pop();
                line.push_str(",\"hash\":");
                line.push_str(&json_string(&stored.hash));
                line.push_str("}\n");
                out.write_all(line.as_bytes())
                    .map_err(|e| LogError::Store(format!("cannot write the dump: {e}")))?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// AU-1: walks the chain from the start and returns the position of the first event whose
    /// hash does not match its content and its predecessor, or `None` when all match.
    pub fn verify_chain(&self) -> Result<ChainReport, LogError> {
        let mut report = ChainReport::default();
        let mut prev = GENESIS_HASH.to_string();
        let mut expected_position = 1u64;
        self.readers.with(|conn| {
            let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY position"))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let stored = match row_to_stored(row) {
                    Ok(stored) => stored,
                    // A column of another type than the writer stores (a payload turned into a
                    // blob, a null): the event is named like any other mismatch.
                    Err(error) => {
                        let position: u64 = row.get(0)?;
                        let event_id = match row.get_ref(1)? {
                            rusqlite::types::ValueRef::Text(t) => {
                                String::from_utf8_lossy(t).into_owned()
                            }
                            _ => "?".into(),
                        };
                        report.first_mismatch = Some(Mismatch {
                            position,
                            event_id,
                            reason: format!("it is not stored as the log writes events: {error}"),
                        });
                        return Ok(());
                    }
                };
                let computed = chain_hash(&prev, &stored.canonical());
                if stored.position != expected_position || computed != stored.hash {
                    report.first_mismatch = Some(Mismatch {
                        position: stored.position,
                        event_id: stored.event_id.clone(),
                        reason: if stored.position != expected_position {
                            format!(
                                "position {} follows {}",
                                stored.position,
                                expected_position - 1
                            )
                        } else {
                            "the stored hash does not match the event and its predecessor".into()
                        },
                    });
                    return Ok(());
                }
                prev = stored.hash;
                report.checked += 1;
                expected_position += 1;
            }
            Ok(())
        })?;
        Ok(report)
    }
}

/// Creates the log at `path` from `lines` (a [`LogReader::dump`]), checking every event's hash
/// as it goes: a fixture that was edited is refused, naming the line. The file must not exist.
/// Returns the head. Nothing is left behind when it fails.
pub fn load(path: &Path, lines: impl std::io::BufRead) -> Result<u64, LogError> {
    if path.exists() {
        return Err(LogError::Store(format!(
            "{} already exists: a fixture loads into a new data directory",
            path.display()
        )));
    }
    let loaded = load_new(path, lines);
    if loaded.is_err() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    loaded
}

/// The longest fixture line `load` reads (an event is far smaller: the API takes 64 KiB).
const MAX_FIXTURE_LINE: u64 = 1 << 20;

fn load_new(path: &Path, mut lines: impl std::io::BufRead) -> Result<u64, LogError> {
    let mut conn = open_writer(path, "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction()?;
    let mut prev = GENESIS_HASH.to_string();
    let mut head = 0u64;
    {
        let mut insert = tx.prepare(
            "INSERT INTO events (position, event_id, stream, version, type, schema_version, occurred_at, \
             actor_kind, actor_id, correlation_id, causation_id, payload, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut n = 0usize;
        loop {
            n += 1;
            let bad = |what: &str| LogError::Store(format!("fixture line {n}: {what}"));
            let mut raw = Vec::new();
            use std::io::{BufRead as _, Read as _};
            let read = (&mut lines)
                .take(MAX_FIXTURE_LINE + 1)
                .read_until(b'\n', &mut raw)
                .map_err(|e| bad(&e.to_string()))?;
            if read == 0 {
                break;
            }
            if raw.len() as u64 > MAX_FIXTURE_LINE {
                return Err(bad("longer than 1 MiB"));
            }
            let line = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| bad(&e.to_string()))?;
            let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
            let number = |key: &str| value.get(key).and_then(serde_json::Value::as_u64);
            let actor = value.get("actor");
            let stored = Stored {
                position: number("position").ok_or_else(|| bad("no position"))?,
                event_id: text("event_id").ok_or_else(|| bad("no event_id"))?,
                stream: text("stream").ok_or_else(|| bad("no stream"))?,
                version: number("version").ok_or_else(|| bad("no version"))?,
                event_type: text("type").ok_or_else(|| bad("no type"))?,
                schema_version: number("schema_version")
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| bad("no schema_version"))?,
                occurred_at: text("occurred_at").ok_or_else(|| bad("no occurred_at"))?,
                actor_kind: actor
                    .and_then(|a| a.get("kind"))
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| bad("no actor"))?
                    .to_string(),
                actor_id: actor
                    .and_then(|a| a.get("id"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                correlation_id: text("correlation_id").ok_or_else(|| bad("no correlation_id"))?,
                causation_id: text("causation_id").ok_or_else(|| bad("no causation_id"))?,
                payload: to_canonical_string(
                    value.get("payload").ok_or_else(|| bad("no payload"))?,
                ),
                hash: text("hash").ok_or_else(|| bad("no hash"))?,
            };
            if stored.position != head + 1 {
                return Err(bad(&format!("position {} follows {head}", stored.position)));
            }
            // Readable as the log's readers read it, or refused now rather than stalling them.
            if Uuid::parse_str(&stored.event_id).is_err()
                || Uuid::parse_str(&stored.correlation_id).is_err()
                || Uuid::parse_str(&stored.causation_id).is_err()
                || DateTime::parse_from_rfc3339(&stored.occurred_at).is_err()
                || ActorKind::parse(&stored.actor_kind).is_none()
                || !value
                    .get("payload")
                    .is_some_and(serde_json::Value::is_object)
                || stored.stream.is_empty()
                || stored.event_type.is_empty()
            {
                return Err(bad(
                    "an id, the time, the actor or the payload cannot be read",
                ));
            }
            if chain_hash(&prev, &stored.canonical()) != stored.hash {
                return Err(bad(&format!(
                    "event {} at position {}: its hash does not match the event and its predecessor",
                    stored.event_id, stored.position
                )));
            }
            insert.execute(params![
                stored.position,
                stored.event_id,
                stored.stream,
                stored.version,
                stored.event_type,
                stored.schema_version,
                stored.occurred_at,
                stored.actor_kind,
                stored.actor_id,
                stored.correlation_id,
                stored.causation_id,
                stored.payload,
                stored.hash,
            ])?;
            prev = stored.hash;
            head = stored.position;
        }
    }
    tx.commit()?;
    Ok(head)
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ChainReport {
    pub checked: u64,
    pub first_mismatch: Option<Mismatch>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub position: u64,
    pub event_id: String,
    pub reason: String,
}

const SELECT: &str =
    "SELECT position, event_id, stream, version, type, schema_version, occurred_at, \
     actor_kind, actor_id, correlation_id, causation_id, payload, hash FROM events";

/// An event ready for the wire (see [`EventLog::read_wire_from_blocking`]).
#[derive(Debug, Clone)]
pub struct WireEvent {
    pub position: u64,
    pub event_id: String,
    pub stream: String,
    pub event_type: String,
    /// The canonical envelope with its hash: JSON of a [`RecordedEvent`].
    pub json: Vec<u8>,
}

impl WireEvent {
    /// The part of the stream name before the first `-` (as [`RecordedEvent::category`]).
    pub fn category(&self) -> &str {
        self.stream.split('-').next().unwrap_or(&self.stream)
    }
}

/// A row as stored: strings exactly as written, so the chain is checked over the stored bytes.
struct Stored {
    position: u64,
    event_id: String,
    stream: String,
    version: u64,
    event_type: String,
    schema_version: u32,
    occurred_at: String,
    actor_kind: String,
    actor_id: Option<String>,
    correlation_id: String,
    causation_id: String,
    payload: String,
    hash: String,
}

fn row_to_stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        position: row.get(0)?,
        event_id: row.get(1)?,
        stream: row.get(2)?,
        version: row.get(3)?,
        event_type: row.get(4)?,
        schema_version: row.get(5)?,
        occurred_at: row.get(6)?,
        actor_kind: row.get(7)?,
        actor_id: row.get(8)?,
        correlation_id: row.get(9)?,
        causation_id: row.get(10)?,
        payload: row.get(11)?,
        hash: row.get(12)?,
    })
}

/// An event's stored time. The writer stores every time in one shape,
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, read here digit by digit: a replay reads a million of them,
/// and chrono's general RFC 3339 parser costs several times as much. Anything else (a log
/// loaded from a fixture written by hand, a leap second) goes to that parser.
fn stored_time(text: &str) -> Option<DateTime<Utc>> {
    fn digits(bytes: &[u8]) -> Option<u32> {
        bytes.iter().try_fold(0u32, |n, b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    }
    let b = text.as_bytes();
    let shaped = b.len() == 27
        && b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && b.get(10) == Some(&b'T')
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':')
        && b.get(19) == Some(&b'.')
        && b.get(26) == Some(&b'Z');
    let fast = || {
        let date = chrono::NaiveDate::from_ymd_opt(
            i32::try_from(digits(b.get(0..4)?)?).ok()?,
            digits(b.get(5..7)?)?,
            digits(b.get(8..10)?)?,
        )?;
        let time = chrono::NaiveTime::from_hms_micro_opt(
            digits(b.get(11..13)?)?,
            digits(b.get(14..16)?)?,
            digits(b.get(17..19)?)?,
            digits(b.get(20..26)?)?,
        )?;
        Some(date.and_time(time).and_utc())
    };
    shaped.then(fast).flatten().or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// A row straight to an event, its columns parsed where they lie: no copy of the texts that
/// are parsed (ids, time, actor, payload). What readers of many events use.
fn row_to_event(row: &rusqlite::Row<'_>) -> Result<RecordedEvent, LogError> {
    let position: u64 = row.get(0)?;
    let bad =
        |what: &str| LogError::Store(format!("event at position {position} has a bad {what}"));
    let text = |i: usize, what: &str| -> Result<&str, LogError> {
        row.get_ref(i)?.as_str().map_err(|_| bad(what))
    };
    let uuid = |i: usize, what: &str| -> Result<Uuid, LogError> {
        Uuid::parse_str(text(i, what)?).map_err(|_| bad(what))
    };
    Ok(RecordedEvent {
        event_id: uuid(1, "event_id")?,
        stream: text(2, "stream")?.to_string(),
        version: row.get(3)?,
        position,
        event_type: text(4, "type")?.to_string(),
        schema_version: row.get(5)?,
        occurred_at: stored_time(text(6, "occurred_at")?).ok_or_else(|| bad("occurred_at"))?,
        actor: Actor {
            kind: ActorKind::parse(text(7, "actor")?).ok_or_else(|| bad("actor"))?,
            id: row.get(8)?,
        },
        correlation_id: uuid(9, "correlation_id")?,
        causation_id: uuid(10, "causation_id")?,
        payload: serde_json::from_str(text(11, "payload")?).map_err(|_| bad("payload"))?,
        hash: text(12, "hash")?.to_string(),
    })
}

/// Runs `sql` with `params` and turns each row into an event.
fn query_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, LogError> {
    query_events_sized(conn, sql, params, 0)
}

/// As [`query_events`], the vector sized for `capacity` events at once.
fn query_events_sized(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    capacity: usize,
) -> Result<Vec<RecordedEvent>, LogError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut events = Vec::with_capacity(capacity);
    while let Some(row) = rows.next()? {
        events.push(row_to_event(row)?);
    }
    Ok(events)
}

impl Stored {
    /// The bytes the hash covers: every envelope field but the hash, as canonical JSON. The
    /// payload is embedded as the canonical text it was stored as.
    fn canonical(&self) -> String {
        self.canonical_with(&self.payload)
    }

    /// The canonical envelope with `payload` (canonical text) in place of the stored one.
    fn canonical_with(&self, payload: &str) -> String {
        let origin = Origin {
            event_id: &self.event_id,
            occurred_at: &self.occurred_at,
            actor_kind: &self.actor_kind,
            actor_id: self.actor_id.as_deref(),
            correlation_id: &self.correlation_id,
            causation_id: &self.causation_id,
        };
        canonical_envelope(
            &origin,
            payload,
            self.position,
            self.schema_version,
            &self.stream,
            &self.event_type,
            self.version,
        )
    }

    /// The event as the relay sends it (see [`EventLog::read_wire_from_blocking`]).
    fn into_wire(self) -> Result<WireEvent, LogError> {
        let mut json = match wire_payload(&self.payload) {
            Ok(None) => self.canonical(),
            Ok(Some(payload)) => self.canonical_with(&payload),
            Err(_) => {
                return Err(LogError::Store(format!(
                    "event at position {} has a bad payload",
                    self.position
                )))
            }
        };
        json.pop();
        json.push_str(",\"hash\":\"");
        json.push_str(&self.hash);
        json.push_str("\"}");
        Ok(WireEvent {
            position: self.position,
            event_id: self.event_id,
            stream: self.stream,
            event_type: self.event_type,
            json: json.into_bytes(),
        })
    }

    #[cfg(test)]
    fn into_event(self) -> Result<RecordedEvent, LogError> {
        let bad = |what: &str| {
            LogError::Store(format!(
                "event at position {} has a bad {what}",
                self.position
            ))
        };
        Ok(RecordedEvent {
            event_id: Uuid::parse_str(&self.event_id).map_err(|_| bad("event_id"))?,
            occurred_at: DateTime::parse_from_rfc3339(&self.occurred_at)
                .map_err(|_| bad("occurred_at"))?
                .with_timezone(&Utc),
            actor: Actor {
                kind: ActorKind::parse(&self.actor_kind).ok_or_else(|| bad("actor"))?,
                id: self.actor_id.clone(),
            },
            correlation_id: Uuid::parse_str(&self.correlation_id)
                .map_err(|_| bad("correlation_id"))?,
            causation_id: Uuid::parse_str(&self.causation_id).map_err(|_| bad("causation_id"))?,
            payload: serde_json::from_str(&self.payload).map_err(|_| bad("payload"))?,
            stream: self.stream,
            version: self.version,
            position: self.position,
            event_type: self.event_type,
            schema_version: self.schema_version,
            hash: self.hash,
        })
    }
}

/// The canonical bytes of an envelope: a JSON object with the keys in byte order (`actor`,
/// `causation_id`, `correlation_id`, `event_id`, `occurred_at`, `payload`, `position`,
/// `schema_version`, `stream`, `type`, `version`), no white space, `actor` as
/// `{"id":…,"kind":…}` with a null id when there is none, and the payload spliced in as the
/// canonical text it is stored as. Made of the pieces [`canonical_head`] and
/// [`canonical_middle`] with the two numbers between them, as the writer hashes them.
fn canonical_envelope(
    origin: &Origin<'_>,
    payload: &str,
    position: u64,
    schema_version: u32,
    stream: &str,
    event_type: &str,
    version: u64,
) -> String {
    use std::fmt::Write;
    let (mut out, _) = canonical_head(origin, payload);
    let _ = write!(out, r#","position":{position}"#);
    out.push_str(&canonical_middle(schema_version, stream, event_type));
    let _ = write!(out, r#","version":{version}}}"#);
    out
}

/// The fields of an envelope that its canonical bytes hold before the payload, as stored.
struct Origin<'a> {
    event_id: &'a str,
    occurred_at: &'a str,
    actor_kind: &'a str,
    actor_id: Option<&'a str>,
    correlation_id: &'a str,
    causation_id: &'a str,
}

/// The canonical envelope up to its payload (included), and where the payload starts in it.
fn canonical_head(origin: &Origin<'_>, payload: &str) -> (String, usize) {
    let mut out = String::with_capacity(256 + payload.len());
    out.push_str(r#"{"actor":{"id":"#);
    match origin.actor_id {
        Some(id) => push_json_string(&mut out, id),
        None => out.push_str("null"),
    }
    out.push_str(r#","kind":"#);
    push_json_string(&mut out, origin.actor_kind);
    out.push_str(r#"},"causation_id":"#);
    push_json_string(&mut out, origin.causation_id);
    out.push_str(r#","correlation_id":"#);
    push_json_string(&mut out, origin.correlation_id);
    out.push_str(r#","event_id":"#);
    push_json_string(&mut out, origin.event_id);
    out.push_str(r#","occurred_at":"#);
    push_json_string(&mut out, origin.occurred_at);
    out.push_str(r#","payload":"#);
    let payload_at = out.len();
    out.push_str(payload);
    (out, payload_at)
}

/// The canonical envelope between its position and its version.
fn canonical_middle(schema_version: u32, stream: &str, event_type: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64 + stream.len() + event_type.len());
    let _ = write!(out, r#","schema_version":{schema_version},"stream":"#);
    push_json_string(&mut out, stream);
    out.push_str(r#","type":"#);
    push_json_string(&mut out, event_type);
    out
}

/// An event's canonical envelope but for its position and version, made by the caller.
struct Prepared {
    /// See [`canonical_head`].
    head: String,
    /// Where the payload's canonical text (the stored column) starts in `head`.
    payload_at: usize,
    /// See [`canonical_middle`].
    middle: String,
    event_id: String,
}

impl Prepared {
    fn of(stream: &str, event: &NewEvent, meta: &Metadata, described: &Described) -> Self {
        let event_id = event.event_id.to_string();
        let origin = Origin {
            event_id: &event_id,
            occurred_at: &described.occurred_at,
            actor_kind: meta.actor.kind.as_str(),
            actor_id: meta.actor.id.as_deref(),
            correlation_id: &described.correlation_id,
            causation_id: &described.causation_id,
        };
        let (head, payload_at) = canonical_head(&origin, &to_canonical_string(&event.payload));
        Self {
            head,
            payload_at,
            middle: canonical_middle(event.schema_version, stream, &event.event_type),
            event_id,
        }
    }

    /// The payload's canonical text.
    fn payload(&self) -> &str {
        self.head.get(self.payload_at..).unwrap_or_default()
    }

    /// The chain hash of this event at `position` and `version` after `prev`: the same as
    /// [`chain_hash`] of its [`canonical_envelope`], hashed piece by piece.
    fn chain_hash(&self, prev: &str, position: u64, version: u64) -> String {
        use std::io::Write;
        let mut hasher = Sha256::new();
        hasher.update(prev.as_bytes());
        hasher.update(b"\n");
        hasher.update(self.head.as_bytes());
        let mut number = [0u8; 40];
        let mut digits = |hasher: &mut Sha256, key: &str, n: u64, last: &[u8]| {
            let mut cursor = std::io::Cursor::new(&mut number[..]);
            let _ = write!(cursor, r#","{key}":{n}"#);
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            hasher.update(number.get(..len).unwrap_or_default());
            hasher.update(last);
        };
        digits(&mut hasher, "position", position, self.middle.as_bytes());
        digits(&mut hasher, "version", version, b"}");
        hex(&hasher.finalize())
    }
}

/// Appends `s` to `out` as [`json_string`] writes it.
fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// `s` as a JSON string, escaped exactly as serde_json escapes it (only `"`, `\\` and control
/// characters). Ids, times, stream and type names need no escaping: they are copied as they are.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_string(&mut out, s);
    out
}

/// SEC-9: a stored payload as it may leave the log host. `None` for the stored text as it is:
/// an event that names no verification field is sent byte for byte, without being parsed (a
/// plain substring test, so the relay stays as cheap as a bare publish). Otherwise its canonical
/// text with each verification field's value replaced by [`custode_domain::secret::REMOVED`].
fn wire_payload(stored: &str) -> Result<Option<String>, serde_json::Error> {
    if !may_hold_verification_data(stored) {
        return Ok(None);
    }
    let mut payload: serde_json::Value = serde_json::from_str(stored)?;
    Ok(remove_verification_data(&mut payload).then(|| to_canonical_string(&payload)))
}

fn chain_hash(prev: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    hex(&hasher.finalize())
}

/// `bytes` in lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
    out
}

/// The end of the chain: the last position and its hash.
#[derive(Clone)]
struct Tip {
    position: u64,
    hash: String,
}

impl Tip {
    fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let tip = conn
            .query_row(
                "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1",
                [],
                |r| {
                    Ok(Tip {
                        position: r.get(0)?,
                        hash: r.get(1)?,
                    })
                },
            )
            .optional()?;
        Ok(tip.unwrap_or(Tip {
            position: 0,
            hash: GENESIS_HASH.to_string(),
        }))
    }
}

struct Writer {
    conn: Connection,
    tip: Tip,
    /// Committed groups, to the syncer.
    durable: std::sync::mpsc::Sender<Durable>,
    /// The syncer itself: its counts, and the groups the writer syncs in its stead.
    syncer: Arc<Syncer>,
    /// Whether a group is cut for the syncer (see [`GROUP_SLICE`]): with `Synchronous::Full`,
    /// when there is a sync to overlap.
    cut_groups: bool,
    stats: Arc<WriterStats>,
    versions: Arc<StreamVersions>,
    /// Batches of access records the disk could not take, tried again (oldest first).
    retry: std::collections::VecDeque<Job>,
}

/// How many of the latest committed events the writer keeps in memory for the readers that
/// tail the log: a few commits' worth, so that every consumer beside the writer reads each new
/// event from here rather than from the file (and parses no payload again).
const RECENT_KEPT: usize = 4096;

/// The latest committed events, in position order without gaps (positions are the log's
/// gap-free sequence). Only ever filled after the commit, so nothing uncommitted is seen.
#[derive(Default)]
struct Recent(std::sync::Mutex<std::collections::VecDeque<RecordedEvent>>);

impl Recent {
    fn committed(&self, events: Vec<RecordedEvent>) {
        let mut gone = Vec::new();
        let Ok(mut kept) = self.0.lock() else { return };
        for event in events {
            if kept
                .back()
                .is_some_and(|last| last.position + 1 != event.position)
            {
                gone.extend(kept.drain(..));
            }
            kept.push_back(event);
        }
        while kept.len() > RECENT_KEPT {
            gone.extend(kept.pop_front());
        }
        drop(kept);
        // Freed once the lock is given back: every tailing reader takes it.
        drop(gone);
    }

    /// Up to `limit` events after `position`, when every one of them is kept here.
    fn after(&self, position: u64, limit: usize) -> Option<Vec<RecordedEvent>> {
        self.after_wanted(position, limit, &|_| true)
            .map(|(events, _)| events)
    }

    /// As [`Recent::after`], copying only the events `wanted` picks; with the position of the
    /// last event looked at.
    fn after_wanted(
        &self,
        position: u64,
        limit: usize,
        wanted: &dyn Fn(&RecordedEvent) -> bool,
    ) -> Option<(Vec<RecordedEvent>, u64)> {
        let kept = self.0.lock().ok()?;
        let first = kept.front()?.position;
        let last = kept.back()?.position;
        if position + 1 < first || position >= last {
            return None;
        }
        let skip = usize::try_from(position + 1 - first).ok()?;
        let mut seen = position;
        let mut events = Vec::new();
        for event in kept.iter().skip(skip).take(limit) {
            seen = event.position;
            if wanted(event) {
                events.push(event.clone());
            }
        }
        Some((events, seen))
    }
}

/// Streams' versions as of this writer's last commits (bounded; forgotten wholesale when full).
#[derive(Default)]
struct StreamVersions(std::sync::Mutex<std::collections::HashMap<String, u64>>);

/// How many streams' versions are remembered.
const VERSIONS_KEPT: usize = 65_536;

impl StreamVersions {
    fn get(&self, stream: &str) -> Option<u64> {
        self.0.lock().ok()?.get(stream).copied()
    }

    fn committed(&self, replies: &[Reply]) {
        let Ok(mut versions) = self.0.lock() else {
            return;
        };
        if versions.len() >= VERSIONS_KEPT {
            versions.clear();
        }
        for event in replies
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flatten()
        {
            // A stream written many times in one commit (a busy account's access records)
            // is copied once.
            match versions.get_mut(event.stream.as_str()) {
                Some(version) => *version = event.version,
                None => {
                    versions.insert(event.stream.clone(), event.version);
                }
            }
        }
    }
}

#[derive(Default)]
struct WriterStats {
    commits: std::sync::atomic::AtomicU64,
    jobs: std::sync::atomic::AtomicU64,
    /// Syncs of the write-ahead file, and the nanoseconds they took.
    syncs: std::sync::atomic::AtomicU64,
    sync_nanos: std::sync::atomic::AtomicU64,
    /// Nanoseconds spent in SQLite's commits.
    commit_nanos: std::sync::atomic::AtomicU64,
}

impl WriterStats {
    fn add_nanos(counter: &std::sync::atomic::AtomicU64, since: std::time::Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where the log writer's time went since the log was opened (see [`EventLog::times`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogTimes {
    /// Transactions committed.
    pub commits: u64,
    /// Commands (jobs) appended.
    pub commands: u64,
    /// Syncs of the write-ahead file (one for every group of commits; none with
    /// `Synchronous::Normal`).
    pub syncs: u64,
    /// Time those syncs took: the disk's share of a command's wait.
    pub sync: std::time::Duration,
    /// Time spent in SQLite's commits: the write-ahead file's page writes, and now and then a
    /// checkpoint of it into the database file.
    pub commit: std::time::Duration,
}

type Reply = (
    oneshot::Sender<Result<Vec<RecordedEvent>, LogError>>,
    Result<Vec<RecordedEvent>, LogError>,
);

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        // When the access records held for the disk are tried again.
        let mut retry_at = std::time::Instant::now();
        loop {
            let first = if self.retry.is_empty() {
                match next_job(&mut jobs) {
                    Some(job) => Some(job),
                    None => return,
                }
            } else if std::time::Instant::now() >= retry_at {
                // However busy the queue: held records are tried every pause.
                None
            } else {
                match job_until(&mut jobs, retry_at) {
                    Ok(job) => job,
                    Err(Gone) => {
                        let records: usize = self.retry.iter().map(Job::events).sum();
                        tracing::error!(
                            records,
                            "the log stops with access records its disk never took: they are lost"
                        );
                        return;
                    }
                }
            };
            let held = self.retry.len();
            // A new job goes in a group of new jobs; held records, when their time comes, in a
            // group of their own, so that a command the disk has room for is never refused
            // because of the batches that wait beside it.
            let replies = match first {
                Some(job) => match divert(&mut self.retry, job) {
                    Some(job) => self.commit_group(job, &mut jobs, Source::Queue),
                    None => continue,
                },
                None => match self.retry.pop_front() {
                    Some(job) => {
                        let replies = self.commit_group(job, &mut jobs, Source::Held);
                        retry_at = std::time::Instant::now() + RETRY_PAUSE;
                        replies
                    }
                    None => continue,
                },
            };
            match (held, self.retry.len()) {
                (0, 0) => {}
                (0, _) => {
                    retry_at = std::time::Instant::now() + RETRY_PAUSE;
                    tracing::warn!(
                        "the log's disk cannot take access records: they are held and tried again"
                    )
                }
                (_, 0) => tracing::info!(
                    "the access records held while the log's disk could not take them are written"
                ),
                _ => {}
            }
            for (reply, result) in replies {
                // The caller may have gone away; its events are committed all the same.
                let _ = reply.send(result);
            }
        }
    }

    /// One transaction: `first`, then whatever else `source` holds, until it is momentarily
    /// empty or the group is full. A group of batches of ready appends alone waits up to
    /// [`SOON_LINGER`] for more before it commits.
    fn commit_group(
        &mut self,
        first: Job,
        jobs: &mut mpsc::Receiver<Job>,
        source: Source,
    ) -> Vec<Reply> {
        let mut replies: Vec<Reply> = Vec::new();
        let start_tip = self.tip.clone();
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                let err = LogError::from(e);
                let mut failed = vec![first];
                if source == Source::Queue {
                    while let Some(job) = next_new(&mut self.retry, jobs) {
                        failed.push(job);
                    }
                }
                let held = failed
                    .into_iter()
                    .filter_map(|job| fail(job, &err, &mut replies))
                    .collect();
                hold(&mut self.retry, source, held);
                return replies;
            }
        };
        let mut tip = self.tip.clone();
        let opened = std::time::Instant::now();
        let linger_until = opened + SOON_LINGER;
        // Streams' versions as this group has written them so far.
        let mut written: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut lingering = source == Source::Queue;
        let mut next = Some(first);
        let mut spoiled = None;
        // The group's jobs, each with its events or why it was refused.
        let mut done: Vec<(Job, Result<Vec<RecordedEvent>, LogError>)> = Vec::new();
        while let Some(mut job) = next.take() {
            lingering &= job.batch;
            if !job.batch {
                let _ = self.syncer.returning.fetch_update(
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                    |n| n.checked_sub(1),
                );
            }
            match append_job(&tx, &mut tip, &mut job, &self.versions, &mut written) {
                Ok(events) => done.push((job, Ok(events))),
                Err(JobError::Refused(e)) => done.push((job, Err(e))),
                Err(JobError::Group(e)) => {
                    done.push((job, Err(e.clone())));
                    spoiled = Some(e);
                    break;
                }
            }
            // A group that has been filling for a while is cut as soon as the disk is idle, so
            // that its sync starts while the next group fills (see `Syncer`).
            let cut = self.cut_groups
                && source == Source::Queue
                && !lingering
                && self.syncer.unsynced() == 0
                && opened.elapsed() >= GROUP_SLICE;
            if done.len() < MAX_GROUP && !cut {
                next = match source {
                    Source::Queue => next_new(&mut self.retry, jobs),
                    Source::Held => self.retry.pop_front(),
                };
                // The callers the last sync answered, back with their next appends within
                // microseconds, join this group rather than wait for a sync of their own.
                if next.is_none() && self.cut_groups && source == Source::Queue && !lingering {
                    let until = std::time::Instant::now() + RETURN_WAIT;
                    while next.is_none()
                        && self.syncer.returning() > 0
                        && std::time::Instant::now() < until
                    {
                        std::thread::yield_now();
                        next = next_new(&mut self.retry, jobs);
                    }
                    // Those still out are not coming back soon (an HTTP request answered):
                    // no later group waits for them.
                    if next.is_none() {
                        self.syncer
                            .returning
                            .store(0, std::sync::atomic::Ordering::Release);
                    }
                }
                // Lingering, the writer looks at the queue every slice rather than waking for
                // each job: a plain append waits at most a slice.
                while next.is_none() && lingering {
                    let left = linger_until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(LINGER_SLICE));
                    next = next_new(&mut self.retry, jobs);
                }
            }
        }
        let committed = match spoiled {
            None => {
                let started = std::time::Instant::now();
                let committed = tx.commit().map_err(LogError::from);
                WriterStats::add_nanos(&self.stats.commit_nanos, started);
                committed
            }
            // Dropping the transaction rolls it back.
            Some(e) => Err(e),
        };
        match committed {
            Ok(()) => {
                self.tip = tip;
                // Whether each reply is a batch's, whose events go to `Recent` uncopied.
                let batches: Vec<bool> = done.iter().map(|(job, _)| job.batch).collect();
                replies.extend(done.into_iter().map(|(job, result)| (job.reply, result)));
                self.versions.committed(&replies);
                use std::sync::atomic::Ordering::Relaxed;
                self.stats.commits.fetch_add(1, Relaxed);
                self.stats.jobs.fetch_add(replies.len() as u64, Relaxed);
                let durable = Durable {
                    position: self.tip.position,
                    batches,
                    replies: std::mem::take(&mut replies),
                };
                // With the syncer idle and no job waiting, there is no next group to write
                // during this one's sync: the writer syncs it and answers its callers itself,
                // which spares a hand-off to the syncer's thread (a wake-up of tens of
                // microseconds, on every commit of a closed loop of callers). A group with
                // access records goes to the syncer all the same: they come in a steady
                // stream that nobody waits on, and the writer keeps taking them in during a
                // slow sync rather than let them back up into the mail servers' checks.
                if self.syncer.unsynced() == 0
                    && self.syncer.returning() == 0
                    && jobs.is_empty()
                    && !durable.batches.contains(&true)
                {
                    self.syncer.settle(vec![durable]);
                } else {
                    // Answered by the syncer once the commit is on disk. Should it be gone (it
                    // never stops before the writer), the callers hear that the log is closed.
                    self.syncer
                        .unsynced
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    let _ = self.durable.send(durable);
                }
            }
            Err(err) => {
                self.tip = start_tip;
                let mut held = Vec::new();
                for (mut job, result) in done {
                    let kept = match result {
                        Ok(events) => {
                            // Rolled back: the events go back into their job, which may be
                            // tried again.
                            job.restore(events);
                            fail(job, &err, &mut replies)
                        }
                        // Refused on its own (a version conflict), or the job that spoiled
                        // the group, whose events `write_events` put back.
                        Err(own) => fail(job, &own, &mut replies),
                    };
                    held.extend(kept);
                }
                hold(&mut self.retry, source, held);
            }
        }
        replies
    }
}

/// The write-ahead file of the log `conn` has open (see [`crate::sqlite::wal_path`]). It exists
/// from the connection's first read on, and SQLite deletes it only when the last connection
/// closes: the writer's stays open as long as the log.
fn open_wal(conn: &Connection) -> Result<std::fs::File, LogError> {
    let path = crate::sqlite::wal_path(conn)
        .ok_or_else(|| LogError::Store("the log is not a file".into()))?;
    std::fs::File::open(path)
        .map_err(|e| LogError::Store(format!("cannot open the log's write-ahead file: {e}")))
}

/// How long a group fills before it is cut when the disk is idle: long enough that a closed
/// loop of a few callers (who come back within a few tens of microseconds of their answers)
/// keeps to one group a sync, short enough that many callers' groups take turns with the disk.
const GROUP_SLICE: std::time::Duration = std::time::Duration::from_micros(100);

/// How long a group waits, at most, for the callers the last sync answered: in a closed loop
/// (a client that sends its next command once the last is answered) they come back within a
/// few tens of microseconds, and a group cut before them costs a sync of their own. Callers who
/// do not come back (an HTTP request answered) are waited for once: when the wait runs out,
/// none of them is waited for again until the next sync answers others.
const RETURN_WAIT: std::time::Duration = std::time::Duration::from_micros(60);

/// A committed group on its way to its callers.
struct Durable {
    /// The log's position after it.
    position: u64,
    /// Whether each reply is a batch's, whose events go to [`Recent`] uncopied (nobody waits
    /// on them); the others' are copied there, here rather than on the writer's path.
    batches: Vec<bool>,
    replies: Vec<Reply>,
}

impl Durable {
    /// Its events, for [`Recent`].
    fn fresh(&mut self) -> Vec<RecordedEvent> {
        let mut fresh = Vec::new();
        for ((_, result), batch) in self.replies.iter_mut().zip(&self.batches) {
            if let Ok(events) = result {
                if *batch {
                    fresh.append(events);
                } else {
                    fresh.extend(events.iter().cloned());
                }
            }
        }
        fresh
    }
}

/// Makes commits durable off the writer's path: SQLite commits without waiting on the disk,
/// and this thread syncs the write-ahead file (what `synchronous=FULL` does inside each commit)
/// for every group committed since its last sync at once, then answers their callers and shows
/// their events to the log's readers. Meanwhile the writer is already writing the next groups,
/// so the disk's wait no longer stands between one group and the next. Nothing is answered, or
/// seen by a reader of the log's tail (projector, relay, workers), before it is on disk.
struct Syncer {
    /// The write-ahead file, with `Synchronous::Full`; `None` leaves syncing to checkpoints.
    wal: Option<std::fs::File>,
    /// The writer's counts, where the syncs are counted.
    stats: Arc<WriterStats>,
    head: watch::Sender<u64>,
    recent: Arc<Recent>,
    /// Groups the writer sent here and this thread has not yet answered.
    unsynced: std::sync::atomic::AtomicUsize,
    /// How many commands it last answered whose callers' next appends have not come yet (the
    /// writer counts them down; see [`RETURN_WAIT`]).
    returning: std::sync::atomic::AtomicUsize,
}

impl Syncer {
    /// Groups sent here and not yet answered.
    fn unsynced(&self) -> usize {
        self.unsynced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Callers last answered whose next appends have not come yet.
    fn returning(&self) -> usize {
        self.returning.load(std::sync::atomic::Ordering::Acquire)
    }

    fn run(&self, groups: &std::sync::mpsc::Receiver<Durable>) {
        while let Ok(first) = groups.recv() {
            let mut ready = vec![first];
            ready.extend(groups.try_iter());
            let answered = ready.len();
            self.settle(ready);
            self.unsynced
                .fetch_sub(answered, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Syncs the write-ahead file once for every group of `ready` (in commit order), then
    /// shows their events and answers their callers. Called by one thread at a time: the
    /// syncer's own, or the writer's while the syncer has nothing.
    fn settle(&self, ready: Vec<Durable>) {
        if let Some(wal) = &self.wal {
            let started = std::time::Instant::now();
            let synced = wal.sync_data();
            WriterStats::add_nanos(&self.stats.sync_nanos, started);
            self.stats
                .syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(error) = synced {
                // Committed, visible in the file, and perhaps not on disk: Linux may have
                // dropped the pages it could not write, so a second sync that succeeds
                // proves nothing, and a caller told "failed" might find its events there
                // after all. The process stops, unanswered, as PostgreSQL does; a restart
                // syncs the write-ahead file again before anyone reads it (or fails to
                // start, which says the disk is failing).
                tracing::error!(%error, "the log's disk did not confirm a commit: the process stops");
                std::process::abort();
            }
        }
        let commands = ready
            .iter()
            .map(|group| group.batches.iter().filter(|batch| !**batch).count())
            .sum();
        self.returning
            .store(commands, std::sync::atomic::Ordering::Release);
        for mut group in ready {
            self.recent.committed(group.fresh());
            self.head.send_replace(group.position);
            for (reply, result) in group.replies {
                // The caller may have gone away; its events are committed all the same.
                let _ = reply.send(result);
            }
        }
    }
}

/// A job that could not be written because of `err`: a batch of access records (which nobody
/// waits on and which decide nothing) is returned, to be held while the disk cannot take it
/// and tried again, so no record is lost to a full disk; any other job is answered `err`.
fn fail(job: Job, err: &LogError, replies: &mut Vec<Reply>) -> Option<Job> {
    if job.batch && matches!(err, LogError::DiskUnavailable(_)) {
        Some(job)
    } else {
        replies.push((job.reply, Err(err.clone())));
        None
    }
}

/// Holds `jobs` (in their order) for another try: those of a group of held jobs go back in
/// front of the ones still waiting, new ones behind, so that records are written in the order
/// they were queued (an access stream's versions follow its records' times).
fn hold(retry: &mut std::collections::VecDeque<Job>, source: Source, jobs: Vec<Job>) {
    match source {
        Source::Held => {
            for job in jobs.into_iter().rev() {
                retry.push_front(job);
            }
        }
        Source::Queue => retry.extend(jobs),
    }
}

/// The next job of the queue for a group, if one is there (see [`divert`]).
fn next_new(
    retry: &mut std::collections::VecDeque<Job>,
    jobs: &mut mpsc::Receiver<Job>,
) -> Option<Job> {
    loop {
        if let Some(job) = divert(retry, jobs.try_recv().ok()?) {
            return Some(job);
        }
    }
}

/// `job`, unless it is a batch of records while others are held: it then goes straight behind
/// them (see [`hold`]), tried after them and never beside a command.
fn divert(retry: &mut std::collections::VecDeque<Job>, job: Job) -> Option<Job> {
    if job.batch && !retry.is_empty() {
        retry.push_back(job);
        None
    } else {
        Some(job)
    }
}

/// How often the writer tries again the access records its disk could not take.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Every handle on the log is gone.
struct Gone;

/// Where a group's jobs come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The writer's queue: new jobs.
    Queue,
    /// The batches of access records held for the disk.
    Held,
}

/// The next job if one comes before `until` (looked for every millisecond: a command waits
/// that much longer while records are held, and no more).
fn job_until(
    jobs: &mut mpsc::Receiver<Job>,
    until: std::time::Instant,
) -> Result<Option<Job>, Gone> {
    loop {
        match jobs.try_recv() {
            Ok(job) => return Ok(Some(job)),
            Err(mpsc::error::TryRecvError::Disconnected) => return Err(Gone),
            Err(mpsc::error::TryRecvError::Empty) => {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                std::thread::sleep(left.min(LINGER_SLICE));
            }
        }
    }
}

/// How long the writer keeps looking for the next job after a commit before it sleeps. The
/// callers it just answered usually send their next appends within this time, and a sleeping
/// thread takes about as long again to wake: looking (and yielding the core meanwhile) spares
/// that wake-up on every commit under load, and costs an idle log at most this much CPU after
/// each commit.
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// The next job: looked for (yielding) for [`IDLE_SPIN`], then waited for. `None` once every
/// handle on the log is gone.
fn next_job(jobs: &mut mpsc::Receiver<Job>) -> Option<Job> {
    let until = std::time::Instant::now() + IDLE_SPIN;
    loop {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() < until => {
                std::thread::yield_now();
            }
            Err(mpsc::error::TryRecvError::Empty) => return jobs.blocking_recv(),
        }
    }
}

/// Appends one job inside the group's transaction. Every expected version is checked before
/// anything is written, so a conflict leaves no trace; a failure while writing (disk, I/O) is
/// returned as `Err(Store)` and fails the whole group, whose transaction then rolls back.
/// `committed` and `written` (this group's writes so far) know streams' versions without a
/// read: this writer is the log's only one, so what it committed is the truth.
fn append_job(
    tx: &rusqlite::Transaction<'_>,
    tip: &mut Tip,
    job: &mut Job,
    committed: &StreamVersions,
    written: &mut std::collections::HashMap<String, u64>,
) -> Result<Vec<RecordedEvent>, JobError> {
    let mut versions = Vec::with_capacity(job.appends.len());
    // A stream this job appends to twice: its second append follows its first.
    let mut in_job: Vec<(&str, u64)> = Vec::new();
    for append in &job.appends {
        let earlier = in_job
            .iter()
            .rev()
            .find(|(stream, _)| *stream == append.stream)
            .map(|(_, version)| *version);
        let known = earlier
            .or_else(|| written.get(&append.stream).copied())
            .or_else(|| committed.get(&append.stream));
        let actual: u64 = match known {
            Some(version) => version,
            None => tx
                .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?1")
                .and_then(|mut stmt| stmt.query_row(params![append.stream], |r| r.get(0)))
                .map_err(|e| JobError::Group(e.into()))?,
        };
        if append.expected_version != ANY_VERSION && actual != append.expected_version {
            return Err(JobError::Refused(LogError::Conflict {
                stream: append.stream.clone(),
                expected: append.expected_version,
                actual,
            }));
        }
        versions.push(actual);
        in_job.push((&append.stream, actual + append.events.len() as u64));
    }
    let recorded = write_events(tx, tip, job, &versions).map_err(JobError::Group)?;
    for (append, actual) in job.appends.iter().zip(versions) {
        written.insert(append.stream.clone(), actual + append.events.len() as u64);
    }
    Ok(recorded)
}

/// Why a job was not appended: refused on its own, or a failure that spoils its group.
enum JobError {
    Refused(LogError),
    Group(LogError),
}

/// A metadata's columns as the log stores them.
struct Described {
    /// Stored with microseconds; the in-process copy equals what a reader will see.
    at: DateTime<Utc>,
    occurred_at: String,
    correlation_id: String,
    causation_id: String,
}

impl Described {
    fn of(meta: &Metadata) -> Self {
        let at = meta.occurred_at.trunc_subsecs(6);
        Self {
            at,
            occurred_at: at.to_rfc3339_opts(SecondsFormat::Micros, true),
            correlation_id: meta.correlation_id.to_string(),
            causation_id: meta.causation_id.to_string(),
        }
    }
}

/// Writes `job`'s events, moving their types and payloads into the events it returns; when a
/// write fails, they are put back and the job is left whole.
fn write_events(
    conn: &Connection,
    tip: &mut Tip,
    job: &mut Job,
    versions: &[u64],
) -> Result<Vec<RecordedEvent>, LogError> {
    let mut recorded = Vec::new();
    let mut failed = None;
    let mut prepared = job.prepared.iter();
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (position, event_id, stream, version, type, schema_version, occurred_at, \
         actor_kind, actor_id, correlation_id, causation_id, payload, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    'appends: for (index, (append, &actual)) in job.appends.iter_mut().zip(versions).enumerate() {
        // One metadata for every append, or one each.
        let which = if job.metas.len() == 1 { 0 } else { index };
        let (Some(meta), Some(d)) = (job.metas.get(which), job.described.get(which)) else {
            failed = Some(LogError::Store("an append without its metadata".into()));
            break;
        };
        let Described {
            at,
            occurred_at,
            correlation_id,
            causation_id,
        } = d;
        let at = *at;
        let actor_kind = meta.actor.kind.as_str();
        for (i, event) in append.events.iter_mut().enumerate() {
            let position = tip.position + 1;
            let version = actual + 1 + i as u64;
            let Some(prepared) = prepared.next() else {
                failed = Some(LogError::Store("a job without its payload text".into()));
                break 'appends;
            };
            let payload = prepared.payload();
            let hash = prepared.chain_hash(&tip.hash, position, version);
            let inserted = insert.execute(params![
                position,
                prepared.event_id,
                append.stream,
                version,
                event.event_type,
                event.schema_version,
                occurred_at,
                actor_kind,
                meta.actor.id,
                correlation_id,
                causation_id,
                payload,
                hash,
            ]);
            if let Err(e) = inserted {
                failed = Some(e.into());
                break 'appends;
            }
            recorded.push(RecordedEvent {
                event_id: event.event_id,
                stream: append.stream.clone(),
                version,
                position,
                event_type: std::mem::take(&mut event.event_type),
                schema_version: event.schema_version,
                occurred_at: at,
                actor: meta.actor.clone(),
                correlation_id: meta.correlation_id,
                causation_id: meta.causation_id,
                payload: std::mem::take(&mut event.payload),
                hash: hash.clone(),
            });
            tip.position = position;
            tip.hash = hash;
        }
    }
    match failed {
        None => Ok(recorded),
        Some(e) => {
            // The job stays whole: it may be written again (see `Writer::fail`).
            job.restore(recorded);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
