//! SEC-6's lockouts, one shape for all of them (logins, security questions; accounts and
//! unknown ids): failures in a row lock at a threshold until a time; the lock's end is recorded
//! when it is next met, and the count starts afresh.

use chrono::{DateTime, Utc};

/// Where a lock stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Open,
    /// It ran out at this time: record its end, then go on.
    Ended(DateTime<Utc>),
    Locked {
        until: DateTime<Utc>,
        /// Whole seconds to `until`, at least one (for `Retry-After`).
        seconds: i64,
    },
}

pub fn lock_at(locked_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Lock {
    match locked_until {
        Some(until) if now < until => Lock::Locked {
            until,
            seconds: (until - now).num_seconds().max(1),
        },
        Some(until) => Lock::Ended(until),
        None => Lock::Open,
    }
}

/// The failures in a row once one more is counted: a lock that just ended starts afresh.
pub fn failures_after(previous: u32, lock_ended: bool) -> u32 {
    if lock_ended {
        1
    } else {
        previous + 1
    }
}

/// Refuses with `refuse(until, seconds)` while the lock lasts; once it has ended, the event
/// `ended(until)` that records the end, to write before anything else; nothing while open.
pub fn guard<E, R>(
    locked_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    refuse: impl FnOnce(DateTime<Utc>, i64) -> R,
    ended: impl FnOnce(DateTime<Utc>) -> E,
) -> Result<Vec<E>, R> {
    match lock_at(locked_until, now) {
        Lock::Locked { until, seconds } => Err(refuse(until, seconds)),
        Lock::Ended(until) => Ok(vec![ended(until)]),
        Lock::Open => Ok(Vec::new()),
    }
}
