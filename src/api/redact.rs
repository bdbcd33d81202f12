//! `Debug` for the wire messages that carry secrets (their derived `Debug` is switched off in
//! `build.rs`): field names stay visible for debugging, values never.

use std::fmt;

use crate::proto;

macro_rules! redacted_debug {
    ($($message:ident { $($field:ident),* $(,)? })*) => {
        $(
            impl fmt::Debug for proto::$message {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    let mut s = f.debug_struct(stringify!($message));
                    $( let _ = &self.$field; s.field(stringify!($field), &"<redacted>"); )*
                    s.finish()
                }
            }
        )*
    };
}

redacted_debug! {
    StartRecoveryRequest { login_id, captcha_id, captcha_answer, locale, pow_solution }
    VerifyCodeRequest { flow_id, code }
    VerifyCodeResponse { reset_token, expires_at }
    ResetPasswordRequest { reset_token, new_password, new_password_confirmation }
    ValidatePasswordRequest { password, login_id }
    CreateAccountRequest { login_id, email, phone, password }
    VerifyPasswordRequest { login_id, password }
    ReportUnrequestedRecoveryRequest { report_code }
    AdminStartRecoveryRequest { login_id, return_code, locale }
    AdminStartRecoveryResponse { flow, code }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_messages_never_print_their_values() {
        let request = proto::ResetPasswordRequest {
            reset_token: "tok-secret".into(),
            new_password: "pw-secret".into(),
            new_password_confirmation: "pw-secret".into(),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("new_password"));
    }
}
