//! The one place that reads the wall clock. Domain functions take `now` as an argument; the
//! server asks a `Clock`, which tests replace with a `ManualClock` to exercise expiry without
//! sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Seconds in a day, for the configuration's bounds.
pub const DAY_SECS: u64 = 24 * 3600;
/// Ten minutes: the longest any single wait (connect, statement, send, queue) may be configured
/// to last.
pub const MAX_WAIT_MS: u64 = 600_000;

/// `now + duration`, saturating to `now` for a duration chrono cannot represent (only absurd
/// configuration values get there). The one place domain code adds a `Duration` to a time.
pub fn after(now: DateTime<Utc>, duration: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::zero())
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Shared by clones.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
