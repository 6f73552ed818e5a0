//! The scheduler's policy: which durable timers an event sets or cancels. Pure: the scheduler
//! worker feeds it every event and keeps the deadlines it returns in its store, firing each at
//! most once when the clock passes it.
//!
//! Two kinds of timer so far:
//! - the end of a delivery key's life (SPEC: envelope): a key that sealed a secret is destroyed
//!   [`DELIVERY_KEY_RETENTION_DAYS`] after its day ended, so the log keeps no readable secret
//!   beyond its useful life;
//! - a *command* timer: at a lock's end (SEC-6) the scheduler runs the stream's `EndLocks`
//!   command through the same handler as every other command. Such a command is idempotent (it
//!   decides from the state, not from the timer), so a timer fired twice appends once.
//!
//! Expiry notices of app passwords (AP-6), the end of a suspension (SC-6), password age (PW-6),
//! inactivity (SC-8) and document expiry (SC-2) arrive as command timers with their events.

use crate::account::{
    AccountSuspended, AppPasswordIssued, AppPasswordPostponed, ChecksLockedOut,
    IdentityDocumentRecorded, InactivityDeadlineSet, InactivityWarned, LoginLockedOut,
    OtpChallengeIssued, PasswordExpirySet, RecoveryLinkIssued, SecurityQuestionLocked,
    TemporaryPasswordIssued,
};
use crate::secret::Sealed;
use crate::subject::{
    DecoyCodeSent, DecoyLinkSent, DecoyQuestionLocked, UnknownChecksLockedOut,
    UnknownLoginLockedOut,
};
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
    /// Run `EndLocks` on `stream` (an account's, or an unknown id's subject stream).
    EndLocks { stream: String },
    /// SEC-8: run `MirrorNotice` on the unknown id's subject stream `stream`, as a worker
    /// records the notice a real account's event is sent.
    MirrorNotice { stream: String, template: String },
    /// SC-2: run `NoteDocumentExpiry` on the account `stream`, `days_before` days before the
    /// identity document's expiry `expires_on`.
    DocumentExpiry {
        stream: String,
        expires_on: NaiveDate,
        days_before: u32,
    },
    /// AP-6: run `NoteAppPasswordExpiry` on the account `stream`, `days_before` days before
    /// the expiry `expires_at` of the scope's password (0: at it).
    AppPasswordExpiry {
        stream: String,
        scope: String,
        expires_at: DateTime<Utc>,
        days_before: u32,
    },
    /// PW-6: run `NotePasswordExpiry` on the account `stream`, `days_before` days before the
    /// password's expiry `expires_at` (0: at it).
    PasswordExpiry {
        stream: String,
        expires_at: DateTime<Utc>,
        days_before: u32,
    },
    /// SC-8: run `ReviewInactivity` on the account `stream`.
    Inactivity { stream: String },
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

impl Schedule {
    /// This schedule with `deadline` set too.
    fn and(mut self, deadline: Deadline) -> Self {
        self.set.push(deadline);
        self
    }
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

crate::event_group! {
    /// The events that set timers.
    pub enum ScheduleEvent {
        TemporaryPasswordIssued,
        RecoveryLinkIssued,
        OtpChallengeIssued,
        LoginLockedOut,
        SecurityQuestionLocked,
        UnknownLoginLockedOut,
        DecoyQuestionLocked,
        ChecksLockedOut,
        UnknownChecksLockedOut,
        DecoyLinkSent,
        DecoyCodeSent,
        AppPasswordIssued,
        AppPasswordPostponed,
        AccountSuspended,
        IdentityDocumentRecorded,
        PasswordExpirySet,
        InactivityDeadlineSet,
        InactivityWarned,
    }
}

/// SC-8: the next look at an identity's use, at `at`.
fn inactivity_check(stream: &str, at: DateTime<Utc>) -> Schedule {
    Schedule::default().and(Deadline {
        key: format!("inactivity/{stream}/{}", at.timestamp_millis()),
        timer: Timer::Inactivity {
            stream: stream.to_string(),
        },
        due_at: at,
    })
}

fn expiry_key(stream: &str, scope: &str, expires_at: DateTime<Utc>, days_before: u32) -> String {
    format!(
        "app-password-expiry/{stream}/{scope}/{}/{days_before}",
        expires_at.timestamp_millis()
    )
}

/// AP-6: the notices before the expiry `expires_at` of `scope`'s password; a postpone cancels
/// those of the expiry it moved. A regeneration or deactivation cancels nothing here: the
/// command decides from the state and gives no notice for an expiry that no longer stands.
fn expiry_notices(
    stream: &str,
    scope: &str,
    expires_at: DateTime<Utc>,
    moved_from: Option<DateTime<Utc>>,
) -> Schedule {
    let days = crate::account::EXPIRY_NOTICE_DAYS;
    Schedule {
        set: days
            .iter()
            .map(|&days_before| Deadline {
                key: expiry_key(stream, scope, expires_at, days_before),
                timer: Timer::AppPasswordExpiry {
                    stream: stream.to_string(),
                    scope: scope.to_string(),
                    expires_at,
                    days_before,
                },
                due_at: expires_at - Duration::days(i64::from(days_before)),
            })
            .collect(),
        cancel: moved_from
            .map(|old| {
                days.iter()
                    .map(|&d| expiry_key(stream, scope, old, d))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The end of a lock on `stream` at `until`.
fn end_locks(stream: &str, until: DateTime<Utc>) -> Schedule {
    Schedule {
        set: vec![Deadline {
            key: format!("end-locks/{stream}/{}", until.timestamp_millis()),
            timer: Timer::EndLocks {
                stream: stream.to_string(),
            },
            due_at: until,
        }],
        cancel: Vec::new(),
    }
}

/// SEC-8: a decoy's event that a real account's notice would follow is followed by a mirror,
/// due at once (the scheduler fires it as soon as it sees it, as a worker sends a notice).
fn mirror(stream: &str, template: &str, at: DateTime<Utc>) -> Deadline {
    Deadline {
        key: format!(
            "mirror-notice/{stream}/{template}/{}",
            at.timestamp_millis()
        ),
        timer: Timer::MirrorNotice {
            stream: stream.to_string(),
            template: template.to_string(),
        },
        due_at: DateTime::UNIX_EPOCH,
    }
}

/// What `event`, appended to `stream`, does to the timers.
pub fn schedule_for(stream: &str, event: &ScheduleEvent) -> Schedule {
    let destroy = |sealed: Option<&Sealed>| Schedule {
        set: sealed.and_then(destroy_key).into_iter().collect(),
        cancel: Vec::new(),
    };
    match event {
        ScheduleEvent::TemporaryPasswordIssued(e) => destroy(e.sealed_password.as_ref()),
        ScheduleEvent::RecoveryLinkIssued(e) => destroy(Some(&e.sealed_token)),
        ScheduleEvent::OtpChallengeIssued(e) => destroy(Some(&e.sealed_code)),
        ScheduleEvent::LoginLockedOut(e) => end_locks(stream, e.until),
        ScheduleEvent::SecurityQuestionLocked(e) => end_locks(stream, e.until),
        ScheduleEvent::UnknownLoginLockedOut(e) => {
            end_locks(stream, e.until).and(mirror(stream, "login_locked", e.until))
        }
        ScheduleEvent::DecoyQuestionLocked(e) => {
            end_locks(stream, e.until).and(mirror(stream, "lockout_started", e.until))
        }
        ScheduleEvent::ChecksLockedOut(e) => end_locks(stream, e.until),
        ScheduleEvent::UnknownChecksLockedOut(e) => {
            end_locks(stream, e.until).and(mirror(stream, "checks_locked", e.until))
        }
        ScheduleEvent::DecoyLinkSent(e) => {
            Schedule::default().and(mirror(stream, "recovery_link", e.expires_at))
        }
        ScheduleEvent::DecoyCodeSent(e) => {
            Schedule::default().and(mirror(stream, "one_time_code", e.expires_at))
        }
        ScheduleEvent::AppPasswordIssued(e) => expiry_notices(stream, &e.scope, e.expires_at, None),
        ScheduleEvent::AppPasswordPostponed(e) => {
            expiry_notices(stream, &e.scope, e.expires_at, Some(e.previous_expiry))
        }
        // SC-6: `EndLocks` also ends a suspension whose period is over.
        ScheduleEvent::AccountSuspended(e) => end_locks(stream, e.until),
        // SC-2: 30 and 7 days before the document expires (at the start of those days, UTC).
        ScheduleEvent::IdentityDocumentRecorded(e) => Schedule {
            set: crate::account::DOCUMENT_NOTICE_DAYS
                .iter()
                .filter_map(|&days_before| {
                    let day = e.expires_on - Duration::days(i64::from(days_before));
                    Some(Deadline {
                        key: format!("document-expiry/{stream}/{}/{days_before}", e.expires_on),
                        timer: Timer::DocumentExpiry {
                            stream: stream.to_string(),
                            expires_on: e.expires_on,
                            days_before,
                        },
                        due_at: day.and_hms_opt(0, 0, 0)?.and_utc(),
                    })
                })
                .collect(),
            cancel: Vec::new(),
        },
        // PW-6: 14, 3 and 1 days before the password expires, and at the expiry. A newer
        // password cancels nothing here: the command gives no notice for an expiry that no
        // longer stands.
        ScheduleEvent::PasswordExpirySet(e) => Schedule {
            set: crate::account::PASSWORD_NOTICE_DAYS
                .iter()
                .chain(std::iter::once(&0))
                .map(|&days_before| Deadline {
                    key: format!(
                        "password-expiry/{stream}/{}/{days_before}",
                        e.expires_at.timestamp_millis()
                    ),
                    timer: Timer::PasswordExpiry {
                        stream: stream.to_string(),
                        expires_at: e.expires_at,
                        days_before,
                    },
                    due_at: e.expires_at - Duration::days(i64::from(days_before)),
                })
                .collect(),
            cancel: Vec::new(),
        },
        ScheduleEvent::InactivityDeadlineSet(e) => inactivity_check(stream, e.next_check_at),
        ScheduleEvent::InactivityWarned(e) => inactivity_check(stream, e.next_check_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::TemporaryPasswordReason;
    use crate::secret::PasswordHash;
    use chrono::TimeZone;

    #[test]
    fn a_sealed_temporary_password_schedules_its_keys_destruction_two_days_after_its_day() {
        let issued = ScheduleEvent::TemporaryPasswordIssued(TemporaryPasswordIssued {
            password_hash: PasswordHash::new("$argon2id$h"),
            reason: TemporaryPasswordReason::Opening,
            form_reference: None,
            sealed_password: Some(Sealed {
                key_id: "20261124".into(),
                nonce: "n".into(),
                ciphertext: "c".into(),
                ephemeral: None,
            }),
        });
        let schedule = schedule_for("account-x", &issued);
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
    fn a_lockout_sets_a_command_timer_at_its_end_sec_6() {
        let until = Utc
            .with_ymd_and_hms(2026, 11, 27, 10, 15, 0)
            .single()
            .unwrap_or_default();
        let locked = ScheduleEvent::LoginLockedOut(LoginLockedOut {
            until,
            failures: 10,
        });
        let schedule = schedule_for("account-7", &locked);
        assert_eq!(
            schedule.set,
            vec![Deadline {
                key: format!("end-locks/account-7/{}", until.timestamp_millis()),
                timer: Timer::EndLocks {
                    stream: "account-7".into()
                },
                due_at: until,
            }]
        );
    }

    #[test]
    fn a_document_sets_its_notices_30_and_7_days_before_it_expires_sc_2() {
        let expires_on = NaiveDate::from_ymd_opt(2027, 3, 1).unwrap();
        let event =
            ScheduleEvent::IdentityDocumentRecorded(crate::account::IdentityDocumentRecorded {
                kind: crate::account::DocumentKind::Passport,
                number: "YA1234567".into(),
                expires_on,
            });
        let schedule = schedule_for("account-x", &event);
        let due: Vec<(String, u32)> = schedule
            .set
            .iter()
            .map(|d| match &d.timer {
                Timer::DocumentExpiry { days_before, .. } => (d.due_at.to_rfc3339(), *days_before),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            due,
            [
                ("2027-01-30T00:00:00+00:00".to_string(), 30),
                ("2027-02-22T00:00:00+00:00".to_string(), 7)
            ]
        );
    }

    #[test]
    fn an_app_password_sets_its_four_expiry_notices_ap_6() {
        let expires_at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2027, 3, 1, 9, 0, 0).unwrap();
        let event = ScheduleEvent::AppPasswordIssued(AppPasswordIssued {
            scope: "mailbox".into(),
            password_hmac: "ab".repeat(32),
            expires_at,
            replaced: false,
        });
        let schedule = schedule_for("account-x", &event);
        let due: Vec<(DateTime<Utc>, u32)> = schedule
            .set
            .iter()
            .map(|d| match &d.timer {
                Timer::AppPasswordExpiry { days_before, .. } => (d.due_at, *days_before),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            due,
            vec![
                (expires_at - Duration::days(14), 14),
                (expires_at - Duration::days(3), 3),
                (expires_at - Duration::days(1), 1),
                (expires_at, 0),
            ]
        );
        let keys: std::collections::BTreeSet<_> = schedule.set.iter().map(|d| &d.key).collect();
        assert_eq!(keys.len(), 4);
        // A postpone sets the new expiry's four and cancels exactly the old ones.
        let later = expires_at + Duration::days(92);
        let postponed = schedule_for(
            "account-x",
            &ScheduleEvent::AppPasswordPostponed(AppPasswordPostponed {
                scope: "mailbox".into(),
                previous_expiry: expires_at,
                expires_at: later,
            }),
        );
        let cancelled: std::collections::BTreeSet<_> = postponed.cancel.iter().collect();
        assert_eq!(cancelled, keys);
        assert!(postponed.set.iter().all(|d| !keys.contains(&d.key)));
        assert_eq!(postponed.set.len(), 4);
    }

    #[test]
    fn a_forged_key_id_schedules_nothing() {
        assert_eq!(delivery_key_end("../../x"), None);
    }
}
