//! The password policy. Every rule is checked and every violation reported at once, each with
//! its own stable reason, so a UI can show them all while the person types.

use std::io::Read;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::error::PolicyViolation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Charset {
    /// Printable ASCII: Latin letters of both cases, digits, punctuation and space.
    #[default]
    Ascii,
    /// Any Unicode except control characters, compared after NFKC normalisation.
    Unicode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CharClass {
    /// A lower-case letter.
    Lower,
    /// An upper-case letter.
    Upper,
    /// A digit.
    Digit,
    /// Anything else: punctuation, space, other scripts.
    Symbol,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PolicySettings {
    /// Fewest characters (at most `password_policy.max_length`).
    #[schemars(range(min = 1, max = 4096))]
    pub min_length: usize,
    /// Most characters; longer passwords are refused before any hashing.
    #[schemars(range(min = 8, max = 4096))]
    pub max_length: usize,
    /// Which characters a password may contain.
    pub charset: Charset,
    /// zxcvbn score (0-4) a password must reach.
    #[schemars(range(min = 0, max = 4))]
    pub min_strength: u8,
    /// How many previous passwords (besides the current one) may not be reused.
    #[schemars(range(min = 0, max = 24))]
    pub history_depth: u32,
    /// Character classes a password must contain, each at least once.
    pub required_classes: Vec<CharClass>,
    /// Refuse the ~400k passwords of the bundled common-password list.
    pub reject_common: bool,
    /// Refuse a password that contains the login.
    pub reject_login: bool,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 128,
            charset: Charset::Ascii,
            min_strength: 3,
            history_depth: 3,
            required_classes: Vec::new(),
            reject_common: true,
            reject_login: true,
        }
    }
}

pub mod reason {
    pub const TOO_SHORT: &str = "PASSWORD_TOO_SHORT";
    pub const TOO_LONG: &str = "PASSWORD_TOO_LONG";
    pub const CHARSET: &str = "PASSWORD_INVALID_CHARACTERS";
    pub const COMMON: &str = "PASSWORD_COMMON";
    pub const CONTAINS_LOGIN: &str = "PASSWORD_CONTAINS_LOGIN";
    pub const TOO_WEAK: &str = "PASSWORD_TOO_WEAK";
    pub const MISSING_CLASS: &str = "PASSWORD_MISSING_CHARACTER_CLASS";
    pub const REUSED: &str = "PASSWORD_REUSED";
}

/// The bundled list (see `data/NOTICE-common-passwords.md`): ~400k entries, lower-cased,
/// decompressed once on first use.
static COMMON_PASSWORDS: &[u8] = include_bytes!("../../data/common-passwords.txt.gz");

/// The list as one sorted block of text and the byte range of each entry: ~6.5 MiB for the 413k
/// entries, where a `HashSet<String>` (a heap allocation, a `String` and a table slot per entry)
/// held ~22 MiB for the whole life of the process (measured with VmRSS). A lookup is a binary
/// search, ~19 string comparisons.
struct CommonPasswords {
    text: String,
    /// Byte ranges of the entries in `text`, sorted by entry.
    entries: Vec<(u32, u32)>,
}

impl CommonPasswords {
    fn parse(text: String) -> Self {
        let mut entries = Vec::new();
        let mut start = 0usize;
        for line in text.split('\n') {
            let end = start + line.len();
            if let (Ok(a), Ok(b)) = (u32::try_from(start), u32::try_from(end)) {
                entries.push((a, b));
            }
            start = end + 1;
        }
        let entry = |&(a, b): &(u32, u32)| text.get(a as usize..b as usize).unwrap_or_default();
        entries.sort_unstable_by(|x, y| entry(x).cmp(entry(y)));
        entries.dedup_by(|x, y| entry(x) == entry(y));
        Self { text, entries }
    }

    fn entry(&self, (a, b): (u32, u32)) -> &str {
        self.text.get(a as usize..b as usize).unwrap_or_default()
    }

    fn contains(&self, candidate: &str) -> bool {
        self.entries
            .binary_search_by(|&range| self.entry(range).cmp(candidate))
            .is_ok()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn common_passwords() -> &'static CommonPasswords {
    static SET: OnceLock<CommonPasswords> = OnceLock::new();
    SET.get_or_init(|| {
        let mut text = String::new();
        let decoded = flate2::read::GzDecoder::new(COMMON_PASSWORDS).read_to_string(&mut text);
        if decoded.is_err() {
            // The list is compiled in; a corrupt copy is a build defect. Fail closed would lock
            // every user out, so the rule is skipped and the error logged once.
            tracing::error!("bundled common-password list is corrupt; the rule is disabled");
            return CommonPasswords::parse(String::new());
        }
        let text = text.replace("\r\n", "\n");
        let mut parsed = CommonPasswords::parse(text.trim_end_matches('\n').to_owned());
        parsed.text.shrink_to_fit();
        parsed.entries.shrink_to_fit();
        parsed
    })
}

/// Loads the list now (at start-up) instead of on the first request.
pub fn preload() -> usize {
    common_passwords().len()
}

/// Characters of a password zxcvbn scores (see `assess`).
pub const ZXCVBN_MAX_CHARS: usize = 64;

#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    settings: PolicySettings,
}

/// The result of checking a password against every rule that does not need the database.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub violations: Vec<PolicyViolation>,
    pub strength: u8,
    /// The password as it will be hashed (NFKC in Unicode mode).
    pub normalized: String,
}

impl PasswordPolicy {
    pub fn new(settings: PolicySettings) -> Self {
        Self { settings }
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// The form a password is hashed and compared in. In Unicode mode NFKC makes "ｐａｓｓ" and
    /// "pass" the same password, as the person would expect.
    pub fn normalize(&self, password: &str) -> String {
        match self.settings.charset {
            Charset::Ascii => password.to_owned(),
            Charset::Unicode => password.nfkc().collect(),
        }
    }

    /// Checks every stateless rule. `user_inputs` are the login, e-mail and similar strings the
    /// password must not be built from.
    pub fn assess(
        &self,
        password: &str,
        login_local_part: Option<&str>,
        user_inputs: &[&str],
    ) -> Assessment {
        let s = &self.settings;
        let normalized = self.normalize(password);
        let mut violations = Vec::new();
        let mut violate = |reason: &'static str, message: String| {
            violations.push(PolicyViolation { reason, message });
        };

        let length = normalized.chars().count();
        if length < s.min_length {
            violate(
                reason::TOO_SHORT,
                format!("must be at least {} characters", s.min_length),
            );
        }
        let too_long = length > s.max_length;
        if too_long {
            violate(
                reason::TOO_LONG,
                format!("must be at most {} characters", s.max_length),
            );
        }
        let charset_ok = match s.charset {
            Charset::Ascii => normalized.chars().all(|c| (' '..='~').contains(&c)),
            Charset::Unicode => !normalized.chars().any(char::is_control),
        };
        if !charset_ok {
            let message = match s.charset {
                Charset::Ascii => "may contain only Latin letters, digits, punctuation and spaces",
                Charset::Unicode => "must not contain control characters",
            };
            violate(reason::CHARSET, message.to_owned());
        }
        for class in &s.required_classes {
            let (present, name) = match class {
                CharClass::Lower => (
                    normalized.chars().any(char::is_lowercase),
                    "a lower-case letter",
                ),
                CharClass::Upper => (
                    normalized.chars().any(char::is_uppercase),
                    "an upper-case letter",
                ),
                CharClass::Digit => (normalized.chars().any(|c| c.is_numeric()), "a digit"),
                CharClass::Symbol => (
                    normalized
                        .chars()
                        .any(|c| !c.is_alphanumeric() && !c.is_whitespace()),
                    "a punctuation character",
                ),
            };
            if !present {
                violate(reason::MISSING_CLASS, format!("must contain {name}"));
            }
        }
        let folded = normalized.to_lowercase();
        if s.reject_common && common_passwords().contains(folded.trim()) {
            violate(
                reason::COMMON,
                "is one of the most common passwords".to_owned(),
            );
        }
        if s.reject_login
            && let Some(local) = login_local_part
            && local.chars().count() >= 3
            && folded.contains(&local.to_lowercase())
        {
            violate(
                reason::CONTAINS_LOGIN,
                "must not contain the login".to_owned(),
            );
        }
        // zxcvbn's cost grows superlinearly with length (a 128-character l33t password cost
        // ~0.5 s): only the first ZXCVBN_MAX_CHARS characters are scored. A longer password
        // loses nothing by it: 64 characters that score below the bar are a weak prefix, and
        // the rest of the rules (common list, login) still see the whole password.
        let strength = if too_long || normalized.is_empty() {
            0
        } else {
            let scored: String = normalized.chars().take(ZXCVBN_MAX_CHARS).collect();
            zxcvbn::zxcvbn(&scored, user_inputs).score() as u8
        };
        if strength < s.min_strength && !normalized.is_empty() {
            violate(
                reason::TOO_WEAK,
                format!(
                    "is too easy to guess (strength {strength} of 4, {} needed)",
                    s.min_strength
                ),
            );
        }
        Assessment {
            violations,
            strength,
            normalized,
        }
    }

    pub fn reused_violation() -> PolicyViolation {
        PolicyViolation {
            reason: reason::REUSED,
            message: "must differ from the current and recent passwords".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compact_list_finds_exactly_its_entries() {
        let list = CommonPasswords::parse("zebra\nabc\n\nqwerty\nabc".to_owned());
        for present in ["zebra", "abc", "qwerty", ""] {
            assert!(list.contains(present), "{present:?}");
        }
        for absent in ["ab", "abcd", "zebr", "qwerty1", "Zebra"] {
            assert!(!list.contains(absent), "{absent:?}");
        }
        assert_eq!(list.len(), 4);
    }

    #[test]
    fn the_bundled_list_is_loaded_whole() {
        assert!(preload() > 300_000);
        assert!(common_passwords().contains("password"));
        assert!(!common_passwords().contains("new-velvet-lantern-58?"));
    }

    fn policy() -> PasswordPolicy {
        PasswordPolicy::new(PolicySettings::default())
    }

    fn reasons(password: &str, login: Option<&str>) -> Vec<&'static str> {
        policy()
            .assess(password, login, &[])
            .violations
            .iter()
            .map(|v| v.reason)
            .collect()
    }

    #[test]
    fn a_strong_ascii_password_passes() {
        assert!(reasons("correct-Horse-battery-staple-42", Some("john")).is_empty());
    }

    #[test]
    fn a_short_password_is_too_short_and_weak_at_once() {
        let found = reasons("aB1!", None);
        assert!(found.contains(&reason::TOO_SHORT));
        assert!(found.contains(&reason::TOO_WEAK));
    }

    #[test]
    fn a_long_password_is_too_long_and_never_reaches_zxcvbn() {
        let assessment = policy().assess(&"x".repeat(129), None, &[]);
        assert_eq!(assessment.strength, 0);
        assert!(
            assessment
                .violations
                .iter()
                .any(|v| v.reason == reason::TOO_LONG)
        );
    }

    #[test]
    fn non_ascii_is_refused_under_the_ascii_policy() {
        assert!(reasons("Rågången-är-lång-42", None).contains(&reason::CHARSET));
    }

    #[test]
    fn unicode_mode_accepts_and_normalizes() {
        let p = PasswordPolicy::new(PolicySettings {
            charset: Charset::Unicode,
            ..Default::default()
        });
        let a = p.assess("Rågången-är-lång-42", None, &[]);
        assert!(a.violations.is_empty(), "{:?}", a.violations);
        assert_eq!(p.normalize("ｐａｓｓ"), "pass");
    }

    #[test]
    fn a_common_password_is_named_common() {
        assert!(reasons("password123", None).contains(&reason::COMMON));
    }

    #[test]
    fn a_password_containing_the_login_is_refused() {
        assert!(
            reasons("xx-JohnSmith-Purple-42", Some("johnsmith")).contains(&reason::CONTAINS_LOGIN)
        );
    }

    #[test]
    fn required_classes_are_reported_each() {
        let p = PasswordPolicy::new(PolicySettings {
            required_classes: vec![CharClass::Upper, CharClass::Digit, CharClass::Symbol],
            ..Default::default()
        });
        let found: Vec<_> = p
            .assess("correcthorsebatterystaple", None, &[])
            .violations
            .iter()
            .map(|v| v.message.clone())
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn the_bundled_list_is_large() {
        assert!(preload() >= 100_000);
    }
}
