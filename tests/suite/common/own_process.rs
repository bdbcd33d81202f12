//! Tests that need the process to themselves: they install a process-wide tracing subscriber or
//! OpenTelemetry provider, which would see (and be changed by) every other test of this binary.
//! Each runs again, alone, in a new process of the same test binary.

use std::process::Command;

const VARIABLE: &str = "RECOVERY_TEST_ALONE";

/// Whether the calling test runs its body here. In the test harness's process it runs the test
/// (`module` is its `module_path!()`, `test` its name) alone in a new process of this binary,
/// fails if that fails, and answers `false`; in that new process it answers `true`.
pub fn alone(module: &str, test: &str) -> bool {
    // Test names are module paths without the crate's name.
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    let name = format!("{module}::{test}");
    if std::env::var(VARIABLE).is_ok_and(|running| running == name) {
        return true;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(VARIABLE, &name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{name}, alone:\n{report}");
    // A misspelt name would run nothing and pass.
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} did not run alone:\n{report}"
    );
    false
}
