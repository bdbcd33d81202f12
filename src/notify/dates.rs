//! How each locale writes a date and time in its mails, from `templates/<locale>/locale.toml`:
//!
//! ```toml
//! # chrono strftime; %B is this file's month name (in the form a date needs), always UTC.
//! datetime = "%-d %B %Y, %H:%M UTC"
//! months = ["January", "February", "March", "April", "May", "June", "July", "August",
//!           "September", "October", "November", "December"]
//! ```
//!
//! Kept with the templates rather than in code so that a translator owns it, and so that a
//! locale added from a template directory can bring its own. A locale without the file writes
//! `2026-12-02 03:04 UTC` (ISO 8601, readable everywhere).

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;

/// The format of a locale without `locale.toml`.
pub const ISO: &str = "%Y-%m-%d %H:%M UTC";

/// A locale's `locale.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocaleFormat {
    /// strftime pattern; `%B` is replaced by the month name from `months`.
    pub datetime: String,
    /// Twelve month names, January first, in the form the pattern needs (genitive in Slavic
    /// languages: "2 декабря").
    #[serde(default)]
    pub months: Vec<String>,
}

impl Default for LocaleFormat {
    fn default() -> Self {
        Self {
            datetime: ISO.to_owned(),
            months: Vec::new(),
        }
    }
}

impl LocaleFormat {
    /// Parses and checks a `locale.toml`: a pattern chrono understands, and twelve months when
    /// the pattern names a month.
    pub fn parse(source: &str) -> Result<Self, String> {
        let format: LocaleFormat = toml::from_str(source).map_err(|e| e.to_string())?;
        let probe = format.datetime.replace("%B", "M");
        if StrftimeItems::new(&probe).any(|item| matches!(item, Item::Error)) {
            return Err(format!(
                "`datetime` {:?} is not a strftime pattern",
                format.datetime
            ));
        }
        if format.datetime.contains("%B") && format.months.len() != 12 {
            return Err(format!(
                "`datetime` uses %B, so `months` needs 12 names, not {}",
                format.months.len()
            ));
        }
        if format.months.iter().any(|m| m.trim().is_empty()) {
            return Err("a month name is empty".to_owned());
        }
        Ok(format)
    }

    /// `at` in this locale's words. Never panics: a pattern that cannot be written (which
    /// [`LocaleFormat::parse`] already refuses) gives the ISO form.
    pub fn format(&self, at: DateTime<Utc>) -> String {
        let month = usize::try_from(at.month0())
            .ok()
            .and_then(|index| self.months.get(index))
            .map(|name| name.replace('%', "%%"))
            .unwrap_or_else(|| "%m".to_owned());
        let pattern = self.datetime.replace("%B", &month);
        let mut out = String::new();
        if write!(out, "{}", at.format(&pattern)).is_err() {
            out.clear();
            let _ = write!(out, "{}", at.format(ISO));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-12-02T03:04:05Z".parse().unwrap()
    }

    #[test]
    fn month_names_and_patterns_are_applied() {
        let de = LocaleFormat::parse(r#"datetime = "%d.%m.%Y, %H:%M UTC""#).unwrap();
        assert_eq!(de.format(at()), "02.12.2026, 03:04 UTC");
        let ru = LocaleFormat::parse(
            r#"datetime = "%-d %B %Y, %H:%M UTC"
months = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
          "сентября", "октября", "ноября", "декабря"]"#,
        )
        .unwrap();
        assert_eq!(ru.format(at()), "2 декабря 2026, 03:04 UTC");
        assert_eq!(LocaleFormat::default().format(at()), "2026-12-02 03:04 UTC");
    }

    #[test]
    fn broken_files_are_refused() {
        assert!(LocaleFormat::parse(r#"datetime = "%Q %-""#).is_err());
        assert!(LocaleFormat::parse(r#"datetime = "%B""#).is_err());
        assert!(
            LocaleFormat::parse(
                r#"datetime = "%F"
extra = 1"#
            )
            .is_err()
        );
        // A percent sign in a month name is a name, not a pattern.
        let odd = LocaleFormat::parse(&format!(
            "datetime = \"%B\"\nmonths = [{}]",
            ["\"%H\""; 12].join(",")
        ))
        .unwrap();
        assert_eq!(odd.format(at()), "%H");
    }
}
