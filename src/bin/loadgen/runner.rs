//! Drives a scenario: `connections` HTTP/2 connections x `streams` requests in flight on each,
//! for a duration or a number of requests, optionally paced to a steady rate; latencies go to
//! HDR histograms (microseconds, 3 significant digits), answers are sorted into correct,
//! wrong and errors by status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::scenario::{self, Clients, Outcome, Scenario, Setup};

#[derive(Debug, Clone)]
pub struct Load {
    pub connections: usize,
    pub streams: usize,
    /// Stop after this long (measured after `warmup`).
    pub duration: Option<Duration>,
    /// Stop after this many requests (all measured; no warm-up).
    pub requests: Option<u64>,
    /// Requests per second across all workers; `None`: as fast as answers come.
    pub rate: Option<f64>,
    pub warmup: Duration,
    /// Requests one prepared item serves (0: any number).
    pub reuse: u64,
}

impl Load {
    pub fn in_flight(&self) -> usize {
        self.connections.max(1) * self.streams.max(1)
    }
}

/// Latencies and answers of one worker, merged at the end.
struct Tally {
    latency_us: Histogram<u64>,
    correct: u64,
    wrong: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            correct: 0,
            wrong: BTreeMap::new(),
            errors: BTreeMap::new(),
        })
    }

    fn record(&mut self, outcome: Outcome, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(micros);
        match outcome {
            Outcome::Correct => self.correct += 1,
            Outcome::Wrong(what) => *self.wrong.entry(what).or_default() += 1,
            Outcome::Error(key) => *self.errors.entry(key).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        self.correct += other.correct;
        for (k, v) in other.wrong {
            *self.wrong.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        Ok(())
    }
}

/// The machine-readable result of one scenario run (one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub connections: usize,
    pub streams: usize,
    pub in_flight: usize,
    pub target_rate: Option<f64>,
    pub requests: u64,
    pub correct: u64,
    pub wrong: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// Answered requests per second (correct, wrong and errors alike).
    pub rate: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The prepared items ran out before the duration was over.
    pub pool_exhausted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<Box<Summary>>,
}

impl Summary {
    pub fn failed(&self) -> u64 {
        self.wrong.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    /// One line for people; says plainly when anything went wrong.
    pub fn human(&self) -> String {
        let mut line = format!(
            "{:<24} {:>4} in flight ({}x{}) {:>7} req {:>6.2} s {:>9.1}/s  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  correct {}",
            self.scenario,
            self.in_flight,
            self.connections,
            self.streams,
            self.requests,
            self.elapsed_s,
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.correct,
        );
        if self.pool_exhausted {
            line.push_str("  (prepared items ran out)");
        }
        if self.failed() > 0 {
            let all: Vec<String> = self
                .errors
                .iter()
                .chain(self.wrong.iter())
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            line.push_str(&format!("  FAILED {}: {}", self.failed(), all.join(", ")));
        }
        if let Some(flood) = &self.flood {
            line.push_str(&format!("\n  while flooded by: {}", flood.human()));
        }
        line
    }
}

struct Shared {
    scenario: Scenario,
    setup: Arc<Setup>,
    items: Arc<Vec<String>>,
    load: Load,
    next: AtomicU64,
    stop: Arc<AtomicBool>,
    exhausted: AtomicBool,
    pacer: Option<Arc<Semaphore>>,
    measure_from: Instant,
    deadline: Option<Instant>,
}

impl Shared {
    /// The item request `seq` works on, or `None` when the prepared items are used up.
    fn item(&self, seq: u64) -> Option<&str> {
        if !self.scenario.needs_items() {
            return Some("");
        }
        let len = self.items.len() as u64;
        if len == 0 {
            return None;
        }
        // Round robin, so requests in flight at the same time work on different items (no
        // cooldown or compare-and-swap races between them); each item serves `reuse` requests
        // (0: any number).
        if self.load.reuse > 0 && seq >= len.saturating_mul(self.load.reuse) {
            return None;
        }
        let index = seq % len;
        self.items
            .get(usize::try_from(index).ok()?)
            .map(String::as_str)
    }
}

/// Runs `scenario` on `clients` as `load` says until done or `stop` is set, and summarises.
pub async fn run(
    scenario: Scenario,
    clients: Vec<Clients>,
    setup: Arc<Setup>,
    items: Vec<String>,
    load: Load,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let measure_from = if load.requests.is_some() {
        start
    } else {
        start + load.warmup
    };
    let pacer = load.rate.map(|rate| pace(rate, stop.clone()));
    let shared = Arc::new(Shared {
        scenario,
        setup,
        items: Arc::new(items),
        deadline: load.duration.map(|d| measure_from + d),
        load: load.clone(),
        next: AtomicU64::new(0),
        stop,
        exhausted: AtomicBool::new(false),
        pacer,
        measure_from,
    });
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..load.in_flight() {
        let Some(connection) = clients.get(worker % clients.len().max(1)) else {
            anyhow::bail!("no connection to run on");
        };
        let (shared, clients) = (shared.clone(), connection.clone());
        workers.spawn(work(shared, clients));
    }
    let mut total = Tally::new()?;
    while let Some(joined) = workers.join_next().await {
        total.merge(joined??)?;
    }
    let finished = Instant::now();
    // Stops the pacer, and tells a flood running beside this run that it is over.
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = finished.saturating_duration_since(shared.measure_from);
    Ok(summarise(scenario, &load, total, elapsed, &shared))
}

async fn work(shared: Arc<Shared>, mut clients: Clients) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let seq = shared.next.fetch_add(1, Ordering::Relaxed);
        if shared.load.requests.is_some_and(|k| seq >= k) {
            break;
        }
        let Some(item) = shared.item(seq) else {
            shared.exhausted.store(true, Ordering::Relaxed);
            break;
        };
        if let Some(pacer) = &shared.pacer {
            match pacer.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        let sent = Instant::now();
        let outcome = scenario::call(shared.scenario, &mut clients, &shared.setup, item).await;
        if sent >= shared.measure_from {
            tally.record(outcome, sent.elapsed());
        }
    }
    Ok(tally)
}

/// Hands out `rate` permits per second (bursts capped at 10 ms worth), until `stop`.
fn pace(rate: f64, stop: Arc<AtomicBool>) -> Arc<Semaphore> {
    let permits = Arc::new(Semaphore::new(0));
    let pacer = permits.clone();
    tokio::spawn(async move {
        let tick = Duration::from_millis(1);
        let cap = ((rate / 100.0).ceil() as usize).max(1);
        let started = Instant::now();
        let mut granted = 0f64;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !stop.load(Ordering::Relaxed) {
            interval.tick().await;
            let due = started.elapsed().as_secs_f64() * rate;
            let add = (due - granted).floor();
            if add >= 1.0 {
                granted += add;
                let room = cap.saturating_sub(pacer.available_permits());
                pacer.add_permits((add as usize).min(room));
            }
        }
        pacer.close();
    });
    permits
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn summarise(
    scenario: Scenario,
    load: &Load,
    total: Tally,
    elapsed: Duration,
    shared: &Shared,
) -> Summary {
    let h = &total.latency_us;
    let requests = h.len();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Summary {
        scenario: scenario.name(),
        connections: load.connections,
        streams: load.streams,
        in_flight: load.in_flight(),
        target_rate: load.rate,
        requests,
        correct: total.correct,
        wrong: total.wrong,
        errors: total.errors,
        elapsed_s: seconds,
        rate: requests as f64 / seconds,
        mean_ms: h.mean() / 1000.0,
        p50_ms: millis(h.value_at_quantile(0.50)),
        p90_ms: millis(h.value_at_quantile(0.90)),
        p99_ms: millis(h.value_at_quantile(0.99)),
        p999_ms: millis(h.value_at_quantile(0.999)),
        max_ms: millis(h.max()),
        pool_exhausted: shared.exhausted.load(Ordering::Relaxed),
        flood: None,
    }
}
