//! Error messages for people: every error `Status` that carries an `ErrorInfo` also gets a
//! `google.rpc.LocalizedMessage` (and each password-policy violation its own), so a UI or a
//! gateway shows it as it is instead of keeping a translation table of our reasons.
//!
//! The texts are data, one file per locale next to the mail templates
//! (`templates/<locale>/errors.toml`), compiled in. A new locale is a new directory with its
//! mails and its `errors.toml`, plus one line in [`EMBEDDED`]; the tests below fail until every
//! directory is embedded and every locale has every reason.
//!
//! The locale is the flow's (chosen at `StartRecovery`), else the caller's `accept-language`,
//! else English: see [`super::localized`].

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use tonic::Status;
use tonic_types::{ErrorDetails, LocalizedMessage, StatusExt};

pub const DEFAULT_LOCALE: &str = "en";

/// `(locale, errors.toml)`, compiled in.
const EMBEDDED: &[(&str, &str)] = &[
    ("ar", include_str!("../../templates/ar/errors.toml")),
    ("de", include_str!("../../templates/de/errors.toml")),
    ("en", include_str!("../../templates/en/errors.toml")),
    ("es", include_str!("../../templates/es/errors.toml")),
    ("fr", include_str!("../../templates/fr/errors.toml")),
    ("it", include_str!("../../templates/it/errors.toml")),
    ("nl", include_str!("../../templates/nl/errors.toml")),
    ("pl", include_str!("../../templates/pl/errors.toml")),
    ("pt", include_str!("../../templates/pt/errors.toml")),
    ("ru", include_str!("../../templates/ru/errors.toml")),
    ("sv", include_str!("../../templates/sv/errors.toml")),
    ("uk", include_str!("../../templates/uk/errors.toml")),
    ("zh", include_str!("../../templates/zh/errors.toml")),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Messages {
    /// By `ErrorInfo` reason.
    errors: HashMap<String, String>,
    /// By `BadRequest` field-violation reason.
    violations: HashMap<String, String>,
}

#[derive(Debug, Default)]
pub struct Catalogue {
    locales: BTreeMap<String, Messages>,
}

impl Catalogue {
    fn parse(files: &[(&str, &str)]) -> Result<Self, String> {
        let mut locales = BTreeMap::new();
        for (locale, source) in files {
            let messages: Messages = toml::from_str(source)
                .map_err(|e| format!("templates/{locale}/errors.toml: {e}"))?;
            locales.insert((*locale).to_owned(), messages);
        }
        Ok(Self { locales })
    }

    /// The compiled-in catalogue, parsed once. The files are checked by the tests, so a parse
    /// error here is a build defect: it is logged and messages are then left out, never a panic.
    pub fn embedded() -> &'static Catalogue {
        static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
        CATALOGUE.get_or_init(|| {
            Catalogue::parse(EMBEDDED).unwrap_or_else(|error| {
                tracing::error!(%error, "error message catalogue is broken; messages are not localized");
                Catalogue::default()
            })
        })
    }

    pub fn locales(&self) -> impl Iterator<Item = &str> {
        self.locales.keys().map(String::as_str)
    }

    /// The catalogue's locale for a BCP 47 tag: exact ("sv"), then the primary subtag
    /// ("sv-FI", "sv_SE" -> "sv"). Case-insensitive.
    pub fn resolve(&self, tag: &str) -> Option<&str> {
        let tag = tag.trim().replace('_', "-").to_ascii_lowercase();
        let primary = tag.split('-').next().unwrap_or_default();
        [tag.as_str(), primary]
            .into_iter()
            .find_map(|candidate| self.locales.get_key_value(candidate))
            .map(|(locale, _)| locale.as_str())
    }

    /// The first of `preferred` the catalogue has, else English.
    pub fn pick<'a>(&self, preferred: impl IntoIterator<Item = &'a str>) -> &str {
        preferred
            .into_iter()
            .find_map(|tag| self.resolve(tag))
            .unwrap_or(DEFAULT_LOCALE)
    }

    pub fn error(&self, locale: &str, reason: &str) -> Option<&str> {
        self.locales
            .get(locale)?
            .errors
            .get(reason)
            .map(String::as_str)
    }

    pub fn violation(&self, locale: &str, reason: &str) -> Option<&str> {
        self.locales
            .get(locale)?
            .violations
            .get(reason)
            .map(String::as_str)
    }
}

/// Language tags of an `accept-language` value, best first (RFC 9110 §12.5.4: by `q`, ties in
/// the order given; `q=0` means "not this one"). At most 8 are read: a header is caller input.
pub fn accept_language(header: &str) -> Vec<String> {
    let mut tags: Vec<(u16, usize, String)> = header
        .split(',')
        .take(8)
        .enumerate()
        .filter_map(|(position, item)| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            if tag.is_empty() || tag == "*" || tag.len() > 35 {
                return None;
            }
            let quality = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            // Thousandths, as the RFC allows no more precision; integer so it sorts totally.
            let quality = (quality.clamp(0.0, 1.0) * 1000.0).round() as u16;
            (quality > 0).then(|| (quality, position, tag.to_owned()))
        })
        .collect();
    tags.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    tags.into_iter().map(|(_, _, tag)| tag).collect()
}

/// `status` with a `LocalizedMessage` in `locale` (a catalogue locale, see [`Catalogue::pick`])
/// for its `ErrorInfo` reason, and one per password-policy violation. A status without
/// `ErrorInfo` (one tonic made itself) or with a reason the catalogue lacks is returned as is.
pub fn localize(status: Status, catalogue: &Catalogue, locale: &str) -> Status {
    let details = status.get_error_details();
    localize_decoded(status, details, catalogue, locale)
}

/// [`localize`] with the status's details already decoded (`status.get_error_details()`), for
/// a caller that read them itself: the details are decoded once per answer, not twice.
pub fn localize_decoded(
    status: Status,
    mut details: ErrorDetails,
    catalogue: &Catalogue,
    locale: &str,
) -> Status {
    let Some(reason) = details.error_info().map(|info| info.reason.clone()) else {
        return status;
    };
    let Some(text) = catalogue.error(locale, &reason) else {
        return status;
    };
    details.set_localized_message(locale, text);
    if let Some(bad_request) = details.bad_request() {
        let violations: Vec<_> = bad_request
            .field_violations
            .iter()
            .cloned()
            .map(|mut violation| {
                if let Some(text) = catalogue.violation(locale, &violation.reason) {
                    violation.localized_message = Some(LocalizedMessage {
                        locale: locale.to_owned(),
                        message: text.to_owned(),
                    });
                }
                violation
            })
            .collect();
        details.set_bad_request(violations);
    }
    Status::with_error_details_and_metadata(
        status.code(),
        status.message(),
        details,
        status.metadata().clone(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::api::status::to_status;
    use crate::recovery::{FieldViolation, PolicyViolation, RecoveryError};

    /// One error of every kind `to_status` maps. When a variant is added to `RecoveryError`,
    /// add it here: the match below stops compiling until it is.
    fn every_error() -> Vec<RecoveryError> {
        let all = vec![
            RecoveryError::InvalidArgument(vec![FieldViolation::new("login_id", "empty")]),
            RecoveryError::captcha_invalid("captcha_answer"),
            RecoveryError::FlowNotFound,
            RecoveryError::FlowState { state: "CODE_SENT" },
            RecoveryError::CodeInvalid { attempts_left: 2 },
            RecoveryError::CodeExpired,
            RecoveryError::AttemptsExhausted,
            RecoveryError::ResendTooSoon {
                retry_after: Duration::from_secs(30),
            },
            RecoveryError::RateLimited {
                retry_after: Duration::from_secs(30),
                scope: "ip",
            },
            RecoveryError::TokenInvalid,
            RecoveryError::ReportCodeInvalid,
            RecoveryError::PasswordMismatch,
            RecoveryError::PasswordPolicy(Vec::new()),
            RecoveryError::AccountExists,
            RecoveryError::AccountNotFound,
            RecoveryError::PermissionDenied,
            RecoveryError::Unavailable(anyhow::anyhow!("down")),
            RecoveryError::Internal(anyhow::anyhow!("bug")),
        ];
        for error in &all {
            match error {
                RecoveryError::InvalidArgument(_)
                | RecoveryError::CaptchaInvalid(_)
                | RecoveryError::FlowNotFound
                | RecoveryError::FlowState { .. }
                | RecoveryError::CodeInvalid { .. }
                | RecoveryError::CodeExpired
                | RecoveryError::AttemptsExhausted
                | RecoveryError::ResendTooSoon { .. }
                | RecoveryError::RateLimited { .. }
                | RecoveryError::TokenInvalid
                | RecoveryError::ReportCodeInvalid
                | RecoveryError::PasswordMismatch
                | RecoveryError::PasswordPolicy(_)
                | RecoveryError::AccountExists
                | RecoveryError::AccountNotFound
                | RecoveryError::PermissionDenied
                | RecoveryError::Unavailable(_)
                | RecoveryError::Internal(_) => {}
            }
        }
        all
    }

    fn policy_reasons() -> Vec<&'static str> {
        use crate::recovery::policy::reason;
        vec![
            reason::TOO_SHORT,
            reason::TOO_LONG,
            reason::CHARSET,
            reason::COMMON,
            reason::CONTAINS_LOGIN,
            reason::TOO_WEAK,
            reason::MISSING_CLASS,
            reason::REUSED,
            crate::recovery::breach::REASON,
        ]
    }

    #[test]
    fn every_locale_file_parses() {
        assert!(
            Catalogue::parse(EMBEDDED).is_ok(),
            "{:?}",
            Catalogue::parse(EMBEDDED).err()
        );
    }

    #[test]
    fn every_locale_with_mail_templates_has_an_embedded_catalogue() {
        let dirs: BTreeSet<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
                .unwrap()
                .filter_map(Result::ok)
                .filter(|entry| entry.path().is_dir())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect();
        let embedded: BTreeSet<String> = EMBEDDED.iter().map(|(l, _)| (*l).to_owned()).collect();
        assert_eq!(
            dirs, embedded,
            "add templates/<locale>/errors.toml to EMBEDDED"
        );
        let builtin: BTreeSet<String> = crate::notify::templates::BUILTIN_LOCALES
            .iter()
            .map(|l| (*l).to_owned())
            .collect();
        assert_eq!(
            embedded, builtin,
            "the mail and error locales are the same set"
        );
    }

    #[test]
    fn every_locale_has_every_reason_and_nothing_else() {
        let catalogue = Catalogue::parse(EMBEDDED).unwrap();
        let reasons: BTreeSet<String> = every_error()
            .into_iter()
            .map(|error| {
                to_status(error)
                    .get_error_details()
                    .error_info()
                    .unwrap()
                    .reason
                    .clone()
            })
            .collect();
        let violations: BTreeSet<String> = policy_reasons().into_iter().map(String::from).collect();
        for locale in catalogue.locales() {
            let messages = &catalogue.locales[locale];
            let have: BTreeSet<String> = messages.errors.keys().cloned().collect();
            assert_eq!(have, reasons, "[errors] of {locale}");
            let have: BTreeSet<String> = messages.violations.keys().cloned().collect();
            assert_eq!(have, violations, "[violations] of {locale}");
            for text in messages.errors.values().chain(messages.violations.values()) {
                assert!(!text.trim().is_empty(), "empty message in {locale}");
            }
        }
    }

    #[test]
    fn locales_resolve_by_exact_tag_then_primary_subtag_then_english() {
        let catalogue = Catalogue::parse(EMBEDDED).unwrap();
        assert_eq!(catalogue.pick(["sv"]), "sv");
        assert_eq!(catalogue.pick(["sv_SE"]), "sv");
        assert_eq!(catalogue.pick(["RU-ru"]), "ru");
        assert_eq!(catalogue.pick(["fi-FI", "ru"]), "ru");
        assert_eq!(catalogue.pick(["de-DE", "ru"]), "de");
        assert_eq!(catalogue.pick(["zh-Hant-TW"]), "zh");
        assert_eq!(catalogue.pick(["pt-BR"]), "pt");
        assert_eq!(catalogue.pick(["ar-EG"]), "ar");
        assert_eq!(catalogue.pick(["fi"]), "en");
        assert_eq!(catalogue.pick([]), "en");
    }

    #[test]
    fn accept_language_is_ordered_by_quality() {
        assert_eq!(
            accept_language("en;q=0.5, sv-SE, ru;q=0.8, de;q=0"),
            ["sv-SE", "ru", "en"]
        );
        assert_eq!(accept_language("*"), Vec::<String>::new());
        assert_eq!(accept_language(""), Vec::<String>::new());
    }

    #[test]
    fn a_localized_status_keeps_its_code_reason_and_details() {
        let catalogue = Catalogue::parse(EMBEDDED).unwrap();
        let status = to_status(RecoveryError::CodeInvalid { attempts_left: 2 });
        let localized = localize(status, &catalogue, "sv");
        assert_eq!(localized.code(), tonic::Code::InvalidArgument);
        let details = localized.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "CODE_INVALID");
        assert_eq!(details.error_info().unwrap().metadata["attempts_left"], "2");
        assert_eq!(details.bad_request().unwrap().field_violations.len(), 1);
        let message = details.localized_message().unwrap();
        assert_eq!(message.locale, "sv");
        assert_eq!(
            message.message,
            catalogue.error("sv", "CODE_INVALID").unwrap()
        );
    }

    #[test]
    fn each_policy_violation_gets_its_own_localized_message() {
        let catalogue = Catalogue::parse(EMBEDDED).unwrap();
        let status = to_status(RecoveryError::PasswordPolicy(vec![
            PolicyViolation {
                reason: crate::recovery::policy::reason::TOO_SHORT,
                message: "is too short".into(),
            },
            PolicyViolation {
                reason: crate::recovery::policy::reason::COMMON,
                message: "is common".into(),
            },
        ]));
        let details = localize(status, &catalogue, "ru").get_error_details();
        let texts: Vec<String> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.localized_message.clone().unwrap().message)
            .collect();
        assert_eq!(
            texts,
            [
                "Пароль слишком короткий.",
                "Этот пароль слишком распространён, его легко угадать."
            ]
        );
    }
}
