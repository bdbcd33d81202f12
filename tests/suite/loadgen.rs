//! Smoke test of the load generator (`src/bin/loadgen`): every scenario, a few requests each,
//! against the real server on port 0 with real SMTP (aiosmtpd) for the codes. Correctness only:

//! every answer must be the expected one. Speed is measured by `scripts/bench.sh`, never here.

use std::path::Path;
use std::process::Command;

use crate::common::smtp_sink::{Sink, SinkOptions};
use crate::common::{CAPTCHA_ANSWER, TempDir, spawn_app_with};
use recovery_service::server::Overrides;

const SCENARIOS: [&str; 13] = [
    "health",
    "create-captcha",
    "start-recovery",
    "get-recovery-flow",
    "send-verification-code",
    "verify-code-wrong",
    "verify-code-right",
    "reset-password",
    "validate-password",
    "validate-password-worst",
    "cancel-recovery",
    "verify-password",
    "recovery",
];

fn loadgen<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("loadgen runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn summaries(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_scenario_gets_only_correct_answers() {
    let sink = Sink::start(SinkOptions::default());
    let port = sink.port;
    let app = spawn_app_with(
        move |c| {
            c.notifier = recovery_service::config::NotifierKind::Smtp;
            c.smtp_url = Some(secrecy::SecretString::from(format!(
                "smtp://127.0.0.1:{port}"
            )));
            c.rate_limits.enabled = false;
        },
        Overrides::default(),
    )
    .await;
    let dir = TempDir::new();
    let json = dir.0.join("runs.jsonl");
    let maildrop = sink.maildrop().display().to_string();
    let address = app.address.clone();
    for scenario in SCENARIOS {
        let args: Vec<String> = [
            "run",
            "--addr",
            &address,
            "--scenario",
            scenario,
            "--requests",
            "8",
            "--in-flight",
            "2",
            "--connections",
            "2",
            "--captcha-answer",
            CAPTCHA_ANSWER,
            "--maildrop",
            &maildrop,
            "--json",
            json.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec();
        // Waiting for the child must not stall the server's runtime threads.
        let (ok, output) = tokio::task::spawn_blocking(move || loadgen(&args))
            .await
            .unwrap();
        assert!(ok, "{scenario}: {output}");
    }
    let runs = summaries(&json);
    assert_eq!(runs.len(), SCENARIOS.len());
    for (run, scenario) in runs.iter().zip(SCENARIOS) {
        assert_eq!(run["scenario"], scenario);
        assert_eq!(run["requests"], 8, "{run}");
        assert_eq!(run["correct"], 8, "{run}");
        assert_eq!(run["errors"], serde_json::json!({}), "{run}");
        assert_eq!(run["wrong"], serde_json::json!({}), "{run}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scenario_that_gets_errors_says_so_and_fails() {
    // Rate limits on, a global budget of 3: the other 7 answers are RESOURCE_EXHAUSTED.
    let app = spawn_app_with(
        |c| {
            c.rate_limits.global.limit = 3;
        },
        Overrides::default(),
    )
    .await;
    let address = app.address.clone();
    let (ok, output) = tokio::task::spawn_blocking(move || {
        loadgen(&[
            "run",
            "--addr",
            &address,
            "--scenario",
            "create-captcha",
            "--requests",
            "10",
        ])
    })
    .await
    .unwrap();
    assert!(!ok, "{output}");
    assert!(output.contains("FAILED 7"), "{output}");
    assert!(
        output.contains("ResourceExhausted/RATE_LIMITED x7"),
        "{output}"
    );
    app.stop().await;
}

#[test]
fn the_argon2_ceiling_is_measured_with_the_given_parameters() {
    let dir = TempDir::new();
    let json = dir.0.join("argon2.jsonl");
    let (ok, output) = loadgen(&[
        "argon2",
        "--seconds",
        "0.2",
        "--m-cost-kib",
        "64",
        "--t-cost",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{output}");
    let runs = summaries(&json);
    assert_eq!(runs[0]["m_cost_kib"], 64);
    assert!(runs[0]["hashes"].as_u64().unwrap() > 0);
}
