//! The one error of the recovery boundary. `api::status` maps each variant to exactly one gRPC
//! code and one stable `ErrorInfo` reason.

use std::time::Duration;

/// One malformed field: which field and what is wrong with it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }
}

/// One broken password rule, with its own stable reason (e.g. `PASSWORD_TOO_SHORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyViolation {
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    /// No captcha that passes: the digits or the proof of work (each a field violation) is
    /// missing, wrong, expired or already used.
    #[error("captcha is missing, wrong, expired or already used")]
    CaptchaInvalid(Vec<FieldViolation>),
    #[error("recovery flow not found or expired")]
    FlowNotFound,
    #[error("not allowed while the flow is {state}")]
    FlowState { state: &'static str },
    #[error("the verification code is wrong")]
    CodeInvalid { attempts_left: u32 },
    #[error("the verification code has expired; request a new one")]
    CodeExpired,
    #[error("too many wrong codes; start over")]
    AttemptsExhausted,
    #[error("a new code cannot be sent yet")]
    ResendTooSoon { retry_after: Duration },
    #[error("too many requests")]
    RateLimited {
        retry_after: Duration,
        scope: &'static str,
    },
    #[error("the reset token is invalid, expired or already used")]
    TokenInvalid,
    /// A "it wasn't me" report code that is wrong, expired or already used (`TOKEN_INVALID`,
    /// with the field named).
    #[error("the report code is invalid, expired or already used")]
    ReportCodeInvalid,
    #[error("the two new passwords differ")]
    PasswordMismatch,
    #[error("the password does not meet the policy")]
    PasswordPolicy(Vec<PolicyViolation>),
    #[error("an account with this login already exists")]
    AccountExists,
    #[error("no account with this id")]
    AccountNotFound,
    #[error("the caller is not allowed to use this service")]
    PermissionDenied,
    #[error("a backend is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl RecoveryError {
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// `CAPTCHA_INVALID` naming the one proof that failed.
    pub fn captcha_invalid(field: &'static str) -> Self {
        Self::CaptchaInvalid(vec![FieldViolation::new(
            field,
            "wrong, expired or already used; request a new captcha",
        )])
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }
}

/// Collects every field violation of a request so that all are reported at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the parsed value, or records the violation and returns `None`.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.0.push(violation);
                None
            }
        }
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    /// Every violation recorded, as the error of the request.
    pub fn into_error(self) -> RecoveryError {
        RecoveryError::InvalidArgument(self.0)
    }

    pub fn into_result(self) -> Result<(), RecoveryError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RecoveryError::InvalidArgument(self.0))
        }
    }
}
