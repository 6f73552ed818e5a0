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

/// A key's window: its length and the hits within it.
type Window = (Duration, VecDeque<DateTime<Utc>>);

#[derive(Debug, Default)]
pub struct Limiter {
    windows: Mutex<HashMap<String, Window>>,
    lockouts: Mutex<HashMap<String, Lockout>>,
}

#[derive(Debug, Default)]
struct Lockout {
    failures: u32,
    /// Attempts under way: they count against the threshold until they end, so parallel
    /// guesses cannot exceed it (SEC-6).
    in_flight: u32,
    until: Option<DateTime<Utc>>,
    /// The last attempt: a run of failures this old is forgotten when the map is pruned (the
    /// log keeps the authoritative count).
    last: Option<DateTime<Utc>>,
}

/// How long an idle run of failures is remembered in memory.
const IDLE_RUN_HOURS: i64 = 1;

/// The group a client address is limited as: an IPv4 address, or an IPv6 /64 (one site's
/// whole allocation, which one holder can roam across).
fn address_group(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!(
                    "{:x}:{:x}:{:x}:{:x}::/64",
                    s.first().copied().unwrap_or(0),
                    s.get(1).copied().unwrap_or(0),
                    s.get(2).copied().unwrap_or(0),
                    s.get(3).copied().unwrap_or(0)
                )
            }
        },
    }
}

/// One login attempt under way for a user id; ends as a success, a failure, or (dropped) as
/// neither.
pub struct LoginAttempt<'a> {
    limiter: &'a Limiter,
    key: String,
    ended: bool,
}

impl LoginAttempt<'_> {
    /// A right password ends the run of failures.
    pub fn succeeded(mut self) {
        self.ended = true;
        self.limiter.end_attempt(&self.key, None);
    }

    /// One more failure in a row; at `threshold` the user id is locked out for `lock`.
    pub fn failed(mut self, threshold: u32, lock: Duration, now: DateTime<Utc>) {
        self.ended = true;
        self.limiter
            .end_attempt(&self.key, Some((threshold, lock, now)));
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            if let Ok(mut lockouts) = self.limiter.lockouts.lock() {
                if let Some(l) = lockouts.get_mut(&self.key) {
                    l.in_flight = l.in_flight.saturating_sub(1);
                }
            }
        }
    }
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
            // Each key by its own window: an hourly count outlives a busy minute's pruning.
            windows.retain(|_, (length, hits)| hits.back().is_some_and(|t| now - *t < *length));
        }
        let (length, hits) = windows
            .entry(key)
            .or_insert_with(|| (window, VecDeque::new()));
        *length = window;
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
            format!("{what}:{}", address_group(ip)),
            limit,
            Duration::minutes(1),
            now,
            what,
        )
    }

    /// SEC-6: starts a login attempt for `key`, or `429` while it is locked out or while the
    /// failures so far and the attempts under way already reach `threshold`.
    pub fn begin_login(
        &self,
        key: String,
        threshold: u32,
        now: DateTime<Utc>,
    ) -> Result<LoginAttempt<'_>, Problem> {
        let mut lockouts = self
            .lockouts
            .lock()
            .map_err(|_| Problem::internal(&"limiter poisoned"))?;
        if lockouts.len() >= PRUNE_AT {
            let idle = Duration::hours(IDLE_RUN_HOURS);
            lockouts.retain(|_, l| {
                l.until.is_some_and(|u| u > now)
                    || l.in_flight > 0
                    || (l.failures > 0 && l.last.is_some_and(|t| now - t < idle))
            });
        }
        let entry = lockouts.entry(key.clone()).or_default();
        match entry.until {
            Some(until) if now < until => {
                return Err(limited(
                    seconds_until(until, now),
                    "failed logins for this user id",
                ))
            }
            Some(_) => *entry = Lockout::default(),
            None => {}
        }
        if entry.failures + entry.in_flight >= threshold {
            return Err(limited(1, "login attempts for this user id at once"));
        }
        entry.in_flight += 1;
        entry.last = Some(now);
        Ok(LoginAttempt {
            limiter: self,
            key,
            ended: false,
        })
    }

    fn end_attempt(&self, key: &str, failure: Option<(u32, Duration, DateTime<Utc>)>) {
        let Ok(mut lockouts) = self.lockouts.lock() else {
            return;
        };
        let Some(entry) = lockouts.get_mut(key) else {
            return;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        match failure {
            None => entry.failures = 0,
            Some((threshold, lock, now)) => {
                entry.failures += 1;
                if entry.failures >= threshold {
                    entry.until = Some(now + lock);
                    entry.failures = 0;
                }
            }
        }
        if entry.failures == 0 && entry.in_flight == 0 && entry.until.is_none() {
            lockouts.remove(key);
        }
    }

    /// Ends any lockout of `key` (a recovery or an operator's reset proved the holder).
    pub fn lift(&self, key: &str) {
        if let Ok(mut lockouts) = self.lockouts.lock() {
            if let Some(entry) = lockouts.get_mut(key) {
                entry.failures = 0;
                entry.until = None;
            }
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
        let fail = |at_s| {
            limiter
                .begin_login("u".into(), 10, at(at_s))
                .unwrap()
                .failed(10, lock, at(at_s));
        };
        for _ in 0..9 {
            fail(0);
        }
        limiter
            .begin_login("u".into(), 10, at(0))
            .unwrap()
            .succeeded();
        for _ in 0..9 {
            fail(0);
        }
        fail(1);
        let refused = limiter.begin_login("u".into(), 10, at(2)).err().unwrap();
        assert_eq!(refused.retry_after, Some(899));
        assert!(limiter.begin_login("u".into(), 10, at(901)).is_ok());
    }

    #[test]
    fn parallel_attempts_cannot_exceed_the_threshold() {
        let limiter = Limiter::default();
        let attempts: Vec<_> = (0..3)
            .map(|_| limiter.begin_login("u".into(), 3, at(0)).unwrap())
            .collect();
        assert_eq!(
            limiter
                .begin_login("u".into(), 3, at(0))
                .err()
                .unwrap()
                .status,
            429
        );
        // An attempt that ends in neither way (an error) frees its place.
        drop(attempts);
        assert!(limiter.begin_login("u".into(), 3, at(0)).is_ok());
    }

    #[test]
    fn ipv6_addresses_are_limited_by_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_group(a), address_group(b));
        assert_ne!(address_group(a), address_group(c));
        let mapped: std::net::IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_group(mapped), "192.0.2.1");
    }

    #[test]
    fn pruning_keeps_an_hourly_count_that_a_minute_would_drop() {
        let limiter = Limiter::default();
        limiter
            .hit("hourly".into(), 1, Duration::hours(1), at(0), "x")
            .unwrap();
        for n in 0..PRUNE_AT {
            let _ = limiter.hit(format!("k{n}"), 1, Duration::minutes(1), at(0), "x");
        }
        let _ = limiter.hit("late".into(), 1, Duration::minutes(1), at(120), "x");
        assert!(limiter
            .hit("hourly".into(), 1, Duration::hours(1), at(130), "x")
            .is_err());
    }
}
