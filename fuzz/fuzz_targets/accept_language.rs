//! The caller's `accept-language`, read for every localized error: `accept_language` (at most
//! 8 tags, best first, `q=0` dropped) and `Catalogue::pick` (always a catalogue locale).
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovery_service::api::i18n::{Catalogue, accept_language};

fuzz_target!(|data: &[u8]| {
    let header = String::from_utf8_lossy(data);
    let tags = accept_language(&header);
    assert!(tags.len() <= 8);
    for tag in &tags {
        assert!(!tag.is_empty() && tag.len() <= 35 && tag != "*");
        assert!(!tag.contains(',') && !tag.contains(';'));
        assert_eq!(tag.trim(), tag);
    }
    let catalogue = Catalogue::embedded();
    let picked = catalogue.pick(tags.iter().map(String::as_str));
    assert!(
        catalogue.locales().any(|l| l == picked),
        "{picked} is no catalogue locale"
    );
    // Every language the header names first, if the catalogue has it, is the one picked.
    if let Some(first) = tags.iter().find_map(|t| catalogue.resolve(t)) {
        assert_eq!(first, picked);
    }
});
