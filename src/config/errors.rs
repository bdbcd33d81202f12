//! The loader's error messages: each names the key (or the file, line and column) and the kind
//! of problem, never the value. figment's and the TOML parser's own messages quote what was
//! written (`invalid type: found string "whsec_…"`, the offending line under a caret), and what
//! was written is often a secret: a webhook key in a variable whose `]` was forgotten, a password
//! in an unterminated string. So the messages are rebuilt here from the errors' structure.

use std::path::Path;

use figment::Figment;
use figment::error::{Actual, Kind};
use figment::value::Value;

/// What an I/O error was, without the path or anything it read.
pub(super) fn io_kind(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::InvalidData => "it is not UTF-8 text".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::NotFound => "not found".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Line and column (both from 1) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(1, |last| last.chars().count() + 1);
    (line, column)
}

/// The parser's words for the mistake, with anything it quotes from the document left out
/// unless it is a key of the offending line (a duplicate key is named).
fn sanitized_message(message: &str, line: &str) -> String {
    // Only a line with `=` has a key part; on any other line everything may be a value.
    let key_part = line.split_once('=').map_or("", |(key, _)| key);
    let mut out = String::new();
    let mut pieces = message.split('`');
    if let Some(first) = pieces.next() {
        out.push_str(first);
    }
    let mut quoted = true;
    for piece in pieces {
        if quoted {
            let shown = piece.chars().count() <= 2
                || (piece
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                    && key_part.contains(piece));
            out.push('`');
            out.push_str(if shown { piece } else { "…" });
            out.push('`');
        } else {
            out.push_str(piece);
        }
        quoted = !quoted;
    }
    out.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// "config file F is not valid TOML: line L, column C: <kind>".
pub(super) fn toml_syntax(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let at = error.span().map(|span| position(text, span.start));
    let line_text = at
        .and_then(|(line, _)| text.lines().nth(line.saturating_sub(1)))
        .unwrap_or_default();
    let kind = sanitized_message(error.message(), line_text);
    match at {
        Some((line, column)) => format!(
            "config file {} is not valid TOML: line {line}, column {column}: {kind}",
            path.display()
        ),
        None => format!("config file {} is not valid TOML: {kind}", path.display()),
    }
}

/// The kind of a value, never the value.
fn kind_of(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        Actual::NewtypeStruct
        | Actual::Enum
        | Actual::UnitVariant
        | Actual::NewtypeVariant
        | Actual::TupleVariant
        | Actual::StructVariant
        | Actual::Other(_) => "a value of another kind",
    }
}

/// Every string in a value (the leaves of tables and arrays, numbers as written).
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(_, text) => out.push(text.clone()),
        Value::Char(_, c) => out.push(c.to_string()),
        Value::Num(..) | Value::Bool(..) | Value::Empty(..) => {}
        Value::Dict(_, dict) => {
            for (key, value) in dict {
                out.push(key.clone());
                strings(value, out);
            }
        }
        Value::Array(_, items) => items.iter().for_each(|item| strings(item, out)),
    }
}

/// The value written at `path` (or at the nearest key above it that exists).
fn written(figment: &Figment, path: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for end in (1..=path.len()).rev() {
        if let Ok(value) = figment.find_value(&path[..end].join(".")) {
            strings(&value, &mut out);
            break;
        }
    }
    out
}

/// A custom message of a deserializer (an address that does not parse, say) is kept only if it
/// quotes nothing that was written at its key.
fn custom_message(message: &str, written: &[String]) -> String {
    let lower = message.to_lowercase();
    let quotes = written.iter().any(|text| {
        let text = text.trim().to_lowercase();
        text.chars().count() >= 3 && lower.contains(&text)
    });
    if quotes || message.contains('"') {
        "invalid value".to_owned()
    } else {
        message.to_owned()
    }
}

fn problem(kind: &Kind, written: &[String], from_env: bool) -> String {
    match kind {
        Kind::Message(message) => custom_message(message, written),
        Kind::InvalidType(actual, expected) => {
            let hint = if from_env && matches!(actual, Actual::Str(_)) {
                " (a value that does not parse as TOML, e.g. a missing `]` or quote, is read as text)"
            } else {
                ""
            };
            format!(
                "wrong type: expected {expected}, found {}{hint}",
                kind_of(actual)
            )
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value ({}): expected {expected}", kind_of(actual))
        }
        Kind::InvalidLength(_, expected) => format!("wrong number of items: expected {expected}"),
        Kind::UnknownVariant(_, allowed) => format!(
            "not one of the allowed values: {}",
            allowed
                .iter()
                .map(|word| format!("`{word}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::UnknownField(name, _) => format!("unknown key `{name}`"),
        Kind::MissingField(name) => format!("missing key `{name}`"),
        Kind::DuplicateField(name) => format!("key `{name}` is given twice"),
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => {
            "number too large for its key".to_owned()
        }
        Kind::Unsupported(actual) => format!("unsupported {}", kind_of(actual)),
        Kind::UnsupportedKey(actual, _) => format!("unsupported key ({})", kind_of(actual)),
    }
}

/// The environment variable that set `path`: the shortest `RECOVERY_A__B` prefix that is set.
fn variable(path: &[String]) -> Option<String> {
    (1..=path.len()).find_map(|end| {
        let mut keys = path[..end].to_vec();
        if keys == ["captcha", "mode"] {
            keys = vec!["captcha".to_owned()];
        }
        let name = super::strict::env_name(&keys);
        std::env::var_os(&name).map(|_| name)
    })
}

/// One message per error figment collected.
pub(super) fn described(figment: &Figment, error: figment::Error) -> Vec<String> {
    error
        .into_iter()
        .map(|error| {
            let from_env = error
                .metadata
                .as_ref()
                .is_some_and(|meta| meta.name.contains("environment"));
            let file = error
                .metadata
                .as_ref()
                .and_then(|meta| meta.source.as_ref())
                .and_then(|source| source.file_path())
                .map(|file| format!(" in {}", file.display()))
                .unwrap_or_default();
            if error.path.is_empty() {
                // A provider that could not be read at all (the file's syntax is checked
                // before, so this is rare); its message may quote the input.
                return format!("the configuration{file} cannot be read");
            }
            let key = error.path.join(".");
            let problem = problem(&error.kind, &written(figment, &error.path), from_env);
            match variable(&error.path).filter(|_| from_env) {
                Some(name) => format!("`{key}` (environment variable `{name}`): {problem}"),
                None => format!("`{key}`{file}: {problem}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_left_out_of_parser_messages() {
        let message = "invalid basic string\nexpected `\"`, found `hunter2hunter2`";
        let shown = sanitized_message(message, "secret = \"hunter2hunter2");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("`\"`"), "{shown}");
        assert_eq!(
            sanitized_message("duplicate key `secret`", "secret = 1"),
            "duplicate key `secret`"
        );
        // No `=` on the line: nothing on it is known to be a key.
        assert_eq!(
            sanitized_message("unexpected `hunter2hunter2`", "hunter2hunter2"),
            "unexpected `…`"
        );
    }

    #[test]
    fn a_custom_message_quoting_the_value_is_replaced() {
        let written = ["whsec_c2VjcmV0".to_owned()];
        assert_eq!(
            custom_message("\"whsec_c2VjcmV0\" is not an address", &written),
            "invalid value"
        );
        assert_eq!(
            custom_message("invalid socket address syntax", &written),
            "invalid socket address syntax"
        );
    }

    #[test]
    fn positions_count_from_one() {
        assert_eq!(position("a = 1\nb = \"x", 10), (2, 5));
        assert_eq!(position("", 0), (1, 1));
    }
}
