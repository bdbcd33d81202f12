//! End-to-end suites: the real server on port 0, called through the generated clients, on the
//! backends `RECOVERY_TEST_STORE` and `RECOVERY_TEST_DB` choose. `scripts/test.sh` runs every
//! test under `e2e::` again on Redis + PostgreSQL and on Redis Cluster + MariaDB, so a module
//! declared here is run on every backend with no other change.

mod admin_recovery;
mod attacker;
mod boundary;
mod breach_check;
mod live_code;
mod localized_errors;
mod lockout;
mod mail_content;
mod model;
mod password_policy;
mod proof_of_work;
mod recovery_flow;
mod redaction;
mod report;
mod security;
mod service;
mod webhooks;
