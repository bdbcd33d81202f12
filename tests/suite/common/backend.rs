//! The shared services a run may use. The embedded backends (SQLite, the in-process store) always;
//! Redis, Redis Cluster, Redis Sentinel, PostgreSQL and MariaDB when their variable is set
//! (`scripts/test.sh` sets every one) or when `RECOVERY_TEST_STORE` / `RECOVERY_TEST_DB` names
//! them. So plain `cargo test` on a machine with no services runs every embedded test and passes.
//!
//! A test whose service is not wanted returns at once, and the first such test prints one line
//! naming what was left to `scripts/test.sh`. A service that is wanted but cannot be reached fails
//! the test: nothing is ever skipped silently.

use std::io::Write as _;
use std::sync::Once;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Redis,
    Cluster,
    Sentinel,
    Postgres,
    Mysql,
}

const SERVICES: [Service; 5] = [
    Service::Redis,
    Service::Cluster,
    Service::Sentinel,
    Service::Postgres,
    Service::Mysql,
];

impl Service {
    fn variable(self) -> &'static str {
        match self {
            Self::Redis => "RECOVERY_TEST_REDIS_URL",
            Self::Cluster => "RECOVERY_TEST_REDIS_CLUSTER",
            Self::Sentinel => "RECOVERY_TEST_REDIS_SENTINEL",
            Self::Postgres => "RECOVERY_TEST_POSTGRES_URL",
            Self::Mysql => "RECOVERY_TEST_MYSQL_URL",
        }
    }

    /// Where `scripts/test-services.sh`, `redis-cluster.sh` and `redis-sentinel.sh` start it.
    fn default_url(self) -> &'static str {
        match self {
            Self::Redis => "redis://127.0.0.1:6379",
            Self::Cluster => "redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003",
            Self::Sentinel => {
                "redis+sentinel://127.0.0.1:7211,127.0.0.1:7212,127.0.0.1:7213/recovery"
            }
            Self::Postgres => "postgres://postgres@127.0.0.1:5432",
            Self::Mysql => "mysql://root@127.0.0.1:3306",
        }
    }

    /// What runs on it, for the line that says what was left.
    fn suites(self) -> &'static str {
        match self {
            Self::Redis => {
                "store conformance, events, faults and races on Redis, and the Redis cases of \
                 attacker, config_check, delivery, metrics and security"
            }
            Self::Cluster => "store conformance on Redis Cluster",
            Self::Sentinel => "store conformance and fail-overs on Redis Sentinel",
            Self::Postgres => {
                "repository, lifecycle, backlog, retention, faults and races on PostgreSQL"
            }
            Self::Mysql => "repository, lifecycle and backlog on MariaDB",
        }
    }

    /// `RECOVERY_TEST_STORE` or `RECOVERY_TEST_DB` names it: whoever set that has it running.
    fn selected(self) -> bool {
        let store = std::env::var("RECOVERY_TEST_STORE").unwrap_or_default();
        let db = std::env::var("RECOVERY_TEST_DB").unwrap_or_default();
        match self {
            Self::Redis => store == "redis",
            Self::Cluster => store == "cluster",
            Self::Sentinel => false,
            Self::Postgres => db == "postgres",
            Self::Mysql => db == "mysql",
        }
    }

    fn configured(self) -> Option<String> {
        match std::env::var(self.variable()) {
            Ok(url) => Some(url),
            Err(_) if self.selected() => Some(self.default_url().to_owned()),
            Err(_) => None,
        }
    }

    /// Its URL when wanted; `None` (and the line, once per run) when not.
    fn url(self) -> Option<String> {
        let url = self.configured();
        if url.is_none() {
            announce_left();
        }
        url
    }
}

/// Prints, once per run, which services' suites this run leaves to `scripts/test.sh`.
fn announce_left() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let left: Vec<Service> = SERVICES
            .into_iter()
            .filter(|service| service.configured().is_none())
            .collect();
        let variables: Vec<&str> = left.iter().map(|service| service.variable()).collect();
        let suites: Vec<&str> = left.iter().map(|service| service.suites()).collect();
        // Straight to the standard error, past the test harness's capture: one line per run.
        let _ = writeln!(
            std::io::stderr(),
            "note: left to scripts/test.sh ({} unset): {}",
            variables.join(", "),
            suites.join("; ")
        );
    });
}

/// The shared single-node Redis (`RECOVERY_TEST_REDIS_URL`), when wanted. Also the sign that this
/// machine has `redis-server` for the tests that start private ones.
pub fn redis() -> Option<String> {
    Service::Redis.url()
}

/// The Redis Cluster's node URLs, comma-separated (`RECOVERY_TEST_REDIS_CLUSTER`), when wanted.
pub fn cluster() -> Option<String> {
    Service::Cluster.url()
}

/// The Redis Sentinel set-up (`RECOVERY_TEST_REDIS_SENTINEL`), when wanted.
pub fn sentinel() -> Option<String> {
    Service::Sentinel.url()
}

/// PostgreSQL (`RECOVERY_TEST_POSTGRES_URL`, a server URL without a database), when wanted. Also
/// the sign that this machine has the PostgreSQL binaries for the tests that start private ones.
pub fn postgres() -> Option<String> {
    Service::Postgres.url()
}

/// Whether a relational database of `kind` (`sqlite`, `postgres` or `mysql`) may be used:
/// SQLite always.
pub fn database(kind: &str) -> bool {
    match kind {
        "sqlite" => true,
        "postgres" => Service::Postgres.url().is_some(),
        "mysql" => Service::Mysql.url().is_some(),
        other => panic!("database {other}: expected sqlite, postgres or mysql"),
    }
}

/// The server URL (without a database) of `kind` (`postgres` or `mysql`). A test reaching for a
/// server nobody wanted asks [`database`] first; one that did not fails here, saying so.
pub(super) fn database_server(kind: &str) -> String {
    let service = match kind {
        "postgres" => Service::Postgres,
        "mysql" => Service::Mysql,
        other => panic!("RECOVERY_TEST_DB={other}: expected sqlite, postgres or mysql"),
    };
    service.configured().unwrap_or_else(|| {
        panic!(
            "a test used {kind} without asking common::backend::database(\"{kind}\") first \
             ({} is unset)",
            service.variable()
        )
    })
}
