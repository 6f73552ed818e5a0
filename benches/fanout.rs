#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Fan-out, in one run (`cargo bench --bench fanout`; needs `nats-server` on the PATH or in
//! CUSTODE_TEST_NATS_SERVER, as `./scripts/test` installs it):
//!
//! 1. Relay events/s (log → JetStream, message id = event id, checkpoint after the acks)
//!    against a bare `async-nats` JetStream publish loop of the same payloads to a stream of
//!    the same configuration, with the same window of acks in flight. Target ≥ 0.8×.
//! 2. End-to-end latency from a committed append to the Maildir file the mailer writes for it,
//!    p50 and p99, under 1,000 commands/s in the embedded mode.
//!
//! Leave five minutes between runs of part 2 (`CUSTODE_BENCH_PHASE=latency`). Each run ends by
//! deleting its 5,000 mails, and for up to five minutes after that ext4 will not reuse those
//! inodes: it checks them one by one on every file it creates (`recently_deleted` and
//! `find_inode_bit` lead a kernel profile, with the kernel taking 8.7 of 10.4 CPU seconds), so
//! the next run's Maildir writes, not the service, set its p99. Measured here: 6.5 ms after a
//! pause of minutes; 105 to 367 ms with 75 s between runs; 188 to 800 ms back to back.
//! Runs back to back are fair only on a file system of their own, made fresh for each run (as
//! root: `truncate -s 2G f.img && mkfs.ext4 -q -F f.img && mount -o loop f.img m`, then the run
//! with `TMPDIR=m`), which has no deleted inodes to check.

mod common;

use async_nats::jetstream::{self, stream};
use chrono::Utc;
use custode_commands::accounts::AccountHandler;
use custode_commands::clock::SystemClock;
use custode_commands::delivery::DeliveryKeys;
use custode_commands::hashing::{Argon2Hasher, Argon2Settings, HashPool};
use custode_commands::service_key::ServiceKey;
use custode_commands::{EventLog, LogOptions, Metadata, NewEvent, StreamAppend};
use custode_domain::account::{
    AccountEvent, AccountKind, AccountOpened, Language, PasswordChanged,
};
use custode_domain::envelope::encode;
use custode_domain::notice::Channel;
use custode_domain::{Actor, PasswordHash};
use custode_workers::consumer::Feed;
use custode_workers::notifier::{notice_id, Recorder, Reporter};
use custode_workers::runtime::{spawn_worker, WorkerContext, WorkerName};
use custode_workers::settings::WorkerSettings;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const RELAY_EVENTS: usize = 20_000;
const ROUNDS: usize = 5;
const BATCH: usize = custode_workers::relay::BATCH;
const WINDOW: usize = custode_workers::relay::WINDOW;
const LOAD_RATE: u64 = 1_000;
const LOAD_SECS: u64 = 5;

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server(store: &Path) -> (Nats, String) {
    let binary = std::env::var("CUSTODE_TEST_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            [
                "/usr/sbin/nats-server",
                "/usr/local/bin/nats-server",
                "/usr/bin/nats-server",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("nats-server is not installed: run ./scripts/test once, which installs it")
        });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nats-server did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (Nats(child), format!("nats://127.0.0.1:{port}"))
}

fn meta() -> Metadata {
    Metadata {
        actor: Actor::system(),
        correlation_id: Uuid::now_v7(),
        causation_id: Uuid::now_v7(),
        occurred_at: Utc::now(),
    }
}

fn new_event(event: &AccountEvent) -> NewEvent {
    let (event_type, payload) = encode(event).unwrap();
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type,
        schema_version: 1,
        payload,
    }
}

fn opened(account_id: Uuid, n: usize) -> AccountEvent {
    AccountEvent::AccountOpened(AccountOpened {
        account_id,
        kind: AccountKind::Mailbox,
        user_id: format!("bench{n}@pec.example.it"),
        plan: None,
        owner_id: None,
        name: None,
        fiscal_code: None,
        contact_email: Some(format!("bench{n}@example.it")),
        contact_mobile: None,
        language: Language::It,
        migrated: false,
        permissions: Vec::new(),
    })
}

/// Opens `accounts` accounts, 8 writers at a time (group commit); returns their ids.
async fn open_accounts(log: &EventLog, accounts: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..accounts).map(|_| Uuid::now_v7()).collect();
    let chunks: Vec<Vec<(usize, Uuid)>> = ids
        .iter()
        .copied()
        .enumerate()
        .collect::<Vec<_>>()
        .chunks(accounts.div_ceil(8))
        .map(<[_]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for (n, id) in chunk {
                let append = StreamAppend {
                    stream: format!("account-{id}"),
                    expected_version: 0,
                    events: vec![new_event(&opened(id, n))],
                };
                log.append(vec![append], meta()).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    ids
}

async fn bare_publish(js: &jetstream::Context, payloads: &[(String, String, bytes::Bytes)]) -> f64 {
    js.get_or_create_stream(stream::Config {
        name: "BARE".into(),
        subjects: vec!["bare.>".into()],
        duplicate_window: custode_workers::nats::DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    // The relay's window: WINDOW chunks sent before the oldest chunk's acks are awaited.
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for chunk in payloads.chunks(BATCH) {
        if in_flight.len() == WINDOW {
            for ack in in_flight.pop_front().unwrap() {
                let ack: jetstream::context::PublishAckFuture = ack;
                ack.await.unwrap();
            }
        }
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, id, payload) in chunk {
            let publish = jetstream::message::PublishMessage::build()
                .message_id(id.as_str())
                .payload(payload.clone());
            acks.push(
                js.send_publish(format!("bare.{subject}"), publish)
                    .await
                    .unwrap(),
            );
        }
        in_flight.push_back(acks);
    }
    for acks in in_flight {
        for ack in acks {
            ack.await.unwrap();
        }
    }
    payloads.len() as f64 / started.elapsed().as_secs_f64()
}

async fn relay_round(js: &jetstream::Context, log: &EventLog, store: &Path) -> f64 {
    // A fresh stream each round, so both sides start empty.
    let _ = js.delete_stream(custode_workers::nats::EVENTS_STREAM).await;
    let retention = custode_workers::settings::NatsSettings::default().retention();
    custode_workers::nats::ensure_events_stream(js, retention)
        .await
        .unwrap();
    let started = Instant::now();
    let (relayed, _relay) =
        custode_workers::relay::spawn(js.clone(), log.clone(), store, retention).unwrap();
    let head = log.head();
    let mut relayed = relayed;
    relayed.wait_for(|p| *p >= head).await.unwrap();
    head as f64 / started.elapsed().as_secs_f64()
}

fn relay_vs_bare(runtime: &tokio::runtime::Runtime, dir: &Path) {
    let (_nats, url) = nats_server(&dir.join("nats"));
    runtime.block_on(async {
        let log = EventLog::open(&dir.join("relay.db"), &LogOptions::default()).unwrap();
        open_accounts(&log, RELAY_EVENTS).await;
        // The very bytes the relay sends.
        let events = log.read_wire_from(0, RELAY_EVENTS).await.unwrap();
        let payloads: Vec<(String, String, bytes::Bytes)> = events
            .iter()
            .map(|e| (format!("{}.{}", e.category(), e.event_type), e.event_id.clone(), e.json.clone().into()))
            .collect();
        let js = custode_workers::nats::connect(&url).await.unwrap();
        let mut ratios = Vec::new();
        let (mut bare_all, mut ours_all) = (Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            let _ = js.delete_stream("BARE").await;
            let bare = bare_publish(&js, &payloads).await;
            let store = dir.join(format!("relay-store-{round}"));
            std::fs::create_dir_all(&store).unwrap();
            let ours = relay_round(&js, &log, &store).await;
            println!(
                "  round {round}: bare publish {bare:>9.0} events/s · relay {ours:>9.0} events/s · {:.2}×",
                ours / bare
            );
            ratios.push(ours / bare);
            bare_all.push(bare);
            ours_all.push(ours);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!("relay (log → JetStream, {RELAY_EVENTS} events, batches of {BATCH}, {WINDOW} batches in flight), medians of {ROUNDS} rounds:");
        println!("  bare async-nats publish loop: {:>9.0} events/s", median(&mut bare_all));
        println!("  custode relay:                {:>9.0} events/s", median(&mut ours_all));
        println!("  ratio: {:.2}× (median of the rounds' ratios; target ≥ 0.8×)", median(&mut ratios));
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn latency_under_load(runtime: &tokio::runtime::Runtime, dir: &Path) {
    let data_dir = dir.join("embedded");
    std::fs::create_dir_all(&data_dir).unwrap();
    let commands = (LOAD_RATE * LOAD_SECS) as usize;
    runtime.block_on(async {
        let log = EventLog::open(&data_dir.join("events.db"), &LogOptions::default()).unwrap();
        let accounts = open_accounts(&log, commands).await;
        let ctx = WorkerContext {
            data_dir: data_dir.clone(),
            keys: DeliveryKeys::open(&data_dir.join("keys")).unwrap(),
            settings: WorkerSettings {
                public_url: "http://127.0.0.1:8080".into(),
                ..WorkerSettings::default()
            },
            clock: Arc::new(SystemClock),
            reporter: Reporter::Log(Box::new(Recorder::new(AccountHandler::new(
                log.clone(),
                HashPool::new(1),
                Arc::new(Argon2Hasher::new(Argon2Settings::default()).unwrap()),
                Arc::default(),
                Arc::new(SystemClock),
                DeliveryKeys::open(&data_dir.join("keys")).unwrap(),
                ServiceKey::open(&data_dir.join("keys")).unwrap().0,
            )))),
        };
        let mut tasks = custode_workers::runtime::Tasks::default();
        let mailer = spawn_worker(WorkerName::Mailer, Feed::Log(log.clone()), &ctx, &mut tasks).unwrap();
        let mut applied = mailer.applied();
        let head = log.head();
        applied.wait_for(|p| *p >= head).await.unwrap();

        // Measured without disturbing the service: each append's commit time is noted, and
        // each mail's arrival is its Maildir file's modification time (the filesystem's clock,
        // a jiffy's resolution at worst), read once everything has arrived. Nothing polls the
        // files meanwhile (a watcher that stat'ed every pending file every 200 µs ate a core
        // once a backlog formed, and made the backlog).
        let pending: Arc<Mutex<Vec<(PathBuf, std::time::SystemTime)>>> = Arc::default();
        let new_dir = data_dir.join("mail/new");
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / LOAD_RATE));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::with_capacity(commands);
        for id in accounts {
            ticker.tick().await;
            let (log, pending, new_dir) = (log.clone(), pending.clone(), new_dir.clone());
            tasks.push(tokio::spawn(async move {
                let changed = new_event(&AccountEvent::PasswordChanged(PasswordChanged {
                    password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
                }));
                let event_id = changed.event_id;
                let append = StreamAppend {
                    stream: format!("account-{id}"),
                    expected_version: 1,
                    events: vec![changed],
                };
                log.append(vec![append], meta()).await.expect("append");
                let committed = std::time::SystemTime::now();
                let file = new_dir.join(format!("{}.custode", notice_id(event_id, Channel::Email, 0)));
                pending.lock().unwrap().push((file, committed));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let offered = commands as f64 / started.elapsed().as_secs_f64();
        // Every mail, once it is there (one directory listing every 100 ms).
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::fs::read_dir(&new_dir).map(|d| d.count()).unwrap_or(0) < commands {
            assert!(Instant::now() < deadline, "every command's mail arrives");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut latencies: Vec<Duration> = pending
            .lock()
            .unwrap()
            .iter()
            .map(|(file, committed)| {
                let arrived = std::fs::metadata(file).and_then(|m| m.modified()).expect("the mail");
                arrived.duration_since(*committed).unwrap_or_default()
            })
            .collect();
        latencies.sort();
        assert_eq!(latencies.len(), commands, "every command's mail arrived");
        println!("end to end, committed append → Maildir file (embedded mailer), {commands} commands at {offered:.0}/s:");
        println!(
            "  p50 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
    });
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = common::runtime();
    // CUSTODE_BENCH_PHASE=latency runs the second part alone (issue 22 asks for it 5 times).
    if std::env::var("CUSTODE_BENCH_PHASE").as_deref() != Ok("latency") {
        relay_vs_bare(&runtime, dir.path());
    }
    latency_under_load(&runtime, dir.path());
}
