//! The definition loader on arbitrary text, under the API's limits and the files'
//! limits: it must report diagnostics, never panic, overflow or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sagaflow::definition::{ParseLimits, parse_definition_within};

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    for limits in [ParseLimits::API, ParseLimits::FILE] {
        if let Err(diags) = parse_definition_within("fuzz.yaml", source, &limits) {
            assert!(!diags.is_empty(), "an error with no diagnostic");
        }
    }
});
