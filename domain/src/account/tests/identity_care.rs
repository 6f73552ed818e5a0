//! Given/when/then specifications of the rest of identities' self-care: the identity's data
//! (SC-1), contact changes (SC-3), recovery contact changes and their cooldown (SC-5), password
//! age (PW-6) and inactivity (SC-8).

use super::*;
use crate::otp::OtpPurpose;
use crate::recovery::RecoveryMethod;

const CONTACT: &str = "+393471234567";
const NEW_MOBILE: &str = "+393489998877";

fn drawn(id: u128, code: &str) -> DrawnCode {
    DrawnCode {
        challenge_id: Uuid::from_u128(id),
        code: Secret::new(code),
        sealed_code: Sealed {
            key_id: "20261103".into(),
            nonce: "bm9uY2U=".into(),
            ciphertext: "c2VhbGVk".into(),
            ephemeral: None,
        },
    }
}

/// An identity opened at `now()`, its password chosen, recovery email and mobile on file, and
/// a live session.
fn identity() -> Vec<AccountEvent> {
    let mut open = open_mailbox();
    open.kind = AccountKind::Identity;
    open.user_id = "franca.neri".into();
    open.plan = None;
    open.contact_mobile = Some(CONTACT.into());
    let mut history = given([]).when(AccountCommand::Open(open)).events();
    history.push(AccountEvent::PasswordChanged(PasswordChanged {
        password_hash: FakeHasher.hash(&Secret::new(CHOSEN)),
    }));
    history.push(AccountEvent::PasswordExpirySet(PasswordExpirySet {
        expires_at: now() + Duration::days(180),
    }));
    history.push(AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
        email: Some("a@b.it".into()),
        mobile: Some("+393330000001".into()),
        security_question: None,
        security_answer_hash: None,
    }));
    extended(history, login_as(SESSION, CHOSEN))
}

fn extended(mut history: Vec<AccountEvent>, cmd: AccountCommand) -> Vec<AccountEvent> {
    history.extend(given(history.clone()).when(cmd).events());
    history
}

fn request(purpose: OtpPurpose, id: u128, code: &str) -> AccountCommand {
    AccountCommand::RequestOtp(RequestOtp {
        session_id: SESSION,
        purpose,
        code: drawn(id, code),
    })
}

#[test]
fn an_identity_is_issued_its_spid_code_and_watched_for_inactivity_at_opening_sc_1_sc_8() {
    let events = identity();
    let issued = events.iter().find_map(|e| match e {
        AccountEvent::IdentityIssued(i) => Some(i.clone()),
        _ => None,
    });
    assert_eq!(
        issued,
        Some(IdentityIssued {
            spid_code: spid_code(ACCOUNT),
            issued_on: now().date_naive(),
            expires_on: None,
        })
    );
    let revokes_at = now().checked_add_months(chrono::Months::new(24)).unwrap();
    assert!(events.contains(&AccountEvent::InactivityDeadlineSet(
        InactivityDeadlineSet {
            revokes_at,
            next_check_at: revokes_at - Duration::days(90),
        }
    )));
    // A mailbox gets neither.
    let mailbox = given([])
        .when(AccountCommand::Open(open_mailbox()))
        .events();
    assert!(!mailbox.iter().any(|e| matches!(
        e,
        AccountEvent::IdentityIssued(_) | AccountEvent::InactivityDeadlineSet(_)
    )));
}

#[test]
fn a_new_contact_mobile_needs_the_code_to_the_old_number_and_the_one_to_the_new_sc_3() {
    let start = AccountCommand::StartContactMobileChange(StartContactMobileChange {
        session_id: SESSION,
        mobile: "348 999 8877".into(),
        current: drawn(1, "111111"),
        new: drawn(2, "222222"),
    });
    let history = extended(identity(), start);
    let targets: Vec<(OtpPurpose, String)> = history
        .iter()
        .filter_map(|e| match e {
            AccountEvent::OtpChallengeIssued(c) => Some((c.purpose, c.to.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        [
            (OtpPurpose::ContactChange, CONTACT.to_string()),
            (OtpPurpose::NewContactMobile, NEW_MOBILE.to_string())
        ]
    );
    let confirm = |current: &str, new: &str| {
        AccountCommand::ConfirmContactMobileChange(ConfirmContactMobileChange {
            session_id: SESSION,
            current_code: Some(Secret::new(current)),
            code: Some(Secret::new(new)),
        })
    };
    // One wrong code: only it is recorded, neither is spent, nothing changes.
    let wrong = given(history.clone())
        .when(confirm("111111", "999999"))
        .events();
    assert_eq!(wrong.len(), 1);
    assert!(
        matches!(&wrong[0], AccountEvent::OtpCheckFailed(f) if f.challenge_id == Uuid::from_u128(2))
    );
    let right = given(then_all(history.clone(), wrong))
        .when(confirm("111111", "222222"))
        .events();
    assert_eq!(
        right.last(),
        Some(&AccountEvent::ContactMobileChanged(ContactMobileChanged {
            mobile: NEW_MOBILE.into(),
            form_reference: None,
            recovery_mobile: None,
        }))
    );
    // The codes swapped are both wrong.
    let swapped = given(history).when(confirm("222222", "111111")).events();
    assert_eq!(
        swapped
            .iter()
            .filter(|e| matches!(e, AccountEvent::OtpCheckFailed(_)))
            .count(),
        2
    );
}

#[test]
fn a_recovery_contact_change_sends_no_code_to_a_stale_session_sec_3() {
    for purpose in [
        OtpPurpose::RecoveryEmailChange,
        OtpPurpose::RecoveryMobileChange,
    ] {
        assert_eq!(
            given(identity())
                .when_at(request(purpose, 7, "777777"), now() + Duration::minutes(11))
                .error(),
            AccountError::ReauthenticationRequired
        );
    }
}

#[test]
fn contacts_do_not_change_on_the_temporary_password_acc_2() {
    let mut open = open_mailbox();
    open.kind = AccountKind::Identity;
    open.user_id = "franca.neri".into();
    open.plan = None;
    open.contact_mobile = Some(CONTACT.into());
    let opened = given([]).when(AccountCommand::Open(open)).events();
    let temporary = extended(opened, login_as(SESSION, TEMPORARY));
    let email = AccountCommand::ChangeContactEmail(ChangeContactEmail {
        session_id: SESSION,
        email: "altrove@example.it".into(),
    });
    let mobile = AccountCommand::StartContactMobileChange(StartContactMobileChange {
        session_id: SESSION,
        mobile: "348 999 8877".into(),
        current: drawn(1, "111111"),
        new: drawn(2, "222222"),
    });
    let confirm = AccountCommand::ConfirmContactMobileChange(ConfirmContactMobileChange {
        session_id: SESSION,
        current_code: Some(Secret::new("111111")),
        code: Some(Secret::new("222222")),
    });
    for cmd in [email, mobile, confirm] {
        assert_eq!(
            given(temporary.clone()).when(cmd).error(),
            AccountError::ActionsRequired
        );
    }
}

fn then_all(mut history: Vec<AccountEvent>, events: Vec<AccountEvent>) -> Vec<AccountEvent> {
    history.extend(events);
    history
}

fn start_email_change(otp: &str, email: &str) -> AccountCommand {
    AccountCommand::StartRecoveryContactChange(StartRecoveryContactChange {
        session_id: SESSION,
        method: RecoveryMethod::Email,
        otp: Some(Secret::new(otp)),
        contact: email.into(),
        code: drawn(20, "202020"),
    })
}

fn confirm_email_change(code: &str) -> AccountCommand {
    AccountCommand::ConfirmRecoveryContactChange(ConfirmRecoveryContactChange {
        session_id: SESSION,
        method: RecoveryMethod::Email,
        code: Some(Secret::new(code)),
    })
}

#[test]
fn a_recovery_email_changes_with_an_authorising_code_and_one_to_the_new_address_sc_5() {
    let history = extended(
        identity(),
        request(OtpPurpose::RecoveryEmailChange, 10, "101010"),
    );
    let history = extended(history, start_email_change("101010", "nuovo@b.it"));
    let sent = history.last().unwrap();
    assert!(matches!(
        sent,
        AccountEvent::OtpChallengeIssued(c) if c.purpose == OtpPurpose::NewRecoveryEmail && c.to == "nuovo@b.it"
    ));
    let events = given(history.clone())
        .when(confirm_email_change("202020"))
        .events();
    assert!(
        events.contains(&AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
            email: Some("nuovo@b.it".into()),
            mobile: Some("+393330000001".into()),
            security_question: None,
            security_answer_hash: None,
        }))
    );
    assert!(events.contains(&AccountEvent::RecoveryContactChanged(
        RecoveryContactChanged {
            method: RecoveryMethod::Email,
            cooldown_until: now() + Duration::days(6),
        }
    )));
    // For 6 days the email cannot change again; after them it can.
    let changed = then_all(history, events);
    assert_eq!(
        given(changed.clone())
            .when(request(OtpPurpose::RecoveryEmailChange, 11, "111111"))
            .result,
        Err(AccountError::ContactCooldown {
            until: now() + Duration::days(6)
        })
    );
    // (then only the session, long expired, stands in the way)
    assert_eq!(
        given(changed.clone())
            .when_at(
                request(OtpPurpose::RecoveryEmailChange, 11, "111111"),
                now() + Duration::days(6)
            )
            .result,
        Err(AccountError::SessionInvalid)
    );
    // Nor through the plain save, cleared or changed.
    for email in [Change::Set("terzo@b.it".to_string()), Change::Clear] {
        let save = AccountCommand::SetRecoveryInfo(SetRecoveryInfo {
            session_id: SESSION,
            email,
            mobile: Change::Keep,
            security: Change::Keep,
        });
        assert!(matches!(
            given(changed.clone()).when(save).result,
            Err(AccountError::Invalid(v)) if v.iter().any(|v| v.rule == "SC-5.email")
        ));
    }
}

#[test]
fn a_recovery_change_without_its_authorising_code_sends_nothing_sc_5() {
    let history = identity();
    assert_eq!(
        given(history.clone())
            .when(start_email_change("101010", "nuovo@b.it"))
            .result,
        Err(AccountError::NoCode)
    );
    // The confirming code cannot be asked for directly.
    assert!(matches!(
        given(history)
            .when(request(OtpPurpose::NewRecoveryEmail, 12, "121212"))
            .result,
        Err(AccountError::Invalid(_))
    ));
}

fn note_password(days_before: u32) -> AccountCommand {
    AccountCommand::NotePasswordExpiry(NotePasswordExpiry {
        expires_at: now() + Duration::days(180),
        days_before,
    })
}

#[test]
fn a_password_is_noticed_before_it_expires_then_only_changes_pw_6() {
    let history = identity();
    let expires_at = now() + Duration::days(180);
    let noticed = given(history.clone()).when(note_password(14)).events();
    assert_eq!(
        noticed,
        [AccountEvent::PasswordExpiryNoticed(PasswordExpiryNoticed {
            expires_at,
            days_before: 14
        })]
    );
    // Once only.
    let history = then_all(history, noticed);
    assert!(given(history.clone())
        .when(note_password(14))
        .events()
        .is_empty());
    // At the expiry it is recorded; a login then requires the change and nothing else.
    let history = extended(history, note_password(0));
    assert_eq!(
        history.last(),
        Some(&AccountEvent::PasswordExpired(PasswordExpired {
            expires_at
        }))
    );
    let login = given(history.clone())
        .when_at(
            login_as(OTHER_SESSION, CHOSEN),
            expires_at + Duration::days(1),
        )
        .events();
    assert!(matches!(
        login.last(),
        Some(AccountEvent::SessionStarted(s)) if s.required_actions == [RequiredAction::ChangePassword]
    ));
    let language = AccountCommand::SetLanguage(SetLanguage {
        session_id: SESSION,
        language: Language::En,
    });
    assert_eq!(
        given(history.clone()).when(language).result,
        Err(AccountError::PasswordExpired)
    );
    // The code for the change itself still goes out.
    assert!(given(history)
        .when(request(OtpPurpose::PasswordChange, 30, "303030"))
        .result
        .is_ok());
}

#[test]
fn a_login_past_the_expiry_records_it_when_the_scheduler_has_not_pw_6() {
    let history = identity();
    let expires_at = now() + Duration::days(180);
    let login = given(history)
        .when_at(
            login_as(OTHER_SESSION, CHOSEN),
            expires_at + Duration::hours(1),
        )
        .events();
    assert!(
        login.contains(&AccountEvent::PasswordExpired(PasswordExpired {
            expires_at
        }))
    );
    assert!(matches!(
        login.last(),
        Some(AccountEvent::SessionStarted(s)) if s.required_actions.contains(&RequiredAction::ChangePassword)
    ));
}

fn review(at: DateTime<Utc>, reported: Option<DateTime<Utc>>) -> (AccountCommand, DateTime<Utc>) {
    (
        AccountCommand::ReviewInactivity(ReviewInactivity {
            last_reported_access: reported,
        }),
        at,
    )
}

#[test]
fn an_unused_identity_is_warned_then_revoked_and_a_use_moves_the_date_sc_8() {
    let history = identity();
    // The login in `identity()` was at `now()`, as the opening: the date stands.
    let revokes_at = now().checked_add_months(chrono::Months::new(24)).unwrap();
    let (cmd, at) = review(revokes_at - Duration::days(90), None);
    let warned = given(history.clone()).when_at(cmd, at).events();
    assert_eq!(
        warned,
        [AccountEvent::InactivityWarned(InactivityWarned {
            revokes_at,
            days_before: 90,
            next_check_at: revokes_at - Duration::days(30),
        })]
    );
    let history = then_all(history, warned);
    // A scheduler that was away gives only the most urgent warning due, once.
    let (cmd, at) = review(revokes_at - Duration::days(5), None);
    let late = given(history.clone()).when_at(cmd, at).events();
    assert!(matches!(
        late.as_slice(),
        [AccountEvent::InactivityWarned(w)] if w.days_before == 10 && w.next_check_at == revokes_at - Duration::days(1)
    ));
    let (cmd, at) = review(revokes_at, None);
    let revoked = given(then_all(history.clone(), late))
        .when_at(cmd, at)
        .events();
    assert_eq!(
        revoked[0],
        AccountEvent::RevokedForInactivity(RevokedForInactivity { revokes_at })
    );
    // A successful access reported 40 days before the date moves it.
    let used = revokes_at - Duration::days(40);
    let (cmd, at) = review(revokes_at, Some(used));
    let moved = given(history).when_at(cmd, at).events();
    let new_date = used.checked_add_months(chrono::Months::new(24)).unwrap();
    assert_eq!(
        moved,
        [AccountEvent::InactivityDeadlineSet(InactivityDeadlineSet {
            revokes_at: new_date,
            next_check_at: new_date - Duration::days(90),
        })]
    );
}

#[test]
fn inactivity_set_to_zero_revokes_nothing_sc_8() {
    let history = identity();
    let mut settings = Settings::default();
    settings.identity.inactivity_months = 0;
    let revokes_at = now().checked_add_months(chrono::Months::new(24)).unwrap();
    let (cmd, _) = review(revokes_at, None);
    assert!(given(history)
        .when_with(cmd, revokes_at + Duration::days(1), &settings)
        .events()
        .is_empty());
}

#[test]
fn a_mobile_change_sends_its_two_codes_only_when_both_fit_in_the_hour_sec_2() {
    // Four codes this hour already: the fifth would fit, the pair does not.
    let mut history = identity();
    for n in 0..4 {
        history = extended(history, request(OtpPurpose::Suspension, 100 + n, "123123"));
    }
    let start = AccountCommand::StartContactMobileChange(StartContactMobileChange {
        session_id: SESSION,
        mobile: NEW_MOBILE.into(),
        current: drawn(1, "111111"),
        new: drawn(2, "222222"),
    });
    assert!(matches!(
        given(history).when(start).result,
        Err(AccountError::MessageLimit { .. })
    ));
}
