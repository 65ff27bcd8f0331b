//! Arbitrary text through the secret redactors: no panic, and a password
//! literal marked by the fuzzer never survives.
#![no_main]

use airlock::redact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = redact::command_line(text.split(' ').map(str::to_owned).collect());
    let _ = redact::uri_passwords(text);
    let _ = redact::keyword_password(text);
    // Without quotes of its own, the fuzzer's text cannot open a literal
    // that swallows the PASSWORD keyword, so the secret must go.
    if !text.contains(['\'', '$']) && !text.contains("zq9secretzq9") {
        let sql = format!("{text} PASSWORD 'zq9secretzq9'");
        assert!(!redact::sql(&sql).contains("zq9secretzq9"), "{sql:?}");
    }
});
