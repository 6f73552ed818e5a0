//! Given/when/then specifications of the account aggregate. Each command's events and each
//! refusal are also kept as insta snapshots, so a change of an event's shape shows in review.

use super::*;
use crate::secret::{PasswordHash, Sealed, Secret, SecretHasher, TokenHash};
use crate::settings::Settings;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

/// A fast, deterministic stand-in for Argon2id: FNV-1a of the secret. Only for domain tests.
struct FakeHasher;

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl SecretHasher for FakeHasher {
    fn hash(&self, secret: &Secret) -> PasswordHash {
        PasswordHash::new(format!("$fake${:016x}", fnv(secret.expose())))
    }
    fn verify(&self, secret: &Secret, hash: &PasswordHash) -> bool {
        self.hash(secret) == *hash
    }
    fn accepts(&self, hash: &PasswordHash) -> bool {
        hash.as_str().starts_with("$argon2id$")
    }
    fn verify_dummy(&self, secret: &Secret) {
        let _ = self.hash(secret);
    }
}

/// A keyed hash of codes for domain tests: the challenge id and the code, in the clear.
struct FakeCodes;

impl crate::otp::CodeHasher for FakeCodes {
    fn hash_code(&self, challenge_id: Uuid, code: &str) -> TokenHash {
        TokenHash::from_hex(format!("{challenge_id}:{code}"))
    }
}

/// A TOTP stand-in: the code of step `s` under any seal is `s` modulo a million, six digits;
/// a seal whose ciphertext is `broken` opens to nothing.
struct FakeTotp;

fn fake_code(at: DateTime<Utc>) -> String {
    format!("{:06}", (at.timestamp() as u64 / 30) % 1_000_000)
}

impl crate::otp::TotpVerifier for FakeTotp {
    fn matching_step(&self, sealed: &Sealed, code: &str, now: DateTime<Utc>) -> Option<u64> {
        if sealed.ciphertext == "broken" {
            return None;
        }
        let step = now.timestamp() as u64 / 30;
        [step + 1, step, step - 1]
            .into_iter()
            .find(|s| format!("{:06}", s % 1_000_000) == code)
    }
}

mod delegation;
mod identity_care;
mod recovery;
mod self_care;

const ACCOUNT: Uuid = Uuid::from_u128(0xacc0);
const SESSION: Uuid = Uuid::from_u128(0x5e55);
const OTHER_SESSION: Uuid = Uuid::from_u128(0x5e56);
const TEMPORARY: &str = "Tmp#4821-Kappa";
const CHOSEN: &str = "Tr4m-Colle!Verde";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap()
}

fn minutes(m: i64) -> Duration {
    Duration::minutes(m)
}

struct Given {
    state: Account,
}

fn given(events: impl IntoIterator<Item = AccountEvent>) -> Given {
    Given {
        state: events
            .into_iter()
            .fold(Account::default(), |s, e| evolve(s, &e)),
    }
}

struct Then {
    result: Result<Vec<AccountEvent>, AccountError>,
}

impl Given {
    fn when(self, cmd: AccountCommand) -> Then {
        self.when_at(cmd, now())
    }
    fn when_at(self, cmd: AccountCommand, at: DateTime<Utc>) -> Then {
        self.when_with(cmd, at, &Settings::default())
    }
    fn when_with(self, cmd: AccountCommand, at: DateTime<Utc>, settings: &Settings) -> Then {
        let ctx = Ctx {
            now: at,
            settings,
            hasher: &FakeHasher,
            codes: &FakeCodes,
            totp: &FakeTotp,
        };
        Then {
            result: decide(&self.state, &cmd, &ctx),
        }
    }
}

impl Then {
    #[track_caller]
    fn events(self) -> Vec<AccountEvent> {
        match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events, got {e:?}"),
        }
    }
    /// The refusal is the expected one; its problem shape is kept as a snapshot named after
    /// the test.
    #[track_caller]
    fn then_err(self, expected: AccountError) {
        assert_eq!(self.result, Err(expected.clone()));
        let test = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .rsplit("::")
            .next()
            .unwrap_or("unnamed")
            .to_string();
        insta::assert_json_snapshot!(format!("{test}_refusal"), refusal(&expected));
    }
    #[track_caller]
    fn error(self) -> AccountError {
        match self.result {
            Ok(events) => panic!("expected a refusal, got {events:?}"),
            Err(e) => e,
        }
    }
    #[track_caller]
    fn violated_rules(self) -> Vec<&'static str> {
        match self.error() {
            AccountError::Invalid(v) | AccountError::PasswordPolicy(v) => {
                v.iter().map(|v| v.rule).collect()
            }
            other => panic!("expected rule violations, got {other:?}"),
        }
    }
}

/// A refusal as the snapshot keeps it: its code and the rules it lists.
fn refusal(e: &AccountError) -> serde_json::Value {
    match e {
        AccountError::Invalid(v) | AccountError::PasswordPolicy(v) => {
            json!({ "code": e.code(), "errors": v })
        }
        other => json!({ "code": other.code() }),
    }
}

fn open_mailbox() -> OpenAccount {
    OpenAccount {
        account_id: ACCOUNT,
        kind: AccountKind::Mailbox,
        user_id: "mario.rossi@pec.example.it".into(),
        plan: Some(Plan::Pro),
        owner: None,
        name: Some("Mario Rossi".into()),
        fiscal_code: None,
        contact_email: Some("mario@example.it".into()),
        contact_mobile: None,
        language: Language::It,
        password: InitialPassword::Temporary {
            password: Secret::new(TEMPORARY),
            sealed: Sealed {
                key_id: "20261103".into(),
                nonce: "bm9uY2Vub25jZW5v".into(),
                ciphertext: "c2VhbGVkIHRlbXBvcmFyeSBwYXNzd29yZA==".into(),
                ephemeral: None,
            },
        },
        permissions: Vec::new(),
        identity_expires_on: None,
    }
}

fn opened_mailbox() -> Vec<AccountEvent> {
    given([])
        .when(AccountCommand::Open(open_mailbox()))
        .events()
}

fn login_as(session_id: Uuid, password: &str) -> AccountCommand {
    AccountCommand::Login(Login {
        session_id,
        token_hash: TokenHash::from_hex(format!("{:064x}", session_id.as_u128())),
        password: Secret::new(password),
        client_ip: Some("192.0.2.10".into()),
        channel: AccessChannel::Api,
        otp: None,
        sms: None,
    })
}

/// An opened mailbox with a live session started at `now()`.
fn with_session() -> Vec<AccountEvent> {
    let mut history = opened_mailbox();
    history.extend(
        given(history.clone())
            .when(login_as(SESSION, TEMPORARY))
            .events(),
    );
    history
}

/// A live session on an account whose recovery information is only the e-mail `a@b.it`.
fn with_recovery_email() -> Vec<AccountEvent> {
    let mut history = with_session();
    history.extend(
        given(history.clone())
            .when(set_info(
                Change::Set("a@b.it".into()),
                Change::Keep,
                Change::Keep,
            ))
            .events(),
    );
    history
}

fn change_to(new: &str, repeat: &str) -> AccountCommand {
    AccountCommand::ChangePassword(ChangePassword {
        session_id: SESSION,
        current_password: Secret::new(TEMPORARY),
        new_password: Secret::new(new),
        new_password_repeat: Secret::new(repeat),
        otp: None,
        client_ip: None,
        channel: AccessChannel::Api,
    })
}

fn set_info(
    email: Change<String>,
    mobile: Change<String>,
    security: Change<SecurityQuestion>,
) -> AccountCommand {
    AccountCommand::SetRecoveryInfo(SetRecoveryInfo {
        session_id: SESSION,
        email,
        mobile,
        security,
    })
}

fn question(answer: &str, repeat: &str) -> Change<SecurityQuestion> {
    Change::Set(SecurityQuestion {
        question: "Nome del primo animale domestico?".into(),
        answer: Secret::new(answer),
        answer_repeat: Secret::new(repeat),
    })
}

// ---- OpenAccount (ACC-1..4) ----

#[test]
fn opening_a_mailbox_issues_temporary_credentials_and_required_actions() {
    let events = opened_mailbox();
    insta::assert_json_snapshot!(events);
    let state = given(events).state;
    assert_eq!(
        state.required_actions(),
        vec![
            RequiredAction::ChangePassword,
            RequiredAction::SetRecoveryInfo
        ]
    );
    assert!(FakeHasher.verify(&Secret::new(TEMPORARY), state.current_password().unwrap()));
}

#[test]
fn opening_a_migrated_mailbox_imports_its_password_and_needs_no_change() {
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    let events = given([])
        .when(AccountCommand::Open(OpenAccount {
            password: InitialPassword::Imported(PasswordHash::new(phc)),
            ..open_mailbox()
        }))
        .events();
    insta::assert_json_snapshot!(events);
    assert_eq!(
        given(events).state.required_actions(),
        vec![RequiredAction::SetRecoveryInfo]
    );
}

#[test]
fn opening_an_open_account_again_is_refused() {
    given(opened_mailbox())
        .when(AccountCommand::Open(open_mailbox()))
        .then_err(AccountError::AlreadyOpen);
}

#[test]
fn opening_with_bad_fields_lists_each_broken_rule() {
    let err = given([])
        .when(AccountCommand::Open(OpenAccount {
            kind: AccountKind::Identity,
            user_id: "no spaces allowed".into(),
            plan: Some(Plan::Premium),
            fiscal_code: Some("RSSMRA80".into()),
            contact_email: Some("not-an-address".into()),
            contact_mobile: Some("12ab".into()),
            ..open_mailbox()
        }))
        .error();
    insta::assert_json_snapshot!(refusal(&err));
}

#[test]
fn a_mailbox_user_id_must_be_its_address() {
    let rules = given([])
        .when(AccountCommand::Open(OpenAccount {
            user_id: "mario".into(),
            ..open_mailbox()
        }))
        .violated_rules();
    assert_eq!(rules, vec!["ACC-1.user_id"]);
}

#[test]
fn a_collaborator_needs_an_existing_mailbox_as_owner() {
    let collaborator = |owner| OpenAccount {
        kind: AccountKind::Collaborator,
        user_id: "segreteria.rossi".into(),
        plan: None,
        owner,
        ..open_mailbox()
    };
    let err = given([])
        .when(AccountCommand::Open(collaborator(None)))
        .error();
    insta::assert_json_snapshot!("collaborator_without_owner", refusal(&err));
    let rules = given([])
        .when(AccountCommand::Open(collaborator(Some(OwnerRef {
            account_id: Uuid::from_u128(7),
            kind: Some(AccountKind::Identity),
        }))))
        .violated_rules();
    assert_eq!(rules, vec!["ACC-1.owner_id"]);
    let events = given([])
        .when(AccountCommand::Open(collaborator(Some(OwnerRef {
            account_id: Uuid::from_u128(7),
            kind: Some(AccountKind::Mailbox),
        }))))
        .events();
    insta::assert_json_snapshot!("collaborator_opened", events);
}

#[test]
fn only_argon2_hashes_can_be_imported() {
    let err = given([])
        .when(AccountCommand::Open(OpenAccount {
            password: InitialPassword::Imported(PasswordHash::new("$2b$12$bcrypthashbcrypthash")),
            ..open_mailbox()
        }))
        .error();
    insta::assert_json_snapshot!(refusal(&err));
}

// ---- Login, reauthentication, logout (SEC-3) ----

#[test]
fn login_with_the_right_password_starts_a_session_with_the_required_actions() {
    let events = given(opened_mailbox())
        .when(login_as(SESSION, TEMPORARY))
        .events();
    insta::assert_json_snapshot!(events);
}

#[test]
fn login_with_a_wrong_password_is_recorded_as_a_failure() {
    let events = given(opened_mailbox())
        .when(login_as(SESSION, "Wrong#Pass1"))
        .events();
    insta::assert_json_snapshot!(events);
}

#[test]
fn login_to_an_account_that_was_never_opened_is_not_found() {
    given([])
        .when(login_as(SESSION, TEMPORARY))
        .then_err(AccountError::NotFound);
}

#[test]
fn reauthentication_renews_the_step_up_window() {
    let events = given(with_session())
        .when_at(
            AccountCommand::Reauthenticate(Reauthenticate {
                session_id: SESSION,
                password: Secret::new(TEMPORARY),
                client_ip: None,
                channel: AccessChannel::Api,
                otp: None,
                sms: None,
            }),
            now() + minutes(30),
        )
        .events();
    insta::assert_json_snapshot!(events);
}

#[test]
fn reauthentication_with_a_wrong_password_is_a_recorded_failure() {
    let events = given(with_session())
        .when(AccountCommand::Reauthenticate(Reauthenticate {
            session_id: SESSION,
            password: Secret::new("nope"),
            client_ip: Some("192.0.2.10".into()),
            channel: AccessChannel::Web,
            otp: None,
            sms: None,
        }))
        .events();
    insta::assert_json_snapshot!(events);
}

#[test]
fn logout_ends_the_session_and_only_once() {
    let events = given(with_session())
        .when(AccountCommand::Logout(Logout {
            session_id: SESSION,
        }))
        .events();
    insta::assert_json_snapshot!(events);
    let mut history = with_session();
    history.extend(events);
    given(history)
        .when(AccountCommand::Logout(Logout {
            session_id: SESSION,
        }))
        .then_err(AccountError::SessionInvalid);
}

#[test]
fn a_session_past_its_lifetime_is_refused() {
    given(with_session())
        .when_at(
            AccountCommand::Logout(Logout {
                session_id: SESSION,
            }),
            now() + Duration::hours(24),
        )
        .then_err(AccountError::SessionInvalid);
}

// ---- ChangePassword (PW-1, PW-2, PW-4, PW-5) ----

#[test]
fn changing_the_password_stores_a_new_hash_and_ends_every_session() {
    let mut history = with_session();
    history.extend(
        given(history.clone())
            .when(login_as(OTHER_SESSION, TEMPORARY))
            .events(),
    );
    let events = given(history.clone())
        .when(change_to(CHOSEN, CHOSEN))
        .events();
    insta::assert_json_snapshot!(events);
    history.extend(events);
    let state = given(history).state;
    assert!(state.sessions.is_empty());
    assert_eq!(
        state.required_actions(),
        vec![RequiredAction::SetRecoveryInfo]
    );
    assert!(FakeHasher.verify(&Secret::new(CHOSEN), state.current_password().unwrap()));
}

#[test]
fn each_pw1_rule_is_refused_with_its_own_id() {
    let cases = [
        ("Mario.Rossi-Tram4!", "PW-1.user_id"),
        ("Aa1!x", "PW-1.min_length"),
        ("tram4-colle!verde", "PW-1.case"),
        ("Tram-Colle!Verde", "PW-1.digit"),
        ("Tram4Colle9Verde", "PW-1.special"),
        ("Tr4m-Colle!Veeerde", "PW-1.repeat"),
    ];
    for (password, rule) in cases {
        let rules = given(with_session())
            .when(change_to(password, password))
            .violated_rules();
        assert!(
            rules.contains(&rule),
            "{password}: expected {rule} in {rules:?}"
        );
    }
    let err = given(with_session()).when(change_to("aaa", "aaa")).error();
    insta::assert_json_snapshot!(refusal(&err));
}

#[test]
fn an_identity_may_not_use_its_name_or_fiscal_code() {
    let identity = given([])
        .when(AccountCommand::Open(OpenAccount {
            kind: AccountKind::Identity,
            user_id: "mrossi80".into(),
            plan: None,
            fiscal_code: Some("RSSMRA80A01H501U".into()),
            contact_mobile: Some("+393471234567".into()),
            ..open_mailbox()
        }))
        .events();
    let mut history = identity.clone();
    history.extend(given(identity).when(login_as(SESSION, TEMPORARY)).events());
    let rules = given(history)
        .when(change_to("Tr4m-Rossi!Verde", "Tr4m-Rossi!Verde"))
        .violated_rules();
    assert_eq!(rules, vec!["PW-1.personal_data"]);
}

#[test]
fn a_guessable_password_is_below_the_score_floor() {
    let rules = given(with_session())
        .when(change_to("Password1!", "Password1!"))
        .violated_rules();
    assert_eq!(rules, vec!["PW-2.score"]);
}

#[test]
fn the_new_password_must_be_typed_twice_alike() {
    let err = given(with_session())
        .when(change_to(CHOSEN, "Tr4m-Colle!Verdi"))
        .error();
    insta::assert_json_snapshot!(refusal(&err));
}

/// SEC-6: a wrong current password is recorded as a failed login of the session (the caller
/// answers `current-password-wrong`), so a stolen session gets no free guesses.
#[test]
fn a_wrong_current_password_is_recorded_as_a_failed_login() {
    let events = given(with_session())
        .when(AccountCommand::ChangePassword(ChangePassword {
            current_password: Secret::new("not-it"),
            ..match change_to(CHOSEN, CHOSEN) {
                AccountCommand::ChangePassword(c) => c,
                _ => unreachable!(),
            }
        }))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::LoginFailed(f)] if f.session_id == Some(SESSION)
            && f.reason == LoginFailure::WrongPassword
    ));
}

#[test]
fn none_of_the_last_five_passwords_may_come_back() {
    let passwords = [
        "Primo#Giro1x",
        "Secondo#Giro2y",
        "Terzo#Giro3z",
        "Quarto#Giro4w",
        "Quinto#Giro5v",
    ];
    let mut history = opened_mailbox();
    history.push(AccountEvent::PasswordImported(PasswordImported {
        password_hash: FakeHasher.hash(&Secret::new(TEMPORARY)),
    }));
    for p in passwords {
        history.push(AccountEvent::PasswordChanged(PasswordChanged {
            password_hash: FakeHasher.hash(&Secret::new(p)),
        }));
    }
    let current = passwords[4];
    let login = AccountCommand::Login(Login {
        session_id: SESSION,
        token_hash: TokenHash::from_hex("00"),
        password: Secret::new(current),
        client_ip: None,
        channel: AccessChannel::Api,
        otp: None,
        sms: None,
    });
    history.extend(given(history.clone()).when(login).events());
    let change = |new: &str| {
        AccountCommand::ChangePassword(ChangePassword {
            session_id: SESSION,
            current_password: Secret::new(current),
            new_password: Secret::new(new),
            new_password_repeat: Secret::new(new),
            otp: None,
            client_ip: None,
            channel: AccessChannel::Api,
        })
    };
    for p in passwords {
        assert_eq!(
            given(history.clone()).when(change(p)).violated_rules(),
            vec!["PW-2.history"],
            "{p}"
        );
    }
    // The sixth password back (the temporary one) is no longer remembered by the rule.
    given(history).when(change(TEMPORARY)).events();
}

#[test]
fn a_stale_session_must_reauthenticate_before_changing_the_password() {
    given(with_session())
        .when_at(change_to(CHOSEN, CHOSEN), now() + minutes(11))
        .then_err(AccountError::ReauthenticationRequired);
}

#[test]
fn an_ended_session_cannot_change_the_password() {
    let mut history = with_session();
    history.push(AccountEvent::SessionsEnded(SessionsEnded {
        session_ids: vec![SESSION],
        reason: SessionEndReason::Logout,
    }));
    given(history)
        .when(change_to(CHOSEN, CHOSEN))
        .then_err(AccountError::SessionInvalid);
}

// ---- SetRecoveryInfo (RI-1..3) ----

#[test]
fn recovery_info_is_saved_with_only_a_hash_of_the_normalised_answer() {
    let events = given(with_session())
        .when(set_info(
            Change::Set("Marisa@Inwind.IT".into()),
            Change::Set("347 123 4512".into()),
            question("  Fido   il Cane ", "fido IL cane"),
        ))
        .events();
    insta::assert_json_snapshot!(events);
    let AccountEvent::RecoveryInfoSet(set) = &events[0] else {
        panic!()
    };
    assert!(FakeHasher.verify(
        &Secret::new("fido il cane"),
        set.security_answer_hash.as_ref().unwrap()
    ));
    let mut history = with_session();
    history.extend(events);
    assert_eq!(
        given(history).state.required_actions(),
        vec![RequiredAction::ChangePassword]
    );
}

#[test]
fn recovery_info_needs_an_email_or_a_mobile() {
    let err = given(with_session())
        .when(set_info(
            Change::Keep,
            Change::Keep,
            question("fido", "fido"),
        ))
        .error();
    insta::assert_json_snapshot!(refusal(&err));
}

#[test]
fn the_security_answer_must_be_typed_twice_alike() {
    let rules = given(with_session())
        .when(set_info(
            Change::Set("a@b.it".into()),
            Change::Keep,
            question("fido", "rex"),
        ))
        .violated_rules();
    assert_eq!(rules, vec!["RI-1.security_answer_repeat"]);
}

#[test]
fn malformed_contacts_and_oversized_answers_are_refused() {
    let long = "x".repeat(201);
    let err = given(with_session())
        .when(set_info(
            Change::Set("no-at".into()),
            Change::Set("12ab".into()),
            question(&long, &long),
        ))
        .error();
    insta::assert_json_snapshot!(refusal(&err));
}

#[test]
fn changing_saved_recovery_info_needs_a_fresh_session() {
    let history = with_recovery_email();
    given(history.clone())
        .when_at(
            set_info(
                Change::Keep,
                Change::Set("+393471234512".into()),
                Change::Keep,
            ),
            now() + minutes(11),
        )
        .then_err(AccountError::ReauthenticationRequired);
    // Within the window, a partial update keeps what it does not name.
    let events = given(history)
        .when_at(
            set_info(
                Change::Keep,
                Change::Set("+393471234512".into()),
                Change::Keep,
            ),
            now() + minutes(5),
        )
        .events();
    assert_eq!(
        events,
        vec![AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
            email: Some("a@b.it".into()),
            mobile: Some("+393471234512".into()),
            security_question: None,
            security_answer_hash: None,
        })]
    );
}

#[test]
fn saving_the_same_recovery_info_again_records_nothing() {
    let history = with_recovery_email();
    let events = given(history)
        .when(set_info(
            Change::Set("a@b.it".into()),
            Change::Keep,
            Change::Keep,
        ))
        .events();
    assert!(events.is_empty());
}

#[test]
fn clearing_the_only_contact_is_refused() {
    let history = with_recovery_email();
    let rules = given(history)
        .when(set_info(Change::Clear, Change::Keep, Change::Keep))
        .violated_rules();
    assert_eq!(rules, vec!["RI-2"]);
}
