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
        // Every projection asks this of every event: a plain scan of the short prefix.
        let end = self
            .stream
            .bytes()
            .position(|b| b == b'-')
            .unwrap_or(self.stream.len());
        self.stream.get(..end).unwrap_or(&self.stream)
    }
}

/// Lifts a payload of `event_type` written at `from_version` to `from_version + 1`.
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: u32,
    pub upcast: fn(serde_json::Value) -> serde_json::Value,
}

/// Every upcaster, each type's in version order (AU-4). A type's current version is one past
/// its last upcaster's `from_version`, and 1 for a type that never changed; each version has
/// its schema in `schemas/events/<Type>.v<N>.json`. Events are never rewritten: old versions
/// are lifted on read, one step at a time.
pub const UPCASTERS: &[Upcaster] = &[
    Upcaster {
        event_type: "SessionStarted",
        from_version: 1,
        upcast: crate::account::upcast::session_started_v1,
    },
    Upcaster {
        event_type: "LoginFailed",
        from_version: 1,
        upcast: crate::account::upcast::login_failed_v1,
    },
    // v2 seals may carry `ephemeral` (SEC-7: sealed to a public key); a v1 seal is read as it
    // is, a seal under the day's symmetric key.
    Upcaster {
        event_type: "TemporaryPasswordIssued",
        from_version: 1,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "RecoveryLinkIssued",
        from_version: 1,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "OtpChallengeIssued",
        from_version: 1,
        upcast: crate::account::upcast::unchanged,
    },
    // Types whose shape only widened read as they are: v2 of `AccountOpened` may carry a
    // collaborator's `permissions` (CO-1); v3 of `LoginFailed` may give `wrong_code` or
    // `code_replayed` (AP-8); v3 of `OtpChallengeIssued` the purposes `login` and
    // `two_factor_on` (AP-8); v2 of `SessionsEnded` the reasons `collaborator_reset` and
    // `deactivated` (CO-2, CO-4), v3 `suspended` and `revoked` (SC-6); v4 of
    // `OtpChallengeIssued` the purposes `verify_recovery_email` and `verify_recovery_mobile`
    // (SC-4), v5 those of the contact changes (SC-3, SC-5); v2 of `ContactMobileChanged` the
    // `form_reference` of an operator's change (SC-3), and v4 of `SessionsEnded` its reason
    // `contact_mobile_replaced`.
    Upcaster {
        event_type: "AccountOpened",
        from_version: 1,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "LoginFailed",
        from_version: 2,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "OtpChallengeIssued",
        from_version: 2,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "SessionsEnded",
        from_version: 1,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "OtpChallengeIssued",
        from_version: 3,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "OtpChallengeIssued",
        from_version: 4,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "SessionsEnded",
        from_version: 2,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "ContactMobileChanged",
        from_version: 1,
        upcast: crate::account::upcast::unchanged,
    },
    Upcaster {
        event_type: "SessionsEnded",
        from_version: 3,
        upcast: crate::account::upcast::unchanged,
    },
];

/// The version `event_type` is written with today.
pub fn current_version(event_type: &str) -> u32 {
    UPCASTERS
        .iter()
        .filter(|u| u.event_type == event_type)
        .map(|u| u.from_version + 1)
        .max()
        .unwrap_or(1)
}

/// Splits a `#[serde(tag = "type", content = "payload")]` event into its type name, the
/// version that type is written with today, and its payload.
pub fn encode_versioned<E: Serialize>(
    event: &E,
) -> Result<(String, u32, serde_json::Value), serde_json::Error> {
    let (event_type, payload) = encode(event)?;
    let version = current_version(&event_type);
    Ok((event_type, version, payload))
}

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

/// Whether an upcaster still applies to `event` (its payload is not in its type's current shape).
fn is_stale(event: &RecordedEvent) -> bool {
    UPCASTERS
        .iter()
        .any(|u| u.event_type == event.event_type && u.from_version >= event.schema_version)
}

/// Rebuilds a typed event from a stored one, upcasting old schema versions first.
/// An event already at its type's current version is read in place (its payload is not
/// copied): this runs for every event a projection or a handler folds.
pub fn decode<E: serde::de::DeserializeOwned>(
    event: &RecordedEvent,
) -> Result<E, serde_json::Error> {
    use serde::de::value::MapDeserializer;
    let stale = is_stale(event);
    let upcast_payload;
    let payload = if stale {
        upcast_payload = upcast(
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        );
        &upcast_payload
    } else {
        &event.payload
    };
    let tag = serde_json::Value::String(event.event_type.clone());
    let fields = [("type", &tag), ("payload", payload)];
    E::deserialize(MapDeserializer::<_, serde_json::Error>::new(
        fields.into_iter(),
    ))
}

/// The payload of `event` as the struct `T` of its type, upcast first when stale: for a
/// consumer that has matched the type itself (no enum to dispatch through).
pub fn decode_payload<T: serde::de::DeserializeOwned>(
    event: &RecordedEvent,
) -> Result<T, serde_json::Error> {
    let stale = is_stale(event);
    if stale {
        T::deserialize(upcast(
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        ))
    } else {
        T::deserialize(&event.payload)
    }
}

/// Lifts a payload of `event_type` at `schema_version` to the current shape.
pub fn upcast(
    event_type: &str,
    schema_version: u32,
    mut payload: serde_json::Value,
) -> serde_json::Value {
    let mut version = schema_version;
    for step in UPCASTERS.iter().filter(|u| u.event_type == event_type) {
        if step.from_version == version {
            payload = (step.upcast)(payload);
            version += 1;
        }
    }
    payload
}

/// A set of event types one consumer folds (a projection, the notification policy, the
/// schedule), as an enum of just those: the consumer matches it exhaustively and never lists
/// what it ignores. Declared with [`event_group!`](crate::event_group).
pub trait EventGroup: serde::de::DeserializeOwned {
    const TYPES: &'static [&'static str];

    /// `event` as a member of this group, upcast; `None` when its type is not one of ours.
    fn from_recorded(event: &RecordedEvent) -> Result<Option<Self>, serde_json::Error> {
        if Self::TYPES.contains(&event.event_type.as_str()) {
            decode(event).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A typed event of an aggregate as a member of this group, if its type is one of ours.
    fn from_typed<E: Serialize>(event: &E) -> Option<Self> {
        let (event_type, payload) = encode(event).ok()?;
        if !Self::TYPES.contains(&event_type.as_str()) {
            return None;
        }
        serde_json::from_value(serde_json::json!({ "type": event_type, "payload": payload })).ok()
    }
}

/// Declares an [`EventGroup`]: an enum whose variants are event types, each wrapping the
/// payload struct of the same name (which must be in scope).
///
/// ```ignore
/// event_group! {
///     /// What the accounts read model folds.
///     pub enum AccountsFolds { AccountOpened, PasswordChanged }
/// }
/// ```
#[macro_export]
macro_rules! event_group {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(tag = "type", content = "payload")]
        $vis enum $name {
            $($variant($variant)),+
        }

        impl $crate::envelope::EventGroup for $name {
            const TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];
        }
    };
}
