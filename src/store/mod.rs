//! Adapters of the short-lived store port (`recovery::ports::EphemeralStore`): Redis (one Lua
//! script per state change, standalone or cluster) and an in-process map for development and
//! tests. The trait and its value types are owned by the domain and re-exported here.

pub mod memory;
pub mod redis;
pub mod sentinel;

pub use crate::recovery::ports::{EphemeralStore, RateDecision, StoreError, Versioned};
pub use memory::MemoryStore;
pub use redis::RedisStore;
