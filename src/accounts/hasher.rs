//! argon2id hashing, off the async runtime and bounded.
//!
//! Each hash holds `m_cost` KiB for its duration; a flood of logins or resets could otherwise
//! allocate without limit. A semaphore bounds the hashes in flight (memory ≤ permits × m_cost),
//! and a caller that cannot get a permit within `queue_timeout` is told to back off.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::Instrument;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HashSettings {
    /// OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1.
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// Hashes computed at once; peak hashing memory is this × m_cost.
    pub max_in_flight: usize,
    pub queue_timeout_ms: u64,
}

impl Default for HashSettings {
    fn default() -> Self {
        Self {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
            max_in_flight: 4,
            queue_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password hashes in progress")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub valid: bool,
    /// The stored hash used other parameters than the current ones: rehash it.
    pub needs_rehash: bool,
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    /// A hash of a random password with the current parameters: unknown logins are verified
    /// against it so they cost the same time as known ones.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    pub fn new(settings: &HashSettings) -> Result<Self, HashError> {
        let params = Params::new(settings.m_cost_kib, settings.t_cost, settings.p_cost, None)
            .map_err(|e| HashError::Failed(e.to_string()))?;
        let dummy_password =
            crate::recovery::keys::random_token().map_err(|e| HashError::Failed(e.to_string()))?;
        let dummy_hash = hash_blocking(&params, dummy_password.as_bytes())?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            queue_timeout: Duration::from_millis(settings.queue_timeout_ms),
            dummy_hash: dummy_hash.into(),
        })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn dummy_hash(&self) -> &str {
        &self.dummy_hash
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = work();
            drop(permit);
            result
        })
        .in_current_span()
        .await
        .map_err(|e| HashError::Failed(format!("hashing task failed: {e}")))
    }

    #[tracing::instrument(skip_all)]
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move || hash_blocking(&params, password.expose_secret().as_bytes()))
            .await?
    }

    /// Verifies against `stored` (or the dummy hash when there is no account, same cost).
    #[tracing::instrument(skip_all)]
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<Verified, HashError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.clone();
        let current = self.params.clone();
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return Verified {
                    valid: false,
                    needs_rehash: false,
                };
            };
            let valid = Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok();
            let needs_rehash = valid
                && (parsed.algorithm.as_str() != "argon2id"
                    || Params::try_from(&parsed)
                        .map(|p| {
                            p.m_cost() != current.m_cost()
                                || p.t_cost() != current.t_cost()
                                || p.p_cost() != current.p_cost()
                        })
                        .unwrap_or(true));
            Verified {
                valid: valid && known,
                needs_rehash: needs_rehash && known,
            }
        })
        .await
    }

    /// Is `password` any of `hashes`? Every hash is checked (no early exit), one permit at a
    /// time.
    pub async fn matches_any(
        &self,
        password: &SecretString,
        hashes: &[String],
    ) -> Result<bool, HashError> {
        let mut any = false;
        for stored in hashes {
            any |= self.verify(password, Some(stored)).await?.valid;
        }
        Ok(any)
    }
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, HashError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> HashSettings {
        HashSettings {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = PasswordHasher::new(&fast()).unwrap();
        let hash = hasher.hash(&SecretString::from("right")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(
            hasher
                .verify(&SecretString::from("right"), Some(&hash))
                .await
                .unwrap()
                .valid
        );
        assert!(
            !hasher
                .verify(&SecretString::from("wrong"), Some(&hash))
                .await
                .unwrap()
                .valid
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies_even_against_the_dummy() {
        let hasher = PasswordHasher::new(&fast()).unwrap();
        assert!(
            !hasher
                .verify(&SecretString::from("x"), None)
                .await
                .unwrap()
                .valid
        );
    }

    #[tokio::test]
    async fn a_hash_with_old_parameters_asks_for_a_rehash() {
        let old = PasswordHasher::new(&HashSettings {
            m_cost_kib: 32,
            ..fast()
        })
        .unwrap();
        let hash = old.hash(&SecretString::from("pw")).await.unwrap();
        let current = PasswordHasher::new(&fast()).unwrap();
        let verified = current
            .verify(&SecretString::from("pw"), Some(&hash))
            .await
            .unwrap();
        assert!(verified.valid && verified.needs_rehash);
    }

    #[test]
    fn the_default_parameters_are_owasp() {
        let s = HashSettings::default();
        assert_eq!((s.m_cost_kib, s.t_cost, s.p_cost), (19456, 2, 1));
    }
}
