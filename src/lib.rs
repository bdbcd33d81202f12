//! recovery-service: the password-recovery service of an identity platform.
//!
//! Layers (see STYLE.md): `api` translates gRPC to the domain, `recovery` and `accounts` hold the
//! rules, `store` (short-lived data) and `db` (accounts, audit, outbox, delivery queue) persist,
//! `notify` delivers, `server` wires it all together. Domain code never imports a transport or a
//! driver.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod accounts;
pub mod api;
pub mod clock;
pub mod config;
pub mod db;
pub mod notify;
pub mod proto;
pub mod recovery;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
