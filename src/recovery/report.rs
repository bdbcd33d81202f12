//! "It wasn't me" (`ReportUnrequestedRecovery`) and helpdesk recovery (`AdminStartRecovery`):
//! the two ways a recovery starts or stops outside the self-service flow.

use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;

use super::commands::{AdminStartRecovery, ReportUnrequested};
use super::error::RecoveryError;
use super::flow::{Channel, Method};
use super::handle::{REPORT_PURPOSE, Recovery, RequestContext};
use super::limits::LimitScope;
use super::ports::OutboxEvent;
use super::service::{CodeDelivery, FlowOrigin, FlowView};
use crate::clock::after;
use crate::secrets::mask_email;

/// How long a mailed report code can be used: a week, so that a person who reads the mail a
/// few days late can still say "it wasn't me". Independent of the freeze it causes.
pub const REPORT_CODE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What `AdminStartRecovery` answers.
pub struct AdminStarted {
    pub flow: FlowView,
    /// Set only when the caller asked for the code (nothing was mailed then).
    pub code: Option<SecretString>,
}

impl Recovery {
    /// `ReportUnrequestedRecovery`: the owner got a code they did not ask for. The report code
    /// is taken (single use), every open flow of the account ends (their codes and reset tokens
    /// with them), recovery is frozen for `flow.report_freeze`, and `recovery.reported` is
    /// audited and written to the outbox in one transaction.
    #[tracing::instrument(skip_all)]
    pub async fn report_unrequested(
        &self,
        ctx: &RequestContext,
        command: ReportUnrequested,
    ) -> Result<(), RecoveryError> {
        self.limit_caller(ctx, "ReportUnrequestedRecovery").await?;
        let now = self.clock.now();
        let code = command.report_code;
        let mut taken = None;
        // Every key of the ring, so codes mailed before a key rotation still work.
        for mac in self
            .keys
            .sign_all(REPORT_PURPOSE, &[code.expose().as_bytes()])
        {
            if let Some(owner) = self.store.take_report_code(&mac).await? {
                taken = Some((mac, owner));
                break;
            }
        }
        let Some((mac, owner)) = taken else {
            self.record(self.audit("recovery.reported", None, ctx, "token_invalid"))
                .await;
            return Err(RecoveryError::ReportCodeInvalid);
        };
        let reported = self.freeze_reported(ctx, &owner, now).await;
        if reported.is_err() {
            // Nothing may be consumed by a report that did not take effect: the person must be
            // able to try again with the same code.
            if let Err(error) = self
                .store
                .put_report_code(&mac, &owner, REPORT_CODE_TTL)
                .await
            {
                tracing::warn!(error = %error, "a report code could not be given back after a failed report");
            }
        }
        reported
    }

    async fn freeze_reported(
        &self,
        ctx: &RequestContext,
        owner: &str,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), RecoveryError> {
        let freeze = self.settings.flow.report_freeze;
        let frozen_until = after(now, freeze);
        // Frozen first: a start racing this report becomes a decoy rather than a new flow
        // that the ending below would miss.
        self.store.freeze_recovery(owner, freeze).await?;
        self.end_other_flows(owner, "").await;
        // The known device is forgotten too: whoever asked may have reset from it before.
        // The owner's way back while frozen is the helpdesk.
        self.accounts.revoke_device_token(owner).await?;
        let mut audit = self.audit("recovery.reported", None, ctx, "ok");
        audit.account_id = Some(owner.to_owned());
        audit.detail =
            Some(serde_json::json!({ "frozen_until": frozen_until.to_rfc3339() }).to_string());
        // A report code is only ever mailed to an account; the owner may have been erased
        // since (or be a decoy's, which nobody received): then there is nothing to announce.
        if self.accounts.find_by_id(owner).await?.is_none() {
            audit.account_id = None;
            audit.result = "no_account";
            self.record(audit).await;
            return Ok(());
        }
        let event_id = uuid::Uuid::now_v7().to_string();
        let payload = serde_json::json!({
            "event_id": event_id,
            "type": "recovery.reported",
            "account_id": owner,
            "occurred_at": now.to_rfc3339(),
            "frozen_until": frozen_until.to_rfc3339(),
        })
        .to_string();
        let event = OutboxEvent {
            event_id,
            event_type: "recovery.reported".to_owned(),
            aggregate_id: owner.to_owned(),
            payload,
            created_at: now,
        };
        self.accounts.record_audit_with_event(audit, event).await?;
        self.event_wake.notify_one();
        Ok(())
    }

    /// `AccountService.AdminStartRecovery`: a helpdesk (authenticated as `caller`) starts a
    /// flow for an existing account and issues its code, mailed as usual or handed back for
    /// out-of-band delivery. No captcha, no per-login start limit and none of the anonymous
    /// per-account budgets (mail and guesses): those are what an attacker spends to lock the
    /// owner out, and the helpdesk is the owner's way back. Its own budget is per caller
    /// (`rate_limits.helpdesk_per_caller`), counted before the account is looked up; the
    /// per-flow caps and the one-live-code rule hold. It works during a report freeze: the
    /// helpdesk has checked who is asking.
    #[tracing::instrument(skip_all, fields(flow_id))]
    pub async fn admin_start_recovery(
        &self,
        ctx: &RequestContext,
        caller: &str,
        command: AdminStartRecovery,
    ) -> Result<AdminStarted, RecoveryError> {
        let AdminStartRecovery {
            login,
            return_code,
            locale,
        } = command;
        self.limit(ctx, "AdminStartRecovery", LimitScope::Helpdesk(caller))
            .await?;
        let now = self.clock.now();
        let account = self
            .accounts
            .find_by_login(login.normalized())
            .await?
            .ok_or(RecoveryError::AccountNotFound)?;
        let login_key = self.login_key(&login);
        let methods = vec![Method {
            channel: Channel::Email,
            masked_destination: mask_email(&account.email),
        }];
        let flow = self
            .open_flow(
                Some(&account),
                login_key,
                methods,
                locale,
                FlowOrigin::Helpdesk,
                now,
            )
            .await?;
        let delivery = if return_code {
            CodeDelivery::ReturnToCaller
        } else {
            CodeDelivery::HelpdeskMail
        };
        let issued = self.issue_code(ctx, &flow.id, None, delivery).await;
        let mut audit = self.audit(
            "recovery.admin_started",
            Some(&flow),
            ctx,
            if issued.is_ok() { "ok" } else { "refused" },
        );
        audit.detail =
            Some(serde_json::json!({ "caller": caller, "return_code": return_code }).to_string());
        self.record(audit).await;
        let (next, code) = issued?;
        Ok(AdminStarted {
            flow: self.view(&next),
            code: return_code.then_some(code),
        })
    }
}
