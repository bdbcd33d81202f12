//! The model test: random sequences of calls by a few concurrent clients over a few logins,
//! run against the real server and checked, answer by answer, against a reference model of the
//! contract (`contract.rs`). See docs/development.md, "The model test".
//!
//! - `RECOVERY_MODEL_SECONDS` (default 60) and `RECOVERY_MODEL_CASES` (default 400) bound a run;
//!   `RECOVERY_MODEL_LONG=<minutes>` is the soak: as many cases as fit, longer sequences.
//! - A failure is shrunk to a minimal sequence, printed as a script and saved under
//!   `tests/suite/e2e/model/regressions/`; every saved script runs again in every later run.
//! - The backends are the suite's (`RECOVERY_TEST_STORE`, `RECOVERY_TEST_DB`).

mod contract;
mod harness;
mod script;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use recovery_service::config::Config;
use recovery_service::recovery::limits::RateLimit;

use crate::common::{self, TestApp};
use contract::{Settings, StoreClock, Window};

/// Counts small enough that a sequence of a few dozen steps meets each of them (a per-flow cap
/// below its per-account budget, so both are reachable); lifetimes and windows are the defaults,
/// which the clock jumps reach.
fn configure(config: &mut Config) {
    config.flow.max_attempts = 2;
    config.flow.max_sends = 2;
    let limits = &mut config.rate_limits;
    limits.per_login = RateLimit {
        limit: 5,
        window_secs: 3600,
    };
    limits.per_ip = RateLimit {
        limit: 20,
        window_secs: 600,
    };
    // `per_network` stays at its default, far above `per_ip`: each client has an IPv4 /24 of its
    // own (harness `fresh_address`, one `x-forwarded-for` entry, the one hop the test config
    // trusts), so the network limit never refuses before the per-IP one and the model need not
    // know it (e2e::boundary tests it).
    limits.verify_password_per_login = RateLimit {
        limit: 4,
        window_secs: 300,
    };
    limits.verify_code_per_account = RateLimit {
        limit: 3,
        window_secs: 24 * 3600,
    };
    limits.send_code_per_account = RateLimit {
        limit: 4,
        window_secs: 24 * 3600,
    };
    // One caller (loopback) for every case of a run: out of reach, and not modelled.
    limits.helpdesk_per_caller = RateLimit {
        limit: 1_000_000,
        window_secs: 3600,
    };
}

fn millis(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap() * 1000
}

fn window(rule: RateLimit) -> Window {
    Window {
        limit: rule.limit,
        window: millis(rule.window_secs),
    }
}

/// The model's numbers, read from the configuration the server runs with.
fn settings_of(config: &Config, store_clock: StoreClock) -> Settings {
    let flow = &config.flow;
    let limits = &config.rate_limits;
    Settings {
        flow_ttl: millis(flow.flow_ttl_secs),
        code_ttl: millis(flow.code_ttl_secs),
        token_ttl: millis(flow.token_ttl_secs),
        captcha_ttl: millis(flow.captcha_ttl_secs),
        max_attempts: flow.max_attempts,
        resend_cooldown: millis(flow.resend_cooldown_secs),
        max_sends: flow.max_sends,
        report_freeze: millis(flow.report_freeze_secs),
        report_code_ttl: millis(recovery_service::recovery::report::REPORT_CODE_TTL.as_secs()),
        history_depth: usize::try_from(config.password_policy.history_depth).unwrap(),
        per_login: window(limits.per_login),
        per_ip: window(limits.per_ip),
        verify_password_per_login: window(limits.verify_password_per_login),
        verify_code_per_account: window(limits.verify_code_per_account),
        send_code_per_account: window(limits.send_code_per_account),
        store_clock,
    }
}

/// The server every case of a run talks to (cases never share a login or a client address),
/// and the model's settings for it.
struct Bench {
    runtime: tokio::runtime::Runtime,
    app: TestApp,
    settings: Settings,
    backend: String,
}

impl Bench {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = std::env::var("RECOVERY_TEST_STORE").unwrap_or_else(|_| "memory".into());
        let database = std::env::var("RECOVERY_TEST_DB").unwrap_or_else(|_| "sqlite".into());
        let clock = recovery_service::clock::ManualClock::new(chrono::Utc::now());
        // The in-process store follows the test's clock, so jumps end windows and freezes
        // there too; Redis keeps its own time.
        let (overrides, store_clock) = if store == "memory" {
            let store = recovery_service::store::MemoryStore::with_clock(Arc::new(clock.clone()));
            (
                recovery_service::server::Overrides {
                    store: Some(Arc::new(store)),
                    ..Default::default()
                },
                StoreClock::Service,
            )
        } else {
            (Default::default(), StoreClock::Own)
        };
        let mut config = None;
        let app = runtime.block_on(common::spawn_app_on_clock(
            clock,
            |c| {
                configure(c);
                config = Some(c.clone());
            },
            overrides,
        ));
        let settings = settings_of(&config.unwrap(), store_clock);
        Self {
            runtime,
            app,
            settings,
            backend: format!("{store}+{database}"),
        }
    }

    fn run(&self, steps: &[script::Step]) -> Result<(), String> {
        self.runtime.block_on(async {
            let mut case = harness::Case::start(&self.app, &self.settings).await;
            for (number, step) in steps.iter().enumerate() {
                case.step(number, step).await?;
            }
            case.finish().await
        })
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/suite/e2e/model/regressions")
}

/// Saves a shrunk failing case where every later run replays it.
fn save(backend: &str, why: &str, steps: &[script::Step]) -> PathBuf {
    let dir = regressions_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = dir.join(format!("{stamp}-{}.script", backend.replace('+', "-")));
    let summary: String = why
        .lines()
        .filter(|line| line.contains("server") || line.contains("model") || line.contains("no "))
        .take(12)
        .map(|line| format!("#   {line}\n"))
        .collect();
    let text = format!(
        "# Found by the model test on {backend}; replayed by every run of `cargo test --test suite e2e::model`.\n\
         # What went wrong when it was found:\n{summary}#\n{}",
        script::render(steps)
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn random_clients_cannot_break_the_recovery_contract() {
    let long = env_number("RECOVERY_MODEL_LONG");
    let seconds = long.map_or_else(
        || env_number("RECOVERY_MODEL_SECONDS").unwrap_or(60),
        |m| m * 60,
    );
    let cases = env_number("RECOVERY_MODEL_CASES").unwrap_or(if long.is_some() {
        u64::from(u32::MAX)
    } else {
        400
    });
    let steps = if long.is_some() { 1..=100 } else { 1..=50 };
    let bench = Bench::start();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let ran = std::cell::Cell::new(0u64);
    let failing = std::cell::Cell::new(false);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        max_shrink_iters: 400,
        max_shrink_time: 120_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&script::case(steps), |steps| {
        // Past the time budget new cases pass untried; a shrink of a failure always runs.
        if !failing.get() && Instant::now() > deadline {
            return Ok(());
        }
        ran.set(ran.get() + 1);
        bench.run(&steps).map_err(|why| {
            if !failing.replace(true) {
                eprintln!(
                    "model test on {}: case {} disagrees after {:.1} s; shrinking it",
                    bench.backend,
                    ran.get(),
                    started.elapsed().as_secs_f64()
                );
            }
            TestCaseError::fail(why)
        })
    });
    eprintln!(
        "model test on {}: {} cases in {:.1} s; answers seen:\n{}",
        bench.backend,
        ran.get(),
        started.elapsed().as_secs_f64(),
        harness::tally_report()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, steps)) => {
            let saved = save(&bench.backend, why.message(), &steps);
            panic!(
                "the server and the model disagree. The minimal script ({} steps, saved as {}), \
                 each step with the server's answers:\n{}",
                steps.len(),
                saved.display(),
                why.message()
            );
        }
        Err(TestError::Abort(why)) => panic!("the model test gave up: {why}"),
    }
}

#[test]
fn every_saved_model_script_still_passes() {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == "script"))
                .collect()
        })
        .unwrap_or_default();
    scripts.sort();
    let bench = Bench::start();
    for path in scripts {
        let steps = script::parse(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(why) = bench.run(&steps) {
            panic!(
                "{} fails again on {}:\n{why}",
                path.display(),
                bench.backend
            );
        }
    }
}
