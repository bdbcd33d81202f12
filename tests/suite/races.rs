//! Races with real concurrency on the production backends: every test runs the real server on
//! single-node Redis (`RECOVERY_TEST_REDIS_URL`) and a fresh PostgreSQL database
//! (`RECOVERY_TEST_POSTGRES_URL`), whatever `RECOVERY_TEST_STORE` and `RECOVERY_TEST_DB` say; they
//! run when both are wanted (`common::backend`). A backend that cannot be reached fails the test.

use std::time::Duration;

use crate::common::*;
use recovery_service::db::entities::{account, audit_event, outbox, password_history};
use recovery_service::proto;
use recovery_service::server::Overrides;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tonic::Code;

const PARALLEL: usize = 50;

/// `None` when Redis or PostgreSQL is not wanted (`common::backend`).
async fn spawn_on_redis_and_postgres() -> Option<TestApp> {
    let redis_url = backend::redis()?;
    if !backend::database("postgres") {
        return None;
    }
    let scratch = TempDir::new();
    let database_url = fresh_database_url_for("postgres", &scratch).await;
    spawn_app_with(
        move |config| {
            config.redis_url = Some(redis_url);
            config.database_url = database_url;
            // These races are about one flow's compare-and-swap; a burst of 50 would spend the
            // per-account code budget first (that bound has its own burst test in attacker.rs).
            config.rate_limits.verify_code_per_account.limit = 1000;
        },
        Overrides::default(),
    )
    .await
    .into()
}

type Outcome<T> = Result<tonic::Response<T>, tonic::Status>;

/// Runs `n` copies of one call at once, each on its own task (and so, on the multi-threaded
/// runtime, really in parallel), and waits for all of them.
async fn in_parallel<T, F, Fut>(n: usize, call: F) -> Vec<Outcome<T>>
where
    T: Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Outcome<T>> + Send + 'static,
{
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let call = call();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                call.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

fn reasons<T>(results: &[Outcome<T>]) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|status| {
            Failure {
                status: status.clone(),
            }
            .reason()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_right_codes_yield_exactly_one_reset_token() {
    let Some(app) = spawn_on_redis_and_postgres().await else {
        return;
    };
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;
    let code = app.send_and_read_code(&flow.flow_id, &login).await;

    let results = in_parallel(PARALLEL, || {
        let mut client = app.recovery.clone();
        let request = proto::VerifyCodeRequest {
            flow_id: flow.flow_id.clone(),
            code: code.clone(),
        };
        async move { client.verify_code(request).await }
    })
    .await;

    let tokens: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|response| response.get_ref().reset_token.clone())
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "exactly one reset token: {:?}",
        reasons(&results)
    );
    let losers = reasons(&results);
    assert!(
        losers.iter().all(|reason| reason == "FLOW_STATE"),
        "the others find the flow already verified: {losers:?}"
    );
    // The one token works.
    app.reset(&tokens[0], NEW_PASSWORD, NEW_PASSWORD)
        .await
        .unwrap();
    assert!(app.login_works(&login, NEW_PASSWORD).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_resets_with_one_token_yield_one_success_and_one_history_row() {
    let Some(app) = spawn_on_redis_and_postgres().await else {
        return;
    };
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (flow_id, token) = app.verified_flow(&login).await;

    let results = in_parallel(PARALLEL, || {
        let mut client = app.recovery.clone();
        let request = proto::ResetPasswordRequest {
            reset_token: token.clone(),
            new_password: NEW_PASSWORD.into(),
            new_password_confirmation: NEW_PASSWORD.into(),
        };
        async move { client.reset_password(request).await }
    })
    .await;

    let successes = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(successes, 1, "exactly one reset: {:?}", reasons(&results));
    for failure in results.into_iter().filter(|r| r.is_err()) {
        failure
            .failure()
            .assert(Code::Unauthenticated, "TOKEN_INVALID");
    }

    // Audit rows are group-committed: written within a few ms, at once on a flush.
    app.database.flush_audit().await;
    let db = app.database.connection();
    let history = password_history::Entity::find()
        .filter(password_history::Column::RecoveryFlowId.eq(flow_id.clone()))
        .count(db)
        .await
        .unwrap();
    assert_eq!(history, 1, "one history row for the flow");
    let changed = outbox::Entity::find()
        .filter(outbox::Column::AggregateId.eq(account_id.clone()))
        .count(db)
        .await
        .unwrap();
    assert_eq!(changed, 1, "one password.changed event");
    let stored = account::Entity::find_by_id(account_id)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.password_version, 1);
    assert!(app.login_works(&login, NEW_PASSWORD).await);
    let refused = audit_event::Entity::find()
        .filter(audit_event::Column::Event.eq("recovery.password_reset"))
        .filter(audit_event::Column::Result.ne("ok"))
        .count(db)
        .await
        .unwrap();
    assert_eq!(
        refused,
        PARALLEL as u64 - 1,
        "every refused attempt is audited"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_wrong_codes_count_exactly_five_and_kill_the_flow() {
    let Some(app) = spawn_on_redis_and_postgres().await else {
        return;
    };
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;
    let code = app.send_and_read_code(&flow.flow_id, &login).await;
    let wrong = wrong_code(&code);

    let results = in_parallel(PARALLEL, || {
        let mut client = app.recovery.clone();
        let request = proto::VerifyCodeRequest {
            flow_id: flow.flow_id.clone(),
            code: wrong.to_owned(),
        };
        async move { client.verify_code(request).await }
    })
    .await;

    let mut counted = Vec::new();
    let mut exhausted = 0;
    for result in results {
        let failure = result.failure();
        match failure.reason().as_str() {
            "CODE_INVALID" => counted.push(failure.metadata("attempts_left").unwrap()),
            "ATTEMPTS_EXHAUSTED" => exhausted += 1,
            other => panic!("unexpected reason {other}: {:?}", failure.status),
        }
    }
    counted.sort();
    assert_eq!(
        counted,
        vec!["0", "1", "2", "3", "4"],
        "each of the five allowed tries counted exactly once"
    );
    assert_eq!(exhausted, PARALLEL - 5);
    // The flow is dead: even the right code is refused.
    app.verify(&flow.flow_id, &code)
        .await
        .failure()
        .assert(Code::FailedPrecondition, "ATTEMPTS_EXHAUSTED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_flows_of_one_account_reset_at_once_leave_one_winner_and_both_in_the_audit_log() {
    const OTHER_PASSWORD: &str = "Another-Quiet-Meadow-91";
    let Some(app) = spawn_on_redis_and_postgres().await else {
        return;
    };
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (first_flow, first) = app.verified_flow(&login).await;
    // Past the per-login resend cooldown, so the second flow can send its own code.
    app.clock.advance(Duration::from_secs(61));
    let (second_flow, second) = app.verified_flow(&login).await;

    let a = app.reset(&first, NEW_PASSWORD, NEW_PASSWORD);
    let b = app.reset(&second, OTHER_PASSWORD, OTHER_PASSWORD);
    let (a, b) = tokio::join!(a, b);
    assert_eq!(
        u8::from(a.is_ok()) + u8::from(b.is_ok()),
        1,
        "exactly one reset wins: {a:?} / {b:?}"
    );
    let (winner, winner_flow, loser_password, loser) = if a.is_ok() {
        (NEW_PASSWORD, &first_flow, OTHER_PASSWORD, b)
    } else {
        (OTHER_PASSWORD, &second_flow, NEW_PASSWORD, a)
    };
    loser
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");

    // One consistent final state: the winner's password, one change, one event.
    assert!(app.login_works(&login, winner).await);
    assert!(!app.login_works(&login, loser_password).await);
    assert!(!app.login_works(&login, OLD_PASSWORD).await);
    // Audit rows are group-committed: written within a few ms, at once on a flush.
    app.database.flush_audit().await;
    let db = app.database.connection();
    let stored = account::Entity::find_by_id(account_id.clone())
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.password_version, 1);
    let resets: Vec<password_history::Model> = password_history::Entity::find()
        .filter(password_history::Column::AccountId.eq(account_id.clone()))
        .filter(password_history::Column::RecoveryFlowId.is_not_null())
        .all(db)
        .await
        .unwrap();
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].recovery_flow_id.as_ref(), Some(winner_flow));
    let events = outbox::Entity::find()
        .filter(outbox::Column::AggregateId.eq(account_id.clone()))
        .count(db)
        .await
        .unwrap();
    assert_eq!(events, 1);

    // Both attempts are in the audit log: the winner's, and the loser's refusal (refused by
    // the database guard, "stale", or earlier because the winner ended its flow first).
    let attempts = audit_event::Entity::find()
        .filter(audit_event::Column::Event.eq("recovery.password_reset"))
        .all(db)
        .await
        .unwrap();
    let mut results: Vec<&str> = attempts.iter().map(|row| row.result.as_str()).collect();
    results.sort();
    assert_eq!(results.len(), 2, "{attempts:?}");
    assert_eq!(results[0], "ok", "{attempts:?}");
    assert!(
        ["stale", "token_invalid"].contains(&results[1]),
        "{attempts:?}"
    );
    let ok = attempts.iter().find(|row| row.result == "ok").unwrap();
    assert_eq!(ok.account_id.as_ref(), Some(&account_id));
    assert_eq!(ok.flow_id.as_ref(), Some(winner_flow));
    app.stop().await;
}
