//! Sustained load (issue 22): the real `custode serve` under a realistic mix of calls for a
//! while, at 10,000, 100,000 and 1,000,000 accounts in the log.
//!
//! The mix: the mail servers' checks (AP-7), page reads (`GET /v1/account`) and reported
//! accesses (AH-1), picked call by call from 64 connections in a closed loop (they saturate
//! the service); beside them, at steady rates, logins, recovery starts (RC-1, with their answer
//! floor) and password changes (a login, then PW-4), whose Argon2id bounds them (PW-5). For
//! each kind: calls/s, p50 and p99 (a paced call's time counts from when it was due), and the
//! answers that were not the expected one, by status (503: shed by the hashing queue); for the
//! service: its peak resident memory (`VmHWM`) and the size of its files.
//!
//! The accounts: two template accounts made through the service itself (a mailbox with
//! two-step verification and an app password, and a plain one with recovery information),
//! then copied with fresh ids through the log, chain and all, as many as a scale asks; the
//! read models are rebuilt by `custode replay` and the service started on them as a pure API
//! node (`--workers none`: its notices would go to workers apart).
//!
//! `cargo bench --bench load`; `CUSTODE_LOAD_ACCOUNTS=10000,100000` picks the scales,
//! `CUSTODE_LOAD_SECONDS` the length of each run (default 60).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use custode_commands::{EventLog, LogOptions, Metadata, NewEvent, StreamAppend};
use custode_domain::{Actor, RecordedEvent};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const OPERATOR_KEY: &str = "load-operator-key-0123456789";
const MAIL_USER: &str = "modello-posta@pec.example.it";
const WEB_USER: &str = "modello-web@pec.example.it";
const PASSWORD: &str = "Tr4m-Colle!Verde";
const CONNECTIONS: usize = 64;

/// Calls in the mix, with their weights (out of 100).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Check,
    Page,
    Access,
    Login,
    Recovery,
    PasswordChange,
}

/// What the closed loop calls, with weights out of 100: the cheap, frequent calls.
const CLOSED: [(Kind, u32); 3] = [(Kind::Check, 60), (Kind::Page, 27), (Kind::Access, 13)];

/// What runs beside it at a steady rate (calls/s): the calls that hash (Argon2id, PW-5) or
/// wait out an answer floor, at rates a busy provider sees.
const PACED: [(Kind, f64); 3] = [
    (Kind::Login, 20.0),
    (Kind::Recovery, 10.0),
    (Kind::PasswordChange, 4.0),
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Check => "mail-program check  POST /v1/auth/app-password",
            Kind::Page => "page read           GET /v1/account",
            Kind::Access => "reported access     POST /v1/admin/access-events",
            Kind::Login => "login               POST /v1/sessions",
            Kind::Recovery => "recovery start      POST /v1/recovery",
            Kind::PasswordChange => "password change     login + POST /v1/account/password",
        }
    }
}

/// The template accounts' events, and the app password every copy of the mailbox shares.
struct Template {
    events: Vec<RecordedEvent>,
    app_password: String,
}

/// Makes both template accounts through the service on `dir` and returns their events.
fn template(dir: &Path) -> Template {
    use reqwest::Method;
    common::runtime().block_on(async {
        let (base, app, clock) = common::serve_app(dir, OPERATOR_KEY).await;
        let client = reqwest::Client::new();
        let mut app_password = String::new();
        for (user, mailbox) in [(MAIL_USER, true), (WEB_USER, false)] {
            let (s, opened) = common::call(&client, Method::POST, format!("{base}/v1/admin/accounts"), Some(OPERATOR_KEY), Some(json!({ "kind": "mailbox", "user_id": user, "plan": "pro", "contact_email": "titolare@example.it" }))).await;
            assert_eq!(s, 201, "{opened}");
            let temporary = opened["temporary_password"].as_str().unwrap().to_string();
            let login = |password: &str, otp: Option<String>| {
                let mut body = json!({ "user_id": user, "password": password });
                if let Some(otp) = otp {
                    body["otp"] = json!(otp);
                }
                body
            };
            let (_, s1) = common::call(&client, Method::POST, format!("{base}/v1/sessions"), None, Some(login(&temporary, None))).await;
            let token = s1["session_token"].as_str().unwrap().to_string();
            let (s, _) = common::call(&client, Method::POST, format!("{base}/v1/account/password"), Some(&token), Some(json!({ "current_password": temporary, "new_password": PASSWORD, "new_password_repeat": PASSWORD }))).await;
            assert_eq!(s, 204);
            let (_, s2) = common::call(&client, Method::POST, format!("{base}/v1/sessions"), None, Some(login(PASSWORD, None))).await;
            let token = s2["session_token"].as_str().unwrap().to_string();
            let (s, _) = common::call(&client, Method::PUT, format!("{base}/v1/account/recovery-info"), Some(&token), Some(json!({ "email": "recupero@example.org", "mobile": "+393471234567" }))).await;
            assert_eq!(s, 200);
            if !mailbox {
                continue;
            }
            let (_, enrol) = common::call(&client, Method::POST, format!("{base}/v1/account/two-factor"), Some(&token), None).await;
            let totp = totp_rs::TOTP::from_url(enrol["otpauth_uri"].as_str().unwrap()).unwrap();
            let code = |clock: &custode_commands::clock::ManualClock| {
                use custode_commands::clock::Clock;
                totp.generate(clock.now().timestamp() as u64)
            };
            let (s, _) = common::call(&client, Method::POST, format!("{base}/v1/account/two-factor/confirm"), Some(&token), Some(json!({ "code": code(&clock) }))).await;
            assert_eq!(s, 204);
            clock.advance(chrono::Duration::seconds(30));
            let (_, s3) = common::call(&client, Method::POST, format!("{base}/v1/sessions"), None, Some(login(PASSWORD, Some(code(&clock))))).await;
            let token = s3["session_token"].as_str().unwrap().to_string();
            clock.advance(chrono::Duration::seconds(30));
            let (s, created) = common::call(&client, Method::POST, format!("{base}/v1/account/app-passwords"), Some(&token), Some(json!({ "scope": "mailbox" }))).await;
            assert_eq!(s, 201, "{created}");
            app_password = created["password"].as_str().unwrap().to_string();
        }
        // The notices' outcomes reach the log.
        tokio::time::sleep(Duration::from_secs(2)).await;
        app.flush().await;
        let log = app.state.log.reader();
        drop(app);
        Template {
            events: log.read_from(0, 10_000).unwrap(),
            app_password,
        }
    })
}

/// A piece of a template text: as is, or what a copy puts in its place.
enum Piece {
    Text(String),
    /// 0: the mailbox's user id, 1: the plain account's.
    User(usize),
    Id(usize),
    Hash(usize),
}

/// A template text cut where a copy differs: user ids, UUIDs, and 64-hex-digit hashes (token
/// and keyed hashes) but the app password's keyed hash, which every copy shares.
struct Pattern(Vec<Piece>);

impl Pattern {
    fn cut(text: &str, ids: &[String], hashes: &[String]) -> Self {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            let found = if let Some(u) = [MAIL_USER, WEB_USER]
                .iter()
                .position(|u| rest.starts_with(u))
            {
                Some((Piece::User(u), [MAIL_USER, WEB_USER][u].len()))
            } else if let Some(n) = ids.iter().position(|id| rest.starts_with(id.as_str())) {
                Some((Piece::Id(n), 36))
            } else {
                hashes
                    .iter()
                    .position(|h| rest.starts_with(h.as_str()))
                    .map(|n| (Piece::Hash(n), 64))
            };
            match found {
                Some((piece, len)) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    i += len;
                }
                None => {
                    let c = rest.chars().next().unwrap();
                    literal.push(c);
                    i += c.len_utf8();
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Pattern(pieces)
    }

    fn render(&self, k: u64, hashes: &[String], out: &mut String) {
        use std::fmt::Write;
        out.clear();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::User(0) => write!(out, "posta{k}@pec.example.it").unwrap(),
                Piece::User(_) => write!(out, "web{k}@pec.example.it").unwrap(),
                Piece::Id(n) => write!(out, "{}", copy_id(k, *n)).unwrap(),
                Piece::Hash(n) => write!(out, "{k:016x}{}", &hashes[*n][16..]).unwrap(),
            }
        }
    }
}

fn copy_id(k: u64, n: usize) -> Uuid {
    Uuid::from_u128((u128::from(k + 1) << 64) | (0x10AD << 16) | n as u128)
}

/// The template as patterns: per event, its stream's and its payload's.
struct Copier {
    events: Vec<(Pattern, String, u32, Pattern)>,
    hashes: Vec<String>,
}

impl Copier {
    fn new(template: &Template) -> Self {
        let (mut ids, mut hashes) = (Vec::new(), Vec::new());
        let mut shared = Vec::new();
        for e in &template.events {
            common::uuids_in(&e.stream, &mut ids);
            let payload = e.payload.to_string();
            common::uuids_in(&payload, &mut ids);
            common::hashes_in(&payload, &mut hashes);
            if let Some(hmac) = e.payload.get("password_hmac").and_then(Value::as_str) {
                shared.push(hmac.to_string());
            }
        }
        hashes.retain(|h| !shared.contains(h));
        let events = template
            .events
            .iter()
            .map(|e| {
                (
                    Pattern::cut(&e.stream, &ids, &hashes),
                    e.event_type.clone(),
                    e.schema_version,
                    Pattern::cut(&e.payload.to_string(), &ids, &hashes),
                )
            })
            .collect();
        Copier { events, hashes }
    }

    /// Copy `k` of the template: one append per stream, in the template's order.
    fn copy(&self, k: u64) -> Vec<StreamAppend> {
        let mut appends: Vec<StreamAppend> = Vec::new();
        let mut text = String::new();
        for (i, (stream, event_type, schema_version, payload)) in self.events.iter().enumerate() {
            stream.render(k, &self.hashes, &mut text);
            let index = match appends.iter().position(|a| a.stream == text) {
                Some(index) => index,
                None => {
                    appends.push(StreamAppend {
                        stream: text.clone(),
                        expected_version: 0,
                        events: Vec::new(),
                    });
                    appends.len() - 1
                }
            };
            payload.render(k, &self.hashes, &mut text);
            appends[index].events.push(NewEvent {
                event_id: Uuid::from_u128((u128::from(k + 1) << 64) | (1 << 32) | i as u128),
                event_type: event_type.clone(),
                schema_version: *schema_version,
                payload: serde_json::from_str(&text).unwrap(),
            });
        }
        appends
    }
}

/// Appends copies `from..to` to the log at `path`.
fn grow(path: &Path, copier: &Copier, from: u64, to: u64) {
    let first = copier
        .copy(0)
        .into_iter()
        .map(|a| a.stream)
        .collect::<Vec<_>>();
    let second = copier
        .copy(1)
        .into_iter()
        .map(|a| a.stream)
        .collect::<Vec<_>>();
    assert!(
        first.iter().all(|s| !second.contains(s)),
        "a template stream is not the account's own: {first:?}"
    );
    common::runtime().block_on(async {
        let log = EventLog::open(path, &LogOptions::default()).unwrap();
        let at = chrono::Utc::now() - chrono::Duration::days(1);
        let mut in_flight = Vec::new();
        for k in from..to {
            let appends = copier.copy(k);
            let meta = Metadata {
                actor: Actor::operator(),
                correlation_id: Uuid::from_u128(u128::from(k + 1) << 64),
                causation_id: Uuid::from_u128(u128::from(k + 1) << 64),
                occurred_at: at,
            };
            let log = log.clone();
            in_flight.push(tokio::spawn(async move {
                log.append(appends, meta).await.unwrap()
            }));
            if in_flight.len() == 256 {
                for task in in_flight.drain(..) {
                    task.await.unwrap();
                }
            }
        }
        for task in in_flight {
            task.await.unwrap();
        }
    });
}

/// A running `custode serve`, stopped when dropped.
struct Service {
    metrics: String,
    child: std::process::Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start(dir: &Path, config: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_custode"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--config")
            .arg(config)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics}"),
                "--workers",
                "none",
            ])
            .env("CUSTODE_OPERATOR_KEY", OPERATOR_KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        common::runtime().block_on(async {
            let client = reqwest::Client::new();
            loop {
                let ready = client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if ready {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "custode serve did not get ready"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Service {
            child,
            base,
            metrics: format!("http://127.0.0.1:{metrics}/metrics"),
        }
    }

    /// The log's head and the positions the read models have applied, from `/metrics`: the
    /// core read models, and every one with the access history (absent from a build that
    /// applies them together).
    fn positions(&self, runtime: &tokio::runtime::Runtime) -> (u64, u64, Option<u64>) {
        let text = runtime.block_on(async {
            reqwest::get(&self.metrics)
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        let value = |name: &str| {
            text.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
        };
        (
            value("custode_log_head_position").unwrap(),
            value("custode_read_models_applied_position").unwrap(),
            value("custode_access_history_applied_position"),
        )
    }

    /// After the load: how far behind the head the read models ended, and how long the access
    /// history then took to catch up (at most two minutes are waited).
    fn lag(&self) -> String {
        let runtime = common::runtime();
        let (head, core, history) = self.positions(&runtime);
        let history = history.unwrap_or(core);
        let started = Instant::now();
        let mut caught_up = None;
        while started.elapsed() < Duration::from_secs(120) {
            let (_, core, history) = self.positions(&runtime);
            if history.unwrap_or(core) >= head {
                caught_up = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        format!(
            "at the end, read models behind the head: core {} events, access history {} events (caught up {})",
            head - core,
            head - history,
            caught_up.map_or("not within 120 s".to_string(), |d| format!("in {:.1} s", d.as_secs_f64()))
        )
    }

    fn peak_mib(&self) -> f64 {
        common::peak_kib(self.child.id()) as f64 / 1024.0
    }
}

/// What one kind of call gave: latencies (µs) and unexpected answers by status.
#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    unexpected: std::collections::BTreeMap<u16, usize>,
}

/// A copy for logins, page reads and reports: never one that changes its password.
fn plain_copy(rng: &mut u64, copies: u64) -> u64 {
    loop {
        let k = next(rng) % copies;
        if k % 8 != 7 {
            return k;
        }
    }
}

/// xorshift64: the mix's choices, cheap and reproducible.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn fresh_password(rng: &mut u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // No character twice in a row (PW-1 refuses three), so every draw passes the policy.
    let mut last = 0u8;
    let mut word = |n: usize| -> String {
        let mut out = String::new();
        while out.len() < n {
            let c = ALPHABET[(next(rng) % ALPHABET.len() as u64) as usize];
            if c != last {
                out.push(c as char);
                last = c;
            }
        }
        out
    };
    // Lower and upper case, a digit and a symbol always, whatever the draw.
    format!("{}-{}#{}7Qz", word(6), word(6), word(4))
}

/// A login's status and, when it opened a session, its token.
async fn login(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> (u16, Option<String>) {
    let (s, body) = common::call(
        client,
        reqwest::Method::POST,
        format!("{base}/v1/sessions"),
        None,
        Some(json!({ "user_id": user, "password": password })),
    )
    .await;
    (s, body["session_token"].as_str().map(str::to_string))
}

/// What every call of the mix needs.
struct Calls {
    client: reqwest::Client,
    base: String,
    copies: u64,
    app_password: String,
    /// Sessions for the page reads.
    sessions: Vec<String>,
    /// The accounts whose passwords change, with their current ones; an account is taken out
    /// while its change runs.
    changing: std::sync::Mutex<std::collections::VecDeque<(u64, String)>>,
}

impl Calls {
    /// One call of `kind`: its status, and whether it was the expected answer.
    async fn one(&self, kind: Kind, rng: &mut u64) -> (u16, bool) {
        use reqwest::Method;
        let base = &self.base;
        match kind {
            Kind::Check => {
                let k = next(rng) % self.copies;
                let (s, _) = common::call(&self.client, Method::POST, format!("{base}/v1/auth/app-password"), Some(OPERATOR_KEY), Some(json!({ "user_id": format!("posta{k}@pec.example.it"), "scope": "mailbox", "password": self.app_password, "client_ip": "198.51.100.7" }))).await;
                (s, s == 200)
            }
            Kind::Page => {
                let token = &self.sessions[(next(rng) % self.sessions.len() as u64) as usize];
                let (s, _) = common::call(
                    &self.client,
                    Method::GET,
                    format!("{base}/v1/account"),
                    Some(token),
                    None,
                )
                .await;
                (s, s == 200)
            }
            Kind::Access => {
                let k = plain_copy(rng, self.copies);
                let (s, _) = common::call(&self.client, Method::POST, format!("{base}/v1/admin/access-events"), Some(OPERATOR_KEY), Some(json!({ "user_id": format!("web{k}@pec.example.it"), "service": "Agenzia delle Entrate", "outcome": "success", "client_ip": "203.0.113.9", "at": chrono::Utc::now() }))).await;
                (s, s == 202)
            }
            Kind::Login => {
                let k = plain_copy(rng, self.copies);
                let (s, token) = login(
                    &self.client,
                    base,
                    &format!("web{k}@pec.example.it"),
                    PASSWORD,
                )
                .await;
                (s, token.is_some())
            }
            Kind::Recovery => {
                let k = plain_copy(rng, self.copies);
                let (s, _) = common::call(&self.client, Method::POST, format!("{base}/v1/recovery"), None, Some(json!({ "user_id": format!("web{k}@pec.example.it"), "captcha_token": "load" }))).await;
                (s, s == 201 || s == 200)
            }
            Kind::PasswordChange => {
                let taken = self.changing.lock().unwrap().pop_front();
                let Some((k, current)) = taken else {
                    return (0, false);
                };
                let user = format!("web{k}@pec.example.it");
                let new = fresh_password(rng);
                let (status, ok, now) = match login(&self.client, base, &user, &current).await {
                    (_, Some(token)) => {
                        let (s, _) = common::call(&self.client, Method::POST, format!("{base}/v1/account/password"), Some(&token), Some(json!({ "current_password": current, "new_password": new, "new_password_repeat": new }))).await;
                        if s == 204 {
                            (s, true, new)
                        } else {
                            (s, false, current)
                        }
                    }
                    (s, None) => (s, false, current),
                };
                self.changing.lock().unwrap().push_back((k, now));
                (status, ok)
            }
        }
    }
}

type Tallies = HashMap<Kind, Tally>;

fn merge(into: &mut Tallies, from: Tallies) {
    for (kind, tally) in from {
        let into = into.entry(kind).or_default();
        into.latencies.extend(tally.latencies);
        for (status, n) in tally.unexpected {
            *into.unexpected.entry(status).or_default() += n;
        }
    }
}

fn note(tallies: &mut Tallies, kind: Kind, started: Instant, (status, ok): (u16, bool)) {
    let tally = tallies.entry(kind).or_default();
    tally.latencies.push(started.elapsed().as_micros() as u64);
    if !ok {
        *tally.unexpected.entry(status).or_default() += 1;
    }
}

/// The mix for `run`: [`CLOSED`] from [`CONNECTIONS`] connections in a closed loop, and
/// [`PACED`] at their rates beside them (open loop: each call's time counts from when it was
/// due). Per kind, its tally.
async fn mix(
    base: &str,
    copies: u64,
    app_password: &str,
    changing: &mut std::collections::VecDeque<(u64, String)>,
    run: Duration,
) -> Tallies {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS * 2)
        .build()
        .unwrap();
    let mut sessions = Vec::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    while sessions.len() < 16 {
        let k = plain_copy(&mut rng, copies);
        if let (_, Some(token)) =
            login(&client, base, &format!("web{k}@pec.example.it"), PASSWORD).await
        {
            sessions.push(token);
        }
    }
    let calls = Arc::new(Calls {
        client,
        base: base.to_string(),
        copies,
        app_password: app_password.to_string(),
        sessions,
        changing: std::sync::Mutex::new(std::mem::take(changing)),
    });
    let started = Instant::now();
    let mut closed = Vec::new();
    for c in 0..CONNECTIONS {
        let calls = calls.clone();
        closed.push(tokio::spawn(async move {
            let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ ((c as u64 + 1) << 32);
            let mut tallies = Tallies::new();
            while started.elapsed() < run {
                let pick = (next(&mut rng) % 100) as u32;
                let mut sum = 0;
                let kind = CLOSED
                    .iter()
                    .find(|(_, weight)| {
                        sum += weight;
                        pick < sum
                    })
                    .map_or(Kind::Check, |(kind, _)| *kind);
                let t = Instant::now();
                let outcome = calls.one(kind, &mut rng).await;
                note(&mut tallies, kind, t, outcome);
            }
            tallies
        }));
    }
    let mut paced = Vec::new();
    for (n, (kind, per_second)) in PACED.into_iter().enumerate() {
        let calls = calls.clone();
        paced.push(tokio::spawn(async move {
            let every = Duration::from_secs_f64(1.0 / per_second);
            let mut due = Instant::now();
            let mut calls_made = Vec::new();
            let mut rng = 0xD1B5_4A32_D192_ED03u64 ^ ((n as u64 + 1) << 40);
            while started.elapsed() < run {
                tokio::time::sleep_until(due.into()).await;
                let (calls, at, seed) = (calls.clone(), due, next(&mut rng));
                calls_made.push(tokio::spawn(async move {
                    let mut rng = seed | 1;
                    let outcome = calls.one(kind, &mut rng).await;
                    let mut tallies = Tallies::new();
                    note(&mut tallies, kind, at, outcome);
                    tallies
                }));
                due += every;
            }
            let mut tallies = Tallies::new();
            for made in calls_made {
                merge(&mut tallies, made.await.unwrap());
            }
            tallies
        }));
    }
    let mut all = Tallies::new();
    for task in closed.into_iter().chain(paced) {
        merge(&mut all, task.await.unwrap());
    }
    // The passwords as they now are, for the next run.
    *changing = std::mem::take(&mut *calls.changing.lock().unwrap());
    for tally in all.values_mut() {
        tally.latencies.sort_unstable();
    }
    all
}

fn file_mib(path: &Path) -> f64 {
    ["", "-wal"]
        .iter()
        .map(|s| {
            std::fs::metadata(format!("{}{s}", path.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum::<u64>() as f64
        / (1024.0 * 1024.0)
}

fn main() {
    let scales: Vec<u64> = std::env::var("CUSTODE_LOAD_ACCOUNTS")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("CUSTODE_LOAD_ACCOUNTS: numbers, comma-separated")
        })
        .collect();
    let run = Duration::from_secs(
        std::env::var("CUSTODE_LOAD_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let scratch = tempfile::tempdir().unwrap();
    let template_dir = scratch.path().join("template");
    let template = template(&template_dir);
    let copier = Copier::new(&template);
    let dir: PathBuf = scratch.path().join("load");
    std::fs::create_dir_all(&dir).unwrap();
    // The copies' app passwords are keyed under the template's service key.
    let keys = dir.join(custode::app::KEYS_DIR);
    std::fs::create_dir_all(&keys).unwrap();
    for entry in std::fs::read_dir(template_dir.join(custode::app::KEYS_DIR)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), keys.join(entry.file_name())).unwrap();
        }
    }
    let config = scratch.path().join("load.toml");
    std::fs::write(
        &config,
        "[http]\nmax_concurrent_per_address = 1024\nmax_connections_per_peer = 1024\n\
         [limits]\nlogin_per_address_per_minute = 1000000\nrecovery_starts_per_address_per_minute = 1000000\n\
         checks_per_address_per_minute = 1000000\nanonymous_writes_per_minute = 1000000\n",
    )
    .unwrap();
    let log_path = dir.join(custode::app::LOG_FILE);
    println!(
        "Sustained load, {} s a run: {CONNECTIONS} connections in a closed loop ({}), and beside them {}",
        run.as_secs(),
        CLOSED.iter().map(|(k, w)| format!("{k:?} {w}%")).collect::<Vec<_>>().join(", "),
        PACED.iter().map(|(k, r)| format!("{k:?} {r}/s")).collect::<Vec<_>>().join(", ")
    );
    let mut copies = 0u64;
    // The accounts whose passwords the mix changes (every eighth plain one), with their current
    // passwords, across runs.
    let mut changing = std::collections::VecDeque::new();
    for accounts in scales {
        let target = accounts / 2;
        changing.extend(
            (copies.div_ceil(8)..target.div_ceil(8))
                .map(|j| 8 * j + 7)
                .filter(|k| *k < target)
                .map(|k| (k, PASSWORD.to_string()))
                .take(4096usize.saturating_sub(changing.len())),
        );
        let grown = Instant::now();
        grow(&log_path, &copier, copies, target);
        copies = target;
        let grow_s = grown.elapsed().as_secs_f64();
        let replayed = Instant::now();
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_custode"))
            .arg("replay")
            .arg("--data-dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "custode replay failed");
        let replay_s = replayed.elapsed().as_secs_f64();
        let service = Service::start(&dir, &config);
        let head = custode_commands::LogReader::open(&log_path)
            .unwrap()
            .head()
            .unwrap();
        let tallies = common::runtime().block_on(mix(
            &service.base,
            copies,
            &template.app_password,
            &mut changing,
            run,
        ));
        let lag = service.lag();
        let peak = service.peak_mib();
        drop(service);
        println!(
            "\n{accounts} accounts ({head} events in the log, {:.0} MiB; read models {:.0} MiB; log grown in {grow_s:.0} s, read models rebuilt in {replay_s:.0} s)",
            file_mib(&log_path),
            file_mib(&dir.join(custode::app::READ_MODELS_FILE))
        );
        let total: usize = tallies.values().map(|t| t.latencies.len()).sum();
        println!(
            "  all calls {:>9.0}/s   service peak memory {peak:.0} MiB",
            total as f64 / run.as_secs_f64()
        );
        println!("  {lag}");
        for kind in CLOSED
            .iter()
            .map(|(k, _)| *k)
            .chain(PACED.iter().map(|(k, _)| *k))
        {
            let Some(t) = tallies.get(&kind) else {
                continue;
            };
            let unexpected: Vec<String> = t
                .unexpected
                .iter()
                .map(|(s, n)| format!("{n}× {s}"))
                .collect();
            println!(
                "  {}  {:>8.0}/s   p50 {:>8.2} ms   p99 {:>8.2} ms   unexpected: {}",
                kind.label(),
                t.latencies.len() as f64 / run.as_secs_f64(),
                common::pct(&t.latencies, 0.5),
                common::pct(&t.latencies, 0.99),
                if unexpected.is_empty() {
                    "none".to_string()
                } else {
                    unexpected.join(", ")
                }
            );
        }
    }
}
