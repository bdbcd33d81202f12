//! Enumeration timing: do `StartRecovery`, `SendVerificationCode`, `VerifyCode` (a wrong code)
//! and `VerifyPassword` take as long for a login that does not exist as for one that does?
//! (target: the medians within 5 %.)
//!
//! Starts the real server in-process (SQLite in a temporary directory, in-process store,
//! captcha off, rate limits off, the default OWASP argon2id parameters), then for N interleaved
//! iterations calls each RPC once for a known and once for an unknown login over gRPC,
//! alternating which goes first so slow drift (caches, database growth, the delivery worker)
//! falls on both sides equally. Prints median and p90 latency per RPC and side, and the ratios.
//!
//! ```text
//! cargo bench --bench enumeration              # 400 iterations
//! ENUMERATION_ITERATIONS=500 cargo bench --bench enumeration
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use recovery_service::config::Config;
use recovery_service::notify::CapturingNotifier;
use recovery_service::proto;
use recovery_service::proto::account_service_client::AccountServiceClient;
use recovery_service::proto::recovery_service_client::RecoveryServiceClient;
use recovery_service::server::{App, Overrides};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tonic::transport::Channel;

const WARM_UP: usize = 20;
const KNOWN_PASSWORD: &str = "Old-Granite-Harbor-73!";
/// What an attacker probing logins sends: a plausible but wrong password.
const GUESS: &str = "Summer-Holiday-2024!";
/// Six digits no code drawn in this run is (the chance is 10^-6 per flow; the run checks).
const WRONG_CODE: &str = "000000";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Known,
    Unknown,
}

#[derive(Default)]
struct Samples {
    known: Vec<Duration>,
    unknown: Vec<Duration>,
}

impl Samples {
    fn push(&mut self, side: Side, took: Duration) {
        match side {
            Side::Known => self.known.push(took),
            Side::Unknown => self.unknown.push(took),
        }
    }
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Clients {
    recovery: RecoveryServiceClient<Channel>,
    accounts: AccountServiceClient<Channel>,
}

impl Clients {
    async fn start(&mut self, login: &str) -> anyhow::Result<(Duration, String)> {
        let request = proto::StartRecoveryRequest {
            login_id: login.to_owned(),
            captcha_id: String::new(),
            captcha_answer: String::new(),
            locale: "en".to_owned(),
            pow_solution: String::new(),
            device_token: String::new(),
        };
        let began = Instant::now();
        let response = self.recovery.start_recovery(request).await?;
        let took = began.elapsed();
        let flow = response
            .into_inner()
            .flow
            .context("StartRecovery answered without a flow")?;
        Ok((took, flow.flow_id))
    }

    async fn send(&mut self, flow_id: &str) -> anyhow::Result<Duration> {
        let request = proto::SendVerificationCodeRequest {
            flow_id: flow_id.to_owned(),
            channel: proto::Channel::Email.into(),
        };
        let began = Instant::now();
        self.recovery.send_verification_code(request).await?;
        Ok(began.elapsed())
    }

    /// A wrong code: what someone guessing, or probing whether the flow's login exists, sends.
    async fn verify_wrong_code(&mut self, flow_id: &str) -> anyhow::Result<Duration> {
        let request = proto::VerifyCodeRequest {
            flow_id: flow_id.to_owned(),
            code: WRONG_CODE.to_owned(),
        };
        let began = Instant::now();
        let answer = self.recovery.verify_code(request).await;
        let took = began.elapsed();
        let status = match answer {
            Ok(_) => anyhow::bail!("a wrong code was accepted"),
            Err(status) => status,
        };
        anyhow::ensure!(
            status.code() == tonic::Code::InvalidArgument,
            "a wrong code must be CODE_INVALID on both sides, got {:?}",
            status.code()
        );
        Ok(took)
    }

    async fn verify_password(&mut self, login: &str) -> anyhow::Result<Duration> {
        let request = proto::VerifyPasswordRequest {
            login_id: login.to_owned(),
            password: GUESS.to_owned(),
        };
        let began = Instant::now();
        let valid = self
            .accounts
            .verify_password(request)
            .await?
            .into_inner()
            .valid;
        let took = began.elapsed();
        anyhow::ensure!(!valid, "the guess must be wrong for both sides");
        Ok(took)
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and then a short smoke run (does it still work?) is all that is wanted.
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let iterations: usize = std::env::var("ENUMERATION_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benchmarking { 400 } else { 10 });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(iterations))
}

async fn run(iterations: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("enumeration-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let config = Config {
        database_url: format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
        secret: Some(SecretString::from(
            "enumeration-bench-secret-0123456789-0123456789",
        )),
        captcha: recovery_service::config::CaptchaConfig {
            mode: recovery_service::recovery::handle::CaptchaMode::Off,
            ..Default::default()
        },
        rate_limits: recovery_service::recovery::limits::RateLimits {
            enabled: false,
            ..Default::default()
        },
        ..Config::default()
    };
    let hashing = config.hashing.clone();
    let overrides = Overrides {
        // Captures instead of printing: the delivery worker still renders and "sends" every
        // message for the known login, as it would with SMTP.
        notifier: Some(Arc::new(CapturingNotifier::new())),
        ..Overrides::default()
    };
    let app = App::build(config, overrides).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(address)?.connect().await?;
    let mut clients = Clients {
        recovery: RecoveryServiceClient::new(channel.clone()),
        accounts: AccountServiceClient::new(channel),
    };

    let known = "known.person@example.com";
    let unknown = "nobody.here@example.com";
    clients
        .accounts
        .create_account(proto::CreateAccountRequest {
            login_id: known.to_owned(),
            email: String::new(),
            phone: String::new(),
            password: KNOWN_PASSWORD.to_owned(),
        })
        .await?;

    println!(
        "enumeration timing: {iterations} iterations (+{WARM_UP} warm-up), argon2id m={} KiB t={} p={}, \
         SQLite + in-process store, captcha and rate limits off",
        hashing.m_cost_kib, hashing.t_cost, hashing.p_cost
    );
    let mut start = Samples::default();
    let mut send = Samples::default();
    let mut wrong_code = Samples::default();
    let mut verify = Samples::default();
    for i in 0..WARM_UP + iterations {
        let order = if i % 2 == 0 {
            [Side::Known, Side::Unknown]
        } else {
            [Side::Unknown, Side::Known]
        };
        let login = |side: Side| if side == Side::Known { known } else { unknown };
        let record = i >= WARM_UP;
        let mut flows = [String::new(), String::new()];
        for side in order {
            let (took, flow_id) = clients.start(login(side)).await?;
            flows[side as usize] = flow_id;
            if record {
                start.push(side, took);
            }
        }
        for side in order {
            let took = clients.send(&flows[side as usize]).await?;
            if record {
                send.push(side, took);
            }
        }
        for side in order {
            let took = clients.verify_wrong_code(&flows[side as usize]).await?;
            if record {
                wrong_code.push(side, took);
            }
        }
        for side in order {
            let took = clients.verify_password(login(side)).await?;
            if record {
                verify.push(side, took);
            }
        }
    }

    println!();
    println!(
        "{:<22} {:>12} {:>12} {:>8} {:>12} {:>12} {:>8}",
        "RPC", "known p50", "unknown p50", "ratio", "known p90", "unknown p90", "ratio"
    );
    let mut worst: f64 = 1.0;
    for (name, samples) in [
        ("StartRecovery", &start),
        ("SendVerificationCode", &send),
        ("VerifyCode (wrong)", &wrong_code),
        ("VerifyPassword", &verify),
    ] {
        let (k50, u50) = (
            percentile(&samples.known, 0.5),
            percentile(&samples.unknown, 0.5),
        );
        let (k90, u90) = (
            percentile(&samples.known, 0.9),
            percentile(&samples.unknown, 0.9),
        );
        let ratio50 = micros(u50) / micros(k50);
        let ratio90 = micros(u90) / micros(k90);
        worst = worst.max(ratio50).max(1.0 / ratio50);
        println!(
            "{name:<22} {:>10.0}µs {:>10.0}µs {:>8.3} {:>10.0}µs {:>10.0}µs {:>8.3}",
            micros(k50),
            micros(u50),
            ratio50,
            micros(k90),
            micros(u90),
            ratio90
        );
    }
    println!();
    if iterations < 100 {
        println!(
            "smoke run of {iterations} iterations: too few for a verdict; `cargo bench --bench enumeration` measures"
        );
    }
    let verdict = if worst <= 1.05 { "within" } else { "OUTSIDE" };
    println!(
        "largest median difference: {:.1} % ({verdict} the 5 % target); ratio = unknown / known",
        (worst - 1.0) * 100.0
    );

    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
