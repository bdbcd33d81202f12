//! CPU-bound work (zxcvbn) off the async runtime, behind a fixed number of
//! permits. Run inline, one client's worst-case inputs stalled every other RPC on the same
//! worker threads (issue 9: 4 callers of `ValidatePassword` pushed an unrelated
//! `GetRecoveryFlow` from 0.2 ms to > 1.5 s). With the permits, a flood queues behind them
//! and the runtime keeps serving; the request timeout bounds how long a queued call waits.
//! argon2 has its own pool with a memory bound (`secrets::hasher`). Neutral ground: imports
//! nothing of the crate.

use tokio::sync::Semaphore;

pub struct BlockingPool {
    permits: Semaphore,
}

#[derive(Debug, thiserror::Error)]
#[error("blocking work failed: {0}")]
pub struct BlockingError(String);

impl BlockingPool {
    pub const fn new(permits: usize) -> Self {
        Self {
            permits: Semaphore::const_new(permits),
        }
    }

    /// Runs `work` on a blocking thread once a permit is free. The permit is held until the
    /// work ends, even if the caller gave up waiting for it (the thread cannot be stopped), so
    /// the bound on busy threads holds.
    pub async fn run<T: Send + 'static>(
        &'static self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BlockingError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| BlockingError(e.to_string()))?;
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await;
        outcome.map_err(|e| BlockingError(e.to_string()))
    }
}

/// Password scoring (zxcvbn): two threads at most, so on a small machine at least as many cores
/// stay with the runtime as the pool can take.
pub static PASSWORD_SCORING: BlockingPool = BlockingPool::new(2);
