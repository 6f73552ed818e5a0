//! Delivery keys (SPEC: envelope, SEC-7): a secret that a worker must deliver (a temporary
//! password, a link token, an OTP) travels inside its event only sealed to the day's delivery
//! key. A day's key is an X25519 pair: its public half (`<data-dir>/keys/delivery/<yyyymmdd>.pub`)
//! seals, its private half (`<yyyymmdd>.x25519`, mode 0600) opens. Only a process that delivers
//! (runs the mailer or the SMS sender) creates pairs and holds private halves; an API node that
//! delivers nothing (`--workers none`) seals with published public halves and never holds a key
//! that opens anything. A seal is X25519 with an ephemeral key, HKDF-SHA256 and
//! ChaCha20-Poly1305, bound to a context string (the purpose and the account), so a ciphertext
//! cannot be moved into another event and opened there.
//!
//! A key is destroyed once every secret under it has expired: two days after its day ended, by
//! whichever process holds it, so the immutable log keeps no readable secret beyond its useful
//! life. Seals made before (under a day's symmetric key, `<yyyymmdd>.key`, no `ephemeral`) still
//! open until that key is destroyed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use custode_domain::schedule::delivery_key_end;
use custode_domain::secret::Sealed;
use custode_domain::Secret;
use rand::RngCore;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};

/// The HKDF `info` of a seal: names the scheme, so a key derived here serves nothing else.
const SEAL_INFO: &[u8] = b"custode/delivery/x25519-hkdf-sha256-chacha20poly1305/v1";

#[derive(Debug, thiserror::Error)]
pub enum DeliveryKeyError {
    #[error("delivery key store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("delivery key {0} is gone (destroyed after its secrets expired) or unreadable")]
    KeyGone(String),
    #[error("a sealed secret does not open under its key and context")]
    Tampered,
    #[error("no public delivery key is published for {0}: a process that delivers (mailer or sms) creates it in this keys directory")]
    NoPublicKey(String),
    /// A published public half that is not a usable X25519 key: malformed (a copy cut short,
    /// say) or of low order, which would make every seal openable without a private key.
    #[error("the published delivery key {0} is malformed or not a safe X25519 key: publish it again from the delivering process")]
    BadPublicKey(String),
}

/// The key ring on disk. Cheap to clone; every operation reads the directory, which is what
/// lets a worker apart and the API share keys through the file system.
#[derive(Debug, Clone)]
pub struct DeliveryKeys {
    dir: PathBuf,
    /// Whether this process delivers: it creates key pairs and opens seals. An API node that
    /// delivers nothing only reads public halves.
    delivers: bool,
}

/// What a key file holds.
#[derive(Clone, Copy)]
enum Half {
    /// `<day>.x25519`: the private half of the day's pair.
    Private,
    /// `<day>.pub`: its public half.
    Public,
    /// `<day>.key`: a day's symmetric key, from before pairs (opens old seals only).
    Legacy,
}

impl Half {
    fn suffix(self) -> &'static str {
        match self {
            Half::Private => "x25519",
            Half::Public => "pub",
            Half::Legacy => "key",
        }
    }
}

impl DeliveryKeys {
    /// The key ring of a process that delivers (creating `<keys_dir>/delivery`, mode 0700).
    pub fn open(keys_dir: &Path) -> Result<Self, DeliveryKeyError> {
        Self::at(keys_dir, true)
    }

    /// The key ring of a process that only seals: it uses published public halves and never
    /// creates or reads a private one (SEC-7: an API node cannot open what it seals).
    pub fn sealing_only(keys_dir: &Path) -> Result<Self, DeliveryKeyError> {
        Self::at(keys_dir, false)
    }

    fn at(keys_dir: &Path, delivers: bool) -> Result<Self, DeliveryKeyError> {
        let dir = keys_dir.join("delivery");
        fs::create_dir_all(&dir).map_err(|source| DeliveryKeyError::Io {
            path: dir.clone(),
            source,
        })?;
        // In a worker's data dir as in the service's (found from outside: a worker apart left
        // it 0755).
        crate::service_key::private_keys_dir(keys_dir).map_err(|source| DeliveryKeyError::Io {
            path: keys_dir.to_path_buf(),
            source,
        })?;
        restrict(&dir, 0o700)?;
        Ok(Self { dir, delivers })
    }

    fn key_path(&self, key_id: &str, half: Half) -> PathBuf {
        self.dir.join(format!("{key_id}.{}", half.suffix()))
    }

    /// The 32 bytes of `key_id`'s `half`, if its file is there.
    fn read(&self, key_id: &str, half: Half) -> Result<Option<[u8; 32]>, DeliveryKeyError> {
        if key_id.len() != 8 || !key_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DeliveryKeyError::KeyGone(key_id.to_string()));
        }
        let path = self.key_path(key_id, half);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = STANDARD
                    .decode(text.trim())
                    .map_err(|_| DeliveryKeyError::KeyGone(key_id.to_string()))?;
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| DeliveryKeyError::KeyGone(key_id.to_string()))?;
                Ok(Some(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DeliveryKeyError::Io { path, source }),
        }
    }

    /// Writes `bytes` as `key_id`'s `half` unless that file exists: the first writer wins
    /// (threads and processes may race to create a day's pair), none writes into another's file.
    fn write_once(
        &self,
        key_id: &str,
        half: Half,
        bytes: &[u8; 32],
        mode: u32,
    ) -> Result<(), DeliveryKeyError> {
        let path = self.key_path(key_id, half);
        let tmp = self.dir.join(format!(
            ".{key_id}.{}.{:016x}.tmp",
            half.suffix(),
            rand::rngs::OsRng.next_u64()
        ));
        let io = |source| DeliveryKeyError::Io {
            path: path.clone(),
            source,
        };
        {
            let mut file = fs::File::create(&tmp).map_err(io)?;
            restrict(&tmp, mode)?;
            file.write_all(STANDARD.encode(bytes).as_bytes())
                .map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        // Linking is an atomic create-if-absent; a key on disk is never replaced.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// The day's pair, created (with its public half published) when missing.
    fn ensure_pair(&self, key_id: &str) -> Result<PublicKey, DeliveryKeyError> {
        if self.read(key_id, Half::Private)?.is_none() {
            let mut private = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut private);
            self.write_once(key_id, Half::Private, &private, 0o600)?;
        }
        // Whoever won the race, the public half is derived from what is on disk.
        let private = self
            .read(key_id, Half::Private)?
            .ok_or_else(|| DeliveryKeyError::KeyGone(key_id.to_string()))?;
        let public = PublicKey::from(&StaticSecret::from(private));
        self.write_once(key_id, Half::Public, public.as_bytes(), 0o644)?;
        Ok(public)
    }

    /// Creates today's pair and tomorrow's when missing, so that sealing processes always
    /// find a published public half, midnight included. A delivering process calls this when
    /// it starts and as it delivers.
    pub fn publish(&self, now: DateTime<Utc>) -> Result<(), DeliveryKeyError> {
        if !self.delivers {
            return Ok(());
        }
        for day in [now, now + chrono::Duration::days(1)] {
            self.ensure_pair(&day.format("%Y%m%d").to_string())?;
        }
        Ok(())
    }

    /// The public half that seals at `now`.
    fn public_key_for(&self, now: DateTime<Utc>) -> Result<(String, PublicKey), DeliveryKeyError> {
        let key_id = now.format("%Y%m%d").to_string();
        let published = self.read(&key_id, Half::Public).map_err(|e| match e {
            DeliveryKeyError::KeyGone(id) => DeliveryKeyError::BadPublicKey(id),
            e => e,
        })?;
        if let Some(public) = published {
            return Ok((key_id, PublicKey::from(public)));
        }
        if !self.delivers {
            return Err(DeliveryKeyError::NoPublicKey(key_id));
        }
        self.publish(now)?;
        let public = self.ensure_pair(&key_id)?;
        Ok((key_id, public))
    }

    /// Seals `secret` to today's public key, bound to `context`.
    pub fn seal(
        &self,
        secret: &Secret,
        context: &str,
        now: DateTime<Utc>,
    ) -> Result<Sealed, DeliveryKeyError> {
        let (key_id, recipient) = self.public_key_for(now)?;
        let ephemeral = EphemeralSecret::random_from_rng(rand::rngs::OsRng);
        let ephemeral_public = PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&recipient);
        // A low-order public half (all zeros, say) gives a shared secret anyone can compute.
        if !shared.was_contributory() {
            return Err(DeliveryKeyError::BadPublicKey(key_id));
        }
        let key = seal_key(shared.as_bytes(), &ephemeral_public, &recipient)?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = ChaCha20Poly1305::new(Key::from_slice(&key))
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| DeliveryKeyError::Tampered)?;
        Ok(Sealed {
            key_id,
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
            ephemeral: Some(STANDARD.encode(ephemeral_public.as_bytes())),
        })
    }

    /// Opens a sealed secret; `KeyGone` once its key has been destroyed (or in a process that
    /// holds no private keys).
    pub fn open_sealed(&self, sealed: &Sealed, context: &str) -> Result<Secret, DeliveryKeyError> {
        let gone = || DeliveryKeyError::KeyGone(sealed.key_id.clone());
        let key = match &sealed.ephemeral {
            None => self.read(&sealed.key_id, Half::Legacy)?.ok_or_else(gone)?,
            Some(ephemeral) => {
                if !self.delivers {
                    return Err(gone());
                }
                let private = self.read(&sealed.key_id, Half::Private)?.ok_or_else(gone)?;
                let ephemeral: [u8; 32] = STANDARD
                    .decode(ephemeral)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(DeliveryKeyError::Tampered)?;
                let ephemeral = PublicKey::from(ephemeral);
                let private = StaticSecret::from(private);
                let shared = private.diffie_hellman(&ephemeral);
                seal_key(shared.as_bytes(), &ephemeral, &PublicKey::from(&private))?
            }
        };
        let nonce = STANDARD
            .decode(&sealed.nonce)
            .map_err(|_| DeliveryKeyError::Tampered)?;
        if nonce.len() != 12 {
            return Err(DeliveryKeyError::Tampered);
        }
        let ciphertext = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| DeliveryKeyError::Tampered)?;
        let clear = ChaCha20Poly1305::new(Key::from_slice(&key))
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| DeliveryKeyError::Tampered)?;
        String::from_utf8(clear)
            .map(Secret::new)
            .map_err(|_| DeliveryKeyError::Tampered)
    }

    /// Destroys every key file (private, public, legacy) whose day's life
    /// ([`delivery_key_end`]) is over at `now`; returns the ids destroyed.
    pub fn destroy_expired(&self, now: DateTime<Utc>) -> Result<Vec<String>, DeliveryKeyError> {
        let io = |source| DeliveryKeyError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut destroyed = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some((key_id, suffix)) = name.split_once('.') else {
                continue;
            };
            if !matches!(suffix, "x25519" | "pub" | "key") {
                continue;
            }
            // Another worker on the same keys (the mailer and the SMS sender share them in the
            // embedded mode, on the same tick) may have destroyed it since the listing.
            if delivery_key_end(key_id).is_some_and(|end| end <= now)
                && remove_if_present(&entry.path()).map_err(io)?
                && suffix != "pub"
                && !destroyed.iter().any(|d: &String| d == key_id)
            {
                destroyed.push(key_id.to_string());
            }
        }
        Ok(destroyed)
    }

    /// Whether this directory holds any key that opens a seal (a private half or a legacy key).
    pub fn holds_private_keys(&self) -> Result<bool, DeliveryKeyError> {
        let io = |source| DeliveryKeyError::Io {
            path: self.dir.clone(),
            source,
        };
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name().to_string_lossy().to_string();
            if name.ends_with(".x25519") || name.ends_with(".key") {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The symmetric key of one seal: HKDF-SHA256 over the X25519 shared secret, salted with both
/// public keys (the ephemeral one first), under [`SEAL_INFO`].
fn seal_key(
    shared: &[u8; 32],
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> Result<[u8; 32], DeliveryKeyError> {
    let salt = [ephemeral.as_bytes().as_slice(), recipient.as_bytes()].concat();
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), shared)
        .expand(SEAL_INFO, &mut key)
        .map_err(|_| DeliveryKeyError::Tampered)?;
    Ok(key)
}

fn restrict(path: &Path, mode: u32) -> Result<(), DeliveryKeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
            DeliveryKeyError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Removes the file at `path`; whether it was there to remove.
fn remove_if_present(path: &Path) -> std::io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_under_its_context() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let sealed = keys
            .seal(&Secret::new("Tmp-Pass-123"), "a", at(3, 10))
            .unwrap();
        assert_eq!(sealed.key_id, "20261103");
        assert!(!sealed.ciphertext.contains("Tmp-Pass"));
        assert_eq!(
            keys.open_sealed(&sealed, "a").unwrap().expose(),
            "Tmp-Pass-123"
        );
        assert!(matches!(
            keys.open_sealed(&sealed, "b"),
            Err(DeliveryKeyError::Tampered)
        ));
    }

    #[test]
    fn keys_rotate_daily_and_are_destroyed_two_days_after_their_day() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let monday = keys.seal(&Secret::new("one"), "c", at(2, 23)).unwrap();
        let tuesday = keys.seal(&Secret::new("two"), "c", at(3, 1)).unwrap();
        assert_ne!(monday.key_id, tuesday.key_id);
        // The 2nd ends at midnight of the 3rd; it is kept until midnight of the 5th.
        assert!(keys.destroy_expired(at(4, 23)).unwrap().is_empty());
        assert_eq!(keys.destroy_expired(at(5, 0)).unwrap(), vec!["20261102"]);
        assert!(matches!(
            keys.open_sealed(&monday, "c"),
            Err(DeliveryKeyError::KeyGone(_))
        ));
        assert_eq!(keys.open_sealed(&tuesday, "c").unwrap().expose(), "two");
    }

    /// The mailer and the SMS sender destroy the same keys on the same tick: the one that
    /// finds a listed file already gone is not failing (it logged an error every other day).
    #[test]
    fn a_key_destroyed_by_another_worker_meanwhile_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("20261102.x25519");
        std::fs::write(&file, b"k").unwrap();
        assert!(remove_if_present(&file).unwrap());
        assert!(!remove_if_present(&file).unwrap());
        // Anything else still is.
        assert!(remove_if_present(dir.path()).is_err());
    }

    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let sealed = keys.seal(&Secret::new("x"), "c", at(3, 1)).unwrap();
        let meta = fs::metadata(keys.key_path(&sealed.key_id, Half::Private)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn racing_first_seals_of_a_day_all_use_the_one_key_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let sealed: Vec<Sealed> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|n| {
                    let keys = keys.clone();
                    scope.spawn(move || {
                        keys.seal(&Secret::new(format!("s{n}")), "c", at(9, 9))
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (n, sealed) in sealed.iter().enumerate() {
            assert_eq!(
                keys.open_sealed(sealed, "c").unwrap().expose(),
                format!("s{n}")
            );
        }
        let mut files: Vec<String> = fs::read_dir(&keys.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "20261109.pub",
                "20261109.x25519",
                "20261110.pub",
                "20261110.x25519"
            ],
            "one pair a day (today's and tomorrow's), no temporary left behind"
        );
    }

    #[test]
    fn a_forged_key_id_is_refused_without_touching_other_paths() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let forged = Sealed {
            key_id: "../../etc/passwd".into(),
            nonce: String::new(),
            ciphertext: String::new(),
            ephemeral: None,
        };
        assert!(matches!(
            keys.open_sealed(&forged, "c"),
            Err(DeliveryKeyError::KeyGone(_))
        ));
    }

    /// SEC-7: a process that delivers nothing seals with the published public half and holds
    /// no key that opens anything; the delivering process opens what it sealed.
    #[test]
    fn a_sealing_only_node_seals_to_the_public_key_and_cannot_open() {
        let workers = tempfile::tempdir().unwrap();
        let api = tempfile::tempdir().unwrap();
        let delivering = DeliveryKeys::open(workers.path()).unwrap();
        let sealing = DeliveryKeys::sealing_only(api.path()).unwrap();
        assert!(matches!(
            sealing.seal(&Secret::new("x"), "c", at(3, 10)),
            Err(DeliveryKeyError::NoPublicKey(day)) if day == "20261103"
        ));
        delivering.publish(at(3, 10)).unwrap();
        for day in ["20261103", "20261104"] {
            fs::copy(
                delivering.key_path(day, Half::Public),
                sealing.key_path(day, Half::Public),
            )
            .unwrap();
        }
        let sealed = sealing
            .seal(&Secret::new("Tmp-Pass-123"), "c", at(3, 23))
            .unwrap();
        assert!(sealed.ephemeral.is_some());
        assert!(!sealing.holds_private_keys().unwrap());
        assert!(matches!(
            sealing.open_sealed(&sealed, "c"),
            Err(DeliveryKeyError::KeyGone(_))
        ));
        assert_eq!(
            delivering.open_sealed(&sealed, "c").unwrap().expose(),
            "Tmp-Pass-123"
        );
        assert!(matches!(
            delivering.open_sealed(&sealed, "other"),
            Err(DeliveryKeyError::Tampered)
        ));
    }

    /// SEC-7: a published public half that is cut short, not base64, or of low order (all
    /// zeros gives a shared secret anyone can compute; found from outside) seals nothing.
    #[test]
    fn a_malformed_or_low_order_public_key_seals_nothing() {
        let api = tempfile::tempdir().unwrap();
        let sealing = DeliveryKeys::sealing_only(api.path()).unwrap();
        let path = sealing.key_path("20261103", Half::Public);
        let zeros = STANDARD.encode([0u8; 32]);
        // The point of order 2 (u = p - 1, little-endian) is of low order too.
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        let order_two = STANDARD.encode(minus_one);
        for text in [
            "",
            "not base64!",
            "AAAA",
            zeros.as_str(),
            order_two.as_str(),
        ] {
            fs::write(&path, text).unwrap();
            assert!(
                matches!(
                    sealing.seal(&Secret::new("123456"), "c", at(3, 10)),
                    Err(DeliveryKeyError::BadPublicKey(day)) if day == "20261103"
                ),
                "{text:?}"
            );
        }
    }

    /// A seal made before pairs (under the day's symmetric key) opens until its key is gone.
    #[test]
    fn a_seal_under_a_days_symmetric_key_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let key = [7u8; 32];
        fs::write(
            keys.key_path("20261102", Half::Legacy),
            STANDARD.encode(key),
        )
        .unwrap();
        let nonce = [1u8; 12];
        let ciphertext = ChaCha20Poly1305::new(Key::from_slice(&key))
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: b"old-secret",
                    aad: b"c",
                },
            )
            .unwrap();
        let sealed = Sealed {
            key_id: "20261102".into(),
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
            ephemeral: None,
        };
        assert_eq!(
            keys.open_sealed(&sealed, "c").unwrap().expose(),
            "old-secret"
        );
        assert_eq!(keys.destroy_expired(at(5, 0)).unwrap(), vec!["20261102"]);
        assert!(matches!(
            keys.open_sealed(&sealed, "c"),
            Err(DeliveryKeyError::KeyGone(_))
        ));
    }
}
