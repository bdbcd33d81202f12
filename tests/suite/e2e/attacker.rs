//! What an attacker can do to one account is bounded per account, across all its
//! flows, with the same numbers and the same answers for a login that does not exist.
//! Runs on the embedded defaults and, in the test command, on Redis Cluster + MariaDB.

use std::time::Duration;

use crate::common::*;
use recovery_service::proto::{self, FlowState};
use recovery_service::recovery::input::LoginId;
use recovery_service::server::Overrides;
use tonic::Code;

/// What a caller sees of one answer: the code and the `ErrorInfo` reason ("OK" for success).
fn answer<T: std::fmt::Debug>(
    outcome: Result<tonic::Response<T>, tonic::Status>,
) -> (Code, String) {
    match outcome {
        Ok(_) => (Code::Ok, "OK".to_owned()),
        Err(status) => {
            let failure = Failure { status };
            (failure.status.code(), failure.reason())
        }
    }
}

#[track_caller]
fn assert_account_limited(failure: &Failure) {
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(failure.metadata("scope").as_deref(), Some("account"));
    assert!(failure.retry_after().is_some(), "RetryInfo is missing");
}

/// Starts a flow and sends its code; returns the flow id and the code when there is a mailbox
/// (a known login).
async fn flow_with_code(app: &TestApp, login: &str, known: bool) -> (String, Option<String>) {
    let flow = app.start(login).await;
    if known {
        let code = app.send_and_read_code(&flow.flow_id, login).await;
        (flow.flow_id, Some(code))
    } else {
        app.send_code(&flow.flow_id).await.expect("code sent");
        (flow.flow_id, None)
    }
}

/// With the default numbers: four flows of five wrong codes spend the account's budget of 20,
/// and then a short code is not weighed at all, the right one neither: a fifth flow's code,
/// sent before the budget ran out, is refused before it is looked at. (A code sent after that
/// is a long one, weighed by its flow's attempts only: `e2e::lockout`.) Returns every answer in
/// order.
async fn spend_default_budget(app: &TestApp, login: &str, known: bool) -> Vec<(Code, String)> {
    let (last_flow, last_code) = flow_with_code(app, login, known).await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        let (flow_id, code) = flow_with_code(app, login, known).await;
        let wrong = wrong_code(code.as_deref().unwrap_or("000000"));
        for _ in 0..5 {
            answers.push(answer(app.verify(&flow_id, wrong).await));
        }
    }
    let last = app
        .verify(&last_flow, last_code.as_deref().unwrap_or("000000"))
        .await
        .failure();
    assert_account_limited(&last);
    answers.push((last.status.code(), last.reason()));
    answers
}

#[tokio::test]
async fn wrong_codes_are_counted_per_account_across_flows_and_past_the_budget_no_code_is_weighed() {
    let app = spawn_app().await;
    let defaults = recovery_service::recovery::limits::RateLimits::default();
    assert!(defaults.verify_code_per_account.limit <= 20);
    assert!(defaults.verify_code_per_account.window_secs >= 24 * 3600);

    let known = unique_login();
    app.create_account(&known).await;
    let known_answers = spend_default_budget(&app, &known, true).await;
    assert_eq!(known_answers.len(), 21);
    assert!(
        known_answers[..20]
            .iter()
            .all(|(code, reason)| *code == Code::InvalidArgument && reason == "CODE_INVALID"),
        "{known_answers:?}"
    );

    // An unknown login meets the same numbers and the same answers.
    let unknown = unique_login();
    let unknown_answers = spend_default_budget(&app, &unknown, false).await;
    assert_eq!(known_answers, unknown_answers);
}

/// A burst of concurrent guesses cannot overshoot the budget: 5 flows × 10 parallel wrong
/// codes could weigh 25 (5 per flow), the account budget lets exactly 20 through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_parallel_guesses_over_many_flows_weighs_at_most_the_budget() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let mut flows = Vec::new();
    for _ in 0..5 {
        flows.push(flow_with_code(&app, &login, true).await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for (flow_id, code) in &flows {
        let wrong = wrong_code(code.as_deref().unwrap());
        for _ in 0..10 {
            let mut recovery = app.recovery.clone();
            let flow_id = flow_id.clone();
            calls.spawn(async move {
                answer(
                    recovery
                        .verify_code(proto::VerifyCodeRequest {
                            flow_id,
                            code: wrong.into(),
                        })
                        .await,
                )
            });
        }
    }
    let mut weighed = 0;
    while let Some(outcome) = calls.join_next().await {
        let (_, reason) = outcome.unwrap();
        assert!(
            ["CODE_INVALID", "RATE_LIMITED", "ATTEMPTS_EXHAUSTED"].contains(&reason.as_str()),
            "{reason}"
        );
        weighed += usize::from(reason == "CODE_INVALID");
    }
    assert!(weighed <= 20, "{weighed} codes weighed");
}

#[tokio::test]
async fn codes_mailed_per_account_are_capped_across_flows() {
    let defaults = recovery_service::recovery::limits::RateLimits::default();
    assert!(defaults.send_code_per_account.limit <= 10);
    let app = spawn_app_with(
        |c| c.rate_limits.send_code_per_account.limit = 2,
        Overrides::default(),
    )
    .await;
    let mut per_login = Vec::new();
    for known in [true, false] {
        let login = unique_login();
        if known {
            app.create_account(&login).await;
        }
        let first = app.start(&login).await.flow_id;
        let mut answers = vec![answer(app.send_code(&first).await)];
        app.clock.advance(Duration::from_secs(61));
        answers.push(answer(app.send_code(&first).await));
        // A new flow does not bring a new mail budget.
        let second = app.start(&login).await.flow_id;
        let refused = app.send_code(&second).await.failure();
        assert_account_limited(&refused);
        answers.push((refused.status.code(), refused.reason()));
        // The refused send consumed nothing of the flow: it is still waiting for a send.
        let flow = app
            .recovery
            .clone()
            .get_recovery_flow(proto::GetRecoveryFlowRequest {
                flow_id: second.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(flow.state(), FlowState::CodeSent);
        if known {
            app.drain_deliveries().await;
            let mails = app
                .notifier
                .wait_for(&login, 3, Duration::from_secs(1))
                .await;
            assert_eq!(mails.len(), 2, "only two codes are mailed");
        }
        per_login.push(answers);
    }
    assert_eq!(per_login[0], per_login[1]);
}

#[tokio::test]
async fn the_owner_recovers_once_the_window_has_passed() {
    let app = spawn_app_with(
        |c| {
            c.rate_limits.verify_code_per_account.limit = 1;
            c.rate_limits.verify_code_per_account.window_secs = 2;
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let (flow_id, code) = flow_with_code(&app, &login, true).await;
    let code = code.unwrap();
    app.verify(&flow_id, wrong_code(&code))
        .await
        .failure()
        .assert(Code::InvalidArgument, "CODE_INVALID");
    assert_account_limited(&app.verify(&flow_id, &code).await.failure());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.verify(&flow_id, &code)
        .await
        .expect("the right code verifies once the window has passed");
}

#[tokio::test]
async fn an_operator_lifts_the_block_of_a_login() {
    let app = spawn_app_with(
        |c| c.rate_limits.verify_code_per_account.limit = 1,
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let (flow_id, code) = flow_with_code(&app, &login, true).await;
    let code = code.unwrap();
    app.verify(&flow_id, wrong_code(&code)).await.failure();
    assert_account_limited(&app.verify(&flow_id, &code).await.failure());
    app.app
        .unblock(&LoginId::parse("login_id", &login).unwrap())
        .await
        .unwrap();
    app.verify(&flow_id, &code)
        .await
        .expect("the right code verifies after the block is lifted");
}

/// `recovery-service account unblock` against the store and database a running server uses.
#[tokio::test]
async fn the_unblock_command_lifts_the_block_for_a_running_server() {
    // The store the suite runs on, or the single-node Redis when that is the in-process one.
    let Some(redis) = test_redis_url().or_else(backend::redis) else {
        return;
    };
    let mut shared = None;
    let app = spawn_app_with(
        |c| {
            c.rate_limits.verify_code_per_account.limit = 1;
            if c.redis_url.is_none() {
                c.redis_url = Some(redis);
            }
            shared = Some((
                c.database_url.clone(),
                c.redis_url.clone().unwrap(),
                c.redis.key_prefix.clone(),
            ));
        },
        Overrides::default(),
    )
    .await;
    let (database_url, redis_url, prefix) = shared.unwrap();
    let login = unique_login();
    app.create_account(&login).await;
    let (flow_id, code) = flow_with_code(&app, &login, true).await;
    let code = code.unwrap();
    app.verify(&flow_id, wrong_code(&code)).await.failure();
    assert_account_limited(&app.verify(&flow_id, &code).await.failure());

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_recovery-service"))
        .args(["account", "unblock", "--login-id", &login])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RECOVERY_DATABASE_URL", database_url)
        .env("RECOVERY_REDIS_URL", redis_url)
        .env("RECOVERY_REDIS__KEY_PREFIX", prefix)
        .env("RECOVERY_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    app.verify(&flow_id, &code)
        .await
        .expect("the right code verifies after `account unblock`");
}

/// `flow.code_digits`: a deployment that wants a smaller guessing probability mails longer
/// codes, and a code of another length is refused as malformed, not weighed.
#[tokio::test]
async fn a_deployment_can_choose_longer_codes() {
    let app = spawn_app_with(|c| c.flow.code_digits = 8, Overrides::default()).await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;
    app.send_code(&flow.flow_id).await.expect("code sent");
    let mails = app
        .notifier
        .wait_for(&login, 1, Duration::from_secs(10))
        .await;
    let text = &mails.last().expect("the code was mailed").text;
    let code = text
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 8)
        .unwrap_or_else(|| panic!("no 8-digit code in {text}"))
        .to_owned();
    let failure = app.verify(&flow.flow_id, &code[..6]).await.failure();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(failure.fields(), vec!["code"]);
    app.verify(&flow.flow_id, &code)
        .await
        .expect("the 8-digit code verifies");
}

/// One canonical login end to end: an accented spelling never reaches John's account (no mail
/// to him: on MariaDB's default collation it did), and spellings that are John's login share
/// his per-login budget.
#[tokio::test]
async fn other_spellings_of_a_login_neither_reach_the_account_nor_get_a_fresh_budget() {
    let app = spawn_app_with(|c| c.rate_limits.per_login.limit = 1, Overrides::default()).await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let john = format!("john.{tag}@example.com");
    app.create_account(&john).await;

    let accented = format!("jöhn.{tag}@example.com");
    let flow = app.start(&accented).await;
    app.send_code(&flow.flow_id).await.expect("code sent");
    app.drain_deliveries().await;
    assert!(
        app.notifier.messages().iter().all(|m| m.to != john),
        "the accented spelling mailed John"
    );

    app.start(&john).await;
    let full_width = format!("\u{ff2a}\u{ff2f}\u{ff28}\u{ff2e}.{tag}@example.com");
    let refused = app.try_start(&full_width).await.failure();
    refused.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(refused.metadata("scope").as_deref(), Some("login"));
}

/// `ValidatePassword` (CPU) and `GetRecoveryFlow` count against the per-IP limit like the other
/// recovery RPCs.
#[tokio::test]
async fn validate_password_and_get_recovery_flow_count_against_the_per_ip_limit() {
    let app = spawn_app_with(|c| c.rate_limits.per_ip.limit = 3, Overrides::default()).await;
    let validate = || {
        let mut recovery = app.recovery.clone();
        async move {
            recovery
                .validate_password(proto::ValidatePasswordRequest {
                    password: NEW_PASSWORD.into(),
                    login_id: String::new(),
                })
                .await
        }
    };
    for _ in 0..3 {
        validate().await.expect("within the limit");
    }
    let refused = validate().await.failure();
    refused.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(refused.metadata("scope").as_deref(), Some("client_ip"));
    let refused = app
        .recovery
        .clone()
        .get_recovery_flow(proto::GetRecoveryFlowRequest {
            flow_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .failure();
    refused.assert(Code::ResourceExhausted, "RATE_LIMITED");
}

/// `VerifyCode` on flow ids that do not exist writes nothing to Redis (it used to write a
/// token-index key per call: 100 calls, 100 keys).
#[tokio::test]
async fn verify_code_on_a_missing_flow_writes_nothing_to_redis() {
    let Some(redis_url) = backend::redis() else {
        return;
    };
    let mut prefix = String::new();
    let app = spawn_app_with(
        |c| {
            c.redis_url = Some(redis_url.clone());
            prefix = c.redis.key_prefix.clone();
        },
        Overrides::default(),
    )
    .await;
    for _ in 0..20 {
        app.verify(&uuid::Uuid::new_v4().to_string(), "123456")
            .await
            .failure()
            .assert(Code::NotFound, "FLOW_NOT_FOUND");
    }
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    let written: Vec<&String> = keys.iter().filter(|k| !k.contains("rl:")).collect();
    assert!(written.is_empty(), "{written:?}");
}

/// `GetRecoveryFlow` (counted per client IP) as a gateway forwards it.
async fn get_flow_forwarded(
    app: &TestApp,
    forwarded: &str,
) -> Result<tonic::Response<proto::RecoveryFlow>, tonic::Status> {
    let mut request = tonic::Request::new(proto::GetRecoveryFlowRequest {
        flow_id: uuid::Uuid::new_v4().to_string(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", forwarded.parse().unwrap());
    app.recovery.clone().get_recovery_flow(request).await
}

#[track_caller]
fn assert_counted(answer: Result<tonic::Response<proto::RecoveryFlow>, tonic::Status>) {
    answer.failure().assert(Code::NotFound, "FLOW_NOT_FOUND");
}

#[track_caller]
fn assert_ip_limited(answer: Result<tonic::Response<proto::RecoveryFlow>, tonic::Status>) {
    let failure = answer.failure();
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(failure.metadata("scope").as_deref(), Some("client_ip"));
}

/// Behind two proxies of ours (`server.trusted_hops = 2`: an edge that appends the client, an
/// inner hop that appends the edge), the client is the second entry from the right: what a
/// client prepends is ignored, and two clients behind the same edge get a bucket each.
#[tokio::test]
async fn behind_two_trusted_hops_the_client_is_the_second_entry_from_the_right() {
    let app = spawn_app_with(
        |c| {
            c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            c.server.trusted_hops = 2;
            c.rate_limits.per_ip.limit = 3;
        },
        Overrides::default(),
    )
    .await;
    // The client forges a new left-most address each time; the edge appended what it saw
    // (203.0.113.5), and the inner hop appended the edge (10.1.2.3).
    for forged in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
        assert_counted(get_flow_forwarded(&app, &format!("{forged}, 203.0.113.5, 10.1.2.3")).await);
    }
    assert_ip_limited(get_flow_forwarded(&app, "4.4.4.4, 203.0.113.5, 10.1.2.3").await);
    // Another client behind the same edge is not locked out by the first.
    assert_counted(get_flow_forwarded(&app, "203.0.113.6, 10.1.2.3").await);
    // Nothing left of the client entry counts, even an address that looks like ours.
    assert_counted(get_flow_forwarded(&app, "203.0.113.5, 10.7.7.7, 10.1.2.3").await);
    app.stop().await;
}

/// IPv6 clients are counted per /64 (`rate_limits.ipv6_prefix_len`): a client owns its whole /64,
/// so counting single addresses would give it 2^64 buckets. IPv4-mapped IPv6 is IPv4.
#[tokio::test]
async fn ipv6_clients_are_counted_per_64_and_ipv4_mapped_addresses_as_ipv4() {
    let app = spawn_app_with(|c| c.rate_limits.per_ip.limit = 3, Overrides::default()).await;
    for address in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff:ffff:ffff:9",
    ] {
        assert_counted(get_flow_forwarded(&app, address).await);
    }
    assert_ip_limited(get_flow_forwarded(&app, "2001:db8:1:2:abcd::1").await);
    // The next /64 is another client.
    assert_counted(get_flow_forwarded(&app, "2001:db8:1:3::1").await);
    for address in ["198.51.100.7", "::ffff:198.51.100.7", "198.51.100.7"] {
        assert_counted(get_flow_forwarded(&app, address).await);
    }
    assert_ip_limited(get_flow_forwarded(&app, "::ffff:198.51.100.7").await);
    app.stop().await;

    // A deployment whose clients really get single addresses can say so.
    let app = spawn_app_with(
        |c| {
            c.rate_limits.per_ip.limit = 1;
            c.rate_limits.ipv6_prefix_len = 128;
        },
        Overrides::default(),
    )
    .await;
    assert_counted(get_flow_forwarded(&app, "2001:db8:1:2::1").await);
    assert_counted(get_flow_forwarded(&app, "2001:db8:1:2::2").await);
    assert_ip_limited(get_flow_forwarded(&app, "2001:db8:1:2::1").await);
    app.stop().await;
}

/// The global limit is a load shedder: once many clients (each within its per-IP budget) have
/// filled it, everyone is refused, a newcomer too, with `scope=global` and the time to wait.
#[tokio::test]
async fn the_global_limit_refuses_everyone_with_scope_global_and_retry_info() {
    let app = spawn_app_with(|c| c.rate_limits.global.limit = 3, Overrides::default()).await;
    for client in ["203.0.113.1", "203.0.113.2", "2001:db8:7::1"] {
        assert_counted(get_flow_forwarded(&app, client).await);
    }
    let failure = get_flow_forwarded(&app, "198.51.100.200").await.failure();
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(failure.metadata("scope").as_deref(), Some("global"));
    let wait = failure.retry_after().expect("RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    app.stop().await;
}
