//! Input limits on the transport: the per-request timeout cuts a call that runs too long
//! without hurting the server, and the per-connection concurrency limit queues calls rather
//! than failing them. (The message-size limit and the per-field bounds are covered in
//! recovery_flow.rs.)

use std::time::{Duration, Instant};

use crate::common::*;
use recovery_service::accounts::HashSettings;
use recovery_service::proto;
use recovery_service::server::Overrides;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn a_call_longer_than_the_request_timeout_is_cut_and_the_server_keeps_serving() {
    let app = spawn_app_with(
        |c| {
            c.server.request_timeout_ms = 100;
            // 64 MiB × 12 passes: ~0.3 s even where argon2 streams 3 GB/s, so the
            // CreateAccount below cannot finish in time. (OWASP cost alone, ~50 ms, could.)
            c.hashing = HashSettings {
                m_cost_kib: 64 * 1024,
                t_cost: 12,
                ..HashSettings::default()
            };
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    let started = Instant::now();
    let outcome = app
        .accounts
        .clone()
        .create_account(proto::CreateAccountRequest {
            login_id: login.clone(),
            email: String::new(),
            phone: String::new(),
            password: OLD_PASSWORD.into(),
        })
        .await;
    let elapsed = started.elapsed();
    let status = outcome.expect_err("the call outlived its timeout and still succeeded");
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "cut after {elapsed:?}");

    // The server is fine: health and a quick RPC answer on the same connection.
    let status = HealthClient::new(
        tonic::transport::Channel::from_shared(app.address.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
    .check(HealthCheckRequest::default())
    .await
    .unwrap()
    .into_inner()
    .status();
    assert_eq!(status, ServingStatus::Serving);
    app.recovery
        .clone()
        .create_captcha(proto::CreateCaptchaRequest {})
        .await
        .expect("a quick call after a timed-out one");
    // The cut call wrote nothing: its work was abandoned before the insert (the hash itself
    // runs to its end on the blocking pool, holding its permit, so the memory bound holds).
    tokio::time::sleep(Duration::from_secs(2)).await;
    use recovery_service::db::entities::account;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let rows = account::Entity::find()
        .filter(account::Column::LoginNormalized.eq(login.to_lowercase()))
        .count(app.database.connection())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_concurrency_limit_queues_calls_instead_of_failing_them() {
    let app = spawn_app_with(
        |c| {
            c.server.concurrency_limit = 2;
            // This test is about the transport; the per-login limits are tested elsewhere.
            c.rate_limits.enabled = false;
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    // 90 calls at once on one connection that handles 2 at a time: all of them are answered.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..90 {
        let (mut recovery, mut accounts) = (app.recovery.clone(), app.accounts.clone());
        let login = login.clone();
        calls.spawn(async move {
            match i % 3 {
                0 => recovery
                    .create_captcha(proto::CreateCaptchaRequest {})
                    .await
                    .map(|_| ()),
                1 => recovery
                    .validate_password(proto::ValidatePasswordRequest {
                        password: NEW_PASSWORD.into(),
                        login_id: login,
                    })
                    .await
                    .map(|_| ()),
                _ => accounts
                    .verify_password(proto::VerifyPasswordRequest {
                        login_id: login,
                        password: OLD_PASSWORD.into(),
                    })
                    .await
                    .map(|r| assert!(r.into_inner().valid)),
            }
        });
    }
    while let Some(outcome) = calls.join_next().await {
        outcome.unwrap().expect("every call is answered");
    }
    app.stop().await;
}

/// zxcvbn ran on the async runtime, so 4 callers of worst-case `ValidatePassword`
/// stalled every other RPC for seconds. Loose on purpose: while the flood runs, each
/// `GetRecoveryFlow` must come back within a bound far above its normal latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_worst_case_validate_password_does_not_stall_other_rpcs() {
    let app = spawn_app_with(
        |c| c.rate_limits.per_ip.limit = 1_000_000,
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow_id = app.start(&login).await.flow_id;
    let worst: String = "p@$$w0rd1!l33t|".chars().cycle().take(128).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (mut recovery, worst, stop) = (app.recovery.clone(), worst.clone(), stop.clone());
        flood.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = recovery
                    .validate_password(proto::ValidatePasswordRequest {
                        password: worst.clone(),
                        login_id: String::new(),
                    })
                    .await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        app.recovery
            .clone()
            .get_recovery_flow(proto::GetRecoveryFlowRequest {
                flow_id: flow_id.clone(),
            })
            .await
            .expect("GetRecoveryFlow answers during the flood");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    assert!(
        slowest < Duration::from_millis(400),
        "GetRecoveryFlow took {slowest:?} during the flood"
    );
}
