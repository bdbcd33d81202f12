//! Soak under faults: two replicas of the service behind client-side round robin, on
//! Redis Sentinel + PostgreSQL (behind a fault-injecting TCP proxy) + a real SMTP sink, running
//! whole recoveries at a steady rate while a fault schedule runs; invariants checked at the end
//! and a Markdown report written, and the run as a time series for `scripts/plots.py soak`
//! (`series.rs`). Run through `scripts/soak.sh` (which builds the service,
//! starts the Sentinel set-up and passes its URL); see `benches/SOAK.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod infra;
mod proxy;
mod scenario;
mod series;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::task::JoinSet;

use infra::{Postgres, Replica, Sentinel, SmtpSink};
use scenario::{Account, Load, Mailboxes, Outcome, Recovery, ResetEnd};

#[derive(Parser)]
struct Args {
    /// Length of the loaded run (the faults repeat every cycle; see `benches/SOAK.md`).
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// Whole recoveries started per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// The service binary.
    #[arg(long)]
    bin: PathBuf,
    /// `redis+sentinel://…` of the set-up `scripts/redis-sentinel.sh` runs (the script's env
    /// vars must name the same one).
    #[arg(long)]
    sentinel_url: String,
    /// Scratch directory (logs, PostgreSQL data, mail).
    #[arg(long)]
    work: PathBuf,
    /// Where to write the Markdown report.
    #[arg(long)]
    report: PathBuf,
    /// Where to write the run's time series (JSON lines, see `series.rs`); none if absent.
    #[arg(long)]
    series: Option<PathBuf>,
    #[arg(long, default_value_t = 150)]
    accounts: usize,
}

/// Seconds after the start: the load warms up, then the schedule runs in cycles.
/// Long enough for both replicas to reach their working set; the warm-up also runs a burst of
/// concurrent logins so the hashing buffers (pooled, up to `max_in_flight`) are all allocated
/// before the baseline is read.
const WARM_UP: f64 = 30.0;
const CYCLE: f64 = 150.0;
/// After a fault ends, errors still count towards it for this long.
const SETTLE: f64 = 30.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Probe {
    /// First successful call of any kind.
    AnyCall,
    /// First StartRecovery or ResetPassword answered OK (both need the database).
    Database,
    /// First mail stored by the sink.
    Mail,
    /// First call answered OK by this replica.
    Replica(usize),
}

struct Fault {
    /// Short name for the pictures.
    label: &'static str,
    name: String,
    start: f64,
    end: f64,
    probe: Probe,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let secret = format!("soak-secret-{}", uuid::Uuid::new_v4().simple());

    eprintln!("soak: starting PostgreSQL, the proxy, the SMTP sink");
    let mut postgres = Postgres::start(&work)?;
    let proxy = proxy::Proxy::start(postgres.port).await?;
    let smtp = SmtpSink::start(&work)?;
    let sentinel = Sentinel {
        url: args.sentinel_url.clone(),
    };
    sentinel.heal()?;

    let env = vec![
        (
            "RECOVERY_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port),
        ),
        ("RECOVERY_REDIS_URL", sentinel.url.clone()),
        (
            "RECOVERY_REDIS__KEY_PREFIX",
            format!("soak:{}:", uuid::Uuid::new_v4().simple()),
        ),
        ("RECOVERY_NOTIFIER", "smtp".into()),
        (
            "RECOVERY_SMTP_URL",
            format!("smtp://127.0.0.1:{}", smtp.port),
        ),
        ("RECOVERY_MAIL_FROM", "soak@example.com".into()),
        ("RECOVERY_CAPTCHA", "off".into()),
        ("RECOVERY_SECRET", secret),
        // The soak measures faults, not the limits: one client address sends everything.
        ("RECOVERY_RATE_LIMITS__ENABLED", "false".into()),
        ("RECOVERY_DELIVERY__POLL_INTERVAL_MS", "200".into()),
        ("RECOVERY_DELIVERY__MAX_BACKOFF_MS", "5000".into()),
        ("RECOVERY_DATABASE__ACQUIRE_TIMEOUT_MS", "2000".into()),
        ("RECOVERY_DATABASE__CONNECT_TIMEOUT_MS", "2000".into()),
        ("RECOVERY_REDIS__COMMAND_TIMEOUT_MS", "1000".into()),
        ("RECOVERY_REDIS__CONNECT_TIMEOUT_MS", "1000".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect::<Vec<_>>();
    let mut replicas = vec![
        Replica::new(0, &args.bin, &work, env.clone())?,
        Replica::new(1, &args.bin, &work, env)?,
    ];
    for replica in &mut replicas {
        eprintln!("soak: starting replica {}", replica.index);
        replica.start()?;
    }

    let mailboxes = Arc::new(Mutex::new(Mailboxes::default()));
    let load = Arc::new(Load::new(
        &replicas.iter().map(|r| r.port).collect::<Vec<_>>(),
        mailboxes.clone(),
    )?);
    let smtp = Arc::new(Mutex::new(smtp));
    let replicas = Arc::new(Mutex::new(replicas));

    // The mailbox reader: the sink's files, every 100 ms.
    let reader = {
        let (smtp, mailboxes, load) = (smtp.clone(), mailboxes.clone(), load.clone());
        tokio::spawn(async move {
            loop {
                let raw = smtp.lock().unwrap().messages();
                mailboxes.lock().unwrap().absorb(raw, load.now());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    eprintln!("soak: creating {} accounts", args.accounts);
    let mut accounts = Vec::new();
    let mut initial_passwords = Vec::new();
    for i in 0..args.accounts {
        let login = format!(
            "soak{i}-{}@example.com",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let password = scenario::new_password();
        let id = load.create_account(&login, &password).await?;
        accounts.push(Account { login, id });
        initial_passwords.push(password);
    }
    let accounts = Arc::new(accounts);
    let run_for = args.minutes * 60.0;
    // The clock of the report starts with the load.
    let load_start = load.now();
    let at = move |seconds: f64| load_start + seconds;
    let load_average_start = series::load_average();
    let sampler = {
        let load = load.clone();
        let pids = replicas.lock().unwrap().iter().map(Replica::pid).collect();
        series::RssSampler::start(pids, move || load.now() - load_start)
    };

    // The load: one recovery every 1/rate s, each on an account no other recovery holds.
    let busy = Arc::new(Mutex::new(vec![false; accounts.len()]));
    let results = Arc::new(Mutex::new(Vec::<Recovery>::new()));
    let skipped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let generator = {
        let (load, accounts, busy, results, skipped) = (
            load.clone(),
            accounts.clone(),
            busy.clone(),
            results.clone(),
            skipped.clone(),
        );
        let rate = args.rate;
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = 0usize;
            while load.now() < at(run_for) {
                ticker.tick().await;
                let picked = {
                    let mut busy = busy.lock().unwrap();
                    let n = busy.len();
                    (0..n)
                        .map(|k| (next + k) % n)
                        .find(|&i| !busy[i])
                        .inspect(|&i| {
                            busy[i] = true;
                        })
                };
                let Some(index) = picked else {
                    skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                };
                next = index + 1;
                let (load, accounts, busy, results) = (
                    load.clone(),
                    accounts.clone(),
                    busy.clone(),
                    results.clone(),
                );
                tasks.spawn(async move {
                    let recovery = load.run_recovery(index, &accounts[index]).await;
                    results.lock().unwrap().push(recovery);
                    busy.lock().unwrap()[index] = false;
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    // The fault schedule, cycle after cycle, leaving the last stretch of the run quiet.
    let mut faults: Vec<Fault> = Vec::new();
    let mut rss_baseline: [Option<u64>; 2] = [None, None];
    let mut rss_baseline_at = [0.0f64; 2];
    let sleep_until = |t: f64| {
        let load = load.clone();
        async move {
            let now = load.now();
            if t > now {
                tokio::time::sleep(Duration::from_secs_f64(t - now)).await;
            }
        }
    };
    sleep_until(at(WARM_UP - 10.0)).await;
    login_burst(&load, &accounts, &initial_passwords).await;
    sleep_until(at(WARM_UP)).await;
    {
        let replicas = replicas.lock().unwrap();
        for replica in replicas.iter() {
            rss_baseline[replica.index] = replica.rss_kib();
            rss_baseline_at[replica.index] = load.now() - load_start;
        }
    }
    let mut cycle_start = WARM_UP;
    while cycle_start + CYCLE <= run_for - 10.0 || faults.is_empty() {
        let t = |offset: f64| at(cycle_start + offset);

        // 1. The Redis master is killed; Sentinel fails over; the dead node comes back 20 s
        //    later as a replica.
        sleep_until(t(5.0)).await;
        let start = load.now();
        let killed = sentinel.kill_master()?;
        let mut new_master = killed.clone();
        while new_master == killed && load.now() - start < 60.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            new_master = sentinel.master().unwrap_or_default();
        }
        faults.push(Fault {
            label: "Redis master killed",
            name: format!("Redis master killed ({killed} -> {new_master})"),
            start,
            end: load.now(),
            probe: Probe::AnyCall,
        });
        sleep_until(t(25.0)).await;
        sentinel.heal()?;

        // 2. PostgreSQL restarted (down ~5 s).
        sleep_until(t(35.0)).await;
        let start = load.now();
        postgres.stop()?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        postgres.start_again()?;
        faults.push(Fault {
            label: "PostgreSQL restarted",
            name: "PostgreSQL restarted".into(),
            start,
            end: load.now(),
            probe: Probe::Database,
        });

        // 3. SMTP down for 30 s.
        sleep_until(t(50.0)).await;
        let start = load.now();
        smtp.lock().unwrap().stop();
        tokio::time::sleep(Duration::from_secs(30)).await;
        smtp.lock().unwrap().start_again()?;
        faults.push(Fault {
            label: "SMTP stopped",
            name: "SMTP stopped for 30 s".into(),
            start,
            end: load.now(),
            probe: Probe::Mail,
        });

        // 4. Replica 1 SIGKILLed while a ResetPassword is in flight on it, restarted 5 s later.
        sleep_until(t(90.0)).await;
        let start = load.now();
        let mut mid_reset = false;
        while load.now() - start < 20.0 {
            if load.resets_in_flight[1].load(std::sync::atomic::Ordering::SeqCst) > 0 {
                mid_reset = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let killed_at = load.now();
        replicas.lock().unwrap()[1].kill();
        sampler.set_pid(1, None);
        tokio::time::sleep(Duration::from_secs(5)).await;
        {
            let replicas = replicas.clone();
            tokio::task::spawn_blocking(move || replicas.lock().unwrap()[1].start()).await??;
        }
        sampler.set_pid(1, replicas.lock().unwrap()[1].pid());
        faults.push(Fault {
            label: "replica 1 SIGKILLed",
            name: format!(
                "replica 1 SIGKILLed {} and restarted",
                if mid_reset {
                    "mid-reset"
                } else {
                    "(no reset in flight within 20 s)"
                }
            ),
            start: killed_at,
            end: load.now(),
            probe: Probe::Replica(1),
        });
        let rebaseline = Some((1, load.now() + WARM_UP));

        // 5. The proxy in front of PostgreSQL: 200 ms per chunk for 15 s, then every
        //    connection cut.
        sleep_until(t(115.0)).await;
        let start = load.now();
        proxy.set_latency(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_secs(15)).await;
        proxy.set_latency(Duration::ZERO);
        faults.push(Fault {
            label: "PostgreSQL +200 ms",
            name: "PostgreSQL proxy +200 ms latency for 15 s".into(),
            start,
            end: load.now(),
            probe: Probe::Database,
        });
        sleep_until(t(135.0)).await;
        let start = load.now();
        proxy.cut_all();
        faults.push(Fault {
            label: "PostgreSQL connections cut",
            name: "PostgreSQL proxy cut every connection".into(),
            start,
            end: load.now(),
            probe: Probe::Database,
        });

        if let Some((index, when)) = rebaseline {
            sleep_until(when - 10.0).await;
            login_burst(&load, &accounts, &initial_passwords).await;
            sleep_until(when).await;
            rss_baseline[index] = replicas.lock().unwrap()[index].rss_kib();
            rss_baseline_at[index] = load.now() - load_start;
        }
        cycle_start += CYCLE;
    }

    eprintln!("soak: load ends at {:.0} s; draining", at(run_for));
    generator.await?;
    let load_end = load.now() - load_start;
    let load_average_end = series::load_average();
    // Let the queue and the outbox finish: nothing pending, nothing unpublished.
    let drain_deadline = load.now() + 120.0;
    loop {
        let pending = postgres
            .query("SELECT count(*) FROM deliveries WHERE status = 'pending'")
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r.first()).cloned());
        let unpublished = postgres
            .query("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r.first()).cloned());
        if pending.as_deref() == Some("0") && unpublished.as_deref() == Some("0") {
            break;
        }
        if load.now() > drain_deadline {
            eprintln!(
                "soak: queue or outbox not drained (pending {pending:?}, unpublished {unpublished:?})"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let raw = smtp.lock().unwrap().messages();
    mailboxes.lock().unwrap().absorb(raw, load.now());
    let rss_end: Vec<Option<u64>> = replicas
        .lock()
        .unwrap()
        .iter()
        .map(Replica::rss_kib)
        .collect();
    let rss_samples = sampler.finish();

    // ---- invariants ----
    let recoveries = results.lock().unwrap().clone();
    let calls = load.calls.lock().unwrap().clone();
    let mut checks: Vec<(String, bool, String)> = Vec::new();

    // Database truth: one outbox row per committed reset, with its flow id.
    let outbox = postgres.query(
        "SELECT event_id, aggregate_id, payload::json->>'flow_id' FROM outbox \
         WHERE event_type = 'password.changed'",
    )?;
    let committed_flows: HashSet<String> = outbox.iter().map(|r| r[2].clone()).collect();
    let changes_per_account: HashMap<String, usize> =
        outbox.iter().fold(HashMap::new(), |mut map, r| {
            *map.entry(r[1].clone()).or_default() += 1;
            map
        });

    // Per account, in order: the last reset answered OK, and whether a later one is ambiguous.
    let mut by_account: BTreeMap<usize, Vec<&Recovery>> = BTreeMap::new();
    for recovery in &recoveries {
        by_account
            .entry(recovery.account)
            .or_default()
            .push(recovery);
    }

    // 1. Every ResetPassword answered OK is in the database and its password logs in.
    let mut missing = Vec::new();
    let mut no_login = Vec::new();
    let mut ok_resets = 0;
    for (account, list) in &by_account {
        for recovery in list {
            if recovery.reset == ResetEnd::Ok {
                ok_resets += 1;
                if !committed_flows.contains(recovery.flow_id.as_deref().unwrap_or_default()) {
                    missing.push(recovery.flow_id.clone().unwrap_or_default());
                }
            }
        }
        // Recoveries of one account never overlap, so the list is in time order.
        let last_change = list
            .iter()
            .rposition(|r| r.reset == ResetEnd::Ok || r.reset == ResetEnd::Ambiguous);
        if let Some(last) = last_change
            && list[last].reset == ResetEnd::Ok
        {
            let login = &accounts[*account].login;
            let expected = if list[last].replayed_token_worked {
                &list[last].replay_password
            } else {
                &list[last].password
            };
            if load.logs_in(login, expected).await != Some(true) {
                no_login.push(login.clone());
            }
        }
    }
    checks.push((
        "every ResetPassword answered OK is in the database and its password logs in".into(),
        missing.is_empty() && no_login.is_empty() && ok_resets > 0,
        format!(
            "{ok_resets} resets answered OK; missing from the outbox: {missing:?}; last password does not log in: {no_login:?}"
        ),
    ));

    // 2. No call answered with an error changed a password.
    let mut changed_by_error = Vec::new();
    let mut refused = 0;
    for recovery in &recoveries {
        if let ResetEnd::Refused(_) = recovery.reset {
            refused += 1;
            let flow = recovery.flow_id.clone().unwrap_or_default();
            let login = &accounts[recovery.account].login;
            if committed_flows.contains(&flow)
                || load.logs_in(login, &recovery.password).await == Some(true)
            {
                changed_by_error.push(flow);
            }
        }
    }
    let ambiguous = recoveries
        .iter()
        .filter(|r| r.reset == ResetEnd::Ambiguous)
        .count();
    let ambiguous_committed = recoveries
        .iter()
        .filter(|r| r.reset == ResetEnd::Ambiguous)
        .filter(|r| committed_flows.contains(r.flow_id.as_deref().unwrap_or_default()))
        .count();
    checks.push((
        "no call answered with an error changed a password".into(),
        changed_by_error.is_empty(),
        format!(
            "{refused} resets refused with an error, of which changed a password: {changed_by_error:?}; \
             {ambiguous} resets unanswered (connection lost), either outcome allowed: \
             {ambiguous_committed} of them had committed"
        ),
    ));

    // 3. Exactly one password.changed per event id in the stream, one per committed change,
    //    and one notice mail per change.
    let stream = read_stream(&sentinel.url).await?;
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for (event_id, kind) in &stream {
        if kind == "password.changed" {
            *per_event.entry(event_id.clone()).or_default() += 1;
        }
    }
    let duplicated: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    let not_in_stream: Vec<_> = outbox
        .iter()
        .filter(|r| !per_event.contains_key(&r[0]))
        .map(|r| r[0].clone())
        .collect();
    let mut notice_mismatch = Vec::new();
    let mut copies = 0;
    {
        let mailboxes = mailboxes.lock().unwrap();
        for account in accounts.iter() {
            let changes = changes_per_account.get(&account.id).copied().unwrap_or(0);
            let notices = mailboxes.notices_for(&account.login.to_ascii_lowercase());
            copies += mailboxes.copies_for(&account.login.to_ascii_lowercase());
            if changes != notices {
                notice_mismatch.push(format!(
                    "{}: {changes} changes, {notices} notices",
                    account.login
                ));
            }
        }
    }
    checks.push((
        "every reset produced exactly one password.changed per event id in the stream and one notice mail".into(),
        duplicated.is_empty() && not_in_stream.is_empty() && notice_mismatch.is_empty(),
        format!(
            "{} changes in the outbox, {} password.changed event ids in the stream; duplicated: {duplicated:?}; \
             missing from the stream: {not_in_stream:?}; notice mismatches (distinct Message-IDs): {notice_mismatch:?}; \
             extra copies of a mail already delivered, same Message-ID (code or notice): {copies}",
            outbox.len(),
            per_event.len()
        ),
    ));

    // 4. Every code answered as sent was delivered once, or dropped as expired.
    let dropped: usize = postgres
        .query(
            "SELECT count(*) FROM deliveries WHERE status = 'dropped' AND last_error = 'expired'",
        )?
        .first()
        .and_then(|r| r.first())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut code_problems = Vec::new();
    let (mut sent_ok, mut delivered) = (0usize, 0usize);
    {
        let mailboxes = mailboxes.lock().unwrap();
        for (account, list) in &by_account {
            let address = accounts[*account].login.to_ascii_lowercase();
            let codes = mailboxes.codes_for(&address);
            let unique: HashSet<&String> = codes.iter().collect();
            let ok: u32 = list.iter().map(|r| r.sends_ok).sum();
            let maybe: u32 = list.iter().map(|r| r.sends_ambiguous).sum();
            sent_ok += ok as usize;
            delivered += codes.len();
            if unique.len() != codes.len() {
                code_problems.push(format!("{address}: a code delivered twice"));
            }
            if codes.len() > (ok + maybe) as usize {
                code_problems.push(format!(
                    "{address}: {} code mails for {} sends",
                    codes.len(),
                    ok + maybe
                ));
            }
            if codes.len() + dropped < ok as usize {
                code_problems.push(format!(
                    "{address}: {} code mails for {ok} sends answered OK",
                    codes.len()
                ));
            }
        }
    }
    checks.push((
        "every code answered as sent was delivered once or counted as dropped-expired".into(),
        code_problems.is_empty(),
        format!("{sent_ok} sends answered OK, {delivered} code mails, {dropped} dropped as expired; problems: {code_problems:?}"),
    ));

    // 5. No code or token worked twice.
    let replays: Vec<_> = recoveries
        .iter()
        .filter(|r| r.replayed_code_worked || r.replayed_token_worked)
        .map(|r| r.flow_id.clone().unwrap_or_default())
        .collect();
    checks.push((
        "no code or token worked twice".into(),
        replays.is_empty(),
        format!("{ok_resets} used codes and tokens replayed; worked again: {replays:?}"),
    ));

    // 6. Errors were only UNAVAILABLE (retryable) or the documented after-effects of a call
    //    whose answer was lost (its retry finds the work done).
    let documented = |rpc: &str, reason: &str| {
        matches!(
            (rpc, reason),
            ("SendVerificationCode", "RESEND_TOO_SOON")
                | ("VerifyCode", "CODE_INVALID" | "FLOW_STATE")
                | ("ResetPassword", "TOKEN_INVALID" | "FLOW_STATE")
        ) || rpc.ends_with("(replay)")
    };
    let mut unexpected: BTreeMap<String, usize> = BTreeMap::new();
    for call in &calls {
        match &call.outcome {
            Outcome::Ok | Outcome::Transport { .. } => {}
            Outcome::Service { reason, .. } if reason == "UNAVAILABLE" => {}
            Outcome::Service { reason, .. } if documented(call.rpc, reason) => {}
            Outcome::Service { code, reason } => {
                *unexpected
                    .entry(format!(
                        "{} {code:?} {reason} at {:.0} s",
                        call.rpc,
                        call.at - load_start
                    ))
                    .or_default() += 1;
            }
        }
    }
    checks.push((
        "errors during faults were only UNAVAILABLE or documented ones".into(),
        unexpected.is_empty(),
        format!(
            "unexpected: {unexpected:?}; sends answered UNAVAILABLE that had taken effect \
             (the retry met the cooldown): {}",
            recoveries
                .iter()
                .map(|r| r.unavailable_took_effect)
                .sum::<u32>()
        ),
    ));

    // 7. Memory: RSS at the end within 10 % of its value after warm-up.
    let mut rss_lines = Vec::new();
    let mut rss_ok = true;
    for (index, (base, end)) in rss_baseline.iter().zip(&rss_end).enumerate() {
        match (base, end) {
            (Some(base), Some(end)) => {
                let ratio = *end as f64 / *base as f64;
                rss_ok &= (0.9..=1.1).contains(&ratio);
                rss_lines.push(format!(
                    "replica {index}: {} MiB after warm-up, {} MiB at the end ({:+.1} %)",
                    base / 1024,
                    end / 1024,
                    (ratio - 1.0) * 100.0
                ));
            }
            _ => {
                rss_ok = false;
                rss_lines.push(format!("replica {index}: not measured"));
            }
        }
    }
    checks.push((
        "RSS of each replica at the end within 10 % of its value after warm-up".into(),
        rss_ok,
        rss_lines.join("; "),
    ));

    for replica in replicas.lock().unwrap().iter_mut() {
        replica.terminate();
    }

    // ---- report ----
    let mut report = String::new();
    let passed = checks.iter().all(|(_, ok, _)| *ok);
    for (name, ok, detail) in &checks {
        println!("{} {name}: {detail}", if *ok { "PASS" } else { "FAIL" });
    }
    writeln!(
        report,
        "## Run: {:.1} min at {} recoveries/s, {} accounts, {} fault cycle(s)\n",
        args.minutes,
        args.rate,
        args.accounts,
        faults.len() / 6
    )?;
    let completed = recoveries
        .iter()
        .filter(|r| r.reset == ResetEnd::Ok)
        .count();
    writeln!(
        report,
        "- recoveries started: {}, completed (reset OK): {completed}, not completed: {}, skipped (every account busy): {}",
        recoveries.len(),
        recoveries.len() - completed,
        skipped.load(std::sync::atomic::Ordering::Relaxed)
    )?;
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for recovery in recoveries.iter().filter(|r| r.reset != ResetEnd::Ok) {
        let end = recovery.ended.clone().unwrap_or_default();
        *ends.entry(end.chars().take(90).collect()).or_default() += 1;
    }
    for (end, n) in &ends {
        writeln!(report, "  - {n} × {end}")?;
    }
    writeln!(
        report,
        "- calls: {}; answered OK: {}",
        calls.len(),
        calls.iter().filter(|c| c.outcome == Outcome::Ok).count()
    )?;
    writeln!(report, "\n### Faults\n")?;
    writeln!(
        report,
        "| fault | start (s) | end (s) | errors until end + {SETTLE:.0} s | recovery (end → first success) |"
    )?;
    writeln!(report, "|---|---|---|---|---|")?;
    let mail_times: Vec<f64> = mailboxes
        .lock()
        .unwrap()
        .mails
        .iter()
        .map(|m| m.at)
        .collect();
    // Each error counts for the latest fault that started before it and ended (plus the
    // settling time) after it. Replays are left out: their refusals are the expected answer.
    let owner = |call: &scenario::Call| -> Option<f64> {
        if call.rpc.ends_with("(replay)") {
            return None;
        }
        faults
            .iter()
            .filter(|f| call.at >= f.start && call.at <= f.end + SETTLE)
            .map(|f| f.start)
            .reduce(f64::max)
    };
    for fault in &faults {
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for call in calls.iter().filter(|c| owner(c) == Some(fault.start)) {
            let key = match &call.outcome {
                Outcome::Ok => continue,
                Outcome::Service { reason, .. } => format!("{} {reason}", call.rpc),
                Outcome::Transport { code } => format!("{} no answer ({code:?})", call.rpc),
            };
            *errors.entry(key).or_default() += 1;
        }
        let first_success = match fault.probe {
            Probe::AnyCall => calls
                .iter()
                .filter(|c| c.outcome == Outcome::Ok)
                .map(|c| c.at)
                .find(|&at| at >= fault.end),
            Probe::Database => calls
                .iter()
                .filter(|c| {
                    c.outcome == Outcome::Ok
                        && (c.rpc == "StartRecovery" || c.rpc == "ResetPassword")
                })
                .map(|c| c.at)
                .find(|&at| at >= fault.end),
            Probe::Mail => mail_times
                .iter()
                .copied()
                .filter(|&at| at >= fault.end)
                .reduce(f64::min),
            Probe::Replica(index) => calls
                .iter()
                .filter(|c| c.outcome == Outcome::Ok && c.replica == index)
                .map(|c| c.at)
                .find(|&at| at >= fault.end),
        };
        let errors = if errors.is_empty() {
            "none".to_owned()
        } else {
            errors
                .iter()
                .map(|(k, n)| format!("{n} × {k}"))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        writeln!(
            report,
            "| {} | {:.1} | {:.1} | {errors} | {} |",
            fault.name,
            fault.start - load_start,
            fault.end - load_start,
            first_success.map_or("none".to_owned(), |at| format!(
                "{:.2} s",
                (at - fault.end).max(0.0)
            ))
        )?;
    }
    let outside: usize = calls
        .iter()
        .filter(|c| c.outcome != Outcome::Ok && !c.rpc.ends_with("(replay)"))
        .filter(|c| owner(c).is_none())
        .count();
    writeln!(
        report,
        "\nErrors outside every fault window (start .. end + {SETTLE:.0} s): {outside}."
    )?;
    writeln!(report, "\n### Invariants\n")?;
    for (name, ok, detail) in &checks {
        writeln!(
            report,
            "- **{}** {name}  \n  {detail}",
            if *ok { "PASS" } else { "FAIL" }
        )?;
    }
    std::fs::write(&args.report, &report)
        .with_context(|| format!("writing {}", args.report.display()))?;
    eprintln!("soak: report written to {}", args.report.display());
    if let Some(path) = &args.series {
        let run = series::Run {
            minutes: args.minutes,
            rate: args.rate,
            replicas: rss_end.len(),
            load_end,
            warm_up: WARM_UP,
            load_average: (load_average_start, load_average_end),
            faults: faults
                .iter()
                .map(|f| series::Window {
                    label: f.label,
                    name: &f.name,
                    start: f.start - load_start,
                    end: f.end - load_start,
                })
                .collect(),
            rss_baselines: rss_baseline
                .iter()
                .zip(rss_baseline_at)
                .enumerate()
                .filter_map(|(i, (kib, t))| kib.map(|kib| (i, t, kib)))
                .collect(),
            rss_end: rss_end
                .iter()
                .enumerate()
                .filter_map(|(i, kib)| kib.map(|kib| (i, kib)))
                .collect(),
            checks: checks
                .iter()
                .map(|(name, ok, _)| (name.as_str(), *ok))
                .collect(),
        };
        series::write(path, &run, &calls, load_start, &rss_samples)?;
        eprintln!("soak: time series written to {}", path.display());
    }
    drop(postgres);
    if !passed {
        anyhow::bail!("an invariant failed");
    }
    Ok(())
}

/// 32 concurrent logins (wrong passwords half the time), spread over both replicas.
async fn login_burst(load: &Arc<Load>, accounts: &Arc<Vec<Account>>, passwords: &[String]) {
    let mut burst = JoinSet::new();
    for i in 0..32 {
        let load = load.clone();
        let login = accounts[i % accounts.len()].login.clone();
        let password = if i % 2 == 0 {
            passwords[i % passwords.len()].clone()
        } else {
            scenario::new_password()
        };
        burst.spawn(async move { load.logs_in(&login, &password).await });
    }
    while burst.join_next().await.is_some() {}
}

/// Every entry of the `identity.events` stream as (event id, type).
async fn read_stream(url: &str) -> Result<Vec<(String, String)>> {
    use recovery_service::config::RedisConfig;
    use recovery_service::store::RedisStore;
    let _ = (RedisStore::connect(url, &RedisConfig::default()).await)
        .context("the Sentinel set-up answers")?;
    // The store offers no raw reads; the crate's own Sentinel client is used for XRANGE.
    let settings = recovery_service::store::sentinel::SentinelSettings::parse(url)?;
    let mut client = redis::sentinel::SentinelClient::build(
        settings
            .sentinels
            .iter()
            .map(|(host, port)| format!("redis://{host}:{port}"))
            .collect(),
        settings.service.clone(),
        None,
        redis::sentinel::SentinelServerType::Master,
    )?;
    let mut connection = client.get_async_connection().await?;
    let reply: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("identity.events")
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await?;
    Ok(reply
        .into_iter()
        .map(|(_, fields)| {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| pair[0] == name)
                    .and_then(|pair| pair.get(1).cloned())
                    .unwrap_or_default()
            };
            (field("event_id"), field("type"))
        })
        .collect())
}
