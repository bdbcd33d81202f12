//! Strict configuration through the real binary: a typo in a key or a `RECOVERY_*` variable, or a
//! value out of range, stops `serve` and `config check` with a message naming it;
//! `config check --connect` opens every dependency and reports each one.

use std::process::{Command, Output};

use crate::common::TempDir;
use crate::common::smtp_sink::{Sink, SinkOptions, free_port};

fn command(dir: &TempDir) -> Command {
    crate::common::binary_command(dir, "check.db")
}

/// Runs `args` with `toml` as the config file.
fn with_file(dir: &TempDir, toml: &str, args: &[&str]) -> Output {
    let file = dir.0.join("recovery.toml");
    std::fs::write(&file, toml).unwrap();
    command(dir)
        .arg("--config")
        .arg(&file)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_misspelt_section_stops_the_start_and_names_the_closest_key() {
    let dir = TempDir::new();
    // `serve` must refuse before it binds anything, so the port does not matter.
    let output = with_file(&dir, "[rate_limit]\nenabled = false\n", &["serve"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("unknown key `rate_limit`")
            && message.contains("recovery.toml")
            && message.contains("did you mean `rate_limits`?"),
        "{message}"
    );
}

#[test]
fn a_misspelt_key_fails_config_check() {
    let dir = TempDir::new();
    let output = with_file(&dir, "[flow]\ncode_ttl_sec = 5\n", &["config", "check"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("unknown key `flow.code_ttl_sec`")
            && message.contains("did you mean `flow.code_ttl_secs`?"),
        "{message}"
    );
}

#[test]
fn a_misspelt_environment_variable_is_named_as_a_variable() {
    let dir = TempDir::new();
    let output = command(&dir)
        .args(["config", "check"])
        .env("RECOVERY_FLOW__MAX_ATTEMPT", "3")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("unknown environment variable `RECOVERY_FLOW__MAX_ATTEMPT`")
            && message.contains("did you mean `RECOVERY_FLOW__MAX_ATTEMPTS`?"),
        "{message}"
    );
}

#[test]
fn test_variables_kubernetes_service_links_and_recovery_config_are_not_configuration() {
    let dir = TempDir::new();
    let file = dir.0.join("recovery.toml");
    std::fs::write(&file, "[flow]\nmax_attempts = 3\n").unwrap();
    let output = command(&dir)
        .args(["config", "check"])
        .env("RECOVERY_CONFIG", &file)
        .env("RECOVERY_TEST_REDIS_URL", "redis://127.0.0.1:6379")
        .env("RECOVERY_TEST_STORE", "redis")
        // What Kubernetes injects into every pod for a Service named `recovery`.
        .env("RECOVERY_SERVICE_HOST", "10.96.0.12")
        .env("RECOVERY_SERVICE_PORT", "50051")
        .env("RECOVERY_PORT", "tcp://10.96.0.12:50051")
        .env("RECOVERY_PORT_50051_TCP_ADDR", "10.96.0.12")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("max_attempts = 3"));
}

#[test]
fn a_value_out_of_range_names_the_key_and_the_allowed_range() {
    let dir = TempDir::new();
    let output = with_file(&dir, "[flow]\nmax_attempts = 0\n", &["config", "check"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("`flow.max_attempts` is out of range: allowed 1..=20"),
        "{message}"
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let dir = TempDir::new();
    let output = with_file(
        &dir,
        "captcha_digit = 6\n[flow]\ncaptcha_digits = 20\ncode_ttl_secs = 0\n",
        &["config", "check"],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("3 problems"), "{message}");
    for expected in [
        "unknown key `captcha_digit`",
        "`flow.captcha_digits` is out of range: allowed 5..=8",
        "`flow.code_ttl_secs` is out of range",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing in {message}"
        );
    }
}

#[test]
fn the_admin_listener_may_not_take_the_grpc_port() {
    let dir = TempDir::new();
    let output = with_file(
        &dir,
        "listen = \"127.0.0.1:50051\"\n[admin]\nlisten = \"0.0.0.0:50051\"\n",
        &["config", "check"],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("`admin.listen`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn connect_reports_every_dependency_ok_when_all_answer() {
    // Run when Redis is wanted (`common::backend`); then a missing Redis fails the test.
    let Some(redis) = crate::common::backend::redis() else {
        return;
    };
    let dir = TempDir::new();
    let sink = Sink::start(SinkOptions::default());
    let output = command(&dir)
        .args(["config", "check", "--connect"])
        .env("RECOVERY_REDIS_URL", &redis)
        .env("RECOVERY_NOTIFIER", "smtp")
        .env("RECOVERY_SMTP_URL", sink.url("smtp://", ""))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", stderr(&output));
    for line in [
        "# database   ok",
        "# redis      ok",
        "# smtp       ok",
        "# webhook    skipped",
        "# tls        skipped",
    ] {
        assert!(stdout.contains(line), "{line} missing in\n{stdout}");
    }
}

#[test]
fn connect_fails_and_names_each_dependency_that_does_not_answer() {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("recovery.toml"),
        "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n\
         [redis]\nconnect_timeout_ms = 1000\n[smtp]\nconnect_timeout_ms = 1000\nsend_timeout_ms = 2000\n",
    )
    .unwrap();
    let file = dir.0.join("recovery.toml");
    let output = command(&dir)
        .arg("--config")
        .arg(&file)
        .args(["config", "check", "--connect"])
        .env(
            "RECOVERY_REDIS_URL",
            format!("redis://127.0.0.1:{}", free_port()),
        )
        .env("RECOVERY_NOTIFIER", "smtp")
        .env(
            "RECOVERY_SMTP_URL",
            format!("smtp://127.0.0.1:{}", free_port()),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    for line in [
        "# database   ok",
        "# redis      FAILED",
        "# smtp       FAILED",
        "# tls        FAILED",
    ] {
        assert!(stdout.contains(line), "{line} missing in\n{stdout}");
    }
    assert!(stdout.contains("/nonexistent/cert.pem"), "{stdout}");
    assert!(
        stderr(&output).contains("3 of 6 checks failed"),
        "{}",
        stderr(&output)
    );
}

/// An HTTP server on a free port that answers every request `status`, for the webhook probe.
fn http_answering(status: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n")
                && std::io::Read::read(&mut stream, &mut byte).unwrap_or(0) == 1
            {
                request.push(byte[0]);
            }
            let answer =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
        }
    });
    port
}

#[test]
fn connect_probes_every_webhook_endpoint_without_showing_its_path() {
    let dir = TempDir::new();
    let answering = http_answering("405 Method Not Allowed");
    let closed = free_port();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let output = with_file(
        &dir,
        &format!(
            "[[webhooks.endpoints]]\nname = \"audit-sink\"\n\
             url = \"http://127.0.0.1:{answering}/hooks/T0KEN-IN-PATH?sig=T0KEN-IN-QUERY\"\n\
             secret = \"{secret}\"\n\
             [[webhooks.endpoints]]\nname = \"gone\"\n\
             url = \"http://127.0.0.1:{closed}/hooks\"\nsecret = \"{secret}\"\ntimeout_ms = 2000\n"
        ),
        &["config", "check", "--connect"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("# webhook") && l.contains(name))
            .unwrap_or_else(|| panic!("no webhook line for {name} in\n{stdout}"))
            .to_owned()
    };
    let reached = line("audit-sink");
    assert!(
        reached.starts_with("# webhook    ok")
            && reached.contains(&format!("http://127.0.0.1:{answering}"))
            && reached.contains("HTTP 405 to HEAD"),
        "{reached}"
    );
    let refused = line("gone");
    assert!(
        refused.starts_with("# webhook    FAILED") && refused.contains("cannot connect"),
        "{refused}"
    );
    let checks = stdout.lines().filter(|l| l.starts_with("# ")).count();
    assert!(
        stderr(&output).contains(&format!("1 of {checks} checks failed")),
        "{}",
        stderr(&output)
    );
    // The check lines name the endpoint by its name and origin (the configuration printed
    // above them is the operator's own, redacted by `config show`'s rules).
    let probes: Vec<&str> = stdout.lines().filter(|l| l.starts_with("# ")).collect();
    assert!(
        !probes.iter().any(|l| l.contains("T0KEN")) && !stderr(&output).contains("T0KEN"),
        "a URL's path or query was shown:\n{probes:#?}"
    );
}

/// The problems of a file as `(key, kind)`: `unknown` for a key nothing reads, `range` for a
/// number outside its bounds.
type Findings = std::collections::BTreeSet<(String, &'static str)>;

fn findings_of_config_check(message: &str) -> Findings {
    let mut found = Findings::new();
    for line in message.lines() {
        let quoted = line.split('`').nth(1).unwrap_or_default().to_owned();
        if line.contains("unknown key `") {
            found.insert((quoted, "unknown"));
        } else if line.contains("is out of range") {
            found.insert((quoted, "range"));
        }
    }
    found
}

/// check-jsonschema's JSON report, read the same way: an unexpected property names the key in
/// its message, a bound names it in its path (`$.flow.max_attempts`).
fn findings_of_the_schema(report: &serde_json::Value) -> Findings {
    let mut found = Findings::new();
    for error in report["errors"].as_array().unwrap() {
        let message = error["message"].as_str().unwrap();
        let path = error["path"].as_str().unwrap().trim_start_matches('$');
        let path = path.trim_start_matches('.');
        if let Some(rest) = message.split("('").nth(1) {
            let key = rest.split('\'').next().unwrap();
            let full = if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            };
            found.insert((full, "unknown"));
        } else if message.contains("less than the minimum")
            || message.contains("greater than the maximum")
        {
            found.insert((path.to_owned(), "range"));
        } else {
            panic!("an error `config check` has no counterpart for: {message}");
        }
    }
    found
}

/// What an editor shows (the committed schema, as taplo and check-jsonschema read it) and what
/// the service says about one file are the same problems: a misspelt section, a misspelt key, a
/// value below its minimum and one above its maximum.
#[test]
fn the_schema_reports_a_typo_and_an_out_of_range_value_exactly_as_config_check_does() {
    let dir = TempDir::new();
    let toml = "[rate_limit]\nenabled = false\n\n[flow]\nmax_attempts = 0\ncode_ttl_sec = 60\n\n\
                [database]\nmax_connections = 5000\n";
    let output = with_file(&dir, toml, &["config", "check"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let service = findings_of_config_check(&stderr(&output));

    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.schema.json");
    let checked = Command::new("check-jsonschema")
        .args(["--schemafile", schema, "--output-format", "json"])
        .arg(dir.0.join("recovery.toml"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "check-jsonschema cannot run ({e}): scripts/test-services.sh installs it \
                 (python3 -m pip install check-jsonschema)"
            )
        });
    assert!(!checked.status.success(), "the schema accepted the file");
    let report: serde_json::Value = serde_json::from_slice(&checked.stdout)
        .unwrap_or_else(|e| panic!("check-jsonschema's report is not JSON ({e})"));
    let editor = findings_of_the_schema(&report);

    let expected: Findings = [
        ("rate_limit".to_owned(), "unknown"),
        ("flow.code_ttl_sec".to_owned(), "unknown"),
        ("flow.max_attempts".to_owned(), "range"),
        ("database.max_connections".to_owned(), "range"),
    ]
    .into_iter()
    .collect();
    assert_eq!(service, expected, "config check said:\n{}", stderr(&output));
    assert_eq!(editor, expected, "the schema said:\n{report:#}");
}

/// The annotated example in docs/ is a configuration the service accepts.
#[test]
fn the_example_configuration_in_the_docs_passes_config_check() {
    let dir = TempDir::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/recovery.example.toml");
    let output = command(&dir)
        .args(["--config", example, "config", "check"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

/// `config schema` prints the committed schema, and needs no valid configuration to do so.
#[test]
fn config_schema_prints_the_committed_schema_even_with_a_broken_configuration() {
    let dir = TempDir::new();
    let output = with_file(&dir, "[rate_limit]\n", &["config", "schema"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/config.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, committed);
    assert_eq!(
        printed["properties"]["flow"]["default"]["max_attempts"], 5,
        "defaults are in the schema"
    );
}

/// A secret-looking value the configuration errors must never show.
const CANARY: &str = "LeakCanary7f3a9c";

/// Runs `args` with `toml` as the file and `env` set, stopping the process after 30 s (a
/// configuration that unexpectedly starts the server must not hang the test).
fn run_bounded(dir: &TempDir, toml: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let file = dir.0.join("recovery.toml");
    std::fs::write(&file, toml).unwrap();
    let mut child = command(dir)
        .arg("--config")
        .arg(&file)
        .args(args)
        .env("RECOVERY_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `config check` and `serve` both refuse, name `expected`, and show the canary nowhere.
fn refused_without_the_value(toml: &str, env: &[(&str, &str)], expected: &[&str]) {
    for args in [&["config", "check"][..], &["serve"][..]] {
        let dir = TempDir::new();
        let output = run_bounded(&dir, toml, env, args);
        let (out, err) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(
            !output.status.success(),
            "{args:?} accepted {toml:?} {env:?}\n{err}"
        );
        assert!(
            !out.contains(CANARY) && !err.contains(CANARY),
            "{args:?} showed the value:\n{out}\n{err}"
        );
        for name in expected {
            assert!(err.contains(name), "{args:?}: {name} missing in\n{err}");
        }
    }
}

#[test]
fn an_environment_value_missing_its_bracket_names_the_variable_not_the_secret() {
    let endpoints =
        format!("[{{url = \"https://hooks.example.com/in\", secret = [\"whsec_{CANARY}\"]}}");
    refused_without_the_value(
        "",
        &[("RECOVERY_WEBHOOKS__ENDPOINTS", &endpoints)],
        &["RECOVERY_WEBHOOKS__ENDPOINTS", "wrong type", "missing `]`"],
    );
}

#[test]
fn an_unterminated_toml_string_names_the_file_and_line_not_the_secret() {
    refused_without_the_value(
        &format!("[flow]\nmax_attempts = 3\n\nsecret = \"{CANARY}\n"),
        &[],
        &["recovery.toml", "is not valid TOML", "line 4"],
    );
    refused_without_the_value(
        &format!("smtp_url = 'smtp://user:{CANARY}@mail.example.com\n"),
        &[],
        &["recovery.toml", "line 1"],
    );
}

#[test]
fn a_value_of_the_wrong_type_or_kind_names_the_key_not_the_value() {
    for (toml, env, key) in [
        (
            format!("[flow]\nmax_attempts = \"{CANARY}\"\n"),
            vec![],
            "`flow.max_attempts`",
        ),
        (format!("notifier = \"{CANARY}\"\n"), vec![], "`notifier`"),
        (format!("secret = [\"{CANARY}\"]\n"), vec![], "`secret`"),
        (
            String::new(),
            vec![("RECOVERY_LISTEN", format!("{CANARY}:50051"))],
            "RECOVERY_LISTEN",
        ),
        (
            String::new(),
            vec![(
                "RECOVERY_SERVER__TRUSTED_PROXIES",
                format!("[\"{CANARY}\"]"),
            )],
            "RECOVERY_SERVER__TRUSTED_PROXIES",
        ),
        (
            String::new(),
            vec![("RECOVERY_CAPTCHA", CANARY.to_owned())],
            "RECOVERY_CAPTCHA",
        ),
    ] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        refused_without_the_value(&toml, &env, &[key]);
    }
}

#[test]
fn a_value_out_of_range_or_malformed_names_the_key_not_the_value() {
    refused_without_the_value(
        "[flow]\nmax_attempts = 7123456789\n",
        &[],
        &["`flow.max_attempts`"],
    );
    refused_without_the_value(
        &format!(
            "[[webhooks.endpoints]]\nurl = \"{CANARY}:x\"\nsecret = [\"whsec_{CANARY}\"]\nevents = [\"{CANARY}!\"]\n"
        ),
        &[],
        &[
            "`webhooks.endpoints[0].url`",
            "`webhooks.endpoints[0]` `secret` #1",
            "`webhooks.endpoints[0].events[0]`",
        ],
    );
    refused_without_the_value(
        &format!("[account_api]\nallowed_client_identities = [\"{CANARY}\"]\n"),
        &[],
        &["`account_api.allowed_client_identities[0]`"],
    );
    let digits = "7123456789";
    let dir = TempDir::new();
    let output = run_bounded(
        &dir,
        "[flow]\nmax_attempts = 7123456789\n",
        &[],
        &["config", "check"],
    );
    assert!(!stderr(&output).contains(digits), "{}", stderr(&output));
}

#[test]
fn start_errors_name_the_setting_not_the_value() {
    // Past the loader: the notifier and the key ring refuse when `serve` builds them.
    let smtp_url = format!("{CANARY}://mail.example.com");
    let mail_from = format!("{CANARY} at example");
    for (env, expected) in [
        (
            vec![
                ("RECOVERY_NOTIFIER", "smtp"),
                ("RECOVERY_SMTP_URL", smtp_url.as_str()),
            ],
            "SMTP URL",
        ),
        (
            vec![
                ("RECOVERY_NOTIFIER", "smtp"),
                ("RECOVERY_SMTP_URL", "smtp://127.0.0.1:2525"),
                ("RECOVERY_MAIL_FROM", mail_from.as_str()),
            ],
            "mail_from",
        ),
        (vec![("RECOVERY_SECRET", CANARY)], "RECOVERY_SECRET"),
    ] {
        let dir = TempDir::new();
        let output = run_bounded(&dir, "", &env, &["serve"]);
        let err = stderr(&output);
        assert!(!output.status.success(), "{env:?} started:\n{err}");
        assert!(
            !err.contains(CANARY) && err.contains(expected),
            "{env:?}: {expected} missing or the value shown in\n{err}"
        );
    }
}
