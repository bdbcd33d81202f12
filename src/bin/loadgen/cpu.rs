//! CPU seconds of named processes over the measured part of a run, from `/proc/<pid>/stat`
//! (utime + stime; works without `perf`), so a report can say where the time of N calls went.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

/// `name=pid[,pid...]`: the CPU time of these processes is summed under `name`.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub pids: Vec<u32>,
}

pub fn parse_group(arg: &str) -> anyhow::Result<Group> {
    let Some((name, pids)) = arg.split_once('=') else {
        bail!("--cpu-pid wants name=pid[,pid...], got {arg:?}");
    };
    let pids = pids
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .with_context(|| format!("pid {p:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Group {
        name: name.to_owned(),
        pids,
    })
}

/// USER_HZ: the unit of `/proc/<pid>/stat` times, 100 on every Linux architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of one process in seconds, or `None` when it is gone.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the man page, so utime (14) and stime (15) are at 11, 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// One reading of every group (and of this load generator itself, as `loadgen`).
pub fn sample(groups: &[Group]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for g in groups {
        let total: f64 = g
            .pids
            .iter()
            .filter_map(|p| cpu_seconds(&p.to_string()))
            .sum();
        *out.entry(g.name.clone()).or_insert(0.0) += total;
    }
    out.insert("loadgen".into(), cpu_seconds("self").unwrap_or(0.0));
    if let Some(busy) = machine_busy_seconds() {
        out.insert("machine".into(), busy);
    }
    out
}

/// CPU seconds every core of the machine spent busy (all processes, the kernel, other users),
/// from the first line of `/proc/stat`: everything but idle and iowait.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(busy / TICKS_PER_SECOND)
}

/// CPU seconds spent by each group between two samples.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}
