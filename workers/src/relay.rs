//! The relay: tails the log from its checkpoint and publishes every event to JetStream,
//! `Nats-Msg-Id` = the event id. A batch is published with many acks in flight, and the
//! checkpoint (in the worker store) advances only once every ack of the batch is in. A crash in
//! between re-publishes the batch on restart; the stream's duplicate window drops the copies.
//! While NATS is down the relay waits and retries; the log, and so the API, does not.

use crate::store;
use crate::WorkerError;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use custode_commands::EventLog;
use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

pub const CONSUMER: &str = "relay";
const BATCH: usize = 1024;

pub struct Relay {
    js: Context,
    /// Only `commit` touches it; the mutex makes the relay shareable across awaits.
    conn: Mutex<Connection>,
    checkpoint: u64,
}

/// What a published batch did: how many were new to the stream, how many NATS dropped as
/// duplicates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub stored: u64,
    pub duplicates: u64,
}

impl Relay {
    pub fn new(js: Context, store_dir: &Path) -> Result<Self, WorkerError> {
        let conn = store::open(store_dir)?;
        let checkpoint = conn
            .query_row(
                "SELECT position FROM checkpoints WHERE consumer = ?1",
                [CONSUMER],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
            .map_or(0, |p| u64::try_from(p).unwrap_or(0));
        Ok(Self {
            js,
            conn: Mutex::new(conn),
            checkpoint,
        })
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// Publishes `events` with every ack in flight at once, and waits for all of them.
    pub async fn publish(&self, events: &[RecordedEvent]) -> Result<Published, WorkerError> {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_vec(event)?;
            let publish = PublishMessage::build()
                .message_id(event.event_id.to_string())
                .payload(payload.into());
            let ack = self
                .js
                .send_publish(crate::nats::subject_for(event), publish)
                .await
                .map_err(|e| WorkerError::Feed(format!("publish: {e}")))?;
            pending.push(ack);
        }
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
    pub async fn run(mut self, log: EventLog, relayed: watch::Sender<u64>) {
        let mut head = log.subscribe();
        let mut failures = 0u32;
        if let Err(error) = crate::nats::events_stream(&self.js).await {
            tracing::warn!(%error, "JetStream not ready yet; the relay will keep trying");
        }
        loop {
            let checkpoint = self.checkpoint;
            if head.wait_for(|h| *h > checkpoint).await.is_err() {
                return;
            }
            let step = async {
                let events = log
                    .read_from(checkpoint, BATCH)
                    .await
                    .map_err(|e| WorkerError::Feed(e.to_string()))?;
                let Some(last) = events.last().map(|e| e.position) else {
                    return Ok(checkpoint);
                };
                self.publish(&events).await?;
                Ok::<_, WorkerError>(last)
            };
            match step.await {
                Ok(last) => {
                    if let Err(error) = self.commit(last) {
                        tracing::error!(%error, "relay cannot save its checkpoint");
                    }
                    failures = 0;
                    relayed.send_replace(self.checkpoint);
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures % 50 == 0 {
                        tracing::warn!(%error, checkpoint, failures, "relay cannot publish; retrying");
                    }
                    // The stream may be missing (a NATS restarted without its store): ensure it.
                    let _ = crate::nats::events_stream(&self.js).await;
                    tokio::time::sleep(Duration::from_millis(50u64 << failures.min(6))).await;
                }
            }
        }
    }
}

/// Starts the relay; the receiver tells how far it has published.
pub fn spawn(
    js: Context,
    log: EventLog,
    store_dir: &Path,
) -> Result<watch::Receiver<u64>, WorkerError> {
    let relay = Relay::new(js, store_dir)?;
    let (tx, rx) = watch::channel(relay.checkpoint());
    tokio::spawn(relay.run(log, tx));
    Ok(rx)
}
