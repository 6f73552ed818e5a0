//! AU-2: an event's payload as an auditor may see it. Secrets and their verifiers are
//! redacted, contacts masked as the account page masks them (RI-3), the rest is kept.
//!
//! Every field any event schema names is in exactly one of the three lists below; a test over
//! `schemas/events/` holds that, so a new field cannot reach an export unclassified.

use crate::masking::{mask_email, mask_mobile};
use serde_json::Value;

/// What stands in a redacted field.
pub const REDACTED: &str = "[redacted]";

/// Secrets, their verifiers and their seals: never exported.
pub const SECRET_FIELDS: &[&str] = &[
    "password_hash",
    "password_hmac",
    "security_answer_hash",
    "code_hash",
    "token_hash",
    "sealed_code",
    "sealed_password",
    "sealed_secret",
    "sealed_seed",
    "sealed_token",
    // A seal's parts, wherever one appears.
    "ciphertext",
    "nonce",
    "ephemeral",
];

/// Contacts (an e-mail address or a mobile number): exported masked.
pub const CONTACT_FIELDS: &[&str] = &[
    "email",
    "mobile",
    "contact_email",
    "contact_mobile",
    "recovery_mobile",
    "contact",
    "to",
];

/// Free text that may quote a contact (a mail server's refusal, a reason or a service name a
/// front end reported): every address or number in it is masked.
pub const TEXT_FIELDS: &[&str] = &["error", "reason", "service"];

/// Identifiers shown with their last three characters only, as the account page shows them
/// (an identity document's number).
pub const TAIL_FIELDS: &[&str] = &["number"];

/// Kept as they are: ids, times, states, counts, the account's own data.
pub const PLAIN_FIELDS: &[&str] = &[
    "account_id",
    "after_reset",
    "at",
    "attempts",
    "attempts_left",
    "challenge_id",
    "channel",
    "client_ip",
    "cooldown_until",
    "days",
    "days_before",
    "expires_at",
    "expires_on",
    "failures",
    "fiscal_code",
    "form_reference",
    "fresh_until",
    "imap",
    "issued_on",
    "key_id",
    "kind",
    "language",
    "locked_until",
    "max_attempts",
    "method",
    "methods",
    "migrated",
    "name",
    "next_check_at",
    "notice_id",
    "outcome",
    "owner_id",
    "permissions",
    "plan",
    "pop",
    "previous_expiry",
    "protocol",
    "purpose",
    "recovery_id",
    "replaced",
    "request_reference",
    "required_actions",
    "revokes_at",
    "round",
    "scope",
    "security_question",
    "serial",
    "session_id",
    "session_ids",
    "smtp",
    "source_event_id",
    "spid_code",
    "started_at",
    "step",
    "subject",
    "suspended_until",
    "template",
    "until",
    "use",
    "user_id",
];

/// A contact as the account page shows it: an address or a number masked, anything else
/// starred out whole.
pub fn mask_contact(value: &str) -> String {
    if value.contains('@') {
        mask_email(value)
    } else if value.starts_with('+') && value.len() > 4 {
        mask_mobile(value)
    } else if value.is_empty() {
        String::new()
    } else {
        "*****".into()
    }
}

/// `text` with every e-mail address and every phone number in it masked: a word holding an
/// `@`, and any run of digits (spaces, dots, dashes and brackets between them allowed) with 8
/// digits or more, or 6 after a `+` (an SMTP status such as `550 5.1.1` stays).
fn mask_text(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|word| {
            let bare = word.trim_matches(|c: char| "<>()[],;:'\"".contains(c));
            if bare.contains('@') {
                word.replace(bare, &mask_contact(bare))
            } else {
                word.to_string()
            }
        })
        .collect();
    mask_numbers(&words.join(" "))
}

fn mask_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars
            .get(i)
            .is_some_and(|c| c.is_ascii_digit() || *c == '+');
        if !starts {
            out.extend(chars.get(i));
            i += 1;
            continue;
        }
        // The longest run of digits and separators from here, ending on a digit.
        let mut end = i;
        let mut last_digit = None;
        let mut digits = 0;
        while let Some(c) = chars.get(end) {
            if c.is_ascii_digit() {
                digits += 1;
                last_digit = Some(end);
            } else if !(" .-()/".contains(*c) || (*c == '+' && end == i)) {
                break;
            }
            end += 1;
        }
        match last_digit {
            Some(last) if digits >= 8 || (chars.get(i) == Some(&'+') && digits >= 6) => {
                let run: String = chars.get(i..=last).unwrap_or_default().iter().collect();
                let kept: String = run.chars().filter(char::is_ascii_digit).collect();
                let tail: String = kept.chars().skip(kept.len().saturating_sub(2)).collect();
                out.push_str(&format!("***** **{tail}"));
                i = last + 1;
            }
            _ => {
                out.extend(chars.get(i));
                i += 1;
            }
        }
    }
    out
}

fn mask_tail(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let tail: String = chars.iter().skip(chars.len().saturating_sub(3)).collect();
    format!("*****{tail}")
}

/// Redacts `payload` in place for an auditor (see the module's lists); nested objects and
/// arrays are walked, so a seal or a contact is caught wherever it sits.
pub fn redact(payload: &mut Value) {
    match payload {
        Value::Object(fields) => {
            for (key, value) in fields.iter_mut() {
                let key = key.as_str();
                if SECRET_FIELDS.contains(&key) || key.starts_with("sealed_") {
                    if !value.is_null() {
                        *value = Value::String(REDACTED.into());
                    }
                } else if CONTACT_FIELDS.contains(&key) {
                    match value {
                        Value::String(s) => *s = mask_contact(s),
                        Value::Null | Value::Bool(_) => {}
                        other => *other = Value::String(REDACTED.into()),
                    }
                } else if TEXT_FIELDS.contains(&key) {
                    if let Value::String(s) = value {
                        *s = mask_text(s);
                    }
                } else if TAIL_FIELDS.contains(&key) {
                    if let Value::String(s) = value {
                        *s = mask_tail(s);
                    }
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_go_contacts_are_masked_the_rest_stays() {
        let mut payload = json!({
            "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            "sealed_token": {"key_id": "k", "ephemeral": "e", "nonce": "n", "ciphertext": "c"},
            "sealed_secret": null,
            "to": "marisa@inwind.it",
            "mobile": "+393471234512",
            "contact": "not a contact",
            "error": "550 5.1.1 <marisa@inwind.it>: mailbox unavailable (+393471234512), call +39 347 765 4321, code 550",
            "reason": "wrong pw for marisa.recovery@inwind.it",
            "number": "CA12345XY",
            "user_id": "mario.rossi",
            "nested": {"token_hash": "abc", "email": "a.b@example.org"},
        });
        redact(&mut payload);
        assert_eq!(
            payload,
            json!({
                "password_hash": REDACTED,
                "sealed_token": REDACTED,
                "sealed_secret": null,
                "to": "*****sa@i*****.it",
                "mobile": "+39 ***** **12",
                "contact": "*****",
                "error": "550 5.1.1 <*****sa@i*****.it>: mailbox unavailable (***** **12), call ***** **21, code 550",
                "reason": "wrong pw for *****ry@i*****.it",
                "number": "*****5XY",
                "user_id": "mario.rossi",
                "nested": {"token_hash": REDACTED, "email": "*****b@e*****.org"},
            })
        );
    }

    /// Every property of every event schema is classified, once.
    #[test]
    fn every_schema_field_is_classified() {
        fn walk(schema: &Value, out: &mut std::collections::BTreeSet<String>) {
            match schema {
                Value::Object(map) => {
                    if let Some(Value::Object(props)) = map.get("properties") {
                        out.extend(props.keys().cloned());
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/events");
        let mut fields = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("schemas/events") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("envelope"))
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("schema");
            walk(&serde_json::from_str(&text).expect("json"), &mut fields);
        }
        assert!(fields.len() > 50, "schemas not found in {}", dir.display());
        let lists = [
            SECRET_FIELDS,
            CONTACT_FIELDS,
            TEXT_FIELDS,
            TAIL_FIELDS,
            PLAIN_FIELDS,
        ];
        for field in &fields {
            let homes = lists.iter().filter(|l| l.contains(&field.as_str())).count();
            assert_eq!(
                homes, 1,
                "field `{field}` is in {homes} lists of domain/src/audit.rs"
            );
        }
    }
}
