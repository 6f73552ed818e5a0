//! The notice stream (`notice-<notice id>`), NT-3: what became of one notice. Workers report
//! outcomes; an operator asks for a dead letter to be tried again.
//!
//! ```text
//!   (none) ──Delivered──► sent (final)
//!     │
//!     └──DeadLettered──► dead ──RetryRequested──► retrying ──Delivered──► sent
//!                          ▲                          │
//!                          └──────DeadLettered────────┘
//! ```
//! Reports are idempotent: a worker that reports twice (a crash between its report and its own
//! bookkeeping, a redelivered message) changes nothing the second time.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn stream_for(notice_id: Uuid) -> String {
    format!("notice-{notice_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// What every notice event says about the notice it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRef {
    pub notice_id: Uuid,
    pub account_id: Uuid,
    /// The event the notice was made for.
    pub source_event_id: Uuid,
    pub channel: Channel,
    pub template: String,
    /// The recipient, masked.
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum NoticeEvent {
    NotificationSent(NotificationSent),
    NotificationFailed(NotificationFailed),
    NotificationRetryRequested(NotificationRetryRequested),
}

pub const NOTICE_EVENT_TYPES: &[&str] = &[
    "NotificationSent",
    "NotificationFailed",
    "NotificationRetryRequested",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationSent {
    #[serde(flatten)]
    pub notice: NoticeRef,
    pub attempts: u32,
}

/// The transport kept failing until the retry limit: the notice is a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationFailed {
    #[serde(flatten)]
    pub notice: NoticeRef,
    pub attempts: u32,
    /// The operator retries that preceded this round of attempts (0 for the first).
    #[serde(default)]
    pub round: u32,
    /// The transport's last error, as the worker saw it (never the notice's content).
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRetryRequested {
    pub notice_id: Uuid,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NoticeState {
    #[default]
    Pending,
    Sent,
    Dead,
    Retrying,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notice {
    pub state: NoticeState,
    /// Dead letters so far; each retry the operator asks for is answered by at most one more.
    pub dead_letters: u32,
    /// Retries the operator asked for: the round a worker's report must be of to count.
    pub retries: u32,
}

pub fn evolve(mut state: Notice, event: &NoticeEvent) -> Notice {
    match event {
        NoticeEvent::NotificationSent(_) => state.state = NoticeState::Sent,
        NoticeEvent::NotificationFailed(_) => {
            state.state = NoticeState::Dead;
            state.dead_letters = state.dead_letters.saturating_add(1);
        }
        NoticeEvent::NotificationRetryRequested(_) => {
            state.state = NoticeState::Retrying;
            state.retries = state.retries.saturating_add(1);
        }
    }
    state
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeCommand {
    /// A worker's report that the transport accepted the notice.
    RecordSent(NotificationSent),
    /// A worker's report that the notice exhausted its retries.
    RecordDead(NotificationFailed),
    /// An operator's request to try a dead letter again.
    Retry { notice_id: Uuid },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("no dead letter has this id")]
    NotFound,
    #[error("the notice is not a dead letter (it was sent, or a retry is under way)")]
    NotDead,
}

impl NoticeError {
    pub fn code(&self) -> &'static str {
        match self {
            NoticeError::NotFound => "dead-letter-not-found",
            NoticeError::NotDead => "dead-letter-not-dead",
        }
    }
}

impl crate::decider::Refusal for NoticeError {
    fn code(&self) -> &'static str {
        NoticeError::code(self)
    }
}

/// The notice aggregate as the generic handler runs it.
pub struct Notices;

impl crate::decider::Decider for Notices {
    type Id = Uuid;
    type State = Notice;
    type Command = NoticeCommand;
    type Event = NoticeEvent;
    type Error = NoticeError;

    fn stream_for(id: &Uuid) -> String {
        stream_for(*id)
    }

    fn decide(
        state: &Notice,
        command: &NoticeCommand,
        _ctx: &crate::decider::Ctx<'_>,
    ) -> Result<Vec<NoticeEvent>, NoticeError> {
        decide(state, command)
    }

    fn evolve(state: Notice, event: &NoticeEvent) -> Notice {
        evolve(state, event)
    }
}

pub fn decide(state: &Notice, cmd: &NoticeCommand) -> Result<Vec<NoticeEvent>, NoticeError> {
    Ok(match cmd {
        NoticeCommand::RecordSent(sent) => match state.state {
            NoticeState::Sent => Vec::new(),
            _ => vec![NoticeEvent::NotificationSent(sent.clone())],
        },
        // A report from a round before the operator's last retry is stale: it arrived late
        // (a worker's redelivered outcome) and says nothing of the retry under way.
        NoticeCommand::RecordDead(failed) if failed.round < state.retries => Vec::new(),
        NoticeCommand::RecordDead(failed) => match state.state {
            NoticeState::Pending | NoticeState::Retrying => {
                vec![NoticeEvent::NotificationFailed(failed.clone())]
            }
            NoticeState::Sent | NoticeState::Dead => Vec::new(),
        },
        NoticeCommand::Retry { notice_id } => match state.state {
            NoticeState::Dead => vec![NoticeEvent::NotificationRetryRequested(
                NotificationRetryRequested {
                    notice_id: *notice_id,
                },
            )],
            NoticeState::Pending => return Err(NoticeError::NotFound),
            NoticeState::Sent | NoticeState::Retrying => return Err(NoticeError::NotDead),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> NoticeRef {
        NoticeRef {
            notice_id: Uuid::from_u128(7),
            account_id: Uuid::from_u128(1),
            source_event_id: Uuid::from_u128(2),
            channel: Channel::Email,
            template: "password_changed".into(),
            to: "m*****@e*****.it".into(),
        }
    }

    fn dead() -> NoticeEvent {
        NoticeEvent::NotificationFailed(NotificationFailed {
            notice: notice(),
            attempts: 5,
            round: 0,
            error: "connection refused".into(),
        })
    }

    fn fold(events: &[NoticeEvent]) -> Notice {
        events.iter().fold(Notice::default(), evolve)
    }

    fn sent() -> NotificationSent {
        NotificationSent {
            notice: notice(),
            attempts: 1,
        }
    }

    #[test]
    fn a_report_of_delivery_is_recorded_once() {
        let first =
            decide(&Notice::default(), &NoticeCommand::RecordSent(sent())).unwrap_or_default();
        assert_eq!(first.len(), 1);
        let again = decide(&fold(&first), &NoticeCommand::RecordSent(sent()));
        assert_eq!(again, Ok(Vec::new()));
    }

    #[test]
    fn a_dead_letter_is_retried_only_on_request_and_only_once_at_a_time() {
        let given = vec![dead()];
        assert_eq!(
            decide(
                &fold(&given),
                &NoticeCommand::RecordDead(NotificationFailed {
                    notice: notice(),
                    attempts: 5,
                    round: 0,
                    error: "again".into(),
                })
            ),
            Ok(Vec::new()),
            "a repeated report of the same dead letter changes nothing"
        );
        let retry = NoticeCommand::Retry {
            notice_id: notice().notice_id,
        };
        let requested = decide(&fold(&given), &retry).unwrap_or_default();
        assert_eq!(requested.len(), 1);
        let retrying = [given, requested].concat();
        assert_eq!(decide(&fold(&retrying), &retry), Err(NoticeError::NotDead));
        let delivered =
            decide(&fold(&retrying), &NoticeCommand::RecordSent(sent())).unwrap_or_default();
        assert_eq!(delivered.len(), 1);
    }

    #[test]
    fn a_late_report_of_a_round_before_the_retry_changes_nothing() {
        let retry = NoticeEvent::NotificationRetryRequested(NotificationRetryRequested {
            notice_id: notice().notice_id,
        });
        let retrying = fold(&[dead(), retry]);
        let stale = NotificationFailed {
            notice: notice(),
            attempts: 5,
            round: 0,
            error: "late".into(),
        };
        assert_eq!(
            decide(&retrying, &NoticeCommand::RecordDead(stale.clone())),
            Ok(Vec::new())
        );
        let current = NotificationFailed { round: 1, ..stale };
        assert_eq!(
            decide(&retrying, &NoticeCommand::RecordDead(current.clone())),
            Ok(vec![NoticeEvent::NotificationFailed(current)])
        );
    }

    #[test]
    fn only_a_dead_letter_can_be_retried() {
        let retry = NoticeCommand::Retry {
            notice_id: notice().notice_id,
        };
        assert_eq!(
            decide(&Notice::default(), &retry),
            Err(NoticeError::NotFound)
        );
        let was_sent = fold(&[NoticeEvent::NotificationSent(sent())]);
        assert_eq!(decide(&was_sent, &retry), Err(NoticeError::NotDead));
    }
}
