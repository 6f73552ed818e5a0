//! Identities' self-care beyond SC-2 and SC-6: the read-only identity data (SC-1), contact
//! changes (SC-3), recovery contact changes and their cooldown (SC-5), password age (PW-6) and
//! inactivity (SC-8). The last two run from the scheduler's command timers.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use super::*;
use crate::decider::Ctx;
use crate::masking::{normalize_email, normalize_mobile};
use crate::notice::Channel;
use crate::otp::{self, OtpPurpose};
use crate::recovery::RecoveryMethod;
use crate::secret::Secret;
use crate::violation::Violation;
use chrono::{Duration, Months};

/// SC-3: contact email changes a day at most (each mails two addresses).
pub const CONTACT_EMAIL_CHANGES_PER_DAY: usize = 3;
/// SC-5: how long a changed recovery contact stays as it is.
pub const CONTACT_COOLDOWN_DAYS: i64 = 6;
/// PW-6: the days before a password's expiry when the holder is told.
pub const PASSWORD_NOTICE_DAYS: [u32; 3] = [14, 3, 1];
/// SC-8: the days before an unused identity's revocation when the holder is warned.
pub const INACTIVITY_WARNING_DAYS: [u32; 4] = [90, 30, 10, 1];

// ---- SC-1 ----------------------------------------------------------------------------------

/// SC-1: an identity's SPID code, drawn from its account id (60 random bits of a v4 or v7
/// UUID, in base 32): stable, unique in practice, and readable over the phone.
pub fn spid_code(account_id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bits = account_id.as_u128();
    let code: String = (0..12)
        .filter_map(|i| ALPHABET.get(((bits >> (5 * i)) & 31) as usize))
        .map(|&b| char::from(b))
        .collect();
    format!("CSTD{code}")
}

/// SC-1 at opening: the identity's issue (today) and, when given, its expiry.
pub(super) fn identity_issued(
    opened: &AccountOpened,
    expires_on: Option<chrono::NaiveDate>,
    ctx: &Ctx<'_>,
) -> Option<AccountEvent> {
    (opened.kind == AccountKind::Identity).then(|| {
        AccountEvent::IdentityIssued(IdentityIssued {
            spid_code: spid_code(opened.account_id),
            issued_on: ctx.now.date_naive(),
            expires_on,
        })
    })
}

// ---- SC-3 ----------------------------------------------------------------------------------

fn not_for_collaborators(profile: &AccountOpened) -> Result<(), AccountError> {
    if profile.kind == AccountKind::Collaborator {
        return Err(AccountError::Invalid(vec![Violation::new(
            "CO-4",
            None,
            "a collaborator's only contact is its reference email, never edited: deactivate it and create it anew",
        )]));
    }
    Ok(())
}

pub(super) fn change_contact_email(
    state: &Account,
    c: &ChangeContactEmail,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    ready_for_change(state, c.session_id, true, ctx)?;
    not_for_collaborators(profile)?;
    let email = normalize_email(&c.email).ok_or_else(|| {
        AccountError::Invalid(vec![Violation::new(
            "SC-3.email",
            Some("email"),
            "not a valid e-mail address",
        )])
    })?;
    if profile.contact_email.as_deref() == Some(email.as_str()) {
        return Ok(Vec::new());
    }
    // Each change mails the old and the new address: a few a day, so a session cannot turn
    // the notices into a mailer.
    let day_ago = ctx.now - Duration::days(1);
    let recent: Vec<_> = state
        .contact_email_changes
        .iter()
        .filter(|at| **at > day_ago)
        .collect();
    if recent.len() >= CONTACT_EMAIL_CHANGES_PER_DAY {
        let until = recent
            .iter()
            .min()
            .map_or(ctx.now, |oldest| **oldest + Duration::days(1));
        return Err(AccountError::ContactEmailChanges {
            until,
            seconds: (until - ctx.now).num_seconds().max(1),
        });
    }
    Ok(vec![AccountEvent::ContactEmailChanged(
        ContactEmailChanged { email, at: ctx.now },
    )])
}

pub(super) fn start_contact_mobile_change(
    state: &Account,
    c: &StartContactMobileChange,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    ready_for_change(state, c.session_id, true, ctx)?;
    not_for_collaborators(profile)?;
    let mobile = normalize_mobile(&c.mobile).ok_or_else(|| {
        AccountError::Invalid(vec![Violation::new(
            "SC-3.mobile",
            Some("mobile"),
            "not a valid mobile number (E.164, or an Italian number)",
        )])
    })?;
    if profile.contact_mobile.as_deref() == Some(mobile.as_str()) {
        return Err(AccountError::Invalid(vec![Violation::new(
            "SC-3.mobile",
            Some("mobile"),
            "this is already the contact mobile",
        )]));
    }
    // An identity's contact mobile is where SC-5's authorising codes go: the first one is the
    // identity provider's (recorded at opening), never the session's own choice.
    if profile.kind == AccountKind::Identity && profile.contact_mobile.is_none() {
        return Err(AccountError::MethodUnavailable);
    }
    // Both codes fit in the hour's messages, or neither goes (SEC-2).
    let codes = 1 + usize::from(profile.contact_mobile.is_some());
    state
        .otp_messages
        .allow_many(ctx.settings, ctx.now, codes)?;
    let mut events = Vec::new();
    // A code to the number on file proves the holder still has it; one to the new number
    // proves the new one is the holder's.
    if let Some(current) = &profile.contact_mobile {
        events.push(challenge(
            state,
            OtpPurpose::ContactChange,
            Channel::Sms,
            current,
            &c.current,
            ctx,
        )?);
    }
    events.push(challenge(
        state,
        OtpPurpose::NewContactMobile,
        Channel::Sms,
        &mobile,
        &c.new,
        ctx,
    )?);
    Ok(events)
}

pub(super) fn confirm_contact_mobile_change(
    state: &Account,
    c: &ConfirmContactMobileChange,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    ready_for_change(state, c.session_id, true, ctx)?;
    not_for_collaborators(profile)?;
    let new = state
        .challenges
        .get(OtpPurpose::NewContactMobile, None)
        .ok_or(AccountError::NoCode)?;
    let target = new.target.clone();
    let mut codes = vec![(
        OtpPurpose::NewContactMobile,
        c.code.as_ref(),
        "code",
        "SC-3.code",
    )];
    if profile.contact_mobile.is_some() {
        codes.insert(
            0,
            (
                OtpPurpose::ContactChange,
                c.current_code.as_ref(),
                "current_code",
                "SC-3.current_code",
            ),
        );
    }
    let (mut events, right) = confirm_codes(state, &codes, ctx)?;
    if right {
        events.push(AccountEvent::ContactMobileChanged(ContactMobileChanged {
            mobile: target,
            form_reference: None,
            recovery_mobile: None,
        }));
    }
    Ok(events)
}

/// SC-3 when self-service fails: the holder lost the number on file (its code cannot arrive),
/// or an identity opened before ACC-1 asked for one has none, so PW-4's and SC-5's codes have
/// nowhere to go. An operator records the new contact mobile after a signed form and an
/// identity document, as RC-7 does for a password; the contact email is told (NT), and codes
/// on their way to the old number are void. The number already on file records nothing, so a
/// request sent again is harmless.
pub(super) fn operator_set_contact_mobile(
    state: &Account,
    c: &OperatorSetContactMobile,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    let reference = super::password::form_reference(&c.form_reference, "SC-3.form_reference");
    let mobile = normalize_mobile(&c.mobile).ok_or_else(|| {
        Violation::new(
            "SC-3.mobile",
            Some("contact_mobile"),
            "not a valid mobile number (E.164, or an Italian number)",
        )
    });
    // Every rule the request breaks, at once.
    let (reference, mobile) = match (reference, mobile) {
        (Ok(reference), Ok(mobile)) => (reference, mobile),
        (reference, mobile) => {
            let violations = [reference.err(), mobile.err()].into_iter().flatten();
            return Err(AccountError::Invalid(violations.collect()));
        }
    };
    not_for_collaborators(profile)?;
    not_closed(state)?;
    if profile.contact_mobile.as_deref() == Some(mobile.as_str()) {
        return Ok(Vec::new());
    }
    // The lost phone must not recover the account either (RC-3): a recovery mobile that was the
    // same number moves to the new one with it.
    let recovery_mobile = (profile.contact_mobile.is_some()
        && state.recovery.mobile == profile.contact_mobile)
        .then(|| mobile.clone());
    let mut events = vec![AccountEvent::ContactMobileChanged(ContactMobileChanged {
        mobile,
        form_reference: Some(reference),
        recovery_mobile,
    })];
    // A session opened on the lost phone (or by whoever holds it) goes no further.
    events.extend(end_sessions(
        state,
        SessionEndReason::ContactMobileReplaced,
        ctx.now,
    ));
    Ok(events)
}

/// Checks every `(purpose, code, field, rule)` against its live challenge at once: all right gives
/// an `OtpVerified` each; otherwise only the wrong ones are recorded (`OtpCheckFailed`, and
/// SEC-2's lock at the threshold) and no code is spent, so a typo in one does not cost the
/// other. The events, and whether every code was right.
pub(super) fn confirm_codes(
    state: &Account,
    codes: &[(OtpPurpose, Option<&Secret>, &'static str, &'static str)],
    ctx: &Ctx<'_>,
) -> Result<(Vec<AccountEvent>, bool), AccountError> {
    let mut violations = Vec::new();
    let mut found = Vec::new();
    for (purpose, code, field, rule) in codes {
        match code {
            None => violations.push(Violation::new(
                rule,
                Some(field),
                if *field == "otp" {
                    "ask for a code with POST /v1/account/otp and send it as `otp`"
                } else {
                    "send the 6-digit code received"
                },
            )),
            Some(code) if !otp::well_formed(code.expose()) => {
                violations.push(Violation::new(rule, Some(field), "the code has 6 digits"))
            }
            Some(code) => found.push((*purpose, *code)),
        }
    }
    if !violations.is_empty() {
        return Err(AccountError::Invalid(violations));
    }
    let mut checked = Vec::new();
    for (purpose, code) in found {
        let challenge = state
            .challenges
            .get(purpose, None)
            .ok_or(AccountError::NoCode)?;
        let candidate = ctx.codes.hash_code(challenge.challenge_id, code.expose());
        match challenge.check(&candidate, ctx.now) {
            otp::Check::Right => checked.push((challenge.challenge_id, None)),
            otp::Check::Wrong { attempts_left } => {
                checked.push((challenge.challenge_id, Some(attempts_left)))
            }
            otp::Check::Missing => return Err(AccountError::NoCode),
            otp::Check::Expired => return Err(AccountError::CodeExpired),
            otp::Check::Exhausted => return Err(AccountError::CodeExhausted),
        }
    }
    let mut events = checks_open(state, ctx)?;
    let lock_ended = !events.is_empty();
    let wrong: Vec<_> = checked
        .iter()
        .filter_map(|(id, left)| left.map(|l| (*id, l)))
        .collect();
    if wrong.is_empty() {
        events.extend(
            checked
                .into_iter()
                .map(|(challenge_id, _)| AccountEvent::OtpVerified(OtpVerified { challenge_id })),
        );
        return Ok((events, true));
    }
    for (challenge_id, attempts_left) in wrong {
        events.push(AccountEvent::OtpCheckFailed(OtpCheckFailed {
            challenge_id,
            attempts_left,
            client_ip: None,
        }));
    }
    check_failed(state, &mut events, lock_ended, ctx);
    Ok((events, false))
}

// ---- SC-5 ----------------------------------------------------------------------------------

/// SC-5's two codes for a recovery contact: the one that authorises the change, and the one
/// sent to the new contact.
fn change_purposes(method: RecoveryMethod) -> Result<(OtpPurpose, OtpPurpose), AccountError> {
    match method {
        RecoveryMethod::Email => Ok((
            OtpPurpose::RecoveryEmailChange,
            OtpPurpose::NewRecoveryEmail,
        )),
        RecoveryMethod::Sms => Ok((
            OtpPurpose::RecoveryMobileChange,
            OtpPurpose::NewRecoveryMobile,
        )),
        RecoveryMethod::Question => Err(AccountError::Invalid(vec![Violation::new(
            "SC-5.method",
            Some("method"),
            "the recovery email or mobile changes this way, not the question",
        )])),
    }
}

/// SC-5: whether the recovery contact `method` may change now (an identity's, out of its
/// cooldown): asked before a code is sent for it.
pub(super) fn change_possible(
    state: &Account,
    method: RecoveryMethod,
    ctx: &Ctx<'_>,
) -> Result<(), AccountError> {
    if opened(state)?.kind != AccountKind::Identity {
        return Err(AccountError::NotIdentity);
    }
    cooldown_over(state, method, ctx)
}

fn cooldown_over(
    state: &Account,
    method: RecoveryMethod,
    ctx: &Ctx<'_>,
) -> Result<(), AccountError> {
    match state.recovery_cooldowns.of(method) {
        Some(until) if until > ctx.now => Err(AccountError::ContactCooldown { until }),
        _ => Ok(()),
    }
}

pub(super) fn start_recovery_contact_change(
    state: &Account,
    c: &StartRecoveryContactChange,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    require_session(state, c.session_id, true, ctx.now)?;
    if profile.kind != AccountKind::Identity {
        return Err(AccountError::NotIdentity);
    }
    let (authorise, confirm) = change_purposes(c.method)?;
    cooldown_over(state, c.method, ctx)?;
    let (contact, current, channel, field, rule) = match c.method {
        RecoveryMethod::Email => (
            normalize_email(&c.contact),
            &state.recovery.email,
            Channel::Email,
            "email",
            "SC-5.email",
        ),
        _ => (
            normalize_mobile(&c.contact),
            &state.recovery.mobile,
            Channel::Sms,
            "mobile",
            "SC-5.mobile",
        ),
    };
    let Some(contact) = contact else {
        return Err(AccountError::Invalid(vec![Violation::new(
            rule,
            Some(field),
            match c.method {
                RecoveryMethod::Email => "not a valid e-mail address",
                _ => "not a valid mobile number (E.164, or an Italian number)",
            },
        )]));
    };
    if current.as_deref() == Some(contact.as_str()) {
        return Err(AccountError::Invalid(vec![Violation::new(
            rule,
            Some(field),
            "this is already the recovery contact on file",
        )]));
    }
    let (mut events, right) = confirm_codes(
        state,
        &[(authorise, c.otp.as_ref(), "otp", "SC-5.otp")],
        ctx,
    )?;
    if right {
        events.push(challenge(state, confirm, channel, &contact, &c.code, ctx)?);
    }
    Ok(events)
}

pub(super) fn confirm_recovery_contact_change(
    state: &Account,
    c: &ConfirmRecoveryContactChange,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    require_session(state, c.session_id, true, ctx.now)?;
    if profile.kind != AccountKind::Identity {
        return Err(AccountError::NotIdentity);
    }
    let (_, confirm) = change_purposes(c.method)?;
    cooldown_over(state, c.method, ctx)?;
    let contact = state
        .challenges
        .get(confirm, None)
        .ok_or(AccountError::NoCode)?
        .target
        .clone();
    let (mut events, right) = confirm_codes(
        state,
        &[(confirm, c.code.as_ref(), "code", "SC-5.code")],
        ctx,
    )?;
    if !right {
        return Ok(events);
    }
    let current = &state.recovery;
    let (email, mobile) = match c.method {
        RecoveryMethod::Email => (Some(contact.clone()), current.mobile.clone()),
        _ => (current.email.clone(), Some(contact.clone())),
    };
    events.push(AccountEvent::RecoveryInfoSet(RecoveryInfoSet {
        email,
        mobile,
        security_question: current.security_question.clone(),
        security_answer_hash: current.security_answer_hash.clone(),
    }));
    // The code sent there proved it: the new contact is Verified (SC-4) from the start.
    events.push(AccountEvent::RecoveryContactVerified(
        RecoveryContactVerified {
            method: c.method,
            contact,
        },
    ));
    events.push(AccountEvent::RecoveryContactChanged(
        RecoveryContactChanged {
            method: c.method,
            cooldown_until: ctx.now + Duration::days(CONTACT_COOLDOWN_DAYS),
        },
    ));
    Ok(events)
}

/// SC-5: an identity's recovery email or mobile on file changes only through its flow (codes,
/// then the cooldown); `PUT /v1/account/recovery-info` may set one that is missing only while
/// the recovery information is a required action (ACC-2, RC-6). Later, adding one is a change
/// like another: else the password and a fresh session alone would choose where a recovery's
/// code goes, and the recovery would give a new password without PW-4's code to the contact
/// mobile. The same holds for setting the security question, which has no flow of its own.
pub(super) fn contact_change_through_flow(
    state: &Account,
    profile: &AccountOpened,
    email: &Option<String>,
    mobile: &Option<String>,
    sets_question: bool,
) -> Result<(), AccountError> {
    // RC-7: after an operator's reset (the holder proved who it is on a signed form), the
    // first save may replace a lost contact.
    // Only once the temporary password is replaced: a holder of that alone does not choose
    // where recovery goes.
    if profile.kind != AccountKind::Identity
        || (state.reset_by_operator && !state.must_change_password)
    {
        return Ok(());
    }
    let current = &state.recovery;
    // While the recovery information is a required action, a missing contact may be set.
    let required = state.must_set_recovery_info || state.must_confirm_recovery_info;
    let mut errors = Vec::new();
    for (new, on_file, field, rule, how) in [
        (
            email,
            &current.email,
            "email",
            "SC-5.email",
            "an identity changes or adds its recovery email with POST /v1/account/recovery-info/email (a code to the contact mobile, then one to the new address)",
        ),
        (
            mobile,
            &current.mobile,
            "mobile",
            "SC-5.mobile",
            "an identity changes or adds its recovery mobile with POST /v1/account/recovery-info/mobile (a code to the current number, or to the contact mobile when there is none, then one to the new)",
        ),
    ] {
        if new != on_file && (on_file.is_some() || !required) {
            errors.push(Violation::new(rule, Some(field), how));
        }
    }
    // The security question resets the password as a recovery contact's code does (RC-4), and
    // SPEC gives it no flow of codes: an identity sets it only with the required actions.
    if sets_question && !required {
        errors.push(Violation::new(
            "SC-5.security_question",
            Some("security_question"),
            "an identity sets its security question only while its recovery information is a required action (after opening, after a recovery, after an operator's reset): a question chosen with the password alone would reset the password without PW-4's code to the contact mobile",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AccountError::Invalid(errors))
    }
}

// ---- PW-6 ----------------------------------------------------------------------------------

/// PW-6: the expiry of a password set now by the holder, when its kind's passwords age.
pub(super) fn password_expiry(profile: &AccountOpened, ctx: &Ctx<'_>) -> Option<AccountEvent> {
    let policy = &ctx.settings.policy;
    let days = match profile.kind {
        AccountKind::Identity => policy.identity_max_age_days,
        AccountKind::Mailbox | AccountKind::Collaborator => policy.mailbox_max_age_days,
    };
    (days > 0).then(|| {
        AccountEvent::PasswordExpirySet(PasswordExpirySet {
            expires_at: ctx.now + Duration::days(i64::from(days)),
        })
    })
}

/// PW-6: whether the current password has expired by `now` (recorded or not yet).
pub(super) fn password_has_expired(state: &Account, now: DateTime<Utc>) -> bool {
    state
        .password_expiry
        .as_ref()
        .is_some_and(|p| p.expired || p.expires_at <= now)
}

/// PW-6 at a login: the expiry to record if the scheduler has not yet; for a password set
/// before passwords aged (an earlier version's log), its age starts now.
pub(super) fn password_age_at_login(
    state: &Account,
    profile: &AccountOpened,
    ctx: &Ctx<'_>,
) -> Option<AccountEvent> {
    match &state.password_expiry {
        Some(p) if !p.expired && p.expires_at <= ctx.now => {
            Some(AccountEvent::PasswordExpired(PasswordExpired {
                expires_at: p.expires_at,
            }))
        }
        Some(_) => None,
        None if state.must_change_password => None,
        None => password_expiry(profile, ctx),
    }
}

pub(super) fn note_password_expiry(
    state: &Account,
    c: &NotePasswordExpiry,
    _ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    let Some(p) = &state.password_expiry else {
        return Ok(Vec::new());
    };
    if p.expires_at != c.expires_at
        || p.expired
        || matches!(
            state.status,
            AccountStatus::Revoked | AccountStatus::Deactivated
        )
    {
        return Ok(Vec::new());
    }
    Ok(if c.days_before == 0 {
        vec![AccountEvent::PasswordExpired(PasswordExpired {
            expires_at: c.expires_at,
        })]
    } else if p.noticed.contains(&c.days_before) {
        Vec::new()
    } else {
        vec![AccountEvent::PasswordExpiryNoticed(PasswordExpiryNoticed {
            expires_at: c.expires_at,
            days_before: c.days_before,
        })]
    })
}

// ---- SC-8 ----------------------------------------------------------------------------------

/// SC-8: the revocation date of an identity last used at `used`, if inactivity revokes.
fn revocation_after(used: DateTime<Utc>, ctx: &Ctx<'_>) -> Option<DateTime<Utc>> {
    let months = ctx.settings.identity.inactivity_months;
    (months > 0).then(|| {
        used.checked_add_months(Months::new(months))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    })
}

/// SC-8: when to look again at a revocation due `revokes_at`: the first warning day (or the
/// date itself) still ahead of `now`.
pub fn next_inactivity_check(revokes_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    INACTIVITY_WARNING_DAYS
        .iter()
        .map(|&d| revokes_at - Duration::days(i64::from(d)))
        .find(|&at| at > now)
        .unwrap_or(revokes_at)
}

/// A new revocation date; when a warning for it is already due (the date moved less far than
/// the first warning's distance), the scheduler looks again at once to give it.
fn deadline_set(revokes_at: DateTime<Utc>, now: DateTime<Utc>) -> AccountEvent {
    let due = INACTIVITY_WARNING_DAYS
        .iter()
        .any(|&d| revokes_at - Duration::days(i64::from(d)) <= now);
    AccountEvent::InactivityDeadlineSet(InactivityDeadlineSet {
        revokes_at,
        next_check_at: if due {
            now
        } else {
            next_inactivity_check(revokes_at, now)
        },
    })
}

/// SC-8 at opening, or at a login of an identity opened before inactivity was watched.
pub(super) fn inactivity_start(
    state: &Account,
    profile: &AccountOpened,
    ctx: &Ctx<'_>,
) -> Option<AccountEvent> {
    if profile.kind != AccountKind::Identity || state.inactivity.is_some() {
        return None;
    }
    revocation_after(ctx.now, ctx).map(|at| deadline_set(at, ctx.now))
}

pub(super) fn review_inactivity(
    state: &Account,
    c: &ReviewInactivity,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let profile = opened(state)?;
    let Some(inactivity) = &state.inactivity else {
        return Ok(Vec::new());
    };
    if profile.kind != AccountKind::Identity
        || matches!(
            state.status,
            AccountStatus::Revoked | AccountStatus::Deactivated
        )
    {
        return Ok(Vec::new());
    }
    let last_used = state.last_login.max(c.last_reported_access);
    let moved = last_used
        .and_then(|used| revocation_after(used, ctx))
        .filter(|&at| at > inactivity.revokes_at);
    if let Some(revokes_at) = moved {
        return Ok(vec![deadline_set(revokes_at, ctx.now)]);
    }
    if ctx.settings.identity.inactivity_months == 0 {
        return Ok(Vec::new());
    }
    let revokes_at = inactivity.revokes_at;
    if ctx.now >= revokes_at {
        let mut events = vec![AccountEvent::RevokedForInactivity(RevokedForInactivity {
            revokes_at,
        })];
        events.extend(end_sessions(state, SessionEndReason::Revoked, ctx.now));
        return Ok(events);
    }
    // The most urgent warning due, if it is more urgent than every one given.
    let due = INACTIVITY_WARNING_DAYS
        .iter()
        .copied()
        .filter(|&d| ctx.now >= revokes_at - Duration::days(i64::from(d)))
        .min();
    match due {
        Some(days_before) if inactivity.warned.is_none_or(|given| days_before < given) => {
            Ok(vec![AccountEvent::InactivityWarned(InactivityWarned {
                revokes_at,
                days_before,
                next_check_at: next_inactivity_check(revokes_at, ctx.now),
            })])
        }
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_spid_code_is_stable_and_differs_between_accounts() {
        let a = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let b = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdee);
        assert_eq!(spid_code(a), spid_code(a));
        assert_ne!(spid_code(a), spid_code(b));
        assert_eq!(spid_code(a).len(), 16);
        assert!(spid_code(a).starts_with("CSTD"));
    }

    #[test]
    fn the_next_inactivity_check_is_the_next_warning_day_then_the_date() {
        let revokes = Utc.with_ymd_and_hms(2028, 6, 1, 12, 0, 0).unwrap();
        let day = |d: i64| revokes - Duration::days(d);
        assert_eq!(next_inactivity_check(revokes, day(400)), day(90));
        assert_eq!(next_inactivity_check(revokes, day(90)), day(30));
        assert_eq!(next_inactivity_check(revokes, day(5)), day(1));
        assert_eq!(next_inactivity_check(revokes, day(1)), revokes);
        assert_eq!(next_inactivity_check(revokes, revokes), revokes);
    }
}
