//! The password policy: PW-1's composition rules, each reported on its own, and PW-2's zxcvbn
//! score floor. The same evaluation answers the strength endpoint (PW-3) while the holder types
//! and refuses a new password in `decide`. History (PW-2's last five) needs the hasher and lives
//! in the account decider.

use crate::settings::PolicySettings;
use crate::violation::Violation;
use serde::Serialize;

/// What the policy must know of the holder besides the password.
#[derive(Debug, Clone, Default)]
pub struct Holder<'a> {
    /// The user id; for a mailbox its local part is forbidden as well.
    pub user_id: &'a str,
    /// Name, surname and fiscal code on file (identities only; SPID's rules).
    pub personal: Vec<&'a str>,
}

/// One PW-1 rule and whether the password meets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleOutcome {
    pub id: &'static str,
    pub met: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    pub score: u8,
    pub rules: Vec<RuleOutcome>,
}

impl Evaluation {
    /// The failed rules, PW-2's score floor included, as problem entries.
    pub fn violations(&self, settings: &PolicySettings) -> Vec<Violation> {
        let mut out: Vec<Violation> = self
            .rules
            .iter()
            .filter(|r| !r.met)
            .map(|r| Violation::new(r.id, Some("new_password"), rule_message(r.id, settings)))
            .collect();
        if self.score < settings.min_score {
            out.push(Violation::new(
                "PW-2.score",
                Some("new_password"),
                format!(
                    "the password is too easy to guess (strength {} of 4, at least {} needed)",
                    self.score, settings.min_score
                ),
            ));
        }
        out
    }
}

fn rule_message(id: &str, s: &PolicySettings) -> String {
    match id {
        "PW-1.user_id" => "the password must not contain the user id".into(),
        "PW-1.min_length" => format!(
            "the password must have at least {} characters",
            s.min_length
        ),
        "PW-1.max_length" => format!("the password must have at most {} characters", s.max_length),
        "PW-1.case" => "the password needs an upper-case and a lower-case letter".into(),
        "PW-1.digit" => "the password needs a digit".into(),
        "PW-1.special" => "the password needs a special character (not a letter or digit)".into(),
        "PW-1.repeat" => format!(
            "the password must not repeat a character {} or more times in a row",
            s.max_repeated_run
        ),
        "PW-1.personal_data" => {
            "the password must not contain your name, surname or fiscal code".into()
        }
        other => other.to_string(),
    }
}

/// Evaluates every enabled PW-1 rule and the zxcvbn score.
pub fn evaluate(password: &str, holder: &Holder<'_>, s: &PolicySettings) -> Evaluation {
    let lower = password.to_lowercase();
    let length = password.chars().count();
    let mut rules = Vec::with_capacity(8);
    if s.no_user_id {
        let met = user_id_terms(holder.user_id)
            .iter()
            .all(|t| !contains_term(&lower, t));
        rules.push(RuleOutcome {
            id: "PW-1.user_id",
            met,
        });
    }
    rules.push(RuleOutcome {
        id: "PW-1.min_length",
        met: length >= s.min_length,
    });
    rules.push(RuleOutcome {
        id: "PW-1.max_length",
        met: length <= s.max_length,
    });
    if s.require_upper_and_lower {
        let met =
            password.chars().any(char::is_uppercase) && password.chars().any(char::is_lowercase);
        rules.push(RuleOutcome {
            id: "PW-1.case",
            met,
        });
    }
    if s.require_digit {
        let met = password.chars().any(|c| c.is_ascii_digit());
        rules.push(RuleOutcome {
            id: "PW-1.digit",
            met,
        });
    }
    if s.require_special {
        let met = password.chars().any(|c| !c.is_alphanumeric());
        rules.push(RuleOutcome {
            id: "PW-1.special",
            met,
        });
    }
    if s.max_repeated_run > 0 {
        let met = longest_run(password) < s.max_repeated_run;
        rules.push(RuleOutcome {
            id: "PW-1.repeat",
            met,
        });
    }
    if s.no_personal_data && !holder.personal.is_empty() {
        let met = personal_terms(&holder.personal)
            .iter()
            .all(|t| !contains_term(&lower, t));
        rules.push(RuleOutcome {
            id: "PW-1.personal_data",
            met,
        });
    }
    // zxcvbn's cost grows with length; the policy caps length anyway, so score the capped prefix.
    let scored: String = password.chars().take(s.max_length.max(1)).collect();
    let mut inputs: Vec<&str> = vec![holder.user_id];
    inputs.extend(holder.personal.iter().copied());
    let score = if scored.is_empty() {
        0
    } else {
        u8::from(zxcvbn::zxcvbn(&scored, &inputs).score())
    };
    Evaluation { score, rules }
}

fn contains_term(haystack_lower: &str, term: &str) -> bool {
    !term.is_empty() && haystack_lower.contains(term)
}

/// The user id and, for an address, its local part, lower-cased.
fn user_id_terms(user_id: &str) -> Vec<String> {
    let lower = user_id.trim().to_lowercase();
    let mut terms = vec![lower.clone()];
    if let Some((local, _)) = lower.split_once('@') {
        terms.push(local.to_string());
    }
    terms
}

/// Name and surname words of three letters or more, the whole fiscal code and its first six
/// letters (the surname and name code), lower-cased.
fn personal_terms(personal: &[&str]) -> Vec<String> {
    let mut terms = Vec::new();
    for value in personal {
        let lower = value.trim().to_lowercase();
        for word in lower.split(|c: char| !c.is_alphanumeric()) {
            if word.chars().count() >= 3 {
                terms.push(word.to_string());
            }
        }
        if lower.len() == 16 && lower.chars().all(|c| c.is_ascii_alphanumeric()) {
            terms.push(lower.chars().take(6).collect());
        }
    }
    terms
}

fn longest_run(s: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    let mut prev = None;
    for c in s.chars() {
        if Some(c) == prev {
            run += 1;
        } else {
            run = 1;
            prev = Some(c);
        }
        longest = longest.max(run);
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(pw: &str, holder: &Holder<'_>) -> Vec<&'static str> {
        evaluate(pw, holder, &PolicySettings::default())
            .violations(&PolicySettings::default())
            .into_iter()
            .map(|v| v.rule)
            .collect()
    }

    fn mailbox() -> Holder<'static> {
        Holder {
            user_id: "mario.rossi@pec.example.it",
            personal: vec![],
        }
    }

    #[test]
    fn a_strong_password_meets_every_rule() {
        assert!(failed("Tr4m-Colle!Verde", &mailbox()).is_empty());
    }

    #[test]
    fn each_pw1_rule_is_reported_on_its_own() {
        assert_eq!(failed("Mario.Rossi9!x", &mailbox()), vec!["PW-1.user_id"]);
        assert!(failed("Ab1!", &mailbox()).contains(&"PW-1.min_length"));
        assert!(failed("tram-colle!verde9", &mailbox()).contains(&"PW-1.case"));
        assert!(failed("Tram-Colle!Verde", &mailbox()).contains(&"PW-1.digit"));
        assert!(failed("Tram4Colle9Verde", &mailbox()).contains(&"PW-1.special"));
        assert!(failed("Tr4m-Colle!Veeerde", &mailbox()).contains(&"PW-1.repeat"));
        let long = format!("Aa1!{}", "xy".repeat(70));
        assert!(failed(&long, &mailbox()).contains(&"PW-1.max_length"));
    }

    #[test]
    fn identities_may_not_use_their_name_or_fiscal_code() {
        let holder = Holder {
            user_id: "mrossi",
            personal: vec!["Mario Rossi", "RSSMRA80A01H501U"],
        };
        assert!(failed("Tr4m-Rossi!Verde", &holder).contains(&"PW-1.personal_data"));
        assert!(failed("Tr4m-rssmra!Verde", &holder).contains(&"PW-1.personal_data"));
        assert!(!failed("Tr4m-Colle!Verde", &holder).contains(&"PW-1.personal_data"));
    }

    #[test]
    fn a_guessable_password_fails_the_score_floor() {
        assert!(failed("Password1!", &mailbox()).contains(&"PW-2.score"));
    }

    #[test]
    fn rules_can_be_turned_off() {
        let s = PolicySettings {
            require_special: false,
            require_digit: false,
            ..PolicySettings::default()
        };
        let ids: Vec<_> = evaluate("x", &mailbox(), &s)
            .rules
            .iter()
            .map(|r| r.id)
            .collect();
        assert!(!ids.contains(&"PW-1.special"));
        assert!(!ids.contains(&"PW-1.digit"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any password, however strange its characters, is evaluated without a panic and
        /// every enabled rule is reported once.
        #[test]
        fn every_password_gets_every_rule_once(password in "\\PC{0,140}") {
            let evaluation = evaluate(&password, &Holder { user_id: "mario@pec.it", personal: vec!["Mario Rossi"] }, &PolicySettings::default());
            let mut ids: Vec<_> = evaluation.rules.iter().map(|r| r.id).collect();
            let count = ids.len();
            ids.dedup();
            prop_assert_eq!(ids.len(), count);
            prop_assert_eq!(count, 8);
            prop_assert!(evaluation.score <= 4);
        }
    }
}
