//! The server secret(s) and everything derived from them.
//!
//! Codes, reset tokens and captcha answers are stored only as HMAC-SHA256 under these keys, so a
//! dump of Redis reveals nothing usable: without the key, a 6-digit code's MAC cannot even be
//! brute-forced offline. Rotation: the newest key signs, every key verifies.

use base64::Engine;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Keys shorter than this are refused in production (NIST SP 800-107: the HMAC key should be at
/// least as long as the security strength we want, 256 bits).
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Clone)]
pub struct KeyRing {
    /// Newest first.
    keys: Vec<SecretSlice<u8>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys, redacted)", self.keys.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no secret key configured")]
    Empty,
    #[error("secret key #{index} is {len} bytes; at least {MIN_KEY_BYTES} are required")]
    TooShort { index: usize, len: usize },
    #[error("the operating system's random number generator failed")]
    Rng,
}

impl KeyRing {
    /// Keys from `RECOVERY_SECRET`: comma-separated, newest first. Each is used as its UTF-8
    /// bytes (operators generate them with `openssl rand -base64 48`).
    pub fn parse(secrets: &str) -> Result<Self, KeyError> {
        let keys: Vec<SecretSlice<u8>> = secrets
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(|key| SecretSlice::from(key.as_bytes().to_vec()))
            .collect();
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for (index, key) in keys.iter().enumerate() {
            let len = key.expose_secret().len();
            if len < MIN_KEY_BYTES {
                return Err(KeyError::TooShort { index, len });
            }
        }
        Ok(Self { keys })
    }

    /// A fresh random key: data signed with it dies with the process (development only).
    pub fn random() -> Result<Self, KeyError> {
        let key = random_bytes::<32>().map_err(|_| KeyError::Rng)?;
        Ok(Self {
            keys: vec![SecretSlice::from(key.to_vec())],
        })
    }

    fn mac_with(key: &SecretSlice<u8>, purpose: &str, parts: &[&[u8]]) -> HmacSha256 {
        // `new_from_slice` accepts any key length for HMAC; the fallback cannot happen.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key.expose_secret())
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
        // Domain separation: a MAC made for one purpose never verifies for another, and the
        // length prefixes stop `("ab","c")` from colliding with `("a","bc")`.
        mac.update(purpose.as_bytes());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// MAC with the newest key, hex-encoded (what the store keeps).
    pub fn sign(&self, purpose: &str, parts: &[&[u8]]) -> String {
        match self.keys.first() {
            Some(key) => hex::encode(Self::mac_with(key, purpose, parts).finalize().into_bytes()),
            None => String::new(),
        }
    }

    /// MACs under every key, newest first: for looking up a record whose key was signed before
    /// a rotation.
    pub fn sign_all(&self, purpose: &str, parts: &[&[u8]]) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| hex::encode(Self::mac_with(key, purpose, parts).finalize().into_bytes()))
            .collect()
    }

    /// Constant-time check of `expected_hex` against the MAC under every key. Every key is
    /// tried even after a match, so the time does not depend on which key (if any) matched.
    pub fn verify(&self, purpose: &str, parts: &[&[u8]], expected_hex: &str) -> bool {
        let Ok(expected) = hex::decode(expected_hex) else {
            return false;
        };
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            let computed = Self::mac_with(key, purpose, parts).finalize().into_bytes();
            matched |= computed.as_slice().ct_eq(&expected);
        }
        matched.into()
    }

    /// 256-bit keys derived for other purposes (e.g. encrypting the delivery queue), newest
    /// first.
    pub fn derive_keys(&self, purpose: &str) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .map(|key| {
                let mut out = [0u8; 32];
                out.copy_from_slice(
                    &Self::mac_with(key, "derive", &[purpose.as_bytes()])
                        .finalize()
                        .into_bytes(),
                );
                out
            })
            .collect()
    }
}

/// Bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// A uniformly random decimal string of `digits` digits, from the OS CSPRNG. Rejection sampling
/// avoids the modulo bias that `random_u32 % 10^n` would have.
pub fn random_digits(digits: u32) -> Result<String, getrandom::Error> {
    let modulus = 10u32.pow(digits.min(9));
    let zone = u32::MAX - (u32::MAX % modulus);
    loop {
        let value = u32::from_be_bytes(random_bytes::<4>()?);
        if value < zone {
            return Ok(format!(
                "{:0width$}",
                value % modulus,
                width = digits as usize
            ));
        }
    }
}

/// A long verification code: 20 symbols of Crockford's base32 (100 bits), canonical form (upper
/// case, no separators). Each symbol is the low 5 bits of one random byte: 256 is a multiple
/// of 32, so every symbol is uniform.
pub fn random_long_code() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    Ok(random_bytes::<20>()?
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte & 0x1f)]))
        .collect())
}

/// 256 random bits, base64url without padding: a reset token.
pub fn random_token() -> Result<String, getrandom::Error> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &str) -> KeyRing {
        KeyRing::parse(keys).unwrap()
    }

    const OLD: &str = "old-key-0123456789-0123456789-0123456789";
    const NEW: &str = "new-key-0123456789-0123456789-0123456789";

    #[test]
    fn a_mac_verifies_only_for_the_same_purpose_and_parts() {
        let keys = ring(NEW);
        let mac = keys.sign("code", &[b"flow", b"123456"]);
        assert!(keys.verify("code", &[b"flow", b"123456"], &mac));
        assert!(!keys.verify("code", &[b"flow", b"123457"], &mac));
        assert!(!keys.verify("token", &[b"flow", b"123456"], &mac));
        assert!(!keys.verify("code", &[b"flow1", b"23456"], &mac));
    }

    #[test]
    fn after_rotation_the_old_key_still_verifies_and_the_new_key_signs() {
        let before = ring(OLD);
        let mac = before.sign("code", &[b"x"]);
        let after = ring(&format!("{NEW},{OLD}"));
        assert!(after.verify("code", &[b"x"], &mac));
        assert_ne!(after.sign("code", &[b"x"]), mac);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            KeyRing::parse("short"),
            Err(KeyError::TooShort { .. })
        ));
        assert!(matches!(KeyRing::parse(" , "), Err(KeyError::Empty)));
    }

    #[test]
    fn random_digits_have_the_asked_length() {
        for _ in 0..100 {
            let code = random_digits(6).unwrap();
            assert_eq!(code.len(), 6);
            assert!(code.chars().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn tokens_are_43_base64url_characters() {
        let token = random_token().unwrap();
        assert_eq!(token.len(), 43);
        assert_ne!(token, random_token().unwrap());
    }
}
