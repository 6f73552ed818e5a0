//! The worker store: one SQLite file (`<data-dir>/workers.db`) that holds, per consumer, the
//! delivery record of every event it has handled and its checkpoint, and the workers' own
//! state: the contacts the notifiers fold from events, the outbox of notices and the
//! scheduler's deadlines. A worker run apart keeps its store in its own data dir.

use crate::consumer::Sink;
use crate::WorkerError;
use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;

pub const STORE_FILE: &str = "workers.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS handled (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    consumer TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    consumer TEXT NOT NULL,
    stream   TEXT NOT NULL,
    contacts TEXT NOT NULL,
    PRIMARY KEY (consumer, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    notice_id       TEXT PRIMARY KEY,
    consumer        TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    notice          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    reported        INTEGER NOT NULL DEFAULT 0,
    round           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (consumer, state, next_attempt_ms);
CREATE INDEX IF NOT EXISTS outbox_unreported ON outbox (consumer, reported) WHERE reported = 0;
CREATE TABLE IF NOT EXISTS deadlines (
    key       TEXT PRIMARY KEY,
    timer     TEXT NOT NULL,
    due_ms    INTEGER NOT NULL,
    state     TEXT NOT NULL CHECK (state IN ('waiting', 'fired', 'cancelled')),
    fired_ms  INTEGER
);
CREATE INDEX IF NOT EXISTS deadlines_due ON deadlines (state, due_ms);
";

/// Opens a connection to the store at `dir/workers.db`, creating the tables.
pub fn open(dir: &Path) -> Result<Connection, WorkerError> {
    let path = dir.join(STORE_FILE);
    custode_commands::sqlite::private_database(&path)
        .map_err(|e| WorkerError::Other(format!("cannot make {} private: {e}", path.display())))?;
    let conn = Connection::open(&path)?;
    custode_commands::sqlite::wait_in_short_steps(&conn)?;
    // FULL: a JetStream message is acknowledged once the outbox row it queued is committed, so
    // that commit must survive a power cut as well as a kill -9.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// A connection for bookkeeping that may be lost to a power cut and redone: a delivery's
/// outcome (lost, the notice is sent again, and the embedded sinks keep one copy by notice id),
/// a report mark (lost, the outcome is reported again and recorded once), the relay's
/// checkpoint (lost, events are published again and JetStream drops the duplicates). Commits through it
/// skip the fsync that [`open`]'s connections pay.
pub fn open_relaxed(dir: &Path) -> Result<Connection, WorkerError> {
    let conn = open(dir)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// The position `consumer` has handled (0 before its first event).
pub fn checkpoint(conn: &Connection, consumer: &str) -> Result<u64, WorkerError> {
    Ok(conn
        .query_row(
            "SELECT position FROM checkpoints WHERE consumer = ?1",
            [consumer],
            |row| row.get::<_, i64>(0),
        )
        .optional()?
        .map_or(0, |p| u64::try_from(p).unwrap_or(0)))
}

/// Takes back to `head`, the log's last position, every consumer's checkpoint in the store of
/// `dir` that stands past it; returns the consumers with the positions they stood at. A
/// checkpoint past the head covers events the log no longer holds (it lost its end to a power
/// cut with `log.synchronous = normal`, or an older copy of it was put back): the new events
/// that take those positions would be passed over as handled, their notices never sent and
/// their timers never set. Events handled before keep their delivery records by event id, so
/// nothing is handled twice. No store, nothing to do (a process that runs no worker).
pub fn rewind_past(dir: &Path, head: u64) -> Result<Vec<(String, u64)>, WorkerError> {
    if !dir.join(STORE_FILE).exists() {
        return Ok(Vec::new());
    }
    let mut conn = open(dir)?;
    let head = i64::try_from(head).unwrap_or(i64::MAX);
    let tx = conn.transaction()?;
    let past = tx
        .prepare(
            "SELECT consumer, position FROM checkpoints WHERE position > ?1 ORDER BY consumer",
        )?
        .query_map(params![head], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    tx.execute(
        "UPDATE checkpoints SET position = ?1 WHERE position > ?1",
        params![head],
    )?;
    tx.commit()?;
    Ok(past)
}

/// What a worker does with one event it has not handled before, inside the transaction that
/// also records it as handled.
pub trait Handler: Send + 'static {
    /// Whether the handler does anything with `event`. The others are passed over without a
    /// delivery record: doing nothing twice is harmless, and most events (every access record
    /// of AH-1 among them) concern no worker, so recording each would cost every worker a row.
    fn wants(&self, _event: &RecordedEvent) -> bool {
        true
    }
    fn handle(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), WorkerError>;
    /// Called after each commit that handled new events (to wake a delivery loop).
    fn committed(&mut self) {}
    /// Learns from an event an earlier run already acted on (see `Sink::apply_history`).
    fn history(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), WorkerError> {
        self.handle(tx, event)
    }
}

/// A [`Sink`] that keeps a delivery record per event id for `consumer`.
pub struct StoreSink<H> {
    consumer: String,
    conn: Connection,
    checkpoint: u64,
    /// The checkpoint as last written to the store (it may trail `checkpoint` by events the
    /// handler passed over).
    persisted: u64,
    /// Whether the checkpoint may trail over passed-over events: only when fed by the log,
    /// which a restart reads again from any position (JetStream does not offer acknowledged
    /// messages again, so its gaps must close from the store's checkpoint).
    lazy: bool,
    handler: H,
}

/// How far the checkpoint may run ahead of the store over events a handler passes over: after
/// a restart they are read again and passed over again, which costs a read, never a notice.
const UNWANTED_UNSAVED: u64 = 4096;

impl<H: Handler> StoreSink<H> {
    pub fn new(dir: &Path, consumer: &str, handler: H) -> Result<Self, WorkerError> {
        let conn = open(dir)?;
        let checkpoint = checkpoint(&conn, consumer)?;
        Ok(Self {
            consumer: consumer.to_string(),
            conn,
            checkpoint,
            persisted: checkpoint,
            lazy: false,
            handler,
        })
    }

    /// This sink, fed by `feed`: over the log, batches it passes over write no checkpoint.
    pub fn for_feed(mut self, feed: &crate::consumer::Feed) -> Self {
        self.lazy = matches!(feed, crate::consumer::Feed::Log(_));
        self
    }
}

impl<H: Handler> StoreSink<H> {
    fn apply_as(
        &mut self,
        events: &[RecordedEvent],
        history: bool,
        seen: u64,
    ) -> Result<u64, WorkerError> {
        // A batch of events this worker does nothing with (most access records, for every
        // worker) needs no transaction: the checkpoint moves in memory, and is written now and
        // then.
        let last = events
            .iter()
            .map(|e| e.position)
            .fold(self.checkpoint.max(seen), u64::max);
        if !events.iter().any(|e| self.handler.wants(e)) {
            if let Some(moved) = self.pass_over(last) {
                return Ok(moved);
            }
        }
        let tx = self.conn.transaction()?;
        let mut fresh = 0usize;
        for event in events {
            if !self.handler.wants(event) {
                continue;
            }
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO handled (consumer, event_id, position) VALUES (?1, ?2, ?3)",
                params![self.consumer, event.event_id.to_string(), event.position],
            )?;
            if inserted == 1 {
                if history {
                    self.handler.history(&tx, event)?;
                } else {
                    self.handler.handle(&tx, event)?;
                    fresh += 1;
                }
            }
        }
        tx.execute(
            "INSERT INTO checkpoints (consumer, position) VALUES (?1, ?2)
             ON CONFLICT (consumer) DO UPDATE SET position = max(position, excluded.position)",
            params![self.consumer, last],
        )?;
        tx.commit()?;
        self.checkpoint = last;
        self.persisted = last;
        if fresh > 0 {
            self.handler.committed();
        }
        Ok(last)
    }
}

impl<H: Handler> Sink for StoreSink<H> {
    fn apply(&mut self, events: &[RecordedEvent]) -> Result<u64, WorkerError> {
        self.apply_as(events, false, 0)
    }

    fn apply_history(&mut self, events: &[RecordedEvent]) -> Result<u64, WorkerError> {
        self.apply_as(events, true, 0)
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        self.handler.wants(event)
    }

    fn apply_seen(&mut self, events: &[RecordedEvent], seen: u64) -> Result<u64, WorkerError> {
        self.apply_as(events, false, seen)
    }

    fn pass_over(&mut self, seen: u64) -> Option<u64> {
        if self.lazy && seen.saturating_sub(self.persisted) < UNWANTED_UNSAVED {
            self.checkpoint = self.checkpoint.max(seen);
            Some(self.checkpoint)
        } else {
            None
        }
    }

    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::Utc;
    use custode_domain::Actor;
    use uuid::Uuid;

    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Handler for Count {
        fn handle(&mut self, _: &Transaction<'_>, _: &RecordedEvent) -> Result<(), WorkerError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    /// An event at `position` (of no account in particular), for tests of the consumers.
    pub(crate) fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::from_u128(u128::from(position)),
            stream: "account-x".into(),
            version: position,
            position,
            event_type: "PasswordChanged".into(),
            schema_version: 1,
            occurred_at: Utc::now(),
            actor: Actor::system(),
            correlation_id: Uuid::nil(),
            causation_id: Uuid::nil(),
            payload: serde_json::json!({}),
            hash: String::new(),
        }
    }

    #[test]
    fn an_event_is_handled_once_even_when_delivered_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut sink = StoreSink::new(dir.path(), "mailer", Count(count.clone())).unwrap();
        assert_eq!(sink.apply(&[event(1), event(2)]).unwrap(), 2);
        drop(sink);
        let mut again = StoreSink::new(dir.path(), "mailer", Count(count.clone())).unwrap();
        assert_eq!(again.checkpoint(), 2);
        again.apply(&[event(2), event(3)]).unwrap();
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
        let mut other = StoreSink::new(dir.path(), "sms", Count(count.clone())).unwrap();
        other.apply(&[event(1)]).unwrap();
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            4,
            "each consumer keeps its own records"
        );
    }

    /// Handles only account streams' events.
    struct AccountsOnly(Count);

    impl Handler for AccountsOnly {
        fn wants(&self, event: &RecordedEvent) -> bool {
            event.category() == "account"
        }
        fn handle(
            &mut self,
            tx: &Transaction<'_>,
            event: &RecordedEvent,
        ) -> Result<(), WorkerError> {
            self.0.handle(tx, event)
        }
    }

    #[test]
    fn checkpoints_past_the_logs_head_go_back_to_it_and_the_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        // No store yet (a process that runs no worker): nothing to do, nothing created.
        assert!(rewind_past(dir.path(), 5).unwrap().is_empty());
        assert!(!dir.path().join(STORE_FILE).exists());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut mailer = StoreSink::new(dir.path(), "mailer", Count(count.clone())).unwrap();
        mailer.apply(&[event(1), event(2), event(3)]).unwrap();
        let mut sms = StoreSink::new(dir.path(), "sms", Count(count.clone())).unwrap();
        sms.apply(&[event(1)]).unwrap();
        drop((mailer, sms));
        assert_eq!(
            rewind_past(dir.path(), 2).unwrap(),
            vec![("mailer".to_string(), 3)]
        );
        // The new event at position 3 is news to the mailer again; the one it handled before
        // keeps its delivery record, so a redelivery of it does nothing.
        let mut mailer = StoreSink::new(dir.path(), "mailer", Count(count.clone())).unwrap();
        assert_eq!(mailer.checkpoint(), 2);
        let before = count.load(std::sync::atomic::Ordering::SeqCst);
        let mut new = event(3);
        new.event_id = uuid::Uuid::from_u128(300);
        mailer.apply(&[new]).unwrap();
        mailer.apply(&[event(2)]).unwrap();
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), before + 1);
        let sms = StoreSink::new(dir.path(), "sms", Count(count)).unwrap();
        assert_eq!(sms.checkpoint(), 1);
        // Nothing past the head: nothing moves.
        drop((mailer, sms));
        assert!(rewind_past(dir.path(), 3).unwrap().is_empty());
    }

    #[test]
    fn an_event_no_handler_wants_moves_the_checkpoint_and_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut access = event(2);
        access.stream = "access-x".into();
        let mut sink =
            StoreSink::new(dir.path(), "mailer", AccountsOnly(Count(count.clone()))).unwrap();
        assert_eq!(sink.apply(&[event(1), access, event(3)]).unwrap(), 3);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
        let records: i64 = sink
            .conn
            .query_row("SELECT count(*) FROM handled", [], |r| r.get(0))
            .unwrap();
        assert_eq!(records, 2);
    }

    #[test]
    fn a_batch_nothing_wants_moves_the_checkpoint_in_memory_and_now_and_then_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let access = |position: u64| {
            let mut e = event(position);
            e.stream = "access-x".into();
            e
        };
        let mut sink =
            StoreSink::new(dir.path(), "mailer", AccountsOnly(Count(count.clone()))).unwrap();
        sink.lazy = true;
        assert_eq!(sink.apply(&[access(1), access(2)]).unwrap(), 2);
        assert_eq!(sink.checkpoint(), 2);
        assert_eq!(checkpoint(&sink.conn, "mailer").unwrap(), 0);
        // A restart reads them again and passes them over again: nothing is handled.
        let mut again =
            StoreSink::new(dir.path(), "mailer", AccountsOnly(Count(count.clone()))).unwrap();
        again.lazy = true;
        assert_eq!(again.checkpoint(), 0);
        assert_eq!(again.apply(&[access(1), access(2)]).unwrap(), 2);
        // Far enough ahead, the store is told; a wanted event always writes it.
        let far = UNWANTED_UNSAVED + 10;
        assert_eq!(again.apply(&[access(far)]).unwrap(), far);
        assert_eq!(checkpoint(&again.conn, "mailer").unwrap(), far);
        assert_eq!(again.apply(&[event(far + 1)]).unwrap(), far + 1);
        assert_eq!(checkpoint(&again.conn, "mailer").unwrap(), far + 1);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
