//! The notifiers (NT-1..4): the mailer and the SMS sender are one worker on two channels.
//!
//! Handling an event (inside the transaction that records it as handled) folds the account's
//! contacts, asks the pure notification policy ([`notices_for`]) what the event calls for, and
//! puts each notice of this worker's channel in the outbox. A delivery loop then sends what is
//! due, each notice in a task of its own, so a failing notice never holds up the others:
//!
//! ```text
//!   pending ──sent──► sent ──reported──► (NotificationSent in the log)
//!     │  ▲
//!     │  └── failed, attempts < max: wait backoff(attempts), still pending
//!     └───── failed, attempts = max ──► dead ──reported──► (NotificationFailed: a dead letter)
//!   dead ──NotificationRetryRequested (an operator)──► pending, attempts reset
//! ```
//! The outbox row is keyed by a notice id derived from the event id, so an event handled again
//! (it never is: the delivery record) could not queue a second notice either. A crash between a
//! send and its bookkeeping sends that one notice again on restart; the embedded sinks are
//! idempotent by notice id (Maildir file name, SMS line), and SMTP relays see the same
//! `Message-ID`.

use crate::settings::WorkerSettings;
use crate::store::Handler;
use crate::templates::{self, Input};
use crate::transport::{Mail, MailTransport, Sms, SmsTransport};
use crate::WorkerError;
use async_nats::jetstream::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use custode_commands::accounts::AccountHandler;
use custode_commands::accounts::Caller;
use custode_commands::clock::Clock;
use custode_commands::delivery::{DeliveryKeyError, DeliveryKeys};
use custode_commands::notices::NoticeHandler;
use custode_domain::account::Language;
use custode_domain::envelope::decode;
use custode_domain::envelope::EventGroup;
use custode_domain::masking::{mask_email, mask_mobile};
use custode_domain::notice::{
    Channel, NoticeCommand, NoticeEvent, NoticeRef, NotificationFailed, NotificationSent,
};
use custode_domain::notify::{notices_for, ContactEvent, Contacts, Notice, NotifyEvent};
use custode_domain::schedule::delivery_key_end;
use custode_domain::schedule::Timer;
use custode_domain::{Actor, RecordedEvent};
use futures_util::{FutureExt, StreamExt};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// Notices on their way at once, per notifier.
const IN_FLIGHT: usize = 32;
/// Due rows read at a time.
const DUE_BATCH: usize = 64;
/// Outcomes recorded at once (they share the log's group commits).
const REPORTS_IN_FLIGHT: usize = 64;
/// Settled notices read at a time for reporting.
const REPORT_BATCH: usize = 256;

/// The consumer name of the notifier of `channel`.
pub fn consumer_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "mailer",
        Channel::Sms => "sms",
    }
}

/// The id of the `index`-th notice of `channel` made for the event `event_id`: stable, so the
/// same event can never queue a second copy, and the `Message-ID` of a resent mail is the same.
pub fn notice_id(event_id: Uuid, channel: Channel, index: usize) -> Uuid {
    let digest = Sha256::new()
        .chain_update(event_id.as_bytes())
        .chain_update(channel.as_str().as_bytes())
        .chain_update(index.to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The event side of a notifier: fills the outbox.
pub struct NotifierHandler {
    channel: Channel,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// Events older than this get no notice (their contacts are still folded): a store that
    /// starts on an old log, or a stream replayed from its start, does not mail the past.
    max_event_age: chrono::Duration,
}

impl NotifierHandler {
    fn consumer(&self) -> &'static str {
        consumer_name(self.channel)
    }

    fn contacts(
        &self,
        tx: &Transaction<'_>,
        stream: &str,
    ) -> Result<Option<Contacts>, WorkerError> {
        let stored: Option<String> = tx
            .query_row(
                "SELECT contacts FROM contacts WHERE consumer = ?1 AND stream = ?2",
                params![self.consumer(), stream],
                |row| row.get(0),
            )
            .optional()?;
        Ok(match stored {
            Some(json) => Some(serde_json::from_str(&json)?),
            None => None,
        })
    }

    fn save_contacts(
        &self,
        tx: &Transaction<'_>,
        stream: &str,
        before: &Option<Contacts>,
        after: Option<Contacts>,
    ) -> Result<(), WorkerError> {
        if after == *before {
            return Ok(());
        }
        if let Some(after) = &after {
            tx.execute(
                "INSERT INTO contacts (consumer, stream, contacts) VALUES (?1, ?2, ?3)
                 ON CONFLICT (consumer, stream) DO UPDATE SET contacts = excluded.contacts",
                params![self.consumer(), stream, serde_json::to_string(after)?],
            )?;
        }
        Ok(())
    }

    fn on_account_event(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
    ) -> Result<(), WorkerError> {
        let notify = NotifyEvent::from_recorded(event)?;
        let contact = ContactEvent::from_recorded(event)?;
        if notify.is_none() && contact.is_none() {
            return Ok(());
        }
        let account_id = Uuid::parse_str(event.stream.trim_start_matches("account-"))
            .map_err(|e| WorkerError::Other(format!("stream {}: {e}", event.stream)))?;
        let before = self.contacts(tx, &event.stream)?;
        let notices =
            notify.map_or_else(Vec::new, |n| notices_for(account_id, &n, before.as_ref()));
        if let Some(contact) = contact {
            let after = Contacts::evolve(before.clone(), &contact);
            self.save_contacts(tx, &event.stream, &before, after)?;
        }
        let now = self.clock.now();
        if now - event.occurred_at > self.max_event_age {
            if !notices.is_empty() {
                tracing::debug!(event_id = %event.event_id, "no notice for an event older than delivery.max_event_age_hours");
            }
            return Ok(());
        }
        let now = millis(now);
        for (index, notice) in notices
            .iter()
            .filter(|n| n.channel == self.channel)
            .enumerate()
        {
            tx.execute(
                "INSERT INTO outbox (notice_id, consumer, event_id, correlation_id, account_id,
                                     notice, state, attempts, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7)
                 ON CONFLICT (notice_id) DO NOTHING",
                params![
                    notice_id(event.event_id, self.channel, index).to_string(),
                    self.consumer(),
                    event.event_id.to_string(),
                    event.correlation_id.to_string(),
                    account_id.to_string(),
                    serde_json::to_string(notice)?,
                    now,
                ],
            )?;
        }
        Ok(())
    }

    fn on_notice_event(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
    ) -> Result<(), WorkerError> {
        if let NoticeEvent::NotificationRetryRequested(retry) = decode(event)? {
            // NT-3: an operator asked for the dead letter to be tried again, from scratch.
            tx.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?3,
                        last_error = NULL, reported = 0, round = round + 1
                 WHERE notice_id = ?1 AND consumer = ?2 AND state = 'dead'",
                params![
                    retry.notice_id.to_string(),
                    self.consumer(),
                    millis(self.clock.now())
                ],
            )?;
        }
        Ok(())
    }
}

impl Handler for NotifierHandler {
    fn wants(&self, event: &RecordedEvent) -> bool {
        use custode_domain::envelope::EventGroup;
        let t = event.event_type.as_str();
        match event.category() {
            "account" => NotifyEvent::TYPES.contains(&t) || ContactEvent::TYPES.contains(&t),
            "notice" => t == "NotificationRetryRequested",
            _ => false,
        }
    }

    fn handle(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), WorkerError> {
        match event.category() {
            "account" => self.on_account_event(tx, event),
            "notice" => self.on_notice_event(tx, event),
            _ => Ok(()),
        }
    }

    fn committed(&mut self) {
        self.wake.notify_one();
    }

    /// History teaches only the contacts: its notices were queued by the run that acted on it.
    fn history(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), WorkerError> {
        if event.category() != "account" {
            return Ok(());
        }
        let Some(contact) = ContactEvent::from_recorded(event)? else {
            return Ok(());
        };
        let before = self.contacts(tx, &event.stream)?;
        let after = Contacts::evolve(before.clone(), &contact);
        self.save_contacts(tx, &event.stream, &before, after)
    }
}

/// What `custode serve` records on the workers' behalf: notices' outcomes (NT-3) on their
/// streams, and timers' commands (SEC-6's lock ends, …) through the account handler.
#[derive(Clone)]
pub struct Recorder {
    pub notices: NoticeHandler,
    pub accounts: AccountHandler,
}

impl Recorder {
    pub fn new(accounts: AccountHandler) -> Self {
        Self {
            notices: NoticeHandler::new(accounts.services().clone()),
            accounts,
        }
    }
}

/// Where a worker's results go: straight into the log when it runs beside it, or, run apart,
/// as an outcome on JetStream that `custode serve` records.
#[derive(Clone)]
pub enum Reporter {
    Log(Box<Recorder>),
    JetStream(Box<Context>),
}

/// A worker's report, as it travels on `custode.outcomes.<notice id>` (or
/// `custode.outcomes.timer`) when run apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub correlation_id: Uuid,
    /// How many times an operator had retried the notice: with the outcome's kind it makes the
    /// message id, so a dead letter retried and dead again is not taken for a duplicate.
    #[serde(default)]
    pub round: u32,
    pub command: OutcomeCommand,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OutcomeCommand {
    Sent(NotificationSent),
    Failed(NotificationFailed),
    /// A command timer came due (`key` is its deadline's key).
    TimerDue {
        key: String,
        timer: Timer,
    },
}

impl Outcome {
    /// A timer's command, to be run by whoever records outcomes.
    pub fn timer(key: &str, timer: &Timer) -> Self {
        Self {
            correlation_id: Uuid::now_v7(),
            round: 0,
            command: OutcomeCommand::TimerDue {
                key: key.to_string(),
                timer: timer.clone(),
            },
        }
    }

    /// The message id and subject it travels under: a report on a notice, or a timer.
    fn address(&self) -> (String, String) {
        match &self.command {
            OutcomeCommand::Sent(s) => (
                format!("{}-sent-{}", s.notice.notice_id, self.round),
                format!("custode.outcomes.{}", s.notice.notice_id),
            ),
            OutcomeCommand::Failed(f) => (
                format!("{}-failed-{}", f.notice.notice_id, self.round),
                format!("custode.outcomes.{}", f.notice.notice_id),
            ),
            OutcomeCommand::TimerDue { key, .. } => {
                (format!("timer-{key}"), "custode.outcomes.timer".to_string())
            }
        }
    }

    /// Records the outcome: a report on the notice's stream, a timer's command on its own
    /// stream. Both are idempotent: a report already recorded, or a timer's command whose work
    /// is done, appends nothing.
    pub async fn record(&self, recorder: &Recorder) -> Result<(), String> {
        let caller = Caller {
            actor: Actor::system(),
            correlation_id: self.correlation_id,
        };
        let (notice, cmd) = match &self.command {
            OutcomeCommand::Sent(s) => (&s.notice, NoticeCommand::RecordSent(s.clone())),
            OutcomeCommand::Failed(f) => (&f.notice, NoticeCommand::RecordDead(f.clone())),
            OutcomeCommand::TimerDue { timer, .. } => {
                return run_timer(&recorder.accounts, timer).await;
            }
        };
        recorder
            .notices
            .execute_caused(
                &notice.notice_id,
                cmd,
                &caller,
                Some(notice.source_event_id),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A command timer's command, through the account handler.
async fn run_timer(accounts: &AccountHandler, timer: &Timer) -> Result<(), String> {
    match timer {
        Timer::EndLocks { stream } => accounts
            .end_locks(stream)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Timer::MirrorNotice { stream, template } => accounts
            .mirror_notice(stream, template)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Timer::AppPasswordExpiry {
            stream,
            scope,
            expires_at,
            days_before,
        } => accounts
            .note_app_password_expiry(stream, scope, *expires_at, *days_before)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Timer::DocumentExpiry {
            stream,
            expires_on,
            days_before,
        } => accounts
            .note_document_expiry(stream, *expires_on, *days_before)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Timer::PasswordExpiry {
            stream,
            expires_at,
            days_before,
        } => accounts
            .note_password_expiry(stream, *expires_at, *days_before)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Timer::Inactivity { stream } => accounts
            .review_inactivity(stream)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        // Not a command: the scheduler that holds the keys does it itself.
        Timer::DestroyDeliveryKey { .. } => Ok(()),
    }
}

impl Reporter {
    pub async fn report(&self, outcome: &Outcome) -> Result<(), String> {
        match self {
            Reporter::Log(recorder) => outcome.record(recorder).await,
            Reporter::JetStream(js) => {
                let (message_id, subject) = outcome.address();
                let payload = serde_json::to_vec(outcome).map_err(|e| e.to_string())?;
                let publish = async_nats::jetstream::message::PublishMessage::build()
                    .message_id(message_id)
                    .payload(payload.into());
                crate::nats::outcomes_stream(js).await?;
                js.send_publish(subject, publish)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The transport of one channel.
pub enum Transport {
    Mail {
        transport: MailTransport,
        from: String,
    },
    Sms(SmsTransport),
}

impl Transport {
    /// The transport `settings` configure for `channel`, or its embedded sink under `data_dir`.
    pub fn for_channel(
        channel: Channel,
        settings: &WorkerSettings,
        data_dir: &Path,
    ) -> Result<Self, String> {
        Ok(match channel {
            Channel::Email => {
                let transport = match &settings.mail.smtp_url {
                    Some(url) => {
                        let ca = match &settings.mail.ca_file {
                            Some(path) => Some(
                                std::fs::read(path)
                                    .map_err(|e| format!("mail.ca_file {}: {e}", path.display()))?,
                            ),
                            None => None,
                        };
                        MailTransport::smtp(
                            url,
                            Duration::from_secs(settings.mail.timeout_secs),
                            ca.as_deref(),
                        )?
                    }
                    None => MailTransport::maildir(data_dir)?,
                };
                Transport::Mail {
                    transport,
                    from: settings.mail.from.clone(),
                }
            }
            Channel::Sms => Transport::Sms(match &settings.sms.gateway_url {
                Some(url) => SmsTransport::gateway(
                    url,
                    settings.sms.gateway_token.clone(),
                    Duration::from_secs(settings.sms.timeout_secs),
                )?,
                None => SmsTransport::file(data_dir),
            }),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Mail { transport, .. } => transport.describe(),
            Transport::Sms(sms) => sms.describe(),
        }
    }
}

/// One outbox row due for delivery.
struct Due {
    notice_id: Uuid,
    source_event_id: Uuid,
    correlation_id: Uuid,
    account_id: Uuid,
    notice: Notice,
    attempts: u32,
    /// Operator retries so far.
    round: u32,
}

/// The outbox columns a [`Due`] is read from, in order.
const DUE_COLUMNS: &str =
    "notice_id, event_id, correlation_id, account_id, notice, attempts, round";

type DueColumns = (String, String, String, String, String, u32, u32);

impl Due {
    fn columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<DueColumns> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
        ))
    }

    fn parse(
        (notice_id, event_id, correlation_id, account_id, notice, attempts, round): DueColumns,
    ) -> Result<Self, WorkerError> {
        let uuid =
            |s: &str| Uuid::parse_str(s).map_err(|e| WorkerError::Other(format!("outbox: {e}")));
        Ok(Due {
            notice_id: uuid(&notice_id)?,
            source_event_id: uuid(&event_id)?,
            correlation_id: uuid(&correlation_id)?,
            account_id: uuid(&account_id)?,
            notice: serde_json::from_str(&notice)?,
            attempts,
            round,
        })
    }
}

/// Why an attempt failed, and whether trying again could help.
struct Failure {
    error: String,
    permanent: bool,
}

/// A recipient as every log line, outbox row and report shows it (RI-3).
fn masked(to: &str, channel: Channel) -> String {
    match channel {
        Channel::Email => mask_email(to),
        Channel::Sms => mask_mobile(to),
    }
}

/// A transport's error as it is logged and kept in the outbox: an SMTP server or an SMS
/// gateway often quotes the recipient in its refusal ("550 <mario.rossi@…>: no such user"),
/// and the recipient is shown masked there, as everywhere else it is shown (RI-3).
fn without_recipient(error: &str, to: &str, channel: Channel) -> String {
    if to.is_empty() {
        return error.to_string();
    }
    let masked = masked(to, channel);
    let mut out = error.replace(to, &masked);
    // A mobile number is often quoted without its `+`, an address in other letter cases.
    if let Some(bare) = to.strip_prefix('+') {
        out = out.replace(bare, &masked);
    }
    let lower = to.to_lowercase();
    if lower != to {
        out = out.replace(&lower, &masked);
    }
    out
}

/// The delivery side of a notifier.
pub struct Delivery {
    channel: Channel,
    conn: Arc<Mutex<Connection>>,
    transport: Transport,
    keys: DeliveryKeys,
    reporter: Reporter,
    settings: WorkerSettings,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// Rung when attempts are settled: there is something to report.
    settled: Notify,
}

/// A notifier's two halves, sharing its wake-up.
pub fn notifier(
    channel: Channel,
    store_dir: &Path,
    transport: Transport,
    keys: DeliveryKeys,
    reporter: Reporter,
    settings: WorkerSettings,
    clock: Arc<dyn Clock>,
) -> Result<(NotifierHandler, Delivery), WorkerError> {
    let wake = Arc::new(Notify::new());
    let handler = NotifierHandler {
        channel,
        clock: clock.clone(),
        wake: wake.clone(),
        max_event_age: chrono::Duration::hours(
            i64::try_from(settings.delivery.max_event_age_hours).unwrap_or(i64::MAX / 3_600_000),
        ),
    };
    let delivery = Delivery {
        channel,
        conn: Arc::new(Mutex::new(crate::store::open_relaxed(store_dir)?)),
        transport,
        keys,
        reporter,
        settings,
        clock,
        wake,
        settled: Notify::new(),
    };
    Ok((handler, delivery))
}

impl Delivery {
    fn consumer(&self) -> &'static str {
        consumer_name(self.channel)
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, WorkerError> + Send + 'static,
    ) -> Result<T, WorkerError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| WorkerError::Stopped("worker store lock poisoned".into()))?;
            work(&mut conn)
        })
        .await
        .map_err(|e| WorkerError::Stopped(e.to_string()))?
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Due>, WorkerError> {
        let consumer = self.consumer();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DUE_COLUMNS} FROM outbox
                 WHERE consumer = ?1 AND state = 'pending' AND next_attempt_ms <= ?2
                 ORDER BY next_attempt_ms LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![consumer, millis(now), DUE_BATCH], Due::columns)?;
            rows.map(|row| Due::parse(row?)).collect()
        })
        .await
    }

    async fn attempt(&self, due: &Due) -> Result<(), Failure> {
        let notice = &due.notice;
        let secret = match &notice.secret {
            Some(sealed) => match self.keys.open_sealed(&sealed.sealed, &sealed.context) {
                Ok(secret) => Some(secret),
                // A key past its life is gone for good; one still within it may not have
                // reached this worker yet (a worker apart shares the service's key directory).
                Err(e @ DeliveryKeyError::KeyGone(_))
                    if delivery_key_end(&sealed.sealed.key_id)
                        .is_some_and(|end| end > self.clock.now()) =>
                {
                    return Err(Failure {
                        error: e.to_string(),
                        permanent: false,
                    })
                }
                Err(e @ (DeliveryKeyError::KeyGone(_) | DeliveryKeyError::Tampered)) => {
                    return Err(Failure {
                        error: e.to_string(),
                        permanent: true,
                    })
                }
                Err(e) => {
                    return Err(Failure {
                        error: e.to_string(),
                        permanent: false,
                    })
                }
            },
            None => None,
        };
        let rendered = templates::render(&Input {
            template: notice.template,
            language: notice.language,
            channel: notice.channel,
            user_id: &notice.user_id,
            secret: secret.as_ref().map(|s| s.expose()),
            public_url: &self.settings.public_url,
            purpose: notice.purpose,
        });
        let result = match &self.transport {
            Transport::Mail { transport, from } => {
                transport
                    .send(&Mail {
                        notice_id: due.notice_id,
                        from,
                        to: &notice.to,
                        subject: &rendered.subject,
                        language: language_tag(notice.language),
                        body: &rendered.body,
                    })
                    .await
            }
            Transport::Sms(sms) => {
                sms.send(&Sms {
                    at: self.clock.now().to_rfc3339_opts(SecondsFormat::Secs, true),
                    to: notice.to.clone(),
                    text: rendered.body,
                    notice_id: due.notice_id,
                })
                .await
            }
        };
        result.map_err(|error| Failure {
            error: without_recipient(&error, &notice.to, notice.channel),
            permanent: false,
        })
    }

    fn notice_ref(&self, due: &Due) -> NoticeRef {
        NoticeRef {
            notice_id: due.notice_id,
            account_id: due.account_id,
            source_event_id: due.source_event_id,
            channel: self.channel,
            template: due.notice.template.as_str().to_string(),
            to: masked(&due.notice.to, self.channel),
        }
    }

    /// Records attempts' results: sent, pending again after a backoff, or dead.
    async fn settle(
        &self,
        results: Vec<(Due, Result<(), Failure>)>,
        now: DateTime<Utc>,
    ) -> Result<(), WorkerError> {
        let max_attempts = self.settings.delivery.max_attempts.max(1);
        let mut rows = Vec::with_capacity(results.len());
        for (due, result) in results {
            let attempts = due.attempts.saturating_add(1);
            let row = match result {
                Ok(()) => (due.notice_id, "sent", attempts, 0, None),
                Err(failure) => {
                    let dead = failure.permanent || attempts >= max_attempts;
                    tracing::warn!(
                        consumer = self.consumer(),
                        notice_id = %due.notice_id,
                        attempts,
                        dead,
                        error = %failure.error,
                        "notice not delivered"
                    );
                    let next = now
                        + chrono::Duration::from_std(self.settings.delivery.backoff(attempts))
                            .unwrap_or_default();
                    let state = if dead { "dead" } else { "pending" };
                    (
                        due.notice_id,
                        state,
                        attempts,
                        millis(next),
                        Some(failure.error),
                    )
                }
            };
            rows.push(row);
        }
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            for (notice_id, state, attempts, next, error) in rows {
                tx.execute(
                    "UPDATE outbox SET state = ?2, attempts = ?3, next_attempt_ms = ?4,
                            last_error = ?5, reported = 0
                     WHERE notice_id = ?1",
                    params![notice_id.to_string(), state, attempts, next, error],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.settled.notify_one();
        Ok(())
    }

    /// Reports settled notices not yet reported (also those a crash left unreported), up to
    /// [`REPORT_BATCH`] of them; returns how many it found.
    async fn report_settled(&self) -> Result<usize, WorkerError> {
        let consumer = self.consumer();
        let unreported = self
            .with_conn(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {DUE_COLUMNS}, state, last_error FROM outbox
                     WHERE consumer = ?1 AND reported = 0 AND state IN ('sent', 'dead') LIMIT {REPORT_BATCH}"
                ))?;
                let rows = stmt.query_map([consumer], |row| {
                    Ok((
                        Due::columns(row)?,
                        row.get::<_, String>(7)?,
                        row.get::<_, Option<String>>(8)?,
                    ))
                })?;
                rows.map(|row| {
                    let (columns, state, error) = row?;
                    Ok((Due::parse(columns)?, state, error))
                })
                .collect::<Result<Vec<_>, WorkerError>>()
            })
            .await?;
        let found = unreported.len();
        let mut outcomes = Vec::with_capacity(found);
        for (due, state, error) in unreported {
            let notice = self.notice_ref(&due);
            let attempts = due.attempts;
            let command = if state == "sent" {
                OutcomeCommand::Sent(NotificationSent { notice, attempts })
            } else {
                OutcomeCommand::Failed(NotificationFailed {
                    notice,
                    attempts,
                    round: due.round,
                    error: error.unwrap_or_default(),
                })
            };
            let outcome = Outcome {
                correlation_id: due.correlation_id,
                round: due.round,
                command,
            };
            outcomes.push((due.notice_id.to_string(), state, outcome));
        }
        // Reported side by side, so that the log commits many of them together.
        let reported: Vec<(String, String)> = futures_util::stream::iter(outcomes)
            .map(|(notice_id, state, outcome)| async move {
                match self.reporter.report(&outcome).await {
                    Ok(()) => Some((notice_id, state)),
                    Err(error) => {
                        // Kept unreported: the next round tries again.
                        tracing::warn!(consumer, %error, "cannot record a notice's outcome yet");
                        None
                    }
                }
            })
            .buffer_unordered(REPORTS_IN_FLIGHT)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        if reported.is_empty() {
            return Ok(0);
        }
        let all = reported.len() == found;
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            for (notice_id, state) in reported {
                tx.execute(
                    "UPDATE outbox SET reported = 1 WHERE notice_id = ?1 AND state = ?2",
                    params![notice_id, state],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        // Some could not be recorded yet: the caller waits before it tries again.
        Ok(if all { found } else { 0 })
    }

    /// Reports outcomes until the task is aborted, apart from the deliveries: a report waits
    /// for the log's commit, and a delivery must not wait for that. Wakes when an attempt is
    /// settled, and at least every second (a crash's leftovers, a log that refused a report).
    async fn report_loop(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let wait = match self.report_settled().await {
                // More may be waiting behind a full batch.
                Ok(REPORT_BATCH) => continue,
                Ok(_) => {
                    failures = 0;
                    Duration::from_secs(1)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(consumer = self.consumer(), %error, failures, "cannot report outcomes; retrying");
                    Duration::from_millis(100u64 << failures.min(6))
                }
            };
            tokio::select! {
                _ = self.settled.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// When the next pending notice that is not yet due falls due, if any is waiting.
    async fn next_retry(&self, now: DateTime<Utc>) -> Result<Option<i64>, WorkerError> {
        let consumer = self.consumer();
        self.with_conn(move |conn| {
            Ok(conn.query_row(
                "SELECT min(next_attempt_ms) FROM outbox
                 WHERE consumer = ?1 AND state = 'pending' AND next_attempt_ms > ?2",
                params![consumer, millis(now)],
                |row| row.get::<_, Option<i64>>(0),
            )?)
        })
        .await
    }

    /// Delivers until the task is aborted. Up to [`IN_FLIGHT`] notices are on their way at
    /// once, each in a task of its own, so a slow transport holds up only its own notice; each
    /// result is recorded as soon as it is in (with any others finished meanwhile), and a task
    /// beside the loop reports it to the log. The loop wakes when the handler queued a notice, when an attempt ends, when
    /// the earliest retry falls due, and at least every second (tests move the clock).
    pub async fn run(self) {
        tracing::info!(consumer = self.consumer(), transport = %self.transport.describe(), "notifier delivering");
        let this = Arc::new(self);
        // Aborted with this loop (the guard goes when the loop's task is dropped).
        let _reporting = AbortOnDrop(tokio::spawn(this.clone().report_loop()));
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let mut busy: HashSet<Uuid> = HashSet::new();
        let mut failures = 0u32;
        let mut keys_tended: Option<DateTime<Utc>> = None;
        loop {
            let now = this.clock.now();
            // SEC-7: the process that holds private delivery keys publishes the next day's pair
            // ahead and destroys each key on time, whatever else runs beside it.
            if keys_tended.is_none_or(|at| now - at >= chrono::Duration::minutes(1)) {
                keys_tended = Some(now);
                if let Err(error) = this.keys.publish(now) {
                    tracing::error!(%error, "cannot publish the delivery keys");
                }
                match this.keys.destroy_expired(now) {
                    Ok(destroyed) if !destroyed.is_empty() => {
                        tracing::info!(keys = ?destroyed, "delivery keys destroyed: their secrets have expired");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "cannot destroy expired delivery keys"),
                }
            }
            let started: Result<(), WorkerError> = async {
                if in_flight.len() < IN_FLIGHT {
                    for due in this.due(now).await? {
                        if in_flight.len() >= IN_FLIGHT {
                            break;
                        }
                        if !busy.insert(due.notice_id) {
                            continue;
                        }
                        let notice_id = due.notice_id;
                        let worker = this.clone();
                        let task = tokio::spawn(async move {
                            let result = worker.attempt(&due).await;
                            (due, result)
                        });
                        in_flight.push(task.map(move |joined| (notice_id, joined)));
                    }
                }
                Ok(())
            }
            .await;
            let wait = match (started, this.next_retry(now).await) {
                (Ok(()), Ok(next)) => {
                    failures = 0;
                    let left = next.map_or(1_000, |due| (due - millis(now)).clamp(0, 1_000));
                    Duration::from_millis(u64::try_from(left).unwrap_or(1_000))
                }
                (Err(error), _) | (_, Err(error)) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(consumer = this.consumer(), %error, failures, "delivery failed; retrying");
                    // Back off: a fault that persists must not spin the loop.
                    Duration::from_millis(100u64 << failures.min(6))
                }
            };
            tokio::select! {
                Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                    let mut finished = vec![first];
                    while let Some(Some(more)) = in_flight.next().now_or_never() {
                        finished.push(more);
                    }
                    let mut results = Vec::with_capacity(finished.len());
                    for (notice_id, joined) in finished {
                        busy.remove(&notice_id);
                        match joined {
                            Ok(result) => results.push(result),
                            // The notice stays pending and is tried again.
                            Err(error) => tracing::error!(consumer = this.consumer(), %notice_id, %error, "a delivery task failed"),
                        }
                    }
                    if let Err(error) = this.settle(results, this.clock.now()).await {
                        tracing::error!(consumer = this.consumer(), %error, "cannot record deliveries; they will be tried again");
                    }
                }
                _ = this.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// A task that stops when this goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn language_tag(language: Language) -> &'static str {
    match language {
        Language::It => "it",
        Language::En => "en",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_that_quotes_the_recipient_is_kept_with_the_recipient_masked() {
        let smtp = "permanent error (550): 5.1.1 <Mario.Rossi@pec.example.it>: Recipient address rejected; also mario.rossi@pec.example.it";
        let kept = without_recipient(smtp, "Mario.Rossi@pec.example.it", Channel::Email);
        assert!(!kept.to_lowercase().contains("mario.rossi@"), "{kept}");
        assert!(
            kept.contains(&mask_email("Mario.Rossi@pec.example.it")),
            "{kept}"
        );
        assert!(kept.starts_with("permanent error (550): 5.1.1 <"), "{kept}");
        let gateway = "HTTP 400: destination 393471234512 is not reachable (+393471234512)";
        let kept = without_recipient(gateway, "+393471234512", Channel::Sms);
        assert!(!kept.contains("3471234512"), "{kept}");
        assert!(kept.contains("+39 ***** **12"), "{kept}");
        assert_eq!(
            without_recipient("connection refused", "a@b.it", Channel::Email),
            "connection refused"
        );
    }
}
