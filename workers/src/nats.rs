//! JetStream's shape for custode: the stream the relay fills, the stream of workers' reports,
//! subjects, and durable pull consumers.
//!
//! `CUSTODE_EVENTS` holds every event under `custode.events.<stream category>.<event type>`,
//! with the event id as `Nats-Msg-Id`. Its duplicate window is [`DUPLICATE_WINDOW`] (2 hours):
//! a relay that crashes between publishing and checkpointing re-publishes on restart, and
//! within the window NATS drops the copies. Beyond it (a relay down for hours) the workers'
//! delivery records are what keeps a notice from going out twice; dedup in NATS is an
//! optimisation, the records are the guarantee.
//!
//! SEC-9: both streams keep messages `[nats] retention_days` (default 7), and what the relay
//! publishes carries no password or answer hash (the log's wire form removes them).

use async_nats::jetstream::{self, consumer, stream, Context};
use std::time::Duration;

pub const EVENTS_STREAM: &str = "CUSTODE_EVENTS";
pub const EVENTS_SUBJECTS: &str = "custode.events.>";
pub const OUTCOMES_STREAM: &str = "CUSTODE_OUTCOMES";
pub const OUTCOMES_SUBJECTS: &str = "custode.outcomes.>";
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60 * 60);
/// How long a worker has to acknowledge a message before JetStream redelivers it.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Redelivery of a message whose worker died before acknowledging it, with backoff. Workers
/// retry their own failures in place, so this bound only counts crashes.
/// The first step is the ack wait itself (JetStream uses the backoff in its place).
pub const REDELIVERY_BACKOFF: [Duration; 5] = [
    ACK_WAIT,
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(300),
    Duration::from_secs(600),
];
pub const MAX_DELIVER: i64 = 20;
/// The outcome recorder never gives up on a message: a dropped outcome would hide a dead
/// letter (NT-3). It only fails while the log cannot be written.
pub const UNBOUNDED: i64 = -1;

/// `custode.events.<stream category>.<event type>`.
pub fn subject(category: &str, event_type: &str) -> String {
    format!("custode.events.{category}.{event_type}")
}

/// `url` (any URL: NATS, SMTP, a gateway) without its user and password
/// (`nats://user:pass@host` → `nats://***@host`), for log lines, errors and `Debug`.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}***{}",
                url.get(..scheme + 3).unwrap_or(""),
                url.get(at..).unwrap_or("")
            )
        }
        (None, Some(at)) => format!("***{}", url.get(at..).unwrap_or("")),
        _ => url.to_string(),
    }
}

/// Connects without waiting for NATS to be up: the client keeps reconnecting in the
/// background, and the service keeps accepting commands meanwhile.
pub async fn connect(url: &str) -> Result<Context, String> {
    let client = async_nats::ConnectOptions::new()
        .name("custode")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(|e| format!("NATS {}: {e}", redacted(url)))?;
    Ok(jetstream::new(client))
}

/// Creates the stream `name` on `subjects`, or brings an existing one (made by an earlier
/// version, or kept another time) to this configuration: file storage, the duplicate window,
/// and messages kept `retention` (SEC-9). Only `custode serve --nats` does this, so one
/// process's settings decide how long the bus keeps anything.
async fn ensure(
    js: &Context,
    name: &str,
    subjects: &str,
    retention: Duration,
) -> Result<(), String> {
    js.create_or_update_stream(stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        duplicate_window: DUPLICATE_WINDOW,
        max_age: retention,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("JetStream stream {name}: {e}"))
}

/// Where the relay publishes the log.
pub async fn ensure_events_stream(js: &Context, retention: Duration) -> Result<(), String> {
    ensure(js, EVENTS_STREAM, EVENTS_SUBJECTS, retention).await
}

/// Where workers run apart report outcomes for `custode serve` to record.
pub async fn ensure_outcomes_stream(js: &Context, retention: Duration) -> Result<(), String> {
    ensure(js, OUTCOMES_STREAM, OUTCOMES_SUBJECTS, retention).await
}

/// The stream `name` as `custode serve --nats` made it; a worker run apart waits for it
/// rather than making it with settings of its own.
async fn existing(js: &Context, name: &str) -> Result<stream::Stream, String> {
    js.get_stream(name)
        .await
        .map_err(|e| format!("JetStream stream {name}: {e} (`custode serve --nats` creates it)"))
}

pub async fn events_stream(js: &Context) -> Result<stream::Stream, String> {
    existing(js, EVENTS_STREAM).await
}

pub async fn outcomes_stream(js: &Context) -> Result<stream::Stream, String> {
    existing(js, OUTCOMES_STREAM).await
}

/// The durable pull consumer `name` on `stream` (explicit acks, bounded redelivery with
/// backoff), created on first use.
pub async fn durable(
    stream: &stream::Stream,
    name: &str,
    max_deliver: i64,
) -> Result<consumer::PullConsumer, String> {
    stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver,
                // JetStream wants more deliveries than backoff steps; an unbounded consumer
                // is redelivered every ack wait instead.
                backoff: if max_deliver == UNBOUNDED {
                    Vec::new()
                } else {
                    REDELIVERY_BACKOFF.to_vec()
                },
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("JetStream consumer {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn credentials_never_reach_a_log_line() {
        assert_eq!(
            redacted("nats://user:s3cret@nats.example.it:4222"),
            "nats://***@nats.example.it:4222"
        );
        assert_eq!(redacted("tls://token@host"), "tls://***@host");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redacted("user:pw@host:4222"), "***@host:4222");
    }
}
