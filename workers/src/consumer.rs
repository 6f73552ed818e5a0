//! One loop for every consumer of the log, whichever feed brings the events.
//!
//! A [`Feed`] is where events come from: the log itself (the embedded default) or a durable
//! JetStream pull consumer. A [`Sink`] is what a worker does with them and how it remembers
//! what it has done: the notifiers and the scheduler keep a delivery record per event id in the
//! worker store, in the same transaction as their own changes; the projector keeps its
//! read models' checkpoint. Either way an event handled twice changes nothing the second time,
//! so a redelivery, a re-publish or a restart never sends a notice twice.
//!
//! Only after the sink has committed is a JetStream message acknowledged (or, fed from the log,
//! the checkpoint advanced in that same commit), so a crash in between redelivers, never loses.

use crate::WorkerError;
use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Context;
use custode_commands::EventLog;
use custode_domain::RecordedEvent;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const BATCH: usize = 256;

/// What a worker does with events, in order.
pub trait Sink: Send + 'static {
    /// Applies `events` (some possibly seen before) atomically; returns the position of the
    /// last one, now the sink's checkpoint.
    fn apply(&mut self, events: &[RecordedEvent]) -> Result<u64, WorkerError>;
    /// The position of the last event applied (what a log feed reads after).
    fn checkpoint(&self) -> u64;
}

/// Where a consumer's events come from.
#[derive(Clone)]
pub enum Feed {
    Log(EventLog),
    /// The durable consumer named after the worker on `CUSTODE_EVENTS`.
    JetStream(Box<Context>),
}

/// A running consumer: the position it has applied, for tests, `/readyz` and read-your-writes.
#[derive(Clone)]
pub struct ConsumerHandle {
    pub name: String,
    applied: watch::Receiver<u64>,
}

impl ConsumerHandle {
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }
}

/// Runs `sink` on `feed` until the feed ends (the log's writer gone) or the task is aborted.
pub fn spawn<S: Sink>(name: &str, feed: Feed, sink: S) -> (ConsumerHandle, JoinHandle<()>) {
    let (applied_tx, applied_rx) = watch::channel(sink.checkpoint());
    let task_name = name.to_string();
    let task = tokio::spawn(async move {
        let result = match feed {
            Feed::Log(log) => from_log(&task_name, log, sink, &applied_tx).await,
            Feed::JetStream(js) => {
                let consumer = durable_consumer(&task_name, &js).await;
                from_jetstream(&task_name, consumer, sink, &applied_tx).await
            }
        };
        if let Err(error) = result {
            tracing::error!(consumer = %task_name, %error, "consumer stopped");
        }
    });
    (
        ConsumerHandle {
            name: name.to_string(),
            applied: applied_rx,
        },
        task,
    )
}

/// Applies a batch on a blocking thread, again and again until it succeeds: a sink that
/// cannot apply an event must not skip it (the event would be lost for this worker).
async fn apply_until_done<S: Sink>(
    name: &str,
    sink: S,
    events: Vec<RecordedEvent>,
) -> Result<(S, u64), WorkerError> {
    let mut failures = 0u32;
    let mut state = (sink, events);
    loop {
        let (sink, events) = state;
        let (sink, events, result) = tokio::task::spawn_blocking(move || {
            let mut sink = sink;
            let result = sink.apply(&events);
            (sink, events, result)
        })
        .await
        .map_err(|e| WorkerError::Stopped(e.to_string()))?;
        match result {
            Ok(position) => return Ok((sink, position)),
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::error!(consumer = name, %error, failures, "cannot apply events; retrying");
                tokio::time::sleep(Duration::from_millis(100u64 << failures.min(6))).await;
            }
        }
        state = (sink, events);
    }
}

async fn from_log<S: Sink>(
    name: &str,
    log: EventLog,
    mut sink: S,
    applied: &watch::Sender<u64>,
) -> Result<(), WorkerError> {
    let mut head = log.subscribe();
    loop {
        let checkpoint = sink.checkpoint();
        if head.wait_for(|h| *h > checkpoint).await.is_err() {
            return Ok(());
        }
        let events = log
            .read_from(checkpoint, BATCH)
            .await
            .map_err(|e| WorkerError::Feed(e.to_string()))?;
        if events.is_empty() {
            continue;
        }
        let (back, position) = apply_until_done(name, sink, events).await?;
        sink = back;
        applied.send_replace(position);
    }
}

/// The worker's durable consumer, waiting (and saying so) while NATS is unreachable.
async fn durable_consumer(name: &str, js: &Context) -> PullConsumer {
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let stream = crate::nats::events_stream(js).await?;
            crate::nats::durable(&stream, name).await
        };
        match attempt.await {
            Ok(consumer) => return consumer,
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(consumer = name, %error, "waiting for JetStream");
                tokio::time::sleep(Duration::from_millis(100u64 << failures.min(5))).await;
            }
        }
    }
}

async fn from_jetstream<S: Sink>(
    name: &str,
    consumer: PullConsumer,
    mut sink: S,
    applied: &watch::Sender<u64>,
) -> Result<(), WorkerError> {
    let mut failures = 0u32;
    loop {
        let batch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut messages = match batch {
            Ok(messages) => messages,
            Err(error) => {
                // NATS unreachable: the client reconnects by itself; wait and fetch again.
                failures = failures.saturating_add(1);
                tracing::warn!(consumer = name, %error, "cannot fetch from JetStream");
                tokio::time::sleep(Duration::from_millis(100u64 << failures.min(5))).await;
                continue;
            }
        };
        let mut received: Vec<jetstream::Message> = Vec::new();
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => received.push(message),
                Err(error) => {
                    tracing::warn!(consumer = name, %error, "a fetch ended early");
                    break;
                }
            }
        }
        if received.is_empty() {
            continue;
        }
        failures = 0;
        let mut events = Vec::with_capacity(received.len());
        for message in &received {
            match serde_json::from_slice::<RecordedEvent>(&message.payload) {
                Ok(event) => events.push(event),
                Err(error) => {
                    // Not ours (or corrupt): nothing to do with it, and keeping it would block
                    // the consumer forever. Say so, loudly.
                    tracing::error!(consumer = name, %error, subject = %message.subject, "undecodable message skipped");
                }
            }
        }
        let (back, position) = apply_until_done(name, sink, events).await?;
        sink = back;
        for message in &received {
            // A lost ack is redelivered after the ack wait and then skipped by the sink's
            // delivery record; nothing more to do here.
            if let Err(error) = message.ack().await {
                tracing::warn!(consumer = name, %error, "ack failed; the message will come again");
            }
        }
        applied.send_replace(position);
    }
}
