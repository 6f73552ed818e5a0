//! Starting the application for a test, driving it as a client would, and the checks every
//! test gets for free when its app is dropped: every event the test caused validates against
//! its JSON Schema, and no secret the test typed appears in any file of the data directory.

use chrono::{Duration, Utc};
use custode::app::{App, AppState};
use custode::config::{Config, FileConfig, Overrides};
use custode_commands::clock::ManualClock;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const OPERATOR_KEY: &str = "test-operator-key-0123456789";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub state: AppState,
    pub data_dir: PathBuf,
    /// Secrets typed during the test; none may appear in the data directory.
    pub secrets: Mutex<Vec<String>>,
    server: Option<tokio::task::JoinHandle<()>>,
    app: Option<App>,
    _dir: Option<tempfile::TempDir>,
}

/// SEC-7: what the delivering workers that share `data_dir`'s keys directory do before a pure
/// API node (`--workers none`) can seal: publish today's and tomorrow's public delivery keys.
pub fn publish_delivery_keys(data_dir: &Path, now: chrono::DateTime<chrono::Utc>) {
    custode_commands::delivery::DeliveryKeys::open(&data_dir.join("keys"))
        .expect("keys")
        .publish(now)
        .expect("published");
}

pub fn file_config() -> FileConfig {
    FileConfig::default()
}

/// `password` as an Argon2id PHC string, as a migration imports it (ACC-3).
pub fn phc(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("an Argon2 hash")
        .to_string()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(file_config()).await
    }

    pub async fn spawn_with(file: FileConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut app = Self::start(&data_dir, file, ManualClock::new(Utc::now())).await;
        app._dir = Some(dir);
        app
    }

    /// A fresh application whose workers run over JetStream at `nats_url`.
    pub async fn spawn_with_nats(file: FileConfig, nats_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut app = Self::start_with(
            &data_dir,
            file,
            ManualClock::new(Utc::now()),
            Some(nats_url),
            None,
        )
        .await;
        app._dir = Some(dir);
        app
    }

    /// Starts the application on an existing data directory (a restart).
    pub async fn start(data_dir: &Path, file: FileConfig, clock: ManualClock) -> Self {
        Self::start_with(data_dir, file, clock, None, None).await
    }

    pub async fn start_with(
        data_dir: &Path,
        file: FileConfig,
        clock: ManualClock,
        nats_url: Option<&str>,
        workers: Option<&str>,
    ) -> Self {
        let config = Config::resolve(
            file,
            Overrides {
                data_dir: Some(data_dir.to_path_buf()),
                listen: Some("127.0.0.1:0".parse().expect("addr")),
                operator_key: Some(OPERATOR_KEY.into()),
                nats: nats_url.map(String::from),
                workers: workers.map(String::from),
                ..Overrides::default()
            },
        )
        .expect("config");
        let app = App::start(config, Arc::new(clock.clone()))
            .await
            .expect("app starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = custode::http::app(app.state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            clock,
            state: app.state.clone(),
            data_dir: data_dir.to_path_buf(),
            secrets: Mutex::new(Vec::new()),
            server: Some(server),
            app: Some(app),
            _dir: None,
        }
    }

    /// Stops serving and releases the data directory, keeping its files.
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>, ManualClock) {
        if let Some(app) = &self.app {
            app.flush().await;
        }
        self.check_data_dir();
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.app.take();
        // Give the projector thread a moment to notice and let go of its files.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        (self.data_dir.clone(), self._dir.take(), self.clock.clone())
    }

    pub fn remember_secret(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_string());
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request sent")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    /// `POST /v1/account/password` with the new password typed twice alike.
    pub async fn change_password(&self, token: &str, current: &str, new: &str) -> Response {
        self.post(
            "/v1/account/password",
            Some(token),
            json!({ "current_password": current, "new_password": new, "new_password_repeat": new }),
        )
        .await
    }

    /// Opens a mailbox as the operator; returns (account id, temporary password).
    pub async fn open_mailbox(&self, user_id: &str) -> (String, String) {
        self.open_mailbox_with(user_id, json!({})).await
    }

    /// As [`TestApp::open_mailbox`], with `extra` fields in the opening's body.
    pub async fn open_mailbox_with(&self, user_id: &str, extra: Value) -> (String, String) {
        let mut body = json!({ "kind": "mailbox", "user_id": user_id, "plan": "pro", "contact_email": "titolare@example.it", "language": "it" });
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let res = self
            .post("/v1/admin/accounts", Some(OPERATOR_KEY), body)
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.expect("json");
        let temporary = body["temporary_password"]
            .as_str()
            .expect("temporary password")
            .to_string();
        self.remember_secret(&temporary);
        (
            body["account_id"].as_str().expect("id").to_string(),
            temporary,
        )
    }

    /// `POST /v1/sessions` with `user_id` and `password`, whatever it answers.
    pub async fn try_login(
        &self,
        user_id: impl serde::Serialize,
        password: impl serde::Serialize,
    ) -> Response {
        self.post(
            "/v1/sessions",
            None,
            json!({ "user_id": user_id, "password": password }),
        )
        .await
    }

    /// Logs in; returns the session token, panicking on refusal.
    pub async fn login(&self, user_id: &str, password: &str) -> String {
        let res = self.try_login(user_id, password).await;
        assert_eq!(res.status(), StatusCode::CREATED, "login of {user_id}");
        let body: Value = res.json().await.expect("json");
        let token = body["session_token"].as_str().expect("token").to_string();
        self.remember_secret(&token);
        token
    }

    /// An account that has done its required actions, with a live session: (token, password).
    pub async fn ready_mailbox(&self, user_id: &str) -> (String, String) {
        self.ready_mailbox_with(user_id, json!({})).await
    }

    /// As [`TestApp::ready_mailbox`], with `extra` fields in the opening's body.
    pub async fn ready_mailbox_with(&self, user_id: &str, extra: Value) -> (String, String) {
        let (_, temporary) = self.open_mailbox_with(user_id, extra).await;
        let token = self.login(user_id, &temporary).await;
        let password = "Tr4m-Colle!Verde";
        self.remember_secret(password);
        let res = self.change_password(&token, &temporary, password).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let token = self.login(user_id, password).await;
        let res = self
            .request(
                reqwest::Method::PUT,
                "/v1/account/recovery-info",
                Some(&token),
                Some(json!({ "email": "recupero@example.it" })),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        (token, password.to_string())
    }

    /// The operator listener's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let res = self.metrics().await;
        assert_eq!(res.status(), StatusCode::OK);
        let bytes = http_body_util::BodyExt::collect(res.into_body())
            .await
            .expect("the metrics body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("UTF-8 metrics")
    }

    /// `GET /metrics` on the operator's listener (SEC-8), in process.
    pub async fn metrics(&self) -> axum::response::Response {
        tower::ServiceExt::oneshot(
            custode::http::metrics_app(self.state.clone()),
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .expect("a request"),
        )
        .await
        .expect("the metrics router answers")
    }

    pub fn log_head(&self) -> u64 {
        self.state.log.head()
    }

    /// The log's head once the workers have settled (see [`TestApp::quiesce`]): a baseline
    /// that nothing moves on its own.
    pub async fn settled_head(&self) -> u64 {
        self.quiesce().await;
        self.log_head()
    }

    /// Waits until the workers have handled every event, delivered or given up on every
    /// notice, and recorded each outcome in the log: after it, nothing appends on its own.
    pub async fn quiesce(&self) {
        // Access records queued behind their answers first (AP-7).
        self.state.access_recorder.flush().await;
        let workers = self.state.workers.clone();
        let store = self.data_dir.join(custode_workers::store::STORE_FILE);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut calm = 0;
        while calm < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the workers did not settle"
            );
            let head = self.log_head();
            // The workers, and the read models with the access history.
            let handled = workers.iter().all(|w| *w.applied().borrow() >= head)
                && *self.state.history_applied.borrow() >= head;
            let open: i64 = if store.exists() {
                rusqlite::Connection::open(&store)
                    .and_then(|c| {
                        c.query_row("SELECT count(*) FROM outbox WHERE reported = 0", [], |r| {
                            r.get(0)
                        })
                    })
                    .unwrap_or(1)
            } else {
                0
            };
            calm = if handled && open == 0 { calm + 1 } else { 0 };
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Runs when the test ends well: schema-checks every event and greps for secrets.
    fn check_data_dir(&self) {
        validate_events(&self.data_dir);
        let secrets = self.secrets.lock().unwrap().clone();
        assert_no_secret_in(&self.data_dir, &secrets);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.app.is_some() {
            self.check_data_dir();
        }
    }
}

pub async fn problem(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = res.json().await.expect("problem body is JSON");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(
        body["status"].as_u64(),
        Some(u64::from(status.as_u16())),
        "{body}"
    );
    (status, body)
}

/// A problem of the given status and `/problems/<slug>` type; returns its body.
pub async fn expect_problem(res: Response, status: StatusCode, slug: &str) -> Value {
    let (got, body) = problem(res).await;
    assert_eq!(
        (got, body["type"].as_str()),
        (status, Some(format!("/problems/{slug}").as_str())),
        "{body}"
    );
    body
}

/// Sends `request` to `router` without a socket; returns the status, headers and JSON body.
pub async fn oneshot(
    router: axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let res = tower::ServiceExt::oneshot(router, request)
        .await
        .expect("router answers");
    let (parts, body) = res.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).expect("JSON body");
    (parts.status, parts.headers, json)
}

/// The rule ids a 422 problem lists.
pub fn rules(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["rule"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn load_json(relative: &str) -> Value {
    let text =
        std::fs::read_to_string(repo_path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Every event in the data directory's log validates: the envelope against
/// `schemas/events/envelope.v1.json`, the payload against `<Type>.v<N>.json`.
pub fn validate_events(data_dir: &Path) {
    let path = data_dir.join("events.db");
    if !path.exists() {
        return;
    }
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open log");
    let envelope = jsonschema::validator_for(&load_json("schemas/events/envelope.v1.json"))
        .expect("envelope schema");
    let mut stmt = conn
        .prepare(
            "SELECT position, event_id, stream, version, type, schema_version, occurred_at, actor_kind, actor_id, \
             correlation_id, causation_id, payload, hash FROM events ORDER BY position",
        )
        .expect("query");
    let rows = stmt
        .query_map([], |r| {
            let actor_id: Option<String> = r.get(8)?;
            let mut actor = json!({ "kind": r.get::<_, String>(7)? });
            if let Some(id) = actor_id {
                actor["id"] = json!(id);
            }
            Ok(json!({
                "position": r.get::<_, i64>(0)?, "event_id": r.get::<_, String>(1)?, "stream": r.get::<_, String>(2)?,
                "version": r.get::<_, i64>(3)?, "type": r.get::<_, String>(4)?, "schema_version": r.get::<_, i64>(5)?,
                "occurred_at": r.get::<_, String>(6)?, "actor": actor, "correlation_id": r.get::<_, String>(9)?,
                "causation_id": r.get::<_, String>(10)?,
                "payload": serde_json::from_str::<Value>(&r.get::<_, String>(11)?).expect("payload json"),
                "hash": r.get::<_, String>(12)?,
            }))
        })
        .expect("rows");
    for event in rows {
        let event = event.expect("row");
        let errors: Vec<String> = envelope
            .iter_errors(&event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "envelope of {event}: {errors:?}");
        let schema_file = format!(
            "schemas/events/{}.v{}.json",
            event["type"].as_str().expect("type"),
            event["schema_version"]
        );
        let schema = jsonschema::validator_for(&load_json(&schema_file)).expect("payload schema");
        let errors: Vec<String> = schema
            .iter_errors(&event["payload"])
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{schema_file} rejects {}: {errors:?}",
            event["payload"]
        );
    }
}

/// No file under `dir` contains any of `secrets` (as bytes, anywhere: log, WAL, read models).
pub fn assert_no_secret_in(dir: &Path, secrets: &[String]) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        // The embedded sinks are the recipients' mailbox and phone, not the service's store:
        // a temporary password or a link is meant to arrive there.
        if path == dir.join("mail") || path == dir.join("sms.jsonl") {
            continue;
        }
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                stack.push(entry.expect("entry").path());
            }
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        for secret in secrets {
            // A six-digit code can turn up by chance inside a hex hash or a time stamp: it
            // counts only standing alone (not between other digits or letters).
            let short = secret.len() <= 8;
            let alone = |at: usize| {
                let around = [
                    at.checked_sub(1).and_then(|i| bytes.get(i)),
                    bytes.get(at + secret.len()),
                ];
                around
                    .iter()
                    .all(|b| b.is_none_or(|b| !b.is_ascii_alphanumeric()))
            };
            let found = bytes
                .windows(secret.len())
                .enumerate()
                .any(|(at, w)| w == secret.as_bytes() && (!short || alone(at)));
            assert!(
                !found,
                "a secret typed in the test is stored in clear in {}",
                path.display()
            );
        }
    }
}

/// The text of the delivered mails to `to` whose subject holds `subject`.
pub fn mails(app: &TestApp, to: &str, subject: &str) -> Vec<String> {
    crate::processes::maildir(&app.data_dir)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|m| {
            m.lines().any(|l| l == format!("To: {to}"))
                && m.lines()
                    .any(|l| l.starts_with("Subject:") && l.contains(subject))
        })
        .collect()
}

/// The 43-character tokens of the links `<public_url><page>` in `mails` (`page` with its
/// `?token=`).
pub fn link_tokens(mails: &[String], page: &str) -> Vec<String> {
    mails
        .iter()
        .filter_map(|m| {
            let at = m.find(page)? + page.len();
            m.get(at..at + 43).map(String::from)
        })
        .collect()
}

/// The six-digit code in an SMS text.
pub fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a six-digit code in the SMS")
        .to_string()
}

/// The code of the newest SMS the embedded sink holds, once the workers have settled.
pub async fn newest_code(app: &TestApp) -> String {
    app.quiesce().await;
    let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap_or_default();
    let code = code_in(sms.lines().last().unwrap_or_default());
    app.remember_secret(&code);
    code
}

/// `res` says it must not be stored (SEC-8).
pub fn assert_no_store(res: &Response, what: &str) {
    assert_eq!(
        res.headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "{what}"
    );
}

/// The password the identities of [`identity_after_first_change`] choose.
pub const IDENTITY_PASSWORD: &str = "Tr4m-Colle!Verde";

/// The code in the last SMS sent to `to`.
pub fn last_code_to(app: &TestApp, to: &str) -> String {
    let sms = std::fs::read_to_string(app.data_dir.join("sms.jsonl")).unwrap_or_default();
    let line = sms
        .lines()
        .rfind(|l| l.contains(to))
        .expect("an SMS to the mobile");
    let text: Value = serde_json::from_str(line).unwrap();
    let code = text["text"]
        .as_str()
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a code in the SMS")
        .to_string();
    app.remember_secret(&code);
    code
}

/// An identity opened by the operator with `contact`, past its first password change (which
/// needs no code), with recovery information `recovery` saved: its session token.
pub async fn identity_after_first_change(
    app: &TestApp,
    user_id: &str,
    contact: Value,
    recovery: Value,
) -> String {
    let mut body = json!({ "kind": "identity", "user_id": user_id, "name": "Mario Bianchi", "language": "en",
                           "contact_mobile": "+393479990000" });
    for (k, v) in contact.as_object().unwrap() {
        body[k] = v.clone();
    }
    let res = app
        .post("/v1/admin/accounts", Some(OPERATOR_KEY), body)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let temporary = body["temporary_password"].as_str().unwrap().to_string();
    app.remember_secret(&temporary);
    app.remember_secret(IDENTITY_PASSWORD);
    // The first change (it clears `change_password`) needs no code.
    let token = app.login(user_id, &temporary).await;
    let res = app
        .post(
            "/v1/account/password",
            Some(&token),
            json!({ "current_password": temporary, "new_password": IDENTITY_PASSWORD, "new_password_repeat": IDENTITY_PASSWORD }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let token = app.login(user_id, IDENTITY_PASSWORD).await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(recovery),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    token
}

/// The log position a command's answer carries (its `custode-position` header).
pub fn position_of(res: &reqwest::Response) -> u64 {
    res.headers()["custode-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Appends `records` reported accesses (AH-1) to the log in `data_dir`, spread over 40
/// accounts' access streams, as the service records them: a backlog for the projector's
/// access-history lane to work through.
pub async fn seed_access_records(data_dir: &std::path::Path, records: usize) {
    use custode_commands::log::ANY_VERSION;
    use custode_commands::{EventLog, LogOptions, Metadata, NewEvent, StreamAppend};
    use custode_domain::access::{AccessEvent, Outcome, ServiceAccessReported};
    use custode_domain::envelope::encode_versioned;
    const PER_BATCH: usize = 1_000;
    let log = EventLog::open(
        &data_dir.join(custode::app::LOG_FILE),
        &LogOptions::default(),
    )
    .unwrap();
    let before = log.head();
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    for batch in 0..records.div_ceil(PER_BATCH) {
        let ready = (batch * PER_BATCH..records.min((batch + 1) * PER_BATCH))
            .map(|n| {
                let record = AccessEvent::ServiceAccessReported(ServiceAccessReported {
                    service: "Agenzia delle Entrate".into(),
                    outcome: Outcome::Success,
                    reason: None,
                    client_ip: Some("203.0.113.9".into()),
                    at: since + chrono::Duration::milliseconds(n as i64),
                });
                let (event_type, schema_version, payload) = encode_versioned(&record).unwrap();
                EventLog::ready(
                    StreamAppend {
                        stream: format!("access-{}", uuid::Uuid::from_u128(1 + (n % 40) as u128)),
                        expected_version: ANY_VERSION,
                        events: vec![NewEvent {
                            event_id: uuid::Uuid::now_v7(),
                            event_type,
                            schema_version,
                            payload,
                        }],
                    },
                    Metadata {
                        actor: custode_domain::Actor::operator(),
                        correlation_id: uuid::Uuid::now_v7(),
                        causation_id: uuid::Uuid::now_v7(),
                        occurred_at: chrono::Utc::now(),
                    },
                )
            })
            .collect();
        log.append_ready_soon(ready).await.unwrap();
    }
    assert_eq!(log.head(), before + records as u64);
}
