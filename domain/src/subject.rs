//! What the log knows of a user id that leads to no account able to act: an unknown id, or one
//! whose account cannot recover. One stream per keyed hash of the id (`subject-<hex>`, the
//! `subject` of `RecoveryStarted`), so its failed logins (SEC-2, SEC-6) and a decoy recovery's
//! progress (RC-1) are counted like a real account's: under optimistic concurrency, across
//! restarts, and at the cost of a write, so neither the answers nor the log's growth tell the
//! two apart. Nothing here names the id itself.

use crate::account::AccountError;
use crate::lockout::{failures_after, guard, lock_at, Lock};
use crate::secret::Secret;
use crate::settings::Settings;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum SubjectEvent {
    UnknownLoginFailed(UnknownLoginFailed),
    UnknownLoginLockedOut(UnknownLoginLockedOut),
    UnknownLoginUnlocked(UnknownLoginUnlocked),
    DecoyLinkSent(DecoyLinkSent),
    DecoyCodeSent(DecoyCodeSent),
    DecoyCodeFailed(DecoyCodeFailed),
    DecoyAnswerFailed(DecoyAnswerFailed),
    DecoyQuestionLocked(DecoyQuestionLocked),
    DecoyQuestionUnlocked(DecoyQuestionUnlocked),
    UnknownChecksLockedOut(UnknownChecksLockedOut),
    UnknownChecksUnlocked(UnknownChecksUnlocked),
    DecoyNoticeSent(DecoyNoticeSent),
}

pub const SUBJECT_EVENT_TYPES: &[&str] = &[
    "UnknownLoginFailed",
    "UnknownLoginLockedOut",
    "UnknownLoginUnlocked",
    "DecoyLinkSent",
    "DecoyCodeSent",
    "DecoyCodeFailed",
    "DecoyAnswerFailed",
    "DecoyQuestionLocked",
    "DecoyQuestionUnlocked",
    "UnknownChecksLockedOut",
    "UnknownChecksUnlocked",
    "DecoyNoticeSent",
];

/// A login with a user id that has no account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownLoginFailed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

/// SEC-2: an unknown id is throttled alike: too many failures in a row lock it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownLoginLockedOut {
    pub until: DateTime<Utc>,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownLoginUnlocked {
    pub locked_until: DateTime<Utc>,
}

/// A decoy recovery "sent" a link: nothing went anywhere; recorded as a real link would be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoyLinkSent {
    pub recovery_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// A decoy recovery "sent" a code: nothing went anywhere; the count and the expiry are kept so
/// the next answers match a real recovery's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoyCodeSent {
    pub recovery_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoyCodeFailed {
    pub recovery_id: Uuid,
    pub attempts_left: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoyAnswerFailed {
    pub recovery_id: Uuid,
    pub attempts_left: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoyQuestionLocked {
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoyQuestionUnlocked {
    pub locked_until: DateTime<Utc>,
}

/// SEC-2: too many wrong codes or answers in a row for the id, as an account's
/// `ChecksLockedOut`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownChecksLockedOut {
    pub until: DateTime<Utc>,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownChecksUnlocked {
    pub locked_until: DateTime<Utc>,
}

/// SEC-8: where a real account's event would be followed by a worker's `NotificationSent`
/// (a link, a code, a lockout's mail), a decoy's is followed by this, shortly after, so the
/// log grows alike for real and unknown ids. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoyNoticeSent {
    /// The template a real account's notice would have used.
    pub template: String,
}

pub fn stream_for(subject_hex: &str) -> String {
    format!("subject-{subject_hex}")
}

/// What an unknown id (or a decoy recovery) is asked to do: each is refused or recorded with
/// the same checks, in the same order and at the same cost as an account's own command.
#[derive(Debug, Clone)]
pub enum SubjectCommand {
    /// A login: the (dummy) verification of `password`, then a recorded failure (SEC-2).
    FailLogin {
        password: Secret,
        client_ip: Option<String>,
    },
    /// RC-2 for a decoy.
    SendLink { recovery_id: Uuid },
    /// RC-3 for a decoy.
    SendCode { recovery_id: Uuid },
    /// RC-3 for a decoy: every code is wrong.
    VerifyCode { recovery_id: Uuid, code: Secret },
    /// RC-4 for a decoy: every answer is wrong, after the same Argon2 verification.
    AnswerQuestion { recovery_id: Uuid, answer: Secret },
    /// SEC-6, from the scheduler: record the end of every lock whose time has passed, as an
    /// account's own timer does.
    EndLocks,
    /// SEC-8, from the scheduler: mirror one notice a real account would have had sent.
    MirrorNotice { template: String },
}

/// The subject aggregate as the generic handler runs it; its id is the keyed hash in hex.
pub struct Subjects;

impl crate::decider::Decider for Subjects {
    type Id = String;
    type State = Subject;
    type Command = SubjectCommand;
    type Event = SubjectEvent;
    type Error = AccountError;

    fn stream_for(subject_hex: &String) -> String {
        stream_for(subject_hex)
    }

    fn decide(
        state: &Subject,
        command: &SubjectCommand,
        ctx: &crate::decider::Ctx<'_>,
    ) -> Result<Vec<SubjectEvent>, AccountError> {
        let (settings, now) = (ctx.settings, ctx.now);
        match command {
            SubjectCommand::FailLogin {
                password,
                client_ip,
            } => {
                login_lock(state, now)?;
                ctx.hasher.verify_dummy(password);
                login_failed(state, client_ip.clone(), settings, now)
            }
            SubjectCommand::SendLink { recovery_id } => {
                state.messages.allow(settings, now)?;
                Ok(send_link(*recovery_id, settings, now))
            }
            SubjectCommand::SendCode { recovery_id } => {
                send_code(state, *recovery_id, settings, now)
            }
            SubjectCommand::VerifyCode { recovery_id, code } => verify_code(
                state,
                *recovery_id,
                crate::otp::well_formed(code.expose()),
                settings,
                now,
            ),
            SubjectCommand::AnswerQuestion {
                recovery_id,
                answer,
            } => {
                let forms = crate::masking::answer_forms(answer.expose())
                    .ok_or_else(crate::account::answer_malformed)?;
                question_lock(state, now)?;
                checks_open(state, now)?;
                // As many verifications as a real account's wrong answer costs (one for each
                // of RI-1's forms), so the two cannot be told apart by time.
                for form in forms {
                    ctx.hasher.verify_dummy(&Secret::new(form));
                }
                answer_failed(state, *recovery_id, settings, now)
            }
            SubjectCommand::MirrorNotice { template } => {
                Ok(if state.notices_mirrored < state.notices_due {
                    vec![SubjectEvent::DecoyNoticeSent(DecoyNoticeSent {
                        template: template.clone(),
                    })]
                } else {
                    Vec::new()
                })
            }
            SubjectCommand::EndLocks => {
                let mut events = Vec::new();
                if let Lock::Ended(until) = lock_at(state.login_locked_until, now) {
                    events.push(SubjectEvent::UnknownLoginUnlocked(UnknownLoginUnlocked {
                        locked_until: until,
                    }));
                }
                if let Lock::Ended(until) = lock_at(state.question_locked_until, now) {
                    events.push(SubjectEvent::DecoyQuestionUnlocked(DecoyQuestionUnlocked {
                        locked_until: until,
                    }));
                }
                if let Lock::Ended(until) = lock_at(state.checks_locked_until, now) {
                    events.push(SubjectEvent::UnknownChecksUnlocked(UnknownChecksUnlocked {
                        locked_until: until,
                    }));
                }
                Ok(events)
            }
        }
    }

    fn evolve(state: Subject, event: &SubjectEvent) -> Subject {
        evolve(state, event)
    }

    fn needs_hashing(command: &SubjectCommand) -> bool {
        matches!(
            command,
            SubjectCommand::FailLogin { .. } | SubjectCommand::AnswerQuestion { .. }
        )
    }
}

/// A decoy recovery's code, as a real recovery's challenge would stand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecoyCodes {
    pub sent: u32,
    pub attempts: u32,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subject {
    pub login_failures: u32,
    pub login_locked_until: Option<DateTime<Utc>>,
    pub codes: BTreeMap<Uuid, DecoyCodes>,
    pub question_failures: u32,
    pub question_locked_until: Option<DateTime<Utc>>,
    /// SEC-2: wrong codes and answers in a row, across recoveries, and their lock.
    pub check_failures: u32,
    pub checks_locked_until: Option<DateTime<Utc>>,
    /// SEC-2: the recovery messages a decoy "sent" lately, limited as an account's are.
    pub messages: crate::recovery::RecentMessages,
    /// SEC-8: notices a real account would have had sent, and how many were mirrored.
    pub notices_due: u32,
    pub notices_mirrored: u32,
}

pub fn evolve(mut state: Subject, event: &SubjectEvent) -> Subject {
    if mirrored_template(event).is_some() {
        state.notices_due += 1;
    }
    match event {
        SubjectEvent::UnknownLoginFailed(_) => state.login_failures += 1,
        SubjectEvent::UnknownLoginLockedOut(e) => {
            state.login_locked_until = Some(e.until);
            state.login_failures = 0;
        }
        SubjectEvent::UnknownLoginUnlocked(_) => {
            state.login_locked_until = None;
            state.login_failures = 0;
        }
        SubjectEvent::DecoyLinkSent(e) => {
            state
                .messages
                .record(e.expires_at, crate::recovery::RecoveryMethod::Email);
        }
        SubjectEvent::DecoyCodeSent(e) => {
            state
                .messages
                .record(e.expires_at, crate::recovery::RecoveryMethod::Sms);
            // As an account forgets its old recoveries' counts (RECOVERY_STATE_KEPT).
            let cutoff = e.expires_at - crate::account::RECOVERY_STATE_KEPT;
            state
                .codes
                .retain(|_, c| c.expires_at.is_some_and(|t| t >= cutoff));
            let codes = state.codes.entry(e.recovery_id).or_default();
            codes.sent += 1;
            codes.expires_at = Some(e.expires_at);
        }
        SubjectEvent::DecoyCodeFailed(e) => {
            state.codes.entry(e.recovery_id).or_default().attempts += 1;
            state.check_failures += 1;
        }
        SubjectEvent::DecoyAnswerFailed(_) => {
            state.question_failures += 1;
            state.check_failures += 1;
        }
        SubjectEvent::UnknownChecksLockedOut(e) => {
            state.checks_locked_until = Some(e.until);
            state.check_failures = 0;
        }
        SubjectEvent::UnknownChecksUnlocked(_) => {
            state.checks_locked_until = None;
            state.check_failures = 0;
        }
        SubjectEvent::DecoyNoticeSent(_) => state.notices_mirrored += 1,
        SubjectEvent::DecoyQuestionLocked(e) => {
            state.question_locked_until = Some(e.until);
            state.question_failures = 0;
        }
        SubjectEvent::DecoyQuestionUnlocked(_) => {
            state.question_locked_until = None;
            state.question_failures = 0;
        }
    }
    state
}

/// The template of the notice a real account's counterpart of `event` is sent (SEC-8), for
/// the decoy events that have one.
pub fn mirrored_template(event: &SubjectEvent) -> Option<&'static str> {
    match event {
        SubjectEvent::DecoyLinkSent(_) => Some("recovery_link"),
        SubjectEvent::DecoyCodeSent(_) => Some("one_time_code"),
        SubjectEvent::UnknownLoginLockedOut(_) => Some("login_locked"),
        SubjectEvent::DecoyQuestionLocked(_) => Some("lockout_started"),
        SubjectEvent::UnknownChecksLockedOut(_) => Some("checks_locked"),
        SubjectEvent::UnknownLoginFailed(_)
        | SubjectEvent::UnknownLoginUnlocked(_)
        | SubjectEvent::DecoyCodeFailed(_)
        | SubjectEvent::DecoyAnswerFailed(_)
        | SubjectEvent::DecoyQuestionUnlocked(_)
        | SubjectEvent::UnknownChecksUnlocked(_)
        | SubjectEvent::DecoyNoticeSent(_) => None,
    }
}

/// Before verifying a login's (dummy) password: refused while locked out, as an account's is;
/// an ended lockout is recorded first.
pub fn login_lock(state: &Subject, now: DateTime<Utc>) -> Result<Vec<SubjectEvent>, AccountError> {
    guard(
        state.login_locked_until,
        now,
        |until, seconds| AccountError::LoginLocked { until, seconds },
        |until| {
            SubjectEvent::UnknownLoginUnlocked(UnknownLoginUnlocked {
                locked_until: until,
            })
        },
    )
}

/// A failed login with an unknown id: counted, and locked out at the threshold.
pub fn login_failed(
    state: &Subject,
    client_ip: Option<String>,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<SubjectEvent>, AccountError> {
    let mut events = login_lock(state, now)?;
    let failures = failures_after(state.login_failures, !events.is_empty());
    events.push(SubjectEvent::UnknownLoginFailed(UnknownLoginFailed {
        client_ip,
    }));
    let limits = &settings.limits;
    if failures >= limits.login_failures_per_user {
        events.push(SubjectEvent::UnknownLoginLockedOut(UnknownLoginLockedOut {
            until: now + Duration::minutes(limits.login_lockout_minutes),
            failures,
        }));
    }
    Ok(events)
}

/// RC-2 for a decoy: a link that goes nowhere, recorded as a real one is.
pub fn send_link(recovery_id: Uuid, settings: &Settings, now: DateTime<Utc>) -> Vec<SubjectEvent> {
    vec![SubjectEvent::DecoyLinkSent(DecoyLinkSent {
        recovery_id,
        expires_at: now + settings.recovery.link_lifetime(),
    })]
}

/// RC-3 for a decoy: the limits of a real recovery's codes.
pub fn send_code(
    state: &Subject,
    recovery_id: Uuid,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<SubjectEvent>, AccountError> {
    state.messages.allow(settings, now)?;
    let limits = &settings.recovery;
    let codes = state.codes.get(&recovery_id).cloned().unwrap_or_default();
    if codes.sent >= limits.codes_per_recovery {
        return Err(AccountError::CodeLimit);
    }
    if codes.attempts >= limits.code_attempts {
        return Err(AccountError::CodeExhausted);
    }
    Ok(vec![SubjectEvent::DecoyCodeSent(DecoyCodeSent {
        recovery_id,
        expires_at: now + limits.code_lifetime(),
    })])
}

/// RC-3 for a decoy: every code is wrong, with a real check's order of refusals.
pub fn verify_code(
    state: &Subject,
    recovery_id: Uuid,
    well_formed: bool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<SubjectEvent>, AccountError> {
    let limits = &settings.recovery;
    let codes = state.codes.get(&recovery_id);
    let Some(expires_at) = codes.and_then(|c| c.expires_at) else {
        return Err(AccountError::NoCode);
    };
    let attempts = codes.map_or(0, |c| c.attempts);
    if !well_formed {
        return Err(AccountError::Invalid(vec![crate::Violation::new(
            "RC-3.code",
            Some("code"),
            "the code has 6 digits",
        )]));
    }
    let mut events = checks_open(state, now)?;
    let checks_lock_ended = !events.is_empty();
    if attempts >= limits.code_attempts {
        return Err(AccountError::CodeExhausted);
    }
    if now >= expires_at {
        return Err(AccountError::CodeExpired);
    }
    events.push(SubjectEvent::DecoyCodeFailed(DecoyCodeFailed {
        recovery_id,
        attempts_left: limits.code_attempts.saturating_sub(attempts + 1),
    }));
    check_failed(state, &mut events, checks_lock_ended, settings, now);
    Ok(events)
}

/// SEC-2 for an unknown id, as for an account: checks refused while locked, an ended lock
/// recorded first.
pub fn checks_open(state: &Subject, now: DateTime<Utc>) -> Result<Vec<SubjectEvent>, AccountError> {
    guard(
        state.checks_locked_until,
        now,
        |until, seconds| AccountError::ChecksLocked { until, seconds },
        |until| {
            SubjectEvent::UnknownChecksUnlocked(UnknownChecksUnlocked {
                locked_until: until,
            })
        },
    )
}

/// SEC-2 for an unknown id: one more wrong code or answer in a row; the lock at the threshold.
fn check_failed(
    state: &Subject,
    events: &mut Vec<SubjectEvent>,
    lock_ended: bool,
    settings: &Settings,
    now: DateTime<Utc>,
) {
    let failures = failures_after(state.check_failures, lock_ended);
    let limits = &settings.limits;
    if failures >= limits.check_failures_per_user {
        events.push(SubjectEvent::UnknownChecksLockedOut(
            UnknownChecksLockedOut {
                until: now + Duration::minutes(limits.check_lockout_minutes),
                failures,
            },
        ));
    }
}

/// RC-4 for a decoy, before hashing: refused while locked, an ended lock recorded first.
pub fn question_lock(
    state: &Subject,
    now: DateTime<Utc>,
) -> Result<Vec<SubjectEvent>, AccountError> {
    guard(
        state.question_locked_until,
        now,
        |until, seconds| AccountError::QuestionLocked { until, seconds },
        |until| {
            SubjectEvent::DecoyQuestionUnlocked(DecoyQuestionUnlocked {
                locked_until: until,
            })
        },
    )
}

/// RC-4 for a decoy, after hashing: every answer is wrong; five lock the question.
pub fn answer_failed(
    state: &Subject,
    recovery_id: Uuid,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<SubjectEvent>, AccountError> {
    let limits = &settings.recovery;
    let mut events = question_lock(state, now)?;
    let question_lock_ended = !events.is_empty();
    let checks = checks_open(state, now)?;
    let checks_lock_ended = !checks.is_empty();
    events.extend(checks);
    let failures = failures_after(state.question_failures, question_lock_ended);
    events.push(SubjectEvent::DecoyAnswerFailed(DecoyAnswerFailed {
        recovery_id,
        attempts_left: limits.question_attempts.saturating_sub(failures),
    }));
    if failures >= limits.question_attempts {
        events.push(SubjectEvent::DecoyQuestionLocked(DecoyQuestionLocked {
            until: now + limits.question_lock(),
        }));
    }
    check_failed(state, &mut events, checks_lock_ended, settings, now);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 4, 12, 0, 0).unwrap()
    }

    fn fold(events: &[SubjectEvent]) -> Subject {
        events.iter().fold(Subject::default(), evolve)
    }

    #[test]
    fn an_unknown_id_is_locked_out_after_ten_failures_and_the_lock_ends() {
        let settings = Settings::default();
        let mut history = Vec::new();
        for _ in 0..10 {
            history.extend(login_failed(&fold(&history), None, &settings, now()).unwrap());
        }
        assert!(matches!(
            history.last(),
            Some(SubjectEvent::UnknownLoginLockedOut(l)) if l.until == now() + Duration::minutes(15)
        ));
        let state = fold(&history);
        assert!(matches!(
            login_lock(&state, now() + Duration::minutes(14)),
            Err(AccountError::LoginLocked { seconds: 60, .. })
        ));
        let after = login_failed(&state, None, &settings, now() + Duration::minutes(15)).unwrap();
        assert!(matches!(
            after.as_slice(),
            [
                SubjectEvent::UnknownLoginUnlocked(_),
                SubjectEvent::UnknownLoginFailed(_)
            ]
        ));
    }

    #[test]
    fn a_decoy_recovery_follows_the_code_limits_of_a_real_one() {
        let settings = Settings::default();
        let r = Uuid::from_u128(1);
        assert_eq!(
            verify_code(&Subject::default(), r, true, &settings, now()),
            Err(AccountError::NoCode)
        );
        let mut history = Vec::new();
        for _ in 0..3 {
            history.extend(send_code(&fold(&history), r, &settings, now()).unwrap());
        }
        assert_eq!(
            send_code(&fold(&history), r, &settings, now()),
            Err(AccountError::CodeLimit)
        );
        for left in (0..5).rev() {
            let events = verify_code(&fold(&history), r, true, &settings, now()).unwrap();
            assert!(matches!(
                events.as_slice(),
                [SubjectEvent::DecoyCodeFailed(f)] if f.attempts_left == left
            ));
            history.extend(events);
        }
        assert_eq!(
            verify_code(&fold(&history), r, true, &settings, now()),
            Err(AccountError::CodeExhausted)
        );
        // Another recovery of the same id counts afresh, and codes expire.
        let other = Uuid::from_u128(2);
        history.extend(send_code(&fold(&history), other, &settings, now()).unwrap());
        assert_eq!(
            verify_code(
                &fold(&history),
                other,
                true,
                &settings,
                now() + Duration::minutes(5)
            ),
            Err(AccountError::CodeExpired)
        );
    }

    #[test]
    fn a_decoy_question_locks_after_five_answers_and_unlocks() {
        let settings = Settings::default();
        let r = Uuid::from_u128(1);
        let mut history = Vec::new();
        for _ in 0..5 {
            history.extend(answer_failed(&fold(&history), r, &settings, now()).unwrap());
        }
        assert!(matches!(
            history.last(),
            Some(SubjectEvent::DecoyQuestionLocked(_))
        ));
        assert!(matches!(
            question_lock(&fold(&history), now()),
            Err(AccountError::QuestionLocked { .. })
        ));
        assert!(matches!(
            question_lock(&fold(&history), now() + Duration::minutes(15))
                .unwrap()
                .as_slice(),
            [SubjectEvent::DecoyQuestionUnlocked(_)]
        ));
    }

    #[test]
    fn a_decoys_old_recoveries_are_forgotten_as_an_accounts_are() {
        let settings = Settings::default();
        let mut history = Vec::new();
        for day in 0..30u32 {
            let at = now() + Duration::days(i64::from(day));
            let recovery = Uuid::from_u128(u128::from(day) + 1);
            history.extend(send_code(&fold(&history), recovery, &settings, at).unwrap());
        }
        assert!(fold(&history).codes.len() <= 2);
    }
}
