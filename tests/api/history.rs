//! End to end through HTTP: the access history (AH-1..3). Logins, mail servers' checks and
//! the identity front end's reports reach one history; its pages filter by date range and
//! outcome and walk with an opaque cursor; rows past retention go, the total and last access stay.

use crate::helpers::{expect_problem, rules, TestApp, OPERATOR_KEY};
use crate::processes::eventually;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use custode::config::FileConfig;
use custode_commands::clock::Clock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration as StdDuration;

const HOLDER: &str = "storico.accessi@pec.example.it";

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn report(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/v1/admin/access-events", Some(OPERATOR_KEY), body)
        .await
}

/// A reported access of HOLDER, accepted; returns the position it was recorded at.
async fn reported(app: &TestApp, service: &str, outcome: &str, when: DateTime<Utc>) -> u64 {
    let mut body = json!({ "user_id": HOLDER, "service": service, "outcome": outcome, "client_ip": "203.0.113.9", "at": at(when) });
    if outcome == "failure" {
        body["reason"] = json!("wrong_password");
    }
    let res = report(app, body).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    crate::helpers::position_of(&res)
}

async fn history(app: &TestApp, token: &str, query: &str) -> Value {
    let res = app
        .get(&format!("/v1/account/access-history?{query}"), Some(token))
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{query}");
    res.json().await.unwrap()
}

fn services(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}:{}",
                i["kind"].as_str().unwrap(),
                i["service"].as_str().unwrap(),
                i["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

fn access_events(app: &TestApp) -> i64 {
    let conn = rusqlite::Connection::open(app.data_dir.join("events.db")).unwrap();
    conn.query_row(
        "SELECT count(*) FROM events WHERE stream LIKE 'access-%'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn logins_checks_and_reported_accesses_make_one_history_newest_first_ah_1_ah_2() {
    let app = TestApp::spawn().await;
    let (_, password) = app.ready_mailbox(HOLDER).await;
    let res = app.try_login(&HOLDER, &"Sbagliata!123").await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    app.advance(Duration::minutes(1));
    // A mail server's check: no app password yet, so denied, and recorded.
    let res = app
        .post(
            "/v1/auth/app-password",
            Some(OPERATOR_KEY),
            json!({ "user_id": HOLDER, "scope": "mailbox", "password": "abcd-efgh-ijkl-mnop", "client_ip": "198.51.100.7", "protocol": "imap" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.advance(Duration::minutes(1));
    // The front end reports an access that happened an hour ago, and one now.
    reported(
        &app,
        "INPS",
        "success",
        app.clock.now() - Duration::hours(1),
    )
    .await;
    let position = reported(&app, "Agenzia delle Entrate", "failure", app.clock.now()).await;
    app.advance(Duration::minutes(1));
    let token = app.login(HOLDER, &password).await;

    let page = history(&app, &token, &format!("after={position}&limit=100")).await;
    assert_eq!(
        services(&page),
        [
            "login:api:success",
            "service_access:Agenzia delle Entrate:failure",
            "app_password:mailbox/imap:failure",
            "login:api:failure",
            "login:api:success",
            "login:api:success",
            "service_access:INPS:success",
        ]
    );
    assert_eq!(page["total"], 7);
    assert_eq!(page["last_access"], page["items"][0]["at"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let check = &page["items"][2];
    assert_eq!(check["reason"], "no_app_password");
    assert_eq!(check["client_ip"], "198.51.100.7");
    let failed_login = &page["items"][3];
    assert_eq!(failed_login["reason"], "wrong_password");
    assert!(page["items"][0].get("reason").is_none());

    // The outcome filter, and an inclusive range that ends at the failed report's very time.
    let failures = history(&app, &token, "outcome=failure").await;
    assert_eq!(
        services(&failures),
        [
            "service_access:Agenzia delle Entrate:failure",
            "app_password:mailbox/imap:failure",
            "login:api:failure",
        ]
    );
    assert_eq!(
        failures["total"], 7,
        "the total is the account's, whatever the filter"
    );
    let until = page["items"][1]["at"].as_str().unwrap().to_string();
    let from = page["items"][3]["at"].as_str().unwrap().to_string();
    let ranged = history(
        &app,
        &token,
        &format!("from={}&to={}", urlencoding(&from), urlencoding(&until)),
    )
    .await;
    assert_eq!(
        services(&ranged),
        [
            "service_access:Agenzia delle Entrate:failure",
            "app_password:mailbox/imap:failure",
            "login:api:failure",
            "login:api:success",
            "login:api:success",
        ]
    );
    // A whole (UTC) day, as a date: every item of that day, from its first millisecond.
    let today = app.clock.now().format("%Y-%m-%d").to_string();
    let day = history(&app, &token, &format!("from={today}&to={today}&limit=100")).await;
    let of_today = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["at"].as_str().unwrap().starts_with(&today))
        .count();
    assert_eq!(day["items"].as_array().unwrap().len(), of_today);

    // The cursor walks every item once, in order.
    let mut walked = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let page = history(&app, &token, &query).await;
        assert!(page["items"].as_array().unwrap().len() <= 2);
        walked.extend(services(&page));
        match page["next_cursor"].as_str() {
            Some(next) => query = format!("limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(walked, services(&page));

    // Bad queries name their rule and change nothing.
    for (query, rule) in [
        ("outcome=maybe", "AH-2.outcome"),
        ("cursor=not-a-cursor", "AH-2.cursor"),
        ("limit=0", "AH-2.limit"),
        ("limit=101", "AH-2.limit"),
        ("from=yesterday", "AH-2.range"),
        ("from=2026-03-02&to=2026-03-01", "AH-2.range"),
    ] {
        let res = app
            .get(&format!("/v1/account/access-history?{query}"), Some(&token))
            .await;
        let problem =
            expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(rules(&problem), [rule], "{query}");
    }
    let res = app.get("/v1/account/access-history", None).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // Another holder sees only its own.
    let (other, _) = app.ready_mailbox("altro.titolare@pec.example.it").await;
    let theirs = history(&app, &other, "limit=100").await;
    assert!(services(&theirs).iter().all(|s| s.starts_with("login:")));
}

fn urlencoding(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn a_report_is_refused_whole_when_it_breaks_a_rule_and_needs_the_operator_key_ah_1() {
    let app = TestApp::spawn().await;
    app.ready_mailbox(HOLDER).await;
    let now = app.clock.now();
    let good = json!({ "user_id": HOLDER, "service": "INPS", "outcome": "success", "client_ip": "203.0.113.9", "at": at(now) });
    let res = app
        .post("/v1/admin/access-events", None, good.clone())
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app
        .post("/v1/admin/access-events", Some("not-the-key"), good.clone())
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let mut unknown = good.clone();
    unknown["user_id"] = json!("nessuno@pec.example.it");
    expect_problem(
        report(&app, unknown).await,
        StatusCode::NOT_FOUND,
        "account-not-found",
    )
    .await;
    let cases = [
        (
            json!({ "at": at(now + Duration::minutes(6)) }),
            vec!["AH-1.at"],
        ),
        (
            json!({ "at": at(now - Duration::days(731)) }),
            vec!["AH-1.at"],
        ),
        (
            json!({ "client_ip": "not-an-address" }),
            vec!["AH-1.client_ip"],
        ),
        (json!({ "service": "  " }), vec!["AH-1.service"]),
        (json!({ "service": "INPS\u{202E}" }), vec!["AH-1.service"]),
        (json!({ "reason": "why" }), vec!["AH-1.reason"]),
        (
            json!({ "service": "x".repeat(201), "at": at(now + Duration::days(1)) }),
            vec!["AH-1.service", "AH-1.at"],
        ),
    ];
    for (change, expected) in cases {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let problem = expect_problem(
            report(&app, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        )
        .await;
        assert_eq!(rules(&problem), expected, "{change}");
    }
    let mut bad_outcome = good.clone();
    bad_outcome["outcome"] = json!("maybe");
    let res = report(&app, bad_outcome).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .client
        .post(format!("{}/v1/admin/access-events", app.base))
        .bearer_auth(OPERATOR_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_problem(res, StatusCode::BAD_REQUEST, "malformed-json").await;
    assert_eq!(access_events(&app), 0, "nothing refused was recorded");
    assert_eq!(report(&app, good).await.status(), StatusCode::ACCEPTED);
    assert_eq!(access_events(&app), 1);
}

#[tokio::test]
async fn rows_past_retention_are_dropped_and_the_total_and_last_access_stay_ah_3() {
    let mut file = FileConfig::default();
    file.history.retention_days = 30;
    let app = TestApp::spawn_with(file).await;
    let (_, password) = app.ready_mailbox(HOLDER).await;
    let start = app.clock.now();
    for day in 0..10 {
        reported(&app, "INPS", "success", start + Duration::days(day)).await;
        app.advance(Duration::days(1));
    }
    let token = app.login(HOLDER, &password).await;
    let before = history(&app, &token, &format!("after={}&limit=100", app.log_head())).await;
    // 10 reports and 3 logins.
    assert_eq!(before["items"].as_array().unwrap().len(), 13);
    assert_eq!(before["total"], 13);
    // 25 more days: everything from the first 5 days is past 30 days.
    app.advance(Duration::days(25));
    let token = app.login(HOLDER, &password).await;
    let cutoff = app.clock.now() - Duration::days(30);
    eventually(
        StdDuration::from_secs(15),
        "rows past retention dropped",
        || {
            let conn = rusqlite::Connection::open(app.data_dir.join("read.db")).unwrap();
            let oldest: i64 = conn
                .query_row("SELECT min(at) FROM access_history", [], |r| r.get(0))
                .unwrap();
            oldest >= cutoff.timestamp_millis()
        },
    )
    .await;
    let after = history(&app, &token, &format!("after={}&limit=100", app.log_head())).await;
    let kept = after["items"].as_array().unwrap();
    assert!(
        kept.iter().all(|i| i["at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis()
            >= cutoff.timestamp_millis()),
        "{after} {cutoff}"
    );
    // The reports of days 5 to 9 and the two latest logins remain.
    assert_eq!(services(&after).len(), 7, "{after}");
    assert_eq!(after["total"], 14);
    assert_eq!(after["last_access"], kept[0]["at"]);
    // The log keeps every record (AU: the audit trail is never cut).
    assert_eq!(access_events(&app), 10);
}

/// The log's head and the positions this node's read models have applied, from `/metrics`:
/// the core read models, and every one with the access history.
async fn positions(metrics: &str) -> (u64, u64, u64) {
    let text = crate::processes::metrics_text(metrics).await;
    let value = |name: &str| {
        crate::processes::metric_value(&text, name)
            .unwrap_or_else(|| panic!("{name} is not in /metrics: {text}"))
    };
    (
        value("custode_log_head_position"),
        value("custode_read_models_applied_position"),
        value("custode_access_history_applied_position"),
    )
}

/// The projector's lanes: a node whose log holds a backlog of access records the read models
/// have not applied (a restart after an outage, an upgrade that rebuilds the history) answers
/// commands, logins and pages as soon as the core read models reach the head, while the access
/// history still catches up; reads of the history with `?after=` wait for it; and once it has
/// caught up, the read models equal a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_do_not_wait_for_the_access_history_to_catch_up() {
    const RECORDS: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::seed_access_records(dir.path(), RECORDS).await;

    // No read models yet: every projection starts from the beginning of the log.
    let served = crate::processes::serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let user_id = "dopo.la.coda@pec.example.it";
    let res = client
        .post(format!("{}/v1/admin/accounts", served.base))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({ "kind": "mailbox", "user_id": user_id, "plan": "pro" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let opened_at = crate::helpers::position_of(&res);
    let opened: Value = res.json().await.unwrap();
    let (_, core, history) = positions(&served.metrics).await;
    assert!(
        core >= opened_at,
        "answered before its read models: {core} < {opened_at}"
    );
    assert!(
        history < RECORDS as u64,
        "the command was answered only once the access history had caught up ({history})"
    );
    // The node is ready, and a login and its page work, while the history catches up.
    let started = std::time::Instant::now();
    while client
        .get(format!("{}/readyz", served.base))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(
            started.elapsed() < StdDuration::from_secs(30),
            "not ready while the history catches up"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    let res = client
        .post(format!("{}/v1/sessions", served.base))
        .json(&json!({ "user_id": user_id, "password": opened["temporary_password"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let login_at = crate::helpers::position_of(&res);
    let session: Value = res.json().await.unwrap();
    let token = session["session_token"].as_str().unwrap().to_string();
    let page = client
        .get(format!("{}/v1/account", served.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);

    // The history catches up by itself; a read of it after the login then shows the login.
    let started = std::time::Instant::now();
    loop {
        let (head, _, history) = positions(&served.metrics).await;
        if history >= head {
            break;
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(120),
            "the access history did not catch up: {history} of {head}"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    let page: Value = client
        .get(format!(
            "{}/v1/account/access-history?after={login_at}",
            served.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1, "{page}");
    served.kill_9();

    // What the two lanes built equals one fold of the log up to where they stand.
    let checkpoints: Vec<u64> =
        rusqlite::Connection::open(dir.path().join(custode::app::READ_MODELS_FILE))
            .unwrap()
            .prepare("SELECT position FROM checkpoints")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let at = checkpoints[0];
    assert!(
        checkpoints.iter().all(|p| *p == at),
        "the lanes stopped apart: {checkpoints:?}"
    );
    let live = custode::scenario::read_models(dir.path()).unwrap();
    assert!(live.iter().any(|row| row.starts_with("access_history:")));
    assert_eq!(crate::crash::replayed_read_models(dir.path(), at), live);
}
