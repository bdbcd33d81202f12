//! The recovery flow as a state machine. Each transition takes `now` and returns the next flow
//! (to be written with a compare-and-swap by the caller) or the error to answer with; nothing
//! here reads a clock, a store or a key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{FieldViolation, RecoveryError};
use crate::clock::after;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Method {
    pub channel: Channel,
    pub masked_destination: String,
}

/// Lifetimes and limits of a flow (the defaults are in `config`).
#[derive(Debug, Clone)]
pub struct FlowSettings {
    pub flow_ttl: Duration,
    pub code_ttl: Duration,
    pub token_ttl: Duration,
    pub max_attempts: u32,
    pub resend_cooldown: Duration,
    pub max_sends: u32,
    /// Digits of a verification code (6-10).
    pub code_digits: u32,
    /// How long a `ResetPassword` in progress holds the token before another may try.
    pub reset_lease: Duration,
    /// How long a reported unrequested recovery freezes recovery for the account (and how long
    /// a mailed report code stays usable).
    pub report_freeze: Duration,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            flow_ttl: Duration::from_secs(30 * 60),
            code_ttl: Duration::from_secs(10 * 60),
            token_ttl: Duration::from_secs(10 * 60),
            max_attempts: 5,
            resend_cooldown: Duration::from_secs(60),
            max_sends: 5,
            code_digits: 6,
            reset_lease: Duration::from_secs(30),
            report_freeze: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FlowState {
    ChooseMethod,
    CodeSent {
        channel: Channel,
        /// HMAC(secret, flow ‖ code): the code itself is never stored.
        code_mac: String,
        code_expires_at: DateTime<Utc>,
        /// A long code (100 bits, issued once the owner's guess budget was spent): guessing it
        /// is hopeless, so only the flow's `max_attempts` weighs it, not that budget.
        #[serde(default)]
        long_code: bool,
    },
    /// Too many wrong codes: the flow is dead until it expires.
    Locked,
    Verified {
        /// HMAC(secret, token): the token itself is never stored.
        token_mac: String,
        token_expires_at: DateTime<Utc>,
    },
    /// A `ResetPassword` holds the token while it writes the database. If it fails (or the
    /// process dies) the lease runs out and the token is usable again: a failed reset must not
    /// consume it.
    Resetting {
        token_mac: String,
        token_expires_at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    },
    Completed {
        completed_at: DateTime<Utc>,
    },
}

/// The state as a caller may see it: internal states fold into the public one they look like
/// (a locked flow still says `CodeSent`; a reset in progress still says `Verified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStage {
    ChooseMethod,
    CodeSent,
    Verified,
    Completed,
}

impl FlowStage {
    pub fn name(self) -> &'static str {
        match self {
            Self::ChooseMethod => "CHOOSE_METHOD",
            Self::CodeSent => "CODE_SENT",
            Self::Verified => "VERIFIED",
            Self::Completed => "COMPLETED",
        }
    }
}

impl FlowState {
    pub fn stage(&self) -> FlowStage {
        match self {
            Self::ChooseMethod => FlowStage::ChooseMethod,
            Self::CodeSent { .. } | Self::Locked => FlowStage::CodeSent,
            Self::Verified { .. } | Self::Resetting { .. } => FlowStage::Verified,
            Self::Completed { .. } => FlowStage::Completed,
        }
    }

    pub fn name(&self) -> &'static str {
        self.stage().name()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub id: String,
    /// `None` for a login that does not exist: the flow behaves the same, nothing is delivered
    /// and no code ever verifies.
    pub account_id: Option<String>,
    /// The account's password version at start: a reset from this flow applies only if the
    /// password has not changed since.
    #[serde(default)]
    pub password_version: i64,
    /// Keyed hash of the case-folded login: for per-login limits and audit, without the login.
    pub login_key: String,
    pub methods: Vec<Method>,
    pub locale: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub failed_attempts: u32,
    pub sends: u32,
    pub resend_available_at: Option<DateTime<Utc>>,
    pub state: FlowState,
    /// Started by the helpdesk (`AdminStartRecovery`): its codes are not weighed by the
    /// anonymous per-account guess budget (the flow's own `max_attempts` still holds).
    #[serde(default)]
    pub helpdesk: bool,
    /// Started with a valid device token of the account: its mails draw on the reserved
    /// `send_code_known_device` budget instead of the anonymous one.
    #[serde(default)]
    pub known_device: bool,
}

/// What `VerifyCode` decided: the next flow to write, and what to answer once it is written.
#[derive(Debug)]
pub struct Verification {
    pub next: Option<Flow>,
    pub outcome: Result<(), RecoveryError>,
}

fn until(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (then - now).to_std().unwrap_or(Duration::ZERO)
}

impl Flow {
    /// Who a flow's budgets are kept for: its account, or for an unknown login the login key,
    /// so that unknown logins meet the same numbers and the same answers as known ones.
    pub fn owner_of(account_id: Option<&str>, login_key: &str) -> String {
        account_id.map_or_else(|| format!("unknown:{login_key}"), str::to_owned)
    }

    pub fn owner(&self) -> String {
        Self::owner_of(self.account_id.as_deref(), &self.login_key)
    }

    pub fn start(
        id: String,
        account_id: Option<String>,
        login_key: String,
        methods: Vec<Method>,
        locale: String,
        now: DateTime<Utc>,
        settings: &FlowSettings,
    ) -> Self {
        Self {
            id,
            account_id,
            password_version: 0,
            login_key,
            methods,
            locale,
            created_at: now,
            expires_at: after(now, settings.flow_ttl),
            failed_attempts: 0,
            sends: 0,
            resend_available_at: Some(now),
            state: FlowState::ChooseMethod,
            helpdesk: false,
            known_device: false,
        }
    }

    /// An expired flow does not exist, whatever the store still holds.
    pub fn ensure_alive(&self, now: DateTime<Utc>) -> Result<(), RecoveryError> {
        if now >= self.expires_at {
            return Err(RecoveryError::FlowNotFound);
        }
        Ok(())
    }

    /// Time the store should keep this flow.
    pub fn remaining(&self, now: DateTime<Utc>) -> Duration {
        until(now, self.expires_at).max(Duration::from_secs(1))
    }

    pub fn attempts_left(&self, settings: &FlowSettings) -> u32 {
        settings.max_attempts.saturating_sub(self.failed_attempts)
    }

    /// Resolves the channel a person asked for (unspecified: the first method offered).
    pub fn pick_channel(&self, requested: Option<Channel>) -> Result<Channel, RecoveryError> {
        let offered = |channel| self.methods.iter().any(|m| m.channel == channel);
        match requested {
            Some(channel) if offered(channel) => Ok(channel),
            Some(_) => Err(RecoveryError::InvalidArgument(vec![FieldViolation::new(
                "channel",
                "this verification method is not offered for the flow",
            )])),
            None => self
                .methods
                .first()
                .map(|m| m.channel)
                .ok_or(RecoveryError::FlowState {
                    state: "CHOOSE_METHOD",
                }),
        }
    }

    /// `SendVerificationCode`: a new code replaces the old one, within the cooldown and the
    /// send cap.
    pub fn send_code(
        &self,
        channel: Channel,
        code_mac: String,
        now: DateTime<Utc>,
        settings: &FlowSettings,
    ) -> Result<Flow, RecoveryError> {
        self.ensure_alive(now)?;
        match self.state {
            FlowState::ChooseMethod | FlowState::CodeSent { .. } => {}
            FlowState::Locked => return Err(RecoveryError::AttemptsExhausted),
            ref other => {
                return Err(RecoveryError::FlowState {
                    state: other.name(),
                });
            }
        }
        if self.sends >= settings.max_sends {
            return Err(RecoveryError::RateLimited {
                retry_after: until(now, self.expires_at),
                scope: "flow",
            });
        }
        if let Some(available_at) = self.resend_available_at
            && now < available_at
        {
            return Err(RecoveryError::ResendTooSoon {
                retry_after: until(now, available_at),
            });
        }
        let sends = self.sends + 1;
        let mut next = self.clone();
        next.sends = sends;
        next.resend_available_at =
            (sends < settings.max_sends).then(|| after(now, settings.resend_cooldown));
        next.state = FlowState::CodeSent {
            channel,
            code_mac,
            // A code never outlives its flow.
            code_expires_at: after(now, settings.code_ttl).min(self.expires_at),
            long_code: false,
        };
        Ok(next)
    }

    /// The same flow with its current code marked long (see `FlowState::CodeSent`).
    pub fn with_long_code(mut self) -> Flow {
        if let FlowState::CodeSent { long_code, .. } = &mut self.state {
            *long_code = true;
        }
        self
    }

    /// Whether the anonymous per-account guess budget weighs this flow's codes: not for a
    /// helpdesk flow, nor for a long code.
    pub fn guesses_count_against_account(&self) -> bool {
        !self.helpdesk
            && !matches!(
                self.state,
                FlowState::CodeSent {
                    long_code: true,
                    ..
                }
            )
    }

    /// `VerifyCode`. `code_matches` was computed in constant time by the caller. A wrong code is
    /// counted in the same write that answers it, so concurrent guesses cannot exceed the limit.
    pub fn verify_code(
        &self,
        code_matches: bool,
        token_mac: String,
        now: DateTime<Utc>,
        settings: &FlowSettings,
    ) -> Verification {
        let refuse = |error| Verification {
            next: None,
            outcome: Err(error),
        };
        if let Err(error) = self.ensure_alive(now) {
            return refuse(error);
        }
        let code_expires_at = match &self.state {
            FlowState::CodeSent {
                code_expires_at, ..
            } => *code_expires_at,
            FlowState::Locked => return refuse(RecoveryError::AttemptsExhausted),
            other => {
                return refuse(RecoveryError::FlowState {
                    state: other.name(),
                });
            }
        };
        if self.failed_attempts >= settings.max_attempts {
            return refuse(RecoveryError::AttemptsExhausted);
        }
        if now >= code_expires_at {
            return refuse(RecoveryError::CodeExpired);
        }
        let mut next = self.clone();
        // A flow for an unknown login never verifies, even if someone guesses the undelivered
        // code: there is no account to reset.
        if code_matches && self.account_id.is_some() {
            next.state = FlowState::Verified {
                token_mac,
                token_expires_at: after(now, settings.token_ttl).min(self.expires_at),
            };
            next.resend_available_at = None;
            return Verification {
                next: Some(next),
                outcome: Ok(()),
            };
        }
        next.failed_attempts += 1;
        let attempts_left = next.attempts_left(settings);
        if attempts_left == 0 {
            next.state = FlowState::Locked;
            next.resend_available_at = None;
        }
        Verification {
            next: Some(next),
            outcome: Err(RecoveryError::CodeInvalid { attempts_left }),
        }
    }

    /// The token of a verified flow, if it is still usable at `now` (not expired, not held by
    /// a reset in progress).
    pub fn usable_token(&self, now: DateTime<Utc>) -> Option<(&str, DateTime<Utc>)> {
        if now >= self.expires_at {
            return None;
        }
        match &self.state {
            FlowState::Verified {
                token_mac,
                token_expires_at,
            } if now < *token_expires_at => Some((token_mac, *token_expires_at)),
            FlowState::Resetting {
                token_mac,
                token_expires_at,
                lease_until,
            } if now < *token_expires_at && now >= *lease_until => {
                Some((token_mac, *token_expires_at))
            }
            _ => None,
        }
    }

    /// `ResetPassword` takes the token: only one caller can hold it at a time.
    pub fn begin_reset(
        &self,
        token_mac: &str,
        now: DateTime<Utc>,
        settings: &FlowSettings,
    ) -> Result<Flow, RecoveryError> {
        let Some((stored_mac, token_expires_at)) = self.usable_token(now) else {
            return Err(RecoveryError::TokenInvalid);
        };
        if stored_mac != token_mac || self.account_id.is_none() {
            return Err(RecoveryError::TokenInvalid);
        }
        let mut next = self.clone();
        next.state = FlowState::Resetting {
            token_mac: token_mac.to_owned(),
            token_expires_at,
            lease_until: after(now, settings.reset_lease),
        };
        Ok(next)
    }

    /// The reset failed before anything was written: give the token back.
    pub fn release_reset(&self) -> Flow {
        let mut next = self.clone();
        if let FlowState::Resetting {
            token_mac,
            token_expires_at,
            ..
        } = &self.state
        {
            next.state = FlowState::Verified {
                token_mac: token_mac.clone(),
                token_expires_at: *token_expires_at,
            };
        }
        next
    }

    pub fn complete(&self, now: DateTime<Utc>) -> Flow {
        let mut next = self.clone();
        next.state = FlowState::Completed { completed_at: now };
        next.resend_available_at = None;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn new_flow(account: Option<&str>) -> Flow {
        Flow::start(
            "f".into(),
            account.map(str::to_owned),
            "k".into(),
            vec![Method {
                channel: Channel::Email,
                masked_destination: "j***n@e***.com".into(),
            }],
            "en".into(),
            t0(),
            &FlowSettings::default(),
        )
    }

    fn sent(account: Option<&str>) -> Flow {
        new_flow(account)
            .send_code(Channel::Email, "mac".into(), t0(), &FlowSettings::default())
            .unwrap()
    }

    #[test]
    fn a_new_flow_lets_a_code_be_sent_at_once() {
        let flow = sent(Some("a"));
        assert_eq!(flow.state.name(), "CODE_SENT");
        assert_eq!(flow.sends, 1);
        assert_eq!(
            flow.resend_available_at,
            Some(t0() + chrono::Duration::seconds(60))
        );
    }

    #[test]
    fn a_resend_inside_the_cooldown_is_too_soon() {
        let err = sent(Some("a"))
            .send_code(
                Channel::Email,
                "m2".into(),
                t0() + chrono::Duration::seconds(10),
                &FlowSettings::default(),
            )
            .unwrap_err();
        assert!(
            matches!(err, RecoveryError::ResendTooSoon { retry_after } if retry_after == secs(50))
        );
    }

    #[test]
    fn the_sixth_send_is_refused() {
        let settings = FlowSettings::default();
        let mut flow = new_flow(Some("a"));
        let mut now = t0();
        for _ in 0..5 {
            flow = flow
                .send_code(Channel::Email, "m".into(), now, &settings)
                .unwrap();
            now += chrono::Duration::seconds(61);
        }
        assert_eq!(flow.resend_available_at, None);
        assert!(matches!(
            flow.send_code(Channel::Email, "m".into(), now, &settings),
            Err(RecoveryError::RateLimited { scope: "flow", .. })
        ));
    }

    #[test]
    fn verify_before_send_is_a_state_error() {
        let verification =
            new_flow(Some("a")).verify_code(true, "t".into(), t0(), &FlowSettings::default());
        assert!(matches!(
            verification.outcome,
            Err(RecoveryError::FlowState {
                state: "CHOOSE_METHOD"
            })
        ));
        assert!(verification.next.is_none());
    }

    #[test]
    fn the_right_code_verifies_and_the_fifth_wrong_one_locks() {
        let settings = FlowSettings::default();
        let ok = sent(Some("a")).verify_code(true, "t".into(), t0(), &settings);
        assert!(ok.outcome.is_ok());
        assert_eq!(ok.next.unwrap().state.name(), "VERIFIED");

        let mut flow = sent(Some("a"));
        for expected_left in (0..5).rev() {
            let v = flow.verify_code(false, "t".into(), t0(), &settings);
            assert!(
                matches!(v.outcome, Err(RecoveryError::CodeInvalid { attempts_left }) if attempts_left == expected_left)
            );
            flow = v.next.unwrap();
        }
        assert_eq!(flow.state, FlowState::Locked);
        let v = flow.verify_code(true, "t".into(), t0(), &settings);
        assert!(matches!(v.outcome, Err(RecoveryError::AttemptsExhausted)));
    }

    #[test]
    fn an_unknown_login_never_verifies_even_with_the_right_code() {
        let v = sent(None).verify_code(true, "t".into(), t0(), &FlowSettings::default());
        assert!(matches!(
            v.outcome,
            Err(RecoveryError::CodeInvalid { attempts_left: 4 })
        ));
    }

    #[test]
    fn an_expired_code_is_expired_and_not_counted() {
        let v = sent(Some("a")).verify_code(
            true,
            "t".into(),
            t0() + chrono::Duration::minutes(10),
            &FlowSettings::default(),
        );
        assert!(matches!(v.outcome, Err(RecoveryError::CodeExpired)));
        assert!(v.next.is_none());
    }

    #[test]
    fn an_expired_flow_is_not_found() {
        let err = new_flow(Some("a"))
            .send_code(
                Channel::Email,
                "m".into(),
                t0() + chrono::Duration::minutes(30),
                &FlowSettings::default(),
            )
            .unwrap_err();
        assert!(matches!(err, RecoveryError::FlowNotFound));
    }

    #[test]
    fn a_token_is_held_by_one_reset_and_given_back_on_failure() {
        let settings = FlowSettings::default();
        let verified = sent(Some("a"))
            .verify_code(true, "t".into(), t0(), &settings)
            .next
            .unwrap();
        let held = verified.begin_reset("t", t0(), &settings).unwrap();
        assert!(matches!(
            held.begin_reset("t", t0(), &settings),
            Err(RecoveryError::TokenInvalid)
        ));
        let released = held.release_reset();
        assert!(released.begin_reset("t", t0(), &settings).is_ok());
        assert!(matches!(
            verified.begin_reset("other", t0(), &settings),
            Err(RecoveryError::TokenInvalid)
        ));
    }

    #[test]
    fn a_held_token_is_usable_again_after_its_lease() {
        let settings = FlowSettings::default();
        let verified = sent(Some("a"))
            .verify_code(true, "t".into(), t0(), &settings)
            .next
            .unwrap();
        let held = verified.begin_reset("t", t0(), &settings).unwrap();
        assert!(
            held.begin_reset("t", t0() + chrono::Duration::seconds(31), &settings)
                .is_ok()
        );
    }

    #[test]
    fn an_expired_token_is_invalid() {
        let settings = FlowSettings::default();
        let verified = sent(Some("a"))
            .verify_code(true, "t".into(), t0(), &settings)
            .next
            .unwrap();
        assert!(matches!(
            verified.begin_reset("t", t0() + chrono::Duration::minutes(10), &settings),
            Err(RecoveryError::TokenInvalid)
        ));
    }
}
