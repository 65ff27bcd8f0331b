//! What another host (or whoever may write OpenBao's decisions path) hands
//! the requesting host: decision documents and transit signatures. No
//! panic on any input, and a signature made with one key never verifies a
//! document that differs from the one signed.
#![no_main]

use airlock::approvals::exchange::signed::{DecisionDocument, signature_version, verify};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

fuzz_target!(|data: &[u8]| {
    let pair = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).expect("a key");
    let public = STANDARD.encode(pair.public_key().as_ref());
    let Ok(document) = serde_json::from_slice::<DecisionDocument>(data) else {
        // Raw text as a signature, and as a public key.
        let text = String::from_utf8_lossy(data);
        let _ = signature_version(&text);
        let _ = verify(&public, &text, data);
        let _ = verify(&text, "vault:v1:AAAA", data);
        return;
    };
    let _ = signature_version(&document.signature);
    let message = document.message();
    let _ = verify(&public, &document.signature, &message);
    let signed = format!("vault:v1:{}", STANDARD.encode(pair.sign(&message).as_ref()));
    assert!(verify(&public, &signed, &message).is_ok());
    let mut other = document.clone();
    other.approve = !other.approve;
    assert!(verify(&public, &signed, &other.message()).is_err(), "a signature covers the verdict");
});
