//! `custode backup --into DIR`: a consistent copy of a data directory while the service runs.
//! Each SQLite file is copied by SQLite itself (`VACUUM INTO` on a read-only connection: one
//! read transaction, so a snapshot, whatever the writer does meanwhile), derived state first
//! and the log last, so that the copy's log is never behind its read models or its workers'
//! store (on restore the projector and the workers catch up from their checkpoints, as after
//! any stop). The keys and the signed checkpoints are copied too (mode 0600 files in a 0700
//! directory); the copy's hash chain is verified before the command says it is done.

use crate::app::{KEYS_DIR, LOG_FILE, READ_MODELS_FILE};
use crate::audit::CHECKPOINTS_FILE;
use custode_commands::log::LogReader;
use std::path::Path;

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub head: u64,
    pub files: Vec<(String, u64)>,
}

fn snapshot(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let conn = custode_commands::sqlite::open_reader(from)?;
    let target = to
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the backup path is not UTF-8: {}", to.display()))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    // The copy may hold a commit whose sync its writer has not yet made: made durable in the
    // original too, so that the copy holds nothing a power cut could take from the original.
    custode_commands::sqlite::sync_wal(&conn)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(std::fs::metadata(to)?.len())
}

#[cfg(unix)]
fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

#[cfg(not(unix))]
fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir(path)
}

#[cfg(unix)]
fn private_copy(from: &Path, to: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut source = std::fs::File::open(from)?;
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let copied = std::io::copy(&mut source, &mut target)?;
    target.sync_all()?;
    Ok(copied)
}

#[cfg(not(unix))]
fn private_copy(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::copy(from, to)
}

/// Copies `data_dir` into `into`, which must not exist yet (a backup never overwrites).
pub fn backup(data_dir: &Path, into: &Path) -> anyhow::Result<BackupReport> {
    if !data_dir.join(LOG_FILE).exists() {
        anyhow::bail!("no event log at {}", data_dir.join(LOG_FILE).display());
    }
    if into.exists() {
        anyhow::bail!(
            "{} exists: a backup goes into a new directory, never over another",
            into.display()
        );
    }
    private_dir(into)?;
    let mut files = Vec::new();
    // Derived state first, the log last: the copy's log is at least as new as what was derived
    // from it.
    let store = custode_workers::store::STORE_FILE;
    for name in [READ_MODELS_FILE, store, LOG_FILE] {
        let from = data_dir.join(name);
        if from.exists() {
            files.push((name.to_string(), snapshot(&from, &into.join(name))?));
        }
    }
    let keys = data_dir.join(KEYS_DIR);
    if keys.is_dir() {
        private_dir(&into.join(KEYS_DIR))?;
        for entry in std::fs::read_dir(&keys)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let name = entry.file_name();
                let size = private_copy(&entry.path(), &into.join(KEYS_DIR).join(&name))?;
                files.push((format!("{KEYS_DIR}/{}", name.to_string_lossy()), size));
            }
        }
    }
    let checkpoints = data_dir.join(CHECKPOINTS_FILE);
    if checkpoints.exists() {
        let size = private_copy(&checkpoints, &into.join(CHECKPOINTS_FILE))?;
        files.push((CHECKPOINTS_FILE.to_string(), size));
    }
    let reader = LogReader::open(&into.join(LOG_FILE))?;
    let report = reader.verify_chain()?;
    if let Some(mismatch) = report.first_mismatch {
        anyhow::bail!(
            "the copy's hash chain breaks at position {}: the backup is not usable",
            mismatch.position
        );
    }
    Ok(BackupReport {
        head: reader.head()?,
        files,
    })
}
