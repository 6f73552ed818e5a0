//! ACC-1..3: opening an account with temporary credentials or an imported password.

use super::super::commands::*;
use super::super::errors::AccountError;
use super::super::events::*;
use super::super::state::Account;
use crate::decider::Ctx;
use crate::masking::{normalize_email, normalize_mobile};
use crate::violation::Violation;

const MAX_NAME_CHARS: usize = 200;

pub(super) fn open(
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
        if name.trim().is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(crate::violation::hidden_char)
        {
            errors.push(Violation::new(
                "ACC-1.name",
                Some("name"),
                "the name must have 1 to 200 characters, none of them control or direction characters",
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
    // CO-1: a collaborator opened by its holder names its contact the reference email, and
    // needs a name.
    let by_link = matches!(c.password, InitialPassword::Link { .. });
    let contact_email = c.contact_email.as_deref().map(normalize_email);
    if let Some(None) = contact_email {
        errors.push(match by_link {
            true => Violation::new(
                "CO-1.reference_email",
                Some("reference_email"),
                "not a valid e-mail address",
            ),
            false => Violation::new(
                "ACC-1.contact_email",
                Some("contact_email"),
                "not a valid e-mail address",
            ),
        });
    }
    if by_link && c.name.is_none() {
        errors.push(Violation::new(
            "CO-1.name",
            Some("name"),
            "give the collaborator's name",
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
    // An identity's password changes, suspension and SC-5's authorisations are confirmed by a
    // code to its contact mobile (PW-4, SC-5, SC-6), and a session never sets the first one
    // (SC-3): opened without it, the holder could never do any of them.
    if c.kind == AccountKind::Identity && contact_mobile.is_none() {
        errors.push(Violation::new(
            "ACC-1.contact_mobile",
            Some("contact_mobile"),
            "an identity is opened with its contact mobile, where the codes that confirm its password changes and suspension go",
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
                "the imported password must be an Argon2 PHC string no weaker than PW-5's floor (m=19456 KiB, t=2, p=1), at most m=262144 KiB, t=10, p=8",
            ));
        }
    }
    if !c.permissions.is_empty() && c.kind != AccountKind::Collaborator {
        errors.push(Violation::new(
            "CO-1.permissions",
            Some("permissions"),
            "only collaborators have permissions",
        ));
    }
    if by_link && (c.kind != AccountKind::Collaborator || contact_email.is_none()) {
        errors.push(Violation::new(
            "CO-1.reference_email",
            Some("reference_email"),
            "a collaborator's first password is made through a link to its reference email",
        ));
    }
    if let Some(expires_on) = c.identity_expires_on {
        if c.kind != AccountKind::Identity {
            errors.push(Violation::new(
                "SC-1.identity_expires_on",
                Some("identity_expires_on"),
                "only identities have an expiry",
            ));
        } else if expires_on <= ctx.now.date_naive() {
            errors.push(Violation::new(
                "SC-1.identity_expires_on",
                Some("identity_expires_on"),
                "an identity opened now must still be valid",
            ));
        } else if chrono::Datelike::year(&expires_on) > 9999 {
            errors.push(Violation::new(
                "SC-1.identity_expires_on",
                Some("identity_expires_on"),
                "a date up to 9999-12-31",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AccountError::Invalid(errors));
    }
    let mut permissions = c.permissions.clone();
    permissions.sort();
    permissions.dedup();
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
        permissions,
    };
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
        InitialPassword::Link { token_hash, sealed } => {
            super::collaborators::first_link(&opened, token_hash, sealed, ctx)?
        }
    };
    let mut events = vec![password_event];
    if matches!(c.password, InitialPassword::Imported(_)) {
        events.extend(super::self_care::password_expiry(&opened, ctx));
    }
    events.extend(super::self_care::identity_issued(
        &opened,
        c.identity_expires_on,
        ctx,
    ));
    events.extend(super::self_care::inactivity_start(state, &opened, ctx));
    events.insert(0, AccountEvent::AccountOpened(opened));
    Ok(events)
}
