//! Commands of the account aggregate and the pure `decide` that turns one into events or a
//! typed refusal. Fresh values (ids, token hashes, the temporary password) are drawn by the
//! handler and arrive inside the command; time, settings and the hasher arrive in [`Ctx`].

use super::events::*;
use super::state::{Account, Spent};
use crate::lockout::{failures_after, lock_at, Lock};
use crate::masking::{normalize_answer, normalize_email, normalize_mobile};
use crate::notice::Channel;
use crate::otp::{self, CodeHasher, OtpPurpose};
use crate::policy::{self, Holder};
use crate::recovery::{self, RecoveryMethod};
use crate::secret::{PasswordHash, Sealed, Secret, SecretHasher, TokenHash};
use crate::settings::Settings;
use crate::violation::Violation;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the outside world supplies to `decide`.
pub struct Ctx<'a> {
    pub now: DateTime<Utc>,
    pub settings: &'a Settings,
    pub hasher: &'a dyn SecretHasher,
    /// The keyed hash of one-time codes.
    pub codes: &'a dyn CodeHasher,
}

/// Longest free text we accept in a security question or answer.
const MAX_QUESTION_CHARS: usize = 200;
const MAX_ANSWER_CHARS: usize = 200;
const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open(OpenAccount),
    Login(Login),
    Reauthenticate(Reauthenticate),
    Logout(Logout),
    ChangePassword(ChangePassword),
    SetRecoveryInfo(SetRecoveryInfo),
    SendRecoveryLink(SendRecoveryLink),
    SendRecoveryCode(SendRecoveryCode),
    VerifyRecoveryCode(VerifyRecoveryCode),
    AnswerSecurityQuestion(AnswerSecurityQuestion),
    CompleteRecovery(CompleteRecovery),
    OperatorReset(OperatorReset),
}

impl AccountCommand {
    /// Whether `decide` will hash or verify a password: the handler then runs it on the
    /// bounded hashing pool instead of the async runtime (PW-5).
    pub fn needs_hashing(&self) -> bool {
        match self {
            AccountCommand::Open(_)
            | AccountCommand::Login(_)
            | AccountCommand::Reauthenticate(_)
            | AccountCommand::ChangePassword(_)
            | AccountCommand::SetRecoveryInfo(_)
            | AccountCommand::AnswerSecurityQuestion(_)
            | AccountCommand::CompleteRecovery(_)
            | AccountCommand::OperatorReset(_) => true,
            AccountCommand::Logout(_)
            | AccountCommand::SendRecoveryLink(_)
            | AccountCommand::SendRecoveryCode(_)
            | AccountCommand::VerifyRecoveryCode(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub enum InitialPassword {
    /// ACC-2: drawn by the handler, shown once to the operator and, sealed with the delivery
    /// key, mailed to the contact email.
    Temporary { password: Secret, sealed: Sealed },
    /// ACC-3: a PHC hash brought from the old system.
    Imported(PasswordHash),
}

/// The owning mailbox of a collaborator as the handler found it (`kind` is `None` when no
/// account has that id).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerRef {
    pub account_id: Uuid,
    pub kind: Option<AccountKind>,
}

#[derive(Debug, Clone)]
pub struct OpenAccount {
    pub account_id: Uuid,
    pub kind: AccountKind,
    pub user_id: String,
    pub plan: Option<Plan>,
    pub owner: Option<OwnerRef>,
    pub name: Option<String>,
    pub fiscal_code: Option<String>,
    pub contact_email: Option<String>,
    pub contact_mobile: Option<String>,
    pub language: Language,
    pub password: InitialPassword,
}

#[derive(Debug, Clone)]
pub struct Login {
    pub session_id: Uuid,
    pub token_hash: TokenHash,
    pub password: Secret,
    pub client_ip: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Reauthenticate {
    pub session_id: Uuid,
    pub password: Secret,
    pub client_ip: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Logout {
    pub session_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct ChangePassword {
    pub session_id: Uuid,
    pub current_password: Secret,
    pub new_password: Secret,
    pub new_password_repeat: Secret,
}

/// A field of a partial update: absent leaves it, `null` removes it, a value sets it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

#[derive(Debug, Clone)]
pub struct SecurityQuestion {
    pub question: String,
    pub answer: Secret,
    pub answer_repeat: Secret,
}

#[derive(Debug, Clone)]
pub struct SetRecoveryInfo {
    pub session_id: Uuid,
    pub email: Change<String>,
    pub mobile: Change<String>,
    /// `Set` replaces question and answer; `Clear` removes them.
    pub security: Change<SecurityQuestion>,
}

/// RC-2: mail a recovery link. The handler draws the token and seals it for the mailer.
#[derive(Debug, Clone)]
pub struct SendRecoveryLink {
    pub recovery_id: Uuid,
    pub token_hash: TokenHash,
    pub sealed_token: Sealed,
}

/// RC-3: send a code by SMS. The handler draws the code, its challenge id, and seals it.
#[derive(Debug, Clone)]
pub struct SendRecoveryCode {
    pub recovery_id: Uuid,
    pub challenge_id: Uuid,
    pub code: Secret,
    pub sealed_code: Sealed,
}

/// RC-3: check a code; a right one yields the reset token drawn by the handler.
#[derive(Debug, Clone)]
pub struct VerifyRecoveryCode {
    pub recovery_id: Uuid,
    pub code: Secret,
    pub token_hash: TokenHash,
    pub client_ip: Option<String>,
}

/// RC-4: answer the security question; a right answer yields the reset token.
#[derive(Debug, Clone)]
pub struct AnswerSecurityQuestion {
    pub recovery_id: Uuid,
    pub answer: Secret,
    pub token_hash: TokenHash,
    pub client_ip: Option<String>,
}

/// RC-5: the new password, twice, with the link's or reset token (its hash).
#[derive(Debug, Clone)]
pub struct CompleteRecovery {
    pub token_hash: TokenHash,
    pub new_password: Secret,
    pub new_password_repeat: Secret,
}

/// RC-7: an operator's reset after a signed paper form.
#[derive(Debug, Clone)]
pub struct OperatorReset {
    pub form_reference: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("the request breaks {} rule(s)", .0.len())]
    Invalid(Vec<Violation>),
    #[error("the new password does not meet the password policy")]
    PasswordPolicy(Vec<Violation>),
    #[error("the current password is not right")]
    CurrentPasswordWrong,
    #[error("no account has that id")]
    NotFound,
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the session has ended or expired")]
    SessionInvalid,
    #[error("this change needs a recent login: confirm your password first")]
    ReauthenticationRequired,
    #[error("this recovery does not offer that method")]
    MethodUnavailable,
    #[error("this recovery has sent as many codes as it may; start a new recovery")]
    CodeLimit,
    #[error("no code is waiting to be checked; ask for one")]
    NoCode,
    #[error("the code has expired; ask for a new one")]
    CodeExpired,
    #[error("too many wrong codes; start a new recovery")]
    CodeExhausted,
    #[error("too many wrong answers: the security question is locked")]
    QuestionLocked {
        until: DateTime<Utc>,
        /// Seconds from the refusal to `until` (for `Retry-After`).
        seconds: i64,
    },
    #[error("the token is not valid")]
    TokenInvalid,
    #[error("the token has already been used")]
    TokenUsed,
    #[error("the token has expired")]
    TokenExpired,
    #[error("a newer request replaced this token")]
    TokenSuperseded,
    #[error("the account cannot recover its password")]
    RecoveryRefused,
    #[error("too many wrong passwords in a row: logins are refused for a while")]
    LoginLocked {
        until: DateTime<Utc>,
        /// Seconds from the refusal to `until` (for `Retry-After`).
        seconds: i64,
    },
}

impl AccountError {
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::Invalid(_) => "validation-failed",
            AccountError::PasswordPolicy(_) => "password-policy",
            AccountError::CurrentPasswordWrong => "current-password-wrong",
            AccountError::NotFound => "account-not-found",
            AccountError::AlreadyOpen => "account-exists",
            AccountError::SessionInvalid => "unauthenticated",
            AccountError::ReauthenticationRequired => "reauthentication-required",
            AccountError::MethodUnavailable => "recovery-method-unavailable",
            AccountError::CodeLimit => "code-limit-reached",
            AccountError::NoCode => "no-code",
            AccountError::CodeExpired => "code-expired",
            AccountError::CodeExhausted => "code-attempts-exhausted",
            AccountError::QuestionLocked { .. } => "question-locked",
            AccountError::TokenInvalid | AccountError::RecoveryRefused => "token-invalid",
            AccountError::TokenUsed => "token-used",
            AccountError::TokenExpired => "token-expired",
            AccountError::TokenSuperseded => "token-superseded",
            AccountError::LoginLocked { .. } => "rate-limited",
        }
    }
}

pub fn decide(
    state: &Account,
    cmd: &AccountCommand,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    match cmd {
        AccountCommand::Open(c) => open(state, c, ctx),
        AccountCommand::Login(c) => login(state, c, ctx),
        AccountCommand::Reauthenticate(c) => reauthenticate(state, c, ctx),
        AccountCommand::Logout(c) => logout(state, c, ctx),
        AccountCommand::ChangePassword(c) => change_password(state, c, ctx),
        AccountCommand::SetRecoveryInfo(c) => set_recovery_info(state, c, ctx),
        AccountCommand::SendRecoveryLink(c) => send_recovery_link(state, c, ctx),
        AccountCommand::SendRecoveryCode(c) => send_recovery_code(state, c, ctx),
        AccountCommand::VerifyRecoveryCode(c) => verify_recovery_code(state, c, ctx),
        AccountCommand::AnswerSecurityQuestion(c) => answer_question(state, c, ctx),
        AccountCommand::CompleteRecovery(c) => complete_recovery(state, c, ctx),
        AccountCommand::OperatorReset(c) => operator_reset(state, c, ctx),
    }
}

fn open(
    state: &Account,
    c: &OpenAccount,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    if state.is_open() {
        return Err(AccountError::AlreadyOpen);
    }
    let mut errors = Vec::new();
    let user_id = c.user_id.trim();
    let user_id_ok = match c.kind {
        AccountKind::Mailbox => normalize_email(user_id).is_some(),
        AccountKind::Identity => {
            (3..=64).contains(&user_id.len())
                && user_id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
        }
        AccountKind::Collaborator => {
            (3..=128).contains(&user_id.chars().count())
                && !user_id
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control())
        }
    };
    if !user_id_ok {
        errors.push(Violation::new(
            "ACC-1.user_id",
            Some("user_id"),
            match c.kind {
                AccountKind::Mailbox => "a mailbox's user id is its full PEC address",
                AccountKind::Identity => "an identity's user id is its SPID user name: 3 to 64 letters, digits, '.', '_' or '-'",
                AccountKind::Collaborator => "a collaborator's user id has 3 to 128 characters and no spaces",
            },
        ));
    }
    if c.plan.is_some() && c.kind != AccountKind::Mailbox {
        errors.push(Violation::new(
            "ACC-1.plan",
            Some("plan"),
            "only mailboxes have a plan",
        ));
    }
    match (&c.owner, c.kind) {
        (None, AccountKind::Collaborator) => errors.push(Violation::new(
            "ACC-1.owner_id",
            Some("owner_id"),
            "a collaborator needs the account id of its mailbox",
        )),
        (Some(owner), AccountKind::Collaborator) if owner.kind != Some(AccountKind::Mailbox) => {
            errors.push(Violation::new(
                "ACC-1.owner_id",
                Some("owner_id"),
                "owner_id must be the account id of an existing mailbox",
            ))
        }
        (Some(_), AccountKind::Mailbox | AccountKind::Identity) => errors.push(Violation::new(
            "ACC-1.owner_id",
            Some("owner_id"),
            "only collaborators have an owner",
        )),
        _ => {}
    }
    if let Some(name) = &c.name {
        if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
            errors.push(Violation::new(
                "ACC-1.name",
                Some("name"),
                "the name must have 1 to 200 characters",
            ));
        }
    }
    let fiscal_code = c.fiscal_code.as_deref().map(|f| f.trim().to_uppercase());
    if let Some(fc) = &fiscal_code {
        if c.kind != AccountKind::Identity {
            errors.push(Violation::new(
                "ACC-1.fiscal_code",
                Some("fiscal_code"),
                "only identities have a fiscal code",
            ));
        } else if fc.len() != 16 || !fc.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            errors.push(Violation::new(
                "ACC-1.fiscal_code",
                Some("fiscal_code"),
                "a fiscal code has 16 letters and digits",
            ));
        }
    }
    let contact_email = c.contact_email.as_deref().map(normalize_email);
    if let Some(None) = contact_email {
        errors.push(Violation::new(
            "ACC-1.contact_email",
            Some("contact_email"),
            "not a valid e-mail address",
        ));
    }
    let contact_mobile = c.contact_mobile.as_deref().map(normalize_mobile);
    if let Some(None) = contact_mobile {
        errors.push(Violation::new(
            "ACC-1.contact_mobile",
            Some("contact_mobile"),
            "not a valid mobile number",
        ));
    }
    if let InitialPassword::Imported(hash) = &c.password {
        if c.kind != AccountKind::Mailbox {
            errors.push(Violation::new(
                "ACC-3",
                Some("password_phc"),
                "only migrated mailboxes bring a password",
            ));
        }
        if !ctx.hasher.accepts(hash) {
            errors.push(Violation::new(
                "ACC-3",
                Some("password_phc"),
                "the imported password must be an Argon2 PHC string",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AccountError::Invalid(errors));
    }
    let password_event = match &c.password {
        InitialPassword::Temporary { password, sealed } => {
            AccountEvent::TemporaryPasswordIssued(TemporaryPasswordIssued {
                password_hash: ctx.hasher.hash(password),
                reason: TemporaryPasswordReason::Opening,
                form_reference: None,
                sealed_password: Some(sealed.clone()),
            })
        }
        InitialPassword::Imported(hash) => AccountEvent::PasswordImported(PasswordImported {
            password_hash: hash.clone(),
        }),
    };
    let opened = AccountOpened {
        account_id: c.account_id,
        kind: c.kind,
        user_id: user_id.to_string(),
        plan: match c.kind {
            AccountKind::Mailbox => Some(c.plan.unwrap_or(Plan::Standard)),
            _ => None,
        },
        owner_id: c.owner.as_ref().map(|o| o.account_id),
        name: c.name.as_ref().map(|n| n.trim().to_string()),
        fiscal_code,
        contact_email: contact_email.flatten(),
        contact_mobile: contact_mobile.flatten(),
        language: c.language,
        migrated: matches!(c.password, InitialPassword::Imported(_)),
    };
    Ok(vec![AccountEvent::AccountOpened(opened), password_event])
}

fn opened(state: &Account) -> Result<&AccountOpened, AccountError> {
    state.profile.as_ref().ok_or(AccountError::NotFound)
}

fn login(state: &Account, c: &Login, ctx: &Ctx<'_>) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let mut events = lockout_over(state, ctx)?;
    let right = state
        .current_password()
        .is_some_and(|hash| ctx.hasher.verify(&c.password, hash));
    if !right {
        failed_login(state, &mut events, c.client_ip.clone(), None, ctx);
        return Ok(events);
    }
    let sessions = &ctx.settings.sessions;
    events.push(AccountEvent::SessionStarted(SessionStarted {
        session_id: c.session_id,
        token_hash: c.token_hash.clone(),
        started_at: ctx.now,
        expires_at: ctx.now + sessions.lifetime(),
        fresh_until: ctx.now + sessions.step_up(),
        client_ip: c.client_ip.clone(),
        required_actions: state.required_actions(),
    }));
    Ok(events)
}

/// SEC-6: refuses while a login lockout lasts; once it has ended, the `LoginUnlocked` to record
/// before anything else.
fn lockout_over(state: &Account, ctx: &Ctx<'_>) -> Result<Vec<AccountEvent>, AccountError> {
    match lock_at(state.login_locked_until, ctx.now) {
        Lock::Locked { until, seconds } => Err(AccountError::LoginLocked { until, seconds }),
        Lock::Ended(until) => Ok(vec![AccountEvent::LoginUnlocked(LoginUnlocked {
            locked_until: until,
        })]),
        Lock::Open => Ok(Vec::new()),
    }
}

/// A wrong password: `LoginFailed`, and `LoginLockedOut` when it is one too many in a row.
fn failed_login(
    state: &Account,
    events: &mut Vec<AccountEvent>,
    client_ip: Option<String>,
    session_id: Option<Uuid>,
    ctx: &Ctx<'_>,
) {
    let failures = failures_after(state.login_failures, !events.is_empty());
    events.push(AccountEvent::LoginFailed(LoginFailed {
        reason: LoginFailure::WrongPassword,
        client_ip,
        session_id,
    }));
    let limits = &ctx.settings.limits;
    if failures >= limits.login_failures_per_user {
        events.push(AccountEvent::LoginLockedOut(LoginLockedOut {
            until: ctx.now + chrono::Duration::minutes(limits.login_lockout_minutes),
            failures,
        }));
    }
}

fn reauthenticate(
    state: &Account,
    c: &Reauthenticate,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let session = state
        .live_session(c.session_id, ctx.now)
        .ok_or(AccountError::SessionInvalid)?;
    let mut events = lockout_over(state, ctx)?;
    let right = state
        .current_password()
        .is_some_and(|hash| ctx.hasher.verify(&c.password, hash));
    if !right {
        failed_login(
            state,
            &mut events,
            c.client_ip.clone(),
            Some(c.session_id),
            ctx,
        );
        return Ok(events);
    }
    // Step-up never outlives the session itself.
    let fresh_until = (ctx.now + ctx.settings.sessions.step_up()).min(session.expires_at);
    events.push(AccountEvent::SessionReauthenticated(
        SessionReauthenticated {
            session_id: c.session_id,
            fresh_until,
        },
    ));
    Ok(events)
}

fn logout(state: &Account, c: &Logout, ctx: &Ctx<'_>) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    state
        .live_session(c.session_id, ctx.now)
        .ok_or(AccountError::SessionInvalid)?;
    Ok(vec![AccountEvent::SessionsEnded(SessionsEnded {
        session_ids: vec![c.session_id],
        reason: SessionEndReason::Logout,
    })])
}

/// The session must be live, and fresh (SEC-3) when `fresh` is asked for.
fn require_session(
    state: &Account,
    session_id: Uuid,
    fresh: bool,
    now: DateTime<Utc>,
) -> Result<(), AccountError> {
    let session = state
        .live_session(session_id, now)
        .ok_or(AccountError::SessionInvalid)?;
    if fresh && session.fresh_until < now {
        return Err(AccountError::ReauthenticationRequired);
    }
    Ok(())
}

fn change_password(
    state: &Account,
    c: &ChangePassword,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    require_session(state, c.session_id, true, ctx.now)?;
    let current_ok = state
        .current_password()
        .is_some_and(|hash| ctx.hasher.verify(&c.current_password, hash));
    if !current_ok {
        return Err(AccountError::CurrentPasswordWrong);
    }
    check_new_password(
        state,
        profile,
        &c.new_password,
        &c.new_password_repeat,
        Some(&c.current_password),
        ctx,
    )?;
    let mut events = vec![AccountEvent::PasswordChanged(PasswordChanged {
        password_hash: ctx.hasher.hash(&c.new_password),
    })];
    // PW-4: every session ends, the one that asked included; the holder logs in again.
    events.extend(end_sessions(
        state,
        SessionEndReason::PasswordChanged,
        ctx.now,
    ));
    Ok(events)
}

/// `SessionsEnded` for every live session, if there is one.
fn end_sessions(
    state: &Account,
    reason: SessionEndReason,
    now: DateTime<Utc>,
) -> Option<AccountEvent> {
    let live: Vec<Uuid> = state
        .sessions
        .iter()
        .filter(|(_, s)| s.expires_at > now)
        .map(|(id, _)| *id)
        .collect();
    (!live.is_empty()).then_some(AccountEvent::SessionsEnded(SessionsEnded {
        session_ids: live,
        reason,
    }))
}

/// PW-1, PW-2 and the repetition, for a new password. `current` is the password just verified
/// in the clear (it compares without another Argon2 run), when there is one.
fn check_new_password(
    state: &Account,
    profile: &AccountOpened,
    new_password: &Secret,
    new_password_repeat: &Secret,
    current: Option<&Secret>,
    ctx: &Ctx<'_>,
) -> Result<(), AccountError> {
    let policy = &ctx.settings.policy;
    let mut personal = Vec::new();
    if profile.kind == AccountKind::Identity {
        personal.extend(profile.name.as_deref());
        personal.extend(profile.fiscal_code.as_deref());
    }
    let holder = Holder {
        user_id: &profile.user_id,
        personal,
    };
    let mut violations = Vec::new();
    if new_password != new_password_repeat {
        violations.push(Violation::new(
            "PW-4.repeat",
            Some("new_password_repeat"),
            "the new password and its repetition differ",
        ));
    }
    violations.extend(policy::evaluate(new_password.expose(), &holder, policy).violations(policy));
    if !violations.is_empty() {
        return Err(AccountError::PasswordPolicy(violations));
    }
    // The expensive check last: one Argon2 verification per remembered password, except the
    // current one when it was just verified in the clear.
    let skip = usize::from(current.is_some());
    let reused = policy.history > 0
        && (current == Some(new_password)
            || state
                .passwords
                .iter()
                .take(policy.history)
                .skip(skip)
                .any(|old| ctx.hasher.verify(new_password, old)));
    if reused {
        return Err(AccountError::PasswordPolicy(vec![Violation::new(
            "PW-2.history",
            Some("new_password"),
            format!(
                "the new password must differ from your last {} passwords",
                policy.history
            ),
        )]));
    }
    Ok(())
}

/// Recovery commands act on active accounts only (SEC-6); the handler gives others a decoy's
/// answers before it gets here, so this is the guard against a race with a suspension.
fn recoverable(state: &Account) -> Result<&AccountOpened, AccountError> {
    let profile = opened(state)?;
    if state.status != AccountStatus::Active {
        return Err(AccountError::RecoveryRefused);
    }
    Ok(profile)
}

fn send_recovery_link(
    state: &Account,
    c: &SendRecoveryLink,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    recoverable(state)?;
    let to = recovery::link_address(state).ok_or(AccountError::MethodUnavailable)?;
    Ok(vec![AccountEvent::RecoveryLinkIssued(RecoveryLinkIssued {
        recovery_id: c.recovery_id,
        to: to.to_string(),
        token_hash: c.token_hash.clone(),
        expires_at: ctx.now + ctx.settings.recovery.link_lifetime(),
        sealed_token: c.sealed_token.clone(),
    })])
}

fn send_recovery_code(
    state: &Account,
    c: &SendRecoveryCode,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    recoverable(state)?;
    let to = state
        .recovery
        .mobile
        .as_ref()
        .ok_or(AccountError::MethodUnavailable)?;
    let settings = &ctx.settings.recovery;
    let sent = state
        .grants
        .codes_sent
        .get(&c.recovery_id)
        .copied()
        .unwrap_or(0);
    if sent >= settings.codes_per_recovery {
        return Err(AccountError::CodeLimit);
    }
    // Asking again does not buy guesses: a recovery whose attempts are spent sends no more.
    let spent = state
        .grants
        .code_attempts
        .get(&c.recovery_id)
        .copied()
        .unwrap_or(0);
    if spent >= settings.code_attempts {
        return Err(AccountError::CodeExhausted);
    }
    Ok(vec![AccountEvent::OtpChallengeIssued(OtpChallengeIssued {
        challenge_id: c.challenge_id,
        purpose: OtpPurpose::Recovery,
        channel: Channel::Sms,
        to: to.clone(),
        code_hash: ctx.codes.hash_code(c.challenge_id, c.code.expose()),
        expires_at: ctx.now + settings.code_lifetime(),
        max_attempts: settings.code_attempts,
        recovery_id: Some(c.recovery_id),
        sealed_code: c.sealed_code.clone(),
    })])
}

fn verify_recovery_code(
    state: &Account,
    c: &VerifyRecoveryCode,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    recoverable(state)?;
    let challenge = state
        .challenges
        .get(OtpPurpose::Recovery, Some(c.recovery_id))
        .ok_or(AccountError::NoCode)?;
    if !otp::well_formed(c.code.expose()) {
        return Err(AccountError::Invalid(vec![Violation::new(
            "RC-3.code",
            Some("code"),
            "the code has 6 digits",
        )]));
    }
    let candidate = ctx.codes.hash_code(challenge.challenge_id, c.code.expose());
    match challenge.check(&candidate, ctx.now) {
        otp::Check::Right => Ok(vec![
            AccountEvent::OtpVerified(OtpVerified {
                challenge_id: challenge.challenge_id,
            }),
            AccountEvent::ResetTokenIssued(ResetTokenIssued {
                recovery_id: c.recovery_id,
                method: RecoveryMethod::Sms,
                token_hash: c.token_hash.clone(),
                expires_at: ctx.now + ctx.settings.recovery.reset_token_lifetime(),
            }),
        ]),
        otp::Check::Wrong { attempts_left } => {
            Ok(vec![AccountEvent::OtpCheckFailed(OtpCheckFailed {
                challenge_id: challenge.challenge_id,
                attempts_left,
                client_ip: c.client_ip.clone(),
            })])
        }
        otp::Check::Missing => Err(AccountError::NoCode),
        otp::Check::Expired => Err(AccountError::CodeExpired),
        otp::Check::Exhausted => Err(AccountError::CodeExhausted),
    }
}

fn answer_question(
    state: &Account,
    c: &AnswerSecurityQuestion,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    recoverable(state)?;
    let settings = &ctx.settings.recovery;
    let hash = state
        .recovery
        .security_answer_hash
        .as_ref()
        .filter(|_| settings.security_question)
        .ok_or(AccountError::MethodUnavailable)?;
    let answer = normalize_answer(c.answer.expose());
    if answer.is_empty() || answer.chars().count() > MAX_ANSWER_CHARS {
        return Err(AccountError::Invalid(vec![Violation::new(
            "RC-4.answer",
            Some("answer"),
            "the answer must have 1 to 200 characters",
        )]));
    }
    let mut events = Vec::new();
    match lock_at(state.grants.question_locked_until, ctx.now) {
        Lock::Locked { until, seconds } => {
            return Err(AccountError::QuestionLocked { until, seconds })
        }
        Lock::Ended(until) => events.push(AccountEvent::SecurityQuestionUnlocked(
            SecurityQuestionUnlocked {
                locked_until: until,
            },
        )),
        Lock::Open => {}
    }
    if ctx.hasher.verify(&Secret::new(answer), hash) {
        events.push(AccountEvent::ResetTokenIssued(ResetTokenIssued {
            recovery_id: c.recovery_id,
            method: RecoveryMethod::Question,
            token_hash: c.token_hash.clone(),
            expires_at: ctx.now + settings.reset_token_lifetime(),
        }));
        return Ok(events);
    }
    let failures = failures_after(state.grants.question_failures, !events.is_empty());
    events.push(AccountEvent::SecurityAnswerFailed(SecurityAnswerFailed {
        recovery_id: c.recovery_id,
        attempts_left: settings.question_attempts.saturating_sub(failures),
        client_ip: c.client_ip.clone(),
    }));
    if failures >= settings.question_attempts {
        events.push(AccountEvent::SecurityQuestionLocked(
            SecurityQuestionLocked {
                until: ctx.now + settings.question_lock(),
            },
        ));
    }
    Ok(events)
}

fn complete_recovery(
    state: &Account,
    c: &CompleteRecovery,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = recoverable(state)?;
    let grants = &state.grants;
    let live = [&grants.link, &grants.reset]
        .into_iter()
        .flatten()
        .find(|g| otp::constant_time_eq(g.token_hash.as_str(), c.token_hash.as_str()));
    let Some(grant) = live else {
        let spent = grants
            .spent
            .iter()
            .find(|(hash, _)| otp::constant_time_eq(hash.as_str(), c.token_hash.as_str()));
        return Err(match spent {
            Some((_, Spent::Used)) => AccountError::TokenUsed,
            Some((_, Spent::Superseded)) => AccountError::TokenSuperseded,
            None => AccountError::TokenInvalid,
        });
    };
    if ctx.now >= grant.expires_at {
        return Err(AccountError::TokenExpired);
    }
    check_new_password(
        state,
        profile,
        &c.new_password,
        &c.new_password_repeat,
        None,
        ctx,
    )?;
    let mut events = Vec::new();
    // Proving the holder ends a login lockout (an attacker's guesses caused it).
    if let Some(until) = state.login_locked_until {
        events.push(AccountEvent::LoginUnlocked(LoginUnlocked {
            locked_until: until,
        }));
    }
    events.push(AccountEvent::PasswordRecovered(PasswordRecovered {
        recovery_id: grant.recovery_id,
        method: grant.method,
        password_hash: ctx.hasher.hash(&c.new_password),
    }));
    // RC-6: every session ends; the next login confirms the recovery information.
    events.extend(end_sessions(
        state,
        SessionEndReason::PasswordRecovered,
        ctx.now,
    ));
    Ok(events)
}

/// Longest form reference accepted (RC-7).
const MAX_FORM_REFERENCE_CHARS: usize = 100;

fn operator_reset(
    state: &Account,
    c: &OperatorReset,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let reference = c.form_reference.trim();
    if reference.is_empty()
        || reference.chars().count() > MAX_FORM_REFERENCE_CHARS
        || reference.chars().any(char::is_control)
    {
        return Err(AccountError::Invalid(vec![Violation::new(
            "RC-7.form_reference",
            Some("form_reference"),
            "the signed form's reference has 1 to 100 characters",
        )]));
    }
    if matches!(
        state.status,
        AccountStatus::Revoked | AccountStatus::Deactivated
    ) {
        return Err(AccountError::RecoveryRefused);
    }
    let mut events = Vec::new();
    // The holder proved who they are on paper: a login lockout ends with the reset.
    if let Some(until) = state.login_locked_until {
        events.push(AccountEvent::LoginUnlocked(LoginUnlocked {
            locked_until: until,
        }));
    }
    // The operator hands the password over (RC-7): no worker delivers it, so nothing is sealed.
    events.push(AccountEvent::TemporaryPasswordIssued(
        TemporaryPasswordIssued {
            password_hash: ctx.hasher.hash(&c.password),
            reason: TemporaryPasswordReason::OperatorReset,
            form_reference: Some(reference.to_string()),
            sealed_password: None,
        },
    ));
    events.extend(end_sessions(
        state,
        SessionEndReason::OperatorReset,
        ctx.now,
    ));
    Ok(events)
}

fn set_recovery_info(
    state: &Account,
    c: &SetRecoveryInfo,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    // Setting it for the first time is a required action; changing contacts later is a
    // sensitive change and needs a fresh session (SEC-3).
    // First saving it is a required action and needs no step-up; so does confirming it
    // unchanged after a recovery (checked below, once we know it is unchanged).
    require_session(state, c.session_id, false, ctx.now)?;
    let mut errors = Vec::new();
    let current = &state.recovery;
    let email = match &c.email {
        Change::Keep => current.email.clone(),
        Change::Clear => None,
        Change::Set(raw) => {
            let normalized = normalize_email(raw);
            if normalized.is_none() {
                errors.push(Violation::new(
                    "RI-1.email",
                    Some("email"),
                    "not a valid e-mail address",
                ));
            }
            normalized
        }
    };
    let mobile = match &c.mobile {
        Change::Keep => current.mobile.clone(),
        Change::Clear => None,
        Change::Set(raw) => {
            let normalized = normalize_mobile(raw);
            if normalized.is_none() {
                errors.push(Violation::new(
                    "RI-1.mobile",
                    Some("mobile"),
                    "not a valid mobile number (E.164, or an Italian number)",
                ));
            }
            normalized
        }
    };
    let mut new_answer = None;
    let (question, answer_hash) = match &c.security {
        Change::Keep => (
            current.security_question.clone(),
            current.security_answer_hash.clone(),
        ),
        Change::Clear => (None, None),
        Change::Set(q) => {
            let question = q.question.trim().to_string();
            if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
                errors.push(Violation::new(
                    "RI-1.security_question",
                    Some("security_question"),
                    "the question must have 1 to 200 characters",
                ));
            }
            let answer = normalize_answer(q.answer.expose());
            if answer.is_empty() || answer.chars().count() > MAX_ANSWER_CHARS {
                errors.push(Violation::new(
                    "RI-1.security_answer",
                    Some("security_answer"),
                    "the answer must have 1 to 200 characters",
                ));
            } else if answer != normalize_answer(q.answer_repeat.expose()) {
                errors.push(Violation::new(
                    "RI-1.security_answer_repeat",
                    Some("security_answer_repeat"),
                    "the answer and its repetition differ",
                ));
            }
            new_answer = Some(Secret::new(answer));
            (Some(question), None)
        }
    };
    if email.is_none() && mobile.is_none() && errors.is_empty() {
        errors.push(Violation::new(
            "RI-2",
            None,
            "give at least a recovery e-mail or a mobile number",
        ));
    }
    if !errors.is_empty() {
        return Err(AccountError::Invalid(errors));
    }
    let unchanged = new_answer.is_none()
        && email == current.email
        && mobile == current.mobile
        && question == current.security_question
        && answer_hash == current.security_answer_hash;
    let confirming = unchanged && state.must_confirm_recovery_info;
    if !state.must_set_recovery_info && !confirming {
        require_session(state, c.session_id, true, ctx.now)?;
    }
    if unchanged && !state.must_set_recovery_info {
        // RC-6: saving it unchanged after a recovery confirms it; otherwise it records nothing.
        return Ok(if state.must_confirm_recovery_info {
            vec![AccountEvent::RecoveryInfoConfirmed(
                RecoveryInfoConfirmed {},
            )]
        } else {
            Vec::new()
        });
    }
    let answer_hash = match new_answer {
        Some(answer) => Some(ctx.hasher.hash(&answer)),
        None => answer_hash,
    };
    Ok(vec![AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
        email,
        mobile,
        security_question: question,
        security_answer_hash: answer_hash,
    })])
}
