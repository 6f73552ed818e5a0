//! The accounts read model: one row per account, behind the account page (`GET /v1/account`)
//! and the operator's view (`GET /v1/admin/accounts/{user_id}`). Contacts are kept in the clear
//! here (workers need them); pages mask them.

use crate::{Projection, ProjectionError};
use custode_domain::account::{
    AccountKind, AccountOpened, PasswordChanged, PasswordRecovered, RecoveryInfoConfirmed,
    RecoveryInfoSet, TemporaryPasswordIssued, TemporaryPasswordReason,
};

custode_domain::event_group! {
    /// The events the accounts read model folds.
    pub enum AccountsFolds {
        AccountOpened,
        TemporaryPasswordIssued,
        PasswordChanged,
        PasswordRecovered,
        RecoveryInfoSet,
        RecoveryInfoConfirmed,
    }
}
use custode_domain::recovery::RecoveryMethod;
use custode_domain::user_registry::user_key;
use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

pub struct AccountsProjection;

impl Projection for AccountsProjection {
    fn name(&self) -> &'static str {
        "accounts"
    }

    fn version(&self) -> u32 {
        2
    }

    fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS accounts (
                account_id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                user_key TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                plan TEXT,
                status TEXT NOT NULL,
                language TEXT NOT NULL,
                owner_id TEXT,
                name TEXT,
                created_at TEXT NOT NULL,
                contact_email TEXT,
                contact_mobile TEXT,
                must_change_password INTEGER NOT NULL,
                must_set_recovery_info INTEGER NOT NULL,
                must_confirm_recovery_info INTEGER NOT NULL DEFAULT 0,
                recovery_email TEXT,
                recovery_email_verified INTEGER NOT NULL DEFAULT 0,
                recovery_mobile TEXT,
                recovery_mobile_verified INTEGER NOT NULL DEFAULT 0,
                security_question TEXT,
                password_changed_at TEXT,
                imap INTEGER, pop INTEGER, smtp INTEGER
            );
            CREATE INDEX IF NOT EXISTS accounts_by_owner ON accounts (owner_id);",
        )
    }

    fn drop_tables(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DROP TABLE IF EXISTS accounts")
    }

    fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let Some((account_id, typed)) = crate::account_event(event)? else {
            return Ok(());
        };
        match typed {
            AccountsFolds::AccountOpened(e) => {
                let mail = e.kind == AccountKind::Mailbox;
                tx.execute(
                    "INSERT INTO accounts (account_id, user_id, user_key, kind, plan, status, language, owner_id,
                        name, created_at, contact_email, contact_mobile, must_change_password,
                        must_set_recovery_info, imap, pop, smtp)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, ?8, ?9, ?10, ?11, 0, 1, ?12, ?12, ?12)",
                    params![
                        account_id,
                        e.user_id,
                        user_key(&e.user_id),
                        e.kind.as_str(),
                        e.plan.map(|p| json_str(&p)),
                        json_str(&e.language),
                        e.owner_id.map(|o| o.to_string()),
                        e.name,
                        event.occurred_at.to_rfc3339(),
                        e.contact_email,
                        e.contact_mobile,
                        mail.then_some(1),
                    ],
                )?;
            }
            AccountsFolds::TemporaryPasswordIssued(e) => {
                let reset = e.reason == TemporaryPasswordReason::OperatorReset;
                tx.execute(
                    "UPDATE accounts SET must_change_password = 1,
                        must_confirm_recovery_info = must_confirm_recovery_info OR ?2
                     WHERE account_id = ?1",
                    params![account_id, reset],
                )?;
            }
            AccountsFolds::PasswordRecovered(e) => {
                // RI-3: a recovery through a contact proves the holder reads it.
                let (email, mobile) = match e.method {
                    RecoveryMethod::Email => (true, false),
                    RecoveryMethod::Sms => (false, true),
                    RecoveryMethod::Question => (false, false),
                };
                tx.execute(
                    "UPDATE accounts SET must_change_password = 0, must_confirm_recovery_info = 1,
                        password_changed_at = ?2,
                        recovery_email_verified = recovery_email_verified OR (?3 AND recovery_email IS NOT NULL),
                        recovery_mobile_verified = recovery_mobile_verified OR (?4 AND recovery_mobile IS NOT NULL)
                     WHERE account_id = ?1",
                    params![account_id, event.occurred_at.to_rfc3339(), email, mobile],
                )?;
            }
            AccountsFolds::RecoveryInfoConfirmed(_) => {
                tx.execute(
                    "UPDATE accounts SET must_confirm_recovery_info = 0 WHERE account_id = ?1",
                    params![account_id],
                )?;
            }
            AccountsFolds::PasswordChanged(_) => {
                tx.execute(
                    "UPDATE accounts SET must_change_password = 0, password_changed_at = ?2 WHERE account_id = ?1",
                    params![account_id, event.occurred_at.to_rfc3339()],
                )?;
            }
            AccountsFolds::RecoveryInfoSet(e) => {
                tx.execute(
                    "UPDATE accounts SET must_set_recovery_info = 0, must_confirm_recovery_info = 0,
                        recovery_email_verified = CASE WHEN recovery_email IS ?2 THEN recovery_email_verified ELSE 0 END,
                        recovery_mobile_verified = CASE WHEN recovery_mobile IS ?3 THEN recovery_mobile_verified ELSE 0 END,
                        recovery_email = ?2, recovery_mobile = ?3, security_question = ?4
                     WHERE account_id = ?1",
                    params![account_id, e.email, e.mobile, e.security_question],
                )?;
            }
        }
        Ok(())
    }
}

/// A unit enum's serde name (`"pro"`), for storing it as text.
fn json_str<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// One account as the read model has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountRow {
    pub account_id: String,
    pub user_id: String,
    pub kind: String,
    pub plan: Option<String>,
    pub state: String,
    pub language: String,
    pub owner_id: Option<String>,
    pub name: Option<String>,
    pub created_at: String,
    pub contact_email: Option<String>,
    pub contact_mobile: Option<String>,
    pub must_change_password: bool,
    pub must_set_recovery_info: bool,
    pub recovery_email: Option<String>,
    pub recovery_email_verified: bool,
    pub recovery_mobile: Option<String>,
    pub recovery_mobile_verified: bool,
    pub security_question: Option<String>,
    pub imap: Option<bool>,
    pub pop: Option<bool>,
    pub smtp: Option<bool>,
    pub must_confirm_recovery_info: bool,
}

const COLUMNS: &str = "account_id, user_id, kind, plan, status, language, owner_id, name, created_at,
    contact_email, contact_mobile, must_change_password, must_set_recovery_info, recovery_email,
    recovery_email_verified, recovery_mobile, recovery_mobile_verified, security_question, imap, pop, smtp,
    must_confirm_recovery_info";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        account_id: r.get(0)?,
        user_id: r.get(1)?,
        kind: r.get(2)?,
        plan: r.get(3)?,
        state: r.get(4)?,
        language: r.get(5)?,
        owner_id: r.get(6)?,
        name: r.get(7)?,
        created_at: r.get(8)?,
        contact_email: r.get(9)?,
        contact_mobile: r.get(10)?,
        must_change_password: r.get(11)?,
        must_set_recovery_info: r.get(12)?,
        recovery_email: r.get(13)?,
        recovery_email_verified: r.get(14)?,
        recovery_mobile: r.get(15)?,
        recovery_mobile_verified: r.get(16)?,
        security_question: r.get(17)?,
        imap: r.get(18)?,
        pop: r.get(19)?,
        smtp: r.get(20)?,
        must_confirm_recovery_info: r.get(21)?,
    })
}

pub fn by_id(conn: &Connection, account_id: &str) -> rusqlite::Result<Option<AccountRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE account_id = ?1"
    ))?
    .query_row(params![account_id], row)
    .optional()
}

pub fn by_user_id(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<AccountRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE user_key = ?1"
    ))?
    .query_row(params![user_key(user_id)], row)
    .optional()
}

/// The collaborators a mailbox owns, oldest first.
pub fn collaborators_of(conn: &Connection, owner_id: &str) -> rusqlite::Result<Vec<AccountRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE owner_id = ?1 ORDER BY created_at, account_id"
    ))?
    .query_map(params![owner_id], row)?
    .collect()
}
