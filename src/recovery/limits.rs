//! Rate limits and the audit trail, together because a refused call is itself an audit event:
//! every limit that bites writes `recovery.rate_limited`, de-duplicated per key and window.

use std::net::IpAddr;
use std::time::Duration;

use super::error::RecoveryError;
use super::flow::Flow;
pub use super::handle::{RateLimit, RateLimits};
use super::handle::{Recovery, RequestContext};
use super::ports::{AuditRecord, RateDecision};

/// What a rate limit counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LimitScope<'a> {
    /// Recovery starts per login (a keyed hash of it), known or not.
    Login(&'a str),
    /// `VerifyPassword` attempts per login (online guessing of one account's password).
    VerifyPassword(&'a str),
    ClientIp(IpAddr),
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
    pub(crate) async fn record(&self, record: AuditRecord) {
        if let Err(error) = self.accounts.record_audit(record).await {
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
    pub(crate) async fn limit_caller(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
    ) -> Result<(), RecoveryError> {
        if let Some(ip) = ctx.client_ip {
            self.limit(ctx, operation, LimitScope::ClientIp(ip)).await?;
        }
        self.limit(ctx, operation, LimitScope::Global).await
    }
}
