//! A bounded pool for CPU-bound work: runs a closure on tokio's blocking threads, at most
//! `max_in_flight` at once, keeping the caller's span.
//!
//! Why bounded: tokio's blocking pool grows to 512 threads, so an unbounded flood of expensive
//! calls (captcha rendering, zxcvbn, argon2) would queue hundreds of busy threads that fight for
//! two cores, each holding its working memory, and every other RPC would wait behind them. With a
//! permit per core the work runs at full speed, the rest waits for a permit, and a caller that
//! cannot get one within `queue_timeout` is told to back off instead of piling up. The async
//! workers stay free for the cheap RPCs (STYLE: async code never blocks for long).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;

/// How much nicer (lower CPU priority) than the async workers CPU-bound work runs.
const BACKGROUND_NICENESS: i32 = 10;

/// Lowers the calling thread's CPU priority by `BACKGROUND_NICENESS`, once per thread. Called
/// first thing by every closure run on tokio's blocking threads (argon2, zxcvbn, captcha
/// drawing: the service gives them no other work), so on a busy machine the scheduler runs the
/// async workers — every cheap RPC — before the expensive work: a flood of CreateCaptcha or
/// VerifyPassword then costs GetRecoveryFlow little latency. Throughput of the
/// expensive work is unchanged when the cores are otherwise idle. On Linux the nice value is
/// per thread; raising it needs no privilege. A failure only costs the latency benefit.
pub fn background_priority() {
    thread_local! {
        static LOWERED: Cell<bool> = const { Cell::new(false) };
    }
    if LOWERED.with(|lowered| lowered.replace(true)) {
        return;
    }
    let lowered = rustix::process::getpriority_process(None).and_then(|current| {
        rustix::process::setpriority_process(None, (current + BACKGROUND_NICENESS).min(19))
    });
    if let Err(error) = lowered {
        tracing::debug!(%error, "could not lower the priority of a blocking thread");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    /// No permit within the queue timeout: the pool is saturated.
    #[error("too much CPU-bound work in progress")]
    Busy,
    /// The closure panicked or the runtime is shutting down.
    #[error("blocking task failed: {0}")]
    Failed(String),
}

#[derive(Clone)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl std::fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingPool")
            .field("available", &self.permits.available_permits())
            .field("queue_timeout", &self.queue_timeout)
            .finish()
    }
}

impl BlockingPool {
    pub fn new(max_in_flight: usize, queue_timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            queue_timeout,
        }
    }

    /// One permit per core: CPU-bound work gains nothing from more threads than cores.
    pub fn per_core(queue_timeout: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, queue_timeout)
    }

    /// Runs `work` on a blocking thread once a permit is free, in the caller's span.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BlockingError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| BlockingError::Busy)?
            .map_err(|_| BlockingError::Busy)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            background_priority();
            let _entered = span.enter();
            let result = work();
            drop(permit);
            result
        })
        .in_current_span()
        .await
        .map_err(|e| BlockingError::Failed(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn never_runs_more_than_its_permits_at_once() {
        let pool = BlockingPool::new(2, Duration::from_secs(10));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let calls = (0..16).map(|_| {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }
        });
        for result in futures_join_all(calls).await {
            result.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_caller_that_waits_past_the_queue_timeout_is_told_busy() {
        let pool = BlockingPool::new(1, Duration::from_millis(20));
        let slow = pool.clone();
        let holder = tokio::spawn(async move {
            slow.run(|| std::thread::sleep(Duration::from_millis(300)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(pool.run(|| ()).await, Err(BlockingError::Busy)));
        holder.await.unwrap().unwrap();
    }

    async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap());
        }
        out
    }
}
