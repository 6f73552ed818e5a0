//! Issue 22's read path: `GET /v1/account` (a session's lookup and the whole account page from
//! the read models) from 64 keep-alive connections, against `GET /healthz` of the same server
//! in the same run (target: ≥ 0.5× its rate). The load comes from raw TCP connections in the
//! same process (see `common::raw_load`), so the two cores mostly serve.
//!
//! `cargo bench --bench account_page`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const OPERATOR_KEY: &str = "bench-operator-key-0123456789";
const CONNECTIONS: usize = 64;
const RUN: Duration = Duration::from_secs(5);

fn raw_get(addr: &str, path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").into_bytes()
}

fn main() {
    let rt = common::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // 64 connections from one address stand for 64 holders: SEC-9's per-address share
        // (32 by default) is widened to let them all in.
        let mut file = custode::config::FileConfig::default();
        file.http.max_concurrent_per_address = CONNECTIONS;
        let (base, _app, _clock) = common::serve_app_with(dir.path(), OPERATOR_KEY, file).await;
        let addr = base.trim_start_matches("http://").to_string();
        let client = reqwest::Client::new();
        let call = |method: reqwest::Method, path: &str, token: Option<&str>, body: Value| {
            let mut req = client.request(method, format!("{base}{path}")).json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send()
        };
        let opened: Value = call(reqwest::Method::POST, "/v1/admin/accounts", Some(OPERATOR_KEY), json!({ "kind": "mailbox", "user_id": "lettore@pec.example.it", "plan": "pro", "contact_email": "lettore@example.it" }))
            .await.unwrap().json().await.unwrap();
        let temporary = opened["temporary_password"].as_str().unwrap().to_string();
        let session: Value = call(reqwest::Method::POST, "/v1/sessions", None, json!({ "user_id": "lettore@pec.example.it", "password": temporary }))
            .await.unwrap().json().await.unwrap();
        let token = session["session_token"].as_str().unwrap().to_string();
        let password = "Tr4m-Colle!Verde";
        let res = call(reqwest::Method::POST, "/v1/account/password", Some(&token), json!({ "current_password": temporary, "new_password": password, "new_password_repeat": password })).await.unwrap();
        assert_eq!(res.status(), 204);
        let session: Value = call(reqwest::Method::POST, "/v1/sessions", None, json!({ "user_id": "lettore@pec.example.it", "password": password }))
            .await.unwrap().json().await.unwrap();
        let token = session["session_token"].as_str().unwrap().to_string();
        let res = call(reqwest::Method::PUT, "/v1/account/recovery-info", Some(&token), json!({ "email": "lettore.recupero@example.org" })).await.unwrap();
        assert_eq!(res.status(), 200);

        println!("GET /v1/account vs GET /healthz, {CONNECTIONS} connections, {} s each, same server", RUN.as_secs());
        let health = Arc::new(raw_get(&addr, "/healthz", None));
        let page = Arc::new(raw_get(&addr, "/v1/account", Some(&token)));
        // Warm both up, then measure each.
        let _ = common::raw_load(&addr, CONNECTIONS, Duration::from_millis(500), page.clone()).await;
        let (health_rate, health_lat, health_bad) = common::raw_load(&addr, CONNECTIONS, RUN, health).await;
        let (page_rate, page_lat, page_bad) = common::raw_load(&addr, CONNECTIONS, RUN, page).await;
        assert_eq!(health_bad + page_bad, 0, "every request answered 2xx");
        println!("  GET /healthz     {health_rate:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms", common::pct(&health_lat, 0.5), common::pct(&health_lat, 0.99));
        println!("  GET /v1/account  {page_rate:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms", common::pct(&page_lat, 0.5), common::pct(&page_lat, 0.99));
        println!("  ratio {:.2}× /healthz (target ≥ 0.5×)", page_rate / health_rate);
    });
}
