//! The recovery flow: its states and transitions, codes, captchas, tokens and the password
//! policy. No tonic, no sea-orm, no redis here: the outside world is reached through the traits
//! in `ports`, which this module owns and the adapters implement.

pub mod breach;
pub mod captcha;
pub mod captcha_image;
pub mod commands;
pub mod error;
pub mod flow;
pub mod handle;
pub mod input;
pub mod limits;
pub mod locale;
pub mod policy;
pub mod ports;
pub mod pow;
pub mod report;
mod reset;
pub mod service;

pub use error::{FieldViolation, PolicyViolation, RecoveryError};
pub use handle::{Recovery, RecoverySettings, RequestContext};

use crate::secrets::HashError;
use ports::{RepoError, StoreError};

impl From<StoreError> for RecoveryError {
    fn from(error: StoreError) -> Self {
        let metric = crate::telemetry::metrics::backend_error;
        match error {
            StoreError::Unavailable(source) => {
                metric("store", "unavailable");
                Self::Unavailable(source)
            }
            StoreError::Internal(source) => {
                metric("store", "internal");
                Self::Internal(source)
            }
        }
    }
}

impl From<RepoError> for RecoveryError {
    fn from(error: RepoError) -> Self {
        let metric = crate::telemetry::metrics::backend_error;
        match error {
            RepoError::Unavailable(source) => {
                metric("database", "unavailable");
                Self::Unavailable(source)
            }
            RepoError::Conflict => Self::AccountExists,
            RepoError::Internal(source) => {
                metric("database", "internal");
                Self::Internal(source)
            }
        }
    }
}

impl From<HashError> for RecoveryError {
    fn from(error: HashError) -> Self {
        match error {
            // Every hashing permit is taken and the wait ran out: tell the caller to come back
            // rather than queueing without bound.
            HashError::Busy => Self::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
                scope: "hashing",
            },
            HashError::Failed(detail) => Self::Internal(anyhow::anyhow!(detail)),
        }
    }
}
