//! `identity.recovery.v1.AccountService` (internal). Callers are authenticated by the server's
//! interceptor (API key or loopback) before they reach these methods.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::context::ClientResolver;
use super::status::to_status;
use super::timestamp;
use crate::proto;
use crate::proto::account_service_server::AccountService;
use crate::recovery::error::Violations;
use crate::recovery::input::{self, LoginId};
use crate::recovery::{Recovery, RecoveryError};

pub struct AccountApi {
    pub recovery: Arc<Recovery>,
    pub clients: ClientResolver,
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn create_account(
        &self,
        request: Request<proto::CreateAccountRequest>,
    ) -> Result<Response<proto::Account>, Status> {
        let req = request.into_inner();
        let mut violations = Violations::new();
        let login = violations.check(LoginId::parse("login_id", &req.login_id));
        let email = violations.check(input::parse_optional_email("email", &req.email));
        let phone = violations.check(input::parse_optional_phone("phone", &req.phone));
        let password = violations.check(input::parse_password("password", &req.password));
        violations.into_result().map_err(to_status)?;
        let (Some(login), Some(email), Some(phone), Some(password)) =
            (login, email, phone, password)
        else {
            return Err(to_status(RecoveryError::internal(anyhow::anyhow!(
                "parsed fields missing"
            ))));
        };
        let account = self
            .recovery
            .create_account(login, email, phone, password)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::Account {
            account_id: account.id,
            login_id: account.login_id,
            created_at: Some(timestamp(account.created_at)),
        }))
    }

    async fn verify_password(
        &self,
        request: Request<proto::VerifyPasswordRequest>,
    ) -> Result<Response<proto::VerifyPasswordResponse>, Status> {
        let ctx = self.clients.context(&request);
        let req = request.into_inner();
        let mut violations = Violations::new();
        let login = violations.check(LoginId::parse("login_id", &req.login_id));
        let password = violations.check(input::parse_password("password", &req.password));
        violations.into_result().map_err(to_status)?;
        let (Some(login), Some(password)) = (login, password) else {
            return Err(to_status(RecoveryError::internal(anyhow::anyhow!(
                "parsed fields missing"
            ))));
        };
        let account_id = self
            .recovery
            .verify_password(&ctx, login, password)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::VerifyPasswordResponse {
            valid: account_id.is_some(),
            account_id: account_id.unwrap_or_default(),
        }))
    }
}
