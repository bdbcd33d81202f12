//! The recovery requests as the use cases take them: parsed once at the edge, each field a
//! domain type, every violation reported at once. Built from raw strings so that any edge (the
//! gRPC adapters in `api`, the CLI) parses the same way.

use secrecy::SecretString;

use super::error::{FieldViolation, RecoveryError, Violations};
use super::flow::Channel;
use super::input::{self, DeviceToken, LoginId, ReportCode, ResetToken, VerificationCode};
use super::pow::PowSolution;

/// A flow id we issued (a UUID): anything else cannot exist in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowId(String);

impl FlowId {
    pub fn parse(raw: &str) -> Result<Self, RecoveryError> {
        input::parse_id("flow_id", raw)
            .map(Self)
            .map_err(|violation| RecoveryError::InvalidArgument(vec![violation]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A captcha as sent: the picture's id and, unless the person took the way round the picture
/// (`pow_solution`), the digits typed.
pub struct CaptchaAnswer {
    pub id: String,
    pub answer: Option<SecretString>,
}

impl CaptchaAnswer {
    /// The id and the digits, when digits were typed.
    pub fn typed(&self) -> Option<(&str, &SecretString)> {
        self.answer
            .as_ref()
            .map(|answer| (self.id.as_str(), answer))
    }
}

pub struct StartRecovery {
    pub login: LoginId,
    /// `None` when neither field was given (refused later if captchas are on).
    pub captcha: Option<CaptchaAnswer>,
    /// `None` when not given (refused later if proof of work is on).
    pub pow_solution: Option<PowSolution>,
    pub locale: String,
    /// `None` when not given or not shaped like ours (a start ignores it silently then).
    pub device_token: Option<DeviceToken>,
}

impl StartRecovery {
    /// The same command naming a device token (see `DeviceToken::parse`: never a violation).
    pub fn with_device_token(mut self, device_token: &str) -> Self {
        self.device_token = DeviceToken::parse(device_token);
        self
    }

    pub fn parse(
        login_id: &str,
        locale: &str,
        captcha_id: &str,
        captcha_answer: &str,
        pow_solution: &str,
    ) -> Result<Self, RecoveryError> {
        let mut violations = Violations::new();
        let login = violations.check(LoginId::parse("login_id", login_id));
        let locale = violations.check(input::parse_locale("locale", locale));
        let captcha = if captcha_id.is_empty() && captcha_answer.is_empty() {
            Some(None)
        } else {
            let id = violations.check(input::parse_id("captcha_id", captcha_id));
            // The picture's id without digits: the way round the picture was taken (or nothing
            // was typed); the use case decides whether that is enough.
            let answer = if captcha_answer.trim().is_empty() {
                Some(None)
            } else {
                violations
                    .check(input::parse_captcha_answer(
                        "captcha_answer",
                        captcha_answer,
                    ))
                    .map(Some)
            };
            id.zip(answer)
                .map(|(id, answer)| Some(CaptchaAnswer { id, answer }))
        };
        let pow_solution = if pow_solution.trim().is_empty() {
            Some(None)
        } else {
            violations
                .check(PowSolution::parse("pow_solution", pow_solution))
                .map(Some)
        };
        // Each field is `None` exactly when its violation was recorded.
        let (Some(login), Some(captcha), Some(locale), Some(pow_solution)) =
            (login, captcha, locale, pow_solution)
        else {
            return Err(violations.into_error());
        };
        Ok(Self {
            login,
            captcha,
            pow_solution,
            locale,
            device_token: None,
        })
    }
}

pub struct SendCode {
    pub flow_id: FlowId,
    /// `None`: the flow's only channel.
    pub channel: Option<Channel>,
}

impl SendCode {
    /// `channel` comes already decoded by the edge (the wire's enum is not the domain's).
    pub fn parse(
        flow_id: &str,
        channel: Result<Option<Channel>, FieldViolation>,
    ) -> Result<Self, RecoveryError> {
        let mut violations = Violations::new();
        let flow_id = violations.check(input::parse_id("flow_id", flow_id));
        let channel = violations.check(channel);
        // Each field is `None` exactly when its violation was recorded.
        let (Some(flow_id), Some(channel)) = (flow_id, channel) else {
            return Err(violations.into_error());
        };
        Ok(Self {
            flow_id: FlowId(flow_id),
            channel,
        })
    }
}

pub struct VerifyCode {
    pub flow_id: FlowId,
    pub code: VerificationCode,
}

impl VerifyCode {
    pub fn parse(flow_id: &str, code: &str) -> Result<Self, RecoveryError> {
        let mut violations = Violations::new();
        let flow_id = violations.check(input::parse_id("flow_id", flow_id));
        let code = violations.check(VerificationCode::parse("code", code));
        // Each field is `None` exactly when its violation was recorded.
        let (Some(flow_id), Some(code)) = (flow_id, code) else {
            return Err(violations.into_error());
        };
        Ok(Self {
            flow_id: FlowId(flow_id),
            code,
        })
    }
}

pub struct ResetPassword {
    pub token: ResetToken,
    pub new_password: SecretString,
    pub confirmation: SecretString,
}

impl ResetPassword {
    pub fn parse(
        reset_token: &str,
        new_password: &str,
        confirmation: &str,
    ) -> Result<Self, RecoveryError> {
        let mut violations = Violations::new();
        let token = violations.check(ResetToken::parse("reset_token", reset_token));
        let new_password = violations.check(input::parse_password("new_password", new_password));
        let confirmation = violations.check(input::parse_password(
            "new_password_confirmation",
            confirmation,
        ));
        // Each field is `None` exactly when its violation was recorded.
        let (Some(token), Some(new_password), Some(confirmation)) =
            (token, new_password, confirmation)
        else {
            return Err(violations.into_error());
        };
        Ok(Self {
            token,
            new_password,
            confirmation,
        })
    }
}

pub struct ValidatePassword {
    pub password: SecretString,
    /// Given, the password is also checked against it (a password containing the login).
    pub login: Option<LoginId>,
}

impl ValidatePassword {
    pub fn parse(password: &str, login_id: &str) -> Result<Self, RecoveryError> {
        let mut violations = Violations::new();
        let password = violations.check(input::parse_password("password", password));
        let login = if login_id.trim().is_empty() {
            Some(None)
        } else {
            violations
                .check(LoginId::parse("login_id", login_id))
                .map(Some)
        };
        // Each field is `None` exactly when its violation was recorded.
        let (Some(password), Some(login)) = (password, login) else {
            return Err(violations.into_error());
        };
        Ok(Self { password, login })
    }
}

/// `ReportUnrequestedRecovery`: the report code from a code mail.
pub struct ReportUnrequested {
    pub report_code: ReportCode,
}

impl ReportUnrequested {
    pub fn parse(report_code: &str) -> Result<Self, RecoveryError> {
        ReportCode::parse("report_code", report_code)
            .map(|report_code| Self { report_code })
            .map_err(|violation| RecoveryError::InvalidArgument(vec![violation]))
    }
}

/// `AccountService.AdminStartRecovery`: a helpdesk starts a flow for an existing account.
pub struct AdminStartRecovery {
    pub login: LoginId,
    /// Hand the code back to the caller instead of mailing it.
    pub return_code: bool,
    pub locale: String,
}

impl AdminStartRecovery {
    pub fn parse(login_id: &str, return_code: bool, locale: &str) -> Result<Self, RecoveryError> {
        let mut violations = Violations::new();
        let login = violations.check(LoginId::parse("login_id", login_id));
        let locale = violations.check(input::parse_locale("locale", locale));
        // Each field is `None` exactly when its violation was recorded.
        let (Some(login), Some(locale)) = (login, locale) else {
            return Err(violations.into_error());
        };
        Ok(Self {
            login,
            return_code,
            locale,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0f8e2c52-5b8e-4d8e-9c39-3f1f1c1c1c1c";

    fn captcha(id: &str, answer: &str) -> Result<Option<(String, bool)>, RecoveryError> {
        StartRecovery::parse("jane@example.com", "en", id, answer, "")
            .map(|start| start.captcha.map(|c| (c.id.clone(), c.typed().is_some())))
    }

    #[test]
    fn a_picture_id_without_digits_is_a_captcha_not_typed_and_digits_need_an_id() {
        assert!(matches!(captcha("", ""), Ok(None)));
        assert!(matches!(captcha(ID, ""), Ok(Some((_, false)))));
        assert!(matches!(captcha(ID, "  "), Ok(Some((_, false)))));
        assert!(matches!(captcha(ID, "123456"), Ok(Some((_, true)))));
        let Err(RecoveryError::InvalidArgument(violations)) = captcha("", "123456") else {
            panic!("digits without the picture's id must be refused");
        };
        assert_eq!(violations[0].field, "captcha_id");
    }
}
