//! Opening SQLite files the way custode needs them, and a small pool of read-only connections
//! (WAL lets them read beside the single writer).

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes `conn` wait for a lock another connection holds in short steps, for about 10 s in
/// all. SQLite's own busy timeout sleeps in growing steps (up to 100 ms each), so two writers
/// that meet on a file (the workers' store: the mailer's feed, its deliveries, the SMS sender,
/// the scheduler) would wait tens of milliseconds for a lock held for one.
pub fn wait_in_short_steps(conn: &Connection) -> rusqlite::Result<()> {
    fn busy(attempt: i32) -> bool {
        // 100 steps of 200 µs, then 2 ms steps: about 10 s before SQLITE_BUSY.
        let step = if attempt < 100 {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(2)
        };
        if attempt >= 5_090 {
            return false;
        }
        std::thread::sleep(step);
        true
    }
    conn.busy_handler(Some(busy))
}

/// A read-write connection in WAL mode with the given `synchronous` level.
pub fn open_writer(path: &Path, synchronous: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The write-ahead file of the database `conn` has open, as SQLite names it (beside the file
/// the path resolves to); `None` for a database in memory.
pub fn wal_path(conn: &Connection) -> Option<String> {
    conn.path()
        .filter(|p| !p.is_empty())
        .map(|main| format!("{main}-wal"))
}

/// Syncs the write-ahead file of the database `conn` has open, if it has one: every
/// transaction committed in it, by any process, is then on disk.
pub fn sync_wal(conn: &Connection) -> std::io::Result<()> {
    let Some(path) = wal_path(conn) else {
        return Ok(());
    };
    match std::fs::File::open(path) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Read-only connections, opened on demand and kept for reuse.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a pooled connection. Call it from blocking code (`spawn_blocking`).
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let conn = match self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        if let Ok(mut idle) = self.idle.lock() {
            // Kept for the next query: opening a connection (and preparing its statements again)
            // costs far more than the query; the callers bound how many run at once.
            if idle.len() < 64 {
                idle.push(conn);
            }
        }
        result
    }
}
