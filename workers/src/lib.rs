//! Workers fed from the log: the relay (log → JetStream), the notifiers (mailer, SMS sender),
//! the scheduler and the projector. Each consumer runs the same code whichever feed brings its
//! events ([`consumer::Feed`]: the log itself in the embedded mode, a durable JetStream pull
//! consumer with `--nats`), keeps a delivery record per event id in the worker store, and so
//! handles every event once across restarts and redeliveries.

pub mod consumer;
pub mod nats;
pub mod notifier;
pub mod projector;
pub mod relay;
pub mod runtime;
pub mod scheduler;
pub mod settings;
pub mod store;
pub mod templates;
pub mod transport;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot encode or decode: {0}")]
    Json(#[from] serde_json::Error),
    #[error("feed: {0}")]
    Feed(String),
    #[error("worker stopped: {0}")]
    Stopped(String),
    #[error("{0}")]
    Other(String),
}
