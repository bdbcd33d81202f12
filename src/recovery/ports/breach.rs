//! Where breached-password ranges come from (the Have I Been Pwned range API or a mirror of it).
//! The port takes only the 5-hex-digit SHA-1 prefix: nothing else about a password can leave
//! the process through it.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
#[error("breached-password range unavailable: {0}")]
pub struct BreachError(#[source] pub anyhow::Error);

#[async_trait]
pub trait BreachRanges: Send + Sync + 'static {
    /// The range of `prefix` (5 uppercase hex digits): lines `SUFFIX:COUNT`, where SUFFIX is
    /// the other 35 hex digits of a breached password's SHA-1 and COUNT how often it was seen
    /// (0 on padding lines).
    async fn range(&self, prefix: &str) -> Result<String, BreachError>;
}
