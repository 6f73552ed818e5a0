//! AP-7, AH-3: the mail servers' checks are recorded behind their answers. A check is decided
//! in memory (the read model's facts, the keyed hash) and answered at once; its record goes to
//! the log beside it, many records sharing one group commit. So a check's time is not an
//! fsync's, while every record still reaches the log milliseconds later: a group of records
//! alone waits up to `log::SOON_LINGER` for more before its commit, so under a mail server's
//! load many records share one fsync.
//!
//! Bounded: at most [`IN_FLIGHT`] records wait for the log; a check that finds them all taken
//! waits for a place (backpressure, never a dropped record). [`AccessRecorder::flush`] waits
//! for every record in flight; the service calls it before it stops. A process killed
//! outright loses at most the records of the last group commit in flight, never an account's
//! decision (a check decides nothing).

use crate::accounts::{AccountHandler, Caller};
use custode_domain::access::AccessEvent;
use std::sync::Arc;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Records on their way to the log at most.
pub const IN_FLIGHT: u32 = 4096;

#[derive(Clone)]
pub struct AccessRecorder {
    accounts: Arc<AccountHandler>,
    places: Arc<Semaphore>,
}

impl AccessRecorder {
    pub fn new(accounts: AccountHandler) -> Self {
        Self {
            accounts: Arc::new(accounts),
            places: Arc::new(Semaphore::new(IN_FLIGHT as usize)),
        }
    }

    /// Queues `record` of an access at `at` for the account's access stream; returns once it
    /// has a place.
    pub async fn record(
        &self,
        account_id: Uuid,
        record: AccessEvent,
        caller: Caller,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let Ok(place) = self.places.clone().acquire_owned().await else {
            return;
        };
        let accounts = self.accounts.clone();
        tokio::spawn(async move {
            if let Err(error) = accounts
                .record_access_soon(account_id, record, &caller, at)
                .await
            {
                tracing::error!(%account_id, %error, "an access record could not be written to the log");
            }
            drop(place);
        });
    }

    /// Waits until every record queued so far is in the log (or has failed, loudly).
    pub async fn flush(&self) {
        if let Ok(all) = self.places.acquire_many(IN_FLIGHT).await {
            drop(all);
        }
    }
}
