//! Rate limits and the audit trail, together because a refused call is itself an audit event:
//! every limit that bites writes `recovery.rate_limited`, de-duplicated per key and window.

use std::net::IpAddr;
use std::time::Duration;

use super::error::RecoveryError;
use super::flow::Flow;
pub use super::handle::{RateLimit, RateLimits};
use super::handle::{Recovery, RequestContext};
use super::input::LoginId;
use super::ports::{AuditRecord, OutboxEvent, RateDecision};

const ACCOUNT_CODES: &str = "rl:acct-codes";
const ACCOUNT_SENDS: &str = "rl:acct-sends";
const ACCOUNT_DEVICE_SENDS: &str = "rl:acct-device-sends";

fn account_key(kind: &str, owner: &str) -> String {
    format!("{kind}:{owner}")
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LimitScope<'a> {
    /// Recovery starts per login (a keyed hash of it), known or not.
    Login(&'a str),
    /// `VerifyPassword` attempts per login (online guessing of one account's password).
    VerifyPassword(&'a str),
    /// Codes weighed by `VerifyCode` per flow owner (account id, or the login key of an
    /// unknown login: see `Flow::owner`).
    VerifyCode(&'a str),
    /// Codes mailed per flow owner.
    SendCode(&'a str),
    /// Codes mailed per account for flows started with a valid device token of it.
    SendCodeKnownDevice(&'a str),
    /// `AdminStartRecovery` calls per authenticated caller.
    Helpdesk(&'a str),
    ClientIp(IpAddr),
    /// Breached-password ranges fetched upstream for one client.
    BreachFetch(IpAddr),
    /// The client's IPv4 /24 or IPv6 /48 (`net::network_bucket`).
    ClientNetwork(IpAddr),
    Global,
}

impl Recovery {
    pub(crate) fn audit(
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
    ///
    /// With `flow_events` on, a successful start or code verification also writes its outbox
    /// event in the same transaction. A start writes one whether or not the login is known (with
    /// `account_id` null when it is not), so the database sees the same writes either way; the
    /// ordering key of such an event is its flow.
    pub(crate) async fn record(&self, record: AuditRecord) {
        let flow_event = self.settings.flow_events
            && record.result == "ok"
            && matches!(record.event, "recovery.started" | "recovery.code_verified");
        let written = if flow_event {
            let event_id = uuid::Uuid::now_v7().to_string();
            let payload = serde_json::json!({
                "event_id": event_id,
                "type": record.event,
                "account_id": record.account_id,
                "flow_id": record.flow_id,
                "occurred_at": record.at.to_rfc3339(),
                "client_ip": record.client_ip,
                "user_agent": record.user_agent,
            })
            .to_string();
            let event = OutboxEvent {
                event_id,
                event_type: record.event.to_owned(),
                aggregate_id: record
                    .account_id
                    .clone()
                    .or_else(|| record.flow_id.clone())
                    .unwrap_or_default(),
                payload,
                created_at: record.at,
            };
            let written = self.accounts.record_audit_with_event(record, event).await;
            if written.is_ok() {
                self.event_wake.notify_one();
            }
            written
        } else {
            self.accounts.record_audit(record).await
        };
        if let Err(error) = written {
            tracing::error!(error = %error, "audit event could not be written");
        }
    }

    /// Counts one request against `scope` and refuses it past the limit. A refusal is audited
    /// (see `record_limited`) so operators see who is being throttled.
    pub(crate) async fn limit(
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
            LimitScope::VerifyCode(owner) => (
                account_key(ACCOUNT_CODES, owner),
                limits.verify_code_per_account,
                "account",
            ),
            LimitScope::SendCode(owner) => (
                account_key(ACCOUNT_SENDS, owner),
                limits.send_code_per_account,
                "account",
            ),
            LimitScope::SendCodeKnownDevice(owner) => (
                account_key(ACCOUNT_DEVICE_SENDS, owner),
                limits.send_code_known_device,
                "account",
            ),
            LimitScope::Helpdesk(caller) => (
                format!("rl:helpdesk:{caller}"),
                limits.helpdesk_per_caller,
                "caller",
            ),
            // IPv6 per /64 (`ipv6_prefix_len`), IPv4 per address; the audit row keeps the full
            // address (`ctx.client_ip`).
            LimitScope::ClientIp(ip) => (
                format!(
                    "rl:ip:{}",
                    crate::net::rate_limit_bucket(ip, limits.ipv6_prefix_len)
                ),
                limits.per_ip,
                "client_ip",
            ),
            LimitScope::BreachFetch(ip) => (
                format!(
                    "rl:breach:{}",
                    crate::net::rate_limit_bucket(ip, limits.ipv6_prefix_len)
                ),
                limits.breach_fetch_per_ip,
                "client_ip",
            ),
            LimitScope::ClientNetwork(ip) => (
                format!("rl:net:{}", crate::net::network_bucket(ip)),
                limits.per_network,
                "network",
            ),
            LimitScope::Global => ("rl:global".to_owned(), limits.global, "global"),
        };
        let window = Duration::from_secs(rule.window_secs.max(1));
        match self.store.hit(&key, rule.limit, window).await? {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after } => {
                let login_key = match scope {
                    LimitScope::Login(key) | LimitScope::VerifyPassword(key) => Some(key),
                    LimitScope::VerifyCode(_)
                    | LimitScope::SendCode(_)
                    | LimitScope::SendCodeKnownDevice(_)
                    | LimitScope::Helpdesk(_)
                    | LimitScope::ClientIp(_)
                    | LimitScope::BreachFetch(_)
                    | LimitScope::ClientNetwork(_)
                    | LimitScope::Global => None,
                };
                // The rows of a budget kept per flow owner name that owner, so an export and an
                // erasure of the person find them: the account, or an unknown login's key.
                let login_key = match scope {
                    LimitScope::VerifyCode(owner) | LimitScope::SendCode(owner) => {
                        owner.strip_prefix("unknown:").or(login_key)
                    }
                    _ => login_key,
                };
                let account_id = match scope {
                    LimitScope::VerifyCode(owner) | LimitScope::SendCode(owner)
                        if !owner.starts_with("unknown:") =>
                    {
                        Some(owner)
                    }
                    _ => None,
                };
                // The audit row says which limit it was; the caller is answered as for its own
                // address (a network is a wider view of the same client).
                self.record_limited_for(
                    ctx, operation, name, &key, window, None, login_key, account_id,
                )
                .await;
                let scope = match scope {
                    LimitScope::ClientNetwork(_) => "client_ip",
                    _ => name,
                };
                Err(RecoveryError::RateLimited { retry_after, scope })
            }
        }
    }

    /// Writes the `recovery.rate_limited` audit row, at most once per limit key and window: a
    /// script hammering a limit must not turn every refused call into a database write (the
    /// limit exists to shed that load). Deduplication costs one store counter instead.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_limited(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        scope: &'static str,
        limit_key: &str,
        window: Duration,
        flow: Option<&Flow>,
        login_key: Option<&str>,
    ) {
        self.record_limited_for(
            ctx, operation, scope, limit_key, window, flow, login_key, None,
        )
        .await;
    }

    /// `record_limited`, naming the account the budget was kept for (when no flow does).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_limited_for(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        scope: &'static str,
        limit_key: &str,
        window: Duration,
        flow: Option<&Flow>,
        login_key: Option<&str>,
        account_id: Option<&str>,
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
        if record.account_id.is_none() {
            record.account_id = account_id.map(str::to_owned);
        }
        record.detail =
            Some(serde_json::json!({ "scope": scope, "operation": operation }).to_string());
        self.record(record).await;
    }

    /// Whether the owner's anonymous guess budget is spent (the next code it would weigh is
    /// refused): then its new codes are long. Read the same way for unknown logins' owners.
    pub(crate) async fn guess_budget_spent(&self, owner: &str) -> Result<bool, RecoveryError> {
        let limits = &self.settings.limits;
        if !limits.enabled {
            return Ok(false);
        }
        let hits = self.store.hits(&account_key(ACCOUNT_CODES, owner)).await?;
        Ok(hits >= u64::from(limits.verify_code_per_account.limit))
    }

    /// Per-IP, per-network and global limits, shared by every recovery RPC.
    pub(crate) async fn limit_caller(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
    ) -> Result<(), RecoveryError> {
        if let Some(ip) = ctx.client_ip {
            self.limit(ctx, operation, LimitScope::ClientIp(ip)).await?;
            self.limit(ctx, operation, LimitScope::ClientNetwork(ip))
                .await?;
        }
        self.limit(ctx, operation, LimitScope::Global).await
    }

    /// Lifts every per-login and per-account limit of `login`, and a report freeze (the operator's
    /// `account unblock`): for an owner locked out by an attacker who spent the budget, after
    /// the operator has checked who is asking. Returns the flow owner the limits were kept under.
    pub async fn unblock(&self, login: &LoginId) -> Result<String, RecoveryError> {
        let login_key = self.login_key(login);
        let account = self.accounts.find_by_login(login.normalized()).await?;
        let owner = Flow::owner_of(account.as_ref().map(|a| a.id.as_str()), &login_key);
        for key in [
            account_key(ACCOUNT_CODES, &owner),
            account_key(ACCOUNT_SENDS, &owner),
            account_key(ACCOUNT_DEVICE_SENDS, &owner),
            format!("rl:login:{login_key}"),
            format!("rl:verify:{login_key}"),
        ] {
            self.store.clear_limit(&key).await?;
            self.store.clear_limit(&format!("{key}:audited")).await?;
        }
        // A freeze after "it wasn't me" is lifted too: the operator has checked who is asking.
        self.store.unfreeze_recovery(&owner).await?;
        Ok(owner)
    }
}
