//! AU-3 and AU-2 at scale, on a log of 1,000,000 events.
//!
//! 1. Replay: `custode replay` (the real binary, a child process) rebuilds every read model from
//!    the log, against a bare pass (also a child) that reads the same table in position order
//!    and writes one row per event in batched transactions into a fresh file with the same
//!    settings (no journal, no sync), in the same run, three times each in turns: events/s
//!    and peak memory (the child's maximum resident set), the median ratio beside its range.
//!    Targets: ≥ 0.5× the bare pass and ≥ 500,000 events/s.
//! 2. Export: one account's `audit export` in that log (target < 50 ms).
//!
//! The log: one account's real events (opened, logins, a password change, recovery
//! information, its notices), taken from the service itself, copied for 10,000 accounts with
//! fresh ids, each with reported accesses up to 100 events an account: about 1,000,000 in
//! all, appended through the log (chain and all).
//!
//! `cargo bench --bench replay`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use chrono::{Duration as Days, Utc};
use custode_commands::{EventLog, LogOptions, LogReader, Metadata, NewEvent, StreamAppend};
use custode_domain::access::{AccessEvent, Outcome, ServiceAccessReported};
use custode_domain::envelope::encode;
use custode_domain::{Actor, RecordedEvent};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

const OPERATOR_KEY: &str = "bench-operator-key-0123456789";
const TEMPLATE_USER: &str = "modello@pec.example.it";
const ACCOUNTS: u64 = 10_000;
const EVENTS_PER_ACCOUNT: usize = 100;
const BATCH: usize = 8192;
const EXPORTS: usize = 20;
/// Turns each side takes.
const ROUNDS: usize = 3;

/// One account's events as the service writes them.
fn template(dir: &Path) -> Vec<RecordedEvent> {
    let rt = common::runtime();
    rt.block_on(async {
        let (base, app, _clock) = common::serve_app(dir, OPERATOR_KEY).await;
        let client = reqwest::Client::new();
        let opened: Value = client
            .post(format!("{base}/v1/admin/accounts"))
            .bearer_auth(OPERATOR_KEY)
            .json(&json!({ "kind": "mailbox", "user_id": TEMPLATE_USER, "plan": "pro", "contact_email": "titolare@example.it" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let login = |password: String| {
            let client = client.clone();
            let base = base.clone();
            async move {
                let session: Value = client
                    .post(format!("{base}/v1/sessions"))
                    .json(&json!({ "user_id": TEMPLATE_USER, "password": password }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                session["session_token"].as_str().unwrap().to_string()
            }
        };
        let temporary = opened["temporary_password"].as_str().unwrap().to_string();
        let token = login(temporary.clone()).await;
        let chosen = "Tr4m-Colle!Verde";
        let res = client
            .post(format!("{base}/v1/account/password"))
            .bearer_auth(&token)
            .json(&json!({ "current_password": temporary, "new_password": chosen, "new_password_repeat": chosen }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        let token = login(chosen.into()).await;
        let res = client
            .put(format!("{base}/v1/account/recovery-info"))
            .bearer_auth(&token)
            .json(&json!({ "email": "recupero@example.org", "mobile": "+393471234567" }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        for _ in 0..3 {
            login(chosen.into()).await;
        }
        // The notices' outcomes reach the log.
        tokio::time::sleep(Duration::from_secs(2)).await;
        app.flush().await;
        let log = app.state.log.reader();
        drop(app);
        log.read_from(0, 10_000).unwrap()
    })
}

fn copy_id(k: u64, n: usize) -> Uuid {
    Uuid::from_u128((u128::from(k + 1) << 64) | (0xC0DE << 16) | n as u128)
}

/// Appends the template for `ACCOUNTS` accounts, each topped up with reported accesses.
fn build(path: &Path, template: &[RecordedEvent]) -> u64 {
    let mut ids = Vec::new();
    let mut hashes = Vec::new();
    for e in template {
        common::uuids_in(&e.stream, &mut ids);
        common::uuids_in(&e.payload.to_string(), &mut ids);
        common::hashes_in(&e.payload.to_string(), &mut hashes);
    }
    let accesses = EVENTS_PER_ACCOUNT - template.len();
    let rt = common::runtime();
    rt.block_on(async {
        let log = EventLog::open(path, &LogOptions::default()).unwrap();
        let started = Instant::now();
        let t0 = Utc::now() - Days::days(400);
        let mut in_flight = Vec::new();
        for k in 0..ACCOUNTS {
            let subst = |text: &str| {
                let mut out = text.replace(TEMPLATE_USER, &format!("utente{k}@pec.example.it"));
                for (n, id) in ids.iter().enumerate() {
                    if out.contains(id.as_str()) {
                        out = out.replace(id.as_str(), &copy_id(k, n).to_string());
                    }
                }
                for hash in &hashes {
                    if out.contains(hash.as_str()) {
                        out = out.replace(hash.as_str(), &format!("{k:016x}{}", &hash[16..]));
                    }
                }
                out
            };
            let mut streams: BTreeMap<String, Vec<NewEvent>> = BTreeMap::new();
            let mut order = Vec::new();
            for (i, e) in template.iter().enumerate() {
                let stream = subst(&e.stream);
                if !streams.contains_key(&stream) {
                    order.push(stream.clone());
                }
                streams.entry(stream).or_default().push(NewEvent {
                    event_id: Uuid::from_u128((u128::from(k + 1) << 64) | (1 << 32) | i as u128),
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    payload: serde_json::from_str(&subst(&e.payload.to_string())).unwrap(),
                });
            }
            let account = template
                .iter()
                .find(|e| e.stream.starts_with("account-"))
                .map(|e| subst(&e.stream))
                .unwrap();
            let access_stream = account.replace("account-", "access-");
            let at = t0 + Days::seconds(k as i64 * 3000);
            let access: Vec<NewEvent> = (0..accesses)
                .map(|i| {
                    let (event_type, payload) = encode(&AccessEvent::ServiceAccessReported(
                        ServiceAccessReported {
                            service: "Agenzia delle Entrate".into(),
                            outcome: if i % 10 == 0 { Outcome::Failure } else { Outcome::Success },
                            reason: (i % 10 == 0).then(|| "wrong_password".into()),
                            client_ip: Some("203.0.113.9".into()),
                            at: at + Days::seconds(i as i64),
                        },
                    ))
                    .unwrap();
                    NewEvent {
                        event_id: Uuid::from_u128((u128::from(k + 1) << 64) | (2 << 32) | i as u128),
                        event_type,
                        schema_version: 1,
                        payload,
                    }
                })
                .collect();
            let mut appends: Vec<StreamAppend> = order
                .into_iter()
                .map(|stream| {
                    let events = streams.remove(&stream).unwrap();
                    StreamAppend {
                        stream,
                        expected_version: 0,
                        events,
                    }
                })
                .collect();
            appends.push(StreamAppend {
                stream: access_stream,
                expected_version: 0,
                events: access,
            });
            let meta = Metadata {
                actor: Actor::operator(),
                correlation_id: Uuid::from_u128(u128::from(k + 1) << 64),
                causation_id: Uuid::from_u128(u128::from(k + 1) << 64),
                occurred_at: at,
            };
            let log = log.clone();
            in_flight.push(tokio::spawn(async move { log.append(appends, meta).await.unwrap() }));
            if in_flight.len() == 64 {
                for task in in_flight.drain(..) {
                    task.await.unwrap();
                }
            }
        }
        for task in in_flight {
            task.await.unwrap();
        }
        let head = log.head();
        println!(
            "  built a log of {head} events ({} accounts, {} template events each, {accesses} reported accesses) in {:.0} s",
            ACCOUNTS,
            template.len(),
            started.elapsed().as_secs_f64()
        );
        head
    })
}

/// Runs `command`, returning its wall time and its peak resident set (MiB): the child's
/// `VmHWM`, sampled until it exits (the high-water mark only grows, so the last sample is the
/// peak to within the last few milliseconds).
fn measured(command: &mut std::process::Command, log: &Path) -> (f64, f64) {
    let started = Instant::now();
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut peak_kib = 0u64;
    let status = loop {
        peak_kib = peak_kib.max(common::peak_kib(child.id()));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "{command:?} failed: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (elapsed, peak_kib as f64 / 1024.0)
}

/// The bare pass: the same table read in position order, one row written per event, batched.
fn bare(source: &Path, target: &Path) {
    let reader =
        rusqlite::Connection::open_with_flags(source, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let _ = std::fs::remove_file(target);
    let mut writer = rusqlite::Connection::open(target).unwrap();
    writer.pragma_update(None, "journal_mode", "OFF").unwrap();
    writer.pragma_update(None, "synchronous", "OFF").unwrap();
    writer
        .execute_batch(
            "CREATE TABLE rows (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL)",
        )
        .unwrap();
    let mut after = 0i64;
    loop {
        let rows: Vec<(i64, String, String, String)> = reader
            .prepare_cached(
                "SELECT position, event_id, stream, version, type, schema_version, occurred_at, actor_kind, \
                 actor_id, correlation_id, causation_id, payload, hash FROM events \
                 WHERE position > ?1 ORDER BY position LIMIT ?2",
            )
            .unwrap()
            .query_map(rusqlite::params![after, BATCH as i64], |r| {
                Ok((r.get(0)?, r.get(2)?, r.get(4)?, r.get(11)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.0;
        let tx = writer.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO rows (position, stream, type, payload) VALUES (?1, ?2, ?3, ?4)",
                )
                .unwrap();
            for (position, stream, event_type, payload) in &rows {
                insert
                    .execute(rusqlite::params![position, stream, event_type, payload])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

/// One turn of each side: events/s and peak MiB.
struct Round {
    ours_rate: f64,
    ours_mib: f64,
    bare_rate: f64,
    theirs_mib: f64,
}

fn main() {
    if let (Ok(source), Ok(target)) = (
        std::env::var("CUSTODE_BENCH_BARE_FROM"),
        std::env::var("CUSTODE_BENCH_BARE_TO"),
    ) {
        bare(Path::new(&source), Path::new(&target));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    println!("replay and export on a 1,000,000-event log");
    if let Ok(keep) = std::env::var("CUSTODE_BENCH_KEEP") {
        println!("  (the data dir is kept in {keep})");
    }
    let template = template(&dir.path().join("template"));
    assert!(template.len() < EVENTS_PER_ACCOUNT, "{}", template.len());
    let data_dir = std::env::var("CUSTODE_BENCH_KEEP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("big"));
    std::fs::create_dir_all(&data_dir).unwrap();
    let head = build(&data_dir.join("events.db"), &template);

    let bin = env!("CARGO_BIN_EXE_custode");
    // Rounds, the two sides taking turns: one pass lasts a few seconds, and the machine's
    // speed drifts enough between two such passes to move a single ratio by a fifth (0.47×
    // and 0.58× in two runs of one binary an hour apart).
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let (ours, ours_mib) = measured(
            std::process::Command::new(bin)
                .arg("replay")
                .env("CUSTODE_DATA_DIR", &data_dir)
                .env_remove("CUSTODE_CONFIG"),
            &dir.path().join("replay.log"),
        );
        let (theirs, theirs_mib) = measured(
            std::process::Command::new(std::env::current_exe().unwrap())
                .env("CUSTODE_BENCH_BARE_FROM", data_dir.join("events.db"))
                .env("CUSTODE_BENCH_BARE_TO", dir.path().join("bare.db")),
            &dir.path().join("bare.log"),
        );
        let (ours_rate, bare_rate) = (head as f64 / ours, head as f64 / theirs);
        println!(
            "  round {round}: custode replay {ours_rate:>7.0} events/s (peak {ours_mib:.0} MiB), bare pass {bare_rate:>7.0} events/s (peak {theirs_mib:.0} MiB): {:.2}×",
            ours_rate / bare_rate
        );
        rounds.push(Round {
            ours_rate,
            ours_mib,
            bare_rate,
            theirs_mib,
        });
    }
    let median = |pick: &dyn Fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let ratios: Vec<f64> = rounds.iter().map(|r| r.ours_rate / r.bare_rate).collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ours_rate = median(&|r| r.ours_rate);
    let ours_mib = rounds.iter().map(|r| r.ours_mib).fold(0.0, f64::max);
    let bare_rate = median(&|r| r.bare_rate);
    let theirs_mib = rounds.iter().map(|r| r.theirs_mib).fold(0.0, f64::max);
    println!(
        "  custode replay: {head} events, median {ours_rate:.0} events/s, peak {ours_mib:.0} MiB"
    );
    println!(
        "  bare pass (read the table, one row per event, {BATCH} a transaction): median {bare_rate:.0} events/s, peak {theirs_mib:.0} MiB"
    );
    println!(
        "  → {:.2}× the bare pass, median of the rounds' ratios (range {low:.2}–{high:.2}×; target ≥ 0.5×), {} 500,000 events/s",
        median(&|r| r.ours_rate / r.bare_rate),
        if ours_rate >= 500_000.0 { "≥" } else { "<" }
    );

    // Export of one account, from the index the replay built.
    let log = LogReader::open(&data_dir.join("events.db")).unwrap();
    let models = custode::audit::open_read_models(&data_dir.join("read.db")).unwrap();
    let account = custode::audit::resolve_account(&log, "utente5000@pec.example.it").unwrap();
    let mut times = Vec::new();
    let mut lines = 0;
    for _ in 0..EXPORTS {
        let mut out = Vec::new();
        let started = Instant::now();
        lines = custode::audit::export(
            &log,
            Some(&models),
            account,
            None,
            Default::default(),
            &mut out,
        )
        .unwrap();
        times.push(started.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    println!(
        "  export of one account ({lines} events): p50 {:.2} ms, max {:.2} ms over {EXPORTS} runs (target < 50 ms)",
        common::pct(&times, 0.5),
        common::pct(&times, 1.0)
    );
}
