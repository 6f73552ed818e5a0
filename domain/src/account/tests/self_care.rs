//! Given/when/then specifications of identities' self-care: self-suspension and its end, and
//! an operator's revocation (SC-6).

use super::*;
use crate::otp::OtpPurpose;

const CODE: &str = "424242";

/// An identity with a contact mobile, its password changed, and a live session at `now()`.
fn identity() -> Vec<AccountEvent> {
    settled(open_identity())
}

fn open_identity() -> OpenAccount {
    let mut open = open_mailbox();
    open.kind = AccountKind::Identity;
    open.user_id = "RSSMRA80A01H501U".into();
    open.plan = None;
    open.fiscal_code = Some("RSSMRA80A01H501U".into());
    open.contact_mobile = Some("+393471234567".into());
    open
}

/// A mailbox past its required actions, with a live session at `now()`.
fn mailbox() -> Vec<AccountEvent> {
    settled(open_mailbox())
}

/// The account `open` opens, its password changed, its recovery information set, and a live
/// session at `now()`: nothing left to do before any change.
fn settled(open: OpenAccount) -> Vec<AccountEvent> {
    let mut history = given([]).when(AccountCommand::Open(open)).events();
    history.push(AccountEvent::PasswordChanged(PasswordChanged {
        password_hash: FakeHasher.hash(&Secret::new(CHOSEN)),
    }));
    history.push(AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
        email: Some("a@b.it".into()),
        mobile: None,
        security_question: None,
        security_answer_hash: None,
    }));
    history.extend(
        given(history.clone())
            .when(login_as(SESSION, CHOSEN))
            .events(),
    );
    history
}

/// `history` with the code for `suspension` sent.
fn with_code(mut history: Vec<AccountEvent>) -> Vec<AccountEvent> {
    let cmd = request_otp(OtpPurpose::Suspension);
    history.extend(given(history.clone()).when(cmd).events());
    history
}

fn suspend(days: u32, otp: Option<&str>) -> AccountCommand {
    AccountCommand::Suspend(Suspend {
        session_id: SESSION,
        days,
        otp: otp.map(Secret::new),
    })
}

fn then(mut history: Vec<AccountEvent>, events: Vec<AccountEvent>) -> Vec<AccountEvent> {
    history.extend(events);
    history
}

#[test]
fn a_suspension_confirmed_by_the_sms_code_ends_every_session_sc_6() {
    let history = with_code(identity());
    let events = given(history.clone()).when(suspend(7, Some(CODE))).events();
    assert!(matches!(events[0], AccountEvent::OtpVerified(_)));
    assert_eq!(
        events[1],
        AccountEvent::AccountSuspended(AccountSuspended {
            days: 7,
            until: now() + Duration::days(7),
        })
    );
    assert!(matches!(
        &events[2],
        AccountEvent::SessionsEnded(e) if e.reason == SessionEndReason::Suspended && e.session_ids == [SESSION]
    ));
    // A login with the right password is refused, saying until when.
    let suspended = then(history, events);
    assert_eq!(
        given(suspended.clone())
            .when_at(login_as(OTHER_SESSION, CHOSEN), now() + Duration::days(6))
            .error(),
        AccountError::NotActive {
            status: AccountStatus::Suspended,
            until: Some(now() + Duration::days(7)),
            awaiting_password: false,
        }
    );
    // A wrong password is still only a failed login: the state is told only after a right one.
    assert!(matches!(
        given(suspended)
            .when(login_as(OTHER_SESSION, "Sbagliata!1"))
            .events()[0],
        AccountEvent::LoginFailed(_)
    ));
}

#[test]
fn the_suspension_ends_by_itself_at_the_end_of_its_period_sc_6() {
    let history = with_code(identity());
    let suspended = then(
        history.clone(),
        given(history).when(suspend(3, Some(CODE))).events(),
    );
    let end = now() + Duration::days(3);
    // The scheduler's EndLocks records nothing before the end, the end after it.
    assert!(given(suspended.clone())
        .when_at(AccountCommand::EndLocks, end - Duration::seconds(1))
        .events()
        .is_empty());
    let ended = given(suspended.clone())
        .when_at(AccountCommand::EndLocks, end)
        .events();
    assert_eq!(
        ended,
        [AccountEvent::SuspensionEnded(SuspensionEnded {
            suspended_until: end
        })]
    );
    assert_eq!(
        given(then(suspended.clone(), ended)).state.status,
        AccountStatus::Active
    );
    // A login after the end, before the scheduler came, ends it first and goes in.
    let events = given(suspended)
        .when_at(login_as(OTHER_SESSION, CHOSEN), end + Duration::hours(1))
        .events();
    assert!(matches!(events[0], AccountEvent::SuspensionEnded(_)));
    assert!(matches!(events[1], AccountEvent::SessionStarted(_)));
}

#[test]
fn a_suspension_needs_the_code_a_period_of_1_to_30_days_and_an_identity_sc_6() {
    let history = with_code(identity());
    assert_eq!(
        given(history.clone())
            .when(suspend(0, Some(CODE)))
            .violated_rules(),
        ["SC-6.days"]
    );
    assert_eq!(
        given(history.clone())
            .when(suspend(31, Some(CODE)))
            .violated_rules(),
        ["SC-6.days"]
    );
    assert_eq!(
        given(history.clone())
            .when(suspend(5, None))
            .violated_rules(),
        ["PW-4.otp"]
    );
    // A wrong code is recorded and suspends nothing.
    let events = given(history.clone())
        .when(suspend(5, Some("000000")))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::OtpCheckFailed(_)]
    ));
    // No code asked for: refused.
    assert_eq!(
        given(identity()).when(suspend(5, Some(CODE))).error(),
        AccountError::NoCode
    );
    // A mailbox has no self-suspension.
    given(mailbox())
        .when(suspend(5, Some(CODE)))
        .then_err(AccountError::NotIdentity);
}

#[test]
fn a_suspension_needs_a_fresh_session_and_no_required_action_sec_3_acc_2() {
    // SEC-3: past the step-up window, neither the code nor the suspension.
    let stale = now() + Duration::minutes(11);
    assert_eq!(
        given(identity())
            .when_at(request_otp(OtpPurpose::Suspension), stale)
            .error(),
        AccountError::ReauthenticationRequired
    );
    assert_eq!(
        given(with_code(identity()))
            .when_at(suspend(5, Some(CODE)), stale)
            .error(),
        AccountError::ReauthenticationRequired
    );
    // ACC-2: a session on the temporary password changes nothing but the password and the
    // recovery information.
    let temporary = temporary_identity();
    assert_eq!(
        given(temporary.clone())
            .when(request_otp(OtpPurpose::Suspension))
            .error(),
        AccountError::ActionsRequired
    );
    assert_eq!(
        given(temporary).when(suspend(5, Some(CODE))).error(),
        AccountError::ActionsRequired
    );
}

/// An identity just opened, with a live session on its temporary password.
fn temporary_identity() -> Vec<AccountEvent> {
    let mut history = given([])
        .when(AccountCommand::Open(open_identity()))
        .events();
    history.extend(
        given(history.clone())
            .when(login_as(SESSION, TEMPORARY))
            .events(),
    );
    history
}

fn request_otp(purpose: OtpPurpose) -> AccountCommand {
    otp_request(purpose, 0xc0de)
}

/// A code for `purpose`, drawn as challenge `challenge`.
fn otp_request(purpose: OtpPurpose, challenge: u128) -> AccountCommand {
    AccountCommand::RequestOtp(RequestOtp {
        session_id: SESSION,
        purpose,
        code: DrawnCode {
            challenge_id: Uuid::from_u128(challenge),
            code: Secret::new(CODE),
            sealed_code: Sealed {
                key_id: "20261103".into(),
                nonce: "bm9uY2U=".into(),
                ciphertext: "c2VhbGVk".into(),
                ephemeral: None,
            },
        },
    })
}

#[test]
fn a_revocation_is_final_ends_every_session_and_is_recorded_once_sc_6() {
    let history = identity();
    let revoke = |reference: &str| {
        AccountCommand::Revoke(Revoke {
            request_reference: reference.into(),
        })
    };
    let events = given(history.clone())
        .when(revoke(" REV-2026-0042 "))
        .events();
    assert_eq!(
        events[0],
        AccountEvent::AccountRevoked(AccountRevoked {
            request_reference: "REV-2026-0042".into()
        })
    );
    assert!(
        matches!(&events[1], AccountEvent::SessionsEnded(e) if e.reason == SessionEndReason::Revoked)
    );
    let revoked = then(history.clone(), events);
    // The same request again (a retry) records nothing; another finds the account closed.
    assert!(given(revoked.clone())
        .when(revoke("REV-2026-0042"))
        .events()
        .is_empty());
    assert_eq!(
        given(revoked.clone()).when(revoke("REV-2026-0043")).error(),
        AccountError::Closed {
            status: AccountStatus::Revoked
        }
    );
    assert_eq!(
        given(revoked.clone())
            .when(login_as(OTHER_SESSION, CHOSEN))
            .error(),
        AccountError::NotActive {
            status: AccountStatus::Revoked,
            until: None,
            awaiting_password: false,
        }
    );
    for bad in ["", "   ", "REV\u{202E}1"] {
        assert_eq!(
            given(history.clone()).when(revoke(bad)).violated_rules(),
            ["SC-6.request_reference"]
        );
    }
    // A suspension's end never brings a revoked account back.
    let suspended = with_code(identity());
    let suspended = then(
        suspended.clone(),
        given(suspended).when(suspend(2, Some(CODE))).events(),
    );
    let revoked = then(
        suspended.clone(),
        given(suspended).when(revoke("REV-1")).events(),
    );
    assert!(given(revoked)
        .when_at(AccountCommand::EndLocks, now() + Duration::days(3))
        .events()
        .is_empty());
}

fn verify_request(purpose: OtpPurpose) -> AccountCommand {
    otp_request(purpose, 0xbad9e)
}

fn verify(method: crate::recovery::RecoveryMethod, code: &str) -> AccountCommand {
    AccountCommand::VerifyRecoveryContact(VerifyRecoveryContact {
        session_id: SESSION,
        method,
        code: Some(Secret::new(code)),
    })
}

#[test]
fn the_code_for_a_recovery_contact_goes_there_and_proves_it_sc_4() {
    use crate::recovery::RecoveryMethod;
    let history = identity();
    let sent = given(history.clone())
        .when(verify_request(OtpPurpose::VerifyRecoveryEmail))
        .events();
    // By mail, to the recovery address (not the contact mobile).
    assert!(matches!(
        &sent[0],
        AccountEvent::OtpChallengeIssued(e)
            if e.channel == crate::notice::Channel::Email && e.to == "a@b.it"
                && e.purpose == OtpPurpose::VerifyRecoveryEmail
    ));
    let history = then(history, sent);
    let events = given(history.clone())
        .when(verify(RecoveryMethod::Email, CODE))
        .events();
    assert_eq!(
        events[1],
        AccountEvent::RecoveryContactVerified(RecoveryContactVerified {
            method: RecoveryMethod::Email,
            contact: "a@b.it".into(),
        })
    );
    // A wrong code is recorded and verifies nothing.
    let wrong = given(history.clone())
        .when(verify(RecoveryMethod::Email, "000000"))
        .events();
    assert!(matches!(
        wrong.as_slice(),
        [AccountEvent::OtpCheckFailed(_)]
    ));
    // No recovery mobile on file: no code for it.
    assert_eq!(
        given(history.clone())
            .when(verify_request(OtpPurpose::VerifyRecoveryMobile))
            .error(),
        AccountError::MethodUnavailable
    );
    // The address changed after the code went out: the code proves nothing any more.
    let changed = then(
        history.clone(),
        vec![AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
            email: Some("c@d.it".into()),
            mobile: None,
            security_question: None,
            security_answer_hash: None,
        })],
    );
    assert_eq!(
        given(changed)
            .when(verify(RecoveryMethod::Email, CODE))
            .error(),
        AccountError::NoCode
    );
    assert_eq!(
        given(history)
            .when(verify(RecoveryMethod::Question, CODE))
            .violated_rules(),
        ["SC-4.method"]
    );
}

#[test]
fn codes_by_mail_count_towards_the_hourly_limit_like_codes_by_sms_sec_2() {
    let mut history = identity();
    for _ in 0..5 {
        let events = given(history.clone())
            .when(verify_request(OtpPurpose::VerifyRecoveryEmail))
            .events();
        history.extend(events);
    }
    assert!(matches!(
        given(history.clone())
            .when(verify_request(OtpPurpose::VerifyRecoveryEmail))
            .error(),
        AccountError::MessageLimit { .. }
    ));
    assert!(matches!(
        given(history)
            .when(verify_request(OtpPurpose::Suspension))
            .error(),
        AccountError::MessageLimit { .. }
    ));
}

fn record(number: &str, expires_on: chrono::NaiveDate) -> AccountCommand {
    AccountCommand::RecordDocument(RecordDocument {
        session_id: SESSION,
        kind: DocumentKind::IdentityCard,
        number: number.into(),
        expires_on,
    })
}

fn note(expires_on: chrono::NaiveDate, days_before: u32) -> AccountCommand {
    AccountCommand::NoteDocumentExpiry(NoteDocumentExpiry {
        expires_on,
        days_before,
    })
}

#[test]
fn a_new_document_is_recorded_and_its_expiry_noticed_once_per_notice_sc_2() {
    let expires = now().date_naive() + Duration::days(60);
    let history = identity();
    let events = given(history.clone())
        .when(record("ca 12345 ab", expires))
        .events();
    assert_eq!(
        events,
        [AccountEvent::IdentityDocumentRecorded(
            IdentityDocumentRecorded {
                kind: DocumentKind::IdentityCard,
                number: "CA12345AB".into(),
                expires_on: expires,
            }
        )]
    );
    let history = then(history, events);
    // The same document again records nothing.
    assert!(given(history.clone())
        .when(record("CA12345AB", expires))
        .events()
        .is_empty());
    // The scheduler's notices: once each, and none for an expiry no longer on file.
    let noticed = given(history.clone()).when(note(expires, 30)).events();
    assert_eq!(
        noticed,
        [AccountEvent::DocumentExpiryNoticed(DocumentExpiryNoticed {
            expires_on: expires,
            days_before: 30
        })]
    );
    let history = then(history, noticed);
    assert!(given(history.clone())
        .when(note(expires, 30))
        .events()
        .is_empty());
    let renewed = then(
        history.clone(),
        given(history.clone())
            .when(record("CA99999ZZ", expires + Duration::days(3650)))
            .events(),
    );
    assert!(given(renewed).when(note(expires, 7)).events().is_empty());
    // Recorded 6 days before it expires: one notice, the 7-day one, not the 30-day one too.
    let soon = now().date_naive() + Duration::days(6);
    let close = then(
        identity(),
        given(identity()).when(record("CA55555CC", soon)).events(),
    );
    assert!(given(close.clone())
        .when(note(soon, 30))
        .events()
        .is_empty());
    assert_eq!(
        given(close).when(note(soon, 7)).events(),
        [AccountEvent::DocumentExpiryNoticed(DocumentExpiryNoticed {
            expires_on: soon,
            days_before: 7
        })]
    );
    // Bad input: a short or odd number, a document already expired; a mailbox has none.
    assert_eq!(
        given(history.clone())
            .when(record("AB-1", now().date_naive()))
            .violated_rules(),
        ["SC-2.number", "SC-2.expires_on"]
    );
    assert_eq!(
        given(mailbox()).when(record("CA12345AB", expires)).error(),
        AccountError::NotIdentity
    );
    // ACC-2: not on the temporary password; SEC-3: not on a stale session.
    assert_eq!(
        given(temporary_identity())
            .when(record("CA12345AB", expires))
            .error(),
        AccountError::ActionsRequired
    );
    assert_eq!(
        given(identity())
            .when_at(record("CA12345AB", expires), now() + Duration::minutes(11))
            .error(),
        AccountError::ReauthenticationRequired
    );
}
