//! The SMTP notifier (lettre, rustls with ring).
//!
//! `RECOVERY_SMTP_URL` picks the relay and how to protect the connection:
//!
//! | URL | connection | default port |
//! |---|---|---|
//! | `smtp://host[:port]` | plain, no TLS at all (a local sink or a relay on loopback) | 25 |
//! | `smtp://host[:port]?tls=required` | STARTTLS, refuse to go on without it | 587 |
//! | `smtp://host[:port]?tls=opportunistic` | STARTTLS if the relay offers it | 587 |
//! | `smtps://host[:port]` | implicit TLS from the first byte | 465 |
//!
//! `user:password@` before the host turns on AUTH (PLAIN, then LOGIN); both are percent-decoded.
//! Certificates are checked against the Mozilla roots plus the PEM bundle in `smtp.ca_file`.
//!
//! Messages carry one-time codes: this module never logs a body, and names the recipient only
//! masked. The password never leaves [`SmtpEndpoint`] except into lettre's `Credentials`, whose
//! `Debug` is opaque as well.
//!
//! Long because of its tests against a real SMTP peer and the URL table above; the code is one
//! transport and its settings.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, Message};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Email, Notifier, NotifyError};
use crate::clock::MAX_WAIT_MS;
use crate::secrets::masking::mask_email;

mod check;
mod pool;

use pool::{Pool, Protection, Relay, SendError};

const CONTENT_LANGUAGE: HeaderName = HeaderName::new_from_ascii_str("Content-Language");

/// The `[smtp]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SmtpSettings {
    /// Milliseconds to open the TCP connection to the relay.
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    pub connect_timeout_ms: u64,
    /// Limit on handing over one message: connection, TLS, AUTH, every command and reply. lettre
    /// bounds only the TCP connect, and a relay that accepts and then says nothing would hold a
    /// lane of the delivery worker (`delivery.concurrency`) for good. In milliseconds.
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    pub send_timeout_ms: u64,
    /// Idle connections kept open for reuse; more are opened when needed and closed after use.
    #[schemars(range(min = 1, max = 100))]
    pub pool_max_size: u32,
    /// Seconds after which an idle pooled connection is closed (relays drop them after a few
    /// minutes).
    #[schemars(range(min = 1, max = 3600))]
    pub pool_idle_timeout_secs: u64,
    /// Name announced in EHLO. Unset: this machine's host name.
    pub hello_name: Option<String>,
    /// PEM file with extra CA certificates to trust besides the Mozilla roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            send_timeout_ms: 30_000,
            pool_max_size: 4,
            pool_idle_timeout_secs: 60,
            hello_name: None,
            ca_file: None,
        }
    }
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No TLS at all: for a sink or relay on the same host or network namespace.
    Plain,
    /// STARTTLS, and fail rather than send in clear text if the relay does not offer it.
    StartTlsRequired,
    /// STARTTLS when offered, clear text otherwise (an active attacker can strip it).
    StartTlsOpportunistic,
    /// TLS from the first byte (`smtps`, usually port 465).
    ImplicitTls,
}

impl SmtpSecurity {
    fn describe(self) -> &'static str {
        match self {
            SmtpSecurity::Plain => "plain",
            SmtpSecurity::StartTlsRequired => "starttls-required",
            SmtpSecurity::StartTlsOpportunistic => "starttls-opportunistic",
            SmtpSecurity::ImplicitTls => "implicit-tls",
        }
    }
}

/// A parsed `RECOVERY_SMTP_URL`. Its `Debug` shows the user but never the password.
#[derive(Clone)]
pub struct SmtpEndpoint {
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<(String, SecretString)>,
}

/// Why an SMTP URL was refused. The message names the part at fault, never the URL itself,
/// which may hold the password.
#[derive(Debug, thiserror::Error)]
#[error("invalid SMTP URL: {0}")]
pub struct InvalidSmtpUrl(String);

fn invalid(reason: impl Into<String>) -> InvalidSmtpUrl {
    InvalidSmtpUrl(reason.into())
}

const SMTP_PORT: u16 = 25;
const SUBMISSION_PORT: u16 = 587;
const SUBMISSIONS_PORT: u16 = 465;

fn percent_decoded(part: &str, what: &str) -> Result<String, InvalidSmtpUrl> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| invalid(format!("the {what} is not UTF-8 once percent-decoded")))
}

impl SmtpEndpoint {
    /// Parses the URL forms in the module documentation; anything else is an error.
    pub fn parse(url: &str) -> Result<Self, InvalidSmtpUrl> {
        // url's own error kinds never quote the input, so they are safe to pass on.
        let parsed = url::Url::parse(url.trim()).map_err(|error| invalid(error.to_string()))?;

        let mut tls = None;
        for (key, value) in parsed.query_pairs() {
            match (key.as_ref(), tls.is_none()) {
                ("tls", true) => tls = Some(value.into_owned()),
                ("tls", false) => return Err(invalid("`tls` is given twice")),
                (other, _) => {
                    return Err(invalid(format!(
                        "unknown parameter `{other}` (only `tls` is understood)"
                    )));
                }
            }
        }
        let security = match (parsed.scheme(), tls.as_deref()) {
            ("smtp", None) => SmtpSecurity::Plain,
            ("smtp", Some("required")) => SmtpSecurity::StartTlsRequired,
            ("smtp", Some("opportunistic")) => SmtpSecurity::StartTlsOpportunistic,
            ("smtp", Some(_)) => {
                return Err(invalid(
                    "the `tls` parameter: expected `tls=required` or `tls=opportunistic`",
                ));
            }
            ("smtps", None) => SmtpSecurity::ImplicitTls,
            ("smtps", Some(_)) => {
                return Err(invalid("`smtps` is always TLS; drop the `tls` parameter"));
            }
            _ => {
                return Err(invalid("the scheme: expected `smtp` or `smtps`"));
            }
        };

        let host = match parsed.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            // Unbracketed, as lettre resolves it and rustls checks it against the certificate.
            Some(url::Host::Ipv6(address)) => address.to_string(),
            _ => return Err(invalid("no host")),
        };
        let port = match parsed.port() {
            Some(0) => return Err(invalid("port 0")),
            Some(port) => port,
            None => match security {
                SmtpSecurity::Plain => SMTP_PORT,
                SmtpSecurity::StartTlsRequired | SmtpSecurity::StartTlsOpportunistic => {
                    SUBMISSION_PORT
                }
                SmtpSecurity::ImplicitTls => SUBMISSIONS_PORT,
            },
        };
        if !matches!(parsed.path(), "" | "/") {
            return Err(invalid(
                "a path is not allowed (set `smtp.hello_name` for the EHLO name)",
            ));
        }
        if parsed.fragment().is_some() {
            return Err(invalid("a fragment is not allowed"));
        }

        let credentials = match (parsed.username(), parsed.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(invalid("a password without a user name")),
            (_, None) => {
                return Err(invalid(
                    "a user name without a password (write `user:password@host`)",
                ));
            }
            (user, Some(password)) => Some((
                percent_decoded(user, "user name")?,
                SecretString::from(percent_decoded(password, "password")?),
            )),
        };

        Ok(Self {
            host,
            port,
            security,
            credentials,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn security(&self) -> SmtpSecurity {
        self.security
    }

    pub fn user(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(user, _)| user.as_str())
    }

    fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for SmtpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.security == SmtpSecurity::ImplicitTls {
            "smtps"
        } else {
            "smtp"
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://")?;
        if let Some(user) = self.user() {
            write!(f, "{user}:***@")?;
        }
        write!(f, "{host}:{} ({})", self.port, self.security.describe())
    }
}

impl fmt::Debug for SmtpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

/// Sends e-mail through an SMTP relay, keeping a small pool of connections (`pool.rs`: why not
/// lettre's own).
pub struct SmtpNotifier {
    pool: Arc<Pool>,
    send_timeout: Duration,
    from: Mailbox,
    /// Domain of the Message-ID: the sender's, not this host's name, which would leak the
    /// internal name of a pod into every message.
    message_id_domain: String,
    endpoint: SmtpEndpoint,
}

impl fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("relay", &self.endpoint.to_string())
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpNotifier {
    /// Builds the notifier from `RECOVERY_SMTP_URL`, `RECOVERY_MAIL_FROM` and `[smtp]`. Nothing
    /// is contacted yet: the first message opens the first connection, so a relay that is down at
    /// start delays mail (the queue retries) instead of keeping the service from starting.
    pub fn from_settings(
        smtp_url: Option<&SecretString>,
        mail_from: &str,
        settings: &SmtpSettings,
    ) -> anyhow::Result<Self> {
        let url = smtp_url.context("RECOVERY_SMTP_URL is required with RECOVERY_NOTIFIER=smtp")?;
        let endpoint = SmtpEndpoint::parse(url.expose_secret())?;
        Self::new(endpoint, mail_from, settings)
    }

    pub fn new(
        endpoint: SmtpEndpoint,
        mail_from: &str,
        settings: &SmtpSettings,
    ) -> anyhow::Result<Self> {
        // The pool starts its idle-connection reaper with `tokio::spawn`, which panics outside
        // a runtime; say so instead.
        tokio::runtime::Handle::try_current()
            .context("the SMTP notifier must be built inside the tokio runtime")?;

        let from: Mailbox = mail_from
            .parse()
            .context("`mail_from` (RECOVERY_MAIL_FROM) is not a valid address")?;
        let message_id_domain = from.email.domain().to_owned();

        let protection = match endpoint.security {
            SmtpSecurity::Plain => Protection::Plain,
            SmtpSecurity::StartTlsRequired | SmtpSecurity::StartTlsOpportunistic => {
                Protection::StartTls {
                    parameters: tls_parameters(&endpoint.host, settings.ca_file.as_ref())?,
                    required: endpoint.security == SmtpSecurity::StartTlsRequired,
                }
            }
            SmtpSecurity::ImplicitTls => implicit_tls(&endpoint.host, settings.ca_file.as_ref())?,
        };
        if endpoint.security == SmtpSecurity::Plain {
            if settings.ca_file.is_some() {
                tracing::warn!(
                    "smtp.ca_file is set but RECOVERY_SMTP_URL asks for no TLS; the file is not used"
                );
            }
            if !endpoint.is_loopback() {
                tracing::warn!(
                    relay = %endpoint,
                    "SMTP without TLS to a host that is not loopback: one-time codes{} cross the network in clear text. \
                     Use `?tls=required` or `smtps://`.",
                    if endpoint.credentials.is_some() { " and the SMTP password" } else { "" }
                );
            }
        }

        let relay = Relay {
            host: endpoint.host.clone(),
            port: endpoint.port,
            protection,
            hello: match &settings.hello_name {
                Some(name) => client_id(name)?,
                None => ClientId::default(),
            },
            credentials: endpoint.credentials.as_ref().map(|(user, password)| {
                Credentials::new(user.clone(), password.expose_secret().to_owned())
            }),
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms.max(1)),
        };
        let pool = Pool::start(
            relay,
            usize::try_from(settings.pool_max_size.max(1)).unwrap_or(1),
            Duration::from_secs(settings.pool_idle_timeout_secs.max(1)),
        );

        tracing::info!(relay = %endpoint, from = %from, "SMTP notifier configured");
        Ok(Self {
            pool,
            send_timeout: Duration::from_millis(settings.send_timeout_ms.max(1)),
            from,
            message_id_domain,
            endpoint,
        })
    }

    /// Where messages go, without the password.
    pub fn endpoint(&self) -> &SmtpEndpoint {
        &self.endpoint
    }

    fn message(&self, email: &Email) -> Result<Message, NotifyError> {
        // An address that does not parse will not parse on the next try either.
        let to: Address = email.to.parse().map_err(|_| {
            NotifyError::Permanent(format!(
                "invalid recipient address {}",
                mask_email(&email.to)
            ))
        })?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.subject.clone())
            .message_id(Some(format!(
                "<{}@{}>",
                email
                    .message_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                self.message_id_domain
            )))
            .date_now();
        if is_language_tag(&email.locale) {
            builder = builder.raw_header(HeaderValue::new(CONTENT_LANGUAGE, email.locale.clone()));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|error| NotifyError::Permanent(format!("message cannot be built: {error}")))
    }
}

fn read_ca_file(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading smtp.ca_file {}", path.display()))
}

fn tls_parameters(host: &str, ca_file: Option<&PathBuf>) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = ca_file {
        let pem = read_ca_file(path)?;
        let certificates = Certificate::from_pem(&pem).with_context(|| {
            format!(
                "smtp.ca_file {} is not a PEM certificate bundle",
                path.display()
            )
        })?;
        builder = builder.add_root_certificate(certificates);
    }
    builder.build_rustls().context("setting up TLS for SMTP")
}

/// TLS from the first byte (`smtps`), trusting what STARTTLS trusts: the Mozilla roots plus
/// `smtp.ca_file`, with ring as the one crypto provider.
fn implicit_tls(host: &str, ca_file: Option<&PathBuf>) -> anyhow::Result<Protection> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = read_ca_file(path)?;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let certificate = certificate.with_context(|| {
                format!(
                    "smtp.ca_file {} is not a PEM certificate bundle",
                    path.display()
                )
            })?;
            roots
                .add(certificate)
                .with_context(|| format!("a certificate in smtp.ca_file {}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("setting up TLS for SMTP")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a name TLS can check a certificate against"))?;
    Ok(Protection::Implicit {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// The EHLO argument goes on the wire as is: allow only a host name or an address, so a
/// configuration value cannot smuggle a second command in.
fn client_id(name: &str) -> anyhow::Result<ClientId> {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) => Ok(ClientId::Ipv4(address)),
        Ok(IpAddr::V6(address)) => Ok(ClientId::Ipv6(address)),
        Err(_) => {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
            anyhow::ensure!(valid, "smtp.hello_name {name:?} is not a host name");
            Ok(ClientId::Domain(name.to_owned()))
        }
    }
}

/// BCP 47 in shape (`en`, `sv-FI`, `zh-Hant-TW`); anything else is left out rather than sent.
fn is_language_tag(locale: &str) -> bool {
    !locale.is_empty()
        && locale.len() <= 35
        && locale.split('-').all(|part| {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// Characters that may continue an address or its local part: a match must not be followed or
/// preceded by one (so `jo` is not masked inside `john`).
fn address_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-'=!#$&*/?^`{|}~\"".contains(c)
}

/// Replaces every case-insensitive, whole-token occurrence of `needle` in `text`.
fn replace_token(text: &str, needle: &str, with: &str) -> String {
    if needle.is_empty() {
        return text.to_owned();
    }
    // Lower-casing may change lengths (e.g. `İ`); then match on the text as it is.
    let lower = text.to_lowercase();
    let (haystack, needle) = if lower.len() == text.len() {
        (lower, needle.to_lowercase())
    } else {
        (text.to_owned(), needle.to_owned())
    };
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = haystack[at..].find(&needle) {
        let start = at + found;
        let end = start + needle.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        // A quote or `%` that is part of the needle itself is fine at its edge.
        let bounded = before.is_none_or(|c| !address_char(c) || c == '"' || c == '\'')
            && after.is_none_or(|c| !address_char(c) || c == '"' || c == '\'' || c == '.');
        out.push_str(&text[at..start]);
        if bounded {
            out.push_str(with);
        } else {
            out.push_str(&text[start..end]);
        }
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// A relay's reply with the recipient masked in every spelling a relay uses: the address in any
/// case, percent-encoded (`john%40example.com`), with a quoted local part
/// (`"john"@example.com`), and the local part alone (`<john>: unknown user`).
fn mask_recipient(reply: &str, to: &str) -> String {
    let masked = mask_email(to);
    let mut text = reply.to_owned();
    let Some((local, domain)) = to.rsplit_once('@') else {
        return replace_token(&text, to, &masked);
    };
    let bare_local = local.trim_matches('"');
    let masked_local = masked.split('@').next().unwrap_or("***").to_owned();
    for spelling in [
        to.to_owned(),
        format!("\"{bare_local}\"@{domain}"),
        format!("{local}%40{domain}"),
        format!("{bare_local}%40{domain}"),
    ] {
        text = replace_token(&text, &spelling, &masked);
    }
    for spelling in [local, bare_local] {
        text = replace_token(&text, spelling, &masked_local);
    }
    text
}

/// Maps lettre's error onto the queue's two outcomes. Only what the relay itself called
/// permanent (5xx) is dropped; everything else (4xx, refused connections, timeouts, TLS, an odd
/// reply) is retried, because the queue gives up by itself when the message expires, so a wrong
/// "transient" costs a few retries while a wrong "permanent" loses a code or a notice.
fn classify(error: &lettre::transport::smtp::Error, to: &str) -> NotifyError {
    let kind = if error.is_permanent() {
        "rejected"
    } else if error.is_transient() {
        "deferred"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_tls() {
        "TLS failed"
    } else {
        "failed"
    };
    // Relays echo the recipient in their replies ("550 <john@example.com>: unknown user"); the
    // text ends up in logs and in the queue's last error, so mask it there too.
    let detail = mask_recipient(&error.to_string(), to);
    let message = format!("SMTP {kind}: {detail}");
    if error.is_permanent() {
        NotifyError::Permanent(message)
    } else {
        NotifyError::Transient(message)
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, email: &Email) -> Result<(), NotifyError> {
        let message = self.message(email)?;
        let raw = message.formatted();
        let sent =
            tokio::time::timeout(self.send_timeout, self.pool.send(message.envelope(), &raw)).await;
        match sent {
            Ok(Ok(())) => {
                tracing::debug!(to = %mask_email(&email.to), kind = ?email.kind, "message handed to the SMTP relay");
                Ok(())
            }
            Ok(Err(SendError::Smtp(error))) => Err(classify(&error, &email.to)),
            Ok(Err(SendError::Connect(reason))) => Err(NotifyError::Transient(format!(
                "SMTP failed: {} unreachable: {reason}",
                self.endpoint
            ))),
            // The cut exchange's connection went with the dropped future, never back to the
            // pool: the relay's late reply cannot be read as the next message's answer.
            Err(_elapsed) => Err(NotifyError::Transient(format!(
                "SMTP timed out: no answer from {} within {} ms",
                self.endpoint,
                self.send_timeout.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_the_recipient_is_masked_in_a_relay_reply() {
        let to = "John.Smith@Example.com";
        for reply in [
            "550 5.1.1 <John.Smith@Example.com>: Recipient address rejected",
            "550 5.1.1 <john.smith@example.com>: unknown user",
            "550 5.1.1 <JOHN.SMITH@EXAMPLE.COM>: unknown user",
            "550 5.1.1 <john.smith>: unknown user",
            "550 user John.Smith unknown",
            "550 5.1.1 \"john.smith\"@example.com: no mailbox",
            "550 5.1.1 john.smith%40example.com: no mailbox",
        ] {
            let masked = mask_recipient(reply, to);
            assert!(
                !masked.to_lowercase().contains("john.smith"),
                "{reply:?} -> {masked:?}"
            );
            assert!(masked.starts_with("550"), "{masked}");
        }
        // A word that merely contains the local part stays.
        assert_eq!(
            mask_recipient("550 joh is not jo", "jo@example.com"),
            "550 joh is not j***"
        );
    }

    fn parse(url: &str) -> SmtpEndpoint {
        match SmtpEndpoint::parse(url) {
            Ok(endpoint) => endpoint,
            Err(error) => panic!("{url}: {error}"),
        }
    }

    fn refusal(url: &str) -> String {
        match SmtpEndpoint::parse(url) {
            Ok(endpoint) => panic!("{url} was accepted as {endpoint:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_bare_smtp_url_is_plain_on_port_25() {
        let endpoint = parse("smtp://mail.example.com");
        assert_eq!(
            (endpoint.host(), endpoint.port(), endpoint.security()),
            ("mail.example.com", 25, SmtpSecurity::Plain)
        );
        assert_eq!(endpoint.user(), None);
    }

    #[test]
    fn an_explicit_port_is_kept() {
        let endpoint = parse("smtp://127.0.0.1:2525");
        assert_eq!(
            (endpoint.host(), endpoint.port(), endpoint.security()),
            ("127.0.0.1", 2525, SmtpSecurity::Plain)
        );
    }

    #[test]
    fn tls_required_means_starttls_on_the_submission_port() {
        let endpoint = parse("smtp://mail.example.com?tls=required");
        assert_eq!(
            (endpoint.port(), endpoint.security()),
            (587, SmtpSecurity::StartTlsRequired)
        );
    }

    #[test]
    fn tls_opportunistic_means_starttls_if_offered() {
        let endpoint = parse("smtp://mail.example.com:2587/?tls=opportunistic");
        assert_eq!(
            (endpoint.port(), endpoint.security()),
            (2587, SmtpSecurity::StartTlsOpportunistic)
        );
    }

    #[test]
    fn smtps_is_implicit_tls_on_port_465() {
        let endpoint = parse("smtps://mail.example.com");
        assert_eq!(
            (endpoint.port(), endpoint.security()),
            (465, SmtpSecurity::ImplicitTls)
        );
    }

    #[test]
    fn an_ipv6_host_loses_its_brackets() {
        assert_eq!(parse("smtp://[::1]:2525").host(), "::1");
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let endpoint =
            parse("smtp://mailer%40example.com:p%40ss%3Aw%2Frd@mail.example.com:587?tls=required");
        assert_eq!(endpoint.user(), Some("mailer@example.com"));
        let password = endpoint
            .credentials
            .as_ref()
            .map(|(_, password)| password.expose_secret().to_owned());
        assert_eq!(password.as_deref(), Some("p@ss:w/rd"));
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let endpoint = parse("smtps://mailer:hunter2@mail.example.com");
        let shown = format!("{endpoint} {endpoint:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("smtps://mailer:***@mail.example.com:465"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_schemes_and_tls_modes_are_refused_without_echoing_the_password() {
        for url in [
            "http://user:hunter2@mail.example.com",
            "smtp://user:hunter2@mail.example.com?tls=maybe",
            "smtps://user:hunter2@mail.example.com?tls=required",
            "smtp://user:hunter2@mail.example.com?starttls=yes",
            "smtp://user:hunter2@mail.example.com?tls=required&tls=opportunistic",
            "smtp://user:hunter2@mail.example.com/ehlo.example.com",
            "smtp://user:hunter2@mail.example.com:0",
            "smtp://:hunter2@mail.example.com",
            "not a url hunter2",
        ] {
            let error = refusal(url);
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
    }

    #[test]
    fn a_user_without_a_password_is_refused() {
        assert!(refusal("smtp://mailer@mail.example.com").contains("without a password"));
    }

    #[test]
    fn a_hello_name_cannot_carry_a_second_command() {
        assert!(client_id("relay.example.com\r\nRCPT TO:<x@y>").is_err());
        assert!(client_id("relay.example.com").is_ok());
        assert!(client_id("192.0.2.1").is_ok());
    }

    #[test]
    fn only_language_tags_become_content_language() {
        assert!(is_language_tag("en"));
        assert!(is_language_tag("sv-FI"));
        assert!(!is_language_tag(""));
        assert!(!is_language_tag("en\r\nBcc: x@y"));
        assert!(!is_language_tag("en--US"));
    }
}
