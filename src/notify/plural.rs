//! Plural forms for the mail templates, after the CLDR plural rules (integers only: the
//! templates count whole minutes).
//!
//! A template writes `{{ n | plural("minute", "minutes") }}` with one form per plural category
//! of its language, in CLDR order (`zero`, `one`, `two`, `few`, `many`, `other`, leaving out the
//! categories the language does not have):
//!
//! | language | forms | example |
//! |---|---|---|
//! | en, de, nl, sv (and any other) | one, other | 1 minute, 2 minutes |
//! | fr, pt | one (0 and 1), [many,] other | 0 minute, 1 minute, 2 minutes |
//! | es, it | one, [many,] other | 1 minuto, 2 minutos |
//! | ru, uk | one, few, many | 1, 21 минуту; 2–4, 22 минуты; 5–20, 25 минут |
//! | pl | one, few, many | 1 minutę; 2–4, 22 minuty; 5–21, 25 minut |
//! | ar | zero, one, two, few, many, other | 0, 1, 2, 3–10, 11–99, 100 … |
//! | zh | other | 5 分钟 |
//!
//! `many` of French, Spanish, Italian and Portuguese is only for multiples of a million
//! ("1 000 000 de minutes"); a template may leave it out, and then `other` is used.
//! The language is the template's own (the directory its name starts with), so one filter
//! serves every locale and a translator cannot pick another language's rule by mistake.

use minijinja::value::Rest;
use minijinja::{Error, ErrorKind, State};

/// CLDR plural categories, in CLDR order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Zero,
    One,
    Two,
    Few,
    Many,
    Other,
}

use Category::{Few, Many, One, Other, Two, Zero};

/// The categories a language distinguishes for integers, in the order its forms are written.
pub fn categories(language: &str) -> &'static [Category] {
    match language {
        "ru" | "uk" | "pl" => &[One, Few, Many],
        "ar" => &[Zero, One, Two, Few, Many, Other],
        "zh" | "ja" | "ko" => &[Other],
        "fr" | "pt" | "es" | "it" => &[One, Many, Other],
        _ => &[One, Other],
    }
}

/// The category of the integer `n` in `language` (a primary subtag: "ru", "pt").
pub fn category(language: &str, n: i64) -> Category {
    let i = n.unsigned_abs();
    let (m10, m100) = (i % 10, i % 100);
    let million = i != 0 && i.is_multiple_of(1_000_000);
    match language {
        "ru" | "uk" => {
            if m10 == 1 && m100 != 11 {
                One
            } else if (2..=4).contains(&m10) && !(12..=14).contains(&m100) {
                Few
            } else {
                Many
            }
        }
        "pl" => {
            if i == 1 {
                One
            } else if (2..=4).contains(&m10) && !(12..=14).contains(&m100) {
                Few
            } else {
                Many
            }
        }
        "ar" => match i {
            0 => Zero,
            1 => One,
            2 => Two,
            _ if (3..=10).contains(&m100) => Few,
            _ if (11..=99).contains(&m100) => Many,
            _ => Other,
        },
        "zh" | "ja" | "ko" => Other,
        "fr" | "pt" if i <= 1 => One,
        "fr" | "pt" | "es" | "it" if million => Many,
        "es" | "it" if i == 1 => One,
        "fr" | "pt" | "es" | "it" => Other,
        _ if i == 1 => One,
        _ => Other,
    }
}

/// Picks the form for `category` from `forms` written for `language`, or `None` when the number
/// of forms is not one the language accepts.
pub fn select<'a>(language: &str, n: i64, forms: &'a [String]) -> Option<&'a String> {
    let wanted = categories(language);
    let category = category(language, n);
    if forms.len() == wanted.len() {
        let index = wanted.iter().position(|c| *c == category)?;
        return forms.get(index);
    }
    // The romance languages may leave out `many`: then it is `other`.
    if wanted == [One, Many, Other] && forms.len() == 2 {
        return forms.get(usize::from(category != One));
    }
    None
}

/// The `plural` filter: the language comes from the template's name (`<locale>/<kind>.<ext>`).
pub fn filter(state: &State, n: i64, forms: Rest<String>) -> Result<String, Error> {
    let language = state
        .name()
        .split('/')
        .next()
        .and_then(|locale| locale.split(['-', '_']).next())
        .unwrap_or_default()
        .to_ascii_lowercase();
    select(&language, n, &forms).cloned().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "plural for {language:?} takes {} forms ({:?}), got {}",
                categories(&language).len(),
                categories(&language),
                forms.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(language: &str, n: i64) -> Category {
        category(language, n)
    }

    #[test]
    fn east_slavic_has_one_few_many() {
        for language in ["ru", "uk"] {
            for (n, c) in [
                (0, Many),
                (1, One),
                (2, Few),
                (4, Few),
                (5, Many),
                (11, Many),
                (12, Many),
                (14, Many),
                (21, One),
                (22, Few),
                (25, Many),
                (101, One),
                (111, Many),
                (112, Many),
                (122, Few),
            ] {
                assert_eq!(cat(language, n), c, "{language} {n}");
            }
        }
    }

    #[test]
    fn polish_twenty_one_is_many() {
        for (n, c) in [
            (0, Many),
            (1, One),
            (2, Few),
            (5, Many),
            (12, Many),
            (21, Many),
            (22, Few),
            (24, Few),
            (25, Many),
            (101, Many),
            (102, Few),
        ] {
            assert_eq!(cat("pl", n), c, "pl {n}");
        }
    }

    #[test]
    fn arabic_has_six_categories() {
        for (n, c) in [
            (0, Zero),
            (1, One),
            (2, Two),
            (3, Few),
            (10, Few),
            (11, Many),
            (99, Many),
            (100, Other),
            (102, Other),
            (103, Few),
            (111, Many),
        ] {
            assert_eq!(cat("ar", n), c, "ar {n}");
        }
    }

    #[test]
    fn romance_and_germanic_rules() {
        assert_eq!(cat("fr", 0), One);
        assert_eq!(cat("fr", 1), One);
        assert_eq!(cat("fr", 2), Other);
        assert_eq!(cat("pt", 0), One);
        assert_eq!(cat("es", 0), Other);
        assert_eq!(cat("es", 1), One);
        assert_eq!(cat("it", 1_000_000), Many);
        assert_eq!(cat("en", 0), Other);
        assert_eq!(cat("en", 1), One);
        assert_eq!(cat("de", -1), One);
        assert_eq!(cat("zh", 1), Other);
    }

    #[test]
    fn forms_are_picked_by_count() {
        let two = ["minuto".to_owned(), "minutos".to_owned()];
        assert_eq!(select("es", 1, &two).unwrap(), "minuto");
        assert_eq!(select("es", 1_000_000, &two).unwrap(), "minutos");
        let three = [
            "minute".to_owned(),
            "de minutes".to_owned(),
            "minutes".to_owned(),
        ];
        assert_eq!(select("fr", 1_000_000, &three).unwrap(), "de minutes");
        assert_eq!(select("fr", 3, &three).unwrap(), "minutes");
        assert!(select("ru", 1, &two).is_none());
        assert!(select("en", 1, &three).is_none());
    }
}
