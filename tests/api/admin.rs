//! Operator endpoints (ACC-1..4, SEC-4): opening accounts, duplicates, migrated mailboxes,
//! collaborators, the operator key.

use crate::helpers::{
    expect_problem, file_config, oneshot, phc, problem, rules, TestApp, OPERATOR_KEY,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_can_be_opened_once_whatever_its_case() {
    let app = TestApp::spawn().await;
    app.open_mailbox("unico@pec.example.it").await;
    let before = app.settled_head().await;
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "mailbox", "user_id": "UNICO@pec.example.it" }),
        )
        .await;
    expect_problem(res, StatusCode::CONFLICT, "user-id-taken").await;
    assert_eq!(app.log_head(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_openings_of_one_user_id_yield_exactly_one_account() {
    let app = TestApp::spawn().await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let req = app
            .client
            .post(format!("{}/v1/admin/accounts", app.base))
            .bearer_auth(OPERATOR_KEY)
            .json(&json!({ "kind": "identity", "user_id": "gara.identita", "contact_mobile": "+393470000002" }));
        tasks.push(tokio::spawn(req.send()));
    }
    let mut created = 0;
    for task in tasks {
        let res = task.await.unwrap().unwrap();
        match res.status() {
            StatusCode::CREATED => {
                created += 1;
                let body: Value = res.json().await.unwrap();
                app.remember_secret(body["temporary_password"].as_str().unwrap());
            }
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_view_shows_the_account_and_404_for_an_unknown_one() {
    let app = TestApp::spawn().await;
    let (account_id, _) = app.open_mailbox("vista@pec.example.it").await;
    let res = app
        .get(
            "/v1/admin/accounts/vista@pec.example.it",
            Some(OPERATOR_KEY),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["account_id"], account_id.as_str());
    assert_eq!(
        (
            body["kind"].as_str(),
            body["plan"].as_str(),
            body["state"].as_str()
        ),
        (Some("mailbox"), Some("pro"), Some("active"))
    );
    // Times are written as everywhere else in the API: UTC with `Z`.
    let created = body["created_at"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
    expect_problem(
        app.get(
            "/v1/admin/accounts/nessuno@pec.example.it",
            Some(OPERATOR_KEY),
        )
        .await,
        StatusCode::NOT_FOUND,
        "account-not-found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_need_the_operator_key_and_say_so_when_unset() {
    let app = TestApp::spawn().await;
    let body = json!({ "kind": "mailbox", "user_id": "chiave@pec.example.it" });
    for key in [None, Some("wrong-key")] {
        expect_problem(
            app.post("/v1/admin/accounts", key, body.clone()).await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await;
    }
    // A holder's session is not an operator key.
    let (token, _) = app.ready_mailbox("titolare@pec.example.it").await;
    let (status, _) = problem(
        app.post("/v1/admin/accounts", Some(&token), body.clone())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The two credentials that were not the key are counted for the operator; no credential
    // at all is not.
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("\ncustode_operator_key_refused_total 2\n"),
        "{metrics}"
    );

    let (data_dir, dir, clock) = app.stop().await;
    let mut config = custode::config::Config::resolve(
        file_config(),
        custode::config::Overrides {
            data_dir: Some(data_dir.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    config.operator_key = None;
    let app = custode::app::App::start(config, std::sync::Arc::new(clock))
        .await
        .unwrap();
    let router = custode::http::app(app.state.clone());
    let (status, _, problem_body) = oneshot(
        router,
        axum::http::Request::post("/v1/admin/accounts")
            .header("authorization", "Bearer anything")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem_body["type"], "/problems/operator-key-unset");
    drop(app);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_mailbox_logs_in_with_its_imported_password_and_need_not_change_it() {
    let app = TestApp::spawn().await;
    let password = "Migrata#Casella-9";
    app.remember_secret(password);
    // PW-5: a hash weaker than the floor is not stored, whatever its origin; nor a bcrypt one.
    let weak = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(1_024, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(
                password.as_bytes(),
                &SaltString::generate(&mut rand::rngs::OsRng),
            )
            .unwrap()
            .to_string()
    };
    let before = app.log_head();
    for imported in [
        weak,
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_string(),
    ] {
        let res = app
            .post(
                "/v1/admin/accounts",
                Some(OPERATOR_KEY),
                json!({ "kind": "mailbox", "user_id": "migrata@pec.example.it", "password_phc": imported }),
            )
            .await;
        let (status, body) = problem(res).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["rule"], "ACC-3", "{body}");
        assert_eq!(body["errors"][0]["field"], "password_phc", "{body}");
    }
    assert_eq!(app.log_head(), before);
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "mailbox", "user_id": "migrata@pec.example.it", "password_phc": phc(password) }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert!(body.get("temporary_password").is_none());
    let res = app.try_login(&"migrata@pec.example.it", &password).await;
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["required_actions"], json!(["set_recovery_info"]));
    app.remember_secret(session["session_token"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_are_each_named_and_nothing_is_opened() {
    let app = TestApp::spawn().await;
    let before = app.log_head();
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "identity", "user_id": "x y", "plan": "pro", "fiscal_code": "123", "contact_email": "nope" }),
        )
        .await;
    let (status, body) = problem(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        rules(&body),
        vec![
            "ACC-1.user_id",
            "ACC-1.plan",
            "ACC-1.fiscal_code",
            "ACC-1.contact_email",
            "ACC-1.contact_mobile"
        ]
    );
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "bank", "user_id": "a@b.it" }),
        )
        .await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request").await;
    assert_eq!(app.log_head(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collaborator_belongs_to_an_existing_mailbox_and_shows_on_its_page() {
    let app = TestApp::spawn().await;
    let (token, _) = app.ready_mailbox("studio@pec.example.it").await;
    let owner_id = app
        .get("/v1/account", Some(&token))
        .await
        .json::<Value>()
        .await
        .unwrap()["account_id"]
        .clone();
    let (status, body) = problem(
        app.post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "collaborator", "user_id": "segreteria.studio", "owner_id": "01890000-0000-7000-8000-000000000000" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(rules(&body), vec!["ACC-1.owner_id"]);
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "collaborator", "user_id": "segreteria.studio", "owner_id": owner_id }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    app.remember_secret(created["temporary_password"].as_str().unwrap());
    let page: Value = app
        .get("/v1/account", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["collaborators"][0]["user_id"], "segreteria.studio");
    assert_eq!(
        page["collaborators"][0]["collaborator_id"],
        created["account_id"]
    );
}
