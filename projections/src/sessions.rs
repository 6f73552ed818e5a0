//! The sessions read model: token hash → session, for authenticating each request. A session
//! row says when it ends absolutely and when its step-up window closes; idle time is tracked by
//! the API process itself (SEC-3).

use crate::{Projection, ProjectionError};
use custode_domain::account::{SessionReauthenticated, SessionStarted, SessionsEnded};

custode_domain::event_group! {
    /// The events the sessions read model folds.
    pub enum SessionsFolds {
        SessionStarted,
        SessionReauthenticated,
        SessionsEnded,
    }
}
use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

pub struct SessionsProjection;

impl Projection for SessionsProjection {
    fn name(&self) -> &'static str {
        "sessions"
    }

    fn version(&self) -> u32 {
        1
    }

    fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions (
                session_id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL,
                token_hash TEXT NOT NULL UNIQUE,
                started_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                fresh_until TEXT NOT NULL,
                ended_at TEXT,
                end_reason TEXT
            );
            CREATE INDEX IF NOT EXISTS sessions_by_account ON sessions (account_id);",
        )
    }

    /// Applying finds sessions by id; only the account's session list reads this.
    fn deferrable_indexes(&self) -> &'static [&'static str] {
        &["sessions_by_account"]
    }

    fn drop_tables(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DROP TABLE IF EXISTS sessions")
    }

    fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let Some((account_id, typed)) = crate::account_event(event)? else {
            return Ok(());
        };
        match typed {
            SessionsFolds::SessionStarted(e) => {
                tx.prepare_cached("INSERT INTO sessions (session_id, account_id, token_hash, started_at, expires_at, fresh_until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
                    params![
                        e.session_id.to_string(),
                        account_id,
                        e.token_hash.as_str(),
                        e.started_at.to_rfc3339(),
                        e.expires_at.to_rfc3339(),
                        e.fresh_until.to_rfc3339(),
                    ],
                )?;
            }
            SessionsFolds::SessionReauthenticated(e) => {
                tx.prepare_cached("UPDATE sessions SET fresh_until = ?2 WHERE session_id = ?1")?
                    .execute(params![
                        e.session_id.to_string(),
                        e.fresh_until.to_rfc3339()
                    ])?;
            }
            SessionsFolds::SessionsEnded(e) => {
                let reason = serde_json::to_value(e.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string));
                for id in e.session_ids {
                    tx.prepare_cached("UPDATE sessions SET ended_at = ?2, end_reason = ?3 WHERE session_id = ?1 AND ended_at IS NULL")?.execute(
                        params![id.to_string(), event.occurred_at.to_rfc3339(), reason],
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub session_id: String,
    pub account_id: String,
    pub started_at: String,
    pub expires_at: String,
    pub fresh_until: String,
    pub ended_at: Option<String>,
}

pub fn by_token_hash(conn: &Connection, token_hash: &str) -> rusqlite::Result<Option<SessionRow>> {
    conn.prepare_cached(
        "SELECT session_id, account_id, started_at, expires_at, fresh_until, ended_at FROM sessions WHERE token_hash = ?1",
    )?
    .query_row(params![token_hash], |r| {
        Ok(SessionRow {
            session_id: r.get(0)?,
            account_id: r.get(1)?,
            started_at: r.get(2)?,
            expires_at: r.get(3)?,
            fresh_until: r.get(4)?,
            ended_at: r.get(5)?,
        })
    })
    .optional()
}
