//! The forgotten-password flow (RC-1..7) on top of the account handler. A start appends
//! `RecoveryStarted` to a stream of its own whatever the user id (so a real and an unknown id
//! cost the same); what follows runs as account commands for a real account, and as a decoy
//! for anything else, counted on the id's `subject-<keyed hash>` stream: the same answers, the
//! same writes, nothing sent (RC-1, SEC-6).

use crate::accounts::{AccountHandler, AccountResult, Caller, Outcome};
use crate::handler::HandlerError;
use crate::tokens;
use custode_domain::account::{
    self, recovery_link_context, AccountCommand, AccountError, AccountEvent,
    AnswerSecurityQuestion, CompleteRecovery, OperatorReset, SendRecoveryCode, SendRecoveryLink,
    VerifyRecoveryCode,
};
use custode_domain::recovery::{
    self as rc, decoy_offer, decoy_question, Offer, RecoveryMethod, RecoveryStarted,
};
use custode_domain::subject::{SubjectCommand, SubjectEvent};
use custode_domain::{Secret, Violation};
use uuid::Uuid;

/// RC-1's answer.
#[derive(Debug)]
pub struct Started {
    pub recovery_id: Uuid,
    pub offers: Vec<Offer>,
    pub position: u64,
}

/// What checking a code or an answer gave.
#[derive(Debug)]
pub enum Checked {
    /// The reset token, shown once.
    Token {
        token: Secret,
        position: u64,
    },
    Wrong {
        attempts_left: u32,
        position: u64,
    },
}

/// The answer to a send: the position of what was recorded.
#[derive(Debug)]
pub struct Sent {
    pub position: u64,
}

impl From<Outcome> for Sent {
    fn from(outcome: Outcome) -> Self {
        Self {
            position: outcome.position(),
        }
    }
}

impl AccountHandler {
    fn decoy_seed(&self, subject: &[u8; 32]) -> [u8; 32] {
        self.service_key().mac("custode/recovery-decoy", &[subject])
    }

    /// The methods a decoy for `user_id` offers (for support staff and tests: what an unknown
    /// id's holder would be shown).
    pub fn decoy_methods_of(&self, user_id: &str) -> Vec<RecoveryMethod> {
        let seed = self.decoy_seed(&self.service_key().subject(user_id));
        decoy_offer(&seed, &self.settings().recovery)
            .iter()
            .map(|o| o.method)
            .collect()
    }

    /// RC-1: starts a recovery for `user_id`. Always answers; a real account's methods or a
    /// decoy's, recorded the same way.
    pub async fn start_recovery(
        &self,
        user_id: &str,
        client_ip: Option<String>,
        caller: &Caller,
    ) -> AccountResult<Started> {
        let subject = self.service_key().subject(user_id);
        let subject_hex = crate::log::hex(&subject);
        let mut real = None;
        if let Some(account_id) = self.account_id_of(user_id.trim()).await? {
            let (state, _) = self.load(account_id).await?;
            if let Some(offers) = rc::offer(&state, &self.settings().recovery) {
                real = Some((account_id, offers));
            }
        }
        let (account_id, offers) = match real {
            Some((id, offers)) => (Some(id), offers),
            None => (
                None,
                decoy_offer(&self.decoy_seed(&subject), &self.settings().recovery),
            ),
        };
        let recovery_id = Uuid::now_v7();
        let start = RecoveryStarted {
            recovery_id,
            account_id,
            subject: subject_hex,
            methods: offers.iter().map(|o| o.method).collect(),
            client_ip,
        };
        let outcome = self
            .recoveries
            .execute(&recovery_id, start, caller)
            .await
            .map_err(|e| e.map_domain(|never| match never {}))?;
        Ok(Started {
            recovery_id,
            offers,
            position: outcome.position(),
        })
    }

    /// The recovery `recovery_id` as its start recorded it.
    pub async fn recovery(&self, recovery_id: Uuid) -> AccountResult<RecoveryStarted> {
        let (started, _) = self
            .recoveries
            .load(&recovery_id)
            .await
            .map_err(|e| e.map_domain(|never| match never {}))?;
        started.ok_or(HandlerError::Domain(AccountError::RecoveryNotFound))
    }

    async fn offered(
        &self,
        recovery_id: Uuid,
        method: RecoveryMethod,
    ) -> AccountResult<RecoveryStarted> {
        let started = self.recovery(recovery_id).await?;
        offers(&started, method)?;
        Ok(started)
    }

    /// `real` on the recovery's account, or `decoy` when it has none or can no longer recover
    /// (SEC-6: such an account answers as a decoy does).
    async fn real_or_decoy<T, R, D>(
        &self,
        account_id: Option<Uuid>,
        real: impl FnOnce(Uuid) -> R,
        decoy: impl FnOnce() -> D,
    ) -> AccountResult<T>
    where
        R: std::future::Future<Output = AccountResult<T>>,
        D: std::future::Future<Output = AccountResult<T>>,
    {
        if let Some(account_id) = account_id {
            match real(account_id).await {
                Err(HandlerError::Domain(AccountError::RecoveryRefused)) => {}
                other => return other,
            }
        }
        decoy().await
    }

    /// A code or an answer checked on the account: the reset token a right one yields is drawn
    /// here, and only its hash goes into `command`.
    async fn check(
        &self,
        account_id: Uuid,
        caller: &Caller,
        command: impl FnOnce(custode_domain::TokenHash) -> AccountCommand,
    ) -> AccountResult<Checked> {
        let (token, token_hash) = tokens::new_token();
        let outcome = self
            .execute(account_id, command(token_hash), caller)
            .await?;
        Ok(checked(outcome, token))
    }

    /// RC-2: mails a fresh link (superseding any earlier one).
    pub async fn send_recovery_link(
        &self,
        started: &RecoveryStarted,
        caller: &Caller,
    ) -> AccountResult<Sent> {
        offers(started, RecoveryMethod::Email)?;
        let recovery_id = started.recovery_id;
        let real = |account_id| async move {
            let (token, token_hash) = tokens::new_token();
            let cmd = AccountCommand::SendRecoveryLink(SendRecoveryLink {
                recovery_id,
                token_hash,
                sealed_token: self.seal(&token, &recovery_link_context(account_id, recovery_id))?,
            });
            Ok(self.execute(account_id, cmd, caller).await?.into())
        };
        let decoy = || {
            self.decoy_send(
                &started.subject,
                SubjectCommand::SendLink { recovery_id },
                caller,
            )
        };
        self.real_or_decoy(started.account_id, real, decoy).await
    }

    /// RC-3: sends a fresh code by SMS (replacing the earlier one, keeping its attempts).
    pub async fn send_recovery_code(
        &self,
        started: &RecoveryStarted,
        caller: &Caller,
    ) -> AccountResult<Sent> {
        offers(started, RecoveryMethod::Sms)?;
        let recovery_id = started.recovery_id;
        let real = |account_id| async move {
            let challenge_id = Uuid::now_v7();
            let code = tokens::otp_code();
            let sealed_code = self.seal(&code, &account::otp_context(account_id, challenge_id))?;
            let cmd = AccountCommand::SendRecoveryCode(SendRecoveryCode {
                recovery_id,
                challenge_id,
                code,
                sealed_code,
            });
            Ok(self.execute(account_id, cmd, caller).await?.into())
        };
        let decoy = || {
            self.decoy_send(
                &started.subject,
                SubjectCommand::SendCode { recovery_id },
                caller,
            )
        };
        self.real_or_decoy(started.account_id, real, decoy).await
    }

    /// RC-3: checks a code; a right one yields a reset token.
    pub async fn verify_recovery_code(
        &self,
        recovery_id: Uuid,
        code: Secret,
        client_ip: Option<String>,
        caller: &Caller,
    ) -> AccountResult<Checked> {
        let started = self.offered(recovery_id, RecoveryMethod::Sms).await?;
        let real = |account_id| {
            let code = code.clone();
            self.check(account_id, caller, |token_hash| {
                AccountCommand::VerifyRecoveryCode(VerifyRecoveryCode {
                    recovery_id,
                    code,
                    token_hash,
                    client_ip,
                })
            })
        };
        let decoy = || {
            let command = SubjectCommand::VerifyCode {
                recovery_id,
                code: code.clone(),
            };
            self.decoy_check(&started.subject, command, caller)
        };
        self.real_or_decoy(started.account_id, real, decoy).await
    }

    /// RC-4: the question of the recovery's account (a decoy's: a plausible one).
    pub async fn security_question(&self, recovery_id: Uuid) -> AccountResult<String> {
        let started = self.offered(recovery_id, RecoveryMethod::Question).await?;
        match started.account_id {
            Some(account_id) => {
                let (state, _) = self.load(account_id).await?;
                state
                    .recovery
                    .security_question
                    .ok_or_else(|| AccountError::MethodUnavailable.into())
            }
            None => {
                let subject = subject_bytes(&started.subject)?;
                Ok(decoy_question(&self.decoy_seed(&subject)).to_string())
            }
        }
    }

    /// RC-4: answers the security question; a right answer yields a reset token.
    pub async fn answer_security_question(
        &self,
        recovery_id: Uuid,
        answer: Secret,
        client_ip: Option<String>,
        caller: &Caller,
    ) -> AccountResult<Checked> {
        let started = self.offered(recovery_id, RecoveryMethod::Question).await?;
        let real = |account_id| {
            let answer = answer.clone();
            self.check(account_id, caller, |token_hash| {
                AccountCommand::AnswerSecurityQuestion(AnswerSecurityQuestion {
                    recovery_id,
                    answer,
                    token_hash,
                    client_ip,
                })
            })
        };
        let decoy = || {
            let command = SubjectCommand::AnswerQuestion {
                recovery_id,
                answer: answer.clone(),
            };
            self.decoy_check(&started.subject, command, caller)
        };
        self.real_or_decoy(started.account_id, real, decoy).await
    }

    /// RC-5: the new password with the link's or reset token. An unknown user id gets the same
    /// answer as a token that is not valid.
    pub async fn complete_recovery(
        &self,
        user_id: &str,
        token: &str,
        new_password: Secret,
        new_password_repeat: Secret,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        let Some(token_hash) = tokens::parse_token(token) else {
            return Err(AccountError::Invalid(vec![Violation::new(
                "SEC-1.token",
                Some("token"),
                "a token has 43 URL-safe base64 characters",
            )])
            .into());
        };
        let Some(account_id) = self.account_id_of(user_id.trim()).await? else {
            // A real account's refusal is decided on the hashing pool: wait our turn there too.
            self.services().pool.run(|| ()).await?;
            return Err(AccountError::TokenInvalid.into());
        };
        let cmd = AccountCommand::CompleteRecovery(CompleteRecovery {
            token_hash,
            new_password,
            new_password_repeat,
        });
        match self.execute(account_id, cmd, caller).await {
            Err(HandlerError::Domain(AccountError::NotFound | AccountError::RecoveryRefused)) => {
                Err(AccountError::TokenInvalid.into())
            }
            other => other,
        }
    }

    /// RC-7: an operator's reset after a signed form: fresh temporary credentials, shown once.
    pub async fn operator_reset(
        &self,
        user_id: &str,
        form_reference: String,
        caller: &Caller,
    ) -> AccountResult<(Outcome, Secret)> {
        let Some(account_id) = self.account_id_of(user_id.trim()).await? else {
            return Err(AccountError::NotFound.into());
        };
        let password = tokens::temporary_password();
        let cmd = AccountCommand::OperatorReset(OperatorReset {
            form_reference,
            password: password.clone(),
        });
        let outcome = self.execute(account_id, cmd, caller).await?;
        Ok((outcome, password))
    }

    /// SC-3 when self-service fails: an operator records the contact mobile after a signed
    /// form. The number already on file records nothing.
    pub async fn operator_set_contact_mobile(
        &self,
        user_id: &str,
        form_reference: String,
        mobile: String,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        let Some(account_id) = self.account_id_of(user_id.trim()).await? else {
            return Err(AccountError::NotFound.into());
        };
        let cmd = AccountCommand::OperatorSetContactMobile(
            custode_domain::account::OperatorSetContactMobile {
                form_reference,
                mobile,
            },
        );
        self.execute(account_id, cmd, caller).await
    }

    /// SC-6: an operator's revocation on a signed request; final.
    pub async fn revoke(
        &self,
        user_id: &str,
        request_reference: String,
        caller: &Caller,
    ) -> AccountResult<Outcome> {
        let Some(account_id) = self.account_id_of(user_id.trim()).await? else {
            return Err(AccountError::NotFound.into());
        };
        let cmd = AccountCommand::Revoke(custode_domain::account::Revoke { request_reference });
        self.execute(account_id, cmd, caller).await
    }
}

/// A decoy's answers (RC-1, SEC-6): the same checks, in the same order, with the same limits
/// as a real account's, counted in the id's `subject-<hex>` stream; nothing is sent.
impl AccountHandler {
    async fn on_subject(
        &self,
        subject_hex: &str,
        command: SubjectCommand,
        caller: &Caller,
    ) -> AccountResult<(Vec<SubjectEvent>, u64)> {
        let outcome = self
            .subjects
            .execute(&subject_hex.to_string(), command, caller)
            .await?;
        let position = outcome.position();
        Ok((outcome.events, position))
    }

    /// A decoy's send: recorded as a real one is, nothing sent.
    async fn decoy_send(
        &self,
        subject_hex: &str,
        command: SubjectCommand,
        caller: &Caller,
    ) -> AccountResult<Sent> {
        // Sealed as a real send seals its token, and thrown away: without a published delivery
        // key a decoy is turned away (503) as a real account is, so that an API node that has
        // no key yet cannot tell them apart (found from outside), and it costs the same.
        let (throwaway, _) = tokens::new_token();
        self.seal(&throwaway, "custode/recovery-decoy-send")?;
        let (_, position) = self.on_subject(subject_hex, command, caller).await?;
        Ok(Sent { position })
    }

    /// A decoy's check of a code or an answer: always wrong, with the attempts it says are left.
    async fn decoy_check(
        &self,
        subject_hex: &str,
        command: SubjectCommand,
        caller: &Caller,
    ) -> AccountResult<Checked> {
        let (events, position) = self.on_subject(subject_hex, command, caller).await?;
        Ok(decoy_wrong(&events, position))
    }
}

/// A decoy's refusal of a code or an answer, with the attempts it says are left.
fn decoy_wrong(events: &[SubjectEvent], position: u64) -> Checked {
    let attempts_left = events
        .iter()
        .find_map(|e| match e {
            SubjectEvent::DecoyCodeFailed(f) => Some(f.attempts_left),
            SubjectEvent::DecoyAnswerFailed(f) => Some(f.attempts_left),
            _ => None,
        })
        .unwrap_or(0);
    Checked::Wrong {
        attempts_left,
        position,
    }
}

/// A method the recovery's start did not offer is refused, real or decoy alike.
fn offers(started: &RecoveryStarted, method: RecoveryMethod) -> AccountResult<()> {
    if started.methods.contains(&method) {
        Ok(())
    } else {
        Err(AccountError::MethodUnavailable.into())
    }
}

fn checked(outcome: Outcome, token: Secret) -> Checked {
    let position = outcome.position();
    let wrong = outcome.events.iter().find_map(|e| match e {
        AccountEvent::OtpCheckFailed(f) => Some(f.attempts_left),
        AccountEvent::SecurityAnswerFailed(f) => Some(f.attempts_left),
        _ => None,
    });
    match wrong {
        Some(attempts_left) => Checked::Wrong {
            attempts_left,
            position,
        },
        None => Checked::Token { token, position },
    }
}

fn subject_bytes(hex: &str) -> AccountResult<[u8; 32]> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect();
    bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| HandlerError::Store("a recovery's subject is not a 32-byte hex".into()))
}
