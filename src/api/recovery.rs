//! `identity.recovery.v1.RecoveryService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::context::ClientResolver;
use super::status::to_status;
use super::timestamp;
use crate::proto;
use crate::proto::recovery_service_server::RecoveryService;
use crate::recovery::error::Violations;
use crate::recovery::flow::{Channel, Method};
use crate::recovery::input::{self, LoginId, ResetToken, VerificationCode};
use crate::recovery::service::{CaptchaAnswer, FlowView};
use crate::recovery::{Recovery, RecoveryError};

pub struct RecoveryApi {
    pub recovery: Arc<Recovery>,
    pub clients: ClientResolver,
}

fn channel_to_proto(channel: Channel) -> proto::Channel {
    match channel {
        Channel::Email => proto::Channel::Email,
        Channel::Sms => proto::Channel::Sms,
    }
}

fn flow_to_proto(view: FlowView) -> proto::RecoveryFlow {
    let state = match view.state {
        "CHOOSE_METHOD" => proto::FlowState::ChooseMethod,
        "CODE_SENT" => proto::FlowState::CodeSent,
        "VERIFIED" => proto::FlowState::Verified,
        "COMPLETED" => proto::FlowState::Completed,
        _ => proto::FlowState::Unspecified,
    };
    proto::RecoveryFlow {
        flow_id: view.flow_id,
        state: state.into(),
        methods: view
            .methods
            .into_iter()
            .map(
                |Method {
                     channel,
                     masked_destination,
                 }| proto::VerificationMethod {
                    channel: channel_to_proto(channel).into(),
                    masked_destination,
                },
            )
            .collect(),
        expires_at: Some(timestamp(view.expires_at)),
        attempts_left: view.attempts_left,
        resend_available_at: view.resend_available_at.map(timestamp),
    }
}

fn parse_channel(raw: i32) -> Result<Option<Channel>, RecoveryError> {
    match proto::Channel::try_from(raw) {
        Ok(proto::Channel::Unspecified) => Ok(None),
        Ok(proto::Channel::Email) => Ok(Some(Channel::Email)),
        Ok(proto::Channel::Sms) => Ok(Some(Channel::Sms)),
        Err(_) => Err(RecoveryError::invalid("channel", "unknown channel")),
    }
}

fn flow_id(raw: &str) -> Result<String, Status> {
    input::parse_id("flow_id", raw).map_err(|v| to_status(RecoveryError::InvalidArgument(vec![v])))
}

#[tonic::async_trait]
impl RecoveryService for RecoveryApi {
    async fn create_captcha(
        &self,
        request: Request<proto::CreateCaptchaRequest>,
    ) -> Result<Response<proto::CreateCaptchaResponse>, Status> {
        let ctx = self.clients.context(&request);
        let captcha = self
            .recovery
            .create_captcha(&ctx)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::CreateCaptchaResponse {
            captcha_id: captcha.captcha_id,
            image_png: captcha.image_png,
            expires_at: Some(timestamp(captcha.expires_at)),
        }))
    }

    async fn start_recovery(
        &self,
        request: Request<proto::StartRecoveryRequest>,
    ) -> Result<Response<proto::StartRecoveryResponse>, Status> {
        let ctx = self.clients.context(&request);
        let req = request.into_inner();
        let mut violations = Violations::new();
        let login = violations.check(LoginId::parse("login_id", &req.login_id));
        let locale = violations.check(input::parse_locale("locale", &req.locale));
        let captcha = if req.captcha_id.is_empty() && req.captcha_answer.is_empty() {
            None
        } else {
            let id = violations.check(input::parse_id("captcha_id", &req.captcha_id));
            let answer = violations.check(input::parse_captcha_answer(
                "captcha_answer",
                &req.captcha_answer,
            ));
            id.zip(answer)
                .map(|(id, answer)| CaptchaAnswer { id, answer })
        };
        violations.into_result().map_err(to_status)?;
        let (Some(login), Some(locale)) = (login, locale) else {
            return Err(to_status(RecoveryError::internal(anyhow::anyhow!(
                "parsed fields missing"
            ))));
        };
        let flow = self
            .recovery
            .start(&ctx, login, captcha, locale)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::StartRecoveryResponse {
            flow: Some(flow_to_proto(flow)),
        }))
    }

    async fn get_recovery_flow(
        &self,
        request: Request<proto::GetRecoveryFlowRequest>,
    ) -> Result<Response<proto::RecoveryFlow>, Status> {
        let flow_id = flow_id(&request.get_ref().flow_id)?;
        let flow = self.recovery.get(&flow_id).await.map_err(to_status)?;
        Ok(Response::new(flow_to_proto(flow)))
    }

    async fn send_verification_code(
        &self,
        request: Request<proto::SendVerificationCodeRequest>,
    ) -> Result<Response<proto::SendVerificationCodeResponse>, Status> {
        let ctx = self.clients.context(&request);
        let req = request.into_inner();
        let mut violations = Violations::new();
        let id = violations.check(input::parse_id("flow_id", &req.flow_id));
        let channel = match parse_channel(req.channel) {
            Ok(channel) => channel,
            Err(RecoveryError::InvalidArgument(found)) => {
                found.into_iter().for_each(|v| violations.push(v));
                None
            }
            Err(other) => return Err(to_status(other)),
        };
        violations.into_result().map_err(to_status)?;
        let id = id.unwrap_or_default();
        let flow = self
            .recovery
            .send_code(&ctx, &id, channel)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::SendVerificationCodeResponse {
            flow: Some(flow_to_proto(flow)),
        }))
    }

    async fn verify_code(
        &self,
        request: Request<proto::VerifyCodeRequest>,
    ) -> Result<Response<proto::VerifyCodeResponse>, Status> {
        let ctx = self.clients.context(&request);
        let req = request.into_inner();
        let mut violations = Violations::new();
        let id = violations.check(input::parse_id("flow_id", &req.flow_id));
        let code = violations.check(VerificationCode::parse("code", &req.code));
        violations.into_result().map_err(to_status)?;
        let (Some(id), Some(code)) = (id, code) else {
            return Err(to_status(RecoveryError::internal(anyhow::anyhow!(
                "parsed fields missing"
            ))));
        };
        let issued = self
            .recovery
            .verify(&ctx, &id, code)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::VerifyCodeResponse {
            reset_token: secrecy::ExposeSecret::expose_secret(&issued.token).to_owned(),
            expires_at: Some(timestamp(issued.expires_at)),
        }))
    }

    async fn reset_password(
        &self,
        request: Request<proto::ResetPasswordRequest>,
    ) -> Result<Response<proto::ResetPasswordResponse>, Status> {
        let ctx = self.clients.context(&request);
        let req = request.into_inner();
        let mut violations = Violations::new();
        let token = violations.check(ResetToken::parse("reset_token", &req.reset_token));
        let password = violations.check(input::parse_password("new_password", &req.new_password));
        let confirmation = violations.check(input::parse_password(
            "new_password_confirmation",
            &req.new_password_confirmation,
        ));
        violations.into_result().map_err(to_status)?;
        let (Some(token), Some(password), Some(confirmation)) = (token, password, confirmation)
        else {
            return Err(to_status(RecoveryError::internal(anyhow::anyhow!(
                "parsed fields missing"
            ))));
        };
        let changed_at = self
            .recovery
            .reset_password(&ctx, token, password, confirmation)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ResetPasswordResponse {
            password_changed_at: Some(timestamp(changed_at)),
        }))
    }

    async fn validate_password(
        &self,
        request: Request<proto::ValidatePasswordRequest>,
    ) -> Result<Response<proto::ValidatePasswordResponse>, Status> {
        let req = request.into_inner();
        let mut violations = Violations::new();
        let password = violations.check(input::parse_password("password", &req.password));
        let login = if req.login_id.trim().is_empty() {
            None
        } else {
            violations.check(LoginId::parse("login_id", &req.login_id))
        };
        violations.into_result().map_err(to_status)?;
        let Some(password) = password else {
            return Err(to_status(RecoveryError::internal(anyhow::anyhow!(
                "parsed fields missing"
            ))));
        };
        let check = self
            .recovery
            .validate_password(&password, login.as_ref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ValidatePasswordResponse {
            violations: check
                .violations
                .into_iter()
                .map(|v| proto::PolicyViolation {
                    reason: v.reason.to_owned(),
                    message: format!("password {}", v.message),
                })
                .collect(),
            strength: u32::from(check.strength),
        }))
    }

    async fn cancel_recovery(
        &self,
        request: Request<proto::CancelRecoveryRequest>,
    ) -> Result<Response<proto::CancelRecoveryResponse>, Status> {
        let ctx = self.clients.context(&request);
        let flow_id = flow_id(&request.get_ref().flow_id)?;
        self.recovery
            .cancel(&ctx, &flow_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::CancelRecoveryResponse {}))
    }
}
