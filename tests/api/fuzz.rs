//! Issue 22, hostile input: schemathesis over the whole OpenAPI document against the real
//! binary, with a pinned seed and a bounded number of examples per operation: no operation
//! answers a server error. Run twice: with the operator's key (the operator endpoints and every
//! anonymous one) and with a holder's session (the account's endpoints; logout, password
//! change and suspension, which would end the session under the fuzzer, are left out of that
//! run). `./scripts/test` installs schemathesis (pinned) in its virtualenv.

use crate::helpers::OPERATOR_KEY;
use crate::processes::serve;
use serde_json::{json, Value};

/// Examples per operation; the seed makes the run repeatable.
const EXAMPLES: &str = "25";
const SEED: &str = "20261203";

async fn post(base: &str, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// A mailbox past its required actions: its session token.
async fn holder_session(base: &str) -> String {
    let opened: Value = post(
        base,
        "/v1/admin/accounts",
        Some(OPERATOR_KEY),
        json!({ "kind": "mailbox", "user_id": "fuzz@pec.example.it", "plan": "pro", "contact_email": "fuzz@example.it" }),
    )
    .await
    .json()
    .await
    .unwrap();
    let temporary = opened["temporary_password"].as_str().unwrap();
    let login = |password: String| async move {
        let session: Value = post(
            base,
            "/v1/sessions",
            None,
            json!({ "user_id": "fuzz@pec.example.it", "password": password }),
        )
        .await
        .json()
        .await
        .unwrap();
        session["session_token"].as_str().unwrap().to_string()
    };
    let token = login(temporary.to_string()).await;
    let password = "Tr4m-Colle!Verde";
    let res = post(
        base,
        "/v1/account/password",
        Some(&token),
        json!({ "current_password": temporary, "new_password": password, "new_password_repeat": password }),
    )
    .await;
    assert_eq!(res.status(), 204);
    let token = login(password.to_string()).await;
    let res = reqwest::Client::new()
        .put(format!("{base}/v1/account/recovery-info"))
        .bearer_auth(&token)
        .json(&json!({ "email": "fuzz.recupero@example.org", "mobile": "+393331112233" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    token
}

fn schemathesis(python: &str, base: &str, token: &str, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(python)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{base}/v1/openapi.json"))
        .args([
            "--experimental=openapi-3.1",
            "--checks",
            "not_a_server_error",
        ])
        .args([
            "--hypothesis-seed",
            SEED,
            "--hypothesis-max-examples",
            EXAMPLES,
        ])
        .args(["--hypothesis-suppress-health-check", "all", "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(extra)
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_on_any_operation() {
    let python = std::env::var("CUSTODE_TEST_PYTHON")
        .expect("CUSTODE_TEST_PYTHON is not set: run ./scripts/test, which installs schemathesis");
    let dir = tempfile::tempdir().unwrap();
    // The fuzzer sends thousands of requests from one address: SEC-2's per-address windows are
    // widened so that it reaches the handlers instead of the limiter (both are tested apart).
    // hyper closes a keep-alive connection idle for the header deadline, and the fuzzer's
    // client (requests) reuses a pooled connection without retrying: a fuzzer starved of CPU
    // for that long (nextest runs other tests beside it) met the close as "closed without a
    // response" once. That is a client's race, not a server error, so the deadline is long here.
    let settings = dir.path().join("custode.toml");
    std::fs::write(
        &settings,
        "[http]\nheader_timeout_ms = 120000\n[limits]\nlogin_per_address_per_minute = 1000000\nrecovery_starts_per_address_per_minute = 1000000\nchecks_per_address_per_minute = 1000000\nstrength_per_address_per_minute = 1000000\n",
    )
    .unwrap();
    let served = serve(dir.path(), &["--config", settings.to_str().unwrap()]).await;
    let base = served.base.clone();
    let token = holder_session(&base).await;
    let report = tokio::task::spawn_blocking(move || {
        let operator = schemathesis(&python, &base, OPERATOR_KEY, &[]);
        let holder = schemathesis(
            &python,
            &base,
            &token,
            &[
                "--exclude-path-regex",
                "^/v1/(sessions/current|account/password|account/suspension)$",
            ],
        );
        (operator, holder)
    })
    .await
    .unwrap();
    for (who, (ok, text)) in [("operator", report.0), ("holder", report.1)] {
        let summary = text
            .lines()
            .rev()
            .find(|l| l.contains(" passed") || l.contains(" failed"))
            .unwrap_or_default()
            .to_string();
        let checks = text
            .lines()
            .find(|l| l.contains("not_a_server_error") && l.contains(" / "))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        println!("schemathesis as {who}: {summary} ({checks})");
        assert!(ok, "schemathesis as {who} found a server error:\n{text}");
        assert!(
            !summary.contains("errored"),
            "schemathesis as {who} could not run an operation:\n{text}"
        );
    }
    // Nothing fell over: the service still answers.
    assert_eq!(
        reqwest::get(format!("{}/readyz", served.base))
            .await
            .unwrap()
            .status(),
        200
    );
}
