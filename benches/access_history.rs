//! AH-1..3: the access history at scale.
//!
//! 1. Ingest: accesses reported through `POST /v1/admin/access-events` from 64 keep-alive
//!    connections of a raw HTTP/1.1 client (a full client would take a quarter of the cores)
//!    (each durable in the log before its 202), against the log's own append rate with 64
//!    concurrent single-event writers, in the same run (target ≥ 0.5×); then how fast the
//!    projector turns them into history rows.
//! 2. Queries: with 10 million access records over 100,000 accounts in the history (one busy
//!    mailbox holding a million of them, the others about 90 each), the p99 of a filtered page
//!    (`GET /v1/account/access-history`: 30 days, failures only) for the busy account and for a
//!    quiet one with 20 records, and of an unfiltered page deep in the busy account's history
//!    (target < 5 ms).
//! 3. Retention: the time to drop one day of expired records from that table.
//!
//! `cargo bench --bench access_history` (`CUSTODE_BENCH_PHASE=ingest` for the first part only).
//! The client runs in the same process, on the same two
//! cores. The 10 million rows go in through the projection's own `apply`, in batches.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use chrono::{DateTime, Duration as Days, SecondsFormat, Utc};
use custode_commands::clock::Clock;
use custode_domain::access::{
    AccessEvent, AppPasswordChecked, DenyReason, Outcome, ServiceAccessReported,
};
use custode_domain::envelope::encode;
use custode_domain::{Actor, RecordedEvent};
use custode_projections::access::AccessHistoryProjection;
use custode_projections::Projection;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

const OPERATOR_KEY: &str = "bench-operator-key-0123456789";
const CONNECTIONS: usize = 64;
const INGEST_RUN: Duration = Duration::from_secs(5);
const RECORDS: u64 = 10_000_000;
const ACCOUNTS: u64 = 100_000;
/// One record in this many belongs to the busy mailbox.
const BUSY_EVERY: u64 = 10;
const QUIET_RECORDS: u64 = 20;
const QUERIES: usize = 1_000;
/// Synthetic records take positions from here, far past anything the log will reach.
const SYNTHETIC_POSITIONS: u64 = 1 << 40;

/// Opens a mailbox and logs in with its temporary password: (account id, session).
async fn mailbox(client: &reqwest::Client, base: &str, user_id: &str) -> (Uuid, String) {
    let opened: Value = client
        .post(format!("{base}/v1/admin/accounts"))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({ "kind": "mailbox", "user_id": user_id }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session: Value = client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({ "user_id": user_id, "password": opened["temporary_password"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        opened["account_id"].as_str().unwrap().parse().unwrap(),
        session["session_token"].as_str().unwrap().to_string(),
    )
}

/// A small deterministic generator (SplitMix64), so every run builds the same table.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn record(position: u64, account: Uuid, at: DateTime<Utc>, event: &AccessEvent) -> RecordedEvent {
    let (event_type, payload) = encode(event).unwrap();
    RecordedEvent {
        event_id: Uuid::from_u128(u128::from(position)),
        stream: format!("access-{account}"),
        version: 0,
        position,
        event_type,
        schema_version: 1,
        occurred_at: at,
        actor: Actor::operator(),
        correlation_id: Uuid::nil(),
        causation_id: Uuid::nil(),
        payload,
        hash: String::new(),
    }
}

/// Fills the history with `RECORDS` accesses over the last 729 days, in time order as they
/// would arrive: every `BUSY_EVERY`-th the busy mailbox's, `QUIET_RECORDS` the quiet one's,
/// the rest spread over the other accounts; a tenth of them failures.
fn fill(read_db: &std::path::Path, busy: Uuid, quiet: Uuid, now: DateTime<Utc>) -> DateTime<Utc> {
    let mut conn = rusqlite::Connection::open(read_db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let others: Vec<Uuid> = (0..ACCOUNTS - 2)
        .map(|i| Uuid::from_u128(0xACC0_0000_0000 + u128::from(i)))
        .collect();
    let start = now - Days::days(729);
    let span_ms = (now - start).num_milliseconds() as u64;
    let check = |failed: bool| {
        AccessEvent::AppPasswordChecked(AppPasswordChecked {
            user_id: "x@pec.example.it".into(),
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
    };
    let templates = [check(false), check(true)];
    let report = |at: DateTime<Utc>, failed: bool| {
        AccessEvent::ServiceAccessReported(ServiceAccessReported {
            service: "Agenzia delle Entrate".into(),
            outcome: if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            reason: failed.then(|| "wrong_password".into()),
            client_ip: Some("203.0.113.9".into()),
            at,
        })
    };
    let mut mix = Mix(7);
    let started = Instant::now();
    let batch = 100_000;
    let quiet_every = RECORDS / QUIET_RECORDS;
    let mut i = 0;
    while i < RECORDS {
        let tx = conn.transaction().unwrap();
        for _ in 0..batch.min(RECORDS - i) {
            let at = start + Days::milliseconds((i * span_ms / RECORDS) as i64);
            let failed = mix.next().is_multiple_of(10);
            let position = SYNTHETIC_POSITIONS + i;
            let event = if i % quiet_every == quiet_every / 2 {
                record(position, quiet, at, &report(at, failed))
            } else if i.is_multiple_of(BUSY_EVERY) {
                record(position, busy, at, &templates[usize::from(failed)])
            } else {
                let account = others[(mix.next() % others.len() as u64) as usize];
                record(position, account, at, &report(at, failed))
            };
            AccessHistoryProjection.apply(&tx, &event).unwrap();
            i += 1;
        }
        tx.commit().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("  filled {RECORDS} records over {ACCOUNTS} accounts in {elapsed:.0} s ({:.0} records/s through the projection's apply)", RECORDS as f64 / elapsed);
    start
}

/// Latencies (µs, sorted) of `QUERIES` sequential GETs of `path` with `token`.
async fn timed(client: &reqwest::Client, base: &str, token: &str, path: &str) -> (Vec<u64>, Value) {
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut last = Value::Null;
    for _ in 0..QUERIES {
        let t = Instant::now();
        let res = client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        last = res.json().await.unwrap();
        latencies.push(t.elapsed().as_micros() as u64);
    }
    latencies.sort_unstable();
    (latencies, last)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    // 1. The log's own rate, 64 single-event writers, in this run.
    let per_writer = 1_000;
    let log_rate = common::log_alone(dir.path(), CONNECTIONS, CONNECTIONS * per_writer);
    let service_dir = dir.path().join("service");
    std::fs::create_dir_all(&service_dir).unwrap();
    common::runtime().block_on(async {
        let (base, app, clock) = common::serve_app(&service_dir, OPERATOR_KEY).await;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONNECTIONS)
            .build()
            .unwrap();
        let (busy, busy_token) = mailbox(&client, &base, "busy@pec.example.it").await;
        let (quiet, quiet_token) = mailbox(&client, &base, "quiet@pec.example.it").await;
        let now = clock.now();

        let at: &'static str = Box::leak(now.to_rfc3339_opts(SecondsFormat::Millis, true).into_boxed_str());
        let before = app.state.log.head();
        // A raw keep-alive client: the service, not the load generator, takes the cores.
        let addr = base.trim_start_matches("http://").to_string();
        let request = std::sync::Arc::new(common::raw_post(
            &addr,
            "/v1/admin/access-events",
            OPERATOR_KEY,
            &json!({ "user_id": "busy@pec.example.it", "service": "Agenzia delle Entrate", "outcome": "success", "client_ip": "203.0.113.9", "at": at }),
        ));
        let (ingest_rate, _, refused) = common::raw_load(&addr, CONNECTIONS, INGEST_RUN, request).await;
        assert_eq!(refused, 0, "every report is accepted");
        let head = app.state.log.head();
        let caught_up = Instant::now();
        let mut applied = app.state.applied.clone();
        let _ = applied.wait_for(|p| *p >= head).await;
        println!("AH-1 ingest ({CONNECTIONS} connections, {}s):", INGEST_RUN.as_secs());
        println!("  POST /v1/admin/access-events {ingest_rate:>9.0} records/s ({} recorded)", head - before);
        println!("  the log alone, {CONNECTIONS} writers {log_rate:>9.0} appends/s");
        println!("  ratio {:.2}× the log's own rate (target ≥ 0.5×)", ingest_rate / log_rate);
        println!("  projector: history rows caught up {:.2} s after the last 202", caught_up.elapsed().as_secs_f64());

        // `CUSTODE_BENCH_PHASE=ingest` stops here (for profiling the ingest alone).
        if std::env::var("CUSTODE_BENCH_PHASE").as_deref() == Ok("ingest") {
            return;
        }
        // 2. Ten million records in the history, then pages.
        println!("AH-2 pages with {RECORDS} records over {ACCOUNTS} accounts:");
        let read_db = service_dir.join("read.db");
        let start = tokio::task::spawn_blocking({
            let read_db = read_db.clone();
            move || fill(&read_db, busy, quiet, now)
        })
        .await
        .unwrap();
        let date = |t: DateTime<Utc>| t.format("%Y-%m-%d").to_string();
        let window = format!(
            "from={}&to={}&outcome=failure&limit=20",
            date(start + Days::days(400)),
            date(start + Days::days(429))
        );
        let path = format!("/v1/account/access-history?{window}");
        let (busy_filtered, page) = timed(&client, &base, &busy_token, &path).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 20, "{page}");
        let (quiet_filtered, _) = timed(&client, &base, &quiet_token, &path).await;
        let (quiet_all, page) = timed(&client, &base, &quiet_token, "/v1/account/access-history?limit=20").await;
        assert!(page["total"].as_u64().unwrap() >= QUIET_RECORDS, "{page}");
        // A page deep in the busy account's history: the cursor of a page a year back.
        let deep: Value = client
            .get(format!("{base}/v1/account/access-history?to={}&limit=20", date(start + Days::days(300))))
            .bearer_auth(&busy_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cursor = deep["next_cursor"].as_str().unwrap().to_string();
        let (busy_deep, _) = timed(&client, &base, &busy_token, &format!("/v1/account/access-history?cursor={cursor}&limit=20")).await;
        let row = |name: &str, l: &[u64]| {
            println!("  {name:<44} p50 {:>6.2} ms   p99 {:>6.2} ms (target < 5 ms)", common::pct(l, 0.5), common::pct(l, 0.99));
        };
        row("busy (1,000,000 records), 30 days, failures", &busy_filtered);
        row("quiet (20 records), 30 days, failures", &quiet_filtered);
        row("quiet, first page", &quiet_all);
        row("busy, a page 300 days back (cursor)", &busy_deep);

        // 3. Dropping the oldest day.
        let conn = rusqlite::Connection::open(&read_db).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        let cutoff = start + Days::days(1);
        let t = Instant::now();
        let mut dropped = 0;
        loop {
            let n = custode_projections::access::expire(&conn, cutoff, 5_000).unwrap();
            dropped += n;
            if n < 5_000 {
                break;
            }
        }
        println!("AH-3 retention: one day ({dropped} records) dropped in {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
        let size = std::fs::metadata(&read_db).map(|m| m.len()).unwrap_or(0);
        println!("  read.db {:.2} GB with {RECORDS} access records", size as f64 / 1e9);
    });
}
