//! The ALTCHA proof of work end to end (`RECOVERY_CAPTCHA=pow|both`): a real brute-force solver
//! in the test, then replay, expiry, a tampered signature, a wrong number and `both` needing
//! the picture as well as the work.

use std::time::Duration;

use crate::common::*;
use base64::Engine;
use recovery_service::proto;
use recovery_service::recovery::handle::CaptchaMode;
use recovery_service::server::Overrides;
use sha2::{Digest, Sha256};
use tonic::Code;

/// A cheap challenge so the brute force in the test takes milliseconds.
const TEST_MAX_NUMBER: u32 = 2_000;

async fn app(mode: CaptchaMode) -> TestApp {
    spawn_app_with(
        |c| {
            c.captcha = mode;
            c.flow.pow_max_number = TEST_MAX_NUMBER;
        },
        Overrides::default(),
    )
    .await
}

/// Independent of the service's code: what the ALTCHA widget does, step by step.
fn solve(pow: &proto::ProofOfWork) -> u64 {
    (0..=u64::from(pow.max_number))
        .find(|n| hex::encode(Sha256::digest(format!("{}{n}", pow.salt))) == pow.challenge)
        .expect("the challenge has a solution within max_number")
}

fn payload(pow: &proto::ProofOfWork, number: u64, signature: &str) -> String {
    let json = serde_json::json!({
        "algorithm": pow.algorithm,
        "challenge": pow.challenge,
        "number": number,
        "salt": pow.salt,
        "signature": signature,
    });
    base64::engine::general_purpose::STANDARD.encode(json.to_string())
}

async fn challenge(app: &TestApp) -> proto::CreateCaptchaResponse {
    app.recovery
        .clone()
        .create_captcha(proto::CreateCaptchaRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn start(
    app: &TestApp,
    login: &str,
    captcha_id: &str,
    pow_solution: &str,
) -> Result<proto::StartRecoveryResponse, tonic::Status> {
    app.recovery
        .clone()
        .start_recovery(proto::StartRecoveryRequest {
            login_id: login.into(),
            captcha_id: captcha_id.into(),
            captcha_answer: if captcha_id.is_empty() {
                String::new()
            } else {
                CAPTCHA_ANSWER.into()
            },
            locale: "en".into(),
            pow_solution: pow_solution.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

trait Refused {
    fn refused(self) -> Failure;
}

impl<T> Refused for Result<T, tonic::Status> {
    fn refused(self) -> Failure {
        match self {
            Ok(_) => panic!("expected a refusal"),
            Err(status) => Failure { status },
        }
    }
}

#[tokio::test]
async fn a_solved_challenge_starts_a_flow_once() {
    let app = app(CaptchaMode::Pow).await;
    let login = unique_login();
    app.create_account(&login).await;

    let reply = challenge(&app).await;
    assert!(reply.captcha_id.is_empty(), "pow mode draws no picture");
    assert!(reply.image_png.is_empty());
    let pow = reply.pow.expect("pow mode hands out a proof of work");
    assert_eq!(pow.algorithm, "SHA-256");
    assert_eq!(pow.max_number, TEST_MAX_NUMBER);
    assert!(pow.salt.contains("?expires="), "{}", pow.salt);

    let solution = payload(&pow, solve(&pow), &pow.signature);
    let flow = start(&app, &login, "", &solution).await.unwrap();
    assert!(flow.flow.is_some());

    // Single use: the same solution again is refused, for any login.
    start(&app, &login, "", &solution)
        .await
        .refused()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");
    start(&app, &unique_login(), "", &solution)
        .await
        .refused()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");
}

#[tokio::test]
async fn unknown_logins_pass_the_same_way() {
    let app = app(CaptchaMode::Pow).await;
    let pow = challenge(&app).await.pow.unwrap();
    let solution = payload(&pow, solve(&pow), &pow.signature);
    assert!(start(&app, &unique_login(), "", &solution).await.is_ok());
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let app = app(CaptchaMode::Pow).await;
    let pow = challenge(&app).await.pow.unwrap();
    let solution = payload(&pow, solve(&pow), &pow.signature);
    // The default captcha lifetime is 5 minutes.
    app.clock.advance(Duration::from_secs(301));
    start(&app, &unique_login(), "", &solution)
        .await
        .refused()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");
}

#[tokio::test]
async fn a_tampered_signature_or_salt_or_a_wrong_number_is_refused() {
    let app = app(CaptchaMode::Pow).await;
    let pow = challenge(&app).await.pow.unwrap();
    let number = solve(&pow);

    let mut forged = pow.signature.clone().into_bytes();
    forged[0] = if forged[0] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    start(&app, &unique_login(), "", &payload(&pow, number, &forged))
        .await
        .refused()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");

    start(
        &app,
        &unique_login(),
        "",
        &payload(&pow, number + 1, &pow.signature),
    )
    .await
    .refused()
    .assert(Code::InvalidArgument, "CAPTCHA_INVALID");

    // A challenge we never issued, solved honestly, with a made-up signature.
    let salt = "00112233445566778899aabb?expires=99999999999&";
    let own = proto::ProofOfWork {
        algorithm: "SHA-256".into(),
        challenge: hex::encode(Sha256::digest(format!("{salt}7"))),
        salt: salt.into(),
        signature: "ab".repeat(32),
        max_number: 10,
    };
    start(&app, &unique_login(), "", &payload(&own, 7, &own.signature))
        .await
        .refused()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");

    // The failures spent nothing: the honest solution still works once.
    let honest = payload(&pow, number, &pow.signature);
    assert!(start(&app, &unique_login(), "", &honest).await.is_ok());
}

#[tokio::test]
async fn missing_or_malformed_solutions_name_the_field() {
    let app = app(CaptchaMode::Pow).await;
    let failure = start(&app, &unique_login(), "", "").await.refused();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(failure.fields(), vec!["pow_solution"]);

    let failure = start(&app, &unique_login(), "", "not-base64-json!")
        .await
        .refused();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(failure.fields(), vec!["pow_solution"]);
}

#[tokio::test]
async fn both_needs_the_picture_and_the_work() {
    let app = app(CaptchaMode::Both).await;
    let login = unique_login();

    let reply = challenge(&app).await;
    assert!(!reply.captcha_id.is_empty());
    assert!(reply.image_png.starts_with(b"\x89PNG"));
    let pow = reply.pow.unwrap();
    let solution = payload(&pow, solve(&pow), &pow.signature);

    // The work alone is not enough...
    let failure = start(&app, &login, "", &solution).await.refused();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(failure.fields(), vec!["captcha_id", "captcha_answer"]);
    // ...nor the picture alone.
    let failure = start(&app, &login, &reply.captcha_id, "").await.refused();
    assert_eq!(failure.fields(), vec!["pow_solution"]);
    // Both together pass (the picture was not burnt by the refusals above: they were refused
    // before anything was taken).
    assert!(
        start(&app, &login, &reply.captcha_id, &solution)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn image_mode_hands_out_no_proof_of_work() {
    let app = app(CaptchaMode::Image).await;
    let reply = challenge(&app).await;
    assert!(reply.pow.is_none());
    assert!(!reply.captcha_id.is_empty());
}
