//! AP-7, AH-3: the mail servers' checks are recorded behind their answers. A check is decided
//! in memory (the read model's facts, the keyed hash) and answered at once; its record, made
//! ready for the log by the check itself, goes to a queue, and one task takes everything
//! queued (up to `BATCH`) and puts it in the log's queue as one job (one answer from the
//! writer, however many records), which may wait up to `log::SOON_LINGER` to share its
//! commit. Up to `JOBS_IN_FLIGHT` such jobs await their commits at once, queued in order.
//! So a check's time is not an fsync's, nor does a check pay for a task, a channel to the
//! writer and an answer of its own, while every record still reaches the log milliseconds
//! later.
//!
//! Bounded: at most [`IN_FLIGHT`] records wait in the queue; a check that finds it full waits
//! up to [`PLACE_WAIT`] for a place (backpressure), and is then turned away with a `503`
//! rather than answered without a record. [`AccessRecorder::flush`] waits for
//! every record queued before it; the service calls it before it stops. A process killed
//! outright loses at most the records queued or in the commits in flight, never an account's
//! decision (a check decides nothing). A disk that cannot take them (full, failing) loses none:
//! the log's writer holds the batches and tries them again until it does, their places stay
//! taken meanwhile, and once the queue behind them is full the checks are turned away (`503`)
//! rather than answered with nothing recorded.

use crate::accounts::{AccountHandler, Caller};
use crate::log::ReadyAppend;
use custode_domain::access::AccessEvent;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

/// Records waiting for the log at most.
pub const IN_FLIGHT: usize = 4096;

/// How long a record waits for a place in a full queue before its check is turned away.
pub const PLACE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// A record that could not be queued for the log (see [`AccessRecorder::record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unrecorded;

/// Most records one log job carries.
const BATCH: usize = 1024;

enum Queued {
    Record(Box<ReadyAppend>),
    /// Answered once everything queued before it is written (or has failed, loudly).
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AccessRecorder {
    accounts: Arc<AccountHandler>,
    queue: mpsc::Sender<Queued>,
}

impl AccessRecorder {
    /// Starts the task that writes the records (on the current tokio runtime).
    pub fn new(accounts: AccountHandler) -> Self {
        let accounts = Arc::new(accounts);
        let (queue, queued) = mpsc::channel(IN_FLIGHT);
        tokio::spawn(write(accounts.clone(), queued));
        Self { accounts, queue }
    }

    /// Queues `record` of an access at `at` for the account's access stream, made ready for
    /// the log here (so the task that writes the queue spends its time on nothing else);
    /// returns once it has a place. A record that finds no place within [`PLACE_WAIT`] (the
    /// log far behind, or its disk refusing writes) is not queued: its check is to be turned
    /// away (`503`) rather than answered unrecorded, and meanwhile holds none of the service's
    /// request slots for long.
    pub async fn record(
        &self,
        account_id: Uuid,
        record: AccessEvent,
        caller: &Caller,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Unrecorded> {
        let ready = match self.accounts.ready_record(account_id, record, caller, at) {
            Ok(ready) => ready,
            Err(error) => {
                tracing::error!(%account_id, %error, "an access record could not be encoded");
                return Err(Unrecorded);
            }
        };
        match tokio::time::timeout(PLACE_WAIT, self.queue.send(Queued::Record(Box::new(ready))))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                tracing::error!(%account_id, "an access record could not be queued: its writer has stopped");
                Err(Unrecorded)
            }
            Err(_) => Err(Unrecorded),
        }
    }

    /// Waits until every record queued so far is in the log (or has failed, loudly).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Jobs of records the log may hold at once: the next batch is queued while the last one
/// waits for its commit, so checks meet a full queue only when the log truly cannot keep up,
/// and are then let through batch by batch rather than all at once.
const JOBS_IN_FLIGHT: u32 = 4;

/// Writes what is queued, everything waiting at once, until every handle is gone.
async fn write(accounts: Arc<AccountHandler>, mut queued: mpsc::Receiver<Queued>) {
    let jobs = Arc::new(Semaphore::new(JOBS_IN_FLIGHT as usize));
    let mut taken = Vec::with_capacity(BATCH);
    while queued.recv_many(&mut taken, BATCH).await > 0 {
        let mut records = Vec::with_capacity(taken.len());
        let mut flushes = Vec::new();
        for item in taken.drain(..) {
            match item {
                Queued::Record(ready) => records.push(*ready),
                Queued::Flush(done) => flushes.push(done),
            }
        }
        let count = records.len();
        if count > 0 {
            let Ok(place) = jobs.clone().acquire_owned().await else {
                return;
            };
            // Queued here, in order; its commit awaited beside the next batches.
            let queued = accounts.services().log.enqueue_ready_soon(records).await;
            tokio::spawn(async move {
                if let Err(error) = async { queued?.wait().await }.await {
                    tracing::error!(%error, count, "access records could not be written to the log");
                }
                drop(place);
            });
        }
        if !flushes.is_empty() {
            // Every job queued so far is committed once all places are free again.
            if let Ok(all) = jobs.acquire_many(JOBS_IN_FLIGHT).await {
                drop(all);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
