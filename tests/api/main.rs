#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! End-to-end tests through the HTTP API and the CLI, against the real application on a free
//! port (and, for the CLI tests, the real binary). One test binary, one module per area
//! (zero2prod's layout), so the crate links once.

mod admin;
mod audit;
mod browser;
mod cli;
mod contract;
mod crash;
mod delegation;
mod fanout;
mod fuzz;
mod helpers;
mod history;
mod identity_care;
mod journey;
mod notify;
mod outage;
mod pages;
mod password;
mod processes;
mod recovery;
mod replay;
mod robustness;
mod scenario;
mod self_care;
mod sessions;
mod upgrade;
