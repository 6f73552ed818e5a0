//! Given/when/then specifications of the forgotten-password flow (RC-2..7) and the OTP
//! challenge it uses, including expiry, reuse, supersession, lockout and its end.

use super::*;
use crate::otp::OtpPurpose;
use crate::recovery::RecoveryMethod;

const RECOVERY: Uuid = Uuid::from_u128(0x2ec0);
const OTHER_RECOVERY: Uuid = Uuid::from_u128(0x2ec1);
const NEW_PASSWORD: &str = "Nuova!Strada-Blu9";

fn token(n: u8) -> TokenHash {
    TokenHash::from_hex(format!("{n:02x}").repeat(32))
}

fn sealed() -> Sealed {
    Sealed {
        key_id: "20260110".into(),
        nonce: "bm9uY2U=".into(),
        ciphertext: "c2VhbGVk".into(),
        ephemeral: None,
    }
}

fn challenge(n: u128) -> Uuid {
    Uuid::from_u128(0xc0de_0000 + n)
}

/// An account that has chosen its password and saved every recovery method; its session is
/// still live.
fn recoverable() -> Vec<AccountEvent> {
    with_recovery_info(
        Change::Set("+393471234512".into()),
        question("  Fido   il Cane ", "fido il cane"),
    )
}

/// An account that has chosen its password and saved a recovery email, `mobile` and
/// `security`; its session is still live.
fn with_recovery_info(
    mobile: Change<String>,
    security: Change<SecurityQuestion>,
) -> Vec<AccountEvent> {
    let mut history = with_session();
    let mut step = |cmd| {
        let events = given(history.clone()).when(cmd).events();
        history.extend(events);
    };
    step(change_to(CHOSEN, CHOSEN));
    step(login_as(SESSION, CHOSEN));
    step(set_info(
        Change::Set("marisa@inwind.it".into()),
        mobile,
        security,
    ));
    history
}

fn and(mut history: Vec<AccountEvent>, events: Vec<AccountEvent>) -> Vec<AccountEvent> {
    history.extend(events);
    history
}

fn send_link(n: u8) -> AccountCommand {
    AccountCommand::SendRecoveryLink(SendRecoveryLink {
        recovery_id: RECOVERY,
        token_hash: token(n),
        sealed_token: sealed(),
    })
}

fn send_code(recovery_id: Uuid, n: u128, code: &str) -> AccountCommand {
    AccountCommand::SendRecoveryCode(SendRecoveryCode {
        recovery_id,
        challenge_id: challenge(n),
        code: Secret::new(code),
        sealed_code: sealed(),
    })
}

fn verify(recovery_id: Uuid, code: &str, n: u8) -> AccountCommand {
    AccountCommand::VerifyRecoveryCode(VerifyRecoveryCode {
        recovery_id,
        code: Secret::new(code),
        token_hash: token(n),
        client_ip: None,
    })
}

fn answer(text: &str, n: u8) -> AccountCommand {
    AccountCommand::AnswerSecurityQuestion(AnswerSecurityQuestion {
        recovery_id: RECOVERY,
        answer: Secret::new(text),
        token_hash: token(n),
        client_ip: None,
    })
}

fn complete(n: u8) -> AccountCommand {
    complete_with(n, NEW_PASSWORD, NEW_PASSWORD)
}

fn complete_with(n: u8, new: &str, repeat: &str) -> AccountCommand {
    AccountCommand::CompleteRecovery(CompleteRecovery {
        token_hash: token(n),
        new_password: Secret::new(new),
        new_password_repeat: Secret::new(repeat),
    })
}

/// Runs `cmd` at `at` and returns the history with its events.
fn step(history: Vec<AccountEvent>, cmd: AccountCommand, at: DateTime<Utc>) -> Vec<AccountEvent> {
    let events = given(history.clone()).when_at(cmd, at).events();
    and(history, events)
}

// ---- RC-2: the email link ----

#[test]
fn a_link_goes_to_the_recovery_address_and_lives_24_hours() {
    let events = given(recoverable()).when(send_link(1)).events();
    let [AccountEvent::RecoveryLinkIssued(link)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(link.to, "marisa@inwind.it");
    assert_eq!(link.expires_at, now() + Duration::hours(24));
    assert_eq!(link.token_hash, token(1));
}

#[test]
fn completing_with_the_link_recovers_ends_sessions_and_asks_to_confirm_rc_5_rc_6() {
    let history = step(recoverable(), send_link(1), now());
    let later = now() + Duration::hours(23);
    let events = given(history.clone()).when_at(complete(1), later).events();
    let [AccountEvent::PasswordRecovered(recovered), AccountEvent::SessionsEnded(ended)] =
        events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(recovered.method, RecoveryMethod::Email);
    assert_eq!(recovered.recovery_id, RECOVERY);
    assert!(FakeHasher.verify(&Secret::new(NEW_PASSWORD), &recovered.password_hash));
    assert_eq!(ended.session_ids, vec![SESSION]);
    assert_eq!(ended.reason, SessionEndReason::PasswordRecovered);
    let after = given(and(history, events));
    assert_eq!(
        after.state.required_actions(),
        vec![RequiredAction::ConfirmRecoveryInfo]
    );
}

#[test]
fn a_used_link_cannot_be_used_again() {
    let history = step(step(recoverable(), send_link(1), now()), complete(1), now());
    assert_eq!(
        given(history).when(complete(1)).error(),
        AccountError::TokenUsed
    );
}

#[test]
fn a_link_past_24_hours_has_expired_and_changes_nothing() {
    let history = step(recoverable(), send_link(1), now());
    let late = now() + Duration::hours(24) + Duration::seconds(1);
    assert_eq!(
        given(history).when_at(complete(1), late).error(),
        AccountError::TokenExpired
    );
}

#[test]
fn asking_again_supersedes_the_previous_link() {
    let history = step(
        step(recoverable(), send_link(1), now()),
        send_link(2),
        now(),
    );
    assert_eq!(
        given(history.clone()).when(complete(1)).error(),
        AccountError::TokenSuperseded
    );
    assert!(matches!(
        given(history).when(complete(2)).events().first(),
        Some(AccountEvent::PasswordRecovered(_))
    ));
}

#[test]
fn a_token_nobody_issued_is_not_valid() {
    assert_eq!(
        given(recoverable()).when(complete(9)).error(),
        AccountError::TokenInvalid
    );
}

#[test]
fn a_migrated_mailbox_without_a_recovery_address_gets_the_link_at_its_service_address() {
    let mut open = open_mailbox();
    open.password = InitialPassword::Imported(PasswordHash::new("$argon2id$v=19$imported"));
    let history = given([]).when(AccountCommand::Open(open)).events();
    let events = given(history).when(send_link(1)).events();
    let [AccountEvent::RecoveryLinkIssued(link)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(link.to, "mario@example.it");
}

#[test]
fn an_account_without_a_recovery_address_offers_no_link() {
    assert_eq!(
        given(opened_mailbox()).when(send_link(1)).error(),
        AccountError::MethodUnavailable
    );
}

// ---- RC-5: the new password follows PW-1 and PW-2 ----

#[test]
fn the_new_password_must_meet_the_policy_and_not_be_a_recent_one() {
    let history = step(recoverable(), send_link(1), now());
    let weak = given(history.clone())
        .when(complete_with(1, "short", "short"))
        .violated_rules();
    assert!(weak.contains(&"PW-1.min_length"), "{weak:?}");
    let differ = given(history.clone())
        .when(complete_with(1, NEW_PASSWORD, "Other!Strada-Blu9"))
        .violated_rules();
    assert_eq!(differ, vec!["PW-4.repeat"]);
    let reused = given(history.clone())
        .when(complete_with(1, CHOSEN, CHOSEN))
        .violated_rules();
    assert_eq!(reused, vec!["PW-2.history"]);
    // None of these spent the token.
    assert!(given(history).when(complete(1)).events().len() == 2);
}

// ---- RC-3: the SMS code ----

#[test]
fn a_code_goes_to_the_recovery_mobile_as_a_keyed_hash_and_lives_5_minutes() {
    let events = given(recoverable())
        .when(send_code(RECOVERY, 1, "482913"))
        .events();
    let [AccountEvent::OtpChallengeIssued(issued)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(issued.to, "+393471234512");
    assert_eq!(issued.purpose, OtpPurpose::Recovery);
    assert_eq!(issued.expires_at, now() + minutes(5));
    assert_eq!(issued.max_attempts, 5);
    assert_eq!(
        issued.code_hash,
        TokenHash::from_hex(format!("{}:482913", challenge(1)))
    );
    assert!(!serde_json::to_string(&events)
        .unwrap()
        .contains("\"482913\""));
}

#[test]
fn a_right_code_yields_a_reset_token_that_completes_the_recovery() {
    let history = step(recoverable(), send_code(RECOVERY, 1, "482913"), now());
    let events = given(history.clone())
        .when_at(verify(RECOVERY, "482913", 3), now() + minutes(4))
        .events();
    let [AccountEvent::OtpVerified(v), AccountEvent::ResetTokenIssued(reset)] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(v.challenge_id, challenge(1));
    assert_eq!(reset.method, RecoveryMethod::Sms);
    let history = and(history, events);
    // The code is single use.
    assert_eq!(
        given(history.clone())
            .when(verify(RECOVERY, "482913", 4))
            .error(),
        AccountError::NoCode
    );
    let done = given(history).when(complete(3)).events();
    assert!(matches!(
        done.first(),
        Some(AccountEvent::PasswordRecovered(r)) if r.method == RecoveryMethod::Sms
    ));
}

#[test]
fn a_code_past_5_minutes_has_expired() {
    let history = step(recoverable(), send_code(RECOVERY, 1, "482913"), now());
    assert_eq!(
        given(history)
            .when_at(verify(RECOVERY, "482913", 3), now() + minutes(5))
            .error(),
        AccountError::CodeExpired
    );
}

#[test]
fn five_wrong_codes_spend_the_recovery_and_a_new_code_does_not_reset_the_count() {
    let mut history = step(recoverable(), send_code(RECOVERY, 1, "111111"), now());
    for left in [4, 3] {
        let events = given(history.clone())
            .when(verify(RECOVERY, "999999", 3))
            .events();
        assert!(matches!(
            events.as_slice(),
            [AccountEvent::OtpCheckFailed(f)] if f.attempts_left == left
        ));
        history = and(history, events);
    }
    // A new code replaces the old one, which no longer works, and keeps the two spent attempts.
    history = step(history, send_code(RECOVERY, 2, "222222"), now());
    let old = given(history.clone())
        .when(verify(RECOVERY, "111111", 3))
        .events();
    assert!(matches!(
        old.as_slice(),
        [AccountEvent::OtpCheckFailed(f)] if f.attempts_left == 2
    ));
    history = and(history, old);
    history = step(history, verify(RECOVERY, "999999", 3), now());
    history = step(history, verify(RECOVERY, "999999", 3), now());
    assert_eq!(
        given(history.clone())
            .when(verify(RECOVERY, "222222", 3))
            .error(),
        AccountError::CodeExhausted
    );
    assert_eq!(
        given(history)
            .when(send_code(RECOVERY, 3, "333333"))
            .error(),
        AccountError::CodeExhausted
    );
}

#[test]
fn a_recovery_sends_at_most_three_codes() {
    let mut history = recoverable();
    for n in 1..=3 {
        history = step(history, send_code(RECOVERY, n, "123456"), now());
    }
    assert_eq!(
        given(history.clone())
            .when(send_code(RECOVERY, 4, "123456"))
            .error(),
        AccountError::CodeLimit
    );
    // Another recovery may send its own.
    assert!(
        given(history)
            .when(send_code(OTHER_RECOVERY, 5, "123456"))
            .events()
            .len()
            == 1
    );
}

#[test]
fn a_code_of_another_recovery_cannot_be_checked_here_and_malformed_codes_cost_nothing() {
    let history = step(recoverable(), send_code(OTHER_RECOVERY, 1, "123456"), now());
    assert_eq!(
        given(history.clone())
            .when(verify(RECOVERY, "123456", 3))
            .error(),
        AccountError::NoCode
    );
    assert_eq!(
        given(history)
            .when(verify(OTHER_RECOVERY, "12345x", 3))
            .violated_rules(),
        vec!["RC-3.code"]
    );
}

// ---- RC-4: the security question ----

#[test]
fn a_right_answer_compared_after_normalising_yields_a_reset_token() {
    let events = given(recoverable())
        .when(answer("FIDO  il cane", 5))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::ResetTokenIssued(r)] if r.method == RecoveryMethod::Question && r.token_hash == token(5)
    ));
}

/// An account whose answer was saved as `answer`, hashed as `saved` (what was hashed then).
fn recoverable_with_answer(answer: &str, saved: Option<&str>) -> Vec<AccountEvent> {
    let mut history = with_recovery_info(Change::Keep, question(answer, answer));
    if let Some(saved) = saved {
        for event in &mut history {
            if let AccountEvent::RecoveryInfoSet(set) = event {
                set.security_answer_hash = Some(FakeHasher.hash(&Secret::new(saved)));
            }
        }
    }
    history
}

#[test]
fn an_answer_saved_with_precomposed_accents_matches_when_typed_with_combining_marks_ri_1() {
    let events = given(recoverable_with_answer("Città del Sole", None))
        .when(answer("CITTA\u{300} DEL SOLE", 5))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::ResetTokenIssued(r)] if r.method == RecoveryMethod::Question
    ));
    // And the other way round.
    let events = given(recoverable_with_answer("Citta\u{300} del sole", None))
        .when(answer("città del sole", 5))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::ResetTokenIssued(_)]
    ));
}

#[test]
fn an_answer_saved_before_nfc_with_its_marks_apart_still_matches_typed_the_same_way() {
    // Hashed as it was before RI-1 composed accents: marks apart.
    let history = recoverable_with_answer("Citta\u{300}", Some("citta\u{300}"));
    let events = given(history.clone())
        .when(answer("Citta\u{300}", 5))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::ResetTokenIssued(_)]
    ));
    // NFC lengthens some text past the limit (U+0958 is never recomposed): an answer saved
    // before, 101 such letters, still matches typed as it was saved.
    let long = "\u{958}".repeat(101);
    let events = given(recoverable_with_answer("x", Some(&long)))
        .when(answer(&long, 5))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::ResetTokenIssued(_)]
    ));
    // A wrong answer with marks apart is still wrong, and counted once.
    let events = given(history).when(answer("Rome\u{300}", 5)).events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::SecurityAnswerFailed(f)] if f.attempts_left == 4
    ));
}

/// Counts the verifications a command spends, real or dummy (each an Argon2 run in service).
#[derive(Default)]
struct CountingHasher(std::sync::atomic::AtomicUsize);

impl CountingHasher {
    fn spent(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn count(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl SecretHasher for CountingHasher {
    fn hash(&self, secret: &Secret) -> PasswordHash {
        FakeHasher.hash(secret)
    }
    fn verify(&self, secret: &Secret, hash: &PasswordHash) -> bool {
        self.count();
        FakeHasher.verify(secret, hash)
    }
    fn accepts(&self, hash: &PasswordHash) -> bool {
        FakeHasher.accepts(hash)
    }
    fn verify_dummy(&self, _secret: &Secret) {
        self.count();
    }
}

#[test]
fn a_wrong_answer_costs_a_real_account_and_a_decoy_the_same_verifications_rc_1() {
    use crate::decider::Decider;
    use crate::subject::{Subject, SubjectCommand, Subjects};
    let account = given(recoverable()).state;
    let settings = Settings::default();
    let long = "\u{958}".repeat(101);
    // (typed, its forms): marks apart have two forms; NFC-lengthened text past the limit one.
    for (typed, forms) in [
        ("Roma", 1),
        ("Citta\u{300}", 2),
        ("città", 1),
        (long.as_str(), 1),
    ] {
        let real = CountingHasher::default();
        let ctx = Ctx {
            now: now(),
            settings: &settings,
            hasher: &real,
            codes: &FakeCodes,
            totp: &FakeTotp,
        };
        let events = decide(&account, &answer(typed, 5), &ctx).unwrap();
        assert!(
            matches!(events.as_slice(), [AccountEvent::SecurityAnswerFailed(_)]),
            "{typed:?}: {events:?}"
        );
        let decoy = CountingHasher::default();
        let ctx = Ctx {
            hasher: &decoy,
            ..ctx
        };
        let command = SubjectCommand::AnswerQuestion {
            recovery_id: Uuid::from_u128(7),
            answer: Secret::new(typed),
        };
        Subjects::decide(&Subject::default(), &command, &ctx).unwrap();
        assert_eq!(real.spent(), forms, "{typed:?}");
        assert_eq!(decoy.spent(), forms, "{typed:?}");
    }
}

#[test]
fn five_wrong_answers_lock_the_question_for_15_minutes_and_the_lock_ends() {
    let mut history = recoverable();
    for left in (1..=4).rev() {
        let events = given(history.clone()).when(answer("gatto", 5)).events();
        assert!(matches!(
            events.as_slice(),
            [AccountEvent::SecurityAnswerFailed(f)] if f.attempts_left == left
        ));
        history = and(history, events);
    }
    let fifth = given(history.clone()).when(answer("gatto", 5)).events();
    assert!(matches!(
        fifth.as_slice(),
        [AccountEvent::SecurityAnswerFailed(_), AccountEvent::SecurityQuestionLocked(l)]
            if l.until == now() + minutes(15)
    ));
    history = and(history, fifth);
    // Locked: even the right answer is refused, and nothing is recorded.
    assert_eq!(
        given(history.clone())
            .when_at(answer("fido il cane", 5), now() + minutes(14))
            .error(),
        AccountError::QuestionLocked {
            until: now() + minutes(15),
            seconds: 60,
        }
    );
    // The method is locked, never the account: the link still works.
    assert!(
        given(history.clone())
            .when_at(send_link(1), now() + minutes(1))
            .events()
            .len()
            == 1
    );
    // After 15 minutes the lock ends (recorded) and the right answer works.
    let events = given(history)
        .when_at(answer("fido il cane", 5), now() + minutes(15))
        .events();
    assert!(matches!(
        events.as_slice(),
        [
            AccountEvent::SecurityQuestionUnlocked(_),
            AccountEvent::ResetTokenIssued(_)
        ]
    ));
}

#[test]
fn the_question_can_be_turned_off_by_setting() {
    let settings = Settings {
        recovery: crate::settings::RecoverySettings {
            security_question: false,
            ..Default::default()
        },
        ..Settings::default()
    };
    let err = given(recoverable())
        .when_with(answer("fido il cane", 5), now(), &settings)
        .error();
    assert_eq!(err, AccountError::MethodUnavailable);
}

#[test]
fn an_oversized_answer_is_refused_before_it_costs_an_attempt() {
    let rules = given(recoverable())
        .when(answer(&"a".repeat(201), 5))
        .violated_rules();
    assert_eq!(rules, vec!["RC-4.answer"]);
}

// ---- RC-6: after a recovery ----

#[test]
fn saving_the_recovery_info_unchanged_after_a_recovery_confirms_it() {
    let history = step(step(recoverable(), send_link(1), now()), complete(1), now());
    let history = step(history, login_as(OTHER_SESSION, NEW_PASSWORD), now());
    let AccountEvent::SessionStarted(started) = history.last().unwrap() else {
        panic!()
    };
    assert_eq!(
        started.required_actions,
        vec![RequiredAction::ConfirmRecoveryInfo]
    );
    let confirm = AccountCommand::SetRecoveryInfo(SetRecoveryInfo {
        session_id: OTHER_SESSION,
        email: Change::Keep,
        mobile: Change::Keep,
        security: Change::Keep,
    });
    let events = given(history.clone()).when(confirm).events();
    assert_eq!(
        events,
        vec![AccountEvent::RecoveryInfoConfirmed(
            RecoveryInfoConfirmed {}
        )]
    );
    assert!(given(and(history, events))
        .state
        .required_actions()
        .is_empty());
}

// ---- RC-7: the operator's reset ----

#[test]
fn an_operator_reset_issues_temporary_credentials_records_the_form_and_ends_sessions() {
    let history = step(recoverable(), send_link(1), now());
    let reset = AccountCommand::OperatorReset(OperatorReset {
        form_reference: " MOD-2026/0042 ".into(),
        password: Secret::new(TEMPORARY),
    });
    let events = given(history.clone()).when(reset).events();
    let [AccountEvent::TemporaryPasswordIssued(t), AccountEvent::SessionsEnded(ended)] =
        events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(t.reason, TemporaryPasswordReason::OperatorReset);
    assert_eq!(t.form_reference.as_deref(), Some("MOD-2026/0042"));
    assert_eq!(ended.reason, SessionEndReason::OperatorReset);
    let after = and(history, events);
    assert_eq!(
        given(after.clone()).state.required_actions(),
        vec![
            RequiredAction::ChangePassword,
            RequiredAction::ConfirmRecoveryInfo
        ]
    );
    // A link sent before the reset no longer works.
    assert_eq!(
        given(after).when(complete(1)).error(),
        AccountError::TokenSuperseded
    );
}

#[test]
fn an_operator_reset_needs_the_forms_reference() {
    let reset = AccountCommand::OperatorReset(OperatorReset {
        form_reference: "  ".into(),
        password: Secret::new(TEMPORARY),
    });
    assert_eq!(
        given(recoverable()).when(reset).violated_rules(),
        vec!["RC-7.form_reference"]
    );
}

// ---- SEC-2, SEC-6: login lockout, counted in the aggregate ----

/// Ten wrong passwords in a row (the default), the last one locking.
fn locked_out() -> Vec<AccountEvent> {
    let mut history = recoverable();
    for n in 1..=10 {
        let events = given(history.clone())
            .when(login_as(OTHER_SESSION, "Wrong#Pass1"))
            .events();
        if n < 10 {
            assert!(matches!(events.as_slice(), [AccountEvent::LoginFailed(_)]));
        } else {
            assert!(matches!(
                events.as_slice(),
                [AccountEvent::LoginFailed(_), AccountEvent::LoginLockedOut(l)]
                    if l.until == now() + minutes(15) && l.failures == 10
            ));
        }
        history = and(history, events);
    }
    history
}

#[test]
fn ten_wrong_passwords_in_a_row_lock_logins_for_15_minutes_then_the_lock_ends() {
    let history = locked_out();
    // Even the right password is refused meanwhile, and nothing is recorded.
    assert_eq!(
        given(history.clone())
            .when_at(login_as(OTHER_SESSION, CHOSEN), now() + minutes(10))
            .error(),
        AccountError::LoginLocked {
            until: now() + minutes(15),
            seconds: 300,
        }
    );
    let events = given(history)
        .when_at(login_as(OTHER_SESSION, CHOSEN), now() + minutes(15))
        .events();
    assert!(matches!(
        events.as_slice(),
        [
            AccountEvent::LoginUnlocked(_),
            AccountEvent::SessionStarted(_)
        ]
    ));
}

#[test]
fn a_right_password_ends_the_run_of_failures() {
    let mut history = recoverable();
    for _ in 0..9 {
        history = step(history, login_as(OTHER_SESSION, "Wrong#Pass1"), now());
    }
    history = step(history, login_as(OTHER_SESSION, CHOSEN), now());
    let events = given(history)
        .when(login_as(OTHER_SESSION, "Wrong#Pass1"))
        .events();
    assert!(matches!(events.as_slice(), [AccountEvent::LoginFailed(_)]));
}

#[test]
fn a_recovery_lifts_a_login_lockout() {
    let history = step(locked_out(), send_link(1), now());
    let events = given(history.clone()).when(complete(1)).events();
    assert!(matches!(
        events.as_slice(),
        [
            AccountEvent::LoginUnlocked(_),
            AccountEvent::PasswordRecovered(_),
            AccountEvent::SessionsEnded(_)
        ]
    ));
    let history = and(history, events);
    assert!(matches!(
        given(history)
            .when(login_as(OTHER_SESSION, NEW_PASSWORD))
            .events()
            .as_slice(),
        [AccountEvent::SessionStarted(_)]
    ));
}

#[test]
fn changing_the_recovery_address_or_mobile_kills_what_was_on_its_way_there() {
    let history = step(recoverable(), send_link(1), now());
    let history = step(history, send_code(RECOVERY, 1, "482913"), now());
    let changed = AccountCommand::SetRecoveryInfo(SetRecoveryInfo {
        session_id: SESSION,
        email: Change::Set("nuovo@example.it".into()),
        mobile: Change::Set("+393470000000".into()),
        security: Change::Keep,
    });
    let history = step(history, changed, now());
    assert_eq!(
        given(history.clone()).when(complete(1)).error(),
        AccountError::TokenSuperseded
    );
    assert_eq!(
        given(history).when(verify(RECOVERY, "482913", 3)).error(),
        AccountError::NoCode
    );
}

#[test]
fn two_recoveries_have_codes_and_attempts_of_their_own_rc_3() {
    let mut history = step(recoverable(), send_code(RECOVERY, 1, "111111"), now());
    for _ in 0..5 {
        history = step(history, verify(RECOVERY, "999999", 3), now());
    }
    history = step(history, send_code(OTHER_RECOVERY, 2, "222222"), now());
    // The first recovery's code is still its own, spent; asking again there buys nothing.
    assert_eq!(
        given(history.clone())
            .when(verify(RECOVERY, "111111", 3))
            .error(),
        AccountError::CodeExhausted
    );
    assert_eq!(
        given(history.clone())
            .when(send_code(RECOVERY, 3, "333333"))
            .error(),
        AccountError::CodeExhausted
    );
    // The second recovery's code works.
    assert!(matches!(
        given(history)
            .when(verify(OTHER_RECOVERY, "222222", 4))
            .events()
            .as_slice(),
        [
            AccountEvent::OtpVerified(_),
            AccountEvent::ResetTokenIssued(_)
        ]
    ));
}

#[test]
fn changing_the_recovery_info_after_a_recovery_still_needs_a_fresh_session() {
    let history = step(step(recoverable(), send_link(1), now()), complete(1), now());
    let history = step(history, login_as(OTHER_SESSION, NEW_PASSWORD), now());
    let later = now() + minutes(11);
    let change = AccountCommand::SetRecoveryInfo(SetRecoveryInfo {
        session_id: OTHER_SESSION,
        email: Change::Set("altro@example.it".into()),
        mobile: Change::Keep,
        security: Change::Keep,
    });
    assert_eq!(
        given(history.clone()).when_at(change, later).error(),
        AccountError::ReauthenticationRequired
    );
    let confirm = AccountCommand::SetRecoveryInfo(SetRecoveryInfo {
        session_id: OTHER_SESSION,
        email: Change::Keep,
        mobile: Change::Keep,
        security: Change::Keep,
    });
    assert_eq!(
        given(history).when_at(confirm, later).events(),
        vec![AccountEvent::RecoveryInfoConfirmed(
            RecoveryInfoConfirmed {}
        )]
    );
}

#[test]
fn a_recoverys_wrong_codes_count_even_after_its_code_was_cancelled_or_another_recovery_ended() {
    let mut history = step(recoverable(), send_code(RECOVERY, 1, "111111"), now());
    for _ in 0..3 {
        history = step(history, verify(RECOVERY, "999999", 3), now());
    }
    // An operator's reset cancels the code; the recovery's spent attempts stay spent.
    let reset = AccountCommand::OperatorReset(OperatorReset {
        form_reference: "MOD-1".into(),
        password: Secret::new(TEMPORARY),
    });
    history = step(history, reset, now());
    history = step(history, send_code(RECOVERY, 2, "222222"), now());
    history = step(history, verify(RECOVERY, "999999", 3), now());
    let last = given(history.clone())
        .when(verify(RECOVERY, "999999", 3))
        .events();
    assert!(matches!(
        last.as_slice(),
        [AccountEvent::OtpCheckFailed(f)] if f.attempts_left == 0
    ));
    history = and(history, last);
    assert_eq!(
        given(history)
            .when(send_code(RECOVERY, 3, "333333"))
            .error(),
        AccountError::CodeExhausted
    );
}

#[test]
fn a_recovery_ends_the_run_of_wrong_passwords() {
    let mut history = recoverable();
    for _ in 0..9 {
        history = step(history, login_as(OTHER_SESSION, "Wrong#Pass1"), now());
    }
    history = step(history, send_link(1), now());
    history = step(history, complete(1), now());
    // One typo after the recovery is one failure, not the tenth.
    let events = given(history)
        .when(login_as(OTHER_SESSION, "Wrong#Pass1"))
        .events();
    assert!(matches!(events.as_slice(), [AccountEvent::LoginFailed(_)]));
}

// ---- SEC-2: wrong codes and answers counted across recoveries ----

/// Four wrong codes in each of `recoveries`, each recovery with a code of its own.
fn wrong_codes_in(
    mut history: Vec<AccountEvent>,
    recoveries: &[(Uuid, u128, usize)],
) -> Vec<AccountEvent> {
    for (recovery_id, n, guesses) in recoveries {
        history = step(history, send_code(*recovery_id, *n, "111111"), now());
        for _ in 0..*guesses {
            history = step(history, verify(*recovery_id, "999999", 3), now());
        }
    }
    history
}

#[test]
fn ten_wrong_codes_in_a_row_across_recoveries_lock_the_checks_and_a_right_code_ends_the_run_sec_2()
{
    let third = Uuid::from_u128(0x2ec2);
    let history = wrong_codes_in(
        recoverable(),
        &[(RECOVERY, 1, 4), (OTHER_RECOVERY, 2, 4), (third, 3, 1)],
    );
    // The tenth: recorded, and it locks every check of the account for 15 minutes.
    let tenth = given(history.clone())
        .when(verify(third, "999999", 3))
        .events();
    assert!(matches!(
        tenth.as_slice(),
        [AccountEvent::OtpCheckFailed(_), AccountEvent::ChecksLockedOut(l)]
            if l.failures == 10 && l.until == now() + minutes(15)
    ));
    let locked = and(history.clone(), tenth);
    assert!(matches!(
        given(locked.clone())
            .when(verify(third, "111111", 4))
            .error(),
        AccountError::ChecksLocked { seconds: 900, .. }
    ));
    assert!(matches!(
        given(locked.clone()).when(answer("gatto", 4)).error(),
        AccountError::ChecksLocked { .. }
    ));
    // The lock's end is recorded first, and the count starts afresh.
    let later = step(locked, send_code(third, 7, "111111"), now() + minutes(15));
    let after = given(later)
        .when_at(verify(third, "111111", 4), now() + minutes(15))
        .events();
    assert!(matches!(
        after.first(),
        Some(AccountEvent::ChecksUnlocked(_))
    ));
    // A right code before the tenth ends the run: eight more wrong ones (with the nine before
    // it, seventeen in all) lock nothing. (Five codes in the hour: SEC-2's message limit.)
    let right = step(history, verify(third, "111111", 5), now());
    let again = wrong_codes_in(
        right,
        &[
            (Uuid::from_u128(0x2ec3), 4, 4),
            (Uuid::from_u128(0x2ec4), 5, 4),
        ],
    );
    assert!(!again
        .iter()
        .any(|e| matches!(e, AccountEvent::ChecksLockedOut(_))));
}

#[test]
fn a_recoverys_counts_are_forgotten_a_day_after_its_last_code_expired() {
    let mut history = recoverable();
    for day in 0..30 {
        let recovery = Uuid::from_u128(0x5000 + day);
        let at = now() + chrono::Duration::days(i64::try_from(day).unwrap());
        history = step(history, send_code(recovery, day + 100, "111111"), at);
        history = step(history, verify(recovery, "999999", 3), at);
        history = step(history, verify(recovery, "111111", 4), at);
    }
    let state = history.iter().fold(Account::default(), evolve);
    assert!(
        state.grants.codes_sent.len() <= 2,
        "{:?}",
        state.grants.codes_sent
    );
    assert!(state.grants.code_attempts.len() <= 2);
    assert!(state.grants.code_expiries.len() <= 2);
}
