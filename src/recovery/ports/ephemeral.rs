//! The short-lived store the flow needs (captchas, flows, token index, rate-limit counters).
//!
//! Every method is one atomic operation in the backend, so no read-modify-write ever happens
//! from Rust: flows change only by compare-and-swap on their version, captchas are taken (read
//! and deleted) in one step.

use std::time::Duration;

use async_trait::async_trait;

use crate::recovery::captcha::CaptchaRecord;
use crate::recovery::flow::Flow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached (retryable; nothing was changed).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    #[error("store error: {0}")]
    Internal(#[source] anyhow::Error),
}

/// A stored value with the version a compare-and-swap must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { retry_after: Duration },
}

#[async_trait]
pub trait EphemeralStore: Send + Sync + 'static {
    async fn put_captcha(&self, captcha: &CaptchaRecord, ttl: Duration) -> Result<(), StoreError>;

    /// Reads and deletes in one step: the first answer burns the captcha.
    async fn take_captcha(&self, id: &str) -> Result<Option<CaptchaRecord>, StoreError>;

    /// Writes a new flow (version 1).
    async fn insert_flow(&self, flow: &Flow, ttl: Duration) -> Result<(), StoreError>;

    /// Adds a flow to its owner's set of open flows (kept at least `ttl`).
    async fn add_account_flow(
        &self,
        owner: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// `insert_flow` and `add_account_flow` (under `flow.owner()`) for a new flow, in as few
    /// round trips as the backend allows (`StartRecovery`'s hot path).
    async fn insert_indexed_flow(&self, flow: &Flow, ttl: Duration) -> Result<(), StoreError> {
        self.insert_flow(flow, ttl).await?;
        self.add_account_flow(&flow.owner(), &flow.id, ttl).await
    }

    async fn load_flow(&self, id: &str) -> Result<Option<Versioned<Flow>>, StoreError>;

    /// Replaces the flow if its version is still `expected_version` (then it becomes
    /// `expected_version + 1`). `false`: someone else changed it first.
    async fn replace_flow(
        &self,
        flow: &Flow,
        expected_version: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Removes the flow; `true` if this call removed a live one (of two deletes at once, one).
    async fn delete_flow(&self, id: &str) -> Result<bool, StoreError>;

    /// Ids of the flows opened for an account (some may have ended since).
    async fn account_flows(&self, account_id: &str) -> Result<Vec<String>, StoreError>;

    /// Points a reset token's keyed hash at its flow.
    async fn put_token(
        &self,
        token_mac: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    async fn token_flow(&self, token_mac: &str) -> Result<Option<String>, StoreError>;

    /// Counts one hit in a fixed window; `Limited` once more than `limit` hits fell in it.
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StoreError>;

    /// How many hits the live window of `key` holds (0 when none), without counting one:
    /// whether a budget is already spent.
    async fn hits(&self, key: &str) -> Result<u64, StoreError>;

    /// Marks `key` as used until `ttl` runs out; `true` only for the first caller. What makes
    /// a proof-of-work solution single use.
    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Caches a value shared by every replica (breached-password ranges).
    async fn put_cached(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;

    async fn cached(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Forgets a rate-limit counter (an operator lifting a block).
    async fn clear_limit(&self, key: &str) -> Result<(), StoreError>;

    /// Names the flow whose code is the account's live one (kept `ttl`, the code's lifetime):
    /// a code of any other flow of the owner no longer verifies (one live code per account).
    async fn set_live_code(
        &self,
        owner: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The flow named by the last `set_live_code` of `owner`, while it lasts.
    async fn live_code(&self, owner: &str) -> Result<Option<String>, StoreError>;

    /// Points the keyed hash of a mailed report code ("it wasn't me") at its account and that
    /// account's password version (`report::ReportedOwner`, an opaque value to the store).
    async fn put_report_code(
        &self,
        report_mac: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Reads and deletes in one step: a report code works once.
    async fn take_report_code(&self, report_mac: &str) -> Result<Option<String>, StoreError>;

    /// Freezes recovery for `owner` for `ttl` (a reported unrequested recovery).
    async fn freeze_recovery(&self, owner: &str, ttl: Duration) -> Result<(), StoreError>;

    async fn recovery_frozen(&self, owner: &str) -> Result<bool, StoreError>;

    /// Lifts a freeze (the operator's `account unblock`).
    async fn unfreeze_recovery(&self, owner: &str) -> Result<(), StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}
