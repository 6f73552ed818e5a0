//! End to end through HTTP: two-step verification (AP-8), passwords for mail programs and the
//! mail servers' check (AP-1..7), mail protocols (ACC-5) and collaborators (CO-1..5), with
//! codes computed from the otpauth URI and links read from the mail actually delivered.

use crate::helpers::{
    assert_no_store, expect_problem, link_tokens, mails, newest_code, TestApp, OPERATOR_KEY,
};
use crate::processes::eventually;
use chrono::Duration;
use custode_commands::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration as StdDuration;

const WAIT: StdDuration = StdDuration::from_secs(15);
const OWNER: &str = "titolare.deleghe@pec.example.it";

fn link_tokens_in(mails: &[String]) -> Vec<String> {
    link_tokens(mails, "/collaborator-password?token=")
}

async fn mail_count(app: &TestApp, to: &str, subject: &str, count: usize) -> Vec<String> {
    eventually(WAIT, subject, || mails(app, to, subject).len() >= count).await;
    mails(app, to, subject)
}

/// The code an authenticator app holding `uri` shows at the service's `now`.
pub(crate) fn code_at(uri: &str, app: &TestApp) -> String {
    let totp = totp_rs::TOTP::from_url(uri).expect("an otpauth URI");
    totp.generate(app.clock.now().timestamp() as u64)
}

/// Turns two-step verification on through the app: the URI, then a confirmed code. The clock
/// moves a step past the confirmation so the next code is a new one.
pub(crate) async fn two_factor_on(app: &TestApp, token: &str) -> String {
    let res = app
        .request(Method::POST, "/v1/account/two-factor", Some(token), None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let uri = body["otpauth_uri"].as_str().unwrap().to_string();
    app.remember_secret(body["secret"].as_str().unwrap());
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(
        uri.contains("algorithm=SHA1") || !uri.contains("algorithm="),
        "{uri}"
    );
    assert!(body["qr_svg"].as_str().unwrap().contains("<svg"));
    let res = app
        .post(
            "/v1/account/two-factor/confirm",
            Some(token),
            json!({ "code": code_at(&uri, app) }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.advance(Duration::seconds(30));
    uri
}

async fn login_with_code(app: &TestApp, user_id: &str, password: &str, uri: &str) -> String {
    let res = app
        .post(
            "/v1/sessions",
            None,
            json!({ "user_id": user_id, "password": password, "otp": code_at(uri, app) }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "login with a code");
    let body: Value = res.json().await.unwrap();
    let token = body["session_token"].as_str().unwrap().to_string();
    app.remember_secret(&token);
    app.advance(Duration::seconds(30));
    token
}

async fn page(app: &TestApp, token: &str) -> Value {
    let res = app.get("/v1/account", Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

#[tokio::test]
async fn two_step_verification_with_a_code_from_the_uri_replays_refused_ap_8() {
    let app = TestApp::spawn().await;
    let (token, password) = app.ready_mailbox(OWNER).await;
    let res = app
        .post(
            "/v1/account/two-factor/confirm",
            Some(&token),
            json!({ "code": "123456" }),
        )
        .await;
    expect_problem(res, StatusCode::CONFLICT, "no-two-factor-enrollment").await;
    let res = app
        .request(Method::POST, "/v1/account/two-factor", Some(&token), None)
        .await;
    let body: Value = res.json().await.unwrap();
    let uri = body["otpauth_uri"].as_str().unwrap().to_string();
    app.remember_secret(body["secret"].as_str().unwrap());
    // A wrong code is refused (and nothing turns on); the right one turns it on.
    let wrong = if code_at(&uri, &app) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let res = app
        .post(
            "/v1/account/two-factor/confirm",
            Some(&token),
            json!({ "code": wrong }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    assert_eq!(page(&app, &token).await["two_factor"]["active"], false);
    let code = code_at(&uri, &app);
    let res = app
        .post(
            "/v1/account/two-factor/confirm",
            Some(&token),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        page(&app, &token).await["two_factor"],
        json!({ "active": true, "channel": "app" })
    );
    // A login now needs the code; the one just used is spent (a replay is refused, recorded).
    let res = app.try_login(&OWNER, &password).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "second-factor-required").await;
    let res = app
        .post(
            "/v1/sessions",
            None,
            json!({ "user_id": OWNER, "password": password, "otp": code }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "code-replayed").await;
    app.advance(Duration::seconds(30));
    let token = login_with_code(&app, OWNER, &password, &uri).await;
    // NT-4: the contact address heard of it.
    mail_count(
        &app,
        "titolare@example.it",
        "Verifica in due passaggi attivata",
        1,
    )
    .await;
    // Off needs a current code.
    let res = app
        .post(
            "/v1/account/two-factor/disable",
            Some(&token),
            json!({ "code": wrong }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    let res = app
        .post(
            "/v1/account/two-factor/disable",
            Some(&token),
            json!({ "code": code_at(&uri, &app) }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    mail_count(
        &app,
        "titolare@example.it",
        "Verifica in due passaggi disattivata",
        1,
    )
    .await;
    assert_eq!(page(&app, &token).await["two_factor"]["active"], false);
    app.login(OWNER, &password).await;
}

async fn check(app: &TestApp, user_id: &str, scope: &str, password: &str) -> reqwest::Response {
    app.post(
        "/v1/auth/app-password",
        Some(OPERATOR_KEY),
        json!({ "user_id": user_id, "scope": scope, "password": password, "client_ip": "198.51.100.7" }),
    )
    .await
}

/// `times` checks of OWNER's `scope` with a wrong password, each answered `status` with the
/// problem type `kind`.
async fn wrong_checks(app: &TestApp, scope: &str, times: usize, status: StatusCode, kind: &str) {
    for _ in 0..times {
        expect_problem(
            check(app, OWNER, scope, "wrong-wrong-wrong").await,
            status,
            kind,
        )
        .await;
    }
}

/// SEC-2: as many failed checks of `scope` as a user id may have a minute, each denied.
async fn fill_check_limit(app: &TestApp, scope: &str) {
    let limit = custode_domain::settings::Settings::default()
        .limits
        .app_password_failures_per_user_per_minute;
    wrong_checks(
        app,
        scope,
        usize::try_from(limit).unwrap(),
        StatusCode::UNAUTHORIZED,
        "app-password-denied",
    )
    .await;
}

/// `times` more wrong checks of `scope`, each turned away by the per-user limit.
async fn turned_away_checks(app: &TestApp, scope: &str, times: usize) {
    wrong_checks(
        app,
        scope,
        times,
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
    )
    .await;
}

async fn new_app_password(
    app: &TestApp,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (String, Value) {
    let res = app.request(Method::POST, path, Some(token), body).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{path}");
    assert_no_store(&res, path);
    let body: Value = res.json().await.unwrap();
    let password = body["password"].as_str().unwrap().to_string();
    app.remember_secret(&password);
    (password, body)
}

#[tokio::test]
async fn an_app_password_is_checked_postponed_regenerated_and_deactivated_ap_1_to_ap_7() {
    let app = TestApp::spawn().await;
    let (token, password) = app.ready_mailbox(OWNER).await;
    // AP-1: only with two-step verification on.
    let res = app
        .post(
            "/v1/account/app-passwords",
            Some(&token),
            json!({ "scope": "mailbox" }),
        )
        .await;
    expect_problem(res, StatusCode::CONFLICT, "two-factor-required").await;
    let uri = two_factor_on(&app, &token).await;
    let token = login_with_code(&app, OWNER, &password, &uri).await;
    let (first, body) = new_app_password(
        &app,
        &token,
        "/v1/account/app-passwords",
        Some(json!({ "scope": "mailbox" })),
    )
    .await;
    assert!(first.len() >= 20, "{first}");
    // NT-4: the new password is told. Waited for before the clock moves months ahead: an event
    // older than `delivery.max_event_age_hours` when the mailer reads it gets no notice.
    mail_count(
        &app,
        "titolare@example.it",
        "Nuova password per i programmi di posta",
        1,
    )
    .await;
    let expires: chrono::DateTime<chrono::Utc> =
        body["expires_at"].as_str().unwrap().parse().unwrap();
    let issued_at = app.clock.now();
    assert!(expires > issued_at + Duration::days(88) && expires < issued_at + Duration::days(93));
    // AP-7: the mail server's check.
    let res = check(&app, OWNER, "mailbox", &first).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["result"], "allow");
    let res = check(&app, OWNER, "mailbox", "abcde-fghij-kmnop-qrstu").await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "app-password-denied").await;
    let res = check(&app, OWNER, "archive", &first).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "app-password-denied").await;
    // Shown once: the page lists it without the password.
    let shown = page(&app, &token).await;
    let listed = &shown["app_passwords"][0];
    assert_eq!(listed["scope"], "mailbox");
    assert!(listed.get("password").is_none());
    assert!(!shown.to_string().contains(&first));
    // AP-4: too early to postpone, with the date from which it is possible.
    let res = app
        .request(
            Method::POST,
            "/v1/account/app-passwords/mailbox/postpone",
            Some(&token),
            None,
        )
        .await;
    let problem = expect_problem(res, StatusCode::CONFLICT, "postpone-too-early").await;
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains(listed["postpone_available_from"].as_str().unwrap()));
    // ACC-5: protocols off → denied; back on → allowed.
    let res = app
        .request(
            Method::PUT,
            "/v1/account/mail-protocols",
            Some(&token),
            Some(json!({ "imap": false, "pop": false, "smtp": false })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        page(&app, &token).await["mail_protocols"],
        json!({ "imap": false, "pop": false, "smtp": false })
    );
    expect_problem(
        check(&app, OWNER, "mailbox", &first).await,
        StatusCode::UNAUTHORIZED,
        "app-password-denied",
    )
    .await;
    let res = app
        .request(
            Method::PUT,
            "/v1/account/mail-protocols",
            Some(&token),
            Some(json!({ "imap": true, "pop": false, "smtp": true })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        check(&app, OWNER, "mailbox", &first).await.status(),
        StatusCode::OK
    );
    // AP-6: 14 days before the expiry, a notice by mail and in the page's list.
    let until_window = expires - Duration::days(14) - app.clock.now();
    app.advance(until_window + Duration::seconds(1));
    mail_count(
        &app,
        "titolare@example.it",
        "password per i programmi di posta sta per scadere",
        1,
    )
    .await;
    let token = login_with_code(&app, OWNER, &password, &uri).await;
    let notifications = page(&app, &token).await["notifications"].clone();
    assert_eq!(notifications[0]["kind"], "app_password_expiry");
    assert_eq!(notifications[0]["detail"]["days_before"], 14);
    // AP-4: now it can be postponed, by 3 months from the current expiry, the same password.
    let res = app
        .request(
            Method::POST,
            "/v1/account/app-passwords/mailbox/postpone",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let postponed: chrono::DateTime<chrono::Utc> = res.json::<Value>().await.unwrap()["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(postponed > expires + Duration::days(88) && postponed < expires + Duration::days(93));
    assert_eq!(
        check(&app, OWNER, "mailbox", &first).await.status(),
        StatusCode::OK
    );
    // No notice for the old expiry after the postpone (its 3-day, 1-day and expiry notices).
    app.advance(Duration::days(15));
    let token = login_with_code(&app, OWNER, &password, &uri).await;
    assert_eq!(
        check(&app, OWNER, "mailbox", &first).await.status(),
        StatusCode::OK
    );
    app.quiesce().await;
    assert_eq!(
        mails(
            &app,
            "titolare@example.it",
            "password per i programmi di posta sta per scadere"
        )
        .len(),
        1
    );
    // AP-5: regenerate replaces it at once.
    let (second, _) = new_app_password(
        &app,
        &token,
        "/v1/account/app-passwords/mailbox/regenerate",
        None,
    )
    .await;
    expect_problem(
        check(&app, OWNER, "mailbox", &first).await,
        StatusCode::UNAUTHORIZED,
        "app-password-denied",
    )
    .await;
    assert_eq!(
        check(&app, OWNER, "mailbox", &second).await.status(),
        StatusCode::OK
    );
    // NT-4: each new app password is told.
    mail_count(
        &app,
        "titolare@example.it",
        "Nuova password per i programmi di posta",
        2,
    )
    .await;
    // AP-5: deactivate ends mail programs' access; the web login goes on.
    let res = app
        .request(
            Method::DELETE,
            "/v1/account/app-passwords/mailbox",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expect_problem(
        check(&app, OWNER, "mailbox", &second).await,
        StatusCode::UNAUTHORIZED,
        "app-password-denied",
    )
    .await;
    login_with_code(&app, OWNER, &password, &uri).await;
    // AH-1: every check was recorded on the account's access stream.
    app.quiesce().await;
    let conn = rusqlite::Connection::open(app.data_dir.join("events.db")).unwrap();
    let (checks, denied): (i64, i64) = conn
        .query_row(
            "SELECT count(*), sum(json_extract(payload, '$.outcome') = 'failure') FROM events WHERE type = 'AppPasswordChecked' AND stream LIKE 'access-%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((checks, denied), (10, 5));
}

#[tokio::test]
async fn failed_checks_are_limited_per_user_id_and_scope_sec_2() {
    let app = TestApp::spawn().await;
    let (token, _) = app.ready_mailbox(OWNER).await;
    fill_check_limit(&app, "mailbox").await;
    let res = check(&app, OWNER, "mailbox", "wrong-wrong-wrong").await;
    assert!(res.headers().contains_key("retry-after"));
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    // AP-7, AH-1: checks turned away leave a trace for the holder and the auditor, once a
    // minute per user id and scope however many come (from outside: none did).
    turned_away_checks(&app, "mailbox", 5).await;
    app.quiesce().await;
    let turned_away = |data_dir: &std::path::Path| -> i64 {
        rusqlite::Connection::open(data_dir.join("events.db"))
            .unwrap()
            .query_row(
                "SELECT count(*) FROM events WHERE type = 'AppPasswordChecked' AND json_extract(payload, '$.reason') = 'rate_limited'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(turned_away(&app.data_dir), 1);
    let res = app
        .get("/v1/account/access-history?limit=100", Some(&token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let history: Value = res.json().await.unwrap();
    let reasons: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["reason"].as_str())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "rate_limited").count(),
        1,
        "{history}"
    );
    assert_eq!(
        reasons.len(),
        21,
        "the 20 checked, then the one turned away: {history}"
    );
    // The count lives in the log: a restarted node refuses as well, until the minute is over.
    let (data_dir, _dir, clock) = app.stop().await;
    let app = TestApp::start(&data_dir, crate::helpers::file_config(), clock).await;
    let res = check(&app, OWNER, "mailbox", "wrong-wrong-wrong").await;
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    app.advance(Duration::seconds(61));
    let res = check(&app, OWNER, "mailbox", "wrong-wrong-wrong").await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "app-password-denied").await;
    // The turned-away records are not counted as failures: a minute on, the count starts over.
    app.quiesce().await;
    assert_eq!(turned_away(&app.data_dir), 2, "one for each node's minute");
    // SEC-2: the reported client address is an address, one key whatever its spelling.
    let res = app
        .post(
            "/v1/auth/app-password",
            Some(OPERATOR_KEY),
            json!({ "user_id": OWNER, "scope": "mailbox", "password": "x", "client_ip": "garbage-1" }),
        )
        .await;
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(problem["errors"][0]["field"], "client_ip");
    // Without the operator key, nothing is checked.
    let res = app
        .post(
            "/v1/auth/app-password",
            None,
            json!({ "user_id": OWNER, "scope": "mailbox", "password": "x" }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

/// SEC-2: a restarted node learns the failed checks of the last minute however many other
/// records the minute holds, and made-up scopes share the count of the scopes with no app
/// password (found from outside: 560 records on made-up scopes and a restart let 21 more
/// guesses in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_records_and_a_restart_do_not_reset_the_check_limit_sec_2() {
    let app = TestApp::spawn().await;
    app.ready_mailbox(OWNER).await;
    fill_check_limit(&app, "mailbox").await;
    // A made-up collaborator scope brings no budget of its own.
    let made_up = format!("collaborator:{}", uuid::Uuid::now_v7());
    turned_away_checks(&app, &made_up, 1).await;
    // 600 reported accesses in the same minute push the failures past a page of the stream.
    let at = custode_commands::clock::Clock::now(&app.clock)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for _ in 0..600 {
        let res = app
            .post(
                "/v1/admin/access-events",
                Some(OPERATOR_KEY),
                json!({ "user_id": OWNER, "service": "sp.example.it", "outcome": "success", "client_ip": "203.0.113.9", "at": at }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    app.quiesce().await;
    let (data_dir, _dir, clock) = app.stop().await;
    let app = TestApp::start(&data_dir, crate::helpers::file_config(), clock).await;
    for scope in ["mailbox", made_up.as_str()] {
        turned_away_checks(&app, scope, 1).await;
    }
}

/// A collaborator of the holder of `owner` (a session) made from `body`: its id and user id.
async fn new_collaborator(app: &TestApp, owner: &str, body: Value) -> (String, String) {
    let res = app
        .post("/v1/account/collaborators", Some(owner), body)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let field = |name: &str| created[name].as_str().unwrap().to_string();
    (field("collaborator_id"), field("user_id"))
}

async fn set_collaborator_password(
    app: &TestApp,
    token: &str,
    password: &str,
) -> reqwest::Response {
    app.remember_secret(password);
    app.post(
        "/v1/collaborator-password",
        None,
        json!({ "token": token, "new_password": password, "new_password_repeat": password }),
    )
    .await
}

#[tokio::test]
async fn the_collaborator_lifecycle_through_the_mailed_links_co_1_to_co_5() {
    let app = TestApp::spawn().await;
    let (owner, owner_password) = app.ready_mailbox(OWNER).await;
    let reference = "anna.bianchi@example.it";
    let (id, user_id) = new_collaborator(
        &app,
        &owner,
        json!({ "name": "Anna Bianchi", "reference_email": reference, "permissions": ["mail_programs", "read_mail"] }),
    )
    .await;
    assert!(user_id.ends_with(OWNER), "{user_id}");
    let listed = &page(&app, &owner).await["collaborators"][0];
    assert_eq!(listed["state"], "suspended");
    assert_eq!(listed["permissions"], json!(["read_mail", "mail_programs"]));
    // CO-1: the link to the first password reaches the reference email.
    let first = link_tokens_in(&mail_count(&app, reference, "Crea la password", 1).await);
    assert_eq!(first.len(), 1);
    let chosen = "Anna!Bianchi-Rose42";
    let res = set_collaborator_password(&app, &first[0], chosen).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Single use.
    let res = set_collaborator_password(&app, &first[0], "Anna!Bianchi-Gigli43").await;
    expect_problem(res, StatusCode::GONE, "token-used").await;
    let collaborator = app.login(&user_id, chosen).await;
    assert_eq!(page(&app, &collaborator).await["kind"], "collaborator");
    // CO-5: another holder cannot act on it, and cannot tell it from an unknown id.
    let (stranger, _) = app.ready_mailbox("altro.titolare@pec.example.it").await;
    let path = format!("/v1/account/collaborators/{id}/password-reset");
    let res = app
        .request(Method::POST, &path, Some(&stranger), None)
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .request(
            Method::POST,
            &format!(
                "/v1/account/collaborators/{}/password-reset",
                uuid::Uuid::now_v7()
            ),
            Some(&stranger),
            None,
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    // SEC-3: acting on a collaborator needs a fresh session.
    app.advance(Duration::minutes(11));
    let res = app.request(Method::POST, &path, Some(&owner), None).await;
    expect_problem(res, StatusCode::FORBIDDEN, "reauthentication-required").await;
    let res = app
        .post(
            "/v1/sessions/current/reauth",
            Some(&owner),
            json!({ "password": owner_password }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // CO-2: the reset stops the old password at once and suspends until a new one is set.
    let res = app.request(Method::POST, &path, Some(&owner), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = app.get("/v1/account", Some(&collaborator)).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app.try_login(&user_id, &chosen).await;
    let problem = expect_problem(res, StatusCode::FORBIDDEN, "account-suspended").await;
    assert!(problem["detail"].as_str().unwrap().contains("link"));
    let reset = link_tokens_in(&mail_count(&app, reference, "Reimposta la password", 1).await);
    // CO-3: sending it again invalidates the earlier link.
    let res = app
        .request(Method::POST, &format!("{path}/resend"), Some(&owner), None)
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let all = link_tokens_in(&mail_count(&app, reference, "Crea la password", 2).await);
    let resent = all.iter().find(|t| **t != first[0]).unwrap().clone();
    let res = set_collaborator_password(&app, &reset[0], "Anna!Bianchi-Gigli43").await;
    expect_problem(res, StatusCode::GONE, "token-superseded").await;
    let res = set_collaborator_password(&app, &resent, "Anna!Bianchi-Gigli43").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // CO-5: with mail_programs, told to update every device.
    mail_count(
        &app,
        reference,
        "Aggiorna la password sui programmi di posta",
        1,
    )
    .await;
    app.login(&user_id, "Anna!Bianchi-Gigli43").await;
    // CO-4: deactivation is final.
    let res = app
        .request(
            Method::POST,
            &format!("/v1/account/collaborators/{id}/deactivate"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.try_login(&user_id, &"Anna!Bianchi-Gigli43").await;
    expect_problem(res, StatusCode::FORBIDDEN, "account-deactivated").await;
    let res = app.request(Method::POST, &path, Some(&owner), None).await;
    expect_problem(res, StatusCode::FORBIDDEN, "account-deactivated").await;
    assert_eq!(
        page(&app, &owner).await["collaborators"][0]["state"],
        "deactivated"
    );
}

/// ACC-1, SC-6: a revoked mailbox takes its collaborators with it: their sessions end and
/// their logins are refused, as the mail servers' check already refused them.
#[tokio::test]
async fn a_revoked_mailbox_takes_its_collaborators_with_it_acc_4() {
    let app = TestApp::spawn().await;
    let owner_id = "titolare.quattro@pec.example.it";
    let (owner, _) = app.ready_mailbox(owner_id).await;
    let reference = "carla.rossi@example.it";
    let (_, user_id) = new_collaborator(
        &app,
        &owner,
        json!({ "name": "Carla Rossi", "reference_email": reference, "permissions": ["read_mail"] }),
    )
    .await;
    let link = link_tokens_in(&mail_count(&app, reference, "Crea la password", 1).await);
    let chosen = "Carla!Rossi-Tulipani7";
    let res = set_collaborator_password(&app, &link[0], chosen).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let collaborator = app.login(&user_id, chosen).await;
    let revoke_path = format!("/v1/admin/accounts/{owner_id}/revoke");
    let revoke = || {
        app.post(
            &revoke_path,
            Some(OPERATOR_KEY),
            json!({ "request_reference": "REV-2026-0007" }),
        )
    };
    assert_eq!(revoke().await.status(), StatusCode::NO_CONTENT);
    let res = app.get("/v1/account", Some(&collaborator)).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app.try_login(&user_id, &chosen).await;
    expect_problem(res, StatusCode::FORBIDDEN, "account-revoked").await;
    // Sent again, it records nothing more.
    let head = app.settled_head().await;
    assert_eq!(revoke().await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.settled_head().await, head);
}

/// SC-6: collaborators created while their mailbox is being revoked do not outlive it, whether
/// they were committed just before the revocation (not yet in the read model the revocation
/// lists them from) or just after (their creation finds the owner revoked). Found from outside:
/// 3 of 6 racing creations escaped.
#[tokio::test]
async fn collaborators_created_while_their_mailbox_is_revoked_are_revoked_too_sc_6() {
    let app = TestApp::spawn().await;
    for round in 0..8 {
        let owner_id = format!("titolare.gara{round}@pec.example.it");
        let (owner, _) = app.ready_mailbox(&owner_id).await;
        let mut requests = Vec::new();
        for n in 0..10 {
            if n == 4 {
                let req = app
                    .client
                    .post(format!("{}/v1/admin/accounts/{owner_id}/revoke", app.base))
                    .bearer_auth(OPERATOR_KEY)
                    .json(&json!({ "request_reference": format!("REV-GARA-{round}") }));
                requests.push((true, tokio::spawn(req.send())));
            }
            let req = app
                .client
                .post(format!("{}/v1/account/collaborators", app.base))
                .bearer_auth(&owner)
                .json(&json!({ "name": format!("Gara Uno{n}"), "reference_email": format!("gara{round}.{n}@example.it"), "permissions": ["read_mail"] }));
            requests.push((false, tokio::spawn(req.send())));
        }
        for (revoke, request) in requests {
            let res = request.await.unwrap().unwrap();
            if revoke {
                assert_eq!(res.status(), StatusCode::NO_CONTENT);
            } else {
                assert!(
                    res.status() == StatusCode::CREATED || res.status().is_client_error(),
                    "{}",
                    res.status()
                );
            }
        }
        app.quiesce().await;
        let owner_account: Value = app
            .get(
                &format!("/v1/admin/accounts/{owner_id}"),
                Some(OPERATOR_KEY),
            )
            .await
            .json()
            .await
            .unwrap();
        let owner_account_id = owner_account["account_id"].as_str().unwrap().to_string();
        let conn = rusqlite::Connection::open(app.data_dir.join("read.db")).unwrap();
        let states: Vec<String> = conn
            .prepare("SELECT status FROM accounts WHERE owner_id = ?1")
            .unwrap()
            .query_map([&owner_account_id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            states.iter().all(|s| s == "revoked"),
            "round {round}: {states:?}"
        );
    }
}

/// AP-2, CO-4: the owner's password for a collaborator's mail programs dies with the
/// collaborator: denied, and gone from the owner's page.
#[tokio::test]
async fn a_deactivated_collaborators_app_password_leaves_the_owners_page_co_4() {
    let app = TestApp::spawn().await;
    let owner_id = "titolare.tre@pec.example.it";
    let (token, password) = app.ready_mailbox(owner_id).await;
    let uri = two_factor_on(&app, &token).await;
    let token = login_with_code(&app, owner_id, &password, &uri).await;
    let (id, _) = new_collaborator(
        &app,
        &token,
        json!({ "name": "Bruno Neri", "reference_email": "bruno@example.it", "permissions": ["mail_programs"] }),
    )
    .await;
    let scope = format!("collaborator:{id}");
    let (_, issued) = new_app_password(
        &app,
        &token,
        "/v1/account/app-passwords",
        Some(json!({ "scope": scope })),
    )
    .await;
    let expires: chrono::DateTime<chrono::Utc> =
        issued["expires_at"].as_str().unwrap().parse().unwrap();
    // The mailbox's own, for comparison: its expiry is noticed.
    new_app_password(
        &app,
        &token,
        "/v1/account/app-passwords",
        Some(json!({ "scope": "mailbox" })),
    )
    .await;
    let scopes = |page: Value| -> Vec<Value> {
        page["app_passwords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["scope"].clone())
            .collect()
    };
    assert_eq!(
        scopes(page(&app, &token).await),
        [json!(scope), json!("mailbox")]
    );
    let res = app
        .request(
            Method::POST,
            &format!("/v1/account/collaborators/{id}/deactivate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(scopes(page(&app, &token).await), [json!("mailbox")]);
    // AP-6: 14 days before the expiry, only the mailbox's password is noticed.
    app.advance(expires - Duration::days(14) - app.clock.now() + Duration::seconds(1));
    mail_count(
        &app,
        "titolare@example.it",
        "password per i programmi di posta sta per scadere",
        1,
    )
    .await;
    app.quiesce().await;
    let token = login_with_code(&app, owner_id, &password, &uri).await;
    let noticed: Vec<Value> = page(&app, &token).await["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "app_password_expiry")
        .map(|n| n["detail"]["scope"].clone())
        .collect();
    assert_eq!(noticed, [json!("mailbox")]);
}

#[tokio::test]
async fn the_sms_channel_sends_a_code_at_each_login_ap_8() {
    let app = TestApp::spawn().await;
    let user = "sms.due.passaggi@pec.example.it";
    let (token, password) = app
        .ready_mailbox_with(user, json!({ "contact_mobile": "+39 333 123 4567" }))
        .await;
    let res = app
        .post(
            "/v1/account/two-factor",
            Some(&token),
            json!({ "channel": "sms" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let sent: Value = res.json().await.unwrap();
    assert!(sent["target"].as_str().unwrap().ends_with("67"), "{sent}");
    let code = newest_code(&app).await;
    let res = app
        .post(
            "/v1/account/two-factor/confirm",
            Some(&token),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // A login with the right password sends a code and asks for it.
    let res = app.try_login(&user, &password).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "second-factor-required").await;
    let code = newest_code(&app).await;
    let res = app
        .post(
            "/v1/sessions",
            None,
            json!({ "user_id": user, "password": password, "otp": code }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let session = res.json::<Value>().await.unwrap()["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    app.remember_secret(&session);
    // A step-up sends a code as a login does, and takes it (SEC-3).
    let res = app
        .post(
            "/v1/sessions/current/reauth",
            Some(&session),
            json!({ "password": password }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "second-factor-required").await;
    let code = newest_code(&app).await;
    let res = app
        .post(
            "/v1/sessions/current/reauth",
            Some(&session),
            json!({ "password": password, "otp": code }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // A wrong password sends nothing and says nothing of the second factor.
    let before = std::fs::read_to_string(app.data_dir.join("sms.jsonl"))
        .unwrap()
        .lines()
        .count();
    let res = app.try_login(&user, &"Not-The-Password1!").await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    app.quiesce().await;
    let after = std::fs::read_to_string(app.data_dir.join("sms.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(before, after);
}

#[tokio::test]
async fn an_operator_registered_hardware_token_is_bound_with_a_current_code_ap_8() {
    let app = TestApp::spawn().await;
    let (token, password) = app.ready_mailbox(OWNER).await;
    // The seed as a token vendor ships it (base32 of 20 bytes).
    let seed = b"0123456789abcdefghij".to_vec();
    let seed_base32 = totp_rs::Secret::Raw(seed.clone()).to_encoded().to_string();
    app.remember_secret(&seed_base32);
    let res = app
        .post(
            "/v1/admin/hardware-tokens",
            Some(OPERATOR_KEY),
            json!({ "serial": "TK-000042", "seed_base32": seed_base32 }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .post(
            "/v1/admin/hardware-tokens",
            Some(OPERATOR_KEY),
            json!({ "serial": "tk-000042", "seed_base32": seed_base32 }),
        )
        .await;
    expect_problem(res, StatusCode::CONFLICT, "hardware-token-exists").await;
    let totp = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        seed,
        None,
        String::new(),
    );
    let code = || totp.generate(app.clock.now().timestamp() as u64);
    let res = app
        .post(
            "/v1/account/two-factor",
            Some(&token),
            json!({ "channel": "hardware_token", "serial": "TK-999999", "code": code() }),
        )
        .await;
    expect_problem(res, StatusCode::CONFLICT, "hardware-token-unavailable").await;
    let res = app
        .post(
            "/v1/account/two-factor",
            Some(&token),
            json!({ "channel": "hardware_token", "serial": "TK-000042", "code": code() }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        page(&app, &token).await["two_factor"]["channel"],
        "hardware_token"
    );
    // Bound to this account only.
    let (other, _) = app.ready_mailbox("altro@pec.example.it").await;
    app.advance(Duration::seconds(30));
    let res = app
        .post(
            "/v1/account/two-factor",
            Some(&other),
            json!({ "channel": "hardware_token", "serial": "TK-000042", "code": code() }),
        )
        .await;
    expect_problem(res, StatusCode::CONFLICT, "hardware-token-unavailable").await;
    let res = app
        .post(
            "/v1/sessions",
            None,
            json!({ "user_id": OWNER, "password": password, "otp": code() }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.remember_secret(
        res.json::<Value>().await.unwrap()["session_token"]
            .as_str()
            .unwrap(),
    );
}

#[tokio::test]
async fn a_check_past_a_length_limit_is_refused_naming_its_field_ap_7() {
    let app = TestApp::spawn().await;
    for (user_id, password, field) in [
        (
            "a".repeat(255),
            "abcde-fghij-kmnop-qrstu".to_string(),
            "user_id",
        ),
        (OWNER.to_string(), "p".repeat(129), "password"),
    ] {
        let res = check(&app, &user_id, "mailbox", &password).await;
        let problem =
            expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        assert_eq!(problem["errors"].as_array().unwrap().len(), 1, "{problem}");
    }
}
