//! The scheduler's policy: which durable timers an event sets or cancels. Pure: the scheduler
//! worker feeds it every event and keeps the deadlines it returns in its store, firing each at
//! most once when the clock passes it.
//!
//! Today's timer is the end of a delivery key's life (SPEC: envelope): a key that sealed a
//! secret is destroyed [`DELIVERY_KEY_RETENTION_DAYS`] after its day ended, so the log keeps no
//! readable secret beyond its useful life. Expiry notices of app passwords (AP-6), the end of a
//! suspension (SC-6) and document expiry (SC-2) arrive with the events that carry their dates.

use crate::account::AccountEvent;
use crate::secret::Sealed;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// How long a delivery key outlives the day it sealed secrets on: longer than any secret it
/// sealed stays useful (a 24-hour link sealed at 23:59).
pub const DELIVERY_KEY_RETENTION_DAYS: i64 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timer {
    /// Destroy the delivery key `key_id` (and any other past its life).
    DestroyDeliveryKey { key_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// Unique per timer: setting the same key twice keeps the first.
    pub key: String,
    pub timer: Timer,
    pub due_at: DateTime<Utc>,
}

/// What an event does to the timers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub set: Vec<Deadline>,
    /// Keys of waiting deadlines this event makes moot.
    pub cancel: Vec<String>,
}

/// When the key of day `key_id` (`yyyymmdd`) is to be destroyed.
pub fn delivery_key_end(key_id: &str) -> Option<DateTime<Utc>> {
    let day = NaiveDate::parse_from_str(key_id, "%Y%m%d").ok()?;
    let day_end = day.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
    Some(day_end + Duration::days(DELIVERY_KEY_RETENTION_DAYS))
}

fn destroy_key(sealed: &Sealed) -> Option<Deadline> {
    Some(Deadline {
        key: format!("delivery-key/{}", sealed.key_id),
        timer: Timer::DestroyDeliveryKey {
            key_id: sealed.key_id.clone(),
        },
        due_at: delivery_key_end(&sealed.key_id)?,
    })
}

pub fn schedule_for(event: &AccountEvent) -> Schedule {
    match event {
        AccountEvent::TemporaryPasswordIssued(e) => Schedule {
            set: e.sealed_password.iter().filter_map(destroy_key).collect(),
            cancel: Vec::new(),
        },
        AccountEvent::RecoveryLinkIssued(e) => Schedule {
            set: destroy_key(&e.sealed_token).into_iter().collect(),
            cancel: Vec::new(),
        },
        AccountEvent::OtpChallengeIssued(e) => Schedule {
            set: destroy_key(&e.sealed_code).into_iter().collect(),
            cancel: Vec::new(),
        },
        AccountEvent::AccountOpened(_)
        | AccountEvent::PasswordImported(_)
        | AccountEvent::OtpCheckFailed(_)
        | AccountEvent::OtpVerified(_)
        | AccountEvent::ResetTokenIssued(_)
        | AccountEvent::SecurityAnswerFailed(_)
        | AccountEvent::SecurityQuestionLocked(_)
        | AccountEvent::SecurityQuestionUnlocked(_)
        | AccountEvent::PasswordRecovered(_)
        | AccountEvent::RecoveryInfoConfirmed(_)
        | AccountEvent::LoginLockedOut(_)
        | AccountEvent::LoginUnlocked(_)
        | AccountEvent::PasswordChanged(_)
        | AccountEvent::RecoveryInfoSet(_)
        | AccountEvent::SessionStarted(_)
        | AccountEvent::LoginFailed(_)
        | AccountEvent::SessionReauthenticated(_)
        | AccountEvent::SessionsEnded(_) => Schedule::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{TemporaryPasswordIssued, TemporaryPasswordReason};
    use crate::secret::PasswordHash;
    use chrono::TimeZone;

    #[test]
    fn a_sealed_temporary_password_schedules_its_keys_destruction_two_days_after_its_day() {
        let issued = AccountEvent::TemporaryPasswordIssued(TemporaryPasswordIssued {
            password_hash: PasswordHash::new("$argon2id$h"),
            reason: TemporaryPasswordReason::Opening,
            form_reference: None,
            sealed_password: Some(Sealed {
                key_id: "20261124".into(),
                nonce: "n".into(),
                ciphertext: "c".into(),
            }),
        });
        let schedule = schedule_for(&issued);
        assert_eq!(
            schedule.set,
            vec![Deadline {
                key: "delivery-key/20261124".into(),
                timer: Timer::DestroyDeliveryKey {
                    key_id: "20261124".into()
                },
                due_at: Utc
                    .with_ymd_and_hms(2026, 11, 27, 0, 0, 0)
                    .single()
                    .unwrap_or_default(),
            }]
        );
        assert!(schedule.cancel.is_empty());
    }

    #[test]
    fn a_forged_key_id_schedules_nothing() {
        assert_eq!(delivery_key_end("../../x"), None);
    }
}
