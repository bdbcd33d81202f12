//! The outbox relay: publishes the rows of the transactional outbox (written in the same
//! database transaction as the password change) to an event stream, then marks them published.
//!
//! Delivery is at least once: a crash between publishing and marking publishes again on restart,
//! so every event carries its `event_id` and the Redis sink drops a repeat of an id it has
//! already appended (consumers should still be idempotent on `event_id`). Order: oldest first.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, DAY_SECS};
pub use crate::recovery::ports::EventSink;
use crate::recovery::ports::{OutboxStore, StoreError, StreamRetention};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct EventSettings {
    /// Redis Stream the events go to.
    pub stream: String,
    /// Redis for the stream; unset: the store's `RECOVERY_REDIS_URL`. With neither, events stay
    /// in the outbox table (and a warning says so at start).
    pub redis_url: Option<String>,
    /// Milliseconds between looks at the outbox when nothing woke the relay.
    #[schemars(range(min = 10, max = 3_600_000))]
    pub poll_interval_ms: u64,
    /// Events appended per pass.
    #[schemars(range(min = 1, max = 10_000))]
    pub batch_size: u64,
    /// Approximate cap of the stream (XADD MAXLEN ~).
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub max_stream_length: u64,
    /// Seconds an appended event id is remembered to drop repeats.
    #[schemars(range(min = 1, max = 365 * DAY_SECS))]
    pub dedupe_ttl_secs: u64,
    /// Also write `recovery.started` and `recovery.code_verified` to the outbox (for SIEMs, via
    /// the stream and webhooks). Off by default.
    pub include_flow_events: bool,
}

impl EventSettings {
    pub fn retention(&self) -> StreamRetention {
        StreamRetention {
            max_length: self.max_stream_length,
            dedupe_ttl: Duration::from_secs(self.dedupe_ttl_secs),
        }
    }
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            stream: "identity.events".to_owned(),
            redis_url: None,
            poll_interval_ms: 1_000,
            batch_size: 100,
            max_stream_length: 1_000_000,
            dedupe_ttl_secs: 7 * 24 * 3600,
            include_flow_events: false,
        }
    }
}

/// Connects a sink when the relay needs one (so a stream backend that is down at start does not
/// stop the service: the relay keeps trying).
pub type SinkConnector =
    Arc<dyn Fn() -> BoxFuture<Result<Arc<dyn EventSink>, StoreError>> + Send + Sync>;

pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

pub struct OutboxRelay {
    pub outbox: Arc<dyn OutboxStore>,
    pub connect: SinkConnector,
    pub clock: Arc<dyn Clock>,
    pub settings: EventSettings,
    pub wake: Arc<Notify>,
}

impl OutboxRelay {
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let mut sink: Option<Arc<dyn EventSink>> = None;
        let mut backoff = poll;
        loop {
            let pass = async {
                let current = match &sink {
                    Some(current) => current.clone(),
                    None => {
                        let connected = (self.connect)().await?;
                        sink = Some(connected.clone());
                        connected
                    }
                };
                self.publish_pending(current.as_ref()).await
            }
            .await;
            match pass {
                Ok(count) if count > 0 => {
                    backoff = poll;
                    continue;
                }
                Ok(_) => backoff = poll,
                Err(error) => {
                    tracing::warn!(error = %error, "event relay: publishing failed; will retry");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Publishes one batch; returns how many events it handled.
    pub async fn publish_pending(&self, sink: &dyn EventSink) -> Result<usize, anyhow::Error> {
        let events = self.outbox.unpublished(self.settings.batch_size).await?;
        for event in &events {
            let appended = sink
                .publish(&self.settings.stream, event, &self.settings.retention())
                .await?;
            self.outbox
                .mark_published(&event.event_id, self.clock.now())
                .await?;
            tracing::info!(event_id = %event.event_id, event_type = %event.event_type, appended, "event published");
        }
        Ok(events.len())
    }
}
