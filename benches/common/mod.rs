//! What more than one benchmark measures against: the log alone with concurrent writers, and
//! a bare rusqlite insert loop of the same rows into the same table (WAL, `synchronous=FULL`).

// Each benchmark uses the part of this it measures against.
#![allow(dead_code)]

use chrono::Utc;
use custode_commands::{EventLog, LogOptions, Metadata, NewEvent, StreamAppend};
use custode_domain::Actor;
use rusqlite::{params, Connection};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The allocator the service's binary runs on (`src/main.rs`): a server run in process here,
/// and the bare baselines beside it, allocate as `custode serve` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The runtime every benchmark drives its async side with: two workers, as the machine has.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Rows the bare loops insert (at least): as many as the log's side appends, so both files
/// grow to the same size.
pub const BARE_ROWS: usize = 12_000;

pub fn payload(n: usize) -> serde_json::Value {
    json!({
        "session_id": Uuid::now_v7(),
        "token_hash": format!("{:064x}", n),
        "started_at": "2026-11-23T10:00:00.000000Z",
        "expires_at": "2026-11-24T10:00:00.000000Z",
        "fresh_until": "2026-11-23T10:10:00.000000Z",
        "client_ip": "192.0.2.10",
        "required_actions": [],
    })
}

/// Appends/s of `events` single-event commands through the log from `writers` concurrent
/// writers (group commit).
pub fn log_alone(dir: &std::path::Path, writers: usize, events: usize) -> f64 {
    let per_writer = events / writers;
    runtime().block_on(async {
        let log = EventLog::open(&dir.join(format!("ours-{writers}.db")), &LogOptions::default()).expect("log");
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("account-{}", Uuid::now_v7());
                for i in 0..per_writer {
                    let append = StreamAppend {
                        stream: stream.clone(),
                        expected_version: i as u64,
                        events: vec![NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: "SessionStarted".into(),
                            schema_version: 1,
                            payload: payload(w * per_writer + i),
                        }],
                    };
                    let meta = Metadata {
                        actor: Actor::system(),
                        correlation_id: Uuid::now_v7(),
                        causation_id: Uuid::now_v7(),
                        occurred_at: Utc::now(),
                    };
                    log.append(vec![append], meta).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let elapsed = started.elapsed();
        let rate = (writers * per_writer) as f64 / elapsed.as_secs_f64();
        let times = log.times();
        let (commits, jobs) = (times.commits, times.commands);
        // Where a commit's share of the run went: the writer in SQLite's commit, the disk's
        // sync, and the rest (the writer's inserts and hashing, the answers, the callers' next
        // appends coming back), each per commit.
        let per_commit = |d: Duration| d.as_secs_f64() * 1e6 / commits as f64;
        println!(
            "  (custode log, {writers} writers: {jobs} commands in {commits} commits, {:.1} per commit; per commit {:.0} us of run, {:.0} us in SQLite's commit, {:.0} us syncing ({} syncs))",
            jobs as f64 / commits as f64,
            per_commit(elapsed),
            per_commit(times.commit),
            per_commit(times.sync),
            times.syncs
        );
        assert_eq!(log.head(), (writers * per_writer) as u64);
        rate
    })
}

/// Rows/s of a bare insert loop, `batch` rows per transaction: the same table as the log's,
/// the same pragmas, rows of the same shape and size, spread over `streams` streams.
pub fn bare(dir: &std::path::Path, name: &str, batch: usize, streams: usize) -> f64 {
    let conn = Connection::open(dir.join(name)).expect("db");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE events (position INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL,
         version INTEGER NOT NULL, type TEXT NOT NULL, schema_version INTEGER NOT NULL, occurred_at TEXT NOT NULL,
         actor_kind TEXT NOT NULL, actor_id TEXT, correlation_id TEXT NOT NULL, causation_id TEXT NOT NULL,
         payload TEXT NOT NULL, hash TEXT NOT NULL, UNIQUE (stream, version))",
    )
    .expect("schema");
    // At least a hundred transactions, however large each is.
    let rows_in_all = BARE_ROWS.max(batch * 100);
    let rows: Vec<(String, String, String)> = (0..rows_in_all)
        .map(|n| {
            (
                Uuid::now_v7().to_string(),
                payload(n).to_string(),
                format!("{:064x}", n),
            )
        })
        .collect();
    // The same rows as the log writes: one stream per writer, interleaved, versions counting up.
    let stream_count = streams;
    let streams: Vec<String> = (0..stream_count)
        .map(|_| format!("account-{}", Uuid::now_v7()))
        .collect();
    let started = Instant::now();
    let mut committing = Duration::ZERO;
    for (chunk_index, chunk) in rows.chunks(batch).enumerate() {
        let tx = conn.unchecked_transaction().expect("tx");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events VALUES (?1, ?2, ?3, ?4, 'SessionStarted', 1, ?5, 'system', NULL, ?6, ?7, ?8, ?9)",
                )
                .expect("prepare");
            for (i, (event_id, payload, hash)) in chunk.iter().enumerate() {
                let n = chunk_index * batch + i;
                insert
                    .execute(params![
                        (n + 1) as i64,
                        event_id,
                        streams[n % stream_count],
                        (n / stream_count + 1) as i64,
                        "2026-11-23T10:00:00.000000Z",
                        event_id,
                        event_id,
                        payload,
                        hash
                    ])
                    .expect("insert");
            }
        }
        let commit = Instant::now();
        tx.commit().expect("commit");
        committing += commit.elapsed();
    }
    let elapsed = started.elapsed();
    let transactions = rows_in_all.div_ceil(batch) as f64;
    println!(
        "  (bare, {batch} rows per transaction: per transaction {:.0} us, {:.0} us in its commit with the sync)",
        elapsed.as_secs_f64() * 1e6 / transactions,
        committing.as_secs_f64() * 1e6 / transactions
    );
    rows_in_all as f64 / elapsed.as_secs_f64()
}

/// Closed loop: requests/s and latencies (µs, sorted) of the same `request` (a whole HTTP/1.1
/// request, keep-alive) sent over `connections` raw TCP connections to `addr` for `run`, and
/// how many got no 2xx. Only the status line and the body's length are read back: a load
/// generator that costs the two cores it shares with the service a fraction of what a full
/// client costs, so the service, not the client, is what is measured.
pub async fn raw_load(
    addr: &str,
    connections: usize,
    run: Duration,
    request: std::sync::Arc<Vec<u8>>,
) -> (f64, Vec<u64>, usize) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, request) = (addr.to_string(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut connection = RawConnection::open(&addr).await;
            let mut latencies = Vec::new();
            let mut bad = 0;
            while started.elapsed() < run {
                let t = Instant::now();
                if !connection.exchange(&request).await {
                    bad += 1;
                }
                latencies.push(t.elapsed().as_micros() as u64);
            }
            (latencies, bad)
        }));
    }
    let (all, bad) = gather(tasks).await;
    (all.len() as f64 / started.elapsed().as_secs_f64(), all, bad)
}

/// Open loop over raw TCP connections as [`raw_load`]: `rate` requests/s in all, spread over
/// `connections` on a fixed schedule, for `run`. Each latency counts from the request's
/// scheduled time, so a request held up behind a slow one is charged its wait (no coordinated
/// omission). Returns the latencies (µs, sorted) and the requests that got no 2xx.
pub async fn raw_load_at(
    addr: &str,
    connections: usize,
    run: Duration,
    rate: f64,
    request: std::sync::Arc<Vec<u8>>,
) -> (Vec<u64>, usize) {
    let started = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let mut tasks = Vec::new();
    for task in 0..connections {
        let (addr, request) = (addr.to_string(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut connection = RawConnection::open(&addr).await;
            let mut latencies = Vec::new();
            let mut bad = 0;
            let mut due = started + interval.mul_f64(task as f64 / connections as f64);
            while due.duration_since(started) < run {
                tokio::time::sleep_until(due).await;
                if !connection.exchange(&request).await {
                    bad += 1;
                }
                latencies.push(due.elapsed().as_micros() as u64);
                due += interval;
            }
            (latencies, bad)
        }));
    }
    gather(tasks).await
}

/// One keep-alive HTTP/1.1 connection that sends whole requests and reads back only the
/// status line and as many body bytes as `Content-Length` says.
struct RawConnection {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawConnection {
    async fn open(addr: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` and reads its answer: whether it was a 2xx.
    async fn exchange(&mut self, request: &[u8]) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut chunk = [0u8; 4096];
        self.stream.write_all(request).await.expect("send");
        self.buf.clear();
        // The head, then as many body bytes as Content-Length says.
        let (head_end, length) = loop {
            let n = self.stream.read(&mut chunk).await.expect("receive");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while self.buf.len() < head_end + length {
            let n = self.stream.read(&mut chunk).await.expect("receive");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.buf.starts_with(b"HTTP/1.1 2")
    }
}

/// A POST of the JSON `body` to `path` on `addr` with the bearer `key`, as raw HTTP/1.1.
pub fn raw_post(addr: &str, path: &str, key: &str, body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Every load task's latencies (µs, sorted) and requests that got no 2xx.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, usize)>>) -> (Vec<u64>, usize) {
    let mut all = Vec::new();
    let mut bad = 0;
    for t in tasks {
        let (l, b) = t.await.unwrap();
        all.extend(l);
        bad += b;
    }
    all.sort_unstable();
    (all, bad)
}

/// The `p` quantile of sorted µs, in ms.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// The whole service on `dir` with a manual clock, served on a free port: (its base URL, the
/// application, the clock).
pub async fn serve_app(
    dir: &std::path::Path,
    operator_key: &str,
) -> (
    String,
    custode::app::App,
    custode_commands::clock::ManualClock,
) {
    serve_app_with(dir, operator_key, custode::config::FileConfig::default()).await
}

/// As [`serve_app`], with `file`'s settings.
#[allow(dead_code)]
pub async fn serve_app_with(
    dir: &std::path::Path,
    operator_key: &str,
    file: custode::config::FileConfig,
) -> (
    String,
    custode::app::App,
    custode_commands::clock::ManualClock,
) {
    use custode::config::{Config, Overrides};
    let config = Config::resolve(
        file,
        Overrides {
            data_dir: Some(dir.to_path_buf()),
            listen: Some("127.0.0.1:0".parse().expect("an address")),
            operator_key: Some(operator_key.into()),
            ..Overrides::default()
        },
    )
    .expect("settings");
    let clock = custode_commands::clock::ManualClock::new(Utc::now());
    let app = custode::app::App::start(config, std::sync::Arc::new(clock.clone()))
        .await
        .expect("the service starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    let router = custode::http::app(app.state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    (format!("http://{addr}"), app, clock)
}

/// The peak resident set of process `pid` so far (`VmHWM`, KiB; 0 once it is gone).
pub fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Every UUID in `text`, in order of first appearance, into `found`.
pub fn uuids_in(text: &str, found: &mut Vec<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 36 <= bytes.len() {
        match text.get(i..i + 36) {
            Some(candidate) if bytes[i + 8] == b'-' && Uuid::parse_str(candidate).is_ok() => {
                if !found.iter().any(|u| u == candidate) {
                    found.push(candidate.to_string());
                }
                i += 36;
            }
            _ => i += 1,
        }
    }
}

/// Every run of exactly 64 lowercase hex digits in `text`, into `found`.
pub fn hashes_in(text: &str, found: &mut Vec<String>) {
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            run.push(c);
        } else {
            if run.len() == 64 && !found.contains(&run) {
                found.push(run.clone());
            }
            run.clear();
        }
    }
}

/// One JSON call: its status and its body (`null` when it has none).
pub async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("the service answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}
