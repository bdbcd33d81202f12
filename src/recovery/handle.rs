//! The `Recovery` handle: the ports and settings every use case (flow, reset, limits, the
//! account use cases in `accounts`) runs on. Kept apart from the use cases so that the modules
//! holding them import it and never each other.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::flow::FlowSettings;
use super::policy::PasswordPolicy;
use super::ports::{AccountRepository, Deliveries, EphemeralStore};
use crate::clock::Clock;
use crate::secrets::{KeyRing, PasswordHasher};

/// HMAC purposes: a MAC made for one can never be taken for another.
pub(crate) const CODE_PURPOSE: &str = "code";
pub(crate) const TOKEN_PURPOSE: &str = "reset-token";
pub(crate) const LOGIN_PURPOSE: &str = "login";

/// Who is calling, as far as the transport can tell.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RecoverySettings {
    pub flow: FlowSettings,
    pub captcha_enabled: bool,
    pub captcha_ttl: Duration,
    pub captcha_digits: u32,
    pub limits: RateLimits,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            flow: FlowSettings::default(),
            captcha_enabled: true,
            captcha_ttl: Duration::from_secs(300),
            captcha_digits: 6,
            limits: RateLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: u32,
    pub window_secs: u64,
}

/// Defaults are chosen so a person never meets them and a script meets them fast; see
/// SECURITY.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimits {
    pub enabled: bool,
    /// Recovery starts per login (known or not: the answer must not differ).
    pub per_login: RateLimit,
    /// Recovery RPCs per client IP.
    pub per_ip: RateLimit,
    /// Recovery RPCs for the whole service (all replicas share it through the store).
    pub global: RateLimit,
    /// `VerifyPassword` attempts per login (online guessing).
    pub verify_password_per_login: RateLimit,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            per_login: RateLimit {
                limit: 10,
                window_secs: 3600,
            },
            per_ip: RateLimit {
                limit: 300,
                window_secs: 600,
            },
            global: RateLimit {
                limit: 50_000,
                window_secs: 60,
            },
            verify_password_per_login: RateLimit {
                limit: 20,
                window_secs: 300,
            },
        }
    }
}

pub struct Recovery {
    pub store: Arc<dyn EphemeralStore>,
    pub accounts: Arc<dyn AccountRepository>,
    pub deliveries: Arc<dyn Deliveries>,
    /// Wakes the outbox relay after a committed change, so the event leaves at once.
    pub event_wake: Arc<Notify>,
    pub hasher: PasswordHasher,
    pub policy: PasswordPolicy,
    pub keys: KeyRing,
    pub settings: RecoverySettings,
    pub clock: Arc<dyn Clock>,
    pub notice_lifetime: Duration,
    /// Where captcha answers come from: the OS CSPRNG unless a test supplies known answers
    /// (it cannot read the picture).
    pub captcha_answers: Option<CaptchaAnswerSource>,
    /// Captcha pictures are drawn here, off the async workers (~1 ms of CPU each).
    pub captcha_renderer: crate::blocking::BlockingPool,
}

/// Supplies captcha answers in place of the CSPRNG (tests only).
pub type CaptchaAnswerSource = Arc<dyn Fn() -> String + Send + Sync>;
