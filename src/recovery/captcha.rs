//! Captchas: a random number of digits drawn as a distorted picture. The answer is kept only as
//! a keyed hash, and the first answer, right or wrong, burns the captcha (no retries against
//! the same picture).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secrets::KeyRing;

const PURPOSE: &str = "captcha";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptchaRecord {
    pub id: String,
    /// HMAC(secret, id ‖ answer).
    pub answer_mac: String,
    pub expires_at: DateTime<Utc>,
}

impl CaptchaRecord {
    pub fn new(id: String, answer: &str, keys: &KeyRing, expires_at: DateTime<Utc>) -> Self {
        let answer_mac = keys.sign(PURPOSE, &[id.as_bytes(), answer.as_bytes()]);
        Self {
            id,
            answer_mac,
            expires_at,
        }
    }

    /// Right answer and not expired. Constant time in the answer.
    pub fn accepts(&self, answer: &str, keys: &KeyRing, now: DateTime<Utc>) -> bool {
        let matches = keys.verify(
            PURPOSE,
            &[self.id.as_bytes(), answer.as_bytes()],
            &self.answer_mac,
        );
        matches && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_answer_before_expiry_is_accepted() {
        let keys = KeyRing::parse("k-0123456789-0123456789-0123456789-0123").unwrap();
        let now = Utc::now();
        let record = CaptchaRecord::new(
            "id".into(),
            "12345",
            &keys,
            now + chrono::Duration::minutes(5),
        );
        assert!(record.accepts("12345", &keys, now));
        assert!(!record.accepts("12346", &keys, now));
        assert!(!record.accepts("12345", &keys, now + chrono::Duration::minutes(5)));
        assert!(!record.answer_mac.contains("12345"));
    }
}
