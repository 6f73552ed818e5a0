//! SEC-2's per-address rate limits, in this process's memory: sliding windows per key (a
//! client address, or the keyed hash of a user id). Time comes from the service's clock, so
//! tests move it. Several API nodes each keep their own counts: these limits then hold per
//! node. SEC-6's lockouts of a user id are not here: they live in the log, counted by the
//! account (or the unknown id's subject stream) under optimistic concurrency.

use super::problem::Problem;
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Past this many keys in one shard, its windows that have emptied are dropped.
const PRUNE_AT: usize = 100_000 / SHARDS;

/// The windows are split by key over this many locks, so that requests from different
/// addresses seldom wait for each other.
const SHARDS: usize = 16;

/// A key's window: its length and the hits within it.
type Window = (Duration, VecDeque<DateTime<Utc>>);

type Shard = Mutex<HashMap<String, Window>>;

#[derive(Debug)]
pub struct Limiter {
    shards: [Shard; SHARDS],
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Shard::default()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

/// The group a client address is limited as: an IPv4 address, or an IPv6 /64 (one site's
/// whole allocation, which one holder can roam across).
/// The wider group a client address belongs to, for a looser cap: an IPv6 /48 (what one
/// customer is commonly given); IPv4 addresses have none.
pub(crate) fn address_site(ip: std::net::IpAddr) -> Option<String> {
    match ip {
        std::net::IpAddr::V4(_) => None,
        std::net::IpAddr::V6(v6) => {
            if embedded_ipv4(v6).is_some() {
                return None;
            }
            let s = v6.segments();
            Some(format!(
                "{:x}:{:x}:{:x}::/48",
                s.first().copied().unwrap_or(0),
                s.get(1).copied().unwrap_or(0),
                s.get(2).copied().unwrap_or(0)
            ))
        }
    }
}

pub fn address_group(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match embedded_ipv4(v6) {
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

/// The IPv4 address an IPv6 spelling carries, counted as that address: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated but still parsed) and NAT64's
/// well-known prefix (`64:ff9b::a.b.c.d`). Otherwise each such spelling would get a count of
/// its own beside the IPv4 one, and all the clients written that way would share one /64.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    // `to_ipv4` reads both mapped and compatible forms, and takes `::` and `::1` for IPv4 too.
    if let Some(v4) = v6
        .to_ipv4()
        .filter(|_| !v6.is_unspecified() && !v6.is_loopback())
    {
        return Some(v4);
    }
    let bits = u128::from(v6);
    (bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000).then(|| std::net::Ipv4Addr::from(bits as u32))
}

/// Whole seconds until `then`, rounded up.
fn seconds_until(then: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    ((then - now).num_milliseconds() + 999) / 1000
}

fn limited(seconds: i64, what: &str) -> Problem {
    Problem::new(
        "rate-limited",
        format!("too many {what}; try again in {} seconds", seconds.max(1)),
    )
    .retry_after(u64::try_from(seconds.max(1)).unwrap_or(1))
}

impl Limiter {
    /// The shard that holds `key`'s window.
    fn shard(&self, key: &str) -> &Shard {
        use std::hash::BuildHasher;
        let n = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let [first, ..] = &self.shards;
        self.shards.get(n).unwrap_or(first)
    }

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
            .shard(&key)
            .lock()
            .map_err(|_| Problem::internal(&"limiter poisoned"))?;
        let hits = Self::window(&mut windows, key, window, now);
        Self::refuse_past(hits, limit, window, now, what)?;
        hits.push_back(now);
        Ok(())
    }

    /// Refuses once `key` counted `limit` hits in the last minute, counting nothing itself
    /// (AP-7's limits count failures only, with [`Limiter::record`]).
    pub fn check(
        &self,
        key: &str,
        limit: u32,
        now: DateTime<Utc>,
        what: &str,
    ) -> Result<(), Problem> {
        let mut windows = self
            .shard(key)
            .lock()
            .map_err(|_| Problem::internal(&"limiter poisoned"))?;
        match windows.get_mut(key) {
            Some((window, hits)) => {
                let window = *window;
                Self::trim(hits, window, now);
                Self::refuse_past(hits, limit, window, now, what)
            }
            None => Ok(()),
        }
    }

    /// Whether this node has a window for `key` (possibly empty).
    pub fn knows(&self, key: &str) -> bool {
        self.shard(key).lock().is_ok_and(|w| w.contains_key(key))
    }

    /// A one-minute window for `key` from hits counted elsewhere (the log), unless this node
    /// already has one.
    pub fn learn(&self, key: &str, mut hits: Vec<DateTime<Utc>>, now: DateTime<Utc>) {
        let Ok(mut windows) = self.shard(key).lock() else {
            return;
        };
        if windows.contains_key(key) {
            return;
        }
        hits.sort_unstable();
        let window = Self::window(&mut windows, key.to_string(), Duration::minutes(1), now);
        window.extend(hits.into_iter().filter(|t| now - *t < Duration::minutes(1)));
    }

    /// Whether `key` has had no hit in the last minute; if so, counts one, in the same step (of
    /// many racing callers, one is first).
    pub fn first_in_minute(&self, key: &str, now: DateTime<Utc>) -> bool {
        let Ok(mut windows) = self.shard(key).lock() else {
            return false;
        };
        let hits = Self::window(&mut windows, key.to_string(), Duration::minutes(1), now);
        if hits.is_empty() {
            hits.push_back(now);
            true
        } else {
            false
        }
    }

    /// Counts one hit under `key` in a one-minute window.
    pub fn record(&self, key: &str, now: DateTime<Utc>) {
        if let Ok(mut windows) = self.shard(key).lock() {
            Self::window(&mut windows, key.to_string(), Duration::minutes(1), now).push_back(now);
        }
    }

    /// `key`'s hits within `window` (pruning emptied windows once there are too many keys).
    fn window(
        windows: &mut HashMap<String, Window>,
        key: String,
        window: Duration,
        now: DateTime<Utc>,
    ) -> &mut VecDeque<DateTime<Utc>> {
        if windows.len() >= PRUNE_AT {
            // Each key by its own window: an hourly count outlives a busy minute's pruning.
            windows.retain(|_, (length, hits)| hits.back().is_some_and(|t| now - *t < *length));
        }
        let (length, hits) = windows
            .entry(key)
            .or_insert_with(|| (window, VecDeque::new()));
        *length = window;
        Self::trim(hits, window, now);
        hits
    }

    fn trim(hits: &mut VecDeque<DateTime<Utc>>, window: Duration, now: DateTime<Utc>) {
        while hits.front().is_some_and(|t| now - *t >= window) {
            hits.pop_front();
        }
    }

    fn refuse_past(
        hits: &VecDeque<DateTime<Utc>>,
        limit: u32,
        window: Duration,
        now: DateTime<Utc>,
        what: &str,
    ) -> Result<(), Problem> {
        if hits.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            let retry = hits
                .front()
                .map_or(1, |first| seconds_until(*first + window, now));
            return Err(limited(retry, what));
        }
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
}

/// SEC-9: the calls anyone can make that write to the log (a login, a recovery's start and
/// every step after it) are capped service-wide, per minute, whatever the id: an unknown id
/// and a real account meet the cap alike, so it tells nothing, and the log cannot be grown
/// without bound from many addresses. A call is counted only once it passed its per-address
/// limit and its body was read, so one address sending junk cannot use the cap up.
pub fn anonymous_write(state: &crate::app::AppState) -> Result<(), Problem> {
    state.limiter.hit(
        "anonymous writes".into(),
        state.config.settings.limits.anonymous_writes_per_minute,
        Duration::minutes(1),
        state.clock.now(),
        "logins and recovery requests service-wide",
    )
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
    fn ipv6_addresses_are_limited_by_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_group(a), address_group(b));
        assert_ne!(address_group(a), address_group(c));
        // An IPv4 address is counted as itself however it is spelt in IPv6.
        for spelling in ["::ffff:192.0.2.1", "::192.0.2.1", "64:ff9b::192.0.2.1"] {
            let ip: std::net::IpAddr = spelling.parse().unwrap();
            assert_eq!(address_group(ip), "192.0.2.1", "{spelling}");
            assert_eq!(address_site(ip), None, "{spelling}");
        }
        // The unspecified and loopback addresses are not IPv4-compatible ones.
        for (spelling, group) in [("::1", "0:0:0:0::/64"), ("::", "0:0:0:0::/64")] {
            let ip: std::net::IpAddr = spelling.parse().unwrap();
            assert_eq!(address_group(ip), group, "{spelling}");
        }
    }

    #[test]
    fn pruning_keeps_an_hourly_count_that_a_minute_would_drop() {
        let limiter = Limiter::default();
        limiter
            .hit("hourly".into(), 1, Duration::hours(1), at(0), "x")
            .unwrap();
        // Pruning is per shard: fill the hourly key's own shard past PRUNE_AT with minute
        // windows, and come back later through a key of that shard.
        let shard = limiter.shard("hourly");
        let same_shard = (0..)
            .map(|n| format!("k{n}"))
            .filter(|k| std::ptr::eq(limiter.shard(k), shard));
        let mut keys = same_shard.take(PRUNE_AT + 1);
        let late = keys.next().unwrap_or_default();
        for key in keys {
            let _ = limiter.hit(key, 1, Duration::minutes(1), at(0), "x");
        }
        let len = || shard.lock().map(|w| w.len()).unwrap_or(0);
        assert!(len() > PRUNE_AT);
        let _ = limiter.hit(late, 1, Duration::minutes(1), at(120), "x");
        // The emptied minute windows went; the hourly one stayed and still counts.
        assert!(len() <= 2, "{}", len());
        assert!(limiter
            .hit("hourly".into(), 1, Duration::hours(1), at(130), "x")
            .is_err());
    }
}
