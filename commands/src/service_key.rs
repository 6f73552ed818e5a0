//! The service's own secret key (SEC-7): 32 random bytes in `<data-dir>/keys/service.key`
//! (mode 0600), generated on first start and never in the log, an answer or a log line. Every
//! keyed hash derives from it under a label of its own (HMAC-SHA256): RC-1's keyed hash of a
//! user id, which gives a decoy its methods, and the keyed hash of one-time codes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use custode_domain::otp::CodeHasher;
use custode_domain::TokenHash;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

pub const SERVICE_KEY_FILE: &str = "service.key";

#[derive(Clone)]
pub struct ServiceKey {
    key: Arc<[u8; 32]>,
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceKey([redacted])")
    }
}

impl ServiceKey {
    /// Reads `<keys_dir>/service.key`, creating it on first start. Returns whether it was
    /// generated now (startup says so once).
    pub fn open(keys_dir: &Path) -> Result<(Self, bool), String> {
        let (key, generated) = open_key_file(keys_dir, SERVICE_KEY_FILE)?;
        Ok((Self { key: Arc::new(key) }, generated))
    }

    /// A key for tests and benchmarks.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self { key: Arc::new(key) }
    }

    /// HMAC-SHA256 under this key of `label` and `parts`, each length-prefixed so no two inputs
    /// collide.
    pub fn mac(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(self.key.iter()) {
            *i ^= k;
            *o ^= k;
        }
        let mut inner = Sha256::new();
        inner.update(ipad);
        for part in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
            inner.update((part.len() as u64).to_be_bytes());
            inner.update(part);
        }
        let inner = inner.finalize();
        let mut outer = Sha256::new();
        outer.update(opad);
        outer.update(inner);
        outer.finalize().into()
    }

    /// [`ServiceKey::mac`] written as a token is (43 URL-safe base64 characters): WEB-2's form
    /// token bound to a session, which only this service can make.
    pub fn mac_token(&self, label: &str, parts: &[&[u8]]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.mac(label, parts))
    }

    /// RC-1: the keyed hash of a user id as typed (trimmed, lower-cased).
    pub fn subject(&self, user_id: &str) -> [u8; 32] {
        let normalized = user_id.trim().to_lowercase();
        self.mac("custode/recovery-subject", &[normalized.as_bytes()])
    }
}

impl CodeHasher for ServiceKey {
    fn hash_code(&self, challenge_id: Uuid, code: &str) -> TokenHash {
        let mac = self.mac("custode/otp", &[challenge_id.as_bytes(), code.as_bytes()]);
        TokenHash::from_hex(crate::log::hex(&mac))
    }
}

fn restrict(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// SEC-7: `keys_dir`, created if missing, and its owner's alone (0700) whatever the umask made
/// it: every process that keeps a key there (the service, a worker apart) calls this.
pub fn private_keys_dir(keys_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(keys_dir)?;
    fs::set_permissions(keys_dir, fs::Permissions::from_mode(0o700))
}

/// Reads the 32-byte key in `<keys_dir>/<file>` (base64), creating it from the OS's randomness
/// on first use (mode 0600, written apart and linked into place, so two processes starting at
/// once end up with the same key). Returns whether it was generated now.
pub fn open_key_file(keys_dir: &Path, file: &str) -> Result<([u8; 32], bool), String> {
    let path = keys_dir.join(file);
    let describe = |e: std::io::Error| format!("{}: {e}", path.display());
    private_keys_dir(keys_dir).map_err(|e| format!("{}: {e}", keys_dir.display()))?;
    let mut generated = false;
    if !path.exists() {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let tmp = keys_dir.join(format!(".{file}.{:016x}.tmp", rand::rngs::OsRng.next_u64()));
        {
            let mut file = fs::File::create(&tmp).map_err(describe)?;
            restrict(&tmp)?;
            file.write_all(STANDARD.encode(key).as_bytes())
                .map_err(describe)?;
            file.sync_all().map_err(describe)?;
        }
        // First link wins; a racer uses what is on disk.
        match fs::hard_link(&tmp, &path) {
            Ok(()) => generated = true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(describe(e)),
        }
        let _ = fs::remove_file(&tmp);
    }
    let text = fs::read_to_string(&path).map_err(describe)?;
    let key: [u8; 32] = STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{} does not hold a 32-byte key", path.display()))?;
    Ok((key, generated))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_key_is_generated_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        // Made by the service, under the process's umask.
        let keys = dir.path().join("keys");
        let (a, generated) = ServiceKey::open(&keys).unwrap();
        assert!(generated);
        let (b, generated) = ServiceKey::open(&keys).unwrap();
        assert!(!generated);
        assert_eq!(a.subject("Mario@PEC.it "), b.subject("mario@pec.it"));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(keys.join(SERVICE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&keys).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn keyed_hashes_separate_challenges_and_labels() {
        let key = ServiceKey::from_bytes([7; 32]);
        let c = Uuid::from_u128(1);
        assert_ne!(
            key.hash_code(c, "123456"),
            key.hash_code(Uuid::from_u128(2), "123456")
        );
        assert_ne!(key.mac("a", &[b"bc"]), key.mac("ab", &[b"c"]));
        assert_eq!(key.hash_code(c, "123456").as_str().len(), 64);
    }
}
