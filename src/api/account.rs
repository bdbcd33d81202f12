//! `identity.recovery.v1.AccountService` (internal). Callers are authenticated by the server's
//! interceptor (API key or loopback) before they reach these methods.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use tonic::{Request, Response, Status};

use super::context::{CallerIdentity, ClientResolver};
use super::recovery::flow_to_proto;
use super::status::to_status;
use super::timestamp;
use crate::accounts::commands::{CreateAccount, DeleteAccount, ExportAccountData, VerifyPassword};
use crate::proto;
use crate::proto::account_service_server::AccountService;
use crate::recovery::commands::AdminStartRecovery;
use crate::recovery::{Recovery, RecoveryError};

pub struct AccountApi {
    pub recovery: Arc<Recovery>,
    pub clients: ClientResolver,
}

impl TryFrom<proto::CreateAccountRequest> for CreateAccount {
    type Error = RecoveryError;
    fn try_from(req: proto::CreateAccountRequest) -> Result<Self, RecoveryError> {
        let password = SecretString::from(req.password);
        Self::parse(&req.login_id, &req.email, &req.phone, &password)
    }
}

impl TryFrom<proto::VerifyPasswordRequest> for VerifyPassword {
    type Error = RecoveryError;
    fn try_from(req: proto::VerifyPasswordRequest) -> Result<Self, RecoveryError> {
        Self::parse(&req.login_id, &req.password)
    }
}

impl TryFrom<proto::DeleteAccountRequest> for DeleteAccount {
    type Error = RecoveryError;
    fn try_from(req: proto::DeleteAccountRequest) -> Result<Self, RecoveryError> {
        Self::parse(&req.account_id)
    }
}

impl TryFrom<proto::ExportAccountDataRequest> for ExportAccountData {
    type Error = RecoveryError;
    fn try_from(req: proto::ExportAccountDataRequest) -> Result<Self, RecoveryError> {
        Self::parse(&req.account_id)
    }
}

impl TryFrom<proto::AdminStartRecoveryRequest> for AdminStartRecovery {
    type Error = RecoveryError;
    fn try_from(req: proto::AdminStartRecoveryRequest) -> Result<Self, RecoveryError> {
        Self::parse(&req.login_id, req.return_code, &req.locale)
    }
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn create_account(
        &self,
        request: Request<proto::CreateAccountRequest>,
    ) -> Result<Response<proto::Account>, Status> {
        let command = request.into_inner().try_into().map_err(to_status)?;
        let account = self.recovery.create_account(command).await;
        let account = account.map_err(to_status)?;
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
        let command = request.into_inner().try_into().map_err(to_status)?;
        let account_id = self.recovery.verify_password(&ctx, command).await;
        let account_id = account_id.map_err(to_status)?;
        Ok(Response::new(proto::VerifyPasswordResponse {
            valid: account_id.is_some(),
            account_id: account_id.unwrap_or_default(),
        }))
    }

    async fn delete_account(
        &self,
        request: Request<proto::DeleteAccountRequest>,
    ) -> Result<Response<proto::DeleteAccountResponse>, Status> {
        let command = request.into_inner().try_into().map_err(to_status)?;
        self.recovery
            .delete_account(command)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::DeleteAccountResponse {}))
    }

    async fn export_account_data(
        &self,
        request: Request<proto::ExportAccountDataRequest>,
    ) -> Result<Response<proto::ExportAccountDataResponse>, Status> {
        let command = request.into_inner().try_into().map_err(to_status)?;
        let json = self.recovery.export_account_data(command).await;
        Ok(Response::new(proto::ExportAccountDataResponse {
            json: json.map_err(to_status)?,
        }))
    }

    async fn admin_start_recovery(
        &self,
        request: Request<proto::AdminStartRecoveryRequest>,
    ) -> Result<Response<proto::AdminStartRecoveryResponse>, Status> {
        let ctx = self.clients.context(&request);
        let caller = CallerIdentity::of(&request);
        let command = request.into_inner().try_into().map_err(to_status)?;
        let started = self
            .recovery
            .admin_start_recovery(&ctx, &caller, command)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::AdminStartRecoveryResponse {
            flow: Some(flow_to_proto(started.flow)),
            code: started
                .code
                .map(|code| code.expose_secret().to_owned())
                .unwrap_or_default(),
        }))
    }
}
