//! The run as a time series, for `scripts/plots.py soak`: every try's outcome and latency in
//! buckets of `BUCKET` seconds, the RSS of each replica sampled every second, the fault windows
//! and the invariants' verdicts, one JSON object per line. Time is in seconds since the load
//! started (the report's clock).

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::infra::rss_kib_of;
use crate::scenario::{Call, Outcome};

/// Width of one bucket of calls, in seconds.
pub const BUCKET: f64 = 5.0;

/// The RSS of each replica once a second, on a thread of its own (the driver's runtime may be
/// busy, and a replica's restart holds the replicas' lock for seconds).
pub struct RssSampler {
    /// The process id of each replica while it runs (`None` while it is down).
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    samples: Arc<Mutex<Vec<(f64, usize, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling; `now` gives the report's clock (seconds since the load started).
    pub fn start(pids: Vec<Option<u32>>, now: impl Fn() -> f64 + Send + 'static) -> Self {
        let pids = Arc::new(Mutex::new(pids));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pids, samples, stop) = (pids.clone(), samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let current = pids.lock().unwrap().clone();
                    let t = now();
                    for (replica, pid) in current.iter().enumerate() {
                        if let Some(kib) = pid.and_then(rss_kib_of) {
                            samples.lock().unwrap().push((t, replica, kib));
                        }
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        Self {
            pids,
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// A replica was killed (`None`) or started again.
    pub fn set_pid(&self, replica: usize, pid: Option<u32>) {
        self.pids.lock().unwrap()[replica] = pid;
    }

    /// Stops the thread; the samples so far.
    pub fn finish(mut self) -> Vec<(f64, usize, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

/// One fault window, on the report's clock.
pub struct Window<'a> {
    /// Short name for a picture's label.
    pub label: &'a str,
    pub name: &'a str,
    pub start: f64,
    pub end: f64,
}

/// What the series file holds besides the calls and the samples.
pub struct Run<'a> {
    pub minutes: f64,
    pub rate: f64,
    pub replicas: usize,
    /// When the load stopped and the last recovery had ended (report's clock).
    pub load_end: f64,
    pub warm_up: f64,
    /// The machine's 1-minute load average when the load started and when it ended (the soak
    /// shares its cores with whatever else runs).
    pub load_average: (Option<f64>, Option<f64>),
    pub faults: Vec<Window<'a>>,
    /// (replica, time, KiB): the RSS baselines the memory invariant compares against.
    pub rss_baselines: Vec<(usize, f64, u64)>,
    /// (replica, KiB): the RSS at the end.
    pub rss_end: Vec<(usize, u64)>,
    /// (invariant, passed).
    pub checks: Vec<(&'a str, bool)>,
}

/// The 1-minute load average, from /proc/loadavg.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    // Nearest rank, as the load generator's percentiles.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Writes the series as JSON lines. `calls` are on the driver's clock; `load_start` is its
/// reading when the load started. Calls before the load (account creation) and after `load_end`
/// (the invariants' own logins) are left out, and so are replayed codes and tokens, whose
/// refusal is the expected answer.
pub fn write(
    path: &Path,
    run: &Run,
    calls: &[Call],
    load_start: f64,
    rss: &[(f64, usize, u64)],
) -> Result<()> {
    let mut lines = Vec::new();
    lines.push(json!({
        "kind": "meta",
        "minutes": run.minutes,
        "rate": run.rate,
        "replicas": run.replicas,
        "bucket_s": BUCKET,
        "warm_up_s": run.warm_up,
        "load_end_s": round(run.load_end, 2),
        "load_average_start": run.load_average.0,
        "load_average_end": run.load_average.1,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
    }));
    let buckets = (run.load_end / BUCKET).ceil().max(1.0) as usize;
    let mut per_bucket: Vec<Vec<&Call>> = vec![Vec::new(); buckets];
    for call in calls {
        let t = call.at - load_start;
        if t < 0.0 || t > run.load_end || call.rpc.ends_with("(replay)") {
            continue;
        }
        let index = ((t / BUCKET) as usize).min(buckets - 1);
        per_bucket[index].push(call);
    }
    for (index, bucket) in per_bucket.iter().enumerate() {
        let mut ms: Vec<f64> = bucket.iter().map(|c| c.ms).collect();
        ms.sort_by(f64::total_cmp);
        let count = |f: &dyn Fn(&Outcome) -> bool| bucket.iter().filter(|c| f(&c.outcome)).count();
        let ok = count(&|o| *o == Outcome::Ok);
        let unavailable =
            count(&|o| matches!(o, Outcome::Service { reason, .. } if reason == "UNAVAILABLE"));
        let no_answer = count(&|o| matches!(o, Outcome::Transport { .. }));
        lines.push(json!({
            "kind": "bucket",
            "t": round(index as f64 * BUCKET, 2),
            "calls": bucket.len(),
            "ok": ok,
            "unavailable": unavailable,
            "no_answer": no_answer,
            "other_error": bucket.len() - ok - unavailable - no_answer,
            "p50_ms": if ms.is_empty() { None } else { Some(round(percentile(&ms, 0.50), 2)) },
            "p99_ms": if ms.is_empty() { None } else { Some(round(percentile(&ms, 0.99), 2)) },
        }));
    }
    for (t, replica, kib) in rss {
        lines.push(json!({ "kind": "rss", "t": round(*t, 2), "replica": replica, "kib": kib }));
    }
    for fault in &run.faults {
        lines.push(json!({
            "kind": "fault",
            "label": fault.label,
            "name": fault.name,
            "start": round(fault.start, 2),
            "end": round(fault.end, 2),
        }));
    }
    for (replica, t, kib) in &run.rss_baselines {
        lines.push(
            json!({ "kind": "rss_baseline", "replica": replica, "t": round(*t, 2), "kib": kib }),
        );
    }
    for (replica, kib) in &run.rss_end {
        lines.push(json!({ "kind": "rss_end", "replica": replica, "kib": kib }));
    }
    for (name, ok) in &run.checks {
        lines.push(json!({ "kind": "check", "name": name, "ok": ok }));
    }
    let mut file =
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    for line in lines {
        writeln!(file, "{line}")?;
    }
    Ok(())
}
