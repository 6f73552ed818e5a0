//! Notifications end to end (NT-1..3): the embedded Maildir through the real binary, across a
//! restart and a `kill -9`; a real SMTP server that accepts, refuses then recovers, or never
//! recovers (a dead letter an operator sees and retries); an HTTP SMS gateway that fails with a
//! 5xx and a timeout before it accepts.

use crate::helpers::{expect_problem, file_config, TestApp, OPERATOR_KEY};
use crate::processes::{eventually, maildir, serve, Reply, SmsReceiver, SmtpSink};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn count_events(data_dir: &Path, event_type: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("events.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT count(*) FROM events WHERE type = ?1",
        [event_type],
        |r| r.get(0),
    )
    .unwrap()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

async fn open(client: &reqwest::Client, base: &str, n: usize) -> Option<Value> {
    let language = if n.is_multiple_of(2) { "it" } else { "en" };
    let res = client
        .post(format!("{base}/v1/admin/accounts"))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({
            "kind": "mailbox",
            "user_id": format!("casella{n}@pec.example.it"),
            "contact_email": format!("titolare{n}@example.it"),
            "language": language,
        }))
        .send()
        .await
        .ok()?;
    (res.status() == StatusCode::CREATED).then_some(())?;
    res.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_mails_each_opening_once_across_a_restart_and_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let opened =
        futures_util::future::join_all((0..20).map(|n| open(&client, &served.base, n))).await;
    assert!(opened.iter().all(Option::is_some), "20 accounts open");
    eventually(WAIT, "20 mails", || maildir(dir.path()).len() == 20).await;
    for (n, account) in opened.iter().enumerate() {
        let temporary = account.as_ref().unwrap()["temporary_password"]
            .as_str()
            .unwrap();
        let mail = maildir(dir.path())
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .find(|m| header(m, "To") == Some(&format!("titolare{n}@example.it")))
            .unwrap_or_else(|| panic!("a mail to titolare{n}"));
        let (language, subject) = if n.is_multiple_of(2) {
            ("it", "Le credenziali temporanee del tuo account")
        } else {
            ("en", "Your account's temporary credentials")
        };
        assert_eq!(header(&mail, "Content-Language"), Some(language));
        assert_eq!(header(&mail, "Subject"), Some(subject));
        assert!(header(&mail, "Message-ID").is_some());
        assert!(
            mail.contains(temporary),
            "the temporary password is in the mail"
        );
    }
    eventually(WAIT, "20 outcomes in the log", || {
        count_events(dir.path(), "NotificationSent") == 20
    })
    .await;

    // A restart sends nothing again.
    drop(served);
    let served = serve(dir.path(), &[]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(maildir(dir.path()).len(), 20);

    // A kill -9 in the middle of a burst: every account the log holds gets exactly one mail.
    let base = served.base.clone();
    let burst: Vec<_> = (20..40)
        .map(|n| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move { open(&client, &base, n).await })
        })
        .collect();
    eventually(WAIT, "the burst to start landing", || {
        count_events(dir.path(), "AccountOpened") >= 24
    })
    .await;
    served.kill_9();
    for task in burst {
        let _ = task.await;
    }
    let _served = serve(dir.path(), &[]).await;
    let accounts = count_events(dir.path(), "AccountOpened");
    assert!(accounts >= 24);
    eventually(WAIT, "one mail per account after the crash", || {
        maildir(dir.path()).len() as i64 == accounts
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(maildir(dir.path()).len() as i64, accounts, "no mail twice");
    eventually(WAIT, "an outcome per mail", || {
        count_events(dir.path(), "NotificationSent") == accounts
    })
    .await;
}

/// One number `sql` reads from the worker store's outbox (0 while the store cannot be read).
/// One value the worker store's outbox query `sql` gives (its type's default when none).
fn outbox<T: rusqlite::types::FromSql + Default>(app: &TestApp, sql: &str) -> T {
    rusqlite::Connection::open(app.data_dir.join(custode_workers::store::STORE_FILE))
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or_default()
}

fn smtp_config(sink: &SmtpSink, max_attempts: u32) -> custode::config::FileConfig {
    let mut file = file_config();
    file.mail.smtp_url = Some(sink.url());
    file.mail.from = "PEC Custode <noreply@pec.example.it>".into();
    file.delivery.max_attempts = max_attempts;
    file.delivery.backoff_base_ms = 20;
    file.delivery.backoff_max_ms = 100;
    file
}

/// Moves the test clock a second every 20 ms until `check` holds: retries fall due by the
/// service's clock, which the test owns.
async fn advancing<F: FnMut() -> bool>(app: &TestApp, what: &str, mut check: F) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        app.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn open_with_contact(app: &TestApp, user_id: &str, contact: Value) -> String {
    let mut body = json!({ "kind": "mailbox", "user_id": user_id, "language": "en" });
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
    temporary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opening_notice_reaches_a_real_smtp_server_in_the_holders_language() {
    let sink = SmtpSink::start();
    let app = TestApp::spawn_with(smtp_config(&sink, 3)).await;
    let temporary = open_with_contact(
        &app,
        "mario.rossi@pec.example.it",
        json!({"contact_email": "mario@example.it"}),
    )
    .await;
    eventually(WAIT, "the mail", || sink.messages().len() == 1).await;
    let mail = &sink.messages()[0];
    assert_eq!(header(mail, "X-Envelope-To"), Some("mario@example.it"));
    assert_eq!(header(mail, "To"), Some("mario@example.it"));
    assert_eq!(
        header(mail, "Subject"),
        Some("Your account's temporary credentials")
    );
    assert_eq!(header(mail, "Content-Language"), Some("en"));
    assert!(mail.contains(&temporary));
    app.quiesce().await;
    assert_eq!(count_events(&app.data_dir, "NotificationSent"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_smtp_server_gets_the_notice_once_it_recovers() {
    let sink = SmtpSink::start();
    sink.refuse(true);
    let app = TestApp::spawn_with(smtp_config(&sink, 20)).await;
    open_with_contact(
        &app,
        "paola@pec.example.it",
        json!({"contact_email": "paola@example.it"}),
    )
    .await;
    let attempts = || outbox::<i64>(&app, "SELECT coalesce(max(attempts), 0) FROM outbox");
    advancing(&app, "two refused attempts", || attempts() >= 2).await;
    assert!(sink.messages().is_empty());
    // The refusal quoted the recipient: kept for the operator, with the address masked.
    let kept: String = outbox(&app, "SELECT last_error FROM outbox WHERE attempts >= 2");
    assert!(kept.contains("Try again later"), "{kept}");
    assert!(!kept.contains("paola@example.it"), "{kept}");
    assert!(
        kept.contains(&custode_domain::masking::mask_email("paola@example.it")),
        "{kept}"
    );
    sink.refuse(false);
    advancing(&app, "the mail after recovery", || {
        sink.messages().len() == 1
    })
    .await;
    app.quiesce().await;
    let sent = app.state.log.read_from_blocking(0, 100).unwrap();
    let sent: Vec<_> = sent
        .iter()
        .filter(|e| e.event_type == "NotificationSent")
        .collect();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].payload["attempts"].as_u64().unwrap() >= 3);
    assert_eq!(sink.messages().len(), 1, "sent once");
}

/// The operator's gauge of notices in `state` on `channel` (`custode_notices`, on /metrics).
async fn notices_gauge(app: &TestApp, channel: &str, state: &str) -> Option<u64> {
    let res = app.metrics().await;
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let series = format!("custode_notices{{channel=\"{channel}\",state=\"{state}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.trim().parse().unwrap())
}

/// Issue 22: openings keep coming while the SMTP server refuses every mail. Every command is
/// answered, the operator's gauge shows the notices waiting, and once the server takes mail
/// again each one arrives exactly once (one `NotificationSent` each), by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_refusing_smtp_server_delays_every_notice_and_loses_or_repeats_none() {
    const OPENINGS: usize = 40;
    let sink = SmtpSink::start();
    sink.refuse(true);
    let app = TestApp::spawn_with(smtp_config(&sink, 1_000)).await;
    let client = reqwest::Client::new();
    // In waves of ten at once.
    let mut opened = Vec::new();
    for wave in (0..OPENINGS).collect::<Vec<_>>().chunks(10) {
        opened.extend(
            futures_util::future::join_all(wave.iter().map(|n| open(&client, &app.base, *n))).await,
        );
    }
    assert!(
        opened.iter().all(Option::is_some),
        "every opening is answered while mail is refused"
    );
    for body in opened.iter().flatten() {
        app.remember_secret(body["temporary_password"].as_str().unwrap());
    }
    let tried_twice = || outbox::<i64>(&app, "SELECT count(*) FROM outbox WHERE attempts >= 2");
    advancing(&app, "every notice refused twice", || {
        tried_twice() == OPENINGS as i64
    })
    .await;
    assert!(sink.messages().is_empty());
    assert_eq!(
        notices_gauge(&app, "email", "pending").await,
        Some(OPENINGS as u64),
        "the operator sees the notices waiting"
    );
    assert_eq!(notices_gauge(&app, "email", "dead").await, Some(0));
    let res = app.get("/readyz", None).await;
    assert_eq!(res.status(), StatusCode::OK, "commands are still served");

    sink.refuse(false);
    advancing(&app, "every mail after the recovery", || {
        sink.messages().len() >= OPENINGS
    })
    .await;
    app.quiesce().await;
    let recipients = sink
        .messages()
        .iter()
        .filter_map(|m| header(m, "To").map(str::to_string))
        .collect();
    delivered_once(&app, "email", recipients, OPENINGS).await;
}

/// After an outage: `delivered` (what tells one delivery from another: a recipient, a notice
/// id) holds each of `expected` notices exactly once, each has its `NotificationSent`, and none
/// is still waiting.
async fn delivered_once(app: &TestApp, channel: &str, mut delivered: Vec<String>, expected: usize) {
    assert_eq!(delivered.len(), expected, "none twice");
    delivered.sort_unstable();
    delivered.dedup();
    assert_eq!(delivered.len(), expected, "each once");
    eventually(WAIT, "an outcome per notice", || {
        count_events(&app.data_dir, "NotificationSent") == expected as i64
    })
    .await;
    assert_eq!(notices_gauge(app, channel, "pending").await, Some(0));
}

/// Issue 22: while the SMS gateway times out on every request, openings with a mobile keep
/// being answered; each text reaches the gateway exactly once after it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_an_sms_gateway_that_times_out_delays_every_text_and_loses_or_repeats_none() {
    const OPENINGS: usize = 40;
    // The first requests hang past the client's timeout: more of them than there are texts,
    // so none can be accepted before every text has timed out at least once.
    let gateway = SmsReceiver::start(
        (0..3 * OPENINGS)
            .map(|_| Reply::Hang(Duration::from_secs(2)))
            .collect(),
    )
    .await;
    let mut file = file_config();
    file.sms.gateway_url = Some(gateway.url.clone());
    file.sms.gateway_token = Some("gateway-token-1".into());
    file.sms.timeout_secs = 1;
    file.delivery.max_attempts = 1_000;
    file.delivery.backoff_base_ms = 20;
    file.delivery.backoff_max_ms = 100;
    let app = TestApp::spawn_with(file).await;
    let open_mobile = |n: usize| {
        let app = &app;
        async move {
            let res = app
                .post(
                    "/v1/admin/accounts",
                    Some(OPERATOR_KEY),
                    json!({
                        "kind": "mailbox",
                        "user_id": format!("mobile{n}@pec.example.it"),
                        "contact_mobile": format!("+39 333 000 {n:04}"),
                        "language": "it",
                    }),
                )
                .await;
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            assert_eq!(
                status,
                StatusCode::CREATED,
                "answered during the outage: {body}"
            );
            app.remember_secret(body["temporary_password"].as_str().unwrap());
        }
    };
    // In waves of ten at once, as above.
    for wave in (0..OPENINGS).collect::<Vec<_>>().chunks(10) {
        futures_util::future::join_all(wave.iter().map(|n| open_mobile(*n))).await;
    }
    advancing(&app, "every text timed out once", || {
        gateway.received.lock().unwrap().len() >= OPENINGS
    })
    .await;
    assert!(gateway.accepted.lock().unwrap().is_empty());
    let pending = notices_gauge(&app, "sms", "pending").await;
    assert_eq!(
        pending,
        Some(OPENINGS as u64),
        "the operator sees the texts waiting"
    );
    advancing(&app, "every text accepted", || {
        gateway.accepted.lock().unwrap().len() >= OPENINGS
    })
    .await;
    app.quiesce().await;
    let ids = gateway
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|s| s["notice_id"].as_str().unwrap().to_string())
        .collect();
    delivered_once(&app, "sms", ids, OPENINGS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_that_never_gets_through_is_a_dead_letter_an_operator_retries() {
    let sink = SmtpSink::start();
    sink.refuse(true);
    let app = TestApp::spawn_with(smtp_config(&sink, 3)).await;
    let temporary = open_until_dead_letter(&app, "luca").await;
    app.quiesce().await;

    let res = app.get("/v1/admin/dead-letters", None).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app.get("/v1/admin/dead-letters", Some(OPERATOR_KEY)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    let letter = &items[0];
    assert_eq!(letter["channel"], "email");
    assert_eq!(letter["template"], "temporary_credentials");
    assert_eq!(letter["recipient"], "*****ca@e*****.it");
    assert_eq!(letter["attempts"], 3);
    assert!(
        letter["updated_at"].as_str().unwrap().ends_with('Z'),
        "{letter}"
    );
    assert!(
        letter["last_error"].as_str().unwrap().contains("451"),
        "{letter}"
    );
    let notice_id = letter["notice_id"].as_str().unwrap().to_string();
    // The holder's page says so too.
    let session = app.login("luca@pec.example.it", &temporary).await;
    let page: Value = app
        .get("/v1/account", Some(&session))
        .await
        .json()
        .await
        .unwrap();
    let undelivered = page["undelivered_notices"].as_array().unwrap();
    assert_eq!(undelivered.len(), 1, "{page}");
    assert_eq!(undelivered[0]["notice_id"], notice_id.as_str());
    assert_eq!(undelivered[0]["template"], "temporary_credentials");

    // Bad retries change nothing.
    let head = app.log_head();
    let res = app
        .post(
            "/v1/admin/dead-letters/not-a-uuid/retry",
            Some(OPERATOR_KEY),
            json!({}),
        )
        .await;
    expect_problem(res, StatusCode::NOT_FOUND, "dead-letter-not-found").await;
    let res = app
        .post(
            &format!("/v1/admin/dead-letters/{}/retry", uuid::Uuid::nil()),
            Some(OPERATOR_KEY),
            json!({}),
        )
        .await;
    expect_problem(res, StatusCode::NOT_FOUND, "dead-letter-not-found").await;
    assert_eq!(app.log_head(), head);

    sink.refuse(false);
    let retry = format!("/v1/admin/dead-letters/{notice_id}/retry");
    let res = app.post(&retry, Some(OPERATOR_KEY), json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    advancing(&app, "the retried mail", || sink.messages().len() == 1).await;
    app.quiesce().await;
    let res = app.post(&retry, Some(OPERATOR_KEY), json!({})).await;
    expect_problem(res, StatusCode::CONFLICT, "dead-letter-not-dead").await;
    let body: Value = app
        .get("/v1/admin/dead-letters", Some(OPERATOR_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"], json!([]));
    assert_eq!(count_events(&app.data_dir, "NotificationSent"), 1);
    let page: Value = app
        .get("/v1/account", Some(&session))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["undelivered_notices"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_destroys_a_delivery_key_once_its_secrets_have_expired() {
    let app = TestApp::spawn().await;
    open_with_contact(
        &app,
        "chiave@pec.example.it",
        json!({"contact_email": "chiave@example.it"}),
    )
    .await;
    eventually(WAIT, "the mail", || maildir(&app.data_dir).len() == 1).await;
    app.quiesce().await;
    // The day's private key opened the temporary password (sealed to its public half).
    let day = custode_commands::clock::Clock::now(&app.clock)
        .format("%Y%m%d")
        .to_string();
    let private = app.data_dir.join(format!("keys/delivery/{day}.x25519"));
    assert!(
        private.exists(),
        "the day's key sealed the temporary password"
    );
    // One day on, the key still lives (a link sealed late in the day is still valid).
    app.advance(chrono::Duration::days(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(private.exists());
    // Past its day and two more, it is destroyed, public half too: the sealed copy in the
    // log is unreadable from now on.
    app.advance(chrono::Duration::days(2));
    eventually(WAIT, "the key's destruction", || !private.exists()).await;
    let public = app.data_dir.join(format!("keys/delivery/{day}.pub"));
    eventually(WAIT, "the public half's removal", || !public.exists()).await;
    let store =
        rusqlite::Connection::open(app.data_dir.join(custode_workers::store::STORE_FILE)).unwrap();
    let fired = || -> i64 {
        store
            .query_row(
                "SELECT count(*) FROM deadlines WHERE state = 'fired'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    // The timer is marked fired right after its action: once, and only once.
    eventually(WAIT, "the timer marked fired", || fired() == 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(fired(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sms_gateway_gets_the_text_after_a_5xx_and_a_timeout() {
    let gateway = SmsReceiver::start(vec![
        Reply::Status(503),
        Reply::Hang(Duration::from_secs(3)),
    ])
    .await;
    let mut file = file_config();
    file.sms.gateway_url = Some(gateway.url.clone());
    file.sms.gateway_token = Some("gateway-token-1".into());
    file.sms.timeout_secs = 1;
    file.delivery.backoff_base_ms = 20;
    file.delivery.backoff_max_ms = 100;
    let app = TestApp::spawn_with(file).await;
    let temporary = open_with_contact(
        &app,
        "anna@pec.example.it",
        json!({"contact_mobile": "+39 333 123 4567"}),
    )
    .await;
    advancing(&app, "the accepted SMS", || {
        gateway.accepted.lock().unwrap().len() == 1
    })
    .await;
    app.quiesce().await;
    let received = gateway.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3, "a 503, a timeout, then accepted");
    for (auth, _) in &received {
        assert_eq!(auth.as_deref(), Some("Bearer gateway-token-1"));
    }
    let sms = &gateway.accepted.lock().unwrap()[0];
    assert_eq!(sms["to"], "+393331234567");
    assert!(sms["text"].as_str().unwrap().contains(&temporary));
    assert!(sms["notice_id"].as_str().is_some());
    assert!(sms["at"].as_str().is_some());
    let sent = app.state.log.read_from_blocking(0, 100).unwrap();
    let sent: Vec<_> = sent
        .iter()
        .filter(|e| e.event_type == "NotificationSent")
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].payload["channel"], "sms");
    assert_eq!(sent[0].payload["attempts"], 3);
    assert_eq!(sent[0].payload["to"], "+39 ***** **67");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_and_new_recovery_information_are_told_to_the_contact_address_nt_4() {
    let app = TestApp::spawn().await;
    app.ready_mailbox("avvisi@pec.example.it").await;
    eventually(WAIT, "3 mails", || maildir(&app.data_dir).len() == 3).await;
    let mails: Vec<String> = maildir(&app.data_dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(mails
        .iter()
        .all(|m| header(m, "To") == Some("titolare@example.it")));
    for expected in [
        "Password temporanea:",
        "La password dell'account avvisi@pec.example.it è stata cambiata",
        "Le informazioni di recupero dell'account avvisi@pec.example.it",
    ] {
        assert_eq!(
            mails.iter().filter(|m| m.contains(expected)).count(),
            1,
            "{expected}"
        );
    }
    app.quiesce().await;
    assert_eq!(count_events(&app.data_dir, "NotificationSent"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_start_on_an_old_log_do_not_mail_its_past() {
    // A data directory from before the workers (or whose worker store was lost).
    let dir = tempfile::tempdir().unwrap();
    let clock = custode_commands::clock::ManualClock::new(chrono::Utc::now());
    crate::helpers::publish_delivery_keys(dir.path(), custode_commands::clock::Clock::now(&clock));
    let app =
        TestApp::start_with(dir.path(), file_config(), clock.clone(), None, Some("none")).await;
    open_with_contact(
        &app,
        "vecchio@pec.example.it",
        json!({"contact_email": "vecchio@example.it"}),
    )
    .await;
    let (data_dir, _, clock) = app.stop().await;
    clock.advance(chrono::Duration::hours(49));

    let app = TestApp::start(&data_dir, file_config(), clock).await;
    open_with_contact(
        &app,
        "nuovo@pec.example.it",
        json!({"contact_email": "nuovo@example.it"}),
    )
    .await;
    eventually(WAIT, "the new account's mail", || {
        maildir(&app.data_dir).len() == 1
    })
    .await;
    app.quiesce().await;
    let mail = std::fs::read_to_string(&maildir(&app.data_dir)[0]).unwrap();
    assert_eq!(header(&mail, "To"), Some("nuovo@example.it"));
    assert_eq!(count_events(&app.data_dir, "NotificationSent"), 1);
}

/// Opens `<name>@pec.example.it` with contact `<name>@example.it` on an app whose relay
/// refuses it, and waits (moving the clock through the retries) for the dead letter; returns
/// the temporary password.
async fn open_until_dead_letter(app: &TestApp, name: &str) -> String {
    let temporary = open_with_contact(
        app,
        &format!("{name}@pec.example.it"),
        json!({ "contact_email": format!("{name}@example.it") }),
    )
    .await;
    advancing(app, "the dead letter", || {
        count_events(&app.data_dir, "NotificationFailed") == 1
    })
    .await;
    temporary
}

/// Against `sink`: a mailer set up with `refused` gets its notice refused (a dead letter whose
/// error is returned, nothing delivered); one set up with `accepted` delivers, once.
async fn refused_then_accepted(
    sink: &SmtpSink,
    refused: custode::config::FileConfig,
    accepted: custode::config::FileConfig,
    secret: &str,
) -> String {
    let app = TestApp::spawn_with(refused).await;
    open_until_dead_letter(&app, "primo").await;
    assert!(sink.messages().is_empty());
    app.quiesce().await;
    let error = app
        .state
        .log
        .read_from_blocking(0, 100)
        .unwrap()
        .iter()
        .find(|e| e.event_type == "NotificationFailed")
        .map(|e| e.payload["error"].as_str().unwrap().to_lowercase())
        .unwrap();
    app.remember_secret(secret);
    drop(app);

    let app = TestApp::spawn_with(accepted).await;
    open_with_contact(
        &app,
        "secondo@pec.example.it",
        json!({"contact_email": "secondo@example.it"}),
    )
    .await;
    eventually(WAIT, "the mail", || sink.messages().len() == 1).await;
    assert_eq!(
        header(&sink.messages()[0], "X-Envelope-To"),
        Some("secondo@example.it")
    );
    app.quiesce().await;
    app.remember_secret(secret);
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailer_authenticates_to_a_relay_that_requires_it() {
    let sink = SmtpSink::start_with_auth("custode", "relay-pass-1");
    let with_password = |password: &str| {
        let mut file = smtp_config(&sink, 2);
        file.mail.smtp_url = Some(format!("smtp://custode:{password}@127.0.0.1:{}", sink.port));
        file
    };
    let error = refused_then_accepted(
        &sink,
        with_password("wrong"),
        with_password("relay-pass-1"),
        "relay-pass-1",
    )
    .await;
    assert!(error.contains("535") || error.contains("auth"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailer_speaks_starttls_to_a_relay_whose_ca_it_is_given() {
    let (sink, ca) = SmtpSink::start_with_tls("custode", "relay-pass-2");
    let url = format!(
        "smtp://custode:relay-pass-2@localhost:{}?tls=required",
        sink.port
    );
    // Without the relay's CA the certificate is not trusted: nothing is sent in the clear.
    let mut untrusted = smtp_config(&sink, 1);
    untrusted.mail.smtp_url = Some(url.clone());
    let mut trusted = smtp_config(&sink, 2);
    trusted.mail.smtp_url = Some(url);
    trusted.mail.ca_file = Some(ca);
    let error = refused_then_accepted(&sink, untrusted, trusted, "relay-pass-2").await;
    assert!(
        error.contains("certificate") || error.contains("tls"),
        "{error}"
    );
}
