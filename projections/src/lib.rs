//! Read models: each [`Projection`] folds events into its own SQLite tables in the read-model
//! file. A batch of events is applied to every projection in one transaction together with each
//! projection's checkpoint, so a crash never leaves a table ahead of or behind its checkpoint.
//! Dropping the file and folding the log again gives the same tables (`custode replay`).

pub mod access;
pub mod accounts;
pub mod audit;
pub mod cache;
pub mod notices;
pub mod sessions;

use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;

/// Threads SQLite's sorter may use to build a rebuild's deferred indexes (`PRAGMA threads`):
/// the replay's reader and applier are done by then.
const SORT_THREADS: i64 = 2;

/// The access history's rows past retention dropped in one transaction (AH-3).
pub const EXPIRY_CHUNK: usize = 2_000;

/// One read model.
pub trait Projection: Send {
    /// Stable name, the key of its checkpoint.
    fn name(&self) -> &'static str;
    /// Bumped when the tables change shape: the projection is then dropped and rebuilt.
    fn version(&self) -> u32;
    fn create(&self, conn: &Connection) -> rusqlite::Result<()>;
    fn drop_tables(&self, conn: &Connection) -> rusqlite::Result<()>;
    fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError>;
    /// Indexes that nothing reads while events are applied: a rebuild into a fresh file
    /// creates them once at the end (one sort) instead of keeping them up to date row by row.
    fn deferrable_indexes(&self) -> &'static [&'static str] {
        &[]
    }
    /// The lane it is applied in (see [`Lane`]).
    fn lane(&self) -> Lane {
        Lane::Core
    }
    /// Applies consecutive events in order; a projection that can share work across a batch
    /// (one lookup and one update per account, say) overrides it.
    fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        events.iter().try_for_each(|event| self.apply(tx, event))
    }
    /// Applies `events[unseen..]` with what [`Preparer::prepare`] made of `events` (whole); a
    /// projection whose decoding is part of it takes its share from `prepared`.
    fn apply_prepared(
        &self,
        tx: &Transaction<'_>,
        events: &[RecordedEvent],
        unseen: usize,
        _prepared: &mut Prepared,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(tx, events.get(unseen..).unwrap_or_default())
    }
}

/// What can be made of a batch of events before it is applied, without the read models: the
/// decoding of the access history's items (the largest share of a replay's applying). A
/// replay prepares the next batch on its reader thread while the applier writes this one.
#[derive(Debug)]
pub struct Prepared {
    /// How many events, and the last one's position: what it was made of.
    events: usize,
    last: Option<u64>,
    access: Option<Vec<access::Item>>,
}

/// Prepares batches for a [`ReadModels`] (see [`Prepared`]); `Send`, for another thread.
#[derive(Debug, Clone, Copy)]
pub struct Preparer {
    access: bool,
}

impl Preparer {
    pub fn prepare(&self, events: &[RecordedEvent]) -> Prepared {
        Prepared {
            access: self.access.then(|| access::decode(events)),
            ..self.nothing(events)
        }
    }

    /// `events` with nothing decoded ahead: the applier decodes them as it applies them.
    pub fn nothing(&self, events: &[RecordedEvent]) -> Prepared {
        Prepared {
            events: events.len(),
            last: events.last().map(|e| e.position),
            access: None,
        }
    }
}

/// The live projector's two lanes. Every read model but one takes an event or two per command;
/// the access history takes a row for every mail server's check and every reported access,
/// thousands a second under load (AP-7, AH-1). Applied in one transaction with the rest, it
/// set the pace of them all: a saturating mix left sessions and pages seconds behind their
/// commands. So the access history is its own lane, allowed to trail the others, and the live
/// projector keeps the core lane at the log's head first (see `custode_workers::projector`).
/// Each read model has its own checkpoint, moved in the transaction that applies it, so the
/// lanes resume where each stopped; a replay applies both together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Accounts, sessions, notices and the audit index: what commands read back.
    Core,
    /// The access history (AH-1..3).
    History,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read-model storage failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("event {event_id} ({event_type}) cannot be read: {reason}")]
    Undecodable {
        event_id: String,
        event_type: String,
        reason: String,
    },
}

impl ProjectionError {
    pub fn undecodable(event: &RecordedEvent, reason: impl ToString) -> Self {
        ProjectionError::Undecodable {
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            reason: reason.to_string(),
        }
    }
}

/// An event of an account stream as a member of group `G`, with the account's id; `None` for
/// other streams and for types the group does not name.
pub fn account_event<G: custode_domain::envelope::EventGroup>(
    event: &RecordedEvent,
) -> Result<Option<(&str, G)>, ProjectionError> {
    if event.category() != "account" {
        return Ok(None);
    }
    let typed = G::from_recorded(event).map_err(|e| ProjectionError::undecodable(event, e))?;
    Ok(typed.map(|t| (event.stream.trim_start_matches("account-"), t)))
}

/// How a read-model file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL, synced at checkpoints: the live read models.
    Normal,
    /// No journal, no sync: a rebuild into a fresh file, put in place only when complete.
    Rebuild,
}

/// The projection called `name`.
pub fn named(name: &str) -> Option<Box<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}

/// Every projection custode has, in the order they are applied.
pub fn all() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(accounts::AccountsProjection),
        Box::new(sessions::SessionsProjection),
        Box::new(notices::NoticesProjection),
        Box::new(access::AccessHistoryProjection),
        Box::new(audit::AuditIndexProjection),
    ]
}

/// The writable side of the read models: owned by the projector, one per process.
pub struct ReadModels {
    conn: Connection,
    projections: Vec<(Box<dyn Projection>, u64)>,
    /// A rebuild's deferred indexes, as created, to create again in [`ReadModels::finish`].
    deferred: Vec<String>,
}

impl ReadModels {
    /// Opens the read-model file, creating tables and rebuilding any projection whose version
    /// changed. `synchronous=NORMAL`: a read model lost to a power cut is rebuilt from the log.
    pub fn open(path: &Path) -> Result<Self, ProjectionError> {
        Self::open_with(path, all(), Durability::Normal)
    }

    /// Opens the read-model file with only `projections` (a replay of one read model). With
    /// [`Durability::Rebuild`] nothing is journaled or synced: for a fresh file that is only
    /// put in place once complete.
    pub fn open_with(
        path: &Path,
        projections: Vec<Box<dyn Projection>>,
        durability: Durability,
    ) -> Result<Self, ProjectionError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every projection's statements stay prepared (rusqlite keeps 16 by default: fewer than
        // the projections use together, so each batch would parse some again).
        conn.set_prepared_statement_cache_capacity(256);
        match durability {
            Durability::Normal => {
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            Durability::Rebuild => {
                // A fresh file no one else opens until it is complete: no journal, no sync,
                // no lock to take and release each batch.
                conn.pragma_update(None, "journal_mode", "OFF")?;
                conn.pragma_update(None, "synchronous", "OFF")?;
                conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
                conn.pragma_update(None, "temp_store", "MEMORY")?;
                // The deferred indexes are built at the end, when the log's reader is idle:
                // their sorts may use a second thread.
                conn.pragma_update(None, "threads", 2)?;
            }
        }
        // The access history is large and written at random places (one account's rows sit
        // together): a 64 MiB page cache keeps its inner pages in memory (default: 2 MiB).
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS checkpoints (
                name TEXT PRIMARY KEY, version INTEGER NOT NULL, position INTEGER NOT NULL)",
        )?;
        let mut opened = Vec::new();
        for projection in projections {
            let stored: Option<(u32, u64)> = conn
                .query_row(
                    "SELECT version, position FROM checkpoints WHERE name = ?1",
                    params![projection.name()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let position = match stored {
                Some((version, position)) if version == projection.version() => position,
                _ => {
                    projection.drop_tables(&conn)?;
                    conn.execute(
                        "INSERT OR REPLACE INTO checkpoints (name, version, position) VALUES (?1, ?2, 0)",
                        params![projection.name(), projection.version()],
                    )?;
                    0
                }
            };
            projection.create(&conn)?;
            opened.push((projection, position));
        }
        let mut deferred = Vec::new();
        if durability == Durability::Rebuild {
            for (projection, position) in &opened {
                if *position != 0 {
                    continue;
                }
                for index in projection.deferrable_indexes() {
                    let sql: Option<String> = conn
                        .query_row(
                            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
                            params![index],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(sql) = sql {
                        conn.execute_batch(&format!("DROP INDEX \"{index}\""))?;
                        deferred.push(sql);
                    }
                }
            }
        }
        Ok(Self {
            conn,
            projections: opened,
            deferred,
        })
    }

    /// Ends a rebuild: creates the indexes it deferred.
    pub fn finish(mut self) -> Result<(), ProjectionError> {
        // The sorts read the tables once, in order: they need no 64 MiB page cache, and SQLite
        // sizes a sort's memory by the cache. At 8 MiB a replay of a million events peaks 40 MiB
        // lower (138 against 178 MiB) and builds its indexes in the same time.
        if !self.deferred.is_empty() {
            self.conn.pragma_update(None, "cache_size", -8_192)?;
            // The log is read by now, so its reader's core is free: SQLite's sorter may sort
            // on a second thread.
            self.conn.pragma_update(None, "threads", SORT_THREADS)?;
        }
        for sql in std::mem::take(&mut self.deferred) {
            self.conn.execute_batch(&sql)?;
        }
        Ok(())
    }

    /// Forgets `name`'s checkpoint in the file at `path`, so that the next open drops its
    /// tables and folds the log again (AU-3's `replay --projection`).
    pub fn reset(path: &Path, name: &str) -> Result<(), ProjectionError> {
        if let Some(conn) = Self::checkpoints_at(path)? {
            conn.execute("DELETE FROM checkpoints WHERE name = ?1", params![name])?;
        }
        Ok(())
    }

    /// Forgets the checkpoint of every read model in the file at `path` that stands past
    /// `head`, the log's last position, so that the next open folds it again from the log;
    /// returns their names with the positions they stood at. Read models past the head applied
    /// events the log no longer holds (it lost its end to a power cut with `log.synchronous =
    /// normal`, or an older copy of it was put back), and would pass over the new events that
    /// take those positions.
    pub fn reset_past(path: &Path, head: u64) -> Result<Vec<(String, u64)>, ProjectionError> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        let Some(conn) = Self::checkpoints_at(path)? else {
            return Ok(Vec::new());
        };
        let head = i64::try_from(head).unwrap_or(i64::MAX);
        let past = conn
            .prepare("DELETE FROM checkpoints WHERE position > ?1 RETURNING name, position")?
            .query_map(params![head], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(past)
    }

    /// A connection to the file at `path`, when it holds the checkpoints' table.
    fn checkpoints_at(path: &Path) -> Result<Option<Connection>, ProjectionError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let exists = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'checkpoints'",
            [],
            |r| r.get::<_, i64>(0),
        )? == 1;
        Ok(exists.then_some(conn))
    }

    /// The position every projection has applied (the lowest of their checkpoints).
    pub fn checkpoint(&self) -> u64 {
        self.projections.iter().map(|(_, p)| *p).min().unwrap_or(0)
    }

    /// The positions the core lane and the access history have applied (each the other's when
    /// this file holds none of its read models).
    pub fn lanes(&self) -> (u64, u64) {
        let core = self.lane_checkpoint(Lane::Core);
        let history = self.lane_checkpoint(Lane::History);
        let all = self.checkpoint();
        (core.unwrap_or(all), history.unwrap_or(all))
    }

    /// The position every projection of `lane` has applied; `None` when none is open here.
    pub fn lane_checkpoint(&self, lane: Lane) -> Option<u64> {
        self.projections
            .iter()
            .filter(|(projection, _)| projection.lane() == lane)
            .map(|(_, p)| *p)
            .min()
    }

    /// [`ReadModels::apply`] for the projections of `lane` alone: the others' checkpoints stay
    /// where they are. Returns the lowest checkpoint of the lane.
    pub fn apply_lane(
        &mut self,
        events: &[RecordedEvent],
        lane: Lane,
    ) -> Result<u64, ProjectionError> {
        let preparer = Preparer {
            access: lane == Lane::History && self.preparer().access,
        };
        let prepared = preparer.prepare(events);
        self.apply_where(events, prepared, Some(lane))?;
        Ok(self
            .lane_checkpoint(lane)
            .unwrap_or_else(|| self.checkpoint()))
    }

    /// Applies a batch of consecutive events to every projection that has not yet seen them,
    /// and moves the checkpoints, in one transaction.
    pub fn apply(&mut self, events: &[RecordedEvent]) -> Result<u64, ProjectionError> {
        let prepared = self.preparer().prepare(events);
        self.apply_prepared(events, prepared)
    }

    /// What prepares batches for these read models, on any thread.
    pub fn preparer(&self) -> Preparer {
        Preparer {
            access: self
                .projections
                .iter()
                .any(|(p, _)| p.name() == access::AccessHistoryProjection.name()),
        }
    }

    /// [`ReadModels::apply`] with `prepared`, made of `events` by [`ReadModels::preparer`]
    /// (made again here should it be of another batch).
    pub fn apply_prepared(
        &mut self,
        events: &[RecordedEvent],
        prepared: Prepared,
    ) -> Result<u64, ProjectionError> {
        self.apply_where(events, prepared, None)?;
        Ok(self.checkpoint())
    }

    /// Applies `events` to the projections of `lane` (all of them with `None`).
    fn apply_where(
        &mut self,
        events: &[RecordedEvent],
        mut prepared: Prepared,
        lane: Option<Lane>,
    ) -> Result<(), ProjectionError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(());
        };
        if prepared.events != events.len() || prepared.last != Some(last) {
            prepared = self.preparer().prepare(events);
        }
        let within =
            |projection: &dyn Projection| lane.is_none_or(|lane| projection.lane() == lane);
        let tx = self.conn.transaction()?;
        for (projection, checkpoint) in &self.projections {
            if !within(projection.as_ref()) {
                continue;
            }
            let unseen = events.partition_point(|e| e.position <= *checkpoint);
            projection.apply_prepared(&tx, events, unseen, &mut prepared)?;
            tx.prepare_cached(
                "UPDATE checkpoints SET position = ?2 WHERE name = ?1 AND position < ?2",
            )?
            .execute(params![projection.name(), last])?;
        }
        tx.commit()?;
        for (projection, checkpoint) in &mut self.projections {
            if within(projection.as_ref()) {
                *checkpoint = (*checkpoint).max(last);
            }
        }
        Ok(())
    }

    /// AH-3: drops up to [`EXPIRY_CHUNK`] of the access history's rows from before `cutoff`, in
    /// one transaction, so that readers and the next batch never wait long: fewer than a chunk
    /// dropped means none is left. Returns how many went.
    pub fn expire_history_chunk(
        &mut self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, ProjectionError> {
        let tx = self.conn.transaction()?;
        let n = access::expire(&tx, cutoff, EXPIRY_CHUNK)?;
        tx.commit()?;
        Ok(n)
    }

    /// A dump of every read-model table, rows sorted, for comparing a rebuild with the live
    /// models (AU-3).
    pub fn dump(&self) -> rusqlite::Result<Vec<String>> {
        dump(&self.conn)
    }
}

/// Every table's rows as text, sorted; checkpoints excluded.
pub fn dump(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'checkpoints' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tables.sort();
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\""))?;
        let columns = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut cells = Vec::with_capacity(columns);
                for i in 0..columns {
                    let value: rusqlite::types::Value = r.get(i)?;
                    cells.push(format!("{value:?}"));
                }
                Ok(format!("{table}: {}", cells.join(" | ")))
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows.sort();
        out.extend(rows);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use custode_domain::account::{
        AccessChannel, AccountEvent, AccountKind, AccountOpened, Language, SessionStarted,
    };
    use custode_domain::envelope::encode;
    use custode_domain::{Actor, TokenHash};
    use uuid::Uuid;

    fn recorded(position: u64, stream: &str, version: u64, event: &AccountEvent) -> RecordedEvent {
        let (event_type, payload) = encode(event).unwrap();
        RecordedEvent {
            event_id: Uuid::from_u128(u128::from(position)),
            stream: stream.into(),
            version,
            position,
            event_type,
            schema_version: 1,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            actor: Actor::system(),
            correlation_id: Uuid::nil(),
            causation_id: Uuid::nil(),
            payload,
            hash: "0".repeat(64),
        }
    }

    fn history() -> Vec<RecordedEvent> {
        let account = Uuid::from_u128(7);
        let stream = format!("account-{account}");
        let opened = AccountEvent::AccountOpened(AccountOpened {
            account_id: account,
            kind: AccountKind::Mailbox,
            user_id: "Mario@PEC.it".into(),
            plan: None,
            owner_id: None,
            name: None,
            fiscal_code: None,
            contact_email: None,
            contact_mobile: None,
            language: Language::En,
            migrated: false,
            permissions: Vec::new(),
        });
        let started = AccountEvent::SessionStarted(SessionStarted {
            session_id: Uuid::from_u128(9),
            token_hash: TokenHash::from_hex("ab".repeat(32)),
            started_at: chrono::DateTime::UNIX_EPOCH,
            expires_at: chrono::DateTime::UNIX_EPOCH,
            fresh_until: chrono::DateTime::UNIX_EPOCH,
            client_ip: None,
            channel: AccessChannel::Api,
            required_actions: vec![],
        });
        vec![
            recorded(1, &stream, 1, &opened),
            recorded(2, "userid-x", 1, &opened),
            recorded(3, &stream, 2, &started),
        ]
    }

    #[test]
    fn a_batch_moves_every_checkpoint_and_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut models = ReadModels::open(&dir.path().join("read.db")).unwrap();
        assert_eq!(models.apply(&history()).unwrap(), 3);
        let first = models.dump().unwrap();
        assert!(first
            .iter()
            .any(|row| row.contains("Mario@PEC.it") && row.contains("\"mario@pec.it\"")));
        // A reopened model resumes at its checkpoint; a replayed batch changes nothing.
        drop(models);
        let mut models = ReadModels::open(&dir.path().join("read.db")).unwrap();
        assert_eq!(models.checkpoint(), 3);
        models.apply(&history()).unwrap();
        assert_eq!(models.dump().unwrap(), first);
    }

    #[test]
    fn read_models_past_the_logs_head_are_folded_again_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.db");
        // No file yet: nothing to do, nothing created.
        assert!(ReadModels::reset_past(&path, 0).unwrap().is_empty());
        assert!(!path.exists());
        let events = history();
        let mut models = ReadModels::open(&path).unwrap();
        models.apply_lane(&events, Lane::Core).unwrap();
        models.apply_lane(&events[..1], Lane::History).unwrap();
        drop(models);
        // The log lost its last two events: the core lane stood past its head.
        let mut past = ReadModels::reset_past(&path, 1).unwrap();
        past.sort();
        let mut expected: Vec<(String, u64)> = all()
            .iter()
            .filter(|p| p.lane() == Lane::Core)
            .map(|p| (p.name().to_string(), 3))
            .collect();
        expected.sort();
        assert_eq!(past, expected);
        let mut models = ReadModels::open(&path).unwrap();
        assert_eq!(models.lanes(), (0, 1));
        // Folded again, the core holds what the log holds, and nothing more.
        assert_eq!(models.apply_lane(&events[..1], Lane::Core).unwrap(), 1);
        assert!(!models
            .dump()
            .unwrap()
            .iter()
            .any(|row| row.starts_with("sessions:")));
        drop(models);
        assert!(ReadModels::reset_past(&path, 1).unwrap().is_empty());
    }

    #[test]
    fn lanes_applied_apart_end_where_both_applied_together_do() {
        let dir = tempfile::tempdir().unwrap();
        let events = history();
        let mut together = ReadModels::open(&dir.path().join("together.db")).unwrap();
        together.apply(&events).unwrap();
        let whole = together.dump().unwrap();
        assert!(whole.iter().any(|row| row.starts_with("access_history:")));
        assert!(whole.iter().any(|row| row.starts_with("sessions:")));

        let path = dir.path().join("apart.db");
        let mut apart = ReadModels::open(&path).unwrap();
        // The core lane runs ahead: sessions are there, the access history is not.
        assert_eq!(apart.apply_lane(&events, Lane::Core).unwrap(), 3);
        assert_eq!(apart.lane_checkpoint(Lane::History), Some(0));
        assert_eq!(apart.checkpoint(), 0);
        let ahead = apart.dump().unwrap();
        assert!(ahead.iter().any(|row| row.starts_with("sessions:")));
        assert!(!ahead.iter().any(|row| row.starts_with("access_history:")));
        // The history follows in batches of its own, and resumes at its checkpoint.
        assert_eq!(apart.apply_lane(&events[..2], Lane::History).unwrap(), 2);
        drop(apart);
        let mut apart = ReadModels::open(&path).unwrap();
        assert_eq!(apart.lane_checkpoint(Lane::Core), Some(3));
        assert_eq!(apart.lane_checkpoint(Lane::History), Some(2));
        assert_eq!(apart.apply_lane(&events, Lane::History).unwrap(), 3);
        assert_eq!(apart.checkpoint(), 3);
        assert_eq!(apart.dump().unwrap(), whole);
        // A lane given what it has applied changes nothing.
        apart.apply_lane(&events, Lane::Core).unwrap();
        assert_eq!(apart.dump().unwrap(), whole);
    }

    #[test]
    fn a_projection_whose_shape_changed_is_dropped_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.db");
        let mut models = ReadModels::open(&path).unwrap();
        models.apply(&history()).unwrap();
        let live = models.dump().unwrap();
        drop(models);
        // As if the accounts projection's code had moved to a new version.
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE checkpoints SET version = 0 WHERE name = 'accounts'",
                [],
            )
            .unwrap();
        let mut models = ReadModels::open(&path).unwrap();
        assert_eq!(models.checkpoint(), 0);
        assert!(!models
            .dump()
            .unwrap()
            .iter()
            .any(|row| row.starts_with("accounts:")));
        models.apply(&history()).unwrap();
        assert_eq!(models.dump().unwrap(), live);
    }
}
