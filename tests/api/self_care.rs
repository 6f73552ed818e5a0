//! End to end through HTTP: identities' self-care. Self-suspension confirmed by the code read
//! from the SMS actually sent, refused logins that say until when, the scheduler's end of it;
//! an operator's revocation (SC-6).

use crate::helpers::{
    expect_problem, identity_after_first_change, last_code_to, mails, rules, TestApp,
    IDENTITY_PASSWORD, OPERATOR_KEY,
};
use crate::processes::eventually;
use chrono::Duration;
use custode_commands::clock::Clock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration as StdDuration;

const IDENTITY: &str = "giulia.verdi85";
const MOBILE: &str = "+393471112233";

async fn identity(app: &TestApp) -> String {
    identity_after_first_change(
        app,
        IDENTITY,
        json!({ "contact_mobile": "347 111 2233", "contact_email": "giulia@example.it" }),
        json!({ "email": "recupero@example.it" }),
    )
    .await
}

async fn login(app: &TestApp) -> reqwest::Response {
    app.try_login(&IDENTITY, &IDENTITY_PASSWORD).await
}

/// The code sent for `suspension`, read from the SMS sink.
async fn suspension_code(app: &TestApp, token: &str) -> String {
    let res = app
        .post(
            "/v1/account/otp",
            Some(token),
            json!({ "purpose": "suspension" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.quiesce().await;
    last_code_to(app, MOBILE)
}

#[tokio::test]
async fn a_self_suspension_refuses_logins_until_its_end_and_the_scheduler_ends_it_sc_6() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    // Bad inputs change nothing: no code, a period out of range.
    let res = app
        .post("/v1/account/suspension", Some(&token), json!({ "days": 7 }))
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["PW-4.otp"]);
    let code = suspension_code(&app, &token).await;
    for days in [0, 31] {
        let res = app
            .post(
                "/v1/account/suspension",
                Some(&token),
                json!({ "days": days, "otp": code }),
            )
            .await;
        let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(rules(&p), ["SC-6.days"]);
    }
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let res = app
        .post(
            "/v1/account/suspension",
            Some(&token),
            json!({ "days": 7, "otp": wrong }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    assert_eq!(
        app.get("/v1/account", Some(&token)).await.status(),
        StatusCode::OK
    );

    // The right code: suspended for 7 days, every session ended at once.
    let res = app
        .post(
            "/v1/account/suspension",
            Some(&token),
            json!({ "days": 7, "otp": code }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get("/v1/account", Some(&token)).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let until = app.clock.now() + Duration::days(7);
    let p = expect_problem(
        login(&app).await,
        StatusCode::FORBIDDEN,
        "account-suspended",
    )
    .await;
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains(&until.format("%Y-%m-%dT%H:%M").to_string()),
        "{detail}"
    );
    // A wrong password is only a wrong password: the state is told after a right one.
    let res = app.try_login(&IDENTITY, &"Sbagliata!123").await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    // The holder heard of it at the contact address.
    eventually(StdDuration::from_secs(15), "the suspension notice", || {
        !mails(&app, "giulia@example.it", "Your account is suspended").is_empty()
    })
    .await;
    // The admin view says so.
    let admin: Value = app
        .get(
            &format!("/v1/admin/accounts/{IDENTITY}"),
            Some(OPERATOR_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admin["state"], "suspended");

    // Seven days on, the scheduler ends it by itself: the read model shows it active again
    // before anyone logs in.
    app.advance(Duration::days(7) + Duration::seconds(1));
    eventually(StdDuration::from_secs(15), "the suspension's end", || {
        let conn = rusqlite::Connection::open(app.data_dir.join("events.db")).unwrap();
        conn.query_row(
            "SELECT count(*) FROM events WHERE type = 'SuspensionEnded'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    })
    .await;
    app.quiesce().await;
    let admin: Value = app
        .get(
            &format!("/v1/admin/accounts/{IDENTITY}"),
            Some(OPERATOR_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admin["state"], "active");
    assert_eq!(login(&app).await.status(), StatusCode::CREATED);
}

/// ACC-2: a session on the temporary password (which went by mail, and which an operator's
/// reset issues again) moves no contact and suspends nothing; SEC-3: a suspension, and its
/// code, need a fresh session. Each refusal sends and records nothing.
#[tokio::test]
async fn sensitive_changes_wait_for_the_required_actions_and_a_fresh_session_acc_2_sec_3() {
    let app = TestApp::spawn().await;
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "identity", "user_id": "nuova.arrivata", "name": "Nuova Arrivata", "language": "en",
                    "contact_mobile": "347 555 0000", "contact_email": "nuova@example.it" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let opened: Value = res.json().await.unwrap();
    let temporary = opened["temporary_password"].as_str().unwrap().to_string();
    app.remember_secret(&temporary);
    let token = app.login("nuova.arrivata", &temporary).await;
    let head = app.settled_head().await;
    let calls: [(reqwest::Method, &str, Value); 6] = [
        (
            reqwest::Method::PUT,
            "/v1/account/contact-email",
            json!({ "email": "altrove@example.it" }),
        ),
        (
            reqwest::Method::POST,
            "/v1/account/contact-mobile",
            json!({ "mobile": "348 999 8877" }),
        ),
        (
            reqwest::Method::PUT,
            "/v1/account/identity-document",
            json!({ "kind": "passport", "number": "YA1111111", "expires_on": "2030-01-01" }),
        ),
        (
            reqwest::Method::POST,
            "/v1/account/otp",
            json!({ "purpose": "suspension" }),
        ),
        (
            reqwest::Method::POST,
            "/v1/account/suspension",
            json!({ "days": 30, "otp": "123456" }),
        ),
        (
            reqwest::Method::PUT,
            "/v1/account/language",
            json!({ "language": "it" }),
        ),
    ];
    for (method, path, body) in calls {
        let res = app.request(method, path, Some(&token), Some(body)).await;
        expect_problem(res, StatusCode::FORBIDDEN, "required-actions-pending").await;
    }
    assert_eq!(app.settled_head().await, head, "a refusal records nothing");
    app.quiesce().await;
    let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap_or_default();
    assert!(!sms.contains("+393475550000"), "no code went out");
    // Done with them, a session past its step-up window asks for no code and suspends nothing.
    let token = identity(&app).await;
    let code = suspension_code(&app, &token).await;
    app.advance(Duration::minutes(11));
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "suspension" }),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "reauthentication-required").await;
    let res = app
        .post(
            "/v1/account/suspension",
            Some(&token),
            json!({ "days": 3, "otp": code }),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "reauthentication-required").await;
    // The step-up makes it possible (the first code has expired meanwhile).
    let res = app
        .post(
            "/v1/sessions/current/reauth",
            Some(&token),
            json!({ "password": IDENTITY_PASSWORD }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let code = suspension_code(&app, &token).await;
    let res = app
        .post(
            "/v1/account/suspension",
            Some(&token),
            json!({ "days": 3, "otp": code }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn an_operator_revokes_for_good_on_a_signed_request_sc_6() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    let path = format!("/v1/admin/accounts/{IDENTITY}/revoke");
    let body = json!({ "request_reference": "REV-2026-0042" });
    // Operators only.
    let res = app.post(&path, Some(&token), body.clone()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .post(
            "/v1/admin/accounts/nessuno99/revoke",
            Some(OPERATOR_KEY),
            body.clone(),
        )
        .await;
    expect_problem(res, StatusCode::NOT_FOUND, "account-not-found").await;
    let res = app
        .post(
            &path,
            Some(OPERATOR_KEY),
            json!({ "request_reference": " " }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-6.request_reference"]);
    assert_eq!(
        app.get("/v1/account", Some(&token)).await.status(),
        StatusCode::OK
    );

    let res = app.post(&path, Some(OPERATOR_KEY), body.clone()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get("/v1/account", Some(&token)).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let p = expect_problem(login(&app).await, StatusCode::FORBIDDEN, "account-revoked").await;
    assert!(p["detail"].as_str().unwrap().contains("final"));
    // The same request again (a retry): nothing more is recorded.
    let head = app.log_head();
    let res = app.post(&path, Some(OPERATOR_KEY), body).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.log_head(), head);
    // Another signed request finds the account closed, rather than its reference dropped
    // without a word.
    let res = app
        .post(
            &path,
            Some(OPERATOR_KEY),
            json!({ "request_reference": "REV-2026-0043" }),
        )
        .await;
    let p = expect_problem(res, StatusCode::CONFLICT, "account-closed").await;
    assert!(p["detail"].as_str().unwrap().contains("revoked"));
    assert_eq!(app.log_head(), head);
    // An operator's reset opens it no more (ACC-4), and says why.
    let res = app
        .post(
            &format!("/v1/admin/accounts/{IDENTITY}/password-reset"),
            Some(OPERATOR_KEY),
            json!({ "form_reference": "F-9" }),
        )
        .await;
    let p = expect_problem(res, StatusCode::CONFLICT, "account-closed").await;
    assert!(p["detail"].as_str().unwrap().contains("revoked"));
    assert_eq!(app.log_head(), head);
    // The holder heard of it at the contact address.
    eventually(StdDuration::from_secs(15), "the revocation notice", || {
        !mails(&app, "giulia@example.it", "Your account has been revoked").is_empty()
    })
    .await;
}

#[tokio::test]
async fn every_later_notice_follows_the_chosen_language_sc_7() {
    let app = TestApp::spawn().await;
    // The identity was opened in English.
    let token = identity(&app).await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/language",
            Some(&token),
            Some(json!({ "language": "fr" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/language",
            Some(&token),
            Some(json!({ "language": "it" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = app
        .get("/v1/account", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["language"], "it");
    // The same again records nothing (the workers' reports of earlier notices settled first).
    let head = app.settled_head().await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/language",
            Some(&token),
            Some(json!({ "language": "it" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.settled_head().await, head);
    // The next notice (a code for a suspension) comes in Italian.
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "suspension" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.quiesce().await;
    last_code_to(&app, MOBILE);
    let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap();
    let last: Value = serde_json::from_str(sms.lines().last().unwrap()).unwrap();
    let text = last["text"].as_str().unwrap();
    assert!(text.starts_with("Codice di verifica"), "{text}");
}

/// The code in the newest "Your verification code" mail to `to`.
async fn mailed_code(app: &TestApp, to: &str) -> String {
    eventually(StdDuration::from_secs(15), "the code by mail", || {
        !mails(app, to, "Your verification code").is_empty()
    })
    .await;
    let all = mails(app, to, "Your verification code");
    let line = all
        .last()
        .unwrap()
        .lines()
        .find(|l| l.contains("Verification code for"))
        .unwrap()
        .to_string();
    let code = crate::helpers::code_in(line.rsplit(':').next().unwrap());
    app.remember_secret(&code);
    code
}

async fn badges(app: &TestApp, token: &str) -> (Value, Value) {
    let page: Value = app
        .get("/v1/account", Some(token))
        .await
        .json()
        .await
        .unwrap();
    (
        page["recovery"]["email"]["verified"].clone(),
        page["recovery"]["mobile"]["verified"].clone(),
    )
}

#[tokio::test]
async fn a_code_sent_to_a_recovery_contact_earns_its_verified_badge_until_it_changes_sc_4() {
    let app = TestApp::spawn().await;
    // Both recovery contacts saved as the required action (an identity adds one later only
    // through SC-5's flow, whose code verifies it at once).
    let token = identity_after_first_change(
        &app,
        IDENTITY,
        json!({ "contact_mobile": "347 111 2233", "contact_email": "giulia@example.it" }),
        json!({ "email": "recupero@example.it", "mobile": "333 444 5566" }),
    )
    .await;
    assert_eq!(badges(&app, &token).await, (json!(false), json!(false)));

    // The email: the code goes by mail to the recovery address itself.
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "verify_recovery_email" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let sent: Value = res.json().await.unwrap();
    assert_eq!(sent["channel"], "email");
    assert!(sent["target"].as_str().unwrap().contains('*'), "{sent}");
    let code = mailed_code(&app, "recupero@example.it").await;
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let verify = |method: &str, code: &str| json!({ "method": method, "code": code });
    let res = app
        .post(
            "/v1/account/recovery-info/verify",
            Some(&token),
            verify("email", &wrong),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    assert_eq!(badges(&app, &token).await, (json!(false), json!(false)));
    // The mobile's code cannot be asked for with the email's: nothing is waiting for it.
    let res = app
        .post(
            "/v1/account/recovery-info/verify",
            Some(&token),
            verify("mobile", &code),
        )
        .await;
    expect_problem(res, StatusCode::CONFLICT, "no-code").await;
    let res = app
        .post(
            "/v1/account/recovery-info/verify",
            Some(&token),
            verify("email", &code),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(badges(&app, &token).await, (json!(true), json!(false)));

    // The mobile: by SMS to the recovery mobile, not the contact one.
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "verify_recovery_mobile" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.quiesce().await;
    let code = last_code_to(&app, "+393334445566");
    let res = app
        .post(
            "/v1/account/recovery-info/verify",
            Some(&token),
            verify("mobile", &code),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(badges(&app, &token).await, (json!(true), json!(true)));
    // A used code does not work twice.
    let res = app
        .post(
            "/v1/account/recovery-info/verify",
            Some(&token),
            verify("mobile", &code),
        )
        .await;
    assert!(res.status().is_client_error());

    // An identity changes a recovery contact on file only through SC-5's flow (its codes,
    // then the cooldown): the plain save refuses, and nothing changes.
    app.advance(Duration::minutes(1));
    let token = app.login(IDENTITY, IDENTITY_PASSWORD).await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "email": "nuovo.recupero@example.it" })),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-5.email"]);
    assert_eq!(badges(&app, &token).await, (json!(true), json!(true)));
    // Bad input: an unknown method.
    let res = app
        .post(
            "/v1/account/recovery-info/verify",
            Some(&token),
            verify("question", "123456"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_recorded_document_is_shown_masked_and_its_expiry_mailed_30_and_7_days_before_sc_2() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    let expires_on = (app.clock.now() + Duration::days(45)).date_naive();
    let put = |body: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            app.request(
                reqwest::Method::PUT,
                "/v1/account/identity-document",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    // Bad input changes nothing.
    let res =
        put(json!({ "kind": "identity_card", "number": "AB-1", "expires_on": "2020-01-01" })).await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-2.number", "SC-2.expires_on"]);
    let res =
        put(json!({ "kind": "library_card", "number": "CA12345AB", "expires_on": expires_on }))
            .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A year past 9999 parses, but is no date of the event's schema (`format: date`).
    let res =
        put(json!({ "kind": "passport", "number": "YA1234567", "expires_on": "+10000-01-01" }))
            .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-2.expires_on"]);
    let page: Value = app
        .get("/v1/account", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert!(page.get("identity_document").is_none(), "{page}");

    let res =
        put(json!({ "kind": "identity_card", "number": "ca 12345 ab", "expires_on": expires_on }))
            .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = app
        .get("/v1/account", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["identity_document"],
        json!({ "kind": "identity_card", "number": "*****5AB", "expires_on": expires_on.to_string() })
    );
    assert!(!page.to_string().contains("CA12345AB"));

    // 30 days before: a mail and a notification; 7 days before: another.
    let subject = "Your identity document is about to expire";
    app.advance(Duration::days(16));
    eventually(StdDuration::from_secs(15), "the 30-day notice", || {
        mails(&app, "giulia@example.it", subject).len() == 1
    })
    .await;
    app.advance(Duration::days(23));
    eventually(StdDuration::from_secs(15), "the 7-day notice", || {
        mails(&app, "giulia@example.it", subject).len() == 2
    })
    .await;
    let token = app.login(IDENTITY, IDENTITY_PASSWORD).await;
    let page: Value = app
        .get("/v1/account", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&Value> = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["detail"]["days_before"])
        .collect();
    assert_eq!(kinds, [&json!(7), &json!(30)]);
    // A mailbox has no identity document.
    let (mailbox, _) = app.ready_mailbox("casella.documento@pec.example.it").await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/identity-document",
            Some(&mailbox),
            Some(json!({ "kind": "passport", "number": "YA1234567", "expires_on": expires_on })),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "not-an-identity").await;
}
