//! Helpdesk recovery: `AccountService.AdminStartRecovery` starts a flow for
//! an existing account and mails the code, or returns it for out-of-band delivery and mails
//! nothing; the person continues with VerifyCode and ResetPassword. Runs on the embedded
//! defaults and on Redis + PostgreSQL (`RECOVERY_TEST_STORE=redis RECOVERY_TEST_DB=postgres`).

use crate::common::*;
use recovery_service::accounts::commands::CreateAccount;
use recovery_service::proto;
use recovery_service::server::Overrides;
use secrecy::SecretString;
use tonic::Code;

fn admin_request(login: &str, return_code: bool) -> proto::AdminStartRecoveryRequest {
    proto::AdminStartRecoveryRequest {
        login_id: login.into(),
        return_code,
        locale: "en".into(),
    }
}

impl TestApp {
    async fn admin_start(
        &self,
        login: &str,
        return_code: bool,
    ) -> Result<tonic::Response<proto::AdminStartRecoveryResponse>, tonic::Status> {
        self.accounts
            .clone()
            .admin_start_recovery(admin_request(login, return_code))
            .await
    }
}

#[tokio::test]
async fn a_returned_code_is_not_mailed_and_completes_the_recovery() {
    let app = spawn_app().await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let started = app
        .admin_start(&login, true)
        .await
        .expect("started")
        .into_inner();
    let flow = started.flow.unwrap();
    assert_eq!(flow.state(), proto::FlowState::CodeSent);
    assert_eq!(started.code.len(), 6);
    assert!(started.code.chars().all(|c| c.is_ascii_digit()));
    assert!(
        app.delivered_to(&login).await.is_empty(),
        "a returned code was mailed"
    );

    let token = app
        .verify(&flow.flow_id, &started.code)
        .await
        .expect("the returned code verifies")
        .into_inner()
        .reset_token;
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .expect("reset");
    assert!(app.login_works(&login, NEW_PASSWORD).await);

    // Audited with the caller (the test app trusts loopback callers) and without the code.
    let audit = app.audit_of(&account_id).await;
    let admin: Vec<_> = audit
        .iter()
        .filter(|(event, _, _)| event == "recovery.admin_started")
        .collect();
    assert_eq!(admin.len(), 1, "{audit:?}");
    let detail: serde_json::Value = serde_json::from_str(admin[0].2.as_deref().unwrap()).unwrap();
    assert_eq!(detail["caller"], "loopback");
    assert_eq!(detail["return_code"], true);
    assert!(
        audit.iter().all(|(_, _, detail)| !detail
            .as_deref()
            .unwrap_or_default()
            .contains(&started.code)),
        "the code reached the audit trail"
    );
    assert!(
        audit
            .iter()
            .any(|(event, result, _)| event == "recovery.code_sent" && result == "returned")
    );
}

#[tokio::test]
async fn without_return_code_the_code_is_mailed_and_not_returned() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let started = app
        .admin_start(&login, false)
        .await
        .expect("started")
        .into_inner();
    assert!(started.code.is_empty(), "the code was returned");
    let flow = started.flow.unwrap();
    let mails = app
        .notifier
        .wait_for(&login, 1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(mails.len(), 1);
    app.verify(&flow.flow_id, &code_in(&mails[0]))
        .await
        .expect("the mailed code verifies");
}

#[tokio::test]
async fn an_unknown_login_is_account_not_found_and_a_bad_one_names_the_field() {
    let app = spawn_app().await;
    app.admin_start(&unique_login(), true)
        .await
        .failure()
        .assert(Code::NotFound, "ACCOUNT_NOT_FOUND");
    let failure = app
        .accounts
        .clone()
        .admin_start_recovery(proto::AdminStartRecoveryRequest {
            login_id: String::new(),
            return_code: true,
            locale: "not a locale!".into(),
        })
        .await
        .failure();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        failure.fields(),
        vec!["login_id".to_owned(), "locale".to_owned()]
    );
}

/// The helpdesk's code is the account's live one: the self-service flow's code dies.
#[tokio::test]
async fn a_helpdesk_code_supersedes_the_self_service_code() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let own = app.start(&login).await;
    let own_code = app.send_and_read_code(&own.flow_id, &login).await;
    let started = app.admin_start(&login, true).await.unwrap().into_inner();
    app.verify(&own.flow_id, &own_code)
        .await
        .failure()
        .assert(Code::InvalidArgument, "CODE_INVALID");
    app.verify(&started.flow.unwrap().flow_id, &started.code)
        .await
        .expect("the helpdesk code verifies");
}

/// The helpdesk neither spends nor meets the anonymous per-account mail budget: it is the
/// owner's way back once an attacker has spent it.
#[tokio::test]
async fn helpdesk_starts_do_not_spend_the_per_account_send_budget() {
    let app = spawn_app_with(
        |c| c.rate_limits.send_code_per_account.limit = 2,
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    for _ in 0..3 {
        app.admin_start(&login, true)
            .await
            .expect("not limited by the account's mail budget");
    }
    for _ in 0..2 {
        let flow = app.start(&login).await;
        app.send_code(&flow.flow_id)
            .await
            .expect("the budget is still whole");
    }
}

/// A report freeze holds self-service back, not the helpdesk, who has checked who is asking.
#[tokio::test]
async fn the_helpdesk_can_mail_a_code_during_a_report_freeze() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;
    app.send_and_read_code(&flow.flow_id, &login).await;
    let report_code = report_code_in(app.delivered_to(&login).await.last().unwrap());
    app.recovery
        .clone()
        .report_unrequested_recovery(proto::ReportUnrequestedRecoveryRequest { report_code })
        .await
        .expect("reported");
    let started = app.admin_start(&login, false).await.unwrap().into_inner();
    let mails = app
        .notifier
        .wait_for(&login, 2, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(mails.len(), 2, "the helpdesk mail was held back");
    app.verify(&started.flow.unwrap().flow_id, &code_in(&mails[1]))
        .await
        .expect("the helpdesk code verifies");
}

/// With API keys configured the audit names the key by its digest prefix, never the key.
#[tokio::test]
async fn the_caller_is_audited_by_its_api_key_digest() {
    use sha2::Digest;
    let key = "helpdesk-key-0123456789-0123456789";
    let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let configured = digest.clone();
    let app = spawn_app_with(
        move |c| c.account_api.api_key_sha256 = vec![configured],
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    let account = app
        .app
        .create_account(
            CreateAccount::parse(&login, "", "", &SecretString::from(OLD_PASSWORD)).unwrap(),
        )
        .await
        .unwrap();
    let mut request = tonic::Request::new(admin_request(&login, true));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    app.accounts
        .clone()
        .admin_start_recovery(request)
        .await
        .expect("started with the key");
    app.accounts
        .clone()
        .admin_start_recovery(admin_request(&login, true))
        .await
        .failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    let audit = app.audit_of(&account.id).await;
    let detail = audit
        .iter()
        .find(|(event, _, _)| event == "recovery.admin_started")
        .and_then(|(_, _, detail)| detail.clone())
        .unwrap();
    assert!(
        detail.contains(&format!("api-key:{}", &digest[..12])),
        "{detail}"
    );
    assert!(!detail.contains(key));
}
