//! Replay-based tests (AU-3), for integrators and for custode's own tests: **given** a log (a
//! fixture written by `custode log dump`), **when** a command (sent to a service started on
//! that data dir, over HTTP as any client would), **then** these events and these read
//! models. A bug report can carry its log the same way: dump a test data dir, attach the file.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::path::Path::new("/tmp/scenario");
//! let head = custode::scenario::given(std::path::Path::new("mailbox.jsonl"), dir)?;
//! // … start `custode serve --data-dir /tmp/scenario` (or `App::start`) and send the command …
//! let events = custode::scenario::events_after(dir, head)?;
//! assert_eq!(events[0].event_type, "SessionStarted");
//! let rows = custode::scenario::read_models(dir)?;
//! assert!(rows.iter().any(|r| r.starts_with("sessions: ")));
//! # Ok(()) }
//! ```

use crate::app::{LOG_FILE, READ_MODELS_FILE};
use custode_commands::{LogError, LogReader};
use custode_domain::RecordedEvent;
use std::path::Path;

/// Given: creates `data_dir`'s log from `fixture` (every hash checked) and returns its head.
/// `data_dir` must not hold a log yet.
pub fn given(fixture: &Path, data_dir: &Path) -> Result<u64, LogError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| LogError::Store(format!("{}: {e}", data_dir.display())))?;
    let file = std::fs::File::open(fixture)
        .map_err(|e| LogError::Store(format!("{}: {e}", fixture.display())))?;
    custode_commands::log::load(&data_dir.join(LOG_FILE), std::io::BufReader::new(file))
}

/// Then: the events appended after `position`, in order.
pub fn events_after(data_dir: &Path, position: u64) -> Result<Vec<RecordedEvent>, LogError> {
    let log = LogReader::open(&data_dir.join(LOG_FILE))?;
    let mut events = Vec::new();
    log.scan_from(position, |batch| -> Result<(), LogError> {
        events.extend_from_slice(batch);
        Ok(())
    })?;
    Ok(events)
}

/// Then: every read-model table's rows, as sorted text lines (`table: cell | cell …`).
pub fn read_models(data_dir: &Path) -> rusqlite::Result<Vec<String>> {
    let conn = custode_commands::sqlite::open_reader(&data_dir.join(READ_MODELS_FILE))?;
    custode_projections::dump(&conn)
}
