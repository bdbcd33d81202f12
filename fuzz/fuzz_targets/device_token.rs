//! `StartRecoveryRequest.device_token` as the handler reads it (`DeviceToken::parse`): never an
//! error, whatever arrives. What it takes is exactly 43 base64url characters (what was sent,
//! less surrounding whitespace); everything else is no token, so a start answers the same with
//! a malformed token as with none. A token taken parses again to itself, and a random token the
//! service would issue is always taken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovery_service::recovery::input::DeviceToken;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    match DeviceToken::parse(&raw) {
        Some(token) => {
            let text = token.expose();
            assert_eq!(text.len(), DeviceToken::CHARS);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(text, raw.trim());
            let again = DeviceToken::parse(text).expect("its own output parses");
            assert_eq!(again.expose(), text);
        }
        None => {
            let trimmed = raw.trim();
            assert!(
                trimmed.len() != DeviceToken::CHARS
                    || !trimmed
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    || raw.len() > recovery_service::recovery::input::MAX_FIELD_BYTES,
                "a token of ours was ignored"
            );
        }
    }
    let issued = recovery_service::secrets::random_token().expect("the OS random source");
    assert!(DeviceToken::parse(&issued).is_some());
});
