//! `VerifyCode.code` as the handler parses it (`VerificationCode::parse`): a short code is 6-10
//! ASCII digits, a long code 20 symbols of Crockford's base32 alphabet in its canonical form
//! (upper case, I/L read as 1, O as 0, no U); spaces and hyphens anywhere are forgiven; parsing
//! the output (and the mailed, grouped form of a long code) gives it back; a refusal names the
//! field and one of the parser's fixed texts, never the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovery_service::recovery::input::{
    CROCKFORD_ALPHABET, LONG_CODE_CHARS, VerificationCode, group_long_code,
};

fn crockford(c: char) -> Option<char> {
    match c.to_ascii_uppercase() {
        'I' | 'L' => Some('1'),
        'O' => Some('0'),
        upper if upper.is_ascii() && CROCKFORD_ALPHABET.contains(&(upper as u8)) => Some(upper),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    match VerificationCode::parse("code", &raw) {
        Ok(code) => {
            let text = code.expose().to_owned();
            let typed: String = raw
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .collect();
            if code.is_long() {
                assert_eq!(text.len(), LONG_CODE_CHARS);
                assert!(text.bytes().all(|b| CROCKFORD_ALPHABET.contains(&b)));
                // What was typed, read by Crockford's rules, is the code.
                let read: Option<String> = typed.chars().map(crockford).collect();
                assert_eq!(read.as_deref(), Some(text.as_str()));
                // The mailed form (5 groups of 4) reads back as the same code.
                let mailed = group_long_code(&text);
                assert_eq!(mailed.len(), LONG_CODE_CHARS + 4);
                let again = VerificationCode::parse("code", &mailed).expect("the mailed form");
                assert!(again.is_long());
                assert_eq!(again.expose(), text);
                let lower = VerificationCode::parse("code", &text.to_lowercase())
                    .expect("lower case");
                assert_eq!(lower.expose(), text);
            } else {
                assert!((6..=10).contains(&text.len()), "{}", text.len());
                assert!(text.bytes().all(|b| b.is_ascii_digit()));
                assert_eq!(typed, text);
            }
            let again = VerificationCode::parse("code", &text).expect("its own output parses");
            assert_eq!(again.expose(), text);
            assert_eq!(again.is_long(), code.is_long());
        }
        Err(violation) => {
            assert_eq!(violation.field, "code");
            let fixed: Vec<String> = ["", "12", &"1".repeat(100), "1\02"]
                .iter()
                .filter_map(|other| VerificationCode::parse("code", other).err())
                .map(|v| v.description)
                .collect();
            assert!(
                fixed.contains(&violation.description),
                "{}",
                violation.description
            );
        }
    }
});
