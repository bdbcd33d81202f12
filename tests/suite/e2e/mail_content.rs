//! What the code mail says, end to end: the server on port 0, called through the generated
//! client with the headers a browser behind the trusted proxy sends, the mail delivered over
//! SMTP to a real aiosmtpd and read back from its maildrop. "Who asked" (time in the locale's
//! format, the client IP the service trusts, the client product, never the raw user agent) and
//! the `Content-Language` of the locale actually used.
//!
//! Runs on every backend: `RECOVERY_TEST_STORE=redis RECOVERY_TEST_DB=postgres cargo test --test

//! mail_content`.

use std::time::Duration;

use crate::common::smtp_sink::{Sink, SinkOptions};
use crate::common::{CAPTCHA_ANSWER, TestApp, spawn_app_with, unique_login};
use chrono::{DateTime, Utc};
use mailparse::{MailHeaderMap, ParsedMail};
use recovery_service::clock::Clock;
use recovery_service::proto;
use recovery_service::server::Overrides;

const FIREFOX_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
                              (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

async fn smtp_app(sink: &Sink) -> TestApp {
    smtp_app_with(sink, |_| {}).await
}

/// A server mailing through `sink`, with `configure` applied on top.
async fn smtp_app_with(
    sink: &Sink,
    configure: impl FnOnce(&mut recovery_service::config::Config),
) -> TestApp {
    let port = sink.port;
    spawn_app_with(
        move |c| {
            c.notifier = recovery_service::config::NotifierKind::Smtp;
            c.smtp_url = Some(secrecy::SecretString::from(format!(
                "smtp://127.0.0.1:{port}"
            )));
            c.mail_from = "no-reply@recovery.test".into();
            configure(c);
        },
        Overrides::default(),
    )
    .await
}

/// Starts a flow in `locale` and asks for its code with the given request headers; returns the
/// time the service read from its clock for the send.
async fn ask_for_a_code(
    app: &TestApp,
    login: &str,
    locale: &str,
    headers: &[(&'static str, &str)],
) -> DateTime<Utc> {
    app.create_account(login).await;
    let captcha_id = app.captcha().await;
    let flow = app
        .recovery
        .clone()
        .start_recovery(proto::StartRecoveryRequest {
            login_id: login.into(),
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
    let mut request = tonic::Request::new(proto::SendVerificationCodeRequest {
        flow_id: flow.flow_id.clone(),
        channel: proto::Channel::Email.into(),
    });
    for (name, value) in headers {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    let now = app.clock.now();
    app.recovery
        .clone()
        .send_verification_code(request)
        .await
        .unwrap();
    now
}

/// The raw message the sink stored for `to`, waiting for it.
async fn delivered_to(sink: &Sink, to: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(raw) = sink.messages().into_iter().find(|raw| {
            mailparse::parse_mail(raw)
                .ok()
                .and_then(|mail| mail.headers.get_first_value("To"))
                .is_some_and(|value| value == to)
        }) {
            return raw;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message to {to} arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn part(mail: &ParsedMail<'_>, mimetype: &str) -> String {
    mail.subparts
        .iter()
        .find(|p| p.ctype.mimetype == mimetype)
        .unwrap_or_else(|| panic!("no {mimetype} part"))
        .get_body()
        .unwrap()
}

struct Case {
    locale: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    content_language: &'static str,
    html_root: &'static str,
    date_format: &'static str,
    /// Lines the text part must contain; `{when}` is the request time in `date_format`.
    lines: Vec<&'static str>,
}

#[tokio::test]
async fn the_code_mail_says_when_from_where_and_with_what_it_was_asked_for_in_the_flows_language() {
    let sink = Sink::start(SinkOptions::default());
    let app = smtp_app(&sink).await;
    let cases = vec![
        Case {
            // Behind the trusted proxy (127.0.0.1 in the test config): the forwarded address.
            locale: "de-AT",
            headers: vec![
                ("x-forwarded-for", "198.51.100.23"),
                ("x-user-agent", FIREFOX_WINDOWS),
            ],
            content_language: "de",
            html_root: "<html lang=\"de\" dir=\"ltr\">",
            date_format: "%d.%m.%Y, %H:%M UTC",
            lines: vec![
                "    Zeitpunkt: {when}",
                "    IP-Adresse: 198.51.100.23",
                "    Gerät: Firefox unter Windows",
            ],
        },
        Case {
            locale: "zh-Hant-TW",
            headers: vec![("x-user-agent", "curl/8.5.0")],
            content_language: "zh",
            html_root: "<html lang=\"zh\" dir=\"ltr\">",
            date_format: "%Y年%-m月%-d日 %H:%M UTC",
            lines: vec![
                "    时间：{when}",
                "    IP 地址：127.0.0.1",
                "    设备：curl",
            ],
        },
        Case {
            locale: "ar",
            headers: vec![
                ("x-forwarded-for", "2001:db8::7"),
                ("x-user-agent", CHROME_ANDROID),
            ],
            content_language: "ar",
            html_root: "<html lang=\"ar\" dir=\"rtl\">",
            date_format: "",
            lines: vec![
                "    عنوان IP: 2001:db8::7",
                "    الجهاز: Chrome على Android",
            ],
        },
        Case {
            // An unknown language falls back to English; a hostile agent names nothing.
            locale: "tlh",
            headers: vec![(
                "x-user-agent",
                "<script>alert(1)</script> Bcc: evil@example.com",
            )],
            content_language: "en",
            html_root: "<html lang=\"en\" dir=\"ltr\">",
            date_format: "%-d %B %Y, %H:%M UTC",
            lines: vec![
                "The request was made:",
                "    When: {when}",
                "    IP address: 127.0.0.1",
                "    Device: unknown client",
            ],
        },
    ];
    for case in cases {
        let login = unique_login();
        let asked_at = ask_for_a_code(&app, &login, case.locale, &case.headers).await;
        let raw = delivered_to(&sink, &login).await;
        let mail = mailparse::parse_mail(&raw).unwrap();
        assert_eq!(
            mail.headers.get_first_value("Content-Language").as_deref(),
            Some(case.content_language),
            "{}",
            case.locale
        );
        let text = part(&mail, "text/plain");
        let html = part(&mail, "text/html");
        let when = asked_at.format(case.date_format).to_string();
        for line in &case.lines {
            let line = line.replace("{when}", &when);
            assert!(
                text.lines().any(|l| l == line),
                "{}: {line:?} missing from\n{text}",
                case.locale
            );
        }
        assert!(html.contains(case.html_root), "{}: {html}", case.locale);
        // The user agent itself never reaches the mail, in any part.
        let raw_text = String::from_utf8_lossy(&raw);
        for forbidden in [
            "Gecko/20100101",
            "Mobile Safari",
            "<script>",
            "evil@example.com",
        ] {
            assert!(
                !raw_text.contains(forbidden) && !text.contains(forbidden),
                "{}: {forbidden}",
                case.locale
            );
        }
        // No link without a report code: the code mail carries no URL at all.
        assert!(
            !html.contains("href") && !text.contains("http"),
            "{}",
            case.locale
        );
    }
}

#[tokio::test]
async fn a_pt_br_flow_gets_the_portuguese_mail_and_content_language() {
    let sink = Sink::start(SinkOptions::default());
    let app = smtp_app(&sink).await;
    let login = unique_login();
    ask_for_a_code(&app, &login, "pt-BR", &[("x-user-agent", FIREFOX_WINDOWS)]).await;
    let raw = delivered_to(&sink, &login).await;
    let mail = mailparse::parse_mail(&raw).unwrap();
    assert_eq!(
        mail.headers.get_first_value("Content-Language").as_deref(),
        Some("pt")
    );
    assert_eq!(
        mail.headers.get_first_value("Subject").as_deref(),
        Some("Seu código para recuperar a senha")
    );
    let text = part(&mail, "text/plain");
    assert!(text.contains("Dispositivo: Firefox no Windows"), "{text}");
}

/// Feature 3 end to end over real SMTP: the code mail carries the report code and, with
/// `[mail] report_url`, the link built from it; the code from the mail ends the flow.
#[tokio::test]
async fn the_code_mail_carries_a_report_code_and_link_that_work() {
    let sink = Sink::start(SinkOptions::default());
    let app = smtp_app_with(&sink, |c| {
        c.mail.report_url = Some("https://id.example.com/recovery/report?code={code}".into());
    })
    .await;
    let login = unique_login();
    ask_for_a_code(&app, &login, "en", &[("x-user-agent", FIREFOX_WINDOWS)]).await;
    let raw = delivered_to(&sink, &login).await;
    let mail = mailparse::parse_mail(&raw).unwrap();
    let text = part(&mail, "text/plain");
    let html = part(&mail, "text/html");
    let prefix = "https://id.example.com/recovery/report?code=";
    let link = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no report link in {text}"));
    assert_eq!(link.len(), 32, "{link}");
    assert!(link.chars().all(|c| c.is_ascii_hexdigit()), "{link}");
    assert!(
        text.lines().any(|line| line.trim() == link),
        "the code is also shown on its own: {text}"
    );
    assert!(html.contains(link), "{html}");
    assert!(html.contains("<a href="), "{html}");

    app.recovery
        .clone()
        .report_unrequested_recovery(proto::ReportUnrequestedRecoveryRequest {
            report_code: link.to_owned(),
        })
        .await
        .expect("the code from the mail is accepted");
    let again = app
        .recovery
        .clone()
        .report_unrequested_recovery(proto::ReportUnrequestedRecoveryRequest {
            report_code: link.to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::Unauthenticated);
}
