//! The SMTP notifier against a real SMTP server: aiosmtpd, started per test by
//! `tests/support/smtp_sink.py`, which stores each message it accepts as `<n>.eml`.
//!
//! aiosmtpd is a test requirement (`pip install aiosmtpd`; `scripts/test-services.sh` installs
//! it): without it these tests fail and say so; they never skip.

use crate::common::smtp_sink::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailparse::{MailHeaderMap, ParsedMail};
use recovery_service::config::{Config, NotifierKind};
use recovery_service::notify::smtp::{SmtpNotifier, SmtpSettings};
use recovery_service::notify::{Email, MessageKind, Notifier, NotifyError};
use secrecy::SecretString;

const CODE: &str = "482913";

fn config(smtp_url: &str, smtp: SmtpSettings) -> Config {
    Config {
        notifier: NotifierKind::Smtp,
        smtp_url: Some(SecretString::from(smtp_url.to_owned())),
        mail_from: "Återställning <no-reply@recovery.example.com>".to_owned(),
        smtp: SmtpSettings {
            send_timeout_ms: 5_000,
            ..smtp
        },
        ..Config::default()
    }
}

fn notifier(smtp_url: &str) -> SmtpNotifier {
    from_config(&config(smtp_url, SmtpSettings::default())).unwrap()
}

fn email(to: &str) -> Email {
    Email {
        to: to.to_owned(),
        kind: MessageKind::VerificationCode,
        locale: "sv".to_owned(),
        subject: "Din återställningskod".to_owned(),
        text: format!("Din kod är {CODE}. Den gäller i 10 minuter."),
        html: format!("<p>Din kod är <strong>{CODE}</strong>. Den gäller i 10 minuter.</p>"),
        message_id: None,
    }
}

fn header(mail: &ParsedMail<'_>, name: &str) -> String {
    mail.headers
        .get_first_value(name)
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// Everything a recipient's mail client relies on, checked on the bytes the server stored.
fn assert_is_the_recovery_message(raw: &[u8], to: &str) {
    let mail = mailparse::parse_mail(raw).unwrap();
    assert_eq!(mail.ctype.mimetype, "multipart/alternative");
    assert_eq!(header(&mail, "Subject"), "Din återställningskod");
    assert_eq!(
        header(&mail, "From"),
        "Återställning <no-reply@recovery.example.com>"
    );
    assert_eq!(header(&mail, "To"), to);
    assert_eq!(header(&mail, "Content-Language"), "sv");
    assert!(header(&mail, "Message-ID").ends_with("@recovery.example.com>"));
    assert!(mailparse::dateparse(&header(&mail, "Date")).is_ok());

    let parts: Vec<(String, String, String)> = mail
        .subparts
        .iter()
        .map(|part| {
            (
                part.ctype.mimetype.clone(),
                part.ctype.charset.to_ascii_lowercase(),
                part.get_body().unwrap(),
            )
        })
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(
        (parts[0].0.as_str(), parts[0].1.as_str()),
        ("text/plain", "utf-8")
    );
    assert_eq!(
        (parts[1].0.as_str(), parts[1].1.as_str()),
        ("text/html", "utf-8")
    );
    assert!(
        parts[0].2.contains(&format!("Din kod är {CODE}")),
        "{}",
        parts[0].2
    );
    assert!(
        parts[1].2.contains(&format!("<strong>{CODE}</strong>")),
        "{}",
        parts[1].2
    );
}

fn expect_transient(result: Result<(), NotifyError>) -> String {
    match result {
        Err(NotifyError::Transient(reason)) => reason,
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

fn expect_permanent(result: Result<(), NotifyError>) -> String {
    match result {
        Err(NotifyError::Permanent(reason)) => reason,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

/// A private CA and a certificate for 127.0.0.1 signed by it, as PEM files.
struct TestPki {
    dir: ScratchDir,
}

impl TestPki {
    fn generate() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "recovery-service test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

        let dir = ScratchDir::new("pki");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn server_cert_and_key(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.pem"),
            self.dir.path().join("server.key"),
        )
    }
}

#[tokio::test]
async fn a_plain_relay_receives_a_multipart_message_with_the_code_in_both_parts() {
    let sink = Sink::start(SinkOptions::default());
    let notifier = notifier(&sink.url("smtp://", ""));

    notifier.send(&email("anna@example.com")).await.unwrap();
    // The second message goes over the pooled connection.
    notifier.send(&email("bertil@example.com")).await.unwrap();

    let messages = sink.messages();
    assert_eq!(messages.len(), 2);
    assert_is_the_recovery_message(&messages[0], "anna@example.com");
    assert_is_the_recovery_message(&messages[1], "bertil@example.com");
}

#[tokio::test]
async fn messages_share_a_pooled_connection_until_it_has_been_idle_too_long() {
    let sink = Sink::start(SinkOptions::default());
    let settings = SmtpSettings {
        pool_idle_timeout_secs: 1,
        ..SmtpSettings::default()
    };
    let notifier = from_config(&config(&sink.url("smtp://", ""), settings)).unwrap();

    notifier.send(&email("anna@example.com")).await.unwrap();
    notifier.send(&email("bertil@example.com")).await.unwrap();
    // Past the idle timeout (and a reaper pass): the parked connection is closed, not reused.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    notifier.send(&email("cecilia@example.com")).await.unwrap();

    let ports = sink.peer_ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        ports[0], ports[1],
        "the second message opened a connection of its own"
    );
    assert_ne!(
        ports[1], ports[2],
        "a connection idle past the timeout was reused"
    );
}

#[tokio::test]
async fn messages_sent_at_once_go_over_several_connections_and_all_arrive() {
    let sink = Sink::start(SinkOptions::default());
    let notifier = Arc::new(notifier(&sink.url("smtp://", "")));

    let sends: Vec<_> = (0..8)
        .map(|n| {
            let notifier = notifier.clone();
            tokio::spawn(async move { notifier.send(&email(&format!("p{n}@example.com"))).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }

    let mut recipients: Vec<String> = sink
        .messages()
        .iter()
        .map(|raw| header(&mailparse::parse_mail(raw).unwrap(), "To"))
        .collect();
    recipients.sort();
    let expected: Vec<String> = (0..8).map(|n| format!("p{n}@example.com")).collect();
    assert_eq!(recipients, expected);
    let mut ports = sink.peer_ports();
    ports.sort_unstable();
    ports.dedup();
    assert!(
        ports.len() > 1,
        "eight messages at once went over one connection"
    );
}

/// The queue names each message by its delivery id, so a copy sent again after a lost
/// acknowledgement is recognisable as the same message; without one, each send gets its own.
#[tokio::test]
async fn a_message_sent_twice_under_one_delivery_id_carries_one_message_id() {
    let sink = Sink::start(SinkOptions::default());
    let notifier = notifier(&sink.url("smtp://", ""));
    let queued = Email {
        message_id: Some("01a233db-d721-764f-b5e0-53b6ed39948c".to_owned()),
        ..email("anna@example.com")
    };

    notifier.send(&queued).await.unwrap();
    notifier.send(&queued).await.unwrap();
    notifier.send(&email("anna@example.com")).await.unwrap();
    notifier.send(&email("anna@example.com")).await.unwrap();

    let ids: Vec<String> = sink
        .messages()
        .iter()
        .map(|raw| header(&mailparse::parse_mail(raw).unwrap(), "Message-ID"))
        .collect();
    assert_eq!(
        ids[0],
        "<01a233db-d721-764f-b5e0-53b6ed39948c@recovery.example.com>"
    );
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[2], ids[3]);
}

#[tokio::test]
async fn an_authenticating_relay_accepts_the_credentials_from_the_url() {
    let sink = Sink::start(SinkOptions {
        auth: true,
        ..SinkOptions::default()
    });
    // The password has `@` and `:`, so it only works if the URL is percent-decoded.
    let notifier = notifier(&sink.url("smtp://mailer:s3cret-p%40ss%3Aword@", ""));

    notifier.send(&email("anna@example.com")).await.unwrap();

    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_is_the_recovery_message(&messages[0], "anna@example.com");
}

#[tokio::test]
async fn a_wrong_smtp_password_is_a_permanent_failure_that_does_not_show_the_password() {
    let sink = Sink::start(SinkOptions {
        auth: true,
        ..SinkOptions::default()
    });
    let notifier = notifier(&sink.url("smtp://mailer:wrong-hunter2@", ""));

    let reason = expect_permanent(notifier.send(&email("anna@example.com")).await);

    assert!(reason.contains("535"), "{reason}");
    assert!(!reason.contains("wrong-hunter2"), "{reason}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_relay_without_auth_configured_refuses_the_message_when_auth_is_required() {
    let sink = Sink::start(SinkOptions {
        auth: true,
        ..SinkOptions::default()
    });
    let notifier = notifier(&sink.url("smtp://", ""));

    let reason = expect_permanent(notifier.send(&email("anna@example.com")).await);

    assert!(reason.contains("530"), "{reason}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn starttls_required_delivers_to_a_relay_whose_certificate_comes_from_the_configured_ca() {
    let pki = TestPki::generate();
    let sink = Sink::start(SinkOptions {
        starttls: Some(pki.server_cert_and_key()),
        ..SinkOptions::default()
    });
    let settings = SmtpSettings {
        ca_file: Some(pki.ca_file()),
        ..SmtpSettings::default()
    };
    let notifier = from_config(&config(&sink.url("smtp://", "?tls=required"), settings)).unwrap();

    notifier.send(&email("anna@example.com")).await.unwrap();

    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_is_the_recovery_message(&messages[0], "anna@example.com");
}

/// A relay whose certificate the test CA signed, reached with only the Mozilla roots (no
/// `ca_file`): the handshake fails and nothing is sent.
fn assert_an_unknown_ca_is_refused(
    tls: impl FnOnce((PathBuf, PathBuf)) -> SinkOptions,
    scheme: &str,
    query: &str,
) -> impl std::future::Future<Output = ()> {
    let pki = TestPki::generate();
    let sink = Sink::start(tls(pki.server_cert_and_key()));
    let notifier = notifier(&sink.url(scheme, query));
    async move {
        let reason = expect_transient(notifier.send(&email("anna@example.com")).await);
        assert!(reason.contains("UnknownIssuer"), "{reason}");
        assert!(sink.messages().is_empty());
        drop(pki);
    }
}

#[tokio::test]
async fn starttls_required_does_not_trust_a_certificate_from_an_unknown_ca() {
    let tls = |pair| SinkOptions {
        starttls: Some(pair),
        ..SinkOptions::default()
    };
    assert_an_unknown_ca_is_refused(tls, "smtp://", "?tls=required").await;
}

#[tokio::test]
async fn smtps_delivers_over_implicit_tls() {
    let pki = TestPki::generate();
    let sink = Sink::start(SinkOptions {
        implicit_tls: Some(pki.server_cert_and_key()),
        ..SinkOptions::default()
    });
    let settings = SmtpSettings {
        ca_file: Some(pki.ca_file()),
        ..SmtpSettings::default()
    };
    let notifier = from_config(&config(&sink.url("smtps://", ""), settings)).unwrap();

    notifier.send(&email("anna@example.com")).await.unwrap();

    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_is_the_recovery_message(&messages[0], "anna@example.com");
}

#[tokio::test]
async fn smtps_does_not_trust_a_certificate_from_an_unknown_ca() {
    let tls = |pair| SinkOptions {
        implicit_tls: Some(pair),
        ..SinkOptions::default()
    };
    assert_an_unknown_ca_is_refused(tls, "smtps://", "").await;
}

#[tokio::test]
async fn starttls_required_never_falls_back_to_clear_text() {
    let sink = Sink::start(SinkOptions::default());
    let notifier = notifier(&sink.url("smtp://", "?tls=required"));

    expect_transient(notifier.send(&email("anna@example.com")).await);

    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn starttls_opportunistic_delivers_in_clear_text_when_the_relay_offers_no_tls() {
    let sink = Sink::start(SinkOptions::default());
    let notifier = notifier(&sink.url("smtp://", "?tls=opportunistic"));

    notifier.send(&email("anna@example.com")).await.unwrap();

    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn a_relay_that_is_not_listening_is_a_transient_failure() {
    let port = free_port();
    let notifier = notifier(&format!("smtp://{USER}:{PASSWORD}@127.0.0.1:{port}"));

    let reason = expect_transient(notifier.send(&email("anna@example.com")).await);

    assert!(!reason.contains(PASSWORD), "{reason}");
}

#[tokio::test]
async fn a_relay_that_never_answers_is_a_transient_failure_after_the_timeout() {
    // The kernel completes the handshake for a listener nobody accepts on: a relay that hangs.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut config = config(&format!("smtp://127.0.0.1:{port}"), SmtpSettings::default());
    config.smtp.send_timeout_ms = 300;
    let notifier = from_config(&config).unwrap();

    let started = Instant::now();
    let reason = expect_transient(notifier.send(&email("anna@example.com")).await);

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(reason.contains("timed out"), "{reason}");
    drop(silent);
}

#[tokio::test]
async fn after_a_send_is_cut_off_the_next_message_goes_over_a_fresh_connection() {
    // The relay sits on the first DATA past the deadline. Reusing that connection would read
    // its late "250" as the answer to the next message's commands.
    let sink = Sink::start(SinkOptions {
        stall_first_data: Some(Duration::from_secs(3)),
        ..SinkOptions::default()
    });
    let mut config = config(&sink.url("smtp://", ""), SmtpSettings::default());
    config.smtp.send_timeout_ms = 500;
    let notifier = from_config(&config).unwrap();

    expect_transient(notifier.send(&email("anna@example.com")).await);
    // Time for a cut connection to come back to the pool, were it put back (it must not be).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    notifier.send(&email("bertil@example.com")).await.unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the second send waited for the stalled connection"
    );
    let recipients: Vec<String> = sink
        .messages()
        .iter()
        .map(|raw| header(&mailparse::parse_mail(raw).unwrap(), "To"))
        .collect();
    assert!(
        recipients.contains(&"bertil@example.com".to_owned()),
        "{recipients:?}"
    );
}

#[tokio::test]
async fn an_invalid_recipient_address_is_a_permanent_failure() {
    let sink = Sink::start(SinkOptions::default());
    let notifier = notifier(&sink.url("smtp://", ""));

    expect_permanent(notifier.send(&email("not an address")).await);

    assert!(sink.messages().is_empty());
}

/// A relay refusing the recipient echoes it in upper case, lower case, percent-encoded, quoted
/// and as its local part alone: the error the queue keeps and logs masks every spelling.
#[tokio::test]
async fn a_relays_reply_shows_no_spelling_of_the_recipient() {
    let sink = Sink::start(SinkOptions {
        reject_recipients: true,
        ..SinkOptions::default()
    });
    let notifier = notifier(&sink.url("smtp://", ""));
    let reason = expect_permanent(notifier.send(&email("John.Smith@Example.com")).await);
    assert!(reason.contains("550"), "{reason}");
    assert!(!reason.to_lowercase().contains("john.smith"), "{reason}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn the_smtp_password_never_shows_in_debug_or_in_errors() {
    let url = format!("smtps://{USER}:{PASSWORD}@127.0.0.1:{}", free_port());
    let notifier = notifier(&url);
    let config = config(&url, SmtpSettings::default());

    let shown = format!(
        "{notifier:?} {} {:?} {config:?} {}",
        notifier.endpoint(),
        notifier.endpoint(),
        config.redacted_toml()
    );
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(
        shown.contains(USER),
        "the user name helps operators and is not secret: {shown}"
    );

    let error = notifier.send(&email("anna@example.com")).await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");

    for bad in [
        format!("smtp://{USER}:{PASSWORD}@127.0.0.1:25?tls=sometimes"),
        format!("imap://{USER}:{PASSWORD}@host"),
    ] {
        let error = from_config(&config_with(&bad)).unwrap_err();
        let shown = format!("{error} {error:?} {error:#}");
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

fn config_with(smtp_url: &str) -> Config {
    config(smtp_url, SmtpSettings::default())
}

#[tokio::test]
async fn the_smtp_notifier_needs_a_url() {
    let config = Config {
        notifier: NotifierKind::Smtp,
        ..Config::default()
    };

    let error = from_config(&config).unwrap_err();

    assert!(error.to_string().contains("RECOVERY_SMTP_URL"), "{error}");
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type.
fn smtp_settings_are_read_from_the_smtp_section_and_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "recovery.toml",
            "[smtp]\nsend_timeout_ms = 2500\nca_file = \"/etc/recovery/smtp-ca.pem\"\n",
        )?;
        jail.set_env("RECOVERY_SMTP__POOL_MAX_SIZE", "7");
        jail.set_env("RECOVERY_SMTP_URL", "smtp://relay.example.com?tls=required");
        let config = Config::load(Some(Path::new("recovery.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(config.smtp.send_timeout_ms, 2500);
        assert_eq!(config.smtp.pool_max_size, 7);
        assert_eq!(
            config.smtp.ca_file.as_deref(),
            Some(Path::new("/etc/recovery/smtp-ca.pem"))
        );
        assert_eq!(
            config.smtp.pool_idle_timeout_secs,
            SmtpSettings::default().pool_idle_timeout_secs
        );
        assert!(config.smtp_url.is_some());
        Ok(())
    });
}

/// The notifier as the server builds it from a whole configuration.
fn from_config(config: &Config) -> anyhow::Result<SmtpNotifier> {
    SmtpNotifier::from_settings(config.smtp_url.as_ref(), &config.mail_from, &config.smtp)
}
