//! SEC-5: bad input of every kind gets a clear problem, never a panic, and changes nothing.

use crate::helpers::{expect_problem, file_config, oneshot, problem, TestApp, OPERATOR_KEY};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Every endpoint that takes a JSON body, with the credential it needs.
async fn json_endpoints(app: &TestApp) -> Vec<(Method, &'static str, Option<String>)> {
    let (token, _) = app.ready_mailbox("robusto@pec.example.it").await;
    vec![
        (
            Method::POST,
            "/v1/admin/accounts",
            Some(OPERATOR_KEY.to_string()),
        ),
        (Method::POST, "/v1/sessions", None),
        (
            Method::POST,
            "/v1/sessions/current/reauth",
            Some(token.clone()),
        ),
        (
            Method::PUT,
            "/v1/account/recovery-info",
            Some(token.clone()),
        ),
        (Method::POST, "/v1/account/password", Some(token.clone())),
        (Method::POST, "/v1/password/strength", None),
    ]
}

async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_problems_and_change_nothing() {
    let app = TestApp::spawn().await;
    let endpoints = json_endpoints(&app).await;
    let before = app.settled_head().await;
    let oversized = format!("{{\"password\":\"{}\"}}", "x".repeat(70 * 1024)).into_bytes();
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "/problems/malformed-json"),
        (b"".to_vec(), StatusCode::BAD_REQUEST, "/problems/malformed-json"),
        (b"[1,2,3]".to_vec(), StatusCode::BAD_REQUEST, "/problems/malformed-json"),
        (b"\"a string\"".to_vec(), StatusCode::BAD_REQUEST, "/problems/malformed-json"),
        (vec![0xff, 0xfe, 0x00], StatusCode::BAD_REQUEST, "/problems/malformed-json"),
        (br#"{"user_id": 42, "password": ["x"], "kind": {}, "new_password": 1, "current_password": 2, "email": 3}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "/problems/invalid-request"),
        (oversized, StatusCode::PAYLOAD_TOO_LARGE, "/problems/body-too-large"),
    ];
    for (method, path, token) in &endpoints {
        for (body, status, kind) in &cases {
            let res = send_raw(&app, method.clone(), path, token.as_deref(), body.clone()).await;
            let (got, problem_body) = problem(res).await;
            assert_eq!(
                (got, problem_body["type"].as_str()),
                (*status, Some(*kind)),
                "{method} {path}"
            );
        }
    }
    assert_eq!(app.log_head(), before, "no bad request appended anything");
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_typed_secret_is_not_echoed_back() {
    let app = TestApp::spawn().await;
    let res = app.try_login(&"a@b.it", &987654321).await;
    let (status, body) = problem(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!body.to_string().contains("987654321"), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("password"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_wait_for_their_position_or_answer_503_with_retry_after() {
    let mut file = file_config();
    file.http.read_wait_ms = 200;
    let app = TestApp::spawn_with(file).await;
    let (token, _) = app.ready_mailbox("attesa@pec.example.it").await;
    let head = app.settled_head().await;
    let res = app
        .get(&format!("/v1/account?after={head}"), Some(&token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // A position the log has not reached cannot come from a command's answer: no waiting.
    expect_problem(
        app.get(&format!("/v1/account?after={}", head + 1000), Some(&token))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
    )
    .await;

    // A position the log has but the read model has not applied: wait, then 503. A projector
    // that is stuck is simulated by a state whose applied position never moves.
    let mut stuck = (*app.state).clone();
    let (_never, applied) = tokio::sync::watch::channel(0u64);
    stuck.applied = applied.clone();
    stuck.history_applied = applied.clone();
    let stuck = custode::app::AppState::from(stuck);
    let page_after = |state: custode::app::AppState| {
        oneshot(
            custode::http::app(state),
            axum::http::Request::get(format!("/v1/account?after={head}"))
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
    };
    let (status, headers, body) = page_after(stuck).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["type"], "/problems/not-ready");
    // The access history alone trailing (the projector's second lane): its own page waits for
    // it; the account page, which shows a command's changes from the other read models, does
    // not.
    let mut trailing = (*app.state).clone();
    trailing.history_applied = applied;
    let trailing = custode::app::AppState::from(trailing);
    let (status, _, body) = oneshot(
        custode::http::app(trailing.clone()),
        axum::http::Request::get(format!("/v1/account/access-history?after={head}"))
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["type"], "/problems/not-ready");
    let (status, _, body) = page_after(trailing).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    expect_problem(
        app.get("/v1/account?after=minus-one", Some(&token)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_are_problems_too() {
    let app = TestApp::spawn().await;
    expect_problem(
        app.get("/v1/nothing-here", None).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.request(Method::PATCH, "/v1/sessions", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
}

/// SEC-9: a burst of logins meets a bounded hashing queue: those past it are answered `503`
/// with `Retry-After` at once, instead of waiting seconds in line, and `/healthz` keeps
/// answering within a second throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_9_a_login_burst_gets_quick_503s_and_healthz_keeps_answering() {
    let mut file = crate::helpers::file_config();
    file.http.hashing_queue = 2;
    file.limits.login_per_address_per_minute = 10_000;
    let app = TestApp::spawn_with(file).await;
    let health_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = {
        let base = app.base.clone();
        let done = health_done.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut slowest = std::time::Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let res = client.get(format!("{base}/healthz")).send().await.unwrap();
                assert_eq!(res.status(), 200);
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            slowest
        })
    };
    let burst: Vec<_> = (0..80)
        .map(|n| {
            let base = app.base.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let res = reqwest::Client::new()
                    .post(format!("{base}/v1/sessions"))
                    .json(&json!({ "user_id": format!("folla{n}@pec.example.it"), "password": "Sbagliata!123" }))
                    .send()
                    .await
                    .unwrap();
                let retry_after = res.headers().contains_key("retry-after");
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                (status, retry_after, body, started.elapsed())
            })
        })
        .collect();
    let mut busy = 0;
    for answer in burst {
        let (status, retry_after, body, elapsed) = answer.await.unwrap();
        match status {
            401 => {}
            503 => {
                busy += 1;
                assert!(retry_after, "{body}");
                assert_eq!(body["type"], "/problems/busy");
                assert!(
                    elapsed < std::time::Duration::from_secs(1),
                    "a 503 took {elapsed:?}"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    health_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let slowest = health.await.unwrap();
    assert!(busy > 0, "the queue never filled");
    assert!(
        slowest < std::time::Duration::from_secs(1),
        "/healthz took {slowest:?}"
    );
    // The burst over, logins are served again.
    let res = app.try_login(&"dopo@pec.example.it", &"x").await;
    assert_eq!(res.status(), 401);
}

/// SEC-9: a request past `http.request_timeout_ms` is answered `503` with `Retry-After`, and
/// past `http.max_concurrent_requests` at once the next is turned away at once; the probes are
/// never turned away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_9_requests_have_a_time_limit_and_a_concurrency_limit() {
    let mut file = file_config();
    file.http.request_timeout_ms = 300;
    file.http.max_concurrent_requests = 1;
    file.recovery.answer_floor_ms = 2_000;
    let app = TestApp::spawn_with(file).await;
    let (token, _) = app.ready_mailbox("paziente@pec.example.it").await;
    // A recovery start answers no sooner than its floor (2 s here): held until the time limit.
    let waiting = {
        let client = app.client.clone();
        let url = format!("{}/v1/recovery", app.base);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let res = client
                .post(url)
                .json(&json!({ "user_id": "chiunque@pec.example.it", "captcha_token": "x" }))
                .send()
                .await
                .unwrap();
            (
                res.status(),
                res.headers().contains_key("retry-after"),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let res = app.get("/v1/account", Some(&token)).await;
    assert!(res.headers().contains_key("retry-after"));
    expect_problem(res, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    let (status, retry_after, elapsed) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after);
    assert!(
        elapsed < std::time::Duration::from_millis(1_500),
        "{elapsed:?}"
    );
    // Its place is free again.
    assert_eq!(
        app.get("/v1/account", Some(&token)).await.status(),
        StatusCode::OK
    );
    // The operator tells the two 503s apart.
    assert_turned_away(&app, [("address", 0), ("capacity", 1), ("timeout", 1)]).await;
}

/// `/metrics` counts these requests turned away by SEC-9's bounds, by reason.
async fn assert_turned_away(app: &TestApp, counts: [(&str, u64); 3]) {
    let metrics = app.metrics_text().await;
    for (reason, count) in counts {
        let line = format!("custode_http_turned_away_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

/// SEC-9: the strength meter (zxcvbn) is limited per address, apart from the hashing pool.
#[tokio::test]
async fn sec_9_the_strength_meter_is_limited_per_address() {
    let mut file = file_config();
    file.limits.strength_per_address_per_minute = 3;
    let app = TestApp::spawn_with(file).await;
    let strength = || {
        app.post(
            "/v1/password/strength",
            None,
            json!({ "password": "qwertyuiop" }),
        )
    };
    for _ in 0..3 {
        assert_eq!(strength().await.status(), StatusCode::OK);
    }
    let res = strength().await;
    assert!(res.headers().contains_key("retry-after"));
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
}

/// SEC-9: one client address cannot take every place: past `http.max_concurrent_per_address`
/// its next request is turned away at once, while another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_9_one_address_cannot_take_every_place() {
    let mut file = file_config();
    file.http.max_concurrent_per_address = 1;
    file.recovery.answer_floor_ms = 1_500;
    file.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let app = TestApp::spawn_with(file).await;
    let held = {
        let client = app.client.clone();
        let url = format!("{}/v1/recovery", app.base);
        tokio::spawn(async move {
            client
                .post(url)
                .header("x-forwarded-for", "198.51.100.7")
                .json(&json!({ "user_id": "chiunque@pec.example.it", "captcha_token": "x" }))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let same = app
        .client
        .get(format!("{}/v1/openapi.json", app.base))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert!(same.headers().contains_key("retry-after"));
    expect_problem(same, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    let other = app
        .client
        .get(format!("{}/v1/openapi.json", app.base))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    // The operator sees why: one address's cap, not the service's nor a timeout.
    assert_turned_away(&app, [("address", 1), ("capacity", 0), ("timeout", 0)]).await;
}

/// SEC-9: a customer's many IPv6 /64s share a looser cap per /48 (four times the per-address
/// one), so one customer cannot take the whole pool; another site is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_9_one_ipv6_site_cannot_take_every_place() {
    let mut file = file_config();
    file.http.max_concurrent_per_address = 1;
    file.recovery.answer_floor_ms = 1_500;
    file.limits.recovery_starts_per_address_per_minute = 1_000;
    file.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let app = TestApp::spawn_with(file).await;
    let from = |address: String| {
        let client = app.client.clone();
        let url = format!("{}/v1/recovery", app.base);
        tokio::spawn(async move {
            client
                .post(url)
                .header("x-forwarded-for", address)
                .json(&json!({ "user_id": "chiunque@pec.example.it", "captcha_token": "x" }))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let held: Vec<_> = (0..4).map(|n| from(format!("2001:db8:0:{n}::1"))).collect();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let same_site = app
        .client
        .get(format!("{}/v1/openapi.json", app.base))
        .header("x-forwarded-for", "2001:db8:0:9::1")
        .send()
        .await
        .unwrap();
    expect_problem(same_site, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    let other_site = app
        .client
        .get(format!("{}/v1/openapi.json", app.base))
        .header("x-forwarded-for", "2001:db8:1:9::1")
        .send()
        .await
        .unwrap();
    assert_eq!(other_site.status(), StatusCode::OK);
    for request in held {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
}

/// A handler that panics (none should; this is the net under them) answers a 500 problem with
/// the service's headers instead of closing the connection without a word.
#[tokio::test]
async fn a_panicking_handler_answers_a_problem_instead_of_a_dropped_connection() {
    let router = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                if std::hint::black_box(true) {
                    panic!("a bug in a handler");
                }
                axum::Json(json!({}))
            }),
        )
        .route(
            "/fine",
            axum::routing::get(|| async { axum::Json(json!({ "fine": true })) }),
        )
        .layer(custode::http::panics_answered());
    let get = |path: &str| {
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let (status, headers, problem) = oneshot(router.clone(), get("/boom")).await;
    assert_eq!(status, 500);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem["status"], 500);
    assert!(
        !problem.to_string().contains("a bug in a handler"),
        "{problem}"
    );
    // The router goes on serving.
    let (status, _, body) = oneshot(router, get("/fine")).await;
    assert_eq!(status, 200);
    assert_eq!(body["fine"], true);
}

/// A running service and one raw keep-alive connection to it, with the address its `Host`
/// header names.
async fn raw_connection() -> (TestApp, String, tokio::net::TcpStream) {
    let app = TestApp::spawn().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    (app, addr, stream)
}

/// Sends `bytes` on `stream` (the end of a request) and reads the answer's status line.
async fn answered(stream: &mut tokio::net::TcpStream, bytes: &[u8], what: &str) -> String {
    tokio::io::AsyncWriteExt::write_all(stream, bytes)
        .await
        .unwrap();
    read_answer(stream).await.expect(what)
}

/// Reads one HTTP/1.1 answer (head and `Content-Length` body) off `stream`: its status line,
/// or `None` when the server closed the connection instead of answering.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return head.lines().next().map(str::to_string);
            }
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A request refused before its handler would read its body (no session here), whose body
/// arrives after its head: the connection stays usable for the next request, as keep-alive
/// promises. (hyper closes a connection whose request body was left unread, and a client
/// that already sent its next request on it gets no answer at all: seen once from
/// schemathesis.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_whose_body_comes_late_leaves_the_connection_usable() {
    use tokio::io::AsyncWriteExt;
    let (_app, addr, mut stream) = raw_connection().await;
    let body = br#"{"imap":true,"pop3":false,"smtp":true}"#;
    let head = format!(
        "PUT /v1/account/mail-protocols HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let first = answered(&mut stream, body, "an answer to the PUT").await;
    assert!(first.starts_with("http/1.1 401"), "{first}");
    let next = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let second = answered(
        &mut stream,
        next.as_bytes(),
        "the connection was closed after the refused request",
    )
    .await;
    assert!(second.starts_with("http/1.1 200"), "{second}");
}

/// The same with a chunked body (no declared length): refused early, the connection stays
/// usable; past 64 KiB, a `413` problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_read_whole_and_refused_past_the_limit() {
    use tokio::io::AsyncWriteExt;
    let (_app, addr, mut stream) = raw_connection().await;
    let head = format!(
        "PUT /v1/account/mail-protocols HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let body = br#"{"imap":true}"#;
    stream
        .write_all(format!("{:x}\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    let first = answered(&mut stream, b"\r\n0\r\n\r\n", "an answer to the PUT").await;
    assert!(first.starts_with("http/1.1 401"), "{first}");
    // Past the limit, in chunks of 8 KiB: refused as too large, whoever the caller is.
    let head = format!(
        "POST /v1/password/strength HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 8 * 1024];
    for _ in 0..9 {
        if stream.write_all(b"2000\r\n").await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let second = read_answer(&mut stream)
        .await
        .expect("an answer to the big body");
    assert!(second.starts_with("http/1.1 413"), "{second}");
}

/// A health probe that declares a body it never sends is answered at once: the probes are not
/// timed, so nothing may wait on their bodies (found by attacking the body reading above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_with_a_body_that_never_comes_is_answered_at_once() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    for head in [
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n"),
        format!("POST /readyz HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(3), read_answer(&mut stream))
                .await
                .expect("an answer within 3 s, body or not")
                .expect("an answer");
        assert!(
            answer.starts_with("http/1.1 2") || answer.starts_with("http/1.1 405"),
            "{answer}"
        );
    }
}

/// A caller that asks `Expect: 100-continue` and would be refused is refused before it is
/// invited to upload its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_caller_expecting_100_continue_is_not_invited_to_upload() {
    let (_app, addr, mut stream) = raw_connection().await;
    let head = format!(
        "PUT /v1/account/mail-protocols HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 13\r\nExpect: 100-continue\r\n\r\n"
    );
    let answer = answered(&mut stream, head.as_bytes(), "an answer").await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
}

/// A body declared past 64 KiB is never read: its `413` says the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_past_the_limit_is_refused_and_the_answer_says_the_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_app, addr, mut stream) = raw_connection().await;
    let head = format!(
        "POST /v1/password/strength HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 70000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes the connection after its answer")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains("body-too-large"), "{answer}");
}
