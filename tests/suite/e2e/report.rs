//! "It wasn't me": `ReportUnrequestedRecovery` with the report code from a
//! code mail ends the account's open flows and tokens, freezes recovery (starts answer as
//! usual, nothing is sent), audits and emits `recovery.reported`. Runs on the embedded defaults
//! and on Redis + PostgreSQL (`RECOVERY_TEST_STORE=redis RECOVERY_TEST_DB=postgres`).

use crate::common::*;
use recovery_service::db::entities::outbox;
use recovery_service::proto;
use recovery_service::recovery::input::LoginId;
use recovery_service::server::Overrides;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::Code;

impl TestApp {
    async fn report(
        &self,
        report_code: &str,
    ) -> Result<tonic::Response<proto::ReportUnrequestedRecoveryResponse>, tonic::Status> {
        self.recovery
            .clone()
            .report_unrequested_recovery(proto::ReportUnrequestedRecoveryRequest {
                report_code: report_code.into(),
            })
            .await
    }

    async fn get_flow(&self, flow_id: &str) -> Result<proto::RecoveryFlow, tonic::Status> {
        self.recovery
            .clone()
            .get_recovery_flow(proto::GetRecoveryFlowRequest {
                flow_id: flow_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A flow whose code mail was delivered: (flow id, code, report code).
async fn mailed_flow(app: &TestApp, login: &str) -> (String, String, String) {
    let flow = app.start(login).await;
    let code = app.send_and_read_code(&flow.flow_id, login).await;
    let mail = app.delivered_to(login).await.pop().unwrap();
    (flow.flow_id, code, report_code_in(&mail))
}

#[tokio::test]
async fn a_report_ends_the_flows_freezes_audits_and_emits_the_event() {
    let app = spawn_app().await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    let (flow_id, code, report_code) = mailed_flow(&app, &login).await;
    assert_ne!(report_code, code);

    // Pasted as shown, or in capitals with spaces: the same code.
    let spaced = format!("{} {}", &report_code[..16], &report_code[16..]).to_uppercase();
    app.report(&spaced).await.expect("report accepted");

    // Every open flow ended, and its token and code with it.
    app.get_flow(&flow_id)
        .await
        .map(|_| ())
        .map_err(|status| Failure { status })
        .unwrap_err()
        .assert(Code::NotFound, "FLOW_NOT_FOUND");
    app.verify(&flow_id, &code)
        .await
        .failure()
        .assert(Code::NotFound, "FLOW_NOT_FOUND");
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert!(app.login_works(&login, OLD_PASSWORD).await);

    // Single use.
    let again = app.report(&report_code).await.failure();
    again.assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert_eq!(again.fields(), vec!["report_code".to_owned()]);

    let audit = app.audit_of(&account_id).await;
    let reported: Vec<_> = audit
        .iter()
        .filter(|(event, _, _)| event == "recovery.reported")
        .collect();
    assert_eq!(reported.len(), 1, "{audit:?}");
    assert_eq!(reported[0].1, "ok");
    assert!(reported[0].2.as_deref().unwrap().contains("frozen_until"));

    let events = outbox::Entity::find()
        .filter(outbox::Column::AggregateId.eq(account_id.clone()))
        .filter(outbox::Column::EventType.eq("recovery.reported"))
        .all(app.database.connection())
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(payload["type"], "recovery.reported");
    assert_eq!(payload["account_id"], account_id.as_str());
    assert_eq!(payload["event_id"], events[0].event_id.as_str());
    assert!(payload["frozen_until"].is_string());
}

/// During the freeze a start for the reported account answers exactly like one for a login
/// that does not exist: a working flow id, the same shape, and no mail.
#[tokio::test]
async fn during_the_freeze_starts_answer_as_for_an_unknown_login_and_nothing_is_sent() {
    let app = spawn_app().await;
    let frozen = unique_login();
    app.create_account(&frozen).await;
    let (_, _, report_code) = mailed_flow(&app, &frozen).await;
    app.report(&report_code).await.expect("report accepted");
    let unknown = unique_login();
    let mails_before = app.delivered_to(&frozen).await.len();

    let mut answers = Vec::new();
    for login in [&frozen, &unknown] {
        let started = app.start(login).await;
        let got = app
            .get_flow(&started.flow_id)
            .await
            .expect("the flow exists");
        let sent = app
            .send_code(&started.flow_id)
            .await
            .expect("the send answers as usual")
            .into_inner()
            .flow
            .unwrap();
        let guess = app.verify(&started.flow_id, "123456").await.failure();
        answers.push((
            started.state,
            started.methods.len(),
            started.attempts_left,
            got.state,
            sent.state,
            sent.attempts_left,
            sent.resend_available_at.map(|t| t.seconds)
                == started.resend_available_at.map(|t| t.seconds),
            guess.status.code(),
            guess.reason(),
            guess.metadata("attempts_left"),
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        app.delivered_to(&frozen).await.len(),
        mails_before,
        "a frozen account got mail"
    );
}

/// `account unblock` (the operator, after checking who is asking) lifts the freeze.
#[tokio::test]
async fn unblock_lifts_the_freeze() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, _, report_code) = mailed_flow(&app, &login).await;
    app.report(&report_code).await.expect("report accepted");

    app.app
        .unblock(&LoginId::parse("login_id", &login).unwrap())
        .await
        .expect("unblocked");
    let flow = app.start(&login).await;
    let code = app.send_and_read_code(&flow.flow_id, &login).await;
    app.verify(&flow.flow_id, &code)
        .await
        .expect("recovery works again after unblock");
}

#[tokio::test]
async fn a_wrong_malformed_or_missing_report_code_is_refused_with_the_field_named() {
    let app = spawn_app().await;
    let unknown = app.report(&"ab".repeat(16)).await.failure();
    unknown.assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert_eq!(unknown.fields(), vec!["report_code".to_owned()]);
    for malformed in ["", "   ", "not-a-code", &"g".repeat(32), &"a".repeat(33)] {
        let failure = app.report(malformed).await.failure();
        failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(
            failure.fields(),
            vec!["report_code".to_owned()],
            "{malformed:?}"
        );
    }
}

/// The per-IP limit covers the report like every recovery RPC: report codes cannot be guessed
/// (128 bits), and a script trying cannot turn each try into a database write without bound.
#[tokio::test]
async fn reports_count_against_the_per_ip_limit() {
    let app = spawn_app_with(
        |c| {
            c.rate_limits.per_ip.limit = 2;
        },
        Overrides::default(),
    )
    .await;
    for _ in 0..2 {
        app.report(&"cd".repeat(16))
            .await
            .failure()
            .assert(Code::Unauthenticated, "TOKEN_INVALID");
    }
    let limited = app.report(&"cd".repeat(16)).await.failure();
    limited.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(limited.metadata("scope").as_deref(), Some("client_ip"));
}

/// The reset token of a mailed flow: (token, report code of its mail).
async fn verified_with_report_code(app: &TestApp, login: &str) -> (String, String) {
    let (flow_id, code, report_code) = mailed_flow(app, login).await;
    let token = app
        .verify(&flow_id, &code)
        .await
        .expect("code verifies")
        .into_inner()
        .reset_token;
    (token, report_code)
}

/// VerifyCode, then the report, then ResetPassword with the token from before the report: the
/// report bumped the account's password version, so the token is dead.
#[tokio::test]
async fn a_reset_token_from_before_a_report_is_token_invalid() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (token, report_code) = verified_with_report_code(&app, &login).await;
    app.report(&report_code).await.expect("report accepted");
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert!(app.login_works(&login, OLD_PASSWORD).await);
}

/// The owner's own completed reset revokes the report codes mailed before it: a link found in
/// the mailbox later cannot freeze the account the owner just recovered.
#[tokio::test]
async fn a_completed_reset_revokes_the_accounts_report_codes() {
    let app = spawn_app().await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (token, report_code) = verified_with_report_code(&app, &login).await;
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .expect("reset");
    let refused = app.report(&report_code).await.failure();
    refused.assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert_eq!(refused.fields(), vec!["report_code".to_owned()]);
    // Not frozen: the next recovery mails a code as usual.
    let flow = app.start(&login).await;
    app.send_and_read_code(&flow.flow_id, &login).await;
    let audit = app.audit_of(&account_id).await;
    assert!(
        audit
            .iter()
            .any(|(event, result, _)| event == "recovery.reported" && result == "token_invalid"),
        "{audit:?}"
    );
}

/// Decoys (an unknown login, a frozen account) write no report code: nobody receives their
/// mail, and a week-long key per decoy would let anyone fill the store.
#[tokio::test]
async fn decoys_write_no_report_code() {
    let (app, store) = crate::common::faults::spawn_app_on_faulty_store().await;
    let unknown = app.start(&unique_login()).await;
    app.send_code(&unknown.flow_id).await.expect("decoy send");
    assert_eq!(
        store.report_codes_put(),
        0,
        "an unknown login stored a code"
    );

    let login = unique_login();
    app.create_account(&login).await;
    let (_, _, report_code) = mailed_flow(&app, &login).await;
    assert_eq!(store.report_codes_put(), 1);
    app.report(&report_code).await.expect("report accepted");
    let frozen = app.start(&login).await;
    app.send_code(&frozen.flow_id).await.expect("decoy send");
    assert_eq!(
        store.report_codes_put(),
        1,
        "a frozen account stored a code"
    );
}

/// A report that cannot end the account's flows fails as a whole (UNAVAILABLE) and gives the
/// code back; a passing fault is retried; the same code works once the store answers.
#[tokio::test]
async fn a_report_that_cannot_end_the_flows_is_unavailable_and_can_be_repeated() {
    let (app, store) = crate::common::faults::spawn_app_on_faulty_store().await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (token, report_code) = verified_with_report_code(&app, &login).await;

    store.fail_flow_deletes(1_000);
    app.report(&report_code)
        .await
        .failure()
        .assert(Code::Unavailable, "UNAVAILABLE");
    let audit = app.audit_of(&account_id).await;
    assert!(
        !audit
            .iter()
            .any(|(event, _, _)| event == "recovery.reported"),
        "{audit:?}"
    );

    // One failure is retried within the call.
    store.fail_flow_deletes(1);
    app.report(&report_code).await.expect("report accepted");
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
}

/// The database is the guard, not the store: a flow the store failed to list for ending
/// survives the report, and still its token cannot reset.
#[tokio::test]
async fn a_flow_the_report_missed_still_cannot_reset() {
    let (app, store) = crate::common::faults::spawn_app_on_faulty_store().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (token, report_code) = verified_with_report_code(&app, &login).await;
    store.lose_account_flows(true);
    app.report(&report_code).await.expect("report accepted");
    store.lose_account_flows(false);
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert!(app.login_works(&login, OLD_PASSWORD).await);
}
