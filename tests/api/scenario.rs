//! Replay-based tests (AU-3, `custode::scenario`): given a log fixture written by `custode log
//! dump`, when a command over HTTP, then these events and these read models.
//!
//! The fixture `tests/fixtures/scenarios/mailbox.jsonl` is a mailbox opened with an imported
//! password, logged in once and given a recovery email. Regenerate it with
//! `cargo nextest run -E 'test(write_the_mailbox_fixture)' --run-ignored only`.

use crate::helpers::{file_config, phc, repo_path, TestApp};
use crate::processes::{run_custode_ok, BIN};
use custode_commands::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::json;

const FIXTURE: &str = "tests/fixtures/scenarios/mailbox.jsonl";
const USER: &str = "scenario@pec.example.it";
const PASSWORD: &str = "Scenario!Verde-42";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run on purpose"]
async fn write_the_mailbox_fixture() {
    let app = TestApp::spawn().await;
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(crate::helpers::OPERATOR_KEY),
            json!({ "kind": "mailbox", "user_id": USER, "plan": "pro", "contact_email": "scenario@example.org", "password_phc": phc(PASSWORD) }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = app.login(USER, PASSWORD).await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "email": "scenario.recupero@example.org" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (data_dir, _dir, _) = app.stop().await;
    let fixture = repo_path(FIXTURE);
    run_custode_ok(
        &data_dir,
        &["log", "dump", "--out", fixture.to_str().unwrap()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_logged_mailbox_when_it_logs_in_then_a_session_and_its_row() {
    let dir = tempfile::tempdir().unwrap();
    // Given.
    let head = custode::scenario::given(&repo_path(FIXTURE), dir.path()).unwrap();
    assert!(head > 0);
    // When: the service starts on that log (its read models are built from it) and the holder
    // logs in.
    let app = TestApp::start(
        dir.path(),
        file_config(),
        ManualClock::new(chrono::Utc::now()),
    )
    .await;
    let res = app.try_login(&USER, &PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.quiesce().await;
    let (data_dir, _, _) = app.stop().await;
    // Then: these events…
    let events = custode::scenario::events_after(&data_dir, head).unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["SessionStarted"], "{types:?}");
    assert!(events[0].stream.starts_with("account-"));
    assert_eq!(events[0].position, head + 1);
    // …and these read models: the fixture's account, and now two sessions (the fixture's and
    // this one).
    let rows = custode::scenario::read_models(&data_dir).unwrap();
    assert!(rows
        .iter()
        .any(|r| r.starts_with("accounts: ") && r.contains(USER)));
    assert_eq!(
        rows.iter().filter(|r| r.starts_with("sessions: ")).count(),
        2,
        "{rows:#?}"
    );
    drop(dir);
}

#[test]
fn a_fixture_dumps_back_to_itself_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    custode::scenario::given(&repo_path(FIXTURE), dir.path()).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["log", "dump"])
        .env("CUSTODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(repo_path(FIXTURE)).unwrap()
    );
    // A data dir that already holds a log is refused.
    let again = custode::scenario::given(&repo_path(FIXTURE), dir.path());
    assert!(again.unwrap_err().to_string().contains("already exists"));
}
