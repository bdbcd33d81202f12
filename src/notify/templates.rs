//! E-mail templates for the password-recovery flow.
//!
//! Every message has three parts — a one-line subject, a plain-text body and an
//! HTML body — stored as `templates/<locale>/<kind>.<ext>` with `ext` one of
//! `subject`, `txt`, `html`. The built-in set (en, sv, ru) is compiled into the
//! binary so the service can always send mail, even with no files on disk;
//! operators may override any single file from a directory.
//!
//! Deliberate constraints on the templates themselves:
//! * No links and no remote images. Corporate mail scanners pre-fetch every URL
//!   in a message, which would burn single-use codes or tokens, and remote
//!   images are tracking pixels. The unit tests enforce this for the embedded set.
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
//!     },
//! )?;
//! assert!(msg.text.contains("042917"));
//! // or, from any `Serialize` struct:
//! // templates.render(kind, locale, minijinja::Value::from_serialize(&my_ctx))?
//! # Ok(())
//! # }
//! ```
//!
//! Long because half of it is tests of the rendering rules (escaping, header injection,
//! locale fallback); the code itself is one loader and one renderer.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io::ErrorKind as IoErrorKind;
use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

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

/// The built-in templates, keyed by `<locale>/<kind>.<ext>`.
const EMBEDDED: &[(&str, &str)] = &[
    embedded!("en", "verification_code", "subject"),
    embedded!("en", "verification_code", "txt"),
    embedded!("en", "verification_code", "html"),
    embedded!("en", "password_changed", "subject"),
    embedded!("en", "password_changed", "txt"),
    embedded!("en", "password_changed", "html"),
    embedded!("sv", "verification_code", "subject"),
    embedded!("sv", "verification_code", "txt"),
    embedded!("sv", "verification_code", "html"),
    embedded!("sv", "password_changed", "subject"),
    embedded!("sv", "password_changed", "txt"),
    embedded!("sv", "password_changed", "html"),
    embedded!("ru", "verification_code", "subject"),
    embedded!("ru", "verification_code", "txt"),
    embedded!("ru", "verification_code", "html"),
    embedded!("ru", "password_changed", "subject"),
    embedded!("ru", "password_changed", "txt"),
    embedded!("ru", "password_changed", "html"),
];

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
        for dir_name in &dir_locales {
            let locale = normalize_tag(dir_name);
            let is_builtin = builtin.contains(&locale);
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
        })
    }

    /// Locales that have templates (at least "en", "sv", "ru"), sorted.
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
    env.add_filter("plural", plural);
    env.add_filter("plural_ru", plural_ru);
    env
}

/// `{{ n | plural("minute", "minutes") }}` — two-form languages (en, sv).
fn plural(n: i64, one: String, other: String) -> String {
    if n.abs() == 1 { one } else { other }
}

/// `{{ n | plural_ru("минуту", "минуты", "минут") }}` — Russian has three forms:
/// 1, 21, 31… take `one`; 2–4, 22–24… take `few`; 0, 5–20, 25–30… take `many`.
fn plural_ru(n: i64, one: String, few: String, many: String) -> String {
    let n = n.unsigned_abs();
    let (m10, m100) = (n % 10, n % 100);
    if m10 == 1 && m100 != 11 {
        one
    } else if (2..=4).contains(&m10) && !(12..=14).contains(&m100) {
        few
    } else {
        many
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
        }
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
        assert_eq!(EMBEDDED.len(), 3 * PARTS.len() * MessageKind::ALL.len());
    }

    #[test]
    fn locales_are_listed() {
        assert_eq!(Templates::embedded().locales(), vec!["en", "ru", "sv"]);
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
    }

    #[test]
    fn html_escapes_and_text_does_not() {
        let t = Templates::embedded();
        let hostile = "<script>alert(1)</script>&";
        for locale in ["en", "sv", "ru"] {
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
        for locale in ["en", "sv", "ru"] {
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
        assert_eq!(t.resolve_locale("de"), "en");
        assert_eq!(t.resolve_locale("de-AT"), "en");
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
        assert_eq!(t.locales(), vec!["en", "ru", "sv"]);
    }

    #[test]
    fn override_dir_can_add_a_complete_locale() {
        let dir = TempDir::new("newlocale");
        for kind in MessageKind::ALL {
            for ext in PARTS {
                dir.write(
                    &format!("de/{}.{ext}", kind.name()),
                    &format!("DE {}.{ext} {{{{ masked_login }}}}", kind.name()),
                );
            }
        }
        let t = Templates::with_override_dir(&dir.0).unwrap();
        assert_eq!(t.locales(), vec!["de", "en", "ru", "sv"]);
        assert_eq!(t.resolve_locale("de-AT"), "de");
        let m = t
            .render(MessageKind::PasswordChanged, "DE", pc_ctx("<b>"))
            .unwrap();
        assert_eq!(m.text, "DE password_changed.txt <b>");
        assert_eq!(m.html, "DE password_changed.html &lt;b&gt;");
    }

    #[test]
    fn override_dir_rejects_incomplete_new_locale() {
        let dir = TempDir::new("incomplete");
        dir.write("de/verification_code.txt", "nur Text");
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

    #[test]
    fn embedded_templates_have_no_links_or_remote_content() {
        for (name, source) in EMBEDDED {
            let lower = source.to_lowercase();
            for needle in [
                "http", "href", "src=", "url(", "www.", "<img", "<a ", "mailto:",
            ] {
                assert!(!lower.contains(needle), "{name} contains {needle:?}");
            }
        }
    }

    #[test]
    fn html_templates_declare_their_language() {
        for (name, source) in EMBEDDED {
            if let Some(stem) = name.strip_suffix(".html") {
                let locale = stem.split('/').next().unwrap();
                assert!(
                    source.contains(&format!("<html lang=\"{locale}\"")),
                    "{name}"
                );
            }
        }
    }
}
