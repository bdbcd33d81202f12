//! Password hashing under load: hashes made with old argon2 parameters are upgraded on the next
//! successful login, and a flood of hashing calls stays within the documented memory bound
//! (base + max_in_flight × m_cost), measured on a separate server process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use recovery_service::accounts::HashSettings;
use recovery_service::db::entities::account;
use recovery_service::proto;
use recovery_service::proto::account_service_client::AccountServiceClient;
use recovery_service::server::Overrides;
use sea_orm::EntityTrait;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

async fn stored_hash(app: &TestApp, account_id: &str) -> String {
    account::Entity::find_by_id(account_id.to_owned())
        .one(app.database.connection())
        .await
        .unwrap()
        .expect("the account row")
        .password_hash
}

#[tokio::test]
async fn a_successful_login_rehashes_a_hash_made_with_old_parameters() {
    // Both apps share one SQLite file, as two releases of the service share one database.
    let dir = TempDir::new();
    let database_url = format!("sqlite://{}?mode=rwc", dir.0.join("shared.db").display());
    let login = unique_login();

    let old_url = database_url.clone();
    let old = spawn_app_with(
        move |c| {
            c.database_url = old_url;
            c.hashing = HashSettings {
                m_cost_kib: 256,
                t_cost: 1,
                p_cost: 1,
                ..HashSettings::default()
            };
        },
        Overrides::default(),
    )
    .await;
    let account_id = old.create_account(&login).await;
    let old_hash = stored_hash(&old, &account_id).await;
    assert!(
        old_hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
        "{old_hash}"
    );
    old.stop().await;

    let new = spawn_app_with(
        move |c| {
            c.database_url = database_url;
            c.hashing = HashSettings {
                m_cost_kib: 1024,
                t_cost: 2,
                p_cost: 1,
                ..HashSettings::default()
            };
        },
        Overrides::default(),
    )
    .await;
    // A wrong password proves nothing about the person: the old hash stays.
    assert!(!new.login_works(&login, NEW_PASSWORD).await);
    assert_eq!(stored_hash(&new, &account_id).await, old_hash);

    assert!(new.login_works(&login, OLD_PASSWORD).await);
    let upgraded = stored_hash(&new, &account_id).await;
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"),
        "not rehashed with the current parameters: {upgraded}"
    );
    // The upgraded hash still opens the account, and is not rehashed again.
    assert!(new.login_works(&login, OLD_PASSWORD).await);
    assert_eq!(stored_hash(&new, &account_id).await, upgraded);
    new.stop().await;
}

/// The server binary of this build, serving with `config`; killed on drop.
struct ServerProcess {
    child: Child,
    port: u16,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    fn start(dir: &Path, config: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config_file = dir.join("recovery.toml");
        std::fs::write(
            &config_file,
            format!("listen = \"127.0.0.1:{port}\"\n{config}"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_recovery-service"))
            .arg("--config")
            .arg(&config_file)
            .arg("serve")
            .env_remove("RECOVERY_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the server binary starts");
        Self { child, port }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status (this test needs Linux)");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn wait_until_serving(&mut self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("the server exited ({exit}) before serving:\n{log}");
            }
            if let Ok(endpoint) = Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))
                && let Ok(channel) = endpoint.connect().await
                && HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not come up in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const MIB: u64 = 1024;
const M_COST_KIB: u64 = 19 * 1024;
const MAX_IN_FLIGHT: u64 = 4;
const CALLS: usize = 1_000;
const CONNECTIONS: usize = 10;
/// What the bound allows beyond the hashing memory: 1,000 open HTTP/2 streams with their
/// buffers and tasks, the database pool, and allocator slack.
const SLACK_KIB: u64 = 64 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_password_checks_stays_within_the_hashing_memory_bound() {
    let dir = TempDir::new();
    let config = format!(
        r#"database_url = "sqlite://{db}?mode=rwc"
secret = "{SECRET}"
captcha = false
[hashing]
# OWASP: m=19 MiB, t=2, p=1.
m_cost_kib = {M_COST_KIB}
t_cost = 2
p_cost = 1
max_in_flight = {MAX_IN_FLIGHT}
queue_timeout_ms = 2000
[rate_limits]
# The flood must reach the hasher; the per-login limit would stop it first.
enabled = false
[server]
concurrency_limit = 1000
"#,
        db = dir.0.join("recovery.db").display(),
    );
    let mut server = ServerProcess::start(&dir.0, &config);
    server.wait_until_serving(&dir.0).await;
    // Idle after start-up (the dummy hash is made and freed by then): the base of the bound.
    let base_kib = server.status_kib("VmRSS:");

    let login = unique_login();
    AccountServiceClient::new(server.channel().await)
        .create_account(proto::CreateAccountRequest {
            login_id: login.clone(),
            email: String::new(),
            phone: String::new(),
            password: OLD_PASSWORD.into(),
        })
        .await
        .expect("account created over loopback");

    // Many connections, so the calls are in flight at the server at once rather than queued
    // behind one connection's stream limit.
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(server.channel().await);
    }
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let mut client = AccountServiceClient::new(channels[i % CONNECTIONS].clone());
        // A quarter of the logins do not exist: they are checked against the dummy hash and
        // must be bounded the same way.
        let login_id = if i % 4 == 0 {
            format!("nobody{i}@example.com")
        } else {
            login.clone()
        };
        calls.spawn(async move {
            client
                .verify_password(proto::VerifyPasswordRequest {
                    login_id,
                    password: OLD_PASSWORD.into(),
                })
                .await
        });
    }
    let (mut verified, mut rejected_unknown, mut busy) = (0usize, 0usize, 0usize);
    let mut other = Vec::new();
    while let Some(outcome) = calls.join_next().await {
        match outcome.unwrap() {
            Ok(response) if response.get_ref().valid => verified += 1,
            Ok(_) => rejected_unknown += 1,
            Err(status)
                if status.code() == Code::ResourceExhausted
                    && status
                        .get_details_error_info()
                        .is_some_and(|info| info.reason == "RATE_LIMITED") =>
            {
                busy += 1
            }
            Err(status) => other.push(status),
        }
    }
    let elapsed = started.elapsed();
    let peak_kib = server.status_kib("VmHWM:");
    let bound_kib = base_kib + MAX_IN_FLIGHT * M_COST_KIB + SLACK_KIB;
    let unbounded_kib = CALLS as u64 * M_COST_KIB;
    println!(
        "{CALLS} VerifyPassword calls in {elapsed:.1?}: {verified} verified, {rejected_unknown} \
         unknown logins answered, {busy} told to back off (RATE_LIMITED)\n\
         peak RSS {} MiB; bound {} MiB = base {} MiB + {MAX_IN_FLIGHT} x {} MiB + slack {} MiB; \
         unbounded hashing would need {} MiB",
        peak_kib / MIB,
        bound_kib / MIB,
        base_kib / MIB,
        M_COST_KIB / MIB,
        SLACK_KIB / MIB,
        unbounded_kib / MIB,
    );
    assert!(
        other.is_empty(),
        "unexpected errors: {:?}",
        &other[..other.len().min(5)]
    );
    assert_eq!(verified + rejected_unknown + busy, CALLS);
    assert!(verified > 0, "no call got through the hasher");
    assert!(
        busy > 0,
        "the flood never exhausted the hasher; the test did not test the bound"
    );
    assert!(
        peak_kib <= bound_kib,
        "peak RSS {peak_kib} KiB exceeds the bound {bound_kib} KiB"
    );
    // The server is still healthy after the flood.
    HealthClient::new(server.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .expect("serving after the flood");
}
