//! Workers fed from the log. For now the projector, which keeps the read models of this
//! process up to date; the relay, mailer, SMS sender and scheduler follow (issue #4).

pub mod projector;
