//! The projector: tails the log from the read models' checkpoint and applies each batch to
//! every projection. It runs on its own thread (SQLite work is blocking) and publishes the
//! position it has applied, which read endpoints wait on for read-your-writes.

use custode_commands::EventLog;
use custode_projections::ReadModels;
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

/// Starts the projector on `models`; it stops when the log's writer is gone.
pub fn spawn(
    log: EventLog,
    mut models: ReadModels,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<ProjectorHandle> {
    let (applied_tx, applied_rx) = watch::channel(models.checkpoint());
    std::thread::Builder::new().name("custode-projector".into()).spawn(move || {
        let mut head = log.subscribe();
        let mut failures = 0u32;
        loop {
            let checkpoint = models.checkpoint();
            if runtime.block_on(head.wait_for(|h| *h > checkpoint)).is_err() {
                return;
            }
            let applied = log
                .read_from_blocking(checkpoint, BATCH)
                .map_err(|e| e.to_string())
                .and_then(|events| models.apply(&events).map_err(|e| e.to_string()));
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
                    runtime.block_on(tokio::time::sleep(backoff));
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
