//! The auditor's tools (AU-2, AU-5): one account's export and the signed checkpoints. Both
//! read the log through read-only connections, so they run beside a live service without its
//! data-dir lock.

use chrono::{DateTime, NaiveDate, Utc};
use custode_commands::checkpoint::{self, Checkpoint, CheckpointFinding, CheckpointSigner};
use custode_commands::service_key::ServiceKey;
use custode_commands::{LogError, LogReader};
use custode_domain::RecordedEvent;
use custode_projections::audit::{self as index, Tie};
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use uuid::Uuid;

pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("read models: {0}")]
    ReadModels(#[from] rusqlite::Error),
    #[error("no account has that user id or account id")]
    UnknownAccount,
    #[error(
        "that is one account's user id and another's account id: say which with the other form"
    )]
    Ambiguous,
    #[error("cannot write the export: {0}")]
    Output(#[from] std::io::Error),
}

/// An export's time window, both ends inclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Window {
    /// Whether `from` comes after `to`: a window nothing can be in, refused rather than
    /// answered empty.
    pub fn reversed(&self) -> bool {
        matches!((self.from, self.to), (Some(from), Some(to)) if from > to)
    }

    fn holds(&self, at: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| at >= from) && self.to.is_none_or(|to| at <= to)
    }
}

/// `T` as an RFC 3339 time or a calendar day (`2026-12-03`): a day starts at its first instant
/// for `from` and ends at its last for `to`.
pub fn parse_time(text: &str, end_of_day: bool) -> Option<DateTime<Utc>> {
    // RFC 3339's year is four digits: chrono's `%Y` would also take `-99999` or `+10000`.
    let year = text.as_bytes().get(..5)?;
    if !year.iter().take(4).all(u8::is_ascii_digit) || year.last() != Some(&b'-') {
        return None;
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let at = if end_of_day {
        day.and_hms_nano_opt(23, 59, 59, 999_999_999)?
    } else {
        day.and_hms_opt(0, 0, 0)?
    };
    Some(at.and_utc())
}

/// The account `reference` names: a user id (through its claim stream) or an account id. A
/// reference that is both (a user id shaped like another account's id) is refused rather than
/// guessed.
pub fn resolve_account(log: &LogReader, reference: &str) -> Result<Uuid, AuditError> {
    let claimed = resolve_user_id(log, reference)?;
    let by_id = match Uuid::parse_str(reference) {
        Ok(id)
            if !log
                .positions_of(&custode_domain::account::stream_for(id), 0)?
                .is_empty() =>
        {
            Some(id)
        }
        _ => None,
    };
    match (claimed, by_id) {
        (Some(a), Some(b)) if a != b => Err(AuditError::Ambiguous),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => Err(AuditError::UnknownAccount),
    }
}

/// The account whose user id `user_id` is, through its claim stream.
pub fn resolve_user_id(log: &LogReader, user_id: &str) -> Result<Option<Uuid>, AuditError> {
    let claims = log.read_stream_after(&custode_domain::user_registry::stream_for(user_id), 0)?;
    Ok(claims
        .iter()
        .find(|e| e.event_type == "UserIdClaimed")
        .and_then(|e| e.payload.get("account_id")?.as_str()?.parse().ok()))
}

/// Opens the read models for reading only, when the file exists.
pub fn open_read_models(path: &Path) -> Option<Connection> {
    path.exists()
        .then(|| custode_commands::sqlite::open_reader(path).ok())
        .flatten()
}

/// The streams that concern `account` (and its collaborators), each with the position from
/// which they do: the audit index up to its checkpoint, then the log's tail past it.
fn streams_of(
    log: &LogReader,
    models: Option<&Connection>,
    account: Uuid,
    key: Option<&ServiceKey>,
) -> Result<BTreeMap<String, u64>, AuditError> {
    let mut streams = BTreeMap::new();
    let mut accounts = BTreeSet::from([account]);
    let mut indexed = 0;
    if let Some(conn) = models {
        let checkpoint: Option<u64> = conn
            .query_row(
                "SELECT position FROM checkpoints WHERE name = 'audit_index'",
                [],
                |r| r.get(0),
            )
            .optional()
            .unwrap_or(None);
        if let Some(checkpoint) = checkpoint {
            indexed = checkpoint;
            streams.extend(index::streams_of(conn, account)?);
            accounts.extend(index::collaborators_of(conn, account)?);
        }
    }
    // Past the index: the events the projector has not applied yet.
    let mut tail: Vec<(String, Tie)> = Vec::new();
    let mut subject_tail: Vec<(String, String)> = Vec::new();
    log.scan_from(indexed, |batch| -> Result<(), AuditError> {
        for event in batch {
            if let Some(tie) = index::tie(event) {
                tail.push((event.stream.clone(), tie));
            } else if let Some(subject) = index::subject_tie(event) {
                subject_tail.push((event.stream.clone(), subject.to_string()));
            }
        }
        Ok(())
    })?;
    // A collaborator opened in the tail joins before its streams are sorted.
    for (_, tie) in &tail {
        if tie.owner_id == Some(account) {
            accounts.insert(tie.account_id);
        }
    }
    for (stream, tie) in tail {
        if accounts.contains(&tie.account_id) {
            let from = streams.entry(stream).or_insert(tie.from_position);
            *from = (*from).min(tie.from_position);
        }
    }
    // What was tried on the account's user ids when they opened no recovery of it (a revoked
    // or suspended account, one without recovery information): the decoys on the ids' keyed
    // hashes, from the account's opening on (before it, the id was nobody's).
    if let Some(key) = key {
        for id in &accounts {
            let stream = custode_domain::account::stream_for(*id);
            let Some(first) = log.positions_of(&stream, 0)?.first().copied() else {
                continue;
            };
            let opened = log.read_positions(&[first])?;
            let Some(user_id) = opened
                .first()
                .and_then(|e| e.payload.get("user_id"))
                .and_then(|v| v.as_str())
            else {
                continue;
            };
            let subject = custode_commands::log::hex(&key.subject(user_id));
            let mut tied = vec![format!("subject-{subject}")];
            if let Some(conn) = models {
                tied.extend(index::streams_of_subject(conn, &subject)?);
            }
            tied.extend(
                subject_tail
                    .iter()
                    .filter(|(_, s)| *s == subject)
                    .map(|(stream, _)| stream.clone()),
            );
            for stream in tied {
                let from = streams.entry(stream).or_insert(first);
                *from = (*from).max(first);
            }
        }
    }
    // An account's own streams, whatever the index says.
    for id in &accounts {
        streams
            .entry(custode_domain::account::stream_for(*id))
            .or_insert(0);
        streams
            .entry(custode_domain::access::stream_for(*id))
            .or_insert(0);
    }
    Ok(streams)
}

/// One exported line: the envelope with its position and a keyed digest of its hash, the payload
/// redacted. The chain hash itself is never exported: it covers the clear payload and chains
/// into every later one, so with the envelopes of an export (this one, or another beside it)
/// and any clear hash before and after a masked line, a masked mobile, document number or
/// address could be found again offline by trying its few unknown characters (found from
/// outside, twice). `hash` is HMAC-SHA256 under the service key of the chain hash: the same
/// event always exports the same value, which the provider can check against its log; without
/// the key (a copy of the log without `keys/`) it is null.
pub fn export_line(
    event: &RecordedEvent,
    key: Option<&ServiceKey>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = event.clone();
    custode_domain::audit::redact(&mut line.payload);
    let mut line = serde_json::to_value(line)?;
    if let Some(hash) = line.get_mut("hash") {
        *hash = match key {
            Some(key) => serde_json::Value::String(export_digest(key, &event.hash)),
            None => serde_json::Value::Null,
        };
    }
    let mut bytes = serde_json::to_vec(&line)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// What an export shows for the chain hash `hash` (see [`export_line`]).
pub fn export_digest(key: &ServiceKey, hash: &str) -> String {
    custode_commands::log::hex(&key.mac("custode/audit-export", &[hash.as_bytes()]))
}

/// AU-2: every event that concerns `account`, in log order, as JSON lines on `out`. Returns
/// how many were written.
/// `key` (the service key) finds what was tried on the account's user ids where no recovery
/// of it opened (decoys); without it those are left out.
pub fn export(
    log: &LogReader,
    models: Option<&Connection>,
    account: Uuid,
    key: Option<&ServiceKey>,
    window: Window,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let streams = streams_of(log, models, account, key)?;
    // Positions only in memory (8 bytes an event), then the events a chunk at a time: an
    // account with a million records exports in bounded memory.
    let mut positions: Vec<u64> = Vec::new();
    for (stream, from) in &streams {
        positions.extend(log.positions_of(stream, *from)?);
    }
    positions.sort_unstable();
    positions.dedup();
    // Every event listed was committed before this sync: none the export shows can be taken
    // back by a power cut while the service's own sync of it is still under way.
    log.sync()?;
    let mut written = 0;
    for chunk in positions.chunks(512) {
        for event in log.read_positions(chunk)? {
            if window.holds(event.occurred_at) {
                out.write_all(&export_line(&event, key).map_err(std::io::Error::other)?)?;
                written += 1;
            }
        }
    }
    out.flush()?;
    Ok(written)
}

/// AU-2's other form: every event that occurred in `window`, whatever it concerns, redacted
/// and masked the same way, in log order. A pass over the log (events are stored in position
/// order, not time order). Returns how many were written.
pub fn export_window(
    log: &LogReader,
    key: Option<&ServiceKey>,
    window: Window,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    // Up to the head as it was before a sync, so that every event shown is on disk (see
    // `export`).
    let head = log.head()?;
    log.sync()?;
    let mut written = 0;
    log.scan_from(0, |batch| -> Result<(), AuditError> {
        for event in batch
            .iter()
            .filter(|e| e.position <= head && window.holds(e.occurred_at))
        {
            out.write_all(&export_line(event, key).map_err(std::io::Error::other)?)?;
            written += 1;
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(written)
}

/// Signs the head of `log` and appends the line to `<data_dir>/checkpoints.jsonl`.
pub fn append_checkpoint(
    data_dir: &Path,
    signer: &CheckpointSigner,
    log: &LogReader,
    now: DateTime<Utc>,
) -> Result<Checkpoint, AuditError> {
    let checkpoint = signer.checkpoint(log, now)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join(CHECKPOINTS_FILE))?;
    let mut line = serde_json::to_vec(&checkpoint).map_err(std::io::Error::other)?;
    line.push(b'\n');
    file.write_all(&line)?;
    file.sync_data()?;
    Ok(checkpoint)
}

/// What `audit verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: u64,
    /// The first failure, in words naming the event or the checkpoint.
    pub failure: Option<String>,
    pub checkpoints: usize,
}

/// AU-1 and AU-5: walks the chain, then checks each checkpoint line of `checkpoints` against
/// the log; `service_key` is the data dir's public key when it can be read.
pub fn verify(
    log: &LogReader,
    checkpoints: Option<&str>,
    service_key: Option<&str>,
) -> Result<VerifyReport, AuditError> {
    let chain = log.verify_chain()?;
    let mut report = VerifyReport {
        checked: chain.checked,
        ..VerifyReport::default()
    };
    if let Some(m) = chain.first_mismatch {
        report.failure = Some(format!(
            "chain broken at position {} (event {}): {}; {} events before it verified",
            m.position, m.event_id, m.reason, chain.checked
        ));
        return Ok(report);
    }
    for (n, line) in checkpoints
        .unwrap_or_default()
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line_no = n + 1;
        let Ok(cp) = serde_json::from_str::<Checkpoint>(line) else {
            report.failure = Some(format!("checkpoint line {line_no} is not a checkpoint"));
            return Ok(report);
        };
        report.checkpoints += 1;
        let failure = match checkpoint::check(&cp, log, service_key)? {
            CheckpointFinding::Holds => continue,
            CheckpointFinding::BadSignature => format!(
                "checkpoint line {line_no} (position {}): its signature does not hold",
                cp.position
            ),
            CheckpointFinding::OtherKey => format!(
                "checkpoint line {line_no} (position {}): signed by another key than the one trusted (--public-key, else this data dir's own)",
                cp.position
            ),
            CheckpointFinding::Cut { head } => format!(
                "the log ends at position {head}, but checkpoint line {line_no} saw position {} with hash {}: its tail was cut (or events were removed and the chain recomputed after them)",
                cp.position, cp.hash
            ),
            CheckpointFinding::Rewritten { event_id, hash } => format!(
                "position {} (event {event_id}) has hash {hash}, but checkpoint line {line_no} signed {}: the log was rewritten",
                cp.position, cp.hash
            ),
        };
        report.failure = Some(failure);
        return Ok(report);
    }
    if checkpoints.is_some() && report.checkpoints == 0 {
        report.failure = Some("the checkpoint file holds no checkpoint".into());
    }
    Ok(report)
}
