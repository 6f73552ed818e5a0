#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Appends/s of single-event commands through the log with 8 concurrent writers (group
//! commit), against a bare rusqlite insert loop of the same rows into the same table: one
//! transaction per row, and in batches. Both with WAL and `synchronous=FULL`. Prints the
//! figures and the ratios; run with `cargo bench --bench log_append`.

mod common;

use common::{bare, log_alone};

const WRITERS: usize = 8;
const EVENTS: usize = 12_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("log_append: bench");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let per_row = bare(dir.path(), "bare-row.db", 1, WRITERS);
    let per_8 = bare(dir.path(), "bare-8.db", WRITERS, WRITERS);
    let per_64 = bare(dir.path(), "bare-64.db", 64, 64);
    let per_256 = bare(dir.path(), "bare-256.db", 256, WRITERS);
    let ours_8 = log_alone(dir.path(), WRITERS, EVENTS);
    let ours_64 = log_alone(dir.path(), 64, EVENTS);
    let ours = ours_8;
    println!("log append, single-event commands, WAL + synchronous=FULL, one run:");
    println!("  custode log, {WRITERS} concurrent writers (group commit): {ours:>9.0} appends/s");
    println!("  bare rusqlite, one transaction per row:              {per_row:>9.0} rows/s");
    println!("  bare rusqlite, {WRITERS} rows per transaction:              {per_8:>9.0} rows/s");
    println!("  bare rusqlite, 64 rows per transaction:             {per_64:>9.0} rows/s");
    println!("  bare rusqlite, 256 rows per transaction:            {per_256:>9.0} rows/s");
    println!("  custode log, 64 concurrent writers (group commit):    {ours_64:>9.0} appends/s");
    println!(
        "  ratio custode / one-fsync-per-row: {:.2}x (target >= 5x)",
        ours / per_row
    );
    println!(
        "  ceiling with {WRITERS} writers (bare, {WRITERS} rows per transaction / one per row): {:.2}x",
        per_8 / per_row
    );
    println!(
        "  ratio custode with 64 writers / one-fsync-per-row: {:.2}x",
        ours_64 / per_row
    );
    println!(
        "  ratio custode / bare {WRITERS} per transaction: {:.2}x (target >= 0.8x)",
        ours / per_8
    );
    println!(
        "  ratio custode with 64 writers / bare 64 per transaction: {:.2}x (target >= 0.8x)",
        ours_64 / per_64
    );
    println!(
        "  ratio custode / bare 256 per transaction: {:.2}x",
        ours / per_256
    );
}
