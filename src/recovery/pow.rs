//! Proof of work in the ALTCHA v1 format, so the ALTCHA browser widget (and `web/src/pow.ts`)
//! solves it unmodified: find `number <= max_number` with `hex(SHA-256(salt ‖ number)) ==
//! challenge`, and send back base64(JSON{algorithm, challenge, number, salt, signature}).
//!
//! Stateless until it is spent: the signature (a keyed MAC of the challenge) proves we issued
//! it, the expiry travels in the salt (ALTCHA's `?expires=<unix secs>` convention) and is
//! covered by the challenge hash, and the store only remembers spent challenges until they
//! expire (single use).
//!
//! The salt ends in `&`: without it, a solver could move the first digits of `number` onto
//! the end of the salt (same hash, same signature) and stretch `expires` by orders of
//! magnitude. The strict salt grammar below refuses anything else.

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::FieldViolation;
use crate::secrets::KeyRing;
use crate::secrets::keys;

pub const ALGORITHM: &str = "SHA-256";
const PURPOSE: &str = "pow";
/// 96 random bits of salt, hex: ALTCHA's default salt length.
const SALT_BYTES: usize = 12;
/// The widget's payload for a SHA-256 challenge is ~300 bytes of base64; anything far larger is
/// not one.
const MAX_SOLUTION_CHARS: usize = 1024;

/// A challenge as handed to the client (`CreateCaptchaResponse.pow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofOfWork {
    pub algorithm: &'static str,
    pub challenge: String,
    pub salt: String,
    pub signature: String,
    pub max_number: u32,
    pub expires_at: DateTime<Utc>,
}

fn digest_hex(salt: &str, number: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(number.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

impl ProofOfWork {
    /// A fresh challenge whose secret number is uniform in `0..=max_number`, valid until
    /// `expires_at` (whole seconds, as the salt carries it).
    pub fn issue(
        keys: &KeyRing,
        expires_at: DateTime<Utc>,
        max_number: u32,
    ) -> Result<Self, getrandom::Error> {
        let salt = format!(
            "{}?expires={}&",
            hex::encode(keys::random_bytes::<SALT_BYTES>()?),
            expires_at.timestamp()
        );
        // Modulo bias is below 2^-32 for a u32 range drawn from 64 bits.
        let draw = u64::from_le_bytes(keys::random_bytes::<8>()?);
        let number = draw % (u64::from(max_number) + 1);
        let challenge = digest_hex(&salt, number);
        let signature = keys.sign(PURPOSE, &[challenge.as_bytes()]);
        Ok(Self {
            algorithm: ALGORITHM,
            challenge,
            salt,
            signature,
            max_number,
            expires_at: Utc
                .timestamp_opt(expires_at.timestamp(), 0)
                .single()
                .unwrap_or(expires_at),
        })
    }
}

/// The widget's answer, parsed from its base64 JSON (`StartRecoveryRequest.pow_solution`).
#[derive(Debug, Clone, Deserialize)]
pub struct PowSolution {
    pub algorithm: String,
    pub challenge: String,
    pub number: u64,
    pub salt: String,
    pub signature: String,
}

/// Why a solution was refused (all map to `CAPTCHA_INVALID`; the log line says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowRejection {
    Algorithm,
    Salt,
    Expired,
    WrongNumber,
    Signature,
}

impl PowSolution {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let raw = raw.trim();
        if raw.len() > MAX_SOLUTION_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_SOLUTION_CHARS} characters"),
            ));
        }
        let json = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
            .map_err(|_| FieldViolation::new(field, "must be the base64 payload of the widget"))?;
        serde_json::from_slice(&json).map_err(|_| {
            FieldViolation::new(
                field,
                "must be base64 JSON {algorithm, challenge, number, salt, signature}",
            )
        })
    }

    /// When the challenge expires, read from a salt of exactly our form.
    fn salt_expiry(&self) -> Option<DateTime<Utc>> {
        let (random, rest) = self.salt.split_once("?expires=")?;
        let secs = rest.strip_suffix('&')?;
        let well_formed = random.len() == SALT_BYTES * 2
            && random.bytes().all(|b| b.is_ascii_hexdigit())
            && !secs.is_empty()
            && secs.len() <= 12
            && secs.bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            return None;
        }
        Utc.timestamp_opt(secs.parse().ok()?, 0).single()
    }

    /// Ours, unexpired and solved. Returns when it expires (how long to remember it as spent).
    pub fn verify(
        &self,
        keys: &KeyRing,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, PowRejection> {
        if !self.algorithm.eq_ignore_ascii_case(ALGORITHM) {
            return Err(PowRejection::Algorithm);
        }
        let expires_at = self.salt_expiry().ok_or(PowRejection::Salt)?;
        if now >= expires_at {
            return Err(PowRejection::Expired);
        }
        if digest_hex(&self.salt, self.number) != self.challenge.to_ascii_lowercase() {
            return Err(PowRejection::WrongNumber);
        }
        if !keys.verify(PURPOSE, &[self.challenge.as_bytes()], &self.signature) {
            return Err(PowRejection::Signature);
        }
        Ok(expires_at)
    }

    /// The store key marking this challenge as spent.
    pub fn spent_key(&self) -> String {
        format!("pow:{}", self.challenge.to_ascii_lowercase())
    }
}

/// Brute force, as the widget does it (tests and the cost measurement).
pub fn solve(pow: &ProofOfWork) -> Option<u64> {
    (0..=u64::from(pow.max_number)).find(|&n| digest_hex(&pow.salt, n) == pow.challenge)
}

/// The widget's payload for a solved challenge.
pub fn encode_solution(pow: &ProofOfWork, number: u64) -> String {
    let payload = serde_json::json!({
        "algorithm": pow.algorithm,
        "challenge": pow.challenge,
        "number": number,
        "salt": pow.salt,
        "signature": pow.signature,
    });
    base64::engine::general_purpose::STANDARD.encode(payload.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyRing {
        KeyRing::parse("k-0123456789-0123456789-0123456789-0123").unwrap()
    }

    fn solved(pow: &ProofOfWork) -> PowSolution {
        let number = solve(pow).unwrap();
        PowSolution::parse("pow_solution", &encode_solution(pow, number)).unwrap()
    }

    #[test]
    fn a_solved_challenge_verifies_until_it_expires() {
        let keys = keys();
        let now = Utc::now();
        let pow = ProofOfWork::issue(&keys, now + chrono::Duration::minutes(5), 500).unwrap();
        assert!(pow.salt.ends_with('&'));
        let solution = solved(&pow);
        assert_eq!(solution.verify(&keys, now), Ok(pow.expires_at));
        assert_eq!(
            solution.verify(&keys, pow.expires_at),
            Err(PowRejection::Expired)
        );
    }

    #[test]
    fn wrong_number_signature_salt_and_algorithm_are_refused() {
        let keys = keys();
        let now = Utc::now();
        let pow = ProofOfWork::issue(&keys, now + chrono::Duration::minutes(5), 500).unwrap();
        let good = solved(&pow);

        let mut wrong = good.clone();
        wrong.number += 1;
        assert_eq!(wrong.verify(&keys, now), Err(PowRejection::WrongNumber));

        let other = KeyRing::parse("another-key-0123456789-0123456789-0123").unwrap();
        assert_eq!(good.verify(&other, now), Err(PowRejection::Signature));

        let mut algorithm = good.clone();
        algorithm.algorithm = "SHA-1".into();
        assert_eq!(algorithm.verify(&keys, now), Err(PowRejection::Algorithm));

        // Moving a digit of the number onto the salt keeps the hash but not the grammar.
        let mut spliced = good.clone();
        spliced.salt = format!("{}{}", good.salt, good.number);
        spliced.number = 0;
        assert_eq!(spliced.verify(&keys, now), Err(PowRejection::Salt));
    }

    #[test]
    fn garbage_payloads_are_field_violations() {
        for raw in ["", "not base64!", "bm90IGpzb24=", &"A".repeat(2000)] {
            let violation = PowSolution::parse("pow_solution", raw).unwrap_err();
            assert_eq!(violation.field, "pow_solution");
        }
    }
}
