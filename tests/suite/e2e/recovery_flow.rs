//! The recovery flow end to end through the generated gRPC clients: the seed story, every
//! reason of docs/api.md, enumeration safety, single use, races, bad input and expiry (with an
//! injected clock, never by sleeping).

use std::time::Duration;

use crate::common::*;
use recovery_service::proto::{self, FlowState};
use recovery_service::server::Overrides;
use tonic::Code;

#[tokio::test]
async fn the_whole_story_resets_the_password_and_only_the_new_one_logs_in() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    assert!(app.login_works(&login, OLD_PASSWORD).await);

    let captcha = app
        .recovery
        .clone()
        .create_captcha(proto::CreateCaptchaRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(captcha.image_png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(captcha.expires_at.is_some());
    let flow = app
        .recovery
        .clone()
        .start_recovery(proto::StartRecoveryRequest {
            login_id: login.clone(),
            captcha_id: captcha.captcha_id,
            captcha_answer: CAPTCHA_ANSWER.into(),
            locale: "en".into(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    assert_eq!(flow.state(), FlowState::ChooseMethod);
    assert_eq!(flow.methods.len(), 1);
    assert_eq!(flow.methods[0].channel(), proto::Channel::Email);
    let masked = &flow.methods[0].masked_destination;
    assert!(
        masked.starts_with("u***")
            && masked.ends_with("@e***.com")
            && !masked.contains(&login[1..6]),
        "{masked}"
    );
    assert_eq!(flow.attempts_left, 5);

    let code = app.send_and_read_code(&flow.flow_id, &login).await;
    let verified = app.verify(&flow.flow_id, &code).await.unwrap().into_inner();
    assert_eq!(verified.reset_token.len(), 43);
    let reset = app
        .reset(&verified.reset_token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .unwrap()
        .into_inner();
    assert!(reset.password_changed_at.is_some());

    assert!(app.login_works(&login, NEW_PASSWORD).await);
    assert!(!app.login_works(&login, OLD_PASSWORD).await);
    let after = app
        .recovery
        .clone()
        .get_recovery_flow(proto::GetRecoveryFlowRequest {
            flow_id: flow.flow_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.state(), FlowState::Completed);

    // The "your password was changed" notice goes out too.
    let messages = app
        .notifier
        .wait_for(&login, 2, Duration::from_secs(10))
        .await;
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[1].kind,
        recovery_service::notify::MessageKind::PasswordChanged
    );
    app.stop().await;
}

#[tokio::test]
async fn a_reset_writes_hash_history_audit_and_outbox_in_the_database() {
    use recovery_service::db::entities::{audit_event, outbox, password_history};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let app = spawn_app().await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (flow_id, token) = app.verified_flow(&login).await;
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();

    // Audit rows are group-committed: written within a few ms, at once on a flush.
    app.database.flush_audit().await;
    let db = app.database.connection();
    let history = password_history::Entity::find()
        .filter(password_history::Column::AccountId.eq(account_id.clone()))
        .all(db)
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "creation + reset");
    assert!(
        history
            .iter()
            .any(|h| h.recovery_flow_id.as_deref() == Some(flow_id.as_str()))
    );
    let events = outbox::Entity::find()
        .filter(outbox::Column::AggregateId.eq(account_id.clone()))
        .all(db)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "password.changed");
    assert!(events[0].payload.contains(&account_id));
    let audit = audit_event::Entity::find()
        .filter(audit_event::Column::AccountId.eq(account_id))
        .all(db)
        .await
        .unwrap();
    let kinds: Vec<&str> = audit.iter().map(|a| a.event.as_str()).collect();
    for expected in [
        "recovery.started",
        "recovery.code_sent",
        "recovery.code_verified",
        "recovery.password_reset",
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected} missing from {kinds:?}"
        );
    }
    for row in &audit {
        for secret in [NEW_PASSWORD, OLD_PASSWORD, token.as_str(), login.as_str()] {
            assert!(
                !format!("{row:?}").contains(secret),
                "audit row holds a secret: {row:?}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_login_gets_the_same_shape_and_nothing_is_ever_delivered() {
    let app = spawn_app().await;
    let known = unique_login();
    app.create_account(&known).await;
    let unknown = unique_login();

    let known_flow = app.start(&known).await;
    let unknown_flow = app.start(&unknown).await;
    assert_eq!(known_flow.state, unknown_flow.state);
    assert_eq!(known_flow.attempts_left, unknown_flow.attempts_left);
    assert_eq!(known_flow.methods.len(), unknown_flow.methods.len());
    assert_eq!(
        known_flow.methods[0].channel,
        unknown_flow.methods[0].channel
    );
    assert_eq!(
        known_flow.methods[0].masked_destination.len(),
        unknown_flow.methods[0].masked_destination.len()
    );
    assert_eq!(
        known_flow.resend_available_at.is_some(),
        unknown_flow.resend_available_at.is_some()
    );

    let sent = app
        .send_code(&unknown_flow.flow_id)
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    assert_eq!(sent.state(), FlowState::CodeSent);
    app.drain_deliveries().await;
    assert!(
        app.notifier.messages().iter().all(|m| m.to != unknown),
        "a message went to an unknown login"
    );

    // No code can verify it: every guess is just a wrong code.
    let failure = app.verify(&unknown_flow.flow_id, "123456").await.failure();
    failure.assert(Code::InvalidArgument, "CODE_INVALID");
    assert_eq!(failure.metadata("attempts_left").as_deref(), Some("4"));
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_captcha_is_captcha_invalid_and_burns_the_captcha() {
    let app = spawn_app().await;
    let captcha_id = app.captcha().await;
    let start = |answer: &str| {
        let mut client = app.recovery.clone();
        let request = proto::StartRecoveryRequest {
            login_id: unique_login(),
            captcha_id: captcha_id.clone(),
            captcha_answer: answer.into(),
            locale: String::new(),
            pow_solution: String::new(),
            device_token: String::new(),
        };
        async move { client.start_recovery(request).await }
    };
    start("000000")
        .await
        .failure()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");
    // The right answer no longer helps: the first answer burned it.
    start(CAPTCHA_ANSWER)
        .await
        .failure()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");
    app.stop().await;
}

#[tokio::test]
async fn a_used_captcha_is_rejected() {
    let app = spawn_app().await;
    let captcha_id = app.captcha().await;
    let request = || proto::StartRecoveryRequest {
        login_id: unique_login(),
        captcha_id: captcha_id.clone(),
        captcha_answer: CAPTCHA_ANSWER.into(),
        locale: String::new(),
        pow_solution: String::new(),
        device_token: String::new(),
    };
    app.recovery
        .clone()
        .start_recovery(request())
        .await
        .unwrap();
    app.recovery
        .clone()
        .start_recovery(request())
        .await
        .failure()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_captcha_is_rejected() {
    let app = spawn_app().await;
    let captcha_id = app.captcha().await;
    app.clock.advance(Duration::from_secs(5 * 60 + 1));
    app.recovery
        .clone()
        .start_recovery(proto::StartRecoveryRequest {
            login_id: unique_login(),
            captcha_id,
            captcha_answer: CAPTCHA_ANSWER.into(),
            locale: String::new(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await
        .failure()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");
    app.stop().await;
}

#[tokio::test]
async fn without_a_captcha_start_is_refused_naming_both_ways_through_unless_captcha_is_off() {
    let app = spawn_app().await;
    let request = || proto::StartRecoveryRequest {
        login_id: unique_login(),
        ..Default::default()
    };
    let failure = app
        .recovery
        .clone()
        .start_recovery(request())
        .await
        .failure();
    // The default image captcha takes the digits or, instead, the proof of work: a call with
    // neither is malformed, and the violations name every field that would have let it through.
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        failure.fields(),
        vec!["captcha_id", "captcha_answer", "pow_solution"]
    );
    app.stop().await;

    let app = spawn_app_with(
        |c| c.captcha.mode = recovery_service::recovery::handle::CaptchaMode::Off,
        Overrides::default(),
    )
    .await;
    let flow = app
        .recovery
        .clone()
        .start_recovery(request())
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    assert_eq!(flow.state(), FlowState::ChooseMethod);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_or_expired_flow_is_flow_not_found() {
    let app = spawn_app().await;
    app.recovery
        .clone()
        .get_recovery_flow(proto::GetRecoveryFlowRequest {
            flow_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .failure()
        .assert(Code::NotFound, "FLOW_NOT_FOUND");

    let flow = app.start(&unique_login()).await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.send_code(&flow.flow_id)
        .await
        .failure()
        .assert(Code::NotFound, "FLOW_NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn verifying_before_a_code_was_sent_is_a_flow_state_error() {
    let app = spawn_app().await;
    let flow = app.start(&unique_login()).await;
    let failure = app.verify(&flow.flow_id, "123456").await.failure();
    failure.assert(Code::FailedPrecondition, "FLOW_STATE");
    assert_eq!(failure.metadata("state").as_deref(), Some("CHOOSE_METHOD"));
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_code_is_code_invalid_and_counts_down() {
    let app = spawn_app().await;
    let flow = app.code_sent_flow().await;
    let wrong = wrong_code(&flow.code);
    let failure = app.verify(&flow.flow_id, wrong).await.failure();
    failure.assert(Code::InvalidArgument, "CODE_INVALID");
    assert_eq!(failure.metadata("attempts_left").as_deref(), Some("4"));
    assert_eq!(failure.fields(), vec!["code"]);
    // The right code still works afterwards.
    app.verify(&flow.flow_id, &flow.code).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn five_concurrent_wrong_codes_kill_the_flow_and_the_sixth_attempt_is_exhausted() {
    let app = spawn_app().await;
    let flow = app.code_sent_flow().await;
    let wrong = wrong_code(&flow.code);
    let results = verify_in_parallel(&app, &flow.flow_id, wrong, 5).await;
    let mut left: Vec<String> = results
        .into_iter()
        .map(|r| r.failure().metadata("attempts_left").unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec!["0", "1", "2", "3", "4"],
        "each wrong code counted exactly once"
    );
    // Even the right code is refused now.
    app.verify(&flow.flow_id, &flow.code)
        .await
        .failure()
        .assert(Code::FailedPrecondition, "ATTEMPTS_EXHAUSTED");
    app.send_code(&flow.flow_id)
        .await
        .failure()
        .assert(Code::FailedPrecondition, "ATTEMPTS_EXHAUSTED");
    app.stop().await;
}

/// `n` concurrent `VerifyCode` calls, each on its own task.
async fn verify_in_parallel(
    app: &TestApp,
    flow_id: &str,
    code: &str,
    n: usize,
) -> Vec<Result<tonic::Response<proto::VerifyCodeResponse>, tonic::Status>> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut client = app.recovery.clone();
            let request = proto::VerifyCodeRequest {
                flow_id: flow_id.to_owned(),
                code: code.to_owned(),
            };
            tokio::spawn(async move { client.verify_code(request).await })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

#[tokio::test]
async fn an_expired_code_is_code_expired_and_a_new_one_can_be_sent() {
    let app = spawn_app().await;
    let flow = app.code_sent_flow().await;
    app.clock.advance(Duration::from_secs(10 * 60));
    app.verify(&flow.flow_id, &flow.code)
        .await
        .failure()
        .assert(Code::FailedPrecondition, "CODE_EXPIRED");
    let fresh = app.send_and_read_code(&flow.flow_id, &flow.login).await;
    app.verify(&flow.flow_id, &fresh).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_resend_inside_the_cooldown_is_too_soon_with_retry_info() {
    let app = spawn_app().await;
    let flow = app.start(&unique_login()).await;
    app.send_code(&flow.flow_id).await.unwrap();
    app.clock.advance(Duration::from_secs(20));
    let failure = app.send_code(&flow.flow_id).await.failure();
    failure.assert(Code::ResourceExhausted, "RESEND_TOO_SOON");
    assert_eq!(failure.retry_after(), Some(Duration::from_secs(40)));
    app.stop().await;
}

#[tokio::test]
async fn a_new_code_replaces_the_old_one() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;
    let first = app.send_and_read_code(&flow.flow_id, &login).await;
    app.clock.advance(Duration::from_secs(61));
    let second = app.send_and_read_code(&flow.flow_id, &login).await;
    if first != second {
        app.verify(&flow.flow_id, &first)
            .await
            .failure()
            .assert(Code::InvalidArgument, "CODE_INVALID");
    }
    app.verify(&flow.flow_id, &second).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_sixth_send_of_a_flow_is_rate_limited() {
    let app = spawn_app().await;
    let flow = app.start(&unique_login()).await;
    for _ in 0..5 {
        app.send_code(&flow.flow_id).await.unwrap();
        app.clock.advance(Duration::from_secs(61));
    }
    let failure = app.send_code(&flow.flow_id).await.failure();
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert!(failure.retry_after().is_some());
    assert_eq!(failure.metadata("scope").as_deref(), Some("flow"));
    app.stop().await;
}

#[tokio::test]
async fn starts_are_rate_limited_per_login_whether_or_not_it_exists() {
    let app = spawn_app_with(|c| c.rate_limits.per_login.limit = 2, Overrides::default()).await;
    let known = unique_login();
    app.create_account(&known).await;
    let unknown = unique_login();
    for login in [&known, &unknown] {
        app.start(login).await;
        app.start(login).await;
        let failure = app.try_start(login).await.failure();
        failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
        assert_eq!(failure.metadata("scope").as_deref(), Some("login"));
        assert!(failure.retry_after().unwrap() > Duration::from_secs(3000));
    }
    app.stop().await;
}

#[tokio::test]
async fn calls_are_rate_limited_per_client_ip_from_a_trusted_proxy() {
    let app = spawn_app_with(|c| c.rate_limits.per_ip.limit = 3, Overrides::default()).await;
    let call = |ip: &'static str| {
        let mut client = app.recovery.clone();
        async move {
            let mut request = tonic::Request::new(proto::CreateCaptchaRequest {});
            request
                .metadata_mut()
                .insert("x-forwarded-for", ip.parse().unwrap());
            client.create_captcha(request).await
        }
    };
    for _ in 0..3 {
        call("203.0.113.7").await.unwrap();
    }
    let failure = call("203.0.113.7").await.failure();
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(failure.metadata("scope").as_deref(), Some("client_ip"));
    // Another client behind the same proxy is not affected.
    call("198.51.100.9").await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_used_code_cannot_verify_again() {
    let app = spawn_app().await;
    let flow = app.code_sent_flow().await;
    app.verify(&flow.flow_id, &flow.code).await.unwrap();
    let failure = app.verify(&flow.flow_id, &flow.code).await.failure();
    failure.assert(Code::FailedPrecondition, "FLOW_STATE");
    assert_eq!(failure.metadata("state").as_deref(), Some("VERIFIED"));
    app.stop().await;
}

#[tokio::test]
async fn fifty_parallel_right_codes_yield_exactly_one_token() {
    let app = spawn_app().await;
    let flow = app.code_sent_flow().await;
    let results = verify_in_parallel(&app, &flow.flow_id, &flow.code, 50).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_used_reset_token_is_token_invalid() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    app.reset(&token, "Another-Quiet-Meadow-91", "Another-Quiet-Meadow-91")
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_or_expired_reset_token_is_token_invalid() {
    let app = spawn_app().await;
    app.reset(&"A".repeat(43), NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    app.clock.advance(Duration::from_secs(10 * 60));
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert!(app.login_works(&login, OLD_PASSWORD).await);
    app.stop().await;
}

#[tokio::test]
async fn mismatched_passwords_are_refused_and_the_token_survives() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    let failure = app
        .reset(&token, NEW_PASSWORD, "New-Velvet-Lantern-59?")
        .await
        .failure();
    failure.assert(Code::InvalidArgument, "PASSWORD_MISMATCH");
    assert_eq!(failure.fields(), vec!["new_password_confirmation"]);
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_weak_password_reports_every_violation_and_the_token_survives() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    let failure = app.reset(&token, "pässwörd", "pässwörd").await.failure();
    failure.assert(Code::InvalidArgument, "PASSWORD_POLICY");
    let reasons = failure.violation_reasons();
    assert!(
        reasons.contains(&"PASSWORD_INVALID_CHARACTERS".to_owned()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"PASSWORD_TOO_WEAK".to_owned()),
        "{reasons:?}"
    );
    assert!(failure.fields().iter().all(|f| f == "new_password"));

    let failure = app.reset(&token, "password", "password").await.failure();
    let reasons = failure.violation_reasons();
    assert!(
        reasons.contains(&"PASSWORD_COMMON".to_owned()),
        "{reasons:?}"
    );

    // Reusing the current password is refused too.
    let failure = app
        .reset(&token, OLD_PASSWORD, OLD_PASSWORD)
        .await
        .failure();
    assert_eq!(failure.violation_reasons(), vec!["PASSWORD_REUSED"]);

    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn validate_password_reports_violations_and_strength() {
    let app = spawn_app().await;
    let weak = app
        .recovery
        .clone()
        .validate_password(proto::ValidatePasswordRequest {
            password: "johnny123".into(),
            login_id: "johnny@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let reasons: Vec<&str> = weak.violations.iter().map(|v| v.reason.as_str()).collect();
    assert!(reasons.contains(&"PASSWORD_CONTAINS_LOGIN"), "{reasons:?}");
    assert!(reasons.contains(&"PASSWORD_TOO_WEAK"), "{reasons:?}");
    assert!(weak.strength < 3);

    let strong = app
        .recovery
        .clone()
        .validate_password(proto::ValidatePasswordRequest {
            password: NEW_PASSWORD.into(),
            login_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(strong.violations.is_empty(), "{:?}", strong.violations);
    assert!(strong.strength >= 3);
    app.stop().await;
}

#[tokio::test]
async fn cancel_ends_the_flow() {
    let app = spawn_app().await;
    let flow = app.start(&unique_login()).await;
    app.recovery
        .clone()
        .cancel_recovery(proto::CancelRecoveryRequest {
            flow_id: flow.flow_id.clone(),
        })
        .await
        .unwrap();
    app.send_code(&flow.flow_id)
        .await
        .failure()
        .assert(Code::NotFound, "FLOW_NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn a_reset_ends_every_other_open_flow_of_the_account() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let other = app.start(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    app.send_code(&other.flow_id)
        .await
        .failure()
        .assert(Code::NotFound, "FLOW_NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn two_flows_of_one_account_reset_at_once_leave_one_winner() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, first) = app.verified_flow(&login).await;
    app.clock.advance(Duration::from_secs(61));
    let (_, second) = app.verified_flow(&login).await;
    let a = app.reset(&first, NEW_PASSWORD, NEW_PASSWORD);
    let b = app.reset(
        &second,
        "Another-Quiet-Meadow-91",
        "Another-Quiet-Meadow-91",
    );
    let (a, b) = tokio::join!(a, b);
    assert_eq!(
        a.is_ok() as u8 + b.is_ok() as u8,
        1,
        "exactly one reset wins"
    );
    let (winner, loser) = if a.is_ok() {
        (NEW_PASSWORD, b)
    } else {
        ("Another-Quiet-Meadow-91", a)
    };
    loser
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert!(app.login_works(&login, winner).await);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_names_every_field_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let huge = "a".repeat(1 << 20);
    let failure = app
        .recovery
        .clone()
        .start_recovery(proto::StartRecoveryRequest {
            login_id: "not-an-email".into(),
            captcha_id: "x\0y".into(),
            captcha_answer: "12a".into(),
            locale: "<script>".into(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await
        .failure();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        failure.fields(),
        vec!["login_id", "locale", "captcha_id", "captcha_answer"]
    );

    // 1 MiB fields: refused by their length bound, before zxcvbn or argon2 see them.
    let failure = app
        .recovery
        .clone()
        .validate_password(proto::ValidatePasswordRequest {
            password: huge.clone(),
            login_id: huge.clone(),
        })
        .await
        .failure();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(failure.fields(), vec!["password", "login_id"]);
    let failure = app
        .accounts
        .clone()
        .verify_password(proto::VerifyPasswordRequest {
            login_id: "j\0@example.com".into(),
            password: huge.clone(),
        })
        .await
        .failure();
    assert_eq!(failure.fields(), vec!["login_id", "password"]);

    // A message over the transport limit (4 MiB) is refused by the codec.
    let failure = app
        .recovery
        .clone()
        .validate_password(proto::ValidatePasswordRequest {
            password: "a".repeat(5 << 20),
            login_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(failure.code(), Code::OutOfRange);

    let failure = app
        .recovery
        .clone()
        .verify_code(proto::VerifyCodeRequest {
            flow_id: String::new(),
            code: String::new(),
        })
        .await
        .failure();
    assert_eq!(failure.fields(), vec!["flow_id", "code"]);

    let failure = app.reset("", "", "").await.failure();
    assert_eq!(
        failure.fields(),
        vec!["reset_token", "new_password", "new_password_confirmation"]
    );

    let failure = app
        .accounts
        .clone()
        .create_account(proto::CreateAccountRequest {
            login_id: "bad".into(),
            email: "also bad".into(),
            phone: "12".into(),
            password: String::new(),
        })
        .await
        .failure();
    assert_eq!(
        failure.fields(),
        vec!["login_id", "email", "phone", "password"]
    );

    // Still serving.
    app.captcha().await;
    app.stop().await;
}

#[tokio::test]
async fn a_non_ascii_password_is_refused_under_the_ascii_policy() {
    let app = spawn_app().await;
    let failure = app
        .accounts
        .clone()
        .create_account(proto::CreateAccountRequest {
            login_id: unique_login(),
            email: String::new(),
            phone: String::new(),
            password: "Рыжий-Лис-Прыгает-42".into(),
        })
        .await
        .failure();
    failure.assert(Code::InvalidArgument, "PASSWORD_POLICY");
    assert_eq!(
        failure.violation_reasons(),
        vec!["PASSWORD_INVALID_CHARACTERS"]
    );
    app.stop().await;
}

#[tokio::test]
async fn creating_an_account_twice_is_account_exists_case_insensitively() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    app.accounts
        .clone()
        .create_account(proto::CreateAccountRequest {
            login_id: login.to_uppercase(),
            email: String::new(),
            phone: String::new(),
            password: OLD_PASSWORD.into(),
        })
        .await
        .failure()
        .assert(Code::AlreadyExists, "ACCOUNT_EXISTS");
    app.stop().await;
}

#[tokio::test]
async fn logins_are_case_folded_for_lookup() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    assert!(
        app.login_works(&format!("  {}  ", login.to_uppercase()), OLD_PASSWORD)
            .await
    );
    assert!(!app.login_works(&unique_login(), OLD_PASSWORD).await);
    app.stop().await;
}

#[tokio::test]
async fn a_store_outage_is_unavailable_and_nothing_is_consumed() {
    let (app, store) = crate::common::faults::spawn_app_on_faulty_store().await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;
    store.go_down();
    let failure = app.send_code(&flow.flow_id).await.failure();
    failure.assert(Code::Unavailable, "UNAVAILABLE");
    assert!(
        !failure.status.message().contains("refused"),
        "no backend detail on the wire"
    );
    store.heal();
    // Nothing was consumed: the send goes through at once, no cooldown.
    app.send_and_read_code(&flow.flow_id, &login).await;
    app.stop().await;
}

#[tokio::test]
async fn an_unexpected_failure_is_internal_without_detail() {
    let (app, store) = crate::common::faults::spawn_app_on_faulty_store().await;
    store.break_internally();
    let failure = app
        .recovery
        .clone()
        .create_captcha(proto::CreateCaptchaRequest {})
        .await
        .failure();
    failure.assert(Code::Internal, "INTERNAL");
    assert_eq!(failure.status.message(), "internal error");
    app.stop().await;
}

#[tokio::test]
async fn the_code_message_is_in_the_requested_language() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let captcha_id = app.captcha().await;
    let flow = app
        .recovery
        .clone()
        .start_recovery(proto::StartRecoveryRequest {
            login_id: login.clone(),
            captcha_id,
            captcha_answer: CAPTCHA_ANSWER.into(),
            locale: "sv-SE".into(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    let code = app.send_and_read_code(&flow.flow_id, &login).await;
    let message = app
        .notifier
        .messages()
        .into_iter()
        .find(|m| m.to == login)
        .unwrap();
    assert_eq!(message.locale, "sv");
    assert!(message.html.contains(&code));
    assert!(
        !message.subject.contains(&code),
        "codes stay out of subjects (lock screens)"
    );
    app.stop().await;
}
