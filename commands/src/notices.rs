//! The notice handler (NT-3): records what became of a notice in its own stream
//! (`notice-<id>`), for the workers' reports and the operator's retries. Load, decide, append,
//! again on a version conflict; a report already recorded appends nothing.

use crate::accounts::{to_new_events, Caller, HandlerError};
use crate::log::{EventLog, LogError, Metadata, StreamAppend};
use chrono::{DateTime, Utc};
use custode_domain::envelope::decode;
use custode_domain::notice::{self, Notice, NoticeCommand, NoticeEvent};
use custode_domain::RecordedEvent;
use uuid::Uuid;

const ATTEMPTS: u32 = 4;

#[derive(Clone)]
pub struct NoticeHandler {
    log: EventLog,
}

impl NoticeHandler {
    pub fn new(log: EventLog) -> Self {
        Self { log }
    }

    pub async fn load(&self, notice_id: Uuid) -> Result<(Notice, u64), HandlerError> {
        let recorded = self.log.read_stream(&notice::stream_for(notice_id)).await?;
        let version = recorded.last().map_or(0, |e| e.version);
        let mut state = Notice::default();
        for e in &recorded {
            let event: NoticeEvent = decode(e).map_err(|err| {
                HandlerError::Store(format!("undecodable event {}: {err}", e.event_id))
            })?;
            state = notice::evolve(state, &event);
        }
        Ok((state, version))
    }

    /// Decides `cmd` on the notice `notice_id` and appends what it yields. `causation_id` is the
    /// event the notice was made for, when a worker reports on it.
    pub async fn execute(
        &self,
        notice_id: Uuid,
        cmd: NoticeCommand,
        caller: &Caller,
        causation_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<Vec<RecordedEvent>, HandlerError> {
        let mut attempts_left = ATTEMPTS;
        loop {
            attempts_left -= 1;
            let (state, version) = self.load(notice_id).await?;
            let events = notice::decide(&state, &cmd)?;
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let append = StreamAppend {
                stream: notice::stream_for(notice_id),
                expected_version: version,
                events: to_new_events(&events)?,
            };
            let meta = Metadata {
                actor: caller.actor.clone(),
                correlation_id: caller.correlation_id,
                causation_id: causation_id.unwrap_or_else(Uuid::now_v7),
                occurred_at: now,
            };
            match self.log.append(vec![append], meta).await {
                Ok(recorded) => return Ok(recorded),
                Err(LogError::Conflict { .. }) if attempts_left > 0 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
