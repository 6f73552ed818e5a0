//! The forgotten-password flow end to end (RC-1..7, SEC-1, SEC-2): through HTTP, with the link
//! read from the mail the mailer delivered and the code from the SMS the SMS sender posted to
//! a real HTTP gateway; decoys for unknown ids; rate limits; bad input on every call.

use crate::helpers::{
    assert_no_store, code_in, expect_problem, file_config, link_tokens, mails, newest_code, rules,
    TestApp, OPERATOR_KEY,
};
use crate::processes::{eventually, maildir, SmsReceiver};
use chrono::Duration;
use custode::config::FileConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration as StdDuration, Instant};

const NEW_PASSWORD: &str = "Nuova!Strada-Blu9";
pub(crate) const ANSWER: &str = "Fido il cane";

/// Limits high enough that only the tests about limits meet them.
fn roomy() -> FileConfig {
    let mut file = file_config();
    file.limits.recovery_starts_per_address_per_minute = 1_000;
    file.limits.checks_per_address_per_minute = 1_000;
    file.limits.recovery_messages_per_user_per_hour = 1_000;
    file.limits.login_per_address_per_minute = 1_000;
    file
}

/// An account with every recovery method on file (email, mobile, question); returns the
/// session token.
pub(crate) async fn recoverable(app: &TestApp, user_id: &str) -> String {
    app.remember_secret(ANSWER);
    recoverable_with(
        app,
        user_id,
        json!({
            "email": "recupero@example.it",
            "mobile": "+39 347 123 4512",
            "security_question": "Come si chiamava il tuo primo animale?",
            "security_answer": ANSWER,
            "security_answer_repeat": ANSWER,
        }),
    )
    .await
}

/// A mailbox ready for use that has saved `recovery_info`; returns the session token.
async fn recoverable_with(app: &TestApp, user_id: &str, recovery_info: Value) -> String {
    let (token, _) = app.ready_mailbox(user_id).await;
    let res = app
        .request(
            Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(recovery_info),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "saving the recovery information"
    );
    token
}

pub(crate) async fn start(app: &TestApp, user_id: &str) -> Value {
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": user_id, "captcha_token": "solved" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("json")
}

/// `POST` to a call of the recovery `started`, e.g. `/sms/verify`.
pub(crate) async fn call(
    app: &TestApp,
    started: &Value,
    tail: &str,
    body: Value,
) -> reqwest::Response {
    app.post(&recovery_path(started, tail), None, body).await
}

fn recovery_path(started: &Value, tail: &str) -> String {
    format!(
        "/v1/recovery/{}{tail}",
        started["recovery_id"].as_str().expect("recovery id")
    )
}

pub(crate) async fn complete(app: &TestApp, user_id: &str, token: &str) -> reqwest::Response {
    app.remember_secret(token);
    app.remember_secret(NEW_PASSWORD);
    app.post(
        "/v1/recovery/complete",
        None,
        json!({ "user_id": user_id, "token": token, "new_password": NEW_PASSWORD, "new_password_repeat": NEW_PASSWORD }),
    )
    .await
}

/// The token in the newest-first `n`-th recovery mail to `to`, once it has arrived.
async fn link_token(app: &TestApp, to: &str, count: usize) -> Vec<String> {
    eventually(StdDuration::from_secs(10), "the recovery mail", || {
        mails(app, to, "Recupero della password").len() >= count
    })
    .await;
    link_tokens(
        &mails(app, to, "Recupero della password"),
        "/recovery?token=",
    )
}

/// The account page's required actions.
async fn required_actions(app: &TestApp, token: &str) -> Vec<String> {
    let res = app.get("/v1/account", Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = res.json().await.expect("json");
    page["required_actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

/// The reset token of a right code or answer.
pub(crate) async fn reset_token(res: reqwest::Response) -> String {
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let token = body["reset_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43, "SEC-1: 32 bytes in URL-safe base64");
    token
}

/// Completes the recovery with `token` and checks what follows (RC-5, RC-6).
async fn finish(app: &TestApp, user_id: &str, token: &str, old_session: &str) {
    let res = complete(app, user_id, token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    after_recovery(app, user_id, old_session).await;
}

/// After a recovery: the old session is over, the new password logs in and must confirm the
/// recovery information, which saving it unchanged does (RC-6); the contact address was told.
async fn after_recovery(app: &TestApp, user_id: &str, old_session: &str) {
    let res = app.get("/v1/account", Some(old_session)).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let session = app.login(user_id, NEW_PASSWORD).await;
    assert_eq!(
        required_actions(app, &session).await,
        vec!["confirm_recovery_info"]
    );
    let res = app
        .request(
            Method::PUT,
            "/v1/account/recovery-info",
            Some(&session),
            Some(json!({})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(required_actions(app, &session).await.is_empty());
    eventually(StdDuration::from_secs(10), "the recovered notice", || {
        mails(app, "titolare@example.it", "recuperata").len() == 1
    })
    .await;
}

#[tokio::test]
async fn recovery_by_the_emailed_link_end_to_end_rc_2() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "link@pec.example.it";
    let session = recoverable(&app, user).await;
    let started = start(&app, user).await;
    let methods: Vec<&str> = started["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, vec!["email", "sms", "question"]);
    assert_eq!(started["methods"][0]["target"], "*****ro@e*****.it");
    assert_eq!(started["methods"][1]["target"], "+39 ***** **12");
    assert!(started["notice"]
        .as_str()
        .unwrap()
        .contains("amministratore"));
    let res = call(&app, &started, "/email", json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let tokens = link_token(&app, "recupero@example.it", 1).await;
    let token = tokens.first().expect("a link in the mail").clone();
    assert_eq!(token.len(), 43);
    let res = complete(&app, user, &token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Single use (RC-5).
    let res = complete(&app, user, &token).await;
    expect_problem(res, StatusCode::GONE, "token-used").await;
    after_recovery(&app, user, &session).await;
    // RI-3: the link proved the recovery address.
    let session = app.login(user, NEW_PASSWORD).await;
    let page: Value = app
        .get("/v1/account", Some(&session))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["recovery"]["email"]["verified"], true, "{page}");
    assert_eq!(page["recovery"]["mobile"]["verified"], false, "{page}");
    // AU-3: the read models rebuilt from the log, recovery and all, equal the live ones.
    app.quiesce().await;
    let (data_dir, dir, _) = app.stop().await;
    let live = crate::replay::dump(&data_dir);
    let rebuilt_dir = data_dir.clone();
    tokio::task::spawn_blocking(move || {
        custode::app::replay(&rebuilt_dir, &Default::default(), &mut |_, _| {})
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(crate::replay::dump(&data_dir), live);
    drop(dir);
}

#[tokio::test]
async fn recovery_by_sms_code_through_a_real_gateway_end_to_end_rc_3() {
    let gateway = SmsReceiver::start(Vec::new()).await;
    let mut file = roomy();
    file.sms.gateway_url = Some(gateway.url.clone());
    let app = TestApp::spawn_with(file).await;
    let user = "sms@pec.example.it";
    let session = recoverable(&app, user).await;
    let started = start(&app, user).await;
    let res = call(&app, &started, "/sms", json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    eventually(StdDuration::from_secs(10), "the SMS", || {
        !gateway.accepted.lock().unwrap().is_empty()
    })
    .await;
    let sms = gateway.accepted.lock().unwrap()[0].clone();
    assert_eq!(sms["to"], "+393471234512");
    let code = code_in(sms["text"].as_str().unwrap());
    app.remember_secret(&code);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let res = call(&app, &started, "/sms/verify", json!({ "code": wrong })).await;
    let problem = expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    assert!(problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("4 attempt(s) left"));
    let res = call(&app, &started, "/sms/verify", json!({ "code": code })).await;
    let reset = reset_token(res).await;
    finish(&app, user, &reset, &session).await;
}

#[tokio::test]
async fn recovery_by_security_question_end_to_end_rc_4() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "question@pec.example.it";
    let session = recoverable(&app, user).await;
    let started = start(&app, user).await;
    let res = app.get(&recovery_path(&started, "/question"), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["question"], "Come si chiamava il tuo primo animale?");
    let res = call(&app, &started, "/question", json!({ "answer": "gatto" })).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "answer-wrong").await;
    let res = call(
        &app,
        &started,
        "/question",
        json!({ "answer": "  FIDO   il cane " }),
    )
    .await;
    let reset = reset_token(res).await;
    finish(&app, user, &reset, &session).await;
}

/// RI-1: an answer saved with its accents precomposed ("Città") is the same answer typed with
/// each accent as a combining mark, as some keyboards send it, and the other way round.
#[tokio::test]
async fn an_answer_typed_with_combining_accents_matches_the_one_saved_precomposed_ri_1() {
    for (n, (saved, typed)) in [
        ("Città del Sole", "CITTA\u{300}  DEL SOLE"),
        ("Citta\u{300} del Sole", "città del sole"),
    ]
    .into_iter()
    .enumerate()
    {
        // One service each: the holder's notice is counted per contact address.
        let app = TestApp::spawn_with(roomy()).await;
        let user = format!("accenti{n}@pec.example.it");
        app.remember_secret(saved);
        app.remember_secret(typed);
        let token = recoverable_with(
            &app,
            &user,
            json!({
                "email": "recupero@example.it",
                "security_question": "Dove sei nato?",
                "security_answer": saved,
                "security_answer_repeat": typed,
            }),
        )
        .await;
        let started = start(&app, &user).await;
        let res = call(&app, &started, "/question", json!({ "answer": "Roma" })).await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "answer-wrong").await;
        let res = call(&app, &started, "/question", json!({ "answer": typed })).await;
        let reset = reset_token(res).await;
        finish(&app, &user, &reset, &token).await;
    }
}

#[tokio::test]
async fn a_newer_link_supersedes_the_older_and_links_expire_after_24_hours() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "expiry@pec.example.it";
    recoverable(&app, user).await;
    let started = start(&app, user).await;
    let path = recovery_path(&started, "/email");
    assert_eq!(
        app.post(&path, None, json!({})).await.status(),
        StatusCode::ACCEPTED
    );
    let first = link_token(&app, "recupero@example.it", 1).await;
    assert_eq!(
        app.post(&path, None, json!({})).await.status(),
        StatusCode::ACCEPTED
    );
    let both = link_token(&app, "recupero@example.it", 2).await;
    let second: Vec<&String> = both.iter().filter(|t| !first.contains(t)).collect();
    let (first, second) = (first[0].clone(), second[0].clone());
    let head = app.settled_head().await;
    let res = complete(&app, user, &first).await;
    expect_problem(res, StatusCode::GONE, "token-superseded").await;
    app.advance(Duration::hours(24) + Duration::seconds(1));
    let res = complete(&app, user, &second).await;
    expect_problem(res, StatusCode::GONE, "token-expired").await;
    assert_eq!(app.settled_head().await, head, "refusals change nothing");
    // The old password still works.
    app.login(user, "Tr4m-Colle!Verde").await;
}

#[tokio::test]
async fn sms_codes_expire_count_attempts_across_resends_and_stop_at_three() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "codes@pec.example.it";
    recoverable(&app, user).await;
    let started = start(&app, user).await;
    let send = || call(&app, &started, "/sms", json!({}));
    let verify = |code: String| call(&app, &started, "/sms/verify", json!({ "code": code }));
    // The newest code sent, read from the SMS the sender wrote, and one that is not it.
    let codes = || async {
        let code = newest_code(&app).await;
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        (code, wrong)
    };
    let attempts_left = |p: &Value| {
        p["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // A code past 5 minutes has expired.
    assert_eq!(send().await.status(), StatusCode::ACCEPTED);
    let (first, _) = codes().await;
    app.advance(Duration::minutes(5));
    let res = verify(first).await;
    expect_problem(res, StatusCode::GONE, "code-expired").await;

    // Two wrong guesses at the second code...
    assert_eq!(send().await.status(), StatusCode::ACCEPTED);
    let (_, wrong) = codes().await;
    for left in [4, 3] {
        let res = verify(wrong.clone()).await;
        let p = expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
        assert!(
            attempts_left(&p).contains(&format!("{left} attempt(s) left")),
            "{p}"
        );
    }
    // ...and a third code does not give them back (RC-3, NIST SP 800-63B).
    assert_eq!(send().await.status(), StatusCode::ACCEPTED);
    let (right, wrong) = codes().await;
    for left in [2, 1] {
        let res = verify(wrong.clone()).await;
        let p = expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
        assert!(
            attempts_left(&p).contains(&format!("{left} attempt(s) left")),
            "{p}"
        );
    }
    let res = verify(wrong.clone()).await;
    let p = expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    assert!(attempts_left(&p).contains("no attempts are left"), "{p}");
    // Spent: even the right code is refused now, and a fourth code is not sent.
    let res = verify(right).await;
    expect_problem(res, StatusCode::CONFLICT, "code-attempts-exhausted").await;
    let res = send().await;
    expect_problem(res, StatusCode::CONFLICT, "code-limit-reached").await;
    // Every code sent went out as an SMS to the recovery mobile.
    app.quiesce().await;
    let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap_or_default();
    assert_eq!(
        sms.lines().filter(|l| l.contains("+393471234512")).count(),
        3
    );
}

#[tokio::test]
async fn five_wrong_answers_lock_the_question_for_15_minutes_and_mail_the_holder() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "lock@pec.example.it";
    recoverable(&app, user).await;
    let started = start(&app, user).await;
    let path = recovery_path(&started, "/question");
    for _ in 0..5 {
        let res = app.post(&path, None, json!({ "answer": "gatto" })).await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "answer-wrong").await;
    }
    let res = app.post(&path, None, json!({ "answer": ANSWER })).await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "question-locked").await;
    eventually(StdDuration::from_secs(10), "the lockout notice", || {
        mails(&app, "titolare@example.it", "bloccata").len() == 1
    })
    .await;
    // The method is locked, never the account: the link still goes out.
    let res = call(&app, &started, "/email", json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.advance(Duration::minutes(15));
    let res = app.post(&path, None, json!({ "answer": ANSWER })).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    app.remember_secret(body["reset_token"].as_str().unwrap());
}

/// The shape of a start's answer with the targets' letters and digits blurred, so a real
/// and a decoy answer compare.
fn shape(answer: &Value) -> Value {
    let methods: Vec<Value> = answer["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            // Every shown character blurred to `x`, runs of them to one: what is left is the
            // mask's shape.
            let target = m["target"].as_str().map(|t| {
                let mut blurred = String::new();
                for c in t.chars() {
                    let c = if "*@+ ".contains(c) { c } else { 'x' };
                    if !(c == 'x' && blurred.ends_with('x')) {
                        blurred.push(c);
                    }
                }
                blurred
            });
            json!({ "method": m["method"], "target": target })
        })
        .collect();
    let mut keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    keys.sort();
    json!({ "keys": keys, "methods": methods })
}

/// The `q`-quantile of `samples` (0.5: the median).
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test]
async fn unknown_ids_and_accounts_without_recovery_info_get_decoys_alike_rc_1() {
    let app = TestApp::spawn_with(roomy()).await;
    let real = "reale@pec.example.it";
    let bare = "senza@pec.example.it";
    let unknown = "nessuno@pec.example.it";
    recoverable(&app, real).await;
    app.open_mailbox(bare).await;
    let real_answer = start(&app, real).await;
    for id in [unknown, bare] {
        let a = start(&app, id).await;
        let b = start(&app, &id.to_uppercase()).await;
        assert_ne!(a["recovery_id"], b["recovery_id"]);
        assert_eq!(a["methods"], b["methods"], "stable for the same id");
        let count = a["methods"].as_array().unwrap().len();
        assert!((1..=3).contains(&count), "{a}");
        assert_eq!(shape(&a)["keys"], shape(&real_answer)["keys"]);
        for m in shape(&a)["methods"].as_array().unwrap() {
            let same_kind = shape(&real_answer)["methods"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == m);
            assert!(same_kind, "decoy method {m} looks unlike a real one");
        }
        assert_eq!(a["notice"], real_answer["notice"]);
        // Sending answers as for a real account, and nothing is sent.
        let methods: Vec<String> = a["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["method"].as_str().unwrap().to_string())
            .collect();
        for method in &methods {
            match method.as_str() {
                "email" => {
                    let res = call(&app, &a, "/email", json!({})).await;
                    assert_eq!(res.status(), StatusCode::ACCEPTED);
                }
                "sms" => {
                    let res = call(&app, &a, "/sms", json!({})).await;
                    assert_eq!(res.status(), StatusCode::ACCEPTED);
                    let res = call(&app, &a, "/sms/verify", json!({ "code": "123456" })).await;
                    expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
                }
                _ => {
                    let res = app.get(&recovery_path(&a, "/question"), None).await;
                    assert_eq!(res.status(), StatusCode::OK);
                    let res = call(&app, &a, "/question", json!({ "answer": "x" })).await;
                    expect_problem(res, StatusCode::UNAUTHORIZED, "answer-wrong").await;
                }
            }
        }
        // A method the answer did not offer is refused alike.
        for (method, path) in [("email", "/email"), ("sms", "/sms")] {
            if !methods.iter().any(|m| m == method) {
                let res = app.post(&recovery_path(&a, path), None, json!({})).await;
                expect_problem(res, StatusCode::CONFLICT, "recovery-method-unavailable").await;
            }
        }
    }
    app.quiesce().await;
    assert!(mails(&app, "recupero@example.it", "Recupero").is_empty());
    assert!(
        !app.data_dir.join("sms.jsonl").exists(),
        "no SMS for a decoy"
    );
    let links = maildir(&app.data_dir)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|m| m.contains("/recovery?token="))
        .count();
    assert_eq!(links, 0, "no recovery mail for a decoy");

    // Timing: interleaved starts for the real id and an unknown one; their medians agree.
    let mut real_ms = Vec::new();
    let mut unknown_ms = Vec::new();
    for i in 0..25 {
        for (id, samples) in [(real, &mut real_ms), (unknown, &mut unknown_ms)] {
            let id = if i % 2 == 0 {
                id.to_string()
            } else {
                id.to_uppercase()
            };
            let t = Instant::now();
            start(&app, &id).await;
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    alike_in_time("start", &real_ms, &unknown_ms);

    // Sending a link: a real one is appended, sealed and queued; a decoy's is nothing at all.
    let decoy_with_email = (0..50)
        .map(|n| format!("ignoto{n}@pec.example.it"))
        .find(|id| {
            let seed = app.state.accounts.decoy_methods_of(id);
            seed.contains(&custode_domain::recovery::RecoveryMethod::Email)
        })
        .expect("some unknown id offers an email");
    let real_started = start(&app, real).await;
    let decoy_started = start(&app, &decoy_with_email).await;
    let (mut real_ms, mut unknown_ms) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        for (started, samples) in [
            (&real_started, &mut real_ms),
            (&decoy_started, &mut unknown_ms),
        ] {
            let t = Instant::now();
            let res = call(&app, started, "/email", json!({})).await;
            assert_eq!(res.status(), StatusCode::ACCEPTED);
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    alike_in_time("email", &real_ms, &unknown_ms);
}

/// The quartiles of two timing samples agree within 10 % (or a millisecond), and none answers
/// before the floor (`recovery.answer_floor_ms`, 100 ms by default).
fn alike_in_time(what: &str, real_ms: &[f64], unknown_ms: &[f64]) {
    let floor = custode_domain::settings::RecoverySettings::default().answer_floor_ms as f64;
    for sample in real_ms.iter().chain(unknown_ms) {
        assert!(
            *sample >= floor,
            "{what} answered in {sample:.2} ms, under the floor"
        );
    }
    for q in [0.25, 0.5, 0.75] {
        let (r, u) = (quantile(real_ms, q), quantile(unknown_ms, q));
        eprintln!("recovery {what}, quantile {q}: real {r:.2} ms, unknown {u:.2} ms");
        assert!(
            (r - u).abs() <= (0.1 * r.max(u)).max(1.0),
            "{what}, quantile {q}: a real id ({r:.2} ms) and an unknown one ({u:.2} ms) answer in visibly different times"
        );
    }
}

#[tokio::test]
async fn bad_input_on_every_recovery_call_gets_a_problem_and_changes_nothing() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "bad@pec.example.it";
    recoverable(&app, user).await;
    let started = start(&app, user).await;
    let head = app.settled_head().await;
    let unknown = format!("/v1/recovery/{}", uuid::Uuid::now_v7());

    let res = app
        .post("/v1/recovery", None, json!({ "user_id": user }))
        .await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request").await;
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": user, "captcha_token": " " }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), vec!["RC-1.captcha"]);
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": "", "captcha_token": "ok" }),
        )
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), vec!["RC-1.user_id"]);
    let res = app.request(Method::POST, "/v1/recovery", None, None).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "malformed-json").await;

    for (method, tail, body) in [
        (Method::POST, "/email", json!({})),
        (Method::POST, "/sms", json!({})),
        (Method::POST, "/sms/verify", json!({ "code": "123456" })),
        (Method::GET, "/question", json!(null)),
        (Method::POST, "/question", json!({ "answer": "x" })),
    ] {
        for base in [unknown.clone(), "/v1/recovery/not-a-uuid".to_string()] {
            let body = (method == Method::POST).then(|| body.clone());
            let res = app
                .request(method.clone(), &format!("{base}{tail}"), None, body)
                .await;
            expect_problem(res, StatusCode::NOT_FOUND, "recovery-not-found").await;
        }
    }

    // No code was sent yet; a malformed one is refused all the same without costing anything.
    let res = call(&app, &started, "/sms/verify", json!({ "code": "123456" })).await;
    expect_problem(res, StatusCode::CONFLICT, "no-code").await;
    let res = call(&app, &started, "/sms/verify", json!({ "code": 123456 })).await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request").await;
    let res = call(
        &app,
        &started,
        "/question",
        json!({ "answer": "x".repeat(5_000) }),
    )
    .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), vec!["RC-4.answer"]);
    let res = call(
        &app,
        &started,
        "/question",
        json!({ "answer": "a".repeat(300) }),
    )
    .await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;

    let res = complete(&app, user, "not-a-token").await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), vec!["SEC-1.token"]);
    let forged = "A".repeat(43);
    let res = complete(&app, user, &forged).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "token-invalid").await;
    let res = complete(&app, "nobody@pec.example.it", &forged).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "token-invalid").await;
    let res = app
        .post(
            "/v1/recovery/complete",
            None,
            json!({ "user_id": user, "token": forged }),
        )
        .await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request").await;

    assert_eq!(app.settled_head().await, head, "bad input changed the log");
    app.login(user, "Tr4m-Colle!Verde").await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_lift_sec_2() {
    let mut file = file_config();
    file.limits.recovery_starts_per_address_per_minute = 3;
    file.limits.recovery_messages_per_user_per_hour = 2;
    file.limits.login_failures_per_user = 3;
    let app = TestApp::spawn_with(file).await;
    let user = "limits@pec.example.it";
    recoverable(&app, user).await;

    // Recovery messages per user id, a real one and an unknown one alike.
    for id in [user, "ignoto@pec.example.it"] {
        let started = start(&app, id).await;
        let methods = started["methods"].as_array().unwrap().clone();
        let path = if methods.iter().any(|m| m["method"] == "email") {
            recovery_path(&started, "/email")
        } else {
            recovery_path(&started, "/sms")
        };
        for _ in 0..2 {
            assert_eq!(
                app.post(&path, None, json!({})).await.status(),
                StatusCode::ACCEPTED
            );
        }
        let res = app.post(&path, None, json!({})).await;
        assert!(res.headers().contains_key("retry-after"));
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    }
    // Recovery starts per client address: two above, one more, then refused.
    start(&app, user).await;
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": user, "captcha_token": "ok" }),
        )
        .await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    app.advance(Duration::minutes(1));
    start(&app, user).await;

    // Failed logins in a row lock the user id out (even with the right password), then lift.
    for id in [user, "ignoto@pec.example.it"] {
        for _ in 0..3 {
            let res = app.try_login(id, "Sbagliata!123").await;
            expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
        }
        let res = app.try_login(id, "Tr4m-Colle!Verde").await;
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    }
    app.advance(Duration::minutes(15));
    app.login(user, "Tr4m-Colle!Verde").await;
    // An hour on, the user id may have messages again.
    app.advance(Duration::hours(1));
    let started = start(&app, user).await;
    let res = call(&app, &started, "/email", json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_holder_following_the_flow_by_hand_never_meets_the_default_limits() {
    let app = TestApp::spawn().await;
    let user = "hand@pec.example.it";
    recoverable(&app, user).await;
    for _ in 0..3 {
        start(&app, user).await;
    }
    let started = start(&app, user).await;
    for path in ["/email", "/sms", "/sms"] {
        let res = app
            .post(&recovery_path(&started, path), None, json!({}))
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{path}");
    }
    for _ in 0..2 {
        let res = call(&app, &started, "/sms/verify", json!({ "code": "000000" })).await;
        assert_ne!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}

/// A captcha verifier in the style of hCaptcha: form fields `secret` and `response`.
async fn captcha_verifier() -> (String, tokio::task::JoinHandle<()>) {
    let router = axum::Router::new().route(
        "/siteverify",
        axum::routing::post(|body: String| async move {
            let fields: Vec<(String, String)> = body
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
            let ok = get("secret").as_deref() == Some("s3cret")
                && get("response").as_deref() == Some("good-token");
            axum::Json(json!({ "success": ok }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}/siteverify"), server)
}

#[tokio::test]
async fn a_configured_captcha_verifier_decides_rc_1() {
    let (url, server) = captcha_verifier().await;
    let mut file = roomy();
    file.captcha.verify_url = Some(url);
    file.captcha.secret = Some("s3cret".into());
    let app = TestApp::spawn_with(file).await;
    let head = app.settled_head().await;
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": "x@pec.example.it", "captcha_token": "bad-token" }),
        )
        .await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "captcha-failed").await;
    assert_eq!(app.settled_head().await, head);
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": "x@pec.example.it", "captcha_token": "good-token" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    server.abort();
    let _ = server.await;
    let res = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": "x@pec.example.it", "captcha_token": "good-token" }),
        )
        .await;
    expect_problem(res, StatusCode::SERVICE_UNAVAILABLE, "captcha-unavailable").await;
}

#[tokio::test]
async fn an_operator_resets_a_password_after_a_signed_form_rc_7() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "modulo@pec.example.it";
    let session = recoverable(&app, user).await;
    let path = format!("/v1/admin/accounts/{user}/password-reset");
    let res = app
        .post(&path, None, json!({ "form_reference": "MOD-1" }))
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app
        .post(&path, Some(OPERATOR_KEY), json!({ "form_reference": "" }))
        .await;
    let p = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(rules(&p), vec!["RC-7.form_reference"]);
    let res = app
        .post(
            "/v1/admin/accounts/nobody@pec.example.it/password-reset",
            Some(OPERATOR_KEY),
            json!({ "form_reference": "MOD-1" }),
        )
        .await;
    expect_problem(res, StatusCode::NOT_FOUND, "account-not-found").await;
    let res = app
        .post(
            &path,
            Some(OPERATOR_KEY),
            json!({ "form_reference": "MOD-2026/0042" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let temporary = body["temporary_password"].as_str().unwrap().to_string();
    app.remember_secret(&temporary);
    // Every session ended; the old password no longer works; the temporary one does.
    let res = app.get("/v1/account", Some(&session)).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app.try_login(user, "Tr4m-Colle!Verde").await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    let session = app.login(user, &temporary).await;
    assert_eq!(
        required_actions(&app, &session).await,
        vec!["change_password", "confirm_recovery_info"]
    );
    // The form's reference is on record.
    app.quiesce().await;
    let db = rusqlite::Connection::open(app.data_dir.join("events.db")).unwrap();
    let payload: String = db
        .query_row(
            "SELECT payload FROM events WHERE type = 'TemporaryPasswordIssued' ORDER BY position DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["reason"], "operator_reset");
    assert_eq!(payload["form_reference"], "MOD-2026/0042");
}

#[tokio::test]
async fn lockouts_and_decoy_progress_are_in_the_log_so_they_survive_a_restart() {
    let mut file = roomy();
    file.limits.login_failures_per_user = 3;
    let app = TestApp::spawn_with(file.clone()).await;
    let user = "chiuso@pec.example.it";
    let unknown = "ignoto@pec.example.it";
    recoverable(&app, user).await;
    for id in [user, unknown] {
        for _ in 0..3 {
            let res = app.try_login(id, "Sbagliata!123").await;
            expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
        }
    }
    eventually(StdDuration::from_secs(10), "the lockout notice", || {
        mails(&app, "titolare@example.it", "Accesso bloccato").len() == 1
    })
    .await;
    // A decoy's question, four wrong answers in (an id whose decoy offers it).
    let decoy = (0..100)
        .map(|n| format!("domanda{n}@pec.example.it"))
        .find(|id| {
            app.state
                .accounts
                .decoy_methods_of(id)
                .contains(&custode_domain::recovery::RecoveryMethod::Question)
        })
        .expect("some unknown id offers a question");
    let started = start(&app, &decoy).await;
    for left in [4, 3, 2, 1] {
        let res = call(&app, &started, "/question", json!({ "answer": "gatto" })).await;
        let p = expect_problem(res, StatusCode::UNAUTHORIZED, "answer-wrong").await;
        let message = p["errors"][0]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(&format!("{left} attempt(s) left")),
            "{message}"
        );
    }
    app.quiesce().await;
    let (data_dir, dir, clock) = app.stop().await;

    // A new process has no memory of its own; the log has.
    let app = TestApp::start(&data_dir, file, clock).await;
    for id in [user, unknown] {
        let res = app.try_login(id, "Tr4m-Colle!Verde").await;
        assert!(res.headers().contains_key("retry-after"));
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    }
    let res = call(&app, &started, "/question", json!({ "answer": "gatto" })).await;
    let p = expect_problem(res, StatusCode::UNAUTHORIZED, "answer-wrong").await;
    assert!(p["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("no attempts are left"));
    let res = call(&app, &started, "/question", json!({ "answer": "gatto" })).await;
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "question-locked").await;
    app.advance(Duration::minutes(15));
    app.login(user, "Tr4m-Colle!Verde").await;
    let res = app.try_login(unknown, "Tr4m-Colle!Verde").await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    drop(app);
    drop(dir);
}

#[tokio::test]
async fn a_recovery_opens_logins_that_wrong_passwords_locked() {
    let mut file = roomy();
    file.limits.login_failures_per_user = 3;
    let app = TestApp::spawn_with(file).await;
    let user = "sblocco@pec.example.it";
    recoverable(&app, user).await;
    for _ in 0..3 {
        let res = app.try_login(user, "Sbagliata!123").await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    }
    let res = app.try_login(user, "Tr4m-Colle!Verde").await;
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    let started = start(&app, user).await;
    assert_eq!(
        call(&app, &started, "/email", json!({})).await.status(),
        StatusCode::ACCEPTED
    );
    let token = link_token(&app, "recupero@example.it", 1).await[0].clone();
    assert_eq!(
        complete(&app, user, &token).await.status(),
        StatusCode::NO_CONTENT
    );
    // No waiting out the lock: the recovery proved the holder.
    app.login(user, NEW_PASSWORD).await;
}

/// An unknown user id whose decoy offers `method`.
fn unknown_offering(app: &TestApp, method: custode_domain::recovery::RecoveryMethod) -> String {
    (0..200)
        .map(|n| format!("ignoto{n}@pec.example.it"))
        .find(|id| app.state.accounts.decoy_methods_of(id).contains(&method))
        .expect("some unknown id offers the method")
}

/// SEC-2: wrong codes are counted per user id across recoveries: three fresh recoveries buy
/// no more than ten wrong codes in a row, then checks answer `429` (still after a restart),
/// the holder is mailed, and an unknown id is held alike; the lock ends after 15 minutes.
#[tokio::test]
async fn sec_2_wrong_codes_across_fresh_recoveries_lock_the_user_ids_checks() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "indovino@pec.example.it";
    recoverable(&app, user).await;
    let unknown = unknown_offering(&app, custode_domain::recovery::RecoveryMethod::Sms);
    // A code that is not the one sent: the last SMS's code plus one (any code, for a decoy).
    let wrong_code = |app: &TestApp| {
        let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap_or_default();
        let sent = sms
            .lines()
            .last()
            .and_then(|text| {
                text.split(|c: char| !c.is_ascii_digit())
                    .find(|w| w.len() == 6)
                    .map(|w| w.parse::<u32>().unwrap())
            })
            .unwrap_or(0);
        format!("{:06}", (sent + 1) % 1_000_000)
    };
    let mut last = Vec::new();
    for id in [user, unknown.as_str()] {
        let mut wrong_so_far = 0;
        for guesses in [4, 4, 2] {
            let started = start(&app, id).await;
            assert_eq!(
                call(&app, &started, "/sms", json!({})).await.status(),
                StatusCode::ACCEPTED
            );
            app.quiesce().await;
            for _ in 0..guesses {
                let code = wrong_code(&app);
                let res = call(&app, &started, "/sms/verify", json!({ "code": code })).await;
                expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
                wrong_so_far += 1;
            }
            last = vec![started];
        }
        assert_eq!(wrong_so_far, 10);
        // The eleventh, in the third recovery which has attempts of its own left: refused.
        let res = call(
            &app,
            &last[0],
            "/sms/verify",
            json!({ "code": wrong_code(&app) }),
        )
        .await;
        assert!(res.headers().contains_key("retry-after"));
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        // A fresh recovery does not reopen them.
        let fresh = start(&app, id).await;
        assert_eq!(
            call(&app, &fresh, "/sms", json!({})).await.status(),
            StatusCode::ACCEPTED
        );
        let res = call(
            &app,
            &fresh,
            "/sms/verify",
            json!({ "code": wrong_code(&app) }),
        )
        .await;
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        last = vec![fresh];
    }
    eventually(
        StdDuration::from_secs(10),
        "the checks-locked notice",
        || mails(&app, "titolare@example.it", "Verifiche bloccate").len() == 1,
    )
    .await;

    // The count is in the log: a new process refuses alike.
    let (data_dir, dir, clock) = app.stop().await;
    let app = TestApp::start(&data_dir, roomy(), clock).await;
    for id in [user, unknown.as_str()] {
        let started = start(&app, id).await;
        assert_eq!(
            call(&app, &started, "/sms", json!({})).await.status(),
            StatusCode::ACCEPTED
        );
        let res = call(&app, &started, "/sms/verify", json!({ "code": "000000" })).await;
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    }
    // Fifteen minutes on, checks are open again (the scheduler records the lock's end).
    app.advance(Duration::minutes(15));
    for id in [user, unknown.as_str()] {
        let started = start(&app, id).await;
        assert_eq!(
            call(&app, &started, "/sms", json!({})).await.status(),
            StatusCode::ACCEPTED
        );
        app.quiesce().await;
        let res = call(
            &app,
            &started,
            "/sms/verify",
            json!({ "code": wrong_code(&app) }),
        )
        .await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "code-wrong").await;
    }
    drop(app);
    drop(dir);
}

/// The log's head as the operator listener shows it, once it has not moved for a while.
async fn quiet_head(served: &crate::processes::Served) -> u64 {
    let read = || async {
        let text = reqwest::get(format!("{}/metrics", served.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("custode_log_head_position "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("the head in /metrics")
    };
    let mut last = read().await;
    let mut still_since = Instant::now();
    let started = Instant::now();
    loop {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
        let now = read().await;
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > StdDuration::from_millis(500) {
            return last;
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(20),
            "the log never settled"
        );
    }
}

/// SEC-8: a send moves the log's head by as much for an unknown id as for a real account: a
/// real link or code is followed by the worker's `NotificationSent`, a decoy's by its mirror.
/// Watched where it could be watched (the log's head on the operator listener), through the
/// real binary, over several sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_8_the_head_moves_alike_for_real_and_unknown_ids_over_several_sends() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custode.toml"),
        "[limits]\nrecovery_starts_per_address_per_minute = 1000\n",
    )
    .unwrap();
    let served = crate::processes::serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let post = |path: String, token: Option<String>, body: Value| {
        let client = client.clone();
        let base = served.base.clone();
        async move {
            let mut req = client.post(format!("{base}{path}")).json(&body);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            req.send().await.unwrap()
        }
    };
    let user = "vero@pec.example.it";
    let opened: Value = post(
        "/v1/admin/accounts".into(),
        Some(OPERATOR_KEY.into()),
        json!({ "kind": "mailbox", "user_id": user, "contact_email": "titolare@example.it" }),
    )
    .await
    .json()
    .await
    .unwrap();
    let temporary = opened["temporary_password"].as_str().unwrap().to_string();
    let login = |password: String| async move {
        let session: Value = post(
            "/v1/sessions".into(),
            None,
            json!({ "user_id": user, "password": password }),
        )
        .await
        .json()
        .await
        .unwrap();
        session["session_token"].as_str().unwrap().to_string()
    };
    let token = login(temporary.clone()).await;
    let res = post(
        "/v1/account/password".into(),
        Some(token),
        json!({ "current_password": temporary, "new_password": NEW_PASSWORD, "new_password_repeat": NEW_PASSWORD }),
    )
    .await;
    assert_eq!(res.status(), 204);
    let token = login(NEW_PASSWORD.into()).await;
    let res = client
        .put(format!("{}/v1/account/recovery-info", served.base))
        .bearer_auth(&token)
        .json(&json!({ "email": "recupero@example.it", "mobile": "+39 347 123 4512" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // An unknown id whose decoy offers both a link and a code.
    let offers = |started: &Value, method: &str| {
        started["methods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["method"] == method)
    };
    // A recovery's start through the binary: its answer.
    let begin = |id: String| {
        let post = &post;
        async move {
            post(
                "/v1/recovery".into(),
                None,
                json!({ "user_id": id, "captcha_token": "x" }),
            )
            .await
            .json::<Value>()
            .await
            .unwrap()
        }
    };
    let mut unknown = None;
    for n in 0..200 {
        let id = format!("ignoto{n}@pec.example.it");
        let started = begin(id.clone()).await;
        if offers(&started, "email") && offers(&started, "sms") {
            unknown = Some(id);
            break;
        }
    }
    let unknown = unknown.expect("an unknown id offering a link and a code");
    let mut deltas: Vec<(String, &str, u64)> = Vec::new();
    for id in [user.to_string(), unknown] {
        for _ in 0..2 {
            let started = begin(id.clone()).await;
            let recovery = started["recovery_id"].as_str().unwrap().to_string();
            for send in ["email", "sms"] {
                let before = quiet_head(&served).await;
                let res = post(format!("/v1/recovery/{recovery}/{send}"), None, json!({})).await;
                assert_eq!(res.status(), 202, "{id} {send}");
                let after = quiet_head(&served).await;
                deltas.push((id.clone(), send, after - before));
            }
        }
    }
    let real: Vec<u64> = deltas.iter().filter(|d| d.0 == user).map(|d| d.2).collect();
    let decoy: Vec<u64> = deltas.iter().filter(|d| d.0 != user).map(|d| d.2).collect();
    assert_eq!(real, vec![2, 2, 2, 2], "{deltas:?}");
    assert_eq!(decoy, real, "{deltas:?}");
}

/// SEC-9: logins and recovery calls that write to the log are capped service-wide, alike for a
/// real account and an unknown id; a refused call writes nothing.
#[tokio::test]
async fn sec_9_anonymous_writes_are_capped_service_wide_alike_for_every_id() {
    let mut file = roomy();
    file.limits.anonymous_writes_per_minute = 6;
    let app = TestApp::spawn_with(file).await;
    // Opening and readying the account (operator calls and holder commands) are not capped;
    // the two logins it makes are.
    let user = "limite@pec.example.it";
    // Junk from one address (bodies that are not JSON) does not use the cap up.
    for _ in 0..20 {
        let res = app
            .client
            .post(format!("{}/v1/sessions", app.base))
            .header("content-type", "application/json")
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    recoverable(&app, user).await;
    let unknown = "nessuno@pec.example.it";
    for id in [user, unknown] {
        let res = app.try_login(id, "Sbagliata!123").await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    }
    start(&app, unknown).await;
    start(&app, user).await;
    let head = app.settled_head().await;
    for id in [user, unknown] {
        let res = app.try_login(id, "Sbagliata!123").await;
        assert!(res.headers().contains_key("retry-after"));
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        let res = app
            .post(
                "/v1/recovery",
                None,
                json!({ "user_id": id, "captcha_token": "x" }),
            )
            .await;
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    }
    assert_eq!(
        app.settled_head().await,
        head,
        "a refused call writes nothing"
    );
    // A minute later, calls go through again.
    app.advance(Duration::minutes(1));
    let res = app.try_login(unknown, "Sbagliata!123").await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
}

/// RC-7: an operator resets `user`'s password after a signed form.
pub(crate) async fn operator_reset(app: &TestApp, user: &str) -> reqwest::Response {
    app.post(
        &format!("/v1/admin/accounts/{user}/password-reset"),
        Some(OPERATOR_KEY),
        json!({ "form_reference": "MOD-2026/0042" }),
    )
    .await
}

/// The temporary password of an opening or an operator reset.
pub(crate) async fn temporary_password(res: reqwest::Response) -> String {
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    body["temporary_password"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_answer_that_carries_a_secret_says_no_store_sec_8() {
    let app = TestApp::spawn_with(roomy()).await;
    let user = "cache@pec.example.it";
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "mailbox", "user_id": user, "contact_email": "titolare@example.it" }),
        )
        .await;
    assert_no_store(&res, "the opening's temporary password");
    let temporary = temporary_password(res).await;
    app.remember_secret(&temporary);
    let res = app.try_login(user, &temporary).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_no_store(&res, "the session token");
    let body: Value = res.json().await.unwrap();
    app.remember_secret(body["session_token"].as_str().unwrap());

    let user = "cache-recovery@pec.example.it";
    recoverable(&app, user).await;
    let started = start(&app, user).await;
    let res = call(&app, &started, "/sms", json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let code = newest_code(&app).await;
    let res = call(&app, &started, "/sms/verify", json!({ "code": code })).await;
    assert_no_store(&res, "the reset token of a right code");
    app.remember_secret(&reset_token(res).await);
    let started = start(&app, user).await;
    let res = call(&app, &started, "/question", json!({ "answer": ANSWER })).await;
    assert_no_store(&res, "the reset token of a right answer");
    app.remember_secret(&reset_token(res).await);
    let res = operator_reset(&app, user).await;
    assert_no_store(&res, "an operator reset's temporary password");
    app.remember_secret(&temporary_password(res).await);
    let res = app.get("/v1/no-such-endpoint", None).await;
    assert_no_store(&res, "a problem, like every answer");
}

/// SEC-2: the hourly limit of recovery messages per user id is counted in the log: a restart
/// (or another API node) does not reset it, for a real account and an unknown id alike.
#[tokio::test]
async fn sec_2_the_hourly_message_limit_is_in_the_log_and_survives_a_restart() {
    let mut file = roomy();
    file.limits.recovery_messages_per_user_per_hour = 5;
    let app = TestApp::spawn_with(file.clone()).await;
    let user = "messaggi@pec.example.it";
    recoverable(&app, user).await;
    let unknown = unknown_offering(&app, custode_domain::recovery::RecoveryMethod::Email);
    let mut started = Vec::new();
    for id in [user, unknown.as_str()] {
        let recovery = start(&app, id).await;
        for _ in 0..5 {
            let res = call(&app, &recovery, "/email", json!({})).await;
            assert_eq!(res.status(), StatusCode::ACCEPTED);
        }
        let res = call(&app, &recovery, "/email", json!({})).await;
        assert!(res.headers().contains_key("retry-after"));
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        started.push(recovery);
    }
    app.quiesce().await;
    let (data_dir, dir, clock) = app.stop().await;
    let app = TestApp::start(&data_dir, file, clock).await;
    for recovery in &started {
        let res = call(&app, recovery, "/email", json!({})).await;
        expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    }
    app.advance(Duration::minutes(61));
    for recovery in &started {
        let res = call(&app, recovery, "/email", json!({})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    drop(app);
    drop(dir);
}

/// SEC-8: a lockout moves the log's head alike for an unknown id and for an account without a
/// contact email (an identity with only its mobile): the account's lockout notice goes by SMS
/// (and is recorded as sent), as a decoy's lockout is followed by its mirror.
#[tokio::test]
async fn sec_8_a_lockout_moves_the_head_alike_for_an_identity_with_only_a_mobile() {
    let app = TestApp::spawn_with(roomy()).await;
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "identity", "user_id": "solo.mobile", "contact_mobile": "+39 333 222 1111" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    app.remember_secret(body["temporary_password"].as_str().unwrap());
    let mut deltas = Vec::new();
    for id in ["solo.mobile", "nessuno.affatto"] {
        let before = app.settled_head().await;
        for _ in 0..10 {
            let res = app.try_login(id, "Sbagliata!123").await;
            expect_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
        }
        eventually(
            StdDuration::from_secs(10),
            "the lockout's notice or mirror",
            || app.log_head() >= before + 12,
        )
        .await;
        deltas.push(app.settled_head().await - before);
    }
    assert_eq!(deltas, vec![12, 12]);
    let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap();
    assert!(sms.lines().any(|l| l.contains("+393332221111")), "{sms}");
}

/// SEC-7, SEC-8: an API node whose published delivery keys are gone (a worker not started
/// yet, a copy of `*.pub` that lags) turns a real account's recovery message away (503), and a
/// decoy's alike: otherwise the 503 alone would tell which user ids have accounts (found from
/// outside: the decoy answered 202).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_delivery_key_a_real_recovery_and_a_decoy_answer_alike_sec_8() {
    let dir = tempfile::tempdir().unwrap();
    let clock = custode_commands::clock::ManualClock::new(chrono::Utc::now());
    crate::helpers::publish_delivery_keys(dir.path(), custode_commands::clock::Clock::now(&clock));
    let app = TestApp::start_with(dir.path(), file_config(), clock, None, Some("none")).await;
    let user = "senzachiave@pec.example.it";
    app.ready_mailbox(user).await;
    for entry in std::fs::read_dir(dir.path().join("keys/delivery")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let real = start(&app, user).await;
    let decoy = start(&app, "nessuno.qui@pec.example.it").await;
    for started in [&real, &decoy] {
        let offered = |method: &str| {
            started["methods"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["method"] == method)
        };
        let tail = if offered("email") { "/email" } else { "/sms" };
        assert!(offered(&tail[1..]), "{started}");
        let res = call(&app, started, tail, json!({})).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{started}");
        assert_eq!(res.headers()["retry-after"], "5");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/busy");
    }
}
