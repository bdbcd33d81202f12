//! The command line: `account create` (password on stdin), `config check` (redacted),
//! `migrate`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::TempDir;

fn command(dir: &TempDir) -> Command {
    let mut command = crate::common::binary_command(dir, "cli.db");
    command
        .env("RECOVERY_HASHING__M_COST_KIB", "256")
        .env("RECOVERY_HASHING__T_COST", "1");
    command
}

/// `account create` with `stdin` typed into it, as an operator would pipe it.
fn account_create(dir: &TempDir, login: &str, stdin: &[u8]) -> std::process::Output {
    let mut child = command(dir)
        .args(["account", "create", "--login-id", login])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn account_create_reads_the_password_from_stdin_and_prints_the_id() {
    let dir = TempDir::new();
    let output = account_create(&dir, "cli.user@example.com", b"Quiet-Copper-Lantern-84\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let id = String::from_utf8(output.stdout).unwrap();
    assert!(uuid::Uuid::parse_str(id.trim()).is_ok(), "{id}");
    assert!(!stderr.contains("Quiet-Copper-Lantern-84"));
}

#[test]
fn account_create_refuses_a_weak_password_with_the_reasons() {
    let dir = TempDir::new();
    let output = account_create(&dir, "cli.weak@example.com", b"password\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PASSWORD_COMMON"), "{stderr}");
}

#[test]
fn there_is_no_way_to_pass_a_password_as_an_argument() {
    let dir = TempDir::new();
    let output = command(&dir)
        .args([
            "account",
            "create",
            "--login-id",
            "x@example.com",
            "--password",
            "Secret-123",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let dir = TempDir::new();
    let output = command(&dir)
        .args(["config", "check"])
        .env(
            "RECOVERY_SECRET",
            "cli-secret-0123456789-0123456789-0123456789",
        )
        .env(
            "RECOVERY_SMTP_URL",
            "smtp://mailer:mail-pass@127.0.0.1:2525",
        )
        .env("RECOVERY_CAPTCHA", "off")
        // Secrets in a URL's query were printed as they were.
        .env(
            "RECOVERY_DATABASE_URL",
            "postgres://db.example:5432/recovery?sslmode=require&password=db-query-pass",
        )
        .env(
            "RECOVERY_REDIS_URL",
            "redis://127.0.0.1:1?token=redis-query-token,redis://:redis-pass@127.0.0.1:2",
        )
        .env(
            "RECOVERY_OTLP_ENDPOINT",
            "http://collector:4317/?api_key=otlp-query-key",
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8(output.stdout).unwrap();
    for secret in [
        "db-query-pass",
        "redis-query-token",
        "redis-pass",
        "otlp-query-key",
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(shown.contains("sslmode=require&password=***"), "{shown}");
    assert!(
        shown.contains("[captcha]\nalternative = \"pow\"\nmode = \"off\""),
        "{shown}"
    );
    assert!(shown.contains("listen = \"127.0.0.1:50051\""), "{shown}");
    assert!(!shown.contains("cli-secret"), "{shown}");
    assert!(!shown.contains("mail-pass"), "{shown}");
}

#[test]
fn an_invalid_config_value_is_a_clear_error() {
    let dir = TempDir::new();
    let output = command(&dir)
        .args(["config", "check"])
        .env("RECOVERY_CAPTCHA", "maybe")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        stderr.contains("captcha") && stderr.contains("expected on, image, pow, both or off"),
        "{stderr}"
    );
}

#[test]
fn migrate_applies_the_schema_and_is_idempotent() {
    let dir = TempDir::new();
    for _ in 0..2 {
        let output = command(&dir).arg("migrate").output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Starts `serve` on a free port with `env` added, and waits until it takes connections.
async fn serve(
    dir: &TempDir,
    env: &[(&str, &str)],
) -> (std::process::Child, tonic::transport::Channel) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = command(dir);
    serve
        .arg("serve")
        .env("RECOVERY_LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = serve.spawn().unwrap();
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..200 {
        if let Ok(channel) = endpoint.connect().await {
            return (child, channel);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server does not listen on {port}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish_and_then_exits_cleanly() {
    use recovery_service::proto::account_service_client::AccountServiceClient;
    let dir = TempDir::new();
    // A deliberately slow hash (many passes) keeps the call in flight when the signal lands.
    let (mut child, channel) = serve(
        &dir,
        &[
            ("RECOVERY_HASHING__M_COST_KIB", "19456"),
            ("RECOVERY_HASHING__T_COST", "40"),
        ],
    )
    .await;
    let mut client = AccountServiceClient::new(channel);
    let call = tokio::spawn(async move {
        client
            .create_account(recovery_service::proto::CreateAccountRequest {
                login_id: "sigterm@example.com".into(),
                email: String::new(),
                phone: String::new(),
                password: "Quiet-Copper-Lantern-84".into(),
            })
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let answered = call.await.unwrap();
    assert!(answered.is_ok(), "the in-flight call was cut: {answered:?}");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// Audit rows are group-committed: `StartRecovery` returns once its row is queued.
/// A clean shutdown must still write every queued row. The flush interval is set to its
/// maximum, so the rows are certainly still queued when SIGTERM lands.
#[tokio::test]
async fn sigterm_writes_every_queued_audit_row_before_exiting() {
    use recovery_service::db::entities::audit_event;
    use recovery_service::proto::recovery_service_client::RecoveryServiceClient;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    const CALLS: usize = 120;
    let dir = TempDir::new();
    let (mut child, channel) = serve(
        &dir,
        &[
            ("RECOVERY_CAPTCHA", "off"),
            ("RECOVERY_RATE_LIMITS__ENABLED", "false"),
            ("RECOVERY_DATABASE__AUDIT_FLUSH_INTERVAL_MS", "1000"),
            ("RECOVERY_DATABASE__AUDIT_BATCH_ROWS", "1000"),
        ],
    )
    .await;
    let client = RecoveryServiceClient::new(channel);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let mut client = client.clone();
        calls.spawn(async move {
            client
                .start_recovery(recovery_service::proto::StartRecoveryRequest {
                    login_id: format!("queued-{i}@example.com"),
                    locale: "en".into(),
                    ..Default::default()
                })
                .await
        });
    }
    while let Some(answer) = calls.join_next().await {
        let answer = answer.unwrap();
        assert!(answer.is_ok(), "{answer:?}");
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let url = format!("sqlite://{}?mode=rwc", dir.0.join("cli.db").display());
    let database = recovery_service::db::Database::connect(&url, &Default::default())
        .await
        .unwrap();
    let started = audit_event::Entity::find()
        .filter(audit_event::Column::Event.eq("recovery.started"))
        .count(database.connection())
        .await
        .unwrap();
    assert_eq!(started, CALLS as u64, "every queued audit row was written");
}
