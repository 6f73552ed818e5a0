//! Which workers a process runs, and on which feed: the one place the embedded mode and the
//! JetStream mode differ, apart from where a worker run apart reports outcomes.

use crate::consumer::{self, ConsumerHandle, Feed};
use crate::notifier::{self, Outcome, Recorder, Reporter, Transport};
use crate::settings::WorkerSettings;
use crate::store::StoreSink;
use crate::WorkerError;
use async_nats::jetstream::Context;
use custode_commands::clock::Clock;
use custode_commands::delivery::DeliveryKeys;
use custode_domain::notice::Channel;
use custode_projections::ReadModels;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerName {
    Mailer,
    Sms,
    Scheduler,
    /// Only apart (`custode worker projector`): `serve` always projects in-process, for
    /// read-your-writes.
    Projector,
}

impl WorkerName {
    /// Whether this worker delivers (mail, SMS): it holds the private delivery keys and
    /// publishes their public halves (SEC-7).
    pub fn delivers(self) -> bool {
        matches!(self, WorkerName::Mailer | WorkerName::Sms)
    }

    /// The workers `custode serve` runs unless `--workers` says otherwise.
    pub const SERVED: [WorkerName; 3] =
        [WorkerName::Mailer, WorkerName::Sms, WorkerName::Scheduler];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerName::Mailer => "mailer",
            WorkerName::Sms => "sms",
            WorkerName::Scheduler => "scheduler",
            WorkerName::Projector => "projector",
        }
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name.trim() {
            "mailer" => WorkerName::Mailer,
            "sms" => WorkerName::Sms,
            "scheduler" => WorkerName::Scheduler,
            "projector" => WorkerName::Projector,
            other => {
                return Err(format!(
                    "unknown worker `{other}`: the workers are mailer, sms, scheduler, projector"
                ))
            }
        })
    }
}

/// What every worker of a process shares.
#[derive(Clone)]
pub struct WorkerContext {
    /// Holds the worker store, the embedded sinks and (apart) the read models.
    pub data_dir: PathBuf,
    pub keys: DeliveryKeys,
    pub settings: WorkerSettings,
    pub clock: Arc<dyn Clock>,
    pub reporter: Reporter,
}

/// The tasks a process started for its workers; dropping it stops them all (a test that
/// restarts the application in-process must not leave the old workers running).
#[derive(Default)]
pub struct Tasks(Vec<tokio::task::AbortHandle>);

impl Tasks {
    pub fn push<T>(&mut self, task: tokio::task::JoinHandle<T>) {
        self.0.push(task.abort_handle());
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts worker `name` on `feed`; its tasks join `tasks`.
pub fn spawn_worker(
    name: WorkerName,
    feed: Feed,
    ctx: &WorkerContext,
    tasks: &mut Tasks,
) -> Result<ConsumerHandle, WorkerError> {
    let dir = ctx.data_dir.as_path();
    match name {
        WorkerName::Mailer | WorkerName::Sms => {
            let channel = if name == WorkerName::Mailer {
                Channel::Email
            } else {
                Channel::Sms
            };
            let transport =
                Transport::for_channel(channel, &ctx.settings, dir).map_err(WorkerError::Other)?;
            let (handler, delivery) = notifier::notifier(
                channel,
                dir,
                transport,
                ctx.keys.clone(),
                ctx.reporter.clone(),
                ctx.settings.clone(),
                ctx.clock.clone(),
            )?;
            tasks.push(tokio::spawn(delivery.run()));
            let sink = StoreSink::new(dir, name.as_str(), handler)?.for_feed(&feed);
            let (handle, task) = consumer::spawn(name.as_str(), feed, sink);
            tasks.push(task);
            Ok(handle)
        }
        WorkerName::Scheduler => {
            let (handler, timers) = crate::scheduler::scheduler(
                dir,
                ctx.keys.clone(),
                ctx.clock.clone(),
                ctx.reporter.clone(),
            )?;
            tasks.push(tokio::spawn(timers.run()));
            let sink = StoreSink::new(dir, name.as_str(), handler)?.for_feed(&feed);
            let (handle, task) = consumer::spawn(name.as_str(), feed, sink);
            tasks.push(task);
            Ok(handle)
        }
        WorkerName::Projector => {
            let models = ReadModels::open(&dir.join("read.db"))
                .map_err(|e| WorkerError::Other(e.to_string()))?;
            let (handle, task) = consumer::spawn(name.as_str(), feed, models);
            tasks.push(task);
            Ok(handle)
        }
    }
}

/// The durable consumer name of the outcome recorder.
pub const RECORDER: &str = "recorder";

/// In `custode serve --nats`: records the outcomes that workers run apart publish (notices'
/// reports, timers' commands), appending
/// them to the log (idempotently: a redelivered outcome appends nothing). `CUSTODE_OUTCOMES`
/// keeps messages `retention` (SEC-9).
pub fn spawn_outcome_recorder(
    js: Context,
    recorder: Recorder,
    retention: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let consumer = async {
                crate::nats::ensure_outcomes_stream(&js, retention).await?;
                let stream = crate::nats::outcomes_stream(&js).await?;
                crate::nats::durable(&stream, RECORDER, crate::nats::UNBOUNDED).await
            };
            let consumer = match consumer.await {
                Ok(consumer) => consumer,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        tracing::warn!(%error, "outcome recorder waiting for JetStream");
                    }
                    tokio::time::sleep(Duration::from_millis(100u64 << failures.min(5))).await;
                    continue;
                }
            };
            let mut messages = match consumer.messages().await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "outcome recorder cannot subscribe");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(message) = messages.next().await {
                let Ok(message) = message else { break };
                match serde_json::from_slice::<Outcome>(&message.payload) {
                    Ok(outcome) => {
                        if let Err(error) = outcome.record(&recorder).await {
                            // Not acked: JetStream redelivers it after the ack wait.
                            tracing::warn!(%error, "cannot record an outcome yet");
                            continue;
                        }
                    }
                    Err(error) => tracing::error!(%error, "undecodable outcome skipped"),
                }
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "outcome ack failed; it will come again");
                }
            }
        }
    })
}
