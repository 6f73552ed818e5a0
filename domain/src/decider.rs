//! The contract every aggregate fulfils, and the one generic handler in `custode-commands`
//! runs: *load* the stream (fold its events with [`Decider::evolve`]), [`Decider::decide`] a
//! command against the state, *append* what it yields at the version it was decided on.
//!
//! ```text
//!   stream_for(id) ──► events ──fold evolve──► State ──decide(cmd, ctx)──► Vec<Event> | Error
//! ```
//! `decide` is pure and deterministic: time, settings and the hashers arrive in [`Ctx`]; fresh
//! random values (ids, token hashes, codes) are drawn by the handler and arrive in the command.
//! So every rule reads as *given these events, when this command, then these events or this
//! error*, and the handler alone owns turn-taking, retries on a version conflict and storage.

use crate::otp::{CodeHasher, TotpVerifier};
use crate::secret::SecretHasher;
use crate::settings::Settings;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What the outside world supplies to `decide`.
pub struct Ctx<'a> {
    pub now: DateTime<Utc>,
    pub settings: &'a Settings,
    /// Argon2id in the service; a fast fake in domain tests.
    pub hasher: &'a dyn SecretHasher,
    /// The keyed hash of one-time codes.
    pub codes: &'a dyn CodeHasher,
    /// AP-8: TOTP codes against sealed secrets.
    pub totp: &'a dyn TotpVerifier,
}

/// A refusal with a stable code: the HTTP layer maps each code to one problem type.
pub trait Refusal: std::error::Error + Clone + PartialEq + Send + Sync + 'static {
    fn code(&self) -> &'static str;
}

impl Refusal for std::convert::Infallible {
    fn code(&self) -> &'static str {
        match *self {}
    }
}

/// One aggregate: its streams, state, commands, events and refusals.
pub trait Decider: Send + Sync + 'static {
    /// What names one stream of this aggregate (an account id, a notice id, a user id).
    type Id: Send + Sync + 'static;
    type State: Default + Clone + Send + Sync + 'static;
    type Command: Clone + Send + Sync + 'static;
    /// Serialized as `{"type": …, "payload": …}`; each type's version lives in
    /// [`crate::envelope::current_version`].
    type Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    type Error: Refusal;

    /// The stream `id` acts on (`account-<uuid>`, `userid-<key>`, …).
    fn stream_for(id: &Self::Id) -> String;

    fn decide(
        state: &Self::State,
        command: &Self::Command,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Whether `decide` hashes or verifies a secret: the handler then runs it on the bounded
    /// hashing pool instead of the async runtime (PW-5).
    fn needs_hashing(_command: &Self::Command) -> bool {
        false
    }
}
