//! The password policy end to end: every rule has its own violation reason,
//! `ValidatePassword` and `ResetPassword` agree, Unicode mode with NFKC, and the history depth.

use crate::common::*;
use recovery_service::proto;
use recovery_service::recovery::policy::{CharClass, Charset, reason};
use recovery_service::server::Overrides;
use tonic::Code;

async fn validate(app: &TestApp, password: &str, login: &str) -> Vec<String> {
    let mut reasons: Vec<String> = app
        .recovery
        .clone()
        .validate_password(proto::ValidatePasswordRequest {
            password: password.into(),
            login_id: login.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .violations
        .into_iter()
        .map(|v| v.reason)
        .collect();
    reasons.sort();
    reasons
}

async fn reset_reasons(app: &TestApp, token: &str, password: &str) -> Vec<String> {
    let failure = app.reset(token, password, password).await.failure();
    failure.assert(Code::InvalidArgument, "PASSWORD_POLICY");
    let mut reasons = failure.violation_reasons();
    reasons.sort();
    reasons
}

#[tokio::test]
async fn validate_and_reset_report_the_same_reasons_and_every_rule_has_its_own() {
    let app = spawn_app_with(
        |c| c.password_policy.required_classes = vec![CharClass::Upper, CharClass::Digit],
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let local = login.split_once('@').unwrap().0.to_owned();
    let (_, token) = app.verified_flow(&login).await;

    let long = format!("Long-Pass-{}", "x7Q".repeat(45));
    assert!(long.len() > 128 && long.len() < 1024);
    let table: Vec<(String, &str)> = vec![
        ("aB3!".into(), reason::TOO_SHORT),
        (long, reason::TOO_LONG),
        ("Grüne-Wiese-Morgen-81".into(), reason::CHARSET),
        ("Password1".into(), reason::COMMON),
        (format!("Zq7-{local}-Vortex"), reason::CONTAINS_LOGIN),
        ("Aaaaaaaaaaaa1".into(), reason::TOO_WEAK),
        ("trombone-galaxy-marsh-kettle".into(), reason::MISSING_CLASS),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (password, expected) in &table {
        let validated = validate(&app, password, &login).await;
        let refused = reset_reasons(&app, &token, password).await;
        assert_eq!(validated, refused, "the two RPCs disagree on {password:?}");
        assert!(
            validated.iter().any(|r| r == expected),
            "{password:?} should be {expected}, got {validated:?}"
        );
        seen.extend(validated);
    }
    // Each class missing is its own violation (upper and digit here).
    let classes = validate(&app, "trombone-galaxy-marsh-kettle", &login).await;
    assert_eq!(
        classes
            .iter()
            .filter(|r| *r == reason::MISSING_CLASS)
            .count(),
        2
    );
    for every in [
        reason::TOO_SHORT,
        reason::TOO_LONG,
        reason::CHARSET,
        reason::COMMON,
        reason::CONTAINS_LOGIN,
        reason::TOO_WEAK,
        reason::MISSING_CLASS,
    ] {
        assert!(seen.contains(every), "{every} never reported: {seen:?}");
    }
    // A password that breaks nothing: no violation from either, and the token (which survived
    // every refusal above) sets it.
    assert!(validate(&app, NEW_PASSWORD, &login).await.is_empty());
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn in_unicode_mode_a_cyrillic_password_is_accepted_and_its_full_width_form_logs_in() {
    let app = spawn_app_with(
        |c| c.password_policy.charset = Charset::Unicode,
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let cyrillic = "Снежный-Барсук-Тайга-42";
    // Full-width hyphens and digits: NFKC folds them to the ASCII the password was set with.
    let full_width = "Снежный－Барсук－Тайга－４２";
    assert_ne!(cyrillic, full_width);
    assert!(validate(&app, cyrillic, &login).await.is_empty());

    let (_, token) = app.verified_flow(&login).await;
    app.reset(&token, cyrillic, cyrillic).await.unwrap();
    assert!(app.login_works(&login, cyrillic).await);
    assert!(app.login_works(&login, full_width).await);
    assert!(!app.login_works(&login, OLD_PASSWORD).await);

    // The history compares normalised forms too: the full-width form is the current password.
    let (_, token) = app.verified_flow(&login).await;
    assert_eq!(
        reset_reasons(&app, &token, full_width).await,
        vec![reason::REUSED.to_owned()]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_current_and_last_three_passwords_are_reused_and_the_fourth_previous_is_accepted() {
    let app = spawn_app().await;
    let login = unique_login();
    app.create_account(&login).await;
    // OLD_PASSWORD is p0; after four resets p4 is current and p0 is the 4th previous.
    let passwords = [
        OLD_PASSWORD,
        "Amber-Falcon-River-2931!",
        "Birch-Glacier-Oxide-4417?",
        "Cinder-Harbor-Quartz-5823#",
        "Dune-Ivory-Pylon-6109&",
    ];
    for next in &passwords[1..] {
        let (_, token) = app.verified_flow(&login).await;
        app.reset(&token, next, next).await.unwrap();
    }
    assert!(app.login_works(&login, passwords[4]).await);

    let (_, token) = app.verified_flow(&login).await;
    for reused in passwords[1..].iter().rev() {
        assert_eq!(
            reset_reasons(&app, &token, reused).await,
            vec![reason::REUSED.to_owned()],
            "{reused} should be refused as reused"
        );
    }
    // ValidatePassword has no account history to compare with: REUSED is ResetPassword's only.
    assert!(validate(&app, passwords[4], &login).await.is_empty());
    app.reset(&token, passwords[0], passwords[0]).await.unwrap();
    assert!(app.login_works(&login, passwords[0]).await);
    app.stop().await;
}
