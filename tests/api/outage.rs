//! Issue 22, outages: the disk fills up under the log. The service runs with a file-size limit
//! (`ulimit -f`, SIGXFSZ ignored, so a write past it fails with EFBIG as on a full disk); commands
//! past it are refused with a clear problem and nothing acknowledged is lost; once the limit is
//! lifted (`prlimit`, as an operator frees space) the same service takes commands again by
//! itself, and its log verifies.

use crate::helpers::OPERATOR_KEY;
use crate::processes::{free_port, run_custode_ok, BIN};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

async fn open(client: &reqwest::Client, base: &str, n: usize) -> Option<reqwest::StatusCode> {
    client
        .post(format!("{base}/v1/admin/accounts"))
        .bearer_auth(OPERATOR_KEY)
        .json(&serde_json::json!({
            "kind": "mailbox",
            "user_id": format!("pieno{n}@pec.example.it"),
            "contact_email": format!("pieno{n}@example.org"),
            "name": "x".repeat(150),
        }))
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

/// The service's process, killed however the test ends (a failed assertion included).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `custode serve` over `dir` with a file-size limit of 3 MiB (the fresh data dir fits, a few
/// hundred accounts do not), commands waiting little for read models that cannot be written
/// (the default is 5 s each); with its base URL, once it answers.
async fn limited(dir: &std::path::Path) -> (Killed, String) {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for the disk-full tests");
    }
    std::fs::write(dir.join("custode.toml"), "[http]\nread_wait_ms = 100\n").unwrap();
    let port = free_port();
    let script = format!(
        "trap '' XFSZ; ulimit -S -f 6144; exec {BIN} serve --listen 127.0.0.1:{port} --metrics-listen 127.0.0.1:0"
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .env("CUSTODE_DATA_DIR", dir)
        .env("CUSTODE_OPERATOR_KEY", OPERATOR_KEY)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    crate::processes::wait_until_up(&base).await;
    (child, base)
}

/// Opens accounts until the disk refuses one: the openings acknowledged, and the first refused
/// with its status.
async fn fill(client: &reqwest::Client, base: &str) -> (Vec<usize>, (usize, reqwest::StatusCode)) {
    let mut acked = Vec::new();
    for n in 0..20_000 {
        match open(client, base, n).await {
            Some(s) if s == 201 => acked.push(n),
            Some(s) => return (acked, (n, s)),
            None => panic!(
                "the service fell over when the disk filled (after {} openings)",
                acked.len()
            ),
        }
    }
    panic!("the file-size limit was never reached")
}

/// Space comes back for `child`, as an operator frees it.
fn lift(child: &Killed) {
    crate::processes::succeeded(
        "prlimit",
        Command::new("prlimit")
            .args(["--pid", &child.0.id().to_string(), "--fsize=unlimited:"])
            .output()
            .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_commands_clearly_and_recovers_by_itself() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for the disk-full test");
    }
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = limited(dir.path()).await;
    let client = reqwest::Client::new();
    let (acked, (first_refused, status)) = fill(&client, &base).await;
    assert_eq!(
        status, 503,
        "a full disk is the service's trouble, to retry later"
    );
    // It goes on refusing clearly, and answering health checks.
    let res = client
        .post(format!("{base}/v1/admin/accounts"))
        .bearer_auth(OPERATOR_KEY)
        .json(&serde_json::json!({ "kind": "mailbox", "user_id": "ancora@pec.example.it", "name": "x".repeat(150) }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    // Space comes back: the same process takes commands again.
    lift(&child);
    let recovered = Instant::now();
    let mut n = first_refused + 1_000_000;
    loop {
        if open(&client, &base, n).await == Some(reqwest::StatusCode::CREATED) {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(30),
            "the service did not recover once space came back"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The read models catch up by themselves (the projector retried meanwhile): every
    // acknowledged account is there.
    for n in &acked {
        let found = Instant::now();
        loop {
            let res = client
                .get(format!("{base}/v1/admin/accounts/pieno{n}@pec.example.it"))
                .bearer_auth(OPERATOR_KEY)
                .send()
                .await
                .unwrap();
            if res.status() == 200 {
                break;
            }
            assert!(
                found.elapsed() < Duration::from_secs(30),
                "pieno{n} was acknowledged, then lost"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(child);
    run_custode_ok(dir.path(), &["audit", "verify"]);
    println!(
        "{} openings before the disk filled; refused at {first_refused} with {status}",
        acked.len()
    );
}

/// `body` to `path` of `base` with `token`: the status and the JSON answer (`Null` if none).
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<String>,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut req = client.request(method, url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// A mailbox with two-step verification on and an app password for `mailbox`, opened through
/// the API of the service at `base` (real time: codes are computed for now, and the login
/// after activation uses the next step's, which ±1 step admits and no replay refuses).
async fn mailbox_with_app_password(client: &reqwest::Client, base: &str, user_id: &str) -> String {
    use reqwest::Method;
    const POST: Method = Method::POST;
    const PUT: Method = Method::PUT;
    use serde_json::json;
    let url = |path: &str| format!("{base}{path}");
    let (s, opened) = call(
        client,
        Method::POST,
        url("/v1/admin/accounts"),
        Some(OPERATOR_KEY.into()),
        Some(json!({ "kind": "mailbox", "user_id": user_id })),
    )
    .await;
    assert_eq!(s, 201, "{opened}");
    let login = |password: String, otp: Option<String>| {
        let mut body = json!({ "user_id": user_id, "password": password });
        if let Some(otp) = otp {
            body["otp"] = json!(otp);
        }
        call(client, Method::POST, url("/v1/sessions"), None, Some(body))
    };
    // The holder's own calls, with a session.
    let holder = |method: Method, path: &str, token: &str, body: Option<serde_json::Value>| {
        call(client, method, url(path), Some(token.to_string()), body)
    };
    let temporary = opened["temporary_password"].as_str().unwrap().to_string();
    let (_, session) = login(temporary.clone(), None).await;
    let token = session["session_token"].as_str().unwrap().to_string();
    let password = "Tr4m-Colle!Verde";
    let change = json!({ "current_password": temporary, "new_password": password, "new_password_repeat": password });
    let (s, _) = holder(POST, "/v1/account/password", &token, Some(change)).await;
    assert_eq!(s, 204);
    let (_, session) = login(password.into(), None).await;
    let token = session["session_token"].as_str().unwrap().to_string();
    let recovery = json!({ "email": "recupero@example.it" });
    let (s, _) = holder(PUT, "/v1/account/recovery-info", &token, Some(recovery)).await;
    assert_eq!(s, 200);
    let (s, enrol) = holder(POST, "/v1/account/two-factor", &token, None).await;
    assert_eq!(s, 200, "{enrol}");
    let totp = totp_rs::TOTP::from_url(enrol["otpauth_uri"].as_str().unwrap()).unwrap();
    let now = chrono::Utc::now().timestamp() as u64;
    let code = json!({ "code": totp.generate(now) });
    let (s, _) = holder(POST, "/v1/account/two-factor/confirm", &token, Some(code)).await;
    assert_eq!(s, 204);
    let (s, session) = login(password.into(), Some(totp.generate(now + 30))).await;
    assert_eq!(s, 201, "{session}");
    let token = session["session_token"].as_str().unwrap().to_string();
    let scope = json!({ "scope": "mailbox" });
    let (s, created) = holder(POST, "/v1/account/app-passwords", &token, Some(scope)).await;
    assert_eq!(s, 201, "{created}");
    created["password"].as_str().unwrap().to_string()
}

/// The mail servers' checks of `user_id` in the log, in log order, read by `custode audit
/// export` beside the running service.
fn checks_in_log(dir: &std::path::Path, user_id: &str) -> Vec<serde_json::Value> {
    let out = run_custode_ok(dir, &["audit", "export", "--account", user_id]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains("\"AppPasswordChecked\""))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// AH-3: access records are durable. The mail servers' checks go on being answered while the
/// disk is full (they decide nothing, from what is in memory), and their records, which the
/// disk cannot take, are held and written once space is back: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_records_wait_for_a_full_disk_and_none_is_lost_ah_3() {
    const USER: &str = "posta@pec.example.it";
    const CHECKS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = limited(dir.path()).await;
    let client = reqwest::Client::new();
    let password = mailbox_with_app_password(&client, &base, USER).await;
    let check = || {
        call(
            &client,
            reqwest::Method::POST,
            format!("{base}/v1/auth/app-password"),
            Some(OPERATOR_KEY.into()),
            Some(
                serde_json::json!({ "user_id": USER, "scope": "mailbox", "password": password, "client_ip": "198.51.100.7" }),
            ),
        )
    };
    // One check with room on the disk, so the next ones are answered from memory.
    assert_eq!(check().await.0, 200);
    crate::processes::eventually(Duration::from_secs(10), "the first check's record", || {
        checks_in_log(dir.path(), USER).len() == 1
    })
    .await;
    let (_, (_, status)) = fill(&client, &base).await;
    assert_eq!(status, 503, "the disk is full");
    for _ in 0..CHECKS {
        let (status, answer) = check().await;
        assert_eq!(
            status, 200,
            "a check is answered while the disk is full: {answer}"
        );
        assert_eq!(answer["result"], "allow");
    }
    // The disk took some of them at most (a full disk still has room for a page here and
    // there): the others are held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let written = checks_in_log(dir.path(), USER).len();
    assert!(
        written < 1 + CHECKS,
        "the full disk took every record ({written}): this test shows nothing"
    );
    // What may wait for the disk is bounded: past it, a check is turned away (503) rather
    // than answered with nothing recorded. Checks from 16 connections (half of SEC-9's share
    // of one address) until the first such 503; every one answered is to reach the log.
    let (allowed, turned_away) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let started = Instant::now();
    let load = (0..16).map(|_| async {
        while turned_away.load(Relaxed) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no check was turned away after {} were answered",
                allowed.load(Relaxed)
            );
            match check().await {
                (s, answer) if s == 200 => assert_eq!(answer["result"], "allow"),
                (s, answer) if s == 503 => {
                    let detail = answer["detail"].as_str().unwrap_or_default();
                    assert!(detail.contains("access history"), "{answer}");
                    assert_eq!(answer["type"], "/problems/busy");
                    turned_away.fetch_add(1, Relaxed);
                    continue;
                }
                (s, answer) => panic!("{s}: {answer}"),
            }
            allowed.fetch_add(1, Relaxed);
        }
    });
    futures_util::future::join_all(load).await;
    let allowed = allowed.into_inner();
    // Not before the recorder's queue was full.
    assert!(
        CHECKS + allowed >= custode_commands::access_recorder::IN_FLIGHT,
        "turned away after only {} checks",
        CHECKS + allowed
    );
    lift(&child);
    crate::processes::eventually(
        Duration::from_secs(60),
        "every held record in the log",
        || checks_in_log(dir.path(), USER).len() == 1 + CHECKS + allowed,
    )
    .await;
    // In the order they were queued: the access stream's versions follow the checks' times
    // (SEC-2's count of recent failures reads the newest versions first). Concurrent checks
    // take their time and their place in the queue a moment apart; a held batch written
    // after newer ones would be a second or more out of order (the phases are a second apart).
    let records = checks_in_log(dir.path(), USER);
    let mut newest = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let mut version = 0;
    for record in &records {
        let at: chrono::DateTime<chrono::Utc> =
            record["occurred_at"].as_str().unwrap().parse().unwrap();
        assert!(record["version"].as_u64().unwrap() > version, "{record}");
        version = record["version"].as_u64().unwrap();
        assert!(
            at > newest - chrono::Duration::milliseconds(500),
            "a record of {at} written after one of {newest}"
        );
        newest = newest.max(at);
    }
    drop(child);
    run_custode_ok(dir.path(), &["audit", "verify"]);
}
