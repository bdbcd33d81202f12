//! What one proof-of-work solve costs (README "Proof of work"): brute-force solves of fresh
//! challenges at the configured cost, as the ALTCHA widget does them, on this machine.
//!
//! ```text
//! cargo bench --bench pow                     # 20 solves at the default max_number
//! POW_SOLVES=50 POW_MAX_NUMBER=1000000 cargo bench --bench pow
//! ```

use std::time::{Duration, Instant};

use chrono::Utc;
use recovery_service::recovery::handle::DEFAULT_POW_MAX_NUMBER;
use recovery_service::recovery::pow::{self, ProofOfWork};
use recovery_service::secrets::KeyRing;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let solves: usize = env_or("POW_SOLVES", 20);
    let max_number: u32 = env_or("POW_MAX_NUMBER", DEFAULT_POW_MAX_NUMBER);
    let keys = KeyRing::random()?;
    let expires_at = Utc::now() + chrono::Duration::minutes(5);
    let mut times = Vec::with_capacity(solves);
    let mut hashes = 0u64;
    for _ in 0..solves {
        let challenge = ProofOfWork::issue(&keys, expires_at, max_number)?;
        let started = Instant::now();
        let number = pow::solve(&challenge).ok_or_else(|| anyhow::anyhow!("no solution"))?;
        times.push(started.elapsed());
        hashes += number + 1;
    }
    times.sort();
    let total: Duration = times.iter().sum();
    println!("max_number {max_number}, {solves} solves, one thread");
    println!(
        "per solve: median {:?}, p90 {:?}, max {:?}",
        times[solves / 2],
        times[solves * 9 / 10],
        times[solves - 1]
    );
    println!(
        "hash rate: {:.0} hashes/s ({hashes} hashes in {total:?})",
        hashes as f64 / total.as_secs_f64()
    );
    Ok(())
}
