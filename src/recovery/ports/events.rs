//! Where the relay publishes the outbox's events (a Redis Stream in production).

use std::time::Duration;

use async_trait::async_trait;

use super::accounts::OutboxEvent;
use super::ephemeral::StoreError;

/// How much of the stream a sink keeps, and how long it remembers ids to drop repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRetention {
    /// Approximate cap of the stream's length.
    pub max_length: u64,
    pub dedupe_ttl: Duration,
}

#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Appends the event unless its id was appended before; `true` if appended now.
    async fn publish(
        &self,
        stream: &str,
        event: &OutboxEvent,
        retention: &StreamRetention,
    ) -> Result<bool, StoreError>;
}
