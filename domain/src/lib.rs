//! The pure core of custode: the event envelope, the deciders (one module per aggregate), the
//! password policy, masking and the settings with SPEC's defaults.
//!
//! Nothing here does I/O, reads a clock or draws randomness: time, fresh ids and token bytes and
//! the password hasher arrive as parameters of `decide` (see [`account::Ctx`]), so every rule is
//! testable as *given these events, when this command, then these events or this error*.

pub mod access;
pub mod account;
pub mod audit;
pub mod decider;
pub mod envelope;
pub mod hardware_token;
pub mod lockout;
pub mod masking;
pub mod notice;
pub mod notify;
pub mod otp;
pub mod policy;
pub mod recovery;
pub mod schedule;
pub mod secret;
pub mod settings;
pub mod subject;
pub mod user_registry;
pub mod violation;

pub use decider::{Ctx, Decider, Refusal};
pub use envelope::{Actor, ActorKind, RecordedEvent};
pub use secret::{PasswordHash, Sealed, Secret, SecretHasher, TokenHash};
pub use settings::Settings;
pub use violation::Violation;
