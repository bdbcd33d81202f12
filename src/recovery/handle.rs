//! The `Recovery` handle: the ports and settings every use case (flow, reset, limits, the
//! account use cases in `accounts`) runs on. Kept apart from the use cases so that the modules
//! holding them import it and never each other.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::breach::BreachCheck;
use super::flow::FlowSettings;
use super::policy::PasswordPolicy;
use super::ports::{AccountRepository, Deliveries, EphemeralStore};
use crate::clock::{Clock, DAY_SECS};
use crate::secrets::{KeyRing, PasswordHasher};

/// HMAC purposes: a MAC made for one can never be taken for another.
pub(crate) const CODE_PURPOSE: &str = "code";
pub(crate) const TOKEN_PURPOSE: &str = "reset-token";
pub(crate) const LOGIN_PURPOSE: &str = "login";
pub(crate) const REPORT_PURPOSE: &str = "report-code";
pub(crate) const DEVICE_PURPOSE: &str = "device-token";

/// How long a device token names its browser to the account: 180 days, so a person who
/// recovers twice a year keeps the reserved mail budget.
pub const DEVICE_TOKEN_TTL: Duration = Duration::from_secs(180 * DAY_SECS);

/// Average 25 000 SHA-256 hashes per solve: about a second for the widget on a phone, ~5 ms for
/// a native bot on one core;
/// see docs/security.md "Proof of work".
pub const DEFAULT_POW_MAX_NUMBER: u32 = 50_000;

/// The cost of the work offered instead of the picture (`[captcha] alternative = "pow"`): it
/// replaces a person, so it is twenty times `DEFAULT_POW_MAX_NUMBER`. An average 500 000 SHA-256
/// hashes: ~0.6 s in the page's worker on one core of this VM (~850 000 hashes/s), a few seconds
/// on a slow phone, ~0.1 s of one core for a native bot (~4 million hashes/s); see
/// docs/security.md "The way round the picture".
pub const DEFAULT_POW_ALTERNATIVE_MAX_NUMBER: u32 = 1_000_000;

/// Who is calling, as far as the transport can tell.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// Which proof a `StartRecovery` needs (`RECOVERY_CAPTCHA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptchaMode {
    /// No proof asked for.
    Off,
    /// The picture of digits (`on` means this).
    #[default]
    Image,
    /// An ALTCHA proof of work: no person needed, but each try costs the caller CPU.
    Pow,
    /// Both: a bot must read the picture and pay for the work.
    Both,
}

/// The way through the image captcha for a person who cannot read the picture
/// (`[captcha] alternative`). WCAG 2.2 (1.1.1, 3.3.8 Accessible Authentication) asks for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CaptchaAlternative {
    /// A proof of work at `pow_alternative_max_number`, accepted instead of the digits.
    #[default]
    Pow,
    /// The digits only: a person who cannot read the picture cannot recover.
    None,
}

/// What `StartRecovery` checks: the mode with its alternative worked out. `Both` takes no
/// alternative: it exists to make a caller read the picture *and* pay for the work, and work
/// instead of the picture would turn it into `DigitsOrWork` at a higher price for everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptchaCheck {
    Off,
    Digits,
    DigitsOrWork,
    Work,
    DigitsAndWork,
}

impl CaptchaCheck {
    pub fn new(mode: CaptchaMode, alternative: CaptchaAlternative) -> Self {
        match (mode, alternative) {
            (CaptchaMode::Off, _) => Self::Off,
            (CaptchaMode::Image, CaptchaAlternative::Pow) => Self::DigitsOrWork,
            (CaptchaMode::Image, CaptchaAlternative::None) => Self::Digits,
            (CaptchaMode::Pow, _) => Self::Work,
            (CaptchaMode::Both, _) => Self::DigitsAndWork,
        }
    }

    /// Whether `CreateCaptcha` draws a picture that is checked.
    pub fn digits(self) -> bool {
        !matches!(self, Self::Off | Self::Work)
    }

    /// Whether `CreateCaptcha` hands out a proof of work.
    pub fn work(self) -> bool {
        !matches!(self, Self::Off | Self::Digits)
    }
}

#[derive(Debug, Clone)]
pub struct RecoverySettings {
    pub flow: FlowSettings,
    pub captcha: CaptchaMode,
    pub captcha_alternative: CaptchaAlternative,
    pub captcha_ttl: Duration,
    pub captcha_digits: u32,
    /// Largest secret number of a proof of work: a solve takes max_number / 2 hashes on average.
    pub pow_max_number: u32,
    /// The same for the work offered instead of the picture (`CaptchaCheck::DigitsOrWork`).
    pub pow_alternative_max_number: u32,
    pub limits: RateLimits,
    /// `[events] include_flow_events`: `recovery.started` and `recovery.code_verified` also go to
    /// the outbox (stream and webhooks), for SIEMs.
    pub flow_events: bool,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            flow: FlowSettings::default(),
            captcha: CaptchaMode::Image,
            captcha_alternative: CaptchaAlternative::Pow,
            captcha_ttl: Duration::from_secs(300),
            captcha_digits: 6,
            pow_max_number: DEFAULT_POW_MAX_NUMBER,
            pow_alternative_max_number: DEFAULT_POW_ALTERNATIVE_MAX_NUMBER,
            limits: RateLimits::default(),
            flow_events: false,
        }
    }
}

impl RecoverySettings {
    pub fn captcha_check(&self) -> CaptchaCheck {
        CaptchaCheck::new(self.captcha, self.captcha_alternative)
    }
}

/// A fixed window: at most `limit` in `window_secs`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub struct RateLimit {
    /// Calls allowed per window.
    #[schemars(range(min = 1, max = u32::MAX))]
    pub limit: u32,
    /// Length of the window in seconds (at most 7 days).
    #[schemars(range(min = 1, max = 7 * DAY_SECS))]
    pub window_secs: u64,
}

/// Defaults are chosen so a person never meets them and a script meets them fast; see
/// SECURITY.md.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RateLimits {
    /// Off only for benchmarks and closed test set-ups: every limit below stops counting.
    pub enabled: bool,
    /// Recovery starts per login (known or not: the answer must not differ).
    pub per_login: RateLimit,
    /// Recovery RPCs per client IP: an IPv4 address, or an IPv6 network of
    /// `ipv6_prefix_len` bits.
    pub per_ip: RateLimit,
    /// IPv6 clients are counted per network of this many leading bits (64: one subscriber
    /// or host usually gets a /64; 128 counts single addresses, which gives each client
    /// 2^64 buckets). IPv4 is always counted per address. Shorter than /32 would lump whole
    /// providers into one bucket.
    #[schemars(range(min = 32, max = 128))]
    pub ipv6_prefix_len: u8,
    /// Recovery RPCs per client network, an IPv4 /24 or IPv6 /48, checked after `per_ip` and
    /// before `global`: an attacker rotating through the addresses of one block (a cloud
    /// provider's /24, a delegated /48) stays under `per_ip` with each address but not here.
    /// Refused like `per_ip` (`scope=client_ip`). Several times `per_ip`, so a few people
    /// behind one office or carrier network do not meet it.
    pub per_network: RateLimit,
    /// Recovery RPCs for the whole service (all replicas share it through the store).
    pub global: RateLimit,
    /// `VerifyPassword` attempts per login (online guessing).
    pub verify_password_per_login: RateLimit,
    /// Codes weighed by `VerifyCode` per account, across all its flows (unknown logins: per
    /// login key, same numbers). This, not the per-flow attempts, bounds code guessing: see
    /// SECURITY.md for the yearly success probability these numbers give.
    pub verify_code_per_account: RateLimit,
    /// Codes mailed per account across all its flows (unknown logins: per login key): caps the
    /// mail an attacker can make a victim receive.
    pub send_code_per_account: RateLimit,
    /// Codes mailed per account for flows started with a valid device token of that account (a
    /// browser that reset its password before): a budget of its own that anonymous callers
    /// cannot spend, so the owner still gets a code after an attacker spent
    /// `send_code_per_account`.
    pub send_code_known_device: RateLimit,
    /// `AdminStartRecovery` calls per authenticated caller (API key, client certificate
    /// identity, or the loopback peer). Helpdesk starts never spend, and are never refused by,
    /// the anonymous per-account budgets; this bounds what one caller can start.
    pub helpdesk_per_caller: RateLimit,
    /// Breached-password ranges fetched upstream per client IP (IPv6 per `ipv6_prefix_len`),
    /// for ranges not in the cache: bounds the upstream requests and the cache churn one
    /// caller can cause (`breach_check`). Past it: `RATE_LIMITED`, scope `client_ip`.
    pub breach_fetch_per_ip: RateLimit,
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
            ipv6_prefix_len: 64,
            // Four addresses' worth of per_ip (a /24 holds 256).
            per_network: RateLimit {
                limit: 1200,
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
            // 20 guesses a day at 10^-6 each: 0.73 % a year (SECURITY.md); the owner needs one.
            verify_code_per_account: RateLimit {
                limit: 20,
                window_secs: 24 * 3600,
            },
            send_code_per_account: RateLimit {
                limit: 10,
                window_secs: 24 * 3600,
            },
            send_code_known_device: RateLimit {
                limit: 5,
                window_secs: 24 * 3600,
            },
            // A helpdesk desk handles a few recoveries an hour; a leaked key can start (and mail)
            // at most this many.
            helpdesk_per_caller: RateLimit {
                limit: 60,
                window_secs: 3600,
            },
            // A person tries a few new passwords per reset; a script walking the prefixes
            // meets this at once.
            breach_fetch_per_ip: RateLimit {
                limit: 30,
                window_secs: 600,
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
    /// The one bounded pool for CPU-bound work of the recovery RPCs, off the async workers:
    /// captcha pictures (~1 ms each) and zxcvbn scoring (up to ~ms at the 64-character cap).
    /// (argon2 has its own permits in `PasswordHasher`, bounded by memory.)
    pub cpu_pool: crate::blocking::BlockingPool,
    /// `[breach_check]`; `None` when it is off.
    pub breach: Option<BreachCheck>,
}

/// Supplies captcha answers in place of the CSPRNG (tests only).
pub type CaptchaAnswerSource = Arc<dyn Fn() -> String + Send + Sync>;
