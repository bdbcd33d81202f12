//! `ReportUnrequestedRecovery.report_code` as the handler parses it (`ReportCode::parse`): what
//! it accepts is exactly 32 lower-case hex digits (case, spaces and hyphens forgiven), parsing
//! its own output gives it back, and a refusal names the field and one of its fixed texts,
//! never the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovery_service::recovery::input::ReportCode;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    match ReportCode::parse("report_code", &raw) {
        Ok(code) => {
            let code = code.expose();
            assert_eq!(code.len(), ReportCode::HEX_DIGITS);
            assert!(
                code.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            let again = ReportCode::parse("report_code", code).expect("its own output parses");
            assert_eq!(again.expose(), code);
            // What was typed, less the forgiven characters, is the code (case aside).
            let typed: String = raw
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .collect();
            assert_eq!(typed.to_ascii_lowercase(), code);
        }
        Err(violation) => {
            assert_eq!(violation.field, "report_code");
            // The description is one of the parser's fixed texts: it never carries the value.
            let fixed: Vec<String> = ["", "zz", &"z".repeat(200), "a\0b"]
                .iter()
                .filter_map(|other| ReportCode::parse("report_code", other).err())
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
