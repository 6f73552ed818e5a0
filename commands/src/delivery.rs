//! Delivery keys (SPEC: envelope, SEC-7): a secret that a worker must deliver (a temporary
//! password, a link token, an OTP) travels inside its event only sealed with ChaCha20-Poly1305
//! under the key of the day. Keys live in `<data-dir>/keys/delivery/<yyyymmdd>.key` (mode 0600),
//! never in the log. A key is destroyed once every secret under it has expired: two days after
//! its day ended, so the immutable log keeps no readable secret beyond its useful life.
//!
//! The seal is bound to a context string (the purpose and the account), so a ciphertext cannot
//! be moved into another event and opened there.

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
}

/// The key ring on disk. Cheap to clone; every operation reads the directory, which is what
/// lets a worker apart and the API share keys through the file system.
#[derive(Debug, Clone)]
pub struct DeliveryKeys {
    dir: PathBuf,
}

impl DeliveryKeys {
    /// Opens (creating, mode 0700) `<keys_dir>/delivery`.
    pub fn open(keys_dir: &Path) -> Result<Self, DeliveryKeyError> {
        let dir = keys_dir.join("delivery");
        fs::create_dir_all(&dir).map_err(|source| DeliveryKeyError::Io {
            path: dir.clone(),
            source,
        })?;
        restrict(&dir, 0o700)?;
        Ok(Self { dir })
    }

    fn key_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{key_id}.key"))
    }

    /// The key of `day`, created on first use.
    fn key_for(&self, now: DateTime<Utc>) -> Result<(String, [u8; 32]), DeliveryKeyError> {
        let key_id = now.format("%Y%m%d").to_string();
        if let Some(key) = self.read(&key_id)? {
            return Ok((key_id, key));
        }
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let path = self.key_path(&key_id);
        // A name of its own for every attempt: threads and processes may race to create the
        // day's key, and none may write into another's file.
        let tmp = self.dir.join(format!(
            ".{key_id}.{:016x}.tmp",
            rand::rngs::OsRng.next_u64()
        ));
        let io = |source| DeliveryKeyError::Io {
            path: path.clone(),
            source,
        };
        {
            let mut file = fs::File::create(&tmp).map_err(io)?;
            restrict(&tmp, 0o600)?;
            file.write_all(STANDARD.encode(key).as_bytes())
                .map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        // Linking is an atomic create-if-absent: the first link wins, and every racer then
        // uses what is on disk. A key on disk is never replaced (secrets are sealed under it).
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        match self.read(&key_id)? {
            Some(key) => Ok((key_id, key)),
            None => Err(DeliveryKeyError::KeyGone(key_id)),
        }
    }

    fn read(&self, key_id: &str) -> Result<Option<[u8; 32]>, DeliveryKeyError> {
        if key_id.len() != 8 || !key_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DeliveryKeyError::KeyGone(key_id.to_string()));
        }
        let path = self.key_path(key_id);
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

    /// Seals `secret` under today's key, bound to `context`.
    pub fn seal(
        &self,
        secret: &Secret,
        context: &str,
        now: DateTime<Utc>,
    ) -> Result<Sealed, DeliveryKeyError> {
        let (key_id, key) = self.key_for(now)?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let ciphertext = cipher
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
        })
    }

    /// Opens a sealed secret; `KeyGone` once its key has been destroyed.
    pub fn open_sealed(&self, sealed: &Sealed, context: &str) -> Result<Secret, DeliveryKeyError> {
        let key = self
            .read(&sealed.key_id)?
            .ok_or_else(|| DeliveryKeyError::KeyGone(sealed.key_id.clone()))?;
        let nonce = STANDARD
            .decode(&sealed.nonce)
            .map_err(|_| DeliveryKeyError::Tampered)?;
        if nonce.len() != 12 {
            return Err(DeliveryKeyError::Tampered);
        }
        let ciphertext = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| DeliveryKeyError::Tampered)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let clear = cipher
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

    /// Destroys every key whose life ([`delivery_key_end`]) is over at `now`;
    /// returns the ids destroyed.
    pub fn destroy_expired(&self, now: DateTime<Utc>) -> Result<Vec<String>, DeliveryKeyError> {
        let io = |source| DeliveryKeyError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut destroyed = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(key_id) = name.strip_suffix(".key") else {
                continue;
            };
            if delivery_key_end(key_id).is_some_and(|end| end <= now) {
                fs::remove_file(entry.path()).map_err(io)?;
                destroyed.push(key_id.to_string());
            }
        }
        Ok(destroyed)
    }
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

    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let sealed = keys.seal(&Secret::new("x"), "c", at(3, 1)).unwrap();
        let meta = fs::metadata(keys.key_path(&sealed.key_id)).unwrap();
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
        let files = fs::read_dir(&keys.dir).unwrap().count();
        assert_eq!(files, 1, "one key file, no temporary left behind");
    }

    #[test]
    fn a_forged_key_id_is_refused_without_touching_other_paths() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let forged = Sealed {
            key_id: "../../etc/passwd".into(),
            nonce: String::new(),
            ciphertext: String::new(),
        };
        assert!(matches!(
            keys.open_sealed(&forged, "c"),
            Err(DeliveryKeyError::KeyGone(_))
        ));
    }
}
