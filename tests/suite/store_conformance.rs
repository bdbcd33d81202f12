//! One suite, every backend: the in-process store, Redis on a single node and Redis Cluster must
//! answer every `EphemeralStore` call the same way, including under concurrency and at expiry.
//!
//! Each behaviour below is an `async fn` taking a fresh store; `backend!` turns the list into one
//! `#[tokio::test]` per behaviour per backend (`memory::…`, `redis_single::…`, `redis_cluster::…`).
//!
//! A Redis backend runs when its variable is set (`common::backend`; `scripts/test.sh` sets them
//! all); if it cannot be reached the test fails and says how to start it. Every test uses its own key prefix (`test:<uuid>:`) and every key it writes has a
//! TTL of at most a minute, so runs never collide and leave nothing behind in a shared Redis.
//!
//! - single node: `RECOVERY_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6379`)
//! - cluster: `RECOVERY_TEST_REDIS_CLUSTER`, comma-separated node URLs (e.g.
//!   `redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003`), started by
//!   `bash scripts/redis-cluster.sh start`.
//! - sentinel: `RECOVERY_TEST_REDIS_SENTINEL` (e.g.
//!   `redis+sentinel://127.0.0.1:7211,127.0.0.1:7212,127.0.0.1:7213/recovery`), a master, a
//!   replica and three sentinels started by `bash scripts/redis-sentinel.sh start`. The fail-over
//!   tests (`sentinel_failover`) start their own private set-up with the same script on free
//!   ports, since they kill masters; they run when `RECOVERY_TEST_REDIS_SENTINEL` is set.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use recovery_service::config::RedisConfig;
use recovery_service::recovery::captcha::CaptchaRecord;
use recovery_service::recovery::flow::{Channel, Flow, FlowSettings, Method};
use recovery_service::store::{EphemeralStore, MemoryStore, RateDecision, RedisStore, StoreError};
use uuid::Uuid;

use crate::common::backend;

/// Short enough to wait out in a test, long enough that a write and the read after it land
/// well inside it.
const SHORT_TTL: Duration = Duration::from_millis(300);
/// Comfortably past `SHORT_TTL`, including Redis's lazy-plus-active expiry.
const PAST_SHORT_TTL: Duration = Duration::from_millis(1_000);
const LONG_TTL: Duration = Duration::from_secs(60);

// Each factory answers `None` when its backend is not wanted (`common::backend`).

async fn memory_store() -> Option<Arc<dyn EphemeralStore>> {
    Some(Arc::new(MemoryStore::new()))
}

async fn redis_single_store() -> Option<Arc<dyn EphemeralStore>> {
    redis_store(
        "RECOVERY_TEST_REDIS_URL",
        backend::redis()?,
        "start one with `redis-server --daemonize yes` (or `docker run -p 6379:6379 redis`)",
    )
    .await
}

async fn redis_cluster_store() -> Option<Arc<dyn EphemeralStore>> {
    redis_store(
        "RECOVERY_TEST_REDIS_CLUSTER",
        backend::cluster()?,
        "start one with `bash scripts/redis-cluster.sh start`",
    )
    .await
}

async fn redis_sentinel_store() -> Option<Arc<dyn EphemeralStore>> {
    redis_store(
        "RECOVERY_TEST_REDIS_SENTINEL",
        backend::sentinel()?,
        "start one with `bash scripts/redis-sentinel.sh start`",
    )
    .await
}

async fn redis_store(
    env: &str,
    url: String,
    how_to_start: &str,
) -> Option<Arc<dyn EphemeralStore>> {
    let config = RedisConfig {
        key_prefix: format!("test:{}:", Uuid::new_v4()),
        ..RedisConfig::default()
    };
    match RedisStore::connect(&url, &config).await {
        Ok(store) => Some(Arc::new(store)),
        // The URL itself is not printed: a CI one may carry a password.
        Err(error) => panic!(
            "cannot reach the Redis named by {env}: {error:#}. \
             Point {env} at a running Redis or {how_to_start}."
        ),
    }
}

fn id() -> String {
    Uuid::new_v4().to_string()
}

fn captcha(id: &str) -> CaptchaRecord {
    CaptchaRecord {
        id: id.to_owned(),
        answer_mac: "a1b2c3".to_owned(),
        expires_at: Utc.with_ymd_and_hms(2026, 11, 28, 8, 5, 0).unwrap(),
    }
}

fn flow(id: &str) -> Flow {
    Flow::start(
        id.to_owned(),
        Some("account-1".to_owned()),
        "login-key".to_owned(),
        vec![Method {
            channel: Channel::Email,
            masked_destination: "j***n@e***.com".to_owned(),
        }],
        "en".to_owned(),
        Utc.with_ymd_and_hms(2026, 11, 28, 8, 0, 0).unwrap(),
        &FlowSettings::default(),
    )
}

/// The same flow after one change, so a test can tell which write is stored.
fn changed(flow: &Flow, sends: u32) -> Flow {
    Flow {
        sends,
        ..flow.clone()
    }
}

mod behaviour {
    use super::*;

    pub async fn the_store_answers_a_ping(store: Arc<dyn EphemeralStore>) {
        store.ping().await.unwrap();
    }

    pub async fn a_captcha_is_taken_only_once(store: Arc<dyn EphemeralStore>) {
        let id = id();
        store.put_captcha(&captcha(&id), LONG_TTL).await.unwrap();
        assert_eq!(store.take_captcha(&id).await.unwrap(), Some(captcha(&id)));
        assert_eq!(store.take_captcha(&id).await.unwrap(), None);
    }

    pub async fn an_unknown_captcha_is_taken_as_none(store: Arc<dyn EphemeralStore>) {
        assert_eq!(store.take_captcha(&id()).await.unwrap(), None);
    }

    pub async fn a_captcha_expires_after_its_ttl(store: Arc<dyn EphemeralStore>) {
        let id = id();
        store.put_captcha(&captcha(&id), SHORT_TTL).await.unwrap();
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(store.take_captcha(&id).await.unwrap(), None);
    }

    pub async fn concurrent_takes_of_one_captcha_yield_it_exactly_once(
        store: Arc<dyn EphemeralStore>,
    ) {
        let id = id();
        store.put_captcha(&captcha(&id), LONG_TTL).await.unwrap();
        let takes = (0..50).map(|_| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move { store.take_captcha(&id).await.unwrap() })
        });
        let taken: Vec<_> = futures_join_all(takes)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(taken, vec![captcha(&id)]);
    }

    pub async fn an_inserted_flow_loads_at_version_one(store: Arc<dyn EphemeralStore>) {
        let flow = flow(&id());
        store.insert_flow(&flow, LONG_TTL).await.unwrap();
        let loaded = store.load_flow(&flow.id).await.unwrap().unwrap();
        assert_eq!(loaded.version, 1);
        assert_eq!(loaded.value, flow);
    }

    /// `StartRecovery`'s one write: the flow at version 1 and its owner's index, whose TTL a
    /// shorter-lived later flow does not cut (one script on a node, two on Cluster).
    pub async fn an_indexed_insert_stores_the_flow_and_its_owner_entry(
        store: Arc<dyn EphemeralStore>,
    ) {
        let owner = id();
        let long_lived = Flow {
            account_id: Some(owner.clone()),
            ..flow(&id())
        };
        let short_lived = Flow {
            account_id: Some(owner.clone()),
            ..flow(&id())
        };
        store
            .insert_indexed_flow(&long_lived, LONG_TTL)
            .await
            .unwrap();
        store
            .insert_indexed_flow(&short_lived, SHORT_TTL)
            .await
            .unwrap();
        let loaded = store.load_flow(&long_lived.id).await.unwrap().unwrap();
        assert_eq!(loaded.version, 1);
        assert_eq!(loaded.value, long_lived);
        let mut expected = vec![long_lived.id.clone(), short_lived.id.clone()];
        expected.sort();
        let mut listed = store.account_flows(&owner).await.unwrap();
        listed.sort();
        assert_eq!(listed, expected);
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(store.load_flow(&short_lived.id).await.unwrap(), None);
        assert_eq!(store.account_flows(&owner).await.unwrap().len(), 2);
        assert!(store.load_flow(&long_lived.id).await.unwrap().is_some());
    }

    pub async fn an_unknown_flow_loads_as_none(store: Arc<dyn EphemeralStore>) {
        assert_eq!(store.load_flow(&id()).await.unwrap(), None);
    }

    pub async fn a_replace_at_the_current_version_stores_the_flow_and_bumps_the_version(
        store: Arc<dyn EphemeralStore>,
    ) {
        let flow = flow(&id());
        store.insert_flow(&flow, LONG_TTL).await.unwrap();
        assert!(
            store
                .replace_flow(&changed(&flow, 1), 1, LONG_TTL)
                .await
                .unwrap()
        );
        assert!(
            store
                .replace_flow(&changed(&flow, 2), 2, LONG_TTL)
                .await
                .unwrap()
        );
        let loaded = store.load_flow(&flow.id).await.unwrap().unwrap();
        assert_eq!(loaded.version, 3);
        assert_eq!(loaded.value, changed(&flow, 2));
    }

    pub async fn a_replace_with_a_stale_version_fails_and_changes_nothing(
        store: Arc<dyn EphemeralStore>,
    ) {
        let flow = flow(&id());
        store.insert_flow(&flow, LONG_TTL).await.unwrap();
        assert!(
            store
                .replace_flow(&changed(&flow, 1), 1, LONG_TTL)
                .await
                .unwrap()
        );
        assert!(
            !store
                .replace_flow(&changed(&flow, 9), 1, LONG_TTL)
                .await
                .unwrap()
        );
        assert!(
            !store
                .replace_flow(&changed(&flow, 9), 7, LONG_TTL)
                .await
                .unwrap()
        );
        let loaded = store.load_flow(&flow.id).await.unwrap().unwrap();
        assert_eq!(loaded.version, 2);
        assert_eq!(loaded.value, changed(&flow, 1));
    }

    pub async fn a_replace_of_a_missing_flow_fails_and_creates_nothing(
        store: Arc<dyn EphemeralStore>,
    ) {
        let flow = flow(&id());
        assert!(!store.replace_flow(&flow, 1, LONG_TTL).await.unwrap());
        assert!(!store.replace_flow(&flow, 0, LONG_TTL).await.unwrap());
        assert_eq!(store.load_flow(&flow.id).await.unwrap(), None);
    }

    pub async fn a_deleted_flow_is_gone_and_cannot_be_replaced(store: Arc<dyn EphemeralStore>) {
        let flow = flow(&id());
        store.insert_flow(&flow, LONG_TTL).await.unwrap();
        assert!(store.delete_flow(&flow.id).await.unwrap());
        assert_eq!(store.load_flow(&flow.id).await.unwrap(), None);
        assert!(!store.replace_flow(&flow, 1, LONG_TTL).await.unwrap());
        // Deleting twice (or an unknown flow) is not an error, and says nothing was removed.
        assert!(!store.delete_flow(&flow.id).await.unwrap());
    }

    pub async fn a_flow_expires_after_its_ttl(store: Arc<dyn EphemeralStore>) {
        let flow = flow(&id());
        store.insert_flow(&flow, SHORT_TTL).await.unwrap();
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(store.load_flow(&flow.id).await.unwrap(), None);
        assert!(!store.replace_flow(&flow, 1, LONG_TTL).await.unwrap());
    }

    pub async fn a_replace_gives_the_flow_its_new_ttl(store: Arc<dyn EphemeralStore>) {
        let flow = flow(&id());
        store.insert_flow(&flow, SHORT_TTL).await.unwrap();
        assert!(
            store
                .replace_flow(&changed(&flow, 1), 1, LONG_TTL)
                .await
                .unwrap()
        );
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(store.load_flow(&flow.id).await.unwrap().unwrap().version, 2);
    }

    pub async fn fifty_concurrent_replaces_from_one_version_have_exactly_one_winner(
        store: Arc<dyn EphemeralStore>,
    ) {
        let flow = flow(&id());
        store.insert_flow(&flow, LONG_TTL).await.unwrap();
        let attempts = (1..=50).map(|sends| {
            let (store, next) = (store.clone(), changed(&flow, sends));
            tokio::spawn(
                async move { (sends, store.replace_flow(&next, 1, LONG_TTL).await.unwrap()) },
            )
        });
        let winners: Vec<u32> = futures_join_all(attempts)
            .await
            .into_iter()
            .filter_map(|(sends, won)| won.then_some(sends))
            .collect();
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        let loaded = store.load_flow(&flow.id).await.unwrap().unwrap();
        assert_eq!(loaded.version, 2);
        assert_eq!(loaded.value, changed(&flow, winners[0]));
    }

    pub async fn an_account_lists_every_flow_opened_for_it_and_no_other(
        store: Arc<dyn EphemeralStore>,
    ) {
        let (owner, other) = (id(), id());
        let (first, second, foreign) = (id(), id(), id());
        store
            .add_account_flow(&owner, &first, LONG_TTL)
            .await
            .unwrap();
        store
            .add_account_flow(&owner, &second, LONG_TTL)
            .await
            .unwrap();
        store
            .add_account_flow(&owner, &second, LONG_TTL)
            .await
            .unwrap();
        store
            .add_account_flow(&other, &foreign, LONG_TTL)
            .await
            .unwrap();
        let mut flows = store.account_flows(&owner).await.unwrap();
        flows.sort();
        let mut expected = vec![first, second];
        expected.sort();
        assert_eq!(flows, expected);
        assert!(store.account_flows(&id()).await.unwrap().is_empty());
    }

    pub async fn an_account_set_is_kept_for_its_longest_ttl_not_shortened(
        store: Arc<dyn EphemeralStore>,
    ) {
        let owner = id();
        let (long_lived, short_lived) = (id(), id());
        store
            .add_account_flow(&owner, &long_lived, LONG_TTL)
            .await
            .unwrap();
        store
            .add_account_flow(&owner, &short_lived, SHORT_TTL)
            .await
            .unwrap();
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(store.account_flows(&owner).await.unwrap().len(), 2);
    }

    pub async fn an_account_set_expires_after_its_ttl(store: Arc<dyn EphemeralStore>) {
        let owner = id();
        store
            .add_account_flow(&owner, &id(), SHORT_TTL)
            .await
            .unwrap();
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert!(store.account_flows(&owner).await.unwrap().is_empty());
    }

    pub async fn a_token_points_at_its_flow(store: Arc<dyn EphemeralStore>) {
        let (token_mac, flow_id) = (id(), id());
        store
            .put_token(&token_mac, &flow_id, LONG_TTL)
            .await
            .unwrap();
        assert_eq!(store.token_flow(&token_mac).await.unwrap(), Some(flow_id));
        assert_eq!(store.token_flow(&id()).await.unwrap(), None);
    }

    pub async fn a_token_expires_after_its_ttl(store: Arc<dyn EphemeralStore>) {
        let token_mac = id();
        store.put_token(&token_mac, &id(), SHORT_TTL).await.unwrap();
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(store.token_flow(&token_mac).await.unwrap(), None);
    }

    pub async fn hits_up_to_the_limit_are_allowed_and_the_next_is_limited_until_the_window_ends(
        store: Arc<dyn EphemeralStore>,
    ) {
        let key = id();
        for _ in 0..3 {
            assert_eq!(
                store.hit(&key, 3, LONG_TTL).await.unwrap(),
                RateDecision::Allowed
            );
        }
        match store.hit(&key, 3, LONG_TTL).await.unwrap() {
            RateDecision::Limited { retry_after } => {
                assert!(retry_after <= LONG_TTL, "retry_after {retry_after:?}");
                assert!(
                    retry_after > LONG_TTL - Duration::from_secs(5),
                    "retry_after {retry_after:?}"
                );
            }
            RateDecision::Allowed => panic!("the fourth hit with limit 3 was allowed"),
        }
        // Another key has its own window.
        assert_eq!(
            store.hit(&id(), 3, LONG_TTL).await.unwrap(),
            RateDecision::Allowed
        );
    }

    pub async fn a_limited_caller_is_told_to_wait_at_least_a_second(
        store: Arc<dyn EphemeralStore>,
    ) {
        let key = id();
        assert_eq!(
            store.hit(&key, 1, SHORT_TTL).await.unwrap(),
            RateDecision::Allowed
        );
        assert_eq!(
            store.hit(&key, 1, SHORT_TTL).await.unwrap(),
            RateDecision::Limited {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    pub async fn a_rate_window_reopens_after_it_expires(store: Arc<dyn EphemeralStore>) {
        let key = id();
        assert_eq!(
            store.hit(&key, 1, SHORT_TTL).await.unwrap(),
            RateDecision::Allowed
        );
        assert!(matches!(
            store.hit(&key, 1, SHORT_TTL).await.unwrap(),
            RateDecision::Limited { .. }
        ));
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(
            store.hit(&key, 1, SHORT_TTL).await.unwrap(),
            RateDecision::Allowed
        );
    }

    pub async fn fifty_concurrent_hits_with_limit_five_allow_exactly_five(
        store: Arc<dyn EphemeralStore>,
    ) {
        let key = id();
        let hits = (0..50).map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.hit(&key, 5, LONG_TTL).await.unwrap() })
        });
        let decisions = futures_join_all(hits).await;
        let allowed = decisions
            .iter()
            .filter(|d| **d == RateDecision::Allowed)
            .count();
        assert_eq!(allowed, 5);
    }

    /// `account unblock`: a cleared counter starts a fresh window; other counters keep theirs.
    pub async fn a_cleared_limit_starts_afresh_and_others_are_untouched(
        store: Arc<dyn EphemeralStore>,
    ) {
        let (key, other) = (id(), id());
        for key in [&key, &other] {
            store.hit(key, 1, LONG_TTL).await.unwrap();
            assert!(matches!(
                store.hit(key, 1, LONG_TTL).await.unwrap(),
                RateDecision::Limited { .. }
            ));
        }
        store.clear_limit(&key).await.unwrap();
        assert_eq!(
            store.hit(&key, 1, LONG_TTL).await.unwrap(),
            RateDecision::Allowed
        );
        assert!(matches!(
            store.hit(&other, 1, LONG_TTL).await.unwrap(),
            RateDecision::Limited { .. }
        ));
        // Clearing a counter that does not exist is not an error.
        store.clear_limit(&id()).await.unwrap();
    }

    /// One live code per account: the last pointer written wins, per owner, until its TTL.
    pub async fn the_live_code_pointer_names_the_last_flow_per_owner_until_it_expires(
        store: Arc<dyn EphemeralStore>,
    ) {
        let (owner, other) = (id(), format!("unknown:{}", id()));
        assert_eq!(store.live_code(&owner).await.unwrap(), None);
        store
            .set_live_code(&owner, "flow-a", LONG_TTL)
            .await
            .unwrap();
        store
            .set_live_code(&other, "flow-x", LONG_TTL)
            .await
            .unwrap();
        store
            .set_live_code(&owner, "flow-b", SHORT_TTL)
            .await
            .unwrap();
        assert_eq!(
            store.live_code(&owner).await.unwrap().as_deref(),
            Some("flow-b")
        );
        assert_eq!(
            store.live_code(&other).await.unwrap().as_deref(),
            Some("flow-x")
        );
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(store.live_code(&owner).await.unwrap(), None);
    }

    /// A report code maps to its owner and is taken once, even by concurrent callers.
    pub async fn a_report_code_is_taken_exactly_once(store: Arc<dyn EphemeralStore>) {
        let (mac, owner) = (id(), id());
        assert_eq!(store.take_report_code(&mac).await.unwrap(), None);
        store.put_report_code(&mac, &owner, LONG_TTL).await.unwrap();
        let takes = (0..20).map(|_| {
            let (store, mac) = (store.clone(), mac.clone());
            tokio::spawn(async move { store.take_report_code(&mac).await.unwrap() })
        });
        let taken: Vec<String> = futures_join_all(takes)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(taken, vec![owner]);
        let expiring = id();
        store
            .put_report_code(&expiring, "o", SHORT_TTL)
            .await
            .unwrap();
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(store.take_report_code(&expiring).await.unwrap(), None);
    }

    /// A freeze holds for its owner only, until its TTL or until lifted.
    pub async fn a_freeze_holds_until_it_expires_or_is_lifted(store: Arc<dyn EphemeralStore>) {
        let (owner, other, brief) = (id(), id(), id());
        assert!(!store.recovery_frozen(&owner).await.unwrap());
        store.freeze_recovery(&owner, LONG_TTL).await.unwrap();
        store.freeze_recovery(&brief, SHORT_TTL).await.unwrap();
        assert!(store.recovery_frozen(&owner).await.unwrap());
        assert!(!store.recovery_frozen(&other).await.unwrap());
        store.unfreeze_recovery(&owner).await.unwrap();
        assert!(!store.recovery_frozen(&owner).await.unwrap());
        // Lifting what is not frozen is not an error.
        store.unfreeze_recovery(&other).await.unwrap();
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert!(!store.recovery_frozen(&brief).await.unwrap());
    }
}

/// Awaits every spawned task, failing the test if one panicked (no `futures` dependency needed).
async fn futures_join_all<T>(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let tasks: Vec<_> = tasks.into_iter().collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("a concurrent store call panicked"));
    }
    results
}

/// One `#[tokio::test]` per behaviour for the backend made by `$store`. Multi-threaded so the
/// concurrency tests really race.
macro_rules! backend {
    ($backend:ident, $store:path) => {
        mod $backend {
            backend!(@tests $store;
                the_store_answers_a_ping,
                a_captcha_is_taken_only_once,
                an_unknown_captcha_is_taken_as_none,
                a_captcha_expires_after_its_ttl,
                concurrent_takes_of_one_captcha_yield_it_exactly_once,
                an_inserted_flow_loads_at_version_one,
                an_indexed_insert_stores_the_flow_and_its_owner_entry,
                an_unknown_flow_loads_as_none,
                a_replace_at_the_current_version_stores_the_flow_and_bumps_the_version,
                a_replace_with_a_stale_version_fails_and_changes_nothing,
                a_replace_of_a_missing_flow_fails_and_creates_nothing,
                a_deleted_flow_is_gone_and_cannot_be_replaced,
                a_flow_expires_after_its_ttl,
                a_replace_gives_the_flow_its_new_ttl,
                fifty_concurrent_replaces_from_one_version_have_exactly_one_winner,
                an_account_lists_every_flow_opened_for_it_and_no_other,
                an_account_set_is_kept_for_its_longest_ttl_not_shortened,
                an_account_set_expires_after_its_ttl,
                a_token_points_at_its_flow,
                a_token_expires_after_its_ttl,
                hits_up_to_the_limit_are_allowed_and_the_next_is_limited_until_the_window_ends,
                a_limited_caller_is_told_to_wait_at_least_a_second,
                a_rate_window_reopens_after_it_expires,
                fifty_concurrent_hits_with_limit_five_allow_exactly_five,
                a_cleared_limit_starts_afresh_and_others_are_untouched,
                the_live_code_pointer_names_the_last_flow_per_owner_until_it_expires,
                a_report_code_is_taken_exactly_once,
                a_freeze_holds_until_it_expires_or_is_lifted,
            );
        }
    };
    (@tests $store:path; $($behaviour:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $behaviour() {
                let Some(store) = $store().await else {
                    return;
                };
                super::behaviour::$behaviour(store).await;
            }
        )*
    };
}

backend!(memory, super::memory_store);
backend!(redis_single, super::redis_single_store);
backend!(redis_cluster, super::redis_cluster_store);
backend!(redis_sentinel, super::redis_sentinel_store);

/// A master that dies or is demoted: the store finds the new one through the sentinels, keeps
/// what was replicated, and reports the gap only as retryable `Unavailable`.
mod sentinel_failover {
    use std::process::Command;
    use std::time::Instant;

    use super::*;

    /// A private master + replica + 3 sentinels on free ports (`scripts/redis-sentinel.sh`),
    /// stopped on drop.
    struct PrivateSentinel {
        env: Vec<(&'static str, String)>,
        data_ports: [u16; 2],
        sentinel_ports: Vec<u16>,
        service: String,
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    impl PrivateSentinel {
        fn start() -> Self {
            let data = [free_port(), free_port()];
            let sentinel_ports = vec![free_port(), free_port(), free_port()];
            let join = |ports: &[u16]| {
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let service = "failover-test".to_owned();
            let env = vec![
                ("REDIS_SENTINEL_DATA_PORTS", join(&data)),
                ("REDIS_SENTINEL_PORTS", join(&sentinel_ports)),
                ("REDIS_SENTINEL_SERVICE", service.clone()),
                (
                    "REDIS_SENTINEL_DIR",
                    std::env::temp_dir()
                        .join(format!("recovery-sentinel-test-{}", Uuid::new_v4()))
                        .display()
                        .to_string(),
                ),
            ];
            let sentinel = Self {
                env,
                data_ports: data,
                sentinel_ports,
                service,
            };
            let output = sentinel.script("start");
            assert!(
                output.status.success(),
                "scripts/redis-sentinel.sh start failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            sentinel
        }

        fn script(&self, action: &str) -> std::process::Output {
            Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/redis-sentinel.sh"
                ))
                .arg(action)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap()
        }

        fn url(&self) -> String {
            let hosts: Vec<String> = self
                .sentinel_ports
                .iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect();
            format!("redis+sentinel://{}/{}", hosts.join(","), self.service)
        }

        fn master(&self) -> u16 {
            let output = self.script("master");
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap()
        }

        fn redis_cli(&self, port: u16, args: &[&str]) -> String {
            let output = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }

        /// Waits until the replica has applied everything the master has written so far (its
        /// replication offset caught up), so a fail-over cannot lose those writes.
        fn wait_replicated(&self) {
            let offset = |port: u16| -> Option<u64> {
                self.redis_cli(port, &["INFO", "replication"])
                    .lines()
                    .find_map(|line| line.trim().strip_prefix("master_repl_offset:"))
                    .and_then(|value| value.parse().ok())
            };
            let master = self.master();
            let replica = self
                .data_ports
                .iter()
                .copied()
                .find(|p| *p != master)
                .unwrap();
            let target = offset(master).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while offset(replica).is_none_or(|at| at < target)
                || !self
                    .redis_cli(replica, &["INFO", "replication"])
                    .contains("master_link_status:up")
            {
                assert!(Instant::now() < deadline, "the replica did not catch up");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    impl Drop for PrivateSentinel {
        fn drop(&mut self) {
            let _ = self.script("stop");
        }
    }

    /// Calls `hit` until it succeeds: every failure on the way must be `Unavailable`, and the
    /// store must be back within `limit`. Returns how long that took.
    async fn until_it_works(store: &RedisStore, limit: Duration) -> Duration {
        let started = Instant::now();
        let mut failures = 0;
        loop {
            match store.hit(&id(), 100, LONG_TTL).await {
                Ok(_) => return started.elapsed(),
                Err(StoreError::Unavailable(_)) => failures += 1,
                Err(other) => panic!("a fail-over must look Unavailable, got {other:?}"),
            }
            assert!(
                started.elapsed() < limit,
                "still failing after {:?} ({failures} Unavailable answers)",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_follows_a_demoted_then_a_killed_master_and_keeps_replicated_data() {
        if backend::sentinel().is_none() {
            return;
        }
        let sentinel = PrivateSentinel::start();
        let config = RedisConfig {
            key_prefix: format!("test:{}:", Uuid::new_v4()),
            connect_timeout_ms: 500,
            command_timeout_ms: 500,
        };
        let store = RedisStore::connect(&sentinel.url(), &config).await.unwrap();
        let before = flow(&id());
        store.insert_flow(&before, LONG_TTL).await.unwrap();
        sentinel.wait_replicated();

        // 1. A graceful fail-over: the old master is demoted (and drops its clients).
        let first = sentinel.master();
        let answer = sentinel.redis_cli(
            sentinel.sentinel_ports[0],
            &["SENTINEL", "FAILOVER", &sentinel.service],
        );
        assert_eq!(answer, "OK");
        let deadline = Instant::now() + Duration::from_secs(20);
        while sentinel.master() == first {
            assert!(
                Instant::now() < deadline,
                "SENTINEL FAILOVER did not happen"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        until_it_works(&store, Duration::from_secs(20)).await;
        let second = sentinel.master();
        assert_ne!(first, second);
        // Sentinel names the new master a moment before it has demoted the old one; writes in
        // that moment can land on the old master and be lost (Redis's documented limit, see
        // the README). Once the old master is a replica, a write lands on the new one.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sentinel
            .redis_cli(first, &["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(
                Instant::now() < deadline,
                "the old master never became a replica"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        until_it_works(&store, Duration::from_secs(20)).await;
        assert!(
            store
                .replace_flow(&changed(&before, 1), 1, LONG_TTL)
                .await
                .unwrap()
        );
        sentinel.wait_replicated();

        // 2. The master dies outright.
        let output = sentinel.script("kill-master");
        assert!(output.status.success());
        let took = until_it_works(&store, Duration::from_secs(30)).await;
        // The sentinel the script asks may learn of the new master a moment after the one the
        // store asked: wait for it to agree before comparing.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sentinel.master() == second && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_ne!(sentinel.master(), second);
        eprintln!("store usable again {took:?} after the master was killed");

        let loaded = store.load_flow(&before.id).await.unwrap().unwrap();
        assert_eq!(loaded.version, 2, "a replicated write was lost");
        assert_eq!(loaded.value, changed(&before, 1));
        assert!(
            store
                .replace_flow(&changed(&before, 2), 2, LONG_TTL)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_service_name_fails_start_up_without_quoting_the_url() {
        if backend::sentinel().is_none() {
            return;
        }
        let sentinel = PrivateSentinel::start();
        let url = sentinel
            .url()
            .replace("redis+sentinel://", "redis+sentinel://:hunter2@")
            .replace("/failover-test", "/no-such-service");
        let error = RedisStore::connect(&url, &RedisConfig::default())
            .await
            .unwrap_err();
        assert!(!format!("{error:#}").contains("hunter2"), "{error:#}");
        assert!(
            format!("{error:#}").to_lowercase().contains("sentinel"),
            "{error:#}"
        );
    }
}

/// How the Redis store reports a server it cannot use: retryable `Unavailable`, within the
/// configured timeouts, never a hang or a generic failure.
mod redis_errors {
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use super::*;

    fn quick_timeouts() -> RedisConfig {
        RedisConfig {
            connect_timeout_ms: 300,
            command_timeout_ms: 300,
            ..RedisConfig::default()
        }
    }

    /// A TCP server that accepts connections and never answers: a hung or black-holed Redis.
    async fn silent_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        port
    }

    /// A private redis-server on a free port, killed when dropped.
    struct PrivateRedis {
        child: Child,
        port: u16,
    }

    impl PrivateRedis {
        async fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run redis-server ({e}); install it: `apt-get install redis-server`"
                    )
                });
            let server = Self { child, port };
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return server;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("redis-server on port {port} did not start");
        }

        fn signal(&self, signal: &str) {
            let status = Command::new("kill")
                .args([signal, &self.child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill {signal} failed");
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let result = RedisStore::connect("redis://127.0.0.1:1", &quick_timeouts()).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_unavailable() {
        let result =
            RedisStore::connect("redis://127.0.0.1:1,redis://127.0.0.1:2", &quick_timeouts()).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_unavailable_once_the_connect_timeout_passes() {
        let port = silent_server().await;
        let started = Instant::now();
        let result =
            RedisStore::connect(&format!("redis://127.0.0.1:{port}"), &quick_timeouts()).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_tls_url_goes_through_rustls_and_an_unanswered_handshake_is_unavailable() {
        let port = silent_server().await;
        let result =
            RedisStore::connect(&format!("rediss://127.0.0.1:{port}"), &quick_timeouts()).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_stops_answering_or_dies_makes_every_call_unavailable() {
        if crate::common::backend::redis().is_none() {
            return;
        }
        let server = PrivateRedis::start().await;
        let store = RedisStore::connect(
            &format!("redis://127.0.0.1:{}", server.port),
            &quick_timeouts(),
        )
        .await
        .unwrap();
        assert_eq!(
            store.hit("k", 5, LONG_TTL).await.unwrap(),
            RateDecision::Allowed
        );

        server.signal("-STOP");
        let started = Instant::now();
        let result = store.hit("k", 5, LONG_TTL).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );

        server.signal("-KILL");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let result = store.take_captcha("c").await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_malformed_url_is_an_internal_error_that_does_not_quote_the_url() {
        let result = RedisStore::connect(
            "http://user:hunter2@127.0.0.1:6379",
            &RedisConfig::default(),
        )
        .await;
        match result {
            Err(StoreError::Internal(error)) => {
                assert!(!format!("{error:#}").contains("hunter2"), "{error:#}")
            }
            other => panic!("expected Internal, got {other:?}"),
        }
    }
}
