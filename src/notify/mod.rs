//! Delivery of messages to people: the `Notifier` trait and its implementations, the mail
//! templates, and the durable queue that sits between the flow and the notifier (so neither
//! latency nor failure of delivery can reveal whether an account exists).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

pub mod client;
pub mod dates;
pub mod events;
pub mod plural;
pub mod queue;
pub mod report_link;
pub mod smtp;
pub mod templates;
pub mod webhooks;

pub use queue::{DeliveryWorker, MessageSealer, NoticeQueue, Outgoing};
pub use templates::{MessageKind, RenderedMessage, Templates};

/// A rendered e-mail ready to hand to a transport.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub kind: MessageKind,
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Left-hand part of the Message-ID, the same for every attempt of one queued message: a
    /// copy sent again because the relay's acknowledgement was lost (or recorded too late, as
    /// when the database or the replica went down just after the handover) carries the same
    /// Message-ID, so mail systems and readers can drop it. `None`: a fresh random one.
    pub message_id: Option<String>,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body carries the code: never print it through Debug.
        f.debug_struct("Email")
            .field("to", &crate::secrets::masking::mask_email(&self.to))
            .field("kind", &self.kind)
            .field("locale", &self.locale)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying later (connection refused, 4xx from SMTP, timeout).
    #[error("temporary delivery failure: {0}")]
    Transient(String),
    /// Retrying will not help (5xx from SMTP, invalid address).
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> Result<(), NotifyError>;
}

/// The development notifier: prints each message on standard error for the developer to read
/// the code. It deliberately bypasses the tracing pipeline (which must never carry a code), and
/// the server warns loudly at start that it is not for production.
#[derive(Debug, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn send(&self, email: &Email) -> Result<(), NotifyError> {
        eprintln!(
            "\n----- [log notifier: development only] message to {} -----\nSubject: {}\n\n{}\n----- end of message -----\n",
            email.to, email.subject, email.text
        );
        Ok(())
    }
}

/// Keeps every message in memory: for tests, which read the code from it.
#[derive(Debug, Default, Clone)]
pub struct CapturingNotifier {
    sent: Arc<Mutex<Vec<Email>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl CapturingNotifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn messages(&self) -> Vec<Email> {
        self.sent
            .lock()
            .map(|sent| sent.clone())
            .unwrap_or_default()
    }

    /// Waits until `count` messages were sent to `to`, or `timeout` passes.
    pub async fn wait_for(&self, to: &str, count: usize, timeout: Duration) -> Vec<Email> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let matching: Vec<Email> = self.messages().into_iter().filter(|m| m.to == to).collect();
            if matching.len() >= count || tokio::time::Instant::now() >= deadline {
                return matching;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

#[async_trait]
impl Notifier for CapturingNotifier {
    async fn send(&self, email: &Email) -> Result<(), NotifyError> {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(email.clone());
        }
        self.changed.notify_waiters();
        Ok(())
    }
}
