//! SEC-2's rate limits, in this process's memory: sliding windows per key (a client address,
//! or the keyed hash of a user id) and SEC-6's lockout of a user id after failed logins in a
//! row. Time comes from the service's clock, so tests move it. Several API nodes each keep
//! their own counts: the limits then hold per node.

use super::problem::Problem;
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Past this many keys, windows that have emptied are dropped.
const PRUNE_AT: usize = 100_000;

#[derive(Debug, Default)]
pub struct Limiter {
    windows: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
    lockouts: Mutex<HashMap<String, Lockout>>,
}

#[derive(Debug, Default)]
struct Lockout {
    failures: u32,
    until: Option<DateTime<Utc>>,
}

/// Whole seconds until `then`, rounded up.
fn seconds_until(then: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    ((then - now).num_milliseconds() + 999) / 1000
}

/// The key of SEC-6's login lockout for a user id as typed.
pub fn login_key(user_id: &str) -> String {
    format!("login:{}", user_id.trim().to_lowercase())
}

fn limited(seconds: i64, what: &str) -> Problem {
    Problem::new(
        "rate-limited",
        format!("too many {what}; try again in {} seconds", seconds.max(1)),
    )
    .retry_after(u64::try_from(seconds.max(1)).unwrap_or(1))
}

impl Limiter {
    /// Counts one request under `key`; refuses it once `limit` were counted in `window`.
    pub fn hit(
        &self,
        key: String,
        limit: u32,
        window: Duration,
        now: DateTime<Utc>,
        what: &str,
    ) -> Result<(), Problem> {
        let mut windows = self
            .windows
            .lock()
            .map_err(|_| Problem::internal(&"limiter poisoned"))?;
        if windows.len() >= PRUNE_AT {
            windows.retain(|_, hits| hits.back().is_some_and(|t| now - *t < window));
        }
        let hits = windows.entry(key).or_default();
        while hits.front().is_some_and(|t| now - *t >= window) {
            hits.pop_front();
        }
        if hits.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            let retry = hits
                .front()
                .map_or(1, |first| seconds_until(*first + window, now));
            return Err(limited(retry, what));
        }
        hits.push_back(now);
        Ok(())
    }

    /// SEC-2's per-client-address limits: `limit` requests of kind `what` a minute. A request
    /// without a known address (no socket) is not counted.
    pub fn per_address_minute(
        &self,
        what: &str,
        address: Option<std::net::IpAddr>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<(), Problem> {
        let Some(ip) = address else {
            return Ok(());
        };
        self.hit(
            format!("{what}:{ip}"),
            limit,
            Duration::minutes(1),
            now,
            what,
        )
    }

    /// `429` while `key` is locked out.
    pub fn check_lockout(&self, key: &str, now: DateTime<Utc>) -> Result<(), Problem> {
        let lockouts = self
            .lockouts
            .lock()
            .map_err(|_| Problem::internal(&"limiter poisoned"))?;
        match lockouts.get(key).and_then(|l| l.until) {
            Some(until) if now < until => Err(limited(
                seconds_until(until, now),
                "failed logins for this user id",
            )),
            _ => Ok(()),
        }
    }

    /// One more failure in a row for `key`; at `threshold` it is locked out for `lock`.
    pub fn failure(&self, key: &str, threshold: u32, lock: Duration, now: DateTime<Utc>) {
        let Ok(mut lockouts) = self.lockouts.lock() else {
            return;
        };
        if lockouts.len() >= PRUNE_AT {
            lockouts.retain(|_, l| l.until.is_some_and(|u| u > now) || l.failures > 0);
        }
        let entry = lockouts.entry(key.to_string()).or_default();
        if entry.until.is_some_and(|u| u <= now) {
            *entry = Lockout::default();
        }
        entry.failures += 1;
        if entry.failures >= threshold {
            entry.until = Some(now + lock);
            entry.failures = 0;
        }
    }

    /// A success ends the run of failures.
    pub fn success(&self, key: &str) {
        if let Ok(mut lockouts) = self.lockouts.lock() {
            lockouts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
            + Duration::seconds(s)
    }

    #[test]
    fn a_window_refuses_past_its_limit_and_says_when_to_retry() {
        let limiter = Limiter::default();
        let minute = Duration::minutes(1);
        for s in 0..3 {
            assert!(limiter.hit("ip".into(), 3, minute, at(s), "x").is_ok());
        }
        let refused = limiter
            .hit("ip".into(), 3, minute, at(10), "x")
            .unwrap_err();
        assert_eq!(refused.status, 429);
        assert_eq!(refused.retry_after, Some(50));
        assert!(limiter.hit("other".into(), 3, minute, at(10), "x").is_ok());
        assert!(limiter.hit("ip".into(), 3, minute, at(60), "x").is_ok());
    }

    #[test]
    fn failures_in_a_row_lock_out_until_the_lock_ends_and_a_success_resets() {
        let limiter = Limiter::default();
        let lock = Duration::minutes(15);
        for _ in 0..9 {
            limiter.failure("u", 10, lock, at(0));
        }
        limiter.success("u");
        for _ in 0..9 {
            limiter.failure("u", 10, lock, at(0));
        }
        assert!(limiter.check_lockout("u", at(1)).is_ok());
        limiter.failure("u", 10, lock, at(1));
        let refused = limiter.check_lockout("u", at(2)).unwrap_err();
        assert_eq!(refused.retry_after, Some(899));
        assert!(limiter.check_lockout("u", at(901)).is_ok());
    }
}
