//! End to end through HTTP: the rest of identities' self-care. The read-only personal data
//! (SC-1), contact changes with codes read from the SMS actually sent (SC-3), recovery contact
//! changes and their cooldown (SC-5), password age (PW-6) and inactivity (SC-8) moved by the
//! clock and told by the mail actually sent.

use crate::helpers::{
    expect_problem, identity_after_first_change, last_code_to, mails, rules, TestApp,
    IDENTITY_PASSWORD, OPERATOR_KEY,
};
use crate::processes::eventually;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use custode_commands::clock::Clock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration as StdDuration;

const IDENTITY: &str = "franca.neri77";
const CONTACT_MOBILE: &str = "+393471112233";
const CONTACT_EMAIL: &str = "franca@example.it";
const RECOVERY_EMAIL: &str = "recupero.franca@example.it";
const RECOVERY_MOBILE: &str = "+393334445566";

async fn identity(app: &TestApp) -> String {
    identity_after_first_change(
        app,
        IDENTITY,
        json!({ "contact_mobile": "347 111 2233", "contact_email": CONTACT_EMAIL, "fiscal_code": "NRIFNC77A41F205X" }),
        json!({ "email": RECOVERY_EMAIL, "mobile": RECOVERY_MOBILE }),
    )
    .await
}

async fn page(app: &TestApp, token: &str) -> Value {
    let res = app.get("/v1/account", Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The code in the newest SMS to `to`, once the workers have sent it.
async fn sms_code(app: &TestApp, to: &str) -> String {
    app.quiesce().await;
    last_code_to(app, to)
}

/// The code in the newest verification mail to `to`.
async fn mailed_code(app: &TestApp, to: &str, seen: usize) -> String {
    let subject = "Your verification code";
    eventually(StdDuration::from_secs(15), "the code by mail", || {
        mails(app, to, subject).len() > seen
    })
    .await;
    let all = mails(app, to, subject);
    let line = all
        .last()
        .unwrap()
        .lines()
        .find(|l| l.contains("Verification code for"))
        .unwrap()
        .to_string();
    line.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap()
        .to_string()
}

/// Asks for a code for `purpose` and reads it from the SMS sent to `to`.
async fn ask_code(app: &TestApp, token: &str, purpose: &str, to: &str) -> String {
    post_expecting(
        app,
        token,
        "/v1/account/otp",
        json!({ "purpose": purpose }),
        StatusCode::ACCEPTED,
    )
    .await;
    sms_code(app, to).await
}

/// Posts `body` to `path` with the session `token`, expecting `status`.
async fn post_expecting(
    app: &TestApp,
    token: &str,
    path: &str,
    body: Value,
    status: StatusCode,
) -> reqwest::Response {
    let res = app.post(path, Some(token), body).await;
    assert_eq!(res.status(), status, "{path}");
    res
}

/// SC-5's last step for a new recovery mobile: the code sent there, confirmed.
async fn confirm_new_recovery_mobile(app: &TestApp, token: &str, to: &str) {
    let code = sms_code(app, to).await;
    post_expecting(
        app,
        token,
        "/v1/account/recovery-info/mobile/confirm",
        json!({ "code": code }),
        StatusCode::NO_CONTENT,
    )
    .await;
}

fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

#[tokio::test]
async fn an_identitys_personal_data_is_on_its_page_read_only_sc_1() {
    let app = TestApp::spawn().await;
    let expires_on = (app.clock.now() + Duration::days(700)).date_naive();
    // Bad input changes nothing: an expiry in the past, an expiry for a mailbox.
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "identity", "user_id": "scaduta.gia", "identity_expires_on": "2020-01-01", "contact_mobile": "+393470000003" }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-1.identity_expires_on"]);
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "mailbox", "user_id": "casella.scade@pec.example.it", "identity_expires_on": expires_on }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-1.identity_expires_on"]);
    let res = app
        .get("/v1/admin/accounts/scaduta.gia", Some(OPERATOR_KEY))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let token = identity_after_first_change(
        &app,
        IDENTITY,
        json!({ "contact_email": CONTACT_EMAIL, "fiscal_code": "nrifnc77a41f205x", "identity_expires_on": expires_on }),
        json!({ "email": RECOVERY_EMAIL }),
    )
    .await;
    let shown = page(&app, &token).await;
    let data = &shown["personal_data"];
    assert_eq!(data["name"], "Mario Bianchi");
    assert_eq!(data["fiscal_code"], "NRIFNC77A41F205X");
    assert_eq!(data["issued_on"], app.clock.now().date_naive().to_string());
    assert_eq!(data["expires_on"], expires_on.to_string());
    let code = data["spid_code"].as_str().unwrap();
    assert!(code.starts_with("CSTD") && code.len() == 16, "{code}");
    // Read-only: no call changes it; the same page again shows the same code.
    assert_eq!(page(&app, &token).await["personal_data"], *data);
    // A mailbox has none.
    let (mailbox, _) = app.ready_mailbox("casella.dati@pec.example.it").await;
    assert!(page(&app, &mailbox).await.get("personal_data").is_none());
}

#[tokio::test]
async fn the_contact_email_changes_with_a_fresh_session_and_the_mobile_with_two_codes_sc_3() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    let put_email = |token: String, email: &'static str| {
        let app = &app;
        async move {
            app.request(
                reqwest::Method::PUT,
                "/v1/account/contact-email",
                Some(&token),
                Some(json!({ "email": email })),
            )
            .await
        }
    };
    // Bad input changes nothing.
    let res = put_email(token.clone(), "not an address").await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-3.email"]);
    // A session past its step-up window confirms the password first (SEC-3).
    app.advance(Duration::minutes(20));
    let res = put_email(token.clone(), "franca.nuova@example.it").await;
    expect_problem(res, StatusCode::FORBIDDEN, "reauthentication-required").await;
    let token = app.login(IDENTITY, IDENTITY_PASSWORD).await;
    let res = put_email(token.clone(), "franca.nuova@Example.IT").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let shown = page(&app, &token).await;
    assert!(shown["contact_email"].as_str().unwrap().contains('*'));
    assert!(!shown.to_string().contains("franca.nuova@example.it"));
    // Both the old and the new address are told.
    let subject = "Your contact details have changed";
    eventually(StdDuration::from_secs(15), "both notices", || {
        mails(&app, CONTACT_EMAIL, subject).len() == 1
            && mails(&app, "franca.nuova@example.it", subject).len() == 1
    })
    .await;

    // The mobile: a code to the number on file and one to the new one.
    let res = app
        .post(
            "/v1/account/contact-mobile",
            Some(&token),
            json!({ "mobile": "not a number" }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-3.mobile"]);
    // Codes to a new contact come only from the change itself.
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "contact_change" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let new_mobile = "+393489998877";
    let res = post_expecting(
        &app,
        &token,
        "/v1/account/contact-mobile",
        json!({ "mobile": "348 999 8877" }),
        StatusCode::ACCEPTED,
    )
    .await;
    let sent: Value = res.json().await.unwrap();
    let challenges = sent["challenges"].as_array().unwrap();
    assert_eq!(challenges.len(), 2, "{sent}");
    assert!(challenges
        .iter()
        .all(|c| c["channel"] == "sms" && c["target"].as_str().unwrap().contains('*')));
    let current = sms_code(&app, CONTACT_MOBILE).await;
    let new = last_code_to(&app, new_mobile);
    let confirm = |current: &str, new: &str| json!({ "current_code": current, "code": new });
    // A wrong code is refused and recorded; nothing changes, and the right one still works.
    let res = app
        .post(
            "/v1/account/contact-mobile/confirm",
            Some(&token),
            confirm(&current, &wrong(&new)),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    let res = app
        .post(
            "/v1/account/contact-mobile/confirm",
            Some(&token),
            json!({ "code": new }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-3.current_code"]);
    assert_eq!(page(&app, &token).await["contact_mobile"], "+39 ***** **33");
    post_expecting(
        &app,
        &token,
        "/v1/account/contact-mobile/confirm",
        confirm(&current, &new),
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(page(&app, &token).await["contact_mobile"], "+39 ***** **77");
    // Spent: the same codes do not work twice.
    let res = app
        .post(
            "/v1/account/contact-mobile/confirm",
            Some(&token),
            confirm(&current, &new),
        )
        .await;
    assert!(res.status().is_client_error());
    // Later codes go to the new number.
    let res = post_expecting(
        &app,
        &token,
        "/v1/account/otp",
        json!({ "purpose": "suspension" }),
        StatusCode::ACCEPTED,
    )
    .await;
    let sent: Value = res.json().await.unwrap();
    assert_eq!(sent["target"], "+39 ***** **77");
    sms_code(&app, new_mobile).await;
}

#[tokio::test]
async fn a_recovery_contact_changes_with_two_codes_then_waits_six_days_sc_5() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    let new_email = "nuovo.recupero@example.it";
    // Without the authorising code: refused, nothing sent.
    let res = app
        .post(
            "/v1/account/recovery-info/email",
            Some(&token),
            json!({ "email": new_email }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-5.otp"]);
    // The authorising code goes to the contact mobile.
    let authorise = ask_code(&app, &token, "recovery_email_change", CONTACT_MOBILE).await;
    let res = app
        .post(
            "/v1/account/recovery-info/email",
            Some(&token),
            json!({ "otp": wrong(&authorise), "email": new_email }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    let res = app
        .post(
            "/v1/account/recovery-info/email",
            Some(&token),
            json!({ "otp": authorise, "email": "not an address" }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-5.email"]);
    let res = app
        .post(
            "/v1/account/recovery-info/email",
            Some(&token),
            json!({ "otp": authorise, "email": new_email }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let sent: Value = res.json().await.unwrap();
    assert_eq!(sent["challenges"][0]["channel"], "email");
    // The confirming code goes to the new address; the old one stays on file until then.
    let code = mailed_code(&app, new_email, 0).await;
    let before = page(&app, &token).await;
    assert_eq!(before["recovery"]["email"]["target"], "*****ca@e*****.it");
    let res = app
        .post(
            "/v1/account/recovery-info/email/confirm",
            Some(&token),
            json!({ "code": wrong(&code) }),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    let res = app
        .post(
            "/v1/account/recovery-info/email/confirm",
            Some(&token),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let now = app.clock.now();
    let after = page(&app, &token).await;
    assert_ne!(
        after["recovery"]["email"]["target"],
        before["recovery"]["email"]["target"]
    );
    // Proven by its code: Verified from the start.
    assert_eq!(after["recovery"]["email"]["verified"], true);
    assert_eq!(
        after["cooldowns"],
        json!([{ "contact": "recovery_email", "until": secs(now + Duration::days(6)) }])
    );
    // The old recovery address hears of it.
    eventually(
        StdDuration::from_secs(15),
        "the notice to the old address",
        || !mails(&app, RECOVERY_EMAIL, "recovery").is_empty(),
    )
    .await;

    // Within the 6 days: refused with the date, before any code is sent.
    app.advance(Duration::days(5));
    let token = app.login(IDENTITY, IDENTITY_PASSWORD).await;
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "recovery_email_change" }),
        )
        .await;
    let p = expect_problem(res, StatusCode::CONFLICT, "contact-change-cooldown").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains(&secs(now + Duration::days(6))),
        "{p}"
    );
    // The mobile has no cooldown of its own yet: its flow goes to the current recovery mobile.
    let authorise_mobile = ask_code(&app, &token, "recovery_mobile_change", RECOVERY_MOBILE).await;
    let res = app
        .post(
            "/v1/account/recovery-info/mobile",
            Some(&token),
            json!({ "otp": authorise_mobile, "mobile": "335 123 4567" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    confirm_new_recovery_mobile(&app, &token, "+393351234567").await;
    let shown = page(&app, &token).await;
    assert_eq!(shown["recovery"]["mobile"]["target"], "+39 ***** **67");
    assert_eq!(shown["cooldowns"].as_array().unwrap().len(), 2);

    // Past the 6 days the email can change again.
    app.advance(Duration::days(1) + Duration::minutes(1));
    let token = app.login(IDENTITY, IDENTITY_PASSWORD).await;
    let authorise = ask_code(&app, &token, "recovery_email_change", CONTACT_MOBILE).await;
    post_expecting(
        &app,
        &token,
        "/v1/account/recovery-info/email",
        json!({ "otp": authorise, "email": "terzo@example.it" }),
        StatusCode::ACCEPTED,
    )
    .await;
    let shown = page(&app, &token).await;
    assert_eq!(
        shown["cooldowns"],
        json!([{ "contact": "recovery_mobile", "until": secs(now + Duration::days(11)) }])
    );
}

/// SC-5: past its required actions, an identity adds a missing recovery contact as it changes
/// one, with a code to the contact mobile and one to the new contact: the password and a fresh
/// session alone never choose where a recovery's code goes (which would give a new password
/// without PW-4's code).
#[tokio::test]
async fn a_missing_recovery_contact_is_added_with_two_codes_too_sc_5() {
    let app = TestApp::spawn().await;
    let token = identity_after_first_change(
        &app,
        IDENTITY,
        json!({ "contact_mobile": "347 111 2233", "contact_email": CONTACT_EMAIL }),
        json!({ "email": RECOVERY_EMAIL }),
    )
    .await;
    let head = app.settled_head().await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "mobile": RECOVERY_MOBILE })),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-5.mobile"]);
    // Nor a security question: its answer resets the password as a contact's code does, and
    // it has no flow of codes (found from outside: set with the password, answered in a
    // recovery, it gave a new password without a single SMS).
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "security_question": "Il mio primo gatto?", "security_answer": "Micio", "security_answer_repeat": "Micio" })),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-5.security_question"]);
    assert_eq!(app.settled_head().await, head);
    assert!(page(&app, &token).await["recovery"]["mobile"].is_null());

    let authorise = ask_code(&app, &token, "recovery_mobile_change", CONTACT_MOBILE).await;
    post_expecting(
        &app,
        &token,
        "/v1/account/recovery-info/mobile",
        json!({ "otp": authorise, "mobile": RECOVERY_MOBILE }),
        StatusCode::ACCEPTED,
    )
    .await;
    confirm_new_recovery_mobile(&app, &token, RECOVERY_MOBILE).await;
    let shown = page(&app, &token).await;
    assert_eq!(shown["recovery"]["mobile"]["verified"], true, "{shown}");
    assert_eq!(shown["recovery"]["email"]["verified"], false, "{shown}");
}

#[tokio::test]
async fn an_identitys_password_expires_after_180_days_with_notices_then_only_changes_pw_6() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    let set_at = app.clock.now();
    let shown = page(&app, &token).await;
    let expires_at = DateTime::parse_from_rfc3339(shown["password_expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(
        (expires_at - set_at - Duration::days(180))
            .num_seconds()
            .abs()
            < 5
    );
    // A mailbox's password does not age.
    let (mailbox, _) = app.ready_mailbox("casella.eterna@pec.example.it").await;
    assert_eq!(
        page(&app, &mailbox).await["password_expires_at"],
        Value::Null
    );

    let subject = "Your password is about to expire";
    for (day, told) in [(166, 1), (177, 2), (179, 3)] {
        app.advance(set_at + Duration::days(day) + Duration::minutes(1) - app.clock.now());
        eventually(StdDuration::from_secs(15), "a password notice", || {
            mails(&app, CONTACT_EMAIL, subject).len() == told
        })
        .await;
    }
    // Past the expiry the right password still logs in, to change it and nothing else.
    app.advance(Duration::days(1));
    let res = app.try_login(&IDENTITY, &IDENTITY_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["required_actions"], json!(["change_password"]));
    let token = session["session_token"].as_str().unwrap().to_string();
    assert_eq!(
        page(&app, &token).await["required_actions"],
        json!(["change_password"])
    );
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/language",
            Some(&token),
            Some(json!({ "language": "it" })),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "password-expired").await;
    let res = app
        .post(
            "/v1/account/otp",
            Some(&token),
            json!({ "purpose": "suspension" }),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "password-expired").await;
    // The change itself goes on, with its code (PW-4).
    let code = ask_code(&app, &token, "password_change", CONTACT_MOBILE).await;
    let next = "Nuova-Stagione!2027";
    app.remember_secret(next);
    let res = app
        .post(
            "/v1/account/password",
            Some(&token),
            json!({ "current_password": IDENTITY_PASSWORD, "new_password": next, "new_password_repeat": next, "otp": code }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let token = app.login(IDENTITY, next).await;
    let shown = page(&app, &token).await;
    assert_eq!(shown["required_actions"], json!([]));
    let renewed = DateTime::parse_from_rfc3339(shown["password_expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(
        (renewed - app.clock.now() - Duration::days(180))
            .num_seconds()
            .abs()
            < 5
    );
    let kinds: Vec<&Value> = shown["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "password_expiry")
        .map(|n| &n["detail"]["days_before"])
        .collect();
    assert_eq!(kinds, [&json!(1), &json!(3), &json!(14)]);
}

#[tokio::test]
async fn an_unused_identity_is_warned_then_revoked_and_any_use_moves_the_date_sc_8() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    let revokes_at = DateTime::parse_from_rfc3339(
        page(&app, &token).await["inactivity_revokes_at"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .with_timezone(&Utc);
    let opened = app.clock.now();
    assert!(revokes_at > opened + Duration::days(720) && revokes_at < opened + Duration::days(733));
    let warning = "Your digital identity has not been used for a long time";
    // 90 days before: the first warning.
    app.advance(revokes_at - Duration::days(90) + Duration::minutes(1) - app.clock.now());
    eventually(StdDuration::from_secs(15), "the 90-day warning", || {
        mails(&app, CONTACT_EMAIL, warning).len() == 1
    })
    .await;
    // An access reported by the identity front end moves the date.
    let res = app
        .post(
            "/v1/admin/access-events",
            Some(OPERATOR_KEY),
            json!({ "user_id": IDENTITY, "service": "INPS", "outcome": "success", "client_ip": "203.0.113.9", "at": secs(app.clock.now()) }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let reported = app.clock.now();
    // The old date passes without a revocation; the next look sets the new date.
    app.advance(revokes_at + Duration::days(1) - app.clock.now());
    app.quiesce().await;
    let token = app.login(IDENTITY, IDENTITY_PASSWORD).await;
    let started = std::time::Instant::now();
    loop {
        let shown = page(&app, &token).await["inactivity_revokes_at"].clone();
        let moved = DateTime::parse_from_rfc3339(shown.as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc);
        if moved > revokes_at {
            break;
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(15),
            "the date did not move from {revokes_at}"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    // That login moves it again; then, unused, a warning and the revocation follow.
    let last_login = app.clock.now();
    let last_date = last_login
        .checked_add_months(chrono::Months::new(24))
        .unwrap();
    app.advance(last_date - Duration::days(90) + Duration::minutes(1) - app.clock.now());
    eventually(
        StdDuration::from_secs(15),
        "the warning for the last date",
        || mails(&app, CONTACT_EMAIL, warning).len() == 2,
    )
    .await;
    app.advance(last_date + Duration::minutes(1) - app.clock.now());
    eventually(StdDuration::from_secs(15), "the revocation", || {
        !mails(
            &app,
            CONTACT_EMAIL,
            "Your digital identity has been revoked",
        )
        .is_empty()
    })
    .await;
    let res = app.try_login(&IDENTITY, &IDENTITY_PASSWORD).await;
    expect_problem(res, StatusCode::FORBIDDEN, "account-revoked").await;
    let account: Value = app
        .get(
            &format!("/v1/admin/accounts/{IDENTITY}"),
            Some(OPERATOR_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(account["state"], "revoked");
    assert!(last_login > reported);
}

#[tokio::test]
async fn contact_changes_need_a_fresh_session_a_provider_given_mobile_and_a_daily_bound_sc_3() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    // A session past its step-up window changes no contact, however proven (SEC-3).
    app.advance(Duration::minutes(11));
    let res = app
        .post(
            "/v1/account/contact-mobile",
            Some(&token),
            json!({ "mobile": "348 999 8877" }),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "reauthentication-required").await;
    let res = app
        .post(
            "/v1/account/recovery-info/email",
            Some(&token),
            json!({ "otp": "123456", "email": "altro@example.it" }),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "reauthentication-required").await;
    // Three contact email changes a day; the fourth waits.
    let token = app.login(IDENTITY, IDENTITY_PASSWORD).await;
    for n in 0..3 {
        let res = app
            .request(
                reqwest::Method::PUT,
                "/v1/account/contact-email",
                Some(&token),
                Some(json!({ "email": format!("franca{n}@example.it") })),
            )
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/contact-email",
            Some(&token),
            Some(json!({ "email": "franca9@example.it" })),
        )
        .await;
    let res = expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert!(res.to_string().contains("rate-limited"));
    // A mailbox cannot ask for an identity's change codes; nothing is sent.
    let (mailbox, _) = app.ready_mailbox("casella.contatti@pec.example.it").await;
    let res = app
        .post(
            "/v1/account/otp",
            Some(&mailbox),
            json!({ "purpose": "recovery_email_change" }),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "not-an-identity").await;

    // Nor a suspension's code, though it has a contact mobile: SC-6 is an identity's, so no SMS
    // goes out and the hour's messages are not spent.
    let (with_mobile, _) = app
        .ready_mailbox_with(
            "casella.sospesa@pec.example.it",
            json!({ "contact_mobile": "+393475550101" }),
        )
        .await;
    let head = app.settled_head().await;
    let res = app
        .post(
            "/v1/account/otp",
            Some(&with_mobile),
            json!({ "purpose": "suspension" }),
        )
        .await;
    expect_problem(res, StatusCode::FORBIDDEN, "not-an-identity").await;
    app.quiesce().await;
    assert_eq!(app.settled_head().await, head);
    let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap_or_default();
    assert!(!sms.contains("+393475550101"), "{sms}");

    // An identity's first contact mobile is the identity provider's, given at opening: a
    // session never sets it (else a password alone would authorise SC-5's changes), and an
    // identity without one could never change its password or suspend itself (PW-4, SC-6).
    // So an identity is not opened without it, and nothing is written.
    let head = app.settled_head().await;
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "identity", "user_id": "senza.cellulare", "contact_email": "senza@example.it" }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["ACC-1.contact_mobile"]);
    assert_eq!(app.settled_head().await, head);
    let res = app
        .get("/v1/admin/accounts/senza.cellulare", Some(OPERATOR_KEY))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn after_an_operators_reset_the_holder_may_replace_a_lost_recovery_contact_rc_7() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    // Without a reset the plain save refuses to change a recovery contact on file.
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "mobile": "+393351112222" })),
        )
        .await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    let res = app
        .post(
            &format!("/v1/admin/accounts/{IDENTITY}/password-reset"),
            Some(OPERATOR_KEY),
            json!({ "form_reference": "MOD-2026-0042" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let temporary = res.json::<Value>().await.unwrap()["temporary_password"]
        .as_str()
        .unwrap()
        .to_string();
    app.remember_secret(&temporary);
    let token = app.login(IDENTITY, &temporary).await;
    let next = "Dopo-Il-Modulo!2026";
    app.remember_secret(next);
    post_expecting(
        &app,
        &token,
        "/v1/account/password",
        json!({ "current_password": temporary, "new_password": next, "new_password_repeat": next }),
        StatusCode::NO_CONTENT,
    )
    .await;
    let token = app.login(IDENTITY, next).await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "mobile": "+393351112222" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let shown = page(&app, &token).await;
    assert_eq!(shown["recovery"]["mobile"]["target"], "+39 ***** **22");
    assert_eq!(shown["required_actions"], json!([]));
    // Once saved, the flow governs again.
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "mobile": "+393351113333" })),
        )
        .await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
}

/// SC-3 when self-service fails: the holder lost the number on file, so the code SC-3 sends
/// there can never arrive. After a signed form, the operator records the new number: codes on
/// their way to the old one stop working, the next ones go to the new one, the contact email is
/// told, and the audit trail keeps the form's reference.
#[tokio::test]
async fn an_operator_records_a_lost_contact_mobile_after_a_signed_form_sc_3() {
    let app = TestApp::spawn().await;
    let token = identity(&app).await;
    let new_mobile = "+393485550101";
    let path = format!("/v1/admin/accounts/{IDENTITY}/contact-mobile");
    let put = |key: Option<&'static str>, path: String, body: Value| {
        let app = &app;
        async move {
            app.request(reqwest::Method::PUT, &path, key, Some(body))
                .await
        }
    };
    // A PW-4 code on its way to the lost phone.
    post_expecting(
        &app,
        &token,
        "/v1/account/otp",
        json!({ "purpose": "password_change" }),
        StatusCode::ACCEPTED,
    )
    .await;
    let lost = sms_code(&app, CONTACT_MOBILE).await;
    let told = mails(&app, CONTACT_EMAIL, "Your contact details have changed").len();

    // Bad requests change nothing: every broken rule at once, no key, no such account, a
    // holder's session instead of the operator's key.
    let head = app.settled_head().await;
    let res = put(
        Some(OPERATOR_KEY),
        path.clone(),
        json!({ "contact_mobile": "not a number", "form_reference": " " }),
    )
    .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-3.form_reference", "SC-3.mobile"]);
    let res = put(
        Some(OPERATOR_KEY),
        path.clone(),
        json!({ "contact_mobile": new_mobile }),
    )
    .await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request").await;
    // A direction character would make the audit trail show another reference.
    let res = put(
        Some(OPERATOR_KEY),
        path.clone(),
        json!({ "contact_mobile": new_mobile, "form_reference": "MOD-\u{202E}2400" }),
    )
    .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), ["SC-3.form_reference"]);
    let good = json!({ "contact_mobile": "348 555 0101", "form_reference": "MOD-2026-0042" });
    let res = put(None, path.clone(), good.clone()).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app
        .request(
            reqwest::Method::PUT,
            &path,
            Some(&token),
            Some(good.clone()),
        )
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = put(
        Some(OPERATOR_KEY),
        "/v1/admin/accounts/nessuno.tale/contact-mobile".into(),
        good.clone(),
    )
    .await;
    expect_problem(res, StatusCode::NOT_FOUND, "account-not-found").await;
    assert_eq!(app.settled_head().await, head);
    assert_eq!(page(&app, &token).await["contact_mobile"], "+39 ***** **33");

    // The operator records it. Every session ends (one may be open on the lost phone); the
    // holder logs in again and the page shows the new number.
    let res = put(Some(OPERATOR_KEY), path.clone(), good.clone()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get("/v1/account", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let token = app.login(IDENTITY, IDENTITY_PASSWORD).await;
    assert_eq!(page(&app, &token).await["contact_mobile"], "+39 ***** **01");
    // Sent again (a retry), it records nothing.
    let head = app.settled_head().await;
    let res = put(Some(OPERATOR_KEY), path.clone(), good.clone()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.settled_head().await, head);
    eventually(StdDuration::from_secs(15), "the contact email told", || {
        mails(&app, CONTACT_EMAIL, "Your contact details have changed").len() == told + 1
    })
    .await;

    // The code sent to the lost phone no longer changes the password; a new one goes to the
    // new number and does.
    let new_password = "Girasole.Lontano-93";
    app.remember_secret(new_password);
    let change = |otp: &str| {
        json!({ "current_password": IDENTITY_PASSWORD, "new_password": new_password,
                "new_password_repeat": new_password, "otp": otp })
    };
    let res = app
        .post("/v1/account/password", Some(&token), change(&lost))
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = post_expecting(
        &app,
        &token,
        "/v1/account/otp",
        json!({ "purpose": "password_change" }),
        StatusCode::ACCEPTED,
    )
    .await;
    let sent: Value = res.json().await.unwrap();
    assert_eq!(sent["target"], "+39 ***** **01");
    let code = sms_code(&app, new_mobile).await;
    post_expecting(
        &app,
        &token,
        "/v1/account/password",
        change(&code),
        StatusCode::NO_CONTENT,
    )
    .await;
    app.login(IDENTITY, new_password).await;

    // The audit trail: the change, its form, the number masked (AU-2), as version 2.
    let res = app
        .get(
            &format!("/v1/admin/accounts/{IDENTITY}/audit"),
            Some(OPERATOR_KEY),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let export = res.text().await.unwrap();
    let changes: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "ContactMobileChanged")
        .collect();
    assert_eq!(changes.len(), 1, "{export}");
    assert_eq!(changes[0]["schema_version"], 2);
    assert_eq!(changes[0]["payload"]["form_reference"], "MOD-2026-0042");
    assert_eq!(changes[0]["payload"]["mobile"], "+39 ***** **01");
    assert!(!export.contains("3485550101"));

    // A revoked account is final.
    let res = app
        .post(
            &format!("/v1/admin/accounts/{IDENTITY}/revoke"),
            Some(OPERATOR_KEY),
            json!({ "request_reference": "REV-1" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = put(
        Some(OPERATOR_KEY),
        path.clone(),
        json!({ "contact_mobile": "+393485550202", "form_reference": "MOD-2026-0043" }),
    )
    .await;
    expect_problem(res, StatusCode::CONFLICT, "account-closed").await;
}

/// After an operator's change of a lost contact mobile, the lost phone authorises nothing:
/// neither an SC-5 change it authorised before (email or mobile), nor a recovery by SMS (RC-3)
/// when the recovery mobile was the same number, which moves to the new number, unverified.
#[tokio::test]
async fn a_lost_phone_authorises_nothing_after_an_operators_change_sc_3() {
    let app = TestApp::spawn().await;
    let operator_change = |user: &'static str, mobile: &'static str, reference: &'static str| {
        let app = &app;
        async move {
            let res = app
                .request(
                    reqwest::Method::PUT,
                    &format!("/v1/admin/accounts/{user}/contact-mobile"),
                    Some(OPERATOR_KEY),
                    Some(json!({ "contact_mobile": mobile, "form_reference": reference })),
                )
                .await;
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
        }
    };

    // An identity with a recovery email only: SC-5's codes to add a mobile, or to change the
    // email, go to the contact mobile.
    let token = identity_after_first_change(
        &app,
        "solo.email",
        json!({ "contact_mobile": CONTACT_MOBILE, "contact_email": CONTACT_EMAIL }),
        json!({ "email": RECOVERY_EMAIL }),
    )
    .await;
    let add_mobile = ask_code(&app, &token, "recovery_mobile_change", CONTACT_MOBILE).await;
    let change_email = ask_code(&app, &token, "recovery_email_change", CONTACT_MOBILE).await;
    let new_email = "trovata@example.it";
    post_expecting(
        &app,
        &token,
        "/v1/account/recovery-info/email",
        json!({ "otp": change_email, "email": new_email }),
        StatusCode::ACCEPTED,
    )
    .await;
    let confirm_email = mailed_code(&app, new_email, 0).await;
    operator_change("solo.email", "+393485550303", "MOD-2026-0101").await;
    let token = app.login("solo.email", IDENTITY_PASSWORD).await;
    let res = app
        .post(
            "/v1/account/recovery-info/mobile",
            Some(&token),
            json!({ "otp": add_mobile, "mobile": "+393475550000" }),
        )
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = app
        .post(
            "/v1/account/recovery-info/email/confirm",
            Some(&token),
            json!({ "code": confirm_email }),
        )
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let shown = page(&app, &token).await;
    assert_eq!(shown["recovery"]["email"]["target"], "*****ca@e*****.it");
    assert!(shown["recovery"]["mobile"].is_null(), "{shown}");

    // An identity whose recovery mobile is its contact mobile: a recovery by SMS under way to
    // the lost phone ends there, and the next one goes to the new number.
    let same = "+393486660404";
    identity_after_first_change(
        &app,
        "stesso.numero",
        json!({ "contact_mobile": same, "contact_email": "stesso@example.it" }),
        json!({ "mobile": same }),
    )
    .await;
    let started = crate::recovery::start(&app, "stesso.numero").await;
    let res = crate::recovery::call(&app, &started, "/sms", json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let lost_code = sms_code(&app, same).await;
    operator_change("stesso.numero", "+393487770505", "MOD-2026-0102").await;
    let res =
        crate::recovery::call(&app, &started, "/sms/verify", json!({ "code": lost_code })).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let token = app.login("stesso.numero", IDENTITY_PASSWORD).await;
    let shown = page(&app, &token).await;
    assert_eq!(shown["contact_mobile"], "+39 ***** **05");
    assert_eq!(shown["recovery"]["mobile"]["target"], "+39 ***** **05");
    assert_eq!(shown["recovery"]["mobile"]["verified"], false);
    let started = crate::recovery::start(&app, "stesso.numero").await;
    let methods = started["methods"].to_string();
    assert!(methods.contains("+39 ***** **05"), "{methods}");
    let res = crate::recovery::call(&app, &started, "/sms", json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    sms_code(&app, "+393487770505").await;
    app.quiesce().await;
    crate::helpers::validate_events(&app.data_dir);
}
