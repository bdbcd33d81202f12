//! The configuration loader (`Config::load`): a TOML file and `RECOVERY_*` variables, over the
//! defaults, with the strict unknown-key check and the range checks. Whatever an operator (or a
//! template gone wrong) writes, it answers a `Config` or a `ConfigError`, never a panic, and the
//! printed configuration never shows the secret.
//!
//! Input: the TOML text, then a NUL byte, then `NAME=value` lines (each name gets the
//! `RECOVERY_` prefix).
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
    let env = String::from_utf8_lossy(env);
    for line in env.lines().take(8) {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
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
    if out.write_all(toml).is_err() {
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
            let _ = error.to_string();
        }
    }
});
