//! A store that fails on demand, wrapped around a real one: for the UNAVAILABLE and INTERNAL
//! paths of every RPC without stopping a real backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use recovery_service::recovery::captcha::CaptchaRecord;
use recovery_service::recovery::flow::Flow;
use recovery_service::store::{EphemeralStore, MemoryStore, RateDecision, StoreError, Versioned};

/// A test app whose short-lived store can be made to fail.
pub async fn spawn_app_on_faulty_store() -> (super::TestApp, FaultyStore) {
    let store = FaultyStore::new();
    let overrides = recovery_service::server::Overrides {
        store: Some(Arc::new(store.clone())),
        ..Default::default()
    };
    (super::spawn_app_with(|_| {}, overrides).await, store)
}

#[derive(Clone, Default)]
pub struct FaultyStore {
    inner: Arc<MemoryStore>,
    mode: Arc<AtomicU8>,
    flow_reads: Arc<AtomicUsize>,
    report_codes_put: Arc<AtomicUsize>,
    /// Calls of `delete_flow` that fail (UNAVAILABLE) before it works again.
    failing_flow_deletes: Arc<AtomicUsize>,
    /// `account_flows` answers nothing (an index lost in the store).
    lose_account_flows: Arc<std::sync::atomic::AtomicBool>,
}

const HEALTHY: u8 = 0;
const UNAVAILABLE: u8 = 1;
const BROKEN: u8 = 2;

impl FaultyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times a flow was read so far.
    pub fn flow_reads(&self) -> usize {
        self.flow_reads.load(Ordering::SeqCst)
    }

    /// How many report codes were written so far.
    pub fn report_codes_put(&self) -> usize {
        self.report_codes_put.load(Ordering::SeqCst)
    }

    /// The next `calls` deletions of a flow fail as if the store were down.
    pub fn fail_flow_deletes(&self, calls: usize) {
        self.failing_flow_deletes.store(calls, Ordering::SeqCst);
    }

    /// `account_flows` forgets every flow (or remembers again).
    pub fn lose_account_flows(&self, lose: bool) {
        self.lose_account_flows.store(lose, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.mode.store(HEALTHY, Ordering::SeqCst);
    }

    pub fn go_down(&self) {
        self.mode.store(UNAVAILABLE, Ordering::SeqCst);
    }

    pub fn break_internally(&self) {
        self.mode.store(BROKEN, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            UNAVAILABLE => Err(StoreError::Unavailable(anyhow::anyhow!(
                "connection refused (injected)"
            ))),
            BROKEN => Err(StoreError::Internal(anyhow::anyhow!(
                "corrupt value with secret-looking detail 12345"
            ))),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl EphemeralStore for FaultyStore {
    async fn put_captcha(&self, captcha: &CaptchaRecord, ttl: Duration) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_captcha(captcha, ttl).await
    }
    async fn take_captcha(&self, id: &str) -> Result<Option<CaptchaRecord>, StoreError> {
        self.check()?;
        self.inner.take_captcha(id).await
    }
    async fn insert_flow(&self, flow: &Flow, ttl: Duration) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert_flow(flow, ttl).await
    }
    async fn add_account_flow(
        &self,
        owner: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.add_account_flow(owner, flow_id, ttl).await
    }
    async fn load_flow(&self, id: &str) -> Result<Option<Versioned<Flow>>, StoreError> {
        self.check()?;
        self.flow_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_flow(id).await
    }
    async fn replace_flow(
        &self,
        flow: &Flow,
        expected_version: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.replace_flow(flow, expected_version, ttl).await
    }
    async fn delete_flow(&self, id: &str) -> Result<bool, StoreError> {
        self.check()?;
        let failing =
            self.failing_flow_deletes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::Unavailable(anyhow::anyhow!(
                "connection refused (injected)"
            )));
        }
        self.inner.delete_flow(id).await
    }
    async fn account_flows(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        self.check()?;
        if self.lose_account_flows.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        self.inner.account_flows(account_id).await
    }
    async fn put_token(
        &self,
        token_mac: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_token(token_mac, flow_id, ttl).await
    }
    async fn token_flow(&self, token_mac: &str) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.token_flow(token_mac).await
    }
    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.claim_once(key, ttl).await
    }
    async fn put_cached(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_cached(key, value, ttl).await
    }
    async fn cached(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.cached(key).await
    }
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StoreError> {
        self.check()?;
        self.inner.hit(key, limit, window).await
    }
    async fn hits(&self, key: &str) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.hits(key).await
    }
    async fn clear_limit(&self, key: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.clear_limit(key).await
    }
    async fn set_live_code(
        &self,
        owner: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_live_code(owner, flow_id, ttl).await
    }
    async fn live_code(&self, owner: &str) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.live_code(owner).await
    }
    async fn put_report_code(
        &self,
        report_mac: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.report_codes_put.fetch_add(1, Ordering::SeqCst);
        self.inner.put_report_code(report_mac, owner, ttl).await
    }
    async fn take_report_code(&self, report_mac: &str) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.take_report_code(report_mac).await
    }
    async fn freeze_recovery(&self, owner: &str, ttl: Duration) -> Result<(), StoreError> {
        self.check()?;
        self.inner.freeze_recovery(owner, ttl).await
    }
    async fn recovery_frozen(&self, owner: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.recovery_frozen(owner).await
    }
    async fn unfreeze_recovery(&self, owner: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.unfreeze_recovery(owner).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }
}

/// A mailbox that can be made unreachable: while down, every send fails as a temporary error
/// (like a refused SMTP connection), so the queue must retry.
#[derive(Clone, Default)]
pub struct FlakyNotifier {
    pub inbox: recovery_service::notify::CapturingNotifier,
    down: Arc<std::sync::atomic::AtomicBool>,
    pub failures: Arc<std::sync::atomic::AtomicUsize>,
}

impl FlakyNotifier {
    pub fn down() -> Self {
        let notifier = Self::default();
        notifier.down.store(true, Ordering::SeqCst);
        notifier
    }

    pub fn bring_up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl recovery_service::notify::Notifier for FlakyNotifier {
    async fn send(
        &self,
        email: &recovery_service::notify::Email,
    ) -> Result<(), recovery_service::notify::NotifyError> {
        if self.down.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(recovery_service::notify::NotifyError::Transient(
                "connection refused (injected)".into(),
            ));
        }
        self.inbox.send(email).await
    }
}
