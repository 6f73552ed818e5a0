//! Given/when/then specifications of two-step verification (AP-8), passwords for mail programs
//! (AP-1..6), mail protocols (ACC-5) and collaborators (CO-1..5, ACC-4).

use super::*;
use crate::otp::OtpPurpose;

const OWNER: Uuid = ACCOUNT;
const COLLABORATOR: Uuid = Uuid::from_u128(0xc011);
const NEW_PASSWORD: &str = "Nuova!Strada-Blu9";

fn sealed(text: &str) -> Sealed {
    Sealed {
        key_id: "service-1".into(),
        nonce: "bm9uY2U=".into(),
        ciphertext: text.into(),
        ephemeral: None,
    }
}

fn token(n: u8) -> TokenHash {
    TokenHash::from_hex(format!("{n:02x}").repeat(32))
}

fn secret(s: &str) -> Secret {
    Secret::new(s)
}

/// A mailbox whose holder changed the password and set recovery information, with a fresh
/// session: ready for sensitive changes.
fn ready() -> Vec<AccountEvent> {
    let mut history = opened_mailbox();
    history.push(AccountEvent::PasswordChanged(PasswordChanged {
        password_hash: FakeHasher.hash(&secret(CHOSEN)),
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

fn then(mut history: Vec<AccountEvent>, events: Vec<AccountEvent>) -> Vec<AccountEvent> {
    history.extend(events);
    history
}

fn start_app() -> AccountCommand {
    AccountCommand::StartTwoFactor(StartTwoFactor {
        session_id: SESSION,
        channel: TwoFactorChannel::App,
        sealed_secret: Some(sealed("totp")),
        sms: None,
    })
}

fn confirm(code: String) -> AccountCommand {
    AccountCommand::ConfirmTwoFactor(ConfirmTwoFactor {
        session_id: SESSION,
        code: Secret::new(code),
        client_ip: Some("192.0.2.10".into()),
    })
}

/// Two-step verification on through the app, confirmed at `now()`.
fn with_two_factor() -> Vec<AccountEvent> {
    let history = then(ready(), given(ready()).when(start_app()).events());
    let events = given(history.clone())
        .when(confirm(fake_code(now())))
        .events();
    then(history, events)
}

fn login_with(code: Option<String>) -> AccountCommand {
    AccountCommand::Login(Login {
        session_id: OTHER_SESSION,
        token_hash: token(9),
        password: secret(CHOSEN),
        client_ip: Some("192.0.2.10".into()),
        channel: AccessChannel::Api,
        otp: code.map(Secret::new),
        sms: None,
    })
}

/// `history` with a fresh login (password and code) of `SESSION` at `at`.
fn relogged(history: &[AccountEvent], at: DateTime<Utc>) -> Vec<AccountEvent> {
    let mut login = login_with(Some(fake_code(at)));
    if let AccountCommand::Login(l) = &mut login {
        l.session_id = SESSION;
    }
    let events = given(history.to_vec()).when_at(login, at).events();
    then(history.to_vec(), events)
}

#[test]
fn two_step_verification_turns_on_with_one_confirmed_code_ap_8() {
    let events = given(ready()).when(start_app()).events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::TwoFactorEnrollmentStarted(e)] if e.sealed_secret == Some(sealed("totp"))
    ));
    let history = then(ready(), events);
    // Nothing is on until a code is confirmed.
    assert!(given(history.clone()).state.two_factor.is_none());
    let events = given(history).when(confirm(fake_code(now()))).events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::TotpAccepted(a), AccountEvent::TwoFactorEnabled(e)]
            if a.used_for == CodeUse::TwoFactorOn && e.channel == TwoFactorChannel::App
    ));
}

#[test]
fn a_wrong_confirmation_code_is_recorded_and_counts_toward_the_checks_lock_sec_2() {
    let mut history = then(ready(), given(ready()).when(start_app()).events());
    for _ in 0..9 {
        let events = given(history.clone())
            .when(confirm("000000".into()))
            .events();
        assert!(matches!(
            events.as_slice(),
            [AccountEvent::TotpRejected(r)] if r.reason == CodeRejection::Wrong
        ));
        history.extend(events);
    }
    let events = given(history).when(confirm("000000".into())).events();
    assert!(matches!(
        events.as_slice(),
        [
            AccountEvent::TotpRejected(_),
            AccountEvent::ChecksLockedOut(_)
        ]
    ));
}

#[test]
fn turning_two_step_on_needs_a_fresh_session_and_no_required_action_sec_3() {
    assert_eq!(
        given(ready())
            .when_at(start_app(), now() + minutes(11))
            .error(),
        AccountError::ReauthenticationRequired
    );
    assert_eq!(
        given(with_session()).when(start_app()).error(),
        AccountError::ActionsRequired
    );
    assert_eq!(
        given(with_two_factor()).when(start_app()).error(),
        AccountError::TwoFactorAlreadyOn
    );
}

#[test]
fn with_two_step_on_a_login_needs_a_code_used_once_within_one_step_ap_8() {
    let history = with_two_factor();
    let at = now() + minutes(5);
    assert_eq!(
        given(history.clone()).when_at(login_with(None), at).error(),
        AccountError::SecondFactorRequired {
            channel: TwoFactorChannel::App
        }
    );
    let events = given(history.clone())
        .when_at(login_with(Some(fake_code(at))), at)
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::TotpAccepted(a), AccountEvent::SessionStarted(_)] if a.used_for == CodeUse::Login
    ));
    let history = then(history, events);
    // The same code again, even within its step: refused and recorded as a failed login.
    let replay = given(history.clone())
        .when_at(login_with(Some(fake_code(at))), at + Duration::seconds(10))
        .events();
    assert!(matches!(
        replay.as_slice(),
        [AccountEvent::LoginFailed(f)] if f.reason == LoginFailure::CodeReplayed
    ));
    // A code of a step before the one used is spent too; one from far away is wrong.
    let earlier = given(history.clone())
        .when_at(login_with(Some(fake_code(at - Duration::seconds(30)))), at)
        .events();
    assert!(matches!(
        earlier.as_slice(),
        [AccountEvent::LoginFailed(f)] if f.reason == LoginFailure::CodeReplayed
    ));
    let wrong = given(history.clone())
        .when_at(login_with(Some(fake_code(at + minutes(10)))), at)
        .events();
    assert!(matches!(
        wrong.as_slice(),
        [AccountEvent::LoginFailed(f)] if f.reason == LoginFailure::WrongCode
    ));
    // The next step's code is fine.
    let next = at + Duration::seconds(30);
    assert!(given(history)
        .when_at(login_with(Some(fake_code(next))), next)
        .events()
        .iter()
        .any(|e| matches!(e, AccountEvent::SessionStarted(_))));
}

#[test]
fn a_wrong_password_with_two_step_on_is_a_wrong_password_first() {
    let mut cmd = login_with(Some(fake_code(now())));
    if let AccountCommand::Login(l) = &mut cmd {
        l.password = secret("not it");
    }
    let events = given(with_two_factor()).when(cmd).events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::LoginFailed(f)] if f.reason == LoginFailure::WrongPassword
    ));
}

#[test]
fn turning_two_step_off_needs_a_current_code_and_a_recovery_never_does_it_rc_6() {
    let history = with_two_factor();
    let at = now() + minutes(2);
    let off = |code: String| {
        AccountCommand::DisableTwoFactor(DisableTwoFactor {
            session_id: SESSION,
            code: Secret::new(code),
            client_ip: None,
        })
    };
    let wrong = given(history.clone())
        .when_at(off("123456".into()), at)
        .events();
    assert!(matches!(wrong.as_slice(), [AccountEvent::TotpRejected(_)]));
    let events = given(history.clone())
        .when_at(off(fake_code(at)), at)
        .events();
    assert!(matches!(
        events.as_slice(),
        [
            AccountEvent::TotpAccepted(_),
            AccountEvent::TwoFactorDisabled(_)
        ]
    ));
    // RC-6: a recovery never turns it off: the next login still needs the code.
    let recovery_id = Uuid::from_u128(0x2ec0);
    let linked = then(
        history,
        vec![AccountEvent::RecoveryLinkIssued(RecoveryLinkIssued {
            recovery_id,
            to: "a@b.it".into(),
            token_hash: token(5),
            expires_at: at + Duration::hours(24),
            sealed_token: sealed("link"),
        })],
    );
    let recovered = given(linked.clone())
        .when_at(
            AccountCommand::CompleteRecovery(CompleteRecovery {
                token_hash: token(5),
                new_password: secret(NEW_PASSWORD),
                new_password_repeat: secret(NEW_PASSWORD),
            }),
            at,
        )
        .events();
    assert!(recovered
        .iter()
        .any(|e| matches!(e, AccountEvent::PasswordRecovered(_))));
    assert!(!recovered
        .iter()
        .any(|e| matches!(e, AccountEvent::TwoFactorDisabled(_))));
    let mut login = login_with(None);
    if let AccountCommand::Login(l) = &mut login {
        l.password = secret(NEW_PASSWORD);
    }
    assert_eq!(
        given(then(linked, recovered)).when_at(login, at).error(),
        AccountError::SecondFactorRequired {
            channel: TwoFactorChannel::App
        }
    );
}

#[test]
fn the_sms_channel_sends_a_code_to_confirm_and_one_at_each_login_ap_8() {
    let mut history = opened_mailbox();
    if let Some(AccountEvent::AccountOpened(o)) = history.first_mut() {
        o.contact_mobile = Some("+393331234567".into());
    }
    history.push(AccountEvent::PasswordChanged(PasswordChanged {
        password_hash: FakeHasher.hash(&secret(CHOSEN)),
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
    let drawn = |n: u128| DrawnCode {
        challenge_id: Uuid::from_u128(0xc0de + n),
        code: secret("424242"),
        sealed_code: sealed("code"),
    };
    let start = AccountCommand::StartTwoFactor(StartTwoFactor {
        session_id: SESSION,
        channel: TwoFactorChannel::Sms,
        sealed_secret: None,
        sms: Some(drawn(1)),
    });
    let events = given(history.clone()).when(start).events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::TwoFactorEnrollmentStarted(_), AccountEvent::OtpChallengeIssued(c)]
            if c.purpose == OtpPurpose::TwoFactorOn && c.to == "+393331234567"
    ));
    let history = then(history, events);
    let events = given(history.clone())
        .when(confirm("424242".into()))
        .events();
    assert!(matches!(
        events.last(),
        Some(AccountEvent::TwoFactorEnabled(e)) if e.channel == TwoFactorChannel::Sms
    ));
    let history = then(history, events);
    // The code that turns the SMS channel off goes out with a fresh session; none goes out for
    // the authenticator app's channel, nor while two-step is off.
    let off = |n: u128| {
        AccountCommand::RequestOtp(RequestOtp {
            session_id: SESSION,
            purpose: OtpPurpose::TwoFactorOff,
            code: drawn(n),
        })
    };
    assert!(given(history.clone())
        .when(off(10))
        .events()
        .iter()
        .any(|e| matches!(e, AccountEvent::OtpChallengeIssued(c) if c.purpose == OtpPurpose::TwoFactorOff)));
    assert_eq!(
        given(history.clone())
            .when_at(off(11), now() + minutes(11))
            .error(),
        AccountError::ReauthenticationRequired
    );
    assert_eq!(
        given(with_two_factor()).when(off(12)).violated_rules(),
        ["AP-8.purpose"]
    );
    assert_eq!(
        given(ready()).when(off(13)).error(),
        AccountError::TwoFactorNotOn
    );
    let mut login = login_with(None);
    if let AccountCommand::Login(l) = &mut login {
        l.sms = Some(drawn(2));
    }
    let events = given(history.clone()).when(login).events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::OtpChallengeIssued(c)] if c.purpose == OtpPurpose::Login
    ));
    let history = then(history, events);
    let login_sending = |n: u128| {
        let mut login = login_with(None);
        if let AccountCommand::Login(l) = &mut login {
            l.sms = Some(drawn(n));
        }
        login
    };
    // While the code sent works, another login sends no second SMS.
    assert_eq!(
        given(history.clone()).when(login_sending(3)).error(),
        AccountError::SecondFactorRequired {
            channel: TwoFactorChannel::Sms
        }
    );
    // SEC-2: at most five login codes an hour (counted apart from the other codes), then
    // refused with when the next is possible.
    let mut busy = history.clone();
    for n in 1..5 {
        let at = now() + minutes(6 * n as i64);
        busy = then(
            busy.clone(),
            given(busy).when_at(login_sending(3 + n), at).events(),
        );
    }
    assert!(matches!(
        given(busy).when_at(login_sending(9), now() + minutes(30)).error(),
        AccountError::MessageLimit { seconds, .. } if seconds > 0
    ));
    // A wrong code is a failed login too (SEC-6), besides an attempt at the challenge.
    let events = given(history)
        .when(login_with(Some("000000".into())))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::OtpCheckFailed(_), AccountEvent::LoginFailed(f)] if f.reason == LoginFailure::WrongCode
    ));
}

#[test]
fn a_hardware_token_is_bound_with_a_current_code_ap_8() {
    let bind = |code: String| {
        AccountCommand::BindHardwareToken(BindHardwareToken {
            session_id: SESSION,
            serial: "TK-0001".into(),
            sealed_seed: sealed("seed"),
            code: Secret::new(code),
            client_ip: None,
        })
    };
    assert!(matches!(
        given(ready())
            .when(bind("999999".into()))
            .events()
            .as_slice(),
        [AccountEvent::TotpRejected(_)]
    ));
    let events = given(ready()).when(bind(fake_code(now()))).events();
    assert!(matches!(
        events.last(),
        Some(AccountEvent::TwoFactorEnabled(e))
            if e.channel == TwoFactorChannel::HardwareToken && e.serial.as_deref() == Some("TK-0001")
    ));
}

fn generate(scope: &str, replace: bool) -> AccountCommand {
    AccountCommand::GenerateAppPassword(GenerateAppPassword {
        session_id: SESSION,
        scope: scope.into(),
        password_hmac: "ab".repeat(32),
        replace,
        collaborator: None,
    })
}

fn scoped(scope: &str) -> ScopeCommand {
    ScopeCommand {
        session_id: SESSION,
        scope: scope.into(),
    }
}

#[test]
fn an_app_password_needs_two_step_and_a_mail_protocol_ap_1() {
    assert_eq!(
        given(ready()).when(generate("mailbox", false)).error(),
        AccountError::TwoFactorRequired
    );
    let off = AccountEvent::MailProtocolsSet(MailProtocolsSet {
        imap: false,
        pop: false,
        smtp: false,
    });
    assert_eq!(
        given(then(with_two_factor(), vec![off]))
            .when(generate("mailbox", false))
            .error(),
        AccountError::MailProtocolsOff
    );
}

#[test]
fn scopes_are_the_mailbox_its_archive_on_pro_and_its_collaborators_ap_2() {
    let history = with_two_factor();
    assert_eq!(
        given(history.clone())
            .when(generate("everything", false))
            .violated_rules(),
        vec!["AP-2.scope"]
    );
    // open_mailbox() is a pro mailbox: it has an archive.
    assert!(
        given(history.clone())
            .when(generate("archive", false))
            .events()
            .len()
            == 1
    );
    let mut standard = history.clone();
    if let Some(AccountEvent::AccountOpened(o)) = standard.first_mut() {
        o.plan = Some(Plan::Standard);
    }
    assert_eq!(
        given(standard)
            .when(generate("archive", false))
            .violated_rules(),
        vec!["AP-2.scope"]
    );
    let collaborator = |mail_programs: bool, owner: Uuid| {
        AccountCommand::GenerateAppPassword(GenerateAppPassword {
            session_id: SESSION,
            scope: format!("collaborator:{COLLABORATOR}"),
            password_hmac: "ab".repeat(32),
            replace: false,
            collaborator: Some(CollaboratorRef {
                account_id: COLLABORATOR,
                owner_id: Some(owner),
                status: Some(AccountStatus::Active),
                mail_programs,
            }),
        })
    };
    assert_eq!(
        given(history.clone())
            .when(collaborator(false, OWNER))
            .violated_rules(),
        vec!["AP-2.scope"]
    );
    assert_eq!(
        given(history.clone())
            .when(collaborator(true, Uuid::from_u128(77)))
            .violated_rules(),
        vec!["AP-2.scope"]
    );
    assert_eq!(
        given(history)
            .when(collaborator(true, OWNER))
            .events()
            .len(),
        1
    );
}

#[test]
fn one_live_password_per_scope_valid_three_calendar_months_ap_3_ap_5() {
    let history = with_two_factor();
    let events = given(history.clone())
        .when(generate("mailbox", false))
        .events();
    let Some(AccountEvent::AppPasswordIssued(issued)) = events.first() else {
        panic!("{events:?}")
    };
    assert_eq!(
        issued.expires_at,
        Utc.with_ymd_and_hms(2026, 4, 10, 9, 0, 0).unwrap()
    );
    assert!(!issued.replaced);
    let history = then(history, events);
    assert_eq!(
        given(history.clone())
            .when(generate("mailbox", false))
            .error(),
        AccountError::AppPasswordExists
    );
    let events = given(history.clone())
        .when(generate("mailbox", true))
        .events();
    assert!(matches!(events.as_slice(), [AccountEvent::AppPasswordIssued(i)] if i.replaced));
    // Once expired, a new one may be generated; a regeneration then has nothing to replace.
    let later = now() + Duration::days(120);
    assert_eq!(
        given(relogged(&history, later))
            .when_at(generate("mailbox", true), later)
            .error(),
        AccountError::NoAppPassword
    );
}

#[test]
fn postponing_opens_in_the_last_fourteen_days_and_adds_three_months_ap_4() {
    let history = with_two_factor();
    let history = then(
        history.clone(),
        given(history).when(generate("mailbox", false)).events(),
    );
    let expiry = Utc.with_ymd_and_hms(2026, 4, 10, 9, 0, 0).unwrap();
    let postpone = AccountCommand::PostponeAppPassword(scoped("mailbox"));
    // Fresh sessions: a login just before each attempt.
    let at = expiry - Duration::days(15);
    let relogin = |at| relogged(&history, at);
    assert_eq!(
        given(relogin(at)).when_at(postpone.clone(), at).error(),
        AccountError::PostponeTooEarly {
            from: expiry - Duration::days(14)
        }
    );
    let at = expiry - Duration::days(14);
    let events = given(relogin(at)).when_at(postpone.clone(), at).events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::AppPasswordPostponed(p)]
            if p.previous_expiry == expiry && p.expires_at == Utc.with_ymd_and_hms(2026, 7, 10, 9, 0, 0).unwrap()
    ));
    // Once expired, it is generated anew, not postponed.
    assert_eq!(
        given(relogin(expiry)).when_at(postpone, expiry).error(),
        AccountError::AppPasswordExpired
    );
}

#[test]
fn expiry_notices_are_given_once_and_never_for_an_expiry_that_no_longer_stands_ap_6() {
    let history = with_two_factor();
    let history = then(
        history.clone(),
        given(history).when(generate("mailbox", false)).events(),
    );
    let expiry = Utc.with_ymd_and_hms(2026, 4, 10, 9, 0, 0).unwrap();
    let note = |expires_at, days_before| {
        AccountCommand::NoteAppPasswordExpiry(NoteAppPasswordExpiry {
            scope: "mailbox".into(),
            expires_at,
            days_before,
        })
    };
    let events = given(history.clone()).when(note(expiry, 14)).events();
    assert!(
        matches!(
        events.as_slice(),
        [AccountEvent::AppPasswordExpiryNoticed(n)] if n.days_before == 14
        ),
        "{events:?} {:?}",
        given(history.clone()).state.app_passwords
    );
    let noticed = then(history.clone(), events);
    assert!(given(noticed).when(note(expiry, 14)).events().is_empty());
    // After a deactivation, or for an expiry a postpone moved, nothing.
    let deactivated = then(
        history.clone(),
        given(history.clone())
            .when(AccountCommand::DeactivateAppPassword(scoped("mailbox")))
            .events(),
    );
    assert!(given(deactivated).when(note(expiry, 3)).events().is_empty());
    let postponed = then(
        history.clone(),
        vec![AccountEvent::AppPasswordPostponed(AppPasswordPostponed {
            scope: "mailbox".into(),
            previous_expiry: expiry,
            expires_at: expiry + Duration::days(92),
        })],
    );
    assert!(given(postponed).when(note(expiry, 1)).events().is_empty());
}

#[test]
fn mail_protocols_belong_to_mailboxes_and_an_unchanged_set_records_nothing_acc_5() {
    let set = |imap| {
        AccountCommand::SetMailProtocols(SetMailProtocols {
            session_id: SESSION,
            imap,
            pop: true,
            smtp: true,
        })
    };
    assert!(given(ready()).when(set(true)).events().is_empty());
    assert!(matches!(
        given(ready()).when(set(false)).events().as_slice(),
        [AccountEvent::MailProtocolsSet(p)] if !p.imap && p.pop
    ));
    // Off from a stale session; on again only from a fresh one (SEC-3).
    let later = now() + minutes(30);
    let off = then(ready(), given(ready()).when_at(set(false), later).events());
    assert_eq!(
        given(off).when_at(set(true), later).error(),
        AccountError::ReauthenticationRequired
    );
}

fn open_collaborator() -> OpenAccount {
    OpenAccount {
        account_id: COLLABORATOR,
        kind: AccountKind::Collaborator,
        user_id: "anna-1a2b.mario.rossi@pec.example.it".into(),
        plan: None,
        owner: Some(OwnerRef {
            account_id: OWNER,
            kind: Some(AccountKind::Mailbox),
        }),
        name: Some("Anna".into()),
        fiscal_code: None,
        contact_email: Some("anna@example.it".into()),
        contact_mobile: None,
        language: Language::It,
        password: InitialPassword::Link {
            token_hash: token(1),
            sealed: sealed("link"),
        },
        permissions: vec![Permission::MailPrograms],
        identity_expires_on: None,
    }
}

fn collaborator_opened() -> Vec<AccountEvent> {
    given([])
        .when(AccountCommand::Open(open_collaborator()))
        .events()
}

fn set_password(n: u8) -> AccountCommand {
    set_password_to(n, NEW_PASSWORD)
}

fn set_password_to(n: u8, password: &str) -> AccountCommand {
    AccountCommand::SetCollaboratorPassword(SetCollaboratorPassword {
        token_hash: token(n),
        new_password: secret(password),
        new_password_repeat: secret(password),
    })
}

fn link(n: u8, owner: Uuid) -> CollaboratorLink {
    CollaboratorLink {
        owner_id: owner,
        token_hash: token(n),
        sealed_token: sealed("link"),
    }
}

#[test]
fn a_collaborator_starts_suspended_with_a_link_to_its_first_password_co_1() {
    let events = collaborator_opened();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::AccountOpened(o), AccountEvent::CollaboratorLinkIssued(l)]
            if o.permissions == vec![Permission::MailPrograms]
                && l.reason == LinkReason::Created && l.to == "anna@example.it"
                && l.expires_at == now() + Duration::hours(24)
    ));
    let state = given(events.clone()).state;
    assert_eq!(state.status, AccountStatus::Suspended);
    assert!(state.required_actions().is_empty());
    let events = given(events).when(set_password(1)).events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::CollaboratorPasswordSet(s)] if !s.after_reset
    ));
}

#[test]
fn a_collaborators_name_holds_no_hidden_characters() {
    for name in ["\u{202E}gnp.exe", "Anna\u{0}", "   "] {
        let mut open = open_collaborator();
        open.name = Some(name.into());
        assert_eq!(
            given([]).when(AccountCommand::Open(open)).violated_rules(),
            vec!["ACC-1.name"],
            "{name:?}"
        );
    }
}

#[test]
fn the_link_works_once_and_for_24_hours_co_2() {
    let history = collaborator_opened();
    assert_eq!(
        given(history.clone())
            .when_at(set_password(1), now() + Duration::hours(24))
            .error(),
        AccountError::TokenExpired
    );
    let used = then(
        history.clone(),
        given(history).when(set_password(1)).events(),
    );
    assert_eq!(
        given(used).when(set_password(1)).error(),
        AccountError::TokenUsed
    );
}

fn active_collaborator() -> Vec<AccountEvent> {
    let history = collaborator_opened();
    then(
        history.clone(),
        given(history).when(set_password(1)).events(),
    )
}

fn collaborator_login() -> AccountCommand {
    AccountCommand::Login(Login {
        session_id: OTHER_SESSION,
        token_hash: token(9),
        password: secret(NEW_PASSWORD),
        client_ip: None,
        channel: AccessChannel::Api,
        otp: None,
        sms: None,
    })
}

#[test]
fn a_reset_stops_the_old_password_at_once_and_suspends_until_a_new_one_co_2() {
    let history = active_collaborator();
    let history = then(
        history.clone(),
        given(history).when(collaborator_login()).events(),
    );
    let events = given(history.clone())
        .when(AccountCommand::ResetCollaborator(link(2, OWNER)))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::CollaboratorReset(_), AccountEvent::SessionsEnded(s), AccountEvent::CollaboratorLinkIssued(l)]
            if s.reason == SessionEndReason::CollaboratorReset && l.reason == LinkReason::Reset
    ));
    let history = then(history, events);
    assert_eq!(
        given(history.clone()).when(collaborator_login()).error(),
        AccountError::NotActive {
            status: AccountStatus::Suspended,
            until: None,
            awaiting_password: true
        }
    );
    // PW-2: not the old one again.
    assert_eq!(
        given(history.clone())
            .when(set_password(2))
            .violated_rules(),
        vec!["PW-2.history"]
    );
    // CO-5: the new password reactivates, and a collaborator on mail programs is told.
    let events = given(history.clone())
        .when(set_password_to(2, "Altra!Strada-Rossa7"))
        .events();
    assert!(matches!(
        events.as_slice(),
        [AccountEvent::CollaboratorPasswordSet(s)] if s.after_reset
    ));
    let history = then(history, events);
    let mut login = collaborator_login();
    if let AccountCommand::Login(l) = &mut login {
        l.password = secret("Altra!Strada-Rossa7");
    }
    assert!(given(history)
        .when(login)
        .events()
        .iter()
        .any(|e| matches!(e, AccountEvent::SessionStarted(_))));
}

#[test]
fn only_the_owning_holder_acts_on_a_collaborator_co_5() {
    let other = Uuid::from_u128(0xbad);
    let history = active_collaborator();
    assert_eq!(
        given(history.clone())
            .when(AccountCommand::ResetCollaborator(link(2, other)))
            .error(),
        AccountError::NotOwner
    );
    assert_eq!(
        given(history)
            .when(AccountCommand::DeactivateCollaborator(OwnerAct {
                owner_id: other
            }))
            .error(),
        AccountError::NotOwner
    );
}

#[test]
fn resending_the_link_invalidates_the_earlier_one_co_3() {
    let history = collaborator_opened();
    assert_eq!(
        given(active_collaborator())
            .when(AccountCommand::ResendCollaboratorLink(link(2, OWNER)))
            .error(),
        AccountError::NothingToResend
    );
    let history = then(
        history.clone(),
        given(history)
            .when(AccountCommand::ResendCollaboratorLink(link(2, OWNER)))
            .events(),
    );
    assert_eq!(
        given(history.clone()).when(set_password(1)).error(),
        AccountError::TokenSuperseded
    );
    assert_eq!(
        given(history.clone()).when(set_password(2)).events().len(),
        1
    );
    // SEC-2: no more links an hour than a recovery sends (five, the first included).
    let mut busy = history;
    for n in 3..6 {
        busy = then(
            busy.clone(),
            given(busy)
                .when(AccountCommand::ResendCollaboratorLink(link(n, OWNER)))
                .events(),
        );
    }
    assert!(matches!(
        given(busy)
            .when(AccountCommand::ResendCollaboratorLink(link(7, OWNER)))
            .error(),
        AccountError::MessageLimit { .. }
    ));
}

#[test]
fn deactivation_is_final_co_4_acc_4() {
    let history = active_collaborator();
    let events = given(history.clone())
        .when(AccountCommand::DeactivateCollaborator(OwnerAct {
            owner_id: OWNER,
        }))
        .events();
    let history = then(history, events);
    assert_eq!(
        given(history.clone()).when(collaborator_login()).error(),
        AccountError::NotActive {
            status: AccountStatus::Deactivated,
            until: None,
            awaiting_password: false
        }
    );
    assert_eq!(
        given(history.clone())
            .when(AccountCommand::ResetCollaborator(link(3, OWNER)))
            .error(),
        AccountError::Deactivated
    );
    assert_eq!(
        given(history.clone()).when(set_password(1)).error(),
        AccountError::TokenInvalid
    );
    // Neither an operator's revocation nor an operator's reset moves it (ACC-4).
    let closed = AccountError::Closed {
        status: AccountStatus::Deactivated,
    };
    assert_eq!(
        given(history.clone())
            .when(AccountCommand::Revoke(Revoke {
                request_reference: "REV-1".into(),
            }))
            .error(),
        closed
    );
    assert_eq!(
        given(history)
            .when(AccountCommand::OperatorReset(OperatorReset {
                form_reference: "F-9".into(),
                password: Secret::new(TEMPORARY),
            }))
            .error(),
        closed
    );
}
