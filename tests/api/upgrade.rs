//! AU-4 and the upgrade promise: a data directory written by an earlier version keeps working,
//! and its log (the golden log, `tests/fixtures/datadir-v1/`, written by commit 272fd85 before
//! event types were versioned) replays into the same read models. Logs are never rewritten: old
//! event versions are upcast on read.

use crate::helpers::{load_json, repo_path, validate_events};
use crate::processes::{serve, BIN};
use custode_commands::{EventLog, LogOptions};
use custode_domain::account::{AccessChannel, AccountEvent};
use custode_domain::envelope::decode;
use custode_projections::ReadModels;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const FIXTURE: &str = "tests/fixtures/datadir-v1";

/// A copy of the fixture, with the modes git does not keep.
fn copy_of_fixture() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let from = repo_path(FIXTURE);
    for file in ["events.db", "read.db", "workers.db"] {
        std::fs::copy(from.join(file), dir.path().join(file)).unwrap();
    }
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(keys.join("delivery")).unwrap();
    for entry in std::fs::read_dir(from.join("keys/delivery")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), keys.join("delivery").join(entry.file_name())).unwrap();
    }
    std::fs::copy(from.join("keys/service.key"), keys.join("service.key")).unwrap();
    for dir in [&keys, &keys.join("delivery")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn cli(data_dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("CUSTODE_DATA_DIR", data_dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every read-model row the golden log folds into, rebuilt by today's projections.
fn replayed(events_db: &Path, into: &Path) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = runtime
        .block_on(async { EventLog::open(events_db, &LogOptions::default()) })
        .unwrap();
    let mut models = ReadModels::open(&into.join("read.db")).unwrap();
    let mut position = 0;
    loop {
        let batch = log.read_from_blocking(position, 500).unwrap();
        let Some(last) = batch.last() else { break };
        position = last.position;
        models.apply(&batch).unwrap();
    }
    models.dump().unwrap()
}

/// The rows of `conn` in the tables `shape` has, with only the columns `shape` gives them,
/// each table's rows sorted.
fn rows_shaped_as(shape: &rusqlite::Connection, conn: &rusqlite::Connection) -> Vec<String> {
    let tables: Vec<String> = shape
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'checkpoints' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> = shape
            .prepare(&format!(
                "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let list = columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn
            .prepare(&format!("SELECT {list} FROM \"{table}\""))
            .unwrap();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let cells: Vec<String> = (0..columns.len())
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect();
                Ok(format!("{table}: {}", cells.join(" | ")))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.extend(rows);
    }
    out
}

#[test]
fn the_golden_log_replays_into_the_read_models_its_own_version_built_au_4() {
    let copy = copy_of_fixture();
    let rebuilt = tempfile::tempdir().unwrap();
    let rows = replayed(&copy.path().join("events.db"), rebuilt.path());
    // The read models 272fd85 left beside its log are what today's code folds from it: every
    // table it had, with every column it had. Later projections only add (the access history,
    // a suspension's end date), and the snapshot keeps what they add.
    let old = rusqlite::Connection::open(copy.path().join("read.db")).unwrap();
    let new = rusqlite::Connection::open(rebuilt.path().join("read.db")).unwrap();
    assert_eq!(rows_shaped_as(&old, &new), rows_shaped_as(&old, &old));
    insta::assert_json_snapshot!("golden_log_v1_read_models", rows);
}

#[test]
fn the_golden_logs_v1_events_read_as_todays_versions() {
    let copy = copy_of_fixture();
    let conn = rusqlite::Connection::open(copy.path().join("events.db")).unwrap();
    let versions: Vec<(String, i64)> = conn
        .prepare("SELECT DISTINCT type, schema_version FROM events ORDER BY type")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(versions.iter().all(|(_, v)| *v == 1), "{versions:?}");
    drop(conn);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = runtime
        .block_on(async { EventLog::open(&copy.path().join("events.db"), &LogOptions::default()) })
        .unwrap();
    let events = log.read_from_blocking(0, 10_000).unwrap();
    let mut sessions = 0;
    let mut failures = 0;
    let mut openings = 0;
    for event in &events {
        match decode::<AccountEvent>(event) {
            // AccountOpened v1 reads as v2: no collaborator permissions (CO-1).
            Ok(AccountEvent::AccountOpened(opened)) => {
                assert!(opened.permissions.is_empty());
                openings += 1;
            }
            Ok(AccountEvent::SessionStarted(started)) => {
                assert_eq!(started.channel, AccessChannel::Api);
                sessions += 1;
            }
            Ok(AccountEvent::LoginFailed(failed)) => {
                assert_eq!(failed.channel, AccessChannel::Api);
                failures += 1;
            }
            Ok(_) => {}
            Err(e) if event.category() == "account" => panic!("{}: {e}", event.event_type),
            Err(_) => {}
        }
    }
    assert!(
        sessions > 0 && failures > 0 && openings > 0,
        "{sessions} sessions, {failures} failures, {openings} openings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_written_before_versioned_events_still_serves() {
    let copy = copy_of_fixture();
    let accounts = load_json(&format!("{FIXTURE}/accounts.json"));
    let (verified, text) = cli(copy.path(), &["audit", "verify"]);
    assert!(verified, "{text}");

    let served = serve(copy.path(), &[]).await;
    let client = reqwest::Client::new();
    let mut logged_in = 0;
    for account in accounts["accounts"].as_array().unwrap() {
        let user_id = account["user_id"].as_str().unwrap();
        let res = client
            .post(format!("{}/v1/sessions", served.base))
            .json(&json!({ "user_id": user_id, "password": account["password"] }))
            .send()
            .await
            .unwrap();
        let still_locked = account["locked_out_until"]
            .as_str()
            .and_then(|until| chrono::DateTime::parse_from_rfc3339(until).ok())
            .is_some_and(|until| until > chrono::Utc::now());
        if still_locked {
            assert_eq!(res.status(), 429, "{user_id} is locked out until its time");
            continue;
        }
        assert_eq!(res.status(), 201, "{user_id}");
        let session: Value = res.json().await.unwrap();
        assert_eq!(
            session["required_actions"], account["required_actions"],
            "{user_id}"
        );
        let token = session["session_token"].as_str().unwrap();
        let page: Value = client
            .get(format!("{}/v1/account", served.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["user_id"], user_id);
        assert_eq!(page["kind"], account["kind"]);
        logged_in += 1;
    }
    assert!(logged_in >= 3, "{logged_in} accounts logged in");
    let wrong = client
        .post(format!("{}/v1/sessions", served.base))
        .json(&json!({ "user_id": "mrossi80", "password": "Scoglio.Azzurro-72" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong.status(),
        401,
        "an earlier password no longer opens it"
    );
    drop(served);

    // The old events and today's (v2 sessions) side by side: one chain, each event valid
    // against the schema of the version it was written with, and a replay that still works.
    validate_events(copy.path());
    let (verified, text) = cli(copy.path(), &["audit", "verify"]);
    assert!(verified, "{text}");
    let (replayed, text) = cli(copy.path(), &["replay"]);
    assert!(replayed, "{text}");
    let served = serve(copy.path(), &[]).await;
    let again = client
        .post(format!("{}/v1/sessions", served.base))
        .json(&json!({ "user_id": "mrossi80", "password": "Melograno+Duna-84" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
}
