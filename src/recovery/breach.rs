//! Breached passwords: a k-anonymity range check in the Have I Been Pwned format. The SHA-1 of
//! the password is split into a 5-hex-digit prefix, the only thing sent out, and a 35-digit
//! suffix looked up locally in the range the prefix returns.
//!
//! Ranges are cached in the process, per prefix, in an LRU of `cache_max_entries` ranges (about
//! 35 KB each) for `cache_ttl_secs`: bounded, whatever passwords callers try (all 1,048,576
//! prefixes would be ~36 GB). A range that is not cached costs a request upstream, counted
//! against the caller's `rate_limits.breach_fetch_per_ip`.
//!
//! Only `ResetPassword` and `CreateAccount` check breaches; `ValidatePassword` does not. A
//! cached range answers in a few milliseconds less than a fetched one, so an unauthenticated
//! call that consulted the cache would tell anyone which prefixes (which password families)
//! were checked recently. `ResetPassword` needs a reset token and spends an argon2 hash, which
//! dwarfs the difference.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hashlink::LruCache;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::clock::DAY_SECS;

use super::error::{PolicyViolation, RecoveryError};
use super::ports::BreachRanges;

pub const REASON: &str = "PASSWORD_BREACHED";

/// `[breach_check]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BreachSettings {
    /// Check new passwords against a breached-password range API (k-anonymity: only the first
    /// five hex digits of the SHA-1 leave the service). Needs egress to `url` (HTTPS, 443).
    pub enabled: bool,
    /// The range endpoint; the prefix is appended (`{url}{prefix}`).
    pub url: String,
    /// Milliseconds one range request may take.
    #[schemars(range(min = 50, max = 30_000))]
    pub timeout_ms: u64,
    /// A password seen at least this often is refused (1: any sighting).
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub min_count: u64,
    /// When the range cannot be had: `false` accepts the password (the check is advice),
    /// `true` answers UNAVAILABLE so nothing unchecked is set.
    pub fail_closed: bool,
    /// Seconds a fetched range is reused. The upstream data changes over days, not seconds.
    #[schemars(range(min = 0, max = 30 * DAY_SECS))]
    pub cache_ttl_secs: u64,
    /// Ranges kept in this process's cache (least recently used dropped first); each is about
    /// 35 KB, so the default of 256 is about 9 MB. 0: no cache, every check asks upstream.
    #[schemars(range(min = 0, max = 100_000))]
    pub cache_max_entries: usize,
}

impl Default for BreachSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "https://api.pwnedpasswords.com/range/".to_owned(),
            timeout_ms: 2_000,
            min_count: 1,
            fail_closed: false,
            cache_ttl_secs: 86_400,
            cache_max_entries: 256,
        }
    }
}

/// A fetched range (padding dropped) and when it stops being reused.
struct Cached {
    range: Arc<str>,
    until: Instant,
}

pub struct BreachCheck {
    pub ranges: Arc<dyn BreachRanges>,
    pub settings: BreachSettings,
    cache: Mutex<LruCache<String, Cached>>,
}

/// Uppercase hex SHA-1, split into the 5-digit prefix and the 35-digit suffix.
fn split_hash(password: &str) -> (String, String) {
    let digest = hex::encode_upper(Sha1::digest(password.as_bytes()));
    let (prefix, suffix) = digest.split_at(5);
    (prefix.to_owned(), suffix.to_owned())
}

/// How often `suffix` was seen according to `range`; padding lines count 0.
fn count_in(range: &str, suffix: &str) -> u64 {
    range
        .lines()
        .filter_map(|line| line.trim().split_once(':'))
        .find(|(candidate, _)| candidate.eq_ignore_ascii_case(suffix))
        .and_then(|(_, count)| count.trim().parse().ok())
        .unwrap_or(0)
}

/// The range without its padding lines (count 0): what is worth caching.
fn without_padding(range: &str) -> String {
    range
        .lines()
        .filter(|line| {
            line.trim()
                .split_once(':')
                .is_some_and(|(_, count)| count.trim() != "0")
        })
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn violation() -> PolicyViolation {
    PolicyViolation {
        reason: REASON,
        message: "appears in known data breaches; choose another".to_owned(),
    }
}

impl BreachCheck {
    pub fn new(ranges: Arc<dyn BreachRanges>, settings: BreachSettings) -> Self {
        let capacity = settings.cache_max_entries.max(1);
        Self {
            ranges,
            settings,
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Ranges in the cache now (expired ones not yet dropped included): never more than
    /// `cache_max_entries`.
    pub fn cached_ranges(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn cached(&self, prefix: &str) -> Option<Arc<str>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.get(prefix) {
            Some(entry) if entry.until > Instant::now() => Some(entry.range.clone()),
            Some(_) => {
                cache.remove(prefix);
                None
            }
            None => None,
        }
    }

    fn remember(&self, prefix: String, range: Arc<str>) {
        if self.settings.cache_max_entries == 0 || self.settings.cache_ttl_secs == 0 {
            return;
        }
        let until = Instant::now() + Duration::from_secs(self.settings.cache_ttl_secs);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(prefix, Cached { range, until });
    }

    /// `Some(violation)` for a breached password; `None` for a clean one or, failing open, when
    /// the range could not be had. `before_fetch` runs before a range is asked for upstream
    /// (the caller's rate limit); its refusal is the answer.
    pub async fn check<F, Fut>(
        &self,
        password: &str,
        before_fetch: F,
    ) -> Result<Option<PolicyViolation>, RecoveryError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), RecoveryError>>,
    {
        let (prefix, suffix) = split_hash(password);
        let range = match self.cached(&prefix) {
            Some(range) => range,
            None => match before_fetch().await {
                Err(refused) => return Err(refused),
                Ok(()) => match self.fetch(&prefix).await {
                    Ok(range) => {
                        let range: Arc<str> = without_padding(&range).into();
                        self.remember(prefix, range.clone());
                        range
                    }
                    // Never the prefix in the log: it is 20 bits of the password's hash.
                    Err(error) if self.settings.fail_closed => {
                        tracing::warn!(%error, "breach check failed: refusing (fail_closed)");
                        return Err(RecoveryError::Unavailable(error));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "breach check failed: password accepted unchecked");
                        return Ok(None);
                    }
                },
            },
        };
        let seen = count_in(&range, &suffix);
        Ok((seen >= self.settings.min_count.max(1)).then(violation))
    }

    async fn fetch(&self, prefix: &str) -> Result<String, anyhow::Error> {
        let timeout = Duration::from_millis(self.settings.timeout_ms.max(1));
        match tokio::time::timeout(timeout, self.ranges.range(prefix)).await {
            Ok(Ok(range)) => Ok(range),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(anyhow::anyhow!("breach range timed out after {timeout:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    #[async_trait::async_trait]
    impl BreachRanges for Fixed {
        async fn range(&self, _prefix: &str) -> Result<String, super::super::ports::BreachError> {
            Ok("0018A45C4D1DEF81644B54AB7F969B88D65:12".to_owned())
        }
    }

    #[tokio::test]
    async fn the_cache_keeps_at_most_its_bound_and_a_hit_fetches_nothing() {
        let settings = BreachSettings {
            cache_max_entries: 3,
            ..BreachSettings::default()
        };
        let check = BreachCheck::new(Arc::new(Fixed), settings);
        let mut fetches = 0;
        for i in 0..20 {
            check
                .check(&format!("password {i}"), || {
                    fetches += 1;
                    async { Ok(()) }
                })
                .await
                .expect("checked");
            assert!(check.cached_ranges() <= 3);
        }
        assert_eq!(fetches, 20);
        assert_eq!(check.cached_ranges(), 3);
        // The last one is cached: no fetch, so no rate-limit hit either.
        check
            .check("password 19", || {
                fetches += 1;
                async { Ok(()) }
            })
            .await
            .expect("checked");
        assert_eq!(fetches, 20);
    }

    #[test]
    fn the_hash_splits_into_prefix_and_suffix() {
        // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8
        let (prefix, suffix) = split_hash("password");
        assert_eq!(prefix, "5BAA6");
        assert_eq!(suffix, "1E4C9B93F3F0682250B6CF8331B7EE68FD8");
    }

    #[test]
    fn counts_come_from_the_matching_line_and_padding_counts_zero() {
        let range = "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n\
                     1E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824\r\n\
                     011053FD0102E94D6AE2F8B83D76FAF94F6:0";
        assert_eq!(
            count_in(range, "1e4c9b93f3f0682250b6cf8331b7ee68fd8"),
            9_545_824
        );
        assert_eq!(count_in(range, "011053FD0102E94D6AE2F8B83D76FAF94F6"), 0);
        assert_eq!(count_in(range, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"), 0);
        assert!(!without_padding(range).contains("011053FD"));
    }
}
