//! AP-8: OATH-TOTP hardware tokens. An operator registers each token by its serial number and
//! seed, as they ship; a holder binds one to the account with a current code. One stream per
//! token (`hwtoken-<serial>`); the seed is kept only sealed under the service's long-lived key.

use crate::secret::Sealed;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn stream_for(serial: &str) -> String {
    format!("hwtoken-{}", serial_key(serial))
}

/// Serials compare without case or surrounding space.
pub fn serial_key(serial: &str) -> String {
    serial.trim().to_uppercase()
}

/// Whether `serial` can be a token's serial number: 4 to 32 letters, digits or `-`.
pub fn valid_serial(serial: &str) -> bool {
    let serial = serial.trim();
    (4..=32).contains(&serial.len())
        && serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum HardwareTokenEvent {
    HardwareTokenRegistered(HardwareTokenRegistered),
    HardwareTokenBound(HardwareTokenBound),
}

pub const HARDWARE_TOKEN_EVENT_TYPES: &[&str] = &["HardwareTokenRegistered", "HardwareTokenBound"];

/// An operator registered the token; its seed is sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareTokenRegistered {
    pub serial: String,
    pub sealed_seed: Sealed,
}

/// A holder bound the token to the account (with a current code, checked by the account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareTokenBound {
    pub account_id: Uuid,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HardwareToken {
    pub registered: Option<HardwareTokenRegistered>,
    pub bound_to: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HardwareTokenError {
    #[error("a token with this serial number is already registered")]
    AlreadyRegistered,
    /// Unknown, or bound to another account: the same answer, so serials cannot be probed.
    #[error("no token with this serial number can be bound to this account")]
    Unavailable,
    #[error("the serial number has 4 to 32 letters, digits or '-'")]
    BadSerial,
}

impl crate::decider::Refusal for HardwareTokenError {
    fn code(&self) -> &'static str {
        match self {
            HardwareTokenError::AlreadyRegistered => "hardware-token-exists",
            HardwareTokenError::Unavailable => "hardware-token-unavailable",
            HardwareTokenError::BadSerial => "validation-failed",
        }
    }
}

#[derive(Debug, Clone)]
pub enum HardwareTokenCommand {
    Register { serial: String, sealed_seed: Sealed },
    Bind { account_id: Uuid },
}

pub struct HardwareTokens;

impl crate::decider::Decider for HardwareTokens {
    type Id = String;
    type State = HardwareToken;
    type Command = HardwareTokenCommand;
    type Event = HardwareTokenEvent;
    type Error = HardwareTokenError;

    fn stream_for(serial: &String) -> String {
        stream_for(serial)
    }

    fn decide(
        state: &HardwareToken,
        command: &HardwareTokenCommand,
        _ctx: &crate::decider::Ctx<'_>,
    ) -> Result<Vec<HardwareTokenEvent>, HardwareTokenError> {
        decide(state, command)
    }

    fn evolve(state: HardwareToken, event: &HardwareTokenEvent) -> HardwareToken {
        evolve(state, event)
    }
}

pub fn decide(
    state: &HardwareToken,
    command: &HardwareTokenCommand,
) -> Result<Vec<HardwareTokenEvent>, HardwareTokenError> {
    match command {
        HardwareTokenCommand::Register {
            serial,
            sealed_seed,
        } => {
            if !valid_serial(serial) {
                return Err(HardwareTokenError::BadSerial);
            }
            if state.registered.is_some() {
                return Err(HardwareTokenError::AlreadyRegistered);
            }
            Ok(vec![HardwareTokenEvent::HardwareTokenRegistered(
                HardwareTokenRegistered {
                    serial: serial_key(serial),
                    sealed_seed: sealed_seed.clone(),
                },
            )])
        }
        HardwareTokenCommand::Bind { account_id } => {
            if state.registered.is_none() || state.bound_to.is_some_and(|a| a != *account_id) {
                return Err(HardwareTokenError::Unavailable);
            }
            if state.bound_to == Some(*account_id) {
                return Ok(Vec::new());
            }
            Ok(vec![HardwareTokenEvent::HardwareTokenBound(
                HardwareTokenBound {
                    account_id: *account_id,
                },
            )])
        }
    }
}

pub fn evolve(mut state: HardwareToken, event: &HardwareTokenEvent) -> HardwareToken {
    match event {
        HardwareTokenEvent::HardwareTokenRegistered(e) => state.registered = Some(e.clone()),
        HardwareTokenEvent::HardwareTokenBound(e) => state.bound_to = Some(e.account_id),
    }
    state
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sealed() -> Sealed {
        Sealed {
            key_id: "service-1".into(),
            nonce: "n".into(),
            ciphertext: "c".into(),
            ephemeral: None,
        }
    }

    #[test]
    fn a_token_is_registered_once_and_bound_to_one_account_ap_8() {
        let register = HardwareTokenCommand::Register {
            serial: " tk-0001 ".into(),
            sealed_seed: sealed(),
        };
        let events = decide(&HardwareToken::default(), &register).unwrap();
        let state = events.iter().fold(HardwareToken::default(), evolve);
        assert_eq!(state.registered.as_ref().unwrap().serial, "TK-0001");
        assert_eq!(
            decide(&state, &register),
            Err(HardwareTokenError::AlreadyRegistered)
        );
        let mine = Uuid::from_u128(1);
        let events = decide(&state, &HardwareTokenCommand::Bind { account_id: mine }).unwrap();
        let state = events.iter().fold(state, evolve);
        // Binding again to the same account is a no-op; another account is refused.
        assert!(
            decide(&state, &HardwareTokenCommand::Bind { account_id: mine })
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            decide(
                &state,
                &HardwareTokenCommand::Bind {
                    account_id: Uuid::from_u128(2)
                }
            ),
            Err(HardwareTokenError::Unavailable)
        );
    }

    #[test]
    fn an_unknown_token_is_unavailable_and_bad_serials_are_refused() {
        assert_eq!(
            decide(
                &HardwareToken::default(),
                &HardwareTokenCommand::Bind {
                    account_id: Uuid::from_u128(1)
                }
            ),
            Err(HardwareTokenError::Unavailable)
        );
        assert_eq!(
            decide(
                &HardwareToken::default(),
                &HardwareTokenCommand::Register {
                    serial: "a b".into(),
                    sealed_seed: sealed()
                }
            ),
            Err(HardwareTokenError::BadSerial)
        );
    }
}
