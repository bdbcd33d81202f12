//! The account use cases (`AccountService`). They run on the same `Recovery` handle as the flow
//! because they share its repository, hasher, password policy, login keys and limits.

use secrecy::{ExposeSecret, SecretString};

use super::commands::{CreateAccount, DeleteAccount, ExportAccountData, VerifyPassword};
use crate::recovery::input::LoginId;
use crate::recovery::limits::LimitScope;
use crate::recovery::ports::{Account, AccountErasure, AuditRecord, NewAccount};
use crate::recovery::{Recovery, RecoveryError, RequestContext};

impl Recovery {
    /// `AccountService.CreateAccount`.
    #[tracing::instrument(skip_all)]
    pub async fn create_account(&self, command: CreateAccount) -> Result<Account, RecoveryError> {
        let CreateAccount {
            login,
            email,
            phone,
            password,
        } = command;
        let email = email.map_or_else(|| login.typed().to_owned(), |e| e.typed().to_owned());
        let (normalized, check) = self
            .check_new_password(
                &password,
                Some(login.normalized()),
                Some(&email),
                &[],
                Some((&RequestContext::default(), "CreateAccount")),
            )
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
        command: VerifyPassword,
    ) -> Result<Option<String>, RecoveryError> {
        let VerifyPassword { login, password } = command;
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

    /// The account and the keyed hash of its login: together they name every row of this
    /// person, which an erasure strips and an export shows (rows written while the login was
    /// unknown carry only the hash). A stored login that no longer parses (rules tightened
    /// since) has no hash to match.
    async fn person(&self, account_id: &str) -> Result<(Account, Option<String>), RecoveryError> {
        let account = self
            .accounts
            .find_by_id(account_id)
            .await?
            .ok_or(RecoveryError::AccountNotFound)?;
        let login_key = LoginId::parse("login_id", &account.login_id)
            .ok()
            .map(|login| self.login_key(&login));
        Ok((account, login_key))
    }

    /// `AccountService.DeleteAccount` (erasure): the database forgets the account in one
    /// transaction (see `AccountRepository::erase_account`), then its open flows end, so its
    /// codes and reset tokens die. A flow the store cleanup misses is harmless: its code mail
    /// finds no recipient and its reset finds no account (the password-version guard).
    #[tracing::instrument(skip_all)]
    pub async fn delete_account(&self, command: DeleteAccount) -> Result<(), RecoveryError> {
        let (account, login_key) = self.person(&command.account_id).await?;
        let now = self.clock.now();
        let event_id = uuid::Uuid::now_v7().to_string();
        let event_payload = serde_json::json!({
            "event_id": event_id,
            "type": "account.deleted",
            "account_id": account.id,
            "occurred_at": now.to_rfc3339(),
        })
        .to_string();
        let erased = self
            .accounts
            .erase_account(AccountErasure {
                account_id: account.id.clone(),
                login_key: login_key.clone(),
                at: now,
                event_id,
                event_payload,
                audit: AuditRecord {
                    at: now,
                    event: "account.deleted",
                    account_id: Some(account.id.clone()),
                    flow_id: None,
                    login_key: login_key.clone(),
                    client_ip: None,
                    user_agent: None,
                    result: "ok",
                    detail: None,
                },
            })
            .await?;
        if !erased {
            // Deleted by a concurrent call between the lookup and the transaction.
            return Err(RecoveryError::AccountNotFound);
        }
        self.event_wake.notify_one();
        let mut owners = vec![account.id];
        owners.extend(login_key.map(|key| format!("unknown:{key}")));
        for owner in owners {
            match self.store.account_flows(&owner).await {
                Ok(flows) => {
                    for flow in flows {
                        if let Err(error) = self.store.delete_flow(&flow).await {
                            tracing::warn!(error = %error, "an open flow of an erased account could not be ended; the database refuses it anyway");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "open flows of an erased account could not be listed; the database refuses them anyway");
                }
            }
        }
        Ok(())
    }

    /// `AccountService.ExportAccountData`: everything stored about the account as one JSON
    /// document (profile, when passwords were set, audit trail), never a hash.
    #[tracing::instrument(skip_all)]
    pub async fn export_account_data(
        &self,
        command: ExportAccountData,
    ) -> Result<String, RecoveryError> {
        let (account, login_key) = self.person(&command.account_id).await?;
        let data = self
            .accounts
            .export_account(&account.id, login_key.as_deref())
            .await?
            .ok_or(RecoveryError::AccountNotFound)?;
        let json = serde_json::to_string_pretty(&data).map_err(RecoveryError::internal)?;
        // Handing out personal data is itself worth a line in the trail.
        self.record(AuditRecord {
            at: self.clock.now(),
            event: "account.exported",
            account_id: Some(command.account_id),
            flow_id: None,
            login_key: None,
            client_ip: None,
            user_agent: None,
            result: "ok",
            detail: None,
        })
        .await;
        Ok(json)
    }
}
