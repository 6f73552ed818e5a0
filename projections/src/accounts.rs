//! The accounts read model: one row per account, behind the account page (`GET /v1/account`)
//! and the operator's view (`GET /v1/admin/accounts/{user_id}`). Contacts are kept in the clear
//! here (workers need them); pages mask them.

use crate::{Projection, ProjectionError};
use custode_domain::account::{
    AccountKind, AccountOpened, AppPasswordDeactivated, AppPasswordExpiryNoticed,
    AppPasswordIssued, AppPasswordPostponed, CollaboratorDeactivated, CollaboratorLinkIssued,
    CollaboratorPasswordSet, CollaboratorReset, LinkReason, MailProtocolsSet, PasswordChanged,
    PasswordRecovered, RecoveryInfoConfirmed, RecoveryInfoSet, TemporaryPasswordIssued,
    TemporaryPasswordReason, TwoFactorDisabled, TwoFactorEnabled,
};
use custode_domain::account::{
    AccountRevoked, AccountSuspended, ContactEmailChanged, ContactMobileChanged,
    DocumentExpiryNoticed, IdentityDocumentRecorded, IdentityIssued, InactivityDeadlineSet,
    InactivityWarned, LanguageChanged, PasswordExpired, PasswordExpiryNoticed, PasswordExpirySet,
    RecoveryContactChanged, RecoveryContactVerified, RevokedForInactivity, SuspensionEnded,
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
        MailProtocolsSet,
        TwoFactorEnabled,
        TwoFactorDisabled,
        AppPasswordIssued,
        AppPasswordPostponed,
        AppPasswordDeactivated,
        AppPasswordExpiryNoticed,
        CollaboratorLinkIssued,
        CollaboratorPasswordSet,
        CollaboratorReset,
        CollaboratorDeactivated,
        AccountSuspended,
        SuspensionEnded,
        AccountRevoked,
        LanguageChanged,
        RecoveryContactVerified,
        IdentityDocumentRecorded,
        DocumentExpiryNoticed,
        IdentityIssued,
        ContactEmailChanged,
        ContactMobileChanged,
        RecoveryContactChanged,
        PasswordExpirySet,
        PasswordExpiryNoticed,
        PasswordExpired,
        InactivityDeadlineSet,
        InactivityWarned,
        RevokedForInactivity,
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
        // 7: a deactivated collaborator's app password leaves its owner's rows.
        7
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
                imap INTEGER, pop INTEGER, smtp INTEGER,
                suspended_until TEXT
            );
            CREATE INDEX IF NOT EXISTS accounts_by_owner ON accounts (owner_id);
            -- AP-8, CO-1: two-step verification and a collaborator's permissions (a row only
            -- once there is something to say).
            CREATE TABLE IF NOT EXISTS account_security (
                account_id TEXT PRIMARY KEY,
                two_factor TEXT,
                permissions TEXT
            );
            -- AP-2..5: live (or expired, not deactivated) app passwords; AP-7 reads them.
            CREATE TABLE IF NOT EXISTS app_passwords (
                account_id TEXT NOT NULL,
                scope TEXT NOT NULL,
                password_hmac TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                issued_at TEXT NOT NULL,
                PRIMARY KEY (account_id, scope)
            );
            -- AP-6: the page's notification list.
            CREATE TABLE IF NOT EXISTS notifications (
                account_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                at TEXT NOT NULL,
                kind TEXT NOT NULL,
                detail TEXT NOT NULL,
                PRIMARY KEY (account_id, position)
            );
            -- CO-1..3: which collaborator a link's token is for (the account decides if it works).
            CREATE TABLE IF NOT EXISTS collaborator_links (
                token_hash TEXT PRIMARY KEY,
                account_id TEXT NOT NULL
            );
            -- SC-1, SC-5, PW-6, SC-8: what the page shows of an identity's self-care (a row
            -- once there is something to say).
            CREATE TABLE IF NOT EXISTS account_self_care (
                account_id TEXT PRIMARY KEY,
                fiscal_code TEXT,
                spid_code TEXT,
                issued_on TEXT,
                identity_expires_on TEXT,
                password_expires_at TEXT,
                password_expired INTEGER NOT NULL DEFAULT 0,
                email_cooldown_until TEXT,
                mobile_cooldown_until TEXT,
                inactivity_revokes_at TEXT
            );
            -- SC-2: an identity's document on file.
            CREATE TABLE IF NOT EXISTS identity_documents (
                account_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                number TEXT NOT NULL,
                expires_on TEXT NOT NULL
            );",
        )
    }

    /// Applying finds accounts by id; only the owner's list of collaborators reads this.
    fn deferrable_indexes(&self) -> &'static [&'static str] {
        &["accounts_by_owner"]
    }

    fn drop_tables(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "DROP TABLE IF EXISTS accounts; DROP TABLE IF EXISTS account_security;
             DROP TABLE IF EXISTS app_passwords; DROP TABLE IF EXISTS notifications;
             DROP TABLE IF EXISTS collaborator_links; DROP TABLE IF EXISTS identity_documents;
             DROP TABLE IF EXISTS account_self_care;",
        )
    }

    fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let Some((account_id, typed)) = crate::account_event(event)? else {
            return Ok(());
        };
        match typed {
            AccountsFolds::AccountOpened(e) => {
                let mail = e.kind == AccountKind::Mailbox;
                tx.prepare_cached("INSERT INTO accounts (account_id, user_id, user_key, kind, plan, status, language, owner_id,
                        name, created_at, contact_email, contact_mobile, must_change_password,
                        must_set_recovery_info, imap, pop, smtp)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, ?8, ?9, ?10, ?11, 0, 1, ?12, ?12, ?12)")?.execute(
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
                if let Some(fiscal_code) = &e.fiscal_code {
                    self_care(tx, account_id, "fiscal_code = ?2", fiscal_code)?;
                }
                if !e.permissions.is_empty() {
                    let permissions: Vec<String> = e.permissions.iter().map(json_str).collect();
                    tx.prepare_cached("INSERT OR REPLACE INTO account_security (account_id, permissions) VALUES (?1, ?2)")?.execute(
                        params![account_id, permissions.join(",")],
                    )?;
                }
            }
            AccountsFolds::TemporaryPasswordIssued(e) => {
                password_set(tx, account_id)?;
                let reset = e.reason == TemporaryPasswordReason::OperatorReset;
                tx.prepare_cached(
                    "UPDATE accounts SET must_change_password = 1,
                        must_confirm_recovery_info = must_confirm_recovery_info OR ?2
                     WHERE account_id = ?1",
                )?
                .execute(params![account_id, reset])?;
            }
            AccountsFolds::PasswordRecovered(e) => {
                password_set(tx, account_id)?;
                // RI-3: a recovery through a contact proves the holder reads it.
                let (email, mobile) = match e.method {
                    RecoveryMethod::Email => (true, false),
                    RecoveryMethod::Sms => (false, true),
                    RecoveryMethod::Question => (false, false),
                };
                tx.prepare_cached("UPDATE accounts SET must_change_password = 0, must_confirm_recovery_info = 1,
                        password_changed_at = ?2,
                        recovery_email_verified = recovery_email_verified OR (?3 AND recovery_email IS NOT NULL),
                        recovery_mobile_verified = recovery_mobile_verified OR (?4 AND recovery_mobile IS NOT NULL)
                     WHERE account_id = ?1")?.execute(
                    params![account_id, event.occurred_at.to_rfc3339(), email, mobile],
                )?;
            }
            AccountsFolds::RecoveryInfoConfirmed(_) => {
                tx.prepare_cached(
                    "UPDATE accounts SET must_confirm_recovery_info = 0 WHERE account_id = ?1",
                )?
                .execute(params![account_id])?;
            }
            AccountsFolds::PasswordChanged(_) => {
                password_set(tx, account_id)?;
                tx.prepare_cached("UPDATE accounts SET must_change_password = 0, password_changed_at = ?2 WHERE account_id = ?1")?.execute(
                    params![account_id, event.occurred_at.to_rfc3339()],
                )?;
            }
            AccountsFolds::RecoveryInfoSet(e) => {
                tx.prepare_cached("UPDATE accounts SET must_set_recovery_info = 0, must_confirm_recovery_info = 0,
                        recovery_email_verified = CASE WHEN recovery_email IS ?2 THEN recovery_email_verified ELSE 0 END,
                        recovery_mobile_verified = CASE WHEN recovery_mobile IS ?3 THEN recovery_mobile_verified ELSE 0 END,
                        recovery_email = ?2, recovery_mobile = ?3, security_question = ?4
                     WHERE account_id = ?1")?.execute(
                    params![account_id, e.email, e.mobile, e.security_question],
                )?;
            }
            AccountsFolds::MailProtocolsSet(e) => {
                tx.prepare_cached(
                    "UPDATE accounts SET imap = ?2, pop = ?3, smtp = ?4 WHERE account_id = ?1",
                )?
                .execute(params![account_id, e.imap, e.pop, e.smtp])?;
            }
            AccountsFolds::TwoFactorEnabled(e) => {
                tx.prepare_cached(
                    "INSERT INTO account_security (account_id, two_factor) VALUES (?1, ?2)
                     ON CONFLICT (account_id) DO UPDATE SET two_factor = ?2",
                )?
                .execute(params![account_id, e.channel.as_str()])?;
            }
            AccountsFolds::TwoFactorDisabled(_) => {
                tx.prepare_cached(
                    "UPDATE account_security SET two_factor = NULL WHERE account_id = ?1",
                )?
                .execute(params![account_id])?;
            }
            AccountsFolds::AppPasswordIssued(e) => {
                tx.prepare_cached("INSERT OR REPLACE INTO app_passwords (account_id, scope, password_hmac, expires_at, issued_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(
                    params![
                        account_id,
                        e.scope,
                        e.password_hmac,
                        e.expires_at.to_rfc3339(),
                        event.occurred_at.to_rfc3339()
                    ],
                )?;
            }
            AccountsFolds::AppPasswordPostponed(e) => {
                tx.prepare_cached(
                    "UPDATE app_passwords SET expires_at = ?3 WHERE account_id = ?1 AND scope = ?2",
                )?
                .execute(params![
                    account_id,
                    e.scope,
                    e.expires_at.to_rfc3339()
                ])?;
            }
            AccountsFolds::AppPasswordDeactivated(e) => {
                tx.prepare_cached(
                    "DELETE FROM app_passwords WHERE account_id = ?1 AND scope = ?2",
                )?
                .execute(params![account_id, e.scope])?;
            }
            AccountsFolds::AppPasswordExpiryNoticed(e) => {
                let detail = serde_json::json!({
                    "scope": e.scope,
                    "expires_at": e.expires_at,
                    "days_before": e.days_before,
                });
                notification(tx, account_id, event, "app_password_expiry", &detail)?;
            }
            AccountsFolds::CollaboratorLinkIssued(e) => {
                tx.prepare_cached("INSERT OR REPLACE INTO collaborator_links (token_hash, account_id) VALUES (?1, ?2)")?.execute(
                    params![e.token_hash.as_str(), account_id],
                )?;
                if e.reason == LinkReason::Created {
                    tx.prepare_cached(
                        "UPDATE accounts SET status = 'suspended', must_set_recovery_info = 0
                         WHERE account_id = ?1",
                    )?
                    .execute(params![account_id])?;
                }
            }
            AccountsFolds::CollaboratorPasswordSet(_) => {
                password_set(tx, account_id)?;
                tx.prepare_cached(
                    "UPDATE accounts SET status = 'active', must_change_password = 0,
                        password_changed_at = ?2 WHERE account_id = ?1",
                )?
                .execute(params![account_id, event.occurred_at.to_rfc3339()])?;
            }
            AccountsFolds::CollaboratorReset(_) => {
                tx.prepare_cached(
                    "UPDATE accounts SET status = 'suspended' WHERE account_id = ?1",
                )?
                .execute(params![account_id])?;
            }
            AccountsFolds::CollaboratorDeactivated(_) => {
                tx.prepare_cached(
                    "UPDATE accounts SET status = 'deactivated' WHERE account_id = ?1",
                )?
                .execute(params![account_id])?;
                // Its owner's password for it dies with it (AP-7 denies it from now on): the
                // owner's page no longer lists it.
                tx.prepare_cached(
                    "DELETE FROM app_passwords
                     WHERE account_id = (SELECT owner_id FROM accounts WHERE account_id = ?1)
                       AND scope = 'collaborator:' || ?1",
                )?
                .execute(params![account_id])?;
            }
            AccountsFolds::AccountSuspended(e) => {
                tx.prepare_cached("UPDATE accounts SET status = 'suspended', suspended_until = ?2 WHERE account_id = ?1")?.execute(
                    params![account_id, e.until.to_rfc3339()],
                )?;
            }
            AccountsFolds::SuspensionEnded(_) => {
                tx.prepare_cached(
                    "UPDATE accounts SET suspended_until = NULL,
                        status = CASE WHEN status = 'suspended' THEN 'active' ELSE status END
                     WHERE account_id = ?1",
                )?
                .execute(params![account_id])?;
            }
            AccountsFolds::IdentityDocumentRecorded(e) => {
                tx.prepare_cached("INSERT OR REPLACE INTO identity_documents (account_id, kind, number, expires_on)
                     VALUES (?1, ?2, ?3, ?4)")?.execute(
                    params![account_id, json_str(&e.kind), e.number, e.expires_on.to_string()],
                )?;
            }
            AccountsFolds::DocumentExpiryNoticed(e) => {
                let detail = serde_json::json!({
                    "expires_on": e.expires_on,
                    "days_before": e.days_before,
                });
                notification(tx, account_id, event, "document_expiry", &detail)?;
            }
            AccountsFolds::RecoveryContactVerified(e) => {
                // SC-4: the badge holds while that contact is the one on file.
                let (email, mobile) = match e.method {
                    RecoveryMethod::Email => (true, false),
                    _ => (false, true),
                };
                tx.prepare_cached("UPDATE accounts SET
                        recovery_email_verified = recovery_email_verified OR (?2 AND recovery_email IS ?4),
                        recovery_mobile_verified = recovery_mobile_verified OR (?3 AND recovery_mobile IS ?4)
                     WHERE account_id = ?1")?.execute(
                    params![account_id, email, mobile, e.contact],
                )?;
            }
            AccountsFolds::LanguageChanged(e) => {
                tx.prepare_cached("UPDATE accounts SET language = ?2 WHERE account_id = ?1")?
                    .execute(params![account_id, json_str(&e.language)])?;
            }
            AccountsFolds::IdentityIssued(e) => {
                self_care(tx, account_id, "spid_code = ?2", &e.spid_code)?;
                self_care(tx, account_id, "issued_on = ?2", &e.issued_on.to_string())?;
                if let Some(expires_on) = e.expires_on {
                    self_care(
                        tx,
                        account_id,
                        "identity_expires_on = ?2",
                        &expires_on.to_string(),
                    )?;
                }
            }
            AccountsFolds::ContactEmailChanged(e) => {
                tx.prepare_cached("UPDATE accounts SET contact_email = ?2 WHERE account_id = ?1")?
                    .execute(params![account_id, e.email])?;
            }
            AccountsFolds::ContactMobileChanged(e) => {
                tx.prepare_cached("UPDATE accounts SET contact_mobile = ?2 WHERE account_id = ?1")?
                    .execute(params![account_id, e.mobile])?;
                // An operator's change moved the recovery mobile (the lost number) with it.
                if let Some(recovery) = &e.recovery_mobile {
                    tx.prepare_cached(
                        "UPDATE accounts SET recovery_mobile = ?2, recovery_mobile_verified = 0 WHERE account_id = ?1",
                    )?
                    .execute(params![account_id, recovery])?;
                }
            }
            AccountsFolds::RecoveryContactChanged(e) => {
                let column = match e.method {
                    RecoveryMethod::Email => "email_cooldown_until = ?2",
                    _ => "mobile_cooldown_until = ?2",
                };
                self_care(tx, account_id, column, &e.cooldown_until.to_rfc3339())?;
            }
            AccountsFolds::PasswordExpirySet(e) => {
                self_care(
                    tx,
                    account_id,
                    "password_expires_at = ?2",
                    &e.expires_at.to_rfc3339(),
                )?;
            }
            AccountsFolds::PasswordExpiryNoticed(e) => {
                let detail = serde_json::json!({
                    "expires_at": e.expires_at,
                    "days_before": e.days_before,
                });
                notification(tx, account_id, event, "password_expiry", &detail)?;
            }
            AccountsFolds::PasswordExpired(e) => {
                self_care(
                    tx,
                    account_id,
                    "password_expired = (password_expires_at IS ?2)",
                    &e.expires_at.to_rfc3339(),
                )?;
            }
            AccountsFolds::InactivityDeadlineSet(e) => {
                self_care(
                    tx,
                    account_id,
                    "inactivity_revokes_at = ?2",
                    &e.revokes_at.to_rfc3339(),
                )?;
            }
            AccountsFolds::InactivityWarned(e) => {
                self_care(
                    tx,
                    account_id,
                    "inactivity_revokes_at = ?2",
                    &e.revokes_at.to_rfc3339(),
                )?;
                let detail = serde_json::json!({
                    "revokes_at": e.revokes_at,
                    "days_before": e.days_before,
                });
                notification(tx, account_id, event, "inactivity_warning", &detail)?;
            }
            AccountsFolds::RevokedForInactivity(_) => {
                tx.prepare_cached("UPDATE accounts SET status = 'revoked', suspended_until = NULL WHERE account_id = ?1")?.execute(
                    params![account_id],
                )?;
            }
            AccountsFolds::AccountRevoked(_) => {
                tx.prepare_cached("UPDATE accounts SET status = 'revoked', suspended_until = NULL WHERE account_id = ?1")?.execute(
                    params![account_id],
                )?;
            }
        }
        Ok(())
    }
}

/// Sets one column of the account's self-care row (`assignment` uses `?2` for `value`).
fn self_care(
    tx: &Transaction<'_>,
    account_id: &str,
    assignment: &str,
    value: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO account_self_care (account_id) VALUES (?1) ON CONFLICT (account_id) DO NOTHING")?.execute(
        params![account_id],
    )?;
    tx.execute(
        &format!("UPDATE account_self_care SET {assignment} WHERE account_id = ?1"),
        params![account_id, value],
    )?;
    Ok(())
}

/// PW-6: a new password's expiry (if any) follows it; the old one's is over.
fn password_set(tx: &Transaction<'_>, account_id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE account_self_care SET password_expires_at = NULL, password_expired = 0
         WHERE account_id = ?1",
    )?
    .execute(params![account_id])?;
    Ok(())
}

/// SC-1, SC-5, PW-6, SC-8: the account's self-care row.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SelfCareRow {
    pub fiscal_code: Option<String>,
    pub spid_code: Option<String>,
    pub issued_on: Option<String>,
    pub identity_expires_on: Option<String>,
    pub password_expires_at: Option<String>,
    pub password_expired: bool,
    pub email_cooldown_until: Option<String>,
    pub mobile_cooldown_until: Option<String>,
    pub inactivity_revokes_at: Option<String>,
}

pub fn self_care_of(conn: &Connection, account_id: &str) -> rusqlite::Result<SelfCareRow> {
    Ok(conn
        .prepare_cached(
            "SELECT fiscal_code, spid_code, issued_on, identity_expires_on, password_expires_at,
                password_expired, email_cooldown_until, mobile_cooldown_until, inactivity_revokes_at
             FROM account_self_care WHERE account_id = ?1",
        )?
        .query_row(params![account_id], |r| {
            Ok(SelfCareRow {
                fiscal_code: r.get(0)?,
                spid_code: r.get(1)?,
                issued_on: r.get(2)?,
                identity_expires_on: r.get(3)?,
                password_expires_at: r.get(4)?,
                password_expired: r.get(5)?,
                email_cooldown_until: r.get(6)?,
                mobile_cooldown_until: r.get(7)?,
                inactivity_revokes_at: r.get(8)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// An entry of the page's notification list (AP-6, SC-2), keyed by the event's position.
fn notification(
    tx: &Transaction<'_>,
    account_id: &str,
    event: &RecordedEvent,
    kind: &str,
    detail: &serde_json::Value,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO notifications (account_id, position, at, kind, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        account_id,
        event.position,
        event.occurred_at.to_rfc3339(),
        kind,
        detail.to_string()
    ])?;
    Ok(())
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
    /// SC-6: until when a self-suspension lasts.
    pub suspended_until: Option<String>,
}

const COLUMNS: &str = "account_id, user_id, kind, plan, status, language, owner_id, name, created_at,
    contact_email, contact_mobile, must_change_password, must_set_recovery_info, recovery_email,
    recovery_email_verified, recovery_mobile, recovery_mobile_verified, security_question, imap, pop, smtp,
    must_confirm_recovery_info, suspended_until";

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
        suspended_until: r.get(22)?,
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

/// SC-2: an identity's document on file: (kind, number, expires_on).
pub fn document_of(
    conn: &Connection,
    account_id: &str,
) -> rusqlite::Result<Option<(String, String, String)>> {
    conn.prepare_cached(
        "SELECT kind, number, expires_on FROM identity_documents WHERE account_id = ?1",
    )?
    .query_row(params![account_id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .optional()
}

/// The account a user id names, without the rest of its row (AH-1's reports, at ingest rates).
pub fn account_id_of(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT account_id FROM accounts WHERE user_key = ?1")?
        .query_row(params![user_key(user_id)], |r| r.get(0))
        .optional()
}

/// The collaborators a mailbox owns, oldest first, each with its permissions (CO-1).
pub fn collaborators_of(
    conn: &Connection,
    owner_id: &str,
) -> rusqlite::Result<Vec<(AccountRow, Vec<String>)>> {
    let columns: String = COLUMNS
        .split(',')
        .map(|c| format!("a.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    conn.prepare_cached(&format!(
        "SELECT {columns}, s.permissions FROM accounts a
         LEFT JOIN account_security s ON s.account_id = a.account_id
         WHERE a.owner_id = ?1 ORDER BY a.created_at, a.account_id"
    ))?
    .query_map(params![owner_id], |r| {
        // The column after the row's own.
        let permissions: Option<String> = r.get(COLUMNS.split(',').count())?;
        Ok((row(r)?, split_permissions(permissions)))
    })?
    .collect()
}

fn split_permissions(text: Option<String>) -> Vec<String> {
    text.map(|p| {
        p.split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// AP-8, CO-1: an account's second factor (its channel) and a collaborator's permissions.
pub fn security_of(
    conn: &Connection,
    account_id: &str,
) -> rusqlite::Result<(Option<String>, Vec<String>)> {
    let found: Option<(Option<String>, Option<String>)> = conn
        .prepare_cached(
            "SELECT two_factor, permissions FROM account_security WHERE account_id = ?1",
        )?
        .query_row(params![account_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (two_factor, permissions) = found.unwrap_or((None, None));
    let permissions = permissions
        .map(|p| {
            p.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok((two_factor, permissions))
}

/// AP-2: one app password as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppPasswordRow {
    pub scope: String,
    pub expires_at: String,
    pub issued_at: String,
}

pub fn app_passwords_of(
    conn: &Connection,
    account_id: &str,
) -> rusqlite::Result<Vec<AppPasswordRow>> {
    conn.prepare_cached(
        "SELECT scope, expires_at, issued_at FROM app_passwords WHERE account_id = ?1 ORDER BY scope",
    )?
    .query_map(params![account_id], |r| {
        Ok(AppPasswordRow {
            scope: r.get(0)?,
            expires_at: r.get(1)?,
            issued_at: r.get(2)?,
        })
    })?
    .collect()
}

/// AP-6: the page's notification list, newest first (at most `limit`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationRow {
    pub at: String,
    pub kind: String,
    pub detail: serde_json::Value,
}

pub fn notifications_of(
    conn: &Connection,
    account_id: &str,
    limit: u32,
) -> rusqlite::Result<Vec<NotificationRow>> {
    conn.prepare_cached(
        "SELECT at, kind, detail FROM notifications WHERE account_id = ?1 ORDER BY position DESC LIMIT ?2",
    )?
    .query_map(params![account_id, limit], |r| {
        let detail: String = r.get(2)?;
        Ok(NotificationRow {
            at: r.get(0)?,
            kind: r.get(1)?,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        })
    })?
    .collect()
}

/// CO-1..3: the collaborator a link's token (its hash) was issued to.
pub fn collaborator_of_link(
    conn: &Connection,
    token_hash: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT account_id FROM collaborator_links WHERE token_hash = ?1")?
        .query_row(params![token_hash], |r| r.get(0))
        .optional()
}

/// A unit enum from the text it is stored as (`"active"`), the way [`json_str`] wrote it.
fn from_text<T: serde::de::DeserializeOwned>(text: String) -> rusqlite::Result<T> {
    serde_json::from_value(serde_json::Value::String(text))
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// AP-7: what a mail server's check is decided on, in two indexed reads: the account the user
/// id names with its mailbox (itself, or a collaborator's owner) and that mailbox's protocols,
/// then the app password of `scope` (canonical) on the mailbox. Returns the facts and that
/// mailbox's id.
pub fn check_facts(
    conn: &Connection,
    user_id: &str,
    scope: &str,
) -> rusqlite::Result<Option<(custode_domain::access::CheckFacts, uuid::Uuid)>> {
    use custode_domain::access::CheckFacts;
    use custode_domain::account::MailProtocolsSet;
    let found = conn
        .prepare_cached(
            "SELECT a.account_id, a.kind, a.status, COALESCE(a.owner_id, a.account_id),
                    m.status, COALESCE(m.imap, 0), COALESCE(m.pop, 0), COALESCE(m.smtp, 0),
                    COALESCE(s.permissions, '')
             FROM accounts a
             JOIN accounts m ON m.account_id = COALESCE(a.owner_id, a.account_id)
             LEFT JOIN account_security s ON s.account_id = a.account_id
             WHERE a.user_key = ?1",
        )?
        .query_row(params![user_key(user_id)], |r| {
            let account_id: String = r.get(0)?;
            let permissions: String = r.get(8)?;
            let facts = CheckFacts {
                account_id: uuid::Uuid::parse_str(&account_id)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                kind: from_text(r.get(1)?)?,
                status: from_text(r.get(2)?)?,
                mailbox_status: from_text(r.get(4)?)?,
                protocols: MailProtocolsSet {
                    imap: r.get(5)?,
                    pop: r.get(6)?,
                    smtp: r.get(7)?,
                },
                mail_programs: split_permissions(Some(permissions))
                    .iter()
                    .any(|p| p == "mail_programs"),
                password: None,
            };
            Ok((facts, r.get::<_, String>(3)?))
        })
        .optional()?;
    let Some((mut facts, mailbox_id)) = found else {
        return Ok(None);
    };
    facts.password = conn
        .prepare_cached(
            "SELECT password_hmac, expires_at FROM app_passwords WHERE account_id = ?1 AND scope = ?2",
        )?
        .query_row(params![mailbox_id, scope], |r| {
            let expires_at: String = r.get(1)?;
            let expires_at = chrono::DateTime::parse_from_rfc3339(&expires_at)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
                .with_timezone(&chrono::Utc);
            Ok((r.get(0)?, expires_at))
        })
        .optional()?;
    let mailbox_id = uuid::Uuid::parse_str(&mailbox_id)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    Ok(Some((facts, mailbox_id)))
}

/// AP-7 at memory speed: the [`check_facts`] of recently checked user ids and scopes, kept
/// true by the projector. Every change to what a check reads (the account's row, its
/// mailbox's, its permissions, its app passwords) is an event of an `account-<uuid>` stream,
/// so the projector, once it has committed a batch and before it publishes the position it
/// applied, drops the entries of every account (and every collaborator of every mailbox)
/// those events touched: a check that follows a command's answer (read-your-writes) never
/// finds what the command changed. A read that overlaps such a drop is not kept (the epoch
/// says so), so an entry never outlives the row it was read from. Only facts with an app
/// password for the scope are kept: a user id with no account, or a scope with no password
/// (any `collaborator:<id>` parses), reads the file each time and cannot fill the cache.
pub struct FactsCache(
    crate::cache::ByAccount<(String, String), custode_domain::access::CheckFacts>,
);

/// The most entries a [`FactsCache`] keeps before it starts afresh.
pub const FACTS_KEPT: usize = 200_000;

impl Default for FactsCache {
    fn default() -> Self {
        Self(crate::cache::ByAccount::new(FACTS_KEPT))
    }
}

impl FactsCache {
    /// Where a read starts: pass it to [`FactsCache::keep`] with what was read.
    pub fn epoch(&self) -> u64 {
        self.0.epoch()
    }

    /// The facts of `user_id` and `scope`, when kept.
    pub fn get(&self, user_id: &str, scope: &str) -> Option<custode_domain::access::CheckFacts> {
        self.0.get(&(user_key(user_id), scope.to_string()))
    }

    /// Keeps `facts`, read from the read models after `epoch` was taken, unless a drop has
    /// happened since (the read may predate it).
    pub fn keep(
        &self,
        epoch: u64,
        user_id: &str,
        scope: &str,
        facts: &custode_domain::access::CheckFacts,
        mailbox_id: uuid::Uuid,
    ) {
        // Only an app password that exists is kept: a check for a scope with none (any
        // `collaborator:<id>` parses) reads the file each time, and cannot fill the cache.
        if facts.password.is_none() {
            return;
        }
        let key = (user_key(user_id), scope.to_string());
        self.0.keep(
            epoch,
            key,
            facts.clone(),
            vec![facts.account_id, mailbox_id],
        );
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl crate::cache::Forget for FactsCache {
    /// Only account streams' events change what a check reads (access records do not).
    fn forget(&self, events: &[RecordedEvent]) {
        self.0.forget_accounts(&crate::cache::accounts_of(events));
    }

    /// A check reads the core read models alone: the access history changes nothing of it.
    fn forget_lane(&self, events: &[RecordedEvent], lane: crate::Lane) {
        if lane == crate::Lane::Core {
            self.forget(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FactsCache;
    use crate::cache::Forget;
    use custode_domain::access::CheckFacts;
    use custode_domain::account::{AccountKind, AccountStatus, MailProtocolsSet};
    use custode_domain::{Actor, RecordedEvent};
    use uuid::Uuid;

    fn facts(account_id: Uuid) -> CheckFacts {
        CheckFacts {
            account_id,
            kind: AccountKind::Collaborator,
            status: AccountStatus::Active,
            mailbox_status: AccountStatus::Active,
            protocols: MailProtocolsSet {
                imap: true,
                pop: true,
                smtp: true,
            },
            mail_programs: true,
            password: Some(("hmac".into(), chrono::DateTime::UNIX_EPOCH)),
        }
    }

    fn without_password(account_id: Uuid) -> CheckFacts {
        CheckFacts {
            password: None,
            ..facts(account_id)
        }
    }

    fn on(stream: String) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream,
            version: 1,
            position: 1,
            event_type: "MailProtocolsSet".into(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            actor: Actor::system(),
            correlation_id: Uuid::nil(),
            causation_id: Uuid::nil(),
            payload: serde_json::json!({}),
            hash: String::new(),
        }
    }

    #[test]
    fn an_entry_goes_with_a_change_to_its_account_or_its_mailbox_and_never_outlives_one() {
        let (collaborator, mailbox, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let cache = FactsCache::default();
        let epoch = cache.epoch();
        cache.keep(
            epoch,
            "Collab@Pec.Example.it",
            "mailbox",
            &facts(collaborator),
            mailbox,
        );
        // Found under its user key, whatever the spelling.
        assert_eq!(
            cache.get(" collab@pec.example.it", "mailbox"),
            Some(facts(collaborator))
        );
        assert_eq!(cache.get("collab@pec.example.it", "archive"), None);
        // Access records and other accounts' events leave it.
        cache.forget(&[
            on(format!("access-{collaborator}")),
            on(format!("account-{other}")),
        ]);
        assert_eq!(cache.len(), 1);
        // A change to the mailbox drops its collaborator's entry.
        cache.forget(&[on(format!("account-{mailbox}"))]);
        assert!(cache.is_empty());
        // So does a change to the collaborator itself.
        cache.keep(
            cache.epoch(),
            "collab@pec.example.it",
            "mailbox",
            &facts(collaborator),
            mailbox,
        );
        cache.forget(&[on(format!("account-{collaborator}"))]);
        assert!(cache.is_empty());
        // No index outlives its entry: the mailbox's went with the collaborator's drop.
        assert_eq!(cache.0.indexed(), 0);
        // A scope with no app password is never kept.
        let none = without_password(collaborator);
        cache.keep(
            cache.epoch(),
            "collab@pec.example.it",
            "collaborator:x",
            &none,
            mailbox,
        );
        assert!(cache.is_empty());
        // A read that began before a drop is not kept: it may hold what the drop was for.
        let before = cache.epoch();
        cache.forget(&[on(format!("account-{other}"))]);
        cache.keep(
            before,
            "collab@pec.example.it",
            "mailbox",
            &facts(collaborator),
            mailbox,
        );
        assert!(cache.is_empty());
    }
}
