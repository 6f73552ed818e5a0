//! AP-8: two-step verification: turning it on (the app's TOTP secret, an SMS code, or an
//! operator's hardware token) and off, and the second factor of a login or a step-up.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::{Account, TwoFactor};
use super::*;
use crate::decider::Ctx;
use crate::otp::{self, OtpPurpose};
use crate::secret::{Sealed, Secret};
use crate::violation::Violation;

/// What a TOTP code came to against `sealed` (AP-8: ±1 step, each step once per account).
pub(super) enum Totp {
    Accepted(u64),
    Rejected(CodeRejection),
}

pub(super) fn check_totp(state: &Account, sealed: &Sealed, code: &str, ctx: &Ctx<'_>) -> Totp {
    match ctx.totp.matching_step(sealed, code, ctx.now) {
        None => Totp::Rejected(CodeRejection::Wrong),
        Some(step) if state.last_totp_step.is_some_and(|last| step <= last) => {
            Totp::Rejected(CodeRejection::Replayed)
        }
        Some(step) => Totp::Accepted(step),
    }
}

fn code_shape(code: &Secret, field: &'static str) -> Result<(), AccountError> {
    if otp::well_formed(code.expose()) {
        Ok(())
    } else {
        Err(AccountError::Invalid(vec![Violation::new(
            "AP-8.code",
            Some(field),
            "the code has 6 digits",
        )]))
    }
}

/// The second factor of a login or a step-up, after a right password, appending to `events`.
/// `Ok(true)`: passed (or not on); `Ok(false)`: refused and recorded (a wrong or replayed code
/// is a failed login, SEC-6; for SMS without a code, the code just sent); `Err`: refused with
/// nothing to record (no code given for the app or a token).
#[allow(clippy::too_many_arguments)]
pub(super) fn second_factor(
    state: &Account,
    events: &mut Vec<AccountEvent>,
    code: Option<&Secret>,
    sms: Option<&DrawnCode>,
    client_ip: &Option<String>,
    channel: AccessChannel,
    session_id: Option<uuid::Uuid>,
    used_for: CodeUse,
    ctx: &Ctx<'_>,
) -> Result<bool, AccountError> {
    let Some(two_factor) = &state.two_factor else {
        return Ok(true);
    };
    match (two_factor.channel, &two_factor.sealed_secret, code) {
        // The code sent for an earlier attempt still works: no second SMS while it does.
        (TwoFactorChannel::Sms, _, None)
            if state
                .challenges
                .get(OtpPurpose::Login, None)
                .is_some_and(|c| c.is_open(ctx.now)) =>
        {
            Err(AccountError::SecondFactorRequired {
                channel: TwoFactorChannel::Sms,
            })
        }
        (TwoFactorChannel::Sms, _, None) => match sms {
            Some(drawn) => {
                events.push(super::sms_challenge(state, OtpPurpose::Login, drawn, ctx)?);
                Ok(false)
            }
            None => Err(AccountError::SecondFactorRequired {
                channel: TwoFactorChannel::Sms,
            }),
        },
        (TwoFactorChannel::Sms, _, Some(code)) => {
            let right = sms_confirmed(state, events, OtpPurpose::Login, code, ctx)?;
            if !right {
                // A wrong second factor is a failed login, whatever the channel (SEC-6, AH-1).
                super::sessions::failed_login_for(
                    state,
                    events,
                    LoginFailure::WrongCode,
                    client_ip.clone(),
                    channel,
                    session_id,
                    ctx,
                );
            }
            Ok(right)
        }
        (channel, _, None) => Err(AccountError::SecondFactorRequired { channel }),
        (_, None, Some(_)) => Err(AccountError::SecondFactorRequired {
            channel: two_factor.channel,
        }),
        (_, Some(sealed), Some(code)) => {
            code_shape(code, "otp")?;
            match check_totp(state, sealed, code.expose(), ctx) {
                Totp::Accepted(step) => {
                    events.push(AccountEvent::TotpAccepted(TotpAccepted { step, used_for }));
                    Ok(true)
                }
                Totp::Rejected(why) => {
                    let reason = match why {
                        CodeRejection::Wrong => LoginFailure::WrongCode,
                        CodeRejection::Replayed => LoginFailure::CodeReplayed,
                    };
                    super::sessions::failed_login_for(
                        state,
                        events,
                        reason,
                        client_ip.clone(),
                        channel,
                        session_id,
                        ctx,
                    );
                    Ok(false)
                }
            }
        }
    }
}

/// An SMS code against the live challenge of `purpose` (see `password::confirm_otp`), its
/// events appended to `events`; whether it was right.
fn sms_confirmed(
    state: &Account,
    events: &mut Vec<AccountEvent>,
    purpose: OtpPurpose,
    code: &Secret,
    ctx: &Ctx<'_>,
) -> Result<bool, AccountError> {
    let confirmed = super::password::confirm_otp(state, purpose, Some(code), ctx)?;
    let right = confirmed
        .iter()
        .any(|e| matches!(e, AccountEvent::OtpVerified(_)));
    events.extend(confirmed);
    Ok(right)
}

/// AP-8: turning two-step verification on needs a fresh session, no required action left, and
/// it off.
fn ready_to_turn_on(
    state: &Account,
    session_id: uuid::Uuid,
    ctx: &Ctx<'_>,
) -> Result<(), AccountError> {
    opened(state)?;
    ready_for_change(state, session_id, true, ctx)?;
    if state.two_factor.is_some() {
        return Err(AccountError::TwoFactorAlreadyOn);
    }
    Ok(())
}

pub(super) fn start(
    state: &Account,
    c: &StartTwoFactor,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    ready_to_turn_on(state, c.session_id, ctx)?;
    match c.channel {
        TwoFactorChannel::App => {
            let sealed = c.sealed_secret.clone().ok_or_else(|| {
                AccountError::Invalid(vec![Violation::new(
                    "AP-8.channel",
                    Some("channel"),
                    "no secret was drawn for the app",
                )])
            })?;
            Ok(vec![AccountEvent::TwoFactorEnrollmentStarted(
                TwoFactorEnrollmentStarted {
                    channel: TwoFactorChannel::App,
                    sealed_secret: Some(sealed),
                },
            )])
        }
        TwoFactorChannel::Sms => {
            let drawn = c.sms.as_ref().ok_or_else(|| {
                AccountError::Invalid(vec![Violation::new(
                    "AP-8.channel",
                    Some("channel"),
                    "no code was drawn for the SMS",
                )])
            })?;
            let code = super::sms_challenge(state, OtpPurpose::TwoFactorOn, drawn, ctx)?;
            Ok(vec![
                AccountEvent::TwoFactorEnrollmentStarted(TwoFactorEnrollmentStarted {
                    channel: TwoFactorChannel::Sms,
                    sealed_secret: None,
                }),
                code,
            ])
        }
        TwoFactorChannel::HardwareToken => Err(AccountError::Invalid(vec![Violation::new(
            "AP-8.channel",
            Some("channel"),
            "a hardware token is bound with its serial number and a current code",
        )])),
    }
}

/// A TOTP code outside a login: accepted, or `TotpRejected` (SEC-2's count of wrong codes in a
/// row, and its lock at the threshold). Whether it was accepted.
fn totp_outside_login(
    state: &Account,
    events: &mut Vec<AccountEvent>,
    sealed: &Sealed,
    code: &Secret,
    client_ip: &Option<String>,
    used_for: CodeUse,
    ctx: &Ctx<'_>,
) -> Result<bool, AccountError> {
    code_shape(code, "code")?;
    let opened_now = checks_open(state, ctx)?;
    let lock_ended = !opened_now.is_empty();
    events.extend(opened_now);
    match check_totp(state, sealed, code.expose(), ctx) {
        Totp::Accepted(step) => {
            events.push(AccountEvent::TotpAccepted(TotpAccepted { step, used_for }));
            Ok(true)
        }
        Totp::Rejected(reason) => {
            events.push(AccountEvent::TotpRejected(TotpRejected {
                reason,
                used_for,
                client_ip: client_ip.clone(),
            }));
            check_failed(state, events, lock_ended, ctx);
            Ok(false)
        }
    }
}

pub(super) fn confirm(
    state: &Account,
    c: &ConfirmTwoFactor,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    ready_to_turn_on(state, c.session_id, ctx)?;
    let pending = state
        .pending_two_factor
        .as_ref()
        .ok_or(AccountError::NoTwoFactorEnrollment)?;
    let mut events = Vec::new();
    let right = match (&pending.sealed_secret, pending.channel) {
        (Some(sealed), _) => totp_outside_login(
            state,
            &mut events,
            sealed,
            &c.code,
            &c.client_ip,
            CodeUse::TwoFactorOn,
            ctx,
        )?,
        (None, _) => sms_confirmed(state, &mut events, OtpPurpose::TwoFactorOn, &c.code, ctx)?,
    };
    if right {
        events.push(enabled(pending));
    }
    Ok(events)
}

fn enabled(two_factor: &TwoFactor) -> AccountEvent {
    AccountEvent::TwoFactorEnabled(TwoFactorEnabled {
        channel: two_factor.channel,
        sealed_secret: two_factor.sealed_secret.clone(),
        serial: two_factor.serial.clone(),
    })
}

pub(super) fn bind_hardware_token(
    state: &Account,
    c: &BindHardwareToken,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    ready_to_turn_on(state, c.session_id, ctx)?;
    let mut events = Vec::new();
    let right = totp_outside_login(
        state,
        &mut events,
        &c.sealed_seed,
        &c.code,
        &c.client_ip,
        CodeUse::TwoFactorOn,
        ctx,
    )?;
    if right {
        events.push(enabled(&TwoFactor {
            channel: TwoFactorChannel::HardwareToken,
            sealed_secret: Some(c.sealed_seed.clone()),
            serial: Some(c.serial.clone()),
        }));
    }
    Ok(events)
}

pub(super) fn disable(
    state: &Account,
    c: &DisableTwoFactor,
    ctx: &Ctx<'_>,
) -> Result<Vec<AccountEvent>, AccountError> {
    opened(state)?;
    ready_for_change(state, c.session_id, true, ctx)?;
    let two_factor = state
        .two_factor
        .as_ref()
        .ok_or(AccountError::TwoFactorNotOn)?;
    let mut events = Vec::new();
    let right = match &two_factor.sealed_secret {
        Some(sealed) => totp_outside_login(
            state,
            &mut events,
            sealed,
            &c.code,
            &c.client_ip,
            CodeUse::TwoFactorOff,
            ctx,
        )?,
        None => sms_confirmed(state, &mut events, OtpPurpose::TwoFactorOff, &c.code, ctx)?,
    };
    if right {
        events.push(AccountEvent::TwoFactorDisabled(TwoFactorDisabled {
            channel: two_factor.channel,
        }));
        // AP-1: passwords for mail programs exist only with two-step verification on.
        events.extend(
            state
                .app_passwords
                .iter()
                .filter(|(_, p)| !p.deactivated)
                .map(|(scope, _)| {
                    AccountEvent::AppPasswordDeactivated(AppPasswordDeactivated {
                        scope: scope.clone(),
                    })
                }),
        );
    }
    Ok(events)
}
