//! The projector: tails the log from the read models' checkpoint and applies each batch to
//! every projection. It runs on its own thread (SQLite work is blocking) and publishes the
//! position it has applied, which read endpoints wait on for read-your-writes.

use custode_commands::clock::Clock;
use custode_commands::EventLog;
use custode_projections::cache::Forget;
use custode_projections::ReadModels;
use std::sync::Arc;
use tokio::sync::watch;

const BATCH: usize = 512;

pub struct ProjectorHandle {
    applied: watch::Receiver<u64>,
}

impl ProjectorHandle {
    /// The position every read model has applied.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }
}

/// AH-3: how long the access history keeps its rows, by whose clock.
#[derive(Clone)]
pub struct HistoryExpiry {
    pub clock: Arc<dyn Clock>,
    pub retention: chrono::Duration,
}

impl HistoryExpiry {
    /// How often the projector looks for rows past retention (by the expiry's clock).
    const EVERY: chrono::Duration = chrono::Duration::minutes(1);

    /// Drops what is past retention when `EVERY` has gone by since `last`.
    fn tend(&self, models: &mut ReadModels, last: &mut Option<chrono::DateTime<chrono::Utc>>) {
        let now = self.clock.now();
        if last.is_some_and(|at| now - at < Self::EVERY) {
            return;
        }
        *last = Some(now);
        match models.expire_history(now - self.retention) {
            Ok(0) => {}
            // Only `access_history` rows go, which no cache holds (an account's last access
            // is kept apart, in `access_accounts`).
            Ok(dropped) => tracing::info!(
                dropped,
                "access history: rows past history.retention_days dropped"
            ),
            Err(error) => {
                tracing::error!(%error, "access history: cannot drop rows past retention")
            }
        }
    }
}

/// Starts the projector on `models`; it stops when the log's writer is gone. With `expiry`,
/// it also drops the access history's rows past retention (AH-3), at start and then every
/// minute of the expiry's clock. Each applied batch drops from `caches` what it changed before
/// its position is published (AP-7's checks and the account pages read through them).
pub fn spawn(
    log: EventLog,
    mut models: ReadModels,
    runtime: tokio::runtime::Handle,
    expiry: Option<HistoryExpiry>,
    caches: Vec<Arc<dyn Forget>>,
) -> std::io::Result<ProjectorHandle> {
    let (applied_tx, applied_rx) = watch::channel(models.checkpoint());
    // Each second a tick wakes the projector to tend the history (tests move clocks). The
    // tick runs on the runtime, so this thread never arms a timer of its own: it stops with
    // the runtime, and the projector then waits for events alone.
    let (tick_tx, mut tick) = watch::channel(());
    if expiry.is_some() {
        runtime.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            while !tick_tx.is_closed() {
                every.tick().await;
                tick_tx.send_replace(());
            }
        });
    }
    std::thread::Builder::new().name("custode-projector".into()).spawn(move || {
        let mut head = log.subscribe();
        let mut failures = 0u32;
        let mut expired_at = None;
        let mut ticking = expiry.is_some();
        loop {
            if let Some(expiry) = &expiry {
                expiry.tend(&mut models, &mut expired_at);
            }
            let checkpoint = models.checkpoint();
            let woken = runtime.block_on(async {
                tokio::select! {
                    moved = head.wait_for(|h| *h > checkpoint) => Some(moved.is_ok()),
                    ticked = tick.changed(), if ticking => {
                        if ticked.is_err() {
                            ticking = false;
                        }
                        None
                    }
                }
            });
            match woken {
                Some(true) => {}
                Some(false) => return,
                None => continue,
            }
            let applied = log
                .read_from_blocking(checkpoint, BATCH)
                .map_err(|e| e.to_string())
                .and_then(|events| {
                    let position = models.apply(&events).map_err(|e| e.to_string())?;
                    for cache in &caches {
                        cache.forget(&events);
                    }
                    Ok(position)
                });
            match applied {
                Ok(position) => {
                    failures = 0;
                    applied_tx.send_replace(position);
                }
                Err(error) => {
                    // A read model that cannot apply an event must not skip it: wait and retry,
                    // loudly. /readyz reports the lag meanwhile.
                    failures = failures.saturating_add(1);
                    tracing::error!(%error, checkpoint, failures, "projector cannot apply events");
                    let backoff = std::time::Duration::from_millis(100u64 << failures.min(6));
                    // This thread is not the runtime's: a tokio timer made here has no reactor
                    // (it panicked, and the read models stopped for good after a full disk).
                    std::thread::sleep(backoff);
                }
            }
        }
    })?;
    Ok(ProjectorHandle {
        applied: applied_rx,
    })
}

/// The read models as a consumer of any feed: what `custode worker projector --nats URL` runs
/// to keep a read-model file of its own up to date.
impl crate::consumer::Sink for ReadModels {
    fn apply(
        &mut self,
        events: &[custode_domain::RecordedEvent],
    ) -> Result<u64, crate::WorkerError> {
        ReadModels::apply(self, events).map_err(|e| crate::WorkerError::Other(e.to_string()))
    }

    fn checkpoint(&self) -> u64 {
        ReadModels::checkpoint(self)
    }
}
