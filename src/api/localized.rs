//! Wraps the gRPC adapters so every error they answer carries a `LocalizedMessage` (see
//! [`super::i18n`]). A wrapper rather than a change to each handler: the handlers stay
//! parse-call-map, and the language is decided in one place.
//!
//! Which language: the flow's, for the errors that are about a flow the caller holds (a wrong
//! code, a password refused, ...); the `locale` the caller sent with `StartRecovery`; else the
//! caller's `accept-language`; else English. The flow's locale is read from the store only after
//! such an error, never for `UNAVAILABLE` or `RATE_LIMITED` (a store that is down or a caller
//! being throttled must not cost a second read), and the read is best-effort.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};
use tonic_types::StatusExt;

use super::i18n::{Catalogue, accept_language, localize, localize_decoded};
use crate::proto;
use crate::proto::account_service_server::AccountService;
use crate::proto::recovery_service_server::RecoveryService;
use crate::recovery::Recovery;
use crate::recovery::input::ResetToken;
use crate::recovery::locale::noting_flow_locale;

/// A gRPC service whose errors are localized.
pub struct Localized<S> {
    inner: S,
    recovery: Arc<Recovery>,
}

impl<S> Localized<S> {
    pub fn new(inner: S, recovery: Arc<Recovery>) -> Self {
        Self { inner, recovery }
    }
}

/// Where the flow's language can be found, taken from the request before it is consumed.
enum Hint {
    None,
    Flow(String),
    Token(SecretString),
    /// `StartRecovery`'s own `locale` field: the language the flow is about to get.
    Requested(String),
    /// The language of the flow the call itself read (`noting_flow_locale`).
    Read(String),
}

impl Hint {
    /// A `Flow` or `Token` hint becomes `Read` when the call read its flow: no second read.
    fn or_read(self, read: Option<String>) -> Self {
        match (self, read) {
            (Self::Flow(_) | Self::Token(_), Some(locale)) => Self::Read(locale),
            (hint, _) => hint,
        }
    }
}

/// Reasons that are about a flow the caller already holds, so its language is known.
fn about_a_flow(reason: &str) -> bool {
    matches!(
        reason,
        "CODE_INVALID"
            | "CODE_EXPIRED"
            | "ATTEMPTS_EXHAUSTED"
            | "RESEND_TOO_SOON"
            | "FLOW_STATE"
            | "PASSWORD_MISMATCH"
            | "PASSWORD_POLICY"
    )
}

/// The caller's raw `accept-language`, kept (a reference-counted copy, no allocation) before the
/// request is consumed and parsed only if an error is answered: most calls succeed, and a
/// success never needed it.
struct Accepted(Option<MetadataValue<Ascii>>);

impl Accepted {
    fn tags(&self) -> Vec<String> {
        self.0
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .map(accept_language)
            .unwrap_or_default()
    }
}

fn accepted<T>(request: &Request<T>) -> Accepted {
    Accepted(request.metadata().get("accept-language").cloned())
}

/// For errors answered before a service is reached (the interceptors): the caller's language.
pub fn by_accept_language<T>(status: Status, request: &Request<T>) -> Status {
    let catalogue = Catalogue::embedded();
    let locale = catalogue.pick(accepted(request).tags().iter().map(String::as_str));
    localize(status, catalogue, locale)
}

impl<S> Localized<S> {
    async fn answer<T>(
        &self,
        result: Result<Response<T>, Status>,
        accepted: Accepted,
        hint: Hint,
    ) -> Result<Response<T>, Status> {
        let status = match result {
            Ok(response) => return Ok(response),
            Err(status) => status,
        };
        let details = status.get_error_details();
        let reason = details
            .error_info()
            .map(|info| info.reason.clone())
            .unwrap_or_default();
        let flow_locale = match hint {
            Hint::Requested(locale) if !locale.trim().is_empty() => Some(locale),
            Hint::Read(locale) if about_a_flow(&reason) => Some(locale),
            Hint::Flow(flow_id) if about_a_flow(&reason) => {
                self.recovery.flow_locale(&flow_id).await
            }
            Hint::Token(raw) if about_a_flow(&reason) => {
                match ResetToken::parse("reset_token", raw.expose_secret()) {
                    Ok(token) => self.recovery.token_locale(&token).await,
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let catalogue = Catalogue::embedded();
        let accepted = accepted.tags();
        let locale = catalogue.pick(
            flow_locale
                .iter()
                .chain(accepted.iter())
                .map(String::as_str),
        );
        Err(localize_decoded(status, details, catalogue, locale))
    }
}

#[tonic::async_trait]
impl<S: RecoveryService> RecoveryService for Localized<S> {
    async fn create_captcha(
        &self,
        request: Request<proto::CreateCaptchaRequest>,
    ) -> Result<Response<proto::CreateCaptchaResponse>, Status> {
        let accepted = accepted(&request);
        let result = self.inner.create_captcha(request).await;
        self.answer(result, accepted, Hint::None).await
    }

    async fn start_recovery(
        &self,
        request: Request<proto::StartRecoveryRequest>,
    ) -> Result<Response<proto::StartRecoveryResponse>, Status> {
        let accepted = accepted(&request);
        let hint = Hint::Requested(request.get_ref().locale.chars().take(35).collect());
        let result = self.inner.start_recovery(request).await;
        self.answer(result, accepted, hint).await
    }

    async fn get_recovery_flow(
        &self,
        request: Request<proto::GetRecoveryFlowRequest>,
    ) -> Result<Response<proto::RecoveryFlow>, Status> {
        let accepted = accepted(&request);
        let hint = Hint::Flow(request.get_ref().flow_id.clone());
        let (result, read) = noting_flow_locale(self.inner.get_recovery_flow(request)).await;
        self.answer(result, accepted, hint.or_read(read)).await
    }

    async fn send_verification_code(
        &self,
        request: Request<proto::SendVerificationCodeRequest>,
    ) -> Result<Response<proto::SendVerificationCodeResponse>, Status> {
        let accepted = accepted(&request);
        let hint = Hint::Flow(request.get_ref().flow_id.clone());
        let (result, read) = noting_flow_locale(self.inner.send_verification_code(request)).await;
        self.answer(result, accepted, hint.or_read(read)).await
    }

    async fn verify_code(
        &self,
        request: Request<proto::VerifyCodeRequest>,
    ) -> Result<Response<proto::VerifyCodeResponse>, Status> {
        let accepted = accepted(&request);
        let hint = Hint::Flow(request.get_ref().flow_id.clone());
        let (result, read) = noting_flow_locale(self.inner.verify_code(request)).await;
        self.answer(result, accepted, hint.or_read(read)).await
    }

    async fn reset_password(
        &self,
        request: Request<proto::ResetPasswordRequest>,
    ) -> Result<Response<proto::ResetPasswordResponse>, Status> {
        let accepted = accepted(&request);
        let hint = Hint::Token(SecretString::from(request.get_ref().reset_token.clone()));
        let (result, read) = noting_flow_locale(self.inner.reset_password(request)).await;
        self.answer(result, accepted, hint.or_read(read)).await
    }

    async fn validate_password(
        &self,
        request: Request<proto::ValidatePasswordRequest>,
    ) -> Result<Response<proto::ValidatePasswordResponse>, Status> {
        let accepted = accepted(&request);
        let result = self.inner.validate_password(request).await;
        self.answer(result, accepted, Hint::None).await
    }

    async fn cancel_recovery(
        &self,
        request: Request<proto::CancelRecoveryRequest>,
    ) -> Result<Response<proto::CancelRecoveryResponse>, Status> {
        let accepted = accepted(&request);
        let hint = Hint::Flow(request.get_ref().flow_id.clone());
        let (result, read) = noting_flow_locale(self.inner.cancel_recovery(request)).await;
        self.answer(result, accepted, hint.or_read(read)).await
    }
    async fn report_unrequested_recovery(
        &self,
        request: Request<proto::ReportUnrequestedRecoveryRequest>,
    ) -> Result<Response<proto::ReportUnrequestedRecoveryResponse>, Status> {
        let accepted = accepted(&request);
        let result = self.inner.report_unrequested_recovery(request).await;
        self.answer(result, accepted, Hint::None).await
    }
}

#[tonic::async_trait]
impl<S: AccountService> AccountService for Localized<S> {
    async fn create_account(
        &self,
        request: Request<proto::CreateAccountRequest>,
    ) -> Result<Response<proto::Account>, Status> {
        let accepted = accepted(&request);
        let result = self.inner.create_account(request).await;
        self.answer(result, accepted, Hint::None).await
    }

    async fn verify_password(
        &self,
        request: Request<proto::VerifyPasswordRequest>,
    ) -> Result<Response<proto::VerifyPasswordResponse>, Status> {
        let accepted = accepted(&request);
        let result = self.inner.verify_password(request).await;
        self.answer(result, accepted, Hint::None).await
    }

    async fn delete_account(
        &self,
        request: Request<proto::DeleteAccountRequest>,
    ) -> Result<Response<proto::DeleteAccountResponse>, Status> {
        let accepted = accepted(&request);
        let result = self.inner.delete_account(request).await;
        self.answer(result, accepted, Hint::None).await
    }

    async fn export_account_data(
        &self,
        request: Request<proto::ExportAccountDataRequest>,
    ) -> Result<Response<proto::ExportAccountDataResponse>, Status> {
        let accepted = accepted(&request);
        let result = self.inner.export_account_data(request).await;
        self.answer(result, accepted, Hint::None).await
    }
    async fn admin_start_recovery(
        &self,
        request: Request<proto::AdminStartRecoveryRequest>,
    ) -> Result<Response<proto::AdminStartRecoveryResponse>, Status> {
        let accepted = accepted(&request);
        let hint = Hint::Requested(request.get_ref().locale.chars().take(35).collect());
        let result = self.inner.admin_start_recovery(request).await;
        self.answer(result, accepted, hint).await
    }
}
