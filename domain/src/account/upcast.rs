//! Upcasters of the account's events (AU-4): each lifts a stored payload one version up, so
//! `decode` always sees today's shape. Registered in [`crate::envelope::UPCASTERS`].

use serde_json::{json, Value};

/// `SessionStarted` v1 → v2: the channel (every v1 login came through the API) and an explicit
/// `client_ip` (null where v1 left it out).
pub fn session_started_v1(payload: Value) -> Value {
    with_access_fields(payload)
}

/// `LoginFailed` v1 → v2: as [`session_started_v1`].
pub fn login_failed_v1(payload: Value) -> Value {
    with_access_fields(payload)
}

/// A version whose change only added an optional field: v1 payloads read as they are.
pub fn unchanged(payload: Value) -> Value {
    payload
}

fn with_access_fields(mut payload: Value) -> Value {
    if let Value::Object(fields) = &mut payload {
        fields.entry("channel").or_insert_with(|| json!("api"));
        fields.entry("client_ip").or_insert(Value::Null);
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{AccessChannel, AccountEvent};
    use crate::envelope::{current_version, decode};
    use crate::{Actor, RecordedEvent};

    fn stored(event_type: &str, schema_version: u32, payload: Value) -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::nil(),
            stream: "account-x".into(),
            version: 1,
            position: 1,
            event_type: event_type.into(),
            schema_version,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            actor: Actor::system(),
            correlation_id: uuid::Uuid::nil(),
            causation_id: uuid::Uuid::nil(),
            payload,
            hash: String::new(),
        }
    }

    #[test]
    fn a_v1_session_started_reads_as_v2_from_the_api_with_no_address() {
        assert_eq!(current_version("SessionStarted"), 2);
        let v1 = json!({
            "session_id": "00000000-0000-0000-0000-000000000009",
            "token_hash": "ab",
            "started_at": "2026-01-10T09:00:00Z",
            "expires_at": "2026-01-11T09:00:00Z",
            "fresh_until": "2026-01-10T09:10:00Z",
            "required_actions": []
        });
        let event: AccountEvent = decode(&stored("SessionStarted", 1, v1)).unwrap();
        let AccountEvent::SessionStarted(started) = event else {
            panic!("not a session");
        };
        assert_eq!(started.channel, AccessChannel::Api);
        assert_eq!(started.client_ip, None);
    }

    #[test]
    fn a_v1_login_failure_keeps_its_address_and_gains_the_api_channel() {
        assert_eq!(current_version("LoginFailed"), 3);
        let v1 = json!({"reason": "wrong_password", "client_ip": "192.0.2.7"});
        let event: AccountEvent = decode(&stored("LoginFailed", 1, v1)).unwrap();
        let AccountEvent::LoginFailed(failed) = event else {
            panic!("not a failure");
        };
        assert_eq!(failed.channel, AccessChannel::Api);
        assert_eq!(failed.client_ip.as_deref(), Some("192.0.2.7"));
    }

    #[test]
    fn a_v2_payload_is_left_as_it_is() {
        let v2 = json!({"reason": "wrong_password", "client_ip": null, "channel": "web"});
        let event: AccountEvent = decode(&stored("LoginFailed", 2, v2)).unwrap();
        assert!(matches!(event, AccountEvent::LoginFailed(f) if f.channel == AccessChannel::Web));
    }

    #[test]
    fn unchanged_types_stay_at_version_one() {
        assert_eq!(current_version("PasswordChanged"), 1);
        assert_eq!(current_version("NoSuchType"), 1);
    }

    #[test]
    fn a_v1_account_opening_reads_as_v2_without_permissions() {
        assert_eq!(current_version("AccountOpened"), 2);
        let v1 = json!({
            "account_id": "00000000-0000-0000-0000-000000000001",
            "kind": "collaborator",
            "user_id": "anna.collab",
            "owner_id": "00000000-0000-0000-0000-000000000002",
            "language": "it",
            "migrated": false
        });
        let event: AccountEvent = decode(&stored("AccountOpened", 1, v1)).unwrap();
        assert!(matches!(event, AccountEvent::AccountOpened(o) if o.permissions.is_empty()));
    }

    #[test]
    fn widened_types_read_their_earlier_versions_as_they_are() {
        assert_eq!(current_version("SessionsEnded"), 4);
        assert_eq!(current_version("OtpChallengeIssued"), 5);
        let v1 =
            json!({"session_ids": ["00000000-0000-0000-0000-000000000009"], "reason": "logout"});
        let event: AccountEvent = decode(&stored("SessionsEnded", 1, v1)).unwrap();
        assert!(matches!(event, AccountEvent::SessionsEnded(e) if e.session_ids.len() == 1));
        // v2 of `ContactMobileChanged` may carry an operator's form reference (SC-3).
        assert_eq!(current_version("ContactMobileChanged"), 2);
        let v1 = json!({"mobile": "+393471112233"});
        let event: AccountEvent = decode(&stored("ContactMobileChanged", 1, v1)).unwrap();
        assert!(
            matches!(event, AccountEvent::ContactMobileChanged(e) if e.form_reference.is_none())
        );
    }
}
