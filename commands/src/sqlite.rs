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

/// Makes the SQLite database at `path` readable and writable by its owner only, creating it
/// empty if it is missing: the files hold password hashes, sealed secrets and personal data.
/// SQLite gives the `-wal` and `-shm` files it creates beside it the same mode; those an
/// earlier version left open to others are closed here too.
pub fn private_database(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// A read-write connection in WAL mode with the given `synchronous` level, to a database made
/// private first (see [`private_database`]).
pub fn open_writer(path: &Path, synchronous: &str) -> rusqlite::Result<Connection> {
    private_database(path).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("cannot make {} private: {e}", path.display())),
        )
    })?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn databases_are_their_owners_alone_new_or_left_open_by_an_earlier_version() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        // A new one.
        let fresh = dir.path().join("fresh.db");
        let conn = open_writer(&fresh, "FULL").unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert_eq!(mode(&fresh), 0o600);
        assert_eq!(mode(Path::new(&wal_path(&conn).unwrap())), 0o600);
        drop(conn);
        // One an earlier version made readable by all, with its write-ahead files.
        let old = dir.path().join("old.db");
        let conn = Connection::open(&old).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", old.display());
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        private_database(&old).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(
                mode(Path::new(&format!("{}{suffix}", old.display()))),
                0o600
            );
        }
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
