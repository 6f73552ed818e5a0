//! The user-id registry: one stream per user id (`userid-<key>`) whose only event claims the id
//! for an account. Opening an account appends to this stream and the account's in one
//! transaction, so two openings of the same id cannot both succeed (ACC-4: `409`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream that guards a user id. Ids compare case-insensitively (PEC addresses are mail
/// addresses; SPID user names are case-insensitive too).
pub fn stream_for(user_id: &str) -> String {
    format!("userid-{}", user_key(user_id))
}

pub fn user_key(user_id: &str) -> String {
    user_id.trim().to_lowercase()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum UserIdEvent {
    UserIdClaimed(UserIdClaimed),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdClaimed {
    pub user_id: String,
    pub account_id: Uuid,
}

/// Who holds the id, if anyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserId {
    pub account_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("the user id is already in use")]
    Taken,
}

impl UserIdError {
    pub fn code(&self) -> &'static str {
        match self {
            UserIdError::Taken => "user-id-taken",
        }
    }
}

impl crate::decider::Refusal for UserIdError {
    fn code(&self) -> &'static str {
        UserIdError::code(self)
    }
}

/// Claiming a user id for an account.
#[derive(Debug, Clone)]
pub struct ClaimUserId {
    pub user_id: String,
    pub account_id: Uuid,
}

/// The registry as the generic handler runs it: one stream per user id, keyed by the id.
pub struct Registry;

impl crate::decider::Decider for Registry {
    type Id = String;
    type State = UserId;
    type Command = ClaimUserId;
    type Event = UserIdEvent;
    type Error = UserIdError;

    fn stream_for(user_id: &String) -> String {
        stream_for(user_id)
    }

    fn decide(
        state: &UserId,
        command: &ClaimUserId,
        _ctx: &crate::decider::Ctx<'_>,
    ) -> Result<Vec<UserIdEvent>, UserIdError> {
        decide(state, &command.user_id, command.account_id)
    }

    fn evolve(state: UserId, event: &UserIdEvent) -> UserId {
        evolve(state, event)
    }
}

pub fn decide(
    state: &UserId,
    user_id: &str,
    account_id: Uuid,
) -> Result<Vec<UserIdEvent>, UserIdError> {
    if state.account_id.is_some() {
        return Err(UserIdError::Taken);
    }
    Ok(vec![UserIdEvent::UserIdClaimed(UserIdClaimed {
        user_id: user_id.trim().to_string(),
        account_id,
    })])
}

pub fn evolve(mut state: UserId, event: &UserIdEvent) -> UserId {
    match event {
        UserIdEvent::UserIdClaimed(e) => state.account_id = Some(e.account_id),
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_user_id_cannot_be_claimed_again() {
        let first = Uuid::from_u128(1);
        let events = decide(&UserId::default(), "Mario@PEC.it", first).unwrap();
        let state = events.iter().fold(UserId::default(), evolve);
        assert_eq!(state.account_id, Some(first));
        assert_eq!(
            decide(&state, "mario@pec.it", Uuid::from_u128(2)),
            Err(UserIdError::Taken)
        );
        assert_eq!(stream_for(" Mario@PEC.it"), "userid-mario@pec.it");
    }
}
