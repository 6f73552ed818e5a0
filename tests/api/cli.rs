//! The real binary: `serve` on its defaults survives bad input, `audit verify` checks the chain,
//! a bad settings file stops startup naming the key, `replay` refuses a held data directory.

use crate::helpers::{load_json, OPERATOR_KEY};
use crate::processes::{run_custode, run_custode_ok, serve, BIN};
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_binary_survives_bad_input_and_its_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let ok = client
        .post(format!("{}/v1/admin/accounts", served.base))
        .bearer_auth(OPERATOR_KEY)
        .json(&serde_json::json!({ "kind": "identity", "user_id": "binario.test", "contact_mobile": "+393470000001" }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    for body in [
        &b"{oops"[..],
        b"[]",
        br#"{"user_id": [], "password": {}}"#,
        &vec![b'{'; 100 * 1024],
    ] {
        let res = client
            .post(format!("{}/v1/sessions", served.base))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(
        reqwest::get(format!("{}/readyz", served.base))
            .await
            .unwrap()
            .status(),
        200
    );

    // The log is held by the service: replay refuses, clearly.
    let out = Command::new(BIN)
        .args(["replay"])
        .env("CUSTODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The data directory is the service user's alone.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // And so is every SQLite file in it, whatever the umask: hashes, sealed secrets, personal
    // data.
    let private_databases = |dir: &std::path::Path| {
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".db") {
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{name} is {mode:o}");
                seen.push(name);
            }
        }
        seen
    };
    let seen = private_databases(dir.path());
    for name in ["events.db", "events.db-wal", "read.db", "workers.db"] {
        assert!(seen.iter().any(|s| s == name), "{name} not in {seen:?}");
    }

    // SIGTERM (a service manager's stop) ends the process cleanly.
    let mut served = served;
    let pid = served.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "custode did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    drop(served);

    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env("CUSTODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The opening's five (the user id's claim, the account, its temporary password, the
    // identity's issue and its inactivity deadline), and the notice of it sent to the contact
    // mobile.
    assert!(
        stdout.contains("chain intact: 6 events verified"),
        "{stdout}"
    );

    run_custode_ok(dir.path(), &["replay"]);
    assert!(private_databases(dir.path()).contains(&"read.db".to_string()));

    // Tampering with an event is named by position.
    let raw = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
    raw.execute_batch("DROP TRIGGER events_are_immutable")
        .unwrap();
    raw.execute(
        "UPDATE events SET actor_kind = 'holder' WHERE position = 2",
        [],
    )
    .unwrap();
    drop(raw);
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env("CUSTODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain broken at position 2"));

    // A replay that fails (an event it cannot read) leaves the read models as they were and
    // nothing of its rebuild behind.
    let raw = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
    raw.execute(
        "UPDATE events SET payload = 'not json' WHERE position = 3",
        [],
    )
    .unwrap();
    drop(raw);
    let before = std::fs::read(dir.path().join("read.db")).unwrap();
    let out = run_custode(dir.path(), &["replay"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("position 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.path().join("read.db")).unwrap(), before);
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("rebuild"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_unknown_settings_key_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custode.toml");
    std::fs::write(&config, "[policy]\nmin_lenght = 10\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CUSTODE_CONFIG", &config)
        .env("CUSTODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("min_lenght"));
    // The OpenAPI document and the example settings stay loadable.
    let _ = load_json("schemas/openapi.json");
}

/// SEC-8: `/metrics` (the log's head, the workers' counters) is served on the operator listener
/// only; the public listener answers it as any unknown path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_8_metrics_are_served_on_the_operator_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &[]).await;
    let public = reqwest::get(format!("{}/metrics", served.base))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    assert_eq!(public.headers()["content-type"], "application/problem+json");
    let operator = reqwest::get(format!("{}/metrics", served.metrics))
        .await
        .unwrap();
    assert_eq!(operator.status(), 200);
    assert_eq!(operator.headers()["cache-control"], "no-store");
    assert!(operator
        .text()
        .await
        .unwrap()
        .contains("custode_log_head_position"));
    // Nothing else is served there.
    let other = reqwest::get(format!("{}/v1/openapi.json", served.metrics))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// SEC-7: an API node that delivers nothing (`--workers none`) seals secrets to the public
/// delivery key the workers published, and holds no key that opens them; the workers' private
/// key opens what it sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_7_an_api_node_with_no_workers_holds_no_private_delivery_key() {
    use custode_commands::delivery::DeliveryKeys;
    let workers = tempfile::tempdir().unwrap();
    let api = tempfile::tempdir().unwrap();
    let delivering = DeliveryKeys::open(&workers.path().join("keys")).unwrap();
    delivering.publish(chrono::Utc::now()).unwrap();
    let served = serve(api.path(), &["--workers", "none"]).await;
    let open = || async {
        reqwest::Client::new()
            .post(format!("{}/v1/admin/accounts", served.base))
            .bearer_auth(OPERATOR_KEY)
            .json(&serde_json::json!({ "kind": "mailbox", "user_id": "sigillo@pec.example.it", "contact_email": "s@example.it" }))
            .send()
            .await
            .unwrap()
    };
    // Before any delivering process has published its key, a command that would seal a secret
    // is turned away as a passing state (503 with Retry-After), and nothing is written.
    let res = open().await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/busy", "{problem}");
    assert!(!problem.to_string().contains("keys"), "{problem}");
    let count = |dir: &std::path::Path| -> i64 {
        rusqlite::Connection::open(dir.join("events.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(api.path()), 0);
    // Only the public halves reach the API node.
    let published = api.path().join("keys/delivery");
    std::fs::create_dir_all(&published).unwrap();
    for entry in std::fs::read_dir(workers.path().join("keys/delivery")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pub") {
            std::fs::copy(&path, published.join(path.file_name().unwrap())).unwrap();
        }
    }
    let res = open().await;
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().await.unwrap();
    let temporary = body["temporary_password"].as_str().unwrap().to_string();
    let account_id: uuid::Uuid = body["account_id"].as_str().unwrap().parse().unwrap();
    drop(served);

    let sealing = DeliveryKeys::sealing_only(&api.path().join("keys")).unwrap();
    assert!(
        !sealing.holds_private_keys().unwrap(),
        "the API node holds no private key"
    );
    let names: Vec<String> = std::fs::read_dir(&published)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".pub")), "{names:?}");
    // The sealed copy in the API node's log opens with the workers' private key only.
    let conn = rusqlite::Connection::open(api.path().join("events.db")).unwrap();
    let payload: String = conn
        .query_row(
            "SELECT payload FROM events WHERE type = 'TemporaryPasswordIssued'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
    let sealed: custode_domain::Sealed =
        serde_json::from_value(payload["sealed_password"].clone()).unwrap();
    let context = custode_domain::account::temporary_password_context(account_id);
    assert!(sealing.open_sealed(&sealed, &context).is_err());
    assert_eq!(
        delivering.open_sealed(&sealed, &context).unwrap().expose(),
        temporary
    );
}

/// SEC-9: a connection that opens and never finishes its request's headers is closed after
/// `http.header_timeout_ms`, instead of holding a file descriptor for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_9_a_connection_that_never_finishes_its_headers_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custode.toml"),
        "[http]\nheader_timeout_ms = 300\n",
    )
    .unwrap();
    let served = serve(dir.path(), &[]).await;
    let address = served.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the half-sent request's connection stayed open"
    );
    // Whole requests are served as ever.
    let res = reqwest::get(format!("{}/healthz", served.base))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// SEC-9: one peer cannot hold more than `http.max_connections_per_peer` connections open (half-
/// sent requests would use up the file descriptors); past it a connection is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_9_one_peer_cannot_hold_every_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custode.toml"),
        "[http]\nmax_connections_per_peer = 3\n",
    )
    .unwrap();
    let served = serve(dir.path(), &[]).await;
    let address = served.base.trim_start_matches("http://").to_string();
    // The readiness probe's own connection closes first: this test counts every place.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
        connection
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(connection);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(&address).await.unwrap();
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buffer = [0u8; 256];
    let answer = tokio::time::timeout(Duration::from_secs(3), fourth.read(&mut buffer)).await;
    assert!(
        matches!(answer, Ok(Ok(0)) | Ok(Err(_))),
        "the fourth connection was served: {answer:?}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = reqwest::get(format!("{}/healthz", served.base))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Issue 22: a log written to a pipe carries no terminal colour codes, and `--log-format json`
/// (or `CUSTODE_LOG_FORMAT=json`) writes one JSON object a line, as log collectors expect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_to_a_pipe_are_plain_and_json_is_a_setting() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::processes::free_port();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("CUSTODE_DATA_DIR", dir.path())
            .env("CUSTODE_LOG_FORMAT", format)
            .env_remove("NO_COLOR")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        crate::processes::wait_until_up(&base).await;
        let _ = reqwest::get(format!("{base}/login")).await;
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stderr).unwrap();
        assert!(text.contains("custode is serving"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "colour codes in a piped log: {text}"
        );
        if format == "json" {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let value: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                assert!(
                    value["level"].is_string() && value["message"].is_string(),
                    "{line}"
                );
            }
        }
    }
}

/// Issue 22: `custode backup --into DIR` copies a data directory while the service writes to
/// it; custode starts on the copy with every account acknowledged before the backup, and the
/// copy's chain verifies. A backup never writes over an existing directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_to_a_working_service() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let (open_client, open_base) = (client.clone(), served.base.clone());
    let open = move |n: usize| {
        let (client, base) = (open_client.clone(), open_base.clone());
        async move {
            client
                .post(format!("{base}/v1/admin/accounts"))
                .bearer_auth(OPERATOR_KEY)
                .json(&serde_json::json!({ "kind": "mailbox", "user_id": format!("copia{n}@pec.example.it"), "contact_email": "copia@example.org" }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for n in 0..5 {
        assert_eq!(open(n).await, 201);
    }
    // Writes go on while the backup runs.
    let writing = tokio::spawn({
        let open = open.clone();
        async move {
            for n in 5..25 {
                let _ = open(n).await;
            }
        }
    });
    let copy = tempfile::tempdir().unwrap();
    let into = copy.path().join("backup");
    let target = into.to_str().unwrap();
    let out = run_custode_ok(dir.path(), &["backup", "--into", target]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain verified"));
    writing.await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["events.db", "keys/service.key"] {
            let mode = std::fs::metadata(into.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
        }
    }
    // Again into the same directory: refused, nothing overwritten.
    let again = run_custode(dir.path(), &["backup", "--into", target]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never over another"));
    drop(served);

    run_custode_ok(&into, &["audit", "verify"]);
    let restored = serve(&into, &[]).await;
    for n in 0..5 {
        let res = client
            .get(format!(
                "{}/v1/admin/accounts/copia{n}@pec.example.it",
                restored.base
            ))
            .bearer_auth(OPERATOR_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "copia{n} is in the backup");
    }
    // The restored service takes new commands.
    let res = client
        .post(format!("{}/v1/admin/accounts", restored.base))
        .bearer_auth(OPERATOR_KEY)
        .json(&serde_json::json!({ "kind": "mailbox", "user_id": "dopo@pec.example.it", "contact_email": "dopo@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}
