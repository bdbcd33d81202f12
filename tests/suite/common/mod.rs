//! The test harness: the real server on port 0, called through the generated clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use recovery_service::clock::ManualClock;
use recovery_service::config::Config;
use recovery_service::notify::{CapturingNotifier, Email};
use recovery_service::proto::account_service_client::AccountServiceClient;
use recovery_service::proto::recovery_service_client::RecoveryServiceClient;
use recovery_service::proto::{self, FlowState};
use recovery_service::server::{App, Overrides};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub mod own_process;
pub use own_process::alone;
pub mod backend;
pub mod faults;
pub mod servers;
pub mod smtp_sink;

pub const SECRET: &str = "test-secret-0123456789-0123456789-0123456789";
/// Passes the seed policy (long, not common, zxcvbn 4).
pub const OLD_PASSWORD: &str = "Old-Granite-Harbor-73!";
pub const NEW_PASSWORD: &str = "New-Velvet-Lantern-58?";
/// Every captcha of a test app shows this number (the test cannot read the picture).
pub const CAPTCHA_ANSWER: &str = "482915";

pub struct TestApp {
    pub address: String,
    pub recovery: RecoveryServiceClient<Channel>,
    pub accounts: AccountServiceClient<Channel>,
    pub notifier: CapturingNotifier,
    pub clock: ManualClock,
    pub app: Arc<recovery_service::recovery::Recovery>,
    pub database: recovery_service::db::Database,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

/// The service binary run in `dir` with nothing but `PATH` from the test's environment and its
/// own SQLite file, so no developer's `RECOVERY_*` variable can change what a CLI test sees.
pub fn binary_command(dir: &TempDir, db_file: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_recovery-service"));
    command
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "RECOVERY_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.0.join(db_file).display()),
        )
        .env("RUST_LOG", "warn");
    command
}

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("recovery-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The documented defaults except argon2 cost (kept tiny so the suite stays fast; the
/// parameters themselves are tested in unit tests) and captcha answers.
/// Which database the suite runs on: `RECOVERY_TEST_DB` = `sqlite` (default), `postgres` or
/// `mysql`. Each test app gets a database of its own, so tests never see each other's rows.
/// A server that cannot be reached fails the test: nothing is skipped.
pub async fn fresh_database_url(dir: &TempDir) -> String {
    let kind = std::env::var("RECOVERY_TEST_DB").unwrap_or_else(|_| "sqlite".into());
    fresh_database_url_for(&kind, dir).await
}

/// A new, empty database on `kind` (`sqlite`, `postgres` or `mysql`), whatever
/// `RECOVERY_TEST_DB` says: for suites that run every backend in one process.
pub async fn fresh_database_url_for(kind: &str, dir: &TempDir) -> String {
    use sea_orm::ConnectionTrait;
    let name = format!("rt_{}", uuid::Uuid::new_v4().simple());
    if kind == "sqlite" {
        return format!(
            "sqlite://{}?mode=rwc",
            dir.0.join(format!("{name}.db")).display()
        );
    }
    let base = backend::database_server(kind);
    let (admin, url) = (format!("{base}/test"), format!("{base}/{name}"));
    let conn = sea_orm::Database::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RECOVERY_TEST_DB={kind}: cannot reach {admin} ({e}); run scripts/test-services.sh"
            )
        });
    conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    conn.close().await.ok();
    url
}

/// Drops a database made by `fresh_database_url_for` (best effort: a leftover is only clutter).
/// SQLite files go with their `TempDir`.
pub async fn drop_database(url: &str) {
    use sea_orm::ConnectionTrait;
    let Some((base, name)) = url.rsplit_once('/') else {
        return;
    };
    let statement = if url.starts_with("postgres") {
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    } else if url.starts_with("mysql") {
        format!("DROP DATABASE IF EXISTS {name}")
    } else {
        return;
    };
    if let Ok(admin) = sea_orm::Database::connect(format!("{base}/test")).await {
        let _ = admin.execute_unprepared(&statement).await;
        admin.close().await.ok();
    }
}

/// Which short-lived store the suite runs on: `RECOVERY_TEST_STORE` = `memory` (default),
/// `redis` (single node, `RECOVERY_TEST_REDIS_URL`) or `cluster` (`RECOVERY_TEST_REDIS_CLUSTER`).
pub fn test_redis_url() -> Option<String> {
    match std::env::var("RECOVERY_TEST_STORE")
        .unwrap_or_else(|_| "memory".into())
        .as_str()
    {
        "memory" => None,
        "redis" => backend::redis(),
        "cluster" => backend::cluster(),
        other => panic!("RECOVERY_TEST_STORE={other}: expected memory, redis or cluster"),
    }
}

pub fn test_config(dir: &TempDir) -> Config {
    let hashing = recovery_service::accounts::HashSettings {
        m_cost_kib: 256,
        t_cost: 1,
        ..Default::default()
    };
    let delivery = recovery_service::notify::queue::DeliverySettings {
        poll_interval_ms: 50,
        ..Default::default()
    };
    let server = recovery_service::config::ServerConfig {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Default::default()
    };
    let redis = recovery_service::config::RedisConfig {
        key_prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
        ..Default::default()
    };
    Config {
        database_url: format!("sqlite://{}?mode=rwc", dir.0.join("recovery.db").display()),
        redis_url: test_redis_url(),
        redis,
        secret: Some(SecretString::from(SECRET)),
        hashing,
        delivery,
        server,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, Overrides::default()).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config), overrides: Overrides) -> TestApp {
    spawn_app_on_clock(ManualClock::new(Utc::now()), configure, overrides).await
}

/// `spawn_app_with` on a clock the caller made first (e.g. to give a store the same clock).
pub async fn spawn_app_on_clock(
    clock: ManualClock,
    configure: impl FnOnce(&mut Config),
    overrides: Overrides,
) -> TestApp {
    // `RUST_LOG=debug cargo test …` shows the service's logs for a failing test.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let dir = TempDir::new();
    let mut config = test_config(&dir);
    config.database_url = fresh_database_url(&dir).await;
    configure(&mut config);
    let notifier = CapturingNotifier::new();
    let overrides = Overrides {
        clock: Some(Arc::new(clock.clone())),
        // A test may bring its own notifier (a failing one), or configure SMTP to get the real
        // one; otherwise messages are captured in memory.
        notifier: match (&overrides.notifier, config.notifier) {
            (Some(own), _) => Some(own.clone()),
            (None, recovery_service::config::NotifierKind::Smtp) => None,
            (None, _) => Some(Arc::new(notifier.clone())),
        },
        captcha_answers: Some(Arc::new(|| CAPTCHA_ANSWER.to_owned())),
        ..overrides
    };
    let app = App::build(config, overrides).await.expect("app builds");
    let recovery = app.recovery.clone();
    let database = app.database.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stop.await;
    }));
    let channel = Channel::from_shared(address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    TestApp {
        address,
        recovery: RecoveryServiceClient::new(channel.clone()),
        accounts: AccountServiceClient::new(channel),
        notifier,
        clock,
        app: recovery,
        database,
        shutdown: Some(shutdown),
        server: Some(server),
        _dir: dir,
    }
}

/// What a test asserts about an error: code, reason, details.
#[derive(Debug)]
pub struct Failure {
    pub status: tonic::Status,
}

impl Failure {
    pub fn reason(&self) -> String {
        self.status
            .get_details_error_info()
            .map(|i| i.reason)
            .unwrap_or_default()
    }

    pub fn metadata(&self, key: &str) -> Option<String> {
        self.status
            .get_details_error_info()
            .and_then(|i| i.metadata.get(key).cloned())
    }

    pub fn fields(&self) -> Vec<String> {
        self.status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    }

    pub fn violation_reasons(&self) -> Vec<String> {
        self.status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.reason).collect())
            .unwrap_or_default()
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.status
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
    }

    /// Asserts the code and the `ErrorInfo` reason and domain.
    #[track_caller]
    pub fn assert(&self, code: tonic::Code, reason: &str) {
        assert_eq!(self.status.code(), code, "status: {:?}", self.status);
        assert_eq!(self.reason(), reason, "status: {:?}", self.status);
        let info = self.status.get_details_error_info().unwrap();
        assert_eq!(info.domain, "recovery.identity");
    }
}

pub trait ExpectErr<T> {
    fn failure(self) -> Failure;
}

impl<T: std::fmt::Debug> ExpectErr<T> for Result<tonic::Response<T>, tonic::Status> {
    #[track_caller]
    fn failure(self) -> Failure {
        match self {
            Ok(response) => panic!("expected an error, got {:?}", response.into_inner()),
            Err(status) => Failure { status },
        }
    }
}

/// The six digits in a delivered message.
pub fn code_in(email: &Email) -> String {
    let chars: Vec<char> = email.text.chars().collect();
    for window in chars.windows(8) {
        let inner: String = window[1..7].iter().collect();
        if inner.chars().all(|c| c.is_ascii_digit())
            && !window[0].is_ascii_digit()
            && !window[7].is_ascii_digit()
        {
            return inner;
        }
    }
    panic!("no code in message: {}", email.subject);
}

fn is_long_code(word: &str) -> bool {
    let groups: Vec<&str> = word.split('-').collect();
    groups.len() == 5
        && groups.iter().all(|group| {
            group.len() == 4
                && group
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        })
}

/// Whether a delivered message carries a long code.
pub fn has_long_code(email: &Email) -> bool {
    email.text.split_whitespace().any(is_long_code)
}

/// The long code in a delivered message: 5 groups of 4 Crockford base32 characters.
pub fn long_code_in(email: &Email) -> String {
    email
        .text
        .split_whitespace()
        .find(|word| is_long_code(word))
        .unwrap_or_else(|| panic!("no long code in message: {}", email.text))
        .to_owned()
}

/// 20 symbols shown as a long code is mailed: 5 groups of 4 joined by `-`.
pub fn group_long(symbols: &str) -> String {
    let chars: Vec<char> = symbols.chars().collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The "it wasn't me" report code in a delivered code message (32 hex digits).
pub fn report_code_in(email: &Email) -> String {
    email
        .text
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|word| word.len() == 32)
        .unwrap_or_else(|| panic!("no report code in message: {}", email.subject))
        .to_owned()
}

static ACCOUNTS: AtomicUsize = AtomicUsize::new(0);

pub fn unique_login() -> String {
    format!(
        "user{}.{}@example.com",
        ACCOUNTS.fetch_add(1, Ordering::Relaxed),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

impl TestApp {
    pub async fn create_account(&self, login: &str) -> String {
        self.accounts
            .clone()
            .create_account(proto::CreateAccountRequest {
                login_id: login.into(),
                email: String::new(),
                phone: String::new(),
                password: OLD_PASSWORD.into(),
            })
            .await
            .expect("account created")
            .into_inner()
            .account_id
    }

    pub async fn captcha(&self) -> String {
        self.recovery
            .clone()
            .create_captcha(proto::CreateCaptchaRequest {})
            .await
            .unwrap()
            .into_inner()
            .captcha_id
    }

    pub async fn try_start(
        &self,
        login: &str,
    ) -> Result<tonic::Response<proto::StartRecoveryResponse>, tonic::Status> {
        let captcha_id = self.captcha().await;
        self.recovery
            .clone()
            .start_recovery(proto::StartRecoveryRequest {
                login_id: login.into(),
                captcha_id,
                captcha_answer: CAPTCHA_ANSWER.into(),
                locale: "en".into(),
                pow_solution: String::new(),
                device_token: String::new(),
            })
            .await
    }

    pub async fn start(&self, login: &str) -> proto::RecoveryFlow {
        self.try_start(login)
            .await
            .expect("flow started")
            .into_inner()
            .flow
            .unwrap()
    }

    pub async fn send_code(
        &self,
        flow_id: &str,
    ) -> Result<tonic::Response<proto::SendVerificationCodeResponse>, tonic::Status> {
        self.recovery
            .clone()
            .send_verification_code(proto::SendVerificationCodeRequest {
                flow_id: flow_id.into(),
                channel: proto::Channel::Email.into(),
            })
            .await
    }

    /// Sends a code and returns it as delivered to `login`'s mailbox (the n-th message).
    pub async fn send_and_read_code(&self, flow_id: &str, login: &str) -> String {
        // A notice still queued (the "password changed" of a reset just before) would arrive in
        // the code's place: let the queue drain before counting.
        self.drain_deliveries().await;
        let before = self
            .notifier
            .messages()
            .iter()
            .filter(|m| m.to == login)
            .count();
        let flow = self
            .send_code(flow_id)
            .await
            .expect("code sent")
            .into_inner()
            .flow
            .unwrap();
        assert_eq!(flow.state(), FlowState::CodeSent);
        let messages = self
            .notifier
            .wait_for(login, before + 1, Duration::from_secs(10))
            .await;
        assert_eq!(
            messages.len(),
            before + 1,
            "the code message was not delivered"
        );
        code_in(messages.last().unwrap())
    }

    pub async fn verify(
        &self,
        flow_id: &str,
        code: &str,
    ) -> Result<tonic::Response<proto::VerifyCodeResponse>, tonic::Status> {
        self.recovery
            .clone()
            .verify_code(proto::VerifyCodeRequest {
                flow_id: flow_id.into(),
                code: code.into(),
            })
            .await
    }

    pub async fn reset(
        &self,
        token: &str,
        password: &str,
        confirmation: &str,
    ) -> Result<tonic::Response<proto::ResetPasswordResponse>, tonic::Status> {
        self.recovery
            .clone()
            .reset_password(proto::ResetPasswordRequest {
                reset_token: token.into(),
                new_password: password.into(),
                new_password_confirmation: confirmation.into(),
            })
            .await
    }

    pub async fn login_works(&self, login: &str, password: &str) -> bool {
        self.accounts
            .clone()
            .verify_password(proto::VerifyPasswordRequest {
                login_id: login.into(),
                password: password.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .valid
    }

    /// A fresh account whose flow has a code in its mailbox (state CODE_SENT).
    pub async fn code_sent_flow(&self) -> CodeSentFlow {
        let login = unique_login();
        self.create_account(&login).await;
        let flow = self.start(&login).await;
        let code = self.send_and_read_code(&flow.flow_id, &login).await;
        CodeSentFlow {
            login,
            flow_id: flow.flow_id,
            code,
        }
    }

    /// Account + flow + code verified: returns (flow_id, reset_token).
    pub async fn verified_flow(&self, login: &str) -> (String, String) {
        let flow = self.start(login).await;
        let code = self.send_and_read_code(&flow.flow_id, login).await;
        let token = self
            .verify(&flow.flow_id, &code)
            .await
            .expect("code verifies")
            .into_inner()
            .reset_token;
        (flow.flow_id, token)
    }

    /// The audit rows of an account, oldest first, as (event, result, detail).
    pub async fn audit_of(&self, account_id: &str) -> Vec<(String, String, Option<String>)> {
        use recovery_service::db::entities::audit_event;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
        // Audit rows are group-committed: written within a few ms, at once on a flush.
        self.database.flush_audit().await;
        audit_event::Entity::find()
            .filter(audit_event::Column::AccountId.eq(account_id))
            .order_by_asc(audit_event::Column::Id)
            .all(self.database.connection())
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.event, row.result, row.detail))
            .collect()
    }

    /// Messages delivered to `login` so far, after the queue has drained.
    pub async fn delivered_to(&self, login: &str) -> Vec<Email> {
        self.drain_deliveries().await;
        self.notifier
            .messages()
            .into_iter()
            .filter(|m| m.to == login)
            .collect()
    }

    /// Waits until the delivery queue has nothing pending.
    pub async fn drain_deliveries(&self) {
        use recovery_service::db::entities::delivery;
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        for _ in 0..200 {
            let pending = delivery::Entity::find()
                .filter(delivery::Column::Status.eq("pending"))
                .count(self.database.connection())
                .await
                .unwrap();
            if pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("deliveries still pending after 5 s");
    }

    /// Stops the server and waits for it to finish (a test that must see a clean shutdown).
    /// Otherwise dropping the app stops it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A flow in CODE_SENT and the code that was delivered for it.
pub struct CodeSentFlow {
    pub login: String,
    pub flow_id: String,
    pub code: String,
}

/// A well-formed code that is not `code`.
pub fn wrong_code(code: &str) -> &'static str {
    if code == "000000" { "111111" } else { "000000" }
}
