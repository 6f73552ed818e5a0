//! The write path of custode: the append-only SQLite event log with group commit and a hash
//! chain ([`log`]), the one load → decide → append handler ([`handler`]) and the flows on it ([`accounts`],
//! [`recovery`]), the bounded Argon2id
//! pool ([`hashing`]), tokens ([`tokens`]) and the clock ([`clock`]).

pub mod access_recorder;
pub mod accounts;
pub mod canonical;
pub mod checkpoint;
pub mod clock;
pub mod delegation;
pub mod delivery;
pub mod handler;
pub mod hashing;
pub mod log;
pub mod notices;
pub mod recovery;
pub mod secrets;
pub mod service_key;
pub mod sqlite;
pub mod tokens;

pub use log::{
    EventLog, LogError, LogOptions, LogReader, LogTimes, Metadata, NewEvent, StreamAppend,
    Synchronous, WireEvent,
};
