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
    /// Applies events that an earlier run of this worker already acted on (its store was
    /// lost): learn from them, act on none. By default the same as [`Sink::apply`].
    fn apply_history(&mut self, events: &[RecordedEvent]) -> Result<u64, WorkerError> {
        self.apply(events)
    }
    /// Whether the sink does anything with `event`: fed from the log, a consumer copies only
    /// these (by default, all).
    fn wants(&self, _event: &RecordedEvent) -> bool {
        true
    }
    /// As [`Sink::apply`], with `events` the wanted ones among those up to position `seen`,
    /// which becomes the checkpoint. By default the same as [`Sink::apply`] (a sink that
    /// wants every event is given every event).
    fn apply_seen(&mut self, events: &[RecordedEvent], seen: u64) -> Result<u64, WorkerError> {
        let _ = seen;
        self.apply(events)
    }
    /// Moves the checkpoint to `seen` over events it does not want, when that needs no write:
    /// the new checkpoint, or `None` (then [`Sink::apply_seen`] with no events writes it).
    fn pass_over(&mut self, seen: u64) -> Option<u64> {
        let _ = seen;
        None
    }
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
            Feed::JetStream(js) => from_jetstream(&task_name, &js, sink, &applied_tx).await,
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
    apply_with(name, sink, events, Mode::Live).await
}

/// Whether events are news (a worker acts on them), history another run of it already acted
/// on (it only learns from them), or news that are the wanted ones among those up to a
/// position.
#[derive(Clone, Copy)]
enum Mode {
    Live,
    History,
    Seen(u64),
}

async fn apply_with<S: Sink>(
    name: &str,
    sink: S,
    events: Vec<RecordedEvent>,
    mode: Mode,
) -> Result<(S, u64), WorkerError> {
    let mut failures = 0u32;
    let mut state = (sink, events);
    loop {
        let (sink, events) = state;
        let (sink, events, result) = tokio::task::spawn_blocking(move || {
            let mut sink = sink;
            let result = match mode {
                Mode::Live => sink.apply(&events),
                Mode::History => sink.apply_history(&events),
                Mode::Seen(seen) => sink.apply_seen(&events, seen),
            };
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
    let mut failures = 0u32;
    loop {
        let checkpoint = sink.checkpoint();
        if head.wait_for(|h| *h > checkpoint).await.is_err() {
            return Ok(());
        }
        // Only what the sink wants is copied (most access records are nobody's business here).
        let recent = log.recent_wanted(checkpoint, BATCH, &|e| sink.wants(e));
        let (events, seen) = match recent {
            Some(found) => found,
            None => match log.read_from(checkpoint, BATCH).await {
                Ok(events) => {
                    let seen = events.last().map_or(checkpoint, |e| e.position);
                    (events.into_iter().filter(|e| sink.wants(e)).collect(), seen)
                }
                Err(error) => {
                    // A reader that gives up would stop this worker for good: wait and read
                    // again.
                    failures = failures.saturating_add(1);
                    tracing::error!(consumer = name, %error, failures, "cannot read the log; retrying");
                    tokio::time::sleep(Duration::from_millis(100u64 << failures.min(6))).await;
                    continue;
                }
            },
        };
        failures = 0;
        if seen <= checkpoint {
            continue;
        }
        if events.is_empty() {
            if let Some(position) = sink.pass_over(seen) {
                applied.send_replace(position);
                continue;
            }
        }
        let (back, position) = apply_with(name, sink, events, Mode::Seen(seen)).await?;
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
            crate::nats::durable(&stream, name, crate::nats::MAX_DELIVER).await
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

/// Fetch failures in a row after which the durable consumer is looked up (or created) again:
/// a NATS restarted without its store has lost it.
const REBIND_AFTER: u32 = 5;

/// How long a message that arrived ahead of its turn waits before JetStream offers it again.
const OUT_OF_ORDER_DELAY: Duration = Duration::from_millis(200);

async fn from_jetstream<S: Sink>(
    name: &str,
    js: &Context,
    mut sink: S,
    applied: &watch::Sender<u64>,
) -> Result<(), WorkerError> {
    let mut consumer = durable_consumer(name, js).await;
    if sink.checkpoint() == 0 {
        sink = catch_up(name, js, &consumer, sink, applied).await?;
    }
    let mut failures = 0u32;
    loop {
        let batch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut received: Vec<jetstream::Message> = Vec::new();
        let mut error = None;
        match batch {
            Ok(mut messages) => {
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(message) => received.push(message),
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
            Err(e) => error = Some(e.to_string()),
        }
        if received.is_empty() {
            if let Some(error) = error {
                // NATS unreachable or the consumer gone: the client reconnects by itself; wait,
                // and after a few failures bind the durable consumer again.
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(consumer = name, %error, failures, "cannot fetch from JetStream");
                }
                if failures.is_multiple_of(REBIND_AFTER) {
                    consumer = durable_consumer(name, js).await;
                }
                tokio::time::sleep(Duration::from_millis(100u64 << failures.min(5))).await;
            }
            continue;
        }
        failures = 0;
        let (mut events, mut done, mut early) = in_turn(name, &received, sink.checkpoint());
        tracing::debug!(
            consumer = name,
            received = received.len(),
            checkpoint = sink.checkpoint(),
            in_turn = events.len(),
            early = early.len(),
            "fetched"
        );
        if events.is_empty() && !early.is_empty() {
            // A gap: the events before these were delivered to an earlier run of this worker
            // that died before acknowledging them, and JetStream offers them again only after
            // the ack wait. Read them from the stream instead, then take this batch in turn.
            match fill_gap(js, &consumer, sink.checkpoint()).await {
                Ok(gap) if !gap.is_empty() => {
                    let (back, position) = apply_until_done(name, sink, gap).await?;
                    sink = back;
                    applied.send_replace(position);
                    (events, done, early) = in_turn(name, &received, sink.checkpoint());
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(consumer = name, %error, "cannot read a gap from the stream")
                }
            }
        }
        if !events.is_empty() {
            let (back, position) = apply_until_done(name, sink, events).await?;
            sink = back;
            applied.send_replace(position);
        }
        for message in done.iter().filter_map(|&i| received.get(i)) {
            // A lost ack is redelivered after the ack wait and then skipped by the sink's
            // delivery record; nothing more to do here.
            if let Err(error) = message.ack().await {
                tracing::warn!(consumer = name, %error, "ack failed; the message will come again");
            }
        }
        for message in early.iter().filter_map(|&i| received.get(i)) {
            let _ = message
                .ack_with(jetstream::AckKind::Nak(Some(OUT_OF_ORDER_DELAY)))
                .await;
        }
    }
}

/// The events that come next after `checkpoint`, read straight from the stream between the
/// consumer's ack floor and the last message it was given.
async fn fill_gap(
    js: &Context,
    consumer: &PullConsumer,
    checkpoint: u64,
) -> Result<Vec<RecordedEvent>, String> {
    /// Messages read at most to close one gap (a crashed run held at most a few batches).
    const GAP_SCAN: u64 = 4 * BATCH as u64;
    let info = consumer.get_info().await.map_err(|e| e.to_string())?;
    let from = info.ack_floor.stream_sequence.saturating_add(1);
    let to = info
        .delivered
        .stream_sequence
        .min(from.saturating_add(GAP_SCAN));
    read_stream(js, from, to, checkpoint).await
}

/// The events after `checkpoint` among stream messages `from..=to`, in turn.
async fn read_stream(
    js: &Context,
    from: u64,
    to: u64,
    checkpoint: u64,
) -> Result<Vec<RecordedEvent>, String> {
    let stream = js
        .get_stream_no_info(crate::nats::EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for sequence in from..=to {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        if let Ok(event) = serde_json::from_slice::<RecordedEvent>(&message.payload) {
            if event.position > checkpoint {
                found.push((0, event));
            }
        }
    }
    Ok(take_in_turn(found, checkpoint).0)
}

/// A worker whose store is new (or was lost) on a durable consumer that had already acked
/// part of the stream: it reads that part from the stream itself as history, so that it knows
/// what came before (an account's contacts) without acting on it a second time.
async fn catch_up<S: Sink>(
    name: &str,
    js: &Context,
    consumer: &PullConsumer,
    mut sink: S,
    applied: &watch::Sender<u64>,
) -> Result<S, WorkerError> {
    let floor = match consumer.get_info().await {
        Ok(info) => info.ack_floor.stream_sequence,
        Err(error) => {
            tracing::warn!(consumer = name, %error, "cannot read the consumer's ack floor");
            return Ok(sink);
        }
    };
    if floor == 0 {
        return Ok(sink);
    }
    tracing::info!(
        consumer = name,
        messages = floor,
        "new worker store: reading the acked part of the stream"
    );
    let mut from = 1;
    while from <= floor {
        let to = floor.min(from + BATCH as u64 - 1);
        let events = read_stream(js, from, to, sink.checkpoint())
            .await
            .map_err(WorkerError::Feed)?;
        if !events.is_empty() {
            let (back, position) = apply_with(name, sink, events, Mode::History).await?;
            sink = back;
            applied.send_replace(position);
        }
        from = to + 1;
    }
    Ok(sink)
}

/// Splits a fetched batch by the log's gap-free positions: the events that come next after
/// `checkpoint`, in order (each once); the messages to acknowledge (those applied, those
/// applied before, and undecodable ones); and the messages that arrived ahead of their turn
/// (a relay that re-sent a failed batch after a later one), to be offered again later. A
/// consumer that has applied nothing yet takes the first position it sees as its start.
fn in_turn(
    name: &str,
    received: &[jetstream::Message],
    checkpoint: u64,
) -> (Vec<RecordedEvent>, Vec<usize>, Vec<usize>) {
    let mut decoded: Vec<(usize, RecordedEvent)> = Vec::with_capacity(received.len());
    let mut done = Vec::new();
    for (i, message) in received.iter().enumerate() {
        match serde_json::from_slice::<RecordedEvent>(&message.payload) {
            Ok(event) => decoded.push((i, event)),
            Err(error) => {
                // Not ours (or corrupt): nothing to do with it, and keeping it would block the
                // consumer forever. Say so, loudly.
                tracing::error!(consumer = name, %error, subject = %message.subject, "undecodable message skipped");
                done.push(i);
            }
        }
    }
    let (events, mut applied_or_seen, early) = take_in_turn(decoded, checkpoint);
    done.append(&mut applied_or_seen);
    (events, done, early)
}

/// The ordering rule of [`in_turn`] on decoded events (indexes are the messages').
fn take_in_turn(
    mut decoded: Vec<(usize, RecordedEvent)>,
    checkpoint: u64,
) -> (Vec<RecordedEvent>, Vec<usize>, Vec<usize>) {
    decoded.sort_by_key(|(_, e)| e.position);
    let mut next = match checkpoint {
        0 => decoded.first().map_or(1, |(_, e)| e.position),
        applied => applied + 1,
    };
    let mut events = Vec::with_capacity(decoded.len());
    let mut done = Vec::new();
    let mut early = Vec::new();
    for (i, event) in decoded {
        if event.position < next {
            done.push(i);
        } else if event.position == next {
            next += 1;
            events.push(event);
            done.push(i);
        } else {
            early.push(i);
        }
    }
    (events, done, early)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: usize, position: u64) -> (usize, RecordedEvent) {
        (index, crate::store::tests::event(position))
    }

    fn positions(events: &[RecordedEvent]) -> Vec<u64> {
        events.iter().map(|e| e.position).collect()
    }

    #[test]
    fn events_are_applied_in_log_order_once_and_those_ahead_of_a_gap_wait() {
        // Stream order after a relay re-sent a failed batch: 5, 6 (later batch) then 3, 4;
        // 4 twice; 2 already applied.
        let batch = vec![at(0, 5), at(1, 6), at(2, 3), at(3, 4), at(4, 4), at(5, 2)];
        let (events, done, early) = take_in_turn(batch, 2);
        assert_eq!(positions(&events), vec![3, 4, 5, 6]);
        let mut done = done;
        done.sort();
        assert_eq!(done, vec![0, 1, 2, 3, 4, 5]);
        assert!(early.is_empty());

        let (events, done, early) = take_in_turn(vec![at(0, 7), at(1, 9)], 6);
        assert_eq!(positions(&events), vec![7]);
        assert_eq!((done, early), (vec![0], vec![1]), "9 waits for 8");
    }

    /// Counts what it is given: every event it is handed must be one it wants.
    struct Wanting {
        given: std::sync::Arc<std::sync::Mutex<Vec<RecordedEvent>>>,
        checkpoint: u64,
    }

    impl Sink for Wanting {
        fn apply(&mut self, events: &[RecordedEvent]) -> Result<u64, WorkerError> {
            self.apply_seen(events, 0)
        }
        fn apply_seen(&mut self, events: &[RecordedEvent], seen: u64) -> Result<u64, WorkerError> {
            self.given.lock().unwrap().extend(events.iter().cloned());
            let last = events.iter().map(|e| e.position).max().unwrap_or(0);
            self.checkpoint = self.checkpoint.max(seen).max(last);
            Ok(self.checkpoint)
        }
        fn checkpoint(&self) -> u64 {
            self.checkpoint
        }
        fn wants(&self, event: &RecordedEvent) -> bool {
            event.category() == "account"
        }
    }

    #[tokio::test]
    async fn a_consumer_on_the_log_is_handed_only_what_it_wants_and_still_reaches_the_head() {
        #![allow(clippy::unwrap_used)]
        use custode_commands::log::ANY_VERSION;
        use custode_commands::{LogOptions, Metadata, NewEvent, StreamAppend};
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("events.db"), &LogOptions::default()).unwrap();
        let meta = || Metadata {
            actor: custode_domain::Actor::system(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: uuid::Uuid::now_v7(),
            occurred_at: chrono::Utc::now(),
        };
        let event = || NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "Noted".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
        };
        let given = std::sync::Arc::default();
        let sink = Wanting {
            given: std::sync::Arc::clone(&given),
            checkpoint: 0,
        };
        let (handle, _task) = spawn("test", Feed::Log(log.clone()), sink);
        // Far more access records than a batch, with an account's events among them; the last
        // ones are all unwanted, so only passing over them brings the consumer to the head.
        let mut wanted = Vec::new();
        for i in 0..700u32 {
            let stream = if i % 100 == 7 {
                "account-a"
            } else {
                "access-a"
            };
            let recorded = log
                .append(
                    vec![StreamAppend {
                        stream: stream.into(),
                        expected_version: ANY_VERSION,
                        events: vec![event()],
                    }],
                    meta(),
                )
                .await
                .unwrap();
            if stream == "account-a" {
                wanted.extend(recorded.iter().map(|e| e.position));
            }
        }
        let head = log.head();
        let mut applied = handle.applied();
        tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|p| *p >= head))
            .await
            .expect("the consumer reaches the head")
            .unwrap();
        let given: Vec<u64> = given.lock().unwrap().iter().map(|e| e.position).collect();
        assert_eq!(given, wanted, "only the wanted events, each once, in order");
    }

    #[test]
    fn a_consumer_that_applied_nothing_starts_where_its_stream_starts() {
        let (events, _, early) = take_in_turn(vec![at(0, 41), at(1, 40)], 0);
        assert_eq!(positions(&events), vec![40, 41]);
        assert!(early.is_empty());
    }
}
