//! The notices read model (NT-3): what became of each notice the workers reported on. Dead
//! letters are the rows in state `dead`, which an operator lists and retries; the account page
//! shows its own undelivered notices.

use crate::{Projection, ProjectionError};
use custode_domain::envelope::decode;
use custode_domain::notice::{NoticeEvent, NoticeRef};
use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, Transaction};

pub struct NoticesProjection;

fn upsert(
    tx: &Transaction<'_>,
    notice: &NoticeRef,
    state: &str,
    attempts: u32,
    error: Option<&str>,
    at: &str,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO notices (notice_id, account_id, source_event_id, channel, template, recipient,
                              state, attempts, last_error, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (notice_id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
             last_error = excluded.last_error, updated_at = excluded.updated_at",
    )?
    .execute(params![
        notice.notice_id.to_string(),
        notice.account_id.to_string(),
        notice.source_event_id.to_string(),
        notice.channel.as_str(),
        notice.template,
        notice.to,
        state,
        attempts,
        error,
        at,
    ])
}

impl Projection for NoticesProjection {
    fn name(&self) -> &'static str {
        "notices"
    }

    fn version(&self) -> u32 {
        1
    }

    fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS notices (
                notice_id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL,
                source_event_id TEXT NOT NULL,
                channel TEXT NOT NULL,
                template TEXT NOT NULL,
                recipient TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                last_error TEXT,
                updated_at TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS notices_by_state ON notices (state, updated_at);
            CREATE INDEX IF NOT EXISTS notices_by_account ON notices (account_id, state);",
        )
    }

    /// Applying finds notices by id; only the dead-letter queries read these.
    fn deferrable_indexes(&self) -> &'static [&'static str] {
        &["notices_by_state", "notices_by_account"]
    }

    fn drop_tables(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DROP TABLE IF EXISTS notices")
    }

    fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.category() != "notice" {
            return Ok(());
        }
        let typed: NoticeEvent =
            decode(event).map_err(|e| ProjectionError::undecodable(event, e))?;
        let at = event.occurred_at.to_rfc3339();
        match typed {
            NoticeEvent::NotificationSent(e) => {
                upsert(tx, &e.notice, "sent", e.attempts, None, &at)?;
            }
            NoticeEvent::NotificationFailed(e) => {
                upsert(tx, &e.notice, "dead", e.attempts, Some(&e.error), &at)?;
            }
            NoticeEvent::NotificationRetryRequested(e) => {
                tx.prepare_cached(
                    "UPDATE notices SET state = 'retrying', updated_at = ?2 WHERE notice_id = ?1",
                )?
                .execute(params![e.notice_id.to_string(), at])?;
            }
        }
        Ok(())
    }
}

/// A notice as the operator's dead-letter list and the account page show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NoticeRow {
    pub notice_id: String,
    pub account_id: String,
    pub channel: String,
    pub template: String,
    /// Masked.
    pub recipient: String,
    pub state: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub updated_at: String,
}

const COLUMNS: &str =
    "notice_id, account_id, channel, template, recipient, state, attempts, last_error, updated_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NoticeRow> {
    Ok(NoticeRow {
        notice_id: r.get(0)?,
        account_id: r.get(1)?,
        channel: r.get(2)?,
        template: r.get(3)?,
        recipient: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        last_error: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// Every dead letter, the most recent first.
pub fn dead_letters(conn: &Connection) -> rusqlite::Result<Vec<NoticeRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notices WHERE state = 'dead' ORDER BY updated_at DESC, notice_id"
    ))?
    .query_map([], row)?
    .collect()
}

/// The notices of `account_id` that could not be delivered (NT-3: the account page shows them).
pub fn undelivered(conn: &Connection, account_id: &str) -> rusqlite::Result<Vec<NoticeRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notices WHERE account_id = ?1 AND state = 'dead'
         ORDER BY updated_at DESC, notice_id"
    ))?
    .query_map([account_id], row)?
    .collect()
}
