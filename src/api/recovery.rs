//! `identity.recovery.v1.RecoveryService`.

use std::sync::Arc;

use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::context::ClientResolver;
use super::status::to_status;
use super::timestamp;
use crate::proto;
use crate::proto::recovery_service_server::RecoveryService;
use crate::recovery::commands::{
    FlowId, ReportUnrequested, ResetPassword, SendCode, StartRecovery, ValidatePassword, VerifyCode,
};
use crate::recovery::flow::{Channel, FlowStage, Method};
use crate::recovery::handle::CaptchaCheck;
use crate::recovery::service::{FlowView, PasswordCheck};
use crate::recovery::{FieldViolation, Recovery, RecoveryError};

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

fn stage_to_proto(stage: FlowStage) -> proto::FlowState {
    match stage {
        FlowStage::ChooseMethod => proto::FlowState::ChooseMethod,
        FlowStage::CodeSent => proto::FlowState::CodeSent,
        FlowStage::Verified => proto::FlowState::Verified,
        FlowStage::Completed => proto::FlowState::Completed,
    }
}

fn captcha_check_to_proto(check: CaptchaCheck) -> proto::CaptchaCheck {
    match check {
        CaptchaCheck::Off => proto::CaptchaCheck::None,
        CaptchaCheck::Digits => proto::CaptchaCheck::Digits,
        CaptchaCheck::DigitsOrWork => proto::CaptchaCheck::DigitsOrPow,
        CaptchaCheck::Work => proto::CaptchaCheck::Pow,
        CaptchaCheck::DigitsAndWork => proto::CaptchaCheck::DigitsAndPow,
    }
}

pub(super) fn flow_to_proto(view: FlowView) -> proto::RecoveryFlow {
    proto::RecoveryFlow {
        flow_id: view.flow_id,
        state: stage_to_proto(view.state).into(),
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

/// The `flow` field of a reply that carries one.
fn flow_reply(
    result: Result<FlowView, RecoveryError>,
) -> Result<Option<proto::RecoveryFlow>, Status> {
    result
        .map(|view| Some(flow_to_proto(view)))
        .map_err(to_status)
}

fn check_to_proto(check: PasswordCheck) -> proto::ValidatePasswordResponse {
    let violations = check
        .violations
        .into_iter()
        .map(|violation| proto::PolicyViolation {
            reason: violation.reason.to_owned(),
            message: format!("password {}", violation.message),
        });
    proto::ValidatePasswordResponse {
        violations: violations.collect(),
        strength: u32::from(check.strength),
    }
}

fn parse_channel(raw: i32) -> Result<Option<Channel>, FieldViolation> {
    match proto::Channel::try_from(raw) {
        Ok(proto::Channel::Unspecified) => Ok(None),
        Ok(proto::Channel::Email) => Ok(Some(Channel::Email)),
        Ok(proto::Channel::Sms) => Ok(Some(Channel::Sms)),
        Err(_) => Err(FieldViolation::new("channel", "unknown channel")),
    }
}

impl TryFrom<proto::StartRecoveryRequest> for StartRecovery {
    type Error = RecoveryError;
    fn try_from(req: proto::StartRecoveryRequest) -> Result<Self, RecoveryError> {
        Self::parse(
            &req.login_id,
            &req.locale,
            &req.captcha_id,
            &req.captcha_answer,
            &req.pow_solution,
        )
        .map(|command| command.with_device_token(&req.device_token))
    }
}

impl TryFrom<proto::SendVerificationCodeRequest> for SendCode {
    type Error = RecoveryError;
    fn try_from(req: proto::SendVerificationCodeRequest) -> Result<Self, RecoveryError> {
        Self::parse(&req.flow_id, parse_channel(req.channel))
    }
}

impl TryFrom<proto::VerifyCodeRequest> for VerifyCode {
    type Error = RecoveryError;
    fn try_from(req: proto::VerifyCodeRequest) -> Result<Self, RecoveryError> {
        Self::parse(&req.flow_id, &req.code)
    }
}

impl TryFrom<proto::ResetPasswordRequest> for ResetPassword {
    type Error = RecoveryError;
    fn try_from(req: proto::ResetPasswordRequest) -> Result<Self, RecoveryError> {
        Self::parse(
            &req.reset_token,
            &req.new_password,
            &req.new_password_confirmation,
        )
    }
}

impl TryFrom<proto::ReportUnrequestedRecoveryRequest> for ReportUnrequested {
    type Error = RecoveryError;
    fn try_from(req: proto::ReportUnrequestedRecoveryRequest) -> Result<Self, RecoveryError> {
        Self::parse(&req.report_code)
    }
}

impl TryFrom<proto::ValidatePasswordRequest> for ValidatePassword {
    type Error = RecoveryError;
    fn try_from(req: proto::ValidatePasswordRequest) -> Result<Self, RecoveryError> {
        Self::parse(&req.password, &req.login_id)
    }
}

#[tonic::async_trait]
impl RecoveryService for RecoveryApi {
    async fn create_captcha(
        &self,
        request: Request<proto::CreateCaptchaRequest>,
    ) -> Result<Response<proto::CreateCaptchaResponse>, Status> {
        let ctx = self.clients.context(&request);
        let captcha = self.recovery.create_captcha(&ctx).await;
        let captcha = captcha.map_err(to_status)?;
        Ok(Response::new(proto::CreateCaptchaResponse {
            captcha_id: captcha.captcha_id,
            image_png: captcha.image_png,
            expires_at: Some(timestamp(captcha.expires_at)),
            pow: captcha.pow.map(|pow| proto::ProofOfWork {
                algorithm: pow.algorithm.to_owned(),
                challenge: pow.challenge,
                salt: pow.salt,
                signature: pow.signature,
                max_number: pow.max_number,
            }),
            check: captcha_check_to_proto(captcha.check).into(),
        }))
    }

    async fn start_recovery(
        &self,
        request: Request<proto::StartRecoveryRequest>,
    ) -> Result<Response<proto::StartRecoveryResponse>, Status> {
        let ctx = self.clients.context(&request);
        let command = request.into_inner().try_into().map_err(to_status)?;
        let flow = flow_reply(self.recovery.start(&ctx, command).await)?;
        Ok(Response::new(proto::StartRecoveryResponse { flow }))
    }

    async fn get_recovery_flow(
        &self,
        request: Request<proto::GetRecoveryFlowRequest>,
    ) -> Result<Response<proto::RecoveryFlow>, Status> {
        let ctx = self.clients.context(&request);
        let flow_id = FlowId::parse(&request.get_ref().flow_id).map_err(to_status)?;
        let flow = self.recovery.get(&ctx, &flow_id).await.map_err(to_status)?;
        Ok(Response::new(flow_to_proto(flow)))
    }

    async fn send_verification_code(
        &self,
        request: Request<proto::SendVerificationCodeRequest>,
    ) -> Result<Response<proto::SendVerificationCodeResponse>, Status> {
        let ctx = self.clients.context(&request);
        let command = request.into_inner().try_into().map_err(to_status)?;
        let flow = flow_reply(self.recovery.send_code(&ctx, command).await)?;
        Ok(Response::new(proto::SendVerificationCodeResponse { flow }))
    }

    async fn verify_code(
        &self,
        request: Request<proto::VerifyCodeRequest>,
    ) -> Result<Response<proto::VerifyCodeResponse>, Status> {
        let ctx = self.clients.context(&request);
        let command = request.into_inner().try_into().map_err(to_status)?;
        let issued = self.recovery.verify(&ctx, command).await;
        let issued = issued.map_err(to_status)?;
        Ok(Response::new(proto::VerifyCodeResponse {
            reset_token: issued.token.expose_secret().to_owned(),
            expires_at: Some(timestamp(issued.expires_at)),
        }))
    }

    async fn reset_password(
        &self,
        request: Request<proto::ResetPasswordRequest>,
    ) -> Result<Response<proto::ResetPasswordResponse>, Status> {
        let ctx = self.clients.context(&request);
        let command = request.into_inner().try_into().map_err(to_status)?;
        let reset = self.recovery.reset_password(&ctx, command).await;
        let reset = reset.map_err(to_status)?;
        Ok(Response::new(proto::ResetPasswordResponse {
            password_changed_at: Some(timestamp(reset.changed_at)),
            device_token: reset.device_token.expose_secret().to_owned(),
        }))
    }

    async fn validate_password(
        &self,
        request: Request<proto::ValidatePasswordRequest>,
    ) -> Result<Response<proto::ValidatePasswordResponse>, Status> {
        let ctx = self.clients.context(&request);
        let command = request.into_inner().try_into().map_err(to_status)?;
        let check = self.recovery.validate_password(&ctx, &command).await;
        Ok(Response::new(check_to_proto(check.map_err(to_status)?)))
    }

    async fn cancel_recovery(
        &self,
        request: Request<proto::CancelRecoveryRequest>,
    ) -> Result<Response<proto::CancelRecoveryResponse>, Status> {
        let ctx = self.clients.context(&request);
        let flow_id = FlowId::parse(&request.get_ref().flow_id).map_err(to_status)?;
        self.recovery
            .cancel(&ctx, &flow_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::CancelRecoveryResponse {}))
    }

    async fn report_unrequested_recovery(
        &self,
        request: Request<proto::ReportUnrequestedRecoveryRequest>,
    ) -> Result<Response<proto::ReportUnrequestedRecoveryResponse>, Status> {
        let ctx = self.clients.context(&request);
        let command = request.into_inner().try_into().map_err(to_status)?;
        self.recovery
            .report_unrequested(&ctx, command)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ReportUnrequestedRecoveryResponse {}))
    }
}
