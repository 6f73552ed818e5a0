//! The one settings type with SPEC's defaults. The binary reads it from `custode.toml` (unknown
//! keys refused); nothing else in the code holds a constant of policy.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub policy: PolicySettings,
    pub sessions: SessionSettings,
    pub recovery: RecoverySettings,
    pub limits: LimitSettings,
    pub history: HistorySettings,
    pub identity: IdentitySettings,
}

/// SC-8: how long an identity may go unused before it is revoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// Months without a login or a reported access after which an identity is revoked (24, as
    /// SPID's rules ask); 0 turns it off.
    pub inactivity_months: u32,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            inactivity_months: 24,
        }
    }
}

/// AH-3: how long the access history keeps its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Days an access stays in the history (730: the 24 months SPID asks of identity
    /// providers); older rows are dropped from the read model, never from the log.
    pub retention_days: u32,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            retention_days: 730,
        }
    }
}

impl HistorySettings {
    pub fn retention(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.retention_days))
    }
}

/// RC-1..7: the forgotten-password flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySettings {
    /// RC-4: offer the security question (NIST SP 800-63B advises against it; the guides use it).
    pub security_question: bool,
    /// RC-2: how long a recovery link lives.
    pub link_hours: i64,
    /// RC-3: how long an SMS code lives, how many checks a recovery gets, how many codes.
    pub code_minutes: i64,
    pub code_attempts: u32,
    pub codes_per_recovery: u32,
    /// RC-4: wrong answers before the question locks, and for how long.
    pub question_attempts: u32,
    pub question_lock_minutes: i64,
    /// How long the reset token that a right code or answer yields lives (RC-5).
    pub reset_token_minutes: i64,
    /// RC-1: recovery calls answer no sooner than this, so a real account's extra work (a
    /// read, an append, a message queued) does not show in the timing against a decoy's.
    pub answer_floor_ms: u64,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            security_question: true,
            link_hours: 24,
            code_minutes: 5,
            code_attempts: 5,
            codes_per_recovery: 3,
            question_attempts: 5,
            question_lock_minutes: 15,
            reset_token_minutes: 30,
            answer_floor_ms: 100,
        }
    }
}

impl RecoverySettings {
    pub fn link_lifetime(&self) -> chrono::Duration {
        chrono::Duration::hours(self.link_hours)
    }
    pub fn code_lifetime(&self) -> chrono::Duration {
        chrono::Duration::minutes(self.code_minutes)
    }
    pub fn question_lock(&self) -> chrono::Duration {
        chrono::Duration::minutes(self.question_lock_minutes)
    }
    pub fn reset_token_lifetime(&self) -> chrono::Duration {
        chrono::Duration::minutes(self.reset_token_minutes)
    }
}

/// SEC-2's rate limits. Per client address: requests a minute; per user id as the table says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub login_per_address_per_minute: u32,
    /// SEC-6: failures in a row before a user id gets `429`, and for how long.
    pub login_failures_per_user: u32,
    pub login_lockout_minutes: i64,
    pub recovery_starts_per_address_per_minute: u32,
    /// Recovery messages (mail or SMS) per user id an hour.
    pub recovery_messages_per_user_per_hour: u32,
    /// OTP and answer checks per address a minute.
    pub checks_per_address_per_minute: u32,
    /// SEC-2: wrong codes or answers in a row, across recoveries, before a user id's checks
    /// are locked, and for how long.
    pub check_failures_per_user: u32,
    pub check_lockout_minutes: i64,
    /// SEC-9: calls anyone may make that write to the log (logins, recovery calls), a minute,
    /// service-wide and alike for every id.
    pub anonymous_writes_per_minute: u32,
    /// PW-3's strength meter (zxcvbn costs CPU), per client address a minute.
    pub strength_per_address_per_minute: u32,
    /// AP-7: failed app-password checks a minute per reported client address, and per user
    /// id and scope.
    pub app_password_failures_per_address_per_minute: u32,
    pub app_password_failures_per_user_per_minute: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            login_per_address_per_minute: 30,
            login_failures_per_user: 10,
            login_lockout_minutes: 15,
            recovery_starts_per_address_per_minute: 10,
            recovery_messages_per_user_per_hour: 5,
            checks_per_address_per_minute: 30,
            check_failures_per_user: 10,
            check_lockout_minutes: 15,
            anonymous_writes_per_minute: 12_000,
            strength_per_address_per_minute: 120,
            app_password_failures_per_address_per_minute: 60,
            app_password_failures_per_user_per_minute: 20,
        }
    }
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
    /// PW-6: days an identity's password lasts after it was set (180, as SPID asks); 0: for ever.
    pub identity_max_age_days: u32,
    /// PW-6: the same for mailboxes and their collaborators (0, as NIST SP 800-63B advises).
    pub mailbox_max_age_days: u32,
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
            identity_max_age_days: 180,
            mailbox_max_age_days: 0,
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
