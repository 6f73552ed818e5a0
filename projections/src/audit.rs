//! The audit index (AU-2): which streams concern which account, so that one account's export
//! reads those streams (indexed reads on `(stream, version)`) instead of scanning the log.
//!
//! A stream is tied to an account by its first event that names the account: its own stream
//! and its access stream by their names, a user-id claim, a recovery started for it, a notice
//! about it, a hardware token bound to it (from the binding on). Collaborators are tied to
//! their owner in `audit_owners`, so the owner's export takes in theirs. Decoys and unknown ids'
//! subject streams concern no account and are never tied.

use crate::{Projection, ProjectionError};
use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, Transaction};
use uuid::Uuid;

pub struct AuditIndexProjection;

/// What one event says about the account its stream concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tie {
    pub account_id: Uuid,
    /// The collaborator's owner, from the collaborator's opening.
    pub owner_id: Option<Uuid>,
    /// Events of the stream before this position do not concern the account.
    pub from_position: u64,
}

fn payload_uuid(event: &RecordedEvent, field: &str) -> Option<Uuid> {
    event
        .payload
        .get(field)
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// The account `event`'s stream concerns, when this event is the one that says so (most events
/// say nothing new and cost a string comparison).
pub fn tie(event: &RecordedEvent) -> Option<Tie> {
    let (category, rest) = event.stream.split_once('-')?;
    let whole = |account_id| Tie {
        account_id,
        owner_id: None,
        from_position: 0,
    };
    match category {
        "account" if event.version == 1 => {
            let account_id = Uuid::parse_str(rest).ok()?;
            Some(Tie {
                owner_id: payload_uuid(event, "owner_id"),
                ..whole(account_id)
            })
        }
        "access" if event.version == 1 => Uuid::parse_str(rest).ok().map(whole),
        "userid" if event.event_type == "UserIdClaimed" => {
            payload_uuid(event, "account_id").map(whole)
        }
        "recovery" if event.event_type == "RecoveryStarted" => {
            payload_uuid(event, "account_id").map(whole)
        }
        "notice" => payload_uuid(event, "account_id").map(whole),
        "hwtoken" if event.event_type == "HardwareTokenBound" => payload_uuid(event, "account_id")
            .map(|account_id| Tie {
                from_position: event.position,
                ..whole(account_id)
            }),
        _ => None,
    }
}

/// The keyed hash of the user id a recovery was started for, when it opened no account (a
/// decoy: an unknown id, or an account that cannot recover): its stream is tied to that
/// subject, and an account's export takes in its own user id's.
pub fn subject_tie(event: &RecordedEvent) -> Option<&str> {
    if event.event_type != "RecoveryStarted" || !event.stream.starts_with("recovery-") {
        return None;
    }
    if event
        .payload
        .get("account_id")
        .is_some_and(|v| !v.is_null())
    {
        return None;
    }
    event.payload.get("subject").and_then(|v| v.as_str())
}

/// The index key of a subject's streams.
pub fn subject_key(subject_hex: &str) -> String {
    format!("subject:{subject_hex}")
}

/// The recovery streams tied to a subject.
pub fn streams_of_subject(conn: &Connection, subject_hex: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT stream FROM audit_streams WHERE account_id = ?1")?;
    let rows = stmt.query_map(params![subject_key(subject_hex)], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Records `tie` for `stream` (idempotent: the first tie of a stream to an account stands).
pub fn record(conn: &Connection, stream: &str, tie: &Tie) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO audit_streams (account_id, stream, from_position) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![
        tie.account_id.to_string(),
        stream,
        i64::try_from(tie.from_position).unwrap_or(i64::MAX)
    ])?;
    if let Some(owner) = tie.owner_id {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO audit_owners (account_id, owner_id) VALUES (?1, ?2)",
        )?
        .execute(params![tie.account_id.to_string(), owner.to_string()])?;
    }
    Ok(())
}

/// The streams tied to `account_id` or to one of its collaborators, each with the position its
/// events start to concern the account.
pub fn streams_of(conn: &Connection, account_id: Uuid) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stream, min(from_position) FROM audit_streams
         WHERE account_id = ?1
            OR account_id IN (SELECT account_id FROM audit_owners WHERE owner_id = ?1)
         GROUP BY stream ORDER BY stream",
    )?;
    let rows = stmt.query_map(params![account_id.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
    })?;
    rows.collect()
}

/// The collaborators of `account_id` the index knows.
pub fn collaborators_of(conn: &Connection, account_id: Uuid) -> rusqlite::Result<Vec<Uuid>> {
    let mut stmt =
        conn.prepare_cached("SELECT account_id FROM audit_owners WHERE owner_id = ?1")?;
    let rows = stmt.query_map(params![account_id.to_string()], |r| r.get::<_, String>(0))?;
    Ok(rows
        .filter_map(|r| r.ok().and_then(|s| Uuid::parse_str(&s).ok()))
        .collect())
}

impl Projection for AuditIndexProjection {
    fn name(&self) -> &'static str {
        "audit_index"
    }

    fn version(&self) -> u32 {
        1
    }

    fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit_streams (
                account_id TEXT NOT NULL,
                stream TEXT NOT NULL,
                from_position INTEGER NOT NULL,
                PRIMARY KEY (account_id, stream)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS audit_owners (
                account_id TEXT PRIMARY KEY,
                owner_id TEXT NOT NULL
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS audit_owners_by_owner ON audit_owners (owner_id);",
        )
    }

    fn drop_tables(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DROP TABLE IF EXISTS audit_streams; DROP TABLE IF EXISTS audit_owners")
    }

    fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if let Some(tie) = tie(event) {
            record(tx, &event.stream, &tie)?;
        } else if let Some(subject) = subject_tie(event) {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO audit_streams (account_id, stream, from_position) VALUES (?1, ?2, 0)",
            )?
            .execute(params![subject_key(subject), event.stream])?;
        }
        Ok(())
    }
}
