//! `StartRecoveryRequest.pow_solution` as the use case reads it: `PowSolution::parse` (base64,
//! either alphabet, then JSON) and `PowSolution::verify` against the service's key.
//!
//! Two kinds of input (the first byte picks): arbitrary text, which must never verify (nobody
//! can sign a challenge without the key); and a real solved challenge with the rest of the input
//! spliced into its payload, which may verify only if it still says what the real one says.
#![no_main]

use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use recovery_service::recovery::pow::{self, PowSolution, ProofOfWork};
use recovery_service::secrets::KeyRing;

struct Fixture {
    keys: KeyRing,
    solved: String,
    original: PowSolution,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = KeyRing::parse("fuzz-secret-0123456789-0123456789-0123456789").expect("key");
        let expires_at = Utc
            .with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let challenge = ProofOfWork::issue(&keys, expires_at, 1_000).expect("issued");
        let number = pow::solve(&challenge).expect("solvable");
        let solved = pow::encode_solution(&challenge, number);
        let original = PowSolution::parse("pow_solution", &solved).expect("parses");
        Fixture {
            keys,
            solved,
            original,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let now = Utc
        .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let text = String::from_utf8_lossy(rest);
    if mode % 2 == 0 {
        if let Ok(solution) = PowSolution::parse("pow_solution", &text) {
            assert!(
                solution.verify(&fixture.keys, now).is_err(),
                "a solution nobody signed verified"
            );
        }
        return;
    }
    // Splice the input into the real payload at a position the input chooses.
    let at = usize::from(mode / 2) % (fixture.solved.len() + 1);
    let mut spliced = fixture.solved.clone();
    spliced.insert_str(at, &text);
    if let Ok(solution) = PowSolution::parse("pow_solution", &spliced)
        && solution.verify(&fixture.keys, now).is_ok()
    {
        let o = &fixture.original;
        assert!(solution.algorithm.eq_ignore_ascii_case(&o.algorithm));
        assert!(solution.challenge.eq_ignore_ascii_case(&o.challenge));
        assert_eq!(
            (&solution.salt, solution.number, &solution.signature),
            (&o.salt, o.number, &o.signature)
        );
        assert_eq!(
            solution.spent_key(),
            o.spent_key(),
            "a replay could pass as new"
        );
    }
});
