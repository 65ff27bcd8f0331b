//! Arbitrary bytes from a WebSocket server through the message masker, cut
//! into chunks anywhere: no panic; the chunking never changes what goes on
//! or whether the connection is ended; and what goes on is well-formed
//! server frames (the masked messages re-framed).
#![no_main]

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use airlock::{
    masking::{Masker, TokenKey},
    policy::Policy,
    proxy::https::{channels::ChannelReader as _, websocket, websocket_masking::MessageMasker},
};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
[[target]]
name = "fuzz"
protocol = "https"
port = 443
addresses = ["10.0.0.1"]
[target.masking]
detectors = ["card", "email", "aws_key", "jwt"]
[[target.masking.rules]]
json_path = "$..token"
"#;

fn masker() -> Arc<Masker> {
    static MASKER: OnceLock<Arc<Masker>> = OnceLock::new();
    Arc::clone(MASKER.get_or_init(|| {
        let policy = Policy::from_sources([(Path::new("fuzz.toml"), POLICY)]).expect("fuzz policy");
        let masking = policy.targets[0].masking.as_ref().expect("masking section");
        Arc::new(Masker::new(masking, "fuzz", &[], Arc::new(TokenKey::from_bytes(b"fuzz"))))
    }))
}

fn masked(wire: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
    let mut messages = MessageMasker::new(masker());
    let mut out = Vec::new();
    for piece in wire.chunks(chunk.max(1)) {
        messages.feed(piece, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else { return };
    let chunk = usize::from(control) + 1;
    let whole = masked(wire, wire.len());
    let chunked = masked(wire, chunk);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunks of {chunk} changed the result"),
        (Err(_), Err(_)) => {}
        _ => panic!("chunks of {chunk}: {whole:?} vs {chunked:?}"),
    }
    if let Ok(out) = whole {
        let mut frames = websocket::Decoder::new(false);
        frames.feed(&out, &mut Vec::new()).expect("what goes on is well-formed frames");
    }
});
