//! Commands of the account aggregate and the pure `decide` that turns one into events or a
//! typed refusal. Fresh values (ids, token hashes, the temporary password) are drawn by the
//! handler and arrive inside the command; time, settings and the hasher arrive in [`Ctx`].

use super::events::*;
use super::state::Account;
use crate::masking::{normalize_answer, normalize_email, normalize_mobile};
use crate::policy::{self, Holder};
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
            | AccountCommand::SetRecoveryInfo(_) => true,
            AccountCommand::Logout(_) => false,
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
    let right = state
        .current_password()
        .is_some_and(|hash| ctx.hasher.verify(&c.password, hash));
    if !right {
        return Ok(vec![AccountEvent::LoginFailed(LoginFailed {
            reason: LoginFailure::WrongPassword,
            client_ip: c.client_ip.clone(),
            session_id: None,
        })]);
    }
    let sessions = &ctx.settings.sessions;
    Ok(vec![AccountEvent::SessionStarted(SessionStarted {
        session_id: c.session_id,
        token_hash: c.token_hash.clone(),
        started_at: ctx.now,
        expires_at: ctx.now + sessions.lifetime(),
        fresh_until: ctx.now + sessions.step_up(),
        client_ip: c.client_ip.clone(),
        required_actions: state.required_actions(),
    })])
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
    let right = state
        .current_password()
        .is_some_and(|hash| ctx.hasher.verify(&c.password, hash));
    if !right {
        return Ok(vec![AccountEvent::LoginFailed(LoginFailed {
            reason: LoginFailure::WrongPassword,
            client_ip: c.client_ip.clone(),
            session_id: Some(c.session_id),
        })]);
    }
    // Step-up never outlives the session itself.
    let fresh_until = (ctx.now + ctx.settings.sessions.step_up()).min(session.expires_at);
    Ok(vec![AccountEvent::SessionReauthenticated(
        SessionReauthenticated {
            session_id: c.session_id,
            fresh_until,
        },
    )])
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
    if c.new_password != c.new_password_repeat {
        violations.push(Violation::new(
            "PW-4.repeat",
            Some("new_password_repeat"),
            "the new password and its repetition differ",
        ));
    }
    violations
        .extend(policy::evaluate(c.new_password.expose(), &holder, policy).violations(policy));
    if !violations.is_empty() {
        return Err(AccountError::PasswordPolicy(violations));
    }
    // The expensive check last: one Argon2 verification per remembered password, except the
    // current one, which was just verified to be `current_password` and compares in the clear.
    let reused = policy.history > 0
        && (c.new_password == c.current_password
            || state
                .passwords
                .iter()
                .take(policy.history)
                .skip(1)
                .any(|old| ctx.hasher.verify(&c.new_password, old)));
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
    let mut events = vec![AccountEvent::PasswordChanged(PasswordChanged {
        password_hash: ctx.hasher.hash(&c.new_password),
    })];
    // PW-4: every session ends, the one that asked included; the holder logs in again.
    let live: Vec<Uuid> = state
        .sessions
        .iter()
        .filter(|(_, s)| s.expires_at > ctx.now)
        .map(|(id, _)| *id)
        .collect();
    if !live.is_empty() {
        events.push(AccountEvent::SessionsEnded(SessionsEnded {
            session_ids: live,
            reason: SessionEndReason::PasswordChanged,
        }));
    }
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
    require_session(state, c.session_id, !state.must_set_recovery_info, ctx.now)?;
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
    if unchanged && !state.must_set_recovery_info {
        // Saving the same information again records nothing.
        return Ok(Vec::new());
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
