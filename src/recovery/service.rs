//! The recovery use cases, one method per RPC. Each reads the clock once, loads what it needs,
//! asks a pure transition in `flow` what to do, and writes the result with one atomic store
//! operation (compare-and-swap on the flow's version, retried on conflict).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::captcha::CaptchaRecord;
use super::error::{FieldViolation, PolicyViolation, RecoveryError};
use super::flow::{Channel, Flow, FlowSettings, FlowState, Method};
use super::input::{LoginId, ResetToken, VerificationCode};
use super::keys::{self, KeyRing};
use super::masking::mask_email;
use super::policy::PasswordPolicy;
use crate::accounts::{
    Account, AccountRepository, AuditRecord, DeliveryQueue, NewAccount, PasswordHasher,
    ResetCommit, ResetOutcome,
};
use crate::clock::Clock;
use crate::notify::queue::{MessageSealer, Outgoing};
use crate::notify::templates::MessageKind;
use crate::store::{EphemeralStore, RateDecision, Versioned};

const CODE_PURPOSE: &str = "code";
pub(crate) const TOKEN_PURPOSE: &str = "reset-token";
const LOGIN_PURPOSE: &str = "login";
/// Compare-and-swap retries before giving up; 64 covers 50 concurrent writers on one flow.
const MAX_CAS_ATTEMPTS: usize = 64;

/// What a rate limit counts.
#[derive(Debug, Clone, Copy)]
enum LimitScope<'a> {
    /// Recovery starts per login (a keyed hash of it), known or not.
    Login(&'a str),
    /// `VerifyPassword` attempts per login (online guessing of one account's password).
    VerifyPassword(&'a str),
    ClientIp(IpAddr),
    Global,
}

/// Who is calling, as far as the transport can tell.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
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

/// What a UI may know about a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowView {
    pub flow_id: String,
    pub state: &'static str,
    pub methods: Vec<Method>,
    pub expires_at: DateTime<Utc>,
    pub attempts_left: u32,
    pub resend_available_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct CaptchaChallenge {
    pub captcha_id: String,
    pub image_png: Vec<u8>,
    pub expires_at: DateTime<Utc>,
}

pub struct IssuedToken {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// A captcha as typed: id and answer.
pub struct CaptchaAnswer {
    pub id: String,
    pub answer: SecretString,
}

pub struct PasswordCheck {
    pub violations: Vec<PolicyViolation>,
    pub strength: u8,
}

pub struct Recovery {
    pub store: Arc<dyn EphemeralStore>,
    pub accounts: Arc<dyn AccountRepository>,
    pub queue: Arc<dyn DeliveryQueue>,
    pub sealer: MessageSealer,
    pub delivery_wake: Arc<Notify>,
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
}

/// What a reset attempt got to know before it failed, for its audit row.
#[derive(Default)]
struct ResetTrace {
    flow: Option<Flow>,
    /// The repository already wrote the attempt's audit row.
    audited: bool,
}

/// Supplies captcha answers in place of the CSPRNG (tests only).
pub type CaptchaAnswerSource = Arc<dyn Fn() -> String + Send + Sync>;

fn after(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::zero())
}

impl Recovery {
    fn view(&self, flow: &Flow) -> FlowView {
        FlowView {
            flow_id: flow.id.clone(),
            state: flow.state.name(),
            methods: flow.methods.clone(),
            expires_at: flow.expires_at,
            attempts_left: flow.attempts_left(&self.settings.flow),
            resend_available_at: flow.resend_available_at,
        }
    }

    fn audit(
        &self,
        event: &'static str,
        flow: Option<&Flow>,
        ctx: &RequestContext,
        result: &'static str,
    ) -> AuditRecord {
        AuditRecord {
            at: self.clock.now(),
            event,
            account_id: flow.and_then(|f| f.account_id.clone()),
            flow_id: flow.map(|f| f.id.clone()),
            login_key: flow.map(|f| f.login_key.clone()),
            client_ip: ctx.client_ip.map(|ip| ip.to_string()),
            user_agent: ctx.user_agent.clone(),
            result,
            detail: None,
        }
    }

    /// Audit writes never fail the RPC they describe: a lost audit row is logged loudly.
    async fn record(&self, record: AuditRecord) {
        if let Err(error) = self.accounts.record_audit(record).await {
            tracing::error!(error = %error, "audit event could not be written");
        }
    }

    /// Counts one request against `scope` and refuses it past the limit. A refusal is audited
    /// (see `record_limited`) so operators see who is being throttled.
    async fn limit(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        scope: LimitScope<'_>,
    ) -> Result<(), RecoveryError> {
        let limits = &self.settings.limits;
        if !limits.enabled {
            return Ok(());
        }
        let (key, rule, name) = match scope {
            LimitScope::Login(login_key) => {
                (format!("rl:login:{login_key}"), limits.per_login, "login")
            }
            LimitScope::VerifyPassword(login_key) => (
                format!("rl:verify:{login_key}"),
                limits.verify_password_per_login,
                "login",
            ),
            LimitScope::ClientIp(ip) => (format!("rl:ip:{ip}"), limits.per_ip, "client_ip"),
            LimitScope::Global => ("rl:global".to_owned(), limits.global, "global"),
        };
        let window = Duration::from_secs(rule.window_secs.max(1));
        match self.store.hit(&key, rule.limit, window).await? {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after } => {
                let login_key = match scope {
                    LimitScope::Login(key) | LimitScope::VerifyPassword(key) => Some(key),
                    LimitScope::ClientIp(_) | LimitScope::Global => None,
                };
                self.record_limited(ctx, operation, name, &key, window, None, login_key)
                    .await;
                Err(RecoveryError::RateLimited {
                    retry_after,
                    scope: name,
                })
            }
        }
    }

    /// Writes the `recovery.rate_limited` audit row, at most once per limit key and window: a
    /// script hammering a limit must not turn every refused call into a database write (the
    /// limit exists to shed that load). Deduplication costs one store counter instead.
    #[allow(clippy::too_many_arguments)]
    async fn record_limited(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        scope: &'static str,
        limit_key: &str,
        window: Duration,
        flow: Option<&Flow>,
        login_key: Option<&str>,
    ) {
        match self
            .store
            .hit(&format!("{limit_key}:audited"), 1, window)
            .await
        {
            Ok(RateDecision::Allowed) => {}
            Ok(RateDecision::Limited { .. }) => return,
            Err(error) => {
                // Better a duplicate row than a lost one.
                tracing::warn!(error = %error, "rate-limit audit deduplication failed");
            }
        }
        let mut record = self.audit("recovery.rate_limited", flow, ctx, "limited");
        if record.login_key.is_none() {
            record.login_key = login_key.map(str::to_owned);
        }
        record.detail =
            Some(serde_json::json!({ "scope": scope, "operation": operation }).to_string());
        self.record(record).await;
    }

    /// Per-IP and global limits, shared by every recovery RPC.
    async fn limit_caller(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
    ) -> Result<(), RecoveryError> {
        if let Some(ip) = ctx.client_ip {
            self.limit(ctx, operation, LimitScope::ClientIp(ip)).await?;
        }
        self.limit(ctx, operation, LimitScope::Global).await
    }

    fn login_key(&self, login: &LoginId) -> String {
        self.keys
            .sign(LOGIN_PURPOSE, &[login.normalized().as_bytes()])
    }

    async fn load_live(
        &self,
        flow_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Versioned<Flow>, RecoveryError> {
        let loaded = self
            .store
            .load_flow(flow_id)
            .await?
            .ok_or(RecoveryError::FlowNotFound)?;
        loaded.value.ensure_alive(now)?;
        Ok(loaded)
    }

    #[tracing::instrument(skip_all)]
    pub async fn create_captcha(
        &self,
        ctx: &RequestContext,
    ) -> Result<CaptchaChallenge, RecoveryError> {
        self.limit_caller(ctx, "CreateCaptcha").await?;
        let now = self.clock.now();
        let answer = match &self.captcha_answers {
            Some(source) => source(),
            None => keys::random_digits(self.settings.captcha_digits)
                .map_err(RecoveryError::internal)?,
        };
        let seed = keys::random_bytes::<32>().map_err(RecoveryError::internal)?;
        let image_png =
            super::captcha_image::render_png(&answer, seed).map_err(RecoveryError::internal)?;
        let id = uuid::Uuid::new_v4().to_string();
        let expires_at = after(now, self.settings.captcha_ttl);
        let record = CaptchaRecord::new(id.clone(), &answer, &self.keys, expires_at);
        self.store
            .put_captcha(&record, self.settings.captcha_ttl)
            .await?;
        Ok(CaptchaChallenge {
            captcha_id: id,
            image_png,
            expires_at,
        })
    }

    /// `StartRecovery`. Known and unknown logins take the same path with the same store and
    /// database operations; only the flow's hidden `account_id` differs.
    #[tracing::instrument(skip_all, fields(flow_id))]
    pub async fn start(
        &self,
        ctx: &RequestContext,
        login: LoginId,
        captcha: Option<CaptchaAnswer>,
        locale: String,
    ) -> Result<FlowView, RecoveryError> {
        self.limit_caller(ctx, "StartRecovery").await?;
        let now = self.clock.now();
        if self.settings.captcha_enabled {
            let Some(captcha) = captcha else {
                return Err(RecoveryError::InvalidArgument(vec![
                    FieldViolation::new("captcha_id", "is required: call CreateCaptcha first"),
                    FieldViolation::new("captcha_answer", "is required"),
                ]));
            };
            // Taken (read and deleted) before it is checked: the first answer burns it.
            let record = self.store.take_captcha(&captcha.id).await?;
            let accepted =
                record.is_some_and(|r| r.accepts(captcha.answer.expose_secret(), &self.keys, now));
            if !accepted {
                return Err(RecoveryError::CaptchaInvalid);
            }
        }
        let login_key = self.login_key(&login);
        // Before the account lookup: a limited answer must not depend on whether it exists.
        self.limit(ctx, "StartRecovery", LimitScope::Login(&login_key))
            .await?;
        let account = self.accounts.find_by_login(login.normalized()).await?;
        // Methods come from what was typed, never from the account: showing the address on
        // file would tell an attacker the account exists.
        let methods = vec![Method {
            channel: Channel::Email,
            masked_destination: mask_email(login.typed()),
        }];
        let mut flow = Flow::start(
            uuid::Uuid::new_v4().to_string(),
            account.as_ref().map(|a| a.id.clone()),
            login_key.clone(),
            methods,
            locale,
            now,
            &self.settings.flow,
        );
        flow.password_version = account.as_ref().map_or(0, |a| a.password_version);
        tracing::Span::current().record("flow_id", flow.id.as_str());
        let ttl = flow.remaining(now);
        self.store.insert_flow(&flow, ttl).await?;
        let owner = flow
            .account_id
            .clone()
            .unwrap_or_else(|| format!("unknown:{login_key}"));
        self.store.add_account_flow(&owner, &flow.id, ttl).await?;
        self.record(self.audit("recovery.started", Some(&flow), ctx, "ok"))
            .await;
        Ok(self.view(&flow))
    }

    #[tracing::instrument(skip_all)]
    pub async fn get(&self, flow_id: &str) -> Result<FlowView, RecoveryError> {
        let now = self.clock.now();
        let flow = self.load_live(flow_id, now).await?;
        Ok(self.view(&flow.value))
    }

    /// Applies `transition` to the stored flow with compare-and-swap, retrying when another
    /// request changed the flow in between. Returns the flow as written and the previous one.
    async fn update_flow<T>(
        &self,
        flow_id: &str,
        now: DateTime<Utc>,
        mut transition: impl FnMut(&Flow) -> Result<(Option<Flow>, T), RecoveryError>,
    ) -> Result<(Versioned<Flow>, Option<Flow>, T), RecoveryError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = self
                .store
                .load_flow(flow_id)
                .await?
                .ok_or(RecoveryError::FlowNotFound)?;
            let (next, outcome) = transition(&current.value)?;
            let Some(next) = next else {
                return Ok((current, None, outcome));
            };
            if self
                .store
                .replace_flow(&next, current.version, next.remaining(now))
                .await?
            {
                return Ok((current, Some(next), outcome));
            }
            tokio::task::yield_now().await;
        }
        Err(RecoveryError::Unavailable(anyhow::anyhow!(
            "flow {flow_id} kept changing under contention"
        )))
    }

    #[tracing::instrument(skip_all, fields(flow_id = %flow_id))]
    pub async fn send_code(
        &self,
        ctx: &RequestContext,
        flow_id: &str,
        channel: Option<Channel>,
    ) -> Result<FlowView, RecoveryError> {
        self.limit_caller(ctx, "SendVerificationCode").await?;
        let now = self.clock.now();
        let settings = &self.settings.flow;
        let mut issued_code = None;
        let mut capped_flow = None;
        let updated = self
            .update_flow(flow_id, now, |flow| {
                flow.ensure_alive(now)?;
                let channel = flow.pick_channel(channel)?;
                let code = keys::random_digits(VerificationCode::DIGITS as u32)
                    .map_err(RecoveryError::internal)?;
                let mac = self
                    .keys
                    .sign(CODE_PURPOSE, &[flow.id.as_bytes(), code.as_bytes()]);
                let next = flow
                    .send_code(channel, mac, now, settings)
                    .inspect_err(|error| {
                        if matches!(error, RecoveryError::RateLimited { .. }) {
                            capped_flow = Some(flow.clone());
                        }
                    })?;
                issued_code = Some(SecretString::from(code));
                Ok((Some(next), ()))
            })
            .await;
        let (previous, next, ()) = match updated {
            Ok(updated) => updated,
            Err(error) => {
                if let (RecoveryError::RateLimited { scope, .. }, Some(flow)) =
                    (&error, &capped_flow)
                {
                    // The per-flow send cap is a mail-flooding defence: audit it like the
                    // other limits.
                    tracing::info!("code send refused: send cap reached");
                    self.record_limited(
                        ctx,
                        "SendVerificationCode",
                        scope,
                        &format!("rl:flow:{}", flow.id),
                        flow.remaining(now).max(Duration::from_secs(1)),
                        Some(flow),
                        None,
                    )
                    .await;
                } else if matches!(error, RecoveryError::ResendTooSoon { .. }) {
                    tracing::info!("code send refused: resend cooldown");
                }
                return Err(error);
            }
        };
        let (Some(next), Some(code)) = (next, issued_code) else {
            return Err(RecoveryError::internal(anyhow::anyhow!(
                "send transition wrote nothing"
            )));
        };
        let code_expires_at = match &next.state {
            FlowState::CodeSent {
                code_expires_at, ..
            } => *code_expires_at,
            _ => next.expires_at,
        };
        // Same lookup for unknown logins (by an id that cannot exist), so the database sees the
        // same work.
        let lookup_id = next
            .account_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::nil().to_string());
        let recipient = self
            .accounts
            .find_by_id(&lookup_id)
            .await?
            .map(|account| account.email);
        let message = Outgoing {
            kind: MessageKind::VerificationCode.name().to_owned(),
            to: recipient,
            locale: next.locale.clone(),
            masked_login: next
                .methods
                .first()
                .map(|m| m.masked_destination.clone())
                .unwrap_or_default(),
            code: Some(code.expose_secret().to_owned()),
            code_expires_at: Some(code_expires_at),
            changed_at: None,
        };
        let enqueued = async {
            let delivery = self
                .sealer
                .to_delivery(&message, code_expires_at, now)
                .map_err(RecoveryError::internal)?;
            self.queue
                .enqueue(delivery)
                .await
                .map_err(RecoveryError::from)
        }
        .await;
        if let Err(error) = enqueued {
            // Nothing may be consumed by a failed send: put the flow back as it was so the
            // cooldown and the send cap are not spent on a message that was never queued.
            let _ = self
                .store
                .replace_flow(
                    &previous.value,
                    previous.version + 1,
                    previous.value.remaining(now),
                )
                .await;
            return Err(error);
        }
        self.delivery_wake.notify_one();
        self.record(self.audit("recovery.code_sent", Some(&next), ctx, "ok"))
            .await;
        Ok(self.view(&next))
    }

    #[tracing::instrument(skip_all, fields(flow_id = %flow_id))]
    pub async fn verify(
        &self,
        ctx: &RequestContext,
        flow_id: &str,
        code: VerificationCode,
    ) -> Result<IssuedToken, RecoveryError> {
        self.limit_caller(ctx, "VerifyCode").await?;
        let now = self.clock.now();
        let settings = &self.settings.flow;
        let token = SecretString::from(keys::random_token().map_err(RecoveryError::internal)?);
        let token_mac = self
            .keys
            .sign(TOKEN_PURPOSE, &[token.expose_secret().as_bytes()]);
        // The index entry is written first: it is harmless until the flow says VERIFIED with
        // this very token, and writing it after could lose it and strand a verified flow.
        self.store
            .put_token(&token_mac, flow_id, settings.token_ttl)
            .await?;
        let (current, next, outcome) = self
            .update_flow(flow_id, now, |flow| {
                let matches = match &flow.state {
                    FlowState::CodeSent { code_mac, .. } => self.keys.verify(
                        CODE_PURPOSE,
                        &[flow.id.as_bytes(), code.expose().as_bytes()],
                        code_mac,
                    ),
                    _ => false,
                };
                let verification = flow.verify_code(matches, token_mac.clone(), now, settings);
                Ok((verification.next, verification.outcome))
            })
            .await?;
        let event = match (&outcome, &next) {
            (Ok(()), _) => ("recovery.code_verified", "ok"),
            (Err(RecoveryError::CodeInvalid { attempts_left: 0 }), _) => {
                ("recovery.flow_locked", "locked")
            }
            (Err(RecoveryError::CodeInvalid { .. }), _) => ("recovery.code_failed", "wrong_code"),
            (Err(RecoveryError::CodeExpired), _) => ("recovery.code_failed", "expired"),
            (Err(RecoveryError::AttemptsExhausted), _) => ("recovery.code_failed", "locked"),
            (Err(_), _) => ("recovery.code_failed", "refused"),
        };
        // A refusal writes nothing (`next` is None), but the row still names the flow and its
        // account: repeated tries on a locked or expired flow are what an auditor looks for.
        self.record(self.audit(
            event.0,
            Some(next.as_ref().unwrap_or(&current.value)),
            ctx,
            event.1,
        ))
        .await;
        outcome?;
        let expires_at = match next.map(|f| f.state) {
            Some(FlowState::Verified {
                token_expires_at, ..
            }) => token_expires_at,
            _ => after(now, settings.token_ttl),
        };
        Ok(IssuedToken { token, expires_at })
    }

    /// Finds the verified flow a token belongs to (trying every key, for rotation).
    async fn flow_for_token(
        &self,
        token: &ResetToken,
        now: DateTime<Utc>,
    ) -> Result<(Versioned<Flow>, String), RecoveryError> {
        for mac in self
            .keys
            .sign_all(TOKEN_PURPOSE, &[token.expose().as_bytes()])
        {
            let Some(flow_id) = self.store.token_flow(&mac).await? else {
                continue;
            };
            let Some(flow) = self.store.load_flow(&flow_id).await? else {
                continue;
            };
            if flow
                .value
                .usable_token(now)
                .is_some_and(|(stored, _)| stored == mac)
            {
                return Ok((flow, mac));
            }
        }
        Err(RecoveryError::TokenInvalid)
    }

    /// The stateless rules plus history: every violation at once.
    async fn check_new_password(
        &self,
        password: &SecretString,
        login: Option<&str>,
        email: Option<&str>,
        history: &[String],
    ) -> Result<(SecretString, PasswordCheck), RecoveryError> {
        let local = login.map(|l| l.split_once('@').map_or(l, |(local, _)| local));
        let inputs: Vec<&str> = [login, email, local].into_iter().flatten().collect();
        let assessment = self.policy.assess(password.expose_secret(), local, &inputs);
        let normalized = SecretString::from(assessment.normalized);
        let mut violations = assessment.violations;
        // Only hash-compare a password that could otherwise be accepted: argon2 is expensive,
        // and the length bound has already been enforced.
        if violations.is_empty()
            && !history.is_empty()
            && self.hasher.matches_any(&normalized, history).await?
        {
            violations.push(PasswordPolicy::reused_violation());
        }
        Ok((
            normalized,
            PasswordCheck {
                violations,
                strength: assessment.strength,
            },
        ))
    }

    #[tracing::instrument(skip_all, fields(flow_id))]
    pub async fn reset_password(
        &self,
        ctx: &RequestContext,
        token: ResetToken,
        new_password: SecretString,
        confirmation: SecretString,
    ) -> Result<DateTime<Utc>, RecoveryError> {
        let mut trace = ResetTrace::default();
        let result = self
            .try_reset_password(ctx, token, new_password, confirmation, &mut trace)
            .await;
        // Every refused reset attempt is in the audit trail, not only those that reached the
        // database: a token replayed, or a flow that lost to another reset of the account, is
        // exactly what an investigation looks for.
        if matches!(result, Err(RecoveryError::TokenInvalid)) && !trace.audited {
            self.record(self.audit(
                "recovery.password_reset",
                trace.flow.as_ref(),
                ctx,
                "token_invalid",
            ))
            .await;
        }
        result
    }

    async fn try_reset_password(
        &self,
        ctx: &RequestContext,
        token: ResetToken,
        new_password: SecretString,
        confirmation: SecretString,
        trace: &mut ResetTrace,
    ) -> Result<DateTime<Utc>, RecoveryError> {
        self.limit_caller(ctx, "ResetPassword").await?;
        let now = self.clock.now();
        let settings = &self.settings.flow;
        let (found, token_mac) = self.flow_for_token(&token, now).await?;
        let flow = found.value.clone();
        trace.flow = Some(flow.clone());
        tracing::Span::current().record("flow_id", flow.id.as_str());
        let account_id = flow.account_id.clone().ok_or(RecoveryError::TokenInvalid)?;
        let account = self
            .accounts
            .find_by_id(&account_id)
            .await?
            .ok_or(RecoveryError::TokenInvalid)?;
        if new_password.expose_secret() != confirmation.expose_secret() {
            return Err(RecoveryError::PasswordMismatch);
        }
        let depth = self.policy.settings().history_depth + 1;
        let history = self.accounts.password_history(&account.id, depth).await?;
        let (normalized, check) = self
            .check_new_password(
                &new_password,
                Some(&account.login_id),
                Some(&account.email),
                &history,
            )
            .await?;
        if !check.violations.is_empty() {
            // A concurrent call with the same token may have reset the password between the
            // token check and the history read, making this very password "reused": then the
            // token is what failed, and the caller must hear that rather than a policy
            // complaint that no other password would get past either.
            self.flow_for_token(&token, now).await?;
            return Err(RecoveryError::PasswordPolicy(check.violations));
        }
        let new_hash = self.hasher.hash(&normalized).await?;

        // Take the token. From here on a failure must give it back.
        let (held, _, ()) = self
            .update_flow(&flow.id, now, |current| {
                Ok((Some(current.begin_reset(&token_mac, now, settings)?), ()))
            })
            .await
            .map_err(|error| match error {
                // The flow was ended meanwhile (another reset of the account won): to the
                // caller, that is a dead token.
                RecoveryError::FlowNotFound => RecoveryError::TokenInvalid,
                other => other,
            })?;
        let held_version = held.version + 1;
        let commit = self.reset_commit(&flow, &account, new_hash, now, ctx, depth)?;
        let outcome = match self.accounts.commit_reset(commit).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let held_flow = flow
                    .begin_reset(&token_mac, now, settings)
                    .unwrap_or_else(|_| flow.clone());
                let _ = self
                    .store
                    .replace_flow(
                        &held_flow.release_reset(),
                        held_version,
                        flow.remaining(now),
                    )
                    .await;
                return Err(error.into());
            }
        };
        match outcome {
            ResetOutcome::Stale => {
                // Another flow changed the password after this one started: this token is dead.
                // The repository has audited the refusal with the rest of the attempt.
                trace.audited = true;
                self.store.delete_flow(&flow.id).await?;
                Err(RecoveryError::TokenInvalid)
            }
            ResetOutcome::Applied => {
                let completed = flow.complete(now);
                let _ = self
                    .store
                    .replace_flow(&completed, held_version, completed.remaining(now))
                    .await;
                self.end_other_flows(&account.id, &flow.id).await;
                self.delivery_wake.notify_one();
                self.event_wake.notify_one();
                Ok(now)
            }
        }
    }

    fn reset_commit(
        &self,
        flow: &Flow,
        account: &Account,
        new_hash: String,
        now: DateTime<Utc>,
        ctx: &RequestContext,
        history_keep: u32,
    ) -> Result<ResetCommit, RecoveryError> {
        let event_id = uuid::Uuid::now_v7().to_string();
        let event_payload = serde_json::json!({
            "event_id": event_id,
            "type": "password.changed",
            "account_id": account.id,
            "occurred_at": now.to_rfc3339(),
            "flow_id": flow.id,
        })
        .to_string();
        let notice = Outgoing {
            kind: MessageKind::PasswordChanged.name().to_owned(),
            to: Some(account.email.clone()),
            locale: flow.locale.clone(),
            masked_login: mask_email(&account.login_id),
            code: None,
            code_expires_at: None,
            changed_at: Some(now),
        };
        let notice = self
            .sealer
            .to_delivery(&notice, after(now, self.notice_lifetime), now)
            .map_err(RecoveryError::internal)?;
        Ok(ResetCommit {
            account_id: account.id.clone(),
            flow_id: flow.id.clone(),
            expected_password_version: flow.password_version,
            new_hash,
            changed_at: now,
            history_keep,
            event_id,
            event_payload,
            audit: self.audit("recovery.password_reset", Some(flow), ctx, "ok"),
            notice: Some(notice),
        })
    }

    /// After a reset every other open flow of the account ends (their tokens and codes die).
    async fn end_other_flows(&self, account_id: &str, keep: &str) {
        let others = match self.store.account_flows(account_id).await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(error = %error, "open flows could not be listed; the database guard still refuses them");
                return;
            }
        };
        for id in others.iter().filter(|id| id.as_str() != keep) {
            if let Err(error) = self.store.delete_flow(id).await {
                tracing::warn!(error = %error, "an open flow could not be ended; the database guard still refuses it");
            }
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn validate_password(
        &self,
        password: &SecretString,
        login: Option<&LoginId>,
    ) -> Result<PasswordCheck, RecoveryError> {
        let (_, check) = self
            .check_new_password(password, login.map(LoginId::normalized), None, &[])
            .await?;
        Ok(check)
    }

    #[tracing::instrument(skip_all, fields(flow_id = %flow_id))]
    pub async fn cancel(&self, ctx: &RequestContext, flow_id: &str) -> Result<(), RecoveryError> {
        self.limit_caller(ctx, "CancelRecovery").await?;
        let now = self.clock.now();
        let flow = self.load_live(flow_id, now).await?;
        self.store.delete_flow(flow_id).await?;
        self.record(self.audit("recovery.cancelled", Some(&flow.value), ctx, "ok"))
            .await;
        Ok(())
    }

    /// `AccountService.CreateAccount`.
    #[tracing::instrument(skip_all)]
    pub async fn create_account(
        &self,
        login: LoginId,
        email: Option<LoginId>,
        phone: Option<String>,
        password: SecretString,
    ) -> Result<Account, RecoveryError> {
        let email = email.map_or_else(|| login.typed().to_owned(), |e| e.typed().to_owned());
        let (normalized, check) = self
            .check_new_password(&password, Some(login.normalized()), Some(&email), &[])
            .await?;
        if !check.violations.is_empty() {
            return Err(RecoveryError::PasswordPolicy(check.violations));
        }
        let password_hash = self.hasher.hash(&normalized).await?;
        let account = self
            .accounts
            .create_account(NewAccount {
                id: uuid::Uuid::new_v4().to_string(),
                login_id: login.typed().to_owned(),
                login_normalized: login.normalized().to_owned(),
                email,
                phone,
                password_hash,
                created_at: self.clock.now(),
            })
            .await?;
        Ok(account)
    }

    /// `AccountService.VerifyPassword`: unknown logins are verified against a dummy hash so
    /// they take as long as known ones.
    #[tracing::instrument(skip_all)]
    pub async fn verify_password(
        &self,
        ctx: &RequestContext,
        login: LoginId,
        password: SecretString,
    ) -> Result<Option<String>, RecoveryError> {
        let login_key = self.login_key(&login);
        // Before the account lookup, for the same reason as in `start`.
        self.limit(
            ctx,
            "VerifyPassword",
            LimitScope::VerifyPassword(&login_key),
        )
        .await?;
        let account = self.accounts.find_by_login(login.normalized()).await?;
        let normalized = SecretString::from(self.policy.normalize(password.expose_secret()));
        let verified = self
            .hasher
            .verify(
                &normalized,
                account.as_ref().map(|a| a.password_hash.as_str()),
            )
            .await?;
        let Some(account) = account.filter(|_| verified.valid) else {
            return Ok(None);
        };
        if verified.needs_rehash {
            // Parameters were raised since this hash was made: upgrade it now that we hold the
            // password. A failure here must not fail the login.
            match self.hasher.hash(&normalized).await {
                Ok(new_hash) => {
                    if let Err(error) = self
                        .accounts
                        .upgrade_hash(&account.id, &account.password_hash, &new_hash)
                        .await
                    {
                        tracing::warn!(error = %error, "rehash could not be stored");
                    }
                }
                Err(error) => tracing::warn!(error = %error, "rehash failed"),
            }
        }
        Ok(Some(account.id))
    }
}

impl Recovery {
    /// `recovery-service account create`: the same rules as the RPC, with errors spelled out
    /// for a terminal.
    pub async fn create_account_cli(
        &self,
        login_id: &str,
        email: Option<&str>,
        phone: Option<&str>,
        password: SecretString,
    ) -> anyhow::Result<Account> {
        use super::error::Violations;
        use super::input;
        let mut violations = Violations::new();
        let login = violations.check(LoginId::parse("login_id", login_id));
        let email = violations.check(input::parse_optional_email("email", email.unwrap_or("")));
        let phone = violations.check(input::parse_optional_phone("phone", phone.unwrap_or("")));
        let password = violations
            .check(input::parse_password("password", password.expose_secret()).map(|_| password));
        let parsed =
            violations
                .into_result()
                .and_then(|()| match (login, email, phone, password) {
                    (Some(login), Some(email), Some(phone), Some(password)) => {
                        Ok((login, email, phone, password))
                    }
                    _ => Err(RecoveryError::internal(anyhow::anyhow!(
                        "parsed fields missing"
                    ))),
                });
        let result = match parsed {
            Ok((login, email, phone, password)) => {
                self.create_account(login, email, phone, password).await
            }
            Err(error) => Err(error),
        };
        result.map_err(|error| anyhow::anyhow!(describe(&error)))
    }
}

/// A one-line explanation of an error for a terminal (never contains a secret value).
pub fn describe(error: &RecoveryError) -> String {
    match error {
        RecoveryError::InvalidArgument(violations) => violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; "),
        RecoveryError::PasswordPolicy(violations) => violations
            .iter()
            .map(|v| format!("password {} ({})", v.message, v.reason))
            .collect::<Vec<_>>()
            .join("; "),
        other => format!("{other}: {}", other.source_chain()),
    }
}

impl RecoveryError {
    fn source_chain(&self) -> String {
        let mut chain = Vec::new();
        let mut source = std::error::Error::source(self);
        while let Some(error) = source {
            chain.push(error.to_string());
            source = error.source();
        }
        chain.join(": ")
    }
}
