//! Breached passwords: a k-anonymity range check in the Have I Been Pwned format. The SHA-1 of
//! the password is split into a 5-hex-digit prefix, the only thing sent out, and a 35-digit
//! suffix looked up locally in the range the prefix returns. Ranges are cached in the ephemeral
//! store per prefix, so every replica shares them and a burst of checks costs one request.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::clock::DAY_SECS;

use super::error::{PolicyViolation, RecoveryError};
use super::ports::{BreachRanges, EphemeralStore};

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
        }
    }
}

pub struct BreachCheck {
    pub ranges: Arc<dyn BreachRanges>,
    pub settings: BreachSettings,
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
    /// `Some(violation)` for a breached password; `None` for a clean one or, failing open, when
    /// the range could not be had.
    pub async fn check(
        &self,
        store: &dyn EphemeralStore,
        password: &str,
    ) -> Result<Option<PolicyViolation>, RecoveryError> {
        let (prefix, suffix) = split_hash(password);
        let cache_key = format!("breach:{prefix}");
        let range = match store.cached(&cache_key).await {
            Ok(Some(range)) => Some(range),
            // A store hiccup only costs the cache, not the check.
            Ok(None) | Err(_) => None,
        };
        let range = match range {
            Some(range) => range,
            None => match self.fetch(&prefix).await {
                Ok(range) => {
                    let range = without_padding(&range);
                    let ttl = Duration::from_secs(self.settings.cache_ttl_secs.max(1));
                    if let Err(error) = store.put_cached(&cache_key, &range, ttl).await {
                        tracing::warn!(%error, "breach range not cached");
                    }
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
