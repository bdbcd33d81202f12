//! Security defences end to end: rate limits and what a limited answer reveals, the
//! trusted-proxy rule for client IPs, production-mode refusals, secrets at rest (Redis keyspace
//! and database), and the audit trail. Each test fails if its defence is removed.

use std::time::Duration;

use crate::common::*;
use recovery_service::config::NotifierKind;
use recovery_service::db::entities::{audit_event, delivery, outbox};
use recovery_service::proto;
use recovery_service::server::{App, Overrides};
use sea_orm::{EntityTrait, QueryOrder};
use secrecy::SecretString;
use tonic::Code;
use tonic_types::StatusExt;

/// The client as the trusted proxy (127.0.0.1 in the test config) reports it; the left-most
/// entry is what the client itself claimed and must be ignored.
const CLIENT_IP: &str = "203.0.113.10";
const FORWARDED_FOR: &str = "198.51.100.66, 203.0.113.10";
const AGENT: &str = "security-suite/1.0";

fn from_client<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-forwarded-for", FORWARDED_FOR.parse().unwrap());
    metadata.insert("user-agent", AGENT.parse().unwrap());
    request
}

async fn audit_rows(app: &TestApp) -> Vec<audit_event::Model> {
    // Audit rows are group-committed: written within a few ms, at once on a flush.
    app.database.flush_audit().await;
    audit_event::Entity::find()
        .order_by_asc(audit_event::Column::Id)
        .all(app.database.connection())
        .await
        .unwrap()
}

fn rows_of<'a>(rows: &'a [audit_event::Model], event: &str) -> Vec<&'a audit_event::Model> {
    rows.iter().filter(|r| r.event == event).collect()
}

async fn start_as_client(app: &TestApp, login: &str) -> Result<proto::RecoveryFlow, tonic::Status> {
    let captcha_id = app
        .recovery
        .clone()
        .create_captcha(from_client(proto::CreateCaptchaRequest {}))
        .await?
        .into_inner()
        .captcha_id;
    let response = app
        .recovery
        .clone()
        .start_recovery(from_client(proto::StartRecoveryRequest {
            login_id: login.into(),
            captcha_id,
            captcha_answer: CAPTCHA_ANSWER.into(),
            locale: "en".into(),
            pow_solution: String::new(),
            device_token: String::new(),
        }))
        .await?;
    Ok(response.into_inner().flow.unwrap())
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

/// Everything a caller can see of a refusal, minus the retry delay's exact value.
fn visible(status: &tonic::Status) -> (Code, String, String, Vec<(String, String)>, u64) {
    let info = status.get_details_error_info().unwrap();
    let mut metadata: Vec<(String, String)> = info
        .metadata
        .into_iter()
        .filter(|(key, _)| key != "retry_after_seconds")
        .collect();
    metadata.sort();
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap()
        .as_secs();
    (
        status.code(),
        status.message().to_owned(),
        info.reason,
        metadata,
        retry,
    )
}

#[tokio::test]
async fn limited_answers_are_identical_for_known_and_unknown_logins() {
    let app = spawn_app_with(
        |c| {
            c.rate_limits.per_login.limit = 2;
            c.rate_limits.verify_password_per_login.limit = 2;
        },
        Overrides::default(),
    )
    .await;
    let known = unique_login();
    app.create_account(&known).await;
    let unknown = unique_login();

    let mut starts = Vec::new();
    let mut verifies = Vec::new();
    for login in [&known, &unknown] {
        app.start(login).await;
        app.start(login).await;
        starts.push(app.try_start(login).await.failure().status);
        for _ in 0..2 {
            assert!(!app.login_works(login, NEW_PASSWORD).await);
        }
        let refused = app
            .accounts
            .clone()
            .verify_password(proto::VerifyPasswordRequest {
                login_id: login.clone(),
                password: OLD_PASSWORD.into(),
            })
            .await
            .failure();
        verifies.push(refused.status);
    }
    for pair in [&starts, &verifies] {
        let (known_answer, unknown_answer) = (visible(&pair[0]), visible(&pair[1]));
        assert_eq!(known_answer.0, Code::ResourceExhausted);
        assert_eq!(known_answer.2, "RATE_LIMITED");
        // Same code, message, reason, metadata; the retry delay may differ by the second that
        // passed between the two calls, never more.
        assert_eq!(
            (
                &known_answer.0,
                &known_answer.1,
                &known_answer.2,
                &known_answer.3
            ),
            (
                &unknown_answer.0,
                &unknown_answer.1,
                &unknown_answer.2,
                &unknown_answer.3
            )
        );
        assert!(known_answer.4.abs_diff(unknown_answer.4) <= 1);
    }
    // The right password of the known login is refused too while limited: the limit is checked
    // before the account is even looked up.
    app.accounts
        .clone()
        .verify_password(proto::VerifyPasswordRequest {
            login_id: known.clone(),
            password: OLD_PASSWORD.into(),
        })
        .await
        .failure()
        .assert(Code::ResourceExhausted, "RATE_LIMITED");
    app.stop().await;
}

#[tokio::test]
async fn a_rate_limited_start_is_audited_once_per_window_with_scope_client_and_agent() {
    let app = spawn_app_with(|c| c.rate_limits.per_login.limit = 1, Overrides::default()).await;
    let login = unique_login();
    start_as_client(&app, &login).await.unwrap();
    for _ in 0..3 {
        let failure = Failure {
            status: start_as_client(&app, &login).await.unwrap_err(),
        };
        failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    }
    let rows = audit_rows(&app).await;
    let limited = rows_of(&rows, "recovery.rate_limited");
    // One row per limit key and window: a flood of refused calls is not a flood of writes.
    assert_eq!(limited.len(), 1, "{limited:#?}");
    let row = limited[0];
    let detail: serde_json::Value = serde_json::from_str(row.detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["scope"], "login");
    assert_eq!(detail["operation"], "StartRecovery");
    assert_eq!(row.result, "limited");
    assert_eq!(row.client_ip.as_deref(), Some(CLIENT_IP));
    assert!(row.user_agent.as_deref().unwrap().starts_with(AGENT));
    assert_eq!(row.account_id, None);
    // The login is identified by its keyed hash only, the same as the flow's started row.
    let started = rows_of(&rows, "recovery.started");
    assert_eq!(row.login_key, started[0].login_key);
    assert!(!row.login_key.as_deref().unwrap().contains(&login));
    app.stop().await;
}

#[tokio::test]
async fn an_untrusted_peer_cannot_pick_its_client_ip_with_x_forwarded_for() {
    let app = spawn_app_with(
        |c| {
            c.server.trusted_proxies = Vec::new();
            c.rate_limits.per_ip.limit = 3;
        },
        Overrides::default(),
    )
    .await;
    let call = |forwarded: String| {
        let mut client = app.recovery.clone();
        async move {
            let mut request = tonic::Request::new(proto::CreateCaptchaRequest {});
            request
                .metadata_mut()
                .insert("x-forwarded-for", forwarded.parse().unwrap());
            client.create_captcha(request).await
        }
    };
    // A new claimed address on every call: if the header were believed, none would be limited.
    for n in 1..=3 {
        call(format!("203.0.113.{n}")).await.unwrap();
    }
    let failure = call("203.0.113.4".to_owned()).await.failure();
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(failure.metadata("scope").as_deref(), Some("client_ip"));
    let rows = audit_rows(&app).await;
    let limited = rows_of(&rows, "recovery.rate_limited");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].client_ip.as_deref(), Some("127.0.0.1"));
    app.stop().await;
}

#[tokio::test]
async fn the_per_flow_send_cap_is_audited_as_rate_limited() {
    let app = spawn_app().await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let flow = app.start(&login).await;
    for _ in 0..5 {
        app.send_code(&flow.flow_id).await.unwrap();
        app.clock.advance(Duration::from_secs(61));
    }
    for _ in 0..2 {
        app.send_code(&flow.flow_id)
            .await
            .failure()
            .assert(Code::ResourceExhausted, "RATE_LIMITED");
    }
    let rows = audit_rows(&app).await;
    let limited = rows_of(&rows, "recovery.rate_limited");
    assert_eq!(limited.len(), 1, "{limited:#?}");
    assert_eq!(limited[0].account_id.as_deref(), Some(account_id.as_str()));
    assert_eq!(limited[0].flow_id.as_deref(), Some(flow.flow_id.as_str()));
    assert!(limited[0].detail.as_deref().unwrap().contains("\"flow\""));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Production mode
// ---------------------------------------------------------------------------------------------

async fn build_error(configure: impl FnOnce(&mut recovery_service::config::Config)) -> String {
    let dir = TempDir::new();
    let mut config = test_config(&dir);
    config.production = true;
    configure(&mut config);
    match App::build(config, Overrides::default()).await {
        Ok(_) => panic!("production mode started with an unsafe configuration"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn production_refuses_to_start_without_a_secret() {
    let message = build_error(|c| c.secret = None).await;
    assert!(message.contains("RECOVERY_SECRET is required"), "{message}");
    let message = build_error(|c| c.secret = Some(SecretString::from(" , "))).await;
    assert!(message.contains("no secret key"), "{message}");
}

#[tokio::test]
async fn production_refuses_a_secret_key_shorter_than_32_bytes() {
    let short = "only-31-bytes-of-key-material!!";
    assert_eq!(short.len(), 31);
    let message = build_error(|c| c.secret = Some(SecretString::from(short))).await;
    assert!(message.contains("at least 32"), "{message}");
    assert!(
        !message.contains(short),
        "the secret is in the error: {message}"
    );
    // A rotation list is as strong as its weakest key.
    let list = format!("{SECRET},{short}");
    let message = build_error(|c| c.secret = Some(SecretString::from(list))).await;
    assert!(
        message.contains("#1") && message.contains("at least 32"),
        "{message}"
    );
    assert!(
        !message.contains(short) && !message.contains(SECRET),
        "{message}"
    );
}

#[tokio::test]
async fn production_refuses_the_log_notifier() {
    let message = build_error(|c| c.notifier = NotifierKind::Log).await;
    assert!(message.contains("log notifier"), "{message}");
    assert!(message.contains("refused in production"), "{message}");
    assert!(!message.contains(SECRET), "{message}");
}

#[tokio::test]
async fn production_starts_with_a_strong_secret_and_a_real_notifier() {
    let dir = TempDir::new();
    let mut config = test_config(&dir);
    config.production = true;
    config.account_api.api_key_sha256 = vec!["00".repeat(32)];
    let overrides = Overrides {
        notifier: Some(std::sync::Arc::new(
            recovery_service::notify::CapturingNotifier::new(),
        )),
        ..Overrides::default()
    };
    assert!(App::build(config, overrides).await.is_ok());
}

// ---------------------------------------------------------------------------------------------
// Secrets at rest
// ---------------------------------------------------------------------------------------------

/// Every key under `prefix` with its type and value(s), as text.
async fn dump_redis(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut dump = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value = match kind.as_str() {
            "string" => {
                let value: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                text(&value)
            }
            "hash" => {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                pairs
                    .iter()
                    .map(|(f, v)| format!("{}={}", text(f), text(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            "set" => {
                let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                members
                    .iter()
                    .map(|m| text(m))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            "zset" => {
                let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                members
                    .iter()
                    .map(|m| text(m))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            "list" => {
                let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                items.iter().map(|m| text(m)).collect::<Vec<_>>().join(" ")
            }
            "stream" => {
                // The password.changed event stream (outbox relay), if it shares the prefix.
                let entries: redis::Value = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{entries:?}")
            }
            other => panic!("unexpected Redis type {other} for {key}"),
        };
        dump.push(format!("{key} [{kind}] {value}"));
    }
    dump
}

fn assert_holds_none(place: &str, dump: &[String], secrets: &[(&str, String)]) {
    for line in dump {
        for (what, secret) in secrets {
            assert!(
                !line.contains(secret.as_str()),
                "{place} holds a {what} ({secret}) in: {line}"
            );
        }
    }
}

/// Full flows on Redis (single node, whatever `RECOVERY_TEST_STORE` says), stopping in every
/// state so live captchas, codes and tokens are in the keyspace when it is dumped.
#[tokio::test]
async fn redis_and_the_database_hold_no_code_token_captcha_answer_password_or_login() {
    let Some(redis_url) = backend::redis() else {
        return;
    };
    let prefix = format!("secrets-test:{}:", uuid::Uuid::new_v4().simple());
    let (url, key_prefix) = (redis_url.clone(), prefix.clone());
    let app = spawn_app_with(
        move |c| {
            c.redis_url = Some(url);
            c.redis.key_prefix = key_prefix;
        },
        Overrides::default(),
    )
    .await;

    let known = unique_login();
    app.create_account(&known).await;
    let unknown = unique_login();
    let mut secrets: Vec<(&str, String)> = vec![
        ("captcha answer", CAPTCHA_ANSWER.to_owned()),
        ("password", OLD_PASSWORD.to_owned()),
        ("password", NEW_PASSWORD.to_owned()),
        ("login", known.clone()),
        ("login", unknown.clone()),
    ];

    // 1. A completed reset.
    let (_, token) = app.verified_flow(&known).await;
    secrets.push(("reset token", token.clone()));
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    // 2. A verified flow whose token is still live.
    let (_, live_token) = app.verified_flow(&known).await;
    secrets.push(("reset token", live_token));
    // 3. A flow with a live code, after one wrong try.
    let flow = app.start(&known).await;
    let code = app.send_and_read_code(&flow.flow_id, &known).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    app.verify(&flow.flow_id, wrong).await.failure();
    // 4. An unknown login's flow with a (never delivered) code.
    let unknown_flow = app.start(&unknown).await;
    app.send_code(&unknown_flow.flow_id).await.unwrap();
    // 5. A captcha nobody answered yet.
    app.captcha().await;

    for message in app.notifier.messages() {
        if message.kind == recovery_service::notify::MessageKind::VerificationCode {
            secrets.push(("code", code_in(&message)));
        }
    }
    assert!(secrets.iter().filter(|(what, _)| *what == "code").count() >= 3);

    let dump = dump_redis(&redis_url, &prefix).await;
    // Not vacuous: the flows, the captcha and the token index are there.
    assert!(dump.len() >= 8, "{dump:#?}");
    assert!(dump.iter().any(|l| l.contains(&flow.flow_id)), "{dump:#?}");
    assert_holds_none("Redis", &dump, &secrets);

    // The database: the sealed delivery queue, the audit trail and the outbox.
    app.drain_deliveries().await;
    // Audit rows are group-committed: written within a few ms, at once on a flush.
    app.database.flush_audit().await;
    let conn = app.database.connection();
    let deliveries = delivery::Entity::find().all(conn).await.unwrap();
    assert!(deliveries.len() >= 4, "{}", deliveries.len());
    let mut rows: Vec<String> = deliveries
        .iter()
        .map(|d| {
            format!(
                "{} {} {} {:?} {}",
                d.id,
                d.kind,
                d.status,
                d.last_error,
                String::from_utf8_lossy(&d.ciphertext)
            )
        })
        .collect();
    rows.extend(
        audit_event::Entity::find()
            .all(conn)
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{r:?}")),
    );
    rows.extend(
        outbox::Entity::find()
            .all(conn)
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{r:?}")),
    );
    assert_holds_none("the database", &rows, &secrets);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_recovery_event_is_audited_with_account_client_agent_and_result() {
    let app = spawn_app_with(|c| c.rate_limits.per_login.limit = 1, Overrides::default()).await;
    let mut recovery = app.recovery.clone();
    let known = unique_login();
    let account_id = app.create_account(&known).await;
    let unknown = unique_login();

    // Started, code sent, code failed (x4), flow locked.
    let locked = start_as_client(&app, &known).await.unwrap();
    let send = |flow_id: String| proto::SendVerificationCodeRequest {
        flow_id,
        channel: proto::Channel::Email.into(),
    };
    recovery
        .send_verification_code(from_client(send(locked.flow_id.clone())))
        .await
        .unwrap();
    let code = code_in(
        app.notifier
            .wait_for(&known, 1, Duration::from_secs(10))
            .await
            .last()
            .unwrap(),
    );
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        recovery
            .verify_code(from_client(proto::VerifyCodeRequest {
                flow_id: locked.flow_id.clone(),
                code: wrong.into(),
            }))
            .await
            .failure();
    }
    // A try on the locked flow is refused; its row still names the flow and the account.
    recovery
        .verify_code(from_client(proto::VerifyCodeRequest {
            flow_id: locked.flow_id.clone(),
            code: code.clone(),
        }))
        .await
        .failure()
        .assert(Code::FailedPrecondition, "ATTEMPTS_EXHAUSTED");
    // Rate limited (per login, limit 1): the second start of the same login.
    let limited = Failure {
        status: start_as_client(&app, &known).await.unwrap_err(),
    };
    limited.assert(Code::ResourceExhausted, "RATE_LIMITED");

    // Cancelled, and an unknown login's start (no account id).
    let cancelled = start_as_client(&app, &unknown).await.unwrap();
    recovery
        .cancel_recovery(from_client(proto::CancelRecoveryRequest {
            flow_id: cancelled.flow_id.clone(),
        }))
        .await
        .unwrap();

    // Verified and reset, on a second account (the first one's login is now limited).
    let other = unique_login();
    let other_id = app.create_account(&other).await;
    let start = start_as_client(&app, &other).await.unwrap();
    recovery
        .send_verification_code(from_client(send(start.flow_id.clone())))
        .await
        .unwrap();
    let code = code_in(
        app.notifier
            .wait_for(&other, 1, Duration::from_secs(10))
            .await
            .last()
            .unwrap(),
    );
    let token = recovery
        .verify_code(from_client(proto::VerifyCodeRequest {
            flow_id: start.flow_id.clone(),
            code: code.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .reset_token;
    recovery
        .reset_password(from_client(proto::ResetPasswordRequest {
            reset_token: token.clone(),
            new_password: NEW_PASSWORD.into(),
            new_password_confirmation: NEW_PASSWORD.into(),
        }))
        .await
        .unwrap();

    let rows = audit_rows(&app).await;
    let expect = |event: &str, flow_id: Option<&str>, account: Option<&str>, result: &str| {
        let found: Vec<_> = rows
            .iter()
            .filter(|r| {
                r.event == event
                    && r.result == result
                    && (flow_id.is_none() || r.flow_id.as_deref() == flow_id)
            })
            .collect();
        assert!(
            !found.is_empty(),
            "no {event} row for {flow_id:?} in {rows:#?}"
        );
        for row in &found {
            assert_eq!(row.account_id.as_deref(), account, "{row:?}");
            assert_eq!(row.result, result, "{row:?}");
            assert_eq!(row.client_ip.as_deref(), Some(CLIENT_IP), "{row:?}");
            assert!(
                row.user_agent
                    .as_deref()
                    .is_some_and(|ua| ua.starts_with(AGENT)),
                "{row:?}"
            );
            assert!(row.login_key.is_some(), "{row:?}");
        }
        found.len()
    };
    let known_id = Some(account_id.as_str());
    assert_eq!(
        expect("recovery.started", Some(&locked.flow_id), known_id, "ok"),
        1
    );
    assert_eq!(
        expect("recovery.code_sent", Some(&locked.flow_id), known_id, "ok"),
        1
    );
    assert_eq!(
        expect(
            "recovery.code_failed",
            Some(&locked.flow_id),
            known_id,
            "wrong_code"
        ),
        4
    );
    assert_eq!(
        expect(
            "recovery.flow_locked",
            Some(&locked.flow_id),
            known_id,
            "locked"
        ),
        1
    );
    assert_eq!(
        expect(
            "recovery.code_failed",
            Some(&locked.flow_id),
            known_id,
            "locked"
        ),
        1
    );
    assert_eq!(expect("recovery.rate_limited", None, None, "limited"), 1);
    expect("recovery.started", Some(&cancelled.flow_id), None, "ok");
    assert_eq!(
        expect("recovery.cancelled", Some(&cancelled.flow_id), None, "ok"),
        1
    );
    let other_id = Some(other_id.as_str());
    expect(
        "recovery.code_verified",
        Some(&start.flow_id),
        other_id,
        "ok",
    );
    assert_eq!(
        expect(
            "recovery.password_reset",
            Some(&start.flow_id),
            other_id,
            "ok"
        ),
        1
    );

    // Never a secret value in any column.
    let dump: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
    let secrets = [
        ("code", code),
        ("wrong code", wrong.to_owned()),
        ("reset token", token),
        ("captcha answer", CAPTCHA_ANSWER.to_owned()),
        ("password", NEW_PASSWORD.to_owned()),
        ("login", known),
        ("login", unknown),
        ("login", other),
    ];
    let secrets: Vec<(&str, String)> = secrets.into_iter().collect();
    assert_holds_none("audit_events", &dump, &secrets);
    app.stop().await;
}
