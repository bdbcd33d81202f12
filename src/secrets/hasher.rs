//! argon2id hashing, off the async runtime and bounded.
//!
//! Each hash holds `m_cost` KiB for its duration; a flood of logins or resets could otherwise
//! allocate without limit. A semaphore bounds the hashes in flight, and a caller that cannot
//! get a permit within `queue_timeout` is told to back off. The working memory itself comes
//! from a pool of at most `max_in_flight` buffers that are reused, not freed: a freed 19 MiB
//! block is not reliably returned to the OS (glibc keeps it in the freeing thread's arena, and
//! the blocking pool runs hashes on ever new threads), so without the pool a flood measured
//! ~770 MiB peak RSS with 4 permits. With it, hashing memory is permits × m_cost, full stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::Instrument;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HashSettings {
    /// argon2id memory per hash in KiB (OWASP Password Storage Cheat Sheet: m=19 MiB, t=2,
    /// p=1); at least 8 KiB per lane (`hashing.p_cost`). Older hashes are rehashed with the
    /// current parameters at the next successful login.
    #[schemars(range(min = 8, max = 4 * 1024 * 1024))]
    pub m_cost_kib: u32,
    /// argon2id passes over the memory.
    #[schemars(range(min = 1, max = 100))]
    pub t_cost: u32,
    /// argon2id lanes.
    #[schemars(range(min = 1, max = 16))]
    pub p_cost: u32,
    /// Hashes computed at once; peak hashing memory is this × m_cost.
    #[schemars(range(min = 1, max = 1024))]
    pub max_in_flight: usize,
    /// Milliseconds a call waits for a hashing permit before it is answered `RATE_LIMITED`
    /// (scope `hashing`).
    // Ten minutes, the longest of every configured wait (`clock::MAX_WAIT_MS`; this neutral
    // module imports nothing of the crate).
    #[schemars(range(min = 1, max = 600_000))]
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

/// argon2 working memory. A buffer is only taken while a hashing permit is held, so there are
/// never more buffers than permits.
struct MemoryPool {
    buffers: Mutex<Vec<Vec<Block>>>,
    /// The size every buffer is kept at: the current `m_cost` in 1 KiB blocks.
    blocks: usize,
}

impl MemoryPool {
    fn take(&self) -> Vec<Block> {
        // A poisoned lock only means a hash panicked elsewhere; the buffers are still memory.
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        buffers.pop().unwrap_or_default()
    }

    fn give_back(&self, mut memory: Vec<Block>) {
        // With t=1 the first blocks are a fast function of the password: wipe them rather than
        // leave a cheap-to-test digest lying in a long-lived buffer.
        memory.fill(Block::new());
        if memory.len() > self.blocks {
            // Grown for a stored hash with a larger m_cost than the current one: give the
            // extra back so the bound stays permits × the current m_cost.
            memory.truncate(self.blocks);
            memory.shrink_to_fit();
        }
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        buffers.push(memory);
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    memory: Arc<MemoryPool>,
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
        let memory = Arc::new(MemoryPool {
            buffers: Mutex::new(Vec::new()),
            blocks: params.block_count(),
        });
        let dummy_password =
            super::keys::random_token().map_err(|e| HashError::Failed(e.to_string()))?;
        let mut buffer = memory.take();
        let dummy_hash = hash_with(&mut buffer, &params, dummy_password.as_bytes());
        memory.give_back(buffer);
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            memory,
            queue_timeout: Duration::from_millis(settings.queue_timeout_ms),
            dummy_hash: dummy_hash?.into(),
        })
    }

    /// Permits free now (for the `recovery.hashing.permits.in_use` gauge).
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn dummy_hash(&self) -> &str {
        &self.dummy_hash
    }

    /// Runs `work` on the blocking pool with a permit and a pooled buffer.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let span = tracing::Span::current();
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            crate::blocking::background_priority();
            let _entered = span.enter();
            let mut memory = pool.take();
            let result = work(&mut memory);
            pool.give_back(memory);
            // Only now: the buffer is back in the pool before another hash may start.
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
        self.run(move |memory| hash_with(memory, &params, password.expose_secret().as_bytes()))
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
        self.run(move |memory| {
            let Some(checked) = verify_with(memory, password.expose_secret().as_bytes(), &stored)
            else {
                return Verified {
                    valid: false,
                    needs_rehash: false,
                };
            };
            let needs_rehash = checked.valid
                && (checked.algorithm != Algorithm::Argon2id
                    || checked.params.m_cost() != current.m_cost()
                    || checked.params.t_cost() != current.t_cost()
                    || checked.params.p_cost() != current.p_cost());
            Verified {
                valid: checked.valid && known,
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

fn failed(error: impl std::fmt::Display) -> HashError {
    HashError::Failed(error.to_string())
}

/// argon2 into `out`, working in `memory` (grown when a stored hash needs more).
fn argon2_into(
    memory: &mut Vec<Block>,
    argon2: Argon2<'_>,
    blocks: usize,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
}

/// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a fresh 16-byte salt.
fn hash_with(
    memory: &mut Vec<Block>,
    params: &Params,
    password: &[u8],
) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(failed)?;
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon2_into(
        memory,
        argon2,
        params.block_count(),
        password,
        &salt,
        &mut out,
    )
    .map_err(failed)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(failed)?,
        salt: Some(Salt::new(&salt).map_err(failed)?),
        hash: Some(Output::new(&out).map_err(failed)?),
    };
    Ok(hash.to_string())
}

struct Checked {
    valid: bool,
    algorithm: Algorithm,
    params: Params,
}

/// Recomputes `stored` with its own algorithm, version, parameters and salt. `None`: not a hash
/// this service can check (treated as a wrong password).
fn verify_with(memory: &mut Vec<Block>, password: &[u8], stored: &str) -> Option<Checked> {
    let parsed = PasswordHash::new(stored).ok()?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
    let version = match parsed.version {
        Some(version) => Version::try_from(version).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).ok()?;
    let (salt, expected) = (parsed.salt?, parsed.hash?);
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    argon2_into(
        memory,
        argon2,
        params.block_count(),
        password,
        &salt,
        &mut out,
    )
    .ok()?;
    // `Output`'s equality is constant-time.
    let valid = Output::new(&out).ok()? == expected;
    Some(Checked {
        valid,
        algorithm,
        params,
    })
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

    #[tokio::test]
    async fn pooled_hashes_agree_with_the_argon2_crate_both_ways() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = PasswordHasher::new(&fast()).unwrap();
        let ours = hasher.hash(&SecretString::from("pw")).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(
            Argon2::default()
                .verify_password(b"other", &parsed)
                .is_err()
        );
        // A hash made elsewhere (argon2i, another version of the parameters) still verifies.
        let theirs = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(128, 2, 1, Some(24)).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        let verified = hasher
            .verify(&SecretString::from("pw"), Some(&theirs))
            .await
            .unwrap();
        assert!(verified.valid && verified.needs_rehash);
    }

    #[tokio::test]
    async fn the_memory_pool_holds_at_most_one_current_size_buffer_per_permit() {
        let settings = HashSettings {
            max_in_flight: 2,
            ..fast()
        };
        let hasher = PasswordHasher::new(&settings).unwrap();
        // A stored hash with a larger m_cost than the current one grows a buffer for one call.
        let bigger = PasswordHasher::new(&HashSettings {
            m_cost_kib: 512,
            ..fast()
        })
        .unwrap();
        let stored = bigger.hash(&SecretString::from("pw")).await.unwrap();
        let mut checks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (hasher, stored) = (hasher.clone(), stored.clone());
            checks.spawn(async move {
                hasher
                    .verify(&SecretString::from("pw"), Some(&stored))
                    .await
            });
        }
        while let Some(verified) = checks.join_next().await {
            assert!(verified.unwrap().unwrap().valid);
        }
        let buffers = hasher.memory.buffers.lock().unwrap();
        assert!(
            !buffers.is_empty() && buffers.len() <= 2,
            "{}",
            buffers.len()
        );
        assert!(buffers.iter().all(|b| b.len() == 64 && b.capacity() == 64));
    }

    #[test]
    fn the_default_parameters_are_owasp() {
        let s = HashSettings::default();
        assert_eq!((s.m_cost_kib, s.t_cost, s.p_cost), (19456, 2, 1));
    }
}
