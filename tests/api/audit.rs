//! AU-2, AU-3, AU-5 through the real binary and the API: one account's export (all its events,
//! nothing of anyone else's, no secret, no clear contact), signed checkpoints that catch what
//! the chain alone cannot, and point-in-time replays equal to what the service had then.

use crate::helpers::{TestApp, OPERATOR_KEY};

use crate::replay::dump;
use custode_commands::clock::Clock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

fn custode(data_dir: &Path, args: &[&str]) -> Output {
    crate::processes::run_custode(data_dir, args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until the read models have applied the whole log.
async fn projected(app: &TestApp) -> u64 {
    app.quiesce().await;
    let head = app.log_head();
    let mut applied = app.state.applied.clone();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        applied.wait_for(|p| *p >= head),
    )
    .await;
    head
}

struct Holder {
    user_id: String,
    account_id: String,
    token: String,
    password: String,
    email: String,
    mobile: String,
}

async fn holder(app: &TestApp, user_id: &str, email: &str, mobile: &str) -> Holder {
    let (token, password) = app.ready_mailbox(user_id).await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "email": email, "mobile": mobile })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = app
        .get("/v1/account", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    let admin: Value = app
        .get(&format!("/v1/admin/accounts/{user_id}"), Some(OPERATOR_KEY))
        .await
        .json()
        .await
        .unwrap();
    let _ = page;
    Holder {
        user_id: user_id.into(),
        account_id: admin["account_id"].as_str().unwrap().to_string(),
        token,
        password,
        email: email.into(),
        mobile: mobile.into(),
    }
}

/// Two holders, each with a collaborator, a recovery started, failed and successful logins and
/// notices; returns them with their collaborators' account ids.
async fn two_holders(app: &TestApp) -> (Holder, String, Holder, String) {
    let mut pairs = Vec::new();
    for (user, email, mobile, reference) in [
        (
            "audit.a@pec.example.it",
            "alfa.recupero@example.org",
            "+393471110001",
            "anna.rif@example.org",
        ),
        (
            "audit.b@pec.example.it",
            "beta.recupero@example.net",
            "+393472220002",
            "bruno.rif@example.net",
        ),
    ] {
        let h = holder(app, user, email, mobile).await;
        let res = app
            .post(
                "/v1/account/collaborators",
                Some(&h.token),
                json!({ "name": "Collaboratore", "reference_email": reference, "permissions": ["mail_programs"] }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let created: Value = res.json().await.unwrap();
        let collaborator = created["collaborator_id"].as_str().unwrap().to_string();
        let res = app.try_login(&user, &"wrong-Password-1").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = app
            .post(
                "/v1/recovery",
                None,
                json!({ "user_id": user, "captcha_token": "solved" }),
            )
            .await;
        assert!(res.status().is_success(), "{}", res.status());
        pairs.push((h, collaborator));
    }
    // An unknown id's recovery and failed login: a decoy and a subject stream, nobody's.
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": "nessuno@pec.example.it", "captcha_token": "solved" }),
        )
        .await;
    assert!(res.status().is_success());
    let (b, b_collab) = pairs.pop().unwrap();
    let (a, a_collab) = pairs.pop().unwrap();
    (a, a_collab, b, b_collab)
}

/// Every event as stored: (position, stream, payload text).
fn full_scan(data_dir: &Path) -> Vec<(u64, String, String)> {
    let conn = rusqlite::Connection::open(data_dir.join("events.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT position, stream, payload FROM events ORDER BY position")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The positions a full scan says concern `ids`: every event of every stream that names one
/// of them (in its stream name or anywhere in one of its payloads).
fn concerning(scan: &[(u64, String, String)], ids: &[&str]) -> BTreeSet<u64> {
    let streams: BTreeSet<&str> = scan
        .iter()
        .filter(|(_, stream, payload)| {
            ids.iter()
                .any(|id| stream.contains(id) || payload.contains(id))
        })
        .map(|(_, stream, _)| stream.as_str())
        .collect();
    scan.iter()
        .filter(|(_, stream, _)| streams.contains(stream.as_str()))
        .map(|(p, _, _)| *p)
        .collect()
}

fn positions(export: &str) -> Vec<u64> {
    export
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_all_of_one_account_and_nothing_else() {
    let app = TestApp::spawn().await;
    let (a, a_collab, b, b_collab) = two_holders(&app).await;
    projected(&app).await;

    // Through the API.
    let res = app
        .get(
            &format!("/v1/admin/accounts/{}/audit", a.user_id),
            Some(OPERATOR_KEY),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let api = res.text().await.unwrap();

    // Through the binary, while the service runs (no lock, read-only).
    let out = custode(&app.data_dir, &["audit", "export", "--account", &a.user_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), api);
    let by_id = custode(
        &app.data_dir,
        &["audit", "export", "--account", &a.account_id],
    );
    assert_eq!(stdout(&by_id), api);

    // Against a full scan: every event that concerns A or its collaborator, in log order.
    let scan = full_scan(&app.data_dir);
    let expected = concerning(&scan, &[&a.account_id, &a_collab]);
    let exported = positions(&api);
    assert_eq!(exported.iter().copied().collect::<BTreeSet<_>>(), expected);
    assert!(
        exported.windows(2).all(|w| w[0] < w[1]),
        "in log order, once each"
    );
    let types: BTreeSet<String> = api
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for t in [
        "UserIdClaimed",
        "AccountOpened",
        "SessionStarted",
        "LoginFailed",
        "RecoveryStarted",
        "NotificationSent",
        "RecoveryInfoSet",
    ] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }
    // Nothing of B's, no secret, no clear contact.
    for foreign in [
        b.account_id.as_str(),
        &b.user_id,
        &b_collab,
        &b.email,
        &b.mobile,
        "bruno.rif",
        "nessuno@",
    ] {
        assert!(!api.contains(foreign), "B's {foreign} is in A's export");
    }
    for secret in [
        a.password.as_str(),
        "$argon2",
        "ciphertext",
        &a.token,
        &a.email,
        &a.mobile,
        "anna.rif@example.org",
    ] {
        assert!(!api.contains(secret), "{secret} is in the export");
    }
    assert!(api.contains("[redacted]"));
    assert!(
        api.contains("+39 ***** **01"),
        "the mobile, masked as the page shows it"
    );
    // No chain hash leaves in an export: with the envelopes beside it, a clear hash before and
    // one after a masked line let the masked contact be guessed offline (from outside). Each
    // line carries the chain hash keyed by the service key instead.
    let stored: std::collections::BTreeMap<u64, String> = {
        let conn = rusqlite::Connection::open(app.data_dir.join("events.db")).unwrap();
        let mut stmt = conn.prepare("SELECT position, hash FROM events").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let (key, _) =
        custode_commands::service_key::ServiceKey::open(&app.data_dir.join("keys")).unwrap();
    for line in api.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let hash = &stored[&event["position"].as_u64().unwrap()];
        assert_eq!(
            event["hash"],
            json!(custode::audit::export_digest(&key, hash)),
            "{line}"
        );
    }
    for hash in stored.values() {
        assert!(!api.contains(hash.as_str()), "a chain hash in the export");
    }
    for line in api.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        for key in [
            "event_id",
            "stream",
            "version",
            "position",
            "type",
            "schema_version",
            "occurred_at",
            "actor",
            "correlation_id",
            "causation_id",
            "payload",
            "hash",
        ] {
            assert!(event.get(key).is_some(), "{key} missing in {line}");
        }
    }

    // A window, and the bad-input paths.
    let first_day = custode(
        &app.data_dir,
        &[
            "audit",
            "export",
            "--account",
            &a.user_id,
            "--to",
            "2000-01-01",
        ],
    );
    assert!(first_day.status.success());
    assert_eq!(stdout(&first_day), "");
    // Not a time, a year RFC 3339 cannot write (from outside: `-99999-01-01` exported
    // everything), a window reversed.
    for query in [
        "from=yesterday",
        "from=-99999-01-01",
        "to=%2B10000-01-01",
        "from=2027-01-01&to=2026-01-01",
    ] {
        let res = app
            .get(
                &format!("/v1/admin/accounts/{}/audit?{query}", a.user_id),
                Some(OPERATOR_KEY),
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
    }
    // The binary refuses what the API refuses, rather than exporting nothing.
    for args in [
        ["--from", "2027-01-01", "--to", "2026-01-01"],
        ["--from", "-99999-01-01", "--to", "2026-01-01"],
    ] {
        let mut all = vec!["audit", "export", "--account", a.user_id.as_str()];
        all.extend(args);
        let out = custode(&app.data_dir, &all);
        assert!(!out.status.success(), "{args:?}: {}", stdout(&out));
    }
    let res = app
        .get(
            "/v1/admin/accounts/nessuno@pec.example.it/audit",
            Some(OPERATOR_KEY),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .get(&format!("/v1/admin/accounts/{}/audit", a.user_id), None)
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Every event of a window, whoever it concerns: the whole log here, redacted alike.
    let everything = custode(&app.data_dir, &["audit", "export", "--from", "2000-01-01"]);
    assert!(everything.status.success(), "{}", stderr(&everything));
    let all = stdout(&everything);
    for hash in stored.values() {
        assert!(
            !all.contains(hash.as_str()),
            "a chain hash in the window's export"
        );
    }
    assert_eq!(all.lines().count(), scan.len());
    for secret in [
        a.password.as_str(),
        "$argon2",
        "ciphertext",
        &a.email,
        &b.mobile,
    ] {
        assert!(!all.contains(secret), "{secret} is in the window's export");
    }
    let neither = custode(&app.data_dir, &["audit", "export"]);
    assert!(!neither.status.success());
    assert!(
        stderr(&neither).contains("--account"),
        "{}",
        stderr(&neither)
    );
    let unknown = custode(
        &app.data_dir,
        &["audit", "export", "--account", "nessuno@pec.example.it"],
    );
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no account"),
        "{}",
        stderr(&unknown)
    );

    // An account that cannot recover (no recovery information): what was tried on its user id
    // went to a decoy on the id's keyed hash, and its export still shows it.
    let (c_id, _) = app.open_mailbox("audit.c@pec.example.it").await;
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": "audit.c@pec.example.it", "captcha_token": "solved" }),
        )
        .await;
    let started: Value = res.json().await.unwrap();
    // A decoy offers methods derived from the id's keyed hash: use one that sends something.
    let offered: Vec<String> = started["methods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["method"].as_str().map(String::from))
        .collect();
    let sent = offered
        .iter()
        .find(|m| *m == "email" || *m == "sms")
        .cloned();
    if let Some(method) = &sent {
        let res = app
            .post(
                &format!(
                    "/v1/recovery/{}/{method}",
                    started["recovery_id"].as_str().unwrap()
                ),
                None,
                json!({}),
            )
            .await;
        assert!(res.status().is_success(), "{method}: {}", res.status());
    }
    projected(&app).await;
    let c_export = app
        .get(
            "/v1/admin/accounts/audit.c@pec.example.it/audit",
            Some(OPERATOR_KEY),
        )
        .await
        .text()
        .await
        .unwrap();
    let c_types: Vec<String> = c_export
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut expected = vec!["AccountOpened", "RecoveryStarted"];
    match sent.as_deref() {
        Some("email") => expected.push("DecoyLinkSent"),
        Some("sms") => expected.push("DecoyCodeSent"),
        _ => {}
    }
    for t in expected {
        assert!(
            c_types.iter().any(|x| x == t),
            "{t} missing from C's export: {c_types:?}"
        );
    }
    assert!(c_export.contains(&c_id));
    let a_again = app
        .get(
            &format!("/v1/admin/accounts/{}/audit", a.user_id),
            Some(OPERATOR_KEY),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(a_again, api, "A's export is unmoved by C's");

    // Without the index (a lost read-model file), the same export from the log's tail.
    let (data_dir, dir, _) = app.stop().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}/read.db{suffix}", data_dir.display()));
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("a.jsonl");
    let file_arg = file.display().to_string();
    let out = custode(
        &data_dir,
        &[
            "audit",
            "export",
            "--account",
            &a.user_id,
            "--out",
            &file_arg,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), api);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "an export is its owner's alone"
    );
    // --out never replaces a file (least of all the log), nor writes into the data dir.
    let log_before = std::fs::read(data_dir.join("events.db")).unwrap();
    for target in [
        file_arg.clone(),
        data_dir.join("events.db").display().to_string(),
        data_dir.join("new.jsonl").display().to_string(),
    ] {
        for args in [
            vec![
                "audit",
                "export",
                "--account",
                a.user_id.as_str(),
                "--out",
                &target,
            ],
            vec!["log", "dump", "--out", &target],
        ] {
            let refused = custode(&data_dir, &args);
            assert!(!refused.status.success(), "{args:?} wrote {target}");
        }
    }
    assert_eq!(
        std::fs::read(data_dir.join("events.db")).unwrap(),
        log_before
    );
    assert!(!data_dir.join("new.jsonl").exists());
    // An account id names an account as well as its user id does.
    let res = custode(&data_dir, &["audit", "export", "--account", &b.account_id]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(stdout(&res).contains(&b.account_id));
    drop(dir);
}

/// The dump's line as canonical bytes (its hash field cut off) and its hash.
fn split_line(line: &str) -> (String, String) {
    let at = line.rfind(",\"hash\":\"").expect("a hash");
    let hash = line[at + 9..line.len() - 2].to_string();
    (format!("{}}}", &line[..at]), hash)
}

fn chain(prev: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    format!("{:x}", h.finalize())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn tamper(data_dir: &Path, work: &Path, name: &str, sql: &str) -> std::path::PathBuf {
    let copy = work.join(name);
    copy_dir(data_dir, &copy);
    let raw = rusqlite::Connection::open(copy.join("events.db")).unwrap();
    raw.execute_batch("DROP TRIGGER events_are_immutable; DROP TRIGGER events_are_never_deleted;")
        .unwrap();
    raw.execute_batch(sql).unwrap();
    drop(raw);
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_each_kind_of_tampering_and_checkpoints_catch_cuts_and_rewrites() {
    let app = TestApp::spawn().await;
    let _ = two_holders(&app).await;
    projected(&app).await;
    assert!(
        !app.data_dir.join("checkpoints.jsonl").exists(),
        "an empty log at start is not worth a checkpoint"
    );
    // At start the service signs the head it found.
    let (data_dir, dir, clock) = app.stop().await;
    let app = TestApp::start(&data_dir, crate::helpers::file_config(), clock).await;
    let file = data_dir.join("checkpoints.jsonl");
    crate::processes::eventually(
        std::time::Duration::from_secs(10),
        "a checkpoint at start",
        || std::fs::read_to_string(&file).is_ok_and(|t| t.ends_with('\n')),
    )
    .await;
    let periodic = std::fs::read_to_string(&file).unwrap();
    assert_eq!(periodic.lines().count(), 1);
    // One on demand while the service runs.
    let out = custode(&app.data_dir, &["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let signed: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let head = signed["position"].as_u64().unwrap();
    let key = signed["public_key"].as_str().unwrap().to_string();
    assert_eq!(head, app.log_head());
    let at_start: Value = serde_json::from_str(periodic.trim()).unwrap();
    assert_eq!(at_start["position"].as_u64(), Some(head));
    // Verify works beside the running service too.
    let cp = app.data_dir.join("cp.jsonl");
    std::fs::write(&cp, stdout(&out)).unwrap();
    let cp = cp.display().to_string();
    let live = custode(&app.data_dir, &["audit", "verify", "--checkpoint", &cp]);
    assert!(live.status.success(), "{}{}", stdout(&live), stderr(&live));
    let _ = app.stop().await;
    let work = tempfile::tempdir().unwrap();
    let checkpoint = work.path().join("kept-elsewhere.jsonl");
    std::fs::write(&checkpoint, format!("{periodic}{}", stdout(&out))).unwrap();
    let checkpoint_arg = checkpoint.display().to_string();

    let ok = custode(
        &data_dir,
        &[
            "audit",
            "verify",
            "--checkpoint",
            &checkpoint_arg,
            "--public-key",
            &key,
        ],
    );
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert!(
        stdout(&ok).contains(&format!("{head} events verified; 2 checkpoints hold")),
        "{}",
        stdout(&ok)
    );

    let event_id = |position: u64| -> String {
        let conn = rusqlite::Connection::open(data_dir.join("events.db")).unwrap();
        conn.query_row(
            "SELECT event_id FROM events WHERE position = ?1",
            [position],
            |r| r.get(0),
        )
        .unwrap()
    };
    // Tampering with the rows themselves: the chain names the first event touched.
    let swap = "UPDATE events SET position = -1 WHERE position = 6;
                UPDATE events SET position = 6 WHERE position = 7;
                UPDATE events SET position = 7 WHERE position = -1;";
    for (name, sql, position) in [
        (
            "payload-byte",
            "UPDATE events SET payload = substr(payload, 1, 10) || char(unicode(substr(payload, 11, 1)) + 1) || substr(payload, 12) WHERE position = 3",
            3,
        ),
        ("type", "UPDATE events SET type = 'PasswordChanged' || type WHERE position = 5", 5),
        ("stream", "UPDATE events SET stream = stream || 'x' WHERE position = 4", 4),
        ("swapped", swap, 6),
    ] {
        let copy = tamper(&data_dir, work.path(), name, sql);
        let out = custode(&copy, &["audit", "verify"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        let said = stdout(&out);
        assert!(said.contains(&format!("chain broken at position {position} (event ")), "{name}: {said}");
        let named = if name == "swapped" { event_id(7) } else { event_id(position) };
        assert!(said.contains(&named), "{name} does not name {named}: {said}");
    }

    // The tail cut: the chain alone still holds; the checkpoint does not.
    let dumped = custode(&data_dir, &["log", "dump"]);
    assert!(dumped.status.success(), "{}", stderr(&dumped));
    let lines: Vec<String> = stdout(&dumped).lines().map(String::from).collect();
    assert_eq!(lines.len() as u64, head);
    let cut = work.path().join("cut");
    let fixture = work.path().join("cut.jsonl");
    std::fs::write(&fixture, lines[..lines.len() - 3].join("\n")).unwrap();
    let loaded = custode(&cut, &["log", "load", &fixture.display().to_string()]);
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert!(
        custode(&cut, &["audit", "verify"]).status.success(),
        "a cut chain still verifies alone"
    );
    // A copy without the keys: the auditor names the key it trusts, or verify refuses.
    let out = custode(&cut, &["audit", "verify", "--checkpoint", &checkpoint_arg]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--public-key"), "{}", stderr(&out));
    let out = custode(
        &cut,
        &[
            "audit",
            "verify",
            "--checkpoint",
            &checkpoint_arg,
            "--public-key",
            &key,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!("the log ends at position {}", head - 3)),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("tail was cut"), "{}", stdout(&out));

    // The whole chain recomputed after an edit: only the checkpoint names it.
    let edited_at = lines.iter().position(|l| l.contains("audit.a")).unwrap();
    let mut prev = "0".repeat(64);
    let mut rewritten = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let (mut canonical, _) = split_line(line);
        if i == edited_at {
            canonical = canonical.replace("audit.a", "audit.z");
        }
        let hash = chain(&prev, &canonical);
        rewritten.push(format!(
            "{},\"hash\":\"{hash}\"}}",
            &canonical[..canonical.len() - 1]
        ));
        prev = hash;
    }
    let forged = work.path().join("forged");
    let fixture = work.path().join("forged.jsonl");
    std::fs::write(&fixture, rewritten.join("\n")).unwrap();
    assert!(
        custode(&forged, &["log", "load", &fixture.display().to_string()])
            .status
            .success()
    );
    assert!(
        custode(&forged, &["audit", "verify"]).status.success(),
        "a recomputed chain verifies alone"
    );
    let out = custode(
        &forged,
        &[
            "audit",
            "verify",
            "--checkpoint",
            &checkpoint_arg,
            "--public-key",
            &key,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let said = stdout(&out);
    assert!(said.contains("the log was rewritten"), "{said}");
    assert!(
        said.contains(&event_id(head)),
        "names the event at the checkpoint: {said}"
    );
    // A key that is no key is refused as such, and a key without checkpoints to check is
    // refused rather than ignored.
    let out = custode(
        &forged,
        &[
            "audit",
            "verify",
            "--checkpoint",
            &checkpoint_arg,
            "--public-key",
            "garbage",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an Ed25519 public key"),
        "{}",
        stderr(&out)
    );
    let out = custode(&forged, &["audit", "verify", "--public-key", &key]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--checkpoint"), "{}", stderr(&out));

    // A fixture edited without recomputing is refused at load, naming the line.
    let mut edited = lines.clone();
    edited[edited_at] = edited[edited_at].replace("audit.a", "audit.q");
    let fixture = work.path().join("edited.jsonl");
    std::fs::write(&fixture, edited.join("\n")).unwrap();
    let refused = custode(
        &work.path().join("edited"),
        &["log", "load", &fixture.display().to_string()],
    );
    assert!(!refused.status.success());
    let named = format!("fixture line {}", edited_at + 1);
    assert!(stderr(&refused).contains(&named), "{}", stderr(&refused));
    assert!(
        !work.path().join("edited/events.db").exists(),
        "nothing left behind"
    );

    // An empty checkpoint file proves nothing: it fails.
    let empty = work.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let out = custode(
        &data_dir,
        &[
            "audit",
            "verify",
            "--checkpoint",
            &empty.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("holds no checkpoint"),
        "{}",
        stdout(&out)
    );
    // No signing key is made up for a copy, and a broken chain is never signed.
    let out = custode(&cut, &["audit", "checkpoint"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no signing key"), "{}", stderr(&out));
    assert!(!cut.join("keys/audit-signing.key").exists());
    let broken = tamper(
        &data_dir,
        work.path(),
        "broken",
        "UPDATE events SET type = 'X' || type WHERE position = 2",
    );
    let out = custode(&broken, &["audit", "checkpoint"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not signing"), "{}", stderr(&out));
    // A fixture whose event cannot be read is refused at load, though its chain holds.
    let (canonical, _) = split_line(&lines[0]);
    assert!(
        canonical.starts_with("{\"actor\":{\"id\":null,\"kind\":\"operator\"}"),
        "{canonical}"
    );
    let unreadable = canonical.replacen("\"kind\":\"operator\"", "\"kind\":\"god\"", 1);
    let hash = chain(&"0".repeat(64), &unreadable);
    let fixture = work.path().join("unreadable.jsonl");
    std::fs::write(
        &fixture,
        format!(
            "{},\"hash\":\"{hash}\"}}",
            &unreadable[..unreadable.len() - 1]
        ),
    )
    .unwrap();
    let refused = custode(
        &work.path().join("unreadable"),
        &["log", "load", &fixture.display().to_string()],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("fixture line 1"),
        "{}",
        stderr(&refused)
    );

    // A forged checkpoint line (signature broken) is refused as such.
    let mut forged_line: Value = serde_json::from_str(lines_of(&checkpoint)[1].as_str()).unwrap();
    forged_line["position"] = json!(head - 1);
    let forged_cp = work.path().join("forged-checkpoint.jsonl");
    std::fs::write(&forged_cp, forged_line.to_string()).unwrap();
    let out = custode(
        &data_dir,
        &[
            "audit",
            "verify",
            "--checkpoint",
            &forged_cp.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("signature does not hold"),
        "{}",
        stdout(&out)
    );
    drop(dir);
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_in_time_replay_equals_the_read_models_the_service_had_then() {
    let app = TestApp::spawn().await;
    let first = holder(
        &app,
        "tempo.uno@pec.example.it",
        "uno@example.org",
        "+393475550001",
    )
    .await;
    let then = projected(&app).await;
    let live_then = dump(&app.data_dir);
    let then_time = app.clock.now();
    // Later: another holder, a changed recovery contact, a logout.
    app.advance(chrono::Duration::minutes(5));
    holder(
        &app,
        "tempo.due@pec.example.it",
        "due@example.org",
        "+393475550002",
    )
    .await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&first.token),
            Some(json!({ "email": "uno.nuovo@example.org" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    projected(&app).await;
    let live_now = dump(&app.data_dir);
    assert_ne!(live_now, live_then);

    // While the service runs: --into reads the log read-only and takes no lock.
    let work = tempfile::tempdir().unwrap();
    let at_position = work.path().join("at-position");
    let out = custode(
        &app.data_dir,
        &[
            "replay",
            "--until",
            &then.to_string(),
            "--into",
            &at_position.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("events/s"),
        "plain progress lines off a terminal: {}",
        stderr(&out)
    );
    assert_eq!(dump(&at_position), live_then);

    let at_time = work.path().join("at-time");
    let when = then_time.to_rfc3339();
    let out = custode(
        &app.data_dir,
        &[
            "replay",
            "--until",
            &when,
            "--into",
            &at_time.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dump(&at_time), live_then);

    // The bad-input paths.
    let out = custode(
        &app.data_dir,
        &[
            "replay",
            "--until",
            "yesterday",
            "--into",
            &at_time.display().to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("neither a position nor an RFC 3339 time"),
        "{}",
        stderr(&out)
    );
    let out = custode(
        &app.data_dir,
        &[
            "replay",
            "--projection",
            "nope",
            "--into",
            &at_time.display().to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("accounts, sessions"),
        "{}",
        stderr(&out)
    );
    let data_dir_arg = app.data_dir.display().to_string();
    // Another data dir (it holds a log) is never the target of --into.
    let other = work.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("events.db"), b"").unwrap();
    let out = custode(
        &app.data_dir,
        &["replay", "--into", &other.display().to_string()],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds an event log"),
        "{}",
        stderr(&out)
    );
    let out = custode(&app.data_dir, &["replay", "--into", &data_dir_arg]);
    assert!(!out.status.success());
    // Nor any folder inside the data dir (read models hold contacts in clear), however the
    // path is written; nothing is created there.
    for inside in [
        app.data_dir.join("keys"),
        app.data_dir.join("new-folder"),
        app.data_dir.join("keys").join("..").join("mail"),
        app.data_dir.join("nowhere").join("..").join("x"),
    ] {
        let out = custode(
            &app.data_dir,
            &["replay", "--into", &inside.display().to_string()],
        );
        assert!(!out.status.success(), "{}", inside.display());
        assert!(
            stderr(&out).contains("inside the data directory"),
            "{}",
            stderr(&out)
        );
        assert!(!app.data_dir.join("keys").join("read.db").exists());
        assert!(!app.data_dir.join("new-folder").exists());
        assert!(!app.data_dir.join("nowhere").exists());
    }

    // One read model, rebuilt in place on the stopped service's data dir.
    let (data_dir, dir, _) = app.stop().await;
    let conn = rusqlite::Connection::open(data_dir.join("read.db")).unwrap();
    conn.execute("DELETE FROM accounts", []).unwrap();
    drop(conn);
    assert_ne!(dump(&data_dir), live_now);
    let out = custode(&data_dir, &["replay", "--projection", "accounts"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dump(&data_dir), live_now);
    drop(dir);
}
