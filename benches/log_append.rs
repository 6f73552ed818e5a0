#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Appends/s of single-event commands through the log with 8 concurrent writers (group
//! commit), against a bare rusqlite insert loop of the same rows into the same table: one
//! transaction per row, and in batches. Both with WAL and `synchronous=FULL`. Prints the
//! figures and the ratios, as medians over interleaved rounds; run with
//! `cargo bench --bench log_append`.

mod common;

use common::{bare, log_alone};

const WRITERS: usize = 8;
const EVENTS: usize = 12_000;
/// Rounds, each measuring both sides at 8 and at 64: one pass of each lasts well under a
/// second, where a moment's stall of the machine's disk or cores moves a figure by a fifth, so
/// the figures reported are the medians of the rounds' ratios, beside their range.
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn range(values: &[f64]) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{low:.2}-{high:.2}x")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("log_append: bench");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let per_row = bare(dir.path(), "bare-row.db", 1, WRITERS);
    let per_256 = bare(dir.path(), "bare-256.db", 256, WRITERS);
    // Each round in its own directory, the two sides interleaved so a slow stretch of the
    // machine falls on both.
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let here = dir.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&here).expect("round dir");
        let per_8 = bare(&here, "bare-8.db", WRITERS, WRITERS);
        let ours_8 = log_alone(&here, WRITERS, EVENTS);
        let per_64 = bare(&here, "bare-64.db", 64, 64);
        let ours_64 = log_alone(&here, 64, EVENTS);
        println!(
            "  round {}: {WRITERS} writers {ours_8:>7.0}/s vs bare {per_8:>7.0}/s ({:.2}x); 64 writers {ours_64:>7.0}/s vs bare {per_64:>7.0}/s ({:.2}x)",
            round + 1,
            ours_8 / per_8,
            ours_64 / per_64
        );
        rounds.push((ours_8, per_8, ours_64, per_64));
    }
    let column = |f: fn(&(f64, f64, f64, f64)) -> f64| rounds.iter().map(f).collect::<Vec<f64>>();
    let ours = median(column(|r| r.0));
    let per_8 = median(column(|r| r.1));
    let ours_64 = median(column(|r| r.2));
    let per_64 = median(column(|r| r.3));
    let ratios_8 = column(|r| r.0 / r.1);
    let ratios_64 = column(|r| r.2 / r.3);
    println!("log append, single-event commands, WAL + synchronous=FULL, one run ({ROUNDS} rounds, medians):");
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
        "  ratio custode / bare {WRITERS} per transaction: {:.2}x, median of the rounds' ratios (range {}) (target >= 0.8x)",
        median(ratios_8.clone()),
        range(&ratios_8)
    );
    println!(
        "  ratio custode with 64 writers / bare 64 per transaction: {:.2}x, median of the rounds' ratios (range {}) (target >= 0.8x)",
        median(ratios_64.clone()),
        range(&ratios_64)
    );
    println!(
        "  ratio custode / bare 256 per transaction: {:.2}x",
        ours / per_256
    );
}
