//! Normalisation and masking of contacts and answers (RI-1, RI-3).

/// RI-1: answers compare after trimming, case folding and collapsing runs of white space, and
/// in Unicode's composed form (NFC): "città" typed with its accent as one character or as a
/// letter and a combining mark (as some keyboards send it) is the same answer.
pub fn normalize_answer(answer: &str) -> String {
    composed(folded_answer(answer))
}

/// `text` in NFC, without a copy when it already is.
fn composed(text: String) -> String {
    match icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(composed) => composed,
    }
}

/// Trimmed, case folded, runs of white space collapsed: the whole normalisation before NFC.
fn folded_answer(answer: &str) -> String {
    answer
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Longest security answer accepted, in characters, once normalised (RI-1, RC-4).
pub const MAX_ANSWER_CHARS: usize = 200;

/// A security answer as it is hashed and compared: normalised, with 1 to
/// [`MAX_ANSWER_CHARS`] characters; `None` for any other shape. The one check every path that
/// takes an answer applies (saving it, answering it, and a decoy's answer alike).
pub fn checked_answer(answer: &str) -> Option<String> {
    within_answer_length(normalize_answer(answer))
}

/// The forms a typed answer is checked in against a saved one: [`checked_answer`]'s, then the
/// form an answer saved before NFC was applied would have been hashed in, when that differs
/// (only for text with something to compose). Each within [`MAX_ANSWER_CHARS`]: NFC can also
/// lengthen text (some letters are never recomposed), so an answer saved then may be too long
/// in its composed form and still match in its own. `None` when no form is well shaped.
pub fn answer_forms(answer: &str) -> Option<Vec<String>> {
    let folded = folded_answer(answer);
    let mut forms: Vec<String> = within_answer_length(composed(folded.clone()))
        .into_iter()
        .collect();
    if let Some(earlier) = within_answer_length(folded) {
        if !forms.contains(&earlier) {
            forms.push(earlier);
        }
    }
    (!forms.is_empty()).then_some(forms)
}

fn within_answer_length(normalized: String) -> Option<String> {
    let chars = normalized.chars().count();
    (1..=MAX_ANSWER_CHARS)
        .contains(&chars)
        .then_some(normalized)
}

/// A plausible e-mail address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim();
    let (local, domain) = email.split_once('@')?;
    let valid = local.len() <= 64
        && domain.len() <= 253
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
        && domain.split('.').count() >= 2
        && domain.split('.').all(is_domain_label);
    valid.then(|| format!("{local}@{}", domain.to_lowercase()))
}

/// A character of an unquoted local part (RFC 5322's `atext`, and any non-ASCII letter as
/// RFC 6532 allows): no dot here, since dots only separate atoms (no leading, trailing or
/// doubled dot, which mail servers refuse and which would only come back as dead letters).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+/=?^_`{|}~-".contains(c)
        || (!c.is_ascii() && c.is_alphanumeric())
}

/// One label of a host name: 1 to 63 bytes of letters, digits and inner hyphens.
fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_alphanumeric() || c == '-')
}

/// E.164 for a mobile number: `+` and 8 to 15 digits. A number given without a country code is
/// taken as Italian (`+39`), as the provider's holders write them.
pub fn normalize_mobile(mobile: &str) -> Option<String> {
    let compact: String = mobile
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = if let Some(rest) = compact.strip_prefix('+') {
        rest.to_string()
    } else if let Some(rest) = compact.strip_prefix("00") {
        rest.to_string()
    } else {
        format!("39{compact}")
    };
    let valid = (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

/// RI-3: `marisa@inwind.it` → `*****sa@i*****.it`.
pub fn mask_email(email: &str) -> String {
    let Some((local, domain)) = email.split_once('@') else {
        return "*****".into();
    };
    let tail: String = {
        let chars: Vec<char> = local.chars().collect();
        let keep = if chars.len() > 3 { 2 } else { 1 };
        chars
            .iter()
            .skip(chars.len().saturating_sub(keep))
            .collect()
    };
    let (host, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
    let first: String = host.chars().take(1).collect();
    format!("*****{tail}@{first}*****.{tld}")
}

/// RI-3: `+393471234512` → `+39 ***** **12`: the country code (ITU-T E.164's, one to three
/// digits: `+1 ***** **43` for a North American number, not a digit of its area code) and the
/// last two digits.
pub fn mask_mobile(e164: &str) -> String {
    let digits: Vec<char> = e164.trim_start_matches('+').chars().collect();
    let country: String = digits.iter().take(country_code_len(&digits)).collect();
    let last: String = digits.iter().skip(digits.len().saturating_sub(2)).collect();
    format!("+{country} ***** **{last}")
}

/// How many of `digits` (an E.164 number's, without `+`) are its country code: zone 1 and 7
/// have one digit, the two-digit codes ITU-T assigned are listed, every other code has three.
fn country_code_len(digits: &[char]) -> usize {
    const TWO_DIGITS: &[&str] = &[
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    let head: String = digits.iter().take(2).collect();
    match digits.first() {
        Some('1' | '7') => 1,
        _ if TWO_DIGITS.contains(&head.as_str()) => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_masked_as_the_account_page_shows_them() {
        assert_eq!(mask_email("marisa@inwind.it"), "*****sa@i*****.it");
        assert_eq!(mask_email("ab@x.com"), "*****b@x*****.com");
    }

    #[test]
    fn mobiles_are_normalised_to_e164_and_masked() {
        assert_eq!(
            normalize_mobile("347 123 4512").as_deref(),
            Some("+393471234512")
        );
        assert_eq!(
            normalize_mobile("+39 347-123-4512").as_deref(),
            Some("+393471234512")
        );
        assert_eq!(
            normalize_mobile("0044 7700 900123").as_deref(),
            Some("+447700900123")
        );
        assert_eq!(normalize_mobile("12ab"), None);
        assert_eq!(mask_mobile("+393471234512"), "+39 ***** **12");
        assert_eq!(mask_mobile("+12025550143"), "+1 ***** **43");
        assert_eq!(mask_mobile("+355691234567"), "+355 ***** **67");
        assert_eq!(mask_mobile("+447911123456"), "+44 ***** **56");
    }

    #[test]
    fn answers_compare_after_trim_fold_and_collapse() {
        assert_eq!(normalize_answer("  Via   ROMA 12 "), "via roma 12");
    }

    #[test]
    fn an_accent_typed_as_a_combining_mark_is_the_same_letter_ri_1() {
        // "Città Sùbito" with each accent as its own combining mark, as some keyboards send it.
        let apart = "Citta\u{300} Su\u{300}bito";
        assert_eq!(normalize_answer(apart), "città sùbito");
        assert_eq!(normalize_answer("CITTÀ  SÙBITO"), "città sùbito");
        // An answer saved before NFC kept its marks apart: typed so again, that form is
        // checked too; text with nothing to compose has one form only.
        assert_eq!(
            answer_forms(apart).unwrap(),
            vec!["città sùbito", "citta\u{300} su\u{300}bito"]
        );
        assert_eq!(answer_forms("Città Sùbito").unwrap(), vec!["città sùbito"]);
        assert_eq!(answer_forms("fido il cane").unwrap(), vec!["fido il cane"]);
        assert_eq!(answer_forms("   "), None);
        // NFC lengthens some text (U+0958 is never recomposed: two characters): an answer of
        // 101 such letters, accepted and saved before, is still checked in its own form.
        let long = "\u{958}".repeat(101);
        assert_eq!(checked_answer(&long), None);
        assert_eq!(answer_forms(&long), Some(vec![long.clone()]));
        assert_eq!(answer_forms(&"a".repeat(201)), None);
    }

    #[test]
    fn emails_are_checked_and_the_domain_lowered() {
        assert_eq!(
            normalize_email(" Mario@Example.IT ").as_deref(),
            Some("Mario@example.it")
        );
        assert_eq!(normalize_email("no-at-sign"), None);
        assert_eq!(normalize_email("a@b"), None);
        assert_eq!(normalize_email("a b@c.it"), None);
        // What mail servers refuse is refused here, not accepted and then never delivered.
        for bad in [
            "abc8.@example.net",
            ".abc@example.net",
            "a..b@example.net",
            "a@example..net",
            "a@-example.net",
            "a@example-.net",
            "a@exa_mple.net",
            "a\"b@example.net",
            "a(b)@example.net",
            "a@b@example.net",
            "@example.net",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
        for good in [
            "o'brien@example.ie",
            "mario.rossi+pec@example.it",
            "x_y-z@sub.example.co.uk",
            "josé@example.es",
            "utente@xn--caf-dma.it",
        ] {
            assert_eq!(normalize_email(good).as_deref(), Some(good), "{good}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A masked mobile shows the country code and the last two digits, nothing more.
        #[test]
        fn a_masked_mobile_reveals_at_most_country_and_last_two(digits in "[1-9][0-9]{7,13}") {
            let e164 = normalize_mobile(&format!("+{digits}")).unwrap();
            let masked = mask_mobile(&e164);
            let shown: String = masked.chars().filter(char::is_ascii_digit).collect();
            let chars: Vec<char> = digits.chars().collect();
            prop_assert_eq!(shown.len(), country_code_len(&chars) + 2);
            let country = &digits[..country_code_len(&chars)];
            let prefix = format!("+{country} ");
            prop_assert!(masked.starts_with(&prefix));
            prop_assert!(masked.ends_with(&digits[digits.len() - 2..]));
        }

        /// A masked address never contains the local part's first character or the host name
        /// beyond its initial, whatever the address.
        #[test]
        fn a_masked_email_hides_the_address(local in "[a-z]{4,20}", host in "[a-z]{3,15}", tld in "(it|com|eu)") {
            let masked = mask_email(&format!("{local}@{host}.{tld}"));
            prop_assert!(!masked.contains(&local));
            prop_assert!(!masked.contains(&host));
            prop_assert!(masked.starts_with("*****"));
        }

        /// Normalisation is idempotent, so stored answers compare however they were typed.
        #[test]
        fn answer_normalisation_is_idempotent(answer in "\\PC{0,60}") {
            let once = normalize_answer(&answer);
            prop_assert_eq!(normalize_answer(&once), once.clone());
        }

        /// Any text either normalises to a valid E.164 number or is refused; never a panic.
        #[test]
        fn mobile_normalisation_accepts_only_e164(text in "\\PC{0,30}") {
            if let Some(n) = normalize_mobile(&text) {
                prop_assert!(n.starts_with('+'));
                prop_assert!((9..=16).contains(&n.len()));
                prop_assert!(n[1..].chars().all(|c| c.is_ascii_digit()));
            }
        }
    }
}
