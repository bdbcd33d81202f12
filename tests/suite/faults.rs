//! Outages of real backends. These tests start and stop their own `redis-server` and
//! PostgreSQL (a throwaway cluster made with the installed `initdb`/`pg_ctl`) on spare
//! loopback ports, never the shared ones on 6379/5432. They run when Redis (and, for the
//! PostgreSQL ones, PostgreSQL) is wanted (`common::backend`); a missing binary then fails the
//! test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::servers::{PrivateRedis, spare_port};
use crate::common::*;
use recovery_service::proto::{self, FlowState};
use recovery_service::server::Overrides;
use tonic::Code;

/// The contract asks for "a bounded time"; the defaults (Redis command timeout 2 s, and here a
/// 1 s pool acquire timeout) must answer well inside it.
const BOUND: Duration = Duration::from_secs(5);

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on 127.0.0.1:{port}");
}

/// A throwaway PostgreSQL cluster under /tmp, run as user `postgres` when the tests run as
/// root (PostgreSQL refuses to run as root). Stopped and removed on drop.
struct PostgresServer {
    bin: PathBuf,
    base: PathBuf,
    port: u16,
    running: bool,
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL in /usr/lib/postgresql ({e}); run scripts/test-services.sh")
        })
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .expect("initdb and pg_ctl under /usr/lib/postgresql/*/bin")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PostgresServer {
    fn start() -> Self {
        let bin = postgres_bin();
        let base = std::env::temp_dir().join(format!("recovery-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&base).unwrap();
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&base)
                .status()
                .unwrap();
            assert!(status.success(), "chown of {}", base.display());
        }
        let mut server = Self {
            bin,
            base,
            port: spare_port(),
            running: false,
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ],
        );
        server.start_again();
        server
    }

    fn data(&self) -> String {
        self.base.join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// One of the PostgreSQL binaries, to run as `postgres` if we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .current_dir(&self.base)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.base.display()
        );
        let log = self.base.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        self.running = true;
        wait_for_port(self.port, "PostgreSQL");
    }

    fn stop(&mut self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        self.running = false;
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
                .output();
        }
        remove_dir(&self.base);
    }
}

fn remove_dir(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}

/// Asserts an RPC failed with UNAVAILABLE (+ RetryInfo) inside the bound; returns how long it
/// took.
#[track_caller]
fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    started: Instant,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Duration {
    let took = started.elapsed();
    let failure = result.failure();
    failure.assert(Code::Unavailable, "UNAVAILABLE");
    assert!(
        failure.retry_after().is_some(),
        "{what}: UNAVAILABLE carries RetryInfo"
    );
    assert!(
        took < BOUND,
        "{what} took {took:?} to fail (bound {BOUND:?})"
    );
    eprintln!("{what}: UNAVAILABLE after {took:?}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_calls_are_unavailable_in_bounded_time_and_recover_without_a_restart() {
    if backend::redis().is_none() {
        return;
    }
    let mut redis = PrivateRedis::start_on(spare_port());
    let redis_url = redis.url();
    let app = spawn_app_with(
        move |config| config.redis_url = Some(redis_url),
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;

    redis.stop();
    let mut client = app.recovery.clone();
    let started = Instant::now();
    let result = client.create_captcha(proto::CreateCaptchaRequest {}).await;
    assert_unavailable("CreateCaptcha", started, result);
    let started = Instant::now();
    let result = client
        .start_recovery(proto::StartRecoveryRequest {
            login_id: login.clone(),
            captcha_id: "00000000-0000-0000-0000-000000000000".into(),
            captcha_answer: CAPTCHA_ANSWER.into(),
            locale: "en".into(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await;
    assert_unavailable("StartRecovery", started, result);
    let started = Instant::now();
    let result = app.send_code(&flow.flow_id).await;
    assert_unavailable("SendVerificationCode", started, result);
    // Still down a while later: every call keeps answering promptly (no hang after retries).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let started = Instant::now();
    let result = client.create_captcha(proto::CreateCaptchaRequest {}).await;
    assert_unavailable("CreateCaptcha, later", started, result);

    // Redis is back on the same address (empty: it kept nothing). The same service, without
    // a restart, serves again once its connection manager has reconnected.
    let _redis = PrivateRedis::start_on(redis.port);
    let back = Instant::now();
    loop {
        match client.create_captcha(proto::CreateCaptchaRequest {}).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::Unavailable => {
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "still UNAVAILABLE 10 s after Redis came back"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("unexpected failure after Redis came back: {status:?}"),
        }
    }
    eprintln!("serving again {:?} after Redis came back", back.elapsed());
    let flow = app.start(&login).await;
    app.send_and_read_code(&flow.flow_id, &login).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_stopped_a_reset_is_unavailable_keeps_the_token_and_succeeds_after() {
    let (Some(redis_url), Some(_)) = (backend::redis(), backend::postgres()) else {
        return;
    };
    let mut postgres = PostgresServer::start();
    let database_url = postgres.url();
    let app = spawn_app_with(
        move |config| {
            config.database_url = database_url;
            config.redis_url = Some(redis_url);
            config.database.connect_timeout_ms = 1_000;
            config.database.acquire_timeout_ms = 1_000;
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let (flow_id, token) = app.verified_flow(&login).await;

    postgres.stop();
    let started = Instant::now();
    let result = app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_unavailable("ResetPassword", started, result);
    // Nothing was consumed: the flow still holds its usable token.
    let flow = app
        .recovery
        .clone()
        .get_recovery_flow(proto::GetRecoveryFlowRequest {
            flow_id: flow_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(flow.state(), FlowState::Verified);

    postgres.start_again();
    let back = Instant::now();
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .expect("the same token resets once the database is back");
    eprintln!(
        "reset succeeded {:?} after PostgreSQL came back",
        back.elapsed()
    );
    assert!(app.login_works(&login, NEW_PASSWORD).await);
    assert!(!app.login_works(&login, OLD_PASSWORD).await);
    // And it was a real, single use.
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    app.stop().await;
}

/// Found by the soak (benches/SOAK.md): the recipient lookup ran after the flow had changed and
/// outside the put-back, so a send answered UNAVAILABLE during a database outage had spent the
/// cooldown and the retry got RESEND_TOO_SOON for a code that was never queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_stopped_a_send_is_unavailable_and_spends_nothing() {
    let (Some(redis_url), Some(_)) = (backend::redis(), backend::postgres()) else {
        return;
    };
    let mut postgres = PostgresServer::start();
    let database_url = postgres.url();
    let app = spawn_app_with(
        move |config| {
            config.database_url = database_url;
            config.redis_url = Some(redis_url);
            config.database.connect_timeout_ms = 1_000;
            config.database.acquire_timeout_ms = 1_000;
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;

    postgres.stop();
    let started = Instant::now();
    let result = app.send_code(&flow.flow_id).await;
    assert_unavailable("SendVerificationCode", started, result);
    let after = app
        .recovery
        .clone()
        .get_recovery_flow(proto::GetRecoveryFlowRequest {
            flow_id: flow.flow_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.state(), FlowState::ChooseMethod);
    // The account lookups of several starts at once, coalesced into one failing batch, are
    // each answered UNAVAILABLE in bounded time (the server batches lookups by login).
    let started = Instant::now();
    let starts: Vec<_> = (0..4).map(|_| app.try_start(&login)).collect();
    for result in futures_util::future::join_all(starts).await {
        assert_unavailable("StartRecovery", started, result);
    }

    postgres.start_again();
    // No cooldown was spent: the retry sends at once and the code arrives.
    let code = app.send_and_read_code(&flow.flow_id, &login).await;
    assert_eq!(code.len(), 6);
    app.stop().await;
}
