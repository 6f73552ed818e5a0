//! The foundation's acceptance journey: an operator opens a mailbox, the holder logs in with
//! the temporary password, meets every PW-1 rule, changes the password, sets recovery
//! information and sees it masked on the account page, then logs out.

use crate::helpers::{expect_problem, problem, rules, TestApp, OPERATOR_KEY};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const USER: &str = "mario.rossi@pec.example.it";
const NEW_PASSWORD: &str = "Quercia#Lenta-42";
const ANSWER: &str = "Il Gatto   Ciuffettino";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_goes_from_temporary_credentials_to_a_protected_account() {
    let app = TestApp::spawn().await;
    app.remember_secret(NEW_PASSWORD);
    app.remember_secret("Ciuffettino");

    // The operator opens the mailbox; the temporary password is shown once.
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "mailbox", "user_id": USER, "plan": "pro", "contact_email": "mario@example.it" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(res.headers().contains_key("custode-position"));
    let opened: Value = res.json().await.unwrap();
    let temporary = opened["temporary_password"].as_str().unwrap().to_string();
    app.remember_secret(&temporary);

    // Login with it: both required actions come with the session.
    let res = app.try_login(&USER, &temporary).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let session: Value = res.json().await.unwrap();
    assert_eq!(
        session["required_actions"],
        json!(["change_password", "set_recovery_info"])
    );
    let first_token = session["session_token"].as_str().unwrap().to_string();
    app.remember_secret(&first_token);

    // Each PW-1 rule is refused with its own id.
    let cases = [
        ("Mario.Rossi-Tram4!", "PW-1.user_id"),
        ("Aa1!x", "PW-1.min_length"),
        ("tram4-colle!verde", "PW-1.case"),
        ("Tram-Colle!Verde", "PW-1.digit"),
        ("Tram4Colle9Verde", "PW-1.special"),
        ("Tr4m-Colle!Veeerde", "PW-1.repeat"),
    ];
    for (candidate, rule) in cases {
        let res = app
            .change_password(&first_token, &temporary, candidate)
            .await;
        let (status, body) = problem(res).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["type"], "/problems/password-policy");
        assert!(
            rules(&body).contains(&rule.to_string()),
            "{candidate}: {body}"
        );
    }

    // The change itself; the session that asked for it ends with every other.
    let res = app
        .change_password(&first_token, &temporary, NEW_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expect_problem(
        app.get("/v1/account", Some(&first_token)).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    // The temporary password no longer works.
    let res = app.try_login(&USER, &temporary).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let res = app.try_login(&USER, &NEW_PASSWORD).await;
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["required_actions"], json!(["set_recovery_info"]));
    let token = session["session_token"].as_str().unwrap().to_string();
    app.remember_secret(&token);

    // Recovery information: neither email nor mobile is refused (RI-2) and nothing changes.
    let before = app.settled_head().await;
    let res = app
        .request(
            Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "security_question": "Nome del primo gatto?", "security_answer": ANSWER, "security_answer_repeat": ANSWER })),
        )
        .await;
    let (status, body) = problem(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(rules(&body), vec!["RI-2"]);
    assert_eq!(app.log_head(), before);

    // An address a mail server would refuse (a dot ending its local part) is refused here,
    // not kept to become a dead letter at the first notice; nothing changes.
    let res = app
        .request(
            Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "email": "marisa.@inwind.it" })),
        )
        .await;
    let (status, body) = problem(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(app.log_head(), before);

    // The answer typed twice (compared after trimming, folding and collapsing spaces).
    let res = app
        .request(
            Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({
                "email": "marisa@inwind.it",
                "mobile": "+39 347 123 4512",
                "security_question": "Nome del primo gatto?",
                "security_answer": ANSWER,
                "security_answer_repeat": "il gatto ciuffettino",
            })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let saved: Value = res.json().await.unwrap();
    assert_eq!(
        saved["email"],
        json!({ "target": "*****sa@i*****.it", "verified": false })
    );

    // The account page: masked methods with badges, no required actions left.
    let page: Value = app
        .get("/v1/account", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["user_id"], USER);
    assert_eq!(page["kind"], "mailbox");
    assert_eq!(page["plan"], "pro");
    assert_eq!(page["state"], "active");
    assert_eq!(page["required_actions"], json!([]));
    assert_eq!(
        page["recovery"]["email"],
        json!({ "target": "*****sa@i*****.it", "verified": false })
    );
    assert_eq!(
        page["recovery"]["mobile"],
        json!({ "target": "+39 ***** **12", "verified": false })
    );
    assert_eq!(
        page["recovery"]["security_question"],
        json!({ "question": "Nome del primo gatto?" })
    );
    assert_eq!(
        page["mail_protocols"],
        json!({ "imap": true, "pop": true, "smtp": true })
    );
    let text = page.to_string();
    assert!(
        !text.contains("marisa") && !text.contains("3471234512"),
        "contacts are masked: {text}"
    );

    // Logout ends the session.
    let res = app
        .request(Method::DELETE, "/v1/sessions/current", Some(&token), None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, _) = problem(app.get("/v1/account", Some(&token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The log is one intact chain, and the data directory holds none of the typed secrets
    // (checked again when `app` is dropped).
    let report = app.state.log.verify_chain_blocking().unwrap();
    assert_eq!(report.first_mismatch, None);
    assert!(report.checked >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_of_the_last_five_passwords_can_be_chosen_again() {
    let app = TestApp::spawn().await;
    let (mut token, mut current) = app.ready_mailbox("storico@pec.example.it").await;
    let chosen = [
        "Primo#Giro-71",
        "Secondo#Giro-72",
        "Terzo#Giro-73",
        "Quarto#Giro-74",
    ];
    for next in chosen {
        app.remember_secret(next);
        let res = app.change_password(&token, &current, next).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        current = next.to_string();
        token = app.login("storico@pec.example.it", &current).await;
    }
    // The five most recent: the four above and the one set by ready_mailbox.
    for old in ["Tr4m-Colle!Verde", "Secondo#Giro-72", "Quarto#Giro-74"] {
        let res = app.change_password(&token, &current, old).await;
        let (status, body) = problem(res).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(rules(&body), vec!["PW-2.history"], "{old}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strength_meter_scores_and_lists_each_rule_without_storing_anything() {
    let app = TestApp::spawn().await;
    let before = app.log_head();
    let res = app
        .post(
            "/v1/password/strength",
            None,
            json!({ "password": "Quercia#Lenta-42", "user_id": USER }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert!(body["score"].as_u64().unwrap() >= 3);
    assert!(
        body["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["met"] == true),
        "{body}"
    );
    let weak: Value = app
        .post(
            "/v1/password/strength",
            None,
            json!({ "password": "mario.rossi" , "user_id": USER }),
        )
        .await
        .json()
        .await
        .unwrap();
    let unmet: Vec<&str> = weak["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["met"] == false)
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(
        unmet.contains(&"PW-1.user_id") && unmet.contains(&"PW-1.digit"),
        "{weak}"
    );
    assert_eq!(app.log_head(), before);
    app.remember_secret("Quercia#Lenta-42");
}
