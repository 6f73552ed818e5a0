//! Fan-out over a real `nats-server -js` (a child on a free port with its own store): every
//! event is published once and read back in order; a relay killed between publishing and
//! checkpointing causes no duplicate; NATS stopped and restarted loses nothing while the API
//! keeps accepting; a worker run apart and killed mid-stream resumes where it acked; no
//! password or answer hash reaches the bus, which keeps messages a bounded time (SEC-9).

use crate::helpers::{file_config, phc, TestApp, OPERATOR_KEY};
use crate::processes::{eventually, maildir, NatsServer, BIN};
use crate::recovery::{
    call, complete, operator_reset, recoverable, reset_token, start, temporary_password, ANSWER,
};
use async_nats::jetstream::stream;
use custode_commands::clock::SystemClock;
use custode_commands::delivery::DeliveryKeys;
use custode_commands::{EventLog, LogOptions};
use custode_domain::secret::{remove_verification_data, REMOVED};
use custode_domain::RecordedEvent;
use custode_workers::consumer::Feed;
use custode_workers::nats::{
    DUPLICATE_WINDOW, EVENTS_STREAM, EVENTS_SUBJECTS, OUTCOMES_STREAM, OUTCOMES_SUBJECTS,
};
use custode_workers::notifier::Reporter;
use custode_workers::runtime::{spawn_worker, WorkerContext, WorkerName};
use custode_workers::settings::WorkerSettings;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn open_mailboxes(app: &TestApp, range: std::ops::Range<usize>) {
    for n in range {
        let res = app
            .post(
                "/v1/admin/accounts",
                Some(OPERATOR_KEY),
                json!({ "kind": "mailbox", "user_id": format!("fan{n}@pec.example.it"), "contact_email": format!("fan{n}@example.it") }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: serde_json::Value = res.json().await.unwrap();
        app.remember_secret(body["temporary_password"].as_str().unwrap());
    }
}

/// Every message of the stream `name`, in stream order: (subject, payload).
async fn stream_messages(nats: &NatsServer, name: &str) -> Vec<(String, Vec<u8>)> {
    let js = nats.jetstream().await;
    let mut stream = js.get_stream(name).await.unwrap();
    let count = stream.info().await.unwrap().state.messages;
    let mut messages = Vec::new();
    for sequence in 1..=count {
        let message = stream.get_raw_message(sequence).await.unwrap();
        messages.push((message.subject.to_string(), message.payload.to_vec()));
    }
    messages
}

/// Every message of `CUSTODE_EVENTS`, in stream order, as the events they carry.
async fn stream_events(nats: &NatsServer) -> Vec<(String, RecordedEvent)> {
    stream_messages(nats, EVENTS_STREAM)
        .await
        .into_iter()
        .map(|(subject, payload)| (subject, serde_json::from_slice(&payload).unwrap()))
        .collect()
}

/// What the relay publishes of `event`: the event as stored, less its verification data
/// (SEC-9), with the log's chain hash.
fn wire_copy(event: &RecordedEvent) -> RecordedEvent {
    let mut copy = event.clone();
    remove_verification_data(&mut copy.payload);
    copy
}

fn assert_each_event_once_in_order(published: &[(String, RecordedEvent)], head: u64) {
    let positions: Vec<u64> = published.iter().map(|(_, e)| e.position).collect();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "each event once, in log order"
    );
    for (subject, event) in published {
        assert_eq!(
            subject,
            &format!("custode.events.{}.{}", event.category(), event.event_type)
        );
    }
}

async fn relayed_to_head(app: &TestApp) {
    let relayed = app.state.relayed.clone().expect("a relay");
    let head = app.log_head();
    eventually(WAIT, "the relay to reach the head", || {
        *relayed.borrow() >= head
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_published_once_and_notices_go_out_through_jetstream() {
    let nats = NatsServer::start();
    let app = TestApp::spawn_with_nats(file_config(), &nats.url()).await;
    open_mailboxes(&app, 0..5).await;
    eventually(WAIT, "5 mails", || maildir(&app.data_dir).len() == 5).await;
    app.quiesce().await;
    relayed_to_head(&app).await;
    let published = stream_events(&nats).await;
    assert_each_event_once_in_order(&published, app.log_head());
    let local = app.state.log.read_from_blocking(0, 1000).unwrap();
    assert_eq!(
        published.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        local.iter().map(wire_copy).collect::<Vec<_>>(),
        "what JetStream carries is the log, less its password hashes"
    );
    let sent = local
        .iter()
        .filter(|e| e.event_type == "NotificationSent")
        .count();
    assert_eq!(sent, 5, "every outcome is recorded, and relayed too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_checkpoint_causes_no_duplicate() {
    // A log with 4 openings and no worker yet.
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::publish_delivery_keys(dir.path(), chrono::Utc::now());
    let app = TestApp::start_with(
        dir.path(),
        file_config(),
        custode_commands::clock::ManualClock::new(chrono::Utc::now()),
        None,
        Some("none"),
    )
    .await;
    open_mailboxes(&app, 0..4).await;
    let data_dir = app.data_dir.clone();
    let _ = app.stop().await;

    let nats = NatsServer::start();
    let js = custode_workers::nats::connect(&nats.url()).await.unwrap();
    let retention = custode_workers::settings::NatsSettings::default().retention();
    custode_workers::nats::ensure_events_stream(&js, retention)
        .await
        .unwrap();
    let log = EventLog::open(&data_dir.join("events.db"), &LogOptions::default()).unwrap();
    let events = log.read_wire_from_blocking(0, 1000).unwrap();
    let relay_store = tempfile::tempdir().unwrap();
    {
        // Published, acknowledged by JetStream, then the relay dies before its checkpoint.
        let relay =
            custode_workers::relay::Relay::new(js.clone(), relay_store.path(), retention).unwrap();
        let first = relay.publish(events.clone()).await.unwrap();
        assert_eq!(first.stored, events.len() as u64);
        assert_eq!(relay.checkpoint(), 0);
    }
    let (relayed, _relay) =
        custode_workers::relay::spawn(js.clone(), log.clone(), relay_store.path(), retention)
            .unwrap();
    let head = log.head();
    eventually(WAIT, "the restarted relay to catch up", || {
        *relayed.borrow() >= head
    })
    .await;
    let published = stream_events(&nats).await;
    assert_each_event_once_in_order(&published, head);

    // The mailer, fed by JetStream, sends one mail per account.
    let worker_dir = tempfile::tempdir().unwrap();
    let ctx = WorkerContext {
        data_dir: worker_dir.path().to_path_buf(),
        keys: DeliveryKeys::open(&data_dir.join("keys")).unwrap(),
        settings: WorkerSettings {
            public_url: "http://127.0.0.1".into(),
            ..WorkerSettings::default()
        },
        clock: Arc::new(SystemClock),
        reporter: Reporter::JetStream(Box::new(js.clone())),
    };
    let mut tasks = custode_workers::runtime::Tasks::default();
    let mailer = spawn_worker(
        WorkerName::Mailer,
        Feed::JetStream(Box::new(js.clone())),
        &ctx,
        &mut tasks,
    )
    .unwrap();
    eventually(WAIT, "4 mails", || maildir(worker_dir.path()).len() == 4).await;
    let applied = mailer.applied();
    eventually(WAIT, "the mailer to ack the stream", || {
        *applied.borrow() >= head
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(maildir(worker_dir.path()).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_restarted_loses_nothing_and_the_api_keeps_accepting() {
    let mut nats = NatsServer::start();
    let app = TestApp::spawn_with_nats(file_config(), &nats.url()).await;
    open_mailboxes(&app, 0..3).await;
    eventually(WAIT, "3 mails", || maildir(&app.data_dir).len() == 3).await;
    nats.stop();
    open_mailboxes(&app, 3..6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        maildir(&app.data_dir).len(),
        3,
        "nothing reaches the workers meanwhile"
    );
    nats.restart();
    eventually(WAIT, "6 mails after the restart", || {
        maildir(&app.data_dir).len() == 6
    })
    .await;
    app.quiesce().await;
    relayed_to_head(&app).await;
    assert_each_event_once_in_order(&stream_events(&nats).await, app.log_head());
}

fn count_sent(data_dir: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(
        data_dir.join("events.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .and_then(|c| {
        c.query_row(
            "SELECT count(*) FROM events WHERE type = 'NotificationSent'",
            [],
            |r| r.get(0),
        )
    })
    .unwrap_or(-1)
}

/// A service with `--nats` and no mailer of its own, and the directory of a mailer run apart
/// (`custode worker mailer`) that shares the service's delivery keys (a symlink here).
struct MailerApart {
    nats: NatsServer,
    app: TestApp,
    dir: tempfile::TempDir,
    _service_dir: tempfile::TempDir,
}

impl MailerApart {
    async fn start() -> Self {
        Self::start_on(NatsServer::start()).await
    }

    async fn start_on(nats: NatsServer) -> Self {
        let service_dir = tempfile::tempdir().unwrap();
        let app = TestApp::start_with(
            service_dir.path(),
            file_config(),
            custode_commands::clock::ManualClock::new(chrono::Utc::now()),
            Some(&nats.url()),
            Some("sms,scheduler"),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(app.data_dir.join("keys"), dir.path().join("keys")).unwrap();
        Self {
            nats,
            app,
            dir,
            _service_dir: service_dir,
        }
    }

    fn spawn(&self) -> std::process::Child {
        self.spawn_with(&[])
    }

    fn spawn_with(&self, args: &[&str]) -> std::process::Child {
        Command::new(BIN)
            .args(["worker", "mailer", "--nats", &self.nats.url()])
            .args(args)
            .env("CUSTODE_DATA_DIR", self.dir.path())
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("custode worker starts")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_run_apart_and_killed_mid_stream_resumes_where_it_acked() {
    let apart = MailerApart::start().await;
    let (app, worker_dir) = (&apart.app, &apart.dir);
    let start_worker = || apart.spawn();
    let mut worker = start_worker();
    open_mailboxes(app, 0..6).await;
    eventually(WAIT, "the first mails", || {
        maildir(worker_dir.path()).len() >= 2
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let before = maildir(worker_dir.path()).len();
    open_mailboxes(app, 6..12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        maildir(worker_dir.path()).len(),
        before,
        "no mailer is running"
    );
    // Restarted with its own metrics listener: a worker apart is seen by the operators' scraper.
    let port = crate::processes::free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut worker = apart.spawn_with(&["--metrics-listen", &metrics_addr]);
    eventually(WAIT, "12 mails", || maildir(worker_dir.path()).len() == 12).await;
    eventually(WAIT, "12 outcomes recorded by the service", || {
        count_sent(&app.data_dir) == 12
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(maildir(worker_dir.path()).len(), 12, "no mail twice");
    assert_eq!(count_sent(&app.data_dir), 12, "no outcome twice");
    let ids: HashSet<_> = maildir(worker_dir.path()).into_iter().collect();
    assert_eq!(ids.len(), 12);
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let handled: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("custode_worker_handled_position{worker=\"mailer\"} "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!(handled > 0, "{metrics}");
    for notice_state in ["pending", "dead"] {
        assert!(
            metrics.contains(&format!(
                "custode_notices{{channel=\"email\",state=\"{notice_state}\"}} 0"
            )),
            "{metrics}"
        );
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_run_apart_builds_the_same_read_models_from_jetstream() {
    let nats = NatsServer::start();
    let app = TestApp::spawn_with_nats(file_config(), &nats.url()).await;
    let projector_dir = tempfile::tempdir().unwrap();
    let mut projector = Command::new(BIN)
        .args(["worker", "projector", "--nats", &nats.url()])
        .env("CUSTODE_DATA_DIR", projector_dir.path())
        .current_dir(projector_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("custode worker starts");
    open_mailboxes(&app, 0..4).await;
    app.quiesce().await;
    let head = app.log_head();
    let read_db = projector_dir.path().join("read.db");
    let position = || -> i64 {
        rusqlite::Connection::open_with_flags(&read_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT min(position) FROM checkpoints", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    eventually(WAIT, "the projector apart to reach the head", || {
        position() == head as i64
    })
    .await;
    projector.kill().unwrap();
    projector.wait().unwrap();
    let apart = rusqlite::Connection::open(&read_db).unwrap();
    let live = rusqlite::Connection::open(app.data_dir.join("read.db")).unwrap();
    assert_eq!(
        custode_projections::dump(&apart).unwrap(),
        custode_projections::dump(&live).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_apart_whose_store_was_lost_still_knows_the_accounts_it_saw() {
    let apart = MailerApart::start().await;
    let (app, worker_dir) = (&apart.app, &apart.dir);
    let start_worker = || apart.spawn();
    let mut worker = start_worker();
    let (_, temporary) = app.open_mailbox("perso@pec.example.it").await;
    eventually(WAIT, "the opening mail", || {
        maildir(worker_dir.path()).len() == 1
    })
    .await;
    eventually(WAIT, "its outcome", || count_sent(&app.data_dir) == 1).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    for file in ["workers.db", "workers.db-wal", "workers.db-shm"] {
        let _ = std::fs::remove_file(worker_dir.path().join(file));
    }
    let mut worker = start_worker();
    // The holder changes the password: the notice needs the contact address, which only the
    // account's opening (already acked by the lost store) tells.
    let token = app.login("perso@pec.example.it", &temporary).await;
    let new_password = "Lago#Verde-2026";
    app.remember_secret(new_password);
    let res = app.change_password(&token, &temporary, new_password).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    eventually(WAIT, "the password-changed mail", || {
        maildir(worker_dir.path()).len() == 2
    })
    .await;
    eventually(WAIT, "two outcomes", || count_sent(&app.data_dir) == 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        count_sent(&app.data_dir),
        2,
        "the opening mail was not sent again"
    );
    worker.kill().unwrap();
    worker.wait().unwrap();
}

/// The two streams as custode made them before SEC-9: messages kept for ever.
async fn streams_kept_for_ever(nats: &NatsServer) {
    let js = nats.jetstream().await;
    for (name, subjects) in [
        (EVENTS_STREAM, EVENTS_SUBJECTS),
        (OUTCOMES_STREAM, OUTCOMES_SUBJECTS),
    ] {
        let made = js
            .create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subjects.into()],
                duplicate_window: DUPLICATE_WINDOW,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(made.cached_info().config.max_age, Duration::ZERO);
    }
}

/// The mail texts in `dir`'s Maildir that contain `text`.
fn mails_with(dir: &Path, text: &str) -> usize {
    maildir(dir)
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|m| m.contains(text))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_answer_hash_reaches_jetstream_and_its_streams_keep_7_days_sec_9() {
    let nats = NatsServer::start();
    streams_kept_for_ever(&nats).await;
    let apart = MailerApart::start_on(nats).await;
    let (app, worker_dir) = (&apart.app, &apart.dir);
    let mut worker = apart.spawn();

    // Every event that holds a password or answer hash: an opening's temporary password, a
    // password change, a security answer, a recovery, an imported password, an operator reset.
    let user = "bus@pec.example.it";
    recoverable(app, user).await;
    let started = start(app, user).await;
    let res = call(app, &started, "/question", json!({ "answer": ANSWER })).await;
    let reset = reset_token(res).await;
    let res = complete(app, user, &reset).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let imported = "Migrata#Casella-9";
    app.remember_secret(imported);
    let res = app
        .post(
            "/v1/admin/accounts",
            Some(OPERATOR_KEY),
            json!({ "kind": "mailbox", "user_id": "migrata@pec.example.it", "contact_email": "m@example.it", "password_phc": phc(imported) }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = operator_reset(app, user).await;
    app.remember_secret(&temporary_password(res).await);

    // The mailer apart decodes every one of them: it mails the password change and, after
    // the security answer, the recovery.
    eventually(
        WAIT,
        "the password-change notice from the mailer apart",
        || mails_with(worker_dir.path(), &format!("{user} è stata cambiata")) >= 1,
    )
    .await;
    eventually(WAIT, "the recovery notice from the mailer apart", || {
        mails_with(worker_dir.path(), &format!("{user} è stata reimpostata")) >= 1
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();

    relayed_to_head(app).await;
    let local = app.state.log.read_from_blocking(0, 1000).unwrap();
    let with_hashes: HashSet<&str> = local
        .iter()
        .filter(|e| e.payload.to_string().contains("$argon2"))
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        with_hashes,
        HashSet::from([
            "TemporaryPasswordIssued",
            "PasswordChanged",
            "RecoveryInfoSet",
            "PasswordRecovered",
            "PasswordImported",
        ]),
        "the log holds each kind of hash"
    );
    for name in [EVENTS_STREAM, OUTCOMES_STREAM] {
        let messages = stream_messages(&apart.nats, name).await;
        assert!(!messages.is_empty(), "{name} has messages");
        for (subject, payload) in &messages {
            let text = String::from_utf8_lossy(payload);
            assert!(!text.contains("$argon2"), "a hash on {subject}: {text}");
        }
    }
    // Outcomes the mailer reported before it stopped may still be appending: compare what the
    // log held when read.
    let published: Vec<RecordedEvent> = stream_events(&apart.nats)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .take(local.len())
        .collect();
    assert_eq!(
        published,
        local.iter().map(wire_copy).collect::<Vec<_>>(),
        "every event, with its chain hash; only the verification data is gone"
    );
    let marked = published
        .iter()
        .filter(|e| e.payload.to_string().contains(REMOVED))
        .count();
    assert_eq!(
        marked,
        local
            .iter()
            .filter(|e| e.payload.to_string().contains("$argon2"))
            .count()
    );

    let js = apart.nats.jetstream().await;
    for name in [EVENTS_STREAM, OUTCOMES_STREAM] {
        let mut stream = js.get_stream(name).await.unwrap();
        let config = stream.info().await.unwrap().config.clone();
        assert_eq!(
            config.max_age,
            Duration::from_secs(7 * 24 * 60 * 60),
            "{name} keeps messages 7 days"
        );
    }
}
