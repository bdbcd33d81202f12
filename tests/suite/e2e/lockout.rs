//! Lockout: an anonymous caller who spends an account's budgets (mails, guesses) must not lock
//! the owner or the helpdesk out of recovery. The helpdesk is never refused by the anonymous
//! per-account budgets (only by its own per-caller one); once the guess budget is spent, new
//! codes are long (100 bits) and weighed only by the flow's attempts; unknown logins answer
//! exactly like known ones at every point.

use std::time::Duration;

use crate::common::*;
use recovery_service::notify::Email;
use recovery_service::proto;
use recovery_service::server::Overrides;
use tonic::Code;

/// Budgets small enough for a test to spend: 2 mails and 2 weighed codes per account.
async fn app_with_small_budgets() -> TestApp {
    spawn_app_with(
        |c| {
            c.rate_limits.send_code_per_account.limit = 2;
            c.rate_limits.verify_code_per_account.limit = 2;
        },
        Overrides::default(),
    )
    .await
}

impl TestApp {
    async fn helpdesk_start(
        &self,
        login: &str,
        return_code: bool,
    ) -> Result<tonic::Response<proto::AdminStartRecoveryResponse>, tonic::Status> {
        self.accounts
            .clone()
            .admin_start_recovery(proto::AdminStartRecoveryRequest {
                login_id: login.into(),
                return_code,
                locale: "en".into(),
            })
            .await
    }

    /// Spends what is left of `login`'s anonymous mail budget from new flows, the way an
    /// attacker does; returns the answer of the first send that is refused.
    async fn spend_mail_budget(&self, login: &str) -> Failure {
        for _ in 0..20 {
            let flow = self.start(login).await;
            if let Err(status) = self.send_code(&flow.flow_id).await {
                return Failure { status };
            }
        }
        panic!("the mail budget of {login} was never spent");
    }

    /// Spends `login`'s anonymous guess budget (2) with wrong codes; returns the flow the
    /// guesses were made in (its code is a short one) and the answer past the budget.
    async fn spend_guess_budget(&self, login: &str) -> (String, Vec<String>) {
        let flow = self.start(login).await;
        self.send_code(&flow.flow_id).await.expect("code sent");
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(answer(self.verify(&flow.flow_id, "000000").await));
        }
        (flow.flow_id, answers)
    }

    /// The last code mailed to `login` (after `count` mails in all).
    async fn mailed(&self, login: &str, count: usize) -> Email {
        let mails = self
            .notifier
            .wait_for(login, count, Duration::from_secs(10))
            .await;
        assert_eq!(mails.len(), count, "mails to {login}");
        mails.last().cloned().unwrap()
    }
}

/// An answer as the attacker sees it: OK, or code, reason and the public metadata.
fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>) -> String {
    match result {
        Ok(_) => "OK".to_owned(),
        Err(status) => {
            let failure = Failure { status };
            format!(
                "{:?} {} attempts_left={:?} scope={:?}",
                failure.status.code(),
                failure.reason(),
                failure.metadata("attempts_left"),
                failure.metadata("scope")
            )
        }
    }
}

/// The token with its first character changed: well formed, never issued.
fn forge(token: &str) -> String {
    let first = if token.starts_with('A') { 'B' } else { 'A' };
    std::iter::once(first)
        .chain(token.chars().skip(1))
        .collect()
}

#[track_caller]
fn assert_account_limited(failure: &Failure) {
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(failure.metadata("scope").as_deref(), Some("account"));
}

#[tokio::test]
async fn the_helpdesk_returns_a_code_for_an_account_whose_mail_and_guess_budgets_are_spent() {
    let app = app_with_small_budgets().await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, guesses) = app.spend_guess_budget(&login).await;
    assert!(guesses[2].contains("RATE_LIMITED"), "{guesses:?}");
    assert_account_limited(&app.spend_mail_budget(&login).await);

    let started = app
        .helpdesk_start(&login, true)
        .await
        .expect("the helpdesk is not refused by the anonymous budgets")
        .into_inner();
    let flow_id = started.flow.unwrap().flow_id;
    // Its flow's codes are weighed by the flow's attempts only, not by the spent budget.
    app.verify(&flow_id, wrong_code(&started.code))
        .await
        .failure()
        .assert(Code::InvalidArgument, "CODE_INVALID");
    let token = app
        .verify(&flow_id, &started.code)
        .await
        .expect("the helpdesk's code verifies although the guess budget is spent")
        .into_inner()
        .reset_token;
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .expect("reset");
    assert!(app.login_works(&login, NEW_PASSWORD).await);
}

#[tokio::test]
async fn the_helpdesk_mails_a_code_for_an_account_whose_mail_and_guess_budgets_are_spent() {
    let app = app_with_small_budgets().await;
    let login = unique_login();
    app.create_account(&login).await;
    app.spend_guess_budget(&login).await;
    assert_account_limited(&app.spend_mail_budget(&login).await);
    // The attacker's sends mailed the budget's two codes.
    app.mailed(&login, 2).await;

    let started = app
        .helpdesk_start(&login, false)
        .await
        .expect("the helpdesk is not refused by the anonymous budgets")
        .into_inner();
    assert!(started.code.is_empty());
    let mail = app.mailed(&login, 3).await;
    app.verify(&started.flow.unwrap().flow_id, &code_in(&mail))
        .await
        .expect("the mailed helpdesk code verifies");
    // The helpdesk did not spend the anonymous budget either: it stays exactly as spent.
    assert_account_limited(&app.spend_mail_budget(&login).await);
}

#[tokio::test]
async fn helpdesk_per_caller_limits_a_caller_across_accounts() {
    let app = spawn_app_with(
        |c| c.rate_limits.helpdesk_per_caller.limit = 2,
        Overrides::default(),
    )
    .await;
    let (first, second) = (unique_login(), unique_login());
    app.create_account(&first).await;
    app.create_account(&second).await;
    app.helpdesk_start(&first, true).await.expect("first call");
    app.helpdesk_start(&second, true)
        .await
        .expect("second call");
    let limited = app.helpdesk_start(&first, true).await.failure();
    limited.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(limited.metadata("scope").as_deref(), Some("caller"));
    assert!(limited.retry_after().is_some());
    // Counted before the lookup: an unknown login meets the same refusal.
    let unknown = app.helpdesk_start(&unique_login(), true).await.failure();
    unknown.assert(Code::ResourceExhausted, "RATE_LIMITED");
}

#[tokio::test]
async fn after_the_guess_budget_is_spent_the_owner_gets_a_long_code_that_verifies_in_any_spelling()
{
    let app = spawn_app_with(
        |c| {
            c.rate_limits.verify_code_per_account.limit = 2;
            c.flow.max_sends = 10;
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let (flow_id, guesses) = app.spend_guess_budget(&login).await;
    assert!(guesses[2].contains("RATE_LIMITED"), "{guesses:?}");

    // A new code in the same flow is long, and the mail says why.
    app.clock.advance(Duration::from_secs(61));
    app.send_code(&flow_id).await.expect("code sent");
    let mail = app.mailed(&login, 2).await;
    let long = long_code_in(&mail);
    assert!(
        mail.text.contains("guessed"),
        "the mail does not say why the code is long: {}",
        mail.text
    );
    let plain = long.replace('-', "").to_lowercase();
    let token = app
        .verify(&flow_id, &plain)
        .await
        .expect("the long code verifies in lower case without hyphens")
        .into_inner()
        .reset_token;
    assert!(!token.is_empty());

    // Another flow, another long code, typed with hyphens and spaces.
    let flow = app.start(&login).await;
    app.send_code(&flow.flow_id).await.expect("code sent");
    let long = long_code_in(&app.mailed(&login, 3).await);
    let spaced = long.replace('-', " - ");
    app.verify(&flow.flow_id, &spaced)
        .await
        .expect("the long code verifies with hyphens and spaces");
}

#[tokio::test]
async fn a_wrong_long_code_counts_against_the_flows_attempts_only() {
    let app = spawn_app_with(
        |c| {
            c.rate_limits.verify_code_per_account.limit = 2;
            c.flow.max_attempts = 3;
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    app.spend_guess_budget(&login).await;
    let flow = app.start(&login).await;
    app.send_code(&flow.flow_id).await.expect("code sent");
    let long = long_code_in(&app.mailed(&login, 2).await);
    let first = if long.starts_with('Z') { 'Y' } else { 'Z' };
    let wrong: String = std::iter::once(first).chain(long.chars().skip(1)).collect();
    let failure = app.verify(&flow.flow_id, &wrong).await.failure();
    failure.assert(Code::InvalidArgument, "CODE_INVALID");
    assert_eq!(failure.metadata("attempts_left").as_deref(), Some("2"));
    // A six-digit code is a wrong code here, counted the same way.
    let failure = app.verify(&flow.flow_id, "123456").await.failure();
    assert_eq!(failure.metadata("attempts_left").as_deref(), Some("1"));
    app.verify(&flow.flow_id, &long)
        .await
        .expect("the right long code still verifies");
}

/// The same sequence for a registered login and a login nobody registered: every answer the
/// same, the long codes included (the decoy flow gets one at the same point).
#[tokio::test]
async fn an_unknown_login_meets_the_same_answers_at_every_point() {
    let app = spawn_app_with(
        |c| {
            c.rate_limits.verify_code_per_account.limit = 2;
            c.rate_limits.send_code_per_account.limit = 3;
            c.flow.max_attempts = 3;
        },
        Overrides::default(),
    )
    .await;
    let known = unique_login();
    app.create_account(&known).await;
    let mut transcripts = Vec::new();
    for login in [known.clone(), unique_login()] {
        let (_, mut answers) = app.spend_guess_budget(&login).await;
        let flow = app.start(&login).await;
        answers.push(answer(app.send_code(&flow.flow_id).await));
        answers.push(answer(
            app.verify(&flow.flow_id, "ABCD-EFGH-JKMN-PQRS-TVWX").await,
        ));
        answers.push(answer(app.verify(&flow.flow_id, "000000").await));
        answers.push(answer(
            app.verify(&flow.flow_id, "abcdefghjkmnpqrstvwx").await,
        ));
        answers.push(answer(
            app.verify(&flow.flow_id, "abcdefghjkmnpqrstvwx").await,
        ));
        let flow = app.start(&login).await;
        answers.push(answer(app.send_code(&flow.flow_id).await));
        answers.push(answer(
            app.send_code(&app.start(&login).await.flow_id).await,
        ));
        transcripts.push(answers);
    }
    assert_eq!(transcripts[0], transcripts[1]);
    // And the known login's flow did get a long code in the mail.
    let mails = app.delivered_to(&known).await;
    assert_eq!(mails.len(), 3);
    long_code_in(&mails[1]);
}

/// A long code is accepted by the request validation for every flow; a malformed one names the
/// field.
#[tokio::test]
async fn a_malformed_long_code_is_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    let flow = app.code_sent_flow().await;
    for bad in ["ABCD-EFGH-JKMN-PQRS-TVWU", "ABCD-EFGH-JKMN-PQRS-TVW"] {
        let failure = app.verify(&flow.flow_id, bad).await.failure();
        failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(failure.fields(), vec!["code".to_owned()]);
    }
    // Well formed but not this flow's code: a wrong code.
    let failure = app
        .verify(&flow.flow_id, "ABCD-EFGH-JKMN-PQRS-TVWX")
        .await
        .failure();
    failure.assert(Code::InvalidArgument, "CODE_INVALID");
}

impl TestApp {
    /// `StartRecovery` naming a device token.
    async fn try_start_with_device(
        &self,
        login: &str,
        device_token: &str,
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
                device_token: device_token.into(),
            })
            .await
    }

    async fn start_with_device(&self, login: &str, device_token: &str) -> proto::RecoveryFlow {
        self.try_start_with_device(login, device_token)
            .await
            .expect("flow started")
            .into_inner()
            .flow
            .unwrap()
    }

    /// A whole recovery of `login`: the device token its reset hands out.
    async fn recover_for_device_token(&self, login: &str, password: &str) -> String {
        let (_, token) = self.verified_flow(login).await;
        let device_token = self
            .reset(&token, password, password)
            .await
            .expect("reset")
            .into_inner()
            .device_token;
        assert_eq!(device_token.len(), 43, "256 bits, base64url");
        device_token
    }
}

#[tokio::test]
async fn the_owners_device_gets_a_code_after_the_mail_budget_is_spent_and_others_do_not() {
    let app = spawn_app_with(
        |c| {
            c.rate_limits.send_code_per_account.limit = 3;
            c.rate_limits.send_code_known_device.limit = 2;
            c.rate_limits.per_login.limit = 100;
        },
        Overrides::default(),
    )
    .await;
    let (login, other) = (unique_login(), unique_login());
    let account_id = app.create_account(&login).await;
    app.create_account(&other).await;
    let device = app.recover_for_device_token(&login, NEW_PASSWORD).await;
    let foreign = app.recover_for_device_token(&other, NEW_PASSWORD).await;
    assert_account_limited(&app.spend_mail_budget(&login).await);
    let unknown = unique_login();
    app.spend_mail_budget(&unknown).await;

    // A forged token, another account's token, and a token for a login nobody registered:
    // each answered exactly as no token at all.
    let forged = forge(&device);
    let mut refusals = Vec::new();
    for (login, token) in [
        (&login, ""),
        (&login, forged.as_str()),
        (&login, foreign.as_str()),
        (&login, "not a token"),
        (&unknown, device.as_str()),
        (&unknown, ""),
    ] {
        let flow = app.start_with_device(login, token).await;
        refusals.push(answer(app.send_code(&flow.flow_id).await));
    }
    assert!(refusals[0].contains("RATE_LIMITED"), "{refusals:?}");
    assert!(refusals.iter().all(|r| r == &refusals[0]), "{refusals:?}");

    // The owner's own device draws on the reserved budget.
    let mailed_before = app.delivered_to(&login).await.len();
    let flow = app.start_with_device(&login, &device).await;
    app.send_code(&flow.flow_id)
        .await
        .expect("the known device gets a code");
    let code = code_in(&app.mailed(&login, mailed_before + 1).await);
    app.verify(&flow.flow_id, &code)
        .await
        .expect("and it verifies");
    // The reserved budget is a budget too.
    let flow = app.start_with_device(&login, &device).await;
    app.send_code(&flow.flow_id).await.expect("second of two");
    let flow = app.start_with_device(&login, &device).await;
    assert_account_limited(&app.send_code(&flow.flow_id).await.failure());
    // The known device's starts are audited as such (three of them), the others are not.
    let audit = app.audit_of(&account_id).await;
    let known: Vec<_> = audit
        .iter()
        .filter(|(event, _, detail)| {
            event == "recovery.started" && detail.as_deref() == Some(r#"{"known_device":true}"#)
        })
        .collect();
    assert_eq!(known.len(), 3, "{audit:?}");
}

#[tokio::test]
async fn a_reset_replaces_the_device_token_and_a_report_revokes_it() {
    let app = spawn_app_with(
        |c| {
            c.rate_limits.send_code_per_account.limit = 3;
            c.rate_limits.per_login.limit = 100;
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let first = app.recover_for_device_token(&login, NEW_PASSWORD).await;
    let second = app
        .recover_for_device_token(&login, "another Strong passphrase 42")
        .await;
    assert_ne!(first, second);
    assert_account_limited(&app.spend_mail_budget(&login).await);
    let flow = app.start_with_device(&login, &first).await;
    assert_account_limited(&app.send_code(&flow.flow_id).await.failure());
    let flow = app.start_with_device(&login, &second).await;
    app.send_code(&flow.flow_id)
        .await
        .expect("the newest token is the known device");

    // "It wasn't me" forgets the known device (and freezes recovery: the helpdesk is the way).
    let mails = app.delivered_to(&login).await;
    let report_code = report_code_in(mails.last().unwrap());
    app.recovery
        .clone()
        .report_unrequested_recovery(proto::ReportUnrequestedRecoveryRequest { report_code })
        .await
        .expect("reported");
    app.app
        .unblock(&recovery_service::recovery::input::LoginId::parse("login_id", &login).unwrap())
        .await
        .unwrap();
    assert_account_limited(&app.spend_mail_budget(&login).await);
    let flow = app.start_with_device(&login, &second).await;
    assert_account_limited(&app.send_code(&flow.flow_id).await.failure());
}

#[tokio::test]
async fn the_export_names_the_device_token_expiry_and_erasure_takes_it() {
    let app = spawn_app().await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    app.recover_for_device_token(&login, NEW_PASSWORD).await;
    let json = app
        .accounts
        .clone()
        .export_account_data(proto::ExportAccountDataRequest {
            account_id: account_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .json;
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let expires = doc["device_token_expires_at"].as_str().expect("named");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((179..=180).contains(&days), "{days}");
    assert!(
        !json.contains("mac"),
        "the token's hash left the database: {json}"
    );
}

/// The per-login start limit is spendable with a few captchas an hour; the account's own device
/// is not held back by it, and any other token is answered as none.
#[tokio::test]
async fn the_owners_device_starts_past_a_spent_per_login_limit() {
    let app = spawn_app_with(|c| c.rate_limits.per_login.limit = 2, Overrides::default()).await;
    let login = unique_login();
    app.create_account(&login).await;
    let device = app.recover_for_device_token(&login, NEW_PASSWORD).await;
    app.start(&login).await;
    let refused = |result| match result {
        Ok(_) => panic!("started past the per-login limit"),
        Err(status) => {
            let failure = Failure { status };
            failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
            assert_eq!(failure.metadata("scope").as_deref(), Some("login"));
        }
    };
    refused(app.try_start(&login).await);
    let forged = forge(&device);
    refused(app.try_start_with_device(&login, &forged).await);
    let flow = app.start_with_device(&login, &device).await;
    app.send_code(&flow.flow_id)
        .await
        .expect("the owner's device started and got a code");
}
