//! Every error carries a `google.rpc.LocalizedMessage`: in the flow's language when the error is
//! about a flow, else in the caller's `accept-language`, else in English.

use crate::common::{CAPTCHA_ANSWER, NEW_PASSWORD, OLD_PASSWORD, TestApp, spawn_app, unique_login};
use recovery_service::proto;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// The catalogue's texts, read as a UI author would: from the shipped files.
fn text(locale: &str, table: &str, reason: &str) -> String {
    let path = format!(
        "{}/templates/{locale}/errors.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let file: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    file[table][reason].as_str().unwrap().to_owned()
}

fn localized(status: &Status) -> (String, String) {
    let message = status
        .get_details_localized_message()
        .unwrap_or_else(|| panic!("no LocalizedMessage in {status:?}"));
    (message.locale, message.message)
}

fn reason(status: &Status) -> String {
    status.get_details_error_info().unwrap().reason
}

fn with_language<T>(message: T, accept_language: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("accept-language", accept_language.parse().unwrap());
    request
}

/// An account and a flow started in `locale`, with a code sent: (login, flow id).
async fn flow_in(app: &TestApp, locale: &str) -> (String, String) {
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
            locale: locale.into(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    (login, flow.flow_id)
}

/// A wrong code for `flow_id` (a flow started in Swedish), asked with `accept-language: ru`:
/// the answer is CODE_INVALID, explained in Swedish.
async fn wrong_code_asked_in_russian(app: &TestApp, flow_id: String) -> Status {
    let status = app
        .recovery
        .clone()
        .verify_code(with_language(
            proto::VerifyCodeRequest {
                flow_id,
                code: "000000".into(),
            },
            "ru",
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CODE_INVALID");
    assert_eq!(
        localized(&status),
        ("sv".to_owned(), text("sv", "errors", "CODE_INVALID"))
    );
    status
}

#[tokio::test]
async fn a_wrong_code_is_explained_in_the_flows_language_whatever_the_header_says() {
    let app = spawn_app().await;
    let (_, flow_id) = flow_in(&app, "sv-SE").await;
    app.send_code(&flow_id).await.unwrap();
    let status = wrong_code_asked_in_russian(&app, flow_id).await;
    // The machine-readable parts are untouched.
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .get_details_error_info()
            .unwrap()
            .metadata
            .contains_key("attempts_left")
    );
}

/// The language comes from the flow VerifyCode read itself: answering the error reads no flow
/// again (on Redis that second read was a round trip on every wrong code).
#[tokio::test]
async fn a_wrong_code_is_answered_in_the_flows_language_from_the_one_read_of_it() {
    let (app, store) = crate::common::faults::spawn_app_on_faulty_store().await;
    let (_, flow_id) = flow_in(&app, "sv-SE").await;
    app.send_code(&flow_id).await.unwrap();
    let reads_before = store.flow_reads();
    wrong_code_asked_in_russian(&app, flow_id).await;
    assert_eq!(
        store.flow_reads() - reads_before,
        1,
        "flow reads by one wrong code"
    );
}

#[tokio::test]
async fn an_unknown_flow_is_explained_in_the_callers_accept_language() {
    let app = spawn_app().await;
    let status = app
        .recovery
        .clone()
        .get_recovery_flow(with_language(
            proto::GetRecoveryFlowRequest {
                flow_id: uuid::Uuid::new_v4().to_string(),
            },
            "fi-FI, ru-RU;q=0.9, en;q=0.5",
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "FLOW_NOT_FOUND");
    assert_eq!(
        localized(&status),
        ("ru".to_owned(), text("ru", "errors", "FLOW_NOT_FOUND"))
    );
}

#[tokio::test]
async fn without_any_language_the_message_is_english() {
    let app = spawn_app().await;
    let status = app.verify("not a uuid", "12").await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_ARGUMENT");
    assert_eq!(
        localized(&status),
        ("en".to_owned(), text("en", "errors", "INVALID_ARGUMENT"))
    );
}

#[tokio::test]
async fn start_recovery_speaks_the_locale_it_was_asked_for() {
    let app = spawn_app().await;
    let captcha_id = app.captcha().await;
    let status = app
        .recovery
        .clone()
        .start_recovery(with_language(
            proto::StartRecoveryRequest {
                login_id: unique_login(),
                captcha_id,
                captcha_answer: "000000".into(),
                locale: "ru".into(),
                pow_solution: String::new(),
                device_token: String::new(),
            },
            "sv",
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CAPTCHA_INVALID");
    assert_eq!(localized(&status).0, "ru");
}

#[tokio::test]
async fn each_refused_password_rule_is_explained_in_the_flows_language() {
    let app = spawn_app().await;
    let (login, flow_id) = flow_in(&app, "ru").await;
    let code = app.send_and_read_code(&flow_id, &login).await;
    let token = app
        .verify(&flow_id, &code)
        .await
        .unwrap()
        .into_inner()
        .reset_token;
    let status = app.reset(&token, "password", "password").await.unwrap_err();
    assert_eq!(reason(&status), "PASSWORD_POLICY");
    assert_eq!(
        localized(&status),
        ("ru".to_owned(), text("ru", "errors", "PASSWORD_POLICY"))
    );
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert!(!violations.is_empty());
    for violation in violations {
        let message = violation
            .localized_message
            .unwrap_or_else(|| panic!("{} has no localized message", violation.reason));
        assert_eq!(message.locale, "ru");
        assert_eq!(message.message, text("ru", "violations", &violation.reason));
    }
    // A failed reset does not consume the token: the flow goes on in its language.
    let status = app
        .reset(&token, NEW_PASSWORD, OLD_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "PASSWORD_MISMATCH");
    assert_eq!(localized(&status).0, "ru");
}

#[tokio::test]
async fn a_caller_refused_by_the_interceptor_is_told_in_its_language() {
    let app = crate::common::spawn_app_with(
        |config| {
            // With a key configured, a caller without it is refused even on loopback.
            config.account_api.api_key_sha256 = vec!["0".repeat(64)];
        },
        Default::default(),
    )
    .await;
    let status = app
        .accounts
        .clone()
        .verify_password(with_language(
            proto::VerifyPasswordRequest {
                login_id: unique_login(),
                password: OLD_PASSWORD.into(),
            },
            "sv",
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "PERMISSION_DENIED");
    assert_eq!(
        localized(&status),
        ("sv".to_owned(), text("sv", "errors", "PERMISSION_DENIED"))
    );
}
