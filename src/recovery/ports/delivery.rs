//! How the flow tells a person something: it hands a `Notice` to `Deliveries` and is done. How
//! the notice is sealed at rest, queued, rendered and sent is `notify`'s business.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::accounts::{RepoError, SealedDelivery};

/// The kinds of message the service sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A one-time code for password recovery. Context: `code`, `expires_in_minutes`
    /// (integer), `expires_at`, `masked_login`; who asked: `requested_at`, `client_ip`,
    /// `client_name`, `client_os`; "it wasn't me": `report_code`, `report_url` (each may be
    /// none).
    VerificationCode,
    /// Notice that the password was changed. Context: `changed_at`, `masked_login`.
    PasswordChanged,
}

impl MessageKind {
    /// Every kind, e.g. for validating a template directory.
    pub const ALL: [MessageKind; 2] = [MessageKind::VerificationCode, MessageKind::PasswordChanged];

    /// The file stem used for this kind's templates.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::VerificationCode => "verification_code",
            MessageKind::PasswordChanged => "password_changed",
        }
    }
}

/// What the flow wants a person to know. No `Debug`: it carries the code, and nothing may
/// print it by accident.
pub struct Notice {
    pub kind: MessageKind,
    /// Whose mail this is, so an erasure can drop it (`None` for a decoy).
    pub account_id: Option<String>,
    /// `None`: a decoy for an unknown login (the same writes happen; the worker drops it).
    pub to: Option<String>,
    pub locale: String,
    pub masked_login: String,
    pub code: Option<SecretString>,
    /// The single-use "it wasn't me" code mailed with a verification code
    /// (`ReportUnrequestedRecovery`); `None` for other messages.
    pub report_code: Option<SecretString>,
    /// Undelivered after this, the notice is dropped; for a code, also when the code dies.
    pub expires_at: DateTime<Utc>,
    pub changed_at: Option<DateTime<Utc>>,
    /// "Who asked", for the code mail: when the code was asked for (the `SendVerificationCode`
    /// that issued it), ...
    pub requested_at: Option<DateTime<Utc>>,
    /// ... from which address (the client IP the service trusts, after trusted proxies) ...
    pub client_ip: Option<String>,
    /// ... and with which client: the caller's `User-Agent` as received (already capped). The
    /// mail shows only the product parsed from it, never the string.
    pub user_agent: Option<String>,
}

/// The durable way out. Queueing is durable before `send` returns, so an RPC answers in the
/// same time whether or not the account exists and whatever the mail server does.
#[async_trait]
pub trait Deliveries: Send + Sync + 'static {
    /// Queues the notice (and wakes the worker).
    async fn send(&self, notice: &Notice, now: DateTime<Utc>) -> Result<(), RepoError>;

    /// The notice as the queue stores it, for a caller that writes it in its own transaction
    /// (the reset commit). Opaque to the caller.
    fn prepare(&self, notice: &Notice, now: DateTime<Utc>)
    -> Result<SealedDelivery, anyhow::Error>;

    /// Tells the worker that a notice written through `prepare` is waiting.
    fn wake(&self);
}
