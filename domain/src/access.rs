//! AH-1, AP-7: access records that are not account decisions: each check of a password for
//! mail programs by a mail server. One stream per account (`access-<account uuid>`), apart from
//! the account's own, so that however many pile up an account's commands never read them
//! (AH-3); appended at the stream's end without a version check, since a record decides
//! nothing.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn stream_for(account_id: Uuid) -> String {
    format!("access-{account_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum AccessEvent {
    AppPasswordChecked(AppPasswordChecked),
}

pub const ACCESS_EVENT_TYPES: &[&str] = &["AppPasswordChecked"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

/// Why a check was denied (AP-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    WrongPassword,
    NoAppPassword,
    Expired,
    ProtocolDisabled,
    AccountInactive,
    RateLimited,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::WrongPassword => "wrong_password",
            DenyReason::NoAppPassword => "no_app_password",
            DenyReason::Expired => "expired",
            DenyReason::ProtocolDisabled => "protocol_disabled",
            DenyReason::AccountInactive => "account_inactive",
            DenyReason::RateLimited => "rate_limited",
        }
    }
}

/// AP-7, AH-1: a mail server checked an app password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPasswordChecked {
    pub user_id: String,
    pub scope: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub client_ip: Option<String>,
}
