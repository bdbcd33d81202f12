//! `ResetPassword`: the token is taken from its flow, the new password checked and hashed, and
//! the change, its history, outbox event, audit row and notice committed in one transaction.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::commands::ResetPassword;
use super::error::RecoveryError;
use super::flow::Flow;
use super::handle::{DEVICE_PURPOSE, DEVICE_TOKEN_TTL, Recovery, RequestContext, TOKEN_PURPOSE};
use super::input::ResetToken;
use super::ports::{Account, MessageKind, Notice, ResetCommit, ResetOutcome, Versioned};
use crate::clock::after;
use crate::secrets::{keys, mask_email};

/// What a successful `ResetPassword` answers.
pub struct PasswordReset {
    pub changed_at: DateTime<Utc>,
    /// The device token for the browser that reset (see `DEVICE_TOKEN_TTL`); only its keyed
    /// hash is stored, on the account, replacing the one before.
    pub device_token: SecretString,
}

/// What a reset attempt got to know before it failed, for its audit row.
#[derive(Default)]
struct ResetTrace {
    flow: Option<Flow>,
    /// The repository already wrote the attempt's audit row.
    audited: bool,
}

impl Recovery {
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
            let Some(flow) = self.read_flow(&flow_id).await? else {
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

    #[tracing::instrument(skip_all, fields(flow_id))]
    pub async fn reset_password(
        &self,
        ctx: &RequestContext,
        command: ResetPassword,
    ) -> Result<PasswordReset, RecoveryError> {
        let ResetPassword {
            token,
            new_password,
            confirmation,
        } = command;
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
    ) -> Result<PasswordReset, RecoveryError> {
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
                Some((ctx, "ResetPassword")),
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
        let device_token =
            SecretString::from(keys::random_token().map_err(RecoveryError::internal)?);
        let mut commit = self.reset_commit(&flow, &account, new_hash, now, ctx, depth)?;
        commit.device_token = (
            self.keys
                .sign(DEVICE_PURPOSE, &[device_token.expose_secret().as_bytes()]),
            after(now, DEVICE_TOKEN_TTL),
        );
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
                self.deliveries.wake();
                self.event_wake.notify_one();
                Ok(PasswordReset {
                    changed_at: now,
                    device_token,
                })
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
            // Relying parties end the account's sessions and refresh tokens on this event.
            "revoke_sessions": true,
        })
        .to_string();
        let notice = Notice {
            kind: MessageKind::PasswordChanged,
            account_id: Some(account.id.clone()),
            to: Some(account.email.clone()),
            locale: flow.locale.clone(),
            masked_login: mask_email(&account.login_id),
            code: None,
            report_code: None,
            expires_at: after(now, self.notice_lifetime),
            changed_at: Some(now),
            requested_at: None,
            client_ip: None,
            user_agent: None,
        };
        let notice = self
            .deliveries
            .prepare(&notice, now)
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
            // Filled in by the caller, which holds the token to hand out.
            device_token: (String::new(), now),
        })
    }

    /// After a reset every other open flow of the account ends (their tokens and codes die: a
    /// token is only ever honoured through its flow).
    pub(crate) async fn end_other_flows(&self, account_id: &str, keep: &str) {
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
}
