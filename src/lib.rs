//! recovery-service: the password-recovery service of an identity platform.
//!
//! Layers, top to bottom (ARCHITECTURE.md draws them): `server` wires everything and `config`
//! reads the settings; `api` translates gRPC to domain commands and domain errors to `Status`;
//! `accounts` (account use cases) sits on `recovery` (the flow, its rules, and the ports in
//! `recovery::ports`); `store` (short-lived data), `db` (accounts, audit, outbox, delivery queue)
//! and `notify` (sealing, templates, SMTP, the outbox relay) implement those ports; `secrets`,
//! `clock`, `net` (client addresses) and `telemetry` are neutral ground any layer may use.
//! Every import points down or sideways into neutral ground: the domain never imports an
//! adapter, `config`, `api` or `server`, and no two modules import each other.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod accounts;
pub mod api;
pub mod blocking;
pub mod clock;
pub mod config;
pub mod db;
pub mod hibp;
pub mod net;
pub mod notify;
pub mod proto;
pub mod recovery;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
