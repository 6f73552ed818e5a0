//! The account aggregate: one stream per account (`account-<uuid>`).
//!
//! ```text
//!  OpenAccount ──► active ──(ChangePassword, SetRecoveryInfo, sessions)──► active
//!                    │   (suspended, revoked, deactivated arrive with later rules: ACC-4)
//! ```
//! An account opened with temporary credentials carries the required actions
//! `change_password` and `set_recovery_info` (ACC-2) until the holder has done both; a migrated
//! mailbox (ACC-3) only `set_recovery_info`. Sessions live in the same stream (SEC-3): a login
//! is `SessionStarted` (or `LoginFailed`), and a password change ends every live session.

mod commands;
mod decide;
mod errors;
mod events;
mod state;
#[cfg(test)]
mod tests;
pub mod upcast;

pub use crate::decider::Ctx;
pub use commands::*;
pub use decide::{
    answer_malformed, decide, next_inactivity_check, plus_months, postpone_available_from,
    spid_code, Scope, APP_PASSWORD_MONTHS, CONTACT_COOLDOWN_DAYS, DOCUMENT_NOTICE_DAYS,
    EXPIRY_NOTICE_DAYS, INACTIVITY_WARNING_DAYS, MAX_SUSPENSION_DAYS, PASSWORD_NOTICE_DAYS,
    POSTPONE_WINDOW_DAYS,
};
pub use errors::*;
pub use events::*;
pub use state::*;

use uuid::Uuid;

pub fn stream_for(account_id: Uuid) -> String {
    format!("account-{account_id}")
}

/// The account aggregate as the generic handler runs it.
pub struct Accounts;

impl crate::decider::Decider for Accounts {
    type Id = Uuid;
    type State = Account;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn stream_for(id: &Uuid) -> String {
        stream_for(*id)
    }

    fn decide(
        state: &Account,
        command: &AccountCommand,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        decide(state, command, ctx)
    }

    fn evolve(state: Account, event: &AccountEvent) -> Account {
        evolve(state, event)
    }

    fn needs_hashing(command: &AccountCommand) -> bool {
        command.needs_hashing()
    }
}
