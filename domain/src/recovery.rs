//! The start of a forgotten-password recovery (RC-1): one stream per recovery
//! (`recovery-<uuid>`) whose only event, `RecoveryStarted`, says which account it is for (none
//! for an unknown user id, or an account that cannot recover: a *decoy*) and which methods its
//! answer offered. What happens next (links, codes, answers, lockouts, the new password) lives
//! in the account's own stream, where SEC-6 counts it under optimistic concurrency.
//!
//! A decoy's answer is indistinguishable from a real one: its methods and masked targets come
//! from a keyed hash of the user id ([`decoy_offer`]), the same every time for the same id.

use crate::account::{Account, AccountStatus};
use crate::masking::{mask_email, mask_mobile};
use crate::settings::RecoverySettings;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMethod {
    Email,
    Sms,
    Question,
}

impl RecoveryMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryMethod::Email => "email",
            RecoveryMethod::Sms => "sms",
            RecoveryMethod::Question => "question",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum RecoveryEvent {
    RecoveryStarted(RecoveryStarted),
}

pub const RECOVERY_EVENT_TYPES: &[&str] = &["RecoveryStarted"];

/// RC-1. `subject` is the keyed hash of the user id as typed (normalised), so the log can tell
/// repeated starts for one id apart without holding ids that do not exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryStarted {
    pub recovery_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Uuid>,
    pub subject: String,
    pub methods: Vec<RecoveryMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

pub fn stream_for(recovery_id: Uuid) -> String {
    format!("recovery-{recovery_id}")
}

/// The recovery start as the generic handler runs it: a stream that takes one event.
pub struct Recoveries;

impl crate::decider::Decider for Recoveries {
    type Id = Uuid;
    type State = Option<RecoveryStarted>;
    type Command = RecoveryStarted;
    type Event = RecoveryEvent;
    type Error = std::convert::Infallible;

    fn stream_for(id: &Uuid) -> String {
        stream_for(*id)
    }

    /// A recovery id is drawn fresh for each start; a second start of one id records nothing.
    fn decide(
        state: &Option<RecoveryStarted>,
        command: &RecoveryStarted,
        _ctx: &crate::decider::Ctx<'_>,
    ) -> Result<Vec<RecoveryEvent>, std::convert::Infallible> {
        Ok(match state {
            Some(_) => Vec::new(),
            None => vec![RecoveryEvent::RecoveryStarted(command.clone())],
        })
    }

    fn evolve(state: Option<RecoveryStarted>, event: &RecoveryEvent) -> Option<RecoveryStarted> {
        evolve(state, event)
    }
}

/// A recovery as its stream tells it: `None` before it started.
pub fn evolve(state: Option<RecoveryStarted>, event: &RecoveryEvent) -> Option<RecoveryStarted> {
    match event {
        RecoveryEvent::RecoveryStarted(e) => Some(e.clone()).or(state),
    }
}

/// SEC-2: the recovery messages (links and codes) sent for one user id lately, counted in its
/// own stream (an account's, or an unknown id's subject stream) so the hourly limit holds
/// across restarts and API nodes. Kept as each message's expiry and method: its sending time
/// is the expiry less the method's lifetime.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentMessages(
    std::collections::VecDeque<(chrono::DateTime<chrono::Utc>, RecoveryMethod)>,
);

/// How many messages are remembered: more than any sane hourly limit.
const MESSAGES_KEPT: usize = 64;

impl RecentMessages {
    pub fn record(&mut self, expires_at: chrono::DateTime<chrono::Utc>, method: RecoveryMethod) {
        self.0.push_front((expires_at, method));
        self.0.truncate(MESSAGES_KEPT);
    }

    /// Refused (with when the oldest in the hour leaves it) once
    /// `limits.recovery_messages_per_user_per_hour` were sent in the last hour.
    pub fn allow(
        &self,
        settings: &crate::settings::Settings,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), crate::account::AccountError> {
        self.allow_many(settings, now, 1)
    }

    /// As [`RecentMessages::allow`], for `count` messages sent together: all fit, or none go.
    pub fn allow_many(
        &self,
        settings: &crate::settings::Settings,
        now: chrono::DateTime<chrono::Utc>,
        count: usize,
    ) -> Result<(), crate::account::AccountError> {
        let hour = chrono::Duration::hours(1);
        let lifetime = |method: RecoveryMethod| match method {
            RecoveryMethod::Email => settings.recovery.link_lifetime(),
            RecoveryMethod::Sms | RecoveryMethod::Question => settings.recovery.code_lifetime(),
        };
        let sent: Vec<chrono::DateTime<chrono::Utc>> = self
            .0
            .iter()
            .map(|(expires, method)| *expires - lifetime(*method))
            .filter(|at| *at > now - hour)
            .collect();
        let limit = settings.limits.recovery_messages_per_user_per_hour;
        if sent.len() + count <= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Ok(());
        }
        let until = sent.iter().min().map_or(now, |oldest| *oldest + hour);
        Err(crate::account::AccountError::MessageLimit {
            until,
            seconds: (until - now).num_seconds().max(1),
        })
    }
}

/// One method as RC-1's answer lists it: the target masked (RI-3); the question has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offer {
    pub method: RecoveryMethod,
    pub target: Option<String>,
}

/// Where a recovery link goes (RC-2): the recovery address, or for a migrated mailbox without
/// one the service address on file.
pub fn link_address(account: &Account) -> Option<&str> {
    let profile = account.profile.as_ref()?;
    account.recovery.email.as_deref().or(if profile.migrated {
        profile.contact_email.as_deref()
    } else {
        None
    })
}

/// The methods a real account offers, or `None` when it cannot recover by itself (no recovery
/// information, or not active: SEC-6), and then gets a decoy's answer.
pub fn offer(account: &Account, settings: &RecoverySettings) -> Option<Vec<Offer>> {
    if account.status != AccountStatus::Active {
        return None;
    }
    let mut methods = Vec::new();
    if let Some(email) = link_address(account) {
        methods.push(Offer {
            method: RecoveryMethod::Email,
            target: Some(mask_email(email)),
        });
    }
    if let Some(mobile) = &account.recovery.mobile {
        methods.push(Offer {
            method: RecoveryMethod::Sms,
            target: Some(mask_mobile(mobile)),
        });
    }
    if methods.is_empty() {
        return None;
    }
    if settings.security_question && account.recovery.security_answer_hash.is_some() {
        methods.push(Offer {
            method: RecoveryMethod::Question,
            target: None,
        });
    }
    Some(methods)
}

/// Where holders' recovery addresses are, roughly as often as they are there.
const DECOY_DOMAINS: &[&str] = &[
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "libero.it",
    "libero.it",
    "hotmail.it",
    "hotmail.com",
    "yahoo.it",
    "yahoo.com",
    "outlook.it",
    "outlook.com",
    "live.it",
    "tiscali.it",
    "virgilio.it",
    "alice.it",
    "tim.it",
    "fastwebnet.it",
    "icloud.com",
    "email.it",
    "inwind.it",
    "aruba.it",
    "studiolegale.eu",
    "web.de",
    "gmx.net",
    "proton.me",
];

/// Mobile country codes (mostly Italy, as the holders are).
const DECOY_COUNTRIES: &[&str] = &[
    "39", "39", "39", "39", "39", "39", "39", "39", "39", "39", "39", "39", "41", "33", "49", "44",
];

/// RC-1: plausible methods for an id that cannot recover, from `seed` (a keyed hash of the id,
/// 32 bytes): one to three methods, always an email or a mobile among them, masked exactly as a
/// real account's are.
pub fn decoy_offer(seed: &[u8; 32], settings: &RecoverySettings) -> Vec<Offer> {
    let byte = |i: usize| seed.get(i).copied().unwrap_or(0);
    let letter = |i: usize| char::from(b'a' + byte(i) % 26);
    let digit = |i: usize| char::from(b'0' + byte(i) % 10);
    // Mostly an email, often a mobile too, sometimes a question.
    let shape = byte(0) % 8;
    let email = shape != 0;
    let sms = shape == 0 || shape >= 4;
    let question = settings.security_question && byte(1) % 3 == 0;
    let mut methods = Vec::new();
    if email {
        // Local parts end in letters mostly, digits often, sometimes '.', '_' or '-'.
        const TAIL: &[u8] = b"abcdefghijklmnopqrstuvwxyzaeiouaeiou0123456789012345._-";
        let len = 2 + usize::from(byte(2) % 12);
        let local: String = (0..len)
            .map(|i| {
                let b = byte(3 + i % 9);
                char::from(
                    TAIL.get(usize::from(b) % TAIL.len())
                        .copied()
                        .unwrap_or(b'a'),
                )
            })
            .collect();
        let local = format!("{}{local}", letter(31));
        // A real address has no trailing or doubled dot (RI-1 refuses one): neither may a
        // decoy's, whose masked tail would then give it away.
        let chars: Vec<char> = local.chars().collect();
        let local: String = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| match chars.get(i + 1) {
                None | Some('.') if c == '.' => letter(20 + i % 4),
                _ => c,
            })
            .collect();
        // A known provider mostly; else a domain of its own (a firm's, a school's).
        const TLDS: &[&str] = &["it", "it", "it", "com", "net", "org", "eu"];
        let own;
        let domain = if byte(11) % 4 == 0 {
            let tld = TLDS
                .get(usize::from(byte(10)) % TLDS.len())
                .copied()
                .unwrap_or("it");
            own = format!("{}studio.{tld}", letter(9));
            own.as_str()
        } else {
            DECOY_DOMAINS
                .get(usize::from(byte(12)) % DECOY_DOMAINS.len())
                .copied()
                .unwrap_or("gmail.com")
        };
        methods.push(Offer {
            method: RecoveryMethod::Email,
            target: Some(mask_email(&format!("{local}@{domain}"))),
        });
    }
    if sms {
        let country = DECOY_COUNTRIES
            .get(usize::from(byte(23)) % DECOY_COUNTRIES.len())
            .copied()
            .unwrap_or("39");
        let digits: String = (0..9).map(|i| digit(13 + i)).collect();
        methods.push(Offer {
            method: RecoveryMethod::Sms,
            target: Some(mask_mobile(&format!("+{country}3{digits}"))),
        });
    }
    if question {
        methods.push(Offer {
            method: RecoveryMethod::Question,
            target: None,
        });
    }
    methods
}

/// RI-1: suggested security questions, in Italian and English.
/// RI-1's suggested questions, as `GET /v1/recovery-info/questions` offers them to holders.
/// Decoys draw from these same lists (RC-1): a question a holder picked from them is no tell.
pub const SUGGESTED_QUESTIONS_IT: &[&str] = &[
    "Qual è il nome del tuo primo animale domestico?",
    "In quale città sono nati i tuoi nonni materni?",
    "Qual era il nome della tua scuola elementare?",
    "Qual è il secondo nome del tuo parente più anziano?",
    "In quale via abitavi da bambino?",
];

pub const SUGGESTED_QUESTIONS_EN: &[&str] = &[
    "What was the name of your first pet?",
    "In which city were your maternal grandparents born?",
    "What was the name of your primary school?",
    "What is the middle name of your oldest relative?",
    "On which street did you live as a child?",
];

/// The question a decoy shows (RC-4): one of the suggested ones, in either language, the same
/// for the same id.
pub fn decoy_question(seed: &[u8; 32]) -> &'static str {
    // Holders write in Italian mostly.
    let pick = |list: &[&'static str]| {
        let i = usize::from(seed.get(30).copied().unwrap_or(0)) % list.len().max(1);
        list.get(i)
            .copied()
            .unwrap_or("Qual è il nome del tuo primo animale domestico?")
    };
    if seed.get(29).copied().unwrap_or(0) % 5 == 0 {
        pick(SUGGESTED_QUESTIONS_EN)
    } else {
        pick(SUGGESTED_QUESTIONS_IT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_offer_one_to_three_masked_methods_stable_per_seed() {
        let settings = RecoverySettings::default();
        let mut shapes = std::collections::BTreeSet::new();
        for n in 0u8..=255 {
            let seed = [n.wrapping_mul(37); 32].map(|b| b ^ n);
            let offer = decoy_offer(&seed, &settings);
            assert_eq!(offer, decoy_offer(&seed, &settings));
            assert!((1..=3).contains(&offer.len()), "{offer:?}");
            assert!(offer
                .iter()
                .any(|o| matches!(o.method, RecoveryMethod::Email | RecoveryMethod::Sms)));
            for o in &offer {
                match o.method {
                    RecoveryMethod::Email => {
                        assert!(o.target.as_deref().unwrap().starts_with("*****"))
                    }
                    RecoveryMethod::Sms => {
                        let t = o.target.as_deref().unwrap();
                        assert!(t.starts_with('+') && t.contains(" ***** **"), "{t}")
                    }
                    RecoveryMethod::Question => assert_eq!(o.target, None),
                }
            }
            shapes.insert(offer.iter().map(|o| o.method).collect::<Vec<_>>());
        }
        assert!(shapes.len() >= 4, "{shapes:?}");
    }

    /// RC-1: a decoy's masked address could be a real one's: its tail never ends in a dot or
    /// holds two, which RI-1 refuses in a real address.
    #[test]
    fn a_decoys_masked_address_could_be_a_real_ones_rc_1() {
        let settings = RecoverySettings::default();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut emails = 0;
        for _ in 0..20_000 {
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            for offer in decoy_offer(&seed, &settings) {
                if offer.method != RecoveryMethod::Email {
                    continue;
                }
                emails += 1;
                let target = offer.target.unwrap();
                let tail = target
                    .strip_prefix("*****")
                    .and_then(|t| t.split_once('@'))
                    .map(|(tail, _)| tail)
                    .unwrap();
                assert!(
                    crate::masking::normalize_email(&format!("ab{tail}@example.it")).is_some(),
                    "{target}"
                );
            }
        }
        assert!(emails > 10_000, "{emails}");
    }

    #[test]
    fn without_the_security_question_decoys_never_offer_it() {
        let settings = RecoverySettings {
            security_question: false,
            ..RecoverySettings::default()
        };
        for n in 0u8..=255 {
            let offer = decoy_offer(&[n; 32], &settings);
            assert!(offer.iter().all(|o| o.method != RecoveryMethod::Question));
        }
    }

    /// RC-1: a decoy's question is always one a holder can pick, in either language.
    #[test]
    fn every_decoy_question_is_one_a_holder_is_offered() {
        for n in 0u8..=255 {
            let mut seed = [0u8; 32];
            seed[29] = n;
            seed[30] = n.wrapping_mul(7);
            let question = decoy_question(&seed);
            assert!(
                SUGGESTED_QUESTIONS_IT.contains(&question)
                    || SUGGESTED_QUESTIONS_EN.contains(&question),
                "{question}"
            );
        }
    }
}
