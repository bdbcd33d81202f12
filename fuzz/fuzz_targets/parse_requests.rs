//! Every request message through the service's edge: protobuf decoding (prost, as the gRPC
//! codec does it), then the same parsers and password policy the handlers run. Asserts that
//! nothing panics and that what a parser accepts keeps its promises (a login's lookup form is
//! its canonical form, and canonical again, a code is 6-10 ASCII digits or 20 Crockford
//! symbols, ids are canonical UUIDs, ...).
//!
//! Input layout: the first byte picks the request type; the rest is either decoded as that
//! protobuf message or, when it is not valid protobuf, split at 0xFF bytes into the message's
//! string fields, so the parsers see arbitrary strings even before libFuzzer learns protobuf.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use recovery_service::proto;
use recovery_service::recovery::input::{
    self, LoginId, MAX_FIELD_BYTES, ResetToken, VerificationCode,
};
use recovery_service::recovery::policy::{
    self, CharClass, Charset, PasswordPolicy, PolicySettings,
};
use unicode_normalization::UnicodeNormalization;

fn policies() -> &'static [PasswordPolicy; 2] {
    static POLICIES: OnceLock<[PasswordPolicy; 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        [
            PasswordPolicy::new(PolicySettings::default()),
            PasswordPolicy::new(PolicySettings {
                charset: Charset::Unicode,
                required_classes: vec![
                    CharClass::Lower,
                    CharClass::Upper,
                    CharClass::Digit,
                    CharClass::Symbol,
                ],
                ..PolicySettings::default()
            }),
        ]
    })
}

/// The string fields of a message, from raw bytes (see the module comment).
fn fields<const N: usize>(body: &[u8]) -> [String; N] {
    let mut parts = body.split(|b| *b == 0xFF);
    std::array::from_fn(|_| String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned())
}

fn decode_or_split<M: Message + Default>(body: &[u8], from_fields: impl FnOnce() -> M) -> M {
    M::decode(body).unwrap_or_else(|_| from_fields())
}

fn login(field: &'static str, raw: &str) -> Option<LoginId> {
    match LoginId::parse(field, raw) {
        Ok(login) => {
            assert!(raw.len() <= MAX_FIELD_BYTES);
            let (typed, normalized) = (login.typed(), login.normalized());
            assert!(!typed.is_empty());
            assert_eq!(typed, typed.trim(), "stored login not trimmed");
            // The lookup form is the one canonical login (NFKC, full case fold, NFC), and a
            // fixed point of it: a login and its own lookup form must be the same login.
            assert_eq!(normalized, input::canonical_login(typed));
            assert_eq!(
                normalized,
                input::canonical_login(normalized),
                "canonical login not idempotent"
            );
            assert_eq!(normalized, normalized.trim(), "lookup form not trimmed");
            assert!(!normalized.contains('\0'));
            assert!(normalized.contains('@'), "an address has an @");
            assert!(normalized.starts_with(login.local_part()));
            // Logins are personal data: the Debug form (the only one a log can get) is masked.
            assert!(!format!("{login:?}").contains(normalized));
            Some(login)
        }
        Err(violation) => {
            assert_eq!(violation.field, field);
            None
        }
    }
}

fn id(field: &'static str, raw: &str) {
    match input::parse_id(field, raw) {
        Ok(id) => {
            assert_eq!(id.len(), 36);
            assert_eq!(id, id.to_lowercase());
            assert_eq!(
                input::parse_id(field, &id).ok(),
                Some(id.clone()),
                "not canonical"
            );
        }
        Err(violation) => assert_eq!(violation.field, field),
    }
}

fn locale(raw: &str) {
    if let Ok(tag) = input::parse_locale("locale", raw) {
        assert!(!tag.is_empty() && tag.is_ascii() && !tag.contains('_'));
        assert_eq!(input::parse_locale("locale", &tag).ok(), Some(tag.clone()));
    }
}

fn password(field: &'static str, raw: &str) -> Option<String> {
    let parsed = input::parse_password(field, raw).ok()?;
    assert!(!raw.is_empty() && raw.len() <= MAX_FIELD_BYTES && !raw.contains('\0'));
    use secrecy::ExposeSecret;
    Some(parsed.expose_secret().to_owned())
}

/// The policy on a password that got past `parse_password`, as ResetPassword and
/// ValidatePassword run it.
fn assess(password: &str, login: Option<&LoginId>) {
    let local = login.map(LoginId::local_part);
    let inputs: Vec<&str> = [login.map(LoginId::normalized), local]
        .into_iter()
        .flatten()
        .collect();
    let known = [
        policy::reason::TOO_SHORT,
        policy::reason::TOO_LONG,
        policy::reason::CHARSET,
        policy::reason::COMMON,
        policy::reason::CONTAINS_LOGIN,
        policy::reason::TOO_WEAK,
        policy::reason::MISSING_CLASS,
    ];
    for policy in policies() {
        let assessment = policy.assess(password, local, &inputs);
        let settings = policy.settings();
        assert!(assessment.strength <= 4);
        for violation in &assessment.violations {
            assert!(known.contains(&violation.reason), "{}", violation.reason);
        }
        let has = |reason| assessment.violations.iter().any(|v| v.reason == reason);
        let length = assessment.normalized.chars().count();
        if length > settings.max_length {
            // The bound is checked before zxcvbn, whose cost grows with the length.
            assert!(has(policy::reason::TOO_LONG) && assessment.strength == 0);
        }
        if length < settings.min_length {
            assert!(has(policy::reason::TOO_SHORT));
        }
        match settings.charset {
            Charset::Ascii => assert_eq!(assessment.normalized, password),
            Charset::Unicode => {
                let again: String = assessment.normalized.nfkc().collect();
                assert_eq!(again, assessment.normalized, "NFKC is not idempotent here");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => {
            let r = decode_or_split(body, || {
                let [login_id, captcha_id, captcha_answer, locale, pow_solution] = fields(body);
                proto::StartRecoveryRequest {
                    login_id,
                    captcha_id,
                    captcha_answer,
                    locale,
                    pow_solution,
                    ..Default::default()
                }
            });
            login("login_id", &r.login_id);
            id("captcha_id", &r.captcha_id);
            if let Ok(answer) = input::parse_captcha_answer("captcha_answer", &r.captcha_answer) {
                use secrecy::ExposeSecret;
                let answer = answer.expose_secret();
                assert!(!answer.is_empty() && answer.bytes().all(|b| b.is_ascii_digit()));
            }
            locale(&r.locale);
            // Never a violation: a token that is not ours is no token.
            if let Some(token) = input::DeviceToken::parse(&r.device_token) {
                assert_eq!(token.expose().len(), input::DeviceToken::CHARS);
            }
        }
        1 => {
            let r = decode_or_split(body, || {
                let [flow_id] = fields(body);
                proto::GetRecoveryFlowRequest { flow_id }
            });
            id("flow_id", &r.flow_id);
        }
        2 => {
            let r = decode_or_split(body, || {
                let [flow_id, channel] = fields(body);
                proto::SendVerificationCodeRequest {
                    flow_id,
                    channel: channel.len() as i32 - 1,
                }
            });
            id("flow_id", &r.flow_id);
            let _ = proto::Channel::try_from(r.channel);
        }
        3 => {
            let r = decode_or_split(body, || {
                let [flow_id, code] = fields(body);
                proto::VerifyCodeRequest { flow_id, code }
            });
            id("flow_id", &r.flow_id);
            if let Ok(code) = VerificationCode::parse("code", &r.code) {
                if code.is_long() {
                    // A long code: 20 symbols of Crockford's alphabet, canonical (upper case).
                    assert_eq!(code.expose().len(), input::LONG_CODE_CHARS);
                    assert!(
                        code.expose()
                            .bytes()
                            .all(|b| input::CROCKFORD_ALPHABET.contains(&b))
                    );
                } else {
                    let digits = VerificationCode::MIN_DIGITS..=VerificationCode::MAX_DIGITS;
                    assert!(digits.contains(&code.expose().len()));
                    assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
                }
            }
        }
        4 => {
            let r = decode_or_split(body, || {
                let [reset_token, new_password, new_password_confirmation] = fields(body);
                proto::ResetPasswordRequest {
                    reset_token,
                    new_password,
                    new_password_confirmation,
                }
            });
            if let Ok(token) = ResetToken::parse("reset_token", &r.reset_token) {
                assert_eq!(token.expose().len(), 43);
                assert!(
                    token
                        .expose()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                );
            }
            let confirmation = password("new_password_confirmation", &r.new_password_confirmation);
            if let Some(new) = password("new_password", &r.new_password) {
                assess(&new, None);
                let _ = confirmation.is_some_and(|c| c == new);
            }
        }
        5 => {
            let r = decode_or_split(body, || {
                let [password, login_id] = fields(body);
                proto::ValidatePasswordRequest { password, login_id }
            });
            let login = login("login_id", &r.login_id);
            if let Some(password) = password("password", &r.password) {
                assess(&password, login.as_ref());
            }
        }
        6 => {
            let r = decode_or_split(body, || {
                let [login_id, email, phone, password] = fields(body);
                proto::CreateAccountRequest {
                    login_id,
                    email,
                    phone,
                    password,
                }
            });
            login("login_id", &r.login_id);
            if let Ok(Some(email)) = input::parse_optional_email("email", &r.email) {
                assert_eq!(email.normalized(), email.normalized().to_lowercase());
            }
            if let Ok(Some(phone)) = input::parse_optional_phone("phone", &r.phone) {
                let digits = phone.strip_prefix('+').expect("E.164 starts with +");
                assert!((8..=15).contains(&digits.len()));
                assert!(digits.bytes().all(|b| b.is_ascii_digit()));
            }
            password("password", &r.password);
        }
        _ => {
            let r = decode_or_split(body, || {
                let [login_id, password] = fields(body);
                proto::VerifyPasswordRequest { login_id, password }
            });
            login("login_id", &r.login_id);
            password("password", &r.password);
            let _ = proto::CancelRecoveryRequest::decode(body);
            let _ = proto::CreateCaptchaRequest::decode(body);
        }
    }
});
