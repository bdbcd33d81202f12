//! The ALTCHA proof of work end to end (`RECOVERY_CAPTCHA=pow|both`, and in image mode the way
//! round the picture, `[captcha] alternative = "pow"`): a real brute-force solver in the test,
//! then replay, expiry, a tampered signature, a wrong number, `both` needing the picture as
//! well as the work, and image mode taking either.

use std::time::Duration;

use crate::common::*;
use base64::Engine;
use recovery_service::proto;
use recovery_service::recovery::handle::{CaptchaAlternative, CaptchaMode};
use recovery_service::server::Overrides;
use sha2::{Digest, Sha256};
use tonic::Code;

/// A cheap challenge so the brute force in the test takes milliseconds.
const TEST_MAX_NUMBER: u32 = 2_000;
/// The work instead of the picture, dearer than `TEST_MAX_NUMBER` so the test sees which is used.
const TEST_ALTERNATIVE_MAX_NUMBER: u32 = 3_000;

async fn app(mode: CaptchaMode) -> TestApp {
    app_with(mode, CaptchaAlternative::Pow).await
}

async fn app_with(mode: CaptchaMode, alternative: CaptchaAlternative) -> TestApp {
    spawn_app_with(
        |c| {
            c.captcha.mode = mode;
            c.captcha.alternative = alternative;
            c.flow.pow_max_number = TEST_MAX_NUMBER;
            c.flow.pow_alternative_max_number = TEST_ALTERNATIVE_MAX_NUMBER;
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

/// A start with the picture's digits when `captcha_id` is given (the right ones: every test
/// picture shows `CAPTCHA_ANSWER`), and `pow_solution` as given.
async fn start(
    app: &TestApp,
    login: &str,
    captcha_id: &str,
    pow_solution: &str,
) -> Result<tonic::Response<proto::StartRecoveryResponse>, tonic::Status> {
    let digits = if captcha_id.is_empty() {
        ""
    } else {
        CAPTCHA_ANSWER
    };
    start_typing(app, login, captcha_id, digits, pow_solution).await
}

async fn start_typing(
    app: &TestApp,
    login: &str,
    captcha_id: &str,
    captcha_answer: &str,
    pow_solution: &str,
) -> Result<tonic::Response<proto::StartRecoveryResponse>, tonic::Status> {
    app.recovery
        .clone()
        .start_recovery(proto::StartRecoveryRequest {
            login_id: login.into(),
            captcha_id: captcha_id.into(),
            captcha_answer: captcha_answer.into(),
            locale: "en".into(),
            pow_solution: pow_solution.into(),
            device_token: String::new(),
        })
        .await
}

/// A fresh challenge, solved.
async fn solved(app: &TestApp) -> (proto::CreateCaptchaResponse, String) {
    let reply = challenge(app).await;
    let pow = reply.pow.clone().expect("a proof of work is handed out");
    let solution = payload(&pow, solve(&pow), &pow.signature);
    (reply, solution)
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
    assert!(flow.into_inner().flow.is_some());

    // Single use: the same solution again is refused, for any login.
    start(&app, &login, "", &solution)
        .await
        .failure()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");
    start(&app, &unique_login(), "", &solution)
        .await
        .failure()
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
        .failure()
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
        .failure()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");

    start(
        &app,
        &unique_login(),
        "",
        &payload(&pow, number + 1, &pow.signature),
    )
    .await
    .failure()
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
        .failure()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");

    // The failures spent nothing: the honest solution still works once.
    let honest = payload(&pow, number, &pow.signature);
    assert!(start(&app, &unique_login(), "", &honest).await.is_ok());
}

#[tokio::test]
async fn missing_or_malformed_solutions_name_the_field() {
    let app = app(CaptchaMode::Pow).await;
    let failure = start(&app, &unique_login(), "", "").await.failure();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(failure.fields(), vec!["pow_solution"]);

    let failure = start(&app, &unique_login(), "", "not-base64-json!")
        .await
        .failure();
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
    let failure = start(&app, &login, "", &solution).await.failure();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(failure.fields(), vec!["captcha_id", "captcha_answer"]);
    // ...nor the picture alone.
    let failure = start(&app, &login, &reply.captcha_id, "").await.failure();
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
async fn in_image_mode_the_picture_comes_with_dearer_work_as_the_way_round_it() {
    let app = app(CaptchaMode::Image).await;
    let reply = challenge(&app).await;
    assert!(reply.image_png.starts_with(b"\x89PNG"));
    assert!(!reply.captcha_id.is_empty());
    assert_eq!(reply.check(), proto::CaptchaCheck::DigitsOrPow);
    let pow = reply
        .pow
        .expect("image mode offers the work instead of the picture");
    assert_eq!(pow.max_number, TEST_ALTERNATIVE_MAX_NUMBER);
}

#[tokio::test]
async fn in_image_mode_the_digits_alone_or_the_work_alone_start_a_flow() {
    let app = app(CaptchaMode::Image).await;
    let login = unique_login();
    app.create_account(&login).await;

    // The digits, as before: the work that came with them is simply not used.
    let reply = challenge(&app).await;
    assert!(start(&app, &login, &reply.captcha_id, "").await.is_ok());

    // The work instead of the digits: with the picture's id and nothing typed...
    let (reply, solution) = solved(&app).await;
    let flow = start_typing(&app, &login, &reply.captcha_id, "", &solution)
        .await
        .unwrap();
    assert_eq!(flow.into_inner().flow.unwrap().methods.len(), 1);
    // ...or with no captcha field at all, for an unknown login the same way.
    let (_, solution) = solved(&app).await;
    assert!(start(&app, &unique_login(), "", &solution).await.is_ok());
}

#[tokio::test]
async fn in_image_mode_a_start_with_neither_the_digits_nor_the_work_is_invalid_argument_naming_both()
 {
    let app = app(CaptchaMode::Image).await;
    let reply = challenge(&app).await;
    let nothing = start_typing(&app, &unique_login(), "", "", "")
        .await
        .failure();
    let untyped = start_typing(&app, &unique_login(), &reply.captcha_id, "  ", "")
        .await
        .failure();
    nothing.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        nothing.fields(),
        vec!["captcha_id", "captcha_answer", "pow_solution"]
    );
    untyped.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(untyped.fields(), vec!["captcha_answer", "pow_solution"]);
    // Refused before anything was taken: the picture still takes its digits once.
    assert!(
        start(&app, &unique_login(), &reply.captcha_id, "")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn in_image_mode_the_work_instead_of_the_picture_is_spent_once() {
    let app = app(CaptchaMode::Image).await;
    let (reply, solution) = solved(&app).await;
    assert!(
        start_typing(&app, &unique_login(), &reply.captcha_id, "", &solution)
            .await
            .is_ok()
    );
    for captcha_id in [reply.captcha_id.as_str(), ""] {
        let replay = start_typing(&app, &unique_login(), captcha_id, "", &solution)
            .await
            .failure();
        replay.assert(Code::InvalidArgument, "CAPTCHA_INVALID");
        assert_eq!(replay.fields(), vec!["pow_solution"]);
    }
}

#[tokio::test]
async fn in_image_mode_every_proof_sent_is_checked_so_wrong_digits_beside_good_work_are_refused() {
    let app = app(CaptchaMode::Image).await;
    let (reply, solution) = solved(&app).await;
    let failure = start_typing(
        &app,
        &unique_login(),
        &reply.captcha_id,
        "000000",
        &solution,
    )
    .await
    .failure();
    failure.assert(Code::InvalidArgument, "CAPTCHA_INVALID");
    assert_eq!(failure.fields(), vec!["captcha_answer"]);
    // The wrong digits burnt the picture; the work was not spent and still passes alone.
    assert!(start(&app, &unique_login(), "", &solution).await.is_ok());

    // And a forged solution beside the right digits is refused too.
    let reply = challenge(&app).await;
    let pow = reply.pow.clone().unwrap();
    let wrong = payload(&pow, solve(&pow) + 1, &pow.signature);
    let failure = start(&app, &unique_login(), &reply.captcha_id, &wrong)
        .await
        .failure();
    failure.assert(Code::InvalidArgument, "CAPTCHA_INVALID");
    assert_eq!(failure.fields(), vec!["pow_solution"]);
}

#[tokio::test]
async fn with_alternative_none_image_mode_hands_out_no_work_and_needs_the_digits() {
    let app = app_with(CaptchaMode::Image, CaptchaAlternative::None).await;
    let reply = challenge(&app).await;
    assert!(reply.pow.is_none());
    assert!(!reply.captcha_id.is_empty());
    assert_eq!(reply.check(), proto::CaptchaCheck::Digits);
    // A solution from elsewhere does not replace the digits.
    let other = app_with(CaptchaMode::Pow, CaptchaAlternative::None).await;
    let (_, solution) = solved(&other).await;
    let failure = start(&app, &unique_login(), "", &solution).await.failure();
    failure.assert(Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(failure.fields(), vec!["captcha_id", "captcha_answer"]);
    assert!(
        start(&app, &unique_login(), &reply.captcha_id, "")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn each_mode_tells_the_front_end_what_start_recovery_checks() {
    for (mode, check) in [
        (CaptchaMode::Off, proto::CaptchaCheck::None),
        (CaptchaMode::Image, proto::CaptchaCheck::DigitsOrPow),
        (CaptchaMode::Pow, proto::CaptchaCheck::Pow),
        (CaptchaMode::Both, proto::CaptchaCheck::DigitsAndPow),
    ] {
        let app = app(mode).await;
        let reply = challenge(&app).await;
        assert_eq!(reply.check(), check, "{mode:?}");
        // Both keeps its meaning: its work is the ordinary one, never the dearer alternative.
        if let Some(pow) = reply.pow.filter(|_| mode != CaptchaMode::Image) {
            assert_eq!(pow.max_number, TEST_MAX_NUMBER, "{mode:?}");
        }
    }
}
