//! gRPC adapters: parse the request into domain types, call one domain method, map the result.

pub mod account;
pub mod context;
pub mod i18n;
pub mod localized;
pub mod openapi;
pub mod recovery;
pub mod redact;
pub mod status;

use chrono::{DateTime, Utc};

pub use account::AccountApi;
pub use context::ClientResolver;
pub use recovery::RecoveryApi;

pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
