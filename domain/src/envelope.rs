//! The event envelope of SPEC.md as the log stores it and every reader (projections, workers,
//! audit) receives it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Holder,
    Collaborator,
    Owner,
    Operator,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Holder => "holder",
            ActorKind::Collaborator => "collaborator",
            ActorKind::Owner => "owner",
            ActorKind::Operator => "operator",
            ActorKind::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "holder" => ActorKind::Holder,
            "collaborator" => ActorKind::Collaborator,
            "owner" => ActorKind::Owner,
            "operator" => ActorKind::Operator,
            "system" => ActorKind::System,
            _ => return None,
        })
    }
}

/// Who caused an event: the kind and, where there is one, the id (an account id, an operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Actor {
    pub fn holder(account_id: Uuid) -> Self {
        Self {
            kind: ActorKind::Holder,
            id: Some(account_id.to_string()),
        }
    }
    pub fn operator() -> Self {
        Self {
            kind: ActorKind::Operator,
            id: None,
        }
    }
    pub fn system() -> Self {
        Self {
            kind: ActorKind::System,
            id: None,
        }
    }
}

/// One event as committed to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream: String,
    pub version: u64,
    pub position: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub payload: serde_json::Value,
    /// Hex SHA-256 over the previous event's hash and this event's canonical bytes.
    pub hash: String,
}

impl RecordedEvent {
    /// The part of the stream name before the first `-`: `account`, `userid`.
    pub fn category(&self) -> &str {
        self.stream.split('-').next().unwrap_or(&self.stream)
    }
}

/// The schema version every event type is written with today. AU-4: when a payload's shape
/// changes, the new version gets its own schema file and [`upcast`] lifts the old ones on read.
pub const CURRENT_SCHEMA_VERSION: u32 = 1;

/// Splits a `#[serde(tag = "type", content = "payload")]` event into its type name and payload.
pub fn encode<E: Serialize>(event: &E) -> Result<(String, serde_json::Value), serde_json::Error> {
    let value = serde_json::to_value(event)?;
    let mut object = match value {
        serde_json::Value::Object(o) => o,
        _ => {
            return Err(serde::ser::Error::custom(
                "an event serializes to an object",
            ))
        }
    };
    let event_type = match object.remove("type") {
        Some(serde_json::Value::String(t)) => t,
        _ => return Err(serde::ser::Error::custom("an event has a string `type`")),
    };
    let payload = object.remove("payload").unwrap_or(serde_json::Value::Null);
    Ok((event_type, payload))
}

/// Rebuilds a typed event from a stored one, upcasting old schema versions first.
pub fn decode<E: serde::de::DeserializeOwned>(
    event: &RecordedEvent,
) -> Result<E, serde_json::Error> {
    let payload = upcast(
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    );
    serde_json::from_value(serde_json::json!({ "type": event.event_type, "payload": payload }))
}

/// Lifts an old payload to the current shape. Every event is still at version 1, so this is the
/// identity; it is the one place a future version's upcaster goes.
pub fn upcast(
    _event_type: &str,
    _schema_version: u32,
    payload: serde_json::Value,
) -> serde_json::Value {
    payload
}
