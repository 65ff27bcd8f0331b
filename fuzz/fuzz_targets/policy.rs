//! Arbitrary text as a policy file: errors, never panics.
#![no_main]

use std::path::Path;

use airlock::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = Policy::from_sources([(Path::new("fuzz.toml"), text)]) {
            let _ = error.to_string();
        }
    }
});
