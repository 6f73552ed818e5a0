//! The access history (AH-1..3): every login to this service, every mail server's check of an
//! app password and every reported access to a service provider, one row each, for the
//! holder's history page. This is the largest table custode keeps (a busy mailbox's mail
//! programs check on every connection), so its shape follows its two queries and its ingest:
//!
//! - rows are clustered by account and time (`WITHOUT ROWID`, primary key `(account, at,
//!   position)`), so a page is one range scan of one account's newest rows, whatever the other
//!   accounts hold; the log position breaks ties and makes the cursor exact;
//! - a second index `(account, outcome, at, position)` serves the outcome filter the same way;
//! - a third, `(at)`, finds the rows past retention without touching the others, so dropping a
//!   day costs that day's rows;
//! - an account is a small integer key here (`access_accounts`), not its 36-character id, in
//!   every row and index entry;
//! - `access_accounts` keeps each account's total and last access, moved on each record, so
//!   neither is a count over the table and neither changes when old rows are dropped.
//!
//! `total` counts every access ever recorded (both outcomes); `last_access` is the newest
//! successful one. Times are milliseconds since the epoch (UTC).

use crate::{Projection, ProjectionError};
use chrono::{DateTime, TimeZone, Utc};
use custode_domain::access::{
    history_item, login_item, AccessEvent, HistoryItem, ItemKind, LoginRecord, Outcome,
};
use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::HashMap;

pub struct AccessHistoryProjection;

/// The largest page a caller may ask for.
pub const MAX_PAGE: usize = 100;

impl Projection for AccessHistoryProjection {
    fn name(&self) -> &'static str {
        "access_history"
    }

    fn version(&self) -> u32 {
        1
    }

    fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS access_accounts (
                key INTEGER PRIMARY KEY,
                account_id TEXT NOT NULL UNIQUE,
                total INTEGER NOT NULL DEFAULT 0,
                last_access INTEGER
            );
            CREATE TABLE IF NOT EXISTS access_history (
                account INTEGER NOT NULL,
                at INTEGER NOT NULL,
                position INTEGER NOT NULL,
                outcome INTEGER NOT NULL,
                kind INTEGER NOT NULL,
                service TEXT NOT NULL,
                reason TEXT,
                client_ip TEXT,
                PRIMARY KEY (account, at, position)
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS access_history_by_outcome
                ON access_history (account, outcome, at, position);
            CREATE INDEX IF NOT EXISTS access_history_by_time ON access_history (at);",
        )
    }

    fn lane(&self) -> crate::Lane {
        crate::Lane::History
    }

    /// Applying only inserts by primary key; pages and expiry read these.
    fn deferrable_indexes(&self) -> &'static [&'static str] {
        &["access_history_by_outcome", "access_history_by_time"]
    }

    fn drop_tables(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "DROP TABLE IF EXISTS access_history; DROP TABLE IF EXISTS access_accounts;",
        )
    }

    fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(event))
    }

    /// One row per login or access; each account's key looked up once a batch, and its total
    /// and last access updated once a batch.
    fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        write(tx, events, decode(events))
    }

    /// The items a replay's reader thread decoded: what is left is writing them.
    fn apply_prepared(
        &self,
        tx: &Transaction<'_>,
        events: &[RecordedEvent],
        unseen: usize,
        prepared: &mut crate::Prepared,
    ) -> Result<(), ProjectionError> {
        match prepared.access.take() {
            Some(mut items) => {
                items.retain(|item| item.index >= unseen);
                write(tx, events, items)
            }
            None => self.apply_batch(tx, events.get(unseen..).unwrap_or_default()),
        }
    }
}

/// A login or access decoded from the event at `index` of a batch, or why it cannot be.
#[derive(Debug)]
pub struct Item {
    index: usize,
    item: Result<HistoryItem, ProjectionError>,
}

/// The history item of every login and access of `events`, in order. It needs no database, so
/// a replay decodes them on its reader thread (see [`crate::Prepared`]).
pub fn decode(events: &[RecordedEvent]) -> Vec<Item> {
    let mut items = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let item = match event.category() {
            "account" => match crate::account_event::<LoginRecord>(event) {
                Ok(Some((_, login))) => Ok(login_item(&login, event.occurred_at)),
                Ok(None) => continue,
                Err(e) => Err(e),
            },
            "access" => {
                // The two types of the stream, read straight into their structs.
                match event.event_type.as_str() {
                    "ServiceAccessReported" => custode_domain::envelope::decode_payload(event)
                        .map(AccessEvent::ServiceAccessReported),
                    "AppPasswordChecked" => custode_domain::envelope::decode_payload(event)
                        .map(AccessEvent::AppPasswordChecked),
                    _ => custode_domain::envelope::decode(event),
                }
                .map(|record| history_item(record, event.occurred_at))
                .map_err(|e| ProjectionError::undecodable(event, e))
            }
            _ => continue,
        };
        items.push(Item { index, item });
    }
    items
}

/// Inserts a row for each of `items` (decoded from `events`), then moves each account's total
/// and last access once.
fn write(
    tx: &Transaction<'_>,
    events: &[RecordedEvent],
    items: Vec<Item>,
) -> Result<(), ProjectionError> {
    let mut rows = tx.prepare_cached(
        "INSERT OR IGNORE INTO access_history
             (account, at, position, outcome, kind, service, reason, client_ip)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut keys: HashMap<&str, i64> = HashMap::new();
    // Per account key: rows added, and the latest successful access among them.
    let mut added: HashMap<i64, (i64, Option<i64>)> = HashMap::new();
    for Item { index, item } in items {
        let item = item?;
        // Items are decoded from these very events (see `ReadModels::apply_prepared`).
        let Some(event) = events.get(index) else {
            continue;
        };
        let account_id = match event.category() {
            "access" => event.stream.trim_start_matches("access-"),
            _ => event.stream.trim_start_matches("account-"),
        };
        let key = match keys.get(account_id) {
            Some(key) => *key,
            None => {
                let key = account_key(tx, account_id)?;
                keys.insert(account_id, key);
                key
            }
        };
        if insert(&mut rows, key, event.position, &item)? {
            let entry = added.entry(key).or_insert((0, None));
            entry.0 += 1;
            if item.outcome == Outcome::Success {
                let at = item.at.timestamp_millis();
                entry.1 = Some(entry.1.map_or(at, |last: i64| last.max(at)));
            }
        }
    }
    let mut update = tx.prepare_cached(
        "UPDATE access_accounts SET total = total + ?2,
             last_access = CASE WHEN ?3 IS NOT NULL AND (last_access IS NULL OR last_access < ?3)
                                THEN ?3 ELSE last_access END
         WHERE key = ?1",
    )?;
    for (key, (rows, last)) in added {
        update.execute(params![key, rows, last])?;
    }
    Ok(())
}

fn outcome_code(outcome: Outcome) -> i64 {
    match outcome {
        Outcome::Success => 0,
        Outcome::Failure => 1,
    }
}

fn kind_code(kind: ItemKind) -> i64 {
    match kind {
        ItemKind::Login => 0,
        ItemKind::AppPassword => 1,
        ItemKind::ServiceAccess => 2,
    }
}

fn kind_of(code: i64) -> ItemKind {
    match code {
        0 => ItemKind::Login,
        1 => ItemKind::AppPassword,
        _ => ItemKind::ServiceAccess,
    }
}

fn account_key(tx: &Transaction<'_>, account_id: &str) -> rusqlite::Result<i64> {
    let mut find = tx.prepare_cached("SELECT key FROM access_accounts WHERE account_id = ?1")?;
    if let Some(key) = find
        .query_row(params![account_id], |r| r.get(0))
        .optional()?
    {
        return Ok(key);
    }
    tx.prepare_cached("INSERT INTO access_accounts (account_id) VALUES (?1)")?
        .execute(params![account_id])?;
    Ok(tx.last_insert_rowid())
}

/// Adds the row of `item`; whether it was new (a batch replayed after a crash is applied again
/// only past the checkpoint, and the primary key holds the position: never counted twice).
fn insert(
    rows: &mut rusqlite::CachedStatement<'_>,
    key: i64,
    position: u64,
    item: &HistoryItem,
) -> rusqlite::Result<bool> {
    let inserted = rows.execute(params![
        key,
        item.at.timestamp_millis(),
        position,
        outcome_code(item.outcome),
        kind_code(item.kind),
        item.service,
        item.reason,
        item.client_ip,
    ])?;
    Ok(inserted == 1)
}

/// AH-3: drops the rows of accesses before `cutoff`, at most `chunk` at a time, and says how
/// many went. Totals and last accesses stay as they are.
pub fn expire(conn: &Connection, cutoff: DateTime<Utc>, chunk: usize) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM access_history WHERE (account, at, position) IN (
             SELECT account, at, position FROM access_history WHERE at < ?1 LIMIT ?2)",
    )?
    .execute(params![cutoff.timestamp_millis(), chunk as i64])
}

/// Where a page starts: after the item at `at` with log position `position` (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub position: i64,
}

impl Cursor {
    /// The opaque form handed to callers.
    pub fn encode(self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}.{}", self.at, self.position))
    }

    pub fn decode(text: &str) -> Option<Self> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (at, position) = text.split_once('.')?;
        Some(Cursor {
            at: at.parse().ok()?,
            position: position.parse().ok().filter(|p: &i64| *p > 0)?,
        })
    }
}

/// AH-2: what a page asks for. `from` and `to` are inclusive.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// AH-2: an account's history page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub total: u64,
    pub last_access: Option<DateTime<Utc>>,
    pub items: Vec<HistoryItem>,
    pub next: Option<Cursor>,
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The newest successful access of `account_id` (a login, a reported access, a mail
/// program's check), if any.
pub fn last_access(conn: &Connection, account_id: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(conn
        .prepare_cached("SELECT last_access FROM access_accounts WHERE account_id = ?1")?
        .query_row(params![account_id], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten()
        .map(time))
}

/// AH-2: the newest items of `account_id` that match `filter`, after its cursor, with the
/// account's total and last access. One range scan of one index whichever the filter.
pub fn page(conn: &Connection, account_id: &str, filter: &Filter) -> rusqlite::Result<Page> {
    let account: Option<(i64, u64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT key, total, last_access FROM access_accounts WHERE account_id = ?1",
        )?
        .query_row(params![account_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((key, total, last_access)) = account else {
        return Ok(Page {
            total: 0,
            last_access: None,
            items: Vec::new(),
            next: None,
        });
    };
    let limit = filter.limit.clamp(1, MAX_PAGE);
    let from = filter.from.map_or(i64::MIN, |t| t.timestamp_millis());
    let to = filter.to.map_or(i64::MAX, |t| t.timestamp_millis());
    // One upper bound, as a row value, so the scan starts right at it: the cursor (exclusive)
    // when it lies within the range, else the range's end (inclusive: no position is MAX).
    // Two bounds (`at <= to` and the cursor) let SQLite start from the wrong one and walk
    // every newer row of the account first.
    let (before_at, before_position) = match filter.after {
        Some(c) if c.at <= to => (c.at, c.position),
        _ => (to, i64::MAX),
    };
    let (sql, outcome) = match filter.outcome {
        Some(outcome) => (
            "SELECT at, position, outcome, kind, service, reason, client_ip
             FROM access_history INDEXED BY access_history_by_outcome
             WHERE account = ?1 AND outcome = ?6 AND at >= ?2 AND (at, position) < (?3, ?4)
             ORDER BY at DESC, position DESC LIMIT ?5",
            outcome_code(outcome),
        ),
        None => (
            "SELECT at, position, outcome, kind, service, reason, client_ip
             FROM access_history
             WHERE account = ?1 AND ?6 = ?6 AND at >= ?2 AND (at, position) < (?3, ?4)
             ORDER BY at DESC, position DESC LIMIT ?5",
            -1,
        ),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        params![
            key,
            from,
            before_at,
            before_position,
            (limit + 1) as i64,
            outcome
        ],
        |r| {
            let at: i64 = r.get(0)?;
            let position: i64 = r.get(1)?;
            let outcome: i64 = r.get(2)?;
            let item = HistoryItem {
                at: time(at),
                kind: kind_of(r.get(3)?),
                service: r.get(4)?,
                outcome: if outcome == 0 {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                reason: r.get(5)?,
                client_ip: r.get(6)?,
            };
            Ok((Cursor { at, position }, item))
        },
    )?;
    let mut items = Vec::with_capacity(limit + 1);
    for row in rows {
        items.push(row?);
    }
    items.truncate(limit + 1);
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|(cursor, _)| *cursor)
    } else {
        None
    };
    Ok(Page {
        total,
        last_access: last_access.map(time),
        items: items.into_iter().map(|(_, item)| item).collect(),
        next,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::Projection;
    use chrono::Duration;
    use custode_domain::access::{AppPasswordChecked, DenyReason, ServiceAccessReported};
    use custode_domain::envelope::encode;
    use custode_domain::Actor;
    use uuid::Uuid;

    const ACCOUNT: &str = "00000000-0000-0000-0000-000000000007";

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap()
    }

    fn recorded(position: u64, at: DateTime<Utc>, event: &AccessEvent) -> RecordedEvent {
        let (event_type, payload) = encode(event).unwrap();
        RecordedEvent {
            event_id: Uuid::from_u128(u128::from(position)),
            stream: format!("access-{ACCOUNT}"),
            version: position,
            position,
            event_type,
            schema_version: 1,
            occurred_at: at,
            actor: Actor::operator(),
            correlation_id: Uuid::nil(),
            causation_id: Uuid::nil(),
            payload,
            hash: "0".repeat(64),
        }
    }

    fn check(failed: bool) -> AccessEvent {
        AccessEvent::AppPasswordChecked(AppPasswordChecked {
            user_id: "m@pec.it".into(),
            scope: "mailbox".into(),
            outcome: if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            reason: failed.then_some(DenyReason::WrongPassword),
            protocol: None,
            client_ip: Some("198.51.100.7".into()),
        })
    }

    /// 30 records, one a day; every third a failure.
    fn model() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        AccessHistoryProjection.create(&conn).unwrap();
        let tx = conn.transaction().unwrap();
        for day in 0..30u64 {
            let at = start() + Duration::days(day as i64);
            AccessHistoryProjection
                .apply(&tx, &recorded(day + 1, at, &check(day % 3 == 0)))
                .unwrap();
        }
        tx.commit().unwrap();
        conn
    }

    fn filter(limit: usize) -> Filter {
        Filter {
            limit,
            ..Filter::default()
        }
    }

    /// A replay decodes each batch's items ahead, on its reader thread: applied with them, a
    /// batch (whole, or the tail a projection has not seen, or with items made of another
    /// batch, which are made again) gives the rows and totals a plain apply gives, and an
    /// undecodable record refuses the batch either way.
    #[test]
    fn items_decoded_ahead_write_what_a_plain_apply_writes() {
        let events: Vec<RecordedEvent> = (1..=12u64)
            .map(|n| recorded(n, start() + Duration::hours(n as i64), &check(n % 4 == 0)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            crate::ReadModels::open_with(
                &dir.path().join(name),
                vec![Box::new(AccessHistoryProjection)],
                crate::Durability::Normal,
            )
            .unwrap()
        };
        let mut plain = open("plain.db");
        plain.apply(&events[..5]).unwrap();
        plain.apply(&events[3..]).unwrap();
        let mut ahead = open("ahead.db");
        let preparer = ahead.preparer();
        ahead
            .apply_prepared(&events[..5], preparer.prepare(&events[..5]))
            .unwrap();
        // Overlapping the checkpoint: only the unseen tail's rows are written.
        ahead
            .apply_prepared(&events[3..], preparer.prepare(&events[3..]))
            .unwrap();
        assert_eq!(ahead.dump().unwrap(), plain.dump().unwrap());
        assert!(plain
            .dump()
            .unwrap()
            .iter()
            .any(|row| row.contains("access_accounts") && row.contains("Integer(12)")));
        // Items of another batch are not used.
        let mut other = open("other.db");
        other
            .apply_prepared(&events, preparer.prepare(&events[..2]))
            .unwrap();
        assert_eq!(other.dump().unwrap(), plain.dump().unwrap());
        // A record that cannot be read refuses its batch, decoded ahead or not.
        let mut bad = recorded(13, start() + Duration::days(1), &check(false));
        bad.payload = serde_json::json!({ "outcome": 7 });
        let batch = [bad];
        let before = plain.dump().unwrap();
        assert!(matches!(
            ahead.apply_prepared(&batch, preparer.prepare(&batch)),
            Err(ProjectionError::Undecodable { .. })
        ));
        assert!(matches!(
            plain.apply(&batch),
            Err(ProjectionError::Undecodable { .. })
        ));
        assert_eq!(ahead.dump().unwrap(), before);
    }

    #[test]
    fn pages_run_newest_first_and_the_cursor_walks_them_without_a_gap_or_a_repeat_ah_2() {
        let conn = model();
        let mut seen = Vec::new();
        let mut f = filter(7);
        loop {
            let page = page(&conn, ACCOUNT, &f).unwrap();
            assert_eq!(page.total, 30);
            assert_eq!(page.last_access, Some(start() + Duration::days(29)));
            seen.extend(page.items.iter().map(|i| i.at));
            match page.next {
                Some(next) => f.after = Some(next),
                None => break,
            }
        }
        let expected: Vec<_> = (0..30).rev().map(|d| start() + Duration::days(d)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_date_range_is_inclusive_and_the_outcome_filters_ah_2() {
        let conn = model();
        let f = Filter {
            from: Some(start() + Duration::days(3)),
            to: Some(start() + Duration::days(9)),
            outcome: Some(Outcome::Failure),
            ..filter(100)
        };
        let page = page(&conn, ACCOUNT, &f).unwrap();
        let days: Vec<i64> = page
            .items
            .iter()
            .map(|i| (i.at - start()).num_days())
            .collect();
        assert_eq!(days, [9, 6, 3]);
        assert!(page.items.iter().all(
            |i| i.outcome == Outcome::Failure && i.reason.as_deref() == Some("wrong_password")
        ));
        assert_eq!(page.next, None);
        // Another account sees nothing of this one.
        let other =
            super::page(&conn, "00000000-0000-0000-0000-000000000008", &filter(10)).unwrap();
        assert_eq!((other.total, other.items.len()), (0, 0));
    }

    #[test]
    fn dropping_expired_rows_keeps_the_total_and_the_last_access_ah_3() {
        let conn = model();
        let cutoff = start() + Duration::days(10);
        assert_eq!(expire(&conn, cutoff, 4).unwrap(), 4);
        while expire(&conn, cutoff, 4).unwrap() > 0 {}
        let page = page(&conn, ACCOUNT, &filter(100)).unwrap();
        assert_eq!(page.items.len(), 20);
        assert!(page.items.iter().all(|i| i.at >= cutoff));
        assert_eq!(page.total, 30);
        assert_eq!(page.last_access, Some(start() + Duration::days(29)));
    }

    #[test]
    fn a_reported_access_is_shown_at_the_time_it_happened_and_a_replayed_record_counts_once() {
        let mut conn = model();
        let happened = start() - Duration::days(2);
        let report = AccessEvent::ServiceAccessReported(ServiceAccessReported {
            service: "INPS".into(),
            outcome: Outcome::Success,
            reason: None,
            client_ip: None,
            at: happened,
        });
        let tx = conn.transaction().unwrap();
        let event = recorded(31, start() + Duration::days(40), &report);
        AccessHistoryProjection.apply(&tx, &event).unwrap();
        AccessHistoryProjection.apply(&tx, &event).unwrap();
        tx.commit().unwrap();
        let page = page(&conn, ACCOUNT, &filter(100)).unwrap();
        assert_eq!(page.total, 31);
        let oldest = page.items.last().unwrap();
        assert_eq!(
            (oldest.kind, oldest.service.as_str(), oldest.at),
            (ItemKind::ServiceAccess, "INPS", happened)
        );
        // An older success does not move the last access back.
        assert_eq!(page.last_access, Some(start() + Duration::days(29)));
    }

    #[test]
    fn a_bad_cursor_is_not_taken_for_a_place() {
        let c = Cursor {
            at: 1_700_000_000_000,
            position: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "abc", "MTIz", "LTEuLTE", "!!!"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
