//! The durable delivery queue between the flow and the notifier.
//!
//! `SendVerificationCode` seals the message (code included) with ChaCha20-Poly1305 under a key
//! derived from the server secret and writes it to the database; the worker opens, renders and
//! sends it, retrying with backoff until delivered or the code expires. So:
//! - the RPC answers in the same time whether or not the account exists, and whatever SMTP does;
//! - a crash loses nothing (the row is there after restart);
//! - the queue at rest never holds a plaintext code, and the sealed payload is erased once the
//!   message is delivered or dropped.
//!
//! Flows for unknown logins enqueue a message too (without recipient), which the worker drops:
//! the database sees the same writes either way.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::report_link::MailSettings;
use super::templates::{MessageKind, Templates};
use super::{Email, Notifier, NotifyError};
use crate::clock::{Clock, DAY_SECS};
use crate::recovery::ports::{
    Deliveries, DeliveryQueue, Notice, QueuedDelivery, RepoError, SealedDelivery,
};
use crate::secrets::keys::{KeyRing, random_bytes};

/// What a queued message says, before sealing. Fields added after the first release are
/// `#[serde(default)]`: rows sealed by an older version, still in the queue during an upgrade,
/// must open (they render without the new parts).
#[derive(Clone, Serialize, Deserialize)]
pub struct Outgoing {
    pub kind: String,
    /// `None`: a decoy for an unknown login, dropped by the worker.
    pub to: Option<String>,
    pub locale: String,
    pub masked_login: String,
    pub code: Option<String>,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub changed_at: Option<DateTime<Utc>>,
    /// The "it wasn't me" code shown in the code mail.
    #[serde(default)]
    pub report_code: Option<String>,
    /// Who asked for the code: when, from which address, with which `User-Agent`.
    #[serde(default)]
    pub requested_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub client_ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("kind", &self.kind)
            .field("locale", &self.locale)
            .field("masked_login", &self.masked_login)
            .finish_non_exhaustive()
    }
}

impl From<&Notice> for Outgoing {
    fn from(notice: &Notice) -> Self {
        Self {
            kind: notice.kind.name().to_owned(),
            to: notice.to.clone(),
            locale: notice.locale.clone(),
            masked_login: notice.masked_login.clone(),
            code: notice.code.as_ref().map(|c| c.expose_secret().to_owned()),
            code_expires_at: notice.code.as_ref().map(|_| notice.expires_at),
            changed_at: notice.changed_at,
            report_code: notice
                .report_code
                .as_ref()
                .map(|c| c.expose_secret().to_owned()),
            requested_at: notice.requested_at,
            client_ip: notice.client_ip.clone(),
            user_agent: notice
                .user_agent
                .as_ref()
                .map(|ua| ua.chars().take(super::client::MAX_USER_AGENT).collect()),
        }
    }
}

/// The domain's `Deliveries` port over the database queue: seals each notice, writes it, and
/// wakes the worker.
pub struct NoticeQueue {
    pub queue: Arc<dyn DeliveryQueue>,
    pub sealer: MessageSealer,
    pub wake: Arc<Notify>,
}

#[async_trait::async_trait]
impl Deliveries for NoticeQueue {
    async fn send(&self, notice: &Notice, now: DateTime<Utc>) -> Result<(), RepoError> {
        let delivery = self.prepare(notice, now).map_err(RepoError::Internal)?;
        self.queue.enqueue(delivery).await?;
        self.wake();
        Ok(())
    }

    fn prepare(
        &self,
        notice: &Notice,
        now: DateTime<Utc>,
    ) -> Result<SealedDelivery, anyhow::Error> {
        let mut delivery =
            self.sealer
                .to_delivery(&Outgoing::from(notice), notice.expires_at, now)?;
        delivery.account_id = notice.account_id.clone();
        Ok(delivery)
    }

    fn wake(&self) {
        self.wake.notify_one();
    }
}

const SEAL_PURPOSE: &str = "delivery-queue-v1";

/// Seals and opens queued messages. The kind is bound as associated data, so a sealed
/// "password changed" notice cannot be replayed as a code message.
#[derive(Clone)]
pub struct MessageSealer {
    /// Newest first; every key opens (rotation), the newest seals.
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for MessageSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageSealer(redacted)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("no key to seal with")]
    NoKey,
    #[error("random number generator failed")]
    Rng,
    #[error("encoding failed")]
    Encode,
}

impl MessageSealer {
    pub fn new(keys: &KeyRing) -> Self {
        Self {
            keys: keys.derive_keys(SEAL_PURPOSE),
        }
    }

    pub fn seal(&self, message: &Outgoing) -> Result<Vec<u8>, SealError> {
        let key = self.keys.first().ok_or(SealError::NoKey)?;
        let plaintext = serde_json::to_vec(message).map_err(|_| SealError::Encode)?;
        let nonce = random_bytes::<12>().map_err(|_| SealError::Rng)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: message.kind.as_bytes(),
                },
            )
            .map_err(|_| SealError::Encode)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// `None` if no key opens it (sealed under a key that has since been retired, or tampered).
    pub fn open(&self, kind: &str, sealed: &[u8]) -> Option<Outgoing> {
        let (nonce, ciphertext) = sealed.split_at_checked(12)?;
        self.keys.iter().find_map(|key| {
            let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
            let plaintext = cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: kind.as_bytes(),
                    },
                )
                .ok()?;
            serde_json::from_slice(&plaintext).ok()
        })
    }

    pub fn to_delivery(
        &self,
        message: &Outgoing,
        not_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SealedDelivery, SealError> {
        Ok(SealedDelivery {
            id: uuid::Uuid::now_v7().to_string(),
            kind: message.kind.clone(),
            ciphertext: self.seal(message)?,
            not_after,
            created_at: now,
            account_id: None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DeliverySettings {
    /// Milliseconds between looks for due messages when nothing woke the worker.
    #[schemars(range(min = 10, max = 3_600_000))]
    pub poll_interval_ms: u64,
    /// Messages claimed per pass.
    #[schemars(range(min = 1, max = 10_000))]
    pub batch_size: u64,
    /// Messages of a batch handed to the notifier at once, each to a different recipient (one
    /// recipient's messages go out one after the other, in queue order). Keep it at or below
    /// `smtp.pool_max_size`: sends beyond the pool open a connection each and close it after.
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: u64,
    /// Milliseconds to the first retry; doubles per attempt up to `delivery.max_backoff_ms`
    /// (and may not exceed it).
    #[schemars(range(min = 1, max = DAY_SECS * 1000))]
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in milliseconds.
    #[schemars(range(min = 1, max = DAY_SECS * 1000))]
    pub max_backoff_ms: u64,
    /// Milliseconds a claimed message is leased (another replica takes it over after).
    #[schemars(range(min = 1_000, max = DAY_SECS * 1000))]
    pub lease_ms: u64,
    /// Seconds a "password changed" notice is retried.
    #[schemars(range(min = 60, max = 30 * DAY_SECS))]
    pub notice_lifetime_secs: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1_000,
            batch_size: 32,
            concurrency: 4,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            lease_ms: 60_000,
            notice_lifetime_secs: 7 * 24 * 3600,
        }
    }
}

/// A claimed message, opened: to send, or to drop and why.
enum Opened {
    Send {
        /// Boxed: the message is large next to the other variant.
        message: Box<Outgoing>,
        to: String,
    },
    Drop(DropReason),
}

#[derive(Clone, Copy)]
enum DropReason {
    Unreadable,
    NoRecipient,
}

/// Sends what the queue holds.
pub struct DeliveryWorker {
    pub queue: Arc<dyn DeliveryQueue>,
    pub sealer: MessageSealer,
    pub templates: Arc<Templates>,
    pub notifier: Arc<dyn Notifier>,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
    /// `[mail]`: the report link.
    pub mail: MailSettings,
    pub wake: Arc<Notify>,
}

fn chrono_ms(ms: u64) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2))
}

impl DeliveryWorker {
    /// Runs until `shutdown` fires. Errors are logged and retried; the loop never exits early.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        loop {
            match self.run_once().await {
                Ok(count) if count > 0 => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "delivery queue poll failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One pass over the due messages; returns how many were handled.
    ///
    /// The batch is split into lanes, one per recipient, run `concurrency` at a time: a relay
    /// answers each message after a round trip or two, and one lane at a time would make the
    /// slowest step of a recovery a queue behind other people's mail. Within a lane messages go
    /// out in the order they were claimed, so a person never gets a "password changed" notice
    /// before the code mail it follows. An error of the queue itself ends the pass after the
    /// lanes already running finish; what was not handled is claimed again when its lease ends.
    pub async fn run_once(&self) -> Result<usize, RepoError> {
        let now = self.clock.now();
        let lease_until = now + chrono_ms(self.settings.lease_ms);
        let batch = self
            .queue
            .claim_due(now, lease_until, self.settings.batch_size)
            .await?;
        let count = batch.len();
        let lanes = self.lanes(batch);
        let concurrency = usize::try_from(self.settings.concurrency.max(1)).unwrap_or(1);
        let mut running = futures_util::stream::iter(lanes.into_iter().map(|lane| async move {
            for (item, opened) in lane {
                self.handle(item, opened).await?;
            }
            Ok::<(), RepoError>(())
        }))
        .buffer_unordered(concurrency);
        let mut first_error = None;
        while let Some(result) = running.next().await {
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(count), Err)
    }

    /// Opens every claimed message and groups them by recipient, keeping the claim order inside
    /// each group. A message that will not be sent (expired, unreadable, a decoy) is a lane of
    /// its own: dropping it waits for no one. (Expiry is checked when a message's turn comes.)
    fn lanes(&self, batch: Vec<QueuedDelivery>) -> Vec<Vec<(QueuedDelivery, Opened)>> {
        let mut lanes: Vec<Vec<(QueuedDelivery, Opened)>> = Vec::new();
        let mut by_recipient: HashMap<String, usize> = HashMap::new();
        for item in batch {
            let opened = self.open(&item);
            let recipient = match &opened {
                Opened::Send { to, .. } => Some(to.to_lowercase()),
                Opened::Drop(_) => None,
            };
            match recipient.and_then(|to| match by_recipient.entry(to) {
                Entry::Occupied(lane) => Some(*lane.get()),
                Entry::Vacant(slot) => {
                    slot.insert(lanes.len());
                    None
                }
            }) {
                Some(lane) => lanes[lane].push((item, opened)),
                None => lanes.push(vec![(item, opened)]),
            }
        }
        lanes
    }

    /// What to do with a claimed message, decided without touching the network.
    fn open(&self, item: &QueuedDelivery) -> Opened {
        let Some(message) = self.sealer.open(&item.kind, &item.ciphertext) else {
            return Opened::Drop(DropReason::Unreadable);
        };
        match message.to.clone() {
            Some(to) => Opened::Send {
                message: Box::new(message),
                to,
            },
            // A decoy queued for an unknown login: dropped as quietly as it was queued.
            None => Opened::Drop(DropReason::NoRecipient),
        }
    }

    /// Ends a message without sending it, and counts why.
    async fn drop_message(
        &self,
        id: &str,
        reason: &'static str,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        crate::telemetry::metrics::delivery(reason);
        self.queue.mark_dropped(id, reason, now).await
    }

    #[tracing::instrument(skip_all, fields(delivery_id = %item.id, kind = %item.kind, attempt = item.attempts + 1))]
    async fn handle(&self, item: QueuedDelivery, opened: Opened) -> Result<(), RepoError> {
        let now = self.clock.now();
        // Checked at the message's turn: the lane's earlier messages can have taken a while.
        if now >= item.not_after {
            tracing::info!("message expired before delivery; dropped");
            return self.drop_message(&item.id, "expired", now).await;
        }
        let (message, to) = match opened {
            Opened::Send { message, to } => (message, to),
            Opened::Drop(DropReason::Unreadable) => {
                tracing::warn!("queued message cannot be opened (secret rotated away?); dropped");
                return self.drop_message(&item.id, "unreadable", now).await;
            }
            Opened::Drop(DropReason::NoRecipient) => {
                return self.drop_message(&item.id, "no recipient", now).await;
            }
        };
        let email = match self.render(&message, to, now) {
            Ok(email) => Email {
                message_id: Some(item.id.clone()),
                ..email
            },
            Err(error) => {
                tracing::error!(error = %error, "message cannot be rendered; dropped");
                return self.drop_message(&item.id, "render failed", now).await;
            }
        };
        match self.notifier.send(&email).await {
            Ok(()) => {
                tracing::info!("message delivered");
                crate::telemetry::metrics::delivery("delivered");
                self.queue.mark_delivered(&item.id, self.clock.now()).await
            }
            Err(NotifyError::Permanent(error)) => {
                tracing::warn!(error = %error, "message rejected permanently; dropped");
                self.drop_message(&item.id, "rejected", self.clock.now())
                    .await
            }
            Err(NotifyError::Transient(error)) => {
                let attempts = item.attempts + 1;
                let backoff = self
                    .settings
                    .initial_backoff_ms
                    .saturating_mul(1u64 << attempts.min(20).saturating_sub(1))
                    .min(self.settings.max_backoff_ms);
                let next = self.clock.now() + chrono_ms(backoff);
                tracing::warn!(error = %error, retry_in_ms = backoff, "delivery failed; will retry");
                self.queue
                    .reschedule(&item.id, attempts, next, &error)
                    .await
            }
        }
    }

    fn render(
        &self,
        message: &Outgoing,
        to: String,
        now: DateTime<Utc>,
    ) -> Result<Email, super::templates::TemplateError> {
        render(&self.templates, &self.mail, message, to, now)
    }
}

/// The e-mail a queued message becomes: its locale's templates, dates in its locale's format,
/// the client named from its `User-Agent`, the report link from `[mail]`.
pub fn render(
    templates: &Templates,
    mail: &MailSettings,
    message: &Outgoing,
    to: String,
    now: DateTime<Utc>,
) -> Result<Email, super::templates::TemplateError> {
    let locale = templates.resolve_locale(&message.locale);
    let fmt = |at: DateTime<Utc>| templates.format_datetime(&locale, at);
    let (kind, context) = if message.kind == MessageKind::PasswordChanged.name() {
        (
            MessageKind::PasswordChanged,
            minijinja::context! {
                changed_at => fmt(message.changed_at.unwrap_or(now)),
                masked_login => message.masked_login.clone(),
            },
        )
    } else {
        let expires_at = message.code_expires_at.unwrap_or(now);
        // Rounded up: "expires in 10 minutes" for a fresh 10-minute code, never "9".
        let minutes = ((expires_at - now).num_seconds() + 59)
            .div_euclid(60)
            .max(1);
        let client = message
            .user_agent
            .as_deref()
            .and_then(super::client::describe);
        let report_url = message
            .report_code
            .as_deref()
            .and_then(|code| mail.report_link(code));
        (
            MessageKind::VerificationCode,
            minijinja::context! {
                code => message.code.clone().unwrap_or_default(),
                expires_in_minutes => minutes,
                expires_at => fmt(expires_at),
                masked_login => message.masked_login.clone(),
                requested_at => message.requested_at.map(fmt),
                client_ip => message.client_ip.clone(),
                client_name => client.as_ref().map(|c| c.name.clone()),
                client_os => client.and_then(|c| c.os),
                report_code => message.report_code.clone(),
                report_url => report_url,
                // Only long codes are mailed in hyphenated groups (`group_long_code`).
                long_code => message.code.as_deref().is_some_and(|code| code.contains('-')),
            },
        )
    };
    let rendered = templates.render(kind, &locale, context)?;
    Ok(Email {
        to,
        kind,
        locale,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        message_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(keys: &str) -> MessageSealer {
        MessageSealer::new(&KeyRing::parse(keys).unwrap())
    }

    fn message() -> Outgoing {
        Outgoing {
            kind: "verification_code".into(),
            to: Some("john@example.com".into()),
            locale: "en".into(),
            masked_login: "j***n@e***.com".into(),
            code: Some("493817".into()),
            code_expires_at: None,
            changed_at: None,
            report_code: None,
            requested_at: None,
            client_ip: None,
            user_agent: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_row_sealed_before_who_asked_existed_still_opens_and_renders() {
        // The JSON an older version sealed: none of the fields added since.
        let old = serde_json::json!({
            "kind": "verification_code",
            "to": "john@example.com",
            "locale": "de",
            "masked_login": "j***n@e***.com",
            "code": "493817",
            "code_expires_at": "2026-12-02T03:14:00Z",
            "changed_at": null,
        });
        let s = sealer(K1);
        let message: Outgoing = serde_json::from_value(old).unwrap();
        assert!(message.report_code.is_none() && message.requested_at.is_none());
        let sealed = s.seal(&message).unwrap();
        let opened = s.open("verification_code", &sealed).unwrap();
        let email = render(
            &Templates::embedded(),
            &MailSettings::default(),
            &opened,
            "john@example.com".into(),
            at("2026-12-02T03:04:00Z"),
        )
        .unwrap();
        assert!(email.text.contains("493817"));
        assert!(
            email.text.contains("02.12.2026, 03:14 UTC"),
            "{}",
            email.text
        );
        assert!(!email.text.contains("IP-Adresse"));
    }

    #[test]
    fn the_code_mail_says_who_asked_and_how_to_report_it() {
        let message = Outgoing {
            code_expires_at: Some(at("2026-12-02T03:19:00Z")),
            report_code: Some("RPT-42 x".into()),
            requested_at: Some(at("2026-12-02T03:04:00Z")),
            client_ip: Some("203.0.113.7".into()),
            user_agent: Some(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
                    .into(),
            ),
            ..message()
        };
        let mail = MailSettings {
            report_url: Some("https://id.example.com/recovery/report?code={code}".into()),
        };
        let email = render(
            &Templates::embedded(),
            &mail,
            &message,
            "john@example.com".into(),
            at("2026-12-02T03:04:00Z"),
        )
        .unwrap();
        for body in [&email.text, &email.html] {
            assert!(body.contains("2 December 2026, 03:04 UTC"), "{body}");
            assert!(body.contains("203.0.113.7"), "{body}");
            assert!(body.contains("Firefox on Windows"), "{body}");
            assert!(body.contains("RPT-42 x"), "{body}");
            assert!(body.contains("15 minutes"), "{body}");
        }
        assert!(
            email
                .text
                .contains("https://id.example.com/recovery/report?code=RPT-42%20x")
        );
        assert!(email.html.contains(
            "href=\"https:&#x2f;&#x2f;id.example.com&#x2f;recovery&#x2f;report?code=RPT-42%20x\""
        ));

        // Unknown client and address, no report code: the lines say so, and no link appears.
        let bare = Outgoing {
            client_ip: None,
            user_agent: Some("<script>".into()),
            report_code: None,
            ..message
        };
        let email = render(
            &Templates::embedded(),
            &mail,
            &bare,
            "john@example.com".into(),
            at("2026-12-02T03:04:00Z"),
        )
        .unwrap();
        assert!(email.text.contains("IP address: unknown"), "{}", email.text);
        assert!(email.text.contains("Device: unknown client"));
        assert!(!email.text.contains("<script>") && !email.html.contains("<script>"));
        assert!(!email.html.contains("href") && !email.text.contains("report?code"));
    }

    const K1: &str = "first-key-0123456789-0123456789-0123456789";
    const K2: &str = "second-key-0123456789-0123456789-0123456789";

    #[test]
    fn a_sealed_message_holds_no_plaintext_code_and_opens_again() {
        let s = sealer(K1);
        let sealed = s.seal(&message()).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"493817"));
        assert!(!sealed.windows(8).any(|w| w == b"john@exa"));
        assert_eq!(
            s.open("verification_code", &sealed)
                .unwrap()
                .code
                .as_deref(),
            Some("493817")
        );
    }

    #[test]
    fn a_message_sealed_as_one_kind_does_not_open_as_another() {
        let s = sealer(K1);
        let sealed = s.seal(&message()).unwrap();
        assert!(s.open("password_changed", &sealed).is_none());
    }

    #[test]
    fn after_rotation_old_messages_still_open() {
        let sealed = sealer(K1).seal(&message()).unwrap();
        assert!(
            sealer(&format!("{K2},{K1}"))
                .open("verification_code", &sealed)
                .is_some()
        );
        assert!(sealer(K2).open("verification_code", &sealed).is_none());
    }
}
