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

/// What a stored report code points at: the account and its password version when the code
/// was mailed, as `<account id> v<version>`. A reset or a report bumps the version, so a code
/// mailed before either no longer works. A code stored before versions were kept is the bare
/// owner (accepted as before until it expires).
pub(crate) struct ReportedOwner {
    pub owner: String,
    pub password_version: Option<i64>,
}

impl ReportedOwner {
    pub(crate) fn stored(account_id: &str, password_version: i64) -> String {
        format!("{account_id} v{password_version}")
    }

    fn read(stored: &str) -> Self {
        match stored.rsplit_once(" v") {
            Some((owner, version)) => match version.parse() {
                Ok(version) => Self {
                    owner: owner.to_owned(),
                    password_version: Some(version),
                },
                Err(_) => Self {
                    owner: stored.to_owned(),
                    password_version: None,
                },
            },
            None => Self {
                owner: stored.to_owned(),
                password_version: None,
            },
        }
    }
}

/// Tries of a step of a report that failed on the store before the report is refused.
const REPORT_TRIES: usize = 3;

/// What `AdminStartRecovery` answers.
pub struct AdminStarted {
    pub flow: FlowView,
    /// Set only when the caller asked for the code (nothing was mailed then).
    pub code: Option<SecretString>,
}

impl Recovery {
    /// `ReportUnrequestedRecovery`: the owner got a code they did not ask for. The report code
    /// is taken (single use), recovery is frozen for `flow.report_freeze`, every open flow of
    /// the account ends (their codes and reset tokens with them), and in one transaction the
    /// account's password version is bumped (no reset of a flow started before the report can
    /// commit, whatever the store did) and `recovery.reported` is audited and written to the
    /// outbox. Ending the flows is retried on a store error; if a step still fails the call is
    /// `UNAVAILABLE` and the report code is given back, so the same link works again (the freeze
    /// a failed report may leave in place only protects the account).
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
        let Some((mac, stored)) = taken else {
            self.record(self.audit("recovery.reported", None, ctx, "token_invalid"))
                .await;
            return Err(RecoveryError::ReportCodeInvalid);
        };
        let owner = ReportedOwner::read(&stored);
        let account = match self.accounts.find_by_id(&owner.owner).await {
            Ok(account) => account,
            Err(error) => {
                self.give_back_report_code(&mac, &stored).await;
                return Err(error.into());
            }
        };
        // A reset (or another report) since the mail: the code is spent.
        if let (Some(account), Some(version)) = (&account, owner.password_version)
            && account.password_version != version
        {
            let mut audit = self.audit("recovery.reported", None, ctx, "token_invalid");
            audit.account_id = Some(account.id.clone());
            self.record(audit).await;
            return Err(RecoveryError::ReportCodeInvalid);
        }
        let reported = self
            .freeze_reported(ctx, &owner.owner, account.is_some(), now)
            .await;
        if reported.is_err() {
            // Nothing may be consumed by a report that did not take effect: the person must be
            // able to try again with the same code.
            self.give_back_report_code(&mac, &stored).await;
        }
        reported
    }

    async fn give_back_report_code(&self, mac: &str, stored: &str) {
        if let Err(error) = self
            .store
            .put_report_code(mac, stored, REPORT_CODE_TTL)
            .await
        {
            tracing::warn!(error = %error, "a report code could not be given back after a failed report");
        }
    }

    /// Every open flow of `owner` ends, or the report fails: listed and deleted again on a
    /// store error, up to `REPORT_TRIES` times.
    async fn end_reported_flows(&self, owner: &str) -> Result<(), RecoveryError> {
        let mut last = None;
        for _ in 0..REPORT_TRIES {
            let ended = async {
                for id in self.store.account_flows(owner).await? {
                    self.store.delete_flow(&id).await?;
                }
                Ok::<(), crate::recovery::ports::StoreError>(())
            }
            .await;
            match ended {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
        }
        Err(last.map_or_else(
            || RecoveryError::internal(anyhow::anyhow!("no try made")),
            RecoveryError::from,
        ))
    }

    async fn freeze_reported(
        &self,
        ctx: &RequestContext,
        owner: &str,
        account_exists: bool,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), RecoveryError> {
        let freeze = self.settings.flow.report_freeze;
        let frozen_until = after(now, freeze);
        // Frozen first: a start racing this report becomes a decoy rather than a new flow
        // that the ending below would miss.
        self.store.freeze_recovery(owner, freeze).await?;
        self.end_reported_flows(owner).await?;
        // The known device is forgotten too: whoever asked may have reset from it before.
        // The owner's way back while frozen is the helpdesk.
        self.accounts.revoke_device_token(owner).await?;
        let mut audit = self.audit("recovery.reported", None, ctx, "ok");
        audit.account_id = Some(owner.to_owned());
        audit.detail =
            Some(serde_json::json!({ "frozen_until": frozen_until.to_rfc3339() }).to_string());
        // A report code is only ever mailed to an account; the owner may have been erased
        // since: then there is nothing to announce.
        if !account_exists {
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
        self.accounts.record_report(owner, audit, event).await?;
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
