//! The `custode` binary's library half: configuration, wiring and the HTTP API, so that tests
//! can build the same application the binary serves.

pub mod app;
pub mod audit;
pub mod backup;
pub mod captcha;
pub mod config;
pub mod http;
pub mod scenario;
