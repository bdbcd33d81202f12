//! The in-process store: the embedded default for one replica. Every operation holds one lock
//! for its whole duration, which gives the same atomicity as the Redis scripts. Entries expire
//! by deadline (checked on read) and are swept periodically so memory stays bounded.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{EphemeralStore, RateDecision, StoreError, Versioned};
use crate::clock::Clock;
use crate::recovery::captcha::CaptchaRecord;
use crate::recovery::flow::Flow;

struct Entry<T> {
    value: T,
    deadline: Instant,
}

impl<T> Entry<T> {
    fn new(value: T, ttl: Duration, now: Instant) -> Self {
        Self {
            value,
            deadline: now + ttl,
        }
    }

    fn live(&self, now: Instant) -> bool {
        now < self.deadline
    }
}

#[derive(Default)]
struct State {
    captchas: HashMap<String, Entry<CaptchaRecord>>,
    flows: HashMap<String, Entry<Versioned<Flow>>>,
    account_flows: HashMap<String, Entry<HashSet<String>>>,
    tokens: HashMap<String, Entry<String>>,
    counters: HashMap<String, Entry<u32>>,
    claims: HashMap<String, Entry<()>>,
    cache: HashMap<String, Entry<String>>,
    /// Live-code pointers, report codes and freezes, each under its own key prefix.
    markers: HashMap<String, Entry<String>>,
    operations: u64,
    /// The operation count at which the next sweep runs.
    next_sweep: u64,
}

/// Fewest operations between two sweeps.
const MIN_SWEEP_INTERVAL: u64 = 1024;

impl State {
    /// Drops expired entries once the operations since the last sweep reach the number of
    /// entries it left (at least `MIN_SWEEP_INTERVAL`): each sweep's walk is paid for by as many
    /// operations, so the cost per operation stays O(1) however many flows are live, and memory
    /// stays below about twice the live entries plus that minimum. A sweep every 1,024
    /// operations, as before, walked every map that often: with 10^5 live flows that was ~100
    /// entries per call, and the walk, under the one lock, stalled every call in flight several
    /// milliseconds (GetRecoveryFlow's and CancelRecovery's p99 at 64 in flight).
    fn maybe_sweep(&mut self, now: Instant) {
        self.operations += 1;
        if self.operations < self.next_sweep {
            return;
        }
        self.captchas.retain(|_, e| e.live(now));
        self.flows.retain(|_, e| e.live(now));
        self.account_flows.retain(|_, e| e.live(now));
        self.tokens.retain(|_, e| e.live(now));
        self.counters.retain(|_, e| e.live(now));
        self.claims.retain(|_, e| e.live(now));
        self.cache.retain(|_, e| e.live(now));
        self.markers.retain(|_, e| e.live(now));
        let left = self.entries() as u64;
        self.next_sweep = self.operations + left.max(MIN_SWEEP_INTERVAL);
    }

    fn entries(&self) -> usize {
        self.captchas.len()
            + self.flows.len()
            + self.account_flows.len()
            + self.tokens.len()
            + self.counters.len()
            + self.claims.len()
            + self.cache.len()
            + self.markers.len()
    }
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Where time comes from: the monotonic clock, or (tests) the service's own clock, so that a
    /// test moving a manual clock past a rate-limit window or a freeze sees it end, as it sees
    /// flows and codes expire.
    time: TimeSource,
}

#[derive(Default)]
enum TimeSource {
    #[default]
    Monotonic,
    /// `Instant`s derived from `clock`: `origin` plus how far the clock is past `clock_origin`.
    Clock {
        clock: Arc<dyn Clock>,
        origin: Instant,
        clock_origin: DateTime<Utc>,
    },
}

impl TimeSource {
    fn now(&self) -> Instant {
        match self {
            Self::Monotonic => Instant::now(),
            Self::Clock {
                clock,
                origin,
                clock_origin,
            } => {
                // A clock set back before the store was made counts as its origin.
                let elapsed = (clock.now() - *clock_origin).to_std().unwrap_or_default();
                *origin + elapsed
            }
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose entries expire by `clock` rather than by the monotonic clock: for tests
    /// that drive a `ManualClock` across TTLs and windows (the Redis stores expire by the Redis
    /// server's own time, which no test clock moves).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let clock_origin = clock.now();
        Self {
            state: Mutex::default(),
            time: TimeSource::Clock {
                clock,
                origin: Instant::now(),
                clock_origin,
            },
        }
    }

    fn put_marker(&self, key: String, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.with(|s, now| {
            s.markers
                .insert(key, Entry::new(value.to_owned(), ttl, now));
        })
    }

    fn marker(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|s, now| {
            s.markers
                .get(key)
                .filter(|e| e.live(now))
                .map(|e| e.value.clone())
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> Result<R, StoreError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::Internal(anyhow::anyhow!("in-process store lock poisoned")))?;
        let now = self.time.now();
        state.maybe_sweep(now);
        Ok(f(&mut state, now))
    }
}

#[async_trait]
impl EphemeralStore for MemoryStore {
    async fn put_captcha(&self, captcha: &CaptchaRecord, ttl: Duration) -> Result<(), StoreError> {
        self.with(|s, now| {
            s.captchas
                .insert(captcha.id.clone(), Entry::new(captcha.clone(), ttl, now));
        })
    }

    async fn take_captcha(&self, id: &str) -> Result<Option<CaptchaRecord>, StoreError> {
        self.with(|s, now| {
            s.captchas
                .remove(id)
                .filter(|e| e.live(now))
                .map(|e| e.value)
        })
    }

    async fn insert_flow(&self, flow: &Flow, ttl: Duration) -> Result<(), StoreError> {
        self.with(|s, now| {
            let versioned = Versioned {
                value: flow.clone(),
                version: 1,
            };
            s.flows
                .insert(flow.id.clone(), Entry::new(versioned, ttl, now));
        })
    }

    async fn add_account_flow(
        &self,
        owner: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with(|s, now| {
            let entry = s
                .account_flows
                .entry(owner.to_owned())
                .or_insert_with(|| Entry::new(HashSet::new(), ttl, now));
            if !entry.live(now) {
                *entry = Entry::new(HashSet::new(), ttl, now);
            }
            entry.value.insert(flow_id.to_owned());
            entry.deadline = entry.deadline.max(now + ttl);
        })
    }

    async fn load_flow(&self, id: &str) -> Result<Option<Versioned<Flow>>, StoreError> {
        self.with(|s, now| {
            s.flows
                .get(id)
                .filter(|e| e.live(now))
                .map(|e| e.value.clone())
        })
    }

    async fn replace_flow(
        &self,
        flow: &Flow,
        expected_version: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.with(|s, now| match s.flows.get_mut(&flow.id) {
            Some(entry) if entry.live(now) && entry.value.version == expected_version => {
                *entry = Entry::new(
                    Versioned {
                        value: flow.clone(),
                        version: expected_version + 1,
                    },
                    ttl,
                    now,
                );
                true
            }
            _ => false,
        })
    }

    async fn delete_flow(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|s, now| s.flows.remove(id).is_some_and(|e| e.live(now)))
    }

    async fn account_flows(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        self.with(|s, now| {
            s.account_flows
                .get(account_id)
                .filter(|e| e.live(now))
                .map(|e| e.value.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    async fn put_token(
        &self,
        token_mac: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with(|s, now| {
            s.tokens.insert(
                token_mac.to_owned(),
                Entry::new(flow_id.to_owned(), ttl, now),
            );
        })
    }

    async fn token_flow(&self, token_mac: &str) -> Result<Option<String>, StoreError> {
        self.with(|s, now| {
            s.tokens
                .get(token_mac)
                .filter(|e| e.live(now))
                .map(|e| e.value.clone())
        })
    }

    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.with(|s, now| {
            if s.claims.get(key).is_some_and(|e| e.live(now)) {
                return false;
            }
            s.claims.insert(key.to_owned(), Entry::new((), ttl, now));
            true
        })
    }

    async fn put_cached(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.with(|s, now| {
            s.cache
                .insert(key.to_owned(), Entry::new(value.to_owned(), ttl, now));
        })
    }

    async fn cached(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|s, now| {
            s.cache
                .get(key)
                .filter(|e| e.live(now))
                .map(|e| e.value.clone())
        })
    }

    async fn hits(&self, key: &str) -> Result<u64, StoreError> {
        self.with(|s, now| {
            s.counters
                .get(key)
                .filter(|e| e.live(now))
                .map_or(0, |e| u64::from(e.value))
        })
    }

    async fn clear_limit(&self, key: &str) -> Result<(), StoreError> {
        self.with(|s, _| {
            s.counters.remove(key);
        })
    }

    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StoreError> {
        self.with(|s, now| {
            let entry = s
                .counters
                .entry(key.to_owned())
                .or_insert_with(|| Entry::new(0, window, now));
            if !entry.live(now) {
                *entry = Entry::new(0, window, now);
            }
            entry.value = entry.value.saturating_add(1);
            if entry.value > limit {
                RateDecision::Limited {
                    retry_after: entry
                        .deadline
                        .saturating_duration_since(now)
                        .max(Duration::from_secs(1)),
                }
            } else {
                RateDecision::Allowed
            }
        })
    }

    async fn set_live_code(
        &self,
        owner: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.put_marker(format!("live:{owner}"), flow_id, ttl)
    }

    async fn live_code(&self, owner: &str) -> Result<Option<String>, StoreError> {
        self.marker(&format!("live:{owner}"))
    }

    async fn put_report_code(
        &self,
        report_mac: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.put_marker(format!("report:{report_mac}"), owner, ttl)
    }

    async fn take_report_code(&self, report_mac: &str) -> Result<Option<String>, StoreError> {
        self.with(|s, now| {
            s.markers
                .remove(&format!("report:{report_mac}"))
                .filter(|e| e.live(now))
                .map(|e| e.value)
        })
    }

    async fn freeze_recovery(&self, owner: &str, ttl: Duration) -> Result<(), StoreError> {
        self.put_marker(format!("frozen:{owner}"), "1", ttl)
    }

    async fn recovery_frozen(&self, owner: &str) -> Result<bool, StoreError> {
        Ok(self.marker(&format!("frozen:{owner}"))?.is_some())
    }

    async fn unfreeze_recovery(&self, owner: &str) -> Result<(), StoreError> {
        self.with(|s, _| {
            s.markers.remove(&format!("frozen:{owner}"));
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn markers(store: &MemoryStore) -> usize {
        store.with(|s, _| s.markers.len()).unwrap()
    }

    #[tokio::test]
    async fn a_store_on_a_manual_clock_ends_windows_and_markers_when_the_clock_passes_them() {
        let clock = crate::clock::ManualClock::new(Utc::now());
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        let window = Duration::from_secs(3600);
        assert_eq!(
            store.hit("k", 1, window).await.unwrap(),
            RateDecision::Allowed
        );
        let RateDecision::Limited { retry_after } = store.hit("k", 1, window).await.unwrap() else {
            panic!("the second hit is over the limit");
        };
        assert_eq!(retry_after, window);
        store.freeze_recovery("owner", window).await.unwrap();
        clock.advance(window - Duration::from_secs(1));
        assert!(store.recovery_frozen("owner").await.unwrap());
        assert!(matches!(
            store.hit("k", 1, window).await.unwrap(),
            RateDecision::Limited { .. }
        ));
        clock.advance(Duration::from_secs(1));
        assert!(!store.recovery_frozen("owner").await.unwrap());
        assert_eq!(
            store.hit("k", 1, window).await.unwrap(),
            RateDecision::Allowed
        );
    }

    #[test]
    fn expired_entries_are_swept_within_as_many_operations_as_entries_were_left() {
        let store = MemoryStore::new();
        for n in 0..5_000 {
            store
                .put_marker(format!("m:{n}"), "v", Duration::from_millis(30))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(40));
        // No sweep can be further away than the entries the last one left, plus the minimum.
        let mut operations = 0;
        while markers(&store) > 0 {
            store.marker("absent").unwrap();
            operations += 1;
            assert!(operations <= 5_000 + MIN_SWEEP_INTERVAL, "never swept");
        }
    }

    #[test]
    fn many_live_entries_are_not_walked_every_thousand_operations() {
        let store = MemoryStore::new();
        for n in 0..20_000 {
            store
                .put_marker(format!("m:{n}"), "v", Duration::from_secs(600))
                .unwrap();
        }
        // Force a sweep now: the next is as many operations away as entries are live.
        let (operations, next) = store
            .with(|s, _| {
                s.next_sweep = s.operations + 1;
                (s.operations, s.next_sweep)
            })
            .unwrap();
        assert_eq!(next, operations + 1);
        store.marker("absent").unwrap();
        let gap = store.with(|s, _| s.next_sweep - s.operations).unwrap();
        assert!(
            gap >= 19_000,
            "the next sweep is only {gap} operations away"
        );
        assert_eq!(markers(&store), 20_000);
    }
}
