//! One live code per account: a new code in any flow of an account makes
//! the codes of its other flows stop working, answered exactly like a wrong code; a completed
//! reset ends every other flow and reset token of the account. Runs on the embedded defaults
//! and on Redis + PostgreSQL (`RECOVERY_TEST_STORE=redis RECOVERY_TEST_DB=postgres`).

use crate::common::*;
use recovery_service::proto;
use tonic::Code;

/// The attempts left a `CODE_INVALID` answer reports.
fn attempts_left(failure: &Failure) -> String {
    failure.assert(Code::InvalidArgument, "CODE_INVALID");
    failure.metadata("attempts_left").expect("attempts_left")
}

#[tokio::test]
async fn a_new_code_in_another_flow_kills_the_old_code() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let first = app.start(&login).await;
    let first_code = app.send_and_read_code(&first.flow_id, &login).await;
    let second = app.start(&login).await;
    let second_code = app.send_and_read_code(&second.flow_id, &login).await;

    // The right code of the superseded flow answers like a wrong one, and is counted as one.
    let stale = app.verify(&first.flow_id, &first_code).await.failure();
    assert_eq!(attempts_left(&stale), "4");
    assert_eq!(stale.fields(), vec!["code".to_owned()]);
    let wrong = app
        .verify(&first.flow_id, wrong_code(&first_code))
        .await
        .failure();
    assert_eq!(attempts_left(&wrong), "3");
    assert_eq!(
        stale.status.message(),
        wrong.status.message(),
        "a superseded code reads exactly like a wrong one"
    );

    // The newest code works.
    let token = app
        .verify(&second.flow_id, &second_code)
        .await
        .expect("the live code verifies")
        .into_inner()
        .reset_token;
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .expect("reset with the live flow");
    assert!(app.login_works(&login, NEW_PASSWORD).await);
}

#[tokio::test]
async fn a_resend_in_the_old_flow_makes_it_live_again() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let first = app.start(&login).await;
    app.send_and_read_code(&first.flow_id, &login).await;
    let second = app.start(&login).await;
    let second_code = app.send_and_read_code(&second.flow_id, &login).await;
    app.clock.advance(std::time::Duration::from_secs(61));
    let resent = app.send_and_read_code(&first.flow_id, &login).await;

    let failure = app.verify(&second.flow_id, &second_code).await.failure();
    failure.assert(Code::InvalidArgument, "CODE_INVALID");
    app.verify(&first.flow_id, &resent)
        .await
        .expect("the code mailed last verifies");
}

/// Known and unknown logins: two flows each, a guess in the older flow. Same answers, same
/// counting, so the rule reveals nothing about which logins exist.
#[tokio::test]
async fn a_superseded_flow_answers_alike_for_known_and_unknown_logins() {
    let app = spawn_app().await;
    let known = unique_login();
    app.create_account(&known).await;
    let unknown = unique_login();
    let mut answers = Vec::new();
    for login in [&known, &unknown] {
        let old = app.start(login).await;
        app.send_code(&old.flow_id).await.expect("code sent");
        let new = app.start(login).await;
        let sent = app
            .send_code(&new.flow_id)
            .await
            .expect("code sent")
            .into_inner()
            .flow
            .unwrap();
        let guess = app.verify(&old.flow_id, "123456").await.failure();
        let flow = app
            .recovery
            .clone()
            .get_recovery_flow(proto::GetRecoveryFlowRequest {
                flow_id: old.flow_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        answers.push((
            guess.status.code(),
            guess.reason(),
            guess.metadata("attempts_left"),
            guess.fields(),
            guess.status.message().to_owned(),
            flow.state,
            flow.attempts_left,
            sent.state,
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].2.as_deref(), Some("4"));
}

/// A completed reset ends every other flow of the account: codes and reset tokens die with it.
#[tokio::test]
async fn a_completed_reset_ends_the_other_flows_and_their_tokens() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (first_flow, first_token) = app.verified_flow(&login).await;
    let (second_flow, second_token) = app.verified_flow(&login).await;
    let pending = app.start(&login).await;

    app.reset(&second_token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .expect("reset");

    // The other verified flow's token is dead (the live-code rule alone would not kill it).
    app.reset(&first_token, OLD_PASSWORD, OLD_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    for flow_id in [&first_flow, &pending.flow_id] {
        app.recovery
            .clone()
            .get_recovery_flow(proto::GetRecoveryFlowRequest {
                flow_id: flow_id.clone(),
            })
            .await
            .failure()
            .assert(Code::NotFound, "FLOW_NOT_FOUND");
        app.send_code(flow_id)
            .await
            .failure()
            .assert(Code::NotFound, "FLOW_NOT_FOUND");
    }
    // The flow that reset is completed, not gone.
    let completed = app
        .recovery
        .clone()
        .get_recovery_flow(proto::GetRecoveryFlowRequest {
            flow_id: second_flow,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(completed.state(), proto::FlowState::Completed);
    assert!(app.login_works(&login, NEW_PASSWORD).await);
}
