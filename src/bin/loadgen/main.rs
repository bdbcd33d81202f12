//! `loadgen`: a load generator for recovery-service, over the crate's generated tonic clients.
//!
//!     loadgen run --addr http://127.0.0.1:50051 --scenario get-recovery-flow --in-flight 64 --duration 5
//!     loadgen run ... --scenario recovery --requests 100 --maildrop /tmp/mail   # whole recoveries
//!     loadgen run ... --scenario get-recovery-flow --flood create-captcha        # latency under a flood
//!     loadgen run ... --rate 200 --duration 3600                                 # steady (soak) mode
//!     loadgen argon2 --seconds 5 --permits 4      # raw argon2id hashes/s, the service's parameters
//!     loadgen wait-serving --addr ... --since-unix-ns N   # start-to-SERVING time
//!
//! Each run prints one line for people and, with `--json FILE` (`-` for stdout), one JSON object
//! per line for scripts (see `runner::Summary`). Exit status 1 when any answer was wrong or an
//! error, unless `--allow-errors`. It lives in the service's package so it always speaks the
//! current protocol, as its own binary so none of it ships in the service.

mod cpu;
mod mail;
mod runner;
mod scenario;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use recovery_service::accounts::{HashSettings, PasswordHasher};
use secrecy::SecretString;

use crate::runner::Load;
use crate::scenario::{Clients, Scenario, Setup};

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for recovery-service (gRPC)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario (optionally beside a flood of another).
    Run(RunArgs),
    /// Raw argon2id hashes per second with the service's hasher, parameters and permits.
    Argon2(Argon2Args),
    /// Wait until Health/Check says SERVING; report the time since `--since-unix-ns`.
    WaitServing(WaitArgs),
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Requests in flight in total (spread over `--connections`).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// HTTP/2 connections (at most `--in-flight`).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Run this many seconds (after `--warmup`).
    #[arg(long, conflicts_with = "requests")]
    duration: Option<f64>,
    /// Run this many requests (default 100 when no duration is given).
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of unmeasured warm-up before a timed run.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Steady mode: at most this many requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Requests per prepared flow/account/token (0: any number); default per scenario, matching
    /// the server's defaults (e.g. 4 wrong codes per flow, 1 send per cooldown).
    #[arg(long)]
    reuse: Option<u64>,
    /// Items to prepare for a timed run of a scenario whose items are used up.
    #[arg(long, default_value_t = 1000)]
    pool: usize,
    /// The captcha answer of a server in known-answer test mode; unset: the server runs with
    /// the captcha off.
    #[arg(long)]
    captcha_answer: Option<String>,
    /// The SMTP sink's maildrop directory (`tests/support/smtp_sink.py --dir`), for the
    /// scenarios that need a real code.
    #[arg(long)]
    maildrop: Option<PathBuf>,
    #[arg(long, default_value_t = 30.0)]
    mail_timeout: f64,
    /// Flood this scenario while the main one is measured.
    #[arg(long, value_enum)]
    flood: Option<Scenario>,
    #[arg(long, default_value_t = 64)]
    flood_in_flight: usize,
    /// Append one JSON line per run to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// A label copied into the JSON line (e.g. the backend).
    #[arg(long)]
    label: Option<String>,
    /// Exit 0 even when answers were wrong or errors.
    #[arg(long)]
    allow_errors: bool,
    /// `name=pid[,pid...]` (repeatable): report the CPU seconds these processes (and this load
    /// generator) spent during the measured part of the run, read from `/proc/<pid>/stat`.
    #[arg(long, value_parser = cpu::parse_group)]
    cpu_pid: Vec<cpu::Group>,
}

#[derive(Args)]
struct Argon2Args {
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Hashes at once (the service's `hashing.max_in_flight`).
    #[arg(long, default_value_t = HashSettings::default().max_in_flight)]
    permits: usize,
    /// Callers competing for the permits.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    #[arg(long, default_value_t = HashSettings::default().m_cost_kib)]
    m_cost_kib: u32,
    #[arg(long, default_value_t = HashSettings::default().t_cost)]
    t_cost: u32,
    #[arg(long, default_value_t = HashSettings::default().p_cost)]
    p_cost: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    label: Option<String>,
}

#[derive(Args)]
struct WaitArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// When the server was started (`date +%s%N`); default: now.
    #[arg(long)]
    since_unix_ns: Option<u128>,
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    label: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Argon2(args) => argon2(args).await,
        Command::WaitServing(args) => wait_serving(args).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn emit(
    json: Option<&PathBuf>,
    label: Option<&str>,
    value: serde_json::Value,
) -> anyhow::Result<()> {
    let Some(path) = json else {
        return Ok(());
    };
    let mut value = value;
    if let (Some(label), Some(object)) = (label, value.as_object_mut()) {
        object.insert("label".into(), label.into());
    }
    let line = format!("{value}\n");
    if path.as_os_str() == "-" {
        std::io::stdout().write_all(line.as_bytes())?;
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("--json {path:?}"))?
            .write_all(line.as_bytes())?;
    }
    Ok(())
}

fn human(json: Option<&PathBuf>, line: &str) {
    // Keep standard output clean when it carries the JSON.
    if json.is_some_and(|p| p.as_os_str() == "-") {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

async fn connect(addr: &str, in_flight: usize, connections: usize) -> anyhow::Result<Vec<Clients>> {
    let count = connections.clamp(1, in_flight.max(1));
    let mut all = Vec::with_capacity(count);
    for _ in 0..count {
        all.push(Clients::connect(addr).await?);
    }
    Ok(all)
}

fn load_for(scenario: Scenario, args: &RunArgs, in_flight: usize, flood: bool) -> Load {
    let connections = args.connections.clamp(1, in_flight.max(1));
    let (duration, requests) = match (flood, args.duration, args.requests) {
        (true, _, _) => (None, None),
        (false, Some(seconds), _) => (Some(Duration::from_secs_f64(seconds)), None),
        (false, None, requests) => (None, Some(requests.unwrap_or(100))),
    };
    Load {
        connections,
        streams: in_flight.max(1).div_ceil(connections),
        duration,
        requests,
        rate: if flood { None } else { args.rate },
        warmup: Duration::from_secs_f64(args.warmup),
        reuse: if flood {
            scenario.default_reuse()
        } else {
            args.reuse.unwrap_or(scenario.default_reuse())
        },
    }
}

/// How many items a run needs prepared.
fn pool_size(scenario: Scenario, load: &Load, pool: usize) -> usize {
    if !scenario.needs_items() {
        return 0;
    }
    match (load.reuse, load.requests) {
        (0, _) => 64,
        (reuse, Some(requests)) => usize::try_from(requests.div_ceil(reuse)).unwrap_or(usize::MAX),
        (_, None) => pool,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let maildrop = match &args.maildrop {
        Some(dir) => {
            mail::check_dir(dir)?;
            Some(mail::Maildrop::watch(dir.clone())?)
        }
        None => None,
    };
    let setup = Arc::new(Setup::new(
        args.captcha_answer.clone(),
        maildrop,
        Duration::from_secs_f64(args.mail_timeout),
    ));
    let load = load_for(args.scenario, &args, args.in_flight, false);
    let clients = connect(&args.addr, args.in_flight, args.connections).await?;
    let prepare_started = Instant::now();
    let items = scenario::prepare(
        args.scenario,
        &clients,
        &setup,
        pool_size(args.scenario, &load, args.pool),
        64,
    )
    .await
    .with_context(|| format!("preparing {}", args.scenario.name()))?;

    let flood = match args.flood {
        Some(flood) => {
            let flood_load = load_for(flood, &args, args.flood_in_flight, true);
            let flood_clients = connect(&args.addr, args.flood_in_flight, args.connections).await?;
            let flood_items = scenario::prepare(
                flood,
                &flood_clients,
                &setup,
                pool_size(flood, &flood_load, args.pool),
                64,
            )
            .await
            .with_context(|| format!("preparing the flood ({})", flood.name()))?;
            let stop = Arc::new(AtomicBool::new(false));
            let handle = tokio::spawn(runner::run(
                flood,
                flood_clients,
                setup.clone(),
                flood_items,
                flood_load,
                stop.clone(),
            ));
            // Let the flood reach its steady state before the measured run starts.
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some((stop, handle))
        }
        None => None,
    };
    let prepared_s = prepare_started.elapsed().as_secs_f64();

    let cpu_before = cpu::sample(&args.cpu_pid);
    let mut summary = runner::run(
        args.scenario,
        clients,
        setup,
        items,
        load,
        Arc::new(AtomicBool::new(false)),
    )
    .await?;
    let cpu_seconds = cpu::delta(&cpu_before, &cpu::sample(&args.cpu_pid));
    if let Some((stop, handle)) = flood {
        stop.store(true, Ordering::Relaxed);
        summary.flood = Some(Box::new(handle.await??));
    }
    human(args.json.as_ref(), &summary.human());
    let mut value = serde_json::to_value(&summary)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("prepare_s".into(), prepared_s.into());
        if !args.cpu_pid.is_empty() {
            object.insert("cpu_s".into(), serde_json::to_value(&cpu_seconds)?);
        }
        if args.scenario == Scenario::Recovery {
            let steps: serde_json::Map<String, serde_json::Value> = scenario::recovery_step_means()
                .into_iter()
                .map(|(name, ms)| (name.to_owned(), ms.into()))
                .collect();
            object.insert("steps_mean_ms".into(), steps.into());
        }
    }
    emit(args.json.as_ref(), args.label.as_deref(), value)?;
    let failed = summary.failed() + summary.flood.as_ref().map_or(0, |f| f.failed());
    Ok(failed == 0 || args.allow_errors)
}

async fn argon2(args: Argon2Args) -> anyhow::Result<bool> {
    let settings = HashSettings {
        m_cost_kib: args.m_cost_kib,
        t_cost: args.t_cost,
        p_cost: args.p_cost,
        max_in_flight: args.permits,
        // Callers wait as long as it takes: this measures throughput, not shedding.
        queue_timeout_ms: 3_600_000,
    };
    let hasher = tokio::task::spawn_blocking(move || PasswordHasher::new(&settings))
        .await?
        .context("argon2 parameters")?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.in_flight.max(1) {
        let (hasher, done) = (hasher.clone(), done.clone());
        tasks.spawn(async move {
            let password = SecretString::from(scenario::OLD_PASSWORD);
            while Instant::now() < deadline {
                hasher.hash(&password).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hashes = done.load(Ordering::Relaxed);
    let per_s = hashes as f64 / elapsed;
    human(
        args.json.as_ref(),
        &format!(
            "argon2id m={} KiB t={} p={}, {} permits: {hashes} hashes in {elapsed:.2} s = {per_s:.1}/s",
            args.m_cost_kib, args.t_cost, args.p_cost, args.permits
        ),
    );
    emit(
        args.json.as_ref(),
        args.label.as_deref(),
        serde_json::json!({
            "scenario": "argon2",
            "m_cost_kib": args.m_cost_kib,
            "t_cost": args.t_cost,
            "p_cost": args.p_cost,
            "permits": args.permits,
            "hashes": hashes,
            "elapsed_s": elapsed,
            "rate": per_s,
        }),
    )?;
    Ok(true)
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn wait_serving(args: WaitArgs) -> anyhow::Result<bool> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let since = args.since_unix_ns.unwrap_or_else(unix_ns);
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    loop {
        if let Ok(mut clients) = Clients::connect(&args.addr).await {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(answer) = clients.health.check(request).await
                && answer.get_ref().status == ServingStatus::Serving as i32
            {
                break;
            }
        }
        if Instant::now() >= deadline {
            bail!("{} not SERVING within {} s", args.addr, args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ms = unix_ns().saturating_sub(since) as f64 / 1e6;
    human(args.json.as_ref(), &format!("start to SERVING: {ms:.1} ms"));
    emit(
        args.json.as_ref(),
        args.label.as_deref(),
        serde_json::json!({ "scenario": "start-to-serving", "ms": ms }),
    )?;
    Ok(true)
}
