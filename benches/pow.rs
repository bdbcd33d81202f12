//! What one proof-of-work solve costs (docs/security.md "Proof of work"): brute-force solves of
//! fresh challenges at the configured cost on this machine, two ways — as the service's own
//! reference `pow::solve` does it (a hex string per try), and as a careful bot would (the salt's
//! SHA-256 state once, then only the digits per try, SHA-NI where the CPU has it), which is the
//! number that prices the work for an attacker.
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
use sha2::{Digest, Sha256};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(default)
}

/// A bot's solver: the prefix state is cloned per try and only the decimal digits are hashed.
fn solve_like_a_bot(pow: &ProofOfWork) -> Option<u64> {
    let target = hex::decode(&pow.challenge).ok()?;
    let prefix = Sha256::new_with_prefix(pow.salt.as_bytes());
    let mut digits = [0u8; 20];
    (0..=u64::from(pow.max_number)).find(|&number| {
        let mut at = digits.len();
        let mut rest = number;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut hasher = prefix.clone();
        hasher.update(&digits[at..]);
        hasher.finalize().as_slice() == target.as_slice()
    })
}

fn measure(
    name: &str,
    solves: usize,
    max_number: u32,
    solve: fn(&ProofOfWork) -> Option<u64>,
) -> anyhow::Result<()> {
    let keys = KeyRing::random()?;
    let expires_at = Utc::now() + chrono::Duration::minutes(5);
    let mut times = Vec::with_capacity(solves);
    let mut hashes = 0u64;
    for _ in 0..solves {
        let challenge = ProofOfWork::issue(&keys, expires_at, max_number)?;
        let started = Instant::now();
        let number = solve(&challenge).ok_or_else(|| anyhow::anyhow!("no solution"))?;
        times.push(started.elapsed());
        hashes += number + 1;
    }
    times.sort();
    let total: Duration = times.iter().sum();
    println!("{name}: max_number {max_number}, {solves} solves, one thread");
    println!(
        "  per solve: median {:?}, p90 {:?}, max {:?}",
        times[solves / 2],
        times[solves * 9 / 10],
        times[solves - 1]
    );
    println!(
        "  hash rate: {:.0} hashes/s ({hashes} hashes in {total:?})",
        hashes as f64 / total.as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let solves: usize = env_or("POW_SOLVES", 20);
    let max_number: u32 = env_or("POW_MAX_NUMBER", DEFAULT_POW_MAX_NUMBER);
    measure("pow::solve", solves, max_number, pow::solve)?;
    measure("a bot's solver", solves, max_number, solve_like_a_bot)?;
    Ok(())
}
