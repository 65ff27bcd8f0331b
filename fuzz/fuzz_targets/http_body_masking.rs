//! Arbitrary HTTP answer bodies through the streaming body masker, cut into
//! chunks anywhere: no panic; the chunking never changes the result; and a
//! JSON body that was accepted is, once masked, still JSON the masker
//! accepts.
#![no_main]

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use airlock::{
    masking::{BodyKind, BodyMasker, Masker, TokenKey},
    policy::Policy,
};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
[[target]]
name = "fuzz"
protocol = "https"
port = 443
addresses = ["10.0.0.1"]
[target.masking]
detectors = ["card", "email", "ssn", "iban", "phone", "ipv4", "aws_key", "jwt", "private_key", "api_key"]
[[target.masking.detector]]
name = "ref"
regex = "R[0-9]{3}"
strategy = "null"
[[target.masking.rules]]
json_path = "$..data"
[[target.masking.rules]]
json_path = "$.items[*]['a b'][2]"
strategy = "null"
[[target.masking.rules]]
column_pattern = "s*"
strategy = "partial"
keep = 2
"#;

fn masker() -> Arc<Masker> {
    static MASKER: OnceLock<Arc<Masker>> = OnceLock::new();
    Arc::clone(MASKER.get_or_init(|| {
        let policy = Policy::from_sources([(Path::new("fuzz.toml"), POLICY)]).expect("fuzz policy");
        let masking = policy.targets[0].masking.as_ref().expect("masking section");
        Arc::new(Masker::new(masking, "fuzz", &[], Arc::new(TokenKey::from_bytes(b"fuzz"))))
    }))
}

fn masked(kind: BodyKind, body: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
    let mut masker = BodyMasker::new(masker(), kind);
    let mut out = Vec::new();
    for piece in body.chunks(chunk.max(1)) {
        masker.feed(piece, &mut out).map_err(|e| e.to_string())?;
    }
    masker.finish(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    let kind = if control & 0x80 == 0 { BodyKind::Json } else { BodyKind::Text };
    let chunk = usize::from(control & 0x7f) + 1;
    let whole = masked(kind, body, body.len());
    let chunked = masked(kind, body, chunk);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunks of {chunk} changed the result"),
        (Err(_), Err(_)) => {}
        _ => panic!("chunks of {chunk}: {whole:?} vs {chunked:?}"),
    }
    if let (BodyKind::Json, Ok(out)) = (kind, whole) {
        masked(kind, &out, out.len()).expect("a masked JSON body is JSON");
    }
});
