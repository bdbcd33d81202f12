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

use std::sync::Arc;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::templates::{MessageKind, Templates};
use super::{Email, Notifier, NotifyError};
use crate::clock::Clock;
use crate::recovery::ports::{
    Deliveries, DeliveryQueue, Notice, QueuedDelivery, RepoError, SealedDelivery,
};
use crate::secrets::keys::{KeyRing, random_bytes};

/// What a queued message says, before sealing.
#[derive(Clone, Serialize, Deserialize)]
pub struct Outgoing {
    pub kind: String,
    /// `None`: a decoy for an unknown login, dropped by the worker.
    pub to: Option<String>,
    pub locale: String,
    pub masked_login: String,
    pub code: Option<String>,
    /// The "it wasn't me" report code mailed with a verification code.
    #[serde(default)]
    pub report_code: Option<String>,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub changed_at: Option<DateTime<Utc>>,
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
            report_code: notice
                .report_code
                .as_ref()
                .map(|c| c.expose_secret().to_owned()),
            code_expires_at: notice.code.as_ref().map(|_| notice.expires_at),
            changed_at: notice.changed_at,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliverySettings {
    /// How often the worker looks for due messages when nothing woke it.
    pub poll_interval_ms: u64,
    pub batch_size: u64,
    /// First retry after this; doubles per attempt up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A claimed message is leased this long (another replica takes it over after).
    pub lease_ms: u64,
    /// How long a password-changed notice is retried.
    pub notice_lifetime_secs: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1_000,
            batch_size: 32,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            lease_ms: 60_000,
            notice_lifetime_secs: 7 * 24 * 3600,
        }
    }
}

/// Sends what the queue holds.
pub struct DeliveryWorker {
    pub queue: Arc<dyn DeliveryQueue>,
    pub sealer: MessageSealer,
    pub templates: Arc<Templates>,
    pub notifier: Arc<dyn Notifier>,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
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
    pub async fn run_once(&self) -> Result<usize, RepoError> {
        let now = self.clock.now();
        let lease_until = now + chrono_ms(self.settings.lease_ms);
        let batch = self
            .queue
            .claim_due(now, lease_until, self.settings.batch_size)
            .await?;
        let count = batch.len();
        for item in batch {
            self.handle(item).await?;
        }
        Ok(count)
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
    async fn handle(&self, item: QueuedDelivery) -> Result<(), RepoError> {
        let now = self.clock.now();
        if now >= item.not_after {
            tracing::info!("message expired before delivery; dropped");
            return self.drop_message(&item.id, "expired", now).await;
        }
        let Some(message) = self.sealer.open(&item.kind, &item.ciphertext) else {
            tracing::warn!("queued message cannot be opened (secret rotated away?); dropped");
            return self.drop_message(&item.id, "unreadable", now).await;
        };
        let Some(to) = message.to.clone() else {
            // A decoy queued for an unknown login: dropped as quietly as it was queued.
            return self.drop_message(&item.id, "no recipient", now).await;
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
        let fmt = |at: DateTime<Utc>| at.format("%Y-%m-%d %H:%M UTC").to_string();
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
            (
                MessageKind::VerificationCode,
                minijinja::context! {
                    code => message.code.clone().unwrap_or_default(),
                    report_code => message.report_code.clone().unwrap_or_default(),
                    expires_in_minutes => minutes,
                    expires_at => fmt(expires_at),
                    masked_login => message.masked_login.clone(),
                },
            )
        };
        let locale = self.templates.resolve_locale(&message.locale);
        let rendered = self.templates.render(kind, &locale, context)?;
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
            report_code: None,
            code_expires_at: None,
            changed_at: None,
        }
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
