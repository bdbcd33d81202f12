//! Configuration: embedded defaults, then a TOML file (`--config` / `RECOVERY_CONFIG`), then
//! `RECOVERY_*` environment variables (env over file over defaults). Nested keys in the
//! environment use a double underscore: `RECOVERY_FLOW__CODE_TTL_SECS=300`.
//!
//! Strict: an unknown key or `RECOVERY_*` variable ([`strict`]) and a value out of range
//! ([`validate`]) fail the load, every problem listed at once.

mod boundary;
mod errors;
pub mod schema;
mod strict;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use crate::clock::{DAY_SECS, MAX_WAIT_MS};
use crate::db::{DatabaseSettings, RetentionSettings};
use crate::net::IpRange;
use crate::notify::events::EventSettings;
use crate::notify::queue::DeliverySettings;
use crate::notify::report_link::MailSettings;
use crate::notify::smtp::SmtpSettings;
use crate::notify::webhooks::WebhookSettings;
use crate::recovery::breach::BreachSettings;
use crate::recovery::flow::FlowSettings;
use crate::recovery::handle::{
    CaptchaAlternative, CaptchaCheck, CaptchaMode, DEFAULT_POW_ALTERNATIVE_MAX_NUMBER,
    DEFAULT_POW_MAX_NUMBER,
};
use crate::recovery::input::VerificationCode;
use crate::recovery::limits::RateLimits;
use crate::recovery::policy::PolicySettings;
use crate::recovery::service::RecoverySettings;
use crate::secrets::HashSettings;
pub use crate::store::redis::RedisConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// Print every message, codes included, on the console: development only (refused in
    /// production mode).
    #[default]
    Log,
    /// Send through the relay of `smtp_url`, from the durable delivery queue.
    Smtp,
}

/// `RECOVERY_CAPTCHA`: `on` (= `image`) | `pow` | `both` | `off`, and what people type in
/// environment variables for on/off (`true`, `1`, `yes`; on means the picture, as before proof
/// of work existed).
fn captcha_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CaptchaMode, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Int(i64),
        Text(String),
    }
    let on = |on: bool| {
        if on {
            CaptchaMode::Image
        } else {
            CaptchaMode::Off
        }
    };
    match Raw::deserialize(deserializer)? {
        Raw::Bool(value) => Ok(on(value)),
        Raw::Int(value) => Ok(on(value != 0)),
        Raw::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
            "on" | "image" | "true" | "yes" | "1" => Ok(CaptchaMode::Image),
            "off" | "false" | "no" | "0" => Ok(CaptchaMode::Off),
            "pow" => Ok(CaptchaMode::Pow),
            "both" => Ok(CaptchaMode::Both),
            _ => Err(serde::de::Error::custom(
                "expected on, image, pow, both or off",
            )),
        },
    }
}

/// `[captcha]`: which proof `StartRecovery` needs (`mode`, also `RECOVERY_CAPTCHA`) and the way
/// round the picture for a person who cannot read it (`alternative`). The one-value form of
/// older files, `captcha = "off"`, sets the mode alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CaptchaConfig {
    pub mode: CaptchaMode,
    pub alternative: CaptchaAlternative,
}

impl CaptchaConfig {
    pub fn check(&self) -> CaptchaCheck {
        CaptchaCheck::new(self.mode, self.alternative)
    }
}

/// The table form of `[captcha]`, as read and as the schema describes it.
#[derive(Deserialize, JsonSchema)]
#[serde(default)]
pub(crate) struct CaptchaTable {
    /// What `StartRecovery` asks for (`RECOVERY_CAPTCHA`): `on` (= `image`, the picture of
    /// digits), `pow` (proof of work), `both`, or `off`; `true`/`false` mean `on`/`off`.
    #[serde(deserialize_with = "captcha_mode")]
    #[schemars(schema_with = "schema::captcha_mode")]
    mode: CaptchaMode,
    /// In image mode, what a person who cannot read the picture may do instead: `pow`, a proof
    /// of work at `flow.pow_alternative_max_number` that the page solves (WCAG 2.2 SC 1.1.1,
    /// 3.3.8); `none`, nothing (warned about). No effect in the other modes; `both` never takes
    /// it.
    alternative: CaptchaAlternative,
}

impl Default for CaptchaTable {
    fn default() -> Self {
        let CaptchaConfig { mode, alternative } = CaptchaConfig::default();
        Self { mode, alternative }
    }
}

impl<'de> Deserialize<'de> for CaptchaConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CaptchaConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a captcha mode (on, image, pow, both, off) or a [captcha] table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                // Through the derived struct, so an unknown key in the table is reported as
                // unknown (strict) like anywhere else.
                let CaptchaTable { mode, alternative } =
                    CaptchaTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(CaptchaConfig { mode, alternative })
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                self.scalar(serde::de::value::StrDeserializer::new(value))
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
                self.scalar(serde::de::value::BoolDeserializer::new(value))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
                self.scalar(serde::de::value::I64Deserializer::new(value))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
                self.scalar(serde::de::value::I64Deserializer::new(
                    i64::try_from(value).unwrap_or(i64::MAX),
                ))
            }
        }
        impl Visitor {
            fn scalar<'de, E: serde::de::Error>(
                self,
                value: impl Deserializer<'de, Error = E>,
            ) -> Result<CaptchaConfig, E> {
                Ok(CaptchaConfig {
                    mode: captcha_mode(value)?,
                    ..CaptchaConfig::default()
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[flow]`: lifetimes and budgets of one recovery.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct FlowConfig {
    /// Seconds a recovery flow lives from `StartRecovery`; after that it is `FLOW_NOT_FOUND`.
    #[schemars(range(min = 60, max = DAY_SECS))]
    pub flow_ttl_secs: u64,
    /// Seconds a verification code stays valid (`CODE_EXPIRED` after; a new one can be sent).
    /// Not longer than `flow.flow_ttl_secs`.
    #[schemars(range(min = 30, max = DAY_SECS))]
    pub code_ttl_secs: u64,
    /// Seconds a reset token from `VerifyCode` stays valid.
    #[schemars(range(min = 30, max = DAY_SECS))]
    pub token_ttl_secs: u64,
    /// Wrong codes a flow takes; the next one ends it (`ATTEMPTS_EXHAUSTED`).
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: u32,
    /// Seconds between two codes of one flow (`RESEND_TOO_SOON` before).
    #[schemars(range(min = 0, max = 3600))]
    pub resend_cooldown_secs: u64,
    /// Codes one flow may send.
    #[schemars(range(min = 1, max = 50))]
    pub max_sends: u32,
    /// Seconds a captcha (picture or proof of work) can be answered.
    #[schemars(range(min = 30, max = 3600))]
    pub captcha_ttl_secs: u64,
    /// Digits in the captcha picture: fewer are guessable, more are not typeable.
    #[schemars(range(min = 5, max = 8))]
    pub captcha_digits: u32,
    /// Cost of a proof of work (`captcha = "pow"` or `"both"`): the largest secret number; a
    /// solve takes half of it in hashes on average. Below 1000 the work is free; above 10^8 a
    /// phone needs minutes.
    #[schemars(range(min = 1_000, max = 100_000_000))]
    pub pow_max_number: u32,
    /// Cost of the proof of work offered instead of the picture in image mode (`[captcha]
    /// alternative = "pow"`). A bot takes this way rather than read the picture, so it is what
    /// an image captcha costs a bot (docs/security.md, "The way round the picture"); a person
    /// waits for it once.
    #[schemars(range(min = 1_000, max = 100_000_000))]
    pub pow_alternative_max_number: u32,
    /// Digits of a verification code: each digit divides an attacker's yearly success
    /// probability at the per-account budget by ten (SECURITY.md).
    #[schemars(range(min = 6, max = 10))]
    pub code_digits: u32,
    /// Seconds `ReportUnrequestedRecovery` ("it wasn't me") freezes recovery of the account; a
    /// mailed report code stays usable as long.
    #[schemars(range(min = 60, max = 30 * DAY_SECS))]
    pub report_freeze_secs: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        let flow = FlowSettings::default();
        Self {
            flow_ttl_secs: flow.flow_ttl.as_secs(),
            code_ttl_secs: flow.code_ttl.as_secs(),
            token_ttl_secs: flow.token_ttl.as_secs(),
            max_attempts: flow.max_attempts,
            resend_cooldown_secs: flow.resend_cooldown.as_secs(),
            max_sends: flow.max_sends,
            captcha_ttl_secs: 300,
            captcha_digits: 6,
            pow_max_number: DEFAULT_POW_MAX_NUMBER,
            pow_alternative_max_number: DEFAULT_POW_ALTERNATIVE_MAX_NUMBER,
            code_digits: flow.code_digits,
            report_freeze_secs: flow.report_freeze.as_secs(),
        }
    }
}

/// `[server]`: the gRPC listener.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ServerConfig {
    /// Largest request accepted, in bytes.
    #[schemars(range(min = 1024, max = 64 * 1024 * 1024))]
    pub max_message_bytes: usize,
    /// Milliseconds a call may take before it is cancelled (`DEADLINE_EXCEEDED`).
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    pub request_timeout_ms: u64,
    /// Requests handled at once per connection; more wait, before any of their work started,
    /// until one finishes. 32: the expensive calls are bounded by a handful of permits anyway, so
    /// more in service only queue there, each holding its work's state (~35 KiB for a reset
    /// waiting for the database: with 256, a flood of 1,000 resets over 8 connections peaked at
    /// 157–174 MiB RSS; benches/REPORT.md).
    #[schemars(range(min = 1, max = 100_000))]
    pub concurrency_limit: usize,
    /// Peers whose `x-forwarded-for` is believed: CIDR ranges (`10.0.0.0/8`, `fd00::/8`) or
    /// bare addresses (= /32, /128); keep them to the gateway's own addresses. From any other
    /// peer the header is ignored and the peer is the client. The same ranges are the "trusted
    /// peers" of `telemetry.trust_traceparent`.
    pub trusted_proxies: Vec<IpRange>,
    /// How many proxies of ours append to `x-forwarded-for` before a call reaches the service:
    /// the client is the entry this many from the right (1: the address the gateway that calls
    /// us accepted the connection from). Envoy's `xff_num_trusted_hops` is the same count less
    /// Envoy's own hop (an edge Envoy: 0 there, 1 here). Nothing left of the entry is
    /// believed. Fewer entries, or one that is not an address: the peer is the client (counted
    /// in `recovery.forwarded_for.rejected`).
    #[schemars(range(min = 1, max = 10))]
    pub trusted_hops: u8,
    /// Host names (and addresses) the service is reached by over HTTP/1.1 — the web page and
    /// grpc-web — as `host` (any port) or `host:port`, e.g. `["id.example.com"]`. A request
    /// whose `Host` is not listed gets HTTP 421 and nothing runs: it is a page of another site
    /// whose DNS was pointed at this port (DNS rebinding). Unset: `localhost`, `127.0.0.1` and
    /// `[::1]`, any port; production mode requires it to be set when the web UI or
    /// `cors_allowed_origins` is on. HTTP/2 gRPC callers are not affected.
    pub public_hosts: Option<Vec<String>>,
    /// Seconds to let in-flight calls finish on SIGTERM.
    #[schemars(range(min = 0, max = 3600))]
    pub shutdown_grace_secs: u64,
    /// Browser origins allowed to call over grpc-web (CORS), e.g. `["https://id.example.com"]`;
    /// `["*"]` allows any. Empty: no CORS headers (same-origin front ends and non-browser
    /// callers need none).
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            // Room for a 1 MiB field to reach the per-field checks and get a clear violation;
            // anything larger is refused by the codec before it is decoded.
            max_message_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 30_000,
            concurrency_limit: 32,
            trusted_proxies: Vec::new(),
            trusted_hops: 1,
            public_hosts: None,
            cors_allowed_origins: Vec::new(),
            shutdown_grace_secs: 20,
        }
    }
}

/// `[account_api]`: who may call `AccountService`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema)]
#[serde(default)]
pub struct AccountApiConfig {
    /// SHA-256 (hex) of the API keys allowed to call `AccountService` (`authorization: Bearer
    /// <key>`); the keys themselves live with the callers (a Secret). Empty, with no mutual
    /// TLS: loopback callers only, and refused in production mode.
    pub api_key_sha256: Vec<String>,
    /// Admit loopback callers (127.0.0.0/8, ::1) without a key or certificate, also in
    /// production mode or when keys are configured. Outside production mode loopback is
    /// admitted anyway while no key and no client CA is set. Caution: in a service mesh the
    /// sidecar proxy connects from loopback (Istio: 127.0.0.6) on behalf of every caller the
    /// mesh lets in, so this admits all of them.
    pub trust_loopback: bool,
    /// With mutual TLS: the client-certificate identities allowed to call `AccountService`,
    /// each `dns:<name>` (a DNS SAN) or `uri:<uri>` (a URI SAN, e.g. a SPIFFE id; a bare
    /// `spiffe://...` is read as `uri:`), compared exactly (DNS names case-insensitively).
    /// Empty: any certificate of `tls.client_ca_file` (warned about in production).
    pub allowed_client_identities: Vec<String>,
}

/// Whose W3C `traceparent` a server span joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TraceparentTrust {
    /// Only a direct peer in `server.trusted_proxies` (the gateway); anyone else starts a
    /// new trace, their context kept as a span link at most.
    #[default]
    Proxies,
    /// Every caller (a closed network where every caller is ours).
    All,
    /// Nobody: every call starts a new trace.
    None,
}

/// `[telemetry]`: tracing settings beyond the exporter's endpoint (`otlp_endpoint`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema)]
#[serde(default)]
pub struct TelemetryConfig {
    /// `proxies` (default) | `all` | `none`: whose `traceparent` is honoured. A caller who
    /// picks the trace id can glue its calls into our traces or flood one trace.
    pub trust_traceparent: TraceparentTrust,
}

/// `[recovery_api]`: which gateway may call `RecoveryService`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema)]
#[serde(default)]
pub struct RecoveryApiConfig {
    /// SHA-256 (hex) of the gateway keys allowed to call `RecoveryService`, presented as
    /// `x-gateway-key: <key>` or `authorization: Bearer <key>`. Empty: anyone may call it (the
    /// service is meant to face the public through a gateway; the key pins which gateway).
    pub gateway_key_sha256: Vec<String>,
}

/// TLS on the gRPC port (rustls). Off unless `cert_file` is set; `client_ca_file` adds mutual
/// TLS, and a verified client certificate then authenticates `AccountService` callers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain of the server, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s) that client certificates must chain to. Unset: no client
    /// certificates are asked for.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: also accept clients without a certificate (they then need an API
    /// key for `AccountService`). A certificate that is presented must still verify.
    pub client_auth_optional: bool,
    /// Milliseconds: a TLS handshake not finished within this time is dropped, so half-open
    /// connections cannot pile up.
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth_optional: false,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Client certificates are verified (mutual TLS).
    pub fn mutual(&self) -> bool {
        self.enabled() && self.client_ca_file.is_some()
    }
}

/// The admin listener (`[admin]`): `/metrics` (Prometheus), `/healthz`, `/readyz`. Off unless
/// `listen` is set, and never on the gRPC port: it is meant for the cluster's scraper and probes,
/// not for the callers the gateway lets in.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AdminConfig {
    /// Address of the admin listener, e.g. `0.0.0.0:9090`; never the gRPC port. Unset: no
    /// admin listener.
    pub listen: Option<SocketAddr>,
}

/// The reference web front end at `/` (`web/`, served by `server::ui`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema)]
#[serde(default)]
pub struct UiConfig {
    /// Unset: on, except in production mode, where a public page is an explicit choice.
    pub enabled: Option<bool>,
}

/// The configuration of recovery-service: a TOML file (`--config` or `RECOVERY_CONFIG`), any key
/// also settable as `RECOVERY_<KEY>` (nested keys joined by `__`). Unknown keys and values out of
/// range stop the start.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(title = "recovery-service configuration")]
pub struct Config {
    /// gRPC listen address (`RECOVERY_LISTEN`).
    pub listen: SocketAddr,
    /// `postgres://…`, `mysql://…` or `sqlite://…` (`RECOVERY_DATABASE_URL`).
    pub database_url: String,
    /// `redis://…`, `rediss://…`, comma-separated cluster nodes, or
    /// `redis+sentinel://host:port[,host:port…]/<service>[/db]` (`RECOVERY_REDIS_URL`). Unset:
    /// the in-process store (one replica only).
    pub redis_url: Option<String>,
    /// How mails are delivered (`RECOVERY_NOTIFIER`).
    pub notifier: NotifierKind,
    /// The SMTP relay (`RECOVERY_SMTP_URL`): `smtp://host:port` (plain), `?tls=required`
    /// (STARTTLS), `?tls=opportunistic`, `smtps://host:port` (TLS); `user:password@` for AUTH.
    /// A secret: never printed.
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub smtp_url: Option<SecretString>,
    /// Sender address of every mail (`RECOVERY_MAIL_FROM`).
    pub mail_from: String,
    /// Timeouts, pool and TLS trust of the SMTP notifier (`[smtp]`).
    pub smtp: SmtpSettings,
    /// `[mail]`: what the mails carry beyond their templates (the report link).
    pub mail: MailSettings,
    /// `[captcha]`: which proof `StartRecovery` needs, and the way round the picture for a
    /// person who cannot read it. `captcha = "off"` (one value, as in older files) and
    /// `RECOVERY_CAPTCHA` set the mode alone.
    #[schemars(schema_with = "schema::captcha")]
    pub captcha: CaptchaConfig,
    /// HMAC key(s), comma-separated, newest first (rotation), each at least 32 bytes
    /// (`RECOVERY_SECRET`). Unset: a random key per start, with a warning (refused in
    /// production mode). A secret: never printed.
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub secret: Option<SecretString>,
    /// OTLP/gRPC collector for traces and metrics (`RECOVERY_OTLP_ENDPOINT`; the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` too, which this overrides). Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// `[telemetry]`: whose trace context is honoured.
    pub telemetry: TelemetryConfig,
    /// Production mode refuses to start with a missing or weak secret or the log notifier.
    pub production: bool,
    /// Directory with templates overriding the embedded e-mail templates.
    pub templates_dir: Option<PathBuf>,
    /// Log lines on standard error: `text` or `json`.
    #[schemars(extend("enum" = ["text", "json"]))]
    pub log_format: String,
    /// `[flow]`: lifetimes and budgets of one recovery.
    pub flow: FlowConfig,
    /// `[rate_limits]`: fixed windows, shared by all replicas through the store.
    pub rate_limits: RateLimits,
    /// `[password_policy]`: what a new password must be.
    pub password_policy: PolicySettings,
    /// `[breach_check]`: breached-password range check (off by default).
    pub breach_check: BreachSettings,
    /// `[hashing]`: argon2id parameters and how many hashes run at once.
    pub hashing: HashSettings,
    /// `[database]`: pool and timeouts.
    pub database: DatabaseSettings,
    /// `[redis]`: the store's key prefix and timeouts.
    pub redis: RedisConfig,
    /// `[delivery]`: the durable e-mail queue.
    pub delivery: DeliverySettings,
    /// `[events]`: the outbox relay to a Redis Stream.
    pub events: EventSettings,
    /// `[webhooks]`: the outbox's events POSTed to HTTP endpoints, signed.
    pub webhooks: WebhookSettings,
    /// `[server]`: the gRPC listener.
    pub server: ServerConfig,
    /// `[account_api]`: who may call `AccountService`.
    pub account_api: AccountApiConfig,
    /// `[recovery_api]`: which gateway may call `RecoveryService`.
    pub recovery_api: RecoveryApiConfig,
    /// `[tls]`: TLS and mutual TLS on the gRPC port.
    pub tls: TlsConfig,
    /// `[admin]`: `/metrics`, `/healthz`, `/readyz` on a port of their own.
    pub admin: AdminConfig,
    /// `[ui]`: the web page at `/`.
    pub ui: UiConfig,
    /// `[retention]`: how long audit, outbox and delivery rows are kept.
    pub retention: RetentionSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: "sqlite://recovery.db?mode=rwc".to_owned(),
            redis_url: None,
            notifier: NotifierKind::Log,
            smtp_url: None,
            mail_from: "no-reply@localhost".to_owned(),
            smtp: SmtpSettings::default(),
            mail: MailSettings::default(),
            captcha: CaptchaConfig::default(),
            secret: None,
            otlp_endpoint: None,
            telemetry: TelemetryConfig::default(),
            production: false,
            templates_dir: None,
            log_format: "text".to_owned(),
            flow: FlowConfig::default(),
            rate_limits: RateLimits::default(),
            password_policy: PolicySettings::default(),
            breach_check: BreachSettings::default(),
            hashing: HashSettings::default(),
            database: DatabaseSettings::default(),
            redis: RedisConfig::default(),
            delivery: DeliverySettings::default(),
            events: EventSettings::default(),
            webhooks: WebhookSettings::default(),
            server: ServerConfig::default(),
            account_api: AccountApiConfig::default(),
            recovery_api: RecoveryApiConfig::default(),
            tls: TlsConfig::default(),
            admin: AdminConfig::default(),
            ui: UiConfig::default(),
            retention: RetentionSettings::default(),
        }
    }
}

/// `Debug` never shows a secret.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted_toml())
    }
}

/// Why the configuration was refused. Every message names the key (or the file and line) and
/// the kind of problem, never the value: a value may be a secret (a webhook key pasted into the
/// wrong variable, a password in a URL), and the message ends up in terminals and log collectors.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn listed(problems: Vec<String>) -> Self {
        match problems.as_slice() {
            [] => Self("refused".to_owned()),
            [one] => Self(one.clone()),
            many => Self(format!(
                "{} problems:\n  - {}",
                many.len(),
                many.join("\n  - ")
            )),
        }
    }
}

/// A file that is not TOML is refused here, with the line, column and kind of the mistake.
/// figment's own message quotes the offending line under a caret, and that line is often the
/// one holding a secret (an unterminated `secret = "...`).
fn check_toml_syntax(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError(format!(
            "config file {} cannot be read: {}",
            path.display(),
            errors::io_kind(&error)
        ))
    })?;
    match text.parse::<toml::Table>() {
        Ok(_) => Ok(()),
        Err(error) => Err(ConfigError(errors::toml_syntax(path, &text, &error))),
    }
}

/// Query parameters whose value is a credential (matched as a substring of the lower-cased
/// name): drivers take passwords as `?password=`, cloud endpoints tokens as `?access_token=`,
/// signed URLs as `?sig=`.
const SECRET_QUERY_PARAMS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "sig",
];

/// Hides every secret a URL can carry: the password of `scheme://user:password@host` and the
/// value of credential-like query parameters (`?password=`, `?token=`, ...).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => {
                let user = credentials
                    .split_once(':')
                    .map_or(credentials, |(user, _)| user);
                format!("{scheme}://{user}:***@{host}")
            }
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    let Some(query) = query else {
        return base;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_QUERY_PARAMS
                    .iter()
                    .any(|secret| name.to_ascii_lowercase().contains(secret)) =>
            {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

impl Config {
    /// Defaults, then the file (if any), then `RECOVERY_*`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("RECOVERY_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    path.display()
                )));
            }
            check_toml_syntax(&path)?;
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("RECOVERY_")
                .ignore(&["CONFIG"])
                .filter(|key| strict::is_configuration(key.as_str()))
                .split("__")
                // `RECOVERY_CAPTCHA` is the mode, as it was before `[captcha]` became a table
                // (`RECOVERY_CAPTCHA__ALTERNATIVE` is its other key).
                .map(|key| {
                    if key == "captcha" {
                        "captcha.mode".into()
                    } else {
                        key.into()
                    }
                }),
        );
        let config: Config = match figment.extract() {
            Ok(config) => config,
            Err(error) => return Err(ConfigError::listed(errors::described(&figment, error))),
        };
        let mut problems = strict::unknown_keys(&figment);
        problems.extend(validate::out_of_range(&config));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::listed(problems))
        }
    }

    /// Settings that are allowed but weaker than production should run with; printed by
    /// `config check` and logged at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if matches!(
            self.captcha.check(),
            CaptchaCheck::Digits | CaptchaCheck::DigitsAndWork
        ) {
            // WCAG 2.2 SC 1.1.1 (its captcha clause) and 3.3.8 Accessible Authentication.
            warnings.push(
                "captcha: a person who cannot read the picture cannot recover a password (mode both, or \
                 image with alternative none); use image with alternative = \"pow\", or pow"
                    .to_owned(),
            );
        }
        if self.production
            && self.tls.mutual()
            && self.account_api.allowed_client_identities.is_empty()
        {
            warnings.push(
                "account_api.allowed_client_identities is empty: AccountService admits any client certificate \
                 of tls.client_ca_file; list the callers' SANs (dns:<name>, uri:<uri>)"
                    .to_owned(),
            );
        }
        if self.production && self.account_api.trust_loopback {
            warnings.push(
                "account_api.trust_loopback = true: every loopback caller may use AccountService without a key; \
                 a service-mesh sidecar connects from loopback on behalf of every caller the mesh admits"
                    .to_owned(),
            );
        }
        warnings
    }

    /// The trust-boundary rules (`account_api` in production, `server.public_hosts`), one
    /// message each; `App::build` refuses to start on the first.
    pub fn boundary_problems(&self) -> Vec<String> {
        boundary::problems(self)
    }

    pub fn ui_enabled(&self) -> bool {
        self.ui.enabled.unwrap_or(!self.production)
    }

    pub fn recovery_settings(&self) -> RecoverySettings {
        let f = &self.flow;
        RecoverySettings {
            flow: FlowSettings {
                flow_ttl: Duration::from_secs(f.flow_ttl_secs),
                code_ttl: Duration::from_secs(f.code_ttl_secs),
                token_ttl: Duration::from_secs(f.token_ttl_secs),
                max_attempts: f.max_attempts,
                resend_cooldown: Duration::from_secs(f.resend_cooldown_secs),
                max_sends: f.max_sends,
                code_digits: f.code_digits.clamp(
                    VerificationCode::MIN_DIGITS as u32,
                    VerificationCode::MAX_DIGITS as u32,
                ),
                report_freeze: Duration::from_secs(f.report_freeze_secs),
                ..FlowSettings::default()
            },
            captcha: self.captcha.mode,
            captcha_alternative: self.captcha.alternative,
            captcha_ttl: Duration::from_secs(f.captcha_ttl_secs),
            captcha_digits: f.captcha_digits.clamp(5, 8),
            // Zero would make every challenge solvable with no work at all.
            pow_max_number: f.pow_max_number.max(1_000),
            pow_alternative_max_number: f.pow_alternative_max_number.max(1_000),
            limits: self.rate_limits.clone(),
            flow_events: self.events.include_flow_events,
        }
    }

    /// The effective configuration as TOML, with every secret replaced by `***`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.secret.is_some() {
            shown.secret = Some(SecretString::from("***"));
        }
        shown.smtp_url = self
            .smtp_url
            .as_ref()
            .map(|url| SecretString::from(redact_url(url.expose_secret())));
        shown.database_url = redact_url(&self.database_url);
        for endpoint in &mut shown.webhooks.endpoints {
            endpoint.url = redact_url(&endpoint.url);
        }
        shown.otlp_endpoint = self.otlp_endpoint.as_deref().map(redact_url);
        shown.events.redis_url = self.events.redis_url.as_deref().map(|urls| {
            urls.split(',')
                .map(redact_url)
                .collect::<Vec<_>>()
                .join(",")
        });
        shown.redis_url = self.redis_url.as_deref().map(|urls| {
            urls.split(',')
                .map(redact_url)
                .collect::<Vec<_>>()
                .join(",")
        });
        let mut value = match toml::Value::try_from(&shown) {
            Ok(value) => value,
            Err(error) => return format!("# configuration cannot be shown: {error}"),
        };
        // SecretString does not serialise its content; show what the operator set, redacted.
        if let Some(table) = value.as_table_mut() {
            if let Some(url) = &shown.smtp_url {
                table.insert(
                    "smtp_url".into(),
                    toml::Value::String(url.expose_secret().to_owned()),
                );
            }
            if shown.secret.is_some() {
                table.insert("secret".into(), toml::Value::String("***".into()));
            }
            // Webhook secrets: how many are set, never what they are.
            if let Some(endpoints) = table
                .get_mut("webhooks")
                .and_then(|w| w.get_mut("endpoints"))
                .and_then(toml::Value::as_array_mut)
            {
                for (endpoint, config) in endpoints.iter_mut().zip(&shown.webhooks.endpoints) {
                    if let Some(endpoint) = endpoint.as_table_mut() {
                        let hidden = vec![toml::Value::String("***".into()); config.secret.len()];
                        endpoint.insert("secret".into(), toml::Value::Array(hidden));
                    }
                }
            }
        }
        toml::to_string_pretty(&value)
            .unwrap_or_else(|error| format!("# configuration cannot be shown: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_embedded_ones() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.database_url, "sqlite://recovery.db?mode=rwc");
        assert!(config.redis_url.is_none());
        assert_eq!(config.notifier, NotifierKind::Log);
        assert_eq!(config.captcha.mode, CaptchaMode::Image);
        assert_eq!(config.captcha.alternative, CaptchaAlternative::Pow);
        assert_eq!(config.captcha.check(), CaptchaCheck::DigitsOrWork);
        assert!(config.ui_enabled());
    }

    #[test]
    fn the_web_ui_is_off_in_production_unless_enabled() {
        let production = Config {
            production: true,
            ..Config::default()
        };
        assert!(!production.ui_enabled());
        let enabled = Config {
            ui: UiConfig {
                enabled: Some(true),
            },
            ..production
        };
        assert!(enabled.ui_enabled());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type.
    fn environment_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "recovery.toml",
                "captcha = \"on\"\nmail_from = \"file@example.com\"\n[flow]\ncode_ttl_secs = 120\n",
            )?;
            jail.set_env("RECOVERY_CAPTCHA", "pow");
            jail.set_env("RECOVERY_LISTEN", "0.0.0.0:6000");
            jail.set_env("RECOVERY_FLOW__MAX_SENDS", "3");
            let config =
                Config::load(Some(Path::new("recovery.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.captcha.mode, CaptchaMode::Pow);
            assert_eq!(config.listen.to_string(), "0.0.0.0:6000");
            assert_eq!(config.mail_from, "file@example.com");
            assert_eq!(config.flow.code_ttl_secs, 120);
            assert_eq!(config.flow.max_sends, 3);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type.
    fn the_captcha_is_a_mode_or_a_table_and_the_environment_sets_either_key() {
        figment::Jail::expect_with(|jail| {
            // The one-value form of older files: the mode, with the default alternative.
            jail.create_file("old.toml", "captcha = \"off\"\n")?;
            let config = Config::load(Some(Path::new("old.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.captcha.mode, CaptchaMode::Off);
            assert_eq!(config.captcha.alternative, CaptchaAlternative::Pow);

            jail.create_file(
                "table.toml",
                "[captcha]\nmode = \"on\"\nalternative = \"none\"\n",
            )?;
            let config = Config::load(Some(Path::new("table.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.captcha.check(), CaptchaCheck::Digits);

            // A typo in the table is an unknown key, as anywhere else.
            jail.create_file("typo.toml", "[captcha]\nalternativ = \"none\"\n")?;
            let error = Config::load(Some(Path::new("typo.toml")))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains("captcha.alternativ"), "{error}");
            jail.create_file("bad.toml", "[captcha]\nalternative = \"audio\"\n")?;
            assert!(Config::load(Some(Path::new("bad.toml"))).is_err());

            // RECOVERY_CAPTCHA changes the mode and keeps the file's alternative.
            jail.set_env("RECOVERY_CAPTCHA", "image");
            let config = Config::load(Some(Path::new("table.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.captcha.check(), CaptchaCheck::Digits);
            jail.set_env("RECOVERY_CAPTCHA__ALTERNATIVE", "pow");
            let config = Config::load(Some(Path::new("table.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.captcha.check(), CaptchaCheck::DigitsOrWork);

            Ok(())
        });
    }

    #[test]
    fn both_and_an_image_captcha_without_alternative_are_warned_about() {
        for (mode, alternative, warned) in [
            (CaptchaMode::Image, CaptchaAlternative::Pow, false),
            (CaptchaMode::Image, CaptchaAlternative::None, true),
            (CaptchaMode::Both, CaptchaAlternative::Pow, true),
            (CaptchaMode::Pow, CaptchaAlternative::None, false),
            (CaptchaMode::Off, CaptchaAlternative::None, false),
        ] {
            let config = Config {
                captcha: CaptchaConfig { mode, alternative },
                ..Config::default()
            };
            let warnings = config.warnings();
            assert_eq!(
                warnings
                    .iter()
                    .any(|w| w.contains("cannot read the picture")),
                warned,
                "{mode:?} {alternative:?}: {warnings:?}"
            );
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type.
    fn the_report_url_comes_from_the_mail_section_or_the_environment_and_is_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "recovery.toml",
                "[mail]\nreport_url = \"https://id.example.com/report?code={code}\"\n",
            )?;
            let config =
                Config::load(Some(Path::new("recovery.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                config.mail.report_url.as_deref(),
                Some("https://id.example.com/report?code={code}")
            );
            jail.set_env(
                "RECOVERY_MAIL__REPORT_URL",
                "https://id.example.com/r/{code}",
            );
            let config =
                Config::load(Some(Path::new("recovery.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                config.mail.report_url.as_deref(),
                Some("https://id.example.com/r/{code}")
            );
            jail.set_env("RECOVERY_MAIL__REPORT_URL", "https://id.example.com/r");
            let error = Config::load(Some(Path::new("recovery.toml"))).unwrap_err();
            assert!(error.to_string().contains("mail.report_url"), "{error}");
            jail.set_env(
                "RECOVERY_MAIL__REPORT_URL",
                "https://id.example.com/r/{code}",
            );
            jail.set_env("RECOVERY_MAIL__REPORT_LINK", "x");
            let error = Config::load(Some(Path::new("recovery.toml"))).unwrap_err();
            assert!(
                error.to_string().contains("RECOVERY_MAIL__REPORT_LINK"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted_in_the_printed_config() {
        let config = Config {
            secret: Some(SecretString::from("super-secret-key-material-0123456789")),
            smtp_url: Some(SecretString::from(
                "smtp://user:hunter2@mail.example.com:587",
            )),
            database_url: "postgres://app:dbpass@db/recovery".into(),
            redis_url: Some("redis://:redispass@cache:6379".into()),
            ..Config::default()
        };
        let shown = config.redacted_toml();
        for secret in [
            "super-secret-key-material",
            "hunter2",
            "dbpass",
            "redispass",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        assert!(shown.contains("smtp://user:***@mail.example.com:587"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type.
    fn trusted_proxies_take_cidr_ranges_and_bare_addresses() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "recovery.toml",
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/48\", \"192.0.2.7\"]\n\
                 [telemetry]\ntrust_traceparent = \"none\"\n",
            )?;
            let config =
                Config::load(Some(Path::new("recovery.toml"))).map_err(|e| e.to_string())?;
            let shown: Vec<String> = config
                .server
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/48", "192.0.2.7/32"]);
            assert_eq!(config.telemetry.trust_traceparent, TraceparentTrust::None);
            assert!(config.redacted_toml().contains("10.0.0.0/8"));
            jail.set_env("RECOVERY_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/33\"]");
            let error = Config::load(Some(Path::new("recovery.toml")))
                .unwrap_err()
                .to_string();
            assert!(error.contains("CIDR"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn production_mutual_tls_without_an_allow_list_is_warned_about() {
        let mut config = Config {
            production: true,
            tls: TlsConfig {
                cert_file: Some("server.crt".into()),
                key_file: Some("server.key".into()),
                client_ca_file: Some("ca.crt".into()),
                ..TlsConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(config.warnings().len(), 1, "{:?}", config.warnings());
        assert!(config.warnings()[0].contains("allowed_client_identities"));
        config.account_api.allowed_client_identities = vec!["dns:admin.internal".into()];
        assert!(config.warnings().is_empty());
        config.account_api.allowed_client_identities = Vec::new();
        config.production = false;
        assert!(config.warnings().is_empty());
    }
}
