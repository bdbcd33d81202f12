//! Webhooks: the events of the transactional outbox, POSTed to HTTP endpoints and
//! signed per the Standard Webhooks specification (<https://www.standardwebhooks.com>).
//!
//! - Each endpoint has its own task: fan out (one delivery row per matching outbox event), claim
//!   the due rows with a lease (one replica sends a row at a time), POST them concurrently,
//!   then mark each delivered or reschedule it with capped exponential backoff and jitter.
//! - Order: per endpoint, only the oldest pending event of an account is ever due, so an
//!   endpoint that is down holds that account's later events until the earlier one is accepted;
//!   other accounts' events are not held by it.
//! - Give-up: a delivery still failing `max_age_secs` after it was fanned out is marked failed,
//!   counted (`recovery.webhooks{outcome="abandoned"}`), logged at error level and written to the
//!   audit trail (`webhook.abandoned`).
//! - Nothing here logs a secret, a signature or a body: log lines name the endpoint (its `name`,
//!   or a hash of its URL), the event id and type.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::SecondsFormat;
use hmac::{KeyInit, Mac};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, DAY_SECS};
use crate::recovery::ports::{WebhookDelivery, WebhookStore};
use crate::secrets::keys::random_bytes;

/// The events an endpoint gets when it names none.
pub const DEFAULT_EVENTS: &[&str] = &["password.changed", "recovery.reported"];

/// A transaction that wrote an outbox row is assumed committed or gone this long after the row's
/// time (the database's `statement_timeout` is far shorter): an id the fan-out has not seen by
/// then is passed over for good.
const SETTLE_SECS: i64 = 120;

/// `[webhooks]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct WebhookSettings {
    /// `[[webhooks.endpoints]]`: none by default (no webhooks). Each endpoint needs egress to
    /// its host (HTTPS: 443).
    pub endpoints: Vec<WebhookEndpoint>,
    /// Milliseconds between looks for work when the last pass of an endpoint found none.
    #[schemars(range(min = 10, max = 60_000))]
    pub poll_interval_ms: u64,
    /// Deliveries sent at once per endpoint (and leased per pass).
    #[schemars(range(min = 1, max = 256))]
    pub batch_size: u64,
    /// Milliseconds to the first retry, about; doubles per failed attempt up to
    /// `webhooks.max_backoff_ms`. Each wait is drawn uniformly from [half, all] of it (jitter).
    #[schemars(range(min = 10, max = 3_600_000))]
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in milliseconds; at least
    /// `webhooks.initial_backoff_ms`.
    #[schemars(range(min = 10, max = DAY_SECS * 1000))]
    pub max_backoff_ms: u64,
    /// Seconds: a delivery still failing this long after it was owed is given up (metric,
    /// error log, audit row).
    #[schemars(range(min = 60, max = 30 * DAY_SECS))]
    pub max_age_secs: u64,
    /// Milliseconds a claimed delivery is leased: another replica may take it over after. At
    /// least twice every endpoint's `timeout_ms`.
    #[schemars(range(min = 1_000, max = 3_600_000))]
    pub lease_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            poll_interval_ms: 1_000,
            batch_size: 16,
            initial_backoff_ms: 5_000,
            max_backoff_ms: 3_600_000,
            max_age_secs: 3 * 24 * 3600,
            lease_ms: 120_000,
        }
    }
}

/// One `[[webhooks.endpoints]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookEndpoint {
    /// Stable name of the endpoint (the delivery state is kept under it), 1-64 characters of
    /// `A-Z a-z 0-9 - _ .`; unset: derived from the URL, so changing the URL then makes a new
    /// endpoint.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: Option<String>,
    /// `https://...` (`http://` is refused in production mode).
    pub url: String,
    /// `whsec_<base64 of 24-64 bytes>`, one or a list (rotation: every request is signed with
    /// each, newest first). Required. A secret: never printed.
    #[serde(default, skip_serializing, deserialize_with = "one_or_many")]
    #[schemars(schema_with = "secret_or_list")]
    pub secret: Vec<SecretString>,
    /// Event types sent to this endpoint.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Milliseconds one request may take (connect included).
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 100, max = 60_000))]
    pub timeout_ms: u64,
}

/// `secret`: one `whsec_…` string or a list of them.
fn secret_or_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "anyOf": [
            {"type": "string", "pattern": "^whsec_"},
            {"type": "array", "items": {"type": "string", "pattern": "^whsec_"}, "minItems": 1}
        ]
    })
}

fn default_events() -> Vec<String> {
    DEFAULT_EVENTS.iter().map(|&e| e.to_owned()).collect()
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::One(one) => vec![SecretString::from(one)],
        Raw::Many(many) => many.into_iter().map(SecretString::from).collect(),
    })
}

impl WebhookEndpoint {
    /// The name the delivery state is kept under.
    pub fn id(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => {
                let digest = Sha256::digest(self.url.as_bytes());
                format!("url-{}", &hex::encode(digest)[..16])
            }
        }
    }

    /// The signing keys, decoded from `whsec_<base64>`.
    pub fn keys(&self) -> Result<Vec<SecretSlice<u8>>, String> {
        if self.secret.is_empty() {
            return Err("has no `secret` (whsec_...)".to_owned());
        }
        self.secret
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                decode_secret(secret.expose_secret())
                    .map_err(|problem| format!("`secret` #{}: {problem}", i + 1))
            })
            .collect()
    }
}

/// `whsec_<base64 of 24 to 64 bytes>` (the spec's bounds).
pub fn decode_secret(secret: &str) -> Result<SecretSlice<u8>, &'static str> {
    let encoded = secret
        .trim()
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_")?;
    let bytes = BASE64
        .decode(encoded)
        .map_err(|_| "is not base64 after whsec_")?;
    if !(24..=64).contains(&bytes.len()) {
        return Err("must decode to 24-64 bytes");
    }
    Ok(SecretSlice::from(bytes))
}

fn valid_event_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_')
}

impl WebhookSettings {
    /// Every problem of the `[webhooks]` section, for the strict config loader.
    pub fn problems(&self, production: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let at = format!("webhooks.endpoints[{i}]");
            match url::Url::parse(&endpoint.url) {
                Err(_) => problems.push(format!("`{at}.url` is not a URL")),
                Ok(url) => match url.scheme() {
                    "https" => {}
                    "http" if !production => {}
                    "http" => problems.push(format!(
                        "`{at}.url` is http://: production mode sends webhooks over https only"
                    )),
                    _ => problems.push(format!(
                        "`{at}.url` has a scheme other than https (and http outside production)"
                    )),
                },
            }
            if let Some(name) = &endpoint.name
                && (name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                problems.push(format!(
                    "`{at}.name` must be 1-64 characters of A-Z a-z 0-9 - _ ."
                ));
            }
            if !seen.insert(endpoint.id()) {
                problems.push(format!(
                    "`{at}` repeats an endpoint (same name or URL as another)"
                ));
            }
            if let Err(problem) = endpoint.keys() {
                problems.push(format!("`{at}` {problem}"));
            }
            if endpoint.events.is_empty() {
                problems.push(format!("`{at}.events` is empty: nothing would be sent"));
            }
            for (index, event) in endpoint.events.iter().enumerate() {
                if !valid_event_type(event) {
                    problems.push(format!(
                        "`{at}.events[{index}]` is not an event type: lower-case words joined by dots"
                    ));
                }
            }
            // The range of `timeout_ms` itself is the schema's (config::schema).
            if self.lease_ms < endpoint.timeout_ms.saturating_mul(2) {
                problems.push(format!(
                    "`webhooks.lease_ms` must be at least twice `{at}.timeout_ms`: a lease ending mid-request lets another replica send the event again"
                ));
            }
        }
        // Each number's own range is the schema's (config::schema); what relates two is here.
        if self.max_backoff_ms < self.initial_backoff_ms {
            problems.push(
                "`webhooks.max_backoff_ms` is less than `webhooks.initial_backoff_ms`".to_owned(),
            );
        }
        problems
    }
}

type HmacSha256 = hmac::Hmac<Sha256>;

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per key,
/// space-separated.
pub fn signature(keys: &[SecretSlice<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .filter_map(|key| {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key.expose_secret()).ok()?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            Some(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The request body: `{"type", "timestamp" (RFC 3339, when the event happened), "data" (the
/// outbox payload)}`.
pub fn body(delivery: &WebhookDelivery) -> Vec<u8> {
    let data = serde_json::from_str::<serde_json::Value>(&delivery.payload)
        .unwrap_or_else(|_| serde_json::Value::String(delivery.payload.clone()));
    serde_json::json!({
        "type": delivery.event_type,
        "timestamp": delivery.event_created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
    .into_bytes()
}

/// The wait before attempt `attempts + 1`: `initial * 2^(attempts-1)`, capped, drawn uniformly
/// from [half, all] of it.
pub fn backoff(settings: &WebhookSettings, attempts: u32) -> Duration {
    let full = settings
        .initial_backoff_ms
        .saturating_mul(1u64 << attempts.clamp(1, 31).saturating_sub(1))
        .min(settings.max_backoff_ms);
    let half = full / 2;
    let jitter = random_bytes::<8>()
        .map(|bytes| u64::from_le_bytes(bytes) % (full - half + 1))
        .unwrap_or(0);
    Duration::from_millis(half + jitter)
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// One endpoint as the dispatcher uses it.
struct Target {
    id: String,
    url: reqwest::Url,
    keys: Vec<SecretSlice<u8>>,
    events: Vec<String>,
    timeout: Duration,
}

/// Sends the outbox's events to the configured endpoints.
pub struct WebhookDispatcher {
    store: Arc<dyn WebhookStore>,
    clock: Arc<dyn Clock>,
    settings: WebhookSettings,
    client: reqwest::Client,
    targets: Vec<Arc<Target>>,
}

impl WebhookDispatcher {
    /// `client` must not follow redirects (a redirect could point the signed body anywhere).
    pub fn new(
        store: Arc<dyn WebhookStore>,
        clock: Arc<dyn Clock>,
        settings: WebhookSettings,
        client: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let targets = settings
            .endpoints
            .iter()
            .map(|endpoint| {
                let id = endpoint.id();
                let keys = endpoint
                    .keys()
                    .map_err(|problem| anyhow::anyhow!("webhook endpoint {id} {problem}"))?;
                Ok(Arc::new(Target {
                    url: reqwest::Url::parse(&endpoint.url)
                        .map_err(|_| anyhow::anyhow!("webhook endpoint {id}: invalid URL"))?,
                    id,
                    keys,
                    events: endpoint.events.clone(),
                    timeout: Duration::from_millis(endpoint.timeout_ms),
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            store,
            clock,
            settings,
            client,
            targets,
        })
    }

    /// Runs one task per endpoint until `shutdown`; a request in flight finishes first.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut tasks = JoinSet::new();
        for target in &this.targets {
            tasks.spawn(this.clone().endpoint_loop(target.clone(), shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn endpoint_loop(self: Arc<Self>, target: Arc<Target>, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let mut registered = false;
        loop {
            let pass = async {
                if !registered {
                    self.store
                        .register_endpoint(&target.id, self.clock.now())
                        .await?;
                    registered = true;
                }
                self.pass(&target).await
            }
            .await;
            let busy = match pass {
                Ok(handled) => handled > 0,
                Err(error) => {
                    tracing::warn!(endpoint = %target.id, error = %error, "webhooks: database pass failed; will retry");
                    false
                }
            };
            if busy && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Records every configured endpoint's starting point in the outbox, so an endpoint receives
    /// every event written from now on. Called before the server takes requests: a new endpoint
    /// registered later by its loop would skip the events written in between.
    pub async fn register_all(&self) -> Result<(), crate::recovery::ports::RepoError> {
        for target in &self.targets {
            self.store
                .register_endpoint(&target.id, self.clock.now())
                .await?;
        }
        Ok(())
    }

    /// Fans out new events and sends what is due; returns how many rows it created or sent.
    pub async fn pass_all(&self) -> Result<u64, crate::recovery::ports::RepoError> {
        let mut handled = 0;
        for target in &self.targets {
            self.store
                .register_endpoint(&target.id, self.clock.now())
                .await?;
            handled += self.pass(target).await?;
        }
        Ok(handled)
    }

    async fn pass(&self, target: &Arc<Target>) -> Result<u64, crate::recovery::ports::RepoError> {
        let now = self.clock.now();
        let created = self
            .store
            .fan_out(
                &target.id,
                &target.events,
                now,
                now - chrono::Duration::seconds(SETTLE_SECS),
                self.settings.batch_size.saturating_mul(8),
            )
            .await?;
        let lease_until = now + chrono_duration(Duration::from_millis(self.settings.lease_ms));
        let due = self
            .store
            .claim_webhooks(&target.id, now, lease_until, self.settings.batch_size)
            .await?;
        let sent = u64::try_from(due.len()).unwrap_or(u64::MAX);
        let mut requests = JoinSet::new();
        for delivery in due {
            let client = self.client.clone();
            let target = target.clone();
            requests.spawn(async move {
                let outcome = send(&client, &target, &delivery).await;
                (delivery, outcome)
            });
        }
        let mut failure = None;
        while let Some(joined) = requests.join_next().await {
            let Ok((delivery, outcome)) = joined else {
                continue;
            };
            if let Err(error) = self.record(target, &delivery, outcome).await {
                failure = Some(error);
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(created + sent),
        }
    }

    async fn record(
        &self,
        target: &Target,
        delivery: &WebhookDelivery,
        outcome: Result<(), Failure>,
    ) -> Result<(), crate::recovery::ports::RepoError> {
        let now = self.clock.now();
        let attempts = delivery.attempts + 1;
        match outcome {
            Ok(()) => {
                crate::telemetry::metrics::webhook("delivered");
                tracing::info!(endpoint = %target.id, event_id = %delivery.event_id, event_type = %delivery.event_type, attempt = attempts, "webhook delivered");
                self.store.webhook_delivered(delivery.id, now).await
            }
            Err(Failure {
                reason: error,
                retry_after,
            }) => {
                let age = now - delivery.created_at;
                let max_age = chrono::Duration::seconds(
                    i64::try_from(self.settings.max_age_secs).unwrap_or(i64::MAX / 2),
                );
                if age >= max_age {
                    crate::telemetry::metrics::webhook("abandoned");
                    tracing::error!(endpoint = %target.id, event_id = %delivery.event_id, event_type = %delivery.event_type, attempts, error = %error, "webhook given up: still failing after webhooks.max_age_secs");
                    self.store
                        .webhook_abandoned(delivery, attempts, now, &error)
                        .await
                } else {
                    crate::telemetry::metrics::webhook("failed");
                    // A receiver asking for time (429/503 with Retry-After) gets at least that,
                    // within the backoff cap.
                    let asked = retry_after
                        .unwrap_or_default()
                        .min(Duration::from_millis(self.settings.max_backoff_ms));
                    let wait = backoff(&self.settings, attempts).max(asked);
                    tracing::warn!(endpoint = %target.id, event_id = %delivery.event_id, event_type = %delivery.event_type, attempt = attempts, error = %error, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "webhook failed; will retry");
                    self.store
                        .webhook_retry(delivery.id, attempts, now + chrono_duration(wait), &error)
                        .await
                }
            }
        }
    }
}

/// Why an attempt failed: a short reason fit for a log line and the `last_error` column ("HTTP
/// 503", "timeout", "connect"; never the URL, a header or the body), and the receiver's
/// `Retry-After` if it sent one with 429 or 503.
struct Failure {
    reason: String,
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(reason: &str) -> Self {
        Self {
            reason: reason.to_owned(),
            retry_after: None,
        }
    }
}

/// The HTTP client webhooks are sent with (the service's one TLS set-up). It follows no
/// redirect: a redirect could send the signed event anywhere, so it is refused and retried as a
/// failure.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    crate::hibp::client_builder()?
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("recovery-service/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("webhook HTTP client")
}

/// `config check --connect`: whether `endpoint` can be reached (name resolution, connection, TLS
/// with the service's trust roots) within its `timeout_ms`, by a `HEAD` of its URL: no event is
/// sent and nothing is signed. Any HTTP answer counts as reached (a receiver may well refuse a
/// `HEAD` with 405); the answer's status is reported. Errors never quote the URL (its query may
/// hold a token).
pub async fn probe(client: &reqwest::Client, endpoint: &WebhookEndpoint) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(&endpoint.url)
        .map_err(|_| anyhow::anyhow!("webhook endpoint {}: invalid URL", endpoint.id()))?;
    let response = client
        .head(url)
        .timeout(Duration::from_millis(endpoint.timeout_ms))
        .send()
        .await
        .map_err(|error| {
            let kind = if error.is_timeout() {
                format!("no answer within {} ms", endpoint.timeout_ms)
            } else if error.is_connect() {
                "cannot connect".to_owned()
            } else {
                "request failed".to_owned()
            };
            anyhow::Error::new(error.without_url()).context(kind)
        })?;
    Ok(format!("HTTP {} to HEAD", response.status().as_u16()))
}

/// How long a receiver's `Retry-After` asks to wait (RFC 9110 §10.2.3): delay-seconds, or an
/// HTTP-date. A date is measured from the response's own `Date` when it has one, so a receiver
/// whose clock is off from ours still gets the wait it meant; without one, from `now`. A date
/// already past asks for no wait (the backoff applies); a value that is neither form is ignored.
pub fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let until = httpdate::parse_http_date(value).ok()?;
    let from = headers
        .get(http::header::DATE)
        .and_then(|date| date.to_str().ok())
        .and_then(|date| httpdate::parse_http_date(date.trim()).ok())
        .unwrap_or(now);
    Some(until.duration_since(from).unwrap_or_default())
}

/// One signed POST.
async fn send(
    client: &reqwest::Client,
    target: &Target,
    delivery: &WebhookDelivery,
) -> Result<(), Failure> {
    let body = body(delivery);
    // Wall-clock time, whatever clock schedules the retries: the receiver compares it with its
    // own clock to refuse replays.
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    let signature = signature(&target.keys, &delivery.event_id, timestamp, &body);
    let response = client
        .post(target.url.clone())
        .timeout(target.timeout)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", delivery.event_id.as_str())
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|error| {
            Failure::new(if error.is_timeout() {
                "timeout"
            } else if error.is_connect() {
                "connect"
            } else {
                "request failed"
            })
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let asks_for_time = status == http::StatusCode::TOO_MANY_REQUESTS
        || status == http::StatusCode::SERVICE_UNAVAILABLE;
    Err(Failure {
        reason: format!("HTTP {}", status.as_u16()),
        retry_after: asks_for_time
            .then(|| retry_after(response.headers(), SystemTime::now()))
            .flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries.
    #[test]
    fn signs_the_reference_test_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signed = signature(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_every_key_newest_first() {
        let new = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let old = decode_secret(&format!("whsec_{}", BASE64.encode([7u8; 32]))).unwrap();
        let signed = signature(&[new, old], "id", 1, b"{}");
        let parts: Vec<&str> = signed.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret(&format!("whsec_{}", BASE64.encode([1u8; 16]))).is_err());
        assert!(decode_secret(&format!("whsec_{}", BASE64.encode([1u8; 65]))).is_err());
        assert!(decode_secret(&format!("whsec_{}", BASE64.encode([1u8; 32]))).is_ok());
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_an_http_date() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, http::HeaderValue::from_str(value).unwrap());
            }
            map
        };
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let wait = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(
            wait(&[("retry-after", "120")]),
            Some(Duration::from_secs(120))
        );
        // A date: from our clock when the response has no Date ...
        assert_eq!(
            wait(&[("retry-after", "Wed, 21 Oct 2015 07:29:30 GMT")]),
            Some(Duration::from_secs(90))
        );
        // ... and from the receiver's own Date when it has one (its clock is 1 h behind ours).
        assert_eq!(
            wait(&[
                ("retry-after", "Wed, 21 Oct 2015 06:29:00 GMT"),
                ("date", "Wed, 21 Oct 2015 06:28:00 GMT"),
            ]),
            Some(Duration::from_secs(60))
        );
        // A date already past asks for nothing more than the backoff.
        assert_eq!(
            wait(&[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]),
            Some(Duration::ZERO)
        );
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[("retry-after", "-5")]), None);
        assert_eq!(wait(&[]), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let settings = WebhookSettings {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 10_000,
            ..WebhookSettings::default()
        };
        for (attempts, full) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 8_000), (9, 10_000)] {
            for _ in 0..50 {
                let wait = u64::try_from(backoff(&settings, attempts).as_millis()).unwrap();
                assert!(
                    (full / 2..=full).contains(&wait),
                    "attempt {attempts}: {wait}"
                );
            }
        }
    }

    fn endpoint(url: &str) -> WebhookEndpoint {
        WebhookEndpoint {
            name: None,
            url: url.to_owned(),
            secret: vec![SecretString::from(format!(
                "whsec_{}",
                BASE64.encode([3u8; 32])
            ))],
            events: default_events(),
            timeout_ms: 5_000,
        }
    }

    #[test]
    fn only_http_and_https_urls_and_http_not_in_production() {
        let settings = |url: &str| WebhookSettings {
            endpoints: vec![endpoint(url)],
            ..WebhookSettings::default()
        };
        assert!(
            settings("https://hooks.example.com/x")
                .problems(true)
                .is_empty()
        );
        assert!(settings("http://127.0.0.1:9/x").problems(false).is_empty());
        assert_eq!(settings("http://127.0.0.1:9/x").problems(true).len(), 1);
        for bad in ["file:///etc/passwd", "gopher://x", "ftp://x/y", "not a url"] {
            assert_eq!(settings(bad).problems(false).len(), 1, "{bad}");
        }
    }
}
