//! Redaction: every log event and every span field, at TRACE and from every
//! crate (the service, tonic, h2, hyper, sqlx, sea-orm, redis), recorded while full flows run —
//! successes and each kind of failure — and searched for passwords, codes, reset tokens,
//! captcha answers and unmasked logins.
//!
//! The capturing layer is the process-wide default, so one test does all the flows, in a process
//! of its own (`common::own_process`): nothing else writes into the capture.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::*;
use recovery_service::proto;
use recovery_service::server::Overrides;
use tonic::Code;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// One line per event, per span creation and per later `Span::record`, with every field.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain: a secret hidden in a source must be found too.
        let _ = write!(self.0, " {}={value}", field.name());
        let mut source = value.source();
        while let Some(error) = source {
            let _ = write!(self.0, ": {error}");
            source = error.source();
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let mut line = format!("span {} {}:", meta.target(), meta.name());
        attrs.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let name = ctx.span(id).map_or("?", |span| span.name());
        let mut line = format!("record {name}:");
        values.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = format!("event {} {} {}:", meta.level(), meta.target(), meta.name());
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        // `try_init` also routes the `log` crate into tracing, so crates that log through it
        // are searched as well.
        tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::TRACE)
            // What production drops whatever RUST_LOG says (credentials in dependencies' spans);
            // everything else is captured.
            .with(recovery_service::telemetry::secret_filter())
            .with(capture.clone())
            .try_init()
            .expect("the capture is the first subscriber of this process");
        capture
    })
}

/// `secret` occurs in `line`. Short all-digit secrets (codes, captcha answers) count only as
/// whole numbers, so that an unrelated number (a duration's fraction, a hex id) that happens to
/// contain the same six digits is not a false alarm.
fn occurs(line: &str, secret: &str) -> bool {
    if !secret.bytes().all(|b| b.is_ascii_digit()) {
        return line.contains(secret);
    }
    let bytes = line.as_bytes();
    line.match_indices(secret).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + secret.len()).copied();
        let joined = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.');
        !joined(before) && !joined(after)
    })
}

const WEAK_PASSWORD: &str = "Sunshine-2024";
const MISMATCH_A: &str = "Copper-Meadow-Whistle-19";
const MISMATCH_B: &str = "Copper-Meadow-Whistle-91";
const FORGED_TOKEN: &str = "Zm9yZ2VkLXRva2VuLW5vdC1pc3N1ZWQtYnktdGhlLXN";
const WRONG_CAPTCHA: &str = "937461";
const VALIDATED_PASSWORD: &str = "Teal-Orchard-Compass-64";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_unmasked_login_reaches_any_log_event_or_span() {
    if !alone(
        module_path!(),
        "no_secret_or_unmasked_login_reaches_any_log_event_or_span",
    ) {
        return;
    }
    let capture = capture();
    let mut secrets: Vec<(&str, String)> = vec![
        ("password", OLD_PASSWORD.into()),
        ("password", NEW_PASSWORD.into()),
        ("password", WEAK_PASSWORD.into()),
        ("password", MISMATCH_A.into()),
        ("password", MISMATCH_B.into()),
        ("password", VALIDATED_PASSWORD.into()),
        ("reset token", FORGED_TOKEN.into()),
        ("captcha answer", CAPTCHA_ANSWER.into()),
        ("captcha answer", WRONG_CAPTCHA.into()),
    ];

    // ---- The happy path and the refusals on a healthy app. ----
    // The database URL stands for the credentials it carries in production.
    let database_url = Arc::new(Mutex::new(String::new()));
    let seen = database_url.clone();
    // A webhook endpoint nobody listens on: its failures are logged, its secret and the token
    // in its URL never are.
    let hook_secret = "whsec_cmVkYWN0aW9uLXdlYmhvb2stc2VjcmV0LTAxMjM0NTY3";
    let hook_token = "hook-token-5f1e9a";
    secrets.push(("webhook secret", hook_secret.into()));
    secrets.push(("webhook URL token", hook_token.into()));
    let hook_url = format!(
        "http://127.0.0.1:{}/hooks?token={hook_token}",
        crate::common::servers::spare_port()
    );
    let app = spawn_app_with(
        move |c| {
            *seen.lock().unwrap() = c.database_url.clone();
            c.webhooks.endpoints = vec![
                serde_json::from_value(serde_json::json!({"url": hook_url, "secret": hook_secret}))
                    .unwrap(),
            ];
            c.webhooks.poll_interval_ms = 50;
        },
        Overrides::default(),
    )
    .await;
    let database_url = database_url.lock().unwrap().clone();
    assert!(!database_url.is_empty());
    secrets.push(("database URL", database_url));
    // Typed with capitals: both the typed and the case-folded form are secrets.
    let known = format!("Redact.{}", unique_login());
    let unknown = unique_login();
    secrets.push(("login", known.clone()));
    secrets.push(("login", known.to_lowercase()));
    secrets.push(("login", unknown.clone()));
    app.create_account(&known).await;
    let mut recovery = app.recovery.clone();

    // Wrong captcha.
    let captcha_id = app.captcha().await;
    recovery
        .start_recovery(proto::StartRecoveryRequest {
            login_id: known.clone(),
            captcha_id,
            captcha_answer: WRONG_CAPTCHA.into(),
            locale: "en".into(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await
        .failure()
        .assert(Code::InvalidArgument, "CAPTCHA_INVALID");

    // Full story with a wrong code, a policy violation, a mismatch and a forged token on the way.
    let flow = app.start(&known).await;
    let code = app.send_and_read_code(&flow.flow_id, &known).await;
    let wrong_code = if code == "739182" { "739183" } else { "739182" };
    secrets.push(("code", code.clone()));
    secrets.push(("typed code", wrong_code.to_owned()));
    app.verify(&flow.flow_id, wrong_code)
        .await
        .failure()
        .assert(Code::InvalidArgument, "CODE_INVALID");
    let token = app
        .verify(&flow.flow_id, &code)
        .await
        .unwrap()
        .into_inner()
        .reset_token;
    secrets.push(("reset token", token.clone()));
    app.reset(&token, WEAK_PASSWORD, WEAK_PASSWORD)
        .await
        .failure()
        .assert(Code::InvalidArgument, "PASSWORD_POLICY");
    app.reset(&token, MISMATCH_A, MISMATCH_B)
        .await
        .failure()
        .assert(Code::InvalidArgument, "PASSWORD_MISMATCH");
    app.reset(FORGED_TOKEN, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unauthenticated, "TOKEN_INVALID");
    assert!(app.login_works(&known, NEW_PASSWORD).await);
    assert!(!app.login_works(&known, OLD_PASSWORD).await);
    assert!(!app.login_works(&unknown, OLD_PASSWORD).await);

    // Helpdesk recovery with the code handed back, then "it wasn't me" with the report code
    // of a mail sent after the reset (the reset revoked the earlier ones), twice (the second is
    // refused).
    let helpdesk = app
        .accounts
        .clone()
        .admin_start_recovery(proto::AdminStartRecoveryRequest {
            login_id: known.clone(),
            return_code: true,
            locale: "en".into(),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.push(("helpdesk code", helpdesk.code.clone()));
    let after_reset = app.start(&known).await;
    let later_code = app.send_and_read_code(&after_reset.flow_id, &known).await;
    secrets.push(("code", later_code));
    let mails = app.delivered_to(&known).await;
    let report_code = report_code_in(
        mails
            .iter()
            .rev()
            .find(|m| m.text.contains("Report it"))
            .unwrap(),
    );
    secrets.push(("report code", report_code.clone()));
    for expect_ok in [true, false] {
        let reported = recovery
            .report_unrequested_recovery(proto::ReportUnrequestedRecoveryRequest {
                report_code: report_code.clone(),
            })
            .await;
        if expect_ok {
            reported.unwrap();
        } else {
            reported
                .failure()
                .assert(Code::Unauthenticated, "TOKEN_INVALID");
        }
    }

    // An unknown login's flow, a validation call, a cancel.
    let unknown_flow = app.start(&unknown).await;
    app.send_code(&unknown_flow.flow_id).await.unwrap();
    app.verify(&unknown_flow.flow_id, wrong_code)
        .await
        .failure();
    recovery
        .validate_password(proto::ValidatePasswordRequest {
            password: VALIDATED_PASSWORD.into(),
            login_id: known.clone(),
        })
        .await
        .unwrap();
    recovery
        .cancel_recovery(proto::CancelRecoveryRequest {
            flow_id: unknown_flow.flow_id.clone(),
        })
        .await
        .unwrap();
    // Everything delivered (two codes and the change notice) went through the worker's spans.
    let messages = app
        .notifier
        .wait_for(&known, 3, Duration::from_secs(10))
        .await;
    assert_eq!(messages.len(), 3);
    app.drain_deliveries().await;
    // The password.changed webhook was tried (and failed: nobody listens).
    let mut tried = false;
    for _ in 0..100 {
        use recovery_service::db::webhooks::webhook_delivery;
        use sea_orm::EntityTrait;
        let rows = webhook_delivery::Entity::find()
            .all(app.database.connection())
            .await
            .unwrap();
        if rows.iter().any(|r| r.attempts >= 1) {
            tried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tried, "the webhook was never attempted");
    for _ in 0..100 {
        if capture
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("webhook failed"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        capture
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("webhook failed")),
        "the webhook failure was not logged"
    );
    app.stop().await;

    // ---- INTERNAL and UNAVAILABLE: the error chains go to the log. ----
    let store = crate::common::faults::FaultyStore::new();
    let app = spawn_app_with(
        |_| {},
        Overrides {
            store: Some(Arc::new(store.clone())),
            ..Default::default()
        },
    )
    .await;
    let login = unique_login();
    secrets.push(("login", login.clone()));
    app.create_account(&login).await;
    let (flow_id, token) = app.verified_flow(&login).await;
    secrets.push(("reset token", token.clone()));
    for message in app.notifier.messages() {
        secrets.push(("code", code_in(&message)));
    }
    let captcha_id = app.captcha().await;
    store.break_internally();
    app.recovery
        .clone()
        .start_recovery(proto::StartRecoveryRequest {
            login_id: login.clone(),
            captcha_id,
            captcha_answer: CAPTCHA_ANSWER.into(),
            locale: "en".into(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await
        .failure()
        .assert(Code::Internal, "INTERNAL");
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Internal, "INTERNAL");
    app.verify(&flow_id, "123456")
        .await
        .failure()
        .assert(Code::Internal, "INTERNAL");
    app.recovery
        .clone()
        .create_captcha(proto::CreateCaptchaRequest {})
        .await
        .failure()
        .assert(Code::Internal, "INTERNAL");
    store.go_down();
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .failure()
        .assert(Code::Unavailable, "UNAVAILABLE");
    store.heal();
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    app.stop().await;

    let lines = capture.0.lock().unwrap().clone();
    // `REDACTION_DUMP=/tmp/lines.txt` keeps what was searched, for a reviewer.
    if let Some(path) = std::env::var_os("REDACTION_DUMP") {
        std::fs::write(path, lines.join("\n")).unwrap();
    }
    // Not vacuous: TRACE from the transport, the service's spans with their recorded fields,
    // the internal error's chain.
    assert!(lines.len() > 500, "only {} lines captured", lines.len());
    assert!(lines.iter().any(|l| l.contains("TRACE h2")), "no h2 TRACE");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("record reset_password:") && l.contains("flow_id")),
        "span fields recorded later are not captured"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("internal error") && l.contains("secret-looking detail")),
        "the INTERNAL chain was not logged"
    );
    let mut leaks = Vec::new();
    for line in &lines {
        for (what, secret) in &secrets {
            if occurs(line, secret) {
                leaks.push(format!("{what} {secret:?} in: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

#[test]
fn short_numeric_secrets_match_only_as_whole_numbers() {
    assert!(occurs("code=482915 sent", "482915"));
    assert!(occurs("{\"code\":\"482915\"}", "482915"));
    assert!(!occurs("elapsed=1.482915ms", "482915"));
    assert!(!occurs("id=a482915f", "482915"));
    assert!(occurs("password=Old-Granite", "Old-Granite"));
}
