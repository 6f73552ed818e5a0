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

mod decide;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use decide::*;
pub use events::*;
pub use state::*;

use uuid::Uuid;

pub fn stream_for(account_id: Uuid) -> String {
    format!("account-{account_id}")
}
