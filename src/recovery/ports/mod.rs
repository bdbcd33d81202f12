//! The ports of the domain: every trait the use cases reach the outside world through, with its
//! value types. The domain owns them (it says what it needs); `store`, `db` and `notify`
//! implement them and import the domain, never the reverse. The clock is the one port that
//! lives lower, in `crate::clock`: `accounts` (above this module) and `notify`'s workers read
//! it too.

pub mod accounts;
pub mod breach;
pub mod delivery;
pub mod ephemeral;
pub mod events;
pub mod webhooks;

pub use accounts::{
    Account, AccountData, AccountErasure, AccountRepository, AuditEntry, AuditRecord,
    DeliveryQueue, NewAccount, OutboxEvent, OutboxStore, QueuedDelivery, RepoError, ResetCommit,
    ResetOutcome, SealedDelivery,
};
pub use breach::{BreachError, BreachRanges};
pub use delivery::{Deliveries, MessageKind, Notice};
pub use ephemeral::{EphemeralStore, RateDecision, StoreError, Versioned};
pub use events::{EventSink, StreamRetention};
pub use webhooks::{WebhookBacklog, WebhookDelivery, WebhookStore};
