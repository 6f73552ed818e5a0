//! Tokens sent to people and sessions (SEC-1): 32 random bytes written as URL-safe base64
//! without padding (43 characters); only their SHA-256 is ever stored; comparisons run in
//! constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use custode_domain::{Secret, TokenHash};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_CHARS: usize = 43;

/// A fresh token and the hash to store.
pub fn new_token() -> (Secret, TokenHash) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    (Secret::new(token), hash)
}

/// The stored form of a token, or `None` for anything that is not a well-formed token (so a
/// malformed one never reaches a query).
pub fn parse_token(token: &str) -> Option<TokenHash> {
    let well_formed =
        token.len() == TOKEN_CHARS && URL_SAFE_NO_PAD.decode(token).is_ok_and(|b| b.len() == 32);
    well_formed.then(|| hash_token(token))
}

fn hash_token(token: &str) -> TokenHash {
    TokenHash::from_hex(crate::log::hex(&Sha256::digest(token.as_bytes())))
}

/// Constant-time equality for secrets compared in the clear (operator keys).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A temporary password (ACC-2) that meets PW-1 by construction: 16 characters with upper and
/// lower case, digits and specials, no character repeated in a row, from an alphabet without
/// look-alikes (no 0/O, 1/l/I).
pub fn temporary_password() -> Secret {
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const DIGIT: &[u8] = b"23456789";
    const SPECIAL: &[u8] = b"#%+-=?@_";
    const CLASSES: [&[u8]; 4] = [UPPER, LOWER, DIGIT, SPECIAL];
    let mut rng = OsRng;
    let mut out: Vec<u8> = Vec::with_capacity(16);
    while out.len() < 16 {
        // The first four characters take one of each class, in random positions afterwards.
        let class = CLASSES.get(out.len()).copied().unwrap_or_else(|| {
            let all = [UPPER, LOWER, DIGIT, SPECIAL];
            all.get(rng.gen_range(0..all.len()))
                .copied()
                .unwrap_or(LOWER)
        });
        let Some(&c) = class.get(rng.gen_range(0..class.len())) else {
            continue;
        };
        if out.last() != Some(&c) {
            out.push(c);
        }
    }
    // Fisher-Yates, then repair any neighbours the shuffle made equal.
    for i in (1..out.len()).rev() {
        let j = rng.gen_range(0..=i);
        out.swap(i, j);
    }
    for i in 1..out.len() {
        if out.get(i) == out.get(i - 1) {
            let replacement = if out.get(i) == Some(&b'k') {
                b'm'
            } else {
                b'k'
            };
            if let Some(slot) = out.get_mut(i) {
                *slot = replacement;
            }
        }
    }
    Secret::new(String::from_utf8_lossy(&out).into_owned())
}

/// AP-3: a password for mail programs: 20 letters from an alphabet of 25 (no `l`), about 93
/// bits, written in groups of five (`abcde-fghij-kmnop-qrstu`) so it is easy to copy.
pub fn app_password() -> Secret {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    let mut rng = OsRng;
    let mut out = String::with_capacity(23);
    for i in 0..20 {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        let c = ALPHABET
            .get(rng.gen_range(0..ALPHABET.len()))
            .copied()
            .unwrap_or(b'a');
        out.push(char::from(c));
    }
    Secret::new(out)
}

/// A fresh six-digit one-time code, uniform over 000000..=999999.
pub fn otp_code() -> Secret {
    use rand::Rng;
    let n: u32 = rand::rngs::OsRng.gen_range(0..1_000_000);
    Secret::new(format!("{n:06}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use custode_domain::policy::{evaluate, Holder};
    use custode_domain::settings::PolicySettings;

    #[test]
    fn tokens_are_43_url_safe_characters_and_only_their_hash_is_kept() {
        let (token, hash) = new_token();
        assert_eq!(token.expose().len(), TOKEN_CHARS);
        assert_eq!(parse_token(token.expose()), Some(hash.clone()));
        assert_eq!(hash.as_str().len(), 64);
        assert_eq!(parse_token("short"), None);
        assert_eq!(parse_token(&"!".repeat(43)), None);
    }

    /// The OpenAPI document's pattern for tokens: 42 characters, then one whose low two bits
    /// are zero (43 characters carry 258 bits for 256).
    #[test]
    fn tokens_match_the_documented_pattern_and_nothing_else_parses() {
        const LAST: &str = "AEIMQUYcgkosw048";
        for _ in 0..500 {
            let (token, _) = new_token();
            let last = token.expose().chars().last().unwrap_or_default();
            assert!(LAST.contains(last), "{last}");
        }
        assert!(parse_token(&format!("{}A", "A".repeat(42))).is_some());
        assert!(parse_token(&format!("{}B", "A".repeat(42))).is_none());
    }

    #[test]
    fn temporary_passwords_meet_the_composition_rules() {
        let settings = PolicySettings::default();
        for _ in 0..200 {
            let pw = temporary_password();
            let eval = evaluate(
                pw.expose(),
                &Holder {
                    user_id: "mario.rossi@pec.example.it",
                    personal: vec![],
                },
                &settings,
            );
            assert!(eval.rules.iter().all(|r| r.met), "{:?}", eval.rules);
        }
    }
}
