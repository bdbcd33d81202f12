//! What the domain needs from the account database: the records, the repository, the durable
//! delivery queue and the transactional outbox. `db` implements all of them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A sealed message for the delivery queue (see `notify::queue`): opaque to the database.
#[derive(Debug, Clone)]
pub struct SealedDelivery {
    pub id: String,
    pub kind: String,
    pub ciphertext: Vec<u8>,
    /// Undelivered after this, the message is dropped (a code past its lifetime is useless).
    pub not_after: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The account it is for (an erasure drops its queued mail); `None` for a decoy.
    pub account_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    /// As typed at creation.
    pub login_id: String,
    pub email: String,
    pub phone: Option<String>,
    pub password_hash: String,
    pub password_changed_at: Option<DateTime<Utc>>,
    /// Bumped by every password change (not by a rehash).
    pub password_version: i64,
    pub created_at: DateTime<Utc>,
    /// The known device: the HMAC of the device token the last reset handed out, and when it
    /// expires. One per account: every reset replaces it.
    pub device_token: Option<(String, DateTime<Utc>)>,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: String,
    pub login_id: String,
    pub login_normalized: String,
    pub email: String,
    pub phone: Option<String>,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// One line of the audit trail. Never holds a secret: logins appear as keyed hashes.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub event: &'static str,
    pub account_id: Option<String>,
    pub flow_id: Option<String>,
    pub login_key: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub result: &'static str,
    pub detail: Option<String>,
}

/// Everything a successful reset writes, in one transaction.
#[derive(Debug, Clone)]
pub struct ResetCommit {
    pub account_id: String,
    pub flow_id: String,
    /// The account's password version when the flow started: a reset applies only if no other
    /// change happened since (no clock comparison, so precision of stored times is moot).
    pub expected_password_version: i64,
    pub new_hash: String,
    pub changed_at: DateTime<Utc>,
    /// History rows to keep (current + depth).
    pub history_keep: u32,
    pub event_id: String,
    pub event_payload: String,
    pub audit: AuditRecord,
    pub notice: Option<SealedDelivery>,
    /// The HMAC of the new device token and its expiry: it replaces the account's earlier one.
    pub device_token: (String, DateTime<Utc>),
}

/// Everything an erasure writes, in one transaction.
#[derive(Debug, Clone)]
pub struct AccountErasure {
    pub account_id: String,
    /// Keyed hash of the login: audit rows written while the login was unknown (or during a
    /// report freeze) carry only this, and lose their client address and agent too.
    pub login_key: Option<String>,
    pub at: DateTime<Utc>,
    pub event_id: String,
    pub event_payload: String,
    /// The record of the erasure itself (no client address or agent).
    pub audit: AuditRecord,
}

/// What the service stores about one account, for a data-access request. Never a hash.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountData {
    pub account_id: String,
    pub login_id: String,
    pub email: String,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub password_changed_at: Option<DateTime<Utc>>,
    /// When each remembered password was set (newest first); the hashes stay behind.
    pub password_set_at: Vec<DateTime<Utc>>,
    /// Until when the known device's token (handed out by the last reset) is honoured; the
    /// token's keyed hash stays behind.
    pub device_token_expires_at: Option<DateTime<Utc>>,
    /// The audit trail of the account, oldest first.
    pub audit: Vec<AuditEntry>,
}

/// One audit row as exported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub event: String,
    pub flow_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub result: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetOutcome {
    Applied,
    /// The password changed after this flow started (another reset won): nothing written.
    Stale,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    #[error("already exists")]
    Conflict,
    #[error("database error: {0}")]
    Internal(#[source] anyhow::Error),
}

#[async_trait]
pub trait AccountRepository: Send + Sync + 'static {
    /// `Conflict` if the case-folded login is taken.
    async fn create_account(&self, account: NewAccount) -> Result<Account, RepoError>;
    async fn find_by_login(&self, login_normalized: &str) -> Result<Option<Account>, RepoError>;
    async fn find_by_id(&self, account_id: &str) -> Result<Option<Account>, RepoError>;
    /// Hashes of the newest `limit` passwords, newest (the current one) first.
    async fn password_history(
        &self,
        account_id: &str,
        limit: u32,
    ) -> Result<Vec<String>, RepoError>;
    /// Rehash on login: replaces the hash only if it is still `old_hash`.
    async fn upgrade_hash(
        &self,
        account_id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, RepoError>;
    async fn commit_reset(&self, commit: ResetCommit) -> Result<ResetOutcome, RepoError>;
    /// Forgets the account's device token (a reported unrequested recovery).
    async fn revoke_device_token(&self, account_id: &str) -> Result<(), RepoError>;
    async fn record_audit(&self, record: AuditRecord) -> Result<(), RepoError>;
    /// The audit row and an outbox event, in one transaction (the flow events for SIEMs).
    async fn record_audit_with_event(
        &self,
        record: AuditRecord,
        event: OutboxEvent,
    ) -> Result<(), RepoError>;
    /// A reported unrequested recovery ("it wasn't me"), in one transaction: the account's
    /// password version is bumped (so no reset of a flow started before the report can
    /// commit, and report codes mailed before it stop working), and the audit row and the
    /// `recovery.reported` event are written.
    async fn record_report(
        &self,
        account_id: &str,
        record: AuditRecord,
        event: OutboxEvent,
    ) -> Result<(), RepoError>;
    /// Deletes the account and its password history, drops its queued mail, strips its audit
    /// rows of client address and agent, and writes the `account.deleted` event, all at once.
    /// `false`: no such account (nothing written).
    async fn erase_account(&self, erasure: AccountErasure) -> Result<bool, RepoError>;
    /// `None`: no such account. The audit rows are the same ones `erase_account` strips: those
    /// of the account and those of `login_key` (the keyed hash of its login).
    async fn export_account(
        &self,
        account_id: &str,
        login_key: Option<&str>,
    ) -> Result<Option<AccountData>, RepoError>;
}

/// A queued message as stored.
#[derive(Debug, Clone)]
pub struct QueuedDelivery {
    pub id: String,
    pub kind: String,
    pub ciphertext: Vec<u8>,
    pub not_after: DateTime<Utc>,
    pub attempts: u32,
}

/// The durable delivery queue.
#[async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    async fn enqueue(&self, delivery: SealedDelivery) -> Result<(), RepoError>;
    /// Leases up to `limit` due messages to this worker until `lease_until`.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<QueuedDelivery>, RepoError>;
    async fn mark_delivered(&self, id: &str, now: DateTime<Utc>) -> Result<(), RepoError>;
    async fn mark_dropped(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError>;
    async fn reschedule(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), RepoError>;
}

/// A row of the transactional outbox, waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub event_id: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// The outbox written in the same transaction as the change it announces.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Oldest unpublished events first.
    async fn unpublished(&self, limit: u64) -> Result<Vec<OutboxEvent>, RepoError>;
    async fn mark_published(&self, event_id: &str, at: DateTime<Utc>) -> Result<(), RepoError>;
}
