//! Argon2id hashing of passwords and answers (PW-5) and the bounded pool it runs on. Hashing
//! costs tens of milliseconds of CPU and 19 MiB of memory: it never runs on the async
//! runtime's threads, and at most one hash per core runs at once, so a burst of logins queues
//! instead of starving the API or exhausting memory.

use argon2::password_hash::{PasswordHash as Phc, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use custode_domain::{PasswordHash, Secret, SecretHasher};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Argon2id cost. SPEC's floor (OWASP): m = 19456 KiB, t = 2, p = 1; stronger is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        let (memory_kib, iterations, parallelism) = OWASP_FLOOR;
        Self {
            memory_kib,
            iterations,
            parallelism,
        }
    }
}

/// The Argon2 costs (memory in KiB, iterations, lanes) an imported hash may have (ACC-3): from
/// OWASP's floor that PW-5 names to a ceiling well past any setting this service uses.
pub const IMPORTED_COST: ((u32, u32, u32), (u32, u32, u32)) = (OWASP_FLOOR, (262_144, 10, 8));

/// PW-5's floor (OWASP): memory in KiB, iterations, lanes. Neither this service's own settings
/// nor an imported hash may be weaker.
pub const OWASP_FLOOR: (u32, u32, u32) = (19_456, 2, 1);

#[derive(Debug, thiserror::Error)]
pub enum HashSettingsError {
    #[error("argon2 settings are weaker than OWASP's floor (m=19456 KiB, t=2, p=1)")]
    TooWeak,
    #[error("argon2 settings are invalid: {0}")]
    Invalid(String),
}

pub struct Argon2Hasher {
    argon2: Argon2<'static>,
    /// A hash of a random string, verified against when a login names an unknown user, so
    /// that the answer takes as long as for a real one.
    dummy: PasswordHash,
}

impl Argon2Hasher {
    pub fn new(settings: Argon2Settings) -> Result<Self, HashSettingsError> {
        let (memory_kib, iterations, parallelism) = OWASP_FLOOR;
        if settings.memory_kib < memory_kib
            || settings.iterations < iterations
            || settings.parallelism < parallelism
        {
            return Err(HashSettingsError::TooWeak);
        }
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| HashSettingsError::Invalid(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon2
            .hash_password(salt.as_str().as_bytes(), &salt)
            .map_err(|e| HashSettingsError::Invalid(e.to_string()))?
            .to_string();
        Ok(Self {
            argon2,
            dummy: PasswordHash::new(dummy),
        })
    }
}

impl SecretHasher for Argon2Hasher {
    fn hash(&self, secret: &Secret) -> PasswordHash {
        let salt = SaltString::generate(&mut OsRng);
        match self.argon2.hash_password(secret.expose().as_bytes(), &salt) {
            Ok(phc) => PasswordHash::new(phc.to_string()),
            // Unreachable with parameters checked in `new`; a hash that never verifies is the
            // safe answer if it ever happens.
            Err(e) => {
                tracing::error!(error = %e, "argon2 hashing failed");
                PasswordHash::new("$invalid$")
            }
        }
    }

    fn verify(&self, secret: &Secret, hash: &PasswordHash) -> bool {
        // The parameters come from the PHC string, so hashes made under older settings verify.
        Phc::new(hash.as_str()).is_ok_and(|phc| {
            self.argon2
                .verify_password(secret.expose().as_bytes(), &phc)
                .is_ok()
        })
    }

    /// ACC-3: an Argon2id PHC string (PW-5) whose cost is within [`IMPORTED_COST`]: no weaker
    /// than PW-5's floor (a migrated hash is stored as it came), and not so costly that a login
    /// against it would hold a hashing thread for seconds. Strictly shaped, since the check and
    /// the verifier must read the same thing: version 19, `m`, `t` and `p` once each and
    /// nothing else (a repeated `m` would be checked at its first value and verified at its
    /// last), a salt of 8 to 48 bytes and a hash of 16 to 64.
    fn accepts(&self, hash: &PasswordHash) -> bool {
        let Ok(phc) = Phc::new(hash.as_str()) else {
            return false;
        };
        let mut names: Vec<&str> = phc.params.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        let param = |name: &str| phc.params.get_decimal(name);
        let (floor, ceiling) = IMPORTED_COST;
        phc.algorithm.as_str() == "argon2id"
            && phc.version == Some(0x13)
            && names == ["m", "p", "t"]
            && [
                ("m", floor.0, ceiling.0),
                ("t", floor.1, ceiling.1),
                ("p", floor.2, ceiling.2),
            ]
            .iter()
            .all(|(name, low, high)| param(name).is_some_and(|v| (*low..=*high).contains(&v)))
            && phc.salt.is_some_and(|salt| (11..=64).contains(&salt.len()))
            && phc
                .hash
                .is_some_and(|output| (16..=64).contains(&output.len()))
            && Params::try_from(&phc).is_ok()
    }

    fn verify_dummy(&self, secret: &Secret) {
        let _ = self.verify(secret, &self.dummy);
    }
}

/// A dedicated pool of long-lived threads, one per core, for CPU-heavy closures. Dedicated
/// threads (not Tokio's elastic blocking pool) keep Argon2's 19 MiB working memory warm in
/// each thread's allocator arena instead of faulting fresh pages in for every hash. The queue
/// in front of them is bounded (SEC-9): a job offered while the threads are busy and the queue
/// is full is refused at once ([`PoolError::Busy`]), so a burst of logins gets quick `503`s
/// instead of waiting for seconds.
#[derive(Clone)]
pub struct HashPool {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Jobs running or waiting, and how many may be.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the hashing pool is gone")]
    Closed,
    #[error("the hashing pool's queue is full")]
    Busy,
}

/// Jobs each thread may have waiting when the pool is built without a bound of its own.
const DEFAULT_QUEUE_PER_THREAD: usize = 64;

/// Releases a job's place when it ends, however it ends.
struct Place(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl HashPool {
    pub fn new(size: usize) -> Self {
        Self::bounded(size, size.max(1) * DEFAULT_QUEUE_PER_THREAD)
    }

    /// `size` threads, and at most `queue` jobs waiting for one.
    pub fn bounded(size: usize, waiting: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..size.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("custode-hash-{n}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a hashing thread");
            }
        }
        Self {
            jobs,
            in_flight: Arc::default(),
            capacity: size.max(1) + waiting,
        }
    }

    /// One thread per available core, with at most `queue` jobs waiting.
    pub fn per_core(queue: usize) -> Self {
        Self::bounded(
            std::thread::available_parallelism().map_or(2, usize::from),
            queue,
        )
    }

    /// Runs `f` on a pool thread, or refuses at once when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        use std::sync::atomic::Ordering;
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(PoolError::Busy);
        }
        let place = Place(self.in_flight.clone());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _place = place;
                let _ = reply.send(f());
            }))
            .map_err(|_| PoolError::Closed)?;
        answer.await.map_err(|_| PoolError::Closed)
    }
}

/// Remembers, for the life of one command, what the inner hasher answered, so that a decision
/// retried after a version conflict does not pay for Argon2 again.
pub struct MemoHasher {
    inner: Arc<Argon2Hasher>,
    verified: std::sync::Mutex<Vec<(PasswordHash, Secret, bool)>>,
    hashed: std::sync::Mutex<Vec<(Secret, PasswordHash)>>,
}

impl MemoHasher {
    pub fn new(inner: Arc<Argon2Hasher>) -> Self {
        Self {
            inner,
            verified: std::sync::Mutex::new(Vec::new()),
            hashed: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl SecretHasher for MemoHasher {
    fn hash(&self, secret: &Secret) -> PasswordHash {
        if let Ok(hashed) = self.hashed.lock() {
            if let Some((_, h)) = hashed.iter().find(|(s, _)| s == secret) {
                return h.clone();
            }
        }
        let hash = self.inner.hash(secret);
        if let Ok(mut hashed) = self.hashed.lock() {
            hashed.push((secret.clone(), hash.clone()));
        }
        hash
    }

    fn verify(&self, secret: &Secret, hash: &PasswordHash) -> bool {
        if let Ok(verified) = self.verified.lock() {
            if let Some((_, _, ok)) = verified.iter().find(|(h, s, _)| h == hash && s == secret) {
                return *ok;
            }
        }
        let ok = self.inner.verify(secret, hash);
        if let Ok(mut verified) = self.verified.lock() {
            verified.push((hash.clone(), secret.clone(), ok));
        }
        ok
    }

    fn accepts(&self, hash: &PasswordHash) -> bool {
        self.inner.accepts(hash)
    }

    /// Remembered like a real verification: a retried decoy costs what a retried login does.
    fn verify_dummy(&self, secret: &Secret) {
        let _ = self.verify(secret, &self.inner.dummy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_with_the_owasp_parameters_and_verify() {
        let hasher = Argon2Hasher::new(Argon2Settings::default()).unwrap();
        let hash = hasher.hash(&Secret::new("Tr4m-Colle!Verde"));
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hasher.verify(&Secret::new("Tr4m-Colle!Verde"), &hash));
        assert!(!hasher.verify(&Secret::new("Tr4m-Colle!Verdi"), &hash));
        assert!(!hasher.verify(&Secret::new("x"), &PasswordHash::new("garbage")));
        hasher.verify_dummy(&Secret::new("anything"));
        assert!(hasher.accepts(&hash));
        assert!(!hasher.accepts(&PasswordHash::new("$2b$12$abc")));
        // ACC-3, PW-5: an imported hash no weaker than the floor, nor costly past the ceiling.
        let with = |m: u32, t: u32, p: u32| {
            let params = Params::new(m, t, p, None).unwrap();
            let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"Tr4m-Colle!Verde", &SaltString::generate(&mut OsRng))
                .unwrap()
                .to_string();
            hasher.accepts(&PasswordHash::new(hash))
        };
        assert!(with(19_456, 2, 1));
        assert!(with(65_536, 3, 4));
        assert!(!with(1_024, 1, 1));
        assert!(!with(19_456, 1, 1));
        assert!(!with(8, 11, 1));
        // Strictly shaped: what is checked is what is verified.
        let floor = hash.as_str();
        let (head, tail) = floor.split_at(floor.find("$m=").unwrap());
        let rest = &tail[tail[1..].find('$').unwrap() + 1..];
        for params in [
            "m=19456,t=2,p=1,m=8,t=1",
            "m=19456,t=2,p=1,keyid=abc",
            "m=19456,t=2",
            "t=2,m=19456,p=1,p=1",
        ] {
            let shaped = format!("{head}${params}{rest}");
            assert!(!hasher.accepts(&PasswordHash::new(&shaped)), "{shaped}");
        }
        let reordered = format!("{head}$t=2,p=1,m=19456{rest}");
        assert!(
            hasher.accepts(&PasswordHash::new(&reordered)),
            "{reordered}"
        );
        let no_hash = floor.rsplit_once('$').unwrap().0;
        assert!(!hasher.accepts(&PasswordHash::new(no_hash)), "{no_hash}");
        let argon2i = floor.replacen("$argon2id$", "$argon2i$", 1);
        assert!(!hasher.accepts(&PasswordHash::new(argon2i)));
        let no_version = floor.replacen("$v=19", "", 1);
        assert!(!hasher.accepts(&PasswordHash::new(no_version)));
    }

    #[test]
    fn weaker_than_owasp_is_refused() {
        let weak = Argon2Settings {
            memory_kib: 4096,
            ..Argon2Settings::default()
        };
        assert!(matches!(
            Argon2Hasher::new(weak),
            Err(HashSettingsError::TooWeak)
        ));
    }
}
