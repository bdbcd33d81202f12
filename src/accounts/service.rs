//! The account use cases (`AccountService`). They run on the same `Recovery` handle as the flow
//! because they share its repository, hasher, password policy, login keys and limits.

use secrecy::{ExposeSecret, SecretString};

use super::commands::{CreateAccount, VerifyPassword};
use crate::recovery::limits::LimitScope;
use crate::recovery::ports::{Account, NewAccount};
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
}
