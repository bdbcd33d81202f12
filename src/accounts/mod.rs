//! Accounts: the account use cases (`CreateAccount`, `VerifyPassword`) on top of the domain's
//! ports. The records and the repository trait are owned by `recovery::ports` (the flow needs
//! them too) and re-exported here; `db` implements them with sea-orm.

pub mod commands;
pub mod service;

pub use crate::recovery::ports::{
    Account, AccountRepository, AuditRecord, DeliveryQueue, NewAccount, OutboxEvent, OutboxStore,
    QueuedDelivery, RepoError, ResetCommit, ResetOutcome, SealedDelivery,
};
pub use crate::secrets::{HashError, HashSettings, PasswordHasher, hasher};
