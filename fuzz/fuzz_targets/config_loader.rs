//! The configuration loader (`Config::load`): a TOML file and `RECOVERY_*` variables, over the
//! defaults, with the strict unknown-key check and the range checks. Whatever an operator (or a
//! template gone wrong) writes, it answers a `Config` or a `ConfigError`, never a panic, and the
//! printed configuration never shows the secret, and an error never shows a value: every `$S`
//! in the input becomes a marker secret, which the error text may contain only where the
//! marker was written as a key (keys are named, values never).
//!
//! Input: the TOML text, then a NUL byte, then `NAME=value` lines (each name gets the
//! `RECOVERY_` prefix; `$S` is replaced in values only).
#![no_main]

use std::io::Write as _;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use recovery_service::config::Config;
use secrecy::ExposeSecret;

fn file() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("recovery-fuzz-config-{}.toml", std::process::id()))
    })
}

/// What `$S` in the input becomes.
const MARKER: &str = "zqMarkerSecret7731";

/// Whether the marker stands where a key does in `text`: followed (past quotes and blanks) by
/// `=`, `.` or `]` (a key, a dotted key, a table header). Conservative: a value like
/// `"<marker>.com"` also counts, which only skips the check for that input.
fn marker_in_key_position(text: &str) -> bool {
    text.match_indices(MARKER).any(|(at, _)| {
        text[at + MARKER.len()..]
            .chars()
            .find(|c| !matches!(c, '"' | '\'' | ' ' | '\t'))
            .is_some_and(|c| matches!(c, '=' | '.' | ']'))
    })
}

fn clear_environment() {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RECOVERY_") {
            // SAFETY: the fuzz target is single-threaded; nothing reads the environment
            // concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (toml, env) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    clear_environment();
    // Bytes kept as they are (a file that is not UTF-8 is an input too), `$S` replaced.
    let mut file_bytes = Vec::with_capacity(toml.len());
    let mut rest = toml;
    while let Some(at) = rest.windows(2).position(|w| w == b"$S") {
        file_bytes.extend_from_slice(&rest[..at]);
        file_bytes.extend_from_slice(MARKER.as_bytes());
        rest = &rest[at + 2..];
    }
    file_bytes.extend_from_slice(rest);
    let env = String::from_utf8_lossy(env);
    let mut keys_hold_marker = marker_in_key_position(&String::from_utf8_lossy(&file_bytes));
    for line in env.lines().take(8) {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.replace("$S", MARKER);
        keys_hold_marker |= name.contains(MARKER) || marker_in_key_position(&value);
        let name = format!("RECOVERY_{name}");
        let valid = !name.is_empty()
            && !name.contains(['=', '\0'])
            && !value.contains('\0')
            && name != "RECOVERY_CONFIG";
        if valid {
            // SAFETY: as above.
            unsafe { std::env::set_var(name, value) };
        }
    }
    let Ok(mut out) = std::fs::File::create(file()) else {
        return;
    };
    if out.write_all(&file_bytes).is_err() {
        return;
    }
    drop(out);
    match Config::load(Some(file())) {
        Ok(config) => {
            let shown = config.redacted_toml();
            if let Some(secret) = &config.secret {
                let secret = secret.expose_secret();
                if secret.len() >= 8 && secret != "***" {
                    assert!(
                        !shown.contains(secret),
                        "config check would print the secret"
                    );
                }
            }
            // The settings the service runs with are derived without a panic either.
            let _ = config.recovery_settings();
        }
        Err(error) => {
            let text = error.to_string();
            if !keys_hold_marker {
                assert!(
                    !text.contains(MARKER),
                    "a configuration error shows a value: {text}"
                );
            }
        }
    }
});
