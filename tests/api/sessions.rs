//! Sessions (SEC-3): the same refusal for an unknown user and a wrong password, idle and
//! absolute expiry, step-up for sensitive changes, survival across restarts, parallel logins.

use crate::helpers::{expect_problem, file_config, problem, TestApp};
use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.open_mailbox("esiste@pec.example.it").await;
    let before = app.settled_head().await;
    let wrong = app
        .try_login(&"esiste@pec.example.it", &"Sbagliata#1")
        .await;
    let unknown = app
        .try_login(&"nessuno@pec.example.it", &"Sbagliata#1")
        .await;
    let (wrong_status, wrong_body) = problem(wrong).await;
    let (unknown_status, unknown_body) = problem(unknown).await;
    assert_eq!(wrong_status, StatusCode::UNAUTHORIZED);
    assert_eq!((wrong_status, wrong_body), (unknown_status, unknown_body));
    // Each failed attempt is an event (the access history reads them): on the account's stream
    // for a real id, on the keyed hash's stream for an unknown one, so both write alike.
    let events = app.state.log.read_from_blocking(before, 10).unwrap();
    let written: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.category(), e.event_type.as_str()))
        .collect();
    assert_eq!(
        written,
        vec![
            ("account", "LoginFailed"),
            ("subject", "UnknownLoginFailed")
        ]
    );
    assert!(
        !events[1].stream.contains("nessuno"),
        "the log never names an unknown id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_after_an_idle_hour_but_activity_keeps_it_alive() {
    let app = TestApp::spawn().await;
    let (token, _) = app.ready_mailbox("inattivo@pec.example.it").await;
    for _ in 0..3 {
        app.advance(Duration::minutes(50));
        assert_eq!(
            app.get("/v1/account", Some(&token)).await.status(),
            StatusCode::OK
        );
    }
    app.advance(Duration::minutes(61));
    let (status, body) = problem(app.get("/v1/account", Some(&token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["detail"].as_str().unwrap().contains("idle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_after_24_hours_however_active() {
    let app = TestApp::spawn().await;
    let (token, _) = app.ready_mailbox("attivo@pec.example.it").await;
    for _ in 0..30 {
        app.advance(Duration::minutes(50));
        let _ = app.get("/v1/account", Some(&token)).await;
    }
    let (status, _) = problem(app.get("/v1/account", Some(&token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_session_must_confirm_the_password_before_changing_it() {
    let app = TestApp::spawn().await;
    let (token, password) = app.ready_mailbox("stepup@pec.example.it").await;
    app.advance(Duration::minutes(11));
    let next = "Faggio#Alto-77";
    app.remember_secret(next);
    let change =
        json!({ "current_password": password, "new_password": next, "new_password_repeat": next });
    let (status, body) = problem(
        app.post("/v1/account/password", Some(&token), change.clone())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["type"], "/problems/reauthentication-required");

    expect_problem(
        app.post(
            "/v1/sessions/current/reauth",
            Some(&token),
            json!({ "password": "Non#Questa-1" }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;

    let res = app
        .post(
            "/v1/sessions/current/reauth",
            Some(&token),
            json!({ "password": password }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.post("/v1/account/password", Some(&token), change).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_restart() {
    let app = TestApp::spawn().await;
    let (token, _) = app.ready_mailbox("riavvio@pec.example.it").await;
    let (data_dir, dir, clock) = app.stop().await;
    let app = TestApp::start(&data_dir, file_config(), clock).await;
    assert_eq!(
        app.get("/v1/account", Some(&token)).await.status(),
        StatusCode::OK
    );
    drop(app);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_logins_to_one_account_all_succeed() {
    let app = TestApp::spawn().await;
    let (_, password) = app.ready_mailbox("parallelo@pec.example.it").await;
    let mut logins = Vec::new();
    for _ in 0..8 {
        let req = app
            .client
            .post(format!("{}/v1/sessions", app.base))
            .json(&json!({ "user_id": "parallelo@pec.example.it", "password": password }));
        logins.push(tokio::spawn(req.send()));
    }
    for login in logins {
        let res = login.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        app.remember_secret(body["session_token"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_unknown_bearer_tokens_are_refused_alike() {
    let app = TestApp::spawn().await;
    for token in ["", "abc", &"A".repeat(43), &"é".repeat(10)] {
        expect_problem(
            app.get("/v1/account", Some(token)).await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await;
    }
    let (status, _) = problem(
        app.request(Method::DELETE, "/v1/sessions/current", None, None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
