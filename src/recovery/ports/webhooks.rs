//! What webhook delivery needs from the database: the outbox fanned out into one
//! delivery row per (event, endpoint), claimed with a lease, finished or rescheduled. `db`
//! implements it; `notify::webhooks` drives it. A domain port for the same reason as
//! `EventSink`: `db` may not import `notify`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::RepoError;

/// One event owed to one endpoint, as claimed for an attempt.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub id: i64,
    pub endpoint: String,
    pub event_id: String,
    pub event_type: String,
    /// The account the event is about: events of one account go out in outbox order.
    pub aggregate_id: String,
    /// The outbox row's JSON payload, sent as `data`.
    pub payload: String,
    pub event_created_at: DateTime<Utc>,
    /// Attempts already made (0 on the first).
    pub attempts: u32,
    /// When the row was first fanned out: the give-up age counts from here.
    pub created_at: DateTime<Utc>,
}

/// Deliveries waiting for one endpoint, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct WebhookBacklog {
    pub endpoint: String,
    pub pending: u64,
    pub oldest_age_secs: f64,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Remembers `endpoint` if it is new: it is owed the events written from now on (the
    /// outbox rows already there are not replayed to it).
    async fn register_endpoint(&self, endpoint: &str, now: DateTime<Utc>) -> Result<(), RepoError>;

    /// Creates the missing delivery rows of `endpoint` for outbox events of `event_types`, oldest
    /// first, at most `limit`; returns how many it created. Rows committed out of id order are
    /// picked up late rather than skipped: only ids older than `settled_before` are ever passed
    /// over for good.
    async fn fan_out(
        &self,
        endpoint: &str,
        event_types: &[String],
        now: DateTime<Utc>,
        settled_before: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64, RepoError>;

    /// Leases up to `limit` due deliveries of `endpoint` until `lease_until`: only the oldest
    /// pending delivery of each account is ever due, so an account's events go out in order and
    /// one stuck account does not hold the others.
    async fn claim_webhooks(
        &self,
        endpoint: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<WebhookDelivery>, RepoError>;

    async fn webhook_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<(), RepoError>;

    async fn webhook_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), RepoError>;

    /// Gives the delivery up (too old) and writes a `webhook.abandoned` audit row with it.
    async fn webhook_abandoned(
        &self,
        delivery: &WebhookDelivery,
        attempts: u32,
        now: DateTime<Utc>,
        error: &str,
    ) -> Result<(), RepoError>;

    async fn webhook_backlog(&self, now: DateTime<Utc>) -> Result<Vec<WebhookBacklog>, RepoError>;
}
