//! Parse, don't validate: every value that enters the domain from the wire goes through one of
//! these constructors, so an invalid login, code, token or id cannot exist past the edge.
//! Errors name the field and what is wrong, never the value (it may be a secret).

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

use super::error::FieldViolation;

/// Longest field we look at at all; anything longer is rejected before any other work, so a
/// 1 MiB string costs one length check.
pub const MAX_FIELD_BYTES: usize = 1024;

fn common_checks(field: &'static str, raw: &str, max_chars: usize) -> Result<(), FieldViolation> {
    if raw.len() > MAX_FIELD_BYTES || raw.chars().count() > max_chars {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if raw.contains('\0') {
        return Err(FieldViolation::new(field, "must not contain NUL bytes"));
    }
    Ok(())
}

/// The one definition of "the same login": trimmed, Unicode NFKC (full-width and other
/// compatibility forms become their plain letters), full case folding (CaseFolding.txt C+F, so
/// "ß", "SS" and "ss" are one login), then NFC again, since folding can un-normalize. Rate-limit
/// keys, the account lookup and uniqueness all use it, and every database compares it byte for
/// byte (binary collation on MySQL/MariaDB). Accents and combining marks are kept, never
/// stripped: "jöhn" and "john" are different people's addresses. Mixed scripts and confusables
/// ("јohn" with a Cyrillic "ј") are not refused: they are different mailboxes, can only reach
/// the account registered under exactly that spelling, and get budgets of their own keyed to
/// that account; refusing them would lock out real users of those scripts.
pub fn canonical_login(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let compatible: String = raw.trim().nfkc().collect();
    caseless::default_case_fold_str(&compatible).nfc().collect()
}

/// A login id: an e-mail address. Stored as typed (trimmed), looked up case-folded.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginId {
    typed: String,
    normalized: String,
}

impl std::fmt::Debug for LoginId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Logins are personal data: only the masked form may reach a log.
        f.debug_tuple("LoginId")
            .field(&crate::secrets::mask_email(&self.normalized))
            .finish()
    }
}

impl LoginId {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        common_checks(field, raw, 254)?;
        let typed = raw.trim();
        if typed.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        // Checked in NFC: "é" typed decomposed (e + U+0301, as some keyboards and pastes
        // send it) is the same address as the precomposed one, and the combining mark alone is
        // not a letter.
        let composed: String = typed.nfc().collect();
        parse_email(&composed).map_err(|why| FieldViolation::new(field, why))?;
        Ok(Self {
            typed: typed.to_owned(),
            normalized: canonical_login(typed),
        })
    }

    pub fn typed(&self) -> &str {
        &self.typed
    }

    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The part before `@`, case-folded (the policy forbids passwords containing it).
    pub fn local_part(&self) -> &str {
        self.normalized
            .split_once('@')
            .map_or(self.normalized.as_str(), |(local, _)| local)
    }
}

/// A pragmatic address check: what mail systems accept in practice, not all of RFC 5322
/// (quoted local parts and IP literals are refused on purpose: they are an injection surface
/// and no real user types them into a recovery form).
fn parse_email(address: &str) -> Result<(), &'static str> {
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or("must be an e-mail address (name@domain)")?;
    if local.is_empty() || local.len() > 64 {
        return Err("must be an e-mail address: the part before @ must be 1-64 characters");
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    if !local_ok {
        return Err("must be an e-mail address: the part before @ has invalid characters");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if !domain_ok {
        return Err("must be an e-mail address: the domain is invalid");
    }
    Ok(())
}

/// An optional e-mail field (empty means "not given").
pub fn parse_optional_email(
    field: &'static str,
    raw: &str,
) -> Result<Option<LoginId>, FieldViolation> {
    if raw.trim().is_empty() {
        common_checks(field, raw, 254)?;
        return Ok(None);
    }
    LoginId::parse(field, raw).map(Some)
}

/// An optional phone number in E.164 (`+` and 8-15 digits).
pub fn parse_optional_phone(
    field: &'static str,
    raw: &str,
) -> Result<Option<String>, FieldViolation> {
    common_checks(field, raw, 32)?;
    let phone: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    if phone.is_empty() {
        return Ok(None);
    }
    let digits = phone.strip_prefix('+').unwrap_or("");
    if !(8..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(FieldViolation::new(
            field,
            "must be a phone number in E.164 form, e.g. +46701234567",
        ));
    }
    Ok(Some(phone))
}

/// An opaque identifier we issued (flow or captcha): a UUID. Anything else cannot exist in the
/// store, so it is refused at the edge without a lookup.
pub fn parse_id(field: &'static str, raw: &str) -> Result<String, FieldViolation> {
    common_checks(field, raw, 64)?;
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    uuid::Uuid::try_parse(trimmed)
        .map(|id| id.as_hyphenated().to_string())
        .map_err(|_| FieldViolation::new(field, "must be an id returned by this service"))
}

/// The digits a person read off the captcha picture.
pub fn parse_captcha_answer(
    field: &'static str,
    raw: &str,
) -> Result<SecretString, FieldViolation> {
    common_checks(field, raw, 16)?;
    let answer: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if answer.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if !answer.chars().all(|c| c.is_ascii_digit()) {
        return Err(FieldViolation::new(field, "must contain only digits"));
    }
    Ok(SecretString::from(answer))
}

/// A one-time code as typed: 6-10 digits (the deployment's `flow.code_digits`; the use case
/// checks the exact length), spaces and dashes forgiven ("123 456").
pub struct VerificationCode {
    code: SecretString,
    long: bool,
}

/// Crockford's base32 alphabet: digits and upper-case letters without I, L, O and U.
pub const CROCKFORD_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Characters of a long code (5 bits each: 100 bits).
pub const LONG_CODE_CHARS: usize = 20;

/// One typed character of a long code as Crockford's decoding reads it: either case, and the
/// look-alikes I and L as 1, O as 0. U is not in the alphabet.
fn crockford_symbol(c: char) -> Option<char> {
    match c.to_ascii_uppercase() {
        'I' | 'L' => Some('1'),
        'O' => Some('0'),
        upper if upper.is_ascii() && CROCKFORD_ALPHABET.contains(&(upper as u8)) => Some(upper),
        _ => None,
    }
}

/// A long code for display: 5 groups of 4 joined by `-` (`7K3M-…`).
pub fn group_long_code(canonical: &str) -> String {
    let chars: Vec<char> = canonical.chars().collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

impl VerificationCode {
    pub const MIN_DIGITS: usize = 6;
    pub const MAX_DIGITS: usize = 10;

    /// The violation for a code of the wrong length or with other characters than digits.
    pub fn wrong_shape(field: &'static str, digits: usize) -> FieldViolation {
        FieldViolation::new(
            field,
            format!(
                "must be the {digits}-digit code or the {LONG_CODE_CHARS}-character code from the message"
            ),
        )
    }

    /// A short code (6-10 digits) or a long code (20 Crockford base32 characters, any case,
    /// I/L read as 1 and O as 0); spaces and hyphens anywhere are ignored. A long code is kept
    /// in its canonical form (upper case, no separators), the one its MAC was made over.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        common_checks(field, raw, 64)?;
        let code: String = raw
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if code.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        if (Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&code.len())
            && code.chars().all(|c| c.is_ascii_digit())
        {
            return Ok(Self {
                code: SecretString::from(code),
                long: false,
            });
        }
        if code.chars().count() == LONG_CODE_CHARS {
            let canonical: Option<String> = code.chars().map(crockford_symbol).collect();
            if let Some(canonical) = canonical {
                return Ok(Self {
                    code: SecretString::from(canonical),
                    long: true,
                });
            }
        }
        Err(Self::wrong_shape(field, Self::MIN_DIGITS))
    }

    pub fn expose(&self) -> &str {
        self.code.expose_secret()
    }

    /// Whether this is a long code (the shape mailed once an account's guess budget is spent).
    pub fn is_long(&self) -> bool {
        self.long
    }
}

/// A device token as `ResetPassword` issues it: 32 random bytes, base64url without padding (43
/// characters). Anything else is no token at all, never an error: a start answers the same
/// with a malformed, forged, expired or foreign token as with none.
pub struct DeviceToken(SecretString);

impl DeviceToken {
    pub const CHARS: usize = 43;

    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() > MAX_FIELD_BYTES {
            return None;
        }
        let token = raw.trim();
        let ours = token.len() == Self::CHARS
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ours.then(|| Self(SecretString::from(token.to_owned())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A reset token as we issue it: 32 random bytes, base64url without padding (43 characters).
pub struct ResetToken(SecretString);

impl ResetToken {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        common_checks(field, raw, 128)?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        let well_formed = token.len() == 43
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !well_formed {
            // A token that cannot be one of ours is a client bug; saying so reveals nothing
            // about any real token.
            return Err(FieldViolation::new(
                field,
                "must be the reset token returned by VerifyCode",
            ));
        }
        Ok(Self(SecretString::from(token.to_owned())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// The "it wasn't me" code from a code mail: 128 random bits as 32 hex digits. Typed or pasted,
/// so case, spaces and hyphens are forgiven.
pub struct ReportCode(SecretString);

impl ReportCode {
    pub const HEX_DIGITS: usize = 32;

    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        common_checks(field, raw, 128)?;
        let code: String = raw
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if code.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        if code.len() != Self::HEX_DIGITS || !code.chars().all(|c| c.is_ascii_hexdigit()) {
            // Malformed is a client bug; saying so reveals nothing about any real code.
            return Err(FieldViolation::new(
                field,
                "must be the report code from the recovery mail (32 hexadecimal digits)",
            ));
        }
        Ok(Self(SecretString::from(code)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A password as typed, before any policy: bounded in size so nothing expensive (zxcvbn,
/// argon2) ever runs on a huge input.
pub fn parse_password(field: &'static str, raw: &str) -> Result<SecretString, FieldViolation> {
    if raw.len() > MAX_FIELD_BYTES {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {MAX_FIELD_BYTES} bytes"),
        ));
    }
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if raw.contains('\0') {
        return Err(FieldViolation::new(field, "must not contain NUL bytes"));
    }
    Ok(SecretString::from(raw.to_owned()))
}

/// A BCP 47-ish language tag; empty means English.
pub fn parse_locale(field: &'static str, raw: &str) -> Result<String, FieldViolation> {
    common_checks(field, raw, 35)?;
    let tag = raw.trim();
    if tag.is_empty() {
        return Ok("en".to_owned());
    }
    let mut parts = tag.split(['-', '_']);
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !(primary_ok && rest_ok) {
        return Err(FieldViolation::new(
            field,
            "must be a language tag such as en, sv or ru-RU",
        ));
    }
    Ok(tag.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_trimmed_and_case_folded_for_lookup_but_kept_as_typed() {
        let login = LoginId::parse("login_id", "  John.Doe@Example.COM ").unwrap();
        assert_eq!(login.typed(), "John.Doe@Example.COM");
        assert_eq!(login.normalized(), "john.doe@example.com");
        assert_eq!(login.local_part(), "john.doe");
    }

    #[test]
    fn a_decomposed_login_is_the_same_login_as_the_composed_one() {
        let composed = LoginId::parse("login_id", "Zo\u{e9}@example.com").unwrap();
        let decomposed = LoginId::parse("login_id", "Zoe\u{301}@example.com").unwrap();
        assert_eq!(decomposed.normalized(), composed.normalized());
        assert_eq!(decomposed.typed(), "Zoe\u{301}@example.com");
    }

    #[test]
    fn a_login_without_at_or_domain_is_rejected() {
        for bad in [
            "john",
            "john@",
            "@example.com",
            "john@example",
            "a b@example.com",
            "x@-a.com",
            "x@a..com",
        ] {
            assert!(LoginId::parse("login_id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_huge_or_nul_login_names_the_field() {
        for bad in [
            String::new(),
            "a".repeat(1 << 20),
            "a\0b@example.com".to_owned(),
        ] {
            let violation = LoginId::parse("login_id", &bad).unwrap_err();
            assert_eq!(violation.field, "login_id");
        }
    }

    #[test]
    fn the_debug_form_of_a_login_is_masked() {
        let login = LoginId::parse("login_id", "john@example.com").unwrap();
        assert!(!format!("{login:?}").contains("john@example.com"));
    }

    #[test]
    fn a_code_must_be_six_to_ten_digits_with_spaces_forgiven() {
        assert_eq!(
            VerificationCode::parse("code", "123 456").unwrap().expose(),
            "123456"
        );
        // `flow.code_digits` goes up to 10; a length the deployment does not issue simply never
        // matches, so the parser accepts the whole configurable range.
        assert!(VerificationCode::parse("code", "1234567890").is_ok());
        for bad in ["", "12345", "12345678901", "12345a", "１２３４５６"] {
            assert!(VerificationCode::parse("code", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_long_code_is_read_in_any_case_with_or_without_separators() {
        let canonical = "7K3M0R1ZABCDEFGHJKMN";
        for typed in [
            "7K3M-0R1Z-ABCD-EFGH-JKMN",
            "7k3m0r1zabcdefghjkmn",
            " 7k3m 0r1z abcd efgh jkmn ",
            "7K3M-OR1Z-ABCD-EFGH-JKMN",
            "7K3M-0RIZ-ABCD-EFGH-JKMN",
            "7K3M-0RlZ-ABCD-EFGH-JKMN",
        ] {
            let code = VerificationCode::parse("code", typed).unwrap();
            assert!(code.is_long(), "{typed}");
            assert_eq!(code.expose(), canonical, "{typed}");
        }
        assert!(!VerificationCode::parse("code", "123456").unwrap().is_long());
        assert_eq!(group_long_code(canonical), "7K3M-0R1Z-ABCD-EFGH-JKMN");
        // U is not in Crockford's alphabet; 19 or 21 characters are neither shape.
        for bad in [
            "7K3M-0R1Z-ABCD-EFGH-JKMU",
            "7K3M-0R1Z-ABCD-EFGH-JKM",
            "7K3M-0R1Z-ABCD-EFGH-JKMNP",
            "7K3M-0R1Z-ABCD-EFGH-JKM\u{e9}",
        ] {
            assert!(VerificationCode::parse("code", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(parse_id("flow_id", "0b7c8d2e-58d5-4c5e-9d0a-8b1f4f3c9a11").is_ok());
        assert!(parse_id("flow_id", "../etc/passwd").is_err());
        assert!(parse_id("flow_id", "").is_err());
    }

    #[test]
    fn a_reset_token_must_look_like_ours() {
        assert!(ResetToken::parse("reset_token", &"A".repeat(43)).is_ok());
        assert!(ResetToken::parse("reset_token", "short").is_err());
        assert!(ResetToken::parse("reset_token", &"+".repeat(43)).is_err());
    }

    #[test]
    fn phones_are_e164() {
        assert_eq!(
            parse_optional_phone("phone", "+46 70-123 45 67")
                .unwrap()
                .as_deref(),
            Some("+46701234567")
        );
        assert_eq!(parse_optional_phone("phone", "").unwrap(), None);
        assert!(parse_optional_phone("phone", "0701234567").is_err());
    }

    #[test]
    fn locales_default_to_english_and_reject_garbage() {
        assert_eq!(parse_locale("locale", "").unwrap(), "en");
        assert_eq!(parse_locale("locale", "sv_FI").unwrap(), "sv-FI");
        assert!(parse_locale("locale", "<script>").is_err());
    }

    #[test]
    fn a_password_bigger_than_the_field_limit_is_refused_before_any_work() {
        assert!(parse_password("new_password", &"a".repeat(MAX_FIELD_BYTES + 1)).is_err());
        assert!(parse_password("new_password", "").is_err());
    }
}
