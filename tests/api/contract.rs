//! The HTTP contract: the OpenAPI document checked in under `schemas/` is what is served, it
//! lists exactly the routes the router has and exactly the problem types the code can answer,
//! and real answers validate against its response schemas. Every event type has its schema,
//! and every password or answer hash a schema holds is one the relay removes (SEC-9).

use crate::helpers::{expect_problem, load_json, TestApp, OPERATOR_KEY};
use crate::processes::metric_value;
use custode::http::problem::PROBLEMS;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn openapi() -> Value {
    load_json("schemas/openapi.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_checked_in_one() {
    let app = TestApp::spawn().await;
    let res = app.get("/v1/openapi.json", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let served: Value = res.json().await.unwrap();
    assert_eq!(served, openapi());
    assert_eq!(served["openapi"], "3.1.0");
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let doc = openapi();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = custode::http::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);
}

#[test]
fn the_document_lists_exactly_the_problem_types_the_code_answers() {
    let doc = openapi();
    let documented: BTreeSet<(String, u64)> = doc["x-problem-types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["type"].as_str().unwrap().to_string(),
                p["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let coded: BTreeSet<(String, u64)> = PROBLEMS
        .iter()
        .map(|(slug, status, _)| (format!("/problems/{slug}"), u64::from(*status)))
        .collect();
    assert_eq!(documented, coded);
}

/// Each response's `x-problems` (what a client can switch on) names every problem type its
/// description explains, each of them one the code answers with that response's status.
#[test]
fn each_response_lists_the_problem_types_its_description_names() {
    let doc = openapi();
    let known: BTreeSet<(String, String)> = PROBLEMS
        .iter()
        .map(|(slug, status, _)| (slug.to_string(), status.to_string()))
        .collect();
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                let description = response["description"].as_str().unwrap_or_default();
                let Some((_, types)) = description.split_once("Problem types:") else {
                    continue;
                };
                let listed: BTreeSet<&str> = response["x-problems"]
                    .as_array()
                    .map(|l| l.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                // Each explained type is written `` `slug`: ``.
                for named in types.split('`').skip(1).step_by(2) {
                    let explained = types.contains(&format!("`{named}`:"));
                    if explained
                        && known.iter().any(|(slug, _)| slug == named)
                        && !listed.contains(format!("/problems/{named}").as_str())
                    {
                        wrong.push(format!(
                            "{method} {path} {status}: {named} not in x-problems"
                        ));
                    }
                }
                for slug in &listed {
                    let slug = slug.trim_start_matches("/problems/");
                    if !known.contains(&(slug.to_string(), status.clone())) {
                        wrong.push(format!(
                            "{method} {path} {status}: {slug} has another status"
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn every_event_type_has_a_schema() {
    let mut types: Vec<&str> = custode_domain::account::ACCOUNT_EVENT_TYPES.to_vec();
    types.push("UserIdClaimed");
    types.extend_from_slice(custode_domain::notice::NOTICE_EVENT_TYPES);
    types.extend_from_slice(custode_domain::recovery::RECOVERY_EVENT_TYPES);
    types.extend_from_slice(custode_domain::subject::SUBJECT_EVENT_TYPES);
    types.extend_from_slice(custode_domain::hardware_token::HARDWARE_TOKEN_EVENT_TYPES);
    types.extend_from_slice(custode_domain::access::ACCESS_EVENT_TYPES);
    for event_type in types {
        // AU-4: every version a type was ever written with keeps its schema.
        for version in 1..=custode_domain::envelope::current_version(event_type) {
            let schema = load_json(&format!("schemas/events/{event_type}.v{version}.json"));
            assert!(
                jsonschema::validator_for(&schema).is_ok(),
                "{event_type} v{version}"
            );
        }
    }
}

/// SEC-9: a payload field whose schema says it holds a PHC string (a password or answer hash)
/// is one the relay removes; a new one must join `VERIFICATION_FIELDS` to stay off the bus.
#[test]
fn every_password_or_answer_hash_of_an_event_is_kept_off_the_bus_sec_9() {
    let mut phc_fields = BTreeSet::new();
    for entry in std::fs::read_dir(crate::helpers::repo_path("schemas/events")).unwrap() {
        let path = entry.unwrap().path();
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            if property["pattern"] == "^\\$" {
                phc_fields.insert(name.clone());
            }
        }
    }
    let removed: BTreeSet<String> = custode_domain::secret::VERIFICATION_FIELDS
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(phc_fields, removed);
}

/// SEC-9, AP-8: a payload field whose schema says it holds a seal under the service's
/// long-lived key (`key_id` `service-<n>`) is one the relay blanks; a new one must join
/// `SEALED_SECRET_FIELDS` to stay off the bus.
#[test]
fn every_sealed_second_factor_secret_is_kept_off_the_bus_sec_9() {
    let mut sealed = BTreeSet::new();
    for entry in std::fs::read_dir(crate::helpers::repo_path("schemas/events")).unwrap() {
        let path = entry.unwrap().path();
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            // The property itself, or the definition it refers to.
            let definition = property["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/$defs/"))
                .map(|d| &schema["$defs"][d]);
            if [Some(property), definition]
                .into_iter()
                .flatten()
                .any(|p| p.to_string().contains("^service-"))
            {
                sealed.insert(name.clone());
            }
        }
    }
    let blanked: BTreeSet<String> = custode_domain::secret::SEALED_SECRET_FIELDS
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(sealed, blanked);
}

/// Validates `body` against the response schema the document gives for `method path status`.
fn assert_matches_document(method: &str, path: &str, status: u16, body: &Value) {
    let doc = openapi();
    let content = &doc["paths"][path][method]["responses"][status.to_string()]["content"];
    let media = content
        .as_object()
        .and_then(|c| c.values().next())
        .unwrap_or_else(|| panic!("{method} {path} {status} is not documented"));
    let mut root = doc.clone();
    root.as_object_mut()
        .unwrap()
        .insert("$ref".into(), json!(format!("#/x-check")));
    root.as_object_mut()
        .unwrap()
        .insert("x-check".into(), media["schema"].clone());
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_validate_against_the_document() {
    let app = TestApp::spawn().await;
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "mailbox", "user_id": "contratto@pec.example.it" }),
        )
        .await;
    let opened: Value = res.json().await.unwrap();
    app.remember_secret(opened["temporary_password"].as_str().unwrap());
    assert_matches_document("post", "/v1/admin/accounts", 201, &opened);

    let res = app
        .try_login(&"contratto@pec.example.it", &opened["temporary_password"])
        .await;
    let session: Value = res.json().await.unwrap();
    app.remember_secret(session["session_token"].as_str().unwrap());
    assert_matches_document("post", "/v1/sessions", 201, &session);

    let (token, _) = app.ready_mailbox("pagina@pec.example.it").await;
    let page: Value = app
        .get("/v1/account", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_matches_document("get", "/v1/account", 200, &page);

    let admin: Value = app
        .get(
            "/v1/admin/accounts/pagina@pec.example.it",
            Some(OPERATOR_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_matches_document("get", "/v1/admin/accounts/{user_id}", 200, &admin);

    let res = app
        .post(
            "/v1/admin/access-events",
            Some(OPERATOR_KEY),
            json!({ "user_id": "pagina@pec.example.it", "service": "INPS", "outcome": "failure", "reason": "wrong_password", "client_ip": "203.0.113.9", "at": chrono::Utc::now().to_rfc3339() }),
        )
        .await;
    assert_eq!(res.status(), 202);
    let position = crate::helpers::position_of(&res);
    let history: Value = app
        .get(
            &format!("/v1/account/access-history?limit=2&after={position}"),
            Some(&token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(history["next_cursor"].is_string(), "{history}");
    assert_matches_document("get", "/v1/account/access-history", 200, &history);

    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "mobile": "3471234567" })),
        )
        .await;
    let recovery: Value = res.json().await.unwrap();
    assert_matches_document("put", "/v1/account/recovery-info", 200, &recovery);

    let strength: Value = app
        .post("/v1/password/strength", None, json!({ "password": "abc" }))
        .await
        .json()
        .await
        .unwrap();
    assert_matches_document("post", "/v1/password/strength", 200, &strength);

    let questions: Value = app
        .get("/v1/recovery-info/questions?language=en", None)
        .await
        .json()
        .await
        .unwrap();
    assert_matches_document("get", "/v1/recovery-info/questions", 200, &questions);

    let health: Value = app.get("/healthz", None).await.json().await.unwrap();
    assert_matches_document("get", "/healthz", 200, &health);
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_matches_document("get", "/readyz", 200, &ready);

    let res = app.try_login(&"x@y.it", &"nope").await;
    let refused: Value = res.json().await.unwrap();
    assert_matches_document("post", "/v1/sessions", 401, &refused);
    let res = app
        .post(
            "/v1/account/password",
            Some(&token),
            json!({ "current_password": "Tr4m-Colle!Verde", "new_password": "a", "new_password_repeat": "b" }),
        )
        .await;
    let policy: Value = res.json().await.unwrap();
    assert_matches_document("post", "/v1/account/password", 422, &policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggested_questions_come_in_either_language_and_nothing_else() {
    let app = TestApp::spawn().await;
    let en: Value = app
        .get("/v1/recovery-info/questions?language=en", None)
        .await
        .json()
        .await
        .unwrap();
    let it: Value = app
        .get("/v1/recovery-info/questions", None)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(en["questions"], it["questions"]);
    expect_problem(
        app.get("/v1/recovery-info/questions?language=fr", None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_show_the_log_and_read_model_positions() {
    let app = TestApp::spawn().await;
    app.open_mailbox("metriche@pec.example.it").await;
    app.quiesce().await;
    let _ = app.get("/v1/nothing", None).await;
    // SEC-8: not on the public listener; on the operator's.
    let res = app.get("/metrics", None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app.metrics().await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let head = app.log_head();
    assert!(
        text.contains(&format!("custode_log_head_position {head}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("custode_read_models_applied_position {head}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("custode_access_history_applied_position {head}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "custode_worker_handled_position{{worker=\"mailer\"}} {head}"
        )),
        "{text}"
    );
    assert!(text.contains(r#"custode_http_requests_total{route="/v1/admin/accounts",method="POST",status="201"} 1"#), "{text}");
    assert!(
        text.contains(
            r#"custode_http_requests_total{route="(unmatched)",method="GET",status="404"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains("custode_log_commits_total "));
    // The opening was synced: the disk's time is there to see.
    assert!(
        metric_value::<u64>(&text, "custode_log_syncs_total").is_some_and(|n| n >= 1),
        "{text}"
    );
    for seconds in [
        "custode_log_sync_seconds_total",
        "custode_log_commit_seconds_total",
    ] {
        assert!(
            metric_value::<f64>(&text, seconds).is_some_and(|s| s > 0.0),
            "{seconds}: {text}"
        );
    }
}
