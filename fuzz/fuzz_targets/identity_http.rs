//! What the agent reads from the network and from people it does not
//! trust yet: URLs from discovery documents, JWKS documents, and ID or CI
//! job tokens (HTTP framing is hyper's). No panic; no token verifies
//! against an empty key set.
#![no_main]

use airlock::{http, identity::oidc::jwt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = jwt::KeySet::from_json(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = http::Url::parse(text);
    let expect =
        jwt::Expectations { issuer: "https://id.example.com", audience: "airlock", clock_skew: 60, now: 1_800_000_000 };
    assert!(jwt::verify(text, &jwt::KeySet::default(), &expect).is_err());
});
