//! PW-4 and SEC-6 on the password change: an identity confirms with a code sent to its mobile
//! (read back from the SMS the sender wrote), and wrong current passwords count as failed logins.

use crate::helpers::{expect_problem, last_code_to, TestApp, IDENTITY_PASSWORD as FIRST};
use reqwest::StatusCode;
use serde_json::{json, Value};

const IDENTITY: &str = "mario.bianchi80";
const SECOND: &str = "Nuova!Strada-Blu9";

/// The helper's identity, with this file's second password among the secrets checked.
async fn identity_after_first_change(
    app: &TestApp,
    user_id: &str,
    contact: Value,
    recovery: Value,
) -> String {
    app.remember_secret(SECOND);
    crate::helpers::identity_after_first_change(app, user_id, contact, recovery).await
}

fn change(current: &str, new: &str, otp: Option<&str>) -> Value {
    json!({ "current_password": current, "new_password": new, "new_password_repeat": new, "otp": otp })
}

/// `POST /v1/account/otp` for a password change.
async fn request_code(app: &TestApp, token: &str) -> reqwest::Response {
    app.post(
        "/v1/account/otp",
        Some(token),
        json!({ "purpose": "password_change" }),
    )
    .await
}

#[tokio::test]
async fn pw_4_an_identity_changes_its_password_only_with_the_code_sent_to_its_mobile() {
    let app = TestApp::spawn().await;
    let token = identity_after_first_change(
        &app,
        IDENTITY,
        json!({ "contact_mobile": "+39 333 765 4321" }),
        json!({ "email": "recupero@example.it" }),
    )
    .await;

    // Later ones do: refused without it, and with a wrong one (counted), before any code is sent.
    let res = app
        .post(
            "/v1/account/password",
            Some(&token),
            change(FIRST, SECOND, None),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(p["errors"][0]["rule"], "PW-4.otp");
    let res = app
        .post(
            "/v1/account/password",
            Some(&token),
            change(FIRST, SECOND, Some("123456")),
        )
        .await;
    expect_problem(res, StatusCode::CONFLICT, "no-code").await;

    let res = request_code(&app, &token).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let sent: Value = res.json().await.unwrap();
    assert_eq!(sent["channel"], "sms");
    assert_eq!(sent["target"], "+39 ***** **21");
    app.quiesce().await;
    let code = last_code_to(&app, "+393337654321");
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let res = app
        .post(
            "/v1/account/password",
            Some(&token),
            change(FIRST, SECOND, Some(&wrong)),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("4 attempt(s) left"),
        "{p}"
    );
    let res = app
        .post(
            "/v1/account/password",
            Some(&token),
            change(FIRST, SECOND, Some(&code)),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Used once: the session ended with the change, and the new password logs in.
    app.login(IDENTITY, SECOND).await;
    let res = app.try_login(&IDENTITY, &FIRST).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;

    // Bad requests for codes change nothing.
    let token = app.login(IDENTITY, SECOND).await;
    let head = app.settled_head().await;
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "recovery" }),
        )
        .await;
    // Refused as a purpose a holder does not ask for; the refusal names only those it does.
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request").await;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("password_change"), "{detail}");
    assert!(
        !detail.contains("login") && !detail.contains("new_contact_mobile"),
        "{detail}"
    );
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "lunch" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .post(
            "/v1/account/otp",
            None,
            json!({ "purpose": "password_change" }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(app.settled_head().await, head);
}

#[tokio::test]
async fn sec_6_ten_wrong_current_passwords_lock_the_next_login() {
    let app = TestApp::spawn().await;
    let user = "rubato@pec.example.it";
    let (token, password) = app.ready_mailbox(user).await;
    for _ in 0..10 {
        let res = app.change_password(&token, "Sbagliata!123", SECOND).await;
        expect_problem(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "current-password-wrong",
        )
        .await;
    }
    // A stolen session bought no free guesses: logins are locked as after ten wrong logins.
    let res = app.try_login(&user, &password).await;
    assert!(res.headers().contains_key("retry-after"));
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    let res = app.change_password(&token, &password, SECOND).await;
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
}

/// PW-4: the code goes to the contact mobile only, never to a recovery mobile the session
/// itself can set; and five wrong codes do not block the next code.
#[tokio::test]
async fn pw_4_codes_go_to_the_contact_mobile_only_and_a_new_code_starts_afresh() {
    let app = TestApp::spawn().await;
    // A recovery mobile the session set earns no code: it goes to the contact mobile.
    let token = identity_after_first_change(
        &app,
        "con.mobile",
        json!({ "contact_mobile": "+39 333 111 2222" }),
        json!({ "mobile": "+39 333 999 9999" }),
    )
    .await;
    let res = request_code(&app, &token).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.quiesce().await;
    let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap_or_default();
    assert!(sms.lines().any(|l| l.contains("+393331112222")), "{sms}");
    assert!(!sms.contains("+393339999999"), "{sms}");

    // Five wrong codes spend a code; a new one works.
    let code = last_code_to(&app, "+393331112222");
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    for _ in 0..5 {
        let res = app
            .post(
                "/v1/account/password",
                Some(&token),
                change(FIRST, SECOND, Some(&wrong)),
            )
            .await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    }
    let res = request_code(&app, &token).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.quiesce().await;
    let code = last_code_to(&app, "+393331112222");
    let res = app
        .post(
            "/v1/account/password",
            Some(&token),
            change(FIRST, SECOND, Some(&code)),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}
