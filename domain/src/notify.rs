//! The notification policy (NT-2, NT-4): which account events become notices, to whom, from
//! which template and in which language. Pure: the workers feed it each event and the contacts
//! they have folded from earlier ones ([`Contacts::evolve`]), and deliver what it returns.

use crate::account::{
    collaborator_link_context, otp_context, recovery_link_context, temporary_password_context,
    AccountOpened, AccountRevoked, AccountSuspended, AppPasswordExpiryNoticed, AppPasswordIssued,
    ChecksLockedOut, CollaboratorLinkIssued, CollaboratorPasswordSet, Language, LanguageChanged,
    LinkReason, LoginLockedOut, OtpChallengeIssued, PasswordChanged, PasswordRecovered,
    RecoveryInfoSet, RecoveryLinkIssued, SecurityQuestionLocked, TemporaryPasswordIssued,
    TemporaryPasswordReason, TwoFactorDisabled, TwoFactorEnabled,
};
use crate::account::{
    ContactEmailChanged, ContactMobileChanged, DocumentExpiryNoticed, InactivityWarned,
    PasswordExpiryNoticed, RevokedForInactivity,
};
use crate::notice::Channel;
use crate::secret::Sealed;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Every template, each rendered in Italian and English by the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// ACC-2: the temporary password at opening.
    TemporaryCredentials,
    /// NT-4: the password changed or was recovered.
    PasswordChanged,
    /// NT-4: a recovery method changed.
    RecoveryInfoChanged,
    /// RC-6, NT-4: the password was recovered.
    PasswordRecovered,
    /// SEC-6, NT-4: the security question locked.
    LockoutStarted,
    /// SEC-6, NT-4: logins locked after wrong passwords in a row.
    LoginLocked,
    /// SEC-2, NT-4: code and answer checks locked after wrong ones in a row.
    ChecksLocked,
    /// RC-2: the recovery link.
    RecoveryLink,
    /// RC-3, SC: a one-time code.
    OneTimeCode,
    /// CO-2: the link to a collaborator's first password.
    CollaboratorLink,
    /// AP-6: an app password expires soon, or has expired.
    AppPasswordExpiry,
    /// SC-6: the account is suspended.
    Suspension,
    /// SC-2: the identity document expires soon.
    DocumentExpiry,
    /// CO-2: the holder reset the collaborator's password: the link to a new one.
    CollaboratorReset,
    /// CO-5: after a reset, update the password on every mail program.
    CollaboratorUpdateDevices,
    /// NT-4: two-step verification turned on.
    TwoFactorOn,
    /// NT-4: two-step verification turned off.
    TwoFactorOff,
    /// NT-4: a password for mail programs was generated.
    AppPasswordIssued,
    /// SC-6: an operator revoked the account.
    Revoked,
    /// PW-6: the password expires soon.
    PasswordExpiry,
    /// SC-8: the unused identity will be revoked unless used.
    InactivityWarning,
    /// SC-8: the unused identity was revoked.
    RevokedForInactivity,
    /// SC-3: the contact email or mobile changed.
    ContactChanged,
}

pub const TEMPLATES: &[Template] = &[
    Template::TemporaryCredentials,
    Template::PasswordChanged,
    Template::RecoveryInfoChanged,
    Template::PasswordRecovered,
    Template::LockoutStarted,
    Template::LoginLocked,
    Template::ChecksLocked,
    Template::RecoveryLink,
    Template::OneTimeCode,
    Template::CollaboratorLink,
    Template::AppPasswordExpiry,
    Template::Suspension,
    Template::DocumentExpiry,
    Template::CollaboratorReset,
    Template::CollaboratorUpdateDevices,
    Template::TwoFactorOn,
    Template::TwoFactorOff,
    Template::AppPasswordIssued,
    Template::Revoked,
    Template::PasswordExpiry,
    Template::InactivityWarning,
    Template::RevokedForInactivity,
    Template::ContactChanged,
];

impl Template {
    pub fn as_str(self) -> &'static str {
        match self {
            Template::TemporaryCredentials => "temporary_credentials",
            Template::PasswordChanged => "password_changed",
            Template::RecoveryInfoChanged => "recovery_info_changed",
            Template::PasswordRecovered => "password_recovered",
            Template::LockoutStarted => "lockout_started",
            Template::LoginLocked => "login_locked",
            Template::ChecksLocked => "checks_locked",
            Template::RecoveryLink => "recovery_link",
            Template::OneTimeCode => "one_time_code",
            Template::CollaboratorLink => "collaborator_link",
            Template::AppPasswordExpiry => "app_password_expiry",
            Template::Suspension => "suspension",
            Template::DocumentExpiry => "document_expiry",
            Template::CollaboratorReset => "collaborator_reset",
            Template::CollaboratorUpdateDevices => "collaborator_update_devices",
            Template::TwoFactorOn => "two_factor_on",
            Template::TwoFactorOff => "two_factor_off",
            Template::AppPasswordIssued => "app_password_issued",
            Template::Revoked => "revoked",
            Template::PasswordExpiry => "password_expiry",
            Template::InactivityWarning => "inactivity_warning",
            Template::RevokedForInactivity => "revoked_for_inactivity",
            Template::ContactChanged => "contact_changed",
        }
    }
}

/// What a worker knows of an account's addresses, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contacts {
    pub user_id: String,
    pub language: Language,
    pub contact_email: Option<String>,
    pub contact_mobile: Option<String>,
    pub recovery_email: Option<String>,
    /// CO-5: a collaborator allowed to use mail programs.
    #[serde(default)]
    pub mail_programs: bool,
}

crate::event_group! {
    /// The events a worker learns an account's addresses from.
    pub enum ContactEvent {
        AccountOpened,
        RecoveryInfoSet,
        LanguageChanged,
        ContactEmailChanged,
        ContactMobileChanged,
    }
}

crate::event_group! {
    /// The events that call for a notice (NT-4, ACC-2, RC-2, RC-3, SEC-6).
    pub enum NotifyEvent {
        TemporaryPasswordIssued,
        PasswordChanged,
        RecoveryLinkIssued,
        OtpChallengeIssued,
        PasswordRecovered,
        SecurityQuestionLocked,
        LoginLockedOut,
        ChecksLockedOut,
        RecoveryInfoSet,
        TwoFactorEnabled,
        TwoFactorDisabled,
        AppPasswordIssued,
        AppPasswordExpiryNoticed,
        CollaboratorLinkIssued,
        CollaboratorPasswordSet,
        AccountSuspended,
        AccountRevoked,
        DocumentExpiryNoticed,
        PasswordExpiryNoticed,
        InactivityWarned,
        RevokedForInactivity,
        ContactEmailChanged,
        ContactMobileChanged,
    }
}

impl Contacts {
    /// The contacts after `event` (`None` before the account is opened).
    pub fn evolve(current: Option<Contacts>, event: &ContactEvent) -> Option<Contacts> {
        match event {
            ContactEvent::AccountOpened(e) => Some(Contacts {
                user_id: e.user_id.clone(),
                language: e.language,
                contact_email: e.contact_email.clone(),
                contact_mobile: e.contact_mobile.clone(),
                recovery_email: None,
                mail_programs: e
                    .permissions
                    .contains(&crate::account::Permission::MailPrograms),
            }),
            ContactEvent::RecoveryInfoSet(e) => current.map(|c| Contacts {
                recovery_email: e.email.clone(),
                ..c
            }),
            // SC-7: every later notice follows the holder's language.
            ContactEvent::LanguageChanged(e) => current.map(|c| Contacts {
                language: e.language,
                ..c
            }),
            // SC-3: later notices go to the new contact.
            ContactEvent::ContactEmailChanged(e) => current.map(|c| Contacts {
                contact_email: Some(e.email.clone()),
                ..c
            }),
            ContactEvent::ContactMobileChanged(e) => current.map(|c| Contacts {
                contact_mobile: Some(e.mobile.clone()),
                ..c
            }),
        }
    }
}

/// A secret the notice carries, still sealed, and the context it was sealed under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedValue {
    pub sealed: Sealed,
    pub context: String,
}

/// One message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub channel: Channel,
    /// An email address, or a mobile number in E.164.
    pub to: String,
    pub template: Template,
    pub language: Language,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SealedValue>,
    /// A one-time code's purpose, so its text says what the code is for (a code that does not
    /// say what it authorises is easy to talk out of its holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<crate::otp::OtpPurpose>,
}

/// The notices `event` of `account_id` calls for, given the contacts before it. An account
/// with nowhere to write gets none (its operator saw the temporary password in the answer).
pub fn notices_for(
    account_id: Uuid,
    event: &NotifyEvent,
    before: Option<&Contacts>,
) -> Vec<Notice> {
    let after = match event {
        NotifyEvent::RecoveryInfoSet(e) => before.map(|c| Contacts {
            recovery_email: e.email.clone(),
            ..c.clone()
        }),
        _ => before.cloned(),
    };
    let Some(contacts) = after.as_ref() else {
        return Vec::new();
    };
    let mail = |to: &String, template, secret| Notice {
        channel: Channel::Email,
        to: to.clone(),
        template,
        language: contacts.language,
        user_id: contacts.user_id.clone(),
        secret,
        purpose: None,
    };
    let to_contact_email = |template| {
        contacts
            .contact_email
            .iter()
            .map(|to| mail(to, template, None))
            .collect::<Vec<_>>()
    };
    // SEC-6, SEC-8: a lockout is told to the holder by mail, or by SMS to the contact mobile,
    // or to the recovery address: an account with any contact hears of it (and the log records
    // the notice, as a decoy records its mirror).
    let to_holder = |template| match (
        &contacts.contact_email,
        &contacts.contact_mobile,
        &contacts.recovery_email,
    ) {
        (Some(email), _, _) => vec![mail(email, template, None)],
        (None, Some(mobile), _) => vec![Notice {
            channel: Channel::Sms,
            ..mail(mobile, template, None)
        }],
        (None, None, Some(recovery)) => vec![mail(recovery, template, None)],
        (None, None, None) => Vec::new(),
    };
    match event {
        NotifyEvent::TemporaryPasswordIssued(e) => match e.reason {
            TemporaryPasswordReason::Opening => {
                let Some(sealed) = &e.sealed_password else {
                    return Vec::new();
                };
                let secret = Some(SealedValue {
                    sealed: sealed.clone(),
                    context: temporary_password_context(account_id),
                });
                match (&contacts.contact_email, &contacts.contact_mobile) {
                    (Some(email), _) => {
                        vec![mail(email, Template::TemporaryCredentials, secret)]
                    }
                    (None, Some(mobile)) => vec![Notice {
                        channel: Channel::Sms,
                        ..mail(mobile, Template::TemporaryCredentials, secret)
                    }],
                    (None, None) => Vec::new(),
                }
            }
            // RC-7: the holder hears of an operator's reset; the password goes through the
            // operator.
            TemporaryPasswordReason::OperatorReset => to_contact_email(Template::PasswordChanged),
        },
        NotifyEvent::PasswordChanged(_) => to_contact_email(Template::PasswordChanged),
        NotifyEvent::RecoveryLinkIssued(e) => vec![mail(
            &e.to,
            Template::RecoveryLink,
            Some(SealedValue {
                sealed: e.sealed_token.clone(),
                context: recovery_link_context(account_id, e.recovery_id),
            }),
        )],
        NotifyEvent::OtpChallengeIssued(e) => vec![Notice {
            channel: e.channel,
            purpose: Some(e.purpose),
            ..mail(
                &e.to,
                Template::OneTimeCode,
                Some(SealedValue {
                    sealed: e.sealed_code.clone(),
                    context: otp_context(account_id, e.challenge_id),
                }),
            )
        }],
        NotifyEvent::PasswordRecovered(_) => to_contact_email(Template::PasswordRecovered),
        NotifyEvent::SecurityQuestionLocked(_) => to_holder(Template::LockoutStarted),
        NotifyEvent::LoginLockedOut(_) => to_holder(Template::LoginLocked),
        NotifyEvent::ChecksLockedOut(_) => to_holder(Template::ChecksLocked),
        NotifyEvent::RecoveryInfoSet(_) => {
            // NT-4: to the contact email, and to the old recovery address when it changed.
            let mut notices = to_contact_email(Template::RecoveryInfoChanged);
            let old = before.and_then(|b| b.recovery_email.as_ref());
            if let Some(old) = old {
                let changed = contacts.recovery_email.as_ref() != Some(old);
                if changed && contacts.contact_email.as_ref() != Some(old) {
                    notices.push(mail(old, Template::RecoveryInfoChanged, None));
                }
            }
            notices
        }
        NotifyEvent::TwoFactorEnabled(_) => to_contact_email(Template::TwoFactorOn),
        NotifyEvent::TwoFactorDisabled(_) => to_contact_email(Template::TwoFactorOff),
        NotifyEvent::AppPasswordIssued(_) => to_contact_email(Template::AppPasswordIssued),
        NotifyEvent::AppPasswordExpiryNoticed(_) => to_contact_email(Template::AppPasswordExpiry),
        NotifyEvent::AccountSuspended(_) => to_contact_email(Template::Suspension),
        NotifyEvent::AccountRevoked(_) => to_contact_email(Template::Revoked),
        NotifyEvent::DocumentExpiryNoticed(_) => to_contact_email(Template::DocumentExpiry),
        NotifyEvent::PasswordExpiryNoticed(_) => to_contact_email(Template::PasswordExpiry),
        NotifyEvent::InactivityWarned(_) => to_contact_email(Template::InactivityWarning),
        NotifyEvent::RevokedForInactivity(_) => to_contact_email(Template::RevokedForInactivity),
        // SC-3: the old address hears that it no longer receives the notices, and the new
        // one that it does.
        NotifyEvent::ContactEmailChanged(e) => {
            let mut notices = to_contact_email(Template::ContactChanged);
            if contacts.contact_email.as_ref() != Some(&e.email) {
                notices.push(mail(&e.email, Template::ContactChanged, None));
            }
            notices
        }
        NotifyEvent::ContactMobileChanged(_) => to_contact_email(Template::ContactChanged),
        NotifyEvent::CollaboratorLinkIssued(e) => vec![mail(
            &e.to,
            match e.reason {
                LinkReason::Created | LinkReason::Resent => Template::CollaboratorLink,
                LinkReason::Reset => Template::CollaboratorReset,
            },
            Some(SealedValue {
                sealed: e.sealed_token.clone(),
                context: collaborator_link_context(account_id, &e.token_hash),
            }),
        )],
        NotifyEvent::CollaboratorPasswordSet(e) => {
            if e.after_reset && contacts.mail_programs {
                to_contact_email(Template::CollaboratorUpdateDevices)
            } else {
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{
        AccountEvent, AccountKind, AccountOpened, PasswordChanged, RecoveryInfoSet,
        TemporaryPasswordIssued,
    };
    use crate::envelope::EventGroup;
    use crate::secret::PasswordHash;

    const ACCOUNT: Uuid = Uuid::from_u128(1);

    fn opened(email: Option<&str>, mobile: Option<&str>, language: Language) -> AccountEvent {
        AccountEvent::AccountOpened(AccountOpened {
            account_id: ACCOUNT,
            kind: AccountKind::Mailbox,
            user_id: "mario.rossi@pec.example.it".into(),
            plan: None,
            owner_id: None,
            name: None,
            fiscal_code: None,
            contact_email: email.map(Into::into),
            contact_mobile: mobile.map(Into::into),
            language,
            migrated: false,
            permissions: Vec::new(),
        })
    }

    fn sealed() -> Sealed {
        Sealed {
            key_id: "20261124".into(),
            nonce: "n".into(),
            ciphertext: "c".into(),
            ephemeral: None,
        }
    }

    fn temporary() -> AccountEvent {
        AccountEvent::TemporaryPasswordIssued(TemporaryPasswordIssued {
            password_hash: PasswordHash::new("$argon2id$h"),
            reason: TemporaryPasswordReason::Opening,
            form_reference: None,
            sealed_password: Some(sealed()),
        })
    }

    fn fold(events: &[AccountEvent]) -> Option<Contacts> {
        events
            .iter()
            .filter_map(ContactEvent::from_typed)
            .fold(None, |c, e| Contacts::evolve(c, &e))
    }

    /// What the policy makes of an account event that calls for a notice.
    fn policy(event: &AccountEvent, before: Option<&Contacts>) -> Vec<Notice> {
        let event = NotifyEvent::from_typed(event).expect("an event of the notify group");
        notices_for(ACCOUNT, &event, before)
    }

    fn recovery(email: Option<&str>) -> AccountEvent {
        AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
            email: email.map(Into::into),
            mobile: None,
            security_question: None,
            security_answer_hash: None,
        })
    }

    #[test]
    fn temporary_credentials_go_to_the_contact_email_in_the_holders_language() {
        let before = fold(&[opened(
            Some("mario@example.it"),
            Some("+393331234567"),
            Language::En,
        )]);
        let notices = policy(&temporary(), before.as_ref());
        assert_eq!(
            notices,
            vec![Notice {
                channel: Channel::Email,
                to: "mario@example.it".into(),
                template: Template::TemporaryCredentials,
                language: Language::En,
                user_id: "mario.rossi@pec.example.it".into(),
                secret: Some(SealedValue {
                    sealed: sealed(),
                    context: temporary_password_context(ACCOUNT),
                }),
                purpose: None,
            }]
        );
    }

    #[test]
    fn temporary_credentials_go_by_sms_when_there_is_no_email() {
        let before = fold(&[opened(None, Some("+393331234567"), Language::It)]);
        let notices = policy(&temporary(), before.as_ref());
        assert_eq!(notices.len(), 1);
        assert_eq!(notices.first().map(|n| n.channel), Some(Channel::Sms));
    }

    #[test]
    fn an_account_with_no_contact_gets_no_notice() {
        let before = fold(&[opened(None, None, Language::It)]);
        assert!(policy(&temporary(), before.as_ref()).is_empty());
    }

    #[test]
    fn a_password_change_is_a_security_notice_nt_4() {
        let before = fold(&[opened(Some("mario@example.it"), None, Language::It)]);
        let changed = AccountEvent::PasswordChanged(PasswordChanged {
            password_hash: PasswordHash::new("$argon2id$h2"),
        });
        let notices = policy(&changed, before.as_ref());
        assert_eq!(
            notices.iter().map(|n| n.template).collect::<Vec<_>>(),
            vec![Template::PasswordChanged]
        );
    }

    #[test]
    fn a_changed_recovery_email_is_told_to_the_old_address_as_well() {
        let before = fold(&[
            opened(Some("mario@example.it"), None, Language::It),
            recovery(Some("old@example.it")),
        ]);
        let notices = policy(&recovery(Some("new@example.it")), before.as_ref());
        let to: Vec<_> = notices.iter().map(|n| n.to.as_str()).collect();
        assert_eq!(to, vec!["mario@example.it", "old@example.it"]);
        let unchanged = policy(&recovery(Some("old@example.it")), before.as_ref());
        assert_eq!(unchanged.len(), 1);
    }

    #[test]
    fn a_recovery_link_is_mailed_sealed_to_its_address_rc_2() {
        use crate::account::RecoveryLinkIssued;
        let before = fold(&[opened(Some("mario@example.it"), None, Language::En)]);
        let recovery_id = Uuid::from_u128(7);
        let link = AccountEvent::RecoveryLinkIssued(RecoveryLinkIssued {
            recovery_id,
            to: "recupero@example.it".into(),
            token_hash: crate::secret::TokenHash::from_hex("ab".repeat(32)),
            expires_at: chrono::DateTime::UNIX_EPOCH,
            sealed_token: sealed(),
        });
        let notices = policy(&link, before.as_ref());
        assert_eq!(
            notices,
            vec![Notice {
                channel: Channel::Email,
                to: "recupero@example.it".into(),
                template: Template::RecoveryLink,
                language: Language::En,
                user_id: "mario.rossi@pec.example.it".into(),
                secret: Some(SealedValue {
                    sealed: sealed(),
                    context: recovery_link_context(ACCOUNT, recovery_id),
                }),
                purpose: None,
            }]
        );
    }

    #[test]
    fn a_one_time_code_goes_by_its_channel_to_its_target_rc_3() {
        use crate::account::OtpChallengeIssued;
        use crate::otp::OtpPurpose;
        let before = fold(&[opened(Some("mario@example.it"), None, Language::It)]);
        let challenge_id = Uuid::from_u128(9);
        let code = AccountEvent::OtpChallengeIssued(OtpChallengeIssued {
            challenge_id,
            purpose: OtpPurpose::Recovery,
            channel: Channel::Sms,
            to: "+393471234512".into(),
            code_hash: crate::secret::TokenHash::from_hex("cd".repeat(32)),
            expires_at: chrono::DateTime::UNIX_EPOCH,
            max_attempts: 5,
            recovery_id: Some(Uuid::from_u128(7)),
            sealed_code: sealed(),
        });
        let notices = policy(&code, before.as_ref());
        assert_eq!(notices.len(), 1);
        let notice = &notices[0];
        assert_eq!(
            (notice.channel, notice.to.as_str(), notice.template),
            (Channel::Sms, "+393471234512", Template::OneTimeCode)
        );
        assert_eq!(
            notice.secret.as_ref().map(|s| s.context.clone()),
            Some(otp_context(ACCOUNT, challenge_id))
        );
    }

    #[test]
    fn a_recovery_and_a_lockout_are_told_to_the_contact_address_nt_4() {
        use crate::account::{PasswordRecovered, SecurityQuestionLocked};
        use crate::recovery::RecoveryMethod;
        let before = fold(&[opened(Some("mario@example.it"), None, Language::It)]);
        let recovered = AccountEvent::PasswordRecovered(PasswordRecovered {
            recovery_id: Uuid::from_u128(7),
            method: RecoveryMethod::Sms,
            password_hash: PasswordHash::new("$argon2id$h3"),
        });
        let locked = AccountEvent::SecurityQuestionLocked(SecurityQuestionLocked {
            until: chrono::DateTime::UNIX_EPOCH,
        });
        let templates = |e: &AccountEvent| {
            policy(e, before.as_ref())
                .iter()
                .map(|n| (n.to.clone(), n.template))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            templates(&recovered),
            vec![("mario@example.it".to_string(), Template::PasswordRecovered)]
        );
        assert_eq!(
            templates(&locked),
            vec![("mario@example.it".to_string(), Template::LockoutStarted)]
        );
    }

    #[test]
    fn a_lockout_reaches_a_holder_without_a_contact_email_by_sms_sec_6() {
        use crate::account::LoginLockedOut;
        let before = fold(&[opened(None, Some("+393331234567"), Language::It)]);
        let locked = AccountEvent::LoginLockedOut(LoginLockedOut {
            until: chrono::DateTime::UNIX_EPOCH,
            failures: 10,
        });
        let notices = policy(&locked, before.as_ref());
        assert_eq!(
            notices
                .iter()
                .map(|n| (n.channel, n.to.as_str(), n.template))
                .collect::<Vec<_>>(),
            vec![(Channel::Sms, "+393331234567", Template::LoginLocked)]
        );
    }
}
