//! Every integration test of the service in one test binary (one link of the crate instead of
//! one per file): `cargo test --test suite [filter]`.
//!
//! - `e2e::…`: the end-to-end suites, on the backends `RECOVERY_TEST_STORE` and
//!   `RECOVERY_TEST_DB` choose (scripts/test.sh runs them on each);
//! - the other modules pick their backends themselves: the embedded ones always, Redis,
//!   Redis Cluster, Redis Sentinel, PostgreSQL and MariaDB when their variable is set
//!   (`common::backend`);
//! - `common`: the harness every module shares.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e;

mod account_repository;
mod backlog;
mod cli;
mod config_check;
mod delivery;
mod events;
mod faults;
mod gateway;
mod generated;
mod hashing;
mod lifecycle;
mod limits;
mod loadgen;
mod metrics;
mod races;
mod retention_growth;
mod smtp_notifier;
mod store_conformance;
mod telemetry;
mod transport;
