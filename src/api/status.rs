//! The one mapping from domain errors to gRPC: a status code, an `ErrorInfo` with a stable
//! reason, and `BadRequest` / `RetryInfo` where they help. Unexpected errors leave the
//! process as a bare `INTERNAL`; their chain goes to the log only.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::recovery::RecoveryError;

pub const DOMAIN: &str = "recovery.identity";

fn with_details(
    code: Code,
    reason: &'static str,
    message: String,
    metadata: HashMap<String, String>,
    build: impl FnOnce(&mut ErrorDetails),
) -> Status {
    crate::telemetry::metrics::rpc_error(reason);
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    build(&mut details);
    Status::with_error_details(code, message, details)
}

pub fn to_status(error: RecoveryError) -> Status {
    let message = error.to_string();
    let none = HashMap::new;
    match error {
        RecoveryError::InvalidArgument(violations) => {
            let fields = violations
                .iter()
                .map(|v| v.field)
                .collect::<Vec<_>>()
                .join(", ");
            with_details(
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
                format!("invalid argument: {fields}"),
                none(),
                |d| {
                    for violation in violations {
                        d.add_bad_request_violation(violation.field, violation.description);
                    }
                },
            )
        }
        RecoveryError::CaptchaInvalid(violations) => with_details(
            Code::InvalidArgument,
            "CAPTCHA_INVALID",
            message,
            none(),
            |d| {
                for violation in violations {
                    d.add_bad_request_violation(violation.field, violation.description);
                }
            },
        ),
        RecoveryError::FlowNotFound => {
            with_details(Code::NotFound, "FLOW_NOT_FOUND", message, none(), |_| {})
        }
        RecoveryError::FlowState { state } => with_details(
            Code::FailedPrecondition,
            "FLOW_STATE",
            message,
            HashMap::from([("state".to_owned(), state.to_owned())]),
            |_| {},
        ),
        RecoveryError::CodeInvalid { attempts_left } => {
            crate::telemetry::metrics::flow_step(crate::telemetry::metrics::FlowStep::CodeWrong);
            with_details(
                Code::InvalidArgument,
                "CODE_INVALID",
                message,
                HashMap::from([("attempts_left".to_owned(), attempts_left.to_string())]),
                |d| {
                    d.add_bad_request_violation("code", "the code is wrong");
                },
            )
        }
        RecoveryError::CodeExpired => with_details(
            Code::FailedPrecondition,
            "CODE_EXPIRED",
            message,
            none(),
            |_| {},
        ),
        RecoveryError::AttemptsExhausted => with_details(
            Code::FailedPrecondition,
            "ATTEMPTS_EXHAUSTED",
            message,
            none(),
            |_| {},
        ),
        RecoveryError::ResendTooSoon { retry_after } => with_details(
            Code::ResourceExhausted,
            "RESEND_TOO_SOON",
            message,
            HashMap::from([(
                "retry_after_seconds".to_owned(),
                retry_after.as_secs().max(1).to_string(),
            )]),
            |d| {
                d.set_retry_info(Some(retry_after));
            },
        ),
        RecoveryError::RateLimited { retry_after, scope } => {
            crate::telemetry::metrics::limit_hit(scope);
            with_details(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                message,
                HashMap::from([
                    ("scope".to_owned(), scope.to_owned()),
                    (
                        "retry_after_seconds".to_owned(),
                        retry_after.as_secs().max(1).to_string(),
                    ),
                ]),
                |d| {
                    d.set_retry_info(Some(retry_after));
                },
            )
        }
        RecoveryError::TokenInvalid => with_details(
            Code::Unauthenticated,
            "TOKEN_INVALID",
            message,
            none(),
            |_| {},
        ),
        RecoveryError::ReportCodeInvalid => with_details(
            Code::Unauthenticated,
            "TOKEN_INVALID",
            message,
            none(),
            |d| {
                d.add_bad_request_violation(
                    "report_code",
                    "wrong, expired or already used; it is the code from the mail",
                );
            },
        ),
        RecoveryError::PasswordMismatch => with_details(
            Code::InvalidArgument,
            "PASSWORD_MISMATCH",
            message,
            none(),
            |d| {
                d.add_bad_request_violation("new_password_confirmation", "must equal new_password");
            },
        ),
        RecoveryError::PasswordPolicy(violations) => {
            let reasons = violations
                .iter()
                .map(|v| v.reason)
                .collect::<Vec<_>>()
                .join(",");
            with_details(
                Code::InvalidArgument,
                "PASSWORD_POLICY",
                message,
                HashMap::from([("violations".to_owned(), reasons)]),
                |d| {
                    // Each broken rule is its own violation carrying its own stable reason.
                    let violations: Vec<FieldViolation> = violations
                        .into_iter()
                        .map(|v| FieldViolation {
                            field: "new_password".to_owned(),
                            description: format!("password {}", v.message),
                            reason: v.reason.to_owned(),
                            localized_message: None,
                        })
                        .collect();
                    d.set_bad_request(violations);
                },
            )
        }
        RecoveryError::AccountExists => with_details(
            Code::AlreadyExists,
            "ACCOUNT_EXISTS",
            message,
            none(),
            |_| {},
        ),
        RecoveryError::AccountNotFound => {
            with_details(Code::NotFound, "ACCOUNT_NOT_FOUND", message, none(), |_| {})
        }
        RecoveryError::PermissionDenied => with_details(
            Code::PermissionDenied,
            "PERMISSION_DENIED",
            message,
            none(),
            |_| {},
        ),
        RecoveryError::Unavailable(source) => {
            tracing::warn!(error = format!("{source:#}"), "backend unavailable");
            with_details(
                Code::Unavailable,
                "UNAVAILABLE",
                "a backend is temporarily unavailable; retry".to_owned(),
                none(),
                |d| {
                    d.set_retry_info(Some(std::time::Duration::from_secs(1)));
                },
            )
        }
        RecoveryError::Internal(source) => {
            tracing::error!(error = format!("{source:#}"), "internal error");
            with_details(
                Code::Internal,
                "INTERNAL",
                "internal error".to_owned(),
                none(),
                |_| {},
            )
        }
    }
}
