//! The one settings type with SPEC's defaults. The binary reads it from `custode.toml` (unknown
//! keys refused); nothing else in the code holds a constant of policy.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub policy: PolicySettings,
    pub sessions: SessionSettings,
}

/// PW-1 composition rules (each can be turned off: NIST SP 800-63B advises against them) and
/// PW-2's strength floor and history depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    pub min_length: usize,
    pub max_length: usize,
    pub no_user_id: bool,
    pub require_upper_and_lower: bool,
    pub require_digit: bool,
    pub require_special: bool,
    /// Refuse a character repeated this many times in a row (SPEC: three); 0 turns the rule off.
    pub max_repeated_run: usize,
    pub no_personal_data: bool,
    /// zxcvbn score floor, 0..=4 (PW-2).
    pub min_score: u8,
    /// How many of the holder's last passwords may not be reused (PW-2).
    pub history: usize,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 128,
            no_user_id: true,
            require_upper_and_lower: true,
            require_digit: true,
            require_special: true,
            max_repeated_run: 3,
            no_personal_data: true,
            min_score: 2,
            history: 5,
        }
    }
}

/// SEC-3 session lifetimes, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    pub lifetime_secs: i64,
    pub idle_secs: i64,
    pub step_up_secs: i64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            lifetime_secs: 24 * 3600,
            idle_secs: 3600,
            step_up_secs: 600,
        }
    }
}

impl SessionSettings {
    pub fn lifetime(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.lifetime_secs)
    }
    pub fn idle(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.idle_secs)
    }
    pub fn step_up(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.step_up_secs)
    }
}
