//! E-mail templates for the password-recovery flow.
//!
//! Every message has three parts — a one-line subject, a plain-text body and an
//! HTML body — stored as `templates/<locale>/<kind>.<ext>` with `ext` one of
//! `subject`, `txt`, `html`, plus an optional `locale.toml` with the locale's date
//! format ([`super::dates`]). The built-in set ([`BUILTIN_LOCALES`]: ar, de, en, es,
//! fr, it, nl, pl, pt, ru, sv, uk, zh) is compiled into the binary so the service can
//! always send mail, even with no files on disk; operators may override any single
//! file from a directory, or add a locale.
//!
//! Which locale: the flow's (`StartRecovery.locale`), matched exactly, then by its
//! primary subtag (`sv-FI` → `sv`, `zh-Hant-TW` → `zh`, `pt-BR` → `pt`), else `en`
//! ([`Templates::resolve_locale`]). The locale used is also the mail's
//! `Content-Language`.
//!
//! Deliberate constraints on the templates themselves:
//! * No links and no remote images. Corporate mail scanners pre-fetch every URL
//!   in a message, which would burn single-use codes or tokens, and remote
//!   images are tracking pixels. The unit tests enforce this for the embedded set.
//!   One exception: the "it wasn't me" link of the code mail (`report_url`, built from
//!   `[mail] report_url`, only when it is configured). Its page must not act on a GET
//!   (a scanner would report every mail): it asks the person to confirm, and only
//!   that confirmation spends the report code.
//! * Plurals go through the `plural` filter, one form per CLDR category of the
//!   template's language ([`super::plural`]).
//! * HTML declares its language and direction: `<html lang="ar" dir="rtl">`.
//! * The code is never put in the subject: subjects show up in lock-screen
//!   notifications and mail-server logs.
//! * `.html` templates are auto-escaped (the login is user-controlled input);
//!   `.txt` and `.subject` are not, because escaping would corrupt plain text.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use minijinja::context;
//! use recovery_service::notify::templates::{MessageKind, Templates};
//! let templates = Templates::embedded();
//! let msg = templates.render(
//!     MessageKind::VerificationCode,
//!     "sv-FI",
//!     context! {
//!         code => "042917",
//!         expires_in_minutes => 15,
//!         expires_at => "2026-11-28 08:10 UTC",
//!         masked_login => "j***n@e***.com",
//!         // Who asked, and the "it wasn't me" code and link: each may be none.
//!         requested_at => "2026-11-28 07:55 UTC",
//!         client_ip => "203.0.113.7",
//!         client_name => "Firefox",
//!         client_os => "Windows 10",
//!         report_code => (),
//!         report_url => (),
//!         // A long code (mailed once the account's guess budget is spent) says why it is long.
//!         long_code => false,
//!     },
//! )?;
//! assert!(msg.text.contains("042917"));
//! assert!(msg.text.contains("Firefox på Windows 10"));
//! // or, from any `Serialize` struct:
//! // templates.render(kind, locale, minijinja::Value::from_serialize(&my_ctx))?
//! # Ok(())
//! # }
//! ```
//!
//! Long because half of it is tests of the rendering rules (escaping, header injection,
//! locale fallback); the code itself is one loader and one renderer.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind as IoErrorKind;
use std::path::Path;

use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use super::dates::LocaleFormat;

/// Locale used when nothing better matches the request.
const DEFAULT_LOCALE: &str = "en";

/// Parts every message consists of, by file extension.
const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// Builds one `(name, source)` entry of the embedded set. The path is relative
/// to this file (`src/notify/templates.rs`), so the crate layout must keep
/// `templates/` at the crate root.
macro_rules! embedded {
    ($locale:literal, $kind:literal, $ext:literal) => {
        (
            concat!($locale, "/", $kind, ".", $ext),
            include_str!(concat!("../../templates/", $locale, "/", $kind, ".", $ext)),
        )
    };
}

/// The six templates of each listed locale.
macro_rules! embedded_locales {
    ($($locale:literal),+ $(,)?) => {
        &[$(
            embedded!($locale, "verification_code", "subject"),
            embedded!($locale, "verification_code", "txt"),
            embedded!($locale, "verification_code", "html"),
            embedded!($locale, "password_changed", "subject"),
            embedded!($locale, "password_changed", "txt"),
            embedded!($locale, "password_changed", "html"),
        )+]
    };
}

/// Each listed locale's `locale.toml` (its date format, see [`super::dates`]).
macro_rules! embedded_formats {
    ($($locale:literal),+ $(,)?) => {
        &[$(
            ($locale, include_str!(concat!("../../templates/", $locale, "/locale.toml"))),
        )+]
    };
}

/// The built-in locales. A new one is a directory `templates/<locale>/` with the six mail
/// files, `locale.toml` and `errors.toml`, plus its code here, in [`EMBEDDED_FORMATS`] and in
/// `src/api/i18n.rs`; the tests fail until all are there and use the English placeholders.
pub const BUILTIN_LOCALES: &[&str] = &[
    "ar", "de", "en", "es", "fr", "it", "nl", "pl", "pt", "ru", "sv", "uk", "zh",
];

/// The built-in templates, keyed by `<locale>/<kind>.<ext>`.
const EMBEDDED: &[(&str, &str)] = embedded_locales!(
    "ar", "de", "en", "es", "fr", "it", "nl", "pl", "pt", "ru", "sv", "uk", "zh"
);

/// The built-in date formats, by locale.
const EMBEDDED_FORMATS: &[(&str, &str)] = embedded_formats!(
    "ar", "de", "en", "es", "fr", "it", "nl", "pl", "pt", "ru", "sv", "uk", "zh"
);

/// Locales written right to left: their HTML carries `dir="rtl"`.
pub const RTL_LOCALES: &[&str] = &["ar"];

/// The one link the embedded templates may carry (see the module documentation).
#[cfg(test)]
const REPORT_LINK: &str = "<a href=\"{{ report_url }}\"";

pub use crate::recovery::ports::MessageKind;

/// A fully rendered e-mail, ready to hand to the mail transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMessage {
    /// Single line, no CR/LF or other control characters.
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name}: {detail}")]
    Render { name: String, detail: String },
    #[error("template directory {0}: {1}")]
    Directory(String, String),
}

/// The compiled template set.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Environment<'static>,
    /// Sorted, lowercase, `-` as separator.
    locales: Vec<String>,
    /// Date formats by locale; a locale without one writes ISO 8601.
    formats: BTreeMap<String, LocaleFormat>,
}

/// The embedded date formats. They are checked by the unit tests; one that does not parse is
/// left out (ISO 8601 instead) so that constructing the embedded set cannot fail.
fn embedded_formats() -> BTreeMap<String, LocaleFormat> {
    EMBEDDED_FORMATS
        .iter()
        .filter_map(|(locale, source)| {
            LocaleFormat::parse(source)
                .ok()
                .map(|format| ((*locale).to_owned(), format))
        })
        .collect()
}

impl Templates {
    /// Built-in templates compiled into the binary.
    pub fn embedded() -> Self {
        let mut env = base_environment();
        let mut locales = BTreeSet::new();
        for (name, source) in EMBEDDED {
            // `add_template` only fails on a syntax error, and the embedded set is
            // checked by the unit tests; skipping keeps this constructor
            // infallible, and a missing template still surfaces as a render error.
            if env.add_template(name, source).is_ok()
                && let Some((locale, _)) = name.split_once('/')
            {
                locales.insert(locale.to_owned());
            }
        }
        Templates {
            env,
            locales: locales.into_iter().collect(),
            formats: embedded_formats(),
        }
    }

    /// Templates from `dir` (layout `<locale>/<kind>.<ext>`), falling back to the
    /// embedded ones for any file missing in `dir`.
    ///
    /// A sub-directory for a locale that is not built in (e.g. `de/`) adds that
    /// locale, but then it must contain all six files: falling back to another
    /// language would send a message that mixes two languages. All templates are
    /// compiled here, so syntax errors are reported at start-up rather than when
    /// the first mail goes out.
    pub fn with_override_dir(dir: &Path) -> Result<Self, TemplateError> {
        let dir_err = |detail: String| TemplateError::Directory(dir.display().to_string(), detail);
        let entries = std::fs::read_dir(dir).map_err(|e| dir_err(e.to_string()))?;

        let mut locales: BTreeSet<String> = EMBEDDED
            .iter()
            .filter_map(|(name, _)| name.split_once('/').map(|(l, _)| l.to_owned()))
            .collect();
        let builtin = locales.clone();
        let mut dir_locales = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| dir_err(e.to_string()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Only directories that look like a language tag are locales; anything
            // else (`partials/`, `.git/`, README files) is ignored.
            if entry.path().is_dir() && looks_like_locale(&name) {
                dir_locales.push(name);
            }
        }

        let mut env = base_environment();
        let mut formats = embedded_formats();
        for dir_name in &dir_locales {
            let locale = normalize_tag(dir_name);
            let is_builtin = builtin.contains(&locale);
            // `locale.toml` is optional: without it a built-in locale keeps its own, and a new
            // one writes dates in ISO 8601.
            let path = dir.join(dir_name).join("locale.toml");
            match std::fs::read_to_string(&path) {
                Ok(source) => {
                    let format = LocaleFormat::parse(&source)
                        .map_err(|detail| dir_err(format!("{}: {detail}", path.display())))?;
                    formats.insert(locale.clone(), format);
                }
                Err(e) if e.kind() == IoErrorKind::NotFound => {}
                Err(e) => return Err(dir_err(format!("{}: {e}", path.display()))),
            }
            for kind in MessageKind::ALL {
                for ext in PARTS {
                    let key = template_name(&locale, kind, ext);
                    let path = dir.join(dir_name).join(format!("{}.{ext}", kind.name()));
                    match std::fs::read_to_string(&path) {
                        Ok(source) => {
                            env.add_template_owned(key.clone(), source).map_err(|e| {
                                TemplateError::Render {
                                    name: path.display().to_string(),
                                    detail: e.to_string(),
                                }
                            })?;
                        }
                        Err(e) if e.kind() == IoErrorKind::NotFound && is_builtin => {}
                        Err(e) if e.kind() == IoErrorKind::NotFound => {
                            return Err(dir_err(format!(
                                "locale {dir_name} is not built in, so it must provide {}: {e}",
                                path.display()
                            )));
                        }
                        // An unreadable file is an operator mistake; silently using the
                        // built-in text instead would hide it.
                        Err(e) => return Err(dir_err(format!("{}: {e}", path.display()))),
                    }
                }
            }
            locales.insert(locale);
        }

        // Fill every gap from the embedded set.
        for (name, source) in EMBEDDED {
            if env.get_template(name).is_err() {
                env.add_template(name, source)
                    .map_err(|e| TemplateError::Render {
                        name: (*name).to_owned(),
                        detail: e.to_string(),
                    })?;
            }
        }

        Ok(Templates {
            env,
            locales: locales.into_iter().collect(),
            formats,
        })
    }

    /// `at` as the best match of `locale` writes a date and time in its mails
    /// ("2 December 2026, 03:04 UTC", "02.12.2026, 03:04 UTC", "2026年12月2日 03:04 UTC").
    pub fn format_datetime(&self, locale: &str, at: DateTime<Utc>) -> String {
        let locale = self.resolve_locale(locale);
        self.formats
            .get(&locale)
            .cloned()
            .unwrap_or_default()
            .format(at)
    }

    /// Locales that have templates (at least the [`BUILTIN_LOCALES`]), sorted.
    pub fn locales(&self) -> Vec<String> {
        self.locales.clone()
    }

    /// Picks the best locale for a BCP 47 tag: exact match ("sv", "pt-br"), then
    /// the primary subtag ("sv-FI" -> "sv"), else "en". Case-insensitive; "_" is
    /// accepted as a separator because POSIX locales ("sv_SE") leak into requests.
    pub fn resolve_locale(&self, requested: &str) -> String {
        let tag = normalize_tag(requested);
        if self.has_locale(&tag) {
            return tag;
        }
        if let Some((primary, _)) = tag.split_once('-')
            && self.has_locale(primary)
        {
            return primary.to_owned();
        }
        DEFAULT_LOCALE.to_owned()
    }

    /// Renders all three parts of `kind` for the best match of `locale`.
    ///
    /// Missing context variables are an error rather than empty output: a
    /// verification mail without its code is worse than no mail.
    pub fn render(
        &self,
        kind: MessageKind,
        locale: &str,
        ctx: Value,
    ) -> Result<RenderedMessage, TemplateError> {
        let locale = self.resolve_locale(locale);
        let subject = self.render_part(&locale, kind, "subject", &ctx)?;
        let text = self.render_part(&locale, kind, "txt", &ctx)?;
        let html = self.render_part(&locale, kind, "html", &ctx)?;
        Ok(RenderedMessage {
            subject: single_line(&subject),
            text,
            html,
        })
    }

    fn has_locale(&self, locale: &str) -> bool {
        self.locales.iter().any(|l| l == locale)
    }

    fn render_part(
        &self,
        locale: &str,
        kind: MessageKind,
        ext: &str,
        ctx: &Value,
    ) -> Result<String, TemplateError> {
        let name = template_name(locale, kind, ext);
        // Plain `Display` on purpose: the alternate form of minijinja errors dumps
        // the render context, which would put the verification code into logs.
        let render_err = |e: minijinja::Error| TemplateError::Render {
            name: name.clone(),
            detail: e.to_string(),
        };
        let template = self.env.get_template(&name).map_err(render_err)?;
        template.render(ctx).map_err(render_err)
    }
}

fn template_name(locale: &str, kind: MessageKind, ext: &str) -> String {
    format!("{locale}/{}.{ext}", kind.name())
}

fn base_environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Set explicitly rather than relying on the default callback so the rule is
    // visible here: HTML bodies escape (the login is attacker-influenced), plain
    // text and subjects must not, or "&" would arrive as "&amp;".
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Bodies are files that end in a newline; keep it so the text part ends
    // cleanly. Subjects are collapsed to one line afterwards anyway.
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // `{{ n | plural(...) }}`: one form per CLDR plural category of the template's language
    // (see `super::plural`).
    env.add_filter("plural", super::plural::filter);
    env.add_filter("plural_ru", plural_ru);
    env
}

/// `{{ n | plural_ru("минуту", "минуты", "минут") }}`: the Russian rule whatever the template's
/// locale. Kept for template directories written before `plural` knew every language.
fn plural_ru(n: i64, one: String, few: String, many: String) -> String {
    match super::plural::category("ru", n) {
        super::plural::Category::One => one,
        super::plural::Category::Few => few,
        _ => many,
    }
}

/// Lowercase, `_` -> `-`, surrounding whitespace removed.
fn normalize_tag(tag: &str) -> String {
    tag.trim().replace('_', "-").to_ascii_lowercase()
}

/// A directory name that can be a locale: a 2–3 letter primary subtag,
/// optionally followed by alphanumeric subtags ("sv", "pt-BR", "zh_Hant").
fn looks_like_locale(name: &str) -> bool {
    let mut parts = name.split(['-', '_']);
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    primary_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Collapses the subject to one line. A CR/LF in a header value would let a
/// template or a context value inject extra headers (e.g. `Bcc:`), so every
/// control and line-separator character becomes a space.
fn single_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use minijinja::context;
    use std::path::PathBuf;

    fn vc_ctx(login: &str, minutes: i64) -> Value {
        context! {
            code => "042917",
            expires_in_minutes => minutes,
            expires_at => "2026-11-28 08:10 UTC",
            masked_login => login,
            requested_at => "2026-11-28 07:55 UTC",
            client_ip => "203.0.113.7",
            client_name => "Firefox",
            client_os => "Windows 10",
            report_code => "RPT-7Q2X",
            report_url => "https://id.example.com/recovery/report?code=RPT-7Q2X",
            long_code => false,
        }
    }

    /// The context an older queued row or a sparse notice gives: who asked and report unknown.
    fn vc_ctx_bare(login: &str, minutes: i64) -> Value {
        context! {
            code => "042917",
            expires_in_minutes => minutes,
            expires_at => "2026-11-28 08:10 UTC",
            masked_login => login,
            requested_at => (),
            client_ip => (),
            client_name => (),
            client_os => (),
            report_code => (),
            report_url => (),
            long_code => false,
        }
    }

    fn sources(locale: &str) -> Vec<(&'static str, &'static str)> {
        EMBEDDED
            .iter()
            .filter(|(name, _)| name.split('/').next() == Some(locale))
            .copied()
            .collect()
    }

    fn pc_ctx(login: &str) -> Value {
        context! { changed_at => "2026-11-28 07:55 UTC", masked_login => login }
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = std::env::temp_dir().join(format!(
                "templates-test-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn write(&self, rel: &str, content: &str) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn every_embedded_template_compiles() {
        let mut env = base_environment();
        for (name, source) in EMBEDDED {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(
            EMBEDDED.len(),
            BUILTIN_LOCALES.len() * PARTS.len() * MessageKind::ALL.len()
        );
    }

    #[test]
    fn locales_are_listed() {
        assert_eq!(Templates::embedded().locales(), BUILTIN_LOCALES);
        for required in [
            "en", "sv", "ru", "de", "fr", "es", "pt", "it", "nl", "pl", "uk", "zh", "ar",
        ] {
            assert!(BUILTIN_LOCALES.contains(&required), "{required}");
        }
        let dirs: BTreeSet<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
                .unwrap()
                .filter_map(Result::ok)
                .filter(|entry| entry.path().is_dir())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect();
        let builtin: BTreeSet<String> = BUILTIN_LOCALES.iter().map(|l| (*l).to_owned()).collect();
        assert_eq!(dirs, builtin, "every templates/<locale>/ is embedded");
        let formats: BTreeSet<String> = EMBEDDED_FORMATS
            .iter()
            .map(|(l, _)| (*l).to_owned())
            .collect();
        assert_eq!(formats, builtin);
    }

    /// Every locale has every part of every message, and each part uses exactly the
    /// placeholders of the English one: a translation that drops `{{ code }}` or invents
    /// `{{ expiry }}` fails here, not in someone's inbox.
    #[test]
    fn every_locale_uses_exactly_the_english_placeholders() {
        let t = Templates::embedded();
        for kind in MessageKind::ALL {
            for ext in PARTS {
                let english = t
                    .env
                    .get_template(&template_name("en", kind, ext))
                    .unwrap()
                    .undeclared_variables(false);
                for locale in BUILTIN_LOCALES {
                    let name = template_name(locale, kind, ext);
                    let template = t
                        .env
                        .get_template(&name)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    let have = template.undeclared_variables(false);
                    let mut have: Vec<_> = have.into_iter().collect();
                    let mut want: Vec<_> = english.iter().cloned().collect();
                    have.sort();
                    want.sort();
                    assert_eq!(have, want, "{name}");
                }
            }
        }
        let code_vars = t
            .env
            .get_template("en/verification_code.txt")
            .unwrap()
            .undeclared_variables(false);
        for var in [
            "code",
            "requested_at",
            "client_ip",
            "client_name",
            "client_os",
            "report_code",
            "report_url",
            "long_code",
        ] {
            assert!(code_vars.contains(var), "{var}");
        }
    }

    #[test]
    fn every_locale_has_a_date_format() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-02T03:04:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for (locale, source) in EMBEDDED_FORMATS {
            LocaleFormat::parse(source).unwrap_or_else(|e| panic!("{locale}/locale.toml: {e}"));
        }
        let t = Templates::embedded();
        for (locale, expected) in [
            ("en", "2 December 2026, 03:04 UTC"),
            ("de-AT", "02.12.2026, 03:04 UTC"),
            ("sv", "2026-12-02 03:04 UTC"),
            ("zh-Hant-TW", "2026年12月2日 03:04 UTC"),
            ("ru", "2 декабря 2026 г., 03:04 UTC"),
            ("pl", "2 grudnia 2026, 03:04 UTC"),
            ("fr", "2 décembre 2026 à 03:04 UTC"),
            ("ar", "2 ديسمبر 2026، 03:04 UTC"),
            ("xx", "2 December 2026, 03:04 UTC"),
        ] {
            assert_eq!(t.format_datetime(locale, at), expected, "{locale}");
        }
    }

    #[test]
    fn every_locale_renders_both_kinds() {
        let t = Templates::embedded();
        for locale in t.locales() {
            let m = t
                .render(
                    MessageKind::VerificationCode,
                    &locale,
                    vc_ctx("j***n@e***.com", 15),
                )
                .unwrap();
            for body in [&m.text, &m.html] {
                for shown in [
                    "2026-11-28 07:55 UTC",
                    "203.0.113.7",
                    "Firefox",
                    "Windows 10",
                    "RPT-7Q2X",
                ] {
                    assert!(body.contains(shown), "{locale}: {shown} missing");
                }
                assert!(body.contains("042917"), "{locale}: code missing");
                assert!(body.contains("15"), "{locale}: minutes missing");
                assert!(
                    body.contains("2026-11-28 08:10 UTC"),
                    "{locale}: expiry missing"
                );
                assert!(body.contains("j***n@e***.com"), "{locale}: login missing");
            }
            assert!(!m.subject.is_empty());
            assert!(
                !m.subject.contains("042917"),
                "{locale}: code must not be in subject"
            );
            assert!(m.html.contains(&format!("<html lang=\"{locale}\"")));
            assert!(
                m.text
                    .contains("https://id.example.com/recovery/report?code=RPT-7Q2X"),
                "{locale}"
            );
            // Escaped like every value of an HTML template (`/` included), which a mail client
            // decodes in the attribute.
            assert!(
                m.html.contains(
                    "<a href=\"https:&#x2f;&#x2f;id.example.com&#x2f;recovery&#x2f;report?code=RPT-7Q2X\""
                ),
                "{locale}"
            );

            // Without who-asked and report code, the mail still reads whole and has no link.
            let bare = t
                .render(
                    MessageKind::VerificationCode,
                    &locale,
                    vc_ctx_bare("j***n@e***.com", 15),
                )
                .unwrap();
            for body in [&bare.text, &bare.html] {
                assert!(body.contains("042917"), "{locale}");
                assert!(!body.contains("203.0.113.7") && !body.contains("RPT-7Q2X"));
                assert!(!body.contains("None") && !body.contains("none"), "{locale}");
            }
            assert!(!bare.html.contains("href"), "{locale}");

            let m = t
                .render(
                    MessageKind::PasswordChanged,
                    &locale,
                    pc_ctx("j***n@e***.com"),
                )
                .unwrap();
            for body in [&m.text, &m.html] {
                assert!(
                    body.contains("2026-11-28 07:55 UTC"),
                    "{locale}: time missing"
                );
                assert!(body.contains("j***n@e***.com"), "{locale}: login missing");
            }
            assert!(!m.subject.is_empty());
            assert!(m.html.contains(&format!("<html lang=\"{locale}\"")));
        }
    }

    #[test]
    fn locales_render_different_languages() {
        let t = Templates::embedded();
        let en = t
            .render(MessageKind::PasswordChanged, "en", pc_ctx("x"))
            .unwrap();
        let sv = t
            .render(MessageKind::PasswordChanged, "sv", pc_ctx("x"))
            .unwrap();
        let ru = t
            .render(MessageKind::PasswordChanged, "ru-RU", pc_ctx("x"))
            .unwrap();
        assert!(en.text.contains("password"));
        assert!(sv.text.contains("lösenord"));
        assert!(ru.text.contains("пароль"));
        assert!(ru.html.contains("lang=\"ru\""));
        let mut subjects = BTreeSet::new();
        for locale in BUILTIN_LOCALES {
            let m = t
                .render(MessageKind::VerificationCode, locale, vc_ctx("x", 15))
                .unwrap();
            subjects.insert(m.subject);
        }
        assert_eq!(subjects.len(), BUILTIN_LOCALES.len(), "{subjects:?}");
    }

    #[test]
    fn html_escapes_and_text_does_not() {
        let t = Templates::embedded();
        let hostile = "<script>alert(1)</script>&";
        for locale in BUILTIN_LOCALES {
            let m = t
                .render(MessageKind::VerificationCode, locale, vc_ctx(hostile, 10))
                .unwrap();
            assert!(!m.html.contains("<script>"), "{locale}");
            assert!(m.html.contains("&lt;script&gt;"), "{locale}");
            assert!(m.text.contains(hostile), "{locale}");
            let m = t
                .render(MessageKind::PasswordChanged, locale, pc_ctx(hostile))
                .unwrap();
            assert!(!m.html.contains("<script>"), "{locale}");
            assert!(m.text.contains(hostile), "{locale}");
        }
    }

    #[test]
    fn subject_is_one_line() {
        let t = Templates::embedded();
        for locale in BUILTIN_LOCALES {
            for (kind, ctx) in [
                (MessageKind::VerificationCode, vc_ctx("a", 5)),
                (MessageKind::PasswordChanged, pc_ctx("a")),
            ] {
                let s = t.render(kind, locale, ctx).unwrap().subject;
                assert!(!s.contains(['\r', '\n']), "{locale}: {s:?}");
                assert_eq!(s, s.trim());
            }
        }
        assert_eq!(
            single_line("a\r\nBcc: x@y\u{2028}z  \t w\n"),
            "a Bcc: x@y z w"
        );
    }

    #[test]
    fn subject_injection_from_context_is_neutralised() {
        let dir = TempDir::new("inject");
        dir.write(
            "en/password_changed.subject",
            "Changed for {{ masked_login }}\n",
        );
        let t = Templates::with_override_dir(&dir.0).unwrap();
        let m = t
            .render(
                MessageKind::PasswordChanged,
                "en",
                pc_ctx("a\r\nBcc: evil@x"),
            )
            .unwrap();
        assert_eq!(m.subject, "Changed for a Bcc: evil@x");
    }

    #[test]
    fn locale_resolution() {
        let t = Templates::embedded();
        assert_eq!(t.resolve_locale("sv"), "sv");
        assert_eq!(t.resolve_locale("sv-FI"), "sv");
        assert_eq!(t.resolve_locale("sv_se"), "sv");
        assert_eq!(t.resolve_locale("RU"), "ru");
        assert_eq!(t.resolve_locale("ru-RU"), "ru");
        assert_eq!(t.resolve_locale(" en-GB "), "en");
        assert_eq!(t.resolve_locale("de"), "de");
        assert_eq!(t.resolve_locale("de-AT"), "de");
        assert_eq!(t.resolve_locale("zh-Hant-TW"), "zh");
        assert_eq!(t.resolve_locale("zh-CN"), "zh");
        assert_eq!(t.resolve_locale("zh_Hans"), "zh");
        assert_eq!(t.resolve_locale("pt-BR"), "pt");
        assert_eq!(t.resolve_locale("pt-PT"), "pt");
        assert_eq!(t.resolve_locale("uk-UA"), "uk");
        assert_eq!(t.resolve_locale("ar-EG"), "ar");
        assert_eq!(t.resolve_locale("nl-BE"), "nl");
        assert_eq!(t.resolve_locale("fi"), "en");
        assert_eq!(t.resolve_locale("fi-FI"), "en");
        assert_eq!(t.resolve_locale(""), "en");
        assert_eq!(t.resolve_locale("-"), "en");
        assert_eq!(t.resolve_locale("../../etc"), "en");
    }

    #[test]
    fn plural_forms() {
        let t = Templates::embedded();
        let text = |locale: &str, n: i64| {
            t.render(MessageKind::VerificationCode, locale, vc_ctx("a", n))
                .unwrap()
                .text
        };
        assert!(text("en", 1).contains("1 minute "));
        assert!(text("en", 15).contains("15 minutes"));
        assert!(text("sv", 1).contains("1 minut "));
        assert!(text("sv", 15).contains("15 minuter"));
        for (n, word) in [
            (1, "минуту"),
            (2, "минуты"),
            (4, "минуты"),
            (5, "минут "),
            (11, "минут "),
            (12, "минут "),
            (15, "минут "),
            (21, "минуту"),
            (22, "минуты"),
            (111, "минут "),
        ] {
            let s = text("ru", n);
            assert!(s.contains(&format!("{n} {word}")), "{n}: {s}");
        }
        for (locale, n, phrase) in [
            ("uk", 1, "1 хвилину"),
            ("uk", 3, "3 хвилини"),
            ("uk", 15, "15 хвилин"),
            ("pl", 1, "1 minutę"),
            ("pl", 3, "3 minuty"),
            ("pl", 21, "21 minut "),
            ("pl", 22, "22 minuty"),
            ("ar", 5, "5 دقائق"),
            ("ar", 15, "15 دقيقة"),
            ("de", 1, "1 Minute "),
            ("de", 15, "15 Minuten"),
            ("fr", 1, "1 minute "),
            ("fr", 15, "15 minutes"),
            ("zh", 15, "15 分钟"),
        ] {
            let s = text(locale, n);
            assert!(s.contains(phrase), "{locale} {n}: {s}");
        }
    }

    #[test]
    fn a_plural_with_the_wrong_number_of_forms_is_a_render_error() {
        let dir = TempDir::new("plural");
        dir.write(
            "ru/password_changed.txt",
            "{{ 5 | plural(\"a\", \"b\") }} {{ masked_login }} {{ changed_at }}",
        );
        let t = Templates::with_override_dir(&dir.0).unwrap();
        assert!(matches!(
            t.render(MessageKind::PasswordChanged, "ru", pc_ctx("a")),
            Err(TemplateError::Render { .. })
        ));
    }

    #[test]
    fn missing_context_is_an_error() {
        let t = Templates::embedded();
        let err = t
            .render(
                MessageKind::VerificationCode,
                "en",
                context! { masked_login => "a" },
            )
            .unwrap_err();
        match err {
            TemplateError::Render { name, .. } => assert!(name.starts_with("en/verification_code")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn from_serialize_context_works() {
        #[derive(serde::Serialize)]
        struct Ctx {
            changed_at: String,
            masked_login: &'static str,
        }
        let t = Templates::embedded();
        let changed_at = chrono::DateTime::<chrono::Utc>::from_timestamp(1_795_853_400, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M UTC")
            .to_string();
        let ctx = Value::from_serialize(Ctx {
            changed_at: changed_at.clone(),
            masked_login: "j***n@e***.com",
        });
        let m = t.render(MessageKind::PasswordChanged, "sv", ctx).unwrap();
        assert!(m.text.contains(&changed_at));
    }

    #[test]
    fn override_dir_replaces_one_file_and_falls_back() {
        let dir = TempDir::new("override");
        dir.write("sv/verification_code.txt", "ÖVERSTYRD {{ code }}");
        dir.write("README.md", "not a template");
        dir.write("partials/x.txt", "ignored: not a locale name");
        let t = Templates::with_override_dir(&dir.0).unwrap();
        let embedded = Templates::embedded();

        let m = t
            .render(MessageKind::VerificationCode, "sv-FI", vc_ctx("a", 5))
            .unwrap();
        let e = embedded
            .render(MessageKind::VerificationCode, "sv", vc_ctx("a", 5))
            .unwrap();
        assert_eq!(m.text, "ÖVERSTYRD 042917");
        assert_eq!(m.html, e.html);
        assert_eq!(m.subject, e.subject);

        for (locale, kind, ctx) in [
            ("en", MessageKind::VerificationCode, vc_ctx("a", 5)),
            ("ru", MessageKind::PasswordChanged, pc_ctx("a")),
            ("sv", MessageKind::PasswordChanged, pc_ctx("a")),
        ] {
            assert_eq!(
                t.render(kind, locale, ctx.clone()).unwrap(),
                embedded.render(kind, locale, ctx).unwrap()
            );
        }
        assert_eq!(t.locales(), BUILTIN_LOCALES);
    }

    #[test]
    fn override_dir_can_add_a_complete_locale() {
        let dir = TempDir::new("newlocale");
        for kind in MessageKind::ALL {
            for ext in PARTS {
                dir.write(
                    &format!("fi/{}.{ext}", kind.name()),
                    &format!("FI {}.{ext} {{{{ masked_login }}}}", kind.name()),
                );
            }
        }
        let t = Templates::with_override_dir(&dir.0).unwrap();
        assert_eq!(t.locales().len(), BUILTIN_LOCALES.len() + 1);
        assert!(t.locales().contains(&"fi".to_owned()));
        assert_eq!(t.resolve_locale("fi-FI"), "fi");
        let m = t
            .render(MessageKind::PasswordChanged, "FI", pc_ctx("<b>"))
            .unwrap();
        assert_eq!(m.text, "FI password_changed.txt <b>");
        assert_eq!(m.html, "FI password_changed.html &lt;b&gt;");
        // Without a locale.toml a new locale writes ISO 8601 dates.
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-02T03:04:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(t.format_datetime("fi", at), "2026-12-02 03:04 UTC");
        dir.write(
            "fi/locale.toml",
            "datetime = \"%-d.%-m.%Y klo %H.%M UTC\"\n",
        );
        let t = Templates::with_override_dir(&dir.0).unwrap();
        assert_eq!(t.format_datetime("fi", at), "2.12.2026 klo 03.04 UTC");
        dir.write("fi/locale.toml", "datetime = \"%B\"\n");
        assert!(matches!(
            Templates::with_override_dir(&dir.0),
            Err(TemplateError::Directory(..))
        ));
    }

    #[test]
    fn override_dir_rejects_incomplete_new_locale() {
        let dir = TempDir::new("incomplete");
        dir.write("fi/verification_code.txt", "vain teksti");
        assert!(matches!(
            Templates::with_override_dir(&dir.0),
            Err(TemplateError::Directory(..))
        ));
    }

    #[test]
    fn override_dir_reports_syntax_errors() {
        let dir = TempDir::new("syntax");
        dir.write("en/password_changed.txt", "{% if %}");
        assert!(matches!(
            Templates::with_override_dir(&dir.0),
            Err(TemplateError::Render { .. })
        ));
    }

    #[test]
    fn override_dir_must_be_a_readable_directory() {
        let missing = std::env::temp_dir().join(format!(
            "templates-test-missing-{}-does-not-exist",
            std::process::id()
        ));
        assert!(matches!(
            Templates::with_override_dir(&missing),
            Err(TemplateError::Directory(..))
        ));
        let dir = TempDir::new("file");
        dir.write("plain-file", "x");
        assert!(matches!(
            Templates::with_override_dir(&dir.0.join("plain-file")),
            Err(TemplateError::Directory(..))
        ));
    }

    /// No links, except exactly the report link (`REPORT_LINK`), and only in the code mail's
    /// HTML inside `{% if report_url %}`.
    #[test]
    fn embedded_templates_have_no_links_or_remote_content() {
        for (name, source) in EMBEDDED {
            let allowed = name.ends_with("/verification_code.html");
            let links = source.matches(REPORT_LINK).count();
            assert_eq!(links, usize::from(allowed), "{name}: the report link");
            if allowed {
                let guarded = source
                    .split("{% if report_url %}")
                    .nth(1)
                    .and_then(|rest| rest.split("{% endif %}").next())
                    .unwrap_or_default();
                assert!(guarded.contains(REPORT_LINK), "{name}: link outside its if");
            }
            let lower = source.replace(REPORT_LINK, "").to_lowercase();
            for needle in [
                "http", "href", "src=", "url(", "www.", "<img", "<a ", "mailto:",
            ] {
                assert!(!lower.contains(needle), "{name} contains {needle:?}");
            }
        }
    }

    #[test]
    fn html_templates_declare_their_language_and_direction() {
        for (name, source) in EMBEDDED {
            if let Some(stem) = name.strip_suffix(".html") {
                let locale = stem.split('/').next().unwrap();
                let dir = if RTL_LOCALES.contains(&locale) {
                    "rtl"
                } else {
                    "ltr"
                };
                assert!(
                    source.contains(&format!("<html lang=\"{locale}\" dir=\"{dir}\">")),
                    "{name}"
                );
            }
        }
        assert!(RTL_LOCALES.contains(&"ar"));
        assert_eq!(sources("ar").len(), PARTS.len() * MessageKind::ALL.len());
    }
}
