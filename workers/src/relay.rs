//! The relay: tails the log from its checkpoint and publishes every event to JetStream,
//! `Nats-Msg-Id` = the event id, in the log's wire form (without password and answer hashes,
//! SEC-9). Batches are published with many acks in flight, and the
//! checkpoint (in the worker store) advances only past a batch whose every ack is in. A crash in
//! between re-publishes the batch on restart; the stream's duplicate window drops the copies.
//! While NATS is down the relay waits and retries; the log, and so the API, does not.

use crate::store;
use crate::WorkerError;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use custode_commands::{EventLog, WireEvent};
use rusqlite::{params, Connection};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

pub const CONSUMER: &str = "relay";
pub const BATCH: usize = 1024;
/// Batches sent before the oldest one's acks are awaited.
pub const WINDOW: usize = 2;

pub struct Relay {
    js: Context,
    /// Only `commit` touches it; the mutex makes the relay shareable across awaits.
    conn: Mutex<Connection>,
    checkpoint: u64,
    /// How long `CUSTODE_EVENTS` keeps messages (SEC-9), set whenever the relay ensures it.
    retention: Duration,
}

/// What a published batch did: how many were new to the stream, how many NATS dropped as
/// duplicates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub stored: u64,
    pub duplicates: u64,
}

impl Relay {
    pub fn new(js: Context, store_dir: &Path, retention: Duration) -> Result<Self, WorkerError> {
        // A checkpoint lost to a power cut only re-publishes what NATS then drops as duplicates.
        let conn = store::open_relaxed(store_dir)?;
        let checkpoint = store::checkpoint(&conn, CONSUMER)?;
        Ok(Self {
            js,
            conn: Mutex::new(conn),
            checkpoint,
            retention,
        })
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// Sends `events` to JetStream without waiting: the acks to await, in order.
    async fn send(&self, events: Vec<WireEvent>) -> Result<Vec<PublishAckFuture>, WorkerError> {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let subject = crate::nats::subject(event.category(), &event.event_type);
            let publish = PublishMessage::build()
                .message_id(event.event_id)
                .payload(event.json.into());
            let ack = self
                .js
                .send_publish(subject, publish)
                .await
                .map_err(|e| WorkerError::Feed(format!("publish: {e}")))?;
            pending.push(ack);
        }
        Ok(pending)
    }

    /// Waits for every ack of a batch.
    async fn confirm(pending: Vec<PublishAckFuture>) -> Result<Published, WorkerError> {
        let mut published = Published::default();
        for ack in pending {
            let ack = ack
                .await
                .map_err(|e| WorkerError::Feed(format!("publish ack: {e}")))?;
            if ack.duplicate {
                published.duplicates += 1;
            } else {
                published.stored += 1;
            }
        }
        Ok(published)
    }

    /// Publishes `events` with every ack in flight at once, and waits for all of them.
    pub async fn publish(&self, events: Vec<WireEvent>) -> Result<Published, WorkerError> {
        Self::confirm(self.send(events).await?).await
    }

    /// Records that everything up to `position` is in JetStream.
    pub fn commit(&mut self, position: u64) -> Result<(), WorkerError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| WorkerError::Stopped("relay store lock poisoned".into()))?;
        conn.execute(
            "INSERT INTO checkpoints (consumer, position) VALUES (?1, ?2)
             ON CONFLICT (consumer) DO UPDATE SET position = max(position, excluded.position)",
            params![CONSUMER, position],
        )?;
        self.checkpoint = self.checkpoint.max(position);
        Ok(())
    }

    /// Relays until the log's writer is gone; publishes the checkpoint on `relayed`.
    ///
    /// Up to [`WINDOW`] batches are in flight: the next batch is read and sent while the acks
    /// of the earlier ones come back. Batches are confirmed in order and the checkpoint moves
    /// only past a confirmed batch; after a failure everything unconfirmed is sent again from
    /// the checkpoint (the duplicate window drops what had arrived).
    pub async fn run(mut self, log: EventLog, relayed: watch::Sender<u64>) {
        let mut head = log.subscribe();
        let mut failures = 0u32;
        if let Err(error) = crate::nats::ensure_events_stream(&self.js, self.retention).await {
            tracing::warn!(%error, "JetStream not ready yet; the relay will keep trying");
        }
        let mut in_flight: VecDeque<(u64, Vec<PublishAckFuture>)> = VecDeque::new();
        let mut sent_up_to = self.checkpoint;
        loop {
            let step: Result<(), WorkerError> = async {
                if in_flight.len() < WINDOW && log.head() > sent_up_to {
                    let events = log
                        .read_wire_from(sent_up_to, BATCH)
                        .await
                        .map_err(|e| WorkerError::Feed(e.to_string()))?;
                    if let Some(last) = events.last().map(|e| e.position) {
                        in_flight.push_back((last, self.send(events).await?));
                        sent_up_to = last;
                    }
                    return Ok(());
                }
                if let Some((last, pending)) = in_flight.pop_front() {
                    Self::confirm(pending).await?;
                    // Only a confirmed batch shows NATS is back: sending alone merely buffers.
                    failures = 0;
                    if let Err(error) = self.commit(last) {
                        tracing::error!(%error, "relay cannot save its checkpoint");
                    }
                    relayed.send_replace(self.checkpoint);
                    return Ok(());
                }
                let from = sent_up_to;
                head.wait_for(|h| *h > from)
                    .await
                    .map_err(|_| WorkerError::Stopped("the log is closed".into()))?;
                Ok(())
            }
            .await;
            match step {
                Ok(()) => {}
                Err(WorkerError::Stopped(_)) => return,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(%error, checkpoint = self.checkpoint, failures, "relay cannot publish; retrying");
                    }
                    in_flight.clear();
                    sent_up_to = self.checkpoint;
                    // The stream may be missing (a NATS restarted without its store): ensure it.
                    let _ = crate::nats::ensure_events_stream(&self.js, self.retention).await;
                    tokio::time::sleep(Duration::from_millis(50u64 << failures.min(6))).await;
                }
            }
        }
    }
}

/// Starts the relay, `CUSTODE_EVENTS` keeping messages `retention`; the receiver tells how far
/// it has published.
pub fn spawn(
    js: Context,
    log: EventLog,
    store_dir: &Path,
    retention: Duration,
) -> Result<(watch::Receiver<u64>, tokio::task::JoinHandle<()>), WorkerError> {
    let relay = Relay::new(js, store_dir, retention)?;
    let (tx, rx) = watch::channel(relay.checkpoint());
    let task = tokio::spawn(relay.run(log, tx));
    Ok((rx, task))
}
